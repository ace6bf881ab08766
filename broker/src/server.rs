//! The TCP listener that serves the Kafka protocol.
//!
//! The listener never gives up: a failed `accept` is logged and retried, after a pause that
//! grows while the failures are about resources (out of file descriptors, say), so the broker
//! recovers once they free up. At most `max.connections` clients are served at once; a
//! connection beyond that is closed as soon as it is accepted.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::broker::Broker;
use crate::limits::{ACCEPT_BACKOFF_MS_MAX, ACCEPT_BACKOFF_MS_MIN};

/// Accepts connections on `listener` and serves each on its own task, until the process ends.
/// Never returns an error: failures to accept are logged and retried (see [`AcceptBackoff`]).
pub async fn serve(broker: Arc<Broker>, listener: TcpListener) -> std::io::Result<()> {
    let connections_max = broker.config.connections_max;
    let slots = Arc::new(Semaphore::new(connections_max));
    let mut backoff = AcceptBackoff::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(error) => {
                let pause = backoff.after(&error);
                let pause_ms = pause.as_millis() as u64;
                tracing::warn!(%error, pause_ms, "accept failed; retrying");
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, max = connections_max, "max.connections reached; closing");
            drop(stream);
            continue;
        };
        tracing::debug!(%peer, "connection");
        let broker = Arc::clone(&broker);
        tokio::spawn(async move {
            crate::protocol::serve_connection(broker, stream).await;
            drop(slot);
        });
    }
}

/// Binds `address`, returning the listener and the address actually bound (port 0 picks one).
pub async fn bind(address: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// How long to pause after a failed `accept`.
///
/// A failure that concerns only the connection being accepted (the peer reset it before we
/// took it, say) is retried at once. Any other failure, above all running out of file
/// descriptors (EMFILE, ENFILE) or memory, would repeat immediately and spin the CPU, so it
/// waits [`ACCEPT_BACKOFF_MS_MIN`], doubling on each further failure up to
/// [`ACCEPT_BACKOFF_MS_MAX`], until an `accept` succeeds.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    pause_ms: u64,
}

impl AcceptBackoff {
    /// The pause to take after `error`.
    pub fn after(&mut self, error: &std::io::Error) -> Duration {
        if accept_error_is_per_connection(error) {
            return Duration::ZERO;
        }
        self.pause_ms = (self.pause_ms * 2).clamp(ACCEPT_BACKOFF_MS_MIN, ACCEPT_BACKOFF_MS_MAX);
        Duration::from_millis(self.pause_ms)
    }

    /// An `accept` succeeded: the next failure starts from the shortest pause again.
    pub fn reset(&mut self) {
        self.pause_ms = 0;
    }
}

/// Whether `error` concerns only the one connection `accept` was taking, so the listener itself
/// is fine and the next `accept` may follow at once.
pub fn accept_error_is_per_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;

    #[test]
    fn out_of_file_descriptors_backs_off_doubling_to_one_second() {
        let mut backoff = AcceptBackoff::default();
        let emfile = std::io::Error::from_raw_os_error(EMFILE);
        let pauses: Vec<u64> = (0..10)
            .map(|_| backoff.after(&emfile).as_millis() as u64)
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        backoff.reset();
        let enfile = std::io::Error::from_raw_os_error(ENFILE);
        assert_eq!(backoff.after(&enfile), Duration::from_millis(10));
    }

    #[test]
    fn a_connection_reset_before_accept_is_retried_at_once() {
        let mut backoff = AcceptBackoff::default();
        for kind in [ErrorKind::ConnectionAborted, ErrorKind::ConnectionReset] {
            assert_eq!(backoff.after(&kind.into()), Duration::ZERO);
        }
        assert!(!accept_error_is_per_connection(
            &std::io::Error::from_raw_os_error(EMFILE)
        ));
    }
}
