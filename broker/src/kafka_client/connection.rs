//! [`Connections`]: the pooled TCP connections of a [`super::KafkaClient`].
//!
//! A connection carries one request at a time and belongs to that request while it is in flight:
//! it returns to the pool only once the whole response has been read and its correlation id
//! checked. A request that fails, times out or is cancelled (its future dropped half-way through
//! writing the request or reading the answer) takes its connection with it, so no later request
//! can read a stale answer or follow a half-written frame. An idle connection the broker closed
//! (a restart, its idle timeout) is noticed when it is taken from the pool and replaced.
//!
//! Requests travel in two lanes with separate pools: long-poll fetches, which may wait for data
//! up to their `max_wait`, never hold up produce, metadata and offset requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{BrokerError, Result};
use crate::limits::FRAME_BYTES_MAX;
use crate::protocol::str_bytes;

/// Longest wait for an answer beyond what the request itself asks to wait (Kafka's
/// `request.timeout.ms`); past it the connection is dropped and the request fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait to open a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once to one node for produce, metadata, offsets and admin requests.
pub const CONTROL_CONNECTIONS_MAX: usize = 8;
/// Connections open at once to one node for fetches (each may be parked in a long poll).
pub const FETCH_CONNECTIONS_MAX: usize = 64;

/// Which pool a request draws its connection from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lane {
    /// Produce, metadata, offsets, groups and admin requests: answered without waiting.
    Control,
    /// Fetches, which the broker may hold until data arrives.
    Fetch,
}

impl Lane {
    fn connections_max(self) -> usize {
        match self {
            Lane::Control => CONTROL_CONNECTIONS_MAX,
            Lane::Fetch => FETCH_CONNECTIONS_MAX,
        }
    }
}

/// Whether a request may be sent again after its connection failed: true for reads and for
/// writes whose repetition changes nothing; false for produce, which could append twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    Safe,
    Never,
}

/// The connections of one node and lane: idle ones, and permits bounding how many are open.
struct Slot {
    idle: Mutex<Vec<TcpStream>>,
    permits: Arc<Semaphore>,
}

/// Every pooled connection of one client, by node address and lane.
#[derive(Default)]
pub(crate) struct Connections {
    slots: Mutex<HashMap<(String, Lane), Arc<Slot>>>,
    correlation_ids: AtomicI32,
}

/// A connection lent to one request; returned to its pool only by [`Lease::release`].
struct Lease {
    stream: TcpStream,
    /// Taken from the pool rather than opened for this request.
    reused: bool,
    slot: Arc<Slot>,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Back to the pool (which never holds more than its permits, so needs no cap of its own).
    fn release(self) {
        self.slot.idle.lock().push(self.stream);
    }
}

impl Connections {
    /// Sends `request` to the node at `address` and reads its answer, waiting at most `wait`
    /// (what the request asks the broker to wait, if anything) plus [`REQUEST_TIMEOUT`]. A
    /// [`Retry::Safe`] request that fails on a connection taken from the pool is sent once more
    /// on a new one.
    pub(crate) async fn send<R: Request>(
        &self,
        address: &str,
        lane: Lane,
        retry: Retry,
        version: i16,
        request: &R,
        wait: Duration,
    ) -> Result<R::Response> {
        let frame = encode(version, request)?;
        let network = |reason: String| BrokerError::Network {
            address: address.to_string(),
            reason,
        };
        loop {
            let mut lease = self.lease(address, lane).await?;
            let correlation_id = self.correlation_ids.fetch_add(1, Ordering::Relaxed) & i32::MAX;
            let exchange = exchange::<R>(&mut lease.stream, version, correlation_id, &frame);
            let error = match tokio::time::timeout(wait + REQUEST_TIMEOUT, exchange).await {
                Ok(Ok(response)) => {
                    lease.release();
                    return Ok(response);
                }
                Ok(Err(error)) => error,
                Err(_) => {
                    return Err(network(format!(
                        "no answer within {} ms",
                        (wait + REQUEST_TIMEOUT).as_millis()
                    )))
                }
            };
            // The lease is dropped here with its connection: whatever state it is in, no
            // other request will use it.
            match error {
                Exchange::Io(e) if lease.reused && retry == Retry::Safe => {
                    tracing::debug!(address, error = %e, "pooled connection failed; retrying");
                }
                Exchange::Io(e) => return Err(network(e.to_string())),
                Exchange::Protocol(reason) => return Err(network(reason)),
            }
        }
    }

