//! Human-written values of the lab's command lines: durations, probabilities, byte rates and
//! numbers within bounds. Each parser is usable as a clap `value_parser`.

use std::time::Duration;

/// Longest duration accepted anywhere in the lab.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// A value that does not parse or is out of range; the message says which and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting: {0}")]
pub struct InvalidValue(String);

/// A duration of 0 to 1 h, as [`humantime`] reads it (`250us`, `20ms`, `1.5s`, `2m`, `1h 30m`);
/// a bare number is milliseconds (`20` = `20ms`).
pub fn parse_duration(text: &str) -> Result<Duration, InvalidValue> {
    let t = text.trim();
    let parsed = if t.parse::<f64>().is_ok() {
        humantime::parse_duration(&format!("{t}ms"))
    } else {
        humantime::parse_duration(t)
    };
    let d = parsed.map_err(|_| {
        InvalidValue(format!(
            "not a duration: {text:?} (e.g. 20ms, 1.5s; a bare number is ms)"
        ))
    })?;
    if d > MAX_DURATION {
        return Err(InvalidValue(format!(
            "duration out of range (0 to 1 h): {text:?}"
        )));
    }
    Ok(d)
}

/// A probability: `5%` or `0.05`.
pub fn parse_probability(text: &str) -> Result<f64, InvalidValue> {
    let t = text.trim();
    let (num, scale) = match t.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (t, 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| InvalidValue(format!("not a probability: {text:?} (e.g. 5% or 0.05)")))?;
    let p = v * scale;
    if !(0.0..=1.0).contains(&p) {
        return Err(InvalidValue(format!(
            "probability out of range (0 to 1, or 0% to 100%): {text:?}"
        )));
    }
    Ok(p)
}

/// A rate in bytes per second: `125000`, `500k`, `2M`, `1G` (decimal, optional `B`/`B/s`), or
/// in bits: `8mbit`, `100kbit`.
pub fn parse_byte_rate(text: &str) -> Result<u64, InvalidValue> {
    let lower = text.trim().to_ascii_lowercase();
    let (body, bits) = match lower.strip_suffix("bit") {
        Some(b) => (b.to_string(), true),
        None => (
            lower
                .trim_end_matches("/s")
                .trim_end_matches('b')
                .to_string(),
            false,
        ),
    };
    let (num, mult) = match body.chars().last() {
        Some('k') => (&body[..body.len() - 1], 1e3),
        Some('m') => (&body[..body.len() - 1], 1e6),
        Some('g') => (&body[..body.len() - 1], 1e9),
        _ => (body.as_str(), 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| {
        InvalidValue(format!(
            "not a rate: {text:?} (bytes/s, e.g. 500k, 2M, 8mbit)"
        ))
    })?;
    let bytes = v * mult / if bits { 8.0 } else { 1.0 };
    if !bytes.is_finite() || !(1.0..=1e12).contains(&bytes) {
        return Err(InvalidValue(format!("rate out of range: {text:?}")));
    }
    Ok(bytes as u64)
}

/// A finite number for which `within` holds; otherwise the error `expected` (e.g. "must be
/// 0.001 to 1000 messages/s"). NaN and infinities are never accepted: they would make every
/// comparison with a limit pass or fail.
pub fn parse_number(
    text: &str,
    within: impl Fn(f64) -> bool,
    expected: &str,
) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if v.is_finite() && within(v) {
        Ok(v)
    } else {
        Err(expected.to_string())
    }
}

/// A rate in messages per second from `min` to `max`; `unit` follows `messages/s` in the
/// message of a rate out of range (e.g. ` per device`).
pub fn parse_rate_within(text: &str, min: f64, max: f64, unit: &str) -> Result<f64, String> {
    parse_number(
        text,
        |r| (min..=max).contains(&r),
        &format!("must be {min} to {max} messages/s{unit}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of `good` parses to its value, each of `bad` is refused.
    fn check<T: PartialEq + std::fmt::Debug, E>(
        parse: fn(&str) -> Result<T, E>,
        good: &[(&str, T)],
        bad: &[&str],
    ) {
        for (text, want) in good {
            assert_eq!(parse(text).ok().as_ref(), Some(want), "{text:?}");
        }
        for text in bad {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn durations() {
        check(
            parse_duration,
            &[
                ("20ms", Duration::from_millis(20)),
                ("20", Duration::from_millis(20)),
                ("0", Duration::ZERO),
                ("1.5s", Duration::from_millis(1500)),
                ("0.5s", Duration::from_millis(500)),
                ("250us", Duration::from_micros(250)),
                ("250µs", Duration::from_micros(250)),
                ("2m", Duration::from_secs(120)),
                (" 2s ", Duration::from_secs(2)),
                ("1h", Duration::from_secs(3600)),
            ],
            // "61m": more than an hour.
            &["61m", "-1ms", "-1", "fast", ""],
        );
    }

    #[test]
    fn probabilities() {
        check(
            parse_probability,
            &[("5%", 0.05), ("0.25", 0.25)],
            &["101%", "1.5"],
        );
    }

    #[test]
    fn rates() {
        check(
            parse_byte_rate,
            &[
                ("125000", 125_000),
                ("500k", 500_000),
                ("2MB/s", 2_000_000),
                ("8mbit", 1_000_000),
            ],
            &["0", "lots"],
        );
    }

    #[test]
    fn numbers_within_bounds() {
        let positive = |t| parse_number(t, |v| v > 0.0, "must be above 0");
        assert_eq!(positive(" 2.5 "), Ok(2.5));
        assert_eq!(positive("0"), Err("must be above 0".to_string()));
        assert_eq!(positive("x"), Err("\"x\" is not a number".to_string()));
        for bad in ["NaN", "inf", "-inf"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_within_bounds_name_their_bounds() {
        let per_device = |t| parse_rate_within(t, 0.1, 50.0, " per device");
        assert_eq!(per_device("50"), Ok(50.0));
        assert_eq!(
            per_device("0"),
            Err("must be 0.1 to 50 messages/s per device".to_string())
        );
        assert_eq!(
            parse_rate_within("20001", 0.001, 20_000.0, ""),
            Err("must be 0.001 to 20000 messages/s".to_string())
        );
    }
}
