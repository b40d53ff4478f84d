//! `meshctl`, the Palisade operator CLI. This file only parses flags; the
//! work happens in the library modules so tests can call it directly.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgGroup, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use mesh_policy::{DEFAULT_TRUST_DOMAIN, Labels};
use meshctl::cert::{self, InspectOptions, Output, Source, Verification};
use meshctl::policy::{self, Call, Caller, HttpCall, check, lint};
use meshctl::token;

/// `policy check`: the call was denied. Distinct from 1 (meshctl failed)
/// and 2 (usage), so a script can tell "no" from "could not answer".
const EXIT_DENIED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "meshctl",
    version,
    about = "Operate a Palisade service mesh: join tokens, certificates, policy",
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
    /// Authorization policy: check a call offline, lint a folder, read a proxy's snapshot
    #[command(subcommand)]
    Policy(PolicyCommand),
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

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a join token that lets a proxy obtain a certificate for NS/SA
    #[command(
        long_about = "Print a join token that lets a proxy obtain a certificate for \
        spiffe://<trust-domain>/ns/NS/sa/SA.\n\n\
        The token is signed with DIR/token.key, the key the control plane started \
        with --data-dir DIR verifies tokens with (run this on the control plane's \
        host, as the user that owns its data dir). If the key does not exist yet it \
        is created, and the control plane will use it on its next start.\n\n\
        Only the token is printed, on one line, so it can be redirected into the \
        file a proxy reads with --token-file:\n\n  \
        meshctl token create --data-dir /var/lib/palisade --namespace shop \\\n      \
        --service-account api --ttl 1h > api.token\n\n\
        Anyone holding the token can obtain a certificate for that identity until \
        it expires: keep it secret and short-lived."
    )]
    Create(TokenCreateArgs),
}

#[derive(Debug, Args)]
struct TokenCreateArgs {
    /// The control plane's data dir (holds token.key)
    #[arg(long, env = "MESH_DATA_DIR", value_name = "DIR")]
    data_dir: PathBuf,
    /// Namespace the token proves
    #[arg(long, env = "MESH_NAMESPACE", value_name = "NS")]
    namespace: String,
    /// Service account the token proves
    #[arg(long, env = "MESH_SERVICE_ACCOUNT", value_name = "SA")]
    service_account: String,
    /// How long the token can be used to obtain certificates: 90s, 30m, 1h, 7d
    #[arg(long, env = "MESH_TTL", default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

#[derive(Debug, Subcommand)]
enum CertCommand {
    /// Show the identity, validity and issuer chain of a certificate
    #[command(
        long_about = "Show the identity (SPIFFE ID), serial, validity, time left, key \
        algorithm and issuer chain of a certificate.\n\n\
        Exactly one source:\n  \
        --admin URL         the certificate a running proxy holds, from its admin /certs\n  \
        --connect HOST:PORT the certificate a mesh port presents in the TLS handshake\n  \
        FILE                PEM file with one or more certificates, leaf first (- for stdin)\n\n\
        With --trust-bundle, also check that the chain verifies against those roots \
        for the trust domain of the leaf's SPIFFE ID.\n\n\
        Examples:\n  \
        meshctl cert inspect --admin http://127.0.0.1:4191\n  \
        meshctl cert inspect --connect 10.0.0.7:4143 --trust-bundle /var/lib/palisade/trust-bundle.pem\n  \
        meshctl cert inspect leaf.pem -o json"
    )]
    Inspect(CertInspectArgs),
}

