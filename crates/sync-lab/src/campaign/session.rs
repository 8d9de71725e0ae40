//! The campaign device's session: it sends numbered messages through the relay, matches the
//! responder's answers to them (round-trip times), follows the connection, and samples the
//! relay's soak figures. Shared by every phase.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde_json::{Value, json};
use sync_client::SyncClient;
use sync_types::DeviceId;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::impairment::Impairment;
use crate::device::{self, Incoming};
use crate::events::EventLog;
use crate::protocol;
use crate::report::{Marker, Point};
use crate::soak::{self, Sample, Target};

/// How often the receiver pulls even without an announcement (a safety net).
const RECEIVER_POLL: Duration = Duration::from_secs(2);

/// A message waiting for its answer.
struct Waiter {
    sent: Instant,
    tx: oneshot::Sender<Answer>,
}

/// An answer as received (verified and decrypted by the client).
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) rtt_ms: f64,
    pub(super) sender: DeviceId,
    pub(super) data: Vec<u8>,
}

/// A message on its way.
pub(super) struct Sent {
    sent_s: f64,
    deadline: tokio::time::Instant,
    rx: oneshot::Receiver<Answer>,
}

/// What one message came to.
#[derive(Debug)]
pub(super) struct Exchange {
    pub(super) seq: u32,
    pub(super) sent_s: f64,
    pub(super) answer: Option<Answer>,
}

/// The number in an answer (`PONG:<n>`, `BURST-ACK:<n>`, `ECHO:E2E:<n>:…`).
fn answer_number(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    let rest = text
        .strip_prefix(protocol::PONG)
        .or_else(|| text.strip_prefix(protocol::BURST_ACK))
        .or_else(|| text.strip_prefix("ECHO:E2E:"))?;
    rest.split(':').next()?.parse().ok()
}

/// Shared state of a running campaign.
pub(super) struct Session {
    pub(super) client: SyncClient,
    pub(super) log: Arc<EventLog>,
    bar: ProgressBar,
    waiters: Arc<Mutex<HashMap<u64, Waiter>>>,
    next_wire: AtomicU64,
    pub(super) rejected: Arc<AtomicU64>,
    phase: Arc<Mutex<String>>,
    pub(super) points: Mutex<Vec<Point>>,
    pub(super) samples: Mutex<Vec<Sample>>,
    pub(super) markers: Mutex<Vec<Marker>>,
    target: Target,
    reply_timeout: Duration,
    responder: Mutex<Option<DeviceId>>,
    pub(super) impair: Option<Impairment>,
}

/// The tasks a [`Session`] runs beside the phases; aborted at teardown.
pub(super) struct Background {
    receiver: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
}

impl Background {
    /// Stops following the group and closes `client`.
    pub(super) async fn close(self, client: &SyncClient) {
        self.receiver.abort();
        client.close().await;
        self.dispatcher.abort();
    }
}

impl Session {
    /// Starts following the group with `client` and routing answers to their messages.
    /// `responder` is the responder's device when known in advance (`--local`).
    pub(super) fn start(
        client: SyncClient,
        log: Arc<EventLog>,
        bar: ProgressBar,
        target: Target,
        reply_timeout: Duration,
        responder: Option<DeviceId>,
        impair: Option<Impairment>,
    ) -> (Arc<Session>, Background) {
        let waiters = Arc::new(Mutex::new(HashMap::new()));
        let rejected = Arc::new(AtomicU64::new(0));
        let phase = Arc::new(Mutex::new("setup".to_string()));
        let (tx, rx) = mpsc::unbounded_channel();
        let receiver = device::spawn_receiver(client.clone(), tx, RECEIVER_POLL);
        let dispatcher = spawn_dispatcher(
            rx,
            Arc::clone(&waiters),
            Arc::clone(&rejected),
            Arc::clone(&log),
            Arc::clone(&phase),
        );
        // Wire numbers start at a random base so answers to an earlier run in the same group
        // are never taken for this run's.
        let mut base = [0u8; 4];
        let _ = getrandom::fill(&mut base);
        let base = u64::from(u32::from_le_bytes(base)) * 1_000_000 + 1;
        let session = Arc::new(Session {
            client,
            log,
            bar,
            waiters,
            next_wire: AtomicU64::new(base),
            rejected,
            phase,
            points: Mutex::new(Vec::new()),
            samples: Mutex::new(Vec::new()),
            markers: Mutex::new(Vec::new()),
            target,
            reply_timeout: reply_timeout.max(Duration::from_secs(1)),
            responder: Mutex::new(responder),
            impair,
        });
        (
            session,
            Background {
                receiver,
                dispatcher,
            },
        )
    }

