//! Labels as sentences a battery engineer reads at once (DESIGN §5 step 6): "fires during
//! discharge above 1.5C", "tracks SOC (rises with it)", with units and the fitted numbers.

use crate::label::candidates::{Atom, Candidate, Coding};
use crate::label::covariates::Covariate;
use crate::label::CandidateResult;

/// The sentence for a candidate, given the codings its bins came from.
pub fn sentence(candidate: &Candidate, codings: &[Coding]) -> String {
    match candidate {
        Candidate::Detector(p) => {
            let phrase = |a: &Atom| atom_phrase(a, &codings[a.covariate.index()]);
            let first = match (p.any, p.atoms.as_slice()) {
                (false, atoms) => conjunction(atoms.iter().map(phrase).collect()),
                (true, [a, b]) => format!("{}, or {}", phrase(a), phrase(b)),
                (true, atoms) => format!("{}, and either {} or {}", conjunction(atoms[2..].iter().map(phrase).collect()), phrase(&atoms[0]), phrase(&atoms[1])),
            };
            if p.or.is_empty() {
                return format!("fires {first}");
            }
            // "A while B, or C" reads as "A while (B or C)": regimes of more than one condition
            // are kept apart by a semicolon.
            let or = if (p.atoms.len() > 1 && !(p.any && p.atoms.len() == 2)) || p.or.len() > 1 { "; or" } else { ", or" };
            format!("fires {first}{or} {}", conjunction(p.or.iter().map(phrase).collect()))
        }
        Candidate::Tracker { covariate, increasing, within } => {
            let regime = within.map_or(String::new(), |a| format!(" {}", atom_phrase(&a, &codings[a.covariate.index()])));
            format!("tracks {} ({}){regime}", noun(*covariate), if *increasing { "rises with it" } else { "falls as it rises" })
        }
        Candidate::Graded { covariate, increasing, within, half, and } => {
            let (first, bound) = grade_phrase(*covariate, *increasing, *half, codings);
            let more = match and {
                // "… the lower the voltage and the higher the |C-rate|, half of its firing below
                // 3.2 V and half above 1C"; the scale with the larger share first, "less so" the other.
                Some(g) => {
                    let (second, second_bound) = grade_phrase(g.covariate, g.increasing, g.half, codings);
                    // "below 2 min (time into the step) and above 15 s (time since the last current step)"
                    let named = |bound: Option<Bound>, c: Covariate| match reads_alike(*covariate, g.covariate) {
                        true => bound.map(|(most, b)| (most, if b.starts_with("where") { b } else { format!("{b} ({})", noun(c).split(" (").next().unwrap_or_default()) })),
                        false => bound,
                    };
                    let (mut major, mut minor) = ((first, named(bound, *covariate)), (second, named(second_bound, g.covariate)));
                    if g.share > 5 {
                        std::mem::swap(&mut major, &mut minor);
                    }
                    let joint = if g.share == 5 { "and" } else { "and, less so," };
                    format!("more often {} {joint} {}{}", major.0, minor.0, where_firing(major.1.into_iter().chain(minor.1)))
                }
                None => format!("more often {first}{}", where_firing(bound)),
            };
            match within {
                Some(a) => format!("fires {}, {more}", atom_phrase(a, &codings[a.covariate.index()])),
                None => format!("fires {more}"),
            }
        }
    }
}

/// A detector label firing on under half of the steps it names says on how many, so that "fires
/// during discharge above 1C" is not read as "whenever".
const SHARE_SAID_BELOW: f64 = 0.5;

/// The accepted label: the sentence, with a detector's held-out share of its steps on which the
/// feature fires where that is under half ("… (on 4 % of the steps it names)").
pub fn label(best: &CandidateResult) -> String {
    let share = best.test.precision;
    let printed = one_significant(100.0 * share);
    match best.candidate {
        // Compared as printed: 49.7 % reads "50 %", which is not under half.
        Candidate::Detector(_) if printed.parse::<f64>().is_ok_and(|p| p < 100.0 * SHARE_SAID_BELOW) => format!("{} (on {printed} % of the steps it names)", best.sentence),
        _ => best.sentence.clone(),
    }
}

/// One significant digit under 10, whole numbers above: 0.04, 0.4, 3, 31.
fn one_significant(v: f64) -> String {
    let decimals = if v > 0.0 { (-v.log10().floor()).max(0.0) as usize } else { 0 };
    format!("{v:.decimals$}")
}

/// Covariates whose values read alike ("2 min", "0.3C", "6 mV"), which a sentence over both
/// must tell apart by name.
fn reads_alike(a: Covariate, b: Covariate) -> bool {
    use Covariate::*;
    let unit = |c| match c {
        CRate | AbsCRate | CRateChangeNext | AbsCRateChangeNext | LastCurrentStep => 1,
        StepTime | TimeSinceCurrentChange => 2,
        DvNext | AboveLowestVoltage | BelowHighestVoltage => 3,
        Temperature | AmbientTemperature => 4,
        _ => 0,
    };
    unit(a) != 0 && unit(a) == unit(b)
}

/// Where a scale's firing lies: (true = most of it, where the half lies in the scale's first
/// code; false = half of it), and the bound.
type Bound = (bool, String);

