// js-services: every host interface of the JavaScript SDK in one algorithm.
//
// Input (JSON):
//   {"input": "data://demo/docs/in.txt", "output": "data://demo/out/summary.json",
//    "hello": "demo/hello", "topic": "js-feed", "bucket": "demo/counters"}
//
// 1. reads `input` as text (data.getText) and the secret `greeting` (secrets.get);
// 2. calls the algorithm `hello` with the first word (algo.call);
// 3. writes `{"words", "greeting", "hello"}` as JSON to `output` (data.put);
// 4. publishes a `com.example.js.Summarized` event with that summary to
//    `topic` (events.publish; needs grant=topic:NAME);
// 5. increments the counter `runs` in the keyvalue bucket `bucket` and sets
//    `last` to the output URI (wasi:keyvalue; needs a :write grant).
// Returns {"output", "words", "greeting", "hello", "event", "runs", "keys", "exists"}.
import { InvalidInput, algo, data, events, keyvalue, secrets } from 'wasmgrid-sdk';

export function apply(input) {
  if (input === null || typeof input !== 'object' || Array.isArray(input) || input instanceof Uint8Array) {
    throw new InvalidInput('send a JSON object (see services.js)');
  }
  for (const field of ['input', 'output', 'hello', 'topic', 'bucket']) {
    if (typeof input[field] !== 'string') throw new InvalidInput(`\`${field}\` must be a string`);
  }
  const words = data.getText(input.input).split(/\s+/).filter(Boolean);
  const greeting = secrets.get('greeting');
  const hello = algo.call(input.hello, words[0] ?? 'nobody');
  const summary = { words: words.length, greeting, hello };
  data.put(input.output, summary);
  const event = events.publish(input.topic, { type: 'com.example.js.Summarized', subject: input.output }, summary);
  const bucket = keyvalue.open(input.bucket);
  const runs = bucket.increment('runs', 1);
  bucket.set('last', input.output);
  return {
    output: input.output,
    ...summary,
    event,
    runs,
    keys: [...bucket.keys()],
    exists: data.exists(input.output),
  };
}
