//! The explorer's static files (`assets/explorer/`: style sheet and scripts, written here, with
//! their licence), compiled into the binary and written into every report's `assets/` folder so
//! the pages load nothing from the network.

use std::path::Path;

use crate::{Error, Result};

/// Folder of a report that holds the assets, relative to `index.html`.
pub const ASSETS_DIR: &str = "assets";

const FILES: [(&str, &str); 5] = [
    ("explorer.css", include_str!("../../assets/explorer/explorer.css")),
    ("index.js", include_str!("../../assets/explorer/index.js")),
    ("feature.js", include_str!("../../assets/explorer/feature.js")),
    ("graph.js", include_str!("../../assets/explorer/graph.js")),
    ("LICENSE", include_str!("../../assets/explorer/LICENSE")),
];

/// Writes the assets into `<report>/assets/`.
pub fn write_assets(report_dir: &Path) -> Result<()> {
    let dir = report_dir.join(ASSETS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for (name, text) in FILES {
        crate::io::write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// The `<head>` of an explorer page `depth` folders below the report root.
pub fn head(title: &str, depth: usize) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<link rel=\"stylesheet\" href=\"{}{ASSETS_DIR}/explorer.css\">\n</head>\n<body>\n",
        super::html::escape(title),
        "../".repeat(depth)
    )
}

/// A `<script type="application/json">` block; `</` is escaped so no string in the data can end
/// the script element early.
pub fn json_block(id: &str, value: &serde_json::Value) -> String {
    let text = serde_json::to_string(value).expect("plain data").replace("</", "<\\/");
    format!("<script type=\"application/json\" id=\"{id}\">{text}</script>\n")
}
