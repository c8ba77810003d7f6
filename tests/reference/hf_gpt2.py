#!/usr/bin/python3
"""Independent float64 reference of Hugging Face GPT-2 + random-checkpoint generator.

Writes into --out DIR:
  config.json           Hugging Face GPT2Config fields
  model.safetensors     random weights under the exact HF GPT-2 names and Conv1D layout
                        ([in, out]), prefixed `transformer.` (GPT2LMHeadModel) unless --no-prefix
                        (GPT2Model); also the attn.bias / attn.masked_bias buffers that loaders must
                        ignore, and `lm_head.weight` (= wte) only with --lm-head.
                        With --shards N (> 1), instead: model-0000K-of-0000N.safetensors and
                        model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map":
                        name -> shard}), the layout transformers' save_pretrained writes past its
                        max_shard_size: tensors in order, a new shard once one holds its share.
  reference.safetensors `tokens` (I64) and float32 activations computed in float64 from the stored
                        (possibly F16-rounded) weights: logits, per-layer hooks, ln_final, loss.

The forward pass follows the HF GPT-2 definition (modeling_gpt2.py) written from first principles.
Needs only torch + the standard library; safetensors is read/written by hand.
Example: /usr/bin/python3 tests/reference/hf_gpt2.py --out /tmp/ref --n-layer 2 --dtype F32
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "I64": torch.int64, "U8": torch.uint8, "BOOL": torch.bool}
_NAMES = {v: k for k, v in _DTYPES.items()}
assert sys.byteorder == "little", "safetensors data is little-endian; this writer assumes a LE host"


# ----------------------------------------------------------------------------- safetensors
def write_safetensors(path, tensors, metadata=None):
    """tensors: ordered dict name -> torch tensor. Little-endian, row-major, contiguous data."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        data = t.detach().contiguous().cpu().numpy().tobytes()  # host is little-endian
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)  # pad like the reference writer: data starts 8-aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for b in blobs:
            f.write(b)


def write_sharded(out, tensors, n):
    """tensors split in order into n shards of about equal bytes, and the index naming them."""
    sizes = [t.numel() * t.element_size() for t in tensors.values()]
    share = sum(sizes) / n
    shards, filled = [{}], 0
    for (name, t), size in zip(tensors.items(), sizes):
        if filled >= share * len(shards) and len(shards) < n:
            shards.append({})
        shards[-1][name] = t
        filled += size
    weight_map = {}
    for k, part in enumerate(shards):
        file = "model-%05d-of-%05d.safetensors" % (k + 1, len(shards))
        write_safetensors(os.path.join(out, file), part, {"format": "pt"})
        weight_map.update({name: file for name in part})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


