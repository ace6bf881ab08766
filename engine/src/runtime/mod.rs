//! Running queries: one task per partition read, feeding its group's operator (a
//! [`operator::StreamOperator`]: `FilterProjectExec`, `AggregateExec`, `JoinExec` or
//! `OverExec`, counted in [`metrics`]). Where a stateful
//! operator's state lives is [`exchange`]'s decision, as in Kafka Streams: one operator per
//! partition number, owning its keys' state and its own stream time (the operator is keyed by
//! the sources' key); the same after a repartition topic the query writes its records into by
//! the operator's key; or, where there is no exchange yet, one operator shared by all the
//! tasks, kept together in event time (`align`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array,
    TimestampMillisecondArray,
};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::writer::{JsonArray, NullableEncoder};
use datafusion::arrow::json::{Encoder, EncoderFactory, EncoderOptions};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use eddy_broker::{
    partitioner, BrokerError, ConsumedRecord, LogClient, OffsetReset, ProducerRecord,
};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};

use crate::catalog::{Source, ROWTIME, WINDOWEND, WINDOWSTART};
use crate::error::{EngineError, Result};
use crate::formats;
use crate::functions::datetime;
use crate::parser::{ColumnDef, SourceKind};
use crate::query::{Operator, PersistentPlan};
use align::{Alignment, Upstream};
use exchange::{replayed, unmark, Placement, Router};
use metrics::OperatorCounters;
use operator::{Counted, Port};

mod aggregate;
mod align;
mod decode;
mod exchange;
mod filter_project;
mod join;
mod metrics;
mod operator;
mod over;
pub mod processing_log;
mod writers;

pub use aggregate::AggregateExec;
pub(crate) use decode::decode_records;
pub use exchange::{describe as describe_tasks, is_internal_topic_of, repartition_topic};
pub use filter_project::FilterProjectExec;
pub use join::JoinExec;
pub use metrics::{OperatorStats, QueryMetrics};
pub use over::OverExec;
pub use processing_log::{Failure, ProcessingLog};
pub(crate) use writers::QueryActivity;
use writers::TaskActivity;
pub use writers::Writers;

const FETCH_BYTES_MAX: usize = 1 << 20;
const FETCH_WAIT: Duration = Duration::from_millis(200);

/// Where a query's rows go.
#[derive(Clone)]
pub enum Output {
    /// Persistent queries: the sink topic; the query commits its source offsets as it goes.
    Topic,
    /// Push queries: rows to the caller, reading from `reset` (no offsets are committed).
    /// The query ends when the receiver is dropped.
    Rows {
        sender: mpsc::Sender<PushRow>,
        reset: OffsetReset,
        /// Where each source partition is first read from, fixed when the query was asked
        /// for (`latest`: the end of each partition then, so a record written once the query
        /// is answered is among its rows, however late its tasks start). Taken by the first
        /// task to read the partition; a restarted task reads from `reset`.
        starts: Arc<parking_lot::Mutex<HashMap<(String, i32), i64>>>,
    },
}

/// The end of every partition of `topics` now: where a push query reading from `latest`
/// starts.
pub(crate) async fn end_offsets(
    client: &dyn LogClient,
    topics: &[String],
) -> HashMap<(String, i32), i64> {
    let mut ends = HashMap::new();
    for topic in topics {
        let Ok(partitions) = client.partition_count(topic).await else {
            continue;
        };
        for partition in 0..partitions {
            if let Ok(range) = client.offsets(topic, partition).await {
                ends.insert((topic.clone(), partition), range.high_watermark);
            }
        }
    }
    ends
}

/// A row of a push query: values in column order.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRow {
    pub values: Vec<Value>,
    /// A table row deleted.
    pub tombstone: bool,
    pub window: Option<(i64, i64)>,
}

/// An operator's output for one input batch: projected rows (named after the sink's
/// columns) and what goes with each.
///
/// A stateful operator's `process` fails (returns `Err`) only before it changes its state, so
/// the caller may run the batch again record by record to find the records at fault; once its
/// state has taken a batch, what fails is one row's output, left out and listed in `failures`
/// rather than failing the batch (which would apply its records twice).
#[derive(Default)]
pub(crate) struct Emitted {
    pub rows: Option<RecordBatch>,
    pub meta: Vec<RowMeta>,
    /// Why rows were left out after the operator's state took them, for the processing log.
    pub failures: Vec<String>,
}

/// Why a query stopped on its own (a task panicked, its source vanished): set once, read by
/// SHOW QUERIES (state ERROR), DESCRIBE EXTENDED and a push query's client.
#[derive(Clone, Default, Debug)]
pub struct QueryFailure(Arc<parking_lot::Mutex<Option<String>>>);

impl QueryFailure {
    /// The failure, if the query failed.
    pub fn get(&self) -> Option<String> {
        self.0.lock().clone()
    }

    /// Records the first failure; later ones are consequences of it.
    fn set(&self, message: String) {
        self.0.lock().get_or_insert(message);
    }
}

/// Evaluates `expr` on every row of `batch`. Some of DataFusion's functions panic on some
/// arguments (its LPAD to a negative length did): the panic becomes this batch's error, so
/// the records at fault go to the processing log like any other failing record.
pub(crate) fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    let evaluated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        expr.evaluate(batch)?.into_array(batch.num_rows())
    }));
    match evaluated {
        Ok(array) => Ok(array?),
        Err(panic) => Err(EngineError::Execution(format!(
            "evaluating {expr} failed: {}",
            panic_message(panic)
        ))),
    }
}

/// What a panic carried, as text.
fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(message) => *message,
        Err(panic) => match panic.downcast::<&'static str>() {
            Ok(message) => message.to_string(),
            Err(_) => "a panic without a message".to_string(),
        },
    }
}

