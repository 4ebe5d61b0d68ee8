//! The record run: every step of every cell through the model and the transcoder's encoder, one
//! cell at a time, in batches of windows, into the buffered Parquet writers of `tables`. On a GPU
//! the encoder runs there too (`transcoder::device_encode`), on the CPU the hand-written one.

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::tables::{ActivationWriter, CovariateWriter};
use super::{ACTIVATIONS_FILE, COVARIATES_FILE, SUMMARY_FILE};
use crate::data::canonical::{cell_row_count, read_cell, Dataset, DatasetPaths};
use crate::data::cells::CellInfo;
use crate::data::windows::{windows, Window};
use crate::io::write_json;
use crate::label::covariates::Covariates;
use crate::model::backend::{run_on, BackendTask};
use crate::model::checkpoint::{load_model, LoadedModel};
use crate::model::inputs::{self, CellSteps, ModelSteps};
use crate::model::{DeviceChoice, Lblm};
use crate::transcoder::activation::Codes;
use crate::transcoder::device_encode::Encoder;
use crate::transcoder::{import_circuit_tracer, Transcoder, Variant};
use crate::{Error, Result};
use crate::transcoder::sparse::SparseOps;

/// Settings of the record stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    /// Activation (and covariate) rows held before a Parquet row group is written: the memory
    /// bound of the run, about 15 bytes a row.
    pub max_buffer_rows: usize,
    /// Windows per forward pass of the model.
    pub windows_per_batch: usize,
    /// Where the model and the transcoder's encoder run.
    pub device: DeviceChoice,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig { max_buffer_rows: 1 << 20, windows_per_batch: 16, device: DeviceChoice::Cpu }
    }
}

/// What a record run wrote (`record.json`); `read_sparse` takes the cells from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordSummary {
    /// Cells in dataset order, and their rows (the covariates' length; the model has a step for
    /// every row but the last, whose next voltage is unknown).
    pub cell_ids: Vec<String>,
    pub cell_rows: Vec<usize>,
    /// Model steps recorded (rows − 1 per cell).
    pub steps: u64,
    /// Firing (step, feature) pairs written.
    pub activation_rows: u64,
    /// Of those, per cell: lets a reader hold one cell's in a buffer of the exact size (empty
    /// in records made before it was kept).
    #[serde(default)]
    pub cell_activation_rows: Vec<u64>,
    pub activation_row_groups: usize,
    pub covariate_row_groups: usize,
    pub variant: Variant,
    /// Encoders of the transcoder: `layer` in the activations runs over 0..encoders (the MLSAE
    /// has one encoder, layer 0).
    pub encoders: usize,
    /// Features per encoder: with `read_sparse`, what "dead" is counted against.
    pub features_per_layer: usize,
    pub seconds: f64,
}

/// The transcoder to record: a `transcoder` stage directory (its `circuit-tracer/` export) or
/// one already in memory.
pub enum TranscoderInput<'a> {
    Dir(&'a Path),
    Loaded(&'a Transcoder),
}

impl TranscoderInput<'_> {
    fn load(&self) -> Result<Cow<'_, Transcoder>> {
        match self {
            TranscoderInput::Dir(dir) => Ok(Cow::Owned(import_circuit_tracer(&dir.join("circuit-tracer"))?)),
            TranscoderInput::Loaded(tc) => Ok(Cow::Borrowed(*tc)),
        }
    }
}

/// A window of one cell and the positions of it whose activations are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepWindow {
    pub start: usize,
    /// Steps in the window: the model's context, or the whole cell when it is shorter.
    pub len: usize,
    /// Positions `first..len` are kept: the steps no earlier window holds.
    pub first: usize,
}

/// Windows over a cell of `steps` steps, every context/2 steps (the last aligned to the end), and
/// for each step the window in which it has the most left context: the earliest that holds it.
/// The first window keeps all its positions; every step is kept exactly once.
pub fn step_windows(steps: usize, context: usize) -> Vec<StepWindow> {
    if steps == 0 {
        return Vec::new();
    }
    if steps < context {
        return vec![StepWindow { start: 0, len: steps, first: 0 }];
    }
    let mut covered = 0;
    windows(&[steps], context, (context / 2).max(1))
        .into_iter()
        .map(|w| {
            let first = covered - w.start;
            covered = w.start + context;
            StepWindow { start: w.start, len: context, first }
        })
        .collect()
}

