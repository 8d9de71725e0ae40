//! Where a relay is: its identity ([`RelayId`]) and the addresses devices dial ([`RelayAddr`]).
//!
//! The text forms are the ones the relay prints at start: its id as 64 hexadecimal characters
//! and a dial string `ID@HOST:PORT[,HOST:PORT…]`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::wire::fixed_bin;

/// A relay's identity: the public key of its iroh endpoint (its QUIC TLS key), 32 bytes.
///
/// Text form: 64 lowercase hexadecimal characters, as the relay prints it and as iroh writes
/// endpoint ids. On the wire: 32 bytes of MessagePack `bin`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId([u8; 32]);

impl RelayId {
    /// Length of the identifier in bytes.
    pub const LEN: usize = 32;

    /// Wraps 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex characters, for logs and messages.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayId({})", self.short())
    }
}

impl FromStr for RelayId {
    type Err = RelayAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(RelayAddrError::BadId);
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| RelayAddrError::BadId)?;
        Ok(Self(out))
    }
}

impl Serialize for RelayId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        fixed_bin::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for RelayId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        fixed_bin::deserialize::<D, 32>(d).map(Self)
    }
}

/// Why a relay id or dial string could not be parsed. Messages quote no more than the part
/// that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayAddrError {
    /// The id is not 64 hexadecimal characters.
    #[error("relay id must be the 64 hex characters the relay prints as its id")]
    BadId,
    /// There is no `@` between the id and the addresses.
    #[error("expected ENDPOINT_ID@HOST:PORT")]
    NoAt,
    /// Nothing after the `@`.
    #[error("no HOST:PORT after the @")]
    NoAddress,
    /// An address is not `HOST:PORT` with a port number.
    #[error("relay address `{0}` is not HOST:PORT")]
    BadAddress(String),
}

/// A relay to dial: its id and one or more `HOST:PORT` addresses.
///
/// Addresses are kept as text, so a dial string or an invite can carry host names; resolving
/// them is the caller's business (it needs the network). Text form `ID@HOST:PORT[,HOST:PORT…]`,
/// the relay's `dial:` line.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelayAddr {
    /// The relay's identity.
    pub id: RelayId,
    /// Where to reach it, `HOST:PORT` each, in order of preference (never empty when parsed).
    pub addrs: Vec<String>,
}

impl RelayAddr {
    /// A relay at socket addresses.
    pub fn new(id: RelayId, addrs: &[SocketAddr]) -> Self {
        Self {
            id,
            addrs: addrs.iter().map(ToString::to_string).collect(),
        }
    }

    /// The addresses that are literal IP socket addresses (host names left out).
    pub fn socket_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.iter().filter_map(|a| a.parse().ok()).collect()
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addrs.join(","))
    }
}

impl fmt::Debug for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayAddr({}@{})", self.id.short(), self.addrs.join(","))
    }
}

impl FromStr for RelayAddr {
    type Err = RelayAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (id, addrs) = text.trim().split_once('@').ok_or(RelayAddrError::NoAt)?;
        let id = id.parse()?;
        let addrs: Vec<String> = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            return Err(RelayAddrError::NoAddress);
        }
        for a in &addrs {
            let host_and_port = a
                .rsplit_once(':')
                .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if host_and_port.is_none() {
                return Err(RelayAddrError::BadAddress(a.clone()));
            }
        }
        Ok(Self { id, addrs })
    }
}

/// The local address a device binds its endpoint to for reaching `relay`, port 0: IPv6 when
/// every relay address is IPv6 and IPv4 otherwise (an IPv4 socket reaches IPv4 relays; a relay
/// reachable only over IPv6 needs an IPv6 socket); the loopback address when every relay
/// address is loopback (a device talking to a relay on the same machine has no reason to listen
/// on other interfaces), else the unspecified one.
pub fn bind_addr_for(relay: &[SocketAddr]) -> SocketAddr {
    let v6 = !relay.is_empty() && relay.iter().all(SocketAddr::is_ipv6);
    let loopback = !relay.is_empty() && relay.iter().all(|a| a.ip().is_loopback());
    let ip: std::net::IpAddr = match (v6, loopback) {
        (true, true) => Ipv6Addr::LOCALHOST.into(),
        (true, false) => Ipv6Addr::UNSPECIFIED.into(),
        (false, true) => Ipv4Addr::LOCALHOST.into(),
        (false, false) => Ipv4Addr::UNSPECIFIED.into(),
    };
    SocketAddr::new(ip, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_strings_round_trip_and_bad_ones_are_typed() {
        let id = "ab".repeat(32);
        let r: RelayAddr = format!("{id}@127.0.0.1:7440, [::1]:7440,relay.example:1")
            .parse()
            .expect("valid");
        assert_eq!(r.id, RelayId::from_bytes([0xab; 32]));
        assert_eq!(r.addrs, ["127.0.0.1:7440", "[::1]:7440", "relay.example:1"]);
        assert_eq!(r.to_string().parse::<RelayAddr>().expect("again"), r);
        assert_eq!(
            r.socket_addrs().len(),
            2,
            "the host name is not a socket address"
        );
        let cases = [
            ("127.0.0.1:7440".to_string(), RelayAddrError::NoAt),
            (format!("{id}@"), RelayAddrError::NoAddress),
            (
                format!("{id}@127.0.0.1"),
                RelayAddrError::BadAddress("127.0.0.1".into()),
            ),
            (
                format!("{id}@127.0.0.1:99999"),
                RelayAddrError::BadAddress("127.0.0.1:99999".into()),
            ),
            (format!("{id}@:1"), RelayAddrError::BadAddress(":1".into())),
            ("zz@127.0.0.1:1".to_string(), RelayAddrError::BadId),
            (
                format!("{}@127.0.0.1:1", "ab".repeat(31)),
                RelayAddrError::BadId,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<RelayAddr>(), Err(want), "{text}");
        }
    }

    #[test]
    fn ids_print_as_hex_and_encode_as_bin() {
        let id = RelayId::from_bytes([0x0f; 32]);
        assert_eq!(id.to_string(), "0f".repeat(32));
        assert_eq!(id.short(), "0f0f0f0f");
        assert_eq!(format!("{id:?}"), "RelayId(0f0f0f0f)");
        let bytes = rmp_serde::to_vec(&id).expect("encode");
        assert_eq!(&bytes[..2], &[0xc4, 32], "bin 8 with 32 bytes");
        assert_eq!(
            rmp_serde::from_slice::<RelayId>(&bytes).expect("decode"),
            id
        );
    }

    #[test]
    fn the_bind_address_follows_the_relay_family_and_scope() {
        let addr = |s: &str| s.parse::<SocketAddr>().expect("socket address");
        let cases = [
            (vec![addr("[::1]:1")], "[::1]:0"),
            (vec![addr("127.0.0.1:1")], "127.0.0.1:0"),
            (vec![addr("[2001:db8::1]:1")], "[::]:0"),
            (vec![addr("192.0.2.1:1")], "0.0.0.0:0"),
            (vec![addr("[::1]:1"), addr("127.0.0.1:1")], "127.0.0.1:0"),
            (vec![addr("[::1]:1"), addr("192.0.2.1:1")], "0.0.0.0:0"),
            (vec![addr("[::1]:1"), addr("[2001:db8::1]:1")], "[::]:0"),
            (vec![], "0.0.0.0:0"),
        ];
        for (relay, want) in cases {
            assert_eq!(bind_addr_for(&relay), addr(want), "{relay:?}");
        }
    }
}
