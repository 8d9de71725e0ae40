//! `status`: the device, its group and relays (which one answers now), whether a relay answers
//! now, the cursor, and the pushes waiting to be sent (connecting sends them).

use serde_json::json;
use sync_crypto::GroupDescriptor;

use crate::device::{Ctx, stored_group, stored_relay_in_use, stored_relays};
use crate::fail::{Failure, from_store};
use crate::out::{self, outln};

/// Prints the device's state as it is now.
pub(crate) async fn run(ctx: &Ctx) -> Result<(), Failure> {
    let (store, device) = ctx.open_device()?;
    let name = store.device_name().map_err(from_store)?.unwrap_or_default();
    let (group_id, group) = stored_group(&store)?;
    let relays = stored_relays(&store)?;
    let last_used = stored_relay_in_use(&store)?;
    // Offline, the cursor shown is the one of the relay last used (cursors are per relay).
    let cursor_relay = last_used
        .and_then(|id| relays.iter().find(|r| r.id == id))
        .unwrap_or(relays.first());
    let stored_cursor = store
        .cursor(&group_id, &cursor_relay.id)
        .map_err(from_store)?;
    // Counted before connecting: a session sends the outbox as soon as it opens.
    let pending_before = store.outbox_len(&group_id).map_err(from_store)?;
    drop(store);
    let (client, online) = ctx.connect(&relays).await?;
    let in_use = ctx
        .relay_in_use()
        .filter(|_| online)
        .and_then(|id| relays.iter().find(|r| r.id == id));
    if online {
        let _ = client.flush(ctx.wait).await;
    }
    let after = client.status();
    let rewound = super::pull::rewound_warning(&client);
    client.close().await;
    let sent_now = pending_before.saturating_sub(after.outbox_len);
    let resume = if online {
        after.resume_cursor
    } else {
        stored_cursor
    };
    let kind = match group.descriptor {
        GroupDescriptor::Passphrase { .. } => "passphrase",
        _ => "random key",
    };
    if ctx.json {
        out::json(&json!({
            "device_id": device.device_id().to_string(),
            "device_name": name,
            "group_id": group_id.to_string(),
            "relay": in_use.unwrap_or(relays.first()).to_string(),
            "relays": relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "relay_in_use": in_use.map(|r| r.id.to_string()),
            "online": online,
            "resume_cursor": resume.get(),
            "relay_max_cursor": online.then(|| after.relay_max_cursor.get()),
            "pending": after.outbox_len,
            "sent_now": sent_now,
            "relay_rewound": after.relay_rewound.map(|(was, from)| json!({
                "resume_was": was.get(),
                "resume_from": from.get(),
            })),
        }))?;
    } else {
        outln!("device:     {} ({name})", device.device_id())?;
        outln!("group:      {group_id} ({kind})")?;
        if relays.len() == 1 {
            outln!("relay:      {}", relays.first())?;
        } else {
            for (i, r) in relays.iter().enumerate() {
                let label = if i == 0 { "relays:" } else { "" };
                let mark = if in_use.is_some_and(|u| u.id == r.id) {
                    "  (connected)"
                } else {
                    ""
                };
                outln!("{label:<11} {}. {r}{mark}", i + 1)?;
            }
        }
        if online {
            outln!("connection: online")?;
            outln!(
                "cursor:     pulled up to {resume}; relay is at {}",
                after.relay_max_cursor
            )?;
        } else {
            outln!("connection: offline (relay unreachable at {relays})")?;
            outln!("cursor:     pulled up to {resume}")?;
        }
        let sent = if sent_now > 0 {
            format!(" ({sent_now} sent just now)")
        } else {
            String::new()
        };
        outln!(
            "pending:    {} push(es) in the outbox{sent}",
            after.outbox_len
        )?;
        if let Some(line) = rewound {
            outln!("{line}")?;
        }
    }
    Ok(())
}
