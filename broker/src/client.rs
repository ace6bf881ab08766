//! [`LogClient`]: what the engine needs from a log, and its in-process implementation.
//!
//! The engine reads and writes topics only through this trait, so it runs the same on the
//! embedded broker ([`InProcessClient`], no sockets) and on any Kafka-compatible cluster
//! ([`crate::KafkaClient`]). Producing partitions records as Kafka's default partitioner does.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;

use crate::broker::{now_ms, Broker};
use crate::error::{BrokerError, Result};
use crate::group::{offsets, CommittedOffset, PartitionLag};
use crate::log::batch::{decode_records, BatchBuilder, ConsumedRecord};
#[cfg(test)]
use crate::partition::Partition;
use crate::partitioner::{self, StickyPartitioner};
use crate::txn::InitRequest;

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

/// A transactional producer as InitProducerId made it (Kafka's `initTransactions`): its id and
/// epoch, and the next sequence of each partition it wrote in this epoch. After any failed
/// transaction it must be made again ([`LogClient::init_transactions`]: a new epoch), as a
/// Kafka producer bumps its epoch after an abortable error.
#[derive(Debug)]
pub struct TransactionalProducer {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    sequences: Mutex<HashMap<(String, i32), i32>>,
}

impl TransactionalProducer {
    pub fn new(transactional_id: &str, producer_id: i64, producer_epoch: i16) -> Self {
        TransactionalProducer {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            sequences: Mutex::new(HashMap::new()),
        }
    }

    /// Takes `count` sequence numbers for a partition; returns the first.
    pub fn take_sequences(&self, topic: &str, partition: i32, count: usize) -> i32 {
        let mut sequences = self.sequences.lock();
        let next = sequences.entry((topic.to_string(), partition)).or_insert(0);
        let first = *next;
        *next = next.wrapping_add(count as i32);
        first
    }

    /// (producer id, epoch).
    pub fn id_and_epoch(&self) -> (i64, i16) {
        (self.producer_id, self.producer_epoch)
    }
}

/// What one transaction writes: records to topics, and a group's offsets committed with them
/// (a consume-transform-produce step's output and input positions).
#[derive(Debug, Clone, Default)]
pub struct Transaction {
    pub records: Vec<(String, Vec<ProducerRecord>)>,
    pub offsets: Option<GroupOffsets>,
}

/// A group and its offsets: (topic, partition, the next offset to read) each.
pub type GroupOffsets = (String, Vec<(String, i32, i64)>);

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
    /// Starts transactional producer `transactional_id` (Kafka's `initTransactions`): every
    /// earlier producer with the id is fenced, and a transaction it left open is aborted.
    async fn init_transactions(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
    ) -> Result<TransactionalProducer>;
    /// Writes `transaction` and commits it: its records and offsets become visible to
    /// read_committed readers together, or, on an error, never (the transaction is aborted
    /// where it can be; otherwise its timeout aborts it). A fenced producer gets
    /// `Transaction { kind: ProducerFenced, .. }` or `InvalidProducerEpoch`.
    async fn commit_transaction(
        &self,
        producer: &TransactionalProducer,
        transaction: Transaction,
    ) -> Result<()>;

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
    records_builder(records).finish()
}

/// Encodes records into one uncompressed batch of a transactional producer, numbered from
/// `base_sequence`.
pub fn encode_transactional_batch(
    records: &[(usize, ProducerRecord)],
    producer: (i64, i16),
    base_sequence: i32,
) -> bytes::BytesMut {
    records_builder(records)
        .transactional(producer.0, producer.1)
        .sequenced(base_sequence)
        .finish()
}

fn records_builder(records: &[(usize, ProducerRecord)]) -> BatchBuilder {
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
    builder
}

/// Positions (the next offset to read) as offsets committed now.
fn committed_now(positions: Vec<(String, i32, i64)>) -> Vec<(String, i32, CommittedOffset)> {
    let now = now_ms();
    positions
        .into_iter()
        .map(|(topic, partition, offset)| {
            let committed = CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp_ms: now,
            };
            (topic, partition, committed)
        })
        .collect()
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
        offsets::commit(&self.broker, group, committed_now(commits.to_vec())).await
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

    async fn init_transactions(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
    ) -> Result<TransactionalProducer> {
        let init = InitRequest {
            transactional_id,
            timeout_ms,
            current: None,
        };
        let (id, epoch) = self
            .broker
            .transactions
            .init_producer_id(&self.broker, init)
            .await?;
        Ok(TransactionalProducer::new(transactional_id, id, epoch))
    }

    async fn commit_transaction(
        &self,
        producer: &TransactionalProducer,
        transaction: Transaction,
    ) -> Result<()> {
        let written = self.write_transaction(producer, transaction).await;
        let coordinator = &self.broker.transactions;
        let id = &producer.transactional_id;
        let ended = coordinator
            .end_txn(&self.broker, id, producer.id_and_epoch(), written.is_ok())
            .await;
        // A failed write's abort may fail too (nothing was added yet): the write's error says
        // what went wrong.
        written.and(ended)
    }
}

