//! What each idempotent or transactional producer last wrote to one partition (Kafka's
//! `ProducerStateManager`).
//!
//! Per producer id: its epoch, the sequences and offsets of its last
//! [`PRODUCER_BATCHES_KEPT`] batches (to answer a retried batch with its first offsets and to
//! refuse gaps), the timestamp of its last write (for expiry), the coordinator epoch of its
//! last marker, and where its ongoing transaction started. The smallest such start is the
//! partition's first unstable offset, which bounds the last stable offset.
//!
//! Every batch changes the state through one function, [`ProducerStateManager::apply`], whoever
//! appends it (a leader, a follower copying the leader, recovery replaying the log); only a
//! producer's own batches and the coordinator's markers are checked first
//! ([`ProducerStateManager::check_client`], [`ProducerStateManager::check_marker`]).
//!
//! The state is snapshotted to `<offset:020>.snapshot` in the partition directory (the state
//! after every batch below `offset`): when a segment rolls and on a clean close. Opening a
//! log loads the latest snapshot and replays only the batches after it, so producers survive
//! restarts even once retention deleted the segments holding their batches. Format (big
//! endian, Eddy's own): version i16 = 1, crc32c u32 of everything after it, producer count
//! i32, then per producer: id i64, epoch i16, last timestamp i64, coordinator epoch i32, first
//! offset of the ongoing transaction i64 (-1 if none), batch count i32, and per batch first
//! sequence i32, last sequence i32, base offset i64, last offset i64.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut};

use super::batch::{BatchHeader, ControlMarker};
use super::AppendInfo;
use crate::error::{BrokerError, Result};
use crate::limits::PRODUCER_BATCHES_KEPT;

/// Sequences and offsets of one batch a producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMetadata {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
    last_offset: i64,
}

/// One producer's state on this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Its most recent batches, oldest first, at most [`PRODUCER_BATCHES_KEPT`].
    batches: VecDeque<BatchMetadata>,
    /// The max timestamp of its last batch or marker.
    last_timestamp_ms: i64,
    /// The coordinator epoch of its last marker (-1 before any).
    coordinator_epoch: i32,
    /// Where its ongoing transaction started, if one is.
    txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            batches: VecDeque::new(),
            last_timestamp_ms: -1,
            coordinator_epoch: -1,
            txn_first_offset: None,
        }
    }

    /// Takes `epoch` on; a different epoch starts its sequences over.
    fn set_epoch(&mut self, epoch: i16) {
        if self.epoch != epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
    }

    fn last_sequence(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_sequence)
    }
}

/// One producer as DescribeProducers reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The last sequence it wrote in its current epoch (-1 if none).
    pub last_sequence: i32,
    pub last_timestamp_ms: i64,
    /// The coordinator epoch of its last marker (-1 if none).
    pub coordinator_epoch: i32,
    /// Where its ongoing transaction started (-1 if none).
    pub current_txn_start_offset: i64,
}

/// A transaction that a marker ended: its producer, its first offset and the marker's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub aborted: bool,
}

/// The producer state of one partition.
#[derive(Debug, Default)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Ongoing transactions: first offset -> producer id.
    ongoing: BTreeMap<i64, i64>,
    /// Transactions whose marker may not be replicated yet: marker offset -> first offset.
    /// They stay unstable until the high watermark passes the marker (Kafka's
    /// `unreplicatedTxns`); [`ProducerStateManager::last_stable_offset`] forgets the others.
    unreplicated: BTreeMap<i64, i64>,
}

impl ProducerStateManager {
    /// Checks a producer's batch before a leader appends it. Returns where the batch landed
    /// when it is a retry of one of the producer's recent batches (same epoch and sequences).
    /// Refuses an epoch older than the producer's (INVALID_PRODUCER_EPOCH), a sequence that
    /// does not follow the last one, or does not start at 0 in a newer epoch
    /// (OUT_OF_ORDER_SEQUENCE_NUMBER), and a non-transactional batch while the producer has
    /// a transaction ongoing (INVALID_TXN_STATE). A producer this partition does not know
    /// (never seen, or expired) may start at any sequence, as in Kafka since KIP-360.
    pub fn check_client(&self, header: &BatchHeader) -> Result<Option<AppendInfo>> {
        if header.producer_id < 0 {
            return Ok(None);
        }
        let Some(entry) = self.producers.get(&header.producer_id) else {
            return Ok(None);
        };
        if header.producer_epoch < entry.epoch {
            return Err(BrokerError::InvalidProducerEpoch {
                producer_id: header.producer_id,
                epoch: header.producer_epoch,
                current: entry.epoch,
            });
        }
        if header.is_idempotent() {
            if let Some(duplicate) = check_sequence(entry, header)? {
                return Ok(Some(duplicate));
            }
        }
        if !header.is_transactional() && entry.txn_first_offset.is_some() {
            return Err(BrokerError::InvalidTxnState {
                producer_id: header.producer_id,
                reason: "it sent a non-transactional batch while its transaction is ongoing",
            });
        }
        Ok(None)
    }

