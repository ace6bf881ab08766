//! Sparse offset and time indexes of one segment, in Kafka's file formats.
//!
//! `.index` entries are 8 bytes: offset relative to the segment base (u32) and the file position
//! of the batch starting there (u32). `.timeindex` entries are 12 bytes: the largest timestamp so
//! far (i64) and the relative offset of the batch that reached it (u32). Both are hints: the
//! `.log` is the truth, and a missing or inconsistent index is rebuilt from it on start-up.
//! Entries are kept in memory and appended to the file as they are made.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One offset-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time-index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Both indexes of a segment.
pub(super) struct SegmentIndex {
    offset_path: PathBuf,
    time_path: PathBuf,
    offset_file: Arc<File>,
    time_file: Arc<File>,
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

impl SegmentIndex {
    /// Creates empty index files, replacing any that exist.
    pub(super) fn create(offset_path: &Path, time_path: &Path) -> std::io::Result<SegmentIndex> {
        let open = |p: &Path| {
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(p)
        };
        Ok(SegmentIndex {
            offset_file: Arc::new(open(offset_path)?),
            time_file: Arc::new(open(time_path)?),
            offset_path: offset_path.to_path_buf(),
            time_path: time_path.to_path_buf(),
            offsets: Vec::new(),
            times: Vec::new(),
        })
    }

    /// Empty index files in place of these (the segment was truncated and is reindexed).
    pub(super) fn recreate(&self) -> std::io::Result<SegmentIndex> {
        SegmentIndex::create(&self.offset_path, &self.time_path)
    }

    /// Loads existing index files if they are consistent with a log of `log_bytes` bytes;
    /// returns `None` when they are missing or damaged and must be rebuilt.
    pub(super) fn load(
        offset_path: &Path,
        time_path: &Path,
        log_bytes: u64,
    ) -> std::io::Result<Option<SegmentIndex>> {
        let (Some(offset_raw), Some(time_raw)) = (read_all(offset_path)?, read_all(time_path)?)
        else {
            return Ok(None);
        };
        if offset_raw.len() % 8 != 0 || time_raw.len() % 12 != 0 {
            return Ok(None);
        }
        let offsets: Vec<OffsetEntry> = offset_raw
            .chunks_exact(8)
            .map(|c| OffsetEntry {
                relative_offset: u32::from_be_bytes(c[0..4].try_into().expect("4 bytes")),
                position: u32::from_be_bytes(c[4..8].try_into().expect("4 bytes")),
            })
            .collect();
        let times: Vec<TimeEntry> = time_raw
            .chunks_exact(12)
            .map(|c| TimeEntry {
                timestamp: i64::from_be_bytes(c[0..8].try_into().expect("8 bytes")),
                relative_offset: u32::from_be_bytes(c[8..12].try_into().expect("4 bytes")),
            })
            .collect();
        let offsets_sorted = offsets
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
        let times_sorted = times.windows(2).all(|w| {
            w[0].timestamp <= w[1].timestamp && w[0].relative_offset <= w[1].relative_offset
        });
        let in_bounds = offsets
            .last()
            .is_none_or(|e| (e.position as u64) < log_bytes);
        if !offsets_sorted || !times_sorted || !in_bounds {
            return Ok(None);
        }
        let append = |p: &Path| OpenOptions::new().append(true).open(p);
        Ok(Some(SegmentIndex {
            offset_file: Arc::new(append(offset_path)?),
            time_file: Arc::new(append(time_path)?),
            offset_path: offset_path.to_path_buf(),
            time_path: time_path.to_path_buf(),
            offsets,
            times,
        }))
    }

    /// Records that the batch starting at `relative_offset` lies at `position`.
    pub(super) fn append_offset(
        &mut self,
        relative_offset: u32,
        position: u32,
    ) -> std::io::Result<()> {
        if let Some(last) = self.offsets.last() {
            if last.relative_offset >= relative_offset || last.position >= position {
                return Ok(());
            }
        }
        let entry = OffsetEntry {
            relative_offset,
            position,
        };
        let mut raw = [0u8; 8];
        raw[0..4].copy_from_slice(&relative_offset.to_be_bytes());
        raw[4..8].copy_from_slice(&position.to_be_bytes());
        (&*self.offset_file).write_all(&raw)?;
        self.offsets.push(entry);
        Ok(())
    }

    /// Records that the largest timestamp up to the batch at `relative_offset` is `timestamp`.
    pub(super) fn append_time(
        &mut self,
        timestamp: i64,
        relative_offset: u32,
    ) -> std::io::Result<()> {
        if let Some(last) = self.times.last() {
            if last.timestamp >= timestamp {
                return Ok(());
            }
        }
        let mut raw = [0u8; 12];
        raw[0..8].copy_from_slice(&timestamp.to_be_bytes());
        raw[8..12].copy_from_slice(&relative_offset.to_be_bytes());
        (&*self.time_file).write_all(&raw)?;
        self.times.push(TimeEntry {
            timestamp,
            relative_offset,
        });
        Ok(())
    }

    /// The file position of the last indexed batch starting at or before `relative_offset`.
    pub(super) fn position_floor(&self, relative_offset: u32) -> u32 {
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position
        }
    }

    /// The relative offset from which to scan for the first record with timestamp `>= target`:
    /// every batch up to and including the returned one has only smaller timestamps, or it is 0.
    pub(super) fn time_floor(&self, target: i64) -> u32 {
        let i = self.times.partition_point(|e| e.timestamp < target);
        if i == 0 {
            0
        } else {
            self.times[i - 1].relative_offset
        }
    }

    /// Flushes both index files to disk.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        self.offset_file.sync_data()?;
        self.time_file.sync_data()
    }

    /// Handles on both index files, for syncing them without holding the log.
    pub(super) fn files(&self) -> [Arc<File>; 2] {
        [Arc::clone(&self.offset_file), Arc::clone(&self.time_file)]
    }

    /// Removes the index files (the segment is being deleted).
    pub(super) fn delete_files(&self) {
        let _ = std::fs::remove_file(&self.offset_path);
        let _ = std::fs::remove_file(&self.time_path);
    }
}

fn read_all(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(mut f) => {
            let mut raw = Vec::new();
            f.read_to_end(&mut raw)?;
            Ok(Some(raw))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
