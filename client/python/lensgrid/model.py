"""lensgrid.connect: a remote HookedTransformer with TransformerLens's surface."""
import dataclasses
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import grpc
import numpy as np

from lensgrid import trace as _trace
from lensgrid.cache import ActivationCache, to_torch
from lensgrid.errors import ApiVersionError, Error, InvalidInputError, TraceError, WorkerError
from lensgrid.factored import FactoredMatrix, composition_scores
from lensgrid.v1 import program_pb2, tensor_pb2
from lensgrid.worker import Worker, act_name, check_api_version

_DTYPE_NAMES = {tensor_pb2.F32: "float32", tensor_pb2.F16: "float16", tensor_pb2.BF16: "bfloat16"}


@dataclasses.dataclass
class Config:
    """The worker's model, as TransformerLens's HookedTransformerConfig names it."""
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    n_ctx: int
    d_vocab: int
    act_fn: str
    eps: float
    attn_only: bool
    bos_token_id: int
    eos_token_id: int
    model_name: str
    device: str
    dtype: str
    processed: bool
    normalization_type: str  # "LNPre" when the weights were processed (fold_ln), else "LN"
    d_vocab_out: int = 0
    positional_embedding_type: str = "standard"
    original_architecture: str = "GPT2LMHeadModel"
    default_prepend_bos: bool = True
    tokenizer_prepends_bos: bool = False
    final_rms: bool = False
    use_attn_result: bool = False
    weights_sha256: str = ""
    api_version: str = ""


class HookPointInfo:
    """What model.hook_dict maps a name to: .name, .shape (-1 for axes that follow the input)
    and .axes."""

    def __init__(self, name: str, shape: Sequence[int], axes: Sequence[str]):
        self.name = name
        self.shape = tuple(shape)
        self.axes = tuple(axes)

    def layer(self) -> int:
        return int(self.name.split(".")[1])

    def __repr__(self) -> str:
        return f"HookPoint({self.name}, shape={self.shape})"


def _model_matches(model: str, info: Any) -> bool:
    d = info.model_dir.rstrip("/")
    base = os.path.basename(d)
    hub = model.split("@")[0]
    names = {d, base, base + "+no-processing"}
    return (model in names or hub in names or f"models--{hub.replace('/', '--')}" in d
            or (("/" not in hub) and f"--{hub}/" in d + "/"))


def connect(address: str, model: Optional[str] = None, token: Optional[str] = None,
            tls_ca: Optional[str] = None, tls_cert: Optional[str] = None,
            tls_key: Optional[str] = None, timeout: Optional[float] = None,
            wait: float = 60.0, return_torch: bool = False) -> "RemoteModel":
    """A remote HookedTransformer served by the worker at `address` ("host:port").

    model: the model id you expect (its dir name or Hub name, e.g. "gpt2"); a lensgrid.Error
    when the worker serves another. token / tls_*: as the CLI's --token / --tls-* (and the same
    LENSGRID_* environment variables). wait: seconds to wait for a worker that is still loading.
    return_torch: activations and weights as torch tensors instead of numpy arrays."""
    worker = Worker(address, timeout=timeout, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                    token=token)
    try:
        info = worker.wait_ready(timeout=wait)
        check_api_version(info.api_version, (1, 0), "lensgrid.connect", address)
        if model is not None and not _model_matches(model, info):
            raise Error(f"the worker at {address} serves {info.model_dir!r}, not {model!r}")
    except BaseException:
        worker.close()
        raise
    return RemoteModel(worker, return_torch=return_torch)