/// ", half of its firing below 3.2 V and half above 1C", ", half of its firing above 1C and
/// most where the current holds steady next": each share is of one scale, which "half of its
/// firing below 3.2 V and above 1C" would not say (it reads as both at once).
fn where_firing(bounds: impl IntoIterator<Item = Bound>) -> String {
    let (most, half): (Vec<Bound>, Vec<Bound>) = bounds.into_iter().partition(|b| b.0);
    let parts: Vec<String> = half
        .into_iter()
        .chain(most)
        .enumerate()
        .map(|(i, (most, b))| {
            let share = if most { "most" } else { "half" };
            if i == 0 { format!("{share} of its firing {b}") } else { format!("{share} {b}") }
        })
        .collect();
    if parts.is_empty() { String::new() } else { format!(", {}", parts.join(" and ")) }
}

/// "the lower the voltage" and where half of the firing lies along it ("below 3.18 V"); where
/// the half lies in the scale's first code (no bound on that side), where most of it lies
/// ("the higher the size of the coming step", most of the firing where the current holds steady).
fn grade_phrase(covariate: Covariate, increasing: bool, half: u8, codings: &[Coding]) -> (String, Option<Bound>) {
    let noun = noun(covariate);
    let the = if noun.starts_with("the ") { "" } else { "the " };
    let (lo, hi) = codings[covariate.index()].range(half as usize, half as usize);
    let bound = match (increasing, lo, hi) {
        (true, Some(x), _) | (false, _, Some(x)) => Some((false, half_bound(covariate, increasing, x))),
        (true, None, Some(x)) | (false, Some(x), None) => Some((true, half_bound(covariate, !increasing, x))),
        _ => None,
    };
    (format!("the {} {the}{noun}", if increasing { "higher" } else { "lower" }), bound)
}

/// Where half of a graded feature's firing lies: "above 3.2 V"; at zero, a size of change or of
/// current reads as the event it marks ("where the current holds steady next", not "below 0C").
fn half_bound(c: Covariate, increasing: bool, x: f32) -> String {
    let zero = at_resolution(c, x) == 0.0;
    match (c, increasing) {
        (Covariate::AbsCRateChangeNext, true) if zero => "where the current steps up or down next".into(),
        (Covariate::AbsCRateChangeNext, false) if zero => "where the current holds steady next".into(),
        (Covariate::AbsCRate, true) if zero => "where current flows".into(),
        (Covariate::AbsCRate, false) if zero => "where the cell rests".into(),
        // A bound at zero lets the zero steps in on the side it is inclusive: above 0 (≥ 0) holds
        // at rest, above 1e-6 (zero's own bin, `Coding::quantiles`) does not; below 0 does not.
        (Covariate::CRate, true) if zero => (if x > 0.0 { "during charge" } else { "at rest or during charge" }).into(),
        (Covariate::CRate, false) if zero => (if x > 0.0 { "at rest or during discharge" } else { "during discharge" }).into(),
        (Covariate::CRateChangeNext, true) if zero => (if x > 0.0 { "where the current steps up next" } else { "where the current does not step down next" }).into(),
        (Covariate::CRateChangeNext, false) if zero => (if x > 0.0 { "where the current does not step up next" } else { "where the current steps down next" }).into(),
        (_, true) => format!("above {}", value(c, x)),
        (_, false) => format!("below {}", value(c, x)),
    }
}

/// Phrases that must all hold, as one clause: "when A while B", "in CV holds and above 4.1 V".
fn conjunction(mut phrases: Vec<String>) -> String {
    merge_step_phrases(&mut phrases);
    // "when A when B" reads as a stutter: a later condition is joined by "while", others by "and".
    let joined: Vec<String> = phrases
        .iter()
        .enumerate()
        .map(|(i, p)| match p.strip_prefix("when ") {
            Some(rest) if i > 0 => format!("while {rest}"),
            _ if i > 0 => format!("and {p}"),
            _ => p.clone(),
        })
        .collect();
    joined.join(" ")
}

/// "in the first 60 s after a current step" and "after a current step up of more than 0.5C"
/// are one event: "in the first 60 s after a current step up of more than 0.5C".
fn merge_step_phrases(phrases: &mut Vec<String>) {
    const EVENT: &str = "after a current step";
    let timed = phrases.iter().position(|p| p.ends_with(EVENT));
    let sized = phrases.iter().position(|p| p.starts_with(EVENT) && p.len() > EVENT.len());
    if let (Some(t), Some(s)) = (timed, sized) {
        let merged = format!("{}{}", phrases[t].strip_suffix(EVENT).expect("checked"), phrases[s]);
        phrases[t] = merged;
        phrases.remove(s);
    }
}

pub(crate) fn noun(c: Covariate) -> &'static str {
    match c {
        Covariate::Soc => "SOC",
        Covariate::CRate => "C-rate (signed, + = charge)",
        Covariate::AbsCRate => "|C-rate|",
        Covariate::StepTime => "time into the step",
        Covariate::TimeSinceCurrentChange => "time since the last current step",
        Covariate::LastCurrentStep => "the last current step (signed, + = up)",
        Covariate::DvDt => "dV/dt",
        Covariate::AbsDvDt => "|dV/dt|",
        Covariate::DvNext => "the coming voltage change (next row)",
        Covariate::CRateChangeNext => "the coming C-rate change (next row)",
        Covariate::AbsCRateChangeNext => "the size of the coming current step (up or down)",
        Covariate::Temperature => "cell temperature",
        Covariate::CycleNumber => "cycle number",
        Covariate::Soh => "SOH",
        Covariate::AmbientTemperature => "ambient temperature",
        Covariate::AboveLowestVoltage => "the rise above the cell's lowest voltage",
        Covariate::BelowHighestVoltage => "the drop below the cell's highest voltage",
        Covariate::Voltage => "voltage",
        Covariate::Current => "current (+ = charge)",
        Covariate::State => "state",
        Covariate::StepKind => "step kind",
        Covariate::Protocol => "protocol",
    }
}

