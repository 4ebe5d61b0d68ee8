//! Covariates per step (DESIGN §5): what a label may talk about. Each is a column of f32 per
//! step of one cell; categorical ones hold an index (state into `State::ALL`, step kind into
//! `StepKind::ALL`), and per-cell metadata (protocol, ambient temperature) is repeated or coded
//! later. Missing values (no temperature, no trustworthy SOC anchor) are NaN and never match a
//! bound.

use serde::{Deserialize, Serialize};

use crate::data::canonical::{CellData, Dataset};
use crate::data::cells::{AnchorMethod, CellInfo};
use crate::data::schema::{Method, State};

/// One covariate per step, recorded and offered to labels (all but current in amps, which C-rate
/// words: [`Covariate::is_worded`]). Derived covariates come before raw voltage so that, on a
/// tie (voltage and voltage above the cell's lowest), the derived quantity names the label. The logging
/// interval dt is left out on purpose: cyclers log densely after current changes, so it would
/// name relaxation features after a logging artefact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Covariate {
    Soc,
    CRate,
    AbsCRate,
    State,
    /// The step in engineering words ([`StepKind`]): CC charge, CV hold, rest after discharge…
    StepKind,
    StepTime,
    TimeSinceCurrentChange,
    /// Signed C-rate jump of the last current step (+ = up), held until the next one.
    LastCurrentStep,
    DvDt,
    /// |dV/dt|: how fast the voltage moves, either way. Relaxations and the moving parts of a
    /// charge or discharge share it; a feature that marks both needs it, as signed dV/dt would
    /// split it into two bounds.
    AbsDvDt,
    /// V_{t+1} − V_t (mV): the change the model predicts at this step.
    DvNext,
    /// C-rate_{t+1} − C-rate_t: the current step the model is told is coming.
    CRateChangeNext,
    /// |C-rate_{t+1} − C-rate_t|: the size of the coming current step, up or down. A feature
    /// that marks every coming step needs it: "down by more than 0.06C" alone misses the
    /// steps up (one NCA feature: held-out AUROC 0.80 on the signed change, 0.98 for a tree).
    AbsCRateChangeNext,
    Temperature,
    CycleNumber,
    Soh,
    Protocol,
    AmbientTemperature,
    /// mV above the lowest voltage the cell reaches (its lower cut-off when it is cycled fully).
    AboveLowestVoltage,
    /// mV below the highest voltage the cell reaches (its upper cut-off when charged fully).
    BelowHighestVoltage,
    Voltage,
    Current,
}

impl Covariate {
    pub const ALL: [Covariate; 22] = [
        Covariate::Soc,
        Covariate::CRate,
        Covariate::AbsCRate,
        Covariate::State,
        Covariate::StepKind,
        Covariate::StepTime,
        Covariate::TimeSinceCurrentChange,
        Covariate::LastCurrentStep,
        Covariate::DvDt,
        Covariate::AbsDvDt,
        Covariate::DvNext,
        Covariate::CRateChangeNext,
        Covariate::AbsCRateChangeNext,
        Covariate::Temperature,
        Covariate::CycleNumber,
        Covariate::Soh,
        Covariate::Protocol,
        Covariate::AmbientTemperature,
        Covariate::AboveLowestVoltage,
        Covariate::BelowHighestVoltage,
        Covariate::Voltage,
        Covariate::Current,
    ];

    pub fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).expect("listed")
    }

    pub fn name(self) -> &'static str {
        match self {
            Covariate::Soc => "soc",
            Covariate::CRate => "c_rate",
            Covariate::AbsCRate => "abs_c_rate",
            Covariate::State => "state",
            Covariate::StepKind => "step_kind",
            Covariate::StepTime => "step_time",
            Covariate::TimeSinceCurrentChange => "time_since_current_change",
            Covariate::LastCurrentStep => "last_current_step",
            Covariate::DvDt => "dv_dt",
            Covariate::AbsDvDt => "abs_dv_dt",
            Covariate::DvNext => "dv_next",
            Covariate::CRateChangeNext => "c_rate_change_next",
            Covariate::AbsCRateChangeNext => "abs_c_rate_change_next",
            Covariate::Temperature => "temperature",
            Covariate::CycleNumber => "cycle_number",
            Covariate::Soh => "soh",
            Covariate::Protocol => "protocol",
            Covariate::AmbientTemperature => "ambient_temperature",
            Covariate::AboveLowestVoltage => "above_lowest_voltage",
            Covariate::BelowHighestVoltage => "below_highest_voltage",
            Covariate::Voltage => "voltage",
            Covariate::Current => "current",
        }
    }

    /// Categorical covariates get equality predicates; the others get intervals and trackers.
    pub fn is_categorical(self) -> bool {
        matches!(self, Covariate::State | Covariate::StepKind | Covariate::Protocol)
    }

    /// Whether a label may name it. Current in amps is recorded and plotted but never worded:
    /// C-rate says the same over the nominal capacity and travels between cell sizes, and where
    /// every cell has one capacity the two tie and only the rounding of their bins would choose.
    pub fn is_worded(self) -> bool {
        self != Covariate::Current
    }

    /// A continuous covariate a label may name: the scale of a tracker or graded detector.
    pub fn is_scale(self) -> bool {
        self.is_worded() && !self.is_categorical()
    }

    /// Constant through each cell: its protocol and the chamber's temperature. A label on these
    /// alone says which cells a feature fires in, which the circular-shift null cannot test: it
    /// moves the firing in time within each cell, so every shift scores the same (p = 1).
    pub fn is_per_cell(self) -> bool {
        matches!(self, Covariate::Protocol | Covariate::AmbientTemperature)
    }

    /// The raw V and I a label must beat (DESIGN §5 step 5), current as the C-rate labels speak.
    pub fn is_raw_signal(self) -> bool {
        matches!(self, Covariate::Voltage | Covariate::CRate)
    }
}

