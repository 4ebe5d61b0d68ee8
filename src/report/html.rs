//! `index.html`: one static page that works offline (no network, no external scripts or fonts).
//! A summary on top (model and transcoder metrics in plain words with units and flags, label
//! coverage, links to every file of the report, overview figures that open full size, the run
//! configuration without machine paths), then every live feature in a table sortable by any
//! column and filterable by text (labels and runners-up), layer, covariate family,
//! accepted/unexplained, AUROC and density ranges (`assets/index.js`; the state is kept in the
//! URL, e.g. `index.html#layer=1&status=accepted&sort=-density`); each row links to the
//! feature's page.

use std::collections::HashSet;
use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

use crate::label::FeatureLabel;
use crate::report::card::{num, percent};
use crate::label::covariates::Covariate;
use crate::report::feature_page::page_file;
use crate::report::overview::{coverage, family, Figure};
use crate::report::{card_file, Context, FeatureFacts};
use crate::Result;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Writes `index.html` for the live features in `facts`.
/// `pages` are the features with a page and a card (every live one, unless the report was
/// limited to some).
pub fn write_index(ctx: &Context, facts: &[FeatureFacts], pages: &HashSet<(u32, u32)>, figures: &[Figure], run_name: &str, path: &Path) -> Result<()> {
    let mut html = crate::report::assets::head(&format!("VoltLens report: {run_name}"), 0);
    let _ = writeln!(html, "<h1>VoltLens report: {}</h1>", escape(run_name));
    let _ = writeln!(
        html,
        "<div class=\"sub\">{} cells · {} features, {} live{} · {} with an accepted label</div>",
        ctx.inputs.dataset.cells.len(),
        ctx.dictionary_size(),
        facts.len(),
        ctx.label_sample(facts).map_or(String::new(), |n| format!(" · {n} labelled (a sample)")),
        facts.iter().filter(|f| ctx.label(f.index).is_some_and(|l| l.accepted)).count()
    );
    write_summary_boxes(&mut html, ctx, facts);
    write_file_links(&mut html, figures, ctx.inputs.explained, path.parent().unwrap_or(Path::new(".")));
    html.push_str("<h2>Overview</h2>\n");
    for fig in figures {
        let _ = writeln!(
            html,
            "<figure><a href=\"{0}\"><img src=\"{0}\" alt=\"{1}\"></a><figcaption><b>{1}.</b> {2} <a href=\"{0}\">Full size</a>.</figcaption></figure>",
            escape(&fig.file),
            escape(&fig.title),
            escape(&fig.caption)
        );
    }
    html.push_str(&glossary(&ctx.label_cfg));
    write_table(&mut html, ctx, facts, pages);
    let _ = write!(html, "<script src=\"{}/index.js\"></script>\n</body>\n</html>\n", crate::report::assets::ASSETS_DIR);
    crate::io::write_atomic(path, html.as_bytes())
}

/// Every file of the report a reader may want besides the feature pages: the viewer, the
/// Markdown summaries, the tables (those present in `dir`) and the explained stretches.
fn write_file_links(html: &mut String, figures: &[Figure], explained: &[crate::report::explain::ExplainWindow], dir: &Path) {
    let files = [
        (crate::report::graph_page::GRAPH_PAGE, "attribution-graph viewer (interactive)"),
        ("summary.md", "summary (Markdown)"),
        (crate::circuits::stage::PULLBACKS_FILE, "pullback tables of the most active features (Markdown)"),
        (crate::report::overview::CIRCUITS_GRAPH_JSON, "attribution graph (circuit-tracer JSON)"),
        ("tables/features.parquet", "features table (Parquet)"),
        ("tables/features.csv", "features table (CSV)"),
        ("tables/labels.parquet", "labels table (Parquet)"),
        ("tables/labels.csv", "labels table (CSV)"),
        ("tables/examples.parquet", "example windows table (Parquet)"),
        ("tables/examples.csv", "example windows table (CSV)"),
    ];
    html.push_str("<h2>Files</h2>\n<div class=\"links\">");
    for (file, what) in files.iter().filter(|(f, _)| dir.join(f).exists()) {
        let _ = write!(html, "<a href=\"{}\">{}</a> · ", escape(file), escape(what));
    }
    for fig in figures {
        let _ = write!(html, "<a href=\"{}\">{}</a> · ", escape(&fig.file), escape(&fig.title));
    }
    for w in explained {
        let _ = write!(html, "<a href=\"explain/{}/index.html\">most active features: cell {}, {} – {} s</a> · ", escape(&w.slug()), escape(&w.cell), w.from, w.to);
    }
    html.push_str("</div>\n");
}

