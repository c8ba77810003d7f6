"""lensgrid.Coordinator: circuit searches sharded over workers, from Python.

    c = lensgrid.Coordinator("127.0.0.1:7000", token=...)
    result = c.search("lensgrid-tiny", "induction", "ablate-heads", n_prompts=8)
    result.grids["delta"]          # numpy, with result.axes["delta"] == ["layer", "head"]
    result.ranked[:5]              # [{"grid", "index", "label", "value"}, ...] by |value|
    job = c.search(..., detach=True); job.wait(); job.result()
    job.write_output("out/")       # result.json, result.safetensors, report.html (the CLI's)
"""
import os
import shutil
import subprocess
import sys
import uuid
from typing import Any, Dict, Iterator, List, Optional

import grpc
import numpy as np

from lensgrid import _wire
from lensgrid.errors import Error, InvalidInputError, WorkerError
from lensgrid.v1 import coordinator_pb2, coordinator_pb2_grpc, search_pb2
from lensgrid.worker import open_channel


def _enum(enum: Any, prefix: str, name: Optional[str], what: str) -> int:
    if name is None:
        return 0
    if isinstance(name, int):
        return name
    key = prefix + name.upper().replace("-", "_")
    names = [n[len(prefix):].lower().replace("_", "-") for n, v in enum.items() if v]
    if key not in enum.keys():
        raise InvalidInputError(f"unknown {what} {name!r}; one of {names}")
    return enum.Value(key)


# The CLI's default metric per built-in dataset (DefaultMetric in client/search_command.cc):
# what a search measures when no metric is given. python_coordinator_test checks this table
# against the C++ one and against the metric of a job `lensgrid search` submits.
DATASET_DEFAULT_METRICS: Dict[str, str] = {"greater-than": "prob-diff", "induction": "loss"}
FALLBACK_METRIC = "logit-diff"  # every other dataset, JSONL files included


def default_metric(dataset: str) -> str:
    """The metric `lensgrid search --dataset DATASET` uses when --metric is not given."""
    return DATASET_DEFAULT_METRICS.get(dataset, FALLBACK_METRIC)


def find_lensgrid_binary(binary: Optional[str] = None) -> str:
    """The lensgrid CLI: `binary` when given, else $LENSGRID_BINARY, else `lensgrid` on PATH."""
    for given, what in ((binary, "lensgrid_binary"), (os.environ.get("LENSGRID_BINARY"),
                                                      "$LENSGRID_BINARY")):
        if given:
            path = shutil.which(given) if os.path.sep not in given else given
            if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
                raise Error(f"{what} {given!r} is not an executable file")
            return path
    found = shutil.which("lensgrid")
    if not found:
        raise Error("writing a job's output runs the lensgrid CLI (`lensgrid result JOB "
                    "--output DIR`, the writers of `lensgrid search --output`), which was not "
                    "found: pass lensgrid_binary=PATH, set LENSGRID_BINARY, or put lensgrid on "
                    "PATH")
    return found


_STATES = {v: n[len("JOB_"):].lower() for n, v in coordinator_pb2.JobState.items() if v}
_FINAL = {coordinator_pb2.JOB_SUCCEEDED, coordinator_pb2.JOB_FAILED, coordinator_pb2.JOB_CANCELLED}


def _label(axes: List[str], index: tuple) -> str:
    d = dict(zip(axes, index))
    if set(axes) == {"layer", "head"}:
        return f"L{d['layer']}H{d['head']}"
    if set(axes) == {"layer", "pos", "head"}:
        return f"L{d['layer']}H{d['head']}@{d['pos']}"
    return " ".join(f"{a}={i}" for a, i in zip(axes, index))


