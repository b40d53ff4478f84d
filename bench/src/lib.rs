//! Palisade benchmarks: an open-loop load generator (HdrHistogram, latency
//! from each request's due time), a cheap upstream, the peer pairs
//! (HAProxy, nginx `stream`, stunnel) next to Palisade, and `compare`,
//! which runs the scenarios of issue 4 through all of them.

pub mod certs;
pub mod compare;
pub mod edge;
pub mod egress;
pub mod handshake;
pub mod http1;
pub mod latency;
pub mod load;
pub mod machine;
pub mod pairs;
pub mod pool_memory;
pub mod procs;
pub mod report;
pub mod schedule;
pub mod tls_probe;
pub mod upstream;
