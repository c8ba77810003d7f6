"""ActivationCache: TransformerLens's cache of activations by hook name, in numpy (torch on
request), with its helpers (accumulated_resid, decompose_resid, stack_head_results, ...)."""
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from lensgrid.errors import InvalidInputError
from lensgrid.worker import act_name


def _torch():
    try:
        import torch  # noqa: F401
        return torch
    except ImportError:
        return None


def to_torch(array: Any) -> Any:
    torch = _torch()
    if torch is None:
        raise InvalidInputError("torch is not importable here (return_torch=True and "
                                "cache.to('torch') need it)")
    return torch.from_numpy(np.array(array, copy=True))


def _slice_of(pos_slice: Any) -> Any:
    """TransformerLens's Slice input: None (everything), an int (that index; the axis is
    dropped), a slice, a (start, stop[, step]) tuple, or a list of indices."""
    if pos_slice is None:
        return slice(None)
    if isinstance(pos_slice, (int, np.integer)):
        return int(pos_slice)
    if isinstance(pos_slice, (tuple,)) and len(pos_slice) in (2, 3):
        return slice(*pos_slice)
    return pos_slice


def _apply(array: np.ndarray, sl: Any, axis: int) -> np.ndarray:
    index = [slice(None)] * array.ndim
    index[axis] = sl
    out = array[tuple(index)]
    return out


