//! The report (DESIGN §6) drawn from planted features on the shipped PyBaMM cells: every live
//! feature gets a card of the card size, the index lists them all and points only at local files
//! that exist, and `only` redraws just the chosen cards.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use voltlens::report::{card_file, write_report, CardScope, ReportSummary, CARD_SIZE, THUMB_SIZE};

/// Planted features and the report drawn from them, built once per test binary (the browser
/// test includes this file for the same fixture).
pub mod fixture {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use voltlens::data::canonical::Dataset;
    use voltlens::data::ingest::{ingest, IngestOptions};
    use voltlens::label::covariates::StepKind;
    use voltlens::label::covariates::{Covariate, Covariates};
    use voltlens::label::{label_features, split_halves, FeatureLabel, Half, LabelConfig};
    use voltlens::mine::{mine, FeatureActivations, MineConfig, MinedFeatures, SparseActivations};
    use voltlens::report::ReportInputs;
    use voltlens::circuits::Embedding;
    use voltlens::model::N_CHANNELS;
    use voltlens::transcoder::{Transcoder, TranscoderConfig};

    pub struct Fixture {
        pub _tmp: tempfile::TempDir,
        pub dataset: Dataset,
        pub covariates: Vec<Covariates>,
        pub acts: SparseActivations,
        pub mined: MinedFeatures,
        pub labels: Vec<FeatureLabel>,
        pub transcoder: Transcoder,
        pub embedding: Embedding,
        /// A circuits stage folder holding a small hand-made attribution graph ([`graph`]).
        pub circuits: PathBuf,
        /// The full report, written once.
        pub report: PathBuf,
        pub summary: ReportSummary,
    }

