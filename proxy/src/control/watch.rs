//! One reconnect loop for every stream the proxy watches from the control
//! plane: open, hand each message on, and when the stream breaks keep what
//! was received and reopen with exponential backoff.

use std::future::Future;
use std::time::Duration;

/// First reconnect delay after the stream breaks; doubled up to the max.
const DEFAULT_RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest reconnect delay: a restarted control plane is picked up within this.
const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(5);

/// Watches forever. `open` starts the stream; `on_message` takes each message.
pub async fn run<T, Open, Fut, OnMessage>(
    what: &'static str,
    mut open: Open,
    mut on_message: OnMessage,
) where
    Open: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
    OnMessage: FnMut(T),
{
    let mut delay = DEFAULT_RETRY_MIN;
    loop {
        match open().await {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(msg)) => {
                            delay = DEFAULT_RETRY_MIN;
                            on_message(msg);
                        }
                        Ok(None) => {
                            tracing::warn!(what, "stream ended; keeping the last one received");
                            break;
                        }
                        Err(s) => {
                            tracing::warn!(what, error = %s.message(), "stream failed; keeping the last one received");
                            break;
                        }
                    }
                }
            }
            Err(s) => {
                tracing::warn!(what, code = ?s.code(), error = %s.message(), retry_in = ?delay, "cannot watch");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(DEFAULT_RETRY_MAX);
    }
}
