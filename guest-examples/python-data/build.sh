#!/usr/bin/env bash
# Builds guest-examples/python-data/out/python_data.wasm with the Python SDK
# (creates sdk/python/.venv with componentize-py on first use).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../../sdk/python/build.sh" "$here" pydata "$here/out/python_data.wasm"
