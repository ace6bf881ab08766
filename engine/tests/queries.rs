//! Push and pull queries through the engine on an in-process broker.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::engine;
use eddy_engine::{Engine, PushRow, QueryResult};
use serde_json::{json, Value};

async fn run(engine: &Engine, sql: &str) {
    engine
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn earliest() -> BTreeMap<String, String> {
    BTreeMap::from([("auto.offset.reset".to_string(), "earliest".to_string())])
}

async fn next_row(rows: &mut tokio::sync::mpsc::Receiver<PushRow>) -> Vec<Value> {
    tokio::time::timeout(Duration::from_secs(10), rows.recv())
        .await
        .expect("a row within 10 s")
        .expect("the query is still running")
        .values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_query_streams_old_and_new_rows_and_ends_when_dropped() {
    let (_dir, engine) = engine().await;
    run(
        &engine,
        "CREATE STREAM clicks (user STRING KEY, page STRING, ms INT) \
         WITH (kafka_topic='clicks', value_format='JSON', partitions=2);",
    )
    .await;
    run(
        &engine,
        "INSERT INTO clicks (user, page, ms) VALUES ('ann', '/home', 10);",
    )
    .await;
    let QueryResult::Push(mut push) = engine
        .query(
            "SELECT user, UCASE(page) AS page FROM clicks WHERE ms > 5 EMIT CHANGES LIMIT 2;",
            &earliest(),
        )
        .await
        .expect("push query")
    else {
        panic!("a SELECT with EMIT CHANGES is a push query");
    };
    assert_eq!(push.limit, Some(2));
    let names: Vec<&str> = push.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["USER", "PAGE"]);
    assert_eq!(
        next_row(&mut push.rows).await,
        [json!("ann"), json!("/HOME")]
    );
    run(
        &engine,
        "INSERT INTO clicks (user, page, ms) VALUES ('bob', '/cart', 1);",
    )
    .await;
    run(
        &engine,
        "INSERT INTO clicks (user, page, ms) VALUES ('cy', '/pay', 20);",
    )
    .await;
    assert_eq!(next_row(&mut push.rows).await, [json!("cy"), json!("/PAY")]);
    assert_eq!(engine.push_queries(), [push.query_id.clone()]);
    drop(push);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !engine.push_queries().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(engine.push_queries().is_empty(), "the dropped query ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_query_from_latest_sees_only_new_rows_and_can_be_closed() {
    let (_dir, engine) = engine().await;
    run(
        &engine,
        "CREATE STREAM s (v INT) WITH (kafka_topic='s', value_format='JSON', partitions=1);",
    )
    .await;
    run(&engine, "INSERT INTO s (v) VALUES (1);").await;
    let QueryResult::Push(mut push) = engine
        .query("SELECT v FROM s EMIT CHANGES;", &BTreeMap::new())
        .await
        .expect("push query")
    else {
        panic!("push");
    };
    // The query starts at the end of the log; give its tasks a moment to find it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    run(&engine, "INSERT INTO s (v) VALUES (2);").await;
    assert_eq!(next_row(&mut push.rows).await, [json!(2)]);
    assert!(engine.close_query(&push.query_id));
    assert!(
        tokio::time::timeout(Duration::from_secs(10), push.rows.recv())
            .await
            .expect("closed within 10 s")
            .is_none(),
        "no rows after close"
    );
    assert!(!engine.close_query(&push.query_id), "closed already");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_queries_run_full_sql_over_a_tables_latest_rows() {
    let (_dir, engine) = engine().await;
    run(
        &engine,
        "CREATE STREAM views (user STRING KEY, page STRING) \
         WITH (kafka_topic='views', value_format='JSON', partitions=2);",
    )
    .await;
    for (user, page) in [
        ("ann", "a"),
        ("bob", "b"),
        ("ann", "c"),
        ("cy", "d"),
        ("ann", "e"),
    ] {
        run(
            &engine,
            &format!("INSERT INTO views (user, page) VALUES ('{user}', '{page}');"),
        )
        .await;
    }
    run(
        &engine,
        "CREATE TABLE per_user AS SELECT user, COUNT(*) AS n, LATEST_BY_OFFSET(page) AS last_page \
         FROM views GROUP BY user EMIT CHANGES;",
    )
    .await;
    assert!(engine.wait_until_caught_up(Duration::from_secs(10)).await);
    let pull = |sql: &'static str| {
        let engine = &engine;
        async move {
            match engine.query(sql, &BTreeMap::new()).await.expect(sql) {
                QueryResult::Pull(result) => result,
                QueryResult::Push(_) => panic!("{sql} is a pull query"),
            }
        }
    };
    let one = pull("SELECT * FROM per_user WHERE user = 'ann';").await;
    let names: Vec<&str> = one.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["USER", "N", "LAST_PAGE"]);
    assert_eq!(one.rows, [vec![json!("ann"), json!(3), json!("e")]]);
    let ordered =
        pull("SELECT user, n FROM per_user WHERE n < 3 OR user LIKE 'z%' ORDER BY user;").await;
    assert_eq!(
        ordered.rows,
        [vec![json!("bob"), json!(1)], vec![json!("cy"), json!(1)]]
    );
    let total = pull("SELECT SUM(n) AS total FROM per_user;").await;
    assert_eq!(total.rows, [vec![json!(5)]]);
    let err = engine
        .query("SELECT * FROM nowhere;", &BTreeMap::new())
        .await
        .err()
        .expect("unknown source");
    assert!(err.to_string().contains("NOWHERE"), "{err}");
}

#[tokio::test]
async fn explain_prints_the_logical_and_the_physical_plan() {
    let (_dir, engine) = engine().await;
    engine
        .execute(
            "CREATE STREAM clicks (user STRING KEY, page STRING, ms INT) \
             WITH (kafka_topic='clicks', value_format='JSON', partitions=1);",
        )
        .await
        .unwrap();
    let result = engine
        .execute(
            "EXPLAIN CREATE TABLE per_user AS SELECT user, COUNT(*) AS n FROM clicks \
             WHERE ms > 10 GROUP BY user;",
        )
        .await
        .unwrap()
        .remove(0);
    let eddy_engine::StatementResult::Explain { logical, physical } = result else {
        panic!("{result:?}")
    };
    assert!(logical.contains("Aggregate"), "{logical}");
    assert!(logical.contains("Filter"), "{logical}");
    let lines: Vec<&str> = physical.lines().map(str::trim).collect();
    assert!(
        lines[0].starts_with("SinkExec: topic=PER_USER"),
        "{physical}"
    );
    assert!(lines[1].starts_with("ProjectExec"), "{physical}");
    assert!(lines[2].starts_with("AggregateExec"), "{physical}");
    assert!(lines[3].starts_with("FilterExec"), "{physical}");
    assert!(lines[4].starts_with("SourceExec: CLICKS"), "{physical}");
    // EXPLAIN runs nothing.
    assert!(engine.source("PER_USER").is_err());
}
