//! [`KafkaClient`]: the [`LogClient`] over the Kafka wire protocol, for Eddy's own broker nodes or
//! any Kafka-compatible cluster.
//!
//! Requests for a partition go to its leader (from Metadata); group and transaction requests go
//! to the coordinator of the group or transactional id (from FindCoordinator, asked each time);
//! a failed partition request forgets the leader, so the next one asks Metadata again.
//! Connections are pooled per node and lane, one request at a time each ([`connection`]).
//! Versions are fixed ones every Kafka since 2.4 (and Eddy) serves; transactions use the newest
//! before KIP-890 (InitProducerId v4, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and
//! EndTxn v3), which answer PRODUCER_FENCED (KIP-588).
//!
//! A transaction goes as a Java producer's `TransactionManager` sends it: AddPartitionsToTxn
//! and AddOffsetsToTxn to the transaction coordinator, Produce to each partition's leader,
//! TxnOffsetCommit to the group coordinator, then EndTxn; after any failure, EndTxn(abort).

pub(crate) mod connection;
mod transaction;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Request;
use parking_lot::Mutex;

use crate::client::{
    encode_batch, partition_records, split_batches, LogClient, OffsetRange, ProducerRecord,
    Transaction, TransactionalProducer,
};
use crate::error::{BrokerError, ReplicationError, Result, TxnError};
use crate::group::PartitionLag;
use crate::log::batch::{decode_records, ConsumedRecord};
use crate::partitioner::StickyPartitioner;
use crate::protocol::str_bytes;
use connection::{Connections, Lane, Retry};

pub use connection::{
    CONNECT_TIMEOUT, CONTROL_CONNECTIONS_MAX, FETCH_CONNECTIONS_MAX, REQUEST_TIMEOUT,
};

const PRODUCE_VERSION: i16 = 8;
const FETCH_VERSION: i16 = 11;
const LIST_OFFSETS_VERSION: i16 = 5;
const METADATA_VERSION: i16 = 9;
const CREATE_TOPICS_VERSION: i16 = 5;
const DELETE_TOPICS_VERSION: i16 = 4;
const FIND_COORDINATOR_VERSION: i16 = 2;
const OFFSET_COMMIT_VERSION: i16 = 7;
const OFFSET_FETCH_VERSION: i16 = 6;
const INIT_PRODUCER_ID_VERSION: i16 = 4;
const ADD_PARTITIONS_TO_TXN_VERSION: i16 = 3;
const ADD_OFFSETS_TO_TXN_VERSION: i16 = 3;
const TXN_OFFSET_COMMIT_VERSION: i16 = 3;
const END_TXN_VERSION: i16 = 3;

/// How long a request waits, retrying, for a partition's leadership to settle (a failover) or
/// a coordinator to answer.
const RETRY_WAIT: Duration = Duration::from_secs(30);
/// The first pause between such retries; it doubles up to [`RETRY_BACKOFF_MAX`].
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What a coordinator coordinates: FindCoordinator's key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Group = 0,
    Transaction = 1,
}

/// Whether `error` says the partition's leadership is moving: the request was not carried
/// out, and may go again once the client has asked where the partition lives now.
fn is_leader_change(error: &BrokerError) -> bool {
    matches!(
        error,
        BrokerError::Replication {
            kind: ReplicationError::NotLeaderOrFollower
                | ReplicationError::LeaderNotAvailable
                | ReplicationError::FencedLeaderEpoch { .. }
                | ReplicationError::UnknownLeaderEpoch { .. }
                | ReplicationError::NotEnoughReplicas { .. }
                | ReplicationError::UnknownToLeader,
            ..
        }
    )
}

/// Whether `error` says a transaction or group request was not carried out and may be sent
/// again: its coordinator moved, is loading, or could not be reached (the next attempt finds it
/// again), or is still completing the id's previous transaction. Java's `TransactionManager`
/// retries the same errors. Every such request may be sent twice: the coordinator answers a
/// repeat as it answered the first (see `transaction.rs`).
fn is_coordinator_retriable(error: &BrokerError) -> bool {
    matches!(
        error,
        BrokerError::CoordinatorNotAvailable(..)
            | BrokerError::NotCoordinator(_)
            | BrokerError::CoordinatorLoadInProgress(_)
            | BrokerError::Transaction {
                kind: TxnError::ConcurrentTransactions,
                ..
            }
            | BrokerError::NotConnected { .. }
            | BrokerError::Network { .. }
    )
}

