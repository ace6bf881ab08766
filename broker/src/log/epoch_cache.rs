//! Which leader epoch wrote which offsets: Kafka's `LeaderEpochFileCache` (KIP-101, KIP-279).
//!
//! Every leader change bumps the partition's leader epoch, and the leader stamps it into each
//! batch it appends. The cache keeps, per epoch, the first offset written in it, ordered by both
//! epoch and offset. A follower asks the leader where its own latest epoch ends
//! ([`LeaderEpochCache::end_offset_for`], OffsetsForLeaderEpoch on the wire) and truncates
//! there, rather than to its high watermark, which lost acknowledged records or left replicas
//! diverged after two quick leader changes.
//!
//! The entries are kept in `<partition dir>/leader-epoch-checkpoint` in Kafka's text format, so
//! Kafka's tools read it:
//! ```text
//! 0                   format version
//! 2                   number of entries
//! 0 0                 epoch, start offset
//! 3 1500
//! ```
//! Every change is written durably before the caller goes on (Kafka flushes truncations in the
//! background; here they are rare enough to wait for). The file is a hint like the indexes: the
//! log opens it, then cuts it to the log's bounds, and rebuilds it from the batch headers when
//! it is missing or unreadable (see `Log::open`).

use std::path::{Path, PathBuf};

use super::write_state_file;

/// The name of the checkpoint file in a partition's directory, as Kafka names it.
pub const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
/// No epoch: what [`LeaderEpochCache::end_offset_for`] answers when it knows none that fits.
pub const UNDEFINED_EPOCH: i32 = -1;
/// No offset: the end offset paired with [`UNDEFINED_EPOCH`].
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;
/// The checkpoint format version Kafka writes and reads.
const CHECKPOINT_VERSION: u32 = 0;

/// The first offset a leader epoch wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// A partition's leader epochs and the offsets they start at, ascending in both.
#[derive(Debug)]
pub struct LeaderEpochCache {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// An empty cache for the partition in `dir`; nothing is written until it changes.
    pub fn empty(dir: &Path) -> LeaderEpochCache {
        LeaderEpochCache {
            path: dir.join(LEADER_EPOCH_CHECKPOINT_FILE),
            entries: Vec::new(),
        }
    }