/// Flattens a JSON value into (key in plain words, value) pairs, arrays of numbers on one line,
/// counts as integers. A `flags` list is left out: [`metric_flags`] shows it.
pub(crate) fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let value = |x: &Value| match x.as_u64().map(|n| n.to_string()).or_else(|| x.as_i64().map(|n| n.to_string())) {
        Some(count) => count,
        None => x.as_f64().map_or("–".into(), num),
    };
    match v {
        Value::Object(map) => {
            // Keys in the map's order, but a run of keys numbered alike in the order of their
            // numbers (layer_2 before layer_10, which a sorted map puts first), and a run of
            // numbers 0, 1, 2… on one line, as an array is: a 24-layer model's MSE per layer.
            let number = |k: &str| {
                let head = k.trim_end_matches(|c: char| c.is_ascii_digit());
                (head.len(), k[head.len()..].parse::<u64>().ok())
            };
            let named = |name: String| if prefix.is_empty() { name } else { format!("{prefix} · {name}") };
            let mut entries: Vec<(&String, &Value)> = map.iter().filter(|(k, _)| k.as_str() != "flags").collect();
            for run in entries.chunk_by_mut(|a, b| {
                let ((la, na), (lb, nb)) = (number(a.0), number(b.0));
                na.is_some() && nb.is_some() && a.0[..la] == b.0[..lb]
            }) {
                run.sort_by_key(|(k, _)| number(k).1);
                let counted = run.iter().enumerate().all(|(i, (k, x))| number(k).1 == Some(i as u64) && x.is_number());
                if run.len() >= 3 && counted {
                    let head = &run[0].0[..number(run[0].0).0];
                    let name = format!("{} 0–{}", metric_words(head.trim_end_matches('_')), run.len() - 1);
                    out.push((named(name), run.iter().map(|(_, x)| value(x)).collect::<Vec<_>>().join(", ")));
                } else {
                    run.iter().for_each(|(k, x)| flatten(&named(metric_words(k)), x, out));
                }
            }
        }
        Value::Array(a) if a.iter().all(Value::is_number) => out.push((prefix.to_owned(), a.iter().map(value).collect::<Vec<_>>().join(", "))),
        Value::Number(_) => out.push((prefix.to_owned(), value(v))),
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// A metrics key as a reader says it, with its unit.
fn metric_words(key: &str) -> String {
    let words = match key {
        "cells" => "held-out cells",
        "next_step" => "next step",
        "steps" => "predictions",
        "rmse_mv" => "RMSE (mV)",
        "persistence_rmse_mv" => "persistence RMSE (mV)",
        "skill" => "skill vs persistence",
        "ridge_rmse_mv" => "ridge baseline RMSE (mV)",
        "ridge_skill" => "ridge baseline skill",
        "rollouts" => "rollouts",
        "rows" => "predicted rows",
        "max_abs_mv" => "largest error (mV)",
        "fvu" => "FVU (unexplained variance)",
        "l0" => "L0 (active features per step)",
        // Held out, so they differ from the record's count of features that ever fired.
        "dead_fraction" => "share of features silent on these steps",
        "live_fraction" => return format!("share of features firing once per {} of these steps or more", crate::transcoder::metrics::LIVE_PER_TOKENS),
        "train_tokens_per_s" => "training tokens/s",
        "train_steps" => "training steps",
        "heldout" => "held out",
        "in_range_discharge_rollout" => "discharge rollout, cells inside the training conditions",
        "import_check" => "import vs its source",
        "max_abs_error_v" => "largest error (V)",
        "max_rel_error" => "largest relative error",
        "tolerance_v" => "tolerance (V)",
        "fidelity" => "replacement fidelity",
        "features" => "features per layer",
        "fvu_per_layer" => "FVU per layer",
        "l0_per_layer" => "L0 per layer",
        "mse" => "next-step MSE",
        "cold_discharge_rollout" => "cold-start discharge rollout",
        "unanchored_discharge_rollout" => "discharge rollout, SOC anchor hidden",
        other => return other.strip_suffix("_mv").map_or_else(|| other.replace('_', " "), |stem| format!("{} (mV)", stem.replace('_', " "))),
    };
    words.to_owned()
}

/// The scores of the feature table and the feature pages in words, with this run's thresholds.
pub(crate) fn glossary(cfg: &crate::label::LabelConfig) -> String {
    let n = num;
    let terms = [
        ("explain / test cells", format!("The labeller searches for a feature's label on the explain cells ({:.0} % of the cells, by protocol) and scores it on the held-out test cells, which the search never saw.", 100.0 * cfg.explain_fraction)),
        ("density", "Share of all steps on which the feature fires (activation above 0).".to_owned()),
        ("held-out firing steps", format!("Steps of the test cells (those that have the label's covariates) on which the feature fires: a label is tested on at least {}.", cfg.min_test_firing)),
        ("AUROC", "How well the label's yes/no (or graded) predicate ranks the steps where the feature fires above those where it does not, on the test cells: 0.5 = chance, 1 = perfect.".to_owned()),
        ("F1", "Overlap of the steps the label names with the steps the feature fires on (activation-weighted); low when the label names many more steps than the feature fires on, or far fewer.".to_owned()),
        ("fires on", "Share of the steps a yes/no label names on which the feature fires.".to_owned()),
        ("Spearman, R²", "For a label that tracks a covariate (\"tracks SOC\"): rank correlation of the activation with the covariate within each cell, in the label's direction, averaged over cells; and the share of the activation's variance the covariate explains.".to_owned()),
        ("strength", format!("The held-out score over its threshold: (AUROC − 0.5) / ({} − 0.5) for a predicate, Spearman / {} for a tracker; 1 passes, below 0 the label points the wrong way.", n(cfg.min_auroc), n(cfg.min_spearman))),
        ("p, q", format!("p: how often circularly shifted activations score as high (the shift keeps each feature's burstiness); q: Benjamini–Hochberg over every feature's candidates. Accepted below q {}.", n(cfg.max_q))),
        ("stability", format!("Share of bootstrap resamples of the explain cells whose search picks the same label; accepted from {}.", n(cfg.min_stability))),
        ("explain→test gap", "Strength on the explain cells minus on the test cells: large = fitted to the explain cells.".to_owned()),
        ("baseline (raw V/I)", "The best label built from raw voltage and current alone, scored alike: a label must do at least as well.".to_owned()),
        ("FVU, L0", "Transcoder quality: the share of the MLP output's variance its reconstruction misses, and the mean number of features active per step.".to_owned()),
    ];
    let mut html = String::from("<details class=\"glossary\"><summary>How to read the scores</summary><dl>");
    for (term, text) in terms {
        let _ = write!(html, "<dt>{}</dt><dd>{}</dd>", escape(term), escape(&text));
    }
    html.push_str("</dl></details>\n");
    html
}

/// What a metrics key means, said once under its box (a key names a row many times over).
fn metric_note(key: &str) -> Option<&'static str> {
    Some(match key {
        "skill" => "Skill: 1 − the model's squared next-step error over persistence's, where persistence predicts no change of voltage (1 is perfect, 0 no better than persistence).",
        "cold_discharge_rollout" => "Cold start: a discharge step at a cell's first row, so the model has no history.",
        "unanchored_discharge_rollout" => "SOC anchor hidden: the same rollouts with the model told the cell has no SOC anchor.",
        "fidelity" => "Replacement fidelity: 1 = the model's own next-step MSE, 0 = its MLPs mean-ablated; above 1 the replaced model predicts better. MSE in the model's scaled target, squared.",
        "dead_fraction" => "Silent features are counted on these held-out steps only; the header counts features that fire anywhere in the record.",
        _ => return None,
    })
}

