//! Turning runs into numbers people read: medians with spread, the targets
//! of issue 4 against what was measured, markdown, JSON and an SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::compare::{PairResult, Results, Run, Scenario};
use crate::pairs::Kind;

/// Median of ≥ 1 values with their spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn stat(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

impl PairResult {
    pub fn runs_of(&self, s: Scenario) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(move |r| r.scenario == s)
    }

    fn load_stat(&self, s: Scenario, f: impl Fn(&crate::load::LoadReport) -> f64) -> Option<Stat> {
        stat(self.runs_of(s).filter_map(|r| r.load.as_ref()).map(f))
    }

    pub fn s1(&self, q: Quantile) -> Option<Stat> {
        self.load_stat(Scenario::S1, |l| q.of(&l.latency))
    }

    pub fn s2(&self) -> Option<Stat> {
        self.load_stat(Scenario::S2, |l| l.throughput)
    }

    pub fn s3(&self) -> Option<Stat> {
        self.load_stat(Scenario::S3, |l| l.throughput)
    }

    pub fn s4(&self, streams: usize) -> Option<Stat> {
        let s = if streams == 1 {
            Scenario::S4x1
        } else {
            Scenario::S4x4
        };
        stat(
            self.runs_of(s)
                .filter_map(|r| r.bulk.as_ref())
                .map(|b| b.gbit_per_s),
        )
    }

    /// CPU seconds per 1,000 requests (warm-up included on both sides of
    /// the division) of the proxies together, or of one role.
    pub fn cpu_per_1k(&self, s: Scenario, role: Option<&str>) -> Option<Stat> {
        stat(self.runs_of(s).filter_map(|r| {
            let l = r.load.as_ref()?;
            if l.completed == 0 {
                return None;
            }
            let cpu: f64 = match role {
                Some(role) => *r.cpu_secs.get(role)?,
                None => ["client", "server"]
                    .iter()
                    .filter_map(|k| r.cpu_secs.get(*k))
                    .sum(),
            };
            Some(cpu / l.completed as f64 * 1000.0)
        }))
    }

    /// TCP accepts per completed request (machine-wide counter).
    pub fn accepts_per_request(&self, s: Scenario) -> Option<Stat> {
        stat(self.runs_of(s).filter_map(|r| {
            let l = r.load.as_ref()?;
            Some(r.passive_opens? as f64 / l.completed.max(1) as f64)
        }))
    }

    /// The repetition of S1 with the median p99, for the plot.
    fn s1_median_run(&self) -> Option<&crate::load::LoadReport> {
        let mut v: Vec<&crate::load::LoadReport> = self
            .runs_of(Scenario::S1)
            .filter_map(|r| r.load.as_ref())
            .collect();
        v.sort_by(|a, b| a.latency.p99_ms.total_cmp(&b.latency.p99_ms));
        v.get(v.len() / 2).copied()
    }

    pub fn is_proxy(&self) -> bool {
        self.kind != Kind::Direct
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Quantile {
    P50,
    P99,
    P999,
}

impl Quantile {
    pub fn of(self, s: &crate::latency::Summary) -> f64 {
        match self {
            Quantile::P50 => s.p50_ms,
            Quantile::P99 => s.p99_ms,
            Quantile::P999 => s.p999_ms,
        }
    }
}

fn find(r: &Results, k: Kind) -> Option<&PairResult> {
    r.pairs.iter().find(|p| p.kind == k && !p.runs.is_empty())
}

/// Latency a pair adds over direct, from the medians.
pub fn added(r: &Results, p: &PairResult, q: Quantile) -> Option<f64> {
    Some(p.s1(q)?.median - find(r, Kind::Direct)?.s1(q)?.median)
}

fn f(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        _ => "–".into(),
    }
}

fn spread(s: Option<Stat>, digits: usize) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits),
        Some(s) => format!("{:.d$}", s.median, d = digits),
        None => "–".into(),
    }
}

