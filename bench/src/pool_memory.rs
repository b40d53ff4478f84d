//! `mesh-bench pool-memory`: what one idle pooled connection between two
//! proxies costs each side. The server proxy's inbound listens on every
//! loopback address, and the client proxy has one static route per peer
//! address (127.0.x.y), so each route is a pool key of its own: one request
//! per route leaves one idle pooled `palisade/h2` connection per route.
//! Memory is read before and after (RSS and anonymous memory, from /proc),
//! after a first connection has warmed both proxies up.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use crate::certs;
use crate::compare::start_upstream;
use crate::pairs::{self, ControlPlane, ProxySpec, Setup};
use crate::procs::{self, free_port, loopback};

#[derive(Debug, Serialize)]
pub struct PoolMemory {
    pub connections: usize,
    /// Pooled connections the client proxy reported (`mesh_pool_connections`).
    pub pool_gauge: Option<f64>,
    pub client_rss_kib: (u64, u64),
    pub client_anon_kib: (u64, u64),
    pub server_rss_kib: (u64, u64),
    pub server_anon_kib: (u64, u64),
}

impl PoolMemory {
    fn per_conn(&self, (before, after): (u64, u64)) -> f64 {
        after.saturating_sub(before) as f64 / self.connections as f64
    }

    pub fn markdown(&self) -> String {
        format!(
            "| side | RSS before → after KiB | anonymous before → after KiB | KiB per idle pooled connection (RSS / anonymous) |\n|---|---|---|---|\n| client proxy (A) | {} → {} | {} → {} | {:.1} / {:.1} |\n| server proxy (B) | {} → {} | {} → {} | {:.1} / {:.1} |\n\n{} pooled connections opened (A's `mesh_pool_connections` read {}).\n",
            self.client_rss_kib.0,
            self.client_rss_kib.1,
            self.client_anon_kib.0,
            self.client_anon_kib.1,
            self.per_conn(self.client_rss_kib),
            self.per_conn(self.client_anon_kib),
            self.server_rss_kib.0,
            self.server_rss_kib.1,
            self.server_anon_kib.0,
            self.server_anon_kib.1,
            self.per_conn(self.server_rss_kib),
            self.per_conn(self.server_anon_kib),
            self.connections,
            self.pool_gauge
                .map_or_else(|| "nothing".into(), |g| format!("{g}")),
        )
    }
}

/// The loopback address of the `i`th peer route (127.0.1.0 onwards).
fn peer_ip(i: usize) -> std::net::Ipv4Addr {
    let n = 256 + i;
    std::net::Ipv4Addr::new(127, 0, (n / 256) as u8, (n % 256) as u8)
}

pub fn run(bin_dir: PathBuf, connections: usize, cpu: usize) -> anyhow::Result<PoolMemory> {
    anyhow::ensure!(
        connections > 0 && connections < 60_000,
        "--connections 1..60000"
    );
    procs::raise_nofile();
    let work = tempfile::Builder::new()
        .prefix("mesh-bench-pool-")
        .tempdir()?;
    let upstream = start_upstream(work.path(), cpu)?;
    let control_plane = ControlPlane::start(&bin_dir, work.path(), Some(cpu))?;
    let issuer = certs::PalisadeIssuer::load(&control_plane.data_dir)?;
    let setup = Setup {
        work: work.path().to_path_buf(),
        bin_dir: bin_dir.clone(),
        baseline_bin_dir: None,
        upstream_http: upstream.http,
        upstream_sink: upstream.sink,
        cpu: Some(cpu),
        control_plane,
        issuer,
        max_conns: connections + 100,
    };
    let bin = bin_dir.join("mesh-proxy");
    let inbound_port = free_port()?;
    let (mut server, server_admin) = pairs::start_proxy(
        &setup,
        work.path(),
        &ProxySpec {
            bin: &bin,
            role: "server",
            service_account: "pool-server",
            inbound: SocketAddr::from(([0, 0, 0, 0], inbound_port)),
            routes: vec![],
            extra: vec![],
            env: &[],
        },
    )?;
    let id = format!(
        "spiffe://cluster.local/ns/{}/sa/pool-server",
        pairs::NAMESPACE
    );
    // Route 0 warms both proxies up; the rest are measured.
    let listens = procs::free_ports(connections + 1)?;
    let routes = listens
        .iter()
        .enumerate()
        .map(|(i, port)| {
            format!(
                "127.0.0.1:{port}={}:{inbound_port}/{}@{id}",
                peer_ip(i),
                setup.upstream_http.port()
            )
        })
        .collect();
    let (mut client, client_admin) = pairs::start_proxy(
        &setup,
        work.path(),
        &ProxySpec {
            bin: &bin,
            role: "client",
            service_account: "pool-client",
            inbound: loopback(free_port()?),
            routes,
            extra: vec![],
            env: &[],
        },
    )?;
    pairs::wait_ready(&mut server, server_admin)?;
    pairs::wait_ready(&mut client, client_admin)?;
    let get = |port: u16| -> anyhow::Result<()> {
        let status = procs::http_status(loopback(port), "/");
        anyhow::ensure!(status == Some(200), "GET through route {port}: {status:?}");
        Ok(())
    };
    get(listens[0])?;
    let mem = |c: &procs::Child| {
        let (rss, _) = procs::tree_memory_kib(c.pid());
        let (_, anon) = procs::tree_pss_anon_kib(c.pid());
        (rss, anon)
    };
    let (c0, s0) = (mem(&client), mem(&server));
    for port in &listens[1..] {
        get(*port).with_context(|| format!("route to {port}"))?;
    }
    let (c1, s1) = (mem(&client), mem(&server));
    let pool_gauge = procs::http_body(client_admin, "/metrics").and_then(|m| {
        m.lines()
            .find(|l| l.starts_with("mesh_pool_connections"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    });
    client.stop();
    server.stop();
    Ok(PoolMemory {
        connections,
        pool_gauge,
        client_rss_kib: (c0.0, c1.0),
        client_anon_kib: (c0.1, c1.1),
        server_rss_kib: (s0.0, s1.0),
        server_anon_kib: (s0.1, s1.1),
    })
}
