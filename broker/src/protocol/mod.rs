//! The Kafka wire protocol over TCP, with the `kafka-protocol` crate as codec.
//!
//! A connection is read by one task and written by another. Requests are dispatched in arrival
//! order; each one's answer is a task whose result the writer awaits in that same order, so a
//! long-polling fetch does not hold up requests read after it, yet responses leave in request
//! order as Kafka requires. Produce appends happen synchronously at dispatch, so batches to one
//! partition are appended in the order they arrived.
//!
//! Bounds: a frame over [`FRAME_BYTES_MAX`] closes the connection before anything is allocated,
//! and a frame's buffer grows only as its bytes arrive; an undecodable request closes the
//! connection too (as Kafka does). A connection that completes no request within
//! `connections.max.idle.ms`, or whose responses cannot be written for that long, is closed.
//! Queued responses are bounded in number ([`IN_FLIGHT_REQUESTS_MAX`]) and in bytes
//! ([`RESPONSE_QUEUE_BYTES_MAX`], see `budget.rs`).

mod admin;
mod budget;
mod cluster;
mod configs;
mod fetch;
#[cfg(test)]
mod fuzz;
mod groups;
mod leader_epochs;
mod metadata;
mod produce;
mod txn;
pub mod versions;

use std::future::Future;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::limits::{FRAME_BYTES_MAX, IN_FLIGHT_REQUESTS_MAX, RESPONSE_QUEUE_BYTES_MAX};
use budget::{Reservation, ResponseBudget};

/// A response on its way to the writer.
enum Pending {
    /// Nothing to send (acks=0 produce).
    Silent,
    /// Ready now; `None` when the response could not be encoded (the connection closes).
    Ready(Option<BytesMut>),
    /// Computed by a task, whose response is at most about `bytes_max` bytes.
    Later {
        task: JoinHandle<Option<BytesMut>>,
        bytes_max: usize,
    },
}

impl Pending {
    /// The response bytes to reserve from the connection's budget while this is queued.
    fn bytes_max(&self) -> usize {
        match self {
            Pending::Silent | Pending::Ready(None) => 0,
            Pending::Ready(Some(bytes)) => bytes.len(),
            Pending::Later { bytes_max, .. } => *bytes_max,
        }
    }
}

/// What a handler needs to know about the request it answers.
#[derive(Clone)]
pub(crate) struct RequestContext {
    pub broker: Arc<Broker>,
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
    /// The client's address as Kafka shows it in group descriptions (`/127.0.0.1`).
    pub client_host: String,
    /// Size of the request frame.
    pub request_bytes: usize,
}

impl RequestContext {
    /// Encodes `body` as this request's response: size, header, body. `None` (logged) if a
    /// field is set that this version cannot carry, which is a bug in the handler.
    fn encode<R: Encodable>(&self, body: &R) -> Option<BytesMut> {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(0);
        let header = ResponseHeader::default().with_correlation_id(self.correlation_id);
        let header_version = self.api_key.response_header_version(self.version);
        let encoded = header
            .encode(&mut buf, header_version)
            .and_then(|_| body.encode(&mut buf, self.version));
        if let Err(e) = encoded {
            tracing::error!(api = ?self.api_key, version = self.version, error = %e,
                "could not encode a response (this is a bug in Eddy); closing the connection");
            return None;
        }
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        Some(buf)
    }

    /// Runs `future` as a task and encodes what it returns. Its response is taken to be about
    /// as large as the request (they list the same partitions or members).
    fn later<R, F>(&self, future: F) -> Pending
    where
        R: Encodable + Send + 'static,
        F: Future<Output = R> + Send + 'static,
    {
        self.later_bounded(self.request_bytes, future)
    }

    /// [`RequestContext::later`] for a response of at most about `bytes_max` bytes.
    fn later_bounded<R, F>(&self, bytes_max: usize, future: F) -> Pending
    where
        R: Encodable + Send + 'static,
        F: Future<Output = R> + Send + 'static,
    {
        let context = self.clone();
        let task = tokio::spawn(async move {
            let body = future.await;
            context.encode(&body)
        });
        Pending::Later { task, bytes_max }
    }
}

