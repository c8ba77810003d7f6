// The Node client against a real coordinator with two workers on loopback (what
// `lensgrid search --local 2` starts): searches equal `lensgrid search --in-process` (1e-5),
// watch() yields every event through to the terminal state (and resumes by seq, also across a
// coordinator restart), cancel(), jobs(), workers(), and bad input as LensgridErrors.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { TINY, cli, lensgrid, startCoordinator, startWorker, tempDir } from "./harness.mjs";

const lg = await lensgrid();
let tmp, coord, workers = [], c;

before(async () => {
  tmp = tempDir();
  coord = await startCoordinator(path.join(tmp, "state"));
  workers = await Promise.all([0, 1].map((i) => startWorker(TINY(), ["--coordinator", coord.address, "--name", `w${i}`])));
  // the coordinator knows the model once the workers have registered (after they serve)
  await Promise.all(workers.map((w) => w.waitForLog(/registered with the coordinator as/)));
  c = await lg.connectCoordinator(coord.address);
});

after(async () => {
  c?.close();
  await Promise.all(workers.map((w) => w.stop()));
  await coord?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function inProcess(args) {
  const out = path.join(tmp, `inproc-${Math.random().toString(36).slice(2)}`);
  cli(["search", "--model", TINY(), "--in-process", "--output", out, ...args]);
  return JSON.parse(fs.readFileSync(path.join(out, "result.json"), "utf8"));
}

/**
 * The grids equal result.json's within 1e-5 (absolute + relative, as the Python client's
 * coordinator_test): shards batch prompts differently from one in-process batch, so sums can
 * differ in the last float32 bit. The ranking is the same.
 */
function assertEqualsInProcess(result, want, what) {
  const outputs = Object.fromEntries(want.outputs.map((o) => [o.name, o]));
  assert.deepEqual([...result.grids.keys()].sort(), Object.keys(outputs).sort(), `${what}: grids`);
  for (const [name, grid] of result.grids) {
    const o = outputs[name];
    assert.deepEqual(result.axes.get(name), o.axes, `${what}: ${name} axes`);
    assert.deepEqual(grid.shape, o.shape, `${what}: ${name} shape`);
    const values = o.values.flat(Infinity);
    assert.equal(grid.data.length, values.length);
    grid.data.forEach((v, i) => {
      const tol = 1e-5 + 1e-5 * Math.abs(values[i]);
      assert.ok(Math.abs(v - values[i]) <= tol, `${what}: ${name}[${i}] = ${v}, in process ${values[i]}`);
    });
    assert.deepEqual(result.top(o.ranked.length, name).map((r) => r.label), o.ranked.map((r) => r.component), `${what}: ${name} ranking`);
  }
}

test("workers(): both workers, alive, serving lensgrid-tiny", async () => {
  const ws = await c.workers({ aliveOnly: true });
  assert.equal(ws.length, 2);
  assert.deepEqual(ws.map((w) => w.name).sort(), ["w0", "w1"]);
  for (const w of ws) {
    assert.equal(w.model_id, "lensgrid-tiny");
    assert.equal(w.alive, true);
    assert.equal(typeof w.last_seen_unix_ms, "number");
  }
  assert.deepEqual(await c.workers({ model: "gpt2" }), []);
});

test("a search on two workers equals lensgrid search --in-process", async () => {
  const events = [];
  const result = await c.search({
    model: "lensgrid-tiny", dataset: "induction", method: "ablate-heads", metric: "loss",
    nPrompts: 6, seed: 3, seqLen: 8, promptsPerShard: 2, onEvent: (e) => events.push(e),
  });
  const want = inProcess(["--dataset", "induction", "--method", "ablate-heads", "--metric", "loss", "--n-prompts", "6", "--seed", "3", "--seq-len", "8"]);
  assertEqualsInProcess(result, want, "ablate-heads");
  assert.equal(result.status.state, "JOB_SUCCEEDED");
  assert.equal(result.status.n_prompts, 6);
  assert.equal(result.status.method, "ablate-heads");
  assert.deepEqual(result.tensors.get("delta.per_prompt").shape, [6, 8]);
  assert.deepEqual(result.tensors.get("baseline").shape, [6]);
  assert.match(result.ranked[0].label, /^L\dH\d$/);
  assert.equal(events.at(-1).kind, "JOB_SUCCEEDED");
  assert.equal(events.filter((e) => e.kind === "SHARD_DONE").length, result.status.shards_total);

  const patch = await c.search({ model: "lensgrid-tiny", dataset: "induction", method: "patch-heads", nPrompts: 4, seed: 1, seqLen: 6 });
  assertEqualsInProcess(patch, inProcess(["--dataset", "induction", "--method", "patch-heads", "--n-prompts", "4", "--seed", "1", "--seq-len", "6"]), "patch-heads");
  assert.ok(patch.tensors.has("reference"));
});

test("watch() yields every event through to the terminal state, and resumes by seq", async () => {
  const job = await c.submit({ model: "lensgrid-tiny", dataset: "induction", method: "ablate-heads", nPrompts: 4, seqLen: 6, promptsPerShard: 1, componentsPerShard: 2 });
  const events = [];
  for await (const e of job.watch()) events.push(e);
  assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1), "seq 1, 2, ... without gaps");
  assert.equal(events[0].kind, "SUBMITTED");
  assert.ok(events.some((e) => e.kind === "DATASET_READY"));
  const last = events.at(-1);
  assert.equal(last.kind, "JOB_SUCCEEDED");
  const total = last.shards_total;
  assert.equal(total, 16);
  assert.equal(events.filter((e) => e.kind === "SHARD_DONE").length, total);
  assert.equal(last.shards_done, total);
  const resumed = [];
  for await (const e of job.watch({ afterSeq: 3 })) resumed.push(e);
  assert.deepEqual(resumed, events.slice(3));
  const status = await job.wait();
  assert.equal(status.state, "JOB_SUCCEEDED");
  assert.equal(await job.state(), "succeeded");
  assert.equal(status.shards_done, total);
  const ids = (await c.jobs({ state: "succeeded" })).map((j) => j.job_id);
  assert.ok(ids.includes(job.id));
  assert.ok(!(await c.jobs({ state: "failed" })).some((j) => j.job_id === job.id));
});

