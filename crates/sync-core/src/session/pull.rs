//! The pull in progress: its request, and the checks and paging of the relay's answers.

use sync_types::{Cursor, Message, PULL_ENTRY_OVERHEAD, Pull, PullResponse};

use super::io::{Page, PullEnd, PullMode};

/// A pull waiting for the relay's answer.
#[derive(Debug)]
pub(super) struct PullInProgress {
    request_id: u64,
    /// The page's `after`.
    after: Cursor,
    mode: PullMode,
    /// Bytes of the entries served so far in this pull (payloads and their framing), delivered
    /// or not, so a relay serving endless pages cannot grow what the device holds.
    bytes: usize,
}

/// What an answer comes to.
pub(super) enum Answer {
    /// A page; with `Some(next)` the pull goes on with that request.
    Page(Page, Option<Message>),
    /// The answer breaks the protocol.
    Violation(&'static str),
}

impl PullInProgress {
    /// The pull and its first request.
    pub(super) fn start(
        request_id: u64,
        after: Cursor,
        mode: PullMode,
        page: u32,
    ) -> (Self, Message) {
        let pull = Self {
            request_id,
            after,
            mode,
            bytes: 0,
        };
        let msg = pull.request(page);
        (pull, msg)
    }

    pub(super) fn request_id(&self) -> u64 {
        self.request_id
    }

    fn request(&self, page: u32) -> Message {
        let limit = match self.mode {
            PullMode::Round => page,
            PullMode::Single { limit } => limit.max(1),
        };
        Message::Pull(Pull {
            request_id: self.request_id,
            after: self.after,
            limit,
            max_bytes: None,
        })
    }

    /// Checks the relay's answer and decides what follows: another page (with `next_request`
    /// as its id) or the end of the pull. `page` is the entries asked per page; `round_bytes`
    /// the byte bound of a round.
    pub(super) fn answer(
        &mut self,
        resp: PullResponse,
        next_request: u64,
        page: u32,
        round_bytes: usize,
    ) -> Answer {
        // Entries must be ascending and after the page's cursor.
        let mut prev = self.after;
        for e in &resp.entries {
            if e.cursor <= prev {
                return Answer::Violation("PullResponse out of order");
            }
            prev = e.cursor;
        }
        if resp.has_more && resp.entries.is_empty() {
            return Answer::Violation("empty PullResponse claims more");
        }
        self.bytes = resp.entries.iter().fold(self.bytes, |n, e| {
            n.saturating_add(e.payload.len() + PULL_ENTRY_OVERHEAD)
        });
        // With has_more = false the page and max_cursor come from one snapshot: everything in
        // (after, max_cursor] was returned, and the relay accounts for its holes.
        let through = if resp.has_more {
            prev
        } else {
            prev.max(resp.max_cursor)
        };
        let end = match self.mode {
            PullMode::Single { .. } => Some(PullEnd::Complete),
            PullMode::Round if !resp.has_more => Some(PullEnd::Complete),
            PullMode::Round if self.bytes >= round_bytes => Some(PullEnd::Bounded),
            PullMode::Round => None,
        };
        let page_out = Page {
            after: self.after,
            through,
            entries: resp.entries,
            removed: resp.removed,
            end,
        };
        let next = end.is_none().then(|| {
            self.after = through;
            self.request_id = next_request;
            self.request(page)
        });
        Answer::Page(page_out, next)
    }
}
