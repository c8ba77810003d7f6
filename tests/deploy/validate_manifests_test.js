// The offline manifest validation: every overlay renders and validates, and each kind of
// mistake it exists to catch is caught, naming the object.
//   node tests/deploy/validate_manifests_test.js      (exits 77, skipped, without kubectl)
"use strict";

const assert = require("assert");
const childProcess = require("child_process");
const path = require("path");
const test = require("node:test");

const kubectl = process.env.KUBECTL || "kubectl";
if (childProcess.spawnSync(kubectl, ["version", "--client"]).error) {
  console.log(`skipped: ${kubectl} not found (kubectl with kustomize renders the manifests)`);
  process.exit(77);  // ctest: skipped
}
const {kustomizationDirs, render, validateObjects, ROOT} = require("./validate_manifests.js");

const CPU = path.join(ROOT, "deploy", "k8s", "overlays", "cpu");

test("every overlay and example renders and validates", () => {
  const dirs = kustomizationDirs().map((d) => path.relative(ROOT, d));
  for (const wanted of ["overlays/cpu", "overlays/gpu", "overlays/batch"]) {
    assert.ok(dirs.includes(path.join("deploy", "k8s", wanted)), `${wanted} is missing`);
  }
  for (const dir of kustomizationDirs()) {
    assert.deepStrictEqual(validateObjects(render(dir)), [], dir);
  }
});

test("the gpu overlay asks for a GPU and runs the worker on it", () => {
  const objects = render(path.join(ROOT, "deploy", "k8s", "overlays", "gpu"));
  const worker = objects.find((o) => o.kind === "Deployment" && o.metadata.name === "lensgrid-worker");
  const c = worker.spec.template.spec.containers.find((x) => x.name === "worker");
  assert.strictEqual(String(c.resources.limits["nvidia.com/gpu"]), "1");
  assert.deepStrictEqual(c.args.slice(c.args.indexOf("--device"), c.args.indexOf("--device") + 2),
                         ["--device", "cuda:0"]);
  assert.match(c.image, /cuda/);
});

// One broken copy of the cpu overlay per mistake: [description, mutation, expected error].
const BROKEN = [
  ["a named port in a gRPC probe", (w) => { w.readinessProbe.grpc.port = "grpc"; },
   /Deployment\/lensgrid-worker: .*readinessProbe\/grpc\/port must be integer/],
  ["a misspelt field", (w) => { w.readinesProbe = w.readinessProbe; },
   /Deployment\/lensgrid-worker: .*containers\/0\/readinesProbe: unknown field/],
  ["a string where a number goes", (w, d) => { d.spec.replicas = "two"; },
   /Deployment\/lensgrid-worker: \/spec\/replicas must be integer/],
  ["a missing required field", (w, d) => { delete d.spec.selector; },
   /Deployment\/lensgrid-worker: \/spec must have required property selector/],
  ["an unknown kind", (w, d) => { d.kind = "Deploymnet"; },
   /Deploymnet\/lensgrid-worker: unknown apiVersion\/kind apps\/v1\/Deploymnet/],
  ["an image without a pinned tag", (w) => { w.image = "lensgrid"; },
   /Deployment\/lensgrid-worker: container worker: image "lensgrid" has no pinned tag/],
  ["a probe that is not gRPC", (w) => { w.livenessProbe = {tcpSocket: {port: 7071}}; },
   /container worker: livenessProbe is not a gRPC/],
  ["a probe on an undeclared port", (w) => { w.startupProbe.grpc.port = 7999; },
   /container worker: startupProbe port 7999 is not a declared containerPort/],
  ["an undefined $(VAR)", (w) => { w.args.push("$(NOPE)"); },
   /container worker: "\$\(NOPE\)" uses \$\(NOPE\), which is not in env/],
  ["a config map key that does not exist", (w) => { w.env.find((e) => e.name === "MODEL_DIR").valueFrom.configMapKeyRef.key = "NOPE"; },
   /env MODEL_DIR refers to ConfigMap lensgrid-config-\w+ key NOPE/],
  ["no resource requests", (w) => { delete w.resources.requests; },
   /container worker: no cpu\/memory requests/],
  ["a metrics annotation on an undeclared port", (w, d) => {
    d.spec.template.metadata.annotations["prometheus.io/port"] = "9999"; },
   /prometheus.io\/port "9999" is not a declared containerPort/],
];

for (const [what, mutate, expected] of BROKEN) {
  test(`catches ${what}`, () => {
    const objects = render(CPU);
    const deployment = objects.find((o) => o.kind === "Deployment");
    mutate(deployment.spec.template.spec.containers[0], deployment);
    const errors = validateObjects(objects);
    assert.ok(errors.some((e) => expected.test(e)), `expected ${expected}, got:\n${errors.join("\n")}`);
  });
}

test("catches errors deep in inline types and in other objects", () => {
  const objects = render(CPU);
  const sts = objects.find((o) => o.kind === "StatefulSet");
  sts.spec.volumeClaimTemplates[0].spec.accesModes = ["ReadWriteOnce"];
  const service = objects.find((o) => o.kind === "Service" && o.metadata.name === "lensgrid-coordinator");
  service.spec.ports[0].targetPort = "grcp";
  const errors = validateObjects(objects);
  assert.ok(errors.some((e) => /StatefulSet\/lensgrid-coordinator: \/spec\/volumeClaimTemplates\/0\/spec\/accesModes: unknown field/.test(e)), errors.join("\n"));
  assert.ok(errors.some((e) => /Service\/lensgrid-coordinator: port grpc: targetPort grcp is not a container port/.test(e)), errors.join("\n"));
});

test("the command line fails on a broken overlay, naming the object and the error", () => {
  const out = childProcess.spawnSync(process.execPath,
      [path.join(__dirname, "validate_manifests.js"), path.join(__dirname, "testdata", "broken-overlay")],
      {encoding: "utf8"});
  assert.strictEqual(out.status, 1, out.stdout + out.stderr);
  assert.match(out.stderr, /Deployment\/lensgrid-worker: .*readinessProbe\/grpc\/port must be integer/);
  assert.match(out.stderr, /Deployment\/lensgrid-worker: .*livenesProbe: unknown field/);
});
