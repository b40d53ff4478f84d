//! Traffic management through real sidecars in lab pods: HTTPRoute retries
//! against a flaky backend (and none for a POST the route does not name),
//! a weighted split between two Services, and a request timeout against a
//! backend that stalls. Requests go to the Service VIP and are redirected
//! to the client's outbound proxy, as in a cluster.

use std::time::{Duration, Instant};

use mesh_tests::netns::{APP_UID, Lab, LabSpec, Pod, available};
use mesh_tests::{metric, wait_for};

fn route(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  parentRefs: [{{kind: Service, group: \"\", name: api, port: 80}}]\n  rules:\n{spec}"
    )
}

/// Runs one curl in `pod` over `urls` (one connection, requests in turn)
/// and returns each response's status code, in order.
fn statuses(lab: &Lab, pod: &str, args: &[&str], urls: &[String]) -> Vec<u16> {
    let mut argv: Vec<&str> = vec![
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "--max-time",
        "60",
        "-w",
        "%{http_code}\\n",
    ];
    argv.extend_from_slice(args);
    argv.extend(urls.iter().map(String::as_str));
    let out = lab.exec_as(pod, APP_UID, &argv);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn retried(lab: &Lab) -> f64 {
    metric(
        &lab.metrics("client"),
        "mesh_retries_total",
        &[("result", "retried")],
    )
}

/// Half the requests fail: of the Service's two endpoints one answers
/// every request with 503. At 20 requests/s the budget's floor (10 retries
/// per second) covers a retry of every failed try, and the retry starts at
/// the other endpoint.
#[test]
fn retries_hide_a_failing_endpoint_but_not_for_a_post() {
    if !available("retries_hide_a_failing_endpoint_but_not_for_a_post") {
        return;
    }
    let mut lab = LabSpec::new(41)
        .pod(Pod::new("client", "shop", 10))
        .pod(Pod::new("api-good", "shop", 20).label("app", "api").echo(&[8080]))
        .pod(Pod::new("api-bad", "shop", 21).label("app", "api").echo_with(8080, "--fail-every 1"))
        .service("api", "shop", 30, "api", (80, 8080))
        .file(
            "route.yaml",
            &route("api", "    - backendRefs: [{name: api, port: 80}]\n      retry: {attempts: 3, codes: [503], backoff: 10ms}\n"),
        )
        .up();
    let vip = lab.vip(30);
    let urls: Vec<String> = (0..200).map(|i| format!("http://{vip}/get/{i}")).collect();
    let codes = statuses(&lab, "client", &["--rate", "20/s"], &urls);
    assert_eq!(codes.len(), 200, "{codes:?}");
    let ok = codes.iter().filter(|c| **c == 200).count();
    let m = lab.metrics("client");
    let retries: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("mesh_retries_total"))
        .collect();
    println!("retries at 20 req/s, one of two endpoints failing: {ok}/200 succeeded; {retries:?}");
    assert!(
        ok >= 198,
        "{ok} of 200 succeeded with retries ({retries:?}): {codes:?}"
    );
    assert!(retried(&lab) >= 50.0, "retries counted: {}", retried(&lab));

    // A POST is not idempotent and the rule does not name it: never retried.
    let before = retried(&lab);
    let codes = statuses(&lab, "client", &["-X", "POST", "-d", "x"], &urls[..40]);
    let failed = codes.iter().filter(|c| **c == 503).count();
    assert!(failed >= 10, "POSTs were retried: {codes:?}");
    assert_eq!(retried(&lab), before);
    lab.down();
}

#[test]
fn a_weighted_split_lands_within_three_points() {
    if !available("a_weighted_split_lands_within_three_points") {
        return;
    }
    let mut lab = LabSpec::new(42)
        .pod(Pod::new("client", "shop", 10))
        .pod(Pod::new("v1", "shop", 20).echo(&[8080]))
        .pod(Pod::new("v2", "shop", 21).echo(&[8080]))
        .service("api", "shop", 30, "none", (80, 8080))
        .service("api-v1", "shop", 31, "v1", (80, 8080))
        .service("api-v2", "shop", 32, "v2", (80, 8080))
        .file(
            "route.yaml",
            &route("canary", "    - backendRefs:\n        - {name: api-v1, port: 80, weight: 90}\n        - {name: api-v2, port: 80, weight: 10}\n"),
        )
        .up();
    let vip = lab.vip(30);
    let urls: Vec<String> = (0..2000).map(|i| format!("http://{vip}/{i}")).collect();
    let mut argv: Vec<&str> = vec!["curl", "-s", "--max-time", "120"];
    argv.extend(urls.iter().map(String::as_str));
    let out = lab.exec_as("client", APP_UID, &argv);
    let body = String::from_utf8_lossy(&out.stdout);
    let v1 = body.matches("v1 received").count();
    let v2 = body.matches("v2 received").count();
    assert_eq!(v1 + v2, 2000, "{}", &body[..body.len().min(500)]);
    let share = v1 as f64 / 2000.0 * 100.0;
    println!("90/10 split over 2000 requests: v1 {v1} ({share:.1}%), v2 {v2}");
    assert!((87.0..=93.0).contains(&share), "v1 share {share:.1}%");

    // The canary is promoted in the config folder: within a second every
    // request goes to v2.
    let started = Instant::now();
    lab.write_config(
        "route.yaml",
        &route("canary", "    - backendRefs:\n        - {name: api-v1, port: 80, weight: 0}\n        - {name: api-v2, port: 80, weight: 1}\n"),
    );
    let probe: Vec<String> = (0..20).map(|i| format!("http://{vip}/p{i}")).collect();
    wait_for("all requests on v2", Duration::from_secs(1), || {
        let mut argv: Vec<&str> = vec!["curl", "-s", "--max-time", "5"];
        argv.extend(probe.iter().map(String::as_str));
        let out = lab.exec_as("client", APP_UID, &argv);
        let body = String::from_utf8_lossy(&out.stdout).to_string();
        (body.matches("v2 received").count() == 20).then_some(())
    });
    println!("route change applied within {:?}", started.elapsed());
    lab.down();
}

#[test]
fn a_request_timeout_fires_on_time_and_names_itself() {
    if !available("a_request_timeout_fires_on_time_and_names_itself") {
        return;
    }
    let mut lab = LabSpec::new(43)
        .pod(Pod::new("client", "shop", 10))
        .pod(Pod::new("api", "shop", 20).echo_with(8080, "--delay-ms 3000"))
        .service("api", "shop", 30, "api", (80, 8080))
        .file(
            "route.yaml",
            &route(
                "slow",
                "    - backendRefs: [{name: api, port: 80}]\n      timeouts: {request: 500ms}\n",
            ),
        )
        .up();
    let url = format!("http://{}/slow", lab.vip(30));
    let out = lab.exec_as(
        "client",
        APP_UID,
        &[
            "curl",
            "-s",
            "--max-time",
            "10",
            "-w",
            "\n%{http_code} %{time_total}",
            &url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let last = text.lines().last().unwrap_or_default().to_string();
    let (code, secs) = last.split_once(' ').expect("code and time");
    assert_eq!(code, "504", "{text}");
    assert!(
        text.contains("timeouts.request (500ms) of HTTPRoute shop/slow rule 0"),
        "{text}"
    );
    let took = Duration::from_secs_f64(secs.parse().expect("seconds"));
    println!("timeouts.request 500ms fired after {took:?}");
    assert!(
        took >= Duration::from_millis(450) && took <= Duration::from_millis(550),
        "{took:?}"
    );
    lab.down();
}
