use super::*;

#[test]
fn valid_ids() {
    for s in [
        "spiffe://cluster.local/ns/default/sa/api",
        "spiffe://example.org",
        "spiffe://a-b_c.d/x/y.z/under_score",
    ] {
        let id = SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(id.as_str(), s);
    }
}

#[test]
fn parts() {
    let id = SpiffeId::workload("cluster.local", "shop", "api").unwrap();
    assert_eq!(id.as_str(), "spiffe://cluster.local/ns/shop/sa/api");
    assert_eq!(id.trust_domain(), "cluster.local");
    assert_eq!(id.path(), "/ns/shop/sa/api");
    assert_eq!(id.namespace(), Some("shop"));
    assert_eq!(id.service_account(), Some("api"));
    assert_eq!(
        SpiffeId::parse("spiffe://td/other/x").unwrap().namespace(),
        None
    );
    // A namespace or service account is one segment; "/" cannot smuggle in another ID.
    assert_eq!(
        SpiffeId::workload("cluster.local", "a/sa/b", "c"),
        Err(SpiffeIdError::NotWorkload)
    );
    assert_eq!(
        SpiffeId::workload("cluster.local", "a", "b/c"),
        Err(SpiffeIdError::NotWorkload)
    );
}

#[test]
fn invalid_ids_per_spec() {
    use SpiffeIdError::*;
    let long = format!("spiffe://td/{}", "a".repeat(2100));
    let cases: &[(&str, SpiffeIdError)] = &[
        ("", Empty),
        ("http://cluster.local/ns/a/sa/b", WrongScheme),
        ("spiffe:///ns/a", EmptyTrustDomain),
        // Trust domains are lowercase; no port or userinfo.
        ("spiffe://Cluster.local/ns/a", BadTrustDomainChar),
        ("spiffe://td:8080/ns/a", BadTrustDomainChar),
        ("spiffe://user@td/ns/a", BadTrustDomainChar),
        // No empty, '.' or '..' segments.
        ("spiffe://td/ns//sa", EmptySegment),
        ("spiffe://td/ns/./sa", DotSegment),
        ("spiffe://td/ns/../sa", DotSegment),
        ("spiffe://td/ns/", TrailingSlash),
        // No query or fragment, no percent-encoding.
        ("spiffe://td/ns?x=1", BadPathChar),
        ("spiffe://td/ns#frag", BadPathChar),
        ("spiffe://td/n%20s", BadPathChar),
        (long.as_str(), TooLong),
    ];
    for (s, want) in cases {
        assert_eq!(SpiffeId::parse(s).as_ref(), Err(want), "{s}");
    }
}
