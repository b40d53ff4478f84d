//! `meshctl`, the Palisade operator CLI. This file only parses flags; the
//! work happens in the library modules so tests can call it directly.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use meshctl::cert::cli::CertCommand;
use meshctl::cli::Usage;
use meshctl::policy::cli::PolicyCommand;
use meshctl::token::cli::TokenCommand;

#[derive(Debug, Parser)]
#[command(
    name = "meshctl",
    version,
    about = "Operate a Palisade service mesh: join tokens, certificates, policy, Kubernetes install and injection",
    long_about = "Operate a Palisade service mesh.\n\n\
        Every flag can also be set through an environment variable named \
        MESH_<FLAG_IN_CAPS>, e.g. --data-dir is MESH_DATA_DIR.",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join tokens for workloads outside Kubernetes
    #[command(subcommand)]
    Token(TokenCommand),
    /// Workload certificates (X.509-SVIDs)
    #[command(subcommand)]
    Cert(CertCommand),
    /// The mesh CA: status, and trust-anchor rotation (begin, switch, finish)
    #[command(subcommand)]
    Ca(meshctl::ca::cli::CaCommand),
    /// Authorization policy: check a call offline, lint a folder, read a proxy's snapshot
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Traffic management: the routes, rate limits and endpoints a proxy holds
    #[command(subcommand)]
    Route(meshctl::route::cli::RouteCommand),
    /// Egress outside the mesh: where workloads went, and the policy that allows exactly that
    #[command(subcommand)]
    Egress(meshctl::egress::cli::EgressCommand),
    /// Who calls whom, decided how: the flows the control plane aggregated from the proxies
    #[command(
        long_about = "Prints the flows the control plane aggregated from every \
        proxy's reports (its admin GET /flows): source identity, destination workload, \
        port, decision (allow, deny, dry_run_deny) and the policy that decided, the total \
        and the rate of the last 10 seconds. --namespace keeps flows from or to one \
        namespace, --denied the denied ones; --watch prints again every second.\n\n\
        Examples:\n  \
        meshctl flows --admin 127.0.0.1:9990 --denied\n  \
        meshctl flows --namespace shop -o json"
    )]
    Flows(meshctl::flows::cli::FlowsArgs),
    /// Quarantines imposed by anomaly rules: list them, lift one
    #[command(subcommand)]
    Quarantine(meshctl::quarantine::cli::QuarantineCommand),
    /// A local mesh of network-namespace pods: lab up DIR, status, down
    #[command(subcommand)]
    Lab(meshctl::lab::cli::LabCommand),
    /// Add the Palisade proxy to the workloads of Kubernetes YAML (prints the result)
    #[command(
        long_about = "Add the Palisade proxy to the workloads of Kubernetes YAML, \
        offline, with the same patch the mesh-injector webhook applies, and print the \
        result on stdout (one line per workload on stderr says what happened).\n\n\
        Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs \
        (also as items of a v1 List) are meshed in their pod template; every other \
        document is printed unchanged. Already injected workloads, workloads with \
        palisade.dev/inject: disabled, hostNetwork pods and the kube-system and \
        mesh-system namespaces are left alone, so injecting twice changes nothing. \
        YAML comments are not kept.\n\n\
        Example:\n  \
        meshctl inject -f deploy.yaml | kubectl apply -f -"
    )]
    Inject(meshctl::inject::cli::InjectArgs),
    /// Remove what `meshctl inject` (or the webhook) added, restoring the workloads
    Uninject(meshctl::inject::cli::UninjectArgs),
    /// Print the Kubernetes manifests of Palisade: meshctl install | kubectl apply -f -
    #[command(
        long_about = "Print the Kubernetes manifests that install Palisade in the \
        mesh-system namespace: CRDs, ServiceAccounts and RBAC, the control plane \
        (2 replicas), the injector (2 replicas) and its MutatingWebhookConfiguration, \
        the mesh CA Secret (palisade-ca), the webhook's certificate and the trust bundle \
        ConfigMap.\n\n\
        Examples:\n  \
        meshctl install --secrets-dir ~/.palisade/prod | kubectl apply -f -\n  \
        meshctl install --set trustDomain=prod.example --set proxy.image=registry.example/proxy:1.0"
    )]
    Install(meshctl::install::cli::InstallArgs),
    /// Print what `meshctl install` created, for: meshctl uninstall | kubectl delete -f -
    Uninstall(meshctl::install::cli::UninstallArgs),
    /// Check a cluster before (--pre) or after installing Palisade
    #[command(
        long_about = "Check a cluster before (--pre) or after installing Palisade, \
        through the API server: it is reachable and 1.29 or newer (native sidecars); \
        the palisade-ca Secret's root and issuer are valid and not within 30 days of \
        expiry; the palisade-injector webhook has a caBundle and failurePolicy Fail; \
        the injector and the control plane have available replicas; and the meshed \
        pods' proxies hold certificates that are not expired or overdue for renewal \
        (read from their admin /certs through the API server's pod proxy, at most 100 \
        pods). --pre checks the API server and whether Palisade is already installed.\n\n\
        One line per check: ok, warn or FAIL, the check and what was found; -o json \
        prints {\"ok\": bool, \"checks\": [{\"check\", \"outcome\", \"detail\"}]}. \
        Exit status 1 when a check failed.\n\n\
        Example:\n  \
        kubectl proxy & meshctl check --kubernetes-api http://127.0.0.1:8001"
    )]
    Check(meshctl::check::cli::CheckArgs),
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            if let Some(u) = e.downcast_ref::<Usage>() {
                usage_error(u.path, u.kind, &u.message);
            }
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let sub = |a: &str, b: &str| {
        matches
            .subcommand_matches(a)
            .and_then(|m| m.subcommand_matches(b))
    };
    match cli.command {
        Command::Lab(c) => meshctl::lab::cli::run(c),
        Command::Route(c) => meshctl::route::cli::run(c),
        Command::Egress(c) => meshctl::egress::cli::run(c),
        Command::Flows(a) => meshctl::flows::cli::run(a),
        Command::Quarantine(c) => meshctl::quarantine::cli::run(c),
        Command::Ca(c) => meshctl::ca::cli::run(c),
        Command::Inject(a) => meshctl::inject::cli::inject(a).map(|()| ExitCode::SUCCESS),
        Command::Uninject(a) => meshctl::inject::cli::uninject(a).map(|()| ExitCode::SUCCESS),
        Command::Install(a) => meshctl::install::cli::install(a).map(|()| ExitCode::SUCCESS),
        Command::Uninstall(a) => meshctl::install::cli::uninstall(a).map(|()| ExitCode::SUCCESS),
        Command::Check(a) => meshctl::check::cli::run(a),
        Command::Token(c) => meshctl::token::cli::run(c),
        Command::Cert(c) => meshctl::cert::cli::run(c, sub("cert", "inspect")),
        Command::Policy(c) => meshctl::policy::cli::run(c, sub("policy", "check")),
    }
}

/// Exits with clap's usage error (exit code 2) for the subcommand at `path`,
/// e.g. `["cert", "inspect"]`.
fn usage_error(path: &[&str], kind: ErrorKind, msg: &str) -> ! {
    let mut cmd = Cli::command();
    // Building fills in the subcommands' "meshctl cert inspect" names.
    cmd.build();
    let mut sub = Some(&cmd);
    for name in path {
        sub = sub.and_then(|c| c.find_subcommand(name));
    }
    sub.cloned().unwrap_or(cmd).error(kind, msg).exit()
}
