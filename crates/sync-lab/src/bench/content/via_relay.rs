//! Step 4 of the large content section: content through the relay's content store. The real
//! `sync-relay` binary (its own process, own data dir), two `SyncClient` devices of one group,
//! each with an in-memory store, its own iroh endpoint on 127.0.0.1 and a content node on that
//! endpoint (so the relay sees its device id). A sends the file with
//! `ContentClient::send_file` (seal, register with the relay, upload, announce), then goes
//! offline (session and endpoint closed); B receives it with `ContentClient::receive` from the
//! relay alone and opens it to a file.
//!
//! `send_file` and `receive` are timed whole and split by what can be watched from outside,
//! read every [`POLL`]: sealing ends when the send's progress counts every plaintext byte
//! sealed (handed to the store, which still finishes its import after), the upload when the
//! relay's `/metrics` counts it complete; the fetch ends when the receive's progress counts
//! every sealed byte held (opening follows).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;
use sync_client::{
    ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    StoreLocation, SyncClient,
};
use sync_content::{
    ContentClient, ContentNode, ContentStore, Descriptor, Holder, Progress, SendError, SendOptions,
};
use sync_types::RelayAddr;

use super::super::BenchError;
use super::super::relay::BenchRelay;
use super::{Rate, bound, check_output, failed};
use crate::soak::{fetch_metrics, parse_metric};

/// How often the progress counters are read.
const POLL: Duration = Duration::from_millis(2);
/// How long one device may take to connect, or the admin's genesis to show.
const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// How long closing a device may take.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What step 4 measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ViaRelay {
    /// Measured.
    Measured(RelayFigures),
    /// Not measured, and why (e.g. the relay has no content store).
    Skipped {
        /// Why.
        reason: String,
    },
}

/// The figures of step 4.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RelayFigures {
    /// A's `send_file` whole: seal, register, upload, announce.
    pub send_file: Rate,
    /// Its sealing part: until the last chunk was sealed and handed to A's content store.
    pub seal: Rate,
    /// From there until the relay counted the upload complete (its `content_uploads_total`):
    /// A's store finishing the import, the registration, the upload. When the relay's counter
    /// was not seen to move, until `send_file` returned.
    pub upload: Rate,
    /// Whether [`RelayFigures::upload`] ends at the relay's counter (`true`) or at
    /// `send_file` returning (`false`).
    pub upload_seen_by_relay: bool,
    /// Seconds `send_file` took after the relay counted the upload complete (the sender waits
    /// for the relay to close the upload connection, then announces).
    pub send_file_after_stored_s: f64,
    /// B's fetch from the relay (verified, into B's store).
    pub download: Rate,
    /// B's `receive` whole: fetch, then open to a file.
    pub download_and_open: Rate,
}

impl ViaRelay {
    /// The printed lines of step 4 for size `label`.
    pub(in crate::bench) fn lines(&self, label: &str) -> Vec<String> {
        match self {
            ViaRelay::Measured(m) => vec![
                format!(
                    "[content {label}] 4. via relay: A uploads to the relay          {}  ({}; sealing before it {})",
                    m.upload.show(),
                    if m.upload_seen_by_relay {
                        "from the last chunk sealed to stored by the relay: A's store finishing, register, upload"
                    } else {
                        "from the last chunk sealed to send_file returning"
                    },
                    m.seal.show()
                ),
                format!(
                    "[content {label}] 4. via relay: A send_file whole              {}  ({:.2} s of it after the relay had stored the content)",
                    m.send_file.show(),
                    m.send_file_after_stored_s
                ),
                format!(
                    "[content {label}] 4. via relay: A offline, B downloads from the relay {}  (+ open to a file: {})",
                    m.download.show(),
                    m.download_and_open.show()
                ),
            ],
            ViaRelay::Skipped { reason } => {
                vec![format!("[content {label}] 4. via relay: skipped: {reason}")]
            }
        }
    }
}

/// A device: its client, its transport (for its endpoint), its content store's directory.
struct Device {
    sync: SyncClient,
    transport: Arc<IrohTransport>,
}

