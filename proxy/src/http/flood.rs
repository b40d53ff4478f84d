//! Per-second limits on the HTTP/2 control frames a client can make a
//! server answer or track: RST_STREAM (rapid reset, CVE-2023-44487), PING
//! and SETTINGS. The guard reads the frame headers of the bytes a client
//! sends, below the HTTP/2 library; when a client passes a limit the
//! connection gets GOAWAY and nothing more of it is read. Other connections
//! are not affected.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::transport::inspect::{Inspected, Inspector};

/// Stream resets per second: a client cancelling work (gRPC deadlines,
/// browsers leaving a page) resets a few; thousands a second is an attack.
pub const DEFAULT_H2_MAX_RESETS_PER_SECOND: u32 = 200;
/// PINGs per second: keep-alive needs one every few seconds at most.
pub const DEFAULT_H2_MAX_PINGS_PER_SECOND: u32 = 20;
/// SETTINGS frames per second: a client sends one at the start and rarely more.
pub const DEFAULT_H2_MAX_SETTINGS_PER_SECOND: u32 = 20;

/// The client connection preface, `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

#[derive(Debug, Clone)]
pub struct FloodLimits {
    pub resets_per_second: u32,
    pub pings_per_second: u32,
    pub settings_per_second: u32,
}

impl Default for FloodLimits {
    fn default() -> Self {
        Self {
            resets_per_second: DEFAULT_H2_MAX_RESETS_PER_SECOND,
            pings_per_second: DEFAULT_H2_MAX_PINGS_PER_SECOND,
            settings_per_second: DEFAULT_H2_MAX_SETTINGS_PER_SECOND,
        }
    }
}

/// Which limit a connection passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    Resets = 1,
    Pings = 2,
    Settings = 3,
}

impl Flood {
    /// `mesh_http_refused_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            Flood::Resets => "h2_reset_flood",
            Flood::Pings => "h2_ping_flood",
            Flood::Settings => "h2_settings_flood",
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Flood::Resets),
            2 => Some(Flood::Pings),
            3 => Some(Flood::Settings),
            _ => None,
        }
    }
}

struct Shared {
    tripped: AtomicU8,
    notify: Notify,
}

/// Tells the server when its connection passed a limit.
pub struct FloodWatch {
    shared: Arc<Shared>,
}

impl FloodWatch {
    /// Resolves when the connection passes a limit.
    pub async fn tripped(&self) -> Flood {
        loop {
            let notified = self.shared.notify.notified();
            if let Some(f) = Flood::from_u8(self.shared.tripped.load(Ordering::Acquire)) {
                return f;
            }
            notified.await;
        }
    }
}

/// Counts frames by type in one-second windows.
struct Parser {
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    have: usize,
    /// Payload bytes of the current frame still to skip.
    skip: usize,
    window: Instant,
    counts: [u32; 3],
    limits: FloodLimits,
}

impl Parser {
    fn new(limits: FloodLimits) -> Self {
        Self {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            have: 0,
            skip: 0,
            window: Instant::now(),
            counts: [0; 3],
            limits,
        }
    }

    /// Feeds bytes the client sent; `Some` when a limit is passed.
    fn feed(&mut self, mut data: &[u8]) -> Option<Flood> {
        while !data.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(data.len());
                self.preface_left -= n;
                data = &data[n..];
            } else if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
            } else {
                let n = (FRAME_HEADER_LEN - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == FRAME_HEADER_LEN {
                    self.have = 0;
                    let h = self.header;
                    self.skip =
                        usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    if let Some(f) = self.count(h[3], h[4]) {
                        return Some(f);
                    }
                }
            }
        }
        None
    }

    fn count(&mut self, ty: u8, flags: u8) -> Option<Flood> {
        let (slot, limit, kind) = match ty {
            RST_STREAM => (0, self.limits.resets_per_second, Flood::Resets),
            PING if flags & ACK == 0 => (1, self.limits.pings_per_second, Flood::Pings),
            SETTINGS if flags & ACK == 0 => (2, self.limits.settings_per_second, Flood::Settings),
            _ => return None,
        };
        let now = Instant::now();
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.counts = [0; 3];
        }
        self.counts[slot] += 1;
        (self.counts[slot] > limit).then_some(kind)
    }
}

/// Watches what an HTTP/2 client sends for floods.
pub struct FloodGuard {
    parser: Parser,
    shared: Arc<Shared>,
}

/// The client side of an HTTP/2 server connection, watched for floods.
pub fn guard<S>(inner: S, limits: FloodLimits) -> (Inspected<S, FloodGuard>, FloodWatch) {
    let shared = Arc::new(Shared {
        tripped: AtomicU8::new(0),
        notify: Notify::new(),
    });
    let g = FloodGuard {
        parser: Parser::new(limits),
        shared: shared.clone(),
    };
    (Inspected::new(inner, g), FloodWatch { shared })
}

impl Inspector for FloodGuard {
    fn inspect(&mut self, bytes: &[u8]) {
        if let Some(f) = self.parser.feed(bytes) {
            self.shared.tripped.store(f as u8, Ordering::Release);
            self.shared.notify.notify_waiters();
        }
    }

    // Nothing more from a flooding client: the server sends GOAWAY and
    // closes within its grace period.
    fn stop_reading(&self) -> bool {
        self.shared.tripped.load(Ordering::Acquire) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[ty, flags, 0, 0, 0, 1]);
        f.extend_from_slice(payload);
        f
    }

    fn limits(n: u32) -> FloodLimits {
        FloodLimits {
            resets_per_second: n,
            pings_per_second: n,
            settings_per_second: n,
        }
    }

    // A flood is counted across reads split anywhere, frame headers included.
    #[test]
    fn counts_frames_split_across_reads() {
        let mut p = Parser::new(limits(3));
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        for _ in 0..4 {
            bytes.extend(frame(PING, 0, &[0; 8]));
        }
        let mut out = None;
        for chunk in bytes.chunks(5) {
            if let Some(f) = p.feed(chunk) {
                out = Some(f);
            }
        }
        assert_eq!(out, Some(Flood::Pings));
    }

    // ACKs answer our frames; they are not the client's to flood with.
    #[test]
    fn acks_and_data_are_not_counted() {
        let mut p = Parser::new(limits(1));
        p.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        for _ in 0..10 {
            assert_eq!(p.feed(&frame(PING, ACK, &[0; 8])), None);
            assert_eq!(p.feed(&frame(SETTINGS, ACK, &[])), None);
            // A DATA frame whose payload looks like a RST_STREAM header.
            assert_eq!(p.feed(&frame(0, 0, &frame(RST_STREAM, 0, &[0; 4]))), None);
        }
        assert_eq!(p.feed(&frame(RST_STREAM, 0, &[0; 4])), None);
        assert_eq!(p.feed(&frame(RST_STREAM, 0, &[0; 4])), Some(Flood::Resets));
    }
}
