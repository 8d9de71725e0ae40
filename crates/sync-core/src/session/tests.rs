//! Every transition and clamp of the session, driven with a fake clock and no sockets.

use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_types::{
    BlobId, Cursor, DEFAULT_MAX_FRAME, DeviceId, ErrorCode, GroupId, InviteStored, Limits,
    MAX_FRAME_LIMIT, Message, Notify, Payload, Pong, PullEntry, PullResponse, PushAck, RelayId,
    Welcome, WireError,
};

use super::*;
use crate::connection::ConnectionStatus;
use crate::outbox::{Outbox, OutboxLimits};

const SEC: Duration = Duration::from_secs(1);
const RELAY: [u8; 32] = [7; 32];

struct Harness {
    s: Session,
    rng: ChaCha20Rng,
    now: Instant,
    /// Frames written on the transport, in order.
    sent: Vec<Message>,
    dials: usize,
    closes: usize,
    events: Vec<SessionEvent>,
}

fn config() -> SessionConfig {
    SessionConfig {
        ping_interval: 10 * SEC,
        max_in_flight: 8,
        pull_page: 2,
        pull_round_bytes: 10_000,
        default_retry: 3 * SEC,
        ..SessionConfig::DEFAULT
    }
}

fn blob(n: u8) -> BlobId {
    BlobId::from_bytes([n; 16])
}

fn entry(cursor: u64, len: usize) -> PullEntry {
    PullEntry {
        cursor: Cursor::new(cursor),
        blob_id: BlobId::from_bytes(cursor.to_be_bytes().repeat(2).try_into().expect("16 bytes")),
        sender: DeviceId::from_bytes([1; 32]),
        payload: vec![0u8; len].into(),
        timestamp_ms: 0,
    }
}

fn error(request_id: Option<u64>, code: ErrorCode, retry_after_ms: Option<u64>) -> WireError {
    let mut e = WireError::new(code, "no");
    e.request_id = request_id;
    e.retry_after_ms = retry_after_ms;
    e
}

