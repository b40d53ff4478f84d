//! Traffic management through real sidecars in lab pods: HTTPRoute retries
//! against a flaky backend (and none for a POST the route does not name),
//! a weighted split between two Services, and a request timeout against a
//! backend that stalls. Requests go to the Service VIP and are redirected
//! to the client's outbound proxy, as in a cluster.

use std::time::{Duration, Instant};

use mesh_tests::netns::{APP_UID, Lab, LabSpec, Pod, available, meshctl};
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

/// Half the requests would fail: of the Service's two endpoints one answers
/// every request with 503. At 20 requests/s the budget's floor (10 retries
/// per second) covers a retry of every failed try, and the retry starts at
/// the other endpoint; the balancer ejects the failing one after 5 failures
/// in a row and probes it now and then.
#[test]
fn retries_hide_a_failing_endpoint_but_not_for_a_post() {
    if !available("retries_hide_a_failing_endpoint_but_not_for_a_post") {
        return;
    }
    let mut lab = LabSpec::new(41)
        .pod(Pod::new("client", "shop", 10))
        .pod(Pod::new("api-good", "shop", 20).label("app", "api").echo(&[8080]))
        .pod(
            Pod::new("api-bad", "shop", 21)
                .label("app", "api")
                .label("tier", "bad")
                .echo_with(8080, "--fail-every 1"),
        )
        .service("api", "shop", 30, "api", (80, 8080))
        .service_selecting("flaky", "shop", 31, ("tier", "bad"), (80, 8080))
        .file(
            "route.yaml",
            &route("api", "    - backendRefs: [{name: api, port: 80}]\n      retry: {attempts: 3, codes: [503], backoff: 10ms}\n"),
        )
        .file("route-flaky.yaml", &retry_route("flaky"))
        .up();
    let vip = lab.vip(30);
    let urls: Vec<String> = (0..200).map(|i| format!("http://{vip}/get/{i}")).collect();
    let served_503 = || {
        metric(
            &lab.metrics("api-bad"),
            "mesh_requests_total",
            &[("direction", "inbound"), ("code", "503")],
        )
    };

    // A POST is not idempotent and the rule does not name it: never
    // retried, to a Service whose one endpoint fails everything.
    let flaky: Vec<String> = (0..40)
        .map(|i| format!("http://{}/post/{i}", lab.vip(31)))
        .collect();
    let codes = statuses(&lab, "client", &["-X", "POST", "-d", "x"], &flaky);
    assert_eq!(codes, vec![503; 40], "POSTs were retried");
    assert_eq!(served_503(), 40.0);
    assert_eq!(retried(&lab), 0.0);

    // GETs: each 503 the failing endpoint serves (its probes, as it stays
    // ejected for longer each time) is retried at the other endpoint.
    let before = served_503();
    let codes = statuses(&lab, "client", &["--rate", "20/s"], &urls);
    assert_eq!(codes.len(), 200, "{codes:?}");
    let ok = codes.iter().filter(|c| **c == 200).count();
    let m = lab.metrics("client");
    let retries: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("mesh_retries_total"))
        .collect();
    let failures = served_503() - before;
    println!(
        "retries at 20 req/s, one of two endpoints failing: {ok}/200 succeeded; {failures} failed tries; {retries:?}"
    );
    assert!(
        ok >= 198,
        "{ok} of 200 succeeded with retries ({retries:?}): {codes:?}"
    );
    assert!(failures >= 1.0, "the failing endpoint was never probed");
    assert_eq!(retried(&lab), failures, "every failed try retried");
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

/// `curl` from the client: (status, seconds taken, body).
fn timed_curl(lab: &Lab, args: &[&str], url: &str) -> (String, Duration, String) {
    let mut argv = vec![
        "curl",
        "-s",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code} %{time_total}",
    ];
    argv.extend_from_slice(args);
    argv.push(url);
    let out = lab.exec_as("client", APP_UID, &argv);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, last) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, secs) = last.split_once(' ').unwrap_or(("", "0"));
    let took = Duration::from_secs_f64(secs.parse().unwrap_or(0.0));
    (code.to_string(), took, body.to_string())
}

