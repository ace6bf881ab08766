//! [`Engine`]: the facade REST and tests call. It parses statements, keeps the catalog, talks to
//! the log through [`LogClient`], and starts persistent queries.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::sql::sqlparser::ast::Expr;
use eddy_broker::{BrokerError, LogClient, ProducerRecord};
use parking_lot::Mutex;
use serde_json::Value;

use crate::catalog::{Catalog, Source};
use crate::error::{EngineError, Result};
use crate::functions::{
    self,
    catalog::{FunctionDescription, FunctionInfo},
};
use crate::parser::{self, ColumnDef, ParsedStatement, ShowKind, SourceKind, Statement};
use crate::print::{self, PrintRequest, TopicPrint};
use crate::pull::{self, PullResult};
use crate::query::{self, RunningQuery};
use crate::runtime::{Output, ProcessingLog, PushRow};
use crate::values;

/// What one statement produced, in the order ksqlDB's `/ksql` reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementResult {
    /// A command that changed something: ksqlDB's `currentStatus` message.
    Status {
        message: String,
        query_id: Option<String>,
    },
    /// SHOW STREAMS / TABLES.
    Sources {
        kind: ShowKind,
        sources: Vec<Arc<Source>>,
    },
    /// SHOW TOPICS: name and partition count.
    Topics(Vec<(String, i32)>),
    /// SHOW QUERIES: id, the statement, sink.
    Queries(Vec<(String, String, String)>),
    /// SHOW PROPERTIES.
    Properties(BTreeMap<String, String>),
    /// DESCRIBE [EXTENDED]; EXTENDED adds the statistics.
    Description {
        source: Arc<Source>,
        statistics: Option<SourceStatistics>,
    },
    /// EXPLAIN: the statement's logical and physical plans, as text.
    Explain { logical: String, physical: String },
    /// SHOW FUNCTIONS.
    Functions(Vec<FunctionInfo>),
    /// DESCRIBE FUNCTION.
    FunctionDescription(FunctionDescription),
}

/// What DESCRIBE EXTENDED adds: the queries around a source and its topic's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatistics {
    /// Persistent queries reading the source's topic.
    pub read_queries: Vec<String>,
    /// Persistent queries writing into the source.
    pub write_queries: Vec<String>,
    pub partitions: i32,
    /// Records in the topic (high watermarks less log starts, summed over partitions).
    pub total_messages: i64,
    /// Records read from the topic that a query could not process (the processing log).
    pub failed_messages: u64,
}

/// What [`Engine::execute_each`] did.
#[derive(Debug, Default)]
pub struct ExecutedScript {
    /// The statements that ran, with their results.
    pub results: Vec<(String, StatementResult)>,
    /// The statement that failed, if one did, and why.
    pub failure: Option<(String, EngineError)>,
}

/// A push query running for a caller: rows arrive on `rows` until the LIMIT, or until the
/// caller drops the receiver or calls [`Engine::close_query`].
pub struct PushQuery {
    pub query_id: String,
    /// The result columns, in order (the key columns flagged).
    pub columns: Vec<ColumnDef>,
    pub rows: tokio::sync::mpsc::Receiver<PushRow>,
    pub limit: Option<usize>,
}

/// A query's answer: a push query's stream of rows, a pull query's rows, or PRINT's lines.
pub enum QueryResult {
    Push(PushQuery),
    Pull(PullResult),
    Print(TopicPrint),
}

/// How many rows a push query may have in flight before the query waits for its caller.
const PUSH_BUFFER_ROWS: usize = 1024;

struct EngineState {
    catalog: Catalog,
    properties: BTreeMap<String, String>,
    variables: BTreeMap<String, String>,
    queries: BTreeMap<String, RunningQuery>,
    /// Push queries, by id; finished ones are swept on access.
    transient: BTreeMap<String, RunningQuery>,
    /// Numbers persistent queries (CSAS_X_1, ...): replaying the command topic gives every
    /// query the id, and so the committed offsets, it had.
    next_query_number: u64,
    next_push_number: u64,
}

