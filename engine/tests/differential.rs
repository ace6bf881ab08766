//! Differential tests: random inputs run through a continuous query and through DataFusion as
//! a batch query over the same input must give the same final answer.
//!
//! - Joins of three tables (INNER, LEFT and FULL OUTER mixed, 1 to 3 partitions each, upserts
//!   and deletes): the result table's final rows are the batch join of the tables' final rows.
//! - A stream joined to two tables on value columns (repartitioned), the tables written first:
//!   the stream's joined rows are the batch join of the stream with the tables.
//! - Two tables joined on their keys and their values (a join on two conditions): the final
//!   rows are the batch join's.
//! - A subquery in FROM grouped again (an aggregation over an aggregated table): the final
//!   counts are the batch answer's.
//! - A tumbling-window count with EMIT FINAL over 1 to 3 partitions, rows out of order: each
//!   closed window comes out once with the count of its rows that were not late, lateness
//!   judged against the stream time of the row's own partition.
//!
//! proptest shrinks a failing input to a small one and prints it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::{Array, Int32Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use eddy_broker::{LogClient, ProducerRecord};
use eddy_engine::Engine;
use proptest::prelude::*;

mod common;
use serde_json::{json, Value};

const PATIENCE: Duration = Duration::from_secs(60);

/// One write to a table: its key, and its value (`None` deletes the row).
type Write = (i32, Option<i32>);

fn writes() -> impl Strategy<Value = Vec<Write>> {
    prop::collection::vec((0..6i32, prop::option::weighted(0.8, 0..4i32)), 0..14)
}

fn join_kind() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["JOIN", "LEFT JOIN", "FULL OUTER JOIN"])
}

struct Setup {
    _dir: tempfile::TempDir,
    client: Arc<dyn LogClient>,
    engine: Engine,
}

async fn set_up() -> Setup {
    let (dir, client) = common::broker().await;
    let engine = Engine::new(Arc::clone(&client));
    Setup {
        _dir: dir,
        client,
        engine,
    }
}

async fn run(engine: &Engine, sql: &str) -> Result<(), TestCaseError> {
    engine
        .execute(sql)
        .await
        .map(|_| ())
        .map_err(|e| TestCaseError::fail(format!("{sql}: {e}")))
}

/// Writes `writes` to a table's topic: INT keys in the KAFKA format (4 bytes, big-endian),
/// `{"V": v}` values or tombstones, partitioned by key.
async fn write_table(client: &Arc<dyn LogClient>, topic: &str, writes: &[Write]) {
    let records: Vec<ProducerRecord> = writes
        .iter()
        .map(|(key, value)| ProducerRecord {
            partition: None,
            key: Some(Bytes::copy_from_slice(&key.to_be_bytes())),
            value: value.map(|v| Bytes::from(json!({ "V": v }).to_string())),
            timestamp_ms: None,
            headers: Vec::new(),
        })
        .collect();
    client.produce(topic, records).await.expect("produce");
}

/// A table's rows once every write is applied.
fn final_rows(writes: &[Write]) -> BTreeMap<i32, i32> {
    let mut rows = BTreeMap::new();
    for (key, value) in writes {
        match value {
            Some(v) => rows.insert(*key, *v),
            None => rows.remove(key),
        };
    }
    rows
}

/// A table topic's final rows by key: the last record of each key, tombstones removing it.
fn table_state(records: Vec<(Bytes, Option<Value>)>) -> BTreeMap<Vec<u8>, Value> {
    let mut state = BTreeMap::new();
    for (key, value) in records {
        match value {
            Some(v) => state.insert(key.to_vec(), v),
            None => state.remove(key.as_ref()),
        };
    }
    state
}

/// The final rows of table OUT (keyed by an INT), the values of `columns` of each.
async fn out_table(client: &Arc<dyn LogClient>, columns: &[&str]) -> BTreeMap<i32, Vec<Value>> {
    let state = table_state(common::read_topic(client, "OUT").await);
    state
        .into_iter()
        .map(|(key, value)| {
            let id = i32::from_be_bytes(key.as_slice().try_into().expect("INT key"));
            (id, columns.iter().map(|c| value[*c].clone()).collect())
        })
        .collect()
}

/// Batch rows by their first column (an INT key), the other columns each.
fn by_first_column(rows: Vec<Vec<Value>>) -> BTreeMap<i32, Vec<Value>> {
    rows.into_iter()
        .map(|row| (row[0].as_i64().expect("key") as i32, row[1..].to_vec()))
        .collect()
}

