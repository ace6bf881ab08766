//! `eddy bench nexmark --check`: with a bounded input, a query's sink must hold the rows the
//! same query gives in batch.
//!
//! The events are generated again into DataFusion tables `bid`, `auction` and `person` (the
//! streams' columns, lower case), the query's batch form (`queries/nexmark/<q>.batch.sql`,
//! where a window is arithmetic on `date_time`) runs over them, and its rows are compared, as
//! a multiset, with a pull query over the sink: a table's latest rows, a stream's every row.
//! A windowed result is compared for the windows that closed: EMIT FINAL emits a window once
//! stream time passes its end, so windows ending within `OPEN_WINDOW_MARGIN_MS` of the last
//! event are left out on both sides (as are q6's auctions closing then: CLOSE_TIME). A
//! result without WINDOWEND but with the bids' DATE_TIME (q7: the bids that reached their
//! window's maximum) leaves out the rows whose window may still be open: those of the last
//! `OPEN_WINDOW_MARGIN_MS` and one window size.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::json::writer::JsonArray;
use datafusion::arrow::json::{ReaderBuilder, WriterBuilder};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use eddy_engine::{Engine, PullResult, QueryResult};
use serde_json::Value;

use super::generator::{Generator, Kind};

/// Windows ending this close to the last event may still be open: in some partition, or
/// within their grace period (q5's is 10 seconds).
const OPEN_WINDOW_MARGIN_MS: i64 = 11_000;
/// The largest window of the windowed queries (10 seconds).
const WINDOW_SIZE_MS: i64 = 10_000;

/// Compares the sink's rows with the batch result; the number of rows compared.
pub(crate) async fn check(
    engine: &Engine,
    generator: &Generator,
    events: u64,
    sink: &str,
    batch_sql: &str,
    windowed: bool,
) -> anyhow::Result<usize> {
    let context = SessionContext::new();
    let mut last_event_ms = i64::MIN;
    for (kind, stream) in [
        (Kind::Person, "person"),
        (Kind::Auction, "auction"),
        (Kind::Bid, "bid"),
    ] {
        let mut lines = Vec::new();
        for n in 0..events {
            let event = generator.event(n);
            if event.kind == kind {
                lines.extend_from_slice(event.json.as_bytes());
                lines.push(b'\n');
                last_event_ms = last_event_ms.max(event.time_ms);
            }
        }
        let table = batch_table(engine, stream, &lines)?;
        context.register_table(stream, Arc::new(table))?;
    }
    let frame = context
        .sql(batch_sql)
        .await
        .context("planning the batch query")?;
    let columns: Vec<String> = frame
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().to_uppercase())
        .collect();
    let mut expected = Vec::new();
    for batch in frame.collect().await? {
        for row in json_rows(&batch)? {
            expected.push(columns.iter().map(|c| row.get(c).cloned()).collect());
        }
    }

    let pull = sink_rows(engine, sink).await?;
    let positions = columns
        .iter()
        .map(|c| pull.columns.iter().position(|(name, _)| name == c))
        .collect::<Option<Vec<usize>>>()
        .with_context(|| {
            let names: Vec<&String> = pull.columns.iter().map(|(name, _)| name).collect();
            format!("the sink {sink} ({names:?}) lacks a column of {columns:?}")
        })?;
    let actual: Vec<Vec<Option<Value>>> = pull
        .rows
        .iter()
        .map(|row| positions.iter().map(|&i| Some(row[i].clone())).collect())
        .collect();

    // The column that says whether a row's window closed, and the latest closed value.
    let closed_by = match columns
        .iter()
        .position(|c| c == "WINDOWEND" || c == "CLOSE_TIME")
    {
        Some(i) => Some((i, last_event_ms - OPEN_WINDOW_MARGIN_MS)),
        None => columns
            .iter()
            .position(|c| c == "DATE_TIME")
            .map(|i| (i, last_event_ms - OPEN_WINDOW_MARGIN_MS - WINDOW_SIZE_MS)),
    }
    .filter(|_| windowed);
    let closed = |rows: Vec<Vec<Option<Value>>>| -> Vec<String> {
        let mut texts: Vec<String> = rows
            .into_iter()
            .filter(|row| {
                closed_by.is_none_or(|(i, last)| row[i].as_ref().and_then(event_ms) <= Some(last))
            })
            .map(|row| row.iter().map(canonical).collect::<Vec<_>>().join(" | "))
            .collect();
        texts.sort();
        texts
    };
    let (expected, actual) = (closed(expected), closed(actual));
    if expected != actual {
        let missing: Vec<&String> = expected.iter().filter(|r| !actual.contains(r)).collect();
        let extra: Vec<&String> = actual.iter().filter(|r| !expected.contains(r)).collect();
        anyhow::bail!(
            "{sink} differs from the batch result: {} rows, expected {}; columns {columns:?}\n\
             missing (first 5): {:?}\nunexpected (first 5): {:?}",
            actual.len(),
            expected.len(),
            &missing[..missing.len().min(5)],
            &extra[..extra.len().min(5)],
        );
    }
    Ok(actual.len())
}

