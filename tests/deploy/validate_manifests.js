#!/usr/bin/env node
// Renders every kustomization of deploy/k8s (overlays/* and examples/*) with `kubectl kustomize`
// and validates each rendered object, offline:
//   1. against the Kubernetes API types: the JSON schemas of the npm package kubernetes-models
//      (types, required fields, formats, enums; it knows gRPC probes);
//   2. strictly: no field the API type does not have (what `kubectl apply --validate=strict`
//      rejects), using the field lists of the same package's type declarations;
//   3. against what lensgrid's manifests promise (see checkConsistency): among them security
//      (TLS and token files mounted from Secrets, probes on the plaintext health port, the
//      coordinator's worker-facing port reachable from worker pods only, a headless governing
//      Service for the single-replica StatefulSet) and autoscalers that target what exists.
// Custom resources (kinds of a CRD, e.g. KEDA's ScaledObject) are not in kubernetes-models: each
// kind lensgrid's manifests use has a structural check of the fields they use (CUSTOM_KINDS);
// any other unknown kind is an error, never skipped.
// Every error names the overlay, the object (Kind/name), the field path and what is wrong.
//
//   node tests/deploy/validate_manifests.js [KUSTOMIZATION_DIR...]
//
// Environment: LENSGRID_NODE_MODULES (default third_party/gpt2-bpe/node_modules, where
// scripts/bootstrap installs scripts/package.json), KUBECTL (default kubectl).
"use strict";

const childProcess = require("child_process");
const fs = require("fs");
const path = require("path");

const ROOT = path.resolve(__dirname, "..", "..");
const NODE_MODULES = process.env.LENSGRID_NODE_MODULES ||
    path.join(ROOT, "third_party", "gpt2-bpe", "node_modules");
const MODELS = path.join(NODE_MODULES, "kubernetes-models");
if (!fs.existsSync(path.join(MODELS, "package.json"))) {
  console.error(`${MODELS} is missing: run scripts/bootstrap (it installs scripts/package.json)`);
  process.exit(2);
}
const YAML = require(path.join(NODE_MODULES, "yaml"));

function kustomizationDirs() {
  const dirs = [];
  for (const parent of ["overlays", "examples"]) {
    const base = path.join(ROOT, "deploy", "k8s", parent);
    if (!fs.existsSync(base)) continue;
    for (const name of fs.readdirSync(base).sort()) {
      if (fs.existsSync(path.join(base, name, "kustomization.yaml"))) dirs.push(path.join(base, name));
    }
  }
  return dirs;
}

// `kubectl kustomize DIR` -> array of objects. Throws with kubectl's message.
function render(dir) {
  const kubectl = process.env.KUBECTL || "kubectl";
  const out = childProcess.spawnSync(kubectl, ["kustomize", dir], {encoding: "utf8"});
  if (out.error) throw new Error(`cannot run ${kubectl}: ${out.error.message}`);
  if (out.status !== 0) throw new Error(`kubectl kustomize ${dir} failed:\n${out.stderr}`);
  return YAML.parseAllDocuments(out.stdout).map((d) => d.toJS()).filter((o) => o);
}

function objectName(obj) {
  return `${obj && obj.kind}/${obj && obj.metadata && obj.metadata.name}`;
}

// "apps/v1" + "Deployment" -> [model class, its .d.ts file]; null when the package lacks it.
function modelFor(apiVersion, kind) {
  const dir = path.join(MODELS, ...String(apiVersion).split("/"));
  const dts = path.join(dir, `${kind}.d.ts`);
  if (!/^[A-Za-z0-9.\/-]+$/.test(String(apiVersion)) || !/^[A-Za-z0-9]+$/.test(String(kind)) ||
      !fs.existsSync(dts)) {
    return null;
  }
  return [require(dir)[kind], dts];
}

// ---- strict fields: the interface of a type declaration file, and the files it refers to ----

const interfaces = new Map();  // .d.ts path -> {fields: Map(name -> {refs, map, array})} | null

