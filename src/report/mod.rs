//! Report stage (DESIGN §6): a folder someone can open and understand without reading code.
//!
//! `reports/<run>/` holds `index.html` (static, offline, sortable and filterable), one page and
//! one card per live feature in `features/L{layer}_F{feature}.html|png`, the attribution-graph
//! viewer `graph.html`, overview PNGs, `summary.md`, the features / examples / labels tables, and
//! `assets/` (the pages' own CSS and scripts). Everything is drawn from in-memory [`ReportInputs`], so a
//! report can be regenerated from a run's tables without recomputing anything upstream.
//!
//! Flow: [`Context`] (dataset-wide lookups, built once) → [`FeatureFacts`] per live feature (the
//! numbers a card shows, computed in parallel) → cards in parallel, overview figures, feature
//! pages and the graph viewer, index and Markdown → written into a temporary sibling folder and
//! renamed into place.

pub mod assets;
pub mod card;
pub mod explain;
pub(crate) mod charts;
pub mod feature_page;
pub mod graph_page;
pub mod html;
pub mod overview;
mod overview_weights;
mod png;
pub mod stage;
pub mod summary;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::Value;

use crate::data::canonical::Dataset;
use crate::data::schema::{Method, State};
use crate::label::candidates::{Candidate, CodedSteps, MAX_CODES, MISSING};
use crate::label::scoring::{ordinal_auroc, TrackerScale};
use crate::label::covariates::{Covariate, Covariates};
use crate::label::{split_cells, FeatureLabel, LabelConfig};
use crate::mine::{FeatureActivations, MinedFeature, MinedFeatures, SparseActivations};
use crate::transcoder::clt::Transcoder;
use crate::{Error, Result};

/// Pixel size of every feature card.
pub const CARD_SIZE: (u32, u32) = (1600, 2200);
/// Pixel size of a card's index thumbnail: voltage over current of the feature's two strongest
/// windows, without text (the index row beside it names the feature and its label), drawn at
/// twice the 248 × 124 px the index shows it at, for high-density screens. It was a crop of the
/// card shrunk three times, whose captions and ticks came out 4 px tall.
pub const THUMB_SIZE: (u32, u32) = (496, 248);
/// Co-firing partners listed per card.
const CO_FIRING_SHOWN: usize = 8;
/// Steps two features must share before their lift is listed: lift between rare features rests
/// on a handful of steps otherwise.
const CO_FIRING_MIN_SHARED: usize = 10;
/// Circular shifts drawn as the ROC null.
const ROC_NULL_SHIFTS: usize = 20;

/// Everything a report is drawn from; the lead's loader fills it from a run directory.
pub struct ReportInputs<'a> {
    /// The run's name (its directory's), for the page titles.
    pub run_name: String,
    pub dataset: &'a Dataset,
    /// The sparse activations the features were mined from (co-firing, per-step activation).
    pub acts: &'a SparseActivations,
    pub mined: &'a MinedFeatures,
    pub labels: &'a [FeatureLabel],
    /// Per cell, in dataset order (`Covariates::for_dataset`).
    pub covariates: &'a [Covariates],
    /// For decoder norms per target layer; cards say "no transcoder" without it.
    pub transcoder: Option<&'a Transcoder>,
    /// The model's embedding, loaded once, for each card's input-channel sensitivity.
    pub embedding: Option<&'a crate::circuits::Embedding>,
    pub model_metrics: Option<Value>,
    pub transcoder_metrics: Option<Value>,
    /// The run's configuration; a `label` object in it sets the explain/test split the ROC uses.
    pub run_config: Value,
    /// Computational paths into some features (those the circuits stage analysed), for their pages.
    pub paths: &'a [crate::circuits::paths::FeaturePaths],
    /// Stretches explained beside the report (`[[report.explain]]`), linked from the index.
    pub explained: &'a [explain::ExplainWindow],
}

/// What a report run wrote, and how long the cards took.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    pub dir: PathBuf,
    /// Card files drawn, in feature order.
    pub cards: Vec<PathBuf>,
    /// Features that fire at least once.
    pub live_features: usize,
    /// Live features with an accepted label.
    pub labelled: usize,
    /// Wall-clock seconds spent drawing cards (parallel).
    pub card_wall_s: f64,
    /// Mean single-thread milliseconds per card (facts + drawing), for extrapolation.
    pub card_ms_mean: f64,
}

