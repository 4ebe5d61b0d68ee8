//! The command line, run as a user runs it: every command's happy path on a tiny run, and one
//! error each that names what is wrong.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn voltlens(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("voltlens").unwrap();
    cmd.current_dir(dir).arg("--quiet");
    cmd
}

/// Runs `args` in `dir`, asserts success, returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = voltlens(dir).args(args).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "voltlens {}\nstdout: {stdout}\nstderr: {stderr}", args.join(" "));
    stdout.into_owned()
}

/// Runs `args` in `dir`, asserts failure with an error that contains `expected`.
fn fails(dir: &Path, args: &[&str], expected: &str) {
    let out = voltlens(dir).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "voltlens {} succeeded", args.join(" "));
    assert!(stderr.contains(expected), "voltlens {}: expected '{expected}' in\n{stderr}", args.join(" "));
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    std::fs::write(dir.join(name), text).unwrap();
    name.to_owned()
}

const MODEL_TOML: &str = "[arch]\nlayers = 2\nd_model = 16\nheads = 2\nd_mlp = 32\ncontext = 24\n\
                          [train]\nsteps = 30\nbatch = 8\nwarmup = 2\nval_every = 10\nval_windows = 4\nstride = 8\n";
const TRANSCODER_TOML: &str = "eval_tokens = 512\n[config]\nvariant = \"clt\"\nfeatures = 16\nsteps = 20\nbatch = 64\nshuffle_buffer = 256\n";

/// A pipeline with every stage, sized to run in seconds.
fn tiny_pipeline(dir: &Path) -> String {
    tiny_pipeline_named(dir, "tiny")
}

/// The tiny pipeline, named `name` (its stages on the CPU unless `run --device` says).
fn tiny_pipeline_named(dir: &Path, name: &str) -> String {
    let text = format!(
        "name = \"{name}\"\nseed = 5\nruns_dir = \"runs\"\n\
         [data]\nsource = \"synth\"\n[data.synth]\ncells = 3\ncycles = 1\nprotocols = [\"cccv\", \"drive\"]\n\
         [model.arch]\nlayers = 2\nd_model = 16\nheads = 2\nd_mlp = 32\ncontext = 24\n\
         [model.train]\nsteps = 30\nbatch = 8\nwarmup = 2\nval_every = 10\nval_windows = 4\nstride = 8\n\
         [transcoder]\neval_tokens = 512\n[transcoder.config]\nfeatures = 16\nsteps = 20\nbatch = 64\nshuffle_buffer = 256\n\
         [record]\n[mine]\n[label]\nn_shifts = 20\nn_bootstrap = 5\n[circuits]\ntop_features = 2\nwindow = 16\n\
         [report]\ndir = \"{}\"\n[[report.explain]]\ncell = \"synth-0000-cccv\"\nfrom = 0\nto = 3600\ntop = 5\n",
        dir.join("reports").display()
    );
    write(dir, &format!("{name}.toml"), &text)
}

