//! The relay's large-content store over real iroh QUIC on 127.0.0.1, relay in-process, content
//! on disk: reservations with `ContentRef`, uploads and downloads with iroh-blobs on the relay's
//! endpoint, who may do what, quotas, and removal down to the files.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use iroh::{EndpointAddr, SecretKey};
use iroh_blobs::Hash;
use iroh_blobs::protocol::{ChunkRangesSeq, PushRequest};
use iroh_blobs::store::mem::MemStore;
use sync_relay::{CONTENT_DIR_NAME, Metrics};
use sync_testkit::guard_for;
use sync_types::{BlobId, ContentRef, ErrorCode, Message};

/// Plaintext bytes per chunk in these tests.
const CHUNK: u32 = 64 * 1024;

/// Sealed size of `chunks` full chunks (each chunk carries a 16-byte tag).
fn sealed_len(chunks: u32) -> usize {
    (chunks * CHUNK + chunks * 16) as usize
}

fn content_ref(request_id: u64, blob_id: BlobId, data: &[u8], chunks: u32) -> Message {
    Message::ContentRef(ContentRef {
        request_id,
        blob_id,
        hash: *Hash::new(data).as_bytes(),
        size: data.len() as u64,
        chunk_size: CHUNK,
        chunks,
    })
}

/// Files under `dir` (recursively) and their total bytes.
fn files_and_bytes(dir: &Path) -> (usize, u64) {
    let files = sync_testkit::files_under(dir);
    (files.len(), files.iter().map(|(_, n)| n).sum())
}

/// Polls `cond` until it holds (bounded: the test fails after 30 s).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    guard_for(what, Duration::from_secs(30), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// An iroh-blobs connection from the client's endpoint (its device key) to the relay.
async fn blobs_conn(relay: &TestRelay, c: &Client) -> iroh::endpoint::Connection {
    let addr = EndpointAddr::new(relay.handle.endpoint_id()).with_ip_addr(relay.addr());
    guard(
        "the iroh-blobs connection",
        c.endpoint.connect(addr, iroh_blobs::ALPN),
    )
    .await
    .expect("connect with the iroh-blobs ALPN")
}

/// Fetches `hash` from the relay into a fresh memory store: the bytes, or the error.
async fn fetch(relay: &TestRelay, c: &Client, hash: Hash) -> Result<Vec<u8>, String> {
    let store = MemStore::new();
    let conn = blobs_conn(relay, c).await;
    let got = guard(
        "a fetch",
        store.remote().fetch(conn.clone(), hash).complete(),
    )
    .await;
    conn.close(0u32.into(), b"done");
    got.map_err(|e| e.to_string())?;
    store
        .get_bytes(hash)
        .await
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

/// Pushes `data` from a memory store on the client's endpoint (the relay may refuse it).
async fn push(relay: &TestRelay, c: &Client, data: &[u8]) {
    let store = MemStore::new();
    let hash = store.add_slice(data).await.expect("add").hash;
    let conn = blobs_conn(relay, c).await;
    let request = PushRequest::new(hash, ChunkRangesSeq::root());
    // A refused push is cut by the relay: the sender may or may not see an error.
    let _ = guard(
        "a push",
        store
            .remote()
            .execute_push(conn.clone(), request)
            .complete(),
    )
    .await;
    // Keep the connection until the relay decided (the caller waits for its metrics).
    let closing = conn.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(30), closing.closed()).await;
    });
}

fn metrics(relay: &TestRelay) -> &Metrics {
    relay.handle.metrics()
}