/// How often a persistent query looks for partitions added to its source topics (Kafka's
/// consumers notice them at their next metadata refresh, `metadata.max.age.ms`).
const PARTITION_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Runs a query until it is stopped. A panic in one of its tasks is caught: the other tasks
/// are stopped, the query's `failure` says why, and the processing log has it; nothing
/// outside the query stops. When partitions are added to a persistent query's source topics
/// (CreatePartitions), its tasks stop between batches and start again over every partition,
/// as after a restart: state is rebuilt from the log, and the new partitions are read from
/// their start.
///
/// A chain of joins runs its stages ([`crate::query::stages`]) alongside, each as a query of
/// its own writing into the internal topic the next one reads, committing in the same consumer
/// group; they stop when the query does. A push query's stage topics go with it. `activity`
/// is the query's among the engine's `writers` (registered for its sink by the caller); each
/// stage is registered for its topic here, before any task reads it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_query(
    client: Arc<dyn LogClient>,
    log: Arc<ProcessingLog>,
    (writers, activity): (Arc<Writers>, Arc<QueryActivity>),
    query_id: String,
    plan: Arc<PersistentPlan>,
    output: Output,
    held: Arc<std::sync::atomic::AtomicUsize>,
    metrics: Arc<QueryMetrics>,
    failure: QueryFailure,
    stopped: watch::Receiver<bool>,
) {
    let tasks = |name: String,
                 plan: Arc<PersistentPlan>,
                 output: Output,
                 activity: Arc<QueryActivity>| QueryTasks {
        client: Arc::clone(&client),
        log: Arc::clone(&log),
        writers: Arc::clone(&writers),
        activity,
        query_id: query_id.clone(),
        stage: name
            .strip_prefix(&query_id)
            .unwrap_or_default()
            .trim_start_matches('_')
            .to_string(),
        metrics: Arc::clone(&metrics),
        name,
        sides: sides(&plan),
        plan,
        output,
        held: Arc::clone(&held),
        failure: failure.clone(),
    };
    if plan.upstream.is_empty() {
        return tasks(query_id.clone(), plan, output, activity)
            .run_until(stopped)
            .await;
    }
    let plan = Arc::new(crate::query::stages::bind(&plan, &query_id));
    let (stop_stages, stages_stopped) = watch::channel(false);
    let mut stages = tokio::task::JoinSet::new();
    let mut started = true;
    for stage in &plan.upstream {
        let mut counts = Vec::new();
        for topic in stage.source_topics() {
            counts.push(client.partition_count(&topic).await.unwrap_or(1));
        }
        let partitions = counts.into_iter().max().unwrap_or(1);
        let topic = &stage.sink.topic;
        if let Err(e) = exchange::ensure_internal_topic(client.as_ref(), topic, partitions).await {
            tracing::error!(query = %query_id, error = %e, "cannot create a stage's topic");
            failure.set(format!("cannot create the internal topic {topic}: {e}"));
            started = false;
            break;
        }
        let name = crate::query::stages::stage_tasks_name(stage);
        let writing = Arc::new(QueryActivity::new(&writers, Some(topic)));
        let stage = tasks(name, Arc::new(stage.clone()), Output::Topic, writing);
        stages.spawn(stage.run_until(stages_stopped.clone()));
    }
    if started {
        tasks(
            query_id.clone(),
            Arc::clone(&plan),
            output.clone(),
            activity,
        )
        .run_until(stopped)
        .await;
    }
    let _ = stop_stages.send(true);
    while stages.join_next().await.is_some() {}
    if !matches!(output, Output::Topic) {
        for (topic, _) in client.topics().await.unwrap_or_default() {
            if is_internal_topic_of(&query_id, &topic) {
                if let Err(e) = client.delete_topic(&topic).await {
                    tracing::warn!(query = %query_id, %topic, error = %e, "cannot delete an internal topic");
                }
            }
        }
    }
}

/// What a query reads: its source, or both sides of a join.
fn sides(plan: &PersistentPlan) -> Vec<(Arc<Source>, SchemaRef)> {
    match &plan.operator {
        Operator::Join(join)
        | Operator::Aggregate(crate::query::AggregatePlan {
            join: Some(join), ..
        }) => join
            .sides
            .iter()
            .map(|s| (Arc::clone(&s.source), Arc::clone(&s.schema)))
            .collect(),
        _ => vec![(Arc::clone(&plan.source), Arc::clone(&plan.input_schema))],
    }
}

impl QueryTasks {
    /// Runs the tasks until `stopped`, starting them again over every partition when
    /// partitions are added to a source topic.
    async fn run_until(self, mut stopped: watch::Receiver<bool>) {
        let query = &self;
        loop {
            let Some(counts) = query.partition_counts().await else {
                return;
            };
            let (stop_tasks, tasks_stopped) = watch::channel(false);
            let run = query.run(&counts, tasks_stopped);
            tokio::pin!(run);
            tokio::select! {
                () = &mut run => return,
                () = until_stopped(&mut stopped) => {
                    let _ = stop_tasks.send(true);
                    run.await;
                    return;
                }
                () = query.partitions_added(&counts) => {
                    tracing::info!(query = %query.query_id, "partitions were added to a source topic; restarting the query's tasks");
                    let _ = stop_tasks.send(true);
                    run.await;
                }
            }
        }
    }
}

/// Resolves once `stopped` says stop (or its sender is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    while !*stopped.borrow_and_update() {
        if stopped.changed().await.is_err() {
            return;
        }
    }
}

/// What a query's partition tasks share.
struct QueryTasks {
    client: Arc<dyn LogClient>,
    log: Arc<ProcessingLog>,
    /// The engine's running writers, and this query's (or stage's) place among them.
    writers: Arc<Writers>,
    activity: Arc<QueryActivity>,
    /// The query's id: its consumer group.
    query_id: String,
    /// What its internal topics are named after: the query id, or a stage's (`<id>_S<n>`).
    name: String,
    /// The stage it runs (`S<n>`), or "" for the query itself.
    stage: String,
    /// What goes through its operators.
    metrics: Arc<QueryMetrics>,
    plan: Arc<PersistentPlan>,
    output: Output,
    held: Arc<std::sync::atomic::AtomicUsize>,
    failure: QueryFailure,
    sides: Vec<(Arc<Source>, SchemaRef)>,
}

impl QueryTasks {
    /// The partition count of each side's topic; `None` (and the query failed) when one
    /// cannot be read.
    async fn partition_counts(&self) -> Option<Vec<i32>> {
        let mut counts = Vec::new();
        for (source, _) in &self.sides {
            match self.client.partition_count(&source.topic).await {
                Ok(n) => counts.push(n),
                Err(e) => {
                    tracing::error!(query = %self.query_id, error = %e, "cannot read the source topic");
                    self.failure.set(format!(
                        "cannot read the source topic {}: {e}",
                        source.topic
                    ));
                    return None;
                }
            }
        }
        Some(counts)
    }

    /// Resolves when a persistent query's source topics have more partitions than `counts`;
    /// never for a push query (it reads what it started on).
    async fn partitions_added(&self, counts: &[i32]) {
        if !matches!(self.output, Output::Topic) {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(PARTITION_CHECK_INTERVAL).await;
            for ((source, _), known) in self.sides.iter().zip(counts) {
                if let Ok(now) = self.client.partition_count(&source.topic).await {
                    if now > *known {
                        return;
                    }
                }
            }
        }
    }

    /// Runs the query's tasks until they all end: one per partition of every side, grouped
    /// by where the operator's state lives ([`exchange::placement`]).
    async fn run(&self, counts: &[i32], stopped: watch::Receiver<bool>) {
        let source_topics: Vec<String> = self.sides.iter().map(|(s, _)| s.topic.clone()).collect();
        let mut tasks = Tasks::default();
        // With an exchange: per side, the tasks routing into its repartition topic.
        let mut upstreams: Vec<Upstream> = Vec::new();
        let groups = match exchange::placement(&self.plan, counts, &self.output) {
            Placement::Shared => vec![self.readers(&source_topics, counts)],
            Placement::Partitioned => by_partition(self.readers(&source_topics, counts)),
            Placement::Repartitioned(keys) => {
                let Some((topics, partitions, routing)) = self
                    .repartition(&source_topics, counts, keys, &mut tasks, &stopped)
                    .await
                else {
                    self.activity.started();
                    return;
                };
                upstreams = routing;
                by_partition(self.readers(&topics, &partitions))
            }
        };
        for group in groups {
            // Tasks sharing an operator are kept together in event time, and take turns.
            let together = group.len() > 1;
            let leads = group
                .iter()
                .map(|r| align::leads(&self.plan, r.side))
                .collect();
            let alignment = together.then(|| Arc::new(Alignment::new(leads)));
            let output_order = together.then(|| Arc::new(tokio::sync::Mutex::new(())));
            let executor = Arc::new(self.executor(group.len()));
            for (index, reader) in group.into_iter().enumerate() {
                let alignment = alignment.as_ref().map(|a| (Arc::clone(a), index));
                let upstream = upstreams.get(reader.side).cloned();
                let task = self.task(
                    reader,
                    Arc::clone(&executor),
                    index,
                    (alignment, upstream),
                    output_order.clone(),
                );
                tasks.spawn(task, &stopped);
            }
        }
        self.activity.started();
        self.join(tasks).await;
    }

