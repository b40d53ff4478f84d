//! `meshctl policy …` flags, kept beside the commands so main.rs only
//! dispatches.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgGroup, ArgMatches, Args, Subcommand};
use mesh_policy::{DEFAULT_TRUST_DOMAIN, Labels};

use super::{Call, Caller, HttpCall, check, lint};
use crate::cert::Output;
use crate::cli::{Usage, parse_duration, runtime, warn, write_stdout};

/// `policy check`: the call was denied. Distinct from 1 (meshctl failed)
/// and 2 (usage), so a script can tell "no" from "could not answer".
pub const EXIT_DENIED: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Would this call be allowed? Ask the mesh's evaluator, offline, against a folder
    #[command(
        long_about = "Would this call be allowed? Asks the evaluator the proxies run, \
        offline, against a folder of policy YAML (the control plane's --config-dir), and \
        prints the decision and what decided it.\n\n\
        The caller is an mTLS workload (--from-namespace NS --from-service-account SA; its \
        identity is spiffe://TD/ns/NS/sa/SA, TD being --trust-domain, and `cluster.local` \
        in a policy stands for TD) or a plaintext client (--plaintext). With --from-labels \
        the source pod is known as well: its NetworkPolicy egress is checked, as its own \
        proxy does, and ingress podSelectors can match it. Without them only its identity \
        is known, as at a proxy that has no discovery data for it.\n\n\
        The call is plain TCP unless --method or --path is given; then it is an HTTP \
        request (method GET and path / unless given) and the path is normalized as the \
        proxy normalizes it. A path the proxy refuses is a deny at stage `request` \
        (the proxy answers 400).\n\n\
        Checks run in the proxies' order: the source's NetworkPolicy egress; at the \
        destination PeerAuthentication (plaintext is refused unless PERMISSIVE or DISABLE), \
        NetworkPolicy ingress, AuthorizationPolicy (DENY before ALLOW). Exceptions with \
        palisade.dev/expires-at are judged at the current time. Dry-run objects never \
        change the answer; what they would deny is shown.\n\n\
        Output: `allow: <what decided>` or `deny: <what decided>`, where what decided is \
        `<kind> <namespace>/<name> rule <n>`, `<kind> <namespace>/<name>`, `default deny` \
        or `default allow`; then the stage, any dry-run would-deny, the AUDIT rule that \
        matched, the caller and the normalized path. -o json prints one object: \
        {\"decision\": \"allow\"|\"deny\", \"label\", \"stage\", \"decided_by\", \
        \"direction\", \"dry_run\", \"audit\", \"principal\", \"path\", \"status\"}.\n\n\
        Traffic management, for an HTTP request: the RateLimitPolicies it counts against \
        at the destination (`limit:` lines; JSON \"rate_limits\": [{\"policy\", \"dry_run\", \
        \"total\", \"per_client\", \"override\"}], absent when none applies), and with \
        --to-service NAME:PORT the HTTPRoute rule it takes at the caller's proxy, its \
        backends and weights, timeouts and retry (`route:`; JSON \"route\": null for none, \
        or {\"name\", \"backends\", \"request_timeout_ms\", \"backend_request_timeout_ms\", \
        \"retry\"}).\n\n\
        Exit status: 0 allowed (also when a dry-run object would deny), 3 denied, \
        1 error (e.g. the folder does not load; the message names the file, object and \
        field), 2 usage error.\n\n\
        Examples:\n  \
        meshctl policy check --config-dir policies --from-namespace shop \\\n      \
        --from-service-account web --to-namespace shop --to-labels app=api \\\n      \
        --port 8080 --method GET --path /api/orders\n  \
        meshctl policy check --config-dir policies --plaintext --to-namespace shop \\\n      \
        --to-labels app=api --port 9100 -o json"
    )]
    // Boxed: by far the largest set of flags.
    Check(Box<PolicyCheckArgs>),
    /// Find risky policy: allow-all rules, namespaces without a default deny, expired exceptions
    #[command(
        long_about = "Reviews a folder of policy YAML (it must load, as for `policy check`) \
        and lists findings, most severe first, one per line: \
        `<severity>: [<file>: ]<object>: <message> [<code>]`, then a summary.\n\n\
        Findings (code, severity):\n  \
        allow-all            warning (error when mesh-wide): an ALLOW rule with no from, to\n                       \
        or when, or whose sources are only wildcards (principals: [\"*\"],\n                       \
        namespaces: [\"*\"], 0.0.0.0/0); a NetworkPolicy ingress rule {}\n  \
        no-default-deny      warning: a namespace (from Namespace objects and the namespaces\n                       \
        of all objects) without a default deny, see below\n  \
        unrestricted-egress  warning: no NetworkPolicy with Egress in a namespace, or an\n                       \
        egress rule to any destination (no `to`, or 0.0.0.0/0 or ::/0\n                       \
        without except) on every port; info: the same limited to some\n                       \
        ports, or Egress policies that leave some pods out\n  \
        expired              warning: palisade.dev/expires-at has passed\n  \
        expires-soon         info: it passes within --soon\n  \
        dry-run              warning: palisade.dev/dry-run is \"true\" (nothing is enforced)\n  \
        permissive-mtls      warning: a PeerAuthentication admits plaintext (PERMISSIVE or\n                       \
        DISABLE); info when it has an expires-at\n\n\
        A namespace has a default deny when a request that no policy mentions is denied \
        for every workload in it: an ALLOW AuthorizationPolicy without a selector (e.g. \
        `spec: {}`) and without an allow-all rule is in force in the namespace or in the \
        root namespace mesh-system, or \
        a NetworkPolicy in the namespace with `podSelector: {}` isolates all pods for \
        ingress. Dry-run and expired objects do not count.\n\n\
        Exit status: 0 when no finding is a warning or an error (info only, or none), \
        1 when one is, or when the folder does not load, 2 usage error.\n\n\
        Examples:\n  \
        meshctl policy lint --config-dir policies\n  \
        meshctl policy lint --config-dir policies --soon 14d -o json"
    )]
    Lint(PolicyLintArgs),
    /// Which flows the mesh carries would a folder change? Replay them before pushing it
    #[command(
        long_about = "Replays the flows the control plane has seen (its admin GET /flows, \
        the last --since) against a proposed folder of policy with the proxies' evaluator, \
        and lists every flow whose decision would change: allowed now and denied by the \
        folder (the traffic it would break), or denied now and allowed by it, each with \
        the rule that decided it then and the one that would decide it. Flows are replayed \
        as connections (source identity and labels, destination workload, port): rules \
        that read HTTP fields are noted, not replayed per request.\n\n\
        Exit status: 0 when nothing would change, 1 when something would (or the folder \
        does not load), 2 usage error.\n\n\
        Example:\n  \
        meshctl policy preview --config-dir new-policies --admin 127.0.0.1:9990 --since 1h"
    )]
    Preview(PolicyPreviewArgs),
    /// Show the policy snapshot a running proxy enforces
    #[command(
        long_about = "Shows the policy snapshot a running proxy enforces, from its admin \
        GET /policy: version, when it was received, the next expiry of a time-limited \
        exception, and its objects (kind, namespace/name, dry-run, expires-at; an expiry \
        that has passed is marked). -o json prints the admin's JSON as it was sent.\n\n\
        Exit status: 0, or 1 if the proxy cannot be reached, has no policy yet (it \
        answers 503), or answers something else.\n\n\
        Examples:\n  \
        meshctl policy get --admin http://127.0.0.1:4191\n  \
        meshctl policy get --admin 10.0.0.7:4191 -o json"
    )]
    Get(PolicyGetArgs),
}

