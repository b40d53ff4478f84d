#!/usr/bin/env bash
# Palisade quickstart: a mesh on loopback.
#
#   control plane (127.0.0.1:8443, admin :9990)
#   client ──► proxy "web" (route 127.0.0.1:15000) ══ mTLS ══► proxy "api" (:4143) ──► echo app (:8080)
#
# Shows a request crossing the mTLS hop and the certificates with meshctl,
# then keeps the mesh running until Ctrl-C (or exits at once with --once).
# Ports can be moved with QS_PORT_BASE (default 0 = the standard ports).
set -euo pipefail
cd "$(dirname "$0")/.."

ONCE=0
[ "${1:-}" = "--once" ] && ONCE=1

if [ -z "${MESH_BIN_DIR:-}" ]; then
    echo "==> building (cargo build --bins)"
    cargo build --bins -q
    MESH_BIN_DIR="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/debug"
fi
B="$MESH_BIN_DIR"
off=${QS_PORT_BASE:-0}
CP=$((8443 + off)); CP_ADMIN=$((9990 + off)); APP=$((8080 + off))
API_IN=$((4143 + off)); API_OUT=$((4140 + off)); API_ADMIN=$((4191 + off))
WEB_IN=$((5143 + off)); WEB_OUT=$((5140 + off)); WEB_ADMIN=$((5191 + off)); ROUTE=$((15000 + off))

WORK="$(mktemp -d -t palisade-quickstart.XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

wait_ready() { # URL NAME LOG
    for _ in $(seq 1 200); do
        if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "!! $2 did not become ready; its log:" >&2
    cat "$3" >&2
    exit 1
}

echo "==> control plane (data dir $WORK/data)"
"$B/mesh-control-plane" --data-dir "$WORK/data" --listen "127.0.0.1:$CP" --admin "127.0.0.1:$CP_ADMIN" \
    --cert-ttl 1h >"$WORK/control-plane.log" 2>&1 &
PIDS+=($!)
wait_ready "http://127.0.0.1:$CP_ADMIN/ready" control-plane "$WORK/control-plane.log"

echo "==> join tokens (meshctl token create)"
"$B/meshctl" token create --data-dir "$WORK/data" --namespace default --service-account api --ttl 1h >"$WORK/api.token"
"$B/meshctl" token create --data-dir "$WORK/data" --namespace default --service-account web --ttl 1h >"$WORK/web.token"

echo "==> echo app on 127.0.0.1:$APP"
ECHO_NAME=api-app "$B/mesh-echo" "127.0.0.1:$APP" >"$WORK/app.log" 2>&1 &
PIDS+=($!)

common=(--control-plane "127.0.0.1:$CP" --trust-bundle "$WORK/data/trust-bundle.pem" --namespace default)
echo "==> proxy api (inbound 127.0.0.1:$API_IN)"
"$B/mesh-proxy" run "${common[@]}" --service-account api --token-file "$WORK/api.token" \
    --inbound "127.0.0.1:$API_IN" --outbound "127.0.0.1:$API_OUT" --admin "127.0.0.1:$API_ADMIN" \
    >"$WORK/proxy-api.log" 2>&1 &
PIDS+=($!)
echo "==> proxy web (route 127.0.0.1:$ROUTE -> api)"
"$B/mesh-proxy" run "${common[@]}" --service-account web --token-file "$WORK/web.token" \
    --inbound "127.0.0.1:$WEB_IN" --outbound "127.0.0.1:$WEB_OUT" --admin "127.0.0.1:$WEB_ADMIN" \
    --static-route "127.0.0.1:$ROUTE=127.0.0.1:$API_IN/$APP@spiffe://cluster.local/ns/default/sa/api" \
    >"$WORK/proxy-web.log" 2>&1 &
PIDS+=($!)
wait_ready "http://127.0.0.1:$API_ADMIN/ready" proxy-api "$WORK/proxy-api.log"
wait_ready "http://127.0.0.1:$WEB_ADMIN/ready" proxy-web "$WORK/proxy-web.log"

echo
echo "==> curl http://127.0.0.1:$ROUTE/hello   (client -> web proxy =mTLS=> api proxy -> app)"
curl -fsS "http://127.0.0.1:$ROUTE/hello"
echo
echo "==> meshctl cert inspect --admin http://127.0.0.1:$API_ADMIN"
"$B/meshctl" cert inspect --admin "http://127.0.0.1:$API_ADMIN"
echo
echo "==> meshctl cert inspect --connect 127.0.0.1:$API_IN   (what the api proxy presents to peers)"
"$B/meshctl" cert inspect --connect "127.0.0.1:$API_IN" --trust-bundle "$WORK/data/trust-bundle.pem"
echo
echo "==> mTLS connections counted by the api proxy"
curl -fsS "http://127.0.0.1:$API_ADMIN/metrics" | grep '^mesh_tcp_connections_total' || true

if [ "$ONCE" = 1 ]; then
    echo "==> quickstart OK"
    exit 0
fi
echo
echo "The mesh is running. Try: curl http://127.0.0.1:$ROUTE/anything"
echo "Logs are in $WORK. Press Ctrl-C to stop."
wait
