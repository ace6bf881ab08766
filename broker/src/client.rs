//! [`LogClient`]: what the engine needs from a log, and its in-process implementation.
//!
//! The engine reads and writes topics only through this trait, so it runs the same on the
//! embedded broker ([`InProcessClient`], no sockets) and on any Kafka-compatible cluster
//! ([`crate::KafkaClient`]). Producing partitions records as Kafka's default partitioner does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use crate::broker::{now_ms, Broker};
use crate::error::{BrokerError, Result};
use crate::group::{offsets, CommittedOffset, PartitionLag};
use crate::log::batch::{decode_records, BatchBuilder, ConsumedRecord};
use crate::partitioner::{self, StickyPartitioner};

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// An explicit partition; otherwise chosen from the key (or sticky when keyless).
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    /// Create time; now when absent.
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Where the earliest and next offsets of a partition are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetRange {
    pub log_start_offset: i64,
    pub high_watermark: i64,
}

/// Where a consumer starts when its group has no committed offset (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The log start offset.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// No default: starting without a committed offset is an error.
    None,
}

/// The operations the engine performs on a log.
#[async_trait]
pub trait LogClient: Send + Sync {
    /// Creates a topic; an existing topic is an error (`TopicAlreadyExists`).
    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<()>;
    /// Deletes a topic and its data.
    async fn delete_topic(&self, name: &str) -> Result<()>;
    /// The number of partitions of a topic.
    async fn partition_count(&self, topic: &str) -> Result<i32>;
    /// Every topic, with its partition count.
    async fn topics(&self) -> Result<Vec<(String, i32)>>;
    /// Produces records; returns each record's (partition, offset) once acknowledged.
    async fn produce(&self, topic: &str, records: Vec<ProducerRecord>) -> Result<Vec<(i32, i64)>>;
    /// Reads records from `offset`, waiting up to `max_wait` for some to arrive.
    async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Vec<ConsumedRecord>>;
    /// The earliest offset and the high watermark of a partition.
    async fn offsets(&self, topic: &str, partition: i32) -> Result<OffsetRange>;
    /// Commits offsets (the next offset to read) for a group.
    async fn commit(&self, group: &str, offsets: &[(String, i32, i64)]) -> Result<()>;
    /// The committed offset of a partition for a group.
    async fn committed(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>>;
    /// Lag per committed partition of a group.
    async fn lag(&self, group: &str) -> Result<Vec<PartitionLag>>;

    /// Where a member of `group` starts reading a partition: its committed offset, or else where
    /// `reset` says. A committed offset that fell out of the log (retention) also resets.
    async fn start_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        reset: OffsetReset,
    ) -> Result<i64> {
        let range = self.offsets(topic, partition).await?;
        let committed = self.committed(group, topic, partition).await?;
        if let Some(offset) = committed {
            if (range.log_start_offset..=range.high_watermark).contains(&offset) {
                return Ok(offset);
            }
        }
        match reset {
            OffsetReset::Earliest => Ok(range.log_start_offset),
            OffsetReset::Latest => Ok(range.high_watermark),
            OffsetReset::None => Err(BrokerError::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset: committed.unwrap_or(-1),
                log_start_offset: range.log_start_offset,
                log_end_offset: range.high_watermark,
            }),
        }
    }
}

/// Groups records by the partition the default partitioner picks, keeping their order.
pub fn partition_records(
    records: Vec<ProducerRecord>,
    partition_count: i32,
    sticky: &Mutex<StickyPartitioner>,
) -> Result<BTreeMap<i32, Vec<(usize, ProducerRecord)>>> {
    let mut by_partition: BTreeMap<i32, Vec<(usize, ProducerRecord)>> = BTreeMap::new();
    let mut sticky = sticky.lock();
    let mut used_sticky = false;
    for (i, record) in records.into_iter().enumerate() {
        let partition = match record.partition {
            Some(p) if (0..partition_count).contains(&p) => p,
            Some(p) => {
                return Err(BrokerError::UnknownTopicOrPartition {
                    topic: String::new(),
                    partition: p,
                })
            }
            None => {
                used_sticky |= record.key.is_none();
                partitioner::choose(record.key.as_deref(), partition_count, &mut sticky)
            }
        };
        by_partition.entry(partition).or_default().push((i, record));
    }
    if used_sticky {
        sticky.batch_completed(partition_count);
    }
    Ok(by_partition)
}

/// The most record bytes a client puts in one batch: well under the default
/// `max.message.bytes` (1 MiB), as a Kafka producer's `batch.size` bounds its batches.
pub const BATCH_BYTES: usize = 512 * 1024;

/// Splits records bound for one partition into runs of at most [`BATCH_BYTES`] of keys,
/// values and headers (a larger record goes alone, for the broker to accept or refuse).
pub fn split_batches(records: &[(usize, ProducerRecord)]) -> Vec<&[(usize, ProducerRecord)]> {
    let size = |r: &ProducerRecord| {
        let headers: usize = r
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum();
        r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + headers
    };
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, record)) in records.iter().enumerate() {
        let record_bytes = size(record);
        if i > start && bytes + record_bytes > BATCH_BYTES {
            batches.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += record_bytes;
    }
    if start < records.len() {
        batches.push(&records[start..]);
    }
    batches
}