    /// Every partition of every side, reading `topics` (a side's source topic, or its
    /// repartition topic) of `counts` partitions.
    fn readers(&self, topics: &[String], counts: &[i32]) -> Vec<Reader> {
        let mut readers = Vec::new();
        for (side, ((source, schema), (topic, count))) in
            self.sides.iter().zip(topics.iter().zip(counts)).enumerate()
        {
            readers.extend((0..*count).map(|partition| Reader {
                side,
                source: Arc::clone(source),
                schema: Arc::clone(schema),
                topic: topic.clone(),
                partition,
            }));
        }
        readers
    }

    /// Starts the tasks writing each side's records into its repartition topic (creating the
    /// topics); the topics, their partition counts, and per side the tasks routing into its
    /// topic; or `None` (the query failed).
    async fn repartition(
        &self,
        source_topics: &[String],
        counts: &[i32],
        keys: Vec<exchange::RouteKey>,
        tasks: &mut Tasks,
        stopped: &watch::Receiver<bool>,
    ) -> Option<(Vec<String>, Vec<i32>, Vec<Upstream>)> {
        let wanted = counts.iter().copied().max().unwrap_or(1);
        let mut topics = Vec::new();
        let mut partitions = Vec::new();
        for side in 0..keys.len() {
            let topic = exchange::repartition_topic(&self.name, side);
            let count = match exchange::ensure_internal_topic(self.client.as_ref(), &topic, wanted)
                .await
            {
                Ok(count) => count,
                Err(e) => {
                    tracing::error!(query = %self.query_id, error = %e, "cannot create a repartition topic");
                    self.failure
                        .set(format!("cannot create the repartition topic {topic}: {e}"));
                    return None;
                }
            };
            topics.push(topic);
            partitions.push(count);
        }
        let rebuild = exchange::needs_rebuild(
            self.client.as_ref(),
            &self.query_id,
            (source_topics, counts),
            (&topics, &partitions),
        )
        .await;
        if rebuild {
            tracing::info!(query = %self.query_id, "rebuilding the query's state through its new repartition topics");
        }
        let routers: Vec<Arc<Executor>> = keys
            .into_iter()
            .enumerate()
            .map(|(side, key)| {
                let router = Router::new(topics[side].clone(), partitions[side], key, rebuild);
                let name = format!("RepartitionExec {}", topics[side]);
                Arc::new(Executor::Route(
                    router,
                    self.metrics.operator(&self.stage, &name),
                ))
            })
            .collect();
        // The routing tasks keep together in event time, so that each repartition topic
        // receives its records nearly in order.
        let routing = self.readers(source_topics, counts);
        let leads = routing
            .iter()
            .map(|r| align::leads(&self.plan, r.side))
            .collect();
        let alignment = Arc::new(Alignment::new(leads));
        let upstreams = (0..topics.len())
            .map(|side| Upstream {
                alignment: Arc::clone(&alignment),
                tasks: (0..routing.len())
                    .filter(|t| routing[*t].side == side)
                    .collect(),
            })
            .collect();
        for (index, reader) in routing.into_iter().enumerate() {
            let router = Arc::clone(&routers[reader.side]);
            let alignment = Some((Arc::clone(&alignment), index));
            tasks.spawn(
                self.task(reader, router, index, (alignment, None), None),
                stopped,
            );
        }
        Some((topics, partitions, upstreams))
    }

    /// The operator of a group of `readers` tasks.
    fn executor(&self, readers: usize) -> Executor {
        let operator = operator::lower(&self.plan, readers, &self.held);
        let counters = self.metrics.operator(&self.stage, operator.name());
        Executor::Operator(Counted::new(operator, counters))
    }

    fn task(
        &self,
        reader: Reader,
        executor: Arc<Executor>,
        index: usize,
        (alignment, upstream): (Option<(Arc<Alignment>, usize)>, Option<Upstream>),
        output_order: Option<Arc<tokio::sync::Mutex<()>>>,
    ) -> PartitionTask {
        let (source, sink) = (
            format!("SourceExec {}", reader.topic),
            format!("SinkExec {}", self.plan.sink.topic),
        );
        PartitionTask {
            client: Arc::clone(&self.client),
            log: Arc::clone(&self.log),
            writers: Arc::clone(&self.writers),
            activity: self.activity.task(),
            query_id: self.query_id.clone(),
            source_counters: self.metrics.operator(&self.stage, &source),
            sink_counters: self.metrics.operator(&self.stage, &sink),
            plan: Arc::clone(&self.plan),
            executor,
            side: reader.side,
            source: reader.source,
            schema: reader.schema,
            topic: reader.topic,
            partition: reader.partition,
            output: self.output.clone(),
            reader: index,
            alignment,
            upstream,
            output_order,
            sink_partitions: Default::default(),
        }
    }

    /// Waits for the tasks to end. A task that panics fails the query and stops the others.
    async fn join(&self, mut tasks: Tasks) {
        while let Some(joined) = tasks.set.join_next_with_id().await {
            let Err(error) = joined else { continue };
            if !error.is_panic() {
                continue; // aborted below, after another task's panic
            }
            let (topic, partition) = tasks.readers.remove(&error.id()).unwrap_or_default();
            let message = format!(
                "the query stopped: its task reading {topic}-{partition} panicked (this is a bug \
                 in Eddy): {}",
                panic_message(error.into_panic())
            );
            tracing::error!(query = %self.query_id, %message, "query failed");
            self.failure.set(message.clone());
            let record = Failure {
                topic,
                partition,
                offset: -1,
                message,
            };
            self.log.log(&self.query_id, vec![record]).await;
            tasks.set.abort_all();
        }
    }
}

/// What one task reads: a partition of a side's topic.
struct Reader {
    side: usize,
    source: Arc<Source>,
    /// The rows decoded from the source.
    schema: SchemaRef,
    /// The source's topic, or the side's repartition topic.
    topic: String,
    partition: i32,
}

/// Groups readers by partition number: partition `p` of every side (co-partitioned).
fn by_partition(readers: Vec<Reader>) -> Vec<Vec<Reader>> {
    let mut groups: std::collections::BTreeMap<i32, Vec<Reader>> = Default::default();
    for reader in readers {
        groups.entry(reader.partition).or_default().push(reader);
    }
    groups.into_values().collect()
}

