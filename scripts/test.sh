#!/usr/bin/env bash
# Runs the whole wasmgrid test suite from a clean clone on a fresh machine.
# Installs what it needs first: the wasm32-wasip2 Rust target (guest examples),
# nats-server (Debian's package, for the NATS backend's cluster tests),
# a Python venv with Algorithmia's official client (compatibility test), and the
# Python/JS SDK toolchains (componentize-py from PyPI, componentize-js from npm).
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints how long the previous one took, so a slow CI run shows where
# its time went; the last line gives the whole run.
STEP_NAME=""
STEP_START=$SECONDS
step() {
  if [ -n "$STEP_NAME" ]; then
    printf '==> %s: %ds\n' "$STEP_NAME" "$((SECONDS - STEP_START))"
  fi
  STEP_NAME="$*"
  STEP_START=$SECONDS
  printf '\n==> %s\n' "$*"
}
trap 'step_end=$?; [ -n "$STEP_NAME" ] && printf "==> %s: %ds\n==> total: %ds\n" "$STEP_NAME" "$((SECONDS - STEP_START))" "$SECONDS"; exit $step_end' EXIT

step "Rust target wasm32-wasip2"
rustup target add wasm32-wasip2

step "nats-server (Debian's; the NATS backend's tests start a 3-node cluster)"
if ! command -v nats-server >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nats-server
fi
nats-server --version

step "Python venv for the Algorithmia client test (tests/.venv)"
if [ ! -x tests/.venv/bin/python ]; then
  python3 -m venv tests/.venv
fi
tests/.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt

step "Guest examples (guest-examples/, wasm32-wasip2)"
(cd guest-examples && cargo build --release --locked)

step "Python and JavaScript SDK examples (sdk/python/.venv, sdk/js/node_modules)"
bash tests/sdk/build_sdk_examples.sh

step "Host: formatting"
cargo fmt --all -- --check
# (Clippy runs before each submission: `cargo clippy --workspace --all-targets
# -- -D warnings`. It would compile every dependency a second time here.)

step "Crate graph (each crate depends only on those below it)"
bash scripts/check-crate-graph.sh

step "Tests (unit + integration against the real binary)"
cargo test --workspace --locked

# The durability subset again, every server a cluster node on a real
# 3-server NATS cluster at replicas 3 (tests/integration/support.rs,
# `cluster_flags`): events (seed pipelines, ingress and dedup), data files
# through the API, batch jobs (including a kill -9 and resume), and the
# Algorithmia client.
step "Tests on the cluster backend (WASMGRID_TEST_BACKEND=nats, tagged subset)"
WASMGRID_TEST_BACKEND=nats cargo test --locked --test integration -- \
  events::seed_000_file_created_runs_the_pipeline \
  events::seed_003_filter_retry_dead_letter_and_redrive \
  events::ingress_formats_auth_and_dedup \
  data::files_round_trip_through_the_api \
  jobs::a_folder_of_500_files_is_scored_with_max_concurrency_2 \
  jobs::a_job_resumes_after_kill_9_without_redoing_finished_files \
  algorithmia::algorithmia_python_client_works_unchanged
