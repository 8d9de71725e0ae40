//! Where output goes. Data (standard output) goes through [`line`], [`json`] and [`bytes`], whose write
//! errors become failures: a reader that went away (`sync-cli pull | head -c1`, EPIPE) is
//! [`Kind::OutputClosed`], which exits quietly with 141 (the shell's code for SIGPIPE) instead
//! of panicking like `println!`. Notes for the person (standard error) go through [`note!`],
//! which never fails.

use std::fmt;
use std::io::{ErrorKind, Write as _};

use crate::fail::{Failure, Kind};

fn io_failure(e: &std::io::Error) -> Failure {
    if e.kind() == ErrorKind::BrokenPipe {
        Failure::new(Kind::OutputClosed, "standard output was closed")
    } else {
        Failure::new(Kind::Other, format!("standard output: {e}"))
    }
}

/// Writes one line of data to standard output and flushes it.
pub(crate) fn line(args: fmt::Arguments<'_>) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| io_failure(&e))
}

/// One JSON document as a line of data on standard output.
pub(crate) fn json(v: &serde_json::Value) -> Result<(), Failure> {
    line(format_args!("{v}"))
}

/// Writes bytes to standard output (not flushed: call [`flush`]).
pub(crate) fn bytes(data: &[u8]) -> Result<(), Failure> {
    std::io::stdout()
        .lock()
        .write_all(data)
        .map_err(|e| io_failure(&e))
}

/// Flushes standard output: once this returns `Ok`, everything written was handed to the reader
/// (a pipe, a file, the terminal).
pub(crate) fn flush() -> Result<(), Failure> {
    std::io::stdout().lock().flush().map_err(|e| io_failure(&e))
}

/// A line of data on standard output: `outln!("…", …)?`.
macro_rules! outln {
    () => { $crate::out::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::out::line(format_args!($($arg)*)) };
}

/// A line for the person on standard error; a failing stderr is ignored (never a panic).
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub(crate) use {note, outln};
