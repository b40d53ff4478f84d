//! Request path normalization, so `paths` rules see the path the application
//! will serve and cannot be sidestepped by spelling it differently.
//!
//! The result is decoded once, has no query or fragment, no empty, `.` or
//! `..` segments. Forms that different servers read differently are refused
//! instead of guessed at: an encoded slash or backslash (`%2F`, `%5C`), a
//! raw backslash, NUL and other control characters, `%25` (double encoding),
//! an encoded `?` or `#`, `;` path parameters (Tomcat and Spring drop them),
//! invalid or overlong UTF-8 (`%c0%af`), Unicode look-alikes of `/`, `\` and
//! `.`, and segments ending in a dot or a space (Windows servers strip them).
//!
//! Matching stays case-sensitive, as in Istio: `/ADMIN` is a different path
//! from `/admin`, and a policy that must cover both lists both.

use crate::Error;

/// How much of a refused path an error repeats: enough to recognise it in a
/// log, not enough to let a client flood the log with one request.
const MAX_SHOWN_PATH: usize = 256;

/// Unicode characters that some servers fold into `/`, `\` or `.`
/// (fullwidth forms, division and fraction slashes, set minus).
const LOOK_ALIKES: [char; 6] = [
    '\u{FF0F}', '\u{FF3C}', '\u{FF0E}', '\u{2215}', '\u{2216}', '\u{2044}',
];

fn refuse(raw: &str, reason: &'static str) -> Error {
    let mut end = raw.len().min(MAX_SHOWN_PATH);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    Error::Path {
        path: raw[..end].to_owned(),
        reason,
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalizes the path of a request target (`/a//b/../c?x=1` → `/a/c`), or
/// refuses it. The proxy answers a refusal with 400 and never forwards it.
pub fn normalize_path(raw: &str) -> Result<String, Error> {
    // The query and fragment are not part of the path.
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(refuse(raw, "a request path must start with `/`"));
    }

    let mut decoded = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        let byte = match b {
            b'%' => {
                let (Some(h), Some(l)) = (bytes.next().and_then(hex), bytes.next().and_then(hex))
                else {
                    return Err(refuse(raw, "invalid percent-encoding"));
                };
                let byte = h << 4 | l;
                match byte {
                    b'/' => return Err(refuse(raw, "encoded slash (%2F)")),
                    b'\\' => return Err(refuse(raw, "encoded backslash (%5C)")),
                    b'%' => return Err(refuse(raw, "double encoding (%25)")),
                    b'?' | b'#' => return Err(refuse(raw, "encoded `?` or `#`")),
                    _ => {}
                }
                byte
            }
            b'\\' => return Err(refuse(raw, "backslash")),
            b if b >= 0x80 => {
                return Err(refuse(raw, "raw non-ASCII byte (must be percent-encoded)"));
            }
            b' ' => return Err(refuse(raw, "raw space")),
            b => b,
        };
        if byte < 0x20 || byte == 0x7f {
            return Err(refuse(raw, "NUL or control character"));
        }
        if byte == b';' {
            return Err(refuse(raw, "`;` path parameters"));
        }
        decoded.push(byte);
    }
    let decoded =
        std::str::from_utf8(&decoded).map_err(|_| refuse(raw, "invalid or overlong UTF-8"))?;
    if decoded.contains(LOOK_ALIKES) {
        return Err(refuse(raw, "Unicode look-alike of `/`, `\\` or `.`"));
    }

    let mut segments: Vec<&str> = Vec::new();
    // RFC 3986 remove_dot_segments: "/a/b/.." is "/a/", "/a/." is "/a/".
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                // Above the root stays at the root, as every server does.
                segments.pop();
                trailing_slash = true;
            }
            s if s.ends_with('.') || s.ends_with(' ') || s.starts_with(' ') => {
                return Err(refuse(
                    raw,
                    "segment starting with a space or ending in a dot or a space",
                ));
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
