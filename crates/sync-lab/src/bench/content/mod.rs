//! The large content section (`--content`): what moving one large file costs, per size, with
//! the bounds measured in the same run.
//!
//! For each size, an input file is generated in a temporary directory (pseudo-random bytes up
//! to [`RANDOM_INPUT_MAX`]; above it a sparse file, zeros with a marker every 64 MiB, so that a
//! gigabyte of input costs no time to write: the plaintext's bytes do not change what sealing,
//! hashing or sending costs, the ciphertext is random either way). Then:
//!
//! 1. **Bare seal + hash**, the CPU bound: every 64 KiB chunk sealed with `ChunkCipher::seal`
//!    (XChaCha20-Poly1305) into one buffer in memory, then BLAKE3 of that ciphertext
//!    (`iroh_blobs::Hash::new`), on one thread, no I/O.
//! 2. **Raw iroh bulk**, the network bound: the sealed size written on one QUIC bidirectional
//!    stream between two self-hosted iroh endpoints on 127.0.0.1, until the receiver has read
//!    the last byte and said so.
//! 3. **Content direct**: the file sealed into A's content store; B fetches it from A
//!    (`ContentNode::fetch`, BLAKE3 verified streaming) and opens it to a file
//!    (`open_to_file`). Fetch and fetch + open against (2): target at least 50 %, floor 50 MB/s.
//! 4. **Content via the relay**: the real `sync-relay` binary, two `SyncClient` devices of one
//!    group; A's `ContentClient::send_file` (seal, register, upload to the relay's content
//!    store, announce), A goes offline, B's `ContentClient::receive` fetches from the relay and
//!    opens. Skipped, with the reason, when the relay has no content store.
//!
//! Rates are MB/s (10^6 bytes per second) of the file's plaintext size; the sealed size is
//! 0.02 % larger (a 16-byte tag per 64 KiB chunk). Every step is bounded in time.

mod local;
mod via_relay;

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::runner::{Printer, temp_dir};
use super::{BenchError, cpu::loadavg};

pub(in crate::bench) use via_relay::ViaRelay;

/// Sizes measured by default.
pub const DEFAULT_CONTENT_SIZES: &[u64] = &[100 << 20, 1 << 30];
/// Accepted content sizes (1 MiB to 16 GiB).
pub const CONTENT_SIZE_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(16 << 30);
/// Most sizes one section measures.
pub const MAX_CONTENT_SIZES: usize = 4;
/// Largest input written as pseudo-random bytes; larger inputs are sparse.
pub(in crate::bench) const RANDOM_INPUT_MAX: u64 = 256 << 20;
/// The target of a direct fetch, as a share of the raw iroh bulk throughput.
pub(in crate::bench) const DIRECT_TARGET_SHARE: f64 = 0.5;
/// The floor of a direct fetch, MB/s.
pub(in crate::bench) const DIRECT_FLOOR_MBPS: f64 = 50.0;

/// One step's time and rate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rate {
    /// Seconds taken.
    pub seconds: f64,
    /// MB/s (10^6 bytes per second) of the file's size.
    pub mb_per_s: f64,
}

impl Rate {
    /// `bytes` in `elapsed`.
    pub(in crate::bench) fn of(bytes: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let mb_per_s = if seconds > 0.0 {
            bytes as f64 / seconds / 1e6
        } else {
            0.0
        };
        Self { seconds, mb_per_s }
    }

    fn show(&self) -> String {
        format!("{:>8.1} MB/s ({:>7.2} s)", self.mb_per_s, self.seconds)
    }
}

/// Step 1: sealing and hashing in memory on one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SealHash {
    /// Sealing every chunk.
    pub seal: Rate,
    /// BLAKE3 of the ciphertext.
    pub hash: Rate,
    /// Both, one after the other.
    pub seal_and_hash: Rate,
}

