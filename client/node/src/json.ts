// Messages written in protobuf's JSON mapping (https://protobuf.dev/programming-guides/json/),
// e.g. hook programs as program.proto's comment writes them and `lensgrid run --program` reads
// them, turned into the message objects this client sends. Field names may be the proto's
// (`if_true`) or their JSON names (`ifTrue`); enums by name or number; 64-bit integers as numbers
// or decimal strings; bytes as base64 (or a Buffer / Uint8Array); floats as numbers or "NaN",
// "Infinity", "-Infinity". An unknown field, a wrong type, an unknown enum name or two members
// of one oneof are INVALID_ARGUMENT errors naming the path (as every protobuf JSON parser
// refuses them), never silently dropped.
import * as protobuf from "protobufjs";
import { invalidInput } from "./errors";
import { PROTO_FILES, protoDir } from "./proto";
import * as path from "node:path";

let root: protobuf.Root | null = null;

function loadRoot(): protobuf.Root {
  if (root) return root;
  const dir = protoDir();
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(dir, target));
  r.loadSync(PROTO_FILES, { keepCase: true });
  r.resolveAll();
  root = r;
  return r;
}

function jsonName(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function kind(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `${typeof v} ${JSON.stringify(v)}`;
}

const INT_TYPES = new Set(["int32", "uint32", "sint32", "fixed32", "sfixed32", "int64", "uint64", "sint64", "fixed64", "sfixed64"]);

function scalar(field: protobuf.Field, v: unknown, where: string): unknown {
  const t = field.type;
  if (field.resolvedType instanceof protobuf.Enum) {
    const e = field.resolvedType;
    if (typeof v === "string") {
      if (!(v in e.values)) throw invalidInput(`${where}: unknown ${e.name} value ${JSON.stringify(v)}; one of ${Object.keys(e.values).join(", ")}`);
      return v;
    }
    if (typeof v === "number" && Number.isInteger(v)) return e.valuesById[v] ?? v;
    throw invalidInput(`${where}: expected a ${e.name} name or number, got ${kind(v)}`);
  }
  if (INT_TYPES.has(t)) {
    const unsigned = t.startsWith("u") || t.startsWith("fixed");
    const ok =
      (typeof v === "number" && Number.isInteger(v)) || (typeof v === "string" && /^-?\d+$/.test(v)) || typeof v === "bigint";
    if (!ok) throw invalidInput(`${where}: expected an integer, got ${kind(v)}`);
    const big = BigInt(v as string | number | bigint);
    const bits = t.endsWith("64") ? 64n : 32n;
    const min = unsigned ? 0n : -(1n << (bits - 1n));
    const max = unsigned ? (1n << bits) - 1n : (1n << (bits - 1n)) - 1n;
    if (big < min || big > max) throw invalidInput(`${where}: ${String(v)} is out of range for ${t}`);
    return bits === 64n ? big.toString() : Number(big);
  }
  switch (t) {
    case "double":
    case "float":
      if (typeof v === "number") return v;
      if (v === "NaN") return NaN;
      if (v === "Infinity") return Infinity;
      if (v === "-Infinity") return -Infinity;
      if (typeof v === "string" && v.trim() !== "" && !Number.isNaN(Number(v))) return Number(v);
      throw invalidInput(`${where}: expected a number, got ${kind(v)}`);
    case "bool":
      if (typeof v === "boolean") return v;
      throw invalidInput(`${where}: expected true or false, got ${kind(v)}`);
    case "string":
      if (typeof v === "string") return v;
      throw invalidInput(`${where}: expected a string, got ${kind(v)}`);
    case "bytes":
      if (v instanceof Uint8Array) return v;
      if (typeof v === "string" && /^[A-Za-z0-9+/_-]*={0,2}$/.test(v)) return Buffer.from(v, v.includes("-") || v.includes("_") ? "base64url" : "base64");
      throw invalidInput(`${where}: expected base64 bytes, got ${kind(v)}`);
  }
  throw invalidInput(`${where}: unsupported field type ${t}`);
}

function message(type: protobuf.Type, v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw invalidInput(`${where}: expected a ${type.name} object, got ${kind(v)}`);
  }
  const byName = new Map<string, protobuf.Field>();
  for (const f of type.fieldsArray) {
    byName.set(f.name, f);
    byName.set(jsonName(f.name), f);
  }
  const out: Record<string, unknown> = {};
  const oneofs = new Map<string, string>();
  for (const [key, value] of Object.entries(v as Record<string, unknown>)) {
    const field = byName.get(key);
    const at = `${where}.${key}`;
    if (!field) {
      const names = type.fieldsArray.map((f) => f.name).join(", ");
      throw invalidInput(`${at}: ${type.name} has no field ${JSON.stringify(key)} (it has ${names})`);
    }
    if (field.name in out) throw invalidInput(`${at}: ${field.name} is given twice`);
    if (value === null || value === undefined) continue; // JSON null: the field's default
    const oneof = field.partOf;
    if (oneof && !oneof.name.startsWith("_")) {
      const other = oneofs.get(oneof.name);
      if (other) throw invalidInput(`${at}: ${field.name} and ${other} are members of one oneof (${oneof.name}); set one`);
      oneofs.set(oneof.name, field.name);
    }
    const one = (x: unknown, w: string) =>
      field.resolvedType instanceof protobuf.Type ? message(field.resolvedType, x, w) : scalar(field, x, w);
    if (field.repeated) {
      if (!Array.isArray(value)) throw invalidInput(`${at}: expected an array, got ${kind(value)}`);
      out[field.name] = value.map((x, i) => one(x, `${at}[${i}]`));
    } else {
      out[field.name] = one(value, at);
    }
  }
  return out;
}

/** A lensgrid.v1 message (e.g. "lensgrid.v1.HookProgram") from its protobuf JSON form. */
export function fromProtoJSON(typeName: string, value: unknown, where = typeName.split(".").pop() ?? "message"): Record<string, unknown> {
  const type = loadRoot().lookupType(typeName);
  return message(type, typeof value === "string" ? parseJSON(value, where) : value, where);
}

function parseJSON(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw invalidInput(`${where}: not JSON: ${(e as Error).message}`);
  }
}

/**
 * A HookProgram message from protobuf JSON (an object, or its text), as program.proto's
 * comment writes programs and `lensgrid run --program FILE` reads them.
 */
export function programFromJSON(json: unknown, where = "program"): Record<string, unknown> {
  return fromProtoJSON("lensgrid.v1.HookProgram", json, where);
}
