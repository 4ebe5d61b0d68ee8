//! Shared look of every PNG VoltLens draws: one embedded font (DejaVu Sans, so plots render the
//! same on machines without system fonts), sizes and a colour scheme.

use plotters::style::{register_font, FontStyle, RGBColor};
use std::sync::Once;

static REGISTER: Once = Once::new();

const SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const SANS_BOLD: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-Bold.ttf");

/// The font family name to use in `("sans-serif", size)` styles. Use even sizes: plotters'
/// ab_glyph text places each glyph at size/2 plus its own top, truncated toward zero, so at an odd
/// size a short glyph lands a pixel above the tall ones and "0.905" reads "0·905".
pub const FONT: &str = "sans-serif";

/// Registers the embedded fonts with plotters; call before drawing text (cheap after the first).
pub fn ensure_fonts() {
    REGISTER.call_once(|| {
        // Registration fails only on unparsable font bytes, which are compiled in and tested.
        let _ = register_font(FONT, FontStyle::Normal, SANS);
        let _ = register_font(FONT, FontStyle::Bold, SANS_BOLD);
    });
}

/// Colours by physical quantity, the same on every figure.
pub const VOLTAGE: RGBColor = RGBColor(31, 119, 180);
pub const CURRENT: RGBColor = RGBColor(214, 39, 40);
pub const SOC: RGBColor = RGBColor(44, 160, 44);
pub const TEMPERATURE: RGBColor = RGBColor(255, 127, 14);
pub const PREDICTION: RGBColor = RGBColor(148, 103, 189);
pub const GRID: RGBColor = RGBColor(225, 225, 225);

/// Colours by transcoder family (sweep figures).
pub const CLT: RGBColor = RGBColor(31, 119, 180);
pub const PLT: RGBColor = RGBColor(230, 120, 20);
pub const MLSAE: RGBColor = RGBColor(44, 160, 44);
pub const SAE: RGBColor = RGBColor(148, 103, 189);

#[cfg(test)]
mod tests {
    use super::*;
    use plotters::prelude::*;

    /// The lowest pixel row of `text` drawn at `size` with its top left at (4, 4) that is darker
    /// than mid-grey (anti-aliased overshoot of round glyphs stays lighter).
    fn bottom_row(text: &str, size: u32) -> usize {
        ensure_fonts();
        let (w, h) = (80u32, 80u32);
        let mut pixels = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
            root.draw(&Text::new(text.to_owned(), (4, 4), (FONT, size))).unwrap();
            root.present().unwrap();
        }
        (0..h as usize).rev().find(|&y| (0..w as usize).any(|x| pixels[(y * w as usize + x) * 3] < 128)).expect("text drawn")
    }

    #[test]
    fn a_decimal_point_sits_on_the_baseline_at_even_sizes() {
        for size in (12..=30).step_by(2) {
            assert_eq!(bottom_row(".", size), bottom_row("0", size), "size {size}");
        }
    }
}
