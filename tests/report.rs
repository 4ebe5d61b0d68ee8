//! The report (DESIGN §6) drawn from planted features on the shipped PyBaMM cells: every live
//! feature gets a card of the card size, the index lists them all and points only at local files
//! that exist, and `only` redraws just the chosen cards.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use voltlens::report::{card_file, write_report, ReportSummary, CARD_SIZE};

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
    use voltlens::label::{label_features, FeatureLabel, LabelConfig};
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
        /// The full report, written once.
        pub report: PathBuf,
        pub summary: ReportSummary,
    }

    impl Fixture {
        pub fn inputs(&self) -> ReportInputs<'_> {
            ReportInputs {
                dataset: &self.dataset,
                acts: &self.acts,
                mined: &self.mined,
                labels: &self.labels,
                covariates: &self.covariates,
                transcoder: Some(&self.transcoder),
                embedding: Some(&self.embedding),
                model_metrics: Some(serde_json::json!({ "val_loss": 0.0123, "voltage_rmse_mv": 4.2 })),
                transcoder_metrics: Some(serde_json::json!({ "fvu": [0.08, 0.12], "l0": [11.5, 14.0], "dead_fraction": 0.1 })),
                run_config: serde_json::json!({ "run": "report-test", "label": { "n_shifts": 30, "n_bootstrap": 10 } }),
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
            (1, 0, Box::new(|c, i| 0.05 + c.column(Covariate::Soc)[i])),
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
        let acts = SparseActivations { cell_ids: covariates.iter().map(|c| c.cell_id.clone()).collect(), cell_rows: covariates.iter().map(|c| c.len()).collect(), features };
        let mined = mine(&acts, &MineConfig::default());
        let label_cfg = LabelConfig { n_shifts: 30, n_bootstrap: 10, ..LabelConfig::default() };
        let labels = label_features(&acts, &covariates, &dataset.cells, &label_cfg).unwrap();
        let mut transcoder = Transcoder::zeros(&TranscoderConfig { features: 5, ..TranscoderConfig::default() }, 2, 8);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        transcoder.w_dec.iter_mut().flatten().for_each(|w| *w = rng.random::<f32>() - 0.5);
        transcoder.w_enc.iter_mut().for_each(|w| *w = rng.random::<f32>() - 0.5);
        let w_embed = (0..N_CHANNELS * 8).map(|_| rng.random::<f32>() - 0.5).collect();
        let embedding = Embedding { w_embed, std: vec![2.0; N_CHANNELS] };
        // VOLTLENS_REPORT_DIR keeps the report for a human to look at.
        let report = std::env::var_os("VOLTLENS_REPORT_DIR").map_or_else(|| tmp.path().join("reports").join("report-test"), PathBuf::from);
        let mut fixture = Fixture { _tmp: tmp, dataset, covariates, acts, mined, labels, transcoder, embedding, summary: dummy_summary(), report };
        fixture.summary = write_report(&fixture.inputs(), &fixture.report, None).unwrap();
        fixture
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
    assert_eq!(live.len(), 6, "planted: six live features, two dead");
    assert_eq!(fx.summary.live_features, live.len());
    for &(l, f) in &live {
        let card = fx.report.join("features").join(card_file(l, f));
        common::assert_drawn(&card, Some(CARD_SIZE), 8);
        let (w, h) = png_size(&fx.report.join("features/thumbs").join(card_file(l, f)));
        assert!(w > 100 && h > 50, "thumbnail {w}×{h}");
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
    let summary = write_report(&fx.inputs(), &out, Some(&[(0, 1), (1, 0)])).unwrap();
    let mut drawn: Vec<String> = std::fs::read_dir(out.join("features")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".png")).collect();
    drawn.sort();
    assert_eq!(drawn, vec!["L0_F1.png", "L1_F0.png"]);
    assert_eq!(summary.cards.len(), 2);
    assert!(!out.join("index.html").exists(), "`only` leaves the rest of the report alone");
    let err = write_report(&fx.inputs(), &out, Some(&[(7, 7)])).unwrap_err().to_string();
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
    let err = write_report(&fx.inputs(), &user, None).unwrap_err().to_string();
    assert!(err.contains("not written by VoltLens"), "{err}");
    assert_eq!(std::fs::read_to_string(user.join("paper.md")).unwrap(), "draft");
    assert!(!fx._tmp.path().join("reports/.mine.partial").exists(), "refused before drawing anything");
}
