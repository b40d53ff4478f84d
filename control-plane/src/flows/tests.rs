use super::*;

fn flow<'a>(source: &'a str, decision: &'static str, count: u64) -> Reported<'a> {
    Reported {
        source,
        port: 8080,
        decision,
        policy: "default deny",
        count,
    }
}

const API: &str = "spiffe://cluster.local/ns/shop/sa/api";
const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

#[test]
fn reports_add_up_by_flow_and_rates_cover_the_window() {
    let store = FlowStore::default();
    let t = 1_000_000;
    store.ingest(API, &[flow(WEB, "allow", 5), flow(WEB, "deny", 2)], 0, t);
    store.ingest(API, &[flow(WEB, "allow", 5)], 0, t + 1);
    let v = store.view(t + 1, |_| (vec!["api-0".into()], None));
    assert_eq!(v.len(), 2);
    let allow = v.iter().find(|f| f.decision == "allow").unwrap();
    assert_eq!(
        (allow.total, allow.first_seen, allow.last_seen),
        (10, t, t + 1)
    );
    assert_eq!(allow.rate, 1.0);
    assert_eq!(allow.destination_workloads, ["api-0"]);
    assert_eq!(store.source_within(WEB, "deny", t + 1, 10), 2);
    // Counts leave the window as time passes; the total stays.
    store.ingest(API, &[flow(WEB, "deny", 1)], 0, t + 30);
    assert_eq!(store.source_within(WEB, "deny", t + 30, 10), 1);
    assert_eq!(store.source_within(WEB, "deny", t + 30, 60), 3);
    assert!(store.seen_before(WEB, API, t + 1));
    assert!(!store.seen_before(WEB, API, t));
    // A flow unseen for the TTL is gone.
    let later = t + 30 + FLOW_TTL.as_secs();
    assert!(store.view(later, |_| (vec![], None)).is_empty());
}

// Bounded: a flood of distinct sources never holds more than MAX_FLOWS,
// the most recent are kept, and 10,000 active flows stay small.
#[test]
fn the_store_is_bounded_and_keeps_the_newest() {
    let store = FlowStore::default();
    let t = 2_000_000;
    let sources: Vec<String> = (0..MAX_FLOWS + 100)
        .map(|i| format!("10.1.{}.{}", i / 256, i % 256))
        .collect();
    for (i, s) in sources.iter().enumerate() {
        store.ingest(API, &[flow(s, "deny", 1)], 0, t + (i as u64) / 1000);
    }
    assert!(store.len() <= MAX_FLOWS, "{}", store.len());
    let newest = sources.last().unwrap();
    assert!(store.source_within(newest, "deny", t + 60, 60) == 1);
}
