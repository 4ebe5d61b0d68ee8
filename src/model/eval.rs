//! `eval-model` (DESIGN §2, Metrics): on held-out cells, next-step RMSE in mV, skill against the
//! persistence baseline (1 − MSE/MSE_persistence, persistence being ΔV = 0), a ridge baseline on
//! the same inputs, and rollouts that feed the model's own voltages back over whole discharge
//! steps and over one cycle, given the true current. Overall and per protocol; writes
//! `metrics.json` and PNGs of predicted against true voltage.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::backend::{run_on, BackendTask};
use super::checkpoint::{load_model, LoadedModel, ModelDir};
use crate::io::write_json;
use super::config::{EvalCells, EvalConfig};
use super::inputs::{dataset_steps, soc_anchor_channels, CellSteps, InputNorm, ModelSteps};
use super::plot::{plot_cell, CellPlot};
use super::ridge::Ridge;
use super::transformer::Lblm;
use crate::data::canonical::{CellData, Dataset};
use crate::data::schema::{Method, State};
use crate::data::windows::windows;
use crate::{Error, Result};
use crate::transcoder::sparse::SparseOps;

/// Next-step prediction errors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NextStepMetrics {
    pub steps: usize,
    /// RMSE of the predicted V_{t+1}, in mV.
    pub rmse_mv: f64,
    /// RMSE of persistence (V_{t+1} = V_t), in mV.
    pub persistence_rmse_mv: f64,
    /// 1 − MSE_model / MSE_persistence.
    pub skill: f64,
    pub ridge_rmse_mv: f64,
    pub ridge_skill: f64,
}

/// Errors of voltages fed back over a stretch of steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RolloutMetrics {
    pub rollouts: usize,
    /// Predicted rows over all rollouts.
    pub rows: usize,
    /// RMSE over every predicted row, in mV.
    pub rmse_mv: f64,
    /// Largest absolute error, in mV.
    pub max_abs_mv: f64,
    /// RMSE of holding the starting voltage over the whole stretch, in mV: what a rollout
    /// that learned nothing would score.
    pub persistence_rmse_mv: f64,
}

impl RolloutMetrics {
    fn is_empty(&self) -> bool {
        self.rollouts == 0
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupMetrics {
    pub cells: usize,
    pub next_step: NextStepMetrics,
    /// Rollouts over whole constant-current discharge steps, each from the row before the step
    /// with the cell's history before it.
    pub discharge_rollout: RolloutMetrics,
    /// Discharge steps that begin at a cell's first row: there is no row before the step and no
    /// history, so the model starts cold. Kept apart from `discharge_rollout`; left out of
    /// metrics.json (and so the report) when there is none.
    #[serde(default, skip_serializing_if = "RolloutMetrics::is_empty")]
    pub cold_discharge_rollout: RolloutMetrics,
    /// The `discharge_rollout`s of cells with an SOC anchor once more, the model reading `soc`
    /// and `soc_present` as on a cell without one: how it would fare had ingest found no anchor.
    /// Only for a model that reads both; left out of metrics.json where there is none.
    #[serde(default, skip_serializing_if = "RolloutMetrics::is_empty")]
    pub unanchored_discharge_rollout: RolloutMetrics,
    /// Rollouts over one cycle per cell.
    pub cycle_rollout: RolloutMetrics,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellMetrics {
    pub cell_id: String,
    pub protocol: String,
    pub next_step: NextStepMetrics,
}

/// What `eval-model` reports (also `metrics.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalMetrics {
    pub cells: EvalCells,
    pub overall: GroupMetrics,
    /// The scored cells whose conditions the training cells span (no extrapolation flag), pooled;
    /// only when some scored cell is flagged (else it would repeat `overall`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_range: Option<GroupMetrics>,
    pub by_protocol: BTreeMap<String, GroupMetrics>,
    pub per_cell: Vec<CellMetrics>,
    /// PNG files written, relative to the output directory.
    pub plots: Vec<String>,
    /// Plain-words warnings for the report: every rollout that does worse than holding the
    /// starting voltage.
    #[serde(default)]
    pub flags: Vec<String>,
    pub seconds: f64,
}

/// Evaluates the model in `model_dir` on the held-out cells of the dataset at `dataset_dir`,
/// writing `metrics.json` and PNGs into `out_dir`.
pub fn eval_model(dataset_dir: &Path, model_dir: &Path, out_dir: &Path, cfg: &EvalConfig) -> Result<EvalMetrics> {
    let dataset = Dataset::load(dataset_dir)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    run_on(cfg.device, EvalTask { dataset_dir, dataset: &dataset, model_dir, out_dir, cfg })
}

struct EvalTask<'a> {
    dataset_dir: &'a Path,
    dataset: &'a Dataset,
    model_dir: &'a Path,
    out_dir: &'a Path,
    cfg: &'a EvalConfig,
}

impl BackendTask for EvalTask<'_> {
    type Output = EvalMetrics;
    fn describe(&self) -> String {
        format!("model evaluation ({} windows per pass); lower `batch`", self.cfg.batch)
    }
    fn run<B: AutodiffBackend + SparseOps>(self, device: B::Device) -> Result<EvalMetrics> {
        evaluate::<B::InnerBackend>(&self, &device)
    }
}

