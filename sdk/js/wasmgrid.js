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
// This file has no imports, so it also runs in Node (unit tests of algorithms);
// the host interfaces (data, secrets, algo, events, keyvalue) get their
// bindings from build.mjs through `setHost`.

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
 * (retrying may help) and `Permanent('<case in words>: <message>')` otherwise
 * (the WIT case is in the error's `case`, e.g. 'not-found'). A wasmgrid
 * `error` (from `algo.call`, `events.publish`) keeps its case and message:
 * `invalid-input` -> `InvalidInput`, `permanent` -> `Permanent`, `transient`
 * -> `Transient`.
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
  // A wasmgrid `error` (algo.call, events.publish) keeps its case and message.
  if (payload.tag === 'invalid-input') return new InvalidInput(detail ?? '');
  if (payload.tag === 'transient') return new Transient(detail ?? '');
  if (payload.tag === 'permanent') return new Permanent(detail ?? '');
  const message = detail === undefined ? words : `${words}: ${detail}`;
  const err = payload.tag === 'store-unavailable' ? new Transient(message) : new Permanent(message);
  err.case = payload.tag;
  return err;
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
 * Runs `init()` (the module's `export function init()`, possibly async) and
 * returns the WIT result of `lifecycle.init`: `{tag: 'ok'}` or
 * `{tag: 'err', val: {tag: kind, val: message}}`, with the same error mapping
 * as `run`.
 */
export async function runInit(init) {
  try {
    await init();
    return { tag: 'ok', val: undefined };
  } catch (e) {
    let err = e;
    if (!(err instanceof WasmgridError)) {
      err = hostError(e);
      if (!err) {
        if (e instanceof Error && e.stack) console.error(`${errorMessage(e)}\n${e.stack}`);
        err = new Permanent(errorMessage(e));
      }
    }
    return { tag: 'err', val: { tag: err.kind, val: err.message } };
  }
}

/**
 * The `lifecycle` export for world `algorithm-with-init`:
 * `export const lifecycle = lifecycle(init);` (build.mjs writes that line
 * when the module exports `init`).
 */
export function lifecycle(init) {
  if (typeof init !== 'function') {
    throw new TypeError(`\`init\` must be a function, found ${describe(init)}`);
  }
  return {
    init() {
      return runInit(init);
    },
  };
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

// --- host interfaces -------------------------------------------------------------
//
// The generated bindings (`wasmgrid:algorithm/data@0.1.0`, ...,
// `wasi:keyvalue/store@0.2.0-draft`, ...) exist only inside the component:
// build.mjs imports them in its entry module and hands them to `setHost`.
// Unit tests pass fakes with the same shape.

let hostBindings = null;

/**
 * Installs the host bindings: `{data, secrets, algo, events, store, atomics,
 * batch}`, each the namespace of the WIT interface's generated module.
 * build.mjs calls it; tests call it with fakes (`setHost(null)` removes them).
 */
export function setHost(bindings) {
  hostBindings = bindings;
}

function host(name) {
  const b = hostBindings?.[name];
  if (!b) {
    throw new Permanent(
      `the host interface \`${name}\` is not available (only inside a component built by sdk/js/build.mjs)`,
    );
  }
  return b;
}

function hostCall(fn, ...args) {
  try {
    return fn(...args);
  } catch (e) {
    const err = hostError(e);
    if (err) throw err;
    throw e;
  }
}

function u64(n) {
  return typeof n === 'bigint' ? Number(n) : n;
}

/**
 * `{contentType, body}` to send for a value (data files, call inputs, event
 * data): string -> text/plain (UTF-8), bytes -> application/octet-stream,
 * `Output` -> its own bytes and type, anything else -> compact JSON. An
 * explicit `contentType` replaces the default media type, not the encoding.
 * Throws `Permanent` for values JSON cannot represent.
 */
export function encodeValue(value, contentType = undefined) {
  const p = encodeOutput(value);
  return contentType === undefined || contentType === null ? p : { contentType: String(contentType), body: p.body };
}

/** The value a payload stands for (as `apply` input, but errors are `Permanent`). */
export function decodeValue(contentType, body, what = 'the output') {
  try {
    return decodeInput(contentType, body);
  } catch (e) {
    if (e instanceof InvalidInput) throw new Permanent(`${what}: ${e.message}`);
    throw e;
  }
}

/**
 * Hosted data collections (`wasmgrid:algorithm/data`): files addressed as
 * `data://owner/collection/path` (`.my` = the algorithm's owner,
 * `data://.algo/temp/...` its scratch space). Errors: `Permanent('not found:
 * ...')`, `'access denied: ...'`, `'invalid uri: ...'`, `'too large: ...'`
 * (the WIT case in `err.case`), `Transient('store unavailable: ...')`.
 */
export const data = {
  /** The bytes of the file at `uri` (Uint8Array). */
  get(uri) {
    return hostCall(host('data').get, uri).body;
  },
  /** The file and its media type: `{contentType, body}`. */
  getPayload(uri) {
    return hostCall(host('data').get, uri);
  },
  /** The file decoded as UTF-8 text (invalid UTF-8 is `Permanent`). */
  getText(uri) {
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(data.get(uri));
    } catch (e) {
      if (e instanceof WasmgridError) throw e;
      throw new Permanent(`${uri} is not valid UTF-8 text: ${e.message}`);
    }
  },
  /** The file parsed as JSON (invalid JSON is `Permanent`). */
  getJson(uri) {
    const text = data.getText(uri);
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Permanent(`${uri} is not valid JSON: ${e.message}`);
    }
  },
  /** Writes the file (see `encodeValue`); needs a `:write` grant. */
  put(uri, value, contentType = undefined) {
    hostCall(host('data').put, uri, encodeValue(value, contentType));
  },
  /** Deletes the file; whether it existed. */
  delete(uri) {
    return Boolean(hostCall(host('data').delete, uri));
  },
  /** Whether the file exists (and the algorithm may read it). */
  exists(uri) {
    return Boolean(hostCall(host('data').exists, uri));
  },
  /**
   * The files under `prefix`, recursively, in path order: a generator of
   * `{uri, size, contentType, lastModified, etag}`, asking the host for pages
   * of 1000 as it goes.
   */
  *list(prefix) {
    const b = host('data');
    let marker;
    for (;;) {
      const page = hostCall(b.list, prefix, marker, 1000);
      for (const f of page.files) {
        yield {
          uri: f.uri,
          size: u64(f.size),
          contentType: f.contentType,
          lastModified: f.lastModified,
          etag: f.etag,
        };
      }
      marker = page.marker ?? undefined;
      if (marker === undefined) return;
    }
  },
};

/** Per-algorithm secrets (`wasmgrid:algorithm/secrets`). */
export const secrets = {
  /** The value of this algorithm's secret `name`, or null when not set. */
  get(name) {
    return host('secrets').get(name) ?? null;
  },
};

/** Calling other algorithms (`wasmgrid:algorithm/algo`). */
export const algo = {
  /**
   * Calls `endpoint` (`owner/name`, `owner/name/1.2`, ...) with `input`
   * (encoded as `encodeValue` says; pass `contentType` to override) and
   * returns its output decoded like an `apply` input: JSON -> value, text ->
   * string, else Uint8Array. The callee's error keeps its kind
   * (`InvalidInput`, `Permanent`, `Transient`).
   */
  call(endpoint, input, contentType = undefined) {
    const out = algo.callRaw(endpoint, encodeValue(input, contentType));
    return decodeValue(out.contentType, out.body, `the output of ${endpoint}`);
  },
  /** `call` with a `{contentType, body}` payload in and out. */
  callRaw(endpoint, payload) {
    return hostCall(host('algo').call, endpoint, { contentType: payload.contentType, body: toBytes(payload.body) });
  },
};

function extensionList(ext) {
  if (ext === undefined || ext === null) return [];
  const pairs = Array.isArray(ext) ? ext : Object.entries(ext);
  return pairs.map(([k, v]) => [String(k), String(v)]);
}

/** The WIT `outgoing-event` for `events.publish`'s attributes. */
export function outgoingEvent(attrs) {
  const a = typeof attrs === 'string' ? { type: attrs } : attrs ?? {};
  if (typeof a.type !== 'string' || a.type === '') {
    throw new Permanent('events.publish: the event needs a `type`');
  }
  return {
    type: a.type,
    subject: a.subject ?? undefined,
    id: a.id ?? undefined,
    source: a.source ?? undefined,
    extensions: extensionList(a.extensions),
  };
}

/** Publishing events to topics (`wasmgrid:algorithm/events`). */
export const events = {
  /**
   * Publishes one event to `topic` and returns its id once it is durable.
   * `event` is the type (a string) or `{type, subject?, id?, source?,
   * extensions?}` (extensions: an object or `[name, value]` pairs); `value`
   * is the event's data, encoded as `encodeValue` says. Needs a
   * `grant=topic:NAME`; errors keep their kind.
   */
  publish(topic, event, value, contentType = undefined) {
    return hostCall(host('events').publish, topic, outgoingEvent(event), encodeValue(value, contentType));
  },
};

/** A `wasi:keyvalue` error as the Rust SDK words it (always `Permanent`). */
export function keyvalueError(e) {
  const payload = e !== null && typeof e === 'object' ? e.payload : undefined;
  if (payload === null || typeof payload !== 'object' || typeof payload.tag !== 'string') return null;
  let message;
  if (payload.tag === 'no-such-store') {
    message = 'keyvalue: no such store (open a bucket as "owner/collection", e.g. ".my/counters")';
  } else if (payload.tag === 'access-denied') {
    message = 'keyvalue: access denied (no grant or ACL permission for this bucket)';
  } else {
    message = `keyvalue: ${payload.val ?? payload.tag}`;
  }
  const err = new Permanent(message);
  err.case = payload.tag;
  return err;
}

function kvCall(fn, ...args) {
  try {
    return fn(...args);
  } catch (e) {
    const err = keyvalueError(e);
    if (err) throw err;
    throw e;
  }
}

function kvBytes(value) {
  return encodeValue(value).body;
}

/** A `wasi:keyvalue` bucket (a data collection); get one with `keyvalue.open`. */
export class Bucket {
  constructor(resource, name) {
    this.resource = resource;
    this.name = name;
  }
  /** The value's bytes (Uint8Array), or null. */
  get(key) {
    return kvCall(() => this.resource.get(key)) ?? null;
  }
  /** The value as UTF-8 text, or null. */
  getText(key) {
    const b = this.get(key);
    return b === null ? null : new TextDecoder().decode(b);
  }
  /** The value parsed as JSON, or null when absent. */
  getJson(key) {
    const t = this.getText(key);
    if (t === null) return null;
    try {
      return JSON.parse(t);
    } catch (e) {
      throw new Permanent(`keyvalue: ${this.name}/${key} is not valid JSON: ${e.message}`);
    }
  }
  /** Sets `key` (strings as UTF-8, bytes as they are, anything else as JSON). */
  set(key, value) {
    kvCall(() => this.resource.set(key, kvBytes(value)));
  }
  delete(key) {
    kvCall(() => this.resource.delete(key));
  }
  exists(key) {
    return Boolean(kvCall(() => this.resource.exists(key)));
  }
  /** Every key, in order (a generator over the host's pages). */
  *keys() {
    let cursor;
    for (;;) {
      const page = kvCall(() => this.resource.listKeys(cursor));
      yield* page.keys;
      if (page.cursor === undefined || page.cursor === null) return;
      cursor = typeof page.cursor === 'bigint' ? page.cursor : BigInt(page.cursor);
    }
  }
  /** Atomically adds `delta` (default 1) to the counter at `key`; the new value (a Number). */
  increment(key, delta = 1) {
    return u64(kvCall(host('atomics').increment, this.resource, key, BigInt(delta)));
  }
  /** `[key, Uint8Array]` or null per key, in order. */
  getMany(keys) {
    return kvCall(host('batch').getMany, this.resource, [...keys]).map((e) => e ?? null);
  }
  /** Sets many keys: an object or `[key, value]` pairs (values as in `set`). */
  setMany(entries) {
    const pairs = (Array.isArray(entries) ? entries : Object.entries(entries)).map(([k, v]) => [k, kvBytes(v)]);
    kvCall(host('batch').setMany, this.resource, pairs);
  }
  deleteMany(keys) {
    kvCall(host('batch').deleteMany, this.resource, [...keys]);
  }
}

/**
 * `wasi:keyvalue` over the data collections: `keyvalue.open('.my/counters')`
 * opens the collection as a `Bucket` (same grants and ACLs as `data`).
 * Errors are `Permanent('keyvalue: ...')`, as in the Rust SDK.
 */
export const keyvalue = {
  open(name) {
    return new Bucket(kvCall(host('store').open, name), name);
  },
};
