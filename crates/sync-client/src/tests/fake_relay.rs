//! The unit tests' relay: the test kit's [`HostileRelay`](sync_testkit::hostile_relay), honest
//! until told otherwise, reached through an in-memory transport.

use sync_testkit::hostile_relay::DuplexSession;
pub(crate) use sync_testkit::hostile_relay::{HostileRelay as FakeRelay, PullTrick};

use crate::error::TransportError;
use crate::transport::{MemoryTransport, Session};

/// A transport whose every dial opens an in-memory session with `relay`.
pub(crate) fn transport(relay: &FakeRelay) -> MemoryTransport {
    let relay = relay.clone();
    MemoryTransport::new(move |device| {
        let DuplexSession {
            reader,
            writer,
            binding,
            relay_id,
        } = relay
            .open_duplex(device.device_id())
            .ok_or_else(|| TransportError::Connect("fake relay offline".into()))?;
        Ok(Session::new(reader, writer, binding, relay_id))
    })
}