/// One held-out cell with everything the metrics need.
struct HeldOut<'a> {
    raw: CellSteps,
    steps: ModelSteps,
    data: &'a CellData,
    protocol: String,
    /// Which ridge baseline scores it (see `plan_cells`).
    fold: usize,
}

/// The cells scored and the cells the ridge baseline is fitted on.
struct CellPlan {
    scored: Vec<String>,
    /// Empty: the baseline is fitted two-fold on the scored cells themselves.
    ridge_train: Vec<String>,
}

/// `cfg.cell_ids` when given, else the split's `cfg.cells`; when those are not all in the dataset
/// (a model trained or imported from elsewhere) every cell of the dataset. The ridge baseline
/// fits on the split's training cells present here and not scored.
fn plan_cells(split: &crate::data::windows::Split, dataset: &Dataset, cfg: &EvalConfig) -> Result<CellPlan> {
    let present = |id: &String| dataset.index_of(id).is_some();
    let from_split: Vec<String> = match cfg.cells {
        EvalCells::Test => split.test.clone(),
        EvalCells::Val => split.val.clone(),
        EvalCells::Heldout => split.val.iter().chain(&split.test).cloned().collect(),
    };
    let scored = if !cfg.cell_ids.is_empty() {
        if let Some(missing) = cfg.cell_ids.iter().find(|id| !present(id)) {
            return Err(crate::data::canonical::no_such_cell(Path::new("--cells"), missing, &dataset.cells));
        }
        cfg.cell_ids.clone()
    } else if !from_split.is_empty() && from_split.iter().all(present) {
        from_split
    } else {
        tracing::warn!("the model's {:?} cells are not in this dataset: scoring all {} of its cells", cfg.cells, dataset.cells.len());
        dataset.cells.iter().map(|c| c.cell_id.clone()).collect()
    };
    if scored.is_empty() {
        return Err(Error::Config("no cells to evaluate on".into()));
    }
    let ridge_train = split.train.iter().filter(|id| present(id) && !scored.contains(id)).cloned().collect();
    Ok(CellPlan { scored, ridge_train })
}