// The caller (--from-service-account or --plaintext) is not a clap
// ArgGroup: MESH_PLAINTEXT=false in the environment would count as given,
// and a caller on the command line must win over one from the environment.
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("http").args(["method", "path"]).multiple(true)),
    override_usage = "meshctl policy check [OPTIONS] --config-dir DIR \
        <--from-namespace NS --from-service-account SA | --plaintext> \
        --to-namespace NS --to-labels K=V,… --port P"
)]
pub struct PolicyCheckArgs {
    /// Folder of policy YAML, as the control plane's --config-dir
    #[arg(long, env = "MESH_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: PathBuf,
    /// Namespace of the caller (of its identity, and of its pod)
    #[arg(long, env = "MESH_FROM_NAMESPACE", value_name = "NS")]
    pub from_namespace: Option<String>,
    /// Service account of an mTLS caller: spiffe://TD/ns/NS/sa/SA
    #[arg(long, env = "MESH_FROM_SERVICE_ACCOUNT", value_name = "SA")]
    pub from_service_account: Option<String>,
    /// The caller has no client certificate (no identity)
    #[arg(long, env = "MESH_PLAINTEXT")]
    pub plaintext: bool,
    /// Labels of the caller's pod; also checks its NetworkPolicy egress
    #[arg(
        long,
        env = "MESH_FROM_LABELS",
        value_name = "K=V,…",
        value_parser = parse_labels,
        requires = "from_namespace"
    )]
    pub from_labels: Option<Labels>,
    /// Address of the caller (ipBlocks, source.ip)
    #[arg(long, env = "MESH_SOURCE_IP", value_name = "IP")]
    pub source_ip: Option<IpAddr>,
    /// Namespace of the destination workload
    #[arg(long, env = "MESH_TO_NAMESPACE", value_name = "NS")]
    pub to_namespace: String,
    /// Labels of the destination pod ("" for none)
    #[arg(long, env = "MESH_TO_LABELS", value_name = "K=V,…", value_parser = parse_labels)]
    pub to_labels: Labels,
    /// Address of the destination (NetworkPolicy ipBlock, destination.ip)
    #[arg(long, env = "MESH_TO_IP", value_name = "IP")]
    pub to_ip: Option<IpAddr>,
    /// Destination port
    #[arg(long, env = "MESH_PORT", value_name = "P", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// HTTP method (makes the call an HTTP request; default GET)
    #[arg(long, env = "MESH_METHOD", value_name = "M")]
    pub method: Option<String>,
    /// HTTP request path, as sent (makes the call an HTTP request; default /)
    #[arg(long, env = "MESH_PATH", value_name = "P")]
    pub path: Option<String>,
    /// HTTP Host header (needs --method or --path)
    #[arg(long, env = "MESH_HOST", value_name = "H", requires = "http")]
    pub host: Option<String>,
    /// HTTP request header, repeatable (needs --method or --path)
    #[arg(
        long = "header",
        env = "MESH_HEADER",
        value_name = "K=V",
        value_parser = parse_header,
        requires = "http"
    )]
    pub headers: Vec<(String, String)>,
    /// The Service called (NAME:PORT, in --to-namespace): also show the route the request takes
    #[arg(long, env = "MESH_TO_SERVICE", value_name = "NAME:PORT", value_parser = parse_service, requires = "http")]
    pub to_service: Option<(String, u16)>,
    /// The mesh's trust domain
    #[arg(long, env = "MESH_TRUST_DOMAIN", value_name = "TD", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