/// Every stage that runs on a device (model training and evaluation, transcoder training with the
/// autodiff trainer, record, mine's output effects), and the MLSAE analysis, on burn's wgpu backend, whose kernels are the GPU path's
/// (burn-cubecl's, as on CUDA): the tiny pipeline gives the CPU run's results to float rounding.
/// Any Vulkan device runs it, Mesa's software lavapipe included (CI installs that), so the GPU
/// path is tested on machines without a GPU.
#[cfg(feature = "wgpu")]
#[test]
fn the_tiny_pipeline_on_the_gpu_backend_gives_the_cpu_results() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let json = |run: &str, file: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("runs").join(run).join(file)).unwrap()).unwrap()
    };
    // `run --device`: every stage that takes a device (the pipeline file names none).
    for device in ["cpu", "wgpu"] {
        ok(dir, &["run", &tiny_pipeline_named(dir, device), "--device", device]);
    }
    let manifest = |stage: &str| json("wgpu", &format!("{stage}/manifest.json"));
    for (stage, setting) in [("model", "/train/device"), ("model", "/eval/device"), ("transcoder", "/device"), ("record", "/device"), ("mine", "/device")] {
        assert_eq!(manifest(stage)["config"].pointer(setting).and_then(|v| v.as_str()), Some("wgpu"), "{stage}{setting}");
    }
    let close = |what: &str, cpu: f64, gpu: f64, rel: f64| {
        assert!((cpu - gpu).abs() <= rel * cpu.abs().max(1e-6), "{what}: cpu {cpu} vs wgpu {gpu}");
    };
    let (cpu, gpu) = (json("cpu", "model/eval/metrics.json"), json("wgpu", "model/eval/metrics.json"));
    for metric in ["/overall/next_step/rmse_mv", "/overall/next_step/skill", "/overall/discharge_rollout/rmse_mv"] {
        close(metric, cpu.pointer(metric).unwrap().as_f64().unwrap(), gpu.pointer(metric).unwrap().as_f64().unwrap(), 1e-3);
    }
    let (cpu, gpu) = (json("cpu", "transcoder/metrics.json"), json("wgpu", "transcoder/metrics.json"));
    for (layer, (c, g)) in cpu["heldout"]["fvu_per_layer"].as_array().unwrap().iter().zip(gpu["heldout"]["fvu_per_layer"].as_array().unwrap()).enumerate() {
        close(&format!("held-out FVU, layer {layer}"), c.as_f64().unwrap(), g.as_f64().unwrap(), 1e-3);
    }
    // Replacement fidelity, the transcoder's encoder on the device in the wgpu run.
    for run in ["/fidelity/all_layers", "/fidelity/mse/all_replaced", "/fidelity/mse/layer_1"] {
        close(run, cpu.pointer(run).unwrap().as_f64().unwrap(), gpu.pointer(run).unwrap().as_f64().unwrap(), 1e-3);
    }

    // The records: the same activations, where a feature sits within rounding of zero on one
    // side and not at all on the other excepted.
    let entries = |run: &str| -> std::collections::BTreeMap<(u32, u32, usize, u32), f32> {
        let acts = voltlens::record::read_sparse(&dir.join("runs").join(run).join("record")).unwrap();
        let mut out = std::collections::BTreeMap::new();
        for f in &acts.features {
            for cell in 0..acts.cell_ids.len() {
                for i in f.cell_offsets[cell]..f.cell_offsets[cell + 1] {
                    out.insert((f.layer, f.feature, cell, f.rows[i]), f.values[i]);
                }
            }
        }
        out
    };
    let (cpu, gpu) = (entries("cpu"), entries("wgpu"));
    let top = cpu.values().fold(0f32, |m, &v| m.max(v));
    assert!(top > 0.0 && cpu.len() > 100, "the CPU record has {} entries, top {top}", cpu.len());
    for key in cpu.keys().chain(gpu.keys()) {
        let (c, g) = (cpu.get(key).copied().unwrap_or(0.0), gpu.get(key).copied().unwrap_or(0.0));
        assert!((c - g).abs() <= 1e-3 * top, "activation (layer, feature, cell, row) {key:?}: cpu {c} vs wgpu {g}");
    }

    // Output effects (the replacement model with one feature ablated, the model on the device).
    let effects = |run: &str| -> Vec<((u64, u64), f64)> {
        let mined = json(run, "mine/mined.json");
        let rows = mined["features"].as_array().unwrap().iter();
        rows.map(|f| ((f["layer"].as_u64().unwrap(), f["feature"].as_u64().unwrap()), f["output_effect_mv"].as_f64().unwrap())).collect()
    };
    let (cpu, gpu) = (effects("cpu"), effects("wgpu"));
    let top = cpu.iter().fold(0f64, |m, (_, e)| m.max(e.abs()));
    assert!(top > 1e-3 && cpu.len() > 4, "{} effects, largest {top} mV", cpu.len());
    assert_eq!(cpu.iter().map(|c| c.0).collect::<Vec<_>>(), gpu.iter().map(|g| g.0).collect::<Vec<_>>(), "the same features mined");
    for ((feature, c), (_, g)) in cpu.iter().zip(&gpu) {
        assert!((c - g).abs() <= 1e-3 * top, "output effect of {feature:?}: cpu {c} mV vs wgpu {g} mV");
    }

    // The MLSAE analysis: its finite-difference JVPs through the model on each device.
    let (data, model) = ("runs/cpu/data/dataset", "runs/cpu/model/model");
    write(dir, "mlsae.toml", "eval_tokens = 256\n[config]\nvariant = \"mlsae\"\nfeatures = 16\nsteps = 20\nbatch = 64\nshuffle_buffer = 256\nactivation = { kind = \"topk\", k = 3 }\n");
    ok(dir, &["train-transcoder", "--data", data, "--model", model, "--out", "mlsae", "--config", "mlsae.toml"]);
    let alignment = |device: &str| -> Vec<serde_json::Value> {
        ok(dir, &["circuits", "mlsae", "--transcoder", "mlsae", "--model", model, "--data", data, "--out", device, "--top", "3", "--device", device]);
        let analysis: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join(device).join("mlsae.json")).unwrap()).unwrap();
        analysis["alignment"].as_array().unwrap().clone()
    };
    let (cpu, gpu) = (alignment("cpu"), alignment("wgpu"));
    assert!(cpu.len() >= 3 && cpu.len() == gpu.len(), "{} alignment rows on the CPU, {} on wgpu", cpu.len(), gpu.len());
    for (c, g) in cpu.iter().zip(&gpu) {
        assert_eq!((&c["feature"], &c["trigger_layer"], &c["target_layer"]), (&g["feature"], &g["trigger_layer"], &g["target_layer"]));
        let row = format!("feature {}, L{}→L{}", c["feature"], c["trigger_layer"], c["target_layer"]);
        for field in ["cosine", "strength"] {
            let (c, g) = (c[field].as_f64().unwrap(), g[field].as_f64().unwrap());
            assert!((c - g).abs() <= 1e-3 * (1.0 + c.abs()), "{field} of {row}: cpu {c} vs wgpu {g}");
        }
    }
}

