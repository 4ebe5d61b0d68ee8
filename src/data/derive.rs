//! Derived columns (DESIGN.md §1.3), computed in two streaming passes so memory grows with the
//! number of steps, never with the number of rows:
//! 1. `StepTracker` sees every cleaned row once and keeps per-step sums (duration, charge, current
//!    and voltage moments);
//! 2. `Derivation` (built from the steps) turns each row into dt, step_time, state, method, c_rate,
//!    soc and soh.

use std::collections::{HashMap, HashSet};

use crate::data::anchor::{find_anchors, CellAnchors, Cutoffs};
use crate::data::cells::AnchorMethod;
use crate::data::current_sign::CurrentResponse;
use crate::data::inspect::amp_hours;
use crate::data::schema::{Method, State};

/// Steps shorter than this with current flowing are pulses (s).
pub const PULSE_MAX_S: f64 = 30.0;
/// CV detection: relative current spread above this …
pub const CV_CURRENT_SPREAD: f64 = 0.1;
/// A constant-current step's relative current spread is at most this: cyclers hold current to
/// well under 1 %, while a constant-power step's current moves with the voltage (0.63–1.03 C over
/// one Chen2020 discharge, a spread of 0.08, read as constant current with the CV bound alone).
pub const CC_CURRENT_SPREAD: f64 = 0.03;
/// … while the voltage spread stays below this (V).
pub const CV_VOLTAGE_SPREAD: f64 = 0.005;
/// A CV hold begins inside a constant-current step where the voltage moves by at most this
/// from one row to the next (V) …
const HOLD_VOLTAGE_STEP: f64 = 0.001;
/// … while the current falls this share below the constant-current step's mean …
const HOLD_CURRENT_DROP: f64 = 0.02;
/// … of a step held this steady so far (relative current spread): a constant-power step's current
/// falls a little each row from its start, and read against a looser bound it split into
/// "holds" every few rows at 1 s logging.
const HOLD_AFTER_SPREAD: f64 = 0.01;
/// A hold also begins where the current has fallen by this share below the step's steady rows
/// (its CC current) within `HOLD_RAMP_ROWS` rows of their end, at the voltage the step reached: a
/// cycler sampling every 0.13 s logs a few rows of the current's fall, overshooting the voltage
/// limit by 13 mV (Novonix: 48.0 → 30.8 → 25.4 → 23.0 mA). A constant-power step's slow fall
/// never drops this far in so few rows.
const HOLD_FALL: f64 = 0.25;
const HOLD_RAMP_ROWS: u32 = 2;
/// In a file without a step index, a current change of more than this share of its size …
const CURRENT_STEP: f64 = 0.1;
/// … that moves the voltage its way by at least this (V) is a new step …
const CURRENT_STEP_VOLTS: f64 = 0.001;
/// … unless the power held to this share: a constant-power discharge's current jumps as the
/// voltage collapses at its cut-off (Prada2013 at 10 s logging: 6.49 A at 2.29 V, then 7.41 A at
/// 2.01 V, 14.9 W both), where a programmed current step moves the voltage by its IR drop only,
/// a small share of its current change.
const POWER_HELD: f64 = 0.01;
/// A cycle whose discharge removes at least this share of nominal capacity counts as full (for soh).
pub const FULL_CYCLE_SHARE: f64 = 0.6;

/// The resting threshold on |I| (A): 0.002·C_nom (at least 0.1 µA, a cycler's noise at rest), or
/// 0.1 mA while the capacity is not known. A coin cell of 0.07 mAh cycles at 0.1 mA.
pub fn rest_threshold_a(nominal_capacity_ah: Option<f64>) -> f64 {
    nominal_capacity_ah.map_or(1e-4, |c| (0.002 * c).max(1e-7))
}

/// Row-level state from the current.
pub fn state_of(current: f32, rest_threshold_a: f64) -> State {
    let i = current as f64;
    if i.abs() <= rest_threshold_a {
        State::Resting
    } else if i > 0.0 {
        State::Charging
    } else {
        State::Discharging
    }
}

/// Charge (Ah) moved between two rows (time s, current A), by the trapezoid rule.
pub fn trapezoid_ah(from: (f64, f32), to: (f64, f32)) -> f64 {
    0.5 * (from.1 as f64 + to.1 as f64) * (to.0 - from.0) / 3600.0
}

/// Rows of a step settle this long after its start (s): a cycler ramps its current over the
/// first fraction of a second (Arbin logs the ramp at 60 ms) or logs the step's first row at the
/// old step's current (Novonix: 0 A).
const SETTLE_S: f64 = 1.0;

/// Running sums of current and voltage over rows.
#[derive(Debug, Clone, Copy, Default)]
struct Moments {
    n: f64,
    sum_i: f64,
    sum_i2: f64,
    sum_abs_i: f64,
    sum_v: f64,
    sum_v2: f64,
}

impl Moments {
    fn push(&mut self, i: f64, v: f64) {
        self.add(i, v, 1.0);
    }
    /// The sums without one row they hold.
    fn without(mut self, i: f64, v: f64) -> Self {
        self.add(i, v, -1.0);
        self
    }
    fn add(&mut self, i: f64, v: f64, sign: f64) {
        self.n += sign;
        self.sum_i += sign * i;
        self.sum_i2 += sign * i * i;
        self.sum_abs_i += sign * i.abs();
        self.sum_v += sign * v;
        self.sum_v2 += sign * v * v;
    }
    fn std(sum: f64, sum_sq: f64, n: f64) -> f64 {
        (sum_sq / n - (sum / n).powi(2)).max(0.0).sqrt()
    }
    fn mean_abs_current(&self) -> f64 {
        self.sum_abs_i / self.n
    }
    /// Standard deviation of the current over its mean magnitude.
    fn current_spread(&self) -> f64 {
        Self::std(self.sum_i, self.sum_i2, self.n) / self.mean_abs_current().max(1e-12)
    }
    fn voltage_spread(&self) -> f64 {
        Self::std(self.sum_v, self.sum_v2, self.n)
    }
}

