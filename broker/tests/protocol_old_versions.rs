//! Older request versions that Kafka 3.x still serves and some clients still send (Burrow lists
//! offsets with ListOffsets v0, librdkafka falls back to them without ApiVersions). Each test
//! serves a broker on a loopback port, sends the old version as a raw frame built with
//! kafka-protocol's encoders, and checks the decoded answer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use eddy_broker::log::batch::BatchBuilder;
use eddy_broker::{bind, now_ms, serve, Broker, BrokerConfig};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any step may take before the test fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn start(dir: &tempfile::TempDir) -> (Arc<Broker>, SocketAddr) {
    let broker = Broker::open(BrokerConfig::new(dir.path()))
        .await
        .expect("open");
    let (listener, address) = bind("127.0.0.1:0").await.expect("bind");
    tokio::spawn(serve(Arc::clone(&broker), listener));
    (broker, address)
}

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A request frame: size, header, body.
fn frame<R: Encodable>(api_key: ApiKey, version: i16, request: &R) -> BytesMut {
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(name("old-client")))
        .encode(&mut body, api_key.request_header_version(version))
        .expect("header encodes");
    request.encode(&mut body, version).expect("request encodes");
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    frame
}

/// Sends `request` at `version` on a new connection and decodes the answer at that version.
async fn call<Request: Encodable, Response: Decodable>(
    address: SocketAddr,
    api_key: ApiKey,
    version: i16,
    request: &Request,
) -> Response {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(&frame(api_key, version, request))
            .await
            .expect("send");
        let size = stream
            .read_i32()
            .await
            .expect("an answer, not a closed connection");
        let mut response = vec![0u8; size as usize];
        stream.read_exact(&mut response).await.expect("answer");
        response
    };
    let response = tokio::time::timeout(STEP_TIMEOUT, exchange)
        .await
        .expect("answered in time");
    let mut response = Bytes::from(response);
    let header = ResponseHeader::decode(&mut response, api_key.response_header_version(version))
        .expect("response header");
    assert_eq!(header.correlation_id, 7);
    let decoded = Response::decode(&mut response, version).expect("response body");
    assert!(
        !response.has_remaining(),
        "{api_key:?} v{version}: bytes left over"
    );
    decoded
}

/// Appends `records` one-record batches to partition 0 of `topic`.
fn append(broker: &Broker, topic: &str, records: usize) {
    let partition = broker.partition(topic, 0).expect("partition");
    for _ in 0..records {
        let mut builder = BatchBuilder::new(now_ms(), 64);
        builder.push(now_ms(), Some(b"k"), Some(b"v"), &[]);
        partition
            .append(&mut builder.finish(), now_ms())
            .expect("append");
    }
}

/// Metadata v0 cannot send a null topic list: an empty one asks for every topic.
#[tokio::test]
async fn metadata_v0_empty_list_means_every_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(&dir).await;
    for topic in ["a", "b"] {
        broker
            .create_topic(topic, 2, BTreeMap::new())
            .expect("topic");
    }
    let request = MetadataRequest::default().with_topics(Some(Vec::new()));
    let response: MetadataResponse = call(address, ApiKey::Metadata, 0, &request).await;
    let mut names: Vec<String> = response
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(response.brokers.len(), 1);
    assert!(response.topics.iter().all(|t| t.partitions.len() == 2));

    let response: MetadataResponse = call(address, ApiKey::Metadata, 1, &request).await;
    assert!(
        response.topics.is_empty(),
        "v1: an empty list asks for none"
    );
}

fn list_offsets_v0(topic: &str, partitions: &[(i32, i64, i32)]) -> ListOffsetsRequest {
    let partitions = partitions
        .iter()
        .map(|(index, timestamp, max)| {
            ListOffsetsPartition::default()
                .with_partition_index(*index)
                .with_timestamp(*timestamp)
                .with_max_num_offsets(*max)
        })
        .collect();
    ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(name(topic)))
            .with_partitions(partitions)])
}