/// A query's running tasks, and the partition each reads.
#[derive(Default)]
struct Tasks {
    set: tokio::task::JoinSet<()>,
    readers: std::collections::HashMap<tokio::task::Id, (String, i32)>,
}

impl Tasks {
    fn spawn(&mut self, task: PartitionTask, stopped: &watch::Receiver<bool>) {
        let reader = (task.topic.clone(), task.partition);
        let handle = self.set.spawn(task.run(stopped.clone()));
        self.readers.insert(handle.id(), reader);
    }
}

struct PartitionTask {
    client: Arc<dyn LogClient>,
    log: Arc<ProcessingLog>,
    /// The engine's running writers, and this task's part in its query's activity: busy
    /// until it finds nothing to read while no query writing its topic is busy.
    writers: Arc<Writers>,
    activity: TaskActivity,
    query_id: String,
    plan: Arc<PersistentPlan>,
    executor: Arc<Executor>,
    /// Which of a join's sources the task reads (0 otherwise).
    side: usize,
    source: Arc<Source>,
    /// The rows decoded from the source.
    schema: SchemaRef,
    /// The topic read: the source's, or the side's repartition topic.
    topic: String,
    partition: i32,
    output: Output,
    /// This task's place among the query's tasks.
    reader: usize,
    /// The query's alignment in event time, and this task's place in it.
    alignment: Option<(Arc<Alignment>, usize)>,
    /// A task reading a repartition topic: the tasks writing it.
    upstream: Option<Upstream>,
    /// Held from a stateful operator's update to the end of its output's write (see
    /// [`PartitionTask::in_order`]); `None` for stateless queries.
    output_order: Option<Arc<tokio::sync::Mutex<()>>>,
    /// The sink topic's partition count, once a windowed row has asked for it.
    sink_partitions: tokio::sync::OnceCell<i32>,
    /// Records read from the topic, and records written (or sent to a push query's client).
    source_counters: Arc<OperatorCounters>,
    sink_counters: Arc<OperatorCounters>,
}

/// What a group of partition tasks runs: the query's operator (shared by the group: an
/// aggregate's state is per key, whichever partition the key's records come from), or the
/// writing of records into a repartition topic (the first half of an exchange).
enum Executor {
    Operator(Counted),
    Route(Router, Arc<OperatorCounters>),
}

