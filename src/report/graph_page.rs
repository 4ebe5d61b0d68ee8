//! `graph.html`: the attribution-graph viewer. The circuits stage's graph, in circuit-tracer's
//! file format, is embedded in the page and drawn by `assets/graph.js` (layers × steps, hover and
//! click highlighting with weights, pinning, a threshold slider, links to feature pages), so it
//! runs from the file system with no network and no external libraries.

use std::collections::HashSet;
use std::fmt::Write;
use std::path::Path;

use crate::circuits::GraphFile;
use crate::report::assets::{head, json_block, ASSETS_DIR};
use crate::report::html::escape;
use crate::report::overview::CIRCUITS_GRAPH_JSON;
use crate::{Error, Result};

/// File name of the viewer inside the report.
pub const GRAPH_PAGE: &str = "graph.html";

/// The graph the report keeps beside its overview figures, if the run has one.
pub fn read_graph(report_dir: &Path) -> Result<Option<GraphFile>> {
    let path = report_dir.join(CIRCUITS_GRAPH_JSON);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| Error::in_file(&path, format!("not a circuit-tracer graph file: {e}")))
}

/// Writes `graph.html` into the report folder; `pages` are the features that have a page.
pub fn write_graph_page(graph: &GraphFile, pages: &HashSet<(u32, u32)>, report_dir: &Path) -> Result<()> {
    let mut html = head(&format!("Attribution graph {} · VoltLens", graph.metadata.slug), 0);
    let _ = writeln!(html, "<div class=\"nav\"><a href=\"index.html\">← all features</a><a href=\"{CIRCUITS_GRAPH_JSON}\">graph file (circuit-tracer JSON)</a><a href=\"circuits_graph.png\">static PNG</a></div>");
    let _ = writeln!(html, "<h1>Attribution graph</h1>\n<div class=\"sub\">{}</div>", escape(&graph.metadata.prompt));
    html.push_str(LEGEND);
    html.push_str("<div class=\"controls\"><label>edge threshold <input type=\"range\" id=\"graph-threshold\" min=\"0\" max=\"100\" value=\"0\"></label><label><input type=\"checkbox\" id=\"graph-only-pinned\"> pinned subgraph only</label><span id=\"graph-count\"></span></div>\n");
    html.push_str("<div id=\"graph-wrap\"><div id=\"graph-svg-box\"><svg id=\"graph-svg\" xmlns=\"http://www.w3.org/2000/svg\"></svg></div><div id=\"graph-side\" class=\"box\"><div id=\"graph-side-body\"></div></div></div>\n");
    let value = serde_json::to_value(graph).expect("plain data");
    html.push_str(&json_block("graph-data", &value));
    let mut ids: Vec<String> = pages.iter().map(|(l, f)| format!("L{l}_F{f}")).collect();
    ids.sort();
    html.push_str(&json_block("graph-pages", &serde_json::json!(ids)));
    let _ = write!(html, "<script src=\"{ASSETS_DIR}/graph.js\"></script>\n</body>\n</html>\n");
    crate::io::write_atomic(&report_dir.join(GRAPH_PAGE), html.as_bytes())
}

const LEGEND: &str = "<p class=\"legend\"><svg width=\"560\" height=\"22\" viewBox=\"0 0 560 22\" style=\"max-width:100%;height:auto\" aria-label=\"legend\">\
<circle cx=\"10\" cy=\"11\" r=\"7\" fill=\"#5e3c99\"/><text x=\"22\" y=\"15\">feature</text>\
<rect x=\"88\" y=\"4\" width=\"14\" height=\"14\" fill=\"#9a9a9a\"/><text x=\"108\" y=\"15\">MLP error</text>\
<path d=\"M190,3 L198,18 L182,18 Z\" fill=\"#1b7837\"/><text x=\"204\" y=\"15\">input channel</text>\
<path d=\"M305,0 L316,11 L305,22 L294,11 Z\" fill=\"#e08b00\"/><text x=\"322\" y=\"15\">prediction</text>\
<line x1=\"404\" x2=\"430\" y1=\"11\" y2=\"11\" stroke=\"#d6604d\" stroke-width=\"3\"/><text x=\"436\" y=\"15\">raises</text>\
<line x1=\"484\" x2=\"510\" y1=\"11\" y2=\"11\" stroke=\"#4393c3\" stroke-width=\"3\"/><text x=\"516\" y=\"15\">lowers</text>\
</svg><br>Rows are layers (inputs at the bottom, the prediction on top), columns the window's steps. An edge's width is its |weight|: the source's contribution to the target's pre-activation (or to the predicted ΔV). Hover a node to see its edges, click to keep it selected, pin nodes to keep a subgraph; the slider hides edges weaker than a share of the strongest edge into the same node.</p>\n";
