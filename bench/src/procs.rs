//! Child processes (started pinned, stopped by PID) and what /proc says about
//! them: CPU time, RSS, the process tree; and machine-wide counters.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How often conditions are polled while waiting for them.
const POLL: Duration = Duration::from_millis(10);
/// A stopped process gets this long to exit after SIGTERM before SIGKILL.
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A process this run started. Dropping it stops it (by PID).
#[derive(Debug)]
pub struct Child {
    pub name: String,
    child: std::process::Child,
    pub log: PathBuf,
}

/// Starts `program args` pinned to `cpu` (through `taskset`, which execs the
/// program so the PID is the program's own), output to `log`.
pub fn spawn(
    name: &str,
    cpu: Option<usize>,
    program: &Path,
    args: &[String],
    env: &[(&str, &str)],
    log: PathBuf,
) -> anyhow::Result<Child> {
    let mut cmd = match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = std::fs::File::create(&log).with_context(|| format!("log {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    // If this process dies without stopping its children (killed, or a
    // panic that skips Drop), they get SIGTERM instead of running on.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name} ({})", program.display()))?;
    Ok(Child {
        name: name.to_string(),
        child,
        log,
    })
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error with the log's tail if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            anyhow::bail!(
                "{} exited ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 20)
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL at the deadline. Always reaps.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        signal(self.pid(), libc::SIGTERM);
        let end = Instant::now() + STOP_DEADLINE;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a PID this process started and has not reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Polls `f` until it returns `Some` or `deadline` passes.
pub fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > end {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Whether something accepts TCP connections at `addr`.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Status code of `GET path` on a plain-HTTP admin endpoint.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = std::str::from_utf8(&buf[..n]).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

/// The body of `GET path` on a plain-HTTP admin endpoint (read to close).
pub fn http_body(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (_, body) = out.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

/// A free loopback port (bound then released; the window for a clash is tiny
/// on this machine and a clash fails loudly at bind).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `n` distinct free loopback ports (all held until every one is known).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Kernel clock ticks per second, the unit of utime/stime.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Fields of /proc/PID/stat after the command name: index 0 is field 3
/// (state), so field N (1-based, as in proc(5)) is at N - 3.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; it ends at the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// utime + stime of one process (all its threads, live and exited), in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    let utime: u64 = f.get(14 - 3)?.parse().ok()?;
    let stime: u64 = f.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

fn ppid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(4 - 3)?.parse().ok()
}

/// `pid` and all its descendants (e.g. nginx's master and worker).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some(pp) = ppid(p)
            {
                all.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// CPU seconds used so far by a process tree.
pub fn tree_cpu_secs(pid: u32) -> f64 {
    let ticks: u64 = tree(pid).iter().filter_map(|p| cpu_ticks(*p)).sum();
    ticks as f64 / clock_ticks() as f64
}

/// `name: value kB` fields of a /proc file, in the order asked.
fn kib_fields<const N: usize>(path: &str, names: [&str; N]) -> Option<[u64; N]> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut out = [0; N];
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = s
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())?;
    }
    Some(out)
}

/// VmRSS and VmHWM in KiB.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let [rss, hwm] = kib_fields(&format!("/proc/{pid}/status"), ["VmRSS:", "VmHWM:"])?;
    Some((rss, hwm))
}

/// PSS (shared pages divided among the processes that map them) and
/// anonymous memory (heap, stacks) in KiB, from /proc/PID/smaps_rollup.
/// RSS counts a binary's mapped code in full for every process; PSS and
/// anonymous memory say what one more proxy really costs.
pub fn pss_anon_kib(pid: u32) -> Option<(u64, u64)> {
    let [pss, anon] = kib_fields(&format!("/proc/{pid}/smaps_rollup"), ["Pss:", "Anonymous:"])?;
    Some((pss, anon))
}

/// PSS and anonymous memory of a process tree, in KiB.
pub fn tree_pss_anon_kib(pid: u32) -> (u64, u64) {
    tree(pid)
        .iter()
        .filter_map(|p| pss_anon_kib(*p))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
}

/// RSS and peak RSS of a process tree, in KiB (summed over its processes).
pub fn tree_memory_kib(pid: u32) -> (u64, u64) {
    tree(pid)
        .iter()
        .filter_map(|p| memory_kib(*p))
        .fold((0, 0), |(r, h), (r2, h2)| (r + r2, h + h2))
}

/// Machine-wide count of TCP connections accepted (`TcpPassiveOpens`):
/// tells pooled connections from a new connection per request.
pub fn passive_opens() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut tcp = s.lines().filter(|l| l.starts_with("Tcp:"));
    let names: Vec<&str> = tcp.next()?.split_whitespace().collect();
    let values: Vec<&str> = tcp.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "PassiveOpens")?;
    values.get(i)?.parse().ok()
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = s
        .split_whitespace()
        .take(3)
        .map(|x| x.parse::<f64>().unwrap_or(f64::NAN));
    [
        v.next().unwrap_or(f64::NAN),
        v.next().unwrap_or(f64::NAN),
        v.next().unwrap_or(f64::NAN),
    ]
}

/// Pins the calling thread (and the threads it starts later) to `cpu`.
pub fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for cpu < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::other("cpu index out of range"));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (inherited by children);
/// returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a stack struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        r.rlim_cur = r.rlim_max;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        let (rss, hwm) = memory_kib(me).unwrap();
        assert!(rss > 0 && hwm >= rss);
        assert!(tree(me).contains(&me));
        assert!(passive_opens().is_some());
        let (pss, anon) = pss_anon_kib(me).unwrap();
        assert!(pss > 0 && anon > 0);
        assert!(loadavg()[0] >= 0.0);
    }
}
