// The Coordinator client: circuit searches sharded over workers
// (proto/lensgrid/v1/coordinator.proto), as the Python client's lensgrid.Coordinator.
import * as fs from "node:fs";
import * as path from "node:path";
import { randomUUID } from "node:crypto";
import { CallOptions, Connection, ConnectionOptions } from "./channel";
import { LensgridError, StatusCode, invalidInput } from "./errors";
import { enumValues, serviceClient } from "./proto";
import { fromProtoJSON } from "./json";
import { Tensor, TensorAssembler, describe } from "./wire";

export type JobStateName = "queued" | "running" | "succeeded" | "failed" | "cancelled";

/** JobEvent as it comes back: kind is the enum's name ("SHARD_DONE", "JOB_SUCCEEDED", ...). */
export interface JobEvent {
  seq: number;
  kind: string;
  shards_done: number;
  shards_total: number;
  shards_per_s: number;
  eta_s: number;
  shard_id: number;
  worker_id: string;
  message: string;
  unix_ms: number;
}

/** JobStatus as it comes back (proto field names; state is "JOB_RUNNING" etc.). */
export interface JobStatus {
  job_id: string;
  state: string;
  shards_done: number;
  shards_total: number;
  error: string;
  error_code: number;
  method: string;
  model_id: string;
  label: string;
  created_unix_ms: number;
  shards_per_s: number;
  eta_s: number;
  last_event_seq: number;
  store_error: string;
  spec: Record<string, unknown> | null;
  prepared: boolean;
  n_prompts: number;
  n_pos: number;
  first_prompt: Record<string, unknown> | null;
  first_prompt_str_tokens: string[];
  owner: string;
  request_id: string;
  finished_unix_ms: number;
  [field: string]: unknown;
}

export interface WorkerInfo {
  worker_id: string;
  name: string;
  model_id: string;
  weights_sha256: string;
  device: string;
  capacity: number;
  leases: number;
  shards_done: number;
  last_seen_unix_ms: number;
  alive: boolean;
  address: string;
  model: Record<string, unknown> | null;
  tokenizer_sha256: string;
}

const FINAL_STATES = new Set(["JOB_SUCCEEDED", "JOB_FAILED", "JOB_CANCELLED"]);
const FINAL_EVENTS = new Set(["JOB_SUCCEEDED", "JOB_FAILED", "JOB_CANCELLED"]);

/** "JOB_SUCCEEDED" -> "succeeded". */
export function stateName(state: string): string {
  return state.startsWith("JOB_") ? state.slice(4).toLowerCase() : state.toLowerCase();
}

/**
 * The CLI's default metric per built-in dataset (DefaultMetric in client/search_command.cc):
 * what a search measures when no metric is given.
 */
export const DATASET_DEFAULT_METRICS: Readonly<Record<string, string>> = { "greater-than": "prob-diff", induction: "loss" };
export const FALLBACK_METRIC = "logit-diff";

export function defaultMetric(dataset: string): string {
  return DATASET_DEFAULT_METRICS[dataset] ?? FALLBACK_METRIC;
}

/** A CLI name ("ablate-heads", "logit-diff", "zero") as its enum value name ("METHOD_ABLATE_HEADS"). */
function enumName(fullEnum: string, prefix: string, name: string | undefined, what: string): string {
  const values = enumValues(fullEnum).filter((v) => v.startsWith(prefix));
  if (name === undefined || name === null || name === "") return enumValues(fullEnum)[0];
  if (typeof name !== "string") throw invalidInput(`${what} must be a string, got ${describe(name)}`);
  const key = prefix + name.toUpperCase().replace(/-/g, "_");
  if (values.includes(key)) return key;
  if (values.includes(name)) return name; // already the enum's name
  const spelled = values.map((v) => v.slice(prefix.length).toLowerCase().replace(/_/g, "-"));
  throw invalidInput(`unknown ${what} ${JSON.stringify(name)}; one of ${spelled.join(", ")}`);
}