function resolveImport(fromFile, spec) {
  const file = spec.startsWith(".") ? path.resolve(path.dirname(fromFile), spec)
                                    : path.join(NODE_MODULES, spec);
  return `${file}.d.ts`;
}

// The fields of the first `export interface` of a generated declaration file. Each field:
// {ref: the declaration file of its type, or inline: {fields} for an inline object type, and
// map: true for a string-keyed map of that type}; arrays are walked element by element.
function loadInterface(file) {
  if (interfaces.has(file)) return interfaces.get(file);
  let parsed = null;
  if (fs.existsSync(file)) {
    const text = fs.readFileSync(file, "utf8");
    const imports = new Map();
    for (const m of text.matchAll(/import \{ (\w+) \} from "([^"]+)";/g)) {
      imports.set(m[1], resolveImport(file, m[2]));
    }
    const start = text.search(/export interface \w+( extends [\w, ]+)? \{/);
    if (start >= 0) {
      const lines = text.slice(text.indexOf("{", start) + 1).split("\n").map((l) => l.trim())
          .filter((l) => l && !l.startsWith("/*") && !l.startsWith("*"));
      const refOf = (type) => {
        const m = /\b(IIoK8s\w+)\b/.exec(type);
        return m ? imports.get(m[1]) || null : null;
      };
      // Fields from lines[i] up to the block's closing "}" line; returns [fields, next index].
      const parseBlock = (i) => {
        const fields = new Map();
        while (i < lines.length && !lines[i].startsWith("}")) {
          const field = /^"([^"]+)"\??: (.*)$/.exec(lines[i++]);
          if (!field) continue;
          const type = field[2];
          if (!type.endsWith("{")) {
            fields.set(field[1], {ref: refOf(type)});
          } else if (/^\[key: string\]: (.*);$/.test(lines[i])) {
            fields.set(field[1], {ref: refOf(lines[i]), map: true});
            i += 2;  // the value type and the closing "};"
          } else {
            const [inner, next] = parseBlock(i);
            fields.set(field[1], {inline: {fields: inner}});
            i = next + 1;
          }
        }
        return [fields, i];
      };
      parsed = {fields: parseBlock(0)[0],
                typeMeta: /extends TypeMeta/.test(text.slice(start, start + 200))};
    }
  }
  interfaces.set(file, parsed);
  return parsed;
}

function checkStrict(value, type, where, errors) {
  const iface = typeof type === "string" ? loadInterface(type) : type;
  if (!iface || value === null || typeof value !== "object" || Array.isArray(value)) return;
  for (const [key, child] of Object.entries(value)) {
    const field = iface.fields.get(key);
    if (!field && !(iface.typeMeta && (key === "apiVersion" || key === "kind"))) {
      errors.push(`${where}/${key}: unknown field "${key}"`);
      continue;
    }
    const type = field && (field.ref || field.inline);
    if (!type || child === null || typeof child !== "object") continue;
    if (field.map) {
      for (const [k, v] of Object.entries(child)) checkStrict(v, type, `${where}/${key}/${k}`, errors);
    } else if (Array.isArray(child)) {
      child.forEach((v, i) => checkStrict(v, type, `${where}/${key}/${i}`, errors));
    } else {
      checkStrict(child, type, `${where}/${key}`, errors);
    }
  }
}

// ---- lensgrid's own promises about its manifests ----

function podTemplate(obj) {
  const spec = obj.spec || {};
  if (obj.kind === "Pod") return {metadata: obj.metadata, spec};
  return spec.template || (spec.jobTemplate && spec.jobTemplate.spec && spec.jobTemplate.spec.template);
}

function matches(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
}

