//! Produce: append each partition's batches now, acknowledge when the durability promise holds.
//!
//! acks=0 gets no response. acks=1 and acks=-1 are answered once the batches are in the log and,
//! for topics with `flush.messages=1`, synced to disk (on a single node every replica is the
//! leader, so the two mean the same).
//!
//! Before anything is stored, every batch is checked whole (`batch::validate_produced`: CRC,
//! record framing, offset deltas, decompressed size), and internal topics are refused with
//! INVALID_TOPIC_EXCEPTION, as Kafka answers "Cannot append to internal topic": only the broker
//! itself writes them, through its Rust API (the group coordinator's `__consumer_offsets`, the
//! embedded engine's topics in `BrokerConfig::internal_topics`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{Pending, RequestContext};
use crate::broker::{now_ms, Broker};
use crate::error::BrokerError;
use crate::limits::BATCH_UNCOMPRESSED_BYTES_MAX;
use crate::log::batch::{validate_produced, BatchHeader};
use crate::log::AppendInfo;
use crate::partition::Partition;

/// Appends synchronously (preserving arrival order), then answers from a task.
pub(super) fn handle(context: RequestContext, request: ProduceRequest) -> Pending {
    let acks = request.acks;
    let mut responses = Vec::new();
    let mut waits = Vec::new();
    for topic in request.topic_data {
        let mut partitions = Vec::new();
        for data in topic.partition_data {
            let mut response = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let outcome = if !matches!(acks, -1..=1) {
                Err(BrokerError::InvalidRequiredAcks(acks))
            } else {
                append(&context.broker, &topic.name, data.index, data.records)
            };
            match outcome {
                Ok((partition, info)) => {
                    response.base_offset = info.base_offset;
                    response.log_start_offset = partition.log_start_offset();
                    if acks != 0 && partition.fsync_before_ack() {
                        waits.push((partition, info.last_offset));
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = %topic.name.0, partition = data.index, error = %e, "produce refused");
                    response.error_code = e.code();
                    response.error_message = Some(super::str_bytes(e.to_string()));
                }
            }
            partitions.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    if acks == 0 {
        return Pending::Silent;
    }
    context.later(async move {
        for (partition, last_offset) in waits {
            if let Err(e) = partition.wait_durable(last_offset).await {
                tracing::error!(error = %e, "waiting for durability failed");
            }
        }
        ProduceResponse::default().with_responses(responses)
    })
}

/// Checks and appends one partition's records from a client.
fn append(
    broker: &Broker,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
) -> crate::error::Result<(Arc<Partition>, AppendInfo)> {
    if broker.config.is_internal_topic(topic) {
        return Err(BrokerError::InternalTopic(topic.to_string()));
    }
    let partition = broker.partition(topic, index)?;
    let records = records.unwrap_or_default();
    let max_message_bytes = partition.log().lock().config().max_message_bytes;
    check_batches(&records, max_message_bytes)?;
    let mut batch = BytesMut::from(&records[..]);
    let info = partition.append(&mut batch, now_ms())?;
    Ok((partition, info))
}

/// Validates every batch in a produce request's records, refusing a batch above
/// `max.message.bytes` before reading (or decompressing) its records.
fn check_batches(records: &[u8], max_message_bytes: i32) -> crate::error::Result<()> {
    let corrupt = |e: crate::log::batch::BatchError| BrokerError::CorruptMessage(e.to_string());
    let mut rest = records;
    while !rest.is_empty() {
        let size = BatchHeader::parse(rest).map_err(corrupt)?.total_bytes();
        if size > max_message_bytes.max(0) as usize {
            return Err(BrokerError::MessageTooLarge {
                size,
                max: max_message_bytes,
            });
        }
        validate_produced(rest, BATCH_UNCOMPRESSED_BYTES_MAX).map_err(corrupt)?;
        rest = &rest[size..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use bytes::BytesMut;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, TopicName};
    use kafka_protocol::ResponseError;

    use super::*;
    use crate::group::{offsets, CommittedOffset};
    use crate::log::batch::BatchBuilder;
    use crate::protocol::{round_trip, str_bytes};
    use crate::BrokerConfig;

    fn batch(records: usize) -> BytesMut {
        let mut builder = BatchBuilder::new(1_000, 256);
        for _ in 0..records {
            builder.push(1_000, Some(b"k"), Some(b"v"), &[]);
        }
        builder.finish()
    }

    /// Error codes of a produce of `records` to partition 0 of `topic`, over the protocol.
    async fn produce(broker: &Arc<Broker>, topic: &str, records: BytesMut) -> Vec<i16> {
        let request = ProduceRequest::default().with_acks(1).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records.freeze()))]),
        ]);
        let response: ProduceResponse = round_trip(broker, ApiKey::Produce, 9, &request).await;
        response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code))
            .collect()
    }

    /// Kafka clients may not write the broker's topics; the broker itself (the group
    /// coordinator, the embedded engine through the Rust API) still can.
    #[tokio::test]
    async fn internal_topics_refuse_clients_but_not_the_broker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(dir.path());
        config.internal_topics = BTreeSet::from(["eddy_commands".to_string()]);
        let broker = Broker::open(config).await.expect("open");
        for name in ["eddy_commands", "__private", "t"] {
            broker
                .create_topic(name, 1, BTreeMap::new())
                .expect("topic");
        }
        let invalid_topic = ResponseError::InvalidTopicException.code();
        assert_eq!(
            produce(&broker, "eddy_commands", batch(1)).await,
            [invalid_topic]
        );
        assert_eq!(
            produce(&broker, "__private", batch(1)).await,
            [invalid_topic]
        );
        assert_eq!(produce(&broker, "t", batch(1)).await, [0]);
        let in_process = broker.partition("eddy_commands", 0).expect("partition");
        in_process
            .append(&mut batch(1), 1_000)
            .expect("the broker writes its own topic");
        assert_eq!(in_process.high_watermark(), 1);
        let committed = CommittedOffset {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: 1_000,
        };
        offsets::commit(&broker, "g", vec![("t".into(), 0, committed)])
            .await
            .expect("the coordinator writes __consumer_offsets");
    }

    /// A batch whose header claims more records than it holds (with a valid CRC, so only
    /// reading the records shows it) is refused before it reaches the log.
    #[tokio::test]
    async fn a_batch_claiming_more_records_than_it_holds_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
        let mut lying = batch(2);
        lying[23..27].copy_from_slice(&2i32.to_be_bytes()); // last offset delta
        lying[57..61].copy_from_slice(&3i32.to_be_bytes()); // record count
        let crc = crc32c::crc32c(&lying[21..]);
        lying[17..21].copy_from_slice(&crc.to_be_bytes());
        let corrupt = ResponseError::CorruptMessage.code();
        assert_eq!(produce(&broker, "t", lying).await, [corrupt]);
        let partition = broker.partition("t", 0).expect("partition");
        assert_eq!(partition.high_watermark(), 0, "nothing was stored");
        assert_eq!(produce(&broker, "t", batch(2)).await, [0]);
    }
}