/// The notes of every key in `v`, in the order first met.
fn metric_notes(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => map.iter().for_each(|(k, x)| {
            if let Some(note) = metric_note(k).filter(|n| !out.iter().any(|o| o == n)) {
                out.push(note.to_owned());
            }
            metric_notes(x, out);
        }),
        Value::Array(a) => a.iter().for_each(|x| metric_notes(x, out)),
        _ => {}
    }
}

/// Warnings about a model's metrics: the `flags` its evaluation wrote (which already name every
/// rollout worse than persistence), else — for metrics written before evaluations flagged — any
/// rollout that does worse than holding the starting voltage; and a next-step skill below persistence.
pub(crate) fn metric_flags(m: &Value) -> Vec<String> {
    let written = m.get("flags").and_then(Value::as_array);
    let mut flags: Vec<String> = written.into_iter().flatten().filter_map(|f| f.as_str().map(str::to_owned)).collect();
    let rollouts = if written.is_some() { &[][..] } else { &[("discharge_rollout", "discharge rollout"), ("cycle_rollout", "cycle rollout")][..] };
    for &(key, name) in rollouts {
        let (rmse, persistence) = (m.pointer(&format!("/{key}/rmse_mv")).and_then(Value::as_f64), m.pointer(&format!("/{key}/persistence_rmse_mv")).and_then(Value::as_f64));
        if let (Some(r), Some(p)) = (rmse, persistence) {
            if r > p {
                flags.push(format!("{name} RMSE {} mV is worse than holding the starting voltage ({} mV)", num(r), num(p)));
            }
        }
    }
    if m.pointer("/next_step/skill").and_then(Value::as_f64).is_some_and(|s| s < 0.0) {
        flags.push("next-step predictions are worse than persistence (skill below 0)".into());
    }
    flags
}

