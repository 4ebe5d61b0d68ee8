//! SOC anchors of one cell (DESIGN §1.3), found the way a battery engineer would:
//! 1. cut-off voltages: given (a setting or the file's metadata), or inferred from the steps —
//!    the voltage of CV holds, or a voltage that several charges or discharges stopped at;
//! 2. SOC = 1 at the end of a charge that tapered at the upper cut-off (a CV hold), less the
//!    charge the taper would still have taken;
//! 3. else SOC = 0 at the end of a low-rate discharge that reached the lower cut-off.
//!
//! SOC counts nominal capacity down from full, so a top anchor wins over a bottom one: a nominal
//! capacity that differs from the true one moves the bottom, not the top. Anchors that would run
//! SOC far outside 0–1 are dropped. Cells with neither get an anchor from the dataset's OCV–SOC
//! relation (`data::ocv`) or stay unanchored.

use serde::Serialize;

use crate::data::cells::AnchorMethod;
use crate::data::derive::StepSummary;
use crate::data::schema::{Method, State};

/// A charge ends full when its current has tapered to this C-rate at the upper cut-off: CV holds
/// stop at C/20–C/10, where 1–2 % of capacity is still missing.
pub const FULL_TAPER_C: f64 = 0.1;
/// Discharges at or below this C-rate that reach the lower cut-off anchor SOC = 0: at C/10 the
/// overpotential leaves 1–3 % of capacity behind, at 1C often 10 % or more.
pub const LOW_RATE_C: f64 = 0.1;
/// "At the cut-off" means within this share of the cell's voltage window, so the tolerance
/// scales with the chemistry (12 mV on a 1.2 V NMC window, 7 mV on a 0.7 V LFP one).
pub const CUTOFF_SHARE: f64 = 0.01;
/// The stated SOC error (1 σ) of each rule anchor: what a hold a little below the true cut-off
/// leaves missing beyond its extrapolated taper, and what a C/10 discharge leaves at the cut-off.
pub const CV_HOLD_UNCERTAINTY: f64 = 0.015;
pub const LOW_RATE_UNCERTAINTY: f64 = 0.03;

/// SOC this far outside 0–1 (as a fraction of nominal capacity) means the anchor and the
/// capacity contradict each other (e.g. a capacity estimated from a partial discharge): the
/// cell is left unanchored. The margin allows a nominal capacity up to half off the true one
/// (PyBaMM's Marquis2019 cell holds 23 % more than its nominal capacity).
pub const SOC_RANGE_MARGIN: f64 = 0.5;

/// Whether SOC with these extremes (fractions of nominal capacity) is plausible.
pub fn plausible(lowest: f64, highest: f64) -> bool {
    lowest >= -SOC_RANGE_MARGIN && highest <= 1.0 + SOC_RANGE_MARGIN
}

/// The largest charge (share of nominal capacity) a taper's extrapolation may claim is still
/// missing: more means the decay was not exponential, and the estimate is not trusted.
pub const MAX_TAPER_LEFT: f64 = 0.05;

/// Where a cut-off voltage came from, most trusted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CutoffSource {
    /// A setting or the file's metadata.
    Given,
    /// The voltage the cell's CV holds held (upper only).
    CvHold,
    /// Several charges (or discharges) of different lengths stopped at this voltage.
    VoltageLimited,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cutoff {
    pub volts: f64,
    pub source: CutoffSource,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Cutoffs {
    pub upper: Option<Cutoff>,
    pub lower: Option<Cutoff>,
}

/// An SOC anchor: at `row` (where cumulative charge was `charge_ah`) SOC is `soc`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub row: u64,
    pub charge_ah: f64,
    pub soc: f64,
}

/// What anchoring found for a cell: no anchors means no absolute SOC.
#[derive(Debug, Clone, PartialEq)]
pub struct CellAnchors {
    pub method: AnchorMethod,
    pub anchors: Vec<Anchor>,
    /// Stated SOC error of the anchors (1 σ); `None` when unanchored.
    pub uncertainty: Option<f64>,
    pub cutoffs: Cutoffs,
    /// Why a rule anchor that was found was not used, for the cell's warnings.
    pub dropped: Option<String>,
}

