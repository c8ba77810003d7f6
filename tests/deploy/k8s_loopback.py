"""Runs rendered Kubernetes manifests as processes on loopback: a tiny kubelet for tests.

Each pod of a workload (StatefulSet, Deployment, Job) is started the way Kubernetes would start
it: its init containers to completion, in order, then its containers, each with exactly the
declared command and args, $(VAR) expanded from the declared env (literal values, ConfigMap keys,
Secret keys (a Secret object the test adds; `optional` honoured), resource fields, pod fields).
Volumes: emptyDir, configMap, persistentVolumeClaim, and secret (each key of a Secret object the
test adds written as a file under the mount, base64 `data` decoded, `stringData` as is; `items`
picks keys and names their files; `defaultMode`/`mode` applied; a missing Secret or key fails
the pod unless `optional`). A Job's pods carry the labels the Job controller adds
(`batch.kubernetes.io/controller-uid` and `controller-uid`: one uid per Job object, the same for
every pod (retry) of it; `batch.kubernetes.io/job-name`, `job-name`). Only these are rewritten,
and every rewrite is recorded in `pod.rewrites` so a test can print and check them:
  - listen addresses 0.0.0.0:PORT / [::]:PORT -> 127.0.0.1:FREE, where PORT must be a declared
    containerPort of that container; each pod gets its own free ports;
  - Service addresses NAME[.NAMESPACE[.svc[.cluster.local]]]:PORT -> 127.0.0.1:FREE of the pod
    the Service selects, through its targetPort (by name or number), as cluster DNS would;
  - paths under a volumeMount's mountPath -> the pod's directory for that volume (emptyDir:
    one per pod; persistentVolumeClaim and volumeClaimTemplates: one per claim, shared);
  - paths under an image prefix given by the test (e.g. /opt/lensgrid) -> a test directory;
  - the executable: a name found in `binaries` -> the built binary; others from PATH.
Everything else (security contexts, resource limits, image pulls) is not simulated.

    cluster = Cluster(objects, binaries={"lensgrid-worker": ...}, image_dirs={...}, workdir=tmp)
    [coordinator] = cluster.start("StatefulSet", "lensgrid-coordinator")
    cluster.wait_probes(coordinator)
    print(cluster.service_address("lensgrid-coordinator", 7070))
    cluster.stop_all()
"""
import base64
import math
import uuid
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import grpc

HEALTH_STATUS = {1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
NAMESPACE = "default"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(address, service="", timeout=5.0):
    """grpc.health.v1.Health/Check with hand-encoded messages: SERVING, NOT_SERVING, or the
    gRPC status code name when the call itself fails (UNAVAILABLE while nothing listens)."""
    request = b"" if not service else b"\x0a" + bytes([len(service)]) + service.encode()
    try:
        with grpc.insecure_channel(address) as channel:
            reply = channel.unary_unary("/grpc.health.v1.Health/Check")(request, timeout=timeout)
    except grpc.RpcError as e:
        return e.code().name
    return HEALTH_STATUS.get(reply[1], "UNKNOWN") if reply[:1] == b"\x08" else "UNKNOWN"


def parse_quantity(text):
    """A Kubernetes resource quantity ("500m", "2", "1Gi") as a float."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    if not m:
        raise ValueError(f"bad quantity {text!r}")
    suffixes = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return float(m.group(1)) * suffixes[m.group(2)]


def expand(text, env):
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a literal $, anything
    else stays as written."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def parse_metrics(text):
    """Prometheus text format -> {(name, ((label, value), ...)): float}."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?', line)
        if not m:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        labels = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                         m.group(2) or "")))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


class Metrics(dict):
    """Scraped samples; get(name, **labels) sums the samples that carry those labels."""

    def get(self, name, default=0.0, **labels):
        found = [v for (n, ls), v in self.items()
                 if n == name and all((k, str(want)) in ls for k, want in labels.items())]
        return sum(found) if found else default

    def has(self, name):
        return any(n == name for n, _ in self)


