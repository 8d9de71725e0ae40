//! Pull-cursor tracking with gap detection.
//!
//! A device resumes pulling from the highest cursor up to which it has *everything*: every
//! cursor `1..=resume` was either pulled or is one of its own acknowledged pushes. Cursors seen
//! above that point (out-of-order pulls, own pushes acked while other devices' earlier blobs are
//! still unpulled) are remembered as ranges, so a gap is visible and the resume cursor never
//! skips a blob another device pushed earlier. Memory is bounded: ranges, not individual
//! cursors, and at most a fixed number of them.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use sync_types::Cursor;

/// Default cap on the number of disjoint ranges remembered above the resume cursor (per kind:
/// pulled, own).
pub const DEFAULT_MAX_RANGES: usize = 1024;

/// Most individual cursors [`CursorTracker::missing`] lists.
pub const MAX_MISSING_LISTED: usize = 1024;

/// Why a cursor could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// Recording it would need more disjoint ranges than allowed. Nothing was recorded; pull
    /// the missing cursors first (the blob will be pulled again later).
    #[error("too many gaps above the resume cursor (limit {max_ranges} ranges)")]
    TooManyGaps {
        /// The configured limit.
        max_ranges: usize,
    },
}

/// What recording a cursor changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recorded {
    /// The cursor is new to this device.
    New,
    /// The device already had it (at or below the resume cursor, pulled before, or its own
    /// push): do not deliver it to the app again.
    Duplicate,
}

/// Disjoint, non-adjacent inclusive ranges of `u64`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RangeSet {
    /// start → end (inclusive).
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    fn len(&self) -> usize {
        self.ranges.len()
    }

    fn contains(&self, x: u64) -> bool {
        self.ranges
            .range(..=x)
            .next_back()
            .is_some_and(|(_, &end)| end >= x)
    }

    /// Whether `[start, end]` overlaps or touches an existing range (so inserting it does not
    /// add a range).
    fn touches(&self, start: u64, end: u64) -> bool {
        self.ranges
            .range(..=end.saturating_add(1))
            .next_back()
            .is_some_and(|(_, &e)| e.saturating_add(1) >= start)
    }

    fn insert(&mut self, start: u64, end: u64) {
        let mut new_start = start;
        let mut new_end = end;
        let merged: Vec<(u64, u64)> = self
            .ranges
            .range(..=end.saturating_add(1))
            .rev()
            .take_while(|(_, e)| e.saturating_add(1) >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in merged {
            self.ranges.remove(&s);
            new_start = new_start.min(s);
            new_end = new_end.max(e);
        }
        self.ranges.insert(new_start, new_end);
    }

    /// Inserts `[start, end]`, refusing (and changing nothing) if that needs a new range while
    /// `max_ranges` are already held.
    fn insert_within(
        &mut self,
        start: u64,
        end: u64,
        max_ranges: usize,
    ) -> Result<(), CursorError> {
        if !self.touches(start, end) && self.len() >= max_ranges {
            return Err(CursorError::TooManyGaps { max_ranges });
        }
        self.insert(start, end);
        Ok(())
    }

    /// Drops every value `<= x`.
    fn remove_through(&mut self, x: u64) {
        let Some(first_kept) = x.checked_add(1) else {
            self.ranges.clear();
            return;
        };
        let mut rest = self.ranges.split_off(&first_kept);
        if let Some((_, &end)) = self.ranges.iter().next_back()
            && end >= first_kept
        {
            rest.insert(first_kept, end);
        }
        self.ranges = rest;
    }

    /// The range starting exactly at `x`, if any.
    fn end_of_range_starting_at(&self, x: u64) -> Option<u64> {
        self.ranges.get(&x).copied()
    }

    fn max(&self) -> Option<u64> {
        self.ranges.values().next_back().copied()
    }

    fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }
}

/// Tracks which cursors a device has, and the cursor it may safely resume pulling from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorTracker {
    /// Every cursor in `1..=resume` is pulled or own.
    resume: u64,
    /// Pulled cursors above `resume`.
    pulled: RangeSet,
    /// Own acknowledged pushes above `resume`.
    own: RangeSet,
    max_ranges: usize,
}

impl Default for CursorTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl CursorTracker {
    /// A tracker for a device that has nothing yet (resume cursor 0).
    pub fn new() -> Self {
        Self::starting_at(Cursor::ZERO)
    }

