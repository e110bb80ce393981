#!/usr/bin/env bash
# Builds guest-examples/js-http-hello/out/js_http_hello.wasm with componentize-js
# (runs `npm ci` in sdk/js first if its node_modules is missing or stale).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/../../sdk/js/setup.sh"
exec node "$here/build.mjs"
