#!/usr/bin/env bash
# The object storage benchmark (issue 18; results and method in BENCHMARKS.md).
#
# On this machine: moto's S3 server (the one the tests use) and a release castgate
# with storage.kind = "s3", both on free loopback ports.
#   upload   COUNT recordings of MIB_EACH MiB each, waiting in the recordings folder
#            at start: time until all are stored (checked) → MB/s; castgate's CPU
#            seconds per GB uploaded, and moto's (it shares the machine) apart.
#   live     castgate-load publishes one recorded H.264 stream with VIEWERS viewers
#            for DURATION s, first with nothing to upload (quiet), then while the
#            uploader works through another backlog (busy): the server's CPU, delay
#            p50/p99, loss, and the recording's dropped frames, side by side.
#
# Usage: scripts/bench-storage.sh [--count N] [--mib-each M] [--viewers V] [--duration S] [--out DIR]
set -euo pipefail

COUNT=8
MIB_EACH=128
VIEWERS=4
DURATION=20
OUT=""
while (($#)); do
  case "$1" in
    --count) COUNT="$2"; shift 2 ;;
    --mib-each) MIB_EACH="$2"; shift 2 ;;
    --viewers) VIEWERS="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench-storage: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test >&2
for tool in curl jq ffmpeg awk; do
  command -v "$tool" >/dev/null || { echo "bench-storage: $tool is missing: run scripts/setup.sh --test" >&2; exit 2; }
done
MOTO="${XDG_CACHE_HOME:-$HOME/.cache}/castgate/moto-5.2.6/bin/moto_server"
cargo build --release --bins >&2
TARGET="${CARGO_TARGET_DIR:-target}/release"
OUT="${OUT:-$(mktemp -d -t castgate-bench-storage.XXXXXX)}"
mkdir -p "$OUT"
echo "bench-storage: reports and logs in $OUT" >&2
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh # free_port

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cpu_secs() { # utime + stime of a process, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

# One file of about MIB_EACH MiB that FFmpeg reads as a recording (H.264 under noise).
SEED="$OUT/seed.mkv"
SECS=$(( MIB_EACH * 8 / 50 + 1 ))
ffmpeg -hide_banner -v error -y -f lavfi -i "testsrc=size=640x360:rate=30,noise=alls=80:allf=t+u" \
  -t "$SECS" -c:v libx264 -preset ultrafast -b:v 50M -maxrate 50M -bufsize 50M "$SEED"
SEED_BYTES=$(stat -c %s "$SEED")

# backlog DIR TAG: COUNT copies of the seed as finished recordings of stream "up-TAG".
backlog() {
  local dir="$1/up-$2" i stem
  mkdir -p "$dir"
  for ((i = 0; i < COUNT; i++)); do
    stem=$(printf '2026-01-01T00-%02d-%02dZ' "$((i / 60))" "$((i % 60))")
    cp "$SEED" "$dir/$stem.mkv"
    jq -n --arg id "up-$2~$stem" --arg s "up-$2" --arg f "$stem.mkv" --argjson n "$SEED_BYTES" \
      '{id:$id, stream:$s, file:$f, started_at:"2026-01-01T00:00:00Z", ended_at:"2026-01-01T00:00:30Z",
        duration_secs:30, size_bytes:$n, state:"finalized", video:{codec:"h264",width:640,height:360},
        audio:null, dropped_frames:0, error:null}' >"$dir/$stem.json"
  done
}

MOTO_PORT=$(free_port)
"$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$OUT/moto.log" 2>&1 &
MOTO_PID=$!; PIDS+=("$MOTO_PID")
until curl -s "http://127.0.0.1:$MOTO_PORT/" >/dev/null; do sleep 0.2; done
curl -sf -X PUT "http://127.0.0.1:$MOTO_PORT/bench" >/dev/null

