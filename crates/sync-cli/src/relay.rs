//! Where the relays are, for the CLI: `--relay` (once or more) and the stored relay list parsed
//! and resolved through `sync-client`, failures turned into exit codes (a mistyped address is
//! bad input; a relay that does not answer is unreachable).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use sync_client::ResolveError;
use sync_core::MAX_FURTHER_RELAYS;
pub(crate) use sync_types::RelayAddr;
use sync_types::RelayId;

use crate::fail::{Failure, Kind};
use crate::out::note;

fn failure(e: &ResolveError) -> Failure {
    let kind = if e.is_bad_input() {
        Kind::BadInput
    } else {
        Kind::Unreachable
    };
    Failure::new(kind, e.to_string())
}

/// Parses `--relay`: a dial string `ENDPOINT_ID@HOST:PORT[,HOST:PORT…]`, or an `http://` URL
/// whose well-known document is fetched within `timeout`.
pub(crate) async fn resolve(text: &str, timeout: Duration) -> Result<RelayAddr, Failure> {
    sync_client::resolve_relay(text, timeout)
        .await
        .map_err(|e| failure(&e))
}

/// [`resolve`], then the relay's identity: with `pin` (hex), the resolved relay must have that
/// id (a mismatch is refused, never adopted); without it, an id read from an http:// URL is
/// trusted on first use, and said so on stderr. Every later connection checks the stored id
/// (the QUIC handshake authenticates it).
pub(crate) async fn resolve_pinned(
    text: &str,
    pin: Option<&str>,
    timeout: Duration,
) -> Result<RelayAddr, Failure> {
    let pin = pin
        .map(|p| {
            p.parse::<RelayId>()
                .map_err(|e| Failure::bad_input(format!("--relay-id `{p}` is not a relay id: {e}")))
        })
        .transpose()?;
    let relay = resolve(text, timeout).await?;
    match pin {
        Some(pin) if pin != relay.id => Err(Failure::new(
            Kind::Refused,
            format!(
                "the relay at {text} says its id is {}, not the {pin} given with --relay-id: refusing it (another relay answers there, or the address is wrong)",
                relay.id
            ),
        )),
        Some(_) => Ok(relay),
        None => {
            if text.trim_start().starts_with("http://") {
                note!(
                    "relay id {} read from {text} over plain http: trusted on first use and pinned on this device (check it against the `relay id:` line the relay prints, or pass --relay-id)",
                    relay.id
                );
            }
            Ok(relay)
        }
    }
}

/// Most relays a device keeps: as many as an invite carries (the first and
/// [`MAX_FURTHER_RELAYS`] more).
pub(crate) const MAX_RELAYS: usize = MAX_FURTHER_RELAYS + 1;

/// The relays of one deployment a device uses, in order of preference (the first is dialled
/// first, the others when it fails or a session is lost); never empty, no relay id twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Relays {
    first: RelayAddr,
    rest: Vec<RelayAddr>,
}

impl Relays {
    /// `list` as a relay list: refused when empty, longer than [`MAX_RELAYS`], or naming a
    /// relay id twice.
    pub(crate) fn new(list: Vec<RelayAddr>) -> Result<Self, String> {
        if list.len() > MAX_RELAYS {
            return Err(format!(
                "{} relays given; a device keeps at most {MAX_RELAYS} (an invite carries no more)",
                list.len()
            ));
        }
        for (i, r) in list.iter().enumerate() {
            if list.iter().take(i).any(|b| b.id == r.id) {
                return Err(format!("relay {} is given twice", r.id));
            }
            // Stored and shown as `ID@HOST:PORT,…`: it must read back as the same relay.
            if r.to_string().parse::<RelayAddr>().as_ref() != Ok(r) {
                return Err(format!(
                    "relay {} has no usable address (`{}`)",
                    r.id,
                    r.addrs.join(",")
                ));
            }
        }
        let mut list = list.into_iter();
        let first = list.next().ok_or("no relay given")?;
        Ok(Self {
            first,
            rest: list.collect(),
        })
    }

    /// A list of one.
    pub(crate) fn one(relay: RelayAddr) -> Self {
        Self {
            first: relay,
            rest: Vec::new(),
        }
    }

    /// The relay dialled first.
    pub(crate) fn first(&self) -> &RelayAddr {
        &self.first
    }

    /// The relays after the first.
    pub(crate) fn rest(&self) -> &[RelayAddr] {
        &self.rest
    }