/// Runs `attempt` until it succeeds, fails otherwise than by a leader change or a connection
/// that could not be opened (nothing was sent: the leader may have died), or, with `network`,
/// any failure to reach the leader; or [`RETRY_WAIT`] has passed.
async fn retry_leader_changes<T, F, Fut>(network: bool, attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let retryable = |e: &BrokerError| match e {
        BrokerError::NotConnected { .. } => true,
        BrokerError::Network { .. } => network,
        _ => is_leader_change(e),
    };
    retry("partition leadership moving", retryable, attempt).await
}

/// Runs `attempt` until it succeeds, fails with an error `retryable` refuses, or [`RETRY_WAIT`]
/// has passed, pausing between attempts (doubling from [`RETRY_BACKOFF`]).
async fn retry<T, F, Fut>(
    what: &str,
    retryable: impl Fn(&BrokerError) -> bool,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_WAIT;
    let mut backoff = RETRY_BACKOFF;
    loop {
        let retry = match attempt().await {
            Err(e) if retryable(&e) => e,
            done => return done,
        };
        if tokio::time::Instant::now() + backoff > deadline {
            return Err(retry);
        }
        tracing::debug!(error = %retry, "{what}; retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
    }
}

fn code_error(code: i16, context: &str) -> Result<()> {
    if code == 0 {
        return Ok(());
    }
    let name = kafka_protocol::ResponseError::try_from_code(code)
        .map(|e| e.to_string())
        .unwrap_or_default();
    let moving = |kind| {
        Err(BrokerError::Replication {
            kind,
            topic: context.to_string(),
            partition: -1,
        })
    };
    match code {
        5 => moving(ReplicationError::LeaderNotAvailable),
        6 => moving(ReplicationError::NotLeaderOrFollower),
        19 => moving(ReplicationError::NotEnoughReplicas { in_sync: 0, min: 0 }),
        74 => moving(ReplicationError::FencedLeaderEpoch {
            requested: -1,
            current: -1,
        }),
        76 => moving(ReplicationError::UnknownLeaderEpoch {
            requested: -1,
            current: -1,
        }),
        3 => Err(BrokerError::UnknownTopicOrPartition {
            topic: context.to_string(),
            partition: -1,
        }),
        14 => Err(BrokerError::CoordinatorLoadInProgress(context.to_string())),
        15 => Err(BrokerError::CoordinatorNotAvailable(
            context.to_string(),
            "the broker knows none now".into(),
        )),
        16 => Err(BrokerError::NotCoordinator(context.to_string())),
        36 => Err(BrokerError::TopicAlreadyExists(context.to_string())),
        _ => Err(BrokerError::InvalidRequest(format!(
            "{context}: kafka error {code} {name}"
        ))),
    }
}

/// The error for the code of a transactional producer's request, `commit` saying whether it
/// means to commit: the transaction coordinator's refusals as [`BrokerError::Transaction`] (an
/// older epoch at a partition as [`BrokerError::InvalidProducerEpoch`]), other codes as
/// [`code_error`] names them, about `context`. The current epoch and the transaction's state are
/// not on the wire: they come out as -1 and "unknown".
fn txn_code_error(
    code: i16,
    producer: &TransactionalProducer,
    commit: bool,
    context: &str,
) -> Result<()> {
    let (producer_id, epoch) = producer.id_and_epoch();
    let refused = |kind| {
        Err(BrokerError::Transaction {
            transactional_id: producer.transactional_id.clone(),
            kind,
        })
    };
    match code {
        47 => Err(BrokerError::InvalidProducerEpoch {
            producer_id,
            epoch,
            current: -1,
        }),
        48 => refused(TxnError::InvalidTxnState {
            state: "unknown",
            commit,
        }),
        49 => refused(TxnError::InvalidProducerIdMapping),
        51 => refused(TxnError::ConcurrentTransactions),
        90 => refused(TxnError::ProducerFenced { epoch, current: -1 }),
        _ => code_error(code, context),
    }
}

/// The code that tells what went wrong among per-partition codes: the first error other than
/// OPERATION_NOT_ATTEMPTED (55, which a failure elsewhere in the request causes), else that.
fn first_error(codes: impl IntoIterator<Item = i16>) -> i16 {
    let mut found = 0;
    for code in codes {
        match code {
            0 => {}
            55 => found = 55,
            _ => return code,
        }
    }
    found
}

/// A [`LogClient`] speaking the Kafka protocol.
pub struct KafkaClient {
    /// "host:port" of the nodes to ask when no particular one is needed, in turn.
    bootstrap: Vec<String>,
    connections: Connections,
    /// node id -> "host:port"
    nodes: Mutex<HashMap<i32, String>>,
    /// (topic, partition) -> leader node id
    leaders: Mutex<HashMap<(String, i32), i32>>,
    sticky: Mutex<StickyPartitioner>,
}

impl KafkaClient {
    /// Produces one encoded batch to a partition's leader with acks=all, as `producer`'s when
    /// it is a transactional producer's; returns its base offset.
    async fn produce_batch(
        &self,
        topic: &str,
        index: i32,
        batch: Bytes,
        producer: Option<&TransactionalProducer>,
    ) -> Result<i64> {
        let data = PartitionProduceData::default()
            .with_index(index)
            .with_records(Some(batch));
        let transactional_id =
            producer.map(|p| TransactionalId(str_bytes(p.transactional_id.clone())));
        let request = ProduceRequest::default()
            .with_transactional_id(transactional_id)
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partition_data(vec![data])]);
        // Never resent after a failure to hear the answer: the batch may have been appended,
        // and without an idempotent producer a resend could append it twice (a transactional
        // producer's transaction fails instead, and is aborted).
        let response = self
            .send_to_leader(
                topic,
                index,
                Lane::Control,
                Retry::Never,
                PRODUCE_VERSION,
                &request,
                Duration::ZERO,
            )
            .await?;
        let p = response
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .ok_or_else(|| BrokerError::Internal("empty produce response".into()))?;
        match producer {
            Some(producer) if p.error_code != 0 => {
                self.forget_leader(topic, index);
                txn_code_error(p.error_code, producer, true, topic)?;
            }
            _ => self.partition_error(p.error_code, topic, index)?,
        }
        Ok(p.base_offset)
    }

    /// A client that discovers the cluster through `bootstrap`: "host:port", or several
    /// separated by commas. Fails when none of them answers Metadata.
    pub async fn connect(bootstrap: &str) -> Result<KafkaClient> {
        let client = KafkaClient {
            bootstrap: bootstrap
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
            connections: Connections::default(),
            nodes: Mutex::new(HashMap::new()),
            leaders: Mutex::new(HashMap::new()),
            sticky: Mutex::new(StickyPartitioner::new()),
        };
        if client.bootstrap.is_empty() {
            return Err(BrokerError::InvalidRequest(
                "no bootstrap address given (host:port[,host:port...])".into(),
            ));
        }
        client
            .send_to_any(
                Retry::Safe,
                METADATA_VERSION,
                &MetadataRequest::default().with_topics(Some(vec![])),
            )
            .await?;
        Ok(client)
    }

    /// Sends a request that any node can answer: to each bootstrap address in turn until one
    /// answers.
    async fn send_to_any<R: Request>(
        &self,
        retry: Retry,
        version: i16,
        request: &R,
    ) -> Result<R::Response> {
        let mut failure = None;
        for address in &self.bootstrap {
            match self
                .connections
                .send(
                    address,
                    Lane::Control,
                    retry,
                    version,
                    request,
                    Duration::ZERO,
                )
                .await
            {
                Err(e @ (BrokerError::Network { .. } | BrokerError::NotConnected { .. })) => {
                    failure = Some(e)
                }
                answered => return answered,
            }
        }
        Err(failure.expect("at least one bootstrap address"))
    }

    /// Sends a request about one partition to its leader (`wait`: how long the request asks
    /// the broker to wait for data). A failure to reach it forgets the leader, so the next
    /// request asks Metadata where the partition lives now.
    #[allow(clippy::too_many_arguments)]
    async fn send_to_leader<R: Request>(
        &self,
        topic: &str,
        partition: i32,
        lane: Lane,
        retry: Retry,
        version: i16,
        request: &R,
        wait: Duration,
    ) -> Result<R::Response> {
        let address = self.leader(topic, partition).await?;
        let answer = self
            .connections
            .send(&address, lane, retry, version, request, wait)
            .await;
        if answer.is_err() {
            self.forget_leader(topic, partition);
        }
        answer
    }

    /// The error for a partition's error code; any error forgets the partition's leader (it
    /// may have moved: NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION after a re-creation).
    /// A partition-level error code from the partition's leader. The leader is forgotten, so
    /// the next attempt asks for metadata: UNKNOWN_TOPIC_OR_PARTITION from a leader is retried
    /// (a broker applies a new topic a moment after the one that created it, as in Kafka),
    /// and fails for good once the metadata no longer lists the topic.
    fn partition_error(&self, code: i16, topic: &str, partition: i32) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        self.forget_leader(topic, partition);
        if code == kafka_protocol::ResponseError::UnknownTopicOrPartition.code() {
            return Err(BrokerError::Replication {
                kind: ReplicationError::UnknownToLeader,
                topic: topic.to_string(),
                partition,
            });
        }
        code_error(code, topic)
    }

    fn forget_leader(&self, topic: &str, partition: i32) {
        self.leaders.lock().remove(&(topic.to_string(), partition));
    }

    /// Refreshes metadata for `topic` and returns its partition count.
    async fn refresh(&self, topic: &str) -> Result<i32> {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(topic))))
            ]))
            .with_allow_auto_topic_creation(false);
        let response = self
            .send_to_any(Retry::Safe, METADATA_VERSION, &request)
            .await?;
        {
            let mut nodes = self.nodes.lock();
            for b in &response.brokers {
                nodes.insert(b.node_id.0, format!("{}:{}", b.host, b.port));
            }
        }
        let t = response
            .topics
            .iter()
            .find(|t| t.name.as_deref().map(|n| n.as_str()) == Some(topic))
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                topic: topic.into(),
                partition: -1,
            })?;
        code_error(t.error_code, topic)?;
        let mut leaders = self.leaders.lock();
        leaders.retain(|(t, _), _| t != topic);
        for p in &t.partitions {
            leaders.insert((topic.to_string(), p.partition_index), p.leader_id.0);
        }
        Ok(t.partitions.len() as i32)
    }

    /// The address of a partition's leader, from Metadata when it is not known.
    async fn leader(&self, topic: &str, partition: i32) -> Result<String> {
        let key = (topic.to_string(), partition);
        let known = self.leaders.lock().get(&key).copied();
        let node = match known {
            Some(node) => node,
            None => {
                self.refresh(topic).await?;
                self.leaders.lock().get(&key).copied().ok_or_else(|| {
                    BrokerError::UnknownTopicOrPartition {
                        topic: topic.into(),
                        partition,
                    }
                })?
            }
        };
        let address = self.nodes.lock().get(&node).cloned();
        Ok(address.unwrap_or_else(|| self.bootstrap[0].clone()))
    }

    /// Sends a request to the coordinator of `key`, a group or a transactional id (asked for
    /// each time: it may move).
    async fn send_to_coordinator<R: Request>(
        &self,
        key_type: KeyType,
        key: &str,
        version: i16,
        request: &R,
    ) -> Result<R::Response> {
        let find = FindCoordinatorRequest::default()
            .with_key(str_bytes(key))
            .with_key_type(key_type as i8);
        let response = self
            .send_to_any(Retry::Safe, FIND_COORDINATOR_VERSION, &find)
            .await?;
        code_error(response.error_code, key)?;
        let address = format!("{}:{}", response.host, response.port);
        // Offset commits set absolute offsets: sending one twice changes nothing. Transaction
        // requests are answered the same when repeated (see `commit_transaction`).
        self.connections
            .send(
                &address,
                Lane::Control,
                Retry::Safe,
                version,
                request,
                Duration::ZERO,
            )
            .await
    }
}

