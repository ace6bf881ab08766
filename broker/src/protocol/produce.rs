//! Produce: append each partition's batches now, acknowledge when the durability promise holds.
//!
//! acks=0 gets no response. acks=1 is answered once the batches are in the leader's log and,
//! for topics with `flush.messages=1`, synced to its disk. acks=-1 (all) is refused before
//! anything is written while fewer than `min.insync.replicas` replicas are in sync, and answered
//! once every in-sync replica holds the batches (see `partition.rs`); on a single node the
//! broker is the only replica, so acks=1 and acks=-1 mean the same. A broker that does not lead
//! the partition answers NOT_LEADER_OR_FOLLOWER.
//!
//! Produce v2 may carry a message set of magic 0 or 1 instead of v2 batches: it is up-converted
//! to one v2 batch first (`log/message_set.rs`), as Kafka does, and then treated like any other.
//!
//! Before anything is stored, every batch is checked whole (`batch::validate_produced`: CRC,
//! record framing, offset deltas, decompressed size), and internal topics are refused with
//! INVALID_TOPIC_EXCEPTION, as Kafka answers "Cannot append to internal topic": only the broker
//! itself writes them, through its Rust API (the group coordinator's `__consumer_offsets`, the
//! embedded engine's topics in `BrokerConfig::internal_topics`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{Pending, RequestContext};
use crate::broker::{now_ms, Broker};
use crate::error::{BrokerError, RecordErrors};
use crate::limits::{BATCH_UNCOMPRESSED_BYTES_MAX, RECORD_ERRORS_MAX};
use crate::log::batch::{validate_produced, BatchError, BatchHeader};
use crate::log::message_set::{self, up_convert, MessageSetError};
use crate::log::AppendInfo;
use crate::partition::Partition;

/// Appends synchronously (preserving arrival order), then answers from a task.
pub(super) fn handle(context: RequestContext, request: ProduceRequest) -> Pending {
    let acks = request.acks;
    let timeout_ms = request.timeout_ms;
    let mut record_errors_left = RECORD_ERRORS_MAX;
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
                append(
                    &context.broker,
                    (&topic.name, data.index),
                    data.records,
                    acks,
                    context.version,
                )
            };
            match outcome {
                Ok((partition, info, leader_epoch)) => {
                    response.base_offset = info.base_offset;
                    response.log_start_offset = partition.log_start_offset();
                    let durable = partition.fsync_before_ack();
                    if acks == -1 || (acks == 1 && durable) {
                        let at = (responses.len(), partitions.len());
                        waits.push((at, partition, info.last_offset, leader_epoch, durable));
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = %topic.name.0, partition = data.index, error = %e, "produce refused");
                    response.error_code = e.code();
                    response.error_message = Some(super::str_bytes(e.to_string()));
                    response.record_errors = record_errors(&e, &mut record_errors_left);
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
        for ((topic, index), partition, last_offset, leader_epoch, durable) in waits {
            let mut waited = Ok(());
            if durable {
                waited = partition.wait_durable(last_offset).await;
            }
            if waited.is_ok() && acks == -1 {
                waited = partition
                    .wait_replicated(last_offset, leader_epoch, timeout_ms)
                    .await;
            }
            if let Err(e) = waited {
                tracing::debug!(topic = %partition.topic, partition = partition.index,
                    error = %e, "produce not acknowledged");
                let answer = &mut responses[topic].partition_responses[index];
                answer.error_code = e.code();
                answer.error_message = Some(super::str_bytes(e.to_string()));
            }
        }
        ProduceResponse::default().with_responses(responses)
    })
}

/// The `record_errors` entries for `error`, while `left` lasts (v8+ carry them).
fn record_errors(error: &BrokerError, left: &mut usize) -> Vec<BatchIndexAndErrorMessage> {
    let BrokerError::InvalidRecords(refused) = error else {
        return Vec::new();
    };
    let RecordErrors {
        record_message,
        indices,
        ..
    } = &**refused;
    let shown = indices.len().min(*left);
    *left -= shown;
    indices[..shown]
        .iter()
        .map(|index| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(*index)
                .with_batch_index_error_message(Some(super::str_bytes(record_message.clone())))
        })
        .collect()
}

