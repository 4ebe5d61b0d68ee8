//! `features/L{layer}_F{feature}.html`: one interactive page per live feature (DESIGN §6). The
//! label with its runners-up and why it was accepted or rejected (each score beside its
//! threshold, and the raw-V/I baseline), the output effect, example windows drawn by
//! `assets/feature.js` from data embedded in the page (hover values, zoom), co-firing by lift,
//! pullback and graph neighbours, each linking to that feature's own page.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::label::{CandidateResult, FeatureLabel};
use crate::mine::stats::{Window, WindowKind};
use crate::report::assets::{head, json_block, ASSETS_DIR};
use crate::report::card::{feature_time_scale, num, percent, window_activation};
use crate::report::html::escape;
use crate::report::{card_file, Context, FeatureFacts};
use crate::Result;

/// Rows of each neighbour table.
const NEIGHBOURS_SHOWN: usize = 8;

/// File name of a feature's page.
pub fn page_file(layer: u32, feature: u32) -> String {
    format!("L{layer}_F{feature}.html")
}

/// What links one page to the others: which features have pages, in which order, and the
/// attribution graph's edges by feature.
pub struct PageLinks {
    pub order: Vec<(u32, u32)>,
    pub pages: HashSet<(u32, u32)>,
    pub graph: GraphNeighbours,
}

/// Edges of the report's attribution graph summed per pair of nodes named by feature id (or by
/// the input/error node's label): into and out of each feature.
#[derive(Default)]
pub struct GraphNeighbours {
    /// Whether the report has an attribution graph at all (else its tables say nothing).
    present: bool,
    into: BTreeMap<(u32, u32), Vec<(String, f64)>>,
    out_of: BTreeMap<(u32, u32), Vec<(String, f64)>>,
}

impl GraphNeighbours {
    /// From a circuit-tracer graph file; feature nodes are "{layer}_{feature}_{pos}".
    pub fn from_graph(graph: &crate::circuits::GraphFile) -> GraphNeighbours {
        let feature_of = |id: &str| -> Option<(u32, u32)> {
            let mut parts = id.split('_');
            let (l, f) = (parts.next()?.parse().ok()?, parts.next()?.parse::<i64>().ok()?);
            u32::try_from(f).ok().map(|f| (l, f))
        };
        let clerp: BTreeMap<&str, &str> = graph.nodes.iter().map(|n| (n.node_id.as_str(), n.shown_label())).collect();
        let is_feature: HashSet<&str> = graph.nodes.iter().filter(|n| n.feature_type == "cross layer transcoder").map(|n| n.node_id.as_str()).collect();
        let name = |id: &str| match feature_of(id).filter(|_| is_feature.contains(id)) {
            Some((l, f)) => format!("L{l}_F{f}"),
            None => clerp.get(id).map_or(id.to_owned(), |c| c.to_string()),
        };
        let mut sums: [BTreeMap<((u32, u32), String), f64>; 2] = Default::default();
        for link in &graph.links {
            if let Some(t) = feature_of(&link.target).filter(|_| is_feature.contains(link.target.as_str())) {
                *sums[0].entry((t, name(&link.source))).or_default() += link.weight as f64;
            }
            if let Some(s) = feature_of(&link.source).filter(|_| is_feature.contains(link.source.as_str())) {
                *sums[1].entry((s, name(&link.target))).or_default() += link.weight as f64;
            }
        }
        let [into, out_of] = sums.map(|m| {
            let mut by: BTreeMap<(u32, u32), Vec<(String, f64)>> = BTreeMap::new();
            for ((f, other), w) in m {
                by.entry(f).or_default().push((other, w));
            }
            by.values_mut().for_each(|v| {
                v.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then_with(|| a.0.cmp(&b.0)));
                v.truncate(NEIGHBOURS_SHOWN);
            });
            by
        });
        GraphNeighbours { present: true, into, out_of }
    }

    pub fn features(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.into.keys().chain(self.out_of.keys()).copied()
    }
}

