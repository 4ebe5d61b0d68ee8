//! Which way a file's current sign runs, read from its voltage (DESIGN §1.2). Where the current
//! jumps, the voltage jumps the same way (the ohmic drop, then polarisation building up or
//! relaxing), and over a constant-current step it ends where the current drives it (OCV rises
//! with charge, polarisation builds up), whatever the chemistry or OCV curve. A file whose
//! voltage moves against its current at nearly every sizeable jump and step writes discharge as
//! positive current (PyBaMM's own convention). Files with no other evidence of their sign
//! (Parquet, column maps, Novonix) are flipped on it; where a capacity or state column settled
//! the sign, a disagreement is reported.

/// Jumps of at least about this share of the file's peak |current| vote…
const MIN_JUMP_SHARE: f64 = 0.1;
/// …and the sign is reversed when at least this many of them…
const MIN_AGAINST: u64 = 3;
/// …and this share of them moved the voltage against the current.
const MIN_SHARE_AGAINST: f64 = 0.8;
/// A current never negative whose voltage moves against it this often is written unsigned.
const UNSIGNED_SHARE_AGAINST: f64 = 0.2;
/// Jump sizes are counted in factor-of-two bins from this current (A) up, so one pass over the
/// file suffices before its peak current is known.
const SMALLEST_JUMP_A: f64 = 1e-6;
const BINS: usize = 32;
/// A constant-current step votes when its voltage moved at least this much (V).
const MIN_STEP_VOLTAGE_V: f64 = 0.001;

/// Counts, by the size of the current's change between consecutive rows, whether the voltage
/// moved with it or against it.
#[derive(Debug, Clone, Default)]
pub struct CurrentResponse {
    with: [u64; BINS],
    against: [u64; BINS],
}

/// How the sizeable current jumps and constant-current steps of a file voted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Votes {
    pub with: u64,
    pub against: u64,
}

impl Votes {
    /// Whether the voltage says the current's sign is reversed.
    pub fn reversed(&self) -> bool {
        self.against >= MIN_AGAINST && self.against as f64 >= MIN_SHARE_AGAINST * (self.with + self.against) as f64
    }

    /// Whether a current that is never negative is written unsigned: the voltage falls under it
    /// at a good share of its jumps and steps (its discharges), which no charge-only file shows.
    pub fn unsigned(&self, min_current_a: f64, peak_a: f64) -> bool {
        let never_negative = min_current_a >= -MIN_JUMP_SHARE * peak_a;
        never_negative && self.against >= MIN_AGAINST && self.against as f64 >= UNSIGNED_SHARE_AGAINST * (self.with + self.against) as f64
    }
}

impl CurrentResponse {
    /// One pair of consecutive rows: the change of current (A) and of voltage (V) between them.
    pub fn push(&mut self, d_current: f64, d_voltage: f64) {
        let product = d_current * d_voltage;
        if product == 0.0 || !product.is_finite() {
            return;
        }
        let bin = ((d_current.abs() / SMALLEST_JUMP_A).log2().max(0.0) as usize).min(BINS - 1);
        if product > 0.0 {
            self.with[bin] += 1;
        } else {
            self.against[bin] += 1;
        }
    }

    /// The votes of the jumps of at least about a tenth of `peak_a` (bins reaching above it) and
    /// of the constant-current `steps`, given as (mean current A, voltage change over the step V),
    /// whose current is that large too.
    pub fn votes(&self, peak_a: f64, steps: impl Iterator<Item = (f64, f64)>) -> Votes {
        let threshold = MIN_JUMP_SHARE * peak_a;
        let counted = |b: &usize| SMALLEST_JUMP_A * 2f64.powi(*b as i32 + 1) > threshold;
        let sum = |bins: &[u64; BINS]| (0..BINS).filter(counted).map(|b| bins[b]).sum();
        let mut votes = Votes { with: sum(&self.with), against: sum(&self.against) };
        for (current, d_voltage) in steps.filter(|(i, dv)| i.abs() >= threshold && dv.abs() >= MIN_STEP_VOLTAGE_V) {
            if current * d_voltage > 0.0 {
                votes.with += 1;
            } else {
                votes.against += 1;
            }
        }
        votes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_jumps_and_flat_voltage_do_not_vote() {
        let mut r = CurrentResponse::default();
        r.push(1.0, 0.05);
        r.push(-1.0, -0.04);
        r.push(0.001, -0.01); // noise on a 1 A step: too small to count
        r.push(-0.5, 0.0);
        assert_eq!(r.votes(1.0, std::iter::empty()), Votes { with: 2, against: 0 });
        let steps = [(-1.0, -0.3), (1.0, 0.0005), (0.01, -0.2)]; // a discharge; too flat; too small
        assert_eq!(r.votes(1.0, steps.into_iter()), Votes { with: 3, against: 0 });
    }

    #[test]
    fn reversed_needs_three_votes_against_and_four_in_five() {
        let mut r = CurrentResponse::default();
        r.push(2.0, -0.05);
        r.push(-2.0, 0.05);
        assert!(!r.votes(2.0, std::iter::empty()).reversed(), "two votes are too few");
        let discharge_written_positive = [(2.0, -0.4)];
        assert!(r.votes(2.0, discharge_written_positive.into_iter()).reversed());
        r.push(2.0, 0.05);
        assert!(!r.votes(2.0, discharge_written_positive.into_iter()).reversed(), "3 of 4 against is not enough");
    }
}
