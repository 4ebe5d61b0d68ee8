//! JSON helpers. serde_json writes NaN and ±inf as `null`; scores that are undefined (a Spearman
//! for a detector, a q-value outside the tested set) are NaN, so reading them back maps `null`
//! to NaN instead of failing.

use serde::{Deserialize, Deserializer};

/// `#[serde(deserialize_with = "crate::json::f64_or_nan")]` on an f64 field that may be NaN.
pub fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// `#[serde(default = "crate::json::nan")]` for an f64 field older files lack.
pub fn nan() -> f64 {
    f64::NAN
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Scores {
        #[serde(deserialize_with = "super::f64_or_nan")]
        spearman: f64,
    }

    #[test]
    fn nan_survives_a_round_trip() {
        let text = serde_json::to_string(&Scores { spearman: f64::NAN }).unwrap();
        assert_eq!(text, r#"{"spearman":null}"#);
        assert!(serde_json::from_str::<Scores>(&text).unwrap().spearman.is_nan());
    }
}
