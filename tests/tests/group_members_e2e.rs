//! End-to-end test of consumer-group metadata surviving an `eddy broker` restart, with
//! confluent-kafka (librdkafka) as the client.

use eddy_tests::{kafka_tool, EddyProcess};

/// Goal: a group that consumed and left is still a `consumer` group after a restart (not a
/// "simple" group known only by its offsets), and a deleted group stays deleted. Method: two
/// groups consume and commit, one is deleted, the broker is killed and restarted on the same
/// data folder, then the admin client lists and describes them.
#[test]
fn consumer_groups_keep_their_protocol_type_across_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = EddyProcess::broker(dir.path(), &[]);
    let bootstrap = broker.bootstrap();
    kafka_tool(
        &bootstrap,
        &["create-topic", "--topic", "orders", "--partitions", "2"],
    );
    kafka_tool(
        &bootstrap,
        &["produce", "--topic", "orders", "--count", "10"],
    );
    for group in ["kept", "dropped"] {
        let consumed = kafka_tool(
            &bootstrap,
            &[
                "consume", "--topic", "orders", "--group", group, "--commit", "--count", "10",
            ],
        );
        assert_eq!(consumed["consumed"], 10, "{consumed}");
    }
    let before = kafka_tool(&bootstrap, &["groups", "--delete", "dropped"]);
    assert_eq!(before["deleted"]["dropped"], "NONE", "{before}");

    broker.restart();
    let bootstrap = broker.bootstrap();
    let after = kafka_tool(
        &bootstrap,
        &["groups", "--describe", "kept", "--describe", "dropped"],
    );
    let listed = after["listed"].as_array().expect("listed");
    assert_eq!(listed.len(), 1, "{after}");
    assert_eq!(listed[0]["group"], "kept", "{after}");
    assert_eq!(listed[0]["state"], "EMPTY", "{after}");
    assert_eq!(
        listed[0]["simple"], false,
        "a consumer group, not offsets only: {after}"
    );
    assert_eq!(after["described"]["kept"]["simple"], false, "{after}");
    assert_eq!(after["described"]["dropped"]["state"], "DEAD", "{after}");
}
