//! The client's in-memory transport over the relay's own session code: two `SyncClient`s whose
//! sessions are in-process byte streams into the relay (no QUIC), a push from one pulled by the
//! other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use sync_client::{
    ClientConfig, ClientOptions, GroupChoice, MemoryTransport, Session, StoreLocation, SyncClient,
    TransportError,
};
use sync_relay::{RelayConfig, RelayHandle};
use sync_testkit::devices::{group, pull_until};
use sync_testkit::guard;
use sync_types::RelayId;

/// A transport whose every session is an in-memory session of `relay`.
fn memory_transport(relay: RelayHandle) -> MemoryTransport {
    MemoryTransport::new(move |device| {
        let s = relay
            .connect_in_memory(device.device_id())
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Ok(Session::new(
            s.reader,
            s.writer,
            s.binding,
            RelayId::from_bytes(s.relay_id),
        ))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_transport_against_the_real_relay() {
    let dir = tempfile::tempdir().unwrap();
    let relay = sync_relay::start(RelayConfig::for_tests(dir.path()))
        .await
        .expect("relay starts");
    let g = group(5);
    let config = |relay: &RelayHandle| {
        ClientConfig::new(
            StoreLocation::InMemory,
            Arc::new(memory_transport(relay.clone())),
            GroupChoice::Use(g.clone()),
        )
        .with_options(ClientOptions::for_tests())
    };
    let a = SyncClient::connect(config(&relay)).await.unwrap();
    let b = SyncClient::connect(config(&relay)).await.unwrap();
    let r = guard("push", a.push(b"in memory")).await.unwrap();
    let got = pull_until(&b, 1).await;
    assert_eq!(got[0].blob_id, r.blob_id);
    assert_eq!(got[0].data, b"in memory");
    a.close().await;
    b.close().await;
    relay.shutdown().await.unwrap();
}
