use std::time::UNIX_EPOCH;

use super::*;
use crate::testing::{admin_answering, http};

const QUICK: Duration = Duration::from_secs(5);

/// 2029-12-31T00:00:00Z, between the two expiries of [`document`].
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_369_600)
}

/// A `/policy` answer as the proxy serves it.
fn document() -> serde_json::Value {
    serde_json::json!({
        "version": 7,
        "received_at": "2029-12-30T23:59:00Z",
        "next_expiry": "2030-01-31T22:00:00Z",
        "snapshot": {"objects": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
            {"apiVersion": "security.palisade.dev/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": "default-deny", "namespace": "shop"}, "spec": {}},
            {"apiVersion": "security.palisade.dev/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": "debug-tonight", "namespace": "shop",
                          "annotations": {"palisade.dev/expires-at": "2030-01-31T22:00:00Z"}},
             "spec": {"rules": [{"from": [{"source": {"namespaces": ["ops"]}}]}]}},
            {"apiVersion": "security.palisade.dev/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": "old", "namespace": "shop",
                          "annotations": {"palisade.dev/expires-at": "2029-01-01T00:00:00Z"}},
             "spec": {}},
            {"apiVersion": "security.palisade.dev/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": "trial",
                          "annotations": {"palisade.dev/dry-run": "true"}},
             "spec": {"action": "DENY", "rules": [{}]}},
        ]}
    })
}

#[tokio::test]
async fn lists_the_snapshot_in_force() {
    let body = document().to_string();
    let (addr, server) = admin_answering(http("200 OK", &body)).await;
    let doc = fetch(&format!("http://{addr}"), QUICK).await.unwrap();
    let head = server.await.unwrap();
    assert!(head.starts_with("GET /policy HTTP/1.1\r\n"), "{head}");

    assert_eq!(doc.version, 7);
    assert_eq!(doc.refused, None);
    assert_eq!(
        doc.to_table(now()),
        "version:     7\n\
         received at: 2029-12-30T23:59:00Z\n\
         next expiry: 2030-01-31T22:00:00Z\n\
         objects:     5\n\
         \n\
         KIND                 NAMESPACE/NAME      DRY-RUN  EXPIRES-AT\n\
         Namespace            shop                -        -\n\
         AuthorizationPolicy  shop/default-deny   -        -\n\
         AuthorizationPolicy  shop/debug-tonight  -        2030-01-31T22:00:00Z\n\
         AuthorizationPolicy  shop/old            -        2029-01-01T00:00:00Z (expired)\n\
         AuthorizationPolicy  default/trial       yes      -\n"
    );
    // -o json: the proxy's document, unchanged.
    assert_eq!(doc.to_json(), format!("{body}\n"));
}

#[tokio::test]
async fn an_empty_snapshot_and_no_expiry() {
    let body = r#"{"version": 1, "received_at": "2029-12-30T00:00:00Z", "next_expiry": null,
                   "snapshot": {"objects": []}}"#;
    let (addr, _server) = admin_answering(http("200 OK", body)).await;
    let doc = fetch(&addr, QUICK).await.unwrap();
    assert_eq!(
        doc.to_table(now()),
        "version:     1\nreceived at: 2029-12-30T00:00:00Z\nnext expiry: none\nobjects:     0\n"
    );
}

#[tokio::test]
async fn what_this_meshctl_does_not_understand_is_still_listed() {
    let mut doc = document();
    let objects = doc["snapshot"]["objects"].as_array_mut().unwrap();
    // A kind from a newer proxy: listed; the policy crate skips it too.
    objects.push(serde_json::json!({"apiVersion": "x/v9", "kind": "Future",
                                    "metadata": {"name": "f", "namespace": "shop"}}));
    let (addr, _server) = admin_answering(http("200 OK", &doc.to_string())).await;
    let got = fetch(&addr, QUICK).await.unwrap();
    assert_eq!(got.objects.len(), 6);
    assert_eq!(got.objects[5].name, "shop/f");
    assert_eq!(got.refused, None);

    // A field this meshctl refuses: listed, and the refusal says why.
    let objects = doc["snapshot"]["objects"].as_array_mut().unwrap();
    objects.push(serde_json::json!({"apiVersion": "security.palisade.dev/v1",
                                    "kind": "AuthorizationPolicy",
                                    "metadata": {"name": "new", "namespace": "shop"},
                                    "spec": {"action": "MAYBE"}}));
    let (addr, _server) = admin_answering(http("200 OK", &doc.to_string())).await;
    let got = fetch(&addr, QUICK).await.unwrap();
    assert_eq!(got.objects.len(), 7);
    let why = got.refused.unwrap_or_default();
    assert!(
        why.contains("AuthorizationPolicy shop/new: spec.action"),
        "{why}"
    );
}

#[tokio::test]
async fn no_policy_yet_is_explained() {
    let (addr, _server) = admin_answering(http(
        "503 Service Unavailable",
        r#"{"error": "no policy yet"}"#,
    ))
    .await;
    let err = fetch(&addr, QUICK).await.unwrap_err();
    assert!(matches!(err, PolicyGetError::NoPolicy { .. }), "{err}");
    assert!(
        err.to_string().contains("has no policy yet: no policy yet"),
        "{err}"
    );
}

#[tokio::test]
async fn unexpected_answers_are_errors() {
    // An older proxy without /policy.
    let (addr, _s) = admin_answering(http("404 Not Found", "not found\n")).await;
    let err = fetch(&addr, QUICK).await.unwrap_err();
    assert!(
        matches!(
            err,
            PolicyGetError::Admin(AdminError::Status { status: 404, .. })
        ),
        "{err}"
    );

    for body in [
        r#"{"hello": 1}"#,
        r#"{"version": -1, "received_at": "x", "next_expiry": null, "snapshot": {}}"#,
        r#"{"version": 1, "received_at": "x", "next_expiry": null, "snapshot": {"objects": [{"kind": "X"}]}}"#,
        "not json",
    ] {
        let (addr, _s) = admin_answering(http("200 OK", body)).await;
        let err = fetch(&addr, QUICK).await.unwrap_err();
        assert!(
            matches!(err, PolicyGetError::Document { .. }),
            "{body}: {err}"
        );
        assert!(err.to_string().contains("/policy document"), "{err}");
    }

    // Nothing listens.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = fetch(&addr, QUICK).await.unwrap_err();
    assert!(err.to_string().contains("is mesh-proxy running"), "{err}");
}

#[test]
fn admin_urls_point_at_policy() {
    for (url, path) in [
        ("http://127.0.0.1:4191", "/policy"),
        ("http://127.0.0.1:4191/policy", "/policy"),
        ("http://admin.local:8080/pod-a/", "/pod-a/policy"),
    ] {
        assert_eq!(
            Target::endpoint(url, POLICY_PATH).unwrap().path,
            path,
            "{url}"
        );
    }
}
