#!/usr/bin/env bash
# HTTP/2 load through a Palisade pair and an nginx pair, side by side in one
# run (docs/benchmarks.md, "HTTP/2"):
#   scripts/bench-h2.sh [ROUNDS]   (default 3, interleaved: P N P N ...)
# h2load (Debian nghttp2-client) opens 10 connections with 100 concurrent
# streams each to proxy A; A → TLS 1.3 → B → the app. The app is nginx
# returning 1 KiB, on an h2c port (what Palisade's B speaks to it, the
# caller's protocol) and an HTTP/1.1 port (what nginx's B speaks to it: nginx
# proxies upstreams in HTTP/1.1 only). nginx's A takes h2c and keeps an
# upstream keep-alive pool of TLS connections to its B. The generator runs on
# CPU 0, both proxies and the app on CPU 1, one worker each.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
DURATION="${DURATION:-5}"

need=()
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# BUILD=0 measures the release binaries already there.
[ "${BUILD:-1}" = 0 ] || cargo build --release -p mesh-proxy -p mesh-control-plane -p meshctl >&2
BIN="$CARGO_TARGET_DIR/release"

W="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
on1() { taskset -c 1 "$@"; }
wait_http() { for _ in $(seq 100); do curl -s -o /dev/null "$@" && return 0; sleep 0.1; done; echo "not answering: $*" >&2; return 1; }

APP_H1=$(port); APP_H2=$(port)
mkdir -p "$W/app"
cat > "$W/app/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $W/app/nginx.pid; error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off; client_body_temp_path $W/app/b; proxy_temp_path $W/app/p;
    keepalive_requests 1000000; keepalive_timeout 1h; http2_max_concurrent_streams 1000;
    server { listen 127.0.0.1:$APP_H1; listen 127.0.0.1:$APP_H2 http2;
             location / { return 200 "$(head -c 1024 /dev/zero | tr '\0' x)"; } }
}
CONF
on1 "$NGINX" -e stderr -p "$W/app" -c "$W/app/nginx.conf" 2>"$W/app.log" & pids+=($!)

# Palisade: control plane, B in front of the app's h2c port, A with a static route.
CP=$(port); CPADM=$(port); AIN=$(port); BIN_=$(port); AL=$(port)
mkdir -p "$W/policy"
on1 "$BIN/mesh-control-plane" --data-dir "$W/cp" --config-dir "$W/policy" --listen "127.0.0.1:$CP" --admin "127.0.0.1:$CPADM" 2>"$W/cp.log" & pids+=($!)
wait_http "http://127.0.0.1:$CPADM/ready"
for sa in h2-client h2-server; do
    "$BIN/meshctl" token create --data-dir "$W/cp" --namespace bench --service-account "$sa" --ttl 24h > "$W/$sa.token"
done
proxy() {
    local sa=$1 inbound=$2; shift 2
    RUST_LOG=warn on1 "$BIN/mesh-proxy" run --control-plane "127.0.0.1:$CP" --trust-bundle "$W/cp/trust-bundle.pem" \
        --namespace bench --service-account "$sa" --token-file "$W/$sa.token" --inbound "127.0.0.1:$inbound" \
        --outbound "127.0.0.1:$(port)" --admin "127.0.0.1:$(port)" --workers 1 --access-log off "$@" 2>"$W/$sa.log" &
    pids+=($!)
}
proxy h2-server "$BIN_"
proxy h2-client "$AIN" --static-route "127.0.0.1:$AL=127.0.0.1:$BIN_/$APP_H2@spiffe://cluster.local/ns/bench/sa/h2-server"
wait_http --http2-prior-knowledge "http://127.0.0.1:$AL/"

# nginx pair: a CA and two ECDSA P-256 leaves, TLS 1.3 and client certificates between A and B.
cd "$W"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
for r in a b; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $r.key -out $r.csr -subj /CN=hop.bench 2>/dev/null
    printf 'subjectAltName=DNS:hop.bench\n' > $r.ext
    openssl x509 -req -in $r.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $r.pem -days 2 -extfile $r.ext 2>/dev/null
done
cd - >/dev/null
NA=$(port); NB=$(port)
mkdir -p "$W/na" "$W/nb"
cat > "$W/nb/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $W/nb/nginx.pid; error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off; client_body_temp_path $W/nb/b; proxy_temp_path $W/nb/p; proxy_buffering off;
    keepalive_requests 1000000; keepalive_timeout 1h;
    upstream app { server 127.0.0.1:$APP_H1; keepalive 256; keepalive_requests 1000000; }
    server { listen 127.0.0.1:$NB ssl; ssl_protocols TLSv1.3; ssl_certificate $W/b.pem; ssl_certificate_key $W/b.key;
             ssl_client_certificate $W/ca.pem; ssl_verify_client on;
             location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
CONF
cat > "$W/na/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $W/na/nginx.pid; error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off; client_body_temp_path $W/na/b; proxy_temp_path $W/na/p; proxy_buffering off;
    keepalive_requests 1000000; keepalive_timeout 1h; http2_max_concurrent_streams 1000;
    upstream b { server 127.0.0.1:$NB; keepalive 256; keepalive_requests 1000000; }
    server { listen 127.0.0.1:$NA http2;
             location / { proxy_pass https://b; proxy_http_version 1.1; proxy_set_header Connection "";
                          proxy_ssl_protocols TLSv1.3; proxy_ssl_certificate $W/a.pem; proxy_ssl_certificate_key $W/a.key;
                          proxy_ssl_trusted_certificate $W/ca.pem; proxy_ssl_verify on; proxy_ssl_name hop.bench;
                          proxy_ssl_server_name on; proxy_ssl_session_reuse on; } }
}
CONF
on1 "$NGINX" -e stderr -p "$W/nb" -c "$W/nb/nginx.conf" 2>"$W/nb.log" & pids+=($!)
on1 "$NGINX" -e stderr -p "$W/na" -c "$W/na/nginx.conf" 2>"$W/na.log" & pids+=($!)
wait_http --http2-prior-knowledge "http://127.0.0.1:$NA/"

run() {
    local out
    out=$(timeout $((DURATION + 30)) taskset -c 0 h2load -t 1 -c 10 -m 100 -D "$DURATION" --warm-up-time 1 "http://127.0.0.1:$1/" 2>&1 || true)
    local rps ok bad
    rps=$(echo "$out" | sed -n 's/^finished in .*s, \([0-9.]*\) req\/s.*/\1/p')
    ok=$(echo "$out" | sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p')
    bad=$(echo "$out" | sed -n 's/^requests: .* \([0-9]*\) failed, \([0-9]*\) errored.*/\1+\2/p')
    echo "${rps:-0} ${ok:-0} ${bad:-?}"
}
echo "pair round req/s succeeded failed+errored"
for r in $(seq "$ROUNDS"); do
    read -r rps ok bad < <(run "$AL"); echo "palisade $r $rps $ok $bad"
    read -r rps ok bad < <(run "$NA"); echo "nginx-http2 $r $rps $ok $bad"
done
