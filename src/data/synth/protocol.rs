//! Test protocols as a cycler runs them: a schedule of steps, each a control (constant current,
//! voltage hold or rest) with an end condition, unrolled one cycle at a time.

use std::collections::VecDeque;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::cell_model::{Control, Sample};

/// CV holds end when the current falls below C/20.
const CV_CUTOFF_C_RATE: f64 = 0.05;
/// Longest a CC or CV step may run, like a cycler's step time limit.
const STEP_TIME_LIMIT_S: f64 = 12.0 * 3600.0;
const CV_TIME_LIMIT_S: f64 = 3.0 * 3600.0;
const OPENING_REST_S: f64 = 300.0;
const SETTLE_REST_S: f64 = 1800.0;
const SHORT_REST_S: f64 = 600.0;
/// HPPC: 10 s pulses with 40 s rests; the charge pulse at 3/4 of the discharge pulse current.
const PULSE_S: f64 = 10.0;
const PULSE_REST_S: f64 = 40.0;
const CHARGE_PULSE_SHARE: f64 = 0.75;
/// GITT: C/10 titrations of 30 min (5 % SOC), each followed by a 40 min relaxation.
const GITT_C_RATE: f64 = 0.1;
const GITT_PULSE_S: f64 = 1800.0;
const GITT_REST_S: f64 = 2400.0;
/// Drive profiles run from full down to this SOC (or the lower cut-off).
const DRIVE_SOC_FLOOR: f64 = 0.1;