    /// The path the campaign device's packets take, as far as this command knows it: it dials
    /// the relay at its direct address with iroh relay servers and discovery disabled
    /// (`direct`), or the impairment proxy in front of the relay (`impair-proxy`, with
    /// `--impair`, whether or not the current phase is impaired).
    pub(super) fn path(&self) -> &'static str {
        if self.impair.is_some() {
            "impair-proxy"
        } else {
            "direct"
        }
    }

    /// The phase events from the receiver are attributed to (and the progress bar shows).
    pub(super) fn set_phase(&self, name: &str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = name.to_string();
        }
        self.bar.set_message(name.to_string());
    }

    /// Writes one event.
    pub(super) fn emit(&self, phase: &str, event: &str, fields: &[(&str, Value)]) {
        self.log.emit(phase, event, fields);
    }

    /// Marks a key event now, for the reports' charts and lists.
    pub(super) fn mark(&self, label: String) {
        let at_s = self.log.elapsed_s();
        if let Ok(mut m) = self.markers.lock() {
            m.push(Marker { at_s, label });
        }
    }

    /// Marks a key event that happened at `at` (an instant already past), for the reports'
    /// charts and lists.
    pub(super) fn mark_at(&self, at: Instant, label: String) {
        let at_s = (self.log.elapsed_s() - at.elapsed().as_secs_f64()).max(0.0);
        if let Ok(mut m) = self.markers.lock() {
            m.push(Marker { at_s, label });
        }
    }

    /// Records messages of a phase that does not go through [`Session::wait`]: on the RTT
    /// and rate charts, and one step each on the progress bar.
    pub(super) fn record_points(&self, points: &[Point]) {
        self.bar.inc(points.len() as u64);
        if let Ok(mut p) = self.points.lock() {
            p.extend_from_slice(points);
        }
    }

    /// Remembers the first device that answered as the responder.
    pub(super) fn note_responder(&self, sender: DeviceId) {
        if let Ok(mut r) = self.responder.lock()
            && r.is_none()
        {
            *r = Some(sender);
        }
    }

    /// The responder's device, once known.
    pub(super) fn responder(&self) -> Option<DeviceId> {
        self.responder.lock().ok().and_then(|r| *r)
    }

    /// Sends `text(n)` with a fresh wire number `n` and waits for its answer (or the reply
    /// timeout).
    pub(super) async fn exchange(&self, seq: u32, text: impl FnOnce(u64) -> String) -> Exchange {
        match self.send(text).await {
            Ok(sent) => self.wait(seq, sent).await,
            Err(e) => {
                tracing::warn!(error = %e, "push failed");
                self.unsent(seq)
            }
        }
    }

    /// A message that could not be pushed: lost.
    pub(super) fn unsent(&self, seq: u32) -> Exchange {
        Exchange {
            seq,
            sent_s: self.log.elapsed_s(),
            answer: None,
        }
    }

    /// Queues `text(n)` with a fresh wire number `n`; its answer is awaited with
    /// [`Session::wait`].
    pub(super) async fn send(
        &self,
        text: impl FnOnce(u64) -> String,
    ) -> Result<Sent, sync_client::ClientError> {
        let n = self.next_wire.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let sent_s = self.log.elapsed_s();
        let deadline = tokio::time::Instant::now() + self.reply_timeout;
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(
                n,
                Waiter {
                    sent: Instant::now(),
                    tx,
                },
            );
        }
        if let Err(e) = self.client.push_queued(text(n).as_bytes()).await {
            if let Ok(mut w) = self.waiters.lock() {
                w.remove(&n);
            }
            return Err(e);
        }
        Ok(Sent {
            sent_s,
            deadline,
            rx,
        })
    }

    /// Waits for the answer until the message's own deadline (so waiting for many messages one
    /// after the other never extends anyone's timeout).
    pub(super) async fn wait(&self, seq: u32, sent: Sent) -> Exchange {
        let Sent {
            sent_s,
            deadline,
            rx,
        } = sent;
        let answer = tokio::time::timeout_at(deadline, rx)
            .await
            .ok()
            .and_then(Result::ok);
        self.bar.inc(1);
        if let Ok(mut p) = self.points.lock() {
            p.push(Point {
                sent_s,
                rtt_ms: answer.as_ref().map(|a| a.rtt_ms),
            });
        }
        Exchange {
            seq,
            sent_s,
            answer,
        }
    }

    /// Samples the relay now, records the sample and writes its event.
    pub(super) async fn sample_now(&self) -> Sample {
        let s = soak::sample(&self.target, self.log.elapsed_s()).await;
        let phase = self.phase.lock().map(|p| p.clone()).unwrap_or_default();
        self.log.emit(
            &phase,
            "soak_sample",
            &[
                ("rss_kb", json!(s.rss_kb)),
                ("fds", json!(s.fds)),
                ("sessions", json!(s.sessions)),
            ],
        );
        if let Ok(mut v) = self.samples.lock() {
            v.push(s);
        }
        s
    }

    /// Samples the relay every `every` until the handle is aborted.
    pub(super) fn spawn_sampler(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let session = Arc::clone(self);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every.max(Duration::from_secs(1)));
            loop {
                t.tick().await;
                session.sample_now().await;
            }
        })
    }
}