/// Serves one client connection until it closes.
pub async fn serve_connection(broker: Arc<Broker>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let client_host = stream
        .peer_addr()
        .map(|a| format!("/{}", a.ip()))
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let idle = broker.config.connections_max_idle;
    let (mut reader, writer) = stream.into_split();
    let (sender, receiver) = mpsc::channel::<(Pending, Reservation)>(IN_FLIGHT_REQUESTS_MAX);
    let write_task = tokio::spawn(write_responses(writer, receiver, idle));
    let budget = ResponseBudget::new(RESPONSE_QUEUE_BYTES_MAX);
    loop {
        let frame = match tokio::time::timeout(idle, read_frame(&mut reader)).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(FrameError::Closed)) => break,
            Ok(Err(FrameError::Size(size))) => {
                tracing::warn!(%peer, size, max = FRAME_BYTES_MAX, "refusing frame size; closing");
                break;
            }
            Err(_) => {
                tracing::debug!(%peer, idle_ms = idle.as_millis() as u64, "idle; closing");
                break;
            }
        };
        let pending = match dispatch_from(&broker, &client_host, frame) {
            Ok(pending) => pending,
            Err(reason) => {
                tracing::warn!(%peer, %reason, "bad request; closing the connection");
                break;
            }
        };
        // Waiting here stops reading: the client gets no further requests in until it reads.
        let reservation = budget.reserve(pending.bytes_max()).await;
        if sender.send((pending, reservation)).await.is_err() {
            break;
        }
    }
    drop(sender);
    let _ = write_task.await;
}

/// Writes responses in request order, releasing each one's reservation once written. Stops at
/// the first response that could not be encoded, or cannot be written within `idle`.
async fn write_responses(
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut receiver: mpsc::Receiver<(Pending, Reservation)>,
    idle: std::time::Duration,
) {
    while let Some((pending, _reservation)) = receiver.recv().await {
        let bytes = match pending {
            Pending::Silent => continue,
            Pending::Ready(bytes) => bytes,
            Pending::Later { task, .. } => task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "request handler failed");
                None
            }),
        };
        let Some(bytes) = bytes else {
            return;
        };
        match tokio::time::timeout(idle, writer.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!("client does not read its responses; closing");
                return;
            }
        }
    }
}

/// Why no request frame was read.
#[derive(Debug)]
enum FrameError {
    /// The connection ended (or failed) before a whole frame arrived.
    Closed,
    /// The declared size is below a request header or above [`FRAME_BYTES_MAX`].
    Size(i32),
}

/// Reads one size-prefixed frame. The buffer grows as bytes arrive rather than to the declared
/// size at once, so a client announcing a large frame holds only the memory it actually sent.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Bytes, FrameError> {
    let size = reader.read_i32().await.map_err(|_| FrameError::Closed)?;
    if size < 8 || size as usize > FRAME_BYTES_MAX {
        return Err(FrameError::Size(size));
    }
    let size = size as usize;
    let mut frame = Vec::with_capacity(size.min(FRAME_FIRST_READ_BYTES));
    (&mut *reader)
        .take(size as u64)
        .read_to_end(&mut frame)
        .await
        .map_err(|_| FrameError::Closed)?;
    if frame.len() != size {
        return Err(FrameError::Closed);
    }
    Ok(Bytes::from(frame))
}

/// The buffer first allocated for a frame; larger frames grow it as their bytes arrive.
const FRAME_FIRST_READ_BYTES: usize = 64 * 1024;

/// [`dispatch_from`] for tests, as from a client on the loopback address.
#[cfg(test)]
fn dispatch(broker: &Arc<Broker>, frame: Bytes) -> Result<Pending, String> {
    dispatch_from(broker, "/127.0.0.1", frame)
}

