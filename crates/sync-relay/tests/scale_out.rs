//! Several relay processes on one PostgreSQL database: one log per group whichever relay a
//! device uses, notifications across relays, and a database restart that loses nothing.
//!
//! Real processes (a private PostgreSQL cluster, the `sync-relay` binary), real QUIC on
//! 127.0.0.1, real devices. Every wait is on an event, bounded by the test kit's guard.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;

use sync_client::{Blob, StoreLocation, SyncClient};
use sync_testkit::devices::{self, pull_until};
use sync_testkit::{GUARD, PostgresServer, RelayProcess, guard};
use sync_types::BlobId;

/// A private PostgreSQL server with a fresh database (its connection string), and a directory
/// for the devices' stores.
fn postgres_and_stores() -> (PostgresServer, String, tempfile::TempDir) {
    let mut pg = PostgresServer::start().expect("postgres");
    let url = pg.create_database().expect("database");
    (pg, url, tempfile::tempdir().expect("stores"))
}

/// A relay on the PostgreSQL database at `url`, push rate limits off (pushes are under test).
fn relay_on(url: &str) -> RelayProcess {
    RelayProcess::builder()
        .args(["--storage", "postgres", "--postgres-url", url])
        .args(["--session-push-rate", "0", "--global-push-rate", "0"])
        .start()
        .expect("relay starts on postgres")
}

/// Waits until `burst` has queued every push and `client` has had each acknowledged (whatever
/// relay it is on by then); returns the burst's blob ids.
async fn acknowledged(
    client: &SyncClient,
    burst: tokio::task::JoinHandle<Vec<BlobId>>,
) -> HashSet<BlobId> {
    let ids = guard("the burst to be queued", burst).await.expect("burst");
    guard("every push acknowledged", client.flush(GUARD))
        .await
        .expect("flush");
    ids.into_iter().collect()
}

/// Checks that a reader got every pushed blob exactly once, in strictly increasing cursors.
fn assert_once_in_order(who: &str, got: &[Blob], pushed: &HashSet<BlobId>) {
    assert_eq!(
        got.len(),
        pushed.len(),
        "{who}: nothing twice, nothing missing"
    );
    let ids: HashSet<BlobId> = got.iter().map(|b| b.blob_id).collect();
    assert_eq!(&ids, pushed, "{who}: exactly the pushed blobs");
    assert!(
        got.windows(2).all(|w| w[0].cursor < w[1].cursor),
        "{who}: one cursor order"
    );
}

/// Checks that the reader got the burst `pushed` (numbered `0..count`) exactly once and in
/// the order it was pushed.
fn assert_burst_in_push_order(got: &[Blob], pushed: &HashSet<BlobId>, count: usize) {
    assert_once_in_order("the reader", got, pushed);
    assert_eq!(
        devices::numbers(got),
        (0..count).collect::<Vec<_>>(),
        "push order kept"
    );
}

