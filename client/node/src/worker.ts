// The Worker client: TransformerLens-style calls against one lensgrid worker
// (proto/lensgrid/v1/worker.proto), as the Python client's lensgrid.Worker.
import { CallOptions, Connection, ConnectionOptions } from "./channel";
import { LensgridError, StatusCode, invalidInput } from "./errors";
import { HookName, actName, hookName } from "./names";
import { HookProgramMessage, ProgramBuilder } from "./program";
import { serviceClient } from "./proto";
import { programFromJSON } from "./json";
import { checkApiVersion, parseApiVersion } from "./version";
import {
  ChunkMessage,
  Tensor,
  TensorAssembler,
  TensorInput,
  WireTensor,
  describe,
  tensorFromMessage,
  toF32Tensor,
  toI64Tensor,
  toMaskTensor,
} from "./wire";

// --- messages as they come back (proto field names; see proto.ts for int64) ------------------

export interface HookInfo {
  name: string;
  shape: number[];
  axes: string[];
}
export interface ModelConfig {
  n_layers: number;
  n_heads: number;
  d_model: number;
  d_head: number;
  d_mlp: number;
  n_ctx: number;
  d_vocab: number;
  eps: number;
  act_fn: string;
  bos_token_id: number;
  eos_token_id: number;
  attn_only: boolean;
}
export interface WorkerLimits {
  max_batch: number;
  max_tokens: number;
  max_response_bytes: number;
  chunk_bytes: number;
  max_queue: number;
  max_program_nodes: number;
  max_program_bytes: number;
  max_einsum_elements: number;
}
export interface ModelInfo {
  model_dir: string;
  config: ModelConfig;
  weights_sha256: string;
  device: string;
  dtype: string;
  processed: boolean;
  has_tokenizer: boolean;
  hooks: HookInfo[];
  limits: WorkerLimits;
  tokenizer_sha256: string;
  api_version: string;
}

// --- options -------------------------------------------------------------------------------

export interface ConnectOptions extends ConnectionOptions {
  /** How long connect() waits for a worker that is starting or still loading its weights (default 60000). */
  waitMs?: number;
  /** The model you expect (its directory's name, e.g. "lensgrid-tiny"): an error when the worker serves another. */
  model?: string;
}

/** Text, texts, or token ids: number[] ([pos]), number[][] ([batch, pos]) or {data, shape}. */
export type ModelInputValue =
  | string
  | readonly string[]
  | readonly number[]
  | readonly (readonly number[])[]
  | { data: BigInt64Array | Int32Array | ArrayLike<number>; shape: readonly number[] };

export type FloatDType = "F32" | "F16" | "BF16" | "float32" | "float16" | "bfloat16";
export type ReturnType = "logits" | "loss" | "both" | "none" | null;

export interface InputOptions {
  /** Prepend BOS to texts (default true, as TransformerLens). Ids are run as given. */
  prependBos?: boolean;
  /** Where texts of different lengths are padded (default "right"). */
  paddingSide?: "right" | "left";
  /** [batch, pos], nonzero / true = real token. */
  attentionMask?: unknown;
}

export interface RunOptions extends InputOptions, CallOptions {
  /** "logits" (default), "loss", "both", "none" / null. */
  returnType?: ReturnType;
  /** Loss per token ([batch, pos - 1]) instead of the mean. */
  perTokenLoss?: boolean;
  /** Run blocks [0, N) only; negative counts from the end. */
  stopAtLayer?: number;
  /** Dtype of the logits (default F32). */
  logitsDtype?: FloatDType;
  /** FAILED_PRECONDITION unless the worker's weights have this sha256. */
  expectedWeightsSha256?: string;
}

export interface CacheOptions {
  /** Exact names or shorthands ("pattern0", "blocks.1.hook_resid_post", ["pattern", 0]). */
  names?: HookName | readonly HookName[];
  /** PCRE2 regexes searched in full hook names. */
  namesRegex?: string | readonly string[];
  /** Positions to keep on the pos (query_pos) axis, as a Python slice. */
  positions?: { start?: number | null; stop?: number | null };
  /** Drop the batch axis (batch of 1 only). */
  removeBatchDim?: boolean;
  /** Dtype the worker sends the cache in (default the model's); F16 / BF16 arrive widened to Float32Array. */
  dtype?: FloatDType;
}

export interface RunWithCacheOptions extends RunOptions, CacheOptions {}

