//! HISTOGRAM(col): how often each value of a STRING column occurs, as a MAP<STRING, BIGINT>.
//!
//! As in ksqlDB it keeps at most 1000 distinct values (later new values are not counted), skips
//! nulls, and takes back a table row's old value when the row changes (a count that reaches zero
//! leaves the map). Values stay in first-seen order.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Builder, MapArray, MapBuilder, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

/// The most distinct values one histogram counts, as ksqlDB's `Histogram.LIMIT`.
const LIMIT: usize = 1000;

#[derive(Debug, PartialEq, Eq, Hash)]
struct Histogram {
    signature: Signature,
}

/// HISTOGRAM, ready to register with a DataFusion session.
pub fn udaf() -> AggregateUDF {
    AggregateUDF::from(Histogram {
        signature: Signature::uniform(1, vec![DataType::Utf8], Volatility::Immutable),
    })
}

/// MAP<STRING, BIGINT> as Eddy's types build it (see `SqlType::arrow`).
fn map_type() -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Int64, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

impl AggregateUDFImpl for Histogram {
    fn name(&self) -> &str {
        "histogram"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(map_type())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[counts]", args.name),
            map_type(),
            true,
        ))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Counts::default()))
    }
}

/// The counts, in first-seen order.
#[derive(Debug, Default)]
struct Counts {
    counts: Vec<(String, i64)>,
}

impl Counts {
    fn add(&mut self, value: &str, by: i64) {
        match self.counts.iter().position(|(v, _)| v == value) {
            Some(at) => {
                self.counts[at].1 += by;
                if self.counts[at].1 <= 0 {
                    self.counts.remove(at);
                }
            }
            None if by > 0 && self.counts.len() < LIMIT => {
                self.counts.push((value.to_string(), by))
            }
            None => {}
        }
    }

    fn strings(column: &ArrayRef) -> Result<Vec<Option<String>>> {
        (0..column.len())
            .map(|row| match ScalarValue::try_from_array(column, row)? {
                ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                    Ok(v)
                }
                other => exec_err!("HISTOGRAM takes STRING values, not {}", other.data_type()),
            })
            .collect()
    }

    fn as_map(&self) -> Result<ScalarValue> {
        let mut builder = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        for (value, count) in &self.counts {
            builder.keys().append_value(value);
            builder.values().append_value(*count);
        }
        builder.append(true)?;
        let map: MapArray = builder.finish();
        // MapBuilder names its fields "keys"/"values"; cast to the names Eddy's types use.
        let map = datafusion::arrow::compute::cast(&map, &map_type())?;
        ScalarValue::try_from_array(&map, 0)
    }
}

impl Accumulator for Counts {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for value in Self::strings(&values[0])?.into_iter().flatten() {
            self.add(&value, 1);
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for value in Self::strings(&values[0])?.into_iter().flatten() {
            self.add(&value, -1);
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.as_map()
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .counts
                .iter()
                .map(|(v, _)| v.len() + std::mem::size_of::<(String, i64)>())
                .sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.as_map()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(maps) = states[0].as_any().downcast_ref::<MapArray>() else {
            return exec_err!("unexpected HISTOGRAM state {}", states[0].data_type());
        };
        for row in 0..maps.len() {
            if maps.is_null(row) {
                continue;
            }
            let entries = maps.value(row);
            let keys = Self::strings(entries.column(0))?;
            let counts = entries.column(1);
            for (i, key) in keys.into_iter().enumerate() {
                if let (Some(key), ScalarValue::Int64(Some(n))) =
                    (key, ScalarValue::try_from_array(counts, i)?)
                {
                    self.add(&key, n);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    #[test]
    fn counts_values_and_takes_back_retractions() {
        let mut counts = Counts::default();
        let column: ArrayRef = Arc::new(StringArray::from(vec![
            Some("a"),
            Some("b"),
            None,
            Some("a"),
        ]));
        counts.update_batch(&[column]).unwrap();
        assert_eq!(
            counts.counts,
            vec![("a".to_string(), 2), ("b".to_string(), 1)]
        );
        let gone: ArrayRef = Arc::new(StringArray::from(vec!["b"]));
        counts.retract_batch(&[gone]).unwrap();
        assert_eq!(counts.counts, vec![("a".to_string(), 2)]);
        let ScalarValue::Map(map) = counts.evaluate().unwrap() else {
            panic!("HISTOGRAM returns a map");
        };
        assert_eq!(map.data_type(), &map_type());
    }
}
