//! The rules every backend applies the same way: what a push must respect (size, TTL, the
//! group's quotas, a sane cursor), how a retried push is told from a reused blob id, how a pull
//! page is cut and assembled, what an invite's lookup id and size may be and what taking one
//! does.

use sha2::{Digest, Sha256};
use sync_types::{BlobId, Cursor, DeviceId};

use super::{
    InviteLookup, PullEntry, PullPage, PushOutcome, PushRequest, QuotaKind, StorageError,
    StorageLimits, StorageStats,
};

/// Longest invite lookup id accepted, in bytes.
const MAX_LOOKUP_ID_BYTES: usize = 64;

/// Largest sealed invite accepted, in bytes.
const MAX_INVITE_BYTES: usize = 64 * 1024;

/// The SHA-256 of a sealed payload: what tells a retried push (same bytes) from a reused blob
/// id (other bytes).
pub(super) fn payload_digest(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// A blob id the group holds or remembers: its original cursor and store time, and the digest
/// of its payload.
#[derive(Debug, Clone, Copy)]
pub(super) struct Original {
    pub(super) cursor: i64,
    pub(super) stored_at: i64,
    pub(super) digest: [u8; 32],
}

impl Original {
    /// The answer to a push of this id with a payload of `digest`: the original (a retry), or
    /// [`StorageError::BlobConflict`] (other bytes under the same id).
    pub(super) fn answer(&self, digest: &[u8; 32]) -> Result<PushOutcome, StorageError> {
        if self.digest != *digest {
            return Err(StorageError::BlobConflict);
        }
        Ok(PushOutcome {
            cursor: Cursor::new(to_u64(self.cursor, "cursor")?),
            duplicate: true,
            stored_at_ms: to_u64(self.stored_at, "stored_at")?,
        })
    }
}

/// A group's counters as stored (signed: the databases' integer type).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct GroupCounts {
    /// The last cursor assigned.
    pub(super) last_cursor: i64,
    /// Blobs held.
    pub(super) blob_count: i64,
    /// Payload bytes held.
    pub(super) byte_count: i64,
}

/// The payload size as the databases store it (a payload in memory is far below `i64::MAX`
/// bytes).
pub(super) fn payload_size(req: &PushRequest) -> i64 {
    clamp_i64(u64::try_from(req.payload.len()).unwrap_or(u64::MAX))
}

/// A push's TTL in whole milliseconds (saturating).
pub(super) fn ttl_ms(req: &PushRequest) -> u64 {
    millis(req.ttl)
}

/// Every limit a new blob must respect: size, TTL, the group's quotas (`group`: its counters,
/// `None` for a group that holds nothing yet), and a sane cursor.
pub(super) fn check_push(
    req: &PushRequest,
    group: Option<GroupCounts>,
    limits: &StorageLimits,
) -> Result<(), StorageError> {
    let size = payload_size(req);
    let size_u = size.unsigned_abs();
    if size_u > limits.max_blob_bytes {
        return Err(quota(QuotaKind::BlobSize, limits.max_blob_bytes, size_u));
    }
    let ttl = ttl_ms(req);
    let max_ttl_ms = millis(limits.max_ttl);
    if ttl > max_ttl_ms {
        return Err(quota(QuotaKind::Ttl, max_ttl_ms, ttl));
    }
    let g = group.unwrap_or_default();
    let new_count = g.blob_count.saturating_add(1);
    if new_count.unsigned_abs() > limits.max_group_blobs {
        return Err(quota(
            QuotaKind::GroupBlobs,
            limits.max_group_blobs,
            new_count.unsigned_abs(),
        ));
    }
    let new_bytes = g.byte_count.saturating_add(size);
    let max_bytes = req
        .group_quota_bytes
        .map_or(limits.max_group_bytes, |q| q.min(limits.max_group_bytes));
    if new_bytes.unsigned_abs() > max_bytes {
        return Err(quota(
            QuotaKind::GroupBytes,
            max_bytes,
            new_bytes.unsigned_abs(),
        ));
    }
    if g.blob_count < 0 || g.byte_count < 0 || g.last_cursor < 0 {
        return Err(StorageError::Corrupt {
            what: "negative group counter".into(),
        });
    }
    if g.last_cursor == i64::MAX {
        return Err(StorageError::Corrupt {
            what: "group cursor space exhausted".into(),
        });
    }
    Ok(())
}

