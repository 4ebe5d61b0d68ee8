//! `voltlens report` (stage `report`): redraws a report from a run's tables without recomputing
//! anything upstream; `--features L2_F17,L0_F3` redraws only those cards, `--subset` draws cards
//! and pages for only those in an otherwise whole report.

use std::path::{Path, PathBuf};

use crate::report::{write_report, CardScope, ReportInputs, ReportSummary};

/// Which features a report draws cards and pages for, as listed on the command line.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every live feature.
    All,
    /// These ("L0_F3,L1_F7") only; the index and overview still cover every live feature.
    Subset(&'a str),
    /// Redraw only these cards in an existing report.
    Redraw(&'a str),
}
use crate::{Error, Result};

/// Parses `L2_F17,L0_F3` into (layer, feature) pairs.
pub fn parse_feature_ids(list: &str) -> Result<Vec<(u32, u32)>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|id| {
            let parsed = id.strip_prefix('L').and_then(|rest| rest.split_once("_F")).and_then(|(l, f)| Some((l.parse().ok()?, f.parse().ok()?)));
            parsed.ok_or_else(|| Error::Config(format!("report: '{id}' is not a feature id like L2_F17")))
        })
        .collect()
}

/// The report folder of the run in `run_dir` (`<runs>/<name>`): `<reports>/<name>`, where a
/// relative `reports` sits beside the runs folder (`runs/x` → `reports/x`), so that a report
/// follows `--runs-dir`.
pub fn report_dir(reports: &Path, run_dir: &Path) -> PathBuf {
    let name = run_dir.file_name().map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned());
    let beside_runs = run_dir.parent().and_then(Path::parent).unwrap_or(Path::new(""));
    beside_runs.join(reports).join(name)
}

/// Runs the stage: the whole report, a whole report with cards for some features only
/// (`Some`), or a redraw of some cards (`Redraw`), the features listed as on the command line.
pub fn run(inputs: &ReportInputs, out_dir: &Path, scope: Scope) -> Result<ReportSummary> {
    let ids = match scope {
        Scope::All => Vec::new(),
        Scope::Subset(list) | Scope::Redraw(list) => parse_feature_ids(list)?,
    };
    let cards = match scope {
        Scope::All => CardScope::All,
        Scope::Subset(_) => CardScope::Subset(&ids),
        Scope::Redraw(_) => CardScope::Redraw(&ids),
    };
    let summary = write_report(inputs, out_dir, cards)?;
    tracing::info!(
        "report: {} cards in {:.1} s ({:.0} ms per card on one core) → {}",
        summary.cards.len(),
        summary.card_wall_s,
        summary.card_ms_mean,
        out_dir.join("index.html").display()
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_ids_parse_and_bad_ones_are_named() {
        assert_eq!(parse_feature_ids("L2_F17, L0_F3").unwrap(), vec![(2, 17), (0, 3)]);
        let err = parse_feature_ids("L2_F17,F3").unwrap_err().to_string();
        assert!(err.contains("'F3'"), "{err}");
    }
}