impl Harness {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: SessionConfig) -> Self {
        Self {
            s: Session::new(
                config,
                GroupId::from_bytes([3; 32]),
                Outbox::new(OutboxLimits::DEFAULT),
            ),
            rng: ChaCha20Rng::seed_from_u64(9),
            now: Instant::now(),
            sent: Vec::new(),
            dials: 0,
            closes: 0,
            events: Vec::new(),
        }
    }

    /// Carries out everything the session has to do, as a shell would.
    fn drain(&mut self) {
        while let Some(e) = self.s.poll_event() {
            self.events.push(e);
        }
        while let Some(t) = self.s.poll_transmit(self.now) {
            match t {
                Transmit::Dial => self.dials += 1,
                Transmit::Frame(m) => self.sent.push(m),
                Transmit::Close => self.closes += 1,
            }
        }
    }

    fn input(&mut self, input: Input) {
        self.s.handle(input, self.now, &mut self.rng);
        self.drain();
    }

    fn frame(&mut self, msg: impl Into<Message>) {
        self.input(Input::Frame(msg.into()));
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now, &mut self.rng);
        self.drain();
    }

    fn take_sent(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.sent)
    }

    fn take_events(&mut self) -> Vec<SessionEvent> {
        std::mem::take(&mut self.events)
    }

    /// The shell's dial succeeded: the transport is up, with what the shell proves.
    fn transport_up(&mut self, auth_signature: [u8; 64], last_cursor: Cursor) {
        self.input(Input::TransportUp {
            relay_id: RelayId::from_bytes(RELAY),
            hello: HelloAuth {
                auth_signature,
                last_cursor,
                admission_token: None,
            },
        });
    }

    fn up(&mut self) {
        self.input(Input::Connect);
        assert_eq!(self.dials, 1);
        self.transport_up([5; 64], Cursor::new(4));
    }

    fn hello_id(&self) -> u64 {
        match self.sent.last() {
            Some(Message::Hello(h)) => h.request_id,
            other => panic!("expected Hello, got {other:?}"),
        }
    }

    fn welcome_with(&mut self, limits: Limits, max_cursor: u64) {
        let request_id = self.hello_id();
        self.take_sent();
        self.frame(Welcome {
            request_id,
            relay_id: RELAY,
            max_cursor: Cursor::new(max_cursor),
            limits,
            store_id: 77,
        });
    }

    /// A session whose Hello the relay answered with an error.
    fn hello_refused(code: ErrorCode, retry_after_ms: Option<u64>) -> Self {
        let mut h = Self::new();
        h.up();
        let id = h.hello_id();
        h.frame(error(Some(id), code, retry_after_ms));
        h
    }

    /// Connected, with the defaults and the relay at cursor 10.
    fn established() -> Self {
        let mut h = Self::new();
        h.up();
        h.welcome_with(Limits::DEFAULT, 10);
        assert!(h.s.is_established());
        h.take_events();
        h
    }

    fn push_ids(&self) -> Vec<(u64, BlobId)> {
        self.sent
            .iter()
            .filter_map(|m| match m {
                Message::Push(p) => Some((p.request_id, p.blob_id)),
                _ => None,
            })
            .collect()
    }

    fn last_pull(&self) -> sync_types::Pull {
        match self
            .sent
            .iter()
            .rev()
            .find(|m| matches!(m, Message::Pull(_)))
        {
            Some(Message::Pull(p)) => p.clone(),
            _ => panic!("no Pull sent: {:?}", self.sent),
        }
    }

    /// Queues blobs `ns`, each holding "x".
    fn enqueue_all(&mut self, ns: std::ops::Range<u8>) {
        for n in ns {
            self.s
                .enqueue(blob(n), Bytes::from_static(b"x"), 0)
                .expect("queued");
        }
    }

    /// Queues blob `n` holding `bytes`, lets the session send it, and returns its push's
    /// (request id, blob id).
    fn push(&mut self, n: u8, bytes: &'static [u8]) -> (u64, BlobId) {
        self.s
            .enqueue(blob(n), Bytes::from_static(bytes), 0)
            .expect("queued");
        self.drain();
        self.push_ids()[0]
    }

    /// Starts a pull and returns the `Pull` it sent.
    fn pull(&mut self, after: Cursor, mode: PullMode) -> sync_types::Pull {
        self.s.start_pull(after, mode).expect("pull starts");
        self.drain();
        self.last_pull()
    }

    /// The relay answers pull `request_id` with a page of `entries`.
    fn page(
        &mut self,
        request_id: u64,
        entries: Vec<PullEntry>,
        has_more: bool,
        max_cursor: u64,
        removed: u64,
    ) {
        self.frame(PullResponse {
            request_id,
            entries,
            has_more,
            max_cursor: Cursor::new(max_cursor),
            removed,
        });
    }

    /// Whether an event so far matches.
    fn saw(&self, pred: impl Fn(&SessionEvent) -> bool) -> bool {
        self.events.iter().any(pred)
    }

    /// Takes the frames sent so far, keeping what `pick` picks from them.
    fn take_sent_of<T>(&mut self, pick: impl FnMut(Message) -> Option<T>) -> Vec<T> {
        self.take_sent().into_iter().filter_map(pick).collect()
    }

    /// Takes the events so far, keeping what `pick` picks from them.
    fn take_events_of<T>(&mut self, pick: impl FnMut(SessionEvent) -> Option<T>) -> Vec<T> {
        self.take_events().into_iter().filter_map(pick).collect()
    }

    fn reconnecting(&self) -> bool {
        matches!(self.s.connection(), ConnectionState::Reconnecting { .. })
    }

    fn ended(&self) -> bool {
        self.saw(|e| matches!(e, SessionEvent::Ended { .. }))
    }
}

// ----- handshake -----

#[test]
fn hello_carries_what_the_shell_proves_and_welcome_establishes() {
    let mut h = Harness::new();
    h.up();
    let Some(Message::Hello(hello)) = h.sent.last().cloned() else {
        panic!("no Hello");
    };
    assert_eq!(hello.group_id, GroupId::from_bytes([3; 32]));
    assert_eq!(hello.last_cursor, Cursor::new(4));
    assert_eq!(hello.auth_signature, [5; 64]);
    assert!(!h.s.is_established());
    h.welcome_with(Limits::DEFAULT, 12);
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(
        e,
        SessionEvent::Established(Established { store_id: 77, max_cursor, .. })
            if *max_cursor == Cursor::new(12)
    )));
    assert!(events.contains(&SessionEvent::Status(ConnectionStatus::Connected)));
    assert_eq!(h.s.relay_max(), Cursor::new(12));
}

