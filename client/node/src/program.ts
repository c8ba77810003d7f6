// Hook programs (proto/lensgrid/v1/program.proto) built in JavaScript: what a TransformerLens
// hook function does, as data the worker validates and runs inside the forward pass.
//
//   const p = program("blocks.1.attn.hook_z");
//   const z = p.activation();                        // [batch, pos, head, d_head]
//   p.save("z_norm", z.norm(-1));                    // saved:z_norm, [batch, pos, head]
//   p.output(z.write([":", -1, 3], 0));              // z[:, -1, 3] = 0
//   await worker.runWithInterventions("Hello", { programs: [p] });
//
// Every method adds one node and returns its Value; operands are Values, numbers (constant
// nodes) or nested number arrays (literal values). Regions are Python's act[...] written as
// an array, one entry per axis: ":" (all), an integer (that index; the axis is dropped),
// {start, stop, step} (a slice), [i, j] (those indices), "..." (as many whole axes as needed).
import { invalidInput } from "./errors";
import { HookName, hookName } from "./names";
import { TensorInput, Tensor, toF32Tensor, WireTensor, describe, nestedShape, flatten } from "./wire";

/** The HookProgram message as this client sends it (proto field names). */
export interface HookProgramMessage {
  hook: string;
  nodes: ProgramNodeMessage[];
  output: string;
  saves: { name: string; node: string }[];
}
export type ProgramNodeMessage = { id: string } & Record<string, unknown>;

export interface AxisSliceInput {
  start?: number | null;
  stop?: number | null;
  step?: number;
}
/** One axis of a region: ":" | index | {start, stop, step} | [indices] | "...". */
export type AxisInput = ":" | "..." | number | AxisSliceInput | readonly number[];
export type RegionInput = readonly AxisInput[];

export type Operand = Value | number | readonly unknown[];

type AxisSelectorMessage =
  | { all: true }
  | { at: number }
  | { slice: { start?: number; stop?: number; step: number } }
  | { list: { indices: number[] } }
  | { ellipsis: true };

function checkInt(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw invalidInput(`${what}: ${describe(v)} is not an integer`);
  return v;
}

/** A region (see the file comment) as AxisSelector messages. */
export function region(items: RegionInput, what = "region"): AxisSelectorMessage[] {
  if (!Array.isArray(items)) throw invalidInput(`${what}: expected an array of axis selectors, got ${describe(items)}`);
  let ellipses = 0;
  return items.map((item, i) => {
    const w = `${what}[${i}]`;
    if (item === ":") return { all: true };
    if (item === "...") {
      if (++ellipses > 1) throw invalidInput(`${w}: "..." may appear once in a region`);
      return { ellipsis: true };
    }
    if (typeof item === "number") return { at: checkInt(item, w) };
    if (Array.isArray(item)) {
      if (item.length === 0) throw invalidInput(`${w}: an index list needs at least one index`);
      return { list: { indices: item.map((x, j) => checkInt(x, `${w}[${j}]`)) } };
    }
    if (typeof item === "object" && item !== null) {
      const s = item as AxisSliceInput;
      const extra = Object.keys(s).filter((k) => !["start", "stop", "step"].includes(k));
      if (extra.length) throw invalidInput(`${w}: a slice has start, stop and step only; got ${extra.join(", ")}`);
      const out: { start?: number; stop?: number; step: number } = { step: 1 };
      if (s.start !== undefined && s.start !== null) out.start = checkInt(s.start, `${w}.start`);
      if (s.stop !== undefined && s.stop !== null) out.stop = checkInt(s.stop, `${w}.stop`);
      if (s.step !== undefined) {
        out.step = checkInt(s.step, `${w}.step`);
        if (out.step <= 0) throw invalidInput(`${w}.step must be > 0, got ${out.step}`);
      }
      return { slice: out };
    }
    throw invalidInput(`${w}: expected ":", "...", an integer, an index list or {start, stop, step}; got ${describe(item)}`);
  });
}

function axesList(axes: number | readonly number[] | undefined, what: string): number[] {
  if (axes === undefined) return [];
  const list = typeof axes === "number" ? [axes] : [...axes];
  return list.map((a, i) => checkInt(a, `${what}[${i}]`));
}