export interface InterventionInput {
  /** Exact name or shorthand, or [name, layer(, type)]. */
  hook: HookName;
  /** "zero" | "mean" | "set" | "add" | "scale" | "patch". */
  op: string;
  head?: number;
  /** Positions to edit (default all); negative from the end. */
  positions?: number | readonly number[];
  /** For set / add / mean: broadcast to the edited region (numbers, nested arrays, {data, shape}). */
  value?: TensorInput;
  /** For scale. */
  scale?: number;
}

export interface MetricInput {
  /** "logit_diff" | "logit" | "prob" | "prob_diff" | "log_prob" (or with dashes). */
  kind: string;
  /** Answer token id(s): one for every row, or one per row. */
  answer: number | readonly number[];
  /** Wrong token id(s) (logit_diff, prob_diff). */
  wrong?: number | readonly number[];
  /** Read at this position of every row (negative from the end); default the last real token. */
  position?: number;
  /** One value per row instead of the mean. */
  perPrompt?: boolean;
}

export interface GradientsInput {
  hooks: readonly HookName[];
  /** The objective: a saved program value with one element; default the metric. */
  saved?: string;
  positions?: { start?: number | null; stop?: number | null };
  dtype?: FloatDType;
}

export interface RunWithInterventionsOptions extends RunOptions {
  interventions?: readonly InterventionInput[];
  /** The source run of "patch" interventions and of programs' patch values. */
  patchInput?: ModelInputValue;
  metric?: MetricInput;
  /** true: cache every hook; or what to cache. */
  cache?: boolean | CacheOptions;
  /** Shortcuts for cache: {names} / {namesRegex}. */
  names?: HookName | readonly HookName[];
  namesRegex?: string | readonly string[];
  /**
   * Hook programs: ProgramBuilders, HookProgram messages, or their protobuf JSON (objects or
   * text, as program.proto's comment writes them); saved values come back as "saved:NAME".
   */
  programs?: readonly (ProgramBuilder | HookProgramMessage | Record<string, unknown> | string)[];
  /** d objective / d activation at these hooks, as "grad:HOOK" (a list of hooks, or GradientsInput). */
  gradients?: readonly HookName[] | GradientsInput;
}

// --- results -------------------------------------------------------------------------------

/**
 * A run's tensors: logits, loss, metric, every cached activation by hook name, saved program
 * values ("saved:NAME") and gradients ("grad:HOOK"), with the tokens as run.
 */
export class RunResult {
  /** Token ids as run, I64 [batch, pos] (BigInt64Array; tokenIds() for numbers). */
  tokens: Tensor | null = null;
  /** BOOL [batch, pos] when the run had a mask (padded texts). */
  attentionMask: Tensor | null = null;
  weightsSha256 = "";
  logits: Tensor | null = null;
  loss: Tensor | null = null;
  metric: Tensor | null = null;
  /** Every tensor the worker sent, in order, by name. */
  readonly tensors = new Map<string, Tensor>();

  /** Cached activations, saved values and gradients (every tensor but logits, loss, metric). */
  get cache(): Map<string, Tensor> {
    return new Map([...this.tensors].filter(([n]) => n !== "logits" && n !== "loss" && n !== "metric"));
  }

  /** Names of the cached activations (and saved:/grad: tensors), in order. */
  get names(): string[] {
    return [...this.cache.keys()];
  }

  has(name: HookName): boolean {
    const n = hookName(name);
    return this.tensors.has(n) || this.tensors.has(actName(n));
  }

  /** A cached activation: "blocks.0.attn.hook_pattern", "pattern0", ["pattern", 0]. NOT_FOUND otherwise. */
  get(name: HookName): Tensor {
    const n = hookName(name);
    const t = this.tensors.get(n) ?? this.tensors.get(actName(n));
    if (!t) {
      throw new LensgridError(StatusCode.NOT_FOUND, `${n} is not in this run's result (it has ${JSON.stringify(this.names)})`);
    }
    return t;
  }

  /** A hook program's saved value (the tensor "saved:NAME"). */
  saved(name: string): Tensor {
    return this.get(`saved:${name}`);
  }

  /** A gradient (the tensor "grad:HOOK"): by the hook's full name, a shorthand or [name, layer]. */
  grad(hook: HookName): Tensor {
    const n = hookName(hook);
    return this.get(this.tensors.has(`grad:${n}`) ? `grad:${n}` : `grad:${actName(n)}`);
  }

