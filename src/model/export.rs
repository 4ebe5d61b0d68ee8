//! `export-model`: a VoltLens model as f32 safetensors in `nn.Linear` orientation plus the
//! architecture TOML `import-model` reads (identity rename rules), so that PyTorch code
//! (`examples/pytorch/reference.py --layout voltlens`) can rebuild it; `check.safetensors`
//! holds inputs and VoltLens's predictions to prove the rebuild.

use std::path::Path;

use burn::backend::Flex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::checkpoint::load_model;
use super::config::HeadTarget;
use super::import::{named_tensors, predict_volts, Arch, HeadSpec, InputSpec, WeightSpec};
use crate::transcoder::tensors;
use crate::{Error, Result};

/// Windows in `check.safetensors`.
const CHECK_WINDOWS: usize = 8;
/// Longest check window (the full context when shorter).
const CHECK_STEPS: usize = 512;

#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub tensors: usize,
    pub parameters: usize,
    /// [N, T, C] of the check inputs.
    pub check_shape: [usize; 3],
}

/// Writes `model.safetensors`, `arch.toml` and `check.safetensors` of the model in `model_dir`
/// into the new directory `out`.
pub fn export_model(model_dir: &Path, out: &Path) -> Result<ExportSummary> {
    if out.exists() {
        return Err(Error::Config(format!("{} exists; export into a new directory", out.display())));
    }
    let device = Default::default();
    let loaded = load_model::<Flex>(model_dir, &device)?;
    let cfg = &loaded.config.model;
    let norm = &loaded.norm;
    let inputs: Vec<InputSpec> = norm
        .channels
        .iter()
        .zip(norm.stats.mean.iter().zip(&norm.stats.std))
        .map(|(name, (&mean, &std))| InputSpec { name: name.clone(), mean: Some(mean), std: Some(std), scale: None, offset: None })
        .collect();
    // A V_{t+1} head (imported) keeps its skip path: V_{t+1} = V_t + y·s = head(…)·s + mean_V.
    let head = match cfg.head {
        HeadTarget::DeltaV => HeadSpec { target: HeadTarget::DeltaV, scale: norm.target_scale, offset: 0.0 },
        HeadTarget::NextVoltage => {
            let v = norm.channels.iter().position(|c| c == "voltage").expect("validated");
            let skip: Vec<f32> = loaded.model.input_skip.as_ref().expect("a V_{t+1} head has one").val().into_data().convert::<f32>().into_vec().expect("f32");
            let expected = -norm.stats.std[v] / norm.target_scale;
            if skip.iter().enumerate().any(|(c, &w)| (w - if c == v { expected } else { 0.0 }).abs() > 1e-6 * expected.abs()) {
                return Err(Error::Config(format!(
                    "{}: the head's input skip {skip:?} is not the −σ_V / target_scale that import-model sets, so no V_{{t+1}} head reproduces it",
                    model_dir.display()
                )));
            }
            HeadSpec { target: HeadTarget::NextVoltage, scale: norm.target_scale, offset: norm.stats.mean[v] }
        }
    };
    let weights = WeightSpec { rename: vec![("^(.+)$".into(), "$1".into())], ..WeightSpec::default() };
    let arch = Arch { model: cfg.clone(), head, inputs, weights };
    let arch_text = arch.to_toml()?;

    let named = named_tensors(&loaded.model, cfg);
    let (n, t, c) = (CHECK_WINDOWS, cfg.context.min(CHECK_STEPS), cfg.channels.len());
    // Inputs spread over ±2 standard deviations of each channel, in raw units.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let raw: Vec<f32> =
        (0..n * t * c).map(|i| norm.stats.mean[i % c] + norm.stats.std[i % c] * rng.random_range(-2.0f32..2.0)).collect();
    let outputs: Vec<f32> = predict_volts(&loaded.model, cfg.head, norm, &raw, [n, t, c], &device).iter().map(|&v| v as f32).collect();

    crate::io::check_replaceable(out)?;
    let tmp = crate::io::fresh_temp_dir(out)?;
    let list: Vec<tensors::Named> = named.iter().map(|(k, (s, d))| (k.clone(), s.clone(), d.as_slice())).collect();
    tensors::write(&tmp.join("model.safetensors"), &list, None)?;
    let check = [("inputs".to_owned(), vec![n, t, c], raw.as_slice()), ("outputs".to_owned(), vec![n, t], outputs.as_slice())];
    tensors::write(&tmp.join("check.safetensors"), &check, None)?;
    crate::io::write_atomic(&tmp.join("arch.toml"), arch_text.as_bytes())?;
    crate::io::replace_dir(&tmp, out)?;
    Ok(ExportSummary {
        tensors: named.len(),
        parameters: burn::module::Module::num_params(&loaded.model),
        check_shape: [n, t, c],
    })
}
