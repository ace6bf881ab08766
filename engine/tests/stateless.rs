//! The engine end to end on an in-process broker: DDL, INSERT VALUES and a stateless persistent
//! query (filter and projection), read back from the sink topic.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::engine;
use eddy_broker::LogClient;
use eddy_engine::StatementResult;

/// Reads the topic until `count` records arrived or 10 s passed.
async fn read(
    client: &Arc<dyn LogClient>,
    topic: &str,
    count: usize,
) -> Vec<(Option<String>, Option<String>, i64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let mut offset = 0;
    while out.len() < count && Instant::now() < deadline {
        let records = match client
            .fetch(topic, 0, offset, 1 << 20, Duration::from_millis(100))
            .await
        {
            Ok(r) => r,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        for r in records {
            offset = r.offset + 1;
            let text = |b: Option<bytes::Bytes>| b.map(|b| String::from_utf8_lossy(&b).to_string());
            out.push((text(r.key), text(r.value), r.timestamp_ms));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_insert_and_filter_project_into_a_new_stream() {
    let (_dir, engine) = engine().await;
    engine
        .execute(
            "CREATE STREAM orders (id INT KEY, item STRING, qty INT, price DOUBLE) \
             WITH (kafka_topic='orders', value_format='JSON', partitions=1);",
        )
        .await
        .expect("create stream");
    for (id, item, qty, price, ts) in [
        (1, "apple", 3, 0.5, 1000),
        (2, "pear", 0, 0.75, 2000),
        (3, "fig", 10, 2.0, 3000),
    ] {
        engine
            .execute(&format!(
                "INSERT INTO orders (id, item, qty, price, ROWTIME) VALUES ({id}, '{item}', {qty}, {price}, {ts});"
            ))
            .await
            .expect("insert");
    }
    let results = engine
        .execute(
            "CREATE STREAM big WITH (kafka_topic='big') AS \
             SELECT id, UCASE(item) AS item, qty * price AS total FROM orders WHERE qty > 0 EMIT CHANGES;",
        )
        .await
        .expect("csas");
    let StatementResult::Status {
        query_id: Some(query_id),
        ..
    } = &results[0]
    else {
        panic!("expected a query id, got {results:?}");
    };
    assert_eq!(query_id, "CSAS_BIG_1");
    let rows = read(engine.client(), "big", 2).await;
    assert_eq!(
        rows,
        vec![
            (
                Some("\u{0}\u{0}\u{0}\u{1}".to_string()),
                Some(r#"{"ITEM":"APPLE","TOTAL":1.5}"#.to_string()),
                1000
            ),
            (
                Some("\u{0}\u{0}\u{0}\u{3}".to_string()),
                Some(r#"{"ITEM":"FIG","TOTAL":20.0}"#.to_string()),
                3000
            ),
        ]
    );
    let listed = engine.execute("SHOW STREAMS;").await.expect("show");
    let StatementResult::Sources { sources, .. } = &listed[0] else {
        panic!("{listed:?}")
    };
    let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["BIG", "KSQL_PROCESSING_LOG", "ORDERS"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_problem() {
    let (_dir, engine) = engine().await;
    let e = engine
        .execute("CREATE STREAM s (a INT) WITH (kafka_topic='nope', value_format='JSON');")
        .await;
    assert!(e.expect_err("no topic").to_string().contains("PARTITIONS"));
    engine
        .execute(
            "CREATE STREAM s (a INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);",
        )
        .await
        .expect("create");
    let e = engine
        .execute("CREATE STREAM s (a INT) WITH (kafka_topic='s', value_format='JSON');")
        .await;
    assert_eq!(
        e.expect_err("exists").to_string(),
        "stream 'S' already exists"
    );
    let e = engine
        .execute("CREATE STREAM t AS SELECT nope FROM s;")
        .await;
    assert!(e
        .expect_err("unknown column")
        .to_string()
        .to_lowercase()
        .contains("nope"));
    let e = engine.execute("INSERT INTO s (a) VALUES ('x');").await;
    let e = e.expect_err("type").to_string();
    assert!(e.contains("does not fit column A"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_emits_every_update_per_key() {
    let (_dir, engine) = engine().await;
    engine
        .execute(
            "CREATE STREAM clicks (usr STRING, page STRING, ms INT) \
             WITH (kafka_topic='clicks', value_format='JSON', partitions=1);",
        )
        .await
        .expect("create stream");
    for (user, ms, ts) in [("ann", 10, 1), ("bob", 5, 2), ("ann", 20, 3), ("ann", 1, 4)] {
        engine
            .execute(&format!(
                "INSERT INTO clicks (usr, page, ms, ROWTIME) VALUES ('{user}', 'home', {ms}, {ts});"
            ))
            .await
            .expect("insert");
    }
    let e = engine
        .execute("CREATE STREAM bad AS SELECT usr, COUNT(*) FROM clicks GROUP BY usr;")
        .await;
    let e = e.expect_err("stream").to_string();
    assert!(e.contains("Please use CREATE TABLE AS SELECT"), "{e}");
    engine
        .execute(
            "CREATE TABLE per_user WITH (kafka_topic='per_user', value_format='JSON') AS \
             SELECT usr, COUNT(*) AS n, SUM(ms) AS total FROM clicks GROUP BY usr HAVING SUM(ms) > 5 EMIT CHANGES;",
        )
        .await
        .expect("ctas");
    assert!(engine.wait_until_caught_up(Duration::from_secs(10)).await);
    let rows = read(engine.client(), "per_user", 3).await;
    let values: Vec<(Option<String>, Option<String>)> =
        rows.into_iter().map(|(k, v, _)| (k, v)).collect();
    assert_eq!(
        values,
        vec![
            (Some("ann".into()), Some(r#"{"N":1,"TOTAL":10}"#.into())),
            (Some("ann".into()), Some(r#"{"N":2,"TOTAL":30}"#.into())),
            (Some("ann".into()), Some(r#"{"N":3,"TOTAL":31}"#.into())),
        ],
        "bob's total of 5 fails HAVING; ann's every update is emitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_by_moves_a_column_into_the_key() {
    let (_dir, engine) = engine().await;
    engine
        .execute(
            "CREATE STREAM people (id INT KEY, name STRING, age INT) \
             WITH (kafka_topic='people', value_format='JSON', partitions=1);\
             INSERT INTO people (id, name, age) VALUES (10, 'bob', 22);\
             CREATE STREAM by_name WITH (key_format='JSON') AS SELECT * FROM people PARTITION BY name;",
        )
        .await
        .expect("statements");
    assert!(engine.wait_until_caught_up(Duration::from_secs(10)).await);
    let rows = read(engine.client(), "BY_NAME", 1).await;
    assert_eq!(rows[0].0.as_deref(), Some(r#""bob""#));
    // As in ksqlDB, `*` under PARTITION BY lists the value columns, then the old key.
    assert_eq!(rows[0].1.as_deref(), Some(r#"{"AGE":22,"ID":10}"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_decoded_goes_to_the_processing_log() {
    let (_dir, engine) = engine().await;
    engine
        .execute(
            "CREATE STREAM readings (v INT) WITH (kafka_topic='readings', value_format='JSON', partitions=1);",
        )
        .await
        .expect("create stream");
    let client = Arc::clone(engine.client());
    let record = |value: &str| eddy_broker::ProducerRecord {
        value: Some(bytes::Bytes::from(value.to_string())),
        timestamp_ms: Some(1),
        ..Default::default()
    };
    client
        .produce(
            "readings",
            vec![
                record(r#"{"V": 1}"#),
                record("not json"),
                record(r#"{"V": 3}"#),
            ],
        )
        .await
        .expect("produce");
    let results = engine
        .execute("CREATE STREAM doubled AS SELECT v * 2 AS d FROM readings;")
        .await
        .expect("csas");
    let StatementResult::Status {
        query_id: Some(query_id),
        ..
    } = &results[0]
    else {
        panic!("no query id: {results:?}");
    };
    let out = read(&client, "DOUBLED", 2).await;
    let values: Vec<Option<String>> = out.into_iter().map(|(_, v, _)| v).collect();
    assert_eq!(
        values,
        [
            Some(r#"{"D":2}"#.to_string()),
            Some(r#"{"D":6}"#.to_string())
        ]
    );
    assert_eq!(engine.processing_errors(query_id), 1);
    let logged = read(&client, "eddy_processing_log", 1).await;
    let entry: serde_json::Value =
        serde_json::from_str(logged[0].1.as_deref().expect("a value")).expect("JSON");
    assert_eq!(entry["QUERY_ID"], query_id.as_str());
    assert_eq!(entry["TOPIC"], "readings");
    assert_eq!(entry["OFFSET"], 1);
    assert!(
        entry["MESSAGE"]
            .as_str()
            .unwrap_or_default()
            .contains("JSON"),
        "{entry}"
    );
    engine
        .source("KSQL_PROCESSING_LOG")
        .expect("the log is a stream");
}

/// Partitions added to a source topic (Kafka's CreatePartitions) are picked up by the running
/// persistent queries over it: records produced to a new partition reach the sink, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_query_reads_partitions_added_to_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = eddy_broker::Broker::open(eddy_broker::BrokerConfig::new(dir.path()))
        .await
        .expect("broker");
    let client: Arc<dyn LogClient> =
        Arc::new(eddy_broker::InProcessClient::new(Arc::clone(&broker)));
    let engine = eddy_engine::Engine::new(Arc::clone(&client));
    engine
        .execute(
            "CREATE STREAM grow (n INT) WITH (kafka_topic='grow', value_format='JSON', partitions=1);\
             CREATE STREAM grown AS SELECT n * 10 AS m FROM grow;\
             INSERT INTO grow (n) VALUES (1);",
        )
        .await
        .expect("setup");
    assert_eq!(read(&client, "GROWN", 1).await.len(), 1);

    broker
        .create_partitions("grow", 3, false)
        .expect("add partitions");
    client
        .produce(
            "grow",
            vec![eddy_broker::ProducerRecord {
                partition: Some(2),
                value: Some(bytes::Bytes::from_static(b"{\"N\":2}")),
                ..Default::default()
            }],
        )
        .await
        .expect("produce to the new partition");
    // The query notices within its partition check interval (5 s) and restarts its tasks.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut values = Vec::new();
    while Instant::now() < deadline {
        values = read(&client, "GROWN", 2)
            .await
            .into_iter()
            .filter_map(|(_, value, _)| value)
            .collect();
        if values.len() >= 2 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all: Vec<String> = read(&client, "GROWN", 3)
        .await
        .into_iter()
        .filter_map(|(_, value, _)| value)
        .collect();
    assert_eq!(all, ["{\"M\":10}", "{\"M\":20}"], "seen before: {values:?}");
}

/// SHOW TOPICS lists the cluster's topics, those no source reads too (as ksqlDB does), but
/// not names starting with `_`; SHOW ALL TOPICS lists those as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_topics_lists_every_topic_and_all_topics_the_internal_ones_too() {
    let (_dir, engine) = engine().await;
    engine
        .execute(
            "CREATE STREAM side (n INT) WITH (kafka_topic='side_topic', value_format='JSON', partitions=2);\
             DROP STREAM side;\
             CREATE STREAM hidden (n INT) WITH (kafka_topic='_hidden', value_format='JSON', partitions=1);",
        )
        .await
        .expect("setup");
    let listed = |sql: &'static str| {
        let engine = &engine;
        async move {
            let mut results = engine.execute(sql).await.expect("show");
            let Some(StatementResult::Topics(topics)) = results.pop() else {
                panic!("{sql} listed no topics");
            };
            topics
        }
    };
    let topics = listed("SHOW TOPICS;").await;
    assert!(
        topics.contains(&("side_topic".to_string(), 2)),
        "{topics:?}"
    );
    assert!(
        topics.iter().all(|(name, _)| !name.starts_with('_')),
        "{topics:?}"
    );
    let all = listed("SHOW ALL TOPICS;").await;
    assert!(all.contains(&("_hidden".to_string(), 1)), "{all:?}");
    assert!(all.contains(&("side_topic".to_string(), 2)), "{all:?}");
}
