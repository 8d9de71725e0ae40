//! Storage tests. The behaviour checks are generic over [`Storage`] so a future backend can run
//! the same suite; the `#[tokio::test]`s below run them on [`SqliteStorage`] in temp dirs.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sync_types::{BlobId, Cursor, DeviceId, GroupId};
use tempfile::TempDir;

use super::*;

const DAY: Duration = Duration::from_secs(86_400);
const MIB: usize = 1024 * 1024;
const T0: u64 = 1_700_000_000_000;

fn group(n: u8) -> GroupId {
    GroupId::from_bytes([n; 32])
}

fn device(n: u8) -> DeviceId {
    DeviceId::from_bytes([n; 32])
}

fn blob(n: u64) -> BlobId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[8] = 0xb1;
    BlobId::from_bytes(b)
}

/// Deterministic bytes for blob `n` (so a pulled payload can be checked against its id).
fn payload(n: u64, len: usize) -> Vec<u8> {
    sync_testkit::pattern_bytes(len, n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn push_req(g: GroupId, n: u64, len: usize) -> PushRequest {
    PushRequest {
        group: g,
        blob_id: blob(n),
        sender: device(1),
        payload: payload(n, len),
        ttl: DAY,
        now_ms: T0,
        group_quota_bytes: None,
    }
}

async fn open_in(dir: &TempDir, limits: StorageLimits) -> SqliteStorage {
    let config = SqliteConfig {
        limits,
        ..SqliteConfig::default()
    };
    SqliteStorage::open(dir.path(), config)
        .await
        .expect("open storage")
}

/// A backend the behaviour tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// Where a test's data lives: a temp dir for SQLite, or a private PostgreSQL server with a
/// fresh database (stopped and removed when the test ends).
enum Place {
    Sqlite(TempDir),
    Postgres {
        /// Kept for its lifetime: dropping it stops the server.
        _server: sync_testkit::PostgresServer,
        url: String,
    },
}

impl Place {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => Self::Sqlite(tempfile::tempdir().expect("tempdir")),
            Kind::Postgres => {
                let mut server = sync_testkit::PostgresServer::start().expect("postgres");
                let url = server.create_database().expect("database");
                Self::Postgres {
                    _server: server,
                    url,
                }
            }
        }
    }

    /// Opens (or reopens) the storage on this place's data.
    async fn open(&self, limits: StorageLimits) -> RelayStorage {
        match self {
            Self::Sqlite(dir) => open_in(dir, limits).await.into(),
            Self::Postgres { url, .. } => PostgresStorage::open(PostgresConfig {
                limits,
                ..PostgresConfig::new(url.clone())
            })
            .await
            .expect("open postgres storage")
            .into(),
        }
    }

    /// Runs a statement by hand, as an operator would; returns the rows it changed.
    async fn execute(&self, sql: &str) -> u64 {
        match self {
            Self::Sqlite(dir) => {
                let side = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME))
                    .expect("side connection");
                side.execute(sql, []).expect("statement") as u64
            }
            Self::Postgres { url, .. } => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("side connection");
                let driver = tokio::spawn(connection);
                let n = client.execute(sql, &[]).await.expect("statement");
                drop(client);
                let _ = driver.await;
                n
            }
        }
    }

    /// The SQLite data dir, `None` on PostgreSQL.
    fn sqlite_dir(&self) -> Option<&std::path::Path> {
        match self {
            Self::Sqlite(dir) => Some(dir.path()),
            Self::Postgres { .. } => None,
        }
    }
}

async fn fresh_on(kind: Kind, limits: StorageLimits) -> (Place, RelayStorage) {
    let place = Place::new(kind);
    let s = place.open(limits).await;
    (place, s)
}

async fn fresh(limits: StorageLimits) -> (TempDir, SqliteStorage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open_in(&dir, limits).await;
    (dir, s)
}

/// Pulls everything after `after`, page by page, checking that cursors only go up.
async fn pull_all<S: Storage>(
    s: &S,
    g: GroupId,
    after: Cursor,
    max_count: u32,
    max_bytes: u64,
) -> Vec<PullEntry> {
    let mut out = Vec::new();
    let mut at = after;
    loop {
        let page = s.pull(g, at, max_count, max_bytes).await.expect("pull");
        for e in page.entries {
            assert!(
                e.cursor > at,
                "cursor went backwards: {:?} after {at:?}",
                e.cursor
            );
            at = e.cursor;
            out.push(e);
        }
        if !page.has_more {
            return out;
        }
    }
}

/// Runs `ops` against a paused writer, each one queued (in order) before the next starts, then
/// releases the writer: they land in as few batches as `max_batch` allows. Returns the answers
/// in the order of `ops`.
async fn queued_behind_a_pause<T, F, Fut>(
    s: &SqliteStorage,
    ops: impl IntoIterator<Item = F>,
) -> Vec<T>
where
    F: FnOnce(SqliteStorage) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let pause = s.pause_writer().await.expect("pause");
    let mut handles = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        handles.push(tokio::spawn(op(s.clone())));
        // Queue in order: the next operation starts only once this one waits in the queue.
        pause.until_queued(i + 1).await;
    }
    pause.release();
    let mut answers = Vec::new();
    for h in handles {
        answers.push(h.await.expect("task"));
    }
    answers
}

/// The expected totals.
fn totals(groups: u64, blobs: u64, bytes: u64) -> StorageStats {
    StorageStats {
        groups,
        blobs,
        bytes,
    }
}

/// The totals kept incrementally agree with a full scan of the blobs.
async fn assert_audit_agrees(s: &RelayStorage) {
    assert_eq!(
        s.audit().await.expect("audit"),
        s.stats().await.expect("stats")
    );
}

/// Pushes and returns the cursor the push got.
async fn cursor_of<S: Storage>(s: &S, req: PushRequest) -> u64 {
    s.push(req).await.expect("push").cursor.get()
}

/// How many membership records of the group `d` reads from the start.
async fn record_count<S: Storage>(s: &S, g: GroupId, d: DeviceId) -> usize {
    s.membership(g, d, 0)
        .await
        .expect("membership")
        .records
        .len()
}

/// The schema version stamped on the SQLite file in `dir`.
fn file_version(dir: &TempDir) -> i64 {
    rusqlite::Connection::open(dir.path().join(DB_FILE_NAME))
        .expect("open")
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version")
}

/// The blob ids of the group's whole log, in cursor order.
async fn ids_in<S: Storage>(s: &S, g: GroupId) -> Vec<BlobId> {
    pull_all(s, g, Cursor::ZERO, 100, u64::MAX)
        .await
        .iter()
        .map(|e| e.blob_id)
        .collect()
}

fn is_quota(r: &Result<PushOutcome, StorageError>, want: QuotaKind) -> bool {
    matches!(r, Err(StorageError::QuotaExceeded { kind, .. }) if *kind == want)
}