class Process:
    """One container's process; its stdout and stderr are kept in memory."""

    def __init__(self, argv, env, cwd, name):
        self.name = name
        self.argv = argv
        self.lines = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def log(self):
        with self._lock:
            return "\n".join(self.lines)

    def wait(self, timeout):
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return rc

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Pod:
    def __init__(self, cluster, owner, template, name, claim_templates=(), extra_labels=None):
        self.cluster = cluster
        self.owner = owner
        self.name = name
        self.metadata = dict(template.get("metadata") or {})
        self.labels = {**(self.metadata.get("labels") or {}), **(extra_labels or {})}
        self.metadata["labels"] = self.labels
        self.spec = template["spec"]
        self.dir = os.path.join(cluster.workdir, "pods", name)
        self.ports = {}  # (container, declared port) -> free port on 127.0.0.1
        self.rewrites = []  # (container, declared text, what ran)
        self.processes = {}  # container name -> Process
        self.init_processes = {}  # init container name -> Process (finished)
        self.volume_dirs = {}
        claims = {t["metadata"]["name"] for t in claim_templates}
        for volume in self.spec.get("volumes") or []:
            vname = volume["name"]
            if "persistentVolumeClaim" in volume:
                path = cluster.claim_dir(volume["persistentVolumeClaim"]["claimName"])
            elif "emptyDir" in volume or "configMap" in volume or "secret" in volume:
                path = os.path.join(self.dir, "volumes", vname)
            else:
                raise NotImplementedError(f"pod {name}: volume {vname}: only emptyDir, configMap, "
                                          "secret and persistentVolumeClaim are simulated")
            os.makedirs(path, exist_ok=True)
            if "configMap" in volume:
                for key, value in cluster.config_map(volume["configMap"]["name"]).items():
                    with open(os.path.join(path, key), "w") as f:
                        f.write(value)
            if "secret" in volume:
                self._fill_secret_volume(vname, volume["secret"], path)
            self.volume_dirs[vname] = path
        for vname in claims:  # StatefulSet: claim "<template>-<pod>"
            self.volume_dirs[vname] = cluster.claim_dir(f"{vname}-{name}")
        for c in self.containers():
            for p in c.get("ports") or []:
                self.ports[(c["name"], p["containerPort"])] = free_port()

    def _fill_secret_volume(self, vname, source, path):
        """A secret volume as the kubelet makes it: each key a file (or `items` only, at their
        paths), with defaultMode / an item's mode."""
        secret_name = source["secretName"]
        optional = bool(source.get("optional"))
        data = self.cluster.secret_data(secret_name)
        if data is None:
            if optional:
                return
            raise AssertionError(f"pod {self.name}: volume {vname}: Secret {secret_name} is missing "
                                 "and not optional: the pod would not start")
        items = source.get("items")
        if items is None:
            items = [{"key": k, "path": k} for k in sorted(data)]
        default_mode = source.get("defaultMode", 0o644)
        for item in items:
            if item["key"] not in data:
                if optional:
                    continue
                raise AssertionError(f"pod {self.name}: volume {vname}: Secret {secret_name} has no "
                                     f"key {item['key']} and is not optional: the pod would not start")
            rel = os.path.normpath(item["path"])
            if rel.startswith("..") or os.path.isabs(rel):
                raise AssertionError(f"pod {self.name}: volume {vname}: item path {item['path']!r}")
            target = os.path.join(path, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(data[item["key"]])
            os.chmod(target, item.get("mode", default_mode))

    def containers(self):
        return list(self.spec.get("initContainers") or []) + list(self.spec["containers"])

    def container(self, name):
        return next(c for c in self.containers() if c["name"] == name)

    def port(self, container, declared):
        """The loopback port standing in for a declared containerPort (number or name)."""
        c = self.container(container)
        for p in c.get("ports") or []:
            if declared in (p["containerPort"], p.get("name")):
                return self.ports[(container, p["containerPort"])]
        raise AssertionError(f"pod {self.name}: container {container} declares no port {declared}")

    def address(self, container, declared):
        return f"127.0.0.1:{self.port(container, declared)}"

    # ---- what a container runs ----

    def env_of(self, c):
        env = {}
        for e in c.get("envFrom") or []:
            if "configMapRef" in e:
                prefix = e.get("prefix", "")
                for k, v in self.cluster.config_map(e["configMapRef"]["name"]).items():
                    env[prefix + k] = v
            else:
                raise NotImplementedError(f"envFrom {e}")
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = expand(str(e["value"]), env)
                continue
            source = e["valueFrom"]
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                data = self.cluster.config_map(ref["name"])
                if ref["key"] not in data:
                    raise AssertionError(f"ConfigMap {ref['name']} has no key {ref['key']}")
                env[e["name"]] = data[ref["key"]]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = self.cluster.secret_data(ref["name"]) or {}
                if ref["key"] in data:
                    env[e["name"]] = data[ref["key"]].decode()
                elif not ref.get("optional"):
                    raise AssertionError(f"Secret {ref['name']} (key {ref['key']}) is missing and "
                                         "not optional: the pod would not start")
            elif "resourceFieldRef" in source:
                ref = source["resourceFieldRef"]
                target = self.container(ref.get("containerName", c["name"]))
                kind, resource = ref["resource"].split(".", 1)
                value = ((target.get("resources") or {}).get(kind) or {}).get(resource)
                if value is None:
                    raise AssertionError(f"{ref['resource']} of {target['name']} is not set (on a "
                                         "node it would be the node's allocatable)")
                divisor = parse_quantity(ref.get("divisor", "1"))
                env[e["name"]] = str(math.ceil(parse_quantity(value) / divisor))
            elif "fieldRef" in source:
                field = source["fieldRef"]["fieldPath"]
                values = {"metadata.name": self.name, "metadata.namespace": NAMESPACE,
                          "status.podIP": "127.0.0.1", "spec.nodeName": "localhost"}
                m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", field)
                if m:
                    env[e["name"]] = (self.metadata.get(m.group(1)) or {}).get(m.group(2), "")
                elif field in values:
                    env[e["name"]] = values[field]
                else:
                    raise NotImplementedError(f"fieldRef {field}")
            else:
                raise NotImplementedError(f"env {e['name']}: {source}")
        return env

    def rewrite(self, c, text):
        """One declared string as it runs on loopback (see the module's doc)."""
        declared_ports = {p["containerPort"] for p in c.get("ports") or []}

        def listen(m):
            port = int(m.group(2))
            if port not in declared_ports:
                raise AssertionError(f"pod {self.name}: container {c['name']} listens on "
                                     f"{m.group(0)}, which is not a declared containerPort")
            return f"127.0.0.1:{self.ports[(c['name'], port)]}"

        out = re.sub(r"(0\.0\.0\.0|\[::\]):(\d+)\b", listen, text)
        service = re.fullmatch(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?)((\.[a-z0-9-]+)*):(\d+)", out)
        if service and self.cluster.find("Service", service.group(1)):
            suffix = service.group(3)
            allowed = ("", f".{NAMESPACE}", f".{NAMESPACE}.svc", f".{NAMESPACE}.svc.cluster.local")
            if suffix not in allowed:
                raise AssertionError(f"{out}: not a name cluster DNS resolves here")
            out = self.cluster.service_address(service.group(1), int(service.group(5)))
        # Paths: under a mount of this container, or under an image prefix.
        mounts = sorted(((m["mountPath"].rstrip("/"), self.volume_dirs[m["name"]])
                         for m in c.get("volumeMounts") or []), key=lambda x: -len(x[0]))
        prefix, _, value = out.rpartition("=") if out.startswith("--") else ("", "", out)
        for root, local in mounts + sorted(self.cluster.image_dirs.items(), key=lambda x: -len(x[0])):
            if value == root or value.startswith(root + "/"):
                value = local + value[len(root):]
                break
        out = f"{prefix}={value}" if prefix else value
        if out != text:
            self.rewrites.append((c["name"], text, out))
        return out

    def argv_of(self, c):
        if not c.get("command"):
            raise AssertionError(f"pod {self.name}: container {c['name']} declares no command "
                                 "(the image's entrypoint is not simulated)")
        env = self.env_of(c)
        declared = [expand(str(a), env) for a in c["command"] + (c.get("args") or [])]
        argv = [self.rewrite(c, a) for a in declared]
        exe = self.cluster.binaries.get(argv[0]) or shutil.which(argv[0])
        if not exe:
            raise AssertionError(f"{argv[0]}: no such binary")
        return [exe] + argv[1:], {k: self.rewrite(c, v) for k, v in env.items()}

    def run(self):
        """Init containers to completion, in order; then the containers, in the background."""
        os.makedirs(self.dir, exist_ok=True)
        for c in self.spec.get("initContainers") or []:
            proc = self.init_processes[c["name"]] = self._start(c)
            rc = proc.wait(timeout=120)
            if rc != 0:
                raise AssertionError(f"pod {self.name}: init container {c['name']} exited {rc}:\n"
                                     f"{proc.log()}")
        for c in self.spec["containers"]:
            self.processes[c["name"]] = self._start(c)
        return self

    def _start(self, c):
        argv, env = self.argv_of(c)
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.dir,
                "HOSTNAME": self.name, "LANG": "C.UTF-8"}
        for keep in ("LD_LIBRARY_PATH",):
            if keep in os.environ:
                base[keep] = os.environ[keep]
        return Process(argv, {**base, **env}, self.dir, f"{self.name}/{c['name']}")

    def process(self, container=None):
        return self.processes[container or self.spec["containers"][0]["name"]]

    # ---- probes, signals, metrics ----

    def wait_probes(self, timeout=None):
        """Waits until every container's startup, readiness and liveness probes succeed: each
        a grpc.health.v1 Check of the probe's service on its (mapped) port. The budget is the
        startup probe's (periodSeconds x failureThreshold), capped by `timeout`."""
        for c in self.spec["containers"]:
            probes = [(k, c[k]) for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in c]
            for kind, probe in probes:
                if "grpc" not in probe:
                    raise AssertionError(f"{self.name}/{c['name']}: {kind} is not a gRPC probe")
                address = self.address(c["name"], probe["grpc"]["port"])
                service = probe["grpc"].get("service", "")
                budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
                if timeout is not None:
                    budget = min(budget, timeout)
                end = time.monotonic() + budget
                status = None
                while True:
                    proc = self.processes[c["name"]]
                    if not proc.alive():
                        raise AssertionError(f"{proc.name} exited {proc.proc.returncode} before its "
                                             f"{kind} passed:\n{proc.log()}")
                    status = health(address, service, timeout=probe.get("timeoutSeconds", 1) + 1)
                    if status == "SERVING":
                        break
                    if time.monotonic() > end:
                        raise AssertionError(f"{self.name}/{c['name']}: {kind} (grpc {address} "
                                             f"service {service!r}) is {status} after {budget} s:\n"
                                             f"{proc.log()}")
                    time.sleep(0.2)

    def grace_seconds(self):
        return self.spec.get("terminationGracePeriodSeconds", 30)

    def terminate(self):
        """What the kubelet does: SIGTERM to every container, SIGKILL after the grace period.
        Returns {container: exit code}; a container that needed SIGKILL gets None."""
        for p in self.processes.values():
            if p.alive():
                p.proc.send_signal(signal.SIGTERM)
        codes = {}
        end = time.monotonic() + self.grace_seconds()
        for name, p in self.processes.items():
            try:
                codes[name] = p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                codes[name] = None
        return codes

    def kill(self):
        for p in self.processes.values():
            p.kill()

    def metrics_url(self):
        annotations = self.metadata.get("annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true":
            raise AssertionError(f"pod {self.name} is not annotated for scraping")
        port = int(annotations.get("prometheus.io/port", "0"))
        owner = next(c["name"] for c in self.spec["containers"]
                     if any(p["containerPort"] == port for p in c.get("ports") or []))
        path = annotations.get("prometheus.io/path", "/metrics")
        return f"http://{self.address(owner, port)}{path}"

    def scrape(self, timeout=5):
        with urllib.request.urlopen(self.metrics_url(), timeout=timeout) as reply:
            if reply.status != 200:
                raise AssertionError(f"{self.metrics_url()}: HTTP {reply.status}")
            return Metrics(parse_metrics(reply.read().decode()))


class Cluster:
    def __init__(self, objects, binaries, image_dirs, workdir):
        self.objects = objects
        self.binaries = binaries
        self.image_dirs = {k.rstrip("/"): v for k, v in image_dirs.items()}
        self.workdir = workdir
        self.pods = []
        self.uids = {}

    def find(self, kind, name):
        return next((o for o in self.objects
                     if o["kind"] == kind and o["metadata"]["name"] == name), None)

    def get(self, kind, name):
        obj = self.find(kind, name)
        if obj is None:
            raise AssertionError(f"no {kind}/{name} in the rendered manifests")
        return obj

    def config_map(self, name):
        return self.get("ConfigMap", name).get("data") or {}

    def secret_data(self, name):
        """{key: bytes} of Secret `name` (base64 `data` decoded, `stringData` encoded), or None
        when the test added no such Secret."""
        secret = self.find("Secret", name)
        if secret is None:
            return None
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        data.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
        return data

    def job_uid(self, name):
        """The uid of Job `name`: one per Job object, like the API server's."""
        return self.uids.setdefault(("Job", name), str(uuid.uuid4()))

    def claim_dir(self, claim):
        path = os.path.join(self.workdir, "claims", claim)
        os.makedirs(path, exist_ok=True)
        return path

    def start(self, kind, name, replicas=None):
        """Starts the pods of a workload (its declared replicas; a Job: one pod)."""
        obj = self.get(kind, name)
        spec = obj["spec"]
        count = replicas if replicas is not None else (1 if kind == "Job" else spec.get("replicas", 1))
        pods = []
        labels = {}
        if kind == "Job":  # what the Job controller puts on its pods
            uid = self.job_uid(name)
            labels = {"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                      "batch.kubernetes.io/job-name": name, "job-name": name}
        for i in range(count):
            pod_name = f"{name}-{i}" if kind == "StatefulSet" else f"{name}-{len(self.pods)}"
            pod = Pod(self, obj, spec["template"], pod_name,
                      claim_templates=spec.get("volumeClaimTemplates", ()) if kind == "StatefulSet" else (),
                      extra_labels=labels)
            self.pods.append(pod)
            pods.append(pod.run())
        return pods

    def service_address(self, name, port):
        """127.0.0.1:PORT of the (first running) pod behind Service `name`'s port `port`."""
        service = self.get("Service", name)
        entry = next((p for p in service["spec"]["ports"] if p["port"] == port), None)
        if entry is None:
            raise AssertionError(f"Service {name} has no port {port}")
        target = entry.get("targetPort", port)
        selector = service["spec"].get("selector") or {}
        for pod in self.pods:
            if all(pod.labels.get(k) == v for k, v in selector.items()) and \
                    any(p.alive() for p in pod.processes.values()):
                for c in pod.spec["containers"]:
                    for p in c.get("ports") or []:
                        if target in (p["containerPort"], p.get("name")):
                            return pod.address(c["name"], p["containerPort"])
        raise AssertionError(f"Service {name}:{port} selects no running pod with port {target}")

    def stop_all(self):
        for pod in self.pods:
            for p in pod.processes.values():
                if p.alive():
                    p.proc.send_signal(signal.SIGTERM)
        for pod in self.pods:
            for p in pod.processes.values():
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
