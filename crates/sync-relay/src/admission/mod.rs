//! The relay's front door: what a connection must pass before it holds anything that outlives
//! its handshake, and the per-address and per-device limits after that.
//!
//! - **Before anything**: new connections per address (`ip_connect_rate`), checked when the
//!   first packet arrives, so a handshake flood from one address is refused at no TLS cost.
//! - **Before the Hello**: a place in the pre-auth budget (`max_pre_auth` at once, and
//!   `max_pre_auth_per_ip` per address), taken when the connection's first packet arrives —
//!   before any TLS work — and held until a valid Hello or the deadline (`hello_timeout`, which
//!   covers the TLS handshake, the stream and the first frame). See [`PreAuth`].
//! - **At the Hello**: the operator's token when `admission = "token"`, then the session slots:
//!   relay-wide (`max_sessions`), per address and per device. Only then is the pre-auth place
//!   given back. See [`Admission::admit_session`].
//! - **A new group** (the relay holds nothing for it) counts against its address's
//!   `ip_new_groups_per_hour`.
//! - **While open**: pushes per address (`ip_push_rate`); invite lookups per session, per
//!   address and relay-wide.
//!
//! Every refusal is counted by reason ([`Refusal`]) and gets an audit line with pseudonymous
//! ids (the address as a keyed hash, device and group ids shortened; never a token).
//!
//! Files: `origin` (what counts as one address), `tally` (concurrent places per key),
//! `refusal` (the reasons and their counter), `operator_key` (the operator's key file).

mod operator_key;
mod origin;
mod refusal;
mod tally;

pub use operator_key::{OperatorKeyError, create_operator_key, load_operator_key};
pub(crate) use origin::Origin;
pub use refusal::{Refusal, Refusals};

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};
use sync_crypto::{OperatorPublicKey, TokenError, verify_token};
use sync_types::{DeviceId, ErrorCode, GroupId, Hello, WireError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::config::{AdmissionMode, RelayConfig};
use crate::metrics::Metrics;
use crate::server::RelayCtx;
use tally::{Held, Tally};

/// Retry hint sent with `TooManySessions`.
const TOO_MANY_SESSIONS_RETRY_MS: u64 = 2000;

/// How long a group counts as "new" after a session for it was admitted as new: further
/// sessions for it within this time are not counted again.
const NEW_GROUP_MEMORY: Duration = Duration::from_secs(3600);

/// Most groups remembered as recently new (beyond, sessions of new groups are counted each
/// time, which only errs towards refusing).
const MAX_REMEMBERED_NEW_GROUPS: usize = 100_000;

/// Audit lines of refusals written per second at most (a flood must not fill the disk); the
/// others are counted in `audit_suppressed_total`.
const AUDIT_LINES_PER_SEC: u32 = 20;

/// A refusal: why (for metrics and the audit), and what the device is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) reason: Refusal,
    pub(crate) error: WireError,
}

impl Refused {
    fn new(reason: Refusal, error: WireError) -> Self {
        Self { reason, error }
    }

    /// The same refusal answering the request `request_id`.
    pub(crate) fn for_request(mut self, request_id: u64) -> Self {
        self.error = self.error.for_request(request_id);
        self
    }
}

/// What an audit line of a refusal names, pseudonymously.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub(crate) origin: Origin,
    pub(crate) device: Option<&'a DeviceId>,
    pub(crate) group: Option<&'a GroupId>,
}

/// Whether sessions need an operator token, and the key that signs them.
#[derive(Debug)]
enum TokenGate {
    Open,
    /// `None` only if the configuration was not validated: then nobody is admitted.
    Token(Option<OperatorPublicKey>),
}

/// The relay's admission state: budgets, per-key places and rate limiters.
pub(crate) struct Admission {
    pre_auth: Arc<Semaphore>,
    pre_auth_per_ip: Arc<Tally<Origin>>,
    sessions: Arc<Semaphore>,
    max_sessions: u32,
    sessions_per_ip: Arc<Tally<Origin>>,
    sessions_per_device: Arc<Tally<DeviceId>>,
    token: TokenGate,
    new_groups: Option<DefaultKeyedRateLimiter<Origin>>,
    recent_new_groups: Mutex<HashMap<GroupId, Instant>>,
    ip_connects: Option<DefaultKeyedRateLimiter<Origin>>,
    ip_push: Option<DefaultKeyedRateLimiter<Origin>>,
    session_invite_rate: Option<Quota>,
    ip_invites: Option<DefaultKeyedRateLimiter<Origin>>,
    global_invites: Option<DefaultDirectRateLimiter>,
    audit_budget: DefaultDirectRateLimiter,
    /// Key of the address pseudonyms in audit lines (random per process).
    pseudonym_key: RandomState,
}