#[tokio::test]
async fn content_is_reserved_uploaded_fetched_by_members_only_and_removed_with_its_descriptor() {
    let relay = relay_with!(
        content_group_bytes = 4 << 20,
        cleanup_interval = Duration::from_millis(200),
    )
    .await;
    let content_dir = relay.dir.path().join(CONTENT_DIR_NAME);
    let group = keys(1);

    // The sender: a session in the group, then the content reserved under its descriptor blob.
    let a_key = SecretKey::generate();
    let mut a = Client::connect_as(a_key, relay.handle.endpoint_id(), relay.addr()).await;
    assert!(matches!(a.hello(&group).await, Message::Welcome(_)));
    let descriptor = blob(1);
    a.push_acked(descriptor, b"sealed descriptor").await;
    let data = sync_testkit::pattern_bytes(sealed_len(48), 7);
    assert!(data.len() > 3 << 20);
    let hash = Hash::new(&data);
    let id = a.next_id();
    match a.request(content_ref(id, descriptor, &data, 48)).await {
        Message::ContentAck(ack) => {
            assert_eq!(ack.request_id, id);
            assert_eq!(ack.blob_id, descriptor);
        }
        other => panic!("expected ContentAck, got {other:?}"),
    }
    // The same content again: renewed, acknowledged.
    let id = a.next_id();
    assert!(matches!(
        a.request(content_ref(id, descriptor, &data, 48)).await,
        Message::ContentAck(_)
    ));
    // Inconsistent chunking is refused, typed.
    let id = a.next_id();
    let reply = a.request(content_ref(id, blob(9), &data, 47)).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::Malformed);
    // Beyond the group's quota: refused before any upload.
    let big = sync_testkit::pattern_bytes(sealed_len(32), 8);
    let id = a.next_id();
    let reply = a.request(content_ref(id, blob(2), &big, 32)).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::QuotaExceeded);
    assert_eq!(metrics(&relay).content_reservations_refused_total.get(), 1);

    // Nothing is served before the upload, even to its sender.
    assert!(fetch(&relay, &a, hash).await.is_err(), "not uploaded yet");

    // The upload, with iroh-blobs push from the sender's own endpoint.
    push(&relay, &a, &data).await;
    until("the upload", || {
        metrics(&relay).content_uploads_total.get() == 1
    })
    .await;
    assert_eq!(metrics(&relay).content_items.get(), 1);
    assert_eq!(metrics(&relay).content_bytes.get(), data.len() as i64);
    // The relay stores exactly the ciphertext it was given.
    let stored_file = content_dir
        .join("data")
        .join(format!("{}.data", hash.to_hex()));
    until("the stored file", || {
        std::fs::read(&stored_file).is_ok_and(|stored| stored == data)
    })
    .await;

    // Another member of the group (a session of its own proves it) fetches the same bytes.
    let (b, _) = Client::open(&relay, &group).await;
    let got = fetch(&relay, &b, hash)
        .await
        .expect("a member fetches the content");
    assert_eq!(got, data);
    assert_eq!(metrics(&relay).content_served_total.get(), 1);

    // A device of another group is refused.
    let (stranger, _) = Client::open(&relay, &keys(2)).await;
    let refused_before = metrics(&relay).content_requests_refused_total.get();
    assert!(
        fetch(&relay, &stranger, hash).await.is_err(),
        "not a member"
    );
    assert!(metrics(&relay).content_requests_refused_total.get() > refused_before);

    // A push of content nobody reserved is refused and leaves nothing behind.
    let unregistered = sync_testkit::pattern_bytes(200_000, 9);
    let refused_before = metrics(&relay).content_requests_refused_total.get();
    push(&relay, &a, &unregistered).await;
    until("the refused push", || {
        metrics(&relay).content_requests_refused_total.get() > refused_before
    })
    .await;
    let unregistered_hash = Hash::new(&unregistered);
    assert!(
        !content_dir
            .join("data")
            .join(format!("{}.data", unregistered_hash.to_hex()))
            .exists()
    );
    assert_eq!(metrics(&relay).content_uploads_total.get(), 1);

    // Deleting the descriptor blob drops the content: refused from then on, and its files go
    // at the next garbage collection.
    let (files_before, bytes_before) = files_and_bytes(&content_dir);
    let reply = a.delete(descriptor).await;
    assert!(matches!(reply, Message::DeleteAck(_)), "{reply:?}");
    assert_eq!(metrics(&relay).content_items.get(), 0);
    assert!(
        fetch(&relay, &b, hash).await.is_err(),
        "dropped with its descriptor"
    );
    // (The databases next to the data may grow a little meanwhile.)
    let freed_at_least = data.len() as u64 * 9 / 10;
    until("the content's files removed", || {
        let (files, bytes) = files_and_bytes(&content_dir);
        !stored_file.exists() && files < files_before && bytes + freed_at_least <= bytes_before
    })
    .await;

    // Its bytes were freed: the large one now fits the quota.
    let id = a.next_id();
    assert!(matches!(
        a.request(content_ref(id, blob(2), &big, 32)).await,
        Message::ContentAck(_)
    ));
    relay.stop([a, b, stranger]).await;
}