/// A step as a battery engineer names it: control method and direction, and for a rest, the
/// direction of the current before it (relaxation after charge differs from after discharge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    CcCharge,
    CcDischarge,
    CvHold,
    RestAfterCharge,
    RestAfterDischarge,
    ChargePulse,
    DischargePulse,
    /// Anything else: varying-current steps, a rest before any current flowed.
    Other,
}

impl StepKind {
    pub const ALL: [StepKind; 8] = [
        StepKind::CcCharge,
        StepKind::CcDischarge,
        StepKind::CvHold,
        StepKind::RestAfterCharge,
        StepKind::RestAfterDischarge,
        StepKind::ChargePulse,
        StepKind::DischargePulse,
        StepKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::CcCharge => "cc_charge",
            StepKind::CcDischarge => "cc_discharge",
            StepKind::CvHold => "cv_hold",
            StepKind::RestAfterCharge => "rest_after_charge",
            StepKind::RestAfterDischarge => "rest_after_discharge",
            StepKind::ChargePulse => "charge_pulse",
            StepKind::DischargePulse => "discharge_pulse",
            StepKind::Other => "other",
        }
    }

    /// Step kind of every row: `previous` remembers the direction of the last current flow.
    fn of_cell(data: &CellData) -> Vec<StepKind> {
        let mut previous: Option<State> = None;
        data.state
            .iter()
            .zip(&data.method)
            .map(|(&state, &method)| {
                let kind = match (state, method, previous) {
                    (State::Resting, _, Some(State::Charging)) => StepKind::RestAfterCharge,
                    (State::Resting, _, Some(State::Discharging)) => StepKind::RestAfterDischarge,
                    (State::Resting, _, _) => StepKind::Other,
                    (_, Method::ConstantVoltage, _) => StepKind::CvHold,
                    (State::Charging, Method::ConstantCurrent, _) => StepKind::CcCharge,
                    (State::Discharging, Method::ConstantCurrent, _) => StepKind::CcDischarge,
                    (State::Charging, Method::Pulse, _) => StepKind::ChargePulse,
                    (State::Discharging, Method::Pulse, _) => StepKind::DischargePulse,
                    _ => StepKind::Other,
                };
                if state != State::Resting {
                    previous = Some(state);
                }
                kind
            })
            .collect()
    }
}

/// A change of current larger than this share of nominal capacity (per row) starts a new
/// "since the current changed" clock; below it a CV hold's decaying current does not reset it.
const CURRENT_STEP_C: f32 = 0.05;

/// Every covariate of one cell, step by step.
#[derive(Debug, Clone)]
pub struct Covariates {
    pub cell_id: String,
    pub protocol: Option<String>,
    /// `columns[c.index()]` holds covariate `c` (the `Protocol` column is empty: see `protocol`).
    pub columns: Vec<Vec<f32>>,
}

