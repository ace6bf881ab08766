//! Eddy's own SQL behaviour tests: every `tests/sql/*.slt` file, in sqllogictest's format, run
//! against an engine on a fresh in-process broker (one per file).
//!
//! Statements run as the shell would send them. Queries run with `auto.offset.reset` set to
//! `earliest`: a pull query answers at once; a push query must have a LIMIT and its rows are
//! collected until the LIMIT ends it (30 s at most). Two statements are the runner's own:
//! - `WAIT;` waits until every persistent query has processed everything written so far (no
//!   sleeps in the files);
//! - `SHOW ...` answers with one row per name listed.
//!
//! Values print as sqllogictest expects: NULL for null, strings bare, numbers as JSON writes
//! them, arrays / maps / structs as compact JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use eddy_broker::{Broker, BrokerConfig, InProcessClient};
use eddy_engine::{Engine, QueryResult, StatementResult};
use serde_json::Value;
use sqllogictest::{DBOutput, DefaultColumnType};

/// How long a push query or WAIT may take before the statement fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// An engine as sqllogictest's database.
struct Eddy {
    engine: Engine,
    _data: tempfile::TempDir,
}

#[derive(Debug)]
struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

impl Eddy {
    async fn open() -> Result<Eddy, Failed> {
        let data = tempfile::tempdir().map_err(|e| Failed(e.to_string()))?;
        let broker = Broker::open(BrokerConfig::new(data.path()))
            .await
            .map_err(|e| Failed(e.to_string()))?;
        let engine = Engine::new(Arc::new(InProcessClient::new(broker)));
        Ok(Eddy {
            engine,
            _data: data,
        })
    }

    async fn query(&self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Failed> {
        let earliest = BTreeMap::from([("auto.offset.reset".into(), "earliest".into())]);
        let answer = self.engine.query(sql, &earliest).await.map_err(failed)?;
        let (columns, rows) = match answer {
            QueryResult::Pull(pull) => (pull.columns, pull.rows),
            QueryResult::Push(mut push) => {
                if push.limit.is_none() {
                    return Err(Failed("push queries in .slt files need a LIMIT".into()));
                }
                let columns = push
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.data_type.to_string()))
                    .collect();
                let mut rows = Vec::new();
                loop {
                    match tokio::time::timeout(PATIENCE, push.rows.recv()).await {
                        Ok(Some(row)) if !row.tombstone => rows.push(row.values),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            return Err(Failed(format!(
                                "the push query's LIMIT was not reached in {PATIENCE:?}; rows so \
                                 far: {rows:?}"
                            )))
                        }
                    }
                    if push.limit.is_some_and(|limit| rows.len() >= limit) {
                        break;
                    }
                }
                (columns, rows)
            }
            QueryResult::Print(_) => return Err(Failed("PRINT is not a query here".into())),
        };
        Ok(DBOutput::Rows {
            types: columns.iter().map(|(_, t)| column_type(t)).collect(),
            rows: rows
                .iter()
                .map(|row| row.iter().map(text).collect())
                .collect(),
        })
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Eddy {
    type Error = Failed;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, Failed> {
        let words: Vec<String> = sql
            .split_whitespace()
            .take(2)
            .map(|w| w.trim_end_matches(';').to_uppercase())
            .collect();
        match words.first().map(String::as_str) {
            Some("WAIT") => {
                return match self.engine.wait_until_caught_up(PATIENCE).await {
                    true => Ok(DBOutput::StatementComplete(0)),
                    false => Err(Failed("the persistent queries did not catch up".into())),
                }
            }
            Some("SELECT") => return self.query(sql).await,
            _ => {}
        }
        let mut results = self.engine.execute(sql).await.map_err(failed)?;
        let names: Vec<String> = match results.pop() {
            Some(StatementResult::Sources { sources, .. }) => {
                sources.iter().map(|s| s.name.clone()).collect()
            }
            Some(StatementResult::Queries(queries)) => queries.into_iter().map(|q| q.id).collect(),
            Some(StatementResult::Topics(topics)) => {
                topics.into_iter().map(|(name, _)| name).collect()
            }
            Some(StatementResult::Functions(functions)) => {
                functions.iter().map(|f| f.name.to_string()).collect()
            }
            _ => return Ok(DBOutput::StatementComplete(0)),
        };
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Text],
            rows: names.into_iter().map(|n| vec![n]).collect(),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "eddy"
    }

    async fn sleep(duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

fn failed(error: eddy_engine::EngineError) -> Failed {
    Failed(error.to_string())
}

fn column_type(sql_type: &str) -> DefaultColumnType {
    match sql_type {
        "INT" | "INTEGER" | "BIGINT" => DefaultColumnType::Integer,
        "DOUBLE" => DefaultColumnType::FloatingPoint,
        t if t.starts_with("DECIMAL") => DefaultColumnType::FloatingPoint,
        "STRING" | "VARCHAR" => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::String(s) if s.is_empty() => "(empty)".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "slt"))
        .collect();
    files.sort();
    files
}

fn main() {
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut failures = Vec::new();
    let mut passed = 0;
    for file in files() {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let outcome = runtime.block_on(async {
            let mut runner = sqllogictest::Runner::new(Eddy::open);
            runner.run_file_async(&file).await
        });
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("ok      {name}");
            }
            Err(error) => {
                println!("FAILED  {name}\n{}\n", error.display(true));
                failures.push(name);
            }
        }
    }
    println!("{passed} passed, {} failed", failures.len());
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
