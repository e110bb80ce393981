#!/usr/bin/env bash
# Builds guest-examples/python-pipeline/out/python_pipeline.wasm with the Python SDK.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec "$here/../../sdk/python/build.sh" "$here" pipeline "$here/out/python_pipeline.wasm"
