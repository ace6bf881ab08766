//! End-to-end tests of `eddy broker` with real Kafka clients.
//!
//! Each test starts the real binary on a free loopback port with a temporary data folder and
//! drives it with kcat and confluent-kafka (librdkafka), then checks what the clients saw.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use eddy_broker::log::batch::Compression;
use eddy_broker::partitioner::partition_for_key;
use eddy_tests::{
    arg, kafka_tool, kafka_tool_command, kcat, read_json_lines, wait_for, EddyProcess,
};
use serde_json::Value;

fn as_i64(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("field {field} in {v}"))
}

/// Goal: the everyday path works with real clients and Eddy partitions exactly as librdkafka.
/// Method: create a 3-partition topic, produce 10,000 keyed records with murmur2_random, read
/// them with kcat and with a consumer group that commits, then check offsets and lag.
#[test]
fn kcat_and_confluent_kafka_produce_consume_and_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(dir.path(), &[]);
    let bootstrap = broker.bootstrap();
    kafka_tool(
        &bootstrap,
        &["create-topic", "--topic", "orders", "--partitions", "3"],
    );

    let acked_path = dir.path().join("acked.jsonl");
    let produced = kafka_tool(
        &bootstrap,
        &[
            "produce",
            "--topic",
            "orders",
            "--count",
            "10000",
            "--keyed",
            "--out",
            arg(&acked_path),
        ],
    );
    assert_eq!(produced["acked"], 10_000, "{produced}");
    let acked = read_json_lines(&acked_path);
    assert_eq!(acked.len(), 10_000);
    for record in &acked {
        let key = record["key"].as_str().expect("keyed");
        assert_eq!(
            as_i64(record, "partition") as i32,
            partition_for_key(key.as_bytes(), 3),
            "librdkafka and Eddy place key {key} differently"
        );
    }

    let listing = Command::new(kcat())
        .args(["-b", &bootstrap, "-L", "-t", "orders"])
        .output()
        .expect("kcat -L");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("topic \"orders\" with 3 partitions"),
        "{listing}"
    );
    let read = Command::new(kcat())
        .args([
            "-b", &bootstrap, "-C", "-t", "orders", "-e", "-q", "-f", "%k\n",
        ])
        .output()
        .expect("kcat -C");
    let keys: HashSet<String> = String::from_utf8_lossy(&read.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(keys.len(), 10_000, "kcat reads every record once");

    let consumed_path = dir.path().join("consumed.jsonl");
    let consumed = kafka_tool(
        &bootstrap,
        &[
            "consume",
            "--topic",
            "orders",
            "--group",
            "g1",
            "--count",
            "10000",
            "--commit",
            "--out",
            arg(&consumed_path),
        ],
    );
    assert_eq!(consumed["consumed"], 10_000, "{consumed}");
    let records = read_json_lines(&consumed_path);
    let unique: HashSet<String> = records.iter().map(|r| r["key"].to_string()).collect();
    assert_eq!(unique.len(), 10_000);
    let committed = kafka_tool(
        &bootstrap,
        &[
            "committed",
            "--topic",
            "orders",
            "--group",
            "g1",
            "--partitions",
            "3",
        ],
    );
    let watermarks = kafka_tool(
        &bootstrap,
        &["watermarks", "--topic", "orders", "--partitions", "3"],
    );
    let committed: Vec<i64> = committed
        .as_array()
        .expect("list")
        .iter()
        .map(|c| as_i64(c, "offset"))
        .collect();
    let highs: Vec<i64> = watermarks
        .as_array()
        .expect("list")
        .iter()
        .map(|w| as_i64(w, "high"))
        .collect();
    assert_eq!(committed, highs, "the group committed up to the end: lag 0");
    assert_eq!(highs.iter().sum::<i64>(), 10_000);
}

