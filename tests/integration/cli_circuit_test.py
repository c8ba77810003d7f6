#!/usr/bin/python3
"""End to end: circuit discovery from the command line on the embedded model (models/lensgrid-tiny):
eap, eap-ig, path-patch and circuit-faithfulness in this process and on `--local 2` (a real
coordinator and two workers, several shards), their files (result.json's "circuit",
result.safetensors, circuit.dot) checked against each other with numpy, and bad input.

usage: cli_circuit_test.py LENSGRID_BINARY MODEL_DIR
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from safetensors_np import read_safetensors

LENSGRID = None
MODEL = None
COMMON = ["--dataset", "induction", "--n-prompts", "8", "--seq-len", "6", "--threads", "1"]


class CliCircuitTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    def search(self, where, *args):
        return subprocess.run([LENSGRID, "search", "--model", MODEL, *where, *COMMON, *args],
                              capture_output=True, text=True, timeout=600)

    def run_ok(self, name, where, *args):
        out = os.path.join(self.tmp.name, name)
        proc = self.search(where, *args, "--output", out)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(os.path.join(out, "result.json")) as f:
            result = json.load(f)
        return out, proc, result, read_safetensors(os.path.join(out, "result.safetensors"))

    def test_eap_circuit_files_agree_and_local_equals_in_process(self):
        out, proc, result, tensors = self.run_ok("eap", ["--in-process"], "--method", "eap",
                                                 "--top-k", "12")
        circuit = result["circuit"]
        edges = circuit["edges"]
        # lensgrid-tiny: 2 layers x 4 heads, attention only: 81 edges, named by the graph.
        self.assertEqual(len(edges), 81)
        self.assertEqual(result["outputs"][0]["axes"], ["edge"])
        self.assertEqual(edges[0]["name"], "embed -> L0H0.q")
        self.assertEqual(edges[-1]["name"], "L1H3 -> logits")
        scores = np.array([e["score"] for e in edges])
        np.testing.assert_allclose(tensors["scores"], scores, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(tensors["scores.per_prompt"].mean(0), scores, atol=1e-6)
        # The circuit is the 12 largest |score|, recomputed here.
        top = set(np.argsort(-np.abs(scores), kind="stable")[:12])
        kept = {i for i, e in enumerate(edges) if e["kept"]}
        self.assertEqual(kept, top)
        self.assertEqual(circuit["kept"], 12)
        np.testing.assert_array_equal(tensors["circuit.kept"], [e["kept"] for e in edges])
        # Faithfulness: the circuit's metric, with fraction and normalized from it.
        f = circuit["faithfulness"]
        self.assertAlmostEqual(f["full"], result["baseline"], places=5)
        self.assertAlmostEqual(f["corrupted"], result["corrupted"], places=5)
        self.assertAlmostEqual(f["fraction"], f["circuit"] / f["full"], places=6)
        self.assertAlmostEqual(f["normalized"],
                               (f["circuit"] - f["corrupted"]) / (f["full"] - f["corrupted"]),
                               places=6)
        self.assertIn("faithfulness:", proc.stdout)
        with open(os.path.join(out, "circuit.dot")) as dot:
            text = dot.read()
        self.assertTrue(text.startswith("digraph circuit {"))
        self.assertEqual(len(re.findall(r'" -> "', text)), 12)
        # The same search on two workers, cut into shards of 2 prompts, merges to the same.
        _, _, remote, remote_tensors = self.run_ok("eap-local", ["--local", "2"], "--method",
                                                   "eap", "--top-k", "12",
                                                   "--prompts-per-shard", "2")
        np.testing.assert_allclose(remote_tensors["scores.per_prompt"],
                                   tensors["scores.per_prompt"], atol=1e-5)
        self.assertEqual([e["kept"] for e in remote["circuit"]["edges"]],
                         [e["kept"] for e in edges])
        for key in ("circuit", "full", "corrupted"):
            self.assertAlmostEqual(remote["circuit"]["faithfulness"][key], f[key], places=4)
        self.assertEqual(remote["run"]["where"], "local")
        self.assertIn("faithfulness_job_id", remote["run"])

        # circuit-faithfulness of the same circuit, given as a file of edge names.
        edge_file = os.path.join(self.tmp.name, "circuit.txt")
        with open(edge_file, "w") as ef:
            ef.write("# the eap circuit\n\n")
            for e in edges:
                if e["kept"]:
                    ef.write(e["name"] + "\n")
        for where in (["--in-process"], ["--local", "2"]):
            with self.subTest(where=where):
                _, _, given, _ = self.run_ok("faith-" + where[0][2:], where, "--method",
                                             "circuit-faithfulness", "--edges", edge_file)
                got = given["circuit"]["faithfulness"]
                for key in ("circuit", "full", "corrupted"):
                    self.assertAlmostEqual(got[key], f[key], places=4)
                self.assertEqual(given["circuit"]["kept"], 12)

    def test_eap_ig_and_path_patch_local_equal_in_process(self):
        for args in (["--method", "eap-ig", "--ig-steps", "3", "--threshold", "0.05"],
                     ["--method", "path-patch", "--receivers", "L1H1.k,L1H1.q"],
                     ["--method", "path-patch"]):
            with self.subTest(args=args):
                _, _, here, t_here = self.run_ok("a", ["--in-process"], *args)
                _, _, there, t_there = self.run_ok("b", ["--local", "2"], *args,
                                                   "--prompts-per-shard", "3")
                name = here["outputs"][0]["name"]
                np.testing.assert_allclose(t_there[name + ".per_prompt"],
                                           t_here[name + ".per_prompt"], atol=1e-5)
                self.assertAlmostEqual(here["baseline"], there["baseline"], places=5)
        # path-patch to the logits: L1H1 (the induction head) moves the loss most.
        _, _, pp, _ = self.run_ok("pp", ["--in-process"], "--method", "path-patch")
        self.assertEqual(pp["outputs"][0]["ranked"][0]["component"], "L1H1")
        # eap-ig records its steps; the threshold chose the circuit.
        _, _, ig, _ = self.run_ok("ig", ["--in-process"], "--method", "eap-ig", "--ig-steps", "3",
                                  "--threshold", "0.05")
        self.assertEqual(ig["ig_steps"], 3)
        for e in ig["circuit"]["edges"]:
            self.assertEqual(e["kept"], abs(e["score"]) >= 0.05, e["name"])

    def test_acdc_recovers_the_compiled_circuit_in_process_and_on_workers(self):
        # models/induction-compiled: a model whose circuit is known by construction.
        compiled = os.path.join(os.path.dirname(MODEL), "induction-compiled")
        with open(os.path.join(compiled, "true_edges.txt")) as f:
            truth = {line.strip() for line in f if line.strip() and not line.startswith("#")}
        results = {}
        for where in (["--in-process"], ["--local", "2"]):
            out = os.path.join(self.tmp.name, "acdc" + where[0])
            proc = subprocess.run([LENSGRID, "search", "--model", compiled, *where, "--dataset",
                                   "induction", "--n-prompts", "12", "--seq-len", "10",
                                   "--method", "acdc", "--threshold", "0.16", "--threads", "1",
                                   "--components-per-shard", "3", "--output", out],
                                  capture_output=True, text=True, timeout=600)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertIn("acdc: iteration 1/25 (logits)", proc.stderr)
            with open(os.path.join(out, "result.json")) as f:
                results[where[0]] = json.load(f)
        here, there = results["--in-process"], results["--local"]
        kept = {e["name"] for e in here["circuit"]["edges"] if e["kept"]}
        self.assertEqual(kept, truth)
        self.assertEqual([e["kept"] for e in there["circuit"]["edges"]],
                         [e["kept"] for e in here["circuit"]["edges"]])
        np.testing.assert_allclose([e["score"] for e in there["circuit"]["edges"]],
                                   [e["score"] for e in here["circuit"]["edges"]], atol=1e-4)
        self.assertEqual(here["metric"], "kl")  # acdc's default
        self.assertGreater(here["circuit"]["faithfulness"]["normalized"], 0.99)
        # One job per iteration that ran a step, and the faithfulness job.
        self.assertGreater(there["run"]["jobs"], 2)

    def test_every_method_finds_the_embedded_models_induction_circuit(self):
        # lensgrid-tiny (MODEL_CARD.md): previous-token head L0H1, induction head L1H1. The
        # K-composition edge L0H1 -> L1H1.k is in each method's circuit, and the induction
        # head's output to the logits too; path patching into L1H1's key singles out L0H1.
        where = ["--in-process"]
        common = ["--dataset", "induction", "--n-prompts", "16", "--seq-len", "16"]
        for args in (["--method", "eap", "--top-k", "10"],
                     ["--method", "eap-ig", "--top-k", "10"],
                     ["--method", "acdc", "--threshold", "0.5"]):
            with self.subTest(args=args):
                out = os.path.join(self.tmp.name, "tiny-" + args[1])
                proc = subprocess.run([LENSGRID, "search", "--model", MODEL, *where, *common,
                                       *args, "--output", out], capture_output=True, text=True,
                                      timeout=600)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                with open(os.path.join(out, "result.json")) as f:
                    circuit = json.load(f)["circuit"]
                kept = {e["name"] for e in circuit["edges"] if e["kept"]}
                self.assertIn("L0H1 -> L1H1.k", kept)
                self.assertIn("L1H1 -> logits", kept)
                # The circuit recovers most of the model's behaviour.
                self.assertGreater(circuit["faithfulness"]["normalized"], 0.5)
        out = os.path.join(self.tmp.name, "tiny-path")
        proc = subprocess.run([LENSGRID, "search", "--model", MODEL, *where, *common, "--method",
                               "path-patch", "--receivers", "L1H1.k", "--output", out],
                              capture_output=True, text=True, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(os.path.join(out, "result.json")) as f:
            ranked = json.load(f)["outputs"][0]["ranked"]
        self.assertEqual(ranked[0]["component"], "L0H1")
        self.assertGreater(abs(ranked[0]["value"]), 10 * abs(ranked[1]["value"]))

    def test_bad_input_is_a_clear_error(self):
        bad_edges = os.path.join(self.tmp.name, "bad_edges.txt")
        with open(bad_edges, "w") as f:
            f.write("L0H1 -> L1H1.k\nL0H1 -> L1H9.k\n")
        cases = [
            (["--method", "path-patch", "--receivers", "L9H1.k"], "circuit.receivers[0]"),
            (["--method", "path-patch", "--receivers", "embed"], "receive"),
            (["--method", "eap-ig", "--ig-steps", "0"], "--ig-steps"),
            (["--method", "eap", "--ig-steps", "4"], "--ig-steps is for --method eap-ig"),
            (["--method", "eap", "--threshold", "-1"], "--threshold"),
            (["--method", "eap", "--top-k", "3", "--threshold", "0.1"], "not both"),
            (["--method", "patch-heads", "--top-k", "3"], "--top-k and --threshold are for"),
            (["--method", "circuit-faithfulness"], "needs --edges FILE"),
            (["--method", "circuit-faithfulness", "--edges", bad_edges], "bad_edges.txt:2:"),
            (["--method", "acdc"], "needs --threshold"),
            (["--method", "acdc", "--threshold", "0.1", "--top-k", "3"], "--top-k is for"),
            (["--method", "acdc-step"], "run --method acdc"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                proc = self.search(["--in-process"], *args)
                self.assertNotEqual(proc.returncode, 0, proc.stdout)
                self.assertIn(message, proc.stderr)
        # Through a coordinator: refused when the job is planned, before any shard runs.
        proc = self.search(["--local", "1"], "--method", "path-patch", "--receivers", "L9H1.k")
        self.assertNotEqual(proc.returncode, 0, proc.stdout)
        self.assertIn("circuit.receivers[0]", proc.stderr)
        self.assertIn("INVALID_ARGUMENT", proc.stderr)


if __name__ == "__main__":
    LENSGRID = sys.argv.pop(1)
    MODEL = sys.argv.pop(1)
    unittest.main()