    /// A connection to `address` in `lane`: an idle one still open, or a new one.
    async fn lease(&self, address: &str, lane: Lane) -> Result<Lease> {
        let slot = Arc::clone(
            self.slots
                .lock()
                .entry((address.to_string(), lane))
                .or_insert_with(|| {
                    Arc::new(Slot {
                        idle: Mutex::new(Vec::new()),
                        permits: Arc::new(Semaphore::new(lane.connections_max())),
                    })
                }),
        );
        let permit = Arc::clone(&slot.permits)
            .acquire_owned()
            .await
            .map_err(|_| BrokerError::Internal("connection pool closed".into()))?;
        loop {
            let Some(stream) = slot.idle.lock().pop() else {
                break;
            };
            if still_open(&stream) {
                return Ok(Lease {
                    stream,
                    reused: true,
                    slot,
                    _permit: permit,
                });
            }
        }
        let not_connected = |reason: String| BrokerError::NotConnected {
            address: address.to_string(),
            reason,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| {
                not_connected(format!(
                    "no connection within {} ms",
                    CONNECT_TIMEOUT.as_millis()
                ))
            })?
            .map_err(|e| not_connected(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| not_connected(e.to_string()))?;
        Ok(Lease {
            stream,
            reused: false,
            slot,
            _permit: permit,
        })
    }
}

/// Whether an idle connection can carry a request: the peer has not closed it, and it holds
/// no bytes nobody asked for.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    // A real, non-blocking peek: tokio's cached readiness may not have seen the peer's FIN yet.
    match socket2::SockRef::from(stream).peek(&mut byte) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(_) => false,
    }
}

/// The request's frame with correlation id 0 (set per exchange) and its size prefix.
fn encode<R: Request>(version: i16, request: &R) -> Result<BytesMut> {
    let internal = |e: anyhow::Error| BrokerError::Internal(e.to_string());
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(0)
        .with_client_id(Some(str_bytes("eddy")));
    let mut frame = BytesMut::new();
    frame.put_i32(0);
    header
        .encode(&mut frame, R::header_version(version))
        .map_err(internal)?;
    request.encode(&mut frame, version).map_err(internal)?;
    let size = (frame.len() - 4) as i32;
    frame[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

/// Why an exchange failed.
enum Exchange {
    /// The connection failed: nothing is known of the request's fate.
    Io(std::io::Error),
    /// The answer was not one this request could have: the stream is out of step.
    Protocol(String),
}

impl From<std::io::Error> for Exchange {
    fn from(e: std::io::Error) -> Exchange {
        Exchange::Io(e)
    }
}

/// Offset of the correlation id in a frame: after the size, api key and version.
const CORRELATION_AT: usize = 4 + 2 + 2;

/// Writes one request and reads its answer on a connection nobody else is using.
async fn exchange<R: Request>(
    stream: &mut TcpStream,
    version: i16,
    correlation_id: i32,
    frame: &BytesMut,
) -> std::result::Result<R::Response, Exchange> {
    let mut frame = frame.clone();
    frame[CORRELATION_AT..CORRELATION_AT + 4].copy_from_slice(&correlation_id.to_be_bytes());
    stream.write_all(&frame).await?;
    let size = stream.read_i32().await?;
    if size < 4 || size as usize > FRAME_BYTES_MAX {
        return Err(Exchange::Protocol(format!(
            "answered with a frame of {size} bytes"
        )));
    }
    let mut answer = BytesMut::zeroed(size as usize);
    stream.read_exact(&mut answer).await?;
    let mut answer = answer.freeze();
    let protocol = |e: anyhow::Error| Exchange::Protocol(format!("undecodable answer: {e}"));
    let header = ResponseHeader::decode(&mut answer, R::Response::header_version(version))
        .map_err(protocol)?;
    if header.correlation_id != correlation_id {
        return Err(Exchange::Protocol(format!(
            "answered correlation id {} to request {correlation_id}",
            header.correlation_id
        )));
    }
    R::Response::decode(&mut answer, version).map_err(protocol)
}