/// Goal: with fsync before ack, kill -9 under load loses no acknowledged record and the group
/// resumes from its committed offsets. Method: produce with acks=all in a loop while recording
/// each acknowledgement, commit a group's progress, kill -9 the broker, restart it, read back.
#[test]
fn kill9_under_produce_load_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut broker = EddyProcess::broker(&data, &["--flush-messages", "1"]);
    let bootstrap = broker.bootstrap();
    kafka_tool(
        &bootstrap,
        &["create-topic", "--topic", "load", "--partitions", "3"],
    );

    // A first batch, consumed and committed by a group before the crash.
    kafka_tool(
        &bootstrap,
        &["produce", "--topic", "load", "--count", "3000", "--keyed"],
    );
    let first = kafka_tool(
        &bootstrap,
        &[
            "consume", "--topic", "load", "--group", "resume", "--count", "3000", "--commit",
        ],
    );
    assert_eq!(first["consumed"], 3000, "{first}");
    let committed = kafka_tool(
        &bootstrap,
        &[
            "committed",
            "--topic",
            "load",
            "--group",
            "resume",
            "--partitions",
            "3",
        ],
    );

    let acked_path = dir.path().join("acked.jsonl");
    let mut producer = kafka_tool_command(
        &bootstrap,
        &[
            "produce",
            "--topic",
            "load",
            "--forever",
            "--keyed",
            "--out",
            arg(&acked_path),
        ],
    )
    .spawn()
    .expect("start producer");
    wait_for(
        Duration::from_secs(60),
        "5,000 acknowledged records under load",
        || (read_json_lines(&acked_path).len() >= 5_000).then_some(()),
    );
    broker.kill9();
    std::thread::sleep(Duration::from_millis(300));
    let _ = producer.kill();
    let _ = producer.wait();
    let acked = read_json_lines(&acked_path);
    assert!(acked.len() >= 5_000);

    broker.restart();
    let bootstrap = broker.bootstrap();
    let all_path = dir.path().join("all.jsonl");
    let all = kafka_tool(
        &bootstrap,
        &[
            "consume",
            "--topic",
            "load",
            "--group",
            "verify",
            "--out",
            arg(&all_path),
            "--idle-seconds",
            "4",
        ],
    );
    let stored = read_json_lines(&all_path);
    assert!(stored.len() >= 3000 + acked.len(), "{all}");
    let mut at: HashMap<(i64, i64), String> = HashMap::new();
    let mut last_offset: BTreeMap<i64, i64> = BTreeMap::new();
    for r in &stored {
        let (p, o) = (as_i64(r, "partition"), as_i64(r, "offset"));
        let previous = last_offset.insert(p, o);
        assert!(
            previous.is_none_or(|prev| prev < o),
            "offsets increase within partition {p}"
        );
        assert!(
            at.insert((p, o), r["value"].as_str().expect("value").to_string())
                .is_none(),
            "({p},{o}) read twice"
        );
    }
    for r in &acked {
        let key = (as_i64(r, "partition"), as_i64(r, "offset"));
        assert_eq!(
            at.get(&key).map(String::as_str),
            r["value"].as_str(),
            "acked record {r} is missing or changed"
        );
    }

    // The group resumes where it committed.
    let resumed_path = dir.path().join("resumed.jsonl");
    kafka_tool(
        &bootstrap,
        &[
            "consume",
            "--topic",
            "load",
            "--group",
            "resume",
            "--count",
            "100",
            "--out",
            arg(&resumed_path),
        ],
    );
    let committed: HashMap<i64, i64> = committed
        .as_array()
        .expect("list")
        .iter()
        .map(|c| (as_i64(c, "partition"), as_i64(c, "offset")))
        .collect();
    let mut first_per_partition: HashMap<i64, i64> = HashMap::new();
    for r in read_json_lines(&resumed_path) {
        first_per_partition
            .entry(as_i64(&r, "partition"))
            .or_insert(as_i64(&r, "offset"));
    }
    assert!(!first_per_partition.is_empty());
    for (p, first) in first_per_partition {
        assert_eq!(
            first, committed[&p],
            "partition {p} resumes at its committed offset"
        );
    }
}

