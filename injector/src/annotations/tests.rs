use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_annotation_wins_over_the_label() {
    let labels = map(&[(INJECT, "enabled")]);
    let annotations = map(&[(INJECT, "disabled")]);
    assert_eq!(
        choice(Some(&labels), Some(&annotations)).unwrap(),
        Choice::Disabled
    );
    assert_eq!(choice(Some(&labels), None).unwrap(), Choice::Enabled);
    assert_eq!(choice(None, None).unwrap(), Choice::Unset);
}

#[test]
fn an_unknown_choice_is_refused_with_the_annotation_named() {
    let e = choice(None, Some(&map(&[(INJECT, "yes")]))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "annotation palisade.dev/inject: \"yes\" is not \"enabled\" or \"disabled\""
    );
}

#[test]
fn overrides_parse() {
    let o = Overrides::parse(Some(&map(&[
        (SKIP_INBOUND_PORTS, "9100, 9101"),
        (SKIP_OUTBOUND_PORTS, "5432"),
        (SKIP_SUBNETS, "10.96.0.0/12,fd00::/8"),
        (PROXY_CPU, "250m"),
        (PROXY_MEMORY, "1.5Gi"),
    ])))
    .unwrap();
    assert_eq!(o.skip_inbound_ports, [9100, 9101]);
    assert_eq!(o.skip_outbound_ports, [5432]);
    assert_eq!(o.skip_subnets, ["10.96.0.0/12", "fd00::/8"]);
    assert_eq!(o.cpu.as_deref(), Some("250m"));
    assert_eq!(o.memory.as_deref(), Some("1.5Gi"));
    assert_eq!(Overrides::parse(None).unwrap(), Overrides::default());
}

#[test]
fn bad_overrides_are_refused_naming_the_annotation() {
    let cases = [
        (SKIP_INBOUND_PORTS, "80,http"),
        (SKIP_OUTBOUND_PORTS, "0"),
        (SKIP_OUTBOUND_PORTS, "70000"),
        (SKIP_SUBNETS, "10.0.0.0"),
        (SKIP_SUBNETS, "10.0.0.0/33"),
        (SKIP_SUBNETS, "example.com/8"),
        (PROXY_CPU, "lots"),
        (PROXY_CPU, "1.2.3"),
        (PROXY_MEMORY, "Mi"),
        (PROXY_MEMORY, "-1Gi"),
    ];
    for (annotation, value) in cases {
        let e = Overrides::parse(Some(&map(&[(annotation, value)]))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("annotation {annotation}: ")),
            "{annotation}={value}: {e}"
        );
    }
}

#[test]
fn quantities_kubernetes_accepts_are_accepted() {
    for q in ["1", "0.5", "100m", "64Mi", "1e3", "2E6", "+1", "1k"] {
        assert!(quantity(PROXY_CPU, Some(q)).is_ok(), "{q}");
    }
}
