//! One partition's log: an ordered set of segments addressed by offset.
//!
//! The log is the truth; indexes, the recovery point and producer state are hints rebuilt from
//! it. Appends happen under the partition's lock, one writer at a time; syncing happens outside it
//! (see `partition.rs`), so many appends share one fdatasync.
//!
//! The log start offset is the first segment's base offset, or higher once DeleteRecords moved
//! it inside a segment. A moved start is kept in `<dir>/log-start-offset` (Kafka keeps one
//! `log-start-offset-checkpoint` per data directory; a file inside the partition's directory
//! goes wherever the directory goes, so a deleted topic's start can never apply to a new topic
//! of the same name).
//!
//! Replication, on Kafka's model: a leader stamps every batch with its leader epoch
//! ([`Log::become_leader`], [`Log::append`]); a follower appends the leader's batches as they
//! are ([`Log::append_as_follower`]); both keep which epoch wrote which offsets in a
//! [`LeaderEpochCache`], whose [`Log::end_offset_for_epoch`] answers OffsetsForLeaderEpoch; a
//! follower that diverged cuts its log with [`Log::truncate_to`] (KIP-101, KIP-279).
//!
//! Transactions, on Kafka's model (KIP-98): producer state ([`producer_state`]) knows each
//! producer's ongoing transaction; a leader ends one with a marker ([`Log::append_marker`]), a
//! follower and recovery apply the markers they find. The first offset of the oldest ongoing
//! transaction bounds what read_committed consumers see ([`Log::last_stable_offset`]), and
//! each segment's `.txnindex` ([`txn_index`]) lists the transactions aborted by its markers
//! ([`Log::aborted_transactions`]).

pub mod batch;
pub mod compaction;
pub mod epoch_cache;
mod index;
pub mod message_set;
pub mod producer_state;
mod segment;
pub mod txn_index;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::config::TopicConfig;
use crate::error::{BrokerError, Result};
use batch::{BatchError, BatchHeader, ControlMarker};
pub use epoch_cache::{EpochEntry, LeaderEpochCache};
pub use producer_state::ProducerSummary;
use producer_state::{snapshot_offsets, snapshot_path, CompletedTxn, ProducerStateManager};
pub use segment::{RecoveryReport, Segment};
pub use txn_index::AbortedTxn;

/// Where one append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// True when the batch was a retry of one already in the log (idempotent producers).
    pub duplicate: bool,
}

/// A partition's log.
pub struct Log {
    dir: PathBuf,
    config: TopicConfig,
    segments: BTreeMap<i64, Segment>,
    log_start_offset: i64,
    recovery_point: i64,
    records_since_flush: i64,
    /// Files of segments rolled since the last sync (`.log` and indexes): the next sync covers
    /// them, with the directory that gained the new segment's entries.
    rolled_unsynced: Vec<Arc<File>>,
    producers: ProducerStateManager,
    /// Which leader epoch wrote which offsets.
    epochs: LeaderEpochCache,
    /// The epoch this log stamps on the batches it appends as leader, once
    /// [`Log::become_leader`] set it; until then the latest epoch in the cache, or 0.
    leader_epoch: Option<i32>,
    /// The lowest log end offset a truncation left since the last [`Log::prepare_flush`]: a
    /// sync prepared before it must not count the offsets above it as durable (they hold
    /// other records now).
    truncated_since_prepare: Option<i64>,
    /// Test-only fault: every sync of this log fails, as a failing disk's would.
    #[cfg(test)]
    pub(crate) fail_syncs: bool,
}

/// Who is appending, which decides the checks a batch gets (Kafka's `AppendOrigin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppendOrigin {
    /// A producer: the broker assigns offsets and the leader epoch.
    Client,
    /// A follower copying its leader's batches, offsets and epochs already assigned.
    Replication,
}

/// One sync of a log, prepared under its lock and run outside it: the files written since the
/// last one, and the directory when segments were created in it.
pub struct FlushJob {
    files: Vec<Arc<File>>,
    dir: Option<PathBuf>,
    /// Every offset below this is on disk once the job succeeds.
    pub end: i64,
    #[cfg(test)]
    fail: bool,
}

impl FlushJob {
    /// Whether segments rolled since the last sync, so the job is needed even when no offset
    /// is newly covered.
    pub fn has_rolled(&self) -> bool {
        self.dir.is_some()
    }

    /// Syncs the files, then the directory. An error means some of it may not be on disk.
    pub fn run(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.fail {
            return Err(std::io::Error::other("injected sync failure"));
        }
        for file in &self.files {
            file.sync_data()?;
        }
        match &self.dir {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

impl Log {
    /// Opens the log in `dir`, creating it if needed. Segments at or after the one holding
    /// `recovery_point` are CRC-checked and cut at the first torn or corrupt batch (and any
    /// later segment is dropped); earlier ones are trusted.
    pub fn open(
        dir: &Path,
        config: TopicConfig,
        recovery_point: i64,
        now_ms: i64,
    ) -> Result<(Log, RecoveryReport)> {
        let created = std::fs::symlink_metadata(dir).is_err();
        std::fs::create_dir_all(dir)?;
        let bases = segment_bases(dir)?;
        let first_verified = bases.iter().rev().find(|b| **b <= recovery_point).copied();
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments: BTreeMap::new(),
            log_start_offset: 0,
            recovery_point: 0,
            records_since_flush: 0,
            rolled_unsynced: Vec::new(),
            producers: ProducerStateManager::default(),
            epochs: LeaderEpochCache::empty(dir),
            leader_epoch: None,
            truncated_since_prepare: None,
            #[cfg(test)]
            fail_syncs: false,
        };
        // Where each epoch starts in the segments recovery scans, as Kafka's recovery assigns
        // them: epochs newer than the cache's latest only.
        let mut scanned_epochs: Vec<EpochEntry> = Vec::new();
        let mut total = RecoveryReport::default();
        let mut cut = false;
        let mut verified = Vec::new();
        for (i, base) in bases.iter().enumerate() {
            if cut {
                // Everything after a cut segment is unreachable: remove it.
                remove_segment_files(dir, *base);
                continue;
            }
            let verify = first_verified.is_none_or(|f| *base >= f);
            let next_base = bases.get(i + 1).copied();
            let (mut segment, report) = Segment::open(dir, *base, verify, now_ms, &mut |h| {
                remember_epoch_start(&mut scanned_epochs, h);
            })?;
            if let (Some(next), false) = (next_base, verify) {
                segment.next_offset = segment.next_offset.max(next);
            }
            if report.truncated_bytes > 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    segment = base,
                    bytes = report.truncated_bytes,
                    "truncated a torn or corrupt tail"
                );
                cut = next_base.is_some_and(|n| segment.next_offset < n);
            }
            total.truncated_bytes += report.truncated_bytes;
            total.rebuilt_index |= report.rebuilt_index;
            if verify {
                verified.push(*base);
            }
            log.segments.insert(*base, segment);
        }
        if log.segments.is_empty() {
            log.segments.insert(0, Segment::create(dir, 0, now_ms)?);
        }
        log.log_start_offset = *log.segments.keys().next().expect("at least one segment");
        if let Some(stored) = read_log_start_offset(dir) {
            // A torn tail may have cut the log below the stored start: the log end bounds it.
            let start = stored.min(log.log_end_offset());
            log.log_start_offset = log.log_start_offset.max(start);
            log.delete_segments_below_start();
        }
        log.open_epochs(&scanned_epochs)?;
        let replayed = log.load_producer_state()?;
        log.sync_opened(&verified, created)?;
        log.recovery_point = log.log_end_offset();
        if replayed > 0 {
            // The log is synced to its end now: a snapshot there spares the next open the replay.
            log.take_producer_snapshot()?;
        }
        Ok((log, total))
    }

    /// Loads the leader epoch cache at open and fits it to the recovered log: entries past
    /// the log end go (a torn tail, or a truncation cut short by a crash), epochs found in the
    /// scanned segments are added, and history below the log start is forgotten. A missing or
    /// unreadable checkpoint is rebuilt from the headers of every batch.
    fn open_epochs(&mut self, scanned: &[EpochEntry]) -> Result<()> {
        match LeaderEpochCache::open(&self.dir) {
            Some(cache) => {
                self.epochs = cache;
                self.epochs.truncate_from_end(self.log_end_offset())?;
                self.epochs.assign_all(scanned)?;
            }
            None => {
                let mut starts = Vec::new();
                for segment in self.segments.values() {
                    segment.visit_headers(&mut |h| remember_epoch_start(&mut starts, h))?;
                }
                self.epochs.assign_all(&starts)?;
            }
        }
        self.epochs.truncate_from_start(self.log_start_offset)?;
        Ok(())
    }

