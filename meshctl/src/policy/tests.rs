use super::*;

#[test]
fn labels() {
    let parsed = parse_labels("app=api, tier=backend,empty=").unwrap();
    assert_eq!(parsed.len(), 3);
    assert_eq!(parsed["app"], "api");
    assert_eq!(parsed["tier"], "backend");
    // Kubernetes label values may be empty.
    assert_eq!(parsed["empty"], "");
    // A workload without labels.
    assert!(parse_labels("").unwrap().is_empty());
    for (bad, reason) in [
        ("app", "not key=value"),
        ("=api", "empty key"),
        ("app=a,app=b", "given twice"),
        ("app=a,,b=c", "not key=value"),
    ] {
        let err = parse_labels(bad).unwrap_err().to_string();
        assert!(err.contains(reason), "{bad:?}: {err}");
    }
}

#[test]
fn headers() {
    assert_eq!(
        parse_header("X-Tenant=acme=1, b").unwrap(),
        ("x-tenant".to_owned(), "acme=1, b".to_owned())
    );
    assert_eq!(
        parse_header("x-empty=").unwrap(),
        ("x-empty".to_owned(), String::new())
    );
    for bad in ["x-tenant", "=v", "x tenant=v", "x:y=v"] {
        assert!(parse_header(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn origins_name_each_objects_file() {
    let dir = tempfile::tempdir().unwrap();
    let doc = |name: &str| {
        format!(
            "apiVersion: security.palisade.dev/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: {name}, namespace: shop}}\nspec: {{}}\n"
        )
    };
    std::fs::write(dir.path().join("a.yaml"), doc("one")).unwrap();
    std::fs::write(
        dir.path().join("b.yml"),
        format!("{}---\n{}", doc("two"), doc("three")),
    )
    .unwrap();
    // Skipped, as the loader skips them.
    std::fs::write(dir.path().join(".hidden.yaml"), doc("hidden")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml").unwrap();

    assert_eq!(load(dir.path()).unwrap().snapshot.objects.len(), 3);
    let files = origins(dir.path());
    let file_of = |name: &str| {
        files
            .iter()
            .find(|(id, _)| id.name == name)
            .map(|(_, f)| f.rsplit('/').next().unwrap_or_default().to_owned())
    };
    assert_eq!(file_of("one").as_deref(), Some("a.yaml"));
    assert_eq!(file_of("two").as_deref(), Some("b.yml"));
    assert_eq!(file_of("three").as_deref(), Some("b.yml"));
    assert_eq!(file_of("hidden"), None);
}

#[test]
fn load_errors_list_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "kind: [").unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "apiVersion: v2\nkind: NetworkPolicy\nmetadata: {name: x}\n",
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("does not load (2 problems):\n  "), "{err}");
    assert!(err.contains("a.yaml"), "{err}");
    assert!(
        err.contains("b.yaml: NetworkPolicy default/x: apiVersion"),
        "{err}"
    );
}
