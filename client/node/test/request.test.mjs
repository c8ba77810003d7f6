// What the client sends (decoded back from the bytes grpc-js would send) and how it reads
// replies: 2.0's explicit prepend_bos, enum zeros, token tensors, cache specs, interventions,
// metrics, job specs; int64 as numbers or bigints; errors; API versions; act names.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  LensgridError, StatusCode, statusCodeName, actName, checkApiVersion, parseApiVersion,
  defaultMetric, jobSpec, Worker, connect,
} from "../dist/index.js";
import { encodeMessage, decodeMessage } from "../dist/proto.js";
import { modelInput, cacheSpec } from "../dist/worker.js";
import { fromGrpcError } from "../dist/errors.js";

const roundTrip = (type, msg) => decodeMessage(type, encodeMessage(type, msg));

test("texts: prepend_bos is always sent (and the deprecated no_bos beside it); right padding is the enum's zero", () => {
  for (const prependBos of [true, false]) {
    const input = roundTrip("lensgrid.v1.RunWithCacheRequest", { input: modelInput("Hi", { prependBos }) }).input;
    assert.equal(input._prepend_bos, "prepend_bos", "prepend_bos is present on the wire");
    assert.equal(input.prepend_bos, prependBos);
    assert.equal(input.no_bos, !prependBos);
    assert.equal(input.padding_side, "PADDING_SIDE_UNSPECIFIED");
    assert.deepEqual(input.texts, ["Hi"]);
  }
  assert.equal(modelInput(["a", "b"], { paddingSide: "left" }).padding_side, "PADDING_LEFT");
  const bytes = encodeMessage("lensgrid.v1.TokenizeRequest", { texts: ["x"], prepend_bos: true });
  assert.equal(decodeMessage("lensgrid.v1.TokenizeRequest", bytes)._prepend_bos, "prepend_bos");
});

test("token ids become an I64 tensor: [pos], [batch, pos], typed arrays, bigints", () => {
  const t = modelInput([[50256, 15496], [995, 1]]).tokens;
  assert.equal(t.dtype, "I64");
  assert.deepEqual(t.shape, [2, 2]);
  assert.deepEqual([...new BigInt64Array(new Uint8Array(t.data).buffer)], [50256n, 15496n, 995n, 1n]);
  assert.deepEqual(modelInput([1, 2, 3]).tokens.shape, [3]);
  const typed = modelInput({ data: Int32Array.from([4, 5]), shape: [1, 2] }).tokens;
  assert.deepEqual([...new BigInt64Array(new Uint8Array(typed.data).buffer)], [4n, 5n]);
  assert.deepEqual(modelInput([2n ** 40n]).tokens.shape, [1]);
  const mask = modelInput([[1, 2]], { attentionMask: [[true, 0]] }).attention_mask;
  assert.equal(mask.dtype, "BOOL");
  assert.deepEqual([...mask.data], [1, 0]);
});

test("cache specs and run options", () => {
  const spec = roundTrip("lensgrid.v1.RunWithCacheRequest", {
    cache: cacheSpec({ names: [["pattern", 0], "blocks.1.hook_resid_post"], namesRegex: "hook_z$", positions: { start: -2 }, removeBatchDim: true, dtype: "bfloat16" }),
  }).cache;
  assert.deepEqual(spec.names, ["blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post"]);
  assert.deepEqual(spec.regexes, ["hook_z$"]);
  assert.equal(spec.positions.start, -2);
  assert.equal(spec.positions._stop, undefined, "an omitted stop is absent, not 0");
  assert.equal(spec.remove_batch_dim, true);
  assert.equal(spec.dtype, "BF16");
  assert.deepEqual(cacheSpec({ names: ["pattern", 1] }).names, ["blocks.1.attn.hook_pattern"], "one [name, layer] pair");
});

