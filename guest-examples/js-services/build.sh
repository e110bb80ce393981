#!/usr/bin/env bash
# Builds guest-examples/js-services/out/js_services.wasm with the JavaScript SDK.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sdk=$here/../../sdk/js
"$sdk/setup.sh"
exec node "$sdk/build.mjs" "$here/services.js" -o "$here/out/js_services.wasm"
