//! The original destination of a redirected connection (iptables REDIRECT /
//! nftables redirect record it in conntrack): `SO_ORIGINAL_DST` for IPv4,
//! `IP6T_SO_ORIGINAL_DST` for IPv6.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` (linux/netfilter_ipv4.h, netfilter_ipv6/ip6_tables.h).
const SO_ORIGINAL_DST: libc::c_int = 80;

/// The address the client originally connected to, or `None` when the
/// connection was not redirected (or the kernel does not know).
pub fn original_dst<S: AsRawFd>(socket: &S, ipv6: bool) -> Option<SocketAddr> {
    let fd = socket.as_raw_fd();
    if ipv6 {
        // SAFETY: sockaddr_in6 is plain old data; the kernel writes at most `len` bytes.
        let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: fd is a live socket owned by `socket`; the pointers are valid for `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in6).cast(),
                &mut len,
            )
        };
        if rc != 0 || addr.sin6_family != libc::AF_INET6 as libc::sa_family_t {
            return None;
        }
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(addr.sin6_addr.s6_addr),
            u16::from_be(addr.sin6_port),
            0,
            0,
        )))
    } else {
        // SAFETY: as above, for sockaddr_in.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: as above.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in).cast(),
                &mut len,
            )
        };
        if rc != 0 || addr.sin_family != libc::AF_INET as libc::sa_family_t {
            return None;
        }
        Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            u16::from_be(addr.sin_port),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_redirected_is_none() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        // Without a NAT redirect there is no conntrack original destination
        // (or it equals the local address).
        match original_dst(&s, false) {
            None => {}
            Some(a) => assert_eq!(a, s.local_addr().unwrap()),
        }
        drop(c);
    }
}
