//! The QUIC side: the iroh endpoint, the addresses devices can dial, the accept loop, and one
//! connection's way to a session (a pre-auth place, TLS handshake, Hello binding, the stream).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::{Incoming, NetReportConfig, PortmapperConfig, presets};
use iroh::{Endpoint, RelayMode};
use sync_types::{ALPN, DeviceId, ErrorCode, HELLO_BINDING_LABEL};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::transport::{Windows, transport_config, var_int};
use super::{RelayCtx, RelayError};
use crate::admission::{Origin, PreAuth, Refusal, Subject};
use crate::config::RelayConfig;
use crate::session::{SessionEnd, serve_session};
use crate::storage::error_chain;

/// After a session ends, how long the relay waits for the device to receive its last frames
/// before it closes the connection.
pub(super) const LINGER: Duration = Duration::from_secs(3);

/// QUIC application close codes.
const CLOSE_OK: u32 = 0;
const CLOSE_REFUSED: u32 = 1;
/// The device accepted no byte of its session for `write_stall_timeout`.
const CLOSE_WRITE_STALLED: u32 = 2;

/// Binds the iroh endpoint: self-hosted (nothing on the internet contacted) unless
/// `public_discovery` is set.
pub(super) async fn bind_endpoint(
    config: &RelayConfig,
    secret: iroh::SecretKey,
) -> Result<Endpoint, RelayError> {
    let bind_err = |message: String| RelayError::Bind {
        what: "QUIC endpoint",
        addr: config.bind,
        message,
    };
    let builder = if config.public_discovery {
        // Opt-in: n0's relay servers and address lookup (contacts the internet).
        Endpoint::builder(presets::N0)
    } else {
        // Self-hosted default: nothing on the internet is contacted.
        Endpoint::builder(presets::Minimal)
            .relay_mode(RelayMode::Disabled)
            .clear_address_lookup()
            .portmapper_config(PortmapperConfig::Disabled)
            .net_report_config(NetReportConfig::minimal())
    };
    let windows = Windows::for_frame(sync_types::max_frame_for_payload(
        config.max_blob_bytes as usize,
    ));
    builder
        .transport_config(transport_config(config, windows))
        .secret_key(secret)
        .clear_ip_transports()
        .bind_addr(config.bind)
        .map_err(|e| bind_err(error_chain(&e)))?
        .alpns(alpns(config))
        .bind()
        .await
        .map_err(|e| bind_err(error_chain(&e)))
}

/// The protocols the endpoint speaks: the session protocol, and iroh-blobs for large content
/// when the content store is on.
fn alpns(config: &RelayConfig) -> Vec<Vec<u8>> {
    let mut alpns = vec![ALPN.to_vec()];
    if config.content_store {
        alpns.push(iroh_blobs::ALPN.to_vec());
    }
    alpns
}

/// Addresses devices can dial: the bound sockets, with an unspecified address (`0.0.0.0`,
/// `[::]`) replaced by the interface addresses iroh found for it plus loopback.
pub(super) fn direct_addrs(endpoint: &Endpoint) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    let add = |a: SocketAddr, out: &mut Vec<SocketAddr>| {
        if !out.contains(&a) {
            out.push(a);
        }
    };
    let found = endpoint.addr();
    for bound in endpoint.bound_sockets() {
        if !bound.ip().is_unspecified() {
            add(bound, &mut out);
            continue;
        }
        for a in found.ip_addrs() {
            if a.port() == bound.port()
                && a.is_ipv4() == bound.is_ipv4()
                && !a.ip().is_unspecified()
            {
                add(*a, &mut out);
            }
        }
        let loopback = if bound.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
        add(SocketAddr::new(loopback, bound.port()), &mut out);
    }
    out
}

/// Accepts connections until `stop`, each served as its own task in `sessions`. A connection
/// first needs a place in the pre-auth budget, taken before any TLS work: without one it is
/// refused at once. When half the budget is in use, a connection from an address it has not
/// proven (a QUIC retry) is asked to prove it first, so spoofed addresses cannot fill it.
pub(super) async fn accept_loop(
    ctx: Arc<RelayCtx>,
    endpoint: Endpoint,
    sessions: TaskTracker,
    stop: CancellationToken,
) {
    while let Some(Some(incoming)) = stop.run_until_cancelled(endpoint.accept()).await {
        ctx.metrics.connections_total.inc();
        let origin = Origin::of_incoming(&incoming.remote_addr());
        let incoming =
            if !incoming.remote_addr_validated() && PreAuth::under_pressure(&ctx, &origin) {
                match incoming.retry() {
                    Ok(()) => continue,
                    Err(e) => e.into_incoming(),
                }
            } else {
                incoming
            };
        if !ctx.admission.take_connect(&ctx.metrics, origin) {
            incoming.refuse();
            continue;
        }
        match PreAuth::begin(&ctx, origin) {
            Ok(pre) => {
                sessions.spawn(handle_connection(Arc::clone(&ctx), incoming, pre));
            }
            Err(_) => incoming.refuse(),
        }
    }
}

