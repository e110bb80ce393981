// js-init-error: an `init` that fails (world `algorithm-with-init`), as when
// the model file an algorithm loads once per instance is missing.
//
// `init` throws `new Error('model file missing')`; the SDK maps an error that
// is not a wasmgrid error to `permanent`, so every call fails with
// `init failed: Error: model file missing` (error type `AlgorithmError`) and
// the host discards the instance: with `reuse=N` the next call gets a new
// instance and runs `init` again.
//
// `apply` would echo its input if it were ever reached, which it must not be.

export function init() {
  throw new Error('model file missing');
}

export function apply(input) {
  return { reached: 'apply', input };
}
