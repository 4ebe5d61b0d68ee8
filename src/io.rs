//! Writing files and folders so that a killed run never leaves half of one under its final name,
//! and no command replaces a folder it did not write.
//!
//! Files go to a temporary sibling and are renamed into place; folders are built beside their
//! final place and swapped in. Every folder swapped in carries [`OWNED_MARK`]; a folder without
//! it (and not empty) is the user's, and is never replaced or deleted.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Marks a folder as written by VoltLens, so that a later run may replace it.
pub const OWNED_MARK: &str = ".voltlens-output";

/// `part` made safe inside a file name: letters, digits, '.', '_' and '-' kept, anything else
/// (a '/' or '\\' above all) becomes '_', and a name of dots alone (`..`) is prefixed with '_';
/// so text from a data file (a protocol, a cell id) can never leave the output folder.
pub fn safe_name(part: &str) -> String {
    let safe: String = part.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    if safe.chars().all(|c| c == '.') { format!("_{safe}") } else { safe }
}

/// The temporary sibling a file is written to before the rename. It keeps the extension, since
/// some writers (plotters) pick the format by it, and names the process, so two runs never share it.
pub fn temp_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!(".{stem}.partial-{}{ext}", std::process::id()))
}

/// Lets `write` fill a temporary sibling of `path`, then renames it into place; on failure the
/// temporary file is removed and `path` is left as it was.
pub fn write_via_temp(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_path(path);
    let result = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes bytes to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_via_temp(path, |tmp| std::fs::write(tmp, bytes).map_err(|e| Error::io(tmp, e)))
}

/// Writes `value` as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    write_atomic(path, text.as_bytes())
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::in_file(path, format!("bad JSON: {e}")))
}

/// Whether `name` is one of ours: a [`temp_path`] file or a [`temp_dir`] folder.
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".partial")
}

/// Removes what killed writes left under `dir` (temporary files and build folders, by their
/// names), so that a folder resumed after a kill holds only finished files.
pub fn remove_temp_leftovers(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let temp = path.file_name().is_some_and(|n| is_temp_name(&n.to_string_lossy()));
        match (path.is_dir(), temp) {
            (true, true) => std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?,
            (true, false) => remove_temp_leftovers(&path)?,
            (false, true) => std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?,
            (false, false) => {}
        }
    }
    Ok(())
}

/// The hidden sibling a folder is built in before [`replace_dir`] swaps it in.
pub fn temp_dir(dir: &Path) -> PathBuf {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    dir.with_file_name(format!(".{name}.partial"))
}

/// A fresh, empty build folder for `dir`: a leftover from a killed run is removed first (it is
/// ours, by its name).
pub fn fresh_temp_dir(dir: &Path) -> Result<PathBuf> {
    let tmp = temp_dir(dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    Ok(tmp)
}

/// Whether VoltLens may replace `dir`: it does not exist, is empty, or carries [`OWNED_MARK`].
pub fn is_replaceable(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Err(_) => !dir.exists(),
        Ok(mut entries) => entries.next().is_none() || dir.join(OWNED_MARK).exists(),
    }
}

/// Fails, naming the folder, when [`is_replaceable`] says no. Call it before doing any work.
pub fn check_replaceable(dir: &Path) -> Result<()> {
    if is_replaceable(dir) {
        return Ok(());
    }
    Err(Error::Config(format!(
        "{}: exists, is not empty and was not written by VoltLens; refusing to replace it (choose another folder, or empty it yourself)",
        dir.display()
    )))
}

/// Empties `dir` (or creates it) and marks it as ours; one that is not ours is refused.
pub fn fresh_owned_dir(dir: &Path) -> Result<()> {
    check_replaceable(dir)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    mark_owned(dir)
}

/// Writes [`OWNED_MARK`] into `dir`.
pub fn mark_owned(dir: &Path) -> Result<()> {
    let mark = dir.join(OWNED_MARK);
    std::fs::write(&mark, b"").map_err(|e| Error::io(&mark, e))
}

/// Moves the finished folder `from` to `to`, marking it as ours. An older `to` is removed only
/// after the new one is in place; one that is not ours is refused.
pub fn replace_dir(from: &Path, to: &Path) -> Result<()> {
    check_replaceable(to)?;
    mark_owned(from)?;
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    if !to.exists() {
        return std::fs::rename(from, to).map_err(|e| Error::io(to, e));
    }
    let name = to.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let old = to.with_file_name(format!(".{name}.old-{}", std::process::id()));
    std::fs::rename(to, &old).map_err(|e| Error::io(to, e))?;
    std::fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"old").unwrap();
        let err = write_via_temp(&path, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::Other("killed".into()))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn safe_name_never_leaves_the_folder() {
        for evil in ["../../etc/passwd", "..", "a/b", "a\\b", ".", "", "c:\\x"] {
            let name = safe_name(evil);
            let path = Path::new("out").join(format!("{name}.png"));
            assert_eq!(path.parent(), Some(Path::new("out")), "{evil} → {name}");
            assert!(!name.contains('/') && !name.contains('\\') && name != ".." && name != ".", "{evil} → {name}");
        }
        assert_eq!(safe_name("cccv_1C-25.0"), "cccv_1C-25.0");
    }

    #[test]
    fn leftovers_of_killed_writes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("dataset/timeseries");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::create_dir_all(temp_dir(&dir.path().join("checkpoint"))).unwrap();
        for file in [temp_path(&sub.join("a.parquet")), temp_path(&dir.path().join("features.csv"))] {
            std::fs::write(file, b"half").unwrap();
        }
        for keep in [sub.join("b.parquet"), dir.path().join(".hidden"), dir.path().join("notes.partial.txt")] {
            std::fs::write(keep, b"whole").unwrap();
        }
        remove_temp_leftovers(dir.path()).unwrap();
        let mut left: Vec<String> = walk(dir.path());
        left.sort();
        assert_eq!(left, [".hidden", "dataset", "dataset/timeseries", "dataset/timeseries/b.parquet", "notes.partial.txt"]);
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.extend(walk(&p).into_iter().map(|n| format!("{name}/{n}")));
            }
            out.push(name);
        }
        out
    }

    #[test]
    fn temp_path_keeps_the_extension() {
        assert_eq!(temp_path(Path::new("x/card.png")).extension().unwrap(), "png");
    }

    #[test]
    fn replace_dir_refuses_a_folder_it_did_not_write() {
        let root = tempfile::tempdir().unwrap();
        let user = root.path().join("reports");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join("precious.txt"), b"mine").unwrap();
        let build = fresh_temp_dir(&user).unwrap();
        let err = replace_dir(&build, &user).unwrap_err().to_string();
        assert!(err.contains("not written by VoltLens"), "{err}");
        assert_eq!(std::fs::read(user.join("precious.txt")).unwrap(), b"mine");
        std::fs::remove_dir_all(&build).unwrap();

        // An empty folder, and then our own output, may be replaced.
        let ours = root.path().join("out");
        std::fs::create_dir_all(&ours).unwrap();
        let build = fresh_temp_dir(&ours).unwrap();
        std::fs::write(build.join("v1"), b"1").unwrap();
        replace_dir(&build, &ours).unwrap();
        let build = fresh_temp_dir(&ours).unwrap();
        std::fs::write(build.join("v2"), b"2").unwrap();
        replace_dir(&build, &ours).unwrap();
        assert!(ours.join("v2").exists() && !ours.join("v1").exists());
        let names: Vec<_> = std::fs::read_dir(root.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no leftovers beside the outputs: {names:?}");
    }
}
