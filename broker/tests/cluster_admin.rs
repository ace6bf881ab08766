//! The admin APIs in a 3-broker cluster, in one process: DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs answer from the cluster's metadata image on any broker, and a change
//! reaches every broker's replicas; DeleteRecords goes to the partition's leader and the
//! followers follow its log start offset; DescribeLogDirs lists each broker's own replicas.
//! Each broker serves the Kafka protocol on a loopback port and the tests speak raw requests
//! to them, as a client would; every wait is bounded.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use eddy_broker::cluster::replica::Role;
use eddy_broker::log::batch::BatchBuilder;
use eddy_broker::{now_ms, CleanupPolicy, Partition};
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResult;
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;
use support::{call, create_topic, eventually, s, start_cluster, Node};

const TOPIC: i8 = 2;
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

fn code(error: ResponseError) -> i16 {
    error.code()
}

/// Three brokers in their own temporary directories, logging to the test's output when
/// RUST_LOG is set (the cluster's decisions, when a test fails).
async fn three_brokers() -> (Vec<tempfile::TempDir>, Vec<Node>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let nodes = start_cluster(&dirs).await;
    (dirs, nodes)
}

/// This broker's replica of partition `index` of `topic`, once it has one.
async fn replica(node: &Node, topic: &str, index: i32) -> Arc<Partition> {
    let cluster = node.broker.cluster().expect("a cluster broker");
    eventually("the broker to open its replica", || async {
        cluster.partition(topic, index).ok()
    })
    .await
}

/// DescribeConfigs v4 of topic `name`, with synonyms.
async fn describe(address: SocketAddr, name: &str) -> DescribeConfigsResult {
    let request = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s(name))])
        .with_include_synonyms(true);
    let response = call(address, 4, &request).await;
    response.results.into_iter().next().expect("one result")
}

/// (value, source) of config `name` in `result`.
fn config_value(result: &DescribeConfigsResult, name: &str) -> (String, i8) {
    let entry = result
        .configs
        .iter()
        .find(|c| c.name.as_str() == name)
        .unwrap_or_else(|| panic!("{name} is described: {result:?}"));
    (
        entry.value.as_deref().unwrap_or_default().to_string(),
        entry.config_source,
    )
}

/// Waits until the broker at `address` describes `name`'s config `key` as `value`.
async fn described_as(
    address: SocketAddr,
    name: &str,
    key: &str,
    value: &str,
) -> DescribeConfigsResult {
    eventually("the change to be described", || async {
        let result = describe(address, name).await;
        assert_eq!(result.error_code, 0, "{result:?}");
        (config_value(&result, key).0 == value).then_some(result)
    })
    .await
}

/// IncrementalAlterConfigs v1 of topic `name`: the resource's error code and message.
async fn incremental(
    address: SocketAddr,
    name: &str,
    operations: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> (i16, String) {
    let configs = operations
        .iter()
        .map(|(key, operation, value)| {
            incremental::AlterableConfig::default()
                .with_name(s(key))
                .with_config_operation(*operation)
                .with_value(value.map(s))
        })
        .collect();
    let request = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![incremental::AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s(name))
            .with_configs(configs)])
        .with_validate_only(validate_only);
    let response = call(address, 1, &request).await;
    let result = &response.responses[0];
    let message = result.error_message.as_deref().unwrap_or_default();
    (result.error_code, message.to_string())
}

/// AlterConfigs v2 of topic `name` (its overrides become exactly `configs`): the error code.
async fn alter(
    address: SocketAddr,
    name: &str,
    configs: &[(&str, &str)],
    validate_only: bool,
) -> i16 {
    let configs = configs
        .iter()
        .map(|(key, value)| {
            AlterableConfig::default()
                .with_name(s(key))
                .with_value(Some(s(value)))
        })
        .collect();
    let request = AlterConfigsRequest::default()
        .with_resources(vec![AlterConfigsResource::default()
            .with_resource_type(TOPIC)
            .with_resource_name(s(name))
            .with_configs(configs)])
        .with_validate_only(validate_only);
    let response = call(address, 2, &request).await;
    response.responses[0].error_code
}

