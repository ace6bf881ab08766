//! ksqlDB's aggregate functions that DataFusion lacks: COLLECT_LIST, COLLECT_SET,
//! LATEST_BY_OFFSET, EARLIEST_BY_OFFSET, TOPK and TOPKDISTINCT.
//!
//! They share one accumulator: the values it keeps, each with the arrival number of the row it
//! came from (so merged session windows still know which value is the latest), and a rule
//! for which values to keep. Rows arrive in offset order, one update per row.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, ListArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use datafusion::scalar::ScalarValue;

/// The largest COLLECT_LIST / COLLECT_SET, as ksqlDB's `ksql.functions.collect_list.limit`.
const COLLECT_LIMIT: usize = 1000;

/// Arrival numbers shared by every accumulator: later rows get larger numbers.
static ARRIVAL: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    CollectList,
    CollectSet,
    Latest,
    Earliest,
    TopK,
    TopKDistinct,
}

/// One of ksqlDB's aggregate functions.
#[derive(Debug, PartialEq, Eq, Hash)]
struct KsqlAggregate {
    kind: Kind,
    name: &'static str,
    signature: Signature,
}

/// The functions, ready to register with a DataFusion session.
pub fn all() -> Vec<AggregateUDF> {
    let any = |counts: &[usize]| {
        Signature::one_of(
            counts.iter().map(|n| TypeSignature::Any(*n)).collect(),
            Volatility::Immutable,
        )
    };
    [
        (Kind::CollectList, "collect_list", any(&[1])),
        (Kind::CollectSet, "collect_set", any(&[1])),
        (Kind::Latest, "latest_by_offset", any(&[1, 2, 3])),
        (Kind::Earliest, "earliest_by_offset", any(&[1, 2, 3])),
        (Kind::TopK, "topk", any(&[2])),
        (Kind::TopKDistinct, "topkdistinct", any(&[2])),
    ]
    .into_iter()
    .map(|(kind, name, signature)| {
        AggregateUDF::from(KsqlAggregate {
            kind,
            name,
            signature,
        })
    })
    .collect()
}

fn list_of(item: &DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item.clone(), true)))
}

impl KsqlAggregate {
    /// LATEST/EARLIEST_BY_OFFSET(x, n [, ignore nulls]) return the n values as an array.
    fn returns_list(&self, arg_types: &[DataType]) -> bool {
        match self.kind {
            Kind::Latest | Kind::Earliest => arg_types.get(1).is_some_and(DataType::is_integer),
            _ => true,
        }
    }
}