    /// Checks a marker before a leader appends it: an epoch older than the producer's is
    /// refused (INVALID_PRODUCER_EPOCH), and so is a coordinator epoch older than the one of
    /// the producer's last marker (TRANSACTION_COORDINATOR_FENCED: an old coordinator).
    pub fn check_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
    ) -> Result<()> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if producer_epoch < entry.epoch {
            return Err(BrokerError::InvalidProducerEpoch {
                producer_id,
                epoch: producer_epoch,
                current: entry.epoch,
            });
        }
        if coordinator_epoch < entry.coordinator_epoch {
            return Err(BrokerError::TransactionCoordinatorFenced {
                producer_id,
                coordinator_epoch,
                current: entry.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Applies one stamped batch (its offsets final) to the state: a data batch records its
    /// sequences and may start a transaction; a control batch (`marker` read from it) ends
    /// the producer's transaction and returns it. Nothing is checked here: a follower and
    /// recovery take what the leader accepted.
    pub fn apply(
        &mut self,
        header: &BatchHeader,
        marker: Option<ControlMarker>,
    ) -> Option<CompletedTxn> {
        if header.producer_id < 0 {
            return None;
        }
        let entry = self
            .producers
            .entry(header.producer_id)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch));
        entry.set_epoch(header.producer_epoch);
        entry.last_timestamp_ms = header.max_timestamp;
        if header.is_control() {
            let marker = marker?;
            entry.coordinator_epoch = marker.coordinator_epoch;
            let first_offset = match entry.txn_first_offset.take() {
                Some(first) => {
                    self.ongoing.remove(&first);
                    first
                }
                None => header.base_offset,
            };
            self.unreplicated.insert(header.base_offset, first_offset);
            return Some(CompletedTxn {
                producer_id: header.producer_id,
                first_offset,
                last_offset: header.base_offset,
                aborted: !marker.commit,
            });
        }
        if header.is_idempotent() {
            entry.batches.push_back(BatchMetadata {
                first_sequence: header.base_sequence,
                last_sequence: header.base_sequence.wrapping_add(header.last_offset_delta),
                base_offset: header.base_offset,
                last_offset: header.last_offset(),
            });
            if entry.batches.len() > PRODUCER_BATCHES_KEPT {
                entry.batches.pop_front();
            }
        }
        if header.is_transactional() && entry.txn_first_offset.is_none() {
            entry.txn_first_offset = Some(header.base_offset);
            self.ongoing.insert(header.base_offset, header.producer_id);
        }
        None
    }

    /// The smallest first offset of the ongoing transactions, if any.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The last stable offset under `high_watermark`: the high watermark, or the first offset
    /// of the oldest transaction that is ongoing or whose marker is not below it yet. Forgets
    /// the completed transactions whose markers it passed.
    pub fn last_stable_offset(&mut self, high_watermark: i64) -> i64 {
        self.on_high_watermark(high_watermark);
        let ongoing = self.first_unstable_offset().unwrap_or(i64::MAX);
        let unreplicated = self
            .unreplicated
            .values()
            .min()
            .copied()
            .unwrap_or(i64::MAX);
        high_watermark.min(ongoing).min(unreplicated)
    }

    /// Forgets the completed transactions whose markers are below `high_watermark`.
    pub fn on_high_watermark(&mut self, high_watermark: i64) {
        self.unreplicated = self.unreplicated.split_off(&high_watermark);
    }

    /// Removes the producers that wrote nothing for `expiration_ms` up to `now_ms` and have no
    /// transaction ongoing (`producer.id.expiration.ms`). Returns how many went.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| {
            entry.txn_first_offset.is_some()
                || now_ms.saturating_sub(entry.last_timestamp_ms) < expiration_ms
        });
        before - self.producers.len()
    }

    /// The ongoing transactions: (producer id, epoch, first offset, last timestamp), oldest
    /// first.
    pub fn ongoing_transactions(&self) -> Vec<(i64, i16, i64, i64)> {
        self.ongoing
            .iter()
            .map(|(first, id)| {
                let entry = &self.producers[id];
                (*id, entry.epoch, *first, entry.last_timestamp_ms)
            })
            .collect()
    }

    /// Every producer this partition knows, by id.
    pub fn summaries(&self) -> Vec<ProducerSummary> {
        let mut all: Vec<ProducerSummary> = self
            .producers
            .iter()
            .map(|(id, entry)| ProducerSummary {
                producer_id: *id,
                producer_epoch: entry.epoch,
                last_sequence: entry.last_sequence(),
                last_timestamp_ms: entry.last_timestamp_ms,
                coordinator_epoch: entry.coordinator_epoch,
                current_txn_start_offset: entry.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        all.sort_by_key(|s| s.producer_id);
        all
    }

    /// Whether no producer is known.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Writes the state durably as the snapshot at `offset` in `dir`.
    pub fn write_snapshot(&self, dir: &Path, offset: i64) -> std::io::Result<()> {
        let mut body = Vec::with_capacity(4 + self.producers.len() * 64);
        body.put_i32(self.producers.len() as i32);
        let mut ids: Vec<&i64> = self.producers.keys().collect();
        ids.sort_unstable();
        for id in ids {
            let entry = &self.producers[id];
            body.put_i64(*id);
            body.put_i16(entry.epoch);
            body.put_i64(entry.last_timestamp_ms);
            body.put_i32(entry.coordinator_epoch);
            body.put_i64(entry.txn_first_offset.unwrap_or(-1));
            body.put_i32(entry.batches.len() as i32);
            for batch in &entry.batches {
                body.put_i32(batch.first_sequence);
                body.put_i32(batch.last_sequence);
                body.put_i64(batch.base_offset);
                body.put_i64(batch.last_offset);
            }
        }
        let mut file = Vec::with_capacity(6 + body.len());
        file.put_i16(SNAPSHOT_VERSION);
        file.put_u32(crc32c::crc32c(&body));
        file.extend_from_slice(&body);
        super::write_state_file(&snapshot_path(dir, offset), &file)
    }

    /// Reads the snapshot at `path`; None when it is missing, torn or corrupt (its CRC, its
    /// version or its lengths do not hold), so the caller falls back to an older one.
    pub fn read_snapshot(path: &Path) -> Option<ProducerStateManager> {
        let bytes = std::fs::read(path).ok()?;
        let parsed = parse_snapshot(&bytes);
        if parsed.is_none() {
            tracing::warn!(file = %path.display(), "ignoring a torn or corrupt producer snapshot");
        }
        parsed
    }
}

/// The sequence check of a batch from a producer this partition knows, at its epoch or a
/// newer one. Returns the first landing of a retried batch.
fn check_sequence(entry: &ProducerEntry, header: &BatchHeader) -> Result<Option<AppendInfo>> {
    let expected = if header.producer_epoch > entry.epoch {
        // A new epoch starts its sequences over.
        0
    } else {
        let last_sequence = header.base_sequence.wrapping_add(header.last_offset_delta);
        let retried = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == header.base_sequence && b.last_sequence == last_sequence);
        if let Some(batch) = retried {
            return Ok(Some(AppendInfo {
                base_offset: batch.base_offset,
                last_offset: batch.last_offset,
                duplicate: true,
            }));
        }
        entry.last_sequence().wrapping_add(1).max(0)
    };
    if header.base_sequence != expected {
        return Err(BrokerError::OutOfOrderSequence {
            producer_id: header.producer_id,
            expected,
            got: header.base_sequence,
        });
    }
    Ok(None)
}

