//! The load generator: open loop at a fixed rate over N keep-alive
//! connections, closed loop (as fast as N connections go), a new connection
//! per request, and bulk TCP.
//!
//! Every run is bounded in time: it stops at its end plus a grace period
//! even if the target stops answering, and says how many requests never
//! completed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::http1::{Conn, REQUEST, REQUEST_CLOSE};
use crate::latency::{Recorder, Summary};
use crate::schedule::Schedule;

/// A run may overrun its end by this much (slow last responses) before the
/// rest is given up as incomplete.
pub const GRACE: Duration = Duration::from_secs(5);
/// Connecting on loopback is immediate unless something is broken.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First due time is this far after the connections are open, so the
/// ticker thread is running before the first request is due.
const START_DELAY: Duration = Duration::from_millis(20);
/// The plot goes to p99.99; beyond that a 10,000-request run has no samples.
const CURVE_NINES: f64 = 4.0;
const CURVE_STEPS: u32 = 10;
/// Bulk write size: large writes, as iperf3 does (128 KiB).
const BULK_CHUNK: usize = 128 * 1024;

/// The result of one HTTP run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReport {
    pub mode: String,
    pub connections: usize,
    /// Requests per second asked for (open loop only).
    pub target_rate: Option<f64>,
    /// Completed requests, warm-up included (for CPU per request).
    pub completed: u64,
    /// Completed requests in the measured window.
    pub recorded: u64,
    pub errors: u64,
    /// Due (open loop) but not completed when the run was stopped.
    pub incomplete: u64,
    pub measured_secs: f64,
    /// Recorded requests per second of the measured window.
    pub throughput: f64,
    pub latency: Summary,
    /// Open loop: how late requests went out after their due time. Small
    /// means the generator kept its timetable; large means connections were
    /// busy (queued behind slow responses).
    pub send_delay: Option<Summary>,
    pub first_error: Option<String>,
    /// Latency by percentile, `(nines, ms)` (see [`Recorder::curve`]), for the plot.
    pub curve: Vec<(f64, f64)>,
}

#[derive(Default)]
struct ConnResult {
    latency: Recorder,
    delay: Recorder,
    completed: u64,
    recorded: u64,
    errors: u64,
    first_error: Option<String>,
}

impl ConnResult {
    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

async fn connect(target: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| anyhow::anyhow!("connect to {target} timed out"))??;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn connect_all(target: SocketAddr, n: usize) -> anyhow::Result<Vec<Conn<TcpStream>>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(Conn::new(connect(target).await?));
    }
    Ok(v)
}

/// Lets the ticker thread sleep with nanosecond precision instead of the
/// default 50 µs timer slack, which would be a visible share of a 100 µs
/// round trip.
fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Sleeps the calling (ticker) thread until `due`. A blocking sleep, not a
/// tokio timer: tokio timers have 1 ms resolution.
fn sleep_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        std::thread::sleep(due - now);
    }
}