/// A protocol family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// CC charge, CV hold to C/20, rest, CC discharge to the lower cut-off, rest.
    Cccv,
    /// Full charge, then 10 s discharge/charge pulses with rests at every 10 % SOC.
    Hppc,
    /// Full charge, then C/10 titration pulses with long rests down to the lower cut-off.
    Gitt,
    /// Full charge once, then shallow discharge/charge swings around mid SOC.
    Partial,
    /// Full charge, then random piecewise-constant loads with regenerative pulses.
    Drive,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [Protocol::Cccv, Protocol::Hppc, Protocol::Gitt, Protocol::Partial, Protocol::Drive];

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Cccv => "cccv",
            Protocol::Hppc => "hppc",
            Protocol::Gitt => "gitt",
            Protocol::Partial => "partial",
            Protocol::Drive => "drive",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ground-truth kind of a step, written as `gt_step_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepKind {
    Charge,
    Discharge,
    CvCharge,
    Rest,
    Pulse,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Charge => "charge",
            StepKind::Discharge => "discharge",
            StepKind::CvCharge => "cv_charge",
            StepKind::Rest => "rest",
            StepKind::Pulse => "pulse",
        }
    }
}

/// When a step ends, besides its time limit and the voltage cut-offs.
#[derive(Debug, Clone, Copy)]
enum Until {
    TimeLimit,
    CurrentBelow(f64),
    SocBelow(f64),
    SocAbove(f64),
}

/// How a step ended; loops (GITT, drive) stop when the cell reaches its lower cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    LowerCutoff,
    UpperCutoff,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub kind: StepKind,
    pub control: Control,
    until: Until,
    time_limit_s: f64,
}

impl Step {
    fn rest(seconds: f64) -> Self {
        Step { kind: StepKind::Rest, control: Control::Current(0.0), until: Until::TimeLimit, time_limit_s: seconds }
    }

    /// Constant current (A, + = charge) until a cut-off, `until`, or `time_limit_s`.
    fn constant_current(kind: StepKind, current: f64, until: Until, time_limit_s: f64) -> Self {
        Step { kind, control: Control::Current(current), until, time_limit_s }
    }

    fn cv_hold(volts: f64, max_current: f64, cutoff_current: f64) -> Self {
        Step {
            kind: StepKind::CvCharge,
            control: Control::HoldVoltage { volts, max_current },
            until: Until::CurrentBelow(cutoff_current),
            time_limit_s: CV_TIME_LIMIT_S,
        }
    }

    /// Whether the step is over after `sample`, `elapsed_s` into it, and how.
    pub fn outcome(&self, sample: &Sample, elapsed_s: f64, soc: f64) -> Option<Outcome> {
        if sample.at_voltage_limit {
            let charging = matches!(self.control, Control::Current(i) if i > 0.0);
            return Some(if charging { Outcome::UpperCutoff } else { Outcome::LowerCutoff });
        }
        let reached = match self.until {
            Until::TimeLimit => false,
            Until::CurrentBelow(a) => sample.current.abs() < a,
            Until::SocBelow(x) => soc <= x,
            Until::SocAbove(x) => soc >= x,
        };
        (reached || elapsed_s >= self.time_limit_s - 1e-9).then_some(Outcome::Completed)
    }
}

/// The currents a schedule uses, from the cell's nominal capacity and C-rates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProtocolCurrents {
    /// 1C (A).
    pub one_c_a: f64,
    pub charge_a: f64,
    pub discharge_a: f64,
    pub upper_cutoff_v: f64,
}

/// An entry of the unrolled cycle: a step, or a loop that yields steps until the cell is empty.
#[derive(Debug, Clone, Copy)]
enum Item {
    Step(Step),
    Titration { rest_next: bool },
    DriveToFloor,
}

/// One cell's protocol, unrolled lazily, one cycle of steps at a time.
pub(crate) struct Schedule {
    protocol: Protocol,
    currents: ProtocolCurrents,
    cycles: u32,
    cycles_started: u32,
    queue: VecDeque<Item>,
    /// The previous step came from the loop at the queue's front.
    previous_from_loop: bool,
    /// Partial cycling swings between these SOCs.
    soc_window: [f64; 2],
    rng: ChaCha8Rng,
}

impl Schedule {
    pub fn new(protocol: Protocol, currents: ProtocolCurrents, cycles: u32, mut rng: ChaCha8Rng) -> Self {
        let centre = rng.random_range(0.35..0.65);
        let half_depth = rng.random_range(0.1..0.25);
        Schedule {
            protocol,
            currents,
            cycles,
            cycles_started: 0,
            queue: VecDeque::new(),
            previous_from_loop: false,
            soc_window: [centre - half_depth, centre + half_depth],
            rng,
        }
    }

    /// The SOC window of partial cycling, for the cell's metadata.
    pub fn soc_window(&self) -> Option<[f64; 2]> {
        (self.protocol == Protocol::Partial).then_some(self.soc_window)
    }

    /// The next step and its cycle number, given how the previous step ended and the cell's SOC;
    /// `None` once every cycle has run.
    pub fn next_step(&mut self, previous: Outcome, soc: f64) -> Option<(Step, i32)> {
        loop {
            let from_loop = std::mem::take(&mut self.previous_from_loop);
            let Some(item) = self.queue.pop_front() else {
                if self.cycles_started == self.cycles {
                    return None;
                }
                self.unroll_cycle();
                continue;
            };
            let step = match item {
                Item::Step(step) => step,
                _ if from_loop && previous == Outcome::LowerCutoff => continue,
                Item::DriveToFloor if soc <= DRIVE_SOC_FLOOR => continue,
                Item::Titration { rest_next } => {
                    self.repeat(Item::Titration { rest_next: !rest_next });
                    self.titration_step(rest_next)
                }
                Item::DriveToFloor => {
                    self.repeat(item);
                    self.drive_segment()
                }
            };
            return Some((step, self.cycles_started as i32 - 1));
        }
    }

    fn repeat(&mut self, item: Item) {
        self.queue.push_front(item);
        self.previous_from_loop = true;
    }

    fn unroll_cycle(&mut self) {
        let c = self.currents;
        if self.cycles_started == 0 {
            self.push(Step::rest(OPENING_REST_S));
        }
        match self.protocol {
            Protocol::Cccv => {
                self.push_full_charge();
                self.push_discharge_to_cutoff(c.discharge_a);
            }
            Protocol::Hppc => {
                self.push_full_charge();
                for tenth in (1..=9).rev() {
                    self.push_hppc_level(tenth as f64 / 10.0);
                }
                self.push_discharge_to_cutoff(c.discharge_a);
            }
            Protocol::Gitt => {
                self.push_full_charge();
                self.queue.push_back(Item::Titration { rest_next: false });
                self.push(Step::rest(SETTLE_REST_S));
            }
            Protocol::Partial => {
                if self.cycles_started == 0 {
                    self.push_full_charge();
                }
                let [low, high] = self.soc_window;
                self.push(Step::constant_current(StepKind::Discharge, -c.discharge_a, Until::SocBelow(low), STEP_TIME_LIMIT_S));
                self.push(Step::rest(SHORT_REST_S));
                self.push(Step::constant_current(StepKind::Charge, c.charge_a, Until::SocAbove(high), STEP_TIME_LIMIT_S));
                self.push(Step::rest(SHORT_REST_S));
            }
            Protocol::Drive => {
                self.push_full_charge();
                self.queue.push_back(Item::DriveToFloor);
                self.push(Step::rest(SETTLE_REST_S));
            }
        }
        self.cycles_started += 1;
    }

    fn push(&mut self, step: Step) {
        self.queue.push_back(Item::Step(step));
    }

    /// CC to the upper cut-off, CV hold to C/20, rest: the SOC = 1 anchor of DESIGN §1.3.
    fn push_full_charge(&mut self) {
        let c = self.currents;
        self.push(Step::constant_current(StepKind::Charge, c.charge_a, Until::TimeLimit, STEP_TIME_LIMIT_S));
        self.push(Step::cv_hold(c.upper_cutoff_v, c.charge_a, CV_CUTOFF_C_RATE * c.one_c_a));
        self.push(Step::rest(SETTLE_REST_S));
    }

    fn push_discharge_to_cutoff(&mut self, current_a: f64) {
        self.push(Step::constant_current(StepKind::Discharge, -current_a, Until::TimeLimit, STEP_TIME_LIMIT_S));
        self.push(Step::rest(SETTLE_REST_S));
    }

    /// Discharge to `soc`, settle, then a discharge and a charge pulse, each followed by a rest.
    fn push_hppc_level(&mut self, soc: f64) {
        let pulse_a = self.currents.discharge_a;
        self.push(Step::constant_current(StepKind::Discharge, -pulse_a, Until::SocBelow(soc), STEP_TIME_LIMIT_S));
        self.push(Step::rest(SETTLE_REST_S));
        self.push(Step::constant_current(StepKind::Pulse, -pulse_a, Until::TimeLimit, PULSE_S));
        self.push(Step::rest(PULSE_REST_S));
        self.push(Step::constant_current(StepKind::Pulse, CHARGE_PULSE_SHARE * pulse_a, Until::TimeLimit, PULSE_S));
        self.push(Step::rest(PULSE_REST_S));
    }

    fn titration_step(&self, rest: bool) -> Step {
        if rest {
            Step::rest(GITT_REST_S)
        } else {
            let current = -GITT_C_RATE * self.currents.one_c_a;
            Step::constant_current(StepKind::Discharge, current, Until::TimeLimit, GITT_PULSE_S)
        }
    }

    /// One piece of a drive cycle, 2–60 s long: mostly traction loads around the cell's
    /// discharge rate, some regenerative braking (charge) and some standstill.
    fn drive_segment(&mut self) -> Step {
        let seconds = self.rng.random_range(2..=60) as f64;
        let draw: f64 = self.rng.random();
        let discharge_a = self.currents.discharge_a;
        let (kind, current) = if draw < 0.15 {
            (StepKind::Rest, 0.0)
        } else if draw < 0.35 {
            (StepKind::Charge, discharge_a * self.rng.random_range(0.1..0.8))
        } else {
            (StepKind::Discharge, -discharge_a * self.rng.random_range(0.2..2.0))
        };
        Step::constant_current(kind, current, Until::TimeLimit, seconds)
    }
}