/// File name of a feature's card.
pub fn card_file(layer: u32, feature: u32) -> String {
    format!("L{layer}_F{feature}.png")
}

/// Which live features get a card and a page.
#[derive(Debug, Clone, Copy)]
pub enum CardScope<'s> {
    /// Every live feature the label stage labelled: all of them, unless it labelled a sample
    /// (`[label] sample`), whose features then get the cards (a dictionary of 24 × 8,192
    /// features would take hours and gigabytes of cards).
    All,
    /// These only, in a whole report whose index and overview still cover every live feature
    /// (a small example report that says what the run says).
    Subset(&'s [(u32, u32)]),
    /// Redraw these cards in an existing report and leave the rest of it as it is.
    Redraw(&'s [(u32, u32)]),
}

/// Writes a report into `out_dir` (built in a temporary sibling, then swapped in; a non-empty
/// `out_dir` VoltLens did not write is refused), with cards and pages for the features `scope` names.
pub fn write_report(inputs: &ReportInputs, out_dir: &Path, scope: CardScope) -> Result<ReportSummary> {
    let ctx = Context::new(inputs)?;
    let live: Vec<usize> = (0..inputs.mined.features.len()).filter(|&i| inputs.mined.features[i].density > 0.0).collect();
    let indices = |ids: &[(u32, u32)]| ids.iter().map(|&(l, f)| ctx.index_of(l, f)).collect::<Result<Vec<usize>>>();
    let (described, carded) = match scope {
        CardScope::All => (live.clone(), live.iter().copied().filter(|&i| ctx.label(i).is_some()).collect()),
        CardScope::Subset(ids) => (live.clone(), indices(ids)?),
        CardScope::Redraw(ids) => (indices(ids)?, indices(ids)?),
    };
    let carded: HashSet<usize> = carded.into_iter().collect();
    let redraw = matches!(scope, CardScope::Redraw(_));
    let build_dir = if redraw {
        out_dir.to_path_buf()
    } else {
        crate::io::check_replaceable(out_dir)?; // before drawing anything
        crate::io::fresh_temp_dir(out_dir)?
    };
    let features_dir = build_dir.join("features");
    let thumbs_dir = features_dir.join("thumbs");
    std::fs::create_dir_all(&thumbs_dir).map_err(|e| Error::io(&thumbs_dir, e))?;

    let started = Instant::now();
    let drawn: Vec<(Option<PathBuf>, FeatureFacts, f64)> = described
        .par_iter()
        .map(|&i| {
            let t = Instant::now();
            let paged = carded.contains(&i);
            let facts = FeatureFacts::compute(&ctx, i, paged);
            let card = paged.then(|| features_dir.join(card_file(facts.layer, facts.feature)));
            if let Some(path) = &card {
                card::draw_card(&ctx, &facts, path)?;
            }
            Ok((card, facts, t.elapsed().as_secs_f64() * 1e3))
        })
        .collect::<Result<_>>()?;
    let card_wall_s = started.elapsed().as_secs_f64();
    let card_ms_mean = drawn.iter().filter(|d| d.0.is_some()).map(|d| d.2).sum::<f64>() / carded.len().max(1) as f64;
    let labelled = live.iter().filter(|&&i| ctx.label(i).is_some_and(|l| l.accepted)).count();
    let summary = ReportSummary {
        dir: out_dir.to_path_buf(),
        cards: drawn.iter().filter_map(|d| d.0.as_ref()).map(|p| out_dir.join("features").join(p.file_name().expect("card name"))).collect(),
        live_features: live.len(),
        labelled,
        card_wall_s,
        card_ms_mean,
    };
    if redraw {
        return Ok(summary);
    }

    let with_card: Vec<bool> = drawn.iter().map(|d| d.0.is_some()).collect();
    let facts: Vec<FeatureFacts> = drawn.into_iter().map(|d| d.1).collect();
    let figures = overview::draw_overview(&ctx, &facts, &build_dir)?;
    let run_name = &ctx.inputs.run_name;
    assets::write_assets(&build_dir)?;
    let graph = graph_page::read_graph(&build_dir)?;
    let paged: Vec<&FeatureFacts> = facts.iter().zip(&with_card).filter(|(_, &c)| c).map(|(f, _)| f).collect();
    let links = feature_page::PageLinks {
        order: paged.iter().map(|f| (f.layer, f.feature)).collect(),
        pages: paged.iter().map(|f| (f.layer, f.feature)).collect(),
        graph: graph.as_ref().map(feature_page::GraphNeighbours::from_graph).unwrap_or_default(),
    };
    paged.par_iter().try_for_each(|f| feature_page::write_feature_page(&ctx, f, &links, &features_dir))?;
    if let Some(graph) = &graph {
        graph_page::write_graph_page(graph, &links.pages, &build_dir)?;
    }
    let tables = build_dir.join("tables");
    crate::mine::tables::write_mined(&tables, inputs.mined)?;
    crate::label::tables::write_labels(&tables, inputs.labels)?;
    summary::write_summary(&ctx, &facts, &figures, &build_dir.join("summary.md"))?;
    html::write_index(&ctx, &facts, &links.pages, &figures, run_name, &build_dir.join("index.html"))?;
    crate::io::replace_dir(&build_dir, out_dir)?;
    Ok(summary)
}

/// Kinds of step a battery engineer names: CC/CV charge, CC discharge, pulse, rest.
fn step_type_name(state: State, method: Method) -> &'static str {
    match (method, state) {
        (Method::Rest, _) | (_, State::Resting) => "rest",
        (Method::Pulse, State::Charging) => "charge pulse",
        (Method::Pulse, _) => "discharge pulse",
        (Method::ConstantVoltage, State::Charging) => "CV charge",
        (Method::ConstantVoltage, _) => "CV discharge",
        (Method::ConstantCurrent, State::Charging) => "CC charge",
        (Method::ConstantCurrent, _) => "CC discharge",
        (Method::Other, State::Charging) => "other charge",
        (Method::Other, _) => "other discharge",
    }
}