/// Asserts that a push was refused by the `want` quota, with exactly this limit and request.
#[track_caller]
fn assert_quota(
    r: &Result<PushOutcome, StorageError>,
    want: QuotaKind,
    want_limit: u64,
    want_requested: u64,
) {
    assert!(
        matches!(
            r,
            Err(StorageError::QuotaExceeded { kind, limit, requested })
                if (*kind, *limit, *requested) == (want, want_limit, want_requested)
        ),
        "{r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Backend-independent checks

async fn check_dense_cursors_per_group<S: Storage>(s: &S) {
    let (a, b) = (group(1), group(2));
    let mut cursors = Vec::new();
    for (g, n) in [(a, 1), (b, 2), (a, 3), (a, 4), (b, 5)] {
        let out = s.push(push_req(g, n, 10)).await.expect("push");
        assert!(!out.duplicate);
        assert_eq!(out.stored_at_ms, T0);
        cursors.push(out.cursor.get());
    }
    assert_eq!(cursors, [1, 1, 2, 3, 2]);
    assert_eq!(s.max_cursor(a).await.expect("max"), Cursor::new(3));
    assert_eq!(s.max_cursor(b).await.expect("max"), Cursor::new(2));
    assert_eq!(s.max_cursor(group(9)).await.expect("max"), Cursor::ZERO);

    let page = s.pull(a, Cursor::ZERO, 100, u64::MAX).await.expect("pull");
    assert!(!page.has_more);
    assert_eq!(page.max_cursor, Cursor::new(3));
    let got: Vec<_> = page
        .entries
        .iter()
        .map(|e| (e.cursor.get(), e.blob_id))
        .collect();
    assert_eq!(got, [(1, blob(1)), (2, blob(3)), (3, blob(4))]);
    for e in &page.entries {
        assert_eq!(e.sender, device(1));
        assert_eq!(e.stored_at_ms, T0);
    }
    assert_eq!(page.entries[1].payload, payload(3, 10));

    let none = s
        .pull(group(9), Cursor::ZERO, 10, 1000)
        .await
        .expect("pull unknown");
    assert_eq!(none, PullPage::default());
}

async fn check_idempotent_retry<S: Storage>(s: &S) {
    let g = group(1);
    let first = s.push(push_req(g, 1, 100)).await.expect("push");
    let second = s.push(push_req(g, 2, 100)).await.expect("push");
    assert_eq!((first.cursor.get(), second.cursor.get()), (1, 2));

    // A retry, even later, gets the original answer and stores nothing.
    let mut retry = push_req(g, 1, 100);
    retry.now_ms = T0 + 60_000;
    let again = s.push(retry).await.expect("retry");
    assert_eq!(
        again,
        PushOutcome {
            cursor: Cursor::new(1),
            duplicate: true,
            stored_at_ms: T0
        }
    );
    assert_eq!(s.stats().await.expect("stats"), totals(1, 2, 200));
    // The same id with other bytes is a conflict, never a silent drop.
    let reused = s.push(push_req(g, 1, 5)).await;
    assert!(
        matches!(reused, Err(StorageError::BlobConflict)),
        "{reused:?}"
    );
    assert_eq!(s.stats().await.expect("stats"), totals(1, 2, 200));

    // Many devices retrying the same push at once: one stores it, all get its cursor.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.push(push_req(group(1), 3, 100)).await })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        let out = t.await.expect("task").expect("push");
        assert_eq!(out.cursor, Cursor::new(3));
        fresh += usize::from(!out.duplicate);
    }
    assert_eq!(fresh, 1, "exactly one push stored the blob");
    assert_eq!(s.max_cursor(g).await.expect("max"), Cursor::new(3));
    let entries = pull_all(s, g, Cursor::ZERO, 100, u64::MAX).await;
    assert_eq!(entries.len(), 3);
    assert_eq!(
        entries[0].payload,
        payload(1, 100),
        "the original bytes are kept"
    );
    assert_eq!(s.stats().await.expect("stats"), totals(1, 3, 300));
}

async fn check_pull_bounds<S: Storage>(s: &S) {
    let g = group(1);
    for n in 1..=10 {
        s.push(push_req(g, n, 100)).await.expect("push");
    }
    let cursors = |p: &PullPage| p.entries.iter().map(|e| e.cursor.get()).collect::<Vec<_>>();

    let p = s.pull(g, Cursor::ZERO, 3, u64::MAX).await.expect("pull");
    assert_eq!(
        (cursors(&p), p.has_more, p.max_cursor),
        (vec![1, 2, 3], true, Cursor::new(10))
    );

    let p = s.pull(g, Cursor::new(3), 100, 250).await.expect("pull");
    assert_eq!(
        (cursors(&p), p.has_more),
        (vec![4, 5], true),
        "bounded by bytes"
    );

    let p = s.pull(g, Cursor::new(3), 100, 300).await.expect("pull");
    assert_eq!(
        (cursors(&p), p.has_more),
        (vec![4, 5, 6], true),
        "exact fit is included"
    );

    let p = s.pull(g, Cursor::new(8), 2, 200).await.expect("pull");
    assert_eq!(
        (cursors(&p), p.has_more),
        (vec![9, 10], false),
        "both bounds met exactly"
    );

    let p = s.pull(g, Cursor::new(9), 5, u64::MAX).await.expect("pull");
    assert_eq!((cursors(&p), p.has_more), (vec![10], false));

    let p = s.pull(g, Cursor::new(10), 5, u64::MAX).await.expect("pull");
    assert_eq!(
        (p.entries.len(), p.has_more, p.max_cursor),
        (0, false, Cursor::new(10))
    );

    let p = s
        .pull(g, Cursor::new(u64::MAX), 5, u64::MAX)
        .await
        .expect("pull");
    assert!(p.entries.is_empty() && !p.has_more);

    let p = s.pull(g, Cursor::ZERO, 0, 0).await.expect("pull");
    assert_eq!(
        (cursors(&p), p.has_more),
        (vec![1], true),
        "count 0 acts as 1"
    );
}

async fn check_first_entry_always_returned<S: Storage>(s: &S) {
    let g = group(1);
    s.push(push_req(g, 1, MIB)).await.expect("push 1 MiB");
    s.push(push_req(g, 2, 10)).await.expect("push small");

    let p = s.pull(g, Cursor::ZERO, 10, 1).await.expect("pull");
    assert_eq!(p.entries.len(), 1);
    assert_eq!(p.entries[0].payload, payload(1, MIB));
    assert!(p.has_more);

    let p = s.pull(g, Cursor::new(1), 10, 1).await.expect("pull");
    assert_eq!(p.entries.len(), 1);
    assert_eq!(p.entries[0].payload, payload(2, 10));
    assert!(!p.has_more);
}

async fn check_mixed_sizes_all_pulled<S: Storage>(s: &S) {
    let g = group(1);
    let mut x: u64 = 0x5eed;
    let mut sizes = vec![MIB, 0, 1, MIB, MIB - 1];
    while sizes.len() < 48 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        sizes.push(usize::try_from((x >> 33) % (MIB as u64 + 1)).expect("size fits"));
    }
    for (i, &len) in sizes.iter().enumerate() {
        s.push(push_req(g, i as u64, len)).await.expect("push");
    }

    // Pages bounded by 1 MiB, as a session would ask.
    let max_bytes = MIB as u64;
    let mut at = Cursor::ZERO;
    let mut got = Vec::new();
    loop {
        let page = s.pull(g, at, 100, max_bytes).await.expect("pull");
        let total: usize = page.entries.iter().map(|e| e.payload.len()).sum();
        assert!(
            page.entries.len() == 1 || total as u64 <= max_bytes,
            "page over budget"
        );
        assert!(
            !page.entries.is_empty() || !page.has_more,
            "empty page with more to come"
        );
        for e in page.entries {
            at = e.cursor;
            got.push(e);
        }
        if !page.has_more {
            break;
        }
    }
    assert_eq!(got.len(), sizes.len());
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.cursor.get(), i as u64 + 1);
        assert_eq!(e.blob_id, blob(i as u64));
        assert_eq!(
            e.payload,
            payload(i as u64, sizes[i]),
            "payload of blob {i}"
        );
    }
}

fn small_limits() -> StorageLimits {
    StorageLimits {
        max_blob_bytes: 600,
        max_group_bytes: 1000,
        max_group_blobs: 3,
        max_ttl: DAY,
        ..StorageLimits::default()
    }
}

/// Expects `small_limits()`.
async fn check_quotas<S: Storage>(s: &S) {
    let (a, b) = (group(1), group(2));

    let r = s.push(push_req(a, 1, 601)).await;
    assert_quota(&r, QuotaKind::BlobSize, 600, 601);
    let mut long = push_req(a, 1, 10);
    long.ttl = DAY + Duration::from_millis(1);
    let r = s.push(long).await;
    assert!(is_quota(&r, QuotaKind::Ttl), "{r:?}");
    assert_eq!(
        s.stats().await.expect("stats"),
        StorageStats::default(),
        "nothing stored"
    );
    assert_eq!(s.max_cursor(a).await.expect("max"), Cursor::ZERO);

    // Count limit.
    for n in 1..=3 {
        assert_eq!(cursor_of(s, push_req(a, n, 10)).await, n);
    }
    let r = s.push(push_req(a, 4, 10)).await;
    assert_quota(&r, QuotaKind::GroupBlobs, 3, 4);
    // A retry of a stored blob still succeeds when the group is full.
    assert!(s.push(push_req(a, 2, 10)).await.expect("retry").duplicate);

    // Byte limit, in another group (quotas are per group).
    s.push(push_req(b, 11, 500)).await.expect("push");
    s.push(push_req(b, 12, 400)).await.expect("push");
    let r = s.push(push_req(b, 13, 200)).await;
    assert_quota(&r, QuotaKind::GroupBytes, 1000, 1100);
    assert_eq!(cursor_of(s, push_req(b, 14, 100)).await, 3);
    assert_eq!(s.stats().await.expect("stats"), totals(2, 6, 1030));

    // Deleting frees quota; the freed cursor is not reused.
    assert!(s.delete(a, blob(2), T0).await.expect("delete"));
    assert!(!s.delete(a, blob(2), T0).await.expect("delete again"));
    assert!(
        !s.delete(group(7), blob(2), T0)
            .await
            .expect("delete unknown group")
    );
    assert_eq!(cursor_of(s, push_req(a, 4, 10)).await, 4);
    assert!(is_quota(
        &s.push(push_req(a, 5, 10)).await,
        QuotaKind::GroupBlobs
    ));
    assert!(s.delete(b, blob(11), T0).await.expect("delete"));
    assert_eq!(cursor_of(s, push_req(b, 15, 500)).await, 4);
    assert_eq!(s.stats().await.expect("stats"), totals(2, 6, 1030));

    // Cleanup frees quota too.
    let removed = s
        .cleanup_expired(T0 + DAY.as_millis() as u64, 100)
        .await
        .expect("cleanup");
    assert_eq!(removed, 6);
    assert_eq!(s.stats().await.expect("stats"), totals(2, 0, 0));
    for n in 20..23 {
        s.push(push_req(a, n, 300))
            .await
            .expect("push after cleanup");
    }
    assert_eq!(s.max_cursor(a).await.expect("max"), Cursor::new(7));
}

