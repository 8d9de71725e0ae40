//! Large content through a real `sync-relay` process on 127.0.0.1: two devices of one group
//! (real `SyncClient`s over iroh), the relay's content store on disk.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sync_client::{ClientConfig, GroupChoice, IrohTransport, StoreLocation, SyncClient};
use sync_content::{ContentClient, ContentNode, ContentStore, Descriptor, Holder, SendOptions};
use sync_testkit::devices::{group, loopback_transport};
use sync_testkit::{RelayProcess, guard};
use sync_types::RelayAddr;

struct Device {
    content: ContentClient,
    _transport: Arc<IrohTransport>,
}

async fn device(relay: &RelayProcess, seed: u64, dir: &Path, name: &str) -> Device {
    let relay_addr: RelayAddr = relay.relay_addr();
    let transport = loopback_transport(&relay_addr);
    let config = ClientConfig::new(
        StoreLocation::Dir(dir.join(name)),
        transport.clone(),
        GroupChoice::Use(group(seed)),
    )
    .with_options(sync_client::ClientOptions::for_tests());
    let sync = guard("a device to connect", SyncClient::connect(config))
        .await
        .expect("connect");
    let endpoint = transport
        .bound_endpoint()
        .await
        .expect("bound after connect");
    let store = ContentStore::open(&dir.join(name).join("content"))
        .await
        .expect("store");
    let node = ContentNode::serve(store, endpoint);
    let holder = Holder {
        id: *relay.id().as_bytes(),
        addrs: relay.addrs().to_vec(),
        relay: true,
    };
    let content = ContentClient::new(sync, node, Some(holder))
        .await
        .expect("content client");
    Device {
        content,
        _transport: transport,
    }
}

/// `len` pseudo-random bytes with `marker` written every 1 MiB, at `path`.
fn write_file(path: &Path, len: usize, marker: &[u8]) {
    let (dir, name) = (path.parent().expect("dir"), path.file_name().expect("name"));
    common::write_file(dir, &name.to_string_lossy(), len, Some(marker));
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    sync_testkit::files_under(dir)
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// The descriptor that arrives at `device` next.
async fn next_descriptor(device: &Device) -> Descriptor {
    let blobs = sync_testkit::devices::pull_until(device.content.sync(), 1).await;
    let blob = blobs.last().expect("a blob");
    assert!(Descriptor::is_descriptor(&blob.data));
    Descriptor::decode(&blob.data).expect("descriptor")
}

const MARKER: &[u8] = b"PLAINTEXT-MARKER-0k-content-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_arrives_direct_while_the_sender_is_online_and_from_the_relay_after_it_left() {
    let dir = tempfile::tempdir().expect("tmp");
    let relay = RelayProcess::start();
    let a = device(&relay, 7, dir.path(), "a").await;
    let b = device(&relay, 7, dir.path(), "b").await;
    a.content.refresh_peers().await.expect("peers");
    b.content.refresh_peers().await.expect("peers");

    let src = dir.path().join("video.bin");
    write_file(&src, 100 << 20, MARKER);
    let sent = guard("send", a.content.send_file(&src, SendOptions::default()))
        .await
        .expect("sent");
    assert!(sent.relay_copy, "the relay keeps a copy");

    // The relay's content store holds ciphertext only (and the scan did read the stored copy).
    let (with_marker, read) = sync_testkit::files_containing(relay.data_dir(), MARKER);
    assert!(
        with_marker.is_empty(),
        "plaintext marker in {with_marker:?}"
    );
    assert!(
        read >= 100 << 20,
        "only {read} bytes of the relay's files were read"
    );

    // A online: B fetches from A directly.
    let d = next_descriptor(&b).await;
    let out = dir.path().join("b-out");
    let got = guard("receive direct", b.content.receive(&d, &out, None))
        .await
        .expect("receive");
    assert!(got.is_complete(), "{:?}", got.missing);
    assert_eq!(got.bytes_fetched, d.items()[0].sealed_size());
    let a_id = *a.content.node().endpoint().id().as_bytes();
    assert_eq!(
        got.from_holders,
        vec![(a_id, d.items()[0].sealed_size())],
        "all from A"
    );
    assert_eq!(
        std::fs::read(&got.written[0]).expect("read"),
        std::fs::read(&src).expect("read")
    );

    // A gone: a third device fetches from the relay.
    a.content.shutdown().await;
    let c = device(&relay, 7, dir.path(), "c").await;
    let d2 = next_descriptor(&c).await;
    let got = guard(
        "receive from relay",
        c.content.receive(&d2, &dir.path().join("c-out"), None),
    )
    .await
    .expect("receive");
    assert!(got.is_complete(), "{:?}", got.missing);
    assert_eq!(
        got.from_holders,
        vec![(*relay.id().as_bytes(), d2.items()[0].sealed_size())]
    );
    assert_eq!(
        std::fs::read(&got.written[0]).expect("read"),
        std::fs::read(&src).expect("read")
    );
}

/// The relay's stored content files (`.data`, one per item above the inline size).
fn relay_data_files(relay: &RelayProcess) -> Vec<PathBuf> {
    common::data_files(&relay.data_dir().join("content"))
}