/// Dataset-wide lookups shared by every card: built once, read in parallel.
pub struct Context<'a> {
    pub inputs: &'a ReportInputs<'a>,
    /// Covariates coded with the labeller's bins, to evaluate a label's predicate per step.
    coded: CodedSteps,
    by_id: HashMap<(u32, u32), usize>,
    label_of: HashMap<(u32, u32), usize>,
    /// Index into `inputs.acts.features` of each mined feature.
    acts_of: Vec<usize>,
    /// Cells the labeller held out; the ROC is drawn on these, like the scores in the header.
    test_cell: Vec<bool>,
    /// Step-type index per global step, and the names.
    step_type: Vec<u8>,
    pub step_type_names: Vec<&'static str>,
    step_type_counts: Vec<u64>,
    /// Protocol of each cell ("–" when unknown), and the distinct protocols.
    cell_protocol: Vec<usize>,
    pub protocols: Vec<String>,
    /// Mean and standard deviation of every covariate over all steps (NaN for categorical).
    cov_mean_sd: Vec<(f64, f64)>,
    /// The labeller's settings: the acceptance thresholds pages show beside the scores.
    pub label_cfg: LabelConfig,
}

impl<'a> Context<'a> {
    fn new(inputs: &'a ReportInputs<'a>) -> Result<Context<'a>> {
        let ds = inputs.dataset;
        if inputs.covariates.len() != ds.data.len() || inputs.acts.cell_rows.len() != ds.data.len() {
            return Err(Error::Config(format!(
                "report: dataset has {} cells, covariates {}, activations {}",
                ds.data.len(),
                inputs.covariates.len(),
                inputs.acts.cell_rows.len()
            )));
        }
        if let (Some(e), Some(tc)) = (inputs.embedding, inputs.transcoder) {
            e.check_width(tc.shape.d_model)?;
        }
        let label_cfg: LabelConfig = inputs.run_config.get("label").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
        let explain = split_cells(&ds.cells, label_cfg.explain_fraction, label_cfg.seed);
        let coded = CodedSteps::new(inputs.covariates, &explain);
        let by_id = inputs.mined.features.iter().enumerate().map(|(i, f)| ((f.layer, f.feature), i)).collect();
        let acts_by_id: HashMap<(u32, u32), usize> = inputs.acts.features.iter().enumerate().map(|(i, f)| ((f.layer, f.feature), i)).collect();
        let acts_of = inputs
            .mined
            .features
            .iter()
            .map(|f| acts_by_id.get(&(f.layer, f.feature)).copied().ok_or_else(|| Error::Config(format!("report: mined feature L{}_F{} has no activations", f.layer, f.feature))))
            .collect::<Result<_>>()?;
        let label_of = inputs.labels.iter().enumerate().map(|(i, l)| ((l.layer, l.feature), i)).collect();
        let mut step_type_names: Vec<&'static str> = Vec::new();
        let mut step_type = Vec::new();
        for cell in &ds.data {
            for (&s, &m) in cell.state.iter().zip(&cell.method) {
                let name = step_type_name(s, m);
                let k = step_type_names.iter().position(|n| *n == name).unwrap_or_else(|| {
                    step_type_names.push(name);
                    step_type_names.len() - 1
                });
                step_type.push(k as u8);
            }
        }
        let mut step_type_counts = vec![0u64; step_type_names.len()];
        step_type.iter().for_each(|&k| step_type_counts[k as usize] += 1);
        let names: Vec<String> = ds.cells.iter().map(|c| c.protocol.clone().unwrap_or_else(|| "–".into())).collect();
        let mut protocols = names.clone();
        protocols.sort();
        protocols.dedup();
        let cell_protocol = names.iter().map(|n| protocols.iter().position(|p| p == n).expect("listed")).collect();
        let cov_mean_sd = Covariate::ALL.iter().map(|&c| mean_sd(inputs.covariates, c)).collect();
        let test_cell = explain.iter().map(|&e| !e).collect();
        Ok(Context { inputs, coded, by_id, label_of, acts_of, test_cell, step_type, step_type_names, step_type_counts, cell_protocol, protocols, cov_mean_sd, label_cfg })
    }

    fn index_of(&self, layer: u32, feature: u32) -> Result<usize> {
        self.by_id.get(&(layer, feature)).copied().ok_or_else(|| Error::Config(format!("report: no feature L{layer}_F{feature} in this run")))
    }

    /// Features in the dictionary: the transcoder's size (the mined table lists only those that fired).
    pub fn dictionary_size(&self) -> usize {
        self.inputs.transcoder.map_or(self.inputs.mined.features.len(), |tc| tc.shape.features * tc.shape.encoders())
    }

    pub fn mined(&self, i: usize) -> &MinedFeature {
        &self.inputs.mined.features[i]
    }

    pub fn label(&self, i: usize) -> Option<&FeatureLabel> {
        let m = self.mined(i);
        self.label_of.get(&(m.layer, m.feature)).map(|&j| &self.inputs.labels[j])
    }

    /// How many of the live features among `facts` the label stage labelled, where it labelled
    /// a sample of them (`[label] sample`); `None` where it labelled every one.
    pub fn label_sample(&self, facts: &[FeatureFacts]) -> Option<usize> {
        let labelled = facts.iter().filter(|f| self.label(f.index).is_some()).count();
        (labelled < facts.len()).then_some(labelled)
    }

    /// What label coverage is a share of (the live features, or the sample labelled), and its name.
    pub fn coverage_base(&self, facts: &[FeatureFacts]) -> (usize, String) {
        match self.label_sample(facts) {
            None => (facts.len(), "live features".into()),
            Some(n) => (n, format!("the {n} labelled features, a sample of the {} live", facts.len())),
        }
    }

    /// The sparse activations of mined feature `i`.
    pub fn acts(&self, i: usize) -> &FeatureActivations {
        &self.inputs.acts.features[self.acts_of[i]]
    }

    fn total_steps(&self) -> usize {
        *self.coded.cell_offsets.last().expect("offsets")
    }
}

