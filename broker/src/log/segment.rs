//! One segment: a `.log` file of record batches back to back, with its sparse indexes.
//!
//! Only the newest segment of a log (the active one) is written; older ones are immutable until
//! retention deletes them or compaction replaces them whole.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::batch::{self, BatchHeader, ControlMarker, BATCH_HEADER_BYTES, CONTROL_BATCH_BYTES_MAX};
use super::index::SegmentIndex;
use super::txn_index::TxnIndex;
use crate::limits::SCAN_CHUNK_BYTES;

/// The file name of a segment or index: the base offset in 20 digits, then the extension.
pub(super) fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Whether the last offset-index entry names a batch that really starts there. Indexes are
/// only checked for order and bounds when loaded; ones left from before the `.log` changed
/// under them (a compaction swap cut short) would point into the middle of batches.
fn index_matches_log(
    file: &File,
    log_bytes: u64,
    base_offset: i64,
    index: &SegmentIndex,
) -> std::io::Result<bool> {
    let Some(last) = index.offsets.last() else {
        return Ok(true);
    };
    let position = u64::from(last.position);
    if position + BATCH_HEADER_BYTES as u64 > log_bytes {
        return Ok(false);
    }
    let mut header = vec![0u8; BATCH_HEADER_BYTES];
    file.read_exact_at(&mut header, position)?;
    let expected = base_offset + i64::from(last.relative_offset);
    Ok(BatchHeader::parse(&header).is_ok_and(|h| h.base_offset == expected))
}

/// One segment of a partition's log.
pub struct Segment {
    pub base_offset: i64,
    log_path: PathBuf,
    file: Arc<File>,
    size: u64,
    index: SegmentIndex,
    bytes_since_index: u64,
    pub max_timestamp: i64,
    /// The offset after the last batch written here (the base offset while empty).
    pub next_offset: i64,
    /// Base offset of the last batch written here.
    last_batch_offset: i64,
    /// Wall-clock time the segment was created, for `segment.ms`.
    pub created_at_ms: i64,
    /// The transactions aborted by markers in this segment.
    txn_index: TxnIndex,
}

/// What recovering a segment found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut from the tail because they were not a whole, valid batch.
    pub truncated_bytes: u64,
    /// Whether the indexes had to be rebuilt.
    pub rebuilt_index: bool,
}

