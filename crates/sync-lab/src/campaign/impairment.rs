//! `campaign --local --impair`: the UDP impairment proxy between the campaign device and the
//! relay, switched on for the phases it applies to, with a check that each impaired phase's
//! traffic really crossed it.

use std::net::SocketAddr;
use std::sync::Mutex;

use serde_json::json;

use super::PhaseArg;
use super::session::Session;
use crate::impair::{DirectionConfig, ImpairConfig, ImpairError, Proxy, ProxyHandle, ProxyStats};
use crate::report::{Impairment as Period, PhaseResult, PhaseStatus};
use crate::values::{parse_byte_rate, parse_duration, parse_probability};

/// Parses an impairment spec (`loss=5%,delay=20ms,…`) into one direction's configuration.
pub(super) fn parse_spec(spec: &str) -> Result<DirectionConfig, String> {
    let mut d = DirectionConfig::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not key=value"))?;
        let v = v.trim();
        let value_error = |e: crate::values::InvalidValue| e.to_string();
        match k.trim() {
            "delay" => d.delay = parse_duration(v).map_err(value_error)?,
            "jitter" => d.jitter = parse_duration(v).map_err(value_error)?,
            "loss" => d.loss = parse_probability(v).map_err(value_error)?,
            "reorder" => d.reorder = parse_probability(v).map_err(value_error)?,
            "duplicate" => d.duplicate = parse_probability(v).map_err(value_error)?,
            "rate" => d.rate = Some(parse_byte_rate(v).map_err(value_error)?),
            other => {
                return Err(format!(
                    "unknown key {other:?} (delay, jitter, loss, reorder, duplicate, rate)"
                ));
            }
        }
    }
    d.validate().map_err(|e| e.to_string())?;
    Ok(d)
}

/// The impairment proxy of a campaign and the periods it impaired.
pub(super) struct Impairment {
    proxy: ProxyHandle,
    spec: String,
    config: ImpairConfig,
    phases: Vec<PhaseArg>,
    periods: Mutex<Vec<Period>>,
}

/// Counters when an impaired phase began.
pub(super) struct Mark {
    from_s: f64,
    stats: ProxyStats,
}

impl Impairment {
    /// Starts the proxy on 127.0.0.1 in front of `upstream`, forwarding untouched until a phase
    /// in `phases` (empty: every phase) begins.
    pub(super) async fn start(
        upstream: SocketAddr,
        spec: &str,
        direction: DirectionConfig,
        phases: Vec<PhaseArg>,
    ) -> Result<Impairment, ImpairError> {
        let proxy = Proxy::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            upstream,
            ImpairConfig::default(),
        )
        .await?;
        Ok(Impairment {
            proxy,
            spec: spec.to_string(),
            config: ImpairConfig::symmetric(direction),
            phases,
            periods: Mutex::new(Vec::new()),
        })
    }

    /// Where the campaign device sends its packets.
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.proxy.local_addr()
    }

    fn every_phase(&self) -> bool {
        self.phases.is_empty() || self.phases.contains(&PhaseArg::All)
    }

    fn applies(&self, phase: PhaseArg) -> bool {
        self.every_phase() || self.phases.contains(&phase)
    }

    /// The report's setup line.
    pub(super) fn describe(&self) -> String {
        let during = if self.every_phase() {
            "every phase".to_string()
        } else {
            let names: Vec<String> = self.phases.iter().map(|p| p.name()).collect();
            names.join(", ")
        };
        format!(
            "`{}` both directions during {during}; campaign device (127.0.0.1) → proxy {} → relay {}; the responder dials the relay directly",
            self.spec,
            self.proxy.local_addr(),
            self.proxy.upstream()
        )
    }

    /// The impaired periods so far.
    pub(super) fn periods(&self) -> Vec<Period> {
        self.periods.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The proxy's counters.
    pub(super) fn stats(&self) -> ProxyStats {
        self.proxy.stats()
    }

    /// Stops the proxy.
    pub(super) fn shutdown(&self) {
        self.proxy.shutdown();
    }
}

/// Switches the impairment on for `phase` (when it applies); the mark to end it with.
pub(super) fn begin(session: &Session, phase: PhaseArg) -> Option<Mark> {
    let imp = session.impair.as_ref()?;
    if !imp.applies(phase) {
        return None;
    }
    if let Err(e) = imp.proxy.set_config(imp.config.clone()) {
        tracing::warn!(error = %e, "cannot apply the impairment");
        return None;
    }
    session.emit(
        &phase.name(),
        "impairment_start",
        &[("spec", json!(imp.spec))],
    );
    Some(Mark {
        from_s: session.log.elapsed_s(),
        stats: imp.proxy.stats(),
    })
}

/// Switches the impairment off, records the period and checks that the phase's traffic went
/// through the proxy (a bypass would make the phase meaningless: it then fails).
pub(super) fn end(session: &Session, mark: Option<Mark>, result: &mut PhaseResult) {
    let (Some(imp), Some(mark)) = (session.impair.as_ref(), mark) else {
        return;
    };
    let _ = imp.proxy.set_config(ImpairConfig::default());
    let now = imp.proxy.stats();
    let to_s = session.log.elapsed_s();
    let up = now.up.received - mark.stats.up.received;
    let down = now.down.received - mark.stats.down.received;
    let dropped = (now.up.dropped() + now.down.dropped())
        - (mark.stats.up.dropped() + mark.stats.down.dropped());
    session.emit(
        &result.name,
        "impairment_end",
        &[
            ("spec", json!(imp.spec)),
            ("packets_up", json!(up)),
            ("packets_down", json!(down)),
            ("dropped", json!(dropped)),
        ],
    );
    if let Ok(mut p) = imp.periods.lock() {
        p.push(Period {
            from_s: mark.from_s,
            to_s,
            spec: imp.spec.clone(),
        });
    }
    result.notes.push(format!(
        "impaired ({}): the proxy carried {up} packets up and {down} down, dropped {dropped}",
        imp.spec
    ));
    let sent = result.summary.as_ref().map_or(0, |s| s.sent);
    if sent > 0 && (up == 0 || down == 0) {
        result.status = PhaseStatus::Fail;
        result
            .notes
            .push("traffic bypassed the impairment proxy: results are not impaired".into());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn specs_parse_into_one_direction() {
        let d =
            parse_spec("loss=5%, delay=20ms,jitter=2ms,reorder=0.1,duplicate=1%,rate=1M").unwrap();
        assert_eq!(d.loss, 0.05);
        assert_eq!(d.delay, Duration::from_millis(20));
        assert_eq!(d.jitter, Duration::from_millis(2));
        assert_eq!((d.reorder, d.duplicate), (0.1, 0.01));
        assert_eq!(d.rate, Some(1_000_000));
        assert_eq!(parse_spec("").unwrap(), DirectionConfig::default());
        for bad in ["loss", "speed=2", "loss=200%", "delay=fast"] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }
}
