//! A body that reports how it ended: bytes moved, the gRPC status from its
//! trailers, and whether it failed. The access log line, the request metrics
//! and the pool's in-flight count are taken when a response body ends, so
//! streaming responses are measured whole.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// How a body ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct End {
    pub bytes: u64,
    /// `grpc-status` from the trailers, if there were any.
    pub grpc_status: Option<u16>,
    /// The body failed (a reset, a malformed chunk) or was dropped unread.
    pub failed: bool,
    /// The body itself failed: its sender broke the framing or reset it.
    pub errored: bool,
}

type OnEnd = Box<dyn FnOnce(End) + Send + Sync>;

/// `inner`, observed; `on_end` runs once, when the body ends or is dropped.
pub struct Observed<B: HttpBody> {
    inner: B,
    end: End,
    on_end: Option<OnEnd>,
}

impl<B: HttpBody> Observed<B> {
    pub fn new(inner: B, on_end: impl FnOnce(End) + Send + Sync + 'static) -> Self {
        Self {
            inner,
            end: End::default(),
            on_end: Some(Box::new(on_end)),
        }
    }

    fn finish(&mut self, failed: bool) {
        if let Some(f) = self.on_end.take() {
            self.end.failed = failed;
            f(self.end);
        }
    }
}

/// The `grpc-status` of a header or trailer map.
pub fn grpc_status(h: &http::HeaderMap) -> Option<u16> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

impl<B> HttpBody for Observed<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.end.bytes += d.len() as u64;
                } else if let Some(t) = frame.trailers_ref() {
                    this.end.grpc_status = grpc_status(t);
                }
                if this.inner.is_end_stream() {
                    this.finish(false);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.end.errored = true;
                this.finish(true);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(false);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: HttpBody> Drop for Observed<B> {
    fn drop(&mut self) {
        // Dropped before its end: the client or the peer went away. A body
        // that was empty from the start (a 204, a HEAD, a bodiless GET) is
        // never polled, and it ended well.
        let ended = self.inner.is_end_stream();
        self.finish(!ended);
    }
}

/// A limit on a request body's length, for a body that announced none
/// (chunked, or HTTP/2 without `content-length`).
#[derive(Debug)]
pub struct Cap {
    max: u64,
    hit: tokio::sync::Notify,
}

impl Cap {
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(Self {
            max,
            hit: tokio::sync::Notify::new(),
        })
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Resolves once the body has gone past the limit (also when that
    /// happened before the call).
    pub async fn exceeded(&self) {
        self.hit.notified().await
    }
}

/// `inner` until it passes its cap; from then on it yields nothing more
/// and never ends, so no truncated body reaches the backend as if it were
/// whole: the request's owner, told by `Cap::exceeded`, drops it (the
/// backend's stream is reset) and answers 413.
pub struct Capped<B> {
    inner: B,
    seen: u64,
    over: bool,
    cap: Arc<Cap>,
}

impl<B> Capped<B> {
    pub fn new(inner: B, cap: Arc<Cap>) -> Self {
        Self {
            inner,
            seen: 0,
            over: false,
            cap,
        }
    }
}

impl<B> HttpBody for Capped<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.over {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(d) = frame.data_ref()
        {
            this.seen += d.len() as u64;
            if this.seen > this.cap.max {
                this.over = true;
                this.cap.hit.notify_one();
                return Poll::Pending;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        !self.over && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn reports_bytes_and_grpc_trailers_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "5".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello"))),
            Ok(Frame::data(Bytes::from_static(b" world"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let observed = Observed::new(body, move |e| s.lock().unwrap().push(e));
        let collected = observed.collect().await.unwrap();
        assert_eq!(collected.to_bytes(), "hello world");
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].bytes, seen[0].grpc_status, seen[0].failed),
            (11, Some(5), false)
        );
    }

    #[tokio::test]
    async fn an_empty_body_ends_well_unpolled() {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        drop(Observed::new(
            http_body_util::Empty::<Bytes>::new(),
            move |e| *s.lock().unwrap() = Some(e.failed),
        ));
        assert_eq!(*seen.lock().unwrap(), Some(false));
    }

    #[tokio::test]
    async fn dropped_unread_counts_as_failed() {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        drop(Observed::new(
            Full::new(Bytes::from_static(b"x")),
            move |e| *s.lock().unwrap() = Some(e.failed),
        ));
        assert_eq!(*seen.lock().unwrap(), Some(true));
    }
}
