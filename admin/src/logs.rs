//! Log output off the request path: formatted lines are appended to a
//! buffer, and a background thread writes them to stderr in batches — one
//! `write(2)` per batch window instead of one per line, so a proxy's access
//! log does not cost each request a system call. An idle process has no
//! wake-ups: the writer sleeps until a line arrives.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long lines gather before they are written.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Most bytes held while stderr is slow; lines beyond it are dropped and
/// counted, so a blocked log reader cannot grow the process without bound.
const MAX_BUFFERED: usize = 4 << 20;

struct Shared {
    buf: Mutex<Vec<u8>>,
    ready: Condvar,
    dropped: AtomicU64,
}

static SHARED: Shared = Shared {
    buf: Mutex::new(Vec::new()),
    ready: Condvar::new(),
    dropped: AtomicU64::new(0),
};

fn lock() -> MutexGuard<'static, Vec<u8>> {
    // A panic while holding the lock leaves bytes, not broken invariants.
    SHARED.buf.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends to the batch; wakes the writer when the batch was empty.
pub(crate) struct BatchWriter;

impl Write for BatchWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buf = lock();
        if buf.len() + bytes.len() > MAX_BUFFERED {
            SHARED.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(bytes.len());
        }
        let was_empty = buf.is_empty();
        buf.extend_from_slice(bytes);
        drop(buf);
        if was_empty {
            SHARED.ready.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes what is buffered now, and a note of lines dropped since the last
/// note. `spare` keeps its capacity between batches.
fn write_out(spare: &mut Vec<u8>) {
    // stderr is locked before the batch is taken, so the writer thread and
    // a final flush cannot write two batches out of order.
    let mut err = std::io::stderr().lock();
    std::mem::swap(&mut *lock(), spare);
    let dropped = SHARED.dropped.swap(0, Ordering::Relaxed);
    let _ = err.write_all(spare);
    if dropped > 0 {
        let _ = writeln!(
            err,
            "{dropped} log lines dropped: stderr was not read fast enough"
        );
    }
    let _ = err.flush();
    spare.clear();
}

/// Starts the writer thread (once per process).
pub(crate) fn start() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .stack_size(64 * 1024)
            .spawn(|| {
                let mut spare = Vec::new();
                loop {
                    let buf = lock();
                    let buf = SHARED
                        .ready
                        .wait_while(buf, |b| b.is_empty())
                        .unwrap_or_else(|p| p.into_inner());
                    drop(buf);
                    std::thread::sleep(BATCH_WINDOW);
                    write_out(&mut spare);
                }
            });
        if let Err(e) = spawned {
            // Without the thread nothing would be written: say so where it
            // can be seen; `LogGuard::flush` still writes at exit.
            eprintln!("cannot start the log writer thread: {e}; logs are written at exit only");
        }
    });
}

/// Returned by [`crate::init_tracing`]: writes what is still buffered when
/// dropped (or on [`LogGuard::flush`]), so nothing logged before a normal
/// exit is lost. Keep it alive for the whole of `main`.
#[must_use = "dropping the guard early is harmless, but keep it for the final flush"]
pub struct LogGuard(());

impl LogGuard {
    pub(crate) fn new() -> Self {
        LogGuard(())
    }

    /// Writes every buffered line now (e.g. before printing a final error).
    pub fn flush(&self) {
        write_out(&mut Vec::new());
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_kept_in_order_and_bounded() {
        // Not started: the test drives the buffer directly.
        let mut w = BatchWriter;
        w.write_all(b"one\n").unwrap();
        w.write_all(b"two\n").unwrap();
        assert!(lock().ends_with(b"one\ntwo\n"));
        let big = vec![b'x'; MAX_BUFFERED];
        w.write_all(&big).unwrap();
        assert!(lock().len() <= MAX_BUFFERED, "the buffer must stay bounded");
        assert!(SHARED.dropped.load(Ordering::Relaxed) >= 1);
        lock().clear();
        SHARED.dropped.store(0, Ordering::Relaxed);
    }
}