fn active_segment(partition_dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(partition_dir)
        .expect("partition dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

/// Goal: a torn or garbage tail never stops the broker nor leaks into reads. Method: five rounds
/// of kill -9, then truncate the active segment at a random point or append random bytes; the
/// broker must start, serve a prefix of what was written, and accept new records after it.
#[test]
fn torn_tail_recovers_to_the_valid_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut broker = EddyProcess::broker(&data, &[]);
    kafka_tool(
        &broker.bootstrap(),
        &["create-topic", "--topic", "torn", "--partitions", "1"],
    );
    let mut written = 0;
    for round in 0..5 {
        let produced = kafka_tool(
            &broker.bootstrap(),
            &[
                "produce",
                "--topic",
                "torn",
                "--count",
                "2000",
                "--linger-ms",
                "1",
            ],
        );
        assert_eq!(produced["acked"], 2000, "round {round}: {produced}");
        written += 2000;
        broker.kill9();
        let segment = active_segment(&data.join("torn-0"));
        let len = std::fs::metadata(&segment).expect("meta").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .append(true)
            .open(&segment)
            .expect("open segment");
        if round % 2 == 0 {
            let cut = rand::random_range(1..len.min(5000));
            file.set_len(len - cut).expect("truncate");
        } else {
            let garbage: Vec<u8> = (0..rand::random_range(1..300))
                .map(|_| rand::random::<u8>())
                .collect();
            (&file).write_all(&garbage).expect("append garbage");
        }
        drop(file);
        broker.restart();
        let out = dir.path().join(format!("round{round}.jsonl"));
        kafka_tool(
            &broker.bootstrap(),
            &[
                "consume",
                "--topic",
                "torn",
                "--group",
                &format!("r{round}"),
                "--idle-seconds",
                "2",
                "--out",
                arg(&out),
            ],
        );
        let records = read_json_lines(&out);
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                as_i64(r, "offset"),
                i as i64,
                "round {round}: offsets are a gapless prefix"
            );
        }
        assert!(records.len() <= written && records.len() >= written.saturating_sub(2000));
        written = records.len();
    }
    let produced = kafka_tool(
        &broker.bootstrap(),
        &["produce", "--topic", "torn", "--count", "10"],
    );
    assert_eq!(
        produced["acked"], 10,
        "the recovered log accepts new records"
    );
    let marks = kafka_tool(&broker.bootstrap(), &["watermarks", "--topic", "torn"]);
    assert_eq!(as_i64(&marks[0], "high"), written as i64 + 10);
}

/// Goal: retention deletes whole old segments. Method: a topic with small segments and
/// retention.bytes, a broker checking every 200 ms; after producing, the log start offset moves
/// up and a consumer from the beginning starts there.
#[test]
fn retention_deletes_old_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(dir.path(), &["--retention-check-interval-ms", "200"]);
    let bootstrap = broker.bootstrap();
    kafka_tool(
        &bootstrap,
        &[
            "create-topic",
            "--topic",
            "short",
            "--config",
            "segment.bytes=10000",
            "--config",
            "retention.bytes=30000",
        ],
    );
    kafka_tool(
        &bootstrap,
        &[
            "produce",
            "--topic",
            "short",
            "--count",
            "5000",
            "--value-bytes",
            "100",
            "--batch-bytes",
            "4000",
        ],
    );
    // Retention runs while records arrive, so the log start moves in steps: wait until it has
    // moved and then stays put across two checks.
    let mut previous = -1;
    let low = wait_for(
        Duration::from_secs(20),
        "retention to move the log start and settle",
        || {
            std::thread::sleep(Duration::from_millis(400));
            let marks = kafka_tool(&bootstrap, &["watermarks", "--topic", "short"]);
            let low = as_i64(&marks[0], "low");
            let settled = low > 0 && low == previous;
            previous = low;
            settled.then_some(low)
        },
    );
    let out = dir.path().join("left.jsonl");
    kafka_tool(
        &bootstrap,
        &[
            "consume",
            "--topic",
            "short",
            "--group",
            "after",
            "--out",
            arg(&out),
        ],
    );
    let left = read_json_lines(&out);
    assert_eq!(
        as_i64(&left[0], "offset"),
        low,
        "reading from the beginning starts at the new log start"
    );
    assert_eq!(as_i64(left.last().expect("some"), "offset"), 4999);
    assert!(left.len() < 5000);
}

