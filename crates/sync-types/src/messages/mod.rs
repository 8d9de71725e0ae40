//! Every message of the protocol and [`Message`], the one thing a frame carries. The encoding
//! is documented on [`Message`], the type byte table on [`MessageType`].

mod blobs;
mod content;
mod envelope;
mod mailbox;
mod membership;
mod session;
mod wire_error;

#[cfg(test)]
mod tests;

pub use blobs::{Delete, DeleteAck, Notify, Pull, PullEntry, PullResponse, Push, PushAck};
pub use content::{ContentAck, ContentRef};
pub use envelope::{Direction, ENVELOPE_LEN, Message, MessageType};
pub use mailbox::{InviteFound, InviteGet, InvitePut, InviteStored};
pub use membership::{Enroll, Grant, GroupChanged, GroupGet, GroupInfo, GroupUpdate};
pub use session::{Bye, Challenge, Hello, Ping, Pong, Welcome};
pub use wire_error::WireError;
