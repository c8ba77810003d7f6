#!/usr/bin/python3
"""lensgrid.Coordinator against a real coordinator and worker on loopback: a search's grids
equal `lensgrid search --in-process` on the same model and dataset (within 1e-5), ranked
components, detached jobs (job(id).wait(), result(), jobs()), cancel, bad input as
lensgrid.Error with the gRPC code; a search without a metric uses the CLI's per-dataset default
(the table in client/search_command.cc, and the metric of a job `lensgrid search` submits);
write_output's result.json / result.safetensors / report.html equal `lensgrid result`'s bytes.

usage: coordinator_test.py INSTALL_DIR LENSGRID_COORDINATOR LENSGRID_WORKER LENSGRID SOURCE_DIR
"""
import io
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
        # The coordinator knows the model only once the worker has registered (asynchronously,
        # after it serves): until then a job for an unknown model cannot be refused.
        cls.worker.wait_for_log(r"registered with the coordinator as", timeout=120)
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

    def test_circuit_methods_take_their_parameters(self):
        # path-patch's receivers and eap-ig's steps travel in JobSpec.circuit; the grids equal
        # the CLI's in-process runs of the same parameters.
        for method, kwargs, flags in (
                ("path-patch", {"receivers": ["L1H1.k", "L1H1.q"]},
                 ["--receivers", "L1H1.k,L1H1.q"]),
                ("eap-ig", {"ig_steps": 2}, ["--ig-steps", "2"])):
            with self.subTest(method=method):
                result = self.c.search("lensgrid-tiny", "induction", method, n_prompts=4, seed=2,
                                       seq_len=6, progress=False, **kwargs)
                want = self.in_process("--dataset", "induction", "--method", method,
                                       "--n-prompts", "4", "--seed", "2", "--seq-len", "6", *flags)
                name = want["outputs"][0]["name"]
                np.testing.assert_allclose(result.grids[name],
                                           np.asarray(want["outputs"][0]["values"]), atol=1e-5)
        with self.assertRaises(lensgrid.Error) as err:
            self.c.search("lensgrid-tiny", "induction", "path-patch", n_prompts=2,
                          receivers=["L5H0.k"], progress=False)
        self.assertIn("circuit.receivers[0]", str(err.exception))
        with self.assertRaises(lensgrid.Error) as err:
            self.c.search("lensgrid-tiny", "induction", "acdc", n_prompts=2, progress=False)
        self.assertIn("acdc is driven by its client", str(err.exception))

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

    def test_default_metric_is_the_clis(self):
        # the C++ table (DefaultMetric in client/search_command.cc), parsed
        with open(os.path.join(SOURCE, "client", "search_command.cc")) as f:
            src = f.read()
        body = re.search(r"std::string DefaultMetric\(const std::string& dataset\) \{(.*?)\n\}",
                         src, re.S)
        self.assertIsNotNone(body, "DefaultMetric not found in client/search_command.cc")
        table = dict(re.findall(r'if \(dataset == "([^"]+)"\) return "([^"]+)";', body.group(1)))
        fallback = re.findall(r'^\s*return "([^"]+)";', body.group(1), re.M)
        self.assertEqual(table, lensgrid.coordinator.DATASET_DEFAULT_METRICS)
        self.assertEqual(fallback, [lensgrid.coordinator.FALLBACK_METRIC])
        # every built-in dataset the CLI lists
        help_text = subprocess.run([LENSGRID_BIN, "search", "--help"], capture_output=True,
                                   text=True).stdout
        line = re.search(r"--dataset .*", help_text).group(0)  # "--dataset TEXT ...  a | b"
        datasets = [d.strip() for d in re.split(r"\s{2,}", line)[-1].split("|")
                    if ".jsonl" not in d]
        self.assertIn("induction", datasets)
        for d in datasets:
            self.assertEqual(lensgrid.default_metric(d), table.get(d, fallback[0]), d)
        self.assertEqual(lensgrid.default_metric("my-prompts.jsonl"), "logit-diff")

        # and what each submits: the CLI's job and Python's job carry the same metric
        request_id = "cli-default-metric"
        subprocess.run([LENSGRID_BIN, "search", "--coordinator", self.coord.address, "--model",
                        "lensgrid-tiny", "--dataset", "induction", "--method", "ablate-heads",
                        "--n-prompts", "2", "--seq-len", "4", "--request-id", request_id],
                       check=True, capture_output=True)
        cli_job = [j for j in self.c.jobs() if j.request_id == request_id][0]
        job = self.c.search("lensgrid-tiny", "induction", "ablate-heads", n_prompts=2, seq_len=4,
                            detach=True)
        job.wait(progress=False)
        self.assertEqual(job.status().spec.metric, cli_job.spec.metric)
        self.assertEqual(job.status().spec.metric, lensgrid.v1.search_pb2.METRIC_LOSS)

    def test_write_output_equals_the_cli(self):
        names = ("result.json", "result.safetensors", "report.html")
        mine = os.path.join(self.tmp.name, "py-out")
        result = self.c.search("lensgrid-tiny", "induction", "ablate-heads", n_prompts=4,
                               seq_len=6, progress=False, output=mine, lensgrid_binary=LENSGRID_BIN)
        cli = os.path.join(self.tmp.name, "cli-out")
        subprocess.run([LENSGRID_BIN, "result", result.status.job_id, "--coordinator",
                        self.coord.address, "--output", cli], check=True, capture_output=True)
        # the binary from $LENSGRID_BINARY, through the Job and the SearchResult
        again = os.path.join(self.tmp.name, "env-out")
        old = os.environ.get("LENSGRID_BINARY")
        os.environ["LENSGRID_BINARY"] = LENSGRID_BIN
        try:
            files = self.c.job(result.status.job_id).write_output(again)
            files2 = result.write_output(again + "2")
        finally:
            if old is None:
                del os.environ["LENSGRID_BINARY"]
            else:
                os.environ["LENSGRID_BINARY"] = old
        self.assertEqual(sorted(files), sorted(names))
        self.assertEqual(sorted(files2), sorted(names))
        for name in names:
            with open(os.path.join(cli, name), "rb") as f:
                want = f.read()
            for d in (mine, again, again + "2"):
                with open(os.path.join(d, name), "rb") as f:
                    self.assertEqual(f.read(), want, f"{d}/{name} differs from the CLI's")
        with open(os.path.join(mine, "result.json")) as f:
            self.assertEqual(json.load(f)["metric"], "loss")

        # no CLI: a clear lensgrid.Error
        with self.assertRaises(lensgrid.Error) as cm:
            result.write_output(again, lensgrid_binary=os.path.join(self.tmp.name, "nope"))
        self.assertIn("not an executable", str(cm.exception))
        saved = {k: os.environ.pop(k) for k in ("LENSGRID_BINARY", "PATH") if k in os.environ}
        os.environ["PATH"] = self.tmp.name
        try:
            with self.assertRaises(lensgrid.Error) as cm:
                result.write_output(again)
            self.assertIn("LENSGRID_BINARY", str(cm.exception))
        finally:
            os.environ.update(saved)
        # the CLI's failure, with its message
        with self.assertRaises(lensgrid.Error) as cm:
            self.c.job("job-nonexistent").write_output(again, lensgrid_binary=LENSGRID_BIN)
        self.assertIn("job-nonexistent", str(cm.exception))
        with self.assertRaises(lensgrid.InvalidInputError):
            self.c.search("lensgrid-tiny", "induction", "ablate-heads", detach=True, output=again)


if __name__ == "__main__":
    unittest.main(verbosity=2)
