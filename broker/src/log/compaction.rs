//! Log compaction: keep the newest record per key in closed segments, without moving offsets.
//!
//! Runs in the background while readers read. The expensive part (reading segments, building the
//! key map, writing cleaned copies) happens without the partition lock; only the swap of a
//! finished copy takes it. A crash mid-way leaves a `.cleaned` file that start-up deletes.
//!
//! Transactions: only records below the last stable offset are compacted (the caller passes
//! it as the bound), so every transaction there is decided. Records of aborted transactions
//! are removed and never count as a key's newest record. Transaction markers (control
//! batches) are kept: read_committed consumers and producer-state replay need them. Kafka
//! removes a marker once `delete.retention.ms` has passed after its transaction's records were
//! all cleaned; Eddy keeps markers for good (one small batch per transaction and partition).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::batch::{self, BatchHeader, ConsumedRecord};
use super::{AbortedTxn, Log};
use crate::error::{BrokerError, Result};

/// What one compaction pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments_rewritten: usize,
    pub records_removed: usize,
}

struct ClosedSegment {
    base_offset: i64,
    file: Arc<File>,
    size: u64,
}

impl ClosedSegment {
    fn read(&self) -> Result<Bytes> {
        let mut buf = vec![0u8; self.size as usize];
        self.file.read_exact_at(&mut buf, 0)?;
        Ok(Bytes::from(buf))
    }
}

/// Compacts the closed segments of `log` once, those wholly below offset `below` (a replica's
/// last stable offset, at most its high watermark), with the newest record per key below it:
/// a record above it may still be truncated or aborted, so it supersedes nothing yet. Records
/// of aborted transactions are removed; markers are kept. Memory holds the key map, the
/// aborted transactions below `below` and one segment at a time.
pub fn compact(log: &Mutex<Log>, now_ms: i64, below: i64) -> Result<CompactionReport> {
    let (segments, delete_retention_ms, dir, aborted) = {
        let guard = log.lock();
        if !guard.config().cleanup_policy.compacts() {
            return Ok(CompactionReport::default());
        }
        let segments: Vec<ClosedSegment> = guard
            .segments
            .values()
            .map(|s| {
                let (file, size) = s.snapshot();
                ClosedSegment {
                    base_offset: s.base_offset,
                    file,
                    size,
                }
            })
            .collect();
        (
            segments,
            guard.config().delete_retention_ms,
            guard.dir().to_path_buf(),
            guard.aborted_transactions(i64::MIN, below),
        )
    };
    // Every segment but the last (the active one, which only feeds the key map) is cleaned,
    // if it ends at or below `below`.
    let cleanable = segments
        .windows(2)
        .take_while(|pair| pair[1].base_offset <= below)
        .count();
    if cleanable == 0 {
        return Ok(CompactionReport::default());
    }
    let mut latest = HashMap::new();
    for segment in segments.iter().take_while(|s| s.base_offset < below) {
        remember_latest(&segment.read()?, below, &aborted, &mut latest)?;
    }
    let mut report = CompactionReport::default();
    for segment in &segments[..cleanable] {
        let horizon_ms = now_ms - delete_retention_ms;
        let Some((cleaned, removed)) =
            clean_segment(&segment.read()?, &latest, horizon_ms, &aborted)?
        else {
            continue;
        };
        let path: PathBuf = dir.join(format!("{:020}.log.cleaned", segment.base_offset));
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&cleaned)?;
        file.sync_all()?;
        let mut guard = log.lock();
        let unchanged = guard
            .segments
            .get(&segment.base_offset)
            .is_some_and(|s| s.size() == segment.size);
        if !unchanged {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        guard.replace_segment(segment.base_offset, &path, now_ms)?;
        report.segments_rewritten += 1;
        report.records_removed += removed;
    }
    Ok(report)
}

/// Records, for every key in `bytes`, the offset of its newest record below `below` so far,
/// leaving out aborted transactions' records.
fn remember_latest(
    bytes: &Bytes,
    below: i64,
    aborted: &[AbortedTxn],
    latest: &mut HashMap<Bytes, i64>,
) -> Result<()> {
    for (position, header) in batch::headers(bytes) {
        if header.base_offset >= below {
            break;
        }
        if is_aborted(&header, aborted) {
            continue;
        }
        let one = bytes.slice(position..position + header.total_bytes());
        for record in batch::decode_records(&one).map_err(BrokerError::CorruptMessage)? {
            if record.offset >= below {
                break;
            }
            if let Some(key) = record.key {
                latest.insert(key, record.offset);
            }
        }
    }
    Ok(())
}

