#!/usr/bin/env bash
# How many subscriptions a cluster carries (issue 15): at replicas 3 each
# subscription's durable consumer is a Raft group on three nats-servers.
# For each step of $STEPS (cumulative subscription counts) it reports:
#   - create: PUT /v1/topics/load/subscriptions/sN on node A, p50/p90/max ms
#     (the consumer's creation with its Raft group included);
#   - idle CPU: what the three nats-servers and the two nodes use over
#     $IDLE s with every subscription idle (% of one core, from /proc);
#   - nats-server memory (RSS, summed over the three);
#   - publish: one event matching one subscription, published on node B,
#     p50 of 20 (match among all of them, then the JetStream publish);
#   - start: how long a third node takes to serve once started with them all.
#
#   REPLICAS=3 STEPS="100 500 1000" benches/cluster_subs.sh
#
# Ports 24230-24235; temp dirs; stops everything at exit. Needs nats-server
# and curl; not run in CI (minutes, wants an idle machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

REPLICAS=${REPLICAS:-3}
STEPS=${STEPS:-"100 500 1000"}
IDLE=${IDLE:-10}
TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
for tool in nats-server curl; do
  command -v "$tool" >/dev/null || { echo "cluster_subs.sh: $tool is missing" >&2; exit 1; }
done

source "$root/benches/support/nats_cluster.sh"
start_nats_cluster 24230 subs
"$bin" cluster new-key "$work/cluster.key" >/dev/null

node_pids=()
start() { # name
  start_node "$1" --cluster "$urls" --cluster-key "$work/cluster.key" \
    --cluster-replicas "$REPLICAS" --cluster-prefix subs
  node_pids+=("$node_pid")
}

start a
start b
A=$(addr a); B=$(addr b); KEY=$(tr -d '\n' <"$work/a/admin.key")
auth=(-H "Authorization: Simple $KEY")
curl -sf -o /dev/null -X PUT "${auth[@]}" --data-binary @"$noop" \
  "http://$A/v1/algorithms/demo/noop/versions/1.0.0"
topic_key=$(curl -sf -X PUT "${auth[@]}" "http://$A/v1/topics/load" |
  sed -E 's/.*"key1":"([^"]+)".*/\1/')

ticks() { # summed utime+stime of the pids given
  local t=0
  for p in "$@"; do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$t"
}
rss_mib() {
  local k=0
  for p in "$@"; do k=$((k + $(awk '/VmRSS/{print $2}' "/proc/$p/status"))); done
  echo $((k / 1024))
}
hz=$(getconf CLK_TCK)
percentile() { # p (0-100), values...
  local p=$1; shift
  printf '%s\n' "$@" | sort -n | awk -v p="$p" '{a[NR]=$1} END {i=int(NR*p/100); if (i<1) i=1; if (p==100) i=NR; print a[i]}'
}

made=0
echo "replicas $REPLICAS; two nodes; three nats-servers; machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) vCPUs"
for step in $STEPS; do
  samples=()
  while [ "$made" -lt "$step" ]; do
    t0=$(date +%s%N)
    curl -sf -o /dev/null -X PUT "${auth[@]}" -H 'Content-Type: application/json' \
      --data "{\"destination\":{\"algorithm\":\"demo/noop\"},\"filter\":{\"subjectBeginsWith\":\"/dev/$made/\"}}" \
      "http://$A/v1/topics/load/subscriptions/s$made"
    samples+=($(( ($(date +%s%N) - t0) / 1000000 )))
    made=$((made + 1))
  done
  sleep 3 # let the creations settle (the other node's workers start)
  n0=$(ticks "${nats_pids[@]}"); w0=$(ticks "${node_pids[@]}")
  sleep "$IDLE"
  n1=$(ticks "${nats_pids[@]}"); w1=$(ticks "${node_pids[@]}")
  nats_cpu=$(( (n1 - n0) * 100 / hz / IDLE ))
  node_cpu=$(( (w1 - w0) * 100 / hz / IDLE ))
  pub=()
  for i in $(seq 1 20); do
    t0=$(date +%s%N)
    curl -sf -o /dev/null -X POST -H "aeg-sas-key: $topic_key" -H 'Content-Type: application/cloudevents+json' \
      --data "{\"specversion\":\"1.0\",\"id\":\"p$step-$i\",\"source\":\"/bench\",\"type\":\"t\",\"subject\":\"/dev/$((i % step))/x\"}" \
      "http://$B/v1/topics/load/events"
    pub+=($(( ($(date +%s%N) - t0) / 1000 )))
  done
  echo "$step subscriptions: create p50 $(percentile 50 "${samples[@]}") ms p90 $(percentile 90 "${samples[@]}") ms max $(percentile 100 "${samples[@]}") ms (the last $((${#samples[@]})))" \
    "| idle CPU: nats-servers ${nats_cpu}%, nodes ${node_cpu}% of a core" \
    "| nats-server RSS $(rss_mib "${nats_pids[@]}") MiB" \
    "| publish p50 $(percentile 50 "${pub[@]}") µs"
done

t0=$(date +%s%N)
start c
echo "a third node with $made subscriptions serves after $(( ($(date +%s%N) - t0) / 1000000 )) ms"