// Not a clap ArgGroup: MESH_ADMIN or MESH_TRUST_BUNDLE may be set in the
// environment for the proxy, and a source given on the command line must win
// over one from the environment instead of conflicting with it.
#[derive(Debug, Args)]
#[command(
    override_usage = "meshctl cert inspect [OPTIONS] <--admin URL | --connect HOST:PORT | FILE.pem>"
)]
struct CertInspectArgs {
    /// Proxy admin address, e.g. http://127.0.0.1:4191 (reads GET /certs)
    #[arg(long, env = "MESH_ADMIN", value_name = "URL")]
    admin: Option<String>,
    /// Mesh TLS port to handshake with, e.g. 127.0.0.1:4143 (sends no data)
    #[arg(long, env = "MESH_CONNECT", value_name = "HOST:PORT")]
    connect: Option<String>,
    /// PEM file with one or more certificates, leaf first; - reads stdin
    #[arg(value_name = "FILE.pem")]
    file: Option<PathBuf>,
    /// Roots to verify the chain against, e.g. the control plane's trust-bundle.pem
    #[arg(long, env = "MESH_TRUST_BUNDLE", value_name = "FILE")]
    trust_bundle: Option<PathBuf>,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Give up on --admin or --connect after this long: 5s, 1m
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
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
struct PolicyCheckArgs {
    /// Folder of policy YAML, as the control plane's --config-dir
    #[arg(long, env = "MESH_CONFIG_DIR", value_name = "DIR")]
    config_dir: PathBuf,
    /// Namespace of the caller (of its identity, and of its pod)
    #[arg(long, env = "MESH_FROM_NAMESPACE", value_name = "NS")]
    from_namespace: Option<String>,
    /// Service account of an mTLS caller: spiffe://TD/ns/NS/sa/SA
    #[arg(long, env = "MESH_FROM_SERVICE_ACCOUNT", value_name = "SA")]
    from_service_account: Option<String>,
    /// The caller has no client certificate (no identity)
    #[arg(long, env = "MESH_PLAINTEXT")]
    plaintext: bool,
    /// Labels of the caller's pod; also checks its NetworkPolicy egress
    #[arg(
        long,
        env = "MESH_FROM_LABELS",
        value_name = "K=V,…",
        value_parser = parse_labels,
        requires = "from_namespace"
    )]
    from_labels: Option<Labels>,
    /// Address of the caller (ipBlocks, source.ip)
    #[arg(long, env = "MESH_SOURCE_IP", value_name = "IP")]
    source_ip: Option<IpAddr>,
    /// Namespace of the destination workload
    #[arg(long, env = "MESH_TO_NAMESPACE", value_name = "NS")]
    to_namespace: String,
    /// Labels of the destination pod ("" for none)
    #[arg(long, env = "MESH_TO_LABELS", value_name = "K=V,…", value_parser = parse_labels)]
    to_labels: Labels,
    /// Address of the destination (NetworkPolicy ipBlock, destination.ip)
    #[arg(long, env = "MESH_TO_IP", value_name = "IP")]
    to_ip: Option<IpAddr>,
    /// Destination port
    #[arg(long, env = "MESH_PORT", value_name = "P", value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// HTTP method (makes the call an HTTP request; default GET)
    #[arg(long, env = "MESH_METHOD", value_name = "M")]
    method: Option<String>,
    /// HTTP request path, as sent (makes the call an HTTP request; default /)
    #[arg(long, env = "MESH_PATH", value_name = "P")]
    path: Option<String>,
    /// HTTP Host header (needs --method or --path)
    #[arg(long, env = "MESH_HOST", value_name = "H", requires = "http")]
    host: Option<String>,
    /// HTTP request header, repeatable (needs --method or --path)
    #[arg(
        long = "header",
        env = "MESH_HEADER",
        value_name = "K=V",
        value_parser = parse_header,
        requires = "http"
    )]
    headers: Vec<(String, String)>,
    /// The mesh's trust domain
    #[arg(long, env = "MESH_TRUST_DOMAIN", value_name = "TD", default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Args)]
struct PolicyLintArgs {
    /// Folder of policy YAML, as the control plane's --config-dir
    #[arg(long, env = "MESH_CONFIG_DIR", value_name = "DIR")]
    config_dir: PathBuf,
    /// Report exceptions that expire within this long: 12h, 7d
    #[arg(
        long,
        env = "MESH_SOON",
        value_name = "DURATION",
        default_value = "7d",
        value_parser = parse_duration
    )]
    soon: Duration,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Debug, Args)]
