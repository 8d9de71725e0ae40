//! The store against real SQLite files.

use super::*;
use sync_testkit::devices::group;

fn push(n: u8) -> StoredPush {
    StoredPush {
        blob_id: BlobId::from_bytes([n; 16]),
        payload: Bytes::from(vec![n; 10]),
        ttl_secs: 60,
        created_ms: 1000 + u64::from(n),
    }
}

#[test]
fn file_is_owner_only_and_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let g = group(1);
    let (device_id, group_id) = {
        let mut s = Store::open_dir(&data, StoreSync::Normal).unwrap();
        let key = s.device_key_or_create().unwrap();
        s.set_device_name("laptop").unwrap();
        let gid = s.save_group(&g).unwrap();
        s.set_cursor(&gid, &RelayId::from_bytes([9; 32]), Cursor::new(41))
            .unwrap();
        s.insert_pushes(&gid, &[push(1), push(2), push(3)], Some(3))
            .unwrap();
        s.settle(
            &[Settled::Refused {
                blob_id: BlobId::from_bytes([2; 16]),
            }],
            Some(&Delivered {
                group: &gid,
                blobs: &[
                    (BlobId::from_bytes([7; 16]), Cursor::new(40)),
                    (BlobId::from_bytes([8; 16]), Cursor::new(42)),
                ],
                forget_ms: 5_000,
                senders: &[],
            }),
            Some((&gid, &RelayId::from_bytes([9; 32]), Cursor::new(42))),
        )
        .unwrap();
        (key.device_id(), gid)
    };
    let mode = fs::metadata(data.join(STORE_FILE_NAME))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);

    let s = Store::open_dir(&data, StoreSync::Full).unwrap();
    assert_eq!(s.device_key().unwrap().unwrap().device_id(), device_id);
    assert_eq!(s.device_key_or_create().unwrap().device_id(), device_id);
    assert_eq!(s.device_name().unwrap().as_deref(), Some("laptop"));
    assert_eq!(s.group_ids().unwrap(), vec![group_id]);
    let loaded = s.select_group(None).unwrap();
    assert_eq!(loaded.keys().group_id(), group_id);
    assert_eq!(loaded.descriptor, GroupDescriptor::Random);
    assert_eq!(
        s.cursor(&group_id, &RelayId::from_bytes([9; 32])).unwrap(),
        Cursor::new(42)
    );
    assert_eq!(
        s.cursor(&group_id, &RelayId::from_bytes([8; 32])).unwrap(),
        Cursor::ZERO
    );
    let outbox = s.outbox(&group_id).unwrap();
    assert_eq!(
        outbox,
        vec![push(1), push(3)],
        "order kept, settled one gone"
    );
    // Delivered blob ids are remembered with their cursors until their time is up.
    let seven = BlobId::from_bytes([7; 16]);
    assert_eq!(
        s.delivered_at(&group_id, &seven).unwrap(),
        Some(Cursor::new(40))
    );
    assert_eq!(
        s.delivered_at(&group_id, &BlobId::from_bytes([2; 16]))
            .unwrap(),
        None
    );
    assert_eq!(s.forget_delivered(5_000).unwrap(), 0);
    assert_eq!(s.forget_delivered(5_001).unwrap(), 2);
    assert_eq!(s.delivered_at(&group_id, &seven).unwrap(), None);
}

#[test]
fn insert_is_all_or_nothing() {
    let mut s = Store::open_in_memory().unwrap();
    let gid = s.save_group(&group(2)).unwrap();
    s.insert_pushes(&gid, &[push(1)], None).unwrap();
    // The second batch holds a duplicate blob id: nothing of it is kept.
    assert!(s.insert_pushes(&gid, &[push(2), push(1)], Some(9)).is_err());
    assert_eq!(s.outbox(&gid).unwrap(), vec![push(1)]);
    assert_eq!(
        s.own_seq(&gid).unwrap(),
        0,
        "the numbering did not move either"
    );
    s.insert_pushes(&gid, &[push(3)], Some(4)).unwrap();
    s.insert_pushes(&gid, &[push(4)], Some(2)).unwrap();
    assert_eq!(s.own_seq(&gid).unwrap(), 4, "never goes back");
}

#[test]
fn group_selection() {
    let s = Store::open_in_memory().unwrap();
    assert!(matches!(s.select_group(None), Err(StoreError::NoGroup)));
    let a = s.save_group(&group(3)).unwrap();
    let b = s.save_group(&group(4)).unwrap();
    assert!(matches!(
        s.select_group(None),
        Err(StoreError::AmbiguousGroup)
    ));
    assert_eq!(s.select_group(Some(&b)).unwrap().keys().group_id(), b);
    assert_eq!(s.group_ids().unwrap(), vec![a, b]);
    // Saving again keeps the order.
    s.save_group(&group(3)).unwrap();
    assert_eq!(s.group_ids().unwrap(), vec![a, b]);
}

