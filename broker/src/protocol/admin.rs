//! Cluster and partition administration: CreatePartitions, DeleteRecords, DescribeCluster and
//! DescribeLogDirs, answered as Kafka's broker answers them on a one-node cluster.
//!
//! In a cluster (CreatePartitions is then `cluster.rs`'s), DeleteRecords goes to each
//! partition's leader, as in Kafka: a broker that does not lead the partition answers
//! NOT_LEADER_OR_FOLLOWER for it. The leader moves its log start offset and answers with it as
//! the low watermark at once; followers move theirs when their next fetch reports the leader's
//! (`cluster/fetcher.rs`). Kafka's leader waits instead (up to the request's timeout) until every
//! live replica has moved, and answers with the lowest of their start offsets. DescribeLogDirs
//! lists the replicas this broker holds, leaders and followers, with their size on disk and an
//! offset lag computed from what the broker knows locally (`Partition::offset_lag`): 0 on a
//! leader, and on a follower the leader's high watermark as its last fetch reported, minus the
//! follower's log end offset. (Kafka's own figure, its local high watermark minus its log end
//! offset, is 0 on every replica that is not being moved between log directories.)
//!
//! Internal topics (`__` names and `BrokerConfig::internal_topics`) refuse CreatePartitions and
//! DeleteRecords with INVALID_TOPIC_EXCEPTION, as Kafka refuses DeleteRecords on them ("Cannot
//! delete records of internal topic"): the broker's own components depend on their layout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestContext};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::partition::Partition;

/// DescribeCluster's `endpoint_type`: a broker (what Eddy is) or a KRaft controller.
const ENDPOINT_TYPE_BROKER: i8 = 1;
const ENDPOINT_TYPE_CONTROLLER: i8 = 2;
/// The ACL operations Kafka supports on the cluster resource (`AclEntry.supportedOperations`):
/// CREATE 5, ALTER 7, DESCRIBE 8, CLUSTER_ACTION 9, DESCRIBE_CONFIGS 10, ALTER_CONFIGS 11,
/// IDEMPOTENT_WRITE 12. Without an authorizer Kafka reports all of them as allowed.
const CLUSTER_OPERATIONS: [u8; 7] = [5, 7, 8, 9, 10, 11, 12];

pub(super) fn create_partitions(
    context: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let broker = &context.broker;
    let mut seen = BTreeSet::new();
    let duplicates: BTreeSet<String> = request
        .topics
        .iter()
        .map(|t| t.name.to_string())
        .filter(|name| !seen.insert(name.clone()))
        .collect();
    // Like CreateTopics, the cap is on the whole request: all its topics are considered or none.
    let added: i64 = request
        .topics
        .iter()
        .filter_map(|t| {
            let current = broker.topic(&t.name)?.partitions.len() as i64;
            Some((i64::from(t.count) - current).max(0))
        })
        .sum();
    let mut results: Vec<CreatePartitionsTopicResult> = duplicates
        .iter()
        .map(|name| {
            let error = BrokerError::InvalidRequest("Duplicate topic name.".into());
            partitions_result(TopicName(str_bytes(name.clone())), Err(error))
        })
        .collect();
    for topic in request.topics {
        if duplicates.contains(topic.name.as_str()) {
            continue;
        }
        let outcome = broker
            .check_request_partitions(added)
            .and_then(|()| add_partitions(broker, &topic, request.validate_only));
        results.push(partitions_result(topic.name, outcome));
    }
    CreatePartitionsResponse::default().with_results(results)
}

/// Grows one topic of a CreatePartitions request, checking its explicit assignments first.
fn add_partitions(
    broker: &Broker,
    topic: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), BrokerError> {
    let name = topic.name.as_str();
    let Some(existing) = broker.topic(name) else {
        return Err(BrokerError::UnknownTopicOrPartition {
            topic: name.to_string(),
            partition: -1,
        });
    };
    if broker.config.is_internal_topic(name) {
        return Err(BrokerError::InternalTopicAdmin {
            topic: name.to_string(),
            action: "add partitions to",
        });
    }
    let current = existing.partitions.len() as i32;
    if let (Some(assignments), true) = (&topic.assignments, topic.count > current) {
        check_added_assignments(broker, assignments, topic.count - current)?;
    }
    broker.create_partitions(name, topic.count, validate_only)
}

