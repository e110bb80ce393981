#!/usr/bin/env bash
# Builds guest-examples/js-init-error/out/js_init_error.wasm with the JavaScript SDK.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sdk=$here/../../sdk/js
"$sdk/setup.sh"
exec node "$sdk/build.mjs" "$here/init_error.js" -o "$here/out/js_init_error.wasm"