/// One KiB figure of a per-role map, with thousands separators; "–" if absent.
fn kib(m: &std::collections::BTreeMap<String, u64>, role: &str) -> String {
    m.get(role).map_or("–".into(), |v| thousands(*v as f64))
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn mib(kib: Option<&u64>) -> String {
    kib.map_or("–".into(), |k| format!("{:.1}", *k as f64 / 1024.0))
}

fn tls_group(p: &PairResult) -> String {
    match (&p.tls, p.kind) {
        (_, Kind::Direct) => "–".into(),
        (Some(t), _) => {
            let o = &t.first;
            let mut s = o.group.clone().unwrap_or_else(|| "?".into());
            if o.hello_retry {
                s += " (after HRR)";
            }
            s
        }
        (None, _) => "not observed".into(),
    }
}

/// One line per run for progress output.
pub fn one_line(run: &Run) -> String {
    let cpu: f64 = ["client", "server"]
        .iter()
        .filter_map(|k| run.cpu_secs.get(*k))
        .sum();
    match (&run.load, &run.bulk) {
        (Some(l), _) => format!(
            "{:>9.0} req/s  p50 {:.3} p99 {:.3} p99.9 {:.3} ms  proxies {:.2} cpu-s  errors {}  load {:.2}",
            l.throughput,
            l.latency.p50_ms,
            l.latency.p99_ms,
            l.latency.p999_ms,
            cpu,
            l.errors + l.incomplete,
            run.loadavg_after[0]
        ),
        (_, Some(b)) => format!(
            "{:>6.2} Gbit/s ({} streams)  proxies {:.2} cpu-s  errors {}",
            b.gbit_per_s, b.streams, cpu, b.errors
        ),
        _ => String::new(),
    }
}

/// A target of issue 4 and what was measured.
pub struct Target {
    pub what: &'static str,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

pub fn targets(r: &Results) -> Vec<Target> {
    let mut t = Vec::new();
    let pal = find(r, Kind::Palisade);
    let hap = find(r, Kind::Haproxy);
    let peers: Vec<&PairResult> = r
        .pairs
        .iter()
        .filter(|p| {
            matches!(p.kind, Kind::Haproxy | Kind::Nginx | Kind::Stunnel) && !p.runs.is_empty()
        })
        .collect();
    if let (Some(p), Some(h)) = (pal, hap) {
        let (a, b) = (added(r, p, Quantile::P99), added(r, h, Quantile::P99));
        t.push(Target {
            what: "S1 added p99",
            target: format!("≤ HAProxy's ({} ms)", f(b, 3)),
            measured: format!("{} ms", f(a, 3)),
            met: a.zip(b).map(|(a, b)| a <= b),
        });
        let (a, b) = (p.s2().map(|s| s.median), h.s2().map(|s| s.median));
        t.push(Target {
            what: "S2 throughput",
            target: format!(
                "≥ 1.0× HAProxy's ({} req/s)",
                b.map_or("–".into(), thousands)
            ),
            measured: format!(
                "{} req/s ({}×)",
                a.map_or("–".into(), thousands),
                f(a.zip(b).map(|(a, b)| a / b), 2)
            ),
            met: a.zip(b).map(|(a, b)| a >= b),
        });
        for (s, name) in [
            (Scenario::S1, "CPU per 1,000 requests (S1)"),
            (Scenario::S2, "CPU per 1,000 requests (S2)"),
        ] {
            let (a, b) = (
                p.cpu_per_1k(s, None).map(|s| s.median),
                h.cpu_per_1k(s, None).map(|s| s.median),
            );
            t.push(Target {
                what: name,
                target: format!("≤ HAProxy's ({} CPU-s)", f(b, 3)),
                measured: format!(
                    "{} CPU-s ({}×)",
                    f(a, 3),
                    f(a.zip(b).map(|(a, b)| a / b), 2)
                ),
                met: a.zip(b).map(|(a, b)| a <= b),
            });
        }
    }
    if let Some(p) = pal {
        for streams in [1, 4] {
            let best = peers
                .iter()
                .filter_map(|q| q.s4(streams).map(|s| (s.median, q.label.clone())))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let a = p.s4(streams).map(|s| s.median);
            t.push(Target {
                what: if streams == 1 {
                    "S4 bulk, 1 stream"
                } else {
                    "S4 bulk, 4 streams"
                },
                target: match &best {
                    Some((v, who)) => format!("≥ best peer ({who}, {v:.2} Gbit/s)"),
                    None => "≥ best peer".into(),
                },
                measured: format!("{} Gbit/s", f(a, 2)),
                met: a.zip(best.as_ref().map(|b| b.0)).map(|(a, b)| a >= b),
            });
        }
        let worst_idle = p.idle_rss_kib.values().copied().max();
        t.push(Target {
            what: "S5 idle RSS per proxy",
            target: "≤ 10 MB".into(),
            measured: format!(
                "{} MiB (client {} / server {})",
                mib(worst_idle.as_ref()),
                mib(p.idle_rss_kib.get("client")),
                mib(p.idle_rss_kib.get("server"))
            ),
            met: worst_idle.map(|k| (k as f64) * 1024.0 <= 10e6),
        });
        if let Some(s6) = &p.s6 {
            let worst = s6
                .kib_per_connection
                .values()
                .copied()
                .fold(f64::NAN, f64::max);
            t.push(Target {
                what: "S6 RSS per idle mTLS connection",
                target: "≤ 20 KiB".into(),
                measured: format!(
                    "{} KiB (client {} / server {}; {} connections)",
                    f(Some(worst), 1),
                    f(s6.kib_per_connection.get("client").copied(), 1),
                    f(s6.kib_per_connection.get("server").copied(), 1),
                    thousands(s6.held as f64)
                ),
                met: Some(worst <= 20.0 && s6.held > 0),
            });
        }
        let group = p.tls.as_ref().and_then(|t| t.first.group.clone());
        let full = r
            .floor
            .iter()
            .find(|fl| !fl.resumed && Some(&fl.group) == group.as_ref())
            .or_else(|| r.floor.iter().find(|fl| !fl.resumed));
        let resumed = r.floor.iter().find(|fl| fl.resumed);
        if let (Some(s3), Some(fl)) = (p.s3(), full) {
            let frac = s3.median / fl.per_sec;
            // Every pair resumes TLS sessions on reconnect (seen on the
            // wire), so its handshakes are mostly resumed ones: say so.
            let vs_resumed = match (p.tls.as_ref().and_then(|t| t.resumed_on_reconnect), resumed) {
                (Some(true), Some(rf)) => format!(
                    "; the hop resumes sessions, and against the resumed floor ({}/s) it is {:.0}%",
                    thousands(rf.per_sec),
                    s3.median / rf.per_sec * 100.0
                ),
                _ => String::new(),
            };
            // The same comparison in CPU time, which other work on the
            // machine does not distort: what the proxies spend per
            // connection against what the two handshakes alone cost.
            let cpu = p
                .cpu_per_1k(Scenario::S3, None)
                .map(|c| c.median)
                .filter(|c| *c > 0.0 && fl.cpu_ms_per_handshake > 0.0)
                .map(|c| {
                    format!(
                        "; in CPU: the proxies spend {c:.3} ms per connection, the full handshake pair {:.3} ms ({:.0}%)",
                        fl.cpu_ms_per_handshake,
                        fl.cpu_ms_per_handshake / c * 100.0
                    )
                })
                .unwrap_or_default();
            t.push(Target {
                what: "S3 new connections/s vs handshake floor",
                target: format!(
                    "≥ 70% of {} full handshakes/s ({})",
                    thousands(fl.per_sec),
                    fl.group
                ),
                measured: format!(
                    "{} conn/s = {:.0}% of the full floor{vs_resumed}{cpu}",
                    thousands(s3.median),
                    frac * 100.0
                ),
                met: Some(frac >= 0.7),
            });
        }
    }
    t
}

fn mark(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "–",
    }
}

/// The markdown report.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let a = &r.settings;
    let _ = writeln!(s, "# mesh-bench compare — {}\n", r.started);
    let _ = writeln!(
        s,
        "Machine: {} × {} ({} MiB), {}, kernel {}. Load average at start {:.2} / {:.2} / {:.2}, at end {:.2} / {:.2} / {:.2} (1/5/15 min; the machine is shared, and 2 cores is all there is). Wall time {:.0} s.\n",
        m.cpus,
        m.cpu_model,
        m.memory_mib,
        m.os,
        m.kernel,
        m.load_before[0],
        m.load_before[1],
        m.load_before[2],
        m.load_after[0],
        m.load_after[1],
        m.load_after[2],
        r.wall_secs
    );
    let _ = writeln!(
        s,
        "Layout: generator on CPU {}; both proxies, the upstream and the control plane on CPU {} (`taskset`); one worker per proxy. {} repetitions per scenario, interleaved across pairs; medians, spread (min–max) in the detail tables. Warm-up {:?} per run, not measured.\n",
        a.generator_cpu, a.proxy_cpu, a.reps, a.warmup
    );
    let _ = writeln!(
        s,
        "Versions: {}\n",
        m.versions
            .iter()
            .map(|(k, v)| format!("{k}: `{v}`"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    for n in &r.notes {
        let _ = writeln!(s, "Note: {n}\n");
    }

    let _ = writeln!(s, "## Summary (medians)\n");
    let _ = writeln!(
        s,
        "| pair | hop TLS group | S1 added p50 / p99 / p99.9 ms | CPU-s per 1k req (S1, A+B) | S2 req/s | CPU-s per 1k req (S2, A+B) | S3 conn/s | S4 Gbit/s 1 / 4 streams | idle RSS MiB A / B | S6 KiB per conn A / B |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for p in &r.pairs {
        if let Some(e) = &p.error
            && p.runs.is_empty()
        {
            let _ = writeln!(
                s,
                "| {} | failed: {} |||||||||",
                p.label,
                e.lines().next().unwrap_or("")
            );
            continue;
        }
        let added_s = if p.is_proxy() {
            format!(
                "{} / {} / {}",
                f(added(r, p, Quantile::P50), 3),
                f(added(r, p, Quantile::P99), 3),
                f(added(r, p, Quantile::P999), 3)
            )
        } else {
            format!(
                "(base: {} / {} / {})",
                f(p.s1(Quantile::P50).map(|x| x.median), 3),
                f(p.s1(Quantile::P99).map(|x| x.median), 3),
                f(p.s1(Quantile::P999).map(|x| x.median), 3)
            )
        };
        let s6 = p.s6.as_ref().map_or("–".into(), |x| {
            format!(
                "{} / {}",
                f(x.kib_per_connection.get("client").copied(), 1),
                f(x.kib_per_connection.get("server").copied(), 1)
            )
        });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
            p.label,
            tls_group(p),
            added_s,
            if p.is_proxy() {
                f(p.cpu_per_1k(Scenario::S1, None).map(|x| x.median), 3)
            } else {
                "–".into()
            },
            p.s2().map_or("–".into(), |x| thousands(x.median)),
            if p.is_proxy() {
                f(p.cpu_per_1k(Scenario::S2, None).map(|x| x.median), 3)
            } else {
                "–".into()
            },
            p.s3().map_or("–".into(), |x| thousands(x.median)),
            f(p.s4(1).map(|x| x.median), 2),
            f(p.s4(4).map(|x| x.median), 2),
            if p.is_proxy() {
                format!(
                    "{} / {}",
                    mib(p.idle_rss_kib.get("client")),
                    mib(p.idle_rss_kib.get("server"))
                )
            } else {
                "–".into()
            },
            s6
        );
    }

    let _ = writeln!(s, "\n## Targets (issue 4) for Palisade\n");
    let _ = writeln!(s, "| target | wanted | measured | |\n|---|---|---|---|");
    for t in targets(r) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.what,
            t.target,
            t.measured,
            mark(t.met)
        );
    }

    let _ = writeln!(
        s,
        "\n## Handshake floor (one core, in-process, Palisade's TLS configs)\n"
    );
    let _ = writeln!(
        s,
        "| group | kind | handshakes/s | wall ms per handshake (client + server) | CPU ms per handshake |\n|---|---|---|---|---|"
    );
    for fl in &r.floor {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} | {:.3} |",
            fl.group,
            if fl.resumed {
                "resumed (ticket)"
            } else {
                "full"
            },
            thousands(fl.per_sec),
            fl.ms_per_handshake,
            fl.cpu_ms_per_handshake
        );
    }

    let _ = writeln!(s, "\n## Details (median (min–max) over repetitions)\n");
    let _ = writeln!(
        s,
        "S1: {} req/s over {} keep-alive connections, {:?} measured per run; latency from each request's due time.\n",
        a.s1_rate, a.s1_connections, a.s1_duration
    );
    let _ = writeln!(
        s,
        "| pair | p50 ms | p99 ms | p99.9 ms | CPU-s per 1k req A | B | accepts per request | generator send delay p99 ms | load avg | errors |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in r.pairs.iter().filter(|p| !p.runs.is_empty()) {
        let errors: u64 = p
            .runs_of(Scenario::S1)
            .filter_map(|r| r.load.as_ref())
            .map(|l| l.errors + l.incomplete)
            .sum();
        let delay = stat(
            p.runs_of(Scenario::S1)
                .filter_map(|r| r.load.as_ref()?.send_delay.as_ref())
                .map(|d| d.p99_ms),
        );
        let load = stat(p.runs_of(Scenario::S1).map(|r| r.loadavg_after[0]));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.label,
            spread(p.s1(Quantile::P50), 3),
            spread(p.s1(Quantile::P99), 3),
            spread(p.s1(Quantile::P999), 3),
            spread(p.cpu_per_1k(Scenario::S1, Some("client")), 3),
            spread(p.cpu_per_1k(Scenario::S1, Some("server")), 3),
            f(p.accepts_per_request(Scenario::S1).map(|x| x.median), 3),
            spread(delay, 3),
            spread(load, 2),
            errors
        );
    }
    let _ = writeln!(
        s,
        "\nS2: closed loop, {} keep-alive connections; S3: {} clients, a new connection per request ({:?} each).\n",
        a.s2_connections, a.s3_concurrency, a.s2_duration
    );
    let _ = writeln!(
        s,
        "| pair | S2 req/s | S2 p99 ms | S2 CPU-s/1k A | B | S3 conn/s | S3 CPU ms per conn A | B | S3 accepts per request | errors |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in r.pairs.iter().filter(|p| !p.runs.is_empty()) {
        let errors: u64 = p
            .runs
            .iter()
            .filter(|r| matches!(r.scenario, Scenario::S2 | Scenario::S3))
            .filter_map(|r| r.load.as_ref())
            .map(|l| l.errors + l.incomplete)
            .sum();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.label,
            spread(p.s2(), 0),
            spread(p.load_stat(Scenario::S2, |l| l.latency.p99_ms), 3),
            spread(p.cpu_per_1k(Scenario::S2, Some("client")), 3),
            spread(p.cpu_per_1k(Scenario::S2, Some("server")), 3),
            spread(p.s3(), 0),
            spread(p.cpu_per_1k(Scenario::S3, Some("client")), 3),
            spread(p.cpu_per_1k(Scenario::S3, Some("server")), 3),
            f(p.accepts_per_request(Scenario::S3).map(|x| x.median), 2),
            errors
        );
    }
    let _ = writeln!(
        s,
        "\nS4: bulk TCP through the pair ({:?} measured per run, counted at the sender after the warm-up).\n",
        a.s4_duration
    );
    let _ = writeln!(
        s,
        "| pair | 1 stream Gbit/s | 4 streams Gbit/s |\n|---|---|---|"
    );
    for p in r.pairs.iter().filter(|p| !p.runs.is_empty()) {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            p.label,
            spread(p.s4(1), 2),
            spread(p.s4(4), 2)
        );
    }
    let _ = writeln!(
        s,
        "\nS5 idle memory (KiB) by kind: RSS counts the binary's mapped code in full in every process; PSS divides shared pages among the processes mapping them; anonymous is heap and stacks.\n"
    );
    let _ = writeln!(
        s,
        "| pair | RSS A | RSS B | PSS A | PSS B | anonymous A | anonymous B |\n|---|---|---|---|---|---|---|"
    );
    for p in r.pairs.iter().filter(|p| p.is_proxy()) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.label,
            kib(&p.idle_rss_kib, "client"),
            kib(&p.idle_rss_kib, "server"),
            kib(&p.idle_pss_kib, "client"),
            kib(&p.idle_pss_kib, "server"),
            kib(&p.idle_anon_kib, "client"),
            kib(&p.idle_anon_kib, "server")
        );
    }
    let _ = writeln!(
        s,
        "\nS5/S6: RSS (KiB) of each proxy (process tree) idle after start, peak after S1–S4, and with N idle mTLS connections (fresh processes).\n"
    );
    let _ = writeln!(
        s,
        "| pair | idle A | idle B | peak A | peak B | N held | A before → with N | B before → with N | KiB/conn A | B |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in r.pairs.iter().filter(|p| p.is_proxy()) {
        let (held, ba, bb, ka, kb) = match &p.s6 {
            Some(x) => (
                thousands(x.held as f64),
                format!(
                    "{} → {}",
                    kib(&x.rss_before_kib, "client"),
                    kib(&x.rss_after_kib, "client")
                ),
                format!(
                    "{} → {}",
                    kib(&x.rss_before_kib, "server"),
                    kib(&x.rss_after_kib, "server")
                ),
                f(x.kib_per_connection.get("client").copied(), 1),
                f(x.kib_per_connection.get("server").copied(), 1),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into(), "–".into()),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.label,
            kib(&p.idle_rss_kib, "client"),
            kib(&p.idle_rss_kib, "server"),
            kib(&p.hwm_kib, "client"),
            kib(&p.hwm_kib, "server"),
            held,
            ba,
            bb,
            ka,
            kb
        );
    }
    let _ = writeln!(
        s,
        "\nHop TLS as seen on the wire (ClientHello / ServerHello through a relay on an extra route):\n"
    );
    let _ = writeln!(
        s,
        "| pair | version | client offered | client key shares | server chose | a reconnect resumes |\n|---|---|---|---|---|---|"
    );
    for p in r.pairs.iter().filter(|p| p.is_proxy()) {
        if let Some(t) = &p.tls {
            let o = &t.first;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                p.label,
                o.version.clone().unwrap_or_default(),
                o.offered.join(", "),
                o.client_key_shares.join(", "),
                tls_group(p),
                match t.resumed_on_reconnect {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "?",
                }
            );
        }
    }
    for p in r.pairs.iter().filter(|p| p.error.is_some()) {
        let _ = writeln!(
            s,
            "\n{} reported: `{}`",
            p.label,
            p.error.as_deref().unwrap_or("").replace('\n', " ")
        );
    }
    s
}