// What the loopback test (manifests_test.py) relies on and a cluster would reject or misrun:
// images pinned; every probe a gRPC probe on a declared numeric port; every $(VAR) defined;
// config map keys that exist; requests on every container; Services, PDBs and metrics
// annotations that point at something real.
function checkConsistency(objects) {
  const errors = [];  // [object, message]
  const configMaps = new Map(objects.filter((o) => o.kind === "ConfigMap")
      .map((o) => [o.metadata.name, o.data || {}]));
  const templates = objects.map((o) => [o, podTemplate(o)]).filter(([, t]) => t && t.spec);
  for (const [obj, template] of templates) {
    const spec = template.spec;
    const all = [...(spec.initContainers || []), ...(spec.containers || [])];
    for (const c of all) {
      const where = `container ${c.name}`;
      if (!/:[\w][\w.-]*$|@sha256:/.test(c.image || "") || /:latest$/.test(c.image)) {
        errors.push([obj, `${where}: image "${c.image}" has no pinned tag`]);
      }
      const requests = (c.resources && c.resources.requests) || {};
      if (!requests.cpu || !requests.memory) errors.push([obj, `${where}: no cpu/memory requests`]);
      const declared = new Set((c.ports || []).map((p) => p.containerPort));
      for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
        const probe = c[kind];
        if (!probe) continue;
        if (!probe.grpc) {
          errors.push([obj, `${where}: ${kind} is not a gRPC (grpc.health.v1) probe`]);
        } else if (!declared.has(probe.grpc.port)) {
          errors.push([obj, `${where}: ${kind} port ${probe.grpc.port} is not a declared containerPort`]);
        }
      }
      const env = new Set((c.env || []).map((e) => e.name));
      for (const arg of [...(c.command || []), ...(c.args || [])]) {
        for (const m of String(arg).matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
          if (!env.has(m[1])) errors.push([obj, `${where}: "${arg}" uses $(${m[1]}), which is not in env`]);
        }
      }
      for (const e of c.env || []) {
        const ref = e.valueFrom && e.valueFrom.configMapKeyRef;
        if (ref && !ref.optional && !(configMaps.has(ref.name) && ref.key in configMaps.get(ref.name))) {
          errors.push([obj, `${where}: env ${e.name} refers to ConfigMap ${ref.name} key ${ref.key}, which is not rendered`]);
        }
      }
    }
    const annotations = (template.metadata && template.metadata.annotations) || {};
    if (annotations["prometheus.io/scrape"] === "true") {
      const port = Number(annotations["prometheus.io/port"]);
      if (!all.some((c) => (c.ports || []).some((p) => p.containerPort === port))) {
        errors.push([obj, `prometheus.io/port "${annotations["prometheus.io/port"]}" is not a declared containerPort`]);
      }
    }
    if (obj.kind !== "Job" && obj.kind !== "CronJob" && spec.terminationGracePeriodSeconds === undefined) {
      errors.push([obj, "no terminationGracePeriodSeconds (graceful shutdown)"]);
    }
    for (const c of all) checkFileEnv(obj, spec, c, errors);
    for (const c of spec.containers || []) checkProbesOnHealthPort(obj, c, errors);
    for (const c of spec.containers || []) checkReplyBudget(obj, c, configMaps, errors);
  }
  checkNetworkPolicy(objects, templates, errors);
  checkStatefulSets(objects, errors);
  checkAutoscalers(objects, errors);
  const labelsOf = templates.map(([, t]) => (t.metadata && t.metadata.labels) || {});
  for (const obj of objects) {
    if (obj.kind === "Service" && obj.spec && obj.spec.selector) {
      const pods = templates.filter(([, t]) => matches(obj.spec.selector, t.metadata && t.metadata.labels));
      if (pods.length === 0) {
        errors.push([obj, "selector matches no pod template"]);
        continue;
      }
      for (const port of obj.spec.ports || []) {
        const target = port.targetPort === undefined ? port.port : port.targetPort;
        const ok = pods.some(([, t]) => t.spec.containers.some((c) => (c.ports || []).some(
            (p) => p.containerPort === target || p.name === target)));
        if (!ok) errors.push([obj, `port ${port.name || port.port}: targetPort ${target} is not a container port`]);
      }
    }
    if (obj.kind === "PodDisruptionBudget") {
      const selector = (obj.spec && obj.spec.selector && obj.spec.selector.matchLabels) || {};
      if (!labelsOf.some((labels) => matches(selector, labels))) {
        errors.push([obj, "selector matches no pod template"]);
      }
    }
  }
  return errors;
}

