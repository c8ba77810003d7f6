// The Node client against a worker and a coordinator serving TLS with bearer tokens
// (--tls-cert, --tls-key, --auth-tokens), certificates made with openssl: no token is
// UNAUTHENTICATED, an unknown one too, a worker-role token PERMISSION_DENIED; a good token over
// TLS works, also from LENSGRID_TOKEN / LENSGRID_TLS_CA; plaintext and an untrusted CA fail;
// a search over TLS with a submitter token, which a worker token may not submit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { TINY, lensgrid, makePki, makeTokens, startCoordinator, startWorker, tempDir } from "./harness.mjs";

const lg = await lensgrid();
let tmp, pki, tokens, coord, worker;

before(async () => {
  tmp = tempDir();
  pki = makePki(tmp);
  const t = makeTokens(tmp);
  tokens = t.tokens;
  const serverFlags = ["--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"], "--auth-tokens", t.file];
  coord = await startCoordinator(path.join(tmp, "state"), serverFlags);
  worker = await startWorker(TINY(), ["--coordinator", coord.address, "--coordinator-tls-ca", pki["ca.pem"], "--name", "tls-worker", ...serverFlags], {
    env: { LENSGRID_COORDINATOR_TOKEN: tokens.worker },
  });
  await worker.waitForLog(/registered with the coordinator as/);
});

after(async () => {
  await worker?.stop();
  await coord?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function expectCode(codeName, pattern) {
  return (e) => {
    assert.ok(e instanceof lg.LensgridError, String(e));
    assert.equal(e.codeName, codeName, e.message);
    assert.equal(e.code, lg.StatusCode[codeName]);
    if (pattern) assert.match(e.message, pattern);
    return true;
  };
}

test("no token on a secured worker is UNAUTHENTICATED; an unknown one too", async () => {
  await assert.rejects(lg.connect(worker.address, { tlsCa: pki["ca.pem"], token: "" }), expectCode("UNAUTHENTICATED", /token/));
  await assert.rejects(lg.connect(worker.address, { tlsCa: pki["ca.pem"], token: "not-a-token" }), expectCode("UNAUTHENTICATED"));
});

test("a worker-role token may not run the Worker API (PERMISSION_DENIED, the token never echoed)", async () => {
  await assert.rejects(lg.connect(worker.address, { tlsCa: pki["ca.pem"], token: tokens.worker }), (e) => {
    expectCode("PERMISSION_DENIED")(e);
    assert.ok(!e.message.includes(tokens.worker));
    return true;
  });
});

test("a good token over TLS works: model info, tokens, a run", async () => {
  const w = await lg.connect(worker.address, { tlsCa: pki["ca.pem"], token: tokens.submitter });
  try {
    assert.equal((await w.modelInfo()).config.n_layers, 2);
    const run = await w.runWithCache([306, 1, 2, 3], { names: ["pattern0"] });
    assert.deepEqual(run.get("pattern0").shape, [1, 4, 4, 4]);
    // PEM bytes work as well as paths
    const w2 = await lg.connect(worker.address, { tlsCa: fs.readFileSync(pki["ca.pem"]), token: tokens.admin });
    assert.deepEqual(await w2.hookNames(), await w.hookNames());
    w2.close();
  } finally {
    w.close();
  }
});

test("LENSGRID_TOKEN and LENSGRID_TLS_CA are honoured when no option is given", async () => {
  const saved = { token: process.env.LENSGRID_TOKEN, ca: process.env.LENSGRID_TLS_CA };
  process.env.LENSGRID_TOKEN = tokens.submitter;
  process.env.LENSGRID_TLS_CA = pki["ca.pem"];
  try {
    const w = await lg.connect(worker.address);
    assert.equal((await w.tokenize("a", { prependBos: true }))[0], 306);
    w.close();
    const c = await lg.connectCoordinator(coord.address);
    assert.ok(Array.isArray(await c.jobs()));
    c.close();
  } finally {
    for (const [k, v] of [["LENSGRID_TOKEN", saved.token], ["LENSGRID_TLS_CA", saved.ca]]) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
});

test("plaintext to a TLS server, or a CA the server's certificate does not chain to, fails", async () => {
  await assert.rejects(lg.connect(worker.address, { token: tokens.submitter, waitMs: 1000 }), expectCode("UNAVAILABLE"));
  await assert.rejects(lg.connect(worker.address, { tlsCa: pki["other-ca.pem"], token: tokens.submitter, waitMs: 1000 }), expectCode("UNAVAILABLE"));
  await assert.rejects(lg.connectCoordinator(coord.address, { tlsCa: pki["other-ca.pem"], waitMs: 1000 }), expectCode("UNAVAILABLE", /cannot connect to .* over TLS/));
});

test("the coordinator over TLS: no token is UNAUTHENTICATED, a submitter's search succeeds", async () => {
  const anon = await lg.connectCoordinator(coord.address, { tlsCa: pki["ca.pem"], token: "" });
  await assert.rejects(anon.jobs(), expectCode("UNAUTHENTICATED"));
  anon.close();
  const c = await lg.connectCoordinator(coord.address, { tlsCa: pki["ca.pem"], token: tokens.submitter });
  try {
    const result = await c.search({ model: "lensgrid-tiny", dataset: "induction", method: "ablate-heads", nPrompts: 2, seqLen: 4 });
    assert.deepEqual(result.grids.get("delta").shape, [2, 4]);
    assert.equal(result.status.owner, "alice");
    assert.equal((await c.workers())[0].name, "tls-worker");
  } finally {
    c.close();
  }
  const asWorker = await lg.connectCoordinator(coord.address, { tlsCa: pki["ca.pem"], token: tokens.worker });
  await assert.rejects(asWorker.submit({ model: "lensgrid-tiny", dataset: "induction", method: "ablate-heads" }), expectCode("PERMISSION_DENIED", /submitter/));
  asWorker.close();
});
