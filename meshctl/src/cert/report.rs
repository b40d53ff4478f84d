//! The result of `cert inspect` and its two renderings: an aligned table for
//! people and a JSON object for scripts (its field names are a contract).

use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::chain::CertInfo;

/// How `cert inspect` prints its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned `label: value` lines
    Table,
    /// One JSON object
    Json,
}

/// What was found about a certificate chain.
#[derive(Debug, Clone)]
pub struct Report {
    pub leaf: CertInfo,
    /// The rest of the chain as presented, issuer of the leaf first.
    pub issuers: Vec<CertInfo>,
    /// The leaf's SPIFFE ID, or why it is not a valid X.509-SVID.
    pub identity: Result<String, String>,
    /// Present when a trust bundle was given.
    pub verification: Option<Verification>,
    /// The instant "time left" is measured from.
    pub now: OffsetDateTime,
}

/// Whether the chain verified against a trust bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub trust_bundle: PathBuf,
    /// `Err` holds why it did not, in the verifier's words.
    pub result: Result<(), String>,
}

/// Where `now` falls in a certificate's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLeft {
    Valid { seconds: u64 },
    Expired { seconds_ago: u64 },
    NotYetValid { starts_in: u64 },
}

impl TimeLeft {
    pub fn at(not_before: OffsetDateTime, not_after: OffsetDateTime, now: OffsetDateTime) -> Self {
        // RFC 5280: both bounds are inclusive.
        if now < not_before {
            Self::NotYetValid {
                starts_in: whole_seconds(not_before - now),
            }
        } else if now > not_after {
            Self::Expired {
                seconds_ago: whole_seconds(now - not_after),
            }
        } else {
            Self::Valid {
                seconds: whole_seconds(not_after - now),
            }
        }
    }
}

impl std::fmt::Display for TimeLeft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Valid { seconds } => f.write_str(&format_span(seconds)),
            Self::Expired { seconds_ago } => write!(f, "EXPIRED {} ago", format_span(seconds_ago)),
            Self::NotYetValid { starts_in } => {
                write!(f, "NOT YET VALID, starts in {}", format_span(starts_in))
            }
        }
    }
}

fn whole_seconds(d: time::Duration) -> u64 {
    u64::try_from(d.whole_seconds()).unwrap_or(0)
}

/// A span in its two largest units, e.g. `23h59m`, `3d4h`, `5m`, `42s`: as
/// precise as an operator needs when asking "how long until it expires".
pub fn format_span(seconds: u64) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    for (i, (size, name)) in UNITS.iter().enumerate() {
        if seconds >= *size {
            let mut out = format!("{}{name}", seconds / size);
            if let Some((next, next_name)) = UNITS.get(i + 1) {
                let rest = (seconds % size) / next;
                if rest > 0 {
                    let _ = write!(out, "{rest}{next_name}");
                }
            }
            return out;
        }
    }
    "0s".into()
}

/// RFC 3339 in UTC; certificate times outside its year range fall back to
/// `time`'s own format rather than failing the whole report.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

#[derive(Serialize)]
struct JsonReport<'a> {
    identity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_error: Option<&'a str>,
    serial: &'a str,
    not_before: String,
    not_after: String,
    seconds_left: i64,
    expired: bool,
    not_yet_valid: bool,
    key_algorithm: &'a str,
    chain: Vec<JsonCert<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verify_error: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonCert<'a> {
    subject: &'a str,
    issuer: &'a str,
    serial: &'a str,
    not_before: String,
    not_after: String,
    is_ca: bool,
}

impl Report {
    /// The whole chain, leaf first.
    pub fn chain(&self) -> impl Iterator<Item = &CertInfo> {
        std::iter::once(&self.leaf).chain(&self.issuers)
    }

    pub fn time_left(&self) -> TimeLeft {
        TimeLeft::at(self.leaf.not_before, self.leaf.not_after, self.now)
    }

    /// `Some(false)` when a trust bundle was given and the chain failed it.
    pub fn verified(&self) -> Option<bool> {
        self.verification.as_ref().map(|v| v.result.is_ok())
    }

    pub fn render(&self, output: Output) -> Result<String, serde_json::Error> {
        match output {
            Output::Table => Ok(self.to_table()),
            Output::Json => self.to_json(),
        }
    }

    pub fn to_table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            (
                "identity",
                match &self.identity {
                    Ok(id) => id.clone(),
                    Err(why) => format!("none ({why})"),
                },
            ),
            ("serial", self.leaf.serial.clone()),
            ("not before", rfc3339(self.leaf.not_before)),
            ("not after", rfc3339(self.leaf.not_after)),
            ("time left", self.time_left().to_string()),
            ("key", self.leaf.key_algorithm.clone()),
        ];
        if let Some(v) = &self.verification {
            let bundle = v.trust_bundle.display();
            rows.push((
                "verified",
                match &v.result {
                    Ok(()) => format!("yes, against {bundle}"),
                    Err(why) => format!("NO, against {bundle}: {why}"),
                },
            ));
        }
        for (i, cert) in self.chain().enumerate() {
            let label = if i == 0 { "chain" } else { "" };
            let kind = if cert.is_ca { "CA, " } else { "" };
            rows.push((
                label,
                format!(
                    "[{i}] {} → {} ({kind}until {})",
                    subject_label(cert),
                    or_empty(&cert.issuer),
                    rfc3339(cert.not_after)
                ),
            ));
        }

        let mut out = String::new();
        for (label, value) in rows {
            let label = if label.is_empty() {
                String::new()
            } else {
                format!("{label}:")
            };
            let _ = writeln!(out, "{label:<12} {value}");
        }
        out
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let left = self.leaf.not_after - self.now;
        let time_left = self.time_left();
        let report = JsonReport {
            identity: self.identity.as_deref().ok(),
            identity_error: self.identity.as_ref().err().map(String::as_str),
            serial: &self.leaf.serial,
            not_before: rfc3339(self.leaf.not_before),
            not_after: rfc3339(self.leaf.not_after),
            seconds_left: left.whole_seconds(),
            expired: matches!(time_left, TimeLeft::Expired { .. }),
            not_yet_valid: matches!(time_left, TimeLeft::NotYetValid { .. }),
            key_algorithm: &self.leaf.key_algorithm,
            chain: self
                .chain()
                .map(|c| JsonCert {
                    subject: &c.subject,
                    issuer: &c.issuer,
                    serial: &c.serial,
                    not_before: rfc3339(c.not_before),
                    not_after: rfc3339(c.not_after),
                    is_ca: c.is_ca,
                })
                .collect(),
            verified: self.verified(),
            verify_error: self
                .verification
                .as_ref()
                .and_then(|v| v.result.as_ref().err())
                .map(String::as_str),
        };
        let mut json = serde_json::to_string_pretty(&report)?;
        json.push('\n');
        Ok(json)
    }
}

/// How a certificate is named in the chain: SVIDs have an empty subject and
/// are known by their URI SAN.
fn subject_label(cert: &CertInfo) -> String {
    if !cert.subject.is_empty() {
        return cert.subject.clone();
    }
    match cert.uri_sans.as_slice() {
        [] => "(empty subject)".into(),
        uris => uris.join(", "),
    }
}

fn or_empty(name: &str) -> &str {
    if name.is_empty() {
        "(empty issuer)"
    } else {
        name
    }
}
