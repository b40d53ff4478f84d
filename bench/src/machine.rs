//! What machine and which versions a result came from.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub started: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_mib: u64,
    pub kernel: String,
    pub os: String,
    /// 1, 5, 15-minute load averages at the start and the end of the run.
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    pub versions: BTreeMap<String, String>,
}

fn first_line_of(program: &str, args: &[&str], contains: &str) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.contains(contains))
        .map(|l| l.trim().to_string())
}

impl Machine {
    pub fn collect(bin_dir: &Path) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024;
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        let mut versions = BTreeMap::new();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                versions.insert(k.to_string(), v);
            }
        };
        put(
            "mesh-proxy",
            first_line_of(
                &bin_dir.join("mesh-proxy").display().to_string(),
                &["--version"],
                "mesh-proxy",
            ),
        );
        put("mesh-bench", Some(env!("CARGO_PKG_VERSION").to_string()));
        put(
            "palisade commit",
            first_line_of("git", &["log", "-1", "--format=%h %cs %s"], ""),
        );
        put("rustc", first_line_of("rustc", &["--version"], "rustc"));
        put("haproxy", first_line_of("haproxy", &["-v"], "version"));
        put("nginx", first_line_of("nginx", &["-v"], "nginx"));
        put(
            "stunnel",
            first_line_of("stunnel4", &["-version"], "stunnel "),
        );
        put("openssl", first_line_of("openssl", &["version"], "OpenSSL"));
        for krate in ["rustls", "aws-lc-rs", "tokio"] {
            put(krate, locked_version(krate));
        }
        Self {
            started: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            cpu_model,
            // Not available_parallelism(): the generator thread is pinned by now.
            cpus: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count(),
            memory_mib,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            os,
            load_before: crate::procs::loadavg(),
            load_after: [f64::NAN; 3],
            versions,
        }
    }
}

/// The version of `krate` in ./Cargo.lock (the run starts at the repo root).
fn locked_version(krate: &str) -> Option<String> {
    let lock = std::fs::read_to_string("Cargo.lock").ok()?;
    let needle = format!("name = \"{krate}\"\nversion = \"");
    let i = lock.find(&needle)? + needle.len();
    lock[i..].split('"').next().map(str::to_string)
}