/// A device of `group` at `relay` with its own endpoint on 127.0.0.1 and an in-memory store.
async fn connect(relay: &RelayAddr, group: &GroupMaterial, k: usize) -> Result<Device, BenchError> {
    let transport = Arc::new(IrohTransport::new(
        IrohConfig::new(relay.id, relay.socket_addrs())
            .with_bind_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
    ));
    let config = ClientConfig::new(
        StoreLocation::InMemory,
        transport.clone(),
        GroupChoice::Use(group.clone()),
    )
    .with_device_name(format!("content bench device {k}"))
    .with_options(ClientOptions::for_tests());
    match tokio::time::timeout(CONNECT_WAIT, SyncClient::connect(config)).await {
        Ok(Ok(sync)) => Ok(Device { sync, transport }),
        Ok(Err(e)) => Err(failed(&format!("device {k} connecting"), e)),
        Err(_) => Err(BenchError::Content(format!(
            "device {k} did not connect within {CONNECT_WAIT:?}"
        ))),
    }
}

/// Waits (bounded) until the admin's view of the group shows its genesis.
async fn until_genesis(admin: &SyncClient) -> Result<(), BenchError> {
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        if let Ok(Ok(members)) = tokio::time::timeout(CONNECT_WAIT, admin.members()).await
            && members.iter().any(|m| m.this_device && m.admin)
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Content(format!(
                "the admin's genesis did not show within {CONNECT_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The device's content client: a content store in `dir`, a node on the device's endpoint.
async fn content_client(
    device: &Device,
    dir: &Path,
    relay: &Holder,
) -> Result<ContentClient, BenchError> {
    let ep = device
        .transport
        .bound_endpoint()
        .await
        .ok_or_else(|| BenchError::Content("the device's endpoint is not bound".into()))?;
    let store = ContentStore::open(dir)
        .await
        .map_err(|e| failed("open a content store", e))?;
    let node = ContentNode::serve(store, ep);
    ContentClient::new(device.sync.clone(), node, Some(relay.clone()))
        .await
        .map_err(|e| failed("a content client", e))
}

async fn close(sync: &SyncClient) {
    let _ = tokio::time::timeout(CLOSE_WAIT, sync.close()).await;
}

/// Step 4 for `input` of `bytes`, against a relay of its own on a data dir under `dir`.
pub(super) async fn measure(
    relay_bin: &Path,
    dir: &Path,
    input: &Path,
    bytes: u64,
) -> Result<ViaRelay, BenchError> {
    let work = dir.join("via-relay");
    std::fs::create_dir_all(&work).map_err(BenchError::io("create the relay's data dir"))?;
    let relay = BenchRelay::start(relay_bin, &work.join("relay")).await?;
    let group = GroupMaterial::random(&mut ChaCha20Rng::seed_from_u64(0x0c07_e475));
    let mut devices = Vec::with_capacity(2);
    let measured = measure_with(&relay, &group, &work, input, bytes, &mut devices).await;
    for d in &devices {
        close(&d.sync).await;
        if let Some(ep) = d.transport.bound_endpoint().await {
            ep.close().await;
        }
    }
    relay.stop().await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    measured
}

async fn measure_with(
    relay: &BenchRelay,
    group: &GroupMaterial,
    work: &Path,
    input: &Path,
    bytes: u64,
    devices: &mut Vec<Device>,
) -> Result<ViaRelay, BenchError> {
    let holder = Holder {
        id: *relay.addr.id.as_bytes(),
        addrs: relay.addr.socket_addrs(),
        relay: true,
    };
    devices.push(connect(&relay.addr, group, 0).await?);
    until_genesis(&devices[0].sync).await?;
    devices.push(connect(&relay.addr, group, 1).await?);
    let a = content_client(&devices[0], &work.join("a"), &holder).await?;
    let b = content_client(&devices[1], &work.join("b"), &holder).await?;

    // A sends: sealing ends when every plaintext byte is read and sealed.
    let progress = Progress::new();
    let options = SendOptions {
        progress: Some(Arc::clone(&progress)),
        ..SendOptions::default()
    };
    let start = Instant::now();
    let stored = tokio::spawn(uploads_counted(relay.http_addr(), start));
    let (sent, sealed_at) = until_done(
        "A's send_file",
        bytes,
        a.send_file(input, options),
        &progress,
        bytes,
    )
    .await?;
    let send_time = start.elapsed();
    stored.abort();
    let stored_at = stored.await.ok().flatten();
    let sent = match sent {
        Ok(s) => s,
        Err(SendError::Refused(e)) => {
            return Ok(ViaRelay::Skipped {
                reason: format!("the relay refused the content: {e}"),
            });
        }
        Err(e) => return Err(failed("A's send_file", e)),
    };
    if !sent.relay_copy {
        return Ok(ViaRelay::Skipped {
            reason: "the relay has no content store (it answered NotSupported to the content \
                     registration)"
                .into(),
        });
    }
    let seal_time = sealed_at.unwrap_or(send_time);

    // A goes offline; B is given the relay alone as holder (dialling the offline sender first
    // would only add the content node's 5 s dial timeout to the figure).
    close(&devices[0].sync).await;
    if let Some(ep) = devices[0].transport.bound_endpoint().await {
        ep.close().await;
    }
    drop(a);
    let descriptor = match sent.descriptor {
        Descriptor::Item(mut item) => {
            item.holders.retain(|h| h.relay);
            Descriptor::Item(item)
        }
        other @ Descriptor::Collection(_) => other,
    };
    let sealed_size: u64 = descriptor.items().iter().map(|i| i.sealed_size()).sum();
    let out_dir = work.join("received");
    std::fs::create_dir_all(&out_dir).map_err(BenchError::io("create the receive dir"))?;
    let progress = Progress::new();
    let start = Instant::now();
    let (received, fetched_at) = until_done(
        "B's receive",
        bytes,
        b.receive(&descriptor, &out_dir, Some(Arc::clone(&progress))),
        &progress,
        sealed_size,
    )
    .await?;
    let receive_time = start.elapsed();
    let received = received.map_err(|e| failed("B's receive", e))?;
    if !received.is_complete() || received.bytes_fetched != sealed_size {
        return Err(BenchError::Content(format!(
            "B received {} of {sealed_size} sealed bytes; missing: {:?}",
            received.bytes_fetched, received.missing
        )));
    }
    let out = received
        .written
        .first()
        .cloned()
        .ok_or_else(|| BenchError::Content("B wrote no file".into()))?;
    let src = input.to_path_buf();
    super::super::joined(
        tokio::task::spawn_blocking(move || check_output(&src, &out)).await,
        "checking the received file",
    )??;
    close(b.sync()).await;
    let fetch_time = fetched_at.unwrap_or(receive_time);
    let upload_end = stored_at.filter(|t| *t >= seal_time && *t <= send_time);
    Ok(ViaRelay::Measured(RelayFigures {
        send_file: Rate::of(bytes, send_time),
        seal: Rate::of(bytes, seal_time),
        upload: Rate::of(
            bytes,
            upload_end.unwrap_or(send_time).saturating_sub(seal_time),
        ),
        upload_seen_by_relay: upload_end.is_some(),
        send_file_after_stored_s: upload_end
            .map_or(0.0, |t| send_time.saturating_sub(t).as_secs_f64()),
        download: Rate::of(bytes, fetch_time),
        download_and_open: Rate::of(bytes, receive_time),
    }))
}

/// Polls the relay's `/metrics` at `http` every [`POLL`] until its
/// `content_uploads_total` counts an upload: how long after `start` (it runs until aborted).
async fn uploads_counted(http: SocketAddr, start: Instant) -> Option<Duration> {
    let key = format!("{}content_uploads_total", sync_relay::METRIC_PREFIX);
    loop {
        let counted = fetch_metrics(http)
            .await
            .and_then(|text| parse_metric(&text, &key))
            .is_some_and(|v| v >= 1.0);
        if counted {
            return Some(start.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Drives `fut` (bounded for `bytes`) while reading `progress` every [`POLL`]: its output, and
/// how long after the start `progress` first counted `mark` bytes done.
async fn until_done<T>(
    what: &str,
    bytes: u64,
    fut: impl std::future::Future<Output = T>,
    progress: &Progress,
    mark: u64,
) -> Result<(T, Option<Duration>), BenchError> {
    let start = Instant::now();
    let limit = bound(bytes);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(fut, deadline);
    let mut reached = None;
    loop {
        tokio::select! {
            out = &mut fut => {
                return Ok((out, reached.or_else(|| (progress.done() >= mark).then(|| start.elapsed()))));
            }
            () = &mut deadline => {
                return Err(BenchError::Content(format!("{what} did not finish within {limit:?}")));
            }
            () = tokio::time::sleep(POLL) => {
                if reached.is_none() && progress.done() >= mark {
                    reached = Some(start.elapsed());
                }
            }
        }
    }
}
