//! Fetch (long poll) and ListOffsets.
//!
//! A fetch answers at once when it has `min_bytes` of data or an error; otherwise it waits until
//! any requested partition's high watermark moves or `max_wait_ms` passes, without polling.
//! Reads start at the whole batch holding the fetch offset (clients skip earlier records) and
//! return whole batches: at least one per partition, more while they fit the byte limits.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use tokio::time::Instant;

use super::RequestContext;
use crate::broker::Broker;
use crate::limits::FETCH_WAIT_MS_MAX;
use crate::log::batch::decode_records;
use crate::partition::Partition;

pub(super) async fn handle(context: RequestContext, request: FetchRequest) -> FetchResponse {
    let wait_ms = (request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MS_MAX);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let mut watches: Vec<_> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic.to_string(), p.partition))
        })
        .filter_map(|(t, p)| context.broker.partition(&t, p).ok().map(|p| p.watch_end()))
        .collect();
    loop {
        let (response, bytes, errors) = read_all(&context.broker, &request);
        let enough = bytes >= request.min_bytes.max(0) as usize;
        if enough || errors || Instant::now() >= deadline || watches.is_empty() {
            return response;
        }
        let any_changed =
            futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
        if tokio::time::timeout_at(deadline, any_changed)
            .await
            .is_err()
        {
            let (response, _, _) = read_all(&context.broker, &request);
            return response;
        }
    }
}

/// Reads every requested partition once: the response, bytes of records, and whether any
/// partition answered with an error.
fn read_all(broker: &Broker, request: &FetchRequest) -> (FetchResponse, usize, bool) {
    let mut remaining = request.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut errors = false;
    let mut topics = Vec::new();
    for topic in &request.topics {
        let mut partitions = Vec::new();
        for p in &topic.partitions {
            let mut data = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica((-1).into());
            match broker.partition(&topic.topic, p.partition) {
                Ok(partition) => {
                    let result =
                        read_one(&partition, p.fetch_offset, p.partition_max_bytes, remaining);
                    fill(&mut data, &partition);
                    match result {
                        Ok(records) => {
                            remaining = remaining.saturating_sub(records.len());
                            total += records.len();
                            data.records = Some(records);
                        }
                        Err(e) => {
                            errors = true;
                            data.error_code = e.code();
                        }
                    }
                }
                Err(e) => {
                    errors = true;
                    data.error_code = e.code();
                }
            }
            partitions.push(data);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default().with_responses(topics),
        total,
        errors,
    )
}

fn read_one(
    partition: &Partition,
    offset: i64,
    partition_max_bytes: i32,
    remaining: usize,
) -> crate::error::Result<bytes::Bytes> {
    let limit = (partition_max_bytes.max(0) as usize).min(remaining);
    if offset == partition.high_watermark() {
        return Ok(bytes::Bytes::new());
    }
    partition.read(offset, limit.max(1))
}

fn fill(data: &mut PartitionData, partition: &Arc<Partition>) {
    let high_watermark = partition.high_watermark();
    data.high_watermark = high_watermark;
    data.last_stable_offset = high_watermark;
    data.log_start_offset = partition.log_start_offset();
}

/// ListOffsets: -2 earliest, -1 latest, -3 latest (max timestamp is not tracked per record),
/// otherwise the first offset whose timestamp is at or after the one asked.
pub(super) fn list_offsets(
    context: &RequestContext,
    request: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let mut out = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1)
                        .with_leader_epoch(-1);
                    match context.broker.partition(&topic.name, p.partition_index) {
                        Ok(partition) => match lookup(&partition, p.timestamp) {
                            Ok((offset, timestamp)) => {
                                out.offset = offset;
                                out.timestamp = timestamp;
                            }
                            Err(e) => out.error_code = e.code(),
                        },
                        Err(e) => out.error_code = e.code(),
                    }
                    out
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn lookup(partition: &Partition, timestamp: i64) -> crate::error::Result<(i64, i64)> {
    match timestamp {
        -2 => Ok((partition.log_start_offset(), -1)),
        -1 | -3 => Ok((partition.high_watermark(), -1)),
        target => {
            let batch = partition.log().lock().batch_at_time(target)?;
            let found = batch
                .and_then(|b| decode_records(&b).ok())
                .and_then(|records| records.into_iter().find(|r| r.timestamp_ms >= target));
            Ok(found.map_or((-1, -1), |r| (r.offset, r.timestamp_ms)))
        }
    }
}