async fn check_cleanup<S: Storage>(s: &S) {
    let g = group(1);
    // Blob n lives n seconds.
    for n in 1..=6u64 {
        let mut r = push_req(g, n, 50);
        r.ttl = Duration::from_secs(n);
        s.push(r).await.expect("push");
    }
    s.push(push_req(group(2), 100, 50))
        .await
        .expect("push other group");

    assert_eq!(
        s.cleanup_expired(T0, 100).await.expect("cleanup"),
        0,
        "nothing expired yet"
    );
    // At T0 + 3 s, blobs 1..=3 have expired (expiry is inclusive); a batch of 2 takes two.
    let now = T0 + 3_000;
    assert_eq!(s.cleanup_expired(now, 2).await.expect("cleanup"), 2);
    assert_eq!(s.cleanup_expired(now, 2).await.expect("cleanup"), 1);
    assert_eq!(s.cleanup_expired(now, 2).await.expect("cleanup"), 0);
    assert_eq!(s.cleanup_expired(now, 0).await.expect("cleanup"), 0);

    let page = s.pull(g, Cursor::ZERO, 100, u64::MAX).await.expect("pull");
    let left: Vec<_> = page.entries.iter().map(|e| e.cursor.get()).collect();
    assert_eq!(
        left,
        [4, 5, 6],
        "only expired blobs went, survivors keep their cursors"
    );
    assert_eq!(page.max_cursor, Cursor::new(6));
    assert_eq!(s.stats().await.expect("stats"), totals(2, 4, 200));

    // Everything expires; cursors still continue.
    assert_eq!(
        s.cleanup_expired(T0 + 10 * DAY.as_millis() as u64, 100)
            .await
            .expect("c"),
        4
    );
    assert_eq!(s.stats().await.expect("stats"), totals(2, 0, 0));
    let page = s.pull(g, Cursor::ZERO, 100, u64::MAX).await.expect("pull");
    assert_eq!(
        (page.entries.len(), page.has_more, page.max_cursor),
        (0, false, Cursor::new(6))
    );
    assert_eq!(cursor_of(s, push_req(g, 7, 50)).await, 7);
    assert_eq!(cursor_of(s, push_req(group(2), 101, 50)).await, 2);
    // A retry after its blob expired is answered with its original cursor, not stored again.
    let again = s.push(push_req(g, 1, 50)).await.expect("push");
    assert_eq!((again.cursor.get(), again.duplicate), (1, true));
    assert_eq!(cursor_of(s, push_req(g, 8, 50)).await, 8);
}

async fn check_invites<S: Storage>(s: &S) {
    let id = |n: u8| vec![n; 8];
    let sealed = b"sealed invite".to_vec();
    let put = async |n: u8, expires_ms: u64| {
        s.invite_put(id(n), sealed.clone(), expires_ms)
            .await
            .expect("put");
    };
    let take = async |n: u8, now_ms: u64, max_attempts: u32| {
        s.invite_take(id(n), now_ms, max_attempts)
            .await
            .expect("take")
    };

    // Delivered once.
    put(1, T0 + 600_000).await;
    s.invite_put(id(1), sealed.clone(), T0 + 600_000)
        .await
        .expect("retried put is a no-op");
    let other = s.invite_put(id(1), b"other".to_vec(), T0 + 600_000).await;
    assert!(
        matches!(other, Err(StorageError::InviteExists)),
        "{other:?}"
    );
    assert_eq!(take(1, T0, 5).await, InviteLookup::Found(sealed.clone()));
    assert_eq!(take(1, T0, 5).await, InviteLookup::NotFound);
    assert_eq!(take(2, T0, 5).await, InviteLookup::NotFound);

    // Expiry: answered as expired (not found after cleanup); exact expiry time counts.
    put(3, T0 + 1_000).await;
    put(4, T0 + 5_000).await;
    assert_eq!(take(3, T0 + 1_000, 5).await, InviteLookup::Expired);
    assert_eq!(take(3, T0 + 2_000, 5).await, InviteLookup::Expired);
    s.cleanup_expired(T0 + 2_000, 100).await.expect("cleanup");
    assert_eq!(take(3, T0 + 2_000, 5).await, InviteLookup::NotFound);
    assert_eq!(
        take(4, T0 + 2_000, 5).await,
        InviteLookup::Found(sealed.clone()),
        "cleanup left the live invite alone"
    );

    // Attempts: lookups of an expired invite count; the one that reaches the maximum deletes
    // it with TooManyAttempts.
    put(6, T0 + 1_000).await;
    for _ in 0..2 {
        assert_eq!(take(6, T0 + 1_000, 3).await, InviteLookup::Expired);
    }
    assert_eq!(take(6, T0 + 1_000, 3).await, InviteLookup::TooManyAttempts);
    assert_eq!(take(6, T0 + 1_000, 3).await, InviteLookup::NotFound);

    // A take beyond the allowed attempts burns a live invite too.
    put(5, T0 + 600_000).await;
    assert_eq!(take(5, T0, 0).await, InviteLookup::TooManyAttempts);
    assert_eq!(take(5, T0, 5).await, InviteLookup::NotFound);

    // Bad arguments are typed errors.
    for bad in [Vec::new(), vec![0u8; 65]] {
        let r = s.invite_take(bad.clone(), T0, 5).await;
        assert!(
            matches!(r, Err(StorageError::InvalidArgument { .. })),
            "{r:?}"
        );
        let r = s.invite_put(bad, sealed.clone(), T0).await;
        assert!(
            matches!(r, Err(StorageError::InvalidArgument { .. })),
            "{r:?}"
        );
    }
    let r = s.invite_put(id(6), vec![0u8; 64 * 1024 + 1], T0).await;
    assert!(
        matches!(r, Err(StorageError::InvalidArgument { .. })),
        "{r:?}"
    );
    assert_eq!(
        s.stats().await.expect("stats"),
        StorageStats::default(),
        "invites are not blobs"
    );
}

// ---------------------------------------------------------------------------------------------
// SQLite runs

/// Runs a generic check as its own test on each backend (a fresh SQLite storage in a temp dir,
/// a fresh PostgreSQL database) with the given limits; `+ audited` then also checks the stored
/// counters against the data.
macro_rules! check_runs {
    (@module $module:ident $kind:ident $(
        #[$test:meta]
        $name:ident => $check:ident($limits:expr) $(+ $audited:ident)?;
    )+) => {
        mod $module {
            use super::*;
            $(
                #[$test]
                async fn $name() {
                    let (_place, s) = fresh_on(Kind::$kind, $limits).await;
                    $check(&s).await;
                    $( check_runs!(@$audited s); )?
                }
            )+
        }
    };
    (@audited $s:ident) => {
        assert_audit_agrees(&$s).await
    };
    ($($checks:tt)+) => {
        check_runs!(@module checks_on_sqlite Sqlite $($checks)+);
        check_runs!(@module checks_on_postgres Postgres $($checks)+);
    };
}

check_runs! {
    #[tokio::test]
    cursors_are_dense_per_group =>
        check_dense_cursors_per_group(StorageLimits::default()) + audited;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    retried_push_returns_the_original_cursor =>
        check_idempotent_retry(StorageLimits::default()) + audited;
    #[tokio::test]
    pull_is_bounded_by_count_and_bytes => check_pull_bounds(StorageLimits::default());
    #[tokio::test]
    first_entry_is_returned_even_when_larger_than_max_bytes =>
        check_first_entry_always_returned(StorageLimits::default());
    #[tokio::test]
    mixed_sizes_up_to_one_mib_are_all_pulled =>
        check_mixed_sizes_all_pulled(StorageLimits::default()) + audited;
    #[tokio::test]
    quota_rejections_are_typed_and_counters_incremental => check_quotas(small_limits()) + audited;
    #[tokio::test]
    cleanup_removes_only_expired_blobs_and_keeps_cursors =>
        check_cleanup(StorageLimits::default()) + audited;
    #[tokio::test]
    invite_mailbox_is_single_use_and_expires => check_invites(StorageLimits::default());
}

async fn a_push_can_carry_a_tighter_group_byte_quota_but_never_a_looser_one(kind: Kind) {
    let (_place, s) = fresh_on(kind, small_limits()).await;
    let tight = |n, len| PushRequest {
        group_quota_bytes: Some(300),
        ..push_req(group(1), n, len)
    };
    s.push(tight(1, 200))
        .await
        .expect("within the token's quota");
    let r = s.push(tight(2, 200)).await;
    assert_quota(&r, QuotaKind::GroupBytes, 300, 400);
    // A quota above the configured one is clamped to it.
    let loose = |n, len| PushRequest {
        group_quota_bytes: Some(1 << 40),
        ..push_req(group(2), n, len)
    };
    s.push(loose(1, 600)).await.expect("push");
    assert!(is_quota(
        &s.push(loose(2, 500)).await,
        QuotaKind::GroupBytes
    ));
    assert_audit_agrees(&s).await;
}