/// ListOffsets v0 answers `old_style_offsets` as Kafka 3.x does: latest (-1) is the log end
/// offset, earliest (-2) the log start offset, more than one offset lists segment boundaries
/// newest first; v0 knows no other negative timestamp, and a missing partition is reported.
#[tokio::test]
async fn list_offsets_v0_answers_old_style_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(&dir).await;
    broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
    append(&broker, "t", 3);
    let request = list_offsets_v0(
        "t",
        &[(0, -1, 1), (0, -2, 1), (0, -1, 10), (0, -3, 1), (9, -1, 1)],
    );
    let response: ListOffsetsResponse = call(address, ApiKey::ListOffsets, 0, &request).await;
    let answers: Vec<(i16, Vec<i64>)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.error_code, p.old_style_offsets.clone()))
        .collect();
    assert_eq!(
        answers,
        [
            (0, vec![3]),
            (0, vec![0]),
            (0, vec![3, 0]),
            (ResponseError::UnsupportedVersion.code(), vec![]),
            (ResponseError::UnknownTopicOrPartition.code(), vec![]),
        ]
    );
    // A time before the segment was written finds no boundary at or before it.
    let request = list_offsets_v0("t", &[(0, 1_000, 5)]);
    let response: ListOffsetsResponse = call(address, ApiKey::ListOffsets, 0, &request).await;
    assert_eq!(
        response.topics[0].partitions[0].old_style_offsets,
        [0i64; 0]
    );
}

fn commit(version: i16, partitions: &[(i32, i64, i64)]) -> OffsetCommitRequest {
    let partitions = partitions
        .iter()
        .map(|(index, offset, timestamp)| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(*index)
                .with_committed_offset(*offset)
                .with_commit_timestamp(if version == 1 { *timestamp } else { -1 })
                .with_committed_metadata(Some(name("m")))
        })
        .collect();
    OffsetCommitRequest::default()
        .with_group_id(GroupId(name("g")))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(name("t")))
            .with_partitions(partitions)])
}

/// OffsetCommit v0 (no generation) and v1 (with a commit timestamp) store offsets that
/// OffsetFetch returns; v1's timestamp is kept, and -1 there means now, as in Kafka.
#[tokio::test]
async fn offset_commit_v0_and_v1_store_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(&dir).await;
    broker.create_topic("t", 3, BTreeMap::new()).expect("topic");
    let response: OffsetCommitResponse =
        call(address, ApiKey::OffsetCommit, 0, &commit(0, &[(0, 5, -1)])).await;
    assert_eq!(response.topics[0].partitions[0].error_code, 0);
    let before = now_ms();
    let request = commit(1, &[(1, 6, 1_234), (2, 7, -1), (9, 1, -1)]);
    let response: OffsetCommitResponse = call(address, ApiKey::OffsetCommit, 1, &request).await;
    let codes: Vec<i16> = response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, [0, 0, ResponseError::UnknownTopicOrPartition.code()]);
    let stamped = |partition| {
        broker
            .groups
            .committed("g", "t", partition)
            .expect("committed")
            .commit_timestamp_ms
    };
    assert_eq!(stamped(1), 1_234);
    assert!(stamped(2) >= before);

    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(name("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(name("t")))
            .with_partition_indexes(vec![0, 1, 2])]));
    let response: OffsetFetchResponse = call(address, ApiKey::OffsetFetch, 1, &request).await;
    let offsets: Vec<i64> = response.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(offsets, [5, 6, 7]);
}

/// CreateTopics v0 creates; v1 adds validate_only and an error message.
#[tokio::test]
async fn create_topics_v0_and_v1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(&dir).await;
    let topic = |n: &str| {
        CreatableTopic::default()
            .with_name(TopicName(name(n)))
            .with_num_partitions(2)
            .with_replication_factor(1)
    };
    let request = CreateTopicsRequest::default().with_topics(vec![topic("a"), topic("a")]);
    let response: CreateTopicsResponse = call(address, ApiKey::CreateTopics, 0, &request).await;
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, [0, ResponseError::TopicAlreadyExists.code()]);
    assert!(
        response.topics[1].error_message.is_none(),
        "v0 has no message"
    );
    assert_eq!(broker.topic("a").expect("created").partitions.len(), 2);

    let request = CreateTopicsRequest::default()
        .with_topics(vec![topic("a"), topic("b")])
        .with_validate_only(true);
    let response: CreateTopicsResponse = call(address, ApiKey::CreateTopics, 1, &request).await;
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes, [ResponseError::TopicAlreadyExists.code(), 0]);
    assert!(response.topics[0].error_message.is_some(), "v1 says why");
    assert!(broker.topic("b").is_none(), "validate_only creates nothing");
}

/// DescribeConfigs v0 flags defaults with `is_default` where later versions name a source.
#[tokio::test]
async fn describe_configs_v0_flags_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(&dir).await;
    let overrides = BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]);
    broker.create_topic("t", 1, overrides).expect("topic");
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(name("t"))
            .with_configuration_keys(Some(vec![name("retention.ms"), name("segment.bytes")]))]);
    let response: DescribeConfigsResponse =
        call(address, ApiKey::DescribeConfigs, 0, &request).await;
    let configs: BTreeMap<String, (Option<String>, bool)> = response.results[0]
        .configs
        .iter()
        .map(|c| {
            let value = c.value.as_ref().map(|v| v.to_string());
            (c.name.to_string(), (value, c.is_default))
        })
        .collect();
    assert_eq!(configs["retention.ms"], (Some("1000".into()), false));
    assert!(configs["segment.bytes"].1, "segment.bytes is a default");
}