#[async_trait]
impl LogClient for KafkaClient {
    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<()> {
        let topic = CreatableTopic::default()
            .with_name(TopicName(str_bytes(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(-1)
            .with_configs(
                configs
                    .into_iter()
                    .map(|(k, v)| {
                        CreatableTopicConfig::default()
                            .with_name(str_bytes(k))
                            .with_value(Some(str_bytes(v)))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(30_000);
        // Not resent: a second CreateTopics would answer TOPIC_ALREADY_EXISTS for a topic the
        // first one made.
        let response = self
            .send_to_any(Retry::Never, CREATE_TOPICS_VERSION, &request)
            .await?;
        for t in response.topics {
            code_error(t.error_code, name)?;
        }
        Ok(())
    }

    async fn delete_topic(&self, name: &str) -> Result<()> {
        let request = DeleteTopicsRequest::default()
            .with_topic_names(vec![TopicName(str_bytes(name))])
            .with_timeout_ms(30_000);
        let response = self
            .send_to_any(Retry::Never, DELETE_TOPICS_VERSION, &request)
            .await?;
        for t in response.responses {
            code_error(t.error_code, name)?;
        }
        self.leaders.lock().retain(|(t, _), _| t != name);
        Ok(())
    }

    async fn partition_count(&self, topic: &str) -> Result<i32> {
        self.refresh(topic).await
    }

    async fn topics(&self) -> Result<Vec<(String, i32)>> {
        let request = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false);
        let response = self
            .send_to_any(Retry::Safe, METADATA_VERSION, &request)
            .await?;
        Ok(response
            .topics
            .iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| Some((t.name.as_deref()?.to_string(), t.partitions.len() as i32)))
            .collect())
    }

    async fn produce(&self, topic: &str, records: Vec<ProducerRecord>) -> Result<Vec<(i32, i64)>> {
        let count = self.partition_count(topic).await?;
        let total = records.len();
        let mut placed = vec![(0, 0); total];
        for (index, records) in partition_records(records, count, &self.sticky)? {
            for batch in split_batches(&records) {
                let bytes = encode_batch(batch).freeze();
                // Retried only when the answer says nothing was written.
                let base_offset = retry_leader_changes(false, || {
                    self.produce_batch(topic, index, bytes.clone(), None)
                })
                .await?;
                for (n, (i, _)) in batch.iter().enumerate() {
                    placed[*i] = (index, base_offset + n as i64);
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
        retry_leader_changes(true, || async move {
            let request = FetchRequest::default()
                .with_replica_id((-1).into())
                .with_max_wait_ms(max_wait.as_millis() as i32)
                .with_min_bytes(1)
                .with_max_bytes(max_bytes as i32)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(str_bytes(topic)))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_current_leader_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(max_bytes as i32)])]);
            let response = self
                .send_to_leader(
                    topic,
                    partition,
                    Lane::Fetch,
                    Retry::Safe,
                    FETCH_VERSION,
                    &request,
                    max_wait,
                )
                .await?;
            self.partition_error(response.error_code, topic, partition)?;
            let data = response
                .responses
                .first()
                .and_then(|t| t.partitions.first())
                .ok_or_else(|| BrokerError::Internal("empty fetch response".into()))?;
            if data.error_code == kafka_protocol::ResponseError::OffsetOutOfRange.code() {
                return Err(BrokerError::OffsetOutOfRange {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    log_start_offset: data.log_start_offset,
                    log_end_offset: data.high_watermark,
                });
            }
            self.partition_error(data.error_code, topic, partition)?;
            let bytes = data.records.clone().unwrap_or_else(Bytes::new);
            let records = decode_records(&bytes).map_err(BrokerError::CorruptMessage)?;
            Ok(records.into_iter().filter(|r| r.offset >= offset).collect())
        })
        .await
    }

    async fn offsets(&self, topic: &str, partition: i32) -> Result<OffsetRange> {
        retry_leader_changes(true, || async move {
            let mut found = [0i64; 2];
            for (slot, timestamp) in [(0usize, -2i64), (1, -1)] {
                let request = ListOffsetsRequest::default()
                    .with_replica_id((-1).into())
                    .with_topics(vec![ListOffsetsTopic::default()
                        .with_name(TopicName(str_bytes(topic)))
                        .with_partitions(vec![ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_current_leader_epoch(-1)
                            .with_timestamp(timestamp)])]);
                let response = self
                    .send_to_leader(
                        topic,
                        partition,
                        Lane::Control,
                        Retry::Safe,
                        LIST_OFFSETS_VERSION,
                        &request,
                        Duration::ZERO,
                    )
                    .await?;
                let p = response
                    .topics
                    .first()
                    .and_then(|t| t.partitions.first())
                    .ok_or_else(|| BrokerError::Internal("empty list offsets response".into()))?;
                self.partition_error(p.error_code, topic, partition)?;
                found[slot] = p.offset;
            }
            Ok(OffsetRange {
                log_start_offset: found[0],
                high_watermark: found[1],
            })
        })
        .await
    }

    async fn commit(&self, group: &str, offsets: &[(String, i32, i64)]) -> Result<()> {
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        for (topic, partition, offset) in offsets {
            topics.entry(topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(*partition)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1),
            );
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(str_bytes(t)))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let response = self
            .send_to_coordinator(KeyType::Group, group, OFFSET_COMMIT_VERSION, &request)
            .await?;
        for t in response.topics {
            for p in t.partitions {
                code_error(p.error_code, &t.name)?;
            }
        }
        Ok(())
    }

    async fn committed(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partition_indexes(vec![partition])]));
        let response = self
            .send_to_coordinator(KeyType::Group, group, OFFSET_FETCH_VERSION, &request)
            .await?;
        code_error(response.error_code, group)?;
        let offset = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .map(|p| p.committed_offset)
            .unwrap_or(-1);
        Ok((offset >= 0).then_some(offset))
    }

    async fn lag(&self, group: &str) -> Result<Vec<PartitionLag>> {
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(str_bytes(group)))
            .with_topics(None);
        let response = self
            .send_to_coordinator(KeyType::Group, group, OFFSET_FETCH_VERSION, &request)
            .await?;
        code_error(response.error_code, group)?;
        let mut lags = Vec::new();
        for t in response.topics {
            for p in t.partitions.iter().filter(|p| p.committed_offset >= 0) {
                let range = self.offsets(&t.name, p.partition_index).await?;
                lags.push(PartitionLag {
                    topic: t.name.to_string(),
                    partition: p.partition_index,
                    committed_offset: p.committed_offset,
                    high_watermark: range.high_watermark,
                    lag_records: (range.high_watermark - p.committed_offset).max(0),
                });
            }
        }
        Ok(lags)
    }

    async fn init_transactions(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
    ) -> Result<TransactionalProducer> {
        self.init_producer_id(transactional_id, timeout_ms).await
    }

    /// Places the records, writes them and the offsets (`transaction.rs`), then commits with
    /// EndTxn, retried while the coordinator is busy. After any failure once the transaction
    /// may have begun, one EndTxn(abort) goes as well: an open transaction would otherwise hold
    /// back read_committed readers until its timeout. The abort's own failure is logged only;
    /// the first error is returned.
    async fn commit_transaction(
        &self,
        producer: &TransactionalProducer,
        transaction: Transaction,
    ) -> Result<()> {
        let mut placed = Vec::new();
        for (topic, records) in transaction.records {
            let count = self.partition_count(&topic).await?;
            for (index, records) in partition_records(records, count, &self.sticky)? {
                placed.push((topic.clone(), index, records));
            }
        }
        if placed.is_empty() && transaction.offsets.is_none() {
            // Nothing to write: no transaction begins, as a Java producer sends nothing then.
            return Ok(());
        }
        let committed = match self
            .write_transaction(producer, &placed, transaction.offsets)
            .await
        {
            Ok(()) => {
                retry(
                    "coordinator unavailable or busy",
                    is_coordinator_retriable,
                    || self.end_txn(producer, true),
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(error) = &committed {
            if let Err(abort) = self.end_txn(producer, false).await {
                tracing::debug!(
                    transactional_id = %producer.transactional_id,
                    %error,
                    %abort,
                    "transaction failed and its abort too; its timeout will abort it"
                );
            }
        }
        committed
    }
}
