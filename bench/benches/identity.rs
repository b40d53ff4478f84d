//! Identity hot paths: verifying a peer's SVID (every mTLS handshake, both
//! sides) and signing a CSR (the control plane, per certificate issued).
//!
//! `cargo bench -p mesh-bench --bench identity`; the `thrpt` line of
//! `sign_csr` is certificates per second on one core.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_identity::verify::{Usage, verify_svid};
use mesh_identity::{Ca, SpiffeId};
use rustls_pki_types::UnixTime;

struct Fixture {
    ca: Ca,
    id: SpiffeId,
    csr: Vec<u8>,
    _dir: tempfile::TempDir,
}

#[allow(clippy::expect_used)]
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let td = mesh_identity::DEFAULT_TRUST_DOMAIN;
    let ca = Ca::load_or_generate(&dir.path().join("ca"), td).expect("CA");
    let id = SpiffeId::workload(td, "bench", "api").expect("SPIFFE ID");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = mesh_identity::credentials::csr_for(&id, &key).expect("CSR");
    Fixture {
        ca,
        id,
        csr,
        _dir: dir,
    }
}

#[allow(clippy::expect_used)]
fn identity(c: &mut Criterion) {
    let f = fixture();
    let issued =
        f.ca.sign_csr(&f.csr, &f.id, Duration::from_secs(3600))
            .expect("issued");
    let provider = mesh_identity::tls::provider();
    let algs = &provider.signature_verification_algorithms;

    let mut g = c.benchmark_group("identity");
    g.throughput(Throughput::Elements(1));
    // Chain to the bundle, leaf not a CA, one URI SAN, trust domain: what
    // each side of a mesh handshake runs on the other's certificate.
    g.bench_function("verify_svid", |b| {
        b.iter(|| {
            verify_svid(
                black_box(&issued.leaf),
                &issued.intermediates,
                &issued.bundle,
                mesh_identity::DEFAULT_TRUST_DOMAIN,
                Usage::Client,
                UnixTime::now(),
                algs,
            )
        })
    });
    // Parse and check the CSR, build and sign the leaf: one certificate.
    g.bench_function("sign_csr", |b| {
        b.iter(|| {
            f.ca.sign_csr(black_box(&f.csr), &f.id, Duration::from_secs(3600))
        })
    });
    g.finish();
}

criterion_group!(benches, identity);
criterion_main!(benches);