impl PartitionTask {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let topic = self.topic.clone();
        let mut offset = match &self.output {
            Output::Rows { starts, .. } => starts.lock().remove(&(topic.clone(), self.partition)),
            Output::Topic => None,
        };
        // An aggregation or join restarting from committed offsets first rebuilds its state:
        // it reads the source from the start and discards what it would emit before
        // `replay_until`.
        let mut replay_until = None;
        let stateful = matches!(&*self.executor, Executor::Operator(o) if o.stateful());
        // A routing task rebuilding a new exchange's records routes the source from the
        // start, marking what the query had read before as replayed.
        let rebuild = matches!(&*self.executor, Executor::Route(router, _) if router.rebuild);
        let reads_exchange = self.topic != self.source.topic;
        if (stateful || rebuild) && matches!(self.output, Output::Topic) {
            let committed = self
                .client
                .committed(&self.query_id, &topic, self.partition)
                .await
                .ok()
                .flatten();
            let start = self.client.offsets(&topic, self.partition).await.ok();
            if let (Some(committed), Some(range)) = (committed, start) {
                offset = Some(range.log_start_offset);
                replay_until = Some(committed);
            }
        }
        // The latest record time read: where a reader idle before takes up its place again.
        let mut last_time = i64::MIN;
        while !*stopped.borrow() {
            let start = match offset {
                Some(o) => o,
                None => match self
                    .client
                    .start_offset(
                        &self.query_id,
                        &topic,
                        self.partition,
                        match &self.output {
                            Output::Topic => OffsetReset::Earliest,
                            Output::Rows { reset, .. } => *reset,
                        },
                    )
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!(query = %self.query_id, error = %e, "cannot find a start offset");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            offset = Some(start);
            // Read before the fetch: what the upstream tasks routed by now is in what it
            // returns, and so is what the queries writing the topic wrote before going idle.
            let upstream = self.upstream.as_ref().and_then(Upstream::position);
            let writers_busy = self.writers.busy(&topic, self.activity.query());
            let fetched = tokio::select! {
                r = self.client.fetch(&topic, self.partition, start, FETCH_BYTES_MAX, FETCH_WAIT) => r,
                _ = stopped.changed() => return,
                _ = receiver_gone(&self.output) => return,
            };
            let records = match fetched {
                Ok(records) => records,
                Err(BrokerError::OffsetOutOfRange { .. }) => {
                    offset = None;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(query = %self.query_id, error = %e, "fetch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(last) = records.last() else {
                if let Some(position) = upstream {
                    // Records may be on their way through the exchange.
                    if let Some((alignment, task)) = &self.alignment {
                        alignment.at(*task, position);
                    }
                    continue;
                }
                if writers_busy {
                    // A query writing the topic may be about to: not idle (again) yet.
                    if !self.activity.set_busy(true) {
                        self.resume(last_time);
                    }
                    continue;
                }
                self.activity.set_busy(false);
                if let Some((alignment, task)) = &self.alignment {
                    alignment.idle(*task);
                }
                // An idle reader may move the watermark that OVER windows' rows wait for.
                if let Executor::Operator(operator) = &*self.executor {
                    let _in_order = self.in_order().await;
                    let emitted = match operator.idle(self.port()) {
                        Ok(emitted) => emitted,
                        Err(e) => {
                            tracing::error!(query = %self.query_id, error = %e, "an operator failed on an idle reader");
                            Emitted::default()
                        }
                    };
                    if !self.write(emitted, &mut stopped).await {
                        return;
                    }
                }
                continue;
            };
            let next = last.offset + 1;
            self.activity.set_busy(true);
            last_time = last_time.max(last.timestamp_ms);
            self.source_counters.add(records.len(), records.len());
            // The records go in chunks as far as the other tasks let this one run ahead.
            let mut rest = &records[..];
            while let Some(first) = rest.first() {
                let take = match &self.alignment {
                    Some((alignment, task)) => {
                        let bound = tokio::select! {
                            bound = alignment.wait_turn(*task, first.timestamp_ms) => bound,
                            _ = stopped.changed() => return,
                            _ = receiver_gone(&self.output) => return,
                        };
                        rest.iter()
                            .position(|r| r.timestamp_ms > bound)
                            .unwrap_or(rest.len())
                            .max(1)
                    }
                    None => rest.len(),
                };
                let (mut chunk, tail) = rest.split_at(take);
                rest = tail;
                if let Some(until) = replay_until {
                    let split = chunk.partition_point(|r| r.offset < until);
                    if !self.replay(&chunk[..split], &mut stopped).await {
                        return;
                    }
                    if chunk.last().is_some_and(|r| r.offset + 1 >= until) {
                        replay_until = None;
                    }
                    chunk = &chunk[split..];
                }
                if let Executor::Route(router, counters) = &*self.executor {
                    let routed = self.route(router, chunk, false).await;
                    counters.add(chunk.len(), routed.len());
                    if !self.produce(&router.topic, routed, &mut stopped).await {
                        return;
                    }
                } else {
                    // Records a rebuilt exchange marked as replayed only rebuild state (a
                    // source's own records are never taken as marked).
                    let marked = |r: &ConsumedRecord| reads_exchange && replayed(r);
                    for run in chunk.chunk_by(|a, b| marked(a) == marked(b)) {
                        if marked(&run[0]) {
                            let unmarked: Vec<ConsumedRecord> = run.iter().map(unmark).collect();
                            let _rebuilt_state_only = self.process(&unmarked).await;
                            continue;
                        }
                        let _in_order = self.in_order().await;
                        let emitted = self.process(run).await;
                        if !self.write(emitted, &mut stopped).await {
                            return;
                        }
                    }
                }
                if let Some((alignment, task)) = &self.alignment {
                    let position = rest.first().unwrap_or(last).timestamp_ms;
                    alignment.at(*task, position);
                }
            }
            offset = Some(next);
            if matches!(self.output, Output::Rows { .. }) {
                continue;
            }
            let commit = [(topic.clone(), self.partition, next)];
            if let Err(e) = self.client.commit(&self.query_id, &commit).await {
                tracing::warn!(query = %self.query_id, error = %e, "commit failed");
            }
        }
    }

    /// The turn to update a stateful operator's shared state and write what it emits. Its
    /// tasks share the state, so without it one task's older update of a key (MAX 100) could
    /// reach the sink after another task's newer one (MAX 120), and a table's topic would end
    /// on the older value. Stateless queries order nothing across partitions (`None`).
    async fn in_order(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.output_order {
            Some(order) => Some(order.lock().await),
            None => None,
        }
    }

    /// Sends emitted rows where the query's output goes; false when the query should end
    /// (stopped, or its push-query receiver went away).
    async fn write(&self, emitted: Emitted, stopped: &mut watch::Receiver<bool>) -> bool {
        let Some(rows) = emitted.rows else {
            return true;
        };
        match &self.output {
            Output::Topic => match encode_output(
                &self.plan,
                &rows,
                &emitted.meta,
                self.sink_partitions().await,
            ) {
                Ok(records) if records.is_empty() => true,
                Ok(records) => {
                    self.sink_counters.add(rows.num_rows(), records.len());
                    self.produce(&self.plan.sink.topic, records, stopped).await
                }
                Err(e) => {
                    tracing::error!(query = %self.query_id, error = %e, "cannot encode output rows; skipped");
                    true
                }
            },
            Output::Rows { sender, .. } => {
                let columns: Vec<&str> = self
                    .plan
                    .sink
                    .columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                let Ok(objects) = to_rows(&rows) else {
                    return true;
                };
                for (object, meta) in objects.into_iter().zip(&emitted.meta) {
                    let values = columns
                        .iter()
                        .map(|c| object.get(*c).cloned().unwrap_or(Value::Null))
                        .collect();
                    let row = PushRow {
                        values,
                        tombstone: meta.tombstone,
                        window: meta.window,
                    };
                    if sender.send(row).await.is_err() {
                        return false;
                    }
                }
                self.sink_counters.add(rows.num_rows(), rows.num_rows());
                true
            }
        }
    }

    /// The records to write for fetched records. A record that fails (cannot be decoded, an
    /// expression fails on it) is skipped and goes to the processing log: when a batch
    /// fails, its records are run one by one to find the ones at fault.
    async fn process(&self, records: &[ConsumedRecord]) -> Emitted {
        let mut failures = Vec::new();
        crate::functions::guard::take_failures();
        let mut parts = self.each_record_on_failure(records, &mut failures, |records, failures| {
            self.compute(records, failures)
        });
        let output = match parts.len() {
            1 => parts.pop().unwrap_or_default(),
            _ => Emitted::concat(parts),
        };
        let offset = records.last().map_or(-1, |r| r.offset);
        let nulled = crate::functions::guard::take_failures();
        failures.extend(
            output
                .failures
                .iter()
                .chain(&nulled)
                .map(|message| Failure {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset,
                    message: message.clone(),
                }),
        );
        self.log.log(&self.query_id, failures).await;
        output
    }

    /// `run` over the whole batch (one part); when that fails, over each record alone (a
    /// part per record it succeeds on), the errors of the others in `failures`. The records
    /// one by one log their own failures: those of the failed batch are dropped, or each
    /// would be logged twice.
    fn each_record_on_failure<T>(
        &self,
        records: &[ConsumedRecord],
        failures: &mut Vec<Failure>,
        run: impl Fn(&[ConsumedRecord], &mut Vec<Failure>) -> Result<T>,
    ) -> Vec<T> {
        if let Ok(whole) = run(records, failures) {
            return vec![whole];
        }
        failures.clear();
        let mut parts = Vec::with_capacity(records.len());
        for record in records {
            match run(std::slice::from_ref(record), failures) {
                Ok(part) => parts.push(part),
                Err(e) => failures.push(Failure {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset: record.offset,
                    message: e.to_string(),
                }),
            }
        }
        parts
    }

    fn compute(&self, records: &[ConsumedRecord], failures: &mut Vec<Failure>) -> Result<Emitted> {
        let Some(input) = decode_batch(
            &self.plan,
            &self.source,
            &self.schema,
            self.partition,
            records,
            failures,
        )?
        else {
            return Ok(Emitted::default());
        };
        match &*self.executor {
            Executor::Operator(operator) => operator.process(self.port(), &input),
            Executor::Route(..) => Err(EngineError::Internal(
                "a routing task computes no rows".into(),
            )),
        }
    }

    /// Where this task's batches enter its operator.
    fn port(&self) -> Port {
        Port {
            side: self.side,
            reader: self.reader,
        }
    }

    /// Takes records the query had already read before it restarted: a stateful operator
    /// rebuilds its state from them and emits nothing; a routing task rebuilding its exchange
    /// routes them marked as replayed. False when the query stopped.
    async fn replay(
        &self,
        records: &[ConsumedRecord],
        stopped: &mut watch::Receiver<bool>,
    ) -> bool {
        match &*self.executor {
            Executor::Route(router, counters) => {
                let routed = self.route(router, records, true).await;
                counters.add(records.len(), routed.len());
                self.produce(&router.topic, routed, stopped).await
            }
            _ => {
                let _rebuilt_state_only = self.process(records).await;
                true
            }
        }
    }

    /// The records to write into a repartition topic for fetched records (`replayed`:
    /// marked as records the query had read before); those that cannot be decoded go to
    /// the processing log.
    async fn route(
        &self,
        router: &Router,
        records: &[ConsumedRecord],
        replayed: bool,
    ) -> Vec<ProducerRecord> {
        let mut failures = Vec::new();
        crate::functions::guard::take_failures();
        let parts = self.each_record_on_failure(records, &mut failures, |records, failures| {
            let (plan, source, schema) = (&self.plan, &self.source, &self.schema);
            router.route(plan, source, schema, self.partition, records, failures)
        });
        let offset = records.last().map_or(-1, |r| r.offset);
        failures.extend(
            crate::functions::guard::take_failures()
                .into_iter()
                .map(|message| Failure {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    offset,
                    message,
                }),
        );
        self.log.log(&self.query_id, failures).await;
        let routed = parts.into_iter().flatten();
        match replayed {
            true => routed.map(exchange::mark_replayed).collect(),
            false => routed.collect(),
        }
    }

    /// Writes to `topic` (the sink, or a repartition topic), retrying until it works; false
    /// when the query stopped first.
    /// A task that was idle waits for a query writing its topic: it holds the others back
    /// again, from where it was (`last_time`, the latest record time it read).
    fn resume(&self, last_time: i64) {
        if let Some((alignment, task)) = &self.alignment {
            alignment.at(*task, last_time);
        }
        if let Executor::Operator(operator) = &*self.executor {
            operator.resume(self.port());
        }
    }

    /// The sink topic's partition count, for a windowed sink (its records go by their
    /// inner key); `None` otherwise, or when it cannot be read.
    async fn sink_partitions(&self) -> Option<i32> {
        self.plan.sink.window?;
        let topic = &self.plan.sink.topic;
        let count = self
            .sink_partitions
            .get_or_try_init(|| self.client.partition_count(topic));
        count.await.ok().copied()
    }

    async fn produce(
        &self,
        topic: &str,
        records: Vec<ProducerRecord>,
        stopped: &mut watch::Receiver<bool>,
    ) -> bool {
        if records.is_empty() {
            return true;
        }
        loop {
            match self.client.produce(topic, records.clone()).await {
                Ok(_) => return true,
                Err(e) => {
                    tracing::warn!(query = %self.query_id, %topic, error = %e, "writing failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped.changed() => return false,
                    }
                }
            }
        }
    }
}

impl Emitted {
    /// One output from several, in order.
    fn concat(parts: Vec<Emitted>) -> Emitted {
        let batches: Vec<RecordBatch> = parts.iter().filter_map(|p| p.rows.clone()).collect();
        let mut failures: Vec<String> = parts
            .iter()
            .flat_map(|p| p.failures.iter().cloned())
            .collect();
        let Some(first) = batches.first() else {
            return Emitted {
                failures,
                ..Emitted::default()
            };
        };
        match datafusion::arrow::compute::concat_batches(&first.schema(), &batches) {
            Ok(rows) => Emitted {
                rows: Some(rows),
                meta: parts.into_iter().flat_map(|p| p.meta).collect(),
                failures,
            },
            Err(e) => {
                failures.push(format!("cannot join output batches: {e}"));
                Emitted {
                    failures,
                    ..Emitted::default()
                }
            }
        }
    }

    /// The sink's rows for `batch` (with `meta`, one per row): projected all at once or, when
    /// that fails (one row's division by zero), row by row, leaving out the rows it fails on.
    /// Never fails: stateful operators call it after their state took the batch.
    pub(crate) fn projected(
        plan: &PersistentPlan,
        batch: &RecordBatch,
        meta: Vec<RowMeta>,
    ) -> Emitted {
        if let Ok(rows) = project(plan, batch) {
            return Emitted {
                rows: Some(rows),
                meta,
                failures: Vec::new(),
            };
        }
        let parts = meta
            .into_iter()
            .enumerate()
            .map(|(row, meta)| match project(plan, &batch.slice(row, 1)) {
                Ok(rows) => Emitted {
                    rows: Some(rows),
                    meta: vec![meta],
                    failures: Vec::new(),
                },
                Err(e) => Emitted {
                    failures: vec![format!("an output row was left out: {e}")],
                    ..Emitted::default()
                },
            })
            .collect();
        Emitted::concat(parts)
    }

    /// An operator's output, or its error as the one failure of an empty output (for errors
    /// after the operator's state took the batch).
    pub(crate) fn or_failure(result: Result<Emitted>) -> Emitted {
        result.unwrap_or_else(|e| Emitted {
            failures: vec![format!("the output of a batch was left out: {e}")],
            ..Emitted::default()
        })
    }
}

/// Evaluates a boolean clause over `batch`; when it fails on the batch, row by row: a row it
/// fails on does not pass, and its error goes to `failures`.
pub(crate) fn evaluate_predicate_rows(
    batch: &RecordBatch,
    predicate: &Arc<dyn PhysicalExpr>,
    clause: &str,
    failures: &mut Vec<String>,
) -> BooleanArray {
    if let Ok(mask) = evaluate_predicate(batch, predicate, clause) {
        return mask;
    }
    (0..batch.num_rows())
        .map(
            |row| match evaluate_predicate(&batch.slice(row, 1), predicate, clause) {
                Ok(mask) => Some(mask.is_valid(0) && mask.value(0)),
                Err(e) => {
                    failures.push(format!("{clause} failed on a row: {e}"));
                    Some(false)
                }
            },
        )
        .collect()
}

/// The rows of `input` on which `check` succeeds, and the errors of the others: operators
/// evaluate their input expressions before changing their state, and leave out the rows
/// those fail on.
pub(crate) fn rows_passing(
    input: &Input,
    check: impl Fn(&RecordBatch) -> Result<()>,
) -> Result<(Input, Vec<String>)> {
    let mut keep = Vec::with_capacity(input.batch.num_rows());
    let mut failures = Vec::new();
    for row in 0..input.batch.num_rows() {
        match check(&input.batch.slice(row, 1)) {
            Ok(()) => keep.push(true),
            Err(e) => {
                keep.push(false);
                failures.push(format!("a row was left out: {e}"));
            }
        }
    }
    let batch = filter_record_batch(&input.batch, &BooleanArray::from(keep.clone()))?;
    let deleted = input
        .deleted
        .iter()
        .zip(&keep)
        .filter(|(_, kept)| **kept)
        .map(|(deleted, _)| *deleted)
        .collect();
    Ok((Input { batch, deleted }, failures))
}

/// Resolves when a push query's receiver is gone; never for a persistent query.
async fn receiver_gone(output: &Output) {
    match output {
        Output::Rows { sender, .. } => sender.closed().await,
        Output::Topic => std::future::pending().await,
    }
}

/// Decoded source records: rows of the source schema (columns and pseudo-columns) and which
/// rows are deletions (a table's tombstones and rows its WHERE no longer keeps; a stream's
/// records without a value).
pub(crate) struct Input {
    pub batch: RecordBatch,
    pub deleted: Vec<bool>,
}

/// Decodes source records into an [`Input`] and applies the WHERE clause: a stream drops the
/// rows it rejects, a table turns them into deletions. Records that cannot be decoded are
/// skipped and added to `failures`. `None` when nothing is left.
fn decode_batch(
    plan: &PersistentPlan,
    source: &Source,
    schema: &SchemaRef,
    partition: i32,
    records: &[ConsumedRecord],
    failures: &mut Vec<Failure>,
) -> Result<Option<Input>> {
    let Some(Input { batch, mut deleted }) =
        decode_records(source, schema, partition, records, failures)?
    else {
        return Ok(None);
    };
    let Some(filter) = &plan.filter else {
        return Ok(Some(Input { batch, deleted }));
    };
    let mask = evaluate_predicate(&batch, filter, "WHERE")?;
    if source.kind == SourceKind::Table {
        for (row, deleted) in deleted.iter_mut().enumerate() {
            *deleted |= !(mask.is_valid(row) && mask.value(row));
        }
        return Ok(Some(Input { batch, deleted }));
    }
    let batch = filter_record_batch(&batch, &mask)?;
    let deleted = vec![false; batch.num_rows()];
    Ok((batch.num_rows() > 0).then_some(Input { batch, deleted }))
}

/// Evaluates a boolean clause (WHERE, HAVING) on every row of `batch`.
fn evaluate_predicate(
    batch: &RecordBatch,
    predicate: &Arc<dyn PhysicalExpr>,
    clause: &str,
) -> Result<BooleanArray> {
    let mask = evaluate(predicate, batch)?;
    mask.as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| EngineError::Plan(format!("{clause} must be a boolean expression")))
}

/// The ROWTIME of every row of a source batch.
fn row_times(batch: &RecordBatch) -> Result<Vec<i64>> {
    batch
        .column_by_name(ROWTIME)
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .map(|a| a.values().to_vec())
        })
        .ok_or_else(|| EngineError::Internal("ROWTIME column missing".into()))
}