/// Checks and appends one partition's records from a client. Returns the partition, where the
/// records went, and the leader epoch they were written in.
fn append(
    broker: &Broker,
    (topic, index): (&str, i32),
    records: Option<Bytes>,
    acks: i16,
    version: i16,
) -> crate::error::Result<(Arc<Partition>, AppendInfo, i32)> {
    if broker.config.is_internal_topic(topic) {
        return Err(BrokerError::InternalTopic(topic.to_string()));
    }
    let partition = broker.partition(topic, index)?;
    partition.check_leader(-1)?;
    if acks == -1 {
        partition.check_min_insync(crate::broker::now_ms())?;
    }
    let leader_epoch = partition.leader_epoch();
    let (max_message_bytes, keys_required) = {
        let log = partition.log().lock();
        let config = log.config();
        (config.max_message_bytes, config.cleanup_policy.compacts())
    };
    let mut records = records.unwrap_or_default();
    if version < MAGIC_2_PRODUCE_VERSION_MIN && message_set::is_legacy(&records) {
        // Each message of the set stands for a batch: Kafka holds each to max.message.bytes.
        let size = message_set::largest_message_bytes(&records);
        if size > max_message_bytes.max(0) as usize {
            return Err(BrokerError::MessageTooLarge {
                size,
                max: max_message_bytes,
            });
        }
        records = up_convert(&records, BATCH_UNCOMPRESSED_BYTES_MAX)
            .map_err(legacy_refused)?
            .freeze();
    }
    check_batches(&records, max_message_bytes, keys_required, &partition)?;
    let mut batch = BytesMut::from(&records[..]);
    let info = partition.append(&mut batch, now_ms())?;
    Ok((partition, info, leader_epoch))
}

/// Validates every batch in a produce request's records, refusing a batch above
/// `max.message.bytes` before reading (or decompressing) its records. The first batch refused
/// decides the error, as in Kafka.
fn check_batches(
    records: &[u8],
    max_message_bytes: i32,
    keys_required: bool,
    partition: &Partition,
) -> crate::error::Result<()> {
    let refused = |e: BatchError| match e {
        BatchError::KeylessRecords { indices, count } => keyless_records(partition, indices, count),
        other => BrokerError::CorruptMessage(other.to_string()),
    };
    let mut rest = records;
    while !rest.is_empty() {
        let size = BatchHeader::parse(rest).map_err(refused)?.total_bytes();
        if size > max_message_bytes.max(0) as usize {
            return Err(BrokerError::MessageTooLarge {
                size,
                max: max_message_bytes,
            });
        }
        validate_produced(rest, BATCH_UNCOMPRESSED_BYTES_MAX, keys_required).map_err(refused)?;
        rest = &rest[size..];
    }
    Ok(())
}

/// The first Produce version whose records must be v2 batches; older ones may carry message
/// sets of magic 0 or 1, which are up-converted before anything else, as Kafka does.
const MAGIC_2_PRODUCE_VERSION_MIN: i16 = 3;

/// The error for a message set that could not be up-converted.
fn legacy_refused(error: MessageSetError) -> BrokerError {
    match error {
        MessageSetError::Corrupt(why) => BrokerError::CorruptMessage(why),
        MessageSetError::Invalid(why) => BrokerError::InvalidRecords(Box::new(RecordErrors {
            summary: why.clone(),
            record_message: why,
            indices: Vec::new(),
        })),
    }
}