/// Step 3: content between two nodes, no relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Direct {
    /// Sealing the file into A's store (read, seal, store, BLAKE3 tree).
    pub seal: Rate,
    /// B fetching from A, verified, into B's store.
    pub fetch: Rate,
    /// Fetch, then opening to a file.
    pub fetch_and_open: Rate,
    /// Fetch throughput / raw iroh bulk throughput.
    pub fetch_share_of_raw: f64,
    /// Whether the fetch is at least [`DIRECT_TARGET_SHARE`] of raw iroh.
    pub target_met: bool,
    /// Whether the fetch is at least [`DIRECT_FLOOR_MBPS`].
    pub floor_met: bool,
}

/// Everything measured for one size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContentSize {
    /// Plaintext bytes.
    pub bytes: u64,
    /// Sealed bytes.
    pub sealed_bytes: u64,
    /// How the input file was made: `pseudo-random` or `sparse`.
    pub input: &'static str,
    /// Step 1.
    pub seal_hash: SealHash,
    /// Step 2.
    pub raw_iroh: Rate,
    /// Step 3.
    pub direct: Direct,
    /// Step 4.
    pub via_relay: ViaRelay,
}

/// The section's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ContentFigures {
    /// Cores of this machine.
    pub cores: usize,
    /// One entry per size, in order.
    pub sizes: Vec<ContentSize>,
}

/// What the section measures.
pub(in crate::bench) struct Section<'a> {
    /// The `sync-relay` binary.
    pub(in crate::bench) relay_bin: &'a Path,
    /// Content sizes, in order.
    pub(in crate::bench) sizes: &'a [u64],
}

/// A human size: `8 MiB`, `1 GiB`, `1536 KiB`.
pub(in crate::bench) fn show_size(bytes: u64) -> String {
    for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} B")
}

/// Parses a size: a whole number with an optional unit, `B`, `KiB`, `MiB`, `GiB` (also `K`,
/// `M`, `G`, same meaning), any case, `_` allowed.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 100MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?} (B, KiB, MiB, GiB)"
            ));
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Checks the sizes against [`CONTENT_SIZE_RANGE`] and [`MAX_CONTENT_SIZES`].
pub fn check_sizes(sizes: &[u64]) -> Result<(), String> {
    if sizes.is_empty() || sizes.len() > MAX_CONTENT_SIZES {
        return Err(format!("1 to {MAX_CONTENT_SIZES} content sizes"));
    }
    for s in sizes {
        if !CONTENT_SIZE_RANGE.contains(s) {
            return Err(format!(
                "content size {} is out of range ({} to {})",
                show_size(*s),
                show_size(*CONTENT_SIZE_RANGE.start()),
                show_size(*CONTENT_SIZE_RANGE.end())
            ));
        }
    }
    Ok(())
}

/// How long one step on `bytes` may take: a minute plus 2 MB/s.
pub(in crate::bench) fn bound(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / 2_000_000)
}

/// Runs `fut` within [`bound`] of `bytes`; running out is an error naming `what`.
pub(in crate::bench) async fn bounded<T>(
    what: &str,
    bytes: u64,
    fut: impl std::future::Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    let limit = bound(bytes);
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| BenchError::Content(format!("{what} did not finish within {limit:?}")))?
}

/// A content failure while doing `what`.
pub(in crate::bench) fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Content(format!("{what}: {e}"))
}

/// Writes the input file of `bytes` at `path`; returns how it was made.
fn write_input(path: &Path, bytes: u64) -> Result<&'static str, BenchError> {
    use std::io::Write as _;
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::create(path).map_err(BenchError::io("create the input file"))?;
    if bytes > RANDOM_INPUT_MAX {
        file.set_len(bytes)
            .map_err(BenchError::io("size the sparse input file"))?;
        for i in 0..bytes.div_ceil(MARKER_EVERY) {
            file.write_all_at(marker(i).as_bytes(), i * MARKER_EVERY)
                .map_err(BenchError::io("write a marker of the input file"))?;
        }
        // The last marker may have grown the file.
        file.set_len(bytes)
            .map_err(BenchError::io("size the sparse input file"))?;
        return Ok("sparse");
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut rng = XorShift::new(0x0c0f_fee0);
    let mut block = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        rng.fill(&mut block);
        let n = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
        out.write_all(&block[..n])
            .map_err(BenchError::io("write the input file"))?;
        left -= n as u64;
    }
    out.flush()
        .map_err(BenchError::io("write the input file"))?;
    Ok("pseudo-random")
}

