//! Graceful shutdown: stop accepting, let open connections finish, give up at
//! a deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// Tracks open connections and tells listeners when to stop accepting.
#[derive(Clone)]
pub struct Drain {
    stop: watch::Receiver<bool>,
    open: Arc<Open>,
}

struct Open {
    count: AtomicUsize,
    idle: Notify,
    /// Most connections open at once (`--max-connections`).
    max: usize,
}

/// Held by each open connection; dropping it marks the connection closed.
pub struct ConnGuard {
    open: Arc<Open>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.open.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.open.idle.notify_waiters();
        }
    }
}

/// Starts a drain: the sender side.
pub struct Trigger {
    stop: watch::Sender<bool>,
    open: Arc<Open>,
}

pub fn new() -> (Trigger, Drain) {
    with_cap(usize::MAX)
}

/// A drain that admits at most `max` open connections at once.
pub fn with_cap(max: usize) -> (Trigger, Drain) {
    let (tx, rx) = watch::channel(false);
    let open = Arc::new(Open {
        count: AtomicUsize::new(0),
        idle: Notify::new(),
        max,
    });
    (
        Trigger {
            stop: tx,
            open: open.clone(),
        },
        Drain { stop: rx, open },
    )
}

impl Drain {
    /// Resolves when the proxy starts draining.
    pub async fn signaled(&self) {
        let mut rx = self.stop.clone();
        mesh_admin::stopped(&mut rx).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.stop.borrow()
    }

    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.stop.clone()
    }

    /// Registers an open connection if fewer than the cap are open.
    pub fn try_track(&self) -> Option<ConnGuard> {
        let before = self.open.count.fetch_add(1, Ordering::AcqRel);
        let guard = ConnGuard {
            open: self.open.clone(),
        };
        if before >= self.open.max {
            // Dropping the guard takes the count back.
            drop(guard);
            return None;
        }
        Some(guard)
    }

    /// Registers an open connection.
    pub fn track(&self) -> ConnGuard {
        self.open.count.fetch_add(1, Ordering::AcqRel);
        ConnGuard {
            open: self.open.clone(),
        }
    }
}

impl Trigger {
    /// Stops accepting, waits for open connections up to `deadline`, and
    /// returns how many were still open.
    pub async fn drain(self, deadline: Duration) -> usize {
        let _ = self.stop.send(true);
        let wait = async {
            loop {
                let notified = self.open.idle.notified();
                if self.open.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait).await;
        self.open.count.load(Ordering::Acquire)
    }
}
