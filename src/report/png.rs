//! The report's PNGs with a palette of at most 256 colours. A card is flat fills, lines and
//! their anti-aliased edges: as 8-bit RGB the quickstart's 479 cards and thumbnails made a
//! 367 MB report, with a palette 100 MB (each pixel a mean 0.3 levels off; report 17 s → 40 s
//! on 2 cores). Figures with few colours keep them exactly; others get a NeuQuant palette
//! (color_quant, deterministic: same pixels, same file).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::{Error, Result};

/// Palette entries of an indexed PNG.
const COLOURS: usize = 256;
/// Pixels NeuQuant learns from (one in every n of a larger image): on a card's 3.5 M pixels one
/// in 30, as close to the original as one in ten (its author's default) with the quickstart's
/// report 40 % faster; a small figure gives it every pixel.
const SAMPLES: usize = 100_000;

/// Encodes RGB pixels as an indexed PNG at `path` (temporary sibling, then rename).
pub(crate) fn write_png(path: &Path, (width, height): (u32, u32), rgb: &[u8]) -> Result<()> {
    let (palette, indices) = quantise(rgb);
    crate::io::write_via_temp(path, |tmp| {
        let file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), width, height);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(palette);
        // Filters predict a byte from its neighbours' values, which palette indices do not have:
        // unfiltered, a card compresses to a third of what the default filter gives.
        encoder.set_filter(png::FilterType::NoFilter);
        encoder.set_compression(png::Compression::Default);
        let encoded = encoder.write_header().and_then(|mut w| {
            w.write_image_data(&indices)?;
            w.finish()
        });
        encoded.map_err(|e| Error::io(tmp, std::io::Error::other(e)))
    })
}

/// The palette (RGB triples) and each pixel's index into it.
fn quantise(rgb: &[u8]) -> (Vec<u8>, Vec<u8>) {
    // The image's own colours, where there are at most 256 of them.
    let mut palette = Vec::new();
    let exact = index_pixels(rgb, |key| {
        (palette.len() < 3 * COLOURS).then(|| {
            palette.extend_from_slice(&key);
            (palette.len() / 3 - 1) as u8
        })
    });
    if let Some(indices) = exact {
        return (palette, indices);
    }
    let rgba: Vec<u8> = rgb.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    let sample_every = (rgb.len() / 3 / SAMPLES).clamp(1, 30) as i32;
    let quant = color_quant::NeuQuant::new(sample_every, COLOURS, &rgba);
    let indices = index_pixels(rgb, |[r, g, b]| Some(quant.index_of(&[r, g, b, 255]) as u8)).expect("NeuQuant indexes every colour");
    (quant.color_map_rgb(), indices)
}

/// Each pixel's palette index, `index_of` asked once per distinct colour (most pixels repeat the
/// one before them, the rest one seen before); `None` as soon as `index_of` gives none.
fn index_pixels(rgb: &[u8], mut index_of: impl FnMut([u8; 3]) -> Option<u8>) -> Option<Vec<u8>> {
    let mut seen: HashMap<[u8; 3], u8> = HashMap::new();
    let mut last: Option<([u8; 3], u8)> = None;
    let mut indices = Vec::with_capacity(rgb.len() / 3);
    for p in rgb.chunks_exact(3) {
        let key = [p[0], p[1], p[2]];
        let i = match last {
            Some((k, i)) if k == key => i,
            _ => {
                let i = match seen.get(&key) {
                    Some(&i) => i,
                    None => *seen.entry(key).or_insert(index_of(key)?),
                };
                last = Some((key, i));
                i
            }
        };
        indices.push(i);
    }
    Some(indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(path: &Path) -> (png::ColorType, Vec<u8>) {
        let decoder = png::Decoder::new(File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let color = reader.info().color_type;
        let palette = reader.info().palette.as_ref().unwrap().to_vec();
        let mut buf = vec![0; reader.output_buffer_size()];
        let n = reader.next_frame(&mut buf).unwrap().buffer_size();
        (color, buf[..n].iter().flat_map(|&i| palette[3 * i as usize..3 * i as usize + 3].to_vec()).collect())
    }

    #[test]
    fn an_image_of_few_colours_comes_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("few.png");
        // 150 colours.
        let rgb: Vec<u8> = (0..64 * 48).flat_map(|i: u32| [(i % 50) as u8 * 5, (i / 64 % 3) as u8 * 100, 7]).collect();
        write_png(&path, (64, 48), &rgb).unwrap();
        let (color, back) = decode(&path);
        assert_eq!(color, png::ColorType::Indexed);
        assert!(back == rgb, "pixels changed");
    }

    /// A smooth ramp of thousands of colours gets 256 near ones: every pixel within a few levels.
    #[test]
    fn an_image_of_many_colours_comes_back_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.png");
        let (w, h) = (256u32, 64u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| [(i % w) as u8, (i / w * 4) as u8, 255 - (i % w) as u8]).collect();
        write_png(&path, (w, h), &rgb).unwrap();
        let (_, back) = decode(&path);
        let off: Vec<i32> = rgb.iter().zip(&back).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        let mean = off.iter().sum::<i32>() as f64 / off.len() as f64;
        let worst = *off.iter().max().unwrap();
        assert!(mean <= 8.0 && worst <= 48, "channels off by {mean:.2} on average, {worst} at worst");
    }
}
