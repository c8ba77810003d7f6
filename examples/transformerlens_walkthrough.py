#!/usr/bin/python3
"""TransformerLens's classic walk-through, against a remote lensgrid worker and coordinator.

Each step is what a TransformerLens notebook does with `HookedTransformer.from_pretrained(...)`;
here the model is `lensgrid.connect(WORKER)` and the searches go through `lensgrid.Coordinator`.
It prints what the notebook would show and exits non-zero on any failure (a lensgrid.Error, or
a result that is not what the step shows: e.g. an ablation that does not change the loss).

    python3 examples/transformerlens_walkthrough.py --worker 127.0.0.1:7071 \\
        --coordinator 127.0.0.1:7070 [--model lensgrid-tiny] [--output-dir DIR]

It starts nothing: see examples/README.md for the worker and the coordinator. --model is the
model id the worker serves (lensgrid-tiny, the embedded model, by default; gpt2, ...).
"""
import argparse
import os
import sys

import numpy as np

import lensgrid


class WalkthroughError(Exception):
    """A step did not show what it should."""


def check(ok, message):
    if not ok:
        raise WalkthroughError(message)


def section(title):
    print(f"\n## {title}", flush=True)


def fmt(x, digits=4):
    return f"{float(x):.{digits}f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", required=True, help="a lensgrid-worker's HOST:PORT")
    ap.add_argument("--coordinator", required=True,
                    help="a lensgrid-coordinator's HOST:PORT (with a worker of --model)")
    ap.add_argument("--model", default="lensgrid-tiny",
                    help="the model id the worker serves (default: lensgrid-tiny)")
    ap.add_argument("--output-dir", default="lensgrid-walkthrough",
                    help="where the attention view and the search's report go")
    ap.add_argument("--dataset", default="induction", help="the ablation search's dataset")
    ap.add_argument("--n-prompts", type=int, default=8, help="the search's prompts")
    ap.add_argument("--seq-len", type=int, default=20,
                    help="random tokens per half of the repeated sequence (and the search's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lensgrid", default=None,
                    help="the lensgrid CLI, to write the search's result.json and report.html "
                         "(default: $LENSGRID_BINARY, else lensgrid on PATH; without it they "
                         "are not written)")
    ap.add_argument("--token", default=None, help="bearer token (default: $LENSGRID_TOKEN)")
    ap.add_argument("--tls-ca", default=None, help="CA file (default: $LENSGRID_TLS_CA)")
    args = ap.parse_args(argv)
    os.makedirs(args.output_dir, exist_ok=True)

    # ---------------------------------------------------------------- the model
    section("Loading the model")
    # TransformerLens: model = HookedTransformer.from_pretrained("gpt2")
    model = lensgrid.connect(args.worker, model=args.model, token=args.token, tls_ca=args.tls_ca)
    print(model)
    cfg = model.cfg
    print(f"cfg: n_layers={cfg.n_layers} n_heads={cfg.n_heads} d_model={cfg.d_model} "
          f"d_head={cfg.d_head} d_vocab={cfg.d_vocab} n_ctx={cfg.n_ctx} "
          f"attn_only={cfg.attn_only} normalization_type={cfg.normalization_type}")
    print(f"{len(model.hook_points())} hook points, e.g. {model.hook_points()[:4]}")

    # ---------------------------------------------------------------- loss
    section("Loss")
    text = "The cat sat on the mat. The cat sat on the mat."  # short: lensgrid-tiny's n_ctx is 64
    loss = model(text, return_type="loss")
    print(f"model(text, return_type='loss') = {fmt(loss)}")
    check(np.isfinite(loss) and loss > 0, f"the loss is {loss}, not a positive number")

    # ---------------------------------------------------------------- tokens
    section("Tokens")
    tokens = model.to_tokens(text)
    str_tokens = model.to_str_tokens(text)
    print(f"to_tokens: shape {tuple(tokens.shape)}, first ids {tokens[0, :8].tolist()}")
    print(f"to_str_tokens: {str_tokens[:10]} ...")
    check(len(str_tokens) == tokens.shape[1], "to_str_tokens and to_tokens disagree in length")
    back = model.to_string(tokens[0, 1:])
    print(f"to_string(tokens[0, 1:]) == text: {back == text}")
    check(back == text, f"to_string gave {back!r}")

    # ---------------------------------------------------------------- run_with_cache
    section("Caching all activations")
    logits, cache = model.run_with_cache(tokens)
    print(f"logits, cache = model.run_with_cache(tokens): logits {tuple(logits.shape)}, "
          f"{len(cache)} activations")
    pattern0 = cache["pattern", 0, "attn"]
    print(f'cache["pattern", 0, "attn"]: {tuple(pattern0.shape)} [batch, head, query, key]')
    row_sums = pattern0.sum(-1)
    check(np.allclose(row_sums, 1, atol=1e-3), "attention rows do not sum to 1")
    check(np.allclose(np.triu(pattern0[0, 0], 1), 0, atol=1e-6), "attention looks ahead")
    print("every row sums to 1 and no query attends ahead")
    last = cache["resid_post", -1]
    print(f'cache["resid_post", -1]: {tuple(last.shape)} (negative layers count from the end)')
    check(np.array_equal(last, cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]),
          "cache['resid_post', -1] is not the last layer's")

    # ---------------------------------------------------------------- attention view
    section("Attention patterns (circuitsvis-style HTML)")
    view = lensgrid.display.attention_patterns(str_tokens, pattern0[0])
    path = view.save(os.path.join(args.output_dir, "attention_layer0.html"))
    print(f"lensgrid.display.attention_patterns(str_tokens, pattern[0]).save(...) -> {path}")
    check(os.path.getsize(path) > 0, f"{path} is empty")

    # ---------------------------------------------------------------- names_filter
    section("names_filter with stop_at_layer")
    _, small = model.run_with_cache(tokens, names_filter=lambda name: name.endswith("resid_pre"),
                                    stop_at_layer=1)
    print(f"names_filter=lambda n: n.endswith('resid_pre'), stop_at_layer=1: {list(small.keys())}")
    check(list(small.keys()) == ["blocks.0.hook_resid_pre"], f"got {list(small.keys())}")
    check(np.allclose(small["resid_pre", 0], cache["resid_pre", 0], atol=1e-5),
          "the filtered run's resid_pre 0 differs from the full cache's")
    print("equal to the full cache's blocks.0.hook_resid_pre")

    # ---------------------------------------------------------------- induction
    section("Induction on a repeated random sequence")
    rng = np.random.default_rng(args.seed)
    seq_len = args.seq_len
    vocab = [i for i in range(min(cfg.d_vocab, 20000))
             if i not in (cfg.bos_token_id, cfg.eos_token_id)]
    half = rng.choice(vocab, size=seq_len, replace=False)
    rep = np.concatenate([[cfg.bos_token_id], half, half])[None].astype(np.int64)
    rep_logits, rep_cache = model.run_with_cache(rep)
    per_token = model(rep, return_type="loss", loss_per_token=True)[0]
    first, second = per_token[:seq_len].mean(), per_token[seq_len:].mean()
    print(f"loss per token: first half {fmt(first)}, repeated half {fmt(second)}")
    check(second < first, "the repeated half is not easier than the first: no induction")
    scores = np.zeros((cfg.n_layers, cfg.n_heads))
    for layer in range(cfg.n_layers):
        pattern = rep_cache["pattern", layer]
        # each token's attention to the token after its earlier copy
        stripe = np.diagonal(pattern, offset=1 - seq_len, axis1=-2, axis2=-1)
        scores[layer] = stripe.mean(axis=(0, -1))
    top_layer, top_head = np.unravel_index(np.argmax(scores), scores.shape)
    print("induction scores (mean attention along the stripe):")
    for layer in range(cfg.n_layers):
        print(f"  L{layer}: " + " ".join(fmt(s, 3) for s in scores[layer]))
    print(f"top induction head: L{top_layer}H{top_head} ({fmt(scores[top_layer, top_head], 3)})")

    # ---------------------------------------------------------------- observe-only hooks
    section("Observing with hooks (nothing changed)")
    store = lensgrid.Store()

    def residual_norm(resid, hook):        # TransformerLens: store[hook.name] = ...
        store[hook.name] = resid.norm(dim=-1)

    clean_loss, saved = model.run_with_hooks(
        rep, fwd_hooks=[(lambda name: name.endswith("hook_resid_post"), residual_norm)],
        return_type="loss", return_saved=True)
    for name, norms in store.items():
        print(f"  {name}: norm per position {tuple(norms.shape)}, "
              f"mean {fmt(norms.mean(), 3)}")
    want = np.linalg.norm(rep_cache["resid_post", 0], axis=-1)
    check(np.allclose(store["blocks.0.hook_resid_post"], want, rtol=1e-4, atol=1e-4),
          "the saved norm differs from the cache's")
    check(np.isclose(clean_loss, model(rep, return_type="loss"), atol=1e-5),
          "an observe-only hook changed the loss")
    print(f"loss with the observing hooks {fmt(clean_loss)} (unchanged); "
          f"saved {sorted(saved)}")

    # ---------------------------------------------------------------- ablation
    section(f"Ablating head L{top_layer}H{top_head} with a hook function")

    def ablate_head(z, hook):              # z: [batch, pos, head, d_head]
        z[:, :, top_head] = 0.0
        return z

    hook_name = f"blocks.{top_layer}.attn.hook_z"
    program = model.trace([(hook_name, ablate_head)], rep)[0]
    print(f"traced into a hook program on {program.hook}: "
          + " -> ".join(n.WhichOneof("op") for n in program.nodes))
    ablated_loss = model.run_with_hooks(rep, fwd_hooks=[(hook_name, ablate_head)],
                                        return_type="loss")
    print(f"loss: clean {fmt(clean_loss)}, with L{top_layer}H{top_head} ablated "
          f"{fmt(ablated_loss)} (change {float(ablated_loss - clean_loss):+.4f})")
    check(abs(float(ablated_loss) - float(clean_loss)) > 1e-4,
          "ablating the head did not change the loss")
    # the same edit by hand, as the worker's declarative intervention
    by_hand = model.worker.run_with_interventions(
        rep, [{"hook": hook_name, "head": int(top_head), "op": "zero"}], return_type="loss")
    check(np.isclose(float(by_hand.loss), float(ablated_loss), atol=1e-5),
          f"the traced hook gives {ablated_loss}, the zero intervention {by_hand.loss}")
    print("equal to the worker's zero intervention on that head")

    # ---------------------------------------------------------------- search
    section(f"Ablation search over a dataset ({args.dataset}) through the coordinator")
    coordinator = lensgrid.Coordinator(args.coordinator, token=args.token, tls_ca=args.tls_ca)
    metric = lensgrid.default_metric(args.dataset)
    result = coordinator.search(args.model, args.dataset, "ablate-heads",
                                n_prompts=args.n_prompts, seq_len=args.seq_len, seed=args.seed,
                                progress=False)
    print(f"{result}: metric {metric} (the dataset's default, as the CLI's)")
    grid = result.grids["delta"]
    print(f"delta grid {tuple(grid.shape)} axes {result.axes['delta']}")
    print("top heads by |delta|:")
    for r in result.top(5, "delta"):
        print(f"  {r['label']:<8} {r['value']:+.4f}")
    print(f"top head: {result.ranked[0]['label']}")
    check(np.isfinite(grid).all(), "the search's grid has non-finite values")
    try:
        binary = lensgrid.coordinator.find_lensgrid_binary(args.lensgrid)
    except lensgrid.Error as e:
        if args.lensgrid:
            raise
        print(f"(result.json and report.html not written: {e})")
    else:
        out = os.path.join(args.output_dir, "search")
        files = result.write_output(out, lensgrid_binary=binary)
        print(f"result.write_output({out!r}): {sorted(files)}")
        check("report.html" in files and "result.json" in files, f"wrote only {files}")

    # ---------------------------------------------------------------- weights
    section("Weights and the OV circuit")
    try:
        W_E = model.W_E
    except lensgrid.ApiVersionError as e:
        print(f"(skipped: {e})")
    else:
        print(f"W_E {tuple(W_E.shape)}, W_Q {tuple(model.W_Q.shape)}, "
              f"W_O {tuple(model.W_O.shape)}")
        OV = model.OV[top_layer, top_head]
        print(f"model.OV[{top_layer}, {top_head}]: {OV}")
        S = OV.svd()[1]
        print(f"  top singular values {[fmt(s, 3) for s in S[:4]]}, norm {fmt(OV.norm(), 3)}")
        dense = model.W_V[top_layer, top_head] @ model.W_O[top_layer, top_head]
        check(np.allclose(OV.AB, dense, atol=1e-4), "OV.AB differs from W_V @ W_O")
        if cfg.n_layers > 1:
            k = model.all_composition_scores("K")
            l0, h0 = np.unravel_index(np.argmax(k[:, :, top_layer, top_head]), k.shape[:2])
            print(f"  strongest K-composition into L{top_layer}H{top_head}: from L{l0}H{h0} "
                  f"({fmt(k[l0, h0, top_layer, top_head], 3)})")

    print("\nwalkthrough finished")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (lensgrid.Error, WalkthroughError) as e:
        print(f"\nwalkthrough FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