test("cancel(): a waiting job and a running one end cancelled; wait() says so", async () => {
  // pinned to weights no worker has: it waits for a worker until cancelled
  const waiting = await c.submit({ model: "lensgrid-tiny", dataset: "induction", method: "ablate-heads", nPrompts: 2, weightsSha256: "ab".repeat(32) });
  const seen = [];
  for await (const e of waiting.watch()) {
    seen.push(e.kind);
    if (e.kind === "WAITING_FOR_WORKER") {
      const st = await waiting.cancel();
      assert.equal(st.state, "JOB_CANCELLED");
    }
  }
  assert.deepEqual([seen[0], seen.at(-1)], ["SUBMITTED", "JOB_CANCELLED"]);
  await assert.rejects(waiting.wait(), (e) => e instanceof lg.LensgridError && e.codeName === "CANCELLED" && e.message.includes(waiting.id));
  await assert.rejects(waiting.result(), (e) => e.codeName === "FAILED_PRECONDITION");

  // running: cancelled after its first shard, of 512
  const running = await c.submit({ model: "lensgrid-tiny", dataset: "induction", method: "ablate-heads", nPrompts: 64, seqLen: 8, promptsPerShard: 1, componentsPerShard: 1 });
  let cancelled = null;
  const kinds = [];
  for await (const e of running.watch()) {
    kinds.push(e.kind);
    if (e.kind === "SHARD_DONE" && !cancelled) cancelled = await running.cancel();
  }
  assert.equal(cancelled.state, "JOB_CANCELLED");
  assert.ok(cancelled.shards_done < cancelled.shards_total, `${cancelled.shards_done} of ${cancelled.shards_total}`);
  assert.equal(kinds.at(-1), "JOB_CANCELLED");
  assert.equal(await running.state(), "cancelled");
  await running.delete();
  await assert.rejects(running.status(), (e) => e.codeName === "NOT_FOUND");
});