/// One gRPC call from the client through the mesh to a stalling upstream:
/// (grpc-status, time taken, grpc-message).
fn timed_grpc(lab: &Lab, url: &str, timeout_ms: Option<u64>) -> (String, Duration, String) {
    let t = timeout_ms.map(|t| t.to_string());
    let mut argv = vec!["--sleep-ms", "5000"];
    if let Some(t) = &t {
        argv.extend(["--timeout-ms", t.as_str()]);
    }
    grpc_call(lab, url, &argv)
}

/// `mesh-grpc call URL ARGS…` from the client: (grpc-status, time taken,
/// grpc-message).
fn grpc_call(lab: &Lab, url: &str, args: &[&str]) -> (String, Duration, String) {
    // The lab's own copy: the build folder may be private to root.
    let bin = lab.state_dir().join("bin/mesh-grpc");
    let bin = bin.to_string_lossy();
    let mut argv = vec![&*bin, "call", url];
    argv.extend_from_slice(args);
    let out = lab.exec_as("client", APP_UID, &argv);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut parts = text.splitn(3, ' ');
    let status = parts.next().unwrap_or_default().to_string();
    let ms = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    let message = parts.next().unwrap_or_default().to_string();
    (status, Duration::from_millis(ms), message)
}

fn within_ten_percent(what: &str, took: Duration, setting: Duration) {
    println!("{what}: {setting:?} fired after {took:?}");
    let (lo, hi) = (setting.mul_f64(0.9), setting.mul_f64(1.1));
    assert!(took >= lo && took <= hi, "{what}: {took:?} for {setting:?}");
}