fn evaluate<B: Backend>(task: &EvalTask, device: &B::Device) -> Result<EvalMetrics> {
    let t0 = Instant::now();
    let (cfg, dataset) = (task.cfg, task.dataset);
    let LoadedModel { model, norm, split, .. } = load_model::<B>(task.model_dir, device)?;
    let plan = plan_cells(&split, dataset, cfg)?;
    let held: Vec<HeldOut> = dataset_steps(dataset, task.dataset_dir, &plan.scored, &norm.channels)?
        .into_iter()
        .enumerate()
        .map(|(k, raw)| {
            let i = dataset.index_of(&raw.cell_id).expect("found by dataset_steps");
            let protocol = dataset.cells[i].protocol.clone().unwrap_or_else(|| "unknown".to_owned());
            let fold = if plan.ridge_train.is_empty() { k % 2 } else { 0 };
            HeldOut { steps: norm.apply(&raw), raw, data: &dataset.data[i], protocol, fold }
        })
        .collect();
    if held.is_empty() {
        return Err(Error::Config(format!("eval: the model can read none of the {} cells to score (see the warnings above)", plan.scored.len())));
    }
    let width = norm.channels.len();
    let ridges: Vec<Ridge> = if plan.ridge_train.is_empty() {
        // No training cells here: two-fold by cell, each half's baseline fitted on the other half.
        (0..2)
            .map(|f| {
                let other: Vec<ModelSteps> = held.iter().filter(|c| c.fold != f).map(|c| c.steps.clone()).collect();
                Ridge::fit(&other, width, cfg.ridge_lags, cfg.ridge_lambda)
            })
            .collect()
    } else {
        let train: Vec<ModelSteps> =
            dataset_steps(dataset, task.dataset_dir, &plan.ridge_train, &norm.channels)?.iter().map(|c| norm.apply(c)).collect();
        vec![Ridge::fit(&train, width, cfg.ridge_lags, cfg.ridge_lambda)]
    };
    let bar = crate::progress::bar(held.len() as u64, "eval", "cells");
    let results = on_workers(&held, &model, |model, cell| {
        let result = eval_cell(model, &norm, &ridges[cell.fold], cell, cfg, device);
        bar.inc(1);
        result
    });

    // An imported model's training cells are unknown: its split is only VoltLens's, for later stages.
    let extrapolating =
        if ModelDir::new(task.model_dir).import_record().exists() { Vec::new() } else { extrapolation_flags(dataset, &plan, &split) };
    let mut groups: BTreeMap<String, Accumulators> = BTreeMap::new();
    let (mut overall, mut in_range) = (Accumulators::default(), Accumulators::default());
    let mut per_cell = Vec::new();
    let mut plotted: BTreeMap<&str, usize> = BTreeMap::new();
    let mut plots = Vec::new();
    for (cell, result) in held.iter().zip(&results) {
        let count = plotted.entry(&cell.protocol).or_default();
        if *count < cfg.plot_cells_per_protocol {
            *count += 1;
            let name = format!("pred_vs_true_{}_{}.png", crate::io::safe_name(&cell.protocol), crate::io::safe_name(&cell.raw.cell_id));
            let rows = cfg.plot_rows.min(cell.raw.steps());
            let teacher: Vec<f32> = (0..rows).map(|t| cell.raw.voltage[t] + result.model_dv[t]).collect();
            let plot = CellPlot {
                cell_id: &cell.raw.cell_id,
                protocol: &cell.protocol,
                time_s: &cell.data.test_time,
                voltage: &cell.raw.voltage,
                teacher: &teacher,
                rollout: result.cycle.as_ref().map(|(seg, v)| (seg.start, v.as_slice())),
            };
            plot_cell(&task.out_dir.join(&name), &plot)?;
            plots.push(name);
        }
        per_cell.push(CellMetrics {
            cell_id: cell.raw.cell_id.clone(),
            protocol: cell.protocol.clone(),
            next_step: result.acc.next_step.finish(),
        });
        groups.entry(cell.protocol.clone()).or_default().merge(&result.acc);
        overall.merge(&result.acc);
        if !extrapolating.iter().any(|(id, _)| *id == cell.raw.cell_id) {
            in_range.merge(&result.acc);
        }
    }
    bar.finish_and_clear();
    let overall = overall.finish();
    let in_range = (!extrapolating.is_empty() && in_range.cells > 0).then(|| in_range.finish());
    let by_protocol: BTreeMap<String, GroupMetrics> = groups.into_iter().map(|(k, v)| (k, v.finish())).collect();
    let mut flags: Vec<String> = next_step_flag(&overall.next_step).into_iter().collect();
    flags.extend(std::iter::once(("all cells", &overall)).chain(by_protocol.iter().map(|(k, v)| (k.as_str(), v))).flat_map(|(g, m)| rollout_flags(g, m)));
    flags.extend(extrapolating.into_iter().map(|(_, flag)| flag));
    write_rollouts(&task.out_dir.join("rollouts.csv"), &held, &results)?;
    let metrics = EvalMetrics { cells: cfg.cells, overall, in_range, by_protocol, per_cell, plots, flags, seconds: t0.elapsed().as_secs_f64() };
    write_json(&task.out_dir.join("metrics.json"), &metrics)?;
    Ok(metrics)
}

/// Every rolled-out row behind the rollout figures, one row each: which cell, rollout kind and
/// rollout, the cell's row and time, the true and the rolled-out voltage. Where in a step the error
/// sits (the knee of a discharge, the rest after it) is for the reader to plot.
fn write_rollouts(path: &Path, held: &[HeldOut], results: &[CellResult]) -> Result<()> {
    use polars::prelude::{Column, DataFrame};
    let (mut cell_id, mut kind, mut index, mut row) = (Vec::<String>::new(), Vec::<&str>::new(), Vec::<u32>::new(), Vec::<u32>::new());
    let (mut time, mut truth, mut rolled) = (Vec::<f64>::new(), Vec::<f32>::new(), Vec::<f32>::new());
    for (cell, result) in held.iter().zip(results) {
        let discharges = result.discharges.iter().enumerate().map(|(i, (seg, kind, v))| (*kind, i, seg, v));
        for (k, i, seg, volts) in discharges.chain(result.cycle.iter().map(|(seg, v)| ("cycle", 0, seg, v))) {
            for (r, v) in (seg.start..=seg.end).zip(volts) {
                cell_id.push(cell.raw.cell_id.clone());
                kind.push(k);
                index.push(i as u32);
                row.push(r as u32);
                time.push(cell.data.test_time[r]);
                truth.push(cell.raw.voltage[r]);
                rolled.push(*v);
            }
        }
    }
    let height = truth.len();
    let columns = vec![
        Column::new("cell_id".into(), cell_id),
        Column::new("kind".into(), kind),
        Column::new("rollout".into(), index),
        Column::new("row".into(), row),
        Column::new("test_time_s".into(), time),
        Column::new("voltage_v".into(), truth),
        Column::new("rolled_out_v".into(), rolled),
    ];
    let mut df = DataFrame::new(height, columns).map_err(|e| Error::Other(format!("{}: {e}", path.display())))?;
    crate::label::stage::write_csv(path, &mut df)
}

