// Channels as the lensgrid CLI opens them (common/auth.h): TLS when a CA or a client
// certificate is given, `authorization: Bearer TOKEN` on every call when a token is given,
// each setting left undefined taken from LENSGRID_TLS_CA, LENSGRID_TLS_CERT,
// LENSGRID_TLS_KEY and LENSGRID_TOKEN; keepalive pings as the C++ and Python clients.
import * as fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { LensgridError, StatusCode, fromGrpcError, invalidInput } from "./errors";

export interface ConnectionOptions {
  /** CA certificate(s) the server's certificate must chain to: a PEM file path, or PEM bytes. TLS when set. */
  tlsCa?: string | Buffer;
  /** Client certificate (mTLS): a PEM file path or PEM bytes; needs tlsKey. TLS when set. */
  tlsCert?: string | Buffer;
  /** The private key of tlsCert: a PEM file path or PEM bytes. */
  tlsKey?: string | Buffer;
  /** Sent as `authorization: Bearer TOKEN` with every call. */
  token?: string;
  /** Deadline of each call in milliseconds (undefined: none). Calls take their own timeoutMs too. */
  timeoutMs?: number;
  /** Extra grpc-js channel options (e.g. {"grpc.ssl_target_name_override": "localhost"}). */
  channelOptions?: grpc.ChannelOptions;
}

/** Per call: a deadline and an AbortSignal that cancels the call (CANCELLED). */
export interface CallOptions {
  /** Deadline in milliseconds (default the connection's timeoutMs; Infinity: none). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export const KEEPALIVE_OPTIONS: grpc.ChannelOptions = {
  "grpc.keepalive_time_ms": 30000,
  "grpc.keepalive_timeout_ms": 10000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.max_pings_without_data": 0,
};

function setting(
  given: string | Buffer | undefined,
  env: string,
): { value: string | Buffer; from: string } | null {
  if (given !== undefined) {
    if (typeof given === "string" && given === "") return null;
    return { value: given, from: "" };
  }
  const v = process.env[env];
  return v ? { value: v, from: env } : null;
}

function readPem(s: { value: string | Buffer; from: string }, option: string): Buffer {
  if (Buffer.isBuffer(s.value)) return s.value;
  try {
    return fs.readFileSync(s.value);
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code ?? String(e);
    throw invalidInput(`${option}${s.from ? ` (from ${s.from})` : ""} ${s.value}: cannot read: ${why}`);
  }
}

export function checkToken(token: string, what = "token"): void {
  for (const c of token) {
    const code = c.codePointAt(0) ?? 0;
    if (code <= 0x20 || code >= 0x7f) {
      throw invalidInput(`${what} holds a character a header cannot carry (only printable ASCII, no spaces)`);
    }
  }
}

/** A grpc-js client of one lensgrid.v1 service, with the settings above. */
export class Connection {
  readonly address: string;
  readonly timeoutMs: number | undefined;
  readonly tls: boolean;
  private readonly client: grpc.Client;
  private readonly authorization: string | null;
  private closed = false;

  constructor(ctor: grpc.ServiceClientConstructor, address: string, options: ConnectionOptions = {}) {
    if (typeof address !== "string" || address === "") throw invalidInput("address must be a non-empty \"host:port\"");
    this.address = address;
    if (options.timeoutMs !== undefined && !(options.timeoutMs > 0)) {
      throw invalidInput(`timeoutMs must be > 0, got ${options.timeoutMs}`);
    }
    this.timeoutMs = options.timeoutMs;
    const ca = setting(options.tlsCa, "LENSGRID_TLS_CA");
    const cert = setting(options.tlsCert, "LENSGRID_TLS_CERT");
    const key = setting(options.tlsKey, "LENSGRID_TLS_KEY");
    const token = options.token !== undefined ? options.token : (process.env.LENSGRID_TOKEN ?? "");
    if (!!cert !== !!key) {
      throw invalidInput(
        cert ? "tlsCert is given without tlsKey (mTLS needs both)" : "tlsKey is given without tlsCert (mTLS needs both)",
      );
    }
    let creds: grpc.ChannelCredentials;
    if (ca || cert) {
      creds = grpc.credentials.createSsl(
        ca ? readPem(ca, "tlsCa") : null,
        key ? readPem(key, "tlsKey") : null,
        cert ? readPem(cert, "tlsCert") : null,
      );
      this.tls = true;
    } else {
      creds = grpc.credentials.createInsecure();
      this.tls = false;
    }
    if (token) {
      checkToken(token, options.token !== undefined ? "token" : "LENSGRID_TOKEN");
      this.authorization = `Bearer ${token}`;
    } else {
      this.authorization = null;
    }
    this.client = new ctor(address, creds, {
      ...KEEPALIVE_OPTIONS,
      "grpc.max_receive_message_length": 16 << 20,
      ...(options.channelOptions ?? {}),
    });
  }