impl Covariates {
    /// Derives every covariate of DESIGN §5 from a cell's canonical rows.
    pub fn from_cell(info: &CellInfo, data: &CellData) -> Covariates {
        let n = data.len();
        let mut columns = vec![Vec::new(); Covariate::ALL.len()];
        let mut set = |c: Covariate, v: Vec<f32>| columns[c.index()] = v;
        // Relative SOC of an unanchored cell (DESIGN §1.3) must not back an absolute-SOC label.
        let anchored = info.anchor_method != AnchorMethod::Unanchored;
        set(Covariate::Soc, data.soc.iter().map(|&s| if anchored { s } else { f32::NAN }).collect());
        set(Covariate::CRate, data.c_rate.clone());
        set(Covariate::AbsCRate, data.c_rate.iter().map(|c| c.abs()).collect());
        set(Covariate::State, data.state.iter().map(|s| State::ALL.iter().position(|a| a == s).unwrap_or(0) as f32).collect());
        set(Covariate::StepKind, StepKind::of_cell(data).iter().map(|k| StepKind::ALL.iter().position(|a| a == k).unwrap_or(0) as f32).collect());
        set(Covariate::StepTime, data.step_time.clone());
        let (since, last_step) = current_steps(data, info.nominal_capacity_ah as f32);
        set(Covariate::TimeSinceCurrentChange, since);
        set(Covariate::LastCurrentStep, last_step);
        let dv_dt = dv_dt_mv_per_s(data);
        set(Covariate::AbsDvDt, dv_dt.iter().map(|d| d.abs()).collect());
        set(Covariate::DvDt, dv_dt);
        set(Covariate::DvNext, change_to_next(&data.voltage, 1000.0));
        let c_rate_change = change_to_next(&data.c_rate, 1.0);
        set(Covariate::AbsCRateChangeNext, c_rate_change.iter().map(|d| d.abs()).collect());
        set(Covariate::CRateChangeNext, c_rate_change);
        set(Covariate::Temperature, data.temperature_or_nan());
        set(Covariate::CycleNumber, data.cycle_number.iter().map(|&c| c as f32).collect());
        set(Covariate::Soh, data.soh.iter().map(|s| s.unwrap_or(f32::NAN)).collect());
        set(Covariate::AmbientTemperature, vec![info.ambient_temperature_c.map_or(f32::NAN, |t| t as f32); n]);
        let (lowest, highest) = voltage_range(&data.voltage);
        set(Covariate::AboveLowestVoltage, data.voltage.iter().map(|v| 1000.0 * (v - lowest)).collect());
        set(Covariate::BelowHighestVoltage, data.voltage.iter().map(|v| 1000.0 * (highest - v)).collect());
        set(Covariate::Voltage, data.voltage.clone());
        set(Covariate::Current, data.current.clone());
        Covariates { cell_id: data.cell_id.clone(), protocol: info.protocol.clone(), columns }
    }

    /// Covariates of every cell of a dataset, in its order.
    pub fn for_dataset(ds: &Dataset) -> Vec<Covariates> {
        ds.cells.iter().zip(&ds.data).map(|(info, data)| Covariates::from_cell(info, data)).collect()
    }

    pub fn len(&self) -> usize {
        self.columns[Covariate::Soc.index()].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn column(&self, c: Covariate) -> &[f32] {
        &self.columns[c.index()]
    }
}

/// Per row: seconds since the current last jumped by more than `CURRENT_STEP_C`·C_nom between
/// rows (the relaxation clock after a pulse or step change), and that jump in C-rate (NaN before
/// the cell's first jump).
fn current_steps(data: &CellData, nominal_capacity_ah: f32) -> (Vec<f32>, Vec<f32>) {
    let threshold = CURRENT_STEP_C * nominal_capacity_ah.max(1e-3);
    let (mut since, mut last_step) = (0.0f32, f32::NAN);
    let mut out = (Vec::with_capacity(data.len()), Vec::with_capacity(data.len()));
    for i in 0..data.len() {
        if i > 0 {
            let jumped = (data.current[i] - data.current[i - 1]).abs() > threshold;
            since = if jumped { 0.0 } else { since + data.dt[i] };
            if jumped {
                last_step = data.c_rate[i] - data.c_rate[i - 1];
            }
        }
        out.0.push(since);
        out.1.push(last_step);
    }
    out
}

/// Lowest and highest finite voltage of a cell (0 for a cell without any).
fn voltage_range(voltage: &[f32]) -> (f32, f32) {
    let finite = voltage.iter().copied().filter(|v| v.is_finite());
    let lowest = finite.clone().fold(f32::INFINITY, f32::min);
    let highest = finite.fold(f32::NEG_INFINITY, f32::max);
    if lowest.is_finite() { (lowest, highest) } else { (0.0, 0.0) }
}

/// `scale`·(x_{t+1} − x_t) per row; 0 on the last row, which has no next one.
fn change_to_next(x: &[f32], scale: f32) -> Vec<f32> {
    (0..x.len()).map(|t| x.get(t + 1).map_or(0.0, |next| scale * (next - x[t]))).collect()
}

/// Shortest interval a derivative is taken over. Simulators and some cyclers log a step change
/// twice, microseconds or 1e-13 s apart; a voltage jump over such an interval is the IR step of
/// the current change, not a rate, and would read "dV/dt above 25000000000000 mV/s".
const MIN_DV_DT_INTERVAL_S: f32 = 1e-3;

/// dV/dt in mV/s from the previous row; missing (NaN) on the first row and where the interval
/// is shorter than `MIN_DV_DT_INTERVAL_S`.
fn dv_dt_mv_per_s(data: &CellData) -> Vec<f32> {
    (0..data.len())
        .map(|i| {
            if i == 0 || !(data.dt[i] >= MIN_DV_DT_INTERVAL_S) {
                f32::NAN
            } else {
                1000.0 * (data.voltage[i] - data.voltage[i - 1]) / data.dt[i]
            }
        })
        .collect()
}