/// A version older than any we serve closes the connection without an answer, as Kafka 3.x's
/// SocketServer does: the client's decoder would misread any answer shaped for another version.
#[tokio::test]
async fn a_version_older_than_ours_closes_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, address) = start(&dir).await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    // OffsetFetch v0 (group "g", no topics), written by hand: the codec no longer has v0.
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::OffsetFetch as i16);
    body.put_i16(0);
    body.put_i32(7);
    body.put_i16(-1); // null client id
    body.put_i16(1);
    body.put_slice(b"g");
    body.put_i32(0);
    let mut request = BytesMut::new();
    request.put_i32(body.len() as i32);
    request.put_slice(&body);
    stream.write_all(&request).await.expect("send");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "no answer, a closed connection"
    );
}

/// A magic 1 message (offset, create time, key, value) as an old producer writes it.
fn put_message_v1(
    out: &mut BytesMut,
    offset: i64,
    timestamp_ms: i64,
    key: Option<&[u8]>,
    value: &[u8],
) {
    let mut body = BytesMut::new();
    body.put_i8(1); // magic
    body.put_i8(0); // attributes: uncompressed, create time
    body.put_i64(timestamp_ms);
    match key {
        None => body.put_i32(-1),
        Some(key) => {
            body.put_i32(key.len() as i32);
            body.put_slice(key);
        }
    }
    body.put_i32(value.len() as i32);
    body.put_slice(value);
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    out.put_i64(offset);
    out.put_i32(body.len() as i32 + 4);
    out.put_u32(crc.sum());
    out.put_slice(&body);
}

/// (offset, timestamp, key, value) of each message in a magic 1 message set, checking every
/// message's CRC, magic and attributes as an old consumer would.
fn read_message_set_v1(set: Bytes) -> Vec<(i64, i64, Option<Bytes>, Option<Bytes>)> {
    read_message_set(set, 1)
}

/// (offset, timestamp, key, value) of each message in a message set of `magic` (0 has no
/// timestamp: -1 stands for it), checking every message's CRC, magic and attributes.
fn read_message_set(mut set: Bytes, magic: i8) -> Vec<(i64, i64, Option<Bytes>, Option<Bytes>)> {
    let mut out = Vec::new();
    let field = |body: &mut Bytes| match body.get_i32() {
        -1 => None,
        length => Some(body.split_to(length as usize)),
    };
    while set.has_remaining() {
        let offset = set.get_i64();
        let size = set.get_i32() as usize;
        let mut body = set.split_to(size);
        let crc = body.get_u32();
        let mut computed = flate2::Crc::new();
        computed.update(&body);
        assert_eq!(computed.sum(), crc, "message crc");
        assert_eq!(body.get_i8(), magic, "magic");
        assert_eq!(body.get_i8(), 0, "attributes");
        let timestamp = if magic == 1 { body.get_i64() } else { -1 };
        let key = field(&mut body);
        let value = field(&mut body);
        assert!(!body.has_remaining());
        out.push((offset, timestamp, key, value));
    }
    out
}

fn produce_v2(topic: &str, records: BytesMut) -> ProduceRequest {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(name(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records.freeze()))])])
}