export interface SearchOptions extends CallOptions {
  /** A model id the workers serve (e.g. "lensgrid-tiny", "gpt2"). */
  model: string;
  /** A built-in dataset (induction, ioi, gender-bias, greater-than) or a .jsonl file's path. */
  dataset: string;
  /** The CLI's method name: "ablate-heads", "patch-heads", "detect-heads", "eap", ... */
  method: string;
  /** The CLI's metric name ("logit-diff", "loss", ...); default the dataset's (defaultMetric). */
  metric?: string;
  /** "zero" (default), "mean", "resample". */
  ablation?: string;
  /** Prompts to build (built-ins; 0 = 16) or to read at most (JSONL; 0 = all). */
  nPrompts?: number;
  seed?: number | bigint;
  /** induction: random tokens per half (0 = 16). */
  seqLen?: number;
  promptsPerShard?: number;
  componentsPerShard?: number;
  maxAttempts?: number;
  /** Only workers with these weights run the job. */
  weightsSha256?: string;
  label?: string;
  /** Idempotency key (default a random UUID): the same id returns the same job. */
  requestId?: string;
  /** eap-ig's integrated-gradient steps (0 = 5). */
  igSteps?: number;
  /** path-patch's receivers ("L1H1.k", "MLP2", "logits"). */
  receivers?: readonly string[];
  /** search(): called with every event while it waits. */
  onEvent?: (event: JobEvent) => void;
}

function nonNegInt(v: unknown, what: string): number {
  if (v === undefined || v === null) return 0;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw invalidInput(`${what} must be an integer >= 0, got ${describe(v)}`);
  return v;
}

