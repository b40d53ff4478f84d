#!/usr/bin/env bash
# The peer comparison of docs/benchmarks.md, in one command:
#   scripts/bench.sh [mesh-bench compare flags, e.g. --quick or --max-load 0.5]
# Installs HAProxy, nginx (with the stream module) and stunnel from Debian's
# packages when missing, builds the release binaries, and runs
# `mesh-bench compare`, which writes bench/results/latest.{md,json} and
# bench/results/latency.svg and prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have haproxy || need+=(haproxy)
have nginx || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
have stunnel4 || need+=(stunnel4)
have taskset || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "bench.sh: installing ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -p mesh-proxy -p mesh-control-plane -p mesh-bench >&2
exec "$CARGO_TARGET_DIR/release/mesh-bench" compare --bin-dir "$CARGO_TARGET_DIR/release" "$@"