test("bad arguments are INVALID_ARGUMENT LensgridErrors, before anything is sent", async () => {
  const w = new Worker("127.0.0.1:1"); // nothing listens: any call would be UNAVAILABLE
  const cases = [
    [() => w.runWithCache([1.5, 2]), /element 0 \(1.5\) is not an integer token id/],
    [() => w.runWithCache([[1, 2], [3]]), /ragged/],
    [() => w.runWithCache([]), /input is empty/],
    [() => w.runWithCache({}), /expected token ids/],
    [() => w.runWithCache({ data: [1, 2, 3], shape: [1, 2] }), /3 values for shape \[1, 2\] \(2 expected\)/],
    [() => w.runWithCache([[1, 2]], { attentionMask: { data: [1], shape: [1, 2] } }), /attentionMask: 1 values for shape/],
    [() => w.runWithCache("a", { dtype: "float64" }), /dtype must be one of F32, F16, BF16/],
    [() => w.runWithCache("a", { returnType: "logprobs" }), /returnType must be/],
    [() => w.runWithCache("a", { positions: { start: 0, step: 2 } }), /start and stop only/],
    [() => w.runWithCache("a", { paddingSide: "middle" }), /paddingSide must be/],
    [() => w.runWithInterventions("a", { interventions: [{ hook: "z0", op: "delete" }] }), /interventions\[0\]\.op must be one of zero, mean, set, add, scale, patch/],
    [() => w.runWithInterventions("a", { interventions: [{ hook: "z0", op: "zero", haed: 1 }] }), /unknown fields haed/],
    [() => w.runWithInterventions("a", { metric: { kind: "accuracy", answer: 1 } }), /metric.kind must be one of/],
    [() => w.runWithInterventions("a", { metric: { kind: "logit_diff", answer: [] } }), /metric.answer must be a token id/],
    [() => w.runWithInterventions("a", { programs: [{ nodes: 1 }] }), /programs\[0\]\.nodes: expected an array, got number 1/],
    [() => w.runWithInterventions("a", { programs: [42] }), /programs\[0\] must be a ProgramBuilder/],
    [() => w.tokenize(42), /tokenize takes a text or a list of texts/],
    [() => w.detokenize([1, "2"]), /ids\[1\] must be an integer/],
  ];
  for (const [fn, pattern] of cases) {
    await assert.rejects(fn, (e) => {
      assert.ok(e instanceof LensgridError, String(e));
      assert.equal(e.code, StatusCode.INVALID_ARGUMENT);
      assert.equal(e.origin, "client");
      assert.match(e.message, pattern);
      return true;
    });
  }
  w.close();
  assert.throws(() => new Worker("127.0.0.1:1", { tlsCert: "/x.pem" }), /tlsCert is given without tlsKey/);
  assert.throws(() => new Worker("127.0.0.1:1", { token: "a b" }), /token holds a character a header cannot carry/);
  assert.throws(() => new Worker("127.0.0.1:1", { tlsCa: "/nonexistent/ca.pem" }), /tlsCa \/nonexistent\/ca.pem: cannot read: ENOENT/);
});

test("the environment's LENSGRID_TLS_CA is honoured (and named when it is wrong)", () => {
  const old = process.env.LENSGRID_TLS_CA;
  process.env.LENSGRID_TLS_CA = "/nonexistent/env-ca.pem";
  try {
    assert.throws(() => new Worker("127.0.0.1:1"), /tlsCa \(from LENSGRID_TLS_CA\) \/nonexistent\/env-ca.pem: cannot read/);
    // an explicit "" turns it off
    new Worker("127.0.0.1:1", { tlsCa: "" }).close();
  } finally {
    if (old === undefined) delete process.env.LENSGRID_TLS_CA;
    else process.env.LENSGRID_TLS_CA = old;
  }
});

test("an unreachable worker is UNAVAILABLE naming the address, after waitMs", async () => {
  await assert.rejects(connect("127.0.0.1:1", { waitMs: 300 }), (e) => {
    assert.ok(e instanceof LensgridError);
    assert.equal(e.codeName, "UNAVAILABLE");
    assert.equal(e.address, "127.0.0.1:1");
    assert.equal(e.origin, "server");
    assert.match(e.message, /GetModelInfo at 127\.0\.0\.1:1/);
    return true;
  });
});

test("replies: int64 fields are numbers when safe, bigints beyond 2^53", () => {
  const status = roundTrip("lensgrid.v1.JobStatus", {
    job_id: "j", state: "JOB_RUNNING", shards_done: 3, created_unix_ms: "1733000000000",
    spec: { dataset: { seed: "18446744073709551615", n_prompts: 8 } },
  });
  assert.equal(status.shards_done, 3);
  assert.equal(status.created_unix_ms, 1733000000000);
  assert.equal(status.spec.dataset.n_prompts, 8);
  assert.equal(status.spec.dataset.seed, 18446744073709551615n);
  assert.equal(status.state, "JOB_RUNNING");
  const info = roundTrip("lensgrid.v1.ModelInfo", { hooks: [{ name: "h", shape: [-1, 4, "9007199254740993"] }] });
  assert.deepEqual(info.hooks[0].shape, [-1, 4, 9007199254740993n]);
  const run = roundTrip("lensgrid.v1.RunResponse", { chunk: { name: "x", total_bytes: 8, offset: 4, data: Buffer.alloc(4) } });
  assert.equal(run.item, "chunk");
  assert.equal(run.chunk.offset, 4);
  assert.equal(run.header, undefined);
});

