//! The topic and cluster admin APIs over the wire: CreatePartitions, DeleteRecords,
//! AlterConfigs, IncrementalAlterConfigs, DescribeConfigs, CreateTopics' configs and
//! assignments, DescribeCluster and DescribeLogDirs. Each test serves a broker on a loopback
//! port, sends raw kafka-protocol requests, and where a change must last, stops the broker and
//! opens a new one on the same data directory.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use eddy_broker::log::batch::BatchBuilder;
use eddy_broker::{bind, now_ms, serve, Broker, BrokerConfig};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{alter_configs_request, *};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any request may take before the test fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker serving on a loopback port, on its own runtime: [`Server::stop`] ends both, which
/// releases the data directory for the next broker, as a process exit would.
struct Server {
    runtime: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    address: SocketAddr,
}

impl Server {
    fn start(config: &BrokerConfig) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (broker, address) = runtime.block_on(async {
            let broker = Broker::open(config.clone()).await.expect("open");
            let (listener, address) = bind("127.0.0.1:0").await.expect("bind");
            tokio::spawn(serve(Arc::clone(&broker), listener));
            (broker, address)
        });
        Server {
            runtime,
            broker,
            address,
        }
    }

    fn stop(self) {
        self.runtime
            .block_on(self.broker.shutdown())
            .expect("shutdown");
        drop(self.broker);
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }

    /// Sends `request` on a new connection and decodes the answer.
    fn call<Request: Encodable, Response: Decodable>(
        &self,
        api_key: ApiKey,
        version: i16,
        request: &Request,
    ) -> Response {
        let address = self.address;
        self.runtime.block_on(async move {
            tokio::time::timeout(STEP_TIMEOUT, send(address, api_key, version, request))
                .await
                .unwrap_or_else(|_| panic!("{api_key:?} v{version} was not answered in time"))
        })
    }

    /// Appends `count` one-record batches to partition `index` of `topic`.
    fn append(&self, topic: &str, index: i32, count: usize) {
        let partition = self.broker.partition(topic, index).expect("partition");
        for i in 0..count {
            let mut builder = BatchBuilder::new(now_ms(), 256);
            builder.push(
                now_ms(),
                Some(format!("k{i}").as_bytes()),
                Some(&[7; 100]),
                &[],
            );
            partition
                .append(&mut builder.finish(), now_ms())
                .expect("append");
        }
    }
}

async fn send<Request: Encodable, Response: Decodable>(
    address: SocketAddr,
    api_key: ApiKey,
    version: i16,
    request: &Request,
) -> Response {
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("admin-test")))
        .encode(&mut body, api_key.request_header_version(version))
        .expect("header encodes");
    request.encode(&mut body, version).expect("request encodes");
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(&frame).await.expect("write");
    let size = stream.read_i32().await.expect("response size");
    let mut response = vec![0u8; size as usize];
    stream.read_exact(&mut response).await.expect("response");
    let mut response = bytes::Bytes::from(response);
    ResponseHeader::decode(&mut response, api_key.response_header_version(version))
        .expect("response header");
    let decoded = Response::decode(&mut response, version).expect("response body");
    assert_eq!(
        response.remaining(),
        0,
        "{api_key:?} v{version}: trailing bytes"
    );
    decoded
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn topic_name(name: &str) -> TopicName {
    TopicName(s(name))
}

fn creatable(name: &str, partitions: i32, configs: &[(&str, &str)]) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        )
}

fn create_topics(server: &Server, topics: Vec<CreatableTopic>, validate_only: bool) -> Vec<i16> {
    let response: CreateTopicsResponse = server.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(topics)
            .with_validate_only(validate_only),
    );
    response.topics.iter().map(|t| t.error_code).collect()
}

fn partition_count(server: &Server, topic: &str) -> usize {
    let response: MetadataResponse = server.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
        ])),
    );
    assert_eq!(response.topics[0].error_code, 0);
    response.topics[0].partitions.len()
}

