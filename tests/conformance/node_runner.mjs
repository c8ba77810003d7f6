// The conformance suite's Node runner (tests/conformance/README.md): every case through the
// Node client's public API (client/node: connect / Worker, connectCoordinator / Coordinator,
// programFromJSON), built into client/node/dist.
//
// usage: node node_runner.mjs --worker ADDR --coordinator ADDR --cases FILE --out DIR [--case NAME]...
//
// The Node client returns F16 and BF16 tensors widened to Float32Array and keeps what came over
// the wire in Tensor.wireDtype, so this runner records wire dtypes as sent (no guessing from the
// request). Its canonical bytes are Tensor.data's bytes: float32 for F32/F16/BF16, int64 for I64,
// int32 for I32, one byte for BOOL.
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const DIST = path.join(HERE, "..", "..", "client", "node", "dist", "index.js");

function fail(message) {
  process.stderr.write(`node_runner: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const a = { case: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (!["--worker", "--coordinator", "--cases", "--out", "--case"].includes(flag)) fail(`unknown argument ${flag}`);
    if (value === undefined) fail(`${flag} needs a value`);
    if (flag === "--case") a.case.push(value);
    else a[flag.slice(2)] = value;
    i++;
  }
  for (const k of ["worker", "coordinator", "cases", "out"]) if (!a[k]) fail(`--${k} is required`);
  return a;
}

/** A float as the suite writes it: its binary64 bits, big-endian hex. */
function f64(x) {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  return { f64: Buffer.from(view.buffer).toString("hex") };
}

function sanitize(name) {
  return name.replace(/[^A-Za-z0-9._-]/g, "_");
}

class Tensors {
  constructor() {
    this.items = new Map(); // name -> {dtype, shape, bytes}
  }
  add(name, t) {
    const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    this.items.set(name, { dtype: t.wireDtype, shape: [...t.shape], bytes });
  }
  record() {
    const out = {};
    for (const [name, { dtype, shape, bytes }] of this.items) {
      out[name] = { dtype, shape, sha256: createHash("sha256").update(bytes).digest("hex") };
    }
    return out;
  }
  write(dir) {
    fs.mkdirSync(dir, { recursive: true });
    for (const [name, { bytes }] of this.items) fs.writeFileSync(path.join(dir, `${sanitize(name)}.bin`), bytes);
  }
}

function runInput(spec) {
  return "texts" in spec ? [...spec.texts] : spec.tokens;
}

/** The run options every run call shares (absent keys: the client's defaults). */
function inputOptions(c) {
  const o = {};
  if ("prepend_bos" in c) o.prependBos = c.prepend_bos;
  if ("padding_side" in c) o.paddingSide = c.padding_side;
  if ("return_type" in c) o.returnType = c.return_type;
  if ("per_token_loss" in c) o.perTokenLoss = c.per_token_loss;
  if ("stop_at_layer" in c) o.stopAtLayer = c.stop_at_layer;
  if ("logits_dtype" in c) o.logitsDtype = c.logits_dtype;
  return o;
}

function runRecord(result, tensors) {
  tensors.add("tokens", result.tokens);
  if (result.attentionMask) tensors.add("attention_mask", result.attentionMask);
  for (const [name, t] of result.tensors) tensors.add(name, t);
  return { weights_sha256: result.weightsSha256, cache_names: result.names };
}

const CALLS = {
  async model_info(w) {
    const info = await w.modelInfo();
    const c = info.config;
    const l = info.limits;
    return {
      api_version: info.api_version, weights_sha256: info.weights_sha256,
      tokenizer_sha256: info.tokenizer_sha256, dtype: info.dtype,
      processed: info.processed, has_tokenizer: info.has_tokenizer,
      config: {
        n_layers: c.n_layers, n_heads: c.n_heads, d_model: c.d_model, d_head: c.d_head, d_mlp: c.d_mlp,
        n_ctx: c.n_ctx, d_vocab: c.d_vocab, eps: f64(c.eps), act_fn: c.act_fn,
        bos_token_id: c.bos_token_id, eos_token_id: c.eos_token_id, attn_only: c.attn_only,
      },
      hooks: info.hooks.map((h) => ({ name: h.name, shape: h.shape, axes: h.axes })),
      limits: {
        max_batch: l.max_batch, max_tokens: l.max_tokens, max_response_bytes: l.max_response_bytes,
        chunk_bytes: l.chunk_bytes, max_queue: l.max_queue, max_program_nodes: l.max_program_nodes,
        max_program_bytes: l.max_program_bytes, max_einsum_elements: l.max_einsum_elements,
      },
    };
  },

  async tokenize(w, c) {
    const opts = "prepend_bos" in c ? { prependBos: c.prepend_bos } : {};
    return { ids: await w.tokenize([...c.texts], opts) };
  },

  async to_str_tokens(w, c) {
    const opts = "prepend_bos" in c ? { prependBos: c.prepend_bos } : {};
    return { str_tokens: await w.toStrTokens([...c.texts], opts) };
  },

  async detokenize(w, c) {
    return { text: await w.detokenize(c.ids) };
  },

  async run_with_cache(w, c, tensors) {
    const o = inputOptions(c);
    if ("names" in c) o.names = c.names;
    if ("regexes" in c) o.namesRegex = c.regexes;
    if ("positions" in c) o.positions = c.positions;
    if ("remove_batch_dim" in c) o.removeBatchDim = c.remove_batch_dim;
    if ("dtype" in c) o.dtype = c.dtype;
    return runRecord(await w.runWithCache(runInput(c.input), o), tensors);
  },

  async run_with_interventions(w, c, tensors) {
    const o = inputOptions(c);
    if ("interventions" in c) {
      o.interventions = c.interventions.map((i) => {
        const out = { hook: i.hook, op: i.op };
        for (const k of ["head", "positions", "scale"]) if (k in i) out[k] = i[k];
        if ("value" in i) out.value = { data: Float32Array.from(i.value.values), shape: i.value.shape };
        return out;
      });
    }
    if ("patch_input" in c) o.patchInput = runInput(c.patch_input);
    if ("metric" in c) {
      const m = c.metric;
      o.metric = { kind: m.kind, answer: m.answer };
      if ("wrong" in m) o.metric.wrong = m.wrong;
      if ("position" in m) o.metric.position = m.position;
      if ("per_prompt" in m) o.metric.perPrompt = m.per_prompt;
    }
    if ("names" in c) o.names = c.names;
    if ("regexes" in c) o.namesRegex = c.regexes;
    if ("programs" in c) o.programs = c.programs; // protobuf JSON, as the client takes it
    if ("gradients" in c) {
      const g = c.gradients;
      o.gradients = { hooks: g.hooks };
      if ("saved" in g) o.gradients.saved = g.saved;
      if ("positions" in g) o.gradients.positions = g.positions;
      if ("dtype" in g) o.gradients.dtype = g.dtype;
    }
    return runRecord(await w.runWithInterventions(runInput(c.input), o), tensors);
  },

  async search(_w, c, tensors, coordinator) {
    const o = { model: c.model, dataset: c.dataset, method: c.method };
    const keys = { metric: "metric", ablation: "ablation", n_prompts: "nPrompts", seed: "seed", seq_len: "seqLen", prompts_per_shard: "promptsPerShard", components_per_shard: "componentsPerShard" };
    for (const [k, mine] of Object.entries(keys)) if (k in c) o[mine] = c[k];
    const result = await coordinator.search(o);
    const st = result.status;
    for (const [name, t] of result.tensors) tensors.add(name, t);
    const spec = st.spec ?? {};
    return {
      state: st.state.replace(/^JOB_/, "").toLowerCase(),
      method: st.method,
      model_id: st.model_id,
      // what the job runs with: UNSPECIFIED is LOGIT_DIFF / ZERO (search.proto's JobSpec)
      metric: spec.metric,
      ablation: spec.ablation,
      n_prompts: st.n_prompts,
      n_pos: st.n_pos,
      shards_total: st.shards_total,
      first_prompt_tokens: st.first_prompt ? st.first_prompt.tokens : [],
      first_prompt_str_tokens: st.first_prompt_str_tokens,
      grids: [...result.grids].map(([name, g]) => ({ name, axes: result.axes.get(name), shape: g.shape })),
    };
  },
};

async function runCase(lg, worker, coordinator, c, out) {
  const tensors = new Tensors();
  let record;
  try {
    const fn = CALLS[c.call];
    if (!fn) {
      record = { case: c.name, ok: false, code: "UNSUPPORTED", message: `unknown call ${JSON.stringify(c.call)}` };
    } else {
      const values = await fn(worker, c, tensors, coordinator);
      record = { case: c.name, ok: true, values, tensors: tensors.record() };
      tensors.write(path.join(out, c.name));
    }
  } catch (e) {
    if (e instanceof lg.LensgridError) {
      // e.codeName: the server's status, or INVALID_ARGUMENT for the client's own checks
      record = { case: c.name, ok: false, code: e.codeName, message: e.message };
    } else {
      record = { case: c.name, ok: false, code: "RUNNER_ERROR", message: String(e?.stack ?? e) };
    }
  }
  fs.writeFileSync(path.join(out, `${c.name}.json`), JSON.stringify(record, null, 1));
  return record;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  if (!fs.existsSync(DIST)) fail(`${DIST} is missing: build the Node client (cd client/node && npm ci && npm run build)`);
  const lg = await import(pathToFileURL(DIST).href);
  let cases;
  try {
    cases = JSON.parse(fs.readFileSync(a.cases, "utf8")).cases;
  } catch (e) {
    fail(`cannot read ${a.cases}: ${e.message}`);
  }
  if (a.case.length) {
    const names = new Set(cases.map((c) => c.name));
    const unknown = a.case.filter((n) => !names.has(n));
    if (unknown.length) fail(`no such case: ${unknown.join(", ")}`);
    cases = cases.filter((c) => a.case.includes(c.name));
  }
  try {
    fs.mkdirSync(a.out, { recursive: true });
  } catch (e) {
    fail(`cannot write ${a.out}: ${e.message}`);
  }
  // No environment settings: the suite's services are plaintext loopback ones.
  const opts = { timeoutMs: 120000, token: "", tlsCa: "", tlsCert: "", tlsKey: "" };
  const worker = new lg.Worker(a.worker, opts);
  const coordinator = new lg.Coordinator(a.coordinator, opts);
  try {
    for (const c of cases) {
      const r = await runCase(lg, worker, coordinator, c, a.out);
      process.stderr.write(`node_runner: ${c.name}: ${r.ok ? "ok" : r.code}\n`);
    }
  } finally {
    worker.close();
    coordinator.close();
  }
}

main().catch((e) => fail(e?.stack ?? String(e)));