export interface ReduceOptions {
  keepdim?: boolean;
}

/** A node's value inside a ProgramBuilder; every method adds a node and returns its Value. */
export class Value {
  /** The node's id in the program. */
  readonly id: string;
  readonly program: ProgramBuilder;

  constructor(program: ProgramBuilder, id: string) {
    this.program = program;
    this.id = id;
  }

  private ew(op: string, ...others: Operand[]): Value {
    const inputs = [this.id, ...others.map((o) => this.program.operand(o, `${op.toLowerCase()} operand`).id)];
    return this.program.node({ elementwise: { op, inputs } });
  }

  add(x: Operand): Value { return this.ew("ADD", x); }
  sub(x: Operand): Value { return this.ew("SUB", x); }
  mul(x: Operand): Value { return this.ew("MUL", x); }
  div(x: Operand): Value { return this.ew("DIV", x); }
  pow(x: Operand): Value { return this.ew("POW", x); }
  maximum(x: Operand): Value { return this.ew("MAXIMUM", x); }
  minimum(x: Operand): Value { return this.ew("MINIMUM", x); }
  neg(): Value { return this.ew("NEG"); }
  abs(): Value { return this.ew("ABS"); }
  exp(): Value { return this.ew("EXP"); }
  log(): Value { return this.ew("LOG"); }
  sqrt(): Value { return this.ew("SQRT"); }
  tanh(): Value { return this.ew("TANH"); }
  relu(): Value { return this.ew("RELU"); }
  sigmoid(): Value { return this.ew("SIGMOID"); }
  /** Comparisons give bool values (arithmetic reads them as 0 / 1). */
  lt(x: Operand): Value { return this.ew("LT", x); }
  le(x: Operand): Value { return this.ew("LE", x); }
  gt(x: Operand): Value { return this.ew("GT", x); }
  ge(x: Operand): Value { return this.ew("GE", x); }
  eq(x: Operand): Value { return this.ew("EQ", x); }
  ne(x: Operand): Value { return this.ew("NE", x); }
  /** Clamped to [min, max] (either may be omitted). */
  clamp(min?: number | Value, max?: number | Value): Value {
    let v: Value = this;
    if (min !== undefined) v = v.maximum(min);
    if (max !== undefined) v = v.minimum(max);
    return v;
  }

  /** this[region], e.g. z.index([":", ":", 3]) is z[:, :, 3]. */
  index(r: RegionInput): Value {
    return this.program.node({ index: { input: this.id, region: region(r, "index region") } });
  }
  /** Alias of index(). */
  select(r: RegionInput): Value {
    return this.index(r);
  }
  /** A copy of this with this[region] = value (broadcast): z.write([":", -1, 3], 0). */
  write(r: RegionInput, value: Operand): Value {
    const v = this.program.operand(value, "write value");
    return this.program.node({ write: { target: this.id, value: v.id, region: region(r, "write region") } });
  }
  reshape(shape: readonly number[]): Value {
    const s = axesList(shape, "reshape shape");
    if (s.filter((d) => d === -1).length > 1) throw invalidInput("reshape: one -1 at most");
    return this.program.node({ reshape: { input: this.id, shape: s } });
  }
  permute(axes: readonly number[]): Value {
    return this.program.node({ permute: { input: this.id, axes: axesList(axes, "permute axes") } });
  }
  /** torch.matmul(this, x). */
  matmul(x: Operand): Value {
    return this.program.node({ matmul: { a: this.id, b: this.program.operand(x, "matmul operand").id } });
  }
  private reduce(op: string, axes: number | readonly number[] | undefined, keepdim: boolean, p = 0): Value {
    const node: Record<string, unknown> = { op, input: this.id, axes: axesList(axes, `${op} axes`), keepdim };
    if (p) node.p = p;
    return this.program.node({ reduce: node });
  }
  /** Over `axes` (a number, a list, or none: every axis). */
  sum(axes?: number | readonly number[], opts: ReduceOptions = {}): Value { return this.reduce("REDUCE_SUM", axes, !!opts.keepdim); }
  mean(axes?: number | readonly number[], opts: ReduceOptions = {}): Value { return this.reduce("REDUCE_MEAN", axes, !!opts.keepdim); }
  max(axes?: number | readonly number[], opts: ReduceOptions = {}): Value { return this.reduce("REDUCE_MAX", axes, !!opts.keepdim); }
  min(axes?: number | readonly number[], opts: ReduceOptions = {}): Value { return this.reduce("REDUCE_MIN", axes, !!opts.keepdim); }
  /** The vector p-norm (default 2) over `axes`. */
  norm(axes?: number | readonly number[], opts: ReduceOptions & { p?: number } = {}): Value {
    if (opts.p !== undefined && !(opts.p > 0)) throw invalidInput(`norm: p must be > 0, got ${opts.p}`);
    return this.reduce("REDUCE_NORM", axes, !!opts.keepdim, opts.p ?? 0);
  }
  softmax(axis: number): Value {
    return this.program.node({ softmax: { input: this.id, axis: checkInt(axis, "softmax axis"), log: false } });
  }
  logSoftmax(axis: number): Value {
    return this.program.node({ softmax: { input: this.id, axis: checkInt(axis, "logSoftmax axis"), log: true } });
  }
  /** Along the last axis: the component of this along `direction`. */
  projectOnto(direction: Operand): Value {
    return this.program.node({ project: { mode: "ONTO", input: this.id, direction: this.program.operand(direction, "direction").id } });
  }
  /** Along the last axis: this minus its component along `direction`. */
  projectOut(direction: Operand): Value {
    return this.program.node({ project: { mode: "OUT", input: this.id, direction: this.program.operand(direction, "direction").id } });
  }
  /** Saves this value as "saved:NAME" (returns this, for chaining). */
  save(name: string): Value {
    this.program.save(name, this);
    return this;
  }
}