/// Whether `header` is a batch of a transaction that was aborted.
fn is_aborted(header: &BatchHeader, aborted: &[AbortedTxn]) -> bool {
    header.is_transactional()
        && !header.is_control()
        && aborted.iter().any(|txn| {
            txn.producer_id == header.producer_id
                && (txn.first_offset..=txn.last_offset).contains(&header.base_offset)
        })
}

/// The segment rewritten without superseded records, expired tombstones (those older than
/// `tombstone_horizon_ms`) and aborted transactions' records, and how many records went;
/// `None` when nothing would change. Markers stay as they are.
fn clean_segment(
    bytes: &Bytes,
    latest: &HashMap<Bytes, i64>,
    tombstone_horizon_ms: i64,
    aborted: &[AbortedTxn],
) -> Result<Option<(Vec<u8>, usize)>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut removed = 0;
    for (position, header) in batch::headers(bytes) {
        let one = bytes.slice(position..position + header.total_bytes());
        if is_aborted(&header, aborted) {
            removed += header.record_count.max(0) as usize;
            continue;
        }
        let records = batch::decode_records(&one).map_err(BrokerError::CorruptMessage)?;
        let kept: Vec<ConsumedRecord> = records
            .iter()
            .filter(|r| keep(r, latest, tombstone_horizon_ms))
            .cloned()
            .collect();
        removed += records.len() - kept.len();
        if kept.len() == records.len() {
            out.extend_from_slice(&one);
        } else if !kept.is_empty() {
            let encoded =
                batch::encode_with_offsets(&kept, &header).map_err(BrokerError::Internal)?;
            let start = out.len();
            out.extend_from_slice(&encoded);
            // The leader epoch that wrote the records stays with them (it is outside the CRC):
            // followers copy it and a rebuilt epoch cache reads it.
            batch::stamp(
                &mut out[start..],
                kept[0].offset,
                header.partition_leader_epoch,
            );
        }
    }
    Ok((removed > 0).then_some((out, removed)))
}

fn keep(record: &ConsumedRecord, latest: &HashMap<Bytes, i64>, tombstone_horizon_ms: i64) -> bool {
    let Some(key) = &record.key else {
        return false;
    };
    if latest.get(key) != Some(&record.offset) {
        return false;
    }
    record.value.is_some() || record.timestamp_ms >= tombstone_horizon_ms
}

#[cfg(test)]
mod tests {
    use super::super::batch::BatchBuilder;
    use super::*;
    use crate::config::{CleanupPolicy, TopicConfig};