/// Grows `topic` to `count` partitions, placed by the broker: null assignments (an empty
/// list, the codec's default, asks for no partitions at all, as in Kafka).
fn grow(topic: &str, count: i32) -> CreatePartitionsTopic {
    CreatePartitionsTopic::default()
        .with_name(topic_name(topic))
        .with_count(count)
        .with_assignments(None)
}

fn create_partitions(
    server: &Server,
    topics: Vec<CreatePartitionsTopic>,
    validate_only: bool,
) -> Vec<(String, i16)> {
    let response: CreatePartitionsResponse = server.call(
        ApiKey::CreatePartitions,
        3,
        &CreatePartitionsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(1_000)
            .with_validate_only(validate_only),
    );
    response
        .results
        .iter()
        .map(|r| (r.name.to_string(), r.error_code))
        .collect()
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

/// Goal: CreatePartitions grows a topic at once and for good, and refuses what Kafka refuses.
/// Method: grow a topic from 1 to 3, try shrinking, equal counts, validate_only, assignments
/// naming another broker or the wrong number of partitions, unknown and repeated topics; then
/// restart and check the count and that the new partitions take records.
#[test]
fn create_partitions_grows_a_topic_for_good_and_never_shrinks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = BrokerConfig::new(dir.path());
    let server = Server::start(&config);
    assert_eq!(
        create_topics(&server, vec![creatable("t", 1, &[])], false),
        [0]
    );

    assert_eq!(
        create_partitions(&server, vec![grow("t", 3)], false),
        [("t".into(), 0)]
    );
    assert_eq!(
        partition_count(&server, "t"),
        3,
        "Metadata reports the new count at once"
    );
    for count in [2, 3] {
        let refused = create_partitions(&server, vec![grow("t", count)], false);
        assert_eq!(
            refused[0].1,
            code(ResponseError::InvalidPartitions),
            "count {count}"
        );
    }
    let validated = create_partitions(&server, vec![grow("t", 5)], true);
    assert_eq!(validated[0].1, 0);
    assert_eq!(
        partition_count(&server, "t"),
        3,
        "validate_only creates nothing"
    );

    let assigned = |ids: Vec<Vec<i32>>| {
        let assignments = ids
            .into_iter()
            .map(|ids| {
                CreatePartitionsAssignment::default()
                    .with_broker_ids(ids.into_iter().map(BrokerId).collect())
            })
            .collect();
        grow("t", 4).with_assignments(Some(assignments))
    };
    for bad in [
        vec![vec![1]],
        vec![vec![0], vec![0]],
        vec![vec![]],
        vec![vec![0, 0]],
    ] {
        let refused = create_partitions(&server, vec![assigned(bad.clone())], false);
        assert_eq!(
            refused[0].1,
            code(ResponseError::InvalidReplicaAssignment),
            "{bad:?}"
        );
    }
    assert_eq!(partition_count(&server, "t"), 3);
    let unknown = create_partitions(&server, vec![grow("nope", 2)], false);
    assert_eq!(unknown[0].1, code(ResponseError::UnknownTopicOrPartition));
    let repeated = create_partitions(&server, vec![grow("t", 5), grow("t", 6)], false);
    assert_eq!(
        repeated,
        [("t".into(), code(ResponseError::InvalidRequest))]
    );
    assert_eq!(
        create_partitions(&server, vec![assigned(vec![vec![0]])], false)[0].1,
        0
    );
    server.stop();

    let server = Server::start(&config);
    assert_eq!(
        partition_count(&server, "t"),
        4,
        "the new count survives a restart"
    );
    server.append("t", 3, 2);
    assert_eq!(
        server
            .broker
            .partition("t", 3)
            .expect("p3")
            .high_watermark(),
        2
    );
    server.stop();
}

