//! Large content through a real `sync-relay` process on 127.0.0.1: two devices of one group
//! (real `SyncClient`s over iroh), the relay's content store on disk.

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

/// `len` pseudo-random bytes with `marker` written every 1 MiB.
fn write_file(path: &Path, len: usize, marker: &[u8]) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for at in (0..len.saturating_sub(marker.len())).step_by(1 << 20) {
        data[at..at + marker.len()].copy_from_slice(marker);
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(path, data).expect("write");
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
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

    // The relay's content store holds ciphertext only.
    for f in files_under(relay.data_dir()) {
        let bytes = std::fs::read(&f).expect("read");
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER),
            "plaintext marker in {}",
            f.display()
        );
    }

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
