#!/usr/bin/python3
"""lensgrid.Coordinator against a real coordinator and worker on loopback: a search's grids
equal `lensgrid search --in-process` on the same model and dataset (within 1e-5), ranked
components, detached jobs (job(id).wait(), result(), jobs()), cancel, bad input as
lensgrid.Error with the gRPC code.

usage: coordinator_test.py INSTALL_DIR LENSGRID_COORDINATOR LENSGRID_WORKER LENSGRID SOURCE_DIR
"""
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

INSTALL, COORD_BIN, WORKER_BIN, LENSGRID_BIN, SOURCE = sys.argv[1:6]
del sys.argv[1:6]
sys.path.insert(0, INSTALL)
sys.path.insert(1, os.path.join(SOURCE, "tests", "integration", "worker"))
sys.path.insert(2, os.path.join(SOURCE, "tests", "integration", "cluster"))
sys.path.insert(3, os.path.join(SOURCE, "tests", "integration"))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import lensgrid  # noqa: E402
from cluster_harness import CoordinatorProcess  # noqa: E402
from worker_harness import WorkerProcess  # noqa: E402

MODEL = os.path.join(SOURCE, "models", "lensgrid-tiny")


class CoordinatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.coord = CoordinatorProcess(COORD_BIN, os.path.join(cls.tmp.name, "state"))
        cls.worker = WorkerProcess(WORKER_BIN, MODEL, "--coordinator", cls.coord.address,
                                   "--threads", "1")
        cls.c = lensgrid.Coordinator(cls.coord.address)

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        cls.worker.stop()
        cls.coord.stop()
        cls.tmp.cleanup()

    def in_process(self, *args):
        out = os.path.join(self.tmp.name, "inproc")
        subprocess.run([LENSGRID_BIN, "search", "--model", MODEL, "--in-process", "--output", out,
                        *args], check=True, capture_output=True)
        with open(os.path.join(out, "result.json")) as f:
            return json.load(f)

    def test_search_equals_in_process(self):
        log = io.StringIO()
        for w in self.c.workers():
            self.assertEqual(w.model_id, "lensgrid-tiny")
        result = self.c.search("lensgrid-tiny", "induction", "ablate-heads", metric="loss", n_prompts=6, seed=3,
                               seq_len=8, prompts_per_shard=2, progress=True)
        want = self.in_process("--dataset", "induction", "--method", "ablate-heads", "--metric", "loss",
                               "--n-prompts", "6", "--seed", "3", "--seq-len", "8")
        outputs = {o["name"]: o for o in want["outputs"]}
        self.assertEqual(sorted(result.grids), sorted(outputs))
        for name, grid in result.grids.items():
            self.assertEqual(result.axes[name], outputs[name]["axes"])
            np.testing.assert_allclose(grid, np.asarray(outputs[name]["values"]), atol=1e-5,
                                       rtol=1e-5)
            mine = [r["label"] for r in result.top(len(outputs[name]["ranked"]), name)]
            self.assertEqual(mine, [r["component"] for r in outputs[name]["ranked"]])
        top = result.ranked[0]
        g = result.grids[top["grid"]]
        self.assertEqual(abs(top["value"]), np.abs(g).max())
        self.assertRegex(top["label"], r"^L\d+H\d+$")
        del log

    def test_detached_job(self):
        job = self.c.search("lensgrid-tiny", "induction", "detect-heads", n_prompts=4, seq_len=8,
                            detach=True)
        self.assertIsInstance(job, lensgrid.Job)
        buf = io.StringIO()
        self.c.job(job.id).wait(file=buf)
        self.assertIn(job.id, buf.getvalue())
        self.assertEqual(job.state, "succeeded")
        r = job.result()
        self.assertTrue(r.grids)
        self.assertIn(job.id, [j.job_id for j in self.c.jobs()])
        self.assertIn(job.id, [j.job_id for j in self.c.jobs(state="succeeded")])

    def test_bad_input(self):
        with self.assertRaises(lensgrid.Error) as cm:
            self.c.search("lensgrid-tiny", "induction", "no-such-method")
        self.assertIn("ablate-heads", str(cm.exception))
        with self.assertRaises(lensgrid.Error) as cm:
            self.c.search("no-such-model", "induction", "ablate-heads", detach=True)
        self.assertEqual(cm.exception.code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("lensgrid-tiny", cm.exception.details)
        with self.assertRaises(lensgrid.Error) as cm:
            self.c.job("nonexistent").status()
        self.assertEqual(cm.exception.code, grpc.StatusCode.NOT_FOUND)


if __name__ == "__main__":
    unittest.main(verbosity=2)
