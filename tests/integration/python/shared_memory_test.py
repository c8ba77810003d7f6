#!/usr/bin/python3
"""The same-host shared-memory path (Worker API 2.1) of the installed Python package against a
real lensgrid-worker on loopback: replies written into a region equal the streamed replies bit
for bit (a full cache in F32, F16 and BF16, run_with_interventions, get_weights); a region too
small is RESOURCE_EXHAUSTED with the sizes; a closed region is refused here and NOT_FOUND at the
worker; a client killed with SIGKILL has its region detached by the worker (its log says so);
arrays are views until the next write and copies with copy=True; an older worker is a clear
error before any call.

usage: shared_memory_test.py INSTALL_DIR LENSGRID_WORKER SOURCE_DIR
"""
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import unittest
from concurrent import futures

INSTALL, WORKER_BIN, SOURCE = sys.argv[1:4]
del sys.argv[1:4]
sys.path.insert(0, INSTALL)
sys.path.insert(1, os.path.join(SOURCE, "tests", "integration", "worker"))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import lensgrid  # noqa: E402
from lensgrid.v1 import worker_pb2, worker_pb2_grpc  # noqa: E402
from worker_harness import WorkerProcess  # noqa: E402

MODEL = os.path.join(SOURCE, "models", "lensgrid-tiny")
PROMPTS = ["The cat sat on the mat. The cat sat", "When Mary and John went to the store"]
DTYPES = ("float32", "float16", "bfloat16")


def shm_path(name):
    return os.path.join("/dev/shm", name.lstrip("/"))


def align64(n):
    return (n + 63) // 64 * 64