/// The run configuration as shown: absolute paths of the machine it ran on cut to their last two
/// components.
pub(crate) fn without_machine_paths(v: &Value) -> Value {
    map_leaves(v, &|leaf| match leaf {
        Value::String(s) if Path::new(s).is_absolute() => {
            let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
            Value::String(format!("…/{}", parts[parts.len().saturating_sub(2)..].join("/")))
        }
        other => other.clone(),
    })
}

/// Settings held as f32 and widened to f64 print as 0.0010000000474974513; shown as the f32
/// they are (0.001).
fn f32_settings_shortest(v: &Value) -> Value {
    map_leaves(v, &|leaf| match leaf.as_f64() {
        Some(x) if leaf.is_f64() && f64::from(x as f32) == x => {
            let shortest: f64 = (x as f32).to_string().parse().expect("a float prints as a float");
            serde_json::Number::from_f64(shortest).map_or_else(|| leaf.clone(), Value::Number)
        }
        _ => leaf.clone(),
    })
}

/// `v` with every leaf (not array or object) replaced by `f`'s value for it.
fn map_leaves(v: &Value, f: &dyn Fn(&Value) -> Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(|x| map_leaves(x, f)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), map_leaves(x, f))).collect()),
        leaf => f(leaf),
    }
}

fn kv_box(html: &mut String, title: &str, rows: &[(String, String)], flags: &[String], notes: &[String]) {
    let _ = write!(html, "<div class=\"box\"><h3>{}</h3>", escape(title));
    for flag in flags {
        let _ = write!(html, "<p class=\"flag\">⚠ {}</p>", escape(flag));
    }
    html.push_str("<table class=\"kv\">");
    if rows.is_empty() {
        html.push_str("<tr><td>not given</td></tr>");
    }
    for (k, v) in rows {
        let _ = write!(html, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(v));
    }
    html.push_str("</table>");
    for note in notes {
        let _ = write!(html, "<p class=\"hint\">{}</p>", escape(note));
    }
    html.push_str("</div>\n");
}