  /** The token ids as number[][] ([batch][pos]). */
  tokenIds(): number[][] {
    if (!this.tokens) return [];
    const flat = this.tokens.toNumbers();
    const [b, p] = this.tokens.shape.length === 2 ? this.tokens.shape : [1, flat.length];
    return Array.from({ length: b }, (_, i) => flat.slice(i * p, (i + 1) * p));
  }
}

// --- request building ----------------------------------------------------------------------

const RETURN_TYPES: Record<string, string> = {
  // "logits" is sent as UNSPECIFIED, which means logits to every worker (RETURN_LOGITS is 2.0's).
  logits: "RETURN_TYPE_UNSPECIFIED",
  loss: "RETURN_LOSS",
  both: "RETURN_BOTH",
  none: "RETURN_NONE",
};

const FLOAT_DTYPES: Record<string, string> = {
  F32: "F32",
  F16: "F16",
  BF16: "BF16",
  float32: "F32",
  float16: "F16",
  bfloat16: "BF16",
};

function floatDtype(d: FloatDType | undefined, what: string): string {
  if (d === undefined || d === null) return "DTYPE_UNSPECIFIED";
  const v = FLOAT_DTYPES[d as string];
  if (!v) throw invalidInput(`${what} must be one of F32, F16, BF16 (or float32, float16, bfloat16); got ${describe(d)}`);
  return v;
}

const OPS = ["zero", "mean", "set", "add", "scale", "patch"];
const METRICS: Record<string, string> = {};
for (const m of ["logit_diff", "prob", "prob_diff", "loss", "kl", "logit", "log_prob"]) {
  METRICS[m] = `METRIC_${m.toUpperCase()}`;
  METRICS[m.replace(/_/g, "-")] = `METRIC_${m.toUpperCase()}`;
}

function checkInt(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw invalidInput(`${what} must be an integer, got ${describe(v)}`);
  return v;
}

function ids(v: number | readonly number[], what: string): number[] {
  const list = typeof v === "number" ? [v] : Array.isArray(v) ? v : null;
  if (!list || list.length === 0) throw invalidInput(`${what} must be a token id or a non-empty list of them, got ${describe(v)}`);
  return list.map((x, i) => checkInt(x, `${what}[${i}]`));
}

function isStringList(v: unknown): v is readonly string[] {
  return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "string");
}

export function modelInput(value: ModelInputValue, opts: InputOptions = {}, what = "input"): Record<string, unknown> {
  const prependBos = opts.prependBos ?? true;
  if (typeof prependBos !== "boolean") throw invalidInput(`prependBos must be a boolean, got ${describe(prependBos)}`);
  const side = opts.paddingSide ?? "right";
  if (side !== "right" && side !== "left") throw invalidInput(`paddingSide must be "right" or "left", got ${describe(side)}`);
  // prepend_bos for 2.x workers, no_bos (deprecated) beside it for 1.x ones; right padding is the
  // enum's zero, which means right to every worker.
  const msg: Record<string, unknown> = {
    prepend_bos: prependBos,
    no_bos: !prependBos,
    padding_side: side === "left" ? "PADDING_LEFT" : "PADDING_SIDE_UNSPECIFIED",
  };
  if (typeof value === "string") {
    msg.texts = [value];
  } else if (isStringList(value)) {
    msg.texts = [...value];
  } else if (Array.isArray(value) && value.length === 0) {
    throw invalidInput(`${what} is empty: give a text, texts, or token ids`);
  } else {
    msg.tokens = toI64Tensor(value, `${what} (token ids)`, "tokens");
  }
  if (opts.attentionMask !== undefined && opts.attentionMask !== null) {
    msg.attention_mask = toMaskTensor(opts.attentionMask, "attentionMask");
  }
  return msg;
}

/**
 * RunOptions. inlineTensors (default true): a small reply may come as one message, its
 * tensors in the header (Worker API 2.2); a worker older than 2.2 ignores it and streams
 * them, and readRunReply reads both forms.
 */
export function runOptions(o: RunOptions, inlineTensors = true): Record<string, unknown> {
  const rt = o.returnType === null ? "none" : (o.returnType ?? "logits");
  if (!RETURN_TYPES[rt]) throw invalidInput(`returnType must be "logits", "loss", "both" or "none"; got ${describe(o.returnType)}`);
  const msg: Record<string, unknown> = {
    return_type: RETURN_TYPES[rt],
    per_token_loss: !!o.perTokenLoss,
    logits_dtype: floatDtype(o.logitsDtype, "logitsDtype"),
    inline_tensors: inlineTensors,
  };
  if (o.stopAtLayer !== undefined && o.stopAtLayer !== null) msg.stop_at_layer = checkInt(o.stopAtLayer, "stopAtLayer");
  return msg;
}

