// The hook program builder against hand-written HookProgram messages (program.proto), and
// its refusals.
import { test } from "node:test";
import assert from "node:assert/strict";
import { program, LensgridError } from "../dist/index.js";
import { encodeMessage, decodeMessage } from "../dist/proto.js";

function wireBytes(programs) {
  return encodeMessage("lensgrid.v1.RunWithInterventionsRequest", { programs });
}

test("program.proto's own example, built, equals the hand-written message", () => {
  // program.proto: zero head 3 of layer 1's z at the last position and save its norm.
  const p = program("blocks.1.attn.hook_z");
  const z = p.activation();
  const out = z.write([":", -1, 3], 0);
  p.output(out).save("z_norm", z.norm(-1));
  const hand = {
    hook: "blocks.1.attn.hook_z",
    nodes: [
      { id: "n0", activation: {} },
      { id: "n1", constant: 0 },
      { id: "n2", write: { target: "n0", value: "n1", region: [{ all: true }, { at: -1 }, { at: 3 }] } },
      { id: "n3", reduce: { op: "REDUCE_NORM", input: "n0", axes: [-1], keepdim: false } },
    ],
    output: "n2",
    saves: [{ name: "z_norm", node: "n3" }],
  };
  assert.deepEqual(p.build(), hand);
  // the same bytes on the wire, and they decode back to the same program
  assert.deepEqual(wireBytes([p.build()]), wireBytes([hand]));
  const back = decodeMessage("lensgrid.v1.RunWithInterventionsRequest", wireBytes([p.build()])).programs[0];
  assert.equal(back.nodes[1].op, "constant");
  assert.equal(back.nodes[1].constant, 0);
  assert.deepEqual(back.nodes[2].write.region.map((r) => r.kind), ["all", "at", "at"]);
  assert.deepEqual(back.nodes[3].reduce.axes, [-1]);
});

test("every kind of node, chained, equals the hand-written message", () => {
  const p = program(["pattern", 0]);
  const pat = p.input();                                     // n0
  const head = pat.select([":", 2, { start: -3 }, "..."]);    // n1
  const scaled = head.mul(2).add([1, 2]);                     // n2 const, n3 mul, n4 values, n5 add
  const clean = p.patchValue();                               // n6
  const w = p.weight("W_U");                                  // n7
  const m = p.where(scaled.gt(0.5), scaled, clean.index([[0, 1]]));  // n8 const, n9 gt, n10 index, n11 where
  m.sum([-1, -2], { keepdim: true }).save("s");               // n12
  p.einsum("bqk,bqk->b", m, m).save("e");                     // n13
  p.saved("earlier").exp().softmax(-1).projectOut(p.hookValue("blocks.0.hook_resid_pre")).save("x"); // n14..n18
  w.permute([1, 0]).reshape([-1]).save("flat");               // n19, n20
  pat.matmul(pat).norm(undefined, { p: 1 }).save("n1");       // n21, n22
  const built = p.build();
  assert.equal(built.hook, "blocks.0.attn.hook_pattern");
  assert.deepEqual(built.nodes, [
    { id: "n0", activation: {} },
    { id: "n1", index: { input: "n0", region: [{ all: true }, { at: 2 }, { slice: { start: -3, step: 1 } }, { ellipsis: true }] } },
    { id: "n2", constant: 2 },
    { id: "n3", elementwise: { op: "MUL", inputs: ["n1", "n2"] } },
    { id: "n4", values: { shape: [2], values: [1, 2] } },
    { id: "n5", elementwise: { op: "ADD", inputs: ["n3", "n4"] } },
    { id: "n6", hook: { name: "blocks.0.attn.hook_pattern", from_patch_run: true } },
    { id: "n7", weight: "W_U" },
    { id: "n8", constant: 0.5 },
    { id: "n9", elementwise: { op: "GT", inputs: ["n5", "n8"] } },
    { id: "n10", index: { input: "n6", region: [{ list: { indices: [0, 1] } }] } },
    { id: "n11", where: { condition: "n9", if_true: "n5", if_false: "n10" } },
    { id: "n12", reduce: { op: "REDUCE_SUM", input: "n11", axes: [-1, -2], keepdim: true } },
    { id: "n13", einsum: { equation: "bqk,bqk->b", inputs: ["n11", "n11"] } },
    { id: "n14", saved: "earlier" },
    { id: "n15", elementwise: { op: "EXP", inputs: ["n14"] } },
    { id: "n16", softmax: { input: "n15", axis: -1, log: false } },
    { id: "n17", hook: { name: "blocks.0.hook_resid_pre", from_patch_run: false } },
    { id: "n18", project: { mode: "OUT", input: "n16", direction: "n17" } },
    { id: "n19", permute: { input: "n7", axes: [1, 0] } },
    { id: "n20", reshape: { input: "n19", shape: [-1] } },
    { id: "n21", matmul: { a: "n0", b: "n0" } },
    { id: "n22", reduce: { op: "REDUCE_NORM", input: "n21", axes: [], keepdim: false, p: 1 } },
  ]);
  assert.equal(built.output, "");
  assert.deepEqual(built.saves, [
    { name: "s", node: "n12" },
    { name: "e", node: "n13" },
    { name: "x", node: "n18" },
    { name: "flat", node: "n20" },
    { name: "n1", node: "n22" },
  ]);
  // it serializes (every field is one program.proto has)
  const back = decodeMessage("lensgrid.v1.RunWithInterventionsRequest", wireBytes([built])).programs[0];
  assert.equal(back.nodes.length, 23);
  assert.deepEqual(back.nodes.map((n) => n.op), built.nodes.map((n) => Object.keys(n).find((k) => k !== "id")));
});

