"""Real lensgrid-coordinator processes on loopback, for tests and benchmarks.

    with CoordinatorProcess(binary, state_dir) as c:
        stub = c.stub()          # lensgrid.v1.Coordinator
        queue = c.queue()        # lensgrid.v1.WorkQueue (c.worker_address)
        ...
        c.kill9(); c.restart()   # same port, same state dir

Needs sys.path to hold the build's Python package (lensgrid.v1 stubs) and
tests/integration/worker (worker_harness) first.
"""
import re
import socket
import subprocess
import threading
import time

import grpc
from lensgrid.v1 import coordinator_pb2, coordinator_pb2_grpc, tensor_pb2
from worker_harness import stop_process

SHARD_DONE_RE = re.compile(
    r"shard (\S+)/(\d+) attempt (\d+) done in (\d+) ms, result sent in (\d+) ms(.*)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CoordinatorProcess:
    def __init__(self, binary, state_dir, *args, port=None, worker_listen=False):
        """worker_listen: WorkQueue alone on a port of its own (--worker-listen)."""
        self.binary, self.state_dir, self.args = binary, state_dir, list(args)
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Where workers connect: the same port unless WorkQueue has its own.
        self.worker_address = f"127.0.0.1:{free_port()}" if worker_listen else self.address
        if worker_listen:
            self.args += ["--worker-listen", self.worker_address]
        self.log = []
        self._lock = threading.Lock()
        self.proc = None
        self.start()

    def start(self, timeout=30):
        self.proc = subprocess.Popen(
            [self.binary, "--listen", self.address, "--state-dir", self.state_dir, *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        end = time.monotonic() + timeout
        while not self._find("listening on"):
            if self.proc.poll() is not None or time.monotonic() > end:
                stop_process(self.proc)
                self._close()  # the log holds everything the process wrote
                raise RuntimeError("coordinator did not start:\n" + self.log_text())
            time.sleep(0.01)

    def _close(self):
        """After the process has ended: read its output to the end, close the pipe."""
        self._reader.join(timeout=30)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()

    def _read(self, proc):
        for line in proc.stdout:
            with self._lock:
                self.log.append(line.rstrip("\n"))

    def _find(self, text):
        with self._lock:
            return any(text in line for line in self.log)

    def log_text(self):
        with self._lock:
            return "\n".join(self.log)

    def stub(self):
        channel = grpc.insecure_channel(self.address)
        return coordinator_pb2_grpc.CoordinatorStub(channel)

    def queue(self):
        """The worker-facing API (Register, LeaseShard, ...)."""
        channel = grpc.insecure_channel(self.worker_address)
        return coordinator_pb2_grpc.WorkQueueStub(channel)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self._close()

    def restart(self):
        self.start()

    def stop(self):
        stop_process(self.proc)
        self._close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(f"timed out waiting for {what}")


def job_status(stub, job_id):
    return stub.GetJob(coordinator_pb2.GetJobRequest(job_id=job_id), timeout=10)


def served_model_id(stub):
    """The model id of the first live worker, once one has registered."""
    def first():
        workers = [w for w in stub.ListWorkers(coordinator_pb2.ListWorkersRequest(), timeout=10).workers
                   if w.alive]
        return workers[0].model_id if workers else None
    return wait_for(first, 120, "a worker to register")


def only_job(stub):
    jobs = stub.ListJobs(coordinator_pb2.ListJobsRequest(), timeout=10).jobs
    return jobs[0] if len(jobs) == 1 else None


def completed_shards(worker_log_lines):
    """{(job, shard)} whose results a worker delivered and the coordinator accepted."""
    done = set()
    for line in worker_log_lines:
        m = SHARD_DONE_RE.search(line)
        if m and "dropped" not in m.group(6):
            done.add((m.group(1), int(m.group(2))))
    return done


def f32_tensor_chunk(name, shape, values):
    import numpy as np
    data = np.asarray(values, dtype="<f4").tobytes()
    return tensor_pb2.TensorChunk(name=name, dtype=tensor_pb2.F32, shape=shape,
                                  total_bytes=len(data), offset=0, data=data)