function posSlice(p: { start?: number | null; stop?: number | null }, what: string): Record<string, unknown> {
  if (typeof p !== "object" || p === null || Array.isArray(p)) {
    throw invalidInput(`${what} must be {start, stop} (a Python slice, either may be omitted), got ${describe(p)}`);
  }
  const extra = Object.keys(p).filter((k) => k !== "start" && k !== "stop");
  if (extra.length) throw invalidInput(`${what} has start and stop only (step 1); got ${extra.join(", ")}`);
  const out: Record<string, unknown> = {};
  if (p.start !== undefined && p.start !== null) out.start = checkInt(p.start, `${what}.start`);
  if (p.stop !== undefined && p.stop !== null) out.stop = checkInt(p.stop, `${what}.stop`);
  return out;
}

function list<T>(v: T | readonly T[] | undefined): T[] {
  if (v === undefined || v === null) return [];
  return Array.isArray(v) ? [...(v as T[])] : [v as T];
}

function hookList(v: HookName | readonly HookName[] | undefined, what: string): string[] {
  if (v === undefined || v === null) return [];
  // a single [name, layer] tuple vs a list of names
  const items: HookName[] =
    Array.isArray(v) && v.length >= 2 && typeof v[0] === "string" && typeof v[1] === "number"
      ? [v as unknown as HookName]
      : list(v as HookName | readonly HookName[]);
  return items.map((h, i) => {
    const n = hookName(h);
    if (typeof n !== "string" || !n) throw invalidInput(`${what}[${i}] must be a hook name, got ${describe(h)}`);
    return n;
  });
}

export function cacheSpec(o: CacheOptions): Record<string, unknown> {
  const regexes = list(o.namesRegex);
  regexes.forEach((r, i) => {
    if (typeof r !== "string") throw invalidInput(`namesRegex[${i}] must be a string, got ${describe(r)}`);
  });
  const msg: Record<string, unknown> = {
    names: hookList(o.names, "names"),
    regexes,
    remove_batch_dim: !!o.removeBatchDim,
    dtype: floatDtype(o.dtype, "dtype"),
  };
  if (o.positions !== undefined && o.positions !== null) msg.positions = posSlice(o.positions, "positions");
  return msg;
}

function intervention(item: InterventionInput, i: number): Record<string, unknown> {
  const what = `interventions[${i}]`;
  if (typeof item !== "object" || item === null) throw invalidInput(`${what} must be an object, got ${describe(item)}`);
  const known = ["hook", "op", "head", "positions", "value", "scale"];
  const extra = Object.keys(item).filter((k) => !known.includes(k));
  if (extra.length) throw invalidInput(`${what}: unknown fields ${extra.join(", ")} (known: ${known.join(", ")})`);
  const op = typeof item.op === "string" ? item.op.toLowerCase() : "";
  if (!OPS.includes(op)) throw invalidInput(`${what}.op must be one of ${OPS.join(", ")}; got ${describe(item.op)}`);
  const msg: Record<string, unknown> = { hook: hookName(item.hook), op: op.toUpperCase() };
  if (typeof msg.hook !== "string" || !msg.hook) throw invalidInput(`${what}.hook must be a hook name`);
  if (item.head !== undefined && item.head !== null) msg.head = checkInt(item.head, `${what}.head`);
  if (item.positions !== undefined && item.positions !== null) {
    msg.positions = list(item.positions).map((p, j) => checkInt(p, `${what}.positions[${j}]`));
  }
  if (item.value !== undefined && item.value !== null) msg.value = toF32Tensor(item.value, `${what}.value`, "value");
  if (item.scale !== undefined) {
    if (typeof item.scale !== "number") throw invalidInput(`${what}.scale must be a number`);
    msg.scale = item.scale;
  }
  return msg;
}