fn fetch_from(topic: &str, offset: i64) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(name(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

/// Produce v2 carries a magic 1 message set, which is stored up-converted to a v2 batch (a v4
/// fetch reads it as one); Fetch v2 and v3 get the records down-converted to magic 1, from the
/// offset asked, with keys, values and timestamps intact.
#[tokio::test]
async fn produce_v2_and_fetch_v2_v3_speak_message_sets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(&dir).await;
    broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
    let mut set = BytesMut::new();
    put_message_v1(&mut set, 0, 1_000, Some(b"k1"), b"v1");
    put_message_v1(&mut set, 1, 2_000, None, b"v2");
    let response: ProduceResponse = call(address, ApiKey::Produce, 2, &produce_v2("t", set)).await;
    let answer = &response.responses[0].partition_responses[0];
    assert_eq!((answer.error_code, answer.base_offset), (0, 0));
    assert_eq!(
        broker
            .partition("t", 0)
            .expect("partition")
            .high_watermark(),
        2
    );

    let response: FetchResponse = call(address, ApiKey::Fetch, 2, &fetch_from("t", 0)).await;
    let data = &response.responses[0].partitions[0];
    assert_eq!((data.error_code, data.high_watermark), (0, 2));
    let messages = read_message_set_v1(data.records.clone().expect("records"));
    assert_eq!(
        messages,
        [
            (0, 1_000, Some(Bytes::from("k1")), Some(Bytes::from("v1"))),
            (1, 2_000, None, Some(Bytes::from("v2"))),
        ]
    );
    let response: FetchResponse = call(address, ApiKey::Fetch, 3, &fetch_from("t", 1)).await;
    let records = response.responses[0].partitions[0].records.clone();
    let offsets: Vec<i64> = read_message_set_v1(records.expect("records"))
        .into_iter()
        .map(|m| m.0)
        .collect();
    assert_eq!(offsets, [1], "from the offset asked, not the batch start");

    let response: FetchResponse = call(address, ApiKey::Fetch, 4, &fetch_from("t", 0)).await;
    let stored = response.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    assert_eq!(stored[16], 2, "stored as one v2 batch");
}

/// Goal: Burrow with its default client profile (kafka-version 0.8) reads __consumer_offsets
/// with sarama's Fetch v0; Kafka 3.x answers v0 and v1 with magic 0 messages (no timestamps).
/// Method: store two records as a v2 batch, fetch them with v0 (from the start) and v1 (from
/// the second record) and read the answers as an 0.8 consumer would.
#[tokio::test]
async fn fetch_v0_and_v1_get_magic_0_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(&dir).await;
    broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
    let mut batch = BatchBuilder::new(1_000, 2);
    batch.push(1_000, Some(b"k1"), Some(b"v1"), &[]);
    batch.push(2_000, None, Some(b"v2"), &[]);
    let partition = broker.partition("t", 0).expect("partition");
    partition
        .append(&mut batch.finish(), now_ms())
        .expect("appended");

    let response: FetchResponse = call(address, ApiKey::Fetch, 0, &fetch_from("t", 0)).await;
    let data = &response.responses[0].partitions[0];
    assert_eq!((data.error_code, data.high_watermark), (0, 2));
    let messages = read_message_set(data.records.clone().expect("records"), 0);
    assert_eq!(
        messages,
        [
            (0, -1, Some(Bytes::from("k1")), Some(Bytes::from("v1"))),
            (1, -1, None, Some(Bytes::from("v2"))),
        ]
    );
    let response: FetchResponse = call(address, ApiKey::Fetch, 1, &fetch_from("t", 1)).await;
    let records = response.responses[0].partitions[0].records.clone();
    let messages = read_message_set(records.expect("records"), 0);
    assert_eq!(messages, [(1, -1, None, Some(Bytes::from("v2")))]);
}

/// An up-converted message set meets the same rules as a v2 batch: a compacted topic refuses
/// a keyless record (INVALID_RECORD; v2 cannot name it), and a broken CRC is CORRUPT_MESSAGE.
#[tokio::test]
async fn produce_v2_message_sets_are_validated_like_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(&dir).await;
    let compact = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
    broker.create_topic("c", 1, compact).expect("topic");
    let mut keyless = BytesMut::new();
    put_message_v1(&mut keyless, 0, 1_000, None, b"v");
    let response: ProduceResponse = call(
        address,
        ApiKey::Produce,
        2,
        &produce_v2("c", keyless.clone()),
    )
    .await;
    let code = response.responses[0].partition_responses[0].error_code;
    assert_eq!(code, ResponseError::InvalidRecord.code());

    let last = keyless.len() - 1;
    keyless[last] ^= 1;
    let response: ProduceResponse =
        call(address, ApiKey::Produce, 2, &produce_v2("c", keyless)).await;
    let code = response.responses[0].partition_responses[0].error_code;
    assert_eq!(code, ResponseError::CorruptMessage.code());
    assert_eq!(
        broker
            .partition("c", 0)
            .expect("partition")
            .high_watermark(),
        0
    );
}

/// Each message of a Produce v2 message set is held to max.message.bytes, as Kafka holds each
/// v2 batch: one above it gets MESSAGE_TOO_LARGE and nothing is stored.
#[tokio::test]
async fn produce_v2_holds_each_message_to_max_message_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(&dir).await;
    let small = BTreeMap::from([("max.message.bytes".to_string(), "100".to_string())]);
    broker.create_topic("s", 1, small).expect("topic");
    let mut set = BytesMut::new();
    put_message_v1(&mut set, 0, 1_000, Some(b"k"), b"fits");
    put_message_v1(&mut set, 1, 1_000, Some(b"k"), &[b'x'; 200]);
    let response: ProduceResponse = call(address, ApiKey::Produce, 2, &produce_v2("s", set)).await;
    let code = response.responses[0].partition_responses[0].error_code;
    assert_eq!(code, ResponseError::MessageTooLarge.code());
    assert_eq!(
        broker
            .partition("s", 0)
            .expect("partition")
            .high_watermark(),
        0
    );
}

