// Real lensgrid processes on loopback for the Node client's tests: workers, coordinators,
// certificates, token files, the Python client as a reference. Processes are waited for by
// their log lines ("listening on", "serving", "registered with the coordinator"), never by
// sleeping; deadlines only guard against hangs.
//
// Paths come from the environment (tests/integration/node/CMakeLists.txt sets them):
//   LENSGRID_WORKER, LENSGRID_COORDINATOR, LENSGRID_CLI   the binaries
//   LENSGRID_SOURCE_DIR                                   the repository (models/, client/node/dist)
//   LENSGRID_PYTHON, LENSGRID_PYTHONPATH                  python3 and the Python client
import { spawn, execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (tests/integration/node/CMakeLists.txt sets it; run through ctest)`);
  return v;
};
export const SOURCE = () => env("LENSGRID_SOURCE_DIR");
export const TINY = () => path.join(SOURCE(), "models", "lensgrid-tiny");
export const HANG_MS = 300000; // only guards against a hang

/** The package under test, as a user imports it (client/node/dist). */
export async function lensgrid() {
  return import(path.join(SOURCE(), "client", "node", "dist", "index.js"));
}

export function tempDir(prefix = "lensgrid-node-") {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

class Proc {
  constructor(what, argv, opts = {}) {
    this.what = what;
    this.lines = [];
    this.waiters = [];
    this.exited = null;
    this.proc = spawn(argv[0], argv.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, OPENBLAS_CORETYPE: "Haswell", ...(opts.env ?? {}) },
    });
    for (const stream of [this.proc.stdout, this.proc.stderr]) {
      let buf = "";
      stream.setEncoding("utf8");
      stream.on("data", (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          this.lines.push(buf.slice(0, i));
          buf = buf.slice(i + 1);
          this.check();
        }
      });
    }
    this.proc.on("exit", (code, signal) => {
      this.exited = { code, signal };
      this.check();
    });
  }

  log() {
    return this.lines.join("\n");
  }

  check() {
    for (const w of [...this.waiters]) {
      const m = this.lines.map((l) => w.re.exec(l)).find(Boolean);
      if (m) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(m);
      } else if (this.exited) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.reject(new Error(`${this.what} exited (${JSON.stringify(this.exited)}) before logging ${w.re}:\n${this.log()}`));
      }
    }
  }

  /** Resolves with the first log line's match of `re` (already logged, or when it is). */
  waitForLog(re, timeoutMs = HANG_MS) {
    return new Promise((resolve, reject) => {
      const w = { re, resolve, reject };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`${this.what}: no log line matching ${re} within ${timeoutMs} ms:\n${this.log()}`));
      }, timeoutMs);
      this.waiters.push(w);
      this.check();
    });
  }

  alive() {
    return this.exited === null;
  }

  async stop() {
    if (this.exited) return;
    const done = new Promise((r) => this.proc.once("exit", r));
    this.proc.kill("SIGTERM");
    const t = setTimeout(() => this.proc.kill("SIGKILL"), 10000);
    await done;
    clearTimeout(t);
  }
}

/** A lensgrid-worker on 127.0.0.1:0, serving once started (its address from its log). */
export async function startWorker(modelDir, args = [], opts = {}) {
  const w = new Proc("lensgrid-worker", [env("LENSGRID_WORKER"), "--model", modelDir, "--listen", "127.0.0.1:0", "--threads", "1", ...args], opts);
  try {
    w.address = (await w.waitForLog(/listening on (\S+)/))[1];
    await w.waitForLog(/serving /);
  } catch (e) {
    await w.stop();
    throw e;
  }
  return w;
}

/** A lensgrid-coordinator on opts.listen (default 127.0.0.1:0) with its state in stateDir. */
export async function startCoordinator(stateDir, args = [], opts = {}) {
  const listen = opts.listen ?? "127.0.0.1:0";
  const c = new Proc("lensgrid-coordinator", [env("LENSGRID_COORDINATOR"), "--listen", listen, "--state-dir", stateDir, ...args], opts);
  try {
    c.address = (await c.waitForLog(/listening on (\S+)/))[1];
  } catch (e) {
    await c.stop();
    throw e;
  }
  return c;
}

/** Runs the lensgrid CLI; its stdout (throws with stderr on failure). */
export function cli(args, opts = {}) {
  return execFileSync(env("LENSGRID_CLI"), args, {
    encoding: "utf8",
    env: { ...process.env, OPENBLAS_CORETYPE: "Haswell", ...(opts.env ?? {}) },
    maxBuffer: 64 << 20,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** A random model with GPT-2's vocabulary and tokenizer (`lensgrid init`). */
export function makeModel(dir, { layers = 2, heads = 4, dModel = 64, vocab = 50257, nCtx = 256, seed = 0 } = {}) {
  cli(["init", "--out", dir, "--layers", `${layers}`, "--heads", `${heads}`, "--d-model", `${dModel}`, "--vocab", `${vocab}`, "--n-ctx", `${nCtx}`, "--seed", `${seed}`]);
  return dir;
}

/** Runs a Python script with the Python client importable; returns its stdout. */
export function python(script, args = []) {
  return execFileSync(env("LENSGRID_PYTHON"), ["-c", script, ...args], {
    encoding: "utf8",
    env: { ...process.env, OPENBLAS_CORETYPE: "Haswell", PYTHONPATH: env("LENSGRID_PYTHONPATH") },
    maxBuffer: 256 << 20,
    stdio: ["ignore", "pipe", "pipe"],
  });
}

function openssl(args, cwd) {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
}

/**
 * A CA, a server certificate for 127.0.0.1 / localhost, and an unrelated CA, made with
 * openssl in `dir` (as tests/integration/security/security_test.py makes them).
 */
export function makePki(dir) {
  for (const ca of ["ca", "other-ca"]) {
    openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=lensgrid node test ${ca}`, "-keyout", `${ca}.key`, "-out", `${ca}.pem`], dir);
  }
  fs.writeFileSync(path.join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
  openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"], dir);
  openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem"], dir);
  return Object.fromEntries(["ca.pem", "other-ca.pem", "server.pem", "server.key"].map((f) => [f, path.join(dir, f)]));
}

/** A token file (NAME ROLE SHA256) with one random token per role; returns {file, tokens}. */
export function makeTokens(dir, roles = { alice: "submitter", pod: "worker", root: "admin" }) {
  const tokens = {};
  let text = "# lensgrid node test tokens\n";
  for (const [name, role] of Object.entries(roles)) {
    const token = randomBytes(16).toString("hex");
    tokens[role] = token;
    text += `${name} ${role} ${createHash("sha256").update(token).digest("hex")}\n`;
  }
  const file = path.join(dir, "tokens");
  fs.writeFileSync(file, text);
  return { file, tokens };
}

/** Resolves when `predicate()` is truthy (polled; rejects after timeoutMs naming `what`). */
export async function waitFor(predicate, what, timeoutMs = HANG_MS) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
