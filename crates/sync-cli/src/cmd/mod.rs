//! The commands, one module each: its arguments (where it has any) and what it does. What they
//! share lives in [`crate::device`].

pub(crate) mod devices;
pub(crate) mod flush;
pub(crate) mod init;
pub(crate) mod invite;
pub(crate) mod pair;
pub(crate) mod pull;
pub(crate) mod push;
pub(crate) mod relays;
pub(crate) mod status;
pub(crate) mod watch;
