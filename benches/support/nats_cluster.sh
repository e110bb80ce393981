# Shared by the cluster bench scripts (source it after setting $root and
# $TARGET_DIR): builds the release binary and the noop guest, makes $work
# (removed at exit with every pid in $pids), and starts a 3-server JetStream
# cluster on loopback with `start_nats_cluster BASE NAME` (client ports
# BASE..BASE+2, routes BASE+3..BASE+5, max_payload 8MB); it sets $urls and
# $nats_pids. `start_node NAME ARGS...` starts `wasmgrid serve ARGS...` on a
# free loopback port with data dir $work/NAME (its pid in $node_pid), and
# `addr NAME` prints the address it listens on.

echo "==> building (release) wasmgrid and the noop guest"
(cd "$root/runtime" && cargo build --release --locked --target-dir "$TARGET_DIR" -q)
(cd "$root/guest-examples" && cargo build --release --locked -q -p noop)
bin=$TARGET_DIR/release/wasmgrid
noop=$root/guest-examples/target/wasm32-wasip2/release/noop.wasm

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

start_nats_cluster() { # base port, cluster name
  local base=$1 name=$2 i
  local routes="nats-route://127.0.0.1:$((base + 3)), nats-route://127.0.0.1:$((base + 4)), nats-route://127.0.0.1:$((base + 5))"
  nats_pids=()
  for i in 0 1 2; do
    cat >"$work/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((base + i))
max_payload: 8MB
jetstream { store_dir: "$work/n$i" }
cluster { name: $name, listen: 127.0.0.1:$((base + 3 + i)), routes: [$routes] }
CONF
    nats-server -c "$work/n$i.conf" >"$work/n$i.log" 2>&1 &
    pids+=($!)
    nats_pids+=($!)
  done
  urls=nats://127.0.0.1:$base,nats://127.0.0.1:$((base + 1)),nats://127.0.0.1:$((base + 2))
  sleep 2 # the servers elect a meta leader
}

start_node() { # name, extra args...
  local name=$1; shift
  mkdir -p "$work/$name"
  "$bin" serve --addr 127.0.0.1:0 --data-dir "$work/$name" "$@" >"$work/$name.log" 2>&1 &
  node_pid=$!
  pids+=($!)
  for _ in $(seq 1200); do
    [ -s "$work/$name/server.json" ] && return 0
    sleep 0.05
  done
  echo "$(basename "$0"): $name did not start; its log:" >&2
  cat "$work/$name.log" >&2
  exit 1
}
addr() { sed -E 's/.*"addr":"([^"]+)".*/\1/' "$work/$1/server.json"; }