/// 3 relays on one PostgreSQL, 4 pushers on each and one reader on each that pulls on every
/// notification: 20,000 blobs, and every reader sees each exactly once, all in the same
/// cursor order (the log is the database's, not a relay's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_on_one_postgres_deliver_every_blob_once_in_one_order() {
    const TOTAL: usize = 20_000;
    const TAIL: usize = 10;
    const PUSHERS_PER_RELAY: usize = 4;
    const RELAYS: usize = 3;
    let (_pg, url, stores) = postgres_and_stores();
    let relays: Vec<RelayProcess> = (0..RELAYS).map(|_| relay_on(&url)).collect();
    assert!(
        relays
            .windows(2)
            .all(|w| w[0].ready().store_id == w[1].ready().store_id),
        "relays on one database serve one store"
    );
    assert!(relays.iter().all(|r| r.ready().storage == "postgres"));
    let group = devices::group(31);

    let mut readers = Vec::new();
    let mut pushers = Vec::new();
    for (r, relay) in relays.iter().enumerate() {
        let dial = relay.relay_addr();
        let store = |name: String| StoreLocation::Dir(stores.path().join(name));
        readers.push(devices::connect(&dial, &group, store(format!("reader-{r}"))).await);
        for p in 0..PUSHERS_PER_RELAY {
            pushers.push(devices::connect(&dial, &group, store(format!("pusher-{r}-{p}"))).await);
        }
    }
    // Readers start pulling before the first push, so they pull on notifications all along.
    let reading: Vec<_> = readers
        .iter()
        .map(|reader| {
            let reader = reader.clone();
            tokio::spawn(async move { pull_until(&reader, TOTAL - TAIL).await })
        })
        .collect();
    let n = pushers.len();
    let main = TOTAL - TAIL;
    let pushing: Vec<_> = pushers
        .iter()
        .enumerate()
        .map(|(i, pusher)| {
            let pusher = pusher.clone();
            // Shared out: the first ones push one more.
            let count = main / n + usize::from(i < main % n);
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(count);
                for k in 0..count {
                    let data = format!("pusher {i} blob {k}");
                    ids.push(pusher.push_queued(data.as_bytes()).await.expect("queued"));
                }
                pusher.flush(GUARD).await.expect("every push acknowledged");
                ids
            })
        })
        .collect();
    let mut pushed = HashSet::new();
    for p in pushing {
        pushed.extend(guard("a pusher to finish", p).await.expect("pusher"));
    }
    let mut main_phase = Vec::new();
    for reading in reading {
        main_phase.push(
            guard("a reader to catch up", reading)
                .await
                .expect("reader"),
        );
    }
    // The tail goes through relay 0 alone once every reader has caught up: the readers on
    // relays 1 and 2 hear of it only through relay 0's notifications, by way of the database.
    let tailing: Vec<_> = readers
        .iter()
        .map(|reader| {
            let reader = reader.clone();
            tokio::spawn(async move { pull_until(&reader, TAIL).await })
        })
        .collect();
    for k in 0..TAIL {
        let receipt = pushers[0]
            .push(format!("tail {k}").as_bytes())
            .await
            .expect("tail push");
        pushed.insert(receipt.blob_id);
    }
    assert_eq!(pushed.len(), TOTAL);
    let mut orders = Vec::new();
    for (r, (mut got, tailing)) in main_phase.into_iter().zip(tailing).enumerate() {
        got.extend(
            guard("a reader to get the tail", tailing)
                .await
                .expect("reader"),
        );
        assert_once_in_order(&format!("reader on relay {r}"), &got, &pushed);
        orders.push(got.iter().map(|b| b.blob_id).collect::<Vec<_>>());
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "every reader saw the same order"
    );
    assert!(
        readers[0].pull().await.expect("pull").is_empty(),
        "nothing is delivered twice"
    );
    println!(
        "scale-out: {TOTAL} blobs through {RELAYS} relays on one PostgreSQL, {} readers saw each once",
        orders.len()
    );
    close_all(readers.iter().chain(pushers.iter())).await;
    for mut relay in relays {
        assert!(relay.stop().is_clean(), "relay stops cleanly");
    }
}

/// The database restarts in the middle of a burst: the relay answers pushes with a typed,
/// retryable error while it is down (the device keeps them queued), reports itself
/// unavailable on `/health`, and recovers by itself when the database is back; every push
/// lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_burst_loses_nothing_and_the_relay_recovers_by_itself() {
    const BURST: usize = 3_000;
    let (mut pg, url, stores) = postgres_and_stores();
    let mut relay = relay_on(&url);
    let dial = relay.relay_addr();
    let group = devices::group(32);
    let a = devices::connect(&dial, &group, StoreLocation::Dir(stores.path().join("a"))).await;
    let mut events = a.subscribe();

    let burst = devices::push_numbered(&a, BURST);
    // Crash the database once some pushes are acknowledged.
    let mut acked = 0;
    devices::until_event(&mut events, "acks", |e| {
        acked += usize::from(matches!(e, sync_client::SyncEvent::PushAcked { .. }));
        (acked >= BURST / 5).then_some(())
    })
    .await;
    pg.crash();
    let health = http_get(relay.http_addr(), "/health").await;
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("\"unavailable\""),
        "health while the database is down: {health}"
    );
    assert!(
        a.status().outbox_len > 0,
        "pushes wait in the outbox while the database is down"
    );
    pg.restart().expect("postgres restarts");
    let pushed = acknowledged(&a, burst).await;
    let health = http_get(relay.http_addr(), "/health").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let b = devices::connect(&dial, &group, StoreLocation::Dir(stores.path().join("b"))).await;
    let got = pull_until(&b, BURST).await;
    assert_burst_in_push_order(&got, &pushed, BURST);
    close_all([&a, &b]).await;
    assert!(relay.stop().is_clean(), "relay stops cleanly");
}

