"""Independent truth for the conformance driver: GPT-2's byte-level BPE and a float64 forward
pass of an attention-only or full GPT-2, written from the published definitions (Radford et al.'s
encoder.py; Hugging Face's modeling_gpt2.py), sharing no code with lensgrid.

The BPE uses the standard library's `re`: GPT-2's pattern with \\p{L} as [^\\W\\d_] and \\p{N} as
\\d. These agree on letters (any script), ASCII and decimal digits, whitespace, punctuation and
emoji; they differ on non-decimal numerals (e.g. "²", "Ⅻ"), which the suite's texts avoid.
"""
import json
import math
import os
import re
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "reference"))


def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character table."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_LETTER = r"[^\W\d_]"
_PATTERN = re.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d"
    rf"| ?{_LETTER}+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+")


class Tokenizer:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "vocab.json"), encoding="utf-8") as f:
            self.encoder = json.load(f)
        self.decoder = {v: k for k, v in self.encoder.items()}
        with open(os.path.join(model_dir, "merges.txt"), encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        merges = [tuple(line.split(" ")) for line in lines
                  if line and not line.startswith("#version")]
        self.ranks = {pair: i for i, pair in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        with open(os.path.join(model_dir, "config.json")) as f:
            self.bos = json.load(f)["bos_token_id"]
        # Special tokens ("<|endoftext|>") in a text are that token, as Hugging Face's tokenizer.
        self.special = {k: v for k, v in self.encoder.items()
                        if k.startswith("<|") and k.endswith("|>")}
        self._split = (re.compile("(" + "|".join(map(re.escape, self.special)) + ")")
                       if self.special else None)

    def _bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), math.inf), i)
                     for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            rank, _ = min(pairs)
            if rank == math.inf:
                break
            best = (parts[[i for r, i in pairs if r == rank][0]],
                    parts[[i for r, i in pairs if r == rank][0] + 1])
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def encode(self, text, prepend_bos=True):
        ids = [self.bos] if prepend_bos else []
        for part in (self._split.split(text) if self._split else [text]):
            if part in self.special:
                ids.append(self.special[part])
                continue
            for piece in _PATTERN.findall(part):
                word = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
                ids.extend(self.encoder[p] for p in self._bpe(word))
        return ids

    def token_bytes(self, i):
        """The bytes of one id (the special token's text for ids outside the byte table)."""
        s = self.decoder[i]
        if all(c in self.byte_decoder for c in s):
            return bytes(self.byte_decoder[c] for c in s)
        return s.encode("utf-8")

    def decode(self, ids):
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def id_of_byte(self, b):
        return self.encoder[self.byte_encoder[b]]


def load_weights(model_dir):
    import hf_gpt2
    w, _ = hf_gpt2.read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return {k[len("transformer."):] if k.startswith("transformer.") else k: v
            for k, v in w.items()}


def forward(model_dir, tokens):
    """float64 forward of GPT-2 (attention-only when the checkpoint has no MLP weights) on
    `tokens` [batch, pos] (no padding): {"logits", "blocks.L.attn.hook_pattern"} as numpy."""
    import torch
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    w = {k: v.to(torch.float64) for k, v in load_weights(model_dir).items()}
    tokens = torch.as_tensor(tokens, dtype=torch.int64)
    B, S = tokens.shape
    D, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    dh = D // H

    def ln(x, p):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    def conv1d(x, p):
        return x @ w[p + ".weight"] + w[p + ".bias"]

    def gelu_new(x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    causal = torch.tril(torch.ones(S, S, dtype=torch.bool))
    out = {}
    h = w["wte.weight"][tokens] + w["wpe.weight"][torch.arange(S)]
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        q, k, v = conv1d(ln(h, p + "ln_1"), p + "attn.c_attn").split(D, dim=-1)
        q, k, v = (t.view(B, S, H, dh).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-1, -2) / math.sqrt(dh)).masked_fill(~causal, -math.inf)
        pattern = torch.softmax(scores, dim=-1)
        out[f"blocks.{i}.attn.hook_pattern"] = pattern.numpy()
        h = h + conv1d((pattern @ v).transpose(1, 2).reshape(B, S, D), p + "attn.c_proj")
        if p + "mlp.c_fc.weight" in w:
            h = h + conv1d(gelu_new(conv1d(ln(h, p + "ln_2"), p + "mlp.c_fc")), p + "mlp.c_proj")
    unembed = w.get("lm_head.weight", w["wte.weight"])
    out["logits"] = (ln(h, "ln_f") @ unembed.T).numpy()
    return out
