use super::*;
use crate::testing::{admin_answering, http};

const QUICK: Duration = Duration::from_secs(5);

/// A `/routes` answer as the proxy serves it.
fn document() -> serde_json::Value {
    serde_json::json!({
        "version": 4,
        "routes": [{
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "canary", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"kind": "Service", "group": "", "name": "api", "port": 80}],
                "rules": [
                    {"backendRefs": [{"name": "api-v1", "port": 80, "weight": 90},
                                     {"name": "api-v2", "port": 80, "weight": 10}],
                     "timeouts": {"request": "2s"}},
                    {"matches": [{"path": {"type": "PathPrefix", "value": "/orders"}, "method": "GET"}],
                     "backendRefs": [{"name": "api-v1", "port": 80}],
                     "retry": {"attempts": 3, "codes": [503], "backoff": "10ms"}}
                ]
            }
        }],
        "grpc_routes": [{
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "orders", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"kind": "Service", "group": "", "name": "orders", "port": 9090}],
                "rules": [{"matches": [{"method": {"service": "shop.v1.Orders", "method": "Get"}}],
                           "backendRefs": [{"name": "orders-cache", "port": 9090}]}]
            }
        }],
        "rate_limits": [{
            "apiVersion": "policy.palisade.dev/v1alpha1", "kind": "RateLimitPolicy",
            "metadata": {"name": "api-limit", "namespace": "shop",
                         "annotations": {"palisade.dev/dry-run": "true"}},
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "ports": [8080],
                     "perClient": {"requestsPerSecond": 10},
                     "overrides": [{"namespaces": ["ops"], "requestsPerSecond": 100}]}
        }],
        "endpoints": [
            {"address": "10.250.46.20:8080", "rtt_ms": 1.2, "in_flight": 0, "state": "healthy", "ejected_for_ms": null},
            {"address": "10.250.46.22:8080", "rtt_ms": 0.8, "in_flight": 0, "state": "ejected", "ejected_for_ms": 3100}
        ]
    })
}

#[tokio::test]
async fn lists_routes_rate_limits_and_endpoints() {
    let body = document().to_string();
    let (addr, server) = admin_answering(http("200 OK", &body)).await;
    let doc = fetch(&format!("http://{addr}"), QUICK).await.unwrap();
    let head = server.await.unwrap();
    assert!(head.starts_with("GET /routes HTTP/1.1\r\n"), "{head}");
    let expected = [
        "policy version: 4",
        "routes: 2, rate limits: 1, endpoints: 2",
        "",
        "ROUTE                  PARENTS           RULE  MATCHES                 BACKENDS (WEIGHT)                         TIMEOUTS    RETRY",
        "HTTPRoute shop/canary  shop/api:80       0     *                       shop/api-v1:80 (90), shop/api-v2:80 (10)  request 2s  -",
        "                                         1     PathPrefix /orders GET  shop/api-v1:80 (1)                        -           3 attempts on [503], backoff 10ms",
        "GRPCRoute shop/orders  shop/orders:9090  0     shop.v1.Orders/Get      shop/orders-cache:9090 (1)                -           -",
        "",
        "RATE LIMIT                      SELECTOR  REQUESTS      TOTAL  PER CLIENT     OVERRIDES  DRY-RUN",
        "RateLimitPolicy shop/api-limit  app=api   ports [8080]  -      10/s burst 10  1          yes",
        "",
        "ENDPOINT           LATENCY  IN FLIGHT  STATE",
        "10.250.46.20:8080  1.2ms    0          healthy",
        "10.250.46.22:8080  0.8ms    0          ejected (3.1s left)",
    ];
    assert_eq!(doc.to_table(), expected.join("\n") + "\n");
    assert_eq!(doc.to_json(), format!("{body}\n"));
}

#[tokio::test]
async fn a_body_that_is_not_a_routes_document_is_refused() {
    let (addr, _server) = admin_answering(http("200 OK", "{\"routes\": 3}")).await;
    let e = fetch(&format!("http://{addr}"), QUICK).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("did not answer with a /routes document"),
        "{e}"
    );
}

#[tokio::test]
async fn a_proxy_without_routes_says_so() {
    let body = r#"{"version": null, "routes": [], "rate_limits": [], "endpoints": []}"#;
    let (addr, _server) = admin_answering(http("200 OK", body)).await;
    let doc = fetch(&format!("http://{addr}"), QUICK).await.unwrap();
    assert_eq!(
        doc.to_table(),
        "policy version: none yet\nroutes: 0, rate limits: 0, endpoints: 0\n"
    );
}
