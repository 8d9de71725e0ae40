//! Stopping a server process: SIGTERM or SIGINT, watched from the moment [`StopSignals::watch`]
//! is called, so a signal that arrives before anyone waits for it (right after a supervisor read
//! the ready line, say) still stops the process cleanly instead of killing it.

/// SIGTERM and SIGINT (Ctrl-C), once watched.
#[derive(Debug)]
pub struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts watching both signals (their default action, ending the process, is replaced).
    /// Needs a tokio runtime.
    pub fn watch() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves at the first SIGTERM or SIGINT received since [`StopSignals::watch`].
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
