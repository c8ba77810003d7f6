// client/node/README.md's example, as a user runs it: the fenced block under "## Example"
// written to a file in a fresh directory whose node_modules/lensgrid is the package, run with
// node against a real worker and coordinator on the embedded model. It must exit 0 and print
// what it says it prints; and it must stay 20 lines or fewer.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { SOURCE, TINY, startCoordinator, startWorker, tempDir } from "./harness.mjs";

let tmp, coord, worker;

before(async () => {
  tmp = tempDir();
  coord = await startCoordinator(path.join(tmp, "state"));
  worker = await startWorker(TINY(), ["--coordinator", coord.address]);
  await worker.waitForLog(/registered with the coordinator as/);
});

after(async () => {
  await worker?.stop();
  await coord?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function example() {
  const readme = fs.readFileSync(path.join(SOURCE(), "client", "node", "README.md"), "utf8");
  const m = /^## Example\n+```js\n([\s\S]*?)^```$/m.exec(readme);
  assert.ok(m, "client/node/README.md has a ```js block under ## Example");
  return m[1];
}

test("the README's example is 20 lines or fewer", () => {
  const lines = example().trimEnd().split("\n");
  assert.ok(lines.length <= 20, `${lines.length} lines`);
});

test("the top-level README shows the same example", () => {
  const top = fs.readFileSync(path.join(SOURCE(), "README.md"), "utf8");
  const m = /^### Node\.js \/ TypeScript client[^\n]*\n[\s\S]*?^```js\n([\s\S]*?)^```$/m.exec(top);
  assert.ok(m, "README.md has a ```js block under ### Node.js / TypeScript client");
  assert.equal(m[1], example());
});

test("the README's example runs against a real worker and coordinator", async (t) => {
  const dir = path.join(tmp, "user");
  fs.mkdirSync(path.join(dir, "node_modules"), { recursive: true });
  fs.symlinkSync(path.join(SOURCE(), "client", "node"), path.join(dir, "node_modules", "lensgrid"));
  fs.writeFileSync(path.join(dir, "example.mjs"), example());
  const { stdout } = await promisify(execFile)(process.execPath, ["example.mjs"], {
    cwd: dir,
    env: { ...process.env, WORKER: worker.address, COORDINATOR: coord.address, LENSGRID_TOKEN: "", LENSGRID_TLS_CA: "" },
    timeout: 300000,
  });
  t.diagnostic(stdout);
  const lines = stdout.trim().split("\n");
  assert.match(stdout, /'<\|endoftext\|>'/, "the str tokens, BOS first");
  assert.match(stdout, /\[ 1, 4, \d+, \d+ \] L1H1 last query -> BOS: [\d.e-]+/);
  assert.match(stdout, /^loss [\d.]+ -> [\d.]+ \[ 1, \d+, 4 \]$/m);
  assert.match(stdout, /^1 SUBMITTED$/m);
  assert.match(stdout, /JOB_SUCCEEDED/);
  assert.match(lines.at(-1), /^\[ 'L\dH\d -?[\d.]+', 'L\dH\d -?[\d.]+', 'L\dH\d -?[\d.]+' \]$/);
});
