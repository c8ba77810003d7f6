#!/usr/bin/python3
"""A coordinator and real workers on loopback: a sharded search equals the
in-process one, a worker or the coordinator killed with SIGKILL mid-job loses nothing and
recomputes nothing, a malformed result is retried elsewhere, a worker's INVALID_ARGUMENT fails
the job with its message, a cancel stops the workers within a second, a watch resumes without
a gap, SIGTERM makes a worker hand its shard back, the same request id across a coordinator
kill -9 gives one job, workers on the --worker-listen port run a search, and ACDC (one job per
iteration) goes on across a coordinator kill -9 and a rerun with the same request id.

usage: cluster_test.py COORDINATOR WORKER LENSGRID PYTHONPATH
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

COORDINATOR_BIN, WORKER_BIN, LENSGRID_BIN, PY_DIR = sys.argv[1:5]
del sys.argv[1:5]
sys.path.insert(0, PY_DIR)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "worker"))
sys.path.insert(0, os.path.join(HERE, ".."))

import grpc  # noqa: E402
from lensgrid.v1 import coordinator_pb2 as cpb, search_pb2 as spb  # noqa: E402
from cluster_harness import (CoordinatorProcess, completed_shards, f32_tensor_chunk,  # noqa: E402
                             job_status, only_job, served_model_id, wait_for)
from safetensors_np import read_safetensors  # noqa: E402
from worker_harness import WorkerProcess, health, make_model  # noqa: E402

# Short leases and timeouts so that a dead worker is noticed within seconds.
FAST = ["--min-lease-ms", "1000", "--worker-timeout-ms", "2000"]


class ClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.model = make_model(LENSGRID_BIN, os.path.join(cls.tmp.name, "model"), layers=2,
                               heads=4, d_model=64, n_ctx=128, seed=5)
        cls.reference = {}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.tmp.name)
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()

    # --- helpers -------------------------------------------------------------------------
    def coordinator(self, *args, worker_listen=False):
        c = CoordinatorProcess(COORDINATOR_BIN, os.path.join(self.dir, "state"), *FAST, *args,
                               worker_listen=worker_listen)
        self.procs.append(c)
        return c

    def worker(self, coordinator, *args, name=None):
        w = WorkerProcess(WORKER_BIN, self.model, "--coordinator", coordinator.worker_address,
                          "--threads", "1", "--name", name or f"w{len(self.procs)}", *args)
        self.procs.append(w)
        return w

    def search_args(self, dataset, method, n_prompts, *extra):
        return ["search", "--model", self.model, "--dataset", dataset, "--method", method,
                "--n-prompts", str(n_prompts), "--threads", "1", *extra]

    def in_process(self, dataset, method, n_prompts, *extra):
        key = (dataset, method, n_prompts, extra)
        if key not in self.reference:
            out = os.path.join(self.tmp.name, f"ref-{len(self.reference)}")
            proc = subprocess.run([LENSGRID_BIN, *self.search_args(dataset, method, n_prompts,
                                                                   *extra),
                                   "--in-process", "--output", out],
                                  capture_output=True, text=True)
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.reference[key] = out
        return self.reference[key]

    def start_search(self, address, dataset, method, n_prompts, *extra, out=None, env=None):
        out = out or os.path.join(self.dir, "out")
        proc = subprocess.Popen([LENSGRID_BIN, *self.search_args(dataset, method, n_prompts,
                                                                 *extra),
                                 "--coordinator", address, "--output", out],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        return proc, out

    def finish(self, proc, timeout=240):
        stdout, stderr = proc.communicate(timeout=timeout)
        self.assertEqual(proc.returncode, 0, f"stdout:\n{stdout}\nstderr:\n{stderr}")
        return stdout, stderr

    def assert_same_result(self, out, ref):
        got, want = read_safetensors(os.path.join(out, "result.safetensors")), \
            read_safetensors(os.path.join(ref, "result.safetensors"))
        self.assertEqual(sorted(got), sorted(want))
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-5, err_msg=name)
        with open(os.path.join(out, "result.json")) as f:
            got_json = json.load(f)
        with open(os.path.join(ref, "result.json")) as f:
            want_json = json.load(f)
        for key in ("method", "metric", "ablation", "model", "dataset"):
            if key == "model":
                got_json[key].pop("dir"), want_json[key].pop("dir")
            self.assertEqual(got_json[key], want_json[key], key)
        self.assertEqual([c["component"] for c in got_json["outputs"][0]["ranked"][:3]],
                         [c["component"] for c in want_json["outputs"][0]["ranked"][:3]])

    def long_shard_job(self, *search_args):
        """A coordinator, one worker (1 thread) on a bigger model, and an induction
        head-ablation search whose shards take seconds; returns once a shard is leased."""
        big = make_model(LENSGRID_BIN, os.path.join(self.dir, "big"), layers=4, heads=8,
                         d_model=256, n_ctx=512, seed=1)
        c = self.coordinator()
        w = WorkerProcess(WORKER_BIN, big, "--coordinator", c.address, "--threads", "1")
        self.procs.append(w)
        stub = c.stub()
        proc = subprocess.Popen([LENSGRID_BIN, "search", "--model", big, "--dataset", "induction",
                                 "--method", "ablate-heads", *search_args,
                                 "--coordinator", c.address],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # A shard's lease, not the job's preparation (the worker builds the dataset first).
        wait_for(lambda: (lambda j: j is not None and j.prepared and any(
            x.leases for x in stub.ListWorkers(cpb.ListWorkersRequest()).workers))(
                only_job(stub)), 60, "a shard's lease")
        return c, w, stub, proc

    # --- tests ---------------------------------------------------------------------------
    def test_three_workers_give_the_in_process_result(self):
        c = self.coordinator()
        workers = [self.worker(c) for _ in range(3)]
        cases = [("ioi", "ablate-heads", 12, ("--ablation", "mean")),
                 ("ioi", "patch-resid", 6, ()),
                 ("induction", "detect-heads", 4, ()),
                 ("ioi", "dla", 6, ())]
        for dataset, method, n, extra in cases:
            with self.subTest(method=method):
                proc, out = self.start_search(c.address, dataset, method, n, *extra,
                                              "--prompts-per-shard", "2",
                                              "--components-per-shard", "3",
                                              out=os.path.join(self.dir, method))
                _, stderr = self.finish(proc)
                self.assertRegex(stderr, r"\d+/\d+ shards")  # plain progress lines (no tty)
                self.assert_same_result(out, self.in_process(dataset, method, n, *extra))
        done = [w.shards_done for w in c.stub().ListWorkers(cpb.ListWorkersRequest()).workers]
        self.assertEqual(len(done), 3)
        self.assertGreater(sum(1 for d in done if d > 0), 1, f"one worker did all: {done}")
        self.assertTrue(all(w.alive() for w in workers))

    def test_local_starts_and_stops_its_own_cluster(self):
        tmpdir = os.path.join(self.dir, "tmp")
        os.mkdir(tmpdir)
        out = os.path.join(self.dir, "local")
        proc = subprocess.run([LENSGRID_BIN, *self.search_args("ioi", "ablate-heads", 8),
                               "--local", "2", "--prompts-per-shard", "2", "--output", out],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "TMPDIR": tmpdir})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assert_same_result(out, self.in_process("ioi", "ablate-heads", 8))
        self.assertEqual(os.listdir(tmpdir), [], "the local cluster's dir was left behind")
        with open(os.path.join(out, "result.json")) as f:
            self.assertEqual(json.load(f)["run"]["where"], "local")

    def test_worker_killed_mid_job(self):
        c = self.coordinator("--worker-timeout-ms", "1000")
        victim = self.worker(c, name="victim")
        self.worker(c)
        stub = c.stub()
        proc, out = self.start_search(c.address, "ioi", "ablate-heads", 48,
                                      "--prompts-per-shard", "1", "--components-per-shard", "1")
        wait_for(lambda: victim.shards_done_log() >= 2, 120, "the victim to finish 2 shards")
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        killed_at = only_job(stub)
        self.finish(proc)
        self.assertLess(killed_at.shards_done, killed_at.shards_total / 2, "killed too late")
        self.assert_same_result(out, self.in_process("ioi", "ablate-heads", 48))
        job = only_job(stub)
        self.assertEqual(job.shards_done, job.shards_total)
        events = list(stub.WatchJob(cpb.WatchJobRequest(job_id=job.job_id), timeout=30))
        self.assertTrue(any(e.kind == cpb.JobEvent.WORKER_LOST for e in events),
                        "no WORKER_LOST event")

    def test_coordinator_killed_and_restarted_recomputes_nothing(self):
        c = self.coordinator()
        workers = [self.worker(c), self.worker(c)]
        stub = c.stub()
        proc, out = self.start_search(c.address, "ioi", "ablate-heads", 24,
                                      "--prompts-per-shard", "1", "--components-per-shard", "1")
        wait_for(lambda: (only_job(stub) or cpb.JobStatus()).shards_done >= 10, 120,
                 "10 shards done")
        c.kill9()
        before = set()
        for w in workers:
            before |= completed_shards(w.log_lines())
        marks = [len(w.log_lines()) for w in workers]
        time.sleep(1.0)  # the workers and the client notice
        c.restart()
        self.finish(proc)
        after = set()
        for w, mark in zip(workers, marks):
            after |= completed_shards(w.log_lines()[mark:])
        job = only_job(c.stub())
        self.assertEqual(job.state, cpb.JOB_SUCCEEDED)
        self.assertFalse(before & after, f"recomputed after the restart: {sorted(before & after)}")
        # A result the coordinator stored just before the kill, but never acknowledged, is in
        # neither set (it is not recomputed either): only those may be missing.
        in_flight = sum(1 for w in workers for line in w.log_lines()
                        if "result not delivered" in line)
        self.assertLessEqual(len(before) + len(after), job.shards_total)
        self.assertGreaterEqual(len(before) + len(after), job.shards_total - in_flight)
        self.assertGreaterEqual(len(before), 10)
        self.assert_same_result(out, self.in_process("ioi", "ablate-heads", 24))
        for w in workers:
            self.assertRegex(w.log_text(), "registering again")

    def test_acdc_resumes_across_a_coordinator_kill9_and_a_rerun(self):
        # ACDC through a coordinator is one acdc-step job per iteration (request ids
        # ID/acdc/N): the coordinator killed with SIGKILL mid-run and restarted, the client goes
        # on from the iteration it was in and ends with the in-process circuit; the same search
        # run again with the same request id finds every job and submits none.
        c = self.coordinator()
        for _ in range(2):
            self.worker(c)
        stub = c.stub()
        args = ("--threshold", "0.002", "--seq-len", "6", "--components-per-shard", "4")
        env = dict(os.environ, LENSGRID_REQUEST_ID="acdc-run-1")
        proc, out = self.start_search(c.address, "induction", "acdc", 6, *args, env=env)

        def succeeded():
            jobs = stub.ListJobs(cpb.ListJobsRequest(), timeout=10).jobs
            return [j for j in jobs if j.state == cpb.JOB_SUCCEEDED]
        done = wait_for(lambda: (lambda s: s if len(s) >= 3 else None)(succeeded()), 120,
                        "3 ACDC iterations done")
        c.kill9()
        time.sleep(1.0)
        c.restart()
        stub = c.stub()
        _, stderr = self.finish(proc)
        self.assertIn("acdc: iteration 1/", stderr)
        with open(os.path.join(out, "result.json")) as f:
            result = json.load(f)
        ref = self.in_process("induction", "acdc", 6, *args)
        with open(os.path.join(ref, "result.json")) as f:
            want = json.load(f)
        self.assertEqual([e["kept"] for e in result["circuit"]["edges"]],
                         [e["kept"] for e in want["circuit"]["edges"]])
        np.testing.assert_allclose([e["score"] for e in result["circuit"]["edges"]],
                                   [e["score"] for e in want["circuit"]["edges"]], atol=1e-4)
        jobs = stub.ListJobs(cpb.ListJobsRequest(page_size=1000), timeout=10).jobs
        # Each iteration's job once, the ones finished before the kill among them.
        self.assertEqual(len(jobs), result["run"]["jobs"])
        self.assertEqual(sorted({j.request_id for j in jobs}), sorted(j.request_id for j in jobs))
        self.assertLessEqual({j.job_id for j in done}, {j.job_id for j in jobs})
        # Run again with the same request id: every job is found, none submitted.
        again, out2 = self.start_search(c.address, "induction", "acdc", 6, *args, env=env,
                                        out=os.path.join(self.dir, "again"))
        self.finish(again)
        self.assertEqual(len(stub.ListJobs(cpb.ListJobsRequest(page_size=1000),
                                           timeout=10).jobs), len(jobs))
        with open(os.path.join(out2, "result.json")) as f:
            self.assertEqual(json.load(f)["circuit"]["edges"], result["circuit"]["edges"])

    def test_a_repeated_request_id_gives_one_job_across_a_kill9(self):
        # What a retried Kubernetes batch pod does: the same search with the same request id
        # (LENSGRID_REQUEST_ID, e.g. the Job's uid), the coordinator killed with SIGKILL and
        # restarted between the two.
        c = self.coordinator()
        stub = c.stub()
        env = dict(os.environ, LENSGRID_REQUEST_ID="batch-job-uid-1")
        first, _ = self.start_search(c.address, "ioi", "ablate-heads", 6, env=env,
                                     out=os.path.join(self.dir, "first"))
        job = wait_for(lambda: only_job(stub), 60, "the job to be submitted")
        self.assertEqual(job.request_id, "batch-job-uid-1")
        c.kill9()
        first.kill()  # the pod dies with it
        first.communicate()
        c.restart()
        stub = c.stub()
        self.worker(c)
        proc, out = self.start_search(c.address, "ioi", "ablate-heads", 6, env=env,
                                      out=os.path.join(self.dir, "retry"))
        _, stderr = self.finish(proc)
        self.assertIn(f"job {job.job_id} ", stderr)  # the retry follows the first job
        jobs = stub.ListJobs(cpb.ListJobsRequest(), timeout=10).jobs
        self.assertEqual([j.job_id for j in jobs], [job.job_id])
        self.assertEqual(jobs[0].state, cpb.JOB_SUCCEEDED)
        self.assert_same_result(out, self.in_process("ioi", "ablate-heads", 6))
        # The same request id with another spec is refused, naming it.
        spec = cpb.JobSpec(model_id="m", weights_sha256="sha", method=spb.METHOD_ABLATE_HEADS,
                           n_layers=1, n_heads=1,
                           prompts=[spb.InlinePrompt(tokens=[1, 2], answers=[3], wrongs=[4])])
        with self.assertRaises(grpc.RpcError) as err:
            stub.SubmitJob(cpb.SubmitJobRequest(spec=spec, request_id="batch-job-uid-1"),
                           timeout=10)
        self.assertIn(err.exception.code(),
                      (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.NOT_FOUND))
        # (NOT_FOUND: no live worker serves model "m"; checked before the request id.)

        # The CLI lists by state, and deletes the finished job.
        def cli(*args):
            return subprocess.run([LENSGRID_BIN, "jobs", *args, "--coordinator", c.address],
                                  capture_output=True, text=True, timeout=60)
        listed = cli("--state", "succeeded")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn(job.job_id, listed.stdout)
        self.assertNotIn(job.job_id, cli("--state", "running").stdout)
        bad = cli("--state", "sleeping")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("--state", bad.stderr)
        deleted = cli("delete", job.job_id)
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        self.assertIn(f"job {job.job_id}: deleted", deleted.stdout)
        self.assertEqual(len(stub.ListJobs(cpb.ListJobsRequest(), timeout=10).jobs), 0)
        again = cli("delete", job.job_id)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("NOT_FOUND: no job", again.stderr)

    def test_a_worker_on_the_worker_listen_port_completes_a_search(self):
        c = self.coordinator(worker_listen=True)
        self.assertNotEqual(c.worker_address, c.address)
        self.assertIn(f"worker queue on {c.worker_address}", c.log_text())
        # Each port serves its own API (and health); the other one's calls are UNIMPLEMENTED.
        for address in (c.address, c.worker_address):
            self.assertEqual(health(address), "SERVING")
        from lensgrid.v1 import coordinator_pb2_grpc
        with self.assertRaises(grpc.RpcError) as err:
            coordinator_pb2_grpc.WorkQueueStub(grpc.insecure_channel(c.address)).Register(
                cpb.RegisterRequest(model_id="m", weights_sha256="sha"), timeout=10)
        self.assertEqual(err.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        with self.assertRaises(grpc.RpcError) as err:
            coordinator_pb2_grpc.CoordinatorStub(grpc.insecure_channel(c.worker_address)).ListJobs(
                cpb.ListJobsRequest(), timeout=10)
        self.assertEqual(err.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.worker(c)  # --coordinator c.worker_address
        served_model_id(c.stub())
        proc, out = self.start_search(c.address, "ioi", "ablate-heads", 4)
        self.finish(proc)
        self.assert_same_result(out, self.in_process("ioi", "ablate-heads", 4))

    def test_operators_get_a_health_port_json_logs_and_the_pending_shards_gauge(self):
        from cluster_harness import free_port
        health_address = f"127.0.0.1:{free_port()}"
        c = self.coordinator("--health-listen", health_address, "--log-format", "json",
                             "--metrics-listen", "127.0.0.1:0")
        for service in ("", "lensgrid.v1.Coordinator", "lensgrid.v1.WorkQueue"):
            self.assertEqual(health(health_address, service), "SERVING", service)

        def records():
            # stdout's "listening on" line is the startup contract; stderr is JSON, line by line.
            return [json.loads(line) for line in c.log_text().splitlines() if line.startswith("{")]

        [metrics] = [r["msg"].split()[-1] for r in records() if r["msg"].startswith("metrics on ")]

        def pending():
            import urllib.request
            with urllib.request.urlopen(metrics, timeout=10) as reply:
                text = reply.read().decode()
            [value] = [line.split()[1] for line in text.splitlines()
                       if line.startswith("lensgrid_pending_shards ")]
            return float(value)

        # No worker yet: the job waits to be prepared, and says so in the gauge.
        proc, out = self.start_search(c.address, "ioi", "ablate-heads", 4)
        status = wait_for(lambda: only_job(c.stub()), 60, "the job")
        job = status.job_id
        # Every shard waits (or, while it waits to be prepared, the job counts 1).
        self.assertEqual(pending(), status.shards_total if status.prepared else 1)
        self.worker(c)
        self.finish(proc)
        self.assertEqual(pending(), 0)
        rs = records()
        for r in rs:
            self.assertEqual(r["component"], "lensgrid-coordinator")
            self.assertIn(r["level"], ("info", "warning", "error"))
        events = {r["event"]: r for r in rs if r.get("job") == job and "event" in r}
        for kind in ("SUBMITTED", "DATASET_READY", "JOB_SUCCEEDED"):
            self.assertIn(kind, events)
        self.assertEqual(events["SUBMITTED"]["owner"], "anonymous")
        self.assertTrue(events["DATASET_READY"]["worker"].startswith("worker-"))
        self.assertTrue([r for r in rs if r.get("event") == "WORKER_JOINED" and r.get("worker")])

    def search_with_fake_workers(self, c, *names):
        """A real worker, a search of 6 x 1-prompt, 1-component shards, and fake workers (by
        name) registered under the same model id and weights to compete for its shards (the
        real worker prepares the job). Returns (search process, output dir, WorkQueue stub,
        fake worker ids)."""
        sha = WorkerProcess.weights_sha256(self.model)
        self.worker(c)
        model_id = served_model_id(c.stub())
        proc, out = self.start_search(c.address, "ioi", "ablate-heads", 6,
                                      "--prompts-per-shard", "1", "--components-per-shard", "1")
        queue = c.queue()
        ids = [queue.Register(cpb.RegisterRequest(name=name, model_id=model_id,
                                                  weights_sha256=sha, capacity=1)).worker_id
               for name in names]
        return proc, out, queue, ids

    @staticmethod
    def first_lease(queue, worker_id):
        return wait_for(lambda: (lambda r: r.lease if r.has_shard else None)(
            queue.LeaseShard(cpb.LeaseShardRequest(worker_id=worker_id, wait_ms=200))), 60,
            "a lease")

    def test_malformed_result_is_retried_elsewhere(self):
        c = self.coordinator()
        stub = c.stub()
        proc, out, queue, [fake] = self.search_with_fake_workers(c, "malformed")
        lease = self.first_lease(queue, fake)
        # A baseline of the wrong length, and no delta at all.
        messages = [cpb.CompleteShardRequest(header=cpb.CompleteShardHeader(
                        worker_id=fake, lease_id=lease.lease_id)),
                    cpb.CompleteShardRequest(chunk=f32_tensor_chunk("baseline", [5], [0] * 5))]
        with self.assertRaises(grpc.RpcError) as err:
            queue.CompleteShard(iter(messages), timeout=10)
        self.assertEqual(err.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.finish(proc)
        self.assert_same_result(out, self.in_process("ioi", "ablate-heads", 6))
        job = only_job(stub)
        retried = [e for e in stub.WatchJob(cpb.WatchJobRequest(job_id=job.job_id), timeout=30)
                   if e.kind == cpb.JobEvent.SHARD_RETRIED]
        self.assertEqual(len(retried), 1)
        self.assertEqual(retried[0].shard_id, lease.shard_id)
        self.assertIn("malformed", retried[0].message)

    def test_another_workers_lease_cannot_be_completed_failed_or_extended(self):
        c = self.coordinator()
        stub = c.stub()
        proc, out, queue, [holder, mallory] = self.search_with_fake_workers(c, "holder", "mallory")
        lease = self.first_lease(queue, holder)
        self.assertRegex(lease.lease_id, r"-[0-9a-f]{32}$")  # 128 random bits

        def refused(call):
            with self.assertRaises(grpc.RpcError) as err:
                call()
            # Refused before the result is looked at: nothing about the shard's tensors leaks.
            self.assertNotIn("shape", err.exception.details())
            return err.exception.code()

        # Forged numbers (L1H2 +42) on the holder's lease, from another registered worker.
        forged = [cpb.CompleteShardRequest(header=cpb.CompleteShardHeader(
                      worker_id=mallory, lease_id=lease.lease_id)),
                  cpb.CompleteShardRequest(chunk=f32_tensor_chunk("delta", [1], [42.0]))]
        self.assertEqual(refused(lambda: queue.CompleteShard(iter(forged), timeout=10)),
                         grpc.StatusCode.PERMISSION_DENIED)
        # Failing it for everyone (INVALID_ARGUMENT fails a job) is refused too.
        fail = cpb.FailShardRequest(worker_id=mallory, lease_id=lease.lease_id,
                                    code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="no")
        self.assertEqual(refused(lambda: queue.FailShard(fail, timeout=10)),
                         grpc.StatusCode.PERMISSION_DENIED)
        # A heartbeat does not extend it: it is reported back as not the caller's.
        beat = queue.Heartbeat(cpb.HeartbeatRequest(worker_id=mallory, lease_ids=[lease.lease_id]),
                               timeout=10)
        self.assertEqual(list(beat.cancelled_lease_ids), [lease.lease_id])
        # The old guessable form names no lease; a worker id never registered holds none.
        guessed = f"{lease.job_id}/{lease.shard_id}/{lease.attempt}"
        fail.lease_id = guessed
        self.assertEqual(refused(lambda: queue.FailShard(fail, timeout=10)),
                         grpc.StatusCode.NOT_FOUND)
        forged[0].header.worker_id = "worker-0-0"
        self.assertEqual(refused(lambda: queue.CompleteShard(iter(forged), timeout=10)),
                         grpc.StatusCode.PERMISSION_DENIED)
        # The holder gives the shard back; the real worker computes it; the result is the
        # in-process one and the job never counted a failure.
        queue.FailShard(cpb.FailShardRequest(
            worker_id=holder, lease_id=lease.lease_id, handed_back=True,
            code=grpc.StatusCode.UNAVAILABLE.value[0], message="shutting down"), timeout=10)
        self.finish(proc)
        self.assert_same_result(out, self.in_process("ioi", "ablate-heads", 6))
        job = only_job(stub)
        self.assertEqual(job.state, cpb.JOB_SUCCEEDED)
        kinds = [e.kind for e in stub.WatchJob(cpb.WatchJobRequest(job_id=job.job_id), timeout=30)]
        self.assertNotIn(cpb.JobEvent.JOB_FAILED, kinds)

    def test_invalid_argument_from_a_worker_fails_the_job_with_its_message(self):
        c = self.coordinator()
        self.worker(c)
        stub = c.stub()
        sha = WorkerProcess.weights_sha256(self.model)
        spec = cpb.JobSpec(model_id=served_model_id(stub), weights_sha256=sha, method=spb.METHOD_ABLATE_HEADS,
                           n_layers=2, n_heads=4,
                           prompts=[spb.InlinePrompt(tokens=[50256, 99999999], answers=[1],
                                                     wrongs=[2])])
        job_id = stub.SubmitJob(cpb.SubmitJobRequest(spec=spec)).job_id
        status = wait_for(lambda: (lambda s: s if s.state >= cpb.JOB_SUCCEEDED else None)(
            job_status(stub, job_id)), 60, "the job to end")
        self.assertEqual(status.state, cpb.JOB_FAILED)
        self.assertEqual(status.error_code, grpc.StatusCode.INVALID_ARGUMENT.value[0])
        self.assertIn("99999999", status.error)

    def test_cancel_abandons_the_running_shard(self):
        # One shard of tens of seconds (32 prompts x 401 tokens x 32 heads on one
        # thread): a cancel must abandon it, not let it run to its end. No
        # duration is asserted: the shard's result never arrives.
        c, w, stub, proc = self.long_shard_job("--seq-len", "200", "--n-prompts", "32",
                                               "--prompts-per-shard", "32",
                                               "--components-per-shard", "32")
        job_id = only_job(stub).job_id
        status = stub.CancelJob(cpb.CancelJobRequest(job_id=job_id), timeout=10)
        self.assertEqual(status.state, cpb.JOB_CANCELLED)
        w.wait_for_log(r"abandoned: the coordinator cancelled", timeout=120)
        _, stderr = proc.communicate(timeout=120)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("cancelled", stderr)
        self.assertEqual(w.shards_done_log(), 0, w.log_text())
        final = job_status(stub, job_id)
        self.assertEqual(final.state, cpb.JOB_CANCELLED)
        self.assertEqual(final.shards_done, 0)

    def test_watch_resumes_without_a_gap(self):
        c = self.coordinator()
        self.worker(c)
        stub = c.stub()
        proc, _ = self.start_search(c.address, "ioi", "ablate-heads", 8,
                                    "--prompts-per-shard", "1", "--components-per-shard", "2")
        job_id = wait_for(lambda: only_job(stub), 30, "the job").job_id
        seen = []
        stream = stub.WatchJob(cpb.WatchJobRequest(job_id=job_id))
        for e in stream:
            seen.append(e.seq)
            if len(seen) == 5:
                stream.cancel()  # the client goes away mid-job
                break
        time.sleep(0.5)
        for e in stub.WatchJob(cpb.WatchJobRequest(job_id=job_id, after_seq=seen[-1]),
                               timeout=120):
            seen.append(e.seq)
        self.finish(proc)
        self.assertEqual(seen, list(range(1, len(seen) + 1)))
        final = job_status(stub, job_id)
        self.assertEqual(final.last_event_seq, len(seen))

    def test_sigterm_hands_the_shard_back(self):
        c, leaving, stub, proc = self.long_shard_job(
            "--seq-len", "100", "--n-prompts", "8", "--prompts-per-shard", "8",
            "--components-per-shard", "16", "--output", os.path.join(self.dir, "out"))
        big = os.path.join(self.dir, "big")
        leaving.proc.send_signal(signal.SIGTERM)
        self.assertEqual(leaving.proc.wait(timeout=10), 0)
        self.assertIn("handed back", leaving.log_text())
        stayer = WorkerProcess(WORKER_BIN, big, "--coordinator", c.address, "--threads", "2")
        self.procs.append(stayer)
        self.finish(proc, timeout=300)
        job = only_job(stub)
        self.assertEqual((job.state, job.shards_done), (cpb.JOB_SUCCEEDED, job.shards_total))
        retried = [e for e in stub.WatchJob(cpb.WatchJobRequest(job_id=job.job_id), timeout=30)
                   if e.kind == cpb.JobEvent.SHARD_RETRIED]
        self.assertTrue(retried and "handed the shard back" in retried[0].message, retried)


if __name__ == "__main__":
    unittest.main(verbosity=2)
