#!/usr/bin/env node
// Builds a JavaScript wasmgrid algorithm into a component.
//
//   node sdk/js/build.mjs APP.js -o OUT.wasm [--wit DIR] [--keep-bundle]
//
// APP.js is an ES module that exports `apply(input)` (or `apply(input, trigger)`,
// possibly async). It may import the SDK as 'wasmgrid-sdk', relative modules
// and npm packages from its own node_modules. Steps:
//
//   1. esbuild bundles a generated entry (`export const handler =
//      algorithm(apply)`) with APP.js, the SDK and their imports into one ES
//      module (componentize-js itself resolves only relative paths);
//   2. componentize-js (no AOT) turns the bundle into a component of the world
//      `algorithm` in WIT (default: the repository's wit/), or
//      `algorithm-with-init` when APP.js exports `init` (then `init()` is
//      exported as `lifecycle.init`; --world overrides the choice), with the
//      `http` and `fetch-event` features disabled so the component imports no
//      wasi:http.
//
// The entry also imports the host interfaces' bindings (data, secrets, algo,
// events, wasi:keyvalue store/atomics/batch) and hands them to the SDK.
//
// Needs `npm ci` in sdk/js first (the build scripts of the examples do it).
import { mkdtemp, mkdir, rm, writeFile, copyFile, stat } from 'node:fs/promises';
import { dirname, join, resolve, relative } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const sdkDir = dirname(fileURLToPath(import.meta.url));
const repoWit = resolve(sdkDir, '..', '..', 'wit');

function usage(message) {
  if (message) console.error(`build.mjs: ${message}`);
  console.error('usage: node sdk/js/build.mjs APP.js -o OUT.wasm [--wit DIR] [--keep-bundle]');
  process.exit(2);
}

let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: {
      out: { type: 'string', short: 'o' },
      wit: { type: 'string', default: process.env.WASMGRID_WIT || repoWit },
      world: { type: 'string' },
      'keep-bundle': { type: 'boolean', default: false },
    },
  });
} catch (e) {
  usage(e.message);
}
const { values, positionals } = parsed;
if (positionals.length !== 1 || !values.out) usage();

const app = resolve(positionals[0]);
const out = resolve(values.out);
const wit = resolve(values.wit);
try {
  await stat(app);
} catch {
  usage(`no such file: ${app}`);
}

let esbuild, componentize;
try {
  esbuild = await import('esbuild');
  ({ componentize } = await import('@bytecodealliance/componentize-js'));
} catch (e) {
  console.error(`build.mjs: ${e.message}\nbuild.mjs: install the build tools first: ${join(sdkDir, 'setup.sh')}`);
  process.exit(1);
}

const work = await mkdtemp(join(tmpdir(), 'wasmgrid-js-'));
try {
  await build();
} catch (e) {
  console.error(`build.mjs: building ${app} failed:\n${e?.message ?? e}`);
  process.exitCode = 1;
} finally {
  await rm(work, { recursive: true, force: true });
}

async function build() {
  // 1. One ES module: entry + app + SDK.
  const entry = join(work, 'entry.js');
  const sdkPath = join(sdkDir, 'wasmgrid.js');
  const bundleOptions = {
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    mainFields: ['module', 'main'],
    target: 'es2022',
    alias: { 'wasmgrid-sdk': sdkPath },
    // WIT imports (e.g. 'wasmgrid:algorithm/secrets@0.1.0') are resolved by
    // componentize-js, not bundled.
    external: ['wasmgrid:*', 'wasi:*'],
    logLevel: 'silent',
  };
  // Does the app export `init`? Then the component is of the world
  // `algorithm-with-init` and exports `lifecycle.init` too.
  const probe = await esbuild.build({
    ...bundleOptions,
    entryPoints: [app],
    write: false,
    metafile: true,
    absWorkingDir: dirname(app),
    outdir: join(work, 'probe'),
  });
  const appExports = Object.values(probe.metafile.outputs).flatMap((o) => o.exports ?? []);
  if (!appExports.includes('apply')) throw new Error(`${app} does not export a function \`apply\``);
  const withInit = appExports.includes('init');
  const world = values.world ?? (withInit ? 'algorithm-with-init' : 'algorithm');
  // The host interfaces, handed to the SDK (see setHost in wasmgrid.js).
  const interfaces = {
    data: 'wasmgrid:algorithm/data@0.1.0',
    secrets: 'wasmgrid:algorithm/secrets@0.1.0',
    algo: 'wasmgrid:algorithm/algo@0.1.0',
    events: 'wasmgrid:algorithm/events@0.1.0',
    store: 'wasi:keyvalue/store@0.2.0-draft',
    atomics: 'wasi:keyvalue/atomics@0.2.0-draft',
    batch: 'wasi:keyvalue/batch@0.2.0-draft',
  };
  await writeFile(
    entry,
    [
      `import { algorithm, lifecycle as wasmgridLifecycle, setHost } from ${JSON.stringify(sdkPath)};`,
      ...Object.entries(interfaces).map(([name, spec]) => `import * as host_${name} from ${JSON.stringify(spec)};`),
      `setHost({ ${Object.keys(interfaces).map((n) => `${n}: host_${n}`).join(', ')} });`,
      `import * as app from ${JSON.stringify(app)};`,
      'export const handler = algorithm(app.apply);',
      ...(withInit ? ['export const lifecycle = wasmgridLifecycle(app.init);'] : []),
      '',
    ].join('\n'),
  );
  const bundlePath = join(work, 'bundle.js');
  const result = await esbuild.build({
    ...bundleOptions,
    entryPoints: [entry],
    // Module comments in the bundle name files relative to the app's directory.
    absWorkingDir: dirname(app),
    outfile: bundlePath,
  });
  for (const w of result.warnings) console.error(`build.mjs: warning: ${w.text}`);
  if (values['keep-bundle']) {
    await mkdir(dirname(out), { recursive: true });
    await copyFile(bundlePath, out.replace(/\.wasm$/, '') + '.bundle.js');
  }

  // 2. The component. componentize-js maps the source's directory (or the
  // current directory, if it contains the source) to `/` for the
  // pre-initialization (Wizer) run: run it from `work`, where the bundle sits
  // alone.
  const callerDir = process.cwd();
  process.chdir(work);
  let component;
  try {
    ({ component } = await componentize({
      sourcePath: bundlePath,
      witPath: wit,
      worldName: world,
      disableFeatures: ['http', 'fetch-event'],
    }));
  } finally {
    process.chdir(callerDir);
  }
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, component);
  console.error(
    `build.mjs: ${relative(process.cwd(), out) || out} (${(component.byteLength / 1048576).toFixed(1)} MiB)`,
  );
}