const SNAPSHOT_VERSION: i16 = 1;
/// Bytes of one producer in a snapshot before its batches, and of one batch.
const SNAPSHOT_PRODUCER_BYTES: usize = 8 + 2 + 8 + 4 + 8 + 4;
const SNAPSHOT_BATCH_BYTES: usize = 4 + 4 + 8 + 8;

fn parse_snapshot(bytes: &[u8]) -> Option<ProducerStateManager> {
    let mut buf = bytes;
    if buf.remaining() < 10 || buf.get_i16() != SNAPSHOT_VERSION {
        return None;
    }
    let crc = buf.get_u32();
    if crc32c::crc32c(buf) != crc {
        return None;
    }
    let count = usize::try_from(buf.get_i32()).ok()?;
    let mut state = ProducerStateManager::default();
    for _ in 0..count {
        if buf.remaining() < SNAPSHOT_PRODUCER_BYTES {
            return None;
        }
        let id = buf.get_i64();
        let mut entry = ProducerEntry::new(buf.get_i16());
        entry.last_timestamp_ms = buf.get_i64();
        entry.coordinator_epoch = buf.get_i32();
        entry.txn_first_offset = Some(buf.get_i64()).filter(|o| *o >= 0);
        let batches = usize::try_from(buf.get_i32()).ok()?;
        if batches > PRODUCER_BATCHES_KEPT || buf.remaining() < batches * SNAPSHOT_BATCH_BYTES {
            return None;
        }
        for _ in 0..batches {
            entry.batches.push_back(BatchMetadata {
                first_sequence: buf.get_i32(),
                last_sequence: buf.get_i32(),
                base_offset: buf.get_i64(),
                last_offset: buf.get_i64(),
            });
        }
        if let Some(first) = entry.txn_first_offset {
            state.ongoing.insert(first, id);
        }
        state.producers.insert(id, entry);
    }
    buf.is_empty().then_some(state)
}

