#!/usr/bin/python3
"""Writes models/induction-compiled/: a 2-layer attention-only GPT-2 whose induction circuit is
known by construction (weights written by hand, no training). Run with /usr/bin/python3 (numpy).

    /usr/bin/python3 scripts/compile_induction_model.py [--out models/induction-compiled]

Deterministic: the same bytes every run (the distractors' random matrices come from a fixed seed).

Residual stream (d_model 128) in four blocks of 32 coordinates, each holding codes that are
rows 1..31 of a 32x32 Sylvester Hadamard matrix, divided by sqrt(32), with a sign: 62 unit
vectors, pairwise orthogonal or opposite, each of mean zero (so LayerNorm's centring leaves them
alone and every residual vector has the same norm whatever its tokens):

    T [0, 32)    the token (wte)                 code(t)   = +-u_(t mod 31 + 1)
    P [32, 64)   the position (wpe), 8x longer   code(p)   likewise, p < 62
    R [64, 96)   "the previous token", written by the previous-token head L0H1
    O [96, 128)  "the predicted token", written by the induction head L1H2; lm_head reads only O

The three mean-zero differences of the blocks' all-ones vectors (J = span(1_T - 1_P,
1_R - 1_O, 1_T + 1_P - 1_R - 1_O)) are the distractors' scratch space: the true heads read each
block through the projection onto the Hadamard codes (I - 11^T/32), which is blind to J, and
lm_head reads codes only, so nothing the distractors write reaches the logits except through
LayerNorm scales (a small effect).

Heads (4 a layer, d_head 32):
    L0H0  BOS head: a constant query (b_Q) matches position 0's key; tokens move its scores a
          little (random W_Q, W_K on T); copies a random projection of BOS's token into J.
    L0H1  previous-token head: query = P shifted by one position (code(p) -> code(p - 1)), key =
          P, scores 22 apart (hard attention to p - 1); OV copies T into R.
    L0H2  current-token head: attends to itself by position; writes the token's "parity"
          (+-1 along a fixed sign pattern) into J.
    L0H3  content head: random query and key on T (soft attention by token similarity), random
          OV into J (small).
    L1H0  duplicate-token head: query = key = T (attends to earlier copies of its own token);
          random OV from R into J.
    L1H1  BOS head: constant query, key from P; random OV from J and T into J.
    L1H2  induction head: query = T (the current token), key = R (K-composition with L0H1: the
          token before each position), scores about 5 apart; OV copies T into O.
    L1H3  previous-token-matching head: query = key = R (attends to positions with the same
          previous token); random OV from T and J into J.
"""
import argparse
import json
import os
import struct

import numpy as np

D_MODEL, N_HEADS, D_HEAD, N_LAYERS = 128, 4, 32, 2
VOCAB = 62  # 31 Hadamard rows x 2 signs
N_CTX = 62
BOS = 61
T, P, R, O = (slice(0, 32), slice(32, 64), slice(64, 96), slice(96, 128))

# Scales (see the card).
A_TOK = 1.0  # norm of a token's code in wte
A_POS = 8.0  # norm of a position's code in wpe: the corruption-invariant bulk of the norm
PREV_OUT = 0.75  # L0H1's W_O onto R
IND_Q, IND_K = 4.0, 3.5  # L1H2's query and key gains: scores about 5 apart
IND_OUT = 0.75  # L1H2's W_O onto O
UNEMBED = 8.0  # lm_head's gain on O
DISTRACTOR_OUT = 0.15  # std of the distractors' W_O entries into J


def hadamard(n):
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


H32 = hadamard(32)
U = H32 / np.sqrt(32.0)  # rows: unit vectors; rows 1..31 have mean zero
PROJ = np.eye(32) - np.ones((32, 32)) / 32.0  # onto span(U[1:]), blind to the all-ones vector


def code(i):
    """Unit code of token or position i < 62: +-U[i mod 31 + 1]."""
    return (1.0 if i < 31 else -1.0) * U[i % 31 + 1]


def junk_basis():
    ones = lambda s: np.pad(np.ones(32), (s.start, D_MODEL - s.stop))
    j1 = ones(T) - ones(P)
    j2 = ones(R) - ones(O)
    j3 = ones(T) + ones(P) - ones(R) - ones(O)
    return np.stack([j / np.linalg.norm(j) for j in (j1, j2, j3)])  # [3, d_model]


