//! Shared look of every PNG VoltLens draws: one embedded font (DejaVu Sans, so plots render the
//! same on machines without system fonts), sizes and a colour scheme.

use plotters::style::{register_font, FontStyle, RGBColor};
use std::sync::Once;

static REGISTER: Once = Once::new();

const SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
const SANS_BOLD: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-Bold.ttf");

/// The font family name to use in `("sans-serif", size)` styles.
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