/// Running sums over one step.
#[derive(Debug, Clone)]
pub struct StepSummary {
    pub first_row: u64,
    /// One past the last row.
    pub end_row: u64,
    pub start_time: f64,
    pub end_time: f64,
    pub cycle_key: i64,
    pub start_voltage: f64,
    pub end_voltage: f64,
    pub min_voltage: f64,
    pub max_voltage: f64,
    /// Current of the step's last row (A): a CV hold ends at its taper current.
    pub end_current: f64,
    pub max_abs_current: f64,
    /// The step's last run of rows within `CV_VOLTAGE_SPREAD` of one voltage (a CV hold, also
    /// inside a merged CC-CV step): its voltage, and current and cumulative charge (Ah) at its start.
    pub plateau_voltage: f64,
    pub plateau_start_current: f64,
    pub plateau_start_ah: f64,
    /// Every row's sums, and those of the rows `SETTLE_S` or more after the step's start.
    all: Moments,
    settled: Moments,
    /// The settled rows up to the first that broke `HOLD_AFTER_SPREAD`, and the settled rows since.
    steady: Moments,
    after_steady: u32,
    /// The step began where a CV hold split off a constant-current one.
    hold: bool,
    /// The settled rows' least and greatest current (A).
    settled_current: (f64, f64),
    /// Charge moved in the step (Ah, signed: + = charged).
    pub charge_ah: f64,
    /// Cumulative charge (Ah) at the step's last row.
    pub end_charge_ah: f64,
    /// Rows per state, to name the step by its majority.
    state_rows: [u64; 3],
}

impl StepSummary {
    pub fn duration_s(&self) -> f64 {
        self.end_time - self.start_time
    }
    pub fn mean_current(&self) -> f64 {
        self.all.sum_i / self.all.n
    }
    pub fn mean_abs_current(&self) -> f64 {
        self.all.mean_abs_current()
    }
    pub fn state(&self) -> State {
        let i = (0..3).max_by_key(|&i| (self.state_rows[i], std::cmp::Reverse(i))).expect("three states");
        State::ALL[i]
    }
    /// The rows that say how the step was controlled: those after its settling, unless too few.
    fn control(&self) -> Moments {
        if self.settled.n >= 2.0 {
            self.settled
        } else {
            self.all
        }
    }
    fn current_spread(&self) -> f64 {
        self.control().current_spread()
    }

    /// The step's control method (DESIGN §1.3).
    pub fn method(&self) -> Method {
        let state = self.state();
        // A hold tapering below the rest threshold (a formation hold at tens of µA) is mostly
        // "resting" rows, yet the cycler held its voltage: its current never reaches zero. (One
        // that does, as an EC-Lab step opening the circuit after its hold, rests.)
        let (least, most) = self.settled_current;
        let held = least > 0.0 || most < 0.0;
        if self.hold && held && self.duration_s() >= PULSE_MAX_S && self.control().voltage_spread() < CV_VOLTAGE_SPREAD {
            return Method::ConstantVoltage;
        }
        if state == State::Resting {
            return Method::Rest;
        }
        if self.duration_s() < PULSE_MAX_S {
            return Method::Pulse;
        }
        let current_spread = self.current_spread();
        let voltage_spread = self.control().voltage_spread();
        if current_spread > CV_CURRENT_SPREAD && voltage_spread < CV_VOLTAGE_SPREAD {
            Method::ConstantVoltage
        } else if current_spread <= CC_CURRENT_SPREAD {
            Method::ConstantCurrent
        } else {
            Method::Other
        }
    }
}

/// Pass 1: splits cleaned rows into steps and integrates charge (trapezoid).
pub struct StepTracker {
    rest_threshold_a: f64,
    has_step_index: Option<bool>,
    steps: Vec<StepSummary>,
    last: Option<(f64, f32, Option<i32>, i64, State)>,
    cumulative_ah: f64,
    rows: u64,
    pub min_voltage: f64,
    pub max_voltage: f64,
    pub max_abs_current: f64,
    /// The largest |current| (A) held over two rows in a row: the peak, but for a lone spike (a
    /// glitch; PyBaMM's CV hold of an O'Regan2022 cell ringing to 7.5 A after a 5 A charge).
    pub held_abs_current: f64,
    /// The most negative current (A): an unsigned file's is about zero.
    pub min_current: f64,
    min_cycle: Option<i32>,
    /// How the voltage answered each change of current, for the sign check.
    pub response: CurrentResponse,
}

impl StepTracker {
    pub fn rest_threshold_a(&self) -> f64 {
        self.rest_threshold_a
    }

    /// `nominal_capacity_ah` (when known up front) sets the resting threshold.
    pub fn new(nominal_capacity_ah: Option<f64>) -> Self {
        StepTracker {
            rest_threshold_a: rest_threshold_a(nominal_capacity_ah),
            has_step_index: None,
            steps: Vec::new(),
            last: None,
            cumulative_ah: 0.0,
            rows: 0,
            min_voltage: f64::INFINITY,
            max_voltage: f64::NEG_INFINITY,
            max_abs_current: 0.0,
            held_abs_current: 0.0,
            min_current: 0.0,
            min_cycle: None,
            response: CurrentResponse::default(),
        }
    }

