//! The group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit
//! and OffsetFetch; and the admin ones: ListGroups, DescribeGroups, DeleteGroups, OffsetDelete.
//! On a single node every group is coordinated here. In a cluster, the coordinator of a group is
//! the leader of its partition of `__consumer_offsets` (`group/load.rs`): FindCoordinator names
//! it, every group request elsewhere is answered NOT_COORDINATOR (COORDINATOR_LOAD_IN_PROGRESS
//! while the partition loads), and writes are answered once replicated to the in-sync set.
//!
//! Offset writes (commits and deletions) are appended to `__consumer_offsets` when the request
//! is dispatched, and an OffsetFetch waits for the writes to its partitions dispatched before it:
//! Kafka answers a connection's requests one at a time, so a client reading its offsets right
//! after an asynchronous commit sees that commit, and so it does here, though requests are
//! answered concurrently.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestContext};
use crate::broker::now_ms;
use crate::cluster::metadata::NO_LEADER;
use crate::error::{BrokerError, Result};
use crate::group::offsets::{self, Appended, Deletion};
use crate::group::{CommittedOffset, GroupDescription, JoinRequest, JoinStarted};
use crate::limits::{
    DESCRIBE_GROUPS_RESPONSE_BYTES_MAX, OFFSET_FETCH_WAIT_MS_MAX, OFFSET_METADATA_BYTES_MAX,
};

/// Longest group id whose offsets can be committed: `__consumer_offsets` records store it with
/// an i16 length.
const GROUP_ID_STORED_BYTES_MAX: usize = i16::MAX as usize;

/// Answers the coordinator of each key: this node on a single node; in a cluster, the leader of
/// the group's partition of `__consumer_offsets` (COORDINATOR_NOT_AVAILABLE while that topic is
/// being created or the partition has no leader: clients retry). v4+ batches keys.
pub(super) fn find_coordinator(
    context: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let key_type = request.key_type;
    if context.version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let coordinator = Coordinator::default().with_key(key.clone());
                match coordinator_for(context, key_type, &key) {
                    Ok((id, host, port)) => coordinator
                        .with_node_id(id.into())
                        .with_host(str_bytes(host))
                        .with_port(port),
                    Err(e) => coordinator
                        .with_node_id((-1).into())
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(e.to_string()))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match coordinator_for(context, key_type, &request.key) {
        Ok((id, host, port)) => FindCoordinatorResponse::default()
            .with_node_id(id.into())
            .with_host(str_bytes(host))
            .with_port(port),
        Err(e) => {
            let response = FindCoordinatorResponse::default()
                .with_error_code(e.code())
                .with_node_id((-1).into())
                .with_port(-1);
            match context.version >= 1 {
                true => response.with_error_message(Some(str_bytes(e.to_string()))),
                false => response,
            }
        }
    }
}

/// The coordinator of one key: (node id, host, port).
fn coordinator_for(
    context: &RequestContext,
    key_type: i8,
    key: &str,
) -> Result<(i32, String, i32)> {
    let broker = &context.broker;
    let unavailable = |why: String| BrokerError::CoordinatorNotAvailable(key.to_string(), why);
    // The coordinator is the leader of the key's partition of an internal topic.
    let (topic, partition) = match key_type {
        GROUP_KEY_TYPE => (offsets::OFFSETS_TOPIC, offsets::partition_for(key)),
        TRANSACTION_KEY_TYPE => (crate::txn::TXN_STATE_TOPIC, crate::txn::partition_for(key)),
        _ => {
            return Err(unavailable(
                "only groups and transactions have coordinators".into(),
            ))
        }
    };
    let Some(node) = broker.cluster() else {
        let config = &broker.config;
        return Ok((
            config.node_id,
            config.advertised_host.clone(),
            config.advertised_port,
        ));
    };
    let exists = match key_type {
        GROUP_KEY_TYPE => crate::GroupCoordinator::ensure_offsets_topic(broker),
        _ => crate::txn::TransactionCoordinator::ensure_topic(broker),
    };
    if !exists {
        return Err(unavailable(format!("{topic} is being created")));
    }
    let image = node.image();
    let leader = image
        .partition(topic, partition)
        .map_or(NO_LEADER, |p| p.leader);
    match image.brokers.get(&leader).filter(|b| !b.fenced) {
        Some(b) => Ok((b.id, b.host.clone(), b.port)),
        None => Err(unavailable(format!("its {topic} partition has no leader"))),
    }
}