// ---- custom resources: a structural check of the fields lensgrid's manifests use ----

const isInt = (v) => Number.isInteger(v);
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// Unknown keys of `value` (an object) at `where`, given the known ones.
function unknownFields(value, known, where, errors) {
  if (!isObject(value)) {
    errors.push(`${where}: must be an object`);
    return;
  }
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) errors.push(`${where}/${key}: unknown field "${key}"`);
  }
}

// keda.sh/v1alpha1 ScaledObject (KEDA 2.x): the fields of its CRD that matter here, strictly;
// the target and the query are checked against the other rendered objects.
function checkScaledObject(obj, objects) {
  const errors = [];
  unknownFields(obj, ["apiVersion", "kind", "metadata", "spec"], "", errors);
  if (!isObject(obj.metadata) || !obj.metadata.name) errors.push("/metadata/name: required");
  const spec = obj.spec;
  if (!isObject(spec)) return errors.concat(["/spec: required"]);
  unknownFields(spec, ["scaleTargetRef", "pollingInterval", "cooldownPeriod",
                       "initialCooldownPeriod", "idleReplicaCount", "minReplicaCount",
                       "maxReplicaCount", "fallback", "advanced", "triggers"], "/spec", errors);
  for (const key of ["pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                     "idleReplicaCount", "minReplicaCount", "maxReplicaCount"]) {
    if (key in spec && !(isInt(spec[key]) && spec[key] >= 0)) {
      errors.push(`/spec/${key} must be a non-negative integer`);
    }
  }
  if (isInt(spec.minReplicaCount) && isInt(spec.maxReplicaCount) &&
      spec.maxReplicaCount < spec.minReplicaCount) {
    errors.push("/spec/maxReplicaCount is below minReplicaCount");
  }
  const ref = spec.scaleTargetRef;
  if (!isObject(ref) || typeof ref.name !== "string") {
    errors.push("/spec/scaleTargetRef/name: required");
  } else {
    unknownFields(ref, ["apiVersion", "kind", "name", "envSourceContainerName"],
                  "/spec/scaleTargetRef", errors);
    const kind = ref.kind || "Deployment";
    const target = objects.find((o) => o.kind === kind && o.metadata.name === ref.name);
    if (!target) {
      errors.push(`/spec/scaleTargetRef: ${kind}/${ref.name} is not rendered`);
    } else if (ref.apiVersion && ref.apiVersion !== target.apiVersion) {
      errors.push(`/spec/scaleTargetRef/apiVersion ${ref.apiVersion} is not ${target.apiVersion}`);
    }
  }
  if (spec.advanced !== undefined) {
    unknownFields(spec.advanced, ["restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig",
                                  "scalingModifiers"], "/spec/advanced", errors);
  }
  if (!Array.isArray(spec.triggers) || spec.triggers.length === 0) {
    errors.push("/spec/triggers: at least one trigger is required");
    return errors;
  }
  spec.triggers.forEach((t, i) => {
    const where = `/spec/triggers/${i}`;
    unknownFields(t, ["type", "name", "metadata", "authenticationRef", "metricType",
                      "useCachedMetrics"], where, errors);
    if (!isObject(t)) return;
    if (t.type !== "prometheus") {
      errors.push(`${where}/type: "${t.type}": the workers scale on Prometheus (lensgrid_pending_shards)`);
      return;
    }
    const m = t.metadata;
    if (!isObject(m)) {
      errors.push(`${where}/metadata: required`);
      return;
    }
    for (const [key, value] of Object.entries(m)) {
      // KEDA's trigger metadata is a map of strings: a YAML number there is rejected.
      if (typeof value !== "string") errors.push(`${where}/metadata/${key} must be a string`);
    }
    if (!/^https?:\/\/[^\s/]+/.test(m.serverAddress || "")) {
      errors.push(`${where}/metadata/serverAddress: not an http(s) URL`);
    }
    if (!/\blensgrid_pending_shards\b/.test(m.query || "")) {
      errors.push(`${where}/metadata/query does not name lensgrid_pending_shards (the coordinator's backlog)`);
    }
    for (const key of ["threshold", "activationThreshold"]) {
      if (key in m && !(typeof m[key] === "string" && /^[0-9]+(\.[0-9]+)?$/.test(m[key]))) {
        errors.push(`${where}/metadata/${key} must be a number in a string`);
      }
    }
    if (!("threshold" in m)) errors.push(`${where}/metadata/threshold: required`);
  });
  return errors;
}

// "group/version/Kind" -> (object, all rendered objects) -> ["/path: message"].
const CUSTOM_KINDS = {
  "keda.sh/v1alpha1/ScaledObject": checkScaledObject,
};

// ---- security: Secrets, probes, the worker-facing port, the governing Service ----

function programOf(c) {
  return path.basename(String((c.command || [])[0] || ""));
}

// The value of `--flag V` or `--flag=V` in a container's args (undefined when absent).
function argValue(c, flag) {
  const args = (c.args || []).map(String);
  for (let i = 0; i < args.length; i++) {
    if (args[i] === flag) return args[i + 1];
    if (args[i].startsWith(flag + "=")) return args[i].slice(flag.length + 1);
  }
  return undefined;
}

function portOf(hostPort) {
  const m = /:(\d+)$/.exec(String(hostPort || ""));
  return m ? Number(m[1]) : undefined;
}

// Environment variables whose value is a file the program reads (TLS material, token tables).
const FILE_ENV = /^LENSGRID_(COORDINATOR_)?(TLS_CERT|TLS_KEY|TLS_CA|TLS_CLIENT_CA|AUTH_TOKENS)$/;

// Every file-valued LENSGRID_* variable names a file that a mount of the container provides: a
// Secret volume's key (or one of its `items`), or another volume.
function checkFileEnv(obj, spec, c, errors) {
  const volumes = new Map((spec.volumes || []).map((v) => [v.name, v]));
  for (const t of (obj.spec && obj.spec.volumeClaimTemplates) || []) volumes.set(t.metadata.name, {claim: true});
  for (const m of c.volumeMounts || []) {
    if (!volumes.has(m.name)) errors.push([obj, `container ${c.name}: volumeMount ${m.name} names no volume`]);
  }
  for (const e of c.env || []) {
    if (!FILE_ENV.test(e.name) || typeof e.value !== "string") continue;
    const file = e.value;
    const mount = (c.volumeMounts || []).filter((m) => file.startsWith(m.mountPath.replace(/\/$/, "") + "/"))
        .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
    if (!mount) {
      errors.push([obj, `container ${c.name}: env ${e.name}=${file}: no volumeMount provides it (mount its Secret)`]);
      continue;
    }
    const volume = volumes.get(mount.name);
    const secret = volume && volume.secret;
    if (!secret) continue;
    const rel = file.slice(mount.mountPath.replace(/\/$/, "").length + 1);
    if (secret.items && !secret.items.some((it) => it.path === rel)) {
      errors.push([obj, `container ${c.name}: env ${e.name}=${file}: Secret ${secret.secretName}'s items do not include ${rel}`]);
    }
  }
}

// A container with TLS serves its API to the kubelet's probes only through --health-listen:
// gRPC probes speak neither TLS nor tokens.
// A Kubernetes memory quantity ("4Gi", "512Mi", "2G", "1000000") in bytes; NaN when malformed.
function memoryBytes(quantity) {
  const m = /^([0-9.]+)([KMGTE]i?)?$/.exec(String(quantity));
  if (!m) return NaN;
  const units = {"": 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12, E: 1e18, Ki: 2 ** 10, Mi: 2 ** 20,
                 Gi: 2 ** 30, Ti: 2 ** 40, Ei: 2 ** 60};
  return Number(m[1]) * units[m[2] || ""];
}

// `text` with its $(VAR)s resolved from the container's env (literal values and ConfigMap keys).
function resolveEnv(text, c, configMaps) {
  return String(text).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, name) => {
    const e = (c.env || []).find((x) => x.name === name);
    if (!e) return all;
    if (typeof e.value === "string") return e.value;
    const ref = e.valueFrom && e.valueFrom.configMapKeyRef;
    const data = ref && configMaps.get(ref.name);
    return data && ref.key in data ? String(data[ref.key]) : all;
  });
}

