//! The invite mailbox: a member leaves a sealed invite (`InvitePut`); a joining device takes
//! it once (`InviteGet`, also accepted as the first frame of a session without a group).

use std::time::Duration;

use governor::DefaultDirectRateLimiter;
use sync_types::{ErrorCode, InviteFound, InviteStored, Message, Payload, WireError};

use super::{Session, millis, now_ms, storage_error};
use crate::admission::{Origin, Subject};
use crate::server::RelayCtx;
use crate::storage::{InviteLookup, Storage};

/// Takes an invite from the mailbox, within the lookup limits (the session's bucket, if the
/// lookup comes from a session, the address's and the relay's); the answer is `InviteFound` or
/// a typed `Error`. Every answered lookup is counted, and the failed ones apart.
pub(super) async fn invite_get(
    ctx: &RelayCtx,
    origin: Origin,
    session: Option<&DefaultDirectRateLimiter>,
    request_id: u64,
    lookup_id: String,
) -> Message {
    if let Err(refused) = ctx.admission.take_invite_lookup(origin, session) {
        let subject = Subject {
            origin,
            device: None,
            group: None,
        };
        ctx.admission.record(&ctx.metrics, refused.reason, subject);
        return Message::Error(refused.error.for_request(request_id));
    }
    let found = ctx
        .storage
        .invite_take(
            lookup_id.into_bytes(),
            now_ms(),
            ctx.config.invite_max_attempts,
        )
        .await;
    if let Ok(lookup) = &found {
        ctx.metrics.invite_lookups_total.inc();
        if !matches!(lookup, InviteLookup::Found(_)) {
            ctx.metrics.invite_lookups_failed_total.inc();
        }
    }
    let err = match found {
        Ok(InviteLookup::Found(sealed)) => {
            return Message::InviteFound(InviteFound {
                request_id,
                sealed: Payload::from(sealed),
            });
        }
        Ok(InviteLookup::NotFound) => WireError::new(ErrorCode::NotFound, "no such invite"),
        Ok(InviteLookup::Expired) => WireError::new(ErrorCode::InviteExpired, "invite expired"),
        Ok(InviteLookup::TooManyAttempts) => WireError::new(
            ErrorCode::TooManyAttempts,
            "too many lookups; the invite is deleted",
        ),
        Err(e) => storage_error(ctx, &e),
    };
    Message::Error(err.for_request(request_id))
}

impl Session {
    /// Stores a sealed invite for its lifetime (bounded by `invite_max_ttl`).
    pub(super) async fn invite_put(&self, put: sync_types::InvitePut) -> Message {
        let ctx = &self.ctx;
        let ttl = match put.ttl_secs {
            0 => ctx.config.invite_default_ttl,
            s => Duration::from_secs(u64::from(s)),
        };
        if ttl > ctx.config.invite_max_ttl {
            return Message::Error(
                WireError::new(
                    ErrorCode::TtlTooLong,
                    format!(
                        "invite ttl above the maximum of {}s",
                        ctx.config.invite_max_ttl.as_secs()
                    ),
                )
                .for_request(put.request_id),
            );
        }
        let expires = now_ms().saturating_add(millis(ttl));
        match ctx
            .storage
            .invite_put(put.lookup_id.into_bytes(), put.sealed.to_vec(), expires)
            .await
        {
            Ok(()) => Message::InviteStored(InviteStored {
                request_id: put.request_id,
            }),
            Err(e) => Message::Error(storage_error(ctx, &e).for_request(put.request_id)),
        }
    }
}
