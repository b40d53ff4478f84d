//! `Telemetry.Report`: each proxy's flow summaries, aggregated in the
//! [`FlowStore`]. The destination of every flow is the caller's verified
//! identity; a report out of bounds ends the stream with INVALID_ARGUMENT
//! and is counted, never stored in part.

use std::sync::Arc;

use mesh_proto::telemetry::telemetry_server::Telemetry;
use mesh_proto::telemetry::{FlowReport, ReportAck};
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::flows::{FlowStore, Reported, unix_now};

/// Flows one report may carry (a proxy keeps 4096 apart per interval).
pub const MAX_REPORT_FLOWS: usize = 8192;
/// Longest source or policy name accepted.
const MAX_NAME: usize = 1024;

/// Called with every accepted report: the anomaly rules.
pub type OnReport = Arc<dyn Fn(&str, &[crate::flows::FlowKey], u64) + Send + Sync>;

pub struct TelemetryService {
    flows: Arc<FlowStore>,
    on_report: Option<OnReport>,
}

impl TelemetryService {
    pub fn new(flows: Arc<FlowStore>) -> Self {
        Self {
            flows,
            on_report: None,
        }
    }

    pub fn on_report(mut self, f: OnReport) -> Self {
        self.on_report = Some(f);
        self
    }
}

fn decision(text: &str) -> Option<&'static str> {
    match text {
        "allow" => Some("allow"),
        "deny" => Some("deny"),
        "dry_run_deny" => Some("dry_run_deny"),
        _ => None,
    }
}

/// The report's flows, checked; an error names what is wrong.
fn checked(report: &FlowReport) -> Result<Vec<Reported<'_>>, Error> {
    if report.flows.len() > MAX_REPORT_FLOWS {
        return Err(Error::InvalidArgument(format!(
            "more than {MAX_REPORT_FLOWS} flows in one report"
        )));
    }
    report
        .flows
        .iter()
        .map(|f| {
            let port = u16::try_from(f.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Error::InvalidArgument("a flow's port is out of range".into()))?;
            let decision = decision(&f.decision).ok_or_else(|| {
                Error::InvalidArgument(format!("{:?} is not a decision", f.decision))
            })?;
            if f.source.is_empty() || f.source.len() > MAX_NAME || f.policy.len() > MAX_NAME {
                return Err(Error::InvalidArgument(
                    "a flow's source or policy has an invalid length".into(),
                ));
            }
            Ok(Reported {
                source: &f.source,
                port,
                decision,
                policy: &f.policy,
                count: f.count,
            })
        })
        .collect()
}

#[tonic::async_trait]
impl Telemetry for TelemetryService {
    async fn report(
        &self,
        request: Request<Streaming<FlowReport>>,
    ) -> Result<Response<ReportAck>, Status> {
        let identity = crate::grpc::client_identity(&request, "Telemetry.Report")?;
        if identity.namespace_and_service_account().is_none() {
            return Err(Error::NotAWorkload(identity.to_string()).into());
        }
        let destination = identity.to_string();
        let mut stream = request.into_inner();
        while let Some(report) = stream.message().await? {
            let flows = match checked(&report) {
                Ok(f) => f,
                Err(e) => {
                    metrics::counter!("mesh_flow_reports_total", "result" => "refused")
                        .increment(1);
                    tracing::warn!(identity = %destination, error = %e, "flow report refused");
                    return Err(e.into());
                }
            };
            let now = unix_now();
            let touched = self
                .flows
                .ingest(&destination, &flows, report.overflow, now);
            metrics::counter!("mesh_flow_reports_total", "result" => "ok").increment(1);
            if let Some(f) = &self.on_report {
                f(&destination, &touched, now);
            }
        }
        Ok(Response::new(ReportAck {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::telemetry::Flow;

    fn report(port: u32, decision: &str, source: &str) -> FlowReport {
        FlowReport {
            flows: vec![Flow {
                source: source.into(),
                port,
                decision: decision.into(),
                policy: "default deny".into(),
                count: 1,
            }],
            overflow: 0,
        }
    }

    #[test]
    fn reports_out_of_bounds_are_refused_whole() {
        assert!(checked(&report(8080, "deny", "spiffe://td/ns/a/sa/b")).is_ok());
        for bad in [
            report(0, "deny", "s"),
            report(70_000, "deny", "s"),
            report(80, "maybe", "s"),
            report(80, "allow", ""),
            report(80, "allow", &"x".repeat(MAX_NAME + 1)),
        ] {
            assert!(checked(&bad).is_err(), "{bad:?}");
        }
        let mut big = report(80, "allow", "s");
        big.flows = vec![big.flows[0].clone(); MAX_REPORT_FLOWS + 1];
        assert!(checked(&big).is_err());
    }
}
