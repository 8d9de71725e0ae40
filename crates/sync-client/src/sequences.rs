//! Every sender numbers its blobs (1, 2, 3, … per group, inside the signed part of the sealed
//! blob), so a receiving device can tell that one of a sender's blobs never reached it whatever
//! the relay says about its cursors: a relay that drops a push and hands its cursor to the next
//! blob leaves no hole in the log, but leaves one in the sender's numbering.
//!
//! A run of numbers that has not arrived is a gap. A gap may close (pushes can reach the relay
//! out of order when it defers one), may be explained (between the sender's previous blob and
//! this one the log has at least as many holes as the gap holds, and the relay said it removed
//! that many: expired or deleted), or stays open. One that stays open past a grace period is
//! reported once, as [`IntegrityProblem::MissingFromSender`].

use std::collections::{HashMap, HashSet};

use sync_types::{Cursor, DeviceId};

use crate::integrity::IntegrityProblem;
use crate::store::{SenderSeq, SeqGap};

/// Most gaps remembered per sender: beyond it the oldest are reported at once and forgotten.
const MAX_GAPS: usize = 256;

/// What this device knows of the other devices' numbering, as far as it was loaded.
#[derive(Debug, Default)]
pub(crate) struct Sequences {
    known: HashMap<DeviceId, SenderSeq>,
    /// Changed since the last save.
    dirty: HashSet<DeviceId>,
    /// Gaps pushed out by [`MAX_GAPS`], to report with the next [`Sequences::due`].
    overflow: Vec<IntegrityProblem>,
}

impl Sequences {
    /// Notes blob number `seq` from `sender`, received at `cursor`. `holes` is how many cursors
    /// between the sender's previous blob (as far as the pull saw) and this one held nothing;
    /// `removed` how many blobs the relay said it removed in the stretch being pulled that no gap
    /// used yet. A new gap no larger than both is taken as expired or deleted blobs, and uses
    /// the removals up. `load` gives what the store knows of `sender` the first time it is seen
    /// here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn note(
        &mut self,
        sender: DeviceId,
        seq: u64,
        cursor: Cursor,
        now_ms: u64,
        holes: u64,
        removed: &mut u64,
        load: impl FnOnce() -> Option<SenderSeq>,
    ) {
        let state = self.known.entry(sender).or_insert_with(|| {
            load().unwrap_or(SenderSeq {
                device: sender,
                high: 0,
                gaps: Vec::new(),
            })
        });
        if state.high == 0 {
            // The first blob seen from this sender: earlier ones may predate this device.
            state.high = seq;
        } else if seq > state.high {
            let missing = seq - state.high - 1;
            if missing > 0 && missing <= *removed && missing <= holes {
                *removed -= missing;
            } else if missing > 0 {
                state.gaps.push(SeqGap {
                    from: state.high + 1,
                    to: seq - 1,
                    noticed_ms: now_ms,
                    noticed_at: cursor,
                    reported: false,
                });
            }
            state.high = seq;
        } else if let Some(i) = state.gaps.iter().position(|g| g.from <= seq && seq <= g.to) {
            // Late, not lost.
            let gap = state.gaps.remove(i);
            if seq < gap.to {
                state.gaps.insert(
                    i,
                    SeqGap {
                        from: seq + 1,
                        ..gap
                    },
                );
            }
            if seq > gap.from {
                state.gaps.insert(i, SeqGap { to: seq - 1, ..gap });
            }
        } else {
            // Already seen (a blob delivered again after the relay lost its place).
            return;
        }
        while state.gaps.len() > MAX_GAPS {
            let gap = state.gaps.remove(0);
            if !gap.reported {
                self.overflow.push(missing(sender, &gap));
            }
        }
        self.dirty.insert(sender);
    }

    /// The gaps open for at least `grace_ms`, reported now (each once).
    pub(crate) fn due(&mut self, now_ms: u64, grace_ms: u64) -> Vec<IntegrityProblem> {
        let mut out = std::mem::take(&mut self.overflow);
        for (sender, state) in &mut self.known {
            for gap in &mut state.gaps {
                if !gap.reported && gap.noticed_ms.saturating_add(grace_ms) <= now_ms {
                    gap.reported = true;
                    out.push(missing(*sender, gap));
                    self.dirty.insert(*sender);
                }
            }
        }
        out.sort_by_key(IntegrityProblem::cursor);
        out
    }

    /// What changed since the last save.
    pub(crate) fn changed(&self) -> Vec<SenderSeq> {
        self.dirty
            .iter()
            .filter_map(|d| self.known.get(d).cloned())
            .collect()
    }

    /// The changes were saved.
    pub(crate) fn saved(&mut self) {
        self.dirty.clear();
    }
}

