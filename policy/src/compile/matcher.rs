//! Istio string matching, compiled: exact, prefix `x*`, suffix `*x`, presence `*`.
//!
//! Exact values are kept sorted so a field with many values (a long list of
//! principals) is a binary search, not a scan; prefixes and suffixes are
//! rarely numerous and are scanned. Nothing here allocates when matching.

use std::cmp::Ordering;

/// How the values of one field are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    /// Paths, principals, namespaces, methods, header values: Istio compares
    /// them as written.
    Sensitive,
    /// Hosts: DNS names are case-insensitive (RFC 4343), and Istio fixed a
    /// policy bypass by comparing them that way (CVE-2021-39155).
    Insensitive,
}

/// One written pattern, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Suffix(&'a str),
    Any,
}

/// Classifies a pattern the way Istio does, but refuses the forms Istio
/// quietly treats as literals (`a*b`, `**`), which are almost always mistakes.
pub(crate) fn classify(value: &str) -> Result<Pattern<'_>, String> {
    if value.is_empty() {
        return Err("an empty string matches nothing; remove it".to_owned());
    }
    if value == "*" {
        return Ok(Pattern::Any);
    }
    let (pattern, rest) = if let Some(rest) = value.strip_prefix('*') {
        (Pattern::Suffix(rest), rest)
    } else if let Some(rest) = value.strip_suffix('*') {
        (Pattern::Prefix(rest), rest)
    } else {
        (Pattern::Exact(value), value)
    };
    if rest.contains('*') {
        return Err(format!(
            "{value:?}: `*` is supported only alone, at the start (suffix match) or at the end \
             (prefix match)"
        ));
    }
    Ok(pattern)
}

/// A compiled list of patterns: matches when any of them matches.
#[derive(Debug, Clone, Default)]
pub(crate) struct StrSet {
    exact: Vec<Box<str>>,
    prefixes: Vec<Box<str>>,
    suffixes: Vec<Box<str>>,
    any: bool,
    insensitive: bool,
}

impl StrSet {
    pub(crate) fn new(case: Case) -> StrSet {
        StrSet {
            insensitive: case == Case::Insensitive,
            ..StrSet::default()
        }
    }

    pub(crate) fn push(&mut self, pattern: Pattern<'_>) {
        let fold = |s: &str| -> Box<str> {
            if self.insensitive {
                s.to_ascii_lowercase().into_boxed_str()
            } else {
                s.into()
            }
        };
        match pattern {
            Pattern::Exact(s) => {
                let s = fold(s);
                self.exact.push(s);
            }
            Pattern::Prefix(s) => {
                let s = fold(s);
                self.prefixes.push(s);
            }
            Pattern::Suffix(s) => {
                let s = fold(s);
                self.suffixes.push(s);
            }
            Pattern::Any => self.any = true,
        }
    }

    /// Call after the last push: sorts the exact values for binary search.
    pub(crate) fn finish(mut self) -> StrSet {
        self.exact.sort_unstable();
        self.exact.dedup();
        self
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        if self.any {
            return true;
        }
        if self.insensitive {
            self.exact
                .binary_search_by(|p| cmp_folded(p, value))
                .is_ok()
                || self.prefixes.iter().any(|p| {
                    value.len() >= p.len()
                        && value.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                })
                || self.suffixes.iter().any(|p| {
                    value.len() >= p.len()
                        && value.as_bytes()[value.len() - p.len()..]
                            .eq_ignore_ascii_case(p.as_bytes())
                })
        } else {
            self.exact.binary_search_by(|p| (**p).cmp(value)).is_ok()
                || self.prefixes.iter().any(|p| value.starts_with(&**p))
                || self.suffixes.iter().any(|p| value.ends_with(&**p))
        }
    }

    /// Exact values only (for the principal index); `None` when any pattern
    /// is a wildcard.
    pub(crate) fn exact_only(&self) -> Option<&[Box<str>]> {
        if self.any || !self.prefixes.is_empty() || !self.suffixes.is_empty() {
            None
        } else {
            Some(&self.exact)
        }
    }
}

/// Orders an already-lowercased pattern against a value of any case, without
/// building a lowercased copy of the value.
fn cmp_folded(pattern: &str, value: &str) -> Ordering {
    pattern
        .bytes()
        .cmp(value.bytes().map(|b| b.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(case: Case, values: &[&str]) -> StrSet {
        let mut s = StrSet::new(case);
        for v in values {
            s.push(classify(v).expect("valid pattern"));
        }
        s.finish()
    }

    #[test]
    fn istio_string_match_forms() {
        // Istio: exact, prefix `x*`, suffix `*x`, presence `*`.
        let s = set(Case::Sensitive, &["/api/*", "*.json", "/exact"]);
        assert!(s.matches("/api/v1"));
        assert!(s.matches("/data.json"));
        assert!(s.matches("/exact"));
        assert!(!s.matches("/exact/"));
        assert!(!s.matches("/EXACT"));
        assert!(set(Case::Sensitive, &["*"]).matches("anything"));
    }

    #[test]
    fn hosts_fold_case() {
        // Istio (CVE-2021-39155): hosts compare case-insensitively.
        let s = set(Case::Insensitive, &["Example.COM", "*.Foo.io", "api.*"]);
        assert!(s.matches("example.com"));
        assert!(s.matches("EXAMPLE.com"));
        assert!(s.matches("a.foo.IO"));
        assert!(s.matches("API.internal"));
        assert!(!s.matches("example.org"));
    }

    #[test]
    fn refuses_inner_wildcards() {
        assert!(classify("a*b").is_err());
        assert!(classify("**").is_err());
        assert!(classify("").is_err());
    }
}