  close(): void {
    this.closed = true;
    this.client.close();
  }

  private checkOpen(method: string): void {
    if (this.closed) {
      throw new LensgridError(StatusCode.FAILED_PRECONDITION, "the connection was closed (close() was called)", {
        address: this.address,
        method,
      });
    }
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.authorization) md.set("authorization", this.authorization);
    return md;
  }

  private callOptions(opts: CallOptions, method: string): grpc.CallOptions {
    const ms = opts.timeoutMs ?? this.timeoutMs;
    if (ms === undefined || ms === Infinity) return {};
    if (!(ms > 0)) throw invalidInput(`${method}: timeoutMs must be > 0 (or Infinity), got ${ms}`);
    return { deadline: new Date(Date.now() + ms) };
  }

  /** Waits until the channel is connected (UNAVAILABLE naming the address otherwise). */
  waitForReady(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(new Date(Date.now() + timeoutMs), (err) => {
        if (!err) return resolve();
        reject(
          new LensgridError(
            StatusCode.UNAVAILABLE,
            `cannot connect to ${this.address} within ${timeoutMs} ms (${err.message})${this.tls ? " over TLS" : ""}`,
            { address: this.address, origin: "client" },
          ),
        );
      });
    });
  }

  unary<T>(method: string, request: object, opts: CallOptions = {}): Promise<T> {
    if (opts.signal?.aborted) {
      return Promise.reject(
        new LensgridError(StatusCode.CANCELLED, "cancelled before the call started", {
          address: this.address,
          method,
        }),
      );
    }
    return new Promise<T>((resolve, reject) => {
      let call: grpc.ClientUnaryCall | null = null;
      const onAbort = () => call?.cancel();
      try {
        this.checkOpen(method);
        const fn = (this.client as unknown as Record<string, Function>)[method];
        call = fn.call(
          this.client,
          request,
          this.metadata(),
          this.callOptions(opts, method),
          (err: grpc.ServiceError | null, response: T) => {
            opts.signal?.removeEventListener("abort", onAbort);
            if (err) reject(fromGrpcError(err, this.address, method));
            else resolve(response);
          },
        ) as grpc.ClientUnaryCall;
      } catch (e) {
        reject(fromGrpcError(e, this.address, method));
        return;
      }
      opts.signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** A server-streaming call as an async iterator; leaving the loop early cancels the call. */
  async *stream<T>(method: string, request: object, opts: CallOptions = {}): AsyncGenerator<T> {
    if (opts.signal?.aborted) {
      throw new LensgridError(StatusCode.CANCELLED, "cancelled before the call started", {
        address: this.address,
        method,
      });
    }
    let call: grpc.ClientReadableStream<T>;
    try {
      this.checkOpen(method);
      const fn = (this.client as unknown as Record<string, Function>)[method];
      call = fn.call(this.client, request, this.metadata(), this.callOptions(opts, method)) as grpc.ClientReadableStream<T>;
    } catch (e) {
      throw fromGrpcError(e, this.address, method);
    }
    const onAbort = () => call.cancel();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    let done = false;
    try {
      for await (const msg of call) yield msg as T;
      done = true;
    } catch (e) {
      done = true;
      throw fromGrpcError(e, this.address, method);
    } finally {
      opts.signal?.removeEventListener("abort", onAbort);
      if (!done) call.cancel();
    }
  }
}
