//! A partition log as a replica: leader epochs, follower appends and truncation (KIP-101,
//! KIP-279), through `Log`'s public API only. Each test drives two or more logs in temporary
//! directories the way replicas would: a follower reads the leader's bytes with `Log::read`,
//! cuts them anywhere (as a fetch size limit does), appends them with
//! `Log::append_as_follower`, and after a leader change truncates where the leader's
//! `Log::end_offset_for_epoch` says, as Kafka's replica fetcher does.

use std::path::Path;

use bytes::BytesMut;
use eddy_broker::log::batch::{self, BatchBuilder, BatchHeader, Compression};
use eddy_broker::log::epoch_cache::LEADER_EPOCH_CHECKPOINT_FILE;
use eddy_broker::log::{AppendInfo, EpochEntry, Log};
use eddy_broker::{BrokerError, TopicConfig};
use proptest::prelude::*;

/// Small segments, so every test crosses segment boundaries.
fn config() -> TopicConfig {
    TopicConfig {
        segment_bytes: 2_000,
        ..TopicConfig::default()
    }
}

fn open(dir: &Path) -> Log {
    Log::open(dir, config(), 0, 0).expect("open").0
}

/// A batch of `records` records whose values carry `tag`, so batches written by different
/// leaders at the same offsets differ in their bytes.
fn batch(records: usize, tag: u64) -> BytesMut {
    let mut builder = BatchBuilder::new(tag as i64, 512);
    for i in 0..records {
        let key = format!("k{i}");
        let value = format!("value {tag} {i} {}", "x".repeat(40));
        builder.push(
            tag as i64,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    builder.finish()
}

/// `batch` from an idempotent producer: id `producer_id`, epoch 0, first sequence `sequence`.
fn idempotent(records: usize, producer_id: i64, sequence: i32) -> BytesMut {
    let mut b = batch(records, 99);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

fn append(log: &mut Log, records: usize, tag: u64) -> AppendInfo {
    log.append(&mut batch(records, tag), 0)
        .expect("leader append")
}

/// The bytes of every batch from the log start to the log end, read back with `Log::read`.
fn all_batches(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 16).expect("read");
        let mut next = offset;
        for (_, header) in batch::headers(&bytes) {
            next = header.next_offset();
        }
        assert!(next > offset, "reading at {offset} makes progress");
        out.extend_from_slice(&bytes);
        offset = next;
    }
    out
}

/// (file name, bytes) of every `.log` file in `dir`, by name.
fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().to_string();
            (name, std::fs::read(&p).expect("read"))
        })
        .collect();
    files.sort();
    files
}

/// The epoch cache entries describing records the log holds: a leader's entry for an epoch in
/// which it wrote nothing yet starts at its log end, and no follower can learn it.
fn live_epochs(log: &Log) -> Vec<EpochEntry> {
    let end = log.log_end_offset();
    log.epoch_entries()
        .iter()
        .copied()
        .filter(|e| e.start_offset < end)
        .collect()
}

fn pairs(entries: &[EpochEntry]) -> Vec<(i32, i64)> {
    entries.iter().map(|e| (e.epoch, e.start_offset)).collect()
}