fn write_summary_boxes(html: &mut String, ctx: &Context, facts: &[FeatureFacts]) {
    html.push_str("<h2>Summary</h2>\n<div class=\"cards\">\n");
    for (title, metrics) in [("Model metrics (held-out cells)", &ctx.inputs.model_metrics), ("Transcoder metrics", &ctx.inputs.transcoder_metrics)] {
        let (mut rows, mut notes) = (Vec::new(), Vec::new());
        let flags = metrics.as_ref().map(metric_flags).unwrap_or_default();
        if let Some(m) = metrics {
            flatten("", m, &mut rows);
            metric_notes(m, &mut notes);
        }
        // The headline first (next-step RMSE and skill): the JSON's keys come in alphabetical order.
        rows.sort_by_key(|(k, _)| (!k.contains("next step"), !(k.ends_with("· RMSE (mV)") || k.ends_with("skill vs persistence"))));
        kv_box(html, title, &rows, &flags, &notes);
    }
    let coverage: Vec<(String, String)> = coverage(ctx, facts).into_iter().map(|(k, v)| (k, percent(v))).collect();
    let base = ctx.coverage_base(facts).1;
    kv_box(html, &format!("Label coverage (share of {base}; a label on two families counts for both)"), &coverage, &[], &[]);
    html.push_str("</div>\n");
    let config = serde_json::to_string_pretty(&f32_settings_shortest(&without_machine_paths(&ctx.inputs.run_config))).unwrap_or_default();
    let _ = writeln!(html, "<details><summary>Run configuration</summary><pre>{}</pre></details>", escape(&config));
}

/// (AUROC, F1, Spearman, q, strength) of a label's best candidate, held out.
pub(crate) fn best_scores(label: Option<&FeatureLabel>) -> [f64; 5] {
    match label.and_then(|l| l.candidates.first()) {
        Some(c) => [c.test.auroc, c.test.f1, c.test.spearman, c.q_value, c.strength],
        None => [f64::NAN; 5],
    }
}

/// Covariate families of a label's best candidate, as filter keys ("time_in_step").
fn families(label: Option<&FeatureLabel>) -> Vec<String> {
    let Some(best) = label.and_then(|l| l.candidates.first()) else { return Vec::new() };
    let mut out: Vec<String> = best.candidate.covariates().into_iter().map(|c| family_key(family(c))).collect();
    out.sort();
    out.dedup();
    out
}

fn family_key(name: &str) -> String {
    name.replace(' ', "_")
}