    impl Fixture {
        pub fn inputs(&self) -> ReportInputs<'_> {
            ReportInputs {
                run_name: "report-test".into(),
                dataset: &self.dataset,
                acts: &self.acts,
                mined: &self.mined,
                labels: &self.labels,
                covariates: &self.covariates,
                transcoder: Some(&self.transcoder),
                embedding: Some(&self.embedding),
                model_metrics: Some(serde_json::json!({ "val_loss": 0.0123, "voltage_rmse_mv": 4.2 })),
                transcoder_metrics: Some(serde_json::json!({ "fvu": [0.08, 0.12], "l0": [11.5, 14.0], "dead_fraction": 0.1 })),
                run_config: serde_json::json!({ "run": "report-test", "label": { "n_shifts": 30, "n_bootstrap": 10 }, "circuits": { "dir": self.circuits } }),
                paths: &[],
                explained: &[],
            }
        }
    }

    /// Layer, feature, and the activation at one step of a cell (before jitter).
    type Plant = (u32, u32, Box<dyn Fn(&Covariates, usize) -> f32 + Sync>);

    fn planted() -> Vec<Plant> {
        let cv = StepKind::ALL.iter().position(|k| *k == StepKind::CvHold).unwrap() as f32;
        vec![
            (0, 0, Box::new(|c, i| 3.0 * (c.column(Covariate::Soc)[i] - 0.8).max(0.0))),
            (0, 1, Box::new(move |c, i| if c.column(Covariate::StepKind)[i] == cv { 1.0 } else { 0.0 })),
            (0, 2, Box::new(|c, i| (-c.column(Covariate::CRate)[i] - 1.5).max(0.0))),
            (0, 4, Box::new(|_, _| 0.0)),
            (1, 0, Box::new(|c, i| 0.05 + (c.column(Covariate::Voltage)[i] - 2.5).max(0.0))),
            (1, 1, Box::new(|c, i| (-c.column(Covariate::TimeSinceCurrentChange)[i] / 120.0).exp() * (c.column(Covariate::AbsCRate)[i] < 0.01) as u8 as f32)),
            (1, 3, Box::new(|_, _| 0.0)),
        ]
    }

    fn dense(covs: &[Covariates], f: &(dyn Fn(&Covariates, usize) -> f32 + Sync), seed: u64) -> Vec<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        covs.iter().map(|c| (0..c.len()).map(|i| (f(c, i) * (0.8 + 0.4 * rng.random::<f32>())).max(0.0)).collect()).collect()
    }

    /// Bursty noise on one cell in ten, for a feature with no label.
    fn noise(covs: &[Covariates], seed: u64) -> Vec<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        covs.iter().map(|c| (0..c.len()).map(|_| if rng.random::<f32>() < 0.02 { rng.random::<f32>() * 2.0 } else { 0.0 }).collect()).collect()
    }

    fn build() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/pybamm-chen2020");
        let ds_dir = tmp.path().join("chen2020");
        ingest(&[src], &ds_dir, &IngestOptions::default()).unwrap();
        let dataset = Dataset::load(&ds_dir).unwrap();
        let covariates = Covariates::for_dataset(&dataset);
        let mut features: Vec<FeatureActivations> =
            planted().iter().enumerate().map(|(k, (l, f, g))| FeatureActivations::from_dense(*l, *f, &dense(&covariates, g.as_ref(), k as u64))).collect();
        features.push(FeatureActivations::from_dense(1, 2, &noise(&covariates, 99)));
        let label_cfg = LabelConfig { n_shifts: 30, n_bootstrap: 10, ..LabelConfig::default() };
        // High SOC on the explain cells alone: silent on the test cells, so no label can be tested.
        let halves = split_halves(&dataset.cells, &label_cfg);
        let explain_only: Vec<Vec<f32>> = covariates.iter().zip(&halves).map(|(c, &h)| c.column(Covariate::Soc).iter().map(|&soc| (h != Half::Test && soc > 0.8) as u8 as f32).collect()).collect();
        features.push(FeatureActivations::from_dense(1, 4, &explain_only));
        let acts = SparseActivations { cell_ids: covariates.iter().map(|c| c.cell_id.clone()).collect(), cell_rows: covariates.iter().map(|c| c.len()).collect(), features };
        let mined = mine(&acts, &MineConfig::default());
        let labels = label_features(&acts, &covariates, &dataset.cells, &label_cfg).unwrap();
        let mut transcoder = Transcoder::zeros(&TranscoderConfig { features: 5, ..TranscoderConfig::default() }, 2, 8);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        transcoder.w_dec.iter_mut().flatten().for_each(|w| *w = rng.random::<f32>() - 0.5);
        transcoder.w_enc.iter_mut().for_each(|w| *w = rng.random::<f32>() - 0.5);
        let w_embed = (0..N_CHANNELS * 8).map(|_| rng.random::<f32>() - 0.5).collect();
        let embedding = Embedding { w_embed, channels: voltlens::model::CHANNELS.iter().map(|c| c.to_string()).collect(), std: vec![2.0; N_CHANNELS] };
        // VOLTLENS_REPORT_DIR keeps the report for a human to look at.
        let report = std::env::var_os("VOLTLENS_REPORT_DIR").map_or_else(|| tmp.path().join("reports").join("report-test"), PathBuf::from);
        let circuits = tmp.path().join("circuits");
        write_circuits_stage(&circuits);
        let mut fixture = Fixture { _tmp: tmp, dataset, covariates, acts, mined, labels, transcoder, embedding, circuits, summary: dummy_summary(), report };
        fixture.summary = write_report(&fixture.inputs(), &fixture.report, CardScope::All).unwrap();
        fixture
    }

    fn node(id: &str, layer: &str, pos: usize, kind: &str, clerp: &str) -> serde_json::Value {
        serde_json::json!({
            "node_id": id, "feature": 0, "layer": layer, "ctx_idx": pos, "feature_type": kind, "token_prob": 0.0,
            "is_target_logit": kind == "logit", "run_idx": 0, "reverse_ctx_idx": 0, "jsNodeId": id, "clerp": clerp,
            "influence": 0.5, "activation": if kind == "cross layer transcoder" { Some(1.0) } else { None },
        })
    }

    /// A two-layer graph over the planted features: inputs feed L0_F0 and L0_F1, which feed L1_F0
    /// (L0_F1 from an earlier step), which feeds the prediction; one error node; one input with
    /// no edge, which the viewer must not draw.
    pub fn graph() -> serde_json::Value {
        let f = "cross layer transcoder";
        let nodes = vec![
            node("E_0_3", "E", 3, "embedding", "voltage V_t = 3.912 V"),
            node("E_1_2", "E", 2, "embedding", "C-rate now = -0.50 C"),
            node("E_2_3", "E", 3, "embedding", "Δt now = 10 s"),
            node("0_0_3", "0", 3, f, "L0_F0"),
            node("0_1_2", "0", 2, f, "L0_F1"),
            node("0_-1_3", "0", 3, "mlp reconstruction error", "error L0 @3"),
            node("1_0_3", "1", 3, f, "L1_F0"),
            node("3_0_3", "3", 3, "logit", "predicted V 3.913 V"),
        ];
        let link = |s: &str, t: &str, w: f64| serde_json::json!({ "source": s, "target": t, "weight": w });
        let links = vec![
            link("E_0_3", "0_0_3", 0.5),
            link("E_1_2", "0_1_2", -0.3),
            link("0_0_3", "1_0_3", 0.8),
            link("0_1_2", "1_0_3", 0.2),
            link("0_-1_3", "1_0_3", 0.1),
            link("1_0_3", "3_0_3", 1.0),
            link("0_0_3", "3_0_3", -0.4),
        ];
        serde_json::json!({
            "metadata": { "slug": "fixture-step3", "scan": "voltlens", "transcoder_list": [], "prompt_tokens": ["a", "b", "c", "d"], "prompt": "cell fixture, steps 0–3", "node_threshold": 0.8, "schema_version": 1 },
            "qParams": { "pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": "" },
            "nodes": nodes,
            "links": links,
        })
    }

    /// What the circuits stage leaves for the report: its summary, the graph (JSON and PNG) and
    /// the pullback tables.
    fn write_circuits_stage(dir: &Path) {
        use plotters::prelude::*;
        std::fs::create_dir_all(dir.join("graph")).unwrap();
        std::fs::write(dir.join("graph/fixture.json"), serde_json::to_string(&graph()).unwrap()).unwrap();
        BitMapBackend::new(&dir.join("graph/fixture.png"), (40, 30)).into_drawing_area().fill(&WHITE).unwrap();
        std::fs::write(dir.join("pullbacks.md"), "# Pullbacks\n").unwrap();
        let summary = serde_json::json!({ "features": ["L0_F0"], "graph": { "cell_id": "fixture", "step": 3, "png": "fixture.png", "json": "fixture.json", "scores": { "pruned_replacement": 0.9, "pruned_completeness": 0.95 } } });
        std::fs::write(dir.join("circuits.json"), summary.to_string()).unwrap();
    }

    fn dummy_summary() -> ReportSummary {
        ReportSummary { dir: PathBuf::new(), cards: Vec::new(), live_features: 0, labelled: 0, card_wall_s: 0.0, card_ms_mean: 0.0 }
    }

    pub fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(build)
    }
}

