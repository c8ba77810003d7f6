// The client's version and the Worker API versions it speaks (common/worker_api_version.h).
import { LensgridError, StatusCode } from "./errors";

export const VERSION = "0.1.0";

/**
 * The Worker API version this client was written for. It also speaks every major in
 * SUPPORTED_MAJORS: it sets each field whose meaning changed in 2.0 explicitly
 * (TokenizeRequest.prepend_bos, ModelInput.prepend_bos with the deprecated no_bos beside it,
 * enum zeros for "logits" and right padding), so a 1.x worker reads its requests alike. A call
 * that needs a newer API (hook programs, gradients, GetWeights, Generate: 1.1) says so. Small
 * replies in one message (2.2) need nothing: the client asks for them and reads either form.
 */
export const WORKER_API_VERSION: readonly [number, number] = [2, 2];
export const SUPPORTED_MAJORS: readonly number[] = [1, 2];

/** "MAJOR.MINOR" -> [MAJOR, MINOR]; empty (a worker before api_version) -> [1, 0]. */
export function parseApiVersion(text: string): [number, number] {
  if (!text) return [1, 0];
  const m = /^\s*(\d+)(?:\.(\d+))?\s*$/.exec(text);
  if (!m) {
    throw new LensgridError(StatusCode.FAILED_PRECONDITION, `the worker reports an unreadable API version ${JSON.stringify(text)}`);
  }
  return [Number(m[1]), m[2] === undefined ? 0 : Number(m[2])];
}

/**
 * Throws FAILED_PRECONDITION (origin "client") when a worker's "MAJOR.MINOR" has a major this
 * client does not speak, or is older than `needed` for `what`.
 */
export function checkApiVersion(text: string, needed: readonly [number, number], what: string, address = ""): [number, number] {
  const have = parseApiVersion(text);
  const shown = text || "none (taken as 1.0)";
  const where = address ? ` at ${address}` : "";
  if (!SUPPORTED_MAJORS.includes(have[0])) {
    const spoken = SUPPORTED_MAJORS.map((m) => `${m}.x`).join(" and ");
    throw new LensgridError(
      StatusCode.FAILED_PRECONDITION,
      `the worker${where} speaks Worker API ${shown}; this client (lensgrid for Node ${VERSION}) speaks ${spoken}: ` +
        `use a client that speaks major version ${have[0]} or a worker of major version ${SUPPORTED_MAJORS[SUPPORTED_MAJORS.length - 1]}`,
      { address },
    );
  }
  if (have[0] < needed[0] || (have[0] === needed[0] && have[1] < needed[1])) {
    throw new LensgridError(
      StatusCode.FAILED_PRECONDITION,
      `${what} needs Worker API ${needed[0]}.${needed[1]} or newer; the worker${where} speaks ${shown}: upgrade the worker`,
      { address },
    );
  }
  return have;
}
