use std::time::Duration;

use super::*;
use crate::source::Source;
use crate::source::fake::Fake;

const DENY_ALL: &str = "
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: default-deny, namespace: shop}
spec: {}
";

const ALLOW_WEB: &str = "
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: shop}
spec:
  rules:
    - from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]
";

/// Waits for the state to satisfy `ok`, failing the test after a deadline.
pub(crate) async fn wait_for(
    rx: &mut watch::Receiver<Arc<PolicyState>>,
    ok: impl Fn(&PolicyState) -> bool,
) -> Arc<PolicyState> {
    let r = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| ok(s))).await;
    match r {
        Ok(Ok(s)) => s.clone(),
        _ => panic!("state did not reach the expected condition in 5s"),
    }
}

fn names(s: &PolicyState) -> Vec<String> {
    s.snapshot
        .objects
        .iter()
        .map(|o| o.object_ref().to_string())
        .collect()
}

#[tokio::test]
async fn the_first_view_is_in_force_when_start_returns() {
    let source = Fake::new(Fake::config(DENY_ALL));
    let state = State::new("cluster.local");
    state.start(source.start().await.unwrap());
    let s = state.current();
    assert_eq!(names(&s), ["AuthorizationPolicy shop/default-deny"]);
    assert!(s.version > 0, "a loaded view has a version");
    assert!(s.error.is_none());
}

#[tokio::test]
async fn a_new_view_replaces_the_old_one_with_another_version() {
    let source = Fake::new(Fake::config(DENY_ALL));
    let state = State::new("cluster.local");
    state.start(source.clone().start().await.unwrap());
    let first = state.current().version;
    let mut rx = state.subscribe();
    source.publish(Fake::config(&format!("{DENY_ALL}---{ALLOW_WEB}")));
    let s = wait_for(&mut rx, |s| s.snapshot.objects.len() == 2).await;
    assert_ne!(s.version, first);
    // Back to the first content: back to the first version.
    source.publish(Fake::config(DENY_ALL));
    let s = wait_for(&mut rx, |s| s.snapshot.objects.len() == 1).await;
    assert_eq!(s.version, first);
}

// Two replicas reading the same source publish the same version (it is
// derived from the content, not from when each process loaded it).
#[tokio::test]
async fn replicas_of_the_same_source_agree_on_the_version() {
    let config = Fake::config(&format!("{DENY_ALL}---{ALLOW_WEB}"));
    let a = State::new("cluster.local");
    a.start(Fake::new(config.clone()).start().await.unwrap());
    let b = State::new("cluster.local");
    b.start(Fake::new(config).start().await.unwrap());
    assert_eq!(a.current().snapshot.objects.len(), 2);
    assert_eq!(a.current().version, b.current().version);
    assert!(a.current().version > 0);
}

#[tokio::test]
async fn a_failed_read_keeps_the_last_good_view_and_says_why() {
    let source = Fake::new(Fake::config(DENY_ALL));
    let state = State::new("cluster.local");
    state.start(source.clone().start().await.unwrap());
    let good = state.current().version;
    let mut rx = state.subscribe();
    source.fail("policy/bad.yaml: AuthorizationPolicy shop/x: spec.action: unknown variant");
    let s = wait_for(&mut rx, |s| s.error.is_some()).await;
    // DESIGN.md: the last good configuration stays in force.
    assert_eq!(s.version, good);
    assert_eq!(names(&s), ["AuthorizationPolicy shop/default-deny"]);
    assert!(s.error.as_deref().unwrap().contains("spec.action"));

    // The next good view clears the error.
    source.publish(Fake::config(ALLOW_WEB));
    let s = wait_for(&mut rx, |s| s.error.is_none()).await;
    assert_eq!(names(&s), ["AuthorizationPolicy shop/allow-web"]);
}

#[tokio::test]
async fn a_view_that_does_not_compile_is_refused() {
    let source = Fake::new(Fake::config(DENY_ALL));
    let state = State::new("cluster.local");
    state.start(source.clone().start().await.unwrap());
    let mut rx = state.subscribe();
    // Two sources of truth for one object: the result would depend on order.
    let mut twice = Fake::config(DENY_ALL);
    twice
        .snapshot
        .objects
        .extend(Fake::config(DENY_ALL).snapshot.objects);
    source.publish(twice);
    let s = wait_for(&mut rx, |s| s.error.is_some()).await;
    assert!(
        s.error
            .as_deref()
            .unwrap()
            .contains("defined more than once")
    );
    assert_eq!(s.snapshot.objects.len(), 1);
}

#[tokio::test]
async fn services_and_source_workloads_travel_with_the_view() {
    let mut config = Fake::config(
        "
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec: {clusterIP: 10.96.0.10, selector: {app: api}, ports: [{port: 80, targetPort: 8080}]}
",
    );
    config.workloads.push(crate::registry::Workload {
        identity: "spiffe://cluster.local/ns/shop/sa/api".into(),
        namespace: "shop".into(),
        workload: "api-1".into(),
        labels: [("app".to_owned(), "api".to_owned())].into(),
        ips: vec!["10.0.0.7".into()],
        ports: vec![8080],
        inbound_port: 4143,
    });
    let state = State::new("cluster.local");
    state.start(Fake::new(config).start().await.unwrap());
    let s = state.current();
    assert_eq!(s.services.len(), 1);
    assert_eq!(s.workloads[0].workload, "api-1");
}