    /// The cache stored in `dir`, or `None` when its file is missing or unreadable (the log
    /// then rebuilds it from its batches). Entries are loaded through [`Self::assign`]'s rules,
    /// as Kafka loads them, so a file edited out of order still yields an ordered cache.
    pub fn open(dir: &Path) -> Option<LeaderEpochCache> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        let text = std::fs::read_to_string(&path).ok()?;
        let Some(entries) = parse_checkpoint(&text) else {
            tracing::warn!(path = %path.display(), "ignoring an unreadable leader epoch checkpoint");
            return None;
        };
        let mut cache = LeaderEpochCache {
            path,
            entries: Vec::new(),
        };
        for entry in entries {
            cache.assign_in_memory(entry.epoch, entry.start_offset);
        }
        Some(cache)
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry, if any.
    pub fn latest_entry(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch that wrote (or, as leader, may write) to the log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`, durably, and returns whether the cache
    /// changed. As Kafka's cache does, an epoch newer than the latest is added, after removing
    /// the newest entries starting at or after `start_offset` (a new leader that wrote nothing
    /// replaces the one before it at the same offset); the latest epoch at a lower start offset
    /// replaces its entry the same way; the latest epoch at the same or a higher offset changes
    /// nothing. An epoch older than the latest is ignored: Kafka's logs never assign one (they
    /// assign only epochs above the latest), while its cache would drop every newer entry.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> std::io::Result<bool> {
        let changed = self.assign_in_memory(epoch, start_offset);
        if changed {
            self.write()?;
        }
        Ok(changed)
    }

    /// [`Self::assign`] of several entries in order, with one write at the end if any changed.
    pub fn assign_all(&mut self, entries: &[EpochEntry]) -> std::io::Result<bool> {
        let mut changed = false;
        for entry in entries {
            changed |= self.assign_in_memory(entry.epoch, entry.start_offset);
        }
        if changed {
            self.write()?;
        }
        Ok(changed)
    }

    /// Applies [`Self::assign`]'s rules without writing.
    fn assign_in_memory(&mut self, epoch: i32, start_offset: i64) -> bool {
        assert!(epoch >= 0, "a leader epoch is never negative: {epoch}");
        assert!(
            start_offset >= 0,
            "an offset is never negative: {start_offset}"
        );
        if let Some(latest) = self.latest_entry() {
            let older = epoch < latest.epoch;
            if older || (epoch == latest.epoch && start_offset >= latest.start_offset) {
                return false;
            }
        }
        // Kafka's maybeTruncateNonMonotonicEntries: what the new entry contradicts goes.
        while self
            .latest_entry()
            .is_some_and(|e| e.epoch >= epoch || e.start_offset >= start_offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Kafka's `endOffsetFor`: the largest epoch at or below `requested` and where it ends,
    /// which is the start offset of the next epoch, or `log_end_offset` when `requested` is
    /// the latest epoch. A `requested` below the first epoch answers `requested` with the
    /// first epoch's start offset (that history was deleted; the follower may keep nothing
    /// past the log start). [`UNDEFINED_EPOCH`] and [`UNDEFINED_EPOCH_OFFSET`] answer an
    /// undefined `requested`, an empty cache, and an epoch above the latest.
    pub fn end_offset_for(&self, requested: i32, log_end_offset: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest_epoch() == Some(requested) {
            return (requested, log_end_offset);
        }
        // The first entry of a later epoch: where the requested one ended.
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        let Some(next) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            Some(floor) => (floor.epoch, next.start_offset),
            None => (requested, next.start_offset),
        }
    }

    /// Removes the entries starting at or after `end_offset` (the log was truncated there),
    /// durably when any went. A negative offset changes nothing.
    pub fn truncate_from_end(&mut self, end_offset: i64) -> std::io::Result<()> {
        if end_offset < 0 {
            return Ok(());
        }
        let kept = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        if kept == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(kept);
        self.write()
    }

    /// Forgets history below `start_offset` (retention or DeleteRecords moved the log start):
    /// the entries starting at or below it go, except the newest of them, which now starts at
    /// `start_offset`. Durable when anything changed. A negative offset changes nothing.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> std::io::Result<()> {
        let covered = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        if start_offset < 0 || covered == 0 {
            return Ok(());
        }
        let epoch = self.entries[covered - 1].epoch;
        let unchanged = covered == 1 && self.entries[0].start_offset == start_offset;
        self.entries.drain(..covered - 1);
        self.entries[0] = EpochEntry {
            epoch,
            start_offset,
        };
        if unchanged {
            return Ok(());
        }
        self.write()
    }

    /// Removes every entry, durably (the log was emptied and restarted elsewhere).
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.entries.clear();
        self.write()
    }

    /// Writes the entries to the checkpoint file: temporary file, fsync, rename, fsync.
    fn write(&self) -> std::io::Result<()> {
        write_state_file(&self.path, format_checkpoint(&self.entries).as_bytes())
    }
}

/// The checkpoint file's text for `entries`.
fn format_checkpoint(entries: &[EpochEntry]) -> String {
    let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", entries.len());
    for entry in entries {
        text.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
    }
    text
}

/// Parses a checkpoint file as Kafka's `CheckpointFile` reads one: the version, the entry
/// count, then exactly that many `epoch start_offset` lines (fields split on whitespace).
/// `None` when any of it is wrong, or an epoch or offset is negative.
fn parse_checkpoint(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()?.trim().parse::<u32>().ok()? != CHECKPOINT_VERSION {
        return None;
    }
    let count = lines.next()?.trim().parse::<usize>().ok()?;
    let mut entries = Vec::with_capacity(count.min(1024));
    for line in lines.by_ref().take(count) {
        let mut fields = line.split_whitespace();
        let epoch = fields.next()?.parse::<i32>().ok()?;
        let start_offset = fields.next()?.parse::<i64>().ok()?;
        if fields.next().is_some() || epoch < 0 || start_offset < 0 {
            return None;
        }
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    if entries.len() != count || lines.any(|l| !l.trim().is_empty()) {
        return None;
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(entries: &[(i32, i64)]) -> (tempfile::TempDir, LeaderEpochCache) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cache = LeaderEpochCache::empty(dir.path());
        for (epoch, start) in entries {
            cache.assign(*epoch, *start).expect("assign");
        }
        (dir, cache)
    }

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);

    /// The file is Kafka's text format, byte for byte, and reads back to the same entries;
    /// every change (assign, both truncations) is on disk when the call returns.
    #[test]
    fn checkpoint_file_is_kafkas_format_and_round_trips() {
        let (dir, mut cache) = cache_with(&[(0, 0), (3, 1500), (4, 1700)]);
        let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
        let text = std::fs::read_to_string(&path).expect("file");
        assert_eq!(text, "0\n3\n0 0\n3 1500\n4 1700\n");
        let reopened = LeaderEpochCache::open(dir.path()).expect("readable");
        assert_eq!(pairs(&reopened), [(0, 0), (3, 1500), (4, 1700)]);

        cache.truncate_from_end(1700).expect("end");
        cache.truncate_from_start(200).expect("start");
        let text = std::fs::read_to_string(&path).expect("file");
        assert_eq!(text, "0\n2\n0 200\n3 1500\n");
        cache.clear().expect("clear");
        let reopened = LeaderEpochCache::open(dir.path()).expect("readable");
        assert!(reopened.entries().is_empty());
    }

    /// A file Kafka would refuse is not trusted: the log rebuilds the cache instead.
    #[test]
    fn unreadable_or_missing_checkpoints_are_not_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(LeaderEpochCache::open(dir.path()).is_none(), "missing");
        let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
        for bad in [
            "",
            "1\n1\n0 0\n",
            "0\n2\n0 0\n",
            "0\n1\n0 0\n1 5\n",
            "0\n1\n0\n",
            "0\n1\n0 0 0\n",
            "0\n1\n-3 0\n",
            "0\n1\nx 0\n",
        ] {
            std::fs::write(&path, bad).expect("write");
            assert!(LeaderEpochCache::open(dir.path()).is_none(), "{bad:?}");
        }
        std::fs::write(&path, "0\n2\n1  10\n2\t20\n").expect("write");
        let cache = LeaderEpochCache::open(dir.path()).expect("whitespace splits fields");
        assert_eq!(pairs(&cache), [(1, 10), (2, 20)]);
    }

    /// Kafka's assign tests: an epoch's first offset sticks, a newer epoch at the same or a
    /// lower offset replaces what it contradicts, older epochs change nothing.
    #[test]
    fn assign_keeps_epochs_and_offsets_increasing_as_kafka_does() {
        // shouldNotOverwriteLogEndOffsetForALeaderEpochOnceItHasBeenAssigned
        let (_d, cache) = cache_with(&[(2, 9), (2, 10)]);
        assert_eq!(pairs(&cache), [(2, 9)]);
        // shouldEnforceMonotonicallyIncreasingStartOffsets
        let (_d, cache) = cache_with(&[(2, 9), (3, 9)]);
        assert_eq!(pairs(&cache), [(3, 9)]);
        // shouldEnforceOffsetsIncreaseMonotonically
        let (_d, cache) = cache_with(&[(2, 6), (3, 5)]);
        assert_eq!(pairs(&cache), [(3, 5)]);
        // shouldTruncateIfMatchingEpochButEarlierStartingOffset
        let (_d, cache) = cache_with(&[(5, 11), (6, 12), (7, 13), (7, 12)]);
        assert_eq!(pairs(&cache), [(5, 11), (7, 12)]);
        assert_eq!(cache.end_offset_for(5, 0), (5, 12));
        assert_eq!(cache.end_offset_for(6, 0), (5, 12));
        // Older epochs are ignored (Kafka's log never assigns them).
        let (_d, mut cache) = cache_with(&[(1, 5), (2, 6)]);
        assert!(!cache.assign(1, 7).expect("assign"));
        assert_eq!(pairs(&cache), [(1, 5), (2, 6)]);
        // shouldIncreaseAndTrackEpochsAsLeadersChangeManyTimes
        let (_d, mut cache) = cache_with(&[(0, 0), (1, 0)]);
        assert_eq!(pairs(&cache), [(1, 0)]);
        assert!(cache.assign(2, 5).expect("assign"));
        assert!(!cache.assign(2, 5).expect("same again"));
        assert_eq!(cache.latest_epoch(), Some(2));
    }

    /// `end_offset_for` against the cases of Kafka's LeaderEpochFileCacheTest.
    #[test]
    fn end_offset_for_answers_as_kafkas_cache() {
        // shouldReturnUnsupportedIfNoEpochRecorded, shouldFetchEndOffsetOfEmptyCache
        let (_d, empty) = cache_with(&[]);
        assert_eq!(empty.end_offset_for(0, 0), UNDEFINED);
        assert_eq!(empty.end_offset_for(7, 0), UNDEFINED);
        assert_eq!(empty.end_offset_for(UNDEFINED_EPOCH, 73), UNDEFINED);
        // shouldReturnUndefinedOffsetIfUndefinedEpochRequested
        let (_d, cache) = cache_with(&[(2, 11), (3, 12)]);
        assert_eq!(cache.end_offset_for(UNDEFINED_EPOCH, 0), UNDEFINED);
        // Exact, latest: shouldAddEpochAndMessageOffsetToCache, ...IfLatestEpochRequested
        let (_d, cache) = cache_with(&[(2, 10)]);
        assert_eq!(cache.end_offset_for(2, 11), (2, 11));
        // Below the first epoch: shouldReturnFirstEpochIfRequestedEpochLessThanFirstEpoch
        let (_d, cache) = cache_with(&[(5, 11), (6, 12), (7, 13)]);
        assert_eq!(cache.end_offset_for(4, 0), (4, 11));
        // Exact, not latest: ...WhenOffsetRequestedForPreviousEpoch
        let (_d, cache) = cache_with(&[(1, 11), (1, 12), (2, 13), (2, 14), (3, 15), (3, 16)]);
        assert_eq!(cache.end_offset_for(2, 17), (2, 15));
        // Between epochs: shouldReturnNextAvailableEpochIfThereIsNoExactEpochForTheOneRequested
        let (_d, cache) = cache_with(&[(0, 10), (2, 13), (4, 17)]);
        assert_eq!(cache.end_offset_for(1, 0), (0, 13));
        assert_eq!(cache.end_offset_for(2, 0), (2, 17));
        assert_eq!(cache.end_offset_for(3, 0), (2, 17));
        assert_eq!(cache.end_offset_for(4, 20), (4, 20));
        // Unknown larger epoch: shouldReturnInvalidOffsetIfEpochIsRequestedWhichIsNotCurrentlyTracked
        let (_d, cache) = cache_with(&[(2, 100)]);
        assert_eq!(cache.end_offset_for(3, 100), UNDEFINED);
        // shouldIncreaseAndTrackEpochsAsFollowerReceivesManyMessages
        let (_d, cache) = cache_with(&[(0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (2, 6), (2, 8)]);
        assert_eq!(cache.end_offset_for(0, 9), (0, 3));
        assert_eq!(cache.end_offset_for(1, 9), (1, 6));
        assert_eq!(cache.end_offset_for(2, 9), (2, 9));
    }

    /// Kafka's truncateFromEnd cases: inclusive at a boundary, between boundaries, no-ops.
    #[test]
    fn truncate_from_end_drops_entries_starting_at_or_after_the_offset() {
        let three = [(2, 6), (3, 8), (4, 11)];
        let (_d, mut cache) = cache_with(&three);
        cache.truncate_from_end(8).expect("at a boundary");
        assert_eq!(pairs(&cache), [(2, 6)]);
        let (_d, mut cache) = cache_with(&three);
        cache.truncate_from_end(9).expect("between");
        assert_eq!(pairs(&cache), [(2, 6), (3, 8)]);
        assert_eq!(cache.latest_epoch(), Some(3));
        let (_d, mut cache) = cache_with(&three);
        cache
            .truncate_from_end(UNDEFINED_EPOCH_OFFSET)
            .expect("undefined");
        cache.truncate_from_end(12).expect("past the end");
        assert_eq!(pairs(&cache), three);
        cache.truncate_from_end(0).expect("everything");
        assert!(cache.entries().is_empty());
        cache.truncate_from_end(7).expect("empty");
    }

    /// Kafka's truncateFromStart cases: the newest entry at or below the new start is kept and
    /// moved up to it; nothing changes below the first entry.
    #[test]
    fn truncate_from_start_moves_the_first_kept_entry_up() {
        let three = [(2, 6), (3, 8), (4, 11)];
        for (start, expected) in [
            (8, vec![(3, 8), (4, 11)]),
            (9, vec![(3, 9), (4, 11)]),
            (1, three.to_vec()),
            (6, three.to_vec()),
            (11, vec![(4, 11)]),
            (15, vec![(4, 15)]),
            (UNDEFINED_EPOCH_OFFSET, three.to_vec()),
        ] {
            let (_d, mut cache) = cache_with(&three);
            cache.truncate_from_start(start).expect("truncate");
            assert_eq!(pairs(&cache), expected, "start {start}");
        }
        let (_d, mut cache) = cache_with(&[(0, 0), (1, 7), (2, 10)]);
        cache.truncate_from_start(5).expect("truncate");
        assert_eq!(pairs(&cache), [(0, 5), (1, 7), (2, 10)]);
        let (_d, mut empty) = cache_with(&[]);
        empty.truncate_from_start(7).expect("empty");
        // shouldWriteCheckpointOnTruncation
        let (dir, mut cache) = cache_with(&three);
        cache.truncate_from_end(11).expect("end");
        cache.truncate_from_start(8).expect("start");
        let reread = LeaderEpochCache::open(dir.path()).expect("readable");
        assert_eq!(pairs(&reread), [(3, 8)]);
    }
}
