//! Full-duplex relaying between two streams, with half-close and an idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Each direction reads into a small buffer while traffic is light, so an
/// idle connection holds about a kilobyte of relay memory ...
const IDLE_BUFFER_SIZE: usize = 512;
/// ... and switches to one TLS record's worth of plaintext while data keeps
/// coming, returning to the small one when the stream goes quiet.
const BUSY_BUFFER_SIZE: usize = 16 * 1024;

/// Relays bytes both ways until both directions end. When one side finishes
/// sending, the other side's write half is shut down (half-close) and the
/// other direction keeps going. Closes both when neither side has moved a
/// byte for `idle`. Returns bytes copied (a→b, b→a).
pub async fn relay<A, B>(a: A, b: B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Activity {
        inner: a,
        start,
        last: last.clone(),
    };
    let mut b = Activity {
        inner: b,
        start,
        last: last.clone(),
    };
    let mut ab = Direction::new();
    let mut ba = Direction::new();
    let copy = std::future::poll_fn(|cx| {
        let r1 = ab.poll_copy(cx, &mut a, &mut b)?;
        let r2 = ba.poll_copy(cx, &mut b, &mut a)?;
        match (r1, r2) {
            (Poll::Ready(x), Poll::Ready(y)) => Poll::Ready(Ok::<_, io::Error>((x, y))),
            _ => Poll::Pending,
        }
    });
    tokio::pin!(copy);
    loop {
        let deadline = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            r = &mut copy => return r,
            _ = tokio::time::sleep_until(deadline) => {
                let now_ms = elapsed_ms(start);
                if now_ms >= last.load(Ordering::Relaxed) + idle.as_millis() as u64 {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                }
            }
        }
    }
}

/// One direction of a relay: read, write everything read, repeat; at EOF,
/// shut down the writer.
struct Direction {
    buf: Vec<u8>,
    /// `buf[pos..filled]` is read but not yet written.
    pos: usize,
    filled: usize,
    eof: bool,
    done: bool,
    need_flush: bool,
    copied: u64,
}

impl Direction {
    fn new() -> Self {
        Self {
            buf: vec![0; IDLE_BUFFER_SIZE],
            pos: 0,
            filled: 0,
            eof: false,
            done: false,
            need_flush: false,
            copied: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(self.copied));
        }
        loop {
            while self.pos < self.filled {
                let n = match Pin::new(&mut *w).poll_write(cx, &self.buf[self.pos..self.filled]) {
                    Poll::Ready(r) => r?,
                    Poll::Pending => return Poll::Pending,
                };
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.copied += n as u64;
                self.need_flush = true;
            }
            if self.eof {
                match Pin::new(&mut *w).poll_shutdown(cx) {
                    Poll::Ready(r) => r?,
                    Poll::Pending => return Poll::Pending,
                }
                self.done = true;
                return Poll::Ready(Ok(self.copied));
            }
            let was_full = self.filled == self.buf.len() && self.filled > 0;
            self.pos = 0;
            self.filled = 0;
            if was_full && self.buf.len() < BUSY_BUFFER_SIZE {
                self.buf = vec![0; BUSY_BUFFER_SIZE];
            }
            let mut rb = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        self.eof = true;
                    }
                    self.filled = n;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if self.need_flush {
                        match Pin::new(&mut *w).poll_flush(cx) {
                            Poll::Ready(r) => r?,
                            Poll::Pending => return Poll::Pending,
                        }
                        self.need_flush = false;
                    }
                    if self.buf.len() > IDLE_BUFFER_SIZE {
                        // Quiet again: give the big buffer back.
                        self.buf = vec![0; IDLE_BUFFER_SIZE];
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// Records the time of the last byte moved through a stream.
struct Activity<S> {
    inner: S,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<S> Activity<S> {
    fn touch(&self) {
        self.last.store(elapsed_ms(self.start), Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Activity<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "relay/tests.rs"]
mod tests;
