//! The transaction coordinator: Kafka's exactly-once protocol (KIP-98, KIP-447), on Kafka's
//! model.
//!
//! A transactional producer finds its coordinator (FindCoordinator, key type 1): the leader of
//! partition [`partition_for`]`(transactional id)` of the compacted internal topic
//! `__transaction_state`. InitProducerId gives it a producer id and a new epoch, which fences
//! every older producer with the same transactional id (their requests get PRODUCER_FENCED, and
//! partitions refuse their batches' older epoch); a transaction the old one left open is aborted
//! first. The producer then names each partition before writing to it (AddPartitionsToTxn) and
//! each group whose offsets it commits (AddOffsetsToTxn: the group's `__consumer_offsets`
//! partition joins the transaction; TxnOffsetCommit goes to the group coordinator, `group/`).
//! EndTxn commits or aborts: the coordinator records PrepareCommit (or PrepareAbort), writes a
//! marker into every partition of the transaction ([`markers`]: directly where it leads the
//! partition, by WriteTxnMarkers to the leader elsewhere), then records CompleteCommit and
//! answers. Consumers reading `read_committed` stop at each partition's last stable offset and
//! skip aborted records (`log/`).
//!
//! Every state change is written to `__transaction_state` ([`stored`]) and acknowledged once on
//! disk and, in a cluster, on every in-sync replica, before memory changes. After a restart (or
//! when this broker becomes the leader of a `__transaction_state` partition) the state is read
//! back: a transaction found preparing is completed, one found ongoing is aborted with a bumped
//! epoch (its producer is fenced: it lost its coordinator mid-transaction). Transactions open
//! longer than their timeout are aborted the same way ([`TransactionCoordinator::expire`]);
//! transactional ids idle for `transactional.id.expiration.ms` are forgotten.
//!
//! Requests for one transactional id run one at a time (each id's state sits behind an async
//! lock held through its log write and markers); different ids run concurrently.

pub(crate) mod markers;
mod stored;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::broker::{now_ms, Broker};
use crate::cluster::hosted::HostedPartitions;
use crate::cluster::topics::ensure_internal_topic;
use crate::error::{BrokerError, Result, TxnError};
use crate::group::offsets::{
    coordinator_error, internal_topic_config, key_partition, OFFSETS_TOPIC,
};
use crate::limits::{TRANSACTIONAL_IDS_MAX, TRANSACTION_PARTITIONS_MAX};
use crate::log::batch::{decode_records, BatchBuilder};
use crate::partition::Partition;

/// The internal topic holding transaction state.
pub const TXN_STATE_TOPIC: &str = "__transaction_state";
/// Partitions of `__transaction_state` (Kafka's default is 50; one here, as for offsets).
pub(crate) const TXN_STATE_PARTITIONS: i32 = 1;
/// How long a write to `__transaction_state` waits for the in-sync replicas in a cluster.
const WRITE_TIMEOUT_MS: i32 = 5_000;

/// The partition of `__transaction_state` holding a transactional id's state.
pub fn partition_for(transactional_id: &str) -> i32 {
    key_partition(transactional_id, TXN_STATE_PARTITIONS)
}

/// Kafka's `TransactionState`, with its stored ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
    Dead = 6,
    PrepareEpochFence = 7,
}

impl TxnState {
    fn from_i8(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions give it.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    fn preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// One transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    /// -1 until InitProducerId first succeeds.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions of the ongoing (or completing) transaction.
    pub partitions: BTreeSet<(String, i32)>,
    pub update_ms: i64,
    /// When the ongoing transaction began (its first AddPartitionsToTxn).
    pub start_ms: i64,
}

impl TxnMetadata {
    fn new(transactional_id: &str) -> TxnMetadata {
        TxnMetadata {
            transactional_id: transactional_id.to_string(),
            producer_id: -1,
            producer_epoch: -1,
            timeout_ms: 0,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            update_ms: 0,
            start_ms: -1,
        }
    }

    fn error(&self, kind: TxnError) -> BrokerError {
        BrokerError::Transaction {
            transactional_id: self.transactional_id.clone(),
            kind,
        }
    }

