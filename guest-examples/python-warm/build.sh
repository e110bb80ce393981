#!/usr/bin/env bash
# Builds guest-examples/python-warm/out/python_warm.wasm with the Python SDK.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../../sdk/python/build.sh" "$here" warm "$here/out/python_warm.wasm"
