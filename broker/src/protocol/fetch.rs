//! Fetch (long poll) and ListOffsets.
//!
//! A fetch answers at once when it has `min_bytes` of data or an error; otherwise it waits until
//! any requested partition's high watermark moves or `max_wait_ms` passes, without polling.
//! Reads start at the whole batch holding the fetch offset (clients skip earlier records) and
//! return whole batches while they fit the byte limits: the partition's `partition_max_bytes` and
//! the response's min(`max_bytes`, `fetch.max.bytes`). The first partition with data returns at
//! least one batch even if it is larger (KIP-74); later ones return only what fits. Fetch v0-3
//! predate v2 batches: their records are down-converted to a magic 0 (v0-1) or magic 1 (v2-3)
//! message set within the same limits (`log/message_set.rs`), from the offset asked rather than
//! the batch's start.
//!
//! A consumer fetches from the partition's leader and reads below the high watermark. A follower
//! (a fetch with a replica id) reads up to the log end offset, and its fetch offset tells the
//! leader how far its log reaches (`Partition::record_follower_fetch`); it waits on the log end
//! offset rather than the high watermark.
//!
//! Transactions: every partition answers its last stable offset (LSO). A consumer fetching
//! with `isolation_level` 1 (read_committed) reads below the LSO instead of the high
//! watermark, and is told the aborted transactions (producer id, first offset) overlapping
//! what it got, so it can drop their records. The LSO moves only when the high watermark
//! passes a marker, so such a fetch waits on the high watermark like any consumer's.
//! ListOffsets with `isolation_level` 1 answers "latest" with the LSO.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::FetchPartition;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, ProducerId,
};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use super::RequestContext;
use crate::broker::{now_ms, Broker};
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::limits::FETCH_WAIT_MS_MAX;
use crate::log::batch::{decode_records, headers};
use crate::log::message_set::{down_convert, LegacyMagic};
use crate::partition::Partition;

pub(super) async fn handle(context: RequestContext, request: FetchRequest) -> FetchResponse {
    let wait_ms = (request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MS_MAX);
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    let replica = replica_id(&context, &request);
    let mut watches: Vec<_> = unique_partitions(&request)
        .into_iter()
        .filter_map(|(t, p)| context.broker.partition(t, p).ok())
        .map(|p| match replica {
            Some(_) => p.watch_log_end(),
            None => p.watch_end(),
        })
        .collect();
    loop {
        let (response, bytes, errors) = read_all(&context, &request);
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
            let (response, _, _) = read_all(&context, &request);
            return response;
        }
    }
}

/// The broker a follower's fetch comes from (None for a consumer): `replica_id` until v14, the
/// replica state from v15.
fn replica_id(context: &RequestContext, request: &FetchRequest) -> Option<i32> {
    let id = if context.version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    (id >= 0).then_some(id)
}

/// The most record bytes a response to `request` carries (bar the one batch KIP-74 allows):
/// the request's `max_bytes`, capped by `fetch.max.bytes`, or for a replica by
/// `replica.fetch.response.max.bytes`.
pub(super) fn response_bytes_max(config: &BrokerConfig, request: &FetchRequest) -> usize {
    let cap = if request.replica_id.0 >= 0 {
        config.replica_fetch_response_max_bytes
    } else {
        config.fetch_max_bytes
    };
    request.max_bytes.min(cap).max(0) as usize
}

/// Each (topic, partition) the request lists, once, in request order.
fn unique_partitions(request: &FetchRequest) -> Vec<(&str, i32)> {
    let mut seen = HashSet::new();
    request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic.as_str(), p.partition))
        })
        .filter(|key| seen.insert(*key))
        .collect()
}

/// What one pass over the requested partitions has used so far.
struct ReadState<'a> {
    /// Record bytes still allowed in the response.
    remaining: usize,
    /// Whether the next partition with data may return one whole batch beyond the limits
    /// (KIP-74): only while no partition has returned records yet.
    min_one_batch: bool,
    /// Record bytes in the response.
    total: usize,
    /// Whether any partition answered with an error.
    errors: bool,
    /// Partitions already answered: one listed again gets INVALID_REQUEST.
    seen: HashSet<(&'a str, i32)>,
}

