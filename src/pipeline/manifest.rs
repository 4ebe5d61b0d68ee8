//! Stage manifests: what a stage ran with (fingerprint of config, inputs, version, seed) and how
//! long it took. A stage whose manifest fingerprint matches is up to date and skipped.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

use crate::{Error, Result};

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub stage: String,
    /// Hash of everything the stage's output depends on.
    pub fingerprint: String,
    pub voltlens_version: String,
    pub seed: u64,
    /// The stage's settings as run.
    pub config: serde_json::Value,
    /// Fingerprints of the inputs (upstream stages and external files).
    pub inputs: Vec<(String, String)>,
    pub started_at: String,
    pub seconds: f64,
    /// What the stage reports about its result (row counts, metrics…).
    pub summary: serde_json::Value,
}

impl Manifest {
    pub fn read(stage_dir: &Path) -> Option<Manifest> {
        let text = std::fs::read_to_string(stage_dir.join(MANIFEST_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write(&self, stage_dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("manifest is serialisable") + "\n";
        crate::io::write_atomic(&stage_dir.join(MANIFEST_FILE), text.as_bytes())
    }
}

/// Hex SHA-256 of a sequence of labelled parts.
pub fn fingerprint(parts: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    for (label, value) in parts {
        h.update(label.as_bytes());
        h.update([0]);
        h.update(value.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())
}

/// Fingerprint of an external input: path, size and modification time of each file (a
/// directory's files, recursively), so editing or replacing data re-runs the stage.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    let mut entries = Vec::new();
    collect(path, &mut entries)?;
    entries.sort();
    let joined = entries.join("\n");
    Ok(fingerprint(&[("files", &joined)]))
}

fn collect(path: &Path, out: &mut Vec<String>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))? {
            let entry = entry.map_err(|e| Error::io(path, e))?;
            collect(&entry.path(), out)?;
        }
    } else {
        let modified = meta.modified().ok().and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        out.push(format!("{}\t{}\t{modified}", path.display(), meta.len()));
    }
    Ok(())
}
