//! Label selectors: Istio's `matchLabels` and Kubernetes' full LabelSelector.

use crate::resource::{LabelSelector, Labels, NAMESPACE_NAME_LABEL};

/// Something with labels: a pod, or a namespace (which also carries the
/// automatic `kubernetes.io/metadata.name` label).
pub(crate) trait LabelLookup {
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for Labels {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// A namespace as seen by a namespaceSelector.
pub(crate) struct NamespaceLabels<'a> {
    pub(crate) name: &'a str,
    /// `None` when no Namespace object was loaded for it: it still has its
    /// automatic name label, as every namespace in Kubernetes does.
    pub(crate) labels: Option<&'a Labels>,
}

impl LabelLookup for NamespaceLabels<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        // The API server sets this label itself and overrides any other value.
        if key == NAMESPACE_NAME_LABEL {
            return Some(self.name);
        }
        self.labels.and_then(|l| l.get(key)).map(String::as_str)
    }
}

#[derive(Debug, Clone)]
enum Requirement {
    In(Box<str>, Vec<Box<str>>),
    NotIn(Box<str>, Vec<Box<str>>),
    Exists(Box<str>),
    DoesNotExist(Box<str>),
}

/// A compiled selector; an empty one selects everything (Kubernetes: "an
/// empty podSelector selects all pods in the namespace").
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    labels: Vec<(Box<str>, Box<str>)>,
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The `selector` of a policy kind (Istio's WorkloadSelector): `None`
    /// when absent or empty (every workload of the namespace).
    pub(crate) fn of_workloads(
        selector: Option<&crate::resource::WorkloadSelector>,
    ) -> Option<Selector> {
        selector
            .and_then(|s| s.match_labels.as_ref())
            .filter(|labels| !labels.is_empty())
            .map(Selector::from_match_labels)
    }

    /// Istio's WorkloadSelector: `matchLabels` only.
    pub(crate) fn from_match_labels<'a>(
        labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Selector {
        Selector {
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
            requirements: Vec::new(),
        }
    }

    /// Kubernetes' LabelSelector. Errors are `(field suffix, message)` so the
    /// caller can put them under the selector's own path.
    pub(crate) fn compile(selector: &LabelSelector) -> Result<Selector, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut out = Selector::default();
        if let Some(labels) = &selector.match_labels {
            out.labels = labels
                .iter()
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect();
        }
        for (i, requirement) in selector.match_expressions.iter().flatten().enumerate() {
            let field = format!("matchExpressions[{i}]");
            let key: Box<str> = requirement.key.as_str().into();
            if key.is_empty() {
                errors.push((format!("{field}.key"), "must not be empty".to_owned()));
                continue;
            }
            let values: Vec<Box<str>> = requirement
                .values
                .iter()
                .flatten()
                .map(|v| v.as_str().into())
                .collect();
            // Kubernetes validation: In/NotIn need values, Exists/DoesNotExist take none.
            let compiled = match requirement.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    errors.push((
                        format!("{field}.values"),
                        format!("operator {} needs at least one value", requirement.operator),
                    ));
                    continue;
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    errors.push((
                        format!("{field}.values"),
                        format!("operator {} takes no values", requirement.operator),
                    ));
                    continue;
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    errors.push((
                        format!("{field}.operator"),
                        format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
                    ));
                    continue;
                }
            };
            out.requirements.push(compiled);
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.requirements.is_empty()
    }

    /// All requirements hold (they are ANDed, as in Kubernetes).
    pub(crate) fn matches(&self, target: &impl LabelLookup) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| target.label(k) == Some(&**v))
            && self.requirements.iter().all(|r| match r {
                Requirement::In(k, values) => target
                    .label(k)
                    .is_some_and(|v| values.iter().any(|x| **x == *v)),
                // Kubernetes: NotIn also matches objects that lack the key.
                Requirement::NotIn(k, values) => target
                    .label(k)
                    .is_none_or(|v| values.iter().all(|x| **x != *v)),
                Requirement::Exists(k) => target.label(k).is_some(),
                Requirement::DoesNotExist(k) => target.label(k).is_none(),
            })
    }
}
