//! The group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit
//! and OffsetFetch. Every group is coordinated by this node.

use std::time::Duration;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestContext};
use crate::broker::now_ms;
use crate::error::BrokerError;
use crate::group::{offsets, CommittedOffset, JoinRequest, JoinStarted};
use crate::limits::OFFSET_METADATA_BYTES_MAX;

/// Longest group id whose offsets can be committed: `__consumer_offsets` records store it with
/// an i16 length.
const GROUP_ID_STORED_BYTES_MAX: usize = i16::MAX as usize;

pub(super) fn find_coordinator(
    context: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let config = &context.broker.config;
    let host = str_bytes(config.advertised_host.clone());
    if context.version >= 4 {
        // v4+ batches keys; not advertised yet, kept for when it is.
        return FindCoordinatorResponse::default().with_coordinators(vec![Coordinator::default()
            .with_key(request.key)
            .with_node_id(config.node_id.into())
            .with_host(host)
            .with_port(config.advertised_port)]);
    }
    FindCoordinatorResponse::default()
        .with_node_id(config.node_id.into())
        .with_host(host)
        .with_port(config.advertised_port)
}

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
    let receiver = match context.broker.groups.join(join) {
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
    let receiver = match context.broker.groups.sync(
        &request.group_id,
        request.generation_id,
        &request.member_id,
        assignments,
    ) {
        Ok(receiver) => receiver,
        Err(e) => return response.with_error_code(e.code()),
    };
    match receiver.await {
        Ok(Ok(assignment)) => response.with_assignment(assignment),
        Ok(Err(e)) => response.with_error_code(e.code()),
        Err(_) => response.with_error_code(ResponseError::RebalanceInProgress.code()),
    }
}

pub(super) fn heartbeat(context: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let result = context.broker.groups.heartbeat(
        &request.group_id,
        request.generation_id,
        &request.member_id,
    );
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
    let results = context.broker.groups.leave(&request.group_id, &members);
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

pub(super) async fn offset_commit(
    context: RequestContext,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let broker = &context.broker;
    let check = if request.group_id.len() > GROUP_ID_STORED_BYTES_MAX {
        // `__consumer_offsets` stores the group id with an i16 length.
        Err(BrokerError::InvalidRequest(format!(
            "group id of {} bytes is longer than {GROUP_ID_STORED_BYTES_MAX}",
            request.group_id.len()
        )))
    } else {
        broker.groups.validate_commit(
            &request.group_id,
            request.generation_id_or_member_epoch,
            &request.member_id,
        )
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
                Ok(()) => match broker.partition(&topic.name, p.partition_index) {
                    Err(e) => e.code(),
                    Ok(_) => {
                        accepted.push((
                            topic.name.to_string(),
                            p.partition_index,
                            CommittedOffset {
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
                            },
                        ));
                        0
                    }
                },
            };
            partitions.push((p.partition_index, error));
        }
        topics.push((topic.name.clone(), partitions));
    }
    let stored = offsets::commit(broker, &request.group_id, accepted).await;
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

pub(super) fn offset_fetch(
    context: &RequestContext,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let groups = &context.broker.groups;
    let group = request.group_id.to_string();
    let requested: Vec<(TopicName, Vec<i32>)> = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect(),
        None => {
            let mut all: Vec<(TopicName, Vec<i32>)> = Vec::new();
            for (topic, partition, _) in groups.committed_for_group(&group) {
                match all.iter_mut().find(|(t, _)| t.as_str() == topic) {
                    Some((_, ps)) => ps.push(partition),
                    None => all.push((TopicName(str_bytes(topic)), vec![partition])),
                }
            }
            all
        }
    };
    let topics = requested
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|index| {
                    let committed = groups.committed(&group, &name, index);
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
}