    /// Checks that a request comes from the current producer of this id.
    fn check_producer(&self, producer_id: i64, producer_epoch: i16) -> Result<()> {
        if producer_id != self.producer_id {
            return Err(self.error(TxnError::InvalidProducerIdMapping));
        }
        if producer_epoch != self.producer_epoch {
            return Err(self.error(TxnError::ProducerFenced {
                epoch: producer_epoch,
                current: self.producer_epoch,
            }));
        }
        Ok(())
    }
}

type Entry = Arc<tokio::sync::Mutex<TxnMetadata>>;

/// The transaction coordinator of one broker.
pub struct TransactionCoordinator {
    txns: Mutex<HashMap<String, Entry>>,
    /// In a cluster: the `__transaction_state` partitions led here (`cluster/hosted.rs`).
    hosted: HostedPartitions,
    creating_topic: AtomicBool,
}

impl Default for TransactionCoordinator {
    fn default() -> Self {
        TransactionCoordinator {
            txns: Mutex::new(HashMap::new()),
            hosted: HostedPartitions::new(TXN_STATE_TOPIC),
            creating_topic: AtomicBool::new(false),
        }
    }
}

/// What InitProducerId asked for.
pub struct InitRequest<'a> {
    pub transactional_id: &'a str,
    pub timeout_ms: i32,
    /// KIP-360: the producer id and epoch the producer had, to bump after an abortable error.
    pub current: Option<(i64, i16)>,
}

impl TransactionCoordinator {
    /// Checks that this broker coordinates `transactional_id` (always on a single node).
    pub fn check_coordinator(&self, broker: &Broker, transactional_id: &str) -> Result<()> {
        let partition = partition_for(transactional_id);
        self.hosted.check(broker, partition, transactional_id)
    }

    fn entry(&self, transactional_id: &str) -> Option<Entry> {
        self.txns.lock().get(transactional_id).cloned()
    }

    /// Locks a transactional id's state, checking (again, once locked) that it is coordinated
    /// here: a leadership lost while waiting must not act on unloaded state.
    async fn lock(
        &self,
        broker: &Broker,
        transactional_id: &str,
        create: bool,
    ) -> Result<tokio::sync::OwnedMutexGuard<TxnMetadata>> {
        self.check_coordinator(broker, transactional_id)?;
        let entry = {
            let mut txns = self.txns.lock();
            match txns.get(transactional_id) {
                Some(entry) => Arc::clone(entry),
                None if create && txns.len() >= TRANSACTIONAL_IDS_MAX => {
                    return Err(BrokerError::Transaction {
                        transactional_id: transactional_id.to_string(),
                        kind: TxnError::TooManyTransactionalIds {
                            max: TRANSACTIONAL_IDS_MAX,
                        },
                    })
                }
                None if create => {
                    Arc::clone(txns.entry(transactional_id.to_string()).or_insert_with(|| {
                        Arc::new(tokio::sync::Mutex::new(TxnMetadata::new(transactional_id)))
                    }))
                }
                None => {
                    return Err(BrokerError::Transaction {
                        transactional_id: transactional_id.to_string(),
                        kind: TxnError::InvalidProducerIdMapping,
                    })
                }
            }
        };
        let guard = entry.clone().lock_owned().await;
        self.check_coordinator(broker, transactional_id)?;
        let current = self.entry(transactional_id);
        if !current.is_some_and(|c| Arc::ptr_eq(&c, &entry)) {
            return Err(BrokerError::NotCoordinator(transactional_id.to_string()));
        }
        Ok(guard)
    }

