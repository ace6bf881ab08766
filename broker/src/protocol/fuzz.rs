//! Proptest over Kafka request frames through decoding *and* handling: valid requests of every
//! kind, with bytes overwritten and tails cut, are dispatched to a real broker. Whatever decodes
//! must be handled without a panic (in the connection task or a response task) and answered
//! with a response that encodes; whatever does not decode is an error, never a panic.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Request};
use proptest::prelude::*;

use super::{dispatch, Pending};
use crate::client::{encode_batch, ProducerRecord};
use crate::protocol::str_bytes;
use crate::Broker;

/// One broker for every case (opening one per case would dominate the run time).
fn fixture() -> &'static (tokio::runtime::Runtime, Arc<Broker>, tempfile::TempDir) {
    static FIXTURE: OnceLock<(tokio::runtime::Runtime, Arc<Broker>, tempfile::TempDir)> =
        OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = crate::BrokerConfig::new(dir.path());
        config.group_initial_rebalance_delay = Duration::ZERO;
        let broker = runtime.block_on(async {
            let broker = Broker::open(config).await.expect("open");
            broker.create_topic("t", 2, Default::default()).expect("t");
            broker
        });
        (runtime, broker, dir)
    })
}

fn frame<R: Request + Encodable>(version: i16, request: &R) -> Bytes {
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(5)
        .with_client_id(Some(str_bytes("fuzz")))
        .encode(&mut frame, R::header_version(version))
        .expect("header");
    request.encode(&mut frame, version).expect("request");
    frame.freeze()
}

/// Valid requests with content, one or more of every kind a client sends in daily use.
fn corpus() -> Vec<Bytes> {
    let topic = || TopicName(str_bytes("t"));
    let batch = encode_batch(&[(
        0,
        ProducerRecord {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![("h".into(), Some(Bytes::from_static(b"1")))],
            ..Default::default()
        },
    )])
    .freeze();
    let produce = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(1)
                .with_records(Some(batch))])]);
    let fetch = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic())
            .with_partitions(vec![FetchPartition::default()
                .with_partition(1)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let list_offsets = ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(topic())
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-1)])]);
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic())),
    ]));
    let create = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(str_bytes("fuzzed")))
            .with_num_partitions(2)
            .with_replication_factor(1)])
        .with_timeout_ms(1000);
    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes("g")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic())
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(1)])]);
    let offset_fetch = OffsetFetchRequest::default()
        .with_group_id(GroupId(str_bytes("g")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic())
            .with_partition_indexes(vec![0, 1])]));
    let find = FindCoordinatorRequest::default().with_key(str_bytes("g"));
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes("g")))
        .with_member_id(str_bytes("m"));
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(str_bytes("g")))
        .with_member_id(str_bytes("m"));
    let init = InitProducerIdRequest::default().with_transaction_timeout_ms(1000);
    let describe = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(str_bytes("t")),
    ]);
    let delete_records = DeleteRecordsRequest::default().with_topics(vec![
        delete_records_request::DeleteRecordsTopic::default()
            .with_name(topic())
            .with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default()
                    .with_partition_index(1)
                    .with_offset(0),
            ]),
    ]);
    let alter = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(str_bytes("t"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(str_bytes("cleanup.policy"))
                    .with_config_operation(2)
                    .with_value(Some(str_bytes("delete"))),
            ]),
    ]);
    let describe_broker = DescribeConfigsRequest::default()
        .with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(str_bytes("0")),
        ])
        .with_include_synonyms(true)
        .with_include_documentation(true);
    let log_dirs = DescribeLogDirsRequest::default().with_topics(Some(vec![
        describe_log_dirs_request::DescribableLogDirTopic::default()
            .with_topic(topic())
            .with_partitions(vec![0, 1]),
    ]));
    let cluster =
        DescribeClusterRequest::default().with_include_cluster_authorized_operations(true);
    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(str_bytes("fuzzed"))])
        .with_timeout_ms(1000);
    let list_groups = ListGroupsRequest::default()
        .with_states_filter(vec![str_bytes("Empty")])
        .with_types_filter(vec![str_bytes("classic")]);
    let describe_groups = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(str_bytes("g")), GroupId(str_bytes("h"))])
        .with_include_authorized_operations(true);
    let delete_groups =
        DeleteGroupsRequest::default().with_groups_names(vec![GroupId(str_bytes("gone"))]);
    let offset_delete = OffsetDeleteRequest::default()
        .with_group_id(GroupId(str_bytes("g")))
        .with_topics(vec![
            offset_delete_request::OffsetDeleteRequestTopic::default()
                .with_name(topic())
                .with_partitions(vec![
                    offset_delete_request::OffsetDeleteRequestPartition::default()
                        .with_partition_index(1),
                ]),
        ]);
    vec![
        frame(8, &produce),
        frame(3, &produce),
        frame(11, &fetch),
        frame(4, &fetch),
        frame(5, &list_offsets),
        frame(1, &list_offsets),
        frame(9, &metadata),
        frame(1, &metadata),
        frame(5, &create),
        frame(7, &commit),
        frame(2, &commit),
        frame(6, &offset_fetch),
        frame(2, &find),
        frame(3, &heartbeat),
        frame(3, &sync),
        frame(1, &init),
        frame(2, &describe),
        frame(4, &delete),
        frame(2, &delete_records),
        frame(1, &alter),
        frame(4, &describe_broker),
        frame(4, &log_dirs),
        frame(1, &cluster),
        frame(3, &ApiVersionsRequest::default()),
        frame(5, &list_groups),
        frame(2, &ListGroupsRequest::default()),
        frame(5, &describe_groups),
        frame(
            0,
            &describe_groups
                .clone()
                .with_include_authorized_operations(false),
        ),
        frame(2, &delete_groups),
        frame(0, &offset_delete),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]
    #[test]
    fn mutated_requests_are_handled_or_refused_without_a_panic(
        pick in any::<prop::sample::Index>(),
        overwrites in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in prop::option::weighted(0.1, any::<prop::sample::Index>()),
    ) {
        let (runtime, broker, _dir) = fixture();
        let corpus = corpus();
        let mut bytes = BytesMut::from(&corpus[pick.index(corpus.len())][..]);
        // The header's api key and version stay valid, so the body is what varies.
        let body_from = 4.min(bytes.len());
        for (at, value) in overwrites {
            let span = bytes.len() - body_from;
            if span > 0 {
                bytes[body_from + at.index(span)] = value;
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(body_from + cut.index(bytes.len() - body_from + 1));
        }
        runtime.block_on(async {
            // A cut inside the header is refused by the connection before dispatch.
            if bytes.len() < 8 {
                return;
            }
            match dispatch(broker, bytes.freeze()) {
                Err(_) | Ok(Pending::Silent) => {}
                Ok(Pending::Ready(response)) => assert!(response.is_some(), "did not encode"),
                Ok(Pending::Later { task, .. }) => {
                    // A fetch may now ask to wait: the part that matters is that the task
                    // does not panic, which it would do at once.
                    let outcome = tokio::time::timeout(Duration::from_millis(200), task).await;
                    if let Ok(joined) = outcome {
                        let response = joined.expect("the response task panicked");
                        assert!(response.is_some(), "did not encode");
                    }
                }
            }
        });
    }
}