/// Decodes one request frame from the client at `client_host` and starts answering it.
fn dispatch_from(
    broker: &Arc<Broker>,
    client_host: &str,
    mut frame: Bytes,
) -> Result<Pending, String> {
    let request_bytes = frame.len();
    let api_key_raw = (&frame[0..2]).get_i16();
    let version = (&frame[2..4]).get_i16();
    let correlation_id = (&frame[4..8]).get_i32();
    // An unknown API, or a version we do not implement, closes the connection, as Kafka 3.x's
    // SocketServer does (it refuses the header before any handler sees it). Answering instead
    // is not possible in general: the client decodes the response at the version it sent, and
    // most APIs have no top-level error code, so an answer shaped like a lower version would
    // read as an empty success (no topics, no partitions) rather than an error.
    let api_key = ApiKey::try_from(api_key_raw)
        .map_err(|_| format!("unknown API key {api_key_raw} (version {version})"))?;
    if api_key == ApiKey::ApiVersions && !versions::supports(api_key, version) {
        // Answer in v0 with UNSUPPORTED_VERSION and our list, so the client can retry lower.
        return Ok(Pending::Ready(Some(
            versions::unsupported_version_response(correlation_id),
        )));
    }
    if !versions::supports(api_key, version) {
        return Err(match versions::range(api_key) {
            Some((min, max)) => {
                format!("{api_key:?} v{version} is not supported (v{min} to v{max} are)")
            }
            None => format!("{api_key:?} is not implemented (asked v{version})"),
        });
    }
    let header_version = api_key.request_header_version(version);
    let header = RequestHeader::decode(&mut frame, header_version).map_err(|e| e.to_string())?;
    let context = RequestContext {
        broker: Arc::clone(broker),
        api_key,
        version,
        correlation_id,
        client_id: header.client_id.map(|s| s.to_string()).unwrap_or_default(),
        client_host: client_host.to_string(),
        request_bytes,
    };
    route(context, frame).map_err(|e| format!("{api_key:?} v{version}: {e}"))
}

fn decode<T: Decodable>(body: &mut Bytes, version: i16) -> Result<T, String> {
    T::decode(body, version).map_err(|e| e.to_string())
}

