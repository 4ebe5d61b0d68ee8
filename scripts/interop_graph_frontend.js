// Runs circuit-tracer's own front-end code on a VoltLens graph file, under node: `formatData`
// from its attribution_graph/util-cg.js, the step that turns a graph JSON into what the page
// draws (node ids, feature rows, links, logit labels). The page itself cannot run here: it loads
// d3 and its helpers from transformer-circuits.pub. So the few d3 calls formatData makes are
// stood in for below, and the script checks what it returns.
//
// Usage: node scripts/interop_graph_frontend.js UTIL_CG_JS GRAPH_JSON
// Exits 1 with the reason when formatData throws, drops a node or link other than those it drops
// from circuit-tracer's own graphs, merges two nodes into one feature row, or gives the output no
// label. What it drops from circuit-tracer's own graphs: `prune_graph` keeps the node whose
// cumulative influence crosses `node_threshold` and writes that cumulative influence, which lies
// above the threshold, and formatData keeps only nodes at or below it. So a graph pruned as
// circuit-tracer prunes holds at most one such node, and formatData drops it and its links.
const fs = require("fs");
const [utilCg, graphPath] = process.argv.slice(2);

// The d3 functions formatData calls (d3-array's max, sum, sort; jetpack's nestBy).
const by = (f) => (a, b) => (f(a) < f(b) ? -1 : f(a) > f(b) ? 1 : 0);
global.d3 = {
  max: (xs, f) => xs.reduce((m, x) => (isNaN(f(x)) ? m : Math.max(m ?? -Infinity, f(x))), undefined),
  sum: (xs, f) => xs.reduce((s, x) => s + (+f(x) || 0), 0),
  sort: (xs, f) => [...xs].sort(by(f)),
  nestBy: (xs, f) => {
    const groups = new Map();
    for (const x of xs) {
      const key = f(x);
      if (!groups.has(key)) groups.set(key, Object.assign([], { key }));
      groups.get(key).push(x);
    }
    return [...groups.values()];
  },
};
global.window = {};
global.util = { ppToken: (d) => d, params: new URLSearchParams("") };
eval(fs.readFileSync(utilCg, "utf8"));

const fail = (why) => {
  console.log(`circuit-tracer front end on ${graphPath}: ${why}`);
  process.exit(1);
};
const data = JSON.parse(fs.readFileSync(graphPath, "utf8"));
const visState = { pruningThreshold: data.metadata.node_threshold, pinnedIds: [] };
window.utilCg
  .formatData(data, visState)
  .then((out) => {
    const inputs = JSON.parse(fs.readFileSync(graphPath, "utf8"));
    const threshold = parseFloat(visState.pruningThreshold);
    const above = new Set(
      inputs.nodes
        .filter((d) => d.feature_type !== "embedding" && d.feature_type !== "logit" && d.influence > threshold)
        .map((d) => d.node_id),
    );
    if (above.size > 1) fail(`${above.size} nodes lie above node_threshold ${threshold}; circuit-tracer's pruning leaves at most one`);
    const nodes = inputs.nodes.length - above.size;
    const links = inputs.links.filter((l) => !above.has(l.source) && !above.has(l.target)).length;
    if (out.nodes.length !== nodes) fail(`kept ${out.nodes.length} of ${inputs.nodes.length} nodes, expected ${nodes}`);
    if (out.links.length !== links) fail(`kept ${out.links.length} of ${inputs.links.length} links, expected ${links}`);
    if (out.features.length !== out.nodes.length) fail(`${out.nodes.length} nodes became ${out.features.length} feature rows`);
    const logits = out.nodes.filter((d) => d.feature_type === "logit");
    if (logits.length !== 1 || !logits[0].logitToken || isNaN(logits[0].logitPct)) fail(`output label unread: ${JSON.stringify(logits.map((d) => d.clerp))}`);
    const streams = out.byStream.map((s) => s[0].layer).join(" ");
    console.log(
      `circuit-tracer front end (formatData) on ${graphPath}: ${out.nodes.length} nodes, ${out.links.length} links, ` +
        `${out.features.length} feature rows, streams ${streams}, output "${logits[0].logitToken}"` +
        (above.size ? ` (dropped the node crossing node_threshold, ${[...above][0]}, as from circuit-tracer's own graphs)` : "") +
        ": ok",
    );
  })
  .catch((e) => fail(`formatData threw ${e.stack}`));