#[test]
fn devices_keep_their_latest_activity_and_count_blobs() {
    let mut s = Store::open_in_memory().unwrap();
    let gid = s.save_group(&group(6)).unwrap();
    let other = s.save_group(&group(7)).unwrap();
    let (a, b) = (DeviceId::from_bytes([1; 32]), DeviceId::from_bytes([2; 32]));
    assert!(s.devices(&gid).unwrap().is_empty());
    s.note_devices(&gid, &[(a, 100, 2), (b, 300, 1)]).unwrap();
    // An older activity does not lower the last one; counts add up; groups are apart.
    s.note_devices(&gid, &[(a, 50, 1)]).unwrap();
    s.note_devices(&other, &[(a, 999, 1)]).unwrap();
    let seen = s.devices(&gid).unwrap();
    assert_eq!(
        seen,
        vec![
            SeenDevice {
                device_id: b,
                last_seen_ms: 300,
                blobs: 1
            },
            SeenDevice {
                device_id: a,
                last_seen_ms: 100,
                blobs: 3
            },
        ]
    );
    s.set_setting("relay", "x@127.0.0.1:1").unwrap();
    s.set_setting("relay", "y@127.0.0.1:2").unwrap();
    assert_eq!(
        s.setting("relay").unwrap().as_deref(),
        Some("y@127.0.0.1:2")
    );
    assert_eq!(s.setting("other").unwrap(), None);
}

#[test]
fn debug_is_redacted() {
    let g = group(5);
    let text = format!("{g:?} {:?}", push(7));
    assert!(text.contains("redacted"));
    assert!(!text.contains(&format!("{:?}", g.secret.expose_bytes())));
    assert!(!text.contains("[7, 7, 7"));
}

#[test]
fn acknowledged_pushes_are_kept_until_they_expire_and_come_back_for_a_rewound_log() {
    let mut s = Store::open_in_memory().unwrap();
    let g = s.save_group(&group(6)).unwrap();
    let relay = RelayId::from_bytes([9; 32]);
    s.insert_pushes(&g, &[push(1), push(2), push(3)], None)
        .unwrap();
    let acked = |n: u8, cursor: u64, expires_ms: u64| Settled::Acked {
        blob_id: BlobId::from_bytes([n; 16]),
        cursor: Cursor::new(cursor),
        expires_ms,
    };
    s.settle(
        &[
            acked(1, 5, 10_000),
            acked(2, 8, 2_000),
            Settled::Refused {
                blob_id: BlobId::from_bytes([3; 16]),
            },
        ],
        Some(&Delivered {
            group: &g,
            blobs: &[
                (BlobId::from_bytes([1; 16]), Cursor::new(5)),
                (BlobId::from_bytes([2; 16]), Cursor::new(8)),
                (BlobId::from_bytes([7; 16]), Cursor::new(6)),
            ],
            forget_ms: 50_000,
            senders: &[],
        }),
        None,
    )
    .unwrap();
    assert!(
        s.outbox(&g).unwrap().is_empty(),
        "settled pushes leave the outbox"
    );
    let ids = |v: Vec<StoredPush>| {
        v.into_iter()
            .map(|p| p.blob_id.as_bytes()[0])
            .collect::<Vec<_>>()
    };
    // Everything after cursor 4, oldest first, the refused one never; each with the retention
    // it has left.
    let again = s.sent_after(&g, Cursor::new(4), 1_000).unwrap();
    assert_eq!(
        again.iter().map(|p| p.ttl_secs).collect::<Vec<_>>(),
        vec![9, 1]
    );
    assert_eq!(
        again[0].payload,
        push(1).payload,
        "the sealed bytes, unchanged"
    );
    assert_eq!(ids(again), vec![1, 2]);
    assert_eq!(
        ids(s.sent_after(&g, Cursor::new(5), 1_000).unwrap()),
        vec![2]
    );
    // Expired on the relay: neither pushed again nor kept.
    assert_eq!(ids(s.sent_after(&g, Cursor::ZERO, 3_000).unwrap()), vec![1]);
    s.forget_delivered(3_000).unwrap();
    assert_eq!(ids(s.sent_after(&g, Cursor::ZERO, 0).unwrap()), vec![1]);
    // Queued again: not offered twice.
    s.insert_pushes(&g, &s.sent_after(&g, Cursor::ZERO, 3_000).unwrap(), None)
        .unwrap();
    assert!(s.sent_after(&g, Cursor::ZERO, 3_000).unwrap().is_empty());
    // The log went back to cursor 5: what was delivered above it lost its place; below, kept.
    s.set_relay_log(&g, &relay, 1, Cursor::new(5), true)
        .unwrap();
    assert_eq!(s.cursor(&g, &relay).unwrap(), Cursor::new(5));
    assert_eq!(
        s.delivered_at(&g, &BlobId::from_bytes([7; 16])).unwrap(),
        Some(Cursor::ZERO)
    );
    assert_eq!(
        s.delivered_at(&g, &BlobId::from_bytes([1; 16])).unwrap(),
        Some(Cursor::new(5))
    );
    // Acknowledged again elsewhere: the new place is remembered.
    s.settle(&[acked(1, 12, 10_000)], None, None).unwrap();
    assert_eq!(
        ids(s.sent_after(&g, Cursor::new(11), 3_000).unwrap()),
        vec![1]
    );
}