fn write_table(html: &mut String, ctx: &Context, facts: &[FeatureFacts], pages: &HashSet<(u32, u32)>) {
    let mut layers: Vec<u32> = facts.iter().map(|f| f.layer).collect();
    layers.sort();
    layers.dedup();
    let mut family_names: Vec<&str> = Vec::new();
    for c in Covariate::ALL {
        if !family_names.contains(&family(c)) {
            family_names.push(family(c));
        }
    }
    let options = |values: Vec<(String, String)>| values.into_iter().map(|(v, t)| format!("<option value=\"{}\">{}</option>", escape(&v), escape(&t))).collect::<String>();
    let _ = writeln!(
        html,
        "<h2>Features</h2>\n<div class=\"controls\"><input type=\"search\" id=\"filter-text\" placeholder=\"search ids, labels and runners-up\">\
<label>layer <select id=\"filter-layer\"><option value=\"\">all</option>{}</select></label>\
<label>covariate family <select id=\"filter-family\"><option value=\"\">all</option>{}</select></label>\
<label>label <select id=\"filter-status\"><option value=\"\">all</option><option value=\"accepted\">accepted</option><option value=\"unexplained\">unexplained</option></select></label>\
<label>AUROC <input type=\"number\" id=\"filter-auroc-min\" step=\"0.05\" min=\"0\" max=\"1\" placeholder=\"min\"> – <input type=\"number\" id=\"filter-auroc-max\" step=\"0.05\" min=\"0\" max=\"1\" placeholder=\"max\"></label>\
<label>density (%) <input type=\"number\" id=\"filter-density-min\" step=\"any\" min=\"0\" placeholder=\"min\"> – <input type=\"number\" id=\"filter-density-max\" step=\"any\" min=\"0\" placeholder=\"max\"></label>\
<button id=\"filter-reset\">clear</button><span id=\"shown\"></span></div>",
        options(layers.iter().map(|l| (l.to_string(), l.to_string())).collect()),
        options(family_names.iter().map(|f| (family_key(f), f.to_string())).collect()),
    );
    let columns = [
        ("", "Card"),
        ("id", "Feature"),
        ("layer", "Layer"),
        ("density", "Density"),
        ("label", "Label"),
        ("auroc", "AUROC"),
        ("f1", "F1"),
        ("spearman", "Spearman"),
        ("q", "q"),
        ("stability", "Stability"),
        ("strength", "Strength"),
    ];
    html.push_str("<table class=\"features\" id=\"features\"><thead><tr>");
    for (col, name) in columns {
        let _ = write!(html, "<th{}>{}</th>", if col.is_empty() { String::new() } else { format!(" data-col=\"{col}\" title=\"sort by {name}\"") }, name);
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    // Features with a page first (a report drawn for a subset would open on rows without one),
    // each part in id order; the column headers sort anew. After a sampled label run only the
    // sample is listed: a row per live feature of a large dictionary makes a page of 100 MB.
    let sampled = ctx.label_sample(facts).is_some();
    let mut rows: Vec<&FeatureFacts> = facts.iter().filter(|f| !sampled || ctx.label(f.index).is_some()).collect();
    if sampled {
        let _ = writeln!(
            html,
            "<p class=\"hint\">The label stage labelled a sample of {} of the {} live features; they are listed here. Every live feature's statistics are in <a href=\"tables/features.csv\">tables/features.csv</a>.</p>",
            rows.len(),
            facts.len()
        );
    }
    rows.sort_by_key(|f| !pages.contains(&(f.layer, f.feature)));
    for f in rows {
        let label = ctx.label(f.index);
        let [auroc, f1, rho, q, strength] = best_scores(label);
        let stability = label.map_or(f64::NAN, |l| l.stability);
        let accepted = label.is_some_and(|l| l.accepted);
        let sentence = match label {
            Some(l) if l.accepted => l.label.clone(),
            Some(l) => {
                let untested = if l.testable() { "" } else { "silent on the held-out cells, untested; " };
                l.candidates.first().map_or("never fires".into(), |c| format!("{untested}closest: {}", c.sentence))
            }
            None => "not labelled".into(),
        };
        let runners: Vec<&str> = label.into_iter().flat_map(|l| l.candidates.iter().skip(usize::from(l.accepted))).map(|c| c.sentence.as_str()).collect();
        let search = format!("{sentence} {}", runners.join(" "));
        let id = escape(&f.id());
        let (thumb, link) = if pages.contains(&(f.layer, f.feature)) {
            let page = format!("features/{}", page_file(f.layer, f.feature));
            // Lazy: an index of hundreds of thumbnails loads those in view first.
            let img = format!("<a href=\"{page}\"><img loading=\"lazy\" src=\"features/thumbs/{}\" alt=\"card of {id}\"></a>", card_file(f.layer, f.feature));
            (img, format!("<a href=\"{page}\">{id}</a>"))
        } else {
            ("<span class=\"hint\">no card in this report</span>".to_owned(), id.clone())
        };
        let data = |x: f64| if x.is_finite() { format!("{x}") } else { String::new() };
        let runners_html = if runners.is_empty() { String::new() } else { format!("<div class=\"runners\">runners-up: {}</div>", escape(&runners.join("; "))) };
        let _ = writeln!(
            html,
            "<tr data-id=\"{id}\" data-layer=\"{}\" data-feature=\"{}\" data-density=\"{}\" data-label=\"{lab}\" data-search=\"{}\" data-family=\"{}\" data-accepted=\"{}\" data-auroc=\"{}\" data-f1=\"{}\" data-spearman=\"{}\" data-q=\"{}\" data-stability=\"{}\" data-strength=\"{}\">\
<td class=\"thumb\">{thumb}</td><td>{link}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><span class=\"{}\">{}</span> {lab}{runners_html}</td>\
<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            f.layer,
            f.feature,
            f.density,
            escape(&search),
            families(label).join(" "),
            accepted as u8,
            data(auroc),
            data(f1),
            data(rho),
            data(q),
            data(stability),
            data(strength),
            f.layer,
            percent(f.density),
            if accepted { "yes" } else { "no" },
            if accepted { "✓" } else { "✗" },
            num(auroc),
            num(f1),
            num(rho),
            num(q),
            num(stability),
            num(strength),
            lab = escape(&sentence),
        );
    }
    html.push_str("</tbody></table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metrics_read_in_words_with_counts_as_integers() {
        let mut rows = Vec::new();
        flatten("", &json!({ "cells": 3, "next_step": { "rmse_mv": 4.21, "steps": 12000 }, "flags": ["x"] }), &mut rows);
        assert_eq!(
            rows,
            vec![
                ("held-out cells".to_owned(), "3".to_owned()),
                ("next step · RMSE (mV)".to_owned(), "4.21".to_owned()),
                ("next step · predictions".to_owned(), "12000".to_owned()),
            ]
        );
    }

    #[test]
    fn numbered_keys_read_in_the_order_of_their_numbers_the_rest_in_the_maps_order() {
        let mut rows = Vec::new();
        // As a sorted map writes a 12-layer fidelity run's MSEs.
        let mse = json!({ "all_replaced": 1, "layer_0": 2, "layer_1": 3, "layer_10": 4, "layer_11": 5, "layer_2": 6, "mean_ablated": 7, "original": 8 });
        flatten("", &json!({ "skill": 0, "mse": mse, "cells": 9 }), &mut rows);
        let values: Vec<&str> = rows.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["9", "1", "2", "3", "6", "4", "5", "7", "8", "0"], "{rows:?}");
        // Layers 0–3 of a fidelity run read on one line.
        let mut rows = Vec::new();
        flatten("", &json!({ "mse": { "layer_0": 2, "layer_1": 3, "layer_2": 4.5, "layer_3": 5, "original": 8 } }), &mut rows);
        assert_eq!(rows, [("next-step MSE · layer 0–3".to_owned(), "2, 3, 4.50, 5".to_owned()), ("next-step MSE · original".to_owned(), "8".to_owned())]);
    }

    #[test]
    fn a_rollout_worse_than_holding_the_voltage_is_flagged() {
        let rollouts = json!({ "cycle_rollout": { "rmse_mv": 45.0, "persistence_rmse_mv": 15.0 }, "discharge_rollout": { "rmse_mv": 5.0, "persistence_rmse_mv": 15.0 } });
        // Metrics from before evaluations wrote flags: the report finds the bad rollout itself.
        let flags = metric_flags(&rollouts);
        assert_eq!(flags.len(), 1, "{flags:?}");
        assert!(flags[0].starts_with("cycle rollout RMSE 45.0 mV"), "{}", flags[0]);
        // An evaluation's own flags already name it: shown as written, not twice.
        let mut written = rollouts.clone();
        written["flags"] = json!(["all cells: the model's full-cycle rollouts (45 mV RMSE) are worse than holding the starting voltage (15 mV)"]);
        assert_eq!(metric_flags(&written), vec![written["flags"][0].as_str().unwrap().to_owned()]);
    }

    #[test]
    fn f32_settings_show_as_written() {
        let v = serde_json::json!({ "transcoder": { "lambda": f64::from(0.001f32), "steps": 300, "lr": 0.1 } });
        let shown = serde_json::to_string(&f32_settings_shortest(&v)).unwrap();
        assert_eq!(shown, r#"{"transcoder":{"lambda":0.001,"lr":0.1,"steps":300}}"#);
    }

    #[test]
    fn machine_paths_are_cut_from_the_run_configuration() {
        let shown = without_machine_paths(&json!({ "dir": "/home/me/voltlens/runs/quickstart/sweep", "inputs": ["data/cyclers"], "steps": 4 }));
        assert_eq!(shown, json!({ "dir": "…/quickstart/sweep", "inputs": ["data/cyclers"], "steps": 4 }));
    }
}
