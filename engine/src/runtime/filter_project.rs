//! `FilterProjectExec`: a stateless query's WHERE (applied while decoding) and SELECT.

use std::sync::Arc;

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

    /// The rows to emit for a decoded input batch, in order.
    pub(crate) fn process(&self, input: &Input) -> Result<Emitted> {
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
        Ok(Emitted {
            rows: Some(rows),
            meta,
        })
    }
}