/// Explicit assignments of CreatePartitions: one per added partition, each naming this broker.
fn check_added_assignments(
    broker: &Broker,
    assignments: &[CreatePartitionsAssignment],
    added: i32,
) -> Result<(), BrokerError> {
    if assignments.len() != added as usize {
        return Err(BrokerError::InvalidReplicaAssignment(format!(
            "Attempted to add {added} additional partition(s), but only {} assignment(s) were \
             specified.",
            assignments.len()
        )));
    }
    for assignment in assignments {
        check_replicas(broker, &assignment.broker_ids)?;
    }
    Ok(())
}

/// One partition's replica list in a manual assignment (CreateTopics, CreatePartitions): Kafka's
/// checks, on a cluster whose only broker is this one, so the list must be exactly this broker.
pub(super) fn check_replicas(broker: &Broker, replicas: &[BrokerId]) -> Result<(), BrokerError> {
    let node_id = broker.config.node_id;
    let invalid = |message: String| Err(BrokerError::InvalidReplicaAssignment(message));
    if replicas.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    if let Some(unknown) = replicas.iter().find(|id| id.0 != node_id) {
        return invalid(format!(
            "The manual partition assignment includes broker {}, but no such broker is \
             registered (this cluster's only broker is {node_id}).",
            unknown.0
        ));
    }
    if replicas.len() > 1 {
        return invalid(format!(
            "The manual partition assignment includes the broker {node_id} more than once."
        ));
    }
    Ok(())
}

pub(super) fn partitions_result(
    name: TopicName,
    outcome: Result<(), BrokerError>,
) -> CreatePartitionsTopicResult {
    let mut result = CreatePartitionsTopicResult::default().with_name(name);
    if let Err(e) = outcome {
        result.error_code = e.code();
        result.error_message = Some(str_bytes(e.to_string()));
    }
    result
}

pub(super) fn delete_records(
    context: &RequestContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let broker = &context.broker;
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut result = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    match delete_partition_records(broker, &topic.name, p.partition_index, p.offset)
                    {
                        Ok(low_watermark) => result.low_watermark = low_watermark,
                        Err(e) => result.error_code = e.code(),
                    }
                    result
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}

fn delete_partition_records(
    broker: &Broker,
    topic: &str,
    index: i32,
    offset: i64,
) -> Result<i64, BrokerError> {
    let partition = broker.partition(topic, index)?;
    if broker.config.is_internal_topic(topic) {
        return Err(BrokerError::InternalTopicAdmin {
            topic: topic.to_string(),
            action: "delete records of",
        });
    }
    let low_watermark = partition.delete_records(offset)?;
    tracing::info!(topic, partition = index, low_watermark, "deleted records");
    Ok(low_watermark)
}

