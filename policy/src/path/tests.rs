use super::normalize_path;

#[test]
fn normalizes() {
    let cases = [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("//a///b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/../../a", "/a"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/a/", "/a/"),
        ("/a?x=1", "/a"),
        ("/a#frag", "/a"),
        ("/%61%62c", "/abc"),
        ("/a/%2e%2e/b", "/b"),
        ("/caf%C3%A9", "/café"),
        ("/my%20file", "/my file"),
        ("/ADMIN", "/ADMIN"),
    ];
    for (raw, want) in cases {
        assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
    }
}

#[test]
fn refuses_ambiguous_forms() {
    let refused = [
        "",
        "admin",
        "*",
        "http://host/admin",
        "/a%2Fb",
        "/a%2fb",
        "/a%5Cb",
        "/a\\b",
        "/a%00",
        "/a%0a",
        "/a%",
        "/a%4",
        "/a%zz",
        "/a%252e",
        "/a;x",
        "/a%3Bx",
        "/%c0%af",
        "/a%ff",
        "/a%3Fb",
        "/a%23b",
        "/a b",
        "/admin.",
        "/admin%20",
        "/%ef%bc%8fadmin",
        "/é",
    ];
    for raw in refused {
        assert!(normalize_path(raw).is_err(), "{raw:?} should be refused");
    }
}

#[test]
fn refusal_names_the_reason() {
    let error = normalize_path("/a%2Fb").expect_err("refused");
    assert_eq!(
        error.to_string(),
        "request path \"/a%2Fb\" refused: encoded slash (%2F)"
    );
}