    /// OFFSET_OUT_OF_RANGE for `offset`, with the log's bounds (the partition fills in its
    /// name).
    fn out_of_range(&self, offset: i64) -> BrokerError {
        BrokerError::OffsetOutOfRange {
            topic: String::new(),
            partition: -1,
            offset,
            log_start_offset: self.log_start_offset,
            log_end_offset: self.log_end_offset(),
        }
    }

    /// Moves the log start offset up to `offset` (DeleteRecords), durably, and deletes the
    /// segments wholly below it; the active segment stays, as in Kafka. Reads below the new start
    /// are then out of range. An offset at or below the current start changes nothing. Returns
    /// the log start offset after the call.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64> {
        let end = self.log_end_offset();
        if offset < 0 || offset > end {
            return Err(self.out_of_range(offset));
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        // Durable before it takes effect: an answered DeleteRecords survives a crash.
        write_state_file(
            &self.dir.join(LOG_START_OFFSET_FILE),
            offset.to_string().as_bytes(),
        )?;
        self.log_start_offset = offset;
        self.delete_segments_below_start();
        self.forget_epochs_below_start();
        self.delete_old_snapshots();
        Ok(self.log_start_offset)
    }

    /// Moves the leader epoch cache's first entry up to the log start offset (Kafka's
    /// `truncateFromStart`). A failed write is logged, not returned: the entries in memory are
    /// right, and opening the log fits the file to the log start again.
    fn forget_epochs_below_start(&mut self) {
        if let Err(e) = self.epochs.truncate_from_start(self.log_start_offset) {
            tracing::warn!(dir = %self.dir.display(), error = %e,
                "could not write the leader epoch checkpoint after the log start moved");
        }
    }

    /// Deletes closed segments whose every offset is below the log start offset: those the
    /// next segment starts at or before it.
    fn delete_segments_below_start(&mut self) {
        loop {
            let mut bases = self.segments.keys();
            let (Some(&oldest), Some(&next)) = (bases.next(), bases.next()) else {
                return;
            };
            if next > self.log_start_offset {
                return;
            }
            let segment = self.segments.remove(&oldest).expect("oldest exists");
            segment.delete_files();
        }
    }

    /// Makes what recovery read durable before the recovery point claims it: verified segments
    /// may hold bytes that were only in the page cache when the last process died, their
    /// indexes were rebuilt, and a new directory must be recorded in its parent.
    fn sync_opened(&mut self, verified: &[i64], created: bool) -> Result<()> {
        for base in verified {
            if let Some(segment) = self.segments.get_mut(base) {
                segment.sync()?;
            }
        }
        sync_dir(&self.dir)?;
        if created {
            sync_dir(parent_dir(&self.dir))?;
        }
        Ok(())
    }

    /// The offset the next record will get.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// The first offset still in the log.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// Offsets below this are known to be on disk.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(Segment::size).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The topic config this log follows.
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// Replaces the topic config (an alter-configs took effect).
    pub fn set_config(&mut self, config: TopicConfig) {
        self.config = config;
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has an active segment")
    }

    /// Validates, stamps and appends every batch in `records` (as a produce request carries
    /// them). Returns where the first and last landed. Nothing is appended if any batch is bad.
    pub fn append(&mut self, records: &mut BytesMut, now_ms: i64) -> Result<AppendInfo> {
        let batches = self.validate_batches(records, AppendOrigin::Client)?;
        if batches.is_empty() {
            return Err(BrokerError::CorruptMessage(
                "no record batch in request".into(),
            ));
        }
        let mut info: Option<AppendInfo> = None;
        for (position, header) in batches {
            let batch = &mut records[position..position + header.total_bytes()];
            let one = match self.config.codec().filter(|c| *c != header.compression()) {
                None => self.append_one(batch, header, now_ms)?,
                Some(codec) => {
                    let mut packed =
                        batch::recompress(batch, codec).map_err(BrokerError::CorruptMessage)?;
                    let header = batch::validate(&packed)
                        .map_err(|e| BrokerError::Internal(format!("recompressed batch: {e}")))?;
                    self.append_one(&mut packed, header, now_ms)?
                }
            };
            info = Some(match info {
                None => one,
                Some(first) => AppendInfo {
                    last_offset: one.last_offset,
                    ..first
                },
            });
        }
        Ok(info.expect("at least one batch"))
    }

    fn append_one(
        &mut self,
        batch: &mut [u8],
        header: BatchHeader,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        if let Some(duplicate) = self.producers.check_client(&header)? {
            return Ok(duplicate);
        }
        let stamped = self.append_as_leader(batch, header, None, now_ms)?;
        Ok(AppendInfo {
            base_offset: stamped.base_offset,
            last_offset: stamped.last_offset(),
            duplicate: false,
        })
    }

    /// Stamps a checked batch with the log end offset and this leader's epoch, appends it and
    /// applies it to producer state (`marker` is what a control batch says). Returns its
    /// stamped header.
    fn append_as_leader(
        &mut self,
        batch: &mut [u8],
        header: BatchHeader,
        marker: Option<ControlMarker>,
        now_ms: i64,
    ) -> Result<BatchHeader> {
        let base_offset = self.log_end_offset();
        let last_offset = base_offset + i64::from(header.last_offset_delta);
        self.maybe_roll(batch.len(), base_offset, last_offset, now_ms)?;
        let epoch = self.leader_epoch();
        // The cache learns a new epoch before any batch of it is on disk, as in Kafka, so it
        // never misses an epoch the log holds.
        self.epochs.assign(epoch, base_offset)?;
        batch::stamp(batch, base_offset, epoch);
        let stamped = BatchHeader {
            base_offset,
            partition_leader_epoch: epoch,
            ..header
        };
        self.active_mut().append(batch, &stamped)?;
        self.remember(&stamped, marker)?;
        self.records_since_flush += i64::from(stamped.record_count);
        Ok(stamped)
    }