// A worker's reply budget (--max-reply-memory, default 4 GiB) fits in half its memory limit:
// the other half is the model's, so a burst of replies is RESOURCE_EXHAUSTED, never an OOM kill.
function checkReplyBudget(obj, c, configMaps, errors) {
  if (programOf(c) !== "lensgrid-worker") return;
  const limit = memoryBytes(((c.resources || {}).limits || {}).memory);
  if (!(limit > 0)) {
    errors.push([obj, `container ${c.name}: no memory limit (the reply budget must fit in one)`]);
    return;
  }
  const flag = argValue(c, "--max-reply-memory");
  const budget = flag === undefined ? 4 * 2 ** 30 : Number(resolveEnv(flag, c, configMaps));
  if (!(budget > 0) || budget > limit / 2) {
    errors.push([obj, `container ${c.name}: --max-reply-memory ${flag === undefined ? "(default 4 GiB)" : budget} ` +
                      `is over half the memory limit ${c.resources.limits.memory}`]);
  }
}

function checkProbesOnHealthPort(obj, c, errors) {
  const tls = (c.env || []).some((e) => e.name === "LENSGRID_TLS_CERT") || argValue(c, "--tls-cert");
  const tokens = (c.env || []).some((e) => e.name === "LENSGRID_AUTH_TOKENS") || argValue(c, "--auth-tokens");
  const health = portOf(argValue(c, "--health-listen"));
  for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    const probe = c[kind];
    if (!probe || !probe.grpc) continue;
    if ((tls || tokens) && health === undefined) {
      errors.push([obj, `container ${c.name}: ${kind}: the API needs TLS/tokens and there is no --health-listen port for the probes`]);
    } else if (health !== undefined && probe.grpc.port !== health) {
      errors.push([obj, `container ${c.name}: ${kind} port ${probe.grpc.port} is not the --health-listen port ${health} (gRPC probes speak neither TLS nor tokens)`]);
    }
  }
}

