//! PROXY protocol version 2 (the HAProxy specification, §2.2) from a
//! trusted load balancer: the binary header a TCP load balancer sends
//! before the client's first byte, carrying the client's address. It is
//! read only on connections from `--proxy-protocol-from` addresses; from
//! those a connection without a valid header is closed (fail closed: an
//! address the ingress cannot learn is not guessed). From anyone else no
//! header is read, so a client cannot claim an address by sending one.
//!
//! `LOCAL` (the balancer's own health checks) and `UNSPEC` families keep
//! the connection's address; TLVs are skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Largest address block accepted after the 16 fixed bytes: the addresses
/// plus TLVs a balancer sends are far smaller; a longer one is refused
/// rather than buffered.
pub const MAX_BLOCK: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY protocol v2 signature")]
    Signature,
    #[error("PROXY protocol version {0} (only 2 is read)")]
    Version(u8),
    #[error("unknown PROXY protocol command {0}")]
    Command(u8),
    #[error("PROXY protocol address block of {0} bytes is too long")]
    TooLong(usize),
    #[error("PROXY protocol address block of {len} bytes is too short for its family")]
    TooShort { len: usize },
    #[error("connection ended inside the PROXY protocol header")]
    Truncated,
}

/// The client address the header gives: `None` to keep the connection's
/// own (a `LOCAL` command, or an address family without an IP).
pub type Source = Option<SocketAddr>;

/// Checks the 16 fixed bytes; returns the length of the block that follows.
pub fn fixed(head: &[u8; 16]) -> Result<usize, HeaderError> {
    if head[..12] != SIGNATURE {
        return Err(HeaderError::Signature);
    }
    let version = head[12] >> 4;
    if version != 2 {
        return Err(HeaderError::Version(version));
    }
    let command = head[12] & 0x0f;
    if command > 1 {
        return Err(HeaderError::Command(command));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > MAX_BLOCK {
        return Err(HeaderError::TooLong(len));
    }
    Ok(len)
}

/// The source address from the fixed bytes and the block after them.
pub fn source(head: &[u8; 16], block: &[u8]) -> Result<Source, HeaderError> {
    if head[12] & 0x0f == 0 {
        return Ok(None); // LOCAL
    }
    let too_short = || HeaderError::TooShort { len: block.len() };
    match head[13] >> 4 {
        // AF_INET: src 4, dst 4, src port 2, dst port 2.
        1 => {
            let b: &[u8; 12] = block
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(too_short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let port = u16::from_be_bytes([b[8], b[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // AF_INET6: src 16, dst 16, src port 2, dst port 2.
        2 => {
            let b: &[u8; 36] = block
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(too_short)?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&b[..16]);
            let port = u16::from_be_bytes([b[32], b[33]]);
            Ok(Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(src)), port)))
        }
        // UNSPEC, AF_UNIX: no IP to decide by.
        _ => Ok(None),
    }
}

/// Reads exactly the header from `io`, nothing of what follows it.
pub async fn read<R: AsyncRead + Unpin>(io: &mut R) -> Result<Source, HeaderError> {
    let mut head = [0u8; 16];
    io.read_exact(&mut head)
        .await
        .map_err(|_| HeaderError::Truncated)?;
    let len = fixed(&head)?;
    let mut block = vec![0u8; len];
    io.read_exact(&mut block)
        .await
        .map_err(|_| HeaderError::Truncated)?;
    source(&head, &block)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header as a balancer writes it.
    fn header(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family << 4 | 1);
        h.extend_from_slice(&(block.len() as u16).to_be_bytes());
        h.extend_from_slice(block);
        h
    }

    fn v4_block() -> Vec<u8> {
        let mut b = vec![203, 0, 113, 7, 10, 0, 0, 5];
        b.extend_from_slice(&40000u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    #[tokio::test]
    async fn a_balancers_header_gives_the_client_and_leaves_the_stream_after_it() {
        let mut wire = header(1, 1, &v4_block());
        wire.extend_from_slice(b"\x16\x03\x01rest");
        let mut r = &wire[..];
        let src = read(&mut r).await.unwrap();
        assert_eq!(src, Some("203.0.113.7:40000".parse().unwrap()));
        assert_eq!(r, b"\x16\x03\x01rest");

        // IPv6, with a TLV after the addresses (skipped).
        let mut b = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        b.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&1234u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]); // PP2_TYPE_NOOP
        let wire = header(1, 2, &b);
        assert_eq!(
            read(&mut &wire[..]).await.unwrap(),
            Some("[2001:db8::7]:1234".parse().unwrap())
        );

        // LOCAL (a health check) and UNSPEC keep the connection's address.
        assert_eq!(read(&mut &header(0, 0, &[])[..]).await.unwrap(), None);
        assert_eq!(read(&mut &header(1, 0, &[])[..]).await.unwrap(), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        // A TLS ClientHello where the header should be.
        let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefgh";
        assert_eq!(read(&mut &hello[..]).await, Err(HeaderError::Signature));
        // The text form (version 1) is not read.
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.5 40000 443\r\n";
        assert_eq!(read(&mut &v1[..]).await, Err(HeaderError::Signature));
        let mut bad = header(1, 1, &v4_block());
        bad[12] = 0x11;
        assert_eq!(read(&mut &bad[..]).await, Err(HeaderError::Version(1)));
        bad[12] = 0x2f;
        assert_eq!(read(&mut &bad[..]).await, Err(HeaderError::Command(15)));
        // An INET header too short for two addresses and ports.
        let short = header(1, 1, &[1, 2, 3, 4]);
        assert_eq!(
            read(&mut &short[..]).await,
            Err(HeaderError::TooShort { len: 4 })
        );
        // A block announced larger than any balancer sends.
        let mut long = header(1, 1, &[]);
        long[14..16].copy_from_slice(&60000u16.to_be_bytes());
        assert_eq!(read(&mut &long[..]).await, Err(HeaderError::TooLong(60000)));
        // Cut short.
        let full = header(1, 1, &v4_block());
        assert_eq!(read(&mut &full[..20]).await, Err(HeaderError::Truncated));
        assert_eq!(read(&mut &full[..7]).await, Err(HeaderError::Truncated));
    }

    #[test]
    fn trusted_balancers_are_matched_by_block() {
        let list: crate::init::CidrList = "10.0.0.0/8, 2001:db8::/32".parse().unwrap();
        assert!(list.contains("10.250.0.9".parse().unwrap()));
        assert!(list.contains("2001:db8::1".parse().unwrap()));
        assert!(!list.contains("11.0.0.1".parse().unwrap()));
        assert!(!list.contains("::ffff:10.0.0.1".parse().unwrap()));
        let all: crate::init::CidrList = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("198.51.100.2".parse().unwrap()));
        assert!(!crate::init::CidrList::default().contains("10.0.0.1".parse().unwrap()));
    }
}