/// 16 tasks × 500 pushes into one group while a device pulls after every acknowledged push:
/// each pull must continue exactly where the last one stopped (never N+1 before N), must
/// already contain the acknowledged cursor, and in the end every blob is seen exactly once.
async fn concurrent_pushers_and_a_puller_see_every_blob_exactly_once(kind: Kind) {
    const TASKS: u64 = 16;
    const PUSHES: u64 = 500;
    let (_place, s) = fresh_on(kind, StorageLimits::default()).await;
    let g = group(1);
    let (acks_tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<Cursor>();

    let puller = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut at = Cursor::ZERO;
            let mut seen = Vec::new();
            let mut pulls = 0u64;
            let catch_up = |s: RelayStorage, mut at: Cursor, mut seen: Vec<PullEntry>| async move {
                loop {
                    let page = s.pull(g, at, 64, 64 * 1024).await.expect("pull");
                    for e in page.entries {
                        assert_eq!(e.cursor.get(), at.get() + 1, "gap or duplicate in pull");
                        at = e.cursor;
                        seen.push(e);
                    }
                    assert!(page.max_cursor >= at);
                    if !page.has_more {
                        return (at, seen);
                    }
                }
            };
            while let Some(acked) = acks.recv().await {
                (at, seen) = catch_up(s.clone(), at, seen).await;
                pulls += 1;
                assert!(
                    at >= acked,
                    "acknowledged cursor {acked:?} not visible (at {at:?})"
                );
            }
            (at, seen) = catch_up(s.clone(), at, seen).await;
            (at, seen, pulls)
        })
    };

    let pushers: Vec<_> = (0..TASKS)
        .map(|t| {
            let s = s.clone();
            let acks = acks_tx.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..PUSHES {
                    let n = t << 32 | i;
                    let mut req = push_req(g, n, 48);
                    req.sender = device(t as u8);
                    let out = s.push(req).await.expect("push");
                    assert!(!out.duplicate);
                    mine.push((out.cursor, n));
                    acks.send(out.cursor).expect("puller alive");
                }
                mine
            })
        })
        .collect();
    drop(acks_tx);

    let mut acked = Vec::new();
    for p in pushers {
        let mine = p.await.expect("pusher");
        // One device's pushes get increasing cursors (it waited for each ack).
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0));
        acked.extend(mine);
    }
    let (at, seen, pulls) = puller.await.expect("puller");

    let total = TASKS * PUSHES;
    assert_eq!(pulls, total, "the puller pulled after every ack");
    assert_eq!(at, Cursor::new(total));
    assert_eq!(seen.len() as u64, total);
    let mut cursors: Vec<u64> = acked.iter().map(|(c, _)| c.get()).collect();
    cursors.sort_unstable();
    assert_eq!(
        cursors,
        (1..=total).collect::<Vec<_>>(),
        "acked cursors are exactly 1..=N"
    );
    for (cursor, n) in &acked {
        let e = &seen[usize::try_from(cursor.get() - 1).expect("index")];
        assert_eq!(e.blob_id, blob(*n));
        assert_eq!(e.payload, payload(*n, 48));
        assert_eq!(e.sender, device((n >> 32) as u8));
    }
    let ids: HashSet<_> = seen.iter().map(|e| e.blob_id).collect();
    assert_eq!(ids.len() as u64, total);
    assert_eq!(s.max_cursor(g).await.expect("max"), Cursor::new(total));
    let stats = s.stats().await.expect("stats");
    assert_eq!(
        stats,
        StorageStats {
            groups: 1,
            blobs: total,
            bytes: total * 48
        }
    );
    assert_eq!(s.audit().await.expect("audit"), stats);
    let m = s.writer_metrics();
    assert_eq!((m.ops, m.failed_commits), (total, 0));
}

/// Writes queued while the writer is busy are committed in one transaction; a push rejected by
/// its quota does not stop the others, and duplicates inside a batch get the original cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_pushes_commit_together_and_a_rejection_spares_the_rest() {
    let (_dir, s) = fresh(StorageLimits {
        max_blob_bytes: 100,
        ..StorageLimits::default()
    })
    .await;
    let g = group(1);
    let before = s.writer_metrics();
    let plan: [(u64, usize); 6] = [(1, 10), (2, 10), (3, 101), (4, 10), (1, 10), (5, 10)];
    let results = queued_behind_a_pause(
        &s,
        plan.map(
            |(n, len)| move |s: SqliteStorage| async move { s.push(push_req(g, n, len)).await },
        ),
    )
    .await;

    let after = s.writer_metrics();
    assert_eq!(
        after.commits - before.commits,
        1,
        "one transaction for the whole queue"
    );
    assert_eq!(after.ops - before.ops, 6);
    let ok = |i: usize| {
        results[i]
            .as_ref()
            .map(|o| (o.cursor.get(), o.duplicate))
            .ok()
    };
    assert_eq!(ok(0), Some((1, false)));
    assert_eq!(ok(1), Some((2, false)));
    assert!(
        is_quota(&results[2], QuotaKind::BlobSize),
        "{:?}",
        results[2]
    );
    assert_eq!(ok(3), Some((3, false)));
    assert_eq!(ok(4), Some((1, true)), "duplicate inside the batch");
    assert_eq!(ok(5), Some((4, false)));
    assert_eq!(ids_in(&s, g).await, [blob(1), blob(2), blob(4), blob(5)]);
    assert_eq!(s.stats().await.expect("stats"), totals(1, 4, 40));
    assert_audit_agrees(&s.clone().into()).await;
}

/// The writer keeps a batch's group counters in memory and writes them back once before the
/// commit; a delete in the middle of the batch must see (and change) the current counters, and
/// a group created inside the batch must be counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mixing_pushes_deletes_and_a_new_group_keeps_counters_exact() {
    let (_dir, s) = fresh(StorageLimits {
        max_group_blobs: 3,
        ..StorageLimits::default()
    })
    .await;
    let g = group(1);
    for n in 1..=2 {
        s.push(push_req(g, n, 10)).await.expect("push");
    }
    let before = s.writer_metrics();
    // Push 3 fills the group (3 of 3); deleting blob 1 frees one; push 4 then fits; push 5
    // does not; blob 1, deleted earlier in the batch, is remembered and answered with its
    // original cursor (nothing stored); group 2 is created inside the batch.
    let plan: [(u8, u64, bool); 6] = [
        (1, 3, false),
        (1, 1, true),
        (1, 4, false),
        (1, 5, false),
        (1, 1, false),
        (2, 6, false),
    ];
    let results = queued_behind_a_pause(
        &s,
        plan.map(|(gn, n, delete)| {
            move |s: SqliteStorage| async move {
                if delete {
                    s.delete(group(gn), blob(n), T0)
                        .await
                        .map(|found| (u64::from(found), false))
                } else {
                    s.push(push_req(group(gn), n, 10))
                        .await
                        .map(|o| (o.cursor.get(), o.duplicate))
                }
            }
        }),
    )
    .await;
    assert_eq!(s.writer_metrics().commits - before.commits, 1, "one batch");
    assert_eq!(results[0].as_ref().ok(), Some(&(3, false)));
    assert_eq!(results[1].as_ref().ok(), Some(&(1, false)), "deleted");
    assert_eq!(results[2].as_ref().ok(), Some(&(4, false)));
    assert!(
        matches!(
            &results[3],
            Err(StorageError::QuotaExceeded {
                kind: QuotaKind::GroupBlobs,
                ..
            })
        ),
        "{:?}",
        results[3]
    );
    assert_eq!(results[4].as_ref().ok(), Some(&(1, true)), "remembered");
    assert_eq!(results[5].as_ref().ok(), Some(&(1, false)), "new group");
    assert_eq!(ids_in(&s, g).await, [blob(2), blob(3), blob(4)]);
    assert_eq!(s.max_cursor(g).await.expect("max"), Cursor::new(4));
    assert_eq!(s.stats().await.expect("stats"), totals(2, 4, 40));
    assert_audit_agrees(&s.clone().into()).await;
}

/// If the batch transaction fails, every caller in it gets the error and nothing of it is
/// stored (no half-acknowledged batch); retries then succeed with dense cursors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_every_push_in_the_batch() {
    let (dir, s) = fresh(StorageLimits::default()).await;
    let g = group(1);
    let side = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).expect("side conn");
    side.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    side.execute_batch(
        "CREATE TRIGGER inject_failure BEFORE INSERT ON blobs WHEN NEW.size = 13
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .expect("trigger");

    let sizes = [10usize, 11, 13, 12];
    let pushes = sizes.into_iter().enumerate().map(|(i, len)| {
        move |s: SqliteStorage| async move { s.push(push_req(g, i as u64, len)).await }
    });
    for r in queued_behind_a_pause(&s, pushes).await {
        assert!(
            matches!(r, Err(StorageError::Sqlite(_))),
            "every push fails: {r:?}"
        );
    }
    assert_eq!(s.writer_metrics().failed_commits, 1);
    assert_eq!(s.max_cursor(g).await.expect("max"), Cursor::ZERO);
    assert_eq!(s.stats().await.expect("stats"), StorageStats::default());
    assert_eq!(s.audit().await.expect("audit"), StorageStats::default());

    side.execute_batch("DROP TRIGGER inject_failure;")
        .expect("drop trigger");
    for (i, len) in sizes.into_iter().enumerate() {
        let out = s.push(push_req(g, i as u64, len)).await.expect("retry");
        assert_eq!((out.cursor.get(), out.duplicate), (i as u64 + 1, false));
    }
    assert_eq!(s.stats().await.expect("stats"), totals(1, 4, 46));
}

