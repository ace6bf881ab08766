//! Where a voter keeps its raft log and hard state: [`RaftDisk`], with the real [`FileDisk`] and,
//! for the simulation, [`MemDisk`].
//!
//! Files in the quorum directory:
//! ```text
//! DIR/log         records [u32 body length][u32 CRC32C of body][body: protobuf raft Entry],
//!                 little-endian, entries 1, 2, 3, ... in order; appended, and cut back when a
//!                 new leader overwrites a conflicting suffix
//! DIR/hard-state  "<term> <vote> <commit>\n", replaced atomically (tmp + fsync + rename)
//! ```
//! Recovery reads the log from the start and cuts it at the first record that is torn (short),
//! fails its CRC, does not decode, or does not carry the next index, as the partition log does
//! with its segments. The hard state is only written after the log is synced, so it never names
//! a vote or commit the log has lost, unless the log file itself was damaged.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

use crate::log::{sync_dir, write_state_file};

use super::ENTRY_BYTES_MAX;

const LOG_FILE: &str = "log";
const HARD_STATE_FILE: &str = "hard-state";
/// Bytes before each record body: length and CRC32C.
const RECORD_HEADER_BYTES: usize = 8;
/// Largest record body: an entry's payload plus its index, term and proposal id.
const RECORD_BODY_BYTES_MAX: usize = ENTRY_BYTES_MAX + 1024;

/// A voter's durable raft state.
///
/// Contract: `append` may leave data in a volatile cache; `sync` makes everything appended so
/// far durable; `save_hard_state` is durable and atomic when it returns. `load` returns a
/// gapless run of entries starting at index 1 and the last saved hard state (default if none).
pub(crate) trait RaftDisk: Send + 'static {
    fn load(&mut self) -> io::Result<(Vec<Entry>, HardState)>;
    /// Writes `entries` (consecutive indexes) after first removing every stored entry at or
    /// after `entries[0].index` (a suffix the new leader does not have).
    fn append(&mut self, entries: &[Entry]) -> io::Result<()>;
    fn sync(&mut self) -> io::Result<()>;
    fn save_hard_state(&mut self, hard_state: &HardState) -> io::Result<()>;
}

/// The log and hard state as files in one directory.
pub(crate) struct FileDisk {
    dir: PathBuf,
    file: Option<File>,
    /// File offset of entry `i + 1`'s record; `offsets.len()` is the last index.
    offsets: Vec<u64>,
    length: u64,
    unsynced: bool,
}

impl FileDisk {
    /// Uses `dir` (created if missing); nothing is read until `load`.
    pub(crate) fn new(dir: &Path) -> FileDisk {
        FileDisk {
            dir: dir.to_path_buf(),
            file: None,
            offsets: Vec::new(),
            length: 0,
            unsynced: false,
        }
    }

    fn file(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("load opens the log before any write")
    }

    fn load_hard_state(&self) -> io::Result<HardState> {
        let path = self.dir.join(HARD_STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HardState::default()),
            Err(e) => return Err(e),
        };
        let fields: Vec<u64> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| corrupt(&path, "a field is not a number"))?;
        let [term, vote, commit] = fields[..] else {
            return Err(corrupt(&path, "expected \"<term> <vote> <commit>\""));
        };
        Ok(HardState {
            term,
            vote,
            commit,
            ..Default::default()
        })
    }
}

fn corrupt(path: &Path, reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is damaged: {reason}", path.display()),
    )
}

