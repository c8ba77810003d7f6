#!/usr/bin/python3
"""The search report in a real browser. report.html is data (one JSON object) plus one renderer
(client/report/report.js); only a browser shows whether the two make the page. This renders a
report through report_fixture, opens it in Debian's headless Chromium, saves screenshots as test
artifacts, and checks the DOM as it is after the renderer ran: heatmap cells with their exact
values, hover text and colours, the ranked list, the job's identity, and the attention viewer with
the prompt's tokens and weights, switching heads by the selector, a click on a head's cell and the
URL fragment; the circuit view of eap / eap-ig / acdc results (nodes by layer, the kept edges with
their exact scores and hover text, the threshold slider's drawn count against one computed from the
JSON, the cap on drawn edges at GPT-2 small's 32,491, faithfulness). With a lensgrid binary, also
checks the report.html that a real `lensgrid search --in-process --detectors` and
`lensgrid search --method eap --in-process` on models/lensgrid-tiny write.

usage: report_browser_test.py REPORT_FIXTURE ARTIFACT_DIR [LENSGRID]
Exits 77 (skipped) only when chromium is not installed.
"""
import html.parser
import json
import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

FIXTURE = ARTIFACTS = LENSGRID = CHROMIUM = None
TINY_MODEL = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                           "models", "lensgrid-tiny"))

# A prompt whose tokens need escaping everywhere: markup, quotes, a newline, a byte that is not
# UTF-8 (given as a list of bytes; the report shows U+FFFD for it).
TOKENS = ["<|endoftext|>", "When", " Mary", " &", " <b>", " \"q\"", "\n", [0xFF, 0x41], " Mary"]
SHOWN_TOKENS = ["<|endoftext|>", "When", " Mary", " &", " <b>", " \"q\"", "\n", "\ufffdA", " Mary"]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def flatten(nested, coords=()):
    """(coordinates, value) of every leaf of nested lists."""
    if not isinstance(nested, list):
        yield coords, nested
        return
    for i, x in enumerate(nested):
        yield from flatten(x, coords + (i,))


def causal_pattern(n, seed):
    """Rows that sum to 1 over keys <= query, with distinct weights."""
    rows = []
    for q in range(n):
        raw = [((q * 7 + k * 3 + seed) % 5 + 1.0) if k <= q else 0.0 for k in range(n)]
        total = sum(raw)
        rows.extend(f32(w / total) for w in raw)
    return rows


def head_ablation_result():
    values = [[-0.75, 0.0, 4.470348358154297e-07, 0.125],
              [0.022206585854291916, -0.0030038803815841675, 1.5, -1e-3],
              [0.3, -0.2, 0.1, -1.25]]
    flat = [(f"L{l}H{h}", v) for l, row in enumerate(values) for h, v in enumerate(row)]
    ranked = [{"component": c, "value": v} for c, v in sorted(flat, key=lambda cv: -abs(cv[1]))]
    return {
        "method": "ablate-heads", "metric": "logit-diff", "ablation": "mean",
        "delta": "metric(intervened) - metric(clean)",
        "model": {"dir": "models/tiny", "weights_sha256": "5" * 64, "processed": True,
                  "n_layers": 3, "n_heads": 4},
        "dataset": {"name": "ioi", "n_prompts": 8, "seed": 1, "positions": 15},
        "baseline": 3.25,
        "job": {"id": "job-7", "submitted_by": "report_browser_test"},
        "label": "browser <check> & \"quotes\"",
        "outputs": [{"name": "delta", "axes": ["layer", "head"], "shape": [3, 4],
                     "values": values, "ranked": ranked}],
        "detectors": {
            "induction": [[0.01, 0.02, 0.0, 0.05], [0.91, 0.1, 0.2, 0.0], [0.3, 0.62, 0.0, 0.1]],
            "previous-token": [[0.8, 0.1, 0.0, 0.2], [0.05, 0.0, 0.0, 0.1], [0.0, 0.0, 0.4, 0.0]],
        },
    }


def circuit_graph(n_layers, n_heads, attn_only):
    """The nodes and edges of common/circuit_graph.h, in its order: receivers in forward order
    (each layer's heads, each with q, k, v, then its MLP; the logits last), each receiver's
    senders in forward order."""
    nodes = [{"name": "embed", "kind": "embed", "layer": -1}]
    for layer in range(n_layers):
        nodes += [{"name": f"L{layer}H{h}", "kind": "head", "layer": layer, "head": h}
                  for h in range(n_heads)]
        if not attn_only:
            nodes.append({"name": f"MLP{layer}", "kind": "mlp", "layer": layer})
    nodes.append({"name": "logits", "kind": "logits", "layer": n_layers})

    def senders(upto_layer, with_heads_of=None):
        out = ["embed"]
        for layer in range(upto_layer):
            out += [f"L{layer}H{h}" for h in range(n_heads)]
            if not attn_only:
                out.append(f"MLP{layer}")
        if with_heads_of is not None:
            out += [f"L{with_heads_of}H{h}" for h in range(n_heads)]
        return out

    edges = []
    for layer in range(n_layers):
        for h in range(n_heads):
            for ch in "qkv":
                edges += [(s, f"L{layer}H{h}", ch) for s in senders(layer)]
        if not attn_only:
            edges += [(s, f"MLP{layer}", "") for s in senders(layer, layer)]
    edges += [(s, "logits", "") for s in senders(n_layers)]
    return nodes, [{"name": f"{s} -> {r}" + (f".{ch}" if ch else ""), "sender": s, "receiver": r,
                    "channel": ch} for s, r, ch in edges]


