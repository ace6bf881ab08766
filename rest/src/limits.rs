//! Every bound the HTTP API puts on its clients, in one place (docs/limits.md lists them with
//! the engine's and the broker's). Each has a default here and, where it is configurable, a key
//! in the server's config file (config.rs).

use std::time::Duration;

/// `http.header.read.timeout.ms`: a connection must deliver a whole request head (request line
/// and headers) within this long of the server starting to wait for it, or it is closed. This
/// also bounds how long an idle HTTP/1.1 keep-alive connection is kept, and how long a new
/// connection may send nothing at all. It does not bound an HTTP/2 connection once its preface
/// has arrived (HTTP/2 streams are bounded by the body read timeout and the push-client limit).
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// `http.body.read.timeout.ms`: a request body must arrive in full within this long of its
/// handler starting to read it, or the request is answered 408 and the connection closed. On
/// `/inserts-stream`, whose body is a stream of rows by design, it is the longest pause
/// allowed between two pieces of the body instead.
pub const BODY_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// The largest request body: statements and insert batches, not bulk loads.
pub const BODY_BYTES_MAX: usize = 16 << 20;

/// Argon2 password checks running at once. Each takes tens of milliseconds of one core and
/// 19 MiB of memory, so more at once would only queue for the same cores while holding more
/// memory; requests beyond it wait their turn without blocking the async runtime.
pub const PASSWORD_CHECKS_CONCURRENT_MAX: usize = 2;
