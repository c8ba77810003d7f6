#!/usr/bin/python3
"""The search report in a real browser: renders report.html (through report_fixture), opens it in
Debian's headless Chromium, saves screenshots as test artifacts, and checks from the DOM as it is
after the page's script ran that the heatmap cells hold the right values and that the attention
viewer holds the prompt's tokens and weights. With a lensgrid binary, also renders the result.json
of a real `lensgrid search --in-process` run and checks its cells against the file.

usage: report_browser_test.py REPORT_FIXTURE ARTIFACT_DIR [LENSGRID]
Exits 77 (skipped) only when chromium is not installed.
"""
import html.parser
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

FIXTURE = ARTIFACTS = LENSGRID = CHROMIUM = None

# A prompt whose tokens need escaping everywhere: markup, quotes, a newline, a byte that is not
# UTF-8 (given as a list of bytes; the report shows U+FFFD for it).
TOKENS = ["<|endoftext|>", "When", " Mary", " &", " <b>", " \"q\"", "\n", [0xFF, 0x41], " Mary"]
SHOWN_TOKENS = ["<|endoftext|>", "When", " Mary", " &", " <b>", " \"q\"", "\n", "\ufffdA", " Mary"]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


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


class Dom(html.parser.HTMLParser):
    """Every element's tag and attributes, in document order, plus the text of each element id."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.elements = []
        self.text_by_id = {}
        self._open_ids = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a))
        if a.get("id"):
            self._open_ids.append((tag, a["id"]))
            self.text_by_id.setdefault(a["id"], "")

    def handle_endtag(self, tag):
        if self._open_ids and self._open_ids[-1][0] == tag:
            self._open_ids.pop()

    def handle_data(self, data):
        for _, i in self._open_ids:
            self.text_by_id[i] += data

    def find(self, tag=None, **attrs):
        return [a for t, a in self.elements
                if (tag is None or t == tag) and all(a.get(k) == v for k, v in attrs.items())]


def chromium(*args, url):
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-dev-shm-usage", "--no-first-run",
                               "--no-default-browser-check", "--disable-extensions",
                               f"--user-data-dir={profile}", *args, url],
                              capture_output=True, text=True, timeout=120)
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

    def check_heatmap(self, dom, key, values):
        """A [layer][head] heatmap: one cell per value, each with its exact value and name."""
        cells = dom.find("rect", **{"data-heatmap": key})
        self.assertEqual(len(cells), sum(len(r) for r in values), key)
        for cell in cells:
            i, j = int(cell["data-layer"]), int(cell["data-head"])
            self.assertEqual(float(cell["data-value"]), values[i][j], (key, i, j))
            self.assertEqual(cell["data-component"], f"L{i}H{j}")
            self.assertTrue(cell["data-tip"].startswith(f"L{i}H{j}  "), cell["data-tip"])
        return cells

    def check_attention(self, dom, view):
        self.assertEqual(dom.find("body")[0].get("data-js"), "ready", "the page's script failed")
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
        hover = dom.find("rect", **{"class": "acell", "data-q": "4", "data-k": "3"})[0]["data-tip"]
        self.assertEqual(hover.splitlines()[:2], ['q 4 " <b>"', 'k 3 " &"'])
        self.assertIn(f"L{view['layer']}H{view['head']}", dom.text_by_id["attn-caption"])

    def test_heatmaps_tables_and_identity_after_script(self):
        dom = dump_dom(self.page)
        self.check_heatmap(dom, "output:delta", self.result["outputs"][0]["values"])
        for name, values in self.result["detectors"].items():
            self.check_heatmap(dom, "detector:" + name, values)
        rows = dom.find("tr")
        ranked = [r for r in rows if "data-component" in r]
        self.assertEqual([r["data-component"] for r in ranked][:3], ["L1H2", "L2H3", "L0H0"])
        self.assertEqual(float(ranked[0]["data-value"]), 1.5)
        fields = {r["data-field"] for r in rows if "data-field" in r}
        for f in ("method", "metric", "ablation", "delta", "model.weights_sha256", "model.dir",
                  "dataset.name", "dataset.n_prompts", "dataset.seed", "job.id", "label"):
            self.assertIn(f, fields)
        # Three views in the head selector; the first is drawn when no fragment says otherwise.
        self.assertEqual(len(dom.find("option")), 3)
        self.check_attention(dom, self.views[0])

    def test_fragment_opens_another_head(self):
        self.check_attention(dump_dom(self.page, "#attn=1"), self.views[1])

    def test_screenshot(self):
        screenshot(self.page, "report", 2600)

    def test_real_search_result(self):
        if not LENSGRID or not os.path.exists(LENSGRID):
            self.skipTest("no lensgrid binary")
        with tempfile.TemporaryDirectory() as tmp:
            model = os.path.join(tmp, "model")
            subprocess.run([LENSGRID, "init", "--out", model, "--layers", "2", "--heads", "4",
                            "--d-model", "64", "--n-ctx", "128", "--seed", "3"],
                           check=True, capture_output=True)
            out = os.path.join(tmp, "search")
            subprocess.run([LENSGRID, "search", "--model", model, "--in-process", "--dataset",
                            "ioi", "--method", "ablate-heads", "--n-prompts", "3", "--threads",
                            "1", "--output", out], check=True, capture_output=True)
            with open(os.path.join(out, "result.json")) as f:
                result = json.load(f)
        page = render(result, "search_report")  # a bare result.json: no attention views
        dom = dump_dom(page)
        self.assertEqual(dom.find("body")[0].get("data-js"), "ready")
        cells = self.check_heatmap(dom, "output:delta", result["outputs"][0]["values"])
        self.assertEqual(len(cells), 8)
        screenshot(page, "search_report", 1200)


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
