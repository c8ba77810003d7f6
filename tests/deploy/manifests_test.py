#!/usr/bin/python3
"""The Kubernetes manifests, started for real on loopback: what they declare runs.

Renders deploy/k8s/examples/hub-gpt2 (overlays/batch -- overlays/cpu plus the search Job -- with
components/hub-model: the model pulled from the Hugging Face Hub by an init container) with
`kubectl kustomize` and runs what it declares with k8s_loopback.py: the coordinator StatefulSet,
the worker Deployment (its declared replicas; each pod's `pull-model` init container runs
`lensgrid pull` against a fake Hub on loopback, tests/integration/hub/fake_hub.py, serving a
private `openai-community/gpt2` whose token comes from the Secret the component names) and the
batch example's search Job, unchanged -- command, args, env, ports exactly as declared, with host
names, ports, volume paths rewritten for loopback (printed) and the ConfigMap's HF_ENDPOINT set
to the fake Hub (as an air-gapped cluster sets its mirror). TLS and tokens are on, as the manifests
declare them: the test makes a CA and a server certificate with `openssl` (the README's commands;
SANs: the Services' names, and 127.0.0.1/localhost because the Services are rewritten to
loopback) and three tokens (submitter, worker, admin), and adds the Secrets the manifests mount
(lensgrid-tls, lensgrid-auth-tokens, lensgrid-worker-token, lensgrid-submitter-token). Then:
  - the search Job of every overlay and example needs no model: no init container, no model
    volume; it names the model by the ConfigMap's MODEL_ID, the id the workers serve it under;
  - the pulled model is in each worker pod's volume in the huggingface_hub layout, the token went
    to the Hub only and appears in no log;
  - every declared startup/readiness/liveness probe passes (grpc.health.v1, the probe's service)
    through the plaintext health port, with no credentials;
  - the APIs refuse what they must: a plaintext client and a client trusting another CA fail on
    the coordinator's client port and the Worker API; no token is UNAUTHENTICATED; the submitter
    token cannot call the worker-facing API (PERMISSION_DENIED), the worker token cannot list
    jobs, and the client port does not serve the worker-facing API at all;
  - the Job's `lensgrid search --coordinator ... --model $(MODEL_ID)` (no model file in its pod)
    completes and writes a well-formed result on the workers' weights, while
    one worker gets SIGTERM in the middle of a shard: it exits within its grace period, hands
    the shard back, and no shard is lost;
  - the Prometheus endpoints (prometheus.io/* annotations) are scraped and their counters match
    the work done (the metric names are the contract in deploy/README.md), lensgrid_pending_shards
    (the autoscaling signal) included;
  - a retry of the Job (a second pod of the same Job: the same uid, so the same request id)
    follows the job the first pod started: still one job;
  - no token appears in any log.

usage: manifests_test.py    (ctest runs it: tests/deploy/CMakeLists.txt)
env:   LENSGRID_BINARY_DIR  build tree with client/lensgrid, worker/lensgrid-worker,
                            service/lensgrid-coordinator (default: build/); or each one as
                            LENSGRID_BIN_LENSGRID, LENSGRID_BIN_LENSGRID_WORKER, ..._COORDINATOR
       KUBECTL              kubectl with kustomize (default: kubectl)
Exits 77 (ctest: skipped) when kubectl is missing or the binaries lack the flags (or LENSGRID_*
environment variables) the manifests use, naming them; set LENSGRID_DEPLOY_TEST_REQUIRED=1 to fail
instead.
"""
import base64
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration", "hub"))
from fake_hub import FakeHub  # noqa: E402
from k8s_loopback import Cluster, Pod, health  # noqa: E402

