//! Export and import in circuit-tracer's CLT layout: per encoder e, `W_enc_{e}.safetensors` holding
//! `W_enc_{e}` [d_in, F], `b_enc_{e}` [F], `threshold_{e}` [F] (JumpReLU) and the `b_dec_{m}` [d]
//! (and `W_skip_{m}` [d, d]) of the layers m it is the last encoder at or before, and
//! `W_dec_{e}.safetensors` holding `W_dec_{e}` [F, n_out(e), d]; plus `config.json`. Input scaling
//! is already folded into the weights (`Transcoder` never holds it), so importing gives back
//! exactly the same model.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::clt::{Shape, Transcoder};
use super::config::{Activation, TranscoderConfig};
use super::tensors::{self, Named};
use crate::{Error, Result};

#[derive(Serialize, Deserialize)]
struct ExportConfig {
    format: String,
    shape: Shape,
    activation: Activation,
    skip: bool,
}

const FORMAT: &str = "circuit-tracer-clt";

/// The encoder file that carries layer m's b_dec and W_skip: its own for CLT/PLT, the only one for the MLSAE.
fn home(shape: &Shape, m: usize) -> usize {
    m.min(shape.encoders() - 1)
}

pub fn export_circuit_tracer(tc: &Transcoder, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let s = tc.shape;
    let (d, f) = (s.d_model, s.features);
    for e in 0..s.encoders() {
        let mut named: Vec<Named> = vec![
            (format!("W_enc_{e}"), vec![s.d_in(), f], tc.w_enc_of(e)),
            (format!("b_enc_{e}"), vec![f], &tc.b_enc[e * f..(e + 1) * f]),
        ];
        if !tc.threshold.is_empty() {
            named.push((format!("threshold_{e}"), vec![f], &tc.threshold[e * f..(e + 1) * f]));
        }
        for m in (0..s.layers).filter(|&m| home(&s, m) == e) {
            named.push((format!("b_dec_{m}"), vec![d], &tc.b_dec[m * d..(m + 1) * d]));
            if let Some(w) = &tc.w_skip {
                named.push((format!("W_skip_{m}"), vec![d, d], &w[m * d * d..(m + 1) * d * d]));
            }
        }
        tensors::write(&dir.join(format!("W_enc_{e}.safetensors")), &named, None)?;
        let dec = [(format!("W_dec_{e}"), vec![f, s.out_layers(e).len(), d], tc.w_dec[e].as_slice())];
        tensors::write(&dir.join(format!("W_dec_{e}.safetensors")), &dec, None)?;
    }
    let cfg = ExportConfig { format: FORMAT.into(), shape: s, activation: tc.activation, skip: tc.w_skip.is_some() };
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).expect("plain data")).map_err(|e| Error::io(&path, e))
}

pub fn import_circuit_tracer(dir: &Path) -> Result<Transcoder> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let cfg: ExportConfig = serde_json::from_str(&text).map_err(|e| Error::in_file(&path, e.to_string()))?;
    if cfg.format != FORMAT {
        return Err(Error::in_file(&path, format!("format '{}', expected '{FORMAT}'", cfg.format)));
    }
    let s = cfg.shape;
    let tc_cfg = TranscoderConfig { variant: s.variant, features: s.features, activation: cfg.activation, skip: cfg.skip, ..Default::default() };
    let mut tc = Transcoder::zeros(&tc_cfg, s.layers, s.d_model);
    let (d, f) = (s.d_model, s.features);
    for e in 0..s.encoders() {
        let enc_path = dir.join(format!("W_enc_{e}.safetensors"));
        let mut enc = tensors::read(&enc_path)?;
        let n = s.d_in() * f;
        tc.w_enc[e * n..(e + 1) * n].copy_from_slice(&tensors::take(&mut enc, &enc_path, &format!("W_enc_{e}"), &[s.d_in(), f])?);
        tc.b_enc[e * f..(e + 1) * f].copy_from_slice(&tensors::take(&mut enc, &enc_path, &format!("b_enc_{e}"), &[f])?);
        if !tc.threshold.is_empty() {
            tc.threshold[e * f..(e + 1) * f].copy_from_slice(&tensors::take(&mut enc, &enc_path, &format!("threshold_{e}"), &[f])?);
        }
        for m in (0..s.layers).filter(|&m| home(&s, m) == e) {
            tc.b_dec[m * d..(m + 1) * d].copy_from_slice(&tensors::take(&mut enc, &enc_path, &format!("b_dec_{m}"), &[d])?);
            if let Some(w) = &mut tc.w_skip {
                w[m * d * d..(m + 1) * d * d].copy_from_slice(&tensors::take(&mut enc, &enc_path, &format!("W_skip_{m}"), &[d, d])?);
            }
        }
        let dec_path = dir.join(format!("W_dec_{e}.safetensors"));
        let mut dec = tensors::read(&dec_path)?;
        tc.w_dec[e] = tensors::take(&mut dec, &dec_path, &format!("W_dec_{e}"), &[f, s.out_layers(e).len(), d])?;
    }
    Ok(tc)
}