/// Open loop: `rate` requests per second, spread round robin over
/// `connections` keep-alive connections, latency from each request's due
/// time. A ticker thread keeps the timetable; it runs on the caller's CPU
/// (the generator's), as a thread of its own so that precise sleeps do not
/// block the I/O loop.
pub async fn open_loop(
    target: SocketAddr,
    connections: usize,
    rate: f64,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadReport> {
    let conns = connect_all(target, connections.max(1)).await?;
    let n = conns.len();
    let schedule = Schedule::new(Instant::now() + START_DELAY, rate, warmup, measure);
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for mut conn in conns {
        let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Instant)>();
        senders.push(tx);
        tasks.push(tokio::spawn(async move {
            let mut r = ConnResult::default();
            let mut broken = false;
            while let Some((i, due)) = rx.recv().await {
                if broken {
                    r.error("connection broken earlier");
                    continue;
                }
                let sent = Instant::now();
                let res = async {
                    conn.stream.write_all(REQUEST).await?;
                    conn.read_ok().await?;
                    Ok::<_, anyhow::Error>(())
                }
                .await;
                let done = Instant::now();
                match res {
                    Ok(()) => {
                        r.completed += 1;
                        if schedule.is_recorded(i) {
                            r.recorded += 1;
                            r.latency.record(due, done);
                            r.delay.record(due, sent);
                        }
                    }
                    Err(e) => {
                        broken = true;
                        r.error(e);
                    }
                }
            }
            r
        }));
    }
    let ticker = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("ticker".into())
            .spawn(move || {
                precise_timers();
                for i in 0..schedule.total() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let due = schedule.due(i);
                    sleep_until(due);
                    let c = Schedule::connection_of(i, n);
                    if senders[c].send((i, due)).is_err() {
                        break;
                    }
                }
                // Dropping the senders ends each connection's loop once its
                // queue is empty.
            })?
    };
    let end = schedule.due(schedule.total()) + GRACE;
    let mut results = Vec::with_capacity(n);
    let mut timed_out = false;
    for t in tasks {
        let left = end.saturating_duration_since(Instant::now());
        let abort = t.abort_handle();
        match tokio::time::timeout(left, t).await {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => anyhow::bail!("connection task failed: {e}"),
            Err(_) => {
                timed_out = true;
                abort.abort();
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    // The ticker ends at its last due time or at the stop flag, both bounded.
    let _ = ticker.join();
    let mut report = merge("open_loop", n, results, measure);
    report.target_rate = Some(rate);
    report.incomplete = schedule
        .total()
        .saturating_sub(report.completed + report.errors);
    if timed_out && report.first_error.is_none() {
        report.first_error = Some("responses still outstanding at the deadline".into());
    }
    Ok(report)
}

fn merge(
    mode: &str,
    connections: usize,
    results: Vec<ConnResult>,
    measure: Duration,
) -> LoadReport {
    let mut latency = Recorder::new();
    let mut delay = Recorder::new();
    let mut report = LoadReport {
        mode: mode.into(),
        connections,
        measured_secs: measure.as_secs_f64(),
        ..Default::default()
    };
    for r in results {
        latency.add(&r.latency);
        delay.add(&r.delay);
        report.completed += r.completed;
        report.recorded += r.recorded;
        report.errors += r.errors;
        if report.first_error.is_none() {
            report.first_error = r.first_error;
        }
    }
    report.throughput = report.recorded as f64 / measure.as_secs_f64().max(1e-9);
    report.latency = latency.summary();
    if delay.count() > 0 {
        report.send_delay = Some(delay.summary());
    }
    report.curve = latency.curve(CURVE_NINES, CURVE_STEPS);
    report
}

/// How a closed-loop worker gets its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// One keep-alive connection per worker for the whole run.
    KeepAlive,
    /// A new TCP connection for every request (S3: a handshake each).
    NewConnection,
}

/// Closed loop: `workers` send a request as soon as the previous answer
/// arrives, for `warmup + measure`. Latency is per request (from its send).
pub async fn closed_loop(
    target: SocketAddr,
    workers: usize,
    reuse: Reuse,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadReport> {
    closed_loop_with(move || connect(target), workers, reuse, warmup, measure).await
}

/// [`closed_loop`] over the streams `connect` opens (e.g. TLS to an
/// ingress): with [`Reuse::NewConnection`] each request pays the whole
/// `connect`, handshake included.
pub async fn closed_loop_with<S, F, Fut>(
    connect: F,
    workers: usize,
    reuse: Reuse,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<LoadReport>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<S>> + Send,
{
    let workers = workers.max(1);
    let mut conns: Vec<Option<Conn<S>>> = Vec::with_capacity(workers);
    for _ in 0..workers {
        conns.push(match reuse {
            Reuse::KeepAlive => Some(Conn::new(connect().await?)),
            Reuse::NewConnection => None,
        });
    }
    let start = Instant::now();
    let measure_start = start + warmup;
    let end = measure_start + measure;
    let mut tasks = Vec::with_capacity(workers);
    for mut conn in conns {
        let connect = connect.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = ConnResult::default();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let res = match conn.as_mut() {
                    Some(c) => {
                        async {
                            c.stream.write_all(REQUEST).await?;
                            c.read_ok().await?;
                            Ok::<_, anyhow::Error>(())
                        }
                        .await
                    }
                    None => {
                        async {
                            let mut c = Conn::new(connect().await?);
                            c.stream.write_all(REQUEST_CLOSE).await?;
                            c.read_ok().await?;
                            Ok::<_, anyhow::Error>(())
                        }
                        .await
                    }
                };
                let done = Instant::now();
                match res {
                    Ok(()) => {
                        r.completed += 1;
                        if t0 >= measure_start && done <= end {
                            r.recorded += 1;
                            r.latency.record(t0, done);
                        }
                    }
                    Err(e) => {
                        r.error(e);
                        match reuse {
                            // A broken keep-alive connection is replaced.
                            Reuse::KeepAlive => match connect().await {
                                Ok(s) => conn = Some(Conn::new(s)),
                                Err(_) => break,
                            },
                            // Connect failures (e.g. out of ports) must not
                            // spin: yield to the other workers.
                            Reuse::NewConnection => tokio::task::yield_now().await,
                        }
                    }
                }
            }
            r
        }));
    }
    let results = join_until(tasks, end + GRACE).await?;
    let mode = match reuse {
        Reuse::KeepAlive => "closed_loop",
        Reuse::NewConnection => "new_connection",
    };
    Ok(merge(mode, workers, results, measure))
}