/// Every row of the sink, by a pull query: a table's latest rows, a stream's every row.
async fn sink_rows(engine: &Engine, sink: &str) -> anyhow::Result<PullResult> {
    let query = format!("SELECT * FROM {sink};");
    match engine.query(&query, &BTreeMap::new()).await? {
        QueryResult::Pull(pull) => Ok(pull),
        _ => anyhow::bail!("a SELECT without EMIT CHANGES is a pull query"),
    }
}

/// The generated events of one stream as an in-memory table of the stream's columns.
fn batch_table(engine: &Engine, stream: &str, lines: &[u8]) -> anyhow::Result<MemTable> {
    let source = engine.source(&stream.to_uppercase())?;
    let fields: Vec<Field> = source
        .columns
        .iter()
        .map(|c| Field::new(c.name.to_lowercase(), c.data_type.arrow(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let reader = ReaderBuilder::new(Arc::clone(&schema)).build(lines)?;
    let batches = reader.collect::<Result<Vec<RecordBatch>, _>>()?;
    Ok(MemTable::try_new(schema, vec![batches])?)
}

/// A batch's rows as JSON objects, written as the engine writes pull-query rows.
fn json_rows(batch: &RecordBatch) -> anyhow::Result<Vec<serde_json::Map<String, Value>>> {
    let mut buffer = Vec::new();
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(&mut buffer);
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    let rows: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&buffer)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|(k, v)| (k.to_uppercase(), v))
                .collect()
        })
        .collect())
}

/// A value as text that ignores how a number was typed (`3` and `3.0` are one value).
/// Epoch milliseconds from a BIGINT or a TIMESTAMP's text.
fn event_ms(value: &Value) -> Option<i64> {
    use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
    match value {
        Value::String(text) => string_to_timestamp_nanos(text)
            .ok()
            .map(|ns| ns / 1_000_000),
        other => other.as_i64(),
    }
}

fn canonical(value: &Option<Value>) -> String {
    match value {
        None | Some(Value::Null) => "null".into(),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => (f as i64).to_string(),
            _ => n.to_string(),
        },
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A processing-time windowed count (q12): its rows differ from run to run, but once every
/// window has closed, the counts in `column` add up to the `bids` read. A window closes when a
/// bid arrives after its end (there is no wall-clock timer), so this waits until every open
/// window has ended and inserts one more bid, which stays in a window of its own. The number
/// of rows summed.
pub(crate) async fn counts_add_up(
    engine: &Engine,
    sink: &str,
    column: &str,
    bids: i64,
) -> anyhow::Result<usize> {
    tokio::time::sleep(std::time::Duration::from_millis(
        WINDOW_SIZE_MS as u64 + 500,
    ))
    .await;
    engine
        .execute(
            "INSERT INTO bid (auction, bidder, price, channel, url, date_time, extra) \
             VALUES (0, 0, 0, 'check', '', 0, 'closes the last window');",
        )
        .await?;
    if !engine
        .wait_until_caught_up(std::time::Duration::from_secs(60))
        .await
    {
        anyhow::bail!("{sink} did not read the closing bid within a minute");
    }
    let pull = sink_rows(engine, sink).await?;
    let position = pull
        .columns
        .iter()
        .position(|(name, _)| name == column)
        .with_context(|| format!("the sink {sink} has no column {column}"))?;
    let counted: i64 = pull
        .rows
        .iter()
        .filter_map(|row| row[position].as_i64())
        .sum();
    if counted != bids {
        anyhow::bail!(
            "{sink}'s {} rows count {counted} bids, expected {bids}",
            pull.rows.len()
        );
    }
    Ok(pull.rows.len())
}
