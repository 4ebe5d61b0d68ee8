//! The LBLM: hooks, replacement, training, resumption and evaluation, on a tiny simulated cell
//! (open-circuit voltage + series resistance + one RC pair) so every test runs in seconds.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use voltlens::data::canonical::{write_cells_table, CellData, CellWriter, DatasetPaths};
use voltlens::data::cells::{AnchorMethod, CellInfo};
use voltlens::data::schema::{Method, State};
use voltlens::model::{
    eval_model, load_model, train_model, EvalConfig, Lblm, ModelConfig, Positional, TrainConfig, N_CHANNELS,
};
use voltlens::model::inputs::CHANNELS_BEFORE_SOC;

type B = Flex;

fn tiny_model(positional: Positional) -> ModelConfig {
    ModelConfig { layers: 2, d_model: 16, heads: 2, d_mlp: 32, context: 24, positional, ..ModelConfig::default() }
}

fn tiny_training() -> TrainConfig {
    TrainConfig {
        steps: 40,
        batch: 8,
        lr: 3e-3,
        warmup: 5,
        val_every: 20,
        val_windows: 16,
        checkpoint_every: 10,
        stride: 4,
        val_fraction: 0.2,
        test_fraction: 0.2,
        ..TrainConfig::default()
    }
}

/// Inputs [batch, seq, N_CHANNELS] with values in [−1, 1).
fn random_inputs(batch: usize, seq: usize, seed: u64) -> Tensor<B, 3> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let values: Vec<f32> = (0..batch * seq * N_CHANNELS)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [batch, seq, N_CHANNELS]), &Default::default())
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