class SearchResult:
    """A finished job's result: .grids (name -> numpy array), .axes (name -> axis names),
    .tensors (every tensor the coordinator sent: per-prompt values, baseline, ...), .status
    (the JobStatus message) and .ranked (every component of every grid by |value|)."""

    def __init__(self, status: Any, grids: Dict[str, np.ndarray], axes: Dict[str, List[str]],
                 tensors: Dict[str, np.ndarray], job: Optional["Job"] = None):
        self.status, self.grids, self.axes, self.tensors = status, grids, axes, tensors
        self.job = job
        ranked = []
        for name, grid in grids.items():
            for index in np.ndindex(*grid.shape):
                ranked.append({"grid": name, "index": index, "label": _label(axes[name], index),
                               "value": float(grid[index])})
        ranked.sort(key=lambda r: -abs(r["value"]))
        self.ranked = ranked

    def top(self, k: int = 10, grid: Optional[str] = None) -> List[dict]:
        return [r for r in self.ranked if grid is None or r["grid"] == grid][:k]

    def write_output(self, output_dir: str, lensgrid_binary: Optional[str] = None,
                     normalize: bool = False) -> Dict[str, str]:
        """The job's result.json, result.safetensors and report.html (see Job.write_output)."""
        if self.job is None:
            raise Error("this SearchResult has no job to write (it was not read from a coordinator)")
        return self.job.write_output(output_dir, lensgrid_binary, normalize)

    def __repr__(self) -> str:
        shapes = {n: g.shape for n, g in self.grids.items()}
        return f"SearchResult(job {self.status.job_id}, {self.status.method}: {shapes})"


