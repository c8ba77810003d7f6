#!/usr/bin/python3
"""A hostile or careless client against a real lensgrid-worker on loopback.

Each request below once crashed, wedged or bloated a worker (found by a probe of the running service).
After each, the worker must still be alive, answer the next request, and stay
within a memory budget (RSS read from /proc). No test asserts a duration:
waits are for log lines and states, with deadlines only against hangs.

usage: hostile_test.py LENSGRID_WORKER_BINARY LENSGRID_BINARY PYTHONPATH_DIR
"""
import os
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

WORKER_BIN, LENSGRID_BIN, PY_DIR = sys.argv[1:4]
del sys.argv[1:4]
sys.path.insert(0, PY_DIR)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from lensgrid._wire import to_tensor  # noqa: E402
from lensgrid.v1 import search_pb2 as spb, worker_pb2, worker_pb2_grpc  # noqa: E402
from worker_harness import WorkerProcess, health, make_model  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402  (built from proto/google/rpc)

C = grpc.StatusCode
GiB = 1 << 30
MAX_RSS = int(1.5 * GiB)  # the small model serves in ~200 MB; the probe saw 4.4 GB
MAX_MESSAGE = 256 << 20


def error_details(error):
    """The standard google.rpc details of a failed call, as any gRPC library's status helper
    reads them from the grpc-status-details-bin trailer: {type name: message}."""
    trailer = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if trailer is None:
        return {}
    status = status_pb2.Status.FromString(trailer)
    assert status.code == error.code().value[0] and status.message == error.details()
    out = {}
    for any_ in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                    error_details_pb2.QuotaFailure):
            if any_.Is(cls.DESCRIPTOR):
                out[cls.DESCRIPTOR.name] = cls()
                any_.Unpack(out[cls.DESCRIPTOR.name])
    return out


def tokens(ids):
    return worker_pb2.ModelInput(tokens=to_tensor(np.asarray(ids, dtype=np.int64)))


class HostileWorkerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = make_model(LENSGRID_BIN, os.path.join(cls.tmp.name, "small"))
        cls.worker = WorkerProcess(WORKER_BIN, cls.model, "--threads", "1",
                                   "--max-request-bytes", str(MAX_MESSAGE),
                                   "--max-reply-memory", str(96 << 20))
        opts = [("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", 16 << 20)]
        cls.channel = grpc.insecure_channel(cls.worker.address, options=opts)
        cls.stub = worker_pb2_grpc.WorkerStub(cls.channel)
        cls.sha = WorkerProcess.weights_sha256(cls.model)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.worker.stop()
        cls.tmp.cleanup()

    def assertStillServing(self):
        self.assertTrue(self.worker.alive(), self.worker.log_text()[-3000:])
        reply = self.stub.Tokenize(worker_pb2.TokenizeRequest(texts=["still here"]), timeout=60)
        self.assertEqual(len(reply.tokens), 1)
        self.assertLess(self.worker.rss_bytes(), MAX_RSS)

    def assertCode(self, call, code, *substrings):
        return self.assertError(call, code, *substrings).details()

    def assertError(self, call, code, *substrings):
        with self.assertRaises(grpc.RpcError) as e:
            call()
        self.assertEqual(e.exception.code(), code, e.exception.details())
        for s in substrings:
            self.assertIn(s, e.exception.details())
        # Errors quote client input cut short, never whole.
        self.assertLess(len(e.exception.details()), 2000)
        return e.exception

    def test_errors_carry_standard_details_a_program_can_read(self):
        error = self.assertError(lambda: self.run_cache(names=["blocks.0.attn.hook_patern"]),
                                 C.NOT_FOUND, "did you mean")
        info = error_details(error)["ErrorInfo"]
        self.assertEqual((info.reason, info.domain), ("UNKNOWN_HOOK", "lensgrid.v1"))
        self.assertEqual(info.metadata["hook"], "blocks.0.attn.hook_patern")
        self.assertEqual(info.metadata["closest"].split(",")[0], "blocks.0.attn.hook_pattern")
        # An intervention's hook: the field that was wrong, too.
        request = worker_pb2.RunWithInterventionsRequest(
            input=tokens([1, 2]), interventions=[
                worker_pb2.Intervention(hook="blocks.0.hook_resid_pre", op=worker_pb2.Intervention.ZERO),
                worker_pb2.Intervention(hook="blocks.0.hook_resid_pr", op=worker_pb2.Intervention.ZERO)])
        error = self.assertError(lambda: list(self.stub.RunWithInterventions(request, timeout=60)),
                                 C.NOT_FOUND, "interventions[1]")
        details = error_details(error)
        self.assertEqual(details["ErrorInfo"].metadata["closest"].split(",")[0],
                         "blocks.0.hook_resid_pre")
        self.assertEqual([v.field for v in details["BadRequest"].field_violations],
                         ["interventions[1]"])
        # A plain bad request has a clear message and no details to misread.
        error = self.assertError(lambda: self.run_cache(regexes=["("]), C.INVALID_ARGUMENT)
        self.assertNotIn("ErrorInfo", error_details(error))
        self.assertStillServing()

    def run_cache(self, **cache):
        request = worker_pb2.RunWithCacheRequest(input=tokens([[1, 2, 3]]),
                                                 cache=worker_pb2.CacheSpec(**cache))
        return list(self.stub.RunWithCache(request, timeout=120))

    def test_a_40kb_nested_regex_is_invalid_not_a_crash(self):
        nested = "(" * 20000 + "a" + ")" * 20000
        self.assertCode(lambda: self.run_cache(regexes=[nested]), C.INVALID_ARGUMENT,
                        "longer than the 1024-byte limit")
        self.assertCode(lambda: self.run_cache(regexes=["(" * 100 + "x" + ")" * 100]),
                        C.INVALID_ARGUMENT, "nests parentheses deeper")
        self.assertStillServing()

    def test_backtracking_regexes_do_not_wedge_the_executor(self):
        # The probe's pattern wedged std::regex on the only executor thread.
        self.assertCode(lambda: self.run_cache(regexes=["(.*.*)*x"]), C.NOT_FOUND,
                        "matches no hook point")
        # A regex that truly backtracks on a hook name hits the match limit.
        self.assertCode(lambda: self.run_cache(regexes=[r"^(\w|\w\w|\.)*\d$"]),
                        C.RESOURCE_EXHAUSTED, "too much backtracking")
        reply = self.run_cache(regexes=[r"blocks\.0\.attn\.hook_(q|k)$"])
        names = [t.name for t in reply[0].header.tensors]
        self.assertEqual(sorted(names), ["blocks.0.attn.hook_k", "blocks.0.attn.hook_q", "logits"])
        self.assertStillServing()

    def test_a_huge_regex_or_hook_name_is_echoed_short(self):
        details = self.assertCode(lambda: self.run_cache(regexes=["a" * 688_000]),
                                  C.INVALID_ARGUMENT, "(688000 bytes)")
        self.assertNotIn("a" * 200, details)
        self.assertCode(lambda: self.run_cache(names=["b" * 1_000_000]), C.NOT_FOUND,
                        "unknown hook name", "(1000000 bytes)")
        self.assertStillServing()

    def shard(self, **fields):
        fields = {"method": spb.METHOD_ABLATE_HEADS, **fields}
        return worker_pb2.RunShardRequest(shard=spb.ShardSpec(**fields), weights_sha256=self.sha)

    def test_malformed_shard_specs_are_invalid_not_a_crash(self):
        one = spb.InlinePrompt(tokens=[1, 2], answers=[3], wrongs=[4])
        for request, needle in [
                (self.shard(method=spb.SEARCH_METHOD_UNSPECIFIED, n_prompts=1, prompts=[one]),
                 "method is unspecified"),
                (self.shard(method=77, n_prompts=1, prompts=[one]), "77 is not one"),
                (self.shard(n_prompts=1, prompt_end=10**12, prompts=[one]), "prompt range"),
                (self.shard(n_prompts=10**12, prompts=[one]), "carries 1 prompts"),
                (self.shard(n_prompts=1, prompts=[spb.InlinePrompt(tokens=[1, 10**9],
                                                                   answers=[3], wrongs=[4])]),
                 "not a token id"),
                (self.shard(n_prompts=1, n_pos=10**6, prompts=[one]), "n_ctx"),
                (self.shard(n_prompts=1, component_begin=-5, prompts=[one]), "component range"),
                (self.shard(n_prompts=1, ablation=spb.ABLATION_MEAN, prompts=[one]),
                 "mean ablation needs every prompt")]:
            with self.subTest(needle):
                self.assertCode(lambda: list(self.stub.RunShard(request, timeout=60)),
                                C.INVALID_ARGUMENT, needle)
        self.assertStillServing()

    def test_shards_beyond_the_limits_are_refused_before_work(self):
        one = spb.InlinePrompt(tokens=[1, 2], answers=[3], wrongs=[4])
        too_many = self.shard(n_prompts=2_000_000, prompts=[one] * 2_000_000)
        self.assertCode(lambda: list(self.stub.RunShard(too_many, timeout=300)),
                        C.RESOURCE_EXHAUSTED, "2000000 prompts")
        # 5000 prompts padded to 100 positions: 500k tokens, over --max-tokens.
        wide = self.shard(n_prompts=5000, n_pos=100, prompts=[one] * 5000)
        self.assertCode(lambda: list(self.stub.RunShard(wide, timeout=60)),
                        C.RESOURCE_EXHAUSTED, "--prompts-per-shard")
        self.assertStillServing()

    def test_tokenize_obeys_the_limits(self):
        # 60 MB of text once blocked the worker for 27 s at 4.4 GB.
        big = worker_pb2.TokenizeRequest(texts=["lorem ipsum " * 5_000_000])
        self.assertCode(lambda: self.stub.Tokenize(big, timeout=60), C.RESOURCE_EXHAUSTED,
                        "--max-text-bytes")
        # 200k texts once made a 132 MB reply no client could receive.
        many = worker_pb2.TokenizeRequest(texts=["a b c"] * 200_000)
        self.assertCode(lambda: self.stub.Tokenize(many, timeout=60), C.RESOURCE_EXHAUSTED,
                        "texts is over this worker's limit")
        wide = worker_pb2.TokenizeRequest(texts=["word " * 800_000])  # 4 MB, ~800k tokens
        self.assertCode(lambda: self.stub.Tokenize(wide, timeout=60), C.RESOURCE_EXHAUSTED,
                        "more than a gRPC client receives")
        ids = worker_pb2.DetokenizeRequest(ids=[5] * 2_000_000)
        self.assertCode(lambda: self.stub.Detokenize(ids, timeout=60), C.RESOURCE_EXHAUSTED,
                        "ids is over this worker's limit")
        runs = worker_pb2.RunWithCacheRequest(
            input=worker_pb2.ModelInput(texts=["lorem ipsum " * 500_000]))
        self.assertCode(lambda: list(self.stub.RunWithCache(runs, timeout=60)),
                        C.RESOURCE_EXHAUSTED, "--max-text-bytes")
        self.assertStillServing()

    def test_replies_in_flight_share_one_memory_budget(self):
        # Each reply: 2 x 160 tokens of F32 logits over 50257 ids = 64 MB; the
        # budget (--max-reply-memory) is 96 MB. A client that does not read
        # keeps its reply's bytes held, so a second one is refused.
        request = worker_pb2.RunWithCacheRequest(
            input=tokens(np.arange(320).reshape(2, 160) % 1000),
            cache=worker_pb2.CacheSpec(names=["hook_embed"]))
        stalled = self.stub.RunWithCache(request, timeout=300)
        first = next(stalled)  # the header: the reply is computed and held
        self.assertTrue(first.HasField("header"))
        self.assertGreater(first.header.total_bytes, 60 << 20)
        error = self.assertError(lambda: list(self.stub.RunWithCache(request, timeout=120)),
                                 C.RESOURCE_EXHAUSTED, "--max-reply-memory")
        details = error_details(error)
        self.assertEqual(details["ErrorInfo"].reason, "REPLY_BUDGET_EXCEEDED")
        self.assertEqual(int(details["ErrorInfo"].metadata["budget_bytes"]), 96 << 20)
        self.assertEqual(details["QuotaFailure"].violations[0].subject, "--max-reply-memory")
        stalled.cancel()
        # Once the stalled reply is gone its bytes are free again.
        deadline = time.monotonic() + 120
        while True:
            try:
                reply = list(self.stub.RunWithCache(request, timeout=120))
                break
            except grpc.RpcError as e:
                if e.code() != C.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.assertEqual(sum(len(r.chunk.data) for r in reply[1:]), reply[0].header.total_bytes)
        self.assertStillServing()