function metric(m: MetricInput): Record<string, unknown> {
  if (typeof m !== "object" || m === null) throw invalidInput(`metric must be {kind, answer, ...}, got ${describe(m)}`);
  const known = ["kind", "answer", "wrong", "position", "perPrompt"];
  const extra = Object.keys(m).filter((k) => !known.includes(k));
  if (extra.length) throw invalidInput(`metric: unknown fields ${extra.join(", ")} (known: ${known.join(", ")})`);
  const kind = typeof m.kind === "string" ? METRICS[m.kind.toLowerCase()] : undefined;
  if (!kind) {
    throw invalidInput(`metric.kind must be one of logit_diff, logit, prob, prob_diff, log_prob; got ${describe(m.kind)}`);
  }
  const msg: Record<string, unknown> = {
    kind,
    answer_tokens: ids(m.answer, "metric.answer"),
    wrong_tokens: m.wrong === undefined || m.wrong === null ? [] : ids(m.wrong, "metric.wrong"),
    per_prompt: !!m.perPrompt,
  };
  if (m.position !== undefined && m.position !== null) msg.position = checkInt(m.position, "metric.position");
  return msg;
}

function programMessage(p: ProgramBuilder | HookProgramMessage | Record<string, unknown> | string, i: number): Record<string, unknown> {
  if (p instanceof ProgramBuilder) return p.build() as unknown as Record<string, unknown>;
  if ((typeof p === "object" && p !== null && !Array.isArray(p)) || typeof p === "string") {
    // a HookProgram message, or its protobuf JSON (checked: unknown fields are refused)
    return programFromJSON(p, `programs[${i}]`);
  }
  throw invalidInput(`programs[${i}] must be a ProgramBuilder (program(hook)), a HookProgram message or its protobuf JSON; got ${describe(p)}`);
}

function gradients(g: readonly HookName[] | GradientsInput): Record<string, unknown> {
  const spec: GradientsInput = Array.isArray(g) ? { hooks: g as readonly HookName[] } : (g as GradientsInput);
  if (!spec || !Array.isArray(spec.hooks) || spec.hooks.length === 0) {
    throw invalidInput("gradients needs hooks: a list of hook names, or {hooks, saved, positions, dtype}");
  }
  const msg: Record<string, unknown> = {
    hooks: spec.hooks.map((h, i) => {
      const n = hookName(h);
      if (typeof n !== "string" || !n) throw invalidInput(`gradients.hooks[${i}] must be a hook name`);
      return n; // as given: the worker resolves shorthands
    }),
    saved: spec.saved ?? "",
    dtype: floatDtype(spec.dtype, "gradients.dtype"),
  };
  if (spec.positions) msg.positions = posSlice(spec.positions, "gradients.positions");
  return msg;
}

// --- the client ----------------------------------------------------------------------------

export interface RunResponseMessage {
  item?: "header" | "chunk";
  header?: {
    tokens?: { name: string; dtype: string; shape: number[]; data: Buffer } | null;
    attention_mask?: { name: string; dtype: string; shape: number[]; data: Buffer } | null;
    weights_sha256: string;
    tensors: { name: string; dtype: string; shape: number[]; num_bytes: number }[];
    in_shared_memory?: boolean;
    /** Worker API 2.2, when the request set inline_tensors: every tensor, one whole chunk each. */
    inline_chunks?: ChunkMessage[];
  };
  chunk?: ChunkMessage;
}

/**
 * Reads a streamed reply (RunResponse messages, decoded) in either form: the header then
 * TensorChunk messages, or (Worker API 2.2, when the request set inline_tensors) a header
 * carrying every tensor in inline_chunks, one chunk each, with no chunk messages after it.
 * Returns the header and the tensors it announces, in order, each checked against its entry
 * (dtype, shape). DATA_LOSS for a reply that breaks these rules: no header or two, a chunk
 * before the header or after inline chunks, inline chunks that end inside a tensor or come
 * with in_shared_memory, tensors other than announced.
 */
