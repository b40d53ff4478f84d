//! The accept loop, written once for every listener: each connection runs in
//! its own task (a slow or hostile client never delays others) and is tracked
//! by the drain, and the loop stops when draining starts.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::drain::Drain;

/// After a failed accept (out of file descriptors, most often), wait this
/// long before the next: retrying at once would spin on the same error.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts on `listener` until draining starts, running `handle` for each
/// connection in a task of its own.
pub async fn serve<F, Fut>(listener: TcpListener, drain: Drain, side: &'static str, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(side, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            _ = drain.signaled() => return,
        };
        let _ = tcp.set_nodelay(true);
        let guard = drain.track();
        let fut = handle(tcp, peer);
        tokio::spawn(async move {
            fut.await;
            drop(guard);
        });
    }
}
