#!/usr/bin/env node
// Renders every kustomization of deploy/k8s (overlays/* and examples/*) with `kubectl kustomize`
// and validates each rendered object, offline:
//   1. against the Kubernetes API types: the JSON schemas of the npm package kubernetes-models
//      (types, required fields, formats, enums; it knows gRPC probes);
//   2. strictly: no field the API type does not have (what `kubectl apply --validate=strict`
//      rejects), using the field lists of the same package's type declarations;
//   3. against what lensgrid's manifests promise (see checkConsistency).
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
  }
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

// All errors of a list of rendered objects, as "Kind/name: message" lines.
function validateObjects(objects) {
  const errors = [];
  for (const obj of objects) {
    const name = objectName(obj);
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

module.exports = {kustomizationDirs, render, validateObjects, validateDir, ROOT};

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
