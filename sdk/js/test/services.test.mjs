// Unit tests of the JavaScript SDK's host-interface wrappers and `init`
// against fake bindings (the shape componentize-js gives them):
//
//   node --test sdk/js/test/
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import {
  Bucket,
  InvalidInput,
  Permanent,
  Transient,
  algo,
  data,
  encodeValue,
  events,
  hostError,
  keyvalue,
  keyvalueError,
  lifecycle,
  outgoingEvent,
  run,
  runInit,
  secrets,
  setHost,
} from '../wasmgrid.js';

const enc = (s) => new TextEncoder().encode(s);
const dec = (b) => new TextDecoder().decode(b);

// componentize-js throws an error whose `payload` is the WIT error variant.
function witErr(tag, val) {
  const e = new Error('component error');
  e.payload = val === undefined ? { tag } : { tag, val };
  return e;
}

function fakeHost() {
  const files = new Map();
  const published = [];
  const calls = [];
  const kv = new Map();
  const bucket = {
    get: (k) => kv.get(k),
    set: (k, v) => kv.set(k, v),
    delete: (k) => kv.delete(k),
    exists: (k) => kv.has(k),
    listKeys(cursor) {
      const keys = [...kv.keys()].sort();
      const start = cursor === undefined ? 0 : Number(cursor);
      const end = start + 2;
      return { keys: keys.slice(start, end), cursor: end < keys.length ? BigInt(end) : undefined };
    },
  };
  return {
    files,
    published,
    calls,
    kv,
    bindings: {
      data: {
        get(uri) {
          if (!files.has(uri)) throw witErr('not-found', `file ${uri} not found`);
          return files.get(uri);
        },
        put: (uri, p) => files.set(uri, p),
        delete: (uri) => files.delete(uri),
        exists: (uri) => files.has(uri),
        list(prefix, marker, limit) {
          const names = [...files.keys()].filter((u) => u.startsWith(prefix) && (marker === undefined || u > marker)).sort();
          const page = names.slice(0, limit);
          return {
            files: page.map((u) => ({ uri: u, size: BigInt(files.get(u).body.length), contentType: files.get(u).contentType, lastModified: 't', etag: 'e' })),
            marker: names.length > limit ? page.at(-1) : undefined,
          };
        },
      },
      secrets: { get: (name) => (name === 'token' ? 's3cr3t' : undefined) },
      algo: {
        call(endpoint, input) {
          calls.push([endpoint, input]);
          if (endpoint === 'demo/busy') throw witErr('transient', 'no free instance slot');
          if (endpoint === 'demo/picky') throw witErr('invalid-input', 'send a name');
          return { contentType: 'text/plain', body: enc(`Hello, ${dec(input.body)}!`) };
        },
      },
      events: {
        publish(topic, event, payload) {
          if (topic !== 'feed') throw witErr('permanent', `no grant for topic ${topic}`);
          published.push([topic, event, payload]);
          return 'id-1';
        },
      },
      store: {
        open(name) {
          if (name === 'nosuch') throw witErr('no-such-store');
          if (name === 'private') throw witErr('access-denied');
          return bucket;
        },
      },
      atomics: {
        increment(b, key, delta) {
          assert.equal(typeof delta, 'bigint');
          const v = BigInt(dec(b.get(key) ?? enc('0'))) + delta;
          b.set(key, enc(String(v)));
          return v;
        },
      },
      batch: {
        getMany: (b, keys) => keys.map((k) => (b.exists(k) ? [k, b.get(k)] : undefined)),
        setMany: (b, kvs) => kvs.forEach(([k, v]) => b.set(k, v)),
        deleteMany: (b, keys) => keys.forEach((k) => b.delete(k)),
      },
    },
  };
}

afterEach(() => setHost(null));

test('without bindings the wrappers fail with a clear Permanent', () => {
  assert.throws(() => data.get('data://o/c/f'), (e) => e instanceof Permanent && /only inside a component/.test(e.message));
});

test('data round trips and maps errors', () => {
  const h = fakeHost();
  setHost(h.bindings);
  data.put('data://o/c/a.json', { a: 1 });
  data.put('data://o/c/b.txt', 'héllo');
  data.put('data://o/c/c.csv', 'x,y', 'text/csv');
  assert.equal(h.files.get('data://o/c/a.json').contentType, 'application/json');
  assert.equal(h.files.get('data://o/c/c.csv').contentType, 'text/csv');
  assert.deepEqual(data.getJson('data://o/c/a.json'), { a: 1 });
  assert.equal(data.getText('data://o/c/b.txt'), 'héllo');
  assert.ok(data.get('data://o/c/b.txt') instanceof Uint8Array);
  assert.ok(data.exists('data://o/c/b.txt'));
  const listed = [...data.list('data://o/c/')];
  assert.deepEqual(listed.map((f) => f.uri), ['data://o/c/a.json', 'data://o/c/b.txt', 'data://o/c/c.csv']);
  assert.equal(listed[0].size, 7);
  assert.equal(data.delete('data://o/c/b.txt'), true);
  assert.equal(data.delete('data://o/c/b.txt'), false);
  assert.throws(() => data.get('data://o/c/none'), (e) => e instanceof Permanent && e.message.startsWith('not found: ') && e.case === 'not-found');
  assert.throws(() => data.getJson('data://o/c/c.csv'), (e) => e instanceof Permanent && /not valid JSON/.test(e.message));
});

