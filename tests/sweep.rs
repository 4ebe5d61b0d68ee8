//! Sweeps: grid expansion and its errors, the Pareto front, and a tiny sweep on a tiny model of a
//! few synthetic cells (one row per run, figures, a rerun that trains nothing).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use voltlens::data::ingest::synthesize;
use voltlens::data::synth::{Chemistry, Protocol, SynthConfig};
use voltlens::model::{train_model, ModelConfig, TrainConfig};
use voltlens::transcoder::sweep::pareto::mark_fronts;
use voltlens::transcoder::sweep::{pareto_front, run_sweep, Grid, SweepConfig, SweepRow};
use voltlens::transcoder::{Activation, TranscoderConfig, Variant};

/// Five synthetic cells and a tiny model trained on them, shared by the tests that need one.
fn fixture() -> &'static (PathBuf, PathBuf) {
    static FIXTURE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Rebuilt by every run (a static's TempDir would never be removed).
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sweep");
        if root.exists() {
            std::fs::remove_dir_all(&root).unwrap();
        }
        let (data, model) = (root.join("data"), root.join("model"));
        let cells = SynthConfig {
            cells: 5,
            cycles: 1,
            chemistries: vec![Chemistry::Nmc],
            protocols: vec![Protocol::Cccv],
            ambient_temperatures_c: vec![25.0],
            ..SynthConfig::default()
        };
        synthesize(&cells, &data).unwrap();
        let shape = ModelConfig { layers: 2, d_model: 16, heads: 2, d_mlp: 32, context: 24, ..ModelConfig::default() };
        let training = TrainConfig { steps: 150, batch: 8, lr: 3e-3, warmup: 5, val_every: 50, val_windows: 8, stride: 8, ..TrainConfig::default() };
        train_model(&data, &shape, &training, &model).unwrap();
        (data, model)
    })
}

fn relu_grid(variants: Vec<Variant>, lambdas: Vec<f32>) -> Grid {
    Grid { variants: Some(variants), lambdas: Some(lambdas), ..Grid::default() }
}

fn small_sweep(grid: Vec<Grid>) -> SweepConfig {
    let base = TranscoderConfig { features: 24, steps: 40, batch: 64, lr: 3e-3, shuffle_buffer: 256, ..TranscoderConfig::default() };
    SweepConfig { base, grid, tokens: 1500, eval_tokens: 384, ..SweepConfig::default() }
}

fn config_error(grid: Vec<Grid>) -> String {
    small_sweep(grid).runs().unwrap_err().to_string()
}

#[test]
fn pareto_front_of_hand_made_points() {
    // (L0, FVU): lower is better in both.
    let points = [(1.0, 0.5), (2.0, 0.3), (2.0, 0.4), (4.0, 0.1), (5.0, 0.1), (3.0, 0.35), (0.5, f64::NAN), (f64::INFINITY, 0.0)];
    assert_eq!(pareto_front(&points), [true, true, false, true, false, false, false, false]);
    // Ties: identical points do not push each other off.
    assert_eq!(pareto_front(&[(1.0, 1.0), (1.0, 1.0)]), [true, true]);
    assert!(pareto_front(&[]).is_empty());
}

#[test]
fn fronts_are_per_variant_and_fidelity_is_maximised() {
    let row = |id: &str, variant, l0, fvu, fidelity: Option<f64>| SweepRow {
        id: id.into(),
        variant,
        activation: "relu".into(),
        features: 10,
        lambda: 0.0,
        l0,
        l0_pct: 10.0 * l0,
        fvu,
        fidelity,
        dead_pct: 0.0,
        train_seconds: 1.0,
        front_fvu: false,
        front_fidelity: false,
    };
    let mut rows = vec![
        row("c1", Variant::Clt, 2.0, 0.2, Some(0.9)),
        row("c2", Variant::Clt, 4.0, 0.1, Some(0.8)),
        row("c3", Variant::Clt, 5.0, 0.3, Some(0.95)),
        // Dominated by c1 in FVU, but no PLT point beats it: it is on its own variant's front.
        row("p1", Variant::Plt, 3.0, 0.25, Some(0.5)),
        row("m1", Variant::Mlsae, 8.0, 0.05, None),
    ];
    mark_fronts(&mut rows);
    let flags: Vec<(bool, bool)> = rows.iter().map(|r| (r.front_fvu, r.front_fidelity)).collect();
    assert_eq!(flags, [(true, true), (true, false), (false, true), (true, true), (true, false)]);
}