test("submit() takes a JobSpec message too (proto or JSON field names)", async () => {
  const job = await c.submit({ model_id: "lensgrid-tiny", method: "METHOD_DETECT_HEADS", dataset: { name: "induction", nPrompts: 2, seqLen: 4 } });
  const status = await job.wait();
  assert.equal(status.method, "detect-heads");
  assert.equal(status.n_prompts, 2);
  const result = await job.result();
  assert.ok(result.grids.size >= 1);
  for (const [name, g] of result.grids) assert.deepEqual(result.axes.get(name), ["layer", "head"], name);
});

test("bad input: the coordinator's codes, and the client's own checks", async () => {
  await assert.rejects(c.submit({ model: "no-such-model", dataset: "induction", method: "ablate-heads" }), (e) => {
    assert.ok(e instanceof lg.LensgridError);
    assert.equal(e.codeName, "NOT_FOUND");
    assert.equal(e.origin, "server");
    assert.match(e.details, /lensgrid-tiny/); // names the ids the workers serve
    return true;
  });
  await assert.rejects(c.job("job-nonexistent").status(), (e) => e.codeName === "NOT_FOUND" && e.address === coord.address);
  await assert.rejects(c.search({ model: "lensgrid-tiny", dataset: "induction", method: "no-such-method" }), (e) => {
    assert.equal(e.codeName, "INVALID_ARGUMENT");
    assert.equal(e.origin, "client");
    assert.match(e.message, /ablate-heads/);
    return true;
  });
  await assert.rejects(c.search({ model: "lensgrid-tiny", dataset: "induction", method: "path-patch", nPrompts: 2, receivers: ["L5H0.k"] }),
    (e) => e.codeName === "INVALID_ARGUMENT" && /circuit.receivers\[0\]/.test(e.details));
  await assert.rejects(c.search({ model: "lensgrid-tiny", dataset: "induction", method: "acdc", nPrompts: 2 }),
    (e) => /acdc is driven by its client/.test(e.details));
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

test("watch() reconnects across a coordinator restart and misses no event", async () => {
  const state = path.join(tmp, "restart-state");
  const port = await freePort();
  // a coordinator of its own on a fixed port, so that the restarted one is at the same address
  let c2 = await startCoordinatorAt(state, port);
  const w = await startWorker(TINY(), ["--coordinator", c2.address, "--name", "w-restart"]);
  const client = await lg.connectCoordinator(c2.address);
  try {
    await w.waitForLog(/registered with the coordinator as/);
    const job = await client.submit({ model: "lensgrid-tiny", dataset: "induction", method: "ablate-heads", nPrompts: 8, seqLen: 6, promptsPerShard: 1, componentsPerShard: 1 });
    const events = [];
    const reconnects = [];
    for await (const e of job.watch({ onReconnect: (err) => reconnects.push(err.codeName) })) {
      events.push(e);
      if (e.kind === "SHARD_DONE" && reconnects.length === 0 && events.filter((x) => x.kind === "SHARD_DONE").length === 1) {
        c2.proc.kill("SIGKILL");
        await new Promise((r) => c2.proc.once("exit", r));
        c2 = await startCoordinatorAt(state, port);
      }
    }
    assert.ok(reconnects.length >= 1, "the stream was lost and resumed");
    assert.deepEqual(events.map((e) => e.seq), events.map((_, i) => i + 1), "every event once, in order");
    assert.equal(events.at(-1).kind, "JOB_SUCCEEDED");
    const result = await job.result();
    assert.deepEqual(result.grids.get("delta").shape, [2, 4]);
  } finally {
    client.close();
    await w.stop();
    await c2.stop();
  }
});

function startCoordinatorAt(state, port) {
  return startCoordinator(state, [], { listen: `127.0.0.1:${port}` });
}
