//! `FilterProjectExec`: a stateless query's WHERE (applied while decoding) and SELECT, with
//! EXPLODE's one row per array element.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Field, Schema};

use super::operator::{Port, StreamOperator};
use super::{project, row_times, row_windows, Emitted, Input, RowMeta};
use crate::error::Result;
use crate::query::PersistentPlan;

/// Projects each input row to one output record with the input's timestamp and window; a
/// deleted input row (a table's tombstone, a stream's null value) gives a tombstone.
pub struct FilterProjectExec {
    plan: Arc<PersistentPlan>,
}

impl FilterProjectExec {
    pub(crate) fn new(plan: Arc<PersistentPlan>) -> FilterProjectExec {
        FilterProjectExec { plan }
    }
}

impl StreamOperator for FilterProjectExec {
    fn name(&self) -> &'static str {
        "FilterProjectExec"
    }

    fn stateful(&self) -> bool {
        false
    }

    /// The rows to emit for a decoded input batch, in order.
    fn process(&self, _port: Port, input: &Input) -> Result<Emitted> {
        let rows = project(&self.plan, &input.batch)?;
        let windows = row_windows(&input.batch);
        let meta: Vec<RowMeta> = row_times(&input.batch)?
            .into_iter()
            .enumerate()
            .map(|(row, timestamp)| RowMeta {
                timestamp,
                window: windows.as_ref().and_then(|w| w[row]),
                tombstone: input.deleted[row],
            })
            .collect();
        if self.plan.explode.is_empty() {
            return Ok(Emitted {
                rows: Some(rows),
                meta,
                failures: Vec::new(),
            });
        }
        let (rows, meta) = explode(&rows, &self.plan.explode, &meta)?;
        Ok(Emitted {
            rows: Some(rows),
            meta,
            failures: Vec::new(),
        })
    }
}

/// Expands each row into one row per element of its `exploded` array columns, as ksqlDB's
/// EXPLODE does: as many rows as the longest of the row's arrays (none for null or empty
/// ones), shorter arrays giving nulls, the other columns repeated.
fn explode(
    rows: &RecordBatch,
    exploded: &[usize],
    meta: &[RowMeta],
) -> Result<(RecordBatch, Vec<RowMeta>)> {
    let lists: Vec<_> = exploded
        .iter()
        .map(|&i| rows.column(i).as_list::<i32>())
        .collect();
    let mut repeated = Vec::new();
    let mut elements: Vec<Vec<Option<u32>>> = vec![Vec::new(); lists.len()];
    let mut out_meta = Vec::new();
    for row in 0..rows.num_rows() {
        let length = |list: &datafusion::arrow::array::ListArray| {
            if list.is_null(row) {
                0
            } else {
                list.value_length(row) as usize
            }
        };
        let longest = lists.iter().map(|l| length(l)).max().unwrap_or(0);
        for k in 0..longest {
            repeated.push(row as u32);
            out_meta.push(meta[row]);
            for (list, elements) in lists.iter().zip(&mut elements) {
                let start = list.value_offsets()[row] as usize;
                elements.push((k < length(list)).then_some((start + k) as u32));
            }
        }
    }
    let repeated = UInt32Array::from(repeated);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(rows.num_columns());
    for (i, column) in rows.columns().iter().enumerate() {
        match exploded.iter().position(|&e| e == i) {
            Some(j) => {
                let indices = UInt32Array::from(std::mem::take(&mut elements[j]));
                columns.push(take(lists[j].values(), &indices, None)?);
            }
            None => columns.push(take(column, &repeated, None)?),
        }
    }
    let fields: Vec<Field> = rows
        .schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    Ok((batch, out_meta))
}