def build():
    rng = np.random.default_rng(17)
    J = junk_basis()
    wte = np.zeros((VOCAB, D_MODEL))
    wpe = np.zeros((N_CTX, D_MODEL))
    for t in range(VOCAB):
        wte[t, T] = A_TOK * code(t)
    for p in range(N_CTX):
        wpe[p, P] = A_POS * code(p)

    # The shift on P's codes: code(p) -> code(p - 1) for 1 <= p < 62 (an orthogonal map on the
    # Hadamard span, zero on the all-ones vector).
    shift = np.zeros((32, 32))
    for i in range(1, 31):
        shift += np.outer(U[i], U[i + 1])
    shift -= np.outer(U[31], U[1])
    for p in range(1, N_CTX):
        assert np.allclose(shift @ code(p), code(p - 1))

    def zeros():
        return (np.zeros((N_HEADS, D_MODEL, D_HEAD)), np.zeros((N_HEADS, D_HEAD)))

    def random_out(scale=DISTRACTOR_OUT):  # [d_head, d_model] into J
        return rng.normal(0, scale, (D_HEAD, 3)) @ J

    def random_in(block, scale):  # [32 rows of block] -> d_head, on the Hadamard span
        return PROJ @ rng.normal(0, scale, (32, D_HEAD))

    layers = []
    for layer in range(N_LAYERS):
        (WQ, bQ), (WK, bK), (WV, bV) = zeros(), zeros(), zeros()
        WO = np.zeros((N_HEADS, D_HEAD, D_MODEL))
        layers.append(dict(WQ=WQ, WK=WK, WV=WV, bQ=bQ, bK=bK, bV=bV, WO=WO))

    # ---- layer 0
    L = layers[0]
    # L0H0: BOS head. Key coordinate 0 is position 0's code; the query's bias reads it.
    L["bQ"][0, 0] = 4.0
    L["WK"][0, P, 0] = 2.0 * code(0)
    L["WQ"][0, T, 1:] = random_in(T, 0.3)[:, 1:]
    L["WK"][0, T, 1:] = random_in(T, 0.3)[:, 1:]
    L["WV"][0, T, :] = random_in(T, 0.3)
    L["WO"][0] = random_out()
    # L0H1: previous-token head.
    L["WQ"][1, P, :] = shift.T  # q = shift @ y_P
    L["WK"][1, P, :] = PROJ
    L["WV"][1, T, :] = PROJ
    L["WO"][1, :, R] = PREV_OUT * np.eye(32)
    # L0H2: current-token head writing the token's sign pattern into J.
    L["WQ"][2, P, :] = PROJ
    L["WK"][2, P, :] = PROJ
    signs = np.where(rng.random(31) < 0.5, -1.0, 1.0)
    L["WV"][2, T, 0] = signs @ U[1:]
    L["WO"][2, 0, :] = 0.5 * J[1]
    # L0H3: content head.
    L["WQ"][3, T, :] = random_in(T, 1.0)
    L["WK"][3, T, :] = random_in(T, 1.0)
    L["WV"][3, T, :] = random_in(T, 0.5)
    L["WO"][3] = random_out()

    # ---- layer 1
    L = layers[1]
    # L1H0: duplicate-token head.
    L["WQ"][0, T, :] = 4.0 * PROJ
    L["WK"][0, T, :] = 4.0 * PROJ
    L["WV"][0, R, :] = random_in(R, 0.5)
    L["WO"][0] = random_out()
    # L1H1: BOS head reading the scratch space.
    L["bQ"][1, 0] = 4.0
    L["WK"][1, P, 0] = 2.0 * code(0)
    L["WV"][1] = J.T @ rng.normal(0, 1.0, (3, D_HEAD))
    L["WV"][1, T, :] += random_in(T, 0.3)
    L["WO"][1] = random_out()
    # L1H2: induction head.
    L["WQ"][2, T, :] = IND_Q * PROJ
    L["WK"][2, R, :] = IND_K * PROJ
    L["WV"][2, T, :] = PROJ
    L["WO"][2, :, O] = IND_OUT * np.eye(32)
    # L1H3: previous-token-matching head.
    L["WQ"][3, R, :] = 4.0 * PROJ
    L["WK"][3, R, :] = 4.0 * PROJ
    L["WV"][3, T, :] = random_in(T, 0.5)
    L["WV"][3] += J.T @ rng.normal(0, 1.0, (3, D_HEAD))
    L["WO"][3] = random_out()

    lm_head = np.zeros((VOCAB, D_MODEL))
    for t in range(VOCAB):
        lm_head[t, O] = UNEMBED * code(t)
    return wte, wpe, layers, lm_head


