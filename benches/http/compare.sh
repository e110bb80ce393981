#!/usr/bin/env bash
# Side-by-side HTTP throughput and latency: bare hyper, `wasmtime serve`, and
# wasmgrid (a wasi:http component, and the invoke API on `noop`).
#
#   benches/http/compare.sh                 # 5 rounds of 10 s per target
#   ROUNDS=3 DURATION=5 benches/http/compare.sh
#
# What it does:
#   1. builds (release) the wasmgrid binary, the bare hyper server
#      (benches/http/hyper-hello) and the guests `http-hello` (wasi:http hello,
#      13-byte body) and `noop`;
#   2. installs wasmtime-cli $WASMTIME_VERSION (the wasmtime wasmgrid is built
#      on) into benches/.tools with `cargo install --locked` if it is absent
#      (a cold release build: ~15 min on 2 cores);
#   3. starts the servers, each pinned to CPU $SERVER_CPU with taskset:
#        hyper     bare hyper, same 13-byte body, no Wasm
#        wasmtime  wasmtime serve -S cli -O pooling-allocator=y http_hello.wasm
#        wg-http   wasmgrid serving the same component at /http/demo/hello/ (public)
#        wg-invoke wasmgrid POST /v1/algo/demo/noop (admin key, 5-byte text body)
#   4. for $ROUNDS alternating rounds, runs `wrk -t1 -c$CONNS` pinned to CPU
#      $CLIENT_CPU against each target for $DURATION s (after a 2 s warm-up),
#      then `wrk -t1 -c1 --latency` for $LATENCY_DURATION s;
#   5. prints the median req/s per target, the ratios the issue sets targets
#      for, and the median p50/p99 latency at -c1. Any non-2xx response or
#      socket error fails the run. It also prints the server's CPU time per
#      request (user + system, from /proc/PID/stat around each -c$CONNS run):
#      on a machine shared with other work a server may not get all of its CPU,
#      and then req/s says more about the scheduler than about the server.
#
# Every server runs with RUST_BACKTRACE, RUST_LIB_BACKTRACE and RUST_LOG unset
# (a debugging environment would make wasmtime capture a backtrace for each
# error it builds internally; production servers don't run that way).
#
# Needs wrk (Debian: apt-get install wrk), taskset (util-linux), 2+ CPUs.
# Not run in CI: it takes minutes and wants an otherwise idle machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
LATENCY_DURATION=${LATENCY_DURATION:-5}
CONNS=${CONNS:-32}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
WASMTIME_VERSION=${WASMTIME_VERSION:-48.0.8}
PORT_HYPER=${PORT_HYPER:-18090}
PORT_WASMTIME=${PORT_WASMTIME:-18091}
PORT_WASMGRID=${PORT_WASMGRID:-18092}
TARGETS=(hyper wasmtime wg-http wg-invoke)

die() {
  echo "compare.sh: $*" >&2
  exit 1
}
for tool in wrk taskset curl; do
  command -v "$tool" >/dev/null || die "$tool is missing (Debian: apt-get install wrk util-linux curl)"
done
[ "$(nproc --all)" -ge 2 ] || die "needs 2 CPUs (server on $SERVER_CPU, wrk on $CLIENT_CPU)"

echo "==> building wasmgrid, hyper-hello (release) and the guests http-hello, noop"
cargo build --release --locked --quiet -p wasmgrid -p hyper-hello
(cd guest-examples && cargo build --release --locked --quiet -p http-hello -p noop)
hello_wasm=$root/guest-examples/target/wasm32-wasip2/release/http_hello.wasm
noop_wasm=$root/guest-examples/target/wasm32-wasip2/release/noop.wasm
wasmgrid=$root/target/release/wasmgrid

