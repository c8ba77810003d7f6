// The package as published: `npm pack` carries the compiled code, its type declarations, the
// protos it loads at run time and the README; the declarations type-check a consumer.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const pkg = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

test("npm pack carries dist/*.js, the declarations, every proto and the README", () => {
  // --ignore-scripts: inspect the dist/ already built, do not rebuild it under other tests
  const out = execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: pkg, encoding: "utf8" });
  const files = JSON.parse(out)[0].files.map((f) => f.path);
  for (const f of ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/worker.js", "dist/coordinator.js"]) {
    assert.ok(files.includes(f), `${f} is in the package`);
  }
  const protos = fs.readdirSync(path.join(pkg, "..", "..", "proto", "lensgrid", "v1")).filter((f) => f.endsWith(".proto"));
  assert.ok(protos.length >= 5);
  for (const p of protos) assert.ok(files.includes(`dist/proto/lensgrid/v1/${p}`), `${p} is in the package`);
  assert.ok(!files.some((f) => f.startsWith("src/") || f.startsWith("node_modules/") || f.startsWith("test/")), "no sources, tests or dependencies");
});

test("the protos in dist/ are the repository's", () => {
  const dir = path.join(pkg, "..", "..", "proto", "lensgrid", "v1");
  for (const p of fs.readdirSync(dir).filter((f) => f.endsWith(".proto"))) {
    assert.equal(fs.readFileSync(path.join(pkg, "dist", "proto", "lensgrid", "v1", p), "utf8"), fs.readFileSync(path.join(dir, p), "utf8"), `${p}: rebuild (npm run build)`);
  }
});

test("the type declarations describe the API a TypeScript user compiles against", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lensgrid-types-"));
  try {
    fs.mkdirSync(path.join(dir, "node_modules"));
    fs.symlinkSync(pkg, path.join(dir, "node_modules", "lensgrid"));
    fs.copyFileSync(path.join(pkg, "test", "consumer.ts"), path.join(dir, "consumer.ts"));
    const tsc = path.join(pkg, "node_modules", "typescript", "bin", "tsc");
    const check = (file) => {
      fs.writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify({
        compilerOptions: { target: "ES2022", module: "commonjs", strict: true, noEmit: true, types: [], typeRoots: [path.join(pkg, "node_modules", "@types")] },
        files: [file],
      }));
      return execFileSync(process.execPath, [tsc, "-p", dir], { cwd: dir, encoding: "utf8", stdio: "pipe" });
    };
    check("consumer.ts");
    // a consumer that misuses the API fails to compile (the check can fail)
    fs.writeFileSync(path.join(dir, "bad.ts"), 'import { connect } from "lensgrid";\nexport const x: Promise<string> = connect("a");\n');
    assert.throws(() => check("bad.ts"), (e) => /bad\.ts\(2,14\): error TS2322: Type 'Promise<Worker>' is not assignable to type 'Promise<string>'/.test(e.stdout));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