#[test]
fn a_welcome_naming_another_relay_ends_the_attempt() {
    let mut h = Harness::new();
    h.up();
    let request_id = h.hello_id();
    h.frame(Welcome {
        request_id,
        relay_id: [8; 32],
        max_cursor: Cursor::ZERO,
        limits: Limits::DEFAULT,
        store_id: 1,
    });
    assert!(!h.s.is_established());
    assert!(h.ended());
    assert_eq!(h.closes, 1);
    assert!(h.reconnecting());
}

#[test]
fn a_welcome_for_another_request_or_any_other_frame_ends_the_attempt() {
    for msg in [
        Message::Welcome(Welcome {
            request_id: 999,
            relay_id: RELAY,
            max_cursor: Cursor::ZERO,
            limits: Limits::DEFAULT,
            store_id: 1,
        }),
        Message::Pong(Pong { request_id: 1 }),
    ] {
        let mut h = Harness::new();
        h.up();
        h.frame(msg);
        assert!(!h.s.is_established());
        assert!(h.ended(), "the attempt should end");
        // `Bye` is said, then the transport closed.
        assert!(matches!(h.sent.last(), Some(Message::Bye(_))));
        assert_eq!(h.closes, 1);
    }
}

#[test]
fn the_relays_frame_size_is_clamped_both_ways() {
    for (announced, expected) in [
        (u32::MAX, MAX_FRAME_LIMIT),
        (0, DEFAULT_MAX_FRAME),
        (DEFAULT_MAX_FRAME as u32 * 2, DEFAULT_MAX_FRAME * 2),
    ] {
        let mut h = Harness::new();
        h.up();
        h.welcome_with(
            Limits {
                max_frame_bytes: announced,
                ..Limits::DEFAULT
            },
            0,
        );
        assert_eq!(h.s.max_frame(), expected, "announced {announced}");
    }
}

#[test]
fn a_refusal_for_good_stops_and_a_rate_limit_waits_at_most_the_clamp() {
    let h = Harness::hello_refused(ErrorCode::Unauthorized, None);
    assert!(h.saw(|e| matches!(e, SessionEvent::Status(ConnectionStatus::Failed { .. }))));
    assert!(
        h.s.poll_timeout().is_none(),
        "no retry after a refusal for good"
    );

    let mut h = Harness::hello_refused(ErrorCode::RateLimited, Some(u64::MAX));
    let retry_at = h.s.poll_timeout().expect("a retry is scheduled");
    assert!(retry_at > h.now + MAX_RETRY_HINT - SEC);
    assert!(retry_at <= h.now + MAX_RETRY_HINT + 60 * SEC);
    // Nothing happens before then; at the instant, it dials again.
    h.advance(MAX_RETRY_HINT - SEC);
    assert_eq!(h.dials, 1);
    h.advance(retry_at - h.now);
    assert_eq!(h.dials, 2);
}

#[test]
fn a_dial_that_succeeds_too_late_is_closed_unused() {
    let mut h = Harness::new();
    h.input(Input::Connect);
    h.advance(ConnectionConfig::DEFAULT.connect_timeout);
    assert!(!h.s.is_dialing());
    let closes = h.closes;
    h.transport_up([0; 64], Cursor::ZERO);
    assert_eq!(h.closes, closes + 1);
    assert!(h.s.relay_id().is_none());
    assert!(!h.sent.iter().any(|m| matches!(m, Message::Hello(_))));
}

#[test]
fn a_handshake_that_takes_too_long_is_abandoned() {
    let mut h = Harness::new();
    h.up();
    h.advance(ConnectionConfig::DEFAULT.handshake_timeout);
    assert!(h.ended());
    assert!(h.reconnecting());
}

// ----- pushes -----

