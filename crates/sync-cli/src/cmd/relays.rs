//! `relays`: the relays this device syncs through, in order of preference — list them, add
//! one (last, or first with `--first`), remove one (never the last one).

use clap::{Args, Subcommand};
use serde_json::json;
use sync_types::RelayId;

use crate::device::{Ctx, save_relays, stored_relay_in_use, stored_relays, stored_relays_opt};
use crate::fail::Failure;
use crate::out::{self, outln};
use crate::relay::{self, MAX_RELAYS, RelayAddr, Relays};

/// Arguments of `relays`.
#[derive(Debug, Args)]
pub(crate) struct RelaysArgs {
    #[command(subcommand)]
    action: Option<RelaysAction>,
}

/// What `relays` does (`list` when nothing is given).
#[derive(Debug, Subcommand)]
enum RelaysAction {
    /// Print the relays in order of preference; the one this device's last session went to is
    /// marked `(in use)`.
    List,
    /// Add a relay of the same deployment (last in the list, or first with --first). A relay
    /// already listed gets the addresses given here (and moves first with --first).
    Add {
        /// ENDPOINT_ID@HOST:PORT[,HOST:PORT…] (a relay's `dial:` line) or its http:// URL.
        #[arg(value_name = "RELAY")]
        relay: String,
        /// Put it first: dialled before the others.
        #[arg(long)]
        first: bool,
    },
    /// Remove a relay by its id (64 hex characters; a whole ID@HOST:PORT is accepted too). The
    /// last relay cannot be removed.
    Remove {
        /// The relay's id.
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// Runs `relays list | add | remove`.
pub(crate) async fn run(ctx: &Ctx, args: &RelaysArgs) -> Result<(), Failure> {
    match &args.action {
        None | Some(RelaysAction::List) => list(ctx),
        Some(RelaysAction::Add { relay, first }) => add(ctx, relay, *first).await,
        Some(RelaysAction::Remove { id }) => remove(ctx, id),
    }
}

fn list(ctx: &Ctx) -> Result<(), Failure> {
    let (store, _device) = ctx.open_device()?;
    let relays = stored_relays(&store)?;
    let in_use = stored_relay_in_use(&store)?.filter(|id| relays.iter().any(|r| r.id == *id));
    drop(store);
    print(ctx, &relays, in_use)
}

/// Prints the list (text: one numbered line per relay; JSON: `{"relays": [...]}`).
fn print(ctx: &Ctx, relays: &Relays, in_use: Option<RelayId>) -> Result<(), Failure> {
    if ctx.json {
        let list: Vec<_> = relays
            .iter()
            .map(|r| {
                json!({
                    "relay": r.to_string(),
                    "id": r.id.to_string(),
                    "addrs": r.addrs,
                    "in_use": in_use == Some(r.id),
                })
            })
            .collect();
        return out::json(&json!({ "relays": list }));
    }
    for (i, r) in relays.iter().enumerate() {
        let mark = if in_use == Some(r.id) {
            "  (in use)"
        } else {
            ""
        };
        outln!("{}. {r}{mark}", i + 1)?;
    }
    Ok(())
}

async fn add(ctx: &Ctx, text: &str, first: bool) -> Result<(), Failure> {
    // The device must exist before anything is resolved.
    drop(ctx.open_device()?);
    let relay = relay::resolve_pinned(text, None, ctx.connect_timeout).await?;
    let (store, _device) = ctx.open_device()?;
    let current = stored_relays_opt(&store)?;
    let relays = with_added(current.as_ref(), relay.clone(), first)?;
    save_relays(&store, &relays)?;
    let in_use = stored_relay_in_use(&store)?;
    drop(store);
    if !ctx.json {
        let known = current.is_some_and(|c| c.iter().any(|r| r.id == relay.id));
        let what = if known { "updated" } else { "added" };
        outln!("Relay {} {what}; relays in order of preference:", relay.id)?;
    }
    print(ctx, &relays, in_use)
}

/// `current` with `relay` added: last (or first with `first`); a relay already listed (same
/// id) gets `relay`'s addresses and keeps its place unless `first`.
fn with_added(current: Option<&Relays>, relay: RelayAddr, first: bool) -> Result<Relays, Failure> {
    let mut list = current.map(Relays::to_vec).unwrap_or_default();
    let at = list.iter().position(|r| r.id == relay.id);
    match (at, first) {
        (Some(i), false) => {
            if let Some(slot) = list.get_mut(i) {
                *slot = relay;
            }
        }
        (Some(i), true) => {
            list.remove(i);
            list.insert(0, relay);
        }
        (None, _) if list.len() >= MAX_RELAYS => {
            return Err(Failure::bad_input(format!(
                "this device already has {MAX_RELAYS} relays, the most an invite carries: remove one first (`sync-cli relays remove ID`)"
            )));
        }
        (None, true) => list.insert(0, relay),
        (None, false) => list.push(relay),
    }
    Relays::new(list).map_err(Failure::bad_input)
}

fn remove(ctx: &Ctx, text: &str) -> Result<(), Failure> {
    let id = parse_id(text)?;
    let (store, _device) = ctx.open_device()?;
    let relays = stored_relays(&store)?;
    let relays = without(&relays, id)?;
    save_relays(&store, &relays)?;
    let in_use = stored_relay_in_use(&store)?;
    drop(store);
    if !ctx.json {
        outln!("Relay {id} removed; relays in order of preference:")?;
    }
    print(ctx, &relays, in_use)
}

/// A relay id as given to `relays remove`: 64 hex characters, or a dial string's id.
fn parse_id(text: &str) -> Result<RelayId, Failure> {
    let text = text.trim();
    let id = text.split_once('@').map_or(text, |(id, _)| id);
    id.parse().map_err(|e| {
        Failure::bad_input(format!(
            "`{text}` is not a relay id ({e}); `sync-cli relays list` shows them"
        ))
    })
}

/// `relays` without relay `id`: refused when it is not listed, or the only one.
fn without(relays: &Relays, id: RelayId) -> Result<Relays, Failure> {
    if !relays.iter().any(|r| r.id == id) {
        return Err(Failure::bad_input(format!(
            "relay {id} is not one of this device's relays (`sync-cli relays list` shows them)"
        )));
    }
    if relays.len() == 1 {
        return Err(Failure::bad_input(format!(
            "refusing to remove relay {id}: it is this device's only relay (add another one first with `sync-cli relays add ID@HOST:PORT`)"
        )));
    }
    Relays::new(relays.iter().filter(|r| r.id != id).cloned().collect()).map_err(Failure::bad_input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fail::Kind;

    fn relay(byte: u8) -> RelayAddr {
        RelayAddr {
            id: RelayId::from_bytes([byte; 32]),
            addrs: vec![format!("127.0.0.{byte}:7440")],
        }
    }

    fn ids(relays: &Relays) -> Vec<u8> {
        relays.iter().map(|r| r.id.as_bytes()[0]).collect()
    }

    #[test]
    fn add_appends_or_puts_first_and_updates_a_known_relay_in_place() {
        let one = with_added(None, relay(1), false).unwrap();
        let two = with_added(Some(&one), relay(2), false).unwrap();
        assert_eq!(ids(&two), [1, 2]);
        let three = with_added(Some(&two), relay(3), true).unwrap();
        assert_eq!(ids(&three), [3, 1, 2]);
        let moved = RelayAddr {
            addrs: vec!["192.0.2.9:1".into()],
            ..relay(1)
        };
        let updated = with_added(Some(&three), moved.clone(), false).unwrap();
        assert_eq!(ids(&updated), [3, 1, 2]);
        assert_eq!(updated.iter().nth(1), Some(&moved));
        assert_eq!(
            ids(&with_added(Some(&three), relay(2), true).unwrap()),
            [2, 3, 1]
        );
        let full = Relays::new((1..=MAX_RELAYS as u8).map(relay).collect()).unwrap();
        let e = with_added(Some(&full), relay(99), false).unwrap_err();
        assert_eq!(e.kind, Kind::BadInput);
        assert!(
            with_added(Some(&full), relay(1), true).is_ok(),
            "not a new one"
        );
    }

    #[test]
    fn remove_refuses_an_unknown_relay_and_the_last_one() {
        let two = Relays::new(vec![relay(1), relay(2)]).unwrap();
        let one = without(&two, RelayId::from_bytes([1; 32])).unwrap();
        assert_eq!(ids(&one), [2]);
        let last = without(&one, RelayId::from_bytes([2; 32])).unwrap_err();
        assert_eq!(last.kind, Kind::BadInput);
        assert!(last.msg.contains("only relay"), "{}", last.msg);
        let unknown = without(&two, RelayId::from_bytes([7; 32])).unwrap_err();
        assert_eq!(unknown.kind, Kind::BadInput);
        let dial = relay(1).to_string();
        assert_eq!(parse_id(&dial).unwrap(), relay(1).id);
        assert_eq!(parse_id(&"01".repeat(32)).unwrap(), relay(1).id);
        assert_eq!(parse_id("nope").unwrap_err().kind, Kind::BadInput);
    }
}