impl AggregateUDFImpl for KsqlAggregate {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let Some(item) = arg_types.first() else {
            return plan_err!("{} needs an argument", self.name.to_uppercase());
        };
        Ok(if self.returns_list(arg_types) {
            list_of(item)
        } else {
            item.clone()
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = args.input_fields[0].data_type();
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[values]", args.name),
                list_of(item),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[arrivals]", args.name),
                list_of(&DataType::UInt64),
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let literal = |i: usize| -> Option<ScalarValue> {
            let expr: &dyn Any = args.exprs.get(i)?.as_ref();
            expr.downcast_ref::<Literal>().map(|l| l.value().clone())
        };
        let count = |v: Option<ScalarValue>| match v {
            Some(ScalarValue::Int8(Some(n))) => Some(n as i64),
            Some(ScalarValue::Int16(Some(n))) => Some(n as i64),
            Some(ScalarValue::Int32(Some(n))) => Some(n as i64),
            Some(ScalarValue::Int64(Some(n))) => Some(n),
            _ => None,
        };
        let boolean = |v: Option<ScalarValue>| match v {
            Some(ScalarValue::Boolean(b)) => b,
            _ => None,
        };
        let item = args.expr_fields[0].data_type().clone();
        let (limit, ignore_nulls, as_list) = match self.kind {
            Kind::CollectList | Kind::CollectSet => (COLLECT_LIMIT, true, true),
            Kind::TopK | Kind::TopKDistinct => {
                let Some(k) = count(literal(1)).filter(|k| *k > 0) else {
                    return exec_err!("{}: k must be a positive number", self.name.to_uppercase());
                };
                (k as usize, true, true)
            }
            Kind::Latest | Kind::Earliest => {
                let n = count(literal(1));
                let ignore = boolean(literal(if n.is_some() { 2 } else { 1 }));
                if let Some(n) = n.filter(|n| *n < 1) {
                    return exec_err!(
                        "{}: the number of values must be positive, not {n}",
                        self.name.to_uppercase()
                    );
                }
                (n.unwrap_or(1) as usize, ignore.unwrap_or(true), n.is_some())
            }
        };
        Ok(Box::new(KeptValues {
            kind: self.kind,
            item,
            limit,
            // ksqlDB collects a null as an element (once, in a set).
            ignore_nulls: ignore_nulls
                && !matches!(self.kind, Kind::CollectList | Kind::CollectSet),
            as_list,
            values: Vec::new(),
        }))
    }
}

/// The values an aggregate keeps, oldest first, with their arrival numbers.
#[derive(Debug)]
struct KeptValues {
    kind: Kind,
    item: DataType,
    limit: usize,
    ignore_nulls: bool,
    as_list: bool,
    values: Vec<(u64, ScalarValue)>,
}

impl KeptValues {
    fn offer(&mut self, arrival: u64, value: ScalarValue) -> Result<()> {
        if value.is_null() && self.ignore_nulls {
            return Ok(());
        }
        match self.kind {
            Kind::CollectList => {
                if self.values.len() < self.limit {
                    self.values.push((arrival, value));
                }
            }
            Kind::CollectSet => {
                if self.values.len() < self.limit && !self.values.iter().any(|(_, v)| v == &value) {
                    self.values.push((arrival, value));
                }
            }
            Kind::Latest => {
                let at = self.values.partition_point(|(a, _)| *a <= arrival);
                self.values.insert(at, (arrival, value));
                if self.values.len() > self.limit {
                    self.values.remove(0);
                }
            }
            Kind::Earliest => {
                let at = self.values.partition_point(|(a, _)| *a <= arrival);
                if at < self.limit {
                    self.values.insert(at, (arrival, value));
                    self.values.truncate(self.limit);
                }
            }
            Kind::TopK | Kind::TopKDistinct => {
                if matches!(self.kind, Kind::TopKDistinct)
                    && self.values.iter().any(|(_, v)| v == &value)
                {
                    return Ok(());
                }
                // Largest first.
                let at = self.values.partition_point(|(_, v)| {
                    v.partial_cmp(&value)
                        .is_some_and(|o| o != std::cmp::Ordering::Less)
                });
                if at < self.limit {
                    self.values.insert(at, (arrival, value));
                    self.values.truncate(self.limit);
                }
            }
        }
        Ok(())
    }

    fn list(&self, values: impl IntoIterator<Item = ScalarValue>, item: &DataType) -> ScalarValue {
        let values: Vec<ScalarValue> = values.into_iter().collect();
        ScalarValue::List(ScalarValue::new_list_nullable(&values, item))
    }
}

impl Accumulator for KeptValues {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let column = &values[0];
        for row in 0..column.len() {
            let arrival = ARRIVAL.fetch_add(1, Ordering::Relaxed);
            self.offer(arrival, ScalarValue::try_from_array(column, row)?)?;
        }
        Ok(())
    }

    /// A table row deleted or replaced: its value leaves the list or set.
    fn retract_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let column = &values[0];
        for row in 0..column.len() {
            let value = ScalarValue::try_from_array(column, row)?;
            if let Some(at) = self.values.iter().position(|(_, v)| v == &value) {
                self.values.remove(at);
            }
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        matches!(self.kind, Kind::CollectList | Kind::CollectSet)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let values = self.values.iter().map(|(_, v)| v.clone());
        if self.as_list {
            return Ok(self.list(values, &self.item));
        }
        Ok(match self.values.first() {
            Some((_, v)) => v.clone(),
            None => ScalarValue::try_from(&self.item)?,
        })
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.values.iter().map(|(_, v)| v.size()).sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let arrivals = self
            .values
            .iter()
            .map(|(a, _)| ScalarValue::UInt64(Some(*a)));
        Ok(vec![
            self.list(self.values.iter().map(|(_, v)| v.clone()), &self.item),
            self.list(arrivals, &DataType::UInt64),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (Some(values), Some(arrivals)) = (
            states[0].as_any().downcast_ref::<ListArray>(),
            states[1].as_any().downcast_ref::<ListArray>(),
        ) else {
            return exec_err!("unexpected state for {:?}", self.kind);
        };
        for row in 0..values.len() {
            let (values, arrivals) = (values.value(row), arrivals.value(row));
            for i in 0..values.len() {
                let arrival = match ScalarValue::try_from_array(&arrivals, i)? {
                    ScalarValue::UInt64(Some(a)) => a,
                    _ => 0,
                };
                // Kept values were already filtered; offer nulls kept by "nulls not ignored".
                let value = ScalarValue::try_from_array(&values, i)?;
                let ignore = std::mem::replace(&mut self.ignore_nulls, false);
                let offered = self.offer(arrival, value);
                self.ignore_nulls = ignore;
                offered?;
            }
        }
        Ok(())
    }
}
