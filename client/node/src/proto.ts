// The lensgrid.v1 protos, loaded at run time with @grpc/proto-loader from the copies this
// package carries (dist/proto, copied from the repository's proto/ when it is built).
//
// Messages are plain objects with the protos' own field names (keepCase: snake_case, as in
// every lensgrid client), enums as their names ("F32", "JOB_SUCCEEDED"), bytes as Buffers,
// every field present (defaults: true) and each oneof's set member named by the oneof
// ("item": "header"). 64-bit integers (int64, uint64) come out as JS numbers when they are
// safe integers (|v| <= 2^53 - 1: token ids, shapes, sizes, timestamps, sequence numbers)
// and as bigints otherwise, so that no value is ever silently rounded.
import * as path from "node:path";
import * as fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const PROTO_FILES = [
  "lensgrid/v1/tensor.proto",
  "lensgrid/v1/program.proto",
  "lensgrid/v1/search.proto",
  "lensgrid/v1/worker.proto",
  "lensgrid/v1/coordinator.proto",
];

/** Where the package's protos are: dist/proto next to this file. */
export function protoDir(): string {
  const dir = path.join(__dirname, "proto");
  if (!fs.existsSync(path.join(dir, "lensgrid", "v1", "worker.proto"))) {
    throw new Error(
      `lensgrid: the protos are missing from ${dir}; build the package (npm run build copies the repository's proto/ there)`,
    );
  }
  return dir;
}

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

interface FieldDesc {
  name: string;
  label: string;
  type: string;
  typeName: string;
}
interface MessageDesc {
  name: string;
  field: FieldDesc[];
}

const INT64_TYPES = new Set(["TYPE_INT64", "TYPE_UINT64", "TYPE_SINT64", "TYPE_FIXED64", "TYPE_SFIXED64"]);

interface FieldPlan {
  name: string;
  repeated: boolean;
  int64: boolean;
  message: string; // full name of a message-typed field, "" otherwise
}

let loaded: {
  def: protoLoader.PackageDefinition;
  plans: Map<string, FieldPlan[]>;
  clients: Map<string, grpc.ServiceClientConstructor>;
} | null = null;

function load() {
  if (loaded) return loaded;
  const def = protoLoader.loadSync(PROTO_FILES, { ...LOADER_OPTIONS, includeDirs: [protoDir()] });
  const messages = new Map<string, MessageDesc>();
  for (const [name, value] of Object.entries(def)) {
    const v = value as { format?: string; type?: unknown };
    if (v.format === "Protocol Buffer 3 DescriptorProto") messages.set(name, v.type as MessageDesc);
  }
  const resolve = (scope: string, typeName: string): string => {
    if (typeName.startsWith(".")) return typeName.slice(1);
    const parts = scope.split(".");
    for (let i = parts.length; i >= 0; i--) {
      const candidate = [...parts.slice(0, i), typeName].join(".");
      if (messages.has(candidate)) return candidate;
    }
    throw new Error(`lensgrid: cannot resolve message type ${typeName} from ${scope}`);
  };
  const plans = new Map<string, FieldPlan[]>();
  for (const [name, desc] of messages) {
    const plan: FieldPlan[] = [];
    for (const f of desc.field) {
      const int64 = INT64_TYPES.has(f.type);
      const message = f.type === "TYPE_MESSAGE" ? resolve(name, f.typeName) : "";
      if (int64 || message) plan.push({ name: f.name, repeated: f.label === "LABEL_REPEATED", int64, message });
    }
    plans.set(name, plan);
  }
  loaded = { def, plans, clients: new Map() };
  return loaded;
}

function int64Value(v: unknown): unknown {
  if (typeof v === "string") {
    const n = Number(v);
    return Number.isSafeInteger(n) ? n : BigInt(v);
  }
  if (typeof v === "object" && v !== null && "toString" in v) {
    // a Long (should loading options change): through its decimal text
    return int64Value(String(v));
  }
  return v;
}