    /// A tracker resuming from a persisted cursor.
    pub fn starting_at(resume: Cursor) -> Self {
        Self {
            resume: resume.get(),
            pulled: RangeSet::default(),
            own: RangeSet::default(),
            max_ranges: DEFAULT_MAX_RANGES,
        }
    }

    /// Sets the cap on disjoint ranges remembered per kind (at least 1).
    pub fn with_max_ranges(mut self, max_ranges: usize) -> Self {
        self.max_ranges = max_ranges.max(1);
        self
    }

    /// The highest cursor up to which this device has everything: send it in `Hello` and pull
    /// after it. Persist it.
    pub fn resume_cursor(&self) -> Cursor {
        Cursor::new(self.resume)
    }

    /// The highest cursor recorded (pulled or own), or the resume cursor if none is above it.
    pub fn highest_seen(&self) -> Cursor {
        let top = [self.pulled.max(), self.own.max()]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(self.resume);
        Cursor::new(top.max(self.resume))
    }

    /// Records one pulled blob.
    pub fn received(&mut self, cursor: Cursor) -> Result<Recorded, CursorError> {
        let c = cursor.get();
        if self.has(c) {
            return Ok(Recorded::Duplicate);
        }
        self.insert_pulled(c, c)?;
        Ok(Recorded::New)
    }

    /// Records a pull page: the relay returned every blob it still holds in `(after, through]`
    /// (blobs that expired or were deleted leave holes that will never fill, so individual
    /// [`received`](Self::received) calls alone could stall the resume cursor). Does nothing if
    /// `through <= after`.
    pub fn received_range(&mut self, after: Cursor, through: Cursor) -> Result<(), CursorError> {
        let Some(start) = after.get().checked_add(1) else {
            return Ok(());
        };
        let start = start.max(self.resume.saturating_add(1));
        let end = through.get();
        if end < start {
            return Ok(());
        }
        self.insert_pulled(start, end)
    }

    /// Records one of this device's own pushes, acknowledged by the relay at `cursor`. It fills
    /// its own slot but never moves the resume cursor past cursors not yet pulled.
    pub fn own_push_acked(&mut self, cursor: Cursor) -> Result<Recorded, CursorError> {
        let c = cursor.get();
        if self.has(c) {
            return Ok(Recorded::Duplicate);
        }
        self.own.insert_within(c, c, self.max_ranges)?;
        self.advance();
        Ok(Recorded::New)
    }

    /// Whether `cursor` is one of this device's own pushes that is not yet below the resume
    /// cursor (a pull may skip delivering it to the app).
    pub fn is_own(&self, cursor: Cursor) -> bool {
        self.own.contains(cursor.get())
    }

    /// The missing cursors as inclusive ranges, in order.
    fn missing_ranges(&self) -> Vec<RangeInclusive<Cursor>> {
        let mut covered: Vec<(u64, u64)> = self.pulled.iter().chain(self.own.iter()).collect();
        covered.sort_unstable();
        let mut gaps = Vec::new();
        let mut next = self.resume.saturating_add(1);
        for (start, end) in covered {
            if start > next {
                gaps.push(Cursor::new(next)..=Cursor::new(start.saturating_sub(1)));
            }
            next = next.max(end.saturating_add(1));
        }
        gaps
    }