/// Evaluates the projection on `batch` into a batch named after the sink's columns.
fn project(plan: &PersistentPlan, batch: &RecordBatch) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(plan.projection.len());
    for expr in &plan.projection {
        columns.push(evaluate(expr, batch)?);
    }
    let fields: Vec<Field> = plan
        .sink
        .columns
        .iter()
        .zip(&columns)
        .map(|(c, a)| Field::new(&c.name, a.data_type().clone(), true))
        .collect();
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// What goes with one output row besides its columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowMeta {
    pub timestamp: i64,
    /// The window of a windowed key: start and end.
    pub window: Option<(i64, i64)>,
    /// Whether the row is a deletion: its key with no value.
    pub tombstone: bool,
}

/// Serializes projected rows into records for the sink topic, one per row. A windowed key's
/// record goes to the partition of its inner key, of a sink of `partitions` partitions (as
/// Kafka Streams' windowed partitioner does), with the rows of that key before windowing.
fn encode_output(
    plan: &PersistentPlan,
    output: &RecordBatch,
    meta: &[RowMeta],
    partitions: Option<i32>,
) -> Result<Vec<ProducerRecord>> {
    let sink = &plan.sink;
    let sink_keys: Vec<&ColumnDef> = sink.key_columns().collect();
    let sink_values: Vec<&ColumnDef> = sink.value_columns().collect();
    let mut keys = encode_columns(output, &sink_keys, sink.key_format, false)?;
    // A DELIMITED key whose columns are all null is no key at all (a null record key), as
    // ksqlDB writes it (JSON keeps an object of nulls).
    let key_arrays: Vec<_> = sink_keys
        .iter()
        .filter_map(|c| output.column_by_name(&c.name))
        .collect();
    if matches!(sink.key_format, formats::Format::Delimited(_)) && !key_arrays.is_empty() {
        for (row, key) in keys.iter_mut().enumerate() {
            if key_arrays.iter().all(|array| array.is_null(row)) {
                *key = None;
            }
        }
    }
    // WITH (TIMESTAMP='column') on the sink: that column's value is the record's time.
    let event_times = match &sink.timestamp_column {
        Some(name) => output
            .column_by_name(name)
            .map(|column| event_times(column, sink.timestamp_format.as_deref()))
            .transpose()?,
        None => None,
    };
    let values = encode_columns(
        output,
        &sink_values,
        sink.value_format,
        sink.wrap_single_value,
    )?;
    let mut out = Vec::with_capacity(meta.len());
    for (row, ((key, value), meta)) in keys.into_iter().zip(values).zip(meta).enumerate() {
        let mut key = key;
        let timestamp = match event_times.as_ref().map(|times| &times[row]) {
            Some(Some(Ok(time))) => *time,
            Some(Some(Err(reason))) => {
                tracing::warn!(sink = %sink.name, %reason, "dropping a row without a valid timestamp");
                continue;
            }
            _ => meta.timestamp,
        };
        if timestamp < 0 {
            // Kafka records cannot carry a negative time; ksqlDB drops such rows too.
            tracing::warn!(sink = %sink.name, timestamp, "dropping a row with a negative timestamp");
            continue;
        }
        let mut partition = None;
        if let (Some(kind), Some((start, end))) = (sink.window, meta.window) {
            partition = partitions
                .zip(key.as_deref())
                .map(|(count, inner)| partitioner::partition_for_key(inner, count));
            key = Some(formats::windowed_key(key.as_deref(), kind, start, end).into());
        }
        out.push(ProducerRecord {
            key,
            partition,
            value: if meta.tombstone { None } else { value },
            timestamp_ms: Some(timestamp),
            ..Default::default()
        });
    }
    Ok(out)
}

