// Tensors on the wire (proto/lensgrid/v1/tensor.proto): raw little-endian row-major bytes,
// streamed as ordered TensorChunk messages. Here they become typed arrays:
//
//   F32  -> Float32Array
//   F16  -> Float32Array, widened exactly (every half value is a float32 value)
//   BF16 -> Float32Array, widened exactly (bf16 is float32's top 16 bits)
//   I64  -> BigInt64Array (no int64 is rounded; Tensor.toNumbers() converts where safe)
//   I32  -> Int32Array
//   BOOL -> Uint8Array (0 / 1)
//
// Tensor.wireDtype keeps what the server sent ("F16"), Tensor.dtype what `data` holds ("F32").
import { endianness } from "node:os";
import { LensgridError, StatusCode, invalidInput } from "./errors";

export type DType = "F32" | "F16" | "BF16" | "I64" | "I32" | "BOOL";
/** What Tensor.data holds: F16 and BF16 arrive widened to F32. */
export type DataDType = "F32" | "I64" | "I32" | "BOOL";
export type TensorData = Float32Array | BigInt64Array | Int32Array | Uint8Array;

export const DTYPE_BYTES: Record<DType, number> = { F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, BOOL: 1 };

const LITTLE_ENDIAN = endianness() === "LE";

function dataLoss(message: string): LensgridError {
  return new LensgridError(StatusCode.DATA_LOSS, message, { origin: "client" });
}

/** A tensor as this client returns it: name, dtype, shape and a typed array (row-major). */
export class Tensor {
  readonly name: string;
  /** What `data` holds. */
  readonly dtype: DataDType;
  /** What the server sent: equals dtype except "F16" / "BF16" (widened to "F32"). */
  readonly wireDtype: DType;
  readonly shape: number[];
  readonly data: TensorData;

  constructor(name: string, dtype: DataDType, wireDtype: DType, shape: number[], data: TensorData) {
    this.name = name;
    this.dtype = dtype;
    this.wireDtype = wireDtype;
    this.shape = shape;
    this.data = data;
  }

  /** Number of elements (product of shape; 1 for a 0-d tensor). */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Row-major strides in elements. */
  get strides(): number[] {
    const s = new Array<number>(this.shape.length);
    let step = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      s[i] = step;
      step *= this.shape[i];
    }
    return s;
  }

  /** The flat offset of an index (negative indices count from the end). */
  offset(...index: number[]): number {
    if (index.length !== this.shape.length) {
      throw invalidInput(
        `${this.name || "tensor"}: ${index.length} indices for a tensor of shape [${this.shape.join(", ")}]`,
      );
    }
    const strides = this.strides;
    let off = 0;
    for (let i = 0; i < index.length; i++) {
      let k = index[i];
      if (!Number.isInteger(k)) throw invalidInput(`${this.name || "tensor"}: index ${k} is not an integer`);
      if (k < 0) k += this.shape[i];
      if (k < 0 || k >= this.shape[i]) {
        throw invalidInput(
          `${this.name || "tensor"}: index ${index[i]} is out of range for axis ${i} of size ${this.shape[i]}`,
        );
      }
      off += k * strides[i];
    }
    return off;
  }

  /** One element: a number (an I64 element as a number when safe, else a bigint). */
  get(...index: number[]): number | bigint {
    const v = this.data[this.offset(...index)];
    return typeof v === "bigint" ? int64ToJs(v) : v;
  }

  /** Every element as a flat number array (I64: RangeError if one is beyond ±2^53-1). */
  toNumbers(): number[] {
    if (this.data instanceof BigInt64Array) {
      const out = new Array<number>(this.data.length);
      for (let i = 0; i < this.data.length; i++) {
        const v = this.data[i];
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
          throw new RangeError(`${this.name}: element ${i} (${v}) is not a safe JS integer`);
        }
        out[i] = Number(v);
      }
      return out;
    }
    return Array.from(this.data as ArrayLike<number>);
  }

  /** Nested arrays of numbers in the tensor's shape (a number for a 0-d tensor). */
  toNested(): unknown {
    const flat = this.toNumbers();
    const build = (axis: number, offset: number): unknown => {
      if (axis === this.shape.length) return flat[offset];
      const stride = this.strides[axis];
      const out = new Array(this.shape[axis]);
      for (let i = 0; i < this.shape[axis]; i++) out[i] = build(axis + 1, offset + i * stride);
      return out;
    };
    return build(0, 0);
  }
}

