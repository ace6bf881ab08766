//! `FilterProjectExec`: a stateless query's WHERE (applied while decoding) and SELECT.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use eddy_broker::ProducerRecord;

use super::{encode_output, project, row_times};
use crate::error::Result;
use crate::query::PersistentPlan;

/// Projects each input row to one output record with the input's timestamp.
pub struct FilterProjectExec {
    plan: Arc<PersistentPlan>,
}

impl FilterProjectExec {
    pub(crate) fn new(plan: Arc<PersistentPlan>) -> FilterProjectExec {
        FilterProjectExec { plan }
    }

    /// The records to produce for a filtered input batch, in order.
    pub fn process(&self, input: &RecordBatch) -> Result<Vec<ProducerRecord>> {
        let output = project(&self.plan, input)?;
        encode_output(&self.plan, &output, &row_times(input)?)
    }
}
