// Every failure a caller of this package sees is a LensgridError: a server's status (with
// its gRPC code and message), or a problem found in this process (bad arguments, a worker
// API version this client does not speak, a malformed reply stream), never a raw grpc-js
// error.
import { status as GrpcStatus } from "@grpc/grpc-js";

/** gRPC status codes by name (google.rpc.Code). */
export const StatusCode = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type StatusCodeName = keyof typeof StatusCode;

const CODE_NAMES: Record<number, StatusCodeName> = Object.fromEntries(
  Object.entries(StatusCode).map(([name, code]) => [code, name as StatusCodeName]),
) as Record<number, StatusCodeName>;

/** "NOT_FOUND" for 5; "CODE_42" for a code gRPC does not define. */
export function statusCodeName(code: number): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

/**
 * Where an error was found: "server" (the status a worker or coordinator answered, or that
 * gRPC gave the call: UNAVAILABLE for an unreachable address, DEADLINE_EXCEEDED, ...) or
 * "client" (found in this process before or after the call: bad arguments are
 * INVALID_ARGUMENT, an API version mismatch FAILED_PRECONDITION, a malformed reply stream
 * DATA_LOSS, a failed or cancelled job FAILED_PRECONDITION / CANCELLED with the job's own code
 * in `jobErrorCode`).
 */
export type ErrorOrigin = "server" | "client";

export interface LensgridErrorOptions {
  address?: string;
  method?: string;
  origin?: ErrorOrigin;
  details?: string;
  metadata?: Record<string, string[]>;
  cause?: unknown;
}

export class LensgridError extends Error {
  /** The gRPC status code (numeric, google.rpc.Code). */
  readonly code: number;
  /** The code's name: "NOT_FOUND", "INVALID_ARGUMENT", ... */
  readonly codeName: string;
  /** The server's status message (or, for a client-side error, the same text as message). */
  readonly details: string;
  /** The server's address ("host:port"), when the error came from a call. */
  readonly address: string;
  /** The RPC ("RunWithCache"), when the error came from a call. */
  readonly method: string;
  readonly origin: ErrorOrigin;
  /** The trailing metadata of a failed call (string values only). */
  readonly metadata: Record<string, string[]>;

  constructor(code: number, details: string, options: LensgridErrorOptions = {}) {
    const name = statusCodeName(code);
    const where = options.method
      ? ` (${options.method}${options.address ? ` at ${options.address}` : ""})`
      : options.address
        ? ` (at ${options.address})`
        : "";
    super(`${name}: ${details}${where}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "LensgridError";
    this.code = code;
    this.codeName = name;
    this.details = options.details ?? details;
    this.address = options.address ?? "";
    this.method = options.method ?? "";
    this.origin = options.origin ?? "client";
    this.metadata = options.metadata ?? {};
  }
}

/** Bad arguments found before anything was sent (code INVALID_ARGUMENT, origin "client"). */
export function invalidInput(message: string): LensgridError {
  return new LensgridError(StatusCode.INVALID_ARGUMENT, message, { origin: "client" });
}

interface GrpcLikeError {
  code?: unknown;
  details?: unknown;
  message?: unknown;
  metadata?: { getMap?: () => Record<string, unknown> };
}

/** A grpc-js ServiceError (or anything a call threw) as a LensgridError. */
export function fromGrpcError(err: unknown, address: string, method: string): LensgridError {
  if (err instanceof LensgridError) return err;
  const e = (err ?? {}) as GrpcLikeError;
  if (typeof e.code === "number") {
    const details =
      typeof e.details === "string" && e.details !== ""
        ? e.details
        : typeof e.message === "string"
          ? e.message
          : String(err);
    const metadata: Record<string, string[]> = {};
    try {
      const map = e.metadata?.getMap?.() ?? {};
      for (const [k, v] of Object.entries(map)) {
        if (typeof v === "string") metadata[k] = [v];
      }
    } catch {
      // metadata is a courtesy; the status is what matters
    }
    return new LensgridError(e.code, details, { address, method, origin: "server", metadata, cause: err });
  }
  const text = err instanceof Error ? err.message : String(err);
  return new LensgridError(GrpcStatus.INTERNAL, `the call failed in the client: ${text}`, {
    address,
    method,
    origin: "client",
    cause: err,
  });
}
