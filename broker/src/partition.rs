//! A partition: its log behind one lock, its replication role, and the signals readers and
//! writers wait on.
//!
//! Replication (in a cluster; `cluster/replica.rs` has the rules): the log end offset is where
//! the next append goes; the high watermark is where every in-sync replica has the records.
//! Consumers read below the high watermark only; followers read up to the log end offset. An
//! acks=all produce is answered once the high watermark has passed its records (and, for topics
//! that fsync before acknowledging, once they are on the leader's disk: followers report an
//! offset only after syncing it). A single-node broker is the only replica ([`Role::Sole`]): its
//! high watermark is its log end offset.
//!
//! Durability: an append is in the operating system's page cache when it returns, so it survives
//! the broker process being killed. It is on disk once the partition's flusher has synced it. The
//! flusher runs when the flush policy asks (`flush.messages`, `flush.ms`) or when an acknowledgement
//! waits for it (`flush.messages=1`: fsync before ack). One fdatasync covers every batch appended
//! before it started, so concurrent producers share syncs (group commit).
//!
//! A failed sync takes the partition offline (as Kafka takes a failed log directory offline):
//! after fsync reports an error the kernel may have dropped the dirty pages, so a later sync
//! that succeeds proves nothing. The recovery point stays where the last good sync left it,
//! appends and waits for durability fail with a storage error, and a restart recovers from the
//! log itself.
//!
//! Transactions: the last stable offset ([`Partition::last_stable_offset`]) is the high
//! watermark or, when lower, the first offset of the oldest transaction that is ongoing or
//! whose marker is not below the high watermark yet; read_committed consumers read below it
//! ([`Partition::read_committed`]). The transaction coordinator ends a transaction with
//! [`Partition::write_marker`] on the leader, then waits as a produce does.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::cluster::replica::{Leadership, Role};
use crate::config::TopicConfig;
use crate::error::{BrokerError, ReplicationError, Result};
use crate::log::batch::headers;
use crate::log::{AppendInfo, Log, ProducerSummary};

/// One partition of a topic, with the leader's view of its log.
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    log: Mutex<Log>,
    /// The log end offset; followers' fetches wait on it.
    end_offset: watch::Sender<i64>,
    /// The high watermark; consumers' fetches and acks=all wait on it. Also sent (unchanged)
    /// when the role changes, to wake whoever waits for replication.
    high_watermark: watch::Sender<i64>,
    role: Mutex<Role>,
    /// Offsets below this are on disk.
    durable_offset: watch::Sender<i64>,
    flush_wanted: Notify,
    closed: watch::Sender<bool>,
    /// Why the partition went offline (a sync failed), once it has.
    offline: OnceLock<String>,
    /// On a follower, the high watermark its leader last reported (-1 before the first
    /// answer): how far behind it is, as far as it can know (DescribeLogDirs' offset lag).
    leader_high_watermark: AtomicI64,
}

impl Partition {
    /// Wraps an opened log as the only replica (a single-node broker) and starts its flusher.
    pub fn start(topic: Arc<str>, index: i32, log: Log) -> Arc<Partition> {
        let end = log.log_end_offset();
        Partition::start_as(topic, index, log, Role::Sole, end)
    }

    /// Wraps an opened log as a replica in a cluster, following nobody until the cluster says
    /// otherwise. Its high watermark starts at the log start: what is committed is learned
    /// from the leader (or, leading, from the followers).
    pub fn start_replica(topic: Arc<str>, index: i32, log: Log) -> Arc<Partition> {
        let start = log.log_start_offset();
        let role = Role::Follower {
            leader: crate::cluster::metadata::NO_LEADER,
            leader_epoch: -1,
        };
        Partition::start_as(topic, index, log, role, start)
    }