/// Width and height from a PNG's IHDR chunk.
pub fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[1..4], b"PNG", "{} is not a PNG", path.display());
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn live_ids() -> Vec<(u32, u32)> {
    fixture::get().mined.features.iter().filter(|f| f.density > 0.0).map(|f| (f.layer, f.feature)).collect()
}

#[test]
fn every_live_feature_gets_a_card_and_a_thumbnail_and_dead_ones_none() {
    let fx = fixture::get();
    let live = live_ids();
    assert_eq!(live.len(), 7, "planted: seven live features, two dead");
    assert_eq!(fx.summary.live_features, live.len());
    for &(l, f) in &live {
        let card = fx.report.join("features").join(card_file(l, f));
        common::assert_drawn(&card, Some(CARD_SIZE), 8);
        common::assert_drawn(&fx.report.join("features/thumbs").join(card_file(l, f)), Some(THUMB_SIZE), 8);
    }
    let cards = std::fs::read_dir(fx.report.join("features")).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png")).count();
    assert_eq!(cards, live.len(), "no cards for the dead features L0_F4, L1_F3");
    eprintln!(
        "cards: {} in {:.2} s wall, {:.0} ms per card on one core → 1,000 cards on 2 cores ≈ {:.0} s",
        fx.summary.cards.len(),
        fx.summary.card_wall_s,
        fx.summary.card_ms_mean,
        fx.summary.card_ms_mean * 1000.0 / 2.0 / 1000.0
    );
}

/// Every `src="…"` and `href="…"` value in the page.
fn references(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            out.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    out
}

