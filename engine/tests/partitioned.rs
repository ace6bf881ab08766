//! Stateful queries over sources of several partitions: each partition's task owns its keys'
//! state and its own stream time, and a query keyed by something other than its sources' keys
//! goes through a repartition topic first. Results are checked against answers computed here
//! from the same input.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use eddy_broker::{Broker, BrokerConfig, InProcessClient, LogClient, ProducerRecord};
use eddy_engine::Engine;
use serde_json::Value;

const MINUTE: i64 = 60_000;

/// Where the records' times start: a minute two hours ago (records older than a topic's
/// retention, 7 days by default, would be deleted under the query).
fn base_time() -> i64 {
    (eddy_broker::now_ms() - 120 * MINUTE) / MINUTE * MINUTE
}

async fn set_up() -> (tempfile::TempDir, Arc<dyn LogClient>, Engine) {
    let (dir, _, client, engine) = set_up_broker().await;
    (dir, client, engine)
}

async fn set_up_broker() -> (tempfile::TempDir, Arc<Broker>, Arc<dyn LogClient>, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::open(BrokerConfig::new(dir.path()))
        .await
        .expect("broker");
    let client: Arc<dyn LogClient> = Arc::new(InProcessClient::new(Arc::clone(&broker)));
    let engine = Engine::new(Arc::clone(&client));
    (dir, broker, client, engine)
}