    /// Appends a transaction marker as the leader: a control batch ending `producer_id`'s
    /// transaction, committed or aborted, written by the coordinator in `coordinator_epoch`
    /// (Kafka's WriteTxnMarkers). A marker with an epoch older than the producer's is refused
    /// (INVALID_PRODUCER_EPOCH), as is one from an older coordinator epoch
    /// (TRANSACTION_COORDINATOR_FENCED); a newer epoch (the coordinator aborting after it
    /// fenced the producer) is taken on. A marker for a producer with no ongoing transaction
    /// is written too, as Kafka writes it. Returns where it landed.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.producers
            .check_marker(producer_id, producer_epoch, coordinator_epoch)?;
        let marker = ControlMarker {
            commit,
            coordinator_epoch,
        };
        let mut batch = batch::control_batch(producer_id, producer_epoch, marker, now_ms);
        let header = batch::validate(&batch)
            .map_err(|e| BrokerError::Internal(format!("a marker batch is invalid: {e}")))?;
        let stamped = self.append_as_leader(&mut batch, header, Some(marker), now_ms)?;
        Ok(AppendInfo {
            base_offset: stamped.base_offset,
            last_offset: stamped.last_offset(),
            duplicate: false,
        })
    }

    /// Applies an appended batch to producer state and indexes the transaction it aborted,
    /// if it did, in the active segment: the one path for leaders, followers and markers.
    fn remember(&mut self, header: &BatchHeader, marker: Option<ControlMarker>) -> Result<()> {
        let Some(txn) = self.producers.apply(header, marker) else {
            return Ok(());
        };
        if txn.aborted {
            let entry = aborted_entry(&txn, &self.producers);
            if let Some(created) = self.active_mut().txn_index_mut().append(entry)? {
                // The next sync covers the new file and the directory entry naming it.
                self.rolled_unsynced.push(created);
            }
        }
        Ok(())
    }

    /// Checks every whole batch in `records` as `origin` requires, before anything is
    /// appended, and returns where each starts. Both origins check the header, the length and
    /// the CRC-32C. A producer's batch must also fit `max.message.bytes` and hold exactly
    /// `last_offset_delta + 1` records. A leader's batch keeps the offsets the leader gave it:
    /// they must increase from batch to batch and start at or after the log end (gaps are
    /// allowed: a compacted leader has them), a compacted batch may hold fewer records than
    /// its offset range, and `max.message.bytes` is not applied (as in Kafka: the leader
    /// accepted the batch, perhaps under an older limit). A leader's bytes may end in a
    /// partial batch (a fetch response cut at its size limit), which is left out.
    fn validate_batches(
        &self,
        records: &[u8],
        origin: AppendOrigin,
    ) -> Result<Vec<(usize, BatchHeader)>> {
        let mut batches = Vec::new();
        let mut position = 0;
        let mut offset_min = self.log_end_offset();
        while position < records.len() {
            let header = match batch::validate(&records[position..]) {
                Ok(header) => header,
                Err(BatchError::Incomplete) if origin == AppendOrigin::Replication => break,
                Err(e) => return Err(BrokerError::CorruptMessage(e.to_string())),
            };
            let size = header.total_bytes();
            let range = header.last_offset_delta + 1;
            match origin {
                AppendOrigin::Client => {
                    if size > self.config.max_message_bytes as usize {
                        return Err(BrokerError::MessageTooLarge {
                            size,
                            max: self.config.max_message_bytes,
                        });
                    }
                    if header.record_count != range {
                        return Err(record_count_error(&header));
                    }
                }
                AppendOrigin::Replication => {
                    if header.record_count > range {
                        return Err(record_count_error(&header));
                    }
                    if header.base_offset < offset_min {
                        return Err(BrokerError::UnexpectedAppendOffset {
                            offset: header.base_offset,
                            expected_min: offset_min,
                        });
                    }
                    offset_min = header.next_offset();
                }
            }
            batches.push((position, header));
            position += size;
        }
        Ok(batches)
    }

    /// Appends the batches a leader sent (a follower's fetch response), keeping their offsets,
    /// leader epochs, codecs and bytes exactly: a follower ends byte-identical to its leader.
    /// Every whole batch is checked first (see `validate_batches`); nothing is appended if any
    /// is bad, and a partial batch at the end is left out. The epoch cache learns each newer
    /// epoch at its first batch, producer state and the indexes follow each batch, and
    /// segments roll as the leader's do, each new one starting at the base offset of the batch
    /// that rolled it. Returns where the first and last whole batch landed; input with no
    /// whole batch appends nothing and returns `base_offset` = the log end, `last_offset` one
    /// below it.
    pub fn append_as_follower(
        &mut self,
        records: &mut BytesMut,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let batches = self.validate_batches(records, AppendOrigin::Replication)?;
        let end = self.log_end_offset();
        let (Some((_, first)), Some((_, last))) = (batches.first(), batches.last()) else {
            return Ok(AppendInfo {
                base_offset: end,
                last_offset: end - 1,
                duplicate: false,
            });
        };
        let info = AppendInfo {
            base_offset: first.base_offset,
            last_offset: last.last_offset(),
            duplicate: false,
        };
        for (position, header) in &batches {
            let batch = &records[*position..*position + header.total_bytes()];
            self.append_replicated(batch, header, now_ms)?;
        }
        Ok(info)
    }

    /// Appends one batch of the leader's as it is.
    fn append_replicated(&mut self, batch: &[u8], header: &BatchHeader, now_ms: i64) -> Result<()> {
        self.maybe_roll(
            batch.len(),
            header.base_offset,
            header.last_offset(),
            now_ms,
        )?;
        let epoch = header.partition_leader_epoch;
        if epoch >= 0 {
            // Entries at or past this batch's offset describe offsets the log never held (an
            // epoch this replica led without writing): the leader's batch overrules them.
            if self
                .epochs
                .latest_entry()
                .is_some_and(|e| e.start_offset >= header.base_offset)
            {
                self.epochs.truncate_from_end(header.base_offset)?;
            }
            self.epochs.assign(epoch, header.base_offset)?;
        }
        self.active_mut().append(batch, header)?;
        let marker = match header.is_control() {
            true => batch::parse_control_marker(batch)
                .inspect_err(|e| {
                    tracing::warn!(dir = %self.dir.display(), offset = header.base_offset,
                        error = %e, "a replicated transaction marker is unreadable")
                })
                .ok(),
            false => None,
        };
        self.remember(header, marker)?;
        self.records_since_flush += i64::from(header.record_count);
        Ok(())
    }

    /// Rolls to a new segment starting at `base_offset` when the active one is past
    /// `segment.bytes` with this batch, older than `segment.ms`, or could not index
    /// `last_offset` (index entries hold offsets relative to the segment's base in 31 bits,
    /// as Kafka's do). An empty active segment never rolls; it is replaced by one at
    /// `base_offset` when it could not index the batch (a follower's batch far past it, after
    /// a gap compaction left in the leader's log).
    fn maybe_roll(
        &mut self,
        batch_bytes: usize,
        base_offset: i64,
        last_offset: i64,
        now_ms: i64,
    ) -> Result<()> {
        let active = self.active();
        let (active_bytes, active_base) = (active.size(), active.base_offset);
        let too_big = active_bytes + batch_bytes as u64 > self.config.segment_bytes;
        let too_old = now_ms - active.created_at_ms >= self.config.segment_ms;
        let too_far = last_offset - active_base > i64::from(i32::MAX);
        if active_bytes > 0 && (too_big || too_old || too_far) {
            return self.roll_at(base_offset, now_ms);
        }
        if active_bytes == 0 && too_far {
            // An empty segment too far below the batch to index it: start one at the batch.
            let empty = self
                .segments
                .remove(&active_base)
                .expect("the active segment is in the map");
            empty.delete_files();
            let segment = Segment::create(&self.dir, base_offset, now_ms)?;
            // The next sync covers the directory that gained it.
            self.rolled_unsynced.push(segment.file());
            self.segments.insert(base_offset, segment);
        }
        Ok(())
    }

    /// Closes the active segment and starts a new one at the log end.
    pub fn roll(&mut self, now_ms: i64) -> Result<()> {
        self.roll_at(self.log_end_offset(), now_ms)
    }

    /// Closes the active segment and starts a new one at `base` (at or past the log end).
    fn roll_at(&mut self, base: i64, now_ms: i64) -> Result<()> {
        assert!(
            base >= self.log_end_offset(),
            "a new segment starts at or past the log end"
        );
        if self.active().base_offset == base {
            return Ok(());
        }
        self.active_mut().seal()?;
        self.rolled_unsynced.extend(self.active().files());
        // Producer state as of the new segment's base, as Kafka snapshots it at each roll:
        // opening the log replays from here, even once retention deleted older segments.
        self.take_producer_snapshot_at(base)?;
        let segment = Segment::create(&self.dir, base, now_ms)?;
        self.segments.insert(base, segment);
        Ok(())
    }

    /// Reads whole batches starting with the one that holds `offset`, up to about `max_bytes`
    /// (at least one batch). Returns empty bytes at the log end.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Bytes> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(self.out_of_range(offset));
        }
        // Compaction can empty a segment or leave a gap at its end: move on to the next one.
        for segment in self
            .segments
            .range(..=offset)
            .next_back()
            .into_iter()
            .map(|(_, s)| s)
            .chain(self.segments.range(offset + 1..).map(|(_, s)| s))
        {
            if let Some(position) = segment.position_of(offset)? {
                return Ok(segment.read(position, max_bytes)?);
            }
        }
        Ok(Bytes::new())
    }

    /// The first batch holding a record with timestamp `>= target`, if any.
    pub fn batch_at_time(&self, target: i64) -> Result<Option<Bytes>> {
        for segment in self.segments.values() {
            if segment.max_timestamp < target {
                continue;
            }
            if let Some(found) = segment.find_by_time(target)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// ListOffsets v0's answer ("offsets before"), as Kafka's `legacyFetchOffsetsBefore`: the
    /// candidates are each segment's base offset (at least the log start offset), stamped with
    /// the segment file's modification time, and the log end offset stamped `now_ms` when the
    /// active segment holds data. -1 starts from the last candidate, -2 from the first, any
    /// other timestamp from the last candidate stamped at or before it; from there up to
    /// `offsets_max` candidates are returned, newest first.
    pub fn legacy_offsets_before(
        &self,
        timestamp: i64,
        offsets_max: i32,
        now_ms: i64,
    ) -> Result<Vec<i64>> {
        let mut candidates = Vec::with_capacity(self.segments.len() + 1);
        for segment in self.segments.values() {
            let offset = segment.base_offset.max(self.log_start_offset);
            candidates.push((offset, segment.last_modified_ms()?));
        }
        if self.active().size() > 0 {
            candidates.push((self.log_end_offset(), now_ms));
        }
        let start = match timestamp {
            -1 => candidates.len(),
            -2 => candidates.len().min(1),
            _ => candidates
                .iter()
                .rposition(|(_, modified_ms)| *modified_ms <= timestamp)
                .map_or(0, |i| i + 1),
        };
        let count = start.min(offsets_max.max(0) as usize);
        Ok(candidates[start - count..start]
            .iter()
            .rev()
            .map(|(offset, _)| *offset)
            .collect())
    }

    /// Whether the flush policy asks for a sync now.
    pub fn flush_due(&self) -> bool {
        self.records_since_flush >= self.config.flush_messages
    }

    /// Everything a sync of the current log end must cover. The caller runs it outside the lock
    /// and, only if it succeeds, calls [`Log::flushed`] with its end.
    pub fn prepare_flush(&mut self) -> FlushJob {
        let mut files = std::mem::take(&mut self.rolled_unsynced);
        let dir = (!files.is_empty()).then(|| self.dir.clone());
        files.extend(self.active().appended_files());
        self.records_since_flush = 0;
        self.truncated_since_prepare = None;
        FlushJob {
            files,
            dir,
            end: self.log_end_offset(),
            #[cfg(test)]
            fail: self.fail_syncs,
        }
    }

    /// Records that everything below `offset` is on disk (the sync of the last
    /// [`Log::prepare_flush`], whose `end` it is, succeeded), and returns the offset below which
    /// everything is now known to be on disk. A truncation since the sync was prepared caps
    /// what it proves at the log end that truncation left: above it are records the sync may
    /// not have covered.
    pub fn flushed(&mut self, offset: i64) -> i64 {
        let proven = offset.min(self.truncated_since_prepare.unwrap_or(i64::MAX));
        self.recovery_point = self.recovery_point.max(proven);
        self.recovery_point
    }

    /// Deletes closed segments past `retention.ms` or beyond `retention.bytes`, only those
    /// wholly below offset `below` (a replica's high watermark: what is above it may still be
    /// truncated, and what the others hold is not known yet). Returns how many segments went.
    pub fn apply_retention(&mut self, now_ms: i64, below: i64) -> usize {
        if !self.config.cleanup_policy.deletes() {
            return 0;
        }
        let mut deleted = 0;
        let mut size = self.size_bytes() as i64;
        while self.segments.len() > 1 {
            let mut oldest_two = self.segments.values();
            let oldest = oldest_two.next().expect("more than one segment");
            let next_base = oldest_two
                .next()
                .expect("more than one segment")
                .base_offset;
            if next_base > below {
                break;
            }
            let expired = self.config.retention_ms >= 0
                && oldest.max_timestamp >= 0
                && now_ms - oldest.max_timestamp > self.config.retention_ms;
            let oversize = self.config.retention_bytes >= 0
                && size - oldest.size() as i64 >= self.config.retention_bytes;
            if !(expired || oversize) {
                break;
            }
            let base = oldest.base_offset;
            let segment = self.segments.remove(&base).expect("oldest exists");
            size -= segment.size() as i64;
            segment.delete_files();
            deleted += 1;
        }
        self.log_start_offset = self.log_start_offset.max(
            *self
                .segments
                .keys()
                .next()
                .expect("the active segment stays"),
        );
        if deleted > 0 {
            self.forget_epochs_below_start();
            self.delete_old_snapshots();
        }
        deleted
    }

    /// The directory holding this log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Swaps in a compacted copy of the closed segment at `base_offset` (already written and
    /// synced at `cleaned_path`), keeping its offsets.
    pub fn replace_segment(
        &mut self,
        base_offset: i64,
        cleaned_path: &Path,
        now_ms: i64,
    ) -> Result<()> {
        let Some(old) = self.segments.get(&base_offset) else {
            let _ = std::fs::remove_file(cleaned_path);
            return Ok(());
        };
        let next_offset = old.next_offset;
        let created = old.created_at_ms;
        // The old indexes go first: a crash after the rename must not leave them describing
        // positions in the new, shorter file.
        old.delete_index_files();
        sync_dir(&self.dir)?;
        std::fs::rename(cleaned_path, old.log_path())?;
        sync_dir(&self.dir)?;
        let (mut segment, _) = Segment::open(&self.dir, base_offset, true, now_ms, &mut |_| {})?;
        segment.next_offset = next_offset;
        segment.created_at_ms = created;
        segment.seal()?;
        // The rebuilt indexes are new files: sync them and their directory entries.
        segment.sync()?;
        sync_dir(&self.dir)?;
        self.segments.insert(base_offset, segment);
        Ok(())
    }

    /// Removes every segment and the directory (the topic was deleted).
    pub fn delete(self) {
        for segment in self.segments.values() {
            segment.delete_files();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Leader epochs and follower truncation (KIP-101, KIP-279).
impl Log {
    /// The leader epoch [`Log::append`] stamps: the one [`Log::become_leader`] set, else the
    /// latest in the cache, else 0 (a single node's log, whose leader never changes).
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
            .or_else(|| self.epochs.latest_epoch())
            .unwrap_or(0)
    }

    /// The newest epoch in the leader epoch cache.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// The leader epoch cache's entries, oldest first.
    pub fn epoch_entries(&self) -> &[EpochEntry] {
        self.epochs.entries()
    }

    /// Makes this log its partition's leader in `epoch`: the cache records that `epoch`
    /// starts at the log end (durably, as Kafka's `makeLeader` does), and later appends are
    /// stamped with it. An epoch below the cache's latest is refused with FENCED_LEADER_EPOCH:
    /// a newer leader has been elected since.
    pub fn become_leader(&mut self, epoch: i32) -> Result<()> {
        if epoch < 0 {
            return Err(BrokerError::InvalidRequest(format!(
                "leader epoch {epoch} is negative"
            )));
        }
        if let Some(latest) = self.epochs.latest_epoch().filter(|l| epoch < *l) {
            return Err(BrokerError::FencedLeaderEpoch {
                epoch,
                current: latest,
            });
        }
        self.epochs.assign(epoch, self.log_end_offset())?;
        self.leader_epoch = Some(epoch);
        Ok(())
    }

    /// OffsetsForLeaderEpoch's answer for `epoch`: the largest epoch at or below it in this
    /// log and the offset where that epoch ends (see [`LeaderEpochCache::end_offset_for`]);
    /// `(-1, -1)` when the log knows no such epoch.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// Removes every record at or after `offset` (a follower found it diverged from its
    /// leader there). Returns whether anything was removed.
    ///
    /// Truncation is at batch boundaries: a batch holding `offset` goes whole, so the log
    /// end becomes that batch's base offset, at or below `offset` (Kafka cuts the segment at
    /// the same place but then claims `offset` as its log end; ending at a batch boundary
    /// keeps the log end where reopening would find it, and the follower fetches the cut
    /// batch again whole). A log whose first segment starts past `offset` is emptied and
    /// restarted at `offset` ([`Log::truncate_fully_and_start_at`]). An `offset` at or past the
    /// log end removes nothing but epoch cache entries that start there (an epoch this replica
    /// led without writing), as Kafka's does.
    ///
    /// Crash safety: later segments are deleted newest first and the segment holding `offset`
    /// is cut and synced before the epoch cache and producer state forget anything, so a crash
    /// part way leaves a longer log that agrees with its cache (opening a log drops cache
    /// entries past its end). The log start offset comes down to the new log end if it was
    /// above it; the recovery point too.
    pub fn truncate_to(&mut self, offset: i64) -> Result<bool> {
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        let end = self.log_end_offset();
        if offset >= end {
            self.epochs.truncate_from_end(end)?;
            return Ok(false);
        }
        let first_base = *self.segments.keys().next().expect("a log has a segment");
        if first_base > offset {
            self.truncate_fully_and_start_at(offset, crate::now_ms())?;
            return Ok(true);
        }
        let later: Vec<i64> = self.segments.range(offset + 1..).map(|(b, _)| *b).collect();
        for base in later.iter().rev() {
            let segment = self.segments.remove(base).expect("listed above");
            segment.delete_files();
        }
        if !later.is_empty() {
            sync_dir(&self.dir)?;
        }
        self.active_mut().truncate_to(offset)?;
        let new_end = self.log_end_offset();
        self.forget_above(new_end);
        if new_end < self.log_start_offset {
            self.log_start_offset = new_end;
            self.store_log_start_offset()?;
        }
        self.epochs.truncate_from_end(new_end)?;
        self.load_producer_state()?;
        Ok(true)
    }

    /// Deletes every segment and starts the log over, empty, at `offset`, which becomes its
    /// log start offset (a follower too far behind its leader's log start, or Kafka's
    /// truncation below the first segment). The epoch cache and producer state are cleared.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        let bases: Vec<i64> = self.segments.keys().copied().collect();
        for base in bases.iter().rev() {
            let segment = self.segments.remove(base).expect("listed above");
            segment.delete_files();
        }
        let segment = Segment::create(&self.dir, offset, now_ms)?;
        self.segments.insert(offset, segment);
        sync_dir(&self.dir)?;
        self.log_start_offset = offset;
        self.store_log_start_offset()?;
        self.forget_above(offset);
        self.epochs.clear()?;
        // The snapshots describe batches that are gone (even one at `offset` describes this
        // replica's old batches below it, not the leader's): start over, as Kafka does.
        for old in snapshot_offsets(&self.dir)? {
            std::fs::remove_file(snapshot_path(&self.dir, old))?;
        }
        self.load_producer_state()?;
        Ok(())
    }

    /// After a truncation to `end`: what was flushed above it is gone, so the recovery point
    /// and a sync prepared earlier prove nothing above it.
    fn forget_above(&mut self, end: i64) {
        self.recovery_point = self.recovery_point.min(end);
        let lowest = self.truncated_since_prepare.map_or(end, |t| t.min(end));
        self.truncated_since_prepare = Some(lowest);
    }

    /// Writes the log start offset durably when DeleteRecords ever stored one: a truncation
    /// lowered it, and the stored value must not lift it again at the next open.
    fn store_log_start_offset(&self) -> Result<()> {
        let path = self.dir.join(LOG_START_OFFSET_FILE);
        if path.exists() {
            write_state_file(&path, self.log_start_offset.to_string().as_bytes())?;
        }
        Ok(())
    }
}

/// Producer state, transactions and snapshots (KIP-98).
impl Log {
    /// Loads producer state as the log now holds it: from the latest readable snapshot
    /// between the first segment's base and the log end (a snapshot past the end describes
    /// batches a torn tail or a truncation removed, and is deleted), then by replaying every
    /// batch from it; with no such snapshot, from the first segment. Transaction index entries
    /// at or past that point are rebuilt by the replay (those below it were synced before the
    /// snapshot was written). Returns how many batches were replayed.
    fn load_producer_state(&mut self) -> Result<usize> {
        let end = self.log_end_offset();
        let first_base = *self.segments.keys().next().expect("a log has a segment");
        let mut loaded = None;
        for offset in snapshot_offsets(&self.dir)?.into_iter().rev() {
            let path = snapshot_path(&self.dir, offset);
            if offset > end {
                std::fs::remove_file(&path)?;
                continue;
            }
            if offset < first_base {
                break;
            }
            match ProducerStateManager::read_snapshot(&path) {
                Some(state) => {
                    loaded = Some((offset, state));
                    break;
                }
                None => std::fs::remove_file(&path)?,
            }
        }
        let (from, state) = loaded.unwrap_or((first_base, ProducerStateManager::default()));
        self.producers = state;
        let mut replayed = 0;
        let Log {
            segments,
            producers,
            ..
        } = self;
        for segment in segments.values_mut() {
            segment.txn_index_mut().truncate_from(from)?;
            if segment.next_offset <= from {
                continue;
            }
            let mut aborted = Vec::new();
            segment.visit_batches(from, &mut |header, marker| {
                replayed += 1;
                if let Some(txn) = producers.apply(header, marker).filter(|t| t.aborted) {
                    aborted.push(aborted_entry(&txn, producers));
                }
            })?;
            for entry in aborted {
                segment.txn_index_mut().append(entry)?;
            }
        }
        self.delete_old_snapshots();
        Ok(replayed)
    }

    /// Writes the producer state durably as the snapshot at the log end (on a clean close,
    /// after the log was synced).
    pub fn take_producer_snapshot(&mut self) -> Result<()> {
        self.take_producer_snapshot_at(self.log_end_offset())
    }

    /// Writes the producer state as the snapshot at `offset`, which must be at or past every
    /// batch applied. Transaction index entries are synced first, so that every entry below a
    /// snapshot is on disk (opening the log rebuilds only those above the one it loads).
    fn take_producer_snapshot_at(&mut self, offset: i64) -> Result<()> {
        assert!(
            offset >= self.log_end_offset(),
            "a snapshot covers every batch applied"
        );
        for segment in self.segments.values_mut() {
            segment.txn_index_mut().sync_if_changed()?;
        }
        self.producers.write_snapshot(&self.dir, offset)?;
        Ok(())
    }

    /// Deletes snapshots below the first segment's base: the batches between them and the
    /// log are gone, so replaying from them would miss some. A failure is logged; the next
    /// open deletes them again.
    fn delete_old_snapshots(&self) {
        let first_base = *self.segments.keys().next().expect("a log has a segment");
        let offsets = snapshot_offsets(&self.dir).unwrap_or_default();
        for offset in offsets.into_iter().take_while(|o| *o < first_base) {
            if let Err(e) = std::fs::remove_file(snapshot_path(&self.dir, offset)) {
                tracing::warn!(dir = %self.dir.display(), offset, error = %e,
                    "could not delete an old producer snapshot");
            }
        }
    }

    /// The smallest first offset of the ongoing transactions, if any.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers.first_unstable_offset()
    }

    /// The last stable offset under `high_watermark`: read_committed consumers read below
    /// it. It is the high watermark, or the first offset of the oldest transaction that is
    /// ongoing or whose marker the high watermark has not passed yet.
    pub fn last_stable_offset(&mut self, high_watermark: i64) -> i64 {
        self.producers.last_stable_offset(high_watermark)
    }

    /// The high watermark moved to `high_watermark`: transactions whose markers are below it
    /// are stable.
    pub fn on_high_watermark(&mut self, high_watermark: i64) {
        self.producers.on_high_watermark(high_watermark);
    }

    /// The aborted transactions overlapping `[from, upper)`: those whose marker is at or
    /// after `from` and whose first offset is below `upper`, in marker order.
    pub fn aborted_transactions(&self, from: i64, upper: i64) -> Vec<AbortedTxn> {
        let first = self
            .segments
            .range(..=from)
            .next_back()
            .map_or(i64::MIN, |(base, _)| *base);
        self.segments
            .range(first..)
            .flat_map(|(_, segment)| segment.txn_index().entries())
            .filter(|txn| txn.last_offset >= from && txn.first_offset < upper)
            .copied()
            .collect()
    }

    /// Removes producers idle for `expiration_ms` (`producer.id.expiration.ms`) with no
    /// transaction ongoing. Returns how many went.
    pub fn remove_expired_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.remove_expired(now_ms, expiration_ms)
    }

    /// The ongoing transactions: (producer id, epoch, first offset, last timestamp).
    pub fn ongoing_transactions(&self) -> Vec<(i64, i16, i64, i64)> {
        self.producers.ongoing_transactions()
    }

    /// Every producer this partition knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerSummary> {
        self.producers.summaries()
    }
}

