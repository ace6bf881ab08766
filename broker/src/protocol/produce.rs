//! Produce: append each partition's batches now, acknowledge when the durability promise holds.
//!
//! acks=0 gets no response. acks=1 and acks=-1 are answered once the batches are in the log and,
//! for topics with `flush.messages=1`, synced to disk (on a single node every replica is the
//! leader, so the two mean the same).

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{Pending, RequestContext};
use crate::broker::now_ms;
use crate::error::BrokerError;

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
                context
                    .broker
                    .partition(&topic.name, data.index)
                    .and_then(|partition| {
                        let records = data.records.unwrap_or_default();
                        let mut batch = BytesMut::from(&records[..]);
                        let info = partition.append(&mut batch, now_ms())?;
                        Ok((partition, info))
                    })
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
