#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, Rust unit and integration tests
# (real WebRTC peers over loopback), then the browser tests in Chromium.
# Installs missing system and npm packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
if ! command -v cargo >/dev/null 2>&1 && [[ -f "$HOME/.cargo/env" ]]; then source "$HOME/.cargo/env"; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
# Library, binaries and tests; not the examples (benchmarks with no tests):
# clippy above already compiled them, and linking each against FFmpeg again
# costs CI time for nothing.
cargo test --locked --lib --bins --tests 2>&1 | tee /tmp/castgate-cargo-test.log
if [[ -f tests/browser/package.json ]]; then
  echo "== browser tests"
  # They run target/debug/castgate, which `cargo test` just built for the
  # integration tests (a separate `cargo build --bin` would rebuild str0m and
  # castgate without the dev-dependencies' features: 1.5 min for nothing).
  [[ -x target/debug/castgate ]] || cargo build --locked --bin castgate
  (cd tests/browser && { [[ -d node_modules/playwright-core ]] || PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund; } && node --test)
fi
