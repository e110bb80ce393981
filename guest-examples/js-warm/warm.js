// js-warm: a lookup table built once per instance by `init` (world
// `algorithm-with-init`), then used by every call the instance serves.
//
// Input: a JSON string key, e.g. "key-42". Output (JSON):
//   {"key": "key-42", "value": 1764 (or null), "entries": 10000, "instance_calls": N}
// `instance_calls` counts the calls this instance has served, this one
// included: 1 on a fresh instance, growing when deployed with `reuse=N`.
//
// componentize-js runs top-level code at build time (the snapshot), so the
// table is built in `init`, at run time, once per instance.
import { InvalidInput } from 'wasmgrid-sdk';

let table = null;
let calls = 0;

export function init() {
  table = new Map();
  for (let i = 0; i < 10000; i++) table.set(`key-${i}`, i * i);
}

export function apply(input) {
  if (typeof input !== 'string') throw new InvalidInput('send a JSON string key, e.g. "key-42"');
  calls += 1;
  return { key: input, value: table.get(input) ?? null, entries: table.size, instance_calls: calls };
}