def in_region(array):
    """Whether array views a shared-memory mapping (not a copy, not a streamed buffer)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    base = array.base
    return isinstance(base, mmap.mmap) or (isinstance(base, memoryview)
                                           and isinstance(base.obj, mmap.mmap))


class SharedMemoryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = WorkerProcess(WORKER_BIN, MODEL, "--threads", "1",
                                 "--metrics-listen", "127.0.0.1:0")
        cls.worker = lensgrid.Worker(cls.proc.address, timeout=120)
        cls.shm = cls.worker.shared_memory(64 << 20)

    @classmethod
    def tearDownClass(cls):
        cls.shm.close()
        cls.worker.close()
        cls.proc.stop()

    def assert_same_reply(self, streamed, shared, tensors_of=lambda r: r):
        """Same tensors in the same order, same dtypes and shapes, the same bytes."""
        want, got = tensors_of(streamed), tensors_of(shared)
        self.assertEqual(list(got), list(want))
        self.assertGreater(len(want), 0)
        for name in want:
            self.assertEqual(got[name].dtype, want[name].dtype, name)
            self.assertEqual(got[name].shape, want[name].shape, name)
            self.assertTrue(got[name].tobytes() == want[name].tobytes(), name)
        for attr in ("logits", "loss", "metric", "tokens", "attention_mask"):
            a, b = getattr(streamed, attr, None), getattr(shared, attr, None)
            self.assertEqual(a is None, b is None, attr)
            if a is not None:
                self.assertEqual(b.dtype, a.dtype, attr)
                self.assertTrue(np.asarray(a).tobytes() == np.asarray(b).tobytes(), attr)
        if hasattr(streamed, "dtypes"):
            self.assertEqual(shared.dtypes, streamed.dtypes)

    def test_full_cache_equals_the_stream_bit_for_bit_in_each_dtype(self):
        for dtype in DTYPES:
            with self.subTest(dtype=dtype):
                kw = dict(dtype=dtype, logits_dtype=dtype, return_type="both")
                streamed = self.worker.run_with_cache(PROMPTS, **kw)
                shared = self.worker.run_with_cache(PROMPTS, shared_memory=self.shm, **kw)
                self.assert_same_reply(streamed, shared)
                widened = dtype == "bfloat16"  # BF16 arrives widened, a copy
                self.assertEqual({in_region(a) for a in shared.values()}, {not widened})
                self.assertEqual(in_region(shared.logits), not widened)
                self.assertFalse(any(in_region(a) for a in streamed.values()))
                wire = "BF16" if dtype == "bfloat16" else "F16" if dtype == "float16" else "F32"
                self.assertEqual(set(shared.dtypes.values()) - {"F32"}, {wire} - {"F32"})

    def test_interventions_equal_the_stream(self):
        kw = dict(interventions=[{"hook": "blocks.0.attn.hook_z", "head": 1, "op": "zero"},
                                 {"hook": ("resid_pre", 1), "positions": [-1], "op": "patch"}],
                  patch_input="When John and Mary went to the store", cache=True,
                  return_type="both")
        streamed = self.worker.run_with_interventions(PROMPTS[1], **kw)
        shared = self.worker.run_with_interventions(PROMPTS[1], shared_memory=self.shm, **kw)
        self.assert_same_reply(streamed, shared)
        self.assertTrue(all(in_region(a) for a in shared.values()))

    def test_weights_equal_the_stream(self):
        for dtype in (None, "float16", "bfloat16"):
            with self.subTest(dtype=dtype):
                streamed = self.worker.get_weights(dtype=dtype)
                shared = self.worker.get_weights(dtype=dtype, shared_memory=self.shm)
                self.assertIn("W_E", shared)
                self.assert_same_reply(streamed, shared, tensors_of=dict)
                self.assertEqual({in_region(a) for a in shared.values()}, {dtype != "bfloat16"})

    def test_arrays_are_views_until_the_next_write_and_copies_on_request(self):
        name = "blocks.1.hook_resid_post"
        a, b = np.array([[5, 6, 7, 8, 9]]), np.array([[10, 11, 12, 13, 14]])
        kw = dict(names=[name], return_type=None, shared_memory=self.shm)
        view = self.worker.run_with_cache(a, **kw)[name]
        kept = self.worker.run_with_cache(a, copy=True, **kw)[name]
        self.assertTrue(np.array_equal(view, kept))
        self.assertTrue(np.shares_memory(view, self.worker.run_with_cache(a, **kw)[name]))
        self.assertFalse(np.shares_memory(view, kept))
        other = self.worker.run_with_cache(b, copy=True, **kw)[name]
        self.assertFalse(np.array_equal(other, kept))
        # The region now holds b's activation, where the view of a's points; the copy kept a's.
        self.assertTrue(np.array_equal(view, other))
        self.assertTrue(np.array_equal(kept, self.worker.run_with_cache(a, names=[name])[name]))

    def test_calls_one_after_another_reuse_the_same_bytes(self):
        # A call that has returned writes nothing any more: the next one may use its bytes
        # (FAILED_PRECONDITION is only for calls in flight at the same time).
        for _ in range(200):
            self.worker.run_with_cache(PROMPTS[0], names=["blocks.0.hook_resid_post"],
                                       shared_memory=self.shm)

    def test_ranges_write_where_asked(self):
        names = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
        streamed = self.worker.run_with_cache(PROMPTS, names=names)
        part = self.shm.range(8 << 20, 4 << 20)
        shared = self.worker.run_with_cache(PROMPTS, names=names, shared_memory=part)
        self.assert_same_reply(streamed, shared)
        region = np.frombuffer(self.shm._map, np.uint8)
        for a in [shared.logits, *shared.values()]:
            start = a.__array_interface__["data"][0] - region.__array_interface__["data"][0]
            self.assertTrue(8 << 20 <= start and start + a.nbytes <= 12 << 20, start)
            self.assertEqual(start % 64, 0)
        copied = self.worker.run_with_cache(PROMPTS, names=names, shared_memory=part, copy=True)
        self.assert_same_reply(streamed, copied)
        self.assertFalse(any(in_region(a) for a in copied.values()))

    def test_a_region_too_small_is_resource_exhausted_with_the_sizes(self):
        streamed = self.worker.run_with_cache(PROMPTS)
        sizes = [streamed.logits.nbytes] + [a.nbytes for a in streamed.values()]
        needed = sum(align64(n) for n in sizes[:-1]) + sizes[-1]
        with self.worker.shared_memory(4096) as small:
            with self.assertRaises(lensgrid.WorkerError) as cm:
                self.worker.run_with_cache(PROMPTS, shared_memory=small)
        self.assertEqual(cm.exception.code, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.assertIn(f"needs {needed} bytes", cm.exception.details)
        self.assertIn("has 4096", cm.exception.details)

    def test_a_closed_region_is_refused_here_and_not_found_at_the_worker(self):
        shm = self.worker.shared_memory(1 << 20)
        name, region_id = shm.name, shm.region_id
        # The name is gone once the worker has the object mapped (it was created 0600:
        # the worker refuses anything writable by group or others).
        self.assertFalse(os.path.exists(shm_path(name)))
        self.assertTrue(shm.attached())
        shm.close()
        self.assertTrue(shm.closed)
        with self.assertRaisesRegex(lensgrid.InvalidInputError, "closed"):
            self.worker.run_with_cache(PROMPTS[0], shared_memory=shm)
        self.proc.wait_for_log(rf"AttachSharedMemory: detached {name}\b")
        # The worker itself refuses the region id once it has detached it.
        request = worker_pb2.RunWithCacheRequest(input=worker_pb2.ModelInput(texts=[PROMPTS[0]]))
        request.options.shared_memory.region_id = region_id
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.worker._stub.RunWithCache(request, timeout=60))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertIn(region_id, cm.exception.details())

    def metric(self, name):
        import urllib.request
        url = self.proc.wait_for_log(r"metrics on (http://\S+)").group(1)
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        [value] = [line.split()[1] for line in text.splitlines() if line.startswith(name + " ")]
        return float(value)

    def wait_for_metric(self, name, value, timeout=60):
        """Waits (bounded only against hangs) until the worker's /metrics shows name = value."""
        import time
        end = time.monotonic() + timeout
        while self.metric(name) != value:
            if time.monotonic() > end:
                self.fail(f"{name} stayed {self.metric(name)}, not {value}")
            time.sleep(0.02)

    def test_metrics_count_the_regions_attached(self):
        gauge = "lensgrid_worker_shared_memory_regions"
        self.wait_for_metric(gauge, 1)  # the class's region (others' closes land first)
        shm = self.worker.shared_memory(1 << 16)
        self.wait_for_metric(gauge, 2)
        shm.close()
        self.wait_for_metric(gauge, 1)
        # The shard cache's figures sit beside it (this worker ran no shard).
        for name in ("lensgrid_worker_shard_cache_hits_total",
                     "lensgrid_worker_shard_cache_misses_total",
                     "lensgrid_worker_shard_cache_bytes"):
            self.assertEqual(self.metric(name), 0, name)

    def test_a_killed_client_has_its_region_detached(self):
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {INSTALL!r})
            import lensgrid
            shm = lensgrid.Worker({self.proc.address!r}).shared_memory(1 << 20)
            print(shm.name, shm.region_id, flush=True)
            time.sleep(600)
            """)], stdout=subprocess.PIPE, text=True)
        try:
            name, region_id = child.stdout.readline().split()
            self.proc.wait_for_log(rf"AttachSharedMemory: attached {name}\b")
            child.send_signal(signal.SIGKILL)
            child.wait()
            self.proc.wait_for_log(rf"AttachSharedMemory: detached {name}\b", timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()
        # Unlinked as soon as the worker had mapped it: nothing outlives a killed client.
        self.assertFalse(os.path.exists(shm_path(name)))
        request = worker_pb2.GetWeightsRequest(names=["W_E"])
        request.shared_memory.region_id = region_id
        with self.assertRaises(grpc.RpcError) as cm:
            list(self.worker._stub.GetWeights(request, timeout=60))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_closing_the_worker_closes_its_regions(self):
        with lensgrid.Worker(self.proc.address) as w:
            shm = w.shared_memory(1 << 20)
        self.assertTrue(shm.closed)
        self.assertFalse(os.path.exists(shm_path(shm.name)))
        self.proc.wait_for_log(rf"AttachSharedMemory: detached {shm.name}\b")

    def test_bad_sizes_are_refused_before_anything_is_created(self):
        before = set(os.listdir("/dev/shm"))
        for size in (0, -1):
            with self.assertRaises(lensgrid.InvalidInputError):
                self.worker.shared_memory(size)
        with self.assertRaises(lensgrid.InvalidInputError):
            self.worker.run_with_cache(PROMPTS[0], shared_memory="region")
        self.assertEqual(set(os.listdir("/dev/shm")) - before, set())


class _OldWorker(worker_pb2_grpc.WorkerServicer):
    def GetModelInfo(self, request, context):
        return worker_pb2.ModelInfo(model_dir="/m/fake", api_version="2.0")


class OlderWorkerTest(unittest.TestCase):
    def test_a_2_0_worker_is_a_clear_error_before_any_call(self):
        server = grpc.server(futures.ThreadPoolExecutor(2))
        worker_pb2_grpc.add_WorkerServicer_to_server(_OldWorker(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(server.stop, None)
        before = set(os.listdir("/dev/shm"))
        with lensgrid.Worker(f"127.0.0.1:{port}") as w:
            with self.assertRaises(lensgrid.ApiVersionError) as cm:
                w.shared_memory(1 << 20)
        self.assertIn("needs Worker API 2.1", str(cm.exception))
        self.assertIn("2.0", str(cm.exception))
        self.assertEqual(set(os.listdir("/dev/shm")) - before, set())


if __name__ == "__main__":
    unittest.main(verbosity=2)
