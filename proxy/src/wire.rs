//! The preamble of an opaque TCP connection between proxies (docs/wire.md).
//!
//! After the mTLS handshake (ALPN `palisade/tcp1`) the client sends six bytes,
//! `P A L 0x01 <target port, u16 big-endian>`, then the application's bytes.
//! No reply: the server either connects the target and relays, or closes.

use tokio::io::{AsyncRead, AsyncReadExt};

const MAGIC: [u8; 3] = *b"PAL";
const VERSION: u8 = 1;
pub const PREAMBLE_LEN: usize = 6;

/// Why a preamble was refused.
#[derive(Debug, thiserror::Error)]
pub enum PreambleError {
    #[error("connection closed before the preamble")]
    Closed,
    #[error("not a Palisade preamble")]
    BadMagic,
    #[error("unsupported preamble version {0}")]
    Version(u8),
    #[error("target port 0")]
    ZeroPort,
}

pub fn encode(target_port: u16) -> [u8; PREAMBLE_LEN] {
    let p = target_port.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], VERSION, p[0], p[1]]
}

pub fn decode(b: &[u8; PREAMBLE_LEN]) -> Result<u16, PreambleError> {
    if b[..3] != MAGIC {
        return Err(PreambleError::BadMagic);
    }
    if b[3] != VERSION {
        return Err(PreambleError::Version(b[3]));
    }
    match u16::from_be_bytes([b[4], b[5]]) {
        0 => Err(PreambleError::ZeroPort),
        p => Ok(p),
    }
}

/// Reads and decodes the preamble.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<u16, PreambleError> {
    let mut b = [0u8; PREAMBLE_LEN];
    r.read_exact(&mut b)
        .await
        .map_err(|_| PreambleError::Closed)?;
    decode(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        assert_eq!(decode(&encode(8080)).unwrap(), 8080);
        assert!(matches!(decode(b"GET / "), Err(PreambleError::BadMagic)));
        assert!(matches!(
            decode(&[b'P', b'A', b'L', 2, 0, 80]),
            Err(PreambleError::Version(2))
        ));
        assert!(matches!(decode(&encode(0)), Err(PreambleError::ZeroPort)));
    }
}
