#!/usr/bin/python3
"""The cross-language conformance suite's driver (tests/conformance/README.md).

Starts one coordinator and two workers on models/lensgrid-tiny, runs every runner of RUNNERS on
cases.json against them, and checks that all runners give the same result for every case (same
ok / code, equal values, bit-identical tensors), and that the results are true (an independent
tokenizer and forward pass, the model's files, `lensgrid search --in-process`).

usage: conformance_test.py --source DIR --python-install DIR --coordinator-bin PATH
         --worker-bin PATH --lensgrid-bin PATH --cpp-runner PATH [--node PATH] [--out DIR]
Environment: LENSGRID_CONFORMANCE_SKIP=node,... skips runners (development only: a skipped
runner is reported and the test still fails unless LENSGRID_CONFORMANCE_ALLOW_SKIP=1).
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import reference  # noqa: E402


# ------------------------------------------------------------------------------------ runners
# One row per language: name, the file that must exist, and the command (given the parsed
# arguments). Adding a language adds one row here.
class Runner:
    def __init__(self, name, path, command, env=None):
        self.name, self.path, self.command, self.env = name, path, command, env or (lambda a: {})


RUNNERS = [
    Runner("cpp", lambda a: a.cpp_runner, lambda a: [a.cpp_runner]),
    Runner("python", lambda a: os.path.join(HERE, "python_runner.py"),
           lambda a: [sys.executable, os.path.join(HERE, "python_runner.py")],
           env=lambda a: {"PYTHONPATH": a.python_install}),
    Runner("node", lambda a: os.path.join(HERE, "node_runner.mjs"),
           lambda a: [a.node or "node", os.path.join(HERE, "node_runner.mjs")]),
]


# ------------------------------------------------------------------------------------ helpers
class Failures:
    def __init__(self):
        self.items = []

    def add(self, text):
        self.items.append(text)
        print("FAIL: " + text, flush=True)


def decode_f64(v):
    return struct.unpack(">d", bytes.fromhex(v["f64"]))[0]


_NP = {"F32": "<f4", "F16": "<f4", "BF16": "<f4", "I64": "<i8", "I32": "<i4", "BOOL": "u1"}


def load_tensor(out_dir, case, name, meta):
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    with open(os.path.join(out_dir, case, safe + ".bin"), "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=_NP[meta["dtype"]]).reshape(meta["shape"])


def first_value_diff(a, b, path="values"):
    """The first path where two JSON values differ, with both sides; None when equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b) and sorted(a) != sorted(b):
            return f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            d = first_value_diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_value_diff(x, y, f"{path}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}"
        return None
    if type(a) is not type(b) or a != b:
        def show(v):
            if isinstance(v, dict) and set(v) == {"f64"}:
                return f"{v} (= {decode_f64(v)!r})"
            return repr(v)
        return f"{path}: {show(a)} != {show(b)}"
    return None


def first_tensor_diff(x, y):
    """Index and values of the first differing element of two same-shaped arrays."""
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    same = (x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else (x == y)
    differ = np.argwhere(~same)
    if len(differ) == 0:
        return "the bytes differ but no element does (signed zeros?)"
    idx = tuple(int(i) for i in differ[0])
    return (f"{len(differ)} of {x.size} elements differ; first at index {list(idx)}: "
            f"{x[idx]!r} != {y[idx]!r}")


# ------------------------------------------------------------------------------------ services
def start_services(a, tmp):
    sys.path.insert(0, os.path.join(a.source, "tests", "integration", "worker"))
    sys.path.insert(0, os.path.join(a.source, "tests", "integration", "cluster"))
    sys.path.insert(0, a.python_install)
    from cluster_harness import CoordinatorProcess
    from worker_harness import WorkerProcess
    model = os.path.join(a.source, "models", "lensgrid-tiny")
    coord = CoordinatorProcess(a.coordinator_bin, os.path.join(tmp, "state"))
    workers = []
    try:
        for i in range(2):
            # Small chunks: every client reassembles tensors from many chunks.
            workers.append(WorkerProcess(a.worker_bin, model, "--coordinator", coord.address,
                                         "--threads", "1", "--chunk-bytes", "4096",
                                         "--name", f"conformance-{i}"))
        for w in workers:
            w.wait_for_log(r"registered with the coordinator", timeout=120)
    except BaseException:
        for w in workers:
            w.stop()
        coord.stop()
        raise
    return coord, workers, model


def run_runners(a, runners, coord, worker, cases_path, out_root):
    """Every runner at once (they are independent clients); returns {name: (rc, seconds)}."""
    results, threads = {}, []

    def go(r):
        out = os.path.join(out_root, r.name)
        os.makedirs(out, exist_ok=True)
        cmd = r.command(a) + ["--worker", worker.address, "--coordinator", coord.address,
                              "--cases", cases_path, "--out", out]
        env = dict(os.environ, LENSGRID_SOURCE_DIR=a.source, **r.env(a))
        start = time.monotonic()
        with open(os.path.join(out_root, r.name + ".log"), "w") as log:
            try:
                p = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=a.source,
                                   env=env, timeout=a.runner_timeout)
                rc = p.returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            except OSError as e:
                log.write(f"cannot start {cmd}: {e}\n")
                rc = "cannot start"
        results[r.name] = (rc, time.monotonic() - start)

    for r in runners:
        t = threading.Thread(target=go, args=(r,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return results


# ------------------------------------------------------------------------------------ truth
# The order a GPT-2 block runs its hooks in (ModelInfo.hooks lists hook_z before the pattern,
# as TransformerLens's hook_dict: registration order; a run's cache comes in execution order).
_BLOCK_STAGES = ["hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", "hook_attn_in",
                 "hook_q_input", "hook_k_input", "hook_v_input", "attn.hook_q", "attn.hook_k",
                 "attn.hook_v", "attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_z",
                 "attn.hook_result", "hook_attn_out", "hook_resid_mid", "ln2.hook_scale",
                 "ln2.hook_normalized", "hook_mlp_in", "mlp.hook_pre", "mlp.hook_post",
                 "hook_mlp_out", "hook_resid_post"]


def execution_key(name):
    parts = name.split(".")
    if parts[0] == "blocks":
        rest = ".".join(parts[2:])
        return (1, int(parts[1]), _BLOCK_STAGES.index(rest) if rest in _BLOCK_STAGES else 99)
    return ({"hook_embed": 0, "hook_pos_embed": 0}.get(name, 2), 0,
            {"hook_embed": 0, "hook_pos_embed": 1, "ln_final.hook_scale": 0,
             "ln_final.hook_normalized": 1}.get(name, 99))


class Truth:
    """Checks of one runner's results against independent truth; `get(case)` gives its record,
    `tensor(case, name)` a tensor's canonical values."""

    def __init__(self, a, model, out_dir, records, cases, fail):
        self.a, self.model, self.out, self.records, self.fail = a, model, out_dir, records, fail
        self.cases = {c["name"]: c for c in cases}
        self.tok = reference.Tokenizer(model)
        with open(os.path.join(model, "config.json")) as f:
            self.cfg = json.load(f)

    def get(self, name):
        r = self.records.get(name)
        if r is None or not r.get("ok"):
            self.fail(f"truth: case {name} did not succeed")
            return None
        return r

    def tensor(self, case, name):
        meta = self.records[case]["tensors"].get(name)
        if meta is None:
            self.fail(f"truth: case {case} has no tensor {name!r}")
            return None
        return load_tensor(self.out, case, name, meta)

    def check(self, cond, what):
        if not cond:
            self.fail("truth: " + what)
        return cond

    def close(self, case, name, got, want, atol):
        if got is None:
            return
        if not self.check(tuple(got.shape) == tuple(want.shape),
                          f"{case} {name}: shape {list(got.shape)} != {list(want.shape)}"):
            return
        err = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
        self.check(err <= atol, f"{case} {name}: max |error| {err:.3g} > {atol} against the "
                   "reference")

    def run_all(self):
        for name, case in self.cases.items():
            r = self.records.get(name)
            if case.get("expect_error"):
                if r is not None:
                    self.check(not r["ok"] and r.get("code") == case["expect_code"],
                               f"{name}: expected {case['expect_code']}, got "
                               f"{'ok' if r['ok'] else r.get('code')}")
                continue
            if r is not None and r["ok"]:
                self.dtypes(name, r)
        self.model_info()
        for name, case in self.cases.items():
            if case.get("expect_error"):
                continue
            if case["call"] == "tokenize":
                self.tokenize(name, case)
            elif case["call"] == "to_str_tokens":
                self.str_tokens(name, case)
            elif case["call"] == "detokenize":
                r = self.get(name)
                if r:
                    self.check(r["values"]["text"] == self.tok.decode(case["ids"]),
                               f"{name}: text {r['values']['text']!r} != "
                               f"{self.tok.decode(case['ids'])!r}")
            elif case["call"] in ("run_with_cache", "run_with_interventions"):
                self.run_shapes(name, case)
            elif case["call"] == "search":
                self.search(name, case)
        self.forward()
        self.rounding()
        self.interventions()
        self.loss_and_metric()

    def dtypes(self, name, r):
        """F16 / BF16 tensors hold values of their dtype (so a client that names a dtype it did
        not get, or widens wrongly, fails)."""
        for tname, meta in r["tensors"].items():
            if meta["dtype"] not in ("F16", "BF16"):
                continue
            x = load_tensor(self.out, name, tname, meta)
            if meta["dtype"] == "BF16":
                ok = not np.any(x.view(np.uint32) & 0xFFFF)
            else:
                with np.errstate(over="ignore"):
                    ok = np.array_equal(x.astype(np.float16).astype(np.float32), x,
                                        equal_nan=True)
            self.check(ok, f"{name} {tname}: values are not {meta['dtype']} values")

    def model_info(self):
        r = self.get("model_info")
        if not r:
            return
        v, cfg = r["values"], self.cfg
        with open(os.path.join(self.model, "model.safetensors"), "rb") as f:
            weights = hashlib.sha256(f.read()).hexdigest()
        # The tokenizer's identity (worker/model/tokenizer): sha256 of the vocab's length in
        # decimal, a newline, vocab.json, merges.txt.
        with open(os.path.join(self.model, "vocab.json"), "rb") as f:
            vocab = f.read()
        with open(os.path.join(self.model, "merges.txt"), "rb") as f:
            merges = f.read()
        tok = hashlib.sha256(str(len(vocab)).encode() + b"\n" + vocab + merges)
        want = {"n_layers": cfg["n_layer"], "n_heads": cfg["n_head"], "d_model": cfg["n_embd"],
                "d_head": cfg["n_embd"] // cfg["n_head"], "n_ctx": cfg["n_ctx"],
                "d_vocab": cfg["vocab_size"], "act_fn": cfg["activation_function"],
                "bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
                "attn_only": bool(cfg.get("lensgrid_attn_only", False))}
        for k, w in want.items():
            self.check(v["config"][k] == w, f"model_info config.{k} {v['config'][k]!r} != {w!r}")
        self.check(decode_f64(v["config"]["eps"]) == cfg["layer_norm_epsilon"],
                   f"model_info eps {decode_f64(v['config']['eps'])!r}")
        self.check(v["weights_sha256"] == weights, "model_info weights_sha256 is not the file's")
        self.check(v["tokenizer_sha256"] == tok.hexdigest(),
                   "model_info tokenizer_sha256 is not the tokenizer files' identity")
        self.check(v["api_version"].split(".")[0] == "2", f"api_version {v['api_version']}")
        hooks = [h["name"] for h in v["hooks"]]
        for layer in range(cfg["n_layer"]):
            for h in ("hook_resid_pre", "attn.hook_q", "attn.hook_pattern", "attn.hook_z",
                      "hook_resid_post"):
                self.check(f"blocks.{layer}.{h}" in hooks, f"model_info: no blocks.{layer}.{h}")
        order = [hooks.index(f"blocks.{layer}.hook_resid_pre") for layer in range(cfg["n_layer"])]
        self.check(order == sorted(order), "model_info: hooks not in forward order")
        pattern = v["hooks"][hooks.index("blocks.0.attn.hook_pattern")]
        self.check(pattern["shape"] == [-1, cfg["n_head"], -1, -1]
                   and pattern["axes"] == ["batch", "", "query_pos", "key_pos"],
                   f"model_info: pattern hook {pattern}")

    def tokenize(self, name, case):
        r = self.get(name)
        if not r:
            return
        bos = case.get("prepend_bos", True)
        want = [self.tok.encode(t, bos) for t in case["texts"]]
        for t, got, w in zip(case["texts"], r["values"]["ids"], want):
            self.check(got == w, f"{name}: {t!r} -> {got}, the reference BPE gives {w}")
        self.check(len(r["values"]["ids"]) == len(want), f"{name}: one id list per text")
        if name == "tok_default":
            self.check(r["values"]["ids"][0] == [306, 39, 68, 297, 78, 266, 273, 75, 67],
                       f"tok_default: 'Hello world' -> {r['values']['ids'][0]}")

    def str_tokens(self, name, case):
        r = self.get(name)
        if not r:
            return
        bos = case.get("prepend_bos", True)
        for t, got in zip(case["texts"], r["values"]["str_tokens"]):
            want = [self.tok.decode([i]) for i in self.tok.encode(t, bos)]
            self.check(got == want, f"{name}: {t!r} -> {got}, want {want}")

    def run_shapes(self, name, case):
        r = self.get(name)
        if not r:
            return
        t = r["tensors"]
        spec = case["input"]
        if "tokens" in spec:
            batch, pos = len(spec["tokens"]), len(spec["tokens"][0])
            tokens = self.tensor(name, "tokens")
            self.check(tokens is not None and tokens.tolist() == spec["tokens"],
                       f"{name}: header tokens are not the ids sent")
        else:
            ids = [self.tok.encode(x, case.get("prepend_bos", True)) for x in spec["texts"]]
            batch, pos = len(ids), max(len(i) for i in ids)
            tokens = self.tensor(name, "tokens")
            eos = self.cfg["eos_token_id"]
            left = case.get("padding_side") == "left"
            want = [([eos] * (pos - len(i)) + i) if left else (i + [eos] * (pos - len(i)))
                    for i in ids]
            self.check(tokens is not None and tokens.tolist() == want,
                       f"{name}: header tokens {None if tokens is None else tokens.tolist()} "
                       f"!= {want} (tokenized and padded on the "
                       f"{'left' if left else 'right'})")
            if len(set(map(len, ids))) > 1:
                mask = self.tensor(name, "attention_mask")
                wmask = [([0] * (pos - len(i)) + [1] * len(i)) if left
                         else ([1] * len(i) + [0] * (pos - len(i))) for i in ids]
                self.check(mask is not None and mask.tolist() == wmask,
                           f"{name}: attention_mask {None if mask is None else mask.tolist()}")
        rt = case.get("return_type", "logits")
        self.check(("logits" in t) == (rt in ("logits", "both")), f"{name}: logits presence")
        self.check(("loss" in t) == (rt in ("loss", "both")), f"{name}: loss presence")
        if "logits" in t:
            self.check(t["logits"]["shape"] == [batch, pos, self.cfg["vocab_size"]],
                       f"{name}: logits shape {t['logits']['shape']}")
            self.check(t["logits"]["dtype"] == case.get("logits_dtype", "F32"),
                       f"{name}: logits dtype {t['logits']['dtype']}")
        if "loss" in t:
            want = [batch, pos - 1] if case.get("per_token_loss") else []
            self.check(t["loss"]["shape"] == want, f"{name}: loss shape {t['loss']['shape']}")
        if "metric" in case:
            want = [batch] if case["metric"].get("per_prompt") else []
            self.check(t.get("metric", {}).get("shape") == want, f"{name}: metric shape")
        # The cache: which hooks, in forward order, and their shapes.
        hooks = self.records_hooks()
        if hooks is None:
            return
        names = r["values"]["cache_names"]
        cached = [n for n in names if not n.startswith(("saved:", "grad:"))]
        grads = [n[len("grad:"):] for n in names if n.startswith("grad:")]
        order = sorted((h["name"] for h in hooks), key=execution_key)
        want = self.wanted_hooks(case, order)
        if want is not None:
            self.check(cached == want, f"{name}: cached {cached}, want {want} (the hooks asked "
                       "for, in the order the forward pass runs them)")
        if "gradients" in case:
            self.check(grads == [self.full_name(h) for h in case["gradients"]["hooks"]],
                       f"{name}: gradients {grads}")
        by = {h["name"]: h for h in hooks}
        for n in cached + ["grad:" + g for g in grads]:
            hook = by[n[len("grad:"):] if n.startswith("grad:") else n]
            positions = (case.get("gradients", {}).get("positions") if n.startswith("grad:")
                         else case.get("positions"))
            shape = self.hook_shape(hook, batch, pos, positions,
                                    case.get("remove_batch_dim", False))
            self.check(t[n]["shape"] == shape, f"{name}: {n} shape {t[n]['shape']} != {shape}")
            want_dtype = (case.get("gradients", {}).get("dtype", "F32") if n.startswith("grad:")
                          else case.get("dtype", "F32"))
            self.check(t[n]["dtype"] == want_dtype, f"{name}: {n} dtype {t[n]['dtype']}")

    def records_hooks(self):
        r = self.records.get("model_info")
        return r["values"]["hooks"] if r and r["ok"] else None

    def full_name(self, short):
        import re
        m = re.fullmatch(r"(pattern|z|q|k|v)(\d+)", short)
        if m:
            return f"blocks.{m.group(2)}.attn.hook_{m.group(1)}"
        return short

    def wanted_hooks(self, case, order):
        import re
        names = [self.full_name(n) for n in case.get("names", [])]
        regexes = case.get("regexes", [])
        if not names and not regexes:
            if case["call"] == "run_with_interventions":
                return []
            want = list(order)
        else:
            want = [h for h in order if h in names or any(re.search(x, h) for x in regexes)]
        stop = case.get("stop_at_layer")
        if stop is not None:
            stop = stop % self.cfg["n_layer"] if stop < 0 else stop
            want = [h for h in want if not h.startswith("blocks.") or int(h.split(".")[1]) < stop]
            want = [h for h in want if not h.startswith(("ln_final", "unembed"))]
        return want

    @staticmethod
    def hook_shape(hook, batch, pos, positions, remove_batch_dim):
        n_pos = pos
        if positions is not None:
            n_pos = len(range(pos)[slice(positions.get("start"), positions.get("stop"))])
        shape = []
        for size, axis in zip(hook["shape"], hook["axes"]):
            if axis == "batch":
                if not remove_batch_dim:
                    shape.append(batch)
            elif axis in ("pos", "query_pos"):
                shape.append(n_pos)
            elif axis == "key_pos":
                shape.append(pos)
            else:
                shape.append(size)
        return shape

    def forward(self):
        """Patterns and log-softmaxed logits equal a float64 forward pass (processing the weights
        shifts logits by a constant per position, which log_softmax removes)."""
        case = self.cases["rwc_ids_f32"]
        if not self.get("rwc_ids_f32"):
            return
        ref = reference.forward(self.model, case["input"]["tokens"])
        for n in ("blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"):
            self.close("rwc_ids_f32", n, self.tensor("rwc_ids_f32", n), ref[n], 1e-4)
        logits = self.tensor("rwc_ids_f32", "logits")
        if logits is not None:
            def log_softmax(x):
                x = x.astype(np.float64)
                x = x - x.max(-1, keepdims=True)
                return x - np.log(np.exp(x).sum(-1, keepdims=True))
            self.close("rwc_ids_f32", "log_softmax(logits)", log_softmax(logits),
                       log_softmax(ref["logits"]), 1e-3)

    def rounding(self):
        """The F16 and BF16 runs' tensors are the F32 run's, rounded to nearest even."""
        base = self.records.get("rwc_ids_f32")
        if not base or not base["ok"]:
            return
        for case, kind in (("rwc_ids_f16", "F16"), ("rwc_ids_bf16", "BF16")):
            if not self.get(case):
                continue
            for n in base["tensors"]:
                if n in ("tokens",):
                    continue
                x = self.tensor("rwc_ids_f32", n)
                y = self.tensor(case, n)
                if x is None or y is None:
                    continue
                if kind == "F16":
                    want = x.astype(np.float16).astype(np.float32)
                else:
                    u = x.view(np.uint32).astype(np.uint64)
                    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16
                    want = u.astype(np.uint32).view(np.float32)
                self.check(np.array_equal(y, want), f"{case} {n}: not the F32 run's values "
                           f"rounded to {kind} ({first_tensor_diff(y, want)})")

    def loss_and_metric(self):
        """Losses and metrics agree with the logits of the same reply (float64 here)."""
        def log_softmax(x):
            x = x.astype(np.float64)
            x = x - x.max(-1, keepdims=True)
            return x - np.log(np.exp(x).sum(-1, keepdims=True))

        for name in ("rwc_regex_positions", "rwi_ops"):
            r = self.get(name)
            if not r:
                continue
            logits, loss = self.tensor(name, "logits"), self.tensor(name, "loss")
            tokens = np.asarray(self.cases[name]["input"]["tokens"])
            if logits is None or loss is None:
                continue
            nll = -np.take_along_axis(log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1)[..., 0]
            self.close(name, "loss", loss, nll if loss.ndim else np.asarray(nll.mean()), 1e-4)
        r = self.get("rwi_zero_head_metric")
        if r:
            logits, metric = (self.tensor("rwi_zero_head_metric", n) for n in ("logits", "metric"))
            if logits is not None and metric is not None:
                m = self.cases["rwi_zero_head_metric"]["metric"]
                last = logits[:, -1].astype(np.float64)
                rows = np.arange(len(last))
                want = last[rows, m["answer"]] - last[rows, m["wrong"]]
                self.close("rwi_zero_head_metric", "metric (logit diff)", metric, want, 1e-5)
        r = self.get("rwi_ops")
        if r:
            logits, metric = (self.tensor("rwi_ops", n) for n in ("logits", "metric"))
            if logits is not None and metric is not None:
                m = self.cases["rwi_ops"]["metric"]
                probs = np.exp(log_softmax(logits[:, m["position"]]))
                self.close("rwi_ops", "metric (prob)", metric,
                           np.asarray(probs[:, m["answer"][0]].mean()), 1e-6)

    def interventions(self):
        r = self.get("rwi_zero_head_metric")
        if r:
            z = self.tensor("rwi_zero_head_metric", "blocks.1.attn.hook_z")
            if z is not None:
                self.check(not np.any(z[:, :, 1, :]), "rwi_zero_head_metric: head 1 not zero")
                self.check(np.any(z[:, :, 0, :]), "rwi_zero_head_metric: head 0 zero too")
        r = self.get("rwi_ops")
        if r:
            case = self.cases["rwi_ops"]
            v = self.tensor("rwi_ops", "blocks.0.attn.hook_v")
            value = np.asarray(case["interventions"][0]["value"]["values"], dtype=np.float32)
            if v is not None:
                self.check(np.array_equal(v[:, [1, -1], 0, :],
                                          np.broadcast_to(value, v[:, [1, -1], 0, :].shape)),
                           "rwi_ops: the SET region of v does not hold the value")
            resid = self.tensor("rwi_ops", "blocks.1.hook_resid_pre")
            if resid is not None:
                self.check(not np.any(resid[:, -2, :]) and np.any(resid[:, -1, :]),
                           "rwi_ops: resid_pre1 at position -2 only should be zero")
            z = self.tensor("rwi_ops", "blocks.1.attn.hook_z")
            if z is not None:
                self.check(np.allclose(z[0, :, 0, :], z[1, :, 0, :]),
                           "rwi_ops: MEAN ablation of head 0 differs across the batch")
        r = self.get("rwi_programs")
        if r:
            z = self.tensor("rwi_programs", "blocks.1.attn.hook_z")
            if z is not None:
                self.check(not np.any(z[:, -1, 3, :]) and np.any(z[:, -2, 3, :]),
                           "rwi_programs: the program did not zero z[:, -1, 3]")
            t = r["tensors"]
            self.check(t.get("saved:peaky", {}).get("dtype") == "BOOL",
                       "rwi_programs: saved:peaky is not BOOL")
            self.check(t.get("saved:z_norm", {}).get("shape") == [2, 13, 4],
                       "rwi_programs: saved:z_norm shape")

    _in_process = {}  # case name -> result.json of `lensgrid search --in-process`

    def in_process(self, name, case):
        out = tempfile.mkdtemp(prefix="inprocess-")
        args = [self.a.lensgrid_bin, "search", "--model", self.model, "--in-process",
                "--output", out, "--dataset", case["dataset"], "--method", case["method"],
                "--n-prompts", str(case["n_prompts"]), "--seed", str(case["seed"]),
                "--seq-len", str(case["seq_len"])]
        if "metric" in case:
            args += ["--metric", case["metric"]]
        if "ablation" in case:
            args += ["--ablation", case["ablation"]]
        p = subprocess.run(args, capture_output=True, text=True)
        try:
            if not self.check(p.returncode == 0,
                              f"{name}: in-process search failed: {p.stderr[-2000:]}"):
                return None
            with open(os.path.join(out, "result.json")) as f:
                return json.load(f)
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def search(self, name, case):
        """The job's grids equal `lensgrid search --in-process` on the same arguments."""
        r = self.get(name)
        if not r:
            return
        v = r["values"]
        self.check(v["state"] == "succeeded" and v["model_id"] == case["model"]
                   and v["method"] == case["method"] and v["n_prompts"] == case["n_prompts"],
                   f"{name}: job {v['state']} {v['model_id']} {v['method']} {v['n_prompts']}")
        if name not in Truth._in_process:
            Truth._in_process[name] = self.in_process(name, case)
        want = Truth._in_process[name]
        if want is None:
            return
        self.check(v["metric"] == "METRIC_" + want["metric"].upper().replace("-", "_"),
                   f"{name}: metric {v['metric']} != in-process {want['metric']}")
        grids = {g["name"]: g for g in v["grids"]}
        self.check(sorted(grids) == sorted(o["name"] for o in want["outputs"]),
                   f"{name}: grids {sorted(grids)}")
        for o in want["outputs"]:
            g = grids.get(o["name"])
            if g is None:
                continue
            self.check(g["axes"] == o["axes"], f"{name}: {o['name']} axes {g['axes']}")
            got = self.tensor(name, o["name"])
            if got is not None:
                self.close(name, o["name"], got.reshape(g["shape"]), np.asarray(o["values"]),
                           1e-5)


# ------------------------------------------------------------------------------------ compare
def compare(runners, out_root, cases, fail):
    """Every runner's record of every case equals the first runner's."""
    records = {}
    for r in runners:
        records[r.name] = {}
        for c in cases:
            path = os.path.join(out_root, r.name, c["name"] + ".json")
            try:
                with open(path, encoding="utf-8") as f:
                    rec = json.load(f)
            except (OSError, ValueError) as e:
                fail.add(f"{c['name']}: runner {r.name} wrote no readable result ({e})")
                continue
            if rec.get("case") != c["name"]:
                fail.add(f"{c['name']}: runner {r.name}'s file names case {rec.get('case')!r}")
            records[r.name][c["name"]] = rec
            if not rec.get("ok") and rec.get("code") in ("UNSUPPORTED", "RUNNER_ERROR",
                                                         "CLIENT_ERROR"):
                fail.add(f"{c['name']}: runner {r.name}: {rec.get('code')}: "
                         f"{rec.get('message', '').strip()}")
    for c in cases:
        name = c["name"]
        have = [(r.name, records[r.name][name]) for r in runners if name in records[r.name]]
        if len(have) < 2:
            continue
        base_name, base = have[0]
        for other_name, other in have[1:]:
            who = f"{name}: {base_name} vs {other_name}"
            if base.get("ok") != other.get("ok") or base.get("code") != other.get("code"):
                fail.add(f"{who}: {'ok' if base.get('ok') else base.get('code')} != "
                         f"{'ok' if other.get('ok') else other.get('code')} ("
                         f"{(base.get('message') or other.get('message') or '').strip()[:300]})")
                continue
            if not base.get("ok"):
                continue
            d = first_value_diff(base.get("values"), other.get("values"))
            if d:
                fail.add(f"{who}: {d}")
            bt, ot = base.get("tensors", {}), other.get("tensors", {})
            if sorted(bt) != sorted(ot):  # order: values.cache_names
                fail.add(f"{who}: tensors {sorted(bt)} != {sorted(ot)}")
            for t in bt:
                if t not in ot:
                    continue
                x, y = bt[t], ot[t]
                if x["dtype"] != y["dtype"] or x["shape"] != y["shape"]:
                    fail.add(f"{who}: tensor {t}: {x['dtype']}{x['shape']} != "
                             f"{y['dtype']}{y['shape']}")
                    continue
                if x["sha256"] != y["sha256"]:
                    try:
                        a = load_tensor(os.path.join(out_root, base_name), name, t, x)
                        b = load_tensor(os.path.join(out_root, other_name), name, t, y)
                        detail = first_tensor_diff(a, b)
                    except (OSError, ValueError) as e:
                        detail = f"cannot read the .bin files: {e}"
                    fail.add(f"{who}: tensor {t} differs: {detail}")
                else:
                    # the .bin file is what the sha256 says
                    for rn in (base_name, other_name):
                        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in t)
                        p = os.path.join(out_root, rn, name, safe + ".bin")
                        try:
                            with open(p, "rb") as f:
                                ok = hashlib.sha256(f.read()).hexdigest() == x["sha256"]
                        except OSError:
                            ok = False
                        if not ok:
                            fail.add(f"{name}: runner {rn}: {p} missing or not its sha256")
    return records


def table(runners, cases, records):
    w = max(len(c["name"]) for c in cases)
    cols = [max(len(r.name), 18) for r in runners]
    lines = ["case".ljust(w) + "  " + "  ".join(r.name.ljust(c) for r, c in zip(runners, cols))]
    for c in cases:
        cells = []
        for r, cw in zip(runners, cols):
            rec = records.get(r.name, {}).get(c["name"])
            cells.append(("-" if rec is None else "ok" if rec.get("ok") else rec.get("code", "?"))
                         .ljust(cw))
        lines.append(c["name"].ljust(w) + "  " + "  ".join(cells))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", required=True)
    ap.add_argument("--python-install", required=True)
    ap.add_argument("--coordinator-bin", required=True)
    ap.add_argument("--worker-bin", required=True)
    ap.add_argument("--lensgrid-bin", required=True)
    ap.add_argument("--cpp-runner", required=True)
    ap.add_argument("--node", default="")
    ap.add_argument("--cases", default=os.path.join(HERE, "cases.json"))
    ap.add_argument("--out", default="", help="keep the runners' results here (default: a "
                    "temporary directory, removed on success)")
    ap.add_argument("--runner-timeout", type=float, default=600)
    a = ap.parse_args()
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
    with open(a.cases, encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    names = [c["name"] for c in cases]
    assert len(set(names)) == len(names), "duplicate case names"

    fail = Failures()
    skip = {s for s in os.environ.get("LENSGRID_CONFORMANCE_SKIP", "").split(",") if s}
    runners = []
    for r in RUNNERS:
        if r.name in skip:
            print(f"conformance: runner {r.name} skipped (LENSGRID_CONFORMANCE_SKIP)")
            if os.environ.get("LENSGRID_CONFORMANCE_ALLOW_SKIP") != "1":
                fail.add(f"runner {r.name} skipped; every runner is required (set "
                         "LENSGRID_CONFORMANCE_ALLOW_SKIP=1 while developing)")
            continue
        path = r.path(a)
        if not path or not os.path.isfile(path):
            fail.add(f"runner {r.name}: {path or '(no path)'} does not exist")
            continue
        runners.append(r)

    tmp = tempfile.mkdtemp(prefix="conformance-")
    out_root = a.out or os.path.join(tmp, "out")
    if a.out and os.path.isdir(a.out):
        shutil.rmtree(a.out)
    os.makedirs(out_root, exist_ok=True)
    start = time.monotonic()
    coord, workers, model = start_services(a, tmp)
    print(f"conformance: coordinator {coord.address}, workers "
          f"{', '.join(w.address for w in workers)} ({time.monotonic() - start:.1f} s)",
          flush=True)
    try:
        rcs = run_runners(a, runners, coord, workers[0], a.cases, out_root)
        for r in runners:
            rc, secs = rcs[r.name]
            print(f"conformance: runner {r.name}: exit {rc} in {secs:.1f} s", flush=True)
            if rc != 0:
                with open(os.path.join(out_root, r.name + ".log")) as f:
                    log = f.read()
                fail.add(f"runner {r.name} exited {rc}:\n{log[-4000:]}")
        records = compare(runners, out_root, cases, fail)
        if runners:
            # Truth on every runner's results (they are equal when the comparison passed; each
            # is checked so a failure names the runner).
            for r in runners:
                Truth(a, model, os.path.join(out_root, r.name), records[r.name], cases,
                      lambda text, rn=r.name: fail.add(f"[{rn}] {text}")).run_all()
    finally:
        for w in workers:
            w.stop()
        coord.stop()
    print()
    print(table(runners, cases, records if runners else {}))
    print(f"\nconformance: {len(cases)} cases x {len(runners)} runners "
          f"({', '.join(r.name for r in runners)}) in {time.monotonic() - start:.1f} s")
    if fail.items:
        print(f"\nconformance: FAILED ({len(fail.items)} problems):")
        for item in fail.items:
            print("  - " + item.replace("\n", "\n    "))
        print(f"results kept in {out_root}")
        sys.exit(1)
    print("conformance: PASSED")
    if not a.out:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
