//! `AggregateExec`: GROUP BY over a stream, emitting the updated row of a key for every input
//! record (EMIT CHANGES), as ksqlDB does with caching off.
//!
//! State is one set of DataFusion accumulators per group key, shared by the query's partition
//! tasks. Records whose group key has a null are dropped (ksqlDB drops them too). HAVING filters
//! the updated rows. Not yet: retractions (GROUP BY over a table), windows, a changelog topic
//! for the state (it is rebuilt by reading the source from the start).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;
use eddy_broker::ProducerRecord;
use parking_lot::Mutex;

use super::{encode_output, filter_rows, project, row_times};
use crate::error::{EngineError, Result};
use crate::query::{AggregatePlan, PersistentPlan};

/// Per-key accumulators of one GROUP BY query.
pub struct AggregateExec {
    plan: Arc<PersistentPlan>,
    aggregate: AggregatePlan,
    state: Mutex<HashMap<Vec<ScalarValue>, Vec<Box<dyn Accumulator>>>>,
}

impl AggregateExec {
    pub(crate) fn new(plan: Arc<PersistentPlan>, aggregate: AggregatePlan) -> AggregateExec {
        AggregateExec {
            plan,
            aggregate,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Updates the state with each row of a filtered input batch, in order, and returns one
    /// record per row: its key's new aggregate, projected.
    pub fn process(&self, input: &RecordBatch) -> Result<Vec<ProducerRecord>> {
        let rows = input.num_rows();
        let evaluate = |e: &Arc<dyn datafusion::physical_expr::PhysicalExpr>| -> Result<ArrayRef> {
            Ok(e.evaluate(input)?.into_array(rows)?)
        };
        let groups: Vec<ArrayRef> = self
            .aggregate
            .group_by
            .iter()
            .map(evaluate)
            .collect::<Result<_>>()?;
        let arguments: Vec<Vec<ArrayRef>> = self
            .aggregate
            .aggregates
            .iter()
            .map(|a| {
                a.expressions()
                    .iter()
                    .map(evaluate)
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let times = row_times(input)?;
        let width = groups.len() + arguments.len();
        let mut columns: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(rows); width];
        let mut kept_times = Vec::with_capacity(rows);
        let mut state = self.state.lock();
        for row in 0..rows {
            let key = groups
                .iter()
                .map(|g| ScalarValue::try_from_array(g, row))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            if key.iter().any(ScalarValue::is_null) {
                continue;
            }
            if !state.contains_key(&key) {
                let fresh = self
                    .aggregate
                    .aggregates
                    .iter()
                    .map(|a| a.create_accumulator())
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                state.insert(key.clone(), fresh);
            }
            let accumulators = state.get_mut(&key).expect("inserted above");
            for (accumulator, args) in accumulators.iter_mut().zip(&arguments) {
                let one: Vec<ArrayRef> = args.iter().map(|a| a.slice(row, 1)).collect();
                accumulator.update_batch(&one)?;
            }
            let values = accumulators
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            for (column, value) in columns.iter_mut().zip(key.into_iter().chain(values)) {
                column.push(value);
            }
            kept_times.push(times[row]);
        }
        drop(state);
        if kept_times.is_empty() {
            return Ok(Vec::new());
        }
        let arrays = columns
            .into_iter()
            .zip(self.aggregate.output_schema.fields())
            .map(|(values, field)| {
                let array = ScalarValue::iter_to_array(values)?;
                if array.data_type() == field.data_type() {
                    Ok(array)
                } else {
                    Ok(datafusion::arrow::compute::cast(&array, field.data_type())?)
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let updated = RecordBatch::try_new(Arc::clone(&self.aggregate.output_schema), arrays)
            .map_err(|e| EngineError::Internal(format!("aggregate output: {e}")))?;
        let (updated, kept_times) = match &self.aggregate.having {
            None => (updated, kept_times),
            Some(having) => {
                let marked = with_times(&updated, &kept_times)?;
                let filtered = filter_rows(&marked, having, "HAVING")?;
                let times = filtered
                    .column(filtered.num_columns() - 1)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .map(|a| a.values().to_vec())
                    .unwrap_or_default();
                (without_last_column(&filtered)?, times)
            }
        };
        if updated.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let output = project(&self.plan, &updated)?;
        encode_output(&self.plan, &output, &kept_times)
    }
}

/// The batch with the row times appended as a last column, so a filter keeps them aligned.
fn with_times(batch: &RecordBatch, times: &[i64]) -> Result<RecordBatch> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("__eddy_row_time", DataType::Int64, false));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(datafusion::arrow::array::Int64Array::from(
        times.to_vec(),
    )));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn without_last_column(batch: &RecordBatch) -> Result<RecordBatch> {
    let keep: Vec<usize> = (0..batch.num_columns() - 1).collect();
    Ok(batch.project(&keep)?)
}