/// Distance between the markers of a sparse input.
const MARKER_EVERY: u64 = 64 << 20;

fn marker(i: u64) -> String {
    format!("0k-sync bench marker {i:08}")
}

/// Checks that `out` is `input` again: same length, and the same bytes at the start, the
/// middle and the end (64 KiB each) and at every marker.
fn check_output(input: &Path, out: &Path) -> Result<(), BenchError> {
    use std::os::unix::fs::FileExt as _;
    let open =
        |p: &Path| std::fs::File::open(p).map_err(BenchError::io(format!("open {}", p.display())));
    let (a, b) = (open(input)?, open(out)?);
    let len = |f: &std::fs::File| {
        f.metadata()
            .map(|m| m.len())
            .map_err(BenchError::io("size a file"))
    };
    let (la, lb) = (len(&a)?, len(&b)?);
    if la != lb {
        return Err(BenchError::Content(format!(
            "the received file has {lb} bytes, the input {la}"
        )));
    }
    let window = 64 * 1024u64;
    let mut offsets = vec![0, la / 2, la.saturating_sub(window)];
    offsets.extend((0..la.div_ceil(MARKER_EVERY)).map(|i| i * MARKER_EVERY));
    let (mut x, mut y) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    for off in offsets {
        let n = usize::try_from(window.min(la - off.min(la))).unwrap_or(0);
        a.read_exact_at(&mut x[..n], off)
            .map_err(BenchError::io("read the input"))?;
        b.read_exact_at(&mut y[..n], off)
            .map_err(BenchError::io("read the received file"))?;
        if x[..n] != y[..n] {
            return Err(BenchError::Content(format!(
                "the received file differs from the input at offset {off}"
            )));
        }
    }
    Ok(())
}

/// A fast pseudo-random generator (xorshift64), for inputs that neither compress nor repeat.
pub(in crate::bench) struct XorShift(u64);

impl XorShift {
    pub(in crate::bench) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub(in crate::bench) fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            let mut s = self.0;
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            self.0 = s;
            word.copy_from_slice(&s.to_le_bytes()[..word.len()]);
        }
    }
}

/// Runs the section and prints it.
pub(in crate::bench) async fn run(
    section: &Section<'_>,
    p: &mut Printer<'_>,
) -> Result<ContentFigures, BenchError> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    p.line("## Large content")?;
    p.line(format!(
        "64 KiB chunks, XChaCha20-Poly1305, BLAKE3 verified streaming (iroh-blobs) over iroh QUIC \
         on 127.0.0.1; inputs: pseudo-random up to {}, sparse above (a marker every 64 MiB); \
         MB/s = 10^6 B/s of the file's size; cores: {cores}; load average: {}",
        show_size(RANDOM_INPUT_MAX),
        loadavg()
    ))?;
    let mut figures = ContentFigures {
        cores,
        sizes: Vec::with_capacity(section.sizes.len()),
    };
    for &bytes in section.sizes {
        p.line("")?;
        let measured = measure_size(section, bytes, p).await?;
        figures.sizes.push(measured);
    }
    p.line("")?;
    for line in table(&figures) {
        p.line(line)?;
    }
    Ok(figures)
}

