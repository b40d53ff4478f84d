//! What `policy lint` found, and its two renderings: one line per finding
//! for people, one JSON object for scripts (field names are a contract).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; does not fail the lint.
    Info,
    /// Probably a mistake or an open door; fails the lint.
    Warning,
    /// Opens the whole mesh; fails the lint.
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    /// `<kind> <namespace>/<name>`, or `Namespace <name>` for a namespace.
    pub object: String,
    /// The file the object was loaded from; `null` for namespace findings.
    pub file: Option<String>,
    pub message: String,
}

impl fmt::Display for Finding {
    /// `warning: policies/shop.yaml: AuthorizationPolicy shop/open: … [allow-all]`,
    /// the shape of the loader's errors with the severity in front.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        write!(f, "{}: {} [{}]", self.object, self.message, self.code)
    }
}

/// All findings, most severe first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LintReport {
    pub findings: Vec<Finding>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    findings: &'a [Finding],
    summary: BTreeMap<&'static str, usize>,
    /// Whether the lint fails (a warning or an error): the exit code, as data.
    failed: bool,
}

impl LintReport {
    /// A finding of severity warning or above: `policy lint` exits 1.
    pub fn failed(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity >= Severity::Warning)
    }

    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// One finding per line, then a summary line.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        for finding in &self.findings {
            out.push_str(&finding.to_string());
            out.push('\n');
        }
        if self.findings.is_empty() {
            out.push_str("no findings\n");
        } else {
            let n = self.findings.len();
            out.push_str(&format!(
                "{n} finding{}: {} error{}, {} warning{}, {} info\n",
                plural(n),
                self.count(Severity::Error),
                plural(self.count(Severity::Error)),
                self.count(Severity::Warning),
                plural(self.count(Severity::Warning)),
                self.count(Severity::Info),
            ));
        }
        out
    }

    /// `{"findings": [{"severity", "code", "object", "file", "message"}…],
    ///   "summary": {"error": n, "warning": n, "info": n}, "failed": bool}`
    pub fn to_json(&self) -> String {
        let summary = [Severity::Error, Severity::Warning, Severity::Info]
            .into_iter()
            .map(|s| (s.as_str(), self.count(s)))
            .collect();
        let report = JsonReport {
            findings: &self.findings,
            summary,
            failed: self.failed(),
        };
        // Strings and numbers only: serializing cannot fail.
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