/// A bin edge rounded to what an engineer would write: SOC to 1 %, voltage to 10 mV,
/// temperatures to 1 °C, cycles to whole ones, durations and the rest to 1–1.5–2–2.5–3–4–5–6–8
/// steps of their decade (in s, min or h, whichever the sentence prints).
pub fn round_bound(c: Covariate, x: f32) -> f32 {
    match c {
        Covariate::Soc | Covariate::Soh => (100.0 * x).round() / 100.0,
        Covariate::Voltage => (100.0 * x).round() / 100.0,
        Covariate::Temperature | Covariate::AmbientTemperature | Covariate::CycleNumber => x.round(),
        Covariate::StepTime | Covariate::TimeSinceCurrentChange => {
            let unit = if x >= 3600.0 { 3600.0 } else if x >= 120.0 { 60.0 } else { 1.0 };
            unit * nice(x / unit)
        }
        _ => nice(x),
    }
}

/// The nearest of 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 (× a power of ten), keeping the sign.
fn nice(x: f32) -> f32 {
    const STEPS: [f32; 10] = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0];
    if x.abs() < 1e-6 {
        return 0.0;
    }
    let decade = 10f32.powf(x.abs().log10().floor());
    let m = x.abs() / decade;
    let best = STEPS.iter().copied().min_by(|a, b| (a - m).abs().total_cmp(&(b - m).abs())).expect("steps");
    // Round-trip through two significant digits (all a step has) so 0.3 prints as "0.3", not
    // "0.30000001", and 10 × 0.01 as "0.1", not "0.09999999".
    let rounded: f32 = format!("{:.1e}", x.signum() * best * decade).parse().expect("a number");
    rounded
}

/// A (rounded) value in the covariate's unit.
fn value(c: Covariate, x: f32) -> String {
    // + 0.0 turns −0 (a bound just below zero) into 0: "-0 %" reads as a sign error.
    let x = at_resolution(c, x) + 0.0;
    match c {
        // SOC counts charge against the rated capacity, so a cell that gives more reads below 0 %.
        Covariate::Soc if (100.0 * x).round() < 0.0 => format!("{:.0} % (past the rated capacity)", (100.0 * x).round()),
        Covariate::Soc | Covariate::Soh => format!("{:.0} %", (100.0 * x).round() + 0.0),
        Covariate::CRate | Covariate::AbsCRate | Covariate::CRateChangeNext | Covariate::AbsCRateChangeNext | Covariate::LastCurrentStep => format!("{x}C"),
        Covariate::StepTime | Covariate::TimeSinceCurrentChange => duration(x),
        Covariate::DvDt | Covariate::AbsDvDt => format!("{x} mV/s"),
        // Headroom spans volts on a full cycle: "1.5 V above", not "1500 mV above".
        Covariate::AboveLowestVoltage | Covariate::BelowHighestVoltage if x.abs() >= 1000.0 => format!("{} V", x / 1000.0),
        Covariate::DvNext | Covariate::AboveLowestVoltage | Covariate::BelowHighestVoltage => format!("{x} mV"),
        Covariate::Temperature | Covariate::AmbientTemperature => format!("{x} °C"),
        Covariate::CycleNumber => format!("{}", x.round() as i64),
        Covariate::Voltage => format!("{x} V"),
        Covariate::Current => format!("{x} A"),
        Covariate::State | Covariate::StepKind | Covariate::Protocol => String::new(),
    }
}

fn duration(seconds: f32) -> String {
    if seconds >= 3600.0 {
        format!("{} h", nice(seconds / 3600.0))
    } else if seconds >= 120.0 {
        format!("{} min", (seconds / 60.0).round())
    } else {
        format!("{} s", seconds.round())
    }
}

fn atom_phrase(atom: &Atom, coding: &Coding) -> String {
    let c = atom.covariate;
    if c.is_categorical() {
        return category_phrase(atom, coding);
    }
    let (lo, hi) = atom.span();
    let range = coding.range(lo, hi);
    if let Some(phrase) = event_phrase(c, range) {
        return phrase;
    }
    let what = match c {
        Covariate::Soc => "SOC",
        Covariate::Soh => "SOH",
        Covariate::CRate => "C-rate",
        Covariate::AbsCRate => "|C-rate|",
        Covariate::StepTime => "time into the step",
        Covariate::TimeSinceCurrentChange => "time since the last current step",
        Covariate::LastCurrentStep => "the last current step",
        Covariate::DvDt => "dV/dt",
        Covariate::AbsDvDt => "|dV/dt|",
        Covariate::DvNext => "the coming voltage change",
        Covariate::CRateChangeNext => "the coming C-rate change",
        Covariate::AbsCRateChangeNext => "the size of the coming current step",
        Covariate::Temperature => "cell temperature",
        Covariate::CycleNumber => "cycle",
        Covariate::AmbientTemperature => "ambient temperature",
        Covariate::AboveLowestVoltage => "the rise above the cell's lowest voltage",
        Covariate::BelowHighestVoltage => "the drop below the cell's highest voltage",
        Covariate::Voltage => "voltage",
        Covariate::Current => "current",
        _ => unreachable!("categorical handled above"),
    };
    interval_phrase(c, what, range)
}

