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

  // ---- the page ------------------------------------------------------------------------------
  function draw(main, data) {
    main.appendChild(h('h1', {}, [data.title]));
    main.appendChild(h('p', {'class': 'sub'}, [data.subtitle]));
    main.appendChild(identity(data.identity));
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