async fn close_all<'a>(clients: impl IntoIterator<Item = &'a SyncClient>) {
    for c in clients {
        c.close().await;
    }
}

/// A plain HTTP/1.1 GET; the whole response as text.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut out = String::new();
    guard("an HTTP answer", s.read_to_string(&mut out))
        .await
        .expect("response");
    out
}

/// A membership change stored through one relay reaches the sessions on another: a member
/// on relay 2 learns of the admin's rotation on relay 1 (and reads what is sealed under the new
/// epoch), and a device revoked by the admin on relay 1 loses its session on relay 2 at once
/// and is refused there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_and_a_revocation_through_one_relay_reach_the_sessions_on_another() {
    use sync_client::{ClientError, StreamExt, SyncEvent};
    use sync_types::ErrorCode;

    let (_pg, url, stores) = postgres_and_stores();
    let (one, two) = (relay_on(&url), relay_on(&url));
    let store = |name: &str| StoreLocation::Dir(stores.path().join(name));
    let group = devices::group(33);
    // The admin (the first device) on relay 1; two members on relay 2.
    let admin = devices::connect(&one.relay_addr(), &group, store("admin")).await;
    let member = devices::connect(&two.relay_addr(), &group, store("member")).await;
    let doomed = devices::connect(&two.relay_addr(), &group, store("doomed")).await;
    devices::until_members(&admin, 3).await;

    let epoch = admin.rotate().await.expect("rotate");
    admin.push(b"after the rotation").await.expect("push");
    devices::until_epoch(&member, epoch.0).await;
    let got = pull_until(&member, 1).await;
    assert_eq!(got[0].data, b"after the rotation");

    let mut doomed_events = doomed.subscribe();
    admin.revoke(&[doomed.device_id()]).await.expect("revoke");
    guard("the revoked session on relay 2 to end", async {
        loop {
            if let Some(SyncEvent::Disconnected { .. }) = doomed_events.next().await {
                return;
            }
        }
    })
    .await;
    doomed.close().await;
    let again =
        SyncClient::connect(devices::config(&two.relay_addr(), &group, store("doomed"))).await;
    match again {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::DeviceRevoked),
        other => panic!("a revoked device must be refused on relay 2, got {other:?}"),
    }
    close_all([&admin, &member]).await;
    for mut relay in [one, two] {
        assert!(relay.stop().is_clean(), "relay stops cleanly");
    }
}

