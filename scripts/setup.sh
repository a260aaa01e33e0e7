#!/usr/bin/env bash
# Installs the Debian 12 system packages castgate needs to build, run and test.
# Idempotent: does nothing when everything is already present.
# Usage: scripts/setup.sh [--test]   (--test adds what the test suite needs)
set -euo pipefail

BUILD_PKGS=(pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev
  libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev)
TEST_PKGS=(ffmpeg chromium mkvtoolnix openssl nginx libnginx-mod-rtmp socat docker-compose jq redis-server
  iproute2
  python3-venv)

want=("${BUILD_PKGS[@]}")
if [[ "${1:-}" == "--test" ]]; then
  want+=("${TEST_PKGS[@]}")
  # Node.js (with npm) drives the browser tests. Some images ship it from
  # NodeSource, whose package conflicts with Debian's npm: install only if absent.
  command -v node >/dev/null 2>&1 || want+=(nodejs)
  command -v npm >/dev/null 2>&1 || want+=(npm)
fi

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: installing Rust with rustup (https://rustup.rs)" >&2
  if ! command -v curl >/dev/null 2>&1; then
    $SUDO apt-get install -y -qq curl ca-certificates >&2
  fi
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy >&2
  echo "setup: Rust installed; open a new shell or run: source \$HOME/.cargo/env" >&2
fi

# An S3 protocol server for the object storage tests: moto's server mode from
# the Python package index (pinned), in a virtual environment of its own
# outside the repository, made once and reused by every checkout.
MOTO_VERSION=5.2.6
MOTO_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/castgate/moto-$MOTO_VERSION"
if [[ "${1:-}" == "--test" && ! -x "$MOTO_DIR/bin/moto_server" ]]; then
  echo "setup: installing moto[server] $MOTO_VERSION into $MOTO_DIR" >&2
  rm -rf "$MOTO_DIR"
  python3 -m venv "$MOTO_DIR"
  "$MOTO_DIR/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
fi
