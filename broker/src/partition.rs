//! A partition: its log behind one lock, plus the signals readers and writers wait on.
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

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::config::TopicConfig;
use crate::error::{BrokerError, Result};
use crate::log::{AppendInfo, Log};

/// One partition of a topic, with the leader's view of its log.
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    log: Mutex<Log>,
    /// The log end offset (and, on one node, the high watermark); fetches wait on it.
    end_offset: watch::Sender<i64>,
    /// Offsets below this are on disk.
    durable_offset: watch::Sender<i64>,
    flush_wanted: Notify,
    closed: watch::Sender<bool>,
    /// Why the partition went offline (a sync failed), once it has.
    offline: OnceLock<String>,
}

impl Partition {
    /// Wraps an opened log and starts its flusher.
    pub fn start(topic: Arc<str>, index: i32, log: Log) -> Arc<Partition> {
        let end = log.log_end_offset();
        let durable = log.recovery_point();
        let partition = Arc::new(Partition {
            topic,
            index,
            log: Mutex::new(log),
            end_offset: watch::Sender::new(end),
            durable_offset: watch::Sender::new(durable),
            flush_wanted: Notify::new(),
            closed: watch::Sender::new(false),
            offline: OnceLock::new(),
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
    pub fn append(&self, records: &mut BytesMut, now_ms: i64) -> Result<AppendInfo> {
        self.check_online()?;
        let (info, end, flush) = {
            let mut log = self.log.lock();
            let info = log.append(records, now_ms).map_err(|e| self.named(e))?;
            (info, log.log_end_offset(), log.flush_due())
        };
        self.end_offset.send_replace(end);
        if flush {
            self.flush_wanted.notify_one();
        }
        Ok(info)
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

    /// Reads from `offset`; see [`Log::read`].
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        self.log
            .lock()
            .read(offset, max_bytes)
            .map_err(|e| self.named(e))
    }

    /// The high watermark (the log end offset on a single node).
    pub fn high_watermark(&self) -> i64 {
        *self.end_offset.borrow()
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log.lock().log_start_offset()
    }

    /// Deletes the records below `offset` (DeleteRecords): `-1` means the high watermark, an
    /// offset past the high watermark is out of range, and a topic that is only compacted
    /// refuses (as Kafka does: deleting records is a form of the delete policy). Returns the new
    /// log start offset (Kafka's low watermark).
    pub fn delete_records(&self, offset: i64) -> Result<i64> {
        self.check_online()?;
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

    /// Appends batches fetched from the leader, as they are; see [`Log::append_as_follower`].
    pub fn append_as_follower(&self, records: &mut BytesMut, now_ms: i64) -> Result<AppendInfo> {
        self.check_online()?;
        let (info, end, flush) = {
            let mut log = self.log.lock();
            let info = log
                .append_as_follower(records, now_ms)
                .map_err(|e| self.named(e))?;
            (info, log.log_end_offset(), log.flush_due())
        };
        self.end_offset.send_replace(end);
        if flush {
            self.flush_wanted.notify_one();
        }
        Ok(info)
    }

    /// Removes every record at or after `offset`; see [`Log::truncate_to`]. The end offset
    /// comes down with the log, and so does the durable offset, so that records appended in
    /// place of the removed ones wait for a sync of their own.
    pub fn truncate_to(&self, offset: i64) -> Result<bool> {
        self.check_online()?;
        let mut log = self.log.lock();
        let truncated = log.truncate_to(offset).map_err(|e| self.named(e))?;
        let end = log.log_end_offset();
        self.durable_offset.send_if_modified(|durable| {
            let lowered = *durable > end;
            *durable = (*durable).min(end);
            lowered
        });
        self.end_offset.send_replace(end);
        Ok(truncated)
    }

    /// Makes this replica the leader in `epoch`; see [`Log::become_leader`].
    pub fn become_leader(&self, epoch: i32) -> Result<()> {
        self.check_online()?;
        let mut log = self.log.lock();
        log.become_leader(epoch)?;
        self.end_offset.send_replace(log.log_end_offset());
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
        self.end_offset.subscribe()
    }

    /// Syncs now and waits for it.
    pub async fn flush(&self) -> Result<()> {
        let end = self.high_watermark();
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