#[test]
fn index_lists_every_live_feature_and_points_only_at_local_files() {
    let fx = fixture::get();
    let html = std::fs::read_to_string(fx.report.join("index.html")).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"), "the page must work offline");
    for (l, f) in live_ids() {
        assert!(html.contains(&format!("data-id=\"L{l}_F{f}\"")), "L{l}_F{f} missing from the table");
    }
    assert!(!html.contains("data-id=\"L0_F4\""), "dead features are not listed");
    let refs = references(&html);
    assert!(refs.len() >= 2 * live_ids().len() + 3, "cards, thumbnails and overview figures: {refs:?}");
    for r in refs {
        assert!(!r.contains("://") && !r.starts_with('/'), "not a relative local path: {r}");
        assert!(fx.report.join(&r).is_file(), "index.html points at a missing file {r}");
    }
    let summary = std::fs::read_to_string(fx.report.join("summary.md")).unwrap();
    assert!(summary.contains("## Label coverage") && summary.contains("overview_heatmap.png"));
    // The index and the summary count the same dictionary: the transcoder's, dead features included.
    let size = fx.transcoder.shape.features * fx.transcoder.shape.encoders();
    let count = format!("{size} features, {} live", live_ids().len());
    assert!(html.contains(&count) && summary.contains(&count), "{count}");
    for table in ["tables/features.parquet", "tables/labels.parquet", "tables/examples.parquet"] {
        assert!(fx.report.join(table).is_file(), "{table}");
    }
}

#[test]
fn label_sentences_reach_the_page_escaped() {
    let fx = fixture::get();
    let html = std::fs::read_to_string(fx.report.join("index.html")).unwrap();
    let accepted: Vec<_> = fx.labels.iter().filter(|l| l.accepted).collect();
    assert!(accepted.len() >= 3, "planted features get labels: {:?}", fx.labels.iter().map(|l| &l.label).collect::<Vec<_>>());
    for l in accepted {
        assert!(html.contains(&voltlens::report::html::escape(&l.label)), "label of L{}_F{}: {}", l.layer, l.feature, l.label);
    }
}

#[test]
fn only_draws_the_chosen_cards() {
    let fx = fixture::get();
    let out = fx._tmp.path().join("reports").join("only");
    let summary = write_report(&fx.inputs(), &out, CardScope::Redraw(&[(0, 1), (1, 0)])).unwrap();
    let mut drawn: Vec<String> = std::fs::read_dir(out.join("features")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".png")).collect();
    drawn.sort();
    assert_eq!(drawn, vec!["L0_F1.png", "L1_F0.png"]);
    assert_eq!(summary.cards.len(), 2);
    assert!(!out.join("index.html").exists(), "`only` leaves the rest of the report alone");
    let err = write_report(&fx.inputs(), &out, CardScope::Redraw(&[(7, 7)])).unwrap_err().to_string();
    assert!(err.contains("L7_F7"), "{err}");
}

#[test]
fn a_clt_report_draws_its_banding_and_decoder_cosine() {
    let fx = fixture::get();
    let html = std::fs::read_to_string(fx.report.join("index.html")).unwrap();
    for figure in ["overview_clt_banding.png", "overview_decoder_cosine.png"] {
        let (w, h) = png_size(&fx.report.join(figure));
        assert!(w >= 900 && h >= 400, "{figure}: {w}×{h}");
        common::assert_drawn(&fx.report.join(figure), None, 8);
        assert!(html.contains(figure), "{figure} is not on the page");
    }
}

#[test]
fn a_report_never_replaces_a_folder_it_did_not_write() {
    let fx = fixture::get();
    let user = fx._tmp.path().join("reports").join("mine");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("paper.md"), "draft").unwrap();
    let err = write_report(&fx.inputs(), &user, CardScope::All).unwrap_err().to_string();
    assert!(err.contains("not written by VoltLens"), "{err}");
    assert_eq!(std::fs::read_to_string(user.join("paper.md")).unwrap(), "draft");
    assert!(!fx._tmp.path().join("reports/.mine.partial").exists(), "refused before drawing anything");
}

/// Every `src="…"` and `href="…"` of a page, without its `#…` part, must name a file that exists
/// relative to the page.
fn assert_links_resolve(page: &Path) {
    let html = std::fs::read_to_string(page).unwrap();
    let dir = page.parent().unwrap();
    for r in references(&html) {
        let file = r.split('#').next().unwrap();
        if file.is_empty() {
            continue;
        }
        assert!(!r.contains("://"), "{}: not a local link {r}", page.display());
        assert!(dir.join(file).is_file(), "{} links to a missing file {r}", page.display());
    }
}

