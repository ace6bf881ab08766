//! Pull queries: a SELECT without EMIT CHANGES, answered once from a snapshot and done.
//!
//! The snapshot is the source's topic read up to each partition's high watermark when the
//! query starts: for a table, the latest row of every key (a tombstone deletes it), for a
//! stream, every row. It becomes a DataFusion in-memory table under the source's name, and
//! the SELECT runs on it as ordinary DataFusion SQL, so pull queries take the full language
//! (key lookups, ranges, IN, OR, LIKE, ORDER BY, LIMIT, aggregates) rather than ksqlDB's key
//! lookups alone.

use std::collections::HashMap;
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

/// Runs a pull query over a snapshot of its source.
pub async fn run(
    client: &Arc<dyn LogClient>,
    catalog: &Catalog,
    query: &SelectQuery,
) -> Result<PullResult> {
    if query.window.is_some() || !query.partition_by.is_empty() {
        return Err(EngineError::Plan(
            "pull queries take no WINDOW or PARTITION BY clause: add EMIT CHANGES for a push query"
                .into(),
        ));
    }
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
    let schema = source.schema();
    let mut batches = Vec::new();
    for (partition, records) in snapshot(client, &source).await? {
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
    let statement = datafusion::sql::sqlparser::ast::Statement::Query(ast);
    let plan = context
        .state()
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            statement,
        )))
        .await?;
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
    let results = frame.collect().await?;
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

/// The source's records up to each partition's high watermark now: for a table only the
/// latest record of each key (tombstones included, so the decoder marks them deleted).
async fn snapshot(
    client: &Arc<dyn LogClient>,
    source: &Source,
) -> Result<Vec<(i32, Vec<ConsumedRecord>)>> {
    let partitions = client.partition_count(&source.topic).await?;
    let mut out = Vec::new();
    for partition in 0..partitions {
        let range = client.offsets(&source.topic, partition).await?;
        let mut offset = range.log_start_offset;
        let mut records = Vec::new();
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
            records.extend(
                fetched
                    .into_iter()
                    .filter(|r| r.offset < range.high_watermark),
            );
        }
        if source.kind == SourceKind::Table {
            let mut latest: HashMap<Option<Bytes>, ConsumedRecord> = HashMap::new();
            for record in records {
                latest.insert(record.key.clone(), record);
            }
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
