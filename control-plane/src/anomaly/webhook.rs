//! `--event-webhook URL`: every anomaly event POSTed as JSON to a pager or
//! chat endpoint. A bounded queue (a burst of events never holds memory
//! without bound, never slows the flow reports), each POST retried with
//! backoff; what cannot be delivered is dropped and counted in
//! `mesh_anomaly_webhook_failures_total{reason}`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Events waiting for the webhook.
pub const QUEUE: usize = 256;
const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where to POST: `http://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub authority: String,
    pub path: String,
}

pub fn parse(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: the event webhook is an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(['\r', '\n', ' ']) {
        return Err(format!("{url:?} is not a webhook URL"));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        authority,
        path: path.to_owned(),
    })
}

/// The sending side: `send` never waits.
#[derive(Clone)]
pub struct Webhook {
    tx: mpsc::Sender<String>,
}

impl Webhook {
    pub fn start(target: Target) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(target, rx));
        Self { tx }
    }

    pub fn send(&self, json: String) {
        if self.tx.try_send(json).is_err() {
            metrics::counter!("mesh_anomaly_webhook_failures_total", "reason" => "queue_full")
                .increment(1);
        }
    }
}

async fn post(target: &Target, body: &str) -> Result<u16, String> {
    let mut s = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.path,
        target.authority,
        body.len()
    );
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(body.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let got = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "no HTTP status".to_owned())
}

async fn deliver(target: Target, mut rx: mpsc::Receiver<String>) {
    while let Some(event) = rx.recv().await {
        let mut delay = Duration::from_millis(250);
        let mut delivered = false;
        for attempt in 1..=ATTEMPTS {
            match tokio::time::timeout(TIMEOUT, post(&target, &event)).await {
                Ok(Ok(code)) if (200..300).contains(&code) => {
                    delivered = true;
                    break;
                }
                Ok(Ok(code)) => tracing::warn!(attempt, code, "event webhook refused the event"),
                Ok(Err(e)) => tracing::warn!(attempt, error = %e, "event webhook unreachable"),
                Err(_) => tracing::warn!(attempt, "event webhook timed out"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        if !delivered {
            metrics::counter!("mesh_anomaly_webhook_failures_total", "reason" => "failed")
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        assert_eq!(
            parse("http://127.0.0.1:9000/hook").unwrap(),
            Target {
                authority: "127.0.0.1:9000".into(),
                path: "/hook".into()
            }
        );
        assert_eq!(
            parse("http://pager.example").unwrap().authority,
            "pager.example:80"
        );
        for bad in [
            "https://x/",
            "ftp://x",
            "http://",
            "http://u@x/",
            "http://x/a b",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
