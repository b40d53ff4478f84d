//! `meshctl lab up` / `status` / `down`: the example shop comes up in under
//! 30 s and shows allowed and denied flows; `down` leaves nothing behind,
//! also after a crash that lost the lab's state.

use std::path::PathBuf;
use std::time::Duration;

use mesh_tests::netns::{LabSpec, Pod, available, lab_up, leftovers, meshctl};
use mesh_tests::{http_get, wait_for};

/// The bound for `lab up` on a fresh machine.
const UP_BOUND: Duration = Duration::from_secs(30);

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Takes a lab down on drop, so a failed assertion leaves nothing behind.
struct Down(&'static str);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = meshctl(&["lab", "down", "--name", self.0]);
    }
}

fn status(name: &str) -> serde_json::Value {
    let out = meshctl(&["lab", "status", "--name", name, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("status json")
}

fn pod<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["pods"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == name))
        .unwrap_or_else(|| panic!("no pod {name} in {status:#}"))
}

fn denied_by(pod: &serde_json::Value, policy: &str) -> u64 {
    pod["traffic"]["denied_by"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d[0] == policy)
        .filter_map(|d| d[1].as_u64())
        .sum()
}

fn egress(pod: &serde_json::Value, host: &str, decision: &str) -> u64 {
    pod["traffic"]["egress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e[0] == host && e[1] == decision)
        .filter_map(|e| e[2].as_u64())
        .sum()
}

/// `scripts/lab.sh [ARGS]` (the README's main command) for lab `name`.
fn lab_sh(name: &str, args: &[&str]) -> std::process::Output {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bins = mesh_tests::bin("meshctl");
    std::process::Command::new(root.join("scripts/lab.sh"))
        .args(args)
        .current_dir(&root)
        .env("MESH_NAME", name)
        .env("MESH_BIN_DIR", bins.parent().expect("bin dir"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/lab.sh")
}

#[test]
fn example_lab_is_ready_fast_shows_flows_and_goes_away() {
    if !available("example_lab_is_ready_fast_shows_flows_and_goes_away") {
        return;
    }
    // The example's own network (10.250.0.0/24), under a name of its own
    // so a lab started by hand (`pal`) is never touched.
    let name = "plex";
    let _down = Down(name);
    let out = lab_sh(name, &[]);
    let shown = text(&out);
    assert!(out.status.success(), "scripts/lab.sh: {shown}");
    assert!(shown.contains("lab plex is up in"), "{shown}");
    assert!(shown.contains("IDENTITY"), "no status table: {shown}");

    let st = status(name);
    let took = Duration::from_secs_f64(st["up_seconds"].as_f64().unwrap_or(f64::MAX));
    assert!(took < UP_BOUND, "lab up took {took:?}");
    eprintln!("example lab up in {took:?}");
    let cp = &st["control_plane"];
    assert_eq!(cp["ready"], true, "{st:#}");
    assert_eq!(cp["connected_proxies"], 7, "{st:#}");
    for (p, id) in [
        (
            "ingress",
            "spiffe://cluster.local/ns/mesh-system/sa/ingress",
        ),
        ("frontend", "spiffe://cluster.local/ns/shop/sa/frontend"),
        ("api", "spiffe://cluster.local/ns/shop/sa/api"),
        ("api-flaky", "spiffe://cluster.local/ns/shop/sa/api"),
        ("api-canary", "spiffe://cluster.local/ns/shop/sa/api"),
        ("db", "spiffe://cluster.local/ns/shop/sa/db"),
        ("intruder", "spiffe://cluster.local/ns/guest/sa/intruder"),
    ] {
        let p = pod(&st, p);
        assert_eq!(p["ready"], true, "{p:#}");
        assert_eq!(p["identity"], id);
        assert!(p["cert_seconds_left"].as_i64().unwrap_or(0) > 3000, "{p:#}");
    }
    assert_eq!(pod(&st, "legacy")["sidecar"], false);

    // The traffic loops run every 2 s: each kind of flow shows up soon.
    wait_for("allowed and denied flows", Duration::from_secs(20), || {
        let st = status(name);
        let (api, db) = (pod(&st, "api"), pod(&st, "db"));
        let seen = api["traffic"]["inbound_mtls"].as_u64() > Some(0)
            && db["traffic"]["allowed"].as_u64() > Some(0)
            // frontend -> db: only api pods may connect (NetworkPolicy).
            && denied_by(db, "NetworkPolicy shop/db") > 0
            // intruder -> api: no ALLOW rule for guest/intruder.
            && denied_by(api, "default deny") > 0
            // legacy (plaintext) -> db: STRICT.
            && denied_by(db, "PeerAuthentication mesh-system/default") > 0
            // frontend -> api /products/search beyond 1/s: 429
            // (traffic.yaml), at whichever api endpoint took it.
            && ["api", "api-flaky", "api-canary"]
                .iter()
                .map(|p| pod(&st, p)["traffic"]["rate_limited"].as_u64().unwrap_or(0))
                .sum::<u64>()
                > 0
            // Out of the mesh (egress.yaml): the partner allowed, the
            // exfiltration target refused.
            && egress(pod(&st, "frontend"), "api.partner.example", "allow") > 0
            && egress(pod(&st, "intruder"), "exfil.example", "deny") > 0;
        seen.then_some(())
    });
    // The README's edge check: HTTPS from the host through the ingress.
    let ca = format!("/run/palisade-lab/{name}/ingress-ca.pem");
    let edge = wait_for(
        "the shop through the ingress",
        Duration::from_secs(10),
        || {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "5", "--cacert", &ca])
                .args(["--resolve", "shop.example:443:10.250.0.5"])
                .args(["-w", "\n%{http_code}", "https://shop.example/"])
                .output()
                .ok()?;
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            body.ends_with("\n200").then_some(body)
        },
    );
    assert!(edge.contains("frontend received"), "{edge}");
    let table = meshctl(&["lab", "status", "--name", name]);
    let table = text(&table);
    assert!(
        table.contains("edge traffic") && table.contains("ingress: "),
        "{table}"
    );
    assert!(table.contains("denied connections and requests"), "{table}");
    assert!(table.contains("intruder"), "{table}");
    assert!(table.contains("RETRY") && table.contains("429"), "{table}");

    let out = lab_sh(name, &["down"]);
    assert!(out.status.success(), "scripts/lab.sh down: {}", text(&out));
    let left = leftovers(name);
    assert!(left.is_empty(), "lab down left: {left:#?}");
}

#[test]
fn down_cleans_up_after_a_crash_and_up_refuses_collisions() {
    if !available("down_cleans_up_after_a_crash_and_up_refuses_collisions") {
        return;
    }
    let mut lab = LabSpec::new(2)
        .pod(Pod::new("server", "default", 10).echo(&[8080]))
        .pod(Pod::new("legacy", "default", 11).no_sidecar())
        .up();
    let admin = lab.admin("server");

    // A second lab of the same name is refused, and the first one stays.
    let (out, _) = lab_up(lab.dir.path(), &lab.name);
    assert!(!out.status.success());
    assert!(text(&out).contains("already up"), "{}", text(&out));
    // So is a lab whose network overlaps a running one.
    let other = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        other.path().join("lab.yaml"),
        "network: 10.250.2.0/25\npods: [{name: a, ip: 10.250.2.50}]\n",
    )
    .expect("write lab.yaml");
    let (out, _) = lab_up(other.path(), "plt3");
    assert!(!out.status.success());
    assert!(text(&out).contains("overlaps"), "{}", text(&out));
    let left = leftovers("plt3");
    assert!(left.is_empty(), "a refused lab left: {left:#?}");
    assert!(matches!(http_get(admin, "/ready"), Ok((200, _))));

    // A crash that lost the state: processes, namespaces and links remain.
    std::fs::remove_dir_all(lab.state_dir()).expect("remove state");
    assert!(!leftovers(&lab.name).is_empty());
    let out = meshctl(&["lab", "down", "--name", &lab.name]);
    assert!(out.status.success(), "{}", text(&out));
    let left = leftovers(&lab.name);
    assert!(left.is_empty(), "lab down left: {left:#?}");
    // (No request to the pod's address now: with the bridge gone it would
    // follow the host's default route off the machine.)

    // Down is idempotent.
    let out = meshctl(&["lab", "down", "--name", &lab.name]);
    assert!(out.status.success());
    assert!(text(&out).contains("nothing to remove"), "{}", text(&out));
    lab.down();
}
