//! Every YAML example in docs/policy.md loads, and the examples decide as the
//! text says.

#[path = "support/helpers.rs"]
mod support;

use support::{Call, mesh, outcome};

fn examples() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policy.md");
    let text = std::fs::read_to_string(path).expect("docs/policy.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

fn example(name: &str) -> String {
    examples()
        .into_iter()
        .find(|b| b.contains(&format!("name: {name}\n")))
        .unwrap_or_else(|| panic!("no example named {name}"))
}

#[test]
fn every_example_loads() {
    let blocks = examples();
    assert!(blocks.len() >= 8, "{}", blocks.len());
    for block in blocks {
        if let Err(e) = mesh_policy::parse_yaml("docs/policy.md", &block) {
            panic!("{e}\n{block}");
        }
    }
}

#[test]
fn examples_decide_as_documented() {
    let m = mesh(&example("api-from-web"));
    let d = Call::from_sa("shop", "web")
        .to("shop", &[("app", "api")])
        .http("GET", "/api/orders")
        .inbound(&m);
    assert_eq!(
        outcome(&d),
        "allow: AuthorizationPolicy shop/api-from-web rule 0"
    );

    let m = mesh(&example("deny-legacy-clients"));
    let d = Call::from_sa("legacy", "x").to("shop", &[]).inbound(&m);
    assert_eq!(
        d.to_string(),
        "allow: default allow (dry run would deny: AuthorizationPolicy shop/deny-legacy-clients rule 0)"
    );

    let m = mesh(&example("legacy-metrics"));
    let call = Call::plaintext().to("shop", &[("app", "api")]);
    assert_eq!(
        outcome(&call.clone().port(8080).inbound(&m)),
        "deny: PeerAuthentication shop/legacy-metrics"
    );
    assert!(call.port(9100).inbound(&m).is_allowed());

    let m = mesh(&example("default-deny"));
    assert_eq!(
        outcome(&Call::from_sa("shop", "web").to("shop", &[]).inbound(&m)),
        "deny: default deny"
    );
}
