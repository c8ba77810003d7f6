// The report page's fixed CSS and script (see report.h), kept apart from the
// code that writes the page's data. Hand-written; no library, no network.
#ifndef LENSGRID_CLIENT_REPORT_ASSETS_H_
#define LENSGRID_CLIENT_REPORT_ASSETS_H_

namespace lensgrid {

inline constexpr char kReportCss[] = R"css(
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       margin: 0; background: #fafafa; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
.sub { color: #555; margin: 0 0 8px; }
.note { color: #666; font-size: 12px; }
.warn { color: #8a4b00; }
table.kv { border-collapse: collapse; }
table.kv th { text-align: left; font-weight: 600; padding: 2px 14px 2px 0; vertical-align: top;
              color: #444; white-space: nowrap; }
table.kv td { padding: 2px 0; font-family: ui-monospace, Menlo, Consolas, monospace;
              font-size: 12.5px; word-break: break-all; }
.grid { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }
.panel { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 8px 10px; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg text.axis { font-weight: 600; fill: #555; }
svg text.tok { font: 11px ui-monospace, Menlo, Consolas, monospace; white-space: pre; }
rect.cell { stroke: #fff; stroke-width: 0.5; }
rect.cell:hover, rect.acell:hover { stroke: #000; stroke-width: 1.5; }
table.ranked { border-collapse: collapse; font-size: 13px; }
table.ranked th, table.ranked td { padding: 2px 10px; border-bottom: 1px solid #eee; text-align: left; }
table.ranked td.num { text-align: right; font-family: ui-monospace, Menlo, Consolas, monospace; }
.bar { display: inline-block; height: 10px; vertical-align: middle; }
#tip { position: absolute; pointer-events: none; background: rgba(20,20,20,.92); color: #fff;
       padding: 4px 7px; border-radius: 4px; font: 12px ui-monospace, Menlo, monospace;
       white-space: pre; z-index: 10; }
#attn-controls { margin: 6px 0 10px; }
#attn-view { overflow: auto; }
)css";

// Builds the attention viewer from <script id="attn-data"> (a list of {hook,
// layer, head, tokens, pattern}), follows "#attn=N", shows a tooltip for
// anything with data-tip, and lets a click on a head's heatmap cell open that
// head's pattern. Marks <body data-js="ready"> last.
inline constexpr char kReportJs[] = R"js(
(function () {
  'use strict';
  var SVGNS = 'http://www.w3.org/2000/svg';
  var tip = document.getElementById('tip');
  document.addEventListener('mousemove', function (e) {
    var t = e.target && e.target.closest ? e.target.closest('[data-tip]') : null;
    if (!t) { tip.hidden = true; return; }
    tip.textContent = t.getAttribute('data-tip');
    tip.hidden = false;
    tip.style.left = (e.pageX + 14) + 'px';
    tip.style.top = (e.pageY + 14) + 'px';
  });

  function el(name, attrs, text) {
    var e = document.createElementNS(SVGNS, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  // Whitespace and control characters made visible, long tokens cut (the full one stays in
  // data-token and the tooltip).
  function visible(tok) {
    var s = tok.replace(/\n/g, '\u21b5').replace(/\r/g, '\u240d').replace(/\t/g, '\u21e5')
      .replace(/[\u0000-\u001f\u007f]/g, function (c) {
        return '\\x' + ('0' + c.charCodeAt(0).toString(16)).slice(-2);
      });
    return s.length > 18 ? s.slice(0, 17) + '\u2026' : s;
  }
  function fmt(w) { return w === null ? 'n/a' : w.toPrecision(4); }
  function colour(w) {
    if (w === null || !isFinite(w)) return '#d0d0d0';
    var t = Math.max(0, Math.min(1, w));
    var r = Math.round(255 + (8 - 255) * t), g = Math.round(255 + (48 - 255) * t),
        b = Math.round(255 + (107 - 255) * t);
    return 'rgb(' + r + ',' + g + ',' + b + ')';
  }

  var dataNode = document.getElementById('attn-data');
  var views = dataNode ? JSON.parse(dataNode.textContent) : [];
  var select = document.getElementById('attn-select');
  var view = document.getElementById('attn-view');

  function draw(index) {
    var v = views[index];
    if (!v) return;
    select.value = String(index);
    var n = v.tokens.length, cs = n > 64 ? 8 : n > 32 ? 12 : n > 16 ? 18 : 26;
    var longest = 0;
    v.tokens.forEach(function (t) { longest = Math.max(longest, visible(t).length); });
    var lab = Math.min(150, 12 + 7 * longest), axis = 18;
    var left = axis + lab, top = axis + lab, size = n * cs;
    var svg = el('svg', {width: left + size + 10, height: top + size + 10, 'class': 'attn',
                         'data-layer': v.layer, 'data-head': v.head, 'data-hook': v.hook});
    svg.appendChild(el('text', {x: left + size / 2, y: 12, 'text-anchor': 'middle',
                                'class': 'axis'}, 'key'));
    svg.appendChild(el('text', {x: 12, y: top + size / 2, 'text-anchor': 'middle',
                                'class': 'axis',
                                transform: 'rotate(-90 12 ' + (top + size / 2) + ')'}, 'query'));
    for (var i = 0; i < n; ++i) {
      var shown = visible(v.tokens[i]);
      var q = el('text', {x: left - 4, y: top + i * cs + cs / 2 + 4, 'text-anchor': 'end',
                          'class': 'tok qtok', 'data-pos': i, 'data-token': v.tokens[i]}, shown);
      svg.appendChild(q);
      var kx = left + i * cs + cs / 2 + 4, ky = top - 4;
      svg.appendChild(el('text', {x: kx, y: ky, 'class': 'tok ktok', 'data-pos': i,
                                  'data-token': v.tokens[i],
                                  transform: 'rotate(-90 ' + kx + ' ' + ky + ')'}, shown));
    }
    for (var qi = 0; qi < n; ++qi) {
      for (var ki = 0; ki < n; ++ki) {
        var w = v.pattern[qi * n + ki];
        var label = 'q ' + qi + ' ' + JSON.stringify(v.tokens[qi]) + '\nk ' + ki + ' ' +
                    JSON.stringify(v.tokens[ki]) + '\nweight ' + fmt(w);
        var r = el('rect', {x: left + ki * cs, y: top + qi * cs, width: cs, height: cs,
                            fill: colour(w), 'class': 'acell', 'data-q': qi, 'data-k': ki,
                            'data-q-token': v.tokens[qi], 'data-k-token': v.tokens[ki],
                            'data-weight': w === null ? 'null' : String(w), 'data-tip': label});
        r.appendChild(el('title', {}, label));
        svg.appendChild(r);
      }
    }
    view.replaceChildren(svg);
    document.getElementById('attn-caption').textContent =
        'L' + v.layer + 'H' + v.head + '  ' + v.hook + '  (' + n + ' tokens; row: query, column: key)';
  }

  if (select && views.length) {
    views.forEach(function (v, i) {
      var o = document.createElement('option');
      o.value = String(i);
      o.textContent = 'L' + v.layer + 'H' + v.head + ' (' + v.hook + ')';
      select.appendChild(o);
    });
    select.addEventListener('change', function () { draw(Number(select.value)); });
    document.addEventListener('click', function (e) {
      var c = e.target.closest ? e.target.closest('rect.cell[data-layer][data-head]') : null;
      if (!c) return;
      for (var i = 0; i < views.length; ++i) {
        if (String(views[i].layer) === c.getAttribute('data-layer') &&
            String(views[i].head) === c.getAttribute('data-head')) {
          draw(i);
          view.scrollIntoView({block: 'nearest'});
          return;
        }
      }
    });
    var m = /attn=(\d+)/.exec(location.hash);
    draw(m && Number(m[1]) < views.length ? Number(m[1]) : 0);
  }
  document.body.setAttribute('data-js', 'ready');
})();
)js";

}  // namespace lensgrid

#endif  // LENSGRID_CLIENT_REPORT_ASSETS_H_
