use std::cell::RefCell;
use std::collections::BTreeMap;

use clap::Parser;

use super::*;

/// A nat table in memory: enough of iptables' behaviour (`-C`, `-D`, `-S`,
/// `-F`, `-X`, restore with `--noflush`) to check what init leaves behind.
struct FakeNat {
    v6: bool,
    installed: bool,
    tables: RefCell<BTreeMap<&'static str, BTreeMap<String, Vec<String>>>>,
}

impl FakeNat {
    fn new() -> Self {
        let builtin: BTreeMap<String, Vec<String>> =
            ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]
                .into_iter()
                .map(|c| (c.to_string(), Vec::new()))
                .collect();
        Self {
            v6: true,
            installed: true,
            tables: RefCell::new(BTreeMap::from([
                ("iptables", builtin.clone()),
                ("ip6tables", builtin),
            ])),
        }
    }

    /// Every chain and rule of one family, like `iptables -t nat -S`.
    fn dump(&self, family: Family) -> Vec<String> {
        let t = self.tables.borrow();
        let mut out = Vec::new();
        for (chain, rules) in &t[family.iptables()] {
            out.push(format!("-N {chain}"));
            out.extend(rules.iter().map(|r| format!("-A {chain} {r}")));
        }
        out
    }

    fn add(&self, family: Family, chain: &str, rule: &str) {
        self.tables
            .borrow_mut()
            .get_mut(family.iptables())
            .unwrap()
            .entry(chain.to_string())
            .or_default()
            .push(rule.to_string());
    }
}

impl Iptables for FakeNat {
    fn available(&self, family: Family) -> bool {
        self.installed && (family == Family::V4 || self.v6)
    }

    fn nat(&self, family: Family, args: &[String]) -> Result<bool, InitError> {
        let mut t = self.tables.borrow_mut();
        let t = t.get_mut(family.iptables()).unwrap();
        let (op, chain) = (args[0].as_str(), args[1].clone());
        let rule = args[2..].join(" ");
        Ok(match op {
            "-C" => t.get(&chain).is_some_and(|r| r.contains(&rule)),
            "-D" => match t
                .get_mut(&chain)
                .and_then(|r| Some((r.iter().position(|x| *x == rule)?, r)))
            {
                Some((i, r)) => {
                    r.remove(i);
                    true
                }
                None => false,
            },
            "-S" => t.contains_key(&chain),
            "-F" => t.get_mut(&chain).map(Vec::clear).is_some(),
            "-X" => {
                let referenced = t
                    .values()
                    .flatten()
                    .any(|r| r.ends_with(&format!("-j {chain}")));
                !referenced && t.remove(&chain).is_some()
            }
            other => panic!("unexpected iptables {other}"),
        })
    }

    fn restore(&self, family: Family, input: &str) -> Result<(), InitError> {
        let mut t = self.tables.borrow_mut();
        let t = t.get_mut(family.iptables()).unwrap();
        for line in input.lines() {
            if let Some(decl) = line.strip_prefix(':') {
                // --noflush: declaring a chain creates or flushes it.
                let name = decl.split(' ').next().unwrap().to_string();
                t.insert(name, Vec::new());
            } else if let Some(rest) = line.strip_prefix("-A ") {
                let (chain, rule) = rest.split_once(' ').unwrap();
                t.get_mut(chain)
                    .expect("append to a declared chain")
                    .push(rule.to_string());
            } else {
                assert!(
                    matches!(line, "*nat" | "COMMIT"),
                    "unexpected restore line {line:?}"
                );
            }
        }
        Ok(())
    }
}

fn args(extra: &[&str]) -> InitArgs {
    let mut argv = vec!["init"];
    argv.extend_from_slice(extra);
    InitArgs::try_parse_from(argv).unwrap()
}

