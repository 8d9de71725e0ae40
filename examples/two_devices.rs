//! Two devices of one group sync through a relay: the laptop pushes, the phone pulls, verifies
//! and decrypts. The relay only ever holds ciphertext.
//!
//! Start a relay in another terminal (`cargo run -p sync-relay`), then:
//!
//! ```sh
//! cargo run -p sync-client --example two_devices -- http://127.0.0.1:7441
//! ```
//!
//! The argument is the relay's HTTP address or its `ID@HOST:PORT` dial string.

use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    ClientConfig, GroupChoice, GroupMaterial, IrohConfig, IrohTransport, StoreLocation, SyncClient,
    WatchEvent, WatchOptions,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let where_ = std::env::args()
        .nth(1)
        .unwrap_or("http://127.0.0.1:7441".into());
    let relay = sync_client::resolve_relay(&where_, Duration::from_secs(5)).await?;
    let addrs = sync_client::lookup_relay(&relay, Duration::from_secs(5)).await?;

    // A new group: its secret never leaves the devices (share it through an invite).
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    let group = GroupMaterial::random(&mut ChaCha20Rng::from_seed(seed));

    let device = |name: &str| {
        let transport = Arc::new(IrohTransport::new(IrohConfig::new(relay.id, addrs.clone())));
        let config = ClientConfig::new(
            StoreLocation::InMemory,
            transport,
            GroupChoice::Use(group.clone()),
        );
        SyncClient::connect(config.with_device_name(name))
    };
    let laptop = device("laptop").await?;
    let phone = device("phone").await?;

    let receipt = laptop.push(b"hello from the laptop").await?;
    println!(
        "laptop pushed blob {} (cursor {})",
        receipt.blob_id, receipt.cursor
    );

    // Follow the group until the first batch arrives; commit it once handled.
    let mut watcher = phone.watch(WatchOptions::default());
    while let Some(event) = watcher.next().await {
        if let WatchEvent::Batch(batch) = event {
            for blob in &batch.blobs {
                println!("phone received: {}", String::from_utf8_lossy(&blob.data));
            }
            phone.commit_pull(&batch).await?;
            break;
        }
    }
    laptop.close().await;
    phone.close().await;
    Ok(())
}