SOURCE_DIR = os.environ.get("LENSGRID_SOURCE_DIR",
                            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BINARY_DIR = os.environ.get("LENSGRID_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
KUBECTL = os.environ.get("KUBECTL", "kubectl")
# The image's executables by name; LENSGRID_BIN_<NAME> (e.g. LENSGRID_BIN_LENSGRID_WORKER) overrides.
BINARIES = {name: os.environ.get("LENSGRID_BIN_" + name.upper().replace("-", "_"),
                                 os.path.join(BINARY_DIR, subdir, name))
            for name, subdir in [("lensgrid", "client"), ("lensgrid-worker", "worker"),
                                 ("lensgrid-coordinator", "service")]}
# The image's install prefix (deploy/docker): the embedded model lives under it.
IMAGE_PREFIX = "/opt/lensgrid"
# The test's stand-in for the Hub's gpt2: GPT-2's vocabulary and 6 x 12 heads, so that the Job's
# search cuts into ~10 shards; narrow, so that it runs in about a minute on two cores.
TEST_MODEL = ["--layers", "6", "--heads", "12", "--d-model", "48", "--n-ctx", "64", "--seed", "8"]

COORDINATOR, WORKER, JOB = "lensgrid-coordinator", "lensgrid-worker", "lensgrid-search-induction"

# The metric names of deploy/README.md's contract (histograms by their _count series).
RPC_METRICS = ["lensgrid_rpc_requests_total", "lensgrid_rpc_latency_seconds_count"]
COORDINATOR_METRICS = RPC_METRICS + [
    "lensgrid_shards_leased_total", "lensgrid_shards_completed_total", "lensgrid_shards_failed_total",
    "lensgrid_shards_handed_back_total", "lensgrid_shards_retried_total", "lensgrid_jobs",
    "lensgrid_workers", "lensgrid_pending_shards"]
WORKER_METRICS = RPC_METRICS + [
    "lensgrid_executor_queue_depth", "lensgrid_executor_busy_seconds_total",
    "lensgrid_cache_bytes_sent_total", "lensgrid_worker_shards_running",
    "lensgrid_worker_shards_completed_total", "lensgrid_worker_shards_handed_back_total"]


def render(overlay):
    out = subprocess.run([KUBECTL, "kustomize", os.path.join(SOURCE_DIR, "deploy", "k8s", overlay)],
                         capture_output=True, text=True, check=True)
    return [o for o in yaml.safe_load_all(out.stdout) if o]


def kustomizations():
    """Every overlays/* and examples/* of deploy/k8s, as "overlays/cpu", ..."""
    found = []
    for parent in ("overlays", "examples"):
        base = os.path.join(SOURCE_DIR, "deploy", "k8s", parent)
        for name in sorted(os.listdir(base)):
            if os.path.isfile(os.path.join(base, name, "kustomization.yaml")):
                found.append(f"{parent}/{name}")
    return found


def without_config_hash(obj):
    """`obj` with kustomize's content hash cut from lensgrid-config's name wherever it is named
    (the hash changes with the ConfigMap's data, e.g. MODEL_DIR)."""
    return json.loads(re.sub(r'"lensgrid-config-[a-z0-9]{10}"', '"lensgrid-config"', json.dumps(obj)))


def config_ref(container, name):
    """(ConfigMap, key) that env `name` of a container comes from, or None."""
    for e in container.get("env") or []:
        if e["name"] == name:
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            return (ref["name"], ref["key"]) if ref else None
    return None


def flag(args, name):
    """The value after `name` in args (None when absent)."""
    return args[args.index(name) + 1] if name in args else None


def default_model_id(model_dir):
    """What a worker registers `--model MODEL_DIR` as without --model-id (common/model_id.h): a
    dir's name, or a Hub name as given."""
    return os.path.basename(model_dir.rstrip("/")) if model_dir.startswith("/") else model_dir


_HELP = {}


def unknown_options(overlays):
    """The flags and LENSGRID_* environment variables that the manifests of `overlays` give one
    of the binaries and that its --help (`lensgrid SUBCOMMAND --help` for the CLI) does not
    know: ["what is missing (where it is used)"]."""
    problems = []
    for overlay in overlays:
        for obj in render(overlay):
            template = (obj.get("spec") or {}).get("template")
            if not template:
                continue
            spec = template["spec"]
            for c in list(spec.get("initContainers") or []) + list(spec["containers"]):
                program = (c.get("command") or [""])[0]
                if program not in BINARIES:
                    continue
                words = [str(w) for w in list(c["command"][1:]) + list(c.get("args") or [])]
                argv = [BINARIES[program]] + (words[:1] if program == "lensgrid" else []) + ["--help"]
                if tuple(argv) not in _HELP:
                    out = subprocess.run(argv, capture_output=True, text=True)
                    _HELP[tuple(argv)] = out.stdout + out.stderr
                used = [w.split("=", 1)[0] for w in words if w.startswith("--")]
                used += [e["name"] for e in c.get("env") or [] if e["name"].startswith("LENSGRID_")]
                for name in used:
                    if not re.search(re.escape(name) + r"(?![\w-])", _HELP[tuple(argv)]):
                        what = "flag" if name.startswith("--") else "environment variable"
                        problems.append(f"{' '.join([program] + argv[1:-1])} has no {name} {what} "
                                        f"(the manifests use it: {overlay}, {obj['kind']}/"
                                        f"{obj['metadata']['name']}, container {c['name']})")
    return problems


def missing_prerequisites():
    """Why this test cannot run here, or None."""
    if shutil.which(KUBECTL) is None:
        return f"{KUBECTL} not found (kubectl with kustomize renders the manifests)"
    for name, path in BINARIES.items():
        if not os.access(path, os.X_OK):
            return f"{path} not built"
    # What this test runs: every flag and LENSGRID_* variable it gives the binaries exists.
    problems = unknown_options(["examples/hub-gpt2", "overlays/batch"])
    return problems[0] + " yet" if problems else None


# ---- TLS and tokens, made as deploy/README.md#security makes them ----

# The server certificate's names: the Services the clients and workers dial (with the cluster
# DNS suffixes of the default namespace), and loopback, where this test's kubelet points them.
SERVICE_NAMES = ["lensgrid-coordinator", "lensgrid-work-queue", "lensgrid-worker"]


def make_pki(directory):
    """A CA, a server certificate and two client certificates (worker, submitter; for mTLS)
    signed by it (ECDSA P-256), and an unrelated CA: {"ca.crt", "tls.crt", "tls.key",
    "worker.crt", "worker.key", "submitter.crt", "submitter.key", "other-ca.crt"} -> PEM bytes."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", "-new", *ec, "-days", "30", "-subj", "/CN=lensgrid test CA",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-new", *ec, "-subj", "/CN=lensgrid", "-keyout", "tls.key", "-out", "tls.csr")
    names = [f"DNS:{n}{suffix}" for n in SERVICE_NAMES
             for suffix in ("", ".default", ".default.svc", ".default.svc.cluster.local")]
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write("basicConstraints = CA:FALSE\n"
                "keyUsage = digitalSignature, keyEncipherment\n"
                "extendedKeyUsage = serverAuth\n"
                f"subjectAltName = {', '.join(names + ['DNS:localhost', 'IP:127.0.0.1'])}\n")
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "30", "-extfile", "san.ext", "-out", "tls.crt")
    with open(os.path.join(directory, "client.ext"), "w") as f:
        f.write("basicConstraints = CA:FALSE\nkeyUsage = digitalSignature\n"
                "extendedKeyUsage = clientAuth\n")
    for who in ("worker", "submitter"):
        openssl("req", "-new", *ec, "-subj", f"/CN=lensgrid-{who}", "-keyout", f"{who}.key",
                "-out", f"{who}.csr")
        openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "30", "-extfile", "client.ext", "-out", f"{who}.crt")
    openssl("req", "-x509", "-new", *ec, "-days", "30", "-subj", "/CN=another CA",
            "-keyout", "other-ca.key", "-out", "other-ca.crt")
    pem = {}
    for name in ("ca.crt", "tls.crt", "tls.key", "worker.crt", "worker.key", "submitter.crt",
                 "submitter.key", "other-ca.crt"):
        with open(os.path.join(directory, name), "rb") as f:
            pem[name] = f.read()
    return pem


def token_line(name, role, token):
    """A line of the --auth-tokens file: NAME ROLE SHA256_HEX_OF_TOKEN."""
    return f"{name} {role} {hashlib.sha256(token.encode()).hexdigest()}\n"


class Api:
    """Calls on a TLS gRPC port with a CA and a bearer token (either may be None: plaintext, no
    token), messages encoded by hand (no Python stubs for lensgrid's protos)."""

    def __init__(self, address, ca=None, token=None, cert=None, key=None):
        self.address, self.ca, self.token, self.cert, self.key = address, ca, token, cert, key

    def call(self, method, request=b"", timeout=10):
        creds = grpc.ssl_channel_credentials(root_certificates=self.ca, private_key=self.key,
                                             certificate_chain=self.cert) if self.ca else None
        metadata = [("authorization", f"Bearer {self.token}")] if self.token else None
        with (grpc.secure_channel(self.address, creds) if creds
              else grpc.insecure_channel(self.address)) as channel:
            return channel.unary_unary(method)(request, timeout=timeout, metadata=metadata)

    def code(self, method, request=b"", timeout=10):
        """The call's status code name (OK when it succeeds)."""
        try:
            self.call(method, request, timeout)
        except grpc.RpcError as e:
            return e.code().name
        return "OK"


# ---- the coordinator's ListJobs, decoded by hand (no Python stubs for coordinator.proto) ----

def _varint(data, i):
    value = shift = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _fields(data):
    """Top-level fields of a protobuf message: [(number, value)], value an int or bytes."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            n, i = _varint(data, i)
            value, i = data[i:i + n], i + n
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        out.append((number, value))
    return out


JOB_STATES = {1: "QUEUED", 2: "RUNNING", 3: "SUCCEEDED", 4: "FAILED", 5: "CANCELLED"}


def list_workers(api):
    """[{worker_id, model_id, weights_sha256, alive}] from lensgrid.v1.Coordinator/ListWorkers."""
    reply = api.call("/lensgrid.v1.Coordinator/ListWorkers")
    workers = []
    for number, value in _fields(reply):
        if number != 1:
            continue
        f = dict(_fields(value))
        workers.append({"worker_id": f.get(1, b"").decode(), "model_id": f.get(3, b"").decode(),
                        "weights_sha256": f.get(4, b"").decode(), "alive": bool(f.get(10, 0))})
    return workers


def list_jobs(api):
    """[{job_id, state, shards_done, shards_total}] from lensgrid.v1.Coordinator/ListJobs."""
    reply = api.call("/lensgrid.v1.Coordinator/ListJobs")
    jobs = []
    for number, value in _fields(reply):
        if number != 1:
            continue
        f = dict(_fields(value))
        jobs.append({"job_id": f.get(1, b"").decode(), "state": JOB_STATES.get(f.get(2, 0), "?"),
                     "shards_done": f.get(3, 0), "shards_total": f.get(4, 0)})
    return jobs


def wait_for(what, predicate, timeout, interval=0.1):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class ManifestsOnLoopbackTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="lensgrid-k8s-")
        cls.objects = render("examples/hub-gpt2")
        cls.batch_objects = render("overlays/batch")
        cls.cpu_objects = render("overlays/cpu")
        image_root = os.path.join(cls.tmp.name, "image")
        cls.image_dirs = {IMAGE_PREFIX: image_root + IMAGE_PREFIX}
        # As in the image (deploy/docker): the embedded models, `default` -> models/DEFAULT_MODEL
        # (the hub example does not use it).
        with open(os.path.join(SOURCE_DIR, "deploy", "docker", "Dockerfile.cpu")) as f:
            default_model = re.search(r"ARG DEFAULT_MODEL=(\S+)", f.read()).group(1)
        os.makedirs(image_root + IMAGE_PREFIX)
        shutil.copytree(os.path.join(SOURCE_DIR, "models"), image_root + IMAGE_PREFIX + "/models")
        os.symlink(default_model, image_root + IMAGE_PREFIX + "/models/default")
        # The Hub: a private openai-community/gpt2, its token in the Secret the component names.
        model_dir = os.path.join(cls.tmp.name, "hub-gpt2")
        subprocess.run([BINARIES["lensgrid"], "init", "--out", model_dir, *TEST_MODEL],
                       check=True, capture_output=True)
        cls.token = "hf_k8sLoopback" + os.urandom(8).hex()
        cls.hub = FakeHub()
        cls.hub.add_repo("openai-community/gpt2", {"main": "7" * 40}, model_dir, token=cls.token)
        cls.hub.start()
        config = next(o for o in cls.objects if o["kind"] == "ConfigMap")["data"]
        print(f"ConfigMap HF_ENDPOINT: {config['HF_ENDPOINT']!r} -> {cls.hub.endpoint!r} (the "
              "mirror)", file=sys.stderr)
        config["HF_ENDPOINT"] = cls.hub.endpoint
        cls.objects.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                            "metadata": {"name": "lensgrid-hf-token"},
                            "stringData": {"HF_TOKEN": cls.token}})
        # TLS and tokens: the Secrets deploy/README.md#security says to create.
        pki_dir = os.path.join(cls.tmp.name, "pki")
        os.makedirs(pki_dir)
        cls.pki = make_pki(pki_dir)
        cls.tokens = {role: f"lg-{role}-" + os.urandom(16).hex()
                      for role in ("submitter", "worker", "admin")}
        cls.objects += cls.secrets()
        cls.cluster = Cluster(cls.objects, BINARIES, cls.image_dirs,
                              os.path.join(cls.tmp.name, "cluster"))
        try:
            [cls.coordinator] = cls.cluster.start("StatefulSet", COORDINATOR)
            cls.coordinator.wait_probes(timeout=60)
            cls.workers = cls.cluster.start("Deployment", WORKER)
            for w in cls.workers:
                w.wait_probes(timeout=120)
        except BaseException:
            cls.dump_logs()
            cls.cluster.stop_all()
            raise
        for pod in cls.cluster.pods:
            for container, declared, ran in pod.rewrites:
                print(f"{pod.name}/{container}: {declared!r} -> {ran!r}", file=sys.stderr)
        ca = cls.pki["ca.crt"]
        cls.client_address = cls.cluster.service_address(COORDINATOR, 7070)
        cls.work_queue_address = cls.cluster.service_address("lensgrid-work-queue", 7072)
        cls.admin = Api(cls.client_address, ca, cls.tokens["admin"])

    @classmethod
    def secrets(cls):
        """The Secrets of deploy/README.md#security, from the test's certificates and tokens."""
        table = ("# NAME ROLE SHA256_HEX_OF_TOKEN\n"
                 + token_line("search-job", "submitter", cls.tokens["submitter"])
                 + token_line("workers", "worker", cls.tokens["worker"])
                 + token_line("ops", "admin", cls.tokens["admin"]))

        def tls(name, cert, key, *more):
            return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": name},
                    "data": {k: base64.b64encode(cls.pki[v]).decode()
                             for k, v in [("tls.crt", cert), ("tls.key", key), *more]}}
        return [
            tls("lensgrid-tls", "tls.crt", "tls.key", ("ca.crt", "ca.crt")),
            # components/mtls: the clients' certificates.
            tls("lensgrid-worker-client-tls", "worker.crt", "worker.key"),
            tls("lensgrid-submitter-client-tls", "submitter.crt", "submitter.key"),
            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": "lensgrid-auth-tokens"}, "stringData": {"tokens": table}},
            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": "lensgrid-worker-token"}, "stringData": {"token": cls.tokens["worker"]}},
            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": "lensgrid-submitter-token"},
             "stringData": {"token": cls.tokens["submitter"]}},
        ]

    @classmethod
    def tearDownClass(cls):
        cls.cluster.stop_all()
        cls.hub.stop()
        cls.tmp.cleanup()

    @classmethod
    def dump_logs(cls):
        for pod in cls.cluster.pods:
            for p in list(pod.init_processes.values()) + list(pod.processes.values()):
                print(f"---- {p.name}: {' '.join(p.argv)}\n{p.log()}", file=sys.stderr)

    def run(self, result=None):
        problems = len(result.failures) + len(result.errors) if result is not None else 0
        outcome = super().run(result)
        if result is not None and len(result.failures) + len(result.errors) > problems:
            self.dump_logs()  # the processes' output, for this test's failure
        return outcome

    def test_every_overlay_uses_options_the_binaries_have(self):
        # Not only what this test runs: the gpu overlay's --device, the autoscaling example's
        # --model-wait-ms, ... (a typo there would only show on a cluster).
        self.assertEqual(unknown_options(kustomizations()), [])

    def test_batch_overlay_is_the_cpu_overlay_plus_the_job(self):
        extra = [o for o in self.batch_objects if o not in self.cpu_objects]
        self.assertEqual(sorted((o["kind"], o["metadata"]["name"]) for o in extra),
                         [("Job", JOB), ("PersistentVolumeClaim", "lensgrid-results")])
        self.assertEqual(len(self.batch_objects), len(self.cpu_objects) + 2)
        # The batch example runs on the embedded model: a dataset that model supports.
        job = next(o for o in self.batch_objects if o["kind"] == "Job")
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertEqual(args[args.index("--dataset") + 1], "induction")

    def test_search_jobs_need_no_model(self):
        # In every overlay and example with the search Job: the Job's pod knows the coordinator
        # and a model id, nothing of the model's files; the workers serve that id.
        jobs = 0
        for overlay in kustomizations():
            objects = render(overlay)
            for job in (o for o in objects if o["kind"] == "Job"):
                jobs += 1
                where = f"{overlay}: Job/{job['metadata']['name']}"
                spec = job["spec"]["template"]["spec"]
                # components/mtls adds the Job's client certificate: a Secret, no model.
                mtls = any(v["name"] == "client-tls" for v in spec.get("volumes") or [])
                self.assertEqual(mtls, overlay == "examples/mtls", where)
                self.assertEqual(spec.get("initContainers") or [], [], where)
                self.assertEqual(sorted(v["name"] for v in spec.get("volumes") or []),
                                 ["client-tls"] * mtls + ["results", "tls", "tmp"], where)
                # Of the TLS Secret, the CA only.
                [tls] = [v for v in spec["volumes"] if v["name"] == "tls"]
                self.assertEqual(tls["secret"]["items"], [{"key": "ca.crt", "path": "ca.crt"}], where)
                [search] = spec["containers"]
                self.assertEqual(sorted(m["mountPath"] for m in search["volumeMounts"]),
                                 ["/etc/lensgrid/client-tls"] * mtls
                                 + ["/etc/lensgrid/tls", "/results", "/tmp"], where)
                self.assertEqual(sorted(e["name"] for e in search["env"]),
                                 ["COORDINATOR_ADDRESS", "LENSGRID_REQUEST_ID", "LENSGRID_TLS_CA"]
                                 + ["LENSGRID_TLS_CERT", "LENSGRID_TLS_KEY"] * mtls
                                 + ["LENSGRID_TOKEN", "MODEL_ID"], where)
                self.assertEqual(flag(search["args"], "--model"), "$(MODEL_ID)", where)
                self.assertEqual(flag(search["args"], "--coordinator"), "$(COORDINATOR_ADDRESS)", where)
                # Still non-root with a read-only root file system.
                self.assertTrue(spec["securityContext"]["runAsNonRoot"], where)
                self.assertTrue(search["securityContext"]["readOnlyRootFilesystem"], where)
                self.assertEqual(search["securityContext"]["capabilities"], {"drop": ["ALL"]}, where)
                # The workers register with the same ConfigMap key.
                deployment = next(o for o in objects
                                  if o["kind"] == "Deployment" and o["metadata"]["name"] == WORKER)
                worker = deployment["spec"]["template"]["spec"]["containers"][0]
                self.assertEqual(flag(worker["args"], "--model-id"), "$(MODEL_ID)", where)
                [config_map] = [o for o in objects if o["kind"] == "ConfigMap"]
                ref = (config_map["metadata"]["name"], "MODEL_ID")
                self.assertEqual(config_ref(worker, "MODEL_ID"), ref, where)
                self.assertEqual(config_ref(search, "MODEL_ID"), ref, where)
                # ... and MODEL_ID names the model MODEL_DIR loads: an overlay changing the
                # model changed the id with it.
                data = config_map["data"]
                self.assertEqual(data["MODEL_ID"], default_model_id(data["MODEL_DIR"]), where)
        self.assertGreaterEqual(jobs, 4, "overlays/batch and three examples have the Job")

    def test_hub_example_is_the_batch_example_with_pulled_models(self):
        def by_name(objects):
            # A ConfigMap's name ends in kustomize's hash of its data, which the hub example
            # changes (MODEL_DIR and MODEL_ID name the model): compare it without the hash.
            def name(o):
                n = o["metadata"]["name"]
                return re.sub(r"-[a-z0-9]{10}$", "", n) if o["kind"] == "ConfigMap" else n
            return {(o["kind"], name(o)): o for o in objects if o["kind"] != "Secret"}
        hub, batch = by_name(self.objects), by_name(self.batch_objects)
        self.assertEqual(sorted(hub), sorted(batch))
        # The workers pull the model; their own container runs as in the batch example.
        spec = hub[("Deployment", WORKER)]["spec"]["template"]["spec"]
        batch_spec = batch[("Deployment", WORKER)]["spec"]["template"]["spec"]
        self.assertEqual([c["name"] for c in spec["initContainers"]], ["pull-model"])
        self.assertEqual(spec["initContainers"][0]["command"][:2], ["lensgrid", "pull"])
        self.assertEqual(spec["containers"][0]["args"], batch_spec["containers"][0]["args"])
        # The search Job is the batch example's, unchanged: it downloads nothing.
        self.assertEqual(without_config_hash(hub[("Job", JOB)]),
                         without_config_hash(batch[("Job", JOB)]))
        config = hub[("ConfigMap", "lensgrid-config")]["data"]
        self.assertEqual((config["MODEL_DIR"], config["MODEL_ID"]), ("gpt2@main", "gpt2@main"))
        # The token reached each worker pod's pull (the fake Hub is private) and no log.
        self.assertTrue(any(r["auth"] == "Bearer " + self.token for r in self.hub.requests))
        self.assertEqual({r["auth"] for r in self.hub.requests if r["server"] == "cdn"}, {None})
        for w in self.workers:
            snapshot = os.path.join(w.volume_dirs["models"], "hub", "models--openai-community--gpt2",
                                    "snapshots", "7" * 40)
            self.assertTrue(os.path.isfile(os.path.join(snapshot, "model.safetensors")), snapshot)
        pulls = 0
        for pod in self.cluster.pods:
            for p in list(pod.init_processes.values()) + list(pod.processes.values()):
                self.assertNotIn(self.token, p.log())
                pulls += "sha256 verified" in p.log()
        self.assertGreaterEqual(pulls, len(self.workers))

    def test_mtls_example(self):
        # examples/mtls (overlays/batch + components/mtls) on a cluster of its own, one worker:
        # the coordinator also requires client certificates; the worker and the Job present
        # theirs from their Secrets.
        objects = render("examples/mtls") + self.secrets()
        cluster = Cluster(objects, BINARIES, self.image_dirs, os.path.join(self.tmp.name, "mtls"))
        ok = False
        try:
            [coordinator] = cluster.start("StatefulSet", COORDINATOR)
            coordinator.wait_probes(timeout=60)
            [worker] = cluster.start("Deployment", WORKER, replicas=1)
            worker.wait_probes(timeout=120)
            ca, cert, key = self.pki["ca.crt"], self.pki["submitter.crt"], self.pki["submitter.key"]
            address = cluster.service_address(COORDINATOR, 7070)
            work_queue = cluster.service_address("lensgrid-work-queue", 7072)
            admin = Api(address, ca, self.tokens["admin"], cert, key)
            # The worker got in with its certificate and token.
            alive = wait_for("the worker registered",
                             lambda: [w for w in list_workers(admin) if w["alive"]], 60)
            self.assertEqual(len(alive), 1, alive)
            # TLS and a good token without a client certificate: refused in the handshake, on
            # both ports. A certificate without a token: still UNAUTHENTICATED.
            list_method, register = "/lensgrid.v1.Coordinator/ListJobs", "/lensgrid.v1.WorkQueue/Register"
            self.assertEqual(Api(address, ca, self.tokens["admin"]).code(list_method), "UNAVAILABLE")
            self.assertEqual(Api(work_queue, ca, self.tokens["worker"]).code(register), "UNAVAILABLE")
            self.assertEqual(Api(address, ca, None, cert, key).code(list_method), "UNAUTHENTICATED")
            # The search Job, with its client certificate, completes.
            [job] = cluster.start("Job", JOB)
            rc = job.process().wait(timeout=600)
            self.assertEqual(rc, 0, job.process().log())
            [status] = list_jobs(admin)
            self.assertEqual(status["state"], "SUCCEEDED", status)
            ok = True
        finally:
            if not ok:
                for pod in cluster.pods:
                    for p in list(pod.init_processes.values()) + list(pod.processes.values()):
                        print(f"---- {p.name}: {' '.join(p.argv)}\n{p.log()}", file=sys.stderr)
            cluster.stop_all()

    def test_probes_and_services(self):
        # Declared replicas, each ready; the Services resolve to them.
        deployment = self.cluster.get("Deployment", WORKER)
        self.assertEqual(len(self.workers), deployment["spec"]["replicas"])
        self.assertGreaterEqual(len(self.workers), 2)
        for pod in self.workers + [self.coordinator]:
            c = pod.spec["containers"][0]
            probe = c["readinessProbe"]["grpc"]
            # The probes' port: plaintext, no token, and nothing but health.
            self.assertEqual(flag(c["args"], "--health-listen"), f"0.0.0.0:{probe['port']}")
            health_address = pod.address(c["name"], probe["port"])
            self.assertEqual(health(health_address, probe.get("service", "")), "SERVING")
            self.assertEqual(Api(health_address).code("/lensgrid.v1.Coordinator/ListJobs"),
                             "UNIMPLEMENTED")
            self.assertEqual(Api(health_address).code("/lensgrid.v1.Worker/GetModelInfo"),
                             "UNIMPLEMENTED")
        # The client-facing Service reaches the coordinator, with TLS and a token.
        self.assertIsInstance(list_jobs(Api(self.client_address, self.pki["ca.crt"],
                                            self.tokens["submitter"])), list)
        # Every rewrite is one the harness documents: loopback hosts/ports or mapped paths.
        for pod in self.cluster.pods:
            for container, declared, ran in pod.rewrites:
                self.assertTrue(ran.startswith("127.0.0.1:") or self.tmp.name in ran,
                                (pod.name, container, declared, ran))

    def test_loopback_secret_volumes(self):
        # The harness's secret volumes, as the kubelet makes them: every key a file, or the
        # `items` only; a missing Secret or key fails the pod unless `optional`.
        objects = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                    "data": {"a": base64.b64encode(b"A\x00").decode()}, "stringData": {"b": "B"}}]
        cluster = Cluster(objects, BINARIES, {}, os.path.join(self.tmp.name, "secret-volumes"))

        def pod(name, *volumes):
            spec = {"containers": [{"name": "c", "command": ["true"]}], "volumes": list(volumes)}
            return Pod(cluster, None, {"spec": spec}, name)

        def files(p, volume):
            d = p.volume_dirs[volume]
            out = {}
            for f in sorted(os.listdir(d)):
                with open(os.path.join(d, f), "rb") as file:
                    out[f] = file.read()
            return out
        p = pod("all", {"name": "v", "secret": {"secretName": "s"}},
                {"name": "w", "secret": {"secretName": "s", "items": [{"key": "b", "path": "x/b.txt"}],
                                         "defaultMode": 0o440}},
                {"name": "o", "secret": {"secretName": "nope", "optional": True}},
                {"name": "k", "secret": {"secretName": "s", "optional": True,
                                         "items": [{"key": "a", "path": "a"}, {"key": "z", "path": "z"}]}})
        self.assertEqual(files(p, "v"), {"a": b"A\x00", "b": b"B"})
        self.assertEqual(os.listdir(p.volume_dirs["w"]), ["x"])
        b_txt = os.path.join(p.volume_dirs["w"], "x", "b.txt")
        with open(b_txt, "rb") as f:
            self.assertEqual(f.read(), b"B")
        self.assertEqual(os.stat(b_txt).st_mode & 0o777, 0o440)
        self.assertEqual(files(p, "o"), {})
        self.assertEqual(files(p, "k"), {"a": b"A\x00"})
        with self.assertRaisesRegex(AssertionError, "Secret nope is missing and not optional"):
            pod("missing", {"name": "v", "secret": {"secretName": "nope"}})
        with self.assertRaisesRegex(AssertionError, "Secret s has no key z and is not optional"):
            pod("no-key", {"name": "v", "secret": {"secretName": "s", "items": [{"key": "z", "path": "z"}]}})

    def test_tls_and_tokens(self):
        ca, other_ca = self.pki["ca.crt"], self.pki["other-ca.crt"]
        list_jobs_method = "/lensgrid.v1.Coordinator/ListJobs"
        register = "/lensgrid.v1.WorkQueue/Register"
        # (A worker that is still running: the Job's test stops one.)
        live = [w for w in self.workers if w.process().alive()]
        worker_api = live[0].address("worker", "grpc")
        model_info = "/lensgrid.v1.Worker/GetModelInfo"
        for address, method in [(self.client_address, list_jobs_method),
                                (self.work_queue_address, register), (worker_api, model_info)]:
            # A plaintext client, even with a good token, gets no answer from a TLS port; nor
            # does a client that trusts another CA.
            self.assertEqual(Api(address, None, self.tokens["admin"]).code(method), "UNAVAILABLE",
                             (address, method))
            self.assertEqual(Api(address, other_ca, self.tokens["admin"]).code(method),
                             "UNAVAILABLE", (address, method))
            # TLS without a token, or with one not in the table.
            self.assertEqual(Api(address, ca).code(method), "UNAUTHENTICATED", (address, method))
            self.assertEqual(Api(address, ca, "lg-not-a-token").code(method), "UNAUTHENTICATED",
                             (address, method))
        # Roles: a submitter cannot act as a worker, a worker cannot read jobs.
        self.assertEqual(Api(self.work_queue_address, ca, self.tokens["submitter"]).code(register),
                         "PERMISSION_DENIED")
        self.assertEqual(Api(self.client_address, ca, self.tokens["worker"]).code(list_jobs_method),
                         "PERMISSION_DENIED")
        self.assertEqual(Api(worker_api, ca, self.tokens["worker"]).code(model_info),
                         "PERMISSION_DENIED")
        self.assertEqual(Api(worker_api, ca, self.tokens["submitter"]).code(model_info), "OK")
        # The two coordinator APIs are on their own ports: the client port has no WorkQueue, the
        # worker-facing port no Coordinator (so the NetworkPolicy's port rule is the split).
        self.assertEqual(Api(self.client_address, ca, self.tokens["worker"]).code(register),
                         "UNIMPLEMENTED")
        self.assertEqual(Api(self.work_queue_address, ca, self.tokens["admin"]).code(list_jobs_method),
                         "UNIMPLEMENTED")
        # Workers got in with their token (the worker-facing Service, TLS).
        self.assertTrue(wait_for("the workers registered",
                                 lambda: len([w for w in list_workers(self.admin) if w["alive"]])
                                 >= len(live), 60))

    def test_search_job_survives_a_worker_sigterm_and_metrics_match(self):
        hub_requests = len(self.hub.requests)
        [job] = self.cluster.start("Job", JOB)
        for container, declared, ran in job.rewrites:
            print(f"{job.name}/{container}: {declared!r} -> {ran!r}", file=sys.stderr)
        search = job.process()
        # The Job's pod has no model: nothing ran before the search, it has no model volume,
        # and it names the model by the ConfigMap's MODEL_ID, which every worker registered with.
        config_map, key = config_ref(job.spec["containers"][0], "MODEL_ID")
        model_id = self.cluster.config_map(config_map)[key]
        self.assertEqual(job.init_processes, {})
        self.assertEqual(sorted(job.volume_dirs), ["results", "tls", "tmp"])
        # Of the TLS Secret, the Job's pod got the CA and nothing else.
        self.assertEqual(os.listdir(job.volume_dirs["tls"]), ["ca.crt"])
        # Its request id is the Job's uid (the label the Job controller puts on its pods).
        self.assertEqual(job.env_of(job.spec["containers"][0])["LENSGRID_REQUEST_ID"],
                         self.cluster.job_uid(JOB))
        self.assertEqual(flag(search.argv, "--model"), model_id)

        def registered():
            alive = [w for w in list_workers(self.admin) if w["alive"]]
            return alive if len(alive) >= len(self.workers) else None
        workers = wait_for("every worker registered with the coordinator", registered, 60)
        self.assertEqual(len(workers), len(self.workers), workers)
        self.assertEqual({w["model_id"] for w in workers}, {model_id})
        victim, survivor = self.workers[0], self.workers[1:]
        # One Worker API call on each worker, for its RPC metrics.
        for w in self.workers:
            Api(w.address("worker", "grpc"), self.pki["ca.crt"],
                self.tokens["submitter"]).call("/lensgrid.v1.Worker/GetModelInfo", timeout=30)

        # The job is planned; the victim is in the middle of a shard.
        def submitted():
            if not search.alive():
                raise AssertionError(f"the search exited {search.proc.returncode}:\n{search.log()}")
            return list_jobs(self.admin)
        jobs = wait_for("the job to be submitted", submitted, 120)
        self.assertEqual(len(jobs), 1, jobs)
        shards_total = jobs[0]["shards_total"]
        self.assertGreaterEqual(shards_total, 3, "the search is too small to interrupt")

        def victim_busy():
            if not search.alive():
                raise AssertionError("the search ended before a worker could be interrupted:\n"
                                     + search.log())
            m = victim.scrape()
            return m if m.get("lensgrid_worker_shards_running") >= 1 else None
        before = wait_for("a shard running on the victim (lensgrid_worker_shards_running >= 1)",
                          victim_busy, 180, interval=0.05)
        codes = victim.terminate()
        self.assertEqual(list(codes.values()), [0],
                         f"worker did not exit cleanly within {victim.grace_seconds()} s: {codes}\n"
                         + victim.process().log())

        # The Job completes, with every shard done once.
        rc = search.wait(timeout=600)
        self.assertEqual(rc, 0, search.log())
        [status] = list_jobs(self.admin)
        self.assertEqual(status["state"], "SUCCEEDED", status)
        self.assertEqual(status["shards_done"], shards_total, status)

        # The result, where the Job's --output put it (on the results claim).
        args = job.spec["containers"][0]["args"]
        output = args[args.index("--output") + 1]
        self.assertTrue(output.startswith("/results/"), output)
        out_dir = os.path.join(job.volume_dirs["results"], output[len("/results/"):])
        with open(os.path.join(out_dir, "result.json")) as f:
            result = json.load(f)
        self.assertEqual(result["method"], args[args.index("--method") + 1])
        self.assertEqual(result["dataset"]["n_prompts"], int(args[args.index("--n-prompts") + 1]))
        # Pinned to the weights of the workers serving MODEL_ID (each pulled the same model);
        # the Job itself fetched nothing from the Hub.
        self.assertEqual(result["model"]["id"], model_id)
        self.assertEqual(len(result["model"]["weights_sha256"]), 64)
        self.assertEqual({result["model"]["weights_sha256"]}, {w["weights_sha256"] for w in workers})
        self.assertEqual(len(self.hub.requests), hub_requests)
        grid = result["outputs"][0]
        self.assertEqual(grid["axes"], ["layer", "head"])
        n_layers, n_heads = int(TEST_MODEL[1]), int(TEST_MODEL[3])
        self.assertEqual([len(grid["values"])] + sorted({len(r) for r in grid["values"]}),
                         [n_layers, n_heads])
        self.assertTrue(all(math.isfinite(v) for row in grid["values"] for v in row))
        self.assertGreater(os.path.getsize(os.path.join(out_dir, "result.safetensors")), 0)

        # The coordinator's counters: every lease ends in a first completion or a re-queue.
        m = self.coordinator.scrape()
        self.assertEqual([n for n in COORDINATOR_METRICS if not m.has(n)], [], "not exported")
        completed = m.get("lensgrid_shards_completed_total")
        retried = m.get("lensgrid_shards_retried_total")
        handed_back = m.get("lensgrid_shards_handed_back_total")
        self.assertEqual(completed, shards_total)
        self.assertGreaterEqual(handed_back, 1, "the victim's shard was not handed back")
        self.assertGreaterEqual(retried, handed_back)
        self.assertEqual(m.get("lensgrid_shards_failed_total"), 0)
        self.assertEqual(m.get("lensgrid_shards_leased_total"), completed + retried)
        self.assertEqual(m.get("lensgrid_jobs", state="succeeded"), 1)
        # The autoscaling signal (examples/autoscaling): nothing waits for a worker now.
        self.assertEqual(m.get("lensgrid_pending_shards", default=None), 0)
        for state in ("queued", "running", "failed", "cancelled"):
            self.assertEqual(m.get("lensgrid_jobs", state=state), 0, state)
        self.assertEqual(m.get("lensgrid_rpc_requests_total", method="SubmitJob", code="OK"), 1)
        self.assertEqual(m.get("lensgrid_rpc_latency_seconds_count", method="SubmitJob"), 1)
        self.assertGreaterEqual(m.get("lensgrid_rpc_requests_total", method="CompleteShard", code="OK"),
                                completed)
        self.assertGreaterEqual(m.get("lensgrid_rpc_requests_total", method="FailShard", code="OK"),
                                handed_back)

        # The workers' counters add up to the coordinator's. The victim's last scrape was
        # taken just before SIGTERM, with a shard running that it then handed back.
        done = [w.scrape() for w in survivor]
        for scraped in [before] + done:
            self.assertEqual([n for n in WORKER_METRICS if not scraped.has(n)], [], "not exported")
        by_survivors = sum(s.get("lensgrid_worker_shards_completed_total") for s in done)
        by_victim = before.get("lensgrid_worker_shards_completed_total")
        self.assertGreaterEqual(by_survivors, 1)
        self.assertLessEqual(by_survivors + by_victim, completed)
        self.assertGreaterEqual(by_survivors + by_victim + 1, completed)
        for s in done:
            self.assertEqual(s.get("lensgrid_rpc_requests_total", method="GetModelInfo", code="OK"), 1)
            self.assertEqual(s.get("lensgrid_rpc_latency_seconds_count", method="GetModelInfo"), 1)
            self.assertEqual(s.get("lensgrid_worker_shards_running"), 0)
            self.assertEqual(s.get("lensgrid_executor_queue_depth"), 0)
            if s.get("lensgrid_worker_shards_completed_total") > 0:
                self.assertGreater(s.get("lensgrid_executor_busy_seconds_total"), 0)
                self.assertGreater(s.get("lensgrid_cache_bytes_sent_total"), 0)

        # A retry of the Job (backoffLimit: another pod of the same Job, the same uid): it
        # follows the job the first pod submitted and writes its result again; no second job.
        os.remove(os.path.join(out_dir, "result.json"))
        [retry] = self.cluster.start("Job", JOB)
        rc = retry.process().wait(timeout=300)
        self.assertEqual(rc, 0, retry.process().log())
        [again] = list_jobs(self.admin)
        self.assertEqual(again["job_id"], status["job_id"])
        with open(os.path.join(out_dir, "result.json")) as f:
            self.assertEqual(json.load(f)["outputs"], result["outputs"])
        self.assertEqual(self.coordinator.scrape().get("lensgrid_shards_leased_total"),
                         m.get("lensgrid_shards_leased_total"))

        # No token in any log.
        for pod in self.cluster.pods:
            for p in list(pod.init_processes.values()) + list(pod.processes.values()):
                for role, token in self.tokens.items():
                    self.assertNotIn(token, p.log(), f"{p.name} logged the {role} token")


if __name__ == "__main__":
    why = missing_prerequisites()
    if why:
        print(f"skipped: {why}", file=sys.stderr)
        sys.exit(1 if os.environ.get("LENSGRID_DEPLOY_TEST_REQUIRED") == "1" else 77)
    unittest.main()