fn route(context: RequestContext, mut body: Bytes) -> Result<Pending, String> {
    let v = context.version;
    Ok(match context.api_key {
        ApiKey::ApiVersions => Pending::Ready(context.encode(&versions::api_versions_response())),
        ApiKey::Produce => produce::handle(context, decode(&mut body, v)?),
        ApiKey::Fetch => {
            let request = decode(&mut body, v)?;
            let bytes_max = fetch::response_bytes_max(&context.broker.config, &request)
                .saturating_add(context.request_bytes);
            context.later_bounded(bytes_max, fetch::handle(context.clone(), request))
        }
        ApiKey::ListOffsets => {
            let response = fetch::list_offsets(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::Metadata => {
            let request = decode(&mut body, v)?;
            let response = match context.broker.cluster() {
                Some(node) => cluster::metadata(&context, node, request),
                None => metadata::metadata(&context, request),
            };
            Pending::Ready(context.encode(&response))
        }
        ApiKey::CreateTopics => {
            let request = decode(&mut body, v)?;
            if let Some(node) = context.broker.cluster() {
                let node = Arc::clone(node);
                return Ok(context.later(cluster::create_topics(context.clone(), node, request)));
            }
            let response = metadata::create_topics(&context, request);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::DeleteTopics => {
            let request = decode(&mut body, v)?;
            if let Some(node) = context.broker.cluster() {
                let node = Arc::clone(node);
                return Ok(context.later(cluster::delete_topics(context.clone(), node, request)));
            }
            let response = metadata::delete_topics(&context, request);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::DescribeConfigs => {
            let request = decode(&mut body, v)?;
            let image = context.broker.cluster().map(|node| node.image());
            let topics = match &image {
                Some(image) => configs::TopicSource::Image(image),
                None => configs::TopicSource::Local(&context.broker),
            };
            let response = configs::describe_configs(&context, &topics, request);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::AlterConfigs => {
            let request = decode(&mut body, v)?;
            if let Some(node) = context.broker.cluster() {
                let node = Arc::clone(node);
                return Ok(context.later(cluster::alter_configs(context.clone(), node, request)));
            }
            let response = configs::alter_configs(&context, request);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::IncrementalAlterConfigs => {
            let request = decode(&mut body, v)?;
            if let Some(node) = context.broker.cluster() {
                let node = Arc::clone(node);
                let answer = cluster::incremental_alter_configs(context.clone(), node, request);
                return Ok(context.later(answer));
            }
            let response = configs::incremental_alter_configs(&context, request);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::CreatePartitions => {
            let request = decode(&mut body, v)?;
            if let Some(node) = context.broker.cluster() {
                let node = Arc::clone(node);
                return Ok(context.later(cluster::create_partitions(
                    context.clone(),
                    node,
                    request,
                )));
            }
            let response = admin::create_partitions(&context, request);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::DeleteRecords => {
            let response = admin::delete_records(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::DescribeCluster => {
            let response = admin::describe_cluster(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::DescribeLogDirs => {
            let response = admin::describe_log_dirs(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::OffsetForLeaderEpoch => {
            let request = decode(&mut body, v)?;
            let response = leader_epochs::offsets_for_leader_epoch(&context, request);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::InitProducerId => {
            let request = decode(&mut body, v)?;
            context.later(txn::init_producer_id(context.clone(), request))
        }
        ApiKey::AddPartitionsToTxn => {
            let request = decode(&mut body, v)?;
            context.later(txn::add_partitions_to_txn(context.clone(), request))
        }
        ApiKey::AddOffsetsToTxn => {
            let request = decode(&mut body, v)?;
            context.later(txn::add_offsets_to_txn(context.clone(), request))
        }
        ApiKey::EndTxn => {
            let request = decode(&mut body, v)?;
            context.later(txn::end_txn(context.clone(), request))
        }
        ApiKey::TxnOffsetCommit => {
            let request = decode(&mut body, v)?;
            context.later(txn::txn_offset_commit(context.clone(), request))
        }
        ApiKey::WriteTxnMarkers => {
            let request = decode(&mut body, v)?;
            context.later(txn::write_txn_markers(context.clone(), request))
        }
        ApiKey::DescribeTransactions => {
            let request = decode(&mut body, v)?;
            context.later(txn::describe_transactions(context.clone(), request))
        }
        ApiKey::ListTransactions => {
            let response = txn::list_transactions(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::DescribeProducers => {
            let response = txn::describe_producers(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::FindCoordinator => {
            let response = groups::find_coordinator(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::JoinGroup => {
            let request = decode(&mut body, v)?;
            context.later(groups::join_group(context.clone(), request))
        }
        ApiKey::SyncGroup => {
            let request = decode(&mut body, v)?;
            context.later(groups::sync_group(context.clone(), request))
        }
        ApiKey::Heartbeat => {
            let response = groups::heartbeat(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::LeaveGroup => {
            let response = groups::leave_group(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::OffsetCommit => {
            let request = decode(&mut body, v)?;
            context.later(groups::offset_commit(&context, request))
        }
        ApiKey::OffsetFetch => {
            let request = decode(&mut body, v)?;
            context.later(groups::offset_fetch(&context, request))
        }
        ApiKey::ListGroups => {
            let response = groups::list_groups(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::DescribeGroups => {
            let response = groups::describe_groups(&context, decode(&mut body, v)?);
            Pending::Ready(context.encode(&response))
        }
        ApiKey::DeleteGroups => {
            let request = decode(&mut body, v)?;
            context.later(groups::delete_groups(&context, request))
        }
        ApiKey::OffsetDelete => {
            let request = decode(&mut body, v)?;
            context.later(groups::offset_delete(&context, request))
        }
        other => return Err(format!("{other:?} is not implemented")),
    })
}

/// A protocol string from a Rust one.
pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Sends `request` through [`dispatch`] as a client would and decodes the answer: for handler
/// tests that need no socket.
#[cfg(test)]
pub(crate) async fn round_trip<Request: Encodable, Response: Decodable>(
    broker: &Arc<Broker>,
    api_key: ApiKey,
    version: i16,
    request: &Request,
) -> Response {
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .encode(&mut frame, api_key.request_header_version(version))
        .expect("header encodes");
    request
        .encode(&mut frame, version)
        .expect("request encodes");
    let bytes = match dispatch(broker, frame.freeze()).expect("request is valid") {
        Pending::Silent => panic!("{api_key:?} must be answered"),
        Pending::Ready(bytes) => bytes,
        Pending::Later { task, .. } => task.await.expect("handler task"),
    };
    let mut bytes = bytes.expect("response encodes").freeze();
    bytes.advance(4);
    ResponseHeader::decode(&mut bytes, api_key.response_header_version(version))
        .expect("response header");
    Response::decode(&mut bytes, version).expect("response body")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Encodable;
    use proptest::prelude::*;

    /// Every advertised version of every API answers a default request with a response that
    /// encodes: no handler sets a field its version cannot carry.
    #[tokio::test]
    async fn every_advertised_version_answers_a_default_request() {
        use kafka_protocol::messages::*;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::BrokerConfig::new(dir.path());
        config.group_initial_rebalance_delay = std::time::Duration::ZERO;
        let broker = Broker::open(config).await.expect("open");
        broker
            .create_topic("t", 1, Default::default())
            .expect("topic");
        fn body<T: Encodable + Default>(version: i16) -> BytesMut {
            let mut buf = BytesMut::new();
            T::default()
                .encode(&mut buf, version)
                .expect("default request encodes");
            buf
        }
        for (api_key, min, max) in versions::SUPPORTED {
            for version in *min..=*max {
                let payload = match api_key {
                    ApiKey::Produce => body::<ProduceRequest>(version),
                    ApiKey::Fetch => body::<FetchRequest>(version),
                    ApiKey::ListOffsets => body::<ListOffsetsRequest>(version),
                    ApiKey::Metadata => body::<MetadataRequest>(version),
                    ApiKey::OffsetCommit => body::<OffsetCommitRequest>(version),
                    ApiKey::OffsetFetch => body::<OffsetFetchRequest>(version),
                    ApiKey::FindCoordinator => body::<FindCoordinatorRequest>(version),
                    ApiKey::JoinGroup => continue, // waits for a rebalance; covered end to end
                    ApiKey::SyncGroup => body::<SyncGroupRequest>(version),
                    ApiKey::Heartbeat => body::<HeartbeatRequest>(version),
                    ApiKey::LeaveGroup => body::<LeaveGroupRequest>(version),
                    ApiKey::ApiVersions => body::<ApiVersionsRequest>(version),
                    ApiKey::CreateTopics => body::<CreateTopicsRequest>(version),
                    ApiKey::DeleteTopics => body::<DeleteTopicsRequest>(version),
                    ApiKey::InitProducerId => body::<InitProducerIdRequest>(version),
                    ApiKey::DescribeConfigs => body::<DescribeConfigsRequest>(version),
                    ApiKey::DescribeGroups => body::<DescribeGroupsRequest>(version),
                    ApiKey::ListGroups => body::<ListGroupsRequest>(version),
                    ApiKey::DeleteGroups => body::<DeleteGroupsRequest>(version),
                    ApiKey::OffsetDelete => body::<OffsetDeleteRequest>(version),
                    ApiKey::AlterConfigs => body::<AlterConfigsRequest>(version),
                    ApiKey::IncrementalAlterConfigs => {
                        body::<IncrementalAlterConfigsRequest>(version)
                    }
                    ApiKey::CreatePartitions => body::<CreatePartitionsRequest>(version),
                    ApiKey::DeleteRecords => body::<DeleteRecordsRequest>(version),
                    ApiKey::DescribeCluster => body::<DescribeClusterRequest>(version),
                    ApiKey::DescribeLogDirs => body::<DescribeLogDirsRequest>(version),
                    ApiKey::OffsetForLeaderEpoch => body::<OffsetForLeaderEpochRequest>(version),
                    ApiKey::AddPartitionsToTxn => body::<AddPartitionsToTxnRequest>(version),
                    ApiKey::AddOffsetsToTxn => body::<AddOffsetsToTxnRequest>(version),
                    ApiKey::EndTxn => body::<EndTxnRequest>(version),
                    ApiKey::TxnOffsetCommit => body::<TxnOffsetCommitRequest>(version),
                    ApiKey::WriteTxnMarkers => body::<WriteTxnMarkersRequest>(version),
                    ApiKey::DescribeTransactions => body::<DescribeTransactionsRequest>(version),
                    ApiKey::ListTransactions => body::<ListTransactionsRequest>(version),
                    ApiKey::DescribeProducers => body::<DescribeProducersRequest>(version),
                    _ => unreachable!("every supported api is listed"),
                };
                let mut frame = BytesMut::new();
                let header = RequestHeader::default()
                    .with_request_api_key(*api_key as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(9);
                header
                    .encode(&mut frame, api_key.request_header_version(version))
                    .expect("header");
                frame.extend_from_slice(&payload);
                let pending = dispatch(&broker, frame.freeze()).expect("dispatch");
                let response = match pending {
                    Pending::Silent => continue,
                    Pending::Ready(r) => r,
                    Pending::Later { task, .. } => task.await.expect("task"),
                };
                assert!(
                    response.is_some(),
                    "{api_key:?} v{version} response did not encode"
                );
            }
        }
    }

    /// A 25-byte Fetch declaring 2^31 topics once made the decoder reserve memory for them
    /// all, and the failed allocation aborted the broker (kafka-protocol is patched in
    /// vendor/ to cap a declared length by the bytes left). Now it is a bad request.
    #[tokio::test]
    async fn a_request_declaring_a_huge_array_is_refused_not_allocated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(crate::BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        for (api_key, version) in [(ApiKey::Fetch, 4), (ApiKey::Metadata, 1)] {
            let mut frame = BytesMut::new();
            frame.put_i16(api_key as i16);
            frame.put_i16(version);
            frame.put_i32(1);
            frame.put_i16(-1); // null client id
            if api_key == ApiKey::Fetch {
                frame.put_i32(-1); // replica id
                frame.put_i32(0); // max wait
                frame.put_i32(0); // min bytes
                frame.put_i32(1024); // max bytes
                frame.put_i8(0); // isolation level
            }
            frame.put_i32(0x7fff_fff0); // the topics array's declared length
            assert!(dispatch(&broker, frame.freeze()).is_err(), "{api_key:?}");
        }
    }

    /// A version we do not implement, or an unknown API, is refused (the connection closes, as
    /// Kafka's does) with a reason that names the API and the version, for the broker's log.
    #[tokio::test]
    async fn unsupported_versions_and_unknown_apis_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(crate::BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        for (api_key, version, expected) in [
            (ApiKey::Produce as i16, 1, "Produce v1 is not supported (v"),
            (ApiKey::Fetch as i16, 99, "Fetch v99 is not supported (v"),
            (
                ApiKey::DescribeAcls as i16,
                0,
                "DescribeAcls is not implemented (asked v0)",
            ),
            (999, 3, "unknown API key 999 (version 3)"),
        ] {
            let mut frame = BytesMut::new();
            frame.put_i16(api_key);
            frame.put_i16(version);
            frame.put_i32(1);
            frame.put_i16(-1); // null client id
            let Err(reason) = dispatch(&broker, frame.freeze()) else {
                panic!("api {api_key} v{version} must be refused");
            };
            assert!(reason.starts_with(expected), "{reason}");
        }
    }

    /// A client asking ApiVersions in a version newer than ours gets a v0 answer with
    /// UNSUPPORTED_VERSION and our list, so it can retry with one we have.
    #[tokio::test]
    async fn api_versions_newer_than_ours_gets_the_v0_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(crate::BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        let mut frame = BytesMut::new();
        frame.put_i16(ApiKey::ApiVersions as i16);
        frame.put_i16(99);
        frame.put_i32(42);
        frame.put_i16(-1); // null client id
        let Ok(Pending::Ready(Some(response))) = dispatch(&broker, frame.freeze()) else {
            panic!("ApiVersions must be answered at once");
        };
        let mut body = response.freeze();
        body.advance(4);
        assert_eq!(body.get_i32(), 42, "correlation id, header v0");
        let decoded =
            kafka_protocol::messages::ApiVersionsResponse::decode(&mut body, 0).expect("v0");
        assert_eq!(
            decoded.error_code,
            kafka_protocol::ResponseError::UnsupportedVersion.code()
        );
        assert_eq!(decoded.api_keys.len(), versions::SUPPORTED.len());
    }

    proptest! {
        // Decoding arbitrary request bodies at every advertised version returns an error or a
        // value, never a panic: the connection task must survive any input.
        #[test]
        fn decoding_arbitrary_bodies_never_panics(
            index in 0usize..versions::SUPPORTED.len(),
            body in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let (api_key, min, max) = versions::SUPPORTED[index];
            for version in min..=max {
                let mut frame = BytesMut::new();
                frame.put_i16(api_key as i16);
                frame.put_i16(version);
                frame.put_i32(7);
                frame.put_slice(&body);
                let header_version = api_key.request_header_version(version);
                let mut bytes = frame.freeze();
                if RequestHeader::decode(&mut bytes, header_version).is_ok() {
                    let _ = versions::decode_any(api_key, &mut bytes.clone(), version);
                }
            }
        }
    }
}