/// (cell id, warning) per scored cell whose conditions the model's training cells (those in this
/// dataset) did not span.
fn extrapolation_flags(dataset: &Dataset, plan: &CellPlan, split: &crate::data::windows::Split) -> Vec<(String, String)> {
    let conditions = dataset.conditions();
    let train: Vec<_> = conditions.iter().filter(|c| split.train.contains(&c.cell_id) && !plan.scored.contains(&c.cell_id)).collect();
    conditions
        .iter()
        .filter(|c| plan.scored.contains(&c.cell_id))
        .filter_map(|c| {
            let outside = crate::data::windows::extrapolation(c, &train);
            (!outside.is_empty()).then(|| (c.cell_id.clone(), format!("{}: {}; its figures measure extrapolation", c.cell_id, outside.join(", "))))
        })
        .collect()
}

/// Skill under which a model is said to predict barely better than persistence.
const LOW_SKILL: f64 = 0.1;

/// A warning where the model's next-step prediction over all cells is no better than the ridge
/// baseline on the same inputs, or barely beats holding the last voltage: its features then
/// describe the inputs more than anything it learned.
fn next_step_flag(m: &NextStepMetrics) -> Option<String> {
    let advice = "train it longer or larger before reading its features";
    if m.skill < m.ridge_skill {
        Some(format!("all cells: the model predicts the next voltage worse than a ridge regression on the same inputs (skill {:.3} against {:.3}); {advice}", m.skill, m.ridge_skill))
    } else if m.skill < LOW_SKILL {
        Some(format!("all cells: the model predicts the next voltage barely better than holding the last one (skill {:.3}; 0 = persistence); {advice}", m.skill))
    } else {
        None
    }
}

/// A warning per rollout kind of `group` whose RMSE is worse than persistence's.
fn rollout_flags(group: &str, m: &GroupMetrics) -> Vec<String> {
    [
        ("discharge-step", &m.discharge_rollout),
        ("cold-start discharge-step", &m.cold_discharge_rollout),
        ("discharge-step (SOC anchor hidden)", &m.unanchored_discharge_rollout),
        ("full-cycle", &m.cycle_rollout),
    ]
        .into_iter()
        .filter(|(_, r)| r.rows > 0 && r.rmse_mv > r.persistence_rmse_mv)
        .map(|(kind, r)| {
            format!(
                "{group}: the model's {kind} rollouts ({:.0} mV RMSE) are worse than holding the starting voltage ({:.0} mV)",
                r.rmse_mv, r.persistence_rmse_mv
            )
        })
        .collect()
}

