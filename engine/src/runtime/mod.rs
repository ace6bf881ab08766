//! Running persistent queries: one task per source partition feeding `FilterProjectExec`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, TimestampMillisecondArray,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::json::writer::JsonArray;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use eddy_broker::{BrokerError, ConsumedRecord, LogClient, OffsetReset, ProducerRecord};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::catalog::{ROWOFFSET, ROWPARTITION, ROWTIME, WINDOWEND, WINDOWSTART};
use crate::error::{EngineError, Result};
use crate::formats;
use crate::parser::{ColumnDef, SourceKind};
use crate::query::{Operator, PersistentPlan};

mod aggregate;
mod filter_project;
pub mod processing_log;

pub use aggregate::AggregateExec;
pub use filter_project::FilterProjectExec;
pub use processing_log::{Failure, ProcessingLog};

const FETCH_BYTES_MAX: usize = 1 << 20;
const FETCH_WAIT: Duration = Duration::from_millis(200);

/// Runs a query until it is stopped.
pub(crate) async fn run_query(
    client: Arc<dyn LogClient>,
    log: Arc<ProcessingLog>,
    query_id: String,
    plan: Arc<PersistentPlan>,
    stopped: watch::Receiver<bool>,
) {
    let partitions = match client.partition_count(&plan.source.topic).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(query = %query_id, error = %e, "cannot read the source topic");
            return;
        }
    };
    let executor = Arc::new(match &plan.operator {
        Operator::FilterProject => {
            Executor::FilterProject(FilterProjectExec::new(Arc::clone(&plan)))
        }
        Operator::Aggregate(aggregate) => {
            Executor::Aggregate(AggregateExec::new(Arc::clone(&plan), aggregate.clone()))
        }
    });
    let tasks: Vec<_> = (0..partitions)
        .map(|p| {
            let task = PartitionTask {
                client: Arc::clone(&client),
                log: Arc::clone(&log),
                query_id: query_id.clone(),
                plan: Arc::clone(&plan),
                executor: Arc::clone(&executor),
                partition: p,
            };
            tokio::spawn(task.run(stopped.clone()))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

struct PartitionTask {
    client: Arc<dyn LogClient>,
    log: Arc<ProcessingLog>,
    query_id: String,
    plan: Arc<PersistentPlan>,
    executor: Arc<Executor>,
    partition: i32,
}

/// The operator a query runs, shared by its partition tasks (an aggregate's state is per key,
/// whichever partition the key's records come from).
enum Executor {
    FilterProject(FilterProjectExec),
    Aggregate(AggregateExec),
}

impl PartitionTask {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let topic = self.plan.source.topic.clone();
        let mut offset = None;
        while !*stopped.borrow() {
            let start = match offset {
                Some(o) => o,
                None => match self
                    .client
                    .start_offset(
                        &self.query_id,
                        &topic,
                        self.partition,
                        OffsetReset::Earliest,
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
            let fetched = tokio::select! {
                r = self.client.fetch(&topic, self.partition, start, FETCH_BYTES_MAX, FETCH_WAIT) => r,
                _ = stopped.changed() => return,
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
            let Some(last) = records.last() else { continue };
            let next = last.offset + 1;
            let output = self.process(&records).await;
            if !output.is_empty() && !self.produce(output, &mut stopped).await {
                return;
            }
            let commit = [(topic.clone(), self.partition, next)];
            if let Err(e) = self.client.commit(&self.query_id, &commit).await {
                tracing::warn!(query = %self.query_id, error = %e, "commit failed");
            }
            offset = Some(next);
        }
    }

    /// The records to write for fetched records. A record that fails (cannot be decoded, an
    /// expression fails on it) is skipped and goes to the processing log: when a batch
    /// fails, its records are run one by one to find the ones at fault.
    async fn process(&self, records: &[ConsumedRecord]) -> Vec<ProducerRecord> {
        let mut failures = Vec::new();
        let output = match self.compute(records, &mut failures) {
            Ok(output) => output,
            Err(_) => {
                let mut output = Vec::new();
                for record in records {
                    match self.compute(std::slice::from_ref(record), &mut failures) {
                        Ok(records) => output.extend(records),
                        Err(e) => failures.push(Failure {
                            topic: self.plan.source.topic.clone(),
                            partition: self.partition,
                            offset: record.offset,
                            message: e.to_string(),
                        }),
                    }
                }
                output
            }
        };
        self.log.log(&self.query_id, failures).await;
        output
    }

    fn compute(
        &self,
        records: &[ConsumedRecord],
        failures: &mut Vec<Failure>,
    ) -> Result<Vec<ProducerRecord>> {
        let Some(input) = decode_batch(&self.plan, self.partition, records, failures)? else {
            return Ok(Vec::new());
        };
        match &*self.executor {
            Executor::FilterProject(exec) => exec.process(&input),
            Executor::Aggregate(exec) => exec.process(&input),
        }
    }

    /// Writes to the sink, retrying until it works; false when the query stopped first.
    async fn produce(
        &self,
        records: Vec<ProducerRecord>,
        stopped: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            match self
                .client
                .produce(&self.plan.sink.topic, records.clone())
                .await
            {
                Ok(_) => return true,
                Err(e) => {
                    tracing::warn!(query = %self.query_id, error = %e, "writing to the sink failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped.changed() => return false,
                    }
                }
            }
        }
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
    partition: i32,
    records: &[ConsumedRecord],
    failures: &mut Vec<Failure>,
) -> Result<Option<Input>> {
    let source = &plan.source;
    let key_columns: Vec<&ColumnDef> = source.key_columns().collect();
    let value_columns: Vec<&ColumnDef> = source.value_columns().collect();
    let mut rows = Vec::with_capacity(records.len());
    let mut deleted = Vec::with_capacity(records.len());
    for record in records {
        let mut key_bytes = record.key.as_deref();
        let mut window = None;
        if let (Some(kind), Some(bytes)) = (source.window, key_bytes) {
            match formats::split_windowed_key(bytes, kind) {
                Ok((key, start, end)) => {
                    key_bytes = Some(key);
                    window = Some((start, end));
                }
                Err(reason) => {
                    failures.push(Failure {
                        topic: source.topic.clone(),
                        partition,
                        offset: record.offset,
                        message: format!("cannot read the windowed key: {reason}"),
                    });
                    continue;
                }
            }
        }
        let keys = formats::decode(source.key_format, &key_columns, key_bytes, false);
        let values = formats::decode(
            source.value_format,
            &value_columns,
            record.value.as_deref(),
            source.wrap_single_value,
        );
        let (keys, values) = match (keys, values) {
            (Ok(k), Ok(v)) => (k, v),
            (Err(reason), _) | (_, Err(reason)) => {
                failures.push(Failure {
                    topic: source.topic.clone(),
                    partition,
                    offset: record.offset,
                    message: format!("cannot deserialize the record: {reason}"),
                });
                continue;
            }
        };
        let mut row = Map::new();
        let columns = key_columns.iter().chain(&value_columns);
        for (column, value) in columns.zip(keys.into_iter().chain(values)) {
            row.insert(column.name.clone(), value);
        }
        row.insert(ROWTIME.into(), Value::from(record.timestamp_ms));
        row.insert(ROWPARTITION.into(), Value::from(partition));
        row.insert(ROWOFFSET.into(), Value::from(record.offset));
        if let Some((start, end)) = window {
            row.insert(WINDOWSTART.into(), Value::from(start));
            row.insert(WINDOWEND.into(), Value::from(end));
        }
        rows.push(Value::Object(row));
        deleted.push(record.value.is_none());
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let batch = to_batch(plan, &rows)?;
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
    let mask = predicate.evaluate(batch)?.into_array(batch.num_rows())?;
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
        columns.push(expr.evaluate(batch)?.into_array(batch.num_rows())?);
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

/// Serializes projected rows into records for the sink topic, one per row.
fn encode_output(
    plan: &PersistentPlan,
    output: &RecordBatch,
    meta: &[RowMeta],
) -> Result<Vec<ProducerRecord>> {
    let rows = to_rows(output)?;
    let sink = &plan.sink;
    let sink_keys: Vec<&ColumnDef> = sink.key_columns().collect();
    let sink_values: Vec<&ColumnDef> = sink.value_columns().collect();
    let mut out = Vec::with_capacity(rows.len());
    for (row, meta) in rows.iter().zip(meta) {
        let pick = |columns: &[&ColumnDef]| -> Vec<Value> {
            columns
                .iter()
                .map(|c| row.get(&c.name).cloned().unwrap_or(Value::Null))
                .collect()
        };
        let mut key = if sink_keys.is_empty() {
            None
        } else {
            formats::encode(sink.key_format, &sink_keys, &pick(&sink_keys), false)?
        };
        if let (Some(kind), Some((start, end))) = (sink.window, meta.window) {
            key = Some(formats::windowed_key(key.as_deref(), kind, start, end));
        }
        let value = if meta.tombstone {
            None
        } else {
            formats::encode(
                sink.value_format,
                &sink_values,
                &pick(&sink_values),
                sink.wrap_single_value,
            )?
        };
        out.push(ProducerRecord {
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            timestamp_ms: Some(meta.timestamp),
            ..Default::default()
        });
    }
    Ok(out)
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

fn to_batch(plan: &PersistentPlan, rows: &[Value]) -> Result<RecordBatch> {
    let mut decoder = ReaderBuilder::new(Arc::clone(&plan.input_schema)).build_decoder()?;
    decoder.serialize(rows)?;
    decoder
        .flush()?
        .ok_or_else(|| EngineError::Internal("no batch from decoded rows".into()))
}

fn to_rows(batch: &RecordBatch) -> Result<Vec<Map<String, Value>>> {
    let mut buf = Vec::new();
    {
        let mut writer = datafusion::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, JsonArray>(&mut buf);
        writer.write(batch)?;
        writer.finish()?;
    }
    let rows: Vec<Map<String, Value>> =
        serde_json::from_slice(&buf).map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok(rows)
}