/// One QUIC connection: TLS handshake, Hello binding from the TLS exporter, the stream, then
/// the session — the handshake, the stream and the Hello all before the pre-auth deadline.
/// A connection for iroh-blobs (large content) is handed to the content store's protocol
/// handler once its handshake is done, and keeps its pre-auth place until it ends (every
/// request on it is authorized by the content store).
async fn handle_connection(ctx: Arc<RelayCtx>, incoming: Incoming, mut pre: PreAuth) {
    let deadline = pre.deadline;
    let conn = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection handshake failed");
            return;
        }
        Err(_) => {
            // No session stream yet, so no typed error to send: counted and audited here.
            let subject = Subject {
                origin: pre.origin,
                device: None,
                group: None,
            };
            ctx.admission
                .record(&ctx.metrics, Refusal::PreAuthDeadline, subject);
            return;
        }
    };
    if conn.alpn() == iroh_blobs::ALPN {
        // The connection keeps its place in the pre-auth budget while it lasts (`pre` is
        // dropped on return), so strangers cannot hold more content connections than the
        // budget allows; its window opens only for an authorized upload.
        match &ctx.content {
            Some(content) => {
                tokio::select! {
                    () = content.serve(conn.clone()) => {}
                    () = ctx.shutdown.cancelled() => {
                        conn.close(CLOSE_REFUSED.into(), b"relay shutting down");
                    }
                }
            }
            None => conn.close(CLOSE_REFUSED.into(), b"content store disabled"),
        }
        return;
    }
    let peer = DeviceId::from_bytes(*conn.remote_id().as_bytes());
    let mut binding = [0u8; 32];
    if conn
        .export_keying_material(&mut binding, HELLO_BINDING_LABEL, b"")
        .is_err()
    {
        drop(pre);
        ctx.metrics.reject(ErrorCode::Internal);
        conn.close(CLOSE_REFUSED.into(), b"internal error");
        return;
    }
    let streams = tokio::select! {
        r = tokio::time::timeout_at(deadline, conn.accept_bi()) => r,
        () = ctx.shutdown.cancelled() => {
            drop(pre);
            conn.close(CLOSE_REFUSED.into(), b"relay shutting down");
            return;
        }
    };
    let (send, recv) = match streams {
        Ok(Ok(streams)) => streams,
        Ok(Err(_)) => return,
        Err(_) => {
            pre.deadline_passed();
            drop(pre);
            ctx.metrics.reject(ErrorCode::HelloTimeout);
            tracing::info!(
                target: "sync_relay::audit",
                event = "session_refused",
                device = %peer.short(),
                reason = ErrorCode::HelloTimeout.name(),
            );
            conn.close(CLOSE_REFUSED.into(), b"no stream opened in time");
            return;
        }
    };
    let stopped = send.stopped();
    // Once the Hello is admitted, the connection's window opens to session size.
    let admitted = pre.on_admit();
    let widen = {
        let conn = conn.clone();
        let window = var_int(Windows::for_frame(ctx.codec.max_frame).session);
        async move {
            if admitted.await.is_ok() {
                conn.set_receive_window(window);
            }
        }
    };
    let session = serve_session(Arc::clone(&ctx), pre, peer, binding, recv, send);
    let (end, ()) = tokio::join!(session, widen);
    if end == SessionEnd::WriteStalled {
        // It reads nothing: no last frame to wait for. Closing drops what the connection still
        // buffers for it.
        conn.close(CLOSE_WRITE_STALLED.into(), b"write stalled");
        return;
    }
    // Let the device receive the last frames (it acknowledges them, or closes), then close.
    let _ = tokio::time::timeout(LINGER, async {
        tokio::select! {
            _ = stopped => {}
            _ = conn.closed() => {}
        }
    })
    .await;
    conn.close(CLOSE_OK.into(), b"");
}
