// VoltLens index: sort by any column, filter by text (labels and runners-up), layer, covariate
// family, accepted/unexplained, AUROC and density ranges. The whole state lives in the URL hash
// (#layer=1&status=accepted&sort=-density), so a filtered view can be bookmarked or shared.
(function () {
  'use strict';
  var table = document.getElementById('features');
  var body = table.tBodies[0];
  var numeric = { layer: 1, feature: 1, density: 1, auroc: 1, f1: 1, spearman: 1, q: 1, stability: 1, strength: 1, effect: 1 };
  // Filter controls by the hash key that stores them.
  var controls = {
    q: document.getElementById('filter-text'),
    layer: document.getElementById('filter-layer'),
    family: document.getElementById('filter-family'),
    status: document.getElementById('filter-status'),
    auroc_min: document.getElementById('filter-auroc-min'),
    auroc_max: document.getElementById('filter-auroc-max'),
    density_min: document.getElementById('filter-density-min'),
    density_max: document.getElementById('filter-density-max')
  };
  var sorted = '';

  function key(row, col) {
    // L1_F10 after L1_F9: the feature id sorts by layer, then feature.
    if (col === 'id') return key(row, 'layer') * 1e6 + key(row, 'feature');
    var v = row.dataset[col];
    if (numeric[col]) { var x = parseFloat(v); return isNaN(x) ? -Infinity : x; }
    return (v || '').toLowerCase();
  }
  function sortBy(spec) {
    var desc = spec.charAt(0) === '-', col = desc ? spec.slice(1) : spec;
    if (!col) return;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      var c = x < y ? -1 : x > y ? 1 : 0;
      if (c === 0) return key(a, 'layer') - key(b, 'layer') || key(a, 'feature') - key(b, 'feature');
      return desc ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.classList.remove('sorted-asc', 'sorted-desc');
      if (th.dataset.col === col) th.classList.add(desc ? 'sorted-desc' : 'sorted-asc');
    });
    sorted = spec;
    document.body.dataset.sortedBy = spec;
  }
  function number(el) { var x = parseFloat(el.value); return isNaN(x) ? null : x; }
  function inRange(value, lo, hi) {
    if (lo === null && hi === null) return true;
    var x = parseFloat(value);
    if (isNaN(x)) return false;
    return (lo === null || x >= lo) && (hi === null || x <= hi);
  }
  function filter() {
    var q = controls.q.value.toLowerCase().trim(), layer = controls.layer.value, family = controls.family.value, status = controls.status.value;
    var aLo = number(controls.auroc_min), aHi = number(controls.auroc_max);
    // Density is typed in percent and stored as a share.
    var dLo = number(controls.density_min), dHi = number(controls.density_max);
    dLo = dLo === null ? null : dLo / 100; dHi = dHi === null ? null : dHi / 100;
    var shown = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      var ok = (!q || (r.dataset.id + ' ' + r.dataset.search).toLowerCase().indexOf(q) >= 0)
        && (layer === '' || r.dataset.layer === layer)
        && (family === '' || (' ' + r.dataset.family + ' ').indexOf(' ' + family + ' ') >= 0)
        && (status === '' || (status === 'accepted') === (r.dataset.accepted === '1'))
        && inRange(r.dataset.auroc, aLo, aHi)
        && inRange(r.dataset.density, dLo, dHi);
      r.style.display = ok ? '' : 'none';
      shown += ok ? 1 : 0;
    });
    document.getElementById('shown').textContent = shown + ' of ' + body.rows.length + ' features shown';
    document.body.dataset.shown = shown;
  }
  function writeHash() {
    var parts = [];
    Object.keys(controls).forEach(function (k) { if (controls[k].value !== '') parts.push(k + '=' + encodeURIComponent(controls[k].value)); });
    if (sorted) parts.push('sort=' + sorted);
    history.replaceState(null, '', parts.length ? '#' + parts.join('&') : location.pathname);
  }
  function readHash() {
    var state = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      var at = kv.indexOf('=');
      if (at <= 0) return;
      // A hand-typed '%' that is not an escape stays as it is.
      try { state[kv.slice(0, at)] = decodeURIComponent(kv.slice(at + 1)); } catch (e) { state[kv.slice(0, at)] = kv.slice(at + 1); }
    });
    Object.keys(controls).forEach(function (k) { controls[k].value = state[k] || ''; });
    if (state.sort) sortBy(state.sort);
    filter();
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    if (!th.dataset.col) return;
    th.addEventListener('click', function () {
      sortBy((th.classList.contains('sorted-asc') ? '-' : '') + th.dataset.col);
      writeHash();
    });
  });
  Object.keys(controls).forEach(function (k) {
    ['input', 'change'].forEach(function (ev) { controls[k].addEventListener(ev, function () { filter(); writeHash(); }); });
  });
  document.getElementById('filter-reset').addEventListener('click', function () {
    Object.keys(controls).forEach(function (k) { controls[k].value = ''; });
    filter(); writeHash();
  });
  window.addEventListener('hashchange', readHash);
  readHash();
  window.addEventListener('load', function () {
    var imgs = document.images, ok = 0;
    for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
    document.body.dataset.imagesLoaded = ok + '/' + imgs.length;
  });
})();