/// Encodes records into one uncompressed batch.
pub fn encode_batch(records: &[(usize, ProducerRecord)]) -> bytes::BytesMut {
    let now = now_ms();
    let base = records
        .iter()
        .map(|(_, r)| r.timestamp_ms.unwrap_or(now))
        .min()
        .unwrap_or(now);
    let mut builder = BatchBuilder::new(base, records.len() * 64);
    for (_, r) in records {
        let headers: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        builder.push(
            r.timestamp_ms.unwrap_or(now),
            r.key.as_deref(),
            r.value.as_deref(),
            &headers,
        );
    }
    builder.finish()
}

/// The broker in this process, used directly.
pub struct InProcessClient {
    broker: Arc<Broker>,
    sticky: Mutex<StickyPartitioner>,
}

impl InProcessClient {
    /// A client of `broker`.
    pub fn new(broker: Arc<Broker>) -> InProcessClient {
        InProcessClient {
            broker,
            sticky: Mutex::new(StickyPartitioner::new()),
        }
    }

    /// The broker behind this client.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }
}

#[async_trait]
impl LogClient for InProcessClient {
    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<()> {
        self.broker
            .create_topic(name, partitions, configs)
            .map(|_| ())
    }

    async fn delete_topic(&self, name: &str) -> Result<()> {
        self.broker.delete_topic(name)
    }

    async fn topics(&self) -> Result<Vec<(String, i32)>> {
        Ok(self
            .broker
            .topics()
            .iter()
            .map(|t| (t.name.to_string(), t.partitions.len() as i32))
            .collect())
    }

    async fn partition_count(&self, topic: &str) -> Result<i32> {
        let topic =
            self.broker
                .topic(topic)
                .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                    topic: topic.to_string(),
                    partition: -1,
                })?;
        Ok(topic.partitions.len() as i32)
    }

    async fn produce(&self, topic: &str, records: Vec<ProducerRecord>) -> Result<Vec<(i32, i64)>> {
        let count = self.partition_count(topic).await?;
        let total = records.len();
        let by_partition = partition_records(records, count, &self.sticky)?;
        let mut placed = vec![(0, 0); total];
        for (index, records) in by_partition {
            let partition = self.broker.partition(topic, index)?;
            for batch in split_batches(&records) {
                let info = partition.append(&mut encode_batch(batch), now_ms())?;
                if partition.fsync_before_ack() {
                    partition.wait_durable(info.last_offset).await?;
                }
                for (n, (i, _)) in batch.iter().enumerate() {
                    placed[*i] = (index, info.base_offset + n as i64);
                }
            }
        }
        Ok(placed)
    }

    async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Vec<ConsumedRecord>> {
        let partition = self.broker.partition(topic, partition)?;
        let mut end = partition.watch_end();
        if offset >= *end.borrow_and_update() {
            let _ = tokio::time::timeout(max_wait, end.wait_for(|e| *e > offset)).await;
        }
        let bytes = partition.read(offset, max_bytes)?;
        let records = decode_records(&bytes).map_err(BrokerError::CorruptMessage)?;
        Ok(records.into_iter().filter(|r| r.offset >= offset).collect())
    }

    async fn offsets(&self, topic: &str, partition: i32) -> Result<OffsetRange> {
        let partition = self.broker.partition(topic, partition)?;
        Ok(OffsetRange {
            log_start_offset: partition.log_start_offset(),
            high_watermark: partition.high_watermark(),
        })
    }

    async fn commit(&self, group: &str, commits: &[(String, i32, i64)]) -> Result<()> {
        let now = now_ms();
        let commits = commits
            .iter()
            .map(|(t, p, o)| {
                let committed = CommittedOffset {
                    offset: *o,
                    leader_epoch: -1,
                    metadata: String::new(),
                    commit_timestamp_ms: now,
                };
                (t.clone(), *p, committed)
            })
            .collect();
        offsets::commit(&self.broker, group, commits).await
    }

    async fn committed(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        Ok(self
            .broker
            .groups
            .committed(group, topic, partition)
            .map(|c| c.offset))
    }

    async fn lag(&self, group: &str) -> Result<Vec<PartitionLag>> {
        Ok(self.broker.group_lag(group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_sets_of_records_split_into_bounded_batches() {
        let record = |bytes: usize| ProducerRecord {
            partition: None,
            key: None,
            value: Some(Bytes::from(vec![b'x'; bytes])),
            timestamp_ms: None,
            headers: Vec::new(),
        };
        let records: Vec<_> = (0..10).map(|i| (i, record(200 * 1024))).collect();
        let sizes: Vec<usize> = split_batches(&records).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2, 2, 2, 2]);
        let huge = [(0, record(2 << 20)), (1, record(10))];
        let sizes: Vec<usize> = split_batches(&huge).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1, 1], "a record over the bound goes alone");
        assert!(split_batches(&[]).is_empty());
    }
}
