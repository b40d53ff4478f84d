//! A stream whose incoming bytes are shown to an inspector as they are
//! read, below the protocol library that parses them: the HTTP/2 flood
//! guard and the HTTP/1.1 framing scanner are inspectors. Writes pass
//! through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Sees every chunk a client sends.
pub trait Inspector {
    fn inspect(&mut self, bytes: &[u8]);

    /// While true, nothing more is read from the client (the connection is
    /// being closed for what was seen).
    fn stop_reading(&self) -> bool {
        false
    }
}

/// `inner`, with what is read from it shown to `inspector`.
pub struct Inspected<S, I> {
    inner: S,
    inspector: I,
}

impl<S, I> Inspected<S, I> {
    pub fn new(inner: S, inspector: I) -> Self {
        Self { inner, inspector }
    }
}

impl<S: AsyncRead + Unpin, I: Inspector + Unpin> AsyncRead for Inspected<S, I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.inspector.stop_reading() {
            // Not woken again: the server closes the connection itself.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            this.inspector.inspect(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin, I: Unpin> AsyncWrite for Inspected<S, I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
