//! `ContentRef`: a reservation of large content for the session's group (see `crate::content`).

use sync_types::{ContentAck, ContentRef, ErrorCode, Message, WireError};

use super::{STORAGE_RETRY_MS, Session, millis, now_ms, short_hash};
use crate::content::ContentError;

impl Session {
    /// Reserves the content `m` names for the session's group and device: `ContentAck`, or
    /// `Malformed`, `QuotaExceeded`, `Conflict` (another size for the same hash) or a storage
    /// error. Without a content store: `NotSupported`.
    pub(super) async fn content_ref(&self, m: ContentRef) -> Message {
        let Some(content) = &self.ctx.content else {
            return Message::Error(
                WireError::new(
                    ErrorCode::NotSupported,
                    "ContentRef is not supported by this relay (content store off)",
                )
                .for_request(m.request_id),
            );
        };
        match content.reserve(self.group, self.peer, &m, now_ms()).await {
            Ok(outcome) => {
                session_audit!(
                    self,
                    "content_reserved",
                    content = %short_hash(&m.hash),
                    size = m.size,
                    renewed = matches!(outcome, crate::content::Reserved::Renewed),
                );
                Message::ContentAck(ContentAck {
                    request_id: m.request_id,
                    blob_id: m.blob_id,
                })
            }
            Err(e) => Message::Error(self.content_error(&e).for_request(m.request_id)),
        }
    }

    fn content_error(&self, e: &ContentError) -> WireError {
        match e {
            ContentError::Malformed(what) => WireError::new(ErrorCode::Malformed, *what),
            ContentError::Quota { .. } => WireError::new(ErrorCode::QuotaExceeded, e.to_string())
                // Space frees up when content expires, checked every cleanup interval.
                .retry_after_ms(millis(self.ctx.config.cleanup_interval)),
            ContentError::SizeMismatch { .. } => WireError::new(ErrorCode::Conflict, e.to_string()),
            ContentError::Index(_) | ContentError::Blobs(_) | ContentError::Task => {
                tracing::warn!(error = %e, "content store failure");
                WireError::new(ErrorCode::StorageFailure, "relay content store failure")
                    .retry_after_ms(STORAGE_RETRY_MS)
            }
        }
    }
}