    /// Feeds one cleaned row. Steps change where the cycler's step or cycle index changes (files
    /// without a step index: where the state changes or the current is stepped), and where a CV
    /// hold begins.
    pub fn push(&mut self, t: f64, current: f32, voltage: f32, cycle: Option<i32>, step: Option<i32>) {
        let state = state_of(current, self.rest_threshold_a);
        let has_step = *self.has_step_index.get_or_insert(step.is_some());
        let cycle_key = cycle.map_or(-1, i64::from);
        if let Some(c) = cycle {
            self.min_cycle = Some(self.min_cycle.map_or(c, |m| m.min(c)));
        }
        let (new_step, hold) = match &self.last {
            None => (true, false),
            Some((_, _, last_step, last_cycle, last_state)) => {
                let changed = if has_step { step != *last_step } else { state != *last_state || self.current_stepped(current, voltage) };
                if changed || cycle_key != *last_cycle {
                    (true, false)
                } else {
                    let hold = self.hold_begins(current, voltage);
                    (hold, hold)
                }
            }
        };
        if let Some((last_t, last_i, ..)) = self.last {
            self.cumulative_ah += trapezoid_ah((last_t, last_i), (t, current));
            let last_v = self.steps.last().expect("a step exists after a row").end_voltage;
            self.response.push(current as f64 - last_i as f64, voltage as f64 - last_v);
            self.held_abs_current = self.held_abs_current.max(current.abs().min(last_i.abs()) as f64);
        }
        if new_step {
            self.steps.push(StepSummary {
                first_row: self.rows,
                end_row: self.rows,
                start_time: t,
                end_time: t,
                cycle_key,
                start_voltage: voltage as f64,
                end_voltage: voltage as f64,
                min_voltage: voltage as f64,
                max_voltage: voltage as f64,
                end_current: current as f64,
                max_abs_current: 0.0,
                plateau_voltage: voltage as f64,
                plateau_start_current: current as f64,
                plateau_start_ah: self.cumulative_ah,
                all: Moments::default(),
                settled: Moments::default(),
                steady: Moments::default(),
                after_steady: 0,
                hold,
                settled_current: (f64::INFINITY, f64::NEG_INFINITY),
                charge_ah: 0.0,
                end_charge_ah: self.cumulative_ah,
                state_rows: [0; 3],
            });
        } else if let Some(step) = self.steps.last_mut() {
            // Charge moved between the previous row and this one belongs to the running step.
            step.charge_ah += self.cumulative_ah - step.end_charge_ah;
        }
        let summary = self.steps.last_mut().expect("a step exists");
        let (i, v) = (current as f64, voltage as f64);
        summary.end_row = self.rows + 1;
        summary.end_time = t;
        summary.end_voltage = v;
        summary.min_voltage = summary.min_voltage.min(v);
        summary.max_voltage = summary.max_voltage.max(v);
        summary.end_current = i;
        if (v - summary.plateau_voltage).abs() > CV_VOLTAGE_SPREAD {
            (summary.plateau_voltage, summary.plateau_start_current, summary.plateau_start_ah) = (v, i, self.cumulative_ah);
        }
        summary.max_abs_current = summary.max_abs_current.max(i.abs());
        summary.all.push(i, v);
        if t - summary.start_time >= SETTLE_S {
            summary.settled.push(i, v);
            summary.settled_current = (summary.settled_current.0.min(i), summary.settled_current.1.max(i));
            let mut steady = summary.steady;
            steady.push(i, v);
            if summary.after_steady == 0 && (steady.n < 2.0 || steady.current_spread() <= HOLD_AFTER_SPREAD) {
                summary.steady = steady;
            } else {
                summary.after_steady += 1;
            }
        }
        summary.end_charge_ah = self.cumulative_ah;
        summary.state_rows[State::ALL.iter().position(|s| *s == state).expect("known state")] += 1;
        self.min_voltage = self.min_voltage.min(v);
        self.max_voltage = self.max_voltage.max(v);
        self.max_abs_current = self.max_abs_current.max(i.abs());
        self.min_current = self.min_current.min(i);
        self.rows += 1;
        self.last = Some((t, current, if has_step { step } else { None }, cycle_key, state));
    }

    /// Feeds every row of a cleaned chunk.
    pub fn push_chunk(&mut self, chunk: &crate::data::raw::RawChunk) {
        for r in 0..chunk.len() {
            self.push(chunk.test_time[r], chunk.current[r], chunk.voltage[r], chunk.cycle_number[r], chunk.step_index[r]);
        }
    }

    /// Whether the current was stepped since the last row, as a cycler moves to its next
    /// programmed step within one state (a multi-stage charge's 2C → 1C, a drive cycle's
    /// segments): it changes by more than `CURRENT_STEP` of its size and the voltage follows it
    /// (the IR jump). A CV hold's falling current moves no voltage; noise moves too little current;
    /// a constant-power step's current follows its voltage at the same power.
    fn current_stepped(&self, current: f32, voltage: f32) -> bool {
        let (Some((_, last_i, ..)), Some(step)) = (&self.last, self.steps.last()) else { return false };
        let (i, last_i, v) = (current as f64, *last_i as f64, voltage as f64);
        let (di, dv) = (i - last_i, v - step.end_voltage);
        let (power, last_power) = ((i * v).abs(), (last_i * step.end_voltage).abs());
        di.abs() > CURRENT_STEP * i.abs().max(last_i.abs())
            && di * dv > 0.0
            && dv.abs() >= CURRENT_STEP_VOLTS
            && (power - last_power).abs() > POWER_HELD * last_power
    }

