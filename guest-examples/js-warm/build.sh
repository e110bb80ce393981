#!/usr/bin/env bash
# Builds guest-examples/js-warm/out/js_warm.wasm with the JavaScript SDK.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sdk=$here/../../sdk/js
"$sdk/setup.sh"
exec node "$sdk/build.mjs" "$here/warm.js" -o "$here/out/js_warm.wasm"