class RemoteModel:
    """TransformerLens's HookedTransformer surface over a lensgrid worker: cfg, tokenizer
    helpers, forward, run_with_cache, run_with_hooks (traced hook functions), generate, weights
    and their factored circuits. Arrays are numpy unless return_torch."""

    def __init__(self, worker: Worker, return_torch: bool = False):
        self.worker = worker
        self.return_torch = return_torch
        info = worker.model_info()
        c = info.config
        self._info = info
        self.cfg = Config(
            n_layers=int(c.n_layers), n_heads=int(c.n_heads), d_model=int(c.d_model),
            d_head=int(c.d_head), d_mlp=int(c.d_mlp), n_ctx=int(c.n_ctx), d_vocab=int(c.d_vocab),
            act_fn=c.act_fn, eps=float(c.eps), attn_only=bool(c.attn_only),
            bos_token_id=int(c.bos_token_id), eos_token_id=int(c.eos_token_id),
            model_name=os.path.basename(info.model_dir.rstrip("/")), device=info.device,
            dtype=_DTYPE_NAMES.get(info.dtype, "float32"), processed=bool(info.processed),
            normalization_type="LNPre" if info.processed else "LN", d_vocab_out=int(c.d_vocab),
            use_attn_result=any(h.name.endswith("attn.hook_result") for h in info.hooks),
            weights_sha256=info.weights_sha256, api_version=info.api_version)
        self.hook_dict: Dict[str, HookPointInfo] = {
            h.name: HookPointInfo(h.name, h.shape, h.axes) for h in info.hooks}
        self._weights: Optional[Dict[str, np.ndarray]] = None

    def close(self) -> None:
        self.worker.close()

    def __enter__(self) -> "RemoteModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RemoteModel({self.cfg.model_name!r} at {self.worker.address}: "
                f"{self.cfg.n_layers} layers, {self.cfg.n_heads} heads, d_model {self.cfg.d_model})")

    def _out(self, array: Any) -> Any:
        if array is None:
            return None
        return to_torch(array) if self.return_torch else array

    def hook_points(self) -> List[str]:
        """Every hook point's name, in forward order."""
        return list(self.hook_dict)

    def _resolve(self, name: str) -> str:
        full = act_name(name) if name not in self.hook_dict else name
        if full not in self.hook_dict:
            close = [h for h in self.hook_dict if full.split(".")[-1] in h][:6]
            raise InvalidInputError(f"unknown hook point {name!r}" +
                                    (f"; did you mean one of {close}?" if close else ""))
        return full

    # ---- tokens
    def _texts(self, input: Union[str, Sequence[str]]) -> List[str]:
        return [input] if isinstance(input, str) else list(input)

    def to_tokens(self, input: Union[str, Sequence[str]], prepend_bos: bool = True,
                  padding_side: str = "right", truncate: bool = True) -> Any:
        """Token ids [batch, pos] (int64): BOS first unless prepend_bos=False, shorter texts
        padded with the EOS id on padding_side, cut at n_ctx when truncate."""
        ids = self.worker.tokenize(self._texts(input), prepend_bos=prepend_bos)
        width = max((len(t) for t in ids), default=0)
        out = np.full((len(ids), width), self.cfg.eos_token_id, np.int64)
        for i, t in enumerate(ids):
            if padding_side == "left":
                out[i, width - len(t):] = t
            else:
                out[i, :len(t)] = t
        if truncate:
            out = out[:, :self.cfg.n_ctx]
        return self._out(out)

    def to_str_tokens(self, input: Any, prepend_bos: bool = True) -> Any:
        """Each token as its own string: a list for a text or a 1-D / [1, pos] array, a list of
        lists for a list of texts or a [batch, pos] array."""
        if isinstance(input, str):
            return self.worker.to_str_tokens(input, prepend_bos=prepend_bos)
        if isinstance(input, (list, tuple)) and input and all(isinstance(t, str) for t in input):
            return self.worker.to_str_tokens(list(input), prepend_bos=prepend_bos)
        ids = self._ids(input)
        if ids.ndim == 0:
            ids = ids[None]
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim == 1:
            return list(self.worker._call(self.worker._stub.Detokenize, _detok(ids), None).str_tokens)
        return [list(self.worker._call(self.worker._stub.Detokenize, _detok(r), None).str_tokens)
                for r in ids]

    def to_string(self, tokens: Any) -> Union[str, List[str]]:
        """Token ids back to text: a string for 0-d / 1-D ids, a list of strings for 2-D."""
        ids = self._ids(tokens)
        if ids.ndim <= 1:
            return self.worker.detokenize(np.atleast_1d(ids))
        return [self.worker.detokenize(r) for r in ids]

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (no BOS), else a lensgrid.Error."""
        ids = self.worker.tokenize(string, prepend_bos=False)
        if len(ids) != 1:
            raise InvalidInputError(f"{string!r} is {len(ids)} tokens, not one: "
                                    f"{self.worker.to_str_tokens(string, prepend_bos=False)}")
        return int(ids[0])

    def to_single_str_token(self, token: int) -> str:
        return self.to_str_tokens(np.array([int(token)]))[0]

    def get_token_position(self, single_token: Union[str, int], input: Any, mode: str = "first",
                           prepend_bos: bool = True) -> int:
        """The position of a token in a text or a 1-D / [1, pos] id array ("first" or "last")."""
        if mode not in ("first", "last"):
            raise InvalidInputError(f"mode must be 'first' or 'last', got {mode!r}")
        tokens = (np.asarray(self.worker.tokenize(input, prepend_bos=prepend_bos))
                  if isinstance(input, str) else self._ids(input))
        if tokens.ndim == 2:
            if tokens.shape[0] != 1:
                raise InvalidInputError(f"get_token_position needs one prompt, got batch {tokens.shape[0]}")
            tokens = tokens[0]
        token = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        where = np.nonzero(tokens == token)[0]
        if not len(where):
            raise InvalidInputError(f"token {single_token!r} ({token}) is not in the input")
        return int(where[0] if mode == "first" else where[-1])

    def _ids(self, tokens: Any) -> np.ndarray:
        if hasattr(tokens, "detach"):
            tokens = tokens.detach().cpu().numpy()
        arr = np.asarray(tokens)
        if arr.dtype.kind not in "iu":
            raise InvalidInputError(f"token ids must be integers, got {arr.dtype}")
        return arr.astype(np.int64)

    def _token_ids(self, tokens: Any) -> Any:
        if isinstance(tokens, str):
            return self.to_single_token(tokens)
        if isinstance(tokens, (int, np.integer)):
            return int(tokens)
        if isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str):
            return np.array([self.to_single_token(t) for t in tokens])
        return self._ids(tokens)

    def _input(self, input: Any) -> Any:
        if isinstance(input, str) or (isinstance(input, (list, tuple)) and input
                                      and all(isinstance(t, str) for t in input)):
            return input
        ids = self._ids(input)
        return ids[None] if ids.ndim == 1 else ids

    # ---- runs
    def _unpack(self, result: Any, return_type: Optional[str]) -> Any:
        loss = result.loss
        if loss is not None and loss.ndim == 0:
            loss = loss[()]
        if return_type == "logits":
            return self._out(result.logits)
        if return_type == "loss":
            return self._out(np.asarray(loss)) if self.return_torch else loss
        if return_type == "both":
            return self._out(result.logits), (self._out(np.asarray(loss)) if self.return_torch else loss)
        return None

    def __call__(self, input: Any, return_type: Optional[str] = "logits",
                 loss_per_token: bool = False, prepend_bos: bool = True,
                 padding_side: str = "right", stop_at_layer: Optional[int] = None,
                 attention_mask: Any = None) -> Any:
        """The forward pass: logits [batch, pos, d_vocab] ("logits"), the loss ("loss"), both
        as a tuple ("both") or None."""
        return self.forward(input, return_type, loss_per_token, prepend_bos, padding_side,
                            stop_at_layer, attention_mask)

    def forward(self, input: Any, return_type: Optional[str] = "logits",
                loss_per_token: bool = False, prepend_bos: bool = True,
                padding_side: str = "right", stop_at_layer: Optional[int] = None,
                attention_mask: Any = None) -> Any:
        result = self.worker.run_with_interventions(
            self._input(input), return_type=return_type, per_token_loss=loss_per_token,
            prepend_bos=prepend_bos, padding_side=padding_side, stop_at_layer=stop_at_layer,
            attention_mask=attention_mask)
        return self._unpack(result, return_type)

    def _names(self, names_filter: Any) -> Optional[List[str]]:
        if names_filter is None:
            return None
        if isinstance(names_filter, str):
            return [self._resolve(names_filter)]
        if callable(names_filter):
            names = [h for h in self.hook_dict if names_filter(h)]
            if not names:
                raise InvalidInputError("names_filter matches no hook point")
            return names
        return [self._resolve(n) for n in names_filter]

    def run_with_cache(self, input: Any, names_filter: Any = None,
                       stop_at_layer: Optional[int] = None, remove_batch_dim: bool = False,
                       return_type: Optional[str] = "logits", loss_per_token: bool = False,
                       prepend_bos: bool = True, padding_side: str = "right",
                       pos_slice: Optional[slice] = None, attention_mask: Any = None,
                       ) -> Tuple[Any, ActivationCache]:
        """(output, cache), as TransformerLens: `logits, cache = model.run_with_cache(...)`.
        names_filter: a name, a list of names, or a function of a name (None: every hook)."""
        names = self._names(names_filter)
        result = self.worker.run_with_cache(
            self._input(input), names=names, stop_at_layer=stop_at_layer,
            remove_batch_dim=remove_batch_dim, return_type=return_type,
            per_token_loss=loss_per_token, prepend_bos=prepend_bos, padding_side=padding_side,
            positions=pos_slice, attention_mask=attention_mask)
        cache = ActivationCache(dict(result), self, has_batch_dim=not remove_batch_dim,
                                return_torch=self.return_torch, tokens=result.tokens)
        return self._unpack(result, return_type), cache

    def _shapes(self, input: Any, prepend_bos: bool) -> Tuple[int, int]:
        x = self._input(input)
        if isinstance(x, str) or isinstance(x, (list, tuple)):
            ids = self.worker.tokenize(self._texts(x), prepend_bos=prepend_bos)
            return len(ids), max(len(t) for t in ids)
        return int(x.shape[0]), int(x.shape[1])

    def hook_shape(self, name: str, batch: int, pos: int) -> Tuple[int, ...]:
        h = self.hook_dict[name]
        sizes = {"batch": batch, "pos": pos, "query_pos": pos, "key_pos": pos}
        return tuple(int(s) if s >= 0 else sizes.get(a, -1) for s, a in zip(h.shape, h.axes))

    def trace(self, fwd_hooks: Sequence[Tuple[Any, Callable]], input: Any = None,
              batch: Optional[int] = None, pos: Optional[int] = None,
              prepend_bos: bool = True) -> List[program_pb2.HookProgram]:
        """The hook programs fwd_hooks trace into (run_with_hooks sends them)."""
        return self._trace(fwd_hooks, input, batch, pos, prepend_bos)[0]

    def _trace(self, fwd_hooks: Sequence[Tuple[Any, Callable]], input: Any = None,
               batch: Optional[int] = None, pos: Optional[int] = None, prepend_bos: bool = True
               ) -> Tuple[List[program_pb2.HookProgram], List[Tuple[Any, Any, str]]]:
        if input is not None:
            batch, pos = self._shapes(input, prepend_bos)
        programs, sinks = [], []
        saved_by: Dict[str, str] = {}
        for name, fn in fwd_hooks:
            if callable(name):
                names = [h for h in self.hook_dict if name(h)]
            else:
                names = [self._resolve(name)]
            for n in names:
                shape = self.hook_shape(n, batch, pos) if batch is not None else None
                program, program_sinks = _trace.trace_hook_with_sinks(n, fn, shape)
                for s in program.saves:
                    if s.name in saved_by:
                        raise TraceError(f"the saved value {s.name!r} is saved by the hook "
                                         f"functions on both {saved_by[s.name]} and {n}; names "
                                         "are unique within a run (e.g. key it by hook.name)")
                    saved_by[s.name] = n
                programs.append(program)
                sinks.extend(program_sinks)
        return programs, sinks

    def run_with_hooks(self, input: Any, fwd_hooks: Sequence[Tuple[Any, Callable]] = (),
                       bwd_hooks: Sequence[Any] = (), return_type: Optional[str] = "logits",
                       loss_per_token: bool = False, prepend_bos: bool = True,
                       padding_side: str = "right", stop_at_layer: Optional[int] = None,
                       reset_hooks_end: bool = True, clear_contexts: bool = False,
                       return_saved: bool = False) -> Any:
        """The forward pass with hook functions: fwd_hooks=[(name or name filter, fn)] where
        fn(act, hook) is traced into a hook program (lensgrid.trace) and run on the worker.

        Observe-only hooks: values the functions pass to lensgrid.save(name, value) or assign
        into a lensgrid.Store come back from the worker; the Stores are filled after the run,
        and return_saved=True returns (output, {name: array}) instead of the output alone."""
        if bwd_hooks:
            raise InvalidInputError("bwd_hooks are not supported; ask for gradients with "
                                    "model.worker.run_with_interventions(gradients=...)")
        self.worker.require_api_version(1, "run_with_hooks (hook programs)")
        programs, sinks = self._trace(fwd_hooks, input, prepend_bos=prepend_bos)
        result = self.worker.run_with_interventions(
            self._input(input), programs=programs, return_type=return_type,
            per_token_loss=loss_per_token, prepend_bos=prepend_bos, padding_side=padding_side,
            stop_at_layer=stop_at_layer)
        saved = {}
        for p in programs:
            for s in p.saves:
                key = f"saved:{s.name}"
                if key not in result:
                    raise Error(f"run_with_hooks: the worker sent no value for the saved "
                                f"{s.name!r} (hook {p.hook}; a stop_at_layer before it?)")
                saved[s.name] = self._out(dict.__getitem__(result, key))
        for store, key, name in sinks:
            dict.__setitem__(store, key, saved[name])
        out = self._unpack(result, return_type)
        return (out, saved) if return_saved else out

    def generate(self, input: Any = "", max_new_tokens: int = 10, stop_at_eos: bool = True,
                 do_sample: bool = True, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, temperature: float = 1.0,
                 seed: Optional[int] = None, prepend_bos: bool = True,
                 return_type: str = "input", verbose: bool = False) -> Any:
        """TransformerLens's generate, sampled on the worker (greedy when do_sample=False or
        temperature=0; the same seed gives the same tokens). return_type "input": a string for
        a string input, else ids; "str": strings; "tokens": ids [batch, pos + new]."""
        temp = 0.0 if not do_sample else float(temperature)
        stream = self.worker.generate(self._input(input), max_new_tokens, temperature=temp,
                                      top_k=top_k or 0, top_p=top_p or 0.0, seed=seed,
                                      stop_at_eos=stop_at_eos, prepend_bos=prepend_bos)
        prompt = None
        steps = []
        for item in stream:
            if isinstance(item, np.ndarray):
                prompt = item
                continue
            steps.append(list(item.tokens))
            if verbose:
                print(" ".join(item.texts), flush=True)
        if prompt is None:
            raise Error("Generate: the worker sent no prompt tokens")
        new = np.array(steps, np.int64).T.reshape(prompt.shape[0], len(steps))
        tokens = np.concatenate([prompt, new], axis=1)
        if return_type == "tokens" or (return_type == "input" and not isinstance(input, str)):
            return self._out(tokens)
        texts = [self.to_string(row) for row in tokens]
        return texts[0] if isinstance(input, str) else texts

    # ---- weights
    def _weight(self, name: str) -> np.ndarray:
        if self._weights is None:
            self._weights = self.worker.get_weights()
        if name not in self._weights:
            if name in ("W_in", "W_out", "b_in", "b_out") and self.cfg.attn_only:
                raise InvalidInputError(f"{name}: the model is attention-only (no MLPs)")
            raise InvalidInputError(f"the worker sent no weight {name!r} (it sent "
                                    f"{sorted(self._weights)[:12]} ...)")
        return self._weights[name]

    def weights(self) -> Dict[str, Any]:
        """Every weight by TransformerLens name (fetched once)."""
        self._weight("W_E")
        assert self._weights is not None
        return {k: self._out(v) for k, v in self._weights.items()}

    def _w(name: str):  # type: ignore[misc]  # noqa: N805 (a property factory)
        return property(lambda self: self._out(self._weight(name)),
                        doc=f"{name} in TransformerLens's shape (from the GetWeights RPC, cached)")

    W_E = _w("W_E")
    W_pos = _w("W_pos")
    W_U = _w("W_U")
    b_U = _w("b_U")
    W_Q = _w("W_Q")
    W_K = _w("W_K")
    W_V = _w("W_V")
    W_O = _w("W_O")
    b_Q = _w("b_Q")
    b_K = _w("b_K")
    b_V = _w("b_V")
    b_O = _w("b_O")
    W_in = _w("W_in")
    W_out = _w("W_out")
    b_in = _w("b_in")
    b_out = _w("b_out")
    del _w

    @property
    def OV(self) -> FactoredMatrix:
        """W_V @ W_O per head: [n_layers, n_heads, d_model, d_model], factored."""
        return FactoredMatrix(self._weight("W_V"), self._weight("W_O"))

    @property
    def QK(self) -> FactoredMatrix:
        """W_Q @ W_K^T per head: [n_layers, n_heads, d_model, d_model], factored."""
        return FactoredMatrix(self._weight("W_Q"), np.swapaxes(self._weight("W_K"), -1, -2))

    def all_composition_scores(self, mode: str) -> np.ndarray:
        """TransformerLens's composition scores [n_layers, n_heads, n_layers, n_heads] of every
        earlier head's OV into every later head's Q ("Q"), K ("K") or V ("V"); zero unless the
        left head's layer is below the right head's."""
        left = self.OV
        if mode == "Q":
            right = self.QK
        elif mode == "K":
            right = self.QK.T
        elif mode == "V":
            right = self.OV
        else:
            raise InvalidInputError(f"mode must be one of 'Q', 'K', 'V', not {mode!r}")
        scores = composition_scores(left, right, broadcast_dims=True)
        n = self.cfg.n_layers
        mask = np.arange(n)[:, None, None, None] < np.arange(n)[None, None, :, None]
        return np.where(mask, scores, np.zeros_like(scores))

    def all_head_labels(self) -> List[str]:
        return [f"L{l}H{h}" for l in range(self.cfg.n_layers) for h in range(self.cfg.n_heads)]

    def tokens_to_residual_directions(self, tokens: Any) -> np.ndarray:
        """W_U's column of each token: [d_model] for one token, [..., d_model] for an array."""
        ids = self._token_ids(tokens)
        W_U = self._weight("W_U")
        if isinstance(ids, int):
            return W_U[:, ids]
        return np.moveaxis(W_U[:, np.asarray(ids)], 0, -1)

    def _ln_final(self, stack: np.ndarray) -> np.ndarray:
        x = stack - stack.mean(-1, keepdims=True)
        x = x / np.sqrt((x * x).mean(-1, keepdims=True) + self.cfg.eps)
        if self.cfg.normalization_type == "LN":
            x = x * self._weight("ln_final.w") + self._weight("ln_final.b")
        return x.astype(stack.dtype)

    def _head_results(self, tokens: np.ndarray, layers: Iterable[int]) -> Dict[int, np.ndarray]:
        """blocks.L.attn.hook_result [batch, pos, head, d_model] for the given layers: the
        worker's hook_result when it has that hook, else a hook program at hook_z saving
        einsum(z, W_O) (TransformerLens's compute_head_results)."""
        layers = list(layers)
        tokens = np.asarray(tokens)
        if self.cfg.use_attn_result:
            names = [f"blocks.{l}.attn.hook_result" for l in layers]
            r = self.worker.run_with_cache(tokens, names=names, return_type=None)
            return {l: r[f"blocks.{l}.attn.hook_result"] for l in layers}
        self.worker.require_api_version(1, "stack_head_results (hook programs)")
        programs = []
        for l in layers:
            p = program_pb2.HookProgram(hook=f"blocks.{l}.attn.hook_z")
            p.nodes.add(id="z").activation.SetInParent()
            p.nodes.add(id="w", weight=f"blocks.{l}.attn.W_O")
            e = p.nodes.add(id="r").einsum
            e.equation = "bphd,hdm->bphm"
            e.inputs.extend(["z", "w"])
            p.saves.add(name=f"result{l}", node="r")
            programs.append(p)
        r = self.worker.run_with_interventions(tokens, programs=programs, return_type=None,
                                               prepend_bos=False)
        return {l: r[f"saved:result{l}"] for l in layers}


def _detok(ids: np.ndarray) -> Any:
    from lensgrid.v1 import worker_pb2
    return worker_pb2.DetokenizeRequest(ids=[int(i) for i in np.asarray(ids).reshape(-1)])