export async function readRunReply(
  messages: AsyncIterable<RunResponseMessage> | Iterable<RunResponseMessage>,
  method: string,
  address = "",
): Promise<{ header: NonNullable<RunResponseMessage["header"]>; tensors: Map<string, Tensor> }> {
  const loss = (message: string) => new LensgridError(StatusCode.DATA_LOSS, `${method}: ${message}`, { address, method });
  const assembler = new TensorAssembler();
  let header: RunResponseMessage["header"] | null = null;
  let inlined = false;
  for await (const msg of messages) {
    if (msg.item === "header" && msg.header) {
      if (header) throw loss("the reply had two headers");
      header = msg.header;
      const inline = header.inline_chunks ?? [];
      if (inline.length) {
        if (header.in_shared_memory) throw loss("the header says the tensors are in shared memory and also carries them inline");
        inlined = true;
        for (const chunk of inline) assembler.add(chunk);
        if (assembler.receiving !== null) {
          throw loss(`the header's inline chunks end inside tensor ${JSON.stringify(assembler.receiving)}`);
        }
      }
    } else if (msg.item === "chunk" && msg.chunk) {
      if (!header) throw loss("a tensor chunk came before the header");
      if (inlined) throw loss(`a chunk of ${JSON.stringify(msg.chunk.name)} came after a header that carried the tensors inline`);
      assembler.add(msg.chunk);
    } else {
      throw loss("a reply message with neither header nor chunk");
    }
  }
  if (!header) throw loss("the reply had no header");
  const tensors = assembler.finish(header.tensors.map((t) => t.name));
  for (const meta of header.tensors) {
    const t = tensors.get(meta.name)!;
    if (t.wireDtype !== meta.dtype || t.shape.join(",") !== meta.shape.map(Number).join(",")) {
      throw loss(`tensor ${meta.name} arrived as ${t.wireDtype} [${t.shape}], the header announced ${meta.dtype} [${meta.shape}]`);
    }
  }
  return { header, tensors };
}

export interface TokenizeOptions extends CallOptions {
  /** Prepend BOS (default true, as TransformerLens's to_tokens). */
  prependBos?: boolean;
}

export interface GenerateOptions extends InputOptions, CallOptions {
  maxNewTokens: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number | bigint;
  stopAtEos?: boolean;
  expectedWeightsSha256?: string;
}

export interface GenerateStep {
  step: number;
  tokens: number[];
  texts: string[];
  finished: boolean[];
}

/** A connection to one lensgrid worker. Every method throws LensgridError on failure. */
export class Worker {
  readonly address: string;
  private readonly conn: Connection;
  private info: ModelInfo | null = null;
  /** Ask for small replies as one message (inline_tensors, Worker API 2.2); tests turn it off. */
  private inlineTensors = true;

  /** Use connect(), which waits for the worker and checks its API version. */
  constructor(address: string, options: ConnectionOptions = {}) {
    this.conn = new Connection(serviceClient("Worker"), address, options);
    this.address = address;
  }

  close(): void {
    this.conn.close();
  }

  /** The worker's ModelInfo (config, weights_sha256, hooks with shapes, limits, api_version); cached. */
  async modelInfo(opts: CallOptions & { refresh?: boolean } = {}): Promise<ModelInfo> {
    if (!this.info || opts.refresh) {
      this.info = await this.conn.unary<ModelInfo>("GetModelInfo", {}, opts);
    }
    return this.info;
  }

