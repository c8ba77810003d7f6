#!/usr/bin/python3
"""Self-check of hf_gpt2.py (run by hand, not part of `make test`):
  1. the generated files parse back (own reader), with the exact HF names, shapes and dtypes;
  2. the float64 forward agrees with a second, loop-based formulation built on torch.nn.functional
     (F.layer_norm, F.gelu, F.linear on transposed Conv1D weights, explicit per-head/per-query
     softmax, F.cross_entropy);
  3. prints the scale statistics (logit std, attention peakiness, GELU input spread).
Usage: /usr/bin/python3 tests/reference/selfcheck.py [hf_gpt2.py flags]   (--out: a temp dir)
"""
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_gpt2  # noqa: E402


def loop_forward(w, cfg, tokens):
    """Second formulation: per batch row, per head, per query position."""
    w = {k: v.double() for k, v in w.items()}
    D, H, eps, L = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"], cfg["n_layer"]
    dh, S = D // H, tokens.shape[1]
    lin = lambda x, n: F.linear(x, w[n + ".weight"].T, w[n + ".bias"])
    ln = lambda x, n: F.layer_norm(x, (D,), w[n + ".weight"], w[n + ".bias"], eps)
    approx = "tanh" if cfg["activation_function"] == "gelu_new" else "none"
    out = {k: [] for k in ["logits", "pattern", "resid_post"]}
    for b in range(tokens.shape[0]):
        h = torch.stack([w["wte.weight"][int(t)] + w["wpe.weight"][s]
                         for s, t in enumerate(tokens[b])])
        pats, posts = [], []
        for i in range(L):
            p = f"h.{i}."
            qkv = lin(ln(h, p + "ln_1"), p + "attn.c_attn")
            z = torch.zeros(S, D, dtype=torch.float64)
            pat = torch.zeros(H, S, S, dtype=torch.float64)
            for hd in range(H):
                sl = slice(hd * dh, (hd + 1) * dh)
                q, k, v = qkv[:, sl], qkv[:, D + hd * dh:D + (hd + 1) * dh], qkv[:, 2 * D:][:, sl]
                for qi in range(S):
                    sc = torch.tensor([float(q[qi] @ k[ki]) / math.sqrt(dh) for ki in range(qi + 1)],
                                      dtype=torch.float64)
                    e = torch.exp(sc - sc.max())
                    pat[hd, qi, :qi + 1] = e / e.sum()
                    z[qi, sl] = pat[hd, qi, :qi + 1] @ v[:qi + 1]
            h = h + lin(z, p + "attn.c_proj")
            h = h + lin(F.gelu(lin(ln(h, p + "ln_2"), p + "mlp.c_fc"), approximate=approx),
                        p + "mlp.c_proj")
            pats.append(pat)
            posts.append(h)
        out["logits"].append(F.linear(ln(h, "ln_f"), w["wte.weight"]))
        out["pattern"].append(torch.stack(pats))
        out["resid_post"].append(torch.stack(posts))
    out = {k: torch.stack(v) for k, v in out.items()}
    V = out["logits"].shape[-1]
    out["loss"] = F.cross_entropy(out["logits"][:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
    return out


def check(argv):
    if "--out" not in argv:
        argv = argv + ["--out", tempfile.mkdtemp()]
    d = hf_gpt2.parse_args(argv).out
    cfg, w, tokens, acts = hf_gpt2.main(argv)
    model, meta = hf_gpt2.read_safetensors(os.path.join(d, "model.safetensors"))
    ref, _ = hf_gpt2.read_safetensors(os.path.join(d, "reference.safetensors"))
    assert meta == {"format": "pt"} and json.load(open(os.path.join(d, "config.json"))) == cfg
    with open(os.path.join(d, "model.safetensors"), "rb") as f:
        assert int.from_bytes(f.read(8), "little") % 8 == 0
    D, V, P, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"]
    prefix = "transformer." if "transformer.wte.weight" in model else ""
    expect = {"wte.weight": [V, D], "wpe.weight": [P, D], "ln_f.weight": [D], "ln_f.bias": [D]}
    for i in range(L):
        for n, s in [("ln_1.weight", [D]), ("ln_1.bias", [D]), ("ln_2.weight", [D]),
                     ("ln_2.bias", [D]), ("attn.c_attn.weight", [D, 3 * D]),
                     ("attn.c_attn.bias", [3 * D]), ("attn.c_proj.weight", [D, D]),
                     ("attn.c_proj.bias", [D]), ("mlp.c_fc.weight", [D, 4 * D]),
                     ("mlp.c_fc.bias", [4 * D]), ("mlp.c_proj.weight", [4 * D, D]),
                     ("mlp.c_proj.bias", [D]), ("attn.bias", [1, 1, P, P]),
                     ("attn.masked_bias", [])]:
            expect[f"h.{i}.{n}"] = s
    expect = {prefix + k: v for k, v in expect.items()}
    if "lm_head.weight" in model:
        expect["lm_head.weight"] = [V, D]
        assert torch.equal(model["lm_head.weight"], model[prefix + "wte.weight"])
    assert {k: list(v.shape) for k, v in model.items()} == expect, "model names/shapes differ"
    for k, v in w.items():
        assert torch.equal(model[k if k == "lm_head.weight" else prefix + k], v), k
    assert ref["tokens"].dtype == torch.int64 and torch.equal(ref["tokens"], tokens)
    assert ref["logits"].dtype == torch.float32 and ref["loss"].shape == ()

    alt = loop_forward(w, cfg, tokens)
    errs = {"logits": (acts["logits"] - alt["logits"]).abs().max(),
            "loss": (acts["loss"] - alt["loss"]).abs(),
            "pattern": max((acts[f"blocks.{i}.attn.hook_pattern"] - alt["pattern"][:, i]).abs().max()
                           for i in range(L)),
            "resid_post": max((acts[f"blocks.{i}.hook_resid_post"] - alt["resid_post"][:, i]).abs()
                              .max() for i in range(L)),
            "stored_f32_vs_f64": (ref["logits"].double() - acts["logits"]).abs().max()}
    for k, e in errs.items():
        print(f"  max |diff| {k:18s} {float(e):.3e}")
        assert e < (1e-5 if k == "stored_f32_vs_f64" else 1e-10), k

    pats = torch.stack([acts[f"blocks.{i}.attn.hook_pattern"] for i in range(L)])
    rows = pats[..., 2:, :]  # queries with >= 3 keys
    print(f"  logits std {float(acts['logits'].std()):.3f}; loss {float(acts['loss']):.3f} "
          f"(uniform {math.log(V):.3f})")
    print(f"  attention rows (q>=2): mean max-prob {float(rows.max(-1).values.mean()):.3f}, "
          f"frac with max>0.99 {float((rows.max(-1).values > 0.99).double().mean()):.3f}")
    for i in range(L):
        x = hf_gpt2.layer_norm(acts[f"blocks.{i}.hook_resid_pre"] + acts[f"blocks.{i}.hook_attn_out"],
                               w[f"h.{i}.ln_2.weight"].double(), w[f"h.{i}.ln_2.bias"].double(), 1e-5)
        pre = x @ w[f"h.{i}.mlp.c_fc.weight"].double() + w[f"h.{i}.mlp.c_fc.bias"].double()
        print(f"  layer {i}: |resid_pre| std {float(acts[f'blocks.{i}.hook_resid_pre'].std()):.3f}"
              f" attn_out std {float(acts[f'blocks.{i}.hook_attn_out'].std()):.3f}"
              f" mlp_out std {float(acts[f'blocks.{i}.hook_mlp_out'].std()):.3f}"
              f" gelu-in std {float(pre.std()):.2f} frac<0 {float((pre < 0).double().mean()):.2f}")
    print(f"OK {d}")


if __name__ == "__main__":
    check(sys.argv[1:])
