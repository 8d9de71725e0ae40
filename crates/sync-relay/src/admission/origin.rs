//! Where a connection comes from, as the per-address limits count it.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use iroh::endpoint::IncomingAddr;

/// The network origin of a connection. IPv6 addresses count by their /64 (one subscriber's
/// network usually gets a whole /64), IPv4 addresses (and IPv4 mapped into IPv6) one by one.
/// Connections through an iroh relay server count as one origin per relay server (the device's
/// address is not known); in-process sessions (for tests) are one origin of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The /64 prefix of an IPv6 address.
    V6([u8; 8]),
    /// Relayed through this iroh relay server (a hash of its URL).
    Relayed(u64),
    /// An in-process session (feature `test-util`).
    #[cfg(feature = "test-util")]
    InProcess,
}

impl Origin {
    /// The origin of an IP address.
    pub(crate) fn of_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Self::V6(prefix)
                }
            },
        }
    }

    /// The origin of an incoming QUIC connection.
    pub(crate) fn of_incoming(addr: &IncomingAddr) -> Self {
        match addr {
            IncomingAddr::Ip(socket) => Self::of_ip(socket.ip()),
            IncomingAddr::Relay { url, .. } => Self::Relayed(stable_hash(url.as_str())),
            // Custom transports (and any added later): one origin per transport address.
            other => Self::Relayed(stable_hash(&format!("{other:?}"))),
        }
    }

    /// A pseudonym for audit lines: a keyed hash (the key is random per relay process), so log
    /// lines of one run can be correlated without naming the address.
    pub(crate) fn pseudonym(&self, key: &impl BuildHasher) -> String {
        let kind = match self {
            Self::V4(_) => "ip4",
            Self::V6(_) => "ip6",
            Self::Relayed(_) => "relayed",
            #[cfg(feature = "test-util")]
            Self::InProcess => "local",
        };
        format!("{kind}:{:08x}", key.hash_one(self) >> 32)
    }
}

/// A hash that is the same for the same text within one process.
fn stable_hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::RandomState;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().expect("ip");
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(Origin::of_ip(a.into()), Origin::of_ip(b.into()));
        assert_ne!(Origin::of_ip(a.into()), Origin::of_ip(c.into()));
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(
            Origin::of_ip(v4.to_ipv6_mapped().into()),
            Origin::of_ip(v4.into())
        );
        assert_ne!(
            Origin::of_ip(Ipv4Addr::new(192, 0, 2, 8).into()),
            Origin::of_ip(v4.into())
        );
        // Loopback is an address like any other.
        assert_eq!(
            Origin::of_ip(Ipv4Addr::LOCALHOST.into()),
            Origin::V4([127, 0, 0, 1])
        );
    }

    #[test]
    fn pseudonyms_do_not_show_the_address() {
        let key = RandomState::new();
        let o = Origin::of_ip(Ipv4Addr::new(192, 0, 2, 7).into());
        let p = o.pseudonym(&key);
        assert!(p.starts_with("ip4:") && p.len() == 12, "{p}");
        assert_eq!(p, o.pseudonym(&key), "stable within a process");
        assert_ne!(p, o.pseudonym(&RandomState::new()), "keyed per process");
    }
}