async fn reopening_continues_cursors_with_all_data_present(kind: Kind) {
    let place = Place::new(kind);
    let (a, b) = (group(1), group(2));
    let s = place.open(StorageLimits::default()).await;
    for n in 1..=10u64 {
        let g = if n % 3 == 0 { b } else { a };
        let mut r = push_req(g, n, 100 * n as usize);
        if n == 1 {
            r.ttl = Duration::from_secs(1);
        }
        s.push(r).await.expect("push");
    }
    assert!(s.delete(a, blob(2), T0).await.expect("delete"));
    assert_eq!(
        s.cleanup_expired(T0 + 1_000, 100).await.expect("cleanup"),
        1
    );
    s.invite_put(vec![7; 8], b"inv".to_vec(), T0 + 600_000)
        .await
        .expect("invite");
    let before_a = pull_all(&s, a, Cursor::ZERO, 100, u64::MAX).await;
    let before_b = pull_all(&s, b, Cursor::ZERO, 100, u64::MAX).await;
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats, totals(2, 8, 5200));
    s.close().await.expect("close");
    drop(s);

    let s = place.open(StorageLimits::default()).await;
    assert_eq!(
        s.stats().await.expect("stats"),
        stats,
        "totals survive a reopen"
    );
    assert_eq!(s.audit().await.expect("audit"), stats);
    assert_eq!(pull_all(&s, a, Cursor::ZERO, 100, u64::MAX).await, before_a);
    assert_eq!(pull_all(&s, b, Cursor::ZERO, 100, u64::MAX).await, before_b);
    assert_eq!(s.max_cursor(a).await.expect("max"), Cursor::new(7));
    assert_eq!(s.max_cursor(b).await.expect("max"), Cursor::new(3));
    assert_eq!(cursor_of(&s, push_req(a, 11, 10)).await, 8);
    assert_eq!(cursor_of(&s, push_req(b, 12, 10)).await, 4);
    let retry = s
        .push(push_req(a, 5, 500))
        .await
        .expect("retry after reopen");
    assert_eq!((retry.cursor.get(), retry.duplicate), (4, true));
    assert_eq!(
        s.invite_take(vec![7; 8], T0, 3).await.expect("take"),
        InviteLookup::Found(b"inv".to_vec())
    );
}

/// Without `close()`, an acknowledged push is still in the file the next process opens.
async fn acknowledged_pushes_survive_dropping_the_handle(kind: Kind) {
    let place = Place::new(kind);
    let s = place.open(StorageLimits::default()).await;
    for n in 1..=5 {
        s.push(push_req(group(1), n, 10)).await.expect("push");
    }
    drop(s);
    let s = place.open(StorageLimits::default()).await;
    assert_eq!(s.max_cursor(group(1)).await.expect("max"), Cursor::new(5));
    assert_eq!(
        pull_all(&s, group(1), Cursor::ZERO, 100, u64::MAX)
            .await
            .len(),
        5
    );
    assert_eq!(cursor_of(&s, push_req(group(1), 6, 10)).await, 6);
}

async fn stats_follow_pushes_deletes_cleanup_and_reopen(kind: Kind) {
    let place = Place::new(kind);
    let s = place.open(StorageLimits::default()).await;
    assert_eq!(s.stats().await.expect("stats"), totals(0, 0, 0));
    for g in 1..=3u8 {
        for n in 0..4u64 {
            let mut r = push_req(group(g), u64::from(g) * 100 + n, 250);
            r.ttl = Duration::from_secs(n + 1);
            s.push(r).await.expect("push");
        }
    }
    assert_eq!(s.stats().await.expect("stats"), totals(3, 12, 3000));
    s.push(push_req(group(1), 100, 250))
        .await
        .expect("duplicate");
    assert_eq!(
        s.stats().await.expect("stats"),
        totals(3, 12, 3000),
        "a duplicate counts once"
    );
    assert!(s.delete(group(2), blob(203), T0).await.expect("delete"));
    assert_eq!(s.stats().await.expect("stats"), totals(3, 11, 2750));
    // TTLs 1 s and 2 s expire: 2 blobs in each of the three groups.
    assert_eq!(
        s.cleanup_expired(T0 + 2_000, 100).await.expect("cleanup"),
        6
    );
    let stats = s.stats().await.expect("stats");
    assert_eq!(stats, totals(3, 5, 1250));
    assert_eq!(s.audit().await.expect("audit"), stats);
    s.close().await.expect("close");
    let s = place.open(StorageLimits::default()).await;
    assert_eq!(s.stats().await.expect("stats"), stats);
    assert_eq!(
        s.cleanup_expired(T0 + DAY.as_millis() as u64, 100)
            .await
            .expect("c"),
        5
    );
    assert_eq!(
        s.stats().await.expect("stats"),
        totals(3, 0, 0),
        "groups stay known"
    );
}

async fn close_finishes_queued_writes_then_refuses_calls(kind: Kind) {
    let place = Place::new(kind);
    let s = place.open(StorageLimits::default()).await;
    let pushes: Vec<_> = (0..50u64)
        .map(|n| {
            let s = s.clone();
            tokio::spawn(async move { (n, s.push(push_req(group(1), n, 10)).await) })
        })
        .collect();
    s.close().await.expect("close");
    let mut stored = HashSet::new();
    for p in pushes {
        let (n, r) = p.await.expect("task");
        match r {
            Ok(out) => {
                stored.insert((out.cursor.get(), n));
            }
            Err(StorageError::Closed) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert!(matches!(
        s.push(push_req(group(1), 99, 1)).await,
        Err(StorageError::Closed)
    ));
    assert!(matches!(
        s.pull(group(1), Cursor::ZERO, 1, 1).await,
        Err(StorageError::Closed)
    ));
    assert!(matches!(s.stats().await, Err(StorageError::Closed)));
    assert!(matches!(s.checkpoint().await, Err(StorageError::Closed)));
    s.close().await.expect("closing twice is fine");
    if let Some(dir) = place.sqlite_dir() {
        let wal = dir.join(format!("{DB_FILE_NAME}-wal"));
        let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert_eq!(wal_len, 0, "the WAL was checkpointed and truncated");
    }
    drop(s);

    // Exactly the acknowledged pushes are in the file.
    let s = place.open(StorageLimits::default()).await;
    let entries = pull_all(&s, group(1), Cursor::ZERO, 1000, u64::MAX).await;
    let found: HashSet<_> = entries
        .iter()
        .map(|e| (e.cursor.get(), e.blob_id))
        .collect();
    let want: HashSet<_> = stored.iter().map(|&(c, n)| (c, blob(n))).collect();
    assert_eq!(found, want);
}

#[tokio::test]
async fn checkpoint_truncates_the_wal() {
    let (dir, s) = fresh(StorageLimits::default()).await;
    for n in 0..20 {
        s.push(push_req(group(1), n, 4096)).await.expect("push");
    }
    let wal = dir.path().join(format!("{DB_FILE_NAME}-wal"));
    assert!(std::fs::metadata(&wal).expect("wal exists").len() > 0);
    // Readers hold no snapshot between calls, so the checkpoint can complete.
    let _ = s
        .pull(group(1), Cursor::ZERO, 5, u64::MAX)
        .await
        .expect("pull");
    s.checkpoint().await.expect("checkpoint");
    assert_eq!(std::fs::metadata(&wal).expect("wal exists").len(), 0);
    assert_eq!(
        pull_all(&s, group(1), Cursor::ZERO, 100, u64::MAX)
            .await
            .len(),
        20
    );
}

#[tokio::test]
async fn schema_is_versioned_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open_in(&dir, StorageLimits::default()).await;
    s.close().await.expect("close");
    let path = dir.path().join(DB_FILE_NAME);
    let conn = rusqlite::Connection::open(&path).expect("open");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("v");
    assert_eq!(version, 4);
    conn.pragma_update(None, "user_version", 99).expect("bump");
    drop(conn);
    let r = SqliteStorage::open(dir.path(), SqliteConfig::default()).await;
    assert!(
        matches!(
            r,
            Err(StorageError::UnsupportedSchema {
                found: 99,
                supported: 4
            })
        ),
        "{r:?}"
    );

    let other = tempfile::tempdir().expect("tempdir");
    let conn = rusqlite::Connection::open(other.path().join(DB_FILE_NAME)).expect("open");
    conn.execute_batch("CREATE TABLE notes (body TEXT);")
        .expect("foreign table");
    drop(conn);
    let r = SqliteStorage::open(other.path(), SqliteConfig::default()).await;
    assert!(matches!(r, Err(StorageError::Corrupt { .. })), "{r:?}");

    let garbage = tempfile::tempdir().expect("tempdir");
    std::fs::write(garbage.path().join(DB_FILE_NAME), vec![0x5a; 8192]).expect("write");
    let r = SqliteStorage::open(garbage.path(), SqliteConfig::default()).await;
    assert!(matches!(r, Err(StorageError::Corrupt { .. })), "{r:?}");
}

#[tokio::test]
async fn storage_handle_is_a_cheap_shared_clone() {
    fn assert_storage<S: Storage>(_: &S) {}
    let (_dir, s) = fresh(StorageLimits::default()).await;
    assert_storage(&s);
    let t = s.clone();
    t.push(push_req(group(1), 1, 1))
        .await
        .expect("push via clone");
    assert_eq!(s.max_cursor(group(1)).await.expect("max"), Cursor::new(1));
    assert!(format!("{s:?}").contains(DB_FILE_NAME));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_never_exceeds_max_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = SqliteConfig {
        max_batch: 2,
        ..SqliteConfig::default()
    };
    let s = SqliteStorage::open(dir.path(), config).await.expect("open");
    let before = s.writer_metrics();
    let pushes = (0..5u64)
        .map(|n| move |s: SqliteStorage| async move { s.push(push_req(group(1), n, 10)).await });
    for (n, out) in queued_behind_a_pause(&s, pushes)
        .await
        .into_iter()
        .enumerate()
    {
        let out = out.expect("push");
        assert_eq!(
            out.cursor.get(),
            n as u64 + 1,
            "queue order is cursor order"
        );
    }
    let after = s.writer_metrics();
    assert_eq!(
        after.commits - before.commits,
        3,
        "5 queued writes, at most 2 per commit"
    );
}

#[tokio::test]
async fn push_queued_keeps_call_order_and_commits_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open_in(&dir, StorageLimits::default()).await;
    let g = group(3);
    let before = s.writer_metrics();
    let pause = s.pause_writer().await.expect("pause");
    // Queued one after the other without awaiting the answers: order is the call order.
    let mut replies = Vec::new();
    for n in 0..50u64 {
        replies.push(s.push_queued(push_req(g, n, 8)).await.expect("queued"));
    }
    pause.release();
    for (n, reply) in replies.into_iter().enumerate() {
        let out = reply.await.expect("committed");
        assert_eq!((out.cursor.get(), out.duplicate), (n as u64 + 1, false));
    }
    assert_eq!(s.writer_metrics().commits - before.commits, 1);
    // A dropped reply does not cancel its push.
    drop(s.push_queued(push_req(g, 50, 8)).await.expect("queued"));
    let out = s.push(push_req(g, 50, 8)).await.expect("retry");
    assert_eq!((out.cursor.get(), out.duplicate), (51, true));
}

