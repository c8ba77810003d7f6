#!/usr/bin/python3
"""examples/transformerlens_walkthrough.py against a real lensgrid-coordinator and
lensgrid-worker (the embedded model) on loopback, with only the pip-installed package on
sys.path: it exits 0, the ablation changed the loss, the search's top head is printed (and is
the top of the result.json it wrote through the CLI), the attention view and report exist; a
failure (a worker serving another model) exits non-zero.

usage: examples_test.py INSTALL_DIR LENSGRID_COORDINATOR LENSGRID_WORKER LENSGRID SOURCE_DIR
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

INSTALL, COORD_BIN, WORKER_BIN, LENSGRID_BIN, SOURCE = sys.argv[1:6]
del sys.argv[1:6]
sys.path.insert(0, INSTALL)
sys.path.insert(1, os.path.join(SOURCE, "tests", "integration", "worker"))
sys.path.insert(2, os.path.join(SOURCE, "tests", "integration", "cluster"))

from cluster_harness import CoordinatorProcess  # noqa: E402
from worker_harness import WorkerProcess  # noqa: E402

MODEL = os.path.join(SOURCE, "models", "lensgrid-tiny")
EXAMPLE = os.path.join(SOURCE, "examples", "transformerlens_walkthrough.py")


def example_env():
    """The installed package only: no source tree, no inherited PYTHONPATH, no user site."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "LENSGRID_BINARY", "LENSGRID_TOKEN", "LENSGRID_TLS_CA")}
    env["PYTHONPATH"] = INSTALL
    env["PYTHONNOUSERSITE"] = "1"
    return env


class ExamplesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.coord = CoordinatorProcess(COORD_BIN, os.path.join(cls.tmp.name, "state"))
        cls.worker = WorkerProcess(WORKER_BIN, MODEL, "--coordinator", cls.coord.address,
                                   "--threads", "1")
        # The coordinator knows the model only once the worker has registered (asynchronously,
        # after it serves): until then a job for an unknown model cannot be refused.
        cls.worker.wait_for_log(r"registered with the coordinator as", timeout=120)

    @classmethod
    def tearDownClass(cls):
        cls.worker.stop()
        cls.coord.stop()
        cls.tmp.cleanup()

    def run_example(self, *args):
        return subprocess.run([sys.executable, EXAMPLE, "--worker", self.worker.address,
                               "--coordinator", self.coord.address, *args],
                              env=example_env(), capture_output=True, text=True, timeout=300)

    def test_the_package_it_imports_is_the_installed_one(self):
        done = subprocess.run([sys.executable, "-c", "import lensgrid; print(lensgrid.__file__)"],
                              env=example_env(), capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(EXAMPLE))
        self.assertTrue(os.path.realpath(done.stdout.strip()).startswith(os.path.realpath(INSTALL)),
                        done.stdout)

    def test_walkthrough(self):
        out_dir = os.path.join(self.tmp.name, "walkthrough")
        done = self.run_example("--output-dir", out_dir, "--lensgrid", LENSGRID_BIN)
        log = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        self.assertEqual(done.returncode, 0, log)
        out = done.stdout
        self.assertIn("walkthrough finished", out, log)
        for step in ("## Loss", "## Tokens", "## Caching all activations",
                     '"pattern", 0, "attn"', "## names_filter with stop_at_layer",
                     "## Observing with hooks", "## Ablating head", "## Ablation search",
                     "## Weights and the OV circuit"):
            self.assertIn(step, out, log)
        # the ablation changed the loss (and the embedded model's induction head is L1H1)
        m = re.search(r"loss: clean ([\d.]+), with (L\d+H\d+) ablated ([\d.]+) "
                      r"\(change ([+-][\d.]+)\)", out)
        self.assertIsNotNone(m, log)
        clean, ablated = float(m.group(1)), float(m.group(3))
        self.assertEqual(m.group(2), "L1H1", log)
        self.assertGreater(ablated - clean, 0.1, log)
        self.assertIn("top induction head: L1H1", out, log)
        # the search's top head, printed and the top of the CLI's result.json for the job
        top = re.search(r"^top head: (L\d+H\d+)$", out, re.M)
        self.assertIsNotNone(top, log)
        with open(os.path.join(out_dir, "search", "result.json")) as f:
            result = json.load(f)
        delta = [o for o in result["outputs"] if o["name"] == "delta"][0]
        self.assertEqual(top.group(1), delta["ranked"][0]["component"], log)
        self.assertEqual(result["metric"], "loss")  # the induction dataset's default
        for name in ("attention_layer0.html", os.path.join("search", "report.html")):
            self.assertGreater(os.path.getsize(os.path.join(out_dir, name)), 1000, name)

    def test_a_failure_exits_non_zero(self):
        done = self.run_example("--model", "gpt2",
                                "--output-dir", os.path.join(self.tmp.name, "failed"))
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertIn("walkthrough FAILED", done.stderr)
        self.assertIn("not 'gpt2'", done.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
