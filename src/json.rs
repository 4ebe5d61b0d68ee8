//! JSON helpers. serde_json writes NaN and ±inf as `null`; scores that are undefined (a Spearman
//! for a detector, a q-value outside the tested set, the metrics of a diverged run) are NaN, so
//! reading them back maps `null` to NaN instead of failing.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// `#[serde(deserialize_with = "crate::json::or_nan")]` on a float, or a list or map of floats,
/// that may be NaN.
pub fn or_nan<'de, D: Deserializer<'de>, T: OrNan>(d: D) -> Result<T, D::Error> {
    T::read(d)
}

/// `or_nan` for an f64 field.
pub fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    or_nan(d)
}

/// Values `or_nan` reads: floats, and lists and maps of them.
pub trait OrNan: Sized {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl OrNan for f32 {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<f32>::deserialize(d)?.unwrap_or(f32::NAN))
    }
}

impl OrNan for f64 {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

impl<T: OrNan> OrNan for Vec<T> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Item<T>>::deserialize(d)?.into_iter().map(|v| v.0).collect())
    }
}

impl<T: OrNan> OrNan for BTreeMap<String, T> {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, Item<T>>::deserialize(d)?.into_iter().map(|(k, v)| (k, v.0)).collect())
    }
}

/// One element of a list or map read with `OrNan`.
struct Item<T>(T);

impl<'de, T: OrNan> Deserialize<'de> for Item<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::read(d).map(Item)
    }
}

/// `#[serde(default = "crate::json::nan")]` for an f64 field older files lack.
pub fn nan() -> f64 {
    f64::NAN
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Scores {
        #[serde(deserialize_with = "super::f64_or_nan")]
        spearman: f64,
        #[serde(deserialize_with = "super::or_nan")]
        per_layer: Vec<f32>,
        #[serde(deserialize_with = "super::or_nan")]
        mse: BTreeMap<String, f32>,
    }

    #[test]
    fn nan_survives_a_round_trip() {
        let scores = Scores { spearman: f64::NAN, per_layer: vec![0.5, f32::NAN], mse: BTreeMap::from([("a".to_owned(), f32::INFINITY)]) };
        let text = serde_json::to_string(&scores).unwrap();
        assert_eq!(text, r#"{"spearman":null,"per_layer":[0.5,null],"mse":{"a":null}}"#);
        let back: Scores = serde_json::from_str(&text).unwrap();
        assert!(back.spearman.is_nan() && back.per_layer[1].is_nan() && back.mse["a"].is_nan());
        assert_eq!(back.per_layer[0], 0.5);
    }
}
