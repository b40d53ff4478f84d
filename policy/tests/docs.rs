//! Every YAML example in docs/policy.md, docs/traffic.md and docs/egress.md
//! loads, and the examples decide as the text says.

#[path = "support/helpers.rs"]
mod support;

use support::{Call, mesh, outcome};

fn examples() -> Vec<String> {
    examples_of("policy.md")
}

fn examples_of(doc: &str) -> Vec<String> {
    let path = format!("{}/../docs/{doc}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("docs");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn example(name: &str) -> String {
    examples()
        .into_iter()
        .find(|b| b.contains(&format!("name: {name}\n")))
        .unwrap_or_else(|| panic!("no example named {name}"))
}

#[test]
fn every_example_loads() {
    let blocks = examples();
    assert!(blocks.len() >= 8, "{}", blocks.len());
    for block in blocks {
        if let Err(e) = mesh_policy::parse_yaml("docs/policy.md", &block) {
            panic!("{e}\n{block}");
        }
    }
}

#[test]
fn examples_decide_as_documented() {
    let m = mesh(&example("api-from-web"));
    let d = Call::from_sa("shop", "web")
        .to("shop", &[("app", "api")])
        .http("GET", "/api/orders")
        .inbound(&m);
    assert_eq!(
        outcome(&d),
        "allow: AuthorizationPolicy shop/api-from-web rule 0"
    );

    let m = mesh(&example("deny-legacy-clients"));
    let d = Call::from_sa("legacy", "x").to("shop", &[]).inbound(&m);
    assert_eq!(
        d.to_string(),
        "allow: default allow (dry run would deny: AuthorizationPolicy shop/deny-legacy-clients rule 0)"
    );

    let m = mesh(&example("legacy-metrics"));
    let call = Call::plaintext().to("shop", &[("app", "api")]);
    assert_eq!(
        outcome(&call.clone().port(8080).inbound(&m)),
        "deny: PeerAuthentication shop/legacy-metrics"
    );
    assert!(call.port(9100).inbound(&m).is_allowed());

    let m = mesh(&example("default-deny"));
    assert_eq!(
        outcome(&Call::from_sa("shop", "web").to("shop", &[]).inbound(&m)),
        "deny: default deny"
    );
}

/// docs/traffic.md: the route and the rate limits decide as the text says.
#[test]
fn traffic_examples_load_and_decide_as_documented() {
    let blocks = examples_of("traffic.md");
    assert!(blocks.len() >= 2, "{}", blocks.len());
    for block in &blocks {
        if let Err(e) = mesh_policy::parse_yaml("docs/traffic.md", block) {
            panic!("{e}\n{block}");
        }
    }
    let find = |name: &str| {
        blocks
            .iter()
            .find(|b| b.contains(&format!("name: {name}\n")))
            .unwrap_or_else(|| panic!("no example named {name}"))
            .clone()
    };

    // The canary: /v1/... takes rule 0, 90/10, with its timeouts and retry.
    let m = mesh(&find("canary"));
    let headers = http::HeaderMap::new();
    let route = |path: &str| {
        m.route(&mesh_policy::RouteRequest {
            client_namespace: Some("shop"),
            service_namespace: "shop",
            service_name: "api",
            port: 80,
            method: "GET",
            path,
            query: None,
            headers: &headers,
            now: support::now(),
        })
        .map(|d| {
            (
                d.rule,
                d.backends
                    .iter()
                    .map(|b| (b.name.clone(), b.weight))
                    .collect::<Vec<_>>(),
                d.timeouts.request,
                d.retry.map(|r| r.attempts),
            )
        })
    };
    assert_eq!(
        route("/v1/orders"),
        Some((
            0,
            vec![("api-v1".to_string(), 90), ("api-v2".to_string(), 10)],
            Some(std::time::Duration::from_secs(2)),
            Some(3)
        ))
    );
    assert_eq!(route("/v2"), None, "no other path takes the route");

    // api-limits: 100/s in all, 10/s per client, 50/s for batch/loader and
    // 1,000/s for ops; only port 8080 and /orders*.
    let m = mesh(&find("api-limits"));
    let l = support::labels(&[("app", "api")]);
    let limits = |principal: &str, port: u16, path: &str| {
        m.rate_limits(&mesh_policy::RateLimitRequest {
            destination: mesh_policy::Workload {
                namespace: "shop",
                labels: &l,
            },
            port,
            method: "GET",
            path,
            principal: Some(principal),
            host: None,
            route: None,
            now: support::now(),
        })
        .map(|x| {
            (
                x.total.map(|q| (q.requests_per_second, q.burst)),
                x.per_client.map(|q| (q.requests_per_second, q.burst)),
            )
        })
        .collect::<Vec<_>>()
    };
    let web = "cluster.local/ns/shop/sa/web";
    assert_eq!(
        limits(web, 8080, "/orders/7"),
        [(Some((100, 20)), Some((10, 10)))]
    );
    assert_eq!(
        limits("cluster.local/ns/batch/sa/loader", 8080, "/orders"),
        [(Some((100, 20)), Some((50, 50)))]
    );
    assert_eq!(
        limits("cluster.local/ns/ops/sa/anyone", 8080, "/orders"),
        [(Some((100, 20)), Some((1000, 1000)))]
    );
    assert!(limits(web, 9090, "/orders").is_empty());
    assert!(limits(web, 8080, "/health").is_empty());
}

/// docs/ingress.md: every example loads, and the routes take requests as
/// the text says.
#[test]
fn ingress_examples_load_and_route_as_documented() {
    let blocks = examples_of("ingress.md");
    assert!(blocks.len() >= 4, "{}", blocks.len());
    for block in &blocks {
        if let Err(e) = mesh_policy::parse_yaml("docs/ingress.md", block) {
            panic!("{e}\n{block}");
        }
    }
    let all = blocks.join("---\n");
    let m = mesh(&all);
    let headers = http::HeaderMap::new();
    let at = |host: &str, path: &str| {
        m.edge_route(&mesh_policy::EdgeRequest {
            port: 443,
            ingress: true,
            host,
            method: "GET",
            path,
            query: None,
            headers: &headers,
            now: support::now(),
        })
        .map(|d| {
            (
                d.route.to_string(),
                d.backends
                    .iter()
                    .map(|b| b.name.clone())
                    .collect::<Vec<_>>(),
            )
        })
    };
    assert_eq!(
        at("shop.example", "/api/cart"),
        Some(("HTTPRoute shop/storefront".into(), vec!["api".into()]))
    );
    assert_eq!(
        at("shop.example", "/"),
        Some((
            "HTTPRoute shop/storefront".into(),
            vec!["frontend".into(), "frontend-canary".into()]
        ))
    );
    // The Gateway's listener claims shop.example on 443 first; another
    // host falls to the Ingress's default backend.
    assert_eq!(
        at("other.example", "/login"),
        Some(("Ingress shop/shop".into(), vec!["frontend".into()]))
    );
}

/// docs/egress.md: every example loads; the EgressPolicy decides as the
/// table says, and Istio's example denies what it does not name.
#[test]
fn egress_examples_load_and_decide_as_documented() {
    use mesh_policy::resource::egress::EgressProtocol::{Http, Tcp, Tls};
    let blocks = examples_of("egress.md");
    assert!(blocks.len() >= 2, "{}", blocks.len());
    for block in &blocks {
        if let Err(e) = mesh_policy::parse_yaml("docs/egress.md", block) {
            panic!("{e}\n{block}");
        }
    }
    let decide = |yaml: &str, app: &str, host: Option<&str>, ip: &str, port: u16, protocol| {
        let m = mesh(yaml);
        let l = support::labels(&[("app", app)]);
        m.egress(&mesh_policy::EgressRequest {
            source: mesh_policy::Workload {
                namespace: "shop",
                labels: &l,
            },
            host,
            ip: ip.parse().unwrap(),
            port,
            protocol,
            now: support::now(),
        })
        .decision
        .to_string()
    };
    let policy = blocks
        .iter()
        .find(|b| b.contains("kind: EgressPolicy"))
        .unwrap();
    assert_eq!(
        decide(
            policy,
            "checkout",
            Some("m.stripe.network"),
            "203.0.113.1",
            443,
            Tls
        ),
        "allow: EgressPolicy shop/payments rule 0"
    );
    assert_eq!(
        decide(policy, "checkout", None, "192.0.2.9", 5432, Tcp),
        "allow: EgressPolicy shop/payments rule 2"
    );
    assert_eq!(
        decide(
            policy,
            "checkout",
            Some("evil.example"),
            "203.0.113.1",
            443,
            Tls
        ),
        "deny: EgressPolicy shop/payments"
    );
    assert_eq!(
        decide(policy, "web", Some("evil.example"), "203.0.113.1", 443, Tls),
        "allow: default allow"
    );
    let istio = blocks
        .iter()
        .find(|b| b.contains("kind: ServiceEntry"))
        .unwrap();
    assert_eq!(
        decide(istio, "x", Some("httpbin.org"), "203.0.113.1", 80, Http),
        "allow: ServiceEntry shop/httpbin-ext rule 0"
    );
    assert_eq!(
        decide(istio, "x", Some("evil.example"), "203.0.113.1", 80, Http),
        "deny: Sidecar shop/default"
    );
}
