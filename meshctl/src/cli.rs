//! What the commands' flag modules share: writing stdout, warnings, the
//! usage error a command reports after parsing, duration flags.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::error::ErrorKind;

/// A usage error found after clap parsed the flags (two sources given, none
/// given): main.rs turns it into clap's own message and exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Usage {
    /// The subcommand, e.g. `["cert", "inspect"]`.
    pub path: &'static [&'static str],
    pub kind: ErrorKind,
    pub message: String,
}

impl Usage {
    pub fn new(path: &'static [&'static str], kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            path,
            kind,
            message: message.into(),
        }
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_identity::duration::parse_duration(s)
}

/// The runtime of a command that talks to the network.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The loader's notes (documents that are not policy), on stderr so they
/// never mix with the output a script parses.
pub fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Writes to stdout without `print!`'s panic when the reader has gone away
/// (`meshctl … | head`); a closed pipe is not an error worth reporting.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}
