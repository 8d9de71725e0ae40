//! Who may upload and download content: the relay's answers to iroh-blobs' provider events.
//!
//! A connection's remote endpoint id is the device id (devices use their device key as iroh
//! key). The rules:
//! - **push** of a blob: only for a hash with a live reservation still waiting for its upload, in
//!   a group the device is a member of (or that it registered itself), not revoked;
//! - **get** of a blob: only for a hash uploaded completely, with a live reservation in a group
//!   the device is a member of, not revoked;
//! - anything else (hash sequences, `get_many`, `observe`, an unknown hash, a stranger): refused.
//!
//! A device is a member of a group when the group's membership records name it, or when it has
//! a session open in the group on this relay (it proved it with its `Hello`); a device the
//! records revoke never is.

use std::collections::HashMap;
use std::sync::Arc;

use iroh_blobs::provider::events::{AbortReason, EventResult, ProviderMessage};
use sync_types::{DeviceId, GroupId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::server::RelayCtx;

/// Whether `device` may read or write the content of `group` now.
pub(crate) async fn is_member(ctx: &RelayCtx, group: GroupId, device: DeviceId) -> bool {
    let state = match ctx.memberships.state(&ctx.storage, group).await {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(error = %e, "membership unavailable: content request refused");
            return false;
        }
    };
    if state.revoked_at(&device).is_some() {
        return false;
    }
    state.members().contains(&device) || ctx.hub.has_device(&group, &device)
}

/// How often a running upload's size on disk is compared with its reservation.
const UPLOAD_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Refuses a request or connection (the iroh-blobs side closes or resets it).
const REFUSED: EventResult = Err(AbortReason::Permission);

/// Answers iroh-blobs' provider events until `stop` or until the protocol handler is gone.
pub(crate) async fn provider_events(
    ctx: Arc<RelayCtx>,
    mut events: mpsc::Receiver<ProviderMessage>,
    stop: CancellationToken,
) {
    // The device behind each open iroh-blobs connection.
    let mut devices: HashMap<u64, DeviceId> = HashMap::new();
    while let Some(Some(msg)) = stop.run_until_cancelled(events.recv()).await {
        match msg {
            ProviderMessage::ClientConnected(m) => {
                let answer = match m.inner.endpoint_id {
                    Some(id) => {
                        devices.insert(m.inner.connection_id, DeviceId::from_bytes(*id.as_bytes()));
                        Ok(())
                    }
                    None => REFUSED,
                };
                m.tx.send(answer).await.ok();
            }
            ProviderMessage::ClientConnectedNotify(_) => {}
            ProviderMessage::ConnectionClosed(m) => {
                devices.remove(&m.inner.connection_id);
            }
            ProviderMessage::GetRequestReceived(m) => {
                let device = devices.get(&m.inner.connection_id).copied();
                let request = &m.inner.request;
                let hash = *request.hash.as_bytes();
                let blob_only = request.ranges.is_blob();
                let ctx = Arc::clone(&ctx);
                tokio::spawn(async move {
                    let allowed = match device {
                        Some(device) if blob_only => may_get(&ctx, device, hash).await,
                        _ => false,
                    };
                    if allowed {
                        ctx.metrics.content_served_total.inc();
                        m.tx.send(Ok(())).await.ok();
                    } else {
                        refuse(&ctx, "get", device, |r| m.tx.send(r)).await;
                    }
                });
            }
            ProviderMessage::PushRequestReceived(m) => {
                let connection = m.inner.connection_id;
                let device = devices.get(&connection).copied();
                let request = &m.inner.request;
                let hash = *request.hash.as_bytes();
                let blob_only = request.ranges.is_blob();
                let ctx = Arc::clone(&ctx);
                tokio::spawn(async move {
                    let allowed = match device {
                        Some(device) if blob_only => may_push(&ctx, device, hash).await,
                        _ => None,
                    };
                    let Some(limit) = allowed else {
                        refuse(&ctx, "push", device, |r| m.tx.send(r)).await;
                        return;
                    };
                    if let Some(content) = &ctx.content {
                        content.open_window(connection);
                    }
                    if m.tx.send(Ok(())).await.is_err() {
                        return;
                    }
                    let Some(content) = &ctx.content else { return };
                    // The update channel closes when the upload ends (completed or not).
                    // Meanwhile, an upload that grows beyond every reservation of its hash
                    // is cut.
                    let mut updates = m.rx;
                    let mut tick = tokio::time::interval(UPLOAD_CHECK);
                    loop {
                        tokio::select! {
                            u = updates.recv() => if !matches!(u, Ok(Some(_))) { break },
                            _ = tick.tick() => {
                                let on_disk = content.bytes_on_disk(&hash);
                                if on_disk > limit {
                                    content.close_connection(connection);
                                    content.drop_smaller(hash, on_disk).await;
                                    break;
                                }
                            }
                        }
                    }
                    let stored = content.upload_ended(hash, sync_types::unix_ms()).await;
                    content.upload_answered(connection, stored);
                });
            }
            ProviderMessage::GetManyRequestReceived(m) => {
                let device = devices.get(&m.inner.connection_id).copied();
                refuse(&ctx, "get_many", device, |r| m.tx.send(r)).await;
            }
            ProviderMessage::ObserveRequestReceived(m) => {
                let device = devices.get(&m.inner.connection_id).copied();
                refuse(&ctx, "observe", device, |r| m.tx.send(r)).await;
            }
            ProviderMessage::Throttle(m) => {
                m.tx.send(Ok(())).await.ok();
            }
            // Notifications only (not configured): nothing to answer.
            ProviderMessage::GetRequestReceivedNotify(_)
            | ProviderMessage::GetManyRequestReceivedNotify(_)
            | ProviderMessage::PushRequestReceivedNotify(_)
            | ProviderMessage::ObserveRequestReceivedNotify(_) => {}
        }
    }
}

