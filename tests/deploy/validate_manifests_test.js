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
  ["a reply budget over half the memory limit", (w) => { w.resources.limits.memory = "2Gi"; },
   /container worker: --max-reply-memory 2147483648 is over half the memory limit 2Gi/],
  ["the default reply budget on a 4Gi worker",
   (w) => { w.args.splice(w.args.indexOf("--max-reply-memory"), 2); },
   /container worker: --max-reply-memory \(default 4 GiB\) is over half the memory limit 4Gi/],
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

// The security and autoscaling promises: [description, kustomization, mutation of the rendered
// objects, expected error]. Each mutation is one way to get them wrong.
const BATCH = path.join(ROOT, "deploy", "k8s", "overlays", "batch");
const KEDA = path.join(ROOT, "deploy", "k8s", "examples", "autoscaling");
const HPA = path.join(ROOT, "deploy", "k8s", "examples", "autoscaling-hpa");
const find = (objects, kind, name) => objects.find((o) => o.kind === kind && (!name || o.metadata.name === name));
const container = (objects, kind, name) => find(objects, kind, name).spec.template.spec.containers[0];
const policy = (objects) => find(objects, "NetworkPolicy", "lensgrid-coordinator");
const workQueueRule = (objects) => policy(objects).spec.ingress.find((r) => r.ports.some((p) => p.port === 7072));
const openRule = (objects) => policy(objects).spec.ingress.find((r) => !r.from);
const SECURITY = [
  ["no NetworkPolicy", CPU, (o) => { o.splice(o.indexOf(policy(o)), 1); },
   /StatefulSet\/lensgrid-coordinator: the worker-facing port 7072 \(--worker-listen\) is open to every pod: no NetworkPolicy/],
  ["the worker-facing port open to everyone", CPU, (o) => { delete workQueueRule(o).from; },
   /NetworkPolicy\/lensgrid-coordinator ingress 0 admits the worker-facing port 7072 from everywhere/],
  ["the worker-facing port open to the open rule", CPU, (o) => { openRule(o).ports.push({protocol: "TCP", port: 7072}); },
   /admits the worker-facing port 7072 from everywhere/],
  ["the worker-facing port open to every namespace", CPU, (o) => { workQueueRule(o).from[0].namespaceSelector = {}; },
   /admits the worker-facing port 7072 from other namespaces/],
  ["the worker-facing port open to the search Job", BATCH, (o) => {
    workQueueRule(o).from[0].podSelector.matchLabels = {"app.kubernetes.io/name": "lensgrid"}; },
   /admits the worker-facing port 7072 from non-worker pods \(.*Job\/lensgrid-search-induction/],
  ["a rule for the worker-facing port that selects no worker", CPU, (o) => {
    workQueueRule(o).from[0].podSelector.matchLabels["app.kubernetes.io/component"] = "workers"; },
   /(podSelector matches no worker pod|non-worker pods)/],
  ["the health port closed by the NetworkPolicy", CPU, (o) => {
    openRule(o).ports = openRule(o).ports.filter((p) => p.port !== 7079); },
   /StatefulSet\/lensgrid-coordinator: port 7079 \(health\) is closed by the NetworkPolicy/],
  ["a governing Service that is not headless", CPU, (o) => {
    delete find(o, "Service", "lensgrid-coordinator-headless").spec.clusterIP; },
   /StatefulSet\/lensgrid-coordinator: serviceName lensgrid-coordinator-headless: the governing Service is not headless/],
  ["a governing Service that is not rendered", CPU, (o) => { find(o, "StatefulSet").spec.serviceName = "nope"; },
   /serviceName nope: no such Service is rendered/],
  ["two coordinators", CPU, (o) => { find(o, "StatefulSet").spec.replicas = 2; },
   /StatefulSet\/lensgrid-coordinator: replicas 2: the coordinator runs as exactly 1 replica/],
  ["a TLS key that no Secret mount provides", CPU, (o) => {
    const c = container(o, "StatefulSet");
    c.volumeMounts = c.volumeMounts.filter((m) => m.name !== "tls"); },
   /container coordinator: env LENSGRID_TLS_CERT=\/etc\/lensgrid\/tls\/tls.crt: no volumeMount provides it/],
  ["a Secret volume whose items lack the CA", BATCH, (o) => {
    const spec = find(o, "Job").spec.template.spec;
    spec.volumes.find((v) => v.name === "tls").secret.items = [{key: "tls.crt", path: "tls.crt"}]; },
   /Job\/lensgrid-search-induction: container search: env LENSGRID_TLS_CA=\/etc\/lensgrid\/tls\/ca.crt: Secret lensgrid-tls's items do not include ca.crt/],
  ["a mount of a volume that does not exist", CPU, (o) => {
    find(o, "Deployment").spec.template.spec.volumes = find(o, "Deployment").spec.template.spec.volumes.filter((v) => v.name !== "auth-tokens"); },
   /Deployment\/lensgrid-worker: container worker: volumeMount auth-tokens names no volume/],
  ["a probe on the TLS port", CPU, (o) => {
    const c = container(o, "Deployment");
    c.readinessProbe.grpc.port = 7071; },
   /container worker: readinessProbe port 7071 is not the --health-listen port 7079/],
  ["TLS without a health port", CPU, (o) => {
    const c = container(o, "StatefulSet");
    c.args.splice(c.args.indexOf("--health-listen"), 2); },
   /container coordinator: startupProbe: the API needs TLS\/tokens and there is no --health-listen port/],
  ["a ScaledObject on a Deployment that is not rendered", KEDA, (o) => {
    find(o, "ScaledObject").spec.scaleTargetRef.name = "lensgrid-workers"; },
   /ScaledObject\/lensgrid-worker: \/spec\/scaleTargetRef: Deployment\/lensgrid-workers is not rendered/],
  ["a ScaledObject trigger that is not Prometheus", KEDA, (o) => {
    find(o, "ScaledObject").spec.triggers[0].type = "cpu"; },
   /ScaledObject\/lensgrid-worker: \/spec\/triggers\/0\/type: "cpu"/],
  ["a ScaledObject query without the backlog", KEDA, (o) => {
    find(o, "ScaledObject").spec.triggers[0].metadata.query = "sum(lensgrid_workers)"; },
   /\/spec\/triggers\/0\/metadata\/query does not name lensgrid_pending_shards/],
  ["a ScaledObject threshold that is a YAML number", KEDA, (o) => {
    find(o, "ScaledObject").spec.triggers[0].metadata.threshold = 4; },
   /\/spec\/triggers\/0\/metadata\/threshold must be a string/],
  ["a misspelt ScaledObject field", KEDA, (o) => {
    find(o, "ScaledObject").spec.minReplicas = 0; },
   /ScaledObject\/lensgrid-worker: \/spec\/minReplicas: unknown field/],
  ["a ScaledObject with max below min", KEDA, (o) => {
    find(o, "ScaledObject").spec.minReplicaCount = 9; },
   /\/spec\/maxReplicaCount is below minReplicaCount/],
  ["a Deployment that keeps its replicas under KEDA", KEDA, (o) => { find(o, "Deployment").spec.replicas = 2; },
   /ScaledObject\/lensgrid-worker: Deployment\/lensgrid-worker declares replicas: 2/],
  ["a Deployment that keeps its replicas under an HPA", HPA, (o) => { find(o, "Deployment").spec.replicas = 2; },
   /HorizontalPodAutoscaler\/lensgrid-worker: Deployment\/lensgrid-worker declares replicas: 2/],
  ["an HPA on a Deployment that is not rendered", HPA, (o) => {
    find(o, "HorizontalPodAutoscaler").spec.scaleTargetRef.name = "nope"; },
   /HorizontalPodAutoscaler\/lensgrid-worker: scaleTargetRef Deployment\/nope is not rendered/],
  ["another custom resource", CPU, (o) => { o.push({apiVersion: "keda.sh/v1alpha1", kind: "ScaledJob", metadata: {name: "x"}, spec: {}}); },
   /ScaledJob\/x: unknown apiVersion\/kind keda.sh\/v1alpha1\/ScaledJob/],
];

for (const [what, dir, mutate, expected] of SECURITY) {
  test(`catches ${what}`, () => {
    const objects = render(dir);
    assert.deepStrictEqual(validateObjects(objects), [], `${dir} is valid before the mutation`);
    mutate(objects);
    const errors = validateObjects(objects);
    assert.ok(errors.some((e) => expected.test(e)), `expected ${expected}, got:\n${errors.join("\n")}`);
  });
}

test("the manifests run with TLS and tokens from Secrets, probes on the health port", () => {
  const objects = render(BATCH);
  const secretOf = (spec, c, env) => {
    const e = c.env.find((x) => x.name === env);
    assert.ok(e, `${c.name}: no ${env}`);
    if (e.valueFrom) return e.valueFrom.secretKeyRef;
    const mount = c.volumeMounts.find((m) => e.value.startsWith(m.mountPath + "/"));
    return {name: spec.volumes.find((v) => v.name === mount.name).secret.secretName,
            key: e.value.slice(mount.mountPath.length + 1)};
  };
  const coordinator = find(objects, "StatefulSet").spec.template.spec;
  const worker = find(objects, "Deployment").spec.template.spec;
  const job = find(objects, "Job").spec.template.spec;
  for (const [spec, c] of [[coordinator, coordinator.containers[0]], [worker, worker.containers[0]]]) {
    assert.deepStrictEqual(secretOf(spec, c, "LENSGRID_TLS_CERT"), {name: "lensgrid-tls", key: "tls.crt"});
    assert.deepStrictEqual(secretOf(spec, c, "LENSGRID_TLS_KEY"), {name: "lensgrid-tls", key: "tls.key"});
    assert.deepStrictEqual(secretOf(spec, c, "LENSGRID_AUTH_TOKENS"), {name: "lensgrid-auth-tokens", key: "tokens"});
    for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
      assert.strictEqual(c[probe].grpc.port, 7079, `${c.name} ${probe}`);
    }
  }
  const w = worker.containers[0];
  assert.deepStrictEqual(secretOf(worker, w, "LENSGRID_COORDINATOR_TLS_CA"), {name: "lensgrid-tls", key: "ca.crt"});
  assert.deepStrictEqual(secretOf(worker, w, "LENSGRID_COORDINATOR_TOKEN"), {name: "lensgrid-worker-token", key: "token"});
  const search = job.containers[0];
  assert.deepStrictEqual(secretOf(job, search, "LENSGRID_TLS_CA"), {name: "lensgrid-tls", key: "ca.crt"});
  assert.deepStrictEqual(secretOf(job, search, "LENSGRID_TOKEN"), {name: "lensgrid-submitter-token", key: "token"});
  // The Job mounts the CA only, never the server's key.
  assert.deepStrictEqual(job.volumes.find((v) => v.name === "tls").secret.items, [{key: "ca.crt", path: "ca.crt"}]);
  // Retries of one Job share a request id: the Job's uid.
  assert.strictEqual(search.env.find((e) => e.name === "LENSGRID_REQUEST_ID").valueFrom.fieldRef.fieldPath,
                     "metadata.labels['batch.kubernetes.io/controller-uid']");
  // Workers dial the worker-facing Service, clients the client-facing one; the governing
  // Service is a third, headless one.
  const config = find(objects, "ConfigMap").data;
  assert.strictEqual(config.WORK_QUEUE_ADDRESS, "lensgrid-work-queue:7072");
  assert.strictEqual(config.COORDINATOR_ADDRESS, "lensgrid-coordinator:7070");
  assert.strictEqual(find(objects, "Service", "lensgrid-work-queue").spec.ports[0].port, 7072);
  assert.deepStrictEqual(find(objects, "Service", "lensgrid-coordinator").spec.ports.map((p) => p.port), [7070, 9090]);
  assert.strictEqual(find(objects, "Service", "lensgrid-coordinator").spec.clusterIP, undefined);
  assert.strictEqual(find(objects, "StatefulSet").spec.serviceName, "lensgrid-coordinator-headless");
});

test("the autoscaling examples: KEDA to zero on the backlog, an HPA from one", () => {
  const keda = render(KEDA);
  const scaled = find(keda, "ScaledObject");
  assert.strictEqual(scaled.spec.minReplicaCount, 0);
  assert.strictEqual(scaled.spec.scaleTargetRef.name, "lensgrid-worker");
  assert.match(scaled.spec.triggers[0].metadata.query, /lensgrid_pending_shards/);
  assert.strictEqual(find(keda, "Deployment").spec.replicas, undefined);
  const hpa = find(render(HPA), "HorizontalPodAutoscaler");
  assert.strictEqual(hpa.spec.minReplicas, 1);
  assert.strictEqual(hpa.spec.metrics[0].type, "External");
});

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
