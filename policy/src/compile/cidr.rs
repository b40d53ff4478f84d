//! IP blocks: `10.0.0.0/8`, `2001:db8::/32`, or a single address.

use std::net::IpAddr;

/// One block, stored as integers so a match is a mask and a compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cidr {
    V4 { network: u32, mask: u32 },
    V6 { network: u128, mask: u128 },
}

impl Cidr {
    /// Parses a CIDR or a bare address. Host bits are cleared (`10.1.2.3/8` is
    /// `10.0.0.0/8`), as both Kubernetes and Istio accept that spelling.
    pub(crate) fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            // Digits only: `str::parse` would also take `+8`.
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u32>() {
                    Ok(p) if p <= max => p,
                    _ => return Err(format!("{text:?}: prefix length must be 0 to {max}")),
                }
            }
            Some(_) => return Err(format!("{text:?}: prefix length must be 0 to {max}")),
        };
        Ok(match address {
            IpAddr::V4(v4) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                Cidr::V4 {
                    network: u32::from(v4) & mask,
                    mask,
                }
            }
            IpAddr::V6(v6) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                Cidr::V6 {
                    network: u128::from(v6) & mask,
                    mask,
                }
            }
        })
    }

    /// Whether `ip` is in the block. IPv4-mapped IPv6 addresses
    /// (`::ffff:10.0.0.1`) are compared as the IPv4 address they carry, so a
    /// dual-stack socket cannot slip past an IPv4 block.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip.to_canonical()) {
            (Cidr::V4 { network, mask }, IpAddr::V4(v4)) => u32::from(v4) & mask == *network,
            (Cidr::V6 { network, mask }, IpAddr::V6(v6)) => u128::from(v6) & mask == *network,
            _ => false,
        }
    }

    /// Whether every address of `other` is inside `self` (for ipBlock.except).
    pub(crate) fn covers(&self, other: &Cidr) -> bool {
        match (self, other) {
            (
                Cidr::V4 { network, mask },
                Cidr::V4 {
                    network: n2,
                    mask: m2,
                },
            ) => m2 >= mask && n2 & mask == *network,
            (
                Cidr::V6 { network, mask },
                Cidr::V6 {
                    network: n2,
                    mask: m2,
                },
            ) => m2 >= mask && n2 & mask == *network,
            _ => false,
        }
    }
}

/// A list of blocks: matches when any contains the address.
#[derive(Debug, Clone, Default)]
pub(crate) struct CidrSet(pub(crate) Vec<Cidr>);

impl CidrSet {
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn blocks_and_addresses() {
        let c = Cidr::parse("10.1.2.3/8").expect("valid");
        assert!(c.contains(ip("10.200.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        // A mapped IPv6 address is the IPv4 address it carries.
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        let single = Cidr::parse("192.168.1.1").expect("valid");
        assert!(single.contains(ip("192.168.1.1")));
        assert!(!single.contains(ip("192.168.1.2")));
        let v6 = Cidr::parse("2001:db8::/32").expect("valid");
        assert!(v6.contains(ip("2001:db8::1")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("valid")
                .contains(ip("8.8.8.8"))
        );
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0/8",
            "abc",
            "10.0.0.0/+8",
            "::/129",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
