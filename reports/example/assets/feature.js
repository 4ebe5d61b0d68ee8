// VoltLens feature page: the example windows as stacked traces (voltage, current, temperature,
// SOC) over the feature's activation, sharing one time axis. Hover reads every row at one step,
// dragging across the plot zooms into that stretch, a double-click zooms back out; a touch reads
// the step under the finger. The drawing takes the page's width, up to 1000.
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('feature-data').textContent);
  var box = document.getElementById('windows');
  if (!box || !data.windows.length) return;
  var NS = 'http://www.w3.org/2000/svg';
  var W = 1000, LEFT = 170, RIGHT = 16, ROW = 78, GAP = 10, AROW = 54, TOP = 8, AXIS = 34;
  var rows = data.channels.concat([{ key: 'a', name: 'Activation', unit: '' }]);
  var H = TOP + (ROW + GAP) * data.channels.length + AROW + AXIS;
  var current = 0, zoom = null;

  function el(name, attrs, parent) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(e);
    return e;
  }
  // Viridis at five stops, as on the PNG card.
  var STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function viridis(x) {
    x = Math.max(0, Math.min(1, x)) * (STOPS.length - 1);
    var i = Math.min(Math.floor(x), STOPS.length - 2), t = x - i;
    var c = STOPS[i].map(function (a, k) { return Math.round(a + (STOPS[i + 1][k] - a) * t); });
    return 'rgb(' + c.join(',') + ')';
  }
  function fmt(x) {
    if (x === null || x === undefined || isNaN(x)) return '–';
    var a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return x.toExponential(1);
    return x.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3);
  }
  function range(values) {
    var lo = Infinity, hi = -Infinity;
    values.forEach(function (v) { if (v !== null && !isNaN(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    if (lo === Infinity) return null;
    var pad = Math.max((hi - lo) * 0.08, 1e-3 * Math.max(Math.abs(hi), 1));
    return [lo - pad, hi + pad];
  }
  function ticks(lo, hi, n) {
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    [1, 2, 5, 10].some(function (m) { if ((hi - lo) / (step * m) <= n) { step *= m; return true; } return false; });
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    out.step = step;
    // One tick gives no scale (3.595–3.605 V at a 0.01 step): ask for finer ones.
    return out.length < 2 && n < 24 ? ticks(lo, hi, n * 2) : out;
  }
  // Tick labels with the decimals their spacing needs, alike on one axis: -5.002 -5.000 -4.998,
  // not -5.00 three times; 0 50 100, not 0.000 50.0 100.
  function tickLabel(v, step) {
    if (step < 1e-4 || step >= 1e5) return v.toExponential(1);
    return v.toFixed(Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
  }

  function draw() {
    // As wide as the page allows, up to 1000: a phone draws at its own width (at least 520, then
    // scaled), so that text keeps its size instead of shrinking with a fixed 1000-unit drawing.
    W = Math.max(520, Math.min(1000, box.clientWidth || 1000));
    var w = data.windows[current];
    var xr = zoom || [w.t[0], w.t[w.t.length - 1]];
    if (xr[0] === xr[1]) xr = [xr[0] - 1, xr[1] + 1];
    var x = function (t) { return LEFT + (t - xr[0]) / (xr[1] - xr[0]) * (W - LEFT - RIGHT); };
    var idx = [];
    w.t.forEach(function (t, i) { if (t >= xr[0] && t <= xr[1]) idx.push(i); });
    var svg = el('svg', { width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, class: 'plot', id: 'window-plot' });
    el('rect', { x: 0, y: 0, width: W, height: H, fill: '#fff' }, svg);
    var y0 = TOP;
    rows.forEach(function (row) {
      var h = row.key === 'a' ? AROW : ROW;
      var values = row.key === 'a' ? w.a : w.ch[row.key];
      var g = el('g', { 'data-row': row.key }, svg);
      el('rect', { x: LEFT, y: y0, width: W - LEFT - RIGHT, height: h, fill: 'none', stroke: '#ddd' }, g);
      var label = el('text', { x: 6, y: y0 + h / 2, 'font-size': 13, 'dominant-baseline': 'middle' }, g);
      label.textContent = row.name + (row.unit ? ' (' + row.unit + ')' : '');
      var yr = row.key === 'a' ? [0, Math.max(data.max, 1e-9)] : range(idx.map(function (i) { return values[i]; }));
      if (!yr) {
        var t = el('text', { x: (LEFT + W) / 2, y: y0 + h / 2, 'font-size': 12, fill: '#999', 'text-anchor': 'middle' }, g);
        // SOC is derived: a cell no rule anchored has none, though its cycler logged everything.
        t.textContent = row.key === 'SOC' ? 'no SOC: the cell has no anchor' : 'not logged';
      } else if (row.key === 'a') {
        var bw = Math.max(1, (W - LEFT - RIGHT) / Math.max(idx.length, 1));
        idx.forEach(function (i) {
          if (!(w.a[i] > 0)) return;
          var bh = w.a[i] / yr[1] * (h - 4);
          // Bars at the window's ends are cut at the frame, not drawn past it.
          var bx = Math.max(LEFT, x(w.t[i]) - bw / 2), bx1 = Math.min(W - RIGHT, x(w.t[i]) + bw / 2);
          if (bx1 > bx) el('rect', { x: bx, y: y0 + h - bh, width: bx1 - bx, height: bh, fill: viridis(w.a[i] / data.max) }, g);
        });
        // Under the row's name, clear of the bars.
        var amax = el('text', { x: 6, y: y0 + h / 2 + 16, 'font-size': 11, fill: '#666' }, g);
        amax.textContent = 'max ' + fmt(data.max);
      } else {
        var y = function (v) { return y0 + h - (v - yr[0]) / (yr[1] - yr[0]) * h; };
        var yt = ticks(yr[0], yr[1], 3);
        yt.forEach(function (v) {
          el('line', { x1: LEFT - 3, x2: LEFT, y1: y(v), y2: y(v), stroke: '#888' }, g);
          var tt = el('text', { x: LEFT - 5, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 10, fill: '#555' }, g);
          tt.textContent = tickLabel(v, yt.step);
        });
        // Segments coloured by the activation at their end, as on the card; firing ones over a
        // dark edge, so that the strongest (viridis yellow) stays visible on white.
        [true, false].forEach(function (edge) {
          for (var k = 1; k < idx.length; k++) {
            var i = idx[k], j = idx[k - 1];
            if (values[i] === null || values[j] === null || (edge && !(w.a[i] > 0))) continue;
            var stroke = edge ? '#3a3a3a' : w.a[i] > 0 ? viridis(w.a[i] / data.max) : '#c8c8c8';
            el('line', { x1: x(w.t[j]), y1: y(values[j]), x2: x(w.t[i]), y2: y(values[i]), stroke: stroke, 'stroke-width': edge ? 4 : 2.5 }, g);
          }
        });
      }
      y0 += h + GAP;
    });
    var axisY = y0 - GAP;
    var xt = ticks(xr[0], xr[1], 8);
    xt.forEach(function (v) {
      el('line', { x1: x(v), x2: x(v), y1: axisY, y2: axisY + 4, stroke: '#888' }, svg);
      var t = el('text', { x: x(v), y: axisY + 16, 'text-anchor': 'middle', 'font-size': 11, fill: '#555' }, svg);
      t.textContent = tickLabel(v, xt.step);
    });
    var xl = el('text', { x: (LEFT + W) / 2, y: H - 4, 'text-anchor': 'middle', 'font-size': 12 }, svg);
    xl.textContent = 'Time from peak (' + data.time_unit + ')';
    var cursor = el('line', { x1: 0, x2: 0, y1: TOP, y2: axisY, stroke: '#000', 'stroke-opacity': 0.5, visibility: 'hidden' }, svg);
    var band = el('rect', { x: 0, y: TOP, width: 0, height: axisY - TOP, fill: '#5e3c99', 'fill-opacity': 0.12, visibility: 'hidden' }, svg);
    var readout = document.getElementById('window-readout');
    var dragFrom = null;
    function tAt(ev) {
      var r = svg.getBoundingClientRect();
      var px = (ev.clientX - r.left) * W / r.width;
      return xr[0] + (px - LEFT) / (W - LEFT - RIGHT) * (xr[1] - xr[0]);
    }
    svg.addEventListener('mousemove', function (ev) {
      var t = tAt(ev), best = idx[0];
      idx.forEach(function (i) { if (Math.abs(w.t[i] - t) < Math.abs(w.t[best] - t)) best = i; });
      if (best === undefined) return;
      cursor.setAttribute('x1', x(w.t[best])); cursor.setAttribute('x2', x(w.t[best]));
      cursor.setAttribute('visibility', 'visible');
      var parts = ['t = ' + fmt(w.t[best]) + ' ' + data.time_unit, 'step ' + (w.first_step + best)];
      data.channels.forEach(function (c) { parts.push(c.name + ' ' + fmt(w.ch[c.key][best]) + ' ' + c.unit); });
      parts.push('activation ' + fmt(w.a[best]));
      readout.textContent = parts.join(' · ');
      if (dragFrom !== null) {
        var a = Math.min(x(dragFrom), x(t)), b = Math.max(x(dragFrom), x(t));
        band.setAttribute('x', a); band.setAttribute('width', b - a); band.setAttribute('visibility', 'visible');
      }
    });
    svg.addEventListener('mouseleave', function () { cursor.setAttribute('visibility', 'hidden'); });
    // A touch reads the step under the finger, as hovering does.
    svg.addEventListener('touchstart', function (ev) {
      var touch = ev.touches[0];
      svg.dispatchEvent(new MouseEvent('mousemove', { clientX: touch.clientX, clientY: touch.clientY }));
    }, { passive: true });
    svg.addEventListener('mousedown', function (ev) { dragFrom = tAt(ev); ev.preventDefault(); });
    svg.addEventListener('mouseup', function (ev) {
      var t = tAt(ev), from = dragFrom;
      dragFrom = null;
      if (from !== null && Math.abs(x(t) - x(from)) > 6) { zoom = [Math.min(from, t), Math.max(from, t)]; draw(); }
      else band.setAttribute('visibility', 'hidden');
    });
    svg.addEventListener('dblclick', function () { zoom = null; draw(); });
    var old = document.getElementById('window-plot');
    if (old) old.replaceWith(svg); else box.appendChild(svg);
    document.getElementById('window-title').textContent = w.title;
    document.body.dataset.window = current;
  }

  var tabs = document.getElementById('window-tabs');
  data.windows.forEach(function (w, k) {
    var b = document.createElement('button');
    b.textContent = w.name;
    b.title = w.title;
    b.addEventListener('click', function () {
      current = k; zoom = null;
      Array.prototype.forEach.call(tabs.children, function (c, j) { c.classList.toggle('on', j === k); });
      draw();
    });
    tabs.appendChild(b);
  });
  tabs.children[0].classList.add('on');
  draw();
  var resized = null;
  window.addEventListener('resize', function () { clearTimeout(resized); resized = setTimeout(draw, 150); });
})();