/// Goal: a topic config change made through any broker, the metadata quorum's leader or not,
/// is described alike by every broker and followed by every replica's log; validate_only and
/// refused changes change nothing. Method: three in-process brokers and a topic replicated on
/// all three; IncrementalAlterConfigs (SET and APPEND) on a broker that does not lead the
/// quorum, then DescribeConfigs on each broker and a look at each replica's log config; a
/// validate_only change and invalid ones, checked against the proposer's image, which holds
/// any record it proposed once it answered; AlterConfigs on another broker, replacing the
/// overrides, down to the leader's `min.insync.replicas`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topic_configs_changed_on_one_broker_are_seen_and_applied_by_every_broker() {
    let (_dirs, nodes) = three_brokers().await;
    create_topic(nodes[0].address, "t", 1, 3, &[]).await;
    let replicas = [
        replica(&nodes[0], "t", 0).await,
        replica(&nodes[1], "t", 0).await,
        replica(&nodes[2], "t", 0).await,
    ];
    let quorum_leader = nodes[0]
        .broker
        .cluster()
        .expect("a cluster")
        .quorum
        .leader();
    let changer = nodes
        .iter()
        .find(|n| Some(n.id as u64) != quorum_leader)
        .expect("two brokers do not lead the quorum");

    let changes = [
        ("retention.ms", SET, Some("3600000")),
        ("max.message.bytes", SET, Some("2000")),
        ("cleanup.policy", APPEND, Some("compact")),
    ];
    let (error, message) = incremental(changer.address, "t", &changes, false).await;
    assert_eq!(error, 0, "{message}");
    for (node, replica) in nodes.iter().zip(&replicas) {
        let described = described_as(node.address, "t", "retention.ms", "3600000").await;
        let dynamic = |value: &str| (value.to_string(), DYNAMIC_TOPIC_CONFIG);
        assert_eq!(config_value(&described, "retention.ms"), dynamic("3600000"));
        assert_eq!(
            config_value(&described, "max.message.bytes"),
            dynamic("2000")
        );
        assert_eq!(
            config_value(&described, "cleanup.policy"),
            dynamic("compact,delete")
        );
        assert_eq!(config_value(&described, "segment.bytes").1, DEFAULT_CONFIG);
        let retention = described
            .configs
            .iter()
            .find(|c| c.name.as_str() == "retention.ms")
            .expect("described");
        let synonyms: Vec<(&str, i8)> = retention
            .synonyms
            .iter()
            .map(|synonym| (synonym.name.as_str(), synonym.source))
            .collect();
        assert_eq!(
            synonyms,
            [
                ("retention.ms", DYNAMIC_TOPIC_CONFIG),
                ("log.retention.ms", DEFAULT_CONFIG)
            ]
        );
        eventually("the replica's log to follow the new configs", || async {
            let log = replica.log().lock();
            let config = log.config();
            let followed = config.retention_ms == 3_600_000
                && config.max_message_bytes == 2_000
                && config.cleanup_policy == CleanupPolicy::CompactDelete;
            followed.then_some(())
        })
        .await;
    }

    // validate_only checks and proposes nothing; neither does a refused change.
    let image = || changer.broker.cluster().expect("a cluster").image();
    let before = image().topics["t"].configs.clone();
    let checked = incremental(
        changer.address,
        "t",
        &[("retention.ms", SET, Some("1"))],
        true,
    );
    assert_eq!(checked.await, (0, String::new()));
    assert_eq!(
        alter(changer.address, "t", &[("retention.ms", "1")], true).await,
        0
    );
    let invalid_config = code(ResponseError::InvalidConfig);
    let refused = [
        ("retention.ms", SET, Some("soon")),
        ("no.such.config", SET, Some("1")),
        ("retention.ms", APPEND, Some("1")),
    ];
    for operation in refused {
        let (error, message) = incremental(changer.address, "t", &[operation], false).await;
        assert_eq!(error, invalid_config, "{operation:?}: {message}");
        assert!(message.contains(operation.0), "names the key: {message}");
    }
    let (error, _) = incremental(
        changer.address,
        "nope",
        &[("retention.ms", DELETE, None)],
        false,
    )
    .await;
    assert_eq!(error, code(ResponseError::UnknownTopicOrPartition));
    assert_eq!(image().topics["t"].configs, before, "nothing changed");
    assert_eq!(
        config_value(&describe(changer.address, "t").await, "retention.ms").0,
        "3600000"
    );

    // AlterConfigs through another broker replaces the overrides: the rest return to the
    // defaults, and the leader requires the new min.insync.replicas.
    let other = nodes.iter().find(|n| n.id != changer.id).expect("a broker");
    assert_eq!(
        alter(other.address, "t", &[("min.insync.replicas", "2")], false).await,
        0
    );
    for node in &nodes {
        let described = described_as(node.address, "t", "min.insync.replicas", "2").await;
        let retention = config_value(&described, "retention.ms");
        assert_eq!(retention, ("604800000".to_string(), DEFAULT_CONFIG));
        assert_eq!(
            config_value(&described, "min.insync.replicas").1,
            DYNAMIC_TOPIC_CONFIG
        );
    }
    let leader = image().topics["t"].partitions[0].leader;
    let leader_index = nodes.iter().position(|n| n.id == leader).expect("a leader");
    eventually("the leader to require two in-sync replicas", || async {
        match replicas[leader_index].role() {
            Role::Leader(leadership) => (leadership.rules.min_insync == 2).then_some(()),
            _ => None,
        }
    })
    .await;

    // Incremental changes of different configs through the three brokers at once all take
    // effect: one computed from overrides that changed meanwhile is computed again.
    let keys = ["retention.ms", "flush.ms", "segment.ms"];
    let mut tasks = Vec::new();
    for (node, key) in nodes.iter().zip(keys) {
        let address = node.address;
        tasks.push(tokio::spawn(async move {
            for value in 1_000..1_005 {
                let value = value.to_string();
                let set = [(key, SET, Some(value.as_str()))];
                let (error, message) = incremental(address, "t", &set, false).await;
                assert_eq!(error, 0, "{key}={value}: {message}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("the changes are answered");
    }
    // Each broker applies the records in its own time: wait for the last of them.
    for node in &nodes {
        let described = eventually("every change to be described", || async {
            let result = describe(node.address, "t").await;
            let last = |key| config_value(&result, key) == ("1004".into(), DYNAMIC_TOPIC_CONFIG);
            keys.into_iter().all(last).then_some(result)
        })
        .await;
        assert_eq!(config_value(&described, "min.insync.replicas").0, "2");
    }
}

/// The index in `nodes` of partition 0's leader of `topic`, once that broker knows it leads.
async fn leader_of(nodes: &[Node], replicas: &[Arc<Partition>], topic: &str) -> usize {
    eventually("a leader that knows it leads", || async {
        let image = nodes[0].broker.cluster().expect("a cluster").image();
        let leader = image.topics[topic].partitions[0].leader;
        let index = nodes.iter().position(|n| n.id == leader)?;
        matches!(replicas[index].role(), Role::Leader(_)).then_some(index)
    })
    .await
}

/// Produces `count` records to partition 0 of `topic` at its leader until all are
/// acknowledged, then waits until every replica knows they are committed; the log end offset.
async fn produce_replicated(
    leader: SocketAddr,
    replicas: &[Arc<Partition>],
    topic: &str,
    count: usize,
) -> i64 {
    let produced = eventually(
        "the records to be acknowledged by every replica",
        || async {
            let codes = produce(leader, topic, count).await;
            let retriable = [
                code(ResponseError::NotEnoughReplicas),
                code(ResponseError::NotLeaderOrFollower),
            ];
            if codes.iter().any(|c| retriable.contains(c)) {
                return None;
            }
            Some(codes)
        },
    )
    .await;
    assert!(produced.iter().all(|c| *c == 0), "{produced:?}");
    let end = replicas
        .iter()
        .map(|r| r.log_end_offset())
        .max()
        .unwrap_or(0);
    assert!(end >= count as i64, "{end}");
    eventually("every replica to learn the high watermark", || async {
        replicas
            .iter()
            .all(|r| r.high_watermark() == end)
            .then_some(())
    })
    .await;
    end
}

/// Goal: retention runs on a cluster's replicas, each below its own high watermark. Method:
/// a replicated topic with small segments and retention.bytes=1, 60 records committed on
/// every replica, then each broker's maintenance pass: every replica deletes its closed
/// segments, and keeps its log end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_runs_on_every_replica() {
    let (_dirs, nodes) = three_brokers().await;
    let configs = [("segment.bytes", "1024"), ("retention.bytes", "1")];
    create_topic(nodes[0].address, "r", 1, 3, &configs).await;
    let replicas = [
        replica(&nodes[0], "r", 0).await,
        replica(&nodes[1], "r", 0).await,
        replica(&nodes[2], "r", 0).await,
    ];
    let leader = &nodes[leader_of(&nodes, &replicas, "r").await];
    let end = produce_replicated(leader.address, &replicas, "r", 60).await;
    for node in &nodes {
        let broker = Arc::clone(&node.broker);
        tokio::task::spawn_blocking(move || broker.run_maintenance())
            .await
            .expect("maintenance");
    }
    for (node, replica) in nodes.iter().zip(&replicas) {
        let start = replica.log_start_offset();
        assert!(
            start > 0 && start <= end,
            "broker {}: start {start}, end {end}",
            node.id
        );
        assert_eq!(replica.log_end_offset(), end, "broker {}", node.id);
    }
}

/// Produce v8 of `count` one-record batches to partition 0 of `topic` at `address`, acks=all:
/// the error codes seen, one per batch.
async fn produce(address: SocketAddr, topic: &str, count: usize) -> Vec<i16> {
    let mut codes = Vec::with_capacity(count);
    for i in 0..count {
        let mut builder = BatchBuilder::new(now_ms(), 128);
        builder.push(
            now_ms(),
            Some(format!("k{i}").as_bytes()),
            Some(&[7; 64]),
            &[],
        );
        let records: BytesMut = builder.finish();
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(s(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records.freeze()))])]);
        let response = call(address, 8, &request).await;
        codes.push(response.responses[0].partition_responses[0].error_code);
    }
    codes
}