/// The transaction index entry of an aborted transaction, with the last stable offset once
/// its marker applied.
fn aborted_entry(txn: &CompletedTxn, producers: &ProducerStateManager) -> AbortedTxn {
    AbortedTxn {
        producer_id: txn.producer_id,
        first_offset: txn.first_offset,
        last_offset: txn.last_offset,
        last_stable_offset: producers
            .first_unstable_offset()
            .unwrap_or(txn.last_offset + 1),
    }
}

/// Notes where `header`'s leader epoch starts, if it is newer than the last one noted (how
/// recovery finds the epochs of a log's batches).
fn remember_epoch_start(starts: &mut Vec<EpochEntry>, header: &BatchHeader) {
    let epoch = header.partition_leader_epoch;
    if epoch >= 0 && starts.last().is_none_or(|last| epoch > last.epoch) {
        starts.push(EpochEntry {
            epoch,
            start_offset: header.base_offset,
        });
    }
}

/// CORRUPT_MESSAGE for a batch whose record count does not fit its offset range.
fn record_count_error(header: &BatchHeader) -> BrokerError {
    BrokerError::CorruptMessage(format!(
        "record count {} does not match last offset delta {}",
        header.record_count, header.last_offset_delta
    ))
}

/// The file keeping a log start offset that DeleteRecords moved.
const LOG_START_OFFSET_FILE: &str = "log-start-offset";

