//! How a text export writes its numbers: a decimal point or a decimal comma, and thousands
//! grouped with the other one (`1,250.5` or `1.250,5`, as spreadsheets save formatted cells).
//!
//! A single cell such as `1,250` is ambiguous (1.25 or 1250), so the style is decided once per
//! file from the first cell that is not (`3,6512`, `0.5`, `1,250.5`), as a reader would, and every
//! cell is then parsed by it; a cell the style cannot read is an error naming the cell that set
//! the style. Rust's `str::parse` and the csv-parsing crates know one decimal point only, hence
//! this module.

/// Which character marks the decimals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decimal {
    Point,
    Comma,
}

impl Decimal {
    fn mark(self) -> char {
        match self {
            Decimal::Point => '.',
            Decimal::Comma => ',',
        }
    }

    /// The character that may group thousands in this style.
    fn group(self) -> char {
        match self {
            Decimal::Point => ',',
            Decimal::Comma => '.',
        }
    }
}

/// A file's number style, and the cell that decided it (for errors).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum NumberStyle {
    Decided { decimal: Decimal, row: u64, cell: String },
    /// No cell settled it (integers, or only `1,250`-like cells): a decimal point, and a decimal
    /// comma too where the delimiter is not a comma; no grouping.
    Undecided { decimal_comma: bool },
}

impl NumberStyle {
    /// The style a cell reveals, if it reveals one.
    pub fn evidence(text: &str) -> Option<Decimal> {
        let body = text.trim().trim_start_matches(['-', '+']);
        let (mantissa, exponent) = split_exponent(body);
        if !mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b',') {
            return None;
        }
        let (commas, points) = (mantissa.matches(',').count(), mantissa.matches('.').count());
        match (commas, points) {
            (0, 0) => None,
            // Both: the last one marks the decimals.
            (_, p) if commas > 0 && p > 0 => Some(if mantissa.rfind(',') > mantissa.rfind('.') { Decimal::Comma } else { Decimal::Point }),
            // Repeated, it can only group thousands.
            (c, 0) if c > 1 => Some(Decimal::Point),
            (0, p) if p > 1 => Some(Decimal::Comma),
            (_, p) => {
                let (decimal, mark) = if p == 1 { (Decimal::Point, '.') } else { (Decimal::Comma, ',') };
                let (int, frac) = mantissa.split_once(mark)?;
                // A thousands group has 1–3 leading digits, not a lone 0, and exactly 3 after;
                // nobody groups a mantissa in scientific notation.
                let may_group = !exponent.is_empty() || int.is_empty() || int == "0" || int.len() > 3 || frac.len() != 3;
                may_group.then_some(decimal)
            }
        }
    }

    /// `text` as a number in this style, `None` if it is not one.
    pub fn parse(&self, text: &str) -> Option<f64> {
        match self {
            NumberStyle::Undecided { decimal_comma } => match text.parse::<f64>() {
                Ok(v) => Some(v),
                Err(_) if *decimal_comma && text.contains(',') => text.replace(',', ".").parse().ok(),
                Err(_) => None,
            },
            NumberStyle::Decided { decimal, .. } => {
                if !text.contains([',', '.']) || (*decimal == Decimal::Point && !text.contains(',')) {
                    return text.parse().ok();
                }
                parse_grouped(text, *decimal)
            }
        }
    }

    /// Why a cell that is not a number in this style might have been meant as one.
    pub fn explain(&self) -> String {
        match self {
            NumberStyle::Decided { decimal, row, cell } => format!(
                " (this file writes a decimal {}, as row {row}'s '{cell}' shows; '{}' may only group thousands)",
                if *decimal == Decimal::Point { "point" } else { "comma" },
                decimal.group()
            ),
            NumberStyle::Undecided { .. } => String::new(),
        }
    }
}

/// The mantissa and the exponent (`e-03`, or empty) of a number's text.
fn split_exponent(text: &str) -> (&str, &str) {
    match text.find(['e', 'E']) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    }
}

/// A number whose thousands may be grouped: each group after the first exactly three digits.
fn parse_grouped(text: &str, decimal: Decimal) -> Option<f64> {
    let text = text.trim();
    let (sign, body) = match text.strip_prefix(['-', '+']) {
        Some(rest) => (&text[..1], rest),
        None => ("", text),
    };
    let (mantissa, exponent) = split_exponent(body);
    let (int, frac) = match mantissa.split_once(decimal.mark()) {
        Some((int, frac)) => (int, frac),
        None => (mantissa, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(frac) {
        return None;
    }
    let mut groups = int.split(decimal.group());
    let first = groups.next()?;
    let mut whole = String::from(first);
    let grouped = int.contains(decimal.group());
    if grouped && !(1..=3).contains(&first.len()) {
        return None;
    }
    for group in groups {
        if group.len() != 3 || !digits(group) {
            return None;
        }
        whole.push_str(group);
    }
    if !digits(&whole) || (whole.is_empty() && frac.is_empty()) {
        return None;
    }
    format!("{sign}{whole}.{frac}{exponent}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(decimal: Decimal) -> NumberStyle {
        NumberStyle::Decided { decimal, row: 2, cell: String::new() }
    }

    #[test]
    fn a_cell_reveals_the_style_only_where_it_cannot_be_a_thousands_group() {
        for (text, style) in [
            ("3,6512", Some(Decimal::Comma)),
            ("3.6512", Some(Decimal::Point)),
            ("0,500", Some(Decimal::Comma)),
            ("-0.250", Some(Decimal::Point)),
            ("1,250.5", Some(Decimal::Point)),
            ("1.250,5", Some(Decimal::Comma)),
            ("1,250,000", Some(Decimal::Point)),
            ("1.250.000", Some(Decimal::Comma)),
            ("1.250E-03", Some(Decimal::Point)),
            ("1250,500", Some(Decimal::Comma)),
            ("1,250", None),
            ("-1.250", None),
            ("1250", None),
            ("03/14/2024 09:00:00,5", None),
        ] {
            assert_eq!(NumberStyle::evidence(text), style, "{text}");
        }
    }

    #[test]
    fn cells_parse_in_the_files_style() {
        let point = decided(Decimal::Point);
        let comma = decided(Decimal::Comma);
        for (text, p, c) in [
            ("1,250", Some(1250.0), Some(1.25)),
            ("1.250", Some(1.25), Some(1250.0)),
            ("-1,250.5", Some(-1250.5), None),
            ("-1.250,5", None, Some(-1250.5)),
            ("3,6512", None, Some(3.6512)),
            ("12,34,567", None, None),
            ("1,2345.0", None, None),
            ("2.5e-3", Some(0.0025), None),
            ("2,5E-03", None, Some(0.0025)),
            (",", None, None),
            ("7", Some(7.0), Some(7.0)),
        ] {
            assert_eq!((point.parse(text), comma.parse(text)), (p, c), "{text}");
        }
        let legacy = NumberStyle::Undecided { decimal_comma: true };
        assert_eq!((legacy.parse("1,5"), legacy.parse("1.5"), legacy.parse("1,250")), (Some(1.5), Some(1.5), Some(1.25)));
        assert_eq!(NumberStyle::Undecided { decimal_comma: false }.parse("1,5"), None);
    }
}