    /// How many cursors are missing in total (saturating).
    pub fn missing_count(&self) -> u64 {
        self.missing_ranges()
            .iter()
            .map(|r| {
                r.end()
                    .get()
                    .saturating_sub(r.start().get())
                    .saturating_add(1)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// The first [`MAX_MISSING_LISTED`] missing cursors, in order (see
    /// [`missing_count`](Self::missing_count) for how many there are in all).
    pub fn missing(&self) -> Vec<Cursor> {
        let mut out = Vec::new();
        for range in self.missing_ranges() {
            for c in range.start().get()..=range.end().get() {
                if out.len() >= MAX_MISSING_LISTED {
                    return out;
                }
                out.push(Cursor::new(c));
            }
        }
        out
    }

    fn has(&self, c: u64) -> bool {
        c <= self.resume || self.pulled.contains(c) || self.own.contains(c)
    }

    fn insert_pulled(&mut self, start: u64, end: u64) -> Result<(), CursorError> {
        self.pulled.insert_within(start, end, self.max_ranges)?;
        self.advance();
        Ok(())
    }

    /// Moves the resume cursor over every contiguous covered cursor and forgets what is below it.
    fn advance(&mut self) {
        while let Some(next) = self.resume.checked_add(1) {
            let end = match (
                self.pulled.end_of_range_starting_at(next),
                self.own.end_of_range_starting_at(next),
            ) {
                (Some(a), Some(b)) => a.max(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            self.resume = end;
            self.pulled.remove_through(end);
            self.own.remove_through(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn c(v: u64) -> Cursor {
        Cursor::new(v)
    }

    /// A fresh tracker that pulled `cursors`, in this order.
    fn pulled(cursors: &[u64]) -> CursorTracker {
        let mut t = CursorTracker::new();
        for &v in cursors {
            t.received(c(v)).expect("ok");
        }
        t
    }

    #[test]
    fn starts_at_zero_without_gaps() {
        let t = CursorTracker::new();
        assert_eq!(t.resume_cursor(), Cursor::ZERO);
        assert_eq!(t.highest_seen(), Cursor::ZERO);
        assert_eq!(t.missing_count(), 0);
        assert!(t.missing().is_empty());
    }

    #[test]
    fn contiguous_pulls_advance_the_resume_cursor() {
        let mut t = CursorTracker::new();
        for v in 1..=5 {
            assert_eq!(t.received(c(v)), Ok(Recorded::New));
        }
        assert_eq!(t.resume_cursor(), c(5));
        assert_eq!(t.missing_count(), 0);
    }

    #[test]
    fn detects_gaps() {
        let t = pulled(&[1, 2, 5]);
        assert!(t.missing_count() > 0);
        assert_eq!(t.missing(), vec![c(3), c(4)]);
        assert_eq!(t.resume_cursor(), c(2));
        assert_eq!(t.highest_seen(), c(5));
    }

    #[test]
    fn out_of_order_pulls_fill_gaps() {
        let mut t = pulled(&[5, 3, 7]);
        assert_eq!(t.highest_seen(), c(7));
        assert_eq!(t.resume_cursor(), Cursor::ZERO);
        assert_eq!(t.missing(), vec![c(1), c(2), c(4), c(6)]);
        for v in [1, 2, 4, 6] {
            t.received(c(v)).expect("ok");
        }
        assert_eq!(t.resume_cursor(), c(7));
        assert_eq!(t.missing_count(), 0);
    }

    #[test]
    fn duplicates_are_reported() {
        let mut t = CursorTracker::starting_at(c(10));
        assert_eq!(t.received(c(3)), Ok(Recorded::Duplicate));
        assert_eq!(t.received(c(12)), Ok(Recorded::New));
        assert_eq!(t.received(c(12)), Ok(Recorded::Duplicate));
        assert_eq!(t.received(Cursor::ZERO), Ok(Recorded::Duplicate));
    }

    #[test]
    fn own_push_never_skips_unpulled_blobs_of_others() {
        // Device pulled up to 4. Another device pushed 5..=9, then our push was acked at 10.
        let mut t = CursorTracker::starting_at(c(4));
        assert_eq!(t.own_push_acked(c(10)), Ok(Recorded::New));
        assert_eq!(t.resume_cursor(), c(4), "must not jump over 5..=9");
        assert_eq!(t.missing_ranges(), vec![c(5)..=c(9)]);
        assert!(t.is_own(c(10)));
        // Pulling 5..=9 closes the gap; our own blob at 10 need not be pulled.
        for v in 5..=9 {
            t.received(c(v)).expect("ok");
        }
        assert_eq!(t.resume_cursor(), c(10));
        assert_eq!(t.missing_count(), 0);
        // The pull may well return our own blob too: it is a duplicate.
        assert_eq!(t.received(c(10)), Ok(Recorded::Duplicate));
    }

    #[test]
    fn own_push_right_after_resume_advances() {
        let mut t = CursorTracker::starting_at(c(4));
        t.own_push_acked(c(5)).expect("ok");
        assert_eq!(t.resume_cursor(), c(5));
        assert_eq!(t.own_push_acked(c(5)), Ok(Recorded::Duplicate));
        assert!(!t.is_own(c(5)), "forgotten once below the resume cursor");
    }

    #[test]
    fn pulled_and_own_interleave() {
        let mut t = CursorTracker::new();
        t.own_push_acked(c(2)).expect("ok");
        t.received(c(4)).expect("ok");
        t.own_push_acked(c(5)).expect("ok");
        assert_eq!(t.missing(), vec![c(1), c(3)]);
        t.received(c(1)).expect("ok");
        assert_eq!(t.resume_cursor(), c(2));
        t.received(c(3)).expect("ok");
        assert_eq!(t.resume_cursor(), c(5));
    }

    #[test]
    fn pull_page_covers_expired_holes() {
        let mut t = CursorTracker::starting_at(c(2));
        // The relay returned 3, 6, 7 for "after 2"; 4 and 5 expired. The page covers (2, 7].
        t.received_range(c(2), c(7)).expect("ok");
        assert_eq!(t.resume_cursor(), c(7));
        // An empty or backwards page changes nothing.
        t.received_range(c(7), c(7)).expect("ok");
        t.received_range(c(9), c(8)).expect("ok");
        assert_eq!(t.resume_cursor(), c(7));
        // A page that does not connect leaves a visible gap.
        t.received_range(c(10), c(12)).expect("ok");
        assert_eq!(t.missing_ranges(), vec![c(8)..=c(10)]);
    }

    #[test]
    fn huge_jump_is_one_range_not_a_billion_entries() {
        let mut t = CursorTracker::new();
        t.received(c(1)).expect("ok");
        t.received(c(u64::MAX)).expect("ok");
        assert_eq!(t.missing_ranges(), vec![c(2)..=c(u64::MAX - 1)]);
        assert_eq!(t.missing_count(), u64::MAX - 2);
        assert_eq!(t.missing().len(), MAX_MISSING_LISTED);
        assert_eq!(t.missing()[0], c(2));
        t.received_range(c(1), c(u64::MAX)).expect("ok");
        assert_eq!(t.resume_cursor(), c(u64::MAX));
        // At the very top nothing overflows.
        assert_eq!(t.received(c(u64::MAX)), Ok(Recorded::Duplicate));
        t.received_range(c(u64::MAX), c(u64::MAX)).expect("ok");
    }

    #[test]
    fn too_many_gaps_is_a_typed_error() {
        let mut t = CursorTracker::new().with_max_ranges(3);
        for v in [2, 4, 6] {
            t.received(c(v)).expect("ok");
        }
        assert_eq!(
            t.received(c(8)),
            Err(CursorError::TooManyGaps { max_ranges: 3 })
        );
        // Extending or merging existing ranges still works.
        t.received(c(7)).expect("adjacent to 6");
        t.received(c(3)).expect("merges 2 and 4");
        t.received(c(8)).expect("adjacent to 7");
        t.received(c(1)).expect("closes the first gap");
        assert_eq!(t.resume_cursor(), c(4));
        t.received(c(5)).expect("closes the last gap");
        assert_eq!(t.resume_cursor(), c(8));
        for v in [10, 12, 14] {
            t.own_push_acked(c(v)).expect("ok");
        }
        assert_eq!(
            t.own_push_acked(c(16)),
            Err(CursorError::TooManyGaps { max_ranges: 3 })
        );
    }

    proptest! {
        /// The tracker agrees with a naive set model for any order of pulls, pages and own acks.
        #[test]
        fn matches_naive_model(
            ops in proptest::collection::vec((0u64..40, 0u8..3, 0u64..6), 0..80)
        ) {
            let mut t = CursorTracker::new();
            let mut have = BTreeSet::new();
            for (v, kind, len) in ops {
                match kind {
                    0 | 1 => {
                        let expected_dup = v == 0 || have.contains(&v);
                        let got = if kind == 1 { t.own_push_acked(c(v)) } else { t.received(c(v)) };
                        let want = if expected_dup { Recorded::Duplicate } else { Recorded::New };
                        prop_assert_eq!(got, Ok(want));
                        if v > 0 {
                            have.insert(v);
                        }
                    }
                    _ => {
                        t.received_range(c(v), c(v + len)).expect("few ranges");
                        have.extend(v + 1..=v + len);
                    }
                }
                let mut resume = 0;
                while have.contains(&(resume + 1)) {
                    resume += 1;
                }
                prop_assert_eq!(t.resume_cursor(), c(resume));
                let top = have.iter().next_back().copied().unwrap_or(0);
                let missing: Vec<Cursor> =
                    (resume + 1..=top).filter(|x| !have.contains(x)).map(c).collect();
                prop_assert_eq!(t.missing_count() > 0, top > resume);
                prop_assert_eq!(t.missing(), missing.clone());
                prop_assert_eq!(t.missing_count(), missing.len() as u64);
                prop_assert_eq!(t.highest_seen(), c(top));
            }
        }
    }
}
