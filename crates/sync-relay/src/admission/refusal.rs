//! Why the relay turned a connection or a request away at its front door; `/metrics` counts
//! them by reason.

use crate::metrics::{ByReason, Reason};

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
    /// This address opened connections faster than `ip_connect_rate`: refused before TLS.
    ConnectRatePerIp = "connect_rate_per_ip",
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

impl Reason for Refusal {
    const ALL: &'static [Self] = Refusal::ALL;

    fn label(self) -> &'static str {
        Refusal::label(self)
    }
}

/// Refusals at admission counted by reason.
pub type Refusals = ByReason<Refusal>;

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
        let m = crate::metrics::Metrics::default();
        m.admission_refusals_total.inc(Refusal::SessionsPerIp);
        let out = m.render(Default::default(), Default::default());
        let line = "sync_relay_admission_refusals_total{reason=\"sessions_per_ip\"} 1\n";
        assert!(out.contains(line), "{out}");
        for reason in Refusal::ALL {
            let label = format!("reason=\"{}\"", reason.label());
            assert!(out.contains(&label), "{out}");
        }
    }
}
