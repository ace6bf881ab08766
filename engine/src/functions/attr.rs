//! ATTR(col): the column's value when every row of the group has the same one (null counted
//! as a value), else null. A table row's old value is taken back when the row changes, so a
//! group can become single-valued again. At most [`ATTR_DISTINCT_MAX`] distinct values are
//! counted; a group that had more stays null.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

use super::rowwise::{list_items, list_type, list_value};

/// The most distinct values one ATTR group counts (`sql.function.attr.distinct.max`, fixed).
pub(crate) const ATTR_DISTINCT_MAX: usize = 1000;

#[derive(Debug, PartialEq, Eq, Hash)]
struct Attr {
    signature: Signature,
}

/// ATTR, ready to register with a DataFusion session.
pub(crate) fn udaf() -> AggregateUDF {
    AggregateUDF::from(Attr {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

impl AggregateUDFImpl for Attr {
    fn name(&self) -> &str {
        "attr"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        Ok(arguments[0].clone())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let value = args.input_fields[0].data_type().clone();
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[values]", args.name),
                list_type(value),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[counts]", args.name),
                list_type(DataType::Int64),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[overflowed]", args.name),
                DataType::Boolean,
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Counts {
            data_type: args.return_field.data_type().clone(),
            counts: Vec::new(),
            overflowed: false,
        }))
    }
}

/// How often each value occurs, in first-seen order.
#[derive(Debug)]
struct Counts {
    data_type: DataType,
    counts: Vec<(ScalarValue, i64)>,
    overflowed: bool,
}

impl Counts {
    fn add(&mut self, value: ScalarValue, by: i64) {
        match self.counts.iter().position(|(v, _)| *v == value) {
            Some(at) => {
                self.counts[at].1 += by;
                if self.counts[at].1 <= 0 {
                    self.counts.remove(at);
                }
            }
            None if by > 0 && self.counts.len() < ATTR_DISTINCT_MAX => {
                self.counts.push((value, by))
            }
            None if by > 0 => self.overflowed = true,
            None => {}
        }
    }

    fn update(&mut self, column: &ArrayRef, by: i64) -> Result<()> {
        for row in 0..column.len() {
            self.add(ScalarValue::try_from_array(column, row)?, by);
        }
        Ok(())
    }
}

impl Accumulator for Counts {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.update(&values[0], 1)
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.update(&values[0], -1)
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        match self.counts.as_slice() {
            [(value, _)] if !self.overflowed => Ok(value.clone()),
            _ => ScalarValue::try_from(&self.data_type),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .counts
                .iter()
                .map(|(v, _)| v.size() + std::mem::size_of::<i64>())
                .sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let values = self.counts.iter().map(|(v, _)| v.clone()).collect();
        let counts = self
            .counts
            .iter()
            .map(|(_, n)| ScalarValue::Int64(Some(*n)))
            .collect();
        Ok(vec![
            list_value(Some(values), &list_type(self.data_type.clone()))?,
            list_value(Some(counts), &list_type(DataType::Int64))?,
            ScalarValue::Boolean(Some(self.overflowed)),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [values, counts, overflowed] = states else {
            return exec_err!("ATTR's state has three columns, not {}", states.len());
        };
        for row in 0..values.len() {
            let values = list_items(&ScalarValue::try_from_array(values, row)?)?;
            let counts = list_items(&ScalarValue::try_from_array(counts, row)?)?;
            for (value, count) in values
                .into_iter()
                .flatten()
                .zip(counts.into_iter().flatten())
            {
                if let ScalarValue::Int64(Some(n)) = count {
                    self.add(value, n);
                }
            }
            if overflowed.is_valid(row)
                && ScalarValue::try_from_array(overflowed, row)? == ScalarValue::Boolean(Some(true))
            {
                self.overflowed = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn one_value_or_null_and_back_after_retraction() {
        let mut attr = Counts {
            data_type: DataType::Utf8,
            counts: Vec::new(),
            overflowed: false,
        };
        attr.update_batch(&[strings(&[Some("1"), Some("1")])])
            .unwrap();
        assert_eq!(attr.evaluate().unwrap(), ScalarValue::from("1"));
        attr.update_batch(&[strings(&[None])]).unwrap();
        assert_eq!(attr.evaluate().unwrap(), ScalarValue::Utf8(None));
        attr.retract_batch(&[strings(&[None])]).unwrap();
        assert_eq!(attr.evaluate().unwrap(), ScalarValue::from("1"));

        let mut copy = Counts {
            data_type: DataType::Utf8,
            counts: Vec::new(),
            overflowed: false,
        };
        let state: Vec<ArrayRef> = attr
            .state()
            .unwrap()
            .into_iter()
            .map(|s| s.to_array().unwrap())
            .collect();
        copy.merge_batch(&state).unwrap();
        assert_eq!(copy.evaluate().unwrap(), ScalarValue::from("1"));
    }
}
