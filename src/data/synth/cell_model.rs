//! The equivalent circuit of one cell: OCV(SOC) in series with R0 and two RC pairs, every
//! resistance depending on SOC, temperature (Arrhenius) and age; a lumped thermal mass cooled
//! to ambient; hard current and voltage limits.

use super::chemistry::{resistance_soc_factor, Chemistry};

/// Points of the SOC lookup table (0.2 % apart, fine enough for the steep LFP ends).
const SOC_GRID: usize = 501;
const KELVIN: f64 = 273.15;
const REFERENCE_TEMPERATURE_K: f64 = 298.15;
/// Activation energies over the gas constant (K): ohmic (electrolyte) and
/// charge-transfer/diffusion processes.
const ARRHENIUS_R0_K: f64 = 2500.0;
const ARRHENIUS_RC_K: f64 = 4500.0;
/// The temperature factors change by < 0.3 % per 0.05 K; refreshing them only then keeps three
/// `exp` calls out of most steps.
const ARRHENIUS_REFRESH_K: f64 = 0.05;

/// What the cycler asks of the cell for one internal step (+ = charge).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Control {
    /// Constant current (A); zero for a rest.
    Current(f64),
    /// Hold the terminal voltage (V), charging with at most `max_current` (A).
    HoldVoltage { volts: f64, max_current: f64 },
}

/// The result of one internal step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Applied current (A), after the current and voltage limits.
    pub current: f64,
    /// Terminal voltage at the end of the step (V).
    pub voltage: f64,
    /// The requested current was cut back to keep the voltage at a cut-off.
    pub at_voltage_limit: bool,
}

/// Per-cell circuit and thermal parameters, fresh, at 25 °C.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CellParams {
    pub capacity_ah: f64,
    pub r0_ohm: f64,
    pub r_rc_ohm: [f64; 2],
    pub tau_s: [f64; 2],
    pub heat_capacity_j_k: f64,
    pub cooling_w_k: f64,
    pub max_charge_a: f64,
    pub max_discharge_a: f64,
}

/// Terminal voltage over the coming step as a line in the current: V(I) = v_open + I·r.
struct Linearised {
    v_open: f64,
    r: f64,
    r0: f64,
    /// How much each RC voltage moves per ampere over the step: R_k·(1 − e^(−dt/τ_k)).
    rc_gain: [f64; 2],
}

/// Temperature factors, recomputed only when the cell temperature has moved.
struct Arrhenius {
    at_temperature_c: f64,
    r0: f64,
    rc: f64,
    /// e^(−dt/τ_k) for the two RC pairs.
    rc_decay: [f64; 2],
}

pub(crate) struct CellModel {
    chemistry: Chemistry,
    params: CellParams,
    /// Per SOC grid point: [ocv, r0, r1, r2] of the fresh cell at 25 °C.
    table: Vec<[f64; 4]>,
    dt_s: f64,
    ambient_c: f64,
    /// e^(−dt·h/C): thermal relaxation over one step.
    thermal_decay: f64,
    /// Present capacity (A·s) and resistance multiplier, set per cycle by `set_age`.
    capacity_as: f64,
    resistance_growth: f64,
    arrhenius: Arrhenius,
    /// State: true SOC (of the present capacity), RC voltages (V), cell temperature (°C).
    pub soc: f64,
    v_rc: [f64; 2],
    pub temperature_c: f64,
}

impl CellModel {
    pub fn new(chemistry: Chemistry, params: CellParams, soc: f64, ambient_c: f64, dt_s: f64) -> Self {
        let table = (0..SOC_GRID)
            .map(|k| {
                let soc = k as f64 / (SOC_GRID - 1) as f64;
                let f = resistance_soc_factor(soc);
                [chemistry.ocv(soc), params.r0_ohm * f, params.r_rc_ohm[0] * f, params.r_rc_ohm[1] * f]
            })
            .collect();
        let mut model = Self {
            chemistry,
            params,
            table,
            dt_s,
            ambient_c,
            thermal_decay: (-dt_s * params.cooling_w_k / params.heat_capacity_j_k).exp(),
            capacity_as: params.capacity_ah * 3600.0,
            resistance_growth: 1.0,
            arrhenius: Arrhenius { at_temperature_c: f64::NAN, r0: 1.0, rc: 1.0, rc_decay: [0.0; 2] },
            soc,
            v_rc: [0.0; 2],
            temperature_c: ambient_c,
        };
        model.refresh_arrhenius();
        model
    }