/// The steps that hold the cell at a voltage long enough to say something: pulses overshoot the
/// cut-offs by their IR drop and are left out.
fn sustained<'a>(steps: &'a [StepSummary], methods: &'a [Method]) -> impl Iterator<Item = &'a StepSummary> + Clone {
    steps.iter().zip(methods).filter(|(_, m)| **m != Method::Pulse).map(|(s, _)| s)
}

/// The tolerance around a cut-off: a share of the cut-off window, or of the voltages the cell
/// held when a cut-off is unknown.
pub(crate) fn tolerance(steps: &[StepSummary], methods: &[Method], cutoffs: &Cutoffs) -> f64 {
    let window = match (cutoffs.upper, cutoffs.lower) {
        (Some(u), Some(l)) if u.volts > l.volts => u.volts - l.volts,
        _ => {
            let (lo, hi) = sustained(steps, methods)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| (lo.min(s.min_voltage), hi.max(s.max_voltage)));
            (hi - lo).max(0.0)
        }
    };
    CUTOFF_SHARE * window
}

/// A charge that ends with its current tapered to C/10 or less (a CV hold, or a merged CC-CV
/// step of a file without step numbers).
fn ends_tapered(s: &StepSummary, capacity_ah: f64) -> bool {
    s.state() == State::Charging && s.end_current.abs() <= FULL_TAPER_C * capacity_ah
}

/// Infers the cut-offs the data does not give. Upper: the highest voltage a taper held (its
/// current fell to half its peak or less while the voltage stayed at the step's maximum), if no
/// sustained charge ended above it. Either end: a voltage that two or more steps of different
/// lengths stopped at, at their extreme (time-limited repeats of one cycle are all the same length).
pub fn infer_cutoffs(steps: &[StepSummary], methods: &[Method], capacity_ah: f64, given: Cutoffs) -> Cutoffs {
    let tol = tolerance(steps, methods, &given);
    // Rests after a charge pulse start above the hold voltage; only where charges ended counts.
    let top = sustained(steps, methods).filter(|s| s.state() == State::Charging).map(|s| s.end_voltage).fold(f64::NEG_INFINITY, f64::max);
    let cv_voltage = sustained(steps, methods)
        .filter(|s| ends_tapered(s, capacity_ah) && s.end_current.abs() <= 0.5 * s.max_abs_current && s.end_voltage >= s.max_voltage - tol)
        .map(|s| s.end_voltage)
        .fold(f64::NEG_INFINITY, f64::max);
    let upper = given.upper.or_else(|| {
        if cv_voltage.is_finite() && top <= cv_voltage + tol {
            Some(Cutoff { volts: cv_voltage, source: CutoffSource::CvHold })
        } else {
            voltage_limited(sustained(steps, methods), State::Charging, tol)
        }
    });
    let lower = given.lower.or_else(|| voltage_limited(sustained(steps, methods), State::Discharging, tol));
    Cutoffs { upper, lower }
}

/// The extreme end voltage of `state` steps, when at least two steps of different durations
/// stopped there (within `tol`) at their own extreme voltage.
fn voltage_limited<'a>(steps: impl Iterator<Item = &'a StepSummary> + Clone, state: State, tol: f64) -> Option<Cutoff> {
    let charging = state == State::Charging;
    // Distance beyond the cut-off, positive inward: how far an end voltage is from the extreme.
    let inward = |s: &StepSummary, extreme: f64| if charging { extreme - s.end_voltage } else { s.end_voltage - extreme };
    let at_own_extreme = |s: &StepSummary| if charging { s.end_voltage >= s.max_voltage - tol } else { s.end_voltage <= s.min_voltage + tol };
    let of_state = steps.filter(|s| s.state() == state && at_own_extreme(s));
    let extreme = of_state.clone().map(|s| s.end_voltage).reduce(|a, b| if charging { a.max(b) } else { a.min(b) })?;
    let durations: Vec<f64> = of_state.filter(|s| inward(s, extreme) <= tol).map(StepSummary::duration_s).collect();
    let (shortest, longest) = durations.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &d| (lo.min(d), hi.max(d)));
    // Lengths differing by more than 1 % cannot be one time-limited step repeated.
    (durations.len() >= 2 && longest > 1.01 * shortest).then_some(Cutoff { volts: extreme, source: CutoffSource::VoltageLimited })
}

