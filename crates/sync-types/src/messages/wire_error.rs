//! The `Error` message: a typed failure of a request or of the whole session.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::wire::len;

/// Either side: a request failed or the session is being closed for a reason (the `Error`
/// message, type 0x7F).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// Echo of the failed request's id; `None` for session-level errors.
    pub request_id: Option<u64>,
    /// What went wrong.
    pub code: ErrorCode,
    /// Human-readable detail. Never contains keys, payloads or other secrets.
    pub message: String,
    /// Retry hint: wait at least this long before retrying.
    pub retry_after_ms: Option<u64>,
}

impl WireError {
    /// An error with a code and a message, not tied to a request.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request_id: None,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// The same error, answering the request with this id.
    pub fn for_request(mut self, request_id: u64) -> Self {
        self.request_id = Some(request_id);
        self
    }

    /// The same error with a retry hint.
    pub fn retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// Whether retrying later may succeed: a retryable code, or any code with a retry hint.
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable() || self.retry_after_ms.is_some()
    }

    /// Exact size of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        len::sum(&[
            len::array_header(4),
            len::opt_uint(self.request_id),
            len::uint(self.code.as_u16().into()),
            len::str(self.message.len()),
            len::opt_uint(self.retry_after_ms),
        ])
    }
}
