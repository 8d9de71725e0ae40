//! `flush`: send the queued pushes now and wait (bounded by --wait) for the relay to
//! acknowledge them.

use serde_json::json;

use crate::device::Ctx;
use crate::fail::{Failure, from_client};
use crate::out::{self, outln};

/// Sends the outbox; says how many went out and how many are left.
pub(crate) async fn run(ctx: &Ctx) -> Result<(), Failure> {
    let (_device, group, relay) = ctx.ready()?;
    let before = ctx.pending(&group)?;
    let client = ctx
        .connect_online(&relay, &format!("; {before} push(es) stay queued"))
        .await?;
    let result = client.flush(ctx.wait).await;
    let left = client.status().outbox_len;
    client.close().await;
    let sent = before.saturating_sub(left);
    if ctx.json {
        out::json(&json!({ "sent": sent, "pending": left }))?;
    } else {
        outln!("sent {sent} queued push(es); {left} pending")?;
    }
    result.map_err(|e| from_client(e, &relay.to_string()))
}