fn missing(sender: DeviceId, gap: &SeqGap) -> IntegrityProblem {
    IntegrityProblem::MissingFromSender {
        sender,
        from: gap.from,
        to: gap.to,
        noticed_at: gap.noticed_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: DeviceId = DeviceId::from_bytes([1; 32]);
    /// Enough holes in the log to explain any gap (the removals decide).
    const HOLES: u64 = u64::MAX;

    fn feed(seqs: &mut Sequences, numbers: &[u64], removed: &mut u64) {
        for (i, n) in numbers.iter().enumerate() {
            seqs.note(
                S,
                *n,
                Cursor::new(i as u64 + 1),
                1_000,
                HOLES,
                removed,
                || None,
            );
        }
    }

    fn runs(problems: &[IntegrityProblem]) -> Vec<(u64, u64)> {
        problems
            .iter()
            .map(|p| match p {
                IntegrityProblem::MissingFromSender { from, to, .. } => (*from, *to),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_jump_is_reported_once_after_the_grace_period() {
        let mut seqs = Sequences::default();
        feed(&mut seqs, &[3, 4, 7, 8, 12], &mut 0);
        assert!(seqs.due(1_000 + 59_999, 60_000).is_empty(), "not yet");
        assert_eq!(runs(&seqs.due(61_000, 60_000)), vec![(5, 6), (9, 11)]);
        assert!(seqs.due(999_000, 60_000).is_empty(), "reported once");
    }

    #[test]
    fn late_blobs_close_their_gap() {
        let mut seqs = Sequences::default();
        feed(&mut seqs, &[1, 2, 6, 4, 3], &mut 0);
        assert_eq!(runs(&seqs.due(u64::MAX, 0)), vec![(5, 5)]);
    }

    #[test]
    fn removals_the_relay_declared_explain_a_gap_of_their_size() {
        let mut seqs = Sequences::default();
        let mut removed = 2;
        feed(&mut seqs, &[1, 4, 8], &mut removed);
        assert_eq!(removed, 0, "the first gap used both");
        assert_eq!(runs(&seqs.due(u64::MAX, 0)), vec![(5, 7)]);
    }

    #[test]
    fn removals_elsewhere_in_the_log_explain_nothing() {
        let mut seqs = Sequences::default();
        let mut removed = 5;
        seqs.note(S, 1, Cursor::new(1), 0, 0, &mut removed, || None);
        // No hole between the sender's blobs: the relay's removals were somewhere else.
        seqs.note(S, 3, Cursor::new(2), 0, 0, &mut removed, || None);
        assert_eq!(removed, 5);
        assert_eq!(runs(&seqs.due(u64::MAX, 0)), vec![(2, 2)]);
    }

    #[test]
    fn the_first_blob_seen_and_repeats_are_no_gap() {
        let mut seqs = Sequences::default();
        feed(&mut seqs, &[40, 41, 41, 40, 42], &mut 0);
        assert!(seqs.due(u64::MAX, 0).is_empty());
    }

    #[test]
    fn what_the_store_knew_is_the_starting_point_and_changes_are_saved() {
        let mut seqs = Sequences::default();
        let stored = SenderSeq {
            device: S,
            high: 10,
            gaps: Vec::new(),
        };
        seqs.note(S, 13, Cursor::new(5), 0, HOLES, &mut 0, || Some(stored));
        let changed = seqs.changed();
        assert_eq!(changed.len(), 1);
        assert_eq!((changed[0].high, changed[0].gaps.len()), (13, 1));
        seqs.saved();
        assert!(seqs.changed().is_empty());
        assert_eq!(runs(&seqs.due(u64::MAX, 0)), vec![(11, 12)]);
        assert_eq!(seqs.changed().len(), 1, "reporting is a change too");
    }

    #[test]
    fn gaps_beyond_the_bound_are_reported_at_once() {
        let mut seqs = Sequences::default();
        let numbers: Vec<u64> = (0..=(MAX_GAPS as u64 + 5)).map(|i| 1 + 2 * i).collect();
        feed(&mut seqs, &numbers, &mut 0);
        assert_eq!(seqs.known[&S].gaps.len(), MAX_GAPS);
        let early = seqs.due(0, u64::MAX);
        assert_eq!(runs(&early)[..2], [(2, 2), (4, 4)]);
        assert_eq!(early.len(), 5);
    }
}
