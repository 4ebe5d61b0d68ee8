//! `summary.md`: the report's headline numbers in Markdown, for a terminal or a pull request.

use std::fmt::Write;
use std::path::Path;

use crate::report::card::{num, percent};
use crate::report::html::{best_scores, flatten, metric_flags};
use crate::report::overview::{coverage, Figure};
use crate::report::{card_file, Context, FeatureFacts};
use crate::Result;

/// Accepted labels listed in the summary, strongest first.
const LISTED: usize = 30;

/// Markdown table cells cannot hold `|` or newlines.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn write_summary(ctx: &Context, facts: &[FeatureFacts], figures: &[Figure], path: &Path) -> Result<()> {
    let mut md = String::new();
    let accepted: Vec<&FeatureFacts> = facts.iter().filter(|f| ctx.label(f.index).is_some_and(|l| l.accepted)).collect();
    let base = ctx.coverage_base(facts);
    let _ = writeln!(md, "# VoltLens report\n");
    let _ = writeln!(
        md,
        "{} cells · {} features, {} live · {} with an accepted label ({}{}).\n",
        ctx.inputs.dataset.cells.len(),
        ctx.dictionary_size(),
        facts.len(),
        accepted.len(),
        percent(accepted.len() as f64 / base.0.max(1) as f64),
        if ctx.label_sample(facts).is_some() { format!(" of {}", base.1) } else { String::new() }
    );
    for (title, metrics) in [("Model metrics", &ctx.inputs.model_metrics), ("Transcoder metrics", &ctx.inputs.transcoder_metrics)] {
        let _ = writeln!(md, "## {title}\n");
        for flag in metrics.as_ref().map(metric_flags).unwrap_or_default() {
            let _ = writeln!(md, "**Warning:** {flag}\n");
        }
        let mut rows = Vec::new();
        if let Some(m) = metrics {
            flatten("", m, &mut rows);
        }
        if rows.is_empty() {
            md.push_str("not given\n\n");
            continue;
        }
        md.push_str("| metric | value |\n|---|---|\n");
        rows.iter().for_each(|(k, v)| {
            let _ = writeln!(md, "| {} | {} |", cell(k), cell(v));
        });
        md.push('\n');
    }
    let _ = writeln!(md, "## Label coverage\n\n| covariate family | share of {} |\n|---|---|", base.1);
    for (family, share) in coverage(ctx, facts) {
        let _ = writeln!(md, "| {family} | {} |", percent(share));
    }
    md.push_str("\n## Overview figures\n\n");
    for fig in figures {
        let _ = writeln!(md, "- [{}]({}): {}", fig.title, fig.file, fig.caption);
    }
    let mut listed = accepted.clone();
    listed.sort_by(|a, b| best_scores(ctx.label(b.index))[4].total_cmp(&best_scores(ctx.label(a.index))[4]));
    let _ = writeln!(md, "\n## Strongest accepted labels\n\n| feature | density | label | AUROC | Spearman | q |\n|---|---|---|---|---|---|");
    for f in listed.iter().take(LISTED) {
        let label = ctx.label(f.index).expect("accepted features have labels");
        let [auroc, _, rho, q, _] = best_scores(Some(label));
        let _ = writeln!(
            md,
            "| [{}](features/{}) | {} | {} | {} | {} | {} |",
            f.id(),
            card_file(f.layer, f.feature),
            percent(f.density),
            cell(&label.label),
            num(auroc),
            num(rho),
            num(q)
        );
    }
    md.push_str("\nEvery feature, sortable and with its card: [index.html](index.html).\n");
    crate::io::write_atomic(path, md.as_bytes())
}
