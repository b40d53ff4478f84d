//! Palisade annotations: time-limited exceptions and dry-run rollouts.

#[path = "support/helpers.rs"]
mod support;

use std::time::Duration;

use mesh_policy::Stage;
use support::{Call, mesh, now, outcome};
use test_case::test_case;

const API: &[(&str, &str)] = &[("app", "api")];

/// Only shop/web may call; plus an exception for shop/debug until 2030-01-01T01:00:00Z.
const EXCEPTION: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: only-web
  namespace: shop
spec:
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/web]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: debug-until-1am
  namespace: shop
  annotations:
    palisade.dev/expires-at: \"2030-01-01T01:00:00Z\"
spec:
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/debug]
";

#[test_case(0, true ; "before expiry the exception applies")]
#[test_case(3599, true ; "one second before")]
#[test_case(3600, false ; "at the instant it stops applying")]
#[test_case(86_400, false ; "long after")]
fn expiry(seconds_after_now: u64, allowed: bool) {
    // Palisade: palisade.dev/expires-at stops applying at that instant,
    // judged against the request's `now`, with nobody touching the policy.
    let m = mesh(EXCEPTION);
    let d = Call::from_sa("shop", "debug")
        .to("shop", API)
        .at(now() + Duration::from_secs(seconds_after_now))
        .inbound(&m);
    assert_eq!(d.is_allowed(), allowed, "{}", outcome(&d));
}

#[test]
fn expired_deny_no_longer_denies() {
    // Palisade: expiry works for any kind and action, e.g. a temporary block.
    let m = mesh(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: block\n  namespace: shop\n  annotations:\n    palisade.dev/expires-at: \"2029-12-31T23:00:00-02:00\"\nspec:\n  action: DENY\n  rules: [{}]\n",
    );
    // 2029-12-31T23:00-02:00 is 2030-01-01T01:00Z.
    let call = Call::from_sa("shop", "web").to("shop", API);
    assert!(!call.clone().inbound(&m).is_allowed());
    assert!(
        call.at(now() + Duration::from_secs(3600))
            .inbound(&m)
            .is_allowed()
    );
}

#[test]
fn expired_peer_authentication_falls_back() {
    // Palisade: an expired PERMISSIVE exception restores the STRICT default.
    let m = mesh(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: migrate\n  namespace: shop\n  annotations:\n    palisade.dev/expires-at: \"2030-01-01T00:30:00Z\"\nspec:\n  mtls:\n    mode: PERMISSIVE\n",
    );
    let call = Call::plaintext().to("shop", API);
    assert!(call.clone().inbound(&m).is_allowed());
    let d = call.at(now() + Duration::from_secs(1800)).inbound(&m);
    assert_eq!(
        (d.stage, d.decided_by.to_string()),
        (Stage::PeerAuthentication, "default deny".to_owned())
    );
}

const DRY_RUN_DENY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-dev
  namespace: shop
  annotations:
    palisade.dev/dry-run: \"true\"
spec:
  action: DENY
  rules:
  - from:
    - source:
        namespaces: [dev]
";

#[test]
fn dry_run_deny_is_reported_not_enforced() {
    // Palisade: palisade.dev/dry-run evaluates and reports, never enforces;
    // the would-be deny is carried separately and labelled dry_run_deny.
    let m = mesh(DRY_RUN_DENY);
    let d = Call::from_sa("dev", "x").to("shop", API).inbound(&m);
    assert!(d.is_allowed());
    assert_eq!(d.label(), "dry_run_deny");
    let dry = d.dry_run.expect("would deny");
    assert_eq!(dry.stage, Stage::AuthorizationPolicy);
    assert_eq!(
        dry.decided_by.to_string(),
        "AuthorizationPolicy shop/deny-dev rule 0"
    );
    let d = Call::from_sa("shop", "x").to("shop", API).inbound(&m);
    assert_eq!(d.label(), "allow");
}

#[test]
fn dry_run_allow_policy_reports_default_deny() {
    // Rolling out a first ALLOW policy in dry-run shows who would lose access.
    let m = mesh(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: only-web\n  namespace: shop\n  annotations:\n    palisade.dev/dry-run: \"true\"\nspec:\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/shop/sa/web]\n",
    );
    let d = Call::from_sa("shop", "batch").to("shop", API).inbound(&m);
    assert_eq!(outcome(&d), "allow: default allow");
    assert_eq!(
        d.dry_run.map(|x| x.decided_by.to_string()).as_deref(),
        Some("default deny")
    );
    assert!(
        Call::from_sa("shop", "web")
            .to("shop", API)
            .inbound(&m)
            .dry_run
            .is_none()
    );
}

#[test]
fn dry_run_does_not_mask_an_enforced_deny() {
    // An enforced deny stays a deny; the dry-run pass only runs on allows.
    let m = mesh(&format!(
        "{DRY_RUN_DENY}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-all\n  namespace: shop\nspec:\n  action: DENY\n  rules: [{{}}]\n"
    ));
    let d = Call::from_sa("dev", "x").to("shop", API).inbound(&m);
    assert_eq!(d.label(), "deny");
    assert_eq!(
        d.decided_by.to_string(),
        "AuthorizationPolicy shop/deny-all rule 0"
    );
}

#[test]
fn dry_run_network_policy_and_peer_authentication() {
    // Palisade: dry-run applies to any policy object.
    let m = mesh(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: lockdown\n  namespace: shop\n  annotations:\n    palisade.dev/dry-run: \"true\"\nspec:\n  podSelector: {}\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: permissive\n  namespace: shop\nspec:\n  mtls:\n    mode: PERMISSIVE\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\n  namespace: billing\n  annotations:\n    palisade.dev/dry-run: \"true\"\nspec:\n  mtls:\n    mode: STRICT\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: mesh\n  namespace: mesh-system\nspec:\n  mtls:\n    mode: PERMISSIVE\n",
    );
    let d = Call::from_sa("shop", "web").to("shop", API).inbound(&m);
    assert_eq!(d.label(), "dry_run_deny");
    let dry = d.dry_run.expect("would deny");
    assert_eq!(
        (dry.stage, dry.decided_by.to_string()),
        (
            Stage::NetworkPolicy,
            "NetworkPolicy shop/lockdown".to_owned()
        )
    );

    let d = Call::plaintext().to("billing", API).inbound(&m);
    assert!(d.is_allowed());
    let dry = d.dry_run.expect("would deny");
    assert_eq!(
        (dry.stage, dry.decided_by.to_string()),
        (
            Stage::PeerAuthentication,
            "PeerAuthentication billing/strict".to_owned()
        )
    );
}

#[test]
fn dry_run_outbound() {
    let m = mesh(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: no-egress\n  namespace: shop\n  annotations:\n    palisade.dev/dry-run: \"true\"\nspec:\n  podSelector: {}\n  policyTypes: [Egress]\n",
    );
    let d = Call::from_sa("shop", "web")
        .source_workload("shop", &[])
        .to("billing", API)
        .check(&m);
    assert!(d.is_allowed());
    assert_eq!(d.label(), "dry_run_deny");
    assert_eq!(
        d.dry_run.map(|x| x.decided_by.to_string()).as_deref(),
        Some("NetworkPolicy shop/no-egress")
    );
}