fn mean_sd(covs: &[Covariates], c: Covariate) -> (f64, f64) {
    if c.is_categorical() {
        return (f64::NAN, f64::NAN);
    }
    let (mean, var) = crate::stats::mean_var(covs.iter().flat_map(|cell| cell.column(c)).filter(|v| v.is_finite()).map(|&v| v as f64));
    (mean, var.sqrt())
}

/// The ROC of a label's predicate as a detector of firing, on the held-out cells, against the same
/// predicate with the activations circularly shifted within each cell (the labeller's null).
#[derive(Debug, Clone)]
pub struct Roc {
    /// What the positive class is ("the feature fires" for a detector, "SOC in its upper
    /// half" for a tracker, whose score is the activation).
    pub positive: String,
    pub curve: Vec<(f64, f64)>,
    pub auroc: f64,
    pub null_curves: Vec<Vec<(f64, f64)>>,
    pub null_auroc: Vec<f64>,
}

/// The numbers one card shows, computed from the inputs once per feature.
#[derive(Debug, Clone)]
pub struct FeatureFacts {
    pub index: usize,
    pub layer: u32,
    pub feature: u32,
    pub density: f64,
    pub max: f32,
    /// Activation-weighted mean of each covariate while firing, in SDs from its mean over all
    /// steps (NaN for categorical covariates): where in the operating space the feature lives.
    pub covariate_z: Vec<f64>,
    /// Per step type: (name, firing rate, mean activation while firing).
    pub step_types: Vec<(String, f64, f64)>,
    /// Per protocol: (name, firing rate).
    pub protocols: Vec<(String, f64)>,
    /// Other features that fire with this one, highest lift first (a paged feature's).
    pub co_firing: Vec<CoFiring>,
    /// The ROC of its label's best candidate (a paged feature's).
    pub roc: Option<Roc>,
    /// ‖W_dec‖ of this feature per target layer ("L2→L3", norm).
    pub decoder_norms: Vec<(String, f64)>,
    /// De-embedding per input channel (`model::CHANNELS` order): the change of the feature's
    /// pre-activation per standard deviation of the channel, along the embedding's direct path.
    pub deembedding: Vec<(String, f64)>,
}