fn lines(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn default_rules() {
    let r = args(&[]).redirection();
    assert_eq!(
        lines(&r.chain_rules(Family::V4)),
        [
            // Mesh mTLS to the inbound port needs no NAT.
            "-A PALISADE_INBOUND -p tcp -m tcp --dport 4143 -j RETURN",
            "-A PALISADE_INBOUND -p tcp -j REDIRECT --to-ports 4143",
            // The proxy's own traffic first: otherwise it loops.
            "-A PALISADE_OUTPUT -m owner --uid-owner 2102 -j RETURN",
            "-A PALISADE_OUTPUT -o lo -j RETURN",
            "-A PALISADE_OUTPUT -d 127.0.0.0/8 -j RETURN",
            "-A PALISADE_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
        ]
    );
    // IPv6 differs only in the loopback block.
    assert!(
        r.chain_rules(Family::V6)
            .contains(&"-A PALISADE_OUTPUT -d ::1/128 -j RETURN".to_string())
    );
}

#[test]
fn skips_are_deduplicated_and_split_by_family() {
    let r = args(&[
        "--inbound-port",
        "15006",
        "--outbound-port",
        "15001",
        "--proxy-uid",
        "1337",
        "--skip-inbound-ports",
        "4191, 22,4191",
        "--skip-outbound-ports",
        "5432",
        "--skip-subnets",
        "10.96.0.1/12,fd00::1/8,10.96.0.0/12,192.168.1.7",
    ])
    .redirection();
    assert_eq!(
        lines(&r.chain_rules(Family::V4)),
        [
            "-A PALISADE_INBOUND -p tcp -m tcp --dport 15006 -j RETURN",
            "-A PALISADE_INBOUND -p tcp -m tcp --dport 4191 -j RETURN",
            "-A PALISADE_INBOUND -p tcp -m tcp --dport 22 -j RETURN",
            "-A PALISADE_INBOUND -p tcp -j REDIRECT --to-ports 15006",
            "-A PALISADE_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-A PALISADE_OUTPUT -o lo -j RETURN",
            "-A PALISADE_OUTPUT -d 127.0.0.0/8 -j RETURN",
            // Host bits cleared as iptables does; the repeat is dropped.
            "-A PALISADE_OUTPUT -d 10.96.0.0/12 -j RETURN",
            "-A PALISADE_OUTPUT -d 192.168.1.7/32 -j RETURN",
            "-A PALISADE_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN",
            "-A PALISADE_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
        ]
    );
    let v6 = r.chain_rules(Family::V6);
    assert!(v6.contains(&"-A PALISADE_OUTPUT -d fd00::/8 -j RETURN".to_string()));
    assert!(
        !v6.iter().any(|l| l.contains("10.96.")),
        "IPv4 subnets stay out of ip6tables"
    );
}

#[test]
fn bad_flags_are_refused() {
    for bad in [
        ["--skip-inbound-ports", "0"],
        ["--skip-inbound-ports", "70000"],
        ["--skip-outbound-ports", "http"],
        ["--skip-subnets", "10.0.0.0/33"],
        ["--skip-subnets", "not-an-ip"],
        ["--skip-subnets", "fd00::/129"],
        ["--inbound-port", "0"],
    ] {
        let mut argv = vec!["init"];
        argv.extend_from_slice(&bad);
        assert!(InitArgs::try_parse_from(argv).is_err(), "{bad:?}");
    }
    // Empty lists (as an injector may set them) mean "none".
    assert_eq!(
        args(&["--skip-inbound-ports", ""]).skip_inbound_ports,
        PortList(vec![])
    );
}

#[test]
fn install_is_idempotent() {
    let nat = FakeNat::new();
    // Someone else's rule in OUTPUT must survive everything we do.
    nat.add(Family::V4, "OUTPUT", "-p udp -j ACCEPT");
    let a = args(&["--skip-inbound-ports", "4191"]);
    run_with(&nat, &a).unwrap();
    let first = nat.dump(Family::V4);
    run_with(&nat, &a).unwrap();
    assert_eq!(
        nat.dump(Family::V4),
        first,
        "re-running must not duplicate anything"
    );
    let jumps = first
        .iter()
        .filter(|l| l.ends_with("-j PALISADE_OUTPUT"))
        .count();
    assert_eq!(jumps, 1);
    // Every generated rule is installed, verbatim.
    for rule in a.redirection().chain_rules(Family::V4) {
        assert!(first.contains(&rule), "{rule} missing from {first:#?}");
    }
    assert!(
        nat.dump(Family::V6)
            .contains(&"-A OUTPUT -p tcp -j PALISADE_OUTPUT".to_string())
    );

    // Re-running with other settings replaces the rules.
    run_with(&nat, &args(&[])).unwrap();
    assert!(!nat.dump(Family::V4).iter().any(|l| l.contains("4191")));
}

#[test]
fn remove_deletes_exactly_what_init_added() {
    let nat = FakeNat::new();
    nat.add(Family::V4, "OUTPUT", "-p udp -j ACCEPT");
    let before = (nat.dump(Family::V4), nat.dump(Family::V6));
    run_with(&nat, &args(&["--skip-subnets", "10.0.0.0/8,fd00::/8"])).unwrap();
    // A second copy of a jump (added by hand) goes too.
    nat.add(Family::V4, "PREROUTING", "-p tcp -j PALISADE_INBOUND");
    run_with(&nat, &args(&["--remove"])).unwrap();
    assert_eq!((nat.dump(Family::V4), nat.dump(Family::V6)), before);
    // Removing again, with nothing there, is fine.
    run_with(&nat, &args(&["--remove"])).unwrap();
    assert_eq!(nat.dump(Family::V4), before.0);
}

#[test]
fn ipv4_only_leaves_ip6tables_alone() {
    let nat = FakeNat::new();
    let before = nat.dump(Family::V6);
    run_with(&nat, &args(&["--ipv4-only"])).unwrap();
    assert_eq!(nat.dump(Family::V6), before);

    let mut no_v6 = FakeNat::new();
    no_v6.v6 = false;
    let out = run_with(&no_v6, &args(&[])).unwrap();
    assert!(out.contains("(IPv4)"), "{out}");
}

#[test]
fn dry_run_prints_and_changes_nothing() {
    let nat = FakeNat::new();
    let before = nat.dump(Family::V4);
    let out = run_with(&nat, &args(&["--dry-run", "--skip-outbound-ports", "53"])).unwrap();
    assert_eq!(nat.dump(Family::V4), before);
    assert!(
        out.contains("-A PALISADE_OUTPUT -p tcp -m tcp --dport 53 -j RETURN\n"),
        "{out}"
    );
    assert!(
        out.contains("-A PREROUTING -p tcp -j PALISADE_INBOUND\n"),
        "{out}"
    );
    assert!(
        out.contains("# IPv6: ip6tables-restore -w --noflush"),
        "{out}"
    );
    assert_eq!(out.matches("COMMIT\n").count(), 2);

    let out = run_with(&nat, &args(&["--dry-run", "--remove", "--ipv4-only"])).unwrap();
    assert!(
        out.contains("iptables -w -t nat -D OUTPUT -p tcp -j PALISADE_OUTPUT\n"),
        "{out}"
    );
    assert!(
        out.contains("iptables -w -t nat -X PALISADE_INBOUND\n"),
        "{out}"
    );
    assert!(out.contains("# IPv6: not touched"), "{out}");
}

#[test]
fn missing_iptables_names_the_fix() {
    let mut nat = FakeNat::new();
    nat.installed = false;
    let err = run_with(&nat, &args(&[])).unwrap_err().to_string();
    assert!(
        err.contains("iptables not found") && err.contains("scripts/setup.sh"),
        "{err}"
    );
    // A dry run needs no iptables.
    assert!(run_with(&nat, &args(&["--dry-run"])).is_ok());
}

#[test]
fn restore_input_declares_chains_before_rules() {
    let input = args(&[]).redirection().restore_input(Family::V4, &[]);
    let mut l = input.lines();
    assert_eq!(l.next(), Some("*nat"));
    assert_eq!(l.next(), Some(":PALISADE_INBOUND - [0:0]"));
    assert_eq!(l.next(), Some(":PALISADE_OUTPUT - [0:0]"));
    assert_eq!(input.lines().last(), Some("COMMIT"));
    // Jumps that already exist are not added again.
    assert!(!input.contains("-A OUTPUT"));
}