/// Each row's event time from a TIMESTAMP column: epoch milliseconds (BIGINT or TIMESTAMP),
/// or text read with the TIMESTAMP_FORMAT pattern. `None` for null, an error for text that
/// does not parse.
fn event_times(
    column: &ArrayRef,
    pattern: Option<&str>,
) -> Result<Vec<Option<std::result::Result<i64, String>>>> {
    if let (Some(pattern), Some(texts)) = (
        pattern,
        column
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>(),
    ) {
        let mut cache = datetime::Cache::default();
        return Ok(texts
            .iter()
            .map(|text| text.map(|t| datetime::epoch_millis(t, pattern, &mut cache)))
            .collect());
    }
    let millis = cast(column, &DataType::Int64)?;
    let millis = millis
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| EngineError::Internal("a cast to Int64 gives Int64".into()))?;
    Ok(millis.iter().map(|m| m.map(Ok)).collect())
}

/// Serializes `columns` of every row of `output` in `format`: `None` for no bytes.
///
/// JSON objects are written straight from the Arrow columns (the hot path of most queries);
/// other formats go through one JSON value per column.
fn encode_columns(
    output: &RecordBatch,
    columns: &[&ColumnDef],
    format: formats::Format,
    wrap_single_value: bool,
) -> Result<Vec<Option<Bytes>>> {
    let rows = output.num_rows();
    if columns.is_empty() {
        return Ok(vec![None; rows]);
    }
    let indices = columns
        .iter()
        .map(|c| {
            output
                .schema()
                .index_of(&c.name)
                .map_err(|_| EngineError::Internal(format!("output column {} missing", c.name)))
        })
        .collect::<Result<Vec<usize>>>()?;
    let selected = epoch_numbers(output.project(&indices)?)?;
    if format == formats::Format::Json && (columns.len() > 1 || wrap_single_value) {
        let mut buffer = Vec::with_capacity(rows * 32);
        {
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .with_encoder_factory(Arc::new(Base64Bytes))
                .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut buffer);
            writer.write(&selected)?;
            writer.finish()?;
        }
        // Every row's record is a slice of the one buffer, without a copy.
        let buffer = Bytes::from(buffer);
        let mut lines: Vec<Option<Bytes>> = Vec::with_capacity(rows);
        let mut start = 0;
        for end in line_ends(&buffer).take(rows) {
            lines.push(Some(buffer.slice(start..end)));
            start = end + 1;
        }
        for (row, name, text) in non_finite_doubles(&selected) {
            let Some(line) = lines[row].as_mut() else {
                continue;
            };
            if let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(line) {
                object.insert(name, Value::String(text.into()));
                *line = serde_json::to_vec(&object)
                    .map_err(|e| EngineError::Internal(e.to_string()))?
                    .into();
            }
        }
        return Ok(lines);
    }
    to_rows(&selected)?
        .iter()
        .map(|row| {
            let values: Vec<Value> = columns
                .iter()
                .map(|c| row.get(&c.name).cloned().unwrap_or(Value::Null))
                .collect();
            Ok(formats::encode(format, columns, &values, wrap_single_value)?.map(Bytes::from))
        })
        .collect()
}