impl FeatureFacts {
    /// A feature's facts; co-firing (a pass over every feature's firing) and the label's ROC
    /// only for a feature that gets a page (`paged`), the rest being what the index and the
    /// overview show.
    pub fn compute(ctx: &Context, i: usize, paged: bool) -> FeatureFacts {
        let m = ctx.mined(i);
        let acts = ctx.acts(i);
        FeatureFacts {
            index: i,
            layer: m.layer,
            feature: m.feature,
            density: m.density,
            max: m.max,
            covariate_z: covariate_z(ctx, acts),
            step_types: step_types(ctx, acts),
            protocols: protocol_rates(ctx, acts),
            co_firing: if paged { co_firing(ctx, i) } else { Vec::new() },
            roc: ctx.label(i).and_then(|l| l.candidates.first()).filter(|_| paged).map(|c| roc(ctx, acts, &c.candidate)),
            decoder_norms: ctx.inputs.transcoder.map(|t| decoder_norms(t, m.layer, m.feature)).unwrap_or_default(),
            deembedding: deembedding(ctx, m.layer, m.feature),
        }
    }

    pub fn id(&self) -> String {
        format!("L{}_F{}", self.layer, self.feature)
    }
}

fn covariate_z(ctx: &Context, acts: &FeatureActivations) -> Vec<f64> {
    Covariate::ALL
        .iter()
        .enumerate()
        .map(|(k, &c)| {
            let (mean, sd) = ctx.cov_mean_sd[k];
            // sd is NaN for categorical covariates and 0 for constant ones: no scale to measure in.
            if c.is_categorical() || sd.is_nan() || sd <= 0.0 {
                return f64::NAN;
            }
            let (mut w, mut s) = (0.0f64, 0.0f64);
            for (cell, row, v) in acts.entries() {
                let x = ctx.inputs.covariates[cell].column(c)[row as usize];
                if x.is_finite() {
                    w += v as f64;
                    s += v as f64 * x as f64;
                }
            }
            if w > 0.0 { (s / w - mean) / sd } else { f64::NAN }
        })
        .collect()
}

fn step_types(ctx: &Context, acts: &FeatureActivations) -> Vec<(String, f64, f64)> {
    let n = ctx.step_type_names.len();
    let (mut fires, mut sum) = (vec![0u64; n], vec![0.0f64; n]);
    for (cell, row, v) in acts.entries() {
        let k = ctx.step_type[ctx.coded.cell_offsets[cell] + row as usize] as usize;
        fires[k] += 1;
        sum[k] += v as f64;
    }
    (0..n)
        .map(|k| {
            let rate = fires[k] as f64 / ctx.step_type_counts[k].max(1) as f64;
            let mean = if fires[k] > 0 { sum[k] / fires[k] as f64 } else { 0.0 };
            (ctx.step_type_names[k].to_owned(), rate, mean)
        })
        .collect()
}

fn protocol_rates(ctx: &Context, acts: &FeatureActivations) -> Vec<(String, f64)> {
    let n = ctx.protocols.len();
    let (mut fires, mut steps) = (vec![0usize; n], vec![0usize; n]);
    for (cell, &p) in ctx.cell_protocol.iter().enumerate() {
        fires[p] += acts.cell(cell).0.len();
        steps[p] += ctx.coded.cell_len(cell);
    }
    (0..n).map(|p| (ctx.protocols[p].clone(), fires[p] as f64 / steps[p].max(1) as f64)).collect()
}