/// DeleteRecords v2 below `offset` of partition 0 of `topic`: (error code, low watermark).
async fn delete_records(address: SocketAddr, topic: &str, offset: i64) -> (i16, i64) {
    let request = DeleteRecordsRequest::default()
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(0)
                .with_offset(offset)])])
        .with_timeout_ms(5_000);
    let response = call(address, 2, &request).await;
    let result = &response.topics[0].partitions[0];
    (result.error_code, result.low_watermark)
}

/// DescribeLogDirs v4 of every partition: (topic, partition, size in bytes, offset lag).
async fn log_dirs(address: SocketAddr) -> Vec<(String, i32, i64, i64)> {
    let response = call(
        address,
        4,
        &DescribeLogDirsRequest::default().with_topics(None),
    )
    .await;
    assert_eq!(response.results.len(), 1, "one log directory");
    response.results[0]
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| {
                let name = topic.name.to_string();
                (name, p.partition_index, p.partition_size, p.offset_lag)
            })
        })
        .collect()
}

/// Goal: DeleteRecords is the leader's: a follower refuses it with NOT_LEADER_OR_FOLLOWER and
/// deletes nothing; the leader moves its log start offset and answers with it; every follower
/// then moves its own after its next fetch. DescribeLogDirs on each broker lists the replicas
/// it holds, with their sizes and no lag once caught up. Method: three in-process brokers, a
/// topic `d` on all three and a topic `solo` on one; 30 records produced with acks=all; wait
/// until every replica has the high watermark at 30; DeleteRecords at a follower, then at the
/// leader, below 12 and then below the high watermark (-1), checking each replica's log start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_records_goes_to_the_leader_and_followers_follow_its_log_start() {
    let (_dirs, nodes) = three_brokers().await;
    create_topic(nodes[0].address, "d", 1, 3, &[("segment.bytes", "1024")]).await;
    create_topic(nodes[0].address, "solo", 1, 1, &[]).await;
    let replicas = [
        replica(&nodes[0], "d", 0).await,
        replica(&nodes[1], "d", 0).await,
        replica(&nodes[2], "d", 0).await,
    ];
    let leader_index = leader_of(&nodes, &replicas, "d").await;
    let leader = &nodes[leader_index];
    let follower_index = (leader_index + 1) % nodes.len();
    let follower = &nodes[follower_index];

    let end = produce_replicated(leader.address, &replicas, "d", 30).await;

    let refused = delete_records(follower.address, "d", 12).await;
    assert_eq!(refused, (code(ResponseError::NotLeaderOrFollower), -1));
    assert_eq!(
        replicas[follower_index].log_start_offset(),
        0,
        "a follower deletes nothing"
    );

    assert_eq!(delete_records(leader.address, "d", 12).await, (0, 12));
    assert_eq!(replicas[leader_index].log_start_offset(), 12);
    eventually("every follower to move its log start offset", || async {
        replicas
            .iter()
            .all(|r| r.log_start_offset() == 12)
            .then_some(())
    })
    .await;

    for node in &nodes {
        let listed = log_dirs(node.address).await;
        let d: Vec<_> = listed.iter().filter(|l| l.0 == "d").collect();
        assert_eq!(d.len(), 1, "broker {}: {listed:?}", node.id);
        let (_, index, size, lag) = d[0];
        assert_eq!((*index, *lag), (0, 0), "broker {}: caught up", node.id);
        assert!(*size > 0, "broker {}: {listed:?}", node.id);
        assert!(
            listed.iter().all(|l| l.0 == "d" || l.0 == "solo"),
            "{listed:?}"
        );
    }
    let mut solo = 0;
    for node in &nodes {
        solo += log_dirs(node.address)
            .await
            .iter()
            .filter(|l| l.0 == "solo")
            .count();
    }
    assert_eq!(
        solo, 1,
        "only the broker holding solo's one replica lists it"
    );

    assert_eq!(
        delete_records(leader.address, "d", -1).await,
        (0, end),
        "-1: the high watermark"
    );
    eventually(
        "every follower to follow the leader's log start to the end",
        || async {
            replicas
                .iter()
                .all(|r| r.log_start_offset() == end)
                .then_some(())
        },
    )
    .await;
}