/// Fetches from `leader` into `follower` until both end at the same offset, cutting each
/// fetch response after `cuts[i]` bytes (cycling). A cut inside the first batch appends
/// nothing; the next fetch then takes the whole response, so every round makes progress.
fn catch_up(follower: &mut Log, leader: &Log, cuts: &[usize]) {
    let mut round = 0;
    while follower.log_end_offset() < leader.log_end_offset() {
        let end = follower.log_end_offset();
        let bytes = leader.read(end, 1 << 16).expect("leader read");
        let cut = cuts[round % cuts.len()].min(bytes.len());
        round += 1;
        let mut chunk = BytesMut::from(&bytes[..cut]);
        follower
            .append_as_follower(&mut chunk, 0)
            .expect("follower append");
        if follower.log_end_offset() == end {
            let mut whole = BytesMut::from(&bytes[..]);
            follower
                .append_as_follower(&mut whole, 0)
                .expect("follower append");
        }
        assert!(follower.log_end_offset() > end, "a fetch makes progress");
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
}

/// Kafka's replica fetcher after a leader change (`AbstractFetcherThread`, KIP-279): ask the
/// leader where the follower's latest epoch ends; if the leader answers an epoch the follower
/// also has, truncate to the smaller of both ends of it; if the follower lacks that epoch,
/// truncate to the end of its own largest epoch below it and ask again.
fn reconcile(follower: &mut Log, leader: &Log) {
    for _ in 0..100 {
        let Some(epoch) = follower.latest_epoch() else {
            return;
        };
        let (leader_epoch, leader_end) = leader.end_offset_for_epoch(epoch);
        assert!(
            leader_end >= 0,
            "the leader knows epoch {epoch} or one below it"
        );
        let replica_end = follower.log_end_offset();
        let (follower_epoch, follower_end) = follower.end_offset_for_epoch(leader_epoch);
        if follower_epoch == -1 {
            follower
                .truncate_to(leader_end.min(replica_end))
                .expect("truncate");
            return;
        }
        if follower_epoch != leader_epoch {
            follower
                .truncate_to(follower_end.min(replica_end))
                .expect("truncate");
            continue;
        }
        let target = follower_end.min(leader_end).min(replica_end);
        follower.truncate_to(target).expect("truncate");
        return;
    }
    panic!("truncation did not settle");
}

/// Asserts the follower holds exactly the leader's batches and epochs.
fn assert_same_log(follower: &Log, leader: &Log) {
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert!(
        all_batches(follower) == all_batches(leader),
        "the follower's batches are the leader's, byte for byte"
    );
    assert_eq!(pairs(&live_epochs(follower)), pairs(&live_epochs(leader)));
}

/// Goal: a follower fed the leader's bytes, cut anywhere, ends byte-identical to it, with the
/// same epoch cache, and keeps both across reopening (with and without its checkpoint file).
/// Method: a leader over three epochs (1, 3, 4) with plain, zstd and idempotent batches over
/// 2 KB segments; the follower fetches in chunks cut at 1, 60, 61, 62, 150, 333, ... bytes.
#[test]
fn follower_fed_the_leaders_bytes_in_any_cuts_ends_byte_identical() {
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let mut leader = open(dirs[0].path());
    let mut follower = open(dirs[1].path());
    let mut sequence = 0;
    let mut starts = Vec::new();
    for (epoch, batches) in [(1, 15), (3, 20), (4, 12)] {
        leader.become_leader(epoch).expect("leader");
        starts.push((epoch, leader.log_end_offset()));
        for i in 0..batches {
            match i % 3 {
                0 => append(&mut leader, 1 + i % 4, epoch as u64 * 100 + i as u64),
                1 => {
                    let plain = batch(5, i as u64);
                    let mut zstd = batch::recompress(&plain, Compression::Zstd).expect("zstd");
                    leader.append(&mut zstd, 0).expect("append")
                }
                _ => {
                    let info = leader
                        .append(&mut idempotent(2, 7, sequence), 0)
                        .expect("idempotent append");
                    sequence += 2;
                    info
                }
            };
        }
    }
    assert!(leader.segment_count() > 3);
    catch_up(
        &mut follower,
        &leader,
        &[1, 60, 61, 62, 150, 333, 1_000, 4_096, 7, 2_500],
    );
    assert_same_log(&follower, &leader);
    assert_eq!(
        segment_files(dirs[1].path()),
        segment_files(dirs[0].path()),
        "same segments, same bytes"
    );
    assert_eq!(
        pairs(follower.epoch_entries()),
        starts,
        "each epoch from its first batch"
    );
    // Producer state came along: the follower, made leader, answers a retry as a duplicate.
    follower.become_leader(5).expect("leader");
    let retry = follower
        .append(&mut idempotent(2, 7, sequence - 2), 0)
        .expect("retry");
    assert!(retry.duplicate, "the last batch of producer 7 is known");
    let end = follower.log_end_offset();
    drop(follower);

    for recovery_point in [0, end] {
        let (reopened, _) = Log::open(dirs[1].path(), config(), recovery_point, 0).expect("open");
        assert_eq!(pairs(&live_epochs(&reopened)), pairs(&live_epochs(&leader)));
    }
    // A checkpoint that lost its newer entries (an older copy) regains them from the
    // segments recovery scans, as Kafka's recovery assigns epochs from the batches it reads.
    let checkpoint = dirs[1].path().join(LEADER_EPOCH_CHECKPOINT_FILE);
    std::fs::write(&checkpoint, "0\n1\n1 0\n").expect("older checkpoint");
    let (recovered, _) = Log::open(dirs[1].path(), config(), 0, 0).expect("open");
    assert_eq!(
        pairs(&live_epochs(&recovered)),
        pairs(&live_epochs(&leader))
    );
    drop(recovered);
    std::fs::remove_file(&checkpoint).expect("rm");
    let (rebuilt, _) = Log::open(dirs[1].path(), config(), end, 0).expect("open");
    assert_eq!(
        pairs(rebuilt.epoch_entries()),
        starts,
        "rebuilt from the batch headers"
    );
    assert!(
        dirs[1].path().join(LEADER_EPOCH_CHECKPOINT_FILE).exists(),
        "and written again"
    );
}

/// Goal: KIP-101's first case, an uncommitted tail. Method: A leads epoch 1 and writes 10
/// batches; B copies 6; A fails; B leads epoch 2 and writes 4 batches; A returns as follower,
/// asks B where epoch 1 ends (offset 6), truncates there, and fetches B's epoch-2 batches.
#[test]
fn kip_101_follower_truncates_its_uncommitted_tail_to_the_leaders_epoch_end() {
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let mut a = open(dirs[0].path());
    let mut b = open(dirs[1].path());
    a.become_leader(1).expect("leader");
    for i in 0..10 {
        append(&mut a, 1, 100 + i);
    }
    let first_six = a.read(0, 1 << 16).expect("read");
    let six: usize = batch::headers(&first_six)
        .take(6)
        .map(|(_, h)| h.total_bytes())
        .sum();
    b.append_as_follower(&mut BytesMut::from(&first_six[..six]), 0)
        .expect("copy six");
    assert_eq!(b.log_end_offset(), 6);

    b.become_leader(2).expect("leader");
    for i in 0..4 {
        append(&mut b, 2, 200 + i);
    }
    assert_eq!(b.end_offset_for_epoch(1), (1, 6));
    assert_eq!(a.latest_epoch(), Some(1));
    reconcile(&mut a, &b);
    assert_eq!(a.log_end_offset(), 6, "A's offsets 6-9 of epoch 1 are gone");
    assert_eq!(pairs(a.epoch_entries()), [(1, 0)]);
    catch_up(&mut a, &b, &[100]);
    assert_same_log(&a, &b);
    assert_eq!(pairs(a.epoch_entries()), [(1, 0), (2, 6)]);
}

/// Goal: KIP-279's case, two quick failovers that leave replicas diverged in the middle.
/// Method: A leads epoch 1 (offsets 0-1, copied to B) and writes offset 2 alone; B leads epoch
/// 2 and writes its own offset 2; A leads epoch 3 (B down) and writes offsets 3-4. B asks A
/// about epoch 2 and A answers "epoch 1, ending at 3"; epoch 1 ends at 2 in B's log, so B
/// truncates to 2. (KIP-101 alone answered only the offset, 3: B kept its own offset 2 of
/// epoch 2, and the logs diverged for good.)
#[test]
fn kip_279_two_quick_failovers_leave_identical_logs() {
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let mut a = open(dirs[0].path());
    let mut b = open(dirs[1].path());
    a.become_leader(1).expect("leader");
    append(&mut a, 1, 10);
    append(&mut a, 1, 11);
    catch_up(&mut b, &a, &[1 << 16]);
    append(&mut a, 1, 12);

    b.become_leader(2).expect("leader");
    append(&mut b, 1, 20);

    a.become_leader(3).expect("leader");
    append(&mut a, 1, 30);
    append(&mut a, 1, 31);

    assert_eq!(
        a.end_offset_for_epoch(2),
        (1, 3),
        "KIP-279: the epoch answered"
    );
    assert_eq!(b.end_offset_for_epoch(1), (1, 2));
    reconcile(&mut b, &a);
    assert_eq!(b.log_end_offset(), 2, "B's own offset 2 (epoch 2) is gone");
    catch_up(&mut b, &a, &[70]);
    assert_same_log(&b, &a);
    assert_eq!(pairs(b.epoch_entries()), [(1, 0), (3, 3)]);
}

/// Goal: a truncation survives a crash, and producer state follows it. Method: 40 batches
/// over 2 KB segments (idempotent producer 9 writes every fourth), truncate into the middle of
/// a batch several segments back, check the log end, the epochs, the segment files and how
/// retries are answered; then put back the epoch checkpoint from before the truncation (a
/// crash before its write) and reopen trusting the old log end: same log, same answers.
#[test]
fn truncation_survives_a_crash_with_producer_state_right() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path());
    let mut batches = Vec::new();
    let mut sequence = 0;
    for i in 0..40 {
        if i % 10 == 0 {
            log.become_leader(i / 10).expect("leader");
        }
        let info = if i % 4 == 0 {
            let info = log
                .append(&mut idempotent(3, 9, sequence), 0)
                .expect("append");
            sequence += 3;
            info
        } else {
            append(&mut log, 3, i as u64)
        };
        batches.push(info);
    }
    let old_end = log.log_end_offset();
    let checkpoint = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
    let old_checkpoint = std::fs::read(&checkpoint).expect("checkpoint");
    let segments_before = log.segment_count();

    // Batch 25 holds offsets 75-77: truncating at 76 removes it whole.
    assert_eq!(batches[25].base_offset, 75);
    assert!(log.truncate_to(76).expect("truncate"));
    assert_eq!(log.log_end_offset(), 75);
    assert_eq!(pairs(log.epoch_entries()), [(0, 0), (1, 30), (2, 60)]);
    assert!(
        log.segment_count() < segments_before,
        "later segments are deleted"
    );
    assert_eq!(
        segment_files(dir.path()).len(),
        log.segment_count(),
        "and their files"
    );
    let kept = all_batches(&log);
    assert!(batch::headers(&kept).all(|(_, h)| h.next_offset() <= 75));

    let check_producer = |log: &mut Log| {
        // Producer 9's kept batches are 0, 4, ..., 24 (sequences 0 to 20): batch 24 again
        // (sequence 18) is a retry.
        let retry = log
            .append(&mut idempotent(3, 9, 18), 0)
            .expect("retry of a kept batch");
        assert!(retry.duplicate);
        assert_eq!(retry.base_offset, 72);
        // Batch 28 (sequence 21) was truncated: sending it again appends it anew.
        let again = log
            .append(&mut idempotent(3, 9, 21), 0)
            .expect("resend of a truncated batch");
        assert!(!again.duplicate);
        assert_eq!(again.base_offset, 75);
    };
    {
        let dir2 = tempfile::tempdir().expect("tempdir");
        // Check on a copy, so the crash below reopens the truncated state itself.
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            std::fs::copy(&path, dir2.path().join(path.file_name().expect("name"))).expect("cp");
        }
        let (mut copy, _) = Log::open(dir2.path(), config(), 75, 0).expect("open copy");
        check_producer(&mut copy);
    }
    check_producer(&mut log);
    assert!(log.truncate_to(75).expect("undo the check"));
    drop(log);

    std::fs::write(&checkpoint, old_checkpoint).expect("stale checkpoint");
    let (mut reopened, _) = Log::open(dir.path(), config(), old_end, 0).expect("reopen");
    assert_eq!(reopened.log_end_offset(), 75);
    assert!(
        all_batches(&reopened) == kept,
        "the truncated log, byte for byte"
    );
    assert_eq!(pairs(reopened.epoch_entries()), [(0, 0), (1, 30), (2, 60)]);
    check_producer(&mut reopened);
}