const COLORS: [&str; 5] = ["#555555", "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e"];

/// The S1 latency-by-percentile plot (log latency over "nines").
pub fn svg(r: &Results) -> String {
    let (w, h) = (760.0, 440.0);
    let (ml, mr, mt, mb) = (70.0, 170.0, 40.0, 50.0);
    let series: Vec<(&PairResult, Vec<(f64, f64)>)> = r
        .pairs
        .iter()
        .filter_map(|p| Some((p, p.s1_median_run()?.curve.clone())))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let max_x = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let ys = series
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.1))
        .filter(|y| *y > 0.0);
    let lo = ys.clone().fold(f64::INFINITY, f64::min);
    let hi = ys.fold(0.0, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (
            10f64.powf(lo.log10().floor()),
            10f64.powf(hi.log10().ceil()),
        )
    } else {
        (0.01, 10.0)
    };
    let px = |x: f64| ml + x / max_x * (w - ml - mr);
    let py = |y: f64| {
        let t = (y.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10());
        h - mb - t * (h - mt - mb)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{ml}" y="22" font-size="14">S1: latency by percentile, 1 KiB HTTP/1.1 at {} req/s over {} connections (median run)</text>"#,
        r.settings.s1_rate, r.settings.s1_connections
    );
    // Horizontal grid: one line per decade.
    let mut d = lo;
    while d <= hi * 1.0001 {
        let y = py(d);
        let _ = writeln!(
            s,
            r##"<line x1="{ml}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#dddddd"/>"##,
            w - mr
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{} ms</text>"#,
            ml - 6.0,
            y + 4.0,
            trim_num(d)
        );
        d *= 10.0;
    }
    // Vertical grid: p0, p90, p99, p99.9, ...
    let mut n = 0.0;
    while n <= max_x + 1e-9 {
        let x = px(n);
        let label = match n as u32 {
            0 => "p0".to_string(),
            k => format!("p{}", 100.0 - 100.0 / 10f64.powi(k as i32)),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{mt}" x2="{x:.1}" y2="{:.1}" stroke="#dddddd"/>"##,
            h - mb
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            h - mb + 18.0
        );
        n += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        (ml + w - mr) / 2.0,
        h - 10.0
    );
    for (i, (p, c)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<String> = c
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        let ly = mt + 10.0 + i as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="3"/>"#,
            w - mr + 12.0,
            w - mr + 36.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            w - mr + 42.0,
            ly + 4.0,
            p.label
        );
    }
    s += "</svg>\n";
    s
}

fn trim_num(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Lines for the terminal: the summary and the ratios.
pub fn ratios(r: &Results) -> String {
    let mut s = String::new();
    for t in targets(r) {
        let _ = writeln!(
            s,
            "{:<42} wanted {:<48} measured {:<40} {}",
            t.what,
            t.target,
            t.measured,
            mark(t.met).trim_matches('*')
        );
    }
    s
}

/// Writes latest.md, latest.json and latency.svg into `dir`.
pub fn write(r: &Results, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let md = dir.join("latest.md");
    std::fs::write(&md, markdown(r)).with_context(|| format!("cannot write {}", md.display()))?;
    let js = dir.join("latest.json");
    std::fs::write(&js, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("cannot write {}", js.display()))?;
    let sv = dir.join("latency.svg");
    std::fs::write(&sv, svg(r)).with_context(|| format!("cannot write {}", sv.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = stat([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(stat([1.0, 2.0, 4.0, 100.0]).unwrap().median, 3.0);
        assert!(stat([f64::NAN]).is_none());
        assert_eq!(thousands(25091.4), "25,091");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(trim_num(0.1), "0.1");
    }
}
