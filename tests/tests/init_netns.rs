//! `mesh-proxy init` in a real network namespace: the rules it installs are
//! exactly the ones `--dry-run` prints, re-running replaces instead of
//! duplicating, and `--remove` leaves the nat table as it found it.

use mesh_tests::bin;
use mesh_tests::netns::{Netns, available};

fn nat_rules(ns: &Netns, tool: &str) -> Vec<String> {
    let out = ns.exec(tool, &["-w", "-t", "nat", "-S"]);
    assert!(
        out.status.success(),
        "{tool} -S: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn init(ns: &Netns, args: &[&str]) -> String {
    let proxy = bin("mesh-proxy").display().to_string();
    let mut a = vec!["init"];
    a.extend_from_slice(args);
    let out = ns.exec(&proxy, &a);
    assert!(
        out.status.success(),
        "mesh-proxy init {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `-A …` lines of one family's section of `--dry-run`.
fn dry_run_rules(dry_run: &str, family: &str) -> Vec<String> {
    dry_run
        .split("# ")
        .find(|section| section.starts_with(family))
        .unwrap_or_else(|| panic!("no {family} section in:\n{dry_run}"))
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn init_installs_what_dry_run_prints_replaces_and_removes() {
    if !available("init_installs_what_dry_run_prints_replaces_and_removes") {
        return;
    }
    let ns = Netns::new("pit1-pod");
    let before = (nat_rules(&ns, "iptables"), nat_rules(&ns, "ip6tables"));
    let flags = [
        "--skip-inbound-ports",
        "4191,22",
        "--skip-outbound-ports",
        "5432",
        "--skip-subnets",
        "10.96.0.0/12,fd00::/8",
    ];
    let mut dry = flags.to_vec();
    dry.push("--dry-run");
    let printed = init(&ns, &dry);
    // A dry run changes nothing.
    assert_eq!(nat_rules(&ns, "iptables"), before.0);

    init(&ns, &flags);
    let v4 = nat_rules(&ns, "iptables");
    let v6 = nat_rules(&ns, "ip6tables");
    for (family, installed) in [("IPv4", &v4), ("IPv6", &v6)] {
        let want = dry_run_rules(&printed, family);
        assert!(!want.is_empty());
        for rule in &want {
            assert!(
                installed.contains(rule),
                "{family}: {rule} not installed:\n{installed:#?}"
            );
        }
        // Nothing beyond what was printed (and the chain declarations).
        let ours: Vec<&String> = installed.iter().filter(|l| l.starts_with("-A ")).collect();
        assert_eq!(ours.len(), want.len(), "{family}: {installed:#?}");
    }
    // The proxy's UID is exempt before anything is redirected (no loop).
    let output: Vec<&String> = v4
        .iter()
        .filter(|l| l.starts_with("-A PALISADE_OUTPUT"))
        .collect();
    assert_eq!(
        output.first().map(|s| s.as_str()),
        Some("-A PALISADE_OUTPUT -m owner --uid-owner 2102 -j RETURN")
    );
    assert_eq!(
        output.last().map(|s| s.as_str()),
        Some("-A PALISADE_OUTPUT -p tcp -j REDIRECT --to-ports 4140")
    );

    // Idempotent: the same rules, no second jump.
    init(&ns, &flags);
    assert_eq!(nat_rules(&ns, "iptables"), v4);
    assert_eq!(nat_rules(&ns, "ip6tables"), v6);

    // Other settings replace the rules.
    init(&ns, &["--skip-inbound-ports", "4191"]);
    let replaced = nat_rules(&ns, "iptables");
    assert!(
        !replaced
            .iter()
            .any(|l| l.contains("5432") || l.contains("10.96."))
    );
    assert_eq!(
        replaced
            .iter()
            .filter(|l| *l == "-A OUTPUT -p tcp -j PALISADE_OUTPUT")
            .count(),
        1
    );

    // --remove: exactly as before, twice in a row.
    init(&ns, &["--remove"]);
    assert_eq!(
        (nat_rules(&ns, "iptables"), nat_rules(&ns, "ip6tables")),
        before
    );
    init(&ns, &["--remove"]);
    assert_eq!(nat_rules(&ns, "iptables"), before.0);
}

#[test]
fn init_leaves_foreign_rules_alone() {
    if !available("init_leaves_foreign_rules_alone") {
        return;
    }
    let ns = Netns::new("pit2-pod");
    let add = |args: &[&str]| {
        let out = ns.exec("iptables", args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    add(&[
        "-w", "-t", "nat", "-A", "OUTPUT", "-p", "udp", "-j", "RETURN",
    ]);
    add(&["-w", "-t", "nat", "-N", "OTHER"]);
    add(&[
        "-w", "-t", "nat", "-A", "OTHER", "-p", "tcp", "-j", "RETURN",
    ]);
    let before = nat_rules(&ns, "iptables");
    init(&ns, &[]);
    init(&ns, &["--remove"]);
    assert_eq!(nat_rules(&ns, "iptables"), before);
}