    /// Ages the cell to `cycles` equivalent cycles: capacity fades and resistances grow linearly.
    pub fn set_age(&mut self, cycles: f64, fade_per_cycle: f64, growth_per_cycle: f64) {
        let remaining = (1.0 - fade_per_cycle * cycles).max(0.5);
        self.capacity_as = self.params.capacity_ah * 3600.0 * remaining;
        self.resistance_growth = 1.0 + growth_per_cycle * cycles;
        self.refresh_arrhenius();
    }

    /// Advances one internal step under `control`: solves for the current (limits, CV), then
    /// updates SOC, the RC voltages exactly for a constant current, and the temperature.
    pub fn step(&mut self, control: Control) -> Sample {
        let line = self.linearise();
        let (current, at_voltage_limit) = match control {
            Control::Current(requested) => self.limit_current(requested, &line),
            Control::HoldVoltage { volts, max_current } => {
                let max = max_current.min(self.params.max_charge_a);
                (((volts - line.v_open) / line.r).clamp(0.0, max), false)
            }
        };
        let voltage = line.v_open + current * line.r;
        self.soc += current * self.dt_s / self.capacity_as;
        for ((v, decay), gain) in self.v_rc.iter_mut().zip(self.arrhenius.rc_decay).zip(line.rc_gain) {
            *v = decay * *v + gain * current;
        }
        // Irreversible heat I·(V − OCV): Joule heat in R0 plus polarisation heat in the RC pairs.
        let heat_w = current * (current * line.r0 + self.v_rc[0] + self.v_rc[1]);
        self.update_temperature(heat_w);
        Sample { current, voltage, at_voltage_limit }
    }

    /// Clips a requested current to the cell's limits, then cuts it back where it would take
    /// the voltage past a cut-off (what a cycler's voltage clamp does).
    fn limit_current(&self, requested: f64, line: &Linearised) -> (f64, bool) {
        let current = requested.clamp(-self.params.max_discharge_a, self.params.max_charge_a);
        let (v_min, v_max) = self.chemistry.voltage_limits();
        let voltage = line.v_open + current * line.r;
        if current > 0.0 && voltage > v_max {
            (((v_max - line.v_open) / line.r).clamp(0.0, current), true)
        } else if current < 0.0 && voltage < v_min {
            (((v_min - line.v_open) / line.r).clamp(current, 0.0), true)
        } else {
            (current, false)
        }
    }

    /// The terminal voltage after one step as a function of the current, using the OCV slope of
    /// the table segment (exact while SOC stays within it).
    fn linearise(&self) -> Linearised {
        let x = self.soc.clamp(0.0, 1.0) * (SOC_GRID - 1) as f64;
        let k = (x as usize).min(SOC_GRID - 2);
        let (lo, hi, w) = (&self.table[k], &self.table[k + 1], x - k as f64);
        let at = |j: usize| lo[j] + w * (hi[j] - lo[j]);
        let ocv_slope_per_soc = (hi[0] - lo[0]) * (SOC_GRID - 1) as f64;
        let a = &self.arrhenius;
        let r0 = at(1) * a.r0 * self.resistance_growth;
        let rc_gain = [
            at(2) * a.rc * self.resistance_growth * (1.0 - a.rc_decay[0]),
            at(3) * a.rc * self.resistance_growth * (1.0 - a.rc_decay[1]),
        ];
        Linearised {
            v_open: at(0) + a.rc_decay[0] * self.v_rc[0] + a.rc_decay[1] * self.v_rc[1],
            r: r0 + rc_gain[0] + rc_gain[1] + ocv_slope_per_soc * self.dt_s / self.capacity_as,
            r0,
            rc_gain,
        }
    }

    /// Lumped thermal mass: exact exponential approach to ambient + heat/cooling over one step.
    fn update_temperature(&mut self, heat_w: f64) {
        let settled_c = self.ambient_c + heat_w / self.params.cooling_w_k;
        self.temperature_c = settled_c + (self.temperature_c - settled_c) * self.thermal_decay;
        if (self.temperature_c - self.arrhenius.at_temperature_c).abs() > ARRHENIUS_REFRESH_K {
            self.refresh_arrhenius();
        }
    }

    fn refresh_arrhenius(&mut self) {
        let inverse_gap = 1.0 / (self.temperature_c + KELVIN) - 1.0 / REFERENCE_TEMPERATURE_K;
        let rc = (ARRHENIUS_RC_K * inverse_gap).exp();
        // Capacitances stay fixed, so each time constant scales with its resistance.
        let decay = |k: usize| (-self.dt_s / (self.params.tau_s[k] * rc * self.resistance_growth)).exp();
        self.arrhenius = Arrhenius {
            at_temperature_c: self.temperature_c,
            r0: (ARRHENIUS_R0_K * inverse_gap).exp(),
            rc,
            rc_decay: [decay(0), decay(1)],
        };
    }
}
