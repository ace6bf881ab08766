//! MIN and MAX over a table: accumulators that can forget any value they were given.
//!
//! A table aggregation retracts a key's old row when the key changes. DataFusion's sliding
//! MIN and MAX accumulators retract in arrival order (they serve window frames), so they
//! cannot forget an arbitrary row. These keep a count per distinct value instead. ksqlDB
//! refuses MIN and MAX over tables; Eddy runs them, because "the largest of a table's
//! values" is what queries such as Nexmark q5 (each window's top count) are made of.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;

/// Which end of the values an accumulator reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extreme {
    Min,
    Max,
}

impl Extreme {
    /// The extreme an aggregate function computes, by DataFusion name (`min`, `max`).
    pub(crate) fn of(function: &str) -> Option<Extreme> {
        match function {
            "min" => Some(Extreme::Min),
            "max" => Some(Extreme::Max),
            _ => None,
        }
    }
}

/// A value ordered by `ScalarValue::partial_cmp` (values of one column are comparable).
#[derive(Debug, Clone, PartialEq)]
struct Ordered(ScalarValue);

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// MIN or MAX of a multiset of non-null values.
#[derive(Debug)]
pub(crate) struct RetractableExtreme {
    extreme: Extreme,
    data_type: DataType,
    counts: BTreeMap<Ordered, usize>,
}

impl RetractableExtreme {
    pub(crate) fn new(extreme: Extreme, data_type: DataType) -> Self {
        RetractableExtreme {
            extreme,
            data_type,
            counts: BTreeMap::new(),
        }
    }

    fn values(values: &[ArrayRef]) -> Result<impl Iterator<Item = Result<ScalarValue>> + '_> {
        let Some(column) = values.first() else {
            return exec_err!("MIN and MAX take one argument");
        };
        Ok((0..column.len())
            .filter(|row| column.is_valid(*row))
            .map(|row| ScalarValue::try_from_array(column, row)))
    }
}

impl Accumulator for RetractableExtreme {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for value in Self::values(values)? {
            *self.counts.entry(Ordered(value?)).or_default() += 1;
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for value in Self::values(values)? {
            let value = Ordered(value?);
            if let Some(count) = self.counts.get_mut(&value) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&value);
                }
            }
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let end = match self.extreme {
            Extreme::Min => self.counts.keys().next(),
            Extreme::Max => self.counts.keys().next_back(),
        };
        match end {
            Some(value) => Ok(value.0.clone()),
            None => ScalarValue::try_from(&self.data_type),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.counts.len() * 64
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, _states: &[ArrayRef]) -> Result<()> {
        exec_err!("a table's MIN or MAX is not merged from partial states")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;

    use super::*;

    fn column(values: &[Option<i64>]) -> Vec<ArrayRef> {
        vec![Arc::new(Int64Array::from(values.to_vec()))]
    }

    #[test]
    fn forgets_any_value_not_just_the_oldest() -> Result<()> {
        let mut max = RetractableExtreme::new(Extreme::Max, DataType::Int64);
        let mut min = RetractableExtreme::new(Extreme::Min, DataType::Int64);
        for acc in [&mut max, &mut min] {
            acc.update_batch(&column(&[Some(3), Some(9), None, Some(5), Some(9)]))?;
        }
        assert_eq!(max.evaluate()?, ScalarValue::Int64(Some(9)));
        assert_eq!(min.evaluate()?, ScalarValue::Int64(Some(3)));
        // One of the two nines goes: the maximum stays 9; then the other: 5.
        max.retract_batch(&column(&[Some(9)]))?;
        assert_eq!(max.evaluate()?, ScalarValue::Int64(Some(9)));
        max.retract_batch(&column(&[Some(9)]))?;
        assert_eq!(max.evaluate()?, ScalarValue::Int64(Some(5)));
        // The newest value goes from the minimum's multiset, then the oldest.
        min.retract_batch(&column(&[Some(9), Some(3)]))?;
        assert_eq!(min.evaluate()?, ScalarValue::Int64(Some(5)));
        min.retract_batch(&column(&[Some(5), Some(9)]))?;
        assert_eq!(min.evaluate()?, ScalarValue::Int64(None));
        Ok(())
    }
}