/// Another feature that fires on the same steps as this one.
#[derive(Debug, Clone)]
pub struct CoFiring {
    pub id: String,
    /// Steps where both fire.
    pub shared: usize,
    /// P(other fires | this fires).
    pub p_given: f64,
    /// P(other | this) / P(other): above 1 when they fire together more than chance; dense
    /// features have a high P(other | this) with everything, but a lift near 1.
    pub lift: f64,
}

/// Lift of every other feature g that shares at least [`CO_FIRING_MIN_SHARED`] firing steps:
/// one pass over the firing steps of all features (O(total nnz) per card), against a bitmap of
/// this feature's steps.
fn co_firing(ctx: &Context, i: usize) -> Vec<CoFiring> {
    let acts = ctx.acts(i);
    if acts.nnz() == 0 {
        return Vec::new();
    }
    let offsets = &ctx.coded.cell_offsets;
    let mut fires = vec![false; ctx.total_steps()];
    for (cell, row, _) in acts.entries() {
        fires[offsets[cell] + row as usize] = true;
    }
    let total = ctx.total_steps() as f64;
    let mut shared: Vec<CoFiring> = ctx
        .inputs
        .acts
        .features
        .iter()
        .filter(|g| (g.layer, g.feature) != (acts.layer, acts.feature) && g.nnz() > 0)
        .filter_map(|g| {
            let both = g.entries().filter(|&(cell, row, _)| fires[offsets[cell] + row as usize]).count();
            let p_given = both as f64 / acts.nnz() as f64;
            let lift = p_given / (g.nnz() as f64 / total);
            (both >= CO_FIRING_MIN_SHARED).then(|| CoFiring { id: format!("L{}_F{}", g.layer, g.feature), shared: both, p_given, lift })
        })
        .collect();
    shared.sort_by(|a, b| b.lift.total_cmp(&a.lift).then_with(|| a.id.cmp(&b.id)));
    shared.truncate(CO_FIRING_SHOWN);
    shared
}

/// One test of the labeller's acceptance rule (DESIGN §5 step 5) on a feature's best candidate.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub value: f64,
    pub threshold: String,
    pub pass: bool,
}

/// The acceptance rule's tests, in the order the labeller applies them; empty without candidates.
pub fn acceptance_checks(l: &FeatureLabel, cfg: &LabelConfig) -> Vec<Check> {
    // A feature silent on the held-out cells has no held-out score for a check to read.
    let Some(best) = l.candidates.first().filter(|_| l.testable()) else { return Vec::new() };
    let baseline = match &l.baseline {
        Some(b) if !best.candidate.is_raw_signal() => format!("≥ {}", card::num(b.strength)),
        _ => card::baseline_verdict(l).to_owned(),
    };
    let firing = best.test_firing.map(|n| Check {
        name: "held-out firing steps",
        value: n as f64,
        threshold: format!("≥ {}", cfg.min_test_firing),
        pass: n >= cfg.min_test_firing,
    });
    firing.into_iter().chain([
        Check {
            name: "held-out strength",
            value: best.strength,
            threshold: format!("≥ 1 (AUROC ≥ {}, |Spearman| ≥ {})", card::num(cfg.min_auroc), card::num(cfg.min_spearman)),
            pass: best.strength >= 1.0,
        },
        Check { name: "q", value: best.q_value, threshold: format!("< {}", card::num(cfg.max_q)), pass: best.q_value < cfg.max_q },
        Check { name: "stability", value: l.stability, threshold: format!("≥ {}", card::num(cfg.min_stability)), pass: l.stability >= cfg.min_stability },
        Check { name: "strength vs raw V/I baseline", value: best.strength, threshold: baseline, pass: l.beats_baseline },
    ])
    .collect()
}

/// Each step's level under the label and what the ROC's positive class is: whether a detector's
/// predicate holds (0/1); for a tracker whether the covariate is in the tracked half (0/1); for a
/// graded detector its scale code.
fn levels(ctx: &Context, candidate: &Candidate) -> (Vec<u8>, String) {
    let n = ctx.total_steps();
    match candidate {
        Candidate::Detector(p) => {
            let holds = (0..n).map(|s| p.holds(ctx.coded.step(s)) as u8).collect();
            (holds, "the feature fires".into())
        }
        Candidate::Graded { .. } => {
            let scale = TrackerScale::of(candidate).expect("a scale");
            ((0..n).map(|s| scale.code(&ctx.coded, ctx.coded.step(s)) as u8).collect(), "the feature fires".into())
        }
        Candidate::Tracker { covariate, increasing, within } => {
            let k = covariate.index();
            let median = ctx.coded.codings[k].n_codes() as u8 / 2;
            let inside = |codes: &[u8]| within.is_none_or(|a| a.contains(codes[a.covariate.index()]));
            let holds = (0..n).map(|s| (inside(ctx.coded.step(s)) && (ctx.coded.step(s)[k] >= median) == *increasing) as u8).collect();
            let half = if *increasing { "upper" } else { "lower" };
            let regime = if within.is_some() { " inside its regime" } else { "" };
            (holds, format!("{} in its {half} half{regime}", covariate.name()))
        }
    }
}

