//! The end-to-end harness: runs the real `mesh-control-plane` and `mesh-proxy`
//! binaries as processes on loopback, with real sockets and TLS, and gives
//! tests small tools around them (echo app, recording relay, admin client).
//!
//! The binaries must be built first (`cargo build --workspace --bins`;
//! `scripts/test.sh` does it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod grpc;
pub mod http_app;
pub mod net;
pub mod netns;
pub mod process;
pub mod tls;

pub use net::*;
pub use process::*;

use std::time::{Duration, Instant};

/// Waits until `f` returns `Some`, polling every 20 ms, or panics with `what`
/// at the deadline.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A random hex string, for payload markers and names.
pub fn random_hex(bytes: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A two-thread tokio runtime for tests that run an async app or client
/// beside the processes they start.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
