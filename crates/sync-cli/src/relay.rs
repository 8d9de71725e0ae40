//! Where the relay is, for the CLI: `--relay` and the stored relay parsed and resolved through
//! `sync-client`, failures turned into exit codes (a mistyped address is bad input; a relay that
//! does not answer is unreachable).

use std::net::SocketAddr;
use std::time::Duration;

use sync_client::ResolveError;
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