/// Goal: CreatePartitions is bounded as CreateTopics is, per request and per broker, and says
/// which limit refused it. Method: a broker allowing 4 partitions a request and 6 in all.
#[test]
fn create_partitions_keeps_to_the_partition_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BrokerConfig::new(dir.path());
    config.create_topics_partitions_max = 4;
    config.broker_partitions_max = 6;
    let server = Server::start(&config);
    assert_eq!(
        create_topics(&server, vec![creatable("a", 1, &[])], false),
        [0]
    );
    assert_eq!(
        create_topics(&server, vec![creatable("b", 1, &[])], false),
        [0]
    );

    let response: CreatePartitionsResponse = server.call(
        ApiKey::CreatePartitions,
        0,
        &CreatePartitionsRequest::default().with_topics(vec![grow("a", 3), grow("b", 4)]),
    );
    for result in &response.results {
        assert_eq!(result.error_code, code(ResponseError::PolicyViolation));
        let message = result.error_message.as_deref().unwrap_or_default();
        assert!(
            message.contains("create.topics.partitions.max=4"),
            "{message}"
        );
    }
    assert_eq!(
        create_partitions(&server, vec![grow("a", 5)], false)[0].1,
        0
    );
    let response: CreatePartitionsResponse = server.call(
        ApiKey::CreatePartitions,
        3,
        &CreatePartitionsRequest::default().with_topics(vec![grow("b", 2)]),
    );
    assert_eq!(
        response.results[0].error_code,
        code(ResponseError::PolicyViolation)
    );
    let message = response.results[0]
        .error_message
        .as_deref()
        .unwrap_or_default();
    assert!(message.contains("max.broker.partitions=6"), "{message}");
    server.stop();
}

fn delete_records(server: &Server, topic: &str, partition: i32, offset: i64) -> (i16, i64) {
    let response: DeleteRecordsResponse = server.call(
        ApiKey::DeleteRecords,
        2,
        &DeleteRecordsRequest::default()
            .with_topics(vec![DeleteRecordsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(partition)
                    .with_offset(offset)])])
            .with_timeout_ms(1_000),
    );
    let result = &response.topics[0].partitions[0];
    (result.error_code, result.low_watermark)
}

fn earliest_offset(server: &Server, topic: &str) -> i64 {
    let response: ListOffsetsResponse = server.call(
        ApiKey::ListOffsets,
        7,
        &ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-2)])]),
    );
    response.topics[0].partitions[0].offset
}

fn fetch_error(server: &Server, topic: &str, offset: i64) -> i16 {
    let response: FetchResponse = server.call(
        ApiKey::Fetch,
        12,
        &FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])]),
    );
    response.responses[0].partitions[0].error_code
}

fn segment_files(dir: &Path, topic: &str) -> usize {
    std::fs::read_dir(dir.join(format!("{topic}-0")))
        .expect("partition dir")
        .filter(|e| e.as_ref().expect("entry").path().extension() == Some("log".as_ref()))
        .count()
}

