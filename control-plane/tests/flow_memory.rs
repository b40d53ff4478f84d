//! What the flow store costs: 10,000 active flows (distinct sources, the
//! policies and destinations of a real mesh) measured with a counting
//! allocator, against the bar of 20 MB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use mesh_control_plane::flows::{FlowStore, Reported};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn ten_thousand_active_flows_fit_in_20_mb() {
    let sources: Vec<String> = (0..2_500)
        .map(|i| format!("spiffe://cluster.local/ns/team-{}/sa/workload-{i}", i % 40))
        .collect();
    let destinations: Vec<String> = (0..50)
        .map(|i| format!("spiffe://cluster.local/ns/team-{}/sa/service-{i}", i % 40))
        .collect();
    let policies = [
        "default deny",
        "AuthorizationPolicy team-1/allow-frontend rule 0",
    ];
    let store = FlowStore::new();
    let before = LIVE.load(Ordering::Relaxed);
    let now = 1_900_000_000;
    let mut n = 0;
    for (i, s) in sources.iter().enumerate() {
        for k in 0..4 {
            let reported = [Reported {
                source: s,
                port: 8080,
                decision: if k % 2 == 0 { "allow" } else { "deny" },
                policy: policies[k % 2],
                count: 3,
            }];
            store.ingest(
                &destinations[(i + k) % destinations.len()],
                &reported,
                0,
                now + (k as u64),
            );
            n += 1;
        }
    }
    assert_eq!(store.len(), n);
    assert_eq!(n, 10_000);
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    eprintln!("10,000 flows: {bytes} bytes ({} per flow)", bytes / 10_000);
    assert!(bytes < 20 << 20, "{bytes} bytes");
}
