// js-transform: uppercases every string value of a JSON object (a wasmgrid
// algorithm in JavaScript).
//
// Input: a JSON object (Content-Type: application/json). Output (JSON): the same
// object with every string value, at any depth (in nested objects and arrays),
// upper-cased; keys, numbers, booleans and nulls are unchanged. A field
// `_transform` is added (replacing any field of that name):
// `{"strings": <number of string values upper-cased>, "event": <id of the
// triggering event, or null for a direct call>}`.
//
//   {"name": "ada", "tags": ["x", "y"], "n": 1}
//   -> {"name":"ADA","tags":["X","Y"],"n":1,"_transform":{"strings":3,"event":null}}
//
// Anything else (text, bytes, a JSON array or scalar) is an invalid-input error.
import { InvalidInput } from 'wasmgrid-sdk';

export function apply(input, trigger) {
  if (input === null || typeof input !== 'object' || Array.isArray(input) || input instanceof Uint8Array) {
    throw new InvalidInput('send a JSON object (Content-Type: application/json)');
  }
  let strings = 0;
  const upper = (value) => {
    if (typeof value === 'string') {
      strings += 1;
      return value.toUpperCase();
    }
    if (Array.isArray(value)) return value.map(upper);
    if (value !== null && typeof value === 'object') {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, upper(v)]));
    }
    return value;
  };
  const output = upper(input);
  output._transform = { strings, event: trigger ? trigger.id : null };
  return output;
}