/// With `postgres_tls = "require"` the relay reaches a database that accepts TLS only, and
/// checks its certificate: against the right CA it serves devices; without TLS, or against
/// another CA, it does not start, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_talks_to_postgres_over_tls_and_checks_its_certificate() {
    let mut pg = PostgresServer::start_tls().expect("postgres with TLS");
    let url = pg.create_database().expect("database");
    let ca = pg.ca_file().expect("the server's CA");
    let mut relay = RelayProcess::builder()
        .args(["--storage", "postgres", "--postgres-url", &url])
        .args(["--postgres-tls", "require", "--postgres-ca-file"])
        .arg(&ca)
        .start()
        .expect("relay starts over TLS");
    let stores = tempfile::tempdir().unwrap();
    let group = devices::group(34);
    let dial = relay.relay_addr();
    let a = devices::connect(&dial, &group, StoreLocation::Dir(stores.path().join("a"))).await;
    let b = devices::connect(&dial, &group, StoreLocation::Dir(stores.path().join("b"))).await;
    for i in 0..10 {
        a.push(format!("over TLS {i}").as_bytes())
            .await
            .expect("push");
    }
    let got = pull_until(&b, 10).await;
    assert_eq!(got.len(), 10);
    assert_eq!(got[9].data, b"over TLS 9");
    close_all([&a, &b]).await;
    assert!(relay.stop().is_clean(), "relay stops cleanly");

    // The server takes no plain connection: a relay without TLS cannot start.
    let plain = RelayProcess::builder()
        .args(["--storage", "postgres", "--postgres-url", &url])
        .start()
        .expect_err("no TLS, no database");
    assert!(plain.to_string().contains("no encryption"), "{plain}");
    // Another CA's certificate is refused.
    let other = tempfile::tempdir().unwrap();
    let mut stranger = PostgresServer::start_tls().expect("another server");
    let other_ca = other.path().join("ca.pem");
    std::fs::copy(stranger.ca_file().expect("its CA"), &other_ca).unwrap();
    stranger.stop();
    let refused = RelayProcess::builder()
        .args(["--storage", "postgres", "--postgres-url", &url])
        .args(["--postgres-tls", "require", "--postgres-ca-file"])
        .arg(&other_ca)
        .start()
        .expect_err("a certificate from another CA");
    assert!(
        refused.to_string().contains("certificate"),
        "the reason names the certificate: {refused}"
    );
}

/// Two relays on one PostgreSQL; a device that knows both pushes a burst through the first,
/// which is SIGKILLed mid-burst. The device fails over to the second, resumes from its cursor
/// there (the relays share the store) and re-sends what was not acknowledged: a reader sees
/// every push exactly once, in push order, and the cursors acknowledged before the kill hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_fails_over_when_its_relay_is_killed_and_nothing_is_lost_or_doubled() {
    use std::collections::HashMap;
    use sync_client::SyncEvent;
    use sync_types::Cursor;
    const BURST: usize = 3_000;

    let (_pg, url, stores) = postgres_and_stores();
    let mut first = relay_on(&url);
    let second = relay_on(&url);
    let both = [first.relay_addr(), second.relay_addr()];
    let group = devices::group(35);
    let a =
        devices::connect_to_all(&both, &group, StoreLocation::Dir(stores.path().join("a"))).await;
    // A reader that follows the log through both relays too, and has pulled something first.
    let c =
        devices::connect_to_all(&both, &group, StoreLocation::Dir(stores.path().join("c"))).await;
    a.push(b"before").await.expect("push");
    assert_eq!(pull_until(&c, 1).await.len(), 1);
    let c_resume = c.status().resume_cursor;
    let mut c_events = c.subscribe();

    let mut events = a.subscribe();
    let burst = devices::push_numbered(&a, BURST);
    let mut acked: HashMap<BlobId, Cursor> = HashMap::new();
    devices::until_event(&mut events, "acks before the kill", |e| {
        if let SyncEvent::PushAcked { receipt } = e {
            acked.insert(receipt.blob_id, receipt.cursor);
        }
        (acked.len() >= BURST / 5).then_some(())
    })
    .await;
    let killed = std::time::Instant::now();
    first.kill();
    let mut lost_at = None;
    let relay = devices::until_event(&mut events, "the failover", |e| match e {
        SyncEvent::PushAcked { receipt } => {
            acked.insert(receipt.blob_id, receipt.cursor);
            None
        }
        SyncEvent::Disconnected { .. } => {
            lost_at.get_or_insert_with(std::time::Instant::now);
            None
        }
        SyncEvent::Connected { relay_id, .. } => Some(*relay_id),
        _ => None,
    })
    .await;
    let connected = std::time::Instant::now();
    assert_eq!(relay, second.id(), "the device moved to the second relay");
    let lost_at = lost_at.expect("a disconnect before the new session");
    println!(
        "failover: loss noticed {:?} after the kill, next relay connected {:?} later",
        lost_at - killed,
        connected - lost_at
    );
    let pushed = acknowledged(&a, burst).await;

    // The other device also lost its relay: it resumes on the second from the same cursor.
    devices::until_event(&mut c_events, "the reader's loss", |e| {
        matches!(e, SyncEvent::Disconnected { .. }).then_some(())
    })
    .await;
    let resumed = devices::until_event(&mut c_events, "the reader's failover", |e| match e {
        SyncEvent::StatusChanged(s) if s.connection == sync_client::ConnectionStatus::Connected => {
            Some(s.resume_cursor)
        }
        _ => None,
    })
    .await;
    assert_eq!(
        resumed, c_resume,
        "the reader resumes where it was, on the other relay of the same log"
    );
    let got = pull_until(&c, BURST).await;
    assert_burst_in_push_order(&got, &pushed, BURST);
    for blob in &got {
        if let Some(cursor) = acked.get(&blob.blob_id) {
            assert_eq!(
                *cursor, blob.cursor,
                "an acknowledged push keeps its cursor"
            );
        }
    }
    close_all([&a, &c]).await;
    let mut second = second;
    assert!(second.stop().is_clean(), "the second relay stops cleanly");
}