/// What one held-out cell contributes.
struct CellResult {
    acc: Accumulators,
    /// Teacher-forced ΔV (V) per step.
    model_dv: Vec<f32>,
    /// The discharge-step rollouts, in the cell's order, each with its kind in rollouts.csv;
    /// the unanchored ones follow the others.
    discharges: Vec<(Segment, &'static str, Vec<f32>)>,
    /// The cycle rollout, for the figure.
    cycle: Option<(Segment, Vec<f32>)>,
}

fn eval_cell<B: Backend>(
    model: &Lblm<B>,
    norm: &InputNorm,
    ridge: &Ridge,
    cell: &HeldOut,
    cfg: &EvalConfig,
    device: &B::Device,
) -> CellResult {
    let scale = norm.target_scale;
    let model_dv: Vec<f32> = predict_cell(model, &cell.steps, cfg.batch, device).iter().map(|p| p * scale).collect();
    let ridge_dv: Vec<f32> = ridge.predict(&cell.steps).iter().map(|p| p * scale).collect();
    let mut acc = Accumulators { cells: 1, ..Accumulators::default() };
    acc.next_step.add(&cell.raw.delta_v, &model_dv, &ridge_dv);

    let discharges = discharge_segments(cell.data, cfg.min_rollout_rows, cfg.rollouts_per_cell);
    let cycle = cycle_segment(cell.data, cfg.max_cycle_rows);
    let mut segments = discharges.clone();
    segments.extend(cycle);
    let mut rolled = rollout(model, norm, &cell.raw, &segments, device);
    // A step that begins at row 0 has no row before it to start from.
    let cold = |seg: &Segment| seg.start == 0 && cell.data.state[0] == State::Discharging;
    for (i, (seg, v)) in segments.iter().zip(&rolled).enumerate() {
        let target = match i < discharges.len() {
            true if cold(seg) => &mut acc.cold_discharge,
            true => &mut acc.discharge,
            false => &mut acc.cycle,
        };
        target.add(&cell.raw.voltage[seg.start..=seg.end], v);
    }
    // The cycle, when there is one, was rolled out last.
    let cycle = cycle.map(|seg| (seg, rolled.pop().expect("cycle rolled out")));
    let mut discharges: Vec<_> = discharges.into_iter().zip(rolled).map(|(seg, v)| (seg, if cold(&seg) { "cold_discharge" } else { "discharge" }, v)).collect();
    if let Some(unanchored) = without_soc_anchor(&cell.raw, &norm.channels) {
        let warm: Vec<Segment> = discharges.iter().filter(|d| d.1 == "discharge").map(|d| d.0).collect();
        for (seg, v) in warm.iter().zip(rollout(model, norm, &unanchored, &warm, device)) {
            acc.unanchored_discharge.add(&cell.raw.voltage[seg.start..=seg.end], &v);
            discharges.push((*seg, "unanchored_discharge", v));
        }
    }
    CellResult { acc, model_dv, discharges, cycle }
}

/// The cell as it would read without an SOC anchor (`soc` and `soc_present` 0 on every row), when
/// the model reads both channels and the cell has an anchor; else None.
fn without_soc_anchor(cell: &CellSteps, channels: &[String]) -> Option<CellSteps> {
    let (soc, present) = soc_anchor_channels(channels)?;
    if !cell.inputs.chunks_exact(cell.width).any(|row| row[present] == 1.0) {
        return None;
    }
    let mut blanked = cell.clone();
    for row in blanked.inputs.chunks_exact_mut(cell.width) {
        (row[soc], row[present]) = (0.0, 0.0);
    }
    Some(blanked)
}

/// Maps `f` over `items` on one worker thread per core, each with its own copy of the model
/// (burn modules are `Send`, not `Sync`); results come back in the order of `items`.
fn on_workers<T: Sync, M: Clone + Send, R: Send>(items: &[T], model: &M, f: impl Fn(&M, &T) -> R + Sync) -> Vec<R> {
    let workers = rayon::current_num_threads().clamp(1, items.len().max(1));
    let mut slots: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (model, f) = (model.clone(), &f);
                // Round-robin, so that long and short cells spread over the workers.
                scope.spawn(move || (w..items.len()).step_by(workers).map(|i| (i, f(&model, &items[i]))).collect::<Vec<_>>())
            })
            .collect();
        for handle in handles {
            for (i, r) in handle.join().expect("evaluation worker panicked") {
                slots[i] = Some(r);
            }
        }
    });
    slots.into_iter().map(|r| r.expect("every item evaluated")).collect()
}

/// Teacher-forced scaled ΔV for every step of a cell. Windows overlap by half; each step takes
/// its prediction from the window that gives it the longest history.
fn predict_cell<B: Backend>(model: &Lblm<B>, cell: &ModelSteps, batch: usize, device: &B::Device) -> Vec<f32> {
    let n = cell.steps();
    let len = model.context.min(n);
    if len == 0 {
        return Vec::new();
    }
    let all = windows(&[n], len, (len / 2).max(1));
    let mut pred = vec![0f32; n];
    let mut history = vec![usize::MAX; n];
    for chunk in all.chunks(batch.max(1)) {
        let (x, _) = super::inputs::batch::<B>(std::slice::from_ref(cell), chunk, len, device);
        let out: Vec<f32> = model.forward(x).into_data().convert::<f32>().into_vec().expect("f32 output");
        for (w, row) in chunk.iter().zip(out.chunks_exact(len)) {
            for (p, &v) in row.iter().enumerate() {
                let t = w.start + p;
                if history[t] == usize::MAX || p > history[t] {
                    history[t] = p;
                    pred[t] = v;
                }
            }
        }
    }
    pred
}

/// A stretch of rows to roll out: V_start is given, V_{start+1} … V_end are predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    start: usize,
    end: usize,
}

/// Runs of rows sharing a step index, as (first row, last row).
fn step_runs(data: &CellData) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut first = 0;
    for r in 1..=data.len() {
        if r == data.len() || data.step_index[r] != data.step_index[first] {
            runs.push((first, r - 1));
            first = r;
        }
    }
    runs
}

