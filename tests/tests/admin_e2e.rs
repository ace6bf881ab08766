//! End-to-end tests of the topic and cluster admin APIs of `eddy broker` with confluent-kafka's
//! AdminClient (librdkafka).
//!
//! Each test starts the real binary on a free loopback port with a temporary data folder, drives
//! it through `tests/clients/kafka_tool.py`, restarts it, and checks what the clients see.

use eddy_tests::{kafka_tool, EddyProcess};
use serde_json::Value;

fn as_i64(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("field {field} in {v}"))
}

/// (value, source) of one config in a `describe-config-sources` answer.
fn source<'a>(configs: &'a Value, name: &str) -> (&'a str, &'a str) {
    let entry = &configs[name];
    (
        entry["value"].as_str().unwrap_or_default(),
        entry["source"].as_str().unwrap_or_default(),
    )
}

/// Goal: an admin tool can grow a topic, delete its old records and change its configs, and
/// every change outlives a restart. Method: create a topic and produce 100 records, add
/// partitions, delete records below 40, alter configs both ways, describe the cluster, restart
/// the broker and check partitions, watermarks and config sources again.
#[test]
fn admin_client_grows_topics_deletes_records_and_alters_configs_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = EddyProcess::broker(dir.path(), &[]);
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
    let produced = kafka_tool(
        &bootstrap,
        &["produce", "--topic", "admin", "--count", "100"],
    );
    assert_eq!(produced["acked"], 100, "{produced}");

    let grown = kafka_tool(
        &bootstrap,
        &["create-partitions", "--topic", "admin", "--count", "3"],
    );
    assert_eq!(grown["partitions"], 3, "{grown}");
    let shrunk = kafka_tool(
        &bootstrap,
        &["create-partitions", "--topic", "admin", "--count", "2"],
    );
    let error = shrunk["kafka_error"].as_str().unwrap_or_default();
    assert!(error.contains("INVALID_PARTITIONS"), "{shrunk}");

    let deleted = kafka_tool(
        &bootstrap,
        &["delete-records", "--topic", "admin", "--offset", "40"],
    );
    assert_eq!(as_i64(&deleted, "low_watermark"), 40, "{deleted}");
    let too_far = kafka_tool(
        &bootstrap,
        &["delete-records", "--topic", "admin", "--offset", "1000"],
    );
    let error = too_far["kafka_error"].as_str().unwrap_or_default();
    assert!(error.contains("OFFSET_OUT_OF_RANGE"), "{too_far}");

    kafka_tool(
        &bootstrap,
        &[
            "alter-configs",
            "--topic",
            "admin",
            "--append",
            "cleanup.policy=compact",
            "--set",
            "segment.bytes=1048576",
            "--delete",
            "retention.ms",
        ],
    );
    let configs = kafka_tool(&bootstrap, &["describe-config-sources", "--topic", "admin"]);
    assert_eq!(
        source(&configs, "cleanup.policy"),
        ("compact,delete", "DYNAMIC_TOPIC_CONFIG"),
        "{configs}"
    );
    assert_eq!(
        source(&configs, "retention.ms"),
        ("604800000", "DEFAULT_CONFIG"),
        "{configs}"
    );
    let brokers = kafka_tool(&bootstrap, &["describe-config-sources", "--broker", "0"]);
    assert_eq!(brokers["num.partitions"]["read_only"], true, "{brokers}");
    let cluster = kafka_tool(&bootstrap, &["describe-cluster"]);
    assert_eq!(
        cluster["nodes"].as_array().map(Vec::len),
        Some(1),
        "{cluster}"
    );

    broker.restart();
    let bootstrap = broker.bootstrap();
    let watermarks = kafka_tool(
        &bootstrap,
        &["watermarks", "--topic", "admin", "--partitions", "3"],
    );
    assert_eq!(as_i64(&watermarks[0], "low"), 40, "{watermarks}");
    assert_eq!(as_i64(&watermarks[0], "high"), 100, "{watermarks}");
    assert_eq!(as_i64(&watermarks[2], "high"), 0, "{watermarks}");
    let configs = kafka_tool(&bootstrap, &["describe-config-sources", "--topic", "admin"]);
    assert_eq!(
        source(&configs, "segment.bytes"),
        ("1048576", "DYNAMIC_TOPIC_CONFIG"),
        "{configs}"
    );
}
