//! `devices`: the devices seen in the group and their last activity. It only reads the store,
//! so it takes no lock and works while another `sync-cli` uses the data directory.

use serde_json::json;

use crate::device::{Ctx, stored_group};
use crate::fail::{Failure, from_store};
use crate::out::{self, outln};
use crate::show;

/// Lists the senders of pulled blobs, and this device.
pub(crate) fn run(ctx: &Ctx) -> Result<(), Failure> {
    let (store, device) = ctx.open_device()?;
    let (group_id, _) = stored_group(&store)?;
    let name = store.device_name().map_err(from_store)?.unwrap_or_default();
    let seen = store.devices(&group_id).map_err(from_store)?;
    let own = device.device_id();
    if ctx.json {
        let list: Vec<_> = seen
            .iter()
            .map(|d| {
                json!({
                    "device_id": d.device_id.to_string(),
                    "this_device": d.device_id == own,
                    "last_seen_ms": d.last_seen_ms,
                    "blobs": d.blobs,
                })
            })
            .collect();
        out::json(&json!({ "group_id": group_id.to_string(), "devices": list }))?;
        return Ok(());
    }
    outln!("group {group_id}")?;
    if !seen.iter().any(|d| d.device_id == own) {
        outln!("  {own}  this device ({name}), nothing sent yet")?;
    }
    for d in &seen {
        let who = if d.device_id == own {
            format!("this device ({name})")
        } else {
            "other device".to_string()
        };
        outln!(
            "  {}  {who}, {} blob(s), last active {}",
            d.device_id,
            d.blobs,
            show::utc(d.last_seen_ms)
        )?;
    }
    if seen.iter().all(|d| d.device_id == own) {
        outln!("(other devices appear here once you have pulled something from them)")?;
    }
    Ok(())
}