    /// A constant-current step whose current now falls while the voltage stays put has switched
    /// to a CV hold, a step of its own for the labels. Files without a step index (BatteryArchive
    /// CSV) and cyclers that log a programmed CC-CV step under one index (the shipped Maccor
    /// export does) would otherwise read the CC charge and its hold as one step. The current is
    /// compared with the step's mean, so a hold sampled finely, whose current falls a little
    /// each row, is still found a few rows in. The step must have moved the voltage, or the
    /// hold's own first rows would split it again.
    ///
    /// The hold's first row, logged as the voltage reached its limit, moved the voltage too far
    /// to be told apart and joined the CC step (at 5 s logging, 1.10 A then 0.91 A): the step's
    /// rows before it count as the CC step where they alone held steady. A finely sampled fall
    /// logs more such rows: `HOLD_FALL` finds the hold a few rows after the steady ones.
    fn hold_begins(&self, current: f32, voltage: f32) -> bool {
        let (Some(step), Some((_, last_i, ..))) = (self.steps.last(), &self.last) else { return false };
        let i = current as f64;
        // The per-row tests first: this runs on every row of such a file.
        if (voltage as f64 - step.end_voltage).abs() > HOLD_VOLTAGE_STEP || i.signum() != step.all.sum_i.signum() {
            return false;
        }
        if step.max_voltage - step.min_voltage <= 2.0 * CV_VOLTAGE_SPREAD {
            return false;
        }
        let control = step.control();
        let held = |m: &Moments, drop: f64| m.n >= 2.0 && i.abs() < (1.0 - drop) * m.mean_abs_current() && m.current_spread() <= HOLD_AFTER_SPREAD;
        let reached = if i > 0.0 { step.max_voltage } else { step.min_voltage };
        ((held(&control, HOLD_CURRENT_DROP) || held(&control.without(*last_i as f64, step.end_voltage), HOLD_CURRENT_DROP)) && step.method() == Method::ConstantCurrent)
            || (step.after_steady <= HOLD_RAMP_ROWS && held(&step.steady, HOLD_FALL) && (voltage as f64 - reached).abs() <= CV_VOLTAGE_SPREAD)
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn steps(&self) -> &[StepSummary] {
        &self.steps
    }

    /// The file's lowest cycle number; `None` when it has no cycle column (cycles are then derived).
    pub fn min_cycle(&self) -> Option<i32> {
        self.min_cycle
    }
}

/// Charge (Ah, as a magnitude) moved per cycle by the steps in `state`: discharges for capacity
/// and soh, charges for the capacity of a file that never discharges.
fn moved_by_cycle(steps: &[StepSummary], cycle_of_step: &[i32], state: State) -> Vec<(i32, f64)> {
    let mut out: Vec<(i32, f64)> = Vec::new();
    for (s, &c) in steps.iter().zip(cycle_of_step) {
        if s.state() != state {
            continue;
        }
        match out.last_mut() {
            Some((cycle, ah)) if *cycle == c => *ah += s.charge_ah.abs(),
            _ => out.push((c, s.charge_ah.abs())),
        }
    }
    out
}

/// Cycle numbers from 0: the file's own (shifted to start at 0), or a new cycle at the first
/// charging step after a discharging one.
fn cycles_of_steps(steps: &[StepSummary], min_cycle: Option<i32>) -> Vec<i32> {
    if let Some(min) = min_cycle {
        // Rows before the file's first cycle number (blank there) belong to its first cycle.
        return steps.iter().map(|s| if s.cycle_key < 0 { 0 } else { s.cycle_key as i32 - min }).collect();
    }
    let mut cycle = 0;
    let mut seen_discharge = false;
    steps
        .iter()
        .map(|s| {
            match s.state() {
                State::Discharging => seen_discharge = true,
                State::Charging if seen_discharge => {
                    cycle += 1;
                    seen_discharge = false;
                }
                _ => {}
            }
            cycle
        })
        .collect()
}

/// The cycles SOH is taken over: the file's, unless one of them holds several full discharges
/// (`full_step`) with a charge between (a cycle column that never advances, or counts something
/// else: its one "cycle" read 3.96× the nominal capacity); then the cycles derived from the steps,
/// with a warning saying so.
fn soh_cycles(steps: &[StepSummary], methods: &[Method], file_cycles: &[i32], full_step: impl Fn(&StepSummary, Method) -> bool) -> (Vec<i32>, Option<String>) {
    let derived = cycles_of_steps(steps, None);
    let mut full_in: HashMap<i32, Vec<i32>> = HashMap::new();
    for ((s, &m), (&file, &own)) in steps.iter().zip(methods).zip(file_cycles.iter().zip(&derived)) {
        if full_step(s, m) {
            let seen = full_in.entry(file).or_default();
            if !seen.contains(&own) {
                seen.push(own);
            }
        }
    }
    match full_in.iter().filter(|(_, own)| own.len() > 1).min_by_key(|(&file, _)| file) {
        Some((file, own)) => {
            let why = format!(
                "the file's cycle {file} holds {} full discharges with charges between: SOH is taken per discharge-charge cycle found in the steps, not per the file's cycle column",
                own.len()
            );
            (derived, Some(why))
        }
        None => (file_cycles.to_vec(), None),
    }
}

/// The warning of a cell no rule anchors. Ingest shows it only once the dataset's OCV–SOC pass
/// (`data::ocv`) has failed to anchor the cell too, and that pass removes it where it succeeds.
pub const NO_ANCHOR: &str = "no SOC anchor: none of a CV hold at the upper cut-off, a low-rate discharge to the lower one or a long rest read through the dataset's OCV-SOC relation gave a trustworthy one; the cell keeps no absolute SOC";

/// The cell-level results of pass 1.
#[derive(Debug, Clone)]
pub struct CellDerivation {
    pub nominal_capacity_ah: f64,
    pub capacity_estimated: bool,
    pub soc_anchor: CellAnchors,
    /// Per step: cycle number (from 0), method, soh of its cycle.
    pub step_cycle: Vec<i32>,
    pub step_method: Vec<Method>,
    pub step_soh: Vec<Option<f32>>,
    pub warnings: Vec<String>,
}

/// Fastest discharge (C-rate of the estimate) a capacity may be measured with.
const CAPACITY_MAX_C: f64 = 0.5;
/// A cycle within this share of the largest discharge counts as measuring it.
const FULL_MEASURE_SLACK: f64 = 0.02;

/// Whether an estimated capacity can scale SOC: it must come from a discharge an engineer would
/// measure capacity with, at C/2 or slower (of the estimate) and down to the lower cut-off. A 3C
/// discharge, a GITT that stops at 80 % or a partial cycle gives a capacity well short of the
/// cell's, and SOC counted with it drifts away from its anchor: LFP cells (Prada2013, capacity
/// not given) were anchored at their CV holds and still 0.10–0.23 off. `by_cycle` is the
/// cell's discharges by cycle ([`moved_by_cycle`]).
fn capacity_measured_fully(steps: &[StepSummary], methods: &[Method], cycles: &[i32], by_cycle: &[(i32, f64)], capacity_ah: f64, cutoffs: &Cutoffs) -> bool {
    let Some(lower) = cutoffs.lower else { return false };
    let tol = crate::data::anchor::tolerance(steps, methods, cutoffs);
    by_cycle.iter().filter(|&&(_, ah)| ah >= (1.0 - FULL_MEASURE_SLACK) * capacity_ah).any(|&(cycle, ah)| {
        let hours: f64 = steps.iter().zip(cycles).filter(|(s, &c)| c == cycle && s.state() == State::Discharging).map(|(s, _)| s.duration_s() / 3600.0).sum();
        hours > 0.0 && ah / hours <= CAPACITY_MAX_C * capacity_ah && reaches_lower_cutoff(steps, methods, cycles, cycle, lower.volts + tol)
    })
}

/// Whether a discharge step of `cycle` (not a pulse, whose dip is brief) gets down to `volts`.
fn reaches_lower_cutoff(steps: &[StepSummary], methods: &[Method], cycles: &[i32], cycle: i32, volts: f64) -> bool {
    steps
        .iter()
        .zip(methods)
        .zip(cycles)
        .any(|((s, m), &c)| c == cycle && s.state() == State::Discharging && *m != Method::Pulse && s.min_voltage <= volts)
}

/// A cycle that discharges more than this multiple of the given nominal capacity says the
/// nominal is a conservative rating, not the cell's capacity (new cells give a few per cent more).
const ABOVE_NOMINAL: f64 = 1.1;

/// A warning when a cycle discharges well past the given nominal capacity: SOC and SOH count
/// that capacity, so SOC runs below 0 and SOH above 100 % (PyBaMM's Marquis2019 cell gives 1.27×).
fn above_nominal(full: &[(i32, f64)], nominal_capacity_ah: f64) -> Option<String> {
    let &(cycle, ah) = full.iter().max_by(|a, b| a.1.total_cmp(&b.1))?;
    (ah > ABOVE_NOMINAL * nominal_capacity_ah).then(|| {
        format!(
            "cycle {cycle} discharges {}, {:.2}× the nominal capacity of {}: SOC runs below 0 % and SOH above 100 %; if the nominal is a rating, give the measured capacity (metadata or ingest --nominal-capacity)",
            amp_hours(ah),
            ah / nominal_capacity_ah,
            amp_hours(nominal_capacity_ah)
        )
    })
}

/// Largest per-cycle discharge (per-cycle charge in a file that never discharges), the estimate of
/// nominal capacity (DESIGN §1.3).
fn estimate_capacity_ah(steps: &[StepSummary], cycles: &[i32]) -> Option<f64> {
    let most = |state| moved_by_cycle(steps, cycles, state).into_iter().map(|(_, ah)| ah).fold(0.0, f64::max);
    let (best, best_charge) = (most(State::Discharging), most(State::Charging));
    let cap = if best > 0.0 { best } else { best_charge };
    (cap > 0.0).then_some(cap)
}

/// The warning beside an estimated capacity.
fn estimated_warning(capacity_ah: f64) -> String {
    // Above this a lab cell's current written in mA as A is likelier than the cell (the largest
    // prismatic cells hold ~300 Ah; estimates above 1000 Ah are refused).
    const LARGE_CELL_AH: f64 = 100.0;
    let hint = if capacity_ah > LARGE_CELL_AH { ", more than most cells hold: is the current in mA labelled as A?" } else { "" };
    format!("nominal capacity estimated from the data: {}{hint}", amp_hours(capacity_ah))
}

/// A discharge step SOH and capacity are measured by: not a pulse, down to the lower cut-off
/// (within `tol`), or where the cut-off is unknown (discharges all as long, which a time limit
/// could have cut), moving `most` Ah in one sustained step.
fn full_discharge(s: &StepSummary, m: Method, cutoffs: &Cutoffs, tol: f64, most: f64) -> bool {
    s.state() == State::Discharging
        && m != Method::Pulse
        && match cutoffs.lower {
            Some(lower) => s.min_voltage <= lower.volts + tol,
            None => -s.charge_ah >= most,
        }
}

impl CellDerivation {
    /// Resolves capacity, cycles, methods, soh and SOC anchors from the steps of pass 1.
    /// `given_cutoffs` are the cut-off voltages a setting or the metadata states.
    pub fn from_steps(tracker: &StepTracker, given_capacity_ah: Option<f64>, given_cutoffs: Cutoffs) -> CellDerivation {
        let steps = tracker.steps();
        let mut warnings = Vec::new();
        let step_cycle = cycles_of_steps(steps, tracker.min_cycle());
        let step_method: Vec<Method> = steps.iter().map(StepSummary::method).collect();
        let capacity_estimated = given_capacity_ah.is_none();
        let estimate = estimate_capacity_ah(steps, &step_cycle);
        // Without any charge or discharge: 1 Ah, with a warning below.
        let mut nominal_capacity_ah = given_capacity_ah.or(estimate).unwrap_or(1.0);
        let mut soc_anchor = find_anchors(steps, &step_method, nominal_capacity_ah, given_cutoffs);
        // A cycle's capacity is its SOH only where its discharge is a full one: most of the
        // capacity, down to the lower cut-off (an HPPC or GITT sequence that stops at 20 % SOC
        // removes 80 % of the capacity of a fresh cell).
        let tol = |anchor: &CellAnchors| crate::data::anchor::tolerance(steps, &step_method, &anchor.cutoffs);
        let (soh_cycle, renumbered) = {
            let (tol, most) = (tol(&soc_anchor), FULL_CYCLE_SHARE * nominal_capacity_ah);
            soh_cycles(steps, &step_method, &step_cycle, |s, m| full_discharge(s, m, &soc_anchor.cutoffs, tol, most))
        };
        if capacity_estimated && renumbered.is_some() {
            // The file's one "cycle" holds several full discharges: the capacity is one of them
            // (four CC-CV cycles of a 5 Ah cell read 19.8 Ah as one, and SOC swung a quarter as far).
            if let Some(capacity_ah) = estimate_capacity_ah(steps, &soh_cycle) {
                nominal_capacity_ah = capacity_ah;
                soc_anchor = find_anchors(steps, &step_method, nominal_capacity_ah, given_cutoffs);
            }
        }
        if capacity_estimated {
            warnings.push(match estimate {
                Some(_) => estimated_warning(nominal_capacity_ah),
                None => "no charge or discharge found: nominal capacity set to 1 Ah".to_owned(),
            });
        }
        warnings.extend(renumbered);
        let (tol, most) = (tol(&soc_anchor), FULL_CYCLE_SHARE * nominal_capacity_ah);
        let discharged: Vec<(i32, f64)> = moved_by_cycle(steps, &soh_cycle, State::Discharging);
        if !capacity_estimated {
            warnings.extend(above_nominal(&discharged, nominal_capacity_ah));
        }
        // Cycles with a full discharge step, found in one pass; their SOH spread over their steps.
        let with_full: HashSet<i32> = steps.iter().zip(&step_method).zip(&soh_cycle).filter(|((s, &m), _)| full_discharge(s, m, &soc_anchor.cutoffs, tol, most)).map(|(_, &c)| c).collect();
        let soh_of: HashMap<i32, f32> = discharged
            .iter()
            .filter(|&&(cycle, ah)| ah >= most && with_full.contains(&cycle))
            .map(|&(cycle, ah)| (cycle, (ah / nominal_capacity_ah) as f32))
            .collect();
        let step_soh = soh_cycle.iter().map(|c| soh_of.get(c).copied()).collect();
        if capacity_estimated
            && soc_anchor.method != AnchorMethod::Unanchored
            && !capacity_measured_fully(steps, &step_method, &soh_cycle, &discharged, nominal_capacity_ah, &soc_anchor.cutoffs)
        {
            soc_anchor = CellAnchors {
                method: AnchorMethod::Unanchored,
                anchors: Vec::new(),
                uncertainty: None,
                dropped: Some(match soc_anchor.cutoffs.lower {
                    Some(_) => format!(
                        "{} anchor dropped: the capacity was estimated from discharges faster than C/2 or short of the lower cut-off, so SOC counted with it would drift; give the nominal capacity (metadata or ingest --nominal-capacity)",
                        soc_anchor.method.as_str()
                    ),
                    // One discharge stopping at a voltage does not show it is the cut-off.
                    None => format!(
                        "{} anchor dropped: the capacity was estimated from the data and the lower cut-off is not known, so no discharge can be seen to have measured it fully; give the lower cut-off (metadata or ingest --lower-cutoff) or the nominal capacity (--nominal-capacity)",
                        soc_anchor.method.as_str()
                    ),
                }),
                ..soc_anchor
            };
        }
        if soc_anchor.method == AnchorMethod::Unanchored {
            warnings.push(NO_ANCHOR.to_owned());
            warnings.extend(soc_anchor.dropped.clone());
        }
        CellDerivation { nominal_capacity_ah, capacity_estimated, soc_anchor, step_cycle, step_method, step_soh, warnings }
    }
}

/// Pass 2: derives each row's columns from the cell-level results, row by row in file order.
pub struct RowDeriver<'a> {
    cell: &'a CellDerivation,
    steps: &'a [StepSummary],
    rest_threshold_a: f64,
    row: u64,
    step: usize,
    anchor: usize,
    last: Option<(f64, f32)>,
    cumulative_ah: f64,
}