function selectorMatches(selector, labels) {
  if (!isObject(selector)) return false;
  if (selector.matchExpressions && selector.matchExpressions.length) return null;  // not checked
  return matches(selector.matchLabels || {}, labels);
}

// Does a NetworkPolicy ingress rule's `ports` admit `port` (number, or the container port's name)?
function ruleAdmits(rule, port, portName) {
  if (!rule.ports || rule.ports.length === 0) return true;
  return rule.ports.some((p) => {
    if ((p.protocol || "TCP") !== "TCP") return false;
    if (p.port === undefined) return true;
    if (p.port === portName) return true;
    if (typeof p.port === "number") return port >= p.port && port <= (p.endPort || p.port);
    return false;
  });
}

// The coordinator's worker-facing port (--worker-listen) is reachable from worker pods only;
// its other ports (clients, metrics, the probes' health port) stay reachable from anywhere.
function checkNetworkPolicy(objects, templates, errors) {
  const workerLabels = templates.filter(([, t]) => t.spec.containers.some((c) => programOf(c) === "lensgrid-worker"))
      .map(([, t]) => (t.metadata && t.metadata.labels) || {});
  const otherLabels = templates.filter(([, t]) => !t.spec.containers.some((c) => programOf(c) === "lensgrid-worker"))
      .map(([o, t]) => [o, (t.metadata && t.metadata.labels) || {}]);
  const policies = objects.filter((o) => o.kind === "NetworkPolicy");
  for (const [obj, template] of templates) {
    const labels = (template.metadata && template.metadata.labels) || {};
    for (const c of template.spec.containers) {
      const workerPort = portOf(argValue(c, "--worker-listen"));
      if (programOf(c) !== "lensgrid-coordinator" || workerPort === undefined) continue;
      const selecting = policies.filter((p) => p.spec && selectorMatches(p.spec.podSelector, labels) &&
          ((p.spec.policyTypes || ["Ingress"]).includes("Ingress")));
      if (selecting.length === 0) {
        errors.push([obj, `the worker-facing port ${workerPort} (--worker-listen) is open to every pod: no NetworkPolicy selects these pods`]);
        continue;
      }
      const portName = ((c.ports || []).find((p) => p.containerPort === workerPort) || {}).name;
      let fromWorkers = false;
      for (const policy of selecting) {
        (policy.spec.ingress || []).forEach((rule, i) => {
          if (!ruleAdmits(rule, workerPort, portName)) return;
          const where = `NetworkPolicy/${policy.metadata.name} ingress ${i}`;
          if (!rule.from || rule.from.length === 0) {
            errors.push([obj, `${where} admits the worker-facing port ${workerPort} from everywhere`]);
            return;
          }
          for (const peer of rule.from) {
            if (peer.namespaceSelector || peer.ipBlock || !peer.podSelector) {
              errors.push([obj, `${where} admits the worker-facing port ${workerPort} from ${peer.ipBlock ? "an ipBlock" : "other namespaces"}`]);
              continue;
            }
            const matched = workerLabels.some((l) => selectorMatches(peer.podSelector, l));
            const others = otherLabels.filter(([, l]) => selectorMatches(peer.podSelector, l) !== false);
            if (others.length) {
              errors.push([obj, `${where} admits the worker-facing port ${workerPort} from non-worker pods (${others.map(([o]) => objectName(o)).join(", ")})`]);
            } else if (!matched) {
              errors.push([obj, `${where}: its podSelector matches no worker pod`]);
            } else {
              fromWorkers = true;
            }
          }
        });
      }
      if (!fromWorkers) {
        errors.push([obj, `no NetworkPolicy rule admits the worker pods to the worker-facing port ${workerPort}`]);
      }
      for (const p of c.ports || []) {
        if (p.containerPort === workerPort) continue;
        const open = selecting.some((policy) => (policy.spec.ingress || []).some(
            (rule) => (!rule.from || rule.from.length === 0) && ruleAdmits(rule, p.containerPort, p.name)));
        if (!open) {
          errors.push([obj, `port ${p.containerPort} (${p.name}) is closed by the NetworkPolicy (clients, metrics and the kubelet's probes need it)`]);
        }
      }
    }
  }
}

