//! End-to-end test of the consumer-group admin APIs of `eddy broker` with confluent-kafka's
//! AdminClient (librdkafka), as kafka-consumer-groups style tools and lag checkers use them.

use eddy_tests::{kafka_tool, EddyProcess};
use serde_json::json;

/// Goal: a consumer's committed() sees its asynchronous commits at once, and AdminClient lists,
/// describes and deletes groups as it would against Kafka. Method: produce 20 records to a
/// 2-partition topic, then run kafka_tool's group-admin scenario (commit asynchronously and read
/// back each commit; list, describe and try to delete the group with its member in it; delete
/// it once the member has left) and check every step it reports.
#[test]
fn admin_client_lists_describes_and_deletes_consumer_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(dir.path(), &[]);
    let bootstrap = broker.bootstrap();
    kafka_tool(
        &bootstrap,
        &["create-topic", "--topic", "orders", "--partitions", "2"],
    );
    let produced = kafka_tool(
        &bootstrap,
        &["produce", "--topic", "orders", "--count", "20", "--keyed"],
    );
    assert_eq!(produced["acked"], 20, "{produced}");

    let seen = kafka_tool(
        &bootstrap,
        &[
            "group-admin",
            "--topic",
            "orders",
            "--group",
            "billing",
            "--count",
            "20",
        ],
    );
    assert_eq!(seen["consumed"], 20, "{seen}");
    assert_eq!(
        seen["stale_committed"], 0,
        "committed() lagged a commit: {seen}"
    );

    let busy = &seen["busy"];
    let listed = json!([{"group": "billing", "state": "STABLE", "simple": false}]);
    assert_eq!(busy["listed"], listed, "{seen}");
    let described = &busy["described"]["billing"];
    assert_eq!(described["state"], "STABLE", "{seen}");
    assert_eq!(described["assignor"], "range", "{seen}");
    assert_eq!(
        described["operations"],
        json!(["DELETE", "DESCRIBE", "READ"])
    );
    let member = json!({"client_id": "group-admin-member", "host": "/127.0.0.1",
                        "partitions": [0, 1]});
    assert_eq!(described["members"], json!([member]), "{seen}");
    assert_eq!(busy["described"]["never-seen"]["state"], "DEAD", "{seen}");
    assert_eq!(busy["delete"], "NON_EMPTY_GROUP", "{seen}");

    let left = &seen["left"];
    let offsets = left["offsets"].as_object().expect("offsets by partition");
    let total: i64 = offsets.values().map(|o| o.as_i64().expect("offset")).sum();
    assert_eq!(total, 20, "every record's offset was committed: {seen}");
    assert_eq!(left["delete"], "NONE", "{seen}");
    assert_eq!(left["listed_after_delete"], json!([]), "{seen}");
}
