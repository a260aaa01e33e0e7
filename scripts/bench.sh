#!/usr/bin/env bash
# castgate's benchmark suite (issue 7; results and method in BENCHMARKS.md).
#
# Builds castgate and castgate-load in release mode, then for every scenario starts a
# fresh castgate (temp record dir, free loopback ports, rate limit off), loads it with
# castgate-load (--server-pid: the server's own CPU and memory from /proc) and prints
# one table. Needs ffmpeg, ffprobe, curl and jq (scripts/setup.sh --test).
#
# Usage: scripts/bench.sh [--scale F] [--duration SECS] [--repeat N] [--only "1 2 3 4 5"] [--out DIR]
#   --scale F       multiply viewer/publisher counts (default 1; 0.2 for a quick look)
#   --duration S    seconds of steady load per scenario (default 15)
#   --repeat N      run each fan-out scenario N times and show the run with the median
#                   µs/packet, with the spread of all N (default 1)
#   --only LIST     run only these scenarios (1 fan-out, 2 rooms, 3 churn + setup burst,
#                   4 recording, 5 restream)
#   --out DIR       keep every JSON report and server log there (default: a temp dir)
set -euo pipefail

SCALE=1
DURATION=15
REPEAT=1
ONLY="1 2 3 4 5"
OUT=""
while (($#)); do
  case "$1" in
    --scale) SCALE="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --only) ONLY="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
for tool in ffmpeg ffprobe curl jq; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing: run scripts/setup.sh --test" >&2; exit 2; }
done

cd "$(dirname "$0")/.."
cargo build --release --bins >&2
TARGET="${CARGO_TARGET_DIR:-target}/release"
GATE="$TARGET/castgate"
LOAD="$TARGET/castgate-load"
OUT="${OUT:-$(mktemp -d -t castgate-bench.XXXXXX)}"
mkdir -p "$OUT"
echo "bench: reports and logs in $OUT" >&2

scaled() { awk -v n="$1" -v s="$SCALE" 'BEGIN { v = int(n * s + 0.5); print (v < 1 ? 1 : v) }'; }
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh # free_port

SERVER_PID=""
SINK_PID=""
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
  [[ -n "$SINK_PID" ]] && kill "$SINK_PID" 2>/dev/null || true
}
trap cleanup EXIT

