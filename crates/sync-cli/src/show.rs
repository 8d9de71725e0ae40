//! How things are shown: times, blobs, QR codes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use sync_client::Blob;
use sync_types::DeviceId;

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time in milliseconds.
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
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
    }

    #[test]
    fn qr_renders() {
        let q = qr("0ksync1:abc").unwrap();
        assert!(q.lines().count() > 10);
    }
}
