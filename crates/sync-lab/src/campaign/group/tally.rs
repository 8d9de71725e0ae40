//! The group phase's messages and what became of them, counted by pure functions: which
//! messages every other remaining member had to receive, which arrived, how long the last
//! delivery took, and what the revoked device read after its revocation.

use std::time::Instant;

use crate::campaign::tagged;
use crate::report::Point;

/// The text of message `seq` of device `sender`, padded with `pad` (so lengths vary).
pub(super) fn message_text(sender: usize, seq: u32, pad: &str) -> String {
    tagged::text(PREFIX, sender, seq, pad)
}

/// `(sender, seq)` of a message text; `None` for anything else.
pub(super) fn parse_message(data: &[u8]) -> Option<(usize, u32)> {
    tagged::parse(PREFIX, data)
}

const PREFIX: &str = "GRP:";

/// What the relay answered to a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ack {
    /// Not answered yet.
    Pending,
    /// Acknowledged: durable on the relay.
    Acked,
    /// Not acknowledged, still in the sender's outbox (sent later).
    Queued,
    /// Refused for good, or failed locally: never sent.
    Failed(String),
}

/// One message of the phase.
#[derive(Debug, Clone)]
pub(super) struct Msg {
    /// The device that pushed it.
    pub(super) sender: usize,
    /// When its push began (it was sealed then).
    pub(super) pushed: Instant,
    /// The same, in seconds since the campaign started.
    pub(super) pushed_s: f64,
    /// The relay's answer.
    pub(super) ack: Ack,
    /// When each device first received it (pulled, verified and opened).
    pub(super) got: Vec<Option<Instant>>,
}

impl Msg {
    /// A message pushed now by `sender`, in a group of `devices`.
    pub(super) fn new(sender: usize, pushed: Instant, pushed_s: f64, devices: usize) -> Self {
        Self {
            sender,
            pushed,
            pushed_s,
            ack: Ack::Pending,
            got: vec![None; devices],
        }
    }
}

/// The messages counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Tally {
    /// Messages every other remaining member had to receive: all of the remaining members',
    /// and those of the revoked device that the relay acknowledged.
    pub(super) messages: u64,
    /// Of those, the ones every other remaining member received.
    pub(super) delivered: u64,
    /// Deliveries due: each message times each other remaining member.
    pub(super) deliveries_due: u64,
    /// Deliveries made, of those due.
    pub(super) deliveries: u64,
    /// Messages due and not delivered that the relay never acknowledged (still in their
    /// sender's outbox, or refused).
    pub(super) lost_unacked: u64,
    /// For each message delivered: from its push to the last remaining member receiving it.
    pub(super) latencies_ms: Vec<f64>,
    /// The message delivered last after its push: (milliseconds, sender, pushed at, seconds
    /// since the campaign started).
    pub(super) slowest: Option<(f64, usize, f64)>,
    /// One chart point per message due (no RTT: not delivered to every remaining member).
    pub(super) points: Vec<Point>,
    /// Messages of the revoked device the relay did not acknowledge (not due anywhere).
    pub(super) revoked_unacked: u64,
    /// Messages sealed after the revocation (pushed after `revoke()` returned) that the
    /// revoked device obtained.
    pub(super) revoked_reads: u64,
}

