//! Pull queries: a SELECT without EMIT CHANGES, answered once from a snapshot and done.
//!
//! The snapshot is the source's topic read up to each partition's high watermark when the
//! query starts: for a table, the latest row of every key (a tombstone deletes it), for a
//! stream, every row. It becomes a DataFusion in-memory table under the source's name, and
//! the SELECT runs on it as ordinary DataFusion SQL, so pull queries take the full language
//! (key lookups, ranges, IN, OR, LIKE, ORDER BY, LIMIT, aggregates) rather than ksqlDB's key
//! lookups alone.
//!
//! What one pull query holds is bounded by [`PullLimits`]: the bytes of the snapshot, and the
//! rows and bytes of the answer. A query past either fails with an error naming the limit and
//! its config key, so one query over a big source cannot take the server's memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::MemTable;
use eddy_broker::{ConsumedRecord, LogClient};
use serde_json::Value;

use crate::catalog::{Catalog, Source, ROWTIME, WINDOWEND, WINDOWSTART};
use crate::error::{EngineError, Result};
use crate::functions;
use crate::parser::{SelectQuery, SourceKind};
use crate::query::{expand_and_find_source, quoted, rewrite_query, Star};
use crate::runtime::{decode_records, to_rows, Failure};
use datafusion::sql::sqlparser::ast::{GroupByExpr, SetExpr};

mod keys;
pub use keys::ScanConfig;

/// The answer to a pull query.
#[derive(Debug, Clone, PartialEq)]
pub struct PullResult {
    /// Column names and their SQL type names, in order.
    pub columns: Vec<(String, String)>,
    /// Which columns are the table's key (ksqlDB marks them KEY in `/query` headers).
    pub keys: Vec<bool>,
    /// Rows: one value per column.
    pub rows: Vec<Vec<Value>>,
}

/// Rows one pull query may answer, by default (`ksql.query.pull.max.rows`).
pub const PULL_ROWS_MAX_DEFAULT: usize = 100_000;
/// Bytes one pull query may hold, by default (`ksql.query.pull.max.bytes`): separately, the
/// records of its snapshot (keys and values as stored) and its answer (as Arrow arrays).
pub const PULL_BYTES_MAX_DEFAULT: usize = 64 << 20;

/// What one pull query may hold; past either bound it fails, naming the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullLimits {
    /// `ksql.query.pull.max.rows`: rows in the answer.
    pub rows_max: usize,
    /// `ksql.query.pull.max.bytes`: bytes of the snapshot's records, and of the answer.
    pub bytes_max: usize,
}

impl Default for PullLimits {
    fn default() -> PullLimits {
        PullLimits {
            rows_max: PULL_ROWS_MAX_DEFAULT,
            bytes_max: PULL_BYTES_MAX_DEFAULT,
        }
    }
}

/// The process's pull limits: set once at start from the server's config file.
static ROWS_MAX: AtomicUsize = AtomicUsize::new(PULL_ROWS_MAX_DEFAULT);
static BYTES_MAX: AtomicUsize = AtomicUsize::new(PULL_BYTES_MAX_DEFAULT);

/// Sets the limits every later pull query of this process runs under.
pub fn set_limits(limits: PullLimits) {
    ROWS_MAX.store(limits.rows_max.max(1), Ordering::Relaxed);
    BYTES_MAX.store(limits.bytes_max.max(1), Ordering::Relaxed);
}

/// The limits pull queries of this process run under.
pub fn limits() -> PullLimits {
    PullLimits {
        rows_max: ROWS_MAX.load(Ordering::Relaxed),
        bytes_max: BYTES_MAX.load(Ordering::Relaxed),
    }
}

/// Runs a pull query over a snapshot of its source, under the process's [`limits`], with
/// the scans `scan` allows.
pub async fn run(
    client: &Arc<dyn LogClient>,
    catalog: &Catalog,
    query: &SelectQuery,
    scan: ScanConfig,
) -> Result<PullResult> {
    run_with_limits(client, catalog, query, scan, limits()).await
}