#[test]
fn grids_expand_to_one_run_per_point_and_topk_runs_once() {
    let topk = Grid {
        variants: Some(vec![Variant::Mlsae]),
        activations: Some(vec![Activation::TopK { k: 4 }]),
        lambdas: Some(vec![1e-3, 1e-2]),
        ..Grid::default()
    };
    let runs = small_sweep(vec![relu_grid(vec![Variant::Clt, Variant::Plt], vec![1e-3, 3e-3]), topk]).runs().unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["clt-relu-f24-l0.001", "clt-relu-f24-l0.003", "plt-relu-f24-l0.001", "plt-relu-f24-l0.003", "mlsae-topk4-f24"]);
    assert_eq!(runs[4].config.lambda, 0.0, "TopK is not penalised");
    assert!(runs.iter().all(|r| r.config.steps == 40 && r.config.features == 24), "the base settings carry over");
}

#[test]
fn bad_grids_are_refused_naming_the_field() {
    let err = config_error(vec![relu_grid(vec![Variant::Clt], vec![])]);
    assert!(err.contains("grid 1") && err.contains("`lambdas` is empty"), "{err}");
    let err = config_error(vec![relu_grid(vec![Variant::Clt], vec![1e-3]), relu_grid(vec![], vec![1e-3])]);
    assert!(err.contains("grid 2") && err.contains("`variants` is empty"), "{err}");
    let err = config_error(vec![relu_grid(vec![Variant::Clt], vec![1e-3, -0.5])]);
    assert!(err.contains("`lambdas`") && err.contains("-0.5"), "{err}");
    let err = config_error(vec![relu_grid(vec![Variant::Mlsae], vec![1e-3])]);
    assert!(err.contains("mlsae-relu") && err.contains("TopK"), "{err}");
    let err = config_error(vec![Grid { features: Some(vec![0]), ..Grid::default() }]);
    assert!(err.contains("`features`"), "{err}");
    let err = config_error(vec![]);
    assert!(err.contains("[[sweep.grid]]"), "{err}");
}

#[test]
fn a_sweep_section_runs_after_label_and_needs_a_model() {
    let text = |model: &str| {
        format!(
            "name = \"s\"\n[data]\nsource = \"synth\"\n{model}\n[sweep]\ntokens = 1000\n[sweep.base]\nsteps = 10\n[[sweep.grid]]\nvariants = [\"clt\", \"plt\"]\nlambdas = [1e-3]\n[[sweep.grid]]\nvariants = [\"mlsae\"]\nactivations = [{{ kind = \"topk\", k = 8 }}]\n"
        )
    };
    let tmp = tempfile::tempdir().unwrap();
    let load = |body: String| {
        let path = tmp.path().join("p.toml");
        std::fs::write(&path, body).unwrap();
        voltlens::pipeline::PipelineConfig::load(&path).unwrap()
    };
    let cfg = load(text("[model.arch]\nlayers = 1"));
    assert_eq!(cfg.sweep.as_ref().unwrap().runs().unwrap().len(), 3);
    let names: Vec<&str> = voltlens::pipeline::stages::build(&cfg).unwrap().iter().map(|s| s.name()).collect();
    assert_eq!(names, ["data", "model", "sweep"]);
    let err = voltlens::pipeline::stages::build(&load(text(""))).err().unwrap().to_string();
    assert!(err.contains("[sweep] needs a [model]"), "{err}");
}

#[test]
fn the_shipped_dev_sweep_expands_to_its_runs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/sweep-dev.toml");
    let cfg = voltlens::pipeline::PipelineConfig::load(&path).unwrap();
    let runs = cfg.sweep.unwrap().runs().unwrap();
    let variants = |v| runs.iter().filter(|r| r.config.variant == v).count();
    assert_eq!((variants(Variant::Clt), variants(Variant::Plt), variants(Variant::Sae), variants(Variant::Mlsae)), (4, 4, 4, 2));
}