/** The JobSpec message of a search (the Python client's and the CLI's). */
export function jobSpec(o: SearchOptions): Record<string, unknown> {
  if (typeof o !== "object" || o === null) throw invalidInput("search options must be an object {model, dataset, method, ...}");
  if (typeof o.model !== "string" || !o.model) throw invalidInput("model must be the model id the workers serve, e.g. \"lensgrid-tiny\"");
  if (typeof o.dataset !== "string" || !o.dataset) throw invalidInput("dataset must be a built-in dataset's name or a .jsonl path");
  if (typeof o.method !== "string" || !o.method) throw invalidInput("method must be a search method's name, e.g. \"ablate-heads\"");
  const metric = o.metric ?? defaultMetric(o.dataset);
  const dataset: Record<string, unknown> = {
    n_prompts: nonNegInt(o.nPrompts, "nPrompts"),
    seq_len: nonNegInt(o.seqLen, "seqLen"),
    seed: typeof o.seed === "bigint" ? o.seed.toString() : nonNegInt(o.seed, "seed"),
  };
  if (o.dataset.endsWith(".jsonl") || o.dataset.includes(path.sep) || o.dataset.includes("/")) {
    try {
      dataset.jsonl = fs.readFileSync(o.dataset);
    } catch (e) {
      throw invalidInput(`dataset ${o.dataset}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    dataset.name = path.basename(o.dataset);
  } else {
    dataset.name = o.dataset;
  }
  const receivers = o.receivers ? [...o.receivers] : [];
  receivers.forEach((r, i) => {
    if (typeof r !== "string") throw invalidInput(`receivers[${i}] must be a string, got ${describe(r)}`);
  });
  return {
    model_id: o.model,
    weights_sha256: o.weightsSha256 ?? "",
    method: enumName("lensgrid.v1.SearchMethod", "METHOD_", o.method, "method"),
    metric: enumName("lensgrid.v1.SearchMetric", "METRIC_", metric, "metric"),
    ablation: enumName("lensgrid.v1.Ablation", "ABLATION_", o.ablation, "ablation"),
    dataset,
    prompts_per_shard: nonNegInt(o.promptsPerShard, "promptsPerShard"),
    components_per_shard: nonNegInt(o.componentsPerShard, "componentsPerShard"),
    max_attempts: nonNegInt(o.maxAttempts, "maxAttempts"),
    label: o.label ?? "",
    circuit: { ig_steps: nonNegInt(o.igSteps, "igSteps"), receivers },
  };
}

/** One grid component, ranked by |value|. */
export interface RankedComponent {
  grid: string;
  index: number[];
  /** "L1H3" for [layer, head], "L1H3@4" for [layer, pos, head], else "axis=i ...". */
  label: string;
  value: number;
}

function label(axes: string[], index: number[]): string {
  const d: Record<string, number> = {};
  axes.forEach((a, i) => (d[a] = index[i]));
  const set = [...axes].sort().join(",");
  if (set === "head,layer") return `L${d.layer}H${d.head}`;
  if (set === "head,layer,pos") return `L${d.layer}H${d.head}@${d.pos}`;
  return axes.map((a, i) => `${a}=${index[i]}`).join(" ");
}

/**
 * A finished job's result: grids (the mean over prompts, shaped as the ResultGrid says),
 * their axes, every tensor sent ("<grid>.per_prompt", "baseline", "reference"), the job's
 * JobStatus, and every component of every grid ranked by |value|.
 */
export class SearchResult {
  readonly status: JobStatus;
  readonly grids: Map<string, Tensor>;
  readonly axes: Map<string, string[]>;
  readonly tensors: Map<string, Tensor>;
  readonly ranked: RankedComponent[];

  constructor(status: JobStatus, grids: Map<string, Tensor>, axes: Map<string, string[]>, tensors: Map<string, Tensor>) {
    this.status = status;
    this.grids = grids;
    this.axes = axes;
    this.tensors = tensors;
    const ranked: RankedComponent[] = [];
    for (const [name, g] of grids) {
      const strides = g.strides;
      const values = g.data as Float32Array;
      for (let flat = 0; flat < values.length; flat++) {
        const index = g.shape.map((n, i) => Math.floor(flat / strides[i]) % n);
        ranked.push({ grid: name, index, label: label(axes.get(name) ?? [], index), value: values[flat] });
      }
    }
    // by |value|, largest first; ties keep grid order (stable sort)
    ranked.sort((a, b) => Math.abs(b.value) - Math.abs(a.value));
    this.ranked = ranked;
  }

  /** The k components with the largest |value| (of one grid, or of all). */
  top(k = 10, grid?: string): RankedComponent[] {
    return this.ranked.filter((r) => grid === undefined || r.grid === grid).slice(0, k);
  }
}

interface ResultPart {
  part?: "header" | "chunk";
  header?: { job: JobStatus; grids: { name: string; axes: string[]; shape: number[] }[] };
  chunk?: { name: string; dtype: string; shape: number[]; total_bytes: number; offset: number; data: Buffer };
}

export interface WatchOptions {
  /** Events with seq > afterSeq (default 0: from the start). */
  afterSeq?: number;
  signal?: AbortSignal;
  /** Reconnect for this long when the coordinator is unreachable, resuming at the last seq (default 120000; 0: never). */
  reconnectForMs?: number;
  /** Called before each reconnect, with the error that ended the stream. */
  onReconnect?: (error: LensgridError) => void;
}

/** A job on a coordinator. */
export class Job {
  readonly id: string;
  readonly coordinator: Coordinator;

  constructor(coordinator: Coordinator, id: string) {
    this.coordinator = coordinator;
    this.id = id;
  }

  status(opts: CallOptions = {}): Promise<JobStatus> {
    return this.coordinator.connection.unary<JobStatus>("GetJob", { job_id: this.id }, opts);
  }

  /** "queued" | "running" | "succeeded" | "failed" | "cancelled". */
  async state(opts: CallOptions = {}): Promise<string> {
    return stateName((await this.status(opts)).state);
  }

  /**
   * The job's numbered events (seq 1, 2, ... without gaps), from afterSeq until the job is
   * final and every event has been sent. Resumable: pass the last seq seen as afterSeq; and
   * when the coordinator is unreachable for a while (a restart), it reconnects by itself and
   * resumes after the last event it yielded, never yielding one twice.
   */
  async *watch(opts: WatchOptions = {}): AsyncGenerator<JobEvent> {
    let after = nonNegInt(opts.afterSeq, "afterSeq");
    const reconnectFor = opts.reconnectForMs ?? 120000;
    let unreachableSince = -1;
    let backoff = 100;
    for (;;) {
      let progressed = false;
      try {
        // no deadline: a job's events come for as long as it runs
        for await (const ev of this.coordinator.connection.stream<JobEvent>("WatchJob", { job_id: this.id, after_seq: after }, { signal: opts.signal, timeoutMs: Infinity })) {
          if (ev.seq <= after) continue; // never twice
          after = ev.seq;
          progressed = true;
          yield ev;
        }
        return; // the stream ends when the job is final
      } catch (e) {
        const err = e as LensgridError;
        const transient =
          err.origin === "server" &&
          (err.code === StatusCode.UNAVAILABLE || err.code === StatusCode.DEADLINE_EXCEEDED || err.code === StatusCode.INTERNAL);
        if (!transient || reconnectFor <= 0 || opts.signal?.aborted) throw err;
        const now = Date.now();
        if (progressed || unreachableSince < 0) {
          unreachableSince = now;
          backoff = 100;
        }
        if (now - unreachableSince > reconnectFor) {
          throw new LensgridError(err.code, `lost the coordinator for more than ${reconnectFor} ms: ${err.details}`, {
            address: err.address,
            method: "WatchJob",
            origin: "server",
          });
        }
        opts.onReconnect?.(err);
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  /**
   * Waits until the job is final, calling onEvent with each event; resolves with the final
   * JobStatus when it succeeded. A failed job throws LensgridError with the job's own code
   * and error; a cancelled one CANCELLED.
   */
  async wait(opts: { onEvent?: (event: JobEvent) => void; signal?: AbortSignal } = {}): Promise<JobStatus> {
    for await (const ev of this.watch({ signal: opts.signal })) {
      opts.onEvent?.(ev);
      if (FINAL_EVENTS.has(ev.kind)) break;
    }
    const status = await this.status();
    if (status.state === "JOB_FAILED") {
      throw new LensgridError(status.error_code || StatusCode.UNKNOWN, `job ${this.id} failed: ${status.error}`, {
        address: this.coordinator.address,
        details: status.error,
        origin: "server",
      });
    }
    if (status.state === "JOB_CANCELLED") {
      throw new LensgridError(StatusCode.CANCELLED, `job ${this.id} was cancelled`, { address: this.coordinator.address, origin: "server" });
    }
    if (!FINAL_STATES.has(status.state)) {
      throw new LensgridError(StatusCode.INTERNAL, `job ${this.id}: the event stream ended while the job is ${stateName(status.state)}`, {
        address: this.coordinator.address,
      });
    }
    return status;
  }

  cancel(opts: CallOptions = {}): Promise<JobStatus> {
    return this.coordinator.connection.unary<JobStatus>("CancelJob", { job_id: this.id }, opts);
  }

  /** Deletes a finished job with its result and events (FAILED_PRECONDITION while it runs). */
  async delete(opts: CallOptions = {}): Promise<void> {
    await this.coordinator.connection.unary("DeleteJob", { job_id: this.id }, opts);
  }

  /** The finished job's result (FAILED_PRECONDITION until it has succeeded). */
  async result(opts: CallOptions = {}): Promise<SearchResult> {
    const assembler = new TensorAssembler();
    let header: ResultPart["header"] | null = null;
    const fail = (why: string) => new LensgridError(StatusCode.DATA_LOSS, `job ${this.id}: ${why}`, { address: this.coordinator.address, method: "GetResult" });
    for await (const part of this.coordinator.connection.stream<ResultPart>("GetResult", { job_id: this.id }, opts)) {
      if (part.part === "header" && part.header) {
        if (header) throw fail("the result had two headers");
        header = part.header;
      } else if (part.part === "chunk" && part.chunk) {
        if (!header) throw fail("a tensor chunk came before the result's header");
        assembler.add(part.chunk);
      } else {
        throw fail("a result message with neither header nor chunk");
      }
    }
    if (!header) throw fail("the result had no header");
    const tensors = assembler.finish();
    const grids = new Map<string, Tensor>();
    const axes = new Map<string, string[]>();
    for (const g of header.grids) {
      const t = tensors.get(g.name);
      if (!t) throw fail(`grid ${g.name} is missing from the result (it has ${JSON.stringify([...tensors.keys()])})`);
      const shape = g.shape.map(Number);
      const n = shape.reduce((a, b) => a * b, 1);
      if (n !== t.size) throw fail(`grid ${g.name} has ${t.size} values for shape [${shape}]`);
      grids.set(g.name, new Tensor(t.name, t.dtype, t.wireDtype, shape, t.data));
      axes.set(g.name, [...g.axes]);
    }
    return new SearchResult(header.job, grids, axes, tensors);
  }
}

export interface CoordinatorConnectOptions extends ConnectionOptions {
  /** How long connectCoordinator() waits for the channel to connect (default 20000). */
  waitMs?: number;
}

/** A connection to a lensgrid coordinator. Every method throws LensgridError on failure. */
export class Coordinator {
  readonly address: string;
  /** @internal */
  readonly connection: Connection;

  constructor(address: string, options: ConnectionOptions = {}) {
    this.connection = new Connection(serviceClient("Coordinator"), address, options);
    this.address = address;
  }

  close(): void {
    this.connection.close();
  }

  /** Submits a job: a search's options, or a JobSpec message (proto field names). */
  async submit(spec: SearchOptions | Record<string, unknown>, opts: CallOptions & { requestId?: string } = {}): Promise<Job> {
    const isOptions = typeof (spec as SearchOptions).method === "string" && typeof (spec as SearchOptions).dataset === "string";
    // a JobSpec message (or its protobuf JSON) is checked: an unknown field is an error, not dropped
    const message = isOptions ? jobSpec(spec as SearchOptions) : fromProtoJSON("lensgrid.v1.JobSpec", spec, "spec");
    const requestId = opts.requestId ?? (isOptions ? (spec as SearchOptions).requestId : undefined) ?? randomUUID();
    const resp = await this.connection.unary<{ job_id: string; shards_total: number }>(
      "SubmitJob",
      { spec: message, request_id: requestId },
      { timeoutMs: opts.timeoutMs ?? (isOptions ? (spec as SearchOptions).timeoutMs : undefined), signal: opts.signal },
    );
    return new Job(this, resp.job_id);
  }

  /**
   * Submits a search, waits for it (onEvent sees every event) and returns its result.
   * timeoutMs bounds each call (submitting, fetching the result), not the wait; signal aborts
   * the wait (the job goes on: cancel() it).
   */
  async search(o: SearchOptions): Promise<SearchResult> {
    const job = await this.submit(o);
    await job.wait({ onEvent: o.onEvent, signal: o.signal });
    return job.result({ timeoutMs: o.timeoutMs, signal: o.signal });
  }

  job(id: string): Job {
    if (typeof id !== "string" || !id) throw invalidInput("a job id is a non-empty string");
    return new Job(this, id);
  }

  /** Every job the caller may see (all pages), optionally by state ("succeeded", ...) and owner. */
  async jobs(filter: { state?: string; owner?: string } & CallOptions = {}): Promise<JobStatus[]> {
    const state = filter.state ? enumName("lensgrid.v1.JobState", "JOB_", filter.state, "state") : "JOB_STATE_UNSPECIFIED";
    const out: JobStatus[] = [];
    let token = "";
    do {
      const resp = await this.connection.unary<{ jobs: JobStatus[]; next_page_token: string }>(
        "ListJobs",
        { page_size: 100, page_token: token, state, owner: filter.owner ?? "" },
        filter,
      );
      out.push(...resp.jobs);
      token = resp.next_page_token;
    } while (token);
    return out;
  }

  /** The workers the coordinator knows (all pages), optionally only live ones or one model's. */
  async workers(filter: { aliveOnly?: boolean; model?: string } & CallOptions = {}): Promise<WorkerInfo[]> {
    const out: WorkerInfo[] = [];
    let token = "";
    do {
      const resp = await this.connection.unary<{ workers: WorkerInfo[]; next_page_token: string }>(
        "ListWorkers",
        { page_size: 100, page_token: token, alive_only: !!filter.aliveOnly, model_id: filter.model ?? "" },
        filter,
      );
      out.push(...resp.workers);
      token = resp.next_page_token;
    } while (token);
    return out;
  }

  cancel(jobId: string, opts: CallOptions = {}): Promise<JobStatus> {
    return this.job(jobId).cancel(opts);
  }
}

/**
 * Connects to the coordinator at `address`: waits until the channel is up (opts.waitMs,
 * default 20 s). TLS and token as connect()'s (and the same LENSGRID_* variables).
 */
export async function connectCoordinator(address: string, opts: CoordinatorConnectOptions = {}): Promise<Coordinator> {
  const c = new Coordinator(address, opts);
  try {
    await c.connection.waitForReady(opts.waitMs ?? 20000);
  } catch (e) {
    c.close();
    throw e;
  }
  return c;
}