/// Counts and logs a refused content request, then refuses it: `answer` sends the refusal on
/// the request's reply channel (an `irpc` sender, which this crate does not name).
async fn refuse<F, E>(
    ctx: &RelayCtx,
    kind: &'static str,
    device: Option<DeviceId>,
    answer: impl FnOnce(EventResult) -> F,
) where
    F: Future<Output = Result<(), E>>,
{
    ctx.metrics.content_requests_refused_total.inc();
    tracing::info!(
        target: "sync_relay::audit",
        event = "content_refused",
        request = kind,
        device = %device.map(|d| d.short()).unwrap_or_default(),
    );
    answer(REFUSED).await.ok();
}

/// A push of `hash` by `device`: a live reservation waiting for its upload, in a group of the
/// device (or registered by it), and the device not revoked there. Returns the largest size
/// such a reservation allows.
async fn may_push(ctx: &RelayCtx, device: DeviceId, hash: [u8; 32]) -> Option<u64> {
    let content = ctx.content.as_ref()?;
    let pending = match content.pending(hash, sync_types::unix_ms()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "content index unavailable");
            return None;
        }
    };
    let mut limit = None;
    for p in pending {
        let allowed = is_member(ctx, p.group, device).await
            || (p.uploader == device && not_revoked(ctx, p.group, device).await);
        if allowed {
            limit = Some(limit.map_or(p.size, |l: u64| l.max(p.size)));
        }
    }
    limit
}

/// A get of `hash` by `device`: uploaded completely, live in a group the device is a member of.
async fn may_get(ctx: &RelayCtx, device: DeviceId, hash: [u8; 32]) -> bool {
    let Some(content) = &ctx.content else {
        return false;
    };
    let groups = match content.complete_groups(hash, sync_types::unix_ms()).await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "content index unavailable");
            return false;
        }
    };
    for group in groups {
        if is_member(ctx, group, device).await {
            return true;
        }
    }
    false
}

async fn not_revoked(ctx: &RelayCtx, group: GroupId, device: DeviceId) -> bool {
    match ctx.memberships.state(&ctx.storage, group).await {
        Ok(state) => state.revoked_at(&device).is_none(),
        Err(_) => false,
    }
}
