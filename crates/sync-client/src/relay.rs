//! Finding a relay from what a person or a config gives: a dial string
//! (`ENDPOINT_ID@HOST:PORT[,HOST:PORT…]`) or the relay's HTTP address, whose
//! `/.well-known/0k-sync` document names the relay's id and addresses.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use sync_types::{RelayAddr, RelayAddrError, RelayId};

/// Largest `/.well-known/0k-sync` document read.
const MAX_DOC: usize = 64 * 1024;

/// Why a relay could not be found. `is_bad_input` tells a mistyped address from a relay that
/// could not be reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The text is neither a dial string nor an `http://` URL, or a part of it is malformed.
    #[error("relay `{text}`: {reason}")]
    Syntax {
        /// What was given.
        text: String,
        /// What is wrong with it.
        reason: RelayAddrError,
    },
    /// An `https://` URL (not supported: the well-known document is read over plain http).
    #[error("https relay URLs are not supported yet; use http:// or ENDPOINT_ID@HOST:PORT")]
    Https,
    /// An `http://` URL that does not parse or names no host.
    #[error("`{0}` is not a valid http URL with a host")]
    BadUrl(String),
    /// The HTTP server could not be reached or did not answer in time.
    #[error("relay unreachable: GET {url}: {reason}")]
    Unreachable {
        /// The document's URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered, but not with a 0k-sync relay document.
    #[error("{url} {reason}; is this a 0k-sync relay's HTTP address?")]
    NotARelay {
        /// The document's URL.
        url: String,
        /// What was wrong with the answer.
        reason: String,
    },
    /// A host name of the relay did not resolve.
    #[error("relay address {addr} does not resolve: {reason}")]
    Lookup {
        /// The `HOST:PORT` that failed.
        addr: String,
        /// The resolver's answer.
        reason: String,
    },
    /// Name resolution did not finish in time.
    #[error("relay unreachable at {relay}: its address did not resolve within {after:?}")]
    LookupTimeout {
        /// The relay being resolved.
        relay: RelayAddr,
        /// The time allowed.
        after: Duration,
    },
}

impl ResolveError {
    /// Whether the input itself is wrong (a person should correct it), as opposed to a relay
    /// that could not be reached or did not answer as a relay.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Syntax { .. } | Self::Https | Self::BadUrl(_))
    }
}

/// Finds the relay `text` names: a dial string is parsed; an `http://` URL (the relay's HTTP
/// address, with or without `/.well-known/0k-sync` or `/health`) is fetched within `timeout`.
pub async fn resolve_relay(text: &str, timeout: Duration) -> Result<RelayAddr, ResolveError> {
    let t = text.trim();
    if t.starts_with("https://") {
        return Err(ResolveError::Https);
    }
    if t.starts_with("http://") {
        return match tokio::time::timeout(timeout, fetch_well_known(t)).await {
            Ok(r) => r,
            Err(_) => Err(ResolveError::Unreachable {
                url: t.to_string(),
                reason: format!("no answer within {timeout:?}"),
            }),
        };
    }
    t.parse().map_err(|reason| ResolveError::Syntax {
        text: t.to_string(),
        reason,
    })
}

/// Resolves the relay's addresses to socket addresses (host names through the system resolver,
/// on tokio's blocking pool), all within `timeout`.
pub async fn lookup_relay(
    relay: &RelayAddr,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, ResolveError> {
    let lookups = async {
        let mut out = Vec::new();
        for a in &relay.addrs {
            let found =
                tokio::net::lookup_host(a.as_str())
                    .await
                    .map_err(|e| ResolveError::Lookup {
                        addr: a.clone(),
                        reason: e.to_string(),
                    })?;
            out.extend(found);
        }
        Ok(out)
    };
    tokio::time::timeout(timeout, lookups)
        .await
        .unwrap_or_else(|_| {
            Err(ResolveError::LookupTimeout {
                relay: relay.clone(),
                after: timeout,
            })
        })
}

#[derive(serde::Deserialize)]
struct WellKnown {
    relay_id: String,
    addrs: Vec<String>,
}

async fn fetch_well_known(url: &str) -> Result<RelayAddr, ResolveError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| ResolveError::BadUrl(url.to_string()))?;
    let host = uri
        .host()
        .ok_or_else(|| ResolveError::BadUrl(url.to_string()))?
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
    let doc_url = format!("http://{authority}{path}");
    let unreachable = |e: &dyn std::fmt::Display| ResolveError::Unreachable {
        url: doc_url.clone(),
        reason: e.to_string(),
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
        .map_err(|_| ResolveError::BadUrl(url.to_string()))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&e))?;
    if !res.status().is_success() {
        return Err(ResolveError::NotARelay {
            url: doc_url,
            reason: format!("answered {}", res.status()),
        });
    }
    let body = Limited::new(res.into_body(), MAX_DOC)
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    let not_a_relay = |reason: &str| ResolveError::NotARelay {
        url: doc_url.clone(),
        reason: reason.to_string(),
    };
    let doc: WellKnown =
        serde_json::from_slice(&body).map_err(|_| not_a_relay("is not a relay document"))?;
    let id: RelayId = doc
        .relay_id
        .parse()
        .map_err(|_| not_a_relay("names no valid relay id"))?;
    // A relay bound to 0.0.0.0 / :: lists that address: dial the host of the URL instead.
    let addrs: Vec<String> = doc
        .addrs
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .map(|a| {
            if !a.ip().is_unspecified() {
                a.to_string()
            } else if host.contains(':') {
                format!("[{host}]:{}", a.port())
            } else {
                format!("{host}:{}", a.port())
            }
        })
        .collect();
    if addrs.is_empty() {
        return Err(not_a_relay("lists no relay address"));
    }
    Ok(RelayAddr { id, addrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dial_strings_resolve_without_the_network_and_typos_are_bad_input() {
        let id = "ab".repeat(32);
        let r = resolve_relay(
            &format!(" {id}@127.0.0.1:7440,[::1]:7440 "),
            Duration::from_secs(5),
        )
        .await
        .expect("dial string");
        assert_eq!(r.addrs, ["127.0.0.1:7440", "[::1]:7440"]);
        let resolved = lookup_relay(&r, Duration::from_secs(10))
            .await
            .expect("lookup");
        assert_eq!(resolved.len(), 2);
        for text in [
            "nope",
            "https://relay.example",
            "http://",
            &format!("{id}@x"),
        ] {
            let e = resolve_relay(text, Duration::from_secs(5))
                .await
                .expect_err(text);
            assert!(e.is_bad_input(), "{text}: {e}");
        }
    }

    #[tokio::test]
    async fn a_closed_http_port_is_unreachable_not_bad_input() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let e = resolve_relay(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10))
            .await
            .expect_err("nothing listens");
        assert!(matches!(e, ResolveError::Unreachable { .. }), "{e}");
        assert!(!e.is_bad_input());
    }
}