/// A removed blob's id is remembered: a retry after expiry or deletion gets the original cursor
/// (nothing stored), the same id with other bytes is a conflict, and the cleanup forgets ids
/// once their time is up (then the id is free again).
async fn removed_blob_ids_are_remembered_until_their_time_is_up(kind: Kind) {
    let memory = Duration::from_secs(3600);
    let (_place, s) = fresh_on(
        kind,
        StorageLimits {
            forget_ids_after: memory,
            ..StorageLimits::default()
        },
    )
    .await;
    let g = group(1);
    let mut short = push_req(g, 1, 40);
    short.ttl = Duration::from_secs(1);
    assert_eq!(cursor_of(&s, short).await, 1);
    assert_eq!(cursor_of(&s, push_req(g, 2, 40)).await, 2);
    assert_eq!(cursor_of(&s, push_req(g, 3, 40)).await, 3);
    // Blob 1 expires; blob 2 is deleted.
    let expired_at = T0 + 1_000;
    assert_eq!(
        s.cleanup_expired(expired_at, 100).await.expect("cleanup"),
        1
    );
    assert!(s.delete(g, blob(2), T0 + 2_000).await.expect("delete"));
    assert_eq!(s.stats().await.expect("stats"), totals(1, 1, 40));

    for (n, stored_at) in [(1, T0), (2, T0)] {
        let mut retry = push_req(g, n, 40);
        retry.now_ms = T0 + 10_000;
        let again = s.push(retry).await.expect("retry");
        assert_eq!(
            again,
            PushOutcome {
                cursor: Cursor::new(n),
                duplicate: true,
                stored_at_ms: stored_at
            },
            "blob {n}"
        );
        let reused = s.push(push_req(g, n, 41)).await;
        assert!(
            matches!(reused, Err(StorageError::BlobConflict)),
            "{reused:?}"
        );
    }
    // A live blob with other bytes is a conflict too.
    let reused = s.push(push_req(g, 3, 7)).await;
    assert!(
        matches!(reused, Err(StorageError::BlobConflict)),
        "{reused:?}"
    );
    assert_eq!(s.stats().await.expect("stats"), totals(1, 1, 40));
    assert_eq!(s.max_cursor(g).await.expect("max"), Cursor::new(3));
    assert_eq!(pull_all(&s, g, Cursor::ZERO, 100, u64::MAX).await.len(), 1);

    // Forgotten in batches once their time is up: blob 1's memory ends first.
    let memory_ms = memory.as_millis() as u64;
    assert_eq!(
        s.forget_removed_ids(expired_at + memory_ms - 1, 10)
            .await
            .expect("f"),
        0
    );
    assert_eq!(
        s.forget_removed_ids(expired_at + memory_ms, 10)
            .await
            .expect("f"),
        1
    );
    assert_eq!(
        s.forget_removed_ids(T0 + 2_000 + memory_ms, 1)
            .await
            .expect("f"),
        1
    );
    assert_eq!(s.forget_removed_ids(u64::MAX / 2, 10).await.expect("f"), 0);
    // A forgotten id is free again: stored anew, under a new cursor.
    let again = s.push(push_req(g, 1, 40)).await.expect("push");
    assert_eq!((again.cursor.get(), again.duplicate), (4, false));
    assert_audit_agrees(&s).await;
}

/// A group that holds no blob, remembers no id and was not active for the idle time is deleted
/// with its counters; groups seen with a session are active; a deleted group that comes back
/// continues above every cursor it used.
async fn idle_empty_groups_are_deleted_and_come_back_above_their_old_cursors(kind: Kind) {
    let (_place, s) = fresh_on(
        kind,
        StorageLimits {
            forget_ids_after: Duration::from_secs(60),
            ..StorageLimits::default()
        },
    )
    .await;
    let idle = Duration::from_secs(600);
    let idle_ms = idle.as_millis() as u64;
    let (quiet, seen, full) = (group(1), group(2), group(3));
    for (g, n) in [(quiet, 1), (quiet, 2), (seen, 3), (full, 4)] {
        s.push(push_req(g, n, 10)).await.expect("push");
    }
    for (g, n) in [(quiet, 1), (quiet, 2), (seen, 3)] {
        assert!(s.delete(g, blob(n), T0).await.expect("delete"));
    }
    assert_eq!(s.stats().await.expect("stats"), totals(3, 1, 10));
    // Their removed ids are still remembered: nothing is deleted yet.
    let later = T0 + idle_ms;
    assert_eq!(
        s.drop_idle_groups(vec![], later, idle, 10)
            .await
            .expect("drop"),
        0
    );
    assert_eq!(s.forget_removed_ids(later, 10).await.expect("forget"), 3);
    // `seen` had a session: active now, so kept. `full` holds a blob: kept.
    let dropped = s.drop_idle_groups(vec![seen], later, idle, 10).await;
    assert_eq!(dropped.expect("drop"), 1);
    assert_eq!(s.stats().await.expect("stats"), totals(2, 1, 10));
    assert_eq!(s.max_cursor(quiet).await.expect("max"), Cursor::ZERO);
    assert_eq!(s.max_cursor(seen).await.expect("max"), Cursor::new(1));
    // `seen`, idle long enough after its session, goes too; `full` never does.
    let much_later = later + idle_ms;
    assert_eq!(
        s.drop_idle_groups(vec![], much_later, idle, 10)
            .await
            .expect("d"),
        1
    );
    assert_eq!(s.stats().await.expect("stats"), totals(1, 1, 10));
    assert_audit_agrees(&s).await;

    // Both come back above the highest cursor of any deleted group (2): no device that
    // remembers an old cursor misses a new blob.
    assert_eq!(cursor_of(&s, push_req(quiet, 10, 10)).await, 3);
    assert_eq!(cursor_of(&s, push_req(seen, 11, 10)).await, 3);
    assert_eq!(cursor_of(&s, push_req(group(9), 12, 10)).await, 3);
    assert_eq!(cursor_of(&s, push_req(full, 13, 10)).await, 2);
    assert_eq!(s.stats().await.expect("stats"), totals(4, 5, 50));
}

/// Every commit that stores pushes reports them (with sizes) and its retries, in commit order,
/// before any pusher of the batch is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_commit_reports_its_pushes_before_answering() {
    let (_dir, s) = fresh(StorageLimits::default()).await;
    let reports = Arc::new(std::sync::Mutex::new(Vec::<CommitReport>::new()));
    s.on_commit({
        let reports = Arc::clone(&reports);
        Arc::new(move |r| reports.lock().expect("lock").push(r))
    });
    let g = group(1);
    s.push(push_req(g, 1, 10)).await.expect("push");
    // Blob 1 again (a retry, same bytes), then two new blobs of 11 and 12 bytes.
    let pushes = (1..=3u64).map(|n| {
        move |s: SqliteStorage| async move { s.push(push_req(group(1), n, 9 + n as usize)).await }
    });
    let results = queued_behind_a_pause(&s, pushes).await;
    // The report is in place when the answers arrive.
    let got = reports.lock().expect("lock").clone();
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].pushes.len(), 1);
    assert_eq!(got[0].duplicates, 0);
    let second: Vec<_> = got[1]
        .pushes
        .iter()
        .map(|p| (p.group, p.cursor.get(), p.blob_id, p.sender, p.size))
        .collect();
    assert_eq!(
        second,
        [
            (g, 2, blob(2), device(1), 11),
            (g, 3, blob(3), device(1), 12)
        ]
    );
    assert_eq!(got[1].duplicates, 1, "blob 1 again");
    // A batch without pushes reports nothing.
    assert!(s.delete(g, blob(2), T0).await.expect("delete"));
    assert_eq!(reports.lock().expect("lock").len(), 2);
}

