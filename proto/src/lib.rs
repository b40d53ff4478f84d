//! Palisade's gRPC protocol, generated from `proto/*.proto`.

/// Workload identity: `Identity.Certify`.
pub mod identity {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("palisade.identity.v1");
}

/// Policy distribution: `Policy.Watch`.
pub mod policy {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("palisade.policy.v1");
}

/// Service discovery: `Discovery.Watch`.
pub mod discovery {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("palisade.discovery.v1");
}

/// Flow telemetry: `Telemetry.Report`.
pub mod telemetry {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("palisade.telemetry.v1");
}
