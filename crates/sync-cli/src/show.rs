//! How things are shown: times, blobs, QR codes.

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use sync_client::Blob;
use sync_types::DeviceId;

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time in milliseconds. Times past the year 9999 (a
/// sender's clock far off) are shown as `after 9999-12-31 23:59:59 UTC`.
pub(crate) fn utc(ms: u64) -> String {
    let mut rfc3339 = String::new();
    let written = UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .map(|t| write!(rfc3339, "{}", humantime::format_rfc3339_seconds(t)));
    if written != Some(Ok(())) {
        return "after 9999-12-31 23:59:59 UTC".to_string();
    }
    // `YYYY-MM-DDTHH:MM:SSZ`, shown with a space and a spelled-out zone.
    format!(
        "{} UTC",
        rfc3339.trim_end_matches('Z').replacen('T', " ", 1)
    )
}

/// The blob's text if it is UTF-8 without control characters other than newline and tab.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data)
        .ok()
        .filter(|t| t.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'))
}

/// One line for a person.
pub(crate) fn blob_line(b: &Blob, own: DeviceId) -> String {
    let from = if b.sender == own {
        "this device".to_string()
    } else {
        let s = b.sender.to_string();
        format!("device {}", s.get(..8).unwrap_or(&s))
    };
    let body = match text(&b.data) {
        Some(t) => t.to_string(),
        None => format!(
            "<{} bytes of binary data; use --raw or --json>",
            b.data.len()
        ),
    };
    format!("#{} {} {from}: {body}", b.cursor, utc(b.timestamp_ms))
}

/// One JSON object (data as base64, and as text when it is text).
pub(crate) fn blob_json(b: &Blob, own: DeviceId) -> serde_json::Value {
    json!({
        "cursor": b.cursor.get(),
        "blob_id": b.blob_id.to_string(),
        "sender": b.sender.to_string(),
        "own": b.sender == own,
        "timestamp_ms": b.timestamp_ms,
        "size": b.data.len(),
        "text": text(&b.data),
        "data_b64": STANDARD.encode(&b.data),
    })
}

/// The QR code of `payload` drawn with Unicode half blocks (light modules on dark, so it scans
/// on dark and light terminals alike when the quiet zone is kept).
pub(crate) fn qr(payload: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(payload.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build()
            + "\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000_123), "2026-11-18 11:06:40 UTC");
        assert_eq!(utc(253_402_300_799_999), "9999-12-31 23:59:59 UTC");
        assert_eq!(utc(253_402_300_800_000), "after 9999-12-31 23:59:59 UTC");
        assert_eq!(utc(u64::MAX), "after 9999-12-31 23:59:59 UTC");
    }

    #[test]
    fn qr_renders() {
        let q = qr("0ksync1:abc").unwrap();
        assert!(q.lines().count() > 10);
    }
}
