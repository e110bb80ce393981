// Write wasmgrid algorithms in JavaScript.
//
// An algorithm is a WebAssembly component of the world
// `wasmgrid:algorithm/algorithm@0.1.0` (wit/algorithm.wit) that exports
// `handler.apply`. With this module it is one exported function:
//
//     import { InvalidInput } from 'wasmgrid-sdk';
//
//     export function apply(input) {
//       if (typeof input !== 'string') throw new InvalidInput('send text');
//       return { length: input.length };
//     }
//
// `build.mjs` (next to this file) bundles the module with this SDK and exports
// `handler = algorithm(apply)` for componentize-js. See README.md for the input,
// output and error mapping.
//
// This file has no imports, so it also runs in Node (unit tests of algorithms).

export const JSON_TYPE = 'application/json';
export const TEXT_TYPE = 'text/plain';
export const OCTET_STREAM_TYPE = 'application/octet-stream';

// --- errors ------------------------------------------------------------------

/** A typed failure of an algorithm; throw one of the subclasses. */
export class WasmgridError extends Error {
  /** The WIT case: 'invalid-input', 'permanent' or 'transient'. */
  get kind() {
    return 'permanent';
  }
}

/** The input cannot be processed: HTTP 400 `AlgorithmError`, never retried. */
export class InvalidInput extends WasmgridError {
  get kind() {
    return 'invalid-input';
  }
}
InvalidInput.prototype.name = 'InvalidInput';

/** Retrying the same input will not help: HTTP 400 `AlgorithmError`. */
export class Permanent extends WasmgridError {
  get kind() {
    return 'permanent';
  }
}
Permanent.prototype.name = 'Permanent';

/**
 * May succeed on a later attempt: HTTP 503 `TransientAlgorithmError`; event
 * deliveries are retried.
 */
export class Transient extends WasmgridError {
  get kind() {
    return 'transient';
  }
}
Transient.prototype.name = 'Transient';
WasmgridError.prototype.name = 'WasmgridError';

// --- output with an explicit media type -----------------------------------------

/** An output with an explicit media type: `new Output(csvText, 'text/csv')`. */
export class Output {
  /**
   * @param {string | Uint8Array | ArrayBuffer} body text is encoded as UTF-8
   * @param {string} contentType
   */
  constructor(body, contentType = OCTET_STREAM_TYPE) {
    this.body = body;
    this.contentType = contentType;
  }
}

// --- media types ---------------------------------------------------------------

/** The media type without parameters, trimmed, lower case. */
export function essence(contentType) {
  return String(contentType).split(';', 1)[0].trim().toLowerCase();
}

/** `application/json` or a `+json` media type (parameters ignored). */
export function isJson(contentType) {
  const e = essence(contentType);
  return e === JSON_TYPE || e.endsWith('+json');
}

function isText(contentType) {
  return essence(contentType).startsWith('text/');
}

// --- conversions ---------------------------------------------------------------

const encoder = new TextEncoder();

/** The value `apply` receives for a payload; throws `InvalidInput`. */
export function decodeInput(contentType, body) {
  const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
  if (isJson(contentType) || isText(contentType)) {
    let text;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (e) {
      throw new InvalidInput(`input is not valid UTF-8 text: ${e.message}`);
    }
    if (!isJson(contentType)) return text;
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new InvalidInput(`input is not valid JSON: ${e.message}`);
    }
  }
  return bytes;
}

function toBytes(body) {
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) {
    return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  }
  return null;
}

/** `{contentType, body}` for a return value; throws `Permanent`. */
export function encodeOutput(value) {
  if (value instanceof Output) {
    const body = toBytes(value.body);
    if (body === null) {
      throw new Permanent(
        `Output body must be a string, Uint8Array or ArrayBuffer, not ${describe(value.body)}`,
      );
    }
    return { contentType: String(value.contentType), body };
  }
  if (typeof value === 'string') return { contentType: TEXT_TYPE, body: encoder.encode(value) };
  const bytes = toBytes(value);
  if (bytes !== null) return { contentType: OCTET_STREAM_TYPE, body: bytes };
  if (value === undefined) value = null;
  if (value === null || typeof value === 'object' || typeof value === 'number' || typeof value === 'boolean') {
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw new Permanent(`cannot serialize the output as JSON: ${value} is not a JSON number`);
    }
    let text;
    try {
      text = JSON.stringify(value);
    } catch (e) {
      throw new Permanent(`cannot serialize the output as JSON: ${e.message}`);
    }
    return { contentType: JSON_TYPE, body: encoder.encode(text) };
  }
  throw new Permanent(
    `cannot return a ${describe(value)}: return an object, array, number, boolean, null, string, Uint8Array or Output`,
  );
}

