//! Why the relay turned a connection or a request away at its front door, and the counter of
//! those refusals by reason that `/metrics` shows.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::{METRIC_PREFIX, header};

macro_rules! refusals {
    ($( $(#[doc = $doc:literal])+ $name:ident = $label:literal, )+) => {
        /// Why the relay's admission refused a connection, a session or a request. Each has a
        /// counter (`admission_refusals_total{reason="…"}`) and an audit line.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Refusal {
            $( $(#[doc = $doc])+ $name, )+
        }

        impl Refusal {
            /// Every reason, in counter order.
            pub const ALL: &'static [Refusal] = &[$(Refusal::$name),+];

            /// The reason's label in metrics and audit lines.
            pub const fn label(self) -> &'static str {
                match self {
                    $( Refusal::$name => $label, )+
                }
            }
        }
    };
}

refusals! {
    /// `max_pre_auth` connections were waiting for their Hello: refused before TLS.
    PreAuthBusy = "pre_auth_busy",
    /// `max_pre_auth_per_ip` connections of this address were waiting for their Hello.
    PreAuthPerIp = "pre_auth_per_ip",
    /// No valid Hello (TLS handshake, stream, first frame) before `hello_timeout`.
    PreAuthDeadline = "pre_auth_deadline",
    /// All `max_sessions` session slots were taken.
    SessionsFull = "sessions_full",
    /// `max_sessions_per_ip` sessions of this address were open.
    SessionsPerIp = "sessions_per_ip",
    /// `max_sessions_per_device` sessions of this device were open.
    SessionsPerDevice = "sessions_per_device",
    /// This address opened `ip_new_groups_per_hour` new groups within the hour.
    NewGroupsPerIp = "new_groups_per_ip",
    /// This address pushed faster than `ip_push_rate`.
    PushRatePerIp = "push_rate_per_ip",
    /// Token admission: the Hello carried no token.
    TokenMissing = "token_missing",
    /// Token admission: the token is malformed or not signed by the operator key.
    TokenInvalid = "token_invalid",
    /// Token admission: the token expired.
    TokenExpired = "token_expired",
    /// Token admission: the token does not cover the Hello's group.
    TokenOutOfScope = "token_out_of_scope",
    /// The session made more than `session_invite_lookups_per_min` invite lookups.
    InviteLookupsSession = "invite_lookups_session",
    /// This address made more than `ip_invite_lookups_per_min` invite lookups.
    InviteLookupsIp = "invite_lookups_ip",
    /// The relay answered `global_invite_lookups_per_min` invite lookups already.
    InviteLookupsGlobal = "invite_lookups_global",
}

/// Refusals counted by reason.
#[derive(Debug)]
pub struct Refusals {
    counts: Vec<AtomicU64>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            counts: Refusal::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Refusals {
    /// Counts one refusal.
    pub fn inc(&self, reason: Refusal) {
        if let Some(c) = self.slot(reason) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals counted for `reason`.
    pub fn get(&self, reason: Refusal) -> u64 {
        self.slot(reason).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn slot(&self, reason: Refusal) -> Option<&AtomicU64> {
        Refusal::ALL
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.counts.get(i))
    }

    pub(crate) fn render(&self, name: &str, help: &str, out: &mut String) {
        header(out, name, help, "counter");
        for (reason, count) in Refusal::ALL.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{METRIC_PREFIX}{name}{{reason=\"{}\"}} {}",
                reason.label(),
                count.load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_by_reason_and_rendered_with_every_label() {
        let r = Refusals::default();
        r.inc(Refusal::SessionsPerIp);
        r.inc(Refusal::SessionsPerIp);
        r.inc(Refusal::TokenExpired);
        assert_eq!(r.get(Refusal::SessionsPerIp), 2);
        assert_eq!(r.get(Refusal::PreAuthBusy), 0);
        assert_eq!(r.total(), 3);
        let mut out = String::new();
        r.render("admission_refusals_total", "Refusals.", &mut out);
        assert!(
            out.contains("sync_relay_admission_refusals_total{reason=\"sessions_per_ip\"} 2\n")
        );
        for reason in Refusal::ALL {
            assert!(
                out.contains(&format!("reason=\"{}\"", reason.label())),
                "{out}"
            );
        }
    }
}