fn max_abs_diff<const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    values(a).iter().zip(values(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn hooked_forward_equals_plain_forward_and_hooks_chain() {
    for positional in [Positional::Rotary, Positional::Learned] {
        let cfg = tiny_model(positional);
        let model = Lblm::<B>::new(&cfg, 3, &Default::default());
        let x = random_inputs(3, 20, 1);
        let plain = model.forward(x.clone());
        let (hooked, acts) = model.forward_hooked(x);
        assert_eq!(plain.dims(), [3, 20]);
        assert_eq!(max_abs_diff(plain, hooked), 0.0, "{positional:?}");
        assert_eq!(acts.len(), cfg.layers);
        for (l, a) in acts.iter().enumerate() {
            assert_eq!(a.resid_mid.dims(), [3, 20, cfg.d_model]);
            let sum = a.resid_mid.clone() + a.mlp_out.clone();
            assert!(max_abs_diff(sum, a.resid_post.clone()) < 1e-6, "resid_post = resid_mid + mlp_out");
            if l > 0 {
                assert_eq!(max_abs_diff(acts[l - 1].resid_post.clone(), a.resid_pre.clone()), 0.0);
            }
        }
    }
}

#[test]
fn identity_replacement_changes_nothing_and_zeros_change_the_prediction() {
    let model = Lblm::<B>::new(&tiny_model(Positional::Rotary), 4, &Default::default());
    let x = random_inputs(2, 24, 2);
    let plain = model.forward(x.clone());
    let own_mlp = |layer: usize, resid_mid: Tensor<B, 3>| {
        let block = &model.blocks[layer];
        block.mlp.forward(block.ln_mlp.forward(resid_mid))
    };
    let (replaced, _) = model.forward_with_replacement(x.clone(), &own_mlp);
    assert_eq!(max_abs_diff(plain.clone(), replaced), 0.0);

    let zeros = |_: usize, resid_mid: Tensor<B, 3>| resid_mid.zeros_like();
    let (ablated, acts) = model.forward_with_replacement(x, &zeros);
    assert!(max_abs_diff(plain, ablated) > 1e-4, "zeroing every MLP must move the prediction");
    assert_eq!(values(acts[0].mlp_out.clone()).iter().map(|v| v.abs()).sum::<f32>(), 0.0, "hooks report the replacement");
}

#[test]
fn a_step_sees_only_its_past() {
    let model = Lblm::<B>::new(&tiny_model(Positional::Rotary), 5, &Default::default());
    let x = random_inputs(1, 16, 3);
    let changed = x.clone().slice_assign([0..1, 15..16, 0..N_CHANNELS], Tensor::ones([1, 1, N_CHANNELS], &Default::default()));
    let before = values(model.forward(x));
    let after = values(model.forward(changed));
    assert_eq!(before[..15], after[..15], "changing the last step must not change earlier predictions");
    assert_ne!(before[15], after[15]);
}

#[test]
fn stepping_after_a_prefill_predicts_what_the_whole_window_does() {
    use voltlens::model::{HeadTarget, MlpKind, NormKind};
    let llama = ModelConfig { norm: NormKind::RmsNorm, mlp: MlpKind::SwiGlu, head: HeadTarget::NextVoltage, ..tiny_model(Positional::Rotary) };
    for cfg in [tiny_model(Positional::Rotary), tiny_model(Positional::Learned), llama] {
        let mut model = Lblm::<B>::new(&cfg, 6, &Default::default());
        if let Some(skip) = &mut model.input_skip {
            *skip = burn::module::Param::from_tensor(Tensor::ones([N_CHANNELS], &Default::default()));
        }
        let x = random_inputs(2, 20, 4);
        let whole = model.forward(x.clone());
        // The first 8 steps at once, then one at a time: [2, 8] + 12 × [2, 1].
        let (first, mut cache) = model.prefill(x.clone().narrow(1, 0, 8));
        let steps = (8..20).map(|t| model.step(x.clone().narrow(1, t, 1), &mut cache));
        let stepped = Tensor::cat(std::iter::once(first).chain(steps).collect(), 1);
        assert!(max_abs_diff(stepped, whole) < 1e-5, "{:?} {:?}", cfg.positional, cfg.mlp);
    }
}

/// One simulated cell: CC discharge, rest, CC charge, rest, repeated, logged every 10 s.
/// Positive current charges; V = OCV(soc) + R0·I + V_rc with dV_rc/dt = I/C1 − V_rc/τ.
fn rc_cell(id: &str, c_rate: f32, cycles: usize) -> (CellInfo, CellData) {
    let capacity_ah = 1.0f32;
    let (r0, r1, tau) = (0.05f32, 0.03f32, 300.0f32);
    let ocv = |soc: f32| 3.0 + 1.1 * soc - 0.15 * (-12.0 * soc).exp() + 0.05 * (6.0 * soc).sin();
    let dt = 10.0f32;
    let mut d = CellData { cell_id: id.to_owned(), ..CellData::default() };
    let (mut soc, mut v_rc, mut t, mut step) = (0.95f32, 0.0f32, 0.0f64, 0i32);
    let current = c_rate * capacity_ah;
    let push = |d: &mut CellData, i: f32, step: i32, step_time: f32, cycle: i32, soc: f32, v_rc: f32, t: f64| {
        let state = if i > 0.0 { State::Charging } else if i < 0.0 { State::Discharging } else { State::Resting };
        d.dt.push(if d.test_time.is_empty() { 0.0 } else { (t - d.test_time.last().unwrap()) as f32 });
        d.test_time.push(t);
        d.current.push(i);
        d.voltage.push(ocv(soc) + r0 * i + v_rc);
        d.temperature.push(Some(25.0));
        d.cycle_number.push(cycle);
        d.step_index.push(step);
        d.step_time.push(step_time);
        d.state.push(state);
        d.method.push(if i == 0.0 { Method::Rest } else { Method::ConstantCurrent });
        d.c_rate.push(i / capacity_ah);
        d.soc.push(soc);
        d.soh.push(None);
    };
    for cycle in 0..cycles as i32 {
        for (i, stop) in [(-current, 0.1f32), (0.0, 0.0), (current, 0.9), (0.0, 0.0)] {
            let mut step_time = 0.0f32;
            loop {
                push(&mut d, i, step, step_time, cycle, soc, v_rc, t);
                let done = if i < 0.0 { soc <= stop } else if i > 0.0 { soc >= stop } else { step_time >= 600.0 };
                if done {
                    break;
                }
                soc += i * dt / 3600.0 / capacity_ah;
                v_rc += dt * (i * r1 / tau - v_rc / tau);
                t += dt as f64;
                step_time += dt;
            }
            step += 1;
            t += dt as f64;
        }
    }
    let info = CellInfo {
        cell_id: id.to_owned(),
        source_file: "simulated".to_owned(),
        format: "test".to_owned(),
        nominal_capacity_ah: capacity_ah as f64,
        capacity_estimated: false,
        chemistry: None,
        protocol: Some("cccv".to_owned()),
        ambient_temperature_c: Some(25.0),
        rows: d.len() as u64,
        anchor_method: AnchorMethod::CvHold,
        anchor_uncertainty: Some(0.015),
        upper_cutoff_v: None,
        lower_cutoff_v: None,
        metadata: "{}".to_owned(),
    };
    (info, d)
}

/// Writes a canonical dataset of `cells` simulated cells at different C-rates.
fn write_dataset(dir: &Path, cells: usize, poison: Option<(usize, usize)>) {
    let paths = DatasetPaths::new(dir);
    let mut infos = Vec::new();
    for k in 0..cells {
        let (info, mut data) = rc_cell(&format!("rc-{k:02}"), 1.0 + 0.5 * (k % 3) as f32, 2);
        if let Some((cell, row)) = poison {
            if cell == k {
                data.voltage[row] = f32::NAN;
            }
        }
        let mut w = CellWriter::create(&paths.cell_file(&info.cell_id)).unwrap();
        w.write(data).unwrap();
        w.finish(&info).unwrap();
        infos.push(info);
    }
    write_cells_table(&paths.cells_table(), &infos).unwrap();
}

#[test]
fn training_beats_persistence_and_evaluation_writes_metrics_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model_dir, eval_dir) = (tmp.path().join("data"), tmp.path().join("model"), tmp.path().join("eval"));
    write_dataset(&data, 6, None);
    let train = TrainConfig { steps: 300, ..tiny_training() };
    let summary = train_model(&data, &tiny_model(Positional::Rotary), &train, &model_dir).unwrap();
    assert!(summary.finished && summary.steps == 300);
    let skill = summary.val_skill.unwrap();
    assert!(skill > 0.5, "validation skill {skill} after 300 steps on an RC cell");

    let again = train_model(&data, &tiny_model(Positional::Rotary), &train, &model_dir).unwrap();
    assert_eq!(again.steps, 300, "a finished run is not trained again");

    let cfg = EvalConfig { rollouts_per_cell: 2, max_cycle_rows: 200, ..EvalConfig::default() };
    let metrics = eval_model(&data, &model_dir, &eval_dir, &cfg).unwrap();
    assert!(metrics.overall.next_step.skill > 0.5, "{:?}", metrics.overall);
    assert!(metrics.overall.discharge_rollout.rows > 0 && metrics.overall.cycle_rollout.rows > 0);
    // Every RC cell begins with a discharge at row 0: its first discharge rollout starts cold, the last does not.
    let scored = metrics.per_cell.len();
    assert_eq!((metrics.overall.cold_discharge_rollout.rollouts, metrics.overall.discharge_rollout.rollouts), (scored, scored));
    // The model reads `soc` and `soc_present` and every RC cell has an anchor: each warm rollout is
    // run again with the anchor hidden.
    assert_eq!(metrics.overall.unanchored_discharge_rollout.rollouts, scored);
    assert!(metrics.overall.discharge_rollout.rmse_mv.is_finite());
    assert!(eval_dir.join("metrics.json").exists());
    assert!(!metrics.plots.is_empty() && metrics.plots.iter().all(|p| eval_dir.join(p).exists()));

    // rollouts.csv holds every rolled-out row: its errors give back the metrics' RMSEs, and each
    // rollout starts from the true voltage.
    let csv = std::fs::read_to_string(eval_dir.join("rollouts.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("cell_id,kind,rollout,row,test_time_s,voltage_v,rolled_out_v"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let o = &metrics.overall;
    let kinds = [
        ("discharge", &o.discharge_rollout),
        ("cold_discharge", &o.cold_discharge_rollout),
        ("unanchored_discharge", &o.unanchored_discharge_rollout),
        ("cycle", &o.cycle_rollout),
    ];
    for (kind, m) in kinds {
        let errors: Vec<f64> = rows.iter().filter(|r| r[1] == kind).map(|r| r[6].parse::<f64>().unwrap() - r[5].parse::<f64>().unwrap()).collect();
        assert_eq!(errors.len(), m.rows + m.rollouts, "{kind}: the predicted rows and each rollout's true start");
        let rmse_mv = 1e3 * (errors.iter().map(|e| e * e).sum::<f64>() / m.rows as f64).sqrt();
        assert!((rmse_mv - m.rmse_mv).abs() < 1e-3 * m.rmse_mv.max(1.0), "{kind}: {rmse_mv} mV from the csv, {} in metrics", m.rmse_mv);
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in rows.iter().filter(|r| seen.insert((r[0], r[1], r[2]))) {
        assert_eq!(r[5], r[6], "rollout {:?} starts from the true voltage", &r[..3]);
    }
    // The same rows with the anchor hidden: the model reads `soc`, so some come out otherwise.
    let warm: std::collections::BTreeMap<(&str, &str), &str> = rows.iter().filter(|r| r[1] == "discharge").map(|r| ((r[0], r[3]), r[6])).collect();
    let unanchored: Vec<_> = rows.iter().filter(|r| r[1] == "unanchored_discharge").collect();
    assert!(unanchored.iter().all(|r| warm.contains_key(&(r[0], r[3]))));
    assert!(unanchored.iter().any(|r| warm[&(r[0], r[3])] != r[6]), "hiding the anchor changes nothing");

    // No cell extrapolates, so there is no separate in-range group. Scored beside the two 2C cells
    // (rc-02, rc-05: faster than every remaining training cell, so flagged), a cell whose twin
    // trains is pooled alone in `in_range`.
    assert!(metrics.flags.iter().all(|f| !f.contains("extrapolation")) && metrics.in_range.is_none(), "{:?}", metrics.flags);
    let split: voltlens::data::windows::Split = serde_json::from_str(&std::fs::read_to_string(model_dir.join("split.json")).unwrap()).unwrap();
    let twin = |id: &str| format!("rc-{:02}", (id[3..].parse::<usize>().unwrap() + 3) % 6);
    let inside = ["rc-00", "rc-03", "rc-01", "rc-04"].into_iter().find(|id| split.train.contains(&twin(id))).expect("a training cell at 1C or 1.5C");
    let cells = vec!["rc-02".to_owned(), "rc-05".to_owned(), inside.to_owned()];
    let mixed = eval_model(&data, &model_dir, &tmp.path().join("mixed"), &EvalConfig { cell_ids: cells, ..cfg.clone() }).unwrap();
    let flagged: Vec<&str> = mixed.flags.iter().filter(|f| f.contains("extrapolation")).map(|f| f.split(':').next().unwrap()).collect();
    assert_eq!(flagged, ["rc-02", "rc-05"], "{:?}", mixed.flags);
    let in_range = mixed.in_range.expect("an in-range group beside flagged cells");
    assert_eq!((in_range.cells, in_range.discharge_rollout.rollouts), (1, 1));
    let alone = eval_model(&data, &model_dir, &tmp.path().join("alone"), &EvalConfig { cell_ids: vec![inside.to_owned()], ..cfg }).unwrap();
    assert_eq!(in_range.discharge_rollout.rmse_mv, alone.overall.discharge_rollout.rmse_mv, "the in-range group is {inside}'s rollouts");
}

#[test]
fn a_model_saved_before_soc_pushforward_and_soc_dropout_joined_the_defaults_still_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model_dir) = (tmp.path().join("data"), tmp.path().join("model"));
    write_dataset(&data, 4, None);
    let fresh = train_model(&data, &tiny_model(Positional::Rotary), &TrainConfig { steps: 5, ..tiny_training() }, &tmp.path().join("fresh")).unwrap();
    assert!(fresh.finished);
    let saved = std::fs::read_to_string(tmp.path().join("fresh/config.json")).unwrap();
    assert!(saved.contains("\"soc_present\""), "a new model names its channels: {saved}");

    // Such models left the default channels, then 11 of them, out of config.json, and had no pushforward, drift scale or soc_dropout.
    let old = ModelConfig { channels: CHANNELS_BEFORE_SOC.iter().map(|c| c.to_string()).collect(), ..tiny_model(Positional::Rotary) };
    train_model(&data, &old, &TrainConfig { steps: 5, ..tiny_training() }, &model_dir).unwrap();
    let config = model_dir.join("config.json");
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    json["model"].as_object_mut().unwrap().remove("channels");
    for added in ["pushforward", "pushforward_drift", "pushforward_drift_spread", "soc_dropout"] {
        json["train"].as_object_mut().unwrap().remove(added);
    }
    std::fs::write(&config, json.to_string()).unwrap();
    let loaded = load_model::<B>(&model_dir, &Default::default()).unwrap();
    assert_eq!(loaded.config.model.channels, CHANNELS_BEFORE_SOC);
    assert_eq!(loaded.config.train.pushforward, 0.0, "trained before pushforward existed");
    assert_eq!(loaded.config.train.soc_dropout, 0.0, "trained before soc_dropout existed");
    assert_eq!(loaded.config.train.pushforward_drift, 1.0, "trained before pushforward_drift existed");
    assert_eq!(loaded.config.train.pushforward_drift_spread, 0.0, "trained before pushforward_drift_spread existed");
    let metrics = eval_model(&data, &model_dir, &tmp.path().join("eval"), &EvalConfig { rollouts_per_cell: 1, ..EvalConfig::default() }).unwrap();
    assert!(metrics.overall.next_step.steps > 0);
    assert_eq!(metrics.overall.unanchored_discharge_rollout.rollouts, 0, "the model reads no `soc`");
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 4, None);
    let model = tiny_model(Positional::Learned);
    let straight = train_model(&data, &model, &tiny_training(), &tmp.path().join("straight")).unwrap();

    // Killed after step 23: the checkpoint of step 20 survives, steps 21–23 are lost.
    let resumed_dir = tmp.path().join("resumed");
    let killed = TrainConfig { stop_after: Some(23), ..tiny_training() };
    let first = train_model(&data, &model, &killed, &resumed_dir).unwrap();
    assert!(!first.finished);
    let resumed = train_model(&data, &model, &tiny_training(), &resumed_dir).unwrap();
    assert_eq!(resumed.resumed_from, Some(20));
    assert_eq!(resumed.train_loss, straight.train_loss);
    assert_eq!(resumed.val_loss, straight.val_loss);

    let device = Default::default();
    let a = load_model::<B>(&tmp.path().join("straight"), &device).unwrap().model;
    let b = load_model::<B>(&resumed_dir, &device).unwrap().model;
    let x = random_inputs(2, 24, 9);
    assert_eq!(max_abs_diff(a.forward(x.clone()), b.forward(x)), 0.0);
}