/// A bound below what a cycler resolves (0.0005C, a 2.5 Ah cell's 1.25 mA; 0.001 mV; 0.0001
/// mV/s) reads as zero: an edge at 5e-6 C separates "no change" from "a step up", and the
/// sentence says "steps up". The bin edge itself stays, so the predicate keeps excluding the
/// steps exactly at zero.
fn at_resolution(c: Covariate, x: f32) -> f32 {
    if x.abs() < resolution(c) { 0.0 } else { x }
}

/// What a cycler resolves of a covariate whose zero reads as an event (no current, no step, no
/// voltage change); 0 for the others.
pub fn resolution(c: Covariate) -> f32 {
    match c {
        Covariate::CRate | Covariate::AbsCRate | Covariate::CRateChangeNext | Covariate::AbsCRateChangeNext | Covariate::LastCurrentStep => 0.0005,
        Covariate::DvNext | Covariate::AboveLowestVoltage | Covariate::BelowHighestVoltage => 0.001,
        Covariate::DvDt | Covariate::AbsDvDt => 0.0001,
        _ => 0.0,
    }
}

/// Whether the lower and the upper bound of `range`, each reading zero, let the steps at exactly
/// zero in: a bin's lower edge is inclusive (a lower bound at or below 0 takes them), its upper
/// edge exclusive (an upper bound above 0 takes them).
fn takes_zero(c: Covariate, range: (Option<f32>, Option<f32>)) -> (bool, bool) {
    let zero = |x: f32| at_resolution(c, x) == 0.0;
    (range.0.is_some_and(|a| zero(a) && a <= 0.0), range.1.is_some_and(|b| zero(b) && b > 0.0))
}

/// Phrases for bounds that read as events or directions rather than numbers on a scale.
fn event_phrase(c: Covariate, range: (Option<f32>, Option<f32>)) -> Option<String> {
    let v = |x: f32| value(c, x);
    // "C-rate ≥ 0" holds at rest too, and must not read "during charge".
    let takes_zero = takes_zero(c, range);
    let range = (range.0.map(|a| at_resolution(c, a)), range.1.map(|b| at_resolution(c, b)));
    Some(match (c, range) {
        (Covariate::CRate, (Some(_), None)) if takes_zero.0 => "at rest or during charge".into(),
        (Covariate::CRate, (None, Some(_))) if takes_zero.1 => "at rest or during discharge".into(),
        (Covariate::CRateChangeNext, (Some(_), None)) if takes_zero.0 => "when the current does not step down next".into(),
        (Covariate::CRateChangeNext, (None, Some(_))) if takes_zero.1 => "when the current does not step up next".into(),
        // Zero's own bin (`Coding::quantiles`).
        (Covariate::CRate, (Some(a), Some(b))) if a == 0.0 && b == 0.0 => "when no current flows".into(),
        (Covariate::AbsCRate, (None, Some(b))) if b == 0.0 => "when no current flows".into(),
        (Covariate::AbsCRate, (Some(a), None)) if a == 0.0 => "when current flows".into(),
        (Covariate::CRateChangeNext, (Some(a), Some(b))) if a == 0.0 && b == 0.0 => "when the current holds steady next".into(),
        (Covariate::DvDt, (Some(a), Some(b))) if a == 0.0 && b == 0.0 => "when the voltage holds steady".into(),
        (Covariate::CRate | Covariate::CRateChangeNext, _) if takes_zero.0 || takes_zero.1 => return None,
        // Signed C-rate bounded away from zero reads as a direction and a rate; at zero, the direction.
        (Covariate::CRate, (Some(a), None)) if a == 0.0 => "during charge".into(),
        (Covariate::CRate, (None, Some(b))) if b == 0.0 => "during discharge".into(),
        (Covariate::CRate, (Some(a), None)) if a > 0.0 => format!("during charge above {}", v(a)),
        (Covariate::CRate, (None, Some(b))) if b < 0.0 => format!("during discharge above {}", v(-b)),
        (Covariate::CRateChangeNext, (Some(a), None)) if a == 0.0 => "when the current steps up next".into(),
        (Covariate::CRateChangeNext, (None, Some(b))) if b == 0.0 => "when the current steps down next".into(),
        (Covariate::AbsCRateChangeNext, (Some(a), None)) if a == 0.0 => "when the current steps up or down next".into(),
        (Covariate::AbsCRateChangeNext, (Some(a), None)) => format!("when the current steps up or down by more than {} next", v(a)),
        (Covariate::AbsCRateChangeNext, (None, Some(b))) if b == 0.0 => "when the current holds steady next".into(),
        (Covariate::LastCurrentStep, (Some(a), None)) if a == 0.0 => "after a current step up".into(),
        (Covariate::LastCurrentStep, (None, Some(b))) if b == 0.0 => "after a current step down".into(),
        (Covariate::CRateChangeNext, (Some(a), None)) if a >= 0.0 => format!("when the current steps up by more than {} next", v(a)),
        (Covariate::CRateChangeNext, (None, Some(b))) if b <= 0.0 => format!("when the current steps down by more than {} next", v(-b)),
        (Covariate::LastCurrentStep, (Some(a), None)) if a >= 0.0 => format!("after a current step up of more than {}", v(a)),
        (Covariate::LastCurrentStep, (None, Some(b))) if b <= 0.0 => format!("after a current step down of more than {}", v(-b)),
        // Both bounds below the resolution: no change at all.
        (Covariate::DvNext, (Some(a), Some(b))) if a == 0.0 && b == 0.0 => "when the voltage holds steady next".into(),
        // Small steps of one sign read as sizes ("steps down by 0.008C to 0.015C", a CV taper),
        // a bound just across zero as what it rules out, never as "above -0.005C".
        (Covariate::CRateChangeNext, (Some(a), None)) => format!("when the current does not step down by more than {} next", v(-a)),
        (Covariate::CRateChangeNext, (None, Some(b))) => format!("when the current does not step up by more than {} next", v(b)),
        (Covariate::CRateChangeNext, (Some(a), Some(b))) if b == 0.0 => format!("when the current steps down by less than {} next", v(-a)),
        (Covariate::CRateChangeNext, (Some(a), Some(b))) if b < 0.0 => format!("when the current steps down by {} to {} next", v(-b), v(-a)),
        (Covariate::CRateChangeNext, (Some(a), Some(b))) if a == 0.0 => format!("when the current steps up by less than {} next", v(b)),
        (Covariate::CRateChangeNext, (Some(a), Some(b))) if a > 0.0 => format!("when the current steps up by {} to {} next", v(a), v(b)),
        (Covariate::StepTime, (None, Some(b))) => format!("in the first {} of a step", v(b)),
        (Covariate::StepTime, (Some(a), None)) => format!("more than {} into a step", v(a)),
        (Covariate::TimeSinceCurrentChange, (None, Some(b))) => format!("in the first {} after a current step", v(b)),
        (Covariate::TimeSinceCurrentChange, (Some(a), None)) => format!("more than {} after the last current step", v(a)),
        (Covariate::AbsDvDt, (Some(a), None)) if a == 0.0 => "when the voltage moves".into(),
        (Covariate::AbsDvDt, (None, Some(b))) if b == 0.0 => "when the voltage holds steady".into(),
        (Covariate::AbsDvDt, (Some(a), Some(b))) if a == 0.0 => format!("when the voltage moves but slower than {} (up or down)", v(b)),
        (Covariate::AbsDvDt, (Some(a), None)) => format!("when the voltage moves faster than {} (up or down)", v(a)),
        (Covariate::AbsDvDt, (None, Some(b))) => format!("when the voltage moves slower than {} (up or down)", v(b)),
        (Covariate::AboveLowestVoltage, (None, Some(b))) => format!("within {} of the cell's lowest voltage", v(b)),
        (Covariate::BelowHighestVoltage, (None, Some(b))) => format!("within {} of the cell's highest voltage", v(b)),
        _ => return None,
    })
}

