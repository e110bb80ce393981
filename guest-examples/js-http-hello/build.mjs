#!/usr/bin/env node
// Builds hello.js into out/js_http_hello.wasm with componentize-js's default
// features (so `fetch-event` is on) against the wasi:http/proxy world in wit/.
// Uses the componentize-js that sdk/js installs (`sdk/js/setup.sh`).
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const componentizeJs = resolve(
  here,
  '../../sdk/js/node_modules/@bytecodealliance/componentize-js/src/componentize.js',
);
const { componentize } = await import(pathToFileURL(componentizeJs).href);

// componentize-js maps the source's directory to `/` while it pre-initializes
// the engine: run from here, where hello.js sits with its WIT only.
process.chdir(here);
const { component } = await componentize({
  sourcePath: 'hello.js',
  witPath: 'wit',
  worldName: 'hello',
});
const out = join(here, 'out', 'js_http_hello.wasm');
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
console.error(`build.mjs: ${out} (${(component.byteLength / 1048576).toFixed(1)} MiB)`);
