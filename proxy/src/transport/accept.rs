//! The accept loop, written once for every listener: each connection runs in
//! its own task (a slow or hostile client never delays others) and is tracked
//! by the drain, and the loop stops when draining starts.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::drain::Drain;

/// The listen backlog of every data listener (the kernel caps it at
/// `net.core.somaxconn`). At the usual 128 a burst of new connections
/// overflows the queue and the clients' SYNs are dropped: each then waits a
/// whole second to retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a data listener with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    reserve(addr)?.listen()
}

/// A port bound but not listening yet: a port conflict shows at startup,
/// while connections to it are refused (not queued unanswered) until the
/// proxy holds a certificate and policy and [`Reserved::listen`]s.
pub struct Reserved(tokio::net::TcpSocket);

pub fn reserve(addr: SocketAddr) -> std::io::Result<Reserved> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(Reserved(socket))
}

impl Reserved {
    pub fn listen(self) -> std::io::Result<TcpListener> {
        self.0.listen(LISTEN_BACKLOG)
    }
}

/// After a failed accept (out of file descriptors, most often), wait this
/// long before the next: retrying at once would spin on the same error.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Logs a refusal over the connection cap at most once a second per process.
fn refused_log(side: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!(side, "connection refused: --max-connections are open");
    }
}

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
        let Some(guard) = drain.try_track() else {
            // Over --max-connections: closed at once, before any byte is read.
            metrics::counter!("mesh_tcp_connection_errors_total", "direction" => side, "reason" => "max_connections").increment(1);
            refused_log(side);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let fut = handle(tcp, peer);
        tokio::spawn(async move {
            fut.await;
            drop(guard);
        });
    }
}