/// An OffsetsForLeaderEpoch v0 request body, written by hand from Kafka 3.9's schema (so the
/// test does not lean on the codec whose v0 Eddy restored): topics [name, partitions
/// [partition, leader epoch]].
fn offsets_for_leader_epoch_v0(topic: &str, partitions: &[(i32, i32)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(1);
    body.put_i16(topic.len() as i16);
    body.put_slice(topic.as_bytes());
    body.put_i32(partitions.len() as i32);
    for (partition, leader_epoch) in partitions {
        body.put_i32(*partition);
        body.put_i32(*leader_epoch);
    }
    body
}

/// Reads an OffsetsForLeaderEpoch v0 response body by hand: topics [name, partitions [error
/// code, partition, end offset]] (no throttle time, no leader epoch before v1/v2).
fn read_epoch_end_offsets_v0(mut body: Bytes) -> Vec<(i16, i32, i64)> {
    let mut out = Vec::new();
    for _ in 0..body.get_i32() {
        let length = body.get_i16() as usize;
        body.advance(length);
        for _ in 0..body.get_i32() {
            out.push((body.get_i16(), body.get_i32(), body.get_i64()));
        }
    }
    assert!(!body.has_remaining(), "nothing after the topics");
    out
}

/// Goal: OffsetsForLeaderEpoch answers over the wire at v0 (Kafka 0.11 followers) and v4
/// (flexible, with replica_id). Method: a partition led in epochs 1 (offsets 0-2) and 4
/// (3-4); ask about epochs 0 (below the first), 1, 3 (between), 4 (latest) and 9 (unknown),
/// and about a partition that does not exist. The v0 frame is built and read by hand.
#[tokio::test]
async fn offsets_for_leader_epoch_v0_and_v4_over_the_wire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(&dir).await;
    broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
    let partition = broker.partition("t", 0).expect("partition");
    partition.log().lock().become_leader(1).expect("leader");
    append(&broker, "t", 3);
    partition.log().lock().become_leader(4).expect("leader");
    append(&broker, "t", 2);
    let asked = [(0, 0), (0, 1), (0, 3), (0, 4), (0, 9), (1, 1)];
    let unknown = ResponseError::UnknownTopicOrPartition.code();

    let mut stream = TcpStream::connect(address).await.expect("connect");
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::OffsetForLeaderEpoch as i16);
    body.put_i16(0);
    body.put_i32(7);
    body.put_i16(-1); // null client id
    body.put_slice(&offsets_for_leader_epoch_v0("t", &asked));
    let mut request = BytesMut::new();
    request.put_i32(body.len() as i32);
    request.put_slice(&body);
    stream.write_all(&request).await.expect("send");
    let size = tokio::time::timeout(STEP_TIMEOUT, stream.read_i32())
        .await
        .expect("answered in time")
        .expect("an answer");
    let mut response = vec![0u8; size as usize];
    stream.read_exact(&mut response).await.expect("answer");
    let mut response = Bytes::from(response);
    assert_eq!(response.get_i32(), 7, "correlation id (response header v0)");
    assert_eq!(
        read_epoch_end_offsets_v0(response),
        [
            (0, 0, 0),
            (0, 0, 3),
            (0, 0, 3),
            (0, 0, 5),
            (0, 0, -1),
            (unknown, 1, -1),
        ]
    );

    let partitions = asked
        .iter()
        .map(|(partition, epoch)| {
            offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                .with_partition(*partition)
                .with_current_leader_epoch(4)
                .with_leader_epoch(*epoch)
        })
        .collect();
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(2))
        .with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(TopicName(name("t")))
                .with_partitions(partitions),
        ]);
    let response: OffsetForLeaderEpochResponse =
        call(address, ApiKey::OffsetForLeaderEpoch, 4, &request).await;
    let answers: Vec<(i16, i32, i32, i64)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.error_code, p.partition, p.leader_epoch, p.end_offset))
        .collect();
    assert_eq!(
        answers,
        [
            (0, 0, 0, 0),
            (0, 0, 1, 3),
            (0, 0, 1, 3),
            (0, 0, 4, 5),
            (0, 0, -1, -1),
            (unknown, 1, -1, -1),
        ]
    );
}
