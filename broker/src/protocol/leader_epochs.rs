//! OffsetsForLeaderEpoch (API key 23, v0-4): where a leader epoch ends in a partition's log.
//!
//! A follower asks its leader this after a leader change (KIP-101): for the latest epoch in
//! its own log, the leader answers the largest epoch it has at or below that one and the
//! offset where it ends, and the follower truncates there (KIP-279 made the answered epoch
//! part of the response, v1+, so two quick failovers truncate right too). Consumers ask it to
//! detect truncation after a leader change (KIP-320, v2+ with `current_leader_epoch`).
//!
//! Each partition is answered from [`crate::log::Log::end_offset_for_epoch`]: an unknown topic
//! or partition gets UNKNOWN_TOPIC_OR_PARTITION, an epoch the log does not know gets no error
//! with epoch -1 and end offset -1, as Kafka answers. v3+ carries the follower's `replica_id`
//! (-1 for consumers, -2 for debugging tools); it is accepted and not yet used.

use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::RequestContext;
use crate::broker::Broker;

pub(super) fn offsets_for_leader_epoch(
    context: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let broker = &context.broker;
    // v0-2 have no replica id: a consumer asking.
    let replica_id = request.replica_id.0;
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| epoch_end_offset(broker, (&topic.topic, replica_id), p))
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

/// The replica id of a debugging tool, answered by any replica.
const DEBUGGING_REPLICA_ID: i32 = -2;

/// One partition's answer.
fn epoch_end_offset(
    broker: &Broker,
    (topic, request_replica_id): (&str, i32),
    request: &OffsetForLeaderPartition,
) -> EpochEndOffset {
    let mut result = EpochEndOffset::default().with_partition(request.partition);
    let partition = match broker.partition(topic, request.partition) {
        Ok(partition) => partition,
        Err(e) => {
            result.error_code = e.code();
            return result;
        }
    };
    // Kafka's `Partition.lastOffsetForLeaderEpoch`: only the leader answers (a debugging
    // tool, replica id -2, may ask any replica), in the epoch the asker names (-1: no check).
    if request_replica_id != DEBUGGING_REPLICA_ID {
        if let Err(e) = partition.check_leader(request.current_leader_epoch) {
            result.error_code = e.code();
            return result;
        }
    }
    let (leader_epoch, end_offset) = partition.end_offset_for_epoch(request.leader_epoch);
    result.leader_epoch = leader_epoch;
    result.end_offset = end_offset;
    result
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderTopic;
    use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};
    use kafka_protocol::ResponseError;

    use super::*;
    use crate::log::batch::BatchBuilder;
    use crate::protocol::{round_trip, str_bytes};

    fn one_record() -> BytesMut {
        let mut builder = BatchBuilder::new(0, 64);
        builder.push(0, Some(b"k"), Some(b"v"), &[]);
        builder.finish()
    }

    fn request(topic: &str, partitions: &[(i32, i32)]) -> OffsetForLeaderEpochRequest {
        let partitions = partitions
            .iter()
            .map(|(partition, epoch)| {
                OffsetForLeaderPartition::default()
                    .with_partition(*partition)
                    .with_leader_epoch(*epoch)
            })
            .collect();
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(TopicName(str_bytes(topic)))
                .with_partitions(partitions)])
    }

    /// (error code, leader epoch, end offset) per partition of the only topic.
    fn answers(response: &OffsetForLeaderEpochResponse) -> Vec<(i16, i32, i64)> {
        response.topics[0]
            .partitions
            .iter()
            .map(|p| (p.error_code, p.leader_epoch, p.end_offset))
            .collect()
    }

    /// Goal: each version answers each partition from its log's epoch cache. Method: a
    /// partition led in epochs 0 (offsets 0-1), 2 (2-4) and 5 (5), asked about epochs below,
    /// between, at and above them, at v4 (with replica_id) and v0 (no leader epoch in the
    /// answer: it decodes as -1), plus a partition that does not exist.
    #[tokio::test]
    async fn answers_each_partition_from_the_epoch_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(crate::BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        broker
            .create_topic("t", 1, Default::default())
            .expect("topic");
        let partition = broker.partition("t", 0).expect("partition");
        for (epoch, records) in [(0, 2), (2, 3), (5, 1)] {
            partition.log().lock().become_leader(epoch).expect("leader");
            for _ in 0..records {
                partition.append(&mut one_record(), 0).expect("append");
            }
        }
        let asked = request(
            "t",
            &[(0, 0), (0, 1), (0, 2), (0, 4), (0, 5), (0, 9), (7, 0)],
        );
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        let response: OffsetForLeaderEpochResponse =
            round_trip(&broker, ApiKey::OffsetForLeaderEpoch, 4, &asked).await;
        assert_eq!(
            answers(&response),
            [
                (0, 0, 2),
                (0, 0, 2),
                (0, 2, 5),
                (0, 2, 5),
                (0, 5, 6),
                (0, -1, -1),
                (unknown, -1, -1),
            ]
        );
        let response: OffsetForLeaderEpochResponse =
            round_trip(&broker, ApiKey::OffsetForLeaderEpoch, 0, &asked).await;
        let end_offsets: Vec<(i16, i64)> = answers(&response)
            .iter()
            .map(|(e, _, o)| (*e, *o))
            .collect();
        assert_eq!(
            end_offsets,
            [
                (0, 2),
                (0, 2),
                (0, 5),
                (0, 5),
                (0, 6),
                (0, -1),
                (unknown, -1)
            ]
        );
        assert!(answers(&response).iter().all(|(_, epoch, _)| *epoch == -1));
        let missing = request("nope", &[(0, 0)]);
        let response: OffsetForLeaderEpochResponse =
            round_trip(&broker, ApiKey::OffsetForLeaderEpoch, 2, &missing).await;
        assert_eq!(answers(&response), [(unknown, -1, -1)]);
    }
}