/// Relays with different stores are separate logs. A device whose list names a relay on
/// PostgreSQL and, after it, a relay with its own SQLite store fails over to the second when
/// the first is killed: there it is a new log, pulled from its start (with its own cursor), and
/// only the pushes the first relay never acknowledged are sent to it, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_another_store_is_another_log_with_its_own_cursor() {
    use std::collections::HashSet;
    use sync_client::SyncEvent;
    const BURST: usize = 1_000;

    let (_pg, url, stores) = postgres_and_stores();
    let mut shared = relay_on(&url);
    let mut own = RelayProcess::builder()
        .args(["--session-push-rate", "0", "--global-push-rate", "0"])
        .start()
        .expect("a relay with its own store");
    let store = |name: &str| StoreLocation::Dir(stores.path().join(name));
    let group = devices::group(36);
    // Something already in the second relay's log, from a device that only uses it.
    let e = devices::connect(&own.relay_addr(), &group, store("e")).await;
    for i in 0..5 {
        e.push(format!("other log {i}").as_bytes())
            .await
            .expect("push");
    }
    let d =
        devices::connect_to_all(&[shared.relay_addr(), own.relay_addr()], &group, store("d")).await;
    let mut events = d.subscribe();
    let burst = devices::push_numbered(&d, BURST);
    let mut acked_by_first: HashSet<BlobId> = HashSet::new();
    devices::until_event(&mut events, "acks before the kill", |e| {
        if let SyncEvent::PushAcked { receipt } = e {
            acked_by_first.insert(receipt.blob_id);
        }
        (acked_by_first.len() >= BURST / 5).then_some(())
    })
    .await;
    shared.kill();
    let relay = devices::until_event(&mut events, "the failover", |e| match e {
        SyncEvent::PushAcked { receipt } => {
            acked_by_first.insert(receipt.blob_id);
            None
        }
        SyncEvent::Connected { relay_id, .. } => Some(*relay_id),
        _ => None,
    })
    .await;
    assert_eq!(relay, own.id());
    let all = acknowledged(&d, burst).await;
    assert!(acked_by_first.len() < BURST, "the kill landed mid-burst");

    // The other log holds exactly what the first relay never acknowledged, once each.
    let f = devices::connect(&own.relay_addr(), &group, store("f")).await;
    let want: HashSet<BlobId> = all.difference(&acked_by_first).copied().collect();
    let got = pull_until(&f, 5 + want.len()).await;
    let from_d: Vec<BlobId> = got
        .iter()
        .filter(|b| b.sender == d.device_id())
        .map(|b| b.blob_id)
        .collect();
    assert_eq!(
        from_d.len(),
        want.len(),
        "nothing sent twice to the other log"
    );
    assert_eq!(from_d.into_iter().collect::<HashSet<_>>(), want);
    // The device reads the other log from its start, with a cursor of its own there.
    let read = pull_until(&d, 5).await;
    let texts: Vec<Vec<u8>> = read.iter().map(|b| b.data.clone()).collect();
    assert_eq!(
        texts,
        (0..5)
            .map(|i| format!("other log {i}").into_bytes())
            .collect::<Vec<_>>()
    );
    close_all([&d, &e, &f]).await;
    assert!(own.stop().is_clean(), "the relay stops cleanly");
}