/// Goal: compaction keeps the newest record per key with its offset unchanged. Method: a
/// compacted topic with small segments; 20 rounds over 10 keys; wait until a full read holds
/// just about one record per key, then compare each key's value and offset with the last acked.
#[test]
fn compaction_keeps_the_latest_record_per_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(dir.path(), &["--retention-check-interval-ms", "200"]);
    let bootstrap = broker.bootstrap();
    kafka_tool(
        &bootstrap,
        &[
            "create-topic",
            "--topic",
            "latest",
            "--config",
            "cleanup.policy=compact",
            "--config",
            "segment.bytes=2000",
        ],
    );
    let acked_path = dir.path().join("acked.jsonl");
    for _ in 0..20 {
        // Keys key-0 .. key-9 each round: --count 10 --keyed restarts numbering at 0.
        kafka_tool(
            &bootstrap,
            &[
                "produce",
                "--topic",
                "latest",
                "--count",
                "10",
                "--keyed",
                "--out",
                arg(&acked_path),
            ],
        );
    }
    let acked = read_json_lines(&acked_path);
    assert_eq!(acked.len(), 200);
    let mut newest: HashMap<String, (i64, String)> = HashMap::new();
    for r in &acked {
        newest.insert(
            r["key"].as_str().expect("key").into(),
            (as_i64(r, "offset"), r["value"].as_str().expect("v").into()),
        );
    }
    let mut round = 0;
    let records = wait_for(
        Duration::from_secs(30),
        "compaction to remove superseded records",
        || {
            round += 1;
            let out = dir.path().join(format!("read{round}.jsonl"));
            kafka_tool(
                &bootstrap,
                &[
                    "consume",
                    "--topic",
                    "latest",
                    "--group",
                    &format!("c{round}"),
                    "--idle-seconds",
                    "1",
                    "--out",
                    arg(&out),
                ],
            );
            let records = read_json_lines(&out);
            (records.len() < 60).then_some(records)
        },
    );
    let mut seen: HashMap<String, (i64, String)> = HashMap::new();
    let mut previous = -1;
    for r in &records {
        let offset = as_i64(r, "offset");
        assert!(offset > previous, "offsets still increase");
        previous = offset;
        seen.insert(
            r["key"].as_str().expect("key").into(),
            (offset, r["value"].as_str().expect("v").into()),
        );
    }
    assert_eq!(
        seen, newest,
        "each key's newest record survives at its original offset"
    );
}

