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

/// The result of one statement.
async fn one(engine: &Engine, sql: &str) -> eddy_engine::StatementResult {
    let mut results = engine
        .execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(results.len(), 1, "{sql}");
    results.remove(0)
}

/// The physical plan EXPLAIN prints for a statement.
async fn explain(engine: &Engine, sql: &str) -> String {
    match one(engine, sql).await {
        eddy_engine::StatementResult::Explain { physical, .. } => physical,
        other => panic!("{other:?}"),
    }
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
                _ => panic!("{sql} is a pull query"),
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
    let result = one(
        &engine,
        "EXPLAIN CREATE TABLE per_user AS SELECT user, COUNT(*) AS n FROM clicks \
         WHERE ms > 10 GROUP BY user;",
    )
    .await;
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
    // Grouped by the source's key: each partition's task owns its users.
    assert!(
        lines[5].starts_with("TasksExec: one per partition, each owning its keys' state"),
        "{physical}"
    );
    // EXPLAIN runs nothing.
    assert!(engine.source("PER_USER").is_err());
    // Grouped by another column: through a repartition topic keyed by it.
    let physical = explain(
        &engine,
        "EXPLAIN CREATE TABLE per_page AS SELECT page, COUNT(*) AS n FROM clicks GROUP BY page;",
    )
    .await;
    assert!(
        physical.contains("RepartitionExec: [PAGE@1] into _eddy_<query id>_0_repartition"),
        "{physical}"
    );
    // A join of three sources: the first join is a stage writing to an internal topic, which
    // the query joins to the third source.
    engine
        .execute(
            "CREATE TABLE users (id STRING PRIMARY KEY, name STRING) \
             WITH (kafka_topic='users', value_format='JSON', partitions=1);\
             CREATE TABLE pages (url STRING PRIMARY KEY, title STRING) \
             WITH (kafka_topic='pages', value_format='JSON', partitions=1);",
        )
        .await
        .unwrap();
    let physical = explain(
        &engine,
        "EXPLAIN CREATE STREAM titled AS SELECT c.page AS page, u.name AS name, \
             p.title AS title FROM clicks c JOIN users u ON c.user = u.id \
             JOIN pages p ON c.page = p.url;",
    )
    .await;
    let lines: Vec<&str> = physical.lines().map(str::trim).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("JoinExec: Inner stream-table")),
        "{physical}"
    );
    assert!(
        lines.contains(&"SourceExec: __EDDY_STAGE_1 topic=_eddy_<query id>_S1_output key_format=KAFKA value_format=JSON"),
        "{physical}"
    );
    assert!(
        lines.contains(&"StageExec: __EDDY_STAGE_1 topic=_eddy_<query id>_S1_output"),
        "{physical}"
    );
    assert!(
        lines.contains(&"SourceExec: USERS topic=users key_format=KAFKA value_format=JSON"),
        "{physical}"
    );
    // A join on two conditions: keyed by the table's primary key, the other compared too.
    let physical = explain(
        &engine,
        "EXPLAIN CREATE STREAM matched AS SELECT c.user AS user, u.name AS name \
             FROM clicks c JOIN users u ON c.page = u.name AND c.user = u.id;",
    )
    .await;
    assert!(
        physical.contains("JoinExec: Inner stream-table on USER@0 = ID@0 and PAGE@1 = NAME@1"),
        "{physical}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn print_shows_a_topics_raw_records_up_to_its_limit() {
    let (_dir, engine) = engine().await;
    run(
        &engine,
        "CREATE STREAM pv (user STRING KEY, page STRING) \
         WITH (kafka_topic='pv', value_format='JSON', partitions=1);",
    )
    .await;
    run(&engine, "INSERT INTO pv (user, page) VALUES ('ann', '/a');").await;
    run(&engine, "INSERT INTO pv (user, page) VALUES ('bob', '/b');").await;
    run(&engine, "INSERT INTO pv (user, page) VALUES ('cy', '/c');").await;
    let QueryResult::Print(mut print) = engine
        .query(
            "PRINT pv FROM BEGINNING INTERVAL 2 LIMIT 2;",
            &BTreeMap::new(),
        )
        .await
        .expect("PRINT runs")
    else {
        panic!("PRINT answers with lines");
    };
    let mut text = String::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(10), print.lines.recv())
        .await
        .expect("lines")
    {
        text.push_str(&line);
    }
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Key format: KAFKA_STRING");
    assert_eq!(lines[1], "Value format: JSON or KAFKA_STRING");
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[2].ends_with(r#"key: ann, value: {"PAGE":"/a"}, partition: 0"#),
        "{text}"
    );
    assert!(
        lines[3].ends_with(r#"key: cy, value: {"PAGE":"/c"}, partition: 0"#),
        "{text}"
    );
    assert!(lines[2].starts_with("rowtime: 20"), "{text}");
    let missing = engine.query("PRINT nowhere;", &BTreeMap::new()).await;
    let message = missing
        .err()
        .expect("an unknown topic is an error")
        .to_string();
    assert!(
        message.contains("Could not find topic 'NOWHERE'"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histogram_counts_values_per_key_and_describe_extended_shows_the_queries() {
    let (_dir, engine) = engine().await;
    run(
        &engine,
        "CREATE STREAM pv (user STRING KEY, page STRING) \
         WITH (kafka_topic='pv', value_format='JSON', partitions=1);",
    )
    .await;
    run(
        &engine,
        "CREATE TABLE pages AS SELECT user, HISTOGRAM(page) AS pages FROM pv GROUP BY user;",
    )
    .await;
    for page in ["/a", "/b", "/a"] {
        run(
            &engine,
            &format!("INSERT INTO pv (user, page) VALUES ('ann', '{page}');"),
        )
        .await;
    }
    engine
        .execute("INSERT INTO pv (user, page) VALUES ('ann', NULL);")
        .await
        .unwrap();
    // A record that is not JSON: the query skips it and the processing log counts it.
    engine
        .client()
        .produce(
            "pv",
            vec![eddy_broker::ProducerRecord {
                key: Some("ann".into()),
                value: Some("not json".into()),
                ..Default::default()
            }],
        )
        .await
        .unwrap();
    assert!(engine.wait_until_caught_up(Duration::from_secs(10)).await);
    let QueryResult::Pull(result) = engine
        .query(
            "SELECT pages FROM pages WHERE user = 'ann';",
            &BTreeMap::new(),
        )
        .await
        .expect("pull query")
    else {
        panic!("a pull query");
    };
    assert_eq!(result.rows, [vec![json!({"/a": 2, "/b": 1})]]);

    let eddy_engine::StatementResult::Description { statistics, .. } =
        one(&engine, "DESCRIBE pv EXTENDED;").await
    else {
        panic!("DESCRIBE answers with a description");
    };
    let statistics = statistics.expect("EXTENDED adds statistics");
    assert_eq!(statistics.read_queries.len(), 1);
    assert!(statistics.read_queries[0].id.starts_with("CTAS_PAGES"));
    assert_eq!(statistics.total_messages, 5);
    assert_eq!(statistics.failed_messages, 1);
    assert_eq!(statistics.partitions, 1);
    let eddy_engine::StatementResult::Description { statistics, .. } =
        one(&engine, "DESCRIBE pages;").await
    else {
        panic!("DESCRIBE answers with a description");
    };
    assert!(statistics.is_none());
    // The writing query's operators: records in and out, and the aggregate's state (one
    // user). The record that is not JSON is read, but never reaches the aggregate.
    let eddy_engine::StatementResult::Description { statistics, .. } =
        one(&engine, "DESCRIBE pages EXTENDED;").await
    else {
        panic!("DESCRIBE answers with a description");
    };
    let statistics = statistics.expect("EXTENDED adds statistics");
    let [(query, operators)] = statistics.operators.as_slice() else {
        panic!("{:?}", statistics.operators);
    };
    assert!(query.starts_with("CTAS_PAGES"));
    let find = |name: &str| {
        operators
            .iter()
            .find(|o| o.operator == name)
            .unwrap_or_else(|| panic!("no {name} in {operators:?}"))
    };
    let source = find("SourceExec pv");
    assert_eq!((source.records_in, source.state_size), (5, None));
    let aggregate = find("AggregateExec");
    assert_eq!((aggregate.records_in, aggregate.state_size), (4, Some(1)));
    let sink = find("SinkExec PAGES");
    assert_eq!(sink.records_in, aggregate.records_out);
    assert!(sink.records_out >= 1, "{operators:?}");
}

#[tokio::test]
async fn show_functions_lists_what_runs_and_describe_function_its_variations() {
    let (_dir, engine) = engine().await;
    let eddy_engine::StatementResult::Functions(functions) = one(&engine, "SHOW FUNCTIONS;").await
    else {
        panic!("SHOW FUNCTIONS lists functions");
    };
    let names: Vec<&str> = functions.iter().map(|f| f.name).collect();
    for name in [
        "ABS",
        "SUBSTRING",
        "HISTOGRAM",
        "LATEST_BY_OFFSET",
        "EXPLODE",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let eddy_engine::StatementResult::FunctionDescription(ucase) =
        one(&engine, "DESCRIBE FUNCTION ucase;").await
    else {
        panic!("DESCRIBE FUNCTION describes");
    };
    assert_eq!(ucase.info.category, "STRING");
    assert!(
        ucase
            .variations
            .iter()
            .any(|(args, returns)| args == &["STRING"] && returns == "STRING"),
        "{:?}",
        ucase.variations
    );
    let unknown = engine
        .execute("DESCRIBE FUNCTION no_such;")
        .await
        .unwrap_err();
    assert!(unknown.to_string().contains("NO_SUCH"), "{unknown}");
}
