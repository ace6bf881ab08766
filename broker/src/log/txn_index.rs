//! A segment's transaction index (`.txnindex`): every transaction aborted by a marker in the
//! segment, so read_committed fetches can tell consumers which records to drop.
//!
//! Kafka's format: 34-byte entries, version i16 = 0, producer id i64, first offset i64, last
//! offset i64 (the abort marker's), last stable offset i64 (when the abort was written).
//! Entries are appended in marker order. The file is created with the first entry; a torn
//! last entry is dropped when it is loaded. Entries with a last offset at or past the
//! producer-state snapshot a log opens from are rebuilt by the replay that follows (see
//! `Log::load_producer_state`); those below it were synced before that snapshot was written.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, BufMut};

/// One aborted transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The offset of the abort marker.
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

const ENTRY_BYTES: usize = 34;
const ENTRY_VERSION: i16 = 0;

/// The aborted transactions of one segment, in memory and in its `.txnindex` file.
pub struct TxnIndex {
    path: PathBuf,
    file: Option<Arc<File>>,
    entries: Vec<AbortedTxn>,
    /// Whether entries were appended since the file was last synced.
    unsynced: bool,
}

impl TxnIndex {
    /// Opens the index at `path`: its whole entries, or none when the file is missing.
    pub fn open(path: &Path) -> std::io::Result<TxnIndex> {
        let mut index = TxnIndex {
            path: path.to_path_buf(),
            file: None,
            entries: Vec::new(),
            unsynced: false,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(index),
            Err(e) => return Err(e),
        };
        for mut chunk in bytes.chunks_exact(ENTRY_BYTES) {
            if chunk.get_i16() != ENTRY_VERSION {
                break;
            }
            index.entries.push(AbortedTxn {
                producer_id: chunk.get_i64(),
                first_offset: chunk.get_i64(),
                last_offset: chunk.get_i64(),
                last_stable_offset: chunk.get_i64(),
            });
        }
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if bytes.len() != index.entries.len() * ENTRY_BYTES {
            file.set_len((index.entries.len() * ENTRY_BYTES) as u64)?;
        }
        index.file = Some(Arc::new(file));
        Ok(index)
    }

    /// Appends `txn`. Returns the file when this created it (its directory entry needs a sync).
    pub fn append(&mut self, txn: AbortedTxn) -> std::io::Result<Option<Arc<File>>> {
        let created = match &self.file {
            Some(_) => None,
            None => {
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&self.path)?;
                let file = Arc::new(file);
                self.file = Some(Arc::clone(&file));
                Some(file)
            }
        };
        let mut entry = Vec::with_capacity(ENTRY_BYTES);
        entry.put_i16(ENTRY_VERSION);
        entry.put_i64(txn.producer_id);
        entry.put_i64(txn.first_offset);
        entry.put_i64(txn.last_offset);
        entry.put_i64(txn.last_stable_offset);
        let position = (self.entries.len() * ENTRY_BYTES) as u64;
        self.file
            .as_ref()
            .expect("created above")
            .write_all_at(&entry, position)?;
        self.entries.push(txn);
        self.unsynced = true;
        Ok(created)
    }

    /// Drops the entries whose marker is at or after `offset`.
    pub fn truncate_from(&mut self, offset: i64) -> std::io::Result<()> {
        let kept = self.entries.partition_point(|e| e.last_offset < offset);
        if kept == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(kept);
        if let Some(file) = &self.file {
            file.set_len((kept * ENTRY_BYTES) as u64)?;
            self.unsynced = true;
        }
        Ok(())
    }

    /// The aborted transactions, in marker order.
    pub fn entries(&self) -> &[AbortedTxn] {
        &self.entries
    }

    /// The file, once it exists.
    pub fn file(&self) -> Option<Arc<File>> {
        self.file.clone()
    }

    /// Syncs the file if entries changed since the last sync.
    pub fn sync_if_changed(&mut self) -> std::io::Result<()> {
        if let (true, Some(file)) = (self.unsynced, &self.file) {
            file.sync_data()?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Removes the file.
    pub fn delete_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(last_offset: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: 3,
            first_offset: last_offset - 2,
            last_offset,
            last_stable_offset: last_offset + 1,
        }
    }

    /// Entries survive reopening; a torn last entry is dropped; truncation cuts the file.
    #[test]
    fn entries_reopen_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.txnindex");
        let mut index = TxnIndex::open(&path).expect("open");
        assert!(index.append(txn(5)).expect("append").is_some(), "created");
        assert!(index.append(txn(9)).expect("append").is_none());
        index.append(txn(12)).expect("append");
        let file = OpenOptions::new().write(true).open(&path).expect("file");
        file.set_len((3 * ENTRY_BYTES - 5) as u64).expect("tear");
        let mut index = TxnIndex::open(&path).expect("reopen");
        assert_eq!(index.entries(), &[txn(5), txn(9)]);
        index.truncate_from(9).expect("truncate");
        let index = TxnIndex::open(&path).expect("reopen");
        assert_eq!(index.entries(), &[txn(5)]);
    }
}
