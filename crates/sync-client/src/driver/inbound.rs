//! What the session's I/O tasks report (dial results, frames, read and write failures), fed
//! into the sans-IO session when it concerns the current connection.

use sync_core::Input as SessionInput;

use super::Driver;
use super::io::Input;

impl Driver {
    pub(super) fn on_input(&mut self, input: Input) {
        match input {
            Input::Dialed { attempt, result } => self.on_dialed(attempt, result),
            Input::Frame { session, msg } => {
                if self.io.is_current(session) {
                    self.feed(SessionInput::Frame(msg));
                }
            }
            Input::GroupFetched(result) => self.on_group_fetched(result),
            Input::ReadEnded { session, reason } | Input::WriteFailed { session, reason } => {
                if self.io.is_current(session) {
                    self.feed(SessionInput::TransportLost { reason });
                }
            }
        }
    }
}
