#!/usr/bin/python3
"""lensgrid.display's attention views in headless Chromium: a real worker's patterns drawn as
per-head grids, each cell's hover text and value equal to the cache's number, token labels on
both axes, the head selector switching heads; the page loads nothing from the network.

usage: display_browser_test.py INSTALL_DIR LENSGRID_WORKER SOURCE_DIR ARTIFACT_DIR
Exits 77 (skipped) only when chromium is not installed.
"""
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

INSTALL, WORKER_BIN, SOURCE, ARTIFACTS = sys.argv[1:5]
del sys.argv[1:5]
sys.path.insert(0, INSTALL)
sys.path.insert(1, os.path.join(SOURCE, "tests", "integration", "worker"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    print("display_browser_test: chromium is not installed")
    sys.exit(77)

import numpy as np  # noqa: E402
import lensgrid  # noqa: E402
from worker_harness import WorkerProcess  # noqa: E402

PROMPT = "The cat sat on the mat"


def chromium_dom(path, attempts=3):
    for _ in range(attempts):
        with tempfile.TemporaryDirectory() as profile:
            proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                                   "--disable-dev-shm-usage", "--no-first-run",
                                   "--disable-extensions", "--disable-background-networking",
                                   "--disable-component-update", "--disable-sync",
                                   f"--user-data-dir={profile}", "--dump-dom", "file://" + path],
                                  capture_output=True, text=True, timeout=120)
        if proc.returncode >= 0:
            break
    if proc.returncode != 0:
        raise AssertionError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def cells(dom):
    """(head, q, k, value, title) of every drawn cell."""
    out = []
    for m in re.finditer(r'<div class="lg-head" data-head="(\d+)">(.*?)</table>', dom, re.S):
        head = int(m.group(1))
        for td in re.finditer(r"<td ([^>]*)>", m.group(2)):
            attrs = dict((k, html.unescape(v)) for k, v in re.findall(r'([\w-]+)="([^"]*)"', td.group(1)))
            out.append((head, int(attrs["data-q"]), int(attrs["data-k"]), float(attrs["data-value"]),
                        attrs["title"]))
    return out


class DisplayBrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.makedirs(ARTIFACTS, exist_ok=True)
        with WorkerProcess(WORKER_BIN, os.path.join(SOURCE, "models", "lensgrid-tiny"),
                           "--threads", "1") as w:
            model = lensgrid.connect(w.address)
            cls.tokens = model.to_str_tokens(PROMPT)
            _, cache = model.run_with_cache(PROMPT, names_filter="pattern0")
            cls.pattern = cache["pattern", 0][0]
            model.close()

    def test_attention_heads_draws_every_head(self):
        view = lensgrid.display.attention_heads(self.tokens, self.pattern)
        path = view.save(os.path.join(ARTIFACTS, "attention_heads.html"))
        page = open(path, encoding="utf-8").read()
        self.assertNotRegex(page, r'(src|href)="https?:')  # self-contained
        self.assertIn("lg-attn", view._repr_html_())
        dom = chromium_dom(path)
        self.assertIn('data-drawn="true"', dom)
        got = cells(dom)
        n_heads, n = self.pattern.shape[0], len(self.tokens)
        self.assertEqual(len(got), n_heads * n * n)
        for head, q, k, value, title in got:
            self.assertAlmostEqual(value, float(self.pattern[head, q, k]), places=6)
            self.assertIn(f"Head {head}: query", title)
            self.assertIn(f"({q}) -> key", title)
            shown = float(title.rsplit("= ", 1)[1])  # 4 significant digits
            self.assertLessEqual(abs(shown - self.pattern[head, q, k]),
                                 1e-3 * abs(self.pattern[head, q, k]) + 1e-12)
        labels = re.findall(r'<th class="lg-k">(.*?)</th>', dom)
        self.assertEqual([html.unescape(t) for t in labels[:n]], self.tokens)

    def test_attention_patterns_selects_a_head(self):
        view = lensgrid.display.attention_patterns(self.tokens, self.pattern,
                                                   [f"L0H{h}" for h in range(self.pattern.shape[0])])
        path = view.save(os.path.join(ARTIFACTS, "attention_patterns.html"))
        dom = chromium_dom(path)
        self.assertEqual({c[0] for c in cells(dom)}, {0})
        page = open(path, encoding="utf-8").read()
        switched = os.path.join(ARTIFACTS, "attention_patterns_head2.html")
        with open(switched, "w", encoding="utf-8") as f:
            f.write(page.replace("</body>", "<script>var s=document.querySelector('select');"
                                 "s.value='2';s.dispatchEvent(new Event('change'));"
                                 "var td=document.querySelector('td[data-q=\"3\"][data-k=\"1\"]');"
                                 "td.dispatchEvent(new Event('mouseover'));</script></body>"))
        dom = chromium_dom(switched)
        got = cells(dom)
        self.assertEqual({c[0] for c in got}, {2})  # the one grid shown is head 2's
        self.assertIn("L0H2: query", got[0][4])
        for _, q, k, value, _ in got:
            self.assertAlmostEqual(value, float(self.pattern[2, q, k]), places=6)
        hover = re.search(r'<div class="lg-hover">(.*?)</div>', dom).group(1)
        self.assertIn("(3) -> key", html.unescape(hover))

    def test_bad_shapes_are_errors(self):
        with self.assertRaises(lensgrid.Error):
            lensgrid.display.attention_heads(self.tokens[:-1], self.pattern)
        with self.assertRaises(lensgrid.Error):
            lensgrid.display.attention_heads(self.tokens, np.zeros((2, 2, 2, 2, 2)))


if __name__ == "__main__":
    unittest.main(verbosity=2)