impl RaftDisk for FileDisk {
    fn load(&mut self) -> io::Result<(Vec<Entry>, HardState)> {
        let created = std::fs::symlink_metadata(&self.dir).is_err();
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(LOG_FILE);
        let log_existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let (entries, offsets, valid_bytes) = read_log(&mut file)?;
        let file_bytes = file.metadata()?.len();
        if valid_bytes < file_bytes {
            tracing::warn!(
                path = %path.display(),
                cut_bytes = file_bytes - valid_bytes,
                entries = entries.len(),
                "cut a torn or corrupt tail off the metadata log"
            );
            file.set_len(valid_bytes)?;
            file.sync_all()?;
        }
        if !log_existed {
            file.sync_all()?;
            sync_dir(&self.dir)?;
        }
        if created {
            if let Some(parent) = self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        file.seek(SeekFrom::Start(valid_bytes))?;
        self.file = Some(file);
        self.offsets = offsets;
        self.length = valid_bytes;
        Ok((entries, self.load_hard_state()?))
    }

    fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let last_index = self.offsets.len() as u64;
        assert!(
            first.index >= 1 && first.index <= last_index + 1,
            "appends leave no gap"
        );
        if first.index <= last_index {
            let cut_at = self.offsets[(first.index - 1) as usize];
            self.offsets.truncate((first.index - 1) as usize);
            self.length = cut_at;
            self.file().set_len(cut_at)?;
            self.file().seek(SeekFrom::Start(cut_at))?;
        }
        let mut buffer = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(
                entry.index,
                first.index + i as u64,
                "entries are consecutive"
            );
            let body = entry.write_to_bytes().map_err(io::Error::other)?;
            assert!(body.len() <= RECORD_BODY_BYTES_MAX, "proposals are bounded");
            self.offsets.push(self.length + buffer.len() as u64);
            buffer.extend_from_slice(&(body.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
            buffer.extend_from_slice(&body);
        }
        self.file().write_all(&buffer)?;
        self.length += buffer.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file().sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> io::Result<()> {
        let text = format!(
            "{} {} {}\n",
            hard_state.term, hard_state.vote, hard_state.commit
        );
        write_state_file(&self.dir.join(HARD_STATE_FILE), text.as_bytes())
    }
}

/// Reads records from the start; stops at the first bad one. Returns the entries, the offset of
/// each, and how many bytes were valid.
fn read_log(file: &mut File) -> io::Result<(Vec<Entry>, Vec<u64>, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut offsets = Vec::new();
    let mut valid_bytes = 0u64;
    let mut header = [0u8; RECORD_HEADER_BYTES];
    loop {
        if !read_full(&mut reader, &mut header)? {
            break;
        }
        let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if length > RECORD_BODY_BYTES_MAX {
            break;
        }
        let mut body = vec![0u8; length];
        if !read_full(&mut reader, &mut body)? || crc32c::crc32c(&body) != crc {
            break;
        }
        let Ok(entry) = Entry::parse_from_bytes(&body) else {
            break;
        };
        if entry.index != entries.len() as u64 + 1 {
            break;
        }
        offsets.push(valid_bytes);
        valid_bytes += (RECORD_HEADER_BYTES + length) as u64;
        entries.push(entry);
    }
    Ok((entries, offsets, valid_bytes))
}

/// Fills `buffer`, or returns false at end of file (a partial read counts as end: a torn tail).
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// An in-memory disk for the simulation. It keeps what a crash would keep (the synced log and
/// the hard state) apart from what was only written, and can be told to fail (a crash in the
/// middle of a `Core::advance`).
#[cfg(test)]
pub(crate) struct MemDisk {
    /// The log as written (what reads see).
    written: Vec<Entry>,
    /// The log as of the last sync.
    synced: Vec<Entry>,
    hard_state: HardState,
    /// Operations left before the disk "crashes" and fails every later one.
    operations_left: Option<u32>,
}

#[cfg(test)]
impl MemDisk {
    pub(crate) fn new() -> MemDisk {
        MemDisk {
            written: Vec::new(),
            synced: Vec::new(),
            hard_state: HardState::default(),
            operations_left: None,
        }
    }

    /// Fails the `operations`-th next operation and every one after it.
    pub(crate) fn fail_after(&mut self, operations: u32) {
        self.operations_left = Some(operations);
    }

    /// Disarms `fail_after`.
    pub(crate) fn fail_never(&mut self) {
        self.operations_left = None;
    }

    fn operation(&mut self) -> io::Result<()> {
        match &mut self.operations_left {
            Some(0) => Err(io::Error::other("simulated crash")),
            Some(left) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A crash: the log keeps what was synced, plus possibly a prefix of what was written after
    /// it (the page cache may have flushed some of it); the hard state survives as saved.
    pub(crate) fn crash(&mut self, rng: &mut impl rand::Rng) {
        let common = self
            .written
            .iter()
            .zip(&self.synced)
            .take_while(|(w, s)| w == s)
            .count();
        let log = if common < self.synced.len() && rng.random_bool(0.5) {
            // The log was cut back since the last sync, and the cut never reached the disk.
            self.synced.clone()
        } else {
            let keep = rng.random_range(common..=self.written.len());
            self.written[..keep].to_vec()
        };
        self.written = log.clone();
        self.synced = log;
        self.operations_left = None;
    }
}

#[cfg(test)]
impl RaftDisk for MemDisk {
    fn load(&mut self) -> io::Result<(Vec<Entry>, HardState)> {
        self.operation()?;
        Ok((self.written.clone(), self.hard_state.clone()))
    }

    fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        self.operation()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        assert!(first.index >= 1 && first.index <= self.written.len() as u64 + 1);
        self.written.truncate((first.index - 1) as usize);
        self.written.extend_from_slice(entries);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.operation()?;
        self.synced = self.written.clone();
        Ok(())
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> io::Result<()> {
        self.operation()?;
        self.hard_state = hard_state.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    #[test]
    fn file_disk_round_trips_and_cuts_a_conflicting_suffix() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("q");
        let mut disk = FileDisk::new(&path);
        assert_eq!(disk.load().expect("load").0, Vec::new());
        disk.append(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")])
            .expect("append");
        disk.append(&[entry(2, 2, b"x")])
            .expect("append over a conflict");
        disk.sync().expect("sync");
        let hard_state = HardState {
            term: 2,
            vote: 3,
            commit: 2,
            ..Default::default()
        };
        disk.save_hard_state(&hard_state).expect("hard state");
        drop(disk);
        let (entries, loaded) = FileDisk::new(&path).load().expect("reload");
        assert_eq!(entries, vec![entry(1, 1, b"a"), entry(2, 2, b"x")]);
        assert_eq!(loaded, hard_state);
    }

    #[test]
    fn file_disk_cuts_a_torn_or_garbage_tail() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut disk = FileDisk::new(dir.path());
        disk.load().expect("load");
        disk.append(&[entry(1, 1, b"one"), entry(2, 1, b"two")])
            .expect("append");
        disk.sync().expect("sync");
        drop(disk);
        let log = dir.path().join(LOG_FILE);
        let full = std::fs::read(&log).expect("read");
        for damaged in [
            full[..full.len() - 2].to_vec(),
            [&full[..], b"garbage!!!"].concat(),
        ] {
            std::fs::write(&log, &damaged).expect("write");
            let mut disk = FileDisk::new(dir.path());
            let (entries, _) = disk.load().expect("load");
            assert_eq!(
                entries.len(),
                if damaged.len() < full.len() { 1 } else { 2 }
            );
            disk.append(&[entry(entries.len() as u64 + 1, 1, b"next")])
                .expect("append");
            disk.sync().expect("sync");
            drop(disk);
            let (entries, _) = FileDisk::new(dir.path()).load().expect("reload");
            assert_eq!(&entries.last().expect("an entry").data[..], b"next");
            std::fs::write(&log, &full).expect("restore");
        }
    }

    #[test]
    fn file_disk_rejects_a_damaged_hard_state() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(HARD_STATE_FILE), "1 two 3\n").expect("write");
        let error = FileDisk::new(dir.path()).load().expect_err("damaged");
        assert!(
            error.to_string().contains("hard-state is damaged"),
            "{error}"
        );
    }
}