/// The cell's anchors from its steps and cut-offs (DESIGN §1.3).
pub fn find_anchors(steps: &[StepSummary], methods: &[Method], capacity_ah: f64, given: Cutoffs) -> CellAnchors {
    let cutoffs = infer_cutoffs(steps, methods, capacity_ah, given);
    let tol = tolerance(steps, methods, &cutoffs);
    let end_anchor = |s: &StepSummary, soc: f64| Anchor { row: s.end_row - 1, charge_ah: s.end_charge_ah, soc };
    let unanchored = CellAnchors { method: AnchorMethod::Unanchored, anchors: Vec::new(), uncertainty: None, cutoffs, dropped: None };
    let anchored = |method, anchors: Vec<Anchor>, uncertainty| {
        let (lo, hi) = soc_range(steps, &anchors, capacity_ah);
        if plausible(lo, hi) {
            CellAnchors { method, anchors, uncertainty: Some(uncertainty), cutoffs, dropped: None }
        } else {
            let why = format!(
                "{} anchor dropped: SOC would run {lo:.2}..{hi:.2} of {capacity_ah:.3} Ah, so anchor and capacity disagree",
                method.as_str()
            );
            CellAnchors { dropped: Some(why), ..unanchored.clone() }
        }
    };
    if let Some(upper) = cutoffs.upper {
        let full: Vec<Anchor> = sustained(steps, methods)
            .filter(|s| ends_tapered(s, capacity_ah) && s.end_voltage >= upper.volts - tol)
            .map(|s| end_anchor(s, 1.0 - charge_left_by_taper(s, capacity_ah)))
            .collect();
        if !full.is_empty() {
            return anchored(AnchorMethod::CvHold, full, CV_HOLD_UNCERTAINTY);
        }
    }
    if let Some(lower) = cutoffs.lower {
        let empty: Vec<Anchor> = sustained(steps, methods)
            .filter(|s| {
                s.state() == State::Discharging
                    && (s.mean_abs_current() <= LOW_RATE_C * capacity_ah || s.end_current.abs() <= FULL_TAPER_C * capacity_ah)
                    && s.end_voltage <= lower.volts + tol
            })
            .map(|s| end_anchor(s, charge_left_by_taper(s, capacity_ah)))
            .collect();
        if !empty.is_empty() {
            return anchored(AnchorMethod::LowRateDischarge, empty, LOW_RATE_UNCERTAINTY);
        }
    }
    unanchored
}

/// The charge (share of nominal capacity) a tapering hold would still take, or give, if held on: its
/// current decays about exponentially, so what is left when it stops at I_end is I_end·τ, with
/// τ = Q_hold / (I_start − I_end). Zero where the current did not fall to half (no taper seen).
fn charge_left_by_taper(s: &StepSummary, capacity_ah: f64) -> f64 {
    let (start, end) = (s.plateau_start_current.abs(), s.end_current.abs());
    if start < 2.0 * end {
        return 0.0;
    }
    let held_ah = (s.end_charge_ah - s.plateau_start_ah).abs();
    (end * held_ah / (start - end) / capacity_ah).clamp(0.0, MAX_TAPER_LEFT)
}

/// The lowest and highest SOC at the steps' ends, as the rows would get it from `anchors`
/// (each holds from its row on; rows before the first count back from it).
fn soc_range(steps: &[StepSummary], anchors: &[Anchor], capacity_ah: f64) -> (f64, f64) {
    // Steps and anchors both run in row order: the anchor in force only moves forward (a search
    // from the last anchor per step made this steps × anchors on long ageing tests).
    let mut next = 0;
    steps.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
        let row = s.end_row - 1;
        while next < anchors.len() && anchors[next].row <= row {
            next += 1;
        }
        let a = &anchors[next.saturating_sub(1)];
        let soc = a.soc + (s.end_charge_ah - a.charge_ah) / capacity_ah;
        (lo.min(soc), hi.max(soc))
    })
}