// A StatefulSet's serviceName is a rendered headless Service selecting its pods; the
// coordinator's stays at one replica (one process owns its state).
function checkStatefulSets(objects, errors) {
  for (const sts of objects.filter((o) => o.kind === "StatefulSet")) {
    const spec = sts.spec || {};
    const service = objects.find((o) => o.kind === "Service" && o.metadata.name === spec.serviceName);
    const labels = (spec.template && spec.template.metadata && spec.template.metadata.labels) || {};
    if (!service) {
      errors.push([sts, `serviceName ${spec.serviceName}: no such Service is rendered (the governing Service)`]);
    } else if (!service.spec || service.spec.clusterIP !== "None") {
      errors.push([sts, `serviceName ${spec.serviceName}: the governing Service is not headless (clusterIP: None)`]);
    } else if (!matches(service.spec.selector, labels) || !service.spec.selector) {
      errors.push([sts, `serviceName ${spec.serviceName}: the governing Service does not select its pods`]);
    }
    const coordinator = ((spec.template && spec.template.spec && spec.template.spec.containers) || [])
        .some((c) => programOf(c) === "lensgrid-coordinator");
    if (coordinator && spec.replicas !== 1) {
      errors.push([sts, `replicas ${spec.replicas}: the coordinator runs as exactly 1 replica (its state is one store)`]);
    }
  }
}

