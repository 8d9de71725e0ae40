//! The figures a run ends with, their ratios to the same-run baselines, and this project's
//! performance targets, each `met` or `not met`:
//!
//! - relay push→ack throughput at least 80 % of raw SQLite inserts, with 1 and with 16 devices;
//! - idle push latency p99 at most 1 ms;
//! - push(A)→notify(B) latency p99 at most 1.5 ms, and every push notified;
//! - a group already holding the preload at least 90 % of an empty group's throughput (against
//!   the single device on a fresh relay, and against an empty group of the same relay);
//! - with the runs under attack: 16-device throughput at least 80 % of the quiet run's, and
//!   idle push p99 at most twice the quiet run's.

use std::fmt;

/// Relay throughput against raw SQLite inserts: at least this fraction.
const THROUGHPUT_VS_SQLITE: f64 = 0.8;
/// Idle push latency p99: at most this many µs.
const IDLE_P99_US: f64 = 1000.0;
/// push→notify latency p99: at most this many µs.
const NOTIFY_P99_US: f64 = 1500.0;
/// Throughput into the full group against an empty one: at least this fraction.
const FULL_VS_EMPTY: f64 = 0.9;
/// 16-device throughput under attack against the quiet run: at least this fraction.
const ATTACKED_VS_QUIET: f64 = 0.8;
/// Idle push p99 under attack against the quiet run: at most this factor.
const ATTACKED_P99_FACTOR: f64 = 2.0;

/// Whether a figure is within its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the target.
    Met,
    /// Outside the target (or not measurable).
    NotMet,
}

impl Verdict {
    fn of(met: bool) -> Self {
        if met { Self::Met } else { Self::NotMet }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Met => "met",
            Self::NotMet => "not met",
        })
    }
}

/// The figures of one run that the ratios and targets are computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Figures {
    /// Blobs preloaded into the full group.
    pub preload: usize,
    /// Raw SQLite inserts, rows/s.
    pub raw_sqlite_rate: f64,
    /// Raw SQLite CPU µs per row.
    pub raw_sqlite_cpu_us: f64,
    /// Raw iroh echo round trip p99, µs.
    pub echo_rtt_p99_us: f64,
    /// Raw iroh pipelined echo, messages/s.
    pub echo_rate: f64,
    /// Echo process CPU µs per message.
    pub echo_cpu_us: f64,
    /// push→ack throughput with 1 device, pushes/s.
    pub one_device_rate: f64,
    /// Relay CPU µs per push with 1 device.
    pub one_device_cpu_us: f64,
    /// push→ack throughput with 16 devices, pushes/s.
    pub sixteen_devices_rate: f64,
    /// Relay CPU µs per push with 16 devices.
    pub sixteen_devices_cpu_us: f64,
    /// Idle push latency p99, µs.
    pub idle_p99_us: f64,
    /// push→notify latency p99, µs.
    pub notify_p99_us: f64,
    /// Pushes with no notify within the wait.
    pub notify_missed: usize,
    /// Throughput into the empty group of the preloaded relay, pushes/s.
    pub empty_group_rate: f64,
    /// Throughput into the full group, pushes/s.
    pub full_group_rate: f64,
    /// The runs under attack, when there were any.
    pub attack: Option<AttackFigures>,
}

/// The figures of the runs repeated while hostile connections attack the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct AttackFigures {
    /// push→ack throughput with 16 devices, pushes/s.
    pub sixteen_devices_rate: f64,
    /// Relay CPU µs per push with 16 devices.
    pub sixteen_devices_cpu_us: f64,
    /// Idle push latency p99, µs.
    pub idle_p99_us: f64,
}

/// `a / b`, 0 when `b` is not positive.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