/// Goal: DeleteRecords moves the log start offset for good, deleting whole segments below it,
/// and refuses what Kafka refuses. Method: 60 records over 1 KiB segments; delete below 25,
/// read below and at it, try past the high watermark, -1, a compacted topic, an internal topic
/// and an unknown partition; restart and check the start again.
#[test]
fn delete_records_moves_the_log_start_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = BrokerConfig::new(dir.path());
    let server = Server::start(&config);
    let small = [("segment.bytes", "1024")];
    let compacted = [("cleanup.policy", "compact")];
    let topics = vec![creatable("t", 1, &small), creatable("c", 1, &compacted)];
    assert_eq!(create_topics(&server, topics, false), [0, 0]);
    server.runtime.block_on(async {
        server
            .broker
            .create_topic("__internal", 1, Default::default())
            .expect("the broker's own API creates internal topics")
    });
    server.append("t", 0, 60);
    let segments = segment_files(dir.path(), "t");

    assert_eq!(delete_records(&server, "t", 0, 25), (0, 25));
    assert!(
        segment_files(dir.path(), "t") < segments,
        "whole segments below 25 are gone"
    );
    assert_eq!(earliest_offset(&server, "t"), 25);
    assert_eq!(
        fetch_error(&server, "t", 24),
        code(ResponseError::OffsetOutOfRange)
    );
    assert_eq!(fetch_error(&server, "t", 25), 0);
    assert_eq!(
        delete_records(&server, "t", 0, 10),
        (0, 25),
        "the start never moves back"
    );
    let past = delete_records(&server, "t", 0, 61);
    assert_eq!(past, (code(ResponseError::OffsetOutOfRange), -1));
    let unknown = delete_records(&server, "t", 1, 0).0;
    assert_eq!(unknown, code(ResponseError::UnknownTopicOrPartition));
    let internal = delete_records(&server, "__internal", 0, 0).0;
    assert_eq!(internal, code(ResponseError::InvalidTopicException));
    let compact = delete_records(&server, "c", 0, 0).0;
    assert_eq!(compact, code(ResponseError::PolicyViolation));
    server.stop();

    let server = Server::start(&config);
    assert_eq!(
        earliest_offset(&server, "t"),
        25,
        "the start survives a restart"
    );
    assert_eq!(
        fetch_error(&server, "t", 24),
        code(ResponseError::OffsetOutOfRange)
    );
    assert_eq!(
        delete_records(&server, "t", 0, -1),
        (0, 60),
        "-1 is the high watermark"
    );
    server.stop();
    let server = Server::start(&config);
    assert_eq!(earliest_offset(&server, "t"), 60);
    server.stop();
}

fn describe(server: &Server, version: i16, resource_type: i8, name: &str) -> DescribeConfigsResult {
    let response: DescribeConfigsResponse = server.call(
        ApiKey::DescribeConfigs,
        version,
        &DescribeConfigsRequest::default()
            .with_resources(vec![DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(s(name))])
            .with_include_synonyms(true)
            .with_include_documentation(version >= 3),
    );
    response.results.into_iter().next().expect("one result")
}

/// (value, source) of config `name` in `result`.
fn config_value(result: &DescribeConfigsResult, name: &str) -> (String, i8) {
    let entry = result
        .configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} is described"));
    (
        entry.value.as_deref().unwrap_or_default().to_string(),
        entry.config_source,
    )
}

fn alter(server: &Server, resource_type: i8, name: &str, configs: &[(&str, Option<&str>)]) -> i16 {
    let resource = alter_configs_request::AlterConfigsResource::default()
        .with_resource_type(resource_type)
        .with_resource_name(s(name))
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    alter_configs_request::AlterableConfig::default()
                        .with_name(s(k))
                        .with_value(v.map(s))
                })
                .collect(),
        );
    let response: AlterConfigsResponse = server.call(
        ApiKey::AlterConfigs,
        2,
        &AlterConfigsRequest::default().with_resources(vec![resource]),
    );
    response.responses[0].error_code
}

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

