#!/usr/bin/python3
"""End to end: the real `lensgrid` binary on a checkpoint written by the independent
reference (tests/reference/hf_gpt2.py); its --output file is read back with numpy only.

usage: cli_run_test.py LENSGRID_BINARY
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "reference", "hf_gpt2.py")
LENSGRID = None
NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors_numpy(path):
    """A reader written against the format spec, with numpy only (as a Python user would)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + begin:8 + n + end],
                                  dtype=NUMPY_DTYPES[info["dtype"]]).reshape(info["shape"])
    return out, meta


class CliRunTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = os.path.join(cls.tmp.name, "model")
        subprocess.run([sys.executable, REFERENCE, "--out", cls.model, "--n-layer", "2",
                        "--n-head", "4", "--n-embd", "64", "--vocab", "101", "--seed", "11"],
                       check=True, capture_output=True)
        cls.ref, _ = read_safetensors_numpy(os.path.join(cls.model, "reference.safetensors"))

    def run_cli(self, *args):
        return subprocess.run([LENSGRID, "run", "--model", self.model, *args],
                              capture_output=True, text=True)

    def test_output_file_matches_reference(self):
        tokens = self.ref["tokens"][0]
        out_path = os.path.join(self.tmp.name, "out.safetensors")
        proc = self.run_cli("--tokens", ",".join(str(t) for t in tokens), "--no-processing",
                            "--cache", r"hook_(resid_pre|attn_out|mlp_out)$", "--output", out_path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        got, meta = read_safetensors_numpy(out_path)
        self.assertEqual(got["logits"].dtype, np.float32)
        self.assertEqual(got["logits"].shape, (1, len(tokens), 101))
        np.testing.assert_allclose(got["logits"][0], self.ref["logits"][0], atol=1e-4)
        for layer in range(2):
            for hook in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out"):
                name = f"blocks.{layer}.{hook}"
                np.testing.assert_allclose(got[name][0], self.ref[name][0], atol=1e-4,
                                           err_msg=name)
        self.assertEqual(meta["processed"], "false")
        self.assertEqual(meta["tokens"], ",".join(str(t) for t in tokens))
        # Printed loss is the reference's loss of that row.
        logits = self.ref["logits"][0].astype(np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
            - logits.max(-1, keepdims=True)
        loss = -np.mean(logp[np.arange(len(tokens) - 1), tokens[1:]])
        self.assertIn(f"loss: {loss:.4f}", proc.stdout)
        self.assertIn("blocks.1.hook_mlp_out [1, 7, 64]", proc.stdout)

    def test_stop_at_layer_writes_cache_only(self):
        out_path = os.path.join(self.tmp.name, "stop.safetensors")
        proc = self.run_cli("--tokens", "1,2,3", "--stop-at-layer", "1", "--cache",
                            "resid_pre", "--output", out_path)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        got, _ = read_safetensors_numpy(out_path)
        self.assertEqual(sorted(got), ["blocks.0.hook_resid_pre"])
        self.assertIn("stopped before layer 1", proc.stdout)

    def test_bad_input_is_a_clear_error(self):
        cases = [
            (["--tokens", "1,2,101"], "token id 101 at [0, 2] is outside the vocabulary"),
            (["--tokens", "1,,2"], "--tokens item 1"),
            (["--tokens", ",".join(["1"] * 33)], "longer than the model's n_positions (32)"),
            (["--tokens", "1,2", "--cache", "hook_patern("], "bad names regex \"hook_patern(\" at offset"),
            (["--tokens", "1,2", "--stop-at-layer", "9"], "stop_at_layer 9 out of range"),
            (["--tokens", "1,2", "--device", "cuda:0"], "cuda"),
            ([], "give --prompt TEXT or --tokens IDS"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                proc = self.run_cli(*args)
                self.assertNotEqual(proc.returncode, 0)
                self.assertIn(message, proc.stderr)
                self.assertNotIn("terminate called", proc.stderr)

    def test_missing_config_field_and_corrupt_weights(self):
        broken = os.path.join(self.tmp.name, "broken")
        os.makedirs(broken, exist_ok=True)
        with open(os.path.join(self.model, "config.json")) as f:
            cfg = json.load(f)
        del cfg["n_positions"], cfg["n_ctx"]
        with open(os.path.join(broken, "config.json"), "w") as f:
            json.dump(cfg, f)
        proc = subprocess.run([LENSGRID, "run", "--model", broken, "--tokens", "1"],
                              capture_output=True, text=True)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("\"n_positions\" is missing", proc.stderr)

        with open(os.path.join(self.model, "config.json")) as f:
            good_cfg = f.read()
        with open(os.path.join(broken, "config.json"), "w") as f:
            f.write(good_cfg)
        with open(os.path.join(self.model, "model.safetensors"), "rb") as f:
            data = f.read()
        with open(os.path.join(broken, "model.safetensors"), "wb") as f:
            f.write(data[: len(data) // 3])
        proc = subprocess.run([LENSGRID, "run", "--model", broken, "--tokens", "1"],
                              capture_output=True, text=True)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("out of range", proc.stderr)


if __name__ == "__main__":
    LENSGRID = sys.argv.pop(1)
    unittest.main()