#[test]
fn pushes_wait_for_the_session_and_stay_within_the_window() {
    let mut h = Harness::new();
    h.enqueue_all(0..20);
    h.up();
    assert!(h.push_ids().is_empty(), "nothing is pushed before Welcome");
    // The relay allows 5 in flight: 3 for pushes, room for a pull and a ping.
    h.welcome_with(
        Limits {
            max_in_flight: 5,
            ..Limits::DEFAULT
        },
        0,
    );
    assert_eq!(h.s.in_flight_cap(), 3);
    let sent = h.push_ids();
    assert_eq!(sent.len(), 3);
    // Each acknowledgement lets one more go.
    let (id, blob_id) = sent[0];
    h.take_sent();
    h.frame(PushAck {
        request_id: id,
        blob_id,
        cursor: Cursor::new(1),
        server_time_ms: 0,
    });
    assert_eq!(h.push_ids().len(), 1);
    assert!(h.events.contains(&SessionEvent::PushAcked {
        blob_id,
        cursor: Cursor::new(1),
        ttl_secs: 0,
    }));
    assert_eq!(h.s.outbox().len(), 19);
}

#[test]
fn an_ack_naming_another_blob_breaks_the_session_and_the_push_is_sent_again() {
    let mut h = Harness::established();
    let (id, _) = h.push(1, b"x");
    h.take_sent();
    h.frame(PushAck {
        request_id: id,
        blob_id: blob(2),
        cursor: Cursor::new(11),
        server_time_ms: 0,
    });
    assert!(h.ended());
    assert!(!h.saw(|e| matches!(e, SessionEvent::PushAcked { .. })));
    assert_eq!(h.s.outbox().len(), 1);
    assert_eq!(
        h.s.outbox().in_flight_len(),
        0,
        "requeued for the next session"
    );
}

#[test]
fn a_deferral_holds_every_push_for_the_clamped_hint() {
    let mut h = Harness::established();
    let (id, blob_id) = h.push(1, b"x");
    h.take_sent();
    h.frame(error(Some(id), ErrorCode::RateLimited, Some(u64::MAX)));
    assert!(h.events.contains(&SessionEvent::PushDeferred {
        blob_id,
        error: error(Some(id), ErrorCode::RateLimited, Some(u64::MAX)),
        retry_after: MAX_RETRY_HINT,
    }));
    h.s.enqueue(blob(2), Bytes::from_static(b"y"), 0)
        .expect("queued");
    h.drain();
    assert!(h.push_ids().is_empty(), "held");
    // The heartbeat keeps the session alive meanwhile (the relay answers its pings).
    let until = h.now + MAX_RETRY_HINT;
    while h.now < until {
        assert!(h.push_ids().is_empty(), "held until the hint has passed");
        let pings: Vec<u64> = h.take_sent_of(|m| match m {
            Message::Ping(p) => Some(p.request_id),
            _ => None,
        });
        for request_id in pings {
            h.frame(Pong { request_id });
        }
        h.advance(5 * SEC);
    }
    let pushed: Vec<BlobId> = h.push_ids().into_iter().map(|(_, b)| b).collect();
    assert_eq!(pushed, vec![blob(1), blob(2)], "both go once the hold ends");
    assert!(h.s.is_established());
}

#[test]
fn a_refusal_for_good_drops_the_push() {
    let mut h = Harness::established();
    let (id, blob_id) = h.push(1, b"x");
    h.frame(error(Some(id), ErrorCode::Unauthorized, None));
    assert!(h.saw(|e| matches!(e, SessionEvent::PushRejected { blob_id: b, .. } if *b == blob_id)));
    assert!(h.s.outbox().is_empty());
    assert!(h.s.is_established());
}

#[test]
fn a_withdrawn_push_is_never_sent() {
    let mut h = Harness::established();
    h.s.enqueue(blob(1), Bytes::from_static(b"x"), 0)
        .expect("queued");
    assert!(h.s.withdraw(&blob(1)));
    h.drain();
    assert!(h.push_ids().is_empty());
}

// ----- pulls -----