fn incremental(
    server: &Server,
    resource_type: i8,
    name: &str,
    operations: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> i16 {
    let resource = incremental::AlterConfigsResource::default()
        .with_resource_type(resource_type)
        .with_resource_name(s(name))
        .with_configs(
            operations
                .iter()
                .map(|(k, op, v)| {
                    incremental::AlterableConfig::default()
                        .with_name(s(k))
                        .with_config_operation(*op)
                        .with_value(v.map(s))
                })
                .collect(),
        );
    let response: IncrementalAlterConfigsResponse = server.call(
        ApiKey::IncrementalAlterConfigs,
        1,
        &IncrementalAlterConfigsRequest::default()
            .with_resources(vec![resource])
            .with_validate_only(validate_only),
    );
    response.responses[0].error_code
}

const TOPIC: i8 = 2;
const BROKER: i8 = 4;
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// Goal: both AlterConfigs flavours change a topic's configs as Kafka does, on the live
/// partitions and for good, with CreateTopics' validation. Method: replace the overrides, then
/// SET, APPEND, SUBTRACT and DELETE, checking DescribeConfigs and the partition's log config;
/// send every kind of bad change and see nothing change; restart and describe again.
#[test]
fn alter_configs_apply_to_live_partitions_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = BrokerConfig::new(dir.path());
    let server = Server::start(&config);
    let created = create_topics(
        &server,
        vec![creatable("t", 2, &[("retention.ms", "1000")])],
        false,
    );
    assert_eq!(created, [0]);

    let replaced = [
        ("segment.bytes", Some("4096")),
        ("retention.bytes", Some("100000")),
    ];
    assert_eq!(alter(&server, TOPIC, "t", &replaced), 0);
    let described = describe(&server, 4, TOPIC, "t");
    assert_eq!(
        config_value(&described, "segment.bytes"),
        ("4096".into(), DYNAMIC_TOPIC_CONFIG)
    );
    assert_eq!(
        config_value(&described, "retention.ms"),
        ("604800000".into(), DEFAULT_CONFIG)
    );
    let live = server
        .broker
        .partition("t", 1)
        .expect("p1")
        .log()
        .lock()
        .config()
        .clone();
    assert_eq!((live.segment_bytes, live.retention_ms), (4096, 604_800_000));

    let operations = [
        ("cleanup.policy", APPEND, Some("compact")),
        ("retention.ms", SET, Some("5000")),
        ("retention.bytes", DELETE, None),
    ];
    assert_eq!(incremental(&server, TOPIC, "t", &operations, false), 0);
    let described = describe(&server, 4, TOPIC, "t");
    let policy = config_value(&described, "cleanup.policy");
    assert_eq!(policy, ("compact,delete".into(), DYNAMIC_TOPIC_CONFIG));
    assert_eq!(
        config_value(&described, "retention.bytes"),
        ("-1".into(), DEFAULT_CONFIG)
    );
    let subtract = [("cleanup.policy", SUBTRACT, Some("delete"))];
    assert_eq!(incremental(&server, TOPIC, "t", &subtract, false), 0);
    let live = server
        .broker
        .partition("t", 0)
        .expect("p0")
        .log()
        .lock()
        .config()
        .clone();
    assert!(!live.cleanup_policy.deletes() && live.cleanup_policy.compacts());
    assert_eq!(live.retention_ms, 5000);

    let before = describe(&server, 4, TOPIC, "t");
    let invalid = code(ResponseError::InvalidConfig);
    let bad_request = code(ResponseError::InvalidRequest);
    let refused: [(i16, &[(&str, i8, Option<&str>)]); 7] = [
        (invalid, &[("retention.ms", SET, Some("soon"))]),
        (invalid, &[("segment.bites", SET, Some("1"))]),
        (invalid, &[("retention.ms", APPEND, Some("1"))]),
        (bad_request, &[("retention.ms", SET, None)]),
        (
            bad_request,
            &[
                ("retention.ms", SET, Some("1")),
                ("retention.ms", DELETE, None),
            ],
        ),
        (bad_request, &[("retention.ms", 9, Some("1"))]),
        (0, &[("retention.ms", SET, Some("1"))]),
    ];
    for (i, (expected, operations)) in refused.iter().enumerate() {
        // The last one is valid but validate_only: nothing may change either.
        let validate_only = i == refused.len() - 1;
        let answered = incremental(&server, TOPIC, "t", operations, validate_only);
        assert_eq!(answered, *expected, "{operations:?}");
    }
    assert_eq!(
        alter(&server, TOPIC, "t", &[("retention.ms", None)]),
        bad_request
    );
    assert_eq!(
        alter(&server, TOPIC, "nope", &[]),
        code(ResponseError::UnknownTopicOrPartition)
    );
    assert_eq!(
        describe(&server, 4, TOPIC, "t"),
        before,
        "refused changes change nothing"
    );
    server.stop();

    let server = Server::start(&config);
    assert_eq!(
        describe(&server, 4, TOPIC, "t"),
        before,
        "changes survive a restart"
    );
    let live = server
        .broker
        .partition("t", 1)
        .expect("p1")
        .log()
        .lock()
        .config()
        .clone();
    assert_eq!((live.segment_bytes, live.retention_ms), (4096, 5000));
    server.stop();
}