/// Counts `msgs` of a group of `devices` in which `revoked` was revoked (its `revoke()`
/// returned at `revoked_at`; `None`: the revocation never went through).
pub(super) fn tally<'a>(
    msgs: impl IntoIterator<Item = &'a Msg>,
    devices: usize,
    revoked: usize,
    revoked_at: Option<Instant>,
) -> Tally {
    let mut t = Tally::default();
    for m in msgs {
        if let Some(at) = revoked_at
            && m.pushed > at
            && m.got.get(revoked).is_some_and(Option::is_some)
        {
            t.revoked_reads += 1;
        }
        if m.sender == revoked && m.ack != Ack::Acked {
            t.revoked_unacked += 1;
            continue;
        }
        t.messages += 1;
        let mut last = Some(0.0f64);
        for d in (0..devices).filter(|d| *d != revoked && *d != m.sender) {
            t.deliveries_due += 1;
            match m.got.get(d).copied().flatten() {
                Some(at) => {
                    t.deliveries += 1;
                    let ms = at.saturating_duration_since(m.pushed).as_secs_f64() * 1000.0;
                    last = last.map(|l| l.max(ms));
                }
                None => last = None,
            }
        }
        match last {
            Some(ms) => {
                t.delivered += 1;
                t.latencies_ms.push(ms);
                if t.slowest.is_none_or(|(worst, _, _)| ms > worst) {
                    t.slowest = Some((ms, m.sender, m.pushed_s));
                }
            }
            None if m.ack != Ack::Acked => t.lost_unacked += 1,
            None => {}
        }
        t.points.push(Point {
            sent_s: m.pushed_s,
            rtt_ms: last,
        });
    }
    t.points.sort_by(|a, b| a.sent_s.total_cmp(&b.sent_s));
    t
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    /// A message of `sender` pushed at `at` ms, with `ack`, received by `got` (device, ms).
    fn msg(base: Instant, sender: usize, at: u64, ack: Ack, got: &[(usize, u64)]) -> Msg {
        #[allow(clippy::cast_precision_loss)]
        let mut m = Msg::new(sender, ms(base, at), at as f64 / 1000.0, 4);
        m.ack = ack;
        for &(d, t) in got {
            m.got[d] = Some(ms(base, t));
        }
        m
    }

    #[test]
    fn message_texts_round_trip_and_other_texts_are_not_messages() {
        let text = message_text(3, 17, "ab01");
        assert_eq!(text, "GRP:3:17:ab01");
        assert_eq!(parse_message(text.as_bytes()), Some((3, 17)));
        assert_eq!(parse_message(b"GRP:3:17:"), Some((3, 17)));
        for other in [&b"GRP:3:17"[..], b"PING:1", b"GRP:x:1:a", b"\xff"] {
            assert_eq!(parse_message(other), None, "{other:?}");
        }
    }

    #[test]
    fn every_remaining_member_must_receive_each_message_due() {
        // Four devices, device 3 revoked (at 1000 ms).
        let base = Instant::now();
        let revoked_at = Some(ms(base, 1000));
        let msgs = [
            // Admin's message: received by 1 and 2 (and 3, before its revocation).
            msg(base, 0, 10, Ack::Acked, &[(1, 20), (2, 35), (3, 15)]),
            // Device 1's message, queued when the phase ended, received by 0 only: lost.
            msg(base, 1, 500, Ack::Queued, &[(0, 520)]),
            // The revoked device's acknowledged message: due at 0, 1 and 2.
            msg(base, 3, 900, Ack::Acked, &[(0, 905), (1, 910), (2, 950)]),
            // Its message the relay never acknowledged: not due.
            msg(base, 3, 990, Ack::Failed("offline".into()), &[]),
            // Device 2's message after the revocation, which the revoked device read.
            msg(
                base,
                2,
                1500,
                Ack::Acked,
                &[(0, 1510), (1, 1520), (3, 1600)],
            ),
        ];
        let t = tally(&msgs, 4, 3, revoked_at);
        assert_eq!(t.messages, 4);
        assert_eq!(t.delivered, 3);
        assert_eq!(
            (t.deliveries, t.deliveries_due),
            (2 + 1 + 3 + 2, 2 + 2 + 3 + 2)
        );
        assert_eq!(t.latencies_ms, [25.0, 50.0, 20.0]);
        assert_eq!(t.lost_unacked, 1, "device 1's message was still queued");
        assert_eq!(t.slowest, Some((50.0, 3, 0.9)));
        assert_eq!(t.revoked_unacked, 1);
        assert_eq!(t.revoked_reads, 1);
        let rtts: Vec<Option<f64>> = t.points.iter().map(|p| p.rtt_ms).collect();
        assert_eq!(rtts, [Some(25.0), None, Some(50.0), Some(20.0)]);
        assert!(t.points.windows(2).all(|w| w[0].sent_s <= w[1].sent_s));
    }

    #[test]
    fn without_a_revocation_nothing_counts_as_read_after_it() {
        let base = Instant::now();
        let msgs = [msg(base, 0, 10, Ack::Acked, &[(1, 20), (2, 20), (3, 20)])];
        let t = tally(&msgs, 4, 3, None);
        assert_eq!((t.messages, t.delivered, t.revoked_reads), (1, 1, 0));
        assert_eq!(
            t.deliveries_due, 2,
            "the device to be revoked is not counted"
        );
    }
}
