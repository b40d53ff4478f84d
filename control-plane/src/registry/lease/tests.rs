//! Lease files between replicas, on a real directory.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::registry::{DEFAULT_INBOUND_PORT, Registry};

fn api(ip: &str) -> Workload {
    Workload {
        identity: "spiffe://cluster.local/ns/shop/sa/api".into(),
        namespace: "shop".into(),
        workload: "api-1".into(),
        labels: [("app".to_owned(), "api".to_owned())].into(),
        ips: vec![ip.into()],
        ports: vec![8080],
        inbound_port: DEFAULT_INBOUND_PORT,
    }
}

fn lease_file(dir: &Path, name: &str, expires_at_ms: u64, w: &Workload) {
    let text =
        serde_json::json!({"replica": "gone", "expires_at_ms": expires_at_ms, "workload": w});
    std::fs::write(dir.join(DIR).join(name), text.to_string()).unwrap();
}

#[test]
fn a_replica_reads_the_others_leases_not_its_own() {
    let data = tempfile::tempdir().unwrap();
    let a = Leases::open(data.path(), DEFAULT_LEASE_TTL).unwrap();
    let b = Leases::open(data.path(), DEFAULT_LEASE_TTL).unwrap();
    a.write(1, &api("10.0.0.1")).unwrap();
    assert_eq!(b.peers(), [api("10.0.0.1")]);
    assert!(
        a.peers().is_empty(),
        "a replica's own proxies are not peers"
    );
    // Renewed in place (renamed over), still one lease.
    a.write(1, &api("10.0.0.1")).unwrap();
    assert_eq!(b.peers().len(), 1);
    a.remove(1);
    assert!(b.peers().is_empty());
    // A replica that stops cleanly takes its leases with it.
    a.write(2, &api("10.0.0.2")).unwrap();
    drop(a);
    assert!(b.peers().is_empty());
}

#[test]
fn expired_leases_are_ignored_then_cleared() {
    let data = tempfile::tempdir().unwrap();
    let b = Leases::open(data.path(), Duration::from_secs(2)).unwrap();
    let now = unix_ms(SystemTime::now());
    lease_file(data.path(), "dead-1.lease", now - 500, &api("10.0.0.1"));
    lease_file(data.path(), "dead-2.lease", now - 60_000, &api("10.0.0.2"));
    lease_file(data.path(), "live-1.lease", now + 60_000, &api("10.0.0.3"));
    assert_eq!(b.peers(), [api("10.0.0.3")]);
    // Expired longer than a lease ago: removed by whoever reads it.
    assert!(data.path().join(DIR).join("dead-1.lease").exists());
    assert!(!data.path().join(DIR).join("dead-2.lease").exists());
}

#[test]
fn a_file_that_is_not_a_lease_is_skipped_never_trusted() {
    let data = tempfile::tempdir().unwrap();
    let b = Leases::open(data.path(), DEFAULT_LEASE_TTL).unwrap();
    let dir = data.path().join(DIR);
    let far = unix_ms(SystemTime::now()) + 60_000;
    std::fs::write(dir.join("torn.lease"), b"{\"replica\": \"x\", \"expi").unwrap();
    std::fs::write(dir.join("binary.lease"), [0xff, 0x00, 0xfe]).unwrap();
    std::fs::write(dir.join("huge.lease"), vec![b' '; 200_000]).unwrap();
    let mut bad_id = api("10.0.0.4");
    bad_id.identity = "spiffe://cluster.local/ns/../sa/x".into();
    lease_file(data.path(), "bad-id.lease", far, &bad_id);
    lease_file(data.path(), "bad-ip.lease", far, &api("not-an-ip"));
    // Being written: not a lease yet.
    std::fs::write(dir.join(".x-1.tmp"), b"{").unwrap();
    lease_file(data.path(), "good.lease", far, &api("10.0.0.5"));
    assert_eq!(b.peers(), [api("10.0.0.5")]);
    // One warning per bad file, not one per scan.
    assert_eq!(b.warned.lock().unwrap().len(), 5);
    b.peers();
    assert_eq!(b.warned.lock().unwrap().len(), 5);
}

#[test]
fn a_directory_others_may_write_is_refused() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir(data.path().join(DIR)).unwrap();
    std::fs::set_permissions(
        data.path().join(DIR),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let e = Leases::open(data.path(), DEFAULT_LEASE_TTL)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("writable by group or others"), "{e}");
}

async fn until_peers(registry: &Registry, n: usize) {
    let mut changes = registry.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while registry.peers().len() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "peers {:?}, expected {n}",
            registry.peers()
        );
        let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
    }
}

#[tokio::test]
async fn two_registries_on_one_directory_agree() {
    let data = tempfile::tempdir().unwrap();
    let lease = Duration::from_secs(1);
    let first = Registry::shared(Leases::open(data.path(), lease).unwrap());
    let second = Registry::shared(Leases::open(data.path(), lease).unwrap());
    let tasks = [
        tokio::spawn(first.clone().follow_leases()),
        tokio::spawn(second.clone().follow_leases()),
    ];
    let guard = first.register(api("10.0.0.1")).unwrap();
    until_peers(&second, 1).await;
    assert_eq!(second.mesh(), [api("10.0.0.1")]);
    assert!(second.workloads().is_empty(), "not connected to the second");
    // Connected to both at once (it moved): listed once.
    let moved = second.register(api("10.0.0.1")).unwrap();
    assert_eq!(second.mesh().len(), 1);
    drop(moved);
    // Still there two lease times later: renewed while the proxy stays
    // (time passing is the point here, not a wait for a condition).
    tokio::time::sleep(lease * 2).await;
    assert_eq!(second.peers().len(), 1, "the lease was renewed");
    drop(guard);
    until_peers(&second, 0).await;
    for t in tasks {
        t.abort();
    }
}
