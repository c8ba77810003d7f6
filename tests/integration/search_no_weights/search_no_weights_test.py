#!/usr/bin/python3
"""Clients need no weights: `lensgrid search --coordinator ADDR --model ID` submits a search
knowing only the coordinator's address and a model id.

A real coordinator and one real worker on the embedded model (models/lensgrid-tiny); the client
runs in an empty working dir with HOME and the Hugging Face cache pointed at empty dirs, so no
model file can be found. Checks:
  - a built-in dataset: result.json / result.safetensors equal the --in-process run on the model
    dir (1e-5 per value), and report.html has the same attention patterns (from the worker);
    `lensgrid result JOB` writes the same; the empty dirs stay empty;
  - a JSONL dataset (text and token prompts), equal to the in-process run;
  - --local 1 --model DIR: equal to the in-process run;
  - --model no-such-model exits non-zero naming the ids the workers serve;
  - a --weights-sha256 pin no worker has fails (the coordinator's --model-wait-ms) saying so;
  - a worker whose Worker API cannot be reached: everything but the attention patterns.
Nothing here asserts a duration: deadlines only guard against hangs.

usage: search_no_weights_test.py COORDINATOR WORKER LENSGRID PYTHONPATH
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import numpy as np

# Absolute: the client runs in an empty working dir.
COORDINATOR_BIN, WORKER_BIN, LENSGRID_BIN, PY_DIR = map(os.path.abspath, sys.argv[1:5])
del sys.argv[1:5]
sys.path.insert(0, PY_DIR)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cluster"))
sys.path.insert(0, os.path.join(HERE, "..", "worker"))
sys.path.insert(0, os.path.join(HERE, ".."))

import grpc  # noqa: E402
from lensgrid.v1 import coordinator_pb2 as cpb, coordinator_pb2_grpc as cpb_grpc  # noqa: E402
from cluster_harness import CoordinatorProcess, wait_for  # noqa: E402
from safetensors_np import read_safetensors  # noqa: E402
from worker_harness import WorkerProcess  # noqa: E402

TINY = os.path.abspath(os.path.join(HERE, "..", "..", "..", "models", "lensgrid-tiny"))
HANG = 600  # seconds; only guards against a hang
ATOL = 1e-5
SEARCH = ["--dataset", "induction", "--method", "ablate-heads", "--n-prompts", "6",
          "--threads", "1"]


def report_data(out_dir):
    """The JSON object report.html draws from."""
    with open(os.path.join(out_dir, "report.html")) as f:
        html = f.read()
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def close(got, want, path):
    """Every number within ATOL, everything else equal."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), \
            f"{path}: keys {sorted(got) if isinstance(got, dict) else got} != {sorted(want)}"
        for k in want:
            close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) or isinstance(got, float):
        assert abs(got - want) <= ATOL, f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


class SearchNoWeightsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.coordinator = CoordinatorProcess(COORDINATOR_BIN, os.path.join(cls.tmp.name, "state"),
                                             "--model-wait-ms", "2000")
        cls.worker = None
        try:
            cls.worker = WorkerProcess(WORKER_BIN, TINY, "--coordinator", cls.coordinator.address,
                                       "--threads", "1", "--name", "w0")
            cls.model_id = wait_for(cls.registered_model, HANG, "the worker to register")
            cls.weights = WorkerProcess.weights_sha256(TINY)
        except BaseException:
            cls.tearDownClass()
            raise
        cls.references = {}

    @classmethod
    def tearDownClass(cls):
        if cls.worker is not None:
            cls.worker.stop()
        cls.coordinator.stop()
        cls.tmp.cleanup()

    @classmethod
    def registered_model(cls):
        """The model id of the live worker, once it has registered (else None)."""
        with grpc.insecure_channel(cls.coordinator.address) as channel:
            workers = cpb_grpc.CoordinatorStub(channel).ListWorkers(cpb.ListWorkersRequest(),
                                                                    timeout=10).workers
        alive = [w.model_id for w in workers if w.alive]
        return alive[0] if alive else None

    # --- helpers -------------------------------------------------------------------------
    def empty_client(self):
        """An environment in which no model file can be found: empty cwd, HOME and caches."""
        root = tempfile.mkdtemp(dir=self.tmp.name, prefix="client-")
        dirs = {name: os.path.join(root, name) for name in ("cwd", "home", "hf", "xdg")}
        for d in dirs.values():
            os.mkdir(d)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HF_", "HUGGINGFACE", "LENSGRID_", "XDG_"))}
        env.update(HOME=dirs["home"], HF_HOME=dirs["hf"], HF_HUB_CACHE=os.path.join(dirs["hf"],
                                                                                     "hub"),
                   XDG_CACHE_HOME=dirs["xdg"])
        return dirs, env

    def run_client(self, args, dirs, env):
        return subprocess.run([LENSGRID_BIN, *args], cwd=dirs["cwd"], env=env,
                              capture_output=True, text=True, timeout=HANG)

    def assert_still_empty(self, dirs):
        for name, d in dirs.items():
            found = [os.path.join(r, f) for r, _, files in os.walk(d) for f in files]
            self.assertEqual(found, [], f"the client wrote into its empty {name} dir")

    def in_process(self, *args):
        if args not in self.references:
            out = os.path.join(self.tmp.name, f"ref-{len(self.references)}")
            proc = subprocess.run([LENSGRID_BIN, "search", "--model", TINY, *args, "--in-process",
                                   "--output", out], capture_output=True, text=True, timeout=HANG)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.references[args] = out
        return self.references[args]

    def out_dir(self, name):
        return os.path.join(tempfile.mkdtemp(dir=self.tmp.name, prefix="out-"), name)

    def assert_same_output(self, out, ref, dataset_name=None):
        got, want = read_safetensors(os.path.join(out, "result.safetensors")), \
            read_safetensors(os.path.join(ref, "result.safetensors"))
        self.assertEqual(sorted(got), sorted(want))
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=ATOL, err_msg=name)
        with open(os.path.join(out, "result.json")) as f:
            got_json = json.load(f)
        with open(os.path.join(ref, "result.json")) as f:
            want_json = json.load(f)
        for key in ("method", "metric", "ablation", "delta", "baseline", "clean"):
            if key in want_json or key in got_json:
                close(got_json.get(key), want_json.get(key), key)
        # Ranked lists may swap components whose values tie within float noise.
        for g, w in zip(got_json["outputs"], want_json["outputs"]):
            ranked = {r["component"]: r["value"] for r in g.pop("ranked")}
            want_ranked = {r["component"]: r["value"] for r in w.pop("ranked")}
            close(ranked, want_ranked, f"outputs[{w['name']}].ranked")
        close(got_json["outputs"], want_json["outputs"], "outputs")
        model, want_model = got_json["model"], want_json["model"]
        for key in ("weights_sha256", "n_layers", "n_heads", "attn_only", "processed"):
            self.assertEqual(model[key], want_model[key], f"model.{key}")
        self.assertEqual(model["weights_sha256"], self.weights)
        dataset, want_dataset = got_json["dataset"], want_json["dataset"]
        for key in ("n_prompts", "seed", "seq_len", "positions"):
            self.assertEqual(dataset[key], want_dataset[key], f"dataset.{key}")
        self.assertEqual(dataset["name"], dataset_name or want_dataset["name"])
        # The attention patterns: the same heads, tokens and weights, from the worker.
        views = report_data(out)["attention"]["views"]
        want_views = report_data(ref)["attention"]["views"]
        self.assertTrue(want_views)
        self.assertEqual([(v["layer"], v["head"], v["tokens"]) for v in views],
                         [(v["layer"], v["head"], v["tokens"]) for v in want_views])
        for v, w in zip(views, want_views):
            np.testing.assert_allclose(np.array(v["pattern"], dtype=float),
                                       np.array(w["pattern"], dtype=float), rtol=0, atol=ATOL)
        return got_json

    # --- tests ---------------------------------------------------------------------------
    def test_builtin_dataset_equals_in_process(self):
        ref = self.in_process(*SEARCH)
        dirs, env = self.empty_client()
        out = self.out_dir("induction")
        proc = self.run_client(["search", "--coordinator", self.coordinator.address, "--model",
                                self.model_id, *SEARCH, "--output", out], dirs, env)
        self.assertEqual(proc.returncode, 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        self.assertNotIn("no attention patterns", proc.stderr)
        result = self.assert_same_output(out, ref)
        self.assertEqual(result["model"]["id"], self.model_id)
        self.assertEqual(result["run"]["where"], "coordinator")

        # `lensgrid result JOB` reads the job's status, not the client's notes.
        again = self.out_dir("again")
        proc = self.run_client(["result", result["run"]["job_id"], "--coordinator",
                                self.coordinator.address, "--output", again], dirs, env)
        self.assertEqual(proc.returncode, 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        self.assertNotIn("no attention patterns", proc.stdout)
        self.assert_same_output(again, ref)
        self.assert_still_empty(dirs)

    def test_jsonl_dataset_equals_in_process(self):
        data = os.path.join(self.tmp.name, "prompts.jsonl")
        with open(data, "w") as f:
            f.write(json.dumps({"prompt": "the cat sat on the mat", "answer": 64,
                                "wrong": 65}) + "\n")
            f.write(json.dumps({"tokens": [306, 83, 71, 68, 83, 71], "answer": 68,
                                "wrong": 69}) + "\n")
            f.write(json.dumps({"tokens": [306, 40, 41, 42, 40, 41, 42, 40], "answers": [41],
                                "wrongs": [43, 44]}) + "\n")
        args = ("--dataset", data, "--method", "ablate-heads", "--threads", "1")
        ref = self.in_process(*args)
        dirs, env = self.empty_client()
        out = self.out_dir("jsonl")
        proc = self.run_client(["search", "--coordinator", self.coordinator.address, "--model",
                                self.model_id, *args, "--output", out], dirs, env)
        self.assertEqual(proc.returncode, 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        self.assert_same_output(out, ref, dataset_name="prompts.jsonl")
        self.assert_still_empty(dirs)

    def test_local_cluster_equals_in_process(self):
        ref = self.in_process(*SEARCH)
        dirs, env = self.empty_client()
        out = self.out_dir("local")
        proc = self.run_client(["search", "--local", "1", "--model", TINY, *SEARCH, "--output",
                                out], dirs, env)
        self.assertEqual(proc.returncode, 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        result = self.assert_same_output(out, ref)
        self.assertEqual(result["model"]["id"], "lensgrid-tiny")
        self.assertEqual(result["model"]["dir"], TINY)
        self.assertEqual(result["run"]["where"], "local")

    def test_without_a_reachable_worker_api_the_report_has_no_patterns(self):
        """A worker whose advertised Worker API cannot be reached: the search still succeeds
        and writes everything but the attention patterns, with a note saying so."""
        coordinator = CoordinatorProcess(COORDINATOR_BIN, os.path.join(self.tmp.name, "state-2"))
        worker = None
        try:
            worker = WorkerProcess(WORKER_BIN, TINY, "--coordinator", coordinator.address,
                                   "--threads", "1", "--name", "unreachable",
                                   "--advertise", "127.0.0.1:1")
            dirs, env = self.empty_client()
            out = self.out_dir("no-views")
            proc = self.run_client(["search", "--coordinator", coordinator.address, "--model",
                                    self.model_id, *SEARCH, "--output", out], dirs, env)
        finally:
            if worker is not None:
                worker.stop()
            coordinator.stop()
        self.assertEqual(proc.returncode, 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        self.assertIn("report.html has no attention patterns", proc.stderr)
        self.assertIn("127.0.0.1:1", proc.stderr)
        self.assertEqual(report_data(out)["attention"]["views"], [])
        ref = self.in_process(*SEARCH)
        got = read_safetensors(os.path.join(out, "result.safetensors"))
        want = read_safetensors(os.path.join(ref, "result.safetensors"))
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=ATOL, err_msg=name)

    def test_unknown_model_names_the_served_ids(self):
        dirs, env = self.empty_client()
        proc = self.run_client(["search", "--coordinator", self.coordinator.address, "--model",
                                "no-such-model", *SEARCH], dirs, env)
        self.assertNotEqual(proc.returncode, 0, proc.stdout)
        self.assertIn("NOT_FOUND", proc.stderr)
        self.assertIn("no-such-model", proc.stderr)
        self.assertIn(self.model_id, proc.stderr)

    def test_a_pin_no_worker_has_fails(self):
        dirs, env = self.empty_client()
        pin = "0" * 64
        proc = self.run_client(["search", "--coordinator", self.coordinator.address, "--model",
                                self.model_id, "--weights-sha256", pin, *SEARCH], dirs, env)
        self.assertNotEqual(proc.returncode, 0, proc.stdout)
        self.assertIn("FAILED_PRECONDITION", proc.stderr)
        self.assertRegex(proc.stderr, r"(?i)no (live )?worker serve")
        self.assertIn(pin[:12], proc.stderr)


if __name__ == "__main__":
    unittest.main()