  /** Waits until the worker serves (UNAVAILABLE while it starts or loads weights); its ModelInfo. */
  async waitReady(waitMs = 60000): Promise<ModelInfo> {
    const end = Date.now() + waitMs;
    let delay = 50;
    for (;;) {
      try {
        return await this.modelInfo({ refresh: true, timeoutMs: Math.max(100, Math.min(5000, end - Date.now())) });
      } catch (e) {
        const err = e as LensgridError;
        const transient = err.code === StatusCode.UNAVAILABLE || err.code === StatusCode.DEADLINE_EXCEEDED;
        if (!transient || Date.now() >= end) throw err;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 500);
      }
    }
  }

  /** Every hook point's name, in ModelInfo.hooks order (registration order, as TransformerLens's hook_dict). */
  async hookNames(): Promise<string[]> {
    return (await this.modelInfo()).hooks.map((h) => h.name);
  }

  /** The worker's Worker API version as [MAJOR, MINOR] (a worker without one is 1.0). */
  async apiVersion(): Promise<[number, number]> {
    return parseApiVersion((await this.modelInfo()).api_version);
  }

  /** FAILED_PRECONDITION unless the worker speaks a supported major and at least `needed`. */
  async requireApiVersion(needed: readonly [number, number], what: string): Promise<void> {
    checkApiVersion((await this.modelInfo()).api_version, needed, what, this.address);
  }

  private async tokenizeRaw(text: string | readonly string[], opts: TokenizeOptions) {
    const texts = typeof text === "string" ? [text] : Array.isArray(text) ? [...text] : null;
    if (!texts || texts.some((t) => typeof t !== "string")) {
      throw invalidInput(`tokenize takes a text or a list of texts, got ${describe(text)}`);
    }
    const prependBos = opts.prependBos ?? true;
    if (typeof prependBos !== "boolean") throw invalidInput(`prependBos must be a boolean, got ${describe(prependBos)}`);
    const resp = await this.conn.unary<{ tokens: { ids: number[]; str_tokens: string[] }[] }>(
      "Tokenize",
      { texts, prepend_bos: prependBos },
      opts,
    );
    if (resp.tokens.length !== texts.length) {
      throw new LensgridError(StatusCode.DATA_LOSS, `Tokenize: ${resp.tokens.length} token lists for ${texts.length} texts`, { address: this.address });
    }
    return resp.tokens;
  }

  /** Token ids of a text (number[]), or of each text of a list (number[][]). */
  tokenize(text: string, opts?: TokenizeOptions): Promise<number[]>;
  tokenize(texts: readonly string[], opts?: TokenizeOptions): Promise<number[][]>;
  async tokenize(text: string | readonly string[], opts: TokenizeOptions = {}): Promise<number[] | number[][]> {
    const tokens = await this.tokenizeRaw(text, opts);
    const out = tokens.map((t) => t.ids.map((x) => Number(x)));
    return typeof text === "string" ? out[0] : out;
  }

  /** Each token decoded on its own (TransformerLens's to_str_tokens). */
  toStrTokens(text: string, opts?: TokenizeOptions): Promise<string[]>;
  toStrTokens(texts: readonly string[], opts?: TokenizeOptions): Promise<string[][]>;
  async toStrTokens(text: string | readonly string[], opts: TokenizeOptions = {}): Promise<string[] | string[][]> {
    const tokens = await this.tokenizeRaw(text, opts);
    const out = tokens.map((t) => [...t.str_tokens]);
    return typeof text === "string" ? out[0] : out;
  }

  /** The text of token ids (ill-formed UTF-8 replaced by U+FFFD). */
  async detokenize(tokenIds: readonly (number | bigint)[], opts: CallOptions = {}): Promise<string> {
    if (!Array.isArray(tokenIds)) throw invalidInput(`detokenize takes a list of token ids, got ${describe(tokenIds)}`);
    const idList = tokenIds.map((x, i) => {
      if (typeof x === "bigint") return x.toString();
      return checkInt(x, `ids[${i}]`);
    });
    const resp = await this.conn.unary<{ text: string }>("Detokenize", { ids: idList }, opts);
    return resp.text;
  }

  private async runStream(method: string, request: object, opts: CallOptions): Promise<RunResult> {
    const result = new RunResult();
    const { header, tensors } = await readRunReply(this.conn.stream<RunResponseMessage>(method, request, opts), method, this.address);
    if (header.tokens) result.tokens = tensorFromMessage(header.tokens);
    if (header.attention_mask) result.attentionMask = tensorFromMessage(header.attention_mask);
    result.weightsSha256 = header.weights_sha256;
    for (const [name, t] of tensors) {
      result.tensors.set(name, t);
      if (name === "logits") result.logits = t;
      else if (name === "loss") result.loss = t;
      else if (name === "metric") result.metric = t;
    }
    return result;
  }

  /**
   * Runs text(s) or token ids, returning the logits (or loss) and the cached activations:
   * every hook point when neither names nor namesRegex is given, as TransformerLens.
   */
  async runWithCache(input: ModelInputValue, opts: RunWithCacheOptions = {}): Promise<RunResult> {
    const request = {
      input: modelInput(input, opts),
      options: runOptions(opts, this.inlineTensors),
      cache: cacheSpec(opts),
      expected_weights_sha256: opts.expectedWeightsSha256 ?? "",
    };
    return this.runStream("RunWithCache", request, opts);
  }

  /**
   * Runs with declarative interventions ({hook, op, head, positions, value, scale}), a metric,
   * hook programs and gradients; caches only what `cache` / `names` / `namesRegex` ask.
   */
  async runWithInterventions(input: ModelInputValue, opts: RunWithInterventionsOptions = {}): Promise<RunResult> {
    const interventions = (opts.interventions ?? []).map(intervention);
    const request: Record<string, unknown> = {
      input: modelInput(input, opts),
      options: runOptions(opts, this.inlineTensors),
      interventions,
      expected_weights_sha256: opts.expectedWeightsSha256 ?? "",
    };
    if (opts.patchInput !== undefined && opts.patchInput !== null) {
      request.patch_input = modelInput(opts.patchInput, { prependBos: opts.prependBos, paddingSide: opts.paddingSide }, "patchInput");
    }
    if (opts.metric) request.metric = metric(opts.metric);
    if (opts.cache === true) {
      request.cache = cacheSpec({});
    } else if (opts.cache && typeof opts.cache === "object") {
      request.cache = cacheSpec(opts.cache);
    } else if (opts.names !== undefined || opts.namesRegex !== undefined) {
      request.cache = cacheSpec({ names: opts.names, namesRegex: opts.namesRegex });
    }
    const programs = (opts.programs ?? []).map(programMessage);
    if (programs.length) {
      await this.requireApiVersion([1, 1], "hook programs");
      request.programs = programs;
    }
    if (opts.gradients !== undefined && opts.gradients !== null) {
      await this.requireApiVersion([1, 1], "gradients");
      request.gradients = gradients(opts.gradients);
    }
    return this.runStream("RunWithInterventions", request, opts);
  }

  /**
   * Weights by TransformerLens name ("W_E", "blocks.0.attn.W_Q", or "W_Q" for every layer
   * stacked); every weight when names is empty.
   */
  async getWeights(names: readonly string[] = [], opts: CallOptions & { dtype?: FloatDType } = {}): Promise<Map<string, Tensor>> {
    await this.requireApiVersion([1, 1], "getWeights");
    const request = { names: list(names), dtype: floatDtype(opts.dtype, "dtype"), inline_tensors: this.inlineTensors };
    return (await this.runStream("GetWeights", request, opts)).tensors;
  }

  /**
   * Sampling on the worker: yields the prompt tokens first ({promptTokens}), then one step per
   * generated token.
   */
  async *generate(input: ModelInputValue, opts: GenerateOptions): AsyncGenerator<GenerateStep | { promptTokens: Tensor }> {
    await this.requireApiVersion([1, 1], "generate");
    if (!opts || !Number.isSafeInteger(opts.maxNewTokens) || opts.maxNewTokens <= 0) {
      throw invalidInput(`maxNewTokens must be an integer > 0, got ${describe(opts?.maxNewTokens)}`);
    }
    const request: Record<string, unknown> = {
      input: modelInput(input, { ...opts, paddingSide: opts.paddingSide ?? "left" }),
      max_new_tokens: opts.maxNewTokens,
      temperature: opts.temperature ?? 0,
      top_k: opts.topK ?? 0,
      top_p: opts.topP ?? 0,
      stop_at_eos: !!opts.stopAtEos,
      expected_weights_sha256: opts.expectedWeightsSha256 ?? "",
    };
    if (opts.seed !== undefined) {
      if (typeof opts.seed === "bigint") request.seed = opts.seed.toString();
      else request.seed = checkInt(opts.seed, "seed");
    }
    for await (const r of this.conn.stream<{
      prompt_tokens: { name: string; dtype: string; shape: number[]; data: Buffer } | null;
      step: number;
      tokens: number[];
      texts: string[];
      finished: boolean[];
    }>("Generate", request, opts)) {
      if (r.prompt_tokens) {
        yield { promptTokens: tensorFromMessage(r.prompt_tokens) };
        if (!r.tokens.length) continue;
      }
      yield { step: r.step, tokens: r.tokens.map(Number), texts: r.texts, finished: r.finished };
    }
  }
}

