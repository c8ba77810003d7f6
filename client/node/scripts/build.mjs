// npm run build: compiles src/ with tsc into dist/ and copies the protos the package loads at
// run time into dist/proto (from the repository's proto/, or LENSGRID_PROTO_DIR).
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, "..");
const protoSrc = path.resolve(process.env.LENSGRID_PROTO_DIR ?? path.join(pkg, "..", "..", "proto"));
const dist = path.join(pkg, "dist");
const tsc = path.join(pkg, "node_modules", "typescript", "bin", "tsc");

if (!fs.existsSync(tsc)) {
  console.error(`build: ${tsc} is missing: run \`npm ci\` in ${pkg} (scripts/bootstrap does)`);
  process.exit(1);
}
if (!fs.existsSync(path.join(protoSrc, "lensgrid", "v1", "worker.proto"))) {
  console.error(`build: no protos in ${protoSrc} (set LENSGRID_PROTO_DIR to the repository's proto/)`);
  process.exit(1);
}
fs.rmSync(dist, { recursive: true, force: true });
try {
  execFileSync(process.execPath, [tsc, "-p", path.join(pkg, "tsconfig.json")], { stdio: "inherit" });
} catch {
  process.exit(1);
}
const out = path.join(dist, "proto", "lensgrid", "v1");
fs.mkdirSync(out, { recursive: true });
const files = fs.readdirSync(path.join(protoSrc, "lensgrid", "v1")).filter((f) => f.endsWith(".proto"));
for (const f of files) fs.copyFileSync(path.join(protoSrc, "lensgrid", "v1", f), path.join(out, f));
console.log(`build: dist/ compiled, ${files.length} protos copied to dist/proto`);