/// Goal: truncation at and below the first segment, and past the end, as Kafka's.
/// Method: a log whose start DeleteRecords moved to 31 is truncated to 40, then to 10 (below
/// its first segment: emptied, restarted at 10), then to 99 (past the end: only an epoch
/// entry for an empty epoch goes).
#[test]
fn truncation_below_the_first_segment_restarts_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path());
    log.become_leader(0).expect("leader");
    for i in 0..20 {
        append(&mut log, 3, i);
    }
    log.become_leader(1).expect("leader");
    for i in 0..10 {
        append(&mut log, 3, 100 + i);
    }
    assert_eq!(log.delete_records_before(31).expect("delete"), 31);
    assert_eq!(pairs(log.epoch_entries()), [(0, 31), (1, 60)]);
    assert!(log.truncate_to(40).expect("truncate"));
    assert_eq!(log.log_end_offset(), 39);
    assert_eq!(log.log_start_offset(), 31);
    assert_eq!(pairs(log.epoch_entries()), [(0, 31)]);

    assert!(log.truncate_to(10).expect("below the first segment"));
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 10));
    assert!(log.epoch_entries().is_empty());
    assert_eq!(segment_files(dir.path()).len(), 1);
    log.become_leader(2).expect("leader");
    assert_eq!(append(&mut log, 2, 7).base_offset, 10);
    log.become_leader(3).expect("leader");
    assert!(!log.truncate_to(99).expect("past the end"));
    assert_eq!(
        pairs(log.epoch_entries()),
        [(2, 10)],
        "epoch 3 wrote nothing"
    );
    drop(log);
    let (log, _) = Log::open(dir.path(), config(), 0, 0).expect("reopen");
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (10, 12));
}