/// A bin's lower edge is inclusive and its upper one exclusive; where a bound reads zero, which
/// side the steps at zero fall on is said ("0 mV or above", "above 0C and below 0.15C").
fn interval_phrase(c: Covariate, what: &str, range: (Option<f32>, Option<f32>)) -> String {
    let zero = |x: f32| at_resolution(c, x) == 0.0;
    let (low_takes_zero, high_takes_zero) = takes_zero(c, range);
    match range {
        (Some(a), None) if low_takes_zero => format!("when {what} is {} or above", value(c, a)),
        (Some(a), None) => format!("when {what} is above {}", value(c, a)),
        (None, Some(b)) if high_takes_zero => format!("when {what} is {} or below", value(c, b)),
        (None, Some(b)) => format!("when {what} is below {}", value(c, b)),
        // Two bounds that round alike ("between 0C and 0C") are one value.
        (Some(a), Some(b)) if value(c, a) == value(c, b) => format!("when {what} is about {}", value(c, a)),
        (Some(a), Some(b)) if zero(a) && !low_takes_zero => format!("when {what} is above {} and below {}", value(c, a), value(c, b)),
        (Some(a), Some(b)) if high_takes_zero => format!("when {what} is between {} and {} inclusive", value(c, a), value(c, b)),
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
        (Covariate::StepKind, "cc_charge") => "in CC charge".into(),
        (Covariate::StepKind, "cc_discharge") => "in CC discharge".into(),
        (Covariate::StepKind, "cv_hold") => "in CV holds".into(),
        (Covariate::StepKind, "rest_after_charge") => "in relaxation after charge".into(),
        (Covariate::StepKind, "rest_after_discharge") => "in relaxation after discharge".into(),
        (Covariate::StepKind, "charge_pulse") => "in charge pulses".into(),
        (Covariate::StepKind, "discharge_pulse") => "in discharge pulses".into(),
        (Covariate::StepKind, other) => format!("in {other} steps"),
        (Covariate::Protocol, p) => format!("in {p} cells"),
        (_, other) => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::label::candidates::{Grade, Predicate};

    fn coding(covariate: Covariate, edges: &[f32]) -> Coding {
        Coding { covariate, edges: edges.to_vec(), categories: Vec::new(), range: Some((f32::MIN, f32::MAX)) }
    }

    /// Every covariate without bins but `one`.
    fn codings_with(one: Coding) -> Vec<Coding> {
        let mut codings: Vec<Coding> = Covariate::ALL.iter().map(|&c| coding(c, &[])).collect();
        let k = one.covariate.index();
        codings[k] = one;
        codings
    }

    #[test]
    fn shares_read_with_one_significant_digit_below_ten() {
        let read: Vec<String> = [0.043, 0.4, 3.4, 31.2, 0.0].iter().map(|&v| one_significant(v)).collect();
        assert_eq!(read, ["0.04", "0.4", "3", "31", "0"]);
    }

    #[test]
    fn a_regime_tracker_names_its_regime() {
        let rate = coding(Covariate::CRate, &[-1.0, 0.0, 1.0]);
        let tracker = Candidate::Tracker { covariate: Covariate::AbsCRate, increasing: true, within: Some(Atom::interval(Covariate::CRate, 0, 1)) };
        assert_eq!(sentence(&tracker, &codings_with(rate)), "tracks |C-rate| (rises with it) during discharge");
    }

    #[test]
    fn a_graded_detector_says_where_it_fires_more_often() {
        let rate = coding(Covariate::CRate, &[-1.0, 0.0, 1.0]);
        let graded = |covariate, increasing, within, half| sentence(&Candidate::Graded { covariate, increasing, within, half, and: None }, &codings_with(rate.clone()));
        assert_eq!(graded(Covariate::AbsCRate, true, Some(Atom::interval(Covariate::CRate, 0, 1)), 0), "fires during discharge, more often the higher the |C-rate|");
        assert_eq!(graded(Covariate::LastCurrentStep, false, None, 0), "fires more often the lower the last current step (signed, + = up)");
        assert_eq!(half_bound(Covariate::AbsCRateChangeNext, false, 0.0001), "where the current holds steady next");
        assert_eq!(half_bound(Covariate::AbsCRateChangeNext, true, 0.0001), "where the current steps up or down next");
        assert_eq!(half_bound(Covariate::AbsCRateChangeNext, true, 0.5), "above 0.5C");
        assert_eq!(half_bound(Covariate::CRate, true, 1e-6), "during charge");
        assert_eq!(half_bound(Covariate::CRate, true, 0.0), "at rest or during charge");
        assert_eq!(half_bound(Covariate::CRate, false, 0.0), "during discharge");
        assert_eq!(half_bound(Covariate::CRateChangeNext, false, 1e-6), "where the current does not step up next");
        // C-rate bins: below -1, [-1, 0), [0, 1), from 1.
        assert_eq!(graded(Covariate::CRate, true, None, 3), "fires more often the higher the C-rate (signed, + = charge), half of its firing above 1C");
        assert_eq!(graded(Covariate::CRate, false, None, 1), "fires more often the lower the C-rate (signed, + = charge), half of its firing during discharge");
        // Half of the firing in the scale's first code: most of it lies there, and the sentence says so.
        let step = codings_with(coding(Covariate::AbsCRateChangeNext, &[1e-6, 0.3]));
        let most = Candidate::Graded { covariate: Covariate::AbsCRateChangeNext, increasing: true, within: None, half: 0, and: None };
        assert_eq!(sentence(&most, &step), "fires more often the higher the size of the coming current step (up or down), most of its firing where the current holds steady next");
    }

    #[test]
    fn a_two_covariate_graded_detector_names_both_scales() {
        let mut codings = codings_with(coding(Covariate::AbsCRate, &[0.5, 1.0, 2.0]));
        codings[Covariate::Voltage.index()] = coding(Covariate::Voltage, &[3.2, 3.6]);
        let pair = |share| {
            let and = Grade { covariate: Covariate::AbsCRate, increasing: true, half: 2, share };
            sentence(&Candidate::Graded { covariate: Covariate::Voltage, increasing: false, within: None, half: 0, and: Some(and) }, &codings)
        };
        assert_eq!(pair(5), "fires more often the lower the voltage and the higher the |C-rate|, half of its firing below 3.2 V and half above 1C");
        assert_eq!(pair(3), "fires more often the lower the voltage and, less so, the higher the |C-rate|, half of its firing below 3.2 V and half above 1C");
        assert_eq!(pair(7), "fires more often the higher the |C-rate| and, less so, the lower the voltage, half of its firing above 1C and half below 3.2 V");
        // Two scales whose values read alike are named.
        codings[Covariate::CRate.index()] = coding(Covariate::CRate, &[-1.0, 0.0, 1.0]);
        let and = Grade { covariate: Covariate::CRate, increasing: false, half: 0, share: 5 };
        let alike = Candidate::Graded { covariate: Covariate::AbsCRate, increasing: true, within: None, half: 2, and: Some(and) };
        assert_eq!(
            sentence(&alike, &codings),
            "fires more often the higher the |C-rate| and the lower the C-rate (signed, + = charge), half of its firing above 1C (|C-rate|) and half below -1C (C-rate)"
        );
    }

    #[test]
    fn a_second_when_condition_is_joined_by_while() {
        let mut codings: Vec<Coding> = Covariate::ALL.iter().map(|&c| coding(c, &[])).collect();
        codings[Covariate::DvDt.index()] = coding(Covariate::DvDt, &[-0.5, 0.0, 0.5]);
        codings[Covariate::Voltage.index()] = coding(Covariate::Voltage, &[3.5, 3.9]);
        // dV/dt in bins 1..=2 = [-0.5, 0.5); voltage in bin 2 = above 3.9 V.
        let atoms = vec![Atom::interval(Covariate::DvDt, 1, 2), Atom::interval(Covariate::Voltage, 2, 2)];
        let text = sentence(&Candidate::all(atoms), &codings);
        assert_eq!(text, "fires when dV/dt is between -0.5 mV/s and 0.5 mV/s while voltage is above 3.9 V");
    }

    #[test]
    fn a_bound_just_below_zero_soc_reads_0_percent() {
        assert_eq!(value(Covariate::Soc, -0.001), "0 %");
        assert_eq!(value(Covariate::Soc, 0.524), "52 %");
        assert_eq!(value(Covariate::Soc, -0.1), "-10 % (past the rated capacity)");
    }

    #[test]
    fn bounds_are_rounded_as_an_engineer_writes_them() {
        assert_eq!(value(Covariate::AbsCRate, round_bound(Covariate::AbsCRate, 0.3127)), "0.3C");
        assert_eq!(value(Covariate::CRate, round_bound(Covariate::CRate, -1.43)), "-1.5C");
        assert_eq!(value(Covariate::Voltage, round_bound(Covariate::Voltage, 4.1837)), "4.18 V");
        assert_eq!(value(Covariate::Temperature, round_bound(Covariate::Temperature, 41.37)), "41 °C");
        assert_eq!(value(Covariate::StepTime, round_bound(Covariate::StepTime, 57.0)), "60 s");
        assert_eq!(value(Covariate::StepTime, round_bound(Covariate::StepTime, 13_700.0)), "4 h");
        let rate = coding(Covariate::CRate, &[-1.0, 0.0, 1.0]);
        assert_eq!(sentence(&Candidate::all(vec![Atom::interval(Covariate::CRate, 2, 3)]), &codings_with(rate.clone())), "fires at rest or during charge", "C-rate ≥ 0 holds at rest too");
        assert_eq!(sentence(&Candidate::all(vec![Atom::interval(Covariate::CRate, 3, 3)]), &codings_with(rate)), "fires during charge above 1C");
        // The step up to the next decade: 10 × 0.01 must not print as 0.09999999.
        assert_eq!(value(Covariate::CRate, round_bound(Covariate::CRate, 0.0997)), "0.1C");
        assert_eq!(value(Covariate::DvNext, round_bound(Covariate::DvNext, -96.0)), "-100 mV");
        assert_eq!(value(Covariate::AboveLowestVoltage, 1500.0), "1.5 V");
        assert_eq!(value(Covariate::BelowHighestVoltage, 400.0), "400 mV");
        // Below a cycler's resolution a bound is zero, and a step "of more than 0C" is a step.
        let mut codings: Vec<Coding> = Covariate::ALL.iter().map(|&c| coding(c, &[])).collect();
        codings[Covariate::CRateChangeNext.index()] = coding(Covariate::CRateChangeNext, &[round_bound(Covariate::CRateChangeNext, 5e-6)]);
        assert_eq!(codings[Covariate::CRateChangeNext.index()].code(0.0), 0, "no change stays below the edge");
        let up = Candidate::all(vec![Atom::interval(Covariate::CRateChangeNext, 1, 1)]);
        assert_eq!(sentence(&up, &codings), "fires when the current steps up next");
        // An interval between two bounds that both read zero is "no change", not "between 0C and 0C".
        codings[Covariate::CRateChangeNext.index()] = coding(Covariate::CRateChangeNext, &[-4e-6, 4e-6]);
        let steady = Candidate::all(vec![Atom::interval(Covariate::CRateChangeNext, 1, 1)]);
        assert_eq!(sentence(&steady, &codings), "fires when the current holds steady next");
        // Small steps of one sign (a CV hold's taper) and bounds just across zero.
        codings[Covariate::CRateChangeNext.index()] = coding(Covariate::CRateChangeNext, &[-0.015, -0.008, -0.0004, 0.01]);
        let change = |lo, hi| sentence(&Candidate::all(vec![Atom::interval(Covariate::CRateChangeNext, lo, hi)]), &codings);
        assert_eq!(change(1, 1), "fires when the current steps down by 0.008C to 0.015C next");
        assert_eq!(change(2, 4), "fires when the current does not step down by more than 0.008C next");
        assert_eq!(change(3, 4), "fires when the current does not step down next", "-0.0004C is below the resolution");
        assert_eq!(change(0, 3), "fires when the current does not step up by more than 0.01C next");
        // A bound that reads zero says which side the steps at zero fall on.
        codings[Covariate::DvNext.index()] = coding(Covariate::DvNext, &[-5.0, 0.0, 1e-6, 5.0]);
        codings[Covariate::AbsCRate.index()] = coding(Covariate::AbsCRate, &[1e-6, 0.15, 1.0]);
        let dv = |c, lo, hi| sentence(&Candidate::all(vec![Atom::interval(c, lo, hi)]), &codings);
        assert_eq!(dv(Covariate::DvNext, 2, 4), "fires when the coming voltage change is 0 mV or above");
        assert_eq!(dv(Covariate::DvNext, 3, 4), "fires when the coming voltage change is above 0 mV");
        assert_eq!(dv(Covariate::DvNext, 0, 2), "fires when the coming voltage change is 0 mV or below");
        assert_eq!(dv(Covariate::DvNext, 1, 2), "fires when the coming voltage change is between -5 mV and 0 mV inclusive");
        assert_eq!(dv(Covariate::AbsCRate, 1, 1), "fires when |C-rate| is above 0C and below 0.15C");
        // A lower edge at zero takes the steps at zero (rests, steady current) in.
        codings[Covariate::CRate.index()] = coding(Covariate::CRate, &[-0.5, 0.0, 0.5]);
        codings[Covariate::CRateChangeNext.index()] = coding(Covariate::CRateChangeNext, &[-0.5, 0.0, 5e-6, 0.5]);
        let rate = |c, lo, hi| sentence(&Candidate::all(vec![Atom::interval(c, lo, hi)]), &codings);
        assert_eq!(rate(Covariate::CRate, 2, 3), "fires at rest or during charge");
        assert_eq!(rate(Covariate::CRate, 0, 1), "fires during discharge");
        assert_eq!(rate(Covariate::CRate, 1, 2), "fires when C-rate is between -0.5C and 0.5C");
        assert_eq!(rate(Covariate::CRateChangeNext, 2, 4), "fires when the current does not step down next");
        assert_eq!(rate(Covariate::CRateChangeNext, 3, 4), "fires when the current steps up next");
        assert_eq!(rate(Covariate::CRateChangeNext, 2, 2), "fires when the current holds steady next");
        // The size of the coming step reads as a step either way.
        codings[Covariate::AbsCRateChangeNext.index()] = coding(Covariate::AbsCRateChangeNext, &[5e-6, 0.3]);
        let either = |lo, hi| sentence(&Candidate::all(vec![Atom::interval(Covariate::AbsCRateChangeNext, lo, hi)]), &codings);
        assert_eq!(either(1, 2), "fires when the current steps up or down next");
        assert_eq!(either(2, 2), "fires when the current steps up or down by more than 0.3C next");
        assert_eq!(either(0, 0), "fires when the current holds steady next");
        // How fast the voltage moves reads as movement either way.
        codings[Covariate::AbsDvDt.index()] = coding(Covariate::AbsDvDt, &[5e-5, 0.2]);
        let moving = |lo, hi| sentence(&Candidate::all(vec![Atom::interval(Covariate::AbsDvDt, lo, hi)]), &codings);
        assert_eq!(moving(2, 2), "fires when the voltage moves faster than 0.2 mV/s (up or down)");
        assert_eq!(moving(0, 1), "fires when the voltage moves slower than 0.2 mV/s (up or down)");
        assert_eq!(moving(0, 0), "fires when the voltage holds steady");
        assert_eq!(moving(1, 1), "fires when the voltage moves but slower than 0.2 mV/s (up or down)");
        codings[Covariate::Soc.index()] = coding(Covariate::Soc, &[0.501, 0.502]);
        assert_eq!(sentence(&Candidate::all(vec![Atom::interval(Covariate::Soc, 1, 1)]), &codings), "fires when SOC is about 50 %");
    }

    #[test]
    fn a_disjunction_names_each_regime() {
        let mut codings: Vec<Coding> = Covariate::ALL.iter().map(|&c| coding(c, &[])).collect();
        codings[Covariate::Soc.index()] = coding(Covariate::Soc, &[0.1, 0.9]);
        codings[Covariate::CRate.index()] = coding(Covariate::CRate, &[-1.0, 0.0]);
        let either = Candidate::Detector(Predicate::either(Atom::interval(Covariate::Soc, 2, 2), Atom::interval(Covariate::CRate, 0, 0)));
        assert_eq!(sentence(&either, &codings), "fires when SOC is above 90 %, or during discharge above 1C");
        let mut atoms = vec![Atom::interval(Covariate::Soc, 2, 2), Atom::interval(Covariate::CRate, 0, 0)];
        atoms.push(Atom::interval(Covariate::StepTime, 0, 0));
        codings[Covariate::StepTime.index()] = coding(Covariate::StepTime, &[60.0]);
        let narrowed = Candidate::Detector(Predicate { atoms, any: true, or: Vec::new() });
        assert_eq!(sentence(&narrowed, &codings), "fires in the first 60 s of a step, and either when SOC is above 90 % or during discharge above 1C");
        let two_regimes = Predicate { atoms: vec![Atom::interval(Covariate::Soc, 2, 2), Atom::interval(Covariate::StepTime, 0, 0)], any: false, or: vec![Atom::interval(Covariate::CRate, 0, 0)] };
        assert_eq!(sentence(&Candidate::Detector(two_regimes), &codings), "fires when SOC is above 90 % and in the first 60 s of a step; or during discharge above 1C");
        let second_of_two = Predicate { atoms: vec![Atom::interval(Covariate::Soc, 2, 2)], any: false, or: vec![Atom::interval(Covariate::CRate, 0, 0), Atom::interval(Covariate::StepTime, 0, 0)] };
        assert_eq!(sentence(&Candidate::Detector(second_of_two), &codings), "fires when SOC is above 90 %; or during discharge above 1C and in the first 60 s of a step");
    }

    #[test]
    fn time_after_a_current_step_reads_as_an_event() {
        let mut codings: Vec<Coding> = Covariate::ALL.iter().map(|&c| coding(c, &[])).collect();
        codings[Covariate::TimeSinceCurrentChange.index()] = coding(Covariate::TimeSinceCurrentChange, &[60.0, 600.0]);
        codings[Covariate::LastCurrentStep.index()] = coding(Covariate::LastCurrentStep, &[-1.0, 0.0, 0.5]);
        let atoms = vec![Atom::interval(Covariate::TimeSinceCurrentChange, 0, 0), Atom::interval(Covariate::LastCurrentStep, 3, 3)];
        let text = sentence(&Candidate::all(atoms), &codings);
        assert_eq!(text, "fires in the first 60 s after a current step up of more than 0.5C");
    }
}