function describe(v) {
  if (v === null) return 'null';
  if (typeof v === 'object') return v.constructor?.name ?? 'object';
  return typeof v;
}

// --- the trigger event ---------------------------------------------------------

/** The CloudEvents attributes of the event whose delivery caused a call. */
export class Event {
  constructor({ id, source, type, subject, time, dataContentType, extensions }) {
    this.id = id;
    this.source = source;
    this.type = type;
    this.subject = subject ?? null;
    this.time = time ?? null;
    this.dataContentType = dataContentType ?? null;
    this.extensions = (extensions ?? []).map(([k, v]) => [k, v]);
  }

  /** The value of the first extension attribute called `name`, or null. */
  extension(name) {
    const found = this.extensions.find(([k]) => k === name);
    return found ? found[1] : null;
  }
}

let currentCall = null;

/** The event whose delivery caused the current call, or null. */
export function trigger() {
  return currentCall?.trigger ?? null;
}

/** The media type of the current call's input, as the host set it. */
export function contentType() {
  return currentCall?.contentType ?? '';
}

/** The undecoded bytes of the current call's input. */
export function rawInput() {
  return currentCall?.body ?? new Uint8Array(0);
}

// --- running one call ----------------------------------------------------------

function errorMessage(e) {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  try {
    return `thrown: ${typeof e === 'string' ? e : JSON.stringify(e)}`;
  } catch {
    return `thrown: ${String(e)}`;
  }
}

/**
 * The SDK error for an uncaught error of a host call, or null.
 *
 * componentize-js throws an error whose `payload` is the WIT error variant
 * (`{tag: 'not-found', val: '...'}`) when an imported function (e.g. `get` of
 * 'wasmgrid:algorithm/data@0.1.0') returns `err`. It becomes
 * `Transient('store unavailable: ...')` for a `store-unavailable` case
 * (retrying may help) and `Permanent('<case in words>: <message>')` otherwise.
 */
export function hostError(e) {
  const payload = e !== null && typeof e === 'object' ? e.payload : undefined;
  if (payload === null || typeof payload !== 'object' || typeof payload.tag !== 'string') return null;
  const words = payload.tag.replaceAll('-', ' ');
  let detail = payload.val;
  if (detail !== undefined && typeof detail !== 'string') {
    try {
      detail = JSON.stringify(detail);
    } catch {
      detail = String(detail);
    }
  }
  const message = detail === undefined ? words : `${words}: ${detail}`;
  return payload.tag === 'store-unavailable' ? new Transient(message) : new Permanent(message);
}

/**
 * Runs `apply` on one payload and returns the WIT result:
 * `{tag: 'ok', val: {contentType, body}}` or
 * `{tag: 'err', val: {tag: 'invalid-input' | 'permanent' | 'transient', val: message}}`.
 *
 * `apply(input, trigger)` may be async. Thrown `WasmgridError`s map to their
 * kind; uncaught host call errors as `hostError` says; anything else thrown
 * becomes `permanent` with `"<Name>: <message>"`
 * (the stack goes to stderr). This is what the component export calls; it is
 * public for unit tests of algorithms.
 */
export async function run(apply, contentType, body, event = null) {
  const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
  currentCall = { contentType, body: bytes, trigger: event };
  try {
    const input = decodeInput(contentType, bytes);
    let value;
    try {
      value = await apply(input, event);
    } catch (e) {
      if (e instanceof WasmgridError) throw e;
      const host = hostError(e);
      if (host) throw host;
      if (e instanceof Error && e.stack) console.error(`${errorMessage(e)}\n${e.stack}`);
      throw new Permanent(errorMessage(e));
    }
    return { tag: 'ok', val: encodeOutput(value) };
  } catch (e) {
    if (e instanceof WasmgridError) {
      return { tag: 'err', val: { tag: e.kind, val: e.message } };
    }
    throw e; // a bug in this module: let the call trap
  } finally {
    currentCall = null;
  }
}

/**
 * The `handler` export componentize-js expects for the WIT interface
 * `wasmgrid:algorithm/handler`: `export const handler = algorithm(apply);`
 * (build.mjs writes that line for you).
 */
export function algorithm(apply) {
  if (typeof apply !== 'function') {
    throw new TypeError(`the algorithm module must export a function \`apply\`, found ${describe(apply)}`);
  }
  return {
    apply(input, wasmTrigger) {
      const event = wasmTrigger == null ? null : new Event(wasmTrigger);
      return run(apply, input.contentType, input.body, event);
    },
  };
}