/// Up to `count` discharge steps of at least `min_rows` rows, evenly spread through the cell,
/// each starting from the last row before the step: constant-current steps, and the steps of a
/// current that moves with the voltage (method `other`: constant power or resistance, as EV and
/// power tests discharge), whose true current the rollout is given as well. Not CV holds.
fn discharge_segments(data: &CellData, min_rows: usize, count: usize) -> Vec<Segment> {
    let candidates: Vec<Segment> = step_runs(data)
        .into_iter()
        .filter(|&(a, b)| {
            b + 1 - a >= min_rows.max(2)
                && (a..=b).all(|r| data.state[r] == State::Discharging && matches!(data.method[r], Method::ConstantCurrent | Method::Other))
        })
        .map(|(a, b)| Segment { start: a.saturating_sub(1), end: b })
        .collect();
    if candidates.len() <= count {
        return candidates;
    }
    (0..count).map(|i| candidates[i * (candidates.len() - 1) / (count - 1).max(1)]).collect()
}

/// One cycle of the cell: the second cycle when there are three or more (the first may start
/// part-way and the last may be cut short), else the first; at most `max_rows` rows.
fn cycle_segment(data: &CellData, max_rows: usize) -> Option<Segment> {
    let mut cycles: Vec<(usize, usize)> = Vec::new();
    for r in 0..data.len() {
        match cycles.last_mut() {
            Some((first, last)) if data.cycle_number[*first] == data.cycle_number[r] => *last = r,
            _ => cycles.push((r, r)),
        }
    }
    let (a, b) = *cycles.get(if cycles.len() >= 3 { 1 } else { 0 })?;
    let start = a.saturating_sub(1);
    let end = b.min(start + max_rows);
    (end > start).then_some(Segment { start, end })
}

/// Feeds the model its own voltages over each segment, given the true current, time steps and
/// temperature. Returns the voltages V_start … V_end per segment (V_start true).
///
/// Each segment runs its history before the start once ([`Lblm::prefill`], up to a context),
/// then one step at a time ([`Lblm::step`]) on its own voltages. When the cache holds a whole
/// context, the last half context is run again from position 0 and stepping goes on: every
/// prediction sees between half a context and a whole one of history, as in [`predict_cell`]'s
/// windows, for about two steps' work per step instead of a window's (a model trained elsewhere
/// on 8,192-step windows would otherwise take hours per cell).
fn rollout<B: Backend>(model: &Lblm<B>, norm: &InputNorm, cell: &CellSteps, segments: &[Segment], device: &B::Device) -> Vec<Vec<f32>> {
    // A model that does not read V_t (an imported one may not) rolls out on the true inputs alone.
    let voltage_channel = norm.channels.iter().position(|c| c == "voltage");
    segments.iter().map(|&seg| rollout_segment(model, norm, cell, seg, voltage_channel, device)).collect()
}

/// One segment of [`rollout`].
fn rollout_segment<B: Backend>(model: &Lblm<B>, norm: &InputNorm, cell: &CellSteps, seg: Segment, voltage_channel: Option<usize>, device: &B::Device) -> Vec<f32> {
    let mut volts = vec![cell.voltage[seg.start]];
    if seg.end == seg.start {
        return volts;
    }
    // Rows from..to, V_r replaced by its rolled-out value from the segment's start on.
    let rows = |from: usize, to: usize, volts: &[f32]| {
        let mut x = Vec::with_capacity((to - from) * cell.width);
        for r in from..to {
            push_row(cell, norm, r, voltage_channel.zip(r.checked_sub(seg.start).map(|i| volts[i])), &mut x);
        }
        Tensor::<B, 3>::from_data(TensorData::new(x, [1, to - from, cell.width]), device)
    };
    let last = |out: Tensor<B, 2>| -> f32 { *out.into_data().convert::<f32>().into_vec::<f32>().expect("f32 output").last().expect("a step") };
    let (context, keep) = (model.context, (model.context / 2).max(1));
    let from = (seg.start + 1).saturating_sub(context);
    let (out, mut cache) = model.prefill(rows(from, seg.start + 1, &volts));
    let mut held = seg.start + 1 - from;
    volts.push(volts[0] + last(out) * norm.target_scale);
    for t in seg.start + 1..seg.end {
        let out = if held == context {
            let (out, refilled) = model.prefill(rows(t + 1 - keep, t + 1, &volts));
            (cache, held) = (refilled, keep);
            out
        } else {
            held += 1;
            model.step(rows(t, t + 1, &volts), &mut cache)
        };
        volts.push(volts.last().expect("started") + last(out) * norm.target_scale);
    }
    volts
}

