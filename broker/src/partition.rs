//! A partition: its log behind one lock, plus the signals readers and writers wait on.
//!
//! Durability: an append is in the operating system's page cache when it returns, so it survives
//! the broker process being killed. It is on disk once the partition's flusher has synced it. The
//! flusher runs when the flush policy asks (`flush.messages`, `flush.ms`) or when an acknowledgement
//! waits for it (`flush.messages=1`: fsync before ack). One fdatasync covers every batch appended
//! before it started, so concurrent producers share syncs (group commit).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

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
}

impl Partition {
    /// Wraps an opened log and starts its flusher.
    pub fn start(topic: Arc<str>, index: i32, log: Log) -> Arc<Partition> {
        let end = log.log_end_offset();
        let partition = Arc::new(Partition {
            topic,
            index,
            log: Mutex::new(log),
            end_offset: watch::Sender::new(end),
            durable_offset: watch::Sender::new(end),
            flush_wanted: Notify::new(),
            closed: watch::Sender::new(false),
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
            .wait_for(|d| *d > last_offset)
            .await
            .map_err(|_| BrokerError::Internal("flusher stopped".into()))?;
        Ok(())
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
        let (files, end) = partition.log.lock().prepare_flush();
        let already = *partition.durable_offset.borrow();
        if end > already || files.len() > 1 {
            let synced =
                tokio::task::spawn_blocking(move || files.iter().try_for_each(|f| f.sync_data()))
                    .await;
            match synced {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    // A failed fsync may have dropped dirty pages: never retry and trust it.
                    tracing::error!(topic = %partition.topic, partition = partition.index,
                        error = %e, "fsync failed; stopping the broker to protect the log");
                    std::process::abort();
                }
                Err(e) => tracing::error!(error = %e, "flush task panicked"),
            }
            partition.log.lock().flushed(end);
            partition.durable_offset.send_replace(end);
        }
        if *closed.borrow_and_update() {
            return;
        }
    }
}
