//! Labels as sentences a battery engineer reads at once (DESIGN §5 step 6): "fires during
//! discharge above 1.5C", "tracks SOC (rises with it)", with units and the fitted numbers.

use crate::label::candidates::{Atom, Candidate, Coding};
use crate::label::covariates::Covariate;

/// The sentence for a candidate, given the codings its bins came from.
pub fn sentence(candidate: &Candidate, codings: &[Coding]) -> String {
    match candidate {
        Candidate::Detector { atoms } => {
            let phrases: Vec<String> = atoms.iter().map(|a| atom_phrase(a, &codings[a.covariate.index()])).collect();
            // "when A when B" reads as a stutter: the second condition is joined by "while".
            let joined: Vec<String> = phrases
                .iter()
                .enumerate()
                .map(|(i, p)| match p.strip_prefix("when ") {
                    Some(rest) if i > 0 => format!("while {rest}"),
                    _ => p.clone(),
                })
                .collect();
            format!("fires {}", joined.join(" "))
        }
        Candidate::Tracker { covariate, increasing } => {
            format!("tracks {} ({})", noun(*covariate), if *increasing { "rises with it" } else { "falls as it rises" })
        }
    }
}

fn noun(c: Covariate) -> &'static str {
    match c {
        Covariate::Soc => "SOC",
        Covariate::CRate => "C-rate (signed, + = charge)",
        Covariate::AbsCRate => "|C-rate|",
        Covariate::StepTime => "time into the step",
        Covariate::TimeSinceCurrentChange => "time since the current last changed",
        Covariate::DvDt => "dV/dt",
        Covariate::DvNext => "the coming voltage change (next row)",
        Covariate::CRateChangeNext => "the coming C-rate change (next row)",
        Covariate::Temperature => "cell temperature",
        Covariate::CycleNumber => "cycle number",
        Covariate::Soh => "SOH",
        Covariate::AmbientTemperature => "ambient temperature",
        Covariate::Voltage => "voltage",
        Covariate::Current => "current (+ = charge)",
        Covariate::State => "state",
        Covariate::Method => "control method",
        Covariate::Protocol => "protocol",
    }
}

/// A value in the covariate's unit, rounded to what an engineer would quote.
fn value(c: Covariate, x: f32) -> String {
    match c {
        // + 0.0 turns −0 (a bound just below zero) into 0: "-0 %" reads as a sign error.
        Covariate::Soc | Covariate::Soh => format!("{:.0} %", (100.0 * x).round() + 0.0),
        Covariate::CRate | Covariate::AbsCRate => format!("{}C", round_sig(x)),
        Covariate::StepTime | Covariate::TimeSinceCurrentChange => duration(x),
        Covariate::DvDt => format!("{} mV/s", round_sig(x)),
        Covariate::DvNext => format!("{} mV", round_sig(x)),
        Covariate::CRateChangeNext => format!("{}C", round_sig(x)),
        Covariate::Temperature | Covariate::AmbientTemperature => format!("{:.1} °C", x),
        Covariate::CycleNumber => format!("{}", x.round() as i64),
        Covariate::Voltage => format!("{:.3} V", x),
        Covariate::Current => format!("{} A", round_sig(x)),
        Covariate::State | Covariate::Method | Covariate::Protocol => String::new(),
    }
}

fn round_sig(x: f32) -> String {
    let digits = if x.abs() >= 10.0 { 0 } else if x.abs() >= 1.0 { 2 } else { 3 };
    let text = format!("{:.*}", digits, x);
    // "-0.000" reads as a sign error.
    if text.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') { "0".into() } else { text }
}

fn duration(seconds: f32) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else if seconds >= 120.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{:.0} s", seconds)
    }
}

