//! PeerAuthentication: Istio precedence, Palisade's STRICT default.

#[path = "support/helpers.rs"]
mod support;

use mesh_policy::{MtlsMode, Stage};
use support::{Call, mesh, outcome};
use test_case::test_case;

const API: &[(&str, &str)] = &[("app", "api")];

fn pa(namespace: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n{spec}\n---\n"
    )
}

const MESH_PERMISSIVE: &str = "  mtls:\n    mode: PERMISSIVE";
const STRICT: &str = "  mtls:\n    mode: STRICT";
const PERMISSIVE: &str = "  mtls:\n    mode: PERMISSIVE";

#[test]
fn default_is_strict() {
    // Palisade: with no PeerAuthentication the mode is STRICT (Istio's is
    // PERMISSIVE); plaintext is refused and named as `default deny`.
    let m = mesh("");
    let d = Call::plaintext().to("shop", API).inbound(&m);
    assert_eq!(outcome(&d), "deny: default deny");
    assert_eq!(d.stage, Stage::PeerAuthentication);
    assert!(
        Call::from_sa("shop", "web")
            .to("shop", API)
            .inbound(&m)
            .is_allowed()
    );
}

#[test_case(&[("mesh-system", "mesh", MESH_PERMISSIVE)], 8080, true, "" ; "mesh-wide permissive")]
#[test_case(&[("mesh-system", "mesh", MESH_PERMISSIVE), ("shop", "ns", STRICT)], 8080, false, "PeerAuthentication shop/ns" ; "namespace-wide beats mesh-wide")]
#[test_case(&[("shop", "ns", STRICT), ("shop", "api", "  selector:\n    matchLabels:\n      app: api\n  mtls:\n    mode: PERMISSIVE")], 8080, true, "" ; "workload selector beats namespace-wide")]
#[test_case(&[("shop", "api", "  selector:\n    matchLabels:\n      app: api\n  mtls:\n    mode: PERMISSIVE\n  portLevelMtls:\n    9090:\n      mode: STRICT")], 9090, false, "PeerAuthentication shop/api port 9090" ; "port level beats workload level")]
#[test_case(&[("shop", "api", "  selector:\n    matchLabels:\n      app: api\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    \"9090\":\n      mode: PERMISSIVE")], 9090, true, "" ; "port level permissive")]
#[test_case(&[("shop", "api", "  selector:\n    matchLabels:\n      app: api\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    9090:\n      mode: PERMISSIVE")], 8080, false, "PeerAuthentication shop/api" ; "port level applies to its port only")]
#[test_case(&[("shop", "ns", PERMISSIVE), ("shop", "api", "  selector:\n    matchLabels:\n      app: api\n  mtls:\n    mode: UNSET")], 8080, true, "" ; "unset inherits from namespace")]
#[test_case(&[("mesh-system", "mesh", MESH_PERMISSIVE), ("shop", "ns", "  mtls:\n    mode: UNSET")], 8080, true, "" ; "unset namespace inherits mesh")]
#[test_case(&[("shop", "ns", "  mtls: {}")], 8080, false, "default deny" ; "unset everywhere falls back to strict default")]
#[test_case(&[("shop", "ns", "  mtls:\n    mode: DISABLE")], 8080, true, "" ; "disable admits plaintext")]
#[test_case(&[("other", "ns", PERMISSIVE)], 8080, false, "default deny" ; "another namespace's policy does not apply")]
#[test_case(&[("shop", "web-only", "  selector:\n    matchLabels:\n      app: web\n  mtls:\n    mode: PERMISSIVE")], 8080, false, "default deny" ; "selector for another workload does not apply")]
#[test_case(&[("mesh-system", "api-everywhere", "  selector:\n    matchLabels:\n      app: api\n  mtls:\n    mode: PERMISSIVE"), ("shop", "ns", STRICT)], 8080, true, "" ; "root namespace selector is workload level")]
fn precedence(
    policies: &[(&str, &str, &str)],
    port: u16,
    plaintext_allowed: bool,
    denied_by: &str,
) {
    // Istio: most specific wins: workload selector (port-level over
    // workload-level) > namespace-wide > mesh-wide (root namespace); UNSET
    // inherits; STRICT refuses plaintext.
    let yaml: String = policies
        .iter()
        .map(|(ns, name, spec)| pa(ns, name, spec))
        .collect();
    let m = mesh(&yaml);
    let d = Call::plaintext().to("shop", API).port(port).inbound(&m);
    assert_eq!(d.is_allowed(), plaintext_allowed, "{}", outcome(&d));
    if !plaintext_allowed {
        assert_eq!(d.stage, Stage::PeerAuthentication);
        assert_eq!(d.decided_by.to_string(), denied_by);
    }
}

#[test]
fn permissive_plaintext_is_unauthenticated() {
    // Istio: a plaintext caller admitted by PERMISSIVE has no principal and
    // no namespace, so identity-based ALLOW rules do not match it.
    let m = mesh(&format!(
        "{}apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: shop-only\n  namespace: shop\nspec:\n  rules:\n  - from:\n    - source:\n        namespaces: [\"shop\"]\n",
        pa("shop", "ns", PERMISSIVE)
    ));
    let d = Call::plaintext()
        .source_workload("shop", &[("app", "web")])
        .to("shop", API)
        .inbound(&m);
    assert_eq!(outcome(&d), "deny: default deny");
    assert_eq!(d.stage, Stage::AuthorizationPolicy);
    assert!(
        Call::from_sa("shop", "web")
            .to("shop", API)
            .inbound(&m)
            .is_allowed()
    );
}

#[test]
fn mtls_mode_query() {
    let m = mesh(&pa(
        "shop",
        "api",
        "  selector:\n    matchLabels:\n      app: api\n  mtls:\n    mode: PERMISSIVE\n  portLevelMtls:\n    9090:\n      mode: STRICT",
    ));
    let labels = support::labels(API);
    let api = mesh_policy::Workload {
        namespace: "shop",
        labels: &labels,
    };
    assert_eq!(
        m.mtls_mode(&api, 8080, support::now()).0,
        MtlsMode::Permissive
    );
    let (mode, by) = m.mtls_mode(&api, 9090, support::now());
    assert_eq!(mode, MtlsMode::Strict);
    assert_eq!(
        by.map(|b| b.to_string()).as_deref(),
        Some("PeerAuthentication shop/api port 9090")
    );
    let other = support::labels(&[]);
    let web = mesh_policy::Workload {
        namespace: "shop",
        labels: &other,
    };
    assert_eq!(
        m.mtls_mode(&web, 8080, support::now()),
        (mesh_policy::DEFAULT_MTLS_MODE, None)
    );
}
