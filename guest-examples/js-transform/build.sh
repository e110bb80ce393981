#!/usr/bin/env bash
# Builds guest-examples/js-transform/out/js_transform.wasm with the JavaScript SDK
# (runs `npm ci` in sdk/js first if its node_modules is missing or stale).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sdk=$here/../../sdk/js
"$sdk/setup.sh"
exec node "$sdk/build.mjs" "$here/transform.js" -o "$here/out/js_transform.wasm"
