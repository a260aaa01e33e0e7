#!/usr/bin/env bash
# Starts castgate with working defaults: HTTP on 127.0.0.1:8080, media on UDP 8189.
# Installs missing system packages first. Extra arguments go to `castgate serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then source "$HOME/.cargo/env"; fi
# glibc's per-thread cache of freed blocks pins pages that malloc_trim cannot
# give back after sessions end (≈ 2.5 MiB after 100 viewers); off, at no
# measured CPU cost (README "Deploying", BENCHMARKS.md).
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.tcache_count=0"
exec cargo run --release --locked --bin castgate -- serve "$@"
