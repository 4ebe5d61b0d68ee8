//! Helpers shared by the integration tests (each test file that needs them says `mod common;`).
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The team's shared datasets folder `../shared/datasets/<sub>`, or `None` (with a note) in a
/// checkout without it. Under `CI=true` a missing folder fails the test instead: CI must run them.
pub fn shared(sub: &str) -> Option<PathBuf> {
    shared_in(&repo().join("../shared/datasets"), sub, std::env::var("CI").is_ok_and(|v| v == "true"))
}

pub fn shared_in(root: &Path, sub: &str, ci: bool) -> Option<PathBuf> {
    let path = root.join(sub);
    if path.exists() {
        return Some(path);
    }
    assert!(!ci, "{} is missing, and CI=true: tests that need the shared datasets must run in CI", path.display());
    eprintln!("skipping: {} not found (tests that need ../shared run in CI)", path.display());
    None
}

/// A decoded PNG: width, height and RGB pixels.
pub fn png_pixels(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let pixels = buf[..info.buffer_size()].chunks(step).map(|p| if step >= 3 { [p[0], p[1], p[2]] } else { [p[0]; 3] }).collect();
    (info.width, info.height, pixels)
}

/// Asserts that the figure at `path` is drawn: `size` if given, at least 2 % of its pixels not
/// the background (its most common colour), and at least `colours` distinct colours (axes, text
/// and data series each add theirs).
pub fn assert_drawn(path: &Path, size: Option<(u32, u32)>, colours: usize) {
    let (w, h, pixels) = png_pixels(path);
    if let Some(size) = size {
        assert_eq!((w, h), size, "{}", path.display());
    }
    let mut counts = std::collections::HashMap::new();
    pixels.iter().for_each(|p| *counts.entry(*p).or_insert(0usize) += 1);
    let background = counts.values().copied().max().unwrap_or(0);
    let drawn = pixels.len() - background;
    assert!(drawn * 50 >= pixels.len(), "{}: only {drawn} of {} pixels drawn", path.display(), pixels.len());
    assert!(counts.len() >= colours, "{}: {} colours, expected at least {colours}", path.display(), counts.len());
}
