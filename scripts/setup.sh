#!/usr/bin/env bash
# Installs the system packages Palisade's tests and tools need, when missing:
# openssl and curl (tests, quickstart), and for the network-namespace lab
# and its tests iproute2 (ip netns, veth, bridge), iptables (the nft backend
# on current Debian/Ubuntu; mesh-proxy init), tcpdump (capture tests) and
# util-linux (setpriv), slowhttptest (slow-client attacks on the ingress)
# chromium (the flow map is tested in a real headless browser) and
# faketime (a control plane whose clock is ahead of the proxies').
# Safe to run repeatedly; needs root (or sudo) only when something is missing.
set -euo pipefail

need=()
want() { # COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || need+=("$2")
}
want openssl openssl
want curl curl
want ip iproute2
want iptables iptables
want ip6tables iptables
want tcpdump tcpdump
want setpriv util-linux
want slowhttptest slowhttptest
want chromium chromium
want faketime faketime

if [ ${#need[@]} -gt 0 ]; then
    # One package may provide several commands.
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    echo "setup: installing ${need[*]}" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
