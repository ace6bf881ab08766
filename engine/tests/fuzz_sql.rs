//! Property: no SQL text panics the engine. Statements built from ksqlDB's tokens, and valid
//! statements with tokens dropped, repeated or swapped, go through parsing, planning, EXPLAIN
//! and execution (pull and push queries, persistent queries); each gives a result or an error,
//! never a panic, a hang or a query in state ERROR. proptest prints the failing statement; the
//! case count is bounded so CI spends seconds here (`PROPTEST_CASES` runs more).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use eddy_engine::{Engine, QueryResult, StatementResult};
use proptest::prelude::*;

/// Valid statements over the streams `set_up` creates: the seeds that mutations start from.
const SEEDS: &[&str] = &[
    "SELECT * FROM s WHERE x > 1 EMIT CHANGES",
    "SELECT id, COUNT(*) AS n FROM s WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY id EMIT CHANGES",
    "SELECT id, SUM(x) FROM s WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 5 SECONDS) \
     GROUP BY id EMIT FINAL",
    "SELECT id, COUNT(*) FROM s WINDOW SESSION (30 SECONDS) GROUP BY id EMIT CHANGES",
    "SELECT s.id, t.y FROM s JOIN t WITHIN 1 HOUR ON s.id = t.id EMIT CHANGES",
    "SELECT id, AVG(x) OVER (PARTITION BY id ORDER BY ROWTIME ROWS BETWEEN 2 PRECEDING AND \
     CURRENT ROW) FROM s EMIT CHANGES",
    "SELECT id, CAST(x AS STRING) + 'a', FORMAT_TIMESTAMP(ROWTIME, 'yyyy-MM-dd HH') FROM s \
     PARTITION BY x EMIT CHANGES",
    "SELECT id, CASE WHEN x IN (1, 2, 3) THEN 'a' ELSE LCASE(name) END FROM s EMIT CHANGES",
    "SELECT FORMAT_DATE(FROM_DAYS(x), 'yyyy-MM-dd HH:mm'), EXPLODE(ARRAY[1, 2]) FROM s \
     EMIT CHANGES",
    "SELECT * FROM agg WHERE id = 1",
    "INSERT INTO s (id, x, name) VALUES (1, 2, 'n')",
    "CREATE STREAM u AS SELECT id, x * 2 AS y FROM s WHERE name LIKE 'a%'",
    "CREATE TABLE v AS SELECT id, MAX(x) AS m FROM s GROUP BY id HAVING COUNT(*) > 1",
    "CREATE STREAM w (k STRING KEY, v INT) WITH (kafka_topic='w', value_format='DELIMITED', \
     partitions=2)",
    "DROP STREAM IF EXISTS u",
    "DESCRIBE EXTENDED s",
];

/// Tokens that statements are made of, junk included.
const TOKENS: &[&str] = &[
    "SELECT",
    "*",
    "FROM",
    "s",
    "t",
    "agg",
    "WHERE",
    "x",
    "id",
    "name",
    "=",
    "<",
    ">",
    "1",
    "0",
    "-1",
    "9223372036854775807",
    "1.5e308",
    "'a'",
    "''",
    "NULL",
    "(",
    ")",
    ",",
    "AND",
    "OR",
    "NOT",
    "+",
    "-",
    "/",
    "%",
    "||",
    "GROUP",
    "BY",
    "HAVING",
    "WINDOW",
    "TUMBLING",
    "HOPPING",
    "SESSION",
    "SIZE",
    "ADVANCE",
    "GRACE",
    "PERIOD",
    "RETENTION",
    "SECONDS",
    "DAYS",
    "MILLISECOND",
    "EMIT",
    "CHANGES",
    "FINAL",
    "JOIN",
    "LEFT",
    "ON",
    "WITHIN",
    "PARTITION",
    "LIMIT",
    "CAST",
    "AS",
    "INT",
    "STRING",
    "ARRAY",
    "[",
    "]",
    "MAP",
    "STRUCT",
    "->",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "IN",
    "LIKE",
    "BETWEEN",
    "COUNT",
    "SUM",
    "MAX",
    "OVER",
    "ORDER",
    "ROWS",
    "PRECEDING",
    "CURRENT",
    "ROW",
    "ROWTIME",
    "WINDOWSTART",
    "EXPLODE",
    "FORMAT_TIMESTAMP",
    "'yyyy-MM-dd'",
    "'HH:mm'",
    "FROM_DAYS",
    "CREATE",
    "STREAM",
    "TABLE",
    "INSERT",
    "INTO",
    "VALUES",
    "WITH",
    "kafka_topic",
    "'_eddy_command_topic'",
    "EXPLAIN",
    "DROP",
    "TERMINATE",
    "ALL",
    "DEFINE",
    "${v}",
    "`q`",
    "\"d\"",
    ";",
];