/// The version 1 schema, as relays before version 2 created it.
const SCHEMA_V1: &str = "
CREATE TABLE groups (
    id          INTEGER PRIMARY KEY,
    group_id    BLOB    NOT NULL UNIQUE,
    last_cursor INTEGER NOT NULL,
    blob_count  INTEGER NOT NULL,
    byte_count  INTEGER NOT NULL
) STRICT;
CREATE TABLE blobs (
    id         INTEGER PRIMARY KEY,
    group_ref  INTEGER NOT NULL,
    cursor     INTEGER NOT NULL,
    blob_id    BLOB    NOT NULL,
    sender     BLOB    NOT NULL,
    size       INTEGER NOT NULL,
    stored_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    payload    BLOB    NOT NULL
) STRICT;
CREATE UNIQUE INDEX blobs_by_cursor  ON blobs (group_ref, cursor);
CREATE UNIQUE INDEX blobs_by_blob_id ON blobs (group_ref, blob_id);
CREATE INDEX        blobs_by_expiry  ON blobs (expires_at);
CREATE TABLE invites (
    lookup_id  BLOB    PRIMARY KEY,
    sealed     BLOB    NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX invites_by_expiry ON invites (expires_at);
";

/// A database written with the version 1 schema opens, is migrated to the current version in place,
/// keeps its data and cursors, and its old blobs (stored without a digest) are idempotent and
/// conflict-checked like new ones, also after they expire.
#[tokio::test]
async fn a_version_1_database_is_migrated_when_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = group(1);
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).expect("open");
        conn.execute_batch(SCHEMA_V1).expect("v1 schema");
        conn.pragma_update(None, "application_id", 0x306b_5352)
            .expect("app id");
        conn.pragma_update(None, "user_version", 1)
            .expect("version");
        conn.execute(
            "INSERT INTO groups (group_id, last_cursor, blob_count, byte_count)
             VALUES (?1, 2, 2, 80)",
            [&g.as_bytes()[..]],
        )
        .expect("group");
        for n in 1..=2u64 {
            conn.execute(
                "INSERT INTO blobs
                     (group_ref, cursor, blob_id, sender, size, stored_at, expires_at, payload)
                 VALUES (1, ?1, ?2, ?3, 40, ?4, ?5, ?6)",
                rusqlite::params![
                    n as i64,
                    &blob(n).as_bytes()[..],
                    &device(1).as_bytes()[..],
                    T0 as i64,
                    (T0 + 1_000 * n) as i64,
                    payload(n, 40)
                ],
            )
            .expect("blob");
        }
    }
    let s = open_in(&dir, StorageLimits::default()).await;
    assert_eq!(s.stats().await.expect("stats"), totals(1, 2, 80));
    assert_audit_agrees(&s.clone().into()).await;
    let page = pull_all(&s, g, Cursor::ZERO, 100, u64::MAX).await;
    assert_eq!(page.len(), 2);
    assert_eq!(page[1].payload, payload(2, 40));
    // Old rows: a retry is a duplicate, other bytes a conflict.
    let retry = s.push(push_req(g, 2, 40)).await.expect("retry");
    assert_eq!((retry.cursor.get(), retry.duplicate), (2, true));
    let reused = s.push(push_req(g, 2, 39)).await;
    assert!(
        matches!(reused, Err(StorageError::BlobConflict)),
        "{reused:?}"
    );
    // An old row that expires is remembered with the digest of its payload.
    assert_eq!(
        s.cleanup_expired(T0 + 1_000, 100).await.expect("cleanup"),
        1
    );
    let retry = s.push(push_req(g, 1, 40)).await.expect("retry");
    assert_eq!((retry.cursor.get(), retry.duplicate), (1, true));
    let reused = s.push(push_req(g, 1, 41)).await;
    assert!(
        matches!(reused, Err(StorageError::BlobConflict)),
        "{reused:?}"
    );
    // New pushes continue the cursors.
    assert_eq!(cursor_of(&s, push_req(g, 3, 40)).await, 3);
    // The membership tables exist in a migrated file.
    let write = MembershipWrite {
        record: Some((1, b"record".to_vec())),
        ..MembershipWrite::default()
    };
    s.membership_write(g, write).await.expect("membership");
    let read = s.membership(g, device(1), 0).await.expect("read");
    assert_eq!(read.records, vec![b"record".to_vec()]);
    s.close().await.expect("close");
    drop(s);

    assert_eq!(file_version(&dir), 4);
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).expect("open");
    // Holes made before the migration are counted as removals (the old file did not say).
    let forgotten: i64 = conn
        .query_row("SELECT forgotten_through FROM groups", [], |r| r.get(0))
        .expect("forgotten_through");
    assert_eq!(forgotten, 2, "the last cursor at the migration");
    let remembered: i64 = conn
        .query_row("SELECT COUNT(*) FROM tombstones", [], |r| r.get(0))
        .expect("tombstones");
    assert_eq!(remembered, 1);
    let active: i64 = conn
        .query_row("SELECT last_active FROM groups", [], |r| r.get(0))
        .expect("last_active");
    assert!(
        active > 0,
        "existing groups are active from the migration on"
    );
    // Reopening a migrated file is a plain open.
    drop(conn);
    let s = open_in(&dir, StorageLimits::default()).await;
    assert_eq!(s.max_cursor(g).await.expect("max"), Cursor::new(3));
}

/// `(cursor, removed_before)` of every entry of one page, and its `removed_after`.
async fn page_holes(
    s: &RelayStorage,
    g: GroupId,
    after: u64,
    count: u32,
) -> (Vec<(u64, u64)>, u64) {
    let page = s
        .pull(g, Cursor::new(after), count, u64::MAX)
        .await
        .expect("pull");
    let entries = page
        .entries
        .iter()
        .map(|e| (e.cursor.get(), e.removed_before))
        .collect();
    (entries, page.removed_after)
}

/// A page accounts for the holes the relay made (deleted and expired blobs, and, once their
/// ids are forgotten, every cursor below the highest forgotten one), and only for those: a row
/// removed behind the relay's back is a hole nobody accounts for.
async fn pages_count_the_holes_the_relay_made_and_only_those(kind: Kind) {
    let (place, s) = fresh_on(kind, StorageLimits::default()).await;
    let g = group(1);
    for n in 1..=6u64 {
        assert_eq!(cursor_of(&s, push_req(g, n, 10)).await, n);
    }
    assert!(s.delete(g, blob(2), T0).await.expect("delete"));
    assert!(s.delete(g, blob(5), T0).await.expect("delete"));
    assert_eq!(
        page_holes(&s, g, 0, 100).await,
        (vec![(1, 0), (3, 1), (4, 0), (6, 1)], 0)
    );
    // A page cut by count says nothing about what lies after its last entry.
    assert_eq!(page_holes(&s, g, 0, 2).await, (vec![(1, 0), (3, 1)], 0));
    // Removed blobs at the end of the log: counted after the last entry.
    assert!(s.delete(g, blob(6), T0).await.expect("delete"));
    assert_eq!(page_holes(&s, g, 4, 100).await, (vec![], 2));

    // The operator deletes cursor 3's row by hand: its hole is not accounted for.
    s.close().await.expect("close");
    drop(s);
    assert_eq!(place.execute("DELETE FROM blobs WHERE cursor = 3").await, 1);
    let s = place.open(StorageLimits::default()).await;
    assert_eq!(page_holes(&s, g, 0, 100).await, (vec![(1, 0), (4, 1)], 2));

    // Once the removed ids are forgotten, every hole up to the highest forgotten cursor counts
    // as a removal (the relay no longer knows better).
    assert_eq!(
        s.forget_removed_ids(u64::MAX / 2, 100)
            .await
            .expect("forget"),
        3
    );
    assert_eq!(page_holes(&s, g, 0, 100).await, (vec![(1, 0), (4, 2)], 2));
}