class Job:
    """A job on a coordinator: .id, status(), wait(), cancel(), result(), delete()."""

    def __init__(self, coordinator: "Coordinator", job_id: str):
        self.coordinator, self.id = coordinator, job_id

    def __repr__(self) -> str:
        return f"Job({self.id})"

    def status(self) -> Any:
        c = self.coordinator
        return c._call(c._stub.GetJob, coordinator_pb2.GetJobRequest(job_id=self.id))

    @property
    def state(self) -> str:
        return _STATES.get(self.status().state, "unspecified")

    def events(self, after_seq: int = 0) -> Iterator[Any]:
        """The job's numbered events from after_seq until it ends (WatchJob)."""
        c = self.coordinator
        try:
            for ev in c._stub.WatchJob(coordinator_pb2.WatchJobRequest(job_id=self.id,
                                                                       after_seq=after_seq),
                                       timeout=c.timeout):
                yield ev
        except grpc.RpcError as e:
            raise WorkerError(e.code(), e.details()) from None

    def wait(self, progress: bool = True, file: Any = None) -> "Job":
        """Blocks until the job ends, showing progress (tqdm when importable, else one line per
        event); raises lensgrid.Error when it failed or was cancelled."""
        out = file or sys.stderr
        bar = None
        if progress:
            try:
                from tqdm import tqdm  # type: ignore
                bar = tqdm(total=0, desc=f"job {self.id}", unit="shard", file=out)
            except ImportError:
                bar = None
        done_kinds = {coordinator_pb2.JobEvent.JOB_SUCCEEDED, coordinator_pb2.JobEvent.JOB_FAILED,
                      coordinator_pb2.JobEvent.JOB_CANCELLED}
        for ev in self.events():
            if bar is not None:
                bar.total = ev.shards_total
                bar.n = ev.shards_done
                bar.refresh()
            elif progress:
                kind = coordinator_pb2.JobEvent.Kind.Name(ev.kind).lower()
                eta = f", eta {ev.eta_s:.0f}s" if ev.eta_s > 0 else ""
                msg = f": {ev.message}" if ev.message else ""
                print(f"job {self.id}: {kind} {ev.shards_done}/{ev.shards_total}{eta}{msg}",
                      file=out, flush=True)
            if ev.kind in done_kinds:
                break
        if bar is not None:
            bar.close()
        status = self.status()
        if status.state == coordinator_pb2.JOB_FAILED:
            raise Error(f"job {self.id} failed: {status.error}", status.error_code, status.error)
        if status.state == coordinator_pb2.JOB_CANCELLED:
            raise Error(f"job {self.id} was cancelled")
        return self

    def cancel(self) -> Any:
        c = self.coordinator
        return c._call(c._stub.CancelJob, coordinator_pb2.CancelJobRequest(job_id=self.id))

    def delete(self) -> None:
        c = self.coordinator
        c._call(c._stub.DeleteJob, coordinator_pb2.DeleteJobRequest(job_id=self.id))

    def result(self) -> SearchResult:
        """The finished job's grids (GetResult)."""
        c = self.coordinator
        assembler = _wire.Assembler()
        header = None
        try:
            call = c._get_result(coordinator_pb2.GetResultRequest(job_id=self.id),
                                 timeout=c.timeout)
            for raw in call:
                got, chunk, data = _wire.split_response(raw, coordinator_pb2.ResultHeader)
                if got is not None:
                    header = got
                else:
                    assembler.add(chunk, data)
        except grpc.RpcError as e:
            raise WorkerError(e.code(), e.details()) from None
        if header is None:
            raise Error(f"job {self.id}: the result had no header")
        tensors = dict(assembler.tensors)
        grids, axes = {}, {}
        for g in header.grids:
            if g.name not in tensors:
                raise Error(f"job {self.id}: grid {g.name!r} missing from the result")
            grids[g.name] = tensors[g.name].reshape(tuple(g.shape))
            axes[g.name] = list(g.axes)
        return SearchResult(header.job, grids, axes, tensors, job=self)

    def write_output(self, output_dir: str, lensgrid_binary: Optional[str] = None,
                     normalize: bool = False) -> Dict[str, str]:
        """Writes the finished job's result.json, result.safetensors and report.html into
        output_dir, exactly as `lensgrid result JOB --coordinator ADDR --output DIR` does (it
        runs that command, with this connection's token and TLS settings, so the files come
        from the same writers as `lensgrid search --output`). lensgrid_binary: the CLI's path
        (default: $LENSGRID_BINARY, else `lensgrid` on PATH). normalize: as --normalize.
        Returns {"result.json": path, ...}; a lensgrid.Error (with the CLI's message) when the
        command fails."""
        c = self.coordinator
        binary = find_lensgrid_binary(lensgrid_binary)
        cmd = [binary, "result", self.id, "--coordinator", c.address, "--output", output_dir]
        if normalize:
            cmd.append("--normalize")
        env = dict(os.environ)
        for var, value in (("LENSGRID_TOKEN", c._token), ("LENSGRID_TLS_CA", c._tls_ca),
                           ("LENSGRID_TLS_CERT", c._tls_cert), ("LENSGRID_TLS_KEY", c._tls_key)):
            if value is not None:  # else the CLI reads the variable, as this client did
                env[var] = value
        os.makedirs(output_dir, exist_ok=True)
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=c.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise Error(f"job {self.id}: {' '.join(cmd[:2])} failed: {e}") from None
        if done.returncode != 0:
            msg = (done.stderr.strip() or done.stdout.strip()).splitlines()
            raise Error(f"job {self.id}: `lensgrid result` exited {done.returncode}: "
                        + (msg[-1] if msg else "no message"), details="\n".join(msg))
        return {name: os.path.join(output_dir, name)
                for name in ("result.json", "result.safetensors", "report.html")
                if os.path.exists(os.path.join(output_dir, name))}