/// The streaming SQL engine over one log.
pub struct Engine {
    client: Arc<dyn LogClient>,
    log: Arc<ProcessingLog>,
    state: Mutex<EngineState>,
    /// Whether statements are recorded in the command topic ([`Engine::open`]).
    durable: bool,
}

/// The topic [`Engine::open`] keeps statements in.
pub const COMMAND_TOPIC: &str = "_eddy_command_topic";

impl Engine {
    /// An engine reading and writing topics through `client`.
    pub fn new(client: Arc<dyn LogClient>) -> Engine {
        let mut catalog = Catalog::default();
        catalog.insert(processing_log_stream());
        Engine {
            log: Arc::new(ProcessingLog::new(Arc::clone(&client))),
            client,
            state: Mutex::new(EngineState {
                catalog,
                properties: BTreeMap::new(),
                variables: BTreeMap::new(),
                queries: BTreeMap::new(),
                transient: BTreeMap::new(),
                next_query_number: 1,
                next_push_number: 0,
            }),
            durable: false,
        }
    }

    /// An engine whose catalog and persistent queries survive restarts: every statement that
    /// changes them (CREATE, CREATE ... AS SELECT, INSERT INTO ... SELECT, DROP, TERMINATE)
    /// is appended to the command topic once it succeeded, and `open` replays the topic, so
    /// each query comes back with its id and resumes from its committed source offsets
    /// (aggregations rebuild their state from the source first). At-least-once.
    pub async fn open(client: Arc<dyn LogClient>) -> Result<Engine> {
        let mut engine = Engine::new(client);
        match engine.client.partition_count(COMMAND_TOPIC).await {
            Ok(_) => {}
            Err(BrokerError::UnknownTopicOrPartition { .. }) => {
                let configs = BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]);
                match engine.client.create_topic(COMMAND_TOPIC, 1, configs).await {
                    Ok(()) | Err(BrokerError::TopicAlreadyExists(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        let range = engine.client.offsets(COMMAND_TOPIC, 0).await?;
        let mut offset = range.log_start_offset;
        let mut replayed = 0;
        while offset < range.high_watermark {
            let records = engine
                .client
                .fetch(COMMAND_TOPIC, 0, offset, 1 << 20, std::time::Duration::ZERO)
                .await?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for record in records {
                let Some(value) = record.value else { continue };
                let text = String::from_utf8_lossy(&value).to_string();
                let statements = match parser::parse(&text, &BTreeMap::new()) {
                    Ok(statements) => statements,
                    Err(e) => {
                        tracing::error!(statement = %text, error = %e, "cannot replay a command");
                        continue;
                    }
                };
                for statement in statements {
                    if let Err(e) = engine.execute_one(statement).await {
                        tracing::error!(statement = %text, error = %e, "replaying a command failed");
                    }
                    replayed += 1;
                }
            }
        }
        tracing::info!(statements = replayed, "replayed the command topic");
        engine.durable = true;
        Ok(engine)
    }

    /// Runs one statement and, for a durable engine, records it in the command topic when it
    /// changed the catalog or the queries.
    async fn run_and_record(&self, parsed: ParsedStatement) -> Result<StatementResult> {
        let recorded = self.durable
            && matches!(
                parsed.statement,
                Statement::CreateSource { .. }
                    | Statement::CreateAsSelect { .. }
                    | Statement::InsertInto { .. }
                    | Statement::Drop { .. }
                    | Statement::Terminate { .. }
            );
        let text = parsed.text.clone();
        let result = self.execute_one(parsed).await?;
        if recorded {
            let record = ProducerRecord {
                value: Some(Bytes::from(format!("{text};"))),
                ..Default::default()
            };
            self.client.produce(COMMAND_TOPIC, vec![record]).await?;
        }
        Ok(result)
    }

    /// Records skipped by query `query_id` because they could not be processed.
    pub fn processing_errors(&self, query_id: &str) -> u64 {
        self.log.error_count(query_id)
    }

    /// DESCRIBE EXTENDED's figures for a source.
    async fn statistics(&self, source: &Source) -> SourceStatistics {
        let (read_queries, write_queries) = {
            let state = self.state.lock();
            let ids = |wanted: &dyn Fn(&RunningQuery) -> bool| -> Vec<String> {
                state
                    .queries
                    .iter()
                    .filter(|(_, q)| wanted(q))
                    .map(|(id, _)| id.clone())
                    .collect()
            };
            (
                ids(&|q| q.source_topics.contains(&source.topic)),
                ids(&|q| q.sink == source.name),
            )
        };
        let partitions = self
            .client
            .partition_count(&source.topic)
            .await
            .unwrap_or(0);
        let mut total_messages = 0;
        for partition in 0..partitions {
            if let Ok(range) = self.client.offsets(&source.topic, partition).await {
                total_messages += range.high_watermark - range.log_start_offset;
            }
        }
        SourceStatistics {
            read_queries,
            write_queries,
            partitions,
            total_messages,
            failed_messages: self.log.topic_error_count(&source.topic),
        }
    }

    /// The log this engine uses.
    pub fn client(&self) -> &Arc<dyn LogClient> {
        &self.client
    }

    /// Runs every statement in `sql` until one fails: the results so far, each with its
    /// statement's text, and the failure with its statement's text. A script that does not
    /// parse fails as a whole.
    pub async fn execute_each(&self, sql: &str) -> Result<ExecutedScript> {
        let variables = self.state.lock().variables.clone();
        let statements = parser::parse(sql, &variables)?;
        let mut script = ExecutedScript::default();
        for statement in statements {
            let text = statement.text.clone();
            match self.run_and_record(statement).await {
                Ok(result) => script.results.push((text, result)),
                Err(error) => {
                    script.failure = Some((text, error));
                    break;
                }
            }
        }
        Ok(script)
    }

    /// Runs every statement in `sql`, stopping at the first error.
    pub async fn execute(&self, sql: &str) -> Result<Vec<StatementResult>> {
        let variables = self.state.lock().variables.clone();
        let statements = parser::parse(sql, &variables)?;
        let mut results = Vec::with_capacity(statements.len());
        for statement in statements {
            results.push(self.run_and_record(statement).await?);
        }
        Ok(results)
    }

    async fn execute_one(&self, parsed: ParsedStatement) -> Result<StatementResult> {
        let ParsedStatement {
            statement, text, ..
        } = parsed;
        match statement {
            Statement::CreateSource {
                kind,
                name,
                or_replace,
                if_not_exists,
                source,
                columns,
                properties,
            } => {
                if let Some(exists) = self.check_new(kind, &name, or_replace, if_not_exists)? {
                    return Ok(exists);
                }
                let definition =
                    Source::from_definition(kind, &name, columns, &properties, source, &text)?;
                self.ensure_topic(&definition.topic, &properties, kind)
                    .await?;
                self.state.lock().catalog.insert(definition);
                Ok(status(format!("{} created", title(kind))))
            }
            Statement::CreateAsSelect {
                kind,
                name,
                or_replace,
                if_not_exists,
                properties,
                query,
            } => {
                if let Some(exists) = self.check_new(kind, &name, or_replace, if_not_exists)? {
                    return Ok(exists);
                }
                let catalog_snapshot = self.catalog_snapshot();
                let plan = query::plan_persistent(
                    &catalog_snapshot,
                    kind,
                    &name,
                    &properties,
                    &query,
                    &text,
                )
                .await?;
                self.ensure_topic(&plan.sink.topic, &plan.sink_topic_properties(), kind)
                    .await?;
                let prefix = match kind {
                    SourceKind::Stream => "CSAS",
                    SourceKind::Table => "CTAS",
                };
                let query_id = self.next_query_id(prefix, Some(&name));
                let running = query::start(
                    Arc::clone(&self.client),
                    Arc::clone(&self.log),
                    query_id.clone(),
                    plan.clone(),
                    Output::Topic,
                );
                let mut state = self.state.lock();
                state.catalog.insert(plan.sink.clone());
                state.queries.insert(query_id.clone(), running);
                Ok(StatementResult::Status {
                    message: format!("Created query with ID {query_id}"),
                    query_id: Some(query_id),
                })
            }
            Statement::InsertInto { target, query } => {
                let sink = self.state.lock().catalog.get(&target)?;
                if sink.read_only {
                    return Err(EngineError::Plan(format!(
                        "Cannot insert into read-only {}: {target}",
                        sink.kind.name().to_lowercase()
                    )));
                }
                if sink.kind != SourceKind::Stream {
                    return Err(EngineError::Plan(format!(
                        "INSERT INTO can only be used to insert into a stream. {target} is a table."
                    )));
                }
                let catalog_snapshot = self.catalog_snapshot();
                let mut plan = query::plan_persistent(
                    &catalog_snapshot,
                    SourceKind::Stream,
                    &target,
                    &BTreeMap::new(),
                    &query,
                    &text,
                )
                .await?;
                let shape = |columns: &[ColumnDef]| -> Vec<(String, String, bool)> {
                    columns
                        .iter()
                        .map(|c| (c.name.clone(), c.data_type.to_string(), c.key))
                        .collect()
                };
                if shape(&plan.sink.columns) != shape(&sink.columns) {
                    return Err(EngineError::Plan(format!(
                        "Incompatible schema between results and sink.\nResult schema is {}\nSink schema is {}",
                        schema_text(&plan.sink.columns),
                        schema_text(&sink.columns)
                    )));
                }
                plan.sink = Source {
                    statement: text.clone(),
                    ..(*sink).clone()
                };
                let query_id = self.next_query_id("INSERTQUERY", None);
                let running = query::start(
                    Arc::clone(&self.client),
                    Arc::clone(&self.log),
                    query_id.clone(),
                    plan,
                    Output::Topic,
                );
                self.state.lock().queries.insert(query_id.clone(), running);
                Ok(StatementResult::Status {
                    message: format!("Created query with ID {query_id}"),
                    query_id: Some(query_id),
                })
            }
            Statement::InsertValues {
                target,
                columns,
                values,
            } => {
                self.insert_values(&target, &columns, &values).await?;
                Ok(status(String::new()))
            }
            Statement::Drop {
                kind,
                name,
                if_exists,
                delete_topic,
            } => {
                let removed = {
                    let mut state = self.state.lock();
                    let writers: Vec<String> = state
                        .queries
                        .iter()
                        .filter(|(_, q)| q.sink == name)
                        .map(|(id, _)| id.clone())
                        .collect();
                    if !writers.is_empty() {
                        return Err(EngineError::Plan(format!(
                            "cannot drop {name}: queries write to it ({}); TERMINATE them first",
                            writers.join(", ")
                        )));
                    }
                    match state.catalog.get(&name) {
                        Ok(source) if source.kind != kind => {
                            return Err(EngineError::Plan(format!(
                                "{name} is a {}, not a {}: use DROP {}",
                                source.kind.name(),
                                kind.name(),
                                source.kind.name()
                            )))
                        }
                        Ok(source) if source.read_only && delete_topic => {
                            return Err(EngineError::Plan(format!(
                                "Cannot delete topic for read-only source: {name}"
                            )))
                        }
                        Ok(_) => state.catalog.remove(&name),
                        Err(_) if if_exists => None,
                        Err(e) => return Err(e),
                    }
                };
                if let (Some(source), true) = (&removed, delete_topic) {
                    self.client.delete_topic(&source.topic).await?;
                }
                Ok(status(format!(
                    "Source `{name}` (topic: {}) was dropped.",
                    removed.map(|s| s.topic.clone()).unwrap_or_default()
                )))
            }
            Statement::Show { kind, .. } => self.show(kind).await,
            Statement::Describe { name, extended } => {
                let source = self.state.lock().catalog.get(&name)?;
                let statistics = match extended {
                    true => Some(self.statistics(&source).await),
                    false => None,
                };
                Ok(StatementResult::Description { source, statistics })
            }
            Statement::DescribeFunction { name } => functions::catalog::describe(&name)
                .map(StatementResult::FunctionDescription)
                .ok_or(EngineError::NotFound {
                    kind: "function",
                    name: name.to_uppercase(),
                }),
            Statement::Terminate { query_id } => {
                let mut state = self.state.lock();
                let ids: Vec<String> = match query_id {
                    Some(id) => {
                        let id = id.to_uppercase();
                        if !state.queries.contains_key(&id) {
                            return Err(EngineError::NotFound {
                                kind: "query",
                                name: id,
                            });
                        }
                        vec![id]
                    }
                    None => state.queries.keys().cloned().collect(),
                };
                for id in &ids {
                    if let Some(query) = state.queries.remove(id) {
                        query.stop();
                    }
                }
                Ok(status(format!("Query terminated: {}", ids.join(", "))))
            }
            Statement::Set { name, value } => {
                self.state
                    .lock()
                    .properties
                    .insert(name.clone(), value.clone());
                Ok(status(format!("Property '{name}' set to '{value}'")))
            }
            Statement::Unset { name } => {
                self.state.lock().properties.remove(&name);
                Ok(status(format!("Property '{name}' unset")))
            }
            Statement::Define { name, value } => {
                self.state.lock().variables.insert(name, value);
                Ok(status(String::new()))
            }
            Statement::Undefine { name } => {
                self.state.lock().variables.remove(&name);
                Ok(status(String::new()))
            }
            Statement::Explain(inner) => {
                let catalog = self.catalog_snapshot();
                let plan = match *inner {
                    Statement::CreateAsSelect {
                        kind,
                        name,
                        properties,
                        query,
                        ..
                    } => {
                        query::plan_persistent(&catalog, kind, &name, &properties, &query, &text)
                            .await?
                    }
                    Statement::InsertInto { target, query } => {
                        query::plan_persistent(
                            &catalog,
                            SourceKind::Stream,
                            &target,
                            &BTreeMap::new(),
                            &query,
                            &text,
                        )
                        .await?
                    }
                    Statement::Select(select) if select.emit.is_some() => {
                        query::plan_push(&catalog, &select, &text).await?.0
                    }
                    other => {
                        return Err(EngineError::Unsupported(format!(
                            "EXPLAIN of {} statements (EXPLAIN takes CREATE ... AS SELECT, \
                             INSERT INTO ... SELECT or SELECT ... EMIT CHANGES)",
                            statement_name(&other)
                        )))
                    }
                };
                Ok(StatementResult::Explain {
                    logical: plan.logical_plan.clone(),
                    physical: plan.explain_physical(),
                })
            }
            other => Err(EngineError::Unsupported(format!(
                "{} statements",
                statement_name(&other)
            ))),
        }
    }

    /// Runs a SELECT: with EMIT CHANGES a push query (rows stream until LIMIT or close),
    /// otherwise a pull query over a snapshot. `properties` are the request's streams
    /// properties (`auto.offset.reset`: `earliest` or `latest`, the default).
    pub async fn query(
        &self,
        sql: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<QueryResult> {
        let variables = self.state.lock().variables.clone();
        let mut statements = parser::parse(sql, &variables)?;
        if statements.len() != 1 {
            return Err(EngineError::Plan(format!(
                "expected one SELECT statement, found {}",
                statements.len()
            )));
        }
        let parsed = statements.remove(0);
        let select =
            match parsed.statement {
                Statement::Select(select) => select,
                Statement::Print {
                    topic,
                    from_beginning,
                    interval,
                    limit,
                } => {
                    let request = PrintRequest {
                        topic,
                        from_beginning,
                        interval,
                        limit,
                    };
                    return Ok(QueryResult::Print(
                        print::start(Arc::clone(&self.client), request).await?,
                    ));
                }
                _ => return Err(EngineError::Plan(
                    "only SELECT and PRINT statements run as queries here: use /ksql for other \
                     statements"
                        .into(),
                )),
            };
        let catalog = self.catalog_snapshot();
        if select.emit.is_none() {
            return Ok(QueryResult::Pull(
                pull::run(&self.client, &catalog, &select).await?,
            ));
        }
        let (plan, limit) = query::plan_push(&catalog, &select, &parsed.text).await?;
        let reset_name = match properties.get("auto.offset.reset") {
            Some(value) => Some(value.clone()),
            None => self
                .state
                .lock()
                .properties
                .get("auto.offset.reset")
                .cloned(),
        };
        let reset = match reset_name.as_deref().map(str::to_lowercase).as_deref() {
            None | Some("latest") => eddy_broker::OffsetReset::Latest,
            Some("earliest") => eddy_broker::OffsetReset::Earliest,
            Some(other) => {
                return Err(EngineError::Plan(format!(
                    "auto.offset.reset must be 'earliest' or 'latest', not '{other}'"
                )))
            }
        };
        let (sender, rows) = tokio::sync::mpsc::channel(PUSH_BUFFER_ROWS);
        let columns = plan.sink.columns.clone();
        let query_id = {
            let mut state = self.state.lock();
            state.next_push_number += 1;
            format!("transient_{}_{}", plan.source.name, state.next_push_number)
        };
        let running = query::start(
            Arc::clone(&self.client),
            Arc::clone(&self.log),
            query_id.clone(),
            plan,
            Output::Rows { sender, reset },
        );
        let mut state = self.state.lock();
        state.transient.retain(|_, q| !q.finished());
        state.transient.insert(query_id.clone(), running);
        Ok(QueryResult::Push(PushQuery {
            query_id,
            columns,
            rows,
            limit,
        }))
    }

    /// Stops a push query; false when there is none of that id.
    pub fn close_query(&self, query_id: &str) -> bool {
        match self.state.lock().transient.remove(query_id) {
            Some(query) => {
                query.stop();
                true
            }
            None => false,
        }
    }

    /// The ids of the push queries still running.
    pub fn push_queries(&self) -> Vec<String> {
        let mut state = self.state.lock();
        state.transient.retain(|_, q| !q.finished());
        state.transient.keys().cloned().collect()
    }

    /// For CREATE: an answer when a source of that name exists and IF NOT EXISTS says to stop,
    /// an error when it exists and OR REPLACE is absent, nothing when the statement may go on.
    fn check_new(
        &self,
        kind: SourceKind,
        name: &str,
        or_replace: bool,
        if_not_exists: bool,
    ) -> Result<Option<StatementResult>> {
        let existing = self.state.lock().catalog.get(name).ok();
        let Some(existing) = existing else {
            return Ok(None);
        };
        if existing.read_only && or_replace {
            return Err(EngineError::Plan(format!(
                "Cannot add {} '{name}': CREATE OR REPLACE is not supported on source {}s.",
                existing.kind.name().to_lowercase(),
                existing.kind.name().to_lowercase()
            )));
        }
        if if_not_exists {
            return Ok(Some(status(format!(
                "{} {name} already exists",
                kind.name()
            ))));
        }
        if !or_replace {
            let name = name.to_string();
            return Err(EngineError::AlreadyExists {
                kind: kind_name(kind),
                name,
            });
        }
        Ok(None)
    }

    /// The stream or table named `name`.
    pub fn source(&self, name: &str) -> Result<Arc<Source>> {
        self.state.lock().catalog.get(name)
    }

    /// The first stream or table over `topic`, if any.
    pub fn source_for_topic(&self, topic: &str) -> Option<Arc<Source>> {
        self.state
            .lock()
            .catalog
            .sources()
            .find(|s| s.topic == topic)
            .cloned()
    }

    /// Waits until every persistent query has committed up to its source's high watermark
    /// (so its output for everything written so far is in its sink), or `timeout` passes.
    /// Returns whether they caught up. Tests use it instead of sleeping.
    pub async fn wait_until_caught_up(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut settled_rounds = 0;
        while tokio::time::Instant::now() < deadline {
            let queries: Vec<(String, String)> = self
                .state
                .lock()
                .queries
                .iter()
                .flat_map(|(id, q)| q.source_topics.iter().map(|t| (id.clone(), t.clone())))
                .collect();
            // A query holding rows back (OVER windows) has committed rows it has not emitted.
            let mut caught_up = !self.state.lock().queries.values().any(|q| q.holds_rows());
            for (id, topic) in &queries {
                let partitions = self.client.partition_count(topic).await.unwrap_or(0);
                for p in 0..partitions {
                    let Ok(range) = self.client.offsets(topic, p).await else {
                        continue;
                    };
                    let committed = self.client.committed(id, topic, p).await.ok().flatten();
                    if committed.unwrap_or(range.log_start_offset) < range.high_watermark {
                        caught_up = false;
                    }
                }
            }
            // Two settled rounds in a row: a chained query may still be writing the first time.
            settled_rounds = if caught_up { settled_rounds + 1 } else { 0 };
            if settled_rounds >= 2 {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        false
    }

    fn catalog_snapshot(&self) -> Catalog {
        let state = self.state.lock();
        let mut copy = Catalog::default();
        for source in state.catalog.sources() {
            copy.insert((**source).clone());
        }
        copy
    }

    /// The next persistent query id: `<prefix>_<name>_<n>`, or `<prefix>_<n>` without a name.
    fn next_query_id(&self, prefix: &str, name: Option<&str>) -> String {
        let mut state = self.state.lock();
        let n = state.next_query_number;
        state.next_query_number += 1;
        match name {
            Some(name) => format!("{prefix}_{name}_{n}"),
            None => format!("{prefix}_{n}"),
        }
    }

    /// Creates the source's topic when it does not exist and PARTITIONS says how.
    async fn ensure_topic(
        &self,
        topic: &str,
        properties: &BTreeMap<String, String>,
        kind: SourceKind,
    ) -> Result<()> {
        match self.client.partition_count(topic).await {
            Ok(_) => Ok(()),
            Err(BrokerError::UnknownTopicOrPartition { .. }) => {
                let Some(partitions) = properties.get("PARTITIONS") else {
                    return Err(EngineError::Plan(format!(
                        "topic '{topic}' does not exist: to create it for the {}, give PARTITIONS in the WITH clause",
                        kind.name().to_lowercase()
                    )));
                };
                let partitions: i32 = partitions.parse().map_err(|_| {
                    EngineError::Plan(format!("PARTITIONS must be a number, not '{partitions}'"))
                })?;
                let mut configs = BTreeMap::new();
                if kind == SourceKind::Table {
                    configs.insert("cleanup.policy".to_string(), "compact".to_string());
                }
                match self.client.create_topic(topic, partitions, configs).await {
                    Ok(()) | Err(BrokerError::TopicAlreadyExists(_)) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn show(&self, kind: ShowKind) -> Result<StatementResult> {
        Ok(match kind {
            ShowKind::Streams | ShowKind::Tables => {
                let wanted = if kind == ShowKind::Streams {
                    SourceKind::Stream
                } else {
                    SourceKind::Table
                };
                let sources = self
                    .state
                    .lock()
                    .catalog
                    .sources()
                    .filter(|s| s.kind == wanted)
                    .cloned()
                    .collect();
                StatementResult::Sources { kind, sources }
            }
            ShowKind::Queries => {
                let mut state = self.state.lock();
                state.transient.retain(|_, q| !q.finished());
                // Persistent queries with their sink; push queries have none.
                let persistent = state
                    .queries
                    .iter()
                    .map(|(id, q)| (id.clone(), q.statement.clone(), q.sink.clone()));
                let push = state
                    .transient
                    .iter()
                    .map(|(id, q)| (id.clone(), q.statement.clone(), String::new()));
                StatementResult::Queries(persistent.chain(push).collect())
            }
            ShowKind::Properties => {
                StatementResult::Properties(self.state.lock().properties.clone())
            }
            ShowKind::Topics => {
                let topics: Vec<String> = self
                    .state
                    .lock()
                    .catalog
                    .sources()
                    .map(|s| s.topic.clone())
                    .collect();
                let mut out = Vec::new();
                for topic in topics {
                    if let Ok(n) = self.client.partition_count(&topic).await {
                        out.push((topic, n));
                    }
                }
                out.sort();
                out.dedup();
                StatementResult::Topics(out)
            }
            ShowKind::Functions => StatementResult::Functions(functions::catalog::list()),
        })
    }

    async fn insert_values(&self, target: &str, names: &[String], values: &[Expr]) -> Result<()> {
        let source = self.state.lock().catalog.get(target)?;
        let names: Vec<String> = if names.is_empty() {
            source.columns.iter().map(|c| c.name.clone()).collect()
        } else {
            names.to_vec()
        };
        if names.len() != values.len() {
            return Err(EngineError::Plan(format!(
                "expected {} values for columns ({}), found {}",
                names.len(),
                names.join(", "),
                values.len()
            )));
        }
        let values = values::evaluate(values).await?;
        let row: BTreeMap<String, Value> = names.into_iter().zip(values).collect();
        self.insert_row(target, row).await
    }

    /// Writes one row to a stream or table: values by column name (matched exactly, then
    /// upper-cased), ROWTIME optional. What the broker acknowledged is durable as its
    /// acknowledgement promises.
    pub async fn insert_row(&self, target: &str, row: BTreeMap<String, Value>) -> Result<()> {
        self.insert_rows(target, vec![row])
            .await?
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Inserts rows into `target` with one write to its topic: one result per row, in order
    /// (a row that does not fit the schema fails alone). The error is about the target or the
    /// write, which then failed for every row.
    pub async fn insert_rows(
        &self,
        target: &str,
        rows: Vec<BTreeMap<String, Value>>,
    ) -> Result<Vec<Result<()>>> {
        let source = self.state.lock().catalog.get(target)?;
        if source.read_only {
            return Err(EngineError::Plan(format!(
                "Cannot insert values into read-only {}: {target}",
                source.kind.name().to_lowercase()
            )));
        }
        let mut results = Vec::with_capacity(rows.len());
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            match values::row_record(&source, target, row) {
                Ok(record) => {
                    records.push(record);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if !records.is_empty() {
            self.client.produce(&source.topic, records).await?;
        }
        Ok(results)
    }
}

/// KSQL_PROCESSING_LOG: the stream over the processing log's topic.
fn processing_log_stream() -> Source {
    use crate::runtime::processing_log::{COLUMNS, STREAM, TOPIC};
    let sql = format!(
        "CREATE STREAM {STREAM} ({COLUMNS}) WITH (KAFKA_TOPIC='{TOPIC}', VALUE_FORMAT='JSON')"
    );
    let parsed = parser::parse_one(&sql).expect("the processing log's definition parses");
    let Statement::CreateSource {
        kind,
        name,
        columns,
        properties,
        ..
    } = parsed.statement
    else {
        unreachable!("a CREATE STREAM");
    };
    Source::from_definition(kind, &name, columns, &properties, true, &sql)
        .expect("the processing log's definition is valid")
}

/// A schema as ksqlDB prints it in messages: "`K` STRING KEY, `V` BIGINT".
fn schema_text(columns: &[ColumnDef]) -> String {
    columns
        .iter()
        .map(|c| {
            let key = if c.key { " KEY" } else { "" };
            format!("`{}` {}{key}", c.name, c.data_type)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn status(message: String) -> StatementResult {
    StatementResult::Status {
        message,
        query_id: None,
    }
}

fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Stream => "stream",
        SourceKind::Table => "table",
    }
}

fn title(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Stream => "Stream",
        SourceKind::Table => "Table",
    }
}

fn statement_name(statement: &Statement) -> &'static str {
    match statement {
        Statement::Select(_) => "SELECT",
        Statement::Explain(_) => "EXPLAIN",
        Statement::Print { .. } => "PRINT",
        _ => "these",
    }
}