/// Reads every requested partition once: the response, bytes of records, and whether any
/// partition answered with an error.
///
/// A partition listed twice is answered twice, the second time with INVALID_REQUEST and no
/// records: listing it again must not return its data again (a request naming one partition
/// thousands of times would build a response thousands of times its data). Answering the
/// entry, rather than failing the whole request, keeps the other partitions served and fits
/// every Fetch version (a top-level error code exists only from v7); clients never list a
/// partition twice, and Java's and librdkafka's consumers match response entries by name.
fn read_all(context: &RequestContext, request: &FetchRequest) -> (FetchResponse, usize, bool) {
    let broker = &context.broker;
    let replica = replica_id(context, request);
    let reader = match replica {
        Some(replica) => Reader::Replica(replica),
        None if request.isolation_level == READ_COMMITTED => Reader::ReadCommitted,
        None => Reader::ReadUncommitted,
    };
    let mut state = ReadState {
        remaining: response_bytes_max(&broker.config, request),
        min_one_batch: true,
        total: 0,
        errors: false,
        seen: HashSet::new(),
    };
    let mut topics = Vec::new();
    for topic in &request.topics {
        let partitions = topic
            .partitions
            .iter()
            .map(|p| read_partition(context, (topic.topic.as_str(), reader), p, &mut state))
            .collect();
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_partitions(partitions),
        );
    }
    let response = FetchResponse::default().with_responses(topics);
    (response, state.total, state.errors)
}

/// `isolation_level` 1: read below the last stable offset.
const READ_COMMITTED: i8 = 1;

/// Who fetches, which decides how far a fetch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// A follower (its broker id): up to the log end offset.
    Replica(i32),
    /// A consumer with read_uncommitted: below the high watermark.
    ReadUncommitted,
    /// A consumer with read_committed: below the last stable offset.
    ReadCommitted,
}

fn read_partition<'a>(
    context: &RequestContext,
    (topic, reader): (&'a str, Reader),
    request: &FetchPartition,
    state: &mut ReadState<'a>,
) -> PartitionData {
    let broker = &context.broker;
    let mut data = PartitionData::default()
        .with_partition_index(request.partition)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_preferred_read_replica((-1).into());
    let result = if state.seen.insert((topic, request.partition)) {
        broker
            .partition(topic, request.partition)
            .and_then(|partition| {
                match reader {
                    Reader::Replica(replica) => partition.record_follower_fetch(
                        replica,
                        request.fetch_offset,
                        request.current_leader_epoch,
                        now_ms(),
                    )?,
                    _ => partition.check_leader(request.current_leader_epoch)?,
                }
                fill(&mut data, &partition);
                let limit = (request.partition_max_bytes.max(0) as usize).min(state.remaining);
                let records = read_one(
                    &partition,
                    (request.fetch_offset, reader),
                    limit,
                    state.min_one_batch,
                )?;
                if reader == Reader::ReadCommitted {
                    let aborted = aborted_in(&partition, request.fetch_offset, &records);
                    data.aborted_transactions = Some(aborted);
                }
                let Some(magic) = LegacyMagic::for_fetch_version(context.version) else {
                    return Ok(records);
                };
                if records.is_empty() {
                    return Ok(records);
                }
                down_convert(
                    &records,
                    magic,
                    request.fetch_offset,
                    limit,
                    state.min_one_batch,
                )
                .map_err(|e| BrokerError::Internal(format!("stored batch: {e}")))
            })
    } else {
        Err(BrokerError::InvalidRequest(format!(
            "partition {topic}-{} is listed twice in one fetch",
            request.partition
        )))
    };
    match result {
        Ok(records) => {
            state.remaining = state.remaining.saturating_sub(records.len());
            state.total += records.len();
            state.min_one_batch &= records.is_empty();
            data.records = Some(records);
        }
        Err(e) => {
            state.errors = true;
            data.error_code = e.code();
        }
    }
    data
}