/** A bigint as a number when it is a safe integer, else unchanged. */
export function int64ToJs(v: bigint): number | bigint {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v;
}

// --- half precision -------------------------------------------------------------------------

const F16_TABLE = (() => {
  // Every one of the 65536 half values as float32 bits (exact: float32 has a wider exponent
  // and mantissa, so each half, subnormals included, is a float32 value).
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0x1f) {
      t[h] = sign | 0x7f800000 | (mant << 13); // inf, NaN (payload kept)
    } else if (exp !== 0) {
      t[h] = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    } else if (mant === 0) {
      t[h] = sign; // +-0
    } else {
      // subnormal: mant * 2^-24; normalize
      let e = -14;
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e--;
      }
      mant &= 0x3ff;
      t[h] = sign | ((e + 127) << 23) | (mant << 13);
    }
  }
  return t;
})();

/** Half-precision bits (one uint16 each) widened exactly to float32. */
export function widenF16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) u[i] = F16_TABLE[bits[i]];
  return out;
}

/** bfloat16 bits (one uint16 each) widened exactly to float32. */
export function widenBF16(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) u[i] = bits[i] << 16;
  return out;
}

// --- decoding ---------------------------------------------------------------------------------

function isDType(v: unknown): v is DType {
  return typeof v === "string" && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, v);
}

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function checkShape(name: string, shape: unknown[]): number[] {
  const out: number[] = [];
  for (const d of shape) {
    const n = typeof d === "bigint" ? Number(d) : (d as number);
    if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) {
      throw dataLoss(`tensor ${JSON.stringify(name)}: bad shape [${shape.join(", ")}]`);
    }
    out.push(n);
  }
  return out;
}

/** Copies `n` little-endian elements of `size` bytes into an aligned buffer (host order). */
function aligned(bytes: Uint8Array, size: number): ArrayBuffer {
  const buf = new ArrayBuffer(bytes.byteLength);
  const dst = new Uint8Array(buf);
  if (LITTLE_ENDIAN || size === 1) {
    dst.set(bytes);
  } else {
    for (let i = 0; i < bytes.byteLength; i += size) {
      for (let j = 0; j < size; j++) dst[i + j] = bytes[i + size - 1 - j];
    }
  }
  return buf;
}

/**
 * Raw little-endian bytes as a Tensor. `owned`: the bytes are a fresh, aligned buffer this
 * function may keep (no copy on little-endian hosts).
 */
