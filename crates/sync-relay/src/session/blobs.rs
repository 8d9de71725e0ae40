//! Requests on the group's stored blobs: `Pull` (a page that fits one frame) and `Delete`.

use sync_types::{
    DeleteAck, ErrorCode, Message, Payload, PullEntry, PullResponse, WireError, pull_entry_budget,
};

use super::{Session, now_ms, storage_error};
use crate::storage::Storage;

impl Session {
    /// Builds the answer to a `Pull`: clamped count, bounded bytes, fitting one frame.
    pub(super) async fn pull(&self, pull: sync_types::Pull) -> Message {
        let ctx = &self.ctx;
        let count = pull.limit.clamp(1, ctx.config.max_pull_count.max(1));
        let max_bytes = pull
            .max_bytes
            .unwrap_or(u32::MAX)
            .min(ctx.config.max_pull_bytes);
        let page = match ctx
            .storage
            .pull(self.group, pull.after, count, u64::from(max_bytes))
            .await
        {
            Ok(page) => page,
            Err(e) => {
                return Message::Error(storage_error(ctx, &e).for_request(pull.request_id));
            }
        };
        let budget = pull_entry_budget(ctx.codec.max_frame);
        let mut used = 0usize;
        let mut has_more = page.has_more;
        let mut removed = 0u64;
        let mut entries = Vec::with_capacity(page.entries.len());
        for e in page.entries {
            let removed_before = e.removed_before;
            let entry = PullEntry {
                cursor: e.cursor,
                blob_id: e.blob_id,
                sender: e.sender,
                payload: Payload::from(e.payload),
                timestamp_ms: e.stored_at_ms,
            };
            let len = entry.encoded_len();
            if !entries.is_empty() && used.saturating_add(len) > budget {
                has_more = true;
                break;
            }
            used = used.saturating_add(len);
            removed = removed.saturating_add(removed_before);
            entries.push(entry);
        }
        if !has_more {
            removed = removed.saturating_add(page.removed_after);
        }
        ctx.metrics.pulls_total.inc();
        ctx.metrics.pulled_blobs_total.add(entries.len() as u64);
        Message::PullResponse(PullResponse {
            request_id: pull.request_id,
            entries,
            has_more,
            max_cursor: page.max_cursor,
            removed,
        })
    }

    /// Deletes one of the group's blobs: `DeleteAck`, or `NotFound` if it is not stored. The
    /// group's large content registered under this blob id (its descriptor) goes with it.
    pub(super) async fn delete(&self, del: sync_types::Delete) -> Message {
        if let Some(content) = &self.ctx.content
            && let Err(e) = content.drop_for_blob(self.group, del.blob_id).await
        {
            tracing::warn!(error = %e, "content of a deleted blob not dropped");
        }
        match self
            .ctx
            .storage
            .delete(self.group, del.blob_id, now_ms())
            .await
        {
            Ok(true) => {
                self.ctx.metrics.deletes_total.inc();
                Message::DeleteAck(DeleteAck {
                    request_id: del.request_id,
                    blob_id: del.blob_id,
                })
            }
            Ok(false) => Message::Error(
                WireError::new(ErrorCode::NotFound, "no such blob").for_request(del.request_id),
            ),
            Err(e) => Message::Error(storage_error(&self.ctx, &e).for_request(del.request_id)),
        }
    }
}
