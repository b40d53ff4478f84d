//! Decision time against 1, 100 and 10,000 rules.
//!
//! `l4`: rules keyed by exact principal and port (indexed by principal).
//! `l4-ns`: rules keyed by exact source namespace (indexed by namespace).
//! `l4-scan`: rules keyed by a namespace suffix pattern (no index: a scan).
//! `l7`: principal, method and path prefix, with a DENY checked first.
//! The request always matches the last rule, the worst case for a scan.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mesh_policy::{Evaluator, Headers, Http, Labels, Peer, Request, Workload, parse_yaml};

const SIZES: [usize; 3] = [1, 100, 10_000];

static HEADERS: [(&str, &str); 1] = [("x-request-id", "abc")];

/// A DENY on paths; only for HTTP benches, since on plain TCP a DENY rule
/// ignores its HTTP-only fields and would deny everything (Istio semantics).
const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-admin\n  namespace: shop\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [/admin, /admin/*]\n---\n";

fn evaluator(rules: impl Fn(usize) -> String, n: usize, deny_admin: bool) -> Evaluator {
    let mut yaml = String::from(if deny_admin { DENY_ADMIN } else { "" });
    yaml.push_str(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  selector:\n    matchLabels:\n      app: api\n  rules:\n",
    );
    for i in 0..n {
        yaml.push_str(&rules(i));
    }
    let snapshot = match parse_yaml("bench.yaml", &yaml) {
        Ok(loaded) => loaded.snapshot,
        Err(e) => panic!("bench policy: {e}"),
    };
    match Evaluator::compile(&snapshot, "cluster.local") {
        Ok(e) => e,
        Err(e) => panic!("bench compile: {e}"),
    }
}

fn by_principal(i: usize) -> String {
    format!(
        "  - from:\n    - source:\n        principals: [cluster.local/ns/shop/sa/sa{i}]\n    to:\n    - operation:\n        ports: [\"8080\"]\n"
    )
}

fn by_namespace(i: usize) -> String {
    format!(
        "  - from:\n    - source:\n        namespaces: [ns{i}]\n    to:\n    - operation:\n        ports: [\"8080\"]\n"
    )
}

fn by_namespace_suffix(i: usize) -> String {
    format!(
        "  - from:\n    - source:\n        namespaces: [\"*-{i}\"]\n    to:\n    - operation:\n        ports: [\"8080\"]\n"
    )
}

fn l7(i: usize) -> String {
    format!(
        "  - from:\n    - source:\n        principals: [cluster.local/ns/shop/sa/sa{i}]\n    to:\n    - operation:\n        methods: [GET, HEAD]\n        paths: [/api/*]\n"
    )
}

fn request<'a>(
    principal: &'a str,
    labels: &'a Labels,
    now: SystemTime,
    http: Option<Http<'a>>,
) -> Request<'a> {
    Request {
        peer: Peer::Mtls { principal },
        source_ip: "10.0.0.1".parse().ok(),
        source: None,
        destination: Some(Workload {
            namespace: "shop",
            labels,
        }),
        destination_ip: None,
        destination_port: 8080,
        http,
        now,
    }
}

fn decision(c: &mut Criterion) {
    let api: Labels = [("app".to_owned(), "api".to_owned())].into();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let mut group = c.benchmark_group("decision");
    for n in SIZES {
        let last = n - 1;
        let principal = format!("spiffe://cluster.local/ns/shop/sa/sa{last}");
        let namespace_principal = format!("spiffe://cluster.local/ns/ns{last}/sa/default");
        let suffix_principal = format!("spiffe://cluster.local/ns/team-{last}/sa/default");

        let m = evaluator(by_principal, n, false);
        let r = request(&principal, &api, now, None);
        assert!(m.inbound(&r).is_allowed());
        group.bench_with_input(BenchmarkId::new("l4", n), &r, |b, r| {
            b.iter(|| black_box(m.inbound(black_box(r))))
        });

        let m = evaluator(by_namespace, n, false);
        let r = request(&namespace_principal, &api, now, None);
        assert!(m.inbound(&r).is_allowed());
        group.bench_with_input(BenchmarkId::new("l4-ns", n), &r, |b, r| {
            b.iter(|| black_box(m.inbound(black_box(r))))
        });

        let m = evaluator(by_namespace_suffix, n, false);
        let r = request(&suffix_principal, &api, now, None);
        assert!(m.inbound(&r).is_allowed());
        group.bench_with_input(BenchmarkId::new("l4-scan", n), &r, |b, r| {
            b.iter(|| black_box(m.inbound(black_box(r))))
        });

        let m = evaluator(l7, n, true);
        let http = Http {
            method: "GET",
            path: "/api/orders/42",
            host: Some("api.shop.svc"),
            headers: Headers::Pairs(&HEADERS),
            request_principal: None,
            remote_ip: None,
        };
        let r = request(&principal, &api, now, Some(http));
        assert!(m.inbound(&r).is_allowed());
        group.bench_with_input(BenchmarkId::new("l7", n), &r, |b, r| {
            b.iter(|| black_box(m.inbound(black_box(r))))
        });
    }
    group.finish();
}

criterion_group!(benches, decision);
criterion_main!(benches);