fn parse_service(s: &str) -> Result<(String, u16), String> {
    let (name, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not NAME:PORT (e.g. api:80)"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port:?} is not a port (1-65535)"))?;
    if name.is_empty() || name.contains('/') {
        return Err(format!("{name:?} is not a Service name"));
    }
    Ok((name.to_owned(), port))
}

#[derive(Debug, Args)]
pub struct PolicyPreviewArgs {
    /// The proposed folder of policy YAML
    #[arg(long, env = "MESH_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: PathBuf,
    /// The control plane's admin address (reads GET /flows)
    #[arg(
        long,
        env = "MESH_CONTROL_PLANE_ADMIN",
        default_value = "http://127.0.0.1:9990"
    )]
    pub admin: String,
    /// Replay the flows seen this recently
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub since: Duration,
    /// The mesh's trust domain (`cluster.local` in a policy stands for it)
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Give up on the admin after this long
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct PolicyLintArgs {
    /// Folder of policy YAML, as the control plane's --config-dir
    #[arg(long, env = "MESH_CONFIG_DIR", value_name = "DIR")]
    pub config_dir: PathBuf,
    /// Report exceptions that expire within this long: 12h, 7d
    #[arg(
        long,
        env = "MESH_SOON",
        value_name = "DURATION",
        default_value = "7d",
        value_parser = parse_duration
    )]
    pub soon: Duration,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct PolicyGetArgs {
    /// Proxy admin address, e.g. http://127.0.0.1:4191 (reads GET /policy)
    #[arg(long, env = "MESH_ADMIN", value_name = "URL")]
    pub admin: String,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Give up after this long: 5s, 1m
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn parse_labels(s: &str) -> Result<Labels, String> {
    super::parse_labels(s).map_err(|e| e.to_string())
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    super::parse_header(s).map_err(|e| e.to_string())
}

/// `matches` are the subcommand's own (`policy check`), to tell flags given
/// on the command line from those of the environment.
pub fn run(command: PolicyCommand, matches: Option<&ArgMatches>) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check(a) => policy_check(*a, matches),
        PolicyCommand::Lint(a) => {
            let (report, warnings) = lint::lint_dir(&a.config_dir, SystemTime::now(), a.soon)?;
            warn(&warnings);
            write_stdout(&match a.output {
                Output::Table => report.to_table(),
                Output::Json => report.to_json(),
            })?;
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        PolicyCommand::Preview(a) => {
            let loaded = super::load(&a.config_dir)?;
            warn(&loaded.warnings);
            let evaluator = mesh_policy::Evaluator::compile(&loaded.snapshot, &a.trust_domain)?;
            let doc = runtime()?.block_on(crate::flows::fetch(&a.admin, a.timeout))?;
            let flows = super::preview::parse(&doc)
                .map_err(|e| anyhow::anyhow!("{}: not a /flows document: {e}", a.admin))?;
            let now = SystemTime::now();
            let since = now
                .checked_sub(a.since)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let p = super::preview::preview(&flows, &evaluator, since, now);
            write_stdout(&match a.output {
                Output::Table => p.to_table(),
                Output::Json => format!("{}\n", serde_json::to_string_pretty(&p)?),
            })?;
            Ok(if p.changes.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PolicyCommand::Get(a) => {
            let doc = runtime()?.block_on(super::get::fetch(&a.admin, a.timeout))?;
            if let Some(why) = &doc.refused {
                eprintln!(
                    "warning: this meshctl's policy checks refuse the proxy's snapshot (is \
                     meshctl older than the proxy?): {why}"
                );
            }
            write_stdout(&match a.output {
                Output::Table => doc.to_table(SystemTime::now()),
                Output::Json => doc.to_json(),
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn policy_check(mut a: PolicyCheckArgs, matches: Option<&ArgMatches>) -> anyhow::Result<ExitCode> {
    let caller = check_caller(&mut a, matches)?;
    let http = (a.method.is_some() || a.path.is_some()).then(|| HttpCall {
        method: a.method.unwrap_or_else(|| "GET".to_owned()),
        path: a.path.unwrap_or_else(|| "/".to_owned()),
        host: a.host,
        headers: a.headers,
    });
    let call = Call {
        caller,
        from_labels: a.from_labels,
        source_ip: a.source_ip,
        to_namespace: a.to_namespace,
        to_labels: a.to_labels,
        to_ip: a.to_ip,
        port: a.port,
        http,
        service: a.to_service,
    };
    let (report, warnings) =
        check::check_dir(&a.config_dir, &a.trust_domain, &call, SystemTime::now())?;
    warn(&warnings);
    write_stdout(&match a.output {
        Output::Table => report.to_table(),
        Output::Json => report.to_json(),
    })?;
    Ok(if report.is_allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DENIED)
    })
}

/// The caller of `policy check`: an identity or `--plaintext`, exactly one.
/// When one comes from the command line and the other from the
/// environment, the command line wins; anything else is a usage error.
fn check_caller(a: &mut PolicyCheckArgs, matches: Option<&ArgMatches>) -> Result<Caller, Usage> {
    const PATH: [&str; 2] = ["policy", "check"];
    let from_command_line =
        |id: &str| matches.and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine);
    let mtls = match (a.plaintext, a.from_service_account.take()) {
        (false, None) => {
            return Err(Usage::new(
                &PATH,
                ErrorKind::MissingRequiredArgument,
                "give the caller: --from-namespace NS --from-service-account SA (mTLS), or --plaintext",
            ));
        }
        (false, Some(sa)) => Some(sa),
        (true, None) => None,
        (true, Some(sa)) => {
            match (
                from_command_line("plaintext"),
                from_command_line("from_service_account"),
            ) {
                (true, false) => None,
                (false, true) => Some(sa),
                _ => {
                    return Err(Usage::new(
                        &PATH,
                        ErrorKind::ArgumentConflict,
                        "give either --from-service-account SA or --plaintext, not both",
                    ));
                }
            }
        }
    };
    Ok(match (mtls, a.from_namespace.take()) {
        (Some(service_account), Some(namespace)) => Caller::Mtls {
            namespace,
            service_account,
        },
        (Some(_), None) => {
            return Err(Usage::new(
                &PATH,
                ErrorKind::MissingRequiredArgument,
                "--from-service-account needs --from-namespace NS",
            ));
        }
        (None, namespace) => Caller::Plaintext { namespace },
    })
}
