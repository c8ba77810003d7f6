// The search report's renderer: draws report.html from its data, the JSON object in
// <script type="application/json" id="report-data"> (its fields are listed in client/report.h).
// Embedded into the page at build time; no library, no network. Text from the data is only ever
// set as textContent or an attribute value, never parsed as markup. Marks <body data-js="ready">
// when the page is drawn ("error", with the message on the page, if drawing failed).
(function () {
  'use strict';
  var SVGNS = 'http://www.w3.org/2000/svg';

  // ---- the colour scale (the report's only one) ----------------------------------------------
  // {diverging: true, max: m}: blue (-m) .. white (0) .. red (+m), clamped outside;
  // {diverging: false, max: m}: white (0) .. purple (m). No value: grey. max <= 0: white.
  var BLUE = [33, 102, 172], RED = [178, 24, 43], PURPLE = [84, 39, 143];

  function mix(t, to) {  // white -> `to` at t in [0, 1]
    return '#' + to.map(function (c) {
      return ('0' + Math.round(255 + (c - 255) * t).toString(16)).slice(-2);
    }).join('');
  }
  function colour(scale, v) {
    if (v === null || !isFinite(v)) return '#d0d0d0';
    if (!(scale.max > 0)) return '#ffffff';
    var t = Math.max(scale.diverging ? -1 : 0, Math.min(1, v / scale.max));
    if (!scale.diverging) return mix(t, PURPLE);
    return t < 0 ? mix(-t, BLUE) : mix(t, RED);
  }
  var ATTENTION_SCALE = {diverging: false, max: 1};

  // ---- text and elements ---------------------------------------------------------------------
  function exact(v) { return v === null ? 'null' : String(v); }  // round-trips, like the JSON
  function short(v) {  // printf's %+.4g, near enough
    if (v === null || !isFinite(v)) return 'n/a';
    return (v >= 0 ? '+' : '') + String(Number(v.toPrecision(4)));
  }
  function make(ns, tag, attrs, children) {
    var e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, String(attrs[k]));
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      e.appendChild(typeof c === 'object' ? c : document.createTextNode(String(c)));
    });
    return e;
  }
  function h(tag, attrs, children) { return make(null, tag, attrs, children); }
  function s(tag, attrs, children) { return make(SVGNS, tag, attrs, children); }
  // "data-NAME" for the names the data gives (axes, cell groups); anything else is dropped.
  function dataAttr(name) { return /^[a-z0-9-]+$/.test(name) ? 'data-' + name : null; }
  function setData(attrs, name, value) {
    var a = dataAttr(name);
    if (a) attrs[a] = value;
  }
  function product(xs) { return xs.reduce(function (a, b) { return a * b; }, 1); }

  // ---- heatmaps ------------------------------------------------------------------------------
  var legends = 0;
  function legend(scale) {
    var id = 'legend' + (++legends), m = scale.max;
    var stops = scale.diverging ? [[0, -m], [0.5, 0], [1, m]] : [[0, 0], [1, m]];
    return s('svg', {'class': 'legend', width: 220, height: 34,
                     'data-min': scale.diverging ? -m : 0, 'data-max': m}, [
      s('defs', {}, [s('linearGradient', {id: id}, stops.map(function (st) {
        return s('stop', {offset: st[0], 'stop-color': colour(scale, st[1])});
      }))]),
      s('rect', {x: 10, y: 2, width: 200, height: 12, fill: 'url(#' + id + ')', stroke: '#999',
                 'stroke-width': 0.5}),
      s('text', {x: 10, y: 28, 'text-anchor': 'start'}, [scale.diverging ? short(-m) : '0']),
      scale.diverging ? s('text', {x: 110, y: 28, 'text-anchor': 'middle'}, ['0']) : null,
      s('text', {x: 210, y: 28, 'text-anchor': 'end'},
        [scale.diverging ? short(m) : String(Number(m.toPrecision(4)))])
    ]);
  }

  function tick(axis, i) { return axis.ticks && i < axis.ticks.length ? axis.ticks[i] : String(i); }

  // One panel: the last two axes as rows x columns, at `fixed`, the coordinates of the leading
  // axes. Each cell is a <rect class="cell"> with its coordinates, name and exact value.
  function panel(hm, fixed) {
    var rank = hm.shape.length, axes = hm.axes;
    var rows = rank >= 2 ? hm.shape[rank - 2] : 1, cols = hm.shape[rank - 1];
    var base = 0;
    fixed.forEach(function (f, d) { base = base * hm.shape[d] + f; });
    base *= rows * cols;
    var cs = Math.max(10, Math.min(34, Math.floor(560 / Math.max(cols, 1))));
    var rowAxis = rank >= 2 ? axes[rank - 2] : null, colAxis = axes[rank - 1];
    var left = rowAxis ? 64 : 12, top = 40;
    var attrs = {'class': 'heatmap', 'data-heatmap': hm.key, width: left + cols * cs + 8,
                 height: top + rows * cs + 8};
    fixed.forEach(function (f, d) { setData(attrs, axes[d].attr, f); });
    var svg = s('svg', attrs);
    svg.appendChild(s('text', {'class': 'axis', x: left + cols * cs / 2, y: 12,
                               'text-anchor': 'middle'}, [colAxis.name]));
    if (rowAxis) {
      var mid = top + rows * cs / 2;
      svg.appendChild(s('text', {'class': 'axis', x: 12, y: mid, 'text-anchor': 'middle',
                                 transform: 'rotate(-90 12 ' + mid + ')'}, [rowAxis.name]));
    }
    var step = cs >= 22 ? 1 : cs >= 14 ? 2 : 5;
    for (var c = 0; c < cols; c += step) {
      svg.appendChild(s('text', {x: left + c * cs + cs / 2, y: top - 6, 'text-anchor': 'middle'},
                        [tick(colAxis, c)]));
    }
    for (var r = 0; rowAxis && r < rows; ++r) {
      svg.appendChild(s('text', {x: left - 5, y: top + r * cs + cs / 2 + 4, 'text-anchor': 'end'},
                        [tick(rowAxis, r)]));
    }
    for (r = 0; r < rows; ++r) {
      for (c = 0; c < cols; ++c) {
        var i = base + r * cols + c, v = hm.values[i], name = hm.components[i];
        var tip = name + '  ' + hm.quantity + ' = ' + (v === null ? 'n/a' : String(v));
        var a = {'class': 'cell', x: left + c * cs, y: top + r * cs, width: cs, height: cs,
                 fill: colour(hm.scale, v), 'data-heatmap': hm.key};
        Object.keys(hm.cell_attrs).forEach(function (k) { setData(a, k, hm.cell_attrs[k]); });
        var coords = fixed.concat(rowAxis ? [r, c] : [c]);
        coords.forEach(function (x, d) { setData(a, axes[d].attr, x); });
        a['data-component'] = name;
        a['data-value'] = exact(v);
        a['data-tip'] = tip;
        svg.appendChild(s('rect', a, [s('title', {}, [tip])]));
      }
    }
    return svg;
  }

  // A heatmap with its legend: one panel for rank <= 2, one per index of the leading axes above.
  function heatmap(hm) {
    var rank = hm.shape.length;
    if (rank === 0 || hm.values.length === 0 || hm.values.length !== product(hm.shape)) {
      return [h('p', {'class': 'note'}, ['(no values to draw)'])];
    }
    var lead = hm.shape.slice(0, Math.max(0, rank - 2)), grid = h('div', {'class': 'grid'});
    for (var p = 0; p < product(lead); ++p) {
      var fixed = [], rest = p;
      for (var d = lead.length - 1; d >= 0; --d) {
        fixed[d] = rest % lead[d];
        rest = Math.floor(rest / lead[d]);
      }
      var title = fixed.map(function (f, d) {
        return hm.axes[d].name + ' ' + tick(hm.axes[d], f);
      }).join(', ');
      grid.appendChild(h('div', {'class': 'panel'},
                         [fixed.length ? h('h3', {}, [title]) : null, panel(hm, fixed)]));
    }
    return [grid, legend(hm.scale)];
  }

  function heatmapBlock(hm) {
    return [h('h3', {}, [hm.title + ' ', h('span', {'class': 'note'}, ['[' + hm.axes_text + ']'])])]
        .concat(heatmap(hm));
  }

  // ---- sections ------------------------------------------------------------------------------
  function identity(rows) {
    return h('section', {id: 'identity'}, [h('h2', {}, ['Job']), h('table', {'class': 'kv'},
      rows.map(function (row) {
        return h('tr', {'data-field': row[0]}, [h('th', {}, [row[0]]), h('td', {}, [row[1]])]);
      }))]);
  }

  function outputs(data) {
    var lead = data.scores
        ? 'Head detector scores: white 0, purple high; the scale reaches at least 1. Hover a ' +
          'cell for its exact value.'
        : data.delta
        ? 'delta = ' + data.delta + '. Colour: blue negative, red positive, white zero; the ' +
          'scale is symmetric at each heatmap\'s largest |value|. Hover a cell for its exact value.'
        : null;
    var children = [h('h2', {}, ['Results']), lead ? h('p', {'class': 'sub'}, [lead]) : null];
    data.outputs.forEach(function (hm) { children = children.concat(heatmapBlock(hm)); });
    return h('section', {id: 'outputs'}, children);
  }

  function ranked(tables) {
    var children = [h('h2', {}, ['Ranked components'])];
    tables.forEach(function (t) {
      var max = 0;
      t.rows.forEach(function (row) {
        if (row.value !== null) max = Math.max(max, Math.abs(row.value));
      });
      children.push(h('h3', {}, [t.output + ': top ' + t.rows.length + ' of ' + t.total +
                                 ' by |value|']));
      children.push(h('table', {'class': 'ranked', 'data-output': t.output},
        [h('tr', {}, [h('th', {}, ['#']), h('th', {}, ['component']), h('th', {}, ['value']),
                      h('th')])].concat(t.rows.map(function (row, i) {
          var v = row.value, bar = max > 0 && v !== null ? Math.round(120 * Math.abs(v) / max) : 0;
          return h('tr', {'data-component': row.component, 'data-value': exact(v)}, [
            h('td', {'class': 'num'}, [i + 1]), h('td', {}, [row.component]),
            h('td', {'class': 'num'}, [short(v)]),
            h('td', {}, [h('span', {'class': 'bar', style: 'width:' + bar + 'px;background:' +
                                    colour({diverging: true, max: 1}, v < 0 ? -1 : 1)})])]);
        }))));
    });
    return h('section', {id: 'ranked'}, children);
  }

  function detectors(list) {
    var children = [h('h2', {}, ['Head detectors']), h('p', {'class': 'sub'},
        ['Scores per head (white 0, purple high; the scale reaches at least 1).'])];
    list.forEach(function (hm) { children = children.concat(heatmapBlock(hm)); });
    return h('section', {id: 'detectors'}, children);
  }

  // ---- the attention viewer ------------------------------------------------------------------
  // Whitespace and control characters made visible, long tokens cut (the full token stays in
  // data-token and the hover text).
  function visible(tok) {
    var v = tok.replace(/\n/g, '\u21b5').replace(/\r/g, '\u240d').replace(/\t/g, '\u21e5')
      .replace(/[\u0000-\u001f\u007f]/g, function (c) {
        return '\\x' + ('0' + c.charCodeAt(0).toString(16)).slice(-2);
      });
    return v.length > 18 ? v.slice(0, 17) + '\u2026' : v;
  }
  function weightText(w) { return w === null ? 'n/a' : w.toPrecision(4); }

  // Query x key, token strings on both axes; one <rect class="acell"> per weight.
  function pattern(v) {
    var n = v.tokens.length, cs = n > 64 ? 8 : n > 32 ? 12 : n > 16 ? 18 : 26;
    var longest = 0;
    v.tokens.forEach(function (t) { longest = Math.max(longest, visible(t).length); });
    var lab = Math.min(150, 12 + 7 * longest), left = 18 + lab, top = 18 + lab, size = n * cs;
    var svg = s('svg', {width: left + size + 10, height: top + size + 10, 'class': 'attn',
                        'data-layer': v.layer, 'data-head': v.head, 'data-hook': v.hook}, [
      s('text', {x: left + size / 2, y: 12, 'text-anchor': 'middle', 'class': 'axis'}, ['key']),
      s('text', {x: 12, y: top + size / 2, 'text-anchor': 'middle', 'class': 'axis',
                 transform: 'rotate(-90 12 ' + (top + size / 2) + ')'}, ['query'])]);
    v.tokens.forEach(function (tok, i) {
      var shown = visible(tok), kx = left + i * cs + cs / 2 + 4, ky = top - 4;
      svg.appendChild(s('text', {x: left - 4, y: top + i * cs + cs / 2 + 4, 'text-anchor': 'end',
                                 'class': 'tok qtok', 'data-pos': i, 'data-token': tok}, [shown]));
      svg.appendChild(s('text', {x: kx, y: ky, 'class': 'tok ktok', 'data-pos': i,
                                 'data-token': tok, transform: 'rotate(-90 ' + kx + ' ' + ky + ')'},
                        [shown]));
    });
    for (var q = 0; q < n; ++q) {
      for (var k = 0; k < n; ++k) {
        var w = v.pattern[q * n + k];
        var tip = 'q ' + q + ' ' + JSON.stringify(v.tokens[q]) + '\nk ' + k + ' ' +
                  JSON.stringify(v.tokens[k]) + '\nweight ' + weightText(w);
        svg.appendChild(s('rect', {x: left + k * cs, y: top + q * cs, width: cs, height: cs,
                                   fill: colour(ATTENTION_SCALE, w), 'class': 'acell', 'data-q': q,
                                   'data-k': k, 'data-q-token': v.tokens[q],
                                   'data-k-token': v.tokens[k], 'data-weight': exact(w),
                                   'data-tip': tip}, [s('title', {}, [tip])]));
      }
    }
    return svg;
  }

  // The section, and a function that shows view i (null when there are no views).
  function attention(att) {
    var views = att.views, section = h('section', {id: 'attention'},
                                       [h('h2', {}, ['Attention patterns'])]);
    var show = null;
    if (!views.length) {
      section.appendChild(h('p', {'class': 'note'}, ['No attention patterns in this report.']));
    } else {
      var select = h('select', {id: 'attn-select'}, views.map(function (v, i) {
        return h('option', {value: i}, ['L' + v.layer + 'H' + v.head + ' (' + v.hook + ')']);
      }));
      var caption = h('span', {id: 'attn-caption', 'class': 'note'});
      var view = h('div', {id: 'attn-view'});
      section.appendChild(h('p', {'class': 'sub'}, ['The top heads on one prompt: each row is a ' +
          'query position, each column a key; hover a cell for its weight; click a head in a ' +
          'heatmap above to open its pattern.']));
      section.appendChild(h('div', {id: 'attn-controls'},
                            [h('label', {}, ['head ', select]), ' ', caption]));
      section.appendChild(view);
      views.forEach(function (v) {
        if (v.positions > v.tokens.length) {
          section.appendChild(h('p', {'class': 'note'}, ['L' + v.layer + 'H' + v.head + ': first ' +
              v.tokens.length + ' of ' + v.positions + ' positions shown.']));
        }
      });
      show = function (i) {
        var v = views[i];
        if (!v) return false;
        select.value = String(i);
        view.replaceChildren(pattern(v));
        caption.textContent = 'L' + v.layer + 'H' + v.head + '  ' + v.hook + '  (' +
                              v.tokens.length + ' tokens; row: query, column: key)';
        return true;
      };
      select.addEventListener('change', function () { show(Number(select.value)); });
    }
    if (att.malformed.length) {
      section.appendChild(h('p', {'class': 'warn'},
                            ['Malformed attention views left out: ' + att.malformed.join('; ')]));
    }
    return {section: section, show: show, views: views};
  }

  // ---- the circuit view ----------------------------------------------------------------------
  // data.circuit (result.json's "circuit", from eap / eap-ig / acdc): {graph {n_layers, n_heads,
  // attn_only}, nodes [{name, kind (embed|head|mlp|logits), layer, head}], edges [{name, sender,
  // receiver, channel (q|k|v|""), score, kept}], threshold, selection, faithfulness {...}}.
  // Drawn as one SVG: the embeddings at the bottom, each layer a row above (its heads side by side,
  // its MLP after them, raised half a row), the logits at the top. A head has three input ports
  // (q, k, v) along its bottom edge; an edge runs from its sender's top to its receiver's port,
  // red for a positive score, blue for a negative one, its width by |score|. At first the edges
  // the search kept are drawn; the slider (log scale over the nonzero |score|s) instead draws
  // every edge with |score| >= its threshold. At most MAX_DRAWN edges are drawn (the largest
  // |score| first), and the page says so.
  var MAX_DRAWN = 2000, SLIDER_STEPS = 1000;
  var PORT_COLOUR = {q: '#1b9e77', k: '#d95f02', v: '#7570b3'};
  var CHANNELS = ['q', 'k', 'v'];

  function count(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ','); }
  function num(v) {
    return typeof v === 'number' && isFinite(v) ? String(Number(v.toPrecision(4))) : 'n/a';
  }
  function scoreOf(e) { return typeof e.score === 'number' && isFinite(e.score) ? e.score : null; }
  function absScore(e) { return scoreOf(e) === null ? 0 : Math.abs(e.score); }
  function edgeTip(e) {
    return e.name + '  score = ' + exact(scoreOf(e)) + '  kept = ' + (e.kept === true);
  }

  // Node positions: {x, y (centre), w, h, ports {q: [x, y], ...}, in: [x, y]}.
  function circuitLayout(c) {
    var nodes = Array.isArray(c.nodes) ? c.nodes : [], g = c.graph || {};
    var nLayers = g.n_layers > 0 ? g.n_layers : 0, nHeads = g.n_heads > 0 ? g.n_heads : 0;
    var hasMlp = false;
    nodes.forEach(function (n) {
      if (n.kind === 'head') {
        nLayers = Math.max(nLayers, n.layer + 1);
        nHeads = Math.max(nHeads, n.head + 1);
      } else if (n.kind === 'mlp') {
        hasMlp = true;
        nLayers = Math.max(nLayers, n.layer + 1);
      }
    });
    nHeads = Math.max(nHeads, 1);
    var slots = nHeads + (hasMlp ? 1.5 : 0);
    var slot = Math.max(36, Math.min(96, Math.floor(1060 / slots)));
    var nw = slot - 10, nh = 30, rowH = hasMlp ? 100 : 76;
    var left = 48, top = 16, width = Math.ceil(left + slots * slot + 16);
    var rowY = function (r) { return top + nh / 2 + r * rowH; };  // r = 0: the logits' row
    var height = Math.ceil(rowY(nLayers + 1) + nh / 2 + 16), mid = left + nHeads * slot / 2;
    var pos = {};
    nodes.forEach(function (n) {
      var p = null;
      if (n.kind === 'embed') {
        p = {x: mid, y: rowY(nLayers + 1), w: Math.max(2 * nw, 110), h: nh};
      } else if (n.kind === 'logits') {
        p = {x: mid, y: rowY(0), w: Math.max(2 * nw, 110), h: nh};
      } else if (n.kind === 'head') {
        p = {x: left + n.head * slot + slot / 2, y: rowY(nLayers - n.layer), w: nw, h: nh};
      } else if (n.kind === 'mlp') {
        p = {x: left + nHeads * slot + slot * 0.85, y: rowY(nLayers - n.layer) - rowH * 0.45,
             w: Math.max(nw, 44), h: nh};
      }
      if (!p || !isFinite(p.x) || !isFinite(p.y)) return;
      p.out = [p.x, p.y - nh / 2];
      p.in = [p.x, p.y + nh / 2];
      if (n.kind === 'head') {
        p.ports = {};
        CHANNELS.forEach(function (ch, i) {
          p.ports[ch] = [p.x + (i - 1) * nw / 3, p.y + nh / 2];
        });
      }
      pos[n.name] = p;
    });
    return {pos: pos, width: width, height: height, left: left, rowY: rowY, nLayers: nLayers};
  }

  function edgePath(a, b) {
    var d = Math.max(18, (a[1] - b[1]) * 0.5);
    return 'M' + a[0].toFixed(1) + ' ' + a[1].toFixed(1) + 'C' + a[0].toFixed(1) + ' ' +
           (a[1] - d).toFixed(1) + ' ' + b[0].toFixed(1) + ' ' + (b[1] + d).toFixed(1) + ' ' +
           b[0].toFixed(1) + ' ' + b[1].toFixed(1);
  }

  function faithfulness(f) {
    var order = ['circuit', 'full', 'corrupted', 'fraction', 'normalized'];
    var help = {
      circuit: 'metric with every edge outside the circuit corrupted',
      full: 'metric of the full (clean) model',
      corrupted: 'metric with every edge corrupted',
      fraction: 'circuit / full',
      normalized: '(circuit - corrupted) / (full - corrupted); 1 recovers the whole effect'
    };
    var keys = order.filter(function (k) { return k in f; })
        .concat(Object.keys(f).filter(function (k) { return order.indexOf(k) < 0; }));
    return h('div', {id: 'circuit-faithfulness'}, [h('h3', {}, ['Faithfulness']),
      h('table', {'class': 'kv'}, keys.map(function (k) {
        var v = f[k], isNum = typeof v === 'number';
        return h('tr', {'data-field': k, 'data-value': isNum ? exact(v) : JSON.stringify(v)}, [
          h('th', {}, [k]), h('td', {'class': 'num'}, [isNum ? num(v) : JSON.stringify(v)]),
          h('td', {'class': 'note'}, [help[k] || ''])]);
      }))]);
  }

  function circuitSection(c) {
    var section = h('section', {id: 'circuit'}, [h('h2', {}, ['Circuit'])]);
    var edges = (Array.isArray(c.edges) ? c.edges : []).filter(function (e) {
      return e && typeof e.name === 'string';
    });
    var layout = circuitLayout(c), pos = layout.pos;
    var total = edges.length, nKept = 0, maxAbs = 0, minPos = Infinity, unplaced = 0;
    var keptIn = {}, keptOut = {};
    edges.forEach(function (e) {
      var a = absScore(e);
      maxAbs = Math.max(maxAbs, a);
      if (a > 0) minPos = Math.min(minPos, a);
      if (e.kept === true) {
        ++nKept;
        keptOut[e.sender] = (keptOut[e.sender] || 0) + 1;
        keptIn[e.receiver] = (keptIn[e.receiver] || 0) + 1;
        var port = e.receiver + '.' + e.channel;
        if (e.channel) keptIn[port] = (keptIn[port] || 0) + 1;
      }
      if (!pos[e.sender] || !pos[e.receiver]) ++unplaced;
    });
    // Every edge, largest |score| first: a threshold selects a prefix.
    var order = edges.map(function (e, i) { return i; });
    order.sort(function (i, j) { return absScore(edges[j]) - absScore(edges[i]) || i - j; });
    var keptOrder = order.filter(function (i) { return edges[i].kept === true; });

    var lead = 'Every edge of the circuit graph has a score' +
        (c.selection ? '; kept: ' + c.selection : '') +
        (typeof c.threshold === 'number'
             ? ' (threshold ' + exact(c.threshold) + ')' : '') +
        '. ' + count(nKept) + ' of ' + count(total) + ' edges kept. Red: positive score, blue: ' +
        'negative; width by |score|. A head receives on three ports: ';
    var legendLine = h('p', {'class': 'sub'}, [lead].concat(
        CHANNELS.map(function (ch) {
          return h('span', {'class': 'port-key', style: 'color:' + PORT_COLOUR[ch]},
                   ['\u25cf ' + ch + ' ']);
        }), ['(left to right). Hover or focus an edge or a node for its values.']));
    section.appendChild(legendLine);

    // The controls: the slider, the threshold it gives, back to the kept edges, the count.
    var lo = minPos < Infinity ? Math.log(minPos) / Math.LN10 : 0;
    var hi = maxAbs > 0 ? Math.log(maxAbs) / Math.LN10 : 0;
    if (!(hi - lo > 1e-12)) lo = hi - 1;
    var sliderOk = maxAbs > 0;
    var fromPos = function (p) {
      if (p <= 0) return minPos;
      if (p >= SLIDER_STEPS) return maxAbs;
      return Math.pow(10, lo + (hi - lo) * p / SLIDER_STEPS);
    };
    var toPos = function (t) {
      if (!(t > 0)) return 0;
      var p = Math.round((Math.log(t) / Math.LN10 - lo) / (hi - lo) * SLIDER_STEPS);
      return Math.max(0, Math.min(SLIDER_STEPS, p));
    };
    var slider = h('input', {type: 'range', id: 'circuit-threshold', min: 0, max: SLIDER_STEPS,
                             step: 1, 'aria-label': 'threshold on |score| (log scale)',
                             'data-log-min': exact(lo), 'data-log-max': exact(hi),
                             'data-steps': SLIDER_STEPS});
    if (!sliderOk) slider.disabled = true;
    var shown = h('span', {id: 'circuit-threshold-value', 'class': 'num'});
    var keptButton = h('button', {type: 'button', id: 'circuit-show-kept'}, ['kept edges']);
    var countLine = h('p', {id: 'circuit-count', 'class': 'sub'});
    section.appendChild(h('div', {id: 'circuit-controls'}, [
      h('label', {}, ['|score| \u2265 ', slider]), ' ', shown, ' ', keptButton,
      h('span', {'class': 'note'}, ['  log scale from ' + num(minPos < Infinity ? minPos : 0) +
                                    ' to ' + num(maxAbs)])]));
    section.appendChild(countLine);

    // The graph: layer labels, an edge layer, the nodes (on top).
    var svg = s('svg', {'class': 'circuit', id: 'circuit-graph', width: layout.width,
                        height: layout.height, 'data-nodes': Object.keys(pos).length});
    for (var L = 0; L < layout.nLayers; ++L) {
      var ly = layout.rowY(layout.nLayers - L);
      svg.appendChild(s('line', {'class': 'layer-rule', x1: layout.left - 6, x2: layout.width - 8,
                                 y1: ly, y2: ly}));
      svg.appendChild(s('text', {'class': 'axis', x: 6, y: ly + 4}, ['L' + L]));
    }
    var edgeLayer = s('g', {'class': 'cedges'});
    svg.appendChild(edgeLayer);
    var nodeLayer = s('g', {'class': 'cnodes'});
    svg.appendChild(nodeLayer);
    (Array.isArray(c.nodes) ? c.nodes : []).forEach(function (n) {
      var p = pos[n.name];
      if (!p) return;
      var inText = n.kind === 'head'
          ? count(keptIn[n.name] || 0) + ' (' + CHANNELS.map(function (ch) {
              return ch + ' ' + (keptIn[n.name + '.' + ch] || 0);
            }).join(', ') + ')'
          : count(keptIn[n.name] || 0);
      var tip = n.name + '  ' + n.kind +
                (n.kind === 'head' ? ' (layer ' + n.layer + ', head ' + n.head + ')'
                 : n.kind === 'mlp' ? ' (layer ' + n.layer + ')' : '') +
                '  kept edges: in ' + inText + ', out ' + count(keptOut[n.name] || 0);
      var inCircuit = (keptIn[n.name] || 0) + (keptOut[n.name] || 0) > 0;
      var g = s('g', {'class': 'cnode' + (inCircuit ? ' in-circuit' : ''), tabindex: 0,
                      'data-node': n.name, 'data-kind': n.kind, 'data-layer': n.layer,
                      'data-head': n.kind === 'head' ? n.head : null, 'data-tip': tip,
                      'data-kept-in': keptIn[n.name] || 0, 'data-kept-out': keptOut[n.name] || 0},
                [s('title', {}, [tip]),
                 s('rect', {x: p.x - p.w / 2, y: p.y - p.h / 2, width: p.w, height: p.h, rx: 4})]);
      g.appendChild(s('text', {x: p.x, y: p.y + (p.ports ? 0 : 4), 'text-anchor': 'middle'},
                      [n.name]));
      if (p.ports) {
        CHANNELS.forEach(function (ch) {
          var pt = p.ports[ch];
          if (p.w >= 40) {
            g.appendChild(s('text', {'class': 'port-label', x: pt[0], y: pt[1] - 4,
                                     'text-anchor': 'middle'}, [ch]));
          }
          var ptip = n.name + '.' + ch + '  kept edges in: ' + (keptIn[n.name + '.' + ch] || 0);
          g.appendChild(s('circle', {'class': 'port', cx: pt[0], cy: pt[1], r: 3.2,
                                     fill: PORT_COLOUR[ch], 'data-port': n.name + '.' + ch,
                                     'data-tip': ptip}, [s('title', {}, [ptip])]));
        });
      }
      nodeLayer.appendChild(g);
    });
    var wrap = h('div', {id: 'circuit-view'}, [svg]);
    section.appendChild(wrap);
    var info = h('p', {id: 'circuit-info', 'class': 'note'},
                 ['Hover or focus an edge or a node for its name and values.']);
    section.appendChild(info);
    if (unplaced) {
      section.appendChild(h('p', {'class': 'warn'}, [count(unplaced) + ' edges name a node ' +
                                                     'the circuit does not list: not drawn.']));
    }

    // Draws the edges `chosen` (edge indices, largest |score| first), at most MAX_DRAWN.
    function drawEdges(chosen) {
      var drawn = chosen.slice(0, MAX_DRAWN).filter(function (i) {
        return pos[edges[i].sender] && pos[edges[i].receiver];
      });
      var frag = document.createDocumentFragment();
      for (var k = drawn.length - 1; k >= 0; --k) {  // the largest on top
        var e = edges[drawn[k]], a = pos[e.sender], b = pos[e.receiver];
        var end = b.ports && b.ports[e.channel] ? b.ports[e.channel] : b.in;
        var w = maxAbs > 0 ? 0.8 + 5.2 * absScore(e) / maxAbs : 1;
        var tip = edgeTip(e);
        frag.appendChild(s('path', {
          'class': 'cedge ' + (e.score < 0 ? 'neg' : 'pos'), d: edgePath(a.out, end),
          stroke: e.score < 0 ? '#2166ac' : '#b2182b', 'stroke-width': w.toFixed(2),
          'data-edge': e.name, 'data-sender': e.sender, 'data-receiver': e.receiver,
          'data-channel': e.channel || '', 'data-score': exact(scoreOf(e)),
          'data-kept': e.kept === true, 'data-tip': tip}, [s('title', {}, [tip])]));
      }
      edgeLayer.replaceChildren(frag);
      return drawn.length;
    }

    function setSlider(p) {  // the value, and the attribute (so the DOM shows it)
      slider.value = String(p);
      slider.setAttribute('value', String(p));
    }

    function showKept() {
      var n = drawEdges(keptOrder);
      if (typeof c.threshold === 'number' && sliderOk) setSlider(toPos(c.threshold));
      shown.textContent = typeof c.threshold === 'number' ? num(c.threshold) : '';
      countLine.setAttribute('data-mode', 'kept');
      countLine.setAttribute('data-threshold',
                             typeof c.threshold === 'number' ? exact(c.threshold) : '');
      countLine.setAttribute('data-selected', keptOrder.length);
      countLine.setAttribute('data-drawn', n);
      countLine.textContent = 'The search\'s kept edges: ' + count(keptOrder.length) + ' of ' +
          count(total) + (c.selection ? ' (' + c.selection + ')' : '') + '; ' +
          (n < keptOrder.length ? 'drawn: the ' + count(n) + ' with the largest |score| (at ' +
                                  'most ' + count(MAX_DRAWN) + ' are drawn).'
                                : count(n) + ' drawn.');
    }

    function showThreshold(t) {
      // Edges with |score| >= t: a prefix of `order` (found by bisection).
      var a = 0, b = order.length;
      while (a < b) {
        var m = (a + b) >> 1;
        if (absScore(edges[order[m]]) >= t) a = m + 1; else b = m;
      }
      var selected = a, n = drawEdges(order.slice(0, Math.min(selected, MAX_DRAWN)));
      shown.textContent = num(t);
      countLine.setAttribute('data-mode', 'threshold');
      countLine.setAttribute('data-threshold', exact(t));
      countLine.setAttribute('data-selected', selected);
      countLine.setAttribute('data-drawn', n);
      countLine.textContent = count(selected) + ' of ' + count(total) +
          ' edges have |score| \u2265 ' +
          num(t) + '; ' + (n < selected ? 'drawn: the ' + count(n) + ' with the largest |score| ' +
                                          '(at most ' + count(MAX_DRAWN) + ' are drawn).'
                                        : count(n) + ' drawn.');
    }

    slider.addEventListener('input', function () {
      var p = Number(slider.value);
      slider.setAttribute('value', String(p));
      showThreshold(fromPos(p));
    });
    keptButton.addEventListener('click', showKept);

    // Hover and focus: the name and values below the graph; a node's edges highlighted.
    function point(e) {
      var t = e.target && e.target.closest ? e.target.closest('[data-tip]') : null;
      svg.querySelectorAll('.hl').forEach(function (x) { x.classList.remove('hl'); });
      svg.classList.remove('focus');
      if (!t || !svg.contains(t)) return;
      info.textContent = t.getAttribute('data-tip');
      var node = t.closest('g.cnode');
      if (node) {
        var name = node.getAttribute('data-node');
        svg.classList.add('focus');
        node.classList.add('hl');
        edgeLayer.querySelectorAll('path.cedge').forEach(function (p) {
          if (p.getAttribute('data-sender') === name || p.getAttribute('data-receiver') === name) {
            p.classList.add('hl');
          }
        });
      }
    }
    svg.addEventListener('mouseover', point);
    svg.addEventListener('focusin', point);
    svg.addEventListener('mouseleave', function () {
      svg.querySelectorAll('.hl').forEach(function (x) { x.classList.remove('hl'); });
      svg.classList.remove('focus');
    });

    showKept();
    if (c.faithfulness && typeof c.faithfulness === 'object') {
      section.appendChild(faithfulness(c.faithfulness));
    }
    return section;
  }

  // ---- the page ------------------------------------------------------------------------------
  function draw(main, data) {
    main.appendChild(h('h1', {}, [data.title]));
    main.appendChild(h('p', {'class': 'sub'}, [data.subtitle]));
    main.appendChild(identity(data.identity));
    if (data.circuit && typeof data.circuit === 'object') {
      main.appendChild(circuitSection(data.circuit));
    }
    if (data.outputs.length) main.appendChild(outputs(data));
    if (data.ranked.length) main.appendChild(ranked(data.ranked));
    if (data.detectors.length) main.appendChild(detectors(data.detectors));
    var att = attention(data.attention);
    main.appendChild(att.section);
    if (!att.show) return;
    // A click on a head's heatmap cell opens that head's pattern; "#attn=N" opens view N.
    main.addEventListener('click', function (e) {
      var c = e.target.closest ? e.target.closest('rect.cell[data-layer][data-head]') : null;
      if (!c) return;
      for (var i = 0; i < att.views.length; ++i) {
        if (String(att.views[i].layer) === c.getAttribute('data-layer') &&
            String(att.views[i].head) === c.getAttribute('data-head')) {
          att.show(i);
          document.getElementById('attn-view').scrollIntoView({block: 'nearest'});
          return;
        }
      }
    });
    var m = /attn=(\d+)/.exec(location.hash);
    if (!(m && att.show(Number(m[1])))) att.show(0);
  }

  var tip = document.getElementById('tip');
  document.addEventListener('mousemove', function (e) {
    var t = e.target && e.target.closest ? e.target.closest('[data-tip]') : null;
    if (!t) { tip.hidden = true; return; }
    tip.textContent = t.getAttribute('data-tip');
    tip.hidden = false;
    tip.style.left = (e.pageX + 14) + 'px';
    tip.style.top = (e.pageY + 14) + 'px';
  });

  var main = document.getElementById('report');
  try {
    main.replaceChildren();
    draw(main, JSON.parse(document.getElementById('report-data').textContent));
    document.body.setAttribute('data-js', 'ready');
  } catch (err) {
    main.appendChild(h('p', {'class': 'warn'}, ['The report could not be drawn: ' + err]));
    document.body.setAttribute('data-js', 'error');
  }
})();