async fn run(engine: &Engine, sql: &str) {
    engine
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn record(partition: i32, key: &str, value: Value, timestamp: i64) -> ProducerRecord {
    ProducerRecord {
        partition: Some(partition),
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms: Some(timestamp),
        headers: Vec::new(),
    }
}

/// Every record of every partition of `topic` once no more arrive for a while (at most
/// `within`): (key, value, partition) each.
async fn read_all(
    client: &Arc<dyn LogClient>,
    topic: &str,
    within: Duration,
    settled: impl Fn(&[(Bytes, Option<Value>)]) -> bool,
) -> Vec<(Bytes, Option<Value>)> {
    let deadline = Instant::now() + within;
    let mut offsets: HashMap<i32, i64> = HashMap::new();
    let mut out = Vec::new();
    loop {
        let partitions = client.partition_count(topic).await.unwrap_or(0);
        let mut any = false;
        for partition in 0..partitions {
            let offset = offsets.entry(partition).or_default();
            let records = client
                .fetch(
                    topic,
                    partition,
                    *offset,
                    1 << 20,
                    Duration::from_millis(20),
                )
                .await
                .unwrap_or_default();
            for r in records {
                any = true;
                *offset = r.offset + 1;
                let value = r.value.map(|v| serde_json::from_slice(&v).expect("JSON"));
                out.push((r.key.unwrap_or_default(), value));
            }
        }
        if (!any && settled(&out)) || Instant::now() > deadline {
            return out;
        }
        if !any {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every record of `topic` as it is now: (partition, key, value) each.
async fn records_by_partition(
    client: &Arc<dyn LogClient>,
    topic: &str,
) -> Vec<(i32, Bytes, Option<Bytes>)> {
    let mut out = Vec::new();
    for partition in 0..client.partition_count(topic).await.expect("a topic") {
        let mut offset = 0;
        loop {
            let records = client
                .fetch(topic, partition, offset, 1 << 20, Duration::ZERO)
                .await
                .expect("fetch");
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            out.extend(
                records
                    .into_iter()
                    .map(|r| (partition, r.key.unwrap_or_default(), r.value)),
            );
        }
    }
    out
}

/// The keys `user_0` .. of partition `partition` of 4, as the default partitioner places them.
fn users_of(partition: i32) -> Vec<String> {
    (0..40)
        .map(|i| format!("user_{i}"))
        .filter(|k| eddy_broker::partitioner::partition_for_key(k.as_bytes(), 4) == partition)
        .collect()
}

/// A windowed count with EMIT FINAL over four partitions whose records arrive one partition
/// after the other, each in time order: every window a partition's own time has closed is
/// emitted once, with its full count. (With one stream time for all partitions, the later
/// partitions' records were all late and dropped.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_final_over_partitions_read_at_different_times_loses_no_window() {
    let (_dir, client, engine) = set_up().await;
    run(
        &engine,
        "CREATE STREAM clicks (user VARCHAR KEY, page VARCHAR) \
         WITH (kafka_topic='clicks', value_format='JSON', partitions=4);\
         CREATE TABLE per_minute AS SELECT user, COUNT(*) AS c FROM clicks \
         WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user EMIT FINAL;",
    )
    .await;
    let mut expected: BTreeMap<(String, i64), i64> = BTreeMap::new();
    let base = base_time();
    for partition in 0..4 {
        let users = users_of(partition);
        assert!(!users.is_empty());
        let mut records = Vec::new();
        // 30 minutes of rows, a row a second, each partition over the same time. (Rows on
        // every window's end: EMIT FINAL forgets a window that stream time jumps past by
        // more than its retention, size + grace by default, as ksqlDB does.)
        let times: Vec<i64> = (base..base + 30 * MINUTE).step_by(1_000).collect();
        let end = *times.last().expect("times");
        for (i, time) in times.iter().enumerate() {
            let user = &users[i % users.len()];
            records.push(record(
                partition,
                user,
                serde_json::json!({"PAGE": "p"}),
                *time,
            ));
            let start = time / MINUTE * MINUTE;
            if start + MINUTE <= end {
                *expected.entry((user.clone(), start)).or_default() += 1;
            }
        }
        client.produce("clicks", records).await.expect("produce");
        // The query reads this partition before the next one has any records.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let rows = read_all(&client, "PER_MINUTE", Duration::from_secs(30), |rows| {
        rows.len() >= expected.len()
    })
    .await;
    let mut got: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for (key, value) in rows {
        // A tumbling window's key: the key's bytes, then the window start (8 bytes).
        let (user, start) = key.split_at(key.len() - 8);
        let start = i64::from_be_bytes(start.try_into().expect("8 bytes"));
        let user = String::from_utf8(user.to_vec()).expect("UTF-8");
        let count = value.expect("a value")["C"].as_i64().expect("C");
        assert!(
            got.insert((user.clone(), start), count).is_none(),
            "window {user} {start} emitted twice"
        );
    }
    assert_eq!(got.len(), expected.len(), "windows emitted");
    assert_eq!(got, expected);
    // The sink took the source's 4 partitions, and a window's record went to the partition
    // of its key without the window (as Kafka Streams' windowed partitioner puts it).
    let records = records_by_partition(&client, "PER_MINUTE").await;
    assert_eq!(client.partition_count("PER_MINUTE").await.ok(), Some(4));
    for (partition, key, _) in records {
        let user = &key[..key.len() - 8];
        let wanted = eddy_broker::partitioner::partition_for_key(user, 4);
        assert_eq!(partition, wanted, "{:?}", String::from_utf8_lossy(user));
    }
}

/// GROUP BY a value column over four partitions: the records go through the query's
/// repartition topic, keyed by the group, and the final counts equal the batch answer. The
/// topic goes when the query does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_another_column_repartitions_and_counts_every_row_once() {
    let (_dir, client, engine) = set_up().await;
    run(
        &engine,
        "CREATE STREAM clicks (user VARCHAR KEY, page VARCHAR, n INT) \
         WITH (kafka_topic='clicks', value_format='JSON', partitions=4);\
         CREATE TABLE per_page AS SELECT page, COUNT(*) AS c, SUM(n) AS s FROM clicks \
         WHERE n <> 3 GROUP BY page;",
    )
    .await;
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let base = base_time();
    for partition in 0..4 {
        let users = users_of(partition);
        let records: Vec<ProducerRecord> = (0..500)
            .map(|i| {
                let page = format!("page_{}", (i * 7 + partition as usize) % 13);
                let n = (i % 5) as i64;
                if n != 3 {
                    let entry = expected.entry(page.clone()).or_default();
                    entry.0 += 1;
                    entry.1 += n;
                }
                let value = serde_json::json!({"PAGE": page, "N": n});
                record(
                    partition,
                    &users[i % users.len()],
                    value,
                    base + i as i64 * 1_000,
                )
            })
            .collect();
        client.produce("clicks", records).await.expect("produce");
    }
    let total: i64 = expected.values().map(|(c, _)| c).sum();
    let latest = |rows: &[(Bytes, Option<Value>)]| {
        let mut latest: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (key, value) in rows {
            let value = value.as_ref().expect("a value");
            let counts = (value["C"].as_i64().unwrap(), value["S"].as_i64().unwrap());
            latest.insert(String::from_utf8(key.to_vec()).unwrap(), counts);
        }
        latest
    };
    let rows = read_all(&client, "PER_PAGE", Duration::from_secs(30), |rows| {
        latest(rows).values().map(|(c, _)| c).sum::<i64>() >= total
    })
    .await;
    assert_eq!(latest(&rows), expected);

    let repartition: Vec<(String, i32)> = client
        .topics()
        .await
        .expect("topics")
        .into_iter()
        .filter(|(t, _)| t.ends_with("_repartition"))
        .collect();
    let [(topic, 4)] = &repartition[..] else {
        panic!("one repartition topic of 4 partitions: {repartition:?}");
    };
    // A page's records were routed to the partition the sink keeps the page in: the task
    // counting a page is the one task writing that partition of the sink.
    for (partition, _, value) in records_by_partition(&client, topic).await {
        let value: Value = serde_json::from_slice(&value.expect("a value")).expect("JSON");
        let page = value["PAGE"].as_str().expect("PAGE");
        let wanted = eddy_broker::partitioner::partition_for_key(page.as_bytes(), 4);
        assert_eq!(partition, wanted, "{page}");
    }
    assert!(
        topic.starts_with("_eddy_CTAS_PER_PAGE_") && topic.ends_with("_0_repartition"),
        "{topic}"
    );
    run(&engine, "DROP TABLE per_page;").await;
    let topics = client.topics().await.expect("topics");
    assert!(
        !topics.iter().any(|(t, _)| t.ends_with("_repartition")),
        "{topics:?}"
    );
}

/// A stream joined to a table on a value column of the stream, the two with different
/// partition counts: both go through repartition topics, and every order finds its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_on_a_value_column_repartitions_both_sides() {
    join_orders_with_users(true, 10_000).await;
}