#[test]
fn every_live_feature_gets_a_page_whose_links_resolve() {
    let fx = fixture::get();
    let live = live_ids();
    for (k, &(l, f)) in live.iter().enumerate() {
        let page = fx.report.join("features").join(format!("L{l}_F{f}.html"));
        assert_links_resolve(&page);
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(html.contains("id=\"feature-data\""), "L{l}_F{f}: the example windows' data is embedded");
        assert!(html.contains("href=\"../index.html\""), "back to the index");
        // Pages chain in index order: the first has no previous, the last no next.
        assert_eq!(html.contains("id=\"previous\""), k > 0, "L{l}_F{f}");
        assert_eq!(html.contains("id=\"next\""), k + 1 < live.len(), "L{l}_F{f}");
    }
    assert!(!fx.report.join("features/L0_F4.html").exists(), "no page for a dead feature");
    let index = std::fs::read_to_string(fx.report.join("index.html")).unwrap();
    assert!(index.contains("<title>VoltLens report: report-test"), "titled by the run, not the output folder");
    for page in ["index.html", "graph.html"] {
        assert_links_resolve(&fx.report.join(page));
    }
}

#[test]
fn a_feature_page_shows_why_its_label_was_accepted_or_rejected() {
    let fx = fixture::get();
    for l in fx.labels.iter().filter(|l| l.density > 0.0) {
        let html = std::fs::read_to_string(fx.report.join("features").join(format!("L{}_F{}.html", l.layer, l.feature))).unwrap();
        let Some(best) = l.candidates.first() else { continue };
        assert!(html.contains(&voltlens::report::html::escape(&best.sentence)), "best candidate of L{}_F{}", l.layer, l.feature);
        let fails = html.matches("class=\"fail\"").count();
        // An accepted label passes every check; a rejected one fails at least one, or could not
        // be tested and shows no checks; either says why.
        let untested = l.test_density == 0.0;
        assert_eq!(fails == 0, l.accepted || untested, "L{}_F{}: accepted {} but {fails} failed checks", l.layer, l.feature, l.accepted);
        assert_eq!(html.contains("id=\"checks\""), !untested, "L{}_F{}: checks shown though untested, or missing", l.layer, l.feature);
        if !l.accepted {
            let reason = l.label.trim_start_matches("unexplained: ").split(" (closest").next().unwrap();
            assert!(html.contains(&voltlens::report::html::escape(reason)), "L{}_F{}: reason {reason:?} not on the page", l.layer, l.feature);
        }
        if let Some(b) = &l.baseline {
            assert!(html.contains("baseline (raw V/I)") && html.contains(&voltlens::report::html::escape(&b.sentence)), "baseline of L{}_F{}", l.layer, l.feature);
        }
    }
}

#[test]
fn co_firing_is_ranked_by_lift_so_an_always_on_feature_does_not_lead() {
    let fx = fixture::get();
    // L1_F0 (0.05 + voltage above 2.5 V) fires on every step: P(it | anything) = 1, but its lift is exactly 1.
    let html = std::fs::read_to_string(fx.report.join("features/L0_F1.html")).unwrap();
    let section = &html[html.find("Co-firing by lift").unwrap()..];
    let section = &section[..section.find("</table>").unwrap()];
    let rows: Vec<&str> = section.split("<tr>").skip(2).collect();
    assert!(rows.len() >= 2, "CV-hold feature co-fires with others: {section}");
    let lifts: Vec<f64> = rows.iter().map(|r| r.split("<td class=\"num\">").nth(1).unwrap().split('<').next().unwrap().parse().unwrap()).collect();
    assert!(lifts.windows(2).all(|w| w[0] >= w[1]), "sorted by lift: {lifts:?}");
    let dense = rows.iter().position(|r| r.contains("L1_F0")).expect("the always-on feature shares steps");
    assert!((lifts[dense] - 1.0).abs() < 0.05, "always-on feature has lift ≈ 1, got {}", lifts[dense]);
    assert!(dense > 0 && lifts[0] > 1.5, "a feature that really co-fires comes first: {lifts:?}");
}