test("literal tensors are sent as F32 bytes", () => {
  const p = program("blocks.0.hook_resid_pre");
  p.output(p.activation().add(p.literal({ data: Float32Array.from([1, 2, 3, 4]), shape: [2, 2] })));
  const node = p.build().nodes[1];
  assert.equal(node.literal.dtype, "F32");
  assert.deepEqual(node.literal.shape, [2, 2]);
  assert.deepEqual([...new Float32Array(new Uint8Array(node.literal.data).buffer)], [1, 2, 3, 4]);
});

test("refusals name what is wrong (INVALID_ARGUMENT, before anything is sent)", () => {
  const bad = [
    [() => program("z0").build(), /neither saves a value nor replaces the activation/],
    [() => { const p = program("z0"); const a = p.activation(); p.save("a", a).save("a", a); }, /"a" is saved twice/],
    [() => { const p = program("z0"); const q = program("z1"); p.save("x", p.activation().add(q.activation())); }, /belongs to the program on z1/],
    [() => program("z0").activation().index([":", "...", "..."]), /"\.\.\." may appear once/],
    [() => program("z0").activation().index([{ start: 0, step: 0 }]), /step must be > 0/],
    [() => program("z0").activation().index([1.5]), /is not an integer/],
    [() => program("z0").activation().index(["all"]), /expected ":", "\.\.\.", an integer/],
    [() => program("z0").constant(NaN), /NaN is refused/],
    [() => program("z0").values([[1, 2], [3]]), /ragged/],
    [() => program("z0").activation().reshape([-1, -1]), /one -1 at most/],
    [() => program("z0").einsum("ab,bc", 1), /explicit output/],
    [() => { const p = program("z0"); const a = p.activation(); p.output(a).output(a); }, /already has an output/],
    [() => program("z0").activation().add("x"), /expected a Value, a number/],
  ];
  for (const [fn, pattern] of bad) {
    assert.throws(fn, (e) => {
      assert.ok(e instanceof LensgridError);
      assert.equal(e.codeName, "INVALID_ARGUMENT");
      assert.equal(e.origin, "client");
      assert.match(e.message, pattern);
      return true;
    });
  }
});