/// A stream-table join started over records already written, the stream's of the same times
/// as the table's: every order finds its user, whichever side's records reach the exchange
/// first (the table's records of a time go before the stream's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_started_over_written_records_reads_the_table_first() {
    join_orders_with_users(false, 0).await;
}

/// Orders of 4 partitions joined to users of 2 on a value column, the query created before
/// the records are written (`query_first`) or after; orders `order_delay_ms` after users.
async fn join_orders_with_users(query_first: bool, order_delay_ms: i64) {
    let (_dir, client, engine) = set_up().await;
    run(
        &engine,
        "CREATE STREAM orders (id VARCHAR KEY, uid VARCHAR, amount INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=4);\
         CREATE TABLE users (uid VARCHAR PRIMARY KEY, name VARCHAR) \
         WITH (kafka_topic='users', value_format='JSON', partitions=2);",
    )
    .await;
    let query = "CREATE STREAM enriched AS SELECT o.uid, u.name, o.amount \
                 FROM orders o JOIN users u ON o.uid = u.uid;";
    if query_first {
        run(&engine, query).await;
    }
    let base = base_time();
    let users: Vec<ProducerRecord> = (0..20)
        .map(|i| {
            let uid = format!("u{i}");
            let partition = eddy_broker::partitioner::partition_for_key(uid.as_bytes(), 2);
            record(
                partition,
                &uid,
                serde_json::json!({"NAME": format!("name{i}")}),
                base,
            )
        })
        .collect();
    client.produce("users", users).await.expect("users");
    let mut expected = Vec::new();
    for partition in 0..4 {
        let orders: Vec<ProducerRecord> = (0..200)
            .map(|i| {
                // Users 20..24 do not exist: an inner join drops their orders.
                let user = (i * 3 + partition as usize) % 25;
                let amount = i as i64 + 1_000 * partition as i64;
                if user < 20 {
                    expected.push((format!("u{user}"), format!("name{user}"), amount));
                }
                let value = serde_json::json!({"UID": format!("u{user}"), "AMOUNT": amount});
                let time = base + order_delay_ms + i as i64;
                record(partition, &format!("o{partition}_{i}"), value, time)
            })
            .collect();
        client.produce("orders", orders).await.expect("orders");
    }
    expected.sort();
    if !query_first {
        run(&engine, query).await;
    }
    let rows = read_all(&client, "ENRICHED", Duration::from_secs(30), |rows| {
        rows.len() >= expected.len()
    })
    .await;
    let mut got: Vec<(String, String, i64)> = rows
        .into_iter()
        .map(|(key, value)| {
            let value = value.expect("a value");
            (
                String::from_utf8(key.to_vec()).unwrap(),
                value["NAME"].as_str().unwrap().to_string(),
                value["AMOUNT"].as_i64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, expected);
}

/// The latest value of each key of a table's topic (JSON keys and values).
fn latest_counts(rows: &[(Bytes, Option<Value>)]) -> BTreeMap<String, i64> {
    let mut latest = BTreeMap::new();
    for (key, value) in rows {
        let count = value.as_ref().and_then(|v| v["C"].as_i64()).unwrap_or(0);
        latest.insert(String::from_utf8(key.to_vec()).unwrap(), count);
    }
    latest
}

/// A GROUP BY over a one-partition stream runs without an exchange; when the stream gains
/// partitions the query moves to a repartition topic, routing what it had read again as
/// state only: the counts go on from where they were, and nothing is emitted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_whose_source_gains_partitions_keeps_its_state_through_the_new_exchange() {
    let (_dir, broker, client, engine) = set_up_broker().await;
    run(
        &engine,
        "CREATE STREAM events (id VARCHAR KEY, kind VARCHAR) \
         WITH (kafka_topic='events', value_format='JSON', partitions=1);\
         CREATE TABLE per_kind AS SELECT kind, COUNT(*) AS c FROM events GROUP BY kind;",
    )
    .await;
    let base = base_time();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut produce = |partitions: i32, from: usize, to: usize| {
        (from..to)
            .map(|i| {
                let kind = format!("kind{}", i % 5);
                *expected.entry(kind.clone()).or_default() += 1;
                let value = serde_json::json!({"KIND": kind});
                record(
                    (i % partitions as usize) as i32,
                    &format!("e{i}"),
                    value,
                    base + i as i64,
                )
            })
            .collect::<Vec<_>>()
    };
    client
        .produce("events", produce(1, 0, 100))
        .await
        .expect("produce");
    let first = read_all(&client, "PER_KIND", Duration::from_secs(20), |rows| {
        latest_counts(rows).values().sum::<i64>() >= 100
    })
    .await;
    assert_eq!(latest_counts(&first).values().sum::<i64>(), 100);

    broker
        .create_partitions("events", 3, false)
        .expect("add partitions");
    // The query notices within its partition check interval (5 s) and restarts its tasks.
    tokio::time::sleep(Duration::from_secs(7)).await;
    client
        .produce("events", produce(3, 100, 160))
        .await
        .expect("produce");
    let expected = expected.clone();
    let rows = read_all(&client, "PER_KIND", Duration::from_secs(30), |rows| {
        latest_counts(rows) == expected
    })
    .await;
    assert_eq!(latest_counts(&rows), expected);
    // 100 updates, then one per new record: the replayed records emitted nothing.
    assert_eq!(rows.len(), 160, "every record updates its count once");
    let topics = client.topics().await.expect("topics");
    assert!(
        topics
            .iter()
            .any(|(t, n)| t.ends_with("_0_repartition") && *n == 3),
        "{topics:?}"
    );
}
