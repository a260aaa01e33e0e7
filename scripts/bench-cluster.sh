#!/usr/bin/env bash
# The cluster benchmark (issue 17; results and method in BENCHMARKS.md).
#
# On this machine: a redis-server, one origin node A and two relay nodes B and C
# (release builds, free loopback ports, rate limits off). castgate-load publishes on A
# and spreads N viewers:
#   direct   all N viewers on A                    (A's CPU: --server-pid A)
#   relayed  the N viewers over B and C            (A serves two relays; B and C serve N)
#   first    one viewer on B of a stream B has not pulled yet (the pull included)
#   single   one viewer on A (with "first": the delay one relay hop adds)
# and prints one table: A's CPU, one-way delay p50/p99 (publisher → viewer, so the
# relayed row's delay includes the relay hop), connect and first-frame times.
#
# Usage: scripts/bench-cluster.sh [--viewers N] [--duration SECS] [--out DIR]
set -euo pipefail

VIEWERS=60
DURATION=15
OUT=""
while (($#)); do
  case "$1" in
    --viewers) VIEWERS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench-cluster: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
for tool in redis-server curl jq ffmpeg; do
  command -v "$tool" >/dev/null || { echo "bench-cluster: $tool is missing: run scripts/setup.sh --test" >&2; exit 2; }
done

cd "$(dirname "$0")/.."
cargo build --release --bins >&2
TARGET="${CARGO_TARGET_DIR:-target}/release"
GATE="$TARGET/castgate"
LOAD="$TARGET/castgate-load"
OUT="${OUT:-$(mktemp -d -t castgate-bench-cluster.XXXXXX)}"
mkdir -p "$OUT"
echo "bench-cluster: reports and logs in $OUT" >&2

# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh # free_port

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

# node ID: starts a node; sets NODE_PID and NODE_URL.
node() {
  local id="$1" http udp
  http=$(free_port); udp=$(free_port)
  cat >"$OUT/$id.toml" <<EOF
[http]
listen = "127.0.0.1:$http"
rate_limit_per_sec = 1000000
rate_limit_burst = 1000000
[rtc]
udp_listen = "127.0.0.1:$udp"
auto_detect_addresses = false
[record]
enabled = false
dir = "$OUT/$id.rec"
[cluster]
redis_url = "redis://127.0.0.1:$REDIS_PORT"
secret = "$SECRET"
node_id = "$id"
EOF
  RUST_LOG=warn GLIBC_TUNABLES=glibc.malloc.tcache_count=0 \
    "$GATE" serve --config "$OUT/$id.toml" >"$OUT/$id.log" 2>&1 &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  NODE_URL="http://127.0.0.1:$http"
  for _ in $(seq 100); do
    curl -fsS "$NODE_URL/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench-cluster: node $id did not start (see $OUT/$id.log)" >&2
  exit 1
}

node a; A_PID=$NODE_PID; A=$NODE_URL
node b; B=$NODE_URL
node c; C=$NODE_URL

# run NAME ARGS…: castgate-load publishing on A (A's CPU measured), JSON as NAME.json.
run() {
  local name="$1"; shift
  echo "bench-cluster: $name: castgate-load $*" >&2
  "$LOAD" --url "$A" --server-pid "$A_PID" --json --stream-prefix "$name" "$@" \
    >"$OUT/$name.json" 2>"$OUT/$name.load.log" || true
  jq -e . "$OUT/$name.json" >/dev/null 2>&1 || { echo '{}' >"$OUT/$name.json"; echo "bench-cluster: $name: no report" >&2; }
  sleep 12 # relays linger 10 s after their last viewer
}

run direct --viewers-per-stream "$VIEWERS" --duration "$DURATION" --viewer-url "$A"
run relayed --viewers-per-stream "$VIEWERS" --duration "$DURATION" --viewer-url "$B" --viewer-url "$C"
run first --viewers-per-stream 1 --duration 10 --viewer-url "$B"
run single --viewers-per-stream 1 --duration 10 --viewer-url "$A"

echo
echo "| run | viewers ok/failed | origin CPU % | delay p50/p99 ms | connect p50/p95 ms | first frame p50/p95 ms |"
echo "|---|---|---|---|---|---|"
for name in direct relayed first single; do
  jq -r --arg n "$name" '
    def f(x; d): if x == null then "–" else (x * pow(10; d) | round / pow(10; d) | tostring) end;
    [ $n,
      "\(.sessions_ok // "–")/\(.sessions_failed // "–")",
      f(.server_cpu_pct; 0),
      "\(f(.delay_ms.p50; 1))/\(f(.delay_ms.p99; 1))",
      "\(f(.connect_ms.p50; 0))/\(f(.connect_ms.p95; 0))",
      "\(f(.first_frame_ms.p50; 0))/\(f(.first_frame_ms.p95; 0))" ] | "| " + join(" | ") + " |"' "$OUT/$name.json"
done
