//! What differs between chemistries: OCV(SOC) curves, cut-offs and reference circuit parameters.

use serde::{Deserialize, Serialize};

/// Cell chemistry family of a synthetic cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Chemistry {
    /// NMC cathode, graphite anode: sloping OCV from 3.0 to 4.2 V.
    Nmc,
    /// LFP cathode, graphite anode: flat plateau near 3.2–3.35 V with steep ends.
    Lfp,
}

/// Circuit and thermal parameters of a fresh cell at 25 °C, per ampere-hour of capacity
/// (resistances shrink and thermal mass grows as cells get bigger).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReferenceParams {
    /// Series resistance × capacity (Ω·Ah) at mid SOC.
    pub r0_ohm_ah: f64,
    /// Resistances of the fast (charge transfer) and slow (diffusion) RC pairs × capacity (Ω·Ah).
    pub r_rc_ohm_ah: [f64; 2],
    /// Time constants of the two RC pairs (s).
    pub tau_s: [f64; 2],
    /// Heat capacity per Ah (J/K/Ah).
    pub heat_capacity_j_k_ah: f64,
    /// Convective conductance to ambient per Ah (W/K/Ah).
    pub cooling_w_k_ah: f64,
}

impl Chemistry {
    pub fn as_str(self) -> &'static str {
        match self {
            Chemistry::Nmc => "nmc",
            Chemistry::Lfp => "lfp",
        }
    }

    /// Discharge (lower) and charge (upper) voltage cut-offs (V).
    pub fn voltage_limits(self) -> (f64, f64) {
        match self {
            Chemistry::Nmc => (3.0, 4.2),
            Chemistry::Lfp => (2.5, 3.65),
        }
    }

    /// Open-circuit voltage (V) at `soc` (clamped to [0, 1]); strictly increasing.
    /// The curve spans exactly the cut-offs, so a CV hold at the upper one ends near SOC 1
    /// and a low-rate discharge to the lower one near SOC 0.
    pub fn ocv(self, soc: f64) -> f64 {
        let shape = |s: f64| match self {
            Chemistry::Nmc => nmc_shape(s),
            Chemistry::Lfp => lfp_shape(s),
        };
        let (lo, hi) = self.voltage_limits();
        let (at_empty, at_full) = (shape(0.0), shape(1.0));
        lo + (hi - lo) * (shape(soc.clamp(0.0, 1.0)) - at_empty) / (at_full - at_empty)
    }

    pub(crate) fn reference_params(self) -> ReferenceParams {
        match self {
            Chemistry::Nmc => ReferenceParams {
                r0_ohm_ah: 0.060,
                r_rc_ohm_ah: [0.025, 0.035],
                tau_s: [8.0, 400.0],
                heat_capacity_j_k_ah: 14.0,
                cooling_w_k_ah: 0.030,
            },
            Chemistry::Lfp => ReferenceParams {
                r0_ohm_ah: 0.045,
                r_rc_ohm_ah: [0.020, 0.030],
                tau_s: [12.0, 600.0],
                heat_capacity_j_k_ah: 30.0,
                cooling_w_k_ah: 0.040,
            },
        }
    }
}

impl std::fmt::Display for Chemistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resistance multiplier over SOC: every resistance rises towards empty (depleted surface
/// concentration) and a little towards full.
pub(crate) fn resistance_soc_factor(soc: f64) -> f64 {
    1.0 + 1.2 * (-soc / 0.08).exp() + 0.25 * (-(1.0 - soc) / 0.06).exp()
}

/// Unscaled NMC/graphite curve: steep knee at empty, gentle middle, graphite staging step near
/// 60 %, upturn at the top. Every term increases with `s`.
fn nmc_shape(s: f64) -> f64 {
    0.45 * (1.0 - (-s / 0.05).exp()) + 0.55 * s + 0.2 * s.powi(4) + 0.02 * ((s - 0.6) / 0.04).tanh()
}

/// Unscaled LFP curve: a slightly sloped plateau with the two-phase step near 55 %, steep ends.
fn lfp_shape(s: f64) -> f64 {
    0.15 * s + 0.04 * ((s - 0.55) / 0.02).tanh() - 0.7 * (-s / 0.025).exp() + 0.3 * ((s - 1.0) / 0.02).exp()
}
