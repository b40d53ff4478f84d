#!/usr/bin/env bash
# The Palisade lab: a small shop of network-namespace "pods" on this machine
# (frontend, api, db, an intruder and a pod without a sidecar), each with its
# own mesh-proxy, policy from examples/lab, and a little traffic.
#
#   scripts/lab.sh           build, then `meshctl lab up examples/lab` and status
#   scripts/lab.sh status    pods, identities, certificates, allowed/denied traffic
#   scripts/lab.sh down      remove every namespace, link and process of the lab
#
# Needs root for network namespaces and iptables (uses sudo when not root).
# Any other arguments go to `meshctl lab up` (e.g. --keep-on-failure).
# See docs/lab.md.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

if [ -z "${MESH_BIN_DIR:-}" ]; then
    echo "==> building (mesh-control-plane, mesh-proxy, meshctl, mesh-echo)" >&2
    cargo build -q -p mesh-control-plane -p mesh-proxy -p meshctl -p mesh-tests --bins
    MESH_BIN_DIR="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug"
fi
B="$MESH_BIN_DIR"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

case "${1:-up}" in
status | down)
    exec $SUDO "$B/meshctl" lab "$1" examples/lab
    ;;
up)
    [ $# -gt 0 ] && shift
    ;;
esac

$SUDO "$B/meshctl" lab up examples/lab --bin-dir "$B" "$@"
echo
echo "==> a few seconds of traffic, then: meshctl lab status"
sleep 5
$SUDO "$B/meshctl" lab status examples/lab
echo
echo "The lab keeps running. More: scripts/lab.sh status; app logs in"
echo "/run/palisade-lab/pal/pods/*/app.log; remove it with scripts/lab.sh down."
