//! Palisade's sidecar injector: the patch that meshes a pod, as a library
//! (the admission webhook and `meshctl inject` both call it), and the
//! HTTPS AdmissionReview v1 webhook around it.
//!
//! ```text
//! AdmissionReview ──review──▶ Pod ──decide──▶ Skip(reason)
//!                                   └──plan──▶ JSONPatch (init container, native
//!                                              sidecar, volumes, rewritten probes)
//! ```
//!
//! What the patch adds is listed in docs/kubernetes.md; the names of the
//! containers, volumes and annotations are contracts (`uninject` and
//! `meshctl check` find the proxy by them).

pub mod annotations;
pub mod error;
pub mod patch;
pub mod probes;
pub mod review;
pub mod server;
pub mod settings;
pub mod sidecar;
pub mod tls;

pub use error::Error;
pub use patch::{Outcome, inject, plan, uninject};
pub use settings::Settings;

pub use json_patch;
pub use k8s_openapi;
