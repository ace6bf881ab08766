//! Committed offsets, stored as Kafka stores them: records in the compacted internal topic
//! `__consumer_offsets`, keyed by (group, topic, partition).
//!
//! Key (version 1): `i16 version, string group, string topic, i32 partition`.
//! Value (version 3): `i16 version, i64 offset, i32 leader epoch, string metadata, i64 timestamp`.
//! A null value (tombstone) deletes the offset: DeleteGroups and OffsetDelete write them, so a
//! deletion survives a restart. A commit or deletion is acknowledged once its records are synced
//! to disk (the topic is created with `flush.messages=1`); [`OffsetStore`] keeps memory in step
//! with the log. Group metadata records (key version 2, [`super::stored`]) share the topic:
//! [`append_group_metadata`] writes those the coordinator queued, and [`restore`] reads the
//! latest of each group back. In a cluster a write is acknowledged once also replicated to the
//! in-sync set, and each partition is read back when this broker becomes its leader
//! ([`PartitionContents`], `load.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::stored::{self, StoredGroup};
use super::CommittedOffset;
use crate::broker::{now_ms, Broker};
use crate::error::{BrokerError, ReplicationError, Result};
use crate::log::batch::{decode_records, headers, parse_control_marker, BatchBuilder};
use crate::partition::Partition;

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of `__consumer_offsets` (on a single node and in a cluster).
pub(crate) const OFFSETS_PARTITIONS: i32 = 1;
/// How long a write to `__consumer_offsets` in a cluster waits to be replicated to the in-sync
/// set before it fails (Kafka's `offsets.commit.timeout.ms`).
const COMMIT_TIMEOUT_MS: i32 = 5_000;
const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;

/// Writes a Kafka string (i16 length, then UTF-8), as the internal topics' records hold them.
pub(crate) fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

/// Reads a Kafka string; `None` when it is cut short or not UTF-8.
pub(crate) fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 || buf.remaining() < len as usize {
        return None;
    }
    String::from_utf8(buf.split_to(len as usize).to_vec()).ok()
}

fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut key = BytesMut::new();
    key.put_i16(KEY_VERSION);
    put_string(&mut key, group);
    put_string(&mut key, topic);
    key.put_i32(partition);
    key.freeze()
}

fn decode_key(mut key: Bytes) -> Option<(String, String, i32)> {
    if key.remaining() < 2 || !(0..=1).contains(&key.get_i16()) {
        return None; // group metadata records (version 2) are not offsets
    }
    let group = get_string(&mut key)?;
    let topic = get_string(&mut key)?;
    (key.remaining() >= 4).then(|| (group, topic, key.get_i32()))
}

fn encode_value(offset: &CommittedOffset) -> Bytes {
    let mut value = BytesMut::new();
    value.put_i16(VALUE_VERSION);
    value.put_i64(offset.offset);
    value.put_i32(offset.leader_epoch);
    put_string(&mut value, &offset.metadata);
    value.put_i64(offset.commit_timestamp_ms);
    value.freeze()
}