/// The log start offset stored in `dir`, if DeleteRecords ever moved it. An unreadable file
/// counts as absent: the start then falls back to the first segment, showing records that were
/// deleted rather than losing any that were not.
fn read_log_start_offset(dir: &Path) -> Option<i64> {
    let text = std::fs::read_to_string(dir.join(LOG_START_OFFSET_FILE)).ok()?;
    let offset = text.trim().parse::<i64>().ok();
    if offset.is_none() {
        tracing::warn!(dir = %dir.display(), "ignoring an unreadable log-start-offset file");
    }
    offset.filter(|o| *o >= 0)
}

/// Base offsets of the segments in `dir`, ascending.
fn segment_bases(dir: &Path) -> Result<Vec<i64>> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            }
        }
        if name.ends_with(".cleaned") {
            // A compaction that did not finish: the original segment is still whole.
            let _ = std::fs::remove_file(dir.join(name.as_ref()));
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn remove_segment_files(dir: &Path, base: i64) {
    for extension in ["log", "index", "timeindex", "txnindex"] {
        let _ = std::fs::remove_file(dir.join(segment::file_name(base, extension)));
    }
}

/// Syncs a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()?;
    #[cfg(test)]
    synced_dirs::record(dir);
    Ok(())
}

/// The directory holding `path` (`.` for a bare relative name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Directories synced so far, so tests can show a directory sync happens where a crash test
/// cannot (losing a directory entry takes a power cut, not a killed process).
#[cfg(test)]
pub(crate) mod synced_dirs {
    use std::path::{Path, PathBuf};