def circuit_result(n_layers, n_heads, attn_only, n_kept, seed, faithfulness=True):
    """A result.json of the shape an eap search writes ("circuit": every edge scored, the top
    n_kept by |score| kept), with scores of both signs, a few exact zeros and heavy tails."""
    nodes, edges = circuit_graph(n_layers, n_heads, attn_only)
    rng = random.Random(seed)
    for i, e in enumerate(edges):
        e["score"] = 0.0 if i % 97 == 5 else rng.gauss(0, 1) ** 3 * 0.01
    ranked = sorted(range(len(edges)), key=lambda i: (-abs(edges[i]["score"]), i))
    kept = set(ranked[:n_kept])
    for i, e in enumerate(edges):
        e["kept"] = i in kept
    circuit = {"graph": {"n_layers": n_layers, "n_heads": n_heads, "attn_only": attn_only},
               "nodes": nodes, "edges": edges,
               "threshold": abs(edges[ranked[n_kept - 1]]["score"]),
               "selection": f"top {n_kept} edges by |score|", "kept": n_kept}
    if faithfulness:
        circuit["faithfulness"] = {"circuit": 1.9, "full": 2.125, "corrupted": 0.1,
                                   "fraction": 1.9 / 2.125, "normalized": 1.8 / 2.025}
    return {"method": "eap", "metric": "logit-diff",
            "model": {"dir": "models/tiny", "n_layers": n_layers, "n_heads": n_heads},
            "dataset": {"name": "induction", "n_prompts": 4, "seed": 1},
            "outputs": [], "circuit": circuit}


class Dom(html.parser.HTMLParser):
    """Every element's tag and attributes, in document order, plus the text of each element id
    and of each element's own text children (as attribute "#text": a cell's <title> is its
    hover text, a table cell's text is what it shows)."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.elements = []
        self.text_by_id = {}
        self._open_ids = []
        self._stack = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a))
        if a.get("id"):
            self._open_ids.append((tag, a["id"]))
            self.text_by_id.setdefault(a["id"], "")
        self._stack.append((tag, a))

    def handle_endtag(self, tag):
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, i in self._open_ids:
            self.text_by_id[i] += data
        if self._stack:
            a = self._stack[-1][1]
            a["#text"] = a.get("#text", "") + data

    def title_of(self, element):
        """The text of the <title> child that follows `element` (an SVG rect's hover text)."""
        for i, (_, a) in enumerate(self.elements):
            if a is element:
                tag, t = self.elements[i + 1]
                assert tag == "title", tag
                return t.get("#text", "")
        raise KeyError(element)

    def find(self, tag=None, **attrs):
        return [a for t, a in self.elements
                if (tag is None or t == tag) and all(a.get(k) == v for k, v in attrs.items())]


def chromium(*args, url, attempts=3):
    """Chromium's output for `url`. The browser itself sometimes dies of a signal on a loaded
    machine (SIGSEGV in its GPU/dbus setup, before the page): that start is retried; any other
    failure is the test's."""
    for _ in range(attempts):
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                   "--disable-dev-shm-usage", "--no-first-run",
                                   "--no-default-browser-check", "--disable-extensions",
                                   "--disable-quic", "--disable-background-networking",
                                   "--disable-component-update", "--disable-sync",
                                   f"--user-data-dir={profile}", *args, url],
                                  capture_output=True, text=True, timeout=120)
        if proc.returncode >= 0:
            break
    if proc.returncode != 0:
        raise AssertionError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def render(fixture_input, name):
    src = os.path.join(ARTIFACTS, name + ".json")
    out = os.path.join(ARTIFACTS, name + ".html")
    with open(src, "w") as f:
        json.dump(fixture_input, f)
    subprocess.run([FIXTURE, src, out], check=True)
    return out


def dump_dom(path, fragment=""):
    return Dom(chromium("--dump-dom", url="file://" + path + fragment))


def with_actions(path, name, script):
    """A copy of the page whose extra script, run after the renderer, acts as a user would:
    events dispatched on the drawn DOM (a select's change, a click, a mouse move)."""
    with open(path, encoding="utf-8") as f:
        page = f.read()
    assert page.count("</body>") == 1
    out = os.path.join(ARTIFACTS, name + ".html")
    with open(out, "w", encoding="utf-8") as f:
        f.write(page.replace("</body>", "<script>" + script + "</script></body>"))
    return out


DATA_RE = re.compile(r'(<script type="application/json" id="report-data">)(.*?)(</script>)', re.S)


