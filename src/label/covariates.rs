//! Covariates per step (DESIGN §5): what a label may talk about. Each is a column of f32 per
//! step of one cell; categorical ones (state, method) hold the index into `State::ALL` /
//! `Method::ALL`, and per-cell metadata (protocol, ambient temperature) is repeated or coded later.

use serde::{Deserialize, Serialize};

use crate::data::canonical::{CellData, Dataset};
use crate::data::cells::CellInfo;
use crate::data::schema::{Method, State};

/// One covariate a label can be built on. Derived covariates come before raw V and I so that,
/// on a tie (current = c_rate × capacity), the normalised quantity names the label. The logging
/// interval dt is left out on purpose: cyclers log densely after current changes, so it would
/// name relaxation features after a logging artefact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Covariate {
    Soc,
    CRate,
    AbsCRate,
    State,
    Method,
    StepTime,
    TimeSinceCurrentChange,
    DvDt,
    /// V_{t+1} − V_t (mV): the change the model predicts at this step.
    DvNext,
    /// C-rate_{t+1} − C-rate_t: the current step the model is told is coming.
    CRateChangeNext,
    Temperature,
    CycleNumber,
    Soh,
    Protocol,
    AmbientTemperature,
    Voltage,
    Current,
}

impl Covariate {
    pub const ALL: [Covariate; 17] = [
        Covariate::Soc,
        Covariate::CRate,
        Covariate::AbsCRate,
        Covariate::State,
        Covariate::Method,
        Covariate::StepTime,
        Covariate::TimeSinceCurrentChange,
        Covariate::DvDt,
        Covariate::DvNext,
        Covariate::CRateChangeNext,
        Covariate::Temperature,
        Covariate::CycleNumber,
        Covariate::Soh,
        Covariate::Protocol,
        Covariate::AmbientTemperature,
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
            Covariate::Method => "method",
            Covariate::StepTime => "step_time",
            Covariate::TimeSinceCurrentChange => "time_since_current_change",
            Covariate::DvDt => "dv_dt",
            Covariate::DvNext => "dv_next",
            Covariate::CRateChangeNext => "c_rate_change_next",
            Covariate::Temperature => "temperature",
            Covariate::CycleNumber => "cycle_number",
            Covariate::Soh => "soh",
            Covariate::Protocol => "protocol",
            Covariate::AmbientTemperature => "ambient_temperature",
            Covariate::Voltage => "voltage",
            Covariate::Current => "current",
        }
    }

    /// Categorical covariates get equality predicates; the others get intervals and trackers.
    pub fn is_categorical(self) -> bool {
        matches!(self, Covariate::State | Covariate::Method | Covariate::Protocol)
    }

    /// The raw V and I a label must beat (DESIGN §5 step 5).
    pub fn is_raw_signal(self) -> bool {
        matches!(self, Covariate::Voltage | Covariate::Current)
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
        set(Covariate::Soc, data.soc.clone());
        set(Covariate::CRate, data.c_rate.clone());
        set(Covariate::AbsCRate, data.c_rate.iter().map(|c| c.abs()).collect());
        set(Covariate::State, data.state.iter().map(|s| State::ALL.iter().position(|a| a == s).unwrap_or(0) as f32).collect());
        set(Covariate::Method, data.method.iter().map(|m| Method::ALL.iter().position(|a| a == m).unwrap_or(0) as f32).collect());
        set(Covariate::StepTime, data.step_time.clone());
        set(Covariate::TimeSinceCurrentChange, time_since_current_change(data, info.nominal_capacity_ah as f32));
        set(Covariate::DvDt, dv_dt_mv_per_s(data));
        set(Covariate::DvNext, change_to_next(&data.voltage, 1000.0));
        set(Covariate::CRateChangeNext, change_to_next(&data.c_rate, 1.0));
        set(Covariate::Temperature, data.temperature_or_nan());
        set(Covariate::CycleNumber, data.cycle_number.iter().map(|&c| c as f32).collect());
        set(Covariate::Soh, data.soh.iter().map(|s| s.unwrap_or(f32::NAN)).collect());
        set(Covariate::AmbientTemperature, vec![info.ambient_temperature_c.map_or(f32::NAN, |t| t as f32); n]);
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

/// Seconds since the current last jumped by more than `CURRENT_STEP_C`·C_nom between rows:
/// the relaxation clock after a pulse or step change.
fn time_since_current_change(data: &CellData, nominal_capacity_ah: f32) -> Vec<f32> {
    let threshold = CURRENT_STEP_C * nominal_capacity_ah.max(1e-3);
    let mut since = 0.0f32;
    let mut out = Vec::with_capacity(data.len());
    for i in 0..data.len() {
        if i > 0 {
            let jumped = (data.current[i] - data.current[i - 1]).abs() > threshold;
            since = if jumped { 0.0 } else { since + data.dt[i] };
        }
        out.push(since);
    }
    out
}

/// `scale`·(x_{t+1} − x_t) per row; 0 on the last row, which has no next one.
fn change_to_next(x: &[f32], scale: f32) -> Vec<f32> {
    (0..x.len()).map(|t| x.get(t + 1).map_or(0.0, |next| scale * (next - x[t]))).collect()
}

/// dV/dt in mV/s from the previous row (0 on the first row and where dt is 0).
fn dv_dt_mv_per_s(data: &CellData) -> Vec<f32> {
    (0..data.len())
        .map(|i| {
            if i == 0 || data.dt[i] <= 0.0 {
                0.0
            } else {
                1000.0 * (data.voltage[i] - data.voltage[i - 1]) / data.dt[i]
            }
        })
        .collect()
}