wasmtime=$root/benches/.tools/bin/wasmtime
if ! "$wasmtime" --version 2>/dev/null | grep -Eq "^wasmtime $WASMTIME_VERSION( |$)"; then
  echo "==> installing wasmtime-cli $WASMTIME_VERSION into benches/.tools (cold release build, ~15 min)"
  cargo install --locked wasmtime-cli --version "$WASMTIME_VERSION" --root "$root/benches/.tools"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() { # URL [curl args...]
  local url=$1
  shift
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null "$@" "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "no answer from $url; logs in $work"
}

echo "==> starting the servers on CPU $SERVER_CPU"
clean_env=(env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE -u RUST_LOG -u WASMGRID_LOG)
taskset -c "$SERVER_CPU" "${clean_env[@]}" "$root/target/release/hyper-hello" "127.0.0.1:$PORT_HYPER" \
  2>"$work/hyper.log" &
pid_hyper=$!
pids+=($!)
taskset -c "$SERVER_CPU" "${clean_env[@]}" "$wasmtime" serve -S cli -O pooling-allocator=y \
  --addr "127.0.0.1:$PORT_WASMTIME" "$hello_wasm" 2>"$work/wasmtime.log" &
pid_wasmtime=$!
pids+=($!)
taskset -c "$SERVER_CPU" "${clean_env[@]}" "$wasmgrid" serve --addr "127.0.0.1:$PORT_WASMGRID" \
  --data-dir "$work/wasmgrid" 2>"$work/wasmgrid.log" &
pid_wasmgrid=$!
pids+=($!)
wait_for "http://127.0.0.1:$PORT_HYPER/"
wait_for "http://127.0.0.1:$PORT_WASMTIME/"
wait_for "http://127.0.0.1:$PORT_WASMGRID/healthz"
for pid in "${pids[@]}"; do
  kill -0 "$pid" 2>/dev/null || die "a server exited at start (port in use?); logs in $work"
done
export WASMGRID_KEY
WASMGRID_KEY=$(cat "$work/wasmgrid/admin.key")
"$wasmgrid" --data-dir "$work/wasmgrid" deploy "$hello_wasm" demo/hello@1.0.0 --public >/dev/null
"$wasmgrid" --data-dir "$work/wasmgrid" deploy "$noop_wasm" demo/noop@1.0.0 >/dev/null

url_of() {
  case $1 in
    hyper) echo "http://127.0.0.1:$PORT_HYPER/" ;;
    wasmtime) echo "http://127.0.0.1:$PORT_WASMTIME/" ;;
    wg-http) echo "http://127.0.0.1:$PORT_WASMGRID/http/demo/hello/" ;;
    wg-invoke) echo "http://127.0.0.1:$PORT_WASMGRID/v1/algo/demo/noop" ;;
  esac
}
pid_of() {
  case $1 in
    hyper) echo "$pid_hyper" ;;
    wasmtime) echo "$pid_wasmtime" ;;
    wg-*) echo "$pid_wasmgrid" ;;
  esac
}
# CPU ticks (user + system) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
script_of() {
  case $1 in
    wg-invoke) echo "-s $root/benches/http/invoke.lua" ;;
    *) echo "" ;;
  esac
}

# Every target must answer 2xx with the expected body before measuring.
for t in hyper wasmtime wg-http; do
  body=$(curl -fsS "$(url_of "$t")") || die "$t: request failed"
  [ "$body" = "Hello, world!" ] || die "$t answered $body"
done
curl -fsS -X POST -H "Authorization: Simple $WASMGRID_KEY" -H 'Content-Type: text/plain' \
  --data-binary hello "$(url_of wg-invoke)" | grep -q '"result":"hello"' || die "wg-invoke: unexpected answer"

# run_wrk TARGET CONNS SECONDS: prints the wrk output; fails on errors.
run_wrk() {
  local t=$1 c=$2 d=$3 out
  # shellcheck disable=SC2046
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$c" -d"${d}s" --latency $(script_of "$t") "$(url_of "$t")")
  if grep -q "Non-2xx or 3xx responses" <<<"$out"; then
    echo "$out" >&2
    die "$t answered non-2xx responses (-c$c)"
  fi
  if grep -q "Socket errors" <<<"$out"; then
    echo "$out" >&2
    die "$t had socket errors (-c$c)"
  fi
  echo "$out"
}