/// Runs a pull query over a snapshot of its source, under `limits`.
pub async fn run_with_limits(
    client: &Arc<dyn LogClient>,
    catalog: &Catalog,
    query: &SelectQuery,
    scan: ScanConfig,
    limits: PullLimits,
) -> Result<PullResult> {
    refuse_clauses(query)?;
    let mut ast = query.query.clone();
    rewrite_query(&mut ast);
    let source = expand_and_find_source(
        &mut ast,
        catalog,
        Star {
            window: true,
            keys_last: false,
        },
    )?;
    if let SetExpr::Select(select) = ast.body.as_ref() {
        keys::check(select.selection.as_ref(), &source, scan)?;
    }
    let schema = source.schema();
    let mut batches = Vec::new();
    for (partition, records) in snapshot(client, &source, limits).await? {
        let mut failures: Vec<Failure> = Vec::new();
        if let Some(input) = decode_records(&source, &schema, partition, &records, &mut failures)? {
            let keep: Vec<bool> = input.deleted.iter().map(|d| !d).collect();
            let rows = datafusion::arrow::compute::filter_record_batch(&input.batch, &keep.into())?;
            batches.push(rows);
        }
    }
    let snapshot = match batches.first() {
        Some(first) => concat_batches(&first.schema(), &batches)?,
        None => datafusion::arrow::record_batch::RecordBatch::new_empty(Arc::clone(&schema)),
    };
    let context = functions::session();
    let table = MemTable::try_new(Arc::clone(&schema), vec![vec![snapshot]])?;
    context.register_table(quoted(&source.name), Arc::new(table))?;
    let statement = datafusion::sql::sqlparser::ast::Statement::Query(ast.clone());
    let plan = context
        .state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement,
        )))
        .await
        .map_err(|e| crate::query::unresolved_column(e, &ast))?;
    crate::query::check_comparisons(&plan)?;
    let mut frame = context.execute_logical_plan(plan).await?;
    // ksqlDB's ROWTIME is a BIGINT of epoch milliseconds.
    let rowtime_as_timestamp = frame
        .schema()
        .fields()
        .iter()
        .any(|f| f.name() == ROWTIME && matches!(f.data_type(), DataType::Timestamp(..)));
    if rowtime_as_timestamp {
        let columns: Vec<datafusion::prelude::Expr> = frame
            .schema()
            .columns()
            .into_iter()
            .map(|c| match c.name == ROWTIME {
                true => datafusion::prelude::cast(datafusion::prelude::col(c), DataType::Int64)
                    .alias(ROWTIME),
                false => datafusion::prelude::col(c),
            })
            .collect();
        frame = frame.select(columns)?;
    }
    let output_schema = frame.schema().as_arrow().clone();
    let results = collect_within(frame, &source.name, limits).await?;
    let columns: Vec<(String, String)> = output_schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), type_name(f.data_type())))
        .collect();
    let mut rows = Vec::new();
    for batch in &results {
        for object in to_rows(batch)? {
            rows.push(
                columns
                    .iter()
                    .map(|(name, _)| object.get(name).cloned().unwrap_or(Value::Null))
                    .collect(),
            );
        }
    }
    // Key columns (and a windowed key's bounds) that come out under their own names.
    let key_names: Vec<&str> = source
        .key_columns()
        .map(|c| c.name.as_str())
        .chain(
            source
                .window
                .map(|_| [WINDOWSTART, WINDOWEND])
                .into_iter()
                .flatten(),
        )
        .collect();
    let keys = columns
        .iter()
        .map(|(name, _)| key_names.contains(&name.as_str()))
        .collect();
    Ok(PullResult {
        columns,
        keys,
        rows,
    })
}

/// The clauses ksqlDB's pull queries refuse, in its words.
fn refuse_clauses(query: &SelectQuery) -> Result<()> {
    let SetExpr::Select(select) = query.query.body.as_ref() else {
        return Ok(());
    };
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    let clause = if select.from.iter().any(|f| !f.joins.is_empty()) {
        "JOIN"
    } else if query.window.is_some() {
        "WINDOW"
    } else if grouped {
        "GROUP BY"
    } else if !query.partition_by.is_empty() {
        "PARTITION BY"
    } else {
        return Ok(());
    };
    Err(EngineError::Plan(format!(
        "Pull queries don't support {clause} clauses. Add EMIT CHANGES for a push query."
    )))
}