#[test]
fn a_nan_voltage_is_reported_with_its_cell_and_row() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 3, Some((1, 41)));
    // Every cell trains, so the bad one is read whichever part the split would give it.
    let all_train = TrainConfig { val_fraction: 0.0, test_fraction: 0.0, ..tiny_training() };
    let err = train_model(&data, &tiny_model(Positional::Rotary), &all_train, &tmp.path().join("m")).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("rc-01") && message.contains("row 42") && message.contains("voltage"), "{message}");
}

#[test]
fn a_diverging_run_stops_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data, 3, None);
    // AdamW moves each weight by about lr per step and decay multiplies it by (1 − lr·wd):
    // with lr = 1e6 the weights overflow f32 within a few steps.
    let train = TrainConfig { lr: 1e6, warmup: 0, grad_clip: 0.0, checkpoint_every: 1, ..tiny_training() };
    let out = tmp.path().join("m");
    let err = train_model(&data, &tiny_model(Positional::Rotary), &train, &out).unwrap_err();
    assert!(err.to_string().contains("diverged"), "{err}");
    assert!(!out.join("model.mpk").exists(), "no final model from a diverged run");
}

#[test]
fn an_imported_model_evaluates_like_the_original_on_any_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model_dir) = (tmp.path().join("data"), tmp.path().join("model"));
    write_dataset(&data, 5, None);
    train_model(&data, &tiny_model(Positional::Rotary), &tiny_training(), &model_dir).unwrap();
    let test_cells = load_model::<B>(&model_dir, &Default::default()).unwrap().split.test;
    let cfg = EvalConfig { rollouts_per_cell: 1, max_cycle_rows: 100, plot_cells_per_protocol: 0, ..EvalConfig::default() };
    let original = eval_model(&data, &model_dir, &tmp.path().join("eval-original"), &cfg).unwrap();

    let export = tmp.path().join("export");
    voltlens::model::export_model(&model_dir, &export).unwrap();
    let imported = tmp.path().join("imported");
    let arch = export.join("arch.toml");
    let weights = export.join("model.safetensors");
    let check = export.join("check.safetensors");
    let request = voltlens::model::ImportRequest { weights: &weights, arch: &arch, out: &imported, check: Some(&check), tolerance: voltlens::model::Tolerance { volts: 1e-6, relative: 1e-5 }, dataset: None, seed: 0 };
    voltlens::model::import_model(&request).unwrap();

    // The imported model has no split: it is scored on every cell, or on the cells asked for.
    let all = eval_model(&data, &imported, &tmp.path().join("eval-all"), &cfg).unwrap();
    assert_eq!(all.per_cell.len(), 5);
    let chosen = EvalConfig { cell_ids: test_cells.clone(), ..cfg.clone() };
    let same = eval_model(&data, &imported, &tmp.path().join("eval-same"), &chosen).unwrap();
    for (a, b) in original.per_cell.iter().zip(&same.per_cell) {
        assert_eq!(a.cell_id, b.cell_id);
        assert!((a.next_step.rmse_mv - b.next_step.rmse_mv).abs() < 1e-3, "{a:?} vs {b:?}");
    }
    let unknown = EvalConfig { cell_ids: vec!["no-such-cell".into()], ..cfg };
    let err = eval_model(&data, &imported, &tmp.path().join("eval-unknown"), &unknown).unwrap_err().to_string();
    let cells = voltlens::data::canonical::Dataset::load_cells(&data).unwrap();
    let first = cells.iter().map(|c| c.cell_id.as_str()).min().unwrap();
    assert!(err.contains("no cell no-such-cell") && err.contains(first), "names the dataset's cells: {err}");
}