/// Runs the model in `model_dir` and `transcoder` over every cell of the dataset at
/// `dataset_dir`, writing `out_dir/{activations,covariates}.parquet` and `record.json`.
pub fn record(
    dataset_dir: &Path,
    model_dir: &Path,
    transcoder: TranscoderInput,
    cfg: &RecordConfig,
    out_dir: &Path,
) -> Result<RecordSummary> {
    if cfg.max_buffer_rows == 0 || cfg.windows_per_batch == 0 {
        return Err(Error::Config("record: max_buffer_rows and windows_per_batch must be positive".to_owned()));
    }
    let transcoder = transcoder.load()?;
    let cells = Dataset::load_cells(dataset_dir)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let summary = run_on(cfg.device, RecordTask { dataset_dir, cells: &cells, model_dir, transcoder: &transcoder, cfg, out_dir })?;
    write_json(&out_dir.join(SUMMARY_FILE), &summary)?;
    Ok(summary)
}

struct RecordTask<'a> {
    dataset_dir: &'a Path,
    /// Read one at a time: memory is bounded by one cell and the writers' buffers.
    cells: &'a [CellInfo],
    model_dir: &'a Path,
    transcoder: &'a Transcoder,
    cfg: &'a RecordConfig,
    out_dir: &'a Path,
}

impl BackendTask for RecordTask<'_> {
    type Output = RecordSummary;
    fn describe(&self) -> String {
        format!("recording ({} windows per pass, {} features per encoder); lower `windows_per_batch`", self.cfg.windows_per_batch, self.transcoder.shape.features)
    }
    fn run<B: AutodiffBackend + SparseOps>(self, device: B::Device) -> Result<RecordSummary> {
        record_dataset::<B>(&self, device)
    }
}

