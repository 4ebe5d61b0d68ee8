//! The `voltlens` command line: a thin layer over the library's stage functions.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::data::formats::Format;
use crate::data::ingest::IngestOptions;
use crate::data::synth::SynthConfig;
use crate::model::Tolerance;
use crate::pipeline::{RunOptions, StageOutcome};
use crate::{Error, Result};

#[derive(Parser)]
#[command(
    name = "voltlens",
    version,
    about = "Open up battery foundation models: ingest cycler data, train a battery language model, \
             train sparse transcoders on it and label their features.",
    after_help = "Start with:  voltlens run pipelines/quickstart.toml\nLogs: set RUST_LOG=debug for more detail."
)]
struct Cli {
    /// No progress bars; warnings and errors only.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

/// Layouts `voltlens export` writes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    /// battery-data-toolkit's Parquet layout.
    Battdat,
}

#[derive(Subcommand)]
enum Command {
    /// Read cycler exports into a canonical dataset (cells.parquet + timeseries/*.parquet).
    ///
    /// Formats are detected from each file's header: Arbin CSV, Maccor text export, BioLogic text
    /// export, Novonix CSV, Neware record CSV, BaSyTec text export, Battery Data Format (BDF) CSV,
    /// PEC CSV, Landt LANDdt export, BatteryArchive CSV, canonical or PyBaMM Parquet, battdat
    /// folders (<battery>/raw_data.parquet, as `voltlens export --format battdat` writes). The text
    /// formats also read from xlsx, xlsm, xlsb, xls and ods workbooks (as Arbin MITS Pro, Neware
    /// BTS and Landt LANDdt export them): the sheet holding the record is found by its header. Any
    /// other CSV or workbook reads through a TOML column map (--format mapped --column-map
    /// map.toml). Directories are read one level deep; metadata side files (*_Metadata.csv,
    /// *_truth.csv, cells.json) are used by the file they belong to. Current is stored + = charge:
    /// a flipped sign is detected from the file's capacity or state columns, else from the voltage
    /// (it moves with the current at every current jump and constant-current step), and reported.
    /// SOC is anchored at the end of a charge tapering at the upper cut-off, else at a C/10
    /// discharge reaching the lower one (or tapering there), else from rest voltages through the
    /// OCV-SOC relation of the dataset's anchored cells of the same type (chemistry, stated PyBaMM
    /// parameter set, nominal capacity, cut-offs); a cell with no trustworthy anchor gets a
    /// null soc (its anchor method and stated error are in cells.parquet and `inspect`).
    ///
    /// Example: voltlens ingest data/cyclers data/pybamm-chen2020 --out runs/my-data
    Ingest {
        /// Files or directories to read.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output dataset directory: written in full beside it, then swapped in; an existing one is
        /// replaced only if VoltLens wrote it (anything else there is refused, never deleted).
        #[arg(long)]
        out: PathBuf,
        /// Skip detection: arbin, maccor, biologic, novonix, neware, basytec, bdf, pec,
        /// battery_archive, parquet, battdat or mapped.
        #[arg(long)]
        format: Option<Format>,
        /// TOML column map for --format mapped (column names, units, sign convention, or a
        /// charge/discharge state column and its values: `state = "Mode"` under [columns],
        /// [state_values] charge = ["C"], discharge = ["D"]).
        #[arg(long)]
        column_map: Option<PathBuf>,
        /// Nominal capacity in Ah for every input (else from metadata or a `cells.json` beside the
        /// files, one entry per cell_id, else estimated and flagged).
        #[arg(long)]
        nominal_capacity: Option<f64>,
        /// Time may step back this many seconds (rows dropped with a warning) before a file is refused.
        #[arg(long, default_value_t = 1.0)]
        time_tolerance: f64,
        /// Upper cut-off voltage for every input: a charge tapering there anchors SOC = 1
        /// (else from metadata, else inferred from CV holds or voltage-limited charges).
        #[arg(long)]
        upper_cutoff: Option<f64>,
        /// Lower cut-off voltage for every input: a discharge at C/10 or less reaching it, or one
        /// tapering there to C/10, anchors SOC = 0.
        #[arg(long)]
        lower_cutoff: Option<f64>,
        /// Ingest the files that read and skip those that do not, with a warning naming each
        /// (without it, one unreadable file stops the ingest and nothing is written).
        #[arg(long)]
        skip_unreadable: bool,
    },
    /// Generate synthetic cells (equivalent-circuit model, five protocol families) as a dataset.
    ///
    /// Example: voltlens synth --cells 20 --out runs/synth --seed 3
    Synth {
        /// Number of cells [default: the config file's, else 10].
        #[arg(long)]
        cells: Option<usize>,
        /// Output dataset directory.
        #[arg(long)]
        out: PathBuf,
        /// Seed: the same seed gives the same cells, bit for bit [default: the config file's, else 0].
        #[arg(long)]
        seed: Option<u64>,
        /// A TOML file with further generator settings, at its top level: the keys of the
        /// [data.synth] block `voltlens defaults` prints. Flags given on the command line win over it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Summarise a canonical dataset per cell (cut-offs, SOC anchor and its stated error included),
    /// and optionally plot one cell.
    ///
    /// Example: voltlens inspect runs/quickstart/data/dataset --plot chen2020-11-00-cccv
    Inspect {
        /// Dataset directory (with cells.parquet).
        dir: PathBuf,
        /// Draw voltage, current, SOC and temperature against time for this cell (default: the first).
        #[arg(long, num_args = 0..=1, default_missing_value = "")]
        plot: Option<String>,
        /// Where to write the plot.
        #[arg(long, default_value = "cell.png")]
        plot_out: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the canonical schemas, or write them as JSON files.
    ///
    /// Example: voltlens schema --write schemas/
    Schema {
        /// Write timeseries.schema.json and cells.schema.json into this directory.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Print every key of a pipeline file at its default, as TOML: what each stage table takes.
    ///
    /// Example: voltlens defaults > pipelines/mine.toml   (then keep the keys you change)
    Defaults,
    /// Run a pipeline: its stages in order into runs/<name>/<stage>/, skipping stages that are up to date.
    ///
    /// Example: voltlens run pipelines/quickstart.toml --from model
    Run {
        /// The pipeline TOML file.
        file: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run several pipelines one after another on one device; carries on past failures and
    /// ends with a summary table. Exits non-zero if any failed.
    ///
    /// Example: voltlens batch pipelines/quickstart.toml pipelines/pybamm-dev.toml
    Batch {
        /// Pipeline TOML files, run in the order given.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Train the battery model (LBLM) on a canonical dataset; resumes from a checkpoint in --out.
    ///
    /// Settings come from a TOML file with [arch] and [train] tables (the same keys as a pipeline's
    /// [model.arch] and [model.train]); flags override them. By default the model reads 13 input
    /// channels, ingest's coulomb-counted soc and its flag soc_present among them ([arch] channels;
    /// an unknown channel name lists every one there is), and half of each batch trains on its own
    /// drifted voltages, the drift times 1 to 5 ([train] pushforward = 0.5, pushforward_drift = 3,
    /// pushforward_drift_spread = 2), so that rollouts hold; a quarter reads soc as a cell without
    /// an SOC anchor does ([train] soc_dropout = 0.25), so that such cells hold too.
    ///
    /// Example: voltlens train-model --data runs/quickstart/data/dataset --out runs/my-model --steps 2000
    TrainModel {
        /// Dataset directory (cells.parquet + timeseries/).
        #[arg(long)]
        data: PathBuf,
        /// Model directory: checkpoints, config, normalisation statistics and split.
        #[arg(long)]
        out: PathBuf,
        /// TOML file with [arch] and [train] tables.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Optimiser steps.
        #[arg(long)]
        steps: Option<usize>,
        /// cpu, cuda or wgpu (a GPU needs a build with --features cuda or --features wgpu).
        #[arg(long)]
        device: Option<crate::model::DeviceChoice>,
        /// Seeds initialisation, the split and batches (overrides [train] seed).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Evaluate a trained model on its held-out cells: next-step RMSE, skill against persistence
    /// and a ridge baseline, rollout RMSE; writes metrics.json, PNGs per protocol and every
    /// rolled-out row (rollouts.csv).
    ///
    /// Example: voltlens eval-model --data runs/quickstart/data/dataset --model runs/my-model --out runs/my-eval
    EvalModel {
        /// Canonical dataset (from `voltlens ingest` or `voltlens synth`) holding the cells to score.
        #[arg(long)]
        data: PathBuf,
        /// The directory train-model (or import-model) wrote.
        #[arg(long)]
        model: PathBuf,
        /// Folder for metrics.json, rollouts.csv and the rollout PNGs (created if missing; other files in it are left alone).
        #[arg(long)]
        out: PathBuf,
        /// cpu, cuda or wgpu (a GPU needs a build with --features cuda or --features wgpu).
        #[arg(long)]
        device: Option<crate::model::DeviceChoice>,
        /// Cells to score (comma-separated ids) instead of the model's test split. When the split's
        /// cells are not in the dataset (a model imported or trained elsewhere), every cell is scored.
        #[arg(long, value_delimiter = ',')]
        cells: Vec<String>,
    },
    /// Import a decoder-only battery transformer trained elsewhere (safetensors, f32, f16 or bf16) as an
    /// ordinary VoltLens model directory. The architecture TOML gives the shape ([model]: layers,
    /// d_model, heads, d_mlp, context, final_norm true|false, and always norm layer_norm|rms_norm,
    /// norm_eps, mlp gelu|gelu_tanh|relu|swiglu, positional learned|rotary|none, rope_theta if
    /// rotary), the head ([head] target delta_v|next_voltage, scale, offset), the input channels in
    /// order with their normalisation ([[inputs]] name + mean/std or scale/offset; an unknown name
    /// lists them all) and how tensors are named ([weights] rename = ordered [regex, name] pairs
    /// onto VoltLens's names: embed, positions, blocks.N.{ln_attn, attn.qkv or attn.q/k/v,
    /// attn.out, ln_mlp, mlp.up, mlp.gate, mlp.down}, ln_final, head, each .weight/.bias; conv1d =
    /// regexes of [in, out] matrices; rope_pairing half (Hugging Face's Llama) | interleaved
    /// (Meta's original code); kv_heads for grouped-query attention, each key/value head serving
    /// consecutive query heads (kv_grouping = "tiled": heads j, j + kv_heads, …, as .repeat()
    /// tiles them); ignore = regexes of buffers to leave out). See examples/pytorch/ for
    /// GPT-2 and Llama style files.
    ///
    /// Example: voltlens import-model --weights runs/ref/weights.safetensors --config runs/ref/arch.toml --out runs/imported --check runs/ref/check.safetensors
    ImportModel {
        /// The model's weights (safetensors; f32, f16 or bf16).
        #[arg(long)]
        weights: PathBuf,
        /// Architecture TOML.
        #[arg(long)]
        config: PathBuf,
        /// New model directory.
        #[arg(long)]
        out: PathBuf,
        /// safetensors with `inputs` [N, T, C] (raw channel values) and the source's `outputs`
        /// [N, T] or [N, T, 1] (volts, in the head's units; float32 or float64): the import is kept
        /// only if it reproduces them. Without it a wrong layout may import silently (a warning says so).
        #[arg(long)]
        check: Option<PathBuf>,
        /// Largest tolerated |VoltLens − source| in volts for --check…
        #[arg(long, default_value_t = Tolerance::default().volts)]
        tolerance: f64,
        /// …and that over the largest |source prediction| (a ΔV head's outputs are about a
        /// millivolt). Loosen both for a reference run in half precision (1e-2, 0.05 for bfloat16).
        #[arg(long, default_value_t = Tolerance::default().relative)]
        rel_tolerance: f64,
        /// A dataset whose cells are split into train / val / test for the transcoder stages
        /// (without it the model has no split, and eval-model scores every cell).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Seed of that split.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Export a VoltLens model for PyTorch: model.safetensors (nn.Linear [out, in] weights),
    /// arch.toml (the import-model format) and check.safetensors (8 windows of inputs and this
    /// model's predictions). examples/pytorch/reference.py --layout voltlens rebuilds it.
    ///
    /// Example: voltlens export-model runs/quickstart/model/model --out runs/exported
    ExportModel {
        /// The model directory.
        model: PathBuf,
        /// New directory for the export.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a sparse transcoder (CLT, PLT or MLSAE; or an SAE on mlp_out) on a trained model's MLPs, with activations
    /// made online from the model; evaluates FVU, L0, dead features and replacement fidelity on
    /// held-out cells and exports circuit-tracer safetensors.
    ///
    /// Settings: a TOML file in the form of a pipeline's [transcoder] table (`eval_tokens`, `device`,
    /// and a [config] table: variant, features, activation, sparsity, lambda, schedule, steps…).
    ///
    /// Example: voltlens train-transcoder --data runs/quickstart/data/dataset --model runs/quickstart/model/model --out runs/my-clt
    TrainTranscoder {
        /// The canonical dataset directory (cells.parquet + timeseries/).
        #[arg(long)]
        data: PathBuf,
        /// The directory train-model wrote.
        #[arg(long)]
        model: PathBuf,
        /// Output directory: checkpoint, metrics.json and the circuit-tracer export; a rerun
        /// resumes from its checkpoint.
        #[arg(long)]
        out: PathBuf,
        /// TOML settings in the form of a pipeline's [transcoder] table (defaults: `voltlens defaults`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seeds the activation streams (which windows, in which order).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Write a model's activations (resid_mid, mlp_out per layer) on training cells to a
    /// safetensors cache, the format the PyTorch reference benchmark reads.
    ///
    /// Example: voltlens cache-activations --data DIR --model DIR --out acts.safetensors --tokens 100000
    CacheActivations {
        /// The canonical dataset directory (cells.parquet + timeseries/).
        #[arg(long)]
        data: PathBuf,
        /// The directory train-model wrote.
        #[arg(long)]
        model: PathBuf,
        /// The safetensors file to write.
        #[arg(long)]
        out: PathBuf,
        /// Steps (tokens) to cache, drawn from windows of the training cells.
        #[arg(long, default_value_t = 100_000)]
        tokens: usize,
        /// Seeds which windows are drawn.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Import a transcoder in circuit-tracer's layout, trained by another tool or exported by
    /// VoltLens, as a transcoder folder that record, circuits and report take (OUT/circuit-tracer/).
    ///
    /// Reads a CLT (W_enc_{l}.safetensors with W_enc_{l} [F, d], b_enc_{l}, b_dec_{l}, threshold_{l}
    /// for JumpReLU, W_skip_{l}; W_dec_{l}.safetensors with W_dec_{l} [F, L-l, d]) or a transcoder
    /// set (layer_{l}.safetensors), with or without circuit-tracer's config.yaml; f16 and bf16 are
    /// widened to f32. The transcoder must read resid_mid and write mlp_out. With --eval, also
    /// reports FVU and L0 per layer on a cache-activations file, in file order (OUT/eval.json).
    ///
    /// Example: voltlens import-clt --from my-clt/ --out runs/imported-clt --eval acts.safetensors
    ImportClt {
        /// The folder in circuit-tracer's layout.
        #[arg(long)]
        from: PathBuf,
        /// Output transcoder folder (what train-transcoder writes).
        #[arg(long)]
        out: PathBuf,
        /// A `voltlens cache-activations` file to score the transcoder on.
        #[arg(long)]
        eval: Option<PathBuf>,
    },
    /// Write a canonical dataset in another tool's layout.
    ///
    /// battdat: battery-data-toolkit's Parquet layout, OUT/<cell_id>/raw_data.parquet with battdat's
    /// battery_metadata and table_metadata (its RawData columns, ours as extra_columns), state
    /// `resting` written as battdat's `hold`. `voltlens ingest OUT` reads it back.
    ///
    /// Example: voltlens export --format battdat --data runs/quickstart/data/dataset --out exports/battdat
    Export {
        /// The layout to write.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The canonical dataset directory (cells.parquet + timeseries/).
        #[arg(long)]
        data: PathBuf,
        /// Output folder, built beside it and swapped in; a non-empty one VoltLens did not write
        /// is refused.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train many transcoders over a grid (variant, activation function, features, λ) on one activation cache that
    /// every run reads in the same order; judge each as train-transcoder does (FVU, L0, dead
    /// features, replacement fidelity) and write pareto.csv, pareto.json and Pareto PNGs. A rerun
    /// skips finished runs.
    ///
    /// Settings: a TOML file in the form of a pipeline's [sweep] table: tokens, eval_tokens, a
    /// [base] table of transcoder settings, and [[grid]] tables of lists (variants, activations,
    /// features, lambdas). See pipelines/sweep-dev.toml.
    ///
    /// Example: voltlens sweep --data runs/quickstart/data/dataset --model runs/quickstart/model/model --config sweep.toml --out runs/my-sweep
    Sweep {
        /// The canonical dataset directory (cells.parquet + timeseries/).
        #[arg(long)]
        data: PathBuf,
        /// The directory train-model wrote.
        #[arg(long)]
        model: PathBuf,
        /// Output directory: one folder per run, pareto.csv/json and the PNGs; a rerun skips
        /// finished runs.
        #[arg(long)]
        out: PathBuf,
        /// TOML settings in the form of a pipeline's [sweep] table.
        #[arg(long)]
        config: PathBuf,
        /// Seeds the activation streams (the cache every run reads in the same order).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Record every step's feature activations (model + transcoder, streamed) as Parquet.
    ///
    /// Example: voltlens record --data DIR --model DIR --transcoder runs/my-clt --out runs/my-record
    Record {
        /// The canonical dataset directory (cells.parquet + timeseries/).
        #[arg(long)]
        data: PathBuf,
        /// The directory train-model (or import-model) wrote.
        #[arg(long)]
        model: PathBuf,
        /// A train-transcoder output directory.
        #[arg(long)]
        transcoder: PathBuf,
        /// Output directory of the record (Parquet, one file per cell).
        #[arg(long)]
        out: PathBuf,
        /// Activation rows held in memory before a Parquet row group is written.
        #[arg(long)]
        max_buffer_rows: Option<usize>,
        /// Where the model and the transcoder's encoder run: cpu, cuda (build with --features
        /// cuda) or wgpu (--features wgpu).
        #[arg(long, default_value = "cpu")]
        device: crate::model::DeviceChoice,
    },
    /// Mine recorded activations: density, histograms, exact top-k windows (at most one per cycle
    /// and two per cell), quantile examples, and with --data/--model/--transcoder each feature's
    /// output effect (output_effect_mv: predicted-voltage change in mV when it is ablated, mean
    /// over its top 4 windows' peak steps). Reads the record a cell at a time.
    ///
    /// Example: voltlens mine --record runs/my-record --out runs/my-mine
    ///          --data DIR --model runs/my-model --transcoder runs/my-clt
    Mine {
        /// The directory `voltlens record` wrote.
        #[arg(long)]
        record: PathBuf,
        /// Output directory (mined.json and tables).
        #[arg(long)]
        out: PathBuf,
        /// The dataset the record was made over (for the output effect).
        #[arg(long, requires_all = ["model", "transcoder"])]
        data: Option<PathBuf>,
        /// The model the record was made with.
        #[arg(long, requires = "data")]
        model: Option<PathBuf>,
        /// The train-transcoder output directory the record was made with.
        #[arg(long, requires = "data")]
        transcoder: Option<PathBuf>,
        /// Where the model runs for the output effect: cpu, cuda (build with --features cuda) or
        /// wgpu (--features wgpu), with the transcoder's encoder; its sparse decoding runs on the CPU.
        #[arg(long, default_value = "cpu")]
        device: crate::model::DeviceChoice,
        /// Output effects for only the N live features that `voltlens label --sample N` labels
        /// (the same draw, both seeds at their default; a pipeline's `[label] sample` does this
        /// by itself): a large dictionary's every feature costs hours.
        #[arg(long, value_name = "N", requires = "data")]
        effect_sample: Option<usize>,
    },
    /// Label features automatically against physical covariates, scored on held-out cells;
    /// or, with --check, re-score an existing run's accepted labels on another dataset.
    ///
    /// Example: voltlens label --data DIR --record runs/my-record --out runs/my-labels
    ///
    /// Labels that travel: record the same model + transcoder over new cells, then
    ///   voltlens label --check runs/my-labels --data NEW_DATA --record runs/new-record --out runs/new-check
    /// writes check.parquet/.csv: each accepted label's AUROC (detectors, yes/no or graded) or
    /// Spearman (trackers) on every new cell, its shift-null p (fitted and empirical), BH q, and
    /// `still_holds` when the acceptance thresholds (firing steps, strength, q) pass there too.
    Label {
        /// The canonical dataset the record was made over (`voltlens ingest` / `synth` output).
        #[arg(long)]
        data: PathBuf,
        /// A `voltlens record` folder over those cells (activations.parquet, covariates.parquet).
        #[arg(long)]
        record: PathBuf,
        /// Output folder, created if needed: labels.parquet/.csv/.json, codings.json,
        /// protocol_effects.csv, split.csv (which cells were explain / test) (with --check:
        /// check.parquet/.csv).
        #[arg(long)]
        out: PathBuf,
        /// A TOML file of labeller settings (explain_fraction, n_shifts, n_bootstrap, thresholds…).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A label run's folder (or its labels.json, with codings.json beside it) whose accepted
        /// labels are re-scored on --data/--record instead of labelling.
        #[arg(long, value_name = "LABELS")]
        check: Option<PathBuf>,
        /// Label N of the live features, drawn by the seed from each layer in proportion to its
        /// live features (the settings' `sample`): a large dictionary's coverage in minutes
        /// (`voltlens mine --effect-sample N` gives the same features their output effects).
        #[arg(long, value_name = "N", conflicts_with = "check")]
        sample: Option<usize>,
    },
    /// Redraw a finished run's report (PNG cards, overview figures, index.html) from its tables.
    ///
    /// Example: voltlens report runs/quickstart --features L0_F12,L1_F3
    Report {
        /// The run directory (runs/<pipeline name>).
        run: PathBuf,
        /// Output folder [default: reports/<run name> beside the runs folder]. An existing
        /// folder is replaced only if VoltLens wrote it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Redraw only these cards of an existing report, e.g. L2_F17,L0_F3.
        #[arg(long, conflicts_with = "subset")]
        features: Option<String>,
        /// Draw cards and pages for only these features; the index and overview still cover
        /// every live feature (a small example report).
        #[arg(long)]
        subset: Option<String>,
        /// Also explain a stretch of a cell, CELL:FROM:TO (times as `voltlens explain` reads
        /// them, e.g. chen2020-11-05-drive:1800:1h), into explain/<stretch>/, linked from the
        /// index; repeat for more. The 100 most active features each, as `[[report.explain]]`.
        #[arg(long, value_name = "CELL:FROM:TO")]
        explain: Vec<String>,
    },
    /// Which features are most active on a stretch of one cell, with their labels: a table
    /// (explain.parquet and .csv), a page (index.html) and a PNG of the stretch with the top
    /// features' activations stacked under voltage and current. Ranked by the mean activation
    /// over the stretch as a share of the feature's largest activation in the run.
    ///
    /// Example: voltlens explain --run runs/quickstart --cell chen2020-11-05-drive --from 3600 --to 2h
    Explain {
        /// The run directory (runs/<pipeline name>), with its record and label stages done.
        #[arg(long)]
        run: PathBuf,
        /// The cell's id, as in the dataset's cells.parquet (its file name without extension).
        #[arg(long)]
        cell: String,
        /// Start of the stretch in the cell's test time: seconds, or with a unit (90s, 45min, 1.5h).
        #[arg(long)]
        from: String,
        /// End of the stretch, as --from.
        #[arg(long)]
        to: String,
        /// Rows of the table.
        #[arg(long, default_value_t = 100)]
        top: usize,
        /// Output folder (default: <run>/explain/<cell>_<from>-<to>s).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Circuit analysis on a trained model + transcoder: pullbacks, de-embeddings, attributions,
    /// computational paths, attribution graphs, interventions, MLSAE banding and alignment.
    Circuits {
        #[command(subcommand)]
        what: CircuitsCommand,
    },
    /// Measure throughput and memory (benchmarks print figures; they assert nothing).
    ///
    /// Example: voltlens bench data --maccor ../shared/datasets/cyclers/PreDiag_000412_00008Fshort.022
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Ingest rows/s on a real Maccor file and a large synthetic CSV, its peak memory, synth rows/s.
    ///
    /// Example: voltlens bench data --rows 1000000
    Data {
        /// A Maccor export to time (e.g. the largest shared one).
        #[arg(long)]
        maccor: Option<PathBuf>,
        /// Rows of the generated CSV.
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        /// Scratch directory, removed afterwards; a non-empty one VoltLens did not write is refused.
        #[arg(long, default_value = "runs/bench-scratch")]
        work_dir: PathBuf,
    },
    /// Training and inference tokens/s of the battery model at the quickstart and dev sizes.
    ///
    /// Example: voltlens bench model --steps 20
    Model {
        /// cpu, cuda or wgpu (a GPU needs a build with --features cuda or --features wgpu).
        #[arg(long, default_value = "cpu")]
        device: crate::model::DeviceChoice,
        /// The burn CPU backend: flex (what every stage uses), ndarray or candle (these need a
        /// build with --features ndarray / candle).
        #[arg(long, default_value = "flex")]
        backend: crate::model::backend::CpuBackend,
        /// Timed optimiser steps per size (with --forward: timed passes per shape, at most 3).
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Instead: forward passes of one window on --device, tokens/s and peak host memory, for each
        /// LAYERSxD_MODELxCONTEXT shape (heads of 64 dimensions, MLP 4·d_model).
        /// Example: --forward 3x64x128,12x256x2048,24x512x8192
        #[arg(long, value_delimiter = ',')]
        forward: Vec<String>,
    },
    /// Transcoder training tokens/s and peak memory of either trainer, on synthetic activations
    /// of a given shape (the reference's recipe). Example, the LBLM study's shape on a GPU:
    /// voltlens bench transcoder --device cuda --layers 24 --d-model 128 --features 8192 --activation topk
    Transcoder {
        /// cpu, cuda or wgpu (a GPU needs a build with --features cuda or --features wgpu).
        #[arg(long, default_value = "cpu")]
        device: crate::model::DeviceChoice,
        /// sparse (hand-written, CPU only), autodiff (burn), or both [default: both on cpu,
        /// autodiff on a GPU or with --decoding gather|dense].
        #[arg(long, value_parser = ["sparse", "autodiff", "both"])]
        trainer: Option<String>,
        /// Layers of the synthetic activations (one encoder each).
        #[arg(long, default_value_t = 4)]
        layers: usize,
        /// Width of each layer's activations.
        #[arg(long, default_value_t = 64)]
        d_model: usize,
        /// Features per layer, one run each.
        #[arg(long, value_delimiter = ',', default_value = "1024")]
        features: Vec<usize>,
        /// relu (λ 1e-3) or topk.
        #[arg(long, default_value = "relu", value_parser = ["relu", "topk"])]
        activation: String,
        /// k of topk.
        #[arg(long, default_value_t = 32)]
        k: usize,
        /// Tokens per optimiser step.
        #[arg(long, default_value_t = 1024)]
        batch: usize,
        /// How the autodiff trainer decodes: auto, gather (only the active features' decoder
        /// rows) or dense (one product per decoder), to compare the two on a device.
        #[arg(long, default_value = "auto", value_parser = ["auto", "gather", "dense"])]
        decoding: String,
        /// Timed optimiser steps per run.
        #[arg(long, default_value_t = 20)]
        steps: u64,
        /// Synthetic tokens generated once and cycled.
        #[arg(long, default_value_t = 16_384)]
        pool: usize,
        /// Scratch directory for the runs' checkpoints, removed afterwards; a non-empty one
        /// VoltLens did not write is refused.
        #[arg(long, default_value = "runs/bench-scratch")]
        work_dir: PathBuf,
    },
    /// Seconds and peak memory of an attribution graph on the dev model shape (random weights,
    /// context 512) with a random CLT, over window lengths, feature counts and depths.
    ///
    /// Example: voltlens bench graph --windows 64,256 --features 512
    ///
    /// Example: voltlens bench graph --layers 3,4,5 --windows 64 --backward sweep --feature-counts
    Graph {
        /// Blocks of the model, one timing set per depth.
        #[arg(long, value_delimiter = ',', default_value = "3")]
        layers: Vec<usize>,
        /// How targets are carried back: auto (by depth: every path of head choices while there
        /// are at most 3,125, else one sweep per target), paths or sweep, to compare the two.
        #[arg(long, default_value = "auto", value_parser = ["auto", "paths", "sweep"])]
        backward: String,
        /// Window lengths (steps).
        #[arg(long, value_delimiter = ',', default_value = "64,128,256,512")]
        windows: Vec<usize>,
        /// Features per layer for the window sweep.
        #[arg(long, default_value_t = 512)]
        features: usize,
        /// Further feature counts, timed at the longest window (none: `--feature-counts` alone).
        #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "256,1024")]
        feature_counts: Vec<usize>,
        /// Active features per layer and step.
        #[arg(long, default_value_t = 20)]
        l0: usize,
    },
}

/// One prediction to explain: a step of a cell, run through model and transcoder.
#[derive(Args)]
struct StepArgs {
    /// The dataset directory.
    #[arg(long)]
    data: PathBuf,
    /// The model directory.
    #[arg(long)]
    model: PathBuf,
    /// A train-transcoder output directory (or a pipeline's runs/<name>/transcoder).
    #[arg(long)]
    transcoder: PathBuf,
    /// The cell's id, as in the dataset's cells.parquet (its file name without extension).
    #[arg(long)]
    cell: String,
    /// The step whose next-voltage prediction is explained (0-based within the cell).
    #[arg(long)]
    step: usize,
    /// Steps of history ending at --step (at most the model's context).
    #[arg(long, default_value_t = 128)]
    window: usize,
}

impl StepArgs {
    fn sources(&self) -> crate::circuits::GraphSources {
        crate::circuits::GraphSources { dataset: self.data.clone(), model: self.model.clone(), transcoder: self.transcoder.clone() }
    }
}

#[derive(Args)]
struct FeatureArg {
    /// The feature, as L{layer}_F{feature} (e.g. L1_F17).
    #[arg(long)]
    feature: String,
    /// A train-transcoder output directory (or a pipeline's runs/<name>/transcoder).
    #[arg(long)]
    transcoder: PathBuf,
}

/// What an intervention acts on.
#[derive(Args)]
struct InterventionArgs {
    #[command(flatten)]
    feature: FeatureArg,
    /// The dataset directory.
    #[arg(long)]
    data: PathBuf,
    /// The model directory.
    #[arg(long)]
    model: PathBuf,
    /// The cell to run.
    #[arg(long)]
    cell: String,
    /// Write a PNG of baseline vs intervened voltage and the difference.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Where the model runs: cpu, cuda (build with --features cuda) or wgpu (--features wgpu), with
    /// the transcoder's encoder; its sparse decoding runs on the CPU.
    #[arg(long, default_value = "cpu")]
    device: crate::model::DeviceChoice,
}

#[derive(Subcommand)]
enum CircuitsCommand {
    /// Which earlier features drive this one through the residual stream (direct path, norms
    /// frozen), and which input channels drive it through the embedding.
    ///
    /// Example: voltlens circuits pullback --feature L1_F17 --transcoder runs/quickstart/transcoder --model runs/quickstart/model/model
    Pullback {
        #[command(flatten)]
        feature: FeatureArg,
        /// The model directory (for the de-embedding).
        #[arg(long)]
        model: PathBuf,
        /// Rows of the pullback table.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// Run the replacement model on a cell with the feature scaled (0 = ablated) and report the
    /// change in predicted voltage; draws it with --plot.
    ///
    /// Example: voltlens circuits steer --feature L0_F116 --scale 2 --cell chen2020-11-05-drive --data runs/quickstart/data/dataset --model runs/quickstart/model/model --transcoder runs/quickstart/transcoder
    Steer {
        #[command(flatten)]
        on: InterventionArgs,
        /// Multiplier of the feature's activation.
        #[arg(long, default_value_t = 0.0)]
        scale: f32,
    },
    /// `steer` with scale 0: the predicted voltage with the feature switched off.
    ///
    /// Example: voltlens circuits ablate --feature L0_F116 --cell chen2020-11-05-drive --data runs/quickstart/data/dataset --model runs/quickstart/model/model --transcoder runs/quickstart/transcoder
    Ablate {
        #[command(flatten)]
        on: InterventionArgs,
    },
    /// Attribution graph of one prediction: active features at every step of the window, error
    /// and input nodes, edges through the replacement model with attention patterns and norm
    /// scales frozen, pruned by influence. Writes circuit-tracer JSON, graph-metadata.json, a
    /// summary and a PNG into --out.
    ///
    /// Example: voltlens circuits graph --cell chen2020-11-05-drive --step 400 --data runs/quickstart/data/dataset --model runs/quickstart/model/model --transcoder runs/quickstart/transcoder --labels runs/quickstart/label/labels.json --out runs/quickstart/graphs
    Graph {
        #[command(flatten)]
        at: StepArgs,
        /// Keep nodes holding this share of influence on the output.
        #[arg(long, default_value_t = 0.8)]
        node_threshold: f64,
        /// Keep edges holding this share of edge influence.
        #[arg(long, default_value_t = 0.98)]
        edge_threshold: f64,
        /// A label stage's labels.json: feature nodes carry their labels.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Output folder for the graph's files.
        #[arg(long)]
        out: PathBuf,
    },
    /// What drives one feature's pre-activation at one step: every active feature at this and
    /// earlier steps (activation × pullback, plus what reaches it through attention), error and
    /// input nodes, with attention patterns and norm scales frozen; the largest first.
    ///
    /// Example: voltlens circuits attribute --feature L1_F17 --cell chen2020-11-05-drive --step 400 --data runs/quickstart/data/dataset --model runs/quickstart/model/model --transcoder runs/quickstart/transcoder
    Attribute {
        #[command(flatten)]
        at: StepArgs,
        /// The feature, as L{layer}_F{feature} (e.g. L1_F17).
        #[arg(long)]
        feature: String,
        /// Rows of the table.
        #[arg(long, default_value_t = 20)]
        top: usize,
    },
    /// The strongest computational paths of two and three nodes into one feature's pre-activation
    /// at one step (Dunefsky et al.'s greedy search): earlier features or input channels, at any
    /// step of the window, → (a feature →) the feature, each with its contribution.
    ///
    /// Example: voltlens circuits paths --feature L1_F17 --cell chen2020-11-05-drive --step 400 --data runs/quickstart/data/dataset --model runs/quickstart/model/model --transcoder runs/quickstart/transcoder
    Paths {
        #[command(flatten)]
        at: StepArgs,
        /// The feature, as L{layer}_F{feature} (e.g. L1_F17).
        #[arg(long)]
        feature: String,
        /// Sources kept at each step of the search.
        #[arg(long, default_value_t = 5)]
        width: usize,
        /// Paths listed.
        #[arg(long, default_value_t = 15)]
        top: usize,
    },
    /// Multi-layer SAE: the layer each feature reads from and writes to (banding), and whether the
    /// model carries a feature's decoder write at layer l onto its decoder at later layers (causal
    /// alignment: cosine and strength of the model's Jacobian-vector product, by central finite
    /// differences, per trigger layer).
    /// Writes mlsae_banding.png, mlsae_alignment.png, mlsae.json and two CSV tables.
    ///
    /// Example: voltlens circuits mlsae --transcoder runs/my-mlsae --model runs/quickstart/model/model --data runs/quickstart/data/dataset --out runs/my-mlsae/analysis
    Mlsae {
        /// A train-transcoder output directory of an MLSAE (variant mlsae).
        #[arg(long)]
        transcoder: PathBuf,
        /// The model directory.
        #[arg(long)]
        model: PathBuf,
        /// The dataset directory whose windows the features are measured on.
        #[arg(long)]
        data: PathBuf,
        /// Causal alignment for this many of the most active features.
        #[arg(long, default_value_t = 16)]
        top: usize,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Where the model runs: cpu, cuda (build with --features cuda) or wgpu (--features wgpu).
        #[arg(long, default_value = "cpu")]
        device: crate::model::DeviceChoice,
    },
}

/// The [arch] and [train] tables of a train-model settings file.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct TrainModelFile {
    arch: crate::model::ModelConfig,
    train: crate::model::TrainConfig,
}

#[derive(Args)]
struct RunArgs {
    /// Redo this stage and everything after it.
    #[arg(long)]
    from: Option<String>,
    /// Redo every stage.
    #[arg(long)]
    force: bool,
    /// Where runs go (default: the pipeline's runs_dir, normally runs/).
    #[arg(long)]
    runs_dir: Option<PathBuf>,
    /// Run every stage whose table names no device on this one (cpu, cuda or wgpu; the pipeline's
    /// top-level `device` otherwise): model training and evaluation, transcoder, sweep, record,
    /// mine's output effects and circuits' MLSAE analyses. Stages whose outputs were made on
    /// another device run again.
    #[arg(long)]
    device: Option<crate::model::DeviceChoice>,
}

impl RunArgs {
    fn options(self) -> RunOptions {
        RunOptions { from: self.from, force: self.force, runs_dir: self.runs_dir, device: self.device }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet);
    crate::progress::set_quiet(cli.quiet);
    match execute(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    // cubecl (the GPU backend) logs every kernel it compiles or tunes at info.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},cubecl_runtime=warn,cubecl_cuda=warn,cubecl_wgpu=warn,wgpu_core=warn,wgpu_hal=warn,naga=warn")));
    // Colour codes only on a terminal: a batch job's log file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

fn execute(command: Command) -> Result<ExitCode> {
    match command {
        Command::Ingest { paths, out, format, column_map, nominal_capacity, time_tolerance, upper_cutoff, lower_cutoff, skip_unreadable } => {
            let opts = IngestOptions {
                format,
                column_map,
                nominal_capacity_ah: nominal_capacity,
                time_tolerance_s: time_tolerance,
                upper_cutoff_v: upper_cutoff,
                lower_cutoff_v: lower_cutoff,
                skip_unreadable,
                ..IngestOptions::default()
            };
            let cells = crate::data::ingest::ingest(&paths, &out, &opts)?;
            let rows: u64 = cells.iter().map(|c| c.rows).sum();
            println!("ingested {} cells, {rows} rows into {}", cells.len(), out.display());
        }
        Command::Synth { cells, out, seed, config } => {
            let mut cfg: SynthConfig = read_settings(config.as_deref())?;
            cfg.cells = cells.unwrap_or(cfg.cells);
            cfg.seed = seed.unwrap_or(cfg.seed);
            let infos = crate::data::ingest::synthesize(&cfg, &out)?;
            let rows: u64 = infos.iter().map(|c| c.rows).sum();
            println!("generated {} cells, {rows} rows into {}", infos.len(), out.display());
        }
        Command::Inspect { dir, plot, plot_out, json } => inspect(&dir, plot, &plot_out, json)?,
        Command::Defaults => print!("{}", crate::pipeline::config::defaults_toml()?),
        Command::Schema { write } => match write {
            Some(dir) => {
                crate::data::schema::write_schema_files(&dir)?;
                println!("wrote {}/timeseries.schema.json and cells.schema.json", dir.display());
            }
            None => {
                use crate::data::schema::{describe, tables};
                let both: Vec<_> = tables().iter().map(|(name, columns, note)| describe(name, columns, note)).collect();
                println!("{}", serde_json::to_string_pretty(&both).expect("serialisable"));
            }
        },
        Command::Run { file, run } => {
            let outcomes = crate::pipeline::run_file(&file, &run.options())?;
            for (stage, outcome) in outcomes {
                match outcome {
                    StageOutcome::Ran { seconds } => println!("{stage:<12} ran ({seconds} s)"),
                    StageOutcome::Skipped => println!("{stage:<12} up to date, skipped"),
                }
            }
        }
        Command::Bench { what: BenchCommand::Data { maccor, rows, work_dir } } => {
            crate::bench::print(&crate::bench::bench_data(maccor.as_deref(), rows, &work_dir)?);
        }
        Command::TrainModel { data, out, config, steps, device, seed } => {
            let mut settings: TrainModelFile = read_settings(config.as_deref())?;
            settings.train.steps = steps.unwrap_or(settings.train.steps);
            settings.train.device = device.unwrap_or(settings.train.device);
            settings.train.seed = seed.unwrap_or(settings.train.seed);
            let summary = crate::model::train_model(&data, &settings.arch, &settings.train, &out)?;
            println!("{}", serde_json::to_string_pretty(&summary).expect("serialisable"));
        }
        Command::EvalModel { data, model, out, device, cells } => {
            let mut cfg = crate::model::EvalConfig::default();
            cfg.device = device.unwrap_or(cfg.device);
            cfg.cell_ids = cells;
            let metrics = crate::model::eval_model(&data, &model, &out, &cfg)?;
            println!("{}", serde_json::to_string_pretty(&metrics.overall).expect("serialisable"));
            println!("wrote {}/metrics.json", out.display());
        }
        Command::Bench { what: BenchCommand::Transcoder { device, trainer, layers, d_model, features, activation, k, batch, decoding, steps, pool, work_dir } } => {
            use crate::transcoder::{autodiff::Decoding, Activation, Trainer, TranscoderConfig};
            let decoding = match decoding.as_str() {
                "gather" => Decoding::Gather,
                "dense" => Decoding::Dense,
                _ => Decoding::Auto,
            };
            let trainers = match (trainer.as_deref(), device) {
                (Some("sparse"), _) => vec![Trainer::Sparse],
                (Some("autodiff"), _) => vec![Trainer::Autodiff],
                (None, d) if d != crate::model::DeviceChoice::Cpu || decoding != Decoding::Auto => vec![Trainer::Autodiff],
                _ => vec![Trainer::Sparse, Trainer::Autodiff],
            };
            let activation = if activation == "topk" { Activation::TopK { k } } else { Activation::Relu };
            crate::io::fresh_owned_dir(&work_dir)?;
            let runs = || -> Result<()> {
                println!("{:<9} {:<5} {:>6} {:>7} {:>8} {:>6} {:>12} {:>9} {:>7}", "trainer", "dev", "layers", "d_model", "features", "batch", "tokens/s", "peak MB", "FVU");
                for &f in &features {
                    for &t in &trainers {
                        let cfg = TranscoderConfig { features: f, activation, batch, steps, decoding, ..TranscoderConfig::default() };
                        let b = crate::transcoder::bench::bench_trainer(&cfg, t, device, layers, d_model, pool, &work_dir)?;
                        let peak = b.peak_rss_mb.map_or("-".to_owned(), |m| format!("{m:.0}"));
                        println!("{:<9} {:<5} {:>6} {:>7} {:>8} {:>6} {:>12.0} {:>9} {:>7.3}", format!("{t:?}").to_lowercase(), format!("{device:?}").to_lowercase(), layers, d_model, f, batch, b.tokens_per_s, peak, b.fvu);
                    }
                }
                Ok(())
            };
            // The scratch folder goes whether or not the runs succeeded (it is ours: made just above).
            let outcome = runs();
            std::fs::remove_dir_all(&work_dir).map_err(|e| Error::io(&work_dir, e))?;
            outcome?;
        }
        Command::Bench { what: BenchCommand::Graph { layers, backward, windows, features, feature_counts, l0 } } => {
            use crate::circuits::Backward;
            let backward = match backward.as_str() {
                "paths" => Some(Backward::Paths),
                "sweep" => Some(Backward::Sweep),
                _ => None,
            };
            let longest = windows.iter().copied().max().unwrap_or(512);
            let shapes: Vec<(usize, usize)> = windows.iter().map(|&w| (w, features)).chain(feature_counts.iter().map(|&f| (longest, f))).collect();
            let runs = layers.iter().flat_map(|&l| shapes.iter().map(move |&(w, f)| (l, w, f)));
            let rows = runs.map(|(l, window, f)| crate::circuits::bench::bench_graph(l, window, f, l0, backward)).collect::<Result<Vec<_>>>()?;
            print!("{}", crate::circuits::bench::format_graph_bench(&rows));
        }
        Command::Bench { what: BenchCommand::Model { forward, steps, device, .. } } if !forward.is_empty() => {
            println!("{:>6} {:>7} {:>7} {:>12} {:>10} {:>10} {:>9}", "layers", "d_model", "context", "parameters", "tokens/s", "s/pass", "peak MB");
            for shape in &forward {
                let dims: Vec<usize> = shape.split('x').map(|v| v.trim().parse()).collect::<std::result::Result<_, _>>()
                    .map_err(|_| Error::Config(format!("--forward {shape}: expected LAYERSxD_MODELxCONTEXT, e.g. 24x512x8192")))?;
                let [layers, d_model, context] = dims[..] else {
                    return Err(Error::Config(format!("--forward {shape}: expected LAYERSxD_MODELxCONTEXT, e.g. 24x512x8192")));
                };
                let b = crate::model::bench::bench_forward(&crate::model::bench::scale_config(layers, d_model, context), steps.min(3), device)?;
                println!("{:>6} {:>7} {:>7} {:>12} {:>10.0} {:>10.2} {:>9.0}", b.layers, b.d_model, b.context, b.parameters, b.tokens_per_s, b.seconds_per_pass, b.peak_rss_mb);
            }
        }
        Command::Bench { what: BenchCommand::Model { device, backend, steps, .. } } => {
            for (name, cfg) in [("quickstart", crate::model::ModelConfig::default()), ("dev", crate::model::ModelConfig::dev())] {
                let b = crate::model::bench(&cfg, 32, steps, device, backend)?;
                println!("{name:<12} {}", serde_json::to_string(&b).expect("serialisable"));
            }
        }
        Command::ImportModel { weights, config, out, check, tolerance, rel_tolerance, data, seed } => {
            let request = crate::model::ImportRequest {
                weights: &weights,
                arch: &config,
                out: &out,
                check: check.as_deref(),
                tolerance: Tolerance { volts: tolerance, relative: rel_tolerance },
                dataset: data.as_deref(),
                seed,
            };
            let summary = crate::model::import_model(&request)?;
            println!("{}", serde_json::to_string_pretty(&summary).expect("serialisable"));
        }
        Command::ExportModel { model, out } => {
            let summary = crate::model::export_model(&model, &out)?;
            println!("{}", serde_json::to_string_pretty(&summary).expect("serialisable"));
        }
        Command::TrainTranscoder { data, model, out, config, seed } => {
            let cfg: crate::transcoder::stage::TranscoderStageConfig = read_settings(config.as_deref())?;
            let summary = crate::transcoder::stage::run_transcoder_stage(&data, &model, &cfg, seed, &out)?;
            println!("{}", serde_json::to_string_pretty(&summary).expect("serialisable"));
        }
        Command::CacheActivations { data, model, out, tokens, seed } => {
            let [n, layers, d] = crate::transcoder::online::cache_activations(&data, &model, &out, tokens, seed)?;
            println!("wrote {} ({n} tokens × {layers} layers × {d})", out.display());
        }
        Command::ImportClt { from, out, eval } => {
            let summary = crate::transcoder::import::import_transcoder(&from, &out, eval.as_deref())?;
            println!("{}", serde_json::to_string_pretty(&summary).expect("serialisable"));
        }
        Command::Export { format: ExportFormat::Battdat, data, out } => {
            let files = crate::data::formats::export_battdat(&data, &out)?;
            println!("wrote {} battdat cells into {}", files.len(), out.display());
        }
        Command::Sweep { data, model, out, config, seed } => {
            let cfg: crate::transcoder::sweep::SweepConfig = read_settings(Some(&config))?;
            let summary = crate::transcoder::sweep::run_sweep(&data, &model, &cfg, seed, &out)?;
            print!("{}", crate::transcoder::sweep::format_table(&summary.rows));
            println!("{} runs trained, {} already done; wrote {}/pareto.csv and {}", summary.trained, summary.skipped, out.display(), summary.figures.join(", "));
        }
        Command::Record { data, model, transcoder, out, max_buffer_rows, device } => {
            let mut cfg = crate::record::RecordConfig { device, ..Default::default() };
            cfg.max_buffer_rows = max_buffer_rows.unwrap_or(cfg.max_buffer_rows);
            let summary = crate::record::record(&data, &model, crate::record::TranscoderInput::Dir(&transcoder), &cfg, &out)?;
            println!("{}", serde_json::to_string_pretty(&summary).expect("serialisable"));
        }
        Command::Mine { record, out, data, model, transcoder, device, effect_sample } => {
            let effect = data.zip(model).zip(transcoder).map(|((dataset, model), transcoder)| crate::mine::effect::EffectSources { dataset, model, transcoder });
            let cfg = crate::mine::MineConfig { device, effect_sample, ..Default::default() };
            let summary = crate::mine::stage::run_mine_stage(&record, &cfg, effect.as_ref(), &out)?;
            println!("{summary}");
        }
        Command::Label { data, record, out, config, check, sample } => {
            let mut cfg: crate::label::LabelConfig = read_settings(config.as_deref())?;
            cfg.sample = sample.or(cfg.sample);
            let summary = match check {
                Some(labels) => crate::label::check::check_labels(&labels, &data, &record, &cfg, &out)?,
                None => crate::label::stage::run_label_stage(&data, &record, &cfg, &out)?,
            };
            println!("{}", serde_json::to_string_pretty(&summary).expect("serialisable"));
        }
        Command::Report { run, out, features, subset, explain } => {
            let out = out.unwrap_or_else(|| crate::report::stage::report_dir(std::path::Path::new("reports"), &run));
            use crate::pipeline::stages::ReportScope;
            let scope = match (&features, &subset) {
                (Some(list), _) => ReportScope::Redraw(list),
                (None, Some(list)) => ReportScope::Subset(list),
                (None, None) => ReportScope::All,
            };
            let windows = explain.iter().map(|w| crate::report::explain::ExplainWindow::parse(w)).collect::<Result<Vec<_>>>()?;
            let summary = crate::pipeline::stages::report_from_run(&run, &out, scope, &["sweep", "circuits"], &windows)?;
            println!("wrote {} cards; open {}", summary.cards.len(), summary.dir.join("index.html").display());
        }
        Command::Explain { run, cell, from, to, top, out } => {
            use crate::report::explain::{explain_run, parse_seconds, ExplainWindow};
            let window = ExplainWindow { cell, from: parse_seconds(&from)?, to: parse_seconds(&to)?, top };
            let out = out.unwrap_or_else(|| run.join("explain").join(window.slug()));
            let (explanation, files) = explain_run(&run, &window, &out)?;
            for (k, f) in explanation.features.iter().take(10).enumerate() {
                println!("{:>3}. L{}_F{}  firing {:>5.1} %  mean/run max {:>5.1} %  {}", k + 1, f.layer, f.feature, 100.0 * f.firing, 100.0 * f.relative, f.label);
            }
            println!("{} features active on {} steps; wrote {}, {} and {}", explanation.features.len(), explanation.rows.len(), files.table.display(), files.page.display(), files.png.display());
        }
        Command::Circuits { what } => circuits(what)?,
        Command::Batch { files, run } => {
            let results = crate::pipeline::batch(&files, &run.options());
            println!("{:<40} {:<8} {:>8}  detail", "pipeline", "result", "seconds");
            let mut failed = 0;
            for (file, result, seconds) in &results {
                let (status, detail) = match result {
                    Ok(outcomes) => {
                        let ran = outcomes.iter().filter(|(_, o)| matches!(o, StageOutcome::Ran { .. })).count();
                        ("ok", format!("{ran} stages ran, {} skipped", outcomes.len() - ran))
                    }
                    Err(e) => {
                        failed += 1;
                        ("FAILED", e.to_string())
                    }
                };
                println!("{:<40} {status:<8} {seconds:>8.1}  {detail}", file.display());
            }
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn feature_id(arg: &FeatureArg) -> Result<(usize, usize)> {
    match crate::report::stage::parse_feature_ids(&arg.feature)?.as_slice() {
        [(layer, feature)] => Ok((*layer as usize, *feature as usize)),
        _ => Err(Error::Config(format!("--feature {}: give one feature like L1_F17", arg.feature))),
    }
}

fn circuits(what: CircuitsCommand) -> Result<()> {
    use crate::circuits;
    let load = |arg: &FeatureArg| crate::transcoder::import_circuit_tracer(&arg.transcoder.join("circuit-tracer"));
    match what {
        CircuitsCommand::Pullback { feature, model, top } => {
            let (layer, index) = feature_id(&feature)?;
            let tc = load(&feature)?;
            println!("Pullback of {} onto earlier features:\n{}", feature.feature, circuits::format_pullback(&circuits::pullback(&tc, layer, index, top)?));
            println!("De-embedding onto the input channels:\n{}", circuits::format_deembed(&circuits::deembed(&model, &tc, layer, index)?));
        }
        CircuitsCommand::Steer { on, scale } => intervene(&on, scale)?,
        CircuitsCommand::Ablate { on } => intervene(&on, 0.0)?,
        CircuitsCommand::Graph { at, node_threshold, edge_threshold, labels, out } => {
            let options = circuits::GraphOptions { node_threshold, edge_threshold };
            let graph = circuits::graph_for_cell(&at.sources(), &at.cell, at.step, at.window, &options)?;
            let files = circuits::write_graph(&graph, &out, labels.as_deref())?;
            let s = graph.scores;
            println!(
                "{} nodes ({} active features) → {} kept, {} edges; replacement {:.3} (pruned {:.3}), completeness {:.3} (pruned {:.3})",
                graph.total_nodes, graph.active_features, graph.nodes.len(), graph.edges.len(), s.replacement, s.pruned_replacement, s.completeness, s.pruned_completeness
            );
            println!("wrote {}, {} and {}", files.json.display(), files.summary.display(), files.png.display());
        }
        CircuitsCommand::Attribute { at, feature, top } => {
            let (layer, index) = feature_id(&FeatureArg { feature, transcoder: at.transcoder.clone() })?;
            let (loaded, tc, window) = circuits::graph::load_window(&at.sources(), &at.cell, at.step, at.window)?;
            let frozen = circuits::FrozenReplacement::new(&loaded.model, &tc, &window.inputs)?;
            let target = circuits::Target::Feature { layer, pos: frozen.seq() - 1, feature: index };
            let attribution = circuits::attribute(&frozen, target)?;
            print!("{}", circuits::format_attribution(&attribution, window.first_step, &window.channels, top));
        }
        CircuitsCommand::Paths { at, feature, width, top } => {
            let (layer, index) = feature_id(&FeatureArg { feature, transcoder: at.transcoder.clone() })?;
            let (loaded, tc, window) = circuits::graph::load_window(&at.sources(), &at.cell, at.step, at.window)?;
            let frozen = circuits::FrozenReplacement::new(&loaded.model, &tc, &window.inputs)?;
            let target = circuits::Target::Feature { layer, pos: frozen.seq() - 1, feature: index };
            let paths = circuits::greedy_paths(&frozen, target, width, top)?;
            println!("Paths into L{layer}_F{index} at step {} of cell {}:", at.step, at.cell);
            print!("{}", circuits::format_paths(&paths, window.first_step, &window.channels));
        }
        CircuitsCommand::Mlsae { transcoder, model, data, top, out, device } => {
            let sources = circuits::MlsaeSources { dataset: &data, model: &model, transcoder: &transcoder.join("circuit-tracer") };
            let analysis = circuits::analyse_mlsae(&sources, top, &out, device)?;
            print!("{}", circuits::format_mlsae(&analysis));
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

fn intervene(on: &InterventionArgs, scale: f32) -> Result<()> {
    let (layer, index) = feature_id(&on.feature)?;
    let tc_dir = on.feature.transcoder.join("circuit-tracer");
    let what = crate::circuits::Intervention {
        dataset_dir: &on.data,
        model_dir: &on.model,
        transcoder_dir: &tc_dir,
        layer,
        feature: index,
        cell_id: &on.cell,
        scale,
    };
    let report = crate::circuits::ablate_or_steer(what, on.device)?;
    println!("{}", crate::circuits::format_intervention(&report));
    if let Some(png) = &on.plot {
        crate::circuits::draw_intervention(&report, png)?;
        println!("wrote {}", png.display());
    }
    Ok(())
}

/// Settings from an optional TOML file; defaults when none is given.
fn read_settings<T: serde::de::DeserializeOwned + Default>(path: Option<&std::path::Path>) -> Result<T> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {}", path.display(), e.to_string().trim_end())))
}

fn inspect(dir: &std::path::Path, plot: Option<String>, plot_out: &std::path::Path, json: bool) -> Result<()> {
    let summaries = crate::data::inspect::inspect(dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summaries).expect("serialisable"));
    } else {
        println!("{}", crate::data::inspect::format_table(&summaries));
    }
    if let Some(cell) = plot {
        let cell = if cell.is_empty() { summaries.first().map(|s| s.cell_id.clone()).unwrap_or_default() } else { cell };
        let paths = crate::data::canonical::DatasetPaths::new(dir);
        let file = paths.cell_file(&cell);
        if !file.exists() {
            return Err(Error::Config(format!("no cell '{cell}' in {}", dir.display())));
        }
        let (_, data) = crate::data::canonical::read_cell(&file)?;
        crate::data::inspect::plot_cell(&data, plot_out)?;
        println!("wrote {}", plot_out.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command's `--help` teaches: each option says what it is, and each command that does
    /// something shows an example (a group such as `circuits` lists its own).
    #[test]
    fn every_option_has_help_and_every_command_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set() && !["help", "version"].contains(&a.get_id().as_str())) {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path}: --{} has no help", arg.get_id()));
                }
            }
            let about = cmd.get_long_about().or(cmd.get_about()).map(|s| s.to_string()).unwrap_or_default();
            if cmd.get_subcommands().next().is_none() && !about.contains("Example") && !path.ends_with(" help") {
                missing.push(format!("{path}: no example"));
            }
            cmd.get_subcommands().for_each(|sub| walk(sub, &path, missing));
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