/// FindCoordinator's key type of a consumer group.
const GROUP_KEY_TYPE: i8 = 0;
/// FindCoordinator's key type of a transactional id.
const TRANSACTION_KEY_TYPE: i8 = 1;

pub(super) async fn join_group(
    context: RequestContext,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let rebalance_timeout_ms = if context.version == 0 {
        request.session_timeout_ms
    } else {
        request.rebalance_timeout_ms
    };
    let join = JoinRequest {
        group_id: request.group_id.to_string(),
        member_id: request.member_id.to_string(),
        group_instance_id: request.group_instance_id.map(|s| s.to_string()),
        client_id: context.client_id.clone(),
        client_host: context.client_host.clone(),
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        session_timeout: Duration::from_millis(request.session_timeout_ms.max(1) as u64),
        rebalance_timeout: Duration::from_millis(rebalance_timeout_ms.max(1) as u64),
        require_known_member_id: context.version >= 4,
    };
    let failed = |e: &BrokerError, member_id: String| {
        JoinGroupResponse::default()
            .with_error_code(e.code())
            .with_generation_id(-1)
            .with_member_id(str_bytes(member_id))
    };
    let groups = &context.broker.groups;
    let joined = groups
        .check_coordinator(&context.broker, &join.group_id)
        .and_then(|()| groups.join(join));
    let receiver = match joined {
        Ok(JoinStarted::Waiting(receiver)) => receiver,
        Ok(JoinStarted::MemberIdRequired(id)) => return failed(&BrokerError::MemberIdRequired, id),
        Err(e) => return failed(&e, request.member_id.to_string()),
    };
    let outcome = match receiver.await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => return failed(&e, request.member_id.to_string()),
        Err(_) => {
            let e = BrokerError::RebalanceInProgress(request.group_id.to_string());
            return failed(&e, request.member_id.to_string());
        }
    };
    JoinGroupResponse::default()
        .with_generation_id(outcome.generation)
        .with_protocol_type(Some(str_bytes(outcome.protocol_type)))
        .with_protocol_name(Some(str_bytes(outcome.protocol_name)))
        .with_leader(str_bytes(outcome.leader))
        .with_member_id(str_bytes(outcome.member_id))
        .with_members(
            outcome
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(id))
                        .with_group_instance_id(instance.map(str_bytes))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}

pub(super) async fn sync_group(
    context: RequestContext,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let assignments = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let response = SyncGroupResponse::default()
        .with_protocol_type(request.protocol_type)
        .with_protocol_name(request.protocol_name);
    let groups = &context.broker.groups;
    let synced = groups
        .check_coordinator(&context.broker, &request.group_id)
        .and_then(|()| {
            groups.sync(
                &request.group_id,
                request.generation_id,
                &request.member_id,
                assignments,
            )
        });
    let receiver = match synced {
        Ok(receiver) => receiver,
        Err(e) => return response.with_error_code(e.code()),
    };
    // The leader's sync completes the rebalance: the group's record goes to disk before the
    // leader is answered, as Kafka answers once it has stored the group.
    let stored = offsets::append_group_metadata(&context.broker);
    let response = match receiver.await {
        Ok(Ok(assignment)) => response.with_assignment(assignment),
        Ok(Err(e)) => response.with_error_code(e.code()),
        Err(_) => response.with_error_code(ResponseError::RebalanceInProgress.code()),
    };
    if let Err(e) = settle(stored, &context.broker).await {
        tracing::warn!(error = %e, "group metadata did not reach disk");
    }
    response
}

pub(super) fn heartbeat(context: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let groups = &context.broker.groups;
    let result = groups
        .check_coordinator(&context.broker, &request.group_id)
        .and_then(|()| {
            groups.heartbeat(&request.group_id, request.generation_id, &request.member_id)
        });
    HeartbeatResponse::default().with_error_code(result.err().map_or(0, |e| e.code()))
}

