//! [`ProxyHandle`]: the running proxy's configuration, counters and stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;

use super::proxy::Shared;
use super::{ImpairConfig, ImpairError, ProxyStats, lock};

pub(super) struct Inner {
    pub(super) shared: Arc<Shared>,
    pub(super) local: SocketAddr,
    pub(super) tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for flow in lock(&self.shared.flows).values() {
            flow.reader.abort();
        }
    }
}

/// Controls a running [`Proxy`](super::Proxy): change its configuration, read its counters, stop it. Cheap to
/// clone; the proxy stops when the last clone is dropped (or on [`ProxyHandle::shutdown`]).
#[derive(Clone)]
pub struct ProxyHandle {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("listen", &self.inner.local)
            .field("upstream", &self.inner.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl ProxyHandle {
    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// The address datagrams are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.shared.upstream
    }

    /// The current configuration.
    pub fn config(&self) -> ImpairConfig {
        lock(&self.inner.shared.config).clone()
    }

    /// Replaces the configuration (the seed is only read at start). Applies to the next
    /// packet; a partition also drops the packets in flight.
    pub fn set_config(&self, config: ImpairConfig) -> Result<(), ImpairError> {
        config.validate()?;
        *lock(&self.inner.shared.config) = config;
        self.inner.shared.changed.notify_waiters();
        Ok(())
    }

    /// Changes the configuration in place; refused (and not applied) when the result is
    /// invalid.
    pub fn update(&self, f: impl FnOnce(&mut ImpairConfig)) -> Result<(), ImpairError> {
        let mut next = self.config();
        f(&mut next);
        self.set_config(next)
    }

    /// Partitions both directions: nothing crosses until [`ProxyHandle::heal`].
    pub fn partition(&self) {
        self.set_partition(true);
    }

    /// Ends a partition of both directions.
    pub fn heal(&self) {
        self.set_partition(false);
    }

    fn set_partition(&self, on: bool) {
        let mut c = lock(&self.inner.shared.config);
        c.up.partition = on;
        c.down.partition = on;
        drop(c);
        self.inner.shared.changed.notify_waiters();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        self.inner.shared.stats()
    }

    /// Waits until `pred` holds for the counters (checked on every counter change), for at
    /// most `timeout`; returns the snapshot that satisfied it.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&ProxyStats) -> bool,
    ) -> Result<ProxyStats, ImpairError> {
        let shared = &self.inner.shared;
        let wait = async {
            loop {
                let notified = shared.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let s = shared.stats();
                if pred(&s) {
                    return s;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ImpairError::Timeout(timeout))
    }

    /// Stops forwarding (all clones stop working); sockets close when the tasks end.
    pub fn shutdown(&self) {
        for t in &self.inner.tasks {
            t.abort();
        }
        for flow in lock(&self.inner.shared.flows).drain() {
            flow.1.reader.abort();
        }
    }
}
