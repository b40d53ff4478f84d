//! Byte-level plumbing shared by every side of the proxy: the accept loop,
//! the look at a connection's first bytes (mesh TLS or not, which protocol),
//! the original destination of a redirected connection, and the relay.

pub mod accept;
pub mod detect;
pub mod inspect;
pub mod orig_dst;
pub mod relay;
pub mod sniff;
