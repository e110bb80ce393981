#!/usr/bin/env bash
# Checks that the workspace's crate graph is the architecture
# (docs/ARCHITECTURE.md): each crate may depend only on the crates below it.
# A dependency that points the wrong way fails here, naming the crate and the
# dependency that must go.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
# crate, then the packages that must not be in its normal (non-dev) dependency tree.
check() {
  local crate=$1; shift
  local tree
  tree=$(cargo tree --locked -p "$crate" -e normal --prefix none | awk '{print $1}' | sort -u)
  for banned in "$@"; do
    if grep -qx "$banned" <<<"$tree"; then
      echo "crate graph: $crate depends on $banned; move the code that needs it up a layer (see docs/ARCHITECTURE.md)" >&2
      fail=1
    fi
  done
}

check wasmgrid-cloudevents tokio wasmtime redb axum hyper \
  wasmgrid-store wasmgrid-engine wasmgrid-core wasmgrid-events wasmgrid-jobs wasmgrid-http
check wasmgrid-store wasmtime axum hyper wasmgrid-store-nats \
  wasmgrid-engine wasmgrid-core wasmgrid-events wasmgrid-jobs wasmgrid-http
check wasmgrid-engine axum redb \
  wasmgrid-store wasmgrid-core wasmgrid-events wasmgrid-jobs wasmgrid-http
check wasmgrid-core axum wasmgrid-events wasmgrid-jobs wasmgrid-http
check wasmgrid-events axum wasmgrid-jobs wasmgrid-http
check wasmgrid-jobs axum wasmgrid-events wasmgrid-http
# The NATS backend sits beside the embedded one: only wasmgrid-store below it.
# redb reaches it only through wasmgrid-store (whose embedded backend shares the
# crate), so it is banned as a direct dependency.
check wasmgrid-store-nats wasmtime axum \
  wasmgrid-engine wasmgrid-core wasmgrid-events wasmgrid-jobs wasmgrid-http
if cargo tree --locked -p wasmgrid-store-nats -e normal --depth 1 --prefix none | awk '{print $1}' | grep -qx redb; then
  echo "crate graph: wasmgrid-store-nats depends on redb directly" >&2
  fail=1
fi

if [ "$fail" -ne 0 ]; then
  exit 1
fi
echo "crate graph: every dependency points down"