/// The derived columns of one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DerivedRow {
    pub dt: f32,
    pub step_time: f32,
    pub state: State,
    pub method: Method,
    pub c_rate: f32,
    pub soc: f32,
    pub soh: Option<f32>,
    pub cycle_number: i32,
    pub step_index: i32,
}

impl<'a> RowDeriver<'a> {
    pub fn new(cell: &'a CellDerivation, steps: &'a [StepSummary]) -> Self {
        RowDeriver {
            cell,
            steps,
            rest_threshold_a: rest_threshold_a(Some(cell.nominal_capacity_ah)),
            row: 0,
            step: 0,
            anchor: 0,
            last: None,
            cumulative_ah: 0.0,
        }
    }

    /// The next row's derived columns; rows must be the same cleaned rows, in the same order,
    /// that pass 1 saw. `step_index` is the file's own when it has one.
    pub fn next(&mut self, t: f64, current: f32, step_index: Option<i32>) -> DerivedRow {
        while self.row >= self.steps[self.step].end_row {
            self.step += 1;
        }
        let step = &self.steps[self.step];
        let dt = self.last.map_or(0.0, |(last_t, _)| t - last_t);
        if let Some(last) = self.last {
            self.cumulative_ah += trapezoid_ah(last, (t, current));
        }
        // Each anchor holds from its row until the next one; rows before the first count back from it.
        let anchors = &self.cell.soc_anchor.anchors;
        while self.anchor + 1 < anchors.len() && anchors[self.anchor + 1].row <= self.row {
            self.anchor += 1;
        }
        let soc = anchors
            .get(self.anchor)
            .map_or(f64::NAN, |a| a.soc + (self.cumulative_ah - a.charge_ah) / self.cell.nominal_capacity_ah);
        let out = DerivedRow {
            dt: dt as f32,
            step_time: (t - step.start_time) as f32,
            state: state_of(current, self.rest_threshold_a),
            method: self.cell.step_method[self.step],
            c_rate: (current as f64 / self.cell.nominal_capacity_ah) as f32,
            soc: soc as f32,
            soh: self.cell.step_soh[self.step],
            cycle_number: self.cell.step_cycle[self.step],
            step_index: step_index.unwrap_or(self.step as i32),
        };
        self.last = Some((t, current));
        self.row += 1;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell charged at 1 A for 1 h then held at the top, rested, discharged at 0.5 A.
    fn tracker() -> StepTracker {
        let mut tr = StepTracker::new(Some(2.0));
        let mut t = 0.0;
        let mut push = |tr: &mut StepTracker, n: usize, dt: f64, i: f32, v: &dyn Fn(usize) -> f32, step: i32| {
            for k in 0..n {
                tr.push(t, i, v(k), Some(1), Some(step));
                t += dt;
            }
        };
        push(&mut tr, 61, 60.0, 1.0, &|k| 3.5 + 0.01 * k as f32, 1);
        let mut t2 = t;
        for k in 0..20 {
            tr.push(t2, 1.0 / (1.0 + k as f32), 4.2, Some(1), Some(2));
            t2 += 60.0;
        }
        for k in 0..10 {
            tr.push(t2, 0.0, 4.15 - 0.001 * k as f32, Some(1), Some(3));
            t2 += 60.0;
        }
        for k in 0..240 {
            tr.push(t2, -0.5, 4.1 - 0.005 * k as f32, Some(2), Some(4));
            t2 += 60.0;
        }
        tr
    }

    #[test]
    fn steps_methods_and_cycles() {
        let tr = tracker();
        let d = CellDerivation::from_steps(&tr, Some(2.0), Cutoffs::default());
        assert_eq!(tr.steps().len(), 4);
        assert_eq!(d.step_method, vec![Method::ConstantCurrent, Method::ConstantVoltage, Method::Rest, Method::ConstantCurrent]);
        assert_eq!(d.step_cycle, vec![0, 0, 0, 1], "file cycles shifted to start at 0");
        assert_eq!(d.soc_anchor.method, AnchorMethod::CvHold);
    }

    #[test]
    fn a_cv_hold_is_its_own_step_without_a_step_index_or_under_the_cc_steps_one() {
        // A CC charge into a hold at 4.2 V (current falling 3 % a row), a rest, a CC discharge:
        // as BatteryArchive CSV logs them (no step column), and as a cycler logs a programmed
        // CC-CV step (charge and hold under one step index).
        for indexed in [false, true] {
            let mut tr = StepTracker::new(Some(2.0));
            let mut t = 0.0;
            let mut push = |i: f32, v: f32, step: i32| {
                tr.push(t, i, v, Some(1), indexed.then_some(step));
                t += 10.0;
            };
            (0..60).for_each(|k| push(1.0, 3.6 + 0.01 * k as f32, 1));
            (0..40).for_each(|k| push(0.97f32.powi(k), 4.2, 1));
            (0..10).for_each(|_| push(0.0, 4.15, 2));
            (0..60).for_each(|k| push(-1.0, 4.1 - 0.01 * k as f32, 3));
            let d = CellDerivation::from_steps(&tr, Some(2.0), Cutoffs::default());
            assert_eq!(d.step_method, vec![Method::ConstantCurrent, Method::ConstantVoltage, Method::Rest, Method::ConstantCurrent], "step index: {indexed}");
            // The hold starts where its current first falls: its first row (4.2 V, full current) ends the CC step.
            assert_eq!(tr.steps()[1].first_row, 61, "step index: {indexed}");
        }
    }

    #[test]
    fn a_constant_power_discharge_collapsing_at_its_cut_off_is_one_step_and_a_current_step_two() {
        // Without a step index: a 14.9 W discharge logged every 10 s whose last rows jump in
        // current as the voltage collapses to 2.0 V (Prada2013), then a rest; and a discharge
        // stepped from 5 A to 6 A, its voltage dropping by the IR jump, then a rest.
        for (stepped, want) in [(false, vec![Method::Other, Method::Rest]), (true, vec![Method::ConstantCurrent, Method::ConstantCurrent, Method::Rest])] {
            let mut tr = StepTracker::new(Some(2.3));
            let mut t = 0.0;
            let mut push = |i: f64, v: f64| {
                tr.push(t, i as f32, v as f32, Some(1), None);
                t += 10.0;
            };
            let volts = (0..100).map(|k| 3.4 - 0.006 * k as f64).chain([2.49357, 2.29427, 2.01]);
            for (k, v) in volts.enumerate() {
                let i = if !stepped { -14.9 / v } else if k < 60 { -5.0 } else { -6.0 };
                push(i, if stepped && k >= 60 { v - 0.05 } else { v });
            }
            (0..10).for_each(|_| push(0.0, 2.19));
            let d = CellDerivation::from_steps(&tr, Some(2.3), Cutoffs::default());
            assert_eq!(d.step_method, want, "stepped: {stepped}");
        }
    }

    #[test]
    fn a_finely_sampled_hold_tapering_below_the_rest_threshold_is_still_a_hold() {
        // A Novonix formation step under one index: 48 mA for 4 s at 0.13 s logging to 1.5 V,
        // two rows of the current's fall overshooting the limit by 13 mV, then a 15 h hold at
        // 1.5 V whose current tapers from 23 mA to 25 µA, below the 0.48 mA rest threshold of a
        // 0.24 Ah cell for most of its rows.
        // The same step opening the circuit after a minute of hold (as an EC-Lab step can) rests.
        for opens in [false, true] {
            let mut tr = StepTracker::new(Some(0.24));
            let mut t = 0.0;
            let mut push = |dt: f64, i: f32, v: f32| {
                tr.push(t, i, v, Some(1), Some(2));
                t += dt;
            };
            (0..31).for_each(|k| push(0.13, 0.048, 0.5 + 0.032 * k as f32));
            push(0.13, 0.0308, 1.5045);
            push(0.13, 0.0254, 1.5004);
            let tail = |k: i32| if opens && k > 0 { 0.0 } else { 0.023 * 0.99f32.powi(k).max(0.0011) };
            (0..900).for_each(|k| push(60.0, tail(k), 1.5));
            let d = CellDerivation::from_steps(&tr, Some(0.24), Cutoffs::default());
            assert_eq!(tr.steps().len(), 2);
            assert_eq!(tr.steps()[1].first_row, 33, "the hold starts after the current's fall");
            let hold = if opens { Method::Rest } else { Method::ConstantVoltage };
            assert_eq!(d.step_method, vec![Method::Pulse, hold], "opens: {opens}");
        }
    }

    #[test]
    fn soc_is_one_at_the_end_of_the_cv_hold_and_falls_on_discharge() {
        let tr = tracker();
        let d = CellDerivation::from_steps(&tr, Some(2.0), Cutoffs::default());
        let cv_end = tr.steps()[1].end_row - 1;
        // Replay the same rows.
        let mut rows = Vec::new();
        let mut t = 0.0;
        for k in 0..61 {
            rows.push((t, 1.0f32, 1));
            t += 60.0;
            let _ = k;
        }
        for k in 0..20 {
            rows.push((t, 1.0 / (1.0 + k as f32), 2));
            t += 60.0;
        }
        for _ in 0..10 {
            rows.push((t, 0.0, 3));
            t += 60.0;
        }
        for _ in 0..240 {
            rows.push((t, -0.5, 4));
            t += 60.0;
        }
        let mut deriver = RowDeriver::new(&d, tr.steps());
        let derived: Vec<DerivedRow> = rows.iter().map(|&(t, i, s)| deriver.next(t, i, Some(s))).collect();
        // Full less what the hold would still take: 0.05 A × its 0.05 Ah / (1 − 0.05) A, of 2 Ah.
        let at_cv_end = derived[cv_end as usize].soc;
        assert!(at_cv_end < 1.0 && at_cv_end > 0.998, "{at_cv_end}");
        let last = derived.last().unwrap();
        // Trapezoids from the CV end: +0.025 A·min into the rest, −0.25 A·min into the discharge,
        // then 0.5 A for 239 min, of a 2 Ah cell.
        let expected = at_cv_end + (0.025 - 0.25 - 0.5 * 239.0) / 60.0 / 2.0;
        assert!((last.soc - expected).abs() < 1e-5, "{} vs {expected}", last.soc);
        assert!((last.c_rate + 0.25).abs() < 1e-6);
        assert_eq!(last.state, State::Discharging);
        assert!(derived.windows(2).skip(91).all(|w| w[1].soc < w[0].soc), "soc falls while discharging");
        assert_eq!(derived[1].dt, 60.0);
        assert_eq!(derived[0].dt, 0.0);
        assert_eq!(derived[62].step_time, 60.0);
    }

    #[test]
    fn capacity_is_estimated_from_the_largest_discharge() {
        let tr = tracker();
        let d = CellDerivation::from_steps(&tr, None, Cutoffs::default());
        assert!(d.capacity_estimated);
        assert!((d.nominal_capacity_ah - 0.5 * 239.0 / 60.0).abs() < 1e-6, "{}", d.nominal_capacity_ah);
    }

    /// Two CC-CV cycles (1 A charge, hold at 4.2 V, rest, 0.5 A discharge to 2.9 V) logged under
    /// one cycle number, no capacity given: the capacity is one discharge's, not the file cycle's.
    #[test]
    fn capacity_of_a_cycle_column_that_never_advances_is_one_discharge() {
        let mut tr = StepTracker::new(None);
        let mut t = 0.0;
        let mut push = |tr: &mut StepTracker, n: usize, i: &dyn Fn(usize) -> f32, v: &dyn Fn(usize) -> f32, step: i32| {
            for k in 0..n {
                tr.push(t, i(k), v(k), Some(1), Some(step));
                t += 60.0;
            }
        };
        for round in 0..2 {
            push(&mut tr, 60, &|_| 1.0, &|k| 3.5 + 0.01 * k as f32, 4 * round + 1);
            push(&mut tr, 20, &|k| 1.0 / (1.0 + k as f32), &|_| 4.2, 4 * round + 2);
            push(&mut tr, 10, &|_| 0.0, &|k| 4.15 - 0.001 * k as f32, 4 * round + 3);
            push(&mut tr, 241, &|_| -0.5, &|k| 4.1 - 0.005 * k as f32, 4 * round + 4);
        }
        let lower = crate::data::anchor::Cutoff { volts: 2.9, source: crate::data::anchor::CutoffSource::Given };
        let d = CellDerivation::from_steps(&tr, None, Cutoffs { lower: Some(lower), ..Cutoffs::default() });
        assert!((d.nominal_capacity_ah - 0.5 * 240.0 / 60.0).abs() < 1e-6, "{}", d.nominal_capacity_ah);
        assert_eq!(d.soc_anchor.method, AnchorMethod::CvHold);
        assert!(d.warnings.iter().any(|w| w.contains("holds 2 full discharges")), "{:?}", d.warnings);
        assert!(d.step_soh.iter().flatten().all(|&soh| (soh - 1.0).abs() < 1e-6), "{:?}", d.step_soh);
    }

    #[test]
    fn state_uses_the_rest_threshold() {
        assert_eq!(state_of(0.005, rest_threshold_a(Some(5.0))), State::Resting);
        assert_eq!(state_of(0.05, rest_threshold_a(Some(5.0))), State::Charging);
        assert_eq!(state_of(-0.05, rest_threshold_a(Some(5.0))), State::Discharging);
        // A 0.068 mAh coin cell cycled at ±137 µA: no rest at all.
        assert_eq!(state_of(137e-6, rest_threshold_a(Some(6.8e-5))), State::Charging);
        assert_eq!(state_of(-137e-6, rest_threshold_a(Some(6.8e-5))), State::Discharging);
    }
}