/// Routes answers from the receiver to their waiters; reports connection changes.
fn spawn_dispatcher(
    mut rx: mpsc::UnboundedReceiver<Incoming>,
    waiters: Arc<Mutex<HashMap<u64, Waiter>>>,
    rejected: Arc<AtomicU64>,
    log: Arc<EventLog>,
    phase: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let current = || phase.lock().map(|p| p.clone()).unwrap_or_default();
        while let Some(msg) = rx.recv().await {
            match msg {
                Incoming::Blob(blob) => {
                    let Some(n) = answer_number(&blob.data) else {
                        continue;
                    };
                    let waiter = waiters.lock().ok().and_then(|mut w| w.remove(&n));
                    if let Some(w) = waiter {
                        let rtt_ms = w.sent.elapsed().as_secs_f64() * 1000.0;
                        let _ = w.tx.send(Answer {
                            rtt_ms,
                            sender: blob.sender,
                            data: blob.data,
                        });
                    }
                }
                Incoming::Rejected { sender } => {
                    rejected.fetch_add(1, Ordering::Relaxed);
                    log.emit(
                        &current(),
                        "blob_rejected",
                        &[("sender", json!(sender.short()))],
                    );
                }
                Incoming::Connected => log.emit(&current(), "connected", &[]),
                Incoming::Disconnected { reason } => {
                    log.emit(&current(), "disconnected", &[("reason", json!(reason))]);
                }
                Incoming::PullFailed { reason } => {
                    log.emit(&current(), "pull_failed", &[("reason", json!(reason))]);
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_numbers() {
        assert_eq!(answer_number(b"PONG:42"), Some(42));
        assert_eq!(answer_number(b"BURST-ACK:7"), Some(7));
        assert_eq!(answer_number(b"ECHO:E2E:9:abcd"), Some(9));
        assert_eq!(answer_number(b"ECHO:hello"), None);
        assert_eq!(answer_number(b"PING:1"), None);
    }
}