/// Goal: broker resources answer as Kafka answers for configs that cannot change dynamically,
/// one error per resource, never a dropped connection. Method: alter through both APIs, by
/// this broker's id, another id, and the empty (cluster default) name, in one request with a
/// topic that must still change.
#[test]
fn broker_configs_are_read_only_with_an_error_per_resource() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&BrokerConfig::new(dir.path()));
    assert_eq!(
        create_topics(&server, vec![creatable("t", 1, &[])], false),
        [0]
    );
    let bad_request = code(ResponseError::InvalidRequest);
    assert_eq!(
        alter(&server, BROKER, "0", &[("num.partitions", Some("3"))]),
        bad_request
    );
    assert_eq!(
        alter(&server, BROKER, "", &[("num.partitions", Some("3"))]),
        bad_request
    );
    assert_eq!(alter(&server, BROKER, "1", &[]), bad_request);
    assert_eq!(alter(&server, BROKER, "0", &[]), 0, "no change is no error");
    let set = [("log.retention.ms", SET, Some("1"))];
    assert_eq!(incremental(&server, BROKER, "0", &set, false), bad_request);
    assert_eq!(
        incremental(&server, 8, "0", &set, false),
        bad_request,
        "broker loggers"
    );

    let both = vec![
        incremental::AlterConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(s("0"))
            .with_configs(vec![incremental::AlterableConfig::default()
                .with_name(s("num.partitions"))
                .with_value(Some(s("2")))]),
        incremental::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s("t"))
            .with_configs(vec![incremental::AlterableConfig::default()
                .with_name(s("retention.ms"))
                .with_value(Some(s("1234")))]),
    ];
    let response: IncrementalAlterConfigsResponse = server.call(
        ApiKey::IncrementalAlterConfigs,
        0,
        &IncrementalAlterConfigsRequest::default().with_resources(both),
    );
    let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [bad_request, 0]);
    let message = response.responses[0]
        .error_message
        .as_deref()
        .unwrap_or_default();
    assert!(message.contains("num.partitions"), "{message}");
    let described = describe(&server, 2, TOPIC, "t");
    assert_eq!(config_value(&described, "retention.ms").0, "1234");
    server.stop();
}

/// Goal: DescribeConfigs tells where each value comes from, as Kafka does. Method: a broker
/// started with a non-default log.retention.ms and a topic overriding segment.bytes; describe
/// at v1 and v4 with synonyms and documentation, a subset of keys, and broker resources.
#[test]
fn describe_configs_reports_sources_synonyms_types_and_documentation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BrokerConfig::new(dir.path());
    config.topic_defaults.retention_ms = 3_600_000;
    let server = Server::start(&config);
    let created = create_topics(
        &server,
        vec![creatable("t", 1, &[("segment.bytes", "2048")])],
        false,
    );
    assert_eq!(created, [0]);

    for version in [1, 2, 3, 4] {
        let described = describe(&server, version, TOPIC, "t");
        assert_eq!(described.error_code, 0);
        assert_eq!(described.configs.len(), 12, "every topic config is listed");
        let segment = described
            .configs
            .iter()
            .find(|c| c.name.as_str() == "segment.bytes")
            .expect("segment.bytes");
        assert_eq!(segment.config_source, DYNAMIC_TOPIC_CONFIG);
        assert!(!segment.read_only && !segment.is_sensitive);
        let synonyms: Vec<(&str, i8)> = segment
            .synonyms
            .iter()
            .map(|s| (s.name.as_str(), s.source))
            .collect();
        assert_eq!(
            synonyms,
            [
                ("segment.bytes", DYNAMIC_TOPIC_CONFIG),
                ("log.segment.bytes", DEFAULT_CONFIG)
            ]
        );
        let retention = config_value(&described, "retention.ms");
        assert_eq!(retention, ("3600000".into(), STATIC_BROKER_CONFIG));
        if version >= 3 {
            assert_eq!(segment.config_type, 3, "INT");
            assert!(segment
                .documentation
                .as_deref()
                .is_some_and(|d| !d.is_empty()));
        }
    }

    let response: DescribeConfigsResponse = server.call(
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(s("t"))
                .with_configuration_keys(Some(vec![s("cleanup.policy")])),
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC)
                .with_resource_name(s("nope")),
        ]),
    );
    let names: Vec<&str> = response.results[0]
        .configs
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["cleanup.policy"]);
    assert!(
        response.results[0].configs[0].synonyms.is_empty(),
        "synonyms only when asked"
    );
    assert!(response.results[0].configs[0].documentation.is_none());
    let unknown = response.results[1].error_code;
    assert_eq!(unknown, code(ResponseError::UnknownTopicOrPartition));

    let broker = describe(&server, 4, BROKER, "0");
    assert_eq!(broker.error_code, 0);
    assert!(broker.configs.iter().all(|c| c.read_only));
    assert_eq!(
        config_value(&broker, "node.id"),
        ("0".into(), DEFAULT_CONFIG)
    );
    assert_eq!(
        config_value(&broker, "log.retention.ms"),
        ("3600000".into(), STATIC_BROKER_CONFIG)
    );
    assert!(
        describe(&server, 4, BROKER, "").configs.is_empty(),
        "no dynamic defaults"
    );
    let other = describe(&server, 4, BROKER, "3").error_code;
    assert_eq!(other, code(ResponseError::InvalidRequest));
    server.stop();
}