async fn set_up() -> (tempfile::TempDir, Engine) {
    let (dir, engine) = common::engine().await;
    engine
        .execute(
            "CREATE STREAM s (id INT KEY, x INT, name STRING) WITH (kafka_topic='s', \
             value_format='JSON', partitions=2); \
             CREATE STREAM t (id INT KEY, y STRING) WITH (kafka_topic='t', \
             value_format='JSON', partitions=2); \
             CREATE TABLE agg AS SELECT id, COUNT(*) AS n FROM s GROUP BY id; \
             INSERT INTO s (id, x, name) VALUES (1, 20000, 'ann'); \
             INSERT INTO t (id, y) VALUES (1, 'y');",
        )
        .await
        .expect("set up");
    (dir, engine)
}

/// Runs `sql` every way the engine takes SQL; panics only if the engine does.
async fn run_every_way(engine: &Engine, sql: &str) {
    let _ = engine.execute(&format!("EXPLAIN {sql};")).await;
    let properties = BTreeMap::from([("auto.offset.reset".into(), "earliest".into())]);
    match engine.query(&format!("{sql};"), &properties).await {
        Ok(QueryResult::Push(mut push)) => {
            // A row or two, then the query is dropped (and so ends).
            let _ = tokio::time::timeout(Duration::from_millis(200), push.rows.recv()).await;
            if let Some(failure) = push.failure.get() {
                panic!("push query failed on {sql:?}: {failure}");
            }
        }
        Ok(_) | Err(_) => {}
    }
    let _ = engine.execute(&format!("{sql};")).await;
    let _ = engine
        .wait_until_caught_up(Duration::from_millis(500))
        .await;
    if let Ok(Some(StatementResult::Queries(queries))) =
        engine.execute("SHOW QUERIES;").await.map(|mut r| r.pop())
    {
        for query in queries {
            assert_eq!(query.state, "RUNNING", "{sql:?} left {query:?}");
        }
    }
}

/// A statement: a seed with tokens dropped, repeated or replaced, or tokens at random.
fn statement() -> impl Strategy<Value = String> {
    let seed = (
        0..SEEDS.len(),
        proptest::collection::vec((0..4u8, 0..64usize, 0..TOKENS.len()), 0..4),
    )
        .prop_map(|(seed, edits)| {
            let mut words: Vec<&str> = SEEDS[seed].split_whitespace().collect();
            for (kind, at, token) in edits {
                let at = at % (words.len() + 1);
                match kind {
                    0 if at < words.len() => {
                        words.remove(at);
                    }
                    1 if at < words.len() => words.insert(at, words[at]),
                    2 if at < words.len() => words[at] = TOKENS[token],
                    _ => words.insert(at, TOKENS[token]),
                }
            }
            words.join(" ")
        });
    let soup = proptest::collection::vec(0..TOKENS.len(), 1..40).prop_map(|tokens| {
        tokens
            .into_iter()
            .map(|t| TOKENS[t])
            .collect::<Vec<_>>()
            .join(" ")
    });
    prop_oneof![3 => seed, 1 => soup]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_statement_panics_the_engine(statements in proptest::collection::vec(statement(), 4)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (_dir, engine) = set_up().await;
            for sql in &statements {
                run_every_way(&engine, sql).await;
            }
        });
    }
}
