#!/usr/bin/env bash
# Runs Palisade's whole test suite: unit tests and the end-to-end tests that
# start the real control plane and proxies on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

# The end-to-end tests run the binaries, so build them first.
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