fn roc(ctx: &Context, acts: &FeatureActivations, candidate: &Candidate) -> Roc {
    let (levels, positive) = levels(ctx, candidate);
    let offsets = &ctx.coded.cell_offsets;
    let test_steps = || (0..offsets.len() - 1).filter(|&c| ctx.test_cell[c]).flat_map(|c| offsets[c]..offsets[c + 1]);
    let mut per_level = [0.0; MAX_CODES];
    for s in test_steps() {
        per_level[levels[s] as usize] += 1.0;
    }
    let (n_holds, n_test) = (per_level[1], test_steps().count() as f64);
    let at = |shift: &dyn Fn(usize, u32) -> u32| -> Vec<(f32, u8)> {
        acts.entries().filter(|&(cell, _, _)| ctx.test_cell[cell]).map(|(cell, row, v)| (v, levels[offsets[cell] + shift(cell, row) as usize])).collect()
    };
    let curve = |firing: Vec<(f32, u8)>| match candidate {
        Candidate::Detector(_) => operating_point(&firing, n_holds, n_test),
        Candidate::Graded { .. } => graded_roc(&firing, &per_level, TrackerScale::rises(candidate)),
        Candidate::Tracker { .. } => roc_curve(firing, (n_holds, n_test - n_holds)),
    };
    let (curve_0, auroc) = curve(at(&|_, r| r));
    let mut rng = ChaCha8Rng::seed_from_u64(((acts.layer as u64) << 32) | acts.feature as u64);
    let (mut null_curves, mut null_auroc) = (Vec::new(), Vec::new());
    for _ in 0..ROC_NULL_SHIFTS {
        let shifts: Vec<u32> = (0..offsets.len() - 1).map(|c| rng.random_range(0..ctx.coded.cell_len(c).max(1)) as u32).collect();
        let (c, a) = curve(at(&|c, r| (r + shifts[c]) % ctx.coded.cell_len(c) as u32));
        null_curves.push(c);
        null_auroc.push(a);
    }
    Roc { positive, curve: curve_0, auroc, null_curves, null_auroc }
}

/// A detector's ROC: its predicate is a yes/no score for "the feature fires", so the curve is
/// its one operating point (FPR, TPR), and the area the labeller's AUROC, (1 + TPR − FPR) / 2.
/// `firing` holds each firing step's (activation, predicate holds).
fn operating_point(firing: &[(f32, u8)], n_holds: f64, n_test: f64) -> (Vec<(f64, f64)>, f64) {
    let fires = firing.len() as f64;
    if fires == 0.0 || fires >= n_test {
        return (vec![(0.0, 0.0), (1.0, 1.0)], f64::NAN);
    }
    let inside = firing.iter().filter(|f| f.1 == 1).count() as f64;
    let (tpr, fpr) = (inside / fires, ((n_holds - inside) / (n_test - fires)).max(0.0));
    (vec![(0.0, 0.0), (fpr, tpr), (1.0, 1.0)], 0.5 * (1.0 + tpr - fpr))
}

/// A tracker's ROC: activation as the score for "the covariate is in the tracked half", given
/// the (positive, negative) step counts: firing steps sorted by activation, then every silent
/// step tied at zero (one straight segment to (1, 1)).
fn roc_curve(mut firing: Vec<(f32, u8)>, (pos, neg): (f64, f64)) -> (Vec<(f64, f64)>, f64) {
    if pos == 0.0 || neg == 0.0 {
        return (vec![(0.0, 0.0), (1.0, 1.0)], f64::NAN);
    }
    firing.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut area) = (0.0f64, 0.0f64, 0.0f64);
    let mut curve = vec![(0.0, 0.0)];
    for (j, &(v, h)) in firing.iter().enumerate() {
        if h == 1 { tp += 1.0 } else { fp += 1.0 }
        if firing.get(j + 1).is_none_or(|next| next.0 != v) {
            let (x, y) = (fp / neg, tp / pos);
            let &(x0, y0) = curve.last().expect("starts at origin");
            area += (x - x0) * (y + y0) / 2.0;
            curve.push((x, y));
        }
    }
    let &(x0, y0) = curve.last().expect("starts at origin");
    area += (1.0 - x0) * (1.0 + y0) / 2.0;
    curve.push((1.0, 1.0));
    (thin(curve, ROC_POINTS), area)
}