#[tokio::test]
async fn reservations_expire_and_their_content_is_collected() {
    let relay = relay_with!(
        content_ttl = Duration::from_secs(1),
        cleanup_interval = Duration::from_millis(200),
    )
    .await;
    let content_dir = relay.dir.path().join(CONTENT_DIR_NAME);
    let (mut a, _) = Client::open(&relay, &keys(1)).await;
    let data = sync_testkit::pattern_bytes(sealed_len(4), 11);
    let hash = Hash::new(&data);
    let id = a.next_id();
    assert!(matches!(
        a.request(content_ref(id, blob(1), &data, 4)).await,
        Message::ContentAck(_)
    ));
    push(&relay, &a, &data).await;
    until("the upload", || {
        metrics(&relay).content_uploads_total.get() == 1
    })
    .await;
    let stored_file = content_dir
        .join("data")
        .join(format!("{}.data", hash.to_hex()));
    until("the stored file", || stored_file.exists()).await;
    // After the TTL the cleanup drops the reservation and the collection its data.
    until("the expired content removed", || {
        metrics(&relay).content_items.get() == 0 && !stored_file.exists()
    })
    .await;
    assert!(fetch(&relay, &a, hash).await.is_err(), "expired");
    relay.stop([a]).await;
}

#[tokio::test]
async fn without_the_content_store_the_blobs_protocol_is_not_spoken() {
    let relay = relay_with!(content_store = false).await;
    let (mut a, _) = Client::open(&relay, &keys(1)).await;
    let data = sync_testkit::pattern_bytes(sealed_len(1), 12);
    let id = a.next_id();
    let reply = a.request(content_ref(id, blob(1), &data, 1)).await;
    assert_eq!(expect_error(&reply).code, ErrorCode::NotSupported);
    let addr = EndpointAddr::new(relay.handle.endpoint_id()).with_ip_addr(relay.addr());
    let conn = guard("a refused ALPN", a.endpoint.connect(addr, iroh_blobs::ALPN)).await;
    assert!(conn.is_err(), "the ALPN is not offered");
    assert!(!relay.dir.path().join(CONTENT_DIR_NAME).exists());
    a.ping().await;
    relay.stop([a]).await;
}

#[tokio::test]
async fn an_upload_larger_than_its_reservation_is_not_kept() {
    let relay = relay_with!(cleanup_interval = Duration::from_millis(200)).await;
    let content_dir = relay.dir.path().join(CONTENT_DIR_NAME);
    let (mut a, _) = Client::open(&relay, &keys(1)).await;
    // The hash of 48 chunks, reserved as 4 chunks' worth.
    let data = sync_testkit::pattern_bytes(sealed_len(48), 13);
    let hash = Hash::new(&data);
    let small = sealed_len(4);
    let id = a.next_id();
    let reply = a
        .request(Message::ContentRef(ContentRef {
            request_id: id,
            blob_id: blob(1),
            hash: *hash.as_bytes(),
            size: small as u64,
            chunk_size: CHUNK,
            chunks: 4,
        }))
        .await;
    assert!(matches!(reply, Message::ContentAck(_)), "{reply:?}");
    push(&relay, &a, &data).await;
    // Cut while it grows, or dropped once complete: the small reservation goes, so the same
    // hash with its true size is soon accepted (a Conflict while the small one is there).
    guard_for(
        "the small reservation dropped",
        Duration::from_secs(30),
        async {
            loop {
                let id = a.next_id();
                match a.request(content_ref(id, blob(2), &data, 48)).await {
                    Message::ContentAck(_) => break,
                    Message::Error(e) if e.code == ErrorCode::Conflict => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    other => panic!("expected ContentAck or Conflict, got {other:?}"),
                }
            }
        },
    )
    .await;
    // Never an upload, never served; once that reservation goes too, its bytes leave the disk.
    assert_eq!(metrics(&relay).content_uploads_total.get(), 0);
    assert_eq!(metrics(&relay).content_items.get(), 0);
    assert!(fetch(&relay, &a, hash).await.is_err());
    let reply = a.delete(blob(2)).await;
    assert_eq!(
        expect_error(&reply).code,
        ErrorCode::NotFound,
        "no such blob"
    );
    let stored_file = content_dir
        .join("data")
        .join(format!("{}.data", hash.to_hex()));
    until("the oversized content removed", || !stored_file.exists()).await;
    relay.stop([a]).await;
}