/// Upstreams that stall (an HTTP/1.1 app answering after 3 s, an HTTP/2
/// and gRPC app after 5 s, neither minding deadlines): the route's request timeout,
/// its per-try timeout and the caller's `grpc-timeout` (with or without a
/// route) fire within 10% of their setting, for HTTP/1.1, HTTP/2 and gRPC,
/// each named in the answer: 504, or gRPC DEADLINE_EXCEEDED (4). A
/// GRPCRoute on the same upstream routes calls by method.
#[test]
fn timeouts_fire_on_time_for_http1_h2_and_grpc_and_name_themselves() {
    if !available("timeouts_fire_on_time_for_http1_h2_and_grpc_and_name_themselves") {
        return;
    }
    let grpc_route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: grpc-slow, namespace: shop}\nspec:\n  parentRefs: [{kind: Service, group: \"\", name: grpc, port: 9090}]\n  rules:\n    - backendRefs: [{name: grpc, port: 9090}]\n      timeouts: {request: 600ms}\n";
    let mut lab = LabSpec::new(43)
        .pod(Pod::new("client", "shop", 10))
        .pod(Pod::new("api", "shop", 20).echo_with(8080, "--delay-ms 3000"))
        .pod(Pod::new("grpc", "shop", 21).run("mesh-grpc stall 0.0.0.0:9090", 9090))
        .service("api", "shop", 30, "api", (80, 8080))
        .service("grpc", "shop", 31, "grpc", (9090, 9090))
        .service("grpc-direct", "shop", 32, "grpc", (9090, 9090))
        .service("grpc-routed", "shop", 33, "grpc", (9090, 9090))
        .file("grpc-by-method.yaml", GRPC_BY_METHOD)
        .file(
            "route.yaml",
            &route(
                "slow",
                "    - backendRefs: [{name: api, port: 80}]\n      timeouts: {request: 500ms}\n    - matches: [{path: {type: PathPrefix, value: /try}}]\n      backendRefs: [{name: api, port: 80}]\n      timeouts: {backendRequest: 300ms}\n",
            ),
        )
        .file("grpc-route.yaml", grpc_route)
        .up();
    let slow = format!("http://{}/slow", lab.vip(30));
    let ms = Duration::from_millis;

    let (code, took, body) = timed_curl(&lab, &[], &slow);
    assert_eq!(code, "504", "{body}");
    assert!(
        body.contains("timeouts.request (500ms) of HTTPRoute shop/slow rule 0"),
        "{body}"
    );
    within_ten_percent("HTTP/1.1 timeouts.request", took, ms(500));

    // HTTP/2 (prior knowledge) to the h2 upstream, told to stall.
    let (code, took, body) = timed_curl(
        &lab,
        &["--http2-prior-knowledge", "-H", "x-sleep-ms: 5000"],
        &format!("http://{}:9090/h2", lab.vip(31)),
    );
    assert_eq!(code, "504", "{body}");
    assert!(
        body.contains("timeouts.request (600ms) of HTTPRoute shop/grpc-slow"),
        "{body}"
    );
    within_ten_percent("HTTP/2 timeouts.request", took, ms(600));

    let (code, took, body) = timed_curl(&lab, &[], &format!("http://{}/try", lab.vip(30)));
    assert_eq!(code, "504", "{body}");
    assert!(
        body.contains("timeouts.backendRequest (300ms) of HTTPRoute shop/slow rule 1"),
        "{body}"
    );
    within_ten_percent("HTTP/1.1 timeouts.backendRequest", took, ms(300));

    let routed = format!("http://{}:9090", lab.vip(31));
    let (status, took, message) = timed_grpc(&lab, &routed, None);
    assert_eq!(status, "4", "{message}");
    assert!(
        message.contains("timeouts.request (600ms) of HTTPRoute shop/grpc-slow"),
        "{message}"
    );
    within_ten_percent("gRPC timeouts.request", took, ms(600));

    let (status, took, message) = timed_grpc(&lab, &routed, Some(300));
    assert_eq!(status, "4", "{message}");
    assert!(
        message.contains("grpc-timeout (300ms) of HTTPRoute shop/grpc-slow"),
        "{message}"
    );
    within_ten_percent("gRPC grpc-timeout under a route", took, ms(300));

    let direct = format!("http://{}:9090", lab.vip(32));
    let (status, took, message) = timed_grpc(&lab, &direct, Some(300));
    assert_eq!(status, "4", "{message}");
    assert!(
        message.contains("grpc-timeout (300ms) expired"),
        "{message}"
    );
    within_ten_percent("gRPC grpc-timeout without a route", took, ms(300));

    // A GRPCRoute routes by service and method: Unary takes the rule
    // whose only backend has weight 0 (the caller gets the error naming
    // it), another method of the service takes the catch-all rule.
    let by_method = format!("http://{}:9090", lab.vip(33));
    let (status, _, message) = grpc_call(&lab, &by_method, &["--method", "Unary"]);
    assert_ne!(status, "0", "{message}");
    assert!(
        message.contains("GRPCRoute shop/grpc-by-method rule 0"),
        "{message}"
    );
    let (status, _, message) = grpc_call(&lab, &by_method, &["--method", "Other"]);
    assert_eq!(status, "0", "{message}");
    lab.down();
}

const GRPC_BY_METHOD: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc-by-method, namespace: shop}
spec:
  parentRefs: [{kind: Service, group: \"\", name: grpc-routed, port: 9090}]
  rules:
    - matches: [{method: {service: palisade.test.v1.Echo, method: Unary}}]
      backendRefs: [{name: grpc-direct, port: 9090, weight: 0}]
    - matches: [{method: {service: palisade.test.v1.Echo}}]
      backendRefs: [{name: grpc-direct, port: 9090}]
";

fn rate_limit(spec: &str) -> String {
    format!(
        "apiVersion: policy.palisade.dev/v1alpha1\nkind: RateLimitPolicy\nmetadata: {{name: api-limit, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: api}}}}\n{spec}"
    )
}

/// `n` requests from `pod` to `url` at `rate` per second, one connection:
/// how many were refused with 429 (every one must get an answer).
fn refused_at(lab: &Lab, pod: &str, url: &str, n: usize, rate: u32) -> usize {
    let urls: Vec<String> = (0..n).map(|i| format!("{url}/{i}")).collect();
    let rate = format!("{rate}/s");
    let codes = statuses(lab, pod, &["--rate", &rate], &urls);
    assert_eq!(codes.len(), n, "{pod}: {codes:?}");
    assert!(
        codes.iter().all(|c| *c == 200 || *c == 429),
        "{pod}: {codes:?}"
    );
    codes.iter().filter(|c| **c == 429).count()
}

/// Both clients at twice their own limit, at once: each loses its own
/// share, whatever the other does.
fn both_at_twice_the_rate(lab: &Lab, url: &str, n: usize) -> (usize, usize) {
    std::thread::scope(|s| {
        let a = s.spawn(|| refused_at(lab, "client-a", url, n, 20));
        let b = s.spawn(|| refused_at(lab, "client-b", url, n, 20));
        (a.join().expect("client-a"), b.join().expect("client-b"))
    })
}

/// A per-client limit of 10 requests/s (burst 1): two clients each sending
/// 20/s lose half their requests each, independently; an override added in
/// the config folder lifts one client only, within a second, on the pooled
/// connection already open.
#[test]
fn rate_limits_refuse_the_excess_per_identity_and_an_override_lifts_one() {
    if !available("rate_limits_refuse_the_excess_per_identity_and_an_override_lifts_one") {
        return;
    }
    let mut lab = LabSpec::new(44)
        .pod(Pod::new("client-a", "shop", 10))
        .pod(Pod::new("client-b", "shop", 11))
        .pod(Pod::new("api", "shop", 20).echo(&[8080]))
        .service("api", "shop", 30, "api", (80, 8080))
        .file(
            "limit.yaml",
            &rate_limit("  perClient: {requestsPerSecond: 10, burst: 1}\n"),
        )
        .up();
    let url = format!("http://{}/r", lab.vip(30));
    // N requests at 2r/s take (N-1)/2r seconds; GCRA admits the burst and
    // then one per 1/r: 1 + 10 × 4.95 of 100, so 49.5% are refused.
    let n = 100;
    let expected = 100.0 - (1.0 + 10.0 * (n as f64 - 1.0) / 20.0);
    let (a, b) = both_at_twice_the_rate(&lab, &url, n);
    println!(
        "perClient 10/s, two clients at 20/s each: 429 for {a}% and {b}% (expected {expected:.1}%)"
    );
    for (who, got) in [("client-a", a), ("client-b", b)] {
        assert!(
            (got as f64 - expected).abs() <= 5.0,
            "{who}: {got}% refused, expected {expected:.1}%"
        );
    }

    // A refusal says who refused and when to come back.
    let out = lab.exec_as(
        "client-a",
        APP_UID,
        &[
            "curl",
            "-s",
            "-i",
            "--max-time",
            "5",
            &format!("{url}/x"),
            &format!("{url}/y"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains("429 too many requests"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("ratelimitpolicy shop/api-limit"), "{text}");
    assert!(
        metric(
            &lab.metrics("api"),
            "mesh_ratelimited_total",
            &[
                ("policy", "RateLimitPolicy shop/api-limit"),
                ("mode", "enforced")
            ]
        ) >= 80.0,
        "{}",
        lab.metrics("api")
    );

    // The limited proxy lists the policy it enforces.
    let admin = format!("http://{}", lab.admin("api"));
    let out = meshctl(&["route", "get", "--admin", &admin]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("RateLimitPolicy shop/api-limit  app=api   *         -      10/s burst 1"),
        "{table}"
    );

    // An override for client-b: applied within a second, b is no longer
    // limited, a still is, and b's pooled connection to api stays open.
    let connects = |pod: &str| {
        metric(
            &lab.metrics(pod),
            "mesh_pool_connects_total",
            &[("result", "success")],
        )
    };
    let opened = connects("client-b");
    let started = Instant::now();
    lab.write_config(
        "limit.yaml",
        &rate_limit(
            "  perClient: {requestsPerSecond: 10, burst: 1}\n  overrides:\n  - principals: [cluster.local/ns/shop/sa/client-b]\n    requestsPerSecond: 1000\n",
        ),
    );
    let burst: Vec<String> = (0..20).map(|i| format!("{url}/b{i}")).collect();
    wait_for("client-b no longer limited", Duration::from_secs(1), || {
        let codes = statuses(&lab, "client-b", &[], &burst);
        codes.iter().all(|c| *c == 200).then_some(())
    });
    println!("override applied within {:?}", started.elapsed());
    let (a, b) = both_at_twice_the_rate(&lab, &url, n);
    println!("with client-b's override: 429 for client-a {a}%, client-b {b}%");
    assert!((a as f64 - expected).abs() <= 5.0, "client-a {a}% refused");
    assert_eq!(b, 0, "client-b refused {b}%");
    assert_eq!(
        connects("client-b"),
        opened,
        "the pooled connection was replaced"
    );
    lab.down();
}

/// The bodies of `n` requests from `pod` to `url`, one connection, in turn.
fn bodies(lab: &Lab, pod: &str, url: &str, n: usize) -> String {
    let urls: Vec<String> = (0..n).map(|i| format!("{url}/{i}")).collect();
    let mut argv: Vec<&str> = vec!["curl", "-s", "--max-time", "120"];
    argv.extend(urls.iter().map(String::as_str));
    String::from_utf8_lossy(&lab.exec_as(pod, APP_UID, &argv).stdout).into_owned()
}

/// Three endpoints, one of them ten times slower (100 ms against 10 ms):
/// power of two choices over peak-EWMA latency sends it few requests.
#[test]
fn a_ten_times_slower_endpoint_gets_under_a_tenth_of_requests() {
    if !available("a_ten_times_slower_endpoint_gets_under_a_tenth_of_requests") {
        return;
    }
    let mut lab = LabSpec::new(45)
        .pod(Pod::new("client", "shop", 10))
        .pod(
            Pod::new("api-1", "shop", 20)
                .label("app", "api")
                .echo_with(8080, "--delay-ms 10"),
        )
        .pod(
            Pod::new("api-2", "shop", 21)
                .label("app", "api")
                .echo_with(8080, "--delay-ms 10"),
        )
        .pod(
            Pod::new("api-slow", "shop", 22)
                .label("app", "api")
                .echo_with(8080, "--delay-ms 100"),
        )
        .service("api", "shop", 30, "api", (80, 8080))
        .up();
    let url = format!("http://{}/b", lab.vip(30));
    let body = bodies(&lab, "client", &url, 300);
    let count = |who: &str| body.matches(&format!("{who} received")).count();
    let (a, b, slow) = (count("api-1"), count("api-2"), count("api-slow"));
    println!("300 requests over 10 ms, 10 ms and 100 ms endpoints: {a}, {b}, {slow}");
    assert_eq!(a + b + slow, 300, "{}", &body[..body.len().min(500)]);
    assert!(slow < 30, "the slow endpoint got {slow} of 300");
    lab.down();
}

/// An endpoint that fails every request is ejected after 5 failures in a
/// row; clients then see its errors only on the probes that find it still
/// failing (each ejecting it for longer); once it recovers a probe
/// re-admits it and it takes traffic again.
#[test]
fn a_failing_endpoint_is_ejected_and_readmitted_after_it_recovers() {
    if !available("a_failing_endpoint_is_ejected_and_readmitted_after_it_recovers") {
        return;
    }
    let outage = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        outage.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let down = outage.path().join("down");
    std::fs::write(&down, "").expect("outage file");
    let flags = format!("--fail-while {}", down.display());
    let mut lab = LabSpec::new(46)
        .pod(Pod::new("client", "shop", 10))
        .pod(
            Pod::new("api-1", "shop", 20)
                .label("app", "api")
                .echo(&[8080]),
        )
        .pod(
            Pod::new("api-2", "shop", 21)
                .label("app", "api")
                .echo(&[8080]),
        )
        .pod(
            Pod::new("api-bad", "shop", 22)
                .label("app", "api")
                .echo_with(8080, &flags),
        )
        .service("api", "shop", 30, "api", (80, 8080))
        .up();
    let url = format!("http://{}/e", lab.vip(30));
    // Batches of 50 requests at 50/s: at least four, and more (up to 30 s)
    // while nothing was ejected yet, since on a busy machine the client's
    // proxy may learn of the third endpoint a moment after the lab is up.
    let mut codes: Vec<u16> = Vec::new();
    let mut ejections = 0.0;
    let started = Instant::now();
    while codes.len() < 200 || (ejections < 1.0 && started.elapsed() < Duration::from_secs(30)) {
        let urls: Vec<String> = (codes.len()..codes.len() + 50)
            .map(|i| format!("{url}/{i}"))
            .collect();
        let batch = statuses(&lab, "client", &["--rate", "50/s"], &urls);
        assert_eq!(batch.len(), 50, "{batch:?}");
        codes.extend(batch);
        ejections = metric(&lab.metrics("client"), "mesh_endpoint_ejections_total", &[]);
    }
    let failed = codes.iter().filter(|c| **c == 503).count();
    let last_half = codes[codes.len() / 2..]
        .iter()
        .filter(|c| **c == 503)
        .count();
    println!(
        "one of three endpoints failing, {} requests at 50/s: {failed} failed ({last_half} in the second half), {ejections} ejections",
        codes.len()
    );
    assert!(ejections >= 1.0, "never ejected");
    // The client's proxy says so: meshctl route get lists api-bad ejected
    // (or due its probe), the others healthy.
    let admin = format!("http://{}", lab.admin("client"));
    let out = meshctl(&["route", "get", "--admin", &admin]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{table}");
    let line = |pod: &str| {
        let ip = lab.ip(pod).to_string();
        table
            .lines()
            .find(|l| l.starts_with(&format!("{ip}:8080")))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("api-1").ends_with("healthy"), "{table}");
    assert!(
        line("api-bad").contains("ejected") || line("api-bad").contains("probe"),
        "{table}"
    );
    // 5 failures eject it; each later ejection follows one failed probe.
    assert!(
        failed as f64 <= 4.0 + ejections,
        "{failed} failures for {ejections} ejections: {codes:?}"
    );

    // It recovers: within 30 s a probe finds it answering and it takes
    // requests again.
    std::fs::remove_file(&down).expect("end the outage");
    let recovered = Instant::now();
    wait_for("api-bad re-admitted", Duration::from_secs(30), || {
        bodies(&lab, "client", &url, 20)
            .contains("api-bad received")
            .then_some(())
    });
    println!("re-admitted {:?} after it recovered", recovered.elapsed());
    lab.down();
}

fn retry_route(service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {service}, namespace: shop}}\nspec:\n  parentRefs: [{{kind: Service, group: \"\", name: {service}, port: 80}}]\n  rules:\n    - backendRefs: [{{name: {service}, port: 80}}]\n      retry: {{attempts: 3, codes: [503], backoff: 1ms}}\n"
    )
}

fn inbound_requests(lab: &Lab, pod: &str) -> f64 {
    metric(
        &lab.metrics(pod),
        "mesh_requests_total",
        &[("direction", "inbound")],
    )
}

/// A → B → C, C failing every request, both hops with `attempts: 3`: the
/// retry budgets (20% of requests plus 10 per second over a 10 s window)
/// keep the load that reaches B within the budget of what A offered, and
/// the load that reaches C within the budget of what reached B; without
/// budgets it would be 4× and 16×.
#[test]
fn retries_do_not_amplify_along_a_chain_when_everything_fails() {
    if !available("retries_do_not_amplify_along_a_chain_when_everything_fails") {
        return;
    }
    let forward = "--forward 10.251.47.31:80";
    let mut lab = LabSpec::new(47)
        .pod(Pod::new("a", "shop", 10))
        .pod(Pod::new("b", "shop", 20).echo_with(8080, forward))
        .pod(Pod::new("c", "shop", 21).echo_with(8080, "--fail-every 1"))
        .service("b", "shop", 30, "b", (80, 8080))
        .service("c", "shop", 31, "c", (80, 8080))
        .file("route-b.yaml", &retry_route("b"))
        .file("route-c.yaml", &retry_route("c"))
        .up();
    let offered = 2000;
    let urls: Vec<String> = (0..offered)
        .map(|i| format!("http://{}/{i}", lab.vip(30)))
        .collect();
    // 500/s: five clients at 120/s each (curl paces only one transfer at
    // a time, and each waits for its answer).
    let started = Instant::now();
    let codes: Vec<u16> = std::thread::scope(|s| {
        let clients: Vec<_> = urls
            .chunks(offered / 5)
            .map(|part| s.spawn(|| statuses(&lab, "a", &["--rate", "120/s"], part)))
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().expect("client"))
            .collect()
    });
    let took = started.elapsed();
    assert_eq!(codes.len(), offered, "{:?}", &codes[..codes.len().min(20)]);
    assert!(codes.iter().all(|c| *c == 503), "C fails everything");
    let (at_b, at_c) = (inbound_requests(&lab, "b"), inbound_requests(&lab, "c"));
    let floor = f64::from(10 * 10);
    let offered = offered as f64;
    println!(
        "{offered} requests offered in {took:?} ({:.0}/s): B received {at_b} ({:.2}x), C received {at_c} ({:.2}x of B)",
        offered / took.as_secs_f64(),
        at_b / offered,
        at_c / at_b
    );
    assert!(at_b >= offered, "B received {at_b}");
    assert!(
        at_b <= 1.2 * offered + floor,
        "B received {at_b} for {offered} offered"
    );
    assert!(
        at_c <= 1.2 * at_b + floor,
        "C received {at_c} for {at_b} at B"
    );
    let exhausted = metric(
        &lab.metrics("a"),
        "mesh_retries_total",
        &[("result", "budget_exhausted")],
    );
    assert!(exhausted > 0.0, "A's budget never ran out");
    lab.down();
}