/// The answer's batches, failing as soon as they pass `limits` rather than after holding them.
async fn collect_within(
    frame: datafusion::dataframe::DataFrame,
    source: &str,
    limits: PullLimits,
) -> Result<Vec<datafusion::arrow::record_batch::RecordBatch>> {
    use tokio_stream::StreamExt as _;
    let mut stream = frame.execute_stream().await?;
    let (mut rows, mut bytes, mut batches) = (0usize, 0usize, Vec::new());
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows();
        bytes += answer_bytes(&batch)?;
        if rows > limits.rows_max {
            return Err(EngineError::Execution(format!(
                "the pull query over '{source}' answers more than {} rows (limit \
                 ksql.query.pull.max.rows): add a WHERE clause or a LIMIT, or use a push query",
                limits.rows_max
            )));
        }
        if bytes > limits.bytes_max {
            return Err(EngineError::Execution(format!(
                "the pull query over '{source}' answers more than {} bytes (limit \
                 ksql.query.pull.max.bytes): select fewer columns or rows, or use a push query",
                limits.bytes_max
            )));
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// The bytes of an answer batch's values: its rows' share of the buffers, not their capacity
/// (a filter's output may sit in buffers sized for its input).
fn answer_bytes(batch: &datafusion::arrow::record_batch::RecordBatch) -> Result<usize> {
    let mut bytes = 0;
    for column in batch.columns() {
        bytes += column
            .to_data()
            .get_slice_memory_size()
            .map_err(|e| EngineError::Execution(e.to_string()))?;
    }
    Ok(bytes)
}

/// What a record holds in memory, as far as the limits count: its key, value and headers.
fn record_bytes(record: &ConsumedRecord) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.as_ref().map_or(0, Bytes::len))
        .sum();
    record.key.as_ref().map_or(0, Bytes::len)
        + record.value.as_ref().map_or(0, Bytes::len)
        + headers
}

/// The snapshot's error once it holds more than `limits.bytes_max`.
fn snapshot_too_big(source: &Source, limits: PullLimits) -> EngineError {
    EngineError::Execution(format!(
        "the pull query over '{}' would hold more than {} bytes of its records (limit \
         ksql.query.pull.max.bytes): use a push query, or a table with fewer keys",
        source.name, limits.bytes_max
    ))
}

/// The source's records up to each partition's high watermark now: for a table only the
/// latest record of each key (tombstones included, so the decoder marks them deleted). The
/// records held (for a table, the latest of each key) may not pass `limits.bytes_max`.
async fn snapshot(
    client: &Arc<dyn LogClient>,
    source: &Source,
    limits: PullLimits,
) -> Result<Vec<(i32, Vec<ConsumedRecord>)>> {
    let partitions = client.partition_count(&source.topic).await?;
    let mut out = Vec::new();
    let mut held_bytes = 0usize;
    for partition in 0..partitions {
        let range = client.offsets(&source.topic, partition).await?;
        let mut offset = range.log_start_offset;
        let mut records = Vec::new();
        let mut latest: HashMap<Option<Bytes>, ConsumedRecord> = HashMap::new();
        while offset < range.high_watermark {
            let fetched = client
                .fetch(
                    &source.topic,
                    partition,
                    offset,
                    1 << 20,
                    Duration::from_millis(0),
                )
                .await?;
            let Some(last) = fetched.last() else { break };
            offset = last.offset + 1;
            for record in fetched
                .into_iter()
                .filter(|r| r.offset < range.high_watermark)
            {
                held_bytes += record_bytes(&record);
                // A table keeps only each key's latest record: what it replaces is freed.
                if source.kind == SourceKind::Table {
                    if let Some(replaced) = latest.insert(record.key.clone(), record) {
                        held_bytes -= record_bytes(&replaced);
                    }
                } else {
                    records.push(record);
                }
                if held_bytes > limits.bytes_max {
                    return Err(snapshot_too_big(source, limits));
                }
            }
        }
        if source.kind == SourceKind::Table {
            records = latest.into_values().collect();
            records.sort_by_key(|r| r.offset);
        }
        out.push((partition, records));
    }
    Ok(out)
}

/// ksqlDB's name of an Arrow type, for the schema of results.
pub fn type_name(data_type: &DataType) -> String {
    crate::types::SqlType::from_arrow(data_type)
        .map(|t| t.to_string())
        .unwrap_or_else(|| data_type.to_string())
}
