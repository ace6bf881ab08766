//! A follower's fetcher: copies one partition from its leader, Kafka's way.
//!
//! On starting to follow a leader in an epoch, the follower first finds where its log and the
//! leader's agree (KIP-101, KIP-279): it asks the leader, with OffsetsForLeaderEpoch, where the
//! follower's latest epoch ends in the leader's log, and truncates its own log there (or where
//! that epoch ends in its own log, if the leader only knows an older epoch). Then it fetches
//! from its log end offset with its broker id as replica id, appends the leader's batches as
//! they are (offsets and epochs kept), and takes the high watermark and the log start offset
//! from the answers (the latter never past its own high watermark), so records the leader
//! deleted (DeleteRecords, retention) go from the followers too. For topics that fsync before
//! acknowledging, it syncs what it appended before the next fetch: the fetch offset tells the
//! leader what the follower holds, so it must be on disk first.
//!
//! The fetcher ends when the partition's role changes; the node starts another for a new
//! leader or epoch.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::ResponseError;

use super::node::ClusterNode;
use super::replica::Role;
use crate::broker::now_ms;
use crate::error::{BrokerError, Result};
use crate::kafka_client::connection::{Lane, Retry};
use crate::partition::Partition;
use crate::protocol::str_bytes;

const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// `replica.fetch.max.bytes`: at most this much of one partition per fetch.
const REPLICA_FETCH_BYTES_MAX: i32 = 1 << 20;
/// Pause after a failed round before the next one.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Follows `leader` in `leader_epoch` for as long as the partition's role says so.
pub async fn follow(
    node: Arc<ClusterNode>,
    partition: Arc<Partition>,
    (leader, leader_epoch): (i32, i32),
) {
    let following = Role::Follower {
        leader,
        leader_epoch,
    };
    let mut truncated = false;
    while partition.role() == following {
        let Some(address) = node.broker_address(leader) else {
            tokio::time::sleep(RETRY_BACKOFF).await;
            continue;
        };
        let round = if truncated {
            fetch(&node, &partition, &address, leader_epoch).await
        } else {
            truncate(&node, &partition, &address, leader_epoch).await
        };
        match round {
            Ok(()) => truncated = true,
            Err(e) => {
                tracing::debug!(topic = %partition.topic, partition = partition.index, leader,
                    error = %e, "replica fetch failed; retrying");
                tokio::time::sleep(RETRY_BACKOFF).await;
            }
        }
    }
}

/// Truncates the local log to where it agrees with the leader's (KIP-279).
async fn truncate(
    node: &ClusterNode,
    partition: &Partition,
    address: &str,
    leader_epoch: i32,
) -> Result<()> {
    let Some(local_epoch) = partition.log().lock().latest_epoch() else {
        // An empty log (or one written before epochs): everything in it is below any leader's.
        return Ok(());
    };
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(node.config.node_id))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(str_bytes(partition.topic.to_string())))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition.index)
                .with_current_leader_epoch(leader_epoch)
                .with_leader_epoch(local_epoch)])]);
    let response = node
        .connections
        .send(
            address,
            Lane::Control,
            Retry::Safe,
            OFFSET_FOR_LEADER_EPOCH_VERSION,
            &request,
            Duration::ZERO,
        )
        .await?;
    let answer = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| BrokerError::Internal("empty OffsetsForLeaderEpoch answer".into()))?;
    check(answer.error_code)?;
    let end = if answer.end_offset < 0 {
        // The leader knows no epoch this old: keep only what is committed.
        partition.high_watermark()
    } else if answer.leader_epoch == local_epoch {
        answer.end_offset
    } else {
        // The leader's log has an older epoch where ours has `local_epoch`: we agree at most
        // up to where that older epoch ends in both logs.
        let (_, local_end) = partition.end_offset_for_epoch(answer.leader_epoch);
        answer.end_offset.min(local_end.max(0))
    };
    if end < partition.log_end_offset() {
        tracing::info!(topic = %partition.topic, partition = partition.index,
            from = partition.log_end_offset(), to = end, "truncating a diverged follower");
    }
    partition.truncate_to(end, leader_epoch)?;
    Ok(())
}

/// One fetch from the leader, appended.
async fn fetch(
    node: &ClusterNode,
    partition: &Partition,
    address: &str,
    leader_epoch: i32,
) -> Result<()> {
    let fetch_offset = partition.log_end_offset();
    let wait = node.config.replica_fetch_wait_max;
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(node.config.node_id))
        .with_max_wait_ms(wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(REPLICA_FETCH_BYTES_MAX)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(str_bytes(partition.topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition.index)
                .with_current_leader_epoch(leader_epoch)
                .with_fetch_offset(fetch_offset)
                .with_log_start_offset(partition.log_start_offset())
                .with_partition_max_bytes(REPLICA_FETCH_BYTES_MAX)])]);
    let response = node
        .connections
        .send(
            address,
            Lane::Fetch,
            Retry::Safe,
            FETCH_VERSION,
            &request,
            wait,
        )
        .await?;
    check(response.error_code)?;
    let answer = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| BrokerError::Internal("empty fetch answer".into()))?;
    if answer.error_code == ResponseError::OffsetOutOfRange.code() {
        if fetch_offset < answer.log_start_offset {
            // The leader deleted what we would fetch next (retention): start where it starts.
            partition.truncate_fully_and_start_at(answer.log_start_offset, leader_epoch)?;
            return Ok(());
        }
        // Past the leader's log end: our log holds what the leader's does not. Cut it back
        // to the high watermark (committed, so the leader has it) and fetch from there.
        let committed = answer.high_watermark.min(partition.log_end_offset());
        partition.truncate_to(committed.max(0), leader_epoch)?;
        return Ok(());
    }
    check(answer.error_code)?;
    if let Some(records) = answer.records.as_ref().filter(|r| !r.is_empty()) {
        // Refused (and nothing written) if the role changed while the fetch was in flight.
        let mut records = BytesMut::from(&records[..]);
        let info = partition.append_as_follower(&mut records, now_ms(), leader_epoch)?;
        if partition.fsync_before_ack() && info.last_offset >= 0 {
            partition.wait_durable(info.last_offset).await?;
        }
    }
    partition.follower_high_watermark(answer.high_watermark);
    partition.follower_log_start_offset(answer.log_start_offset, leader_epoch)?;
    Ok(())
}

fn check(code: i16) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    let name = ResponseError::try_from_code(code).map_or("unknown".into(), |e| format!("{e:?}"));
    Err(BrokerError::InvalidRequest(format!(
        "the leader answered {code} {name}"
    )))
}
