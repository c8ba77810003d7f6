// Tensors from the wire: half and bfloat16 widening (every bit pattern), dtypes, and the
// chunk assembler on good and malformed streams.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Tensor, TensorAssembler, tensorFromBytes, widenBF16, widenF16, LensgridError } from "../dist/index.js";

// An independent reference: IEEE 754 binary16 decoded with arithmetic.
function halfToNumber(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

test("F16 widens exactly, for all 65536 bit patterns", () => {
  const bits = new Uint16Array(65536).map((_, i) => i);
  const wide = widenF16(bits);
  for (let h = 0; h < 65536; h++) {
    const want = halfToNumber(h);
    if (Number.isNaN(want)) {
      assert.ok(Number.isNaN(wide[h]), `0x${h.toString(16)} should be NaN`);
    } else {
      assert.ok(Object.is(wide[h], want), `0x${h.toString(16)}: got ${wide[h]}, want ${want}`);
    }
  }
  // the sign of zero survives
  assert.ok(Object.is(wide[0x8000], -0));
});

test("BF16 widens exactly, for all 65536 bit patterns", () => {
  const bits = new Uint16Array(65536).map((_, i) => i);
  const wide = widenBF16(bits);
  const view = new DataView(new ArrayBuffer(4));
  for (let h = 0; h < 65536; h++) {
    view.setUint32(0, h << 16, true);
    const want = view.getFloat32(0, true);
    if (Number.isNaN(want)) assert.ok(Number.isNaN(wide[h]));
    else assert.ok(Object.is(wide[h], want), `0x${h.toString(16)}`);
  }
});

function le(type, values) {
  return new Uint8Array(type.from(values).buffer);
}

test("each dtype becomes its typed array; F16/BF16 report their wire dtype", () => {
  const f32 = tensorFromBytes("a", "F32", [2], le(Float32Array, [1.5, -2]));
  assert.equal(f32.dtype, "F32");
  assert.deepEqual([...f32.data], [1.5, -2]);
  const f16 = tensorFromBytes("h", "F16", [2], le(Uint16Array, [0x3c00, 0xc000]));
  assert.equal(f16.dtype, "F32");
  assert.equal(f16.wireDtype, "F16");
  assert.ok(f16.data instanceof Float32Array);
  assert.deepEqual([...f16.data], [1, -2]);
  const bf = tensorFromBytes("b", "BF16", [1], le(Uint16Array, [0x3fc0]));
  assert.equal(bf.wireDtype, "BF16");
  assert.deepEqual([...bf.data], [1.5]);
  const i64 = tensorFromBytes("t", "I64", [1, 3], le(BigInt64Array, [50256n, 2n ** 60n, -1n]));
  assert.ok(i64.data instanceof BigInt64Array);
  assert.equal(i64.get(0, 0), 50256);
  assert.equal(i64.get(0, 1), 2n ** 60n); // beyond 2^53: a bigint, never rounded
  assert.equal(i64.get(0, -1), -1);
  assert.throws(() => i64.toNumbers(), RangeError);
  const i32 = tensorFromBytes("i", "I32", [2], le(Int32Array, [7, -7]));
  assert.ok(i32.data instanceof Int32Array);
  const b = tensorFromBytes("m", "BOOL", [2, 2], Uint8Array.from([1, 0, 0, 1]));
  assert.ok(b.data instanceof Uint8Array);
  assert.deepEqual(b.toNested(), [[1, 0], [0, 1]]);
  const scalar = tensorFromBytes("s", "F32", [], le(Float32Array, [3]));
  assert.equal(scalar.size, 1);
  assert.equal(scalar.get(), 3);
  assert.equal(scalar.toNested(), 3);
});

test("a size that disagrees with dtype x shape is DATA_LOSS naming the tensor", () => {
  assert.throws(() => tensorFromBytes("x", "F32", [3], new Uint8Array(8)), (e) => {
    assert.ok(e instanceof LensgridError);
    assert.equal(e.codeName, "DATA_LOSS");
    assert.match(e.message, /"x": 8 bytes for F32 \[3\] \(12 expected\)/);
    return true;
  });
  assert.throws(() => tensorFromBytes("x", "F64", [1], new Uint8Array(8)), /unknown dtype "F64"/);
  assert.throws(() => tensorFromBytes("x", "F32", [-1], new Uint8Array(0)), /bad shape/);
});

test("Tensor indexing: row-major offsets, negative indices, bounds", () => {
  const t = new Tensor("g", "F32", "F32", [2, 3], Float32Array.from([0, 1, 2, 3, 4, 5]));
  assert.equal(t.get(1, 2), 5);
  assert.equal(t.get(-1, -3), 3);
  assert.deepEqual(t.strides, [3, 1]);
  assert.deepEqual(t.toNested(), [[0, 1, 2], [3, 4, 5]]);
  assert.throws(() => t.get(2, 0), /index 2 is out of range for axis 0 of size 2/);
  assert.throws(() => t.get(0), /1 indices for a tensor of shape \[2, 3\]/);
});

function chunk(name, dtype, shape, total, offset, bytes) {
  return { name, dtype, shape, total_bytes: total, offset, data: Buffer.from(bytes) };
}

test("chunks reassemble into one preallocated buffer per tensor", () => {
  const values = Float32Array.from({ length: 10 }, (_, i) => i * 0.5);
  const bytes = new Uint8Array(values.buffer);
  const a = new TensorAssembler();
  // uneven chunk sizes, as a worker with a small chunk size sends them
  a.add(chunk("x", "F32", [2, 5], 40, 0, bytes.subarray(0, 12)));
  a.add(chunk("x", "", [], 0, 12, bytes.subarray(12, 13)));
  a.add(chunk("x", "", [], 0, 13, bytes.subarray(13, 40)));
  a.add(chunk("empty", "F32", [0, 4], 0, 0, new Uint8Array(0)));
  a.add(chunk("ids", "I64", [2], 16, 0, new Uint8Array(BigInt64Array.from([5n, 6n]).buffer)));
  const out = a.finish(["x", "empty", "ids"]);
  const x = out.get("x");
  assert.deepEqual(x.shape, [2, 5]);
  assert.deepEqual([...x.data], [...values]);
  // the typed array is a view of the one buffer the assembler allocated, of exactly total_bytes
  assert.equal(x.data.buffer.byteLength, 40);
  assert.equal(out.get("empty").size, 0);
  assert.deepEqual(out.get("ids").toNumbers(), [5, 6]);
});

test("malformed streams are DATA_LOSS errors that say what was wrong", () => {
  const four = new Uint8Array(4);
  const cases = [
    ["starts past 0", (a) => a.add(chunk("x", "F32", [2], 8, 4, four)), /"x" starts at offset 4, not 0/],
    ["gap", (a) => { a.add(chunk("x", "F32", [2], 8, 0, four)); a.add(chunk("x", "", [], 0, 5, four)); }, /"x" at offset 5 while "x" expected offset 4/],
    ["interleaved", (a) => { a.add(chunk("x", "F32", [2], 8, 0, four)); a.add(chunk("y", "F32", [1], 4, 0, four)); }, /chunk of "y" at offset 0 while "x" expected offset 4/],
    ["too many bytes", (a) => a.add(chunk("x", "F32", [1], 4, 0, new Uint8Array(8))), /got 8 bytes, more than its 4/],
    ["total disagrees with shape", (a) => a.add(chunk("x", "F32", [3], 8, 0, four)), /announces 8 bytes for F32 \[3\] \(12 expected\)/],
    ["bad dtype", (a) => a.add(chunk("x", "DTYPE_UNSPECIFIED", [1], 4, 0, four)), /unknown dtype/],
    ["twice", (a) => { a.add(chunk("x", "F32", [1], 4, 0, four)); a.add(chunk("x", "F32", [1], 4, 0, four)); }, /"x" sent twice/],
    ["ends inside", (a) => { a.add(chunk("x", "F32", [2], 8, 0, four)); a.finish(); }, /stream ended inside tensor "x" \(4 of 8 bytes\)/],
    ["not what the header said", (a) => { a.add(chunk("x", "F32", [1], 4, 0, four)); a.finish(["x", "y"]); }, /got tensors \["x"\], the header announced \["x","y"\]/],
    ["over the client's limit", (a) => new TensorAssembler(16).add(chunk("x", "F32", [8], 32, 0, four)), /over this client's limit of 16/],
  ];
  for (const [what, fn, pattern] of cases) {
    assert.throws(() => fn(new TensorAssembler()), (e) => {
      assert.ok(e instanceof LensgridError, what);
      assert.equal(e.code, 15, what);
      assert.equal(e.origin, "client");
      assert.match(e.message, pattern, what);
      return true;
    }, what);
  }
});
