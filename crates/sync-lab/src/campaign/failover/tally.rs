//! The failover phase's messages and what became of them, counted by pure functions: which
//! messages the reader received (once, twice or never), how long each took, and the
//! interruption of acknowledgements around the relay's kill.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::campaign::tagged;
use crate::report::Point;

const PREFIX: &str = "FO:";

/// The text of message `seq` of pusher `pusher` (a small blob: a few dozen bytes).
pub(super) fn message_text(pusher: usize, seq: u32) -> String {
    tagged::text(PREFIX, pusher, seq, "failover")
}

/// `(pusher, seq)` of a message text; `None` for anything else.
pub(super) fn parse_message(data: &[u8]) -> Option<(usize, u32)> {
    tagged::parse(PREFIX, data)
}

/// A message a pusher queued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Pushed {
    /// When its push began.
    pub(super) at: Instant,
    /// The same, in seconds since the campaign started.
    pub(super) at_s: f64,
}

/// What the reader got of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Got {
    /// When it first received it (pulled, verified and opened).
    pub(super) first: Instant,
    /// How many times it received it.
    pub(super) copies: u32,
}

/// The messages counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Counted {
    /// Messages pushed.
    pub(super) messages: u64,
    /// Of those, the ones the reader received.
    pub(super) delivered: u64,
    /// The ones it never received.
    pub(super) lost: u64,
    /// Extra copies it received (a message read twice counts one).
    pub(super) duplicated: u64,
    /// Blobs it received that no pusher of this run pushed.
    pub(super) foreign: u64,
    /// For each message delivered: from its push to the reader having it.
    pub(super) latencies_ms: Vec<f64>,
    /// One chart point per message pushed, in push order (no RTT: never received).
    pub(super) points: Vec<Point>,
}

/// Counts the `pushed` messages against what the reader `got`.
pub(super) fn count(
    pushed: &HashMap<(usize, u32), Pushed>,
    got: &HashMap<(usize, u32), Got>,
) -> Counted {
    let mut c = Counted {
        messages: pushed.len() as u64,
        ..Counted::default()
    };
    for (key, g) in got {
        if pushed.contains_key(key) {
            c.duplicated += u64::from(g.copies.saturating_sub(1));
        } else {
            c.foreign += 1;
        }
    }
    let mut order: Vec<(&(usize, u32), &Pushed)> = pushed.iter().collect();
    order.sort_by(|a, b| a.1.at_s.total_cmp(&b.1.at_s));
    for (key, p) in order {
        let rtt_ms = got
            .get(key)
            .map(|g| g.first.saturating_duration_since(p.at).as_secs_f64() * 1000.0);
        match rtt_ms {
            Some(ms) => {
                c.delivered += 1;
                c.latencies_ms.push(ms);
            }
            None => c.lost += 1,
        }
        c.points.push(Point {
            sent_s: p.at_s,
            rtt_ms,
        });
    }
    c
}

/// The interruption of acknowledgements: from the last ack before `split` (the first session
/// on the next relay; acks between the kill and then can only come from the killed relay,
/// read late) to the first ack after it. `None` when nothing was acknowledged after `split`;
/// without an ack before it, the interruption runs from `kill`.
pub(super) fn interruption(acks: &[Instant], kill: Instant, split: Instant) -> Option<Duration> {
    let first_after = acks.iter().filter(|a| **a > split).min()?;
    let last_before = acks
        .iter()
        .filter(|a| **a <= split)
        .max()
        .copied()
        .unwrap_or(kill);
    Some(first_after.saturating_duration_since(last_before))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn message_texts_round_trip_and_other_texts_are_not_messages() {
        let text = message_text(1, 42);
        assert_eq!(parse_message(text.as_bytes()), Some((1, 42)));
        for other in [&b"FO:1:42"[..], b"GRP:1:2:x", b"FO:x:1:a", b"\xff"] {
            assert_eq!(parse_message(other), None, "{other:?}");
        }
    }

    #[test]
    fn every_message_pushed_is_received_once_lost_or_duplicated() {
        let base = Instant::now();
        let pushed: HashMap<(usize, u32), Pushed> =
            [((0, 1), 0), ((0, 2), 100), ((1, 1), 50), ((1, 2), 150)]
                .into_iter()
                .map(|(k, at)| {
                    #[allow(clippy::cast_precision_loss)]
                    let at_s = at as f64 / 1000.0;
                    (
                        k,
                        Pushed {
                            at: ms(base, at),
                            at_s,
                        },
                    )
                })
                .collect();
        let got: HashMap<(usize, u32), Got> = [
            ((0, 1), 10, 1),
            ((1, 1), 6_050, 3),
            ((0, 2), 6_100, 1),
            ((7, 7), 1, 1),
        ]
        .into_iter()
        .map(|(k, at, copies)| {
            (
                k,
                Got {
                    first: ms(base, at),
                    copies,
                },
            )
        })
        .collect();
        let c = count(&pushed, &got);
        assert_eq!(
            (c.messages, c.delivered, c.lost, c.duplicated, c.foreign),
            (4, 3, 1, 2, 1)
        );
        assert_eq!(c.latencies_ms, [10.0, 6_000.0, 6_000.0]);
        let rtts: Vec<Option<f64>> = c.points.iter().map(|p| p.rtt_ms).collect();
        assert_eq!(rtts, [Some(10.0), Some(6_000.0), Some(6_000.0), None]);
    }

    #[test]
    fn the_interruption_runs_from_the_last_ack_on_the_killed_relay_to_the_first_on_the_next() {
        let base = Instant::now();
        let kill = ms(base, 1_000);
        let split = ms(base, 7_000);
        // Acks at 900 and 950; one read late at 1,002 (sent before the kill); the next relay's
        // from 7,010.
        let acks = [900, 1_002, 950, 7_030, 7_010].map(|n| ms(base, n));
        assert_eq!(
            interruption(&acks, kill, split),
            Some(Duration::from_millis(7_010 - 1_002))
        );
        assert_eq!(interruption(&acks[..3], kill, split), None, "never resumed");
        assert_eq!(
            interruption(&acks[3..], kill, split),
            Some(Duration::from_millis(6_010)),
            "from the kill when nothing was acknowledged before"
        );
    }
}
