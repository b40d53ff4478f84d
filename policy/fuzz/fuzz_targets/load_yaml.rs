//! The YAML loader never panics; whatever loads also compiles, round-trips
//! through JSON, and can be evaluated.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use mesh_policy::{Evaluator, Labels, Peer, Request, Snapshot, Workload, parse_yaml};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = parse_yaml("fuzz.yaml", text) else {
        return;
    };
    let snapshot = loaded.snapshot;
    let evaluator = match Evaluator::compile(&snapshot, "cluster.local") {
        Ok(e) => e,
        Err(e) => panic!("loaded but does not compile: {e}"),
    };
    let back = Snapshot::from_json(&snapshot.to_json());
    assert_eq!(back.as_ref().ok(), Some(&snapshot), "JSON round trip");

    let labels: Labels = [("app".to_owned(), "api".to_owned())].into();
    for peer in [
        Peer::Plaintext,
        Peer::Mtls {
            principal: "spiffe://cluster.local/ns/default/sa/web",
        },
    ] {
        let request = Request {
            peer,
            source_ip: "10.0.0.1".parse().ok(),
            source: Some(Workload {
                namespace: "default",
                labels: &labels,
            }),
            destination: Some(Workload {
                namespace: "default",
                labels: &labels,
            }),
            destination_ip: "10.0.0.2".parse().ok(),
            destination_port: 8080,
            http: None,
            now: SystemTime::UNIX_EPOCH,
        };
        let _ = evaluator.check(&request);
        let _ = snapshot.for_workload("default", &labels);
    }
});