/** Builds one HookProgram; see the file comment. */
export class ProgramBuilder {
  readonly hook: string;
  private readonly nodes: ProgramNodeMessage[] = [];
  private readonly saves: { name: string; node: string }[] = [];
  private outputId = "";

  constructor(hook: HookName) {
    const h = hookName(hook);
    if (typeof h !== "string" || h === "") throw invalidInput("program: the hook name must be a non-empty string");
    this.hook = h;
  }

  /** @internal Adds a node; returns its Value. */
  node(op: Record<string, unknown>): Value {
    const id = `n${this.nodes.length}`;
    this.nodes.push({ id, ...op });
    return new Value(this, id);
  }

  /** @internal A Value of this program for an operand (numbers and arrays become nodes). */
  operand(x: Operand, what: string): Value {
    if (x instanceof Value) {
      if (x.program !== this) {
        throw invalidInput(`${what}: node ${x.id} belongs to the program on ${x.program.hook}, not this one on ${this.hook}; read it with saved()`);
      }
      return x;
    }
    if (typeof x === "number") return this.constant(x);
    if (Array.isArray(x)) return this.values(x);
    throw invalidInput(`${what}: expected a Value, a number or nested arrays of numbers; got ${describe(x)}`);
  }

  /** The activation at the program's hook, as it arrives. */
  activation(): Value {
    return this.node({ activation: {} });
  }
  /** Alias of activation(). */
  input(): Value {
    return this.activation();
  }
  /**
   * The activation at another hook: this run's (which must come before this program's hook),
   * or with fromPatchRun the patch run's (RunWithInterventions' patchInput), at any hook.
   */
  hookValue(name: HookName, opts: { fromPatchRun?: boolean } = {}): Value {
    return this.node({ hook: { name: hookName(name), from_patch_run: !!opts.fromPatchRun } });
  }
  /** The patch run's activation at `name` (default: this program's hook). */
  patchValue(name?: HookName): Value {
    return this.hookValue(name ?? this.hook, { fromPatchRun: true });
  }
  /** A value a program that ran earlier saved. */
  saved(name: string): Value {
    if (typeof name !== "string" || !name) throw invalidInput("saved(): a saved value's name is a non-empty string");
    return this.node({ saved: name });
  }
  /** A weight by TransformerLens name: "W_U", "blocks.0.attn.W_O", "W_Q" (stacked), ... */
  weight(name: string): Value {
    if (typeof name !== "string" || !name) throw invalidInput("weight(): a weight's name is a non-empty string");
    return this.node({ weight: name });
  }
  /** A 0-d value (NaN refused). */
  constant(x: number): Value {
    if (typeof x !== "number" || Number.isNaN(x)) throw invalidInput(`constant: ${describe(x)} is not a number (NaN is refused)`);
    return this.node({ constant: x });
  }
  /** Numbers as a literal (LiteralValues): nested arrays, or {shape, values} row-major. */
  values(v: readonly unknown[] | { shape: readonly number[]; values: readonly number[] }): Value {
    let shape: number[];
    let flat: number[];
    if (Array.isArray(v)) {
      shape = nestedShape(v);
      flat = flatten(v, shape, "values") as number[];
    } else {
      const o = v as { shape: readonly number[]; values: readonly number[] };
      shape = axesList(o.shape, "values shape");
      flat = [...o.values];
      const n = shape.reduce((a, b) => a * b, 1);
      if (flat.length !== n) throw invalidInput(`values: ${flat.length} values for shape [${shape.join(", ")}] (${n} expected)`);
    }
    flat.forEach((x, i) => {
      if (typeof x !== "number" || Number.isNaN(x)) throw invalidInput(`values: element ${i} is ${describe(x)} (numbers only, NaN refused)`);
    });
    return this.node({ values: { shape, values: flat } });
  }
  /** A literal tensor (sent as F32): a Float32Array with a shape, a Tensor, or nested arrays. */
  literal(t: TensorInput): Value {
    const wire: WireTensor = t instanceof Tensor ? toF32Tensor({ data: t.data, shape: t.shape }, "literal") : toF32Tensor(t, "literal");
    return this.node({ literal: wire });
  }
  /** ifTrue where condition (bool) else ifFalse, broadcasting the three. */
  where(condition: Value, ifTrue: Operand, ifFalse: Operand): Value {
    return this.node({
      where: {
        condition: this.operand(condition, "where condition").id,
        if_true: this.operand(ifTrue, "where ifTrue").id,
        if_false: this.operand(ifFalse, "where ifFalse").id,
      },
    });
  }
  /** torch.einsum with an explicit output ("bphd,hdm->bphm"), 1 to 3 inputs. */
  einsum(equation: string, ...inputs: Operand[]): Value {
    if (typeof equation !== "string" || !equation.includes("->")) {
      throw invalidInput(`einsum: the equation needs an explicit output ("ab,bc->ac"); got ${describe(equation)}`);
    }
    if (inputs.length < 1 || inputs.length > 3) throw invalidInput(`einsum: 1 to 3 inputs, got ${inputs.length}`);
    return this.node({ einsum: { equation, inputs: inputs.map((x, i) => this.operand(x, `einsum input ${i}`).id) } });
  }
  /** Returns `value` with the run as "saved:NAME" (and readable by later programs via saved()). */
  save(name: string, value: Value): this {
    if (typeof name !== "string" || !name) throw invalidInput("save(): a saved value needs a non-empty name");
    if (this.saves.some((s) => s.name === name)) throw invalidInput(`save(): ${JSON.stringify(name)} is saved twice by the program on ${this.hook}`);
    this.saves.push({ name, node: this.operand(value, `save ${name}`).id });
    return this;
  }
  /** The value that replaces the activation (floating point, the activation's exact shape). */
  output(value: Value): this {
    if (this.outputId) throw invalidInput(`output(): the program on ${this.hook} already has an output (${this.outputId})`);
    this.outputId = this.operand(value, "output").id;
    return this;
  }
  /** The HookProgram message. */
  build(): HookProgramMessage {
    if (!this.outputId && !this.saves.length) {
      throw invalidInput(`the program on ${this.hook} neither saves a value nor replaces the activation (call save() or output())`);
    }
    return {
      hook: this.hook,
      nodes: this.nodes.map((n) => clone(n) as ProgramNodeMessage),
      output: this.outputId,
      saves: this.saves.map((s) => ({ ...s })),
    };
  }
}

function clone(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(clone);
  if (ArrayBuffer.isView(v)) return v; // tensor bytes: shared, never changed
  if (typeof v === "object" && v !== null) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, clone(x)]));
  }
  return v;
}

/** A new hook program at `hook` ("blocks.0.attn.hook_z", "z0", or ["z", 0]). */
export function program(hook: HookName): ProgramBuilder {
  return new ProgramBuilder(hook);
}