/// Writes the page of `facts` into `dir` (the report's `features/` folder).
pub fn write_feature_page(ctx: &Context, facts: &FeatureFacts, links: &PageLinks, dir: &Path) -> Result<()> {
    let id = facts.id();
    let m = ctx.mined(facts.index);
    let mut html = head(&format!("{id} · VoltLens"), 1);
    let at = links.order.iter().position(|&k| k == (facts.layer, facts.feature));
    let neighbour = |k: Option<usize>, text: &str| match k.and_then(|k| links.order.get(k)) {
        Some(&(l, f)) => format!("<a id=\"{text}\" href=\"{}\">{text} L{l}_F{f}</a>", page_file(l, f)),
        None => format!("<span class=\"hint\">no {text}</span>"),
    };
    let _ = writeln!(
        html,
        "<div class=\"nav\"><a id=\"back\" href=\"../index.html\">← all features</a>{}{}<a href=\"{card}\">card (PNG)</a>{}</div>",
        neighbour(at.and_then(|k| k.checked_sub(1)), "previous"),
        neighbour(at.map(|k| k + 1), "next"),
        if links.graph.features().any(|k| k == (facts.layer, facts.feature)) { "<a href=\"../graph.html\">attribution graph</a>" } else { "" },
        card = card_file(facts.layer, facts.feature),
    );
    let _ = writeln!(html, "<h1>Layer {} · feature {}</h1>", facts.layer, facts.feature);
    let _ = writeln!(
        html,
        "<div class=\"sub\">fires on {} of steps · mean when firing {} · max {}{}</div>",
        percent(facts.density),
        num(m.mean_firing),
        num(m.max as f64),
        output_effect(ctx, facts.index).map_or(String::new(), |mv| format!(" · <b>output effect {} mV</b> (change in predicted voltage when it is ablated where it fires)", num(mv)))
    );
    write_label(&mut html, ctx, ctx.label(facts.index));
    html.push_str("<h2>Example windows</h2>\n<p class=\"hint\">Top windows (the strongest of each protocol, then of each cell) and one example per activation decile. Hover to read every row at one step; drag across the plot to zoom in, double-click to zoom out. Trace colour = activation (grey = silent).</p>\n<div class=\"tabs\" id=\"window-tabs\"></div><div id=\"window-title\" class=\"readout\"></div><div id=\"windows\"></div><div id=\"window-readout\" class=\"readout\"></div>\n");
    html.push_str("<div class=\"columns\">\n");
    let link = |name: &str| feature_link(name, &links.pages);
    let co: Vec<[String; 4]> = facts
        .co_firing
        .iter()
        .map(|c| [link(&c.id), format!("{:.2}", c.lift), percent(c.p_given), c.shared.to_string()])
        .collect();
    // A dense feature's lift is capped at 1 / its density, reached by any feature firing only inside it.
    let cap = if facts.density > 0.2 { format!("; at most {:.2} for a feature firing on {} of steps, as here", 1.0 / facts.density, percent(facts.density)) } else { String::new() };
    let caption = format!("lift = P(other fires | this fires) / P(other fires); at least a few shared steps{cap}");
    table(&mut html, "Co-firing by lift", &caption, &["feature", "lift", "P(other | this)", "shared steps"], &co, "none");
    let pull: Vec<[String; 2]> = pullback_rows(ctx, facts).into_iter().map(|(name, w)| [link(&name), num(w)]).collect();
    table(&mut html, "Pullback: earlier features that drive it", "direct path through the residual stream, norms frozen: change of this feature's pre-activation per unit of the earlier feature", &["feature", "weight"], &pull, if facts.layer == 0 { "none: layer 0 has no earlier features" } else { "none" });
    write_paths(&mut html, ctx, facts, &links.pages);
    let key = (facts.layer, facts.feature);
    if links.graph.present {
        for (title, map) in [("Graph: what feeds it", &links.graph.into), ("Graph: what it feeds", &links.graph.out_of)] {
            let rows: Vec<[String; 2]> = map.get(&key).into_iter().flatten().map(|(n, w)| [link(n), num(*w)]).collect();
            table(&mut html, title, "edges of the report's attribution graph, summed over steps", &["node", "weight"], &rows, "none");
        }
    } else {
        html.push_str("<div><h2>Attribution graph</h2><p class=\"hint\">This report has none: a pipeline with a [circuits] stage draws one, and its edges into and out of this feature are listed here.</p></div>\n");
    }
    let de: Vec<[String; 2]> = facts.deembedding.iter().map(|(c, w)| [escape(crate::report::card::channel_name(c)), num(*w)]).collect();
    table(&mut html, "Input channels (de-embedding)", "pre-activation change per standard deviation of the input channel, direct path", &["channel", "weight"], &de, "none");
    html.push_str("</div>\n");
    let _ = writeln!(html, "<h2>Card</h2>\n<a href=\"{0}\"><img loading=\"lazy\" src=\"{0}\" alt=\"card of {id}\" style=\"max-width:100%\"></a>", card_file(facts.layer, facts.feature));
    html.push_str(&json_block("feature-data", &window_data(ctx, facts)));
    let _ = write!(html, "<script src=\"../{ASSETS_DIR}/feature.js\"></script>\n</body>\n</html>\n");
    crate::io::write_atomic(&dir.join(page_file(facts.layer, facts.feature)), html.as_bytes())
}

