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

// --- small replies in one message (Worker API 2.2) --------------------------------------------

const { readRunReply, runOptions } = await import("../dist/worker.js");

test("runs and weights ask for inline tensors (RunOptions.inline_tensors) unless turned off", () => {
  assert.equal(roundTrip("lensgrid.v1.RunWithCacheRequest", { options: runOptions({}) }).options.inline_tensors, true);
  assert.equal(roundTrip("lensgrid.v1.RunWithCacheRequest", { options: runOptions({}, false) }).options.inline_tensors, false);
});

/** name -> [wire dtype, shape, bytes] of a small reply (F32, F16, BF16 bits, empty, scalar). */
function replyTensors() {
  const bytes = (n, seed) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + seed * 11) & 0xff));
  return new Map([
    ["logits", ["F32", [2, 3, 5], bytes(120, 1)]],
    ["blocks.0.hook_resid_post", ["F16", [2, 3, 4], bytes(48, 2)]],
    ["blocks.0.attn.hook_z", ["BF16", [2, 3, 2, 2], bytes(48, 3)]],
    ["empty", ["F32", [0, 4], Buffer.alloc(0)]],
    ["loss", ["F32", [], Buffer.from(new Float32Array([2.5]).buffer)]],
  ]);
}

function replyHeader(tensors, extra = {}) {
  return {
    weights_sha256: "cd".repeat(32),
    tokens: { name: "tokens", dtype: "I64", shape: [2, 3], data: Buffer.from(new BigInt64Array([1n, 2n, 3n, 4n, 5n, 6n]).buffer) },
    tensors: [...tensors].map(([name, [dtype, shape, data]]) => ({ name, dtype, shape, num_bytes: data.length })),
    total_bytes: [...tensors.values()].reduce((n, [, , d]) => n + d.length, 0),
    ...extra,
  };
}

const wholeChunk = (name, [dtype, shape, data]) => ({ name, dtype, shape, total_bytes: data.length, offset: 0, data });
const reply = (msg) => roundTrip("lensgrid.v1.RunResponse", msg);

function inlineReply(tensors, extra = {}) {
  return [reply({ header: replyHeader(tensors, { inline_chunks: [...tensors].map(([n, t]) => wholeChunk(n, t)), ...extra }) })];
}

function streamedReply(tensors, chunkBytes) {
  const out = [reply({ header: replyHeader(tensors) })];
  for (const [name, [dtype, shape, data]] of tensors) {
    for (let offset = 0; offset < Math.max(data.length, 1); offset += chunkBytes) {
      const chunk = { name, offset, data: data.subarray(offset, offset + chunkBytes) };
      if (offset === 0) Object.assign(chunk, { dtype, shape, total_bytes: data.length });
      out.push(reply({ chunk }));
    }
  }
  return out;
}

