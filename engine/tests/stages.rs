//! Queries that run as several stages: joins of more than two sources (a chain of two-source
//! joins, each stage writing its rows to an internal topic the next one reads) and subqueries
//! in FROM. Results are checked against answers computed here from the same input, across a
//! restart of the engine, and the stages' topics are checked to go with the query.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy_broker::LogClient;
use eddy_engine::{Engine, QueryResult, StatementResult};
use serde_json::{json, Value};

mod common;

const PATIENCE: Duration = Duration::from_secs(60);

async fn run(engine: &Engine, sql: &str) {
    engine
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn caught_up(engine: &Engine) {
    assert!(
        engine.wait_until_caught_up(PATIENCE).await,
        "the queries caught up"
    );
}

/// The internal topics of query `id` that exist.
async fn internal_topics(client: &Arc<dyn LogClient>, id: &str) -> Vec<String> {
    let prefix = format!("_eddy_{id}_");
    client
        .topics()
        .await
        .expect("topics")
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// A stream joined to two tables, each on a different value column of the stream, over
/// sources of 4, 2 and 3 partitions: every order whose customer exists comes out once with its
/// customer's region and, left-joined, its product's price; again after the engine restarts
/// (the stages resume from their committed offsets, rebuilding the tables from their topics);
/// DROP removes the stages' topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_way_join_over_partitions_matches_the_batch_answer_across_a_restart() {
    let (_dir, client) = common::broker().await;
    let engine = Engine::open(Arc::clone(&client)).await.expect("engine");
    run(
        &engine,
        "CREATE STREAM orders (id INT KEY, customer STRING, product STRING, qty INT) \
         WITH (kafka_topic='orders', value_format='JSON', partitions=4);\
         CREATE TABLE customers (cid STRING PRIMARY KEY, region STRING) \
         WITH (kafka_topic='customers', value_format='JSON', partitions=2);\
         CREATE TABLE products (pid STRING PRIMARY KEY, price INT) \
         WITH (kafka_topic='products', value_format='JSON', partitions=3);",
    )
    .await;
    // Customers c0..c19 (c20.. unknown), products p0..p9 (p10.. unknown).
    let mut setup = String::new();
    for c in 0..20 {
        setup.push_str(&format!(
            "INSERT INTO customers (cid, region) VALUES ('c{c}', 'r{}');",
            c % 3
        ));
    }
    for p in 0..10 {
        setup.push_str(&format!(
            "INSERT INTO products (pid, price) VALUES ('p{p}', {});",
            p + 1
        ));
    }
    run(&engine, &setup).await;
    let created = engine
        .execute(
            "CREATE STREAM enriched AS \
             SELECT o.product AS product, o.id AS id, c.region AS region, \
             o.qty * p.price AS total \
             FROM orders o \
             JOIN customers c ON o.customer = c.cid \
             LEFT JOIN products p ON o.product = p.pid;",
        )
        .await
        .expect("CSAS");
    let Some(StatementResult::Status {
        query_id: Some(query),
        ..
    }) = created.first()
    else {
        panic!("a query id: {:?}", created.len());
    };
    let query = query.clone();
    caught_up(&engine).await;

    let order = |id: i32| {
        let (customer, product, qty) = (id * 7 % 23, id * 3 % 12, id % 5 + 1);
        let sql = format!(
            "INSERT INTO orders (id, customer, product, qty) VALUES \
             ({id}, 'c{customer}', 'p{product}', {qty});"
        );
        // The answer: inner join to customers, left join to products.
        let row = (customer < 20).then(|| {
            let total = (product < 10).then(|| json!(qty * (product + 1)));
            (
                id,
                json!(format!("r{}", customer % 3)),
                total.unwrap_or(Value::Null),
            )
        });
        (sql, row)
    };
    let check = |records: Vec<(bytes::Bytes, Option<Value>)>, ids: std::ops::Range<i32>| {
        let mut seen: HashMap<i64, usize> = HashMap::new();
        let mut got = BTreeSet::new();
        for (_, value) in records {
            let value = value.expect("a stream has no tombstones");
            let id = value["ID"].as_i64().expect("ID");
            *seen.entry(id).or_default() += 1;
            got.insert((
                id as i32,
                value["REGION"].to_string(),
                value["TOTAL"].to_string(),
            ));
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "orders joined more than once: {twice:?}");
        let expected: BTreeSet<(i32, String, String)> = ids
            .filter_map(|id| order(id).1)
            .map(|(id, region, total)| (id, region.to_string(), total.to_string()))
            .collect();
        assert_eq!(got, expected);
    };
    let mut sql = String::new();
    for id in 0..300 {
        sql.push_str(&order(id).0);
    }
    run(&engine, &sql).await;
    caught_up(&engine).await;
    check(common::read_topic(&client, "ENRICHED").await, 0..300);
    let topics = internal_topics(&client, &query).await;
    assert!(
        topics.contains(&format!("_eddy_{query}_S1_output")),
        "the first join's stage writes to its topic: {topics:?}"
    );

    // A restart: the stages resume where they committed.
    drop(engine);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let engine = Engine::open(Arc::clone(&client)).await.expect("reopen");
    let mut sql = String::new();
    for id in 300..400 {
        sql.push_str(&order(id).0);
    }
    run(&engine, &sql).await;
    caught_up(&engine).await;
    check(common::read_topic(&client, "ENRICHED").await, 0..400);

    run(&engine, "DROP STREAM enriched;").await;
    let deadline = Instant::now() + PATIENCE;
    while !internal_topics(&client, &query).await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(internal_topics(&client, &query).await, Vec::<String>::new());
}

/// A push query over three tables: its rows come as the joins see them, and its stage's
/// topic goes once the query is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_query_over_three_tables_leaves_no_topic_behind() {
    let (_dir, client) = common::broker().await;
    let engine = Engine::new(Arc::clone(&client));
    let mut setup = String::new();
    for t in ["a", "b", "c"] {
        setup.push_str(&format!(
            "CREATE TABLE {t} (id INT PRIMARY KEY, v STRING) \
             WITH (kafka_topic='{t}', value_format='JSON', partitions=2);"
        ));
        for id in 0..5 {
            setup.push_str(&format!(
                "INSERT INTO {t} (id, v) VALUES ({id}, '{t}{id}');"
            ));
        }
    }
    run(&engine, &setup).await;
    let properties = BTreeMap::from([("auto.offset.reset".to_string(), "earliest".to_string())]);
    let QueryResult::Push(mut push) = engine
        .query(
            "SELECT a.id AS id, a.v AS av, b.v AS bv, c.v AS cv FROM a \
             JOIN b ON a.id = b.id JOIN c ON b.id = c.id EMIT CHANGES LIMIT 5;",
            &properties,
        )
        .await
        .expect("push query")
    else {
        panic!("a SELECT with EMIT CHANGES is a push query");
    };
    let mut rows = BTreeSet::new();
    while rows.len() < 5 {
        let row = tokio::time::timeout(PATIENCE, push.rows.recv())
            .await
            .expect("a row in time")
            .expect("a row");
        let text = serde_json::to_string(&row.values).expect("JSON");
        rows.insert(text);
    }
    let expected: BTreeSet<String> = (0..5)
        .map(|id| json!([id, format!("a{id}"), format!("b{id}"), format!("c{id}")]).to_string())
        .collect();
    assert_eq!(rows, expected);
    let id = push.query_id.clone();
    drop(push);
    let deadline = Instant::now() + PATIENCE;
    while !internal_topics(&client, &id).await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(internal_topics(&client, &id).await, Vec::<String>::new());
}