#[test]
fn a_round_pages_until_the_relay_has_no_more() {
    let mut h = Harness::established();
    h.s.start_pull(Cursor::new(4), PullMode::Round)
        .expect("pull starts");
    assert_eq!(
        h.s.start_pull(Cursor::ZERO, PullMode::Round),
        Err(SessionError::PullInProgress)
    );
    h.drain();
    let p = h.last_pull();
    assert_eq!((p.after, p.limit), (Cursor::new(4), 2));
    h.page(p.request_id, vec![entry(5, 10), entry(7, 10)], true, 10, 0);
    let next = h.last_pull();
    assert_eq!(
        next.after,
        Cursor::new(7),
        "the next page starts after the last entry"
    );
    assert_ne!(next.request_id, p.request_id);
    h.page(next.request_id, vec![entry(9, 10)], false, 10, 1);
    let pages: Vec<Page> = h.take_events_of(|e| match e {
        SessionEvent::Page(p) => Some(p),
        _ => None,
    });
    assert_eq!(pages.len(), 2);
    assert_eq!(
        (pages[0].after, pages[0].through, pages[0].end),
        (Cursor::new(4), Cursor::new(7), None)
    );
    assert_eq!(
        (
            pages[1].after,
            pages[1].through,
            pages[1].removed,
            pages[1].end
        ),
        (Cursor::new(7), Cursor::new(10), 1, Some(PullEnd::Complete))
    );
    assert!(!h.s.is_pulling());
}

#[test]
fn a_round_stops_at_its_byte_bound() {
    let mut h = Harness::established();
    let p = h.pull(Cursor::ZERO, PullMode::Round);
    h.take_sent();
    h.page(
        p.request_id,
        vec![entry(1, 6_000), entry(2, 6_000)],
        true,
        100,
        0,
    );
    assert!(h.take_sent().is_empty(), "no further page is asked for");
    assert!(h.saw(|e| matches!(
        e,
        SessionEvent::Page(Page {
            end: Some(PullEnd::Bounded),
            ..
        })
    )));
    assert!(!h.s.is_pulling());
    assert_eq!(h.s.relay_max(), Cursor::new(100));
}

#[test]
fn a_single_page_pull_ends_after_one_page() {
    let mut h = Harness::established();
    let p = h.pull(Cursor::new(2), PullMode::Single { limit: 1 });
    assert_eq!(p.limit, 1);
    h.take_sent();
    h.page(p.request_id, vec![entry(3, 1)], true, 10, 0);
    assert!(h.take_sent().is_empty());
    assert!(h.saw(|e| matches!(
        e,
        SessionEvent::Page(Page {
            end: Some(PullEnd::Complete),
            ..
        })
    )));
}

#[test]
fn pages_that_break_the_protocol_end_the_session() {
    let bad = [
        // Not after the page's cursor.
        (vec![entry(3, 1)], false),
        // Descending.
        (vec![entry(8, 1), entry(6, 1)], false),
        // Claims more but serves nothing: a relay could page forever.
        (vec![], true),
    ];
    for (entries, has_more) in bad {
        let mut h = Harness::established();
        let p = h.pull(Cursor::new(4), PullMode::Round);
        h.page(p.request_id, entries, has_more, 10, 0);
        assert!(h.ended());
        assert!(!h.saw(|e| matches!(e, SessionEvent::Page(_))));
    }
}

#[test]
fn an_answer_to_no_pull_or_another_pull_ends_the_session() {
    let mut h = Harness::established();
    h.page(4242, vec![], false, 10, 0);
    assert!(h.ended());

    let mut h = Harness::established();
    let p = h.pull(Cursor::ZERO, PullMode::Round);
    h.page(p.request_id + 100, vec![], false, 10, 0);
    assert!(h.ended());
}

#[test]
fn a_refused_pull_ends_and_another_may_start() {
    let mut h = Harness::established();
    let p = h.pull(Cursor::ZERO, PullMode::Round);
    h.frame(error(Some(p.request_id), ErrorCode::RateLimited, Some(10)));
    assert!(h.saw(|e| matches!(e, SessionEvent::PullRefused { .. })));
    assert!(h.s.is_established());
    assert!(h.s.start_pull(Cursor::ZERO, PullMode::Round).is_ok());
}

#[test]
fn nothing_is_pulled_or_invited_without_a_session() {
    let mut h = Harness::new();
    assert_eq!(
        h.s.start_pull(Cursor::ZERO, PullMode::Round),
        Err(SessionError::NotEstablished)
    );
    assert_eq!(
        h.s.put_invite("x".into(), Bytes::new(), 60),
        Err(SessionError::NotEstablished)
    );
    h.up();
    assert_eq!(
        h.s.start_pull(Cursor::ZERO, PullMode::Round),
        Err(SessionError::NotEstablished)
    );
}

