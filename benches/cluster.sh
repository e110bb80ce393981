#!/usr/bin/env bash
# Cluster mode beside the embedded store (issue 15), over HTTP, with the
# release binary:
#   1. deploy-to-invocable: a Rust `noop` version deployed on node A, polled
#      on node B (POST /v1/algo every 5 ms) until it answers 200; $DEPLOYS
#      versions, p50/p90/max;
#   2. invoke latency: `wrk -t1 -c1 --latency` on POST /v1/algo/demo/noop for
#      $DURATION s against an embedded server and a cluster node, alternating
#      $ROUNDS rounds; median p50/p99 and req/s per target.
#
#   benches/cluster.sh                     # replicas 1
#   REPLICAS=3 ROUNDS=3 benches/cluster.sh
#
# It starts a 3-server JetStream cluster on loopback (ports 24220-24225, temp
# dirs, max_payload 8MB), two cluster nodes and one embedded server, and
# stops them all at exit. Needs nats-server, wrk, curl. Not run in CI: it
# takes minutes and wants an otherwise idle machine. On this 2-vCPU machine
# the three nats-servers, two nodes, wrk and curl share two cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

REPLICAS=${REPLICAS:-1}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
DEPLOYS=${DEPLOYS:-20}
TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
for tool in nats-server wrk curl; do
  command -v "$tool" >/dev/null || { echo "cluster.sh: $tool is missing" >&2; exit 1; }
done

source "$root/benches/support/nats_cluster.sh"
start_nats_cluster 24220 bench
"$bin" cluster new-key "$work/cluster.key" >/dev/null

key() { tr -d '\n' <"$work/$1/admin.key"; }

cluster_flags=(--cluster "$urls" --cluster-key "$work/cluster.key" --cluster-replicas "$REPLICAS" --cluster-prefix bench)
start_node a "${cluster_flags[@]}"
start_node b "${cluster_flags[@]}"
start_node embedded
A=$(addr a); B=$(addr b); E=$(addr embedded); KEY=$(key a)

deploy() { # addr, version, key
  curl -sf -o /dev/null -X PUT -H "Authorization: Simple $3" --data-binary @"$noop" \
    "http://$1/v1/algorithms/demo/noop/versions/$2"
}

echo "==> deploy on A, invocable on B ($DEPLOYS versions, replicas $REPLICAS)"
samples=()
for i in $(seq 1 "$DEPLOYS"); do
  version=1.0.$i
  t0=$(date +%s%N)
  deploy "$A" "$version" "$KEY"
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Simple $KEY" \
    -H 'Content-Type: text/plain' --data 'x' "http://$B/v1/algo/demo/noop/$version")" = 200 ]; do
    sleep 0.005
  done
  samples+=($(( ($(date +%s%N) - t0) / 1000000 )))
done
sorted=($(printf '%s\n' "${samples[@]}" | sort -n))
n=${#sorted[@]}
echo "deploy-to-invocable ms: p50 ${sorted[$((n / 2))]}  p90 ${sorted[$((n * 9 / 10))]}  max ${sorted[$((n - 1))]}  (n=$n; includes the deploy request and B's compile)"

ekey=$(key embedded)
deploy "$E" 1.0.1 "$ekey"
cat >"$work/invoke.lua" <<EOF
wrk.method = "POST"
wrk.body = "hello"
wrk.headers["Content-Type"] = "text/plain"
wrk.headers["Authorization"] = "Simple $KEY"
EOF
sed "s/$KEY/$ekey/" "$work/invoke.lua" >"$work/invoke-embedded.lua"

echo "==> invoke latency, wrk -c1, $ROUNDS rounds of $DURATION s"
declare -A p50 p99 rps
# wrk's latency column (412.00us, 1.02ms, 1.10s) in microseconds.
micros() { awk -v q="$1" '$1==q { v=$2; if (v ~ /us$/) { sub(/us$/, "", v); print v } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v*1000 } else { sub(/s$/, "", v); print v*1000000 } }'; }
for round in $(seq 1 "$ROUNDS"); do
  for target in embedded cluster; do
    if [ "$target" = embedded ]; then url=http://$E; script=$work/invoke-embedded.lua; else url=http://$B; script=$work/invoke.lua; fi
    out=$(wrk -t1 -c1 -d"${DURATION}s" --latency -s "$script" "$url/v1/algo/demo/noop")
    grep -q "Non-2xx" <<<"$out" && { echo "$out"; echo "cluster.sh: non-2xx answers" >&2; exit 1; }
    a=$(micros 50% <<<"$out"); b=$(micros 99% <<<"$out"); r=$(awk '/Requests\/sec/{print $2}' <<<"$out")
    p50[$target]+="$a "; p99[$target]+="$b "; rps[$target]+="$r "
    echo "round $round $target: p50 ${a} µs  p99 ${b} µs  $r req/s"
  done
done
median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for target in embedded cluster; do
  echo "$target: median p50 $(median "${p50[$target]}") µs  p99 $(median "${p99[$target]}") µs  $(median "${rps[$target]}") req/s"
done
