#!/usr/bin/env bash
# Runs two builds of one bench alternately, to compare a tree before and after
# a change on the same machine (docs/PERFORMANCE.md, issue 14). Each pair runs
# in the other order from the one before, so an order effect shows.
#
#   benches/alternate.sh PAIRS BEFORE_TREE BEFORE_BIN AFTER_TREE AFTER_BIN [bench args...]
#
# BEFORE_BIN / AFTER_BIN are bench executables (`cargo bench -p wasmgrid
# --no-run` prints them); each runs from its tree's runtime/ directory, where
# the benches find guest-examples/. Environment variables (WASMGRID_EVENTS_BENCH,
# JOBS_BENCH_*) pass through. Output lines are prefixed `before N` / `after N`.
set -euo pipefail
[ $# -ge 5 ] || { sed -n '2,12p' "$0"; exit 2; }
pairs=$1 before_tree=$2 before_bin=$3 after_tree=$4 after_bin=$5
shift 5
run() { (cd "$2/runtime" && "$3" --bench "$@" 2>&1 | sed "s/^/$1 $i /") ; }
for i in $(seq 1 "$pairs"); do
  if [ $((i % 2)) = 1 ]; then
    run before "$before_tree" "$before_bin" "$@"; run after "$after_tree" "$after_bin" "$@"
  else
    run after "$after_tree" "$after_bin" "$@"; run before "$before_tree" "$before_bin" "$@"
  fi
done