async fn membership_records_keep_their_order_and_grants_go_to_their_recipient(kind: Kind) {
    let place = Place::new(kind);
    let s = place.open(StorageLimits::default()).await;
    let (g, other) = (group(1), group(2));
    let grant = |sender: u8, epoch: u32, bytes: &[u8]| StoredGrant {
        sender: device(sender),
        epoch,
        envelope: bytes.to_vec(),
    };
    let first = MembershipWrite {
        record: Some((1, b"genesis".to_vec())),
        enrollment: Some((device(2), b"enrol v1".to_vec())),
        grants: vec![
            (device(2), grant(1, 0, b"for 2")),
            (device(3), grant(1, 0, b"for 3")),
        ],
    };
    s.membership_write(g, first).await.expect("first");
    // A second record 1 (a concurrent change) is refused whole: its grant is not stored.
    let racing = MembershipWrite {
        record: Some((1, b"other genesis".to_vec())),
        grants: vec![(device(2), grant(4, 0, b"racing"))],
        ..MembershipWrite::default()
    };
    assert!(matches!(
        s.membership_write(g, racing).await,
        Err(StorageError::RecordConflict)
    ));
    let second = MembershipWrite {
        record: Some((2, b"rotation".to_vec())),
        enrollment: Some((device(2), b"enrol v2".to_vec())),
        grants: vec![(device(2), grant(1, 1, b"epoch 1 for 2"))],
    };
    s.membership_write(g, second).await.expect("second");

    let read = s.membership(g, device(2), 0).await.expect("read");
    assert_eq!(
        read.records,
        vec![b"genesis".to_vec(), b"rotation".to_vec()]
    );
    assert_eq!(read.enrollments, vec![(device(2), b"enrol v2".to_vec())]);
    assert_eq!(
        read.grants,
        vec![grant(1, 0, b"for 2"), grant(1, 1, b"epoch 1 for 2")]
    );
    let later = s.membership(g, device(3), 1).await.expect("after 1");
    assert_eq!(later.records, vec![b"rotation".to_vec()]);
    assert_eq!(later.grants, vec![grant(1, 0, b"for 3")]);
    assert_eq!(
        s.membership(other, device(2), 0).await.expect("other"),
        MembershipRead::default()
    );
    // Membership survives a restart.
    s.close().await.expect("close");
    let s = place.open(StorageLimits::default()).await;
    assert_eq!(record_count(&s, g, device(2)).await, 2);
    s.close().await.expect("close");
}

/// A file of the previous version (3: no membership tables) is migrated when opened: its blobs
/// and cursors stay, and membership can be stored.
#[tokio::test]
async fn a_version_3_database_is_migrated_when_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let g = group(1);
    {
        let s = open_in(&dir, StorageLimits::default()).await;
        assert_eq!(cursor_of(&s, push_req(g, 1, 40)).await, 1);
        s.close().await.expect("close");
    }
    {
        // What version 3 wrote: this build's file without the tables version 4 added.
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE_NAME)).expect("open");
        conn.execute_batch(
            "DROP TABLE group_records; DROP TABLE enrollments; DROP TABLE grants;
             PRAGMA user_version = 3;",
        )
        .expect("back to version 3");
    }
    let s = open_in(&dir, StorageLimits::default()).await;
    assert_eq!(
        cursor_of(&s, push_req(g, 2, 40)).await,
        2,
        "cursors continue"
    );
    let write = MembershipWrite {
        record: Some((1, b"genesis".to_vec())),
        ..MembershipWrite::default()
    };
    s.membership_write(g, write)
        .await
        .expect("membership after migration");
    assert_eq!(record_count(&s, g, device(1)).await, 1);
    s.close().await.expect("close");
    assert_eq!(file_version(&dir), 4);
}

/// Runs each listed behaviour test once per backend: on SQLite in a temp dir, and on a fresh
/// database of a private PostgreSQL server.
macro_rules! on_both {
    ($( #[$test:meta] $name:ident; )+) => {
        mod on_sqlite {
            $( #[$test] async fn $name() { super::$name(super::Kind::Sqlite).await } )+
        }
        mod on_postgres {
            $( #[$test] async fn $name() { super::$name(super::Kind::Postgres).await } )+
        }
    };
}

on_both! {
    #[tokio::test]
    a_push_can_carry_a_tighter_group_byte_quota_but_never_a_looser_one;
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    concurrent_pushers_and_a_puller_see_every_blob_exactly_once;
    #[tokio::test]
    reopening_continues_cursors_with_all_data_present;
    #[tokio::test]
    acknowledged_pushes_survive_dropping_the_handle;
    #[tokio::test]
    stats_follow_pushes_deletes_cleanup_and_reopen;
    #[tokio::test]
    close_finishes_queued_writes_then_refuses_calls;
    #[tokio::test]
    removed_blob_ids_are_remembered_until_their_time_is_up;
    #[tokio::test]
    idle_empty_groups_are_deleted_and_come_back_above_their_old_cursors;
    #[tokio::test]
    pages_count_the_holes_the_relay_made_and_only_those;
    #[tokio::test]
    membership_records_keep_their_order_and_grants_go_to_their_recipient;
}

/// Two relays on one PostgreSQL database run their cleanup at the same moment: each expired
/// blob is removed (and its id remembered) exactly once, the live ones stay, and the totals
/// and every group's counters stay exact; forgetting the remembered ids at once is exact too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_cleaning_up_at_once_remove_each_expired_blob_once() {
    const PER_GROUP: u64 = 600;
    let place = Place::new(Kind::Postgres);
    let one = place.open(StorageLimits::default()).await;
    let two = place.open(StorageLimits::default()).await;
    let mut live = 0u64;
    for g in 1..=3u8 {
        for n in 0..PER_GROUP {
            let mut r = push_req(group(g), u64::from(g) << 32 | n, 100);
            // Two in three expire after a second; the rest live a day.
            if n % 3 != 0 {
                r.ttl = Duration::from_secs(1);
            } else {
                live += 1;
            }
            let s = if n % 2 == 0 { &one } else { &two };
            s.push(r).await.expect("push");
        }
    }
    let expired = 3 * PER_GROUP - live;
    let later = T0 + 2_000;
    let sweep = |s: RelayStorage, forget: bool| {
        tokio::spawn(async move {
            let mut total = 0;
            loop {
                let n = if forget {
                    s.forget_removed_ids(u64::MAX, 64).await.expect("forget")
                } else {
                    s.cleanup_expired(later, 64).await.expect("cleanup")
                };
                total += n;
                if n < 64 {
                    return total;
                }
            }
        })
    };
    let (a, b) = (sweep(one.clone(), false), sweep(two.clone(), false));
    let removed = a.await.expect("sweep") + b.await.expect("sweep");
    assert_eq!(removed, expired, "each expired blob removed once");
    let stats = one.stats().await.expect("stats");
    assert_eq!(stats, totals(3, live, live * 100));
    assert_eq!(one.audit().await.expect("audit"), stats);
    for g in 1..=3u8 {
        let ids = ids_in(&two, group(g)).await;
        let want: Vec<BlobId> = (0..PER_GROUP)
            .filter(|n| n % 3 == 0)
            .map(|n| blob(u64::from(g) << 32 | n))
            .collect();
        assert_eq!(ids, want, "exactly the live blobs of group {g}");
        // A retry of an expired blob is still answered with its original cursor.
        let retry = two
            .push(PushRequest {
                ttl: Duration::from_secs(1),
                ..push_req(group(g), u64::from(g) << 32 | 1, 100)
            })
            .await
            .expect("retry");
        assert_eq!((retry.cursor.get(), retry.duplicate), (2, true));
    }
    let (a, b) = (sweep(one.clone(), true), sweep(two.clone(), true));
    let forgotten = a.await.expect("forget") + b.await.expect("forget");
    assert_eq!(forgotten, expired, "each remembered id forgotten once");
    assert_eq!(one.audit().await.expect("audit"), stats);
}

/// Taking an invite: an expired one is counted until its attempts run out, a live one is
/// delivered unless they ran out already.
#[test]
fn taking_an_invite_follows_its_expiry_and_attempts() {
    use super::rules::InviteTake;
    let found = || InviteTake::Remove(InviteLookup::Found(b"sealed".to_vec()));
    let too_many = || InviteTake::Remove(InviteLookup::TooManyAttempts);
    // (expires_at, attempts, max_attempts, step), taken at 10.
    let cases = [
        (10, 0, 3, InviteTake::Count),
        (10, 1, 3, InviteTake::Count),
        (10, 2, 3, too_many()),
        (10, 0, 0, too_many()),
        (11, 0, 3, found()),
        (11, 2, 3, found()),
        (11, 3, 3, too_many()),
        (11, 0, 0, too_many()),
    ];
    for (expires_at, attempts, max, want) in cases {
        assert_eq!(
            InviteTake::decide(b"sealed".to_vec(), expires_at, attempts, 10, max),
            want,
            "expires_at {expires_at}, attempts {attempts}, max {max}"
        );
    }
}

/// A page holds at least one blob, and stops at its count or byte limit.
#[test]
fn a_page_is_cut_by_count_and_bytes_but_never_empty() {
    use super::rules::PageCut;
    let mut cut = PageCut::new(0, 100);
    assert_eq!(
        cut.rows_to_read(),
        2,
        "a count of 0 reads one blob and one more"
    );
    assert!(cut.admit(500), "the first blob, whatever its size");
    assert!(!cut.admit(1));
    assert!(cut.has_more());
    let mut cut = PageCut::new(3, 100);
    assert!(cut.admit(60));
    assert!(cut.admit(40));
    assert!(!cut.has_more());
    assert!(!cut.admit(1), "over the byte limit");
    assert!(cut.has_more());
}