#[test]
fn a_tiny_sweep_writes_one_row_per_run_and_a_rerun_skips_them() {
    let (data, model) = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let topk = Grid { variants: Some(vec![Variant::Mlsae]), activations: Some(vec![Activation::TopK { k: 4 }]), ..Grid::default() };
    // The SAE on mlp_out, the baseline transcoders are compared against, on the same plot.
    let sae = relu_grid(vec![Variant::Sae], vec![1e-3]);
    let cfg = small_sweep(vec![relu_grid(vec![Variant::Clt, Variant::Plt], vec![1e-4, 0.3]), topk, sae]);

    let first = run_sweep(data, model, &cfg, 5, &out).unwrap();
    assert_eq!((first.rows.len(), first.trained, first.skipped), (6, 6, 0));
    for r in &first.rows {
        assert!(out.join("runs").join(&r.id).join("metrics.json").exists(), "{}", r.id);
        assert!(r.fvu.is_finite() && r.l0 >= 0.0 && (0.0..=100.0).contains(&r.dead_pct), "{r:?}");
        assert_eq!(r.fidelity.is_some(), r.variant != Variant::Mlsae, "{r:?}");
    }
    assert!(first.rows.iter().filter(|r| r.variant == Variant::Clt).any(|r| r.front_fvu), "a variant's front is never empty");
    // A larger λ gives a sparser transcoder.
    let l0 = |id: &str| first.rows.iter().find(|r| r.id == id).unwrap().l0;
    assert!(l0("clt-relu-f24-l0.3") < l0("clt-relu-f24-l0.0001"));
    let saved: Vec<SweepRow> = serde_json::from_str(&std::fs::read_to_string(out.join("pareto.json")).unwrap()).unwrap();
    // JSON keeps the numbers to the last digit or so (serde_json's float parsing is not exact).
    let same = |a: &SweepRow, b: &SweepRow| a.id == b.id && (a.front_fvu, a.front_fidelity) == (b.front_fvu, b.front_fidelity) && (a.fvu - b.fvu).abs() < 1e-12;
    assert!(saved.len() == first.rows.len() && saved.iter().zip(&first.rows).all(|(a, b)| same(a, b)), "{saved:?}");
    let csv = std::fs::read_to_string(out.join("pareto.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(csv.contains("sae-relu-f24-l0.001,sae,"), "{csv}");
    assert!(csv.lines().next().unwrap().starts_with("id,variant,activation,features,lambda,l0,l0_pct,fvu,fidelity"), "{csv}");
    for png in ["pareto_fvu.png", "pareto_fidelity.png", "pareto_curves.png"] {
        common::assert_drawn(&out.join(png), None, 8);
    }
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("runs/clt-relu-f24-l0.0001/metrics.json")).unwrap()).unwrap();
    let curve = metrics["curve"].as_array().unwrap();
    assert_eq!(curve.len(), 40, "one point per step when there are fewer steps than curve points");
    assert_eq!(curve.last().unwrap()["step"], 40);

    let again = run_sweep(data, model, &cfg, 5, &out).unwrap();
    assert_eq!((again.trained, again.skipped), (0, 6));
    assert_eq!(again.rows, first.rows);

    // One more λ: only the new run trains, on the same cache.
    let mut more = cfg.clone();
    more.grid[0].lambdas = Some(vec![1e-4, 1e-3, 0.3]);
    let third = run_sweep(data, model, &more, 5, &out).unwrap();
    assert_eq!((third.rows.len(), third.trained, third.skipped), (8, 2, 6));

    // Settings that do not match what is on disk are refused, naming the file.
    let mut other = cfg.clone();
    other.tokens = 999;
    other.grid[0].lambdas = Some(vec![5e-3]);
    let err = run_sweep(data, model, &other, 5, &out).unwrap_err().to_string();
    assert!(err.contains("cache.json") && err.contains("other settings"), "{err}");
}