/// A stretch of cursors strictly between `lo` and `hi` that holds no blob, in a group whose
/// cursors at or below `forgotten` may be removals the relay no longer lists (forgotten
/// tombstones, or cursors never assigned to the group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gap {
    /// How many cursors the stretch has.
    pub(super) len: u64,
    /// How many of them are at or below `forgotten` (removals by definition).
    pub(super) forgotten: u64,
    /// Tombstones above this cursor (and below `hi`) are the stretch's other removals.
    pub(super) listed_from: u64,
}

impl Gap {
    /// The stretch between `lo` and `hi`; `None` when it is empty.
    pub(super) fn between(forgotten: u64, lo: u64, hi: u64) -> Option<Self> {
        let len = hi.saturating_sub(lo).saturating_sub(1);
        (len > 0).then(|| Self {
            len,
            forgotten: forgotten.min(hi.saturating_sub(1)).saturating_sub(lo),
            listed_from: lo.max(forgotten),
        })
    }

    /// How many of its cursors the relay removed or never assigned, given the tombstones
    /// counted in `(listed_from, hi)`.
    pub(super) fn removed(&self, listed: u64) -> u64 {
        self.forgotten.saturating_add(listed).min(self.len)
    }
}

/// How far a pull page reaches: at most `max_count` (at least one) blobs whose payloads add up
/// to at most `max_bytes`, the first blob whatever its size.
#[derive(Debug, Clone, Copy)]
pub(super) struct PageCut {
    max_count: u32,
    max_bytes: u64,
    count: u32,
    bytes: u64,
    has_more: bool,
}

impl PageCut {
    /// An empty page with these limits.
    pub(super) fn new(max_count: u32, max_bytes: u64) -> Self {
        Self {
            max_count: max_count.max(1),
            max_bytes,
            count: 0,
            bytes: 0,
            has_more: false,
        }
    }

    /// How many metadata rows to read: one beyond the count limit tells whether more follow.
    pub(super) fn rows_to_read(&self) -> i64 {
        i64::from(self.max_count) + 1
    }

    /// Takes the next blob, of `size` bytes, into the page; `false` when it does not fit (the
    /// page is full and more blobs follow it).
    pub(super) fn admit(&mut self, size: u64) -> bool {
        if self.count >= self.max_count
            || (self.count > 0 && self.bytes.saturating_add(size) > self.max_bytes)
        {
            self.has_more = true;
            return false;
        }
        self.count += 1;
        self.bytes = self.bytes.saturating_add(size);
        true
    }

    /// Whether a blob was left out for want of room.
    pub(super) fn has_more(&self) -> bool {
        self.has_more
    }
}

/// A blob of a pull page as its metadata row describes it (its payload is read once the page
/// is cut).
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryMeta {
    /// The blob's cursor.
    pub(super) cursor: Cursor,
    /// The blob's id.
    pub(super) blob_id: BlobId,
    /// The device that pushed it.
    pub(super) sender: DeviceId,
    /// The payload size the row records.
    pub(super) size: u64,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub(super) stored_at_ms: u64,
}

impl EntryMeta {
    /// Checks that `payload` has the size the row records.
    pub(super) fn check_payload(&self, payload: &[u8]) -> Result<(), StorageError> {
        if u64::try_from(payload.len()).ok() != Some(self.size) {
            return Err(StorageError::Corrupt {
                what: format!(
                    "blob at cursor {} has a payload of the wrong size",
                    self.cursor
                ),
            });
        }
        Ok(())
    }
}

/// A pull page being assembled, entry by entry in cursor order, after it was cut.
#[derive(Debug)]
pub(super) struct PageBuilder {
    entries: Vec<PullEntry>,
    last: u64,
    has_more: bool,
    max_cursor: Cursor,
}