def read_safetensors(path):
    """Returns (dict name -> tensor, metadata). Checks offsets are contiguous and in bounds."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    data, out, end = raw[8 + n:], {}, 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = info["data_offsets"]
        assert b == end and e <= len(data), f"{name}: bad offsets {b},{e}"
        end = e
        dt = _DTYPES[info["dtype"]]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=dt) if e > b else torch.empty(0, dtype=dt)
        assert t.numel() == math.prod(info["shape"]), name
        out[name] = t.reshape(info["shape"])
    assert end == len(data), "trailing bytes after last tensor"
    return out, meta


# ----------------------------------------------------------------------------- weights
def make_weights(cfg, seed, dtype):
    """Random GPT-2 weights (HF names, no prefix) in `dtype`. Scales are fan-in aware so that
    logits have std ~1 and attention is peaky but not one-hot at any width (see README)."""
    g = torch.Generator().manual_seed(seed)
    V, P, D, L = cfg["vocab_size"], cfg["n_positions"], cfg["n_embd"], cfg["n_layer"]
    randn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float32)
    w = {"wte.weight": randn(V, D) / math.sqrt(D), "wpe.weight": 0.02 * randn(P, D)}
    for i in range(L):
        p = f"h.{i}."
        w[p + "ln_1.weight"], w[p + "ln_1.bias"] = 1 + 0.1 * randn(D), 0.02 * randn(D)
        w[p + "attn.c_attn.weight"] = 1.6 / math.sqrt(D) * randn(D, 3 * D)
        w[p + "attn.c_attn.bias"] = 0.02 * randn(3 * D)
        w[p + "attn.c_proj.weight"] = 0.5 / math.sqrt(D) * randn(D, D)
        w[p + "attn.c_proj.bias"] = 0.02 * randn(D)
        w[p + "ln_2.weight"], w[p + "ln_2.bias"] = 1 + 0.1 * randn(D), 0.02 * randn(D)
        w[p + "mlp.c_fc.weight"] = 1.0 / math.sqrt(D) * randn(D, 4 * D)
        w[p + "mlp.c_fc.bias"] = 0.02 * randn(4 * D)
        w[p + "mlp.c_proj.weight"] = 0.5 / math.sqrt(4 * D) * randn(4 * D, D)
        w[p + "mlp.c_proj.bias"] = 0.02 * randn(D)
        # Buffers as older HF checkpoints stored them (float tril mask, scalar -1e4).
        w[p + "attn.bias"] = torch.tril(torch.ones(P, P)).view(1, 1, P, P)
        w[p + "attn.masked_bias"] = torch.tensor(-1e4)
    w["ln_f.weight"], w["ln_f.bias"] = 1 + 0.1 * randn(D), 0.02 * randn(D)
    return {k: v.to(dtype) for k, v in w.items()}


# ----------------------------------------------------------------------------- forward
def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased variance
    return (x - mu) / torch.sqrt(var + eps) * w + b


def activation(x, name):
    if name == "gelu_new":
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    if name == "gelu":
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    raise ValueError(f"unsupported activation {name}")


def forward(w, cfg, tokens):
    """HF GPT-2 forward in float64. w: unprefixed names -> tensors (any float dtype)."""
    w = {k: v.to(torch.float64) for k, v in w.items()}
    B, S = tokens.shape
    D, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    dh = D // H
    conv1d = lambda x, name: x @ w[name + ".weight"] + w[name + ".bias"]  # Conv1D: [in, out]
    heads = lambda t: t.view(B, S, H, dh).transpose(1, 2)  # [B, H, S, dh]
    causal = torch.tril(torch.ones(S, S, dtype=torch.bool))
    out = {}
    h = w["wte.weight"][tokens] + w["wpe.weight"][torch.arange(S)]
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        out[f"blocks.{i}.hook_resid_pre"] = h
        x = layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        q, k, v = conv1d(x, p + "attn.c_attn").split(D, dim=-1)
        q, k, v = heads(q), heads(k), heads(v)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
        scores = scores.masked_fill(~causal, float("-inf"))
        pattern = torch.softmax(scores, dim=-1)
        out[f"blocks.{i}.attn.hook_pattern"] = pattern
        z = (pattern @ v).transpose(1, 2).reshape(B, S, D)  # merge heads
        a = conv1d(z, p + "attn.c_proj")
        out[f"blocks.{i}.hook_attn_out"] = a
        h = h + a
        x = layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        m = conv1d(activation(conv1d(x, p + "mlp.c_fc"), cfg["activation_function"]),
                   p + "mlp.c_proj")
        out[f"blocks.{i}.hook_mlp_out"] = m
        h = h + m
        out[f"blocks.{i}.hook_resid_post"] = h
    x = layer_norm(h, w["ln_f.weight"], w["ln_f.bias"], eps)
    out["ln_final.hook_normalized"] = x
    unembed = w.get("lm_head.weight", w["wte.weight"])
    logits = x @ unembed.T
    out["logits"] = logits
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    per_token = -logp.gather(-1, tokens[:, 1:, None])[..., 0]
    out["per_token_loss"] = per_token
    out["loss"] = per_token.mean()
    return out


# ----------------------------------------------------------------------------- CLI
def make_config(a):
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "n_layer": a.n_layer, "n_head": a.n_head, "n_embd": a.n_embd,
            "n_positions": a.n_positions, "n_ctx": a.n_positions, "n_inner": None,
            "vocab_size": a.vocab, "layer_norm_epsilon": 1e-5,
            "activation_function": a.activation,
            "bos_token_id": a.vocab - 1, "eos_token_id": a.vocab - 1,
            "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1,
            "initializer_range": 0.02, "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "use_cache": True, "torch_dtype": {"F32": "float32", "F16": "float16"}[a.dtype]}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=101)
    ap.add_argument("--n-positions", type=int, default=32)
    ap.add_argument("--dtype", choices=["F32", "F16"], default="F32")
    ap.add_argument("--no-prefix", action="store_true", help="GPT2Model names (no transformer.)")
    ap.add_argument("--activation", choices=["gelu_new", "gelu"], default="gelu_new")
    ap.add_argument("--lm-head", action="store_true", help="also store lm_head.weight (= wte)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1, help="> 1: a sharded checkpoint")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=7)
    a = ap.parse_args(argv)
    if a.n_embd % a.n_head:
        ap.error("--n-embd must be divisible by --n-head")
    if not 2 <= a.seq <= a.n_positions:
        ap.error("--seq must be in [2, n_positions]")
    return a


def main(argv=None):
    a = parse_args(argv)
    cfg = make_config(a)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    w = make_weights(cfg, a.seed, _DTYPES[a.dtype])
    if a.lm_head:
        w["lm_head.weight"] = w["wte.weight"].clone()
    prefix = "" if a.no_prefix else "transformer."
    stored = {(k if k == "lm_head.weight" else prefix + k): v for k, v in w.items()}
    if a.shards > 1:
        write_sharded(a.out, stored, a.shards)
    else:
        write_safetensors(os.path.join(a.out, "model.safetensors"), stored, {"format": "pt"})

    g = torch.Generator().manual_seed(a.seed + 1)
    tokens = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g, dtype=torch.int64)
    acts = forward(w, cfg, tokens)  # reads only the parameters it needs, never the buffers
    ref = {"tokens": tokens}
    ref.update({k: v.to(torch.float32) for k, v in acts.items()})
    write_safetensors(os.path.join(a.out, "reference.safetensors"), ref, {"format": "pt"})
    return cfg, w, tokens, acts


if __name__ == "__main__":
    main()
