#!/usr/bin/env bash
# Builds guest-examples/python-init-error/out/python_init_error.wasm with the Python SDK.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../../sdk/python/build.sh" "$here" init_error "$here/out/python_init_error.wasm"
