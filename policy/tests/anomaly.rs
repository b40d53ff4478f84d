//! AnomalyRule and Quarantine (`policy.palisade.dev/v1alpha1`): what loads,
//! what is refused with the field named, and what a Quarantine denies.

#[path = "support/helpers.rs"]
mod support;

use mesh_policy::{Trigger, parse_yaml, trigger_of};
use support::{Call, mesh};
use test_case::test_case;

const RULE: &str = "apiVersion: policy.palisade.dev/v1alpha1
kind: AnomalyRule
metadata: {name: probe, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  denySpike: {count: 20, window: 10s}
  action: quarantine
  quarantine: {scope: Segment, duration: 10m, except: [cluster.local/ns/ops/sa/oncall]}
";

#[test]
fn a_rule_loads_with_its_trigger() {
    let loaded = parse_yaml("r.yaml", RULE).unwrap();
    let Some(mesh_policy::resource::Object::AnomalyRule(rule)) = loaded.snapshot.objects.first()
    else {
        panic!("an AnomalyRule");
    };
    assert_eq!(
        trigger_of(rule),
        Ok(Trigger::DenySpike {
            count: 20,
            window: std::time::Duration::from_secs(10)
        })
    );
    // Rules are the control plane's: no proxy receives them.
    let share = loaded
        .snapshot
        .for_workload("shop", &support::labels(&[("app", "api")]));
    assert!(share.objects.is_empty());
}

#[test_case("  denySpike: {count: 20, window: 10s}\n", "", "spec" ; "no trigger")]
#[test_case("  denySpike: {count: 20, window: 10s}\n", "  denySpike: {count: 20, window: 10s}\n  newSource: {}\n", "spec" ; "two triggers")]
#[test_case("count: 20", "count: 0", "spec.denySpike.count" ; "zero count")]
#[test_case("window: 10s", "window: 5m", "spec.denySpike.window" ; "window too long")]
#[test_case("window: 10s", "window: soon", "spec.denySpike.window" ; "bad window")]
#[test_case("duration: 10m", "duration: 30d", "spec.quarantine.duration" ; "too long a quarantine")]
#[test_case("action: quarantine", "action: alert", "spec.quarantine" ; "alert with a plan")]
#[test_case("action: quarantine", "action: cut", "spec.action" ; "bad action")]
#[test_case("cluster.local/ns/ops/sa/oncall", "spiffe://cluster.local/ns/ops/sa/oncall", "spec.quarantine.except[0]" ; "bad principal")]
#[test_case("scope: Segment", "scope: Source", "spec.quarantine.except" ; "except on a source quarantine")]
fn bad_rules_are_refused_with_the_field(from: &str, to: &str, field: &str) {
    let yaml = RULE.replacen(from, to, 1);
    assert_ne!(yaml, RULE, "the edit applies");
    let e = parse_yaml("r.yaml", &yaml).unwrap_err().to_string();
    assert!(e.contains("AnomalyRule shop/probe"), "{e}");
    assert!(e.contains(field), "{field}: {e}");
}

fn quarantine(spec: &str) -> String {
    format!(
        "apiVersion: policy.palisade.dev/v1alpha1\nkind: Quarantine\nmetadata: {{name: q-1, namespace: mesh-system, annotations: {{palisade.dev/expires-at: \"2030-01-01T00:10:00Z\"}}}}\nspec:\n  rule: AnomalyRule shop/probe\n{spec}---\n"
    )
}

const ALLOW_ALL: &str = "apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: all, namespace: shop}
spec:
  rules: [{}]
---
";

// A source quarantine denies that identity everywhere, naming itself, and
// lifts at its expiry; others pass.
#[test]
fn a_source_quarantine_denies_the_identity_everywhere_until_it_expires() {
    let m = mesh(&format!(
        "{ALLOW_ALL}{}",
        quarantine(
            "  scope: Source\n  source: cluster.local/ns/lab/sa/intruder\n  evidence: 9 denied calls\n"
        )
    ));
    let intruder = Call::from_sa("lab", "intruder").to("shop", &[("app", "api")]);
    let d = intruder.inbound(&m);
    assert!(!d.is_allowed());
    assert_eq!(
        d.decided_by.to_string(),
        "Quarantine mesh-system/q-1 rule 0"
    );
    let web = Call::from_sa("shop", "web").to("shop", &[("app", "api")]);
    assert!(web.inbound(&m).is_allowed());
    let after = Call::from_sa("lab", "intruder")
        .to("shop", &[("app", "api")])
        .at(support::now() + std::time::Duration::from_secs(3600));
    assert!(after.inbound(&m).is_allowed(), "lifted at expiry");
}

#[test]
fn a_segment_quarantine_cuts_everything_in_but_the_excepted() {
    let seg = quarantine(
        "  scope: Segment\n  selector: {matchLabels: {app: api}}\n  except: [cluster.local/ns/ops/sa/oncall]\n",
    )
    .replace("namespace: mesh-system", "namespace: shop");
    let m = mesh(&format!("{ALLOW_ALL}{seg}"));
    let to_api = |ns, sa| Call::from_sa(ns, sa).to("shop", &[("app", "api")]);
    assert!(!to_api("shop", "web").inbound(&m).is_allowed());
    assert!(to_api("ops", "oncall").inbound(&m).is_allowed());
    let to_other = Call::from_sa("shop", "web").to("shop", &[("app", "db")]);
    assert!(to_other.inbound(&m).is_allowed());
}

#[test_case("  scope: Source\n", "spec.source" ; "source missing")]
#[test_case("  scope: Source\n  source: cluster.local/ns/lab/sa/*\n", "spec.source" ; "wildcard source")]
#[test_case("  scope: Segment\n  source: cluster.local/ns/lab/sa/x\n", "spec.source" ; "source on a segment")]
fn bad_quarantines_are_refused(spec: &str, field: &str) {
    let e = parse_yaml("q.yaml", &quarantine(spec))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Quarantine mesh-system/q-1") && e.contains(field),
        "{e}"
    );
}
