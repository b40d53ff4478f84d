//! Automatic quarantine in the lab of network-namespace pods: an intruder
//! in another namespace probes the shop's server (denied, again and
//! again); an AnomalyRule's deny spike quarantines its identity
//! everywhere — another service that admitted it now refuses it, naming
//! the Quarantine — while the shop's own client keeps getting answers;
//! `meshctl quarantine list` shows it with the evidence; lifting it admits
//! the intruder again. Real pods, real iptables redirection, unmodified
//! curls calling Services by name.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_tests::netns::{Lab, LabSpec, Pod, available, meshctl};
use mesh_tests::{http_get, wait_for};

const SERVER: &str = "http://server.shop.svc.cluster.local:8080/orders";
const PUBLIC: &str = "http://public.shop.svc.cluster.local:8080/";

const POLICY: &str = "apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: server, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/frontend]}}]}]
---
apiVersion: security.palisade.dev/v1
kind: AuthorizationPolicy
metadata: {name: public, namespace: shop}
spec:
  selector: {matchLabels: {app: public}}
  rules: [{from: [{source: {namespaces: [shop, lab]}}]}]
---
apiVersion: policy.palisade.dev/v1alpha1
kind: AnomalyRule
metadata: {name: probe, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  denySpike: {count: 10, window: 10s}
  action: quarantine
  quarantine: {scope: Source, duration: 10m}
";

fn control_plane_admin(lab: &Lab) -> SocketAddr {
    lab.status()["control_plane"]["admin"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("the lab's control plane admin")
}

#[test]
fn an_intruders_probe_is_quarantined_everywhere_while_the_shop_keeps_working() {
    if !available("an_intruders_probe_is_quarantined_everywhere_while_the_shop_keeps_working") {
        return;
    }
    let mut lab = LabSpec::new(51)
        .pod(Pod::new("server", "shop", 10).echo(&[8080]))
        .pod(Pod::new("public", "shop", 11).echo(&[8080]))
        .service("server", "shop", 10, "server", (8080, 8080))
        .service("public", "shop", 11, "public", (8080, 8080))
        .pod(Pod::new("frontend", "shop", 20))
        .pod(Pod::new("intruder", "lab", 21))
        .file(
            "namespaces.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: lab}\n",
        )
        .file("policy.yaml", POLICY)
        .up();
    assert_eq!(lab.curl_answered("frontend", SERVER).0, 200);
    assert_eq!(
        lab.curl_answered("intruder", PUBLIC).0,
        200,
        "admitted before"
    );

    // The probe: denied calls up to the rule's threshold.
    for _ in 0..10 {
        assert_eq!(lab.curl("intruder", SERVER).0, 403);
    }
    let probed = Instant::now();
    let (_, body) = wait_for(
        "the quarantine at another service",
        Duration::from_secs(15),
        || {
            let r = lab.curl("intruder", PUBLIC);
            (r.0 == 403).then_some(r)
        },
    );
    eprintln!(
        "intruder quarantined everywhere {:?} after the threshold",
        probed.elapsed()
    );
    assert!(body.contains("Quarantine mesh-system/q-"), "{body}");
    // The shop's own traffic: every call answered.
    let mut failed = 0;
    for _ in 0..20 {
        if lab.curl("frontend", SERVER).0 != 200 {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "legitimate calls failed under the quarantine");

    let admin = format!("http://{}", control_plane_admin(&lab));
    let out = meshctl(&["quarantine", "list", "--admin", &admin, "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let q = &doc["quarantines"][0];
    assert_eq!(
        q["source"], "spiffe://cluster.local/ns/lab/sa/intruder",
        "{doc}"
    );
    assert_eq!(q["rule"], "AnomalyRule shop/probe");
    assert!(
        q["evidence"]
            .as_str()
            .unwrap_or("")
            .contains("denied calls"),
        "{doc}"
    );
    // The flows the map draws show the quarantine's denials (reported
    // within a second).
    let cp = control_plane_admin(&lab);
    wait_for(
        "the quarantine's denials in /flows",
        Duration::from_secs(10),
        || {
            http_get(cp, "/flows")
                .ok()
                .filter(|(_, b)| b.contains("Quarantine mesh-system/q-"))
        },
    );

    // Lifted early by the operator: admitted again.
    let name = q["name"].as_str().expect("a name").to_owned();
    let data_dir = lab.state_dir().join("data");
    let out = meshctl(&[
        "quarantine",
        "lift",
        &name,
        "--data-dir",
        &data_dir.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the lift", Duration::from_secs(15), || {
        (lab.curl("intruder", PUBLIC).0 == 200).then_some(())
    });
    lab.down();
}
