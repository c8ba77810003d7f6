#!/usr/bin/python3
"""A real lensgrid-coordinator on loopback against a hostile or careless client and a failing
disk (each once crashed, stalled or bricked a coordinator). After each example the coordinator is alive, answers
the next request, and its memory (VmRSS / VmHWM from /proc) stays within a budget:

- jobs whose dimensions overflow (2^62 x 4, 2^32 x 2^31), or that would make 10^6 x 10^6 shards;
- inline prompts too big for any lease (refused at submit, naming size and limit), and a job
  far over a lease's size that runs because each lease carries only its own prompts;
- 1 MiB of client_json, 20 jobs of client data and thousands of Register calls: listings are
  paged, lost workers forgotten;
- a 1 MB job id or worker id: errors quote it cut;
- a full disk (SQLite max_page_count, read from a file): the job pauses with the real cause,
  resumes when the disk has room, and a kill -9 while full restarts cleanly with every finished
  job served;
- a flipped byte in a stored result (python's sqlite3, coordinator stopped) is DATA_LOSS for
  that job only; an emptied database under the state dir's marker refuses to start.

Shards are run by a fake worker in this file (well-formed results of the right shapes).
Durations are never asserted: deadlines only guard against hangs.

usage: hostile_coordinator_test.py COORDINATOR PYTHONPATH
"""
import os
import sqlite3
import sys
import tempfile
import unittest

COORDINATOR_BIN, PY_DIR = sys.argv[1:3]
del sys.argv[1:3]
sys.path.insert(0, PY_DIR)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cluster"))
sys.path.insert(0, os.path.join(HERE, "..", "worker"))

import grpc  # noqa: E402
from lensgrid.v1 import coordinator_pb2 as cpb, coordinator_pb2_grpc, search_pb2 as spb  # noqa: E402
from cluster_harness import CoordinatorProcess, f32_tensor_chunk, wait_for  # noqa: E402

# Memory budgets, in MiB. The probe saw 1.06 GB for a 20 MB spec and 6 GB for one job.
RSS_BUDGET_MIB = 300   # resident after each example
PEAK_BUDGET_MIB = 700  # high-water mark over the whole process life
MiB = 1 << 20
DEADLINE = 120  # seconds, against hangs only


def proc_status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def spec(n_prompts=2, tokens=(1, 2, 3), layers=2, heads=2, **fields):
    """ablate-heads, one prompt and one head per shard unless `fields` say otherwise."""
    fields = {"method": spb.METHOD_ABLATE_HEADS, "prompts_per_shard": 1, "components_per_shard": 1,
              **fields}
    s = cpb.JobSpec(model_id="m", weights_sha256="sha", n_layers=layers, n_heads=heads,
                    **fields)
    for _ in range(n_prompts):
        s.prompts.add(tokens=list(tokens), answers=[3], wrongs=[4])
    return s


class FakeWorker:
    """Leases shards and returns well-formed results (value = 10 p + c)."""

    def __init__(self, stub):
        self.stub = stub
        self.id = stub.Register(cpb.RegisterRequest(name="fake", model_id="m",
                                                    weights_sha256="sha"), timeout=10).worker_id

    def lease(self):
        r = self.stub.LeaseShard(cpb.LeaseShardRequest(worker_id=self.id), timeout=10)
        return r.lease if r.has_shard else None

    def complete(self, lease):
        shard = lease.shard
        p0, p1 = shard.prompt_begin, shard.prompt_end
        c0, c1 = shard.component_begin, shard.component_end
        baseline = [float(p) for p in range(p0, p1)]
        delta = [float(10 * p + c) for p in range(p0, p1) for c in range(c0, c1)]

        def parts():
            yield cpb.CompleteShardRequest(header=cpb.CompleteShardHeader(
                worker_id=self.id, lease_id=lease.lease_id))
            yield cpb.CompleteShardRequest(chunk=f32_tensor_chunk("baseline", [p1 - p0], baseline))
            yield cpb.CompleteShardRequest(
                chunk=f32_tensor_chunk("delta", [p1 - p0, c1 - c0], delta))
        return self.stub.CompleteShard(parts(), timeout=30)

    def run(self, shards=None):
        """Completes up to `shards` shards (all there are if None); returns how many."""
        n = 0
        while shards is None or n < shards:
            lease = self.lease()
            if lease is None:
                break
            self.complete(lease)
            n += 1
        return n


class HostileCoordinatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.tmp.name)
        self.state = os.path.join(self.dir, "state")
        self.procs = []

    def tearDown(self):
        for p in reversed(self.procs):
            p.stop()

    def coordinator(self, *args):
        c = CoordinatorProcess(COORDINATOR_BIN, self.state, "--min-lease-ms", "60000", *args)
        self.procs.append(c)
        return c

    def assert_healthy(self, c):
        """Alive, answering, within its memory budget."""
        self.assertIsNone(c.proc.poll(), "coordinator died:\n" + c.log_text()[-3000:])
        stub = c.stub()
        with self.assertRaises(grpc.RpcError) as e:
            stub.GetJob(cpb.GetJobRequest(job_id="no-such-job"), timeout=DEADLINE)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)
        stub.ListJobs(cpb.ListJobsRequest(), timeout=DEADLINE)
        rss = proc_status_kib(c.proc.pid, "VmRSS") / 1024
        peak = proc_status_kib(c.proc.pid, "VmHWM") / 1024
        self.assertLess(rss, RSS_BUDGET_MIB, f"resident {rss:.0f} MiB")
        self.assertLess(peak, PEAK_BUDGET_MIB, f"peak {peak:.0f} MiB")

    def assert_refused(self, call, code, *needles):
        with self.assertRaises(grpc.RpcError) as e:
            call()
        self.assertEqual(e.exception.code(), code, e.exception.details())
        for needle in needles:
            self.assertIn(needle, e.exception.details())
        self.assertLess(len(e.exception.details()), 1000)
        return e.exception.details()

    def restart(self, c):
        """Restarts `c` on the same dir and port, waiting for this run's "listening on"."""
        with c._lock:
            c.log.clear()
        c.restart()
        stub = c.stub()

        def answers():  # a pooled connection to the old process may fail once
            try:
                stub.ListJobs(cpb.ListJobsRequest(page_size=1), timeout=DEADLINE)
                return True
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                return False
        wait_for(answers, DEADLINE, "the restarted coordinator to answer")

    # --- crashes and stalls from one request -------------------------------------------------
    def test_overflowing_and_huge_jobs_are_refused(self):
        c = self.coordinator()
        stub = c.stub()
        submit = stub.SubmitJob
        for layers, heads, extra, code, needle in [
                (2**62, 4, {}, grpc.StatusCode.INVALID_ARGUMENT, "n_layers is 4611686018427387904"),
                (2**32, 2**31, {}, grpc.StatusCode.INVALID_ARGUMENT, "n_layers"),
                (10**6, 10**6, {"components_per_shard": 1}, grpc.StatusCode.INVALID_ARGUMENT,
                 "n_layers is 1000000"),
                (2048, 2048, {"components_per_shard": 1}, grpc.StatusCode.RESOURCE_EXHAUSTED,
                 "shards, over the limit of 100000")]:
            s = spec(3, layers=layers, heads=heads, prompts_per_shard=0, components_per_shard=0)
            s.MergeFrom(cpb.JobSpec(**extra))
            self.assert_refused(lambda: submit(cpb.SubmitJobRequest(spec=s), timeout=DEADLINE),
                                code, needle)
            self.assert_healthy(c)
        # The largest grid the planner accepts is still sharded within the cap.
        r = submit(cpb.SubmitJobRequest(spec=spec(3, layers=2048, heads=2048, prompts_per_shard=0,
                                                  components_per_shard=0)), timeout=DEADLINE)
        self.assertLessEqual(r.shards_total, 100000)
        self.assert_healthy(c)

    def test_prompts_too_big_for_a_lease_are_refused_at_submit(self):
        # ~9 MB of inline prompts over an 8 MB lease limit (the probe's 20 MB spec once
        # peaked at 1.06 GB). Each lease carries its own prompts only, so the job runs; mean
        # ablation needs every prompt in every lease: refused at submit.
        c = self.coordinator("--max-lease-bytes", str(8 * MiB))
        stub = c.stub()
        big = spec(1000, tokens=[50000 + i % 200 for i in range(3000)],
                   ablation=spb.ABLATION_MEAN, prompts_per_shard=0)
        self.assertGreater(big.ByteSize(), 8 * MiB)
        details = self.assert_refused(
            lambda: stub.SubmitJob(cpb.SubmitJobRequest(spec=big), timeout=DEADLINE),
            grpc.StatusCode.RESOURCE_EXHAUSTED, "over the 8388608-byte limit of a lease")
        self.assertRegex(details, r"largest shard's spec is \d+ bytes \(mean ablation")
        self.assert_healthy(c)
        # The same prompts with zero ablation: accepted, and a lease holds its own prompt only.
        big.ablation = spb.ABLATION_ZERO
        job = stub.SubmitJob(cpb.SubmitJobRequest(spec=big), timeout=DEADLINE).job_id
        channel = grpc.insecure_channel(c.address)  # a plain client's 4 MiB receive limit
        lease = FakeWorker(coordinator_pb2_grpc.WorkQueueStub(channel)).lease()
        channel.close()
        self.assertEqual(lease.job_id, job)
        self.assertEqual(len(lease.shard.prompts), lease.shard.prompt_end - lease.shard.prompt_begin)
        self.assertEqual(len(lease.shard.mean_prompts), 0)
        self.assertEqual(lease.shard.n_prompts, 1000)
        self.assertLess(lease.ByteSize(), 1 * MiB)
        self.assert_healthy(c)

    def test_a_lease_limit_below_a_jobs_size_names_both(self):
        # The 35M-token job of the probe, scaled: --max-lease-bytes 1 MB, 100 prompts of 4000
        # tokens in one shard (the client's choice) is a 1.2 MB lease.
        c = self.coordinator("--max-lease-bytes", "1000000")
        stub = c.stub()
        s = spec(100, tokens=list(range(40000, 44000)), prompts_per_shard=100)
        self.assert_refused(
            lambda: stub.SubmitJob(cpb.SubmitJobRequest(spec=s), timeout=DEADLINE),
            grpc.StatusCode.RESOURCE_EXHAUSTED, "over the 1000000-byte limit")
        self.assertEqual(len(stub.ListJobs(cpb.ListJobsRequest(), timeout=10).jobs), 0)
        self.assert_healthy(c)

    # --- listings, metadata, echoes ----------------------------------------------------------
    def test_listings_are_paged_and_metadata_is_capped(self):
        c = self.coordinator("--worker-timeout-ms", "1000", "--forget-worker-ms", "2000",
                             "--heartbeat-ms", "100")
        stub = c.stub()
        self.assert_refused(
            lambda: stub.SubmitJob(cpb.SubmitJobRequest(spec=spec(client_json="x" * MiB)),
                                   timeout=DEADLINE),
            grpc.StatusCode.RESOURCE_EXHAUSTED, "client_json is 1048576 bytes")
        ids = {stub.SubmitJob(cpb.SubmitJobRequest(spec=spec(client_json="j" * 60000,
                                                             label="l" * 1000)),
                              timeout=DEADLINE).job_id for _ in range(20)}
        seen, token, pages = [], "", 0
        while True:  # a plain client (4 MiB receive limit) pages through every job
            r = stub.ListJobs(cpb.ListJobsRequest(page_size=7, page_token=token), timeout=DEADLINE)
            self.assertLessEqual(len(r.jobs), 7)
            seen += [j.job_id for j in r.jobs]
            pages += 1
            token = r.next_page_token
            if not token:
                break
        self.assertEqual(sorted(seen), sorted(ids))
        self.assertEqual(pages, 3)
        r = stub.ListJobs(cpb.ListJobsRequest(page_size=1000), timeout=DEADLINE)
        self.assertLess(r.ByteSize(), 4 * MiB)

        queue = c.queue()
        for i in range(3000):
            queue.Register(cpb.RegisterRequest(name=f"w{i}", model_id="m", weights_sha256="sha"),
                          timeout=DEADLINE)
        first = stub.ListWorkers(cpb.ListWorkersRequest(), timeout=DEADLINE)
        self.assertEqual(len(first.workers), 100)
        self.assertTrue(first.next_page_token)
        # They never heartbeat: lost, then forgotten.
        wait_for(lambda: not stub.ListWorkers(cpb.ListWorkersRequest(), timeout=DEADLINE).workers,
                 DEADLINE, "lost workers to be forgotten")
        self.assert_refused(
            lambda: queue.Register(cpb.RegisterRequest(name="n" * MiB, model_id="m",
                                                       weights_sha256="sha"), timeout=DEADLINE),
            grpc.StatusCode.INVALID_ARGUMENT, "(1048576 bytes)")
        self.assert_healthy(c)

    def test_errors_quote_client_input_cut(self):
        c = self.coordinator()
        stub, queue = c.stub(), c.queue()
        huge = "x" * MiB
        for call, code in [
                (lambda: stub.GetJob(cpb.GetJobRequest(job_id=huge), timeout=DEADLINE),
                 grpc.StatusCode.NOT_FOUND),
                (lambda: stub.CancelJob(cpb.CancelJobRequest(job_id=huge), timeout=DEADLINE),
                 grpc.StatusCode.NOT_FOUND),
                (lambda: list(stub.WatchJob(cpb.WatchJobRequest(job_id=huge), timeout=DEADLINE)),
                 grpc.StatusCode.NOT_FOUND),
                (lambda: list(stub.GetResult(cpb.GetResultRequest(job_id=huge),
                                             timeout=DEADLINE)), grpc.StatusCode.NOT_FOUND),
                (lambda: queue.LeaseShard(cpb.LeaseShardRequest(worker_id=huge), timeout=DEADLINE),
                 grpc.StatusCode.NOT_FOUND),
                (lambda: queue.Heartbeat(cpb.HeartbeatRequest(worker_id=huge), timeout=DEADLINE),
                 grpc.StatusCode.NOT_FOUND),
                (lambda: stub.SubmitJob(cpb.SubmitJobRequest(spec=spec(method=spb.SEARCH_METHOD_UNSPECIFIED,
                                                                     method_name=huge)),
                                        timeout=DEADLINE), grpc.StatusCode.INVALID_ARGUMENT),
                (lambda: stub.ListJobs(cpb.ListJobsRequest(page_token=huge), timeout=DEADLINE),
                 grpc.StatusCode.INVALID_ARGUMENT)]:
            self.assert_refused(call, code, "(1048576 bytes)")
        self.assert_healthy(c)

    # --- storage faults ----------------------------------------------------------------------
    def test_disk_full_pauses_resumes_and_restarts_cleanly(self):
        pages = os.path.join(self.dir, "max-pages")
        c = self.coordinator("--testing-max-db-pages-file", pages, "--store-retry-ms", "200",
                             "--worker-timeout-ms", "600000")
        stub = c.stub()
        worker = FakeWorker(c.queue())
        done = stub.SubmitJob(cpb.SubmitJobRequest(spec=spec(2)), timeout=DEADLINE).job_id
        worker.run()
        running = stub.SubmitJob(cpb.SubmitJobRequest(spec=spec(200)), timeout=DEADLINE).job_id
        worker.run(5)

        def fill_disk():
            with open(pages, "w") as f:
                f.write("1")  # no new page: the next write that needs one fails
            held = None
            while held is None:
                lease = worker.lease()
                self.assertIsNotNone(lease, "the job ran out of shards before the disk filled")
                r = worker.complete(lease)
                self.assertTrue(r.accepted)
                if r.message:
                    held = r.message
            self.assertIn("database or disk is full", held)

        fill_disk()
        status = stub.GetJob(cpb.GetJobRequest(job_id=running), timeout=DEADLINE)
        self.assertEqual(status.state, cpb.JOB_RUNNING)
        self.assertIn("database or disk is full", status.store_error)
        self.assertIsNone(worker.lease())  # paused: nothing is computed that cannot be stored
        self.assert_healthy(c)

        os.remove(pages)  # room again: the job resumes by itself
        wait_for(lambda: not stub.GetJob(cpb.GetJobRequest(job_id=running),
                                         timeout=DEADLINE).store_error, DEADLINE, "resume")
        worker.run(5)

        fill_disk()  # full again, and the coordinator is killed while it is
        c.kill9()
        os.remove(pages)
        self.restart(c)
        self.assertIn("0 damaged", c.log_text())
        stub = c.stub()
        header = next(iter(stub.GetResult(cpb.GetResultRequest(job_id=done), timeout=DEADLINE)))
        self.assertEqual(header.header.job.state, cpb.JOB_SUCCEEDED)
        worker = FakeWorker(c.queue())
        worker.run()
        final = stub.GetJob(cpb.GetJobRequest(job_id=running), timeout=DEADLINE)
        self.assertEqual(final.state, cpb.JOB_SUCCEEDED, final)
        kinds = [e.kind for e in stub.WatchJob(cpb.WatchJobRequest(job_id=running),
                                               timeout=DEADLINE)]
        self.assertIn(cpb.JobEvent.STORE_FAILED, kinds)
        self.assertIn(cpb.JobEvent.STORE_RECOVERED, kinds)
        seqs = [e.seq for e in stub.WatchJob(cpb.WatchJobRequest(job_id=running),
                                             timeout=DEADLINE)]
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))  # no gap
        self.assert_healthy(c)

    def test_a_flipped_result_byte_is_detected_and_an_emptied_database_refused(self):
        c = self.coordinator()
        stub = c.stub()
        worker = FakeWorker(c.queue())
        bad = stub.SubmitJob(cpb.SubmitJobRequest(spec=spec(2)), timeout=DEADLINE).job_id
        worker.run()
        good = stub.SubmitJob(cpb.SubmitJobRequest(spec=spec(2)), timeout=DEADLINE).job_id
        worker.run()
        c.stop()
        db = sqlite3.connect(os.path.join(self.state, "coordinator.db"))
        (data,) = db.execute("SELECT data FROM results WHERE job_id = ? AND shard = 2",
                             (bad,)).fetchone()
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x01
        db.execute("UPDATE results SET data = ? WHERE job_id = ? AND shard = 2",
                   (bytes(flipped), bad))
        db.commit()
        db.close()
        self.restart(c)
        # Finished jobs come back as summaries: the damage is found when the result is read.
        stub = c.stub()
        self.assert_refused(
            lambda: list(stub.GetResult(cpb.GetResultRequest(job_id=bad), timeout=DEADLINE)),
            grpc.StatusCode.DATA_LOSS, "shard 2", "checksum")
        # (The line is written before the reply; the harness reads the pipe on its own thread.)
        wait_for(lambda: f"job {bad}: the stored job is damaged" in c.log_text(), 60,
                 "the damage in the coordinator's log")
        status = stub.GetJob(cpb.GetJobRequest(job_id=bad), timeout=DEADLINE)
        self.assertEqual(status.error_code, grpc.StatusCode.DATA_LOSS.value[0])
        header = next(iter(stub.GetResult(cpb.GetResultRequest(job_id=good), timeout=DEADLINE)))
        self.assertEqual(header.header.job.job_id, good)
        self.assert_healthy(c)

        c.stop()
        for suffix in ("", "-wal", "-shm"):
            path = os.path.join(self.state, "coordinator.db" + suffix)
            if os.path.exists(path):
                os.truncate(path, 0)
        with self.assertRaises(RuntimeError) as e:
            self.restart(c)
        self.assertIn("refusing to start without its jobs", str(e.exception))
        self.assertIn("--fresh-state", str(e.exception))
        self.procs.remove(c)
        fresh = self.coordinator("--fresh-state")
        self.assertEqual(len(fresh.stub().ListJobs(cpb.ListJobsRequest(), timeout=10).jobs), 0)
        self.assert_healthy(fresh)


if __name__ == "__main__":
    unittest.main(verbosity=2)
