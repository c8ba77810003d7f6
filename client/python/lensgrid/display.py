"""Attention views as one self-contained HTML page (no network), like circuitsvis:

    view = lensgrid.display.attention_patterns(model.to_str_tokens(prompt), cache["pattern", 0][0])
    view                # shows inline in Jupyter (_repr_html_)
    view.save("attention.html")

attention_heads draws every head's grid side by side; attention_patterns draws one head at a
time with a selector. Each cell's title (hover) is "Head H: query TOKEN (q) -> key TOKEN (k) =
VALUE", and a line under the grid repeats the hovered cell's value.
"""
import html
import json
import uuid
from typing import Any, List, Optional, Sequence

import numpy as np

from lensgrid.errors import InvalidInputError

_CSS = """
.lg-attn{font:12px/1.3 system-ui,sans-serif;color:#222}
.lg-attn .lg-heads{display:flex;flex-wrap:wrap;gap:16px}
.lg-attn table{border-collapse:collapse}
.lg-attn td{width:14px;height:14px;padding:0;border:1px solid #fff}
.lg-attn th{font-weight:normal;white-space:pre;padding:0 3px}
.lg-attn th.lg-k{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left}
.lg-attn th.lg-q{text-align:right}
.lg-attn .lg-title{font-weight:bold;margin:4px 0}
.lg-attn .lg-hover{min-height:1.3em;margin-top:4px;font-family:monospace}
"""

_JS = r"""
(function(){
  var root = document.getElementById(%(id)s);
  var data = JSON.parse(root.querySelector('script[type="application/json"]').textContent);
  var hover = root.querySelector('.lg-hover');
  function fmt(v){ return Number(v).toPrecision(4); }
  function color(v){ var a = Math.max(0, Math.min(1, v / (data.max || 1)));
    return 'rgba(' + (255 - Math.round(a*208)) + ',' + (255 - Math.round(a*127)) + ',' + 255 + ',1)'; }
  function grid(h){
    var box = document.createElement('div'); box.className = 'lg-head'; box.dataset.head = h;
    var title = document.createElement('div'); title.className = 'lg-title';
    title.textContent = data.head_names[h]; box.appendChild(title);
    var table = document.createElement('table'); var tr = document.createElement('tr');
    tr.appendChild(document.createElement('th'));
    data.key_tokens.forEach(function(t){ var th = document.createElement('th');
      th.className = 'lg-k'; th.textContent = t; tr.appendChild(th); });
    table.appendChild(tr);
    data.patterns[h].forEach(function(row, q){
      var tr = document.createElement('tr'); var th = document.createElement('th');
      th.className = 'lg-q'; th.textContent = data.query_tokens[q]; tr.appendChild(th);
      row.forEach(function(v, k){
        var td = document.createElement('td'); td.style.background = color(v);
        td.dataset.q = q; td.dataset.k = k; td.dataset.value = v;
        td.title = data.head_names[h] + ': query ' + JSON.stringify(data.query_tokens[q]) + ' (' + q +
          ') -> key ' + JSON.stringify(data.key_tokens[k]) + ' (' + k + ') = ' + fmt(v);
        td.addEventListener('mouseover', function(){ hover.textContent = td.title; });
        tr.appendChild(td); });
      table.appendChild(tr); });
    box.appendChild(table); return box;
  }
  var heads = root.querySelector('.lg-heads');
  if (data.mode === 'heads') {
    data.patterns.forEach(function(_, h){ heads.appendChild(grid(h)); });
  } else {
    var select = root.querySelector('select');
    data.head_names.forEach(function(n, h){ var o = document.createElement('option');
      o.value = h; o.textContent = n; select.appendChild(o); });
    function show(h){ heads.innerHTML = ''; heads.appendChild(grid(h)); }
    select.addEventListener('change', function(){ show(Number(select.value)); });
    show(0);
  }
  root.dataset.drawn = 'true';
})();
"""


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


class AttentionView:
    """One self-contained HTML view: _repr_html_ for Jupyter, .html() and .save(path)."""

    def __init__(self, tokens: Sequence[str], pattern: Any, head_names: Optional[List[str]],
                 mode: str, title: str = ""):
        p = _to_numpy(pattern)
        if p.ndim == 2:
            p = p[None]
        if p.ndim == 4 and p.shape[0] == 1:
            p = p[0]
        if p.ndim != 3:
            raise InvalidInputError(f"pattern must be [head, query_pos, key_pos] (or [query, key], "
                                    f"or [1, head, query, key]); got shape {p.shape}")
        tokens = [str(t) for t in tokens]
        if p.shape[2] != len(tokens) or p.shape[1] > len(tokens):
            raise InvalidInputError(f"{len(tokens)} tokens for a pattern of shape {p.shape} "
                                    "(key_pos must equal the number of tokens)")
        names = head_names or [f"Head {h}" for h in range(p.shape[0])]
        if len(names) != p.shape[0]:
            raise InvalidInputError(f"{len(names)} head names for {p.shape[0]} heads")
        self.pattern, self.tokens, self.head_names, self.mode, self.title = p, tokens, names, mode, title

    def _data(self) -> dict:
        q = self.pattern.shape[1]
        return {"mode": self.mode, "head_names": self.head_names, "key_tokens": self.tokens,
                "query_tokens": self.tokens[len(self.tokens) - q:],
                "patterns": [[[float(v) for v in row] for row in head] for head in self.pattern],
                "max": float(max(self.pattern.max(), 1e-12))}

    def fragment(self) -> str:
        """The view as an HTML fragment (a div with its data, style and script)."""
        vid = "lg-attn-" + uuid.uuid4().hex[:12]
        data = json.dumps(self._data()).replace("</", "<\\/")
        chooser = ("" if self.mode == "heads" else
                   '<label>Head <select class="lg-select"></select></label>')
        title = f'<div class="lg-title">{html.escape(self.title)}</div>' if self.title else ""
        return (f'<div class="lg-attn" id="{vid}"><style>{_CSS}</style>{title}{chooser}'
                f'<script type="application/json">{data}</script>'
                f'<div class="lg-heads"></div><div class="lg-hover"></div>'
                f'<script>{_JS % {"id": json.dumps(vid)}}</script></div>')

    def html(self) -> str:
        """A whole page."""
        return ('<!DOCTYPE html><html><head><meta charset="utf-8"><title>'
                f'{html.escape(self.title or "Attention")}</title></head><body>'
                f'{self.fragment()}</body></html>')

    def _repr_html_(self) -> str:
        return self.fragment()

    def save(self, path: str) -> str:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.html())
        return path


def attention_patterns(tokens: Sequence[str], attention: Any,
                       attention_head_names: Optional[List[str]] = None,
                       title: str = "") -> AttentionView:
    """One head at a time, with a head selector (circuitsvis's attention_patterns).
    attention: [head, query_pos, key_pos] (a cache's pattern with the batch index taken)."""
    return AttentionView(tokens, attention, attention_head_names, "patterns", title)


def attention_heads(tokens: Sequence[str], attention: Any,
                    attention_head_names: Optional[List[str]] = None,
                    title: str = "") -> AttentionView:
    """Every head's grid side by side (circuitsvis's attention_heads)."""
    return AttentionView(tokens, attention, attention_head_names, "heads", title)
