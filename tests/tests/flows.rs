//! Flow telemetry through real processes: two client proxies call one
//! server proxy (one allowed, one denied by the default deny); each proxy
//! reports its inbound decisions over Telemetry.Report, and the control
//! plane's `/flows` and `meshctl flows` show who called whom, how it was
//! decided and by what.

use std::time::Duration;

use mesh_tests::netns::meshctl;
use mesh_tests::*;

const ALLOW_WEB: &str = "apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]
";

fn flows(cp: &ControlPlane) -> Vec<serde_json::Value> {
    http_get(cp.admin, "/flows")
        .ok()
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["flows"].as_array().cloned())
        .unwrap_or_default()
}

fn total(flows: &[serde_json::Value], source_sa: &str, decision: &str) -> u64 {
    flows
        .iter()
        .filter(|f| {
            f["source"]
                .as_str()
                .is_some_and(|s| s.ends_with(&format!("/sa/{source_sa}")))
                && f["decision"] == decision
        })
        .filter_map(|f| f["total"].as_u64())
        .sum()
}

#[test]
fn the_control_plane_aggregates_who_called_whom_and_how_it_was_decided() {
    let cp = ControlPlane::start(CpOptions::default());
    cp.write_policy("allow.yaml", ALLOW_WEB);
    cp.wait_policy_objects(1);
    let app = EchoApp::start(cp.dir.path(), "api-app");
    let mut o = ProxyOptions::new("shop", "api");
    o.extra = vec![
        "--labels".into(),
        "app=api".into(),
        "--workload".into(),
        "api-0".into(),
    ];
    let api = Proxy::start(&cp, o);
    let mut o = ProxyOptions::new("shop", "web");
    let web_route = o.route(&api, app.port(), &api.identity);
    let _web = Proxy::start(&cp, o);
    let mut o = ProxyOptions::new("shop", "intruder");
    let intruder_route = o.route(&api, app.port(), &api.identity);
    let _intruder = Proxy::start(&cp, o);

    for _ in 0..5 {
        let (status, body) = http_request(web_route, "GET", "/", "api", &[]).expect("web's call");
        assert_eq!(status, 200, "{body}");
    }
    for _ in 0..3 {
        let (status, _) =
            http_request(intruder_route, "GET", "/", "api", &[]).unwrap_or((0, String::new()));
        assert_ne!(status, 200);
    }
    // Reports arrive about once a second.
    let seen = wait_for(
        "both flows at the control plane",
        Duration::from_secs(10),
        || {
            let f = flows(&cp);
            (total(&f, "web", "allow") >= 5 && total(&f, "intruder", "deny") >= 3).then_some(f)
        },
    );
    let allowed = seen
        .iter()
        .find(|f| f["decision"] == "allow")
        .expect("the allowed flow");
    assert_eq!(allowed["destination"], api.identity.as_str(), "{allowed}");
    assert_eq!(
        allowed["destination_workloads"][0], "shop/api-0",
        "{allowed}"
    );
    assert_eq!(
        allowed["policy"], "AuthorizationPolicy shop/api rule 0",
        "{allowed}"
    );
    let denied = seen
        .iter()
        .find(|f| f["decision"] == "deny")
        .expect("the denied flow");
    assert_eq!(denied["policy"], "default deny", "{denied}");

    // meshctl reads the same: the denied flow only, as JSON.
    let admin = format!("http://{}", cp.admin);
    let out = meshctl(&["flows", "--admin", &admin, "--denied", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(!listed.is_empty());
    assert!(
        listed.iter().all(|f| f["decision"] != "allow"),
        "{listed:?}"
    );
    let out = meshctl(&["flows", "--admin", &admin, "--namespace", "shop"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("shop/web") && table.contains("shop/intruder"),
        "{table}"
    );

    // Preview: a folder that admits only another identity would cut
    // exactly web's flow (the intruder's is denied already)...
    let proposed = tempfile::tempdir().unwrap();
    std::fs::write(
        proposed.path().join("api.yaml"),
        ALLOW_WEB.replace("sa/web", "sa/batch"),
    )
    .unwrap();
    let dir = proposed.path().to_string_lossy().into_owned();
    let out = meshctl(&[
        "policy",
        "preview",
        "--config-dir",
        &dir,
        "--admin",
        &admin,
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "something would change");
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let changes = p["changes"].as_array().cloned().unwrap_or_default();
    assert_eq!(changes.len(), 1, "{p}");
    assert_eq!(
        changes[0]["source"],
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    assert_eq!(changes[0]["change"], "allow → deny");
    assert_eq!(changes[0]["would_be"], "default deny");
    // ... and applied, it denies exactly that.
    cp.write_policy("allow.yaml", &ALLOW_WEB.replace("sa/web", "sa/batch"));
    wait_for("the new policy at api", Duration::from_secs(10), || {
        let (status, _) =
            http_request(web_route, "GET", "/", "api", &[]).unwrap_or((0, String::new()));
        (status == 403).then_some(())
    });
    let (status, _) =
        http_request(intruder_route, "GET", "/", "api", &[]).unwrap_or((0, String::new()));
    assert_eq!(status, 403);
}