#[test]
fn graph_viewer_embeds_the_graph_and_pages_list_graph_neighbours() {
    let fx = fixture::get();
    let html = std::fs::read_to_string(fx.report.join("graph.html")).unwrap();
    assert!(html.contains("id=\"graph-data\"") && html.contains("\"0_1_2\""), "the graph is embedded");
    assert!(html.contains("src=\"assets/graph.js\""));
    let page = std::fs::read_to_string(fx.report.join("features/L1_F0.html")).unwrap();
    let feeds = &page[page.find("Graph: what feeds it").unwrap()..];
    let feeds = &feeds[..feeds.find("</table>").unwrap()];
    // L0_F0 (0.8) before L0_F1 (0.2), each a link to its page; the error node by name.
    let (a, b) = (feeds.find("href=\"L0_F0.html\"").expect("L0_F0 linked"), feeds.find("href=\"L0_F1.html\"").expect("L0_F1 linked"));
    assert!(a < b, "strongest edge first: {feeds}");
    assert!(feeds.contains("0.800") && feeds.contains("error L0"), "{feeds}");
}

#[test]
fn explain_ranks_the_features_active_on_a_stretch() {
    use voltlens::data::schema::Method;
    use voltlens::report::explain::{explain, write_explanation, ExplainWindow};
    let fx = fixture::get();
    // The longest constant-voltage hold of any cell: the planted CV feature L0_F1 fires on every
    // step of it, the rest-only feature L1_F1 on none.
    let (cell, start, end) = (0..fx.dataset.data.len())
        .flat_map(|c| {
            let m = &fx.dataset.data[c].method;
            let mut runs = Vec::new();
            let mut i = 0;
            while i < m.len() {
                let j = (i..m.len()).find(|&j| m[j] != m[i]).unwrap_or(m.len());
                if m[i] == Method::ConstantVoltage {
                    runs.push((c, i, j));
                }
                i = j;
            }
            runs
        })
        .max_by_key(|&(_, a, b)| b - a)
        .expect("the chen2020 cells have CV holds");
    let data = &fx.dataset.data[cell];
    let window = ExplainWindow { cell: data.cell_id.clone(), from: data.test_time[start + 1], to: data.test_time[end - 2], top: 100 };
    let e = explain(&fx.dataset, &fx.acts, &fx.labels, &window).unwrap();
    let cv = e.features.iter().find(|f| (f.layer, f.feature) == (0, 1)).expect("the CV feature is active");
    assert_eq!(cv.firing, 1.0, "fires on every step of the hold");
    assert!(e.features.iter().all(|f| (f.layer, f.feature) != (1, 1)), "the rest feature is silent in a CV hold");
    assert!(e.features.windows(2).all(|w| w[0].relative >= w[1].relative), "most active first");
    let out = fx._tmp.path().join("explain");
    let files = write_explanation(&e, &fx.dataset, &fx.acts, &out).unwrap();
    let csv = std::fs::read_to_string(out.join("explain.csv")).unwrap();
    assert_eq!(csv.lines().count(), e.features.len() + 1, "one row per active feature");
    assert!(files.page.is_file() && png_size(&files.png).1 > 400);
    let page = std::fs::read_to_string(&files.page).unwrap();
    assert!(!page.contains("current switch"), "no switch inside the hold");
    // From the charge before the hold: its switch to the hold is logged as two rows 1 µs apart.
    let switch = (start.saturating_sub(20).max(1)..start + 1).find(|&i| data.test_time[i] - data.test_time[i - 1] < 1e-5).expect("the CC → CV switch logged twice");
    let across = ExplainWindow { from: data.test_time[switch - 3], ..window.clone() };
    let e = explain(&fx.dataset, &fx.acts, &fx.labels, &across).unwrap();
    let page = std::fs::read_to_string(write_explanation(&e, &fx.dataset, &fx.acts, &fx._tmp.path().join("across")).unwrap().page).unwrap();
    assert!(page.contains("One current switch here is logged as two rows"), "the switch is said");
    let missing = ExplainWindow { cell: "no-such-cell".into(), ..window.clone() };
    assert!(explain(&fx.dataset, &fx.acts, &fx.labels, &missing).unwrap_err().to_string().contains("no-such-cell"));
    let empty = ExplainWindow { from: -20.0, to: -10.0, ..window };
    assert!(explain(&fx.dataset, &fx.acts, &fx.labels, &empty).unwrap_err().to_string().contains("no steps between"));
}

