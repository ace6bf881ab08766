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
    /// INSERT ... VALUES wrote its row: ksqlDB answers it with no entity at all.
    Inserted,
    /// SHOW TOPICS: name and partition count.
    Topics(Vec<(String, i32)>),
    /// SHOW QUERIES.
    Queries(Vec<QuerySummary>),
    /// SHOW PROPERTIES: every property in effect for the session.
    Properties(Vec<crate::properties::Property>),
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

/// One query as SHOW QUERIES lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerySummary {
    pub id: String,
    pub statement: String,
    /// The stream or table it writes; empty for a push query.
    pub sink: String,
    /// ksqlDB's state: RUNNING or ERROR.
    pub state: &'static str,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

impl QuerySummary {
    fn of(id: &str, query: &RunningQuery) -> QuerySummary {
        QuerySummary {
            id: id.to_string(),
            statement: query.statement.clone(),
            sink: query.sink.clone(),
            state: query.state(),
            error: query.failure.get(),
        }
    }
}

/// One client's properties (SET, UNSET) and variables (DEFINE, UNDEFINE). They belong to the
/// session or request that set them, never to the whole server: the HTTP API gives each
/// request its own, from `streamsProperties` and `sessionVariables`, as ksqlDB does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    pub properties: BTreeMap<String, String>,
    pub variables: BTreeMap<String, String>,
}

/// What DESCRIBE EXTENDED adds: the queries around a source and its topic's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceStatistics {
    /// Persistent queries reading the source's topic.
    pub read_queries: Vec<QuerySummary>,
    /// Persistent queries writing into the source.
    pub write_queries: Vec<QuerySummary>,
    pub partitions: i32,
    /// Records in the topic (high watermarks less log starts, summed over partitions).
    pub total_messages: i64,
    /// Records read from the topic that a query could not process (the processing log).
    pub failed_messages: u64,
    /// Each query writing into the source, with what has gone through each of its operators.
    pub operators: Vec<(String, Vec<crate::runtime::OperatorStats>)>,
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
    /// Why the query failed, once it has: when `rows` ends without a LIMIT or a close, this
    /// tells the client the query died rather than finished.
    pub failure: crate::runtime::QueryFailure,
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
    /// The session of callers that bring none ([`Engine::execute`], [`Engine::query`]).
    session: Session,
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
    /// Which running queries write which topics (a reader waits for them before it is idle).
    writers: Arc<crate::runtime::Writers>,
    state: Mutex<EngineState>,
    /// Whether statements are recorded in the command topic ([`Engine::open`]).
    durable: bool,
    /// Held by statements that change the catalog or the queries, from their checks to their
    /// effect: they are accepted one at a time, in the order the command topic records.
    changes: tokio::sync::Mutex<()>,
}

/// How long CREATE OR REPLACE waits for the replaced query to finish its batch.
const REPLACE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The topic [`Engine::open`] keeps statements in.
pub const COMMAND_TOPIC: &str = "_eddy_command_topic";

/// Whether `topic` belongs to the system rather than to users: Kafka's internal topics (`__`),
/// Eddy's own (`_eddy_`: the command topic, and the internal topics of queries) and the
/// processing log's. Users may read them (PRINT, the KSQL_PROCESSING_LOG stream) but not
/// create sources over, insert into or drop them.
pub fn is_internal_topic(topic: &str) -> bool {
    topic.starts_with("__")
        || topic.starts_with("_eddy_")
        || topic == crate::runtime::processing_log::TOPIC
}

/// Refuses `action` (what the statement would do, as a phrase) on an internal topic.
fn refuse_internal(topic: &str, action: &str) -> Result<()> {
    match is_internal_topic(topic) {
        true => Err(EngineError::Plan(format!(
            "Cannot {action} topic '{topic}': it is internal to Eddy (topics named __*, \
             _eddy_* and the processing log's belong to the system)"
        ))),
        false => Ok(()),
    }
}

