"""Starts real lensgrid-worker processes on loopback for tests and benchmarks.

    with WorkerProcess(binary, model_dir, "--max-queue", "8") as w:
        client = lensgrid.Worker(w.address)
"""
import os
import re
import subprocess
import threading
import time


def health(address, service=""):
    """grpc.health.v1.Health/Check with hand-encoded messages (no stubs needed)."""
    import grpc
    with grpc.insecure_channel(address) as ch:
        check = ch.unary_unary("/grpc.health.v1.Health/Check")
        req = b"" if not service else b"\x0a" + bytes([len(service)]) + service.encode()
        resp = check(req, timeout=10)
        return {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(resp, resp)


def stop_process(proc, timeout=10):
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WorkerProcess:
    def __init__(self, binary, model_dir, *args, wait_serving=True, timeout=120):
        self.log = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen([binary, "--model", model_dir, "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.address = None
        end = time.monotonic() + timeout
        while self.address is None:
            m = self._find(r"listening on (\S+)")
            if m:
                self.address = m.group(1)
            elif self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError("worker did not start:\n" + self.log_text())
            else:
                time.sleep(0.005)
        if wait_serving:
            self.wait_for_log(r"serving ", timeout)

    def _read(self):
        for line in self.proc.stderr:
            with self._lock:
                self.log.append(line.rstrip("\n"))

    def _find(self, pattern):
        with self._lock:
            for line in self.log:
                m = re.search(pattern, line)
                if m:
                    return m
        return None

    def log_text(self):
        with self._lock:
            return "\n".join(self.log)

    def log_lines(self):
        with self._lock:
            return list(self.log)

    def shards_done_log(self):
        """Shards this worker ran for a coordinator and delivered (its log says so)."""
        return sum(1 for line in self.log_lines() if re.search(r"shard \S+ attempt \d+ done", line))

    @staticmethod
    def weights_sha256(model_dir):
        import hashlib
        with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def wait_for_log(self, pattern, timeout=60):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = self._find(pattern)
            if m:
                return m
            if self.proc.poll() is not None:
                raise RuntimeError("worker exited:\n" + self.log_text())
            time.sleep(0.01)
        raise TimeoutError(f"no log line matching {pattern!r}:\n" + self.log_text())

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        stop_process(self.proc)
        self._reader.join(timeout=30)  # reads to EOF once the process is gone
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.proc.stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def make_model(lensgrid_binary, out_dir, layers=2, heads=4, d_model=64, vocab=50257, n_ctx=256,
               seed=0):
    subprocess.run([lensgrid_binary, "init", "--out", out_dir, "--layers", str(layers), "--heads",
                    str(heads), "--d-model", str(d_model), "--vocab", str(vocab), "--n-ctx",
                    str(n_ctx), "--seed", str(seed)], check=True, capture_output=True)
    return out_dir
