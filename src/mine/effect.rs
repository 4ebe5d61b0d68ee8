//! Each feature's output effect (DESIGN §6): what it does to the model's prediction where it
//! fires. For each of a feature's first `effect_windows` top windows, the replacement model
//! (every MLP replaced by the transcoder, `circuits::intervene`) predicts the next voltage over
//! the context window that ends at the window's peak step, once intact and once with the feature
//! ablated (scaled by 0) on every step; the effect is the change at the peak step, ablated −
//! intact in mV, averaged over those windows. Negative: the feature raises the predicted voltage.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;

use crate::circuits::intervene::{ablation_effect_mv, load_replacement, ProbeWindow};
use crate::mine::stats::WindowKind;
use crate::mine::{MineConfig, MinedFeatures};
use crate::model::backend::{run_on, BackendTask};
use crate::model::inputs::cell_steps;
use crate::transcoder::device_encode::Encoder;
use crate::transcoder::sparse::SparseOps;
use crate::transcoder::Variant;
use crate::Result;

/// The dataset, model and transcoder stage directory a record was made from.
#[derive(Debug, Clone)]
pub struct EffectSources {
    pub dataset: PathBuf,
    pub model: PathBuf,
    /// A transcoder stage (or train-transcoder) directory, holding `circuit-tracer/`.
    pub transcoder: PathBuf,
}

/// Sets `output_effect_mv` of every feature (of `cfg.effect_sample`'s, where set) from its first
/// `cfg.effect_windows` top windows, the model on `cfg.device` with the transcoder's encoder (its
/// sparse decoding on the CPU), as replacement fidelity runs. Leaves it unset for an MLSAE, whose
/// single encoder reads every layer and has no place to ablate, and for an SAE on mlp_out, which
/// does not stand in for the MLP.
pub fn output_effects(mined: &mut MinedFeatures, sources: &EffectSources, cfg: &MineConfig) -> Result<()> {
    if cfg.effect_windows == 0 {
        return Ok(());
    }
    let chosen = match cfg.effect_sample {
        Some(n) => sampled(mined, n, cfg.seed),
        None => (0..mined.features.len()).collect(),
    };
    run_on(cfg.device, EffectTask { mined, sources, windows: cfg.effect_windows, chosen })
}

/// The mined features (indices) the label stage's `sample = n` draws with `seed`.
fn sampled(mined: &MinedFeatures, n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..mined.features.len()).collect();
    order.sort_by_key(|&i| (mined.features[i].layer, mined.features[i].feature));
    let layers: Vec<u32> = order.iter().map(|&i| mined.features[i].layer).collect();
    let mut chosen: Vec<usize> = crate::label::sample_by_layer(&layers, n, seed).into_iter().map(|k| order[k]).collect();
    chosen.sort_unstable();
    chosen
}

struct EffectTask<'a> {
    mined: &'a mut MinedFeatures,
    sources: &'a EffectSources,
    windows: usize,
    /// The features (indices, ascending) to ablate.
    chosen: Vec<usize>,
}

impl BackendTask for EffectTask<'_> {
    type Output = ();
    fn describe(&self) -> String {
        format!("ablating each of {} features on its top {} windows (one batch per feature); lower [mine] effect_windows", self.chosen.len(), self.windows)
    }
    fn run<B: AutodiffBackend + SparseOps>(self, device: B::Device) -> Result<()> {
        effects::<B>(self.mined, self.sources, self.windows, &self.chosen, &device)
    }
}

fn effects<A: AutodiffBackend + SparseOps>(mined: &mut MinedFeatures, sources: &EffectSources, windows: usize, chosen: &[usize], device: &A::Device) -> Result<()> {
    let (loaded, tc) = load_replacement::<A::InnerBackend>(&sources.model, &sources.transcoder.join("circuit-tracer"), device)?;
    if matches!(tc.shape.variant, Variant::Mlsae | Variant::Sae) {
        return Ok(());
    }
    let encoder = Encoder::<A>::new(&tc, device);
    // (feature, cell, peak step) of every window to ablate on.
    let jobs: Vec<(usize, usize, usize)> = chosen
        .iter()
        .flat_map(|&i| mined.features[i].windows.iter().filter(|w| w.kind == WindowKind::Top).take(windows).map(move |w| (i, w.cell, w.peak_row as usize)))
        .collect();
    // Each cell is read once, and only its windows' inputs kept.
    let mut by_cell: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (j, &(_, cell, _)) in jobs.iter().enumerate() {
        by_cell.entry(cell).or_default().push(j);
    }
    let mut probes: Vec<Option<ProbeWindow>> = vec![None; jobs.len()];
    for (cell, js) in by_cell {
        let steps = loaded.norm.apply(&cell_steps(&sources.dataset, &mined.cell_ids[cell], &loaded.norm.channels)?);
        for j in js {
            probes[j] = Some(ProbeWindow::around(&steps, jobs[j].2, loaded.model.context));
        }
    }
    let bar = crate::progress::bar(chosen.len() as u64, "effect", "features");
    let mut next = 0;
    for &i in chosen {
        let m = &mut mined.features[i];
        let count = jobs[next..].iter().take_while(|j| j.0 == i).count();
        let mine: Vec<ProbeWindow> = probes[next..next + count].iter_mut().map(|p| p.take().expect("every job has a probe")).collect();
        next += count;
        if !mine.is_empty() {
            let feature = (m.layer as usize, m.feature as usize);
            let deltas = ablation_effect_mv(&loaded.model, loaded.norm.target_scale, &tc, &encoder, feature, &mine, device)?;
            m.output_effect_mv = Some(deltas.iter().map(|&d| d as f64).sum::<f64>() / deltas.len() as f64);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}
