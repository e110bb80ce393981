// Unit tests of the wasmgrid JavaScript SDK, run in Node (no npm packages needed):
//
//   node --test sdk/js/test/
import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  InvalidInput,
  Permanent,
  Transient,
  WasmgridError,
  Output,
  Event,
  algorithm,
  contentType,
  decodeInput,
  encodeOutput,
  hostError,
  isJson,
  rawInput,
  run,
  trigger,
} from '../wasmgrid.js';

const enc = (s) => new TextEncoder().encode(s);
const dec = (b) => new TextDecoder().decode(b);

test('media types', () => {
  assert.ok(isJson('application/json'));
  assert.ok(isJson(' Application/JSON ; charset=utf-8'));
  assert.ok(isJson('application/cloudevents+json'));
  assert.ok(!isJson('text/plain'));
  assert.ok(!isJson('application/jsonx'));
});

test('decodeInput', () => {
  assert.deepEqual(decodeInput('application/json', enc('{"a":[1,2.5]}')), { a: [1, 2.5] });
  assert.equal(decodeInput('text/plain; charset=utf-8', enc('héllo')), 'héllo');
  const bytes = decodeInput('application/octet-stream', new Uint8Array([0, 255]));
  assert.ok(bytes instanceof Uint8Array);
  assert.deepEqual([...bytes], [0, 255]);
  assert.throws(() => decodeInput('application/json', enc('{')), (e) => e instanceof InvalidInput && /not valid JSON/.test(e.message));
  assert.throws(() => decodeInput('text/plain', new Uint8Array([0xff])), InvalidInput);
});

test('encodeOutput', () => {
  const out = (v) => {
    const { contentType, body } = encodeOutput(v);
    return [contentType, dec(body)];
  };
  assert.deepEqual(out({ a: 1, b: 'é' }), ['application/json', '{"a":1,"b":"é"}']);
  assert.deepEqual(out([1, null, true]), ['application/json', '[1,null,true]']);
  assert.deepEqual(out(3.5), ['application/json', '3.5']);
  assert.deepEqual(out(false), ['application/json', 'false']);
  assert.deepEqual(out(null), ['application/json', 'null']);
  assert.deepEqual(out(undefined), ['application/json', 'null']);
  assert.deepEqual(out('hi'), ['text/plain', 'hi']);
  assert.deepEqual(out(enc('b')), ['application/octet-stream', 'b']);
  assert.deepEqual(out(enc('ab').buffer), ['application/octet-stream', 'ab']);
  assert.deepEqual(out(new Output('a,b\n', 'text/csv')), ['text/csv', 'a,b\n']);
  assert.deepEqual(out(new Output(enc('x'))), ['application/octet-stream', 'x']);
  for (const bad of [NaN, Infinity, 10n, () => 1, Symbol('s'), new Output(42, 'text/plain')]) {
    assert.throws(() => encodeOutput(bad), Permanent, String(bad?.toString?.()));
  }
  const cyclic = {};
  cyclic.self = cyclic;
  assert.throws(() => encodeOutput(cyclic), Permanent);
});

test('run: ok, typed errors, other throws', async () => {
  assert.deepEqual(await run((s) => s.toUpperCase(), 'text/plain', enc('abc')), {
    tag: 'ok',
    val: { contentType: 'text/plain', body: enc('ABC') },
  });
  assert.equal((await run(async (v) => ({ n: v.length }), 'application/json', enc('[1,2]'))).val.contentType, 'application/json');

  const err = async (thrown) =>
    (
      await run(() => {
        throw thrown;
      }, 'text/plain', enc(''))
    ).val;
  assert.deepEqual(await err(new InvalidInput('i')), { tag: 'invalid-input', val: 'i' });
  assert.deepEqual(await err(new Permanent('p')), { tag: 'permanent', val: 'p' });
  assert.deepEqual(await err(new Transient('t')), { tag: 'transient', val: 't' });
  assert.deepEqual(await err(new WasmgridError('w')), { tag: 'permanent', val: 'w' });

  const quiet = console.error;
  console.error = () => {};
  try {
    assert.deepEqual(await err(new TypeError('nope')), { tag: 'permanent', val: 'TypeError: nope' });
    assert.deepEqual(await err('a string'), { tag: 'permanent', val: 'thrown: a string' });
    assert.deepEqual(await err({ code: 7 }), { tag: 'permanent', val: 'thrown: {"code":7}' });
    const rejected = await run(async () => Promise.reject(new RangeError('late')), 'text/plain', enc(''));
    assert.deepEqual(rejected.val, { tag: 'permanent', val: 'RangeError: late' });
  } finally {
    console.error = quiet;
  }

  // Bad input never reaches apply; a bad return value is permanent.
  assert.deepEqual((await run(() => assert.fail('called'), 'application/json', enc('nope'))).val.tag, 'invalid-input');
  assert.deepEqual((await run(() => 10n, 'text/plain', enc(''))).val.tag, 'permanent');
});

test('uncaught host call errors', async () => {
  // What componentize-js throws when an imported function returns `err`.
  const hostErr = (payload) => Object.assign(new Error('[object Object] (see error.payload)'), { payload });
  const err = async (thrown) =>
    (
      await run(() => {
        throw thrown;
      }, 'text/plain', enc(''))
    ).val;
  assert.deepEqual(await err(hostErr({ tag: 'store-unavailable', val: 'busy' })), { tag: 'transient', val: 'store unavailable: busy' });
  assert.deepEqual(await err(hostErr({ tag: 'not-found', val: 'data://a/b/c' })), { tag: 'permanent', val: 'not found: data://a/b/c' });
  assert.deepEqual(await err(hostErr({ tag: 'no-such-store' })), { tag: 'permanent', val: 'no such store' });
  assert.equal(hostError(new Error('plain')), null);
  assert.equal(hostError('string'), null);
});

test('algorithm(): the componentize-js export, trigger and accessors', async () => {
  let seen;
  const handler = algorithm((input, event) => {
    seen = { input, event, viaTrigger: trigger(), ct: contentType(), raw: dec(rawInput()) };
    return 'ok';
  });
  const wasmEvent = {
    id: 'e1',
    source: '/src',
    type: 'wasmgrid.test',
    subject: 'sub',
    time: undefined,
    dataContentType: 'text/plain',
    extensions: [['traceparent', '00-1']],
  };
  const res = await handler.apply({ contentType: 'text/plain', body: enc('hi') }, wasmEvent);
  assert.deepEqual(res, { tag: 'ok', val: { contentType: 'text/plain', body: enc('ok') } });
  assert.equal(seen.input, 'hi');
  assert.ok(seen.event instanceof Event);
  assert.equal(seen.event, seen.viaTrigger);
  assert.equal(seen.event.id, 'e1');
  assert.equal(seen.event.type, 'wasmgrid.test');
  assert.equal(seen.event.subject, 'sub');
  assert.equal(seen.event.time, null);
  assert.equal(seen.event.extension('traceparent'), '00-1');
  assert.equal(seen.event.extension('missing'), null);
  assert.equal(seen.ct, 'text/plain');
  assert.equal(seen.raw, 'hi');

  await handler.apply({ contentType: 'application/octet-stream', body: enc('x') }, undefined);
  assert.equal(seen.event, null);
  assert.equal(trigger(), null); // cleared after the call

  assert.throws(() => algorithm(undefined), /must export a function `apply`/);
});