#[test]
fn every_command_runs_on_a_tiny_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let repo = common::repo();

    // Data.
    assert!(ok(dir, &["schema"]).contains("\"timeseries\""));
    ok(dir, &["schema", "--write", "schemas"]);
    assert!(dir.join("schemas/cells.schema.json").exists());
    // The config file's cells and seed hold when the flags are not given.
    let synth = write(dir, "synth.toml", "cells = 2\nseed = 7\ncycles = 1\n");
    ok(dir, &["synth", "--config", &synth, "--out", "synth"]);
    let cells = voltlens::data::canonical::Dataset::load_cells(&dir.join("synth")).unwrap();
    assert_eq!(cells.len(), 2, "synth --config ignored the file's cells");
    ok(dir, &["synth", "--config", &synth, "--out", "synth3", "--cells", "3"]);
    assert_eq!(voltlens::data::canonical::Dataset::load_cells(&dir.join("synth3")).unwrap().len(), 3, "a flag wins over the file");
    let csv = repo.join("data/cyclers/FastCharge_000025_CH8.csv");
    assert!(ok(dir, &["ingest", csv.to_str().unwrap(), "--out", "ingested"]).contains("1 cells") || dir.join("ingested/cells.parquet").exists());
    let inspect = ok(dir, &["inspect", "ingested", "--json"]);
    assert!(inspect.contains("FastCharge_000025_CH8"), "{inspect}");

    // The whole pipeline, then again (all skipped), then the report redrawn.
    let pipeline = tiny_pipeline(dir);
    // A sweep folder an older version of the pipeline left: this pipeline has no [sweep], so its
    // circuits stage must not read it.
    std::fs::create_dir_all(dir.join("runs/tiny/sweep")).unwrap();
    std::fs::write(dir.join("runs/tiny/sweep/pareto.json"), "[{\"stale\": true").unwrap();
    ok(dir, &["run", &pipeline]);
    // The explained stretch is linked from the index, and its page finds the report's stylesheet.
    let index = std::fs::read_to_string(dir.join("reports/tiny/index.html")).unwrap();
    let explained = dir.join("reports/tiny/explain/synth-0000-cccv_0-3600s");
    assert!(index.contains("href=\"explain/synth-0000-cccv_0-3600s/index.html\""), "no link to the explain page");
    let page = std::fs::read_to_string(explained.join("index.html")).unwrap();
    let css = page.split("rel=\"stylesheet\" href=\"").nth(1).and_then(|s| s.split('"').next()).unwrap();
    assert!(explained.join(css).is_file(), "{css} does not resolve from the explain page");
    let again = ok(dir, &["batch", &pipeline]);
    assert!(again.contains("tiny"), "{again}");
    ok(dir, &["report", "runs/tiny", "--out", "report2"]);
    common::assert_drawn(&first_png(&dir.join("report2/features")), None, 8);

    // Each stage on its own, from the pipeline's outputs.
    let (data, model, tc) = ("runs/tiny/data/dataset", "runs/tiny/model/model", "runs/tiny/transcoder");
    write(dir, "model.toml", MODEL_TOML);
    ok(dir, &["train-model", "--data", data, "--out", "m2", "--config", "model.toml", "--steps", "5"]);
    ok(dir, &["eval-model", "--data", data, "--model", model, "--out", "eval2"]);
    write(dir, "tc.toml", TRANSCODER_TOML);
    ok(dir, &["train-transcoder", "--data", data, "--model", model, "--out", "tc2", "--config", "tc.toml"]);
    ok(dir, &["cache-activations", "--data", data, "--model", model, "--out", "acts.safetensors", "--tokens", "300"]);
    let sweep = "tokens = 1000\neval_tokens = 256\n[base]\nfeatures = 16\nsteps = 10\nbatch = 64\nshuffle_buffer = 256\n\
                 [[grid]]\nvariants = [\"mlsae\"]\nactivations = [{ kind = \"topk\", k = 3 }]\n";
    write(dir, "sweep.toml", sweep);
    ok(dir, &["sweep", "--data", data, "--model", model, "--out", "sweep2", "--config", "sweep.toml"]);
    ok(dir, &["record", "--data", data, "--model", model, "--transcoder", tc, "--out", "rec2"]);
    ok(dir, &["mine", "--record", "rec2", "--out", "mine2"]);
    write(dir, "label.toml", "n_shifts = 20\nn_bootstrap = 5\n");
    ok(dir, &["label", "--data", data, "--record", "rec2", "--out", "label2", "--config", "label.toml"]);
    // Standalone, `mine --effect-sample` ablates the features `label --sample` labels.
    ok(dir, &["mine", "--record", "rec2", "--out", "mine3", "--data", data, "--model", model, "--transcoder", tc, "--effect-sample", "3"]);
    ok(dir, &["label", "--data", data, "--record", "rec2", "--out", "label3", "--config", "label.toml", "--sample", "3"]);
    let mined: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("mine3/mined.json")).unwrap()).unwrap();
    let mut ablated: Vec<String> = mined["features"].as_array().unwrap().iter().filter(|f| f["output_effect_mv"].is_number()).map(|f| format!("{},{}", f["layer"], f["feature"])).collect();
    let mut labelled: Vec<String> = std::fs::read_to_string(dir.join("label3/labels.csv")).unwrap().lines().skip(1).map(|l| l.split(',').take(2).collect::<Vec<_>>().join(",")).collect();
    ablated.sort();
    labelled.sort();
    assert!(ablated.len() == 3 && ablated == labelled, "ablated {ablated:?}, labelled {labelled:?}");

    // Circuits.
    let cell = cells_of(&dir.join(data))[0].clone();
    ok(dir, &["circuits", "pullback", "--feature", "L1_F0", "--transcoder", tc, "--model", model]);
    let on = ["--feature", "L0_F0", "--transcoder", tc, "--data", data, "--model", model, "--cell", &cell];
    ok(dir, &[&["circuits", "steer", "--scale", "2", "--plot", "steer.png"][..], &on].concat());
    common::assert_drawn(&dir.join("steer.png"), None, 8);
    ok(dir, &[&["circuits", "ablate"][..], &on].concat());
    let at = ["--data", data, "--model", model, "--transcoder", tc, "--cell", &cell, "--step", "20", "--window", "16"];
    ok(dir, &[&["circuits", "graph", "--out", "graph2"][..], &at].concat());
    ok(dir, &[&["circuits", "attribute", "--feature", "L1_F0"][..], &at].concat());
    let mlsae = std::fs::read_dir(dir.join("sweep2/runs")).unwrap().next().unwrap().unwrap().path();
    ok(dir, &["circuits", "mlsae", "--transcoder", mlsae.to_str().unwrap(), "--model", model, "--data", data, "--out", "mlsae2", "--top", "2"]);

    // Benchmarks, tiny.
    ok(dir, &["bench", "data", "--rows", "2000", "--work-dir", "bench-scratch"]);
    assert!(!dir.join("bench-scratch").exists(), "bench data removes its own scratch folder");
    ok(dir, &["bench", "graph", "--windows", "8", "--features", "16", "--feature-counts", "16", "--l0", "2"]);
    ok(dir, &["bench", "model", "--steps", "1"]);
    let bt = ok(dir, &["bench", "transcoder", "--steps", "2", "--features", "32", "--batch", "64", "--pool", "256", "--work-dir", "bench-scratch"]);
    assert!(bt.contains("sparse") && bt.contains("autodiff"), "{bt}");
    assert!(!dir.join("bench-scratch").exists(), "bench transcoder removes its own scratch folder");
}

