#!/usr/bin/python3
"""Small replies in one message (Worker API 2.2) with the installed Python package against real
lensgrid-workers on loopback: the client asks for inline tensors on every streamed call; a
reply that fits in one chunk comes as the header alone, its tensors in inline_chunks, and a
larger one streams as before (the threshold is the worker's --chunk-bytes); either way the
arrays equal, bit for bit, those of the same call with inline tensors off (run_with_cache in
F32, F16 and BF16, run_with_interventions, get_weights). With a shared-memory target the
worker writes the region and inlines nothing. A worker that predates 2.2 ignores the flag and
streams, and the client reads that too.

usage: inline_test.py INSTALL_DIR LENSGRID_WORKER SOURCE_DIR
"""
import os
import sys
import threading
import unittest
from concurrent import futures

INSTALL, WORKER_BIN, SOURCE = sys.argv[1:4]
del sys.argv[1:4]
sys.path.insert(0, INSTALL)
sys.path.insert(1, os.path.join(SOURCE, "tests", "integration", "worker"))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import lensgrid  # noqa: E402
from lensgrid.v1 import tensor_pb2, worker_pb2, worker_pb2_grpc  # noqa: E402
from worker_harness import WorkerProcess  # noqa: E402

MODEL = os.path.join(SOURCE, "models", "lensgrid-tiny")
PROMPTS = ["The cat sat on the mat. The cat sat", "When Mary and John went to the store"]
DTYPES = ("float32", "float16", "bfloat16")
SMALL_CHUNK = 16 << 10  # the second worker's --chunk-bytes


def large_tokens():
    """[8, 60] token ids: a full cache of them is several MiB (the tiny model's d_vocab is 307)."""
    return np.random.default_rng(7).integers(0, 306, size=(8, 60), dtype=np.int64)


def with_inline(worker, on):
    """A context manager turning the client's inline_tensors request flag on or off."""
    class _Switch:
        def __enter__(self):
            worker._inline_tensors = on

        def __exit__(self, *exc):
            del worker._inline_tensors  # back to the class's default (True)
    return _Switch()


class _CountingCall:
    """A streamed call of the client's whose messages are counted into counts[-1]."""

    def __init__(self, call, counts):
        self.call, self.counts = call, counts

    def __iter__(self):
        for raw in self.call:
            self.counts[-1] += 1
            yield raw

    def cancel(self):
        return self.call.cancel()


def count_messages(worker):
    """Wraps the worker's streamed calls so each call appends its count of reply messages to
    the list returned."""
    counts = []

    def wrap(fn):
        def call(request, timeout=None):
            counts.append(0)
            return _CountingCall(fn(request, timeout=timeout), counts)
        return call
    worker._raw = {name: wrap(fn) for name, fn in worker._raw.items()}
    return counts


class InlineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = WorkerProcess(WORKER_BIN, MODEL, "--threads", "1")
        cls.small = WorkerProcess(WORKER_BIN, MODEL, "--threads", "1",
                                  "--chunk-bytes", str(SMALL_CHUNK))
        cls.worker = lensgrid.Worker(cls.proc.address, timeout=120)
        cls.small_worker = lensgrid.Worker(cls.small.address, timeout=120)
        cls.counts = {cls.worker: count_messages(cls.worker),
                      cls.small_worker: count_messages(cls.small_worker)}

    @classmethod
    def tearDownClass(cls):
        cls.worker.close()
        cls.small_worker.close()
        cls.proc.stop()
        cls.small.stop()

    def test_the_worker_speaks_2_2(self):
        self.assertGreaterEqual(self.worker.api_version(), (2, 2))
        self.assertEqual(self.worker.model_info().limits.chunk_bytes, 1 << 20)
        self.assertEqual(self.small_worker.model_info().limits.chunk_bytes, SMALL_CHUNK)

    # --- the wire, read with protobuf's own stubs -----------------------------------------

    def replies(self, worker, method, request):
        return list(getattr(worker._stub, method)(request, timeout=120))

    def run_request(self, inline, input=PROMPTS, **cache):
        """A RunWithCacheRequest for texts or (without BOS) token ids, logits and loss."""
        request = worker_pb2.RunWithCacheRequest(
            options=worker_pb2.RunOptions(return_type=worker_pb2.RETURN_BOTH,
                                          inline_tensors=inline),
            cache=worker_pb2.CacheSpec(**cache))
        if isinstance(input[0], str):
            request.input.texts.extend(input)
        else:
            request.input.tokens.CopyFrom(lensgrid._wire.to_tensor(np.asarray(input), "tokens"))
            request.input.prepend_bos = False
        return request

    def assert_inline(self, replies):
        """One message: the header, every tensor it lists as one whole chunk, in order."""
        self.assertEqual(len(replies), 1)
        header = replies[0].header
        self.assertEqual([c.name for c in header.inline_chunks], [t.name for t in header.tensors])
        for c, t in zip(header.inline_chunks, header.tensors):
            self.assertEqual((c.offset, c.total_bytes, len(c.data)), (0, t.num_bytes, t.num_bytes))
            self.assertEqual((c.dtype, list(c.shape)), (t.dtype, list(t.shape)))
        self.assertEqual(sum(len(c.data) for c in header.inline_chunks), header.total_bytes)
        return header

    def assert_streamed(self, replies, chunk_bytes):
        header = replies[0].header
        self.assertEqual(len(header.inline_chunks), 0)
        chunks = [r.chunk for r in replies[1:]]
        self.assertTrue(all(r.WhichOneof("item") == "chunk" for r in replies[1:]))
        self.assertEqual(sum(len(c.data) for c in chunks), header.total_bytes)
        self.assertTrue(all(len(c.data) <= chunk_bytes for c in chunks))
        return header, chunks

    def test_a_small_reply_is_one_message_only_when_asked(self):
        request = self.run_request(True, names=["blocks.0.hook_resid_post"])
        inline = self.assert_inline(self.replies(self.worker, "RunWithCache", request))
        self.assertLessEqual(inline.total_bytes, 1 << 20)
        request.options.inline_tensors = False
        streamed, chunks = self.assert_streamed(
            self.replies(self.worker, "RunWithCache", request), 1 << 20)
        self.assertGreater(len(chunks), 0)
        self.assertEqual(inline.tensors, streamed.tensors)
        self.assertEqual(inline.tokens, streamed.tokens)
        # The same bytes in the two forms.
        joined = {}
        for c in chunks:
            joined[c.name] = joined.get(c.name, b"") + c.data
        self.assertEqual({c.name: c.data for c in inline.inline_chunks}, joined)

    def test_a_reply_over_one_chunk_streams_even_when_inline_is_asked(self):
        request = self.run_request(True, input=large_tokens().tolist())
        replies = self.replies(self.worker, "RunWithCache", request)
        header, chunks = self.assert_streamed(replies, 1 << 20)
        self.assertGreater(header.total_bytes, 1 << 20)
        self.assertGreater(len(chunks), 1)

    def test_the_threshold_is_the_workers_chunk_size(self):
        # Logits and one resid of 2 prompts: over 16 KiB, well under 1 MiB.
        request = self.run_request(True, names=["blocks.0.hook_resid_post"])
        big = self.assert_inline(self.replies(self.worker, "RunWithCache", request))
        self.assertGreater(big.total_bytes, SMALL_CHUNK)
        self.assert_streamed(self.replies(self.small_worker, "RunWithCache", request),
                             SMALL_CHUNK)
        # One short prompt's resid alone fits in 16 KiB: inline there too.
        request = self.run_request(True, input=[PROMPTS[0]], names=["blocks.0.hook_resid_post"])
        request.options.return_type = worker_pb2.RETURN_LOSS
        header = self.assert_inline(self.replies(self.small_worker, "RunWithCache", request))
        self.assertLessEqual(header.total_bytes, SMALL_CHUNK)
        # Weights: every one of the tiny model's fits in 1 MiB, not in 16 KiB.
        weights = worker_pb2.GetWeightsRequest(inline_tensors=True)
        self.assert_inline(self.replies(self.worker, "GetWeights", weights))
        self.assert_streamed(self.replies(self.small_worker, "GetWeights", weights), SMALL_CHUNK)

    # --- the client: both forms give the same arrays --------------------------------------

    def assert_same(self, a, b, tensors_of=lambda r: r):
        want, got = tensors_of(a), tensors_of(b)
        self.assertEqual(list(got), list(want))
        self.assertGreater(len(want), 0)
        for name in want:
            self.assertEqual(got[name].dtype, want[name].dtype, name)
            self.assertEqual(got[name].shape, want[name].shape, name)
            self.assertTrue(got[name].tobytes() == want[name].tobytes(), name)
        for attr in ("logits", "loss", "metric", "tokens", "attention_mask"):
            x, y = getattr(a, attr, None), getattr(b, attr, None)
            self.assertEqual(x is None, y is None, attr)
            if x is not None:
                self.assertEqual((x.dtype, x.shape), (y.dtype, y.shape), attr)
                self.assertTrue(np.asarray(x).tobytes() == np.asarray(y).tobytes(), attr)
        if hasattr(a, "dtypes"):
            self.assertEqual(a.dtypes, b.dtypes)

    def both(self, worker, call):
        """call(worker) with the client's default (inline asked) and with inline off -> the two
        results, and how many messages each reply was."""
        counts = self.counts[worker]
        inline = call(worker)
        n_inline = counts[-1]
        with with_inline(worker, False):
            streamed = call(worker)
        return inline, streamed, (n_inline, counts[-1])

    def test_small_runs_equal_with_and_without_inline_in_each_dtype(self):
        for dtype in DTYPES:
            with self.subTest(dtype=dtype):
                kw = dict(dtype=dtype, logits_dtype=dtype, return_type="both")
                inline, streamed, (n_inline, n_streamed) = self.both(
                    self.worker, lambda w: w.run_with_cache(PROMPTS, **kw))
                self.assertGreater(len(inline), 10)  # the full cache
                self.assertEqual(n_inline, 1)  # the header alone
                self.assertGreater(n_streamed, len(inline))  # the header and >= 1 per tensor
                self.assert_same(inline, streamed)

    def test_large_runs_equal_with_and_without_inline(self):
        tokens = large_tokens()
        for worker in (self.worker, self.small_worker):
            inline, streamed, (n_inline, n_streamed) = self.both(
                worker, lambda w: w.run_with_cache(tokens, prepend_bos=False, return_type="both"))
            total = inline.logits.nbytes + sum(a.nbytes for a in inline.values())
            self.assertGreater(total, 1 << 20)
            self.assertGreater(n_inline, len(inline))  # streamed although inline was asked
            self.assertEqual(n_inline, n_streamed)
            self.assert_same(inline, streamed)

    def test_interventions_equal_with_and_without_inline(self):
        kw = dict(interventions=[{"hook": "blocks.0.attn.hook_z", "head": 1, "op": "zero"},
                                 {"hook": ("resid_pre", 1), "positions": [-1], "op": "patch"}],
                  patch_input="When John and Mary went to the store", cache=True,
                  return_type="both",
                  metric={"kind": "logit_diff", "answer": 5, "wrong": 7, "per_prompt": True})
        for worker in (self.worker, self.small_worker):
            inline, streamed, (n_inline, n_streamed) = self.both(
                worker, lambda w: w.run_with_interventions(PROMPTS[1], **kw))
            self.assertIsNotNone(inline.metric)
            # 1 MiB holds the reply; 16 KiB does not.
            self.assertEqual(n_inline == 1, worker is self.worker)
            self.assertGreater(n_streamed, len(inline))
            self.assert_same(inline, streamed)

    def test_weights_equal_with_and_without_inline(self):
        for worker in (self.worker, self.small_worker):
            for dtype in (None, "bfloat16"):
                with self.subTest(chunk=worker.model_info().limits.chunk_bytes, dtype=dtype):
                    inline, streamed, (n_inline, n_streamed) = self.both(
                        worker, lambda w: w.get_weights(dtype=dtype))
                    self.assertIn("W_E", inline)
                    self.assertEqual(n_inline == 1, worker is self.worker)
                    self.assertGreater(n_streamed, len(inline))
                    self.assert_same(inline, streamed, tensors_of=dict)

    def test_a_reply_with_no_tensors(self):
        nothing, streamed, counts = self.both(self.worker, lambda w: w.run_with_interventions(
            PROMPTS[0], return_type=None))
        self.assertEqual(counts, (1, 1))
        self.assertEqual(dict(nothing), {})
        self.assertIsNone(nothing.logits)
        self.assert_same(nothing, streamed, tensors_of=lambda r: {"tokens": r.tokens})
        request = worker_pb2.RunWithInterventionsRequest(
            input=worker_pb2.ModelInput(texts=[PROMPTS[0]]),
            options=worker_pb2.RunOptions(return_type=worker_pb2.RETURN_NONE,
                                          inline_tensors=True))
        [reply] = self.replies(self.worker, "RunWithInterventions", request)
        self.assertEqual((len(reply.header.tensors), len(reply.header.inline_chunks)), (0, 0))

    def test_shared_memory_with_inline_asked_writes_the_region(self):
        with self.worker.shared_memory(8 << 20) as shm:
            shared = self.worker.run_with_cache(PROMPTS, shared_memory=shm, copy=True)
            with with_inline(self.worker, False):
                streamed = self.worker.run_with_cache(PROMPTS)
            self.assert_same(streamed, shared)
            request = self.run_request(True, names=["blocks.0.hook_resid_post"])
            request.options.shared_memory.CopyFrom(shm.range(0, 0).target())
            [reply] = self.replies(self.worker, "RunWithCache", request)
            self.assertTrue(reply.header.in_shared_memory)
            self.assertEqual(len(reply.header.inline_chunks), 0)


