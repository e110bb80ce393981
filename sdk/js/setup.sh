#!/usr/bin/env bash
# Installs the JavaScript SDK's build tools (sdk/js/node_modules) with `npm ci`
# from package-lock.json, unless they are already installed from this exact lock
# file. Needs Node.js >= 20 and npm (registry access on first run).
set -euo pipefail
sdk=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stamp=$sdk/node_modules/.wasmgrid-package-lock.json
if [ -d "$sdk/node_modules" ] && cmp -s "$sdk/package-lock.json" "$stamp"; then
  exit 0
fi
echo "sdk/js/setup.sh: npm ci in $sdk"
(cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error)
cp "$sdk/package-lock.json" "$stamp"