export function tensorFromBytes(
  name: string,
  dtype: unknown,
  shapeIn: unknown[],
  bytes: Uint8Array,
  owned = false,
): Tensor {
  if (!isDType(dtype)) {
    throw dataLoss(`tensor ${JSON.stringify(name)}: unknown dtype ${JSON.stringify(dtype)}`);
  }
  const shape = checkShape(name, shapeIn);
  const want = product(shape) * DTYPE_BYTES[dtype];
  if (bytes.byteLength !== want) {
    throw dataLoss(
      `tensor ${JSON.stringify(name)}: ${bytes.byteLength} bytes for ${dtype} [${shape.join(", ")}] (${want} expected)`,
    );
  }
  const size = DTYPE_BYTES[dtype];
  const buf =
    owned && LITTLE_ENDIAN && bytes.byteOffset % 8 === 0 && bytes.byteLength === bytes.buffer.byteLength
      ? (bytes.buffer as ArrayBuffer)
      : aligned(bytes, size);
  const n = product(shape);
  switch (dtype) {
    case "F32":
      return new Tensor(name, "F32", dtype, shape, new Float32Array(buf, 0, n));
    case "F16":
      return new Tensor(name, "F32", dtype, shape, widenF16(new Uint16Array(buf, 0, n)));
    case "BF16":
      return new Tensor(name, "F32", dtype, shape, widenBF16(new Uint16Array(buf, 0, n)));
    case "I64":
      return new Tensor(name, "I64", dtype, shape, new BigInt64Array(buf, 0, n));
    case "I32":
      return new Tensor(name, "I32", dtype, shape, new Int32Array(buf, 0, n));
    case "BOOL":
      return new Tensor(name, "BOOL", dtype, shape, new Uint8Array(buf, 0, n));
  }
}

/** A Tensor message ({name, dtype, shape, data}) as a Tensor. */
export function tensorFromMessage(msg: { name?: string; dtype?: unknown; shape?: unknown[]; data?: Uint8Array }): Tensor {
  return tensorFromBytes(msg.name ?? "", msg.dtype, msg.shape ?? [], msg.data ?? new Uint8Array(0));
}

export interface ChunkMessage {
  name: string;
  dtype: unknown;
  shape: unknown[];
  total_bytes: number | bigint;
  offset: number | bigint;
  data: Uint8Array;
}

function toSafe(v: number | bigint, what: string): number {
  const n = typeof v === "bigint" ? Number(v) : v;
  if (!Number.isSafeInteger(n) || n < 0) throw dataLoss(`${what}: bad value ${String(v)}`);
  return n;
}

/**
 * Reassembles ordered TensorChunk messages into Tensors, each into ONE buffer of its
 * total_bytes allocated at its first chunk. Any chunk out of order, of another tensor, past
 * the end, or a size that disagrees with dtype x shape is a DATA_LOSS LensgridError naming the
 * tensor; finish() checks the tensors against the header's list.
 */
export class TensorAssembler {
  readonly tensors = new Map<string, Tensor>();
  private cur: { name: string; dtype: DType; shape: number[]; buf: Uint8Array; filled: number } | null = null;
  private readonly maxBytes: number;

  /** maxBytes: refuse a tensor announcing more than this (a guard against a hostile server). */
  constructor(maxBytes = 8 * 1024 * 1024 * 1024) {
    this.maxBytes = maxBytes;
  }

  add(chunk: ChunkMessage): void {
    const name = chunk.name ?? "";
    const offset = toSafe(chunk.offset ?? 0, `tensor ${JSON.stringify(name)} chunk offset`);
    const data = chunk.data ?? new Uint8Array(0);
    if (this.cur === null) {
      if (offset !== 0) {
        throw dataLoss(`stream: tensor ${JSON.stringify(name)} starts at offset ${offset}, not 0`);
      }
      if (this.tensors.has(name)) throw dataLoss(`stream: tensor ${JSON.stringify(name)} sent twice`);
      if (!isDType(chunk.dtype)) {
        throw dataLoss(`stream: tensor ${JSON.stringify(name)} has unknown dtype ${JSON.stringify(chunk.dtype)}`);
      }
      const shape = checkShape(name, chunk.shape ?? []);
      const total = toSafe(chunk.total_bytes ?? 0, `tensor ${JSON.stringify(name)} total_bytes`);
      const want = product(shape) * DTYPE_BYTES[chunk.dtype];
      if (total !== want) {
        throw dataLoss(
          `stream: tensor ${JSON.stringify(name)} announces ${total} bytes for ${chunk.dtype} [${shape.join(", ")}] (${want} expected)`,
        );
      }
      if (total > this.maxBytes) {
        throw dataLoss(`stream: tensor ${JSON.stringify(name)} announces ${total} bytes, over this client's limit of ${this.maxBytes}`);
      }
      this.cur = { name, dtype: chunk.dtype, shape, buf: new Uint8Array(new ArrayBuffer(total)), filled: 0 };
    }
    const cur = this.cur;
    if (name !== cur.name || offset !== cur.filled) {
      throw dataLoss(
        `stream: chunk of ${JSON.stringify(name)} at offset ${offset} while ${JSON.stringify(cur.name)} expected offset ${cur.filled}`,
      );
    }
    if (cur.filled + data.byteLength > cur.buf.byteLength) {
      throw dataLoss(
        `stream: tensor ${JSON.stringify(cur.name)} got ${cur.filled + data.byteLength} bytes, more than its ${cur.buf.byteLength}`,
      );
    }
    cur.buf.set(data, cur.filled);
    cur.filled += data.byteLength;
    if (cur.filled === cur.buf.byteLength) {
      this.tensors.set(cur.name, tensorFromBytes(cur.name, cur.dtype, cur.shape, cur.buf, true));
      this.cur = null;
    }
  }