# start_server NAME: a fresh castgate; sets SERVER_PID and URL.
start_server() {
  local name="$1" http udp
  http=$(free_port); udp=$(free_port)
  mkdir -p "$OUT/$name.rec"
  cat >"$OUT/$name.toml" <<EOF
[http]
listen = "127.0.0.1:$http"
rate_limit_per_sec = 1000000
rate_limit_burst = 1000000
[rtc]
udp_listen = "127.0.0.1:$udp"
auto_detect_addresses = false
[record]
enabled = true
dir = "$OUT/$name.rec"
streams = ["rec-*"]
min_free_mib = 0
[restream]
enabled = true
EOF
  # As scripts/run.sh and the Docker image run it (README "Deploying").
  RUST_LOG=warn GLIBC_TUNABLES=glibc.malloc.tcache_count=0 \
    "$GATE" serve --config "$OUT/$name.toml" >"$OUT/$name.server.log" 2>&1 &
  SERVER_PID=$!
  URL="http://127.0.0.1:$http"
  for _ in $(seq 100); do
    curl -fsS "$URL/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "bench: castgate did not start (see $OUT/$name.server.log)" >&2
  exit 1
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# load NAME ARGS…: runs castgate-load against a fresh server, keeps its JSON as NAME.json.
load() {
  local name="$1"; shift
  start_server "$name"
  echo "bench: $name: castgate-load $*" >&2
  "$LOAD" --url "$URL" --server-pid "$SERVER_PID" --json "$@" >"$OUT/$name.json" 2>"$OUT/$name.load.log" || true
  stop_server
  if ! jq -e . "$OUT/$name.json" >/dev/null 2>&1; then
    echo "bench: $name produced no report: $(tail -n 3 "$OUT/$name.load.log")" >&2
    echo '{}' >"$OUT/$name.json"
  fi
}

ROWS=()
# row LABEL NAME NOTE: one table row from NAME.json.
row() {
  local label="$1" name="$2" note="${3:-}"
  ROWS+=("$(jq -r --arg l "$label" --arg n "$note" '
    def f(x; d): if x == null then "–" else (x * pow(10; d) | round / pow(10; d) | tostring) end;
    [ $l,
      "\(.sessions_ok // "–")/\(.sessions_failed // "–")",
      (if (.window_packets // 0) > 0 then f(.window_packets / .window_s; 0) else "–" end),
      (if (.packets_received // 0) > 0 then "\(f(.loss_pct; 3)) (\(f(.loss_pct_max_viewer; 3)))" else "–" end),
      (if (.first_frame_ms.count // 0) > 0 then f(.first_frame_ms.p95; 0) else "–" end),
      (if (.delay_ms.count // 0) > 0 then "\(f(.delay_ms.p50; 1))/\(f(.delay_ms.p99; 1))" else "–" end),
      f(.server_cpu_pct; 0),
      f(.server_cpu_us_per_packet; 2),
      f(.server_rss_per_viewer_kb; 0),
      "\(f(.server_rss_start_kb / 1024; 1))→\(f(.server_peak_rss_kb / 1024; 1))→\(f(.server_rss_end_kb / 1024; 1))",
      f(.load_cpu_s / .window_s * 100; 0),
      $n ] | join(" | ")' "$OUT/$name.json")")
}

D="$DURATION"
if [[ " $ONLY " == *" 1 "* ]]; then
  for v in 10 100 300; do
    n=$(scaled "$v")
    runs=()
    for k in $(seq "$REPEAT"); do
      load "fanout-$n-run$k" --publishers 1 --viewers-per-stream "$n" --duration "$D" --ramp-per-sec 50
      runs+=("$OUT/fanout-$n-run$k.json")
    done
    # The run with the median µs/packet stands for the scenario; the note gives all runs.
    median=$(jq -rs 'to_entries | map(select(.value.server_cpu_us_per_packet != null))
      | sort_by(.value.server_cpu_us_per_packet) | if length == 0 then 1 else .[(length - 1) / 2 | floor].key + 1 end' "${runs[@]}")
    cp "$OUT/fanout-$n-run$median.json" "$OUT/fanout-$n.json"
    note="720p30 VP8 2.5 Mbit/s + Opus"
    if ((REPEAT > 1)); then
      note+="; run $median of $REPEAT (median); all runs µs/packet $(jq -rs 'map(.server_cpu_us_per_packet // "–" | tostring) | join(", ")' "${runs[@]}"), KiB/viewer $(jq -rs 'map(.server_rss_per_viewer_kb // "–" | if type == "number" then round else . end | tostring) | join(", ")' "${runs[@]}")"
    fi
    row "1 fan-out 1→$n" "fanout-$n" "$note"
  done
fi
if [[ " $ONLY " == *" 2 "* ]]; then
  p=$(scaled 50)
  load "rooms-$p" --publishers "$p" --viewers-per-stream 2 --duration "$D" --ramp-per-sec 50
  row "2 rooms $p×2" "rooms-$p" "720p30 VP8 2.5 Mbit/s each"
fi
if [[ " $ONLY " == *" 3 "* ]]; then
  load churn --publishers 1 --duration 30 --ramp-per-sec 20 --viewer-lifetime 2 --settle 3
  row "3 churn 20/s × 30 s" churn "each viewer 2 s; RSS start→peak→end"
  # Three rounds of viewers against one server: does memory come back?
  n=$(scaled 100)
  start_server rounds
  echo "bench: rounds: 3 × castgate-load with $n viewers" >&2
  for r in 1 2 3; do
    "$LOAD" --url "$URL" --server-pid "$SERVER_PID" --json --publishers 1 --viewers-per-stream "$n" \
      --duration 5 --ramp-per-sec 0 --connect-concurrency 32 --settle 16 --stream-prefix "round$r" \
      >"$OUT/rounds-$r.json" 2>"$OUT/rounds-$r.load.log" || echo '{}' >"$OUT/rounds-$r.json"
  done
  stop_server
  after=$(jq -rs 'map(.server_rss_end_kb // 0 | . / 1024 * 10 | round / 10 | tostring) | join(" → ")' \
    "$OUT"/rounds-{1,2,3}.json)
  row "3 rounds 3×$n" rounds-3 "RSS after each round (all sessions gone): $after MiB; start $(jq -r '.server_rss_start_kb // 0 | . / 1024 * 10 | round / 10' "$OUT/rounds-1.json") MiB"
  n=$(scaled 200)
  load "setup-$n" --publishers 1 --viewers-per-stream "$n" --duration 3 --ramp-per-sec 0 --connect-concurrency 64 --settle 3
  row "3 setup burst $n" "setup-$n" "$(jq -r '"\(.setup_per_s // "–") sessions/s, connect p95 \(.connect_ms.p95 // "–") ms"' "$OUT/setup-$n.json")"
fi
if [[ " $ONLY " == *" 4 "* ]]; then
  p=$(scaled 20)
  load "record-off-$p" --publishers "$p" --viewers-per-stream 0 --duration "$D" --stream-prefix norec
  row "4 $p publishers, recording off" "record-off-$p" ""
  load "record-on-$p" --publishers "$p" --viewers-per-stream 0 --duration "$D" --stream-prefix rec
  per=$(jq -rn --slurpfile a "$OUT/record-on-$p.json" --slurpfile b "$OUT/record-off-$p.json" --argjson p "$p" \
    '(($a[0].server_cpu_pct // 0) - ($b[0].server_cpu_pct // 0)) / $p | . * 100 | round / 100')
  files=$(find "$OUT/record-on-$p.rec" -name '*.webm' | wc -l)
  row "4 $p publishers, recording on" "record-on-$p" "+$per % of one core per recorded stream; $files files"
fi
if [[ " $ONLY " == *" 5 "* ]]; then
  for mode in h264 vp8; do
    name="restream-$mode"
    rtmp=$(free_port)
    ffmpeg -hide_banner -nostdin -v error -listen 1 -i "rtmp://127.0.0.1:$rtmp/live/x" -c copy -y "$OUT/$name.flv" \
      >"$OUT/$name.sink.log" 2>&1 &
    SINK_PID=$!
    start_server "$name"
    echo "bench: $name: castgate-load + RTMP restream" >&2
    "$LOAD" --url "$URL" --server-pid "$SERVER_PID" --json --publishers 1 --viewers-per-stream 0 \
      --codec "$mode" --duration "$D" --warmup 2 --stream-prefix rs >"$OUT/$name.json" 2>"$OUT/$name.load.log" &
    LOAD_PID=$!
    for _ in $(seq 100); do
      curl -fsS "$URL/api/streams/rs-0" >/dev/null 2>&1 && break
      sleep 0.1
    done
    added=$(date +%s.%N)
    curl -fsS -X POST -H 'content-type: application/json' \
      -d "{\"url\": \"rtmp://127.0.0.1:$rtmp/live/x\", \"label\": \"bench\"}" \
      "$URL/api/streams/rs-0/restreams" >"$OUT/$name.target.json" || echo "bench: adding the target failed" >&2
    wait "$LOAD_PID" || true
    ended=$(date +%s.%N)
    stop_server
    wait "$SINK_PID" 2>/dev/null || true
    SINK_PID=""
    got=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$OUT/$name.flv" 2>/dev/null || true)
    got=$(awk -v g="${got:-0}" 'BEGIN { printf "%.1f", g + 0 }')
    rt=$(awk -v g="${got:-0}" -v a="$added" -v e="$ended" 'BEGIN { printf "%.2f", g / (e - a) }')
    label=$([[ $mode == h264 ]] && echo "passthrough H.264" || echo "VP8→H.264 transcode")
    row "5 restream $label" "$name" "RTMP got ${got:-0} s of media in $(awk -v a="$added" -v e="$ended" 'BEGIN{printf "%.1f", e-a}') s (×$rt); CPU incl. ingest"
  done
fi

echo
echo "castgate benchmark — $(date -u +%F\ %H:%MZ), $(nproc) cores ($(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)), git $(git rev-parse --short HEAD 2>/dev/null || echo '?'), scale $SCALE, ${D} s windows"
echo
echo "| scenario | sessions ok/failed | packets/s to viewers | loss % (worst viewer) | first keyframe p95 ms | delay p50/p99 ms | server CPU % of a core | server µs/packet | server KiB/viewer | server RSS MiB start→peak→end | load tool CPU % | notes |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
for r in "${ROWS[@]}"; do echo "| $r |"; done
echo
echo "reports: $OUT"