pub(super) fn leave_group(
    context: &RequestContext,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let members: Vec<String> = if context.version >= 3 {
        request
            .members
            .iter()
            .map(|m| m.member_id.to_string())
            .collect()
    } else {
        vec![request.member_id.to_string()]
    };
    let groups = &context.broker.groups;
    if let Err(e) = groups.check_coordinator(&context.broker, &request.group_id) {
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    let results = groups.leave(&request.group_id, &members);
    offsets::persist_group_metadata(&context.broker);
    let mut response = LeaveGroupResponse::default();
    if context.version < 3 {
        response.error_code = results[0].as_ref().err().map_or(0, |e| e.code());
    } else {
        response.members = members
            .into_iter()
            .zip(results)
            .map(|(id, r)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(id))
                    .with_error_code(r.err().map_or(0, |e| e.code()))
            })
            .collect();
    }
    response
}

/// Validates a commit and appends its offsets now (so later requests on the connection see
/// them in order); the returned future answers once they are on disk.
pub(super) fn offset_commit(
    context: &RequestContext,
    request: OffsetCommitRequest,
) -> impl Future<Output = OffsetCommitResponse> + Send + 'static {
    let broker = Arc::clone(&context.broker);
    let check = if request.group_id.len() > GROUP_ID_STORED_BYTES_MAX {
        // `__consumer_offsets` stores the group id with an i16 length.
        Err(BrokerError::InvalidRequest(format!(
            "group id of {} bytes is longer than {GROUP_ID_STORED_BYTES_MAX}",
            request.group_id.len()
        )))
    } else {
        let groups = &broker.groups;
        groups
            .check_coordinator(&broker, &request.group_id)
            .and_then(|()| {
                groups.validate_commit(
                    &request.group_id,
                    request.generation_id_or_member_epoch,
                    &request.member_id,
                )
            })
    };
    let now = now_ms();
    let mut accepted = Vec::new();
    let mut topics = Vec::new();
    for topic in &request.topics {
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let metadata_bytes = p.committed_metadata.as_ref().map_or(0, |m| m.len());
            let error = match &check {
                Err(e) => e.code(),
                Ok(()) if metadata_bytes > OFFSET_METADATA_BYTES_MAX => {
                    ResponseError::OffsetMetadataTooLarge.code()
                }
                Ok(()) => match partition_exists(&broker, &topic.name, p.partition_index) {
                    Err(e) => e.code(),
                    Ok(_) => {
                        let committed = CommittedOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: p
                                .committed_metadata
                                .as_ref()
                                .map(|m| m.to_string())
                                .unwrap_or_default(),
                            // Only v1 carries a commit timestamp; -1 (the default)
                            // means now, as in Kafka.
                            commit_timestamp_ms: match p.commit_timestamp {
                                -1 => now,
                                timestamp => timestamp,
                            },
                        };
                        accepted.push((topic.name.to_string(), p.partition_index, Some(committed)));
                        0
                    }
                },
            };
            partitions.push((p.partition_index, error));
        }
        topics.push((topic.name.clone(), partitions));
    }
    let appended = offsets::append_commit(&broker, &request.group_id, accepted);
    async move {
        let stored = settle(appended, &broker).await;
        let topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, error)| {
                        let error = match (&stored, error) {
                            (Err(e), 0) => e.code(),
                            (_, error) => error,
                        };
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(index)
                            .with_error_code(error)
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }
}

/// Checks that a partition whose offset a group commits or deletes exists: in a cluster, in
/// the metadata image (the coordinator need not hold a replica of it, as in Kafka).
fn partition_exists(broker: &crate::Broker, topic: &str, partition: i32) -> Result<()> {
    let Some(node) = broker.cluster() else {
        return broker.partition(topic, partition).map(|_| ());
    };
    match node.image().partition(topic, partition) {
        Some(_) => Ok(()),
        None => Err(BrokerError::UnknownTopicOrPartition {
            topic: topic.to_string(),
            partition,
        }),
    }
}

