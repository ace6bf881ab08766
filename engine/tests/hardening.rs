//! No SQL can crash the engine: statements past the limits are refused with errors that name
//! them, deep but legal expressions plan and run, bad windows are refused, and a panic inside a
//! query's task stops that query alone (state ERROR, the reason in SHOW QUERIES and the
//! processing log) while everything else goes on. Method: an engine on an in-process broker;
//! panics are injected by a log client that panics when a query fetches one topic.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eddy_broker::{
    Broker, BrokerConfig, BrokerError, ConsumedRecord, InProcessClient, LogClient, OffsetRange,
    PartitionLag, ProducerRecord,
};
use eddy_engine::engine::COMMAND_TOPIC;
use eddy_engine::limits::{EXPRESSION_DEPTH_MAX, SQL_TEXT_BYTES_MAX};
use eddy_engine::{Engine, EngineError, QueryResult, StatementResult};

type Result<T> = std::result::Result<T, BrokerError>;

/// An in-process client with faults: fetches of `poisoned` panic, as a bug in a task would;
/// produces to the command topic fail while `command_topic_down` is set.
struct FaultyClient {
    inner: InProcessClient,
    poisoned: &'static str,
    command_topic_down: AtomicBool,
}

impl FaultyClient {
    async fn open(dir: &std::path::Path, poisoned: &'static str) -> FaultyClient {
        let broker = Broker::open(BrokerConfig::new(dir)).await.expect("broker");
        FaultyClient {
            inner: InProcessClient::new(broker),
            poisoned,
            command_topic_down: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl LogClient for FaultyClient {
    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<()> {
        self.inner.create_topic(name, partitions, configs).await
    }
    async fn delete_topic(&self, name: &str) -> Result<()> {
        self.inner.delete_topic(name).await
    }
    async fn partition_count(&self, topic: &str) -> Result<i32> {
        self.inner.partition_count(topic).await
    }
    async fn topics(&self) -> Result<Vec<(String, i32)>> {
        self.inner.topics().await
    }
    async fn produce(&self, topic: &str, records: Vec<ProducerRecord>) -> Result<Vec<(i32, i64)>> {
        if topic == COMMAND_TOPIC && self.command_topic_down.load(Ordering::SeqCst) {
            let error = std::io::Error::other("injected fault: disk gone");
            return Err(BrokerError::Storage(error));
        }
        self.inner.produce(topic, records).await
    }
    async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Vec<ConsumedRecord>> {
        let records = self
            .inner
            .fetch(topic, partition, offset, max_bytes, max_wait)
            .await?;
        if topic == self.poisoned && !records.is_empty() {
            panic!("injected fault reading {topic}");
        }
        Ok(records)
    }
    async fn offsets(&self, topic: &str, partition: i32) -> Result<OffsetRange> {
        self.inner.offsets(topic, partition).await
    }
    async fn commit(&self, group: &str, offsets: &[(String, i32, i64)]) -> Result<()> {
        self.inner.commit(group, offsets).await
    }
    async fn committed(&self, group: &str, topic: &str, partition: i32) -> Result<Option<i64>> {
        self.inner.committed(group, topic, partition).await
    }
    async fn lag(&self, group: &str) -> Result<Vec<PartitionLag>> {
        self.inner.lag(group).await
    }
    async fn init_transactions(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
    ) -> Result<eddy_broker::TransactionalProducer> {
        self.inner
            .init_transactions(transactional_id, timeout_ms)
            .await
    }
    async fn commit_transaction(
        &self,
        producer: &eddy_broker::TransactionalProducer,
        transaction: eddy_broker::Transaction,
    ) -> Result<()> {
        self.inner.commit_transaction(producer, transaction).await
    }
}

fn sql_error(result: std::result::Result<Vec<StatementResult>, EngineError>) -> String {
    match result {
        Ok(_) => panic!("the statement must be refused"),
        Err(e) => e.to_string(),
    }
}

/// An engine with a stream `s (id INT KEY, x INT)` over a one-partition JSON topic.
async fn engine_with_stream_s() -> (tempfile::TempDir, Engine) {
    let (dir, engine) = common::engine().await;
    engine
        .execute(
            "CREATE STREAM s (id INT KEY, x INT) WITH (kafka_topic='s', value_format='JSON', \
             partitions=1);",
        )
        .await
        .expect("set up");
    (dir, engine)
}

async fn queries(engine: &Engine) -> Vec<eddy_engine::QuerySummary> {
    match engine.execute("SHOW QUERIES;").await.expect("show").pop() {
        Some(StatementResult::Queries(queries)) => queries,
        _ => panic!("SHOW QUERIES lists queries"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expressions_past_the_depth_limit_are_refused_and_those_within_it_run() {
    let (_dir, engine) = common::engine().await;
    engine
        .execute(
            "CREATE STREAM s (id INT KEY, x INT) WITH (kafka_topic='s', value_format='JSON', \
             partitions=1); INSERT INTO s (id, x) VALUES (1, 7);",
        )
        .await
        .expect("set up");
    // A few thousand OR terms (about 40 KB): once this overflowed a stack and aborted.
    let chain = |terms: usize| {
        (0..terms)
            .map(|i| format!("x = {i}"))
            .collect::<Vec<_>>()
            .join(" OR ")
    };
    for sql in [
        format!("SELECT * FROM s WHERE {};", chain(4_000)),
        format!(
            "EXPLAIN SELECT * FROM s WHERE {} EMIT CHANGES;",
            chain(4_000)
        ),
        format!("CREATE STREAM t AS SELECT * FROM s WHERE {};", chain(4_000)),
    ] {
        let refused = match sql.starts_with("SELECT") {
            true => engine.query(&sql, &BTreeMap::new()).await.err(),
            false => engine.execute(&sql).await.err(),
        }
        .expect("refused")
        .to_string();
        assert!(
            refused.contains("sql.expression.depth.max"),
            "the error names the limit: {refused}"
        );
    }
    // Deep prefix operators and brackets stop at the parser's own nesting limit.
    let error = sql_error(
        engine
            .execute(&format!(
                "SELECT * FROM s WHERE {}x > 0;",
                "- ".repeat(100_000)
            ))
            .await,
    );
    assert!(error.to_lowercase().contains("recursion limit"), "{error}");
    // Within the limit, a long chain plans, EXPLAINs and runs.
    // 999 terms: the leftmost comparison sits exactly at the limit.
    let within = chain(EXPRESSION_DEPTH_MAX - 1);
    engine
        .execute(&format!(
            "EXPLAIN SELECT * FROM s WHERE {within} EMIT CHANGES;"
        ))
        .await
        .expect("EXPLAIN within the limit");
    let pull = engine
        .query(
            &format!("SELECT * FROM s WHERE {within};"),
            &BTreeMap::new(),
        )
        .await;
    // Pull queries over a stream may be refused by planning rules, but never by the limit.
    if let Err(e) = pull {
        assert!(!e.to_string().contains("depth"), "{e}");
    }
    engine
        .execute(&format!(
            "CREATE STREAM t AS SELECT * FROM s WHERE {within};"
        ))
        .await
        .expect("a persistent query within the limit");
    assert!(engine.wait_until_caught_up(Duration::from_secs(20)).await);
    assert!(queries(&engine).await.iter().all(|q| q.state == "RUNNING"));
}

#[tokio::test]
async fn sql_text_past_the_size_limit_is_refused() {
    let (_dir, engine) = common::engine().await;
    let sql = format!("SELECT '{}' FROM s;", "a".repeat(SQL_TEXT_BYTES_MAX));
    let error = sql_error(engine.execute(&sql).await);
    assert!(error.contains("sql.text.bytes.max"), "{error}");
}

#[tokio::test]
async fn bad_windows_are_refused_with_kafka_streams_words() {
    let (_dir, engine) = engine_with_stream_s().await;
    let cases = [
        (
            "TUMBLING (SIZE 0 SECONDS)",
            "Window size (sizeMs) must be larger than zero.",
        ),
        (
            "HOPPING (SIZE 10 SECONDS, ADVANCE BY 0 SECONDS)",
            "Window advancement interval should be more than zero",
        ),
        (
            "HOPPING (SIZE 10 SECONDS, ADVANCE BY 20 SECONDS)",
            "but given advancement interval is: 20000 ms",
        ),
        (
            "HOPPING (SIZE 1 DAY, ADVANCE BY 1 MILLISECOND)",
            "sql.window.windows.per.row.max",
        ),
        (
            "SESSION (0 SECONDS)",
            "Gap time cannot be zero or negative.",
        ),
        (
            "TUMBLING (SIZE 9223372036854775807 DAYS)",
            "longer than the limit",
        ),
    ];
    for (window, expected) in cases {
        let sql = format!(
            "CREATE TABLE c AS SELECT id, COUNT(*) AS n FROM s WINDOW {window} GROUP BY id;"
        );
        let error = sql_error(engine.execute(&sql).await);
        assert!(error.contains(expected), "{window}: {error}");
    }
    assert!(queries(&engine).await.is_empty(), "no query started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_query_task_fails_that_query_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::new(Arc::new(FaultyClient::open(dir.path(), "poison").await));
    engine
        .execute(
            "CREATE STREAM bad (id INT KEY, x INT) WITH (kafka_topic='poison', \
             value_format='JSON', partitions=2); \
             CREATE STREAM good (id INT KEY, x INT) WITH (kafka_topic='good', \
             value_format='JSON', partitions=1); \
             CREATE STREAM bad_copy AS SELECT * FROM bad; \
             CREATE STREAM good_copy AS SELECT * FROM good; \
             INSERT INTO bad (id, x) VALUES (1, 1);",
        )
        .await
        .expect("set up");
    let mut properties = BTreeMap::new();
    properties.insert("auto.offset.reset".to_string(), "earliest".to_string());
    let QueryResult::Push(mut push) = engine
        .query("SELECT * FROM bad EMIT CHANGES;", &properties)
        .await
        .expect("push query")
    else {
        panic!("a push query");
    };
    // The push query's rows end, and it says why.
    let ended = tokio::time::timeout(Duration::from_secs(10), push.rows.recv()).await;
    assert!(matches!(ended, Ok(None)), "the push query ends");
    let failure = push.failure.get().expect("the push query failed");
    assert!(failure.contains("injected fault"), "{failure}");
    // The persistent query reading the poisoned topic is in ERROR; the other runs on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let all = queries(&engine).await;
        if let Some(q) = all.iter().find(|q| q.state == "ERROR") {
            break q.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no query failed: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(failed.id.starts_with("CSAS_BAD_COPY"), "{failed:?}");
    assert!(failed.error.expect("reason").contains("injected fault"));
    assert!(
        engine.processing_errors(&failed.id) >= 1,
        "in the processing log"
    );
    engine
        .execute("INSERT INTO good (id, x) VALUES (2, 2);")
        .await
        .expect("the engine still takes statements");
    assert!(engine.wait_until_caught_up(Duration::from_secs(10)).await);
    let range = engine
        .client()
        .offsets("GOOD_COPY", 0)
        .await
        .expect("sink topic");
    assert_eq!(range.high_watermark, 1, "the healthy query copied its row");
}

#[tokio::test]
async fn internal_topics_cannot_be_written_or_dropped_through_sql() {
    let (_dir, engine) = engine_with_stream_s().await;
    for sql in [
        "CREATE STREAM c (v STRING) WITH (kafka_topic='_eddy_command_topic', \
         value_format='KAFKA');",
        "CREATE STREAM o (v STRING) WITH (kafka_topic='__consumer_offsets', \
         value_format='KAFKA');",
        "CREATE STREAM p (v STRING) WITH (kafka_topic='eddy_processing_log', \
         value_format='JSON');",
        "CREATE STREAM w WITH (kafka_topic='_eddy_command_topic', value_format='JSON') AS \
         SELECT * FROM s;",
        "DROP STREAM KSQL_PROCESSING_LOG;",
    ] {
        let error = sql_error(engine.execute(sql).await);
        assert!(error.contains("internal"), "{sql}: {error}");
    }
    let error = sql_error(
        engine
            .execute("INSERT INTO KSQL_PROCESSING_LOG (QUERY_ID) VALUES ('x');")
            .await,
    );
    assert!(error.contains("read-only"), "{error}");
    assert!(engine.source("KSQL_PROCESSING_LOG").is_ok(), "still there");
}

/// A statement is in the command topic before it takes effect: when the command topic cannot
/// be written, the statement fails and changes nothing; refused statements are never recorded;
/// a restart replays exactly what was accepted, with the same query ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_recorded_before_they_take_effect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = Arc::new(FaultyClient::open(dir.path(), "none").await);
    let engine = Engine::open(Arc::clone(&client) as Arc<dyn LogClient>)
        .await
        .expect("engine");
    engine
        .execute(
            "CREATE STREAM s (id INT KEY, x INT) WITH (kafka_topic='s', value_format='JSON', \
             partitions=1); CREATE STREAM a AS SELECT * FROM s;",
        )
        .await
        .expect("set up");
    client.command_topic_down.store(true, Ordering::SeqCst);
    for sql in [
        "CREATE STREAM t (id INT KEY) WITH (kafka_topic='t', value_format='JSON', partitions=1);",
        "CREATE STREAM b AS SELECT * FROM s;",
        "TERMINATE CSAS_A_1;",
        "DROP STREAM s;",
    ] {
        sql_error(engine.execute(sql).await);
    }
    assert!(engine.source("T").is_err(), "no source without its record");
    assert!(engine.source("B").is_err(), "no query without its record");
    let ids: Vec<String> = queries(&engine).await.into_iter().map(|q| q.id).collect();
    assert_eq!(ids, ["CSAS_A_1"], "nothing terminated without its record");
    assert!(
        engine.source("S").is_ok(),
        "nothing dropped without its record"
    );
    client.command_topic_down.store(false, Ordering::SeqCst);
    // Refused statements are not recorded; the numbering goes on after the failed CSAS.
    sql_error(
        engine
            .execute("CREATE STREAM c AS SELECT nope FROM s;")
            .await,
    );
    engine
        .execute("CREATE STREAM c AS SELECT * FROM s;")
        .await
        .expect("accepted");
    let before: Vec<String> = queries(&engine).await.into_iter().map(|q| q.id).collect();
    drop(engine);
    let replayed = Engine::open(client as Arc<dyn LogClient>)
        .await
        .expect("reopen");
    let after: Vec<String> = queries(&replayed).await.into_iter().map(|q| q.id).collect();
    assert_eq!(before, after, "replay gives the same queries and ids");
}

/// A batch whose output fails on one row once failed whole and was run again record by
/// record, applying every record to the aggregate twice. Now the state takes each record
/// once, the row whose output fails (10 / 0) is left out and logged once, the rest emitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_failing_after_the_state_took_it_is_applied_and_logged_once() {
    let (_dir, engine) = common::engine().await;
    let mut setup = String::from(
        "CREATE STREAM s (id INT KEY, x INT) WITH (kafka_topic='s', value_format='JSON', \
         partitions=1);",
    );
    // Group 1's sum goes 1, 3, 7: its second update divides by zero.
    for (id, x) in [(1, 1), (1, 2), (2, 5), (2, 1), (1, 4)] {
        setup.push_str(&format!("INSERT INTO s (id, x) VALUES ({id}, {x});"));
    }
    engine.execute(&setup).await.expect("set up");
    engine
        .execute(
            "CREATE TABLE t AS SELECT id, COUNT(*) AS n, 10 / (SUM(x) - 3) AS r FROM s \
             GROUP BY id;",
        )
        .await
        .expect("query");
    assert!(engine.wait_until_caught_up(Duration::from_secs(20)).await);
    let QueryResult::Pull(pull) = engine
        .query("SELECT id, n FROM t ORDER BY id;", &BTreeMap::new())
        .await
        .expect("pull")
    else {
        panic!("a pull query");
    };
    let rows: Vec<String> = pull
        .rows
        .iter()
        .map(|r| format!("{}={}", r[0], r[1]))
        .collect();
    assert_eq!(rows, ["1=3", "2=2"], "each record counted once");
    let id = queries(&engine).await[0].id.clone();
    assert_eq!(
        engine.processing_errors(&id),
        1,
        "the failed row is logged once"
    );
}

/// CREATE OR REPLACE ... AS SELECT once started a second query writing the same sink, so
/// every later row was written twice. Now the query is replaced in place: same id, one
/// writer, resuming from where the old one stopped; changes ksqlDB cannot upgrade are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_or_replace_replaces_the_query_in_place() {
    let (_dir, engine) = common::engine().await;
    engine
        .execute(
            "CREATE STREAM s (id INT KEY, x INT) WITH (kafka_topic='s', value_format='JSON', \
             partitions=1); \
             CREATE STREAM a AS SELECT id, x FROM s; \
             INSERT INTO s (id, x) VALUES (1, 1);",
        )
        .await
        .expect("set up");
    assert!(engine.wait_until_caught_up(Duration::from_secs(20)).await);
    engine
        .execute("CREATE OR REPLACE STREAM a AS SELECT id, x, x * 2 AS y FROM s;")
        .await
        .expect("replace");
    let ids: Vec<String> = queries(&engine).await.into_iter().map(|q| q.id).collect();
    assert_eq!(ids, ["CSAS_A_1"], "one writer, same id");
    engine
        .execute("INSERT INTO s (id, x) VALUES (2, 2);")
        .await
        .expect("insert");
    assert!(engine.wait_until_caught_up(Duration::from_secs(20)).await);
    let records = engine
        .client()
        .fetch("A", 0, 0, 1 << 20, Duration::from_millis(100))
        .await
        .expect("sink");
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).to_string())
        .collect();
    assert_eq!(values, [r#"{"X":1}"#, r#"{"X":2,"Y":4}"#], "each row once");
    for (sql, expected) in [
        (
            "CREATE OR REPLACE STREAM a AS SELECT id, x * 3 AS z FROM s;",
            "columns may only be added",
        ),
        (
            "CREATE OR REPLACE TABLE a AS SELECT id, COUNT(*) AS n FROM s GROUP BY id;",
            "not a TABLE",
        ),
    ] {
        let error = sql_error(engine.execute(sql).await);
        assert!(error.contains(expected), "{sql}: {error}");
    }
}

/// A function failing on one record (LPAD past its length limit) is null in that record's
/// output and goes to the processing log, and the query goes on. (DataFusion's LPAD once
/// panicked on a negative length and killed the query's task; Eddy's LPAD gives null there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_failing_on_a_record_is_null_there_and_logged() {
    let (_dir, engine) = common::engine().await;
    engine
        .execute(
            "CREATE STREAM s (id INT KEY, t STRING, n INT) WITH (kafka_topic='s', \
             value_format='JSON', partitions=1); \
             INSERT INTO s (id, t, n) VALUES (1, 'a', 3); \
             INSERT INTO s (id, t, n) VALUES (2, 'b', 2000000000); \
             INSERT INTO s (id, t, n) VALUES (3, 'c', -2); \
             CREATE STREAM padded AS SELECT id, LPAD(t, n, 'x') AS p FROM s;",
        )
        .await
        .expect("set up");
    assert!(engine.wait_until_caught_up(Duration::from_secs(20)).await);
    let all = queries(&engine).await;
    assert_eq!(all[0].state, "RUNNING", "{all:?}");
    assert_eq!(engine.processing_errors(&all[0].id), 1);
    let range = engine
        .client()
        .offsets("PADDED", 0)
        .await
        .expect("sink topic");
    // As in ksqlDB, the failing call is null and the record still goes through.
    assert_eq!(range.high_watermark, 3, "every record went through");
}

/// DEFINE belongs to the session that ran it and takes effect for the statements after it in
/// the same script, as in ksqlDB; UNDEFINE ends it; another session never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_defined_in_a_script_apply_to_its_later_statements_in_that_session_only() {
    let (_dir, engine) = common::engine().await;
    let mut session = eddy_engine::Session::default();
    let script = engine
        .execute_each_in(
            "DEFINE topic = 'vars_topic'; DEFINE col = 'n';\n\
             CREATE STREAM vars_s (${col} INT) \
             WITH (kafka_topic='${topic}', value_format='JSON', partitions=1);\n\
             UNDEFINE col;",
            &mut session,
        )
        .await
        .expect("the script parses");
    assert!(script.failure.is_none(), "{:?}", script.failure);
    assert_eq!(script.results.len(), 4);
    let described = engine
        .execute_each_in("DESCRIBE vars_s;", &mut session)
        .await
        .expect("describe");
    assert!(described.failure.is_none(), "{:?}", described.failure);
    // Variable names are case-insensitive (kept upper case).
    let variable = |name: &str| {
        session
            .variables
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(variable("topic").as_deref(), Some("vars_topic"));
    assert_eq!(variable("col"), None);

    // The UNDEFINE took effect for the statements after it.
    let after = engine
        .execute_each_in(
            "UNDEFINE topic; CREATE STREAM vars_t (n INT) WITH (kafka_topic='${topic}', \
             value_format='JSON', partitions=1);",
            &mut session,
        )
        .await
        .expect("split");
    let (_, error) = after.failure.expect("an undefined variable fails");
    assert!(
        error.to_string().contains("'topic' is not defined"),
        "{error}"
    );

    let other = engine
        .execute_each_in("DESCRIBE ${col};", &mut eddy_engine::Session::default())
        .await;
    assert!(other.is_err(), "another session has no variables");
}