HTTP_PORT=$(free_port); UDP_PORT=$(free_port)
REC="$OUT/recordings"
backlog "$REC" a
cat >"$OUT/castgate.toml" <<TOML
[http]
rate_limit_per_sec = 100000
rate_limit_burst = 100000
[storage]
kind = "s3"
endpoint = "http://127.0.0.1:$MOTO_PORT"
bucket = "bench"
TOML
M0=$(cpu_secs "$MOTO_PID")
AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench GLIBC_TUNABLES=glibc.malloc.tcache_count=0 \
  "$TARGET/castgate" serve --config "$OUT/castgate.toml" --http-listen "127.0.0.1:$HTTP_PORT" \
  --udp-listen "127.0.0.1:$UDP_PORT" --record-dir "$REC" >"$OUT/castgate.log" 2>&1 &
CG_PID=$!; PIDS+=("$CG_PID")
BASE="http://127.0.0.1:$HTTP_PORT"
until curl -sf "$BASE/healthz" >/dev/null; do sleep 0.05; done
T0=$(date +%s.%N); C0=$(cpu_secs "$CG_PID")
stored() { curl -s "$BASE/metrics" | awk '/^castgate_storage_recordings_stored_total /{print $2}'; }
until [[ "$(stored)" == "$COUNT" ]]; do sleep 0.1; done
T1=$(date +%s.%N); C1=$(cpu_secs "$CG_PID"); M1=$(cpu_secs "$MOTO_PID")
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
GB=$(calc "$COUNT * $SEED_BYTES / 1000000000")

# Live stream, recorded, with nothing to upload, then during a second backlog.
live() {
  "$TARGET/castgate-load" --url "$BASE" --server-pid "$CG_PID" --json --codec h264 \
    --publishers 1 --viewers-per-stream "$VIEWERS" --duration "$DURATION" --stream-prefix "$1" \
    >"$OUT/$1.json" 2>"$OUT/$1.load.log" || true
}
live quiet
# A second backlog: files put in the folder are read at start-up, so castgate is
# restarted on it and the live run starts while the uploader works through it.
backlog "$REC" b
kill "$CG_PID"; wait "$CG_PID" 2>/dev/null || true
AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench GLIBC_TUNABLES=glibc.malloc.tcache_count=0 \
  "$TARGET/castgate" serve --config "$OUT/castgate.toml" --http-listen "127.0.0.1:$HTTP_PORT" \
  --udp-listen "127.0.0.1:$UDP_PORT" --record-dir "$REC" >>"$OUT/castgate.log" 2>&1 &
CG_PID=$!; PIDS+=("$CG_PID")
until curl -sf "$BASE/healthz" >/dev/null; do sleep 0.05; done
live busy
BUSY_STORED=$(stored)

dropped() { curl -s "$BASE/api/recordings?stream=$1-0&per_page=500" | jq '[.recordings[].dropped_frames] | add // 0'; }
printf '\n## Upload: %d recordings of %s MB (%s GB) into moto on loopback\n\n' "$COUNT" "$(calc "$SEED_BYTES/1000000")" "$GB"
printf '| time | throughput | castgate CPU per GB | moto CPU per GB |\n|---|---|---|---|\n'
printf '| %s s | %s MB/s | %s s | %s s |\n' "$(calc "$T1-$T0")" \
  "$(calc "$COUNT*$SEED_BYTES/1000000/($T1-$T0)")" \
  "$(calc "($C1-$C0)/$GB")" "$(calc "($M1-$M0)/$GB")"
printf '\n## A recorded live stream (1 publisher H.264, %d viewers, %d s) with and without uploads running\n\n' "$VIEWERS" "$DURATION"
printf '| run | server CPU | delay p50 / p99 | viewer loss | recording dropped frames |\n|---|---|---|---|---|\n'
for run in quiet busy; do
  jq -r --arg run "$run" --arg d "$(dropped "$run")" \
    '"| \($run) | \(.server_cpu_pct // "?")% | \(.delay_ms.p50) / \(.delay_ms.p99) ms | \(.loss_pct)% | \($d) |"' \
    "$OUT/$run.json" 2>/dev/null || echo "| $run | no report | | | |"
done
echo
echo "(recordings stored by the restarted castgate by the busy run's end: $BUSY_STORED — the second backlog of $COUNT and the quiet run's own recording)"