// ----- heartbeat, errors, the end of a session -----

#[test]
fn a_ping_is_due_every_interval_and_a_silent_relay_is_left() {
    let mut h = Harness::established();
    assert_eq!(h.s.poll_timeout(), Some(h.now + 10 * SEC));
    h.advance(10 * SEC);
    assert!(matches!(h.sent.last(), Some(Message::Ping(_))));
    h.advance(10 * SEC);
    assert!(
        h.s.is_established(),
        "silent for two intervals: still trusted"
    );
    h.advance(10 * SEC);
    assert!(!h.s.is_established(), "silent for three: left");
    assert!(h.saw(|e| matches!(
        e,
        SessionEvent::Ended { was_established: true, reason } if reason.contains("silent")
    )));
    assert!(h.reconnecting());
}

#[test]
fn any_frame_counts_as_the_relay_being_alive() {
    let mut h = Harness::established();
    for _ in 0..10 {
        h.advance(10 * SEC);
        h.frame(Notify {
            cursor: Cursor::new(20),
            blob_id: blob(1),
            sender: DeviceId::from_bytes([1; 32]),
            size: 1,
        });
    }
    assert!(h.s.is_established());
    assert_eq!(h.s.relay_max(), Cursor::new(20));
}

#[test]
fn errors_go_to_their_request_and_an_unknown_one_ends_the_session() {
    let mut h = Harness::established();
    let id =
        h.s.put_invite("code".into(), Bytes::from_static(b"sealed"), 60)
            .expect("invite sent");
    let other =
        h.s.put_invite("code2".into(), Bytes::from_static(b"sealed"), 60)
            .expect("invite sent");
    h.frame(InviteStored { request_id: id });
    h.frame(error(Some(other), ErrorCode::RateLimited, None));
    let answers: Vec<(u64, bool)> = h.take_events_of(|e| match e {
        SessionEvent::Answered { request_id, result } => Some((request_id, result.is_ok())),
        _ => None,
    });
    assert_eq!(answers, vec![(id, true), (other, false)]);
    assert!(h.s.is_established());
    h.frame(error(Some(31337), ErrorCode::RateLimited, None));
    assert!(h.ended());
}

#[test]
fn an_error_for_the_whole_session_or_a_bye_ends_it_without_saying_bye() {
    for msg in [
        Message::Error(error(None, ErrorCode::RateLimited, None)),
        Message::Bye(sync_types::Bye {
            reason: Some("maintenance".into()),
        }),
    ] {
        let mut h = Harness::established();
        h.take_sent();
        h.frame(msg);
        assert!(h.ended());
        assert!(!h.sent.iter().any(|m| matches!(m, Message::Bye(_))));
        assert_eq!(h.closes, 1);
    }
}

#[test]
fn frames_a_relay_never_sends_end_the_session() {
    let mut h = Harness::established();
    h.frame(sync_types::Ping { request_id: 1 });
    assert!(h.ended());
}

#[test]
fn a_lost_transport_requeues_pushes_and_the_next_session_sends_them_again() {
    let mut h = Harness::established();
    h.enqueue_all(0..3);
    h.drain();
    assert_eq!(h.push_ids().len(), 3);
    h.s.start_pull(Cursor::ZERO, PullMode::Round)
        .expect("pull starts");
    h.input(Input::TransportLost {
        reason: "read failed".into(),
    });
    assert!(h.ended());
    assert!(!h.s.is_pulling());
    assert_eq!(h.s.outbox().in_flight_len(), 0);
    // Reconnect when the backoff says so; the same blobs go again.
    let at = h.s.poll_timeout().expect("a reconnect is due");
    h.advance(at - h.now);
    assert_eq!(h.dials, 2);
    h.take_sent();
    h.transport_up([5; 64], Cursor::ZERO);
    h.welcome_with(Limits::DEFAULT, 10);
    let again: Vec<BlobId> = h.push_ids().into_iter().map(|(_, b)| b).collect();
    assert_eq!(again, vec![blob(0), blob(1), blob(2)]);
}