struct PolicyGetArgs {
    /// Proxy admin address, e.g. http://127.0.0.1:4191 (reads GET /policy)
    #[arg(long, env = "MESH_ADMIN", value_name = "URL")]
    admin: String,
    /// Output format
    #[arg(short, long, env = "MESH_OUTPUT", value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Give up after this long: 5s, 1m
    #[arg(long, env = "MESH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_labels(s: &str) -> Result<Labels, String> {
    policy::parse_labels(s).map_err(|e| e.to_string())
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    policy::parse_header(s).map_err(|e| e.to_string())
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_identity::duration::parse_duration(s)
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Lab(c) => meshctl::lab::cli::run(c),
        Command::Inject(a) => meshctl::inject::cli::inject(a).map(|()| ExitCode::SUCCESS),
        Command::Uninject(a) => meshctl::inject::cli::uninject(a).map(|()| ExitCode::SUCCESS),
        Command::Install(a) => meshctl::install::cli::install(a).map(|()| ExitCode::SUCCESS),
        Command::Uninstall(a) => meshctl::install::cli::uninstall(a).map(|()| ExitCode::SUCCESS),
        Command::Check(a) => meshctl::check::cli::run(a),
        Command::Token(TokenCommand::Create(a)) => {
            let created = token::create(&a.data_dir, &a.namespace, &a.service_account, a.ttl)?;
            if created.generated_key {
                eprintln!(
                    "note: created a new token signing key {}; the control plane must run \
                     with --data-dir {} to accept this token",
                    created.key_path.display(),
                    a.data_dir.display()
                );
            }
            write_stdout(&format!("{}\n", created.token))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cert(CertCommand::Inspect(a)) => {
            let inspect_matches = matches
                .subcommand_matches("cert")
                .and_then(|m| m.subcommand_matches("inspect"));
            let source = inspect_source(&a, inspect_matches);
            let opts = InspectOptions {
                source,
                trust_bundle: a.trust_bundle,
                timeout: a.timeout,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let report = runtime.block_on(cert::inspect(&opts))?;
            write_stdout(&report.render(a.output)?)?;
            // The report says why; the exit code lets scripts act on it.
            if let Some(Verification {
                trust_bundle,
                result: Err(why),
            }) = &report.verification
            {
                anyhow::bail!(
                    "the chain does not verify against {}: {why}",
                    trust_bundle.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check(a)) => {
            let check_matches = matches
                .subcommand_matches("policy")
                .and_then(|m| m.subcommand_matches("check"));
            policy_check(*a, check_matches)
        }
        Command::Policy(PolicyCommand::Lint(a)) => {
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
        Command::Policy(PolicyCommand::Get(a)) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let doc = runtime.block_on(policy::get::fetch(&a.admin, a.timeout))?;
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
    let caller = check_caller(&mut a, matches);
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
fn check_caller(a: &mut PolicyCheckArgs, matches: Option<&ArgMatches>) -> Caller {
    const PATH: [&str; 2] = ["policy", "check"];
    let from_command_line =
        |id: &str| matches.and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine);
    let mtls = match (a.plaintext, a.from_service_account.take()) {
        (false, None) => usage_error(
            &PATH,
            ErrorKind::MissingRequiredArgument,
            "give the caller: --from-namespace NS --from-service-account SA (mTLS), or --plaintext",
        ),
        (false, Some(sa)) => Some(sa),
        (true, None) => None,
        (true, Some(sa)) => {
            match (
                from_command_line("plaintext"),
                from_command_line("from_service_account"),
            ) {
                (true, false) => None,
                (false, true) => Some(sa),
                _ => usage_error(
                    &PATH,
                    ErrorKind::ArgumentConflict,
                    "give either --from-service-account SA or --plaintext, not both",
                ),
            }
        }
    };
    match (mtls, a.from_namespace.take()) {
        (Some(service_account), Some(namespace)) => Caller::Mtls {
            namespace,
            service_account,
        },
        (Some(_), None) => usage_error(
            &PATH,
            ErrorKind::MissingRequiredArgument,
            "--from-service-account needs --from-namespace NS",
        ),
        (None, namespace) => Caller::Plaintext { namespace },
    }
}

/// The loader's notes (documents that are not policy), on stderr so they
/// never mix with the output a script parses.
fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

/// Writes to stdout without `print!`'s panic when the reader has gone away
/// (`meshctl … | head`); a closed pipe is not an error worth reporting.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// The one source of `cert inspect`: a source on the command line wins over
/// one from the environment; more than one at the same level is a usage
/// error (exit code 2, like any other).
fn inspect_source(a: &CertInspectArgs, matches: Option<&ArgMatches>) -> Source {
    let given = [
        ("admin", a.admin.clone().map(Source::Admin)),
        ("connect", a.connect.clone().map(Source::Connect)),
        ("file", a.file.clone().map(Source::File)),
    ];
    let from_command_line =
        |id: &str| matches.and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine);
    let (explicit, from_env): (Vec<_>, Vec<_>) = given
        .into_iter()
        .filter_map(|(id, s)| s.map(|s| (id, s)))
        .partition(|(id, _)| from_command_line(id));
    let candidates = if explicit.is_empty() {
        from_env
    } else {
        explicit
    };
    match <[_; 1]>::try_from(candidates) {
        Ok([(_, source)]) => source,
        Err(c) if c.is_empty() => usage_error(
            &["cert", "inspect"],
            ErrorKind::MissingRequiredArgument,
            "give one of --admin URL, --connect HOST:PORT or FILE.pem",
        ),
        Err(c) => {
            let names: Vec<String> = c.iter().map(|(id, _)| flag_name(id)).collect();
            usage_error(
                &["cert", "inspect"],
                ErrorKind::ArgumentConflict,
                &format!("give only one of {}", names.join(", ")),
            )
        }
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

fn flag_name(id: &str) -> String {
    match id {
        "file" => "FILE.pem".into(),
        other => format!("--{other} (or MESH_{})", other.to_uppercase()),
    }
}
