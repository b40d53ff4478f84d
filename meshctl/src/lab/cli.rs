//! `meshctl lab …` flags, kept beside the lab so main.rs only dispatches.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{Options, spec, state, status};

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build the lab described in DIR and return once every pod is ready
    #[command(
        long_about = "Build the lab described in DIR and return once every pod is ready.\n\n\
        DIR holds lab.yaml (the pods: namespace, service account, labels, IP, app \
        commands) and the YAML the control plane watches (Services, \
        AuthorizationPolicy, PeerAuthentication, NetworkPolicy, Namespace). Each pod \
        becomes a network namespace <name>-<pod> with a veth into the bridge \
        <name>-br0; meshed pods get `mesh-proxy init` and `mesh-proxy run` (UID 2102), \
        and the apps run as UID 1000 so their traffic goes through the proxy. The \
        control plane listens on the bridge's address. The lab keeps running in the \
        background until `meshctl lab down`.\n\n\
        Needs root. Example:\n  \
        meshctl lab up examples/lab && meshctl lab status"
    )]
    Up(UpArgs),
    /// Remove every namespace, link, file and process of a lab (also after a crash)
    Down(NameArgs),
    /// Pods, identities, certificate expiry and traffic counters of a running lab
    Status(StatusArgs),
    /// Stop one pod's proxy and apps (the pod leaves the mesh, like a replica scaled down)
    Stop(PodArgs),
    /// Start a stopped pod again and wait until it is ready
    Start(PodArgs),
}

#[derive(Debug, Args)]
pub struct Common {
    /// Lab name (prefix of its namespaces and links); default: lab.yaml's `name`, else `pal`
    #[arg(long, env = "MESH_NAME")]
    pub name: Option<String>,
    /// Where labs keep their state (PIDs, logs, certificates' data dir, config copy)
    #[arg(long, env = "MESH_STATE_DIR", default_value = state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Folder with lab.yaml and the policy/Service YAML
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub common: Common,
    /// Folder of mesh-control-plane, mesh-proxy and mesh-echo; default: meshctl's own
    #[arg(long, env = "MESH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Give up when the pods are not ready after this long: 30s, 1m
    #[arg(long, env = "MESH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// When up fails, leave what was built in place to look at (lab down removes it)
    #[arg(long, env = "MESH_KEEP_ON_FAILURE")]
    pub keep_on_failure: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The lab's folder, to read its name from lab.yaml
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub lab: NameArgs,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct PodArgs {
    /// The pod's name in lab.yaml
    pub pod: String,
    #[command(flatten)]
    pub common: Common,
    /// Folder of mesh-proxy; default: meshctl's own
    #[arg(long, env = "MESH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Give up when the pod is not ready after this long
    #[arg(long, env = "MESH_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_identity::duration::parse_duration(s)
}

fn options(common: &Common, name: String) -> Options {
    Options {
        name: Some(name),
        state_dir: common.state_dir.clone(),
        ..Options::default()
    }
}

/// Runs one `meshctl lab` command.
pub fn run(cmd: LabCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LabCommand::Up(a) => {
            let opts = Options {
                name: a.common.name.clone(),
                state_dir: a.common.state_dir.clone(),
                bin_dir: a.bin_dir.clone(),
                timeout: a.timeout,
                keep_on_failure: a.keep_on_failure,
            };
            let up =
                super::up(&a.dir, &opts).with_context(|| format!("lab up {}", a.dir.display()))?;
            let s = &up.state;
            let mut out = format!(
                "lab {} is up in {:.1}s: {} pods on {}, control plane {}\n",
                s.name,
                up.elapsed.as_secs_f64(),
                s.pods.len(),
                s.network,
                s.control_plane
                    .as_ref()
                    .map(|c| c.listen.to_string())
                    .unwrap_or_default(),
            );
            for p in &s.pods {
                let who = if p.sidecar {
                    format!(
                        "spiffe://{}/ns/{}/sa/{}",
                        s.trust_domain, p.namespace, p.service_account
                    )
                } else {
                    "(no sidecar)".into()
                };
                out.push_str(&format!(
                    "  {:<12} {:<15} {who}\n",
                    p.name,
                    p.ip.to_string()
                ));
            }
            let name_flag = if s.name == spec::DEFAULT_NAME {
                String::new()
            } else {
                format!(" --name {}", s.name)
            };
            if let Some(cp) = &s.control_plane {
                out.push_str(&format!(
                    "\nflow map: http://{}/map (meshctl flows --admin {}; meshctl quarantine list --admin {})\n",
                    cp.admin, cp.admin, cp.admin
                ));
            }
            out.push_str(&format!(
                "\nstate and logs: {}\npolicy (edit live): {}\n\
                 run a command in a pod: ip netns exec {}-<pod> setpriv --reuid 1000 --regid 1000 --clear-groups curl …\n\
                 next: meshctl lab status{name_flag}; meshctl lab down{name_flag}\n",
                up.paths.root.display(),
                up.paths.config().display(),
                s.name,
            ));
            print(&out)
        }
        LabCommand::Down(a) => {
            let name = super::resolve_name(a.common.name.as_deref(), a.dir.as_deref())?;
            let report = super::down(&name, &options(&a.common, name.clone()))?;
            if report.is_empty() {
                print(&format!("lab {name}: nothing to remove\n"))
            } else {
                print(&format!(
                    "lab {name} is down: stopped {} processes, removed {} namespaces and {} links\n",
                    report.processes,
                    report.netns.len(),
                    report.links.len()
                ))
            }
        }
        LabCommand::Status(a) => {
            let name = super::resolve_name(a.lab.common.name.as_deref(), a.lab.dir.as_deref())?;
            let (state, paths) = super::load_state(&name, &options(&a.lab.common, name.clone()))?;
            let st = status::collect(&state, &paths);
            match a.output {
                Format::Table => print(&status::render(&st)),
                Format::Json => print(&format!("{}\n", serde_json::to_string_pretty(&st)?)),
            }
        }
        LabCommand::Stop(a) => {
            let name = super::resolve_name(a.common.name.as_deref(), None)?;
            super::stop_pod(&name, &a.pod, &options(&a.common, name.clone()))?;
            print(&format!("lab {name}: pod {} stopped\n", a.pod))
        }
        LabCommand::Start(a) => {
            let name = super::resolve_name(a.common.name.as_deref(), None)?;
            let opts = Options {
                bin_dir: a.bin_dir.clone(),
                timeout: a.timeout,
                ..options(&a.common, name.clone())
            };
            super::start_pod(&name, &a.pod, &opts)?;
            print(&format!("lab {name}: pod {} is ready\n", a.pod))
        }
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn print(text: &str) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