def page_data(path):
    """The data object report.html embeds (what report.js draws from)."""
    with open(path, encoding="utf-8") as f:
        return json.loads(DATA_RE.search(f.read()).group(2))


def render_circuit(result, name):
    """report.html for `result` through report_fixture (RenderReportHtml); its data carries the
    circuit."""
    path = render({"result": result, "attention": []}, name)
    assert "circuit" in page_data(path), "report.html's data has no circuit"
    return path


# Appended to a page by with_actions: records the circuit view's state after each step as a
# <div class="probe"> (the count line's attributes, the slider, the drawn edges' names).
CIRCUIT_PROBE = """
function probe(label) {
  var c = document.getElementById('circuit-count'), d = document.createElement('div');
  d.className = 'probe';
  d.setAttribute('data-label', label);
  ['data-mode', 'data-threshold', 'data-selected', 'data-drawn'].forEach(function (a) {
    d.setAttribute(a, c.getAttribute(a));
  });
  d.setAttribute('data-slider', document.getElementById('circuit-threshold').value);
  var paths = document.querySelectorAll('#circuit-graph path.cedge');
  d.setAttribute('data-edges', JSON.stringify(Array.prototype.map.call(paths, function (p) {
    return p.getAttribute('data-edge'); })));
  d.setAttribute('data-text', c.textContent);
  document.body.appendChild(d);
}
function slide(pos) {
  var s = document.getElementById('circuit-threshold');
  s.value = String(pos);
  var t0 = performance.now();
  s.dispatchEvent(new Event('input', {bubbles: true}));
  probe('slider ' + pos);
  document.body.lastChild.setAttribute('data-ms', String(performance.now() - t0));
}
"""


