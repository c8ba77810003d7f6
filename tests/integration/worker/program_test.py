#!/usr/bin/python3
"""Hook programs and gradients over the wire, against a real lensgrid-worker.

The worker serves an unprocessed Hugging Face checkpoint written by the independent float64
reference (tests/reference/hf_gpt2.py), so gradients are checked against PyTorch autograd
through that reference on the same weights. Programs are checked against the worker's own
PATCH intervention and numpy; bad programs against their status codes and messages, with the
worker still serving; `lensgrid run --program FILE.json` in this process and on the worker.

usage: program_test.py LENSGRID_WORKER_BINARY LENSGRID_BINARY PYTHONPATH_DIR SOURCE_DIR
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

WORKER_BIN, LENSGRID_BIN, PY_DIR, SOURCE_DIR = sys.argv[1:5]
del sys.argv[1:5]
sys.path.insert(0, PY_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "reference"))

import grpc  # noqa: E402
import torch  # noqa: E402
import hf_gpt2  # noqa: E402
import lensgrid  # noqa: E402
from lensgrid import WorkerError  # noqa: E402
from worker_harness import WorkerProcess  # noqa: E402

C = grpc.StatusCode
TOKENS = [[5, 17, 33, 2, 91, 40, 7], [60, 3, 3, 81, 12, 9, 44]]
PATCH = [[5, 17, 34, 2, 90, 41, 7], [61, 3, 4, 81, 12, 8, 44]]
ANSWER, WRONG = 13, 29


def program(hook, nodes, output="", saves=()):
    return {"hook": hook, "nodes": nodes, "output": output,
            "saves": [{"name": n, "node": v} for n, v in saves]}


def node(id_, **op):
    return {"id": id_, **op}


class ProgramTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model_dir = os.path.join(cls.tmp.name, "ref")
        subprocess.run([sys.executable, os.path.join(SOURCE_DIR, "tests/reference/hf_gpt2.py"),
                        "--out", cls.model_dir, "--n-layer", "2", "--n-head", "4", "--n-embd",
                        "64", "--vocab", "101", "--seed", "4"], check=True, capture_output=True)
        cls.worker = WorkerProcess(WORKER_BIN, cls.model_dir, "--no-processing",
                                   "--max-einsum-elements", "100000",
                                   "--max-program-bytes", "200000", "--threads", "1")
        cls.client = lensgrid.Worker(cls.worker.address)
        cls.client.wait_ready()
        weights, _ = hf_gpt2.read_safetensors(os.path.join(cls.model_dir, "model.safetensors"))
        cls.weights = {k[len("transformer."):] if k.startswith("transformer.") else k: v
                       for k, v in weights.items()}
        with open(os.path.join(cls.model_dir, "config.json")) as f:
            cls.cfg = json.load(f)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.worker.stop()
        cls.tmp.cleanup()

    def run_programs(self, programs, **kw):
        return self.client.run_with_interventions(np.array(TOKENS), programs=programs, **kw)

    def test_a_program_patching_a_head_equals_the_patch_intervention(self):
        hook = "blocks.1.attn.hook_z"
        patch_head = program(hook, [
            node("z", activation={}),
            node("clean", hook={"name": hook, "from_patch_run": True}),
            node("h", index={"input": "clean", "region": [{"all": True}, {"all": True},
                                                          {"at": -2}]}),
            node("out", write={"target": "z", "value": "h",
                               "region": [{"all": True}, {"all": True}, {"at": 2}]})], "out")
        got = self.run_programs([patch_head], patch_input=np.array(PATCH))
        want = self.client.run_with_interventions(
            np.array(TOKENS), [{"hook": hook, "head": 2, "op": "patch"}],
            patch_input=np.array(PATCH))
        np.testing.assert_array_equal(got.logits, want.logits)
        plain = self.client.run_with_interventions(np.array(TOKENS))
        self.assertGreater(np.abs(got.logits - plain.logits).max(), 1e-4)

    def test_saved_values_come_back_by_name(self):
        resid = "blocks.0.hook_resid_post"
        probe = program(resid, [
            node("x", activation={}),
            node("d", values={"shape": [64], "values": [float(i % 7 - 3) for i in range(64)]}),
            node("onto", project={"mode": "ONTO", "input": "x", "direction": "d"}),
            node("n", reduce={"op": "REDUCE_NORM", "input": "onto", "axes": [-1]}),
            node("big", elementwise={"op": "GT", "inputs": ["n", "n"]})],
            saves=[("norm", "n"), ("flag", "big")])
        r = self.client.run_with_interventions(np.array(TOKENS), programs=[probe], names=[resid])
        x = r[resid].astype(np.float64)
        d = np.array([i % 7 - 3 for i in range(64)], np.float64)
        want = np.linalg.norm((x @ d)[..., None] / (d @ d) * d, axis=-1)
        np.testing.assert_allclose(r["saved:norm"], want, rtol=1e-5)
        self.assertEqual(r["saved:flag"].dtype, np.bool_)
        self.assertFalse(r["saved:flag"].any())

    def reference_grads(self, names, tokens=TOKENS):
        """d mean logit diff / d activation, by PyTorch autograd through the reference."""
        w = {k: v.to(torch.float64).requires_grad_(k == "wte.weight")
             for k, v in self.weights.items()}
        out = hf_gpt2.forward(w, self.cfg, torch.tensor(tokens))
        logits = out["logits"][:, -1]
        metric = (logits[:, ANSWER] - logits[:, WRONG]).mean()
        grads = torch.autograd.grad(metric, [out[n] for n in names])
        return {n: g.numpy() for n, g in zip(names, grads)}

    def assert_close_rel(self, got, want, what, rel=1e-4):
        scale = np.abs(want).max()
        self.assertGreater(scale, 0, what)
        err = np.abs(got.astype(np.float64) - want).max() / scale
        self.assertLessEqual(err, rel, f"{what}: relative error {err}")

    def test_gradients_equal_pytorch_autograd_on_the_same_weights(self):
        names = ["blocks.0.hook_resid_post", "blocks.1.hook_attn_out", "blocks.0.hook_mlp_out",
                 "blocks.1.hook_resid_pre"]
        r = self.client.run_with_interventions(
            np.array(TOKENS), metric={"kind": "logit_diff", "answer": ANSWER, "wrong": WRONG},
            gradients={"hooks": names})
        want = self.reference_grads(names)
        for n in names:
            self.assertEqual(r["grad:" + n].shape, want[n].shape, n)
            self.assert_close_rel(r["grad:" + n], want[n], n)
        # Per prompt: the sum, so each row's gradient is that row's own.
        per = self.client.run_with_interventions(
            np.array(TOKENS), metric={"kind": "logit_diff", "answer": ANSWER, "wrong": WRONG,
                                      "per_prompt": True},
            gradients={"hooks": names[:1], "positions": slice(-3, None), "dtype": "float16"})
        g = per["grad:" + names[0]]
        self.assertEqual((g.dtype, g.shape), (np.float16, (2, 3, 64)))
        self.assert_close_rel(g, 2 * want[names[0]][:, -3:], "per-prompt, sliced", rel=2e-3)

    def test_the_gradient_of_a_saved_scalar(self):
        # Objective: the sum of squares of resid_post 1 at the last position, so
        # d/d resid_post 1 = 2 x there and 0 elsewhere.
        hook = "blocks.1.hook_resid_post"
        square = program(hook, [
            node("x", activation={}),
            node("last", index={"input": "x", "region": [{"all": True}, {"at": -1}]}),
            node("sq", elementwise={"op": "MUL", "inputs": ["last", "last"]}),
            node("s", reduce={"op": "REDUCE_SUM", "input": "sq"})], saves=[("obj", "s")])
        r = self.client.run_with_interventions(np.array(TOKENS), programs=[square], names=[hook],
                                               gradients={"hooks": [hook], "saved": "obj"})
        want = np.zeros_like(r[hook])
        want[:, -1] = 2 * r[hook][:, -1]
        np.testing.assert_allclose(r["grad:" + hook], want, rtol=1e-5, atol=1e-6)
        self.assertAlmostEqual(float(r["saved:obj"]), float((r[hook][:, -1] ** 2).sum()),
                               delta=1e-3 * float(r["saved:obj"]))

    def expect_error(self, programs, code, text, **kw):
        with self.assertRaises(WorkerError) as e:
            self.run_programs(programs, **kw)
        self.assertEqual(e.exception.code, code, e.exception.details)
        self.assertIn(text, e.exception.details)

    def test_bad_programs_get_clear_errors_and_the_worker_goes_on(self):
        z = "blocks.1.attn.hook_z"
        act = node("z", activation={})
        self.expect_error([program(z, [node("a", elementwise={"op": "NEG", "inputs": ["b"]}),
                                       node("b", elementwise={"op": "NEG", "inputs": ["a"]})])],
                          C.INVALID_ARGUMENT, "programs[0] (on blocks.1.attn.hook_z) node 'a' "
                          "(neg): is part of a cycle: a -> b -> a")
        self.expect_error([program(z, [act, node("n", elementwise={"op": "NEG",
                                                                   "inputs": ["nowhere"]})])],
                          C.INVALID_ARGUMENT, "input 'nowhere' is not a node of this program")
        self.expect_error([program(z, [node("h", hook={"name": "blocks.0.hook_resid_psot"})])],
                          C.NOT_FOUND, "blocks.0.hook_resid_post")
        self.expect_error([program("blocks.9.hook_z", [act])], C.NOT_FOUND, "programs[0].hook")
        self.expect_error([program(z, [node("w", weight="blocks.0.attn.W_X")])], C.NOT_FOUND,
                          "unknown weight 'blocks.0.attn.W_X'")
        self.expect_error([program(z, [act, node("v", values={"shape": [3], "values": [1, 2, 3]}),
                                       node("s", elementwise={"op": "ADD",
                                                              "inputs": ["z", "v"]})])],
                          C.INVALID_ARGUMENT, "shapes [2, 7, 4, 16] and [3] do not broadcast")
        self.expect_error([program(z, [act, node("i", index={
            "input": "z", "region": [{"all": True}, {"at": 7}]})])],
            C.INVALID_ARGUMENT, "index 7 is out of range for axis 1 of size 7")
        self.expect_error([program("blocks.0.hook_resid_post", [
            node("x", activation={}),
            node("e", einsum={"equation": "bpd,bqe->bpqde", "inputs": ["x", "x"]})])],
            C.RESOURCE_EXHAUSTED, "max einsum elements")
        self.expect_error([program("blocks.0.hook_resid_post", [
            node("x", activation={}), node("c", reshape={"input": "x", "shape": [2, 7, 64, 1]}),
            node("r", reshape={"input": "x", "shape": [2, 7, 1, 64]}),
            node("o", elementwise={"op": "MUL", "inputs": ["c", "r"]})])],
            C.RESOURCE_EXHAUSTED, "max program bytes")
        self.expect_error([program(z, [act, node("v", values={"shape": [3, 16],
                                                              "values": [0.0] * 48}),
                                       node("w", write={"target": "z", "value": "v", "region": [
                                           {"all": True}, {"all": True}, {"at": 1}]})], "w")],
                          C.INVALID_ARGUMENT,
                          "the value [3, 16] does not broadcast to the region [2, 7, 16]")
        self.expect_error([program(z, [node("nan", values={"shape": [1],
                                                           "values": ["NaN"]})])],
                          C.INVALID_ARGUMENT, "node 'nan' (literal): holds NaN")
        self.expect_error([program(z, [act, node("s", reduce={"op": "REDUCE_SUM", "input": "z",
                                                              "axes": [-1]})], "s")],
                          C.INVALID_ARGUMENT, "replaces the activation [2, 7, 4, 16]")
        self.expect_error([program(z, [{"id": "empty"}])], C.INVALID_ARGUMENT,
                          "programs[0].nodes[0] ('empty'): no operation set")
        self.expect_error([program(z, [act], saves=[("big", "z")])], C.INVALID_ARGUMENT,
                          "gradients.saved: 'big' is [2, 7, 4, 16] but the objective must be one",
                          gradients={"hooks": [z], "saved": "big"})
        self.expect_error([], C.INVALID_ARGUMENT, "gradients: set metric",
                          gradients={"hooks": [z]})
        # Still serving, and still right.
        r = self.client.run_with_interventions(np.array(TOKENS))
        self.assertEqual(r.logits.shape, (2, 7, 101))

    def lensgrid_run(self, *args):
        return self.lensgrid_run_command("run", *args)

    def test_lensgrid_run_takes_a_program_as_json_in_process_and_on_the_worker(self):
        hook = "blocks.0.hook_resid_post"
        prog = program(hook, [
            node("x", activation={}), node("we", weight="W_E"),
            node("d", index={"input": "we", "region": [{"at": ANSWER}]}),
            node("out", project={"mode": "OUT", "input": "x", "direction": "d"}),
            node("n", reduce={"op": "REDUCE_NORM", "input": "out"})], "out", [("norm", "n")])
        path = os.path.join(self.tmp.name, "project_out.json")
        with open(path, "w") as f:
            json.dump({"programs": [prog]}, f)
        here = os.path.join(self.tmp.name, "here.safetensors")
        there = os.path.join(self.tmp.name, "there.safetensors")
        text = self.lensgrid_run("--model", self.model_dir, "--no-processing", "--program", path,
                                 "--output", here, "--threads", "1")
        self.assertIn("saved (1):", text)
        self.lensgrid_run("--worker", self.worker.address, "--no-processing", "--program", path,
                          "--output", there)
        a, _ = hf_gpt2.read_safetensors(here)
        b, _ = hf_gpt2.read_safetensors(there)
        self.assertEqual(sorted(a), ["logits", "saved:norm"])
        for name in a:
            np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-5, atol=1e-5)
        # The program changed the run: the same call as a hook function, in numpy.
        r = self.client.run_with_interventions(np.array(TOKENS[:1]), programs=[prog])
        np.testing.assert_allclose(r.logits, a["logits"].numpy(), rtol=1e-5, atol=1e-5)
        plain = self.client.run_with_interventions(np.array(TOKENS[:1]))
        self.assertGreater(np.abs(plain.logits - r.logits).max(), 1e-4)
        bad = os.path.join(self.tmp.name, "bad.json")
        with open(bad, "w") as f:
            f.write('{"hook": "z1", "nodes": [{"id": "a", "activation": {}, "colour": 1}]}')
        p = subprocess.run([LENSGRID_BIN, "run", "--worker", self.worker.address,
                            "--no-processing", "--tokens", "1,2", "--program", bad],
                           capture_output=True, text=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("bad.json: programs[0]", p.stderr)

    def test_lensgrid_attention_from_a_worker_equals_in_process(self):
        def page_data(*args):
            out = os.path.join(self.tmp.name, "attn.html")
            text = self.lensgrid_run_command("attention", "--no-processing", "--layer", "1",
                                             "--heads", "0,-1", "--output", out, *args)
            self.assertIn("(2 heads, 7 tokens)", text)
            with open(out) as f:
                html = f.read()
            start = html.index('id="report-data">') + len('id="report-data">')
            return json.loads(html[start:html.index("</script>", start)])

        remote = page_data("--worker", self.worker.address)
        local = page_data("--model", self.model_dir)
        views = remote["attention"]["views"]
        self.assertEqual([(v["layer"], v["head"]) for v in views], [(1, 0), (1, 3)])
        self.assertEqual(len(views[0]["tokens"]), len(TOKENS[0]))
        for a, b in zip(views, local["attention"]["views"]):
            np.testing.assert_allclose(a["pattern"], b["pattern"], atol=1e-6)
        r = self.client.run_with_cache(np.array(TOKENS[:1]), names=["blocks.1.attn.hook_pattern"])
        np.testing.assert_allclose(np.array(views[1]["pattern"]).reshape(7, 7),
                                   r["blocks.1.attn.hook_pattern"][0, 3], atol=1e-6)

    def lensgrid_run_command(self, command, *args):
        p = subprocess.run([LENSGRID_BIN, command, "--tokens", ",".join(map(str, TOKENS[0])),
                            *args], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p.stdout


if __name__ == "__main__":
    unittest.main(verbosity=2)
