//! Relay lists on the real `sync-cli` binary against real `sync-relay` processes on 127.0.0.1:
//! `relays add | list | remove` (never the last one), and an invite made with two relays that
//! gives the joining device both, in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use support::{Device, Relay, Run};

/// The `relay` strings of `relays list --json`, in order.
fn listed(device: &Device) -> Vec<String> {
    let v = device.run(&["relays", "list", "--json"]).ok().json();
    strings(&v["relays"], "relay")
}

fn strings(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|r| {
            let s = if key.is_empty() { r } else { &r[key] };
            s.as_str().unwrap().to_string()
        })
        .collect()
}

/// The relays of `relays list --json` marked in use.
fn in_use(device: &Device) -> Vec<String> {
    let v = device.run(&["relays", "list", "--json"]).ok().json();
    v["relays"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["in_use"] == true)
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[track_caller]
fn refused(run: &Run, code: i32, words: &[&str]) {
    run.refused(code, words);
}

#[test]
fn relays_add_list_remove_and_the_last_one_cannot_be_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let r1 = Relay::start(&tmp.path().join("r1"), 0);
    let r2 = Relay::start(&tmp.path().join("r2"), 0);
    let a = Device::new(tmp.path(), "a");
    a.init("laptop");

    refused(&a.run(&["relays", "list"]), 3, &["no relay", "relays add"]);
    refused(
        &a.run(&["relays", "add", "not-a-relay"]),
        2,
        &["not-a-relay"],
    );

    a.run(&["relays", "add", &r1.dial]).ok();
    let added = a.run(&["relays", "add", &r2.dial]).ok();
    assert!(added.out().contains("added"), "{}", added.out());
    assert_eq!(listed(&a), [r1.dial.clone(), r2.dial.clone()]);
    let text = a.run(&["relays", "list"]).ok().out();
    assert!(
        text.contains(&format!("1. {}", r1.dial)) && text.contains(&format!("2. {}", r2.dial)),
        "{text}"
    );
    // --first puts one (already listed here) in front.
    a.run(&["relays", "add", &r2.dial, "--first"]).ok();
    assert_eq!(listed(&a), [r2.dial.clone(), r1.dial.clone()]);
    a.run(&["relays", "add", &r1.dial, "--first"]).ok();
    assert_eq!(listed(&a), [r1.dial.clone(), r2.dial.clone()]);

    // A group made without --relay uses the stored list; `status` shows it and the relay
    // that answered.
    a.run(&["pair", "--create", "--no-qr"]).ok();
    let st = a.run(&["status", "--json"]).ok().json();
    assert_eq!(st["online"], true, "{st}");
    assert_eq!(
        strings(&st["relays"], ""),
        [r1.dial.clone(), r2.dial.clone()]
    );
    assert_eq!(st["relay_in_use"], r1.id.as_str(), "{st}");
    assert_eq!(in_use(&a), vec![r1.id.clone()]);
    let text = a.run(&["status"]).ok().out();
    assert!(
        text.contains("relays:") && text.contains("(connected)"),
        "{text}"
    );

    // Remove by id (or by the whole dial string); the last one stays.
    let removed = a.run(&["relays", "remove", &r1.id]).ok();
    assert!(removed.out().contains("removed"), "{}", removed.out());
    assert_eq!(listed(&a), vec![r2.dial.clone()]);
    refused(
        &a.run(&["relays", "remove", &r2.dial]),
        2,
        &["only relay", "relays add"],
    );
    refused(
        &a.run(&["relays", "remove", &r1.id]),
        2,
        &["not one of this device's relays"],
    );
    refused(&a.run(&["relays", "remove", "zz"]), 2, &["not a relay id"]);
    assert_eq!(listed(&a), vec![r2.dial.clone()]);
    // The one left is the one used now.
    let st = a.run(&["status", "--json"]).ok().json();
    assert_eq!(st["online"], true, "{st}");
    assert_eq!(st["relay"], r2.dial.as_str());
}

#[test]
fn an_invite_made_with_two_relays_gives_the_joining_device_both() {
    let tmp = tempfile::tempdir().unwrap();
    let r1 = Relay::start(&tmp.path().join("r1"), 0);
    let r2 = Relay::start(&tmp.path().join("r2"), 0);
    let a = Device::new(tmp.path(), "a");
    let b = Device::new(tmp.path(), "b");
    a.init("laptop");
    b.init("phone");

    let made = a
        .run(&[
            "pair", "--create", "--relay", &r1.dial, "--relay", &r2.dial, "--json",
        ])
        .ok()
        .json();
    assert_eq!(
        strings(&made["relays"], ""),
        [r1.dial.clone(), r2.dial.clone()]
    );
    assert_eq!(
        made["relay"],
        r1.dial.as_str(),
        "the short code is on the first"
    );
    assert_eq!(listed(&a), [r1.dial.clone(), r2.dial.clone()]);
    let invite = made["invite"].as_str().unwrap();

    let joined = b.run(&["pair", "--join", invite, "--json"]).ok().json();
    assert_eq!(joined["online"], true, "{joined}");
    assert_eq!(
        strings(&joined["relays"], ""),
        [r1.dial.clone(), r2.dial.clone()]
    );
    assert_eq!(listed(&b), [r1.dial.clone(), r2.dial.clone()]);
    assert_eq!(in_use(&b), vec![r1.id.clone()], "B reached the first relay");
    let text = b.run(&["relays", "list"]).ok().out();
    assert!(
        text.contains(&format!("1. {}  (in use)", r1.dial)),
        "the relay in use is marked: {text}"
    );

    // Both sync through the first relay.
    a.run(&["push", "hello over two relays"]).ok();
    assert_eq!(b.pull(), vec![b"hello over two relays".to_vec()]);

    // `invite` on B passes the list on (here: a short code for a third device).
    let again = b.run(&["invite", "--json", "--no-qr"]).ok().json();
    assert_eq!(
        strings(&again["relays"], ""),
        [r1.dial.clone(), r2.dial.clone()]
    );
    let c = Device::new(tmp.path(), "c");
    c.init("tablet");
    let code = again["short_code"].as_str().unwrap();
    c.run(&["pair", "--join", code, "--relay", &r1.dial]).ok();
    assert_eq!(listed(&c), [r1.dial.clone(), r2.dial.clone()]);
    assert_eq!(c.pull(), vec![b"hello over two relays".to_vec()]);
}
