//! The raw SQLite baseline: bare inserts of 1 KiB rows on the relay's own schema (same table,
//! same indexes) with the relay writer's pragmas (WAL, `synchronous=NORMAL`,
//! `wal_autocheckpoint`, `journal_size_limit`, `mmap_size`, `cache_size` from
//! `SqliteConfig::default`), 100 rows per transaction, in this process. What storage alone
//! costs on this machine right now.

use std::path::Path;
use std::time::Instant;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng as _, SeedableRng};
use sync_relay::SqliteConfig;
use sync_types::{BlobId, unix_ms};

use super::cpu::this_thread_cpu;
use super::{BenchError, SEALED, TTL};

/// Rows per transaction.
const ROWS_PER_TXN: usize = 100;

/// What the baseline measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RawSqlite {
    /// Rows inserted per second.
    pub(super) rate: f64,
    /// CPU µs of this thread per row.
    pub(super) cpu_us: f64,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Opens `raw.db` in `dir` with the relay writer's pragmas and schema.
fn open(dir: &Path) -> Result<rusqlite::Connection, BenchError> {
    let defaults = SqliteConfig::default();
    let conn = rusqlite::Connection::open(dir.join("raw.db"))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(BenchError::Io {
            what: "raw SQLite baseline".into(),
            source: std::io::Error::other(format!("journal mode is {mode}, not WAL")),
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        i64::from(defaults.wal_autocheckpoint_pages),
    )?;
    conn.pragma_update(
        None,
        "journal_size_limit",
        to_i64(defaults.journal_size_limit_bytes),
    )?;
    conn.pragma_update(None, "mmap_size", to_i64(defaults.mmap_size_bytes))?;
    conn.pragma_update(
        None,
        "cache_size",
        -to_i64(defaults.cache_size_bytes / 1024),
    )?;
    conn.execute_batch(sync_relay::SCHEMA)?;
    Ok(conn)
}

/// Inserts `rows` rows into a new database in `dir` (blocking: run it on a blocking thread).
pub(super) fn measure(dir: &Path, rows: usize) -> Result<RawSqlite, BenchError> {
    let conn = open(dir)?;
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let sender = [9u8; 32];
    let now = to_i64(unix_ms());
    let expires = now.saturating_add(to_i64(TTL.as_secs() * 1000));
    let size = to_i64(SEALED as u64);
    let mut payload = vec![0u8; SEALED];
    let cpu0 = this_thread_cpu();
    let start = Instant::now();
    let mut cursor: i64 = 0;
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(ROWS_PER_TXN);
        let tx = conn.unchecked_transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO blobs
                    (group_ref, cursor, blob_id, sender, size, stored_at, expires_at, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for _ in 0..n {
                cursor += 1;
                // Blob ids as devices make them (time-ordered), as in the relay runs.
                let blob_id = *BlobId::time_ordered(&mut rng, unix_ms() / 1000).as_bytes();
                rng.fill_bytes(&mut payload);
                st.execute(rusqlite::params![
                    1i64,
                    cursor,
                    &blob_id[..],
                    &sender[..],
                    size,
                    now,
                    expires,
                    &payload[..]
                ])?;
            }
        }
        tx.commit()?;
        done += n;
    }
    #[allow(clippy::cast_precision_loss)]
    let rows = rows.max(1) as f64;
    Ok(RawSqlite {
        rate: rows / start.elapsed().as_secs_f64().max(1e-9),
        cpu_us: (this_thread_cpu() - cpu0) * 1e6 / rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_every_row_into_the_relays_table() {
        let dir = tempfile::tempdir().unwrap();
        let m = measure(dir.path(), 250).unwrap();
        assert!(m.rate > 0.0 && m.cpu_us >= 0.0);
        let conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
        let (rows, bytes): (i64, i64) = conn
            .query_row("SELECT COUNT(*), SUM(size) FROM blobs", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((rows, bytes), (250, 250 * SEALED as i64));
    }
}
