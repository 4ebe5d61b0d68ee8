//! The report's PNGs with a palette of at most 256 colours. A card is flat fills, lines and
//! their anti-aliased edges: as 8-bit RGB the quickstart's 479 cards and thumbnails made a
//! 367 MB report, with a palette 100 MB. Figures with few colours keep them exactly; others get
//! a palette picked from their own colours (`palette_of`).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::{Error, Result};

/// Palette entries of an indexed PNG.
const COLOURS: usize = 256;

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
    let (colours, counts, slots) = histogram(rgb);
    let (palette, nearest) = palette_of(&colours, &counts);
    (palette.concat(), slots.iter().map(|&s| nearest[s as usize]).collect())
}

/// The image's distinct colours in the order first seen, how many pixels have each, and each
/// pixel's colour as an index into them (most pixels repeat the one before them: no lookup).
fn histogram(rgb: &[u8]) -> (Vec<[u8; 3]>, Vec<u64>, Vec<u32>) {
    let (mut colours, mut counts) = (Vec::new(), Vec::new());
    let mut seen: HashMap<[u8; 3], u32> = HashMap::new();
    let mut last: Option<([u8; 3], u32)> = None;
    let mut slots = Vec::with_capacity(rgb.len() / 3);
    for p in rgb.chunks_exact(3) {
        let key = [p[0], p[1], p[2]];
        let slot = match last {
            Some((k, s)) if k == key => s,
            _ => {
                let s = *seen.entry(key).or_insert_with(|| {
                    colours.push(key);
                    counts.push(0);
                    colours.len() as u32 - 1
                });
                last = Some((key, s));
                s
            }
        };
        counts[slot as usize] += 1;
        slots.push(slot);
    }
    (colours, counts, slots)
}

/// At most 256 of the image's own colours, each next one the colour whose pixels lie farthest
/// from those already taken (squared distance times its pixel count), and each colour's nearest
/// entry. A figure's fills and lines come first and stay exact; anti-aliased edges take the
/// nearest. Written here because a figure has few colours (a quickstart card: 3.5 M pixels,
/// 1–2 k colours), so the work is the histogram: NeuQuant (color_quant), used before, learnt from
/// a sample of the pixels at 5× the time with pixels 2–3× as far off and the colour bar banded
/// (the quickstart's report took 40 s, now 21 s on 2 cores). Integer arithmetic in pixel order:
/// the same pixels give the same file.
fn palette_of(colours: &[[u8; 3]], counts: &[u64]) -> (Vec<[u8; 3]>, Vec<u8>) {
    let distance = |a: [u8; 3], b: [u8; 3]| -> u64 { (0..3).map(|k| (a[k] as i64 - b[k] as i64).pow(2) as u64).sum() };
    let mut gap = vec![u64::MAX; colours.len()];
    let mut nearest = vec![0u8; colours.len()];
    let mut palette: Vec<[u8; 3]> = Vec::new();
    // The commonest colour first (the first seen of equals).
    let Some(mut pick) = (0..colours.len()).max_by_key(|&i| (counts[i], std::cmp::Reverse(i))) else { return (palette, nearest) };
    while palette.len() < COLOURS {
        let entry = colours[pick];
        palette.push(entry);
        let mut next = (0, None);
        for (i, &c) in colours.iter().enumerate() {
            let d = distance(c, entry);
            if d < gap[i] {
                gap[i] = d;
                nearest[i] = (palette.len() - 1) as u8;
            }
            if gap[i] * counts[i] > next.0 {
                next = (gap[i] * counts[i], Some(i));
            }
        }
        match next.1 {
            Some(i) => pick = i,
            None => break, // every colour is in the palette
        }
    }
    (palette, nearest)
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

    /// Channels off between two images: (mean, worst).
    fn off(a: &[u8], b: &[u8]) -> (f64, i32) {
        let off: Vec<i32> = a.iter().zip(b).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        (off.iter().sum::<i32>() as f64 / off.len() as f64, *off.iter().max().unwrap())
    }

    /// A smooth ramp of 16 k colours, each on one pixel, gets 256 near ones: every pixel within a
    /// few levels (NeuQuant's palette: 5.6 on average, 35 at worst).
    #[test]
    fn an_image_of_many_colours_comes_back_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("many.png");
        let (w, h) = (256u32, 64u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|i| [(i % w) as u8, (i / w * 4) as u8, 255 - (i % w) as u8]).collect();
        write_png(&path, (w, h), &rgb).unwrap();
        let (mean, worst) = off(&rgb, &decode(&path).1);
        assert!(mean <= 4.5 && worst <= 20, "channels off by {mean:.2} on average, {worst} at worst");
    }

    /// A figure of more than 256 colours: a white ground, six line colours and their anti-aliased
    /// blends into the ground (63 each, one pixel apiece). Ground and lines come back exactly, and
    /// a blend at most a step of the blend away.
    #[test]
    fn a_figure_keeps_its_fills_and_lines_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("figure.png");
        let lines = [[31u8, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [0, 0, 0]];
        let blend = |c: [u8; 3], a: u32| c.map(|v| ((v as u32 * a + 255 * (64 - a)) / 64) as u8);
        let mut pixels = vec![[255u8; 3]; 60_000];
        for c in lines {
            pixels.extend(std::iter::repeat_n(c, 2_000));
            pixels.extend((1..64).map(|a| blend(c, a)));
        }
        pixels.resize(300 * 256, [255; 3]);
        let rgb = pixels.concat();
        write_png(&path, (300, 256), &rgb).unwrap();
        let back = decode(&path).1;
        for (p, q) in rgb.chunks_exact(3).zip(back.chunks_exact(3)) {
            if lines.iter().any(|c| c == p) || p == [255; 3] {
                assert_eq!(p, q, "a line or the ground changed colour");
            }
        }
        let (_, worst) = off(&rgb, &back);
        assert!(worst <= 4, "a blend is {worst} levels off");
    }
}