test("job specs: the CLI's names, the dataset's default metric, jsonl files", () => {
  const s = jobSpec({ model: "lensgrid-tiny", dataset: "induction", method: "patch-heads", nPrompts: 4, seed: 3 });
  assert.equal(s.method, "METHOD_PATCH_HEADS");
  assert.equal(s.metric, "METRIC_LOSS"); // induction's default, as the CLI
  assert.equal(s.ablation, "ABLATION_UNSPECIFIED");
  assert.deepEqual(s.dataset, { n_prompts: 4, seq_len: 0, seed: 3, name: "induction" });
  assert.equal(jobSpec({ model: "m", dataset: "ioi", method: "ablate-heads", ablation: "mean" }).metric, "METRIC_LOGIT_DIFF");
  assert.equal(jobSpec({ model: "m", dataset: "ioi", method: "ablate-heads", ablation: "mean" }).ablation, "ABLATION_MEAN");
  assert.equal(defaultMetric("greater-than"), "prob-diff");
  assert.throws(() => jobSpec({ model: "m", dataset: "ioi", method: "ablate-everything" }), /unknown method "ablate-everything"; one of ablate-heads, ablate-layers/);
  assert.throws(() => jobSpec({ model: "m", dataset: "/nonexistent/p.jsonl", method: "ablate-heads" }), /dataset \/nonexistent\/p.jsonl: ENOENT/);
  const back = roundTrip("lensgrid.v1.SubmitJobRequest", { spec: s, request_id: "r" }).spec;
  assert.equal(back.method, "METHOD_PATCH_HEADS");
  assert.equal(back.dataset.seed, 3);
});

test("errors: a grpc-js error becomes a LensgridError with code, name, details, address", () => {
  const e = fromGrpcError({ code: 5, details: "unknown hook", message: "5 NOT_FOUND: unknown hook" }, "h:1", "RunWithCache");
  assert.ok(e instanceof Error && e instanceof LensgridError);
  assert.equal(e.code, 5);
  assert.equal(e.codeName, "NOT_FOUND");
  assert.equal(e.details, "unknown hook");
  assert.equal(e.address, "h:1");
  assert.equal(e.method, "RunWithCache");
  assert.equal(e.message, "NOT_FOUND: unknown hook (RunWithCache at h:1)");
  assert.equal(statusCodeName(16), "UNAUTHENTICATED");
  assert.equal(fromGrpcError(new TypeError("boom"), "h:1", "X").codeName, "INTERNAL");
});

test("Worker API versions: majors 1 and 2, minors as needed", () => {
  assert.deepEqual(parseApiVersion(""), [1, 0]);
  assert.deepEqual(parseApiVersion("2.0"), [2, 0]);
  assert.deepEqual(checkApiVersion("1.1", [1, 1], "hook programs"), [1, 1]);
  assert.deepEqual(checkApiVersion("2.3", [1, 1], "hook programs"), [2, 3]);
  assert.throws(() => checkApiVersion("3.0", [1, 0], "connect", "h:1"), (e) => {
    assert.equal(e.codeName, "FAILED_PRECONDITION");
    assert.match(e.message, /the worker at h:1 speaks Worker API 3\.0; this client .* speaks 1\.x and 2\.x/);
    return true;
  });
  assert.throws(() => checkApiVersion("1.0", [1, 1], "hook programs"), /hook programs needs Worker API 1\.1 or newer; the worker speaks 1\.0: upgrade the worker/);
  assert.throws(() => checkApiVersion("", [1, 1], "getWeights"), /speaks none \(taken as 1\.0\)/);
  assert.throws(() => parseApiVersion("two"), /unreadable API version "two"/);
});

test("actName: TransformerLens's get_act_name", () => {
  assert.equal(actName("pattern", 0), "blocks.0.attn.hook_pattern");
  assert.equal(actName("pattern0"), "blocks.0.attn.hook_pattern");
  assert.equal(actName("resid_pre", 1), "blocks.1.hook_resid_pre");
  assert.equal(actName("scale", 1, "ln2"), "blocks.1.ln2.hook_scale");
  assert.equal(actName("hook_embed"), "hook_embed");
  assert.equal(actName("blocks.0.attn.hook_z"), "blocks.0.attn.hook_z");
});

test("a closed connection and bad deadlines are LensgridErrors; JobSpec messages are checked", async () => {
  const { Coordinator } = await import("../dist/index.js");
  const w = new Worker("127.0.0.1:1");
  w.close();
  await assert.rejects(w.modelInfo(), (e) => e instanceof LensgridError && e.codeName === "FAILED_PRECONDITION" && /closed/.test(e.message));
  const w2 = new Worker("127.0.0.1:1");
  await assert.rejects(w2.modelInfo({ timeoutMs: 0 }), /timeoutMs must be > 0 \(or Infinity\), got 0/);
  await assert.rejects(w2.runWithCache("a", { timeoutMs: -5 }), /timeoutMs must be > 0/);
  w2.close();
  const c = new Coordinator("127.0.0.1:1");
  await assert.rejects(c.submit({ model_id: "m", methd: "METHOD_ABLATE_HEADS" }), (e) => {
    assert.equal(e.codeName, "INVALID_ARGUMENT");
    assert.match(e.message, /spec\.methd: JobSpec has no field "methd"/);
    return true;
  });
  c.close();
});