/// Goal: bad input gets Kafka's answers and never takes the broker down. Method: a record over
/// max.message.bytes gets MSG_SIZE_TOO_LARGE and the same producer then succeeds; a frame
/// claiming 200 MB and a frame of garbage close only their own connections.
#[test]
fn bad_input_is_refused_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(dir.path(), &[]);
    let bootstrap = broker.bootstrap();
    kafka_tool(
        &bootstrap,
        &[
            "create-topic",
            "--topic",
            "small",
            "--config",
            "max.message.bytes=2000",
        ],
    );
    let big = kafka_tool(
        &bootstrap,
        &[
            "produce",
            "--topic",
            "small",
            "--count",
            "1",
            "--value-bytes",
            "5000",
        ],
    );
    assert_eq!(big["failed"], 1, "{big}");
    assert_eq!(big["errors"][0], "MSG_SIZE_TOO_LARGE", "{big}");
    let ok = kafka_tool(&bootstrap, &["produce", "--topic", "small", "--count", "3"]);
    assert_eq!(ok["acked"], 3, "{ok}");

    use std::io::Read;
    for frame in [
        &(200_000_000i32).to_be_bytes()[..],
        &[0, 0, 0, 12, 0x7f, 0x7f, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4][..],
    ] {
        let mut socket = std::net::TcpStream::connect(&bootstrap).expect("connect");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        socket.write_all(frame).expect("write");
        let mut buf = [0u8; 16];
        assert_eq!(
            socket.read(&mut buf).expect("the broker closes, not hangs"),
            0
        );
    }
    let marks = kafka_tool(&bootstrap, &["watermarks", "--topic", "small"]);
    assert_eq!(as_i64(&marks[0], "high"), 3, "the broker still serves");
    let unknown = Command::new(kcat())
        .args(["-b", &bootstrap, "-C", "-t", "small", "-p", "7", "-e", "-q"])
        .output()
        .expect("kcat");
    assert!(
        !unknown.status.success(),
        "a missing partition is an error for the client"
    );
}

fn last_assignment(path: &Path) -> Option<Vec<i64>> {
    let lines = read_json_lines(path);
    let last = lines.last()?;
    Some(
        last["assignment"]
            .as_array()?
            .iter()
            .filter_map(Value::as_i64)
            .collect(),
    )
}

/// Goal: groups rebalance when a member joins, dies and leaves. Method: member A takes all three
/// partitions; B joins and they split them; B is killed with SIGKILL and after its session
/// timeout A owns all three again.
#[test]
fn group_rebalances_when_members_join_and_die() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(dir.path(), &[]);
    let bootstrap = broker.bootstrap();
    kafka_tool(
        &bootstrap,
        &["create-topic", "--topic", "work", "--partitions", "3"],
    );
    let a_out = dir.path().join("a.jsonl");
    let b_out = dir.path().join("b.jsonl");
    let member = |out: &Path, strategy: &str| {
        kafka_tool_command(
            &bootstrap,
            &[
                "member",
                "--topic",
                "work",
                "--group",
                "crew",
                "--strategy",
                strategy,
                "--seconds",
                "60",
                "--out",
                arg(&out),
            ],
        )
        .spawn()
        .expect("member")
    };
    let mut a = member(&a_out, "roundrobin");
    wait_for(Duration::from_secs(30), "A to own all partitions", || {
        (last_assignment(&a_out)? == vec![0, 1, 2]).then_some(())
    });
    let mut b = member(&b_out, "roundrobin");
    wait_for(
        Duration::from_secs(30),
        "A and B to split the partitions",
        || {
            let (mine, theirs) = (last_assignment(&a_out)?, last_assignment(&b_out)?);
            let mut all: Vec<i64> = mine.iter().chain(&theirs).copied().collect();
            all.sort();
            (!mine.is_empty() && !theirs.is_empty() && all == vec![0, 1, 2]).then_some(())
        },
    );
    let _ = b.kill();
    let _ = b.wait();
    wait_for(
        Duration::from_secs(30),
        "A to take B's partitions after B's session times out",
        || (last_assignment(&a_out)? == vec![0, 1, 2]).then_some(()),
    );
    let _ = a.kill();
    let _ = a.wait();
}

