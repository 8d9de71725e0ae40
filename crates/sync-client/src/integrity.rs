//! What a device found wrong with the log the relay served. The relay cannot forge a blob, but
//! it can serve a damaged one, the same one twice, or leave one out; each such finding is
//! reported in the pull result itself ([`PullBatch::problems`](crate::PullBatch::problems)) and as a
//! [`SyncEvent::Integrity`](crate::SyncEvent::Integrity), never skipped silently.

use std::fmt;
use std::time::Duration;

use sync_crypto::OpenError;
use sync_types::{BlobId, Cursor, DeviceId};

/// How long a delivered blob id is remembered, so the relay cannot serve it again under
/// another cursor: longer than any blob lives on a relay (the longest TTL a relay may allow is
/// what its `Welcome` announces; this floor covers the default 30 days plus a margin).
pub(crate) const DELIVERED_RETENTION_FLOOR: Duration = Duration::from_secs(31 * 24 * 3600);

/// One problem with what the relay served.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IntegrityProblem {
    /// A blob failed verification or decryption (damaged, forged, or sealed for another
    /// group): it is not delivered. Its cursor counts as received, so sync does not stall.
    Rejected {
        /// Its cursor.
        cursor: Cursor,
        /// Its id.
        blob_id: BlobId,
        /// The sender the relay reported.
        sender: DeviceId,
        /// Why it was refused.
        error: OpenError,
    },
    /// A blob this device already received at `first_cursor` came again at `cursor`: it is not
    /// delivered again. A relay never stores one blob id twice, so this is a replay (or a relay
    /// whose log was reset, which the device reports separately).
    Replayed {
        /// Where it came again.
        cursor: Cursor,
        /// Its id.
        blob_id: BlobId,
        /// Where it was delivered first.
        first_cursor: Cursor,
    },
    /// Cursors between `from` and `to` (inclusive) held no blob for this device, and the relay
    /// did not account for `count` of them as expired, deleted or never assigned: it withheld
    /// them (or lost them without saying so). With no removal in the stretch, each withheld run
    /// of cursors is reported on its own, exactly.
    Withheld {
        /// The first cursor of the stretch.
        from: Cursor,
        /// The last cursor of the stretch.
        to: Cursor,
        /// How many of its cursors are unaccounted for.
        count: u64,
    },
    /// The sender's blobs numbered `from` to `to` (its own numbering, signed in every blob)
    /// have not arrived although a later one did, for longer than
    /// [`ClientOptions::missing_grace`](crate::ClientOptions::missing_grace), and the relay did
    /// not account for them as removed: it withheld or lost them, whatever its cursors say (or
    /// refused them for good, which the sender was told).
    MissingFromSender {
        /// The sender.
        sender: DeviceId,
        /// The first missing number.
        from: u64,
        /// The last missing number.
        to: u64,
        /// The cursor of the blob that revealed the gap.
        noticed_at: Cursor,
    },
}

impl IntegrityProblem {
    /// The cursor the problem was found at.
    pub fn cursor(&self) -> Cursor {
        match self {
            Self::Rejected { cursor, .. } | Self::Replayed { cursor, .. } => *cursor,
            Self::Withheld { from, .. } => *from,
            Self::MissingFromSender { noticed_at, .. } => *noticed_at,
        }
    }
}

impl fmt::Display for IntegrityProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected {
                cursor,
                blob_id,
                sender,
                error,
            } => write!(
                f,
                "blob #{cursor} ({blob_id}) from device {sender} failed verification ({error}); not delivered"
            ),
            Self::Replayed {
                cursor,
                blob_id,
                first_cursor,
            } => write!(
                f,
                "blob #{cursor} ({blob_id}) was already received as #{first_cursor}; the relay served it again; not delivered twice"
            ),
            Self::Withheld { from, to, .. } if from == to => write!(
                f,
                "the relay did not serve blob #{from} and did not say it expired or was deleted (withheld or lost)"
            ),
            Self::Withheld { from, to, count } => write!(
                f,
                "the relay did not serve {count} blob(s) between #{from} and #{to} and did not say they expired or were deleted (withheld or lost)"
            ),
            Self::MissingFromSender {
                sender,
                from,
                to,
                noticed_at,
            } if from == to => write!(
                f,
                "blob number {from} of device {sender} never arrived, though later ones did (from #{noticed_at} on): the relay withheld or lost it, or refused it"
            ),
            Self::MissingFromSender {
                sender,
                from,
                to,
                noticed_at,
            } => write!(
                f,
                "blobs number {from} to {to} of device {sender} never arrived, though later ones did (from #{noticed_at} on): the relay withheld or lost them, or refused them"
            ),
        }
    }
}