/// Waits for an appended offset write to reach disk and apply.
async fn settle(appended: Result<Option<Appended>>, broker: &crate::Broker) -> Result<()> {
    match appended? {
        Some(appended) => appended.settle(&broker.groups.offsets).await,
        None => Ok(()),
    }
}

/// Answers with the group's committed offsets once the writes to them dispatched before this
/// request are on disk (at most [`OFFSET_FETCH_WAIT_MS_MAX`]). With `require_stable` (v7), a
/// partition whose offset still has a write pending, or was committed by a transaction not yet
/// ended (TxnOffsetCommit), is answered UNSTABLE_OFFSET_COMMIT, as Kafka
/// answers it, and the client retries.
pub(super) fn offset_fetch(
    context: &RequestContext,
    request: OffsetFetchRequest,
) -> impl Future<Output = OffsetFetchResponse> + Send + 'static {
    let broker = Arc::clone(&context.broker);
    let group = request.group_id.to_string();
    let checked = broker.groups.check_coordinator(&broker, &group);
    let version = context.version;
    let requested: Option<Vec<(TopicName, Vec<i32>)>> = request.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let partitions: Option<BTreeSet<(String, i32)>> = requested.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(|p| (t.to_string(), *p)))
            .collect()
    });
    // Fixed now, at dispatch: the writes sent before this request, not those sent after.
    let through = broker
        .groups
        .offsets
        .pending_through(&group, partitions.as_ref());
    let require_stable = request.require_stable;
    async move {
        if let Err(e) = checked {
            return offset_fetch_refused(version, &e, requested);
        }
        let store = &broker.groups.offsets;
        if let Some(through) = through {
            let wait = Duration::from_millis(OFFSET_FETCH_WAIT_MS_MAX);
            store
                .wait_settled(&group, partitions.as_ref(), through, wait)
                .await;
        }
        let requested = requested.unwrap_or_else(|| all_committed(&broker.groups, &group));
        let topics = requested
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|index| {
                        let unstable = store.is_pending(&group, &name, index)
                            || store.in_open_transaction(&group, &name, index);
                        if require_stable && unstable {
                            return OffsetFetchResponsePartition::default()
                                .with_partition_index(index)
                                .with_committed_offset(-1)
                                .with_metadata(Some(str_bytes("")))
                                .with_error_code(ResponseError::UnstableOffsetCommit.code());
                        }
                        let committed = store.committed(&group, &name, index);
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(index)
                            .with_committed_offset(committed.as_ref().map_or(-1, |c| c.offset))
                            .with_committed_leader_epoch(
                                committed.as_ref().map_or(-1, |c| c.leader_epoch),
                            )
                            .with_metadata(Some(str_bytes(
                                committed.map(|c| c.metadata).unwrap_or_default(),
                            )))
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }
}

