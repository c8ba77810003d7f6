#!/usr/bin/python3
"""The baseline for bench/ablation_bench: a head zero-ablation sweep as a TransformerLens user
runs it, in eager PyTorch: a GPT-2 with a hook point on each attention's z, one forward per head
with a forward hook that zeroes that head, logit difference at the final position.

usage: ablation_sweep_torch.py --layers 12 --heads 12 --d-model 768 --vocab 50257 --batch 16
                               --pos 16 [--threads 1] [--forward-iters N]
Prints one line: `seconds=S forwards=F`. With --forward-iters N it times N plain forwards of
the same model instead (bench/forward_bench's peer) and S is the median seconds of one.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class HookPoint(nn.Module):
    def forward(self, x):
        return x


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h, self.dh = h, d // h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.hook_z = HookPoint()

    def forward(self, x):
        b, p, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, p, 3, self.h, self.dh).unbind(2)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.dh)
        mask = torch.ones(p, p, dtype=torch.bool).triu(1)
        pattern = scores.masked_fill(mask, float("-inf")).softmax(-1)
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        x = x + self.o(z.reshape(b, p, d))
        return x + self.proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, layers, heads, d, vocab, n_ctx=1024):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, tokens):
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T


def main():
    ap = argparse.ArgumentParser()
    for name, default in [("layers", 12), ("heads", 12), ("d-model", 768), ("vocab", 50257),
                          ("batch", 16), ("pos", 16), ("threads", 1), ("forward-iters", 0)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT2(a.layers, a.heads, a.d_model, a.vocab).eval()
    tokens = torch.randint(a.vocab, (a.batch, a.pos))
    answer, wrong = tokens[:, 1], tokens[:, 2]
    rows = torch.arange(a.batch)
    with torch.inference_mode():
        model(tokens)  # warm-up
        if a.forward_iters > 0:
            times = []
            for _ in range(a.forward_iters):
                start = time.perf_counter()
                model(tokens)
                times.append(time.perf_counter() - start)
            print(f"seconds={sorted(times)[len(times) // 2]:.6f} forwards={a.forward_iters}")
            return
        start = time.perf_counter()
        deltas = torch.zeros(a.layers, a.heads)
        clean = model(tokens)[:, -1]
        base = (clean[rows, answer] - clean[rows, wrong]).mean()
        for layer, block in enumerate(model.blocks):
            for head in range(a.heads):
                def zero_head(module, inputs, output, head=head):
                    output = output.clone()
                    output[:, :, head] = 0
                    return output
                handle = block.hook_z.register_forward_hook(zero_head)
                logits = model(tokens)[:, -1]
                handle.remove()
                deltas[layer, head] = (logits[rows, answer] - logits[rows, wrong]).mean() - base
        seconds = time.perf_counter() - start
    print(f"seconds={seconds:.3f} forwards={a.layers * a.heads + 1}")


if __name__ == "__main__":
    main()