pub(super) fn describe_cluster(
    context: &RequestContext,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let broker = &context.broker;
    let config = &broker.config;
    let mut response = DescribeClusterResponse::default();
    if request.endpoint_type != ENDPOINT_TYPE_BROKER {
        // Kafka's codes: v0 has no endpoint types, so any mismatch there is a bad request.
        let (error, message) = match request.endpoint_type {
            _ if context.version == 0 => (ResponseError::InvalidRequest, "an unknown endpoint"),
            ENDPOINT_TYPE_CONTROLLER => (
                ResponseError::MismatchedEndpointType,
                "a controller; this is a broker",
            ),
            _ => (
                ResponseError::UnsupportedEndpointType,
                "an unknown endpoint",
            ),
        };
        response.error_code = error.code();
        response.error_message = Some(str_bytes(format!("the request asked for {message}")));
        return response;
    }
    response.cluster_id = str_bytes(broker.cluster_id());
    response.controller_id = config.node_id.into();
    response.brokers = vec![DescribeClusterBroker::default()
        .with_broker_id(config.node_id.into())
        .with_host(str_bytes(config.advertised_host.clone()))
        .with_port(config.advertised_port)];
    if let Some(node) = broker.cluster() {
        let image = node.image();
        response.controller_id = node.quorum.leader().map_or(-1, |l| l as i32).into();
        response.brokers = image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(b.id.into())
                    .with_host(str_bytes(b.host.clone()))
                    .with_port(b.port)
                    .with_rack(b.rack.clone().map(str_bytes))
            })
            .collect();
    }
    if request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = CLUSTER_OPERATIONS
            .iter()
            .fold(0, |bits, operation| bits | 1 << operation);
    }
    response
}

pub(super) fn describe_log_dirs(
    context: &RequestContext,
    request: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    let broker = &context.broker;
    // None asks for every partition; a list, for those of its partitions that exist.
    let wanted: Option<BTreeMap<String, BTreeSet<i32>>> = request.topics.map(|topics| {
        let mut wanted: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
        for topic in topics {
            wanted
                .entry(topic.topic.to_string())
                .or_default()
                .extend(topic.partitions);
        }
        wanted
    });
    let topics = local_replicas(broker)
        .into_iter()
        .filter_map(|(name, partitions)| {
            let indexes = match &wanted {
                None => None,
                Some(wanted) => Some(wanted.get(&name)?),
            };
            let partitions = describe_partitions(&partitions, indexes);
            (!partitions.is_empty()).then(|| {
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str_bytes(name)))
                    .with_partitions(partitions)
            })
        })
        .collect();
    let data_dir = &broker.config.data_dir;
    let log_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.clone());
    let (total_bytes, usable_bytes) = disk_space(data_dir).unwrap_or((-1, -1));
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(log_dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes);
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// The partitions whose logs this broker holds, by topic name, each topic's in index order:
/// its topics' partitions on a single node; in a cluster, its replicas, leaders and followers.
fn local_replicas(broker: &Broker) -> BTreeMap<String, Vec<Arc<Partition>>> {
    let mut replicas: BTreeMap<String, Vec<Arc<Partition>>> = BTreeMap::new();
    match broker.cluster() {
        Some(node) => {
            for partition in node.local_partitions() {
                let name = partition.topic.to_string();
                replicas.entry(name).or_default().push(partition);
            }
            for partitions in replicas.values_mut() {
                partitions.sort_by_key(|p| p.index);
            }
        }
        None => {
            for topic in broker.topics() {
                replicas.insert(topic.name.to_string(), topic.partitions.clone());
            }
        }
    }
    replicas
}

/// The partitions in `indexes` (all when `None`): size on disk and offset lag (see
/// [`Partition::offset_lag`]; always 0 on a single node, whose only replica leads).
fn describe_partitions(
    partitions: &[Arc<Partition>],
    indexes: Option<&BTreeSet<i32>>,
) -> Vec<DescribeLogDirsPartition> {
    partitions
        .iter()
        .filter(|p| indexes.is_none_or(|wanted| wanted.contains(&p.index)))
        .map(|p| {
            DescribeLogDirsPartition::default()
                .with_partition_index(p.index)
                .with_partition_size(p.log().lock().size_bytes() as i64)
                .with_offset_lag(p.offset_lag())
        })
        .collect()
}

/// Total and usable (free to unprivileged users) bytes of the file system holding `dir`.
fn disk_space(dir: &Path) -> Option<(i64, i64)> {
    let stats = rustix::fs::statvfs(dir).ok()?;
    let total = stats.f_blocks.checked_mul(stats.f_frsize)?;
    let usable = stats.f_bavail.checked_mul(stats.f_frsize)?;
    Some((i64::try_from(total).ok()?, i64::try_from(usable).ok()?))
}
