#!/usr/bin/python3
"""Identity and transport, with real processes on loopback (README.md#security).

A CA, a server certificate (127.0.0.1 / localhost), a client certificate and an unrelated CA are
made with `openssl` in a temporary dir; tokens are random and hashed into a token file. A
coordinator serves TLS with --auth-tokens; a worker on the embedded model (models/lensgrid-tiny)
pulls from it over TLS with a worker token (from LENSGRID_COORDINATOR_TOKEN) and serves its own
Worker API with TLS and the same token file. Checks:
  - a plaintext client to a TLS server fails; a client trusting another CA fails;
  - mTLS (--tls-client-ca): a client without a certificate fails, with one it works;
  - no token and an unknown token are UNAUTHENTICATED; a submitter token cannot Register a
    worker, a worker token cannot SubmitJob or run the Worker API (PERMISSION_DENIED, naming the
    role needed and never the token);
  - SIGHUP reloads the token file (a token added works, a token removed is refused); a reload
    of a bad file keeps the old table;
  - a bad token-file line is a clear error naming FILE:LINE; a missing certificate names the flag;
  - a non-loopback --listen without TLS and tokens refuses to start (exit 2) unless --insecure,
    which warns;
  - `lensgrid search --coordinator ADDR --token T --tls-ca CA` works end to end, as does
    `lensgrid jobs` with LENSGRID_TOKEN / LENSGRID_TLS_CA; without a token it fails clearly;
    `lensgrid run --worker` with a submitter token runs, with a worker token it is refused;
    `lensgrid workers` needs an admin token;
  - `lensgrid search --local 1` needs no set-up, even with stray LENSGRID_TLS_* settings.
Nothing here asserts a duration: deadlines only guard against hangs.

usage: security_test.py COORDINATOR WORKER LENSGRID PYTHONPATH
"""
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import unittest

COORDINATOR_BIN, WORKER_BIN, LENSGRID_BIN, PY_DIR = map(os.path.abspath, sys.argv[1:5])
del sys.argv[1:5]
sys.path.insert(0, PY_DIR)
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "cluster"))
sys.path.insert(0, os.path.join(HERE, "..", "worker"))

import grpc  # noqa: E402
from lensgrid.v1 import coordinator_pb2 as cpb, coordinator_pb2_grpc as cpb_grpc  # noqa: E402
from lensgrid.v1 import worker_pb2 as wpb, worker_pb2_grpc as wpb_grpc  # noqa: E402
from cluster_harness import CoordinatorProcess, free_port, wait_for  # noqa: E402
from worker_harness import WorkerProcess, stop_process  # noqa: E402

TINY = os.path.abspath(os.path.join(HERE, "..", "..", "..", "models", "lensgrid-tiny"))
HANG = 600  # seconds; only guards against a hang
SEARCH = ["--dataset", "induction", "--method", "ablate-heads", "--n-prompts", "4",
          "--threads", "1"]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=120)


