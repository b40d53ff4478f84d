//! mesh-dns: a small authoritative DNS server for the lab's "internet" and
//! for tests: it answers A queries (UDP) for the names it is given, NOERROR
//! with no answer for other types of a known name, NXDOMAIN otherwise.
//!
//! Usage: mesh-dns LISTEN_ADDR [--ttl SECONDS] NAME=IP[,IP...]...
//! e.g. `mesh-dns 0.0.0.0:53 api.partner.example=10.250.0.20`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};

/// Largest query read; DNS over UDP without EDNS is 512 bytes.
const MAX_QUERY: usize = 1232;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(listen) = args.next() else {
        eprintln!("usage: mesh-dns LISTEN_ADDR [--ttl SECONDS] NAME=IP[,IP...]...");
        std::process::exit(2);
    };
    let mut ttl: u32 = 30;
    let mut records: HashMap<String, Vec<Ipv4Addr>> = HashMap::new();
    while let Some(a) = args.next() {
        if a == "--ttl" {
            ttl = args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("--ttl needs seconds");
                std::process::exit(2)
            });
            continue;
        }
        let Some((name, ips)) = a.split_once('=') else {
            eprintln!("{a:?} is not NAME=IP");
            std::process::exit(2);
        };
        let ips: Vec<Ipv4Addr> = ips.split(',').filter_map(|ip| ip.parse().ok()).collect();
        records.insert(name.trim_end_matches('.').to_ascii_lowercase(), ips);
    }
    let socket = UdpSocket::bind(&listen).unwrap_or_else(|e| {
        eprintln!("mesh-dns: cannot listen on {listen}: {e}");
        std::process::exit(1)
    });
    eprintln!(
        "mesh-dns: answering for {} names on {listen}",
        records.len()
    );
    let mut buf = [0u8; MAX_QUERY];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = answer(&buf[..n], &records, ttl) {
            let _ = socket.send_to(&reply, from);
        }
    }
}

/// The reply to one query, or `None` for bytes that are not a query.
fn answer(q: &[u8], records: &HashMap<String, Vec<Ipv4Addr>>, ttl: u32) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    // The question: labels, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(
            std::str::from_utf8(q.get(i..i + len)?)
                .ok()?
                .to_ascii_lowercase(),
        );
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    q.get(..question_end)?;
    let name = labels.join(".");
    let found = records.get(&name);
    let answers: &[Ipv4Addr] = match (found, qtype) {
        (Some(ips), 1) => ips,
        _ => &[],
    };
    let mut r = Vec::with_capacity(question_end + answers.len() * 16);
    r.extend_from_slice(&q[..2]); // id
    // QR, AA, RD copied; RA; RCODE 3 (NXDOMAIN) for an unknown name.
    r.push(0x84 | (q[2] & 0x01));
    r.push(0x80 | if found.is_none() { 3 } else { 0 });
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&0u16.to_be_bytes());
    r.extend_from_slice(&q[12..question_end]);
    for ip in answers {
        r.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        r.extend_from_slice(&1u16.to_be_bytes()); // A
        r.extend_from_slice(&1u16.to_be_bytes()); // IN
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}