/// Flips one byte in the middle of the relay's stored copy of `hash`.
fn flip_on_relay(relay: &RelayProcess, hash: &[u8; 32]) {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let file = relay_data_files(relay)
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&hex))
        .expect("the relay's copy");
    // In place, as bit rot would: the running relay's store keeps the file open.
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .expect("open");
    let mid = f.metadata().expect("size").len() / 2;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, mid).expect("read");
    f.write_all_at(&[byte[0] ^ 0x40], mid).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_flipped_on_the_relay_is_caught_and_fetched_from_the_sender_or_reported() {
    let dir = tempfile::tempdir().expect("tmp");
    let relay = RelayProcess::start();
    let a = device(&relay, 8, dir.path(), "a").await;
    let b = device(&relay, 8, dir.path(), "b").await;
    a.content.refresh_peers().await.expect("peers");

    let src = dir.path().join("doc.bin");
    write_file(&src, 6 << 20, MARKER);
    let sent = guard("send", a.content.send_file(&src, SendOptions::default()))
        .await
        .expect("sent");
    flip_on_relay(&relay, &sent.descriptor.items()[0].hash);

    // The relay's copy is bad and A is online, but B asks the relay first: it takes what
    // verifies from the relay and the rest from A.
    let mut d = next_descriptor(&b).await;
    if let Descriptor::Item(item) = &mut d {
        item.holders.reverse();
        assert!(item.holders[0].relay);
    }
    let out = dir.path().join("b-out");
    let got = guard("receive", b.content.receive(&d, &out, None))
        .await
        .expect("receive");
    assert!(got.is_complete(), "{:?}", got.missing);
    assert_eq!(got.from_holders.len(), 2, "{:?}", got.from_holders);
    assert_eq!(got.from_holders[0].0, *relay.id().as_bytes());
    assert!(
        got.from_holders[0].1 < (3 << 20),
        "only what precedes the bad byte verified"
    );
    assert_eq!(
        std::fs::read(&got.written[0]).expect("read"),
        std::fs::read(&src).expect("read")
    );

    // Without A, the bad copy is all there is: reported, typed, and nothing written.
    a.content.shutdown().await;
    let c = device(&relay, 8, dir.path(), "c").await;
    let d = next_descriptor(&c).await;
    let out = dir.path().join("c-out");
    let got = guard("receive", c.content.receive(&d, &out, None))
        .await
        .expect("receive");
    assert!(!got.is_complete());
    assert_eq!(got.missing.len(), 1);
    assert_eq!(got.missing[0].0, "doc.bin");
    assert!(
        got.missing[0].1.contains("failed verification"),
        "{}",
        got.missing[0].1
    );
    assert!(got.written.is_empty());
    assert!(files_under(&out).is_empty(), "no byte of it written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_over_the_group_quota_is_refused_before_any_upload() {
    let dir = tempfile::tempdir().expect("tmp");
    let relay = RelayProcess::builder()
        .args(["--content-group-bytes", "3000000"])
        .start()
        .expect("relay");
    let a = device(&relay, 9, dir.path(), "a").await;
    let small = dir.path().join("small.bin");
    write_file(&small, 2_000_000, MARKER);
    let big = dir.path().join("big.bin");
    write_file(&big, 1_500_000, MARKER);

    let sent = guard("send", a.content.send_file(&small, SendOptions::default()))
        .await
        .expect("fits");
    assert!(sent.relay_copy);
    let files_before = relay_data_files(&relay);
    assert_eq!(files_before.len(), 1);

    // 2 MB held + 1.5 MB > 3 MB: refused at registration, typed; nothing uploaded.
    let err = guard("send", a.content.send_file(&big, SendOptions::default()))
        .await
        .expect_err("over quota");
    assert!(err.is_quota_exceeded(), "{err}");
    assert_eq!(relay_data_files(&relay), files_before, "nothing uploaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_with_an_item_missing_is_reported_incomplete_naming_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let relay = RelayProcess::start();
    let a = device(&relay, 10, dir.path(), "a").await;
    let folder = dir.path().join("album");
    write_file(&folder.join("one.jpg"), 300_000, MARKER);
    write_file(&folder.join("sub/two.jpg"), 400_000, MARKER);
    write_file(&folder.join("three.jpg"), 500_000, MARKER);
    let sent = guard("send", a.content.send_dir(&folder, SendOptions::default()))
        .await
        .expect("sent");
    let names: Vec<&str> = sent
        .descriptor
        .items()
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["one.jpg", "sub/two.jpg", "three.jpg"]);
    let two = sent.descriptor.items()[1].hash;
    a.content.shutdown().await;
    flip_on_relay(&relay, &two);

    let b = device(&relay, 10, dir.path(), "b").await;
    let d = next_descriptor(&b).await;
    let out = dir.path().join("out");
    let got = guard("receive", b.content.receive(&d, &out, None))
        .await
        .expect("receive");
    assert!(!got.is_complete());
    let missing: Vec<&str> = got.missing.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(missing, ["sub/two.jpg"]);
    assert_eq!(got.written.len(), 2);
    for (name, path) in [("one.jpg", &got.written[0]), ("three.jpg", &got.written[1])] {
        assert_eq!(path, &out.join("album").join(name));
        assert_eq!(
            std::fs::read(path).expect("read"),
            std::fs::read(folder.join(name)).expect("read")
        );
    }
    assert!(!out.join("album/sub/two.jpg").exists());
    b.content.shutdown().await;
}