    /// Every relay, in order of preference.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &RelayAddr> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    /// How many relays.
    pub(crate) fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Every relay, in order of preference, as a vector.
    pub(crate) fn to_vec(&self) -> Vec<RelayAddr> {
        self.iter().cloned().collect()
    }

    /// The stored form: a JSON array of dial strings, in order.
    pub(crate) fn to_stored(&self) -> String {
        serde_json::Value::from(self.iter().map(ToString::to_string).collect::<Vec<_>>())
            .to_string()
    }

    /// Reads [`Relays::to_stored`] output.
    pub(crate) fn from_stored(text: &str) -> Result<Self, String> {
        let list: Vec<String> =
            serde_json::from_str(text).map_err(|e| format!("not a JSON list of relays: {e}"))?;
        let list = list
            .iter()
            .map(|r| r.parse().map_err(|e| format!("`{r}`: {e}")))
            .collect::<Result<Vec<RelayAddr>, String>>()?;
        Self::new(list)
    }
}

/// One relay as it is named in messages (`ID@HOST:PORT`); several joined with ` or `.
impl fmt::Display for Relays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Parses every `--relay` (in order) into a relay list; `pin` (`--relay-id`) applies to the
/// first one.
pub(crate) async fn resolve_all(
    texts: &[String],
    pin: Option<&str>,
    timeout: Duration,
) -> Result<Relays, Failure> {
    let mut list = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let pin = if i == 0 { pin } else { None };
        list.push(resolve_pinned(text, pin, timeout).await?);
    }
    Relays::new(list).map_err(|e| Failure::bad_input(format!("--relay: {e}")))
}

/// The relay's addresses as socket addresses (host names resolved), within `timeout`.
pub(crate) async fn socket_addrs(
    relay: &RelayAddr,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, Failure> {
    sync_client::lookup_relay(relay, timeout)
        .await
        .map_err(|e| failure(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(byte: u8, addr: &str) -> RelayAddr {
        format!("{}@{addr}", hex_id(byte)).parse().unwrap()
    }

    fn hex_id(byte: u8) -> String {
        format!("{byte:02x}").repeat(32)
    }

    #[test]
    fn a_relay_list_is_non_empty_bounded_and_without_duplicates_and_round_trips() {
        let list = Relays::new(vec![
            relay(1, "127.0.0.1:7440"),
            relay(2, "relay.example:7440,[::1]:7440"),
        ])
        .unwrap();
        assert_eq!(list.first(), &relay(1, "127.0.0.1:7440"));
        assert_eq!(list.rest().len(), 1);
        assert_eq!(Relays::from_stored(&list.to_stored()).unwrap(), list);
        assert_eq!(
            list.to_string(),
            format!(
                "{}@127.0.0.1:7440 or {}@relay.example:7440,[::1]:7440",
                hex_id(1),
                hex_id(2)
            )
        );
        assert!(Relays::new(Vec::new()).is_err());
        assert!(Relays::new(vec![relay(1, "a:1"), relay(1, "b:1")]).is_err());
        for addrs in [
            vec![],
            vec!["a:1,b:2".to_string()],
            vec!["nope".to_string()],
        ] {
            let id = RelayId::from_bytes([1; 32]);
            assert!(Relays::new(vec![RelayAddr { id, addrs }]).is_err());
        }
        let many = (0..=MAX_RELAYS as u8).map(|b| relay(b, "a:1")).collect();
        assert!(Relays::new(many).is_err());
        for bad in ["", "[]", "{}", "[\"nope\"]", "[1]"] {
            assert!(Relays::from_stored(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn typos_are_bad_input_and_a_silent_relay_is_unreachable() {
        let id = "ab".repeat(32);
        let timeout = Duration::from_secs(10);
        let relay = resolve(&format!("{id}@127.0.0.1:7440"), timeout)
            .await
            .unwrap();
        assert_eq!(socket_addrs(&relay, timeout).await.unwrap().len(), 1);
        for typo in ["127.0.0.1:7440", "zz@127.0.0.1:1", "https://relay.example"] {
            assert_eq!(
                resolve(typo, timeout).await.unwrap_err().kind,
                Kind::BadInput
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let e = resolve(&format!("http://127.0.0.1:{port}"), timeout)
            .await
            .unwrap_err();
        assert_eq!(e.kind, Kind::Unreachable);
    }
}