impl InProcessClient {
    /// Adds the transaction's partitions to it, then appends its records and offsets.
    async fn write_transaction(
        &self,
        producer: &TransactionalProducer,
        transaction: Transaction,
    ) -> Result<()> {
        let mut batches = Vec::new();
        for (topic, records) in transaction.records {
            let count = self.partition_count(&topic).await?;
            for (index, records) in partition_records(records, count, &self.sticky)? {
                batches.push((topic.clone(), index, records));
            }
        }
        let mut partitions: Vec<(String, i32)> =
            batches.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        if let Some((group, _)) = &transaction.offsets {
            partitions.push(crate::txn::offsets_partition_of(group));
        }
        let id = &producer.transactional_id;
        self.broker
            .transactions
            .add_partitions(&self.broker, id, producer.id_and_epoch(), &partitions)
            .await?;
        for (topic, index, records) in batches {
            let partition = self.broker.partition(&topic, index)?;
            for batch in split_batches(&records) {
                let sequence = producer.take_sequences(&topic, index, batch.len());
                let mut bytes =
                    encode_transactional_batch(batch, producer.id_and_epoch(), sequence);
                let info = partition.append(&mut bytes, now_ms())?;
                if partition.fsync_before_ack() {
                    partition.wait_durable(info.last_offset).await?;
                }
            }
        }
        if let Some((group, positions)) = transaction.offsets {
            let written = offsets::append_transactional_commit(
                &self.broker,
                &group,
                producer.id_and_epoch(),
                committed_now(positions),
            )?;
            if let Some(written) = written {
                written.settle(&self.broker.groups.offsets).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(v: &str) -> ProducerRecord {
        ProducerRecord {
            partition: Some(0),
            value: Some(Bytes::from(v.to_string())),
            ..ProducerRecord::default()
        }
    }

    /// A committed transaction's records and offsets are visible together; one whose write
    /// fails half way is aborted, so read_committed readers never see the half written; a
    /// fenced producer's transaction is refused before anything is written.
    #[tokio::test]
    async fn transactions_commit_records_and_offsets_together_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(crate::BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        let client = InProcessClient::new(Arc::clone(&broker));
        client
            .create_topic("in", 1, BTreeMap::new())
            .await
            .expect("topic");
        client
            .create_topic("out", 1, BTreeMap::new())
            .await
            .expect("topic");
        let small = BTreeMap::from([("max.message.bytes".to_string(), "200".to_string())]);
        client.create_topic("small", 1, small).await.expect("topic");
        let producer = client.init_transactions("app", 60_000).await.expect("init");
        let transaction = Transaction {
            records: vec![("out".into(), vec![value("a"), value("b")])],
            offsets: Some(("g".into(), vec![("in".into(), 0, 5)])),
        };
        client
            .commit_transaction(&producer, transaction)
            .await
            .expect("commit");
        assert_eq!(
            client.committed("g", "in", 0).await.expect("committed"),
            Some(5)
        );
        let out = broker.partition("out", 0).expect("partition");
        let read = |p: &Partition| {
            let bytes = p.read_committed(0, 1 << 20).expect("read");
            decode_records(&bytes).expect("decode").len()
        };
        assert_eq!(read(&out), 2);
        assert_eq!(out.last_stable_offset(), out.log_end_offset());

        let half = Transaction {
            records: vec![
                ("out".into(), vec![value("c")]),
                ("small".into(), vec![value(&"x".repeat(1_000))]),
            ],
            offsets: Some(("g".into(), vec![("in".into(), 0, 9)])),
        };
        let refused = client.commit_transaction(&producer, half).await;
        assert!(
            matches!(refused, Err(BrokerError::MessageTooLarge { .. })),
            "{refused:?}"
        );
        let aborted = out
            .log()
            .lock()
            .aborted_transactions(0, out.log_end_offset());
        assert_eq!(aborted.len(), 1, "the half-written transaction was aborted");
        assert_eq!(out.last_stable_offset(), out.log_end_offset());
        assert_eq!(
            client.committed("g", "in", 0).await.expect("committed"),
            Some(5)
        );

        let successor = client.init_transactions("app", 60_000).await.expect("init");
        assert_eq!(successor.producer_epoch, producer.producer_epoch + 1);
        let fenced = client
            .commit_transaction(&producer, Transaction::default())
            .await;
        assert!(
            matches!(
                fenced,
                Err(BrokerError::Transaction {
                    kind: crate::error::TxnError::ProducerFenced { .. },
                    ..
                })
            ),
            "{fenced:?}"
        );
        let end = out.log_end_offset();
        let next = Transaction {
            records: vec![("out".into(), vec![value("d")])],
            offsets: None,
        };
        client
            .commit_transaction(&successor, next)
            .await
            .expect("commit");
        assert!(out.log_end_offset() > end);
    }

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