/// The path of the snapshot at `offset` in `dir`.
pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{offset:020}.{SNAPSHOT_EXTENSION}"))
}

const SNAPSHOT_EXTENSION: &str = "snapshot";

/// The offsets of the snapshots in `dir`, ascending.
pub fn snapshot_offsets(dir: &Path) -> std::io::Result<Vec<i64>> {
    let mut offsets = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let Some(stem) = name.strip_suffix(".snapshot") else {
            continue;
        };
        if let (20, Ok(offset)) = (stem.len(), stem.parse::<i64>()) {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, sequence: i32, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: 1,
            base_timestamp: 5,
            max_timestamp: 5,
            producer_id,
            producer_epoch: epoch,
            base_sequence: sequence,
            record_count: 2,
        }
    }

    /// A snapshot written and read back is the same state; one byte flipped anywhere, or the
    /// file cut short, is refused rather than misread.
    #[test]
    fn snapshot_round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = ProducerStateManager::default();
        for (i, id) in [7i64, 9, 11].into_iter().enumerate() {
            for n in 0..7 {
                state.apply(&header(id, 2, n * 2, (i as i64) * 100 + n as i64 * 2), None);
            }
        }
        let mut transactional = header(9, 2, 14, 300);
        transactional.attributes = super::super::batch::ATTRIBUTE_TRANSACTIONAL;
        state.apply(&transactional, None);
        state.write_snapshot(dir.path(), 302).expect("write");
        assert_eq!(snapshot_offsets(dir.path()).expect("list"), vec![302]);
        let path = snapshot_path(dir.path(), 302);
        let read = ProducerStateManager::read_snapshot(&path).expect("read");
        assert_eq!(read.producers, state.producers);
        assert_eq!(read.ongoing, state.ongoing);
        assert_eq!(read.first_unstable_offset(), Some(300));
        let bytes = std::fs::read(&path).expect("bytes");
        for at in [0, 3, 10, bytes.len() / 2, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(parse_snapshot(&damaged).is_none(), "flip at {at}");
        }
        assert!(parse_snapshot(&bytes[..bytes.len() - 3]).is_none(), "torn");
    }

    /// Expiry removes producers idle for the expiration time, never one inside a transaction.
    #[test]
    fn idle_producers_expire_unless_a_transaction_is_ongoing() {
        let mut state = ProducerStateManager::default();
        state.apply(&header(1, 0, 0, 0), None);
        let mut transactional = header(2, 0, 0, 2);
        transactional.attributes = super::super::batch::ATTRIBUTE_TRANSACTIONAL;
        state.apply(&transactional, None);
        assert_eq!(state.remove_expired(1_004, 1_000), 0, "idle 999 ms");
        assert_eq!(state.remove_expired(1_005, 1_000), 1, "idle 1000 ms");
        let ids: Vec<i64> = state.summaries().iter().map(|s| s.producer_id).collect();
        assert_eq!(ids, vec![2], "the transactional producer stays");
        assert!(
            state.check_client(&header(1, 0, 9, 4)).is_ok(),
            "unknown again"
        );
    }
}
