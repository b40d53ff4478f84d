//! One AdmissionReview in, one AdmissionReview out. Never an error: a review
//! that cannot be read gets an AdmissionReview saying so, which the API
//! server treats as a failed call (and, with `failurePolicy: Fail`, refuses
//! the pod rather than running it unmeshed).

use base64::Engine;
use kube_core::DynamicObject;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::Settings;
use crate::patch::{self, Outcome};

/// The namespace of a request that names none (the API server always does
/// for pods; only a hand-written review lacks it).
const DEFAULT_NAMESPACE: &str = "default";

/// Answers the review in `body`, as the JSON the API server reads.
pub fn answer_json(body: &[u8], settings: &Settings) -> Vec<u8> {
    // Plain data; serializing it cannot fail.
    let mut json = serde_json::to_value(answer(body, settings)).unwrap_or_default();
    // The API's `patch` is Go `[]byte`: documented, and written by every
    // other webhook, as a base64 string. kube-core writes an array of
    // numbers, which Go happens to accept; the documented form is sent.
    if let Some(patch) = json.pointer_mut("/response/patch")
        && let Some(bytes) = patch.as_array().and_then(|a| {
            a.iter()
                .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Option<Vec<u8>>>()
        })
    {
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    serde_json::to_vec(&json).unwrap_or_default()
}

/// Answers the review in `body`.
pub fn answer(body: &[u8], settings: &Settings) -> AdmissionReview<DynamicObject> {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "malformed AdmissionReview");
            return AdmissionResponse::invalid(format!("malformed AdmissionReview: {e}"))
                .into_review();
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => {
            return AdmissionResponse::invalid("AdmissionReview has no request").into_review();
        }
    };
    respond(&request, settings).into_review()
}

fn respond(req: &AdmissionRequest<DynamicObject>, settings: &Settings) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(req);
    // Only new pods are meshed: an UPDATE cannot add containers to a pod.
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    if !is_pod || req.operation != Operation::Create || req.sub_resource.is_some() {
        return allowed;
    }
    let Some(object) = &req.object else {
        return allowed;
    };
    let value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return allowed.deny(format!("the pod cannot be read: {e}")),
    };
    let namespace = req
        .namespace
        .as_deref()
        .or_else(|| value.pointer("/metadata/namespace").and_then(Value::as_str))
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    let pod = patch::describe(&value);
    let outcome =
        patch::template(&value, "").and_then(|t| patch::plan(&t, "", namespace, settings));
    match outcome {
        Ok(Outcome::Skip(reason)) => {
            tracing::debug!(uid = %req.uid, %pod, namespace, %reason, "not injected");
            allowed
        }
        Ok(Outcome::Patch(ops)) => {
            // The patch is the whole effect of a review: a dry run gets the
            // same answer and changes nothing else.
            tracing::info!(uid = %req.uid, %pod, namespace, dry_run = req.dry_run, "injecting the proxy");
            match allowed.clone().with_patch(json_patch::Patch(ops)) {
                Ok(r) => r,
                Err(e) => allowed.deny(format!("the patch cannot be encoded: {e}")),
            }
        }
        Err(e) => {
            tracing::warn!(uid = %req.uid, %pod, namespace, error = %e, "pod refused");
            allowed.deny(format!("Palisade cannot mesh this pod: {e}"))
        }
    }
}