class Coordinator:
    """A connection to a lensgrid coordinator (token and TLS as the CLI's --token / --tls-*,
    defaulting to LENSGRID_TOKEN, LENSGRID_TLS_CA, ...)."""

    def __init__(self, address: str, token: Optional[str] = None, tls_ca: Optional[str] = None,
                 tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 timeout: Optional[float] = None):
        self.address, self.timeout = address, timeout
        # Kept for the lensgrid CLI that write_output runs (None: its environment variable).
        self._token, self._tls_ca, self._tls_cert, self._tls_key = token, tls_ca, tls_cert, tls_key
        self._channel = open_channel(address, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                                     token=token, options=[("grpc.max_receive_message_length", 16 << 20)])
        self._stub = coordinator_pb2_grpc.CoordinatorStub(self._channel)
        # GetResult with its replies left serialized, for _wire.split_response.
        self._get_result = _wire.raw_stream(self._channel, coordinator_pb2, "Coordinator",
                                            "GetResult")

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Coordinator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, fn: Any, request: Any) -> Any:
        try:
            return fn(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise WorkerError(e.code(), e.details()) from None

    def search(self, model: str, dataset: str, method: str, metric: Optional[str] = None,
               ablation: Optional[str] = None, n_prompts: int = 0, seed: int = 0,
               seq_len: int = 0, prompts_per_shard: int = 0, components_per_shard: int = 0,
               weights_sha256: str = "", label: str = "", request_id: Optional[str] = None,
               detach: bool = False, progress: bool = True, output: Optional[str] = None,
               lensgrid_binary: Optional[str] = None, ig_steps: int = 0,
               receivers: Optional[List[str]] = None) -> Any:
        """Submits a search (model: a model id the workers serve; dataset: a built-in name or
        a .jsonl path; method/metric/ablation: the CLI's names; metric None: the dataset's
        default, as the CLI: default_metric(dataset)). Waits and returns its SearchResult, or
        with detach=True returns the Job at once. output: also write result.json,
        result.safetensors and report.html there (Job.write_output; not with detach).
        Circuit methods: ig_steps (eap-ig; 0 = 5) and receivers (path-patch: e.g.
        ["L1H1.k", "logits"]) go in JobSpec.circuit; acdc is driven by its client, one
        acdc-step job per iteration: run it with `lensgrid search --method acdc`."""
        if detach and output is not None:
            raise InvalidInputError("output= needs the finished job: call job.wait() and "
                                    "job.write_output(dir) on the detached job")
        if metric is None:
            metric = default_metric(dataset)
        spec = coordinator_pb2.JobSpec(
            model_id=model, weights_sha256=weights_sha256,
            method=_enum(search_pb2.SearchMethod, "METHOD_", method, "method"),
            metric=_enum(search_pb2.SearchMetric, "METRIC_", metric, "metric"),
            ablation=_enum(search_pb2.Ablation, "ABLATION_", ablation, "ablation"),
            prompts_per_shard=prompts_per_shard, components_per_shard=components_per_shard,
            label=label, circuit=search_pb2.CircuitOptions(ig_steps=ig_steps,
                                                           receivers=receivers or []))
        spec.dataset.n_prompts, spec.dataset.seed, spec.dataset.seq_len = n_prompts, seed, seq_len
        if dataset.endswith(".jsonl") or os.path.sep in dataset:
            try:
                with open(dataset, "rb") as f:
                    spec.dataset.jsonl = f.read()
            except OSError as e:
                raise InvalidInputError(f"dataset {dataset}: {e.strerror}") from None
            spec.dataset.name = os.path.basename(dataset)
        else:
            spec.dataset.name = dataset
        resp = self._call(self._stub.SubmitJob, coordinator_pb2.SubmitJobRequest(
            spec=spec, request_id=request_id or uuid.uuid4().hex))
        job = Job(self, resp.job_id)
        if detach:
            return job
        result = job.wait(progress=progress).result()
        if output is not None:
            job.write_output(output, lensgrid_binary)
        return result

    def job(self, job_id: str) -> Job:
        return Job(self, job_id)

    def jobs(self, state: Optional[str] = None, owner: str = "") -> List[Any]:
        """Every job (JobStatus messages) the caller may see, optionally by state and owner."""
        st = _enum(coordinator_pb2.JobState, "JOB_", state, "state") if state else 0
        out, token = [], ""
        while True:
            resp = self._call(self._stub.ListJobs, coordinator_pb2.ListJobsRequest(
                page_size=100, page_token=token, state=st, owner=owner))
            out.extend(resp.jobs)
            token = resp.next_page_token
            if not token:
                return out

    def workers(self, alive_only: bool = False, model: str = "") -> List[Any]:
        out, token = [], ""
        while True:
            resp = self._call(self._stub.ListWorkers, coordinator_pb2.ListWorkersRequest(
                page_size=100, page_token=token, alive_only=alive_only, model_id=model))
            out.extend(resp.workers)
            token = resp.next_page_token
            if not token:
                return out

    def cancel(self, job_id: str) -> Any:
        return self.job(job_id).cancel()
