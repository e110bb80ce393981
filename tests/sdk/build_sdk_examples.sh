#!/usr/bin/env bash
# Builds the Python and JavaScript SDK examples into components, from a clean
# checkout, for the integration tests that deploy them:
#
#   guest-examples/python-wordcount/out/python_wordcount.wasm
#   guest-examples/python-data/out/python_data.wasm
#   guest-examples/js-transform/out/js_transform.wasm
#   guest-examples/js-http-hello/out/js_http_hello.wasm (wasi:http, fetch-event)
#   guest-examples/python-pipeline/out/python_pipeline.wasm (algo.call, events, keyvalue)
#   guest-examples/python-warm/out/python_warm.wasm (init, world algorithm-with-init)
#   guest-examples/python-init-error/out/python_init_error.wasm (an init that fails)
#   guest-examples/js-services/out/js_services.wasm (data, secrets, algo, events, keyvalue)
#   guest-examples/js-warm/out/js_warm.wasm (init, world algorithm-with-init)
#   guest-examples/js-init-error/out/js_init_error.wasm (an init that fails)
#
# Outputs newer than their sources are kept (WASMGRID_REBUILD=1 rebuilds all).
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

# Each example: its directory, the output (relative to it). An output is rebuilt
# only when a file of its example, of its SDK (sdk/python or sdk/js, tools
# excluded) or of wit/ is newer than it; WASMGRID_REBUILD=1 rebuilds them all.
examples=(
  "python-wordcount out/python_wordcount.wasm"
  "python-data out/python_data.wasm"
  "python-pipeline out/python_pipeline.wasm"
  "python-warm out/python_warm.wasm"
  "python-init-error out/python_init_error.wasm"
  "js-transform out/js_transform.wasm"
  "js-http-hello out/js_http_hello.wasm"
  "js-services out/js_services.wasm"
  "js-warm out/js_warm.wasm"
  "js-init-error out/js_init_error.wasm"
)

# Succeeds when $1 exists and no source of it is newer.
up_to_date() {
  local out=$1 dir=$2 sdk=$3
  [ -z "${WASMGRID_REBUILD:-}" ] || return 1
  [ -f "$out" ] || return 1
  [ -z "$(find "$dir" "$sdk" "${WASMGRID_WIT:-wit}" -type f -newer "$out" \
    -not -path '*/out/*' -not -path '*/node_modules/*' -not -path '*/.venv/*' \
    -not -path '*/__pycache__/*' -not -path '*/tests/*' -not -path '*/test/*' \
    -print -quit)" ]
}

outs=()
for e in "${examples[@]}"; do
  read -r name rel <<<"$e"
  dir=guest-examples/$name
  out=$dir/$rel
  outs+=("$out")
  case $name in
    python-*) sdk=sdk/python ;;
    *) sdk=sdk/js ;;
  esac
  if up_to_date "$out" "$dir" "$sdk"; then
    printf '==> %s is up to date\n' "$out"
    continue
  fi
  rm -f "$out"
  step "Build $out" "$dir/build.sh"
  step "Check $out" check_component "$out"
done

for f in "${outs[@]}"; do
  printf '    %s: %s bytes\n' "$f" "$(wc -c <"$f" | tr -d ' ')"
done