/// Whole batches from `offset`, within `limit` bytes, below the high watermark (for a
/// follower, the log end; for read_committed, the last stable offset); with `min_one_batch`, at
/// least the first batch even when it is larger (KIP-74), so a consumer always makes progress.
fn read_one(
    partition: &Partition,
    (offset, reader): (i64, Reader),
    limit: usize,
    min_one_batch: bool,
) -> crate::error::Result<Bytes> {
    let replica = matches!(reader, Reader::Replica(_));
    let high_watermark = if replica {
        partition.log_end_offset()
    } else {
        partition.high_watermark()
    };
    if offset == high_watermark {
        return Ok(Bytes::new());
    }
    if limit == 0 && !min_one_batch {
        // Nothing may be returned, but a bad offset is still reported, as Kafka does.
        let log_start_offset = partition.log_start_offset();
        if !(log_start_offset..=high_watermark).contains(&offset) {
            return Err(BrokerError::OffsetOutOfRange {
                topic: partition.topic.to_string(),
                partition: partition.index,
                offset,
                log_start_offset,
                log_end_offset: high_watermark,
            });
        }
        return Ok(Bytes::new());
    }
    let records = match reader {
        Reader::Replica(_) => partition.read_replica(offset, limit.max(1))?,
        Reader::ReadUncommitted => partition.read(offset, limit.max(1))?,
        Reader::ReadCommitted => partition.read_committed(offset, limit.max(1))?,
    };
    if min_one_batch {
        return Ok(records);
    }
    Ok(whole_batches_within(records, limit))
}

/// The longest prefix of whole batches in `records` that fits in `limit` bytes.
fn whole_batches_within(records: Bytes, limit: usize) -> Bytes {
    let end = headers(&records)
        .map(|(at, header)| at + header.total_bytes())
        .take_while(|end| *end <= limit)
        .last()
        .unwrap_or(0);
    records.slice(..end)
}

/// The aborted transactions a read_committed consumer needs for `records`, read from
/// `fetch_offset`: those overlapping the fetch offset up to the last offset returned, as
/// Kafka lists them.
fn aborted_in(
    partition: &Partition,
    fetch_offset: i64,
    records: &Bytes,
) -> Vec<AbortedTransaction> {
    let Some(upper) = headers(records).last().map(|(_, h)| h.next_offset()) else {
        return Vec::new();
    };
    partition
        .log()
        .lock()
        .aborted_transactions(fetch_offset, upper)
        .into_iter()
        .map(|txn| {
            AbortedTransaction::default()
                .with_producer_id(ProducerId(txn.producer_id))
                .with_first_offset(txn.first_offset)
        })
        .collect()
}