/// `[label] sample = N` in a pipeline: the label stage labels N live features, and mine's output
/// effects and the report's pages are those same features, not every live one.
#[test]
fn a_sampled_pipeline_ablates_labels_and_pages_the_same_features() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pipeline = tiny_pipeline_named(dir, "sampled");
    let text = std::fs::read_to_string(dir.join(&pipeline)).unwrap().replace("[label]\n", "[label]\nsample = 4\n");
    write(dir, &pipeline, &text);
    ok(dir, &["run", &pipeline]);
    let run = dir.join("runs/sampled");
    let labels: std::collections::BTreeSet<(u64, u64)> = std::fs::read_to_string(run.join("label/labels.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split(',').map(|v| v.parse::<u64>().unwrap());
            (f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    let mined: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("mine/mined.json")).unwrap()).unwrap();
    let features = mined["features"].as_array().unwrap();
    let ablated: std::collections::BTreeSet<(u64, u64)> =
        features.iter().filter(|f| f["output_effect_mv"].is_number()).map(|f| (f["layer"].as_u64().unwrap(), f["feature"].as_u64().unwrap())).collect();
    assert!(labels.len() == 4 && features.len() > 4, "{} labelled of {} live", labels.len(), features.len());
    assert_eq!(ablated, labels, "mine ablated other features than the label stage sampled");
    let pages: std::collections::BTreeSet<(u64, u64)> = std::fs::read_dir(dir.join("reports/sampled/features"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".html").map(str::to_owned))
        .map(|id| {
            let (l, f) = id.trim_start_matches('L').split_once("_F").unwrap();
            (l.parse().unwrap(), f.parse().unwrap())
        })
        .collect();
    assert_eq!(pages, labels);
}