class _OldWorker(worker_pb2_grpc.WorkerServicer):
    """A 2.1 worker: streams every reply as a header and 5-byte chunks, whatever is asked."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()

    def GetModelInfo(self, request, context):
        return worker_pb2.ModelInfo(model_dir="/m/fake", api_version="2.1")

    def _reply(self, request, tensors):
        with self.lock:
            self.requests.append(request)
        header = worker_pb2.RunHeader(total_bytes=sum(a.nbytes for a in tensors.values()))
        header.tokens.CopyFrom(lensgrid._wire.to_tensor(np.array([[1, 2, 3]]), "tokens"))
        for name, a in tensors.items():
            header.tensors.add(name=name, dtype=tensor_pb2.F32, shape=list(a.shape),
                               num_bytes=a.nbytes)
        yield worker_pb2.RunResponse(header=header)
        for name, a in tensors.items():
            data = a.tobytes()
            for offset in range(0, len(data), 5):
                chunk = tensor_pb2.TensorChunk(name=name, offset=offset,
                                               data=data[offset:offset + 5])
                if offset == 0:
                    chunk.dtype, chunk.total_bytes = tensor_pb2.F32, len(data)
                    chunk.shape.extend(a.shape)
                yield worker_pb2.RunResponse(chunk=chunk)

    TENSORS = {"logits": np.arange(1 * 3 * 4, dtype="<f4").reshape(1, 3, 4) / 7,
               "blocks.0.hook_resid_post": -np.arange(6, dtype="<f4").reshape(1, 3, 2)}

    def RunWithCache(self, request, context):
        yield from self._reply(request, self.TENSORS)

    def RunWithInterventions(self, request, context):
        yield from self._reply(request, self.TENSORS)

    def GetWeights(self, request, context):
        yield from self._reply(request, {"W_E": np.ones((3, 2), "<f4")})


class OlderWorkerTest(unittest.TestCase):
    def test_a_worker_before_2_2_streams_and_the_client_reads_it(self):
        servicer = _OldWorker()
        server = grpc.server(futures.ThreadPoolExecutor(2))
        worker_pb2_grpc.add_WorkerServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(server.stop, None)
        with lensgrid.Worker(f"127.0.0.1:{port}", timeout=60) as w:
            run = w.run_with_cache([1, 2, 3], names=["blocks.0.hook_resid_post"])
            ran = w.run_with_interventions([1, 2, 3], cache=True)
            weights = w.get_weights(["W_E"])
        for result in (run, ran):
            self.assertEqual(result.logits.tobytes(), _OldWorker.TENSORS["logits"].tobytes())
            self.assertEqual(result["blocks.0.hook_resid_post"].tobytes(),
                             _OldWorker.TENSORS["blocks.0.hook_resid_post"].tobytes())
        self.assertEqual(weights["W_E"].tobytes(), np.ones((3, 2), "<f4").tobytes())
        # The client asked each time: the flag is in every request.
        flags = [r.inline_tensors if isinstance(r, worker_pb2.GetWeightsRequest)
                 else r.options.inline_tensors for r in servicer.requests]
        self.assertEqual(flags, [True, True, True])


if __name__ == "__main__":
    unittest.main(verbosity=2)
