//! The raw PostgreSQL baseline: bare inserts of 1 KiB rows into the relay's `blobs` table (the
//! schema created by the relay's own storage library on a scratch database), through one
//! direct `tokio-postgres` connection, batched the way the relay's writers insert (one
//! `INSERT … SELECT * FROM unnest(…)` per transaction) with their largest batch
//! (`PostgresConfig::max_batch`, 512 rows), spread over 16 groups. What PostgreSQL alone takes
//! on this machine right now, in the same run; the digests are random bytes (the relay hashes
//! each payload; that is its cost, not the database's).

use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};
use sync_relay::{PostgresConfig, PostgresStorage, Storage as _};
use sync_types::{BlobId, unix_ms};

use super::super::{BenchError, SEALED, TTL};

/// Groups the rows are spread over (as the 16 devices of the throughput runs).
const GROUPS: usize = 16;

/// What the baseline measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RawPostgres {
    /// Rows inserted per second.
    pub(super) rate: f64,
    /// Rows per transaction.
    pub(super) batch: usize,
}

fn pg(e: impl std::fmt::Display) -> BenchError {
    BenchError::Postgres(e.to_string())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Creates the relay's schema in the (empty) database at `url` with the relay's storage
/// library, then inserts `rows` rows into its `blobs` table directly.
pub(super) async fn measure(url: &str, rows: usize) -> Result<RawPostgres, BenchError> {
    let config = PostgresConfig::new(url);
    let batch = config.max_batch.max(1);
    let storage = PostgresStorage::open(config).await?;
    storage.close().await?;
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(pg)?;
    let driver = tokio::spawn(connection);
    let measured = insert(&client, rows, batch).await;
    drop(client);
    let _ = driver.await;
    measured
}

async fn insert(
    client: &tokio_postgres::Client,
    rows: usize,
    batch: usize,
) -> Result<RawPostgres, BenchError> {
    let statement = client
        .prepare(
            "INSERT INTO blobs
                 (group_id, cursor, blob_id, sender, size, stored_at, expires_at, digest, payload)
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[],
                                  $5::int8[], $6::int8[], $7::int8[], $8::bytea[], $9::bytea[])",
        )
        .await
        .map_err(pg)?;
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let groups: Vec<[u8; 32]> = (0..GROUPS)
        .map(|_| {
            let mut g = [0u8; 32];
            rng.fill_bytes(&mut g);
            g
        })
        .collect();
    let mut cursors = [0i64; GROUPS];
    let sender = vec![9u8; 32];
    let now = to_i64(unix_ms());
    let expires = now.saturating_add(to_i64(TTL.as_secs() * 1000));
    let size = to_i64(SEALED as u64);
    let start = Instant::now();
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(batch);
        let mut group = Vec::with_capacity(n);
        let mut cursor = Vec::with_capacity(n);
        let mut blob_id = Vec::with_capacity(n);
        let mut digest = Vec::with_capacity(n);
        let mut payload = Vec::with_capacity(n);
        for i in 0..n {
            let g = (done + i) % GROUPS;
            cursors[g] += 1;
            group.push(groups[g].to_vec());
            cursor.push(cursors[g]);
            // Blob ids as devices make them (time-ordered), as in the relay runs.
            blob_id.push(
                BlobId::time_ordered(&mut rng, unix_ms() / 1000)
                    .as_bytes()
                    .to_vec(),
            );
            let mut d = vec![0u8; 32];
            rng.fill_bytes(&mut d);
            digest.push(d);
            let mut p = vec![0u8; SEALED];
            rng.fill_bytes(&mut p);
            payload.push(p);
        }
        let senders = vec![sender.clone(); n];
        let sizes = vec![size; n];
        let stored = vec![now; n];
        let expiry = vec![expires; n];
        client.batch_execute("BEGIN").await.map_err(pg)?;
        client
            .execute(
                &statement,
                &[
                    &group, &cursor, &blob_id, &senders, &sizes, &stored, &expiry, &digest,
                    &payload,
                ],
            )
            .await
            .map_err(pg)?;
        client.batch_execute("COMMIT").await.map_err(pg)?;
        done += n;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = rows.max(1) as f64 / start.elapsed().as_secs_f64().max(1e-9);
    Ok(RawPostgres { rate, batch })
}
