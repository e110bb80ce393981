#!/usr/bin/env bash
# Installs the Python SDK's build tools (componentize-py, pinned in
# requirements.txt) into a venv, sdk/python/.venv by default
# (WASMGRID_PY_VENV overrides it), unless that venv already has this exact
# requirements.txt installed. Needs python3 >= 3.9 with venv (Debian:
# python3-venv), and PyPI access or a wheel mirror on first run.
set -euo pipefail
sdk=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${WASMGRID_PY_VENV:-$sdk/.venv}
stamp=$venv/.wasmgrid-requirements
if [ -x "$venv/bin/componentize-py" ] && cmp -s "$sdk/requirements.txt" "$stamp"; then
  exit 0
fi
echo "sdk/python/setup.sh: installing $(grep -v '^#' "$sdk/requirements.txt" | xargs) into $venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$sdk/requirements.txt"
cp "$sdk/requirements.txt" "$stamp"
