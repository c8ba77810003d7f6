#!/usr/bin/python3
"""The worker against real lensgrid-worker processes on loopback, through the Python
client (lensgrid) and the C++ one (`lensgrid run --worker`).

usage: worker_test.py LENSGRID_WORKER_BINARY LENSGRID_BINARY PYTHONPATH_DIR
"""
import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

WORKER_BIN, LENSGRID_BIN, PY_DIR = sys.argv[1:4]
del sys.argv[1:4]
sys.path.insert(0, PY_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
import lensgrid  # noqa: E402
from lensgrid import WorkerError  # noqa: E402
from lensgrid.v1 import tensor_pb2, worker_pb2, worker_pb2_grpc  # noqa: E402
from worker_harness import WorkerProcess, health, make_model  # noqa: E402

C = grpc.StatusCode
NUMPY = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": np.uint16}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    return {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                             dtype=NUMPY[v["dtype"]]).reshape(v["shape"])
            for k, v in header.items()}, meta


class WorkerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.small = make_model(LENSGRID_BIN, os.path.join(cls.tmp.name, "small"))
        cls.worker = WorkerProcess(WORKER_BIN, cls.small, "--max-batch", "8", "--max-tokens", "2048",
                                   "--max-response-bytes", str(64 << 20))
        cls.client = lensgrid.Worker(cls.worker.address, timeout=60)
        cls.client.wait_ready()

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.worker.stop()
        cls.tmp.cleanup()

    def tearDown(self):
        self.assertTrue(self.worker.alive(), "the worker died:\n" + self.worker.log_text())

    def expect_error(self, code, fn, *args, contains=None, **kwargs):
        with self.assertRaises(WorkerError) as ctx:
            fn(*args, **kwargs)
        self.assertEqual(ctx.exception.code, code, ctx.exception.details)
        if contains:
            self.assertIn(contains, ctx.exception.details)
        return ctx.exception

    # --- protocol basics -------------------------------------------------------------------

    def test_health_and_reflection(self):
        self.assertEqual(health(self.worker.address), "SERVING")
        self.assertEqual(health(self.worker.address, "lensgrid.v1.Worker"), "SERVING")
        with grpc.insecure_channel(self.worker.address) as ch:
            info = ch.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
            replies = b"".join(info(iter([b"\x3a\x00"]), timeout=10))  # list_services: ""
        self.assertIn(b"lensgrid.v1.Worker", replies)
        self.assertIn(b"grpc.health.v1.Health", replies)

    def test_model_info(self):
        info = self.client.model_info()
        with open(os.path.join(self.small, "model.safetensors"), "rb") as f:
            self.assertEqual(info.weights_sha256, hashlib.sha256(f.read()).hexdigest())
        self.assertEqual(info.config.n_layers, 2)
        self.assertEqual(info.config.d_vocab, 50257)
        self.assertTrue(info.processed)
        self.assertTrue(info.has_tokenizer)
        hooks = {h.name: h for h in info.hooks}
        self.assertEqual(list(hooks["blocks.1.attn.hook_pattern"].axes), ["batch", "", "query_pos", "key_pos"])
        self.assertEqual(list(hooks["blocks.1.attn.hook_pattern"].shape), [-1, 4, -1, -1])
        self.assertEqual(list(hooks["blocks.0.mlp.hook_post"].shape), [-1, -1, 256])
        self.assertEqual(info.limits.max_batch, 8)

    def test_tokenize(self):
        self.assertEqual(self.client.tokenize("Hello world"), [50256, 15496, 995])
        self.assertEqual(self.client.tokenize(["Hello", " world"], prepend_bos=False), [[15496], [995]])
        self.assertEqual(self.client.to_str_tokens("Hello world"), ["<|endoftext|>", "Hello", " world"])
        self.assertEqual(self.client.detokenize([15496, 995]), "Hello world")
        self.expect_error(C.INVALID_ARGUMENT, self.client.detokenize, [70000], contains="70000")

    def test_tokenize_and_runs_agree_on_bos_by_default(self):
        # Raw requests, as any language sends them: an absent prepend_bos means BOS in both.
        stub = worker_pb2_grpc.WorkerStub(self.client._channel)
        bos = 50256
        self.assertEqual(list(stub.Tokenize(worker_pb2.TokenizeRequest(texts=["Hi"])).tokens[0].ids),
                         [bos, 17250])
        self.assertEqual(list(stub.Tokenize(worker_pb2.TokenizeRequest(
            texts=["Hi"], prepend_bos=False)).tokens[0].ids), [17250])

        def run_tokens(**input_fields):
            request = worker_pb2.RunWithCacheRequest(
                input=worker_pb2.ModelInput(texts=["Hi"], **input_fields),
                options=worker_pb2.RunOptions(return_type=worker_pb2.RETURN_NONE),
                cache=worker_pb2.CacheSpec(names=["blocks.0.hook_resid_pre"]))
            header = next(iter(stub.RunWithCache(request))).header
            return list(np.frombuffer(header.tokens.data, dtype="<i8"))

        self.assertEqual(run_tokens(), [bos, 17250])
        self.assertEqual(run_tokens(prepend_bos=False), [17250])
        self.assertEqual(run_tokens(prepend_bos=True, no_bos=True), [bos, 17250])  # the new field wins
        self.assertEqual(run_tokens(no_bos=True), [17250])  # a 1.x client's deprecated field

    # --- results ---------------------------------------------------------------------------

    def test_run_with_cache_equals_in_process_run_bit_for_bit(self):
        local = os.path.join(self.tmp.name, "local.safetensors")
        remote = os.path.join(self.tmp.name, "remote.safetensors")
        args = ["--prompt", "The cat sat on the mat", "--cache", "hook_(pattern|resid_post|z)$"]
        subprocess.run([LENSGRID_BIN, "run", "--model", self.small, *args, "--output", local],
                       check=True, capture_output=True)
        proc = subprocess.run([LENSGRID_BIN, "run", "--model", self.small, "--worker",
                               self.worker.address, *args, "--output", remote],
                              capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        with open(local, "rb") as a, open(remote, "rb") as b:
            self.assertEqual(a.read(), b.read(), "lensgrid run --worker wrote a different file")
        want, _ = read_safetensors(local)
        run = self.client.run_with_cache("The cat sat on the mat",
                                         names_regex="hook_(pattern|resid_post|z)$")
        self.assertEqual(sorted(run), sorted(k for k in want if k != "logits"))
        for name, arr in run.items():
            self.assertEqual(arr.tobytes(), want[name].tobytes(), name)
        self.assertEqual(run.logits.tobytes(), want["logits"].tobytes())
        self.assertEqual(run["pattern", 1].shape, (1, 4, 7, 7))

    def test_cli_worker_without_model_and_with_wrong_model(self):
        proc = subprocess.run([LENSGRID_BIN, "run", "--worker", self.worker.address, "--tokens",
                               "1,2,3"], capture_output=True, text=True)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("loss:", proc.stdout)
        other = make_model(LENSGRID_BIN, os.path.join(self.tmp.name, "other"), seed=5)
        proc = subprocess.run([LENSGRID_BIN, "run", "--model", other, "--worker",
                               self.worker.address, "--tokens", "1,2,3"], capture_output=True, text=True)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("FAILED_PRECONDITION", proc.stderr)

    def test_cache_options(self):
        run = self.client.run_with_cache("a b c d e", names=["pattern0", "blocks.1.hook_resid_post"],
                                         positions=slice(-2, None), remove_batch_dim=True,
                                         dtype="float16", return_type="both", per_token_loss=True)
        self.assertEqual(run["pattern", 0].shape, (4, 2, 6))
        self.assertEqual(run["blocks.1.hook_resid_post"].dtype, np.float16)
        self.assertEqual(run.loss.shape, (1, 5))
        full = self.client.run_with_cache("a b c d e", names=["pattern0"])
        np.testing.assert_allclose(run["pattern", 0], full["pattern", 0][0, :, -2:], atol=1e-3)
        bf = self.client.run_with_cache("a b c", names=["blocks.1.hook_resid_pre"], dtype="bfloat16")
        np.testing.assert_allclose(bf["resid_pre1"], self.client.run_with_cache(
            "a b c", names=["blocks.1.hook_resid_pre"])["resid_pre1"], rtol=1e-2, atol=1e-2)
        stop = self.client.run_with_cache("a b c", names_regex="resid_pre", stop_at_layer=1)
        self.assertIsNone(stop.logits)
        self.assertEqual(list(stop), ["blocks.0.hook_resid_pre"])
        everything = self.client.run_with_cache([1, 2, 3])
        self.assertEqual(len(everything), len(self.client.hook_names))

    def test_padded_batch_masks_pads(self):
        run = self.client.run_with_cache(["a b c d", "a"], names=["blocks.1.hook_resid_post"])
        alone = self.client.run_with_cache("a", names=["blocks.1.hook_resid_post"])
        self.assertEqual(run.attention_mask.tolist(), [[True] * 5, [True, True, False, False, False]])
        np.testing.assert_allclose(run["blocks.1.hook_resid_post"][1, :2], alone["blocks.1.hook_resid_post"][0], atol=1e-4)
        left = self.client.run_with_cache(["a b c d", "a"], names=["blocks.1.hook_resid_post"], padding_side="left")
        np.testing.assert_allclose(left["blocks.1.hook_resid_post"][1, 3:], alone["blocks.1.hook_resid_post"][0], atol=1e-4)

    def test_large_cache_streams_and_reassembles_bit_exactly(self):
        big = make_model(LENSGRID_BIN, os.path.join(self.tmp.name, "big"), layers=2, heads=8,
                         d_model=256, vocab=1000, n_ctx=1024, seed=3)
        tokens = np.random.default_rng(0).integers(0, 1000, size=1024)
        local = os.path.join(self.tmp.name, "big.safetensors")
        subprocess.run([LENSGRID_BIN, "run", "--model", big, "--tokens", ",".join(map(str, tokens)),
                        "--cache", ".", "--output", local], check=True, capture_output=True)
        want, _ = read_safetensors(local)
        with WorkerProcess(WORKER_BIN, big) as w, lensgrid.Worker(w.address, timeout=300) as c:
            run = c.run_with_cache(tokens[None, :])
        total = sum(a.nbytes for a in run.values())
        self.assertGreater(total, 50 << 20)
        self.assertEqual(sorted(run), sorted(k for k in want if k != "logits"))
        for name, arr in run.items():
            self.assertEqual(arr.shape, want[name].shape, name)
            self.assertTrue(arr.tobytes() == want[name].tobytes(), name)
        self.assertEqual(run.logits.tobytes(), want["logits"].tobytes())

    # --- interventions ---------------------------------------------------------------------

    def test_interventions(self):
        c = self.client
        clean = c.run_with_interventions("When Mary and John went", names=["z0", "blocks.0.hook_attn_out"])
        # Identity edits change nothing, bit for bit.
        for edit in ({"hook": "blocks.1.hook_resid_pre", "op": "scale", "scale": 1.0},
                     {"hook": "z0", "op": "add", "value": np.zeros(16, np.float32)},
                     {"hook": ("resid_pre", 1), "op": "patch", "positions": [-1]}):
            same = c.run_with_interventions("When Mary and John went", [edit],
                                            patch_input="When Mary and John went")
            self.assertEqual(same.logits.tobytes(), clean.logits.tobytes(), edit)
        # Zero one head: that head's z is zero, the others untouched, attn_out moves.
        zeroed = c.run_with_interventions("When Mary and John went",
                                          [{"hook": "blocks.0.attn.hook_z", "head": 2, "op": "zero"}],
                                          names=["z0", "blocks.0.hook_attn_out"])
        self.assertTrue((zeroed["z0"][:, :, 2] == 0).all())
        np.testing.assert_array_equal(zeroed["z0"][:, :, [0, 1, 3]], clean["z0"][:, :, [0, 1, 3]])
        self.assertFalse(np.allclose(zeroed["blocks.0.hook_attn_out"], clean["blocks.0.hook_attn_out"]))
        # SET to another run's activation == PATCH from that run.
        other = c.run_with_cache("When John and Mary went", names=["blocks.1.hook_resid_pre"])
        set_run = c.run_with_interventions("When Mary and John went",
                                           [{"hook": "blocks.1.hook_resid_pre", "op": "set", "positions": [2, 4],
                                             "value": other["resid_pre1"][:, [2, 4]]}])
        patch_run = c.run_with_interventions("When Mary and John went",
                                             [{"hook": "blocks.1.hook_resid_pre", "op": "patch", "positions": [2, 4]}],
                                             patch_input="When John and Mary went")
        self.assertEqual(set_run.logits.tobytes(), patch_run.logits.tobytes())
        # MEAN over the request's batch.
        mean = c.run_with_interventions(["a b c", "d e f"], [{"hook": "z1", "op": "mean", "head": 0}],
                                        names=["z1"])
        np.testing.assert_allclose(mean["z1"][0, :, 0], mean["z1"][1, :, 0], atol=1e-6)
        # Metric = logit difference read from the returned logits.
        m = c.run_with_interventions(["When Mary and John went", "a b"], [],
                                     metric={"kind": "logit_diff", "answer": [5335, 5],
                                             "wrong": 1757, "per_prompt": True})
        last = m.attention_mask.sum(1) - 1
        expect = [m.logits[i, last[i], a] - m.logits[i, last[i], 1757] for i, a in enumerate([5335, 5])]
        np.testing.assert_allclose(m.metric, expect, rtol=1e-5)
        # The search's own metrics (one implementation), e.g. log-prob of the answer.
        lp = c.run_with_interventions(["When Mary and John went", "a b"], [],
                                      metric={"kind": "log-prob", "answer": 5335, "per_prompt": True})
        rows = lp.logits[np.arange(2), last].astype(np.float64)
        top = rows.max(1)
        expect = rows[:, 5335] - (top + np.log(np.exp(rows - top[:, None]).sum(1)))
        np.testing.assert_allclose(lp.metric, expect, rtol=1e-5, atol=1e-5)
        loss_only = c.run_with_interventions("a b c", [], return_type="loss",
                                             metric={"kind": "prob", "answer": 5})
        self.assertIsNone(loss_only.logits)
        self.assertEqual(loss_only.metric.shape, ())

    # --- errors ----------------------------------------------------------------------------

    def raw(self, method, request):
        stub = worker_pb2_grpc.WorkerStub(self.client._channel)
        try:
            return list(getattr(stub, method)(request, timeout=60))
        except grpc.RpcError as e:
            raise WorkerError(e.code(), e.details()) from None

    def test_bad_inputs_get_their_status_and_the_worker_keeps_serving(self):
        c = self.client
        sha = c.model_info().weights_sha256
        tokens = lambda arr: worker_pb2.ModelInput(tokens=lensgrid._wire.to_tensor(np.asarray(arr)))
        bad_bytes = worker_pb2.ModelInput(tokens=tensor_pb2.Tensor(dtype=tensor_pb2.I64, shape=[1, 3],
                                                                  data=b"\0" * 20))
        neg_shape = worker_pb2.ModelInput(tokens=tensor_pb2.Tensor(dtype=tensor_pb2.I64, shape=[-1, 3]))
        no_dtype = worker_pb2.ModelInput(tokens=tensor_pb2.Tensor(shape=[1], data=b"\0" * 8))
        cases = [
            (C.NOT_FOUND, "unknown hook", lambda: c.run_with_cache("a", names=["blocks.0.hook_nope"]), "hook_nope"),
            (C.NOT_FOUND, "regex matches nothing", lambda: c.run_with_cache("a", names_regex="zzz"), "zzz"),
            (C.INVALID_ARGUMENT, "bad regex", lambda: c.run_with_cache("a", names_regex="("), "regex"),
            (C.INVALID_ARGUMENT, "token out of range", lambda: c.run_with_cache([1, 50257]), "50257"),
            (C.INVALID_ARGUMENT, "negative token", lambda: c.run_with_cache([1, -4]), "-4"),
            (C.INVALID_ARGUMENT, "float tokens", lambda: self.raw("RunWithCache", worker_pb2.RunWithCacheRequest(
                input=tokens(np.ones(3, np.float32)))), "I64"),
            (C.INVALID_ARGUMENT, "byte size", lambda: self.raw("RunWithCache", worker_pb2.RunWithCacheRequest(
                input=bad_bytes)), "24 bytes"),
            (C.INVALID_ARGUMENT, "negative shape", lambda: self.raw("RunWithCache", worker_pb2.RunWithCacheRequest(
                input=neg_shape)), "negative"),
            (C.INVALID_ARGUMENT, "no dtype", lambda: self.raw("RunWithCache", worker_pb2.RunWithCacheRequest(
                input=no_dtype)), "dtype"),
            (C.INVALID_ARGUMENT, "3-d tokens", lambda: c.run_with_cache(np.ones((1, 1, 2), np.int64)), "[batch, pos]"),
            (C.INVALID_ARGUMENT, "no input", lambda: self.raw("RunWithCache", worker_pb2.RunWithCacheRequest()), "no texts"),
            (C.INVALID_ARGUMENT, "texts and tokens", lambda: self.raw("RunWithCache", worker_pb2.RunWithCacheRequest(
                input=worker_pb2.ModelInput(texts=["a"], tokens=lensgrid._wire.to_tensor(np.ones(1, np.int64))))), "not both"),
            (C.INVALID_ARGUMENT, "longer than n_ctx", lambda: c.run_with_cache(np.zeros(257, np.int64)), "n_positions"),
            (C.INVALID_ARGUMENT, "stop_at_layer", lambda: c.run_with_cache("a", stop_at_layer=3), "stop_at_layer"),
            (C.INVALID_ARGUMENT, "remove_batch_dim", lambda: c.run_with_cache(["a", "b"], names=["z0"], remove_batch_dim=True), "batch of 1"),
            (C.INVALID_ARGUMENT, "cache dtype", lambda: self.raw("RunWithCache", worker_pb2.RunWithCacheRequest(
                input=tokens([1, 2]), cache=worker_pb2.CacheSpec(dtype=tensor_pb2.I64))), "float"),
            (C.INVALID_ARGUMENT, "mask shape", lambda: c.run_with_cache([[1, 2]], attention_mask=np.ones((1, 3), np.int64)), "attention_mask"),
            (C.INVALID_ARGUMENT, "empty text no bos", lambda: c.run_with_cache("", prepend_bos=False), "empty"),
            (C.RESOURCE_EXHAUSTED, "batch limit", lambda: c.run_with_cache(["a"] * 9), "--max-batch"),
            (C.RESOURCE_EXHAUSTED, "token limit", lambda: c.run_with_cache(np.zeros((8, 257), np.int64), names=["z0"]), "--max-tokens"),
            (C.RESOURCE_EXHAUSTED, "response bytes", lambda: c.run_with_cache(np.zeros((8, 250), np.int64)), "--max-response-bytes"),
            (C.FAILED_PRECONDITION, "weights hash", lambda: c.run_with_cache("a", expected_weights_sha256="00" * 32), "sha256"),
            (C.NOT_FOUND, "intervention hook", lambda: c.run_with_interventions("a", [{"hook": "nope", "op": "zero"}]), "interventions[0]"),
            (C.INVALID_ARGUMENT, "head range", lambda: c.run_with_interventions("a", [{"hook": "z0", "head": 4, "op": "zero"}]), "head 4"),
            (C.INVALID_ARGUMENT, "head axis", lambda: c.run_with_interventions("a", [{"hook": "blocks.0.hook_resid_pre", "head": 0, "op": "zero"}]), "no head axis"),
            (C.INVALID_ARGUMENT, "value shape", lambda: c.run_with_interventions("a b", [{"hook": "blocks.0.hook_resid_pre", "op": "set", "value": np.zeros(5, np.float32)}]), "broadcast"),
            (C.INVALID_ARGUMENT, "value dtype", lambda: c.run_with_interventions("a b", [{"hook": "blocks.0.hook_resid_pre", "op": "add", "value": np.zeros(64, np.int64)}]), "F32"),
            (C.INVALID_ARGUMENT, "set without value", lambda: c.run_with_interventions("a", [{"hook": "blocks.0.hook_resid_pre", "op": "set"}]), "value"),
            (C.INVALID_ARGUMENT, "patch without input", lambda: c.run_with_interventions("a", [{"hook": "blocks.0.hook_resid_pre", "op": "patch"}]), "patch_input"),
            (C.INVALID_ARGUMENT, "patch input shape", lambda: c.run_with_interventions("a", [{"hook": "blocks.0.hook_resid_pre", "op": "patch"}], patch_input="a b"), "match"),
            (C.INVALID_ARGUMENT, "position range", lambda: c.run_with_interventions("a", [{"hook": "blocks.0.hook_resid_pre", "op": "zero", "positions": [9]}]), "position 9"),
            (C.INVALID_ARGUMENT, "no op", lambda: self.raw("RunWithInterventions", worker_pb2.RunWithInterventionsRequest(
                input=tokens([1, 2]), interventions=[worker_pb2.Intervention(hook="z0")])), "op"),
            (C.INVALID_ARGUMENT, "metric token", lambda: c.run_with_interventions("a", [], metric={"kind": "logit", "answer": 99999}), "99999"),
            (C.INVALID_ARGUMENT, "metric count", lambda: c.run_with_interventions(["a", "b", "c"], [], metric={"kind": "logit", "answer": [1, 2]}), "one per row"),
            (C.INVALID_ARGUMENT, "search-only metric", lambda: c.run_with_interventions("a", [], metric={"kind": "loss", "answer": 5}), "for searches"),
            (C.INVALID_ARGUMENT, "wrongs for one-set metric", lambda: c.run_with_interventions("a", [], metric={"kind": "log_prob", "answer": 5, "wrong": 6}), "only for logit-diff"),
            (C.FAILED_PRECONDITION, "shard hash", lambda: self.raw("RunShard", worker_pb2.RunShardRequest(
                weights_sha256="00" * 32)), None),
        ]
        for code, what, fn, contains in cases:
            with self.subTest(what):
                err = None
                try:
                    fn()
                except WorkerError as e:
                    err = e
                self.assertIsNotNone(err, f"{what}: no error")
                if what == "shard hash" and err.code == C.UNIMPLEMENTED:
                    continue  # built without the circuit-search library
                self.assertEqual(err.code, code, f"{what}: {err.details}")
                if contains:
                    self.assertIn(contains, err.details, what)
        self.assertEqual(c.tokenize("ok"), [50256, 482])  # still serving

    # --- serving under load ----------------------------------------------------------------

    def test_32_concurrent_clients_for_20_seconds(self):
        c = self.client
        prompts = ["The quick brown fox", "When Mary and John went to the store", "a b c"]
        expected = {p: c.run_with_cache(p, names=["pattern1", "blocks.1.hook_resid_post"]) for p in prompts}
        big = np.zeros((4, 200), np.int64)
        c.run_with_cache(big, names_regex="pattern|scores", return_type=None)  # warm up
        time.sleep(0.5)
        baseline = self.worker.rss_bytes()
        stop = time.monotonic() + 20
        failures, counts = [], {"ok": 0, "expected_error": 0, "busy": 0}
        lock = threading.Lock()

        def client_loop(seed):
            rng = random.Random(seed)
            with lensgrid.Worker(self.worker.address, timeout=120) as w:
                while time.monotonic() < stop:
                    kind = rng.randrange(6)
                    try:
                        if kind <= 1:
                            p = rng.choice(prompts)
                            got = w.run_with_cache(p, names=["pattern1", "blocks.1.hook_resid_post"])
                            ok = all(got[k].tobytes() == expected[p][k].tobytes() for k in expected[p]) \
                                and got.logits.tobytes() == expected[p].logits.tobytes()
                            result = "ok" if ok else "wrong answer for " + p
                        elif kind == 2:
                            result = "ok" if w.tokenize("Hello world") == [50256, 15496, 995] else "bad tokens"
                        elif kind == 3:
                            w.run_with_cache(big, names_regex="pattern|scores", return_type=None)
                            result = "ok"
                        elif kind == 4:
                            w.run_with_cache([1, 2, 99999])
                            result = "no error for a bad token"
                        else:
                            w.run_with_interventions("a b", [{"hook": "z0", "head": 7, "op": "zero"}])
                            result = "no error for a bad head"
                    except WorkerError as e:
                        if e.code == C.UNAVAILABLE:
                            result = "busy"
                        elif kind >= 4 and e.code == C.INVALID_ARGUMENT:
                            result = "expected_error"
                        else:
                            result = f"unexpected {e}"
                    with lock:
                        if result in counts:
                            counts[result] += 1
                        else:
                            failures.append(result)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        self.assertFalse(any(t.is_alive() for t in threads), "clients hung")
        self.assertEqual(failures, [])
        self.assertGreater(counts["ok"], 32)
        self.assertGreater(counts["expected_error"], 0)
        self.assertTrue(self.worker.alive())
        # Once idle, the worker hands its free pages back: wait for that (the deadline only
        # guards against a worker that never does).
        bound, deadline = baseline + (64 << 20), time.monotonic() + 60
        after = self.worker.rss_bytes()
        while after >= bound and time.monotonic() < deadline:
            time.sleep(0.1)
            after = self.worker.rss_bytes()
        print(f"\n32 clients x 20 s: {counts}; RSS {baseline >> 20} MiB before, {after >> 20} MiB after",
              file=sys.stderr)
        self.assertLess(after, bound, "worker memory did not return to its baseline")


class SlowWorkerTest(unittest.TestCase):
    """A deep model whose long runs let us cancel, time out and fill the queue."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = make_model(LENSGRID_BIN, os.path.join(cls.tmp.name, "deep"), layers=48, heads=8,
                               d_model=256, vocab=1000, n_ctx=1024, seed=1)
        cls.long_input = np.zeros((8, 1024), np.int64)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def start_long(self, client, results, timeout=None):
        def run():
            try:
                client.run_with_cache(self.long_input, names=["blocks.0.hook_resid_pre"],
                                      return_type=None, timeout=timeout)
                results.append("ok")
            except WorkerError as e:
                results.append(e.code)
        t = threading.Thread(target=run)
        t.start()
        return t

    def test_health_not_serving_until_loaded(self):
        with WorkerProcess(WORKER_BIN, self.model, wait_serving=False) as w:
            seen = [health(w.address)]
            with lensgrid.Worker(w.address) as c:
                if seen[0] == "NOT_SERVING":
                    with self.assertRaises(WorkerError) as ctx:
                        c.model_info()
                    self.assertIn(ctx.exception.code, (C.UNAVAILABLE,))
                c.wait_ready(120)
            seen.append(health(w.address))
        self.assertEqual(seen[-1], "SERVING")
        self.assertEqual(seen[0], "NOT_SERVING", "the first probe after listening saw SERVING")

    def test_cancel_and_deadline_free_the_executor(self):
        with WorkerProcess(WORKER_BIN, self.model, "--executor-threads", "1") as w, \
                lensgrid.Worker(w.address) as c:
            results = []
            t = self.start_long(c, results)
            time.sleep(1.0)
            c.last_call.cancel()
            t.join(timeout=120)
            self.assertEqual(results, [C.CANCELLED])
            # The executor is free: a small request runs (it would queue behind the long run).
            self.assertEqual(len(c.run_with_cache([1, 2, 3], names=["z0"])), 1)
            w.wait_for_log(r"RunWithCache tokens=8192 .*status=CANCELLED", timeout=60)
            # A deadline stops the run the same way.
            t = self.start_long(c, results, timeout=1.0)
            t.join(timeout=120)
            self.assertEqual(results[-1], C.DEADLINE_EXCEEDED)
            self.assertEqual(len(c.run_with_cache([1, 2, 3], names=["z0"], timeout=60)), 1)
            self.assertTrue(w.alive())

    def test_full_queue_is_unavailable(self):
        with WorkerProcess(WORKER_BIN, self.model, "--executor-threads", "1", "--max-queue", "2") as w:
            clients = [lensgrid.Worker(w.address) for _ in range(3)]
            results = []
            threads = [self.start_long(clients[0], results), self.start_long(clients[1], results)]
            busy = None
            for _ in range(200):
                try:
                    clients[2].tokenize("x", prepend_bos=False)
                except WorkerError as e:
                    if e.code == C.UNAVAILABLE:
                        busy = e
                        break
                if C.UNAVAILABLE in results:
                    busy = results
                    break
                time.sleep(0.05)
            for c in clients[:2]:
                # A thread may still be on its way to starting its call (a busy machine).
                deadline = time.monotonic() + 60
                while not hasattr(c, "last_call") and time.monotonic() < deadline:
                    time.sleep(0.01)
                c.last_call.cancel()
            for t in threads:
                t.join(timeout=120)
            self.assertIsNotNone(busy, "no request was refused while the queue was full")
            if isinstance(busy, WorkerError):
                self.assertIn("--max-queue 2", busy.details)
            # Cancelled runs stop at their next layer and give their slots back.
            for _ in range(600):
                try:
                    self.assertEqual(clients[2].tokenize("x", prepend_bos=False), [87])
                    break
                except WorkerError as e:
                    self.assertEqual(e.code, C.UNAVAILABLE, e.details)
                    time.sleep(0.05)
            else:
                self.fail("the queue never drained after the cancels")
            for c in clients:
                c.close()


class OperationsTest(unittest.TestCase):
    """What an operator relies on: a plaintext health port for probes, JSON logs, and
    connections that are closed after --max-connection-age-ms so clients rebalance."""

    def test_health_port_json_logs_and_connection_age(self):
        with tempfile.TemporaryDirectory() as tmp:
            model = make_model(LENSGRID_BIN, os.path.join(tmp, "small"))
            worker = WorkerProcess(WORKER_BIN, model, "--health-listen", "127.0.0.1:0",
                                   "--log-format", "json", "--max-connection-age-ms", "300")
            try:
                lines = worker.log_lines()
                records = [json.loads(line) for line in lines]  # every line is one JSON object
                for r in records:
                    self.assertEqual(r["component"], "lensgrid-worker")
                    self.assertRegex(r["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
                    self.assertIn(r["level"], ("info", "warning", "error"))
                [health_address] = [r["msg"].split()[-1] for r in records
                                    if r["msg"].startswith("health on ")]
                self.assertNotEqual(health_address, worker.address)
                self.assertEqual(health(health_address), "SERVING")
                self.assertEqual(health(health_address, "lensgrid.v1.Worker"), "SERVING")
                # The health port serves nothing else.
                with grpc.insecure_channel(health_address) as ch:
                    stub = worker_pb2_grpc.WorkerStub(ch)
                    with self.assertRaises(grpc.RpcError) as e:
                        stub.GetModelInfo(worker_pb2.GetModelInfoRequest(), timeout=30)
                    self.assertEqual(e.exception.code(), grpc.StatusCode.UNIMPLEMENTED)

                # An old connection gets a GOAWAY: the channel goes IDLE, then reconnects.
                states = []
                seen = threading.Condition()

                def on_state(state):
                    with seen:
                        states.append(state)
                        seen.notify_all()

                with grpc.insecure_channel(worker.address) as ch:
                    ch.subscribe(on_state)
                    stub = worker_pb2_grpc.WorkerStub(ch)
                    stub.GetModelInfo(worker_pb2.GetModelInfoRequest(), timeout=30)
                    with seen:
                        self.assertTrue(seen.wait_for(
                            lambda: grpc.ChannelConnectivity.READY in states and
                            states[-1] == grpc.ChannelConnectivity.IDLE, timeout=60), states)
                    stub.GetModelInfo(worker_pb2.GetModelInfoRequest(), timeout=30)
                    ch.unsubscribe(on_state)
            finally:
                worker.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