test('secrets', () => {
  setHost(fakeHost().bindings);
  assert.equal(secrets.get('token'), 's3cr3t');
  assert.equal(secrets.get('nope'), null);
});

test('algo.call encodes the input, decodes the output, keeps error kinds', () => {
  const h = fakeHost();
  setHost(h.bindings);
  assert.equal(algo.call('demo/hello', 'Ada'), 'Hello, Ada!');
  assert.equal(h.calls[0][1].contentType, 'text/plain');
  algo.call('demo/hello', { name: 'x' });
  assert.equal(h.calls[1][1].contentType, 'application/json');
  assert.throws(() => algo.call('demo/busy', 'x'), (e) => e instanceof Transient && e.message === 'no free instance slot');
  assert.throws(() => algo.call('demo/picky', 'x'), (e) => e instanceof InvalidInput && e.message === 'send a name');
});

test('an uncaught callee error fails the call with its kind', async () => {
  setHost(fakeHost().bindings);
  const r = await run(() => algo.call('demo/busy', 'x'), 'text/plain', enc('x'));
  assert.deepEqual(r, { tag: 'err', val: { tag: 'transient', val: 'no free instance slot' } });
});

test('events.publish', () => {
  const h = fakeHost();
  setHost(h.bindings);
  assert.equal(events.publish('feed', { type: 'com.example.T', subject: '/s', extensions: { k: 'v' } }, { n: 1 }), 'id-1');
  const [, event, payload] = h.published[0];
  assert.deepEqual(event, { type: 'com.example.T', subject: '/s', id: undefined, source: undefined, extensions: [['k', 'v']] });
  assert.equal(payload.contentType, 'application/json');
  assert.equal(dec(payload.body), '{"n":1}');
  events.publish('feed', 'com.example.U', 'text');
  assert.equal(h.published[1][1].type, 'com.example.U');
  assert.throws(() => events.publish('other', 'T', 1), (e) => e instanceof Permanent && /no grant/.test(e.message));
  assert.throws(() => outgoingEvent({}), Permanent);
});

test('keyvalue buckets', () => {
  setHost(fakeHost().bindings);
  const b = keyvalue.open('.my/counters');
  assert.ok(b instanceof Bucket);
  assert.equal(b.get('x'), null);
  b.set('x', 'text');
  b.set('j', { a: 1 });
  assert.equal(b.getText('x'), 'text');
  assert.deepEqual(b.getJson('j'), { a: 1 });
  assert.ok(b.exists('x'));
  assert.equal(b.increment('n'), 1);
  assert.equal(b.increment('n', 41), 42);
  assert.deepEqual([...b.keys()], ['j', 'n', 'x']); // two pages
  b.setMany({ p: '1', q: new Uint8Array([2]) });
  const got = b.getMany(['p', 'zz']);
  assert.equal(got[0][0], 'p');
  assert.equal(dec(got[0][1]), '1');
  assert.equal(got[1], null);
  b.deleteMany(['p', 'q']);
  b.delete('x');
  assert.ok(!b.exists('x'));
});

test('keyvalue errors are Permanent, worded like the Rust SDK', () => {
  setHost(fakeHost().bindings);
  assert.throws(() => keyvalue.open('nosuch'), (e) => e instanceof Permanent && e.message.startsWith('keyvalue: no such store') && e.case === 'no-such-store');
  assert.throws(() => keyvalue.open('private'), (e) => e instanceof Permanent && e.message.startsWith('keyvalue: access denied'));
  assert.equal(keyvalueError(witErr('other', 'disk full')).message, 'keyvalue: disk full');
});

test('hostError keeps the wasmgrid error cases', () => {
  assert.ok(hostError(witErr('invalid-input', 'm')) instanceof InvalidInput);
  assert.ok(hostError(witErr('transient', 'm')) instanceof Transient);
  assert.equal(hostError(witErr('permanent', 'm')).message, 'm');
  assert.equal(hostError(witErr('store-unavailable', 'down')).message, 'store unavailable: down');
});

test('encodeValue', () => {
  assert.equal(encodeValue('a').contentType, 'text/plain');
  assert.equal(encodeValue([1]).contentType, 'application/json');
  assert.equal(encodeValue('a,b', 'text/csv').contentType, 'text/csv');
  assert.throws(() => encodeValue(NaN), Permanent);
});

test('init: runInit and the lifecycle export', async () => {
  let built = 0;
  assert.deepEqual(await runInit(() => { built += 1; }), { tag: 'ok', val: undefined });
  assert.deepEqual(await lifecycle(async () => { built += 1; }).init(), { tag: 'ok', val: undefined });
  assert.equal(built, 2);
  assert.deepEqual(await runInit(() => { throw new Transient('model store busy'); }), {
    tag: 'err',
    val: { tag: 'transient', val: 'model store busy' },
  });
  const r = await runInit(() => { throw new TypeError('bad'); });
  assert.deepEqual(r, { tag: 'err', val: { tag: 'permanent', val: 'TypeError: bad' } });
  assert.throws(() => lifecycle(42), TypeError);
});
