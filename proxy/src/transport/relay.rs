//! Full-duplex relaying between two streams, with half-close and an idle timeout.
//!
//! Each direction reads into a scratch buffer shared by every relay on the
//! worker thread and writes straight from it. Only bytes the writer could not
//! take at once are copied into the connection's own buffer, which is given
//! back as soon as the reader goes quiet: an idle connection holds no relay
//! buffer at all, and a busy one costs one read and one write per chunk.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// One TLS record's worth of plaintext: the most one read moves.
const CHUNK_SIZE: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; CHUNK_SIZE]);
}

/// Relays bytes both ways until both directions end. When one side finishes
/// sending, the other side's write half is shut down (half-close) and the
/// other direction keeps going. Closes both when neither side has moved a
/// byte for `idle`. Returns bytes copied (a→b, b→a).
pub async fn relay<A, B>(mut a: A, mut b: B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let mut last_active = start;
    let mut ab = Direction::default();
    let mut ba = Direction::default();
    let timer = tokio::time::sleep_until(start + idle);
    tokio::pin!(timer);
    std::future::poll_fn(|cx| {
        let r1 = ab.poll_copy(cx, &mut a, &mut b)?;
        let r2 = ba.poll_copy(cx, &mut b, &mut a)?;
        if let (Poll::Ready(x), Poll::Ready(y)) = (r1, r2) {
            return Poll::Ready(Ok((x, y)));
        }
        if std::mem::take(&mut ab.moved) | std::mem::take(&mut ba.moved) {
            last_active = Instant::now();
        }
        // The timer is set for the first idle deadline and, when it fires
        // early because bytes moved since, pushed to the current one.
        while timer.as_mut().poll(cx).is_ready() {
            let deadline = last_active + idle;
            if Instant::now() >= deadline {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")));
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// What one read-and-write step through the scratch buffer did.
enum Step {
    /// Read and wrote everything.
    Copied,
    /// Read, but the writer took only part; the rest is saved.
    Blocked,
    /// The reader has nothing now.
    Quiet,
    Eof,
}

/// One direction of a relay: read, write everything read, repeat; at EOF,
/// shut down the writer.
#[derive(Default)]
struct Direction {
    /// `pending[pos..]` was read but the writer has not taken it yet.
    pending: Vec<u8>,
    pos: usize,
    eof: bool,
    done: bool,
    need_flush: bool,
    copied: u64,
    /// Bytes were read since the relay last looked.
    moved: bool,
}

impl Direction {
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
            while self.pos < self.pending.len() {
                let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.pending[self.pos..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.copied += n as u64;
                self.need_flush = true;
            }
            self.pending.clear();
            self.pos = 0;
            if self.eof {
                ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
                self.done = true;
                self.pending = Vec::new();
                return Poll::Ready(Ok(self.copied));
            }
            match SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => self.step(cx, r, w, &mut scratch),
                // Not reached (a relay does not poll another relay), but a
                // buffer of its own is correct too.
                Err(_) => self.step(cx, r, w, &mut vec![0; CHUNK_SIZE]),
            })? {
                Step::Copied => {}
                Step::Blocked => return Poll::Pending,
                Step::Eof => self.eof = true,
                Step::Quiet => {
                    if self.need_flush {
                        ready!(Pin::new(&mut *w).poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    // Quiet: give back what a busy stretch needed.
                    self.pending = Vec::new();
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads once into `scratch` and writes what was read; keeps what the
    /// writer does not take in `pending`.
    fn step<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        scratch: &mut [u8],
    ) -> io::Result<Step>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut rb = ReadBuf::new(scratch);
        match Pin::new(&mut *r).poll_read(cx, &mut rb) {
            Poll::Pending => return Ok(Step::Quiet),
            Poll::Ready(r) => r?,
        }
        let n = rb.filled().len();
        if n == 0 {
            return Ok(Step::Eof);
        }
        self.moved = true;
        let mut off = 0;
        while off < n {
            match Pin::new(&mut *w).poll_write(cx, &scratch[off..n]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(k)) => {
                    off += k;
                    self.copied += k as u64;
                    self.need_flush = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {
                    self.pending.extend_from_slice(&scratch[off..n]);
                    self.pos = 0;
                    return Ok(Step::Blocked);
                }
            }
        }
        Ok(Step::Copied)
    }
}

#[cfg(test)]
mod tests;
