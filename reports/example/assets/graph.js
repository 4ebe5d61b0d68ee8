// VoltLens attribution-graph viewer: reads the circuit-tracer-format graph embedded in the page
// and draws it offline as layers (rows, inputs at the bottom, the prediction on top) × window
// steps (columns). Hover or click a node to highlight its edges and list their weights; a click
// on a feature opens its page from the side panel; pin nodes to keep a subgraph; the slider hides
// weak edges (relative to the strongest edge into each node). The hash keeps the state:
// #node=0_12_63&threshold=0.4&pinned=a,b&only=1 (threshold=0 shows every edge).
(function () {
  'use strict';
  var graph = JSON.parse(document.getElementById('graph-data').textContent);
  var pages = JSON.parse(document.getElementById('graph-pages').textContent);
  var NS = 'http://www.w3.org/2000/svg';
  var ROW = 96, PAD = 40, LEFT = 96, SLOT = 26, COLPAD = 34, TOP = 72, MINCOL = 78;
  var svg = document.getElementById('graph-svg');
  var side = document.getElementById('graph-side-body');
  var slider = document.getElementById('graph-threshold');
  var onlyPinned = document.getElementById('graph-only-pinned');
  var byId = {};
  // Columns and the side panel number steps as the cell does, as the subtitle ("steps
  // 1474–1537") and the feature pages do; ctx_idx counts from the window's start.
  var first = +((/steps (\d+)/.exec(graph.metadata.prompt || '') || [0, 0])[1]);
  graph.nodes.forEach(function (n) {
    // The output's label comes as circuit-tracer's `Output "…" (p=…)`: show the quoted part.
    if (n.is_target_logit) n.clerp = n.clerp.split('"')[1] || n.clerp;
    byId[n.node_id] = n;
  });
  var links = graph.links.filter(function (l) { return byId[l.source] && byId[l.target]; });
  var maxAbs = links.reduce(function (m, l) { return Math.max(m, Math.abs(l.weight)); }, 0) || 1;
  var layers = graph.nodes.filter(function (n) { return n.layer !== 'E'; }).map(function (n) { return +n.layer; });
  var outRow = Math.max.apply(null, layers.concat([1]));
  var selected = null, pinned = {};

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(x) {
    if (x === null || x === undefined || isNaN(x)) return '–';
    var a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(2);
    return x.toFixed(a >= 100 ? 1 : 3);
  }
  function row(n) { return n.layer === 'E' ? 0 : +n.layer + 1; }
  function kind(n) {
    if (n.layer === 'E') return 'input';
    if (n.is_target_logit) return 'output';
    return n.feature_type === 'mlp reconstruction error' ? 'error' : 'feature';
  }
  function featureId(n) { var p = n.node_id.split('_'); return 'L' + p[0] + '_F' + p[1]; }
  function page(n) { return kind(n) === 'feature' && pages.indexOf(featureId(n)) >= 0 ? 'features/' + featureId(n) + '.html' : null; }
  // The slider keeps each node's strongest incoming edges: an edge shows when its |weight| is at
  // least a share of the strongest edge into the same node (1 % at the left end, 100 % at the
  // right). One global cut would keep only the strong input edges and cut the prediction off;
  // by default a half, and #threshold=0 (or the slider's left end) shows every edge.
  var maxInto = {};
  links.forEach(function (l) { maxInto[l.target] = Math.max(maxInto[l.target] || 0, Math.abs(l.weight)); });
  var DEFAULT_SHARE = 0.5;
  function share() { var s = slider.value / 100; return s <= 0 ? 0 : Math.pow(10, -2 * (1 - s)); }
  function defaultSlider() { return Math.round(100 * (1 + Math.log10(DEFAULT_SHARE) / 2)); }
  function visibleLinks() {
    var t = share(), only = onlyPinned.checked;
    return links.filter(function (l) {
      return Math.abs(l.weight) >= t * maxInto[l.target] && (!only || (pinned[l.source] && pinned[l.target]));
    });
  }

  function draw() {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var shown = visibleLinks();
    // Only nodes that keep an edge are drawn (and the prediction, and pinned nodes).
    var keep = {};
    shown.forEach(function (l) { keep[l.source] = 1; keep[l.target] = 1; });
    graph.nodes.forEach(function (n) { if (n.is_target_logit || (pinned[n.node_id] && !onlyPinned.checked)) keep[n.node_id] = 1; });
    var nodes = graph.nodes.filter(function (n) { return keep[n.node_id]; });
    var steps = [], slots = {};
    nodes.forEach(function (n) {
      if (steps.indexOf(n.ctx_idx) < 0) steps.push(n.ctx_idx);
      var k = n.ctx_idx + ':' + row(n);
      slots[k] = (slots[k] || 0) + 1;
    });
    steps.sort(function (a, b) { return a - b; });
    var colX = {}, x = LEFT;
    steps.forEach(function (s) {
      var widest = 1;
      for (var r = 0; r <= outRow + 1; r++) widest = Math.max(widest, slots[s + ':' + r] || 0);
      colX[s] = x;
      // Wide enough for the step's two-line heading.
      x += Math.max(widest * SLOT + COLPAD, MINCOL);
    });
    var width = Math.max(x + PAD, 600), height = TOP + (outRow + 1) * ROW + PAD;
    svg.setAttribute('width', width); svg.setAttribute('height', height);
    svg.setAttribute('viewBox', '0 0 ' + width + ' ' + height);
    el('rect', { x: 0, y: 0, width: width, height: height, fill: '#fff', class: 'background' }, svg);
    for (var r = 0; r <= outRow; r++) {
      var yy = TOP + (outRow - r) * ROW + ROW / 2;
      el('line', { x1: LEFT - 10, x2: width - PAD / 2, y1: yy, y2: yy, stroke: '#f0f0f0' }, svg);
    }
    var tokens = graph.metadata.prompt_tokens || [];
    steps.forEach(function (s) {
      var head = el('text', { x: colX[s], y: 18, 'font-size': 12, fill: '#333' }, svg);
      head.textContent = 'step ' + (first + s);
      // A step's inputs ("4.135V -0.50C") on lines of their own.
      (tokens[s] || '').split(' ').forEach(function (part, k) {
        var tok = el('text', { x: colX[s], y: 34 + 13 * k, 'font-size': 11, fill: '#777' }, svg);
        tok.textContent = part;
      });
    });
    var pos = {}, used = {};
    nodes.forEach(function (n) {
      var k = n.ctx_idx + ':' + row(n);
      used[k] = (used[k] || 0);
      pos[n.node_id] = [colX[n.ctx_idx] + SLOT / 2 + used[k] * SLOT, TOP + (outRow - Math.min(row(n), outRow)) * ROW + ROW / 2];
      used[k] += 1;
    });
    var edgeLayer = el('g', { id: 'edges' }, svg);
    shown.forEach(function (l) {
      var a = pos[l.source], b = pos[l.target], dy = Math.max(Math.abs(a[1] - b[1]) / 2, 30);
      // Edges within one column bow left by how many rows they skip, so they do not overlap.
      var bow = a[0] === b[0] ? 14 + Math.abs(a[1] - b[1]) / 6 : 0;
      el('path', {
        d: 'M' + a[0] + ',' + a[1] + ' C' + (a[0] - bow) + ',' + (a[1] - dy) + ' ' + (b[0] - bow) + ',' + (b[1] + dy) + ' ' + b[0] + ',' + b[1],
        class: 'edge', stroke: l.weight >= 0 ? '#d6604d' : '#4393c3', 'stroke-opacity': 0.55,
        'stroke-width': 0.6 + 4 * Math.abs(l.weight) / maxAbs, 'data-source': l.source, 'data-target': l.target, 'data-weight': l.weight
      }, edgeLayer);
    });
    var nodeLayer = el('g', { id: 'nodes' }, svg);
    nodes.forEach(function (n) {
      var p = pos[n.node_id], k = kind(n), shape;
      if (k === 'feature') shape = el('circle', { cx: p[0], cy: p[1], r: 8, fill: '#5e3c99' }, nodeLayer);
      else if (k === 'error') shape = el('rect', { x: p[0] - 7, y: p[1] - 7, width: 14, height: 14, fill: '#9a9a9a' }, nodeLayer);
      else if (k === 'input') shape = el('path', { d: 'M' + p[0] + ',' + (p[1] - 9) + ' L' + (p[0] + 8) + ',' + (p[1] + 6) + ' L' + (p[0] - 8) + ',' + (p[1] + 6) + ' Z', fill: '#1b7837' }, nodeLayer);
      else shape = el('path', { d: 'M' + p[0] + ',' + (p[1] - 11) + ' L' + (p[0] + 11) + ',' + p[1] + ' L' + p[0] + ',' + (p[1] + 11) + ' L' + (p[0] - 11) + ',' + p[1] + ' Z', fill: '#e08b00' }, nodeLayer);
      shape.setAttribute('class', 'node' + (pinned[n.node_id] ? ' pinned' : '') + (selected === n.node_id ? ' selected' : ''));
      shape.setAttribute('data-id', n.node_id);
      var title = el('title', {}, shape);
      title.textContent = n.clerp + ' [' + n.node_id + ']';
      shape.addEventListener('mouseenter', function () { if (!selected) highlight(n.node_id); });
      shape.addEventListener('mouseleave', function () { if (!selected) highlight(null); });
      shape.addEventListener('click', function (ev) { ev.stopPropagation(); select(selected === n.node_id ? null : n.node_id); });
    });
    svg.querySelector('.background').addEventListener('click', function () { select(null); });
    // The row names ride along the left edge of the view (`keepRowNames`), over the columns.
    var names = el('g', { id: 'row-names' }, svg);
    el('rect', { x: 0, y: TOP, width: LEFT - 16, height: (outRow + 1) * ROW, fill: '#fff', 'fill-opacity': 0.85 }, names);
    for (var r2 = 0; r2 <= outRow; r2++) {
      var t = el('text', { x: 8, y: TOP + (outRow - r2) * ROW + ROW / 2 + 4, 'font-size': 13, fill: '#444' }, names);
      t.textContent = r2 === 0 ? 'inputs' : r2 === outRow ? 'prediction' : 'layer ' + (r2 - 1);
    }
    // The prediction sits in the last column, whose features run on to its right: scroll only as
    // far as it takes to bring it into view.
    var output = nodes.filter(function (n) { return kind(n) === 'output'; })[0];
    box.scrollLeft = output ? Math.max(0, pos[output.node_id][0] - box.clientWidth * 2 / 3) : box.scrollWidth;
    keepRowNames();
    document.getElementById('graph-count').textContent = nodes.length + ' nodes, ' + shown.length + ' of ' + links.length + ' edges (|weight| ≥ ' + Math.round(100 * share()) + ' % of the strongest into the same node)';
    highlight(selected);
  }

  // Marks the edges of node `id` (all edges when null) and fades the rest.
  function highlight(id) {
    var touched = {};
    Array.prototype.forEach.call(svg.querySelectorAll('.edge'), function (e) {
      var on = id !== null && (e.dataset.source === id || e.dataset.target === id);
      e.classList.toggle('hl', on);
      e.classList.toggle('faded', id !== null && !on);
      if (on) { touched[e.dataset.source] = 1; touched[e.dataset.target] = 1; }
    });
    Array.prototype.forEach.call(svg.querySelectorAll('.node'), function (e) {
      e.classList.toggle('faded', id !== null && !touched[e.dataset.id] && e.dataset.id !== id);
    });
    describe(id);
  }

  function edgeRows(list, end) {
    if (!list.length) return '<tr><td colspan="2">none shown</td></tr>';
    return list.sort(function (a, b) { return Math.abs(b.weight) - Math.abs(a.weight); }).map(function (l) {
      var n = byId[l[end]];
      return '<tr><td>' + esc(n.clerp) + ' <span class="hint">' + esc(n.node_id) + '</span></td><td class="num">' + fmt(l.weight) + '</td></tr>';
    }).join('');
  }
  function esc(s) { return String(s).replace(/[&<>"']/g, function (c) { return '&#' + c.charCodeAt(0) + ';'; }); }

  function describe(id) {
    if (id === null) { side.innerHTML = '<p class="hint">Hover over a node to see its edges; click to keep it selected.</p>'; return; }
    var n = byId[id], shown = visibleLinks();
    var into = shown.filter(function (l) { return l.target === id; }), out = shown.filter(function (l) { return l.source === id; });
    var link = page(n);
    side.innerHTML = '<h3>' + esc(n.clerp) + '</h3><table class="kv">'
      + '<tr><td>node</td><td>' + esc(n.node_id) + ' (' + kind(n) + ')</td></tr>'
      + '<tr><td>step</td><td>' + (first + n.ctx_idx) + '</td></tr>'
      + (n.activation !== null && n.activation !== undefined ? '<tr><td>activation</td><td>' + fmt(n.activation) + '</td></tr>' : '')
      + (n.influence !== null && n.influence !== undefined ? '<tr><td>cumulative influence</td><td>' + fmt(n.influence) + '</td></tr>' : '')
      + '</table>'
      + (link ? '<p><a id="graph-open" href="' + link + '">open the feature page of ' + featureId(n) + '</a></p>' : '')
      + '<p><button id="graph-pin">' + (pinned[id] ? 'unpin' : 'pin') + ' this node</button></p>'
      + '<h3>Into this node (' + into.length + ')</h3><table class="data">' + edgeRows(into, 'source') + '</table>'
      + '<h3>Out of this node (' + out.length + ')</h3><table class="data">' + edgeRows(out, 'target') + '</table>';
    document.getElementById('graph-pin').addEventListener('click', function () {
      if (pinned[id]) delete pinned[id]; else pinned[id] = 1;
      writeHash(); draw();
    });
  }

  var box = document.getElementById('graph-svg-box');
  function keepRowNames() {
    var names = document.getElementById('row-names');
    if (names) names.setAttribute('transform', 'translate(' + box.scrollLeft + ',0)');
  }
  box.addEventListener('scroll', keepRowNames);

  function select(id) {
    selected = id;
    Array.prototype.forEach.call(svg.querySelectorAll('.node'), function (e) { e.classList.toggle('selected', e.dataset.id === id); });
    highlight(id);
    writeHash();
    document.body.dataset.selected = id || '';
  }
  function writeHash() {
    var parts = [];
    if (selected) parts.push('node=' + encodeURIComponent(selected));
    if (+slider.value !== defaultSlider()) parts.push('threshold=' + (slider.value / 100));
    var p = Object.keys(pinned);
    if (p.length) parts.push('pinned=' + p.map(encodeURIComponent).join(','));
    if (onlyPinned.checked) parts.push('only=1');
    history.replaceState(null, '', parts.length ? '#' + parts.join('&') : location.pathname);
  }
  function decode(text) {
    try { return decodeURIComponent(text); } catch (e) { return text; }
  }
  function readHash() {
    var state = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      var at = kv.indexOf('=');
      if (at > 0) state[kv.slice(0, at)] = kv.slice(at + 1);
    });
    slider.value = state.threshold !== undefined ? Math.round(parseFloat(state.threshold) * 100) : defaultSlider();
    pinned = {};
    (state.pinned || '').split(',').filter(Boolean).forEach(function (id) { pinned[decode(id)] = 1; });
    onlyPinned.checked = state.only === '1';
    selected = null;
    draw();
    // The selection goes through the node's own click handler, as a user's click would.
    var id = state.node ? decode(state.node) : null;
    var target = id && svg.querySelector('.node[data-id="' + id.replace(/"/g, '') + '"]');
    if (target) {
      target.dispatchEvent(new MouseEvent('click', { bubbles: true }));
      target.scrollIntoView({ block: 'nearest', inline: 'center' });
    }
    document.body.dataset.ready = '1';
  }
  slider.addEventListener('input', function () { draw(); writeHash(); });
  onlyPinned.addEventListener('change', function () { draw(); writeHash(); });
  window.addEventListener('hashchange', readHash);
  readHash();
})();