    /// InitProducerId with a transactional id: a producer id and a new epoch, fencing older
    /// producers of the id; an open transaction of theirs is aborted first.
    pub async fn init_producer_id(
        &self,
        broker: &Arc<Broker>,
        request: InitRequest<'_>,
    ) -> Result<(i64, i16)> {
        let max = broker.config.transaction_max_timeout_ms;
        if request.timeout_ms <= 0 || request.timeout_ms > max {
            return Err(BrokerError::Transaction {
                transactional_id: request.transactional_id.to_string(),
                kind: TxnError::InvalidTransactionTimeout {
                    timeout_ms: request.timeout_ms,
                    max_ms: max,
                },
            });
        }
        let mut txn = self.lock(broker, request.transactional_id, true).await?;
        if let Some((producer_id, epoch)) = request.current.filter(|(id, _)| *id >= 0) {
            // KIP-360: only the current producer may bump its own epoch.
            if producer_id != txn.producer_id || epoch != txn.producer_epoch {
                return Err(txn.error(TxnError::ProducerFenced {
                    epoch,
                    current: txn.producer_epoch,
                }));
            }
        }
        if txn.state == TxnState::Ongoing {
            end_fenced(broker, &mut txn).await?;
        } else if txn.state.preparing() {
            complete(broker, &mut txn).await?;
        }
        let mut next = txn.clone();
        if next.producer_id < 0 || next.producer_epoch >= i16::MAX - 1 {
            next.producer_id = allocate_producer_id(broker).await?;
            next.producer_epoch = 0;
        } else {
            next.producer_epoch += 1;
        }
        next.timeout_ms = request.timeout_ms;
        next.state = TxnState::Empty;
        next.partitions.clear();
        next.start_ms = -1;
        persist(broker, &mut txn, next).await?;
        Ok((txn.producer_id, txn.producer_epoch))
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition): the
    /// partitions join the producer's transaction, which begins if none is open.
    pub async fn add_partitions(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer: (i64, i16),
        partitions: &[(String, i32)],
    ) -> Result<()> {
        let mut txn = self.lock(broker, transactional_id, false).await?;
        txn.check_producer(producer.0, producer.1)?;
        if txn.state.preparing() || txn.state == TxnState::PrepareEpochFence {
            return Err(txn.error(TxnError::ConcurrentTransactions));
        }
        let known = partitions.iter().all(|p| txn.partitions.contains(p));
        if txn.state == TxnState::Ongoing && known {
            return Ok(());
        }
        let mut next = txn.clone();
        next.partitions.extend(partitions.iter().cloned());
        if next.partitions.len() > TRANSACTION_PARTITIONS_MAX {
            return Err(txn.error(TxnError::TooManyPartitions {
                max: TRANSACTION_PARTITIONS_MAX,
            }));
        }
        if next.state != TxnState::Ongoing {
            next.state = TxnState::Ongoing;
            next.start_ms = now_ms();
        }
        persist(broker, &mut txn, next).await
    }