/// Goal: what a follower refuses, it refuses whole, and a cut tail is no error. Method: feed
/// a batch that overlaps the log, one with a bad CRC after a good one, one too short to be a
/// batch, and nothing at all.
#[test]
fn follower_appends_refuse_overlaps_and_corruption_whole() {
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let mut leader = open(dirs[0].path());
    let mut follower = open(dirs[1].path());
    leader.become_leader(4).expect("leader");
    for i in 0..5 {
        append(&mut leader, 2, i);
    }
    let bytes = leader.read(0, 1 << 16).expect("read");
    let first = BatchHeader::parse(&bytes).expect("header").total_bytes();
    follower
        .append_as_follower(&mut BytesMut::from(&bytes[..first]), 0)
        .expect("first batch");
    let overlap = follower.append_as_follower(&mut BytesMut::from(&bytes[..]), 0);
    assert!(
        matches!(
            overlap,
            Err(BrokerError::UnexpectedAppendOffset {
                offset: 0,
                expected_min: 2
            })
        ),
        "{overlap:?}"
    );
    let mut corrupt = BytesMut::from(&bytes[first..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert!(matches!(
        follower.append_as_follower(&mut corrupt, 0),
        Err(BrokerError::CorruptMessage(_))
    ));
    assert_eq!(
        follower.log_end_offset(),
        2,
        "nothing of a bad fetch is appended"
    );
    for empty in [&bytes[first..first + 30], &bytes[..0]] {
        let info = follower
            .append_as_follower(&mut BytesMut::from(empty), 0)
            .expect("a cut tail is no error");
        assert_eq!((info.base_offset, info.last_offset), (2, 1));
    }
    assert_eq!(follower.log_end_offset(), 2);
    // Gaps are allowed (a compacted leader has them): offsets 4-5 follow 0-1 directly.
    let later = leader.read(4, 1).expect("read");
    let info = follower
        .append_as_follower(&mut BytesMut::from(&later[..]), 0)
        .expect("gap");
    assert_eq!((info.base_offset, follower.log_end_offset()), (4, 6));
    assert_eq!(pairs(follower.epoch_entries()), [(4, 0)]);
}

/// Goal: a sync prepared before a truncation does not make the records written after it look
/// durable. Method: sync to 20, append to 30, prepare a sync, truncate to 10, append to 30
/// again, then report the sync done: only offsets below 10 are proven.
#[test]
fn a_sync_prepared_before_a_truncation_proves_nothing_above_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = open(dir.path());
    for i in 0..10 {
        append(&mut log, 2, i);
    }
    let first = log.prepare_flush();
    first.run().expect("sync");
    assert_eq!(log.flushed(first.end), 20);
    for i in 0..5 {
        append(&mut log, 2, 20 + i);
    }
    let job = log.prepare_flush();
    assert_eq!(job.end, 30);
    log.truncate_to(10).expect("truncate");
    assert_eq!(log.recovery_point(), 10, "the truncation lowers it");
    for i in 0..10 {
        append(&mut log, 2, 50 + i);
    }
    job.run().expect("sync");
    assert_eq!(
        log.flushed(job.end),
        10,
        "offsets 10-29 are new since the job"
    );
    let next = log.prepare_flush();
    next.run().expect("sync");
    assert_eq!(log.flushed(next.end), 30);
}

/// Goal: retention and DeleteRecords move the first epoch entry up with the log start.
#[test]
fn retention_moves_the_first_epoch_entry_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = TopicConfig {
        retention_bytes: 3_000,
        ..config()
    };
    let (mut log, _) = Log::open(dir.path(), config.clone(), 0, 0).expect("open");
    log.become_leader(2).expect("leader");
    for i in 0..30 {
        append(&mut log, 3, i);
    }
    log.become_leader(5).expect("leader");
    for i in 0..3 {
        append(&mut log, 3, i);
    }
    assert!(log.apply_retention(0, i64::MAX) > 0);
    let start = log.log_start_offset();
    assert!(start > 0);
    assert_eq!(pairs(log.epoch_entries()), [(2, start), (5, 90)]);
    drop(log);
    let (log, _) = Log::open(dir.path(), config, 0, 0).expect("reopen");
    assert_eq!(pairs(log.epoch_entries()), [(2, start), (5, 90)]);
}