class ActivationCache:
    """Activations by full hook name. cache["pattern", 0, "attn"], cache["resid_post", -1]
    (negative layers count from the end), cache["blocks.0.hook_resid_pre"]; numpy arrays, or
    torch tensors when made with return_torch=True."""

    def __init__(self, cache_dict: Dict[str, np.ndarray], model: Any, has_batch_dim: bool = True,
                 return_torch: bool = False, tokens: Optional[np.ndarray] = None):
        self.cache_dict = dict(cache_dict)
        self.model = model
        self.has_batch_dim = has_batch_dim
        self.return_torch = return_torch
        self.tokens = tokens
        self.has_embed = "hook_embed" in self.cache_dict
        self.has_pos_embed = "hook_pos_embed" in self.cache_dict

    # ---- access
    def _key(self, key: Any) -> str:
        if isinstance(key, str):
            return key if key in self.cache_dict else act_name(key)
        if isinstance(key, tuple):
            if len(key) > 1 and key[1] is not None and int(key[1]) < 0:
                key = (key[0], self.model.cfg.n_layers + int(key[1]), *key[2:])
            return act_name(*key)
        raise InvalidInputError(f"cache key must be a name or a (name, layer[, type]) tuple, got {key!r}")

    def _get(self, key: Any) -> np.ndarray:
        name = self._key(key)
        if name not in self.cache_dict:
            near = [k for k in self.cache_dict if name.split(".")[-1] in k][:5]
            raise KeyError(f"{name!r} is not in the cache" + (f" (cached: {near} ...)" if near else
                           f"; it holds {len(self.cache_dict)} activations"))
        return self.cache_dict[name]

    def _out(self, array: np.ndarray) -> Any:
        return to_torch(array) if self.return_torch else array

    def __getitem__(self, key: Any) -> Any:
        return self._out(self._get(key))

    def __contains__(self, key: Any) -> bool:
        try:
            return self._key(key) in self.cache_dict
        except InvalidInputError:
            return False

    def __len__(self) -> int:
        return len(self.cache_dict)

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def keys(self):
        return self.cache_dict.keys()

    def values(self):
        return [self._out(v) for v in self.cache_dict.values()]

    def items(self):
        return [(k, self._out(v)) for k, v in self.cache_dict.items()]

    def __repr__(self) -> str:
        return f"ActivationCache with keys {list(self.cache_dict)}"

    def to(self, device_or_kind: str) -> "ActivationCache":
        """to("torch") -> a cache returning torch tensors (CPU); to("numpy") or to("cpu") ->
        one returning numpy arrays (TransformerLens's to(device) moves tensors; here the
        activations are already local)."""
        kind = str(device_or_kind)
        if kind == "torch":
            if _torch() is None:
                raise InvalidInputError("cache.to('torch'): torch is not importable here")
            torch_out = True
        elif kind in ("numpy", "cpu"):
            torch_out = False if kind == "numpy" else self.return_torch
        else:
            raise InvalidInputError(f"cache.to({kind!r}): the cache lives in this process; "
                                    "use 'torch', 'numpy' or 'cpu'")
        return ActivationCache(self.cache_dict, self.model, self.has_batch_dim, torch_out, self.tokens)

    def remove_batch_dim(self) -> "ActivationCache":
        """A cache without the batch axis (needs batch size 1)."""
        if not self.has_batch_dim:
            return self
        for name, v in self.cache_dict.items():
            if v.shape[0] != 1:
                raise InvalidInputError(f"remove_batch_dim needs batch size 1; {name} has "
                                        f"{v.shape[0]}")
        return ActivationCache({k: v[0] for k, v in self.cache_dict.items()}, self.model, False,
                               self.return_torch, self.tokens)

    # ---- helpers, as TransformerLens defines them
    def _n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    def _layer(self, layer: Optional[int]) -> int:
        n = self._n_layers()
        if layer is None or layer == -1:
            return n
        if not 0 <= layer <= n:
            raise InvalidInputError(f"layer must be in [0, {n}] (or -1/None for the unembed), got {layer}")
        return layer

    def accumulated_resid(self, layer: Optional[int] = None, incl_mid: bool = False,
                          apply_ln: bool = False, pos_slice: Any = None, mlp_input: bool = False,
                          return_labels: bool = False):
        """The residual stream before each layer up to `layer` (n_layers / -1 / None: up to the
        final resid_post): [component, batch, pos, d_model]."""
        layer = self._layer(layer)
        n = self._n_layers()
        comps, labels = [], []
        for l in range(layer + 1):
            if l == n:
                comps.append(self._get(("resid_post", n - 1)))
                labels.append("final_post")
                continue
            comps.append(self._get(("resid_pre", l)))
            labels.append(f"{l}_pre")
            if (incl_mid and l < layer) or (mlp_input and l == layer):
                comps.append(self._get(("resid_mid", l)))
                labels.append(f"{l}_mid")
        sl = _slice_of(pos_slice)
        stack = np.stack([_apply(c, sl, -2) for c in comps], axis=0)
        if apply_ln:
            stack = self._apply_ln(stack, layer, mlp_input, pos_slice, None, self.has_batch_dim,
                                   recompute_ln=layer == n)
        return (self._out(stack), labels) if return_labels else self._out(stack)

    def decompose_resid(self, layer: Optional[int] = None, mlp_input: bool = False,
                        mode: str = "all", apply_ln: bool = False, pos_slice: Any = None,
                        incl_embeds: bool = True, return_labels: bool = False):
        """The residual stream into layer `layer` as the sum of its parts: embed, pos_embed,
        each layer's attn_out and mlp_out: [component, batch, pos, d_model]."""
        if mode not in ("all", "mlp", "attn"):
            raise InvalidInputError(f"mode must be 'all', 'mlp' or 'attn', got {mode!r}")
        layer = self._layer(layer)
        incl_attn = mode != "mlp"
        incl_mlp = mode != "attn" and not self.model.cfg.attn_only
        comps, labels = [], []
        if incl_embeds:
            if self.has_embed:
                comps.append(self._get("hook_embed"))
                labels.append("embed")
            if self.has_pos_embed:
                comps.append(self._get("hook_pos_embed"))
                labels.append("pos_embed")
        for l in range(layer):
            if incl_attn:
                comps.append(self._get(("attn_out", l)))
                labels.append(f"{l}_attn_out")
            if incl_mlp:
                comps.append(self._get(("mlp_out", l)))
                labels.append(f"{l}_mlp_out")
        if mlp_input and incl_attn:
            comps.append(self._get(("attn_out", layer)))
            labels.append(f"{layer}_attn_out")
        sl = _slice_of(pos_slice)
        stack = np.stack([_apply(c, sl, -2) for c in comps], axis=0)
        if apply_ln:
            stack = self._apply_ln(stack, layer, mlp_input, pos_slice, None, self.has_batch_dim)
        return (self._out(stack), labels) if return_labels else self._out(stack)

    def compute_head_results(self) -> None:
        """Fills blocks.L.attn.hook_result [batch, pos, head, d_model] for every layer: from the
        worker (a hook program reading hook_z and W_O there, or the worker's own hook_result)."""
        missing = [l for l in range(self._n_layers())
                   if f"blocks.{l}.attn.hook_result" not in self.cache_dict]
        if not missing:
            return
        if self.tokens is None:
            raise InvalidInputError("this cache has no tokens to rerun for the head results")
        results = self.model._head_results(self.tokens, missing)
        for l, r in results.items():
            self.cache_dict[f"blocks.{l}.attn.hook_result"] = r[0] if not self.has_batch_dim else r

    def stack_head_results(self, layer: int = -1, return_labels: bool = False,
                           incl_remainder: bool = False, pos_slice: Any = None,
                           apply_ln: bool = False):
        """Each head's output (hook_result) of the layers before `layer`, stacked:
        [layer*head (+1 remainder), batch, pos, d_model]. Asks the worker for hook_result when
        the cache lacks it."""
        layer = self._layer(layer)
        if layer > 0:
            self.compute_head_results()
        sl = _slice_of(pos_slice)
        labels: List[str] = []
        comps = []
        for l in range(layer):
            r = _apply(self._get(("result", l, "attn")), sl, -3)
            comps.append(np.moveaxis(r, -2, 0))  # [head, ..., d_model]
            labels.extend(f"L{l}H{h}" for h in range(self.model.cfg.n_heads))
        if comps:
            stack = np.concatenate(comps, axis=0)
            if incl_remainder:
                rem = _apply(self._get(("resid_post", layer - 1)), sl, -2) - stack.sum(0)
                stack = np.concatenate([stack, rem[None]], axis=0)
                labels.append("remainder")
        elif incl_remainder:
            stack = _apply(self._get(("resid_post", layer - 1)), sl, -2)[None]
            labels.append("remainder")
        else:
            shape = _apply(self._get("hook_embed"), sl, -2).shape
            stack = np.zeros((0, *shape), np.float32)
        if apply_ln:
            stack = self._apply_ln(stack, layer, False, pos_slice, None, self.has_batch_dim)
        return (self._out(stack), labels) if return_labels else self._out(stack)

    def stack_activation(self, activation_name: str, layer: int = -1,
                         sublayer_type: Optional[str] = None):
        """The activation of every layer before `layer`, stacked on a new first axis."""
        layer = self._layer(layer)
        return self._out(np.stack([self._get((activation_name, l, sublayer_type))
                                   for l in range(layer)], axis=0))

    def _scale(self, layer: int, mlp_input: bool, pos_slice: Any, batch_slice: Any) -> np.ndarray:
        n = self._n_layers()
        if layer == n:
            if mlp_input:
                raise InvalidInputError("mlp_input needs a layer below n_layers")
            scale = self._get("ln_final.hook_scale")
        else:
            scale = self._get(("scale", layer, "ln2" if mlp_input else "ln1"))
        scale = _apply(scale, _slice_of(pos_slice), -2)
        if self.has_batch_dim and batch_slice is not None:
            scale = _apply(scale, _slice_of(batch_slice), 0)
        return scale

    def _apply_ln(self, stack: np.ndarray, layer: Optional[int], mlp_input: bool, pos_slice: Any,
                  batch_slice: Any, has_batch_dim: bool, recompute_ln: bool = False) -> np.ndarray:
        layer = self._layer(layer)
        stack = np.asarray(stack)
        if has_batch_dim and batch_slice is not None:
            stack = _apply(stack, _slice_of(batch_slice), 1)
        if recompute_ln and layer == self._n_layers():
            return self.model._ln_final(stack)
        stack = stack - stack.mean(-1, keepdims=True)
        return stack / self._scale(layer, mlp_input, pos_slice, batch_slice)

    def apply_ln_to_stack(self, residual_stack: Any, layer: Optional[int] = None,
                          mlp_input: bool = False, pos_slice: Any = None, batch_slice: Any = None,
                          has_batch_dim: bool = True, recompute_ln: bool = False):
        """Centres each component and divides by the cached LayerNorm scale of `layer`'s input
        (ln1, ln2 with mlp_input, ln_final for n_layers / -1 / None), as the model saw it;
        with recompute_ln at the unembed, each component through ln_final on its own."""
        stack = np.asarray(residual_stack.detach().cpu().numpy() if hasattr(residual_stack, "detach")
                           else residual_stack)
        return self._out(self._apply_ln(stack, layer, mlp_input, pos_slice, batch_slice,
                                        has_batch_dim, recompute_ln))

    def logit_attrs(self, residual_stack: Any, tokens: Any, incorrect_tokens: Any = None,
                    pos_slice: Any = None, batch_slice: Any = None, has_batch_dim: bool = True):
        """Each component's direct contribution to the logit of `tokens` (minus that of
        `incorrect_tokens`): apply_ln_to_stack(stack) . W_U[:, token]."""
        stack = np.asarray(residual_stack.detach().cpu().numpy() if hasattr(residual_stack, "detach")
                           else residual_stack)
        directions = self.model.tokens_to_residual_directions(tokens)
        if incorrect_tokens is not None:
            if np.shape(self.model._token_ids(tokens)) != np.shape(self.model._token_ids(incorrect_tokens)):
                raise InvalidInputError("tokens and incorrect_tokens must have the same shape")
            directions = directions - self.model.tokens_to_residual_directions(incorrect_tokens)
        scaled = self._apply_ln(stack, -1, False, pos_slice, batch_slice, has_batch_dim)
        return self._out((scaled * directions).sum(-1))
