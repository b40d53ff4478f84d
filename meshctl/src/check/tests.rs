//! `meshctl check` against recorded API server responses (`recorded/`),
//! replayed by mesh-kube-api's recording server. No API server runs.

use std::path::Path;

use mesh_kube_api::replay::serve;

use super::*;

async fn api(recording: &str) -> Api {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/check/recorded")
        .join(recording);
    // The server task keeps the recording; it lives as long as the test.
    let (addr, _replay) = serve(&path).await;
    Api::plain(&format!("http://{addr}")).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::parse(
        "2026-12-01T12:00:00Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

fn outcomes(f: &[Finding]) -> Vec<(&str, Outcome)> {
    f.iter().map(|f| (f.check, f.outcome)).collect()
}

#[tokio::test]
async fn a_healthy_install_passes_every_check() {
    let f = post_install(&api("healthy.json").await, now()).await;
    assert_eq!(
        outcomes(&f),
        [
            ("kubernetes-api", Outcome::Ok),
            ("ca", Outcome::Ok),
            ("webhook", Outcome::Ok),
            ("injector", Outcome::Ok),
            ("control-plane", Outcome::Ok),
            ("proxies", Outcome::Ok),
        ],
        "{f:#?}"
    );
    assert!(!failed(&f));
    // Only the running meshed pod is asked (web-1 has no proxy, db-1 is Pending).
    assert_eq!(
        f[5].detail,
        "1 meshed pods checked, oldest certificate 180 min old"
    );
    assert!(
        f[1].detail.starts_with("issuer valid until"),
        "{}",
        f[1].detail
    );
}

#[tokio::test]
async fn each_broken_part_is_named() {
    let f = post_install(&api("broken.json").await, now()).await;
    assert_eq!(
        outcomes(&f),
        [
            ("kubernetes-api", Outcome::Ok),
            ("ca", Outcome::Fail),
            ("webhook", Outcome::Fail),
            ("injector", Outcome::Fail),
            ("control-plane", Outcome::Warn),
            ("proxies", Outcome::Fail),
        ],
        "{f:#?}"
    );
    assert!(
        f[1].detail.contains("mesh-system/palisade-ca") && f[1].detail.contains("404"),
        "{}",
        f[1].detail
    );
    assert!(f[2].detail.contains("has no caBundle"), "{}", f[2].detail);
    assert_eq!(f[3].detail, "mesh-injector: 0/2 available");
    assert_eq!(f[4].detail, "mesh-control-plane: 1/2 available");
    let p = &f[5].detail;
    assert!(p.contains("shop/api-1: certificate expired"), "{p}");
    assert!(p.contains("shop/api-2: admin not reachable"), "{p}");
    assert!(
        p.contains("shop/api-3: certificate not renewed (120 min left)"),
        "{p}"
    );
    assert!(failed(&f));
    let json: serde_json::Value = serde_json::from_str(&render(&f, true)).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["checks"][1]["outcome"], "fail");
}

#[tokio::test]
async fn an_old_or_absent_api_server_stops_the_check() {
    let f = post_install(&api("old.json").await, now()).await;
    assert_eq!(outcomes(&f), [("kubernetes-api", Outcome::Fail)]);
    assert!(
        f[0].detail.contains("needs 1.29 or newer"),
        "{}",
        f[0].detail
    );
    let none = mesh_kube_api::replay::unreachable();
    let f = pre_install(&none).await;
    assert_eq!(outcomes(&f), [("kubernetes-api", Outcome::Fail)]);
    assert!(f[0].detail.starts_with("unreachable: "), "{}", f[0].detail);
}

#[tokio::test]
async fn pre_install_on_a_fresh_cluster() {
    let f = pre_install(&api("pre.json").await).await;
    assert_eq!(
        outcomes(&f),
        [
            ("kubernetes-api", Outcome::Ok),
            ("not-installed", Outcome::Ok)
        ]
    );
    assert_eq!(
        render(&f, false),
        "ok    kubernetes-api  v1.35.2\nok    not-installed   no palisade-injector webhook yet\n"
    );
}
