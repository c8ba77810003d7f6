#!/usr/bin/python3
"""End to end: `lensgrid search --in-process` on a generated checkpoint: the files it writes
(read back with json and numpy only), consistency between them, and bad input.

usage: cli_search_test.py LENSGRID_BINARY
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from safetensors_np import read_safetensors

LENSGRID = None


class CliSearchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = os.path.join(cls.tmp.name, "model")
        subprocess.run([LENSGRID, "init", "--out", cls.model, "--layers", "2", "--heads", "4",
                        "--d-model", "64", "--n-ctx", "128", "--seed", "3"],
                       check=True, capture_output=True)

    def search(self, *args):
        return subprocess.run([LENSGRID, "search", "--model", self.model, "--in-process", *args],
                              capture_output=True, text=True)

    def test_ioi_head_ablation_writes_consistent_files(self):
        out = os.path.join(self.tmp.name, "ioi")
        proc = self.search("--dataset", "ioi", "--method", "ablate-heads", "--ablation", "mean",
                           "--n-prompts", "6", "--output", out)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(os.path.join(out, "result.json")) as f:
            result = json.load(f)
        self.assertEqual((result["method"], result["metric"], result["ablation"]),
                         ("ablate-heads", "logit-diff", "mean"))
        self.assertEqual(len(result["model"]["weights_sha256"]), 64)
        self.assertEqual(result["dataset"]["n_prompts"], 6)
        delta = result["outputs"][0]
        self.assertEqual(delta["axes"], ["layer", "head"])
        values = np.array(delta["values"])
        self.assertEqual(values.shape, (2, 4))
        tensors = read_safetensors(os.path.join(out, "result.safetensors"))
        np.testing.assert_allclose(tensors["delta"], values, rtol=1e-6, atol=1e-7)
        self.assertEqual(tensors["delta.per_prompt"].shape, (6, 2, 4))
        np.testing.assert_allclose(tensors["delta.per_prompt"].mean(0), values, atol=1e-6)
        np.testing.assert_allclose(tensors["baseline"].mean(), result["baseline"], atol=1e-6)
        # Ranked by |delta|, every component once; the printout leads with the top one.
        ranked = delta["ranked"]
        self.assertEqual(len(ranked), 8)
        self.assertEqual(sorted(abs(r["value"]) for r in ranked)[::-1],
                         [abs(r["value"]) for r in ranked])
        self.assertIn(ranked[0]["component"], proc.stdout)

    def test_patching_with_normalisation_and_user_jsonl(self):
        data = os.path.join(self.tmp.name, "data.jsonl")
        with open(data, "w") as f:
            f.write(json.dumps({"prompt": "When Mary and John went to the store, John gave a drink to",
                                "corrupted": "When Alice and Bob went to the store, Carl gave a drink to",
                                "answer": " Mary", "wrong": " John"}) + "\n")
            f.write(json.dumps({"tokens": [50256, 464, 3797, 3332], "corrupted_tokens": [50256, 464, 3290, 3332],
                                "answer": 319, "wrong": 262}) + "\n")
        out = os.path.join(self.tmp.name, "patch")
        proc = self.search("--dataset", data, "--method", "patch-resid", "--normalize",
                           "--output", out)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(os.path.join(out, "result.json")) as f:
            result = json.load(f)
        self.assertEqual(result["delta"], "metric(patched) - metric(corrupted)")
        delta = np.array(result["outputs"][0]["values"])
        self.assertEqual(delta.shape, (2, 15))  # [layer, pos]: BOS + the 14 tokens of line 1
        normalized = np.array(result["outputs"][0]["normalized"])
        np.testing.assert_allclose(normalized * (result["clean"] - result["baseline"]), delta,
                                   atol=1e-5)

    def test_attribution_patching_on_the_exact_methods_grid(self):
        results = {}
        for method in ("patch-heads", "attribute-heads"):
            out = os.path.join(self.tmp.name, method)
            proc = self.search("--dataset", "ioi", "--method", method, "--n-prompts", "4",
                               "--output", out)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            with open(os.path.join(out, "result.json")) as f:
                results[method] = json.load(f)
            results[method]["tensors"] = read_safetensors(os.path.join(out, "result.safetensors"))
        exact, approx = results["patch-heads"], results["attribute-heads"]
        self.assertTrue(approx["delta"].startswith("first-order estimate of metric(patched)"),
                        approx["delta"])
        # The same runs underneath: corrupted baseline, clean reference, and the same grid.
        self.assertAlmostEqual(approx["baseline"], exact["baseline"], places=5)
        self.assertAlmostEqual(approx["clean"], exact["clean"], places=5)
        self.assertEqual(approx["outputs"][0]["axes"], exact["outputs"][0]["axes"])
        self.assertEqual(np.array(approx["outputs"][0]["values"]).shape, (2, 4))
        self.assertEqual(approx["tensors"]["delta.per_prompt"].shape, (4, 2, 4))

    def test_detectors_and_dla(self):
        for method, names in [("detect-heads", ["previous_token", "duplicate_token", "induction"]),
                              ("dla", ["heads", "layers"])]:
            out = os.path.join(self.tmp.name, method)
            dataset = "induction" if method == "detect-heads" else "gender-bias"
            extra = ["--metric", "logit-diff"] if method == "dla" else []
            proc = self.search("--dataset", dataset, "--method", method, "--n-prompts", "3",
                               "--output", out, *extra)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            with open(os.path.join(out, "result.json")) as f:
                self.assertEqual([o["name"] for o in json.load(f)["outputs"]], names)

    def test_bad_input_is_a_clear_error(self):
        bad = os.path.join(self.tmp.name, "bad.jsonl")
        with open(bad, "w") as f:
            f.write('{"tokens": [1, 2], "answer": 3, "wrong": 4}\n{"tokens": [1, 2], "answer": 3\n')
        multi = os.path.join(self.tmp.name, "multi.jsonl")
        with open(multi, "w") as f:
            f.write('{"prompt": "Hello", "answer": " Mary Poppins", "wrong": " John"}\n')
        empty = os.path.join(self.tmp.name, "empty.jsonl")
        open(empty, "w").close()
        cases = [
            (["--dataset", bad, "--method", "ablate-heads"], "bad.jsonl:2: not a JSON object"),
            (["--dataset", multi, "--method", "ablate-heads"], "multi.jsonl:1: \"answer\""),
            (["--dataset", empty, "--method", "ablate-heads"], "has no prompts"),
            (["--dataset", "ioi", "--method", "ablate-everything"], "unknown method"),
            (["--dataset", "ioi", "--method", "ablate-heads", "--metric", "accuracy"],
             "unknown metric"),
            (["--dataset", "induction", "--method", "ablate-heads", "--seq-len", "200"],
             "n_positions"),
            (["--dataset", bad.replace("bad", "nope"), "--method", "ablate-heads"],
             "cannot read dataset file"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                proc = self.search(*args)
                self.assertNotEqual(proc.returncode, 0, proc.stdout)
                self.assertIn(message, proc.stderr)
        for where in (["--local", "2", "--coordinator", "127.0.0.1:1"], ["--local", "0"], []):
            with self.subTest(where=where):
                proc = subprocess.run([LENSGRID, "search", "--model", self.model, "--dataset",
                                       "ioi", "--method", "ablate-heads", *where],
                                      capture_output=True, text=True)
                self.assertEqual(proc.returncode, 2)
                self.assertIn("say where to run, once", proc.stderr)
        proc = subprocess.run([LENSGRID, "search", "--model", self.model, "--dataset", "ioi",
                               "--method", "ablate-heads", "--coordinator", "nonsense"],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("is not HOST:PORT", proc.stderr)


if __name__ == "__main__":
    LENSGRID = sys.argv.pop(1)
    unittest.main()