function modelMatches(want: string, info: ModelInfo): boolean {
  const dir = info.model_dir.replace(/\/+$/, "");
  const base = dir.split("/").pop() ?? "";
  return want === dir || want === base || dir.endsWith(`/${want}`);
}

/**
 * Connects to the worker at `address` ("host:port"): waits until it serves (opts.waitMs,
 * default 60 s), checks its Worker API version (majors 1 and 2), and, with opts.model, that
 * it serves that model. TLS and token as the CLI's --tls-ca / --tls-cert / --tls-key / --token,
 * defaulting to LENSGRID_TLS_CA, LENSGRID_TLS_CERT, LENSGRID_TLS_KEY, LENSGRID_TOKEN.
 */
export async function connect(address: string, opts: ConnectOptions = {}): Promise<Worker> {
  const worker = new Worker(address, opts);
  try {
    const info = await worker.waitReady(opts.waitMs ?? 60000);
    checkApiVersion(info.api_version, [1, 0], "connect", address);
    if (opts.model !== undefined && !modelMatches(opts.model, info)) {
      throw new LensgridError(StatusCode.FAILED_PRECONDITION, `the worker at ${address} serves ${JSON.stringify(info.model_dir)}, not ${JSON.stringify(opts.model)}`, {
        address,
      });
    }
  } catch (e) {
    worker.close();
    throw e;
  }
  return worker;
}
