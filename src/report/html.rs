//! `index.html`: one static page that works offline (no network, no external scripts or fonts).
//! A summary on top (run config, model and transcoder metrics, label coverage, overview
//! figures), then every live feature in a table sortable by any column (click a header, or open
//! `index.html#sort=density`, `#sort=-density` for descending) and filterable by text, layer and
//! accepted labels; each row links to the feature's card.

use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

use crate::label::FeatureLabel;
use crate::report::card::{num, percent};
use crate::report::overview::{coverage, Figure};
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

const STYLE: &str = r#"
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px 32px; color: #222; background: #fafafa; }
h1 { margin: 0 0 4px 0; font-size: 26px; }
h2 { font-size: 19px; margin: 28px 0 10px 0; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin-bottom: 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 16px; }
.box { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; padding: 10px 14px; min-width: 220px; }
.box h3 { margin: 0 0 6px 0; font-size: 15px; color: #444; }
.kv { border-collapse: collapse; font-size: 13px; }
.kv td { padding: 1px 10px 1px 0; vertical-align: top; }
.kv td:first-child { color: #666; }
pre { font-size: 12px; max-height: 320px; overflow: auto; background: #fff; border: 1px solid #e2e2e2; padding: 8px; }
figure { margin: 0 0 18px 0; background: #fff; border: 1px solid #e2e2e2; padding: 8px; }
figure img { max-width: 100%; }
figcaption { font-size: 13px; color: #555; margin-top: 4px; }
.controls { display: flex; gap: 14px; align-items: center; margin: 8px 0 10px 0; font-size: 14px; }
.controls input[type=search] { width: 320px; padding: 4px 6px; }
table.features { border-collapse: collapse; background: #fff; font-size: 13px; width: 100%; }
table.features th { position: sticky; top: 0; background: #eee; cursor: pointer; text-align: left; padding: 6px 8px; user-select: none; white-space: nowrap; }
table.features th.sorted-asc::after { content: " \25B2"; }
table.features th.sorted-desc::after { content: " \25BC"; }
table.features td { border-top: 1px solid #eee; padding: 4px 8px; vertical-align: middle; }
table.features td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.features tr:hover td { background: #f4f0fa; }
td.thumb img { width: 248px; height: 124px; display: block; border: 1px solid #ddd; }
.yes { color: #146e28; font-weight: bold; }
.no { color: #963c1e; }
"#;

/// Sorting and filtering; sort keys are the rows' data attributes. On load it also records how
/// many images loaded (`body[data-images-loaded="ok/total"]`) for the browser test.
const SCRIPT: &str = r#"
(function () {
  var table = document.getElementById('features');
  var body = table.tBodies[0];
  var numeric = { layer: 1, feature: 1, density: 1, auroc: 1, f1: 1, spearman: 1, q: 1, stability: 1, strength: 1 };
  function key(row, col) {
    var v = row.dataset[col];
    if (numeric[col]) { var x = parseFloat(v); return isNaN(x) ? -Infinity : x; }
    return (v || '').toLowerCase();
  }
  function sortBy(col, desc) {
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      var c = x < y ? -1 : x > y ? 1 : 0;
      if (c === 0) { c = key(a, 'layer') - key(b, 'layer') || key(a, 'feature') - key(b, 'feature'); return c; }
      return desc ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.classList.remove('sorted-asc', 'sorted-desc');
      if (th.dataset.col === col) th.classList.add(desc ? 'sorted-desc' : 'sorted-asc');
    });
    document.body.dataset.sortedBy = (desc ? '-' : '') + col;
  }
  function fromHash() {
    var m = /sort=(-?)([a-z0-9_]+)/.exec(location.hash);
    if (m) sortBy(m[2], m[1] === '-');
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    if (!th.dataset.col) return;
    th.addEventListener('click', function () {
      var desc = th.classList.contains('sorted-asc');
      history.replaceState(null, '', '#sort=' + (desc ? '-' : '') + th.dataset.col);
      sortBy(th.dataset.col, desc);
    });
  });
  var search = document.getElementById('filter-text');
  var layer = document.getElementById('filter-layer');
  var accepted = document.getElementById('filter-accepted');
  function filter() {
    var q = search.value.toLowerCase(), l = layer.value, shown = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      var ok = (!q || (r.dataset.id + ' ' + r.dataset.label).toLowerCase().indexOf(q) >= 0)
        && (l === '' || r.dataset.layer === l)
        && (!accepted.checked || r.dataset.accepted === '1');
      r.style.display = ok ? '' : 'none';
      shown += ok ? 1 : 0;
    });
    document.getElementById('shown').textContent = shown + ' of ' + body.rows.length + ' features shown';
  }
  [search, layer, accepted].forEach(function (el) { el.addEventListener('input', filter); el.addEventListener('change', filter); });
  window.addEventListener('hashchange', fromHash);
  fromHash();
  filter();
  window.addEventListener('load', function () {
    var imgs = document.images, ok = 0;
    for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
    document.body.dataset.imagesLoaded = ok + '/' + imgs.length;
  });
})();
"#;

/// Writes `index.html` for the live features in `facts`.
pub fn write_index(ctx: &Context, facts: &[FeatureFacts], figures: &[Figure], run_name: &str, path: &Path) -> Result<()> {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>VoltLens report {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(run_name)
    );
    let _ = writeln!(html, "<h1>VoltLens report: {}</h1>", escape(run_name));
    let _ = writeln!(
        html,
        "<div class=\"sub\">{} cells · {} features, {} live · {} with an accepted label</div>",
        ctx.inputs.dataset.cells.len(),
        // The mined table lists only features that fired; the dictionary size is the transcoder's.
        ctx.inputs.transcoder.map_or(ctx.inputs.mined.features.len(), |tc| tc.shape.features * tc.shape.encoders()),
        facts.len(),
        facts.iter().filter(|f| ctx.label(f.index).is_some_and(|l| l.accepted)).count()
    );
    write_summary_boxes(&mut html, ctx, facts);
    html.push_str("<h2>Overview</h2>\n");
    for fig in figures {
        let _ = writeln!(
            html,
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption><b>{}.</b> {}</figcaption></figure>",
            escape(&fig.file),
            escape(&fig.title),
            escape(&fig.title),
            escape(&fig.caption)
        );
    }
    write_table(&mut html, ctx, facts);
    let _ = write!(html, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    crate::io::write_atomic(path, html.as_bytes())
}

/// Flattens a JSON value into (dotted key, short text) pairs, arrays of numbers on one line.
pub(crate) fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => map.iter().for_each(|(k, x)| flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, x, out)),
        Value::Array(a) if a.iter().all(Value::is_number) => {
            out.push((prefix.to_owned(), a.iter().map(|x| x.as_f64().map_or("–".into(), num)).collect::<Vec<_>>().join(", ")))
        }
        Value::Number(n) => out.push((prefix.to_owned(), n.as_f64().map_or(n.to_string(), num))),
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn kv_box(html: &mut String, title: &str, rows: &[(String, String)]) {
    let _ = write!(html, "<div class=\"box\"><h3>{}</h3><table class=\"kv\">", escape(title));
    if rows.is_empty() {
        html.push_str("<tr><td>not given</td></tr>");
    }
    for (k, v) in rows {
        let _ = write!(html, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(v));
    }
    html.push_str("</table></div>\n");
}

fn write_summary_boxes(html: &mut String, ctx: &Context, facts: &[FeatureFacts]) {
    html.push_str("<h2>Summary</h2>\n<div class=\"cards\">\n");
    for (title, metrics) in [("Model metrics", &ctx.inputs.model_metrics), ("Transcoder metrics", &ctx.inputs.transcoder_metrics)] {
        let mut rows = Vec::new();
        if let Some(m) = metrics {
            flatten("", m, &mut rows);
        }
        kv_box(html, title, &rows);
    }
    let coverage: Vec<(String, String)> = coverage(ctx, facts).into_iter().map(|(k, v)| (k, percent(v))).collect();
    kv_box(html, "Label coverage (share of live features)", &coverage);
    html.push_str("</div>\n");
    let config = serde_json::to_string_pretty(&ctx.inputs.run_config).unwrap_or_default();
    let _ = writeln!(html, "<details><summary>Run configuration</summary><pre>{}</pre></details>", escape(&config));
}

/// (AUROC, F1, Spearman, q, strength) of a label's best candidate, held out.
pub(crate) fn best_scores(label: Option<&FeatureLabel>) -> [f64; 5] {
    match label.and_then(|l| l.candidates.first()) {
        Some(c) => [c.test.auroc, c.test.f1, c.test.spearman, c.q_value, c.strength],
        None => [f64::NAN; 5],
    }
}

fn write_table(html: &mut String, ctx: &Context, facts: &[FeatureFacts]) {
    let mut layers: Vec<u32> = facts.iter().map(|f| f.layer).collect();
    layers.sort();
    layers.dedup();
    let _ = writeln!(html, "<h2>Features</h2>\n<div class=\"controls\"><input type=\"search\" id=\"filter-text\" placeholder=\"filter by id or label text\"><label>layer <select id=\"filter-layer\"><option value=\"\">all</option>{}</select></label><label><input type=\"checkbox\" id=\"filter-accepted\"> accepted labels only</label><span id=\"shown\"></span></div>",
        layers.iter().map(|l| format!("<option value=\"{l}\">{l}</option>")).collect::<String>());
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
    for f in facts {
        let label = ctx.label(f.index);
        let [auroc, f1, rho, q, strength] = best_scores(label);
        let stability = label.map_or(f64::NAN, |l| l.stability);
        let accepted = label.is_some_and(|l| l.accepted);
        let text = label.map_or("not labelled".to_owned(), |l| l.label.clone());
        let card = format!("features/{}", card_file(f.layer, f.feature));
        let thumb = format!("features/thumbs/{}", card_file(f.layer, f.feature));
        let data = |x: f64| if x.is_finite() { format!("{x}") } else { String::new() };
        let _ = writeln!(
            html,
            "<tr data-id=\"{id}\" data-layer=\"{}\" data-feature=\"{}\" data-density=\"{}\" data-label=\"{lab}\" data-accepted=\"{}\" data-auroc=\"{}\" data-f1=\"{}\" data-spearman=\"{}\" data-q=\"{}\" data-stability=\"{}\" data-strength=\"{}\">\
<td class=\"thumb\"><a href=\"{card}\"><img src=\"{thumb}\" alt=\"card of {id}\"></a></td><td><a href=\"{card}\">{id}</a></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><span class=\"{}\">{}</span> {lab}</td>\
<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            f.layer,
            f.feature,
            f.density,
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
            id = escape(&f.id()),
            lab = escape(&text),
        );
    }
    html.push_str("</tbody></table>\n");
}