fn atom_phrase(atom: &Atom, coding: &Coding) -> String {
    let c = atom.covariate;
    if c.is_categorical() {
        return category_phrase(atom, coding);
    }
    let (lo, hi) = atom.span();
    let what = match c {
        Covariate::Soc => "SOC",
        Covariate::Soh => "SOH",
        Covariate::CRate => "C-rate",
        Covariate::AbsCRate => "|C-rate|",
        Covariate::StepTime => "time into the step",
        Covariate::TimeSinceCurrentChange => "time since the current last changed",
        Covariate::DvDt => "dV/dt",
        Covariate::DvNext => "the coming voltage change",
        Covariate::CRateChangeNext => "the coming C-rate change",
        Covariate::Temperature => "cell temperature",
        Covariate::CycleNumber => "cycle",
        Covariate::AmbientTemperature => "ambient temperature",
        Covariate::Voltage => "voltage",
        Covariate::Current => "current",
        _ => unreachable!("categorical handled above"),
    };
    match (c, coding.range(lo, hi)) {
        // Signed C-rate bounded away from zero reads as a direction and a rate.
        (Covariate::CRate, (Some(a), None)) if a >= 0.0 => format!("during charge above {}", value(c, a)),
        (Covariate::CRate, (None, Some(b))) if b <= 0.0 => format!("during discharge above {}", value(c, -b)),
        (_, range) => interval_phrase(c, what, range),
    }
}

fn interval_phrase(c: Covariate, what: &str, range: (Option<f32>, Option<f32>)) -> String {
    match range {
        (Some(a), None) => format!("when {what} is above {}", value(c, a)),
        (None, Some(b)) => format!("when {what} is below {}", value(c, b)),
        (Some(a), Some(b)) => format!("when {what} is between {} and {}", value(c, a), value(c, b)),
        (None, None) => String::from("at every step"),
    }
}

fn category_phrase(atom: &Atom, coding: &Coding) -> String {
    let names: Vec<&str> = atom.codes().filter_map(|code| coding.categories.get(code).map(String::as_str)).collect();
    let all = coding.categories.len();
    // A complement reads better as "except in X" than as a list of the others.
    if names.len() + 1 == all && all > 2 {
        let missing = coding.categories.iter().find(|n| !names.contains(&n.as_str())).map(String::as_str).unwrap_or("");
        return format!("except {}", category_name(atom.covariate, missing));
    }
    names.iter().map(|n| category_name(atom.covariate, n)).collect::<Vec<_>>().join(" or ")
}

fn category_name(c: Covariate, name: &str) -> String {
    match (c, name) {
        (Covariate::State, "charging") => "during charge".into(),
        (Covariate::State, "discharging") => "during discharge".into(),
        (Covariate::State, "resting") => "at rest".into(),
        (Covariate::Method, "constant_voltage") => "in CV holds".into(),
        (Covariate::Method, "constant_current") => "in CC steps".into(),
        (Covariate::Method, "rest") => "in rest steps".into(),
        (Covariate::Method, "pulse") => "in pulses".into(),
        (Covariate::Method, other) => format!("in {other} steps"),
        (Covariate::Protocol, p) => format!("in {p} cells"),
        (_, other) => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coding(covariate: Covariate, edges: &[f32]) -> Coding {
        Coding { covariate, edges: edges.to_vec(), categories: Vec::new() }
    }

    #[test]
    fn a_second_when_condition_is_joined_by_while() {
        let mut codings: Vec<Coding> = Covariate::ALL.iter().map(|&c| coding(c, &[])).collect();
        codings[Covariate::DvDt.index()] = coding(Covariate::DvDt, &[-0.5, 0.0, 0.5]);
        codings[Covariate::Voltage.index()] = coding(Covariate::Voltage, &[3.5, 3.9]);
        // dV/dt in bins 1..=2 = [-0.5, 0.5); voltage in bin 2 = above 3.9 V.
        let atoms = vec![Atom::interval(Covariate::DvDt, 1, 2), Atom::interval(Covariate::Voltage, 2, 2)];
        let text = sentence(&Candidate::Detector { atoms }, &codings);
        assert_eq!(text, "fires when dV/dt is between -0.500 mV/s and 0.500 mV/s while voltage is above 3.900 V");
    }

    #[test]
    fn a_bound_just_below_zero_soc_reads_0_percent() {
        assert_eq!(value(Covariate::Soc, -0.001), "0 %");
        assert_eq!(value(Covariate::Soc, 0.524), "52 %");
    }
}