/// One size: input, then steps 1 to 4, each printed as it is measured.
async fn measure_size(
    section: &Section<'_>,
    bytes: u64,
    p: &mut Printer<'_>,
) -> Result<ContentSize, BenchError> {
    let dir = temp_dir("the content inputs")?;
    let input = dir.path().join("input.bin");
    let path = input.clone();
    let kind = super::joined(
        tokio::task::spawn_blocking(move || write_input(&path, bytes)).await,
        "writing the input",
    )??;
    let sealed = sync_content::chunk::sealed_size(bytes, sync_content::chunk::DEFAULT_CHUNK_SIZE);
    let label = show_size(bytes);
    p.line(format!(
        "### {label} ({bytes} B, {sealed} B sealed, {kind} input)"
    ))?;

    let seal_hash = super::joined(
        tokio::task::spawn_blocking(move || local::seal_and_hash(bytes)).await,
        "sealing in memory",
    )??;
    p.line(format!(
        "[content {label}] 1. bare seal+hash, 1 core, in memory: seal {}  hash {}  both {}",
        seal_hash.seal.show(),
        seal_hash.hash.show(),
        seal_hash.seal_and_hash.show()
    ))?;

    let raw_iroh = bounded("raw iroh bulk", bytes, local::raw_bulk(bytes, sealed)).await?;
    p.line(format!(
        "[content {label}] 2. raw iroh bulk, 1 QUIC stream:           {}",
        raw_iroh.show()
    ))?;

    let direct = local::direct(dir.path(), &input, bytes, raw_iroh).await?;
    p.line(format!(
        "[content {label}] 3. direct: seal into A's store            {}",
        direct.seal.show()
    ))?;
    p.line(format!(
        "[content {label}] 3. direct: B fetches from A               {}  = {:.0} % of raw iroh (target ≥ {:.0} %: {}; floor {DIRECT_FLOOR_MBPS:.0} MB/s: {})",
        direct.fetch.show(),
        100.0 * direct.fetch_share_of_raw,
        100.0 * DIRECT_TARGET_SHARE,
        met(direct.target_met),
        met(direct.floor_met)
    ))?;
    p.line(format!(
        "[content {label}] 3. direct: fetch + open to a file         {}",
        direct.fetch_and_open.show()
    ))?;

    let via_relay = via_relay::measure(section.relay_bin, dir.path(), &input, bytes).await?;
    for line in via_relay.lines(&label) {
        p.line(line)?;
    }
    drop(dir);
    Ok(ContentSize {
        bytes,
        sealed_bytes: sealed,
        input: kind,
        seal_hash,
        raw_iroh,
        direct,
        via_relay,
    })
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "not met" }
}

/// The summary table, one row per size.
fn table(f: &ContentFigures) -> Vec<String> {
    let mut out = vec![
        "Large content summary (MB/s)     seal+hash  raw iroh   direct:  seal  fetch  fetch+open  fetch/raw   relay: upload  download"
            .to_string(),
    ];
    for s in &f.sizes {
        let (up, down) = match &s.via_relay {
            ViaRelay::Measured(m) => (
                format!("{:>8.1}", m.upload.mb_per_s),
                format!("{:>8.1}", m.download.mb_per_s),
            ),
            ViaRelay::Skipped { .. } => ("skipped".into(), "skipped".into()),
        };
        out.push(format!(
            "  {:<30} {:>9.1}  {:>8.1}  {:>12.1}  {:>5.1}  {:>10.1}  {:>8.0} %  {:>13}  {:>8}",
            show_size(s.bytes),
            s.seal_hash.seal_and_hash.mb_per_s,
            s.raw_iroh.mb_per_s,
            s.direct.seal.mb_per_s,
            s.direct.fetch.mb_per_s,
            s.direct.fetch_and_open.mb_per_s,
            100.0 * s.direct.fetch_share_of_raw,
            up,
            down
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_are_checked() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size(" 1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100m"), Ok(100 << 20));
        assert_eq!(parse_size("1_048_576"), Ok(1 << 20));
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(check_sizes(&[8 << 20, 1 << 30]).is_ok());
        assert!(check_sizes(&[]).is_err());
        assert!(check_sizes(&[1024]).is_err());
        assert!(check_sizes(&[1 << 20; MAX_CONTENT_SIZES + 1]).is_err());
        assert_eq!(show_size(100 << 20), "100 MiB");
        assert_eq!(show_size(1 << 30), "1 GiB");
        assert_eq!(show_size(1000), "1000 B");
    }

    #[test]
    fn inputs_are_written_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        assert_eq!(write_input(&a, 3 << 20).unwrap(), "pseudo-random");
        assert_eq!(std::fs::metadata(&a).unwrap().len(), 3 << 20);
        std::fs::copy(&a, &b).unwrap();
        check_output(&a, &b).unwrap();
        let mut bytes = std::fs::read(&b).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&b, bytes).unwrap();
        assert!(check_output(&a, &b).is_err());
    }
}
