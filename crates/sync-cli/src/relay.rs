//! Where the relay is: `ENDPOINT_ID@HOST:PORT[,HOST:PORT…]`, or the relay's HTTP URL (its
//! `/.well-known/0k-sync` document names the id and the addresses).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use crate::fail::{Failure, Kind};

/// Largest `/.well-known/0k-sync` document read.
const MAX_DOC: usize = 64 * 1024;

/// A relay: its identity and the addresses to dial, as text (`host:port`, kept as given so an
/// invite can carry host names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RelayAddr {
    pub(crate) id: [u8; 32],
    pub(crate) addrs: Vec<String>,
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", hex::encode(self.id), self.addrs.join(","))
    }
}

fn bad(msg: impl Into<String>) -> Failure {
    Failure::new(Kind::BadInput, msg)
}

impl RelayAddr {
    /// Parses `ENDPOINT_ID@HOST:PORT[,HOST:PORT…]` (the id in hex, as the relay prints it).
    pub(crate) fn parse_dial(text: &str) -> Result<RelayAddr, Failure> {
        let text = text.trim();
        let (id, addrs) = text.split_once('@').ok_or_else(|| {
            bad(format!(
                "relay `{text}` is neither ENDPOINT_ID@HOST:PORT nor an http:// URL"
            ))
        })?;
        let id = parse_id(id)?;
        let addrs: Vec<String> = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            return Err(bad(format!(
                "relay `{text}` names no HOST:PORT after the @"
            )));
        }
        for a in &addrs {
            if a.rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(bad(format!("relay address `{a}` is not HOST:PORT")));
            }
        }
        Ok(RelayAddr { id, addrs })
    }

    /// Resolves the addresses to socket addresses (host names through the system resolver,
    /// on tokio's blocking pool), all within `timeout`.
    pub(crate) async fn socket_addrs(&self, timeout: Duration) -> Result<Vec<SocketAddr>, Failure> {
        let lookups = async {
            let mut out = Vec::new();
            for a in &self.addrs {
                match tokio::net::lookup_host(a.as_str()).await {
                    Ok(found) => out.extend(found),
                    Err(e) => {
                        return Err(Failure::new(
                            Kind::Unreachable,
                            format!("relay address {a} does not resolve: {e}"),
                        ));
                    }
                }
            }
            Ok(out)
        };
        match tokio::time::timeout(timeout, lookups).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                Kind::Unreachable,
                format!(
                    "relay unreachable at {self}: its address did not resolve within {timeout:?}"
                ),
            )),
        }
    }
}

fn parse_id(text: &str) -> Result<[u8; 32], Failure> {
    let bytes = hex::decode(text.trim()).map_err(|_| {
        bad("relay id must be the 64 hex characters the relay prints as `relay id:`")
    })?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| bad("relay id must be the 64 hex characters the relay prints as `relay id:`"))
}

/// Parses `--relay`: a dial string, or an `http://` URL whose well-known document is fetched.
pub(crate) async fn resolve(text: &str, timeout: Duration) -> Result<RelayAddr, Failure> {
    let t = text.trim();
    if t.starts_with("https://") {
        return Err(bad(
            "https relay URLs are not supported yet; use http:// or ENDPOINT_ID@HOST:PORT",
        ));
    }
    if t.starts_with("http://") {
        return match tokio::time::timeout(timeout, fetch_well_known(t)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(
                Kind::Unreachable,
                format!("relay unreachable: no answer from {t} within {timeout:?}"),
            )),
        };
    }
    RelayAddr::parse_dial(t)
}

#[derive(serde::Deserialize)]
struct WellKnown {
    relay_id: String,
    addrs: Vec<String>,
}

async fn fetch_well_known(url: &str) -> Result<RelayAddr, Failure> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| bad(format!("`{url}` is not a valid URL")))?;
    let host = uri
        .host()
        .ok_or_else(|| bad(format!("`{url}` names no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri
        .authority()
        .map_or_else(|| host.clone(), |a| a.as_str().to_string());
    let base = uri
        .path()
        .trim_end_matches('/')
        .trim_end_matches("/.well-known/0k-sync")
        .trim_end_matches("/health")
        .to_string();
    let path = format!("{base}/.well-known/0k-sync");
    let unreachable = |e: &dyn fmt::Display| {
        Failure::new(
            Kind::Unreachable,
            format!("relay unreachable: GET http://{authority}{path}: {e}"),
        )
    };
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| bad(format!("`{url}`: {e}")))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&e))?;
    if !res.status().is_success() {
        return Err(Failure::new(
            Kind::Unreachable,
            format!(
                "GET http://{authority}{path} answered {}; is this a 0k-sync relay's HTTP address?",
                res.status()
            ),
        ));
    }
    let body = Limited::new(res.into_body(), MAX_DOC)
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    let doc: WellKnown = serde_json::from_slice(&body).map_err(|_| {
        Failure::new(
            Kind::Unreachable,
            format!("http://{authority}{path} is not a 0k-sync relay document"),
        )
    })?;
    let id = parse_id(&doc.relay_id)?;
    // A relay bound to 0.0.0.0 / :: lists that address: dial the host of the URL instead.
    let addrs: Vec<String> = doc
        .addrs
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .map(|a| {
            if a.ip().is_unspecified() {
                if host.contains(':') {
                    format!("[{host}]:{}", a.port())
                } else {
                    format!("{host}:{}", a.port())
                }
            } else {
                a.to_string()
            }
        })
        .collect();
    if addrs.is_empty() {
        return Err(Failure::new(
            Kind::Unreachable,
            format!("http://{authority}{path} lists no relay address"),
        ));
    }
    Ok(RelayAddr { id, addrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dial_strings() {
        let id = "ab".repeat(32);
        let r = RelayAddr::parse_dial(&format!("{id}@127.0.0.1:7440, [::1]:7440")).unwrap();
        assert_eq!(r.id, [0xab; 32]);
        assert_eq!(r.addrs, vec!["127.0.0.1:7440", "[::1]:7440"]);
        assert_eq!(
            RelayAddr::parse_dial(&r.to_string()).unwrap(),
            r,
            "display round-trips"
        );
        let resolved = r.socket_addrs(Duration::from_secs(10)).await.unwrap();
        assert_eq!(resolved.len(), 2);
        for badly in [
            "127.0.0.1:7440".to_string(),
            format!("{id}@"),
            format!("{id}@127.0.0.1"),
            format!("{id}@127.0.0.1:99999"),
            "zz@127.0.0.1:1".to_string(),
            format!("{}@127.0.0.1:1", "ab".repeat(31)),
        ] {
            let e = RelayAddr::parse_dial(&badly).unwrap_err();
            assert_eq!(e.kind, Kind::BadInput, "{badly}");
        }
    }
}