impl Segment {
    /// Creates a new, empty segment.
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> std::io::Result<Segment> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&log_path)?;
        let index = SegmentIndex::create(
            &dir.join(file_name(base_offset, "index")),
            &dir.join(file_name(base_offset, "timeindex")),
        )?;
        // A transaction index left by an earlier segment at this offset describes other batches.
        let txn_path = dir.join(file_name(base_offset, "txnindex"));
        let _ = std::fs::remove_file(&txn_path);
        let txn_index = TxnIndex::open(&txn_path)?;
        Ok(Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size: 0,
            index,
            bytes_since_index: 0,
            max_timestamp: -1,
            next_offset: base_offset,
            last_batch_offset: base_offset,
            created_at_ms: now_ms,
            txn_index,
        })
    }

    /// Opens an existing segment. With `verify`, every batch is read and CRC-checked, the file is
    /// cut at the first one that is not whole and valid, and the indexes are rebuilt; without, the
    /// indexes are trusted when they look consistent. `visit` sees every batch that is scanned.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        verify: bool,
        now_ms: i64,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> std::io::Result<(Segment, RecoveryReport)> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new().read(true).write(true).open(&log_path)?;
        let size = file.metadata()?.len();
        let offset_path = dir.join(file_name(base_offset, "index"));
        let time_path = dir.join(file_name(base_offset, "timeindex"));
        let loaded = match verify {
            true => None,
            false => SegmentIndex::load(&offset_path, &time_path, size)?,
        };
        let loaded = match loaded {
            Some(index) if index_matches_log(&file, size, base_offset, &index)? => Some(index),
            _ => None,
        };
        let rebuild = loaded.is_none();
        let index = match loaded {
            Some(index) => index,
            None => SegmentIndex::create(&offset_path, &time_path)?,
        };
        let txn_index = TxnIndex::open(&dir.join(file_name(base_offset, "txnindex")))?;
        let mut segment = Segment {
            base_offset,
            log_path,
            file: Arc::new(file),
            size,
            index,
            bytes_since_index: 0,
            max_timestamp: -1,
            next_offset: base_offset,
            last_batch_offset: base_offset,
            created_at_ms: now_ms,
            txn_index,
        };
        // Verified segments always get fresh indexes; only a trusted one found damaged counts.
        let mut report = RecoveryReport {
            rebuilt_index: rebuild && !verify,
            ..Default::default()
        };
        if !verify && !rebuild {
            // A trusted closed segment with sound indexes: no scan. Its end offset is the next
            // segment's base, which the caller sets.
            segment.max_timestamp = segment.index.times.last().map_or(-1, |e| e.timestamp);
            return Ok((segment, report));
        }
        let valid_bytes = segment.rescan(verify, rebuild, visit)?;
        if valid_bytes < size {
            report.truncated_bytes = size - valid_bytes;
            segment.file.set_len(valid_bytes)?;
            segment.file.sync_all()?;
            segment.size = valid_bytes;
        }
        Ok((segment, report))
    }

    /// Walks every batch from the start, rebuilding indexes if asked, and returns how many bytes
    /// at the front are whole batches in offset order (and CRC-valid, with `verify`).
    fn rescan(
        &mut self,
        verify: bool,
        rebuild_index: bool,
        visit: &mut dyn FnMut(&BatchHeader),
    ) -> std::io::Result<u64> {
        let mut position = 0u64;
        let mut expected_min = self.base_offset;
        let mut buf = BytesMut::new();
        while let Some(header) = self.header_at(position, &mut buf)? {
            if header.base_offset < expected_min {
                break;
            }
            let total = header.total_bytes() as u64;
            if verify {
                let mut whole = vec![0u8; total as usize];
                if self.file.read_exact_at(&mut whole, position).is_err()
                    || batch::validate(&whole).is_err()
                {
                    break;
                }
            }
            if rebuild_index {
                self.index_batch(&header, position)?;
            }
            visit(&header);
            self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
            self.next_offset = header.next_offset();
            self.last_batch_offset = header.base_offset;
            expected_min = header.next_offset();
            position += total;
        }
        Ok(position)
    }

    /// Calls `visit` with the header of every whole batch, in order, without checking CRCs
    /// (the leader epoch cache is rebuilt this way).
    pub fn visit_headers(&self, visit: &mut dyn FnMut(&BatchHeader)) -> std::io::Result<()> {
        self.visit_batches(i64::MIN, &mut |header, _| visit(header))
    }

    /// Calls `visit` with the header of every whole batch starting at or after `from`, in
    /// order, and for a control batch the marker it holds (None if it cannot be read as one).
    /// Producer state is replayed this way.
    pub fn visit_batches(
        &self,
        from: i64,
        visit: &mut dyn FnMut(&BatchHeader, Option<ControlMarker>),
    ) -> std::io::Result<()> {
        let mut position = match from > self.base_offset {
            true => match self.position_of(from)? {
                Some(position) => position,
                None => return Ok(()),
            },
            false => 0,
        };
        let mut buf = BytesMut::new();
        while let Some(header) = self.header_at(position, &mut buf)? {
            if header.base_offset >= from {
                let marker = match header.is_control() {
                    true => self.marker_at(position, &header)?,
                    false => None,
                };
                visit(&header, marker);
            }
            position += header.total_bytes() as u64;
        }
        Ok(())
    }

    /// The marker of the control batch at `position`, if it is one the broker could write.
    fn marker_at(
        &self,
        position: u64,
        header: &BatchHeader,
    ) -> std::io::Result<Option<ControlMarker>> {
        if header.total_bytes() > CONTROL_BATCH_BYTES_MAX {
            return Ok(None);
        }
        let mut whole = vec![0u8; header.total_bytes()];
        self.file.read_exact_at(&mut whole, position)?;
        let marker = batch::parse_control_marker(&whole);
        if let Err(e) = &marker {
            tracing::warn!(segment = %self.log_path.display(), offset = header.base_offset,
                error = %e, "ignoring an unreadable transaction marker");
        }
        Ok(marker.ok())
    }

    /// Removes every batch holding an offset at or after `offset`: the file is cut at the
    /// start of the first batch whose last offset reaches `offset` (so a batch that straddles
    /// it goes whole), synced, and the indexes are rebuilt from what is left. Afterwards the
    /// segment ends where its last kept batch ends, as reopening it would find. Returns the
    /// bytes removed.
    pub fn truncate_to(&mut self, offset: i64) -> std::io::Result<u64> {
        let cut = self.position_of(offset)?.unwrap_or(self.size);
        let removed = self.size - cut;
        if removed > 0 {
            self.file.set_len(cut)?;
            self.size = cut;
        }
        // Durable before the caller forgets the records: a crash must not bring them back.
        self.file.sync_all()?;
        self.index = self.index.recreate()?;
        self.bytes_since_index = 0;
        self.max_timestamp = -1;
        self.next_offset = self.base_offset;
        self.last_batch_offset = self.base_offset;
        let whole = self.rescan(false, true, &mut |_| {})?;
        if whole < self.size {
            // Bytes that are not whole batches cannot be here after an append; cut them too.
            self.file.set_len(whole)?;
            self.file.sync_all()?;
            self.size = whole;
        }
        self.index.sync()?;
        self.txn_index.truncate_from(self.next_offset)?;
        self.txn_index.sync_if_changed()?;
        Ok(removed)
    }

    /// Reads the header of the batch at `position`, if a whole batch lies there.
    fn header_at(&self, position: u64, buf: &mut BytesMut) -> std::io::Result<Option<BatchHeader>> {
        if position + BATCH_HEADER_BYTES as u64 > self.size {
            return Ok(None);
        }
        buf.resize(BATCH_HEADER_BYTES, 0);
        self.file.read_exact_at(buf, position)?;
        match BatchHeader::parse(buf) {
            Ok(h) if position + h.total_bytes() as u64 <= self.size => Ok(Some(h)),
            _ => Ok(None),
        }
    }

    fn index_batch(&mut self, header: &BatchHeader, position: u64) -> std::io::Result<()> {
        let relative = (header.base_offset - self.base_offset) as u32;
        if self.bytes_since_index == 0 || self.bytes_since_index >= self.index_interval() {
            self.index.append_offset(relative, position as u32)?;
            if header.max_timestamp > self.max_timestamp {
                self.index.append_time(header.max_timestamp, relative)?;
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_bytes() as u64;
        Ok(())
    }

    fn index_interval(&self) -> u64 {
        crate::limits::INDEX_INTERVAL_BYTES
    }

    /// Closes the segment for writing: records its largest timestamp in the time index (entries
    /// are otherwise only made every index interval), so a trusted reopen knows it exactly.
    pub fn seal(&mut self) -> std::io::Result<()> {
        if self.next_offset > self.base_offset && self.max_timestamp >= 0 {
            let relative = (self.last_batch_offset - self.base_offset) as u32;
            self.index.append_time(self.max_timestamp, relative)?;
        }
        Ok(())
    }

    /// Current size of the `.log` file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// When the `.log` file was last written, in ms since the epoch: what ListOffsets v0 reports
    /// a segment by, as Kafka does.
    pub fn last_modified_ms(&self) -> std::io::Result<i64> {
        let modified = self.file.metadata()?.modified()?;
        Ok(modified
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64))
    }

    /// A handle for syncing the file without holding the log.
    pub fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Appends a stamped batch at the end of the segment.
    pub fn append(&mut self, batch: &[u8], header: &BatchHeader) -> std::io::Result<()> {
        let position = self.size;
        self.file.write_all_at(batch, position)?;
        self.size += batch.len() as u64;
        self.index_batch(header, position)?;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        self.next_offset = header.next_offset();
        self.last_batch_offset = header.base_offset;
        Ok(())
    }

    /// The position of the first batch whose last offset is `>= offset`, if any.
    pub fn position_of(&self, offset: i64) -> std::io::Result<Option<u64>> {
        let relative = (offset - self.base_offset).clamp(0, u32::MAX as i64) as u32;
        let mut position = self.index.position_floor(relative) as u64;
        let mut buf = BytesMut::new();
        while let Some(header) = self.header_at(position, &mut buf)? {
            if header.last_offset() >= offset {
                return Ok(Some(position));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// Reads whole batches from `position`: at least one, then more while they fit `max_bytes`.
    pub fn read(&self, position: u64, max_bytes: usize) -> std::io::Result<Bytes> {
        let want =
            (max_bytes as u64).clamp(BATCH_HEADER_BYTES as u64, SCAN_CHUNK_BYTES as u64 * 16);
        let len = want.min(self.size.saturating_sub(position)) as usize;
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, position)?;
        let mut whole = 0usize;
        for (at, header) in batch::headers(&buf) {
            whole = at + header.total_bytes();
        }
        if whole == 0 {
            // The first batch is larger than max_bytes: return it whole (KIP-74).
            let header = BatchHeader::parse(&buf)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let mut one = vec![0u8; header.total_bytes()];
            self.file.read_exact_at(&mut one, position)?;
            return Ok(Bytes::from(one));
        }
        buf.truncate(whole);
        Ok(Bytes::from(buf))
    }

    /// The first batch, from `relative` on, whose max timestamp is `>= target`.
    pub fn find_by_time(&self, target: i64) -> std::io::Result<Option<Bytes>> {
        let relative = self.index.time_floor(target);
        let mut position = self.index.position_floor(relative) as u64;
        let mut buf = BytesMut::new();
        while let Some(header) = self.header_at(position, &mut buf)? {
            if header.max_timestamp >= target {
                let mut whole = vec![0u8; header.total_bytes()];
                self.file.read_exact_at(&mut whole, position)?;
                return Ok(Some(Bytes::from(whole)));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    /// A handle on the file and its current size, for reading it whole without the log's lock
    /// (compaction does this with closed segments, which do not change).
    pub fn snapshot(&self) -> (Arc<File>, u64) {
        (Arc::clone(&self.file), self.size)
    }

    /// Handles on the `.log`, both index files and the transaction index once it exists:
    /// what a sync of this segment must cover.
    pub fn files(&self) -> Vec<Arc<File>> {
        let [offsets, times] = self.index.files();
        let mut files = vec![Arc::clone(&self.file), offsets, times];
        files.extend(self.txn_index.file());
        files
    }

    /// Handles on what a sync of the active segment's appends must cover: the `.log` and the
    /// transaction index once it exists (the offset and time indexes are rebuilt by recovery).
    pub fn appended_files(&self) -> Vec<Arc<File>> {
        let mut files = vec![Arc::clone(&self.file)];
        files.extend(self.txn_index.file());
        files
    }

    /// Syncs the `.log` and its indexes.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.index.sync()?;
        self.txn_index.sync_if_changed()
    }

    /// The transactions aborted by markers in this segment.
    pub fn txn_index(&self) -> &TxnIndex {
        &self.txn_index
    }

    /// The transaction index, to append to or cut.
    pub fn txn_index_mut(&mut self) -> &mut TxnIndex {
        &mut self.txn_index
    }

    /// Removes the index files only: compaction does this before it replaces the `.log`, so a
    /// crash between the two leaves a segment without indexes (rebuilt on start-up) rather than
    /// old indexes pointing into the middle of the new file's batches.
    pub fn delete_index_files(&self) {
        self.index.delete_files();
    }

    /// Removes the segment's files.
    pub fn delete_files(&self) {
        let _ = std::fs::remove_file(&self.log_path);
        self.index.delete_files();
        self.txn_index.delete_file();
    }

    /// The path of the `.log` file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}