  /** The name of the tensor whose chunks are still coming; null between tensors. */
  get receiving(): string | null {
    return this.cur === null ? null : this.cur.name;
  }

  /** The tensors in order; DATA_LOSS unless they are exactly `expected` (names, in order). */
  finish(expected?: string[]): Map<string, Tensor> {
    if (this.cur !== null) {
      throw dataLoss(
        `stream ended inside tensor ${JSON.stringify(this.cur.name)} (${this.cur.filled} of ${this.cur.buf.byteLength} bytes)`,
      );
    }
    if (expected !== undefined) {
      const got = [...this.tensors.keys()];
      if (got.length !== expected.length || got.some((n, i) => n !== expected[i])) {
        throw dataLoss(`stream: got tensors ${JSON.stringify(got)}, the header announced ${JSON.stringify(expected)}`);
      }
    }
    return this.tensors;
  }
}

// --- encoding ---------------------------------------------------------------------------------

/** What a caller may pass as a tensor: nested number arrays, or a typed array with a shape. */
export type TensorInput =
  | number
  | boolean
  | readonly unknown[]
  | Tensor
  | { data: TensorData | Float64Array | Uint16Array; shape: readonly number[]; dtype?: DType };

export function nestedShape(value: unknown): number[] {
  const shape: number[] = [];
  let v: unknown = value;
  while (Array.isArray(v)) {
    shape.push(v.length);
    if (v.length === 0) break;
    v = v[0];
  }
  return shape;
}

export function flatten(value: unknown, shape: number[], what: string): unknown[] {
  const out: unknown[] = [];
  const walk = (v: unknown, axis: number): void => {
    if (axis === shape.length) {
      if (Array.isArray(v)) throw invalidInput(`${what}: ragged nested array (deeper than [${shape.join(", ")}])`);
      out.push(v);
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[axis]) {
      throw invalidInput(`${what}: ragged nested array (axis ${axis} should have ${shape[axis]} entries)`);
    }
    for (const x of v) walk(x, axis + 1);
  };
  walk(value, 0);
  return out;
}

export interface WireTensor {
  name: string;
  dtype: DType;
  shape: number[];
  data: Buffer;
}

