#!/usr/bin/env bash
# Builds the Python and JavaScript SDK examples into components, from a clean
# checkout, for the integration tests that deploy them:
#
#   guest-examples/python-wordcount/out/python_wordcount.wasm
#   guest-examples/python-data/out/python_data.wasm
#   guest-examples/js-transform/out/js_transform.wasm
#   guest-examples/js-http-hello/out/js_http_hello.wasm (wasi:http, fetch-event)
#
# Installs what it needs first (each only when missing or out of date):
#   sdk/python/.venv      python3 -m venv + pip install -r sdk/python/requirements.txt
#   sdk/js/node_modules   npm ci (sdk/js/package-lock.json)
# and runs the SDKs' own unit tests (python3 unittest, node --test; < 1 s).
#
# Idempotent; prints one line per step and the tools' output only when a step
# fails. Needs python3 (>= 3.9, with venv), Node.js >= 20 and npm, and PyPI/npm
# registry access on the first run. WASMGRID_WIT overrides the WIT directory
# (default: wit/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT

step() {
  local what=$1
  shift
  printf '==> %s\n' "$what"
  local start=$SECONDS
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    printf 'FAILED: %s (%s)\n' "$what" "$*" >&2
    exit 1
  fi
  if [ $((SECONDS - start)) -ge 5 ]; then
    printf '    (%ss)\n' $((SECONDS - start))
  fi
}

# Fails unless $1 is a WebAssembly component (magic `\0asm`, version 0x0d, layer 1).
check_component() {
  local header
  header=$(head -c 8 "$1" | od -An -tx1 | tr -d ' \n')
  if [ "$header" != 0061736d0d000100 ]; then
    echo "$1 is not a WebAssembly component (header $header)" >&2
    return 1
  fi
}

py_out=guest-examples/python-wordcount/out/python_wordcount.wasm
pydata_out=guest-examples/python-data/out/python_data.wasm
js_out=guest-examples/js-transform/out/js_transform.wasm
jshttp_out=guest-examples/js-http-hello/out/js_http_hello.wasm

step "Python SDK unit tests (sdk/python/tests)" \
  env PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s sdk/python/tests
step "JavaScript SDK unit tests (sdk/js/test)" node --test sdk/js/test/

step "Python SDK tools (sdk/python/.venv, componentize-py)" bash -c '
  venv=sdk/python/.venv
  if [ -x "$venv/bin/componentize-py" ] && cmp -s sdk/python/requirements.txt "$venv/.wasmgrid-requirements"; then exit 0; fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r sdk/python/requirements.txt
  cp sdk/python/requirements.txt "$venv/.wasmgrid-requirements"'
step "JavaScript SDK tools (sdk/js/node_modules, npm ci)" sdk/js/setup.sh

rm -f "$py_out" "$pydata_out" "$js_out" "$jshttp_out"
step "Build $py_out" guest-examples/python-wordcount/build.sh
step "Check $py_out" check_component "$py_out"
step "Build $pydata_out" guest-examples/python-data/build.sh
step "Check $pydata_out" check_component "$pydata_out"
step "Build $js_out" guest-examples/js-transform/build.sh
step "Check $js_out" check_component "$js_out"
step "Build $jshttp_out" guest-examples/js-http-hello/build.sh
step "Check $jshttp_out" check_component "$jshttp_out"

for f in "$py_out" "$pydata_out" "$js_out" "$jshttp_out"; do
  printf '    %s: %s bytes\n' "$f" "$(wc -c <"$f" | tr -d ' ')"
done