fn quota(n: u32, per: fn(NonZeroU32) -> Quota) -> Option<Quota> {
    NonZeroU32::new(n).map(per)
}

fn per_second_with_burst(rate: u32, burst: u32) -> Option<Quota> {
    let rate = NonZeroU32::new(rate)?;
    Some(Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(rate)))
}

/// How long until a limiter that said no would say yes.
fn wait_of(not_until: &NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

/// A duration as a retry hint in whole milliseconds, at least 1.
fn retry_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Admission {
    pub(crate) fn new(config: &RelayConfig) -> Self {
        let token = match config.admission {
            AdmissionMode::Open => TokenGate::Open,
            AdmissionMode::Token => TokenGate::Token(config.operator_key().ok().flatten()),
        };
        Self {
            pre_auth: Arc::new(Semaphore::new(config.max_pre_auth as usize)),
            pre_auth_per_ip: Tally::new(config.max_pre_auth_per_ip),
            sessions: Arc::new(Semaphore::new(config.max_sessions as usize)),
            max_sessions: config.max_sessions,
            sessions_per_ip: Tally::new(config.max_sessions_per_ip),
            sessions_per_device: Tally::new(config.max_sessions_per_device),
            token,
            new_groups: quota(config.ip_new_groups_per_hour, Quota::per_hour)
                .map(RateLimiter::keyed),
            recent_new_groups: Mutex::new(HashMap::new()),
            ip_connects: per_second_with_burst(config.ip_connect_rate, config.ip_connect_burst)
                .map(RateLimiter::keyed),
            ip_push: per_second_with_burst(config.ip_push_rate, config.ip_push_burst)
                .map(RateLimiter::keyed),
            session_invite_rate: quota(config.session_invite_lookups_per_min, Quota::per_minute),
            ip_invites: quota(config.ip_invite_lookups_per_min, Quota::per_minute)
                .map(RateLimiter::keyed),
            global_invites: quota(config.global_invite_lookups_per_min, Quota::per_minute)
                .map(RateLimiter::direct),
            audit_budget: RateLimiter::direct(Quota::per_second(
                NonZeroU32::new(AUDIT_LINES_PER_SEC).unwrap_or(NonZeroU32::MIN),
            )),
            pseudonym_key: RandomState::new(),
        }
    }

    /// The `TooManySessions` refusal of a full relay.
    pub(crate) fn too_many_sessions(&self) -> WireError {
        WireError::new(
            ErrorCode::TooManySessions,
            format!(
                "the relay is at its limit of {} sessions",
                self.max_sessions
            ),
        )
        .retry_after_ms(TOO_MANY_SESSIONS_RETRY_MS)
    }

    /// Checks a valid Hello from `origin` against the token gate and the session limits, and
    /// takes the session's places.
    pub(crate) fn admit_session(
        &self,
        origin: Origin,
        peer: &DeviceId,
        hello: &Hello,
    ) -> Result<SessionPass, Refused> {
        let quota_bytes = self.check_token(hello)?;
        let busy = |reason, text: &str| {
            Refused::new(
                reason,
                WireError::new(ErrorCode::TooManySessions, text)
                    .retry_after_ms(TOO_MANY_SESSIONS_RETRY_MS),
            )
        };
        let slot = Arc::clone(&self.sessions)
            .try_acquire_owned()
            .map_err(|_| Refused::new(Refusal::SessionsFull, self.too_many_sessions()))?;
        let per_ip = self.sessions_per_ip.try_hold(origin).ok_or_else(|| {
            busy(
                Refusal::SessionsPerIp,
                "too many sessions from this network address",
            )
        })?;
        let per_device = self.sessions_per_device.try_hold(*peer).ok_or_else(|| {
            busy(
                Refusal::SessionsPerDevice,
                "too many sessions of this device",
            )
        })?;
        Ok(SessionPass {
            _slot: slot,
            _per_ip: per_ip,
            _per_device: per_device,
            quota_bytes,
        })
    }

    /// The token gate: `Ok` with the token's byte quota (if it sets one).
    fn check_token(&self, hello: &Hello) -> Result<Option<u64>, Refused> {
        let key = match &self.token {
            TokenGate::Open => return Ok(None),
            TokenGate::Token(key) => key,
        };
        let invalid = |reason, text: &str| {
            Refused::new(reason, WireError::new(ErrorCode::AdmissionInvalid, text))
        };
        let Some(token) = &hello.admission_token else {
            return Err(Refused::new(
                Refusal::TokenMissing,
                WireError::new(
                    ErrorCode::AdmissionRequired,
                    "this relay admits devices with an operator admission token only",
                ),
            ));
        };
        let Some(key) = key else {
            return Err(invalid(Refusal::TokenInvalid, "no operator key configured"));
        };
        let now = sync_types::unix_ms() / 1000;
        match verify_token(key, token.as_slice(), &hello.group_id, now) {
            Ok(claims) => Ok(claims.max_bytes.map(|q| q.get())),
            Err(TokenError::Expired { .. }) => Err(invalid(
                Refusal::TokenExpired,
                "the admission token expired",
            )),
            Err(TokenError::OutOfScope) => Err(invalid(
                Refusal::TokenOutOfScope,
                "the admission token does not cover this group",
            )),
            Err(_) => Err(invalid(
                Refusal::TokenInvalid,
                "the admission token was not issued for this relay",
            )),
        }
    }

    /// Counts a session for a group the relay holds nothing for against its address's
    /// `ip_new_groups_per_hour` (once per group within an hour).
    pub(crate) fn admit_new_group(&self, origin: Origin, group: &GroupId) -> Result<(), Refused> {
        let Some(limiter) = &self.new_groups else {
            return Ok(());
        };
        let mut recent = self
            .recent_new_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if recent
            .get(group)
            .is_some_and(|at| at.elapsed() < NEW_GROUP_MEMORY)
        {
            return Ok(());
        }
        match limiter.check_key(&origin) {
            Ok(()) => {
                if recent.len() < MAX_REMEMBERED_NEW_GROUPS {
                    recent.insert(*group, Instant::now());
                }
                Ok(())
            }
            Err(not_until) => Err(Refused::new(
                Refusal::NewGroupsPerIp,
                WireError::new(
                    ErrorCode::TooManyGroups,
                    "too many new groups from this network address",
                )
                .retry_after_ms(retry_ms(wait_of(&not_until))),
            )),
        }
    }

    /// Takes one new connection from `origin`'s bucket; a refusal is counted and audited.
    pub(crate) fn take_connect(&self, metrics: &Metrics, origin: Origin) -> bool {
        let allowed = self
            .ip_connects
            .as_ref()
            .is_none_or(|l| l.check_key(&origin).is_ok());
        if !allowed {
            let subject = Subject {
                origin,
                device: None,
                group: None,
            };
            self.record(metrics, Refusal::ConnectRatePerIp, subject);
        }
        allowed
    }

    /// Takes one push from `origin`'s bucket, or says how long to wait.
    pub(crate) fn take_push(&self, origin: Origin) -> Result<(), Duration> {
        match &self.ip_push {
            Some(limiter) => limiter.check_key(&origin).map_err(|n| wait_of(&n)),
            None => Ok(()),
        }
    }

    /// A new session's own invite-lookup bucket (`None`: unlimited).
    pub(crate) fn session_invite_bucket(&self) -> Option<DefaultDirectRateLimiter> {
        self.session_invite_rate.map(RateLimiter::direct)
    }

    /// Takes one invite lookup from the session's bucket (if any), the address's and the
    /// relay's.
    pub(crate) fn take_invite_lookup(
        &self,
        origin: Origin,
        session: Option<&DefaultDirectRateLimiter>,
    ) -> Result<(), Refused> {
        let limited = |reason, wait: Duration| {
            Refused::new(
                reason,
                WireError::new(ErrorCode::RateLimited, "too many invite lookups")
                    .retry_after_ms(retry_ms(wait)),
            )
        };
        if let Some(l) = session {
            l.check()
                .map_err(|n| limited(Refusal::InviteLookupsSession, wait_of(&n)))?;
        }
        if let Some(l) = &self.ip_invites {
            l.check_key(&origin)
                .map_err(|n| limited(Refusal::InviteLookupsIp, wait_of(&n)))?;
        }
        if let Some(l) = &self.global_invites {
            l.check()
                .map_err(|n| limited(Refusal::InviteLookupsGlobal, wait_of(&n)))?;
        }
        Ok(())
    }

    /// Forgets per-address limiter state that is back to full and groups no longer recent
    /// (called every cleanup interval, so the maps stay as large as recent activity).
    pub(crate) fn forget_idle(&self) {
        for limiter in [
            &self.new_groups,
            &self.ip_connects,
            &self.ip_push,
            &self.ip_invites,
        ]
        .into_iter()
        .flatten()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let mut recent = self
            .recent_new_groups
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        recent.retain(|_, at| at.elapsed() < NEW_GROUP_MEMORY);
        recent.shrink_to_fit();
    }

    /// Counts a refusal and writes its audit line (unless more than `AUDIT_LINES_PER_SEC` are
    /// due: then it is counted as suppressed).
    pub(crate) fn record(&self, metrics: &Metrics, reason: Refusal, subject: Subject<'_>) {
        metrics.admission_refusals_total.inc(reason);
        if self.audit_budget.check().is_err() {
            metrics.audit_suppressed_total.inc();
            return;
        }
        tracing::info!(
            target: "sync_relay::audit",
            event = "refused",
            reason = reason.label(),
            origin = %subject.origin.pseudonym(&self.pseudonym_key),
            device = subject.device.map(DeviceId::short).unwrap_or_default(),
            group = subject.group.map(GroupId::short).unwrap_or_default(),
        );
    }
}

/// A connection's place in the pre-auth budget, from its first packet until its Hello is
/// admitted (or it ends). Dropping it gives the place back.
pub(crate) struct PreAuth {
    /// Where the connection comes from.
    pub(crate) origin: Origin,
    /// When its TLS handshake, stream and Hello must be done.
    pub(crate) deadline: tokio::time::Instant,
    ctx: Arc<RelayCtx>,
    _budget: OwnedSemaphorePermit,
    _per_ip: Held<Origin>,
    on_admit: Option<oneshot::Sender<()>>,
}

impl PreAuth {
    /// Takes a place for a new connection from `origin`, or refuses it (counted and audited).
    pub(crate) fn begin(ctx: &Arc<RelayCtx>, origin: Origin) -> Result<Self, Refusal> {
        let admission = &ctx.admission;
        let refuse = |reason| {
            admission.record(
                &ctx.metrics,
                reason,
                Subject {
                    origin,
                    device: None,
                    group: None,
                },
            );
            reason
        };
        let budget = Arc::clone(&admission.pre_auth)
            .try_acquire_owned()
            .map_err(|_| refuse(Refusal::PreAuthBusy))?;
        let per_ip = admission
            .pre_auth_per_ip
            .try_hold(origin)
            .ok_or_else(|| refuse(Refusal::PreAuthPerIp))?;
        ctx.metrics.pre_auth_connections.inc();
        Ok(Self {
            origin,
            deadline: tokio::time::Instant::now() + ctx.config.hello_timeout,
            ctx: Arc::clone(ctx),
            _budget: budget,
            _per_ip: per_ip,
            on_admit: None,
        })
    }

    /// Whether half or more of the budget (global, or this origin's) is in use: then new
    /// connections should prove their address first (a QUIC retry), so spoofed source
    /// addresses cannot fill it.
    pub(crate) fn under_pressure(ctx: &RelayCtx, origin: &Origin) -> bool {
        let a = &ctx.admission;
        let max = ctx.config.max_pre_auth as usize;
        let per_ip = ctx.config.max_pre_auth_per_ip;
        a.pre_auth.available_permits() * 2 <= max
            || (per_ip != 0 && a.pre_auth_per_ip.held(origin) * 2 >= per_ip)
    }

    /// A receiver told when the connection's session is admitted (the transport then opens
    /// its flow-control window to session size).
    pub(crate) fn on_admit(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.on_admit = Some(tx);
        rx
    }

    /// The session was admitted: the pre-auth place is given back.
    pub(crate) fn admitted(mut self) {
        if let Some(tx) = self.on_admit.take() {
            let _ = tx.send(());
        }
    }

    /// The deadline passed without a valid Hello: counted (the caller writes the audit line
    /// with the typed error it sends, or the connection close).
    pub(crate) fn deadline_passed(&self) {
        self.ctx
            .metrics
            .admission_refusals_total
            .inc(Refusal::PreAuthDeadline);
    }
}

impl Drop for PreAuth {
    fn drop(&mut self) {
        self.ctx.metrics.pre_auth_connections.dec();
    }
}

/// An admitted session's places (slot, address, device) and what its token allows. Dropping
/// it gives the places back.
pub(crate) struct SessionPass {
    _slot: OwnedSemaphorePermit,
    _per_ip: Held<Origin>,
    _per_device: Held<DeviceId>,
    /// A byte quota for the group below the relay's, from the admission token.
    pub(crate) quota_bytes: Option<u64>,
}

#[cfg(test)]
mod tests;