impl PageBuilder {
    /// A page of the blobs after `after` (room for `capacity` entries), of a group whose last
    /// cursor is `max_cursor`.
    pub(super) fn new(after: Cursor, max_cursor: Cursor, cut: &PageCut, capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity),
            last: after.get(),
            has_more: cut.has_more(),
            max_cursor,
        }
    }

    /// Where the stretch before the next entry starts: the last entry's cursor, or the page's
    /// `after`.
    pub(super) fn last(&self) -> u64 {
        self.last
    }

    /// Adds the blob `meta` with its `payload` (checked with [`EntryMeta::check_payload`]),
    /// after `removed_before` removed cursors.
    pub(super) fn push(&mut self, meta: EntryMeta, payload: Vec<u8>, removed_before: u64) {
        self.last = meta.cursor.get();
        self.entries.push(PullEntry {
            cursor: meta.cursor,
            blob_id: meta.blob_id,
            sender: meta.sender,
            payload,
            stored_at_ms: meta.stored_at_ms,
            removed_before,
        });
    }

    /// The stretch `(lo, hi)` (both excluded) after the last entry whose removed cursors the
    /// page reports; `None` when more blobs follow or no cursor comes after the last entry.
    pub(super) fn tail(&self) -> Option<(u64, u64)> {
        (!self.has_more && self.max_cursor.get() > self.last)
            .then(|| (self.last, self.max_cursor.get().saturating_add(1)))
    }

    /// The page, with `removed_after` removed cursors in its [`PageBuilder::tail`].
    pub(super) fn finish(self, removed_after: u64) -> PullPage {
        PullPage {
            entries: self.entries,
            has_more: self.has_more,
            max_cursor: self.max_cursor,
            removed_after,
        }
    }
}

/// Names of totals counted over the groups' counters, for the errors of [`stats_of`].
pub(super) const COUNTED: [&str; 3] = ["group count", "blob count", "byte count"];

/// Totals as the databases store them (groups, blobs, bytes), none of which may be negative
/// (`what` names each in the error).
pub(super) fn stats_of(
    [groups, blobs, bytes]: [i64; 3],
    what: [&str; 3],
) -> Result<StorageStats, StorageError> {
    Ok(StorageStats {
        groups: to_u64(groups, what[0])?,
        blobs: to_u64(blobs, what[1])?,
        bytes: to_u64(bytes, what[2])?,
    })
}

/// What taking a stored invite does to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum InviteTake {
    /// The invite expired but has attempts left: count this one and keep the invite (it
    /// answers [`InviteLookup::Expired`] until cleanup removes it or its attempts run out).
    Count,
    /// Delete the invite and give this answer (delivered once, or out of attempts).
    Remove(InviteLookup),
}

impl InviteTake {
    /// The step for an invite holding `sealed`, expiring at `expires_at` and taken without
    /// success `attempts` times, taken at `now` with `max_attempts` allowed.
    pub(super) fn decide(
        sealed: Vec<u8>,
        expires_at: i64,
        attempts: i64,
        now: i64,
        max_attempts: u32,
    ) -> Self {
        let max = i64::from(max_attempts);
        if expires_at <= now {
            if attempts.saturating_add(1) >= max {
                Self::Remove(InviteLookup::TooManyAttempts)
            } else {
                Self::Count
            }
        } else if attempts >= max {
            Self::Remove(InviteLookup::TooManyAttempts)
        } else {
            Self::Remove(InviteLookup::Found(sealed))
        }
    }
}

/// Checks an invite's lookup id (1 ..= 64 bytes).
pub(super) fn check_lookup_id(lookup_id: &[u8]) -> Result<(), StorageError> {
    if lookup_id.is_empty() || lookup_id.len() > MAX_LOOKUP_ID_BYTES {
        return Err(StorageError::InvalidArgument {
            what: "invite lookup id must be 1..=64 bytes",
        });
    }
    Ok(())
}

/// Checks an invite's lookup id and its sealed size.
pub(super) fn check_invite(lookup_id: &[u8], sealed: &[u8]) -> Result<(), StorageError> {
    check_lookup_id(lookup_id)?;
    if sealed.len() > MAX_INVITE_BYTES {
        return Err(StorageError::InvalidArgument {
            what: "sealed invite is too large",
        });
    }
    Ok(())
}

/// A `u64` as the databases' signed integer (saturating).
pub(super) fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored integer that must not be negative.
pub(super) fn to_u64(v: i64, what: &str) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt {
        what: format!("negative {what}: {v}"),
    })
}

/// A duration in whole milliseconds (saturating).
pub(super) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The error for a push that would break `kind`.
pub(super) fn quota(kind: QuotaKind, limit: u64, requested: u64) -> StorageError {
    StorageError::QuotaExceeded {
        kind,
        limit,
        requested,
    }
}
