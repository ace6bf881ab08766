//! Running persistent queries: one task per source partition feeding `FilterProjectExec`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::json::writer::JsonArray;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_broker::{BrokerError, ConsumedRecord, LogClient, OffsetReset, ProducerRecord};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::catalog::{ROWOFFSET, ROWPARTITION, ROWTIME};
use crate::error::{EngineError, Result};
use crate::formats;
use crate::parser::{ColumnDef, SourceKind};
use crate::query::PersistentPlan;

const FETCH_BYTES_MAX: usize = 1 << 20;
const FETCH_WAIT: Duration = Duration::from_millis(200);

/// Runs a query until it is stopped.
pub(crate) async fn run_query(
    client: Arc<dyn LogClient>,
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
    let tasks: Vec<_> = (0..partitions)
        .map(|p| {
            let task = PartitionTask {
                client: Arc::clone(&client),
                query_id: query_id.clone(),
                plan: Arc::clone(&plan),
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
    query_id: String,
    plan: Arc<PersistentPlan>,
    partition: i32,
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
            if let Err(e) = self.process(&records).await {
                tracing::warn!(query = %self.query_id, error = %e, "processing failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let commit = [(topic.clone(), self.partition, next)];
            if let Err(e) = self.client.commit(&self.query_id, &commit).await {
                tracing::warn!(query = %self.query_id, error = %e, "commit failed");
            }
            offset = Some(next);
        }
    }

    async fn process(&self, records: &[ConsumedRecord]) -> Result<()> {
        let output = FilterProjectExec { plan: &self.plan }.process(
            self.partition,
            records,
            &self.query_id,
        )?;
        if !output.is_empty() {
            self.client.produce(&self.plan.sink.topic, output).await?;
        }
        Ok(())
    }
}

/// Evaluates a query's WHERE and SELECT on a batch of source records.
pub struct FilterProjectExec<'a> {
    pub plan: &'a PersistentPlan,
}

impl FilterProjectExec<'_> {
    /// The records to produce for `records`, in order, keeping each input's timestamp.
    /// Records that cannot be decoded are skipped and logged (the processing log).
    pub fn process(
        &self,
        partition: i32,
        records: &[ConsumedRecord],
        query_id: &str,
    ) -> Result<Vec<ProducerRecord>> {
        let source = &self.plan.source;
        let key_columns: Vec<&ColumnDef> = source.key_columns().collect();
        let value_columns: Vec<&ColumnDef> = source.value_columns().collect();
        let mut rows = Vec::with_capacity(records.len());
        for record in records {
            if source.kind == SourceKind::Stream && record.value.is_none() {
                continue;
            }
            let keys = formats::decode(
                source.key_format,
                &key_columns,
                record.key.as_deref(),
                false,
            );
            let values = formats::decode(
                source.value_format,
                &value_columns,
                record.value.as_deref(),
                source.wrap_single_value,
            );
            let (keys, values) = match (keys, values) {
                (Ok(k), Ok(v)) => (k, v),
                (Err(reason), _) | (_, Err(reason)) => {
                    tracing::warn!(query = query_id, partition, offset = record.offset, %reason,
                        "skipping a record that cannot be deserialized");
                    continue;
                }
            };
            let mut row = Map::new();
            for (column, value) in key_columns
                .iter()
                .chain(&value_columns)
                .zip(keys.into_iter().chain(values))
            {
                row.insert(column.name.clone(), value);
            }
            row.insert(ROWTIME.into(), Value::from(record.timestamp_ms));
            row.insert(ROWPARTITION.into(), Value::from(partition));
            row.insert(ROWOFFSET.into(), Value::from(record.offset));
            rows.push(Value::Object(row));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let batch = to_batch(&self.plan, &rows)?;
        let batch = match &self.plan.filter {
            None => batch,
            Some(filter) => {
                let mask = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| {
                        EngineError::Plan("WHERE must be a boolean expression".into())
                    })?;
                filter_record_batch(&batch, mask)?
            }
        };
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let timestamps = batch
            .column_by_name(ROWTIME)
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<datafusion::arrow::array::TimestampMillisecondArray>()
                    .cloned()
            })
            .ok_or_else(|| EngineError::Internal("ROWTIME column missing".into()))?;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.plan.projection.len());
        for expr in &self.plan.projection {
            columns.push(expr.evaluate(&batch)?.into_array(batch.num_rows())?);
        }
        let fields: Vec<Field> = self
            .plan
            .sink
            .columns
            .iter()
            .zip(&columns)
            .map(|(c, a)| Field::new(&c.name, a.data_type().clone(), true))
            .collect();
        let output = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let rows = to_rows(&output)?;
        let sink = &self.plan.sink;
        let sink_keys: Vec<&ColumnDef> = sink.key_columns().collect();
        let sink_values: Vec<&ColumnDef> = sink.value_columns().collect();
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let pick = |columns: &[&ColumnDef]| -> Vec<Value> {
                columns
                    .iter()
                    .map(|c| row.get(&c.name).cloned().unwrap_or(Value::Null))
                    .collect()
            };
            let key = if sink_keys.is_empty() {
                None
            } else {
                formats::encode(sink.key_format, &sink_keys, &pick(&sink_keys), false)?
            };
            let value = formats::encode(
                sink.value_format,
                &sink_values,
                &pick(&sink_values),
                sink.wrap_single_value,
            )?;
            out.push(ProducerRecord {
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                timestamp_ms: Some(timestamps.value(i)),
                ..Default::default()
            });
        }
        Ok(out)
    }
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