#[test]
fn close_says_bye_and_stays_closed() {
    let mut h = Harness::established();
    h.take_sent();
    h.input(Input::Close);
    assert!(matches!(h.sent.last(), Some(Message::Bye(_))));
    assert_eq!(h.closes, 1);
    assert!(
        h.events
            .contains(&SessionEvent::Status(ConnectionStatus::Disconnected))
    );
    assert!(h.s.poll_timeout().is_none());
}

#[test]
fn a_push_refused_under_an_old_epoch_is_held_and_sent_again_resealed() {
    let mut h = Harness::established();
    let (id, blob_id) = h.push(1, b"old epoch");
    h.take_sent();
    h.frame(error(Some(id), ErrorCode::EpochSuperseded, None));
    assert!(
        h.events
            .contains(&SessionEvent::EpochSuperseded { blob_id })
    );
    assert!(
        !h.saw(|e| matches!(e, SessionEvent::PushRejected { .. })),
        "not refused for good: nothing is lost"
    );
    assert!(h.push_ids().is_empty(), "held");
    // The shell re-seals it meanwhile; after the hold it goes with the new bytes.
    assert!(h.s.replace_payload(&blob_id, Bytes::from_static(b"new epoch")));
    h.advance(config().default_retry + SEC);
    let pushes: Vec<Bytes> = h.take_sent_of(|m| match m {
        Message::Push(p) => Some(Bytes::copy_from_slice(&p.payload)),
        _ => None,
    });
    assert_eq!(pushes, vec![Bytes::from_static(b"new epoch")]);
    assert!(h.s.is_established());
}

#[test]
fn membership_answers_go_to_their_request_and_broadcasts_are_reported() {
    let mut h = Harness::established();
    let get =
        h.s.group_request(GroupRequest::Get {
            group_id: GroupId::from_bytes([1; 32]),
            after_seq: 3,
        })
        .expect("established");
    let enroll =
        h.s.group_request(GroupRequest::Enroll(Payload::copy_from_slice(
            b"enrollment",
        )))
        .expect("established");
    h.drain();
    let sent = h.take_sent();
    assert!(
        sent.iter()
            .any(|m| matches!(m, Message::GroupGet(g) if g.request_id == get && g.after_seq == 3))
    );
    assert!(
        sent.iter()
            .any(|m| matches!(m, Message::Enroll(e) if e.request_id == enroll))
    );
    let info = sync_types::GroupInfo {
        request_id: get,
        records: Vec::new(),
        enrollments: Vec::new(),
        grants: Vec::new(),
    };
    h.frame(Message::GroupInfo(info.clone()));
    h.frame(error(Some(enroll), ErrorCode::MembershipRefused, None));
    let broadcast = sync_types::GroupChanged {
        request_id: None,
        seq: 4,
        epoch: 1,
    };
    h.frame(Message::GroupChanged(broadcast.clone()));
    let events = h.take_events();
    assert!(events.contains(&SessionEvent::GroupReply {
        request_id: get,
        result: Ok(GroupReply::Info(info)),
    }));
    assert!(events.iter().any(|e| matches!(
        e,
        SessionEvent::GroupReply { request_id, result: Err(err) }
            if *request_id == enroll && err.code == ErrorCode::MembershipRefused
    )));
    assert!(events.contains(&SessionEvent::GroupChanged(broadcast)));
    assert!(h.s.is_established());
    // An answer to no request is a protocol violation.
    h.frame(Message::GroupChanged(sync_types::GroupChanged {
        request_id: Some(999),
        seq: 4,
        epoch: 1,
    }));
    assert!(h.ended());
}

#[test]
fn a_hello_refused_as_behind_the_epoch_is_retried_not_final() {
    let mut h = Harness::hello_refused(ErrorCode::EpochSuperseded, None);
    let events = h.take_events();
    assert!(events.iter().any(|e| matches!(
        e,
        SessionEvent::HandshakeRefused { error } if error.code == ErrorCode::EpochSuperseded
    )));
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SessionEvent::Status(ConnectionStatus::Failed { .. }))),
        "the device fetches its keys and tries again: {events:?}"
    );
}