fn record_dataset<A: AutodiffBackend + SparseOps>(task: &RecordTask, device: A::Device) -> Result<RecordSummary> {
    let started = Instant::now();
    let loaded = load_model::<A::InnerBackend>(task.model_dir, &device)?;
    let tc = task.transcoder;
    tc.shape.check_fits(loaded.model.layers(), loaded.model.d_model(), None)?;
    let encoder = Encoder::<A>::new(tc, &device);
    let encode = |x| encoder.encode(x);
    let paths = DatasetPaths::new(task.dataset_dir);
    let cells: Vec<&CellInfo> = task.cells.iter().filter(|c| crate::model::inputs::can_read(c, &loaded.norm.channels)).collect();
    let cell_ids: Vec<String> = cells.iter().map(|c| c.cell_id.clone()).collect();
    let cell_rows = cell_ids.iter().map(|id| cell_row_count(&paths.cell_file(id))).collect::<Result<Vec<usize>>>()?;
    let max_rows = task.cfg.max_buffer_rows;
    let mut activations = ActivationWriter::create(&task.out_dir.join(ACTIVATIONS_FILE), &cell_ids, max_rows)?;
    let mut covariates = CovariateWriter::create(&task.out_dir.join(COVARIATES_FILE), &cell_ids, max_rows)?;
    let steps: u64 = cell_rows.iter().map(|&r| r.saturating_sub(1) as u64).sum();
    let bar = crate::progress::bar(steps, "record", "steps");
    let mut cell_activation_rows = Vec::with_capacity(cells.len());
    for (c, info) in cells.iter().enumerate() {
        let before = activations.rows;
        let file = paths.cell_file(&info.cell_id);
        let (_, data) = read_cell(&file)?;
        covariates.push_cell(c as u32, &Covariates::from_cell(info, &data))?;
        let cell = loaded.norm.apply(&CellSteps::from_cell(info, &data, &file, &loaded.norm.channels)?);
        let sink = &mut |row, layer, feature, value| activations.push(c as u32, row, layer, feature, value);
        record_cell(&loaded, tc.shape, &encode, &cell, task.cfg.windows_per_batch, &device, sink, &|n| bar.inc(n as u64))?;
        cell_activation_rows.push(activations.rows - before);
    }
    bar.finish_and_clear();
    let activation_rows = activations.rows;
    Ok(RecordSummary {
        cell_ids,
        cell_rows,
        steps,
        activation_rows,
        cell_activation_rows,
        activation_row_groups: activations.finish()?,
        covariate_row_groups: covariates.finish()?,
        variant: tc.shape.variant,
        encoders: tc.shape.encoders(),
        features_per_layer: tc.shape.features,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Receives one firing (row, layer, feature, value) of the current cell.
type Sink<'a> = &'a mut dyn FnMut(u32, u16, u32, f32) -> Result<()>;

/// Every step of one cell, in row order, through model and `encode` into `sink`; `progress`
/// hears the steps done.
#[allow(clippy::too_many_arguments)]
fn record_cell<B: Backend>(
    loaded: &LoadedModel<B>,
    shape: crate::transcoder::clt::Shape,
    encode: &dyn Fn(Tensor<B, 2>) -> Codes,
    cell: &ModelSteps,
    windows_per_batch: usize,
    device: &B::Device,
    sink: Sink,
    progress: &dyn Fn(usize),
) -> Result<()> {
    let encoders = shape.encoders();
    for chunk in step_windows(cell.steps(), loaded.model.context).chunks(windows_per_batch) {
        let (x, rows) = kept_inputs(&loaded.model, shape.variant, cell, chunk, device);
        let codes = encode(x);
        for (t, &row) in rows.iter().enumerate() {
            for e in 0..encoders {
                for i in codes.row(t * encoders + e) {
                    if codes.value[i] > 0.0 {
                        sink(row, e as u16, codes.index[i], codes.value[i])?;
                    }
                }
            }
        }
        progress(rows.len());
    }
    Ok(())
}

/// The encoder inputs (resid_mid, or mlp_out for an SAE) of the kept positions of `chunk`
/// (windows of one length), [n, L·d] on the model's device, and the row of each of the n positions.
fn kept_inputs<B: Backend>(model: &Lblm<B>, variant: Variant, cell: &ModelSteps, chunk: &[StepWindow], device: &B::Device) -> (Tensor<B, 2>, Vec<u32>) {
    let len = chunk[0].len;
    let windows: Vec<Window> = chunk.iter().map(|w| Window { cell: 0, start: w.start }).collect();
    let (x, _) = inputs::batch::<B>(std::slice::from_ref(cell), &windows, len, device);
    let all = encoder_input_tensor(model, variant, x);
    let [batch, seq, layers, d] = all.dims();
    let mut kept = Vec::new();
    let mut rows = Vec::new();
    for (b, w) in chunk.iter().enumerate() {
        kept.extend((w.first..len).map(|p| (b * len + p) as i64));
        rows.extend((w.first..len).map(|p| (w.start + p) as u32));
    }
    let kept = Tensor::<B, 1, Int>::from_data(TensorData::new(kept, [rows.len()]), device);
    (all.reshape([batch * seq, layers * d]).select(0, kept), rows)
}

/// Model inputs [batch, seq, N_CHANNELS] → what the encoders of `variant` read at every layer
/// (resid_mid; mlp_out for an SAE) [batch, seq, L, d], flat: token-major, as the transcoder reads it.
pub fn encoder_inputs<B: Backend>(model: &Lblm<B>, variant: Variant, x: Tensor<B, 3>) -> Vec<f32> {
    encoder_input_tensor(model, variant, x).into_data().convert::<f32>().into_vec().expect("f32 activations")
}

/// `encoder_inputs` on the model's device, [batch, seq, L, d].
fn encoder_input_tensor<B: Backend>(model: &Lblm<B>, variant: Variant, x: Tensor<B, 3>) -> Tensor<B, 4> {
    let (_, acts) = model.forward_hooked(x);
    let read = |a: crate::model::transformer::LayerActivations<B>| if variant.reads_mlp_out() { a.mlp_out } else { a.resid_mid };
    Tensor::<B, 3>::stack::<4>(acts.into_iter().map(read).collect(), 2)
}