/// OffsetFetch refused for the whole group (not its coordinator, or loading): v2+ say so at the
/// top level, v1 in every partition asked for, as Kafka answers them.
fn offset_fetch_refused(
    version: i16,
    error: &BrokerError,
    requested: Option<Vec<(TopicName, Vec<i32>)>>,
) -> OffsetFetchResponse {
    if version >= 2 {
        return OffsetFetchResponse::default().with_error_code(error.code());
    }
    let topics = requested
        .unwrap_or_default()
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|index| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(index)
                        .with_committed_offset(-1)
                        .with_metadata(Some(str_bytes("")))
                        .with_error_code(error.code())
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

/// Every partition a group has committed, by topic.
fn all_committed(groups: &crate::GroupCoordinator, group: &str) -> Vec<(TopicName, Vec<i32>)> {
    let mut all: Vec<(TopicName, Vec<i32>)> = Vec::new();
    for (topic, partition, _) in groups.committed_for_group(group) {
        match all.iter_mut().find(|(t, _)| t.as_str() == topic) {
            Some((_, ps)) => ps.push(partition),
            None => all.push((TopicName(str_bytes(topic)), vec![partition])),
        }
    }
    all
}

/// The group type ListGroups v5 reports: every group here runs the classic protocol.
const CLASSIC_GROUP_TYPE: &str = "classic";

/// Lists every group, filtered by state (v4+, case-insensitive) and type (v5: only `classic`
/// groups exist here, so any other type filter lists none, as Kafka's classic coordinator does).
pub(super) fn list_groups(
    context: &RequestContext,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let type_listed = request.types_filter.is_empty()
        || request
            .types_filter
            .iter()
            .any(|t| t.eq_ignore_ascii_case(CLASSIC_GROUP_TYPE));
    let broker = &context.broker;
    let groups = broker
        .groups
        .list()
        .into_iter()
        // In a cluster: only the groups coordinated here, as each Kafka broker lists its own.
        .filter(|g| broker.groups.coordinates(broker, &g.group_id))
        .filter(|g| type_listed && (states.is_empty() || states.contains(&g.state.to_lowercase())))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(str_bytes(g.group_id).into())
                .with_protocol_type(str_bytes(g.protocol_type))
                .with_group_state(str_bytes(g.state))
                .with_group_type(str_bytes(CLASSIC_GROUP_TYPE))
        })
        .collect();
    // Groups of a partition still loading are missing: say so, as Kafka does.
    let error_code = match broker.groups.loading() {
        true => ResponseError::CoordinatorLoadInProgress.code(),
        false => 0,
    };
    ListGroupsResponse::default()
        .with_error_code(error_code)
        .with_groups(groups)
}

