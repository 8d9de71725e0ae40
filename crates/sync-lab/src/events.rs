//! The campaign's JSONL event stream: one JSON object per line, to stdout and to
//! `events.jsonl`.
//!
//! Every line has `phase` (string), `event` (string) and `elapsed_s` (seconds since the
//! campaign started, number) first, then the event's own fields, e.g.
//! `{"phase":"ping","event":"ping","elapsed_s":1.5,"seq":1,"rtt_ms":45.2,"path":"direct"}`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;

/// Fields every event line carries.
pub const REQUIRED_FIELDS: [&str; 3] = ["phase", "event", "elapsed_s"];

/// Where event lines go besides the file.
pub type Echo = Box<dyn Fn(&str) + Send + Sync>;

struct Inner {
    file: BufWriter<File>,
    error: Option<std::io::Error>,
}

/// Writes event lines to a file and hands each to an echo (stdout, possibly around a progress
/// bar). Safe to share between tasks.
pub struct EventLog {
    start: Instant,
    inner: Mutex<Inner>,
    echo: Echo,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").finish_non_exhaustive()
    }
}

/// Rounds seconds or milliseconds to three decimals for output.
pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// One event line: `phase`, `event`, `elapsed_s`, then `fields` in order. Fields named like a
/// required field are skipped.
pub fn line(phase: &str, event: &str, elapsed_s: f64, fields: &[(&str, Value)]) -> String {
    let mut out = String::with_capacity(128);
    out.push('{');
    push_field(&mut out, "phase", &Value::from(phase));
    out.push(',');
    push_field(&mut out, "event", &Value::from(event));
    out.push(',');
    push_field(&mut out, "elapsed_s", &Value::from(round3(elapsed_s)));
    for (k, v) in fields {
        if REQUIRED_FIELDS.contains(k) {
            continue;
        }
        out.push(',');
        push_field(&mut out, k, v);
    }
    out.push('}');
    out
}

fn push_field(out: &mut String, key: &str, value: &Value) {
    out.push_str(&Value::from(key).to_string());
    out.push(':');
    out.push_str(&value.to_string());
}

impl EventLog {
    /// Creates (truncates) `path`; `start` is time zero of `elapsed_s`.
    pub fn create(path: &Path, start: Instant, echo: Echo) -> std::io::Result<EventLog> {
        let file = BufWriter::new(File::create(path)?);
        Ok(EventLog {
            start,
            inner: Mutex::new(Inner { file, error: None }),
            echo,
        })
    }

    /// Seconds since time zero.
    pub fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Writes one event now. A write error is kept and reported by [`EventLog::finish`].
    pub fn emit(&self, phase: &str, event: &str, fields: &[(&str, Value)]) {
        let text = line(phase, event, self.elapsed_s(), fields);
        if let Ok(mut inner) = self.inner.lock()
            && inner.error.is_none()
            && let Err(e) = writeln!(inner.file, "{text}")
        {
            inner.error = Some(e);
        }
        (self.echo)(&text);
    }

    /// Flushes the file; the first write error, if any.
    pub fn finish(&self) -> std::io::Result<()> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| std::io::Error::other("event log poisoned"))?;
        if let Some(e) = inner.error.take() {
            return Err(e);
        }
        inner.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_with_the_required_fields_and_are_json() {
        let l = line(
            "ping",
            "ping",
            1.23456,
            &[
                ("seq", 1.into()),
                ("rtt_ms", 45.2.into()),
                ("phase", "x".into()),
            ],
        );
        assert_eq!(
            l,
            r#"{"phase":"ping","event":"ping","elapsed_s":1.235,"seq":1,"rtt_ms":45.2}"#
        );
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["seq"], 1);
    }

    #[test]
    fn writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let log = EventLog::create(&path, Instant::now(), Box::new(|_| {})).unwrap();
        log.emit("burst", "burst_round", &[("round", 1.into())]);
        log.emit("burst", "burst_round", &[("round", 2.into())]);
        log.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        for l in text.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            for f in REQUIRED_FIELDS {
                assert!(v.get(f).is_some());
            }
        }
    }
}