    static SYNCED: parking_lot::Mutex<Vec<PathBuf>> = parking_lot::Mutex::new(Vec::new());

    pub(crate) fn record(dir: &Path) {
        SYNCED.lock().push(dir.to_path_buf());
    }

    /// How many syncs of `dir` happened.
    pub(crate) fn count(dir: &Path) -> usize {
        SYNCED.lock().iter().filter(|d| d.as_path() == dir).count()
    }
}

/// Writes a small state file durably: temporary file, fsync, rename, fsync of the directory.
pub fn write_state_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::batch::BatchBuilder;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever happens to the tail of the active segment (cut anywhere, garbage appended),
        /// recovery yields a gapless prefix of what was written and the log accepts appends.
        #[test]
        fn recovery_after_any_tail_damage_yields_a_valid_prefix(
            batches in 1usize..12,
            cut in 0usize..4000,
            garbage in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            {
                let (mut log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("open");
                for i in 0..batches {
                    log.append(&mut batch(3, i as i64), 0).expect("append");
                }
            }
            let path = dir.path().join(segment::file_name(0, "log"));
            let len = std::fs::metadata(&path).expect("meta").len();
            let file = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
            file.set_len(len.saturating_sub(cut as u64)).expect("cut");
            use std::io::Write;
            (&file).write_all(&garbage).expect("garbage");
            drop(file);
            let (mut log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("recover");
            let end = log.log_end_offset();
            prop_assert!(end % 3 == 0 && end <= 3 * batches as i64);
            let mut offset = 0;
            while offset < end {
                let records = batch::decode_records(&log.read(offset, 1 << 20).expect("read")).expect("decode");
                for r in &records {
                    prop_assert_eq!(r.offset, offset);
                    offset += 1;
                }
            }
            prop_assert_eq!(log.append(&mut batch(1, 0), 0).expect("append after recovery").base_offset, end);
        }
    }

    fn batch(n: usize, ts: i64) -> BytesMut {
        let mut b = BatchBuilder::new(ts, 256);
        for i in 0..n {
            let key = format!("k{i}");
            b.push(ts, Some(key.as_bytes()), Some(&[7u8; 100]), &[]);
        }
        b.finish()
    }

    fn small_segments() -> TopicConfig {
        TopicConfig {
            segment_bytes: 2_000,
            ..TopicConfig::default()
        }
    }

    /// Writes 30 batches of two records into a new log in `dir` over small segments and
    /// closes it; its log end offset.
    fn thirty_batches_closed(dir: &Path) -> i64 {
        let (mut log, _) = Log::open(dir, small_segments(), 0, 0).expect("open");
        for i in 0..30 {
            log.append(&mut batch(2, i), i).expect("append");
        }
        log.log_end_offset()
    }

    /// Reopens the log in `dir` trusting it up to `end`: it must rebuild an index and read
    /// every offset below `end`.
    fn reopens_with_rebuilt_indexes_reading_every_offset(dir: &Path, end: i64) {
        let (log, report) = Log::open(dir, small_segments(), end, 0).expect("reopen");
        assert!(report.rebuilt_index);
        for offset in 0..end {
            let records =
                batch::decode_records(&log.read(offset, 1).expect("read")).expect("decode");
            assert!(
                records.iter().any(|r| r.offset == offset),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn offsets_are_assigned_in_order_and_read_back_across_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), small_segments(), 0, 0).expect("open");
        for i in 0..50 {
            let info = log.append(&mut batch(3, i), i).expect("append");
            assert_eq!(info.base_offset, i * 3);
        }
        assert!(
            log.segment_count() > 5,
            "small segment.bytes rolls segments"
        );
        for offset in [0, 1, 77, 149] {
            let bytes = log.read(offset, 1).expect("read");
            let records = batch::decode_records(&bytes).expect("decode");
            assert!(
                records.iter().any(|r| r.offset == offset),
                "offset {offset} is returned"
            );
        }
        assert!(log.read(150, 100).expect("read at end").is_empty());
        assert!(matches!(
            log.read(151, 100),
            Err(BrokerError::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn reopening_recovers_the_same_log_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (mut log, _) = Log::open(dir.path(), small_segments(), 0, 0).expect("open");
            for i in 0..20 {
                log.append(&mut batch(2, i), i).expect("append");
            }
        }
        let bases = segment_bases(dir.path()).expect("bases");
        let last = dir
            .path()
            .join(segment::file_name(*bases.last().expect("some"), "log"));
        let len = std::fs::metadata(&last).expect("meta").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .expect("open");
        file.set_len(len - 10).expect("tear the tail");
        let (log, report) = Log::open(dir.path(), small_segments(), 0, 0).expect("reopen");
        assert!(report.truncated_bytes > 0);
        assert_eq!(
            log.log_end_offset(),
            38,
            "the last batch of two records is gone"
        );
    }

    #[test]
    fn segments_before_the_recovery_point_are_trusted_and_still_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recovery_point = thirty_batches_closed(dir.path());
        let (log, report) =
            Log::open(dir.path(), small_segments(), recovery_point, 0).expect("reopen");
        assert!(
            !report.rebuilt_index,
            "sound indexes are loaded, not rebuilt"
        );
        assert_eq!(log.log_end_offset(), 60);
        for offset in [0, 17, 42, 59] {
            let records =
                batch::decode_records(&log.read(offset, 1).expect("read")).expect("decode");
            assert!(records.iter().any(|r| r.offset == offset));
        }
        let found = log.batch_at_time(25).expect("by time").expect("a batch");
        assert_eq!(batch::validate(&found).expect("valid").max_timestamp, 25);
    }

    #[test]
    fn damaged_or_missing_indexes_are_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let end = thirty_batches_closed(dir.path());
        let bases = segment_bases(dir.path()).expect("bases");
        std::fs::remove_file(dir.path().join(segment::file_name(bases[0], "index"))).expect("rm");
        std::fs::write(
            dir.path().join(segment::file_name(bases[1], "index")),
            [0xff; 13],
        )
        .expect("garbage index");
        reopens_with_rebuilt_indexes_reading_every_offset(dir.path(), end);
    }

    /// A new partition directory is synced into its parent, and the sync after a roll covers
    /// the rolled segment's indexes and the directory that gained the new segment. Losing a
    /// directory entry or an unsynced index takes a power cut, which a test in one process
    /// cannot cause, so this checks the syncs are made.
    #[test]
    fn new_directories_and_rolled_segments_are_synced_whole() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("t-0");
        let (mut log, _) = Log::open(&dir, small_segments(), 0, 0).expect("open");
        assert_eq!(
            synced_dirs::count(parent.path()),
            1,
            "the new directory is in its parent"
        );
        log.append(&mut batch(3, 0), 0).expect("append");
        log.roll(0).expect("roll");
        let job = log.prepare_flush();
        assert!(job.has_rolled());
        assert_eq!(
            job.files.len(),
            4,
            "rolled .log, .index and .timeindex, active .log"
        );
        let dir_syncs = synced_dirs::count(&dir);
        job.run().expect("sync");
        assert_eq!(synced_dirs::count(&dir), dir_syncs + 1);
        assert!(
            !log.prepare_flush().has_rolled(),
            "the next sync has no roll to cover"
        );
    }

    /// An index that is sorted and in bounds but does not describe its `.log` (as one left
    /// from before a compaction swap would) is rebuilt rather than trusted. Method: give a
    /// trusted segment an index whose one entry points mid-batch, reopen, read everything.
    #[test]
    fn an_index_pointing_mid_batch_is_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let end = thirty_batches_closed(dir.path());
        let mut entry = Vec::new();
        entry.extend_from_slice(&2u32.to_be_bytes());
        entry.extend_from_slice(&10u32.to_be_bytes());
        std::fs::write(dir.path().join(segment::file_name(0, "index")), entry).expect("index");
        reopens_with_rebuilt_indexes_reading_every_offset(dir.path(), end);
    }

    #[test]
    fn segment_ms_rolls_an_old_active_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = TopicConfig {
            segment_ms: 1_000,
            ..TopicConfig::default()
        };
        let (mut log, _) = Log::open(dir.path(), config, 0, 0).expect("open");
        log.append(&mut batch(1, 0), 0).expect("append");
        log.append(&mut batch(1, 0), 500).expect("append");
        assert_eq!(log.segment_count(), 1);
        log.append(&mut batch(1, 0), 1_000).expect("append");
        assert_eq!(
            log.segment_count(),
            2,
            "the segment is 1 s old: a new one starts"
        );
    }

    #[test]
    fn idempotent_retries_are_answered_with_the_first_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("open");
        let idempotent = |seq: i32| {
            let mut b = batch(2, 0);
            b[43..51].copy_from_slice(&7i64.to_be_bytes());
            b[51..53].copy_from_slice(&0i16.to_be_bytes());
            b[53..57].copy_from_slice(&seq.to_be_bytes());
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            b
        };
        let first = log.append(&mut idempotent(0), 0).expect("first");
        let retry = log.append(&mut idempotent(0), 0).expect("retry");
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, first.base_offset);
        assert!(matches!(
            log.append(&mut idempotent(5), 0),
            Err(BrokerError::OutOfOrderSequence { expected: 2, .. })
        ));
        assert_eq!(
            log.append(&mut idempotent(2), 0).expect("next").base_offset,
            2
        );
    }

    #[test]
    fn topic_compression_type_recompresses_producer_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = TopicConfig {
            compression_type: "zstd".into(),
            ..TopicConfig::default()
        };
        let (mut log, _) = Log::open(dir.path(), config, 0, 0).expect("open");
        log.append(&mut batch(10, 5), 5).expect("append");
        let stored = log.read(0, 1 << 20).expect("read");
        let header = batch::validate(&stored).expect("valid");
        assert_eq!(
            header.compression(),
            kafka_protocol::records::Compression::Zstd
        );
        assert_eq!(batch::decode_records(&stored).expect("decode").len(), 10);
    }

    #[test]
    fn retention_by_bytes_deletes_oldest_closed_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = TopicConfig {
            retention_bytes: 3_000,
            ..small_segments()
        };
        let (mut log, _) = Log::open(dir.path(), config, 0, 0).expect("open");
        for i in 0..40 {
            log.append(&mut batch(3, i), i).expect("append");
        }
        let deleted = log.apply_retention(1_000, i64::MAX);
        assert!(deleted > 0);
        assert!(log.size_bytes() <= 3_000 + 2_000);
        assert!(log.log_start_offset() > 0);
        assert!(matches!(
            log.read(0, 100),
            Err(BrokerError::OffsetOutOfRange { .. })
        ));
    }

    /// Retention deletes only segments wholly below the bound it is given (a replica's high
    /// watermark): the segment holding the bound and everything after it stay.
    #[test]
    fn retention_stays_below_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = TopicConfig {
            retention_bytes: 0,
            ..small_segments()
        };
        let (mut log, _) = Log::open(dir.path(), config, 0, 0).expect("open");
        for i in 0..40 {
            log.append(&mut batch(3, i), i).expect("append");
        }
        let bases: Vec<i64> = log.segments.keys().copied().collect();
        assert!(bases.len() >= 4, "{bases:?}");
        assert_eq!(
            log.apply_retention(1_000, bases[1] - 1),
            0,
            "none wholly below"
        );
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.apply_retention(1_000, bases[2]), 2);
        assert_eq!(log.log_start_offset(), bases[2]);
        assert!(log.apply_retention(1_000, i64::MAX) > 0);
        assert_eq!(log.segments.len(), 1, "all but the active segment");
    }

    /// DeleteRecords moves the start inside a segment, deletes the segments wholly below it,
    /// refuses reads below it, and the start survives reopening. Method: 20 batches of three
    /// records over small segments, delete before offset 31, reopen.
    #[test]
    fn deleting_records_moves_the_start_durably_and_drops_whole_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), small_segments(), 0, 0).expect("open");
        for i in 0..20 {
            log.append(&mut batch(3, i), i).expect("append");
        }
        let segments = log.segment_count();
        assert_eq!(log.delete_records_before(31).expect("delete"), 31);
        assert!(log.segment_count() < segments, "whole segments below 31 go");
        assert!(*log.segments.keys().next().expect("a segment") <= 31);
        assert!(matches!(
            log.read(30, 100),
            Err(BrokerError::OffsetOutOfRange { .. })
        ));
        assert!(log.read(31, 100).is_ok());
        assert_eq!(
            log.delete_records_before(5).expect("lower"),
            31,
            "never moves back"
        );
        assert!(log.delete_records_before(61).is_err(), "past the log end");
        drop(log);

        let (log, _) = Log::open(dir.path(), small_segments(), 0, 0).expect("reopen");
        assert_eq!(log.log_start_offset(), 31);
        assert!(log.read(30, 100).is_err());
        assert_eq!(log.log_end_offset(), 60);
    }

    /// Producer `producer_id`'s batch of `n` records at `epoch` from `sequence`.
    fn from_producer(
        producer_id: i64,
        epoch: i16,
        sequence: i32,
        n: usize,
        transactional: bool,
    ) -> BytesMut {
        batch::with_producer(batch(n, 0), producer_id, epoch, sequence, transactional)
    }

    /// Goal: a producer's sequences survive a restart after retention deleted the segment
    /// holding its only batch, so a retry is still answered as a duplicate. Method: producer
    /// 7 writes once, other batches roll segments (each roll snapshots producer state),
    /// retention deletes the first segments, the log is reopened without any clean-close
    /// snapshot, then the batch is retried. Without snapshots the producer would be unknown
    /// and the retry appended again.
    #[test]
    fn sequences_survive_a_restart_after_retention_deleted_their_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = TopicConfig {
            retention_bytes: 3_000,
            ..small_segments()
        };
        let (mut log, _) = Log::open(dir.path(), config.clone(), 0, 0).expect("open");
        let first = log
            .append(&mut from_producer(7, 0, 0, 2, false), 0)
            .expect("first");
        for i in 0..30 {
            log.append(&mut batch(3, i), i).expect("append");
        }
        assert!(log.apply_retention(1_000, i64::MAX) > 0);
        assert!(
            log.log_start_offset() > first.last_offset,
            "its segment is gone"
        );
        let end = log.log_end_offset();
        drop(log);

        let (mut log, _) = Log::open(dir.path(), config, 0, 0).expect("reopen");
        assert_eq!(log.log_end_offset(), end);
        let retry = log
            .append(&mut from_producer(7, 0, 0, 2, false), 0)
            .expect("retry");
        assert!(retry.duplicate, "{retry:?}");
        assert_eq!(retry.base_offset, first.base_offset);
        assert!(matches!(
            log.append(&mut from_producer(7, 0, 5, 1, false), 0),
            Err(BrokerError::OutOfOrderSequence { expected: 2, .. })
        ));
        let snapshots = producer_state::snapshot_offsets(dir.path()).expect("list");
        let first_base = *log.segments.keys().next().expect("a segment");
        assert!(
            snapshots.iter().all(|o| *o >= first_base),
            "snapshots below the first segment are deleted: {snapshots:?}"
        );
    }

    /// Goal: a clean close snapshots the state at the log end and the next open replays
    /// nothing; a torn or corrupt newest snapshot is ignored and the state is rebuilt from an
    /// older one plus the log. Method: two producers, a roll between them, a clean-close
    /// snapshot; reopen; then damage the newest snapshot (flip, then cut) and reopen again.
    #[test]
    fn a_damaged_snapshot_is_ignored_and_the_state_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("open");
        log.append(&mut from_producer(1, 0, 0, 2, false), 0)
            .expect("one");
        log.roll(0).expect("roll");
        log.append(&mut from_producer(2, 3, 0, 2, false), 0)
            .expect("two");
        log.take_producer_snapshot().expect("clean close");
        let producers = log.producers();
        assert_eq!(producers.len(), 2);
        let end = log.log_end_offset();
        drop(log);
        let newest = producer_state::snapshot_path(dir.path(), end);
        for damage in ["flip", "cut"] {
            let (log, _) = Log::open(dir.path(), TopicConfig::default(), end, 0).expect("open");
            assert_eq!(log.producers(), producers, "before {damage}");
            drop(log);
            let mut bytes = std::fs::read(&newest).expect("snapshot at the end");
            match damage {
                "flip" => bytes[12] ^= 1,
                _ => bytes.truncate(bytes.len() - 7),
            }
            std::fs::write(&newest, &bytes).expect("damage");
            let (mut log, _) =
                Log::open(dir.path(), TopicConfig::default(), end, 0).expect("reopen");
            assert_eq!(log.producers(), producers, "after {damage}");
            let retry = log
                .append(&mut from_producer(2, 3, 0, 2, false), 0)
                .expect("retry");
            assert!(retry.duplicate, "after {damage}");
        }
    }

    /// Goal: truncation deletes the snapshots above the cut and reloads producer state from
    /// the one below, so the producer's next expected sequence is the one the kept log says.
    /// Method: producer 7 writes sequences 0-1, the log rolls (snapshot), it writes 2-3 and
    /// 4-5 and the log rolls again; truncating to the second batch's offset leaves 0-1.
    #[test]
    fn truncation_reloads_producer_state_from_the_snapshot_below_the_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("open");
        log.append(&mut from_producer(7, 0, 0, 2, false), 0)
            .expect("0-1");
        log.roll(0).expect("roll");
        let second = log
            .append(&mut from_producer(7, 0, 2, 2, false), 0)
            .expect("2-3");
        log.append(&mut from_producer(7, 0, 4, 2, false), 0)
            .expect("4-5");
        log.roll(0).expect("roll");
        assert_eq!(
            producer_state::snapshot_offsets(dir.path()).expect("list"),
            vec![2, 6]
        );
        assert!(log.truncate_to(second.base_offset).expect("truncate"));
        assert_eq!(
            producer_state::snapshot_offsets(dir.path()).expect("list"),
            vec![2]
        );
        assert_eq!(log.producers()[0].last_sequence, 1);
        assert!(matches!(
            log.append(&mut from_producer(7, 0, 4, 2, false), 0),
            Err(BrokerError::OutOfOrderSequence { expected: 2, .. })
        ));
        let again = log
            .append(&mut from_producer(7, 0, 2, 2, false), 0)
            .expect("2-3 again");
        assert!(!again.duplicate);
    }

    /// Goal: transactional batches and markers move the last stable offset, list aborted
    /// transactions, and both survive reopening from the `.txnindex` files (clean close) and
    /// from a replay (no snapshot). Method: offsets 0-1 plain, 2-3 producer 1's transaction,
    /// 4-5 producer 2's, abort 1 at 6, commit 2 at 7.
    #[test]
    fn markers_move_the_last_stable_offset_and_aborts_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("open");
        log.append(&mut batch(2, 0), 0).expect("plain");
        log.append(&mut from_producer(1, 0, 0, 2, true), 0)
            .expect("txn 1");
        log.append(&mut from_producer(2, 0, 0, 2, true), 0)
            .expect("txn 2");
        assert_eq!(log.first_unstable_offset(), Some(2));
        assert_eq!(log.last_stable_offset(6), 2);
        let abort = log.append_marker(1, 0, false, 0, 0).expect("abort");
        assert_eq!(abort.base_offset, 6);
        assert_eq!(log.last_stable_offset(8), 4, "producer 2 is still open");
        log.append_marker(2, 0, true, 0, 0).expect("commit");
        assert_eq!(log.first_unstable_offset(), None);
        assert_eq!(
            log.last_stable_offset(7),
            4,
            "the commit marker is not below the high watermark yet"
        );
        assert_eq!(log.last_stable_offset(8), 8);
        let expected = |log: &Log| {
            let aborted = log.aborted_transactions(0, 8);
            assert_eq!(aborted.len(), 1, "{aborted:?}");
            assert_eq!(
                (
                    aborted[0].producer_id,
                    aborted[0].first_offset,
                    aborted[0].last_offset
                ),
                (1, 2, 6)
            );
            assert!(log.aborted_transactions(7, 8).is_empty(), "ended before 7");
            assert!(log.aborted_transactions(0, 2).is_empty(), "starts at 2");
            assert!(log.ongoing_transactions().is_empty());
        };
        expected(&log);
        log.take_producer_snapshot().expect("clean close");
        drop(log);
        assert!(dir.path().join(segment::file_name(0, "txnindex")).exists());
        let (log, _) = Log::open(dir.path(), TopicConfig::default(), 8, 0).expect("reopen");
        expected(&log);
        drop(log);
        for offset in producer_state::snapshot_offsets(dir.path()).expect("list") {
            std::fs::remove_file(producer_state::snapshot_path(dir.path(), offset)).expect("rm");
        }
        std::fs::remove_file(dir.path().join(segment::file_name(0, "txnindex"))).expect("rm");
        let (mut log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("replay");
        expected(&log);
        assert_eq!(log.last_stable_offset(8), 8);
    }

    /// Goal: the producer checks of a transactional producer, as Kafka makes them. Method:
    /// producer 3 opens a transaction; a plain batch from it is INVALID_TXN_STATE; a marker
    /// at a newer epoch (the coordinator aborting after fencing) raises its epoch; then the
    /// old epoch is refused for batches and markers, the new epoch must start at sequence 0,
    /// and an older coordinator epoch is fenced.
    #[test]
    fn transactional_producers_are_checked_as_kafka_checks_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut log, _) = Log::open(dir.path(), TopicConfig::default(), 0, 0).expect("open");
        log.append(&mut from_producer(3, 0, 0, 2, true), 0)
            .expect("txn");
        let refused = log.append(&mut from_producer(3, 0, 2, 1, false), 0);
        assert!(
            matches!(refused, Err(BrokerError::InvalidTxnState { .. })),
            "{refused:?}"
        );
        assert_eq!(refused.expect_err("refused").code(), 48);
        log.append_marker(3, 1, false, 5, 0)
            .expect("abort at a newer epoch");
        assert_eq!(log.producers()[0].producer_epoch, 1);
        assert_eq!(log.producers()[0].coordinator_epoch, 5);
        let old = log.append(&mut from_producer(3, 0, 2, 1, true), 0);
        assert!(
            matches!(old, Err(BrokerError::InvalidProducerEpoch { .. })),
            "{old:?}"
        );
        assert_eq!(old.expect_err("old").code(), 47);
        assert!(matches!(
            log.append_marker(3, 0, true, 5, 0),
            Err(BrokerError::InvalidProducerEpoch { .. })
        ));
        assert!(matches!(
            log.append(&mut from_producer(3, 2, 4, 1, true), 0),
            Err(BrokerError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert!(matches!(
            log.append_marker(3, 1, true, 4, 0),
            Err(BrokerError::TransactionCoordinatorFenced { .. })
        ));
        log.append(&mut from_producer(3, 1, 0, 1, true), 0)
            .expect("the new epoch from sequence 0");
    }

    /// Goal: a follower fed its leader's bytes ends with the leader's producer state, open
    /// transactions and aborted list (one code path applies batches and markers). Method: a
    /// leader log with plain, idempotent and transactional batches and both markers, read
    /// whole and appended as follower; then the follower is reopened from scratch.
    #[test]
    fn a_follower_ends_with_its_leaders_transaction_state() {
        let leader_dir = tempfile::tempdir().expect("tempdir");
        let follower_dir = tempfile::tempdir().expect("tempdir");
        let (mut leader, _) = Log::open(leader_dir.path(), small_segments(), 0, 0).expect("leader");
        leader.append(&mut batch(2, 0), 0).expect("plain");
        leader
            .append(&mut from_producer(4, 0, 0, 2, false), 0)
            .expect("idempotent");
        leader
            .append(&mut from_producer(5, 0, 0, 2, true), 0)
            .expect("txn 5");
        leader
            .append(&mut from_producer(6, 2, 0, 2, true), 0)
            .expect("txn 6");
        leader.append_marker(5, 0, false, 1, 0).expect("abort 5");
        leader
            .append(&mut from_producer(8, 0, 0, 2, true), 0)
            .expect("txn 8");
        leader.append_marker(8, 0, true, 1, 0).expect("commit 8");
        let end = leader.log_end_offset();
        let (mut follower, _) =
            Log::open(follower_dir.path(), small_segments(), 0, 0).expect("follower");
        let mut offset = 0;
        while offset < end {
            let mut bytes = BytesMut::from(&leader.read(offset, 1 << 20).expect("read")[..]);
            offset = follower
                .append_as_follower(&mut bytes, 0)
                .expect("append")
                .last_offset
                + 1;
        }
        let same = |follower: &mut Log, leader: &mut Log| {
            assert_eq!(follower.producers(), leader.producers());
            assert_eq!(
                follower.ongoing_transactions(),
                leader.ongoing_transactions()
            );
            assert_eq!(follower.ongoing_transactions().len(), 1, "producer 6");
            assert_eq!(
                follower.aborted_transactions(0, end),
                leader.aborted_transactions(0, end)
            );
            assert_eq!(follower.aborted_transactions(0, end).len(), 1);
            assert_eq!(
                follower.last_stable_offset(end),
                leader.last_stable_offset(end)
            );
        };
        same(&mut follower, &mut leader);
        drop(follower);
        let (mut follower, _) =
            Log::open(follower_dir.path(), small_segments(), 0, 0).expect("reopen");
        same(&mut follower, &mut leader);
    }
}