/// What Kafka reports as a group's authorized operations when it has no authorizer: every
/// operation on a group (READ 3, DELETE 6, DESCRIBE 8), as a bit field.
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// Describes each group named (an unknown one is Dead, error NONE, as in Kafka). Descriptions
/// stop at [`DESCRIBE_GROUPS_RESPONSE_BYTES_MAX`]: groups past it are answered INVALID_REQUEST.
pub(super) fn describe_groups(
    context: &RequestContext,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let operations = (context.version >= 3 && request.include_authorized_operations)
        .then_some(GROUP_OPERATIONS_ALL);
    let mut bytes = 0usize;
    let groups = request
        .groups
        .into_iter()
        .map(|group_id| {
            let broker = &context.broker;
            if let Err(e) = broker.groups.check_coordinator(broker, &group_id) {
                return DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_error_code(e.code());
            }
            let description = broker.groups.describe(&group_id);
            bytes = bytes.saturating_add(description_bytes(&group_id, &description));
            if bytes > DESCRIBE_GROUPS_RESPONSE_BYTES_MAX {
                return DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_error_code(ResponseError::InvalidRequest.code());
            }
            described_group(group_id, description, operations)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// About how many bytes a group's description takes in a response.
fn description_bytes(group_id: &str, description: &GroupDescription) -> usize {
    let members: usize = description
        .members
        .iter()
        .map(|m| {
            let instance = m.group_instance_id.as_ref().map_or(0, |i| i.len());
            let strings = m.member_id.len() + instance + m.client_id.len() + m.client_host.len();
            strings + m.metadata.len() + m.assignment.len() + 32
        })
        .sum();
    group_id.len()
        + description.protocol_type.len()
        + description.protocol_name.len()
        + 32
        + members
}

fn described_group(
    group_id: GroupId,
    description: GroupDescription,
    operations: Option<i32>,
) -> DescribedGroup {
    let members = description
        .members
        .into_iter()
        .map(|m| {
            DescribedGroupMember::default()
                .with_member_id(str_bytes(m.member_id))
                .with_group_instance_id(m.group_instance_id.map(str_bytes))
                .with_client_id(str_bytes(m.client_id))
                .with_client_host(str_bytes(m.client_host))
                .with_member_metadata(m.metadata)
                .with_member_assignment(m.assignment)
        })
        .collect();
    let group = DescribedGroup::default()
        .with_group_id(group_id)
        .with_group_state(str_bytes(description.state))
        .with_protocol_type(str_bytes(description.protocol_type))
        .with_protocol_data(str_bytes(description.protocol_name))
        .with_members(members);
    match operations {
        Some(operations) => group.with_authorized_operations(operations),
        None => group,
    }
}

/// Deletes empty groups and their committed offsets, durably (tombstones in
/// `__consumer_offsets`); a group with members is NON_EMPTY_GROUP, an unknown one
/// GROUP_ID_NOT_FOUND. Each group is answered once, however often it is named, as in Kafka.
pub(super) fn delete_groups(
    context: &RequestContext,
    request: DeleteGroupsRequest,
) -> impl Future<Output = DeleteGroupsResponse> + Send + 'static {
    let broker = Arc::clone(&context.broker);
    let mut seen = HashSet::new();
    let names: Vec<GroupId> = request
        .groups_names
        .into_iter()
        .filter(|name| seen.insert(name.clone()))
        .collect();
    let started: Vec<(GroupId, Result<Option<Appended>>)> = names
        .into_iter()
        .map(|name| {
            // The group's tombstone goes before its offsets', so waiting for the last write
            // covers both.
            let groups = &broker.groups;
            let checked = groups.check_coordinator(&broker, &name);
            let appended = checked
                .and_then(|()| groups.check_delete(&name))
                .and_then(|()| {
                    let tombstone = offsets::append_group_metadata(&broker)?;
                    let deletion = offsets::append_deletion(&broker, &name, Deletion::Group)?;
                    Ok(deletion.or(tombstone))
                });
            (name, appended)
        })
        .collect();
    async move {
        let mut results = Vec::with_capacity(started.len());
        for (name, appended) in started {
            let deleted = settle(appended, &broker).await;
            if deleted.is_ok() {
                tracing::info!(group = %name.as_str(), "deleted group");
            }
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(name)
                    .with_error_code(deleted.err().map_or(0, |e| e.code())),
            );
        }
        DeleteGroupsResponse::default().with_results(results)
    }
}

/// Deletes a group's committed offsets of the partitions named, durably; partitions of topics
/// the group's active members subscribe to are refused GROUP_SUBSCRIBED_TO_TOPIC, and those of
/// unknown topics UNKNOWN_TOPIC_OR_PARTITION, as in Kafka. A group-level error (unknown group,
/// active group of another protocol) is answered alone, without partitions.
pub(super) fn offset_delete(
    context: &RequestContext,
    request: OffsetDeleteRequest,
) -> impl Future<Output = OffsetDeleteResponse> + Send + 'static {
    let broker = Arc::clone(&context.broker);
    let group = request.group_id.to_string();
    let topic_names: Vec<&str> = request.topics.iter().map(|t| t.name.as_str()).collect();
    let checked = broker
        .groups
        .check_coordinator(&broker, &group)
        .and_then(|()| broker.groups.check_offset_delete(&group, &topic_names));
    let mut answers: Vec<(TopicName, Vec<(i32, i16)>)> = Vec::new();
    let mut deletable: BTreeSet<(String, i32)> = BTreeSet::new();
    if let Ok(subscribed) = &checked {
        for (topic, subscribed) in request.topics.iter().zip(subscribed) {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let index = p.partition_index;
                    let error = match partition_exists(&broker, &topic.name, index) {
                        Err(e) => e.code(),
                        Ok(_) if *subscribed => ResponseError::GroupSubscribedToTopic.code(),
                        Ok(_) => {
                            deletable.insert((topic.name.to_string(), index));
                            0
                        }
                    };
                    (index, error)
                })
                .collect();
            answers.push((topic.name.clone(), partitions));
        }
    }
    let appended = match &checked {
        Ok(_) => offsets::append_deletion(&broker, &group, Deletion::Partitions(&deletable)),
        Err(_) => Ok(None),
    };
    async move {
        if let Err(e) = checked {
            return OffsetDeleteResponse::default().with_error_code(e.code());
        }
        let deleted = settle(appended, &broker).await;
        let topics = answers
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, error)| {
                        let error = match (&deleted, error) {
                            (Err(e), 0) => e.code(),
                            (_, error) => error,
                        };
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(index)
                            .with_error_code(error)
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetDeleteResponse::default().with_topics(topics)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::ApiKey;

    use super::*;
    use crate::protocol::round_trip;
    use crate::{Broker, BrokerConfig};

    /// Offset metadata is kept in memory and in `__consumer_offsets` (with an i16 length):
    /// Kafka's `offset.metadata.max.bytes` bounds it, and so does Eddy.
    #[tokio::test]
    async fn offset_metadata_over_4096_bytes_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        broker.create_topic("t", 2, BTreeMap::new()).expect("topic");
        let partition = |index, metadata_bytes| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(index)
                .with_committed_offset(0)
                .with_committed_metadata(Some(str_bytes("m".repeat(metadata_bytes))))
        };
        let request = OffsetCommitRequest::default()
            .with_group_id(str_bytes("g").into())
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(str_bytes("t")))
                .with_partitions(vec![partition(0, 4096), partition(1, 40_000)])]);
        let response: OffsetCommitResponse =
            round_trip(&broker, ApiKey::OffsetCommit, 8, &request).await;
        let codes: Vec<i16> = response.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, [0, ResponseError::OffsetMetadataTooLarge.code()]);
    }

    use crate::group::offsets::committed_for_tests as committed;

    /// An OffsetFetch frame for partition 0 of `t` in group `g`, dispatched but not yet run.
    fn dispatch_fetch(
        broker: &Arc<Broker>,
        require_stable: bool,
    ) -> tokio::task::JoinHandle<Option<bytes::BytesMut>> {
        use bytes::BytesMut;
        use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
        use kafka_protocol::messages::RequestHeader;
        use kafka_protocol::protocol::Encodable;
        let request = OffsetFetchRequest::default()
            .with_group_id(str_bytes("g").into())
            .with_require_stable(require_stable)
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(str_bytes("t")))
                .with_partition_indexes(vec![0])]));
        let mut frame = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::OffsetFetch as i16)
            .with_request_api_version(7)
            .with_correlation_id(1)
            .encode(&mut frame, ApiKey::OffsetFetch.request_header_version(7))
            .expect("header");
        request.encode(&mut frame, 7).expect("request");
        match crate::protocol::dispatch(broker, frame.freeze()).expect("valid") {
            crate::protocol::Pending::Later { task, .. } => task,
            _ => panic!("OffsetFetch is answered by a task"),
        }
    }

    fn decode_fetch(bytes: Option<bytes::BytesMut>) -> (i64, i16) {
        use bytes::Buf;
        use kafka_protocol::messages::ResponseHeader;
        use kafka_protocol::protocol::Decodable;
        let mut bytes = bytes.expect("encodes").freeze();
        bytes.advance(4);
        let header_version = ApiKey::OffsetFetch.response_header_version(7);
        ResponseHeader::decode(&mut bytes, header_version).expect("header");
        let response = OffsetFetchResponse::decode(&mut bytes, 7).expect("body");
        let partition = &response.topics[0].partitions[0];
        (partition.committed_offset, partition.error_code)
    }

    /// require_stable (OffsetFetch v7) refuses an offset with a write still on its way to disk
    /// (UNSTABLE_OFFSET_COMMIT, which clients retry), as Kafka does; without it the offset on
    /// disk is answered. Method: on a single-threaded runtime, dispatch the fetches (their tasks
    /// cannot run yet), append a commit without letting it settle, then run the fetches.
    #[tokio::test]
    async fn require_stable_refuses_an_offset_with_a_write_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
        offsets::commit(&broker, "g", vec![("t".to_string(), 0, committed(5))])
            .await
            .expect("first commit");
        let stable = dispatch_fetch(&broker, true);
        let plain = dispatch_fetch(&broker, false);
        let second = vec![("t".to_string(), 0, Some(committed(9)))];
        let pending = offsets::append_commit(&broker, "g", second)
            .expect("append")
            .expect("a write");
        let unstable = ResponseError::UnstableOffsetCommit.code();
        assert_eq!(decode_fetch(stable.await.expect("task")), (-1, unstable));
        assert_eq!(decode_fetch(plain.await.expect("task")), (5, 0));
        pending
            .settle(&broker.groups.offsets)
            .await
            .expect("settles");
        assert_eq!(
            decode_fetch(dispatch_fetch(&broker, true).await.expect("task")),
            (9, 0)
        );
    }
}