function bytesOf(a: ArrayBufferView): Buffer {
  if (!LITTLE_ENDIAN) throw invalidInput("sending tensors from a big-endian host is not supported");
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * A value as an F32 Tensor message (interventions' values, literals). Numbers, nested arrays,
 * Float32Array / Float64Array with a shape, or a Tensor; float64 is narrowed to float32.
 */
export function toF32Tensor(value: TensorInput, what: string, name = ""): WireTensor {
  if (typeof value === "number") {
    return { name, dtype: "F32", shape: [], data: bytesOf(new Float32Array([value])) };
  }
  if (Array.isArray(value)) {
    const shape = nestedShape(value);
    const flat = flatten(value, shape, what);
    const arr = new Float32Array(flat.length);
    flat.forEach((x, i) => {
      if (typeof x !== "number") throw invalidInput(`${what}: element ${i} is ${typeof x}, not a number`);
      arr[i] = x;
    });
    return { name, dtype: "F32", shape, data: bytesOf(arr) };
  }
  if (typeof value === "object" && value !== null && "data" in value && "shape" in value) {
    const { data, shape } = value as { data: ArrayLike<number | bigint>; shape: readonly number[] };
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) {
      throw invalidInput(`${what}: ${data.length} values for shape [${shape.join(", ")}] (${n} expected)`);
    }
    if (data instanceof Float32Array) return { name, dtype: "F32", shape: [...shape], data: bytesOf(data) };
    if (data instanceof BigInt64Array) throw invalidInput(`${what}: expected floating-point values, got a BigInt64Array`);
    const arr = Float32Array.from(data as ArrayLike<number>);
    return { name, dtype: "F32", shape: [...shape], data: bytesOf(arr) };
  }
  throw invalidInput(`${what}: expected a number, nested arrays of numbers or {data, shape}; got ${describe(value)}`);
}

/** Nested arrays or {data, shape} as a shape and its row-major values; null for anything else. */
function shapedValues(value: unknown, what: string): { shape: number[]; flat: ArrayLike<unknown> } | null {
  if (Array.isArray(value)) {
    const shape = nestedShape(value);
    return { shape, flat: flatten(value, shape, what) };
  }
  if (typeof value === "object" && value !== null && "data" in value && "shape" in value) {
    const v = value as { data: ArrayLike<unknown>; shape: readonly number[] };
    const shape = [...v.shape];
    const n = shape.reduce((a, b) => a * b, 1);
    if (v.data.length !== n) {
      throw invalidInput(`${what}: ${v.data.length} values for shape [${shape.join(", ")}] (${n} expected)`);
    }
    return { shape, flat: v.data };
  }
  return null;
}

/** Token ids as an I64 Tensor message: [pos] (number[]), [batch, pos] (number[][]) or {data, shape}. */
export function toI64Tensor(value: unknown, what: string, name = ""): WireTensor {
  const shaped = shapedValues(value, what);
  if (shaped === null) {
    throw invalidInput(`${what}: expected token ids (number[], number[][] or {data, shape}); got ${describe(value)}`);
  }
  const { shape, flat } = shaped;
  const arr = new BigInt64Array(flat.length);
  for (let i = 0; i < flat.length; i++) {
    const x = flat[i];
    if (typeof x === "bigint") arr[i] = x;
    else if (typeof x === "number" && Number.isSafeInteger(x)) arr[i] = BigInt(x);
    else throw invalidInput(`${what}: element ${i} (${String(x)}) is not an integer token id`);
  }
  return { name, dtype: "I64", shape, data: bytesOf(arr) };
}

/** An attention mask ([batch, pos], nonzero = real token) as a BOOL Tensor message. */
export function toMaskTensor(value: unknown, what: string): WireTensor {
  const shaped = shapedValues(value, what);
  if (shaped === null) {
    throw invalidInput(`${what}: expected nested arrays of 0/1 or booleans, or {data, shape}; got ${describe(value)}`);
  }
  const { shape, flat } = shaped;
  const arr = new Uint8Array(flat.length);
  for (let i = 0; i < flat.length; i++) {
    const x = flat[i];
    arr[i] = x === true || (typeof x === "number" && x !== 0) || (typeof x === "bigint" && x !== 0n) ? 1 : 0;
  }
  return { name: "attention_mask", dtype: "BOOL", shape, data: Buffer.from(arr.buffer) };
}

export function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`;
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "..." : v)}`;
  return typeof v === "object" ? "an object" : `${typeof v} ${String(v)}`;
}