impl Figures {
    /// Every target with its verdict, in the order [`target_lines`] prints them.
    pub fn verdicts(&self) -> [(&'static str, Verdict); 6] {
        let f = self;
        [
            (
                "throughput vs raw SQLite, 1 device",
                Verdict::of(ratio(f.one_device_rate, f.raw_sqlite_rate) >= THROUGHPUT_VS_SQLITE),
            ),
            (
                "throughput vs raw SQLite, 16 devices",
                Verdict::of(
                    ratio(f.sixteen_devices_rate, f.raw_sqlite_rate) >= THROUGHPUT_VS_SQLITE,
                ),
            ),
            (
                "idle push p99",
                Verdict::of(f.idle_p99_us > 0.0 && f.idle_p99_us <= IDLE_P99_US),
            ),
            (
                "push→notify p99",
                Verdict::of(
                    f.notify_p99_us > 0.0
                        && f.notify_p99_us <= NOTIFY_P99_US
                        && f.notify_missed == 0,
                ),
            ),
            (
                "full group vs fresh relay",
                Verdict::of(ratio(f.full_group_rate, f.one_device_rate) >= FULL_VS_EMPTY),
            ),
            (
                "full group vs empty group",
                Verdict::of(ratio(f.full_group_rate, f.empty_group_rate) >= FULL_VS_EMPTY),
            ),
        ]
    }

    /// The targets of the runs under attack with their verdicts (throughput, then idle p99),
    /// when there were such runs.
    pub fn attack_verdicts(&self) -> Option<[(&'static str, Verdict); 2]> {
        let a = self.attack?;
        Some([
            (
                "16-device throughput under attack vs quiet",
                Verdict::of(
                    ratio(a.sixteen_devices_rate, self.sixteen_devices_rate) >= ATTACKED_VS_QUIET,
                ),
            ),
            (
                "idle push p99 under attack vs quiet",
                Verdict::of(
                    a.idle_p99_us > 0.0
                        && self.idle_p99_us > 0.0
                        && a.idle_p99_us <= ATTACKED_P99_FACTOR * self.idle_p99_us,
                ),
            ),
        ])
    }
}

/// The line of a target on a share (`label`, then `share` and `target` in percent, then the
/// verdict).
fn share_line(label: &str, share: f64, target: f64, verdict: Verdict) -> String {
    format!(
        "{label}{:>6.1} %   target ≥ {:.0} %   {verdict}",
        share * 100.0,
        target * 100.0
    )
}

/// The lines of the targets under attack (none without an attack run).
fn attack_lines(f: &Figures) -> Vec<String> {
    let (Some(a), Some([(_, rate), (_, p99)])) = (f.attack, f.attack_verdicts()) else {
        return Vec::new();
    };
    vec![
        share_line(
            "16-device throughput under attack / quiet:  ",
            ratio(a.sixteen_devices_rate, f.sixteen_devices_rate),
            ATTACKED_VS_QUIET,
            rate,
        ),
        format!(
            "idle push p99 under attack / quiet: {:.1} µs / {:.1} µs = {:.2}×   target ≤ 2×   {p99}",
            a.idle_p99_us,
            f.idle_p99_us,
            ratio(a.idle_p99_us, f.idle_p99_us)
        ),
        format!(
            "relay CPU per push under attack / quiet, 16 devices: {:.1} µs / {:.1} µs = {:.2}×   (no target)",
            a.sixteen_devices_cpu_us,
            f.sixteen_devices_cpu_us,
            ratio(a.sixteen_devices_cpu_us, f.sixteen_devices_cpu_us)
        ),
    ]
}

/// The ratio lines, each target's with its verdict.
pub fn target_lines(f: &Figures) -> Vec<String> {
    let [raw1, raw16, idle, notify, full_fresh, full_same] = f.verdicts().map(|(_, v)| v);
    let pct = |a, b| ratio(a, b) * 100.0;
    let n = f.preload;
    vec![
        share_line(
            "relay throughput / raw SQLite, 1 device:    ",
            ratio(f.one_device_rate, f.raw_sqlite_rate),
            THROUGHPUT_VS_SQLITE,
            raw1,
        ),
        share_line(
            "relay throughput / raw SQLite, 16 devices:  ",
            ratio(f.sixteen_devices_rate, f.raw_sqlite_rate),
            THROUGHPUT_VS_SQLITE,
            raw16,
        ),
        format!(
            "relay throughput / raw iroh pipelined echo: {:>6.1} % (1 device), {:.1} % (16)   (no target: the QUIC-only ceiling)",
            pct(f.one_device_rate, f.echo_rate),
            pct(f.sixteen_devices_rate, f.echo_rate)
        ),
        format!(
            "relay CPU per push / raw SQLite CPU per row: {:.1}× (1 device), {:.1}× (16); echo process CPU per msg / relay CPU per push: {:.0} % (1 device)",
            ratio(f.one_device_cpu_us, f.raw_sqlite_cpu_us),
            ratio(f.sixteen_devices_cpu_us, f.raw_sqlite_cpu_us),
            pct(f.echo_cpu_us, f.one_device_cpu_us)
        ),
        format!(
            "idle push p99: {:.1} µs = {:.1}× iroh RTT p99   target ≤ 1000 µs   {idle}",
            f.idle_p99_us,
            ratio(f.idle_p99_us, f.echo_rtt_p99_us)
        ),
        format!(
            "push→notify p99: {:.1} µs = {:.1}× iroh RTT p99, {} without a notify   target ≤ 1500 µs, none missing   {notify}",
            f.notify_p99_us,
            ratio(f.notify_p99_us, f.echo_rtt_p99_us),
            f.notify_missed
        ),
        share_line(
            &format!("{n}-blob group / empty group (1-device run of the fresh relay): "),
            ratio(f.full_group_rate, f.one_device_rate),
            FULL_VS_EMPTY,
            full_fresh,
        ),
        share_line(
            &format!("{n}-blob group / empty group (same relay):  "),
            ratio(f.full_group_rate, f.empty_group_rate),
            FULL_VS_EMPTY,
            full_same,
        ),
    ]
    .into_iter()
    .chain(attack_lines(f))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_met() -> Figures {
        Figures {
            preload: 1000,
            raw_sqlite_rate: 100.0,
            raw_sqlite_cpu_us: 10.0,
            echo_rtt_p99_us: 100.0,
            echo_rate: 200.0,
            echo_cpu_us: 5.0,
            one_device_rate: 80.0,
            one_device_cpu_us: 20.0,
            sixteen_devices_rate: 90.0,
            sixteen_devices_cpu_us: 15.0,
            idle_p99_us: 1000.0,
            notify_p99_us: 1500.0,
            notify_missed: 0,
            empty_group_rate: 100.0,
            full_group_rate: 90.0,
            attack: None,
        }
    }

    /// The figures of a run under attack on both boundaries: 80 % of the quiet throughput,
    /// twice the quiet p99.
    fn attacked_on_the_boundaries() -> Figures {
        under_attack(AttackFigures {
            sixteen_devices_rate: 72.0,
            sixteen_devices_cpu_us: 30.0,
            idle_p99_us: 2000.0,
        })
    }

    /// [`all_met`] with a run under attack that measured `attack`.
    fn under_attack(attack: AttackFigures) -> Figures {
        Figures {
            attack: Some(attack),
            ..all_met()
        }
    }

    fn attack_verdicts(f: &Figures) -> Vec<Verdict> {
        f.attack_verdicts()
            .unwrap()
            .iter()
            .map(|(_, v)| *v)
            .collect()
    }

    #[test]
    fn without_an_attack_run_there_is_no_attack_target() {
        assert!(all_met().attack_verdicts().is_none());
        assert!(
            !target_lines(&all_met())
                .iter()
                .any(|l| l.contains("under attack"))
        );
    }

    #[test]
    fn attack_targets_are_met_on_their_boundaries_and_missed_beyond() {
        let f = attacked_on_the_boundaries();
        assert_eq!(attack_verdicts(&f), [Verdict::Met, Verdict::Met]);
        let lines = target_lines(&f);
        assert_eq!(lines.len(), 11);
        assert!(lines[8].starts_with("16-device throughput under attack / quiet:"));
        assert!(lines[8].contains("80.0 %") && lines[8].ends_with("   met"));
        assert!(lines[9].contains("= 2.00×") && lines[9].ends_with("   met"));
        assert!(lines[10].contains("= 2.00×") && lines[10].ends_with("(no target)"));

        let attacked = f.attack.unwrap();
        let slower = under_attack(AttackFigures {
            sixteen_devices_rate: 71.9,
            ..attacked
        });
        assert_eq!(attack_verdicts(&slower), [Verdict::NotMet, Verdict::Met]);
        let later = under_attack(AttackFigures {
            idle_p99_us: 2000.1,
            ..attacked
        });
        assert_eq!(attack_verdicts(&later), [Verdict::Met, Verdict::NotMet]);
        assert!(target_lines(&later)[9].ends_with("not met"));
        let unmeasured = Figures {
            attack: Some(AttackFigures::default()),
            ..Figures::default()
        };
        assert_eq!(
            attack_verdicts(&unmeasured),
            [Verdict::NotMet, Verdict::NotMet]
        );
        assert!(
            target_lines(&unmeasured)
                .iter()
                .all(|l| !l.contains("NaN") && !l.contains("inf"))
        );
    }

    fn verdicts(f: &Figures) -> Vec<Verdict> {
        f.verdicts().iter().map(|(_, v)| *v).collect()
    }

    #[test]
    fn figures_on_the_boundaries_meet_every_target() {
        let f = all_met();
        assert!(verdicts(&f).iter().all(|v| *v == Verdict::Met));
        let lines = target_lines(&f);
        assert_eq!(lines.len(), 8);
        assert!(lines[0].contains("80.0 %") && lines[0].ends_with("   met"));
        assert!(lines[6].starts_with("1000-blob group") && lines[6].contains("112.5 %"));
        assert!(!lines.iter().any(|l| l.contains("not met")));
    }

    #[test]
    fn each_target_is_missed_on_its_own_figure() {
        /// A change of the figures that misses one target.
        type Miss = fn(&mut Figures);
        // Each target's index, and the change that misses it.
        let misses: [(usize, Miss); 6] = [
            (0, |f| f.one_device_rate = 79.9),
            (1, |f| f.sixteen_devices_rate = 79.9),
            (2, |f| f.idle_p99_us = 1000.1),
            (3, |f| f.notify_p99_us = 1500.1),
            (4, |f| f.one_device_rate = 101.0),
            (5, |f| f.empty_group_rate = 101.0),
        ];
        for (missed, miss) in misses {
            let mut f = all_met();
            miss(&mut f);
            let v = verdicts(&f);
            assert_eq!(v[missed], Verdict::NotMet, "target {missed} of {f:?}");
            let mut others = v.iter().enumerate().filter(|(i, _)| *i != missed);
            assert!(others.all(|(_, v)| *v == Verdict::Met), "{v:?}");
        }
        let missing = Figures {
            notify_missed: 1,
            ..all_met()
        };
        assert_eq!(
            verdicts(&missing)[3],
            Verdict::NotMet,
            "a missing notify misses"
        );
        assert!(target_lines(&missing)[5].ends_with("not met"));
    }

    #[test]
    fn unmeasured_figures_are_not_met_and_print_without_dividing_by_zero() {
        let f = Figures::default();
        assert!(verdicts(&f).iter().all(|v| *v == Verdict::NotMet));
        assert!(
            target_lines(&f)
                .iter()
                .all(|l| !l.contains("NaN") && !l.contains("inf"))
        );
    }
}