/// A `cells.json` entry that names no file of the folder (a misspelt id) is said, with the ids
/// there are: else its cell would go without what the entry states, silently.
#[test]
fn a_cells_json_entry_naming_no_file_is_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::copy(common::repo().join("tests/fixtures/formats/arbin_small.csv"), src.join("arbin_small.csv")).unwrap();
    let ingest = |json: &str| {
        std::fs::write(src.join("cells.json"), json).unwrap();
        let out = voltlens(tmp.path()).args(["ingest", "src", "--out", "ds"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let warned = ingest(r#"[{"cell_id": "arbin_smal", "nominal_capacity_ah": 1.5}]"#);
    assert!(warned.contains("1 of 1 entries name no file") && warned.contains("'arbin_smal'") && warned.contains("(here arbin_small)"), "{warned}");
    let matched = ingest(r#"[{"cell_id": "arbin_small", "nominal_capacity_ah": 1.5}]"#);
    assert!(!matched.contains("cells.json"), "{matched}");
}

fn first_png(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|x| x == "png")).expect("a card")
}

fn cells_of(dataset: &Path) -> Vec<String> {
    voltlens::data::canonical::Dataset::load_cells(dataset).unwrap().into_iter().map(|c| c.cell_id).collect()
}

#[test]
fn every_command_names_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let missing = "no-such-dir";
    std::fs::write(dir.join("a-file"), "x").unwrap();
    fails(dir, &["ingest", missing, "--out", "o"], missing);
    fails(dir, &["synth", "--config", "no-such.toml", "--out", "o"], "no-such.toml");
    fails(dir, &["inspect", missing], missing);
    fails(dir, &["schema", "--write", "a-file/sub"], "a-file");
    fails(dir, &["run", "no-such.toml"], "no-such.toml");
    fails(dir, &["batch", "no-such.toml"], "no-such.toml");
    fails(dir, &["train-model", "--data", missing, "--out", "m"], missing);
    fails(dir, &["eval-model", "--data", missing, "--model", missing, "--out", "e"], missing);
    fails(dir, &["train-transcoder", "--data", missing, "--model", missing, "--out", "t"], missing);
    fails(dir, &["cache-activations", "--data", missing, "--model", missing, "--out", "a"], missing);
    fails(dir, &["sweep", "--data", missing, "--model", missing, "--out", "s", "--config", "no-such.toml"], "no-such.toml");
    fails(dir, &["record", "--data", missing, "--model", missing, "--transcoder", missing, "--out", "r"], missing);
    fails(dir, &["mine", "--record", missing, "--out", "m"], missing);
    fails(dir, &["label", "--data", missing, "--record", missing, "--out", "l"], missing);
    fails(dir, &["label", "--data", missing, "--record", missing, "--out", "l", "--sample", "0"], "sample = 0 labels no feature");
    fails(dir, &["report", missing], missing);
    fails(dir, &["circuits", "pullback", "--feature", "F7", "--transcoder", missing, "--model", missing], "F7");
    let on = ["--feature", "L0_F0", "--transcoder", missing, "--data", missing, "--model", missing, "--cell", "c"];
    fails(dir, &[&["circuits", "steer", "--scale", "2"][..], &on].concat(), missing);
    fails(dir, &[&["circuits", "ablate"][..], &on].concat(), missing);
    let at = ["--data", missing, "--model", missing, "--transcoder", missing, "--cell", "c", "--step", "3"];
    fails(dir, &[&["circuits", "graph", "--out", "g"][..], &at].concat(), missing);
    fails(dir, &[&["circuits", "attribute", "--feature", "L0_F0"][..], &at].concat(), missing);
    fails(dir, &["circuits", "mlsae", "--transcoder", missing, "--model", missing, "--data", missing, "--out", "o"], missing);
    // A scratch folder holding the user's files is refused, and kept.
    std::fs::create_dir_all(dir.join("work")).unwrap();
    std::fs::write(dir.join("work/notes.txt"), "keep").unwrap();
    fails(dir, &["bench", "data", "--rows", "100", "--work-dir", "work"], "not written by VoltLens");
    assert!(dir.join("work/notes.txt").exists());
    fails(dir, &["bench", "graph", "--windows", "0"], "window");
    fails(dir, &["bench", "model", "--backend", "no-such-backend"], "no-such-backend");
    // Without a GPU feature a run on that device is refused, and the scratch folder does not stay behind.
    for (device, built) in [("cuda", cfg!(feature = "cuda")), ("wgpu", cfg!(feature = "wgpu"))] {
        if !built {
            fails(dir, &["bench", "transcoder", "--device", device, "--steps", "1", "--work-dir", "gpu-scratch"], &format!("--features {device}"));
            assert!(!dir.join("gpu-scratch").exists(), "bench transcoder leaves no scratch folder behind on failure");
            fails(dir, &["train-model", "--data", "synth", "--out", "m", "--device", device], &format!("--features {device}"));
            fails(dir, &["run", "tiny.toml", "--device", device], &format!("--features {device}"));
        }
    }
}
