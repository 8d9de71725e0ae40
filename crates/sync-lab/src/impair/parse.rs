//! Parsing of the command line's and the HTTP control's human-written values.

use std::time::Duration;

use super::ImpairError;

/// A duration: `250us`, `20ms`, `1.5s`, `2m`; a bare number is milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration, ImpairError> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix("µs") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1e-3)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| ImpairError::Invalid(format!("not a duration: {text:?} (e.g. 20ms, 1.5s)")))?;
    let secs = v * scale;
    if !secs.is_finite() || !(0.0..=3600.0).contains(&secs) {
        return Err(ImpairError::Invalid(format!(
            "duration out of range (0 to 1 h): {text:?}"
        )));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A probability: `5%` or `0.05`.
pub fn parse_probability(text: &str) -> Result<f64, ImpairError> {
    let t = text.trim();
    let (num, scale) = match t.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (t, 1.0),
    };
    let v: f64 = num.trim().parse().map_err(|_| {
        ImpairError::Invalid(format!("not a probability: {text:?} (e.g. 5% or 0.05)"))
    })?;
    let p = v * scale;
    if !(0.0..=1.0).contains(&p) {
        return Err(ImpairError::Invalid(format!(
            "probability out of range (0 to 1, or 0% to 100%): {text:?}"
        )));
    }
    Ok(p)
}

/// A rate in bytes per second: `125000`, `500k`, `2M`, `1G` (decimal, optional `B`/`B/s`), or
/// in bits: `8mbit`, `100kbit`.
pub fn parse_rate(text: &str) -> Result<u64, ImpairError> {
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
        ImpairError::Invalid(format!(
            "not a rate: {text:?} (bytes/s, e.g. 500k, 2M, 8mbit)"
        ))
    })?;
    let bytes = v * mult / if bits { 8.0 } else { 1.0 };
    if !bytes.is_finite() || !(1.0..=1e12).contains(&bytes) {
        return Err(ImpairError::Invalid(format!("rate out of range: {text:?}")));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("20").unwrap(), Duration::from_millis(20));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("-1ms").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn probabilities() {
        assert_eq!(parse_probability("5%").unwrap(), 0.05);
        assert_eq!(parse_probability("0.25").unwrap(), 0.25);
        assert!(parse_probability("101%").is_err());
        assert!(parse_probability("1.5").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("125000").unwrap(), 125_000);
        assert_eq!(parse_rate("500k").unwrap(), 500_000);
        assert_eq!(parse_rate("2MB/s").unwrap(), 2_000_000);
        assert_eq!(parse_rate("8mbit").unwrap(), 1_000_000);
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("lots").is_err());
    }
}
