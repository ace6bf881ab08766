//! End-to-end test of consumer groups on a 3-node `eddy broker` cluster with confluent-kafka
//! (librdkafka): the group's coordinator (the leader of its `__consumer_offsets` partition) is
//! killed with SIGKILL, and the committed offsets are served by the broker that leads the
//! partition next, loaded from its replica.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eddy_tests::{
    arg, free_port, kafka_tool_command, parse_tool_output, read_json_lines, wait_for, EddyProcess,
};
use serde_json::Value;

/// How long the cluster may take to elect, create topics or fail over.
const SETTLE: Duration = Duration::from_secs(60);

/// Runs kafka_tool and returns its JSON, or `None` when the client reported a Kafka error
/// (or printed no JSON, as when a future timed out): for steps retried while the cluster
/// settles.
fn try_tool(bootstrap: &str, args: &[&str]) -> Option<Value> {
    let output = kafka_tool_command(bootstrap, args)
        .output()
        .expect("running kafka_tool.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last()?;
    let value: Value = serde_json::from_str(last).ok()?;
    match value.get("kafka_error") {
        Some(error) => {
            eprintln!("kafka_tool {args:?}: {error}; retrying");
            None
        }
        None => Some(value),
    }
}

/// kafka_tool, failing the test on a Kafka error.
fn tool(bootstrap: &str, args: &[&str]) -> Value {
    let output = kafka_tool_command(bootstrap, args)
        .output()
        .expect("running kafka_tool.py");
    let value = parse_tool_output(&output, args);
    assert!(value.get("kafka_error").is_none(), "{args:?}: {value}");
    value
}

/// The committed offsets `kafka_tool committed` printed, by partition (-1001: none).
fn by_partition(committed: &Value) -> BTreeMap<i64, i64> {
    committed
        .as_array()
        .expect("a list of partitions")
        .iter()
        .map(|p| {
            let partition = p["partition"].as_i64().expect("partition");
            (partition, p["offset"].as_i64().expect("offset"))
        })
        .collect()
}

/// Goal: a consumer group's committed offsets survive the SIGKILL of its coordinator in a
/// 3-node cluster, and a new consumer of the group resumes from them (no record read twice or
/// skipped). Method: three `eddy broker` nodes form a cluster; a topic of 2 partitions
/// replicated 3 times gets 20 records; a consumer of group `billing` reads 12 and commits;
/// the broker DescribeGroups names as coordinator is killed with kill -9; `committed` against
/// the two survivors must return the same offsets (retried while the offsets partition fails
/// over), another broker must be named coordinator, and a new consumer of the group must read
/// exactly the 8 records after the committed offsets.
#[test]
fn committed_offsets_survive_the_coordinators_kill_9() {
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let controllers: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let voters = controllers
        .iter()
        .enumerate()
        .map(|(i, address)| format!("{}@{address}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut brokers: Vec<EddyProcess> = dirs
        .iter()
        .zip(&controllers)
        .enumerate()
        .map(|(i, (dir, controller))| {
            let id = (i + 1).to_string();
            let args = [
                "--node-id",
                id.as_str(),
                "--controller-listen",
                controller.as_str(),
                "--controller-quorum-voters",
                voters.as_str(),
            ];
            EddyProcess::broker(dir.path(), &args)
        })
        .collect();
    let everyone = brokers
        .iter()
        .map(|b| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",");

    // The topic, once all three brokers have registered (a replication factor of 3 is refused
    // before); a retry after a creation that timed out finds it created.
    wait_for(SETTLE, "orders to be created", || {
        let args = [
            "create-topic",
            "--topic",
            "orders",
            "--partitions",
            "2",
            "--replication-factor",
            "3",
        ];
        let output = kafka_tool_command(&everyone, &args)
            .output()
            .expect("running kafka_tool.py");
        let value = parse_tool_output(&output, &args);
        let exists = value["kafka_error"]
            .as_str()
            .is_some_and(|e| e.contains("TOPIC_ALREADY_EXISTS"));
        (value["created"] == "orders" || exists).then_some(())
    });
    let produced = tool(
        &everyone,
        &["produce", "--topic", "orders", "--count", "20", "--keyed"],
    );
    assert_eq!(produced["acked"], 20, "{produced}");

    // A consumer of `billing` reads 12 records and commits (FindCoordinator answers
    // COORDINATOR_NOT_AVAILABLE while __consumer_offsets is created; librdkafka retries).
    let first_out = dirs[0].path().join("first.jsonl");
    let consumed = tool(
        &everyone,
        &[
            "consume",
            "--topic",
            "orders",
            "--group",
            "billing",
            "--count",
            "12",
            "--commit",
            "--out",
            arg(&first_out),
        ],
    );
    assert_eq!(consumed["consumed"], 12, "{consumed}");
    let first = read_json_lines(&first_out);
    assert_eq!(first.len(), 12);
    let committed_args = [
        "committed",
        "--topic",
        "orders",
        "--group",
        "billing",
        "--partitions",
        "2",
    ];
    let before = by_partition(&tool(&everyone, &committed_args));
    let committed_total: i64 = before.values().filter(|o| **o >= 0).sum();
    assert_eq!(
        committed_total, 12,
        "each partition's offset counts the records read from it: {before:?}"
    );

    // Kill the coordinator.
    let coordinator = wait_for(SETTLE, "the coordinator of billing", || {
        try_tool(&everyone, &["coordinator", "--group", "billing"])
    });
    let killed = coordinator["id"].as_i64().expect("a node id");
    assert!((1..=3).contains(&killed), "{coordinator}");
    let victim = &mut brokers[killed as usize - 1];
    assert_eq!(coordinator["port"], victim.port, "{coordinator}");
    victim.kill9();
    let survivors = brokers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as i64 + 1 != killed)
        .map(|(_, b)| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",");

    // The offsets are still there, served by the partition's next leader.
    let after = wait_for(SETTLE, "the committed offsets after the kill", || {
        try_tool(&survivors, &committed_args).map(|v| by_partition(&v))
    });
    assert_eq!(
        after, before,
        "the committed offsets survive the coordinator"
    );
    let next = wait_for(SETTLE, "a new coordinator", || {
        try_tool(&survivors, &["coordinator", "--group", "billing"])
            .filter(|c| c["id"].as_i64() != Some(killed))
    });
    assert!(next["id"].as_i64().is_some(), "{next}");

    // A new consumer of the group resumes from them: the 8 records after, none twice.
    let second_out = dirs[0].path().join("second.jsonl");
    let resumed = tool(
        &survivors,
        &[
            "consume",
            "--topic",
            "orders",
            "--group",
            "billing",
            "--count",
            "8",
            "--commit",
            "--idle-seconds",
            "5",
            "--out",
            arg(&second_out),
        ],
    );
    assert_eq!(resumed["consumed"], 8, "{resumed}");
    let second = read_json_lines(&second_out);
    for (partition, offset) in &before {
        let resumed_at = second
            .iter()
            .filter(|r| r["partition"].as_i64() == Some(*partition))
            .filter_map(|r| r["offset"].as_i64())
            .min();
        if let Some(resumed_at) = resumed_at {
            assert_eq!(
                resumed_at,
                (*offset).max(0),
                "partition {partition} resumes at its committed offset"
            );
        }
    }
    let read: BTreeSet<(i64, i64)> = first
        .iter()
        .chain(&second)
        .map(|r| {
            let partition = r["partition"].as_i64().expect("partition");
            (partition, r["offset"].as_i64().expect("offset"))
        })
        .collect();
    assert_eq!(
        read.len(),
        20,
        "every record read exactly once across the two consumers"
    );
}