    fn start_as(topic: Arc<str>, index: i32, log: Log, role: Role, hw: i64) -> Arc<Partition> {
        let end = log.log_end_offset();
        let durable = log.recovery_point();
        let partition = Arc::new(Partition {
            topic,
            index,
            log: Mutex::new(log),
            end_offset: watch::Sender::new(end),
            high_watermark: watch::Sender::new(hw),
            role: Mutex::new(role),
            durable_offset: watch::Sender::new(durable),
            flush_wanted: Notify::new(),
            closed: watch::Sender::new(false),
            offline: OnceLock::new(),
            leader_high_watermark: AtomicI64::new(-1),
        });
        tokio::spawn(flusher(Arc::clone(&partition)));
        partition
    }

    /// The log, for reads and maintenance.
    pub fn log(&self) -> &Mutex<Log> {
        &self.log
    }

    /// Appends a produce request's batches. Returns once they are in the log; call
    /// [`Partition::wait_durable`] when the acknowledgement must wait for disk.
    /// Refuses with NOT_LEADER_OR_FOLLOWER unless this broker leads the partition.
    pub fn append(&self, records: &mut BytesMut, now_ms: i64) -> Result<AppendInfo> {
        self.append_as_leader(|log| log.append(records, now_ms))
    }

    /// Runs `write` on the log as the leader and publishes the new log end. The role lock is
    /// held across the write: a leader stepping down waits for it, so nothing is appended after
    /// this broker became a follower.
    fn append_as_leader(
        &self,
        write: impl FnOnce(&mut Log) -> Result<AppendInfo>,
    ) -> Result<AppendInfo> {
        self.check_online()?;
        let (info, end, flush, allowed) = {
            let role = self.role.lock();
            if matches!(*role, Role::Follower { .. }) {
                return Err(self.replication(ReplicationError::NotLeaderOrFollower));
            }
            let mut log = self.log.lock();
            let info = write(&mut log).map_err(|e| self.named(e))?;
            let end = log.log_end_offset();
            (
                info,
                end,
                log.flush_due(),
                allowed_high_watermark(&role, end),
            )
        };
        self.end_offset.send_replace(end);
        self.raise_high_watermark(allowed);
        if flush {
            self.flush_wanted.notify_one();
        }
        Ok(info)
    }

