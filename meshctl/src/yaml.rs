//! Multi-document Kubernetes YAML in and out, as JSON values (the shape the
//! API server and the k8s-openapi types use).

use serde_json::Value;

/// YAML that does not parse, with where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct Error {
    pub source_name: String,
    pub message: String,
}

/// The documents of `text` (`source_name` only names it in errors).
pub fn parse(source_name: &str, text: &str) -> Result<Vec<Value>, Error> {
    // YAML 1.2 booleans, as the API server reads them: with YAML 1.1's, a
    // label value `no` would silently become `false`.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| Error {
            source_name: source_name.to_owned(),
            message: e.without_snippet().to_string(),
        })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// The documents as multi-document YAML.
pub fn render(docs: &[Value]) -> String {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        // JSON values always have a YAML form.
        out.push_str(&serde_saphyr::to_string(d).unwrap_or_default());
    }
    out
}