/// Row r of the model's input, normalised, with V_r replaced where `voltage` says.
fn push_row(cell: &CellSteps, norm: &InputNorm, r: usize, voltage: Option<(usize, f32)>, x: &mut Vec<f32>) {
    let start = x.len();
    x.extend_from_slice(cell.row(r));
    let row = &mut x[start..];
    if let Some((c, v)) = voltage {
        row[c] = v;
    }
    norm.apply_row(row);
}

/// Sums of squared errors, turned into metrics at the end.
#[derive(Debug, Clone, Default)]
struct NextStepAcc {
    n: usize,
    model: f64,
    persistence: f64,
    ridge: f64,
}

impl NextStepAcc {
    /// `truth`, `model`, `ridge`: ΔV in volts, one per step.
    fn add(&mut self, truth: &[f32], model: &[f32], ridge: &[f32]) {
        for ((&t, &m), &r) in truth.iter().zip(model).zip(ridge) {
            self.n += 1;
            self.model += ((m - t) as f64).powi(2);
            self.persistence += (t as f64).powi(2);
            self.ridge += ((r - t) as f64).powi(2);
        }
    }

    fn finish(&self) -> NextStepMetrics {
        let n = self.n.max(1) as f64;
        let skill = |sse: f64| if self.persistence > 0.0 { 1.0 - sse / self.persistence } else { f64::NAN };
        NextStepMetrics {
            steps: self.n,
            rmse_mv: 1e3 * (self.model / n).sqrt(),
            persistence_rmse_mv: 1e3 * (self.persistence / n).sqrt(),
            skill: skill(self.model),
            ridge_rmse_mv: 1e3 * (self.ridge / n).sqrt(),
            ridge_skill: skill(self.ridge),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct RolloutAcc {
    rollouts: usize,
    n: usize,
    model: f64,
    persistence: f64,
    max_abs: f64,
}

impl RolloutAcc {
    /// `truth` and `predicted`: V_start … V_end (the first is given, not scored).
    fn add(&mut self, truth: &[f32], predicted: &[f32]) {
        self.rollouts += 1;
        for (&t, &p) in truth.iter().zip(predicted).skip(1) {
            let err = (p - t) as f64;
            self.n += 1;
            self.model += err * err;
            self.persistence += ((truth[0] - t) as f64).powi(2);
            self.max_abs = self.max_abs.max(err.abs());
        }
    }

    fn merge(&mut self, other: &RolloutAcc) {
        self.rollouts += other.rollouts;
        self.n += other.n;
        self.model += other.model;
        self.persistence += other.persistence;
        self.max_abs = self.max_abs.max(other.max_abs);
    }

    fn finish(&self) -> RolloutMetrics {
        let n = self.n.max(1) as f64;
        RolloutMetrics {
            rollouts: self.rollouts,
            rows: self.n,
            rmse_mv: 1e3 * (self.model / n).sqrt(),
            max_abs_mv: 1e3 * self.max_abs,
            persistence_rmse_mv: 1e3 * (self.persistence / n).sqrt(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Accumulators {
    cells: usize,
    next_step: NextStepAcc,
    discharge: RolloutAcc,
    cold_discharge: RolloutAcc,
    unanchored_discharge: RolloutAcc,
    cycle: RolloutAcc,
}

impl Accumulators {
    fn merge(&mut self, other: &Accumulators) {
        self.cells += other.cells;
        self.next_step.n += other.next_step.n;
        self.next_step.model += other.next_step.model;
        self.next_step.persistence += other.next_step.persistence;
        self.next_step.ridge += other.next_step.ridge;
        self.discharge.merge(&other.discharge);
        self.cold_discharge.merge(&other.cold_discharge);
        self.unanchored_discharge.merge(&other.unanchored_discharge);
        self.cycle.merge(&other.cycle);
    }

    fn finish(&self) -> GroupMetrics {
        GroupMetrics {
            cells: self.cells,
            next_step: self.next_step.finish(),
            discharge_rollout: self.discharge.finish(),
            cold_discharge_rollout: self.cold_discharge.finish(),
            unanchored_discharge_rollout: self.unanchored_discharge.finish(),
            cycle_rollout: self.cycle.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::windows::NormStats;
    use crate::model::config::{HeadTarget, ModelConfig};
    use burn::backend::Flex;

    #[test]
    fn a_model_no_better_than_its_baselines_is_flagged() {
        let m = |skill, ridge_skill| NextStepMetrics { steps: 100, rmse_mv: 1.0, persistence_rmse_mv: 1.0, skill, ridge_rmse_mv: 1.0, ridge_skill };
        assert!(next_step_flag(&m(0.97, 0.81)).is_none());
        assert!(next_step_flag(&m(0.5, 0.8)).unwrap().contains("worse than a ridge regression"));
        assert!(next_step_flag(&m(0.017, -0.2)).unwrap().contains("barely better than holding the last one (skill 0.017"));
    }

    /// The rollout reruns, with the model's plain forward pass, each window it should have seen.
    fn rollout_by_windows(model: &Lblm<Flex>, norm: &InputNorm, cell: &CellSteps, seg: Segment) -> Vec<f32> {
        let (context, keep) = (model.context, (model.context / 2).max(1));
        let mut volts = vec![cell.voltage[seg.start]];
        let mut from = (seg.start + 1).saturating_sub(context);
        for t in seg.start..seg.end {
            if t + 1 - from > context {
                from = t + 1 - keep;
            }
            let mut x = Vec::new();
            for r in from..=t {
                push_row(cell, norm, r, r.checked_sub(seg.start).map(|i| (0, volts[i])), &mut x);
            }
            let input = Tensor::<Flex, 3>::from_data(TensorData::new(x, [1, t + 1 - from, cell.width]), &Default::default());
            let out: Vec<f32> = model.forward(input).into_data().convert::<f32>().into_vec().unwrap();
            volts.push(volts.last().unwrap() + out.last().unwrap() * norm.target_scale);
        }
        volts
    }

    #[test]
    fn constant_power_discharges_are_rolled_out_and_holds_and_pulses_not() {
        // Steps of 20 rows: CC discharge, CV hold, constant-power discharge, rest, a 3-row pulse.
        let steps = [(State::Discharging, Method::ConstantCurrent, 20), (State::Discharging, Method::ConstantVoltage, 20), (State::Discharging, Method::Other, 20), (State::Resting, Method::Rest, 20), (State::Discharging, Method::Pulse, 3)];
        let mut data = CellData::default();
        for (i, &(state, method, rows)) in steps.iter().enumerate() {
            data.step_index.extend(std::iter::repeat_n(i as i32, rows));
            data.state.extend(std::iter::repeat_n(state, rows));
            data.method.extend(std::iter::repeat_n(method, rows));
        }
        data.test_time = (0..data.step_index.len()).map(|t| t as f64).collect();
        assert_eq!(discharge_segments(&data, 2, 10), [Segment { start: 0, end: 19 }, Segment { start: 39, end: 59 }]);
    }

    #[test]
    fn a_group_without_cold_starts_writes_no_cold_rollout_figures() {
        let json = serde_json::to_value(GroupMetrics::default()).unwrap();
        assert!(json.get("cold_discharge_rollout").is_none() && json.get("discharge_rollout").is_some(), "{json}");
        let back: GroupMetrics = serde_json::from_value(json).unwrap();
        assert_eq!(back.cold_discharge_rollout.rollouts, 0);
    }

    #[test]
    fn a_stepped_rollout_gives_the_voltages_of_rerunning_its_windows() {
        let channels = ["voltage", "c_rate", "charge_next"].map(String::from).to_vec();
        for head in [HeadTarget::DeltaV, HeadTarget::NextVoltage] {
            // A context of 16 over 50 steps: the cache fills and is refilled several times.
            let cfg = ModelConfig { layers: 2, d_model: 16, heads: 2, d_mlp: 32, context: 16, head, channels: channels.clone(), ..ModelConfig::default() };
            let model = Lblm::<Flex>::new(&cfg, 9, &Default::default());
            let n = 50;
            let voltage: Vec<f32> = (0..=n).map(|t| 3.9 - 0.004 * t as f32).collect();
            let inputs = (0..n).flat_map(|t| [voltage[t], -1.0 + 0.01 * t as f32, -0.003]).collect();
            let cell = CellSteps { cell_id: "c".into(), inputs, width: 3, delta_v: voltage.windows(2).map(|w| w[1] - w[0]).collect(), voltage };
            let norm = InputNorm { channels: channels.clone(), stats: NormStats { mean: vec![3.7, -0.5, 0.0], std: vec![0.2, 0.5, 0.01] }, target_scale: 0.01 };
            let segments = [Segment { start: 0, end: 12 }, Segment { start: 20, end: 49 }, Segment { start: 30, end: 30 }];
            let stepped = rollout(&model, &norm, &cell, &segments, &Default::default());
            for (a, &seg) in stepped.iter().zip(&segments) {
                let b = rollout_by_windows(&model, &norm, &cell, seg);
                assert_eq!(a.len(), seg.end - seg.start + 1);
                assert_eq!(a.len(), b.len());
                assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4), "{head:?} {seg:?}: {a:?} vs {b:?}");
            }
        }
    }
}
