//! ksqlDB's rule for a function that fails on a row: its value there is null, the failure goes
//! to the processing log, and the row goes on (`ARRAY[44, STRINGTODATE('foo', ..)]` is
//! `[44, null]`). [`guard`] wraps every function call and CAST of a physical expression in a
//! [`Guarded`] node that does so. A batch that fails is evaluated again a row at a time to find
//! the rows at fault. Their failures wait in a list of the evaluating thread until the task
//! that evaluated them takes them ([`take_failures`]) for its processing log: evaluation is
//! synchronous, so what a task takes after evaluating is its own.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::{CastExpr, TryCastExpr};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};

/// The most failures a thread keeps before its task takes them; later ones are counted in the
/// last message instead of kept.
const FAILURES_KEPT_MAX: usize = 1000;

/// Calls [`guard`] leaves bare.
const UNGUARDED: &[&str] = &["explode", super::lambda::OPERAND];

thread_local! {
    static FAILURES: RefCell<(Vec<String>, usize)> = const { RefCell::new((Vec::new(), 0)) };
}

/// The failures of guarded calls evaluated on this thread since the last take.
pub(crate) fn take_failures() -> Vec<String> {
    FAILURES.with(|failures| {
        let (mut kept, dropped) = std::mem::take(&mut *failures.borrow_mut());
        if dropped > 0 {
            kept.push(format!("and {dropped} more failures of functions on rows"));
        }
        kept
    })
}

fn record(failure: String) {
    FAILURES.with(|failures| {
        let mut failures = failures.borrow_mut();
        if failures.0.len() < FAILURES_KEPT_MAX {
            failures.0.push(failure);
        } else {
            failures.1 += 1;
        }
    });
}

/// `expr` with each function call and CAST in it guarded.
pub(crate) fn guard(expr: Arc<dyn PhysicalExpr>) -> Result<Arc<dyn PhysicalExpr>> {
    expr.transform_up(|e| {
        // Markers whose failure means something to what holds them are left bare: EXPLODE
        // (the table-function operator finds it by name) and a lambda's null operand (its
        // lambda function makes the whole call null, as ksqlDB's Java does).
        let call = e
            .downcast_ref::<ScalarFunctionExpr>()
            .is_some_and(|f| !UNGUARDED.contains(&f.name()));
        let guarded = call || e.is::<CastExpr>() || e.is::<TryCastExpr>();
        Ok(match guarded {
            true => Transformed::yes(Arc::new(Guarded { inner: e }) as Arc<dyn PhysicalExpr>),
            false => Transformed::no(e),
        })
    })
    .map(|t| t.data)
}

/// A call whose failure on a row gives null there.
#[derive(Debug)]
pub(crate) struct Guarded {
    inner: Arc<dyn PhysicalExpr>,
}

impl PartialEq for Guarded {
    fn eq(&self, other: &Self) -> bool {
        self.inner.as_ref() == other.inner.as_ref()
    }
}

impl Eq for Guarded {}

impl std::hash::Hash for Guarded {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.as_ref().hash(state);
    }
}

impl fmt::Display for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

impl Guarded {
    /// Each row alone: its value, or null and a recorded failure.
    fn by_row(&self, batch: &RecordBatch, data_type: &DataType) -> Result<ArrayRef> {
        let rows = batch.num_rows();
        let mut parts: Vec<ArrayRef> = Vec::with_capacity(rows);
        for row in 0..rows {
            let one = batch.slice(row, 1);
            match self.inner.evaluate(&one).and_then(|v| v.into_array(1)) {
                Ok(value) => parts.push(value),
                Err(e) => {
                    record(format!("{} failed on a row, null instead: {e}", self.inner));
                    parts.push(new_null_array(data_type, 1));
                }
            }
        }
        let parts: Vec<&dyn datafusion::arrow::array::Array> =
            parts.iter().map(|a| a.as_ref()).collect();
        Ok(concat(&parts)?)
    }
}

impl PhysicalExpr for Guarded {
    fn data_type(&self, input_schema: &Schema) -> Result<DataType> {
        self.inner.data_type(input_schema)
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(true)
    }

    fn return_field(&self, input_schema: &Schema) -> Result<FieldRef> {
        let field = self.inner.return_field(input_schema)?;
        Ok(Arc::new(field.as_ref().clone().with_nullable(true)))
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        match self.inner.evaluate(batch) {
            Ok(value) => Ok(value),
            Err(e) if batch.num_rows() <= 1 => {
                let data_type = self.inner.data_type(batch.schema_ref())?;
                record(format!("{} failed on a row, null instead: {e}", self.inner));
                Ok(ColumnarValue::Array(new_null_array(
                    &data_type,
                    batch.num_rows(),
                )))
            }
            Err(_) => {
                let data_type = self.inner.data_type(batch.schema_ref())?;
                Ok(ColumnarValue::Array(self.by_row(batch, &data_type)?))
            }
        }
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.inner]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        match children.pop() {
            Some(inner) if children.is_empty() => Ok(Arc::new(Guarded { inner })),
            _ => datafusion::common::internal_err!("a guarded call has one child"),
        }
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt_sql(f)
    }
}