def screenshot(path, name, height):
    png = os.path.join(ARTIFACTS, name + ".png")
    if os.path.exists(png):
        os.remove(png)
    chromium(f"--screenshot={png}", f"--window-size=1280,{height}", "--hide-scrollbars",
             url="file://" + path)
    with open(png, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", png
    width, h = struct.unpack(">II", head[16:24])
    assert (width, h) == (1280, height), (width, h)
    print(f"report_browser_test: screenshot {png}", flush=True)
    return png


class ReportBrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.result = head_ablation_result()
        cls.views = [{"hook": f"blocks.{l}.attn.hook_pattern", "layer": l, "head": h,
                      "tokens": TOKENS, "pattern": causal_pattern(len(TOKENS), seed)}
                     for seed, (l, h) in enumerate([(1, 2), (2, 1), (0, 0)])]
        cls.page = render({"result": cls.result, "attention": cls.views}, "report")

    def check_drawn(self, dom):
        self.assertEqual(dom.find("body")[0].get("data-js"), "ready", "the renderer failed")

    def check_heatmap(self, dom, key, values, quantity):
        """A [layer][head] heatmap: one cell per value, each with its exact value, its name and
        its hover text (the <title> and the tooltip's data-tip)."""
        cells = dom.find("rect", **{"data-heatmap": key})
        self.assertEqual(len(cells), sum(len(r) for r in values), key)
        for cell in cells:
            i, j = int(cell["data-layer"]), int(cell["data-head"])
            self.assertEqual(float(cell["data-value"]), values[i][j], (key, i, j))
            self.assertEqual(cell["data-component"], f"L{i}H{j}")
            hover = dom.title_of(cell)
            self.assertEqual(hover, cell["data-tip"])
            name, _, value = hover.partition(f"  {quantity} = ")
            self.assertEqual(name, f"L{i}H{j}", hover)
            self.assertEqual(float(value), values[i][j], hover)  # exact, not rounded
        return cells

    def check_attention(self, dom, view):
        self.check_drawn(dom)
        svgs = dom.find("svg", **{"class": "attn"})
        self.assertEqual(len(svgs), 1)
        self.assertEqual((svgs[0]["data-layer"], svgs[0]["data-head"], svgs[0]["data-hook"]),
                         (str(view["layer"]), str(view["head"]), view["hook"]))
        n = len(SHOWN_TOKENS)
        for axis in ("tok qtok", "tok ktok"):
            labels = dom.find("text", **{"class": axis})
            self.assertEqual([t["data-token"] for t in labels], SHOWN_TOKENS, axis)
        cells = dom.find("rect", **{"class": "acell"})
        self.assertEqual(len(cells), n * n)
        for c in cells:
            q, k = int(c["data-q"]), int(c["data-k"])
            self.assertEqual(f32(float(c["data-weight"])), view["pattern"][q * n + k], (q, k))
            self.assertEqual((c["data-q-token"], c["data-k-token"]),
                             (SHOWN_TOKENS[q], SHOWN_TOKENS[k]))
        hover = dom.find("rect", **{"class": "acell", "data-q": "4", "data-k": "3"})[0]
        self.assertEqual(hover["data-tip"].splitlines()[:2], ['q 4 " <b>"', 'k 3 " &"'])
        self.assertEqual(dom.title_of(hover), hover["data-tip"])
        self.assertIn(f"L{view['layer']}H{view['head']}", dom.text_by_id["attn-caption"])

    def test_heatmaps_tables_and_identity_after_script(self):
        dom = dump_dom(self.page)
        self.check_drawn(dom)
        values = self.result["outputs"][0]["values"]
        cells = self.check_heatmap(dom, "output:delta", values, "delta")
        # One diverging scale centred on zero, symmetric at the largest |value| (1.5): 1.5 full
        # red, -0.75 half blue, 0 white.
        fill = {(c["data-layer"], c["data-head"]): c["fill"] for c in cells}
        self.assertEqual(fill[("1", "2")], "#b2182b")
        self.assertEqual(fill[("0", "0")], "#90b3d6")
        self.assertEqual(fill[("0", "1")], "#ffffff")
        legend = dom.find("svg", **{"class": "legend"})[0]
        self.assertEqual((float(legend["data-min"]), float(legend["data-max"])), (-1.5, 1.5))
        for name, scores in self.result["detectors"].items():
            self.check_heatmap(dom, "detector:" + name, scores, name + " score")
        # The ranked list: every component, largest |value| first, with its value.
        ranked = [r for r in dom.find("tr") if "data-component" in r]
        expected = self.result["outputs"][0]["ranked"]
        self.assertEqual([r["data-component"] for r in ranked], [e["component"] for e in expected])
        self.assertEqual([float(r["data-value"]) for r in ranked], [e["value"] for e in expected])
        shown = [td.get("#text") for td in dom.find("td", **{"class": "num"})]
        self.assertEqual(shown[:2], ["1", "+1.5"])
        fields = {r["data-field"]: r for r in dom.find("tr") if "data-field" in r}
        for f in ("method", "metric", "ablation", "delta", "model.weights_sha256", "model.dir",
                  "dataset.name", "dataset.n_prompts", "dataset.seed", "job.id", "label"):
            self.assertIn(f, fields)
        label = [td for td in dom.find("td") if td.get("#text") == self.result["label"]]
        self.assertEqual(len(label), 1, "the label is shown as text, not markup")
        self.assertEqual(dom.text_by_id.get("tip", ""), "")
        # Three views in the head selector; the first is drawn when no fragment says otherwise.
        self.assertEqual(len(dom.find("option")), 3)
        self.check_attention(dom, self.views[0])

    def test_fragment_opens_another_head(self):
        self.check_attention(dump_dom(self.page, "#attn=1"), self.views[1])

    def test_selector_switches_heads(self):
        page = with_actions(self.page, "report_select", """
            var s = document.getElementById('attn-select');
            s.value = '2';
            s.dispatchEvent(new Event('change'));""")
        self.check_attention(dump_dom(page), self.views[2])

    def test_click_on_a_heads_cell_opens_its_pattern(self):
        view = self.views[1]
        page = with_actions(self.page, "report_click", f"""
            document.querySelector('rect.cell[data-heatmap="detector:induction"]' +
                '[data-layer="{view['layer']}"][data-head="{view['head']}"]')
              .dispatchEvent(new MouseEvent('click', {{bubbles: true}}));""")
        self.check_attention(dump_dom(page), view)

    def test_hover_shows_the_exact_value(self):
        page = with_actions(self.page, "report_hover", """
            document.querySelector('rect.cell[data-heatmap="output:delta"]' +
                '[data-layer="0"][data-head="2"]')
              .dispatchEvent(new MouseEvent('mousemove', {bubbles: true}));""")
        dom = dump_dom(page)
        tip = dom.find("div", id="tip")[0]
        self.assertNotIn("hidden", tip)
        self.assertEqual(dom.text_by_id["tip"], "L0H2  delta = 4.470348358154297e-7")

    def test_screenshot(self):
        screenshot(self.page, "report", 2600)

    def test_real_search_report(self):
        if not LENSGRID or not os.path.exists(LENSGRID):
            self.skipTest("no lensgrid binary")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "search")
            subprocess.run([LENSGRID, "search", "--model", TINY_MODEL, "--in-process",
                            "--dataset", "induction", "--method", "ablate-heads", "--detectors",
                            "--n-prompts", "4", "--threads", "1", "--output", out],
                           check=True, capture_output=True)
            with open(os.path.join(out, "result.json")) as f:
                result = json.load(f)
            page = os.path.join(ARTIFACTS, "search_report.html")
            shutil.copyfile(os.path.join(out, "report.html"), page)
        dom = dump_dom(page)
        self.check_drawn(dom)
        cells = self.check_heatmap(dom, "output:delta", result["outputs"][0]["values"], "delta")
        self.assertEqual(len(cells), 8)  # 2 layers x 4 heads
        for name, scores in result["detectors"].items():
            self.check_heatmap(dom, "detector:" + name, scores, name + " score")
        ranked = [r for r in dom.find("tr") if "data-component" in r]
        self.assertEqual([r["data-component"] for r in ranked],
                         [e["component"] for e in result["outputs"][0]["ranked"]])
        # The viewer holds the top heads on the first prompt: BOS and its random tokens, repeated.
        options = dom.find("option")
        self.assertEqual(len(options), 4)
        svg = dom.find("svg", **{"class": "attn"})[0]
        tokens = [t["data-token"] for t in dom.find("text", **{"class": "tok qtok"})]
        n = result["dataset"]["positions"]
        self.assertEqual(len(tokens), n)
        self.assertEqual(tokens[0], "<|endoftext|>")
        self.assertEqual(len(dom.find("rect", **{"class": "acell"})), n * n)
        self.assertEqual(options[0]["#text"],
                         f"L{svg['data-layer']}H{svg['data-head']} ({svg['data-hook']})")
        screenshot(page, "search_report", 3400)

    def test_lensgrid_attention_page(self):
        """`lensgrid attention` draws a layer's heads with the viewer of the report: the
        weights are the model's own pattern (from `lensgrid run --cache`), every head."""
        if not LENSGRID or not os.path.exists(LENSGRID):
            self.skipTest("no lensgrid binary")
        prompt = "When Mary and John went to the store, John gave"
        with tempfile.TemporaryDirectory() as tmp:
            page = os.path.join(ARTIFACTS, "attention_view.html")
            subprocess.run([LENSGRID, "attention", "--model", TINY_MODEL, "--prompt", prompt,
                            "--layer", "-1", "--output", page], check=True, capture_output=True)
            run = os.path.join(tmp, "run.safetensors")
            subprocess.run([LENSGRID, "run", "--model", TINY_MODEL, "--prompt", prompt, "--cache",
                            r"blocks\.1\.attn\.hook_pattern", "--output", run, "--threads", "1"],
                           check=True, capture_output=True)
            with open(run, "rb") as f:
                raw = f.read()
        (n_header,) = struct.unpack("<Q", raw[:8])
        meta = json.loads(raw[8:8 + n_header])["blocks.1.attn.hook_pattern"]
        start, end = meta["data_offsets"]
        data = raw[8 + n_header + start:8 + n_header + end]
        _, heads, n, _ = meta["shape"]
        weights = struct.unpack(f"<{len(data) // 4}f", data)
        for head in (0, heads - 1):
            dom = dump_dom(page, f"#attn={head}")
            self.check_drawn(dom)
            self.assertEqual(len(dom.find("option")), heads)
            svg = dom.find("svg", **{"class": "attn"})[0]
            self.assertEqual((svg["data-layer"], svg["data-head"]), ("1", str(head)))
            tokens = [t["data-token"] for t in dom.find("text", **{"class": "tok qtok"})]
            self.assertEqual(len(tokens), n)
            self.assertEqual(tokens[0], "<|endoftext|>")
            cells = dom.find("rect", **{"class": "acell"})
            self.assertEqual(len(cells), n * n)
            for c in cells:
                q, k = int(c["data-q"]), int(c["data-k"])
                # The same model and prompt (the run's matmuls may split across threads
                # differently, so not bit for bit).
                self.assertAlmostEqual(float(c["data-weight"]), weights[(head * n + q) * n + k],
                                       delta=1e-6)
        screenshot(page, "attention_view", 1400)

    def test_every_kind_of_output_renders(self):
        """Reports of searches whose outputs have other axes: [layer, pos] with its normalized
        twin, [layer, pos, head] (a panel per layer), [kind(attn,mlp), layer], detector scores."""
        if not LENSGRID or not os.path.exists(LENSGRID):
            self.skipTest("no lensgrid binary")
        searches = [("patch-resid", ["--normalize"]), ("patch-heads-by-pos", []),
                    ("dla", ["--metric", "logit-diff"]), ("detect-heads", [])]
        for method, extra in searches:
            with self.subTest(method=method), tempfile.TemporaryDirectory() as tmp:
                proc = subprocess.run([LENSGRID, "search", "--model", TINY_MODEL, "--in-process",
                                       "--dataset", "induction", "--method", method,
                                       "--n-prompts", "2", "--seq-len", "6", "--threads", "1",
                                       "--output", tmp, *extra], capture_output=True, text=True)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                with open(os.path.join(tmp, "result.json")) as f:
                    result = json.load(f)
                page = os.path.join(ARTIFACTS, f"search_{method}.html")
                shutil.copyfile(os.path.join(tmp, "report.html"), page)
            dom = dump_dom(page)
            self.check_drawn(dom)
            for o in result["outputs"]:
                for variant, key in (("values", "output:" + o["name"]),
                                     ("normalized", "output:" + o["name"] + ":normalized")):
                    if variant not in o:
                        continue
                    cells = dom.find("rect", **{"data-heatmap": key})
                    self.assertEqual(len(cells), math.prod(o["shape"]), key)
                    flat = dict(flatten(o[variant]))
                    attrs = ["data-" + a.split("(")[0] for a in o["axes"]]
                    for c in cells:
                        coords = tuple(int(c[a]) for a in attrs)
                        value = flat[coords]
                        if value is None:
                            self.assertEqual(c["data-value"], "null", (key, coords))
                        else:
                            self.assertEqual(float(c["data-value"]), value, (key, coords))
                panels = len(dom.find("svg", **{"class": "heatmap",
                                                "data-heatmap": "output:" + o["name"]}))
                self.assertEqual(panels, o["shape"][0] if len(o["shape"]) == 3 else 1)