    /// EndTxn: commits or aborts the producer's transaction; answered once every marker is
    /// written. A retry of a finished EndTxn with the same outcome succeeds.
    pub async fn end_txn(
        &self,
        broker: &Arc<Broker>,
        transactional_id: &str,
        producer: (i64, i16),
        commit: bool,
    ) -> Result<()> {
        let mut txn = self.lock(broker, transactional_id, false).await?;
        txn.check_producer(producer.0, producer.1)?;
        match (txn.state, commit) {
            (TxnState::Ongoing, _) => {
                let mut next = txn.clone();
                next.state = match commit {
                    true => TxnState::PrepareCommit,
                    false => TxnState::PrepareAbort,
                };
                persist(broker, &mut txn, next).await?;
                complete(broker, &mut txn).await
            }
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                complete(broker, &mut txn).await
            }
            (TxnState::PrepareCommit | TxnState::PrepareAbort, _) => {
                Err(txn.error(TxnError::ConcurrentTransactions))
            }
            (state, _) => Err(txn.error(TxnError::InvalidTxnState {
                state: state.name(),
                commit,
            })),
        }
    }

    /// Aborts transactions open longer than their timeout (bumping the epoch: their producer
    /// is fenced), finishes ones left preparing, and forgets transactional ids idle longer than
    /// `transactional.id.expiration.ms`. Ids busy with a request are left for the next round.
    pub async fn expire(&self, broker: &Arc<Broker>) {
        let now = now_ms();
        let entries: Vec<(String, Entry)> = self
            .txns
            .lock()
            .iter()
            .map(|(id, e)| (id.clone(), Arc::clone(e)))
            .collect();
        for (id, entry) in entries {
            if self.check_coordinator(broker, &id).is_err() {
                continue;
            }
            let Ok(mut txn) = entry.clone().try_lock_owned() else {
                continue;
            };
            let outcome = match txn.state {
                TxnState::Ongoing if now - txn.start_ms > txn.timeout_ms as i64 => {
                    tracing::info!(transactional_id = %id, "aborting a transaction past its timeout");
                    end_fenced(broker, &mut txn).await
                }
                TxnState::PrepareCommit | TxnState::PrepareAbort => {
                    complete(broker, &mut txn).await
                }
                TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    if now - txn.update_ms > broker.config.transactional_id_expiration_ms =>
                {
                    match remove(broker, &txn).await {
                        Ok(()) => {
                            self.txns
                                .lock()
                                .retain(|k, e| k != &id || !Arc::ptr_eq(e, &entry));
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                _ => Ok(()),
            };
            if let Err(e) = outcome {
                tracing::warn!(transactional_id = %id, error = %e, "transaction housekeeping failed; retrying later");
            }
        }
    }

    /// Every transactional id coordinated here (ListTransactions, DescribeTransactions).
    pub fn snapshot(&self) -> Vec<TxnMetadata> {
        let entries: Vec<Entry> = self.txns.lock().values().cloned().collect();
        entries
            .iter()
            .filter_map(|e| e.try_lock().ok().map(|t| t.clone()))
            .filter(|t| t.producer_id >= 0)
            .collect()
    }

    /// The state of one transactional id, if coordinated here.
    pub async fn describe(&self, broker: &Broker, transactional_id: &str) -> Result<TxnMetadata> {
        self.check_coordinator(broker, transactional_id)?;
        match self.entry(transactional_id) {
            Some(entry) => Ok(entry.lock().await.clone()),
            None => Err(BrokerError::Transaction {
                transactional_id: transactional_id.to_string(),
                kind: TxnError::TransactionalIdNotFound,
            }),
        }
    }

    /// Puts the states read from a `__transaction_state` partition in memory and, in the
    /// background, finishes what they left: preparing transactions are completed, ongoing
    /// ones aborted.
    fn restore(&self, broker: &Arc<Broker>, states: BTreeMap<String, Option<TxnMetadata>>) {
        let mut txns = self.txns.lock();
        let mut unfinished = Vec::new();
        for (id, state) in states {
            let Some(state) = state else {
                txns.remove(&id);
                continue;
            };
            if matches!(state.state, TxnState::Ongoing) || state.state.preparing() {
                unfinished.push(id.clone());
            }
            txns.insert(id, Arc::new(tokio::sync::Mutex::new(state)));
        }
        drop(txns);
        if unfinished.is_empty() {
            return;
        }
        let broker = Arc::clone(broker);
        tokio::spawn(async move {
            for id in unfinished {
                let coordinator = &broker.transactions;
                let Ok(mut txn) = coordinator.lock(&broker, &id, false).await else {
                    continue;
                };
                let outcome = match txn.state {
                    TxnState::Ongoing => end_fenced(&broker, &mut txn).await,
                    state if state.preparing() => complete(&broker, &mut txn).await,
                    _ => Ok(()),
                };
                if let Err(e) = outcome {
                    tracing::warn!(transactional_id = %id, error = %e, "could not finish a recovered transaction; retrying later");
                }
            }
        });
    }

    /// Drops the ids of `__transaction_state` partition `index` (no longer led here).
    fn unload(&self, index: i32) {
        self.txns.lock().retain(|id, _| partition_for(id) != index);
    }

    /// The cluster's reconciliation reports that this node leads `__transaction_state`
    /// partition `partition` (`leader`) or not. Leading starts loading its states; ceasing to
    /// lead drops them.
    pub fn partition_role_changed(broker: &Arc<Broker>, partition: i32, leader: bool) {
        let coordinator = &broker.transactions;
        let unload = || {
            coordinator.unload(partition);
            tracing::info!(
                partition,
                "no longer coordinating the transactions of a partition"
            );
        };
        let Some(load) = coordinator.hosted.role_changed(partition, leader, unload) else {
            return;
        };
        let broker = Arc::clone(broker);
        tokio::spawn(async move {
            let coordinator = &broker.transactions;
            coordinator
                .hosted
                .run(&broker, load, read_states, |states| {
                    coordinator.unload(partition);
                    let count = states.len();
                    coordinator.restore(&broker, states);
                    tracing::info!(
                        partition,
                        transactional_ids = count,
                        "coordinating the transactions of a partition"
                    );
                })
                .await;
        });
    }

    /// In a cluster: whether `__transaction_state` exists; if not, proposes its creation in the
    /// background. Until then FindCoordinator answers COORDINATOR_NOT_AVAILABLE.
    pub fn ensure_topic(broker: &Arc<Broker>) -> bool {
        ensure_internal_topic(
            broker,
            TXN_STATE_TOPIC,
            TXN_STATE_PARTITIONS,
            internal_topic_config(),
            |b| &b.transactions.creating_topic,
        )
    }
}

/// The last state of every transactional id in a `__transaction_state` partition, read from
/// its log start to its log end (`None`: removed).
fn read_states(partition: &Partition) -> Result<BTreeMap<String, Option<TxnMetadata>>> {
    let mut states = BTreeMap::new();
    let mut offset = partition.log_start_offset();
    let end = partition.log_end_offset();
    while offset < end {
        let bytes = partition.read_replica(offset, 1 << 20)?;
        let records = decode_records(&bytes).map_err(BrokerError::CorruptMessage)?;
        let Some(last) = records.last() else { break };
        offset = last.offset + 1;
        for record in records.into_iter().filter(|r| r.offset < end) {
            let Some(id) = record.key.and_then(stored::decode_key) else {
                continue;
            };
            let state = record.value.and_then(|v| stored::decode_value(&id, v));
            states.insert(id, state);
        }
    }
    Ok(states)
}

/// On a single node, at start-up: loads `__transaction_state` and finishes what it left.
pub(crate) fn restore(broker: &Arc<Broker>) -> Result<()> {
    let Some(topic) = broker.topic(TXN_STATE_TOPIC) else {
        return Ok(());
    };
    for partition in &topic.partitions {
        let states = read_states(partition)?;
        tracing::info!(
            transactional_ids = states.len(),
            "restored transaction state"
        );
        broker.transactions.restore(broker, states);
    }
    Ok(())
}

/// A new producer id: from this broker's block, or the cluster's.
pub(crate) async fn allocate_producer_id(broker: &Broker) -> Result<i64> {
    match broker.cluster() {
        Some(node) => node.allocate_producer_id().await,
        None => broker.allocate_producer_id(),
    }
}

/// The partition of `__transaction_state` for `transactional_id`, created on a single node.
fn state_partition(broker: &Broker, transactional_id: &str) -> Result<Arc<Partition>> {
    let index = partition_for(transactional_id);
    if broker.cluster().is_none() && broker.topic(TXN_STATE_TOPIC).is_none() {
        match broker.create_topic(
            TXN_STATE_TOPIC,
            TXN_STATE_PARTITIONS,
            internal_topic_config(),
        ) {
            Ok(_) | Err(BrokerError::TopicAlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    broker
        .partition(TXN_STATE_TOPIC, index)
        .map_err(|e| coordinator_error(transactional_id, e))
}

/// Writes `value` (None: a tombstone) for a transactional id and waits until it is on disk and
/// on every in-sync replica.
async fn write_state(
    broker: &Broker,
    transactional_id: &str,
    value: Option<&TxnMetadata>,
) -> Result<()> {
    let partition = state_partition(broker, transactional_id)?;
    let failed = |e| coordinator_error(transactional_id, e);
    let now = now_ms();
    partition.check_min_insync(now).map_err(failed)?;
    let leader_epoch = partition.role().leader_epoch();
    let key = stored::encode_key(transactional_id);
    let value = value.map(stored::encode_value);
    let mut builder =
        BatchBuilder::new(now, key.len() + value.as_ref().map_or(0, |v| v.len()) + 64);
    builder.push(now, Some(&key), value.as_deref(), &[]);
    let info = partition
        .append(&mut builder.finish(), now)
        .map_err(failed)?;
    partition
        .wait_durable(info.last_offset)
        .await
        .map_err(failed)?;
    partition
        .wait_replicated(info.last_offset, leader_epoch, WRITE_TIMEOUT_MS)
        .await
        .map_err(failed)
}

/// Records `next` as the id's state, then holds it in memory; on failure memory is unchanged.
async fn persist(broker: &Broker, txn: &mut TxnMetadata, mut next: TxnMetadata) -> Result<()> {
    next.update_ms = now_ms();
    write_state(broker, &txn.transactional_id, Some(&next)).await?;
    *txn = next;
    Ok(())
}

/// Forgets an idle transactional id: a tombstone in `__transaction_state`.
async fn remove(broker: &Broker, txn: &TxnMetadata) -> Result<()> {
    write_state(broker, &txn.transactional_id, None).await
}

/// The epoch of this coordinator's `__transaction_state` partition, written in each marker so
/// partitions can ignore a deposed coordinator's.
fn coordinator_epoch(broker: &Broker, transactional_id: &str) -> i32 {
    broker
        .partition(TXN_STATE_TOPIC, partition_for(transactional_id))
        .map_or(0, |p| p.leader_epoch().max(0))
}

/// Writes the markers of a prepared transaction into every partition, then records it
/// complete.
async fn complete(broker: &Arc<Broker>, txn: &mut TxnMetadata) -> Result<()> {
    let commit = match txn.state {
        TxnState::PrepareCommit => true,
        TxnState::PrepareAbort => false,
        other => unreachable!("only a prepared transaction completes, not {other:?}"),
    };
    let epoch = coordinator_epoch(broker, &txn.transactional_id);
    markers::write_all(
        broker,
        markers::Marker {
            producer_id: txn.producer_id,
            producer_epoch: txn.producer_epoch,
            commit,
            coordinator_epoch: epoch,
        },
        &txn.partitions,
    )
    .await;
    let mut next = txn.clone();
    next.state = match commit {
        true => TxnState::CompleteCommit,
        false => TxnState::CompleteAbort,
    };
    next.partitions.clear();
    next.start_ms = -1;
    persist(broker, txn, next).await
}

/// Aborts the open transaction with the epoch bumped, so its producer is fenced: its batches
/// and requests carry an older epoch from now on.
async fn end_fenced(broker: &Arc<Broker>, txn: &mut TxnMetadata) -> Result<()> {
    let mut next = txn.clone();
    next.producer_epoch = next.producer_epoch.saturating_add(1);
    next.state = TxnState::PrepareAbort;
    persist(broker, txn, next).await?;
    complete(broker, txn).await
}

/// The group coordinator's `__consumer_offsets` partition a group's transactional offsets go
/// to, as a partition of the transaction (AddOffsetsToTxn).
pub fn offsets_partition_of(group: &str) -> (String, i32) {
    (
        OFFSETS_TOPIC.to_string(),
        crate::group::offsets::partition_for(group),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::group::offsets::{append_transactional_commit, committed_for_tests};
    use crate::log::batch::{headers, parse_control_marker};
    use crate::BrokerConfig;

    async fn broker(dir: &std::path::Path) -> Arc<Broker> {
        Broker::open(BrokerConfig::new(dir)).await.expect("open")
    }

    /// Runs `body` on a broker of its own runtime, then stops both, as a process exit would
    /// (the background tasks hold the broker and its data directory lock).
    fn run<T>(dir: &std::path::Path, body: impl AsyncFnOnce(Arc<Broker>) -> T) -> T {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let broker = broker(dir).await;
            let out = body(Arc::clone(&broker)).await;
            broker.shutdown().await.expect("shutdown");
            out
        })
    }

    fn init(id: &str) -> InitRequest<'_> {
        InitRequest {
            transactional_id: id,
            timeout_ms: 60_000,
            current: None,
        }
    }

    fn kind(result: Result<impl std::fmt::Debug>) -> TxnError {
        match result {
            Err(BrokerError::Transaction { kind, .. }) => kind,
            other => panic!("expected a transaction error, got {other:?}"),
        }
    }

    /// The markers in a partition's log: (producer id, commit).
    fn markers_in(broker: &Broker, topic: &str) -> Vec<(i64, bool)> {
        let partition = broker.partition(topic, 0).expect("partition");
        let bytes = partition.read_replica(0, 1 << 20).expect("read");
        headers(&bytes)
            .filter(|(_, h)| h.is_control())
            .map(|(position, h)| {
                let batch = bytes.slice(position..position + h.total_bytes());
                let marker = parse_control_marker(&batch).expect("a marker");
                (h.producer_id, marker.commit)
            })
            .collect()
    }

    /// A second InitProducerId for an id fences the first producer: same id, next epoch; the
    /// first producer's requests are answered PRODUCER_FENCED. An id never initialised is
    /// not known; a timeout beyond transaction.max.timeout.ms is refused.
    #[tokio::test]
    async fn a_new_producer_fences_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = broker(dir.path()).await;
        broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
        let coordinator = &broker.transactions;
        let first = coordinator
            .init_producer_id(&broker, init("app"))
            .await
            .expect("init");
        assert_eq!(first.1, 0);
        let second = coordinator
            .init_producer_id(&broker, init("app"))
            .await
            .expect("init");
        assert_eq!(second, (first.0, 1));
        let partitions = [("t".to_string(), 0)];
        let fenced = coordinator
            .add_partitions(&broker, "app", first, &partitions)
            .await;
        assert!(matches!(
            kind(fenced),
            TxnError::ProducerFenced {
                epoch: 0,
                current: 1
            }
        ));
        let wrong_id = coordinator
            .add_partitions(&broker, "app", (first.0 + 1, 1), &partitions)
            .await;
        assert_eq!(kind(wrong_id), TxnError::InvalidProducerIdMapping);
        let unknown = coordinator.end_txn(&broker, "other", second, true).await;
        assert_eq!(kind(unknown), TxnError::InvalidProducerIdMapping);
        let too_long = InitRequest {
            timeout_ms: broker.config.transaction_max_timeout_ms + 1,
            ..init("app")
        };
        let refused = coordinator.init_producer_id(&broker, too_long).await;
        assert!(matches!(
            kind(refused),
            TxnError::InvalidTransactionTimeout { .. }
        ));
    }

    /// Commit writes a commit marker into every partition of the transaction and ends in
    /// CompleteCommit; a retried EndTxn with the same outcome succeeds, the opposite one is
    /// refused; an abort writes abort markers.
    #[tokio::test]
    async fn end_txn_writes_markers_into_every_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = broker(dir.path()).await;
        broker.create_topic("a", 1, BTreeMap::new()).expect("topic");
        broker.create_topic("b", 1, BTreeMap::new()).expect("topic");
        let coordinator = &broker.transactions;
        let producer = coordinator
            .init_producer_id(&broker, init("app"))
            .await
            .expect("init");
        let both = [("a".to_string(), 0), ("b".to_string(), 0)];
        coordinator
            .add_partitions(&broker, "app", producer, &both)
            .await
            .expect("add");
        assert_eq!(
            coordinator
                .describe(&broker, "app")
                .await
                .expect("known")
                .state,
            TxnState::Ongoing
        );
        coordinator
            .end_txn(&broker, "app", producer, true)
            .await
            .expect("commit");
        coordinator
            .end_txn(&broker, "app", producer, true)
            .await
            .expect("a retry succeeds");
        let opposite = coordinator.end_txn(&broker, "app", producer, false).await;
        assert!(matches!(kind(opposite), TxnError::InvalidTxnState { .. }));
        let state = coordinator.describe(&broker, "app").await.expect("known");
        assert_eq!(state.state, TxnState::CompleteCommit);
        assert!(state.partitions.is_empty());
        assert_eq!(markers_in(&broker, "a"), [(producer.0, true)]);
        assert_eq!(markers_in(&broker, "b"), [(producer.0, true)]);
        coordinator
            .add_partitions(&broker, "app", producer, &both[..1])
            .await
            .expect("add");
        coordinator
            .end_txn(&broker, "app", producer, false)
            .await
            .expect("abort");
        assert_eq!(
            markers_in(&broker, "a"),
            [(producer.0, true), (producer.0, false)]
        );
        assert_eq!(markers_in(&broker, "b"), [(producer.0, true)]);
    }

    /// A transaction open when the broker stops is aborted when it restarts, with the epoch
    /// bumped (its producer is fenced); committed state comes back as it was.
    #[test]
    fn a_restart_aborts_open_transactions_and_keeps_finished_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (open, done) = run(dir.path(), async |broker: Arc<Broker>| {
            broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
            let coordinator = &broker.transactions;
            let partitions = [("t".to_string(), 0)];
            let done = coordinator
                .init_producer_id(&broker, init("done"))
                .await
                .expect("init");
            coordinator
                .add_partitions(&broker, "done", done, &partitions)
                .await
                .expect("add");
            coordinator
                .end_txn(&broker, "done", done, true)
                .await
                .expect("commit");
            let open = coordinator
                .init_producer_id(&broker, init("open"))
                .await
                .expect("init");
            coordinator
                .add_partitions(&broker, "open", open, &partitions)
                .await
                .expect("add");
            (open, done)
        });
        run(dir.path(), async |broker: Arc<Broker>| {
            let coordinator = &broker.transactions;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let state = coordinator
                    .describe(&broker, "open")
                    .await
                    .expect("restored");
                if state.state == TxnState::CompleteAbort {
                    assert_eq!(
                        (state.producer_id, state.producer_epoch),
                        (open.0, open.1 + 1)
                    );
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "still {:?}",
                    state.state
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(markers_in(&broker, "t").contains(&(open.0, false)));
            let fenced = coordinator.end_txn(&broker, "open", open, true).await;
            assert!(matches!(kind(fenced), TxnError::ProducerFenced { .. }));
            let state = coordinator
                .describe(&broker, "done")
                .await
                .expect("restored");
            assert_eq!(
                (state.state, state.producer_epoch),
                (TxnState::CompleteCommit, done.1)
            );
        });
    }

    /// A transaction open longer than its timeout is aborted by the periodic check, fencing
    /// its producer.
    #[tokio::test]
    async fn transactions_past_their_timeout_are_aborted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = broker(dir.path()).await;
        broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
        let coordinator = &broker.transactions;
        let short = InitRequest {
            timeout_ms: 1,
            ..init("app")
        };
        let producer = coordinator
            .init_producer_id(&broker, short)
            .await
            .expect("init");
        let partitions = [("t".to_string(), 0)];
        coordinator
            .add_partitions(&broker, "app", producer, &partitions)
            .await
            .expect("add");
        tokio::time::sleep(Duration::from_millis(5)).await;
        coordinator.expire(&broker).await;
        let state = coordinator.describe(&broker, "app").await.expect("known");
        assert_eq!(state.state, TxnState::CompleteAbort);
        assert_eq!(state.producer_epoch, producer.1 + 1);
        assert_eq!(markers_in(&broker, "t"), [(producer.0, false)]);
    }

    /// Offsets committed in a transaction are invisible until it commits, dropped if it aborts,
    /// and come back after a restart only if committed (an open one's stay pending).
    #[test]
    fn transactional_offsets_apply_on_commit_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let offsets = |o| vec![("t".to_string(), 0, committed_for_tests(o))];
        run(dir.path(), async |broker: Arc<Broker>| {
            broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
            let coordinator = &broker.transactions;
            let store = &broker.groups.offsets;
            let cases = [
                ("c", "gc", 5, Some(true)),
                ("a", "ga", 6, Some(false)),
                ("o", "go", 7, None),
            ];
            for (id, group, offset, commit) in cases {
                let producer = coordinator
                    .init_producer_id(&broker, init(id))
                    .await
                    .expect("init");
                let partition = offsets_partition_of(group);
                coordinator
                    .add_partitions(&broker, id, producer, &[partition])
                    .await
                    .expect("add");
                append_transactional_commit(&broker, group, producer, offsets(offset))
                    .expect("append")
                    .expect("a write")
                    .settle(store)
                    .await
                    .expect("settles");
                assert_eq!(store.committed(group, "t", 0), None, "invisible while open");
                assert!(store.in_open_transaction(group, "t", 0));
                if let Some(commit) = commit {
                    coordinator
                        .end_txn(&broker, id, producer, commit)
                        .await
                        .expect("end");
                    assert!(!store.in_open_transaction(group, "t", 0));
                }
            }
            assert_eq!(store.committed("gc", "t", 0).map(|o| o.offset), Some(5));
            assert_eq!(store.committed("ga", "t", 0), None);
        });
        run(dir.path(), async |broker: Arc<Broker>| {
            let store = &broker.groups.offsets;
            assert_eq!(store.committed("gc", "t", 0).map(|o| o.offset), Some(5));
            assert_eq!(store.committed("ga", "t", 0), None);
            assert_eq!(store.committed("go", "t", 0), None);
            // The restart aborts the open transaction, which drops its offsets for good.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while store.in_open_transaction("go", "t", 0) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the open transaction was not aborted"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(store.committed("go", "t", 0), None);
        });
    }
}
