//! CORRELATION and STDDEV_SAMP over too few rows, as ksqlDB computes them: the correlation of
//! one pair (or of values that never vary) is 0/0, NaN, and the sample standard deviation of
//! one value is 0.0. DataFusion's `corr` and `stddev_samp` return null there; these wrap them
//! and give ksqlDB's value instead, once the group has counted a row.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions_aggregate::correlation::corr_udaf;
use datafusion::functions_aggregate::stddev::stddev_udaf;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDF, AggregateUDFImpl, Signature};

/// `corr` and `stddev_samp` with ksqlDB's values over too few rows.
pub(crate) fn udafs() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(Degenerate {
            inner: corr_udaf(),
            name: "corr",
            value: OrderedValue(f64::NAN),
        }),
        AggregateUDF::from(Degenerate {
            inner: stddev_udaf(),
            name: "stddev_samp",
            value: OrderedValue(0.0),
        }),
    ]
}

/// A float compared by its bits, so that the function can be compared and hashed.
#[derive(Debug, Clone, Copy)]
struct OrderedValue(f64);

impl PartialEq for OrderedValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for OrderedValue {}

impl std::hash::Hash for OrderedValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// DataFusion's aggregate `inner`, giving `value` where it gives null after counting rows.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Degenerate {
    inner: Arc<AggregateUDF>,
    name: &'static str,
    value: OrderedValue,
}

impl AggregateUDFImpl for Degenerate {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        self.inner.state_fields(args)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(DegenerateAccumulator {
            inner: self.inner.accumulator(args)?,
            value: self.value.0,
        }))
    }

    fn create_sliding_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(DegenerateAccumulator {
            inner: self.inner.create_sliding_accumulator(args)?,
            value: self.value.0,
        }))
    }
}

#[derive(Debug)]
struct DegenerateAccumulator {
    inner: Box<dyn Accumulator>,
    value: f64,
}

impl DegenerateAccumulator {
    /// Whether the group has counted a row: the inner state starts with its count.
    fn counted(&mut self) -> Result<bool> {
        Ok(match self.inner.state()?.first() {
            Some(ScalarValue::UInt64(Some(n))) => *n > 0,
            Some(ScalarValue::Int64(Some(n))) => *n > 0,
            Some(ScalarValue::Float64(Some(n))) => *n > 0.0,
            _ => false,
        })
    }
}

impl Accumulator for DegenerateAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.update_batch(values)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.inner.retract_batch(values)
    }

    fn supports_retract_batch(&self) -> bool {
        self.inner.supports_retract_batch()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.inner.merge_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.inner.state()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let value = self.inner.evaluate()?;
        if value.is_null() && self.counted()? {
            return Ok(ScalarValue::Float64(Some(self.value)));
        }
        Ok(value)
    }

    fn size(&self) -> usize {
        self.inner.size() + std::mem::size_of::<f64>()
    }
}