async fn join_until<T>(
    tasks: Vec<tokio::task::JoinHandle<T>>,
    end: Instant,
) -> anyhow::Result<Vec<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        let left = end.saturating_duration_since(Instant::now());
        let abort = t.abort_handle();
        match tokio::time::timeout(left, t).await {
            Ok(Ok(r)) => out.push(r),
            Ok(Err(e)) => anyhow::bail!("worker failed: {e}"),
            Err(_) => abort.abort(),
        }
    }
    Ok(out)
}

/// The result of a bulk run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BulkReport {
    pub streams: usize,
    pub bytes: u64,
    pub measured_secs: f64,
    pub gbit_per_s: f64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// Bulk TCP: `streams` connections write as fast as they can. Counted at the
/// sender over the measured window, after a warm-up that fills every buffer
/// on the way, so the send rate equals the receive rate (as iperf3's).
pub async fn bulk(
    target: SocketAddr,
    streams: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<BulkReport> {
    let streams = streams.max(1);
    let mut socks = Vec::with_capacity(streams);
    for _ in 0..streams {
        socks.push(connect(target).await?);
    }
    let start = Instant::now();
    let measure_start = start + warmup;
    let end = measure_start + measure;
    let chunk: Arc<[u8]> = vec![0x5a; BULK_CHUNK].into();
    let mut tasks = Vec::with_capacity(streams);
    for mut s in socks {
        let chunk = chunk.clone();
        tasks.push(tokio::spawn(async move {
            let mut bytes = 0u64;
            let mut err = None;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                match tokio::time::timeout(end + GRACE - now, s.write_all(&chunk)).await {
                    Ok(Ok(())) => {
                        if now >= measure_start {
                            bytes += chunk.len() as u64;
                        }
                    }
                    Ok(Err(e)) => {
                        err = Some(e.to_string());
                        break;
                    }
                    Err(_) => {
                        err = Some("write stalled past the deadline".into());
                        break;
                    }
                }
            }
            let _ = s.shutdown().await;
            (bytes, err)
        }));
    }
    let results = join_until(tasks, end + GRACE).await?;
    let mut r = BulkReport {
        streams,
        measured_secs: measure.as_secs_f64(),
        ..Default::default()
    };
    for (b, e) in results {
        r.bytes += b;
        if let Some(e) = e {
            r.errors += 1;
            r.first_error.get_or_insert(e);
        }
    }
    r.gbit_per_s = r.bytes as f64 * 8.0 / measure.as_secs_f64().max(1e-9) / 1e9;
    Ok(r)
}

/// Opens `n` connections, each carrying one request and response so the
/// whole chain (both proxies, the mTLS hop, the upstream) is established,
/// and keeps them open. At most `parallel` are being opened at once.
pub async fn hold(
    target: SocketAddr,
    n: usize,
    parallel: usize,
    deadline: Duration,
) -> (Vec<Conn<TcpStream>>, u64, Option<String>) {
    let end = Instant::now() + deadline;
    let mut set = tokio::task::JoinSet::new();
    let mut held = Vec::with_capacity(n);
    let mut errors = 0u64;
    let mut first_error = None;
    let mut started = 0;
    while held.len() + (errors as usize) < n {
        while started < n && set.len() < parallel.max(1) {
            started += 1;
            set.spawn(async move {
                let mut c = Conn::new(connect(target).await?);
                c.stream.write_all(REQUEST).await?;
                c.read_ok().await?;
                Ok::<_, anyhow::Error>(c)
            });
        }
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, set.join_next()).await {
            Ok(Some(Ok(Ok(c)))) => held.push(c),
            Ok(Some(Ok(Err(e)))) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
            Ok(Some(Err(e))) => {
                errors += 1;
                first_error.get_or_insert(e.to_string());
            }
            Ok(None) => break,
            Err(_) => {
                first_error.get_or_insert("deadline reached while opening".into());
                set.abort_all();
                break;
            }
        }
    }
    (held, errors, first_error)
}