fn fill(data: &mut PartitionData, partition: &Arc<Partition>) {
    data.high_watermark = partition.high_watermark();
    data.last_stable_offset = partition.last_stable_offset();
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
                    if context.version == 0 {
                        let consumer = request.replica_id.0 == CONSUMER_REPLICA_ID;
                        return lookup_v0(&context.broker, &topic.name, p, consumer, out);
                    }
                    let found = context
                        .broker
                        .partition(&topic.name, p.partition_index)
                        .and_then(|partition| {
                            partition.check_leader(p.current_leader_epoch)?;
                            Ok(partition)
                        });
                    let committed = request.isolation_level == READ_COMMITTED;
                    match found {
                        Ok(partition) => match lookup(&partition, p.timestamp, committed) {
                            Ok((offset, timestamp)) => {
                                out.offset = offset;
                                out.timestamp = timestamp;
                                // KIP-320 (v4+): the leader's epoch (-1 on one node).
                                if context.version >= 4 {
                                    out.leader_epoch = partition.leader_epoch();
                                }
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

/// The replica id a consumer (rather than a follower) sends in ListOffsets and Fetch.
const CONSUMER_REPLICA_ID: i32 = -1;

/// One partition of a ListOffsets v0 request, answered as Kafka 3.x answers it: up to
/// `max_num_offsets` segment boundaries "before" the timestamp (see
/// [`crate::log::Log::legacy_offsets_before`]), newest first. Timestamps below -2 get
/// UNSUPPORTED_VERSION, since v0 knows only -1 (latest) and -2 (earliest). A consumer never
/// sees an offset above the high watermark: those are replaced by the high watermark.
fn lookup_v0(
    broker: &Broker,
    topic: &str,
    request: &ListOffsetsPartition,
    consumer: bool,
    out: ListOffsetsPartitionResponse,
) -> ListOffsetsPartitionResponse {
    if request.timestamp < -2 {
        return out.with_error_code(ResponseError::UnsupportedVersion.code());
    }
    let offsets = broker
        .partition(topic, request.partition_index)
        .and_then(|partition| {
            let offsets = partition.log().lock().legacy_offsets_before(
                request.timestamp,
                request.max_num_offsets,
                now_ms(),
            )?;
            let high_watermark = partition.high_watermark();
            if !consumer || offsets.iter().all(|o| *o <= high_watermark) {
                return Ok(offsets);
            }
            let below = offsets.into_iter().skip_while(|o| *o > high_watermark);
            Ok(std::iter::once(high_watermark).chain(below).collect())
        });
    match offsets {
        Ok(offsets) => out.with_old_style_offsets(offsets),
        Err(e) => out.with_error_code(e.code()),
    }
}

/// The answer for one partition: `(offset, timestamp)`. With `committed` (read_committed),
/// "latest" is the last stable offset rather than the high watermark.
fn lookup(
    partition: &Partition,
    timestamp: i64,
    committed: bool,
) -> crate::error::Result<(i64, i64)> {
    match timestamp {
        -2 => Ok((partition.log_start_offset(), -1)),
        -1 | -3 if committed => Ok((partition.last_stable_offset(), -1)),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::fetch_request::FetchTopic;
    use kafka_protocol::messages::{ApiKey, BrokerId, TopicName};

    use super::*;
    use crate::log::batch::BatchBuilder;
    use crate::protocol::{round_trip, str_bytes};
    use crate::BrokerConfig;

    const VERSION: i16 = 11;
    const BATCH_VALUE_BYTES: usize = 10_000;

    /// A broker with topic `t` of `partitions` partitions, each holding `batches` batches of
    /// one record of [`BATCH_VALUE_BYTES`].
    async fn broker_with_data(
        config: BrokerConfig,
        partitions: i32,
        batches: usize,
    ) -> Arc<Broker> {
        let broker = Broker::open(config).await.expect("open");
        let topic = broker
            .create_topic("t", partitions, BTreeMap::new())
            .expect("topic");
        let value = vec![b'v'; BATCH_VALUE_BYTES];
        for partition in &topic.partitions {
            for _ in 0..batches {
                let mut builder = BatchBuilder::new(1_000, BATCH_VALUE_BYTES + 100);
                builder.push(1_000, None, Some(&value), &[]);
                partition
                    .append(&mut builder.finish(), 1_000)
                    .expect("append");
            }
        }
        broker
    }

    fn fetch(max_bytes: i32, partitions: impl IntoIterator<Item = i32>) -> FetchRequest {
        let partitions = partitions
            .into_iter()
            .map(|p| {
                FetchPartition::default()
                    .with_partition(p)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)
            })
            .collect();
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_bytes(max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(str_bytes("t")))
                .with_partitions(partitions)])
    }

    async fn answer(broker: &Arc<Broker>, request: &FetchRequest) -> Vec<PartitionData> {
        let response: FetchResponse = round_trip(broker, ApiKey::Fetch, VERSION, request).await;
        response
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .collect()
    }

    fn record_bytes(partitions: &[PartitionData]) -> usize {
        partitions
            .iter()
            .map(|p| p.records.as_ref().map_or(0, |r| r.len()))
            .sum()
    }

    /// A fetch naming one partition 500 times once built a response of 500 copies of its data;
    /// now the first entry is served and the others are refused with INVALID_REQUEST.
    #[tokio::test]
    async fn a_partition_listed_500_times_is_read_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = broker_with_data(BrokerConfig::new(dir.path()), 1, 100).await;
        let partitions = answer(&broker, &fetch(50 << 20, vec![0; 500])).await;
        assert_eq!(partitions.len(), 500);
        assert_eq!(partitions[0].error_code, 0);
        let first = partitions[0].records.as_ref().map_or(0, |r| r.len());
        assert!(
            first > 900_000,
            "the first entry gets about 1 MB, got {first}"
        );
        assert_eq!(
            record_bytes(&partitions),
            first,
            "no entry but the first has data"
        );
        let invalid_request = kafka_protocol::ResponseError::InvalidRequest.code();
        assert!(partitions[1..]
            .iter()
            .all(|p| p.error_code == invalid_request));
    }

    /// KIP-74 lets the first partition with data exceed max_bytes by one batch; later
    /// partitions must then return nothing rather than a batch each.
    #[tokio::test]
    async fn max_bytes_below_one_batch_returns_one_batch_in_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = broker_with_data(BrokerConfig::new(dir.path()), 3, 3).await;
        let partitions = answer(&broker, &fetch(100, [0, 1, 2])).await;
        let first = partitions[0].records.clone().expect("records");
        assert_eq!(headers(&first).count(), 1);
        assert!(first.len() > BATCH_VALUE_BYTES);
        for later in &partitions[1..] {
            assert_eq!(later.error_code, 0);
            assert_eq!(later.records.as_ref().map_or(0, |r| r.len()), 0);
        }
    }

    /// `fetch.max.bytes` bounds a response whatever the request asks, and
    /// `replica.fetch.response.max.bytes` does for a replica's fetch.
    #[tokio::test]
    async fn broker_caps_bound_the_response_whatever_the_request_asks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(dir.path());
        config.fetch_max_bytes = 50_000;
        config.replica_fetch_response_max_bytes = 25_000;
        let broker = broker_with_data(config, 3, 20).await;
        let consumer = answer(&broker, &fetch(i32::MAX, [0, 1, 2])).await;
        let bytes = record_bytes(&consumer);
        assert!((40_000..=50_000).contains(&bytes), "got {bytes}");
        let replica = fetch(i32::MAX, [0, 1, 2]).with_replica_id(BrokerId(1));
        let bytes = record_bytes(&answer(&broker, &replica).await);
        assert!((20_000..=25_000).contains(&bytes), "got {bytes}");
    }

    /// Goal: a read_committed fetch reads below the last stable offset, lists the aborted
    /// transactions in what it returns, and long-polls at the LSO until a marker moves it;
    /// read_uncommitted still reads to the high watermark; both are told the LSO; ListOffsets
    /// latest with read_committed is the LSO. Method: one plain record, producer 9's
    /// transaction of one record, then fetches and markers through the wire protocol.
    #[tokio::test]
    async fn read_committed_reads_below_the_last_stable_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = broker_with_data(BrokerConfig::new(dir.path()), 1, 1).await;
        let partition = broker.partition("t", 0).expect("partition");
        let transactional = |producer_id: i64, sequence: i32| {
            let mut builder = BatchBuilder::new(1_000, 64);
            builder.push(1_000, None, Some(b"txn"), &[]);
            crate::log::batch::with_producer(builder.finish(), producer_id, 0, sequence, true)
        };
        partition
            .append(&mut transactional(9, 0), 1_000)
            .expect("txn");
        let committed = |offset: i64| {
            let mut request = fetch(1 << 20, [0]).with_isolation_level(1);
            request.topics[0].partitions[0].fetch_offset = offset;
            request
        };
        let fetched = answer(&broker, &committed(0)).await.remove(0);
        let records = fetched.records.clone().expect("records");
        assert_eq!(fetched.high_watermark, 2);
        assert_eq!(fetched.last_stable_offset, 1);
        assert_eq!(headers(&records).count(), 1, "only the plain record");
        let uncommitted = answer(&broker, &fetch(1 << 20, [0])).await.remove(0);
        assert_eq!(uncommitted.last_stable_offset, 1);
        assert_eq!(headers(&uncommitted.records.expect("records")).count(), 2);
        let latest = list_latest(&broker, 1).await;
        assert_eq!(latest, 1);
        assert_eq!(list_latest(&broker, 0).await, 2);

        // At the LSO the fetch waits; the abort marker moves the LSO and answers it.
        let waiting = {
            let broker = Arc::clone(&broker);
            let request = committed(1).with_max_wait_ms(10_000).with_min_bytes(1);
            tokio::spawn(async move { answer(&broker, &request).await.remove(0) })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "nothing is stable at offset 1 yet");
        let started = Instant::now();
        partition
            .write_marker(9, 0, false, 0, 1_000)
            .expect("abort");
        let fetched = waiting.await.expect("fetch");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken by the marker"
        );
        assert_eq!(fetched.last_stable_offset, 3);
        let aborted = fetched
            .aborted_transactions
            .expect("read_committed lists them");
        assert_eq!(aborted.len(), 1);
        assert_eq!((aborted[0].producer_id.0, aborted[0].first_offset), (9, 1));
        let records = fetched.records.expect("records");
        assert!(
            headers(&records).any(|(_, h)| h.is_control()),
            "the marker is returned"
        );
        let from_zero = answer(&broker, &committed(0)).await.remove(0);
        assert_eq!(from_zero.aborted_transactions.map(|a| a.len()), Some(1));
        assert_eq!(list_latest(&broker, 1).await, 3);
    }

    /// ListOffsets "latest" for partition 0 of `t` at `isolation_level`.
    async fn list_latest(broker: &Arc<Broker>, isolation_level: i8) -> i64 {
        use kafka_protocol::messages::list_offsets_request::ListOffsetsTopic;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation_level)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(str_bytes("t")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let response: ListOffsetsResponse =
            round_trip(broker, ApiKey::ListOffsets, 5, &request).await;
        response.topics[0].partitions[0].offset
    }
}