const bytesOf = (t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

test("a reply inline in its header reads as the same reply streamed, bit for bit", async () => {
  const tensors = replyTensors();
  const inline = await readRunReply(inlineReply(tensors), "RunWithCache");
  assert.equal(inline.header.inline_chunks.length, tensors.size);
  assert.deepEqual([...inline.tensors.keys()], [...tensors.keys()]);
  for (const chunkBytes of [1, 7, 1 << 20]) {
    const streamed = await readRunReply(streamedReply(tensors, chunkBytes), "RunWithCache");
    assert.deepEqual([...streamed.tensors.keys()], [...inline.tensors.keys()]);
    for (const [name, t] of inline.tensors) {
      const s = streamed.tensors.get(name);
      assert.equal(t.wireDtype, s.wireDtype, name);
      assert.deepEqual(t.shape, s.shape, name);
      assert.ok(bytesOf(t).equals(bytesOf(s)), name);
    }
  }
  // The wire bytes themselves, for the dtypes kept as they came.
  assert.ok(bytesOf(inline.tensors.get("logits")).equals(tensors.get("logits")[2]));
  assert.deepEqual(inline.tensors.get("empty").shape, [0, 4]);
  assert.deepEqual([...inline.tensors.get("loss").data], [2.5]);
  // An async stream (as a call's) reads alike.
  async function* gen(msgs) { for (const m of msgs) yield m; }
  const fromAsync = await readRunReply(gen(inlineReply(tensors)), "RunWithCache");
  assert.ok(bytesOf(fromAsync.tensors.get("blocks.0.hook_resid_post")).equals(bytesOf(inline.tensors.get("blocks.0.hook_resid_post"))));
});

test("replies that mix the two forms or break them are DATA_LOSS", async () => {
  const tensors = replyTensors();
  const inline = inlineReply(tensors);
  const streamed = streamedReply(tensors, 7);
  const logits = tensors.get("logits");
  const cut = [logits[0], logits[1], logits[2].subarray(0, logits[2].length - 4)];
  const cases = [
    [[...inline, reply({ chunk: wholeChunk("logits", logits) })], /RunWithCache: a chunk of "logits" came after a header that carried the tensors inline/],
    [[...inline, streamed[1]], /came after a header that carried the tensors inline/],
    [[streamed[1], ...inline], /a tensor chunk came before the header/],
    [[...inline, ...inline], /the reply had two headers/],
    [inlineReply(tensors, { in_shared_memory: true }), /in shared memory and also carries them inline/],
    [[reply({ header: replyHeader(tensors, { inline_chunks: [{ ...wholeChunk("logits", cut), total_bytes: logits[2].length }] }) })], /the header's inline chunks end inside tensor "logits"/],
    [[reply({ header: replyHeader(tensors, { inline_chunks: [{ ...wholeChunk("logits", logits), offset: 8 }] }) })], /tensor "logits" starts at offset 8/],
    [[reply({ header: replyHeader(tensors, { inline_chunks: [wholeChunk("logits", logits)] }) })], /the header announced/],
    [[reply({ header: replyHeader(new Map([["logits", logits]]), { inline_chunks: [wholeChunk("logits", ["F16", [2, 3, 10], logits[2]])] }) })], /tensor logits arrived as F16 \[2,3,10\], the header announced F32 \[2,3,5\]/],
    [[], /the reply had no header/],
  ];
  for (const [messages, pattern] of cases) {
    await assert.rejects(readRunReply(messages, "RunWithCache", "h:1"), (e) => {
      assert.ok(e instanceof LensgridError, String(e));
      assert.equal(e.codeName, "DATA_LOSS");
      assert.match(e.message, pattern);
      return true;
    });
  }
});

test("a worker before 2.2 ignores inline_tensors and streams: the client reads it, and asked every time", async () => {
  const grpc = await import("@grpc/grpc-js");
  const protoLoader = await import("@grpc/proto-loader");
  const { protoDir, PROTO_FILES } = await import("../dist/proto.js");
  const def = protoLoader.loadSync(PROTO_FILES, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [protoDir()] });
  const service = grpc.loadPackageDefinition(def).lensgrid.v1.Worker.service;
  const tensors = replyTensors();
  const requests = [];
  const stream = (method) => (call) => {
    requests.push([method, call.request]);
    for (const msg of streamedReply(method === "GetWeights" ? new Map([["W_E", ["F32", [3, 2], Buffer.alloc(24, 1)]]]) : tensors, 5)) {
      call.write(msg);
    }
    call.end();
  };
  const server = new grpc.Server();
  server.addService(service, {
    GetModelInfo: (_call, cb) => cb(null, { model_dir: "/m/fake", api_version: "2.1" }),
    RunWithCache: stream("RunWithCache"),
    RunWithInterventions: stream("RunWithInterventions"),
    GetWeights: stream("GetWeights"),
  });
  const port = await new Promise((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  const w = new Worker(`127.0.0.1:${port}`, { timeoutMs: 60000 });
  try {
    const run = await w.runWithCache([1, 2, 3]);
    const ran = await w.runWithInterventions([1, 2, 3], { cache: true });
    const weights = await w.getWeights(["W_E"]);
    for (const r of [run, ran]) {
      assert.deepEqual([...r.tensors.keys()], [...tensors.keys()]);
      assert.ok(bytesOf(r.logits).equals(tensors.get("logits")[2]));
    }
    assert.deepEqual([...weights.get("W_E").data], [...new Float32Array(Buffer.alloc(24, 1).buffer)]);
    assert.deepEqual(requests.map(([m]) => m), ["RunWithCache", "RunWithInterventions", "GetWeights"]);
    assert.deepEqual(requests.map(([m, r]) => (m === "GetWeights" ? r.inline_tensors : r.options.inline_tensors)), [true, true, true]);
  } finally {
    w.close();
    server.forceShutdown();
  }
});