/// Registers `rows` as table `name` (ID INT, V INT) in DataFusion.
fn register(context: &SessionContext, name: &str, rows: &BTreeMap<i32, i32>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("v", DataType::Int32, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int32Array::from(rows.keys().copied().collect::<Vec<_>>())),
            Arc::new(Int32Array::from(rows.values().copied().collect::<Vec<_>>())),
        ],
    )
    .expect("batch");
    let table = MemTable::try_new(schema, vec![vec![batch]]).expect("table");
    context
        .register_table(name, Arc::new(table))
        .expect("register");
}

/// A batch query's rows as JSON values, column by column (INT and BIGINT columns).
async fn batch_rows(context: &SessionContext, sql: &str) -> Vec<Vec<Value>> {
    let batches = context
        .sql(sql)
        .await
        .expect("batch plan")
        .collect()
        .await
        .expect("batch run");
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|column| {
                    if column.is_null(row) {
                        return Value::Null;
                    }
                    if let Some(a) = column.as_any().downcast_ref::<Int32Array>() {
                        return json!(a.value(row));
                    }
                    if let Some(a) = column.as_any().downcast_ref::<Int64Array>() {
                        return json!(a.value(row));
                    }
                    panic!("unexpected column type {}", column.data_type());
                })
                .collect();
            rows.push(values);
        }
    }
    rows
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Three tables joined on their keys: the streaming result's final rows equal the batch
    /// join of the tables' final rows.
    #[test]
    fn three_tables_joined_equal_the_batch_join(
        a in writes(), b in writes(), c in writes(),
        partitions in prop::collection::vec(1..4i32, 3),
        first in join_kind(), second in join_kind(),
    ) {
        runtime().block_on(async {
            let setup = set_up().await;
            let engine = &setup.engine;
            for (name, count) in ["a", "b", "c"].iter().zip(&partitions) {
                run(engine, &format!(
                    "CREATE TABLE {name} (id INT PRIMARY KEY, v INT) \
                     WITH (kafka_topic='{name}', value_format='JSON', partitions={count});"
                )).await?;
            }
            // The key: ROWKEY when a FULL OUTER join's key may come from either side.
            let key = if second == "FULL OUTER JOIN" || first == "FULL OUTER JOIN" {
                "ROWKEY"
            } else {
                "a.id"
            };
            let sql = format!(
                "CREATE TABLE out AS SELECT {key} AS id, a.v AS av, b.v AS bv, c.v AS cv \
                 FROM a {first} b ON a.id = b.id {second} c ON a.id = c.id;"
            );
            if let Err(e) = engine.execute(&sql).await {
                // ksqlDB's own restriction: after a FULL OUTER join, a join on a column is
                // a foreign-key join, which n-way joins refuse.
                prop_assert!(first == "FULL OUTER JOIN", "{sql}: {e}");
                return Ok(());
            }
            write_table(&setup.client, "a", &a).await;
            write_table(&setup.client, "b", &b).await;
            write_table(&setup.client, "c", &c).await;
            prop_assert!(engine.wait_until_caught_up(PATIENCE).await, "caught up");
            let got = out_table(&setup.client, &["AV", "BV", "CV"]).await;

            let context = SessionContext::new();
            register(&context, "a", &final_rows(&a));
            register(&context, "b", &final_rows(&b));
            register(&context, "c", &final_rows(&c));
            let batch_key = if key == "ROWKEY" {
                "COALESCE(a.id, b.id, c.id)"
            } else {
                "a.id"
            };
            let batch = batch_rows(&context, &format!(
                "SELECT {batch_key}, a.v, b.v, c.v FROM a {first} b ON a.id = b.id \
                 {second} c ON a.id = c.id"
            )).await;
            let expected = by_first_column(batch);
            prop_assert_eq!(got, expected, "{}", sql);
            Ok(())
        })?;
    }

    /// Two tables joined on their keys and on their values (`ON a.id = b.id AND a.v = b.v`),
    /// rows updated so that the second condition stops and starts holding: the result's
    /// final rows equal the batch join's.
    #[test]
    fn tables_joined_on_two_conditions_equal_the_batch_join(
        a in writes(), b in writes(),
        partitions in prop::collection::vec(1..4i32, 2),
        kind in prop::sample::select(vec!["JOIN", "LEFT JOIN", "RIGHT JOIN"]),
    ) {
        runtime().block_on(async {
            let setup = set_up().await;
            let engine = &setup.engine;
            for (name, count) in ["a", "b"].iter().zip(&partitions) {
                run(engine, &format!(
                    "CREATE TABLE {name} (id INT PRIMARY KEY, v INT) \
                     WITH (kafka_topic='{name}', value_format='JSON', partitions={count});"
                )).await?;
            }
            let key = if kind == "RIGHT JOIN" { "b.id" } else { "a.id" };
            let sql = format!(
                "CREATE TABLE out AS SELECT {key} AS id, a.v AS av, b.v AS bv \
                 FROM a {kind} b ON a.id = b.id AND a.v = b.v;"
            );
            run(engine, &sql).await?;
            write_table(&setup.client, "a", &a).await;
            write_table(&setup.client, "b", &b).await;
            prop_assert!(engine.wait_until_caught_up(PATIENCE).await, "caught up");
            let got = out_table(&setup.client, &["AV", "BV"]).await;

            let context = SessionContext::new();
            register(&context, "a", &final_rows(&a));
            register(&context, "b", &final_rows(&b));
            let batch = batch_rows(&context, &format!(
                "SELECT {key}, a.v, b.v FROM a {kind} b ON a.id = b.id AND a.v = b.v"
            )).await;
            let expected = by_first_column(batch);
            prop_assert_eq!(got, expected, "{}", sql);
            Ok(())
        })?;
    }

    /// A stream (1 to 3 partitions) joined to two tables on two of its value columns, the
    /// tables written first: each stream row comes out once, as the batch join has it.
    #[test]
    fn a_stream_joined_to_two_tables_equals_the_batch_join(
        a in writes(), b in writes(),
        rows in prop::collection::vec((0..7i32, 0..7i32), 1..20),
        partitions in prop::collection::vec(1..4i32, 3),
        second in prop::sample::select(vec!["JOIN", "LEFT JOIN"]),
    ) {
        runtime().block_on(async {
            let setup = set_up().await;
            let engine = &setup.engine;
            run(engine, &format!(
                "CREATE STREAM s (n INT KEY, x INT, y INT) \
                 WITH (kafka_topic='s', value_format='JSON', partitions={});\
                 CREATE TABLE a (id INT PRIMARY KEY, v INT) \
                 WITH (kafka_topic='a', value_format='JSON', partitions={});\
                 CREATE TABLE b (id INT PRIMARY KEY, v INT) \
                 WITH (kafka_topic='b', value_format='JSON', partitions={});",
                partitions[0], partitions[1], partitions[2]
            )).await?;
            write_table(&setup.client, "a", &a).await;
            write_table(&setup.client, "b", &b).await;
            let sql = format!(
                "CREATE STREAM out AS SELECT s.y AS y, s.n AS n, a.v AS av, b.v AS bv \
                 FROM s JOIN a ON s.x = a.id {second} b ON s.y = b.id;"
            );
            run(engine, &sql).await?;
            prop_assert!(engine.wait_until_caught_up(PATIENCE).await, "caught up");
            let mut insert = String::new();
            for (n, (x, y)) in rows.iter().enumerate() {
                insert.push_str(&format!("INSERT INTO s (n, x, y) VALUES ({n}, {x}, {y});"));
            }
            run(engine, &insert).await?;
            prop_assert!(engine.wait_until_caught_up(PATIENCE).await, "caught up");
            let mut got: Vec<Vec<Value>> = common::read_topic(&setup.client, "OUT")
                .await
                .into_iter()
                .map(|(_, value)| {
                    let value = value.expect("a stream has no tombstones");
                    vec![value["N"].clone(), value["AV"].clone(), value["BV"].clone()]
                })
                .collect();
            got.sort_by_key(|row| row[0].as_i64());

            let context = SessionContext::new();
            register(&context, "a", &final_rows(&a));
            register(&context, "b", &final_rows(&b));
            let values: Vec<String> = rows
                .iter()
                .enumerate()
                .map(|(n, (x, y))| format!("({n}, {x}, {y})"))
                .collect();
            let mut expected = batch_rows(&context, &format!(
                "SELECT s.n, a.v, b.v FROM (VALUES {}) AS s(n, x, y) \
                 JOIN a ON s.x = a.id {second} b ON s.y = b.id",
                values.join(", ")
            )).await;
            expected.sort_by_key(|row| row[0].as_i64());
            prop_assert_eq!(got, expected, "{}", sql);
            Ok(())
        })?;
    }

    /// A grouped subquery grouped again: how many keys have each count, as the batch query
    /// counts them, after every row (the counts' retractions included).
    #[test]
    fn an_aggregation_over_an_aggregation_equals_the_batch_answer(
        rows in prop::collection::vec(0..8i32, 1..30),
        partitions in 1..4i32,
    ) {
        runtime().block_on(async {
            let setup = set_up().await;
            let engine = &setup.engine;
            run(engine, &format!(
                "CREATE STREAM s (n INT KEY, k INT) \
                 WITH (kafka_topic='s', value_format='JSON', partitions={partitions});\
                 CREATE TABLE out AS SELECT c, COUNT(*) AS keys \
                 FROM (SELECT k, COUNT(*) AS c FROM s GROUP BY k) AS per_key GROUP BY c;"
            )).await?;
            let mut insert = String::new();
            for (n, k) in rows.iter().enumerate() {
                insert.push_str(&format!("INSERT INTO s (n, k) VALUES ({n}, {k});"));
            }
            run(engine, &insert).await?;
            prop_assert!(engine.wait_until_caught_up(PATIENCE).await, "caught up");
            let state = table_state(common::read_topic(&setup.client, "OUT").await);
            let got: BTreeMap<i64, i64> = state
                .into_iter()
                .map(|(key, value)| {
                    let c = i64::from_be_bytes(key.as_slice().try_into().expect("BIGINT key"));
                    (c, value["KEYS"].as_i64().expect("KEYS"))
                })
                .filter(|(_, keys)| *keys > 0)
                .collect();
            let mut per_key: HashMap<i32, i64> = HashMap::new();
            for k in &rows {
                *per_key.entry(*k).or_default() += 1;
            }
            let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
            for c in per_key.values() {
                *expected.entry(*c).or_default() += 1;
            }
            prop_assert_eq!(got, expected);
            Ok(())
        })?;
    }

    /// A windowed count with EMIT FINAL (10 s windows, 5 s grace) over 1 to 3 partitions, each
    /// key in one partition, rows out of order: every window its partition's stream time has
    /// closed comes out once, counting the rows that were on time in their partition.
    #[test]
    fn a_windowed_count_with_emit_final_equals_the_batch_answer(
        rows in prop::collection::vec((0..6i32, 0..90i64), 1..60),
        partitions in 1..4i32,
    ) {
        runtime().block_on(async {
            const SIZE: i64 = 10_000;
            const GRACE: i64 = 5_000;
            let setup = set_up().await;
            let engine = &setup.engine;
            run(engine, &format!(
                "CREATE STREAM s (k INT KEY, v INT) \
                 WITH (kafka_topic='s', value_format='JSON', partitions={partitions});\
                 CREATE TABLE out AS SELECT k, COUNT(*) AS c FROM s \
                 WINDOW TUMBLING (SIZE 10 SECONDS, RETENTION 1 DAY, GRACE PERIOD 5 SECONDS) \
                 GROUP BY k EMIT FINAL;"
            )).await?;
            // Two hours ago, on a minute (older records would fall out of the retention).
            let base = (eddy_broker::now_ms() - 7_200_000) / 60_000 * 60_000;
            let records: Vec<ProducerRecord> = rows
                .iter()
                .map(|(k, seconds)| ProducerRecord {
                    partition: Some(k % partitions),
                    key: Some(Bytes::copy_from_slice(&k.to_be_bytes())),
                    value: Some(Bytes::from(json!({ "V": 1 }).to_string())),
                    timestamp_ms: Some(base + seconds * 1000),
                    headers: Vec::new(),
                })
                .collect();
            setup.client.produce("s", records).await.expect("produce");
            prop_assert!(engine.wait_until_caught_up(PATIENCE).await, "caught up");
            let mut got: BTreeMap<(i32, i64), i64> = BTreeMap::new();
            for (key, value) in common::read_topic(&setup.client, "OUT").await {
                let (k, start) = key.split_at(4);
                let k = i32::from_be_bytes(k.try_into().expect("INT key"));
                let start = i64::from_be_bytes(start.try_into().expect("window start"));
                let count = value.expect("EMIT FINAL emits no tombstones")["C"]
                    .as_i64()
                    .expect("C");
                prop_assert!(got.insert((k, start), count).is_none(), "window emitted twice");
            }

            // The answer: each partition's rows in order, a row late when its window's end is
            // at or before the partition's stream time less the grace; the windows the final
            // stream time has closed.
            let mut expected: BTreeMap<(i32, i64), i64> = BTreeMap::new();
            for partition in 0..partitions {
                let mut stream_time = i64::MIN;
                let mut counts: BTreeMap<(i32, i64), i64> = BTreeMap::new();
                for (k, seconds) in rows.iter().filter(|(k, _)| k % partitions == partition) {
                    let time = base + seconds * 1000;
                    stream_time = stream_time.max(time);
                    let start = time / SIZE * SIZE;
                    if start + SIZE > stream_time - GRACE {
                        *counts.entry((*k, start)).or_default() += 1;
                    }
                }
                let close = stream_time.saturating_sub(GRACE);
                expected.extend(counts.into_iter().filter(|((_, start), _)| start + SIZE <= close));
            }
            prop_assert_eq!(got, expected);
            Ok(())
        })?;
    }
}