#[test]
fn a_report_with_some_cards_still_indexes_every_live_feature() {
    let fx = fixture::get();
    let out = fx._tmp.path().join("reports").join("some");
    let summary = write_report(&fx.inputs(), &out, CardScope::Subset(&[(0, 1), (1, 0)])).unwrap();
    assert_eq!(summary.cards.len(), 2);
    assert_eq!(summary.live_features, live_ids().len(), "the overview speaks for the whole run");
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    for (l, f) in live_ids() {
        assert!(html.contains(&format!("data-id=\"L{l}_F{f}\"")), "L{l}_F{f} is listed");
        let carded = [(0, 1), (1, 0)].contains(&(l, f));
        assert_eq!(out.join(format!("features/L{l}_F{f}.html")).exists(), carded, "L{l}_F{f}");
        assert_eq!(html.contains(&format!("href=\"features/L{l}_F{f}.html\"")), carded, "L{l}_F{f}");
    }
    assert_links_resolve(&out.join("index.html"));
    assert_links_resolve(&out.join("features/L0_F1.html"));
}

/// A label run over a sample of the live features (`[label] sample`): coverage is a share of
/// the features labelled, the report says it is a sample, and the sample gets the pages and
/// the index's rows (every live feature's statistics stay in tables/features.csv).
#[test]
fn coverage_of_a_sampled_label_run_is_a_share_of_the_sample() {
    let fx = fixture::get();
    let sample: Vec<_> = fx.labels.iter().filter(|l| l.layer == 0 && live_ids().contains(&(l.layer, l.feature))).cloned().collect();
    let (n, accepted) = (sample.len(), sample.iter().filter(|l| l.accepted).count());
    assert!(n < live_ids().len() && accepted > 0, "{n} labelled, {accepted} accepted");
    let inputs = voltlens::report::ReportInputs { labels: &sample, ..fx.inputs() };
    let out = fx._tmp.path().join("reports").join("sampled");
    write_report(&inputs, &out, CardScope::All).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let live = live_ids().len();
    for (l, f) in live_ids() {
        let page = format!("features/L{l}_F{f}.html");
        assert_eq!(out.join(&page).exists(), l == 0, "{page}");
        assert_eq!(html.contains(&format!("data-id=\"L{l}_F{f}\"")), l == 0, "only the sample is listed: L{l}_F{f}");
    }
    assert!(html.contains(&format!("a sample of {n} of the {live} live features")), "{html}");
    assert_links_resolve(&out.join("index.html"));
    assert!(html.contains(&format!("{live} live · {n} labelled (a sample) · {accepted} with an accepted label")), "{html}");
    let unexplained = format!("<td>unexplained</td><td>{:.1}%</td>", 100.0 * (1.0 - accepted as f64 / n as f64));
    assert!(html.contains(&format!("share of the {n} labelled features, a sample of the {live} live")) && html.contains(&unexplained), "{html}");
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains(&format!("{:.1}% of the {n} labelled features", 100.0 * accepted as f64 / n as f64)), "{md}");
}

/// A feature's page shows four of its mined top windows: the strongest of each protocol first,
/// so that replicate cells and consecutive cycles do not fill it with one event.
#[test]
fn shown_top_windows_come_from_every_protocol_the_mined_ones_reach() {
    use voltlens::mine::stats::WindowKind;
    let fx = fixture::get();
    let protocol = |cell: usize| fx.dataset.cells[cell].protocol.clone().unwrap();
    let mut checked = 0;
    for m in &fx.mined.features {
        let mut mined: Vec<String> = m.windows.iter().filter(|w| w.kind == WindowKind::Top).map(|w| protocol(w.cell)).collect();
        mined.sort();
        mined.dedup();
        let page = fx.report.join("features").join(format!("L{}_F{}.html", m.layer, m.feature));
        let Ok(html) = std::fs::read_to_string(&page) else { continue };
        let cells: Vec<&str> = html.split("\"top window ").skip(1).map(|t| t.split(" · cell ").nth(1).unwrap().split(" · ").next().unwrap()).collect();
        let mut shown: Vec<String> = cells.iter().map(|id| protocol(fx.dataset.cells.iter().position(|c| c.cell_id == *id).unwrap())).collect();
        shown.sort();
        let n = shown.len();
        shown.dedup();
        assert_eq!(shown.len(), n.min(mined.len()), "L{}_F{}: shown {shown:?} of mined {mined:?}", m.layer, m.feature);
        checked += (mined.len() > 1) as usize;
    }
    assert!(checked > 0, "some feature's top windows span protocols");
}