# wrk prints latencies as 45.12us / 1.20ms / 1.00s: convert to microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n
  }'
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "==> $ROUNDS rounds: wrk -t1 -c$CONNS -d${DURATION}s and -c1 -d${LATENCY_DURATION}s per target (server CPU $SERVER_CPU, wrk CPU $CLIENT_CPU)"
for round in $(seq 1 "$ROUNDS"); do
  line="round $round:"
  for t in "${TARGETS[@]}"; do
    run_wrk "$t" "$CONNS" 2 >/dev/null # warm-up
    ticks=$(cpu_ticks "$(pid_of "$t")")
    out=$(run_wrk "$t" "$CONNS" "$DURATION")
    ticks=$(($(cpu_ticks "$(pid_of "$t")") - ticks))
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    echo "$rps" >>"$work/$t.rps"
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$(awk '/requests in/ { print $1 }' <<<"$out")" \
      'BEGIN { print t / hz / n * 1e6 }' >>"$work/$t.cpu"
    out=$(run_wrk "$t" 1 "$LATENCY_DURATION")
    to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")" >>"$work/$t.p50"
    to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")" >>"$work/$t.p99"
    line="$line $t $(printf '%.0f' "$rps")"
  done
  echo "  $line req/s"
done

echo
echo "Median of $ROUNDS rounds ($(date -u +%Y-%m-%d), $(nproc --all) CPUs: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
printf '| %-10s | %12s | %14s | %10s | %10s |\n' target "req/s (-c$CONNS)" "server CPU/req" "p50 (-c1)" "p99 (-c1)"
printf '|%s|%s|%s|%s|%s|\n' "------------" "--------------" "----------------" "------------" "------------"
for t in "${TARGETS[@]}"; do
  rps=$(median <"$work/$t.rps")
  cpu=$(median <"$work/$t.cpu")
  p50=$(median <"$work/$t.p50")
  p99=$(median <"$work/$t.p99")
  echo "$rps" >"$work/$t.median"
  echo "$cpu" >"$work/$t.cpumedian"
  printf '| %-10s | %14.0f | %13.1fus | %9.1fus | %9.1fus |\n' "$t" "$rps" "$cpu" "$p50" "$p99"
done
m() { cat "$work/$1.median"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
check() { # LABEL VALUE TARGET
  local verdict
  verdict=$(awk -v v="$2" -v t="$3" 'BEGIN { print (v >= t) ? "met" : "NOT met" }')
  printf '%-34s %6sx  (target >= %sx: %s)\n' "$1" "$2" "$3" "$verdict"
}
echo
check "wasmgrid http / wasmtime serve" "$(ratio "$(m wg-http)" "$(m wasmtime)")" 1.2
check "wasmgrid invoke noop / wasmtime" "$(ratio "$(m wg-invoke)" "$(m wasmtime)")" 2
check "wasmgrid invoke noop / bare hyper" "$(ratio "$(m wg-invoke)" "$(m hyper)")" 0.3
printf '%-34s %6sx\n' "wasmtime serve / bare hyper" "$(ratio "$(m wasmtime)" "$(m hyper)")"
printf '%-34s %6sx\n' "wasmgrid http / bare hyper" "$(ratio "$(m wg-http)" "$(m hyper)")"
c() { cat "$work/$1.cpumedian"; }
echo
echo "The same ratios from server CPU time per request (work done per request, whatever CPU share the server got):"
printf '%-34s %6sx\n' "wasmgrid http / wasmtime serve" "$(ratio "$(c wasmtime)" "$(c wg-http)")"
printf '%-34s %6sx\n' "wasmgrid invoke noop / wasmtime" "$(ratio "$(c wasmtime)" "$(c wg-invoke)")"
printf '%-34s %6sx\n' "wasmgrid invoke noop / bare hyper" "$(ratio "$(c hyper)" "$(c wg-invoke)")"
