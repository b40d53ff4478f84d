//! Bypass attempts against a DENY on `/admin`: each raw request path goes
//! through `normalize_path` (as the proxy does) and then the evaluator. A
//! bypass would be a path the application serves as /admin that is neither
//! refused by the normalizer nor denied by the policy.

#[path = "support/helpers.rs"]
mod support;

use mesh_policy::normalize_path;
use support::{Call, mesh, outcome};

/// The recommended way to protect a path and everything under it: exact
/// paths do not match a trailing slash or sub-paths (Istio semantics).
const DENY_ADMIN: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: shop
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: [\"/admin\", \"/admin/*\"]
";

#[derive(Debug, PartialEq)]
enum Expect {
    /// The normalizer refuses the path (the proxy answers 400).
    Refused,
    /// It normalizes to /admin or below, and the DENY applies.
    Denied,
    /// A genuinely different path: matching is case-sensitive as in Istio,
    /// so `/ADMIN` is not `/admin` (a policy that must cover it lists it).
    DifferentPath,
}

use Expect::{Denied, DifferentPath, Refused};

const ATTEMPTS: &[(&str, Expect)] = &[
    ("/admin", Denied),
    ("//admin", Denied),
    ("///admin///", Denied),
    ("/admin/", Denied),
    ("/admin/secret", Denied),
    ("/ADMIN", DifferentPath),
    ("/administrator", DifferentPath),
    ("/x/../admin", Denied),
    ("/./admin", Denied),
    ("/admin/.", Denied),
    ("/admin/x/..", Denied),
    ("/%2e%2e/admin", Denied),
    ("/x/%2e%2e/admin", Denied),
    ("/x/%2E%2E/admin", Denied),
    ("/x/.%2e/admin", Denied),
    ("/%61dmin", Denied),
    ("/ad%6Din", Denied),
    ("/admin#frag", Denied),
    ("/admin?x=1", Denied),
    ("/admin%2Fsecret", Refused),
    ("/admin%2fsecret", Refused),
    ("/x/..%2fadmin", Refused),
    ("/admin%5Csecret", Refused),
    ("\\admin", Refused),
    ("/x\\..\\admin", Refused),
    ("/admin;jsessionid=1", Refused),
    ("/admin%3Bx", Refused),
    ("/%2561dmin", Refused),
    ("/%252e%252e/admin", Refused),
    ("/x%c0%af../admin", Refused),
    ("/%c0%ae%c0%ae/admin", Refused),
    ("/%ef%bc%8fadmin", Refused),
    ("/admin%00", Refused),
    ("/admin%00.html", Refused),
    ("/admin\t", Refused),
    ("/admin.", Refused),
    ("/admin%20", Refused),
    ("/admin%3F.css", Refused),
    ("/admin%23", Refused),
    ("/%u0061dmin", Refused),
    ("admin", Refused),
    ("http://shop/admin", Refused),
];

#[test]
fn no_bypass_of_deny_admin() {
    assert!(ATTEMPTS.len() >= 25);
    let m = mesh(DENY_ADMIN);
    let mut failures = Vec::new();
    for (raw, expect) in ATTEMPTS {
        let got = match normalize_path(raw) {
            Err(_) => Refused,
            Ok(path) => {
                let d = Call::from_sa("shop", "web")
                    .to("shop", &[("app", "api")])
                    .http("GET", &path)
                    .inbound(&m);
                if d.is_allowed() {
                    DifferentPath
                } else {
                    assert_eq!(
                        outcome(&d),
                        "deny: AuthorizationPolicy shop/deny-admin rule 0"
                    );
                    Denied
                }
            }
        };
        if got != *expect {
            failures.push(format!("{raw:?}: expected {expect:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