/// One step of the replication model the property test runs.
#[derive(Debug, Clone)]
enum Step {
    /// The leader appends `batches` batches of `records` records each.
    Append { batches: usize, records: usize },
    /// The follower fetches up to `fetches` times, each response cut after `cut` bytes.
    Replicate { fetches: usize, cut: usize },
    /// The follower becomes leader in the next epoch, however far behind it is; the old
    /// leader follows it and must reconcile first.
    Failover,
    /// The follower truncates `back` offsets below its end (to its high watermark, say).
    FollowerTruncate { back: i64 },
    /// A replica's process restarts: its log is reopened (the leader is told it leads again).
    Restart { leader: bool, trust: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..4, 1usize..6).prop_map(|(batches, records)| Step::Append { batches, records }),
        3 => (0usize..4, 1usize..900).prop_map(|(fetches, cut)| Step::Replicate { fetches, cut }),
        2 => Just(Step::Failover),
        1 => (0i64..12).prop_map(|back| Step::FollowerTruncate { back }),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(leader, trust)| Step::Restart { leader, trust }),
    ]
}

/// Two replicas of one partition, driven by [`Step`]s.
struct Cluster {
    dirs: [tempfile::TempDir; 2],
    logs: [Option<Log>; 2],
    leader: usize,
    epoch: i32,
    /// Whether the follower must reconcile with the leader before it fetches.
    diverged: bool,
    tag: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let dirs = [
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        ];
        let logs = [Some(open(dirs[0].path())), Some(open(dirs[1].path()))];
        let mut cluster = Cluster {
            dirs,
            logs,
            leader: 0,
            epoch: 0,
            diverged: false,
            tag: 0,
        };
        cluster.log(0).become_leader(0).expect("leader");
        cluster
    }

    fn log(&mut self, i: usize) -> &mut Log {
        self.logs[i].as_mut().expect("open")
    }

    /// (follower, leader), borrowed together.
    fn pair(&mut self) -> (&mut Log, &Log) {
        let [a, b] = &mut self.logs;
        let (a, b) = (a.as_mut().expect("open"), b.as_mut().expect("open"));
        match self.leader {
            0 => (b, a),
            _ => (a, b),
        }
    }

    fn run(&mut self, step: &Step) {
        let follower = 1 - self.leader;
        match *step {
            Step::Append { batches, records } => {
                for _ in 0..batches {
                    self.tag += 1;
                    let tag = self.tag;
                    append(self.log(self.leader), records, tag);
                }
            }
            Step::Replicate { fetches, cut } => {
                self.reconcile_if_diverged();
                let (follower, leader) = self.pair();
                for _ in 0..fetches {
                    let end = follower.log_end_offset();
                    if end >= leader.log_end_offset() {
                        break;
                    }
                    let bytes = leader.read(end, 1 << 16).expect("read");
                    let mut chunk = BytesMut::from(&bytes[..cut.min(bytes.len())]);
                    follower.append_as_follower(&mut chunk, 0).expect("append");
                }
            }
            Step::Failover => {
                self.epoch += 1;
                self.leader = follower;
                let epoch = self.epoch;
                self.log(follower).become_leader(epoch).expect("leader");
                self.diverged = true;
            }
            Step::FollowerTruncate { back } => {
                let log = self.log(follower);
                let target = (log.log_end_offset() - back).max(0);
                log.truncate_to(target).expect("truncate");
            }
            Step::Restart { leader, trust } => {
                let i = if leader { self.leader } else { follower };
                let log = self.logs[i].take().expect("open");
                let recovery_point = if trust { log.log_end_offset() } else { 0 };
                drop(log);
                let (log, _) =
                    Log::open(self.dirs[i].path(), config(), recovery_point, 0).expect("reopen");
                self.logs[i] = Some(log);
                if leader {
                    let epoch = self.epoch;
                    self.log(i).become_leader(epoch).expect("leader again");
                }
            }
        }
    }

    fn reconcile_if_diverged(&mut self) {
        if std::mem::take(&mut self.diverged) {
            let (follower, leader) = self.pair();
            reconcile(follower, leader);
        }
    }

    /// The follower reconciles and catches up; then it must be the leader's copy.
    fn settle(&mut self) {
        self.reconcile_if_diverged();
        let (follower, leader) = self.pair();
        catch_up(follower, leader, &[1 << 16]);
        assert_same_log(follower, leader);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the sequence of appends, leader changes (to replicas however far behind),
    /// partial fetches cut anywhere, truncations and restarts, a follower that reconciles by
    /// leader epoch and catches up holds exactly the leader's batches and epochs.
    #[test]
    fn follower_that_reconciles_by_epoch_ends_equal_to_its_leader(
        steps in proptest::collection::vec(step(), 1..30),
    ) {
        let mut cluster = Cluster::new();
        for step in &steps {
            cluster.run(step);
        }
        cluster.settle();
    }
}