/// A graded detector's ROC: one point per scale code, from the top of its scale down, given the
/// firing steps' codes and the test steps per code (`MISSING` left out, as in its AUROC).
fn graded_roc(firing: &[(f32, u8)], per_level: &[f64; MAX_CODES], rising: bool) -> (Vec<(f64, f64)>, f64) {
    let mut fire = [0.0; MAX_CODES];
    for &(_, code) in firing {
        fire[code as usize] += 1.0;
    }
    let quiet: [f64; MAX_CODES] = std::array::from_fn(|c| (per_level[c] - fire[c]).max(0.0));
    let auroc = ordinal_auroc(&fire, &quiet, rising);
    let (pos, neg) = (0..MAX_CODES).filter(|&c| c != MISSING).map(|c| (fire[c], quiet[c])).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    if !auroc.is_finite() {
        return (vec![(0.0, 0.0), (1.0, 1.0)], f64::NAN);
    }
    let codes = (0..MAX_CODES).filter(|&c| c != MISSING);
    let top_down: Vec<usize> = if rising { codes.rev().collect() } else { codes.collect() };
    let (mut tp, mut fp, mut curve) = (0.0, 0.0, vec![(0.0, 0.0)]);
    for c in top_down.into_iter().filter(|&c| per_level[c] > 0.0) {
        (tp, fp) = (tp + fire[c], fp + quiet[c]);
        curve.push((fp / neg, tp / pos));
    }
    (curve, auroc)
}

/// Points kept per drawn ROC curve: a card panel shows no more, and every feature's curves are
/// kept until the overview is drawn (a dense feature has one point per distinct activation).
const ROC_POINTS: usize = 256;

/// At most `max` points of a curve, evenly spaced along it, first and last kept.
fn thin(curve: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if curve.len() <= max {
        return curve;
    }
    let last = curve.len() - 1;
    (0..max).map(|k| curve[k * last / (max - 1)]).collect()
}

/// ‖W_dec‖ of one feature per layer it writes to (the CLT's decoders reach every later layer).
fn decoder_norms(t: &Transcoder, layer: u32, feature: u32) -> Vec<(String, f64)> {
    let e = if t.shape.encoders() == 1 { 0 } else { layer as usize };
    let (row, d, f) = (t.shape.dec_row(e), t.shape.d_model, feature as usize);
    let Some(rows) = t.w_dec.get(e).and_then(|w| w.get(f * row..(f + 1) * row)) else { return Vec::new() };
    t.shape
        .out_layers(e)
        .zip(rows.chunks(d))
        .map(|(target, w)| (format!("L{layer}→L{target}"), w.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()))
        .collect()
}

/// The card's input-channel sensitivity; empty without a model or a transcoder. The widths were
/// checked when the context was built, so only a feature outside the transcoder can fail here.
fn deembedding(ctx: &Context, layer: u32, feature: u32) -> Vec<(String, f64)> {
    let (Some(embedding), Some(tc)) = (ctx.inputs.embedding, ctx.inputs.transcoder) else { return Vec::new() };
    let rows = embedding.deembed(tc, layer as usize, feature as usize).unwrap_or_default();
    rows.into_iter().map(|r| (r.channel, r.weight as f64)).collect()
}

#[cfg(test)]
mod tests {
    use super::thin;

    #[test]
    fn thinning_a_curve_keeps_its_ends_and_order() {
        let curve: Vec<(f64, f64)> = (0..=1000).map(|i| (i as f64 / 1000.0, (i as f64 / 1000.0).sqrt())).collect();
        let thinned = thin(curve.clone(), 256);
        assert_eq!(thinned.len(), 256);
        assert_eq!((thinned[0], thinned[255]), (curve[0], curve[1000]));
        assert!(thinned.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(thin(curve[..10].to_vec(), 256).len(), 10, "short curves stay whole");
    }
}