class StuckRequestTest(unittest.TestCase):
    """A request that cannot see a cancellation for a long time: health says
    NOT_SERVING while it makes no progress, and SIGTERM still ends the worker."""

    def test_stalled_executor_is_not_serving_and_sigterm_still_exits(self):
        with tempfile.TemporaryDirectory() as tmp:
            # GPT-2-small widths, one thread: one block over 16k tokens is
            # hundreds of GFLOPs between two cancellation checks.
            model = os.path.join(tmp, "wide")
            subprocess.run([LENSGRID_BIN, "init", "--out", model, "--layers", "2", "--heads",
                            "12", "--d-model", "768", "--vocab", "1000", "--n-ctx", "256"],
                           check=True, capture_output=True)
            worker = WorkerProcess(WORKER_BIN, model, "--threads", "1", "--stall-ms", "100",
                                   "--shutdown-grace-ms", "100")
            try:
                with grpc.insecure_channel(worker.address) as channel:
                    stub = worker_pb2_grpc.WorkerStub(channel)
                    self.assertEqual(health(worker.address), "SERVING")
                    request = worker_pb2.RunWithCacheRequest(
                        input=tokens(np.arange(64 * 256).reshape(64, 256) % 1000),
                        options=worker_pb2.RunOptions(stop_at_layer=1,
                                                      return_type=worker_pb2.RETURN_NONE),
                        cache=worker_pb2.CacheSpec(names=["hook_embed"]))
                    stream = stub.RunWithCache(request, timeout=600)  # starts at once
                    worker.wait_for_log(r"NOT_SERVING: a request has made no progress", 300)
                    self.assertEqual(health(worker.address), "NOT_SERVING")
                    worker.proc.terminate()
                    worker.proc.wait(timeout=300)  # against hangs only
                    self.assertEqual(worker.proc.returncode, 0, worker.log_text())
                    self.assertIn("shutting down", worker.log_text())
                    stream.cancel()
            finally:
                worker.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
