use std::os::unix::fs::PermissionsExt;

use super::*;

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn token_verifies_with_the_data_dir_key() {
    let dir = tempfile::tempdir().unwrap();
    let first = create(dir.path(), "shop", "api", HOUR).unwrap();
    // First use creates the key the control plane will load.
    assert!(first.generated_key);
    assert_eq!(first.key_path, dir.path().join("token.key"));
    let second = create(dir.path(), "shop", "api", HOUR).unwrap();
    assert!(!second.generated_key);

    let key = TokenKey::load_or_generate(dir.path()).unwrap();
    let claims = key.verify(&first.token).unwrap();
    assert_eq!(claims.namespace, "shop");
    assert_eq!(claims.service_account, "api");
    assert_eq!(claims.expires_at - claims.issued_at, 3600);
    // One line, nothing but the token: it is redirected into a token file.
    assert!(!first.token.contains(char::is_whitespace));
}

#[test]
fn segments_must_be_spiffe_path_segments() {
    let dir = tempfile::tempdir().unwrap();
    for (ns, sa, flag, reason) in [
        ("", "api", "namespace", "must not be empty"),
        ("shop", "", "service-account", "must not be empty"),
        // A '/' would name another identity: ns "a/sa/b" is spiffe://…/ns/a/sa/b/sa/…
        ("a/sa/b", "api", "namespace", "'/'"),
        ("..", "api", "namespace", "'.' or '..'"),
        ("shop", "api?x=1", "service-account", "letters, digits"),
        ("sh op", "api", "namespace", "letters, digits"),
    ] {
        let err = create(dir.path(), ns, sa, HOUR).unwrap_err().to_string();
        assert!(err.contains(&format!("--{flag}")), "{ns:?}/{sa:?}: {err}");
        assert!(err.contains(reason), "{ns:?}/{sa:?}: {err}");
    }
    // Nothing was created for refused input.
    assert!(!dir.path().join("token.key").exists());
}

#[test]
fn refuses_short_ttl_and_missing_dir() {
    let dir = tempfile::tempdir().unwrap();
    let err = create(dir.path(), "shop", "api", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, TokenCreateError::TtlTooShort(_)), "{err}");

    let missing = dir.path().join("nope");
    let err = create(&missing, "shop", "api", HOUR)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope") && err.contains("--data-dir"), "{err}");
}

#[test]
fn refuses_a_readable_key_without_leaking_it() {
    let dir = tempfile::tempdir().unwrap();
    create(dir.path(), "shop", "api", HOUR).unwrap();
    let key_path = dir.path().join("token.key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = create(dir.path(), "shop", "api", HOUR)
        .unwrap_err()
        .to_string();
    // The error tells the operator how to fix it.
    assert!(err.contains("chmod 600"), "{err}");
}