    /// Appends a transaction marker for `producer_id` as the leader (see
    /// [`Log::append_marker`]): NOT_LEADER_OR_FOLLOWER unless this broker leads. The caller
    /// then awaits [`Partition::wait_durable`] and [`Partition::wait_replicated`] as a produce
    /// does; the transaction is stable once the high watermark passes the marker.
    pub fn write_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let high_watermark = self.high_watermark();
        self.append_as_leader(|log| {
            let info = log.append_marker(
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
                now_ms,
            )?;
            log.on_high_watermark(high_watermark);
            Ok(info)
        })
    }

    /// The last stable offset: read_committed consumers read below it (see the module docs).
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        self.log.lock().last_stable_offset(high_watermark)
    }

    /// The ongoing transactions: (producer id, epoch, first offset, last timestamp), oldest
    /// first (DescribeProducers, DescribeTransactions).
    pub fn ongoing_transactions(&self) -> Vec<(i64, i16, i64, i64)> {
        self.log.lock().ongoing_transactions()
    }

    /// Every producer this replica knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerSummary> {
        self.log.lock().producers()
    }

    /// The error `kind` for this partition.
    pub fn replication(&self, kind: ReplicationError) -> BrokerError {
        BrokerError::Replication {
            kind,
            topic: self.topic.to_string(),
            partition: self.index,
        }
    }

    /// The leader epoch this broker knows (-1 on a single node), without copying the role.
    pub fn leader_epoch(&self) -> i32 {
        self.role.lock().leader_epoch()
    }

    /// This broker's role for the partition.
    pub fn role(&self) -> Role {
        self.role.lock().clone()
    }

    /// Checks that this broker leads the partition, and, when the client names a leader
    /// epoch (`>= 0`), that it is the current one.
    pub fn check_leader(&self, current_leader_epoch: i32) -> Result<()> {
        let role = self.role.lock();
        let epoch = match &*role {
            Role::Sole => return Ok(()),
            Role::Follower { .. } => {
                return Err(self.replication(ReplicationError::NotLeaderOrFollower))
            }
            Role::Leader(leadership) => leadership.leader_epoch,
        };
        check_epoch(current_leader_epoch, epoch).map_err(|kind| self.replication(kind))
    }

    /// For acks=all: refuses (NOT_ENOUGH_REPLICAS) before anything is written when fewer than
    /// `min.insync.replicas` replicas are in sync, counting only those still caught up at
    /// `now_ms` (a laggard's removal may be waiting for a controller that cannot record it).
    pub fn check_min_insync(&self, now_ms: i64) -> Result<()> {
        let role = self.role.lock();
        let Role::Leader(leadership) = &*role else {
            return Ok(());
        };
        let in_sync = leadership
            .isr
            .len()
            .min(leadership.caught_up_in_sync(now_ms));
        if in_sync < leadership.rules.min_insync {
            return Err(self.replication(ReplicationError::NotEnoughReplicas {
                in_sync: in_sync as u16,
                min: leadership.rules.min_insync as u16,
            }));
        }
        Ok(())
    }

    /// For acks=all: waits until every in-sync replica holds the records up to `last_offset`.
    /// Fails when leadership is lost (NOT_LEADER_OR_FOLLOWER), when the in-sync set shrinks
    /// below `min.insync.replicas` first (NOT_ENOUGH_REPLICAS_AFTER_APPEND), or after
    /// `timeout_ms` (REQUEST_TIMED_OUT).
    pub async fn wait_replicated(
        &self,
        last_offset: i64,
        leader_epoch: i32,
        timeout_ms: i32,
    ) -> Result<()> {
        let mut high_watermark = self.high_watermark.subscribe();
        let outcome = |partition: &Partition| -> Option<Result<()>> {
            let role = partition.role.lock();
            match &*role {
                Role::Sole => Some(Ok(())),
                Role::Leader(l) if l.leader_epoch == leader_epoch => {
                    if *partition.high_watermark.borrow() > last_offset {
                        Some(Ok(()))
                    } else if l.isr.len() < l.rules.min_insync {
                        let min = l.rules.min_insync as u16;
                        let kind = ReplicationError::NotEnoughReplicasAfterAppend { min };
                        Some(Err(partition.replication(kind)))
                    } else {
                        None
                    }
                }
                _ => Some(Err(
                    partition.replication(ReplicationError::NotLeaderOrFollower)
                )),
            }
        };
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Some(done) = outcome(self) {
                    return done;
                }
                if high_watermark.changed().await.is_err() {
                    return Err(BrokerError::Internal("partition closed".into()));
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| {
            let timeout_ms = timeout_ms.max(0);
            Err(self.replication(ReplicationError::RequestTimedOut { timeout_ms }))
        })
    }

    /// Makes this broker the partition's leader with `leadership` (the cluster decided so).
    /// Starting a new epoch records it in the log's epoch cache.
    pub fn lead(&self, leadership: Leadership) {
        let mut role = self.role.lock();
        let same_epoch = role.leader_epoch() == leadership.leader_epoch;
        match &mut *role {
            // The same leadership, with a new in-sync set: keep what is known of followers.
            // A pending change is decided once the partition epoch it was asked at has passed
            // (the controller took it or refused it; no copy of it can apply any more).
            Role::Leader(current) if same_epoch => {
                if leadership.partition_epoch > current.partition_epoch
                    || current.pending_isr.as_ref() == Some(&leadership.isr)
                {
                    current.pending_isr = None;
                }
                current.partition_epoch = leadership.partition_epoch;
                current.isr = leadership.isr;
                current.rules = leadership.rules;
            }
            _ => {
                if let Err(e) = self.log.lock().become_leader(leadership.leader_epoch) {
                    // A newer epoch is already in the log: a later image will say so too.
                    tracing::warn!(topic = %self.topic, partition = self.index, error = %e,
                        "not taking an old leadership");
                    return;
                }
                *role = Role::Leader(Box::new(leadership));
            }
        }
        drop(role);
        self.advance_high_watermark();
        self.high_watermark.send_modify(|_| {});
    }

    /// Makes this broker a follower of `leader` at `leader_epoch`.
    pub fn follow(&self, leader: i32, leader_epoch: i32) {
        *self.role.lock() = Role::Follower {
            leader,
            leader_epoch,
        };
        // Wake acks=all waiters of a leadership that just ended.
        self.high_watermark.send_modify(|_| {});
    }

    /// A follower's fetch from `fetch_offset` (its log end offset): the leader learns its
    /// progress and the high watermark may move. Refused unless this broker leads at
    /// `leader_epoch` (when given) and the fetcher is a replica.
    pub fn record_follower_fetch(
        &self,
        replica: i32,
        fetch_offset: i64,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<()> {
        {
            let mut role = self.role.lock();
            let leadership = match &mut *role {
                Role::Leader(leadership) => leadership,
                // A single node has no followers to track: the fetch just reads.
                Role::Sole => return Ok(()),
                Role::Follower { .. } => {
                    return Err(self.replication(ReplicationError::NotLeaderOrFollower))
                }
            };
            check_epoch(leader_epoch, leadership.leader_epoch)
                .map_err(|kind| self.replication(kind))?;
            let end = *self.end_offset.borrow();
            if fetch_offset > end {
                // The follower holds what this leader does not: it must truncate, and it is
                // not caught up (Kafka records follower state only after a successful read).
                return Err(BrokerError::OffsetOutOfRange {
                    topic: self.topic.to_string(),
                    partition: self.index,
                    offset: fetch_offset,
                    log_start_offset: self.log.lock().log_start_offset(),
                    log_end_offset: end,
                });
            }
            if !leadership.record_fetch(replica, fetch_offset, end, now_ms) {
                return Err(BrokerError::InvalidRequest(format!(
                    "broker {replica} is not a replica of {}-{}",
                    self.topic, self.index
                )));
            }
        }
        self.advance_high_watermark();
        Ok(())
    }

    /// The in-sync set this leader should ask the controller for, with the epochs to send:
    /// `(leader, leader_epoch, partition_epoch, isr)`. Marks it pending. A change still pending
    /// is returned again, to be proposed again: its outcome is unknown until the partition
    /// epoch moves on (see [`Partition::lead`]), and until then the high watermark counts it.
    pub fn isr_change(&self, now_ms: i64) -> Option<(i32, i32, i32, Vec<i32>)> {
        let mut role = self.role.lock();
        let Role::Leader(leadership) = &mut *role else {
            return None;
        };
        let wanted = match &leadership.pending_isr {
            Some(pending) => pending.clone(),
            None => {
                let high_watermark = *self.high_watermark.borrow();
                let wanted = leadership.wanted_isr(high_watermark, now_ms)?;
                leadership.pending_isr = Some(wanted.clone());
                wanted
            }
        };
        Some((
            leadership.broker,
            leadership.leader_epoch,
            leadership.partition_epoch,
            wanted,
        ))
    }

    /// A follower learns the high watermark from its leader's fetch responses.
    pub fn follower_high_watermark(&self, leader_high_watermark: i64) {
        self.leader_high_watermark
            .store(leader_high_watermark, Ordering::Relaxed);
        let end = *self.end_offset.borrow();
        let high_watermark = leader_high_watermark.min(end);
        let changed = self.high_watermark.send_if_modified(|hw| {
            let changed = *hw != high_watermark;
            *hw = high_watermark;
            changed
        });
        if changed {
            // Transactions whose markers it passed are stable now; forget them.
            self.log.lock().on_high_watermark(high_watermark);
        }
    }

    /// A follower learns its leader's log start offset from the fetch responses (records the
    /// leader deleted: DeleteRecords, retention) and moves its own up to it, durably, while it
    /// follows in `leader_epoch`. Never past its own high watermark: what it holds above that
    /// may not be committed, and the leader's start offset is never above the leader's high
    /// watermark, which this replica learns with the same answer or the next.
    pub fn follower_log_start_offset(
        &self,
        leader_log_start_offset: i64,
        leader_epoch: i32,
    ) -> Result<()> {
        let offset = leader_log_start_offset.min(self.high_watermark());
        if offset <= self.log_start_offset() {
            return Ok(());
        }
        let moved = self.as_follower(leader_epoch, |log| log.delete_records_before(offset))?;
        tracing::debug!(topic = %self.topic, partition = self.index, log_start_offset = moved,
            "moved the log start offset with the leader's");
        Ok(())
    }

    /// How many offsets this replica's log end is behind what it knows is committed
    /// (DescribeLogDirs' offset lag): 0 on a leader (or a single node), whose log end is at or
    /// past the high watermark; on a follower, the leader's high watermark as last reported
    /// minus the local log end offset (at least 0), or -1 before the first report.
    pub fn offset_lag(&self) -> i64 {
        if !matches!(*self.role.lock(), Role::Follower { .. }) {
            return 0;
        }
        let leader_high_watermark = self.leader_high_watermark.load(Ordering::Relaxed);
        if leader_high_watermark < 0 {
            return -1;
        }
        (leader_high_watermark - self.log_end_offset()).max(0)
    }

    /// Moves the high watermark to what the role allows; on a leader it never moves back.
    fn advance_high_watermark(&self) {
        let end = *self.end_offset.borrow();
        let allowed = allowed_high_watermark(&self.role.lock(), end);
        self.raise_high_watermark(allowed);
    }

    /// Raises the high watermark to `allowed`, if that is higher.
    fn raise_high_watermark(&self, allowed: Option<i64>) {
        if let Some(allowed) = allowed {
            self.high_watermark.send_if_modified(|hw| {
                let advance = allowed > *hw;
                if advance {
                    *hw = allowed;
                }
                advance
            });
        }
    }

    /// Whether acknowledgements of this partition wait for fsync.
    pub fn fsync_before_ack(&self) -> bool {
        self.log.lock().config().fsync_before_ack()
    }

    /// Waits until every offset up to `last_offset` is on disk.
    pub async fn wait_durable(&self, last_offset: i64) -> Result<()> {
        let mut durable = self.durable_offset.subscribe();
        self.flush_wanted.notify_one();
        durable
            .wait_for(|d| *d > last_offset || self.offline.get().is_some())
            .await
            .map_err(|_| BrokerError::Internal("flusher stopped".into()))?;
        self.check_online()
    }

    /// Refuses work once a sync has failed.
    fn check_online(&self) -> Result<()> {
        match self.offline.get() {
            None => Ok(()),
            Some(reason) => Err(BrokerError::Storage(std::io::Error::other(format!(
                "partition {}-{} is offline after a failed sync ({reason}); restart the broker \
                 to recover it from its log",
                self.topic, self.index
            )))),
        }
    }

    /// Takes the partition offline after a failed sync and wakes everyone waiting for one.
    fn sync_failed(&self, reason: String) {
        if *self.closed.borrow() {
            // Its topic was deleted (the directory renamed away): nothing is lost, say little.
            tracing::debug!(topic = %self.topic, partition = self.index, error = %reason,
                "last sync of a closed partition failed");
        } else {
            tracing::error!(topic = %self.topic, partition = self.index, error = %reason,
                "sync failed; the partition is offline until the broker restarts");
        }
        let _ = self.offline.set(reason);
        self.durable_offset.send_modify(|_| {});
    }

    /// Reads committed records from `offset`: whole batches below the high watermark; see
    /// [`Log::read`]. An offset between the high watermark and the log end reads nothing.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        self.read_below(offset, max_bytes, self.high_watermark())
    }

    /// Reads what read_committed consumers see from `offset`: whole batches below the last
    /// stable offset. An offset between it and the log end reads nothing.
    pub fn read_committed(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        self.read_below(offset, max_bytes, self.last_stable_offset())
    }

    /// Reads whole batches from `offset` that start below `upper` (the high watermark or the
    /// last stable offset, both at batch boundaries).
    fn read_below(&self, offset: i64, max_bytes: usize, upper: i64) -> Result<Bytes> {
        if offset >= upper && offset <= self.log_end_offset() {
            return Ok(Bytes::new());
        }
        let records = self.read_replica(offset, max_bytes)?;
        if upper >= self.log_end_offset() {
            // Everything in the log is readable (always, on a single node without transactions).
            return Ok(records);
        }
        let end = headers(&records)
            .take_while(|(_, header)| header.base_offset < upper)
            .map(|(at, header)| at + header.total_bytes())
            .last()
            .unwrap_or(0);
        Ok(records.slice(..end))
    }

    /// Reads from `offset` up to the log end, committed or not (for followers).
    pub fn read_replica(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        self.log
            .lock()
            .read(offset, max_bytes)
            .map_err(|e| self.named(e))
    }

    /// The high watermark: consumers read below it.
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    /// The log end offset: the next append goes there.
    pub fn log_end_offset(&self) -> i64 {
        *self.end_offset.borrow()
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log.lock().log_start_offset()
    }

    /// Deletes the records below `offset` (DeleteRecords): `-1` means the high watermark, an
    /// offset past the high watermark is out of range, and a topic that is only compacted
    /// refuses (as Kafka does: deleting records is a form of the delete policy). Only the
    /// leader deletes (NOT_LEADER_OR_FOLLOWER on a follower); followers move their log start
    /// offset when their fetches report the leader's ([`Partition::follower_log_start_offset`]).
    /// Returns the leader's new log start offset (Kafka's low watermark).
    pub fn delete_records(&self, offset: i64) -> Result<i64> {
        self.check_online()?;
        // The role is held as an append holds it: nothing is deleted once this broker follows.
        let role = self.role.lock();
        if matches!(*role, Role::Follower { .. }) {
            return Err(self.replication(ReplicationError::NotLeaderOrFollower));
        }
        let mut log = self.log.lock();
        if !log.config().cleanup_policy.deletes() {
            return Err(BrokerError::RecordDeletionRefused {
                topic: self.topic.to_string(),
                partition: self.index,
            });
        }
        let high_watermark = self.high_watermark();
        let offset = if offset == -1 { high_watermark } else { offset };
        if offset < 0 || offset > high_watermark {
            return Err(BrokerError::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.index,
                offset,
                log_start_offset: log.log_start_offset(),
                log_end_offset: high_watermark,
            });
        }
        log.delete_records_before(offset).map_err(|e| self.named(e))
    }

    /// Runs `write` on the log while this broker follows in `leader_epoch`, holding the role
    /// so that it cannot change meanwhile: a fetcher of an old leadership must never write
    /// (append or truncate) once the broker leads or follows another epoch.
    fn as_follower<T>(
        &self,
        leader_epoch: i32,
        write: impl FnOnce(&mut Log) -> Result<T>,
    ) -> Result<T> {
        self.check_online()?;
        let role = self.role.lock();
        match &*role {
            Role::Follower {
                leader_epoch: current,
                ..
            } if *current == leader_epoch => {}
            _ => return Err(self.replication(ReplicationError::NotLeaderOrFollower)),
        }
        let mut log = self.log.lock();
        write(&mut log).map_err(|e| self.named(e))
    }

    /// Appends batches fetched from the leader, as they are, while following in
    /// `leader_epoch`; see [`Log::append_as_follower`].
    pub fn append_as_follower(
        &self,
        records: &mut BytesMut,
        now_ms: i64,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        let (info, end, flush) = self.as_follower(leader_epoch, |log| {
            let info = log.append_as_follower(records, now_ms)?;
            Ok((info, log.log_end_offset(), log.flush_due()))
        })?;
        self.end_offset.send_replace(end);
        if flush {
            self.flush_wanted.notify_one();
        }
        Ok(info)
    }

    /// Removes every record at or after `offset`; see [`Log::truncate_to`]. The end offset
    /// comes down with the log, and so does the durable offset, so that records appended in
    /// place of the removed ones wait for a sync of their own.
    pub fn truncate_to(&self, offset: i64, leader_epoch: i32) -> Result<bool> {
        let (truncated, end) = self.as_follower(leader_epoch, |log| {
            Ok((log.truncate_to(offset)?, log.log_end_offset()))
        })?;
        self.durable_offset.send_if_modified(|durable| {
            let lowered = *durable > end;
            *durable = (*durable).min(end);
            lowered
        });
        self.end_offset.send_replace(end);
        Ok(truncated)
    }

    /// Empties the log and restarts it at `offset` (a follower behind the leader's log start).
    pub fn truncate_fully_and_start_at(&self, offset: i64, leader_epoch: i32) -> Result<()> {
        let (recovery_point, end) = self.as_follower(leader_epoch, |log| {
            log.truncate_fully_and_start_at(offset, crate::broker::now_ms())?;
            Ok((log.recovery_point(), log.log_end_offset()))
        })?;
        self.durable_offset.send_replace(recovery_point);
        self.end_offset.send_replace(end);
        Ok(())
    }

    /// Where `epoch` ends in this replica's log; see [`Log::end_offset_for_epoch`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.log.lock().end_offset_for_epoch(epoch)
    }

    /// Replaces the topic config this partition's log follows (an AlterConfigs took effect).
    pub fn set_config(&self, config: TopicConfig) {
        self.log.lock().set_config(config);
        // The flusher reads flush.ms when it next sleeps: wake it so a shorter one applies now.
        self.flush_wanted.notify_one();
    }

    /// A receiver that sees the high watermark move.
    pub fn watch_end(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// A receiver that sees the log end offset move (for followers' fetches).
    pub fn watch_log_end(&self) -> watch::Receiver<i64> {
        self.end_offset.subscribe()
    }

    /// Syncs now and waits for it.
    pub async fn flush(&self) -> Result<()> {
        let end = self.log_end_offset();
        self.wait_durable(end - 1).await
    }

    /// Stops the flusher after a last sync.
    pub fn close(&self) {
        self.closed.send_replace(true);
        self.flush_wanted.notify_one();
    }

    fn named(&self, error: BrokerError) -> BrokerError {
        match error {
            BrokerError::OffsetOutOfRange {
                offset,
                log_start_offset,
                log_end_offset,
                ..
            } => BrokerError::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.index,
                offset,
                log_start_offset,
                log_end_offset,
            },
            other => other,
        }
    }
}