/// Goal: compressed batches, acks=0 and idempotent producers work, and topic compression.type
/// is honoured. Method: produce with each codec (one topic recompressing to zstd), with acks=0
/// and with enable.idempotence, then read every record back.
#[test]
fn compression_acks_zero_and_idempotence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(dir.path(), &[]);
    let bootstrap = broker.bootstrap();
    kafka_tool(
        &bootstrap,
        &[
            "create-topic",
            "--topic",
            "packed",
            "--config",
            "compression.type=zstd",
        ],
    );
    let mut expected = 0;
    for codec in ["gzip", "snappy", "lz4", "zstd", "none"] {
        for topic in ["packed", "plain"] {
            let produced = kafka_tool(
                &bootstrap,
                &[
                    "produce",
                    "--topic",
                    topic,
                    "--count",
                    "500",
                    "--compression",
                    codec,
                    "--value-bytes",
                    "200",
                ],
            );
            assert_eq!(produced["acked"], 500, "{codec}: {produced}");
        }
        expected += 500;
    }
    let idempotent = kafka_tool(
        &bootstrap,
        &[
            "produce",
            "--topic",
            "plain",
            "--count",
            "500",
            "--idempotence",
        ],
    );
    assert_eq!(idempotent["acked"], 500, "{idempotent}");
    let unacknowledged = kafka_tool(
        &bootstrap,
        &[
            "produce", "--topic", "plain", "--count", "500", "--acks", "0",
        ],
    );
    assert_eq!(unacknowledged["failed"], 0, "{unacknowledged}");
    for (topic, count) in [("packed", expected), ("plain", expected + 1000)] {
        wait_for(
            Duration::from_secs(20),
            "every record to be readable",
            || {
                let marks = kafka_tool(&bootstrap, &["watermarks", "--topic", topic]);
                (as_i64(&marks[0], "high") == count).then_some(())
            },
        );
        let out = dir.path().join(format!("{topic}.jsonl"));
        kafka_tool(
            &bootstrap,
            &[
                "consume",
                "--topic",
                topic,
                "--group",
                "check",
                "--out",
                arg(&out),
            ],
        );
        assert_eq!(read_json_lines(&out).len() as i64, count, "{topic}");
    }
    let packed =
        std::fs::read(dir.path().join("packed-0").join(format!("{:020}.log", 0))).expect("segment");
    let header = eddy_broker::log::batch::validate(&packed).expect("first stored batch is valid");
    assert_eq!(
        header.compression(),
        Compression::Zstd,
        "stored recompressed with zstd"
    );
}

/// Goal: the admin and lookup APIs answer as Kafka's do. Method: describe a topic's configs
/// (override and default), look offsets up by timestamp, delete the topic and see it gone.
#[test]
fn describe_configs_offsets_for_times_and_delete_topic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(dir.path(), &["--auto-create-topics", "false"]);
    let bootstrap = broker.bootstrap();
    kafka_tool(
        &bootstrap,
        &[
            "create-topic",
            "--topic",
            "admin",
            "--config",
            "retention.ms=60000",
        ],
    );
    let configs = kafka_tool(&bootstrap, &["describe-configs", "--topic", "admin"]);
    assert_eq!(configs["retention.ms"], "60000", "{configs}");
    assert_eq!(configs["cleanup.policy"], "delete", "{configs}");

    let base = 1_700_000_000_000i64;
    let produced = kafka_tool(
        &bootstrap,
        &[
            "produce",
            "--topic",
            "admin",
            "--count",
            "1000",
            "--batch-bytes",
            "2000",
            "--timestamp-ms",
            &base.to_string(),
        ],
    );
    assert_eq!(produced["acked"], 1000);
    let found = kafka_tool(
        &bootstrap,
        &[
            "offsets-for-times",
            "--topic",
            "admin",
            "--timestamp-ms",
            &(base + 737).to_string(),
        ],
    );
    assert_eq!(as_i64(&found[0], "offset"), 737, "{found}");

    kafka_tool(&bootstrap, &["delete-topic", "--topic", "admin"]);
    assert!(
        !dir.path().join("admin-0").exists(),
        "the partition's data is removed"
    );
    let listing = Command::new(kcat())
        .args(["-b", &bootstrap, "-L"])
        .output()
        .expect("kcat -L");
    assert!(
        !String::from_utf8_lossy(&listing.stdout).contains("\"admin\""),
        "the topic is gone"
    );
}