/// Kafka's INVALID_RECORD for a compacted topic's records without a key, worded as Kafka's
/// `LogValidator` words it: one message per record, and a summary naming the first three.
fn keyless_records(partition: &Partition, indices: Vec<i32>, count: usize) -> BrokerError {
    let record_message = format!(
        "Compacted topic cannot accept message without key in topic partition {}-{}",
        partition.topic, partition.index
    );
    let first_three: Vec<String> = indices
        .iter()
        .take(3)
        .map(|index| format!("RecordError(batchIndex={index}, message='{record_message}')"))
        .collect();
    let summary = format!(
        "One or more records have been rejected due to {count} record errors in total, and \
         only showing the first three errors at most: [{}]",
        first_three.join(", ")
    );
    BrokerError::InvalidRecords(Box::new(RecordErrors {
        summary,
        record_message,
        indices,
    }))
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
        produce_at(broker, topic, records, 9)
            .await
            .iter()
            .map(|p| p.error_code)
            .collect()
    }

    /// The partition answers to a produce of `records` to partition 0 of `topic` at `version`.
    async fn produce_at(
        broker: &Arc<Broker>,
        topic: &str,
        records: BytesMut,
        version: i16,
    ) -> Vec<PartitionProduceResponse> {
        let request = ProduceRequest::default().with_acks(1).with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(records.freeze()))]),
        ]);
        let response: ProduceResponse =
            round_trip(broker, ApiKey::Produce, version, &request).await;
        response
            .responses
            .into_iter()
            .flat_map(|t| t.partition_responses)
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

    /// A compacted topic refuses records without a key, as Kafka does: the batch is refused
    /// with INVALID_RECORD, and from v8 the response names each keyless record by its index in
    /// the batch (`record_errors`) under Kafka's summary message. A delete topic takes them.
    #[tokio::test]
    async fn a_compacted_topic_refuses_keyless_records_by_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        let compact = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        broker.create_topic("c", 1, compact).expect("topic");
        broker.create_topic("d", 1, BTreeMap::new()).expect("topic");
        let mixed = || {
            let mut builder = BatchBuilder::new(1_000, 256);
            for key in [Some(&b"k"[..]), None, Some(&b""[..]), None] {
                builder.push(1_000, key, Some(b"v"), &[]);
            }
            builder.finish()
        };
        let answers = produce_at(&broker, "c", mixed(), 9).await;
        let invalid_record = ResponseError::InvalidRecord.code();
        assert_eq!(answers[0].error_code, invalid_record);
        let record_message =
            "Compacted topic cannot accept message without key in topic partition c-0";
        let named: Vec<(i32, Option<String>)> = answers[0]
            .record_errors
            .iter()
            .map(|e| {
                let message = e.batch_index_error_message.as_ref().map(|m| m.to_string());
                (e.batch_index, message)
            })
            .collect();
        assert_eq!(
            named,
            [
                (1, Some(record_message.to_string())),
                (3, Some(record_message.to_string()))
            ]
        );
        let summary = answers[0].error_message.as_deref().unwrap_or_default();
        assert_eq!(
            summary,
            format!(
                "One or more records have been rejected due to 2 record errors in total, and \
                 only showing the first three errors at most: [RecordError(batchIndex=1, \
                 message='{record_message}'), RecordError(batchIndex=3, \
                 message='{record_message}')]"
            )
        );
        let partition = broker.partition("c", 0).expect("partition");
        assert_eq!(partition.high_watermark(), 0, "nothing was stored");

        let before_v8 = produce_at(&broker, "c", mixed(), 7).await;
        assert_eq!(before_v8[0].error_code, invalid_record);
        assert!(
            before_v8[0].record_errors.is_empty(),
            "v7 cannot carry them"
        );
        assert_eq!(
            produce(&broker, "c", batch(2)).await,
            [0],
            "keyed records pass"
        );
        assert_eq!(
            produce(&broker, "d", mixed()).await,
            [0],
            "delete topics take any"
        );
    }

    /// Goal: transactional batches are accepted on any client topic, and the partition's
    /// producer checks reach clients as Kafka's codes. Method: producer 4 sends a
    /// transactional batch to `t` and to an internal topic, then a plain batch (its
    /// transaction is open: INVALID_TXN_STATE), the coordinator aborts at epoch 1, and epoch 0
    /// writes again (INVALID_PRODUCER_EPOCH).
    #[tokio::test]
    async fn transactional_batches_are_accepted_and_refusals_get_kafkas_codes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        for name in ["t", "__private"] {
            broker
                .create_topic(name, 1, BTreeMap::new())
                .expect("topic");
        }
        let from_producer = |epoch: i16, sequence: i32, transactional: bool| {
            crate::log::batch::with_producer(batch(2), 4, epoch, sequence, transactional)
        };
        assert_eq!(produce(&broker, "t", from_producer(0, 0, true)).await, [0]);
        assert_eq!(
            produce(&broker, "__private", from_producer(0, 0, true)).await,
            [ResponseError::InvalidTopicException.code()]
        );
        assert_eq!(
            produce(&broker, "t", from_producer(0, 2, false)).await,
            [ResponseError::InvalidTxnState.code()]
        );
        let partition = broker.partition("t", 0).expect("partition");
        assert_eq!(partition.ongoing_transactions(), vec![(4, 0, 0, 1_000)]);
        partition
            .write_marker(4, 1, false, 0, 2_000)
            .expect("abort after fencing");
        assert!(partition.ongoing_transactions().is_empty());
        assert_eq!(
            produce(&broker, "t", from_producer(0, 2, true)).await,
            [ResponseError::InvalidProducerEpoch.code()]
        );
        assert_eq!(partition.producers()[0].producer_epoch, 1);
        assert_eq!(partition.last_stable_offset(), 3);
    }
}