/// A feature id as a link to its page when it has one; any other name as plain text.
fn feature_link(name: &str, pages: &HashSet<(u32, u32)>) -> String {
    match crate::report::stage::parse_feature_ids(name).ok().as_deref() {
        Some(&[(l, f)]) if pages.contains(&(l, f)) => format!("<a href=\"{}\">{}</a>", page_file(l, f), escape(name)),
        _ => escape(name),
    }
}

/// mV change in predicted voltage when the feature is ablated where it fires, when the mine
/// stage measured it (an optional column of its table, read by name).
fn output_effect(ctx: &Context, i: usize) -> Option<f64> {
    serde_json::to_value(ctx.mined(i)).ok()?.get("output_effect_mv")?.as_f64()
}

fn pullback_rows(ctx: &Context, facts: &FeatureFacts) -> Vec<(String, f64)> {
    let Some(tc) = ctx.inputs.transcoder else { return Vec::new() };
    let rows = crate::circuits::pullback(tc, facts.layer as usize, facts.feature as usize, NEIGHBOURS_SHOWN).unwrap_or_default();
    rows.into_iter().map(|r| (format!("L{}_F{}", r.layer, r.feature), r.weight as f64)).collect()
}

/// The computational paths into this feature, when the run computed them.
fn write_paths(html: &mut String, ctx: &Context, facts: &FeatureFacts, pages: &HashSet<(u32, u32)>) {
    let Some(p) = ctx.inputs.paths.iter().find(|p| (p.layer, p.feature) == (facts.layer, facts.feature)) else { return };
    let node = |n: crate::circuits::NodeKind| match n {
        crate::circuits::NodeKind::Feature { layer, pos, feature } => {
            format!("{} @{}", feature_link(&format!("L{layer}_F{feature}"), pages), p.first_step + pos)
        }
        other => escape(&crate::circuits::node_name(other, p.first_step, &p.channels)),
    };
    let rows: Vec<[String; 2]> = p.paths.iter().map(|path| [path.nodes.iter().map(|&n| node(n)).collect::<Vec<_>>().join(" → "), num(path.contribution as f64)]).collect();
    let hint = format!("greedy search (Dunefsky et al. 2024) into its pre-activation at step {} of cell {}, the peak of its strongest window: earlier features or input channels → (a feature →) this feature; contribution along the path", p.step, p.cell_id);
    table(html, "Computational paths", &hint, &["path", "contribution"], &rows, "none");
}

/// A titled table; `empty` says why where it has no rows.
fn table<const N: usize>(html: &mut String, title: &str, hint: &str, header: &[&str; N], rows: &[[String; N]], empty: &str) {
    let _ = write!(html, "<div><h2>{}</h2><p class=\"hint\">{}</p><table class=\"data\"><tr>", escape(title), escape(hint));
    header.iter().for_each(|h| {
        let _ = write!(html, "<th>{}</th>", escape(h));
    });
    html.push_str("</tr>");
    if rows.is_empty() {
        let _ = write!(html, "<tr><td colspan=\"{N}\">{}</td></tr>", escape(empty));
    }
    for row in rows {
        html.push_str("<tr>");
        row.iter().enumerate().for_each(|(k, v)| {
            let _ = write!(html, "<td{}>{v}</td>", if k > 0 { " class=\"num\"" } else { "" });
        });
        html.push_str("</tr>");
    }
    html.push_str("</table></div>\n");
}

