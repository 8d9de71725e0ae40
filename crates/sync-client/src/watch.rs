//! Following a group: [`Watcher`] pulls whenever there may be something new and hands each
//! batch to the app, which commits it once handled.
//!
//! Events are hints ([`SyncEvent`]); the watcher turns them into pulls: on an announcement from
//! another device, after each (re)connect, after a lagged event stream, on an optional poll
//! interval (a safety net), and after a transient failure, with backoff. Announcements that
//! arrive together are coalesced into one pull.

use std::time::Duration;

use sync_crypto::OpenError;
use sync_types::{BlobId, Cursor, DeviceId, RelayId};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::{Stream, StreamExt};

use crate::{ClientError, IntegrityProblem, PullBatch, SyncClient, SyncEvent};

/// How a [`Watcher`] pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Pull at least this often even without an announcement (`None`: only on events).
    pub poll: Option<Duration>,
    /// Longest a pull may take before it counts as a transient failure.
    pub pull_timeout: Duration,
    /// First pause after a transient failure; doubled after each failure in a row.
    pub retry_initial: Duration,
    /// Longest pause between retries.
    pub retry_max: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            poll: None,
            pull_timeout: Duration::from_secs(30),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
        }
    }
}

/// What a [`Watcher`] reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum WatchEvent {
    /// Blobs pulled and not yet recorded: handle them (store, show, forward), then hand the
    /// batch to [`SyncClient::commit_pull`]. A batch not committed comes again on the next
    /// pull: at least once, never lost.
    Batch(PullBatch),
    /// A session with the relay was established (and a pull follows).
    Connected {
        /// The relay's identity.
        relay_id: RelayId,
        /// Its highest cursor at the handshake.
        max_cursor: Cursor,
    },
    /// The session ended; the client reconnects by itself.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A pulled blob failed verification or decryption and was not delivered.
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
    /// A pull failed for a reason that may pass (timeout, transport, a busy or rate-limiting
    /// relay); the watcher pulls again after `retry_in`.
    PullFailed {
        /// What failed.
        error: ClientError,
        /// When the watcher tries again.
        retry_in: Duration,
    },
    /// A pull failed for good (e.g. the relay refused this device); the watcher stops and
    /// [`Watcher::next`] returns `None` afterwards.
    Failed(ClientError),
}

/// Pulls on every hint that something is new; see the module docs. Made by
/// [`SyncClient::watch`].
pub struct Watcher {
    client: SyncClient,
    events: Box<dyn Stream<Item = SyncEvent> + Send + Unpin>,
    options: WatchOptions,
    me: DeviceId,
    want_pull: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    poll: Option<Interval>,
    done: bool,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("options", &self.options)
            .field("want_pull", &self.want_pull)
            .field("retry_at", &self.retry_at)
            .finish_non_exhaustive()
    }
}

impl SyncClient {
    /// Follows the group: the returned [`Watcher`] pulls now and whenever there may be
    /// something new. Subscribes before returning, so nothing announced after this call is
    /// missed.
    pub fn watch(&self, options: WatchOptions) -> Watcher {
        let poll = options.poll.map(|period| {
            let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticker
        });
        Watcher {
            client: self.clone(),
            events: Box::new(self.subscribe()),
            options,
            me: self.device_id(),
            want_pull: true,
            retry_at: None,
            backoff: options.retry_initial,
            poll,
            done: false,
        }
    }
}

impl Watcher {
    /// The next thing to report: a batch to handle, a connection change, a rejected blob or a
    /// failed pull. `None` once the client is closed or a pull failed for good.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if self.done {
                return None;
            }
            if self.want_pull {
                self.want_pull = false;
                if let Some(event) = self.pull().await {
                    return Some(event);
                }
                continue;
            }
            let retry_at = self.retry_at;
            tokio::select! {
                () = sleep_until(retry_at), if retry_at.is_some() => {
                    self.retry_at = None;
                    self.want_pull = true;
                }
                () = tick(self.poll.as_mut()), if self.poll.is_some() => self.want_pull = true,
                event = self.events.next() => {
                    let Some(event) = event else {
                        self.done = true;
                        return None;
                    };
                    let report = self.note(event);
                    // Coalesce whatever else is already waiting into the same pull.
                    if report.is_none() {
                        while let Ok(Some(event)) =
                            tokio::time::timeout(Duration::ZERO, self.events.next()).await
                        {
                            if let Some(report) = self.note(event) {
                                return Some(report);
                            }
                        }
                    }
                    if report.is_some() {
                        return report;
                    }
                }
            }
        }
    }

    /// Records what an event asks for; returns what to report about it, if anything.
    fn note(&mut self, event: SyncEvent) -> Option<WatchEvent> {
        match event {
            SyncEvent::BlobsAvailable { sender, .. } if sender != Some(self.me) => {
                self.want_pull = true;
                None
            }
            SyncEvent::Lagged { .. } => {
                self.want_pull = true;
                None
            }
            SyncEvent::Connected {
                relay_id,
                max_cursor,
            } => {
                self.want_pull = true;
                Some(WatchEvent::Connected {
                    relay_id,
                    max_cursor,
                })
            }
            SyncEvent::Disconnected { reason } => Some(WatchEvent::Disconnected { reason }),
            SyncEvent::Integrity {
                problem:
                    IntegrityProblem::Rejected {
                        cursor,
                        blob_id,
                        sender,
                        error,
                    },
            } => Some(WatchEvent::Rejected {
                cursor,
                blob_id,
                sender,
                error,
            }),
            _ => None,
        }
    }

    /// One pull; `None` when there is nothing to report (an empty batch, or no session yet:
    /// the next `Connected` pulls again).
    async fn pull(&mut self) -> Option<WatchEvent> {
        self.retry_at = None;
        let pulled =
            tokio::time::timeout(self.options.pull_timeout, self.client.pull_uncommitted())
                .await
                .unwrap_or(Err(ClientError::Timeout { blob_id: None }));
        match pulled {
            Ok(batch) => {
                self.backoff = self.options.retry_initial;
                // A bounded batch with more waiting: the next call pulls again.
                self.want_pull |= batch.more;
                (!batch.blobs.is_empty() || !batch.problems.is_empty())
                    .then_some(WatchEvent::Batch(batch))
            }
            Err(ClientError::NotConnected) => None,
            Err(ClientError::Closed) => {
                self.done = true;
                None
            }
            Err(error) if error.is_transient() => {
                let retry_in = error
                    .retry_after()
                    .unwrap_or(self.backoff)
                    .max(self.backoff);
                self.retry_at = Some(Instant::now() + retry_in);
                self.backoff = (self.backoff * 2).min(self.options.retry_max);
                Some(WatchEvent::PullFailed { error, retry_in })
            }
            Err(error) => {
                self.done = true;
                Some(WatchEvent::Failed(error))
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn tick(poll: Option<&mut Interval>) {
    match poll {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}