/// The positions of the line ends in `buffer`.
fn line_ends(buffer: &[u8]) -> impl Iterator<Item = usize> + '_ {
    buffer
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'\n')
        .map(|(i, _)| i)
}

/// The window of every row of a windowed source's batch (WINDOWSTART, WINDOWEND).
fn row_windows(batch: &RecordBatch) -> Option<Vec<Option<(i64, i64)>>> {
    let column = |name| {
        batch
            .column_by_name(name)?
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
    };
    let (starts, ends) = (column(WINDOWSTART)?, column(WINDOWEND)?);
    Some(
        (0..batch.num_rows())
            .map(|i| {
                (starts.is_valid(i) && ends.is_valid(i)).then(|| (starts.value(i), ends.value(i)))
            })
            .collect(),
    )
}

pub(crate) fn to_rows(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>> {
    let mut buf = Vec::new();
    {
        let mut writer = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .with_encoder_factory(Arc::new(Base64Bytes))
            .build::<_, JsonArray>(&mut buf);
        writer.write(batch)?;
        writer.finish()?;
    }
    let mut rows: Vec<Map<String, Value>> =
        serde_json::from_slice(&buf).map_err(|e| EngineError::Internal(e.to_string()))?;
    for (row, name, text) in non_finite_doubles(batch) {
        rows[row].insert(name, Value::String(text.into()));
    }
    Ok(rows)
}

/// BYTES as ksqlDB writes them in JSON: base64 text, at any depth (Arrow's writer would
/// write hex).
#[derive(Debug)]
struct Base64Bytes;

impl EncoderFactory for Base64Bytes {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a FieldRef,
        array: &'a dyn Array,
        _options: &'a EncoderOptions,
    ) -> std::result::Result<Option<NullableEncoder<'a>>, ArrowError> {
        let Some(array) = array.as_binary_opt::<i32>() else {
            return Ok(None);
        };
        let nulls = array.nulls().cloned();
        Ok(Some(NullableEncoder::new(
            Box::new(Base64Text(array)),
            nulls,
        )))
    }
}

struct Base64Text<'a>(&'a BinaryArray);

impl Encoder for Base64Text<'_> {
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        use base64::Engine as _;
        out.push(b'"');
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(self.0.value(idx))
                .as_bytes(),
        );
        out.push(b'"');
    }
}

/// Times as ksqlDB writes them to topics: a TIMESTAMP as epoch milliseconds, a DATE as days
/// since the epoch, a TIME as milliseconds of the day, inside arrays, maps and structs too
/// (Arrow's writers would print them as ISO-8601 text).
fn epoch_numbers(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| wire_type(f.data_type()).is_some())
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let Some(data_type) = wire_type(field.data_type()) else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
            continue;
        };
        let column = match column.data_type() {
            DataType::Timestamp(unit, _) if *unit != TimeUnit::Millisecond => {
                cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?
            }
            _ => Arc::clone(column),
        };
        columns.push(cast(&column, &data_type)?);
        fields.push(field.as_ref().clone().with_data_type(data_type));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The type a column of `data_type` is written as, when times make it differ.
fn wire_type(data_type: &DataType) -> Option<DataType> {
    let field = |f: &FieldRef| {
        wire_type(f.data_type()).map(|t| Arc::new(f.as_ref().clone().with_data_type(t)))
    };
    match data_type {
        DataType::Timestamp(..) => Some(DataType::Int64),
        DataType::Date32 | DataType::Time32(_) => Some(DataType::Int32),
        DataType::List(item) => field(item).map(DataType::List),
        DataType::Map(entries, sorted) => field(entries).map(|e| DataType::Map(e, *sorted)),
        DataType::Struct(children) => {
            let changed: Vec<Option<FieldRef>> = children.iter().map(field).collect();
            changed.iter().any(Option::is_some).then(|| {
                DataType::Struct(
                    children
                        .iter()
                        .zip(changed)
                        .map(|(f, c)| c.unwrap_or_else(|| Arc::clone(f)))
                        .collect(),
                )
            })
        }
        _ => None,
    }
}

/// The doubles JSON cannot hold (NaN, ±Infinity), which Arrow's writer turns into nulls:
/// ksqlDB writes them as the strings "NaN", "Infinity" and "-Infinity". Row, column, text.
fn non_finite_doubles(batch: &RecordBatch) -> Vec<(usize, String, &'static str)> {
    let mut out = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let Some(doubles) = column.as_any().downcast_ref::<Float64Array>() else {
            continue;
        };
        if doubles.values().iter().all(|v| v.is_finite()) {
            continue;
        }
        for (row, value) in doubles.iter().enumerate() {
            let Some(value) = value.filter(|v| !v.is_finite()) else {
                continue;
            };
            let text = match value {
                v if v.is_nan() => "NaN",
                v if v > 0.0 => "Infinity",
                _ => "-Infinity",
            };
            out.push((row, field.name().clone(), text));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::{
        ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    };

    use super::*;

    /// A function that panics on every row.
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct Panics(Signature);

    impl ScalarUDFImpl for Panics {
        fn name(&self) -> &str {
            "panics"
        }
        fn signature(&self) -> &Signature {
            &self.0
        }
        fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
            Ok(DataType::Int64)
        }
        fn invoke_with_args(
            &self,
            _: ScalarFunctionArgs,
        ) -> datafusion::common::Result<ColumnarValue> {
            panic!("a function's bug")
        }
    }

    #[test]
    fn a_function_that_panics_fails_its_batch_instead() {
        let udf = ScalarUDF::new_from_impl(Panics(Signature::any(1, Volatility::Immutable)));
        let schema = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        let logical = udf.call(vec![datafusion::prelude::col("a")]);
        let physical = datafusion::prelude::SessionContext::new()
            .create_physical_expr(logical, &DFSchema::try_from(schema.clone()).unwrap())
            .unwrap();
        let rows: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let batch = RecordBatch::try_new(Arc::new(schema), vec![rows]).unwrap();
        let error = evaluate(&physical, &batch).unwrap_err().to_string();
        assert!(error.contains("a function's bug"), "{error}");
    }
}