test("programs in protobuf JSON (program.proto's example) equal the built program on the wire", async () => {
  const { programFromJSON } = await import("../dist/index.js");
  // program.proto's comment, verbatim in JSON names
  const json = `{"hook": "blocks.1.attn.hook_z",
    "nodes": [{"id": "z", "activation": {}},
              {"id": "zero", "constant": 0},
              {"id": "out", "write": {"target": "z", "value": "zero",
                 "region": [{"all": true}, {"at": -1}, {"at": 3}]}},
              {"id": "n", "reduce": {"op": "REDUCE_NORM", "input": "z", "axes": [-1]}}],
    "output": "out",
    "saves": [{"name": "z_norm", "node": "n"}]}`;
  const p = program("blocks.1.attn.hook_z");
  const z = p.activation();
  p.output(z.write([":", -1, 3], 0)).save("z_norm", z.norm(-1));
  const rename = (m) => JSON.parse(JSON.stringify(m).replace(/"n0"/g, '"z"').replace(/"n1"/g, '"zero"').replace(/"n2"/g, '"out"').replace(/"n3"/g, '"n"'));
  const decoded = (m) => decodeMessage("lensgrid.v1.RunWithInterventionsRequest", wireBytes([m])).programs[0];
  assert.deepEqual(decoded(programFromJSON(json)), decoded(rename(p.build())));
  // JSON names and proto names, enum numbers, int64 strings, base64 bytes, "Infinity"
  const m = programFromJSON({
    hook: "z0",
    nodes: [
      { id: "a", hook: { name: "pattern0", fromPatchRun: true } },
      { id: "b", where: { condition: "a", ifTrue: "a", if_false: "a" } },
      { id: "c", index: { input: "b", region: [{ slice: { start: "-3", step: "2" } }] } },
      { id: "d", elementwise: { op: 3, inputs: ["c", "c"] } },
      { id: "e", literal: { dtype: "F32", shape: [1], data: Buffer.from(Float32Array.from([2]).buffer).toString("base64") } },
      { id: "f", constant: "Infinity" },
    ],
    saves: [{ name: "x", node: "d" }],
  });
  assert.deepEqual(m.nodes[0].hook, { name: "pattern0", from_patch_run: true });
  assert.deepEqual(m.nodes[1].where, { condition: "a", if_true: "a", if_false: "a" });
  assert.deepEqual(m.nodes[2].index.region[0].slice, { start: "-3", step: "2" });
  assert.equal(m.nodes[3].elementwise.op, "MUL");
  assert.deepEqual([...new Float32Array(new Uint8Array(m.nodes[4].literal.data).buffer)], [2]);
  assert.equal(m.nodes[5].constant, Infinity);
  const back = decodeMessage("lensgrid.v1.RunWithInterventionsRequest", wireBytes([m])).programs[0];
  assert.equal(back.nodes[2].index.region[0].slice.start, -3);
  assert.equal(back.nodes[1].where.if_false, "a");
});

test("protobuf JSON mistakes are refused, naming the path", async () => {
  const { programFromJSON } = await import("../dist/index.js");
  const bad = [
    [{ hook: "z0", nodes: [{ id: "a", where: { condition: "a", ifTru: "a" } }] }, /programs\[0\]\.nodes\[0\]\.where\.ifTru: Where has no field "ifTru"/],
    [{ hook: "z0", nodes: [{ id: "a", activation: {}, constant: 1 }] }, /constant and activation are members of one oneof \(op\)/],
    [{ hook: "z0", nodes: [{ id: "a", reduce: { op: "REDUCE_MEDIAN" } }] }, /unknown Op value "REDUCE_MEDIAN"; one of OP_UNSPECIFIED, REDUCE_SUM/],
    [{ hook: "z0", nodes: [{ id: "a", index: { region: [{ at: 1.5 }] } }] }, /region\[0\]\.at: expected an integer/],
    [{ hook: "z0", nodes: {} }, /nodes: expected an array/],
    [{ hook: 3 }, /hook: expected a string/],
    ["{not json", /not JSON/],
  ];
  for (const [json, pattern] of bad) {
    assert.throws(() => programFromJSON(json, "programs[0]"), (e) => {
      assert.ok(e instanceof LensgridError);
      assert.equal(e.codeName, "INVALID_ARGUMENT");
      assert.match(e.message, pattern);
      return true;
    });
  }
});