def make_pki(d):
    """ca.pem, server.pem/.key (127.0.0.1, localhost), client.pem/.key, other-ca.pem."""
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN=lensgrid test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                cwd=d)
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "127.0.0.1"), ("client", "lensgrid test client")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
                cwd=d)
    return {k: os.path.join(d, k) for k in
            ("ca.pem", "other-ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def read(path):
    with open(path, "rb") as f:
        return f.read()


def token_line(name, role, token):
    return f"{name} {role} {hashlib.sha256(token.encode()).hexdigest()}\n"


def code_of(call):
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def auth(token):
    return [("authorization", f"Bearer {token}")]


class SecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.pki = make_pki(cls.tmp.name)
        cls.tokens = {role: secrets.token_hex(16) for role in ("submitter", "worker", "admin")}
        cls.token_file = os.path.join(cls.tmp.name, "tokens")
        with open(cls.token_file, "w") as f:
            f.write("# test tokens\n")
            f.write(token_line("alice", "submitter", cls.tokens["submitter"]))
            f.write(token_line("pod", "worker", cls.tokens["worker"]))
            f.write(token_line("root", "admin", cls.tokens["admin"]))
        cls.server_flags = ["--tls-cert", cls.pki["server.pem"], "--tls-key", cls.pki["server.key"],
                            "--auth-tokens", cls.token_file]
        cls.coordinator = CoordinatorProcess(COORDINATOR_BIN, os.path.join(cls.tmp.name, "state"),
                                             *cls.server_flags)
        cls.worker = None
        try:
            env = dict(os.environ, LENSGRID_COORDINATOR_TOKEN=cls.tokens["worker"])
            old = os.environ.copy()
            os.environ.update(env)  # WorkerProcess inherits this process's environment
            try:
                cls.worker = WorkerProcess(WORKER_BIN, TINY, "--coordinator",
                                           cls.coordinator.address, "--coordinator-tls-ca",
                                           cls.pki["ca.pem"], "--threads", "1", "--name", "w0",
                                           *cls.server_flags)
            finally:
                os.environ.clear()
                os.environ.update(old)
            cls.model_id = wait_for(cls.registered_model, HANG, "the worker to register")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.worker is not None:
            cls.worker.stop()
        cls.coordinator.stop()
        cls.tmp.cleanup()

    @classmethod
    def tls(cls, ca="ca.pem", cert=None):
        return grpc.ssl_channel_credentials(
            root_certificates=read(cls.pki[ca]),
            private_key=read(cls.pki[cert + ".key"]) if cert else None,
            certificate_chain=read(cls.pki[cert + ".pem"]) if cert else None)

    @classmethod
    def stub(cls, address=None, **tls):
        channel = grpc.secure_channel(address or cls.coordinator.address, cls.tls(**tls))
        return cpb_grpc.CoordinatorStub(channel)

    @classmethod
    def registered_model(cls):
        workers = cls.stub().ListWorkers(cpb.ListWorkersRequest(), timeout=10,
                                         metadata=auth(cls.tokens["admin"])).workers
        alive = [w.model_id for w in workers if w.alive]
        return alive[0] if alive else None

    def list_jobs(self, stub, token):
        return code_of(lambda: stub.ListJobs(cpb.ListJobsRequest(), timeout=10,
                                             metadata=auth(token) if token else None))

    def client_env(self, **extra):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LENSGRID_")}
        env.update(extra)
        return env

    # --- transport ------------------------------------------------------------------------
    def test_plaintext_client_to_tls_server_fails(self):
        stub = cpb_grpc.CoordinatorStub(grpc.insecure_channel(self.coordinator.address))
        code, _ = self.list_jobs(stub, self.tokens["admin"])
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)

    def test_client_trusting_another_ca_fails(self):
        code, _ = self.list_jobs(self.stub(ca="other-ca.pem"), self.tokens["admin"])
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)

    def test_mtls_needs_a_client_certificate(self):
        with CoordinatorProcess(COORDINATOR_BIN, os.path.join(self.tmp.name, "mtls-state"),
                                *self.server_flags, "--tls-client-ca", self.pki["ca.pem"]) as c:
            code, _ = self.list_jobs(self.stub(c.address), self.tokens["admin"])
            self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
            code, details = self.list_jobs(self.stub(c.address, cert="client"),
                                           self.tokens["admin"])
            self.assertEqual(code, grpc.StatusCode.OK, details)
            # The CLI with a client certificate, its flags from the environment.
            proc = subprocess.run(
                [LENSGRID_BIN, "jobs", "--coordinator", c.address], capture_output=True,
                text=True, timeout=HANG,
                env=self.client_env(LENSGRID_TLS_CA=self.pki["ca.pem"],
                                    LENSGRID_TLS_CERT=self.pki["client.pem"],
                                    LENSGRID_TLS_KEY=self.pki["client.key"],
                                    LENSGRID_TOKEN=self.tokens["admin"]))
            self.assertEqual(proc.returncode, 0, proc.stderr)

    # --- tokens and roles -----------------------------------------------------------------
    def test_no_token_or_unknown_token_is_unauthenticated(self):
        stub = self.stub()
        for token in (None, "not-a-known-token"):
            code, details = self.list_jobs(stub, token)
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, token)
            self.assertNotIn("not-a-known-token", details)
        code, _ = code_of(lambda: stub.GetJob(cpb.GetJobRequest(job_id="x"), timeout=10,
                                              metadata=[("authorization", "Basic abc")]))
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        code, _ = self.list_jobs(stub, self.tokens["submitter"])
        self.assertEqual(code, grpc.StatusCode.OK)

    def test_roles(self):
        stub = self.stub()
        # The worker-facing RPCs (lensgrid.v1.WorkQueue, on the same port).
        queue_stub = getattr(cpb_grpc, "WorkQueueStub", cpb_grpc.CoordinatorStub)
        queue = queue_stub(grpc.secure_channel(self.coordinator.address, self.tls()))
        register = cpb.RegisterRequest(model_id="m", weights_sha256="0" * 64, name="intruder")
        code, details = code_of(lambda: queue.Register(register, timeout=10,
                                                      metadata=auth(self.tokens["submitter"])))
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, details)
        self.assertIn("worker or admin", details)
        self.assertNotIn(self.tokens["submitter"], details)
        submit = cpb.SubmitJobRequest(spec=cpb.JobSpec(model_id=self.model_id))
        code, details = code_of(lambda: stub.SubmitJob(submit, timeout=10,
                                                       metadata=auth(self.tokens["worker"])))
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, details)
        self.assertIn("submitter or admin", details)
        code, details = code_of(lambda: stub.ListWorkers(cpb.ListWorkersRequest(), timeout=10,
                                                         metadata=auth(self.tokens["worker"])))
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED, details)
        # Streams are checked before they start.
        code, _ = code_of(lambda: list(stub.WatchJob(cpb.WatchJobRequest(job_id="x"), timeout=10,
                                                     metadata=auth(self.tokens["worker"]))))
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)
        code, _ = code_of(lambda: queue.CompleteShard(iter([]), timeout=10,
                                                     metadata=auth(self.tokens["submitter"])))
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)

    def test_worker_api_checks_tokens(self):
        stub = wpb_grpc.WorkerStub(grpc.secure_channel(self.worker.address, self.tls()))
        info = lambda token: code_of(lambda: stub.GetModelInfo(  # noqa: E731
            wpb.GetModelInfoRequest(), timeout=10, metadata=auth(token) if token else None))
        self.assertEqual(info(None)[0], grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(info("nope")[0], grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(info(self.tokens["worker"])[0], grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(info(self.tokens["submitter"])[0], grpc.StatusCode.OK)
        run = wpb.RunWithCacheRequest()  # refused before it is read
        code, _ = code_of(lambda: list(stub.RunWithCache(run, timeout=10,
                                                         metadata=auth(self.tokens["worker"]))))
        self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED)
        plain = wpb_grpc.WorkerStub(grpc.insecure_channel(self.worker.address))
        self.assertEqual(code_of(lambda: plain.GetModelInfo(
            wpb.GetModelInfoRequest(), timeout=10,
            metadata=auth(self.tokens["submitter"])))[0], grpc.StatusCode.UNAVAILABLE)

    def test_python_client(self):
        import lensgrid
        w = lensgrid.Worker(self.worker.address, timeout=30, tls_ca=self.pki["ca.pem"],
                            token=self.tokens["submitter"])
        self.assertTrue(w.model_info().weights_sha256)
        w.close()
        with lensgrid.Worker(self.worker.address, timeout=30, tls_ca=self.pki["ca.pem"],
                             token="") as anonymous:
            with self.assertRaises(lensgrid.WorkerError) as e:
                anonymous.model_info()
            self.assertEqual(e.exception.code, grpc.StatusCode.UNAUTHENTICATED)
        # From the environment, as the CLI.
        old = dict(os.environ)
        os.environ.update(LENSGRID_TLS_CA=self.pki["ca.pem"], LENSGRID_TOKEN=self.tokens["admin"])
        try:
            with lensgrid.Worker(self.worker.address, timeout=30) as w:
                self.assertTrue(w.tokenize("Hello world"))
        finally:
            os.environ.clear()
            os.environ.update(old)
        with self.assertRaises(ValueError) as e:
            lensgrid.Worker(self.worker.address, tls_ca="/nonexistent/ca.pem")
        self.assertIn("tls_ca /nonexistent/ca.pem", str(e.exception))

    def test_sighup_reloads_tokens(self):
        tokens = os.path.join(self.tmp.name, "reload-tokens")
        old, new = secrets.token_hex(16), secrets.token_hex(16)
        with open(tokens, "w") as f:
            f.write(token_line("old", "admin", old))
        with CoordinatorProcess(COORDINATOR_BIN, os.path.join(self.tmp.name, "reload-state"),
                                "--auth-tokens", tokens) as c:
            stub = cpb_grpc.CoordinatorStub(grpc.insecure_channel(c.address))  # loopback
            self.assertEqual(self.list_jobs(stub, old)[0], grpc.StatusCode.OK)
            self.assertEqual(self.list_jobs(stub, new)[0], grpc.StatusCode.UNAUTHENTICATED)
            with open(tokens, "w") as f:
                f.write(token_line("new", "submitter", new))
            c.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: self.list_jobs(stub, new)[0] == grpc.StatusCode.OK, HANG,
                     "the new token to work after SIGHUP")
            self.assertEqual(self.list_jobs(stub, old)[0], grpc.StatusCode.UNAUTHENTICATED)
            # A bad file on reload: the old table stays, the log says why.
            with open(tokens, "w") as f:
                f.write(token_line("new", "submitter", new) + "broken line\n")
            c.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "kept the old tokens" in c.log_text(), HANG, "the failed reload")
            self.assertIn(f"{tokens}:2:", c.log_text())
            self.assertEqual(self.list_jobs(stub, new)[0], grpc.StatusCode.OK)
            self.assertIsNone(c.proc.poll())

    # --- start-up errors ------------------------------------------------------------------
    def start_coordinator(self, *args):
        state = tempfile.mkdtemp(dir=self.tmp.name)
        return subprocess.run([COORDINATOR_BIN, "--state-dir", state, *args],
                              capture_output=True, text=True, timeout=HANG)

    def test_bad_token_file_line_is_a_clear_error(self):
        bad = os.path.join(self.tmp.name, "bad-tokens")
        with open(bad, "w") as f:
            f.write("# ok\n" + token_line("a", "admin", "x") + "b owner " + "0" * 64 + "\n")
        proc = self.start_coordinator("--listen", "127.0.0.1:0", "--auth-tokens", bad)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(f"{bad}:3: role \"owner\" is not submitter, worker or admin", proc.stderr)
        proc = self.start_coordinator("--listen", "127.0.0.1:0", "--tls-cert",
                                      "/nonexistent/cert.pem", "--tls-key", self.pki["server.key"])
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("--tls-cert /nonexistent/cert.pem", proc.stderr)

    def test_non_loopback_listen_needs_tls_and_tokens_or_insecure(self):
        proc = self.start_coordinator("--listen", "0.0.0.0:0")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("--insecure", proc.stderr)
        proc = self.start_coordinator("--listen", "0.0.0.0:0", "--auth-tokens", self.token_file)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("TLS", proc.stderr)
        worker = subprocess.run([WORKER_BIN, "--model", TINY, "--listen", "0.0.0.0:0"],
                                capture_output=True, text=True, timeout=HANG)
        self.assertEqual(worker.returncode, 2, worker.stderr)
        # --insecure starts, with a warning.
        port = free_port()
        state = tempfile.mkdtemp(dir=self.tmp.name)
        proc = subprocess.Popen([COORDINATOR_BIN, "--state-dir", state, "--listen",
                                 f"0.0.0.0:{port}", "--insecure"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if "listening on" in line:
                    break
            self.assertTrue(any("warning: --insecure" in line for line in lines), lines)
        finally:
            stop_process(proc)
            proc.stdout.close()

    # --- the CLI end to end ---------------------------------------------------------------
    def test_search_with_tls_and_token(self):
        out = os.path.join(tempfile.mkdtemp(dir=self.tmp.name), "out")
        proc = subprocess.run(
            [LENSGRID_BIN, "search", "--coordinator", self.coordinator.address, "--model",
             self.model_id, *SEARCH, "--token", self.tokens["submitter"], "--tls-ca",
             self.pki["ca.pem"], "--output", out],
            capture_output=True, text=True, timeout=HANG, env=self.client_env())
        self.assertEqual(proc.returncode, 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        # The report's attention patterns come from a worker the submitter may list and call.
        self.assertNotIn("no attention patterns", proc.stderr)
        with open(os.path.join(out, "result.json")) as f:
            result = json.load(f)
        self.assertEqual(result["model"]["id"], self.model_id)
        job = result["run"]["job_id"]
        # `lensgrid jobs` from the environment; the job is listed.
        proc = subprocess.run(
            [LENSGRID_BIN, "jobs", "--coordinator", self.coordinator.address],
            capture_output=True, text=True, timeout=HANG,
            env=self.client_env(LENSGRID_TOKEN=self.tokens["submitter"],
                                LENSGRID_TLS_CA=self.pki["ca.pem"]))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn(job, proc.stdout)
        # Without a token: a clear refusal.
        proc = subprocess.run(
            [LENSGRID_BIN, "jobs", "--coordinator", self.coordinator.address, "--tls-ca",
             self.pki["ca.pem"]], capture_output=True, text=True, timeout=HANG,
            env=self.client_env())
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("needs a token", proc.stderr)
        # A CA file that is not there: the flag and the path.
        proc = subprocess.run(
            [LENSGRID_BIN, "jobs", "--coordinator", self.coordinator.address, "--tls-ca",
             "/nonexistent/ca.pem"], capture_output=True, text=True, timeout=HANG,
            env=self.client_env())
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("--tls-ca /nonexistent/ca.pem", proc.stderr)

    def test_run_on_worker_and_list_workers(self):
        proc = subprocess.run(
            [LENSGRID_BIN, "run", "--worker", self.worker.address, "--tokens", "1,2,3", "--tls-ca",
             self.pki["ca.pem"], "--token", self.tokens["submitter"]],
            capture_output=True, text=True, timeout=HANG, env=self.client_env())
        self.assertEqual(proc.returncode, 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        proc = subprocess.run(
            [LENSGRID_BIN, "run", "--worker", self.worker.address, "--tokens", "1,2,3", "--tls-ca",
             self.pki["ca.pem"], "--token", self.tokens["worker"]],
            capture_output=True, text=True, timeout=HANG, env=self.client_env())
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("PERMISSION_DENIED", proc.stderr)
        for token, ok in ((self.tokens["admin"], True), (self.tokens["submitter"], True),
                          (self.tokens["worker"], False)):
            proc = subprocess.run(
                [LENSGRID_BIN, "workers", "--coordinator", self.coordinator.address],
                capture_output=True, text=True, timeout=HANG,
                env=self.client_env(LENSGRID_TOKEN=token, LENSGRID_TLS_CA=self.pki["ca.pem"]))
            self.assertEqual(proc.returncode == 0, ok, proc.stderr)
            if ok:
                self.assertIn("w0", proc.stdout)
            else:
                self.assertIn("ListWorkers needs role submitter or admin", proc.stderr)

    def test_local_cluster_needs_no_setup(self):
        out = os.path.join(tempfile.mkdtemp(dir=self.tmp.name), "out")
        # Settings meant for another server must not reach the local cluster.
        env = self.client_env(LENSGRID_TLS_CERT="/nonexistent/cert.pem",
                              LENSGRID_AUTH_TOKENS="/nonexistent/tokens",
                              LENSGRID_COORDINATOR_TOKEN="wrong")
        proc = subprocess.run([LENSGRID_BIN, "search", "--model", TINY, *SEARCH, "--local", "1",
                               "--output", out], capture_output=True, text=True, timeout=HANG,
                              env=env)
        self.assertEqual(proc.returncode, 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        self.assertTrue(os.path.exists(os.path.join(out, "result.json")))


if __name__ == "__main__":
    unittest.main(verbosity=2)