// HPAs and ScaledObjects target a rendered workload, which then declares no replicas of its own
// (every `kubectl apply` would reset what the autoscaler chose).
function checkAutoscalers(objects, errors) {
  for (const a of objects.filter((o) => o.kind === "HorizontalPodAutoscaler" || o.kind === "ScaledObject")) {
    const ref = (a.spec && a.spec.scaleTargetRef) || {};
    const kind = ref.kind || "Deployment";
    const target = objects.find((o) => o.kind === kind && o.metadata.name === ref.name);
    if (!target) {
      errors.push([a, `scaleTargetRef ${kind}/${ref.name} is not rendered`]);
    } else if (target.spec && target.spec.replicas !== undefined) {
      errors.push([a, `${kind}/${ref.name} declares replicas: ${target.spec.replicas}, which each kubectl apply would reset (remove it: the autoscaler owns it)`]);
    }
  }
}

// All errors of a list of rendered objects, as "Kind/name: message" lines.
function validateObjects(objects) {
  const errors = [];
  for (const obj of objects) {
    const name = objectName(obj);
    const custom = obj && CUSTOM_KINDS[`${obj.apiVersion}/${obj.kind}`];
    if (custom) {
      for (const e of custom(obj, objects)) errors.push(`${name}: ${e}`);
      continue;
    }
    const model = obj && obj.apiVersion && obj.kind ? modelFor(obj.apiVersion, obj.kind) : null;
    if (!model || typeof model[0] !== "function") {
      errors.push(`${name}: unknown apiVersion/kind ${obj && obj.apiVersion}/${obj && obj.kind}`);
      continue;
    }
    try {
      new model[0](obj).validate();
    } catch (e) {
      const details = (e.errors || []).map((d) => `${d.instancePath || "/"} ${d.message}`);
      errors.push(`${name}: ${details.length ? details.join("; ") : e.message}`);
    }
    const iface = loadInterface(model[1]);
    if (!iface || !iface.fields.has("metadata")) {
      errors.push(`${name}: cannot read the fields of ${model[1]} (kubernetes-models changed?)`);
    }
    const strict = [];
    checkStrict(obj, model[1], "", strict);
    for (const s of strict) errors.push(`${name}: ${s}`);
  }
  for (const [obj, message] of checkConsistency(objects)) errors.push(`${objectName(obj)}: ${message}`);
  return errors;
}

function validateDir(dir) {
  let objects;
  try {
    objects = render(dir);
  } catch (e) {
    return {objects: [], errors: [e.message]};
  }
  return {objects, errors: validateObjects(objects)};
}

module.exports = {kustomizationDirs, render, validateObjects, validateDir, ROOT, CUSTOM_KINDS};

if (require.main === module) {
  const dirs = process.argv.length > 2 ? process.argv.slice(2).map((d) => path.resolve(d))
                                       : kustomizationDirs();
  let failed = 0;
  for (const dir of dirs) {
    const label = path.relative(ROOT, dir) || dir;
    const {objects, errors} = validateDir(dir);
    if (errors.length) {
      failed++;
      console.error(`FAIL ${label}:`);
      for (const e of errors) console.error(`  ${e}`);
    } else {
      console.log(`ok   ${label}: ${objects.length} objects (${objects.map(objectName).join(", ")})`);
    }
  }
  if (dirs.length === 0) {
    console.error("no kustomizations found");
    failed = 1;
  }
  process.exit(failed ? 1 : 0);
}