/// Goal: CreateTopics answers each config with its real source, creates nothing with
/// validate_only, and takes manual assignments only when they name this broker. Method: create
/// topics with and without overrides, validate_only, and several assignments.
#[test]
fn create_topics_reports_config_sources_validates_and_takes_assignments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&BrokerConfig::new(dir.path()));
    let response: CreateTopicsResponse = server.call(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![creatable("v", 3, &[("retention.ms", "1000")])])
            .with_validate_only(true),
    );
    let result = &response.topics[0];
    assert_eq!((result.error_code, result.num_partitions), (0, 3));
    let configs = result.configs.as_ref().expect("configs are listed");
    assert_eq!(configs.len(), 12);
    for config in configs {
        let expected = if config.name.as_str() == "retention.ms" {
            DYNAMIC_TOPIC_CONFIG
        } else {
            DEFAULT_CONFIG
        };
        assert_eq!(config.config_source, expected, "{}", config.name.as_str());
    }
    assert!(
        server.broker.topic("v").is_none(),
        "validate_only creates nothing"
    );
    assert!(!dir.path().join("v-0").exists());
    let bad = [
        creatable("bad name!", 1, &[]),
        creatable("w", 0, &[]),
        creatable("x", 1, &[("retention.ms", "x")]),
    ];
    let validated = create_topics(&server, bad.to_vec(), true);
    let expected = [
        ResponseError::InvalidTopicException,
        ResponseError::InvalidPartitions,
        ResponseError::InvalidConfig,
    ];
    assert_eq!(validated, expected.map(code));

    let assigned = |name: &str, partitions: Vec<(i32, Vec<i32>)>| {
        let assignments = partitions
            .into_iter()
            .map(|(index, ids)| {
                CreatableReplicaAssignment::default()
                    .with_partition_index(index)
                    .with_broker_ids(ids.into_iter().map(BrokerId).collect())
            })
            .collect();
        creatable(name, -1, &[])
            .with_replication_factor(-1)
            .with_assignments(assignments)
    };
    let topics = vec![
        assigned("a", vec![(0, vec![0]), (1, vec![0])]),
        assigned("b", vec![(0, vec![1])]),
        assigned("c", vec![(0, vec![0]), (2, vec![0])]),
        assigned("d", vec![(0, vec![0]), (0, vec![0])]),
        assigned("e", vec![(0, vec![0])]).with_num_partitions(1),
    ];
    let created = create_topics(&server, topics, false);
    let assignment = code(ResponseError::InvalidReplicaAssignment);
    let expected = [
        0,
        assignment,
        assignment,
        assignment,
        code(ResponseError::InvalidRequest),
    ];
    assert_eq!(created, expected);
    assert_eq!(partition_count(&server, "a"), 2);
    assert!(server.broker.topic("b").is_none());
    assert_eq!(
        create_topics(&server, vec![creatable("a", 1, &[])], true),
        [code(ResponseError::TopicAlreadyExists)]
    );
    server.stop();
}

