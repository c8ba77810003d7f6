// The Node client against a real lensgrid-worker on loopback: model info and hook names,
// tokenization, runs bit-equal to the Python client's for the same requests (F32, F16 and
// BF16 widened), interventions, hook programs, gradients, weights, small replies in one
// message (Worker API 2.2) bit-equal to the same streamed, generation, and bad input as
// LensgridErrors with the worker's status codes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { SOURCE, lensgrid, makeModel, python, startWorker, tempDir } from "./harness.mjs";

const lg = await lensgrid();
let tmp, modelDir, worker, w;

before(async () => {
  tmp = tempDir();
  modelDir = makeModel(path.join(tmp, "small"));
  worker = await startWorker(modelDir, ["--max-batch", "8"]);
  w = await lg.connect(worker.address, { timeoutMs: 120000 });
});

after(async () => {
  w?.close();
  await worker?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** What the Python client returns for the same requests: each tensor's float32 / raw bytes. */
function pythonReference(requests) {
  const out = path.join(tmp, `py-${Math.random().toString(36).slice(2)}`);
  fs.mkdirSync(out);
  const script = `
import json, os, sys
import numpy as np
import lensgrid
w = lensgrid.Worker(sys.argv[1], timeout=120)
out = sys.argv[2]
manifest = []
for i, (method, args, kwargs) in enumerate(json.loads(sys.argv[3])):
    if "positions" in kwargs:
        kwargs["positions"] = slice(*kwargs["positions"])
    r = getattr(w, method)(*args, **kwargs)
    tensors = dict(r)
    for extra in ("logits", "loss", "metric", "tokens", "attention_mask"):
        if getattr(r, extra) is not None:
            tensors[extra] = getattr(r, extra)
    entry = {}
    for j, (name, arr) in enumerate(tensors.items()):
        arr = np.asarray(arr)
        wide = arr.astype(np.float32) if arr.dtype == np.float16 else arr  # numpy's own widening
        f = os.path.join(out, f"{i}-{j}.bin")
        with open(f, "wb") as fh:
            fh.write(np.ascontiguousarray(wide).tobytes())
        entry[name] = {"dtype": str(arr.dtype), "shape": list(arr.shape), "file": f}
    manifest.append(entry)
print(json.dumps(manifest))
`;
  return JSON.parse(python(script, [worker.address, out, JSON.stringify(requests)]));
}

function bytesOf(typed) {
  return Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);
}

function assertBitEqual(result, reference, what) {
  const mine = new Map([...result.tensors]);
  mine.set("tokens", result.tokens);
  if (result.attentionMask) mine.set("attention_mask", result.attentionMask);
  assert.deepEqual([...mine.keys()].sort(), Object.keys(reference).sort(), `${what}: tensor names`);
  for (const [name, ref] of Object.entries(reference)) {
    const t = mine.get(name);
    assert.deepEqual(t.shape, ref.shape, `${what}: ${name} shape`);
    const want = fs.readFileSync(ref.file);
    assert.ok(bytesOf(t.data).equals(want), `${what}: ${name} (${t.wireDtype} -> ${t.dtype}) differs from the Python client's ${ref.dtype}`);
  }
}

test("model info and hook names", async () => {
  const info = await w.modelInfo();
  // The version the worker was built with (common/worker_api_version.h).
  const header = fs.readFileSync(path.join(SOURCE(), "common", "worker_api_version.h"), "utf8");
  const [, major, minor] = header.match(/kWorkerApiVersion\[\] = "(\d+)\.(\d+)"/);
  assert.equal(info.api_version, `${major}.${minor}`);
  assert.deepEqual(await w.apiVersion(), [Number(major), Number(minor)]);
  assert.equal(info.weights_sha256, createHash("sha256").update(fs.readFileSync(path.join(modelDir, "model.safetensors"))).digest("hex"));
  assert.equal(info.config.n_layers, 2);
  assert.equal(info.config.n_heads, 4);
  assert.equal(info.config.d_vocab, 50257);
  assert.equal(typeof info.config.d_vocab, "number");
  assert.equal(info.has_tokenizer, true);
  assert.equal(info.limits.max_batch, 8);
  const pattern = info.hooks.find((h) => h.name === "blocks.1.attn.hook_pattern");
  assert.deepEqual(pattern.shape, [-1, 4, -1, -1]);
  assert.deepEqual(pattern.axes, ["batch", "", "query_pos", "key_pos"]);
  const names = await w.hookNames();
  const pyNames = JSON.parse(python("import json, sys, lensgrid; print(json.dumps(lensgrid.Worker(sys.argv[1]).hook_names))", [worker.address]));
  assert.deepEqual(names, pyNames);
  assert.equal(names[0], "hook_embed");
  assert.ok(names.includes("blocks.0.mlp.hook_post"));
});

test("tokenize, toStrTokens and detokenize", async () => {
  assert.deepEqual(await w.tokenize("Hello world"), [50256, 15496, 995]);
  assert.deepEqual(await w.tokenize(["Hello", " world"], { prependBos: false }), [[15496], [995]]);
  assert.deepEqual(await w.toStrTokens("Hello world"), ["<|endoftext|>", "Hello", " world"]);
  assert.deepEqual(await w.toStrTokens(["Hi", "a b"], { prependBos: false }), [["Hi"], ["a", " b"]]);
  assert.equal(await w.detokenize([15496, 995]), "Hello world");
  await assert.rejects(w.detokenize([70000]), (e) => {
    assert.ok(e instanceof lg.LensgridError);
    assert.equal(e.codeName, "INVALID_ARGUMENT");
    assert.match(e.details, /70000/);
    return true;
  });
});

test("runWithCache: tensors bit-equal to the Python client's (F32, F16 and BF16 widened, padded batches)", async () => {
  const requests = [
    ["run_with_cache", ["The cat sat on the mat"], { names_regex: "hook_(pattern|resid_post|z)$" }],
    ["run_with_cache", [["a b c d", "a"]], { names: ["blocks.1.hook_resid_post", "pattern0"], dtype: "float16", return_type: "both", per_token_loss: true }],
    ["run_with_cache", ["a b c"], { names: ["blocks.1.hook_resid_pre", "blocks.0.attn.hook_q"], dtype: "bfloat16", positions: [-2, null], logits_dtype: "float16" }],
    ["run_with_cache", [[[50256, 464, 3797], [50256, 3332, 319]]], { names: ["blocks.0.hook_mlp_out"], padding_side: "left", prepend_bos: false, stop_at_layer: 1 }],
  ];
  const ref = pythonReference(requests);
  const f32 = await w.runWithCache("The cat sat on the mat", { namesRegex: "hook_(pattern|resid_post|z)$" });
  assertBitEqual(f32, ref[0], "F32");
  assert.deepEqual(f32.get(["pattern", 1]).shape, [1, 4, 7, 7]);
  assert.equal(f32.get("pattern1"), f32.get("blocks.1.attn.hook_pattern"));
  assert.deepEqual(f32.tokenIds(), [[50256, 464, 3797, 3332, 319, 262, 2603]]);
  assert.ok(f32.tokens.data instanceof BigInt64Array);

  const f16 = await w.runWithCache(["a b c d", "a"], { names: ["blocks.1.hook_resid_post", "pattern0"], dtype: "F16", returnType: "both", perTokenLoss: true });
  assertBitEqual(f16, ref[1], "F16");
  const resid = f16.get("blocks.1.hook_resid_post");
  assert.equal(resid.wireDtype, "F16");
  assert.equal(resid.dtype, "F32");
  assert.ok(resid.data instanceof Float32Array);
  assert.deepEqual(f16.loss.shape, [2, 4]);
  assert.deepEqual(f16.attentionMask.toNested(), [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]);

  const bf16 = await w.runWithCache("a b c", { names: ["blocks.1.hook_resid_pre", "blocks.0.attn.hook_q"], dtype: "bfloat16", positions: { start: -2 }, logitsDtype: "float16" });
  assertBitEqual(bf16, ref[2], "BF16");
  assert.equal(bf16.get("resid_pre1").wireDtype, "BF16");
  assert.equal(bf16.logits.wireDtype, "F16");
  assert.deepEqual(bf16.get("q0").shape, [1, 2, 4, 16]);
  // widening is exact: every value is a bfloat16 (its low 16 bits are zero)
  assert.ok(new Uint32Array(bf16.get("resid_pre1").data.buffer).every((u) => (u & 0xffff) === 0));

  const ids = await w.runWithCache([[50256, 464, 3797], [50256, 3332, 319]], { names: ["blocks.0.hook_mlp_out"], paddingSide: "left", prependBos: false, stopAtLayer: 1 });
  assertBitEqual(ids, ref[3], "ids");
  assert.equal(ids.logits, null);
});

test("every hook point is cached when nothing is named, as TransformerLens", async () => {
  const all = await w.runWithCache([1, 2, 3]);
  assert.deepEqual([...all.names].sort(), [...(await w.hookNames())].sort());
  assert.equal(all.get("hook_embed").shape.join(), "1,3,64");
});

test("interventions change the metric; set writes its value; patch reads the patch run", async () => {
  const metric = { kind: "logit_diff", answer: 262, wrong: 257, perPrompt: true };
  const prompt = "The cat sat on the mat";
  const clean = await w.runWithInterventions(prompt, { metric });
  assert.deepEqual(clean.metric.shape, [1]);
  const ablated = await w.runWithInterventions(prompt, {
    metric,
    interventions: [{ hook: ["z", 1], head: 2, op: "zero" }, { hook: "blocks.0.hook_attn_out", op: "scale", scale: 0 }],
  });
  assert.notEqual(ablated.metric.data[0], clean.metric.data[0]);

  const value = Float32Array.from({ length: 64 }, (_, i) => (i - 32) / 8);
  const set = await w.runWithInterventions(prompt, {
    interventions: [{ hook: "blocks.0.hook_resid_post", positions: [-1], op: "set", value: { data: value, shape: [64] } }],
    names: ["blocks.0.hook_resid_post"],
  });
  const resid = set.get("blocks.0.hook_resid_post");
  assert.deepEqual([...resid.data.subarray(6 * 64, 7 * 64)], [...value]);

  // patching every position of resid_pre 1 from another prompt gives that prompt's logits
  const other = "The dog ran to the car";
  const patched = await w.runWithInterventions(prompt, {
    interventions: [{ hook: "blocks.1.hook_resid_pre", op: "patch" }],
    patchInput: other,
  });
  const otherRun = await w.runWithCache(other, { names: ["hook_embed"] });
  assert.ok(bytesOf(patched.logits.data).equals(bytesOf(otherRun.logits.data)));
});

test("hook programs: saved values and a replaced activation", async () => {
  const prompt = "The cat sat on the mat";
  const p = lg.program("blocks.1.attn.hook_z");
  const z = p.activation();
  z.norm(-1).save("z_norm");
  z.index([":", -1, 2]).sum().save("last_head2");
  p.output(z.write([":", ":", 3], 0));
  const run = await w.runWithInterventions(prompt, { programs: [p], returnType: "both" });
  const cached = (await w.runWithCache(prompt, { names: ["blocks.1.attn.hook_z"] })).get("z1");
  const [, pos, heads, dHead] = cached.shape;
  const norm = run.saved("z_norm");
  assert.deepEqual(norm.shape, [1, pos, heads]);
  for (let q = 0; q < pos; q++) {
    for (let h = 0; h < heads; h++) {
      let s = 0;
      for (let d = 0; d < dHead; d++) s += cached.get(0, q, h, d) ** 2;
      assert.ok(Math.abs(norm.get(0, q, h) - Math.sqrt(s)) <= 1e-5 * Math.max(1, Math.sqrt(s)), `norm at ${q},${h}`);
    }
  }
  let last = 0;
  for (let d = 0; d < dHead; d++) last += cached.get(0, -1, 2, d);
  assert.deepEqual(run.saved("last_head2").shape, []);
  assert.ok(Math.abs(run.saved("last_head2").get() - last) < 1e-5);
  // the program's write equals the worker's own ZERO intervention on head 3
  const zero = await w.runWithInterventions(prompt, { interventions: [{ hook: "z1", head: 3, op: "zero" }], returnType: "both" });
  assert.ok(bytesOf(run.logits.data).equals(bytesOf(zero.logits.data)));
  assert.equal(run.loss.data[0], zero.loss.data[0]);
});

test("gradients and weights", async () => {
  const g = await w.runWithInterventions("The cat sat", {
    metric: { kind: "logit", answer: 262 },
    gradients: ["blocks.0.hook_resid_post", ["z", 1]],
    returnType: "none",
  });
  assert.deepEqual(g.grad("blocks.0.hook_resid_post").shape, [1, 4, 64]);
  assert.deepEqual(g.grad(["z", 1]).shape, [1, 4, 4, 16]);
  assert.ok(g.grad("blocks.0.hook_resid_post").data.some((x) => x !== 0));
  const weights = await w.getWeights(["W_Q", "blocks.0.attn.W_O", "b_U"]);
  assert.deepEqual([...weights.keys()], ["W_Q", "blocks.0.attn.W_O", "b_U"]);
  assert.deepEqual(weights.get("W_Q").shape, [2, 4, 64, 16]);
  const py = JSON.parse(python("import json, sys, lensgrid; w = lensgrid.Worker(sys.argv[1]).get_weights(['W_Q']); print(json.dumps(w['W_Q'].astype('<f4').tobytes().hex()))", [worker.address]));
  assert.equal(bytesOf(weights.get("W_Q").data).toString("hex"), py);
});

test("small replies come as one message (Worker API 2.2), bit-equal to the streamed form; larger ones stream", async () => {
  const v = await lg.connect(worker.address, { timeoutMs: 120000 });
  // Count each call's reply messages (the client asks for inline tensors unless turned off).
  const counts = [];
  const stream = v.conn.stream.bind(v.conn);
  v.conn.stream = async function* (...args) {
    counts.push(0);
    for await (const m of stream(...args)) {
      counts[counts.length - 1]++;
      yield m;
    }
  };
  const both = async (call) => {
    const inline = await call(v);
    const nInline = counts.at(-1);
    v.inlineTensors = false;
    try {
      return [inline, await call(v), nInline, counts.at(-1)];
    } finally {
      v.inlineTensors = true;
    }
  };
  const assertSame = (a, b, what) => {
    const all = (r) => (r instanceof Map ? r : new Map([...r.tensors, ["tokens", r.tokens], ...(r.attentionMask ? [["attention_mask", r.attentionMask]] : [])]));
    const [x, y] = [all(a), all(b)];
    assert.deepEqual([...x.keys()], [...y.keys()], `${what}: names`);
    for (const [name, t] of x) {
      const u = y.get(name);
      assert.equal(t.wireDtype, u.wireDtype, `${what}: ${name} dtype`);
      assert.deepEqual(t.shape, u.shape, `${what}: ${name} shape`);
      assert.ok(bytesOf(t.data).equals(bytesOf(u.data)), `${what}: ${name} differs`);
    }
  };
  try {
    const [major, minor] = await v.apiVersion();
    assert.ok(major > 2 || (major === 2 && minor >= 2), `the worker speaks ${major}.${minor}, not 2.2 or newer`);
    const small = [
      ["F16 cache and per-token loss", (x) => x.runWithCache(["a b c d", "a"], { names: ["blocks.1.hook_resid_post", "pattern0"], dtype: "float16", returnType: "loss", perTokenLoss: true })],
      ["BF16 cache, no logits", (x) => x.runWithCache("The cat sat", { namesRegex: "hook_(z|resid_pre)$", dtype: "bfloat16", returnType: "none" })],
      ["interventions and a metric", (x) => x.runWithInterventions(["The cat sat", "The dog ran"], {
        interventions: [{ hook: "blocks.0.attn.hook_z", head: 1, op: "zero" }],
        metric: { kind: "logit_diff", answer: 262, wrong: 257, perPrompt: true },
        names: ["blocks.1.hook_resid_post"], returnType: "none",
      })],
      ["weights", (x) => x.getWeights(["W_Q", "blocks.0.attn.W_O", "b_U"])],
    ];
    for (const [what, call] of small) {
      const [inline, streamed, nInline, nStreamed] = await both(call);
      assert.equal(nInline, 1, `${what}: one message`);
      const n = inline instanceof Map ? inline.size : inline.tensors.size;
      assert.ok(n > 0 && nStreamed > n, `${what}: the header and a chunk per tensor when streamed (${nStreamed})`);
      assertSame(inline, streamed, what);
    }
    // Over 1 MiB (the logits alone: 7 x 50257 x 4 bytes; W_E): streamed although inline is asked.
    const large = [
      ["full cache", (x) => x.runWithCache("The cat sat on the mat")],
      ["W_E", (x) => x.getWeights(["W_E"])],
    ];
    for (const [what, call] of large) {
      const [inline, streamed, nInline, nStreamed] = await both(call);
      assert.ok(nInline > 2, `${what}: streamed (${nInline} messages)`);
      assert.equal(nInline, nStreamed, what);
      assertSame(inline, streamed, what);
    }
  } finally {
    v.close();
  }
});

test("generate: greedy steps equal the Python client's", async () => {
  const steps = [];
  let prompt;
  for await (const s of w.generate("The cat", { maxNewTokens: 3 })) {
    if ("promptTokens" in s) prompt = s.promptTokens;
    else steps.push(s);
  }
  assert.deepEqual(prompt.toNumbers(), [50256, 464, 3797]);
  assert.deepEqual(steps.map((s) => s.step), [0, 1, 2]);
  const py = JSON.parse(python(`
import json, sys, lensgrid
w = lensgrid.Worker(sys.argv[1])
out = [list(map(int, r.tokens)) for r in list(w.generate("The cat", 3))[1:]]
print(json.dumps(out))`, [worker.address]));
  assert.deepEqual(steps.map((s) => s.tokens), py);
});

test("bad input gives the worker's status codes as LensgridErrors", async () => {
  const cases = [
    ["unknown hook", () => w.runWithCache("a", { names: ["blocks.0.hook_nope"] }), "NOT_FOUND", /hook_nope/],
    ["regex matches nothing", () => w.runWithCache("a", { namesRegex: "zzz" }), "NOT_FOUND", /zzz/],
    ["token out of range", () => w.runWithCache([1, 50257]), "INVALID_ARGUMENT", /50257/],
    ["negative token", () => w.runWithCache([1, -4]), "INVALID_ARGUMENT", /-4/],
    ["bad regex", () => w.runWithCache("a", { namesRegex: "(" }), "INVALID_ARGUMENT", /regex/],
    ["stop_at_layer", () => w.runWithCache("a", { stopAtLayer: 3 }), "INVALID_ARGUMENT", /stop_at_layer/],
    ["batch over the limit", () => w.runWithCache(Array(9).fill("a")), "RESOURCE_EXHAUSTED", /max/],
    ["intervention hook", () => w.runWithInterventions("a", { interventions: [{ hook: "nope", op: "zero" }] }), "NOT_FOUND", /interventions\[0\]/],
    ["program operand", () => w.runWithInterventions("a", { programs: [{ hook: "z0", nodes: [{ id: "a", elementwise: { op: "NEG", inputs: ["missing"] } }], output: "", saves: [{ name: "x", node: "a" }] }] }), "INVALID_ARGUMENT", /missing/],
    ["wrong weights", () => w.runWithCache("a", { expectedWeightsSha256: "0".repeat(64) }), "FAILED_PRECONDITION", /./],
  ];
  for (const [what, fn, codeName, pattern] of cases) {
    await assert.rejects(fn, (e) => {
      assert.ok(e instanceof lg.LensgridError, `${what}: ${e}`);
      assert.equal(e.codeName, codeName, `${what}: ${e.message}`);
      assert.equal(e.code, lg.StatusCode[codeName]);
      assert.equal(e.origin, "server");
      assert.equal(e.address, worker.address);
      assert.match(e.details, pattern, what);
      return true;
    });
  }
  assert.ok(worker.alive(), worker.log());
});

test("an AbortSignal cancels a call; connect checks the model", async () => {
  const ac = new AbortController();
  const run = w.runWithCache(Array(8).fill("a b c d e f g h"), { signal: ac.signal });
  ac.abort();
  await assert.rejects(run, (e) => e instanceof lg.LensgridError && e.codeName === "CANCELLED");
  await assert.rejects(lg.connect(worker.address, { model: "gpt2" }), /serves ".*small", not "gpt2"/);
  const again = await lg.connect(worker.address, { model: "small" });
  again.close();
});