/// The high watermark `role` allows when the log ends at `end`; None when it may not move.
fn allowed_high_watermark(role: &Role, end: i64) -> Option<i64> {
    match role {
        Role::Sole => Some(end),
        Role::Leader(leadership) => leadership.high_watermark(end),
        Role::Follower { .. } => None,
    }
}

/// Checks a request's leader epoch against the current one; -1 (none given) always passes.
fn check_epoch(requested: i32, current: i32) -> Result<(), ReplicationError> {
    if requested < 0 || requested == current {
        Ok(())
    } else if requested < current {
        Err(ReplicationError::FencedLeaderEpoch { requested, current })
    } else {
        Err(ReplicationError::UnknownLeaderEpoch { requested, current })
    }
}

/// Syncs the partition's log whenever asked or when `flush.ms` passes, until closed.
async fn flusher(partition: Arc<Partition>) {
    let mut closed = partition.closed.subscribe();
    loop {
        let interval = Duration::from_millis(partition.log.lock().config().flush_ms as u64);
        tokio::select! {
            _ = partition.flush_wanted.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        let job = partition.log.lock().prepare_flush();
        let already = *partition.durable_offset.borrow();
        if job.end > already || job.has_rolled() {
            let end = job.end;
            // Offsets become durable only when the sync that covers them succeeded.
            match tokio::task::spawn_blocking(move || job.run()).await {
                Ok(Ok(())) => {
                    // Less than `end` when a truncation came in between (see `Log::flushed`).
                    let durable = partition.log.lock().flushed(end);
                    partition.durable_offset.send_replace(durable);
                }
                Ok(Err(e)) => return partition.sync_failed(e.to_string()),
                Err(e) => return partition.sync_failed(format!("sync task failed: {e}")),
            }
        }
        if *closed.borrow_and_update() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::BatchBuilder;

    fn one_record() -> BytesMut {
        let mut builder = BatchBuilder::new(0, 64);
        builder.push(0, Some(b"k"), Some(b"v"), &[]);
        builder.finish()
    }

    /// A sync that fails must not mark anything durable: before, the flusher aborted the process
    /// (and after a failed sync task it even advanced the recovery point). Method: a log whose
    /// syncs fail (test-only fault), one append, then wait for durability.
    #[tokio::test]
    async fn a_failed_sync_keeps_the_recovery_point_and_takes_the_partition_offline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("open");
        log.fail_syncs = true;
        let partition = Partition::start("t".into(), 0, log);
        let recovery_point = partition.log().lock().recovery_point();
        let info = partition.append(&mut one_record(), 0).expect("append");
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            partition.wait_durable(info.last_offset),
        )
        .await
        .expect("a failed sync answers the waiter");
        assert!(matches!(waited, Err(BrokerError::Storage(_))), "{waited:?}");
        assert_eq!(partition.log().lock().recovery_point(), recovery_point);
        assert_eq!(*partition.durable_offset.borrow(), recovery_point);
        assert!(
            partition.append(&mut one_record(), 0).is_err(),
            "an offline partition refuses appends"
        );
    }

    /// Goal: a follower takes its leader's log start offset from fetch answers, never past its
    /// own high watermark and never back; it refuses DeleteRecords itself; its offset lag is
    /// the leader's reported high watermark minus its log end. Method: a replica following
    /// broker 1 appends ten records as fetched, then is told high watermarks and log starts.
    #[tokio::test]
    async fn a_follower_follows_the_leader_log_start_up_to_its_high_watermark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("open");
        let partition = Partition::start_replica("t".into(), 0, log);
        partition.follow(1, 0);
        let mut builder = BatchBuilder::new(0, 256);
        for _ in 0..10 {
            builder.push(0, Some(b"k"), Some(b"v"), &[]);
        }
        let mut batch = builder.finish();
        crate::log::batch::stamp(&mut batch, 0, 0);
        partition
            .append_as_follower(&mut batch, 0, 0)
            .expect("append");
        assert_eq!(partition.offset_lag(), -1, "no answer from the leader yet");

        partition.follower_high_watermark(6);
        assert_eq!(
            partition.offset_lag(),
            0,
            "the log end is past what is committed"
        );
        partition.follower_log_start_offset(8, 0).expect("moved");
        assert_eq!(
            partition.log_start_offset(),
            6,
            "not past the high watermark"
        );
        partition.follower_high_watermark(15);
        assert_eq!(partition.high_watermark(), 10);
        assert_eq!(partition.offset_lag(), 5);
        partition.follower_log_start_offset(12, 0).expect("moved");
        assert_eq!(partition.log_start_offset(), 10);
        partition.follower_log_start_offset(3, 0).expect("kept");
        assert_eq!(partition.log_start_offset(), 10, "never back");

        let marker = partition.write_marker(1, 0, true, 0, 0);
        assert!(
            matches!(&marker, Err(BrokerError::Replication { kind, .. })
                if *kind == ReplicationError::NotLeaderOrFollower),
            "only the leader writes markers: {marker:?}"
        );
        let refused = partition.delete_records(10);
        let not_leader = ReplicationError::NotLeaderOrFollower;
        assert!(
            matches!(refused, Err(BrokerError::Replication { kind, .. }) if kind == not_leader),
            "{refused:?}"
        );
    }

    /// The same log with working syncs: the waiter is answered and the recovery point moves.
    #[tokio::test]
    async fn a_successful_sync_advances_the_recovery_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("open");
        let partition = Partition::start("t".into(), 0, log);
        let info = partition.append(&mut one_record(), 0).expect("append");
        partition
            .wait_durable(info.last_offset)
            .await
            .expect("synced");
        assert_eq!(
            partition.log().lock().recovery_point(),
            info.last_offset + 1
        );
    }
}
