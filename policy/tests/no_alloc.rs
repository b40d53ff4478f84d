//! Evaluation must not allocate: it runs per connection and per request.
//!
//! A counting global allocator counts allocations made by the current thread
//! only, so other tests running in parallel threads cannot disturb the count.

#[path = "support/helpers.rs"]
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mesh_policy::{Headers, Http, Peer, Request, Workload};

struct Counting;

thread_local! {
    // `const` initialization: touching it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

const POLICY: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    env: prod
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: shop
  namespace: shop
spec:
  mtls:
    mode: STRICT
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: api
  namespace: shop
  annotations:
    palisade.dev/dry-run: \"true\"
spec:
  podSelector:
    matchLabels:
      app: api
  ingress:
  - from:
    - namespaceSelector:
        matchLabels:
          env: prod
    ports:
    - port: 8080
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: shop
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: [/admin, /admin/*]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: api
  namespace: shop
  annotations:
    palisade.dev/expires-at: \"2099-01-01T00:00:00Z\"
spec:
  selector:
    matchLabels:
      app: api
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/web]
    to:
    - operation:
        methods: [GET]
        paths: [/api/*]
    when:
    - key: request.headers[x-tenant]
      values: [acme]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: audit
  namespace: mesh-system
spec:
  action: AUDIT
  rules: [{}]
";

#[test]
fn evaluate_does_not_allocate() {
    let m = support::mesh(POLICY);
    let api = support::labels(&[("app", "api")]);
    let web = support::labels(&[("app", "web")]);
    let headers = [("X-Tenant", "acme")];
    let mut request = Request {
        peer: Peer::Mtls {
            principal: "spiffe://cluster.local/ns/shop/sa/web",
        },
        source_ip: "10.0.0.1".parse().ok(),
        source: Some(Workload {
            namespace: "shop",
            labels: &web,
        }),
        destination: Some(Workload {
            namespace: "shop",
            labels: &api,
        }),
        destination_ip: "10.0.0.2".parse().ok(),
        destination_port: 8080,
        http: Some(Http {
            method: "GET",
            path: "/api/orders",
            host: Some("api.shop"),
            headers: Headers::Pairs(&headers),
            request_principal: None,
            remote_ip: None,
        }),
        now: support::now(),
    };
    let mut header_map = http::HeaderMap::new();
    header_map.insert("x-tenant", http::HeaderValue::from_static("acme"));

    // Warm up anything lazily initialised outside the evaluator.
    let _ = m.check(&request);

    let before = allocations();
    let allowed = m.inbound(&request);
    let checked = m.check(&request);
    request.peer = Peer::Plaintext;
    let plaintext = m.inbound(&request);
    request.peer = Peer::Mtls {
        principal: "spiffe://cluster.local/ns/shop/sa/web",
    };
    request.http = None;
    let tcp = m.inbound(&request);
    request.http = Some(Http {
        method: "GET",
        path: "/admin",
        host: None,
        headers: Headers::Map(&header_map),
        request_principal: None,
        remote_ip: None,
    });
    let denied = m.inbound(&request);
    let after = allocations();

    assert_eq!(after - before, 0, "evaluation allocated");
    assert!(allowed.is_allowed() && allowed.audit.is_some());
    assert!(checked.is_allowed());
    assert!(!plaintext.is_allowed());
    assert!(!tcp.is_allowed());
    assert_eq!(
        denied.decided_by.to_string(),
        "AuthorizationPolicy shop/deny-admin rule 0"
    );
}