    #[test]
    fn keeps_latest_per_key_with_offsets_unchanged_and_drops_old_tombstones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = TopicConfig {
            segment_bytes: 300,
            cleanup_policy: CleanupPolicy::Compact,
            delete_retention_ms: 1_000,
            ..TopicConfig::default()
        };
        let (log, _) = Log::open(dir.path(), config, 0, 0).expect("open");
        let log = Mutex::new(log);
        // Offsets 0..30: keys k0..k4 round robin; k4's last write (offset 29) is a tombstone.
        for i in 0..30i64 {
            let mut b = BatchBuilder::new(i, 64);
            let key = format!("k{}", i % 5);
            let value = format!("v{i}");
            let value = (i != 29).then_some(value.as_bytes());
            b.push(i, Some(key.as_bytes()), value, &[]);
            log.lock().append(&mut b.finish(), i).expect("append");
        }
        log.lock()
            .roll(100)
            .expect("roll so every record is in a closed segment");
        let report = compact(&log, 5_000, i64::MAX).expect("compact");
        assert!(report.records_removed >= 25);
        let guard = log.lock();
        let bytes = guard.read(0, 1 << 20).expect("read");
        let mut all = batch::decode_records(&bytes).expect("decode");
        let mut offset = all.last().map(|r| r.offset + 1).unwrap_or(0);
        while offset < guard.log_end_offset() {
            let more =
                batch::decode_records(&guard.read(offset, 1 << 20).expect("read")).expect("decode");
            let Some(last) = more.last() else { break };
            offset = last.offset + 1;
            all.extend(more);
        }
        let offsets: Vec<i64> = all.iter().map(|r| r.offset).collect();
        assert_eq!(
            offsets,
            vec![25, 26, 27, 28],
            "newest per key, tombstone gone, offsets kept"
        );
        assert_eq!(all[0].value.as_deref(), Some(&b"v25"[..]));
        let dir_syncs = super::super::synced_dirs::count(dir.path());
        assert!(
            dir_syncs >= 3,
            "the swap and the new indexes are synced ({dir_syncs})"
        );
        let end = guard.log_end_offset();
        drop(guard);
        drop(log);
        // A trusted reopen (recovery point at the end) uses the indexes written by the swap.
        let config = TopicConfig {
            segment_bytes: 300,
            cleanup_policy: CleanupPolicy::Compact,
            ..TopicConfig::default()
        };
        let (reopened, report) = Log::open(dir.path(), config, end, 0).expect("reopen");
        assert!(!report.rebuilt_index);
        let bytes = reopened.read(25, 1 << 20).expect("read");
        let first = batch::decode_records(&bytes).expect("decode");
        assert_eq!(first[0].offset, 25);
    }

    /// A record at or above the bound (a replica's high watermark, which may still be
    /// truncated away) supersedes nothing: the newest record below the bound is kept.
    #[test]
    fn records_above_the_bound_supersede_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = TopicConfig {
            cleanup_policy: CleanupPolicy::Compact,
            ..TopicConfig::default()
        };
        let (log, _) = Log::open(dir.path(), config, 0, 0).expect("open");
        let log = Mutex::new(log);
        let append = |i: i64| {
            let mut b = BatchBuilder::new(i, 64);
            b.push(i, Some(b"k"), Some(format!("v{i}").as_bytes()), &[]);
            log.lock().append(&mut b.finish(), i).expect("append");
        };
        (0..10).for_each(append);
        log.lock().roll(100).expect("roll");
        (10..12).for_each(append);
        let report = compact(&log, 5_000, 10).expect("compact");
        assert_eq!(report.records_removed, 9, "{report:?}");
        let kept =
            batch::decode_records(&log.lock().read(0, 1 << 20).expect("read")).expect("decode");
        assert_eq!(kept[0].offset, 9, "the newest below the bound stays");
        let report = compact(&log, 5_000, 11).expect("compact");
        assert_eq!(
            report.records_removed, 1,
            "offset 10, now below, supersedes 9"
        );
    }

    /// Goal: compaction removes the records of aborted transactions (and they never count as
    /// a key's newest record), keeps markers, and touches nothing at or above the last stable
    /// offset. Method: key k committed as v0, producer 5 writes k=aborted in a transaction it
    /// aborts, producer 6 commits k=v2; producer 7's transaction is still open. Compact below
    /// the LSO and read back every batch.
    #[test]
    fn aborted_records_go_markers_stay_and_open_transactions_are_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = TopicConfig {
            cleanup_policy: CleanupPolicy::Compact,
            ..TopicConfig::default()
        };
        let (log, _) = Log::open(dir.path(), config, 0, 0).expect("open");
        let log = Mutex::new(log);
        let record = |key: &str, value: &str| {
            let mut b = BatchBuilder::new(0, 64);
            b.push(0, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
            b.finish()
        };
        let txn = |producer_id: i64, key: &str, value: &str| {
            batch::with_producer(record(key, value), producer_id, 0, 0, true)
        };
        {
            let mut guard = log.lock();
            guard.append(&mut record("k", "v0"), 0).expect("0");
            guard.append(&mut txn(5, "k", "aborted"), 0).expect("1");
            guard.append(&mut txn(6, "j", "v2"), 0).expect("2");
            guard.append_marker(5, 0, false, 0, 0).expect("3: abort");
            guard.append_marker(6, 0, true, 0, 0).expect("4: commit");
            guard.roll(0).expect("roll");
            guard.append(&mut txn(7, "j", "open"), 0).expect("5");
            guard.append(&mut record("x", "y"), 0).expect("6");
        }
        let lso = log.lock().last_stable_offset(7);
        assert_eq!(lso, 5, "producer 7 is open");
        let report = compact(&log, 0, lso).expect("compact");
        assert_eq!(report.records_removed, 1, "{report:?}");
        let bytes = log.lock().read(0, 1 << 20).expect("read");
        let kept: Vec<(i64, String)> = batch::decode_records(&bytes)
            .expect("decode")
            .into_iter()
            .map(|r| {
                (
                    r.offset,
                    String::from_utf8_lossy(&r.value.expect("value")).into(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            vec![(0, "v0".into()), (2, "v2".into())],
            "k keeps its committed value"
        );
        let open = log.lock().read(5, 1 << 20).expect("read");
        let open = batch::decode_records(&open).expect("decode");
        assert_eq!(open.len(), 2, "the open transaction and what follows stay");
        let controls: Vec<i64> = batch::headers(&bytes)
            .filter(|(_, h)| h.is_control())
            .map(|(_, h)| h.base_offset)
            .collect();
        assert_eq!(controls, vec![3, 4], "markers are kept");
        let transactional = batch::headers(&bytes)
            .find(|(_, h)| h.base_offset == 2)
            .expect("offset 2")
            .1;
        assert!(transactional.is_transactional() && transactional.producer_id == 6);
    }
}