/// The verdict, the acceptance checks of the best candidate, and every candidate's scores.
fn write_label(html: &mut String, ctx: &Context, label: Option<&FeatureLabel>) {
    html.push_str("<h2>Label</h2>\n");
    let Some(l) = label else {
        html.push_str("<p>No label was computed for this feature.</p>\n");
        return;
    };
    let Some(best) = l.candidates.first() else {
        let _ = writeln!(html, "<p class=\"verdict no\">{}</p>", escape(&l.label));
        return;
    };
    if l.accepted {
        let _ = writeln!(html, "<p class=\"verdict\"><span class=\"yes\">Accepted:</span> {}</p>", escape(&l.label));
    } else {
        let reason = crate::label::unexplained_reason(l, &ctx.label_cfg);
        let _ = writeln!(html, "<p class=\"verdict\"><span class=\"no\">Unexplained:</span> {}. Closest: {}</p>", escape(&reason), escape(&best.sentence));
    }
    if l.accepted && l.siblings > 0 {
        let (n, plural) = (l.siblings, l.siblings > 1);
        let auroc = if l.sibling_auroc.is_finite() {
            format!(" Sibling AUROC {}: how well the label ranks this feature's firing steps above theirs on the test cells (0.5 = it cannot tell them apart).", num(l.sibling_auroc))
        } else {
            String::new()
        };
        let _ = writeln!(html, "<p class=\"hint\">{n} other feature{} share{} this sentence.{auroc}</p>", if plural { "s" } else { "" }, if plural { "" } else { "s" });
    }
    let checks = crate::report::acceptance_checks(l, &ctx.label_cfg);
    if !checks.is_empty() {
        html.push_str("<table class=\"data\" id=\"checks\"><tr><th>acceptance check</th><th>value</th><th>threshold</th><th></th></tr>");
        for c in checks {
            let (class, verdict) = if c.pass { ("pass", "pass") } else { ("fail", "fails") };
            let _ = write!(html, "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td class=\"{class}\">{verdict}</td></tr>", escape(c.name), num(c.value), escape(&c.threshold));
        }
        html.push_str("</table>\n");
    }
    html.push_str("<h3>Candidates and the baseline</h3>\n<p class=\"hint\">The label first (the search's best on the explain cells that holds up on their resamples), then the runners-up; scores on the held-out test cells.</p>\n<table class=\"data\" id=\"candidates\"><tr><th></th><th>sentence</th><th>AUROC</th><th>F1</th><th title=\"share of the steps a yes/no label names on which the feature fires\">fires on</th><th>Spearman</th><th>R²</th><th>q</th><th>empirical p</th><th>explain→test gap</th><th>strength</th></tr>");
    let rows = l.candidates.iter().enumerate().map(|(k, c)| (format!("{}", k + 1), c)).chain(l.baseline.iter().map(|b| ("baseline (raw V/I)".to_owned(), b)));
    for (tag, c) in rows {
        candidate_row(html, &tag, c);
    }
    html.push_str("</table>\n");
    html.push_str(&crate::report::html::glossary(&ctx.label_cfg));
}

fn candidate_row(html: &mut String, tag: &str, c: &CandidateResult) {
    let _ = write!(html, "<tr><td>{}</td><td>{}</td>", escape(tag), escape(&c.sentence));
    for x in [c.test.auroc, c.test.f1, c.test.precision, c.test.spearman, c.test.r2, c.q_value, c.p_empirical, c.gap, c.strength] {
        let _ = write!(html, "<td class=\"num\">{}</td>", num(x));
    }
    html.push_str("</tr>");
}

/// Significant digits kept in the page's data (the traces are drawn a few hundred pixels high).
fn round(x: f64) -> Value {
    if x.is_finite() { json!(format!("{x:.4e}").parse::<f64>().unwrap_or(x)) } else { Value::Null }
}

/// The example windows as `feature.js` reads them: per window the time from its peak, the
/// physical channels and the activation at every step.
fn window_data(ctx: &Context, facts: &FeatureFacts) -> Value {
    let m = ctx.mined(facts.index);
    let acts = ctx.acts(facts.index);
    let chosen = crate::report::card::shown_windows(ctx, m);
    let (scale, unit) = feature_time_scale(ctx, &chosen);
    let windows: Vec<Value> = chosen
        .iter()
        .map(|w: &&Window| {
            let data = &ctx.inputs.dataset.data[w.cell];
            let rows = w.start_row as usize..w.end_row as usize;
            let t0 = data.test_time[w.peak_row as usize];
            let series = |f: &dyn Fn(usize) -> f64| rows.clone().map(|i| round(f(i))).collect::<Vec<_>>();
            let cell = &ctx.inputs.dataset.cells[w.cell].cell_id;
            let (name, title) = match w.kind {
                // Named by cell: the windows shown are the strongest of each protocol, then cell,
                // so their global ranks skip ("top 1, top 9, top 10").
                WindowKind::Top => (crate::report::card::middle_ellipsis(cell, 24), format!("top window {} · cell {cell} · peak {} at step {}", w.rank + 1, num(w.value as f64), w.peak_row)),
                _ => (format!("decile {}", w.rank + 1), format!("decile {} example · cell {cell} · activation {} at step {}", w.rank + 1, num(w.value as f64), w.peak_row)),
            };
            json!({
                "name": name,
                "title": title,
                "first_step": w.start_row,
                "t": series(&|i| (data.test_time[i] - t0) / scale),
                "ch": {
                    "V": series(&|i| data.voltage[i] as f64),
                    "I": series(&|i| data.current[i] as f64),
                    "T": series(&|i| data.temperature[i].map_or(f64::NAN, |t| t as f64)),
                    "SOC": series(&|i| 100.0 * data.soc[i] as f64),
                },
                "a": window_activation(acts, w).into_iter().map(|a| round(a as f64)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "max": facts.max,
        "time_unit": unit,
        "channels": [
            { "key": "V", "name": "Voltage", "unit": "V" },
            { "key": "I", "name": "Current", "unit": "A" },
            { "key": "T", "name": "Temperature", "unit": "°C" },
            { "key": "SOC", "name": "SOC", "unit": "%" },
        ],
        "windows": windows,
    })
}
