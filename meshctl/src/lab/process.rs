//! The lab's processes: started detached (own session, logs in files) so the
//! lab outlives `meshctl lab up`, and stopped by PID.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::LabError;

/// How long a stopped process gets to exit on SIGTERM before SIGKILL. The
/// lab's proxies drain within their `--drain-timeout` of 1 s.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// The PATH lab processes see, after the directory of the mesh binaries.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where and as whom a process runs.
pub struct Spawn<'a> {
    /// `None`: the root network namespace.
    pub netns: Option<&'a str>,
    /// `None`: as the caller (root).
    pub uid: Option<u32>,
    pub program: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: &'a Path,
    /// Prepended to PATH, so apps can call the mesh binaries by name.
    pub bin_dir: &'a Path,
}

/// Starts a process in its own session (so it survives this command and
/// the terminal) and returns it. `ip netns exec` and `setpriv` exec in
/// place, so the child's PID is the program's own.
pub fn spawn(s: Spawn<'_>) -> Result<Child, LabError> {
    let mut argv: Vec<String> = Vec::new();
    if let Some(ns) = s.netns {
        argv.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    if let Some(uid) = s.uid {
        argv.extend(
            [
                "setpriv",
                "--reuid",
                &uid.to_string(),
                "--regid",
                &uid.to_string(),
            ]
            .map(String::from),
        );
        argv.extend(["--clear-groups", "--"].map(String::from));
    }
    argv.push(s.program.to_owned());
    argv.extend(s.args);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(s.log)
        .map_err(|e| LabError::Io {
            what: format!("cannot open log {}", s.log.display()),
            error: e,
        })?;
    let err = log.try_clone().map_err(|e| LabError::Io {
        what: format!("cannot open log {}", s.log.display()),
        error: e,
    })?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        // Our environment (MESH_* flags of the operator's shell among it)
        // must not leak into the lab's processes.
        .env_clear()
        .env("PATH", format!("{}:{SYSTEM_PATH}", s.bin_dir.display()))
        .env("HOME", "/tmp")
        .env("LANG", "C.UTF-8")
        .envs(s.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err));
    // SAFETY: setsid and umask are async-signal-safe and touch no memory
    // of ours.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Files the lab's processes write (the trust bundle above all)
            // must be readable by the others, whatever the caller's umask.
            libc::umask(0o022);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| LabError::Io {
        what: format!("cannot start {}", argv.join(" ")),
        error: e,
    })
}

/// Whether `pid` is a live process (a zombie is not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| !matches!(state, 'Z' | 'X')),
        Err(_) => false,
    }
}

/// The command line of `pid`, one string per argument.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process whose command line has `arg` as one of its arguments.
/// Finds a lab's control plane by its `--data-dir` even when the state file
/// that recorded its PID is gone.
pub fn with_argument(arg: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && cmdline(*pid).iter().any(|a| a == arg))
        .collect()
}

/// SIGTERM to each, then SIGKILL to those still alive after the grace time.
pub fn stop(pids: &[u32]) {
    signal(pids, libc::SIGTERM);
    let end = Instant::now() + TERM_GRACE;
    while Instant::now() < end && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    if !left.is_empty() {
        signal(&left, libc::SIGKILL);
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end && left.iter().any(|p| alive(*p)) {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn signal(pids: &[u32], sig: libc::c_int) {
    for &pid in pids {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            continue;
        };
        // PID 0 or 1 would signal a process group or init: never ours.
        if pid > 1 {
            // SAFETY: kill has no memory effects; a stale PID fails with ESRCH.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }
}

/// The last `lines` lines of a log, for error messages.
pub fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