/** Converts a decoded message's 64-bit integer fields in place (see the file comment). */
export function normalizeMessage(typeName: string, msg: unknown): unknown {
  const { plans } = load();
  const walk = (type: string, m: Record<string, unknown>): void => {
    const plan = plans.get(type);
    if (!plan || !plan.length) return;
    for (const f of plan) {
      const v = m[f.name];
      if (v === undefined || v === null) continue;
      if (f.int64) {
        m[f.name] = f.repeated ? (v as unknown[]).map(int64Value) : int64Value(v);
      } else if (f.repeated) {
        for (const item of v as Record<string, unknown>[]) walk(f.message, item);
      } else {
        walk(f.message, v as Record<string, unknown>);
      }
    }
  };
  if (msg && typeof msg === "object") walk(typeName, msg as Record<string, unknown>);
  return msg;
}

function fullNameOf(def: protoLoader.PackageDefinition, t: { type: MessageDesc }): string {
  // Request and reply types are top-level messages of lensgrid.v1 (or google.protobuf).
  for (const pkg of ["lensgrid.v1", "google.protobuf"]) {
    if (def[`${pkg}.${t.type.name}`]) return `${pkg}.${t.type.name}`;
  }
  throw new Error(`lensgrid: cannot find message type ${t.type.name}`);
}

/** A grpc-js client constructor for a lensgrid.v1 service whose replies are normalized. */
export function serviceClient(service: "Worker" | "Coordinator" | "WorkQueue"): grpc.ServiceClientConstructor {
  const l = load();
  const cached = l.clients.get(service);
  if (cached) return cached;
  const original = l.def[`lensgrid.v1.${service}`] as protoLoader.ServiceDefinition;
  const wrapped: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const [method, m] of Object.entries(original)) {
    const responseName = fullNameOf(l.def, m.responseType as unknown as { type: MessageDesc });
    const deserialize = m.responseDeserialize;
    wrapped[method] = {
      ...m,
      responseDeserialize: (buf: Buffer) => normalizeMessage(responseName, deserialize(buf)),
    } as grpc.MethodDefinition<object, object>;
  }
  const ctor = grpc.makeGenericClientConstructor(wrapped as grpc.ServiceDefinition, service);
  l.clients.set(service, ctor);
  return ctor;
}

type Codec = { serialize: (v: object) => Buffer; deserialize: (b: Buffer) => unknown };

/** The serializer and deserializer of a request or reply type of a lensgrid.v1 service. */
function codec(typeName: string): Codec {
  const l = load();
  for (const svc of ["Worker", "Coordinator", "WorkQueue"]) {
    const s = l.def[`lensgrid.v1.${svc}`] as protoLoader.ServiceDefinition;
    for (const m of Object.values(s)) {
      if (fullNameOf(l.def, m.requestType as unknown as { type: MessageDesc }) === typeName) {
        return { serialize: m.requestSerialize, deserialize: m.requestDeserialize };
      }
      if (fullNameOf(l.def, m.responseType as unknown as { type: MessageDesc }) === typeName) {
        return { serialize: m.responseSerialize, deserialize: m.responseDeserialize };
      }
    }
  }
  throw new Error(`lensgrid: ${typeName} is not a request or reply type of a lensgrid.v1 service`);
}

/** Encodes a message (a plain object, proto field names) of a request or reply type. */
export function encodeMessage(typeName: string, value: object): Buffer {
  return codec(typeName).serialize(value);
}

/** Decodes a serialized request or reply message, 64-bit integers normalized as replies are. */
export function decodeMessage(typeName: string, buf: Buffer): unknown {
  return normalizeMessage(typeName, codec(typeName).deserialize(buf));
}

/** The names of an enum's values, in number order (e.g. "lensgrid.v1.SearchMethod"). */
export function enumValues(fullName: string): string[] {
  const l = load();
  const e = l.def[fullName] as { format?: string; type?: { value: { name: string; number: number }[] } };
  if (!e || e.format !== "Protocol Buffer 3 EnumDescriptorProto" || !e.type) {
    throw new Error(`lensgrid: no enum ${fullName}`);
  }
  return [...e.type.value].sort((a, b) => a.number - b.number).map((v) => v.name);
}

