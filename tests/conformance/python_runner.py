#!/usr/bin/python3
"""The conformance suite's Python runner (tests/conformance/README.md): every case through the
installed package's public API, lensgrid.Worker and lensgrid.Coordinator.

usage: python_runner.py --worker ADDR --coordinator ADDR --cases FILE --out DIR [--case NAME]...
(PYTHONPATH: the installed package, build/python-install.)
"""
import argparse
import hashlib
import json
import os
import re
import struct
import sys
import traceback

import grpc
import numpy as np

import lensgrid
from lensgrid.v1 import coordinator_pb2, search_pb2, tensor_pb2

_DTYPE_ARG = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def f64(x):
    """A float as the suite writes it: its binary64 bits, big-endian hex."""
    return {"f64": struct.pack(">d", float(x)).hex()}


def sanitize(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


class Tensors:
    """Canonical bytes of each tensor of a case, written as DIR/<case>/<name>.bin."""

    def __init__(self):
        self.items = {}  # name -> (dtype, shape, bytes)

    def add(self, name, array, wire_dtype=None):
        a = np.asarray(array)
        if a.dtype == np.float16:
            dtype, data = "F16", a.astype("<f4").tobytes()
        elif a.dtype == np.float32:
            # The client widens BF16 to float32; RunResult.dtypes names the wire dtype.
            dtype = "BF16" if wire_dtype == "BF16" else "F32"
            data = a.astype("<f4").tobytes()
        elif a.dtype == np.int64:
            dtype, data = "I64", a.astype("<i8").tobytes()
        elif a.dtype == np.int32:
            dtype, data = "I32", a.astype("<i4").tobytes()
        elif a.dtype == np.bool_:
            dtype, data = "BOOL", a.astype(np.uint8).tobytes()
        else:
            raise TypeError(f"tensor {name}: unexpected numpy dtype {a.dtype}")
        self.items[name] = (dtype, [int(d) for d in a.shape], data)

    def record(self):
        return {name: {"dtype": d, "shape": s, "sha256": hashlib.sha256(b).hexdigest()}
                for name, (d, s, b) in self.items.items()}

    def write(self, directory):
        os.makedirs(directory, exist_ok=True)
        for name, (_, _, data) in self.items.items():
            with open(os.path.join(directory, sanitize(name) + ".bin"), "wb") as f:
                f.write(data)


def positions_slice(p):
    return None if p is None else slice(p.get("start"), p.get("stop"))


def run_input(case, key="input"):
    spec = case[key]
    if "texts" in spec:
        return list(spec["texts"])
    return np.asarray(spec["tokens"], dtype=np.int64)


def input_kwargs(case):
    kw = {}
    for k in ("prepend_bos", "padding_side", "return_type", "per_token_loss", "stop_at_layer"):
        if k in case:
            kw[k] = case[k]
    if "logits_dtype" in case:
        kw["logits_dtype"] = _DTYPE_ARG[case["logits_dtype"]]
    return kw


def run_record(result, tensors):
    """values and tensors of a RunResult (wire dtypes from result.dtypes)."""
    tensors.add("tokens", result.tokens)
    if result.attention_mask is not None:
        tensors.add("attention_mask", result.attention_mask)
    for name in ("logits", "loss", "metric"):
        value = getattr(result, name)
        if value is not None:
            tensors.add(name, value, result.dtypes[name])
    names = list(result.keys())
    for name in names:
        tensors.add(name, result[name], result.dtypes[name])
    return {"weights_sha256": result.weights_sha256, "cache_names": names}


def model_info(w, case, tensors):
    info = w.model_info()
    c, lim = info.config, info.limits
    return {
        "api_version": info.api_version, "weights_sha256": info.weights_sha256,
        "tokenizer_sha256": info.tokenizer_sha256, "dtype": tensor_pb2.DType.Name(info.dtype),
        "processed": info.processed, "has_tokenizer": info.has_tokenizer,
        "config": {"n_layers": c.n_layers, "n_heads": c.n_heads, "d_model": c.d_model,
                   "d_head": c.d_head, "d_mlp": c.d_mlp, "n_ctx": c.n_ctx, "d_vocab": c.d_vocab,
                   "eps": f64(c.eps), "act_fn": c.act_fn, "bos_token_id": c.bos_token_id,
                   "eos_token_id": c.eos_token_id, "attn_only": c.attn_only},
        "hooks": [{"name": h.name, "shape": list(h.shape), "axes": list(h.axes)}
                  for h in info.hooks],
        "limits": {"max_batch": lim.max_batch, "max_tokens": lim.max_tokens,
                   "max_response_bytes": lim.max_response_bytes, "chunk_bytes": lim.chunk_bytes,
                   "max_queue": lim.max_queue, "max_program_nodes": lim.max_program_nodes,
                   "max_program_bytes": lim.max_program_bytes,
                   "max_einsum_elements": lim.max_einsum_elements},
    }


def tokenize(w, case, tensors):
    kw = {"prepend_bos": case["prepend_bos"]} if "prepend_bos" in case else {}
    return {"ids": [list(map(int, ids)) for ids in w.tokenize(list(case["texts"]), **kw)]}


def to_str_tokens(w, case, tensors):
    kw = {"prepend_bos": case["prepend_bos"]} if "prepend_bos" in case else {}
    return {"str_tokens": w.to_str_tokens(list(case["texts"]), **kw)}


def detokenize(w, case, tensors):
    return {"text": w.detokenize(case["ids"])}


def cache_kwargs(case, kw):
    """The case's cache selection (names, regexes) as the client's keyword arguments."""
    if "names" in case:
        kw["names"] = case["names"]
    if "regexes" in case:
        kw["names_regex"] = case["regexes"]
    return kw


def run_with_cache(w, case, tensors):
    kw = cache_kwargs(case, input_kwargs(case))
    if "remove_batch_dim" in case:
        kw["remove_batch_dim"] = case["remove_batch_dim"]
    if "positions" in case:
        kw["positions"] = positions_slice(case["positions"])
    if "dtype" in case:
        kw["dtype"] = _DTYPE_ARG[case["dtype"]]
    result = w.run_with_cache(run_input(case), **kw)
    return run_record(result, tensors)


def intervention(item):
    out = {"hook": item["hook"], "op": item["op"]}
    for k in ("head", "positions", "scale"):
        if k in item:
            out[k] = item[k]
    if "value" in item:
        v = item["value"]
        out["value"] = np.asarray(v["values"], dtype=np.float32).reshape(v["shape"])
    return out


def metric(spec):
    out = {"kind": spec["kind"], "answer": spec["answer"]}
    for k in ("wrong", "position", "per_prompt"):
        if k in spec:
            out[k] = spec[k]
    return out


def run_with_interventions(w, case, tensors):
    kw = input_kwargs(case)
    if "interventions" in case:
        kw["interventions"] = [intervention(i) for i in case["interventions"]]
    if "patch_input" in case:
        kw["patch_input"] = run_input(case, "patch_input")
    if "metric" in case:
        kw["metric"] = metric(case["metric"])
    cache_kwargs(case, kw)
    if "programs" in case:
        kw["programs"] = case["programs"]
    if "gradients" in case:
        g = case["gradients"]
        spec = {"hooks": g["hooks"]}
        if "saved" in g:
            spec["saved"] = g["saved"]
        if "positions" in g:
            spec["positions"] = positions_slice(g["positions"])
        if "dtype" in g:
            spec["dtype"] = _DTYPE_ARG[g["dtype"]]
        kw["gradients"] = spec
    result = w.run_with_interventions(run_input(case), **kw)
    return run_record(result, tensors)


def search(c, case, tensors):
    kw = {k: case[k] for k in ("metric", "ablation", "n_prompts", "seed", "seq_len",
                               "prompts_per_shard", "components_per_shard") if k in case}
    result = c.search(case["model"], case["dataset"], case["method"], progress=False, **kw)
    st = result.status
    for name, array in result.tensors.items():
        tensors.add(name, array, "F32")
    return {
        "state": coordinator_pb2.JobState.Name(st.state)[len("JOB_"):].lower(),
        "method": st.method, "model_id": st.model_id,
        # What the job runs with: UNSPECIFIED is LOGIT_DIFF / ZERO (search.proto's JobSpec).
        "metric": search_pb2.SearchMetric.Name(st.spec.metric),
        "ablation": search_pb2.Ablation.Name(st.spec.ablation),
        "n_prompts": st.n_prompts, "n_pos": st.n_pos, "shards_total": st.shards_total,
        "first_prompt_tokens": list(st.first_prompt.tokens),
        "first_prompt_str_tokens": list(st.first_prompt_str_tokens),
        "grids": [{"name": name, "axes": result.axes[name], "shape": list(result.grids[name].shape)}
                  for name in result.grids],
    }


CALLS = {"model_info": model_info, "tokenize": tokenize, "to_str_tokens": to_str_tokens,
         "detokenize": detokenize, "run_with_cache": run_with_cache,
         "run_with_interventions": run_with_interventions, "search": search}


def code_name(code):
    """A grpc.StatusCode, or a google.rpc.Code number (a failed job's), as its name."""
    if isinstance(code, grpc.StatusCode):
        return code.name
    for c in grpc.StatusCode:
        if c.value[0] == code:
            return c.name
    return f"CODE_{code}"


def run_case(worker, coordinator, case, out_dir):
    tensors = Tensors()
    try:
        fn = CALLS.get(case["call"])
        if fn is None:
            record = {"case": case["name"], "ok": False, "code": "UNSUPPORTED",
                      "message": f"unknown call {case['call']!r}"}
        else:
            values = fn(coordinator if case["call"] == "search" else worker, case, tensors)
            record = {"case": case["name"], "ok": True, "values": values,
                      "tensors": tensors.record()}
            tensors.write(os.path.join(out_dir, case["name"]))
    except lensgrid.Error as e:
        if e.code is not None:
            code = code_name(e.code)
        elif isinstance(e, lensgrid.InvalidInputError):
            code = "INVALID_ARGUMENT"  # refused by the client before sending
        else:
            code = "CLIENT_ERROR"
        record = {"case": case["name"], "ok": False, "code": code, "message": str(e)}
    except Exception:  # a runner or client bug: recorded, so the driver shows it
        record = {"case": case["name"], "ok": False, "code": "RUNNER_ERROR",
                  "message": traceback.format_exc()}
    with open(os.path.join(out_dir, case["name"] + ".json"), "w", encoding="utf-8") as f:
        json.dump(record, f, ensure_ascii=False, indent=1)
    return record


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", required=True)
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--case", action="append", default=[])
    a = ap.parse_args()
    with open(a.cases, encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    if a.case:
        unknown = set(a.case) - {c["name"] for c in cases}
        if unknown:
            sys.exit(f"python_runner: no such case: {sorted(unknown)}")
        cases = [c for c in cases if c["name"] in a.case]
    os.makedirs(a.out, exist_ok=True)
    worker = lensgrid.Worker(a.worker, timeout=120)
    coordinator = lensgrid.Coordinator(a.coordinator, timeout=120)
    try:
        for case in cases:
            record = run_case(worker, coordinator, case, a.out)
            print(f"python_runner: {case['name']}: "
                  f"{'ok' if record['ok'] else record['code']}", file=sys.stderr)
    finally:
        worker.close()
        coordinator.close()


if __name__ == "__main__":
    main()
