#!/usr/bin/env bash
# Builds a Python wasmgrid algorithm into a component with componentize-py.
#
#   sdk/python/build.sh SRC_DIR MODULE OUT.wasm
#
# SRC_DIR holds MODULE.py (or the package MODULE/), which defines
# `def apply(input)` or `def apply(input, trigger)`. The component lands in
# OUT.wasm (parent directories are created). Pure-Python dependencies may sit in
# SRC_DIR, or in directories listed in WASMGRID_PY_PATH (colon-separated, e.g.
# one made with `pip install --target DIR pkg`); see sdk/python/README.md.
# A module that also defines `def init():` is built for the world
# `algorithm-with-init` (the host runs `init` once per instance).
#
# On first use this creates the venv sdk/python/.venv with the pinned tools from
# sdk/python/requirements.txt (setup.sh). WASMGRID_PY_VENV overrides the venv
# location, WASMGRID_WIT the WIT directory (default: the repository's wit/).
set -euo pipefail

if [ $# -ne 3 ]; then
  echo "usage: $0 SRC_DIR MODULE OUT.wasm" >&2
  exit 2
fi
src=$(cd "$1" && pwd)
module=$2
out=$3

sdk=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wit=${WASMGRID_WIT:-$(cd "$sdk/../.." && pwd)/wit}
venv=${WASMGRID_PY_VENV:-$sdk/.venv}
"$sdk/setup.sh"

if [ "$module" = wasmgrid_main ] || [ "$module" = wasmgrid ]; then
  echo "build.sh: the module must not be called $module" >&2
  exit 2
fi

# The entry module componentize-py wraps: it exports the module's `apply` as
# handler.apply. It lives in a scratch directory (not in SRC_DIR) with a copy
# of the SDK package, so only `wasmgrid/` is added to the path, not sdk/python.
shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
cp -R "$sdk/wasmgrid" "$shim/wasmgrid"
cat >"$shim/wasmgrid_main.py" <<EOF
import sys
sys.dont_write_bytecode = True  # no __pycache__ in SRC_DIR from the build-time import

import wasmgrid
import $module as _app

Handler = wasmgrid.algorithm(_app.apply)

# componentize-py bundles only the modules imported at build time, and the SDK
# imports the bindings lazily (so it also imports on plain CPython): load every
# host interface's bindings here so that they are in the component.
from wit_world.imports import algo, atomics, batch, data, events, secrets, store, types  # noqa: E402,F401
EOF
# A module that defines `init` (a top-level `def init(`) is built for the world
# `algorithm-with-init`: the host calls `init` once per instance.
world=algorithm
if [ -f "$src/$module.py" ]; then
  app_file=$src/$module.py
else
  app_file=$src/$module/__init__.py
fi
if grep -Eq '^(async[[:space:]]+)?def[[:space:]]+init[[:space:]]*\(' "$app_file"; then
  world=algorithm-with-init
  echo 'Lifecycle = wasmgrid.lifecycle(_app.init)' >>"$shim/wasmgrid_main.py"
fi

mkdir -p "$(dirname "$out")"
# -p order: the entry shim and SDK, the app's directory, then WASMGRID_PY_PATH.
paths=(-p "$shim" -p "$src")
if [ -n "${WASMGRID_PY_PATH:-}" ]; then
  IFS=: read -r -a extra <<<"$WASMGRID_PY_PATH"
  for dir in "${extra[@]}"; do
    [ -n "$dir" ] && paths+=(-p "$(cd "$dir" && pwd)")
  done
fi
# VIRTUAL_ENV is cleared so componentize-py does not bundle the tool venv's
# site-packages (pip, setuptools) into the component.
env -u VIRTUAL_ENV PYTHONDONTWRITEBYTECODE=1 RUST_LIB_BACKTRACE=0 "$venv/bin/componentize-py" \
  -d "$wit" -w "$world" \
  componentize "${paths[@]}" wasmgrid_main -o "$out" >/dev/null
