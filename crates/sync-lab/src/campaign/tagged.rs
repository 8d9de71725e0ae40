//! The texts of the messages the group and failover phases' own devices push,
//! `<prefix><device>:<seq>:<rest>`, and reading them back.

/// The text of message `seq` of device `device`, tagged with `prefix`, ending in `rest`.
pub(super) fn text(prefix: &str, device: usize, seq: u32, rest: &str) -> String {
    format!("{prefix}{device}:{seq}:{rest}")
}

/// `(device, seq)` of a text [`text`] made with `prefix`; `None` for anything else.
pub(super) fn parse(prefix: &str, data: &[u8]) -> Option<(usize, u32)> {
    let text = std::str::from_utf8(data).ok()?;
    let mut parts = text.strip_prefix(prefix)?.splitn(3, ':');
    let device = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((device, seq))
}