def to_hf(wte, wpe, layers, lm_head):
    """Hugging Face GPT-2 tensors (Conv1D weights [in, out]), float16."""
    out = {"transformer.wte.weight": wte, "transformer.wpe.weight": wpe}
    for i, L in enumerate(layers):
        p = f"transformer.h.{i}."
        out[p + "ln_1.weight"] = np.ones(D_MODEL)
        out[p + "ln_1.bias"] = np.zeros(D_MODEL)
        # [3, head, d_model, d_head] -> [d_model, 3, head, d_head] -> [d_model, 3 d_model]
        w = np.stack([L["WQ"], L["WK"], L["WV"]]).transpose(2, 0, 1, 3)
        out[p + "attn.c_attn.weight"] = w.reshape(D_MODEL, 3 * D_MODEL)
        out[p + "attn.c_attn.bias"] = np.stack([L["bQ"], L["bK"], L["bV"]]).reshape(3 * D_MODEL)
        out[p + "attn.c_proj.weight"] = L["WO"].reshape(D_MODEL, D_MODEL)
        out[p + "attn.c_proj.bias"] = np.zeros(D_MODEL)
    out["transformer.ln_f.weight"] = np.ones(D_MODEL)
    out["transformer.ln_f.bias"] = np.zeros(D_MODEL)
    out["lm_head.weight"] = lm_head
    return {k: v.astype("<f2") for k, v in out.items()}


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        b = np.ascontiguousarray(tensors[name]).tobytes()
        header[name] = {"dtype": "F16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---- a numpy forward of the written (float16) weights, as a self-check

def layer_norm(x, w, b, eps=1e-5):
    x = x - x.mean(-1, keepdims=True)
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * w + b


def forward(hf, tokens):
    g = {k: v.astype(np.float64) for k, v in hf.items()}
    n = tokens.shape[-1]
    x = g["transformer.wte.weight"][tokens] + g["transformer.wpe.weight"][:n]
    mask = np.tril(np.ones((n, n), dtype=bool))
    patterns = []
    for i in range(N_LAYERS):
        p = f"transformer.h.{i}."
        y = layer_norm(x, g[p + "ln_1.weight"], g[p + "ln_1.bias"])
        qkv = y @ g[p + "attn.c_attn.weight"] + g[p + "attn.c_attn.bias"]
        q, k, v = [a.reshape(*a.shape[:-1], N_HEADS, D_HEAD) for a in np.split(qkv, 3, -1)]
        s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D_HEAD)
        s = np.where(mask, s, -np.inf)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        patterns.append(a)
        z = np.einsum("bhqk,bkhd->bqhd", a, v).reshape(*x.shape[:-1], D_MODEL)
        x = x + z @ g[p + "attn.c_proj.weight"] + g[p + "attn.c_proj.bias"]
    y = layer_norm(x, g["transformer.ln_f.weight"], g["transformer.ln_f.bias"])
    return y @ g["lm_head.weight"].T, patterns


def self_check(hf, seq_len=12, n=64):
    rng = np.random.default_rng(0)
    half = rng.integers(0, VOCAB - 1, (n, seq_len))  # BOS = 61 excluded
    tokens = np.concatenate([np.full((n, 1), BOS), half, half], 1)
    logits, patterns = forward(hf, tokens)
    pred = logits.argmax(-1)
    # Predictions of the repeated half's 2nd..last tokens (its first is unpredictable), made at
    # positions seq_len + 1 .. 2 seq_len - 1; "unambiguous" where the current token occurs once in
    # the first half (a repeated token has two possible successors).
    pos = np.arange(seq_len + 1, 2 * seq_len)
    hit = pred[:, pos] == tokens[:, pos + 1]
    once = np.array([[np.sum(half[b] == tokens[b, p]) == 1 for p in pos] for b in range(n)])
    prev = np.mean([patterns[0][:, 1, p, p - 1] for p in range(1, 2 * seq_len + 1)])
    ind = np.concatenate([patterns[1][:, 2, p, p - seq_len + 1][once[:, i]]
                          for i, p in enumerate(pos)]).mean()
    print(f"self-check (numpy, seq_len {seq_len}): induction top-1 accuracy {hit.mean():.3f} "
          f"({hit[once].mean():.3f} where unambiguous, {once.mean():.3f} of positions); "
          f"L0H1 attention to p-1 {prev:.4f}; L1H2 attention to the induction target "
          f"{ind:.3f} where unambiguous")
    return hit.mean(), hit[once].mean()


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "models", "induction-compiled"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    hf = to_hf(*build())
    write_safetensors(os.path.join(args.out, "model.safetensors"), hf)
    config = {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "n_layer": N_LAYERS,
        "n_head": N_HEADS,
        "n_embd": D_MODEL,
        "n_inner": 4 * D_MODEL,
        "n_positions": N_CTX,
        "n_ctx": N_CTX,
        "vocab_size": VOCAB,
        "layer_norm_epsilon": 1e-05,
        "activation_function": "gelu_new",
        "bos_token_id": BOS,
        "eos_token_id": BOS,
        "tie_word_embeddings": False,
        "lensgrid_attn_only": True,
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    acc, unambiguous = self_check(hf)
    assert acc > 0.8 and unambiguous > 0.99, (acc, unambiguous)


if __name__ == "__main__":
    main()