impl Engine {
    /// An engine reading and writing topics through `client`.
    pub fn new(client: Arc<dyn LogClient>) -> Engine {
        let mut catalog = Catalog::default();
        catalog.insert(processing_log_stream());
        Engine {
            log: Arc::new(ProcessingLog::new(Arc::clone(&client))),
            writers: Default::default(),
            client,
            state: Mutex::new(EngineState {
                catalog,
                session: Session::default(),
                queries: BTreeMap::new(),
                transient: BTreeMap::new(),
                next_query_number: 1,
                next_push_number: 0,
            }),
            durable: false,
            changes: tokio::sync::Mutex::new(()),
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
                // Kept forever, and synced before a statement is acknowledged.
                let configs = BTreeMap::from([
                    ("retention.ms".to_string(), "-1".to_string()),
                    ("flush.messages".to_string(), "1".to_string()),
                ]);
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
                    let mut session = Session::default();
                    if let Err(e) = engine.execute_one(statement, false, &mut session).await {
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

    /// Runs one statement; a durable engine records the statements that change the catalog or
    /// the queries in the command topic, after checking and before they take effect.
    async fn run_and_record(
        &self,
        parsed: ParsedStatement,
        session: &mut Session,
    ) -> Result<StatementResult> {
        self.execute_one(parsed, self.durable, session).await
    }

    /// Accepts a statement that changes the catalog or the queries: when `record`, it is
    /// written to the command topic (synced: the topic flushes every record) before it takes
    /// effect, so a restart replays exactly the statements accepted, in order. Each caller
    /// has checked and planned the statement, and taken its query id, before calling this:
    /// replay does the same steps, so ids come out the same.
    async fn accept(&self, text: &str, record: bool) -> Result<()> {
        if !record {
            return Ok(());
        }
        let record = ProducerRecord {
            value: Some(Bytes::from(format!("{text};"))),
            ..Default::default()
        };
        self.client.produce(COMMAND_TOPIC, vec![record]).await?;
        Ok(())
    }

    /// Records skipped by query `query_id` because they could not be processed.
    pub fn processing_errors(&self, query_id: &str) -> u64 {
        self.log.error_count(query_id)
    }

    /// DESCRIBE EXTENDED's figures for a source.
    async fn statistics(&self, source: &Source) -> SourceStatistics {
        let (read_queries, write_queries, operators) = {
            let state = self.state.lock();
            let ids = |wanted: &dyn Fn(&RunningQuery) -> bool| -> Vec<QuerySummary> {
                state
                    .queries
                    .iter()
                    .filter(|(_, q)| wanted(q))
                    .map(|(id, q)| QuerySummary::of(id, q))
                    .collect()
            };
            let operators = state
                .queries
                .iter()
                .filter(|(_, q)| q.sink == source.name)
                .map(|(id, q)| (id.clone(), q.metrics.snapshot()))
                .collect();
            (
                ids(&|q| q.source_topics.contains(&source.topic)),
                ids(&|q| q.sink == source.name),
                operators,
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
            operators,
        }
    }

    /// The log this engine uses.
    pub fn client(&self) -> &Arc<dyn LogClient> {
        &self.client
    }

    /// Runs every statement in `sql` until one fails: the results so far, each with its
    /// statement's text, and the failure with its statement's text. A script that does not
    /// parse fails as a whole.
    /// Uses and changes the engine's own session.
    pub async fn execute_each(&self, sql: &str) -> Result<ExecutedScript> {
        let mut session = self.state.lock().session.clone();
        let script = self.execute_each_in(sql, &mut session).await;
        self.state.lock().session = session;
        script
    }

    /// [`Engine::execute_each`] in a caller's `session`, which SET, DEFINE and their undoing
    /// change (`${name}` takes the variables the session had when the call began).
    pub async fn execute_each_in(
        &self,
        sql: &str,
        session: &mut Session,
    ) -> Result<ExecutedScript> {
        if let Some(texts) = parser::statements_defining_variables(sql) {
            return Ok(self.execute_stepwise(texts, session).await);
        }
        let statements = parser::parse(sql, &session.variables)?;
        let mut script = ExecutedScript::default();
        for statement in statements {
            let text = statement.text.clone();
            match self.run_and_record(statement, session).await {
                Ok(result) => script.results.push((text, result)),
                Err(error) => {
                    script.failure = Some((text, error));
                    break;
                }
            }
        }
        Ok(script)
    }

    /// Runs a script that DEFINEs or UNDEFINEs variables a statement at a time, as ksqlDB
    /// does: each statement's `${name}` takes the variables the statements before it left.
    async fn execute_stepwise(&self, texts: Vec<String>, session: &mut Session) -> ExecutedScript {
        let mut script = ExecutedScript::default();
        for text in texts {
            let parsed = parser::parse(&text, &session.variables);
            let outcome = match parsed {
                Ok(mut statements) if statements.len() == 1 => {
                    self.run_and_record(statements.remove(0), session).await
                }
                Ok(_) => Err(EngineError::Internal(format!(
                    "'{text}' did not parse as one statement"
                ))),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(result) => script.results.push((text, result)),
                Err(error) => {
                    script.failure = Some((text, error));
                    break;
                }
            }
        }
        script
    }

    /// Runs every statement in `sql`, stopping at the first error.
    /// Uses and changes the engine's own session.
    pub async fn execute(&self, sql: &str) -> Result<Vec<StatementResult>> {
        let mut session = self.state.lock().session.clone();
        let statements = parser::parse(sql, &session.variables);
        let mut results = Vec::new();
        let mut outcome = Ok(());
        for statement in statements? {
            match self.run_and_record(statement, &mut session).await {
                Ok(result) => results.push(result),
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        self.state.lock().session = session;
        outcome.map(|()| results)
    }

    /// Runs one statement; `record` says whether statements that change the catalog or the
    /// queries go to the command topic first ([`Engine::accept`]).
    async fn execute_one(
        &self,
        parsed: ParsedStatement,
        record: bool,
        session: &mut Session,
    ) -> Result<StatementResult> {
        let ParsedStatement {
            statement, text, ..
        } = parsed;
        let _changes = match changes_catalog(&statement) {
            true => Some(self.changes.lock().await),
            false => None,
        };
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
                refuse_internal(&definition.topic, "create a source over")?;
                self.accept(&text, record).await?;
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
                refuse_internal(&plan.sink.topic, "write a query's results to")?;
                let prefix = match kind {
                    SourceKind::Stream => "CSAS",
                    SourceKind::Table => "CTAS",
                };
                let replaced = match or_replace {
                    true => self.replaced_query(&name, &plan)?,
                    false => None,
                };
                let query_id = match &replaced {
                    Some(id) => id.clone(),
                    None => self.next_query_id(prefix, Some(&name)),
                };
                self.accept(&text, record).await?;
                if replaced.is_none() {
                    self.take_query_number();
                }
                let mut source_partitions = 1;
                for topic in plan.source_topics() {
                    let count = self.client.partition_count(&topic).await.unwrap_or(1);
                    source_partitions = source_partitions.max(count);
                }
                let properties = plan.sink_topic_properties(source_partitions);
                self.ensure_topic(&plan.sink.topic, &properties, kind)
                    .await?;
                if let Some(id) = &replaced {
                    // The old query ends (finishing and committing its batch) before its
                    // replacement resumes from its committed offsets under the same id.
                    let old = self.state.lock().queries.remove(id);
                    if let Some(old) = old {
                        old.stop();
                        old.wait_finished(REPLACE_WAIT).await;
                    }
                }
                let running = query::start(
                    Arc::clone(&self.client),
                    Arc::clone(&self.log),
                    &self.writers,
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
                if sink.header_columns().next().is_some() {
                    return Err(EngineError::Plan(format!(
                        "Cannot insert into {target} because it has header columns"
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
                refuse_internal(&sink.topic, "insert into")?;
                let query_id = self.next_query_id("INSERTQUERY", None);
                self.accept(&text, record).await?;
                self.take_query_number();
                let running = query::start(
                    Arc::clone(&self.client),
                    Arc::clone(&self.log),
                    &self.writers,
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
                Ok(StatementResult::Inserted)
            }
            Statement::Drop {
                kind,
                name,
                if_exists,
                delete_topic,
            } => {
                let (found, creator) = {
                    let state = self.state.lock();
                    let creator = drop_constraints(&state, &name)?;
                    let found = match state.catalog.get(&name) {
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
                        Ok(source) => Some(source),
                        Err(_) if if_exists => None,
                        Err(e) => return Err(e),
                    };
                    (found, creator)
                };
                if let Some(source) = &found {
                    refuse_internal(&source.topic, "drop the source over")?;
                    self.accept(&text, record).await?;
                }
                let mut ended = Vec::new();
                let removed = found.and_then(|_| {
                    let mut state = self.state.lock();
                    // The query that created the source goes with it, as in ksqlDB.
                    if let Some(id) = creator {
                        ended.extend(state.queries.remove(&id).map(|query| (id, query)));
                    }
                    state.catalog.remove(&name)
                });
                self.end_queries(ended).await;
                if let (Some(source), true) = (&removed, delete_topic) {
                    self.client.delete_topic(&source.topic).await?;
                }
                Ok(status(format!(
                    "Source `{name}` (topic: {}) was dropped.",
                    removed.map(|s| s.topic.clone()).unwrap_or_default()
                )))
            }
            Statement::Show { kind, .. } => self.show(kind, session).await,
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
                let ids: Vec<String> = {
                    let state = self.state.lock();
                    match query_id {
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
                    }
                };
                self.accept(&text, record).await?;
                let ended: Vec<_> = {
                    let mut state = self.state.lock();
                    ids.iter()
                        .filter_map(|id| Some((id.clone(), state.queries.remove(id)?)))
                        .collect()
                };
                self.end_queries(ended).await;
                Ok(status(format!("Query terminated: {}", ids.join(", "))))
            }
            Statement::Set { name, value } => {
                session.properties.insert(name.clone(), value.clone());
                Ok(status(format!("Property '{name}' set to '{value}'")))
            }
            Statement::Unset { name } => {
                session.properties.remove(&name);
                Ok(status(format!("Property '{name}' unset")))
            }
            Statement::Define { name, value } => {
                session.variables.insert(name, value);
                Ok(status(String::new()))
            }
            Statement::Undefine { name } => {
                session.variables.remove(&name);
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
    /// The engine's own session applies, `properties` over its properties.
    pub async fn query(
        &self,
        sql: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<QueryResult> {
        let mut session = self.state.lock().session.clone();
        session.properties.extend(properties.clone());
        self.query_in(sql, &session).await
    }

    /// [`Engine::query`] in a caller's session: its variables fill `${name}`, its properties
    /// (`auto.offset.reset`) steer a push query.
    pub async fn query_in(&self, sql: &str, session: &Session) -> Result<QueryResult> {
        let mut statements = parser::parse(sql, &session.variables)?;
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
            use crate::properties::{session_flag, PULL_RANGE_SCAN, PULL_TABLE_SCAN};
            let flag = |name, default| session_flag(&session.properties, name, default);
            let scan = pull::ScanConfig {
                table_scan: flag(PULL_TABLE_SCAN, true),
                range_scan: flag(PULL_RANGE_SCAN, true),
            };
            return Ok(QueryResult::Pull(
                pull::run(&self.client, &catalog, &select, scan).await?,
            ));
        }
        let (plan, limit) = query::plan_push(&catalog, &select, &parsed.text).await?;
        let reset_name = crate::properties::session_value(
            &session.properties,
            crate::properties::AUTO_OFFSET_RESET,
        );
        let reset = match reset_name.map(str::to_lowercase).as_deref() {
            None | Some("latest") => eddy_broker::OffsetReset::Latest,
            Some("earliest") => eddy_broker::OffsetReset::Earliest,
            Some(other) => {
                return Err(EngineError::Plan(format!(
                    "auto.offset.reset must be 'earliest' or 'latest', not '{other}'"
                )))
            }
        };
        let starts = match reset {
            eddy_broker::OffsetReset::Latest => {
                crate::runtime::end_offsets(self.client.as_ref(), &plan.source_topics()).await
            }
            _ => Default::default(),
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
            &self.writers,
            query_id.clone(),
            plan,
            Output::Rows {
                sender,
                reset,
                starts: Arc::new(parking_lot::Mutex::new(starts)),
            },
        );
        let failure = running.failure.clone();
        let mut state = self.state.lock();
        state.transient.retain(|_, q| !q.finished());
        state.transient.insert(query_id.clone(), running);
        Ok(QueryResult::Push(PushQuery {
            query_id,
            columns,
            rows,
            limit,
            failure,
        }))
    }

    /// Stops persistent queries for good: once their tasks have ended, their internal topics
    /// (repartition topics) are deleted with them.
    async fn end_queries(&self, ended: Vec<(String, query::RunningQuery)>) {
        for (_, query) in &ended {
            query.stop();
        }
        let ids: Vec<String> = ended.iter().map(|(id, _)| id.clone()).collect();
        let internal = self.internal_topics(&ids).await;
        for (id, query) in &ended {
            query.wait_finished(REPLACE_WAIT).await;
            for (_, topic) in internal.iter().filter(|(of, _)| of == id) {
                if let Err(e) = self.client.delete_topic(topic).await {
                    tracing::warn!(query = %id, %topic, error = %e, "cannot delete an internal topic");
                }
            }
        }
    }

    /// The internal (repartition) topics of the queries `ids`: (query id, topic) each.
    async fn internal_topics(&self, ids: &[String]) -> Vec<(String, String)> {
        let topics = self.client.topics().await.unwrap_or_default();
        ids.iter()
            .flat_map(|id| {
                topics
                    .iter()
                    .filter(|(t, _)| crate::runtime::is_internal_topic_of(id, t))
                    .map(|(t, _)| (id.clone(), t.clone()))
            })
            .collect()
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

    /// For CREATE OR REPLACE ... AS SELECT over a source a query writes: the id of that query,
    /// which the new plan replaces in place, if ksqlDB's upgrade rules allow it (a stateless
    /// query over the same sources, keeping the key columns and the value columns as a
    /// prefix of the new ones); `None` when no query writes the source.
    fn replaced_query(&self, name: &str, plan: &query::PersistentPlan) -> Result<Option<String>> {
        let state = self.state.lock();
        let Ok(existing) = state.catalog.get(name) else {
            return Ok(None);
        };
        let writer = state
            .queries
            .iter()
            .find(|(id, q)| q.sink == name && !id.starts_with("INSERTQUERY"));
        let Some((id, old)) = writer else {
            return Ok(None);
        };
        let refuse = |reason: String| {
            Err(EngineError::Plan(format!(
                "Cannot upgrade data source '{name}' (query {id}): {reason}"
            )))
        };
        if existing.kind != plan.sink.kind {
            return refuse(format!(
                "it is a {}, not a {}",
                existing.kind.name(),
                plan.sink.kind.name()
            ));
        }
        if !old.stateless || !matches!(plan.operator, query::Operator::FilterProject) {
            return refuse(
                "upgrades are supported for stateless queries only (filters and projections); \
                 DROP and recreate it"
                    .into(),
            );
        }
        if old.source_topics != plan.source_topics() {
            return refuse("the new query reads other sources".into());
        }
        let columns = |columns: &[ColumnDef]| -> Vec<(String, String, bool)> {
            columns
                .iter()
                .map(|c| (c.name.clone(), c.data_type.to_string(), c.key))
                .collect()
        };
        let (old_columns, new_columns) = (columns(&existing.columns), columns(&plan.sink.columns));
        let keys = |columns: &[(String, String, bool)]| -> Vec<(String, String, bool)> {
            columns.iter().filter(|c| c.2).cloned().collect()
        };
        let kept = old_columns.iter().all(|c| new_columns.contains(c));
        if keys(&old_columns) != keys(&new_columns) || !kept {
            return refuse(format!(
                "its schema {} is not upgrade compatible with {}: columns may only be added",
                schema_text(&existing.columns),
                schema_text(&plan.sink.columns)
            ));
        }
        Ok(Some(id.clone()))
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

    /// Waits until every persistent query has committed up to its sources' high watermarks,
    /// and its repartition topics' (so its output for everything written so far is in its
    /// sink), or `timeout` passes.
    /// Returns whether they caught up. Tests use it instead of sleeping.
    pub async fn wait_until_caught_up(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut settled_rounds = 0;
        while tokio::time::Instant::now() < deadline {
            let (mut queries, ids): (Vec<(String, String)>, Vec<String>) = {
                let state = self.state.lock();
                // A failed query never catches up: it is not waited for.
                let live: Vec<_> = state
                    .queries
                    .iter()
                    .filter(|(_, q)| q.failure.get().is_none())
                    .collect();
                let topics = live
                    .iter()
                    .flat_map(|(id, q)| q.source_topics.iter().map(|t| ((*id).clone(), t.clone())));
                (
                    topics.collect(),
                    live.iter().map(|(id, _)| (*id).clone()).collect(),
                )
            };
            // What a query routed into its repartition topics must be read too.
            queries.extend(self.internal_topics(&ids).await);
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
    /// The id the next persistent query gets; [`Engine::take_query_number`] uses it up once
    /// the statement is accepted (a statement refused by the command topic leaves it free, so
    /// ids stay the same on replay).
    fn next_query_id(&self, prefix: &str, name: Option<&str>) -> String {
        let n = self.state.lock().next_query_number;
        match name {
            Some(name) => format!("{prefix}_{name}_{n}"),
            None => format!("{prefix}_{n}"),
        }
    }

    fn take_query_number(&self) {
        self.state.lock().next_query_number += 1;
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

    async fn show(&self, kind: ShowKind, session: &Session) -> Result<StatementResult> {
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
                let persistent = state.queries.iter().map(|(id, q)| QuerySummary::of(id, q));
                let push = state.transient.iter().map(|(id, q)| QuerySummary {
                    sink: String::new(),
                    ..QuerySummary::of(id, q)
                });
                StatementResult::Queries(persistent.chain(push).collect())
            }
            ShowKind::Properties => {
                StatementResult::Properties(crate::properties::effective(&session.properties))
            }
            ShowKind::Topics | ShowKind::AllTopics => {
                // Every topic of the cluster, as ksqlDB lists them: names starting with `_`
                // (Kafka's and Eddy's internal topics) only with SHOW ALL TOPICS.
                let mut topics = self.client.topics().await?;
                if kind == ShowKind::Topics {
                    topics.retain(|(name, _)| !name.starts_with('_'));
                }
                topics.sort();
                StatementResult::Topics(topics)
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
        let headers: Vec<&str> = source
            .header_columns()
            .map(|c| c.name.as_str())
            .filter(|h| names.iter().any(|n| n.eq_ignore_ascii_case(h)))
            .collect();
        if !headers.is_empty() {
            return Err(EngineError::Plan(format!(
                "Cannot insert into HEADER columns: {}",
                headers.join(", ")
            )));
        }
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
        refuse_internal(&source.topic, "insert into")?;
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

/// What dropping source `name` must respect, as in ksqlDB: no other persistent query may read
/// it (drop their sinks first) or INSERT INTO it (terminate them first). The query that
/// created it (CREATE ... AS SELECT) is returned, to be terminated with the drop.
fn drop_constraints(state: &EngineState, name: &str) -> Result<Option<String>> {
    let mut creator = None;
    let mut inserters = Vec::new();
    let mut readers = Vec::new();
    let topic = state.catalog.get(name).ok().map(|s| s.topic.clone());
    for (id, query) in &state.queries {
        if query.sink == name {
            match id.starts_with("INSERTQUERY") {
                true => inserters.push(id.clone()),
                false => creator = Some(id.clone()),
            }
        } else if topic
            .as_ref()
            .is_some_and(|t| query.source_topics.contains(t))
        {
            readers.push(query.sink.clone());
        }
    }
    if !readers.is_empty() {
        readers.sort();
        readers.dedup();
        return Err(EngineError::Plan(format!(
            "Cannot drop {name}.\nThe following streams and/or tables read from this source: \
             [{}].\nYou need to drop them before dropping {name}.",
            readers.join(", ")
        )));
    }
    if !inserters.is_empty() {
        inserters.sort();
        return Err(EngineError::Plan(format!(
            "Cannot drop {name}.\nThe following queries write into this source: [{}].\nYou \
             need to terminate them before dropping {name}.",
            inserters.join(", ")
        )));
    }
    Ok(creator)
}

/// Whether a statement changes the catalog or the queries (and so goes to the command topic).
fn changes_catalog(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::CreateSource { .. }
            | Statement::CreateAsSelect { .. }
            | Statement::InsertInto { .. }
            | Statement::Drop { .. }
            | Statement::Terminate { .. }
    )
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
