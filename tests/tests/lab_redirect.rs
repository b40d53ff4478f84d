//! Redirection in lab pods: the proxy's own connections are not redirected
//! (no loop), skip-ports bypass the proxy, and a pod without a sidecar is
//! refused by a STRICT workload and admitted, as plaintext, by a PERMISSIVE
//! one.

use mesh_tests::metric;
use mesh_tests::netns::{APP_UID, LabSpec, PROXY_UID, Pod, available};

/// The rule that sends app traffic to the outbound proxy.
const OUTPUT_REDIRECT: &str = "-p tcp -j REDIRECT --to-ports 4140";
/// The rule that exempts the proxy's UID.
const OUTPUT_PROXY_UID: &str = "-m owner --uid-owner 2102 -j RETURN";

fn outbound_plain(metrics: &str) -> f64 {
    metric(
        metrics,
        "mesh_tcp_connections_total",
        &[("direction", "outbound"), ("tls", "false")],
    )
}

#[test]
fn proxy_connections_are_not_redirected() {
    if !available("proxy_connections_are_not_redirected") {
        return;
    }
    let mut lab = LabSpec::new(11)
        .pod(Pod::new("client", "default", 10))
        .pod(Pod::new("plain", "default", 20).no_sidecar().echo(&[8080]))
        .up();
    // Being ready at all means the proxy's own connection to the control
    // plane (made as UID 2102) went out directly instead of into itself.
    let url = format!("http://{}:8080/direct", lab.ip("plain"));
    let counters = |lab: &mesh_tests::netns::Lab| {
        (
            lab.nat_counter("client", "PALISADE_OUTPUT", OUTPUT_REDIRECT),
            lab.nat_counter("client", "PALISADE_OUTPUT", OUTPUT_PROXY_UID),
            outbound_plain(&lab.metrics("client")),
        )
    };

    let (redirected, exempt, proxied) = counters(&lab);
    let (code, body) = lab.curl_as("client", PROXY_UID, &url);
    assert_eq!(code, 200, "{body}");
    let after = counters(&lab);
    assert_eq!(
        after.0, redirected,
        "a connection of UID 2102 was redirected"
    );
    assert_eq!(after.1, exempt + 1, "the UID exemption did not see it");
    assert_eq!(after.2, proxied, "the outbound proxy saw it");

    // The same request from the app goes through the proxy (plain TCP, as
    // the destination is outside the mesh).
    let (code, body) = lab.curl_as("client", APP_UID, &url);
    assert_eq!(code, 200, "{body}");
    let last = counters(&lab);
    assert_eq!(
        last.0,
        after.0 + 1,
        "the app's connection was not redirected"
    );
    assert_eq!(last.2, after.2 + 1.0, "the outbound proxy did not carry it");
    assert!(
        body.contains(&format!("from {}:", lab.ip("client"))),
        "{body}"
    );
    lab.down();
}

#[test]
fn skip_ports_bypass_the_proxy() {
    if !available("skip_ports_bypass_the_proxy") {
        return;
    }
    let mut server = Pod::new("server", "default", 10).echo(&[8080, 7070]);
    server.skip_inbound_ports = vec![7070];
    let mut client = Pod::new("client", "default", 30);
    client.skip_outbound_ports = vec![9090];
    // No PeerAuthentication: Palisade's default, STRICT.
    let mut lab = LabSpec::new(12)
        .pod(server)
        .pod(
            Pod::new("legacy", "default", 20)
                .no_sidecar()
                .echo(&[8080, 9090]),
        )
        .pod(client)
        .up();
    let inbound = |lab: &mesh_tests::netns::Lab| {
        metric(
            &lab.metrics("server"),
            "mesh_tcp_connections_total",
            &[("direction", "inbound")],
        )
    };

    // Inbound: plaintext to a meshed port is refused by STRICT...
    let (code, _) = lab.curl("legacy", &format!("http://{}:8080/", lab.ip("server")));
    assert_ne!(code, 200, "STRICT let plaintext through on a meshed port");
    // ...but a skipped port reaches the app directly, past the proxy.
    let before = inbound(&lab);
    let (code, body) = lab.curl("legacy", &format!("http://{}:7070/", lab.ip("server")));
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&format!("from {}:", lab.ip("legacy"))),
        "{body}"
    );
    assert_eq!(
        inbound(&lab),
        before,
        "the proxy saw a skipped inbound port"
    );

    // Outbound: a skipped port is not redirected; another one is.
    let redirected = lab.nat_counter("client", "PALISADE_OUTPUT", OUTPUT_REDIRECT);
    let proxied = outbound_plain(&lab.metrics("client"));
    let (code, body) = lab.curl("client", &format!("http://{}:9090/", lab.ip("legacy")));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        lab.nat_counter("client", "PALISADE_OUTPUT", OUTPUT_REDIRECT),
        redirected
    );
    assert_eq!(outbound_plain(&lab.metrics("client")), proxied);
    let (code, body) = lab.curl("client", &format!("http://{}:8080/", lab.ip("legacy")));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        lab.nat_counter("client", "PALISADE_OUTPUT", OUTPUT_REDIRECT),
        redirected + 1
    );
    assert_eq!(outbound_plain(&lab.metrics("client")), proxied + 1.0);
    lab.down();
}

#[test]
fn plaintext_is_refused_by_strict_and_admitted_by_permissive() {
    if !available("plaintext_is_refused_by_strict_and_admitted_by_permissive") {
        return;
    }
    let mut lab = LabSpec::new(13)
        .pod(Pod::new("strict", "shop", 10).echo(&[8080]))
        .pod(Pod::new("permissive", "shop", 20).echo(&[8080]))
        .pod(Pod::new("legacy", "shop", 30).no_sidecar())
        .file(
            "mtls.yaml",
            "apiVersion: security.palisade.dev/v1\nkind: PeerAuthentication\n\
             metadata: {name: default, namespace: mesh-system}\nspec: {mtls: {mode: STRICT}}\n\
             ---\n\
             apiVersion: security.palisade.dev/v1\nkind: PeerAuthentication\n\
             metadata: {name: permissive, namespace: shop}\n\
             spec: {selector: {matchLabels: {app: permissive}}, mtls: {mode: PERMISSIVE}}\n",
        )
        .up();

    let (code, body) = lab.curl("legacy", &format!("http://{}:8080/x", lab.ip("strict")));
    assert_ne!(code, 200, "STRICT admitted plaintext: {body}");
    let m = lab.metrics("strict");
    assert!(
        metric(
            &m,
            "mesh_authz_decisions_total",
            &[
                ("decision", "deny"),
                ("policy", "PeerAuthentication mesh-system/default")
            ]
        ) >= 1.0,
        "{m}"
    );

    let (code, body) = lab.curl("legacy", &format!("http://{}:8080/x", lab.ip("permissive")));
    assert_eq!(code, 200, "PERMISSIVE refused plaintext: {body}");
    assert!(body.starts_with("permissive received"), "{body}");
    let m = lab.metrics("permissive");
    assert!(
        metric(
            &m,
            "mesh_tcp_connections_total",
            &[("direction", "inbound"), ("tls", "false")]
        ) >= 1.0,
        "not counted as plaintext: {m}"
    );
    lab.down();
}
