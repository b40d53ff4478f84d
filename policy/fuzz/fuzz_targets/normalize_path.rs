//! normalize_path never panics, and what it returns is a clean path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_policy::normalize_path;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalize_path(raw) else {
        return;
    };
    assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
    for bad in ["//", "/./", "/../", "\\", "?", "#", "%", ";", "\0"] {
        assert!(!path.contains(bad), "{raw:?} -> {path:?} contains {bad:?}");
    }
    assert!(!path.ends_with("/.") && !path.ends_with("/.."), "{raw:?} -> {path:?}");
    // A plain-ASCII result is a fixed point: normalizing again changes nothing.
    if path.bytes().all(|b| b.is_ascii_graphic()) {
        assert_eq!(normalize_path(&path).as_deref(), Ok(path.as_str()), "{raw:?}");
    }
});