/// Goal: DescribeCluster and DescribeLogDirs describe this one-node cluster truthfully. Method:
/// a topic with records in one partition; ask each version, with and without filters.
#[test]
fn describe_cluster_and_log_dirs_describe_this_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BrokerConfig::new(dir.path());
    config.node_id = 3;
    let server = Server::start(&config);
    assert_eq!(
        create_topics(
            &server,
            vec![creatable("t", 2, &[]), creatable("u", 1, &[])],
            false
        ),
        [0, 0]
    );
    server.append("t", 1, 10);

    for version in [0, 1] {
        let response: DescribeClusterResponse = server.call(
            ApiKey::DescribeCluster,
            version,
            &DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
        );
        assert_eq!(response.error_code, 0);
        assert_eq!(response.cluster_id.as_str(), server.broker.cluster_id);
        assert_eq!(response.controller_id, BrokerId(3));
        let brokers: Vec<(i32, i32)> = response
            .brokers
            .iter()
            .map(|b| (b.broker_id.0, b.port))
            .collect();
        assert_eq!(brokers, [(3, config.advertised_port)]);
        // CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS and
        // IDEMPOTENT_WRITE.
        let operations = [5, 7, 8, 9, 10, 11, 12]
            .iter()
            .fold(0, |bits, op| bits | 1 << op);
        assert_eq!(response.cluster_authorized_operations, operations);
    }
    let response: DescribeClusterResponse = server.call(
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default(),
    );
    assert_eq!(
        response.cluster_authorized_operations,
        i32::MIN,
        "only when asked"
    );
    let controller: DescribeClusterResponse = server.call(
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default().with_endpoint_type(2),
    );
    assert_eq!(
        controller.error_code,
        code(ResponseError::MismatchedEndpointType)
    );

    for version in [1, 2, 3, 4] {
        let response: DescribeLogDirsResponse = server.call(
            ApiKey::DescribeLogDirs,
            version,
            &DescribeLogDirsRequest::default().with_topics(None),
        );
        assert_eq!(response.results.len(), 1);
        let result = &response.results[0];
        let data_dir = std::fs::canonicalize(dir.path()).expect("canonical");
        assert_eq!(result.log_dir.as_str(), data_dir.to_string_lossy());
        let mut partitions: Vec<(String, i32, bool, i64)> = result
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| {
                    (
                        t.name.to_string(),
                        p.partition_index,
                        p.partition_size > 0,
                        p.offset_lag,
                    )
                })
            })
            .collect();
        partitions.sort();
        let expected = [
            ("t".into(), 0, false, 0),
            ("t".into(), 1, true, 0),
            ("u".into(), 0, false, 0),
        ];
        assert_eq!(partitions, expected);
        if version == 4 {
            assert!(
                result.total_bytes > 0 && (0..=result.total_bytes).contains(&result.usable_bytes)
            );
        }
    }
    let response: DescribeLogDirsResponse = server.call(
        ApiKey::DescribeLogDirs,
        4,
        &DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(topic_name("t"))
                .with_partitions(vec![1, 7]),
            DescribableLogDirTopic::default()
                .with_topic(topic_name("nope"))
                .with_partitions(vec![0]),
        ])),
    );
    let topics = &response.results[0].topics;
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].partitions.len(), 1);
    assert_eq!(topics[0].partitions[0].partition_index, 1);
    server.stop();
}