/// A GPU allocation failure (burn's CUDA backend panics with cubecl's `LaunchError::OutOfMemory`,
/// or cubecl-cuda's "can't allocate buffer of size" where the driver refuses memory) comes back as an error naming the work and what to lower; other backend panics keep their
/// first line; and the process goes on (the panic hook is restored).
#[test]
fn gpu_failures_become_errors_that_say_what_to_lower() {
    use voltlens::model::backend::gpu_guard;
    let what = "transcoder training (Clt, 8192 features per encoder, batch 4096); lower `batch` or `features`";
    let oom = gpu_guard(what, || -> voltlens::Result<()> { panic!("An out-of-memory error happened during launch\nCaused by:\n  alloc of 3 GiB") });
    let err = oom.unwrap_err().to_string();
    assert!(err.contains("ran out of memory") && err.contains("8192 features") && err.contains("lower `batch`"), "{err}");
    // Where cubecl-cuda reserves a buffer the driver refuses (its server unwraps the IoError).
    let alloc = gpu_guard(what, || -> voltlens::Result<()> { panic!("called `Result::unwrap()` on an `Err` value: can't allocate buffer of size: 34359738368\n   0: backtrace") });
    let err = alloc.unwrap_err().to_string();
    assert!(err.contains("ran out of memory (a buffer of 32.0 GiB)") && err.contains("lower `batch`"), "{err}");
    let other = gpu_guard("model training", || -> voltlens::Result<()> { panic!("{}", String::from("CUDA_ERROR_ILLEGAL_ADDRESS\nmore")) });
    let err = other.unwrap_err().to_string();
    assert!(err.contains("model training") && err.contains("CUDA_ERROR_ILLEGAL_ADDRESS") && !err.contains("more"), "{err}");
    assert_eq!(gpu_guard("nothing", || Ok(7)).unwrap(), 7);
    // Errors that are not panics pass through unchanged.
    let err = gpu_guard("x", || -> voltlens::Result<()> { Err(voltlens::Error::Config("bad".into())) }).unwrap_err().to_string();
    assert!(err.contains("bad") && !err.contains("GPU"), "{err}");
}