fn decode_value(mut value: Bytes) -> Option<CommittedOffset> {
    if value.remaining() < 10 || value.get_i16() != VALUE_VERSION {
        return None;
    }
    let offset = value.get_i64();
    let leader_epoch = if value.remaining() >= 4 {
        value.get_i32()
    } else {
        -1
    };
    let metadata = get_string(&mut value)?;
    let commit_timestamp_ms = if value.remaining() >= 8 {
        value.get_i64()
    } else {
        0
    };
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

/// The configs of the compacted internal topics (`__consumer_offsets`, `__transaction_state`):
/// compacted, and synced before a write is acknowledged.
pub(crate) fn internal_topic_config() -> BTreeMap<String, String> {
    [
        ("cleanup.policy", "compact"),
        ("flush.messages", "1"),
        ("segment.bytes", "104857600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A change to one partition's committed offset for a group: a new offset, or `None` to delete
/// it (a tombstone).
pub type OffsetChange = (String, i32, Option<CommittedOffset>);

/// Which committed offsets of a group a deletion removes.
pub(crate) enum Deletion<'a> {
    /// All of them (DeleteGroups).
    Group,
    /// Those of these partitions that have one (OffsetDelete).
    Partitions(&'a BTreeSet<(String, i32)>),
}

/// Committed offsets in memory, changed in the order their records stand in
/// `__consumer_offsets`.
///
/// A write is appended to the log when its request arrives, so requests on one connection take
/// effect in the order they were sent, and it is applied here once it is on disk. A write whose
/// sync completes first also applies every write before it (they are on disk too), so memory
/// always equals a prefix of the log, whatever order the waiting tasks resume in.
pub(crate) struct OffsetStore {
    state: Mutex<StoreState>,
    /// Bumped whenever a pending write settles (applied or failed), to wake waiting fetches.
    settled: watch::Sender<u64>,
}

#[derive(Default)]
struct StoreState {
    committed: BTreeMap<(String, String, i32), CommittedOffset>,
    /// Writes in the log but not yet on disk, in log order.
    pending: VecDeque<PendingWrite>,
    /// Offsets committed inside transactions not yet ended (TxnOffsetCommit), by
    /// `__consumer_offsets` partition and producer id, in log order: the transaction's commit
    /// marker applies them, its abort marker drops them.
    in_transactions: BTreeMap<(i32, i64), Vec<(String, OffsetChange)>>,
}

struct PendingWrite {
    /// Offset in `__consumer_offsets` of the write's last record.
    last_offset: i64,
    group: String,
    changes: Vec<OffsetChange>,
    /// For a TxnOffsetCommit: the `__consumer_offsets` partition and the producer id whose
    /// transaction the write belongs to (it waits for its marker once on disk).
    transaction: Option<(i32, i64)>,
}

impl PendingWrite {
    fn touches(&self, group: &str, partitions: Option<&BTreeSet<(String, i32)>>) -> bool {
        self.group == group
            && self.changes.iter().any(|(t, p, _)| {
                // Cloning the key costs less than scanning a client's long list.
                partitions.is_none_or(|wanted| wanted.contains(&(t.clone(), *p)))
            })
    }
}

impl StoreState {
    fn apply(&mut self, group: &str, (topic, partition, value): OffsetChange) {
        let key = (group.to_string(), topic, partition);
        match value {
            Some(offset) => self.committed.insert(key, offset),
            None => self.committed.remove(&key),
        };
    }

    /// Partitions of `group` with an offset, committed or on its way to disk.
    fn partitions_of(&self, group: &str) -> BTreeSet<(String, i32)> {
        let committed = self
            .committed
            .range((group.to_string(), String::new(), i32::MIN)..)
            .take_while(|((g, _, _), _)| g == group)
            .map(|((_, t, p), _)| (t.clone(), *p));
        let pending = self
            .pending
            .iter()
            .filter(|w| w.group == group)
            .flat_map(|w| w.changes.iter())
            .filter(|(_, _, value)| value.is_some())
            .map(|(t, p, _)| (t.clone(), *p));
        committed.chain(pending).collect()
    }
}

impl OffsetStore {
    pub(crate) fn new() -> OffsetStore {
        OffsetStore {
            state: Mutex::new(StoreState::default()),
            settled: watch::Sender::new(0),
        }
    }

    /// The committed offset of one partition for a group.
    pub(crate) fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Option<CommittedOffset> {
        self.state
            .lock()
            .committed
            .get(&(group.to_string(), topic.to_string(), partition))
            .cloned()
    }

    /// Every committed offset of a group: (topic, partition, offset).
    pub(crate) fn committed_for_group(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.state
            .lock()
            .committed
            .range((group.to_string(), String::new(), i32::MIN)..)
            .take_while(|((g, _, _), _)| g == group)
            .map(|((_, t, p), o)| (t.clone(), *p, o.clone()))
            .collect()
    }

    /// Groups with at least one committed offset.
    pub(crate) fn group_ids(&self) -> BTreeSet<String> {
        let state = self.state.lock();
        state.committed.keys().map(|(g, _, _)| g.clone()).collect()
    }

    /// Whether a group has offsets, committed or on their way to disk.
    pub(crate) fn has_offsets(&self, group: &str) -> bool {
        !self.state.lock().partitions_of(group).is_empty()
    }

    /// Whether a write to one partition's offset is in the log but not yet applied.
    pub(crate) fn is_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        let state = self.state.lock();
        state.pending.iter().any(|w| {
            w.group == group
                && w.changes
                    .iter()
                    .any(|(t, p, _)| t == topic && *p == partition)
        })
    }

    /// The last pending write of `group` touching `partitions` (all of the group's when `None`),
    /// as a log offset to wait for with [`OffsetStore::wait_settled`].
    pub(crate) fn pending_through(
        &self,
        group: &str,
        partitions: Option<&BTreeSet<(String, i32)>>,
    ) -> Option<i64> {
        let state = self.state.lock();
        state
            .pending
            .iter()
            .rev()
            .find(|w| w.touches(group, partitions))
            .map(|w| w.last_offset)
    }

    /// Waits, at most `wait`, until no write of `group` touching `partitions` at or before log
    /// offset `through` is pending. Later writes are not waited for, so a stream of commits from
    /// other clients cannot hold a fetch up.
    pub(crate) async fn wait_settled(
        &self,
        group: &str,
        partitions: Option<&BTreeSet<(String, i32)>>,
        through: i64,
        wait: Duration,
    ) {
        let mut settled = self.settled.subscribe();
        let waited = tokio::time::timeout(wait, async {
            loop {
                settled.borrow_and_update();
                let still_pending = self
                    .state
                    .lock()
                    .pending
                    .iter()
                    .take_while(|w| w.last_offset <= through)
                    .any(|w| w.touches(group, partitions));
                if !still_pending || settled.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(group, through, "offset writes did not reach disk in time");
        }
    }

    /// Applies a change read back from the log (at start-up, in log order).
    fn restore(&self, group: &str, change: OffsetChange) {
        self.state.lock().apply(group, change);
    }

    /// Forgets every offset, and every write still pending, of the groups `dropped` picks (their
    /// partition of `__consumer_offsets` is no longer led here). A pending write's waiter then
    /// fails or applies nothing.
    pub(crate) fn drop_groups(&self, dropped: impl Fn(&str) -> bool) {
        let mut state = self.state.lock();
        state.committed.retain(|(group, _, _), _| !dropped(group));
        state.pending.retain(|w| !dropped(&w.group));
        for changes in state.in_transactions.values_mut() {
            changes.retain(|(group, _)| !dropped(group));
        }
        state
            .in_transactions
            .retain(|_, changes| !changes.is_empty());
        drop(state);
        self.settled.send_modify(|n| *n += 1);
    }

    /// Applies, in log order, every pending write up to `durable_through` (now on disk).
    fn apply_durable(&self, durable_through: i64) {
        let mut state = self.state.lock();
        while state
            .pending
            .front()
            .is_some_and(|w| w.last_offset <= durable_through)
        {
            let write = state.pending.pop_front().expect("front checked");
            if let Some(transaction) = write.transaction {
                let group = write.group;
                let changes = write.changes.into_iter().map(|c| (group.clone(), c));
                state
                    .in_transactions
                    .entry(transaction)
                    .or_default()
                    .extend(changes);
                continue;
            }
            for change in write.changes {
                state.apply(&write.group, change);
            }
        }
        drop(state);
        self.settled.send_modify(|n| *n += 1);
    }

    /// A transaction's marker reached `__consumer_offsets` partition `partition`: the offsets
    /// its producer committed there become visible (commit) or are dropped (abort).
    pub(crate) fn end_transaction(&self, partition: i32, producer_id: i64, commit: bool) {
        let mut state = self.state.lock();
        let Some(changes) = state.in_transactions.remove(&(partition, producer_id)) else {
            return;
        };
        if commit {
            for (group, change) in changes {
                state.apply(&group, change);
            }
        }
        drop(state);
        self.settled.send_modify(|n| *n += 1);
    }

    /// Whether an open transaction has committed an offset for this partition of the group
    /// (OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT then, as Kafka does).
    pub(crate) fn in_open_transaction(&self, group: &str, topic: &str, partition: i32) -> bool {
        let state = self.state.lock();
        let touches =
            |(g, (t, p, _)): &(String, OffsetChange)| g == group && t == topic && *p == partition;
        state.in_transactions.values().flatten().any(touches)
    }

    /// Drops a write that failed to reach disk: it is not applied.
    fn forget(&self, last_offset: i64) {
        self.state
            .lock()
            .pending
            .retain(|w| w.last_offset != last_offset);
        self.settled.send_modify(|n| *n += 1);
    }
}

/// A write appended to `__consumer_offsets`; [`Appended::settle`] applies it once on disk
/// (and, in a cluster, replicated).
#[must_use = "an appended write is applied only when settled"]
pub(crate) struct Appended {
    partition: Arc<Partition>,
    last_offset: i64,
    /// The leader epoch the write was appended in (-1 on a single node).
    leader_epoch: i32,
    /// The (last) group written, to name in errors.
    group: String,
}

impl Appended {
    /// Waits until the write is on disk and, in a cluster, on every in-sync replica (as
    /// acks=all; Kafka's `offsets.commit.required.acks=-1`), then applies it (with every write
    /// before it). Leadership lost meanwhile fails it with NOT_COORDINATOR.
    pub(crate) async fn settle(self, store: &OffsetStore) -> Result<()> {
        let mut waited = self.partition.wait_durable(self.last_offset).await;
        if waited.is_ok() {
            // A single node's partition is the only replica: this returns at once.
            waited = self
                .partition
                .wait_replicated(self.last_offset, self.leader_epoch, COMMIT_TIMEOUT_MS)
                .await;
        }
        match waited {
            Ok(()) => {
                store.apply_durable(self.last_offset);
                Ok(())
            }
            Err(e) => {
                store.forget(self.last_offset);
                Err(coordinator_error(&self.group, e))
            }
        }
    }
}

/// The group coordinator's error for a failed write to `__consumer_offsets`, as Kafka's
/// GroupMetadataManager maps them: leadership lost is NOT_COORDINATOR (the client finds the
/// new coordinator), too few replicas or a timeout is COORDINATOR_NOT_AVAILABLE (it retries).
pub(crate) fn coordinator_error(group: &str, error: BrokerError) -> BrokerError {
    match error {
        BrokerError::Replication { kind, .. } => match kind {
            ReplicationError::NotLeaderOrFollower
            | ReplicationError::FencedLeaderEpoch { .. }
            | ReplicationError::UnknownLeaderEpoch { .. } => {
                BrokerError::NotCoordinator(group.to_string())
            }
            other => BrokerError::CoordinatorNotAvailable(group.to_string(), other.to_string()),
        },
        BrokerError::UnknownTopicOrPartition { .. } => BrokerError::CoordinatorNotAvailable(
            group.to_string(),
            format!("{OFFSETS_TOPIC} does not exist yet"),
        ),
        other => other,
    }
}

/// Commits offsets for a group: appends them to `__consumer_offsets`, waits until they are on
/// disk, then makes them visible.
pub async fn commit(
    broker: &Broker,
    group: &str,
    offsets: Vec<(String, i32, CommittedOffset)>,
) -> Result<()> {
    let changes = offsets
        .into_iter()
        .map(|(t, p, o)| (t, p, Some(o)))
        .collect();
    match append_commit(broker, group, changes)? {
        Some(appended) => appended.settle(&broker.groups.offsets).await,
        None => Ok(()),
    }
}

/// Appends committed offsets to `__consumer_offsets` now; they apply once settled.
pub(crate) fn append_commit(
    broker: &Broker,
    group: &str,
    changes: Vec<OffsetChange>,
) -> Result<Option<Appended>> {
    append(broker, group, None, |_| changes)
}

/// TxnOffsetCommit: appends offsets committed inside producer `producer`'s transaction to
/// `__consumer_offsets` as its transactional records; once settled they wait for the
/// transaction's marker ([`OffsetStore::end_transaction`]).
pub(crate) fn append_transactional_commit(
    broker: &Broker,
    group: &str,
    producer: (i64, i16),
    offsets: Vec<(String, i32, CommittedOffset)>,
) -> Result<Option<Appended>> {
    let changes = offsets
        .into_iter()
        .map(|(t, p, o)| (t, p, Some(o)))
        .collect();
    append(broker, group, Some(producer), |_| changes)
}

/// Appends tombstones for a group's offsets to `__consumer_offsets` now; they apply once
/// settled. `None` when there was no offset to delete.
pub(crate) fn append_deletion(
    broker: &Broker,
    group: &str,
    deletion: Deletion<'_>,
) -> Result<Option<Appended>> {
    append(broker, group, None, |state| {
        let mut partitions = state.partitions_of(group);
        if let Deletion::Partitions(wanted) = deletion {
            partitions.retain(|key| wanted.contains(key));
        }
        partitions.into_iter().map(|(t, p)| (t, p, None)).collect()
    })
}

/// Appends the changes `changes_of` picks, under the store's lock so that what it reads and the
/// order of the records agree.
fn append(
    broker: &Broker,
    group: &str,
    producer: Option<(i64, i16)>,
    changes_of: impl FnOnce(&StoreState) -> Vec<OffsetChange>,
) -> Result<Option<Appended>> {
    let partition = offsets_partition(broker, group)?;
    let store = &broker.groups.offsets;
    let mut state = store.state.lock();
    let changes = changes_of(&state);
    if changes.is_empty() {
        return Ok(None);
    }
    // In a cluster, as an acks=all produce: refused before anything is written when too few
    // replicas are in sync. Read before appending: a later epoch fails the wait, never passes.
    let now = now_ms();
    partition
        .check_min_insync(now)
        .map_err(|e| coordinator_error(group, e))?;
    let leader_epoch = partition.role().leader_epoch();
    let mut appended = 0;
    let mut last_offset = -1;
    let mut failure = None;
    // Records go in batches within the topic's max.message.bytes: a group may have many.
    for chunk in chunks_by_bytes(group, &changes, RECORD_BATCH_BYTES_MAX) {
        let mut builder = BatchBuilder::new(now, RECORD_BATCH_BYTES_MAX);
        for (topic, partition, value) in chunk {
            let key = encode_key(group, topic, *partition);
            let timestamp_ms = value.as_ref().map_or(now, |o| o.commit_timestamp_ms);
            let value = value.as_ref().map(encode_value);
            builder.push(timestamp_ms, Some(&key), value.as_deref(), &[]);
        }
        if let Some((producer_id, producer_epoch)) = producer {
            builder = builder.transactional(producer_id, producer_epoch);
        }
        match partition.append(&mut builder.finish(), now) {
            Ok(info) => (appended, last_offset) = (appended + chunk.len(), info.last_offset),
            Err(e) => {
                failure = Some(coordinator_error(group, e));
                break;
            }
        }
    }
    if appended > 0 {
        // What is in the log applies in order with the rest, even if a later batch failed.
        let mut changes = changes;
        changes.truncate(appended);
        state.pending.push_back(PendingWrite {
            last_offset,
            group: group.to_string(),
            changes,
            transaction: producer.map(|(id, _)| (partition.index, id)),
        });
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Some(Appended {
        partition,
        last_offset,
        leader_epoch,
        group: group.to_string(),
    }))
}

/// Appends the group metadata records the coordinator queued ([`super::GroupCoordinator`]), in
/// their order; `None` when there were none. Taken under the store's lock, so two writers
/// cannot put an older record of a group after a newer one.
pub(crate) fn append_group_metadata(broker: &Broker) -> Result<Option<Appended>> {
    if !broker.groups.has_metadata_changes() {
        return Ok(None);
    }
    let _order = broker.groups.offsets.state.lock();
    let records = broker.groups.take_metadata_changes();
    let now = now_ms();
    let mut last = None;
    for (group, value) in &records {
        // One batch per record: a group's record holds every member's subscription and
        // assignment, each group's record goes to its own partition.
        let partition = offsets_partition(broker, group)?;
        let leader_epoch = partition.role().leader_epoch();
        let key = stored::encode_key(group);
        let value = value.as_ref().map(stored::encode_value);
        let bytes = key.len() + value.as_ref().map_or(0, |v| v.len()) + RECORD_OVERHEAD_BYTES;
        let mut builder = BatchBuilder::new(now, bytes);
        builder.push(now, Some(&key), value.as_deref(), &[]);
        let info = partition
            .append(&mut builder.finish(), now)
            .map_err(|e| coordinator_error(group, e))?;
        last = Some(Appended {
            partition,
            last_offset: info.last_offset,
            leader_epoch,
            group: group.clone(),
        });
    }
    Ok(last)
}

/// Appends the queued group metadata records and, in the background, waits until they are on
/// disk (for callers that answer without waiting, such as LeaveGroup and session expiry).
pub(crate) fn persist_group_metadata(broker: &Arc<Broker>) {
    match append_group_metadata(broker) {
        Ok(None) => {}
        Ok(Some(appended)) => {
            let broker = Arc::clone(broker);
            tokio::spawn(async move {
                if let Err(e) = appended.settle(&broker.groups.offsets).await {
                    tracing::warn!(error = %e, "group metadata did not reach disk");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "could not write group metadata"),
    }
}

/// Bytes of records in one batch written to `__consumer_offsets`, well within its
/// max.message.bytes (1 MiB by default).
const RECORD_BATCH_BYTES_MAX: usize = 256 * 1024;

/// Bytes a record takes besides its group, topic and metadata strings (an upper bound).
const RECORD_OVERHEAD_BYTES: usize = 64;

/// Splits `changes` into runs whose keys and values take at most about `bytes_max` (a run
/// holds at least one change).
fn chunks_by_bytes<'a>(
    group: &str,
    changes: &'a [OffsetChange],
    bytes_max: usize,
) -> Vec<&'a [OffsetChange]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (topic, _, value)) in changes.iter().enumerate() {
        let metadata_bytes = value.as_ref().map_or(0, |o| o.metadata.len());
        let size = RECORD_OVERHEAD_BYTES + group.len() + topic.len() + metadata_bytes;
        if i > start && bytes + size > bytes_max {
            chunks.push(&changes[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < changes.len() {
        chunks.push(&changes[start..]);
    }
    chunks
}

/// On a single node: `__consumer_offsets`, created with its partitions and compacted configs
/// if it does not exist yet (by the first commit, or by a Metadata request naming it).
pub(crate) fn offsets_topic(broker: &Broker) -> Result<Arc<crate::broker::Topic>> {
    match broker.topic(OFFSETS_TOPIC) {
        Some(t) => Ok(t),
        None => {
            match broker.create_topic(OFFSETS_TOPIC, OFFSETS_PARTITIONS, internal_topic_config()) {
                Err(BrokerError::TopicAlreadyExists(_)) => broker
                    .topic(OFFSETS_TOPIC)
                    .ok_or_else(|| BrokerError::Internal("offsets topic vanished".into())),
                other => other,
            }
        }
    }
}

/// The partition of `__consumer_offsets` a group's records go to, from which the group is
/// written: in a cluster it must be led here (appends refuse otherwise).
fn offsets_partition(broker: &Broker, group: &str) -> Result<Arc<Partition>> {
    let index = partition_for(group);
    if broker.cluster().is_some() {
        return broker
            .partition(OFFSETS_TOPIC, index)
            .map_err(|e| coordinator_error(group, e));
    }
    let topic = offsets_topic(broker)?;
    topic
        .partitions
        .get(index as usize)
        .cloned()
        .ok_or_else(|| BrokerError::Internal(format!("{OFFSETS_TOPIC} has no partition {index}")))
}

/// The partition of `__consumer_offsets` that holds a group's records: in a cluster, the
/// leader of that partition coordinates the group.
pub fn partition_for(group: &str) -> i32 {
    key_partition(group, OFFSETS_PARTITIONS)
}

/// The partition of an internal topic of `partitions` partitions that holds `key` (a group or
/// a transactional id): Java's String.hashCode, made non-negative, as Kafka picks it.
pub(crate) fn key_partition(key: &str, partitions: i32) -> i32 {
    let hash = key
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    (hash & 0x7fff_ffff) % partitions
}

/// A record's key and value.
type KeyValue = (Option<Bytes>, Option<Bytes>);

/// What one partition of `__consumer_offsets` holds, read back in log order: the last value of
/// each committed offset (`None`: deleted) and of each group's metadata record.
#[derive(Default)]
pub(crate) struct PartitionContents {
    index: i32,
    offsets: BTreeMap<(String, String, i32), Option<CommittedOffset>>,
    groups: BTreeMap<String, Option<StoredGroup>>,
    /// Transactional records not yet followed by their marker, by producer id.
    open_transactions: BTreeMap<i64, Vec<KeyValue>>,
    records: usize,
}

impl PartitionContents {
    /// Reads a partition from its log start to its log end, committed or not: a new leader's
    /// log is the one its followers will hold, so Kafka loads up to the log end too. The log's
    /// lock is taken per read, never while the store's is held (appends take the store's lock,
    /// then the log's).
    pub(crate) fn read(partition: &Partition) -> Result<PartitionContents> {
        let mut contents = PartitionContents {
            index: partition.index,
            ..PartitionContents::default()
        };
        let mut offset = partition.log_start_offset();
        let end = partition.log_end_offset();
        while offset < end {
            let bytes = partition.read_replica(offset, 1 << 20)?;
            let before = offset;
            for (position, header) in headers(&bytes) {
                if header.base_offset >= end {
                    break;
                }
                offset = header.base_offset + header.last_offset_delta as i64 + 1;
                let batch = bytes.slice(position..position + header.total_bytes());
                if header.is_control() {
                    let marker = parse_control_marker(&batch)
                        .map_err(|e| BrokerError::CorruptMessage(e.to_string()))?;
                    contents.end_transaction(header.producer_id, marker.commit);
                    continue;
                }
                let records = decode_records(&batch).map_err(BrokerError::CorruptMessage)?;
                let records = records.into_iter().filter(|r| r.offset < end);
                if header.is_transactional() {
                    let open = contents
                        .open_transactions
                        .entry(header.producer_id)
                        .or_default();
                    open.extend(records.map(|r| (r.key, r.value)));
                    continue;
                }
                for record in records {
                    contents.add(record.key, record.value);
                }
            }
            if offset == before {
                break;
            }
        }
        Ok(contents)
    }

    /// A marker: the producer's transactional records apply here (commit) or never (abort).
    fn end_transaction(&mut self, producer_id: i64, commit: bool) {
        let records = self.open_transactions.remove(&producer_id);
        if commit {
            for (key, value) in records.into_iter().flatten() {
                self.add(key, value);
            }
        }
    }

    fn add(&mut self, key: Option<Bytes>, value: Option<Bytes>) {
        let Some(key) = key else { return };
        if let Some(group) = stored::decode_key(key.clone()) {
            match value {
                None => self.groups.insert(group, None),
                Some(value) => match stored::decode_value(value) {
                    Some(metadata) => self.groups.insert(group, Some(metadata)),
                    None => {
                        tracing::warn!(%group, "skipped an unreadable group record");
                        return;
                    }
                },
            };
            self.records += 1;
            return;
        }
        let Some((group, topic, partition)) = decode_key(key) else {
            return;
        };
        let value = value.and_then(decode_value);
        self.offsets.insert((group, topic, partition), value);
        self.records += 1;
    }

    /// Puts what was read into the coordinator's memory; returns how many records it held.
    pub(crate) fn apply(self, coordinator: &super::GroupCoordinator) -> usize {
        let mut open = Vec::new();
        for (producer_id, records) in self.open_transactions {
            let changes: Vec<(String, OffsetChange)> = records
                .into_iter()
                .filter_map(|(key, value)| {
                    let (group, topic, partition) = decode_key(key?)?;
                    Some((group, (topic, partition, value.and_then(decode_value))))
                })
                .collect();
            open.push(((self.index, producer_id), changes));
        }
        coordinator
            .offsets
            .state
            .lock()
            .in_transactions
            .extend(open);
        for ((group, topic, partition), value) in self.offsets {
            coordinator
                .offsets
                .restore(&group, (topic, partition, value));
        }
        let groups = self
            .groups
            .into_iter()
            .filter_map(|(group, metadata)| Some((group, metadata?)))
            .collect();
        coordinator.restore(groups);
        self.records
    }
}

/// Loads every committed offset and group from `__consumer_offsets` (at start-up, on a single
/// node; in a cluster, each partition is loaded when this broker becomes its leader).
pub(crate) fn restore(broker: &Broker) -> Result<()> {
    let Some(topic) = broker.topic(OFFSETS_TOPIC) else {
        return Ok(());
    };
    let mut restored = 0usize;
    for partition in &topic.partitions {
        restored += PartitionContents::read(partition)?.apply(&broker.groups);
    }
    tracing::info!(records = restored, "restored committed offsets and groups");
    Ok(())
}

/// A committed offset with nothing else set, for tests here and in the protocol handlers.
#[cfg(test)]
pub(crate) fn committed_for_tests(offset: i64) -> CommittedOffset {
    CommittedOffset {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let key = encode_key("g", "orders", 3);
        assert_eq!(decode_key(key), Some(("g".into(), "orders".into(), 3)));
        let value = CommittedOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp_ms: 7,
        };
        assert_eq!(decode_value(encode_value(&value)), Some(value));
    }

    #[test]
    fn truncated_keys_and_values_decode_to_none() {
        let key = encode_key("group", "topic", 1);
        for cut in 0..key.len() {
            assert_eq!(decode_key(key.slice(..cut)), None);
        }
        assert_eq!(decode_value(Bytes::from_static(&[0, 3, 1])), None);
    }

    use super::committed_for_tests as committed;

    /// Memory follows the log's order whichever write's task resumes first: before, each commit
    /// applied itself when its own wait ended, so a later commit could be overwritten by an
    /// earlier one. Method: append two commits to one partition, settle the later one first.
    #[tokio::test]
    async fn writes_apply_in_log_order_whichever_settles_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(crate::BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
        let change = |offset| vec![("t".to_string(), 0, Some(committed(offset)))];
        let earlier = append_commit(&broker, "g", change(1))
            .expect("append")
            .expect("write");
        let later = append_commit(&broker, "g", change(2))
            .expect("append")
            .expect("write");
        let store = &broker.groups.offsets;
        assert!(store.is_pending("g", "t", 0));
        later.settle(store).await.expect("settles");
        assert_eq!(store.committed("g", "t", 0), Some(committed(2)));
        assert!(
            !store.is_pending("g", "t", 0),
            "the earlier write applied with it"
        );
        earlier.settle(store).await.expect("settles");
        assert_eq!(store.committed("g", "t", 0), Some(committed(2)));
    }

    /// A group's tombstones cover offsets still on their way to disk, so a commit in flight
    /// when its group is deleted does not bring it back (the tombstone follows it in the log,
    /// so a restart agrees).
    #[tokio::test]
    async fn deleting_a_group_covers_its_pending_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(crate::BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        broker.create_topic("t", 2, BTreeMap::new()).expect("topic");
        let settled = vec![("t".to_string(), 0, Some(committed(1)))];
        append_commit(&broker, "g", settled)
            .expect("append")
            .expect("write")
            .settle(&broker.groups.offsets)
            .await
            .expect("settles");
        let in_flight = vec![("t".to_string(), 1, Some(committed(2)))];
        let commit = append_commit(&broker, "g", in_flight)
            .expect("append")
            .expect("write");
        let deletion = append_deletion(&broker, "g", Deletion::Group)
            .expect("append")
            .expect("there are offsets to delete");
        let store = &broker.groups.offsets;
        deletion.settle(store).await.expect("settles");
        commit.settle(store).await.expect("settles");
        assert!(store.committed_for_group("g").is_empty());
        assert!(!store.has_offsets("g"));
        let nothing_left = append_deletion(&broker, "g", Deletion::Group).expect("no write");
        assert!(nothing_left.is_none());
    }

    /// A deletion larger than one batch goes in several, all applied (and restored) together.
    #[test]
    fn changes_are_cut_into_batches_by_size() {
        let change = |i: i32| ("t".repeat(100), i, None);
        let changes: Vec<OffsetChange> = (0..100).map(change).collect();
        let chunks = chunks_by_bytes("g", &changes, 1_000);
        assert!(chunks.len() > 1);
        assert!(chunks.iter().all(|c| !c.is_empty()));
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 100);
        let huge = [("t".repeat(5_000), 0, None)];
        assert_eq!(
            chunks_by_bytes("g", &huge, 1_000).len(),
            1,
            "one change always fits"
        );
    }
}