class CircuitViewTest(unittest.TestCase):
    """The circuit view (data.circuit, from eap / eap-ig / acdc): nodes by layer, the kept edges
    drawn with their exact scores and hover text, the threshold slider's drawn count against one
    computed here from the JSON, the cap on drawn edges at GPT-2 small's size, faithfulness."""

    SLIDER_STEPS, MAX_DRAWN = 1000, 2000

    @classmethod
    def setUpClass(cls):
        cls.small = circuit_result(3, 4, False, 20, seed=5)
        cls.small_page = render_circuit(cls.small, "circuit_report")
        cls.attn_only = circuit_result(2, 4, True, 12, seed=3, faithfulness=False)
        cls.attn_only_page = render_circuit(cls.attn_only, "circuit_report_attn_only")
        cls.gpt2 = circuit_result(12, 12, False, 2500, seed=11, faithfulness=False)
        cls.gpt2_page = render_circuit(cls.gpt2, "circuit_report_gpt2_small")

    def check_nodes(self, dom, circuit):
        nodes = dom.find("g", **{"class": "cnode"}) + dom.find("g", **{"class": "cnode in-circuit"})
        self.assertEqual(sorted(n["data-node"] for n in nodes),
                         sorted(n["name"] for n in circuit["nodes"]))
        kinds = {n["name"]: n["kind"] for n in circuit["nodes"]}
        for n in nodes:
            self.assertEqual(n["data-kind"], kinds[n["data-node"]])
        heads = [n for n in circuit["nodes"] if n["kind"] == "head"]
        ports = dom.find("circle", **{"class": "port"})
        self.assertEqual(sorted(p["data-port"] for p in ports),
                         sorted(f"{n['name']}.{ch}" for n in heads for ch in "qkv"))

    def check_edges(self, dom, circuit, expected_names):
        """The drawn edges are exactly `expected_names`, each with its exact score, channel, kept
        flag and hover text."""
        by_name = {e["name"]: e for e in circuit["edges"]}
        paths = [p for p in dom.find("path") if p.get("class") in ("cedge pos", "cedge neg")]
        self.assertEqual(sorted(p["data-edge"] for p in paths), sorted(expected_names))
        for p in paths:
            e = by_name[p["data-edge"]]
            self.assertEqual(float(p["data-score"]), e["score"], e["name"])
            self.assertEqual((p["data-sender"], p["data-receiver"], p["data-channel"]),
                             (e["sender"], e["receiver"], e["channel"]))
            self.assertEqual(p["data-kept"], "true" if e["kept"] else "false")
            self.assertEqual(p["class"], "cedge neg" if e["score"] < 0 else "cedge pos")
            hover = dom.title_of(p)
            self.assertEqual(hover, p["data-tip"])
            name, _, rest = hover.partition("  score = ")
            score, _, kept = rest.partition("  kept = ")
            self.assertEqual(name, e["name"])
            self.assertEqual(float(score), e["score"], hover)  # exact
            self.assertEqual(kept, "true" if e["kept"] else "false")
        return paths

    def expected_at(self, circuit, slider):
        """Independently of the page: the threshold at a slider position (log scale from the
        smallest nonzero |score| to the largest) and the edges with |score| >= it."""
        scores = [abs(e["score"]) for e in circuit["edges"]]
        lo, hi = math.log10(min(a for a in scores if a > 0)), math.log10(max(scores))
        return 10 ** (lo + (hi - lo) * slider / self.SLIDER_STEPS)

    def selected(self, circuit, threshold):
        edges = circuit["edges"]
        order = sorted(range(len(edges)), key=lambda i: (-abs(edges[i]["score"]), i))
        chosen = [i for i in order if abs(edges[i]["score"]) >= threshold]
        return len(chosen), [edges[i]["name"] for i in chosen[:self.MAX_DRAWN]]

    def test_kept_edges_nodes_and_faithfulness(self):
        dom = dump_dom(self.small_page)
        self.assertEqual(dom.find("body")[0].get("data-js"), "ready")
        c = self.small["circuit"]
        self.check_nodes(dom, c)
        kept = [e["name"] for e in c["edges"] if e["kept"]]
        self.assertEqual(len(kept), 20)
        paths = self.check_edges(dom, c, kept)
        # Both signs among the kept edges, and a head's q, k and v inputs all reached.
        self.assertEqual({p["class"] for p in paths}, {"cedge pos", "cedge neg"})
        count = dom.find("p", id="circuit-count")[0]
        self.assertEqual((count["data-mode"], count["data-selected"], count["data-drawn"]),
                         ("kept", "20", "20"))
        self.assertEqual(float(count["data-threshold"]), c["threshold"])
        self.assertIn(f"20 of {len(c['edges'])}", count["#text"])
        slider = dom.find("input", id="circuit-threshold")[0]
        self.assertAlmostEqual(self.expected_at(c, int(slider["value"])), c["threshold"],
                               delta=c["threshold"] * 0.03)  # the nearest of 1000 log steps
        # Faithfulness: every number, exactly, in its row.
        rows = {r["data-field"]: r for r in dom.find("tr") if "data-field" in r}
        for k, v in c["faithfulness"].items():
            self.assertEqual(float(rows[k]["data-value"]), v, k)
        shown = [td.get("#text") for td in dom.find("td", **{"class": "num"})]
        self.assertEqual(shown[:3], ["1.9", "2.125", "0.1"])
        self.assertEqual(len(dom.find("div", id="circuit-faithfulness")), 1)

    def test_attention_only_circuit(self):
        """lensgrid-tiny's shape: no MLP nodes, every head's q/k/v ports, no faithfulness."""
        c = self.attn_only["circuit"]
        dom = dump_dom(self.attn_only_page)
        self.assertEqual(dom.find("body")[0].get("data-js"), "ready")
        self.check_nodes(dom, c)
        self.assertEqual([g for g in dom.find("g") if g.get("data-kind") == "mlp"], [])
        self.check_edges(dom, c, [e["name"] for e in c["edges"] if e["kept"]])
        self.assertEqual(dom.find("div", id="circuit-faithfulness"), [])

    def test_hover_and_focus_show_names_and_values(self):
        c = self.small["circuit"]
        top = max((e for e in c["edges"] if e["kept"]), key=lambda e: abs(e["score"]))
        node = top["receiver"]
        page = with_actions(self.small_page, "circuit_hover", f"""
            var p = document.querySelector('#circuit-graph path.cedge[data-edge="{top['name']}"]');
            p.dispatchEvent(new MouseEvent('mouseover', {{bubbles: true}}));
            p.dispatchEvent(new MouseEvent('mousemove', {{bubbles: true}}));
            var info = document.createElement('div');
            info.className = 'probe';
            info.setAttribute('data-text', document.getElementById('circuit-info').textContent);
            document.body.appendChild(info);
            document.querySelector('#circuit-graph g[data-node="{node}"]').focus();""")
        dom = dump_dom(page)
        expected = f"{top['name']}  score = "
        tip = dom.text_by_id["tip"]
        self.assertNotIn("hidden", dom.find("div", id="tip")[0])
        self.assertTrue(tip.startswith(expected), tip)
        self.assertEqual(float(tip[len(expected):].partition("  kept")[0]), top["score"])
        self.assertTrue(tip.endswith("kept = true"), tip)
        self.assertEqual(dom.find("div", **{"class": "probe"})[0]["data-text"], tip)
        # Focus on the receiving node: its name and its kept edges in the readout; its drawn
        # edges highlighted.
        kept_in = sum(1 for e in c["edges"] if e["kept"] and e["receiver"] == node)
        kept_out = sum(1 for e in c["edges"] if e["kept"] and e["sender"] == node)
        info = dom.text_by_id["circuit-info"]
        self.assertTrue(info.startswith(node + "  "), info)
        self.assertIn(f"kept edges: in {kept_in}", info)
        self.assertIn(f", out {kept_out}", info)
        lit = [p["data-edge"] for p in dom.find("path") if "hl" in p.get("class", "").split()]
        self.assertEqual(sorted(lit), sorted(e["name"] for e in c["edges"] if e["kept"] and
                                             node in (e["sender"], e["receiver"])))

    def check_slider(self, circuit, page_path, name, positions):
        steps = "".join(f"slide({p});" for p in positions)
        page = with_actions(page_path, name, CIRCUIT_PROBE + steps + """
            document.getElementById('circuit-show-kept').click(); probe('kept');""")
        dom = dump_dom(page)
        self.assertEqual(dom.find("body")[0].get("data-js"), "ready")
        probes = dom.find("div", **{"class": "probe"})
        self.assertEqual(len(probes), len(positions) + 1)
        counts = []
        for pos, pr in zip(positions, probes):
            self.assertEqual((pr["data-label"], pr["data-mode"], pr["data-slider"]),
                             (f"slider {pos}", "threshold", str(pos)))
            threshold = float(pr["data-threshold"])
            self.assertAlmostEqual(threshold, self.expected_at(circuit, pos),
                                   delta=1e-9 * threshold)
            n, names = self.selected(circuit, threshold)
            self.assertEqual(int(pr["data-selected"]), n, pos)
            self.assertEqual(int(pr["data-drawn"]), min(n, self.MAX_DRAWN), pos)
            self.assertEqual(sorted(json.loads(pr["data-edges"])), sorted(names), pos)
            if n > self.MAX_DRAWN:
                self.assertIn("at most 2,000 are drawn", pr["data-text"])
            print(f"report_browser_test: {name} slider {pos}: threshold {threshold:.4g}, "
                  f"{n} selected, redrawn in {float(pr['data-ms']):.0f} ms", flush=True)
            counts.append(n)
        back = probes[-1]
        kept = [e["name"] for e in circuit["edges"] if e["kept"]]
        self.assertEqual(back["data-mode"], "kept")
        self.assertEqual(sorted(json.loads(back["data-edges"])),
                         sorted(self.selected({"edges": [e for e in circuit["edges"]
                                                         if e["kept"]]}, 0)[1]))
        self.assertEqual(int(back["data-selected"]), len(kept))
        return counts

    def test_slider_changes_the_drawn_edges(self):
        counts = self.check_slider(self.small["circuit"], self.small_page, "circuit_slider",
                                   [0, 250, 500, 750, 1000])
        self.assertEqual(counts, sorted(counts, reverse=True))
        self.assertEqual(counts[-1], 1)  # only the largest
        zeros = sum(1 for e in self.small["circuit"]["edges"] if e["score"] == 0)
        self.assertEqual(counts[0], len(self.small["circuit"]["edges"]) - zeros)
        self.assertGreater(len(set(counts)), 3)

    def test_gpt2_small_size_is_capped(self):
        c = self.gpt2["circuit"]
        self.assertEqual(len(c["edges"]), 32491)
        dom = dump_dom(self.gpt2_page)
        self.assertEqual(dom.find("body")[0].get("data-js"), "ready")
        self.check_nodes(dom, c)
        # 2,500 kept: the 2,000 of largest |score| drawn, and the page says so.
        count = dom.find("p", id="circuit-count")[0]
        self.assertEqual((count["data-mode"], count["data-selected"], count["data-drawn"]),
                         ("kept", "2500", "2000"))
        self.assertIn("at most 2,000 are drawn", count["#text"])
        self.check_edges(dom, c, self.selected(c, c["threshold"])[1])
        self.check_slider(c, self.gpt2_page, "circuit_slider_gpt2_small", [0, 500, 800, 1000])

    def test_report_data_carries_the_circuit(self):
        """report.html's data holds result.json's circuit as data.circuit (client/report.cc)."""
        self.assertEqual(page_data(self.small_page)["circuit"], self.small["circuit"])

    def test_no_circuit_no_view(self):
        dom = dump_dom(render({"result": head_ablation_result(), "attention": []}, "no_circuit"))
        self.assertEqual(dom.find("body")[0].get("data-js"), "ready")
        self.assertEqual(dom.find("section", id="circuit"), [])

    def test_screenshot(self):
        screenshot(self.small_page, "circuit_report", 1400)
        screenshot(self.gpt2_page, "circuit_report_gpt2_small", 1900)

    def test_real_eap_search(self):
        if not LENSGRID or not os.path.exists(LENSGRID):
            self.skipTest("no lensgrid binary")
        help_text = subprocess.run([LENSGRID, "search", "--help"], capture_output=True,
                                   text=True).stdout
        if not re.search(r"\beap\b", help_text):
            self.skipTest("lensgrid search has no --method eap yet")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "search")
            proc = subprocess.run([LENSGRID, "search", "--model", TINY_MODEL, "--in-process",
                                   "--dataset", "induction", "--method", "eap",
                                   "--n-prompts", "4", "--threads", "1", "--output", out],
                                  capture_output=True, text=True)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            with open(os.path.join(out, "result.json")) as f:
                result = json.load(f)
            page = os.path.join(ARTIFACTS, "search_eap_report.html")
            shutil.copyfile(os.path.join(out, "report.html"), page)
        c = result["circuit"]
        # The page as the CLI wrote it: its data carries the circuit (no help from the test).
        self.assertEqual(page_data(page).get("circuit"), c)
        dom = dump_dom(page)
        self.assertEqual(dom.find("body")[0].get("data-js"), "ready")
        self.check_nodes(dom, c)
        kept = [e["name"] for e in c["edges"] if e["kept"]]
        self.assertGreater(len(kept), 0)
        order = self.selected({"edges": [e for e in c["edges"] if e["kept"]]}, 0)[1]
        self.check_edges(dom, c, order)
        count = dom.find("p", id="circuit-count")[0]
        self.assertEqual((count["data-mode"], int(count["data-selected"])), ("kept", len(kept)))
        if "faithfulness" in c:
            rows = {r["data-field"]: r for r in dom.find("tr") if "data-field" in r}
            for k, v in c["faithfulness"].items():
                self.assertEqual(float(rows[k]["data-value"]), v, k)
        self.check_slider(c, page, "search_eap_slider", [0, 300, 700, 1000])
        screenshot(page, "search_eap_report", 1400)


def main():
    global FIXTURE, ARTIFACTS, LENSGRID, CHROMIUM
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    FIXTURE, ARTIFACTS = sys.argv[1], os.path.abspath(sys.argv[2])
    LENSGRID = sys.argv[3] if len(sys.argv) > 3 else None
    CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
    if not CHROMIUM:
        print("report_browser_test: SKIP: chromium is not installed (scripts/bootstrap installs it)")
        return 77
    os.makedirs(ARTIFACTS, exist_ok=True)
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
