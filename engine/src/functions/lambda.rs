//! ksqlDB's lambda functions over arrays and maps, as DataFusion higher-order functions:
//! `TRANSFORM(array, x => ..)`, `TRANSFORM(map, (k, v) => key, (k, v) => value)`,
//! `FILTER(array, x => ..)`, `FILTER(map, (k, v) => ..)`, `REDUCE(array, s0, (s, x) => ..)` and
//! `REDUCE(map, s0, (s, k, v) => ..)`.
//!
//! The parser hands DataFusion each lambda as sqlparser's lambda node; DataFusion plans the
//! body with the parameters typed by [`HigherOrderUDFImpl::lambda_parameters`] (outer columns
//! are captured, as ksqlDB allows) and gives the body to these functions as a physical
//! expression. TRANSFORM and FILTER evaluate it once over the elements of every row of a batch;
//! REDUCE once per element position, over the i-th element of every row at once.
//!
//! ksqlDB runs lambdas as Java: where Java throws, the whole expression is null. Conformance
//! pins two such cases, so they are kept: arithmetic on a null operand (unboxing: `x => x + 5`
//! over `[5, null]` is null, not `[10, null]`), and a map with a duplicate or null key or a null
//! value (`Collectors.toMap`). [`NullOperands`] rewrites lambda bodies so a null operand fails
//! with [`NullOperand`]; the outermost lambda function then gives null for the rows it happened
//! in. `AND` and `OR` in bodies short-circuit as Java's do, so an operand Java never evaluates
//! cannot fail. Any other error in a body fails the batch (and so, row by row, its record).

use std::any::Any;
use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, ListArray, MapArray, StructArray,
    UInt32Array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::{cast, concat, filter, interleave, prep_null_mask_filter, take};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{exec_err, plan_err, DataFusionError, Result};
use datafusion::logical_expr::expr::{Case, HigherOrderFunction, ScalarFunction};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    lit, BinaryExpr, ColumnarValue, Expr, HigherOrderFunctionArgs, HigherOrderReturnFieldArgs,
    HigherOrderSignature, HigherOrderUDF, HigherOrderUDFImpl, LambdaArgument,
    LambdaParametersProgress, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, ValueOrLambda, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;

/// Registers TRANSFORM, FILTER and REDUCE, and the analyzer rule that keeps ksqlDB's null
/// semantics in their lambdas.
pub(crate) fn register(context: &SessionContext) {
    for kind in [Kind::Transform, Kind::Filter, Kind::Reduce] {
        context.register_higher_order_function(udf(kind, false));
    }
    context.add_analyzer_rule(Arc::new(NullOperands));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Transform,
    Filter,
    Reduce,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Transform => "transform",
            Kind::Filter => "filter",
            Kind::Reduce => "reduce",
        }
    }

    /// What the function takes, for planning errors.
    fn usage(self) -> &'static str {
        match self {
            Kind::Transform => {
                "TRANSFORM takes an ARRAY and a lambda (x => ...), or a MAP and two lambdas \
                 ((k, v) => new key, (k, v) => new value)"
            }
            Kind::Filter => {
                "FILTER takes an ARRAY and a lambda (x => ...), or a MAP and a lambda \
                 ((k, v) => ...), the lambda giving a BOOLEAN"
            }
            Kind::Reduce => {
                "REDUCE takes an ARRAY or a MAP, an initial state and a lambda \
                 ((s, x) => ... for an ARRAY, (s, k, v) => ... for a MAP)"
            }
        }
    }
}

fn udf(kind: Kind, nested: bool) -> Arc<HigherOrderUDF> {
    Arc::new(HigherOrderUDF::new_from_impl(CollectionFunction {
        kind,
        nested,
        signature: HigherOrderSignature::variadic_any(Volatility::Immutable),
    }))
}

/// TRANSFORM, FILTER or REDUCE.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CollectionFunction {
    kind: Kind,
    /// Called inside another lambda's body: a [`NullOperand`] goes on up to the outermost
    /// call, as ksqlDB's exception does, instead of nulling this call's rows.
    nested: bool,
    signature: HigherOrderSignature,
}

/// The collection a lambda function runs over, by its element types.
enum Collection {
    Array(FieldRef),
    Map(FieldRef, FieldRef),
}

impl Collection {
    fn of(data_type: &DataType) -> Option<Collection> {
        let nullable = |f: &FieldRef| Arc::new(f.as_ref().clone().with_nullable(true));
        match data_type {
            DataType::List(item) => Some(Collection::Array(nullable(item))),
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(fields) if fields.len() == 2 => {
                    Some(Collection::Map(nullable(&fields[0]), nullable(&fields[1])))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

impl CollectionFunction {
    /// The planning error for arguments of the wrong shape, naming what was given.
    fn usage_error<T, V: AsRef<Field>, L>(&self, fields: &[ValueOrLambda<V, L>]) -> Result<T> {
        let given: Vec<String> = fields
            .iter()
            .map(|f| match f {
                ValueOrLambda::Value(field) => field.as_ref().data_type().to_string(),
                ValueOrLambda::Lambda(_) => "a lambda".to_string(),
            })
            .collect();
        plan_err!("{}; got ({})", self.kind.usage(), given.join(", "))
    }
}

impl HigherOrderUDFImpl for CollectionFunction {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn signature(&self) -> &HigherOrderSignature {
        &self.signature
    }

    fn lambda_parameters(
        &self,
        _step: usize,
        fields: &[ValueOrLambda<FieldRef, Option<FieldRef>>],
    ) -> Result<LambdaParametersProgress> {
        use ValueOrLambda::{Lambda, Value};
        let Some(Value(first)) = fields.first() else {
            return self.usage_error(fields);
        };
        let Some(collection) = Collection::of(first.data_type()) else {
            return self.usage_error(fields);
        };
        let complete = |params: Vec<Vec<FieldRef>>| Ok(LambdaParametersProgress::Complete(params));
        match (self.kind, &collection, &fields[1..]) {
            (Kind::Transform | Kind::Filter, Collection::Array(item), [Lambda(_)]) => {
                complete(vec![vec![Arc::clone(item)]])
            }
            (Kind::Transform, Collection::Map(key, value), [Lambda(_), Lambda(_)]) => {
                let params = vec![Arc::clone(key), Arc::clone(value)];
                complete(vec![params.clone(), params])
            }
            (Kind::Filter, Collection::Map(key, value), [Lambda(_)]) => {
                complete(vec![vec![Arc::clone(key), Arc::clone(value)]])
            }
            (Kind::Reduce, _, [Value(initial), Lambda(output)]) => {
                // The state has the body's type once it is known (the initial state is cast
                // to it), the initial state's until then.
                let state = output.as_ref().unwrap_or(initial);
                let state = Arc::new(Field::new("state", state.data_type().clone(), true));
                let params = match &collection {
                    Collection::Array(item) => vec![state, Arc::clone(item)],
                    Collection::Map(key, value) => vec![state, Arc::clone(key), Arc::clone(value)],
                };
                match output {
                    Some(_) => complete(vec![params]),
                    None => Ok(LambdaParametersProgress::Partial(vec![Some(params)])),
                }
            }
            _ => self.usage_error(fields),
        }
    }

    fn return_field_from_args(&self, args: HigherOrderReturnFieldArgs) -> Result<FieldRef> {
        use ValueOrLambda::{Lambda, Value};
        let fields = args.arg_fields;
        let Some(Value(first)) = fields.first() else {
            return self.usage_error(fields);
        };
        let data_type = match (self.kind, Collection::of(first.data_type()), &fields[1..]) {
            (Kind::Transform, Some(Collection::Array(_)), [Lambda(body)]) => {
                DataType::List(Arc::new(Field::new("item", body.data_type().clone(), true)))
            }
            (Kind::Transform, Some(Collection::Map(..)), [Lambda(key), Lambda(value)]) => {
                map_type(key.data_type(), value.data_type())
            }
            (Kind::Filter, Some(_), [Lambda(body)]) => {
                if !matches!(body.data_type(), DataType::Boolean | DataType::Null) {
                    return plan_err!(
                        "FILTER's lambda must give a BOOLEAN, not {}",
                        body.data_type()
                    );
                }
                first.data_type().clone()
            }
            (Kind::Reduce, Some(_), [Value(_), Lambda(body)]) => body.data_type().clone(),
            _ => return self.usage_error(fields),
        };
        Ok(Arc::new(Field::new(self.name(), data_type, true)))
    }

    fn invoke_with_args(&self, args: HigherOrderFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut values = Vec::new();
        let mut lambdas = Vec::new();
        for arg in &args.args {
            match arg {
                ValueOrLambda::Value(value) => values.push(value.to_array(rows)?),
                ValueOrLambda::Lambda(lambda) => lambdas.push(lambda),
            }
        }
        let Some(collection) = values.first() else {
            return exec_err!("{} was called without its collection", self.kind.usage());
        };
        let call = Call {
            kind: self.kind,
            collection,
            initial: values.get(1),
            lambdas,
            return_type: args.return_type(),
        };
        let result = match call.rows(0, rows) {
            Err(e) if !self.nested && is_null_operand(&e) => call.row_by_row(rows),
            other => other,
        };
        result.map(ColumnarValue::Array)
    }
}

/// ksqlDB's map type for keys and values of these types.
fn map_type(key: &DataType, value: &DataType) -> DataType {
    let entries = vec![
        Field::new("key", key.clone(), false),
        Field::new("value", value.clone(), true),
    ];
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(entries.into()),
            false,
        )),
        false,
    )
}

/// One invocation over a batch.
struct Call<'a> {
    kind: Kind,
    collection: &'a ArrayRef,
    /// REDUCE's initial states.
    initial: Option<&'a ArrayRef>,
    lambdas: Vec<&'a LambdaArgument>,
    return_type: &'a DataType,
}

/// The elements of rows `first..first + count` of a list or map: where each row's elements
/// start in the child array, and the end of the last.
struct Elements {
    first: usize,
    offsets: Vec<usize>,
}

impl Elements {
    fn of(offsets: &[i32], first: usize, count: usize) -> Elements {
        let offsets = offsets[first..=first + count]
            .iter()
            .map(|o| *o as usize)
            .collect();
        Elements { first, offsets }
    }

    fn start(&self) -> usize {
        self.offsets[0]
    }

    fn len(&self) -> usize {
        self.offsets[self.offsets.len() - 1] - self.start()
    }

    fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The elements of row `row` (counted from `first`), as positions from `start`.
    fn of_row(&self, row: usize) -> std::ops::Range<usize> {
        self.offsets[row] - self.start()..self.offsets[row + 1] - self.start()
    }

    /// The batch row of each element, to spread captured columns over the elements.
    fn outer_rows(&self) -> UInt32Array {
        (0..self.rows())
            .flat_map(|row| std::iter::repeat_n((self.first + row) as u32, self.of_row(row).len()))
            .collect()
    }

    /// The rows' offsets into their elements alone.
    fn relative_offsets(&self) -> OffsetBuffer<i32> {
        let start = self.start();
        OffsetBuffer::new(self.offsets.iter().map(|o| (o - start) as i32).collect())
    }

    /// Offsets of the elements `keep` keeps.
    fn kept_offsets(&self, keep: &BooleanArray) -> OffsetBuffer<i32> {
        let mut offsets = Vec::with_capacity(self.offsets.len());
        let mut total = 0i32;
        offsets.push(0);
        for row in 0..self.rows() {
            total += self.of_row(row).filter(|&e| keep.value(e)).count() as i32;
            offsets.push(total);
        }
        OffsetBuffer::new(offsets.into())
    }
}

impl Call<'_> {
    /// The result for batch rows `first..first + count`.
    fn rows(&self, first: usize, count: usize) -> Result<ArrayRef> {
        match (self.kind, self.collection.data_type()) {
            (Kind::Reduce, _) => self.reduce(first, count),
            (_, DataType::List(_)) => self.over_array(first, count),
            (_, DataType::Map(..)) => self.over_map(first, count),
            (_, other) => exec_err!("{} not {other}", self.kind.usage()),
        }
    }

    /// Each row alone: a row with a [`NullOperand`] gives null, as ksqlDB's expression does.
    fn row_by_row(&self, rows: usize) -> Result<ArrayRef> {
        let mut parts = Vec::with_capacity(rows);
        for row in 0..rows {
            parts.push(match self.rows(row, 1) {
                Err(e) if is_null_operand(&e) => new_null_array(self.return_type, 1),
                other => other?,
            });
        }
        if parts.is_empty() {
            return self.rows(0, 0);
        }
        let parts: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
        Ok(concat(&parts)?)
    }

    fn over_array(&self, first: usize, count: usize) -> Result<ArrayRef> {
        let list = self.collection.as_list::<i32>();
        let elements = Elements::of(list.value_offsets(), first, count);
        let values = list.values().slice(elements.start(), elements.len());
        let nulls = list.nulls().map(|n| n.slice(first, count));
        let result = evaluate(self.lambdas[0], &[values.clone()], &elements)?;
        let DataType::List(field) = self.return_type else {
            return exec_err!(
                "{} returns an ARRAY, not {}",
                self.kind.usage(),
                self.return_type
            );
        };
        if self.kind == Kind::Transform {
            let offsets = elements.relative_offsets();
            let result = cast_to(result, field.data_type())?;
            return Ok(Arc::new(ListArray::try_new(
                Arc::clone(field),
                offsets,
                result,
                nulls,
            )?));
        }
        let keep = predicate(&result)?;
        let kept = filter(&values, &keep)?;
        let offsets = elements.kept_offsets(&keep);
        Ok(Arc::new(ListArray::try_new(
            Arc::clone(field),
            offsets,
            kept,
            nulls,
        )?))
    }

    /// TRANSFORM and FILTER of maps. A row whose result ksqlDB's `Collectors.toMap` refuses
    /// (a duplicate or null key, a null value) is null.
    fn over_map(&self, first: usize, count: usize) -> Result<ArrayRef> {
        let map = self.collection.as_map();
        let elements = Elements::of(map.value_offsets(), first, count);
        let keys = map.keys().slice(elements.start(), elements.len());
        let values = map.values().slice(elements.start(), elements.len());
        let params = [keys.clone(), values.clone()];
        let (keys, values, mut keep) = match self.kind {
            Kind::Transform => {
                let keys = evaluate(self.lambdas[0], &params, &elements)?;
                let values = evaluate(self.lambdas[1], &params, &elements)?;
                (keys, values, BooleanArray::from(vec![true; elements.len()]))
            }
            _ => {
                let keep = predicate(&evaluate(self.lambdas[0], &params, &elements)?)?;
                (keys, values, keep)
            }
        };
        let converter = RowConverter::new(vec![SortField::new(keys.data_type().clone())])?;
        let key_rows = converter.convert_columns(&[Arc::clone(&keys)])?;
        let valid: Vec<bool> = (0..count)
            .map(|row| {
                let mut seen = HashSet::new();
                map.is_valid(first + row)
                    && elements.of_row(row).filter(|&e| keep.value(e)).all(|e| {
                        keys.is_valid(e) && values.is_valid(e) && seen.insert(key_rows.row(e))
                    })
            })
            .collect();
        keep = (0..elements.len())
            .map(|e| Some(keep.value(e) && valid[elements_row(&elements, e)]))
            .collect();
        let DataType::Map(entries_field, sorted) = self.return_type else {
            return exec_err!(
                "{} returns a MAP, not {}",
                self.kind.usage(),
                self.return_type
            );
        };
        let DataType::Struct(entry_fields) = entries_field.data_type() else {
            return exec_err!(
                "a MAP's entries are a STRUCT, not {}",
                entries_field.data_type()
            );
        };
        let keys = cast_to(filter(&keys, &keep)?, entry_fields[0].data_type())?;
        let values = cast_to(filter(&values, &keep)?, entry_fields[1].data_type())?;
        let entries = StructArray::try_new(entry_fields.clone(), vec![keys, values], None)?;
        Ok(Arc::new(MapArray::try_new(
            Arc::clone(entries_field),
            elements.kept_offsets(&keep),
            entries,
            Some(NullBuffer::from(valid)),
            *sorted,
        )?))
    }

    /// REDUCE: step i applies the lambda to the state and the i-th element of every row that
    /// has one, at once. A null initial state gives null; a null collection its initial state
    /// (ksqlDB's `Reduce`).
    fn reduce(&self, first: usize, count: usize) -> Result<ArrayRef> {
        let Some(initial) = self.initial else {
            return exec_err!("{}", Kind::Reduce.usage());
        };
        let initial = cast_to(initial.slice(first, count), self.return_type)?;
        let (elements, children, order) = match self.collection.data_type() {
            DataType::List(_) => {
                let list = self.collection.as_list::<i32>();
                let elements = Elements::of(list.value_offsets(), first, count);
                (elements, vec![Arc::clone(list.values())], None)
            }
            DataType::Map(..) => {
                let map = self.collection.as_map();
                let elements = Elements::of(map.value_offsets(), first, count);
                let order = java_hash_map_order(map.keys(), &elements);
                let children = vec![Arc::clone(map.keys()), Arc::clone(map.values())];
                (elements, children, Some(order))
            }
            other => return exec_err!("{} not {other}", Kind::Reduce.usage()),
        };
        let started: Vec<bool> = (0..count)
            .map(|row| initial.is_valid(row) && self.collection.is_valid(first + row))
            .collect();
        let mut state = initial;
        for step in 0.. {
            let active: Vec<usize> = (0..count)
                .filter(|&row| started[row] && elements.of_row(row).len() > step)
                .collect();
            if active.is_empty() {
                break;
            }
            let element = |row: usize| {
                let position = elements.of_row(row).start + step;
                let position = order
                    .as_ref()
                    .map_or(position, |o: &Vec<usize>| o[position]);
                (elements.start() + position) as u32
            };
            let at: UInt32Array = active.iter().map(|&row| element(row)).collect();
            let rows: UInt32Array = active.iter().map(|&row| row as u32).collect();
            let mut params = vec![take(&state, &rows, None)?];
            for child in &children {
                params.push(take(child, &at, None)?);
            }
            let spread: UInt32Array = active.iter().map(|&row| (first + row) as u32).collect();
            let next = evaluate_spread(self.lambdas[0], &params, active.len(), &spread)?;
            let next = cast_to(next, self.return_type)?;
            let mut from_next = active.iter().enumerate().peekable();
            let picks: Vec<(usize, usize)> = (0..count)
                .map(|row| match from_next.peek() {
                    Some(&(k, &r)) if r == row => {
                        from_next.next();
                        (1, k)
                    }
                    _ => (0, row),
                })
                .collect();
            state = interleave(&[state.as_ref(), next.as_ref()], &picks)?;
        }
        Ok(state)
    }
}

/// The row (counted from `elements.first`) element `e` belongs to.
fn elements_row(elements: &Elements, e: usize) -> usize {
    let absolute = elements.start() + e;
    elements.offsets.partition_point(|&o| o <= absolute) - 1
}

/// The order ksqlDB visits a map's entries in: its JSON and Avro readers build a
/// `java.util.HashMap` sized for the map, which iterates by bucket (a key's `String.hashCode`,
/// spread, masked by the table size) and within a bucket in insertion order. REDUCE's result
/// can depend on it. For each element position (from `elements.start()`), the position whose
/// entry is visited there.
fn java_hash_map_order(keys: &ArrayRef, elements: &Elements) -> Vec<usize> {
    let mut order: Vec<usize> = (0..elements.len()).collect();
    let Some(keys) = keys.as_string_opt::<i32>() else {
        return order;
    };
    for row in 0..elements.rows() {
        let range = elements.of_row(row);
        let entries = range.len();
        // HashMap(n): a table of the next power of two, doubled while over 3/4 full.
        let mut capacity = entries.max(1).next_power_of_two();
        while entries * 4 > capacity * 3 {
            capacity *= 2;
        }
        let bucket = |position: &usize| {
            let key = keys.value(elements.start() + position);
            let hash = key
                .encode_utf16()
                .fold(0u32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as u32));
            ((hash ^ (hash >> 16)) as usize) & (capacity - 1)
        };
        order[range].sort_by_key(bucket);
    }
    order
}

/// The lambda's body over the elements: `params` are its parameters' columns, one row per
/// element; captured outer columns are spread to the elements' rows.
fn evaluate(lambda: &LambdaArgument, params: &[ArrayRef], elements: &Elements) -> Result<ArrayRef> {
    evaluate_spread(lambda, params, elements.len(), &elements.outer_rows())
}

fn evaluate_spread(
    lambda: &LambdaArgument,
    params: &[ArrayRef],
    len: usize,
    outer_rows: &UInt32Array,
) -> Result<ArrayRef> {
    let closures: Vec<Box<dyn Fn() -> Result<ArrayRef>>> = params
        .iter()
        .map(|param| {
            let param = Arc::clone(param);
            Box::new(move || Ok(Arc::clone(&param))) as Box<dyn Fn() -> Result<ArrayRef>>
        })
        .collect();
    let closures: Vec<&dyn Fn() -> Result<ArrayRef>> =
        closures.iter().map(|c| c.as_ref()).collect();
    let spread = |captured: &[ArrayRef]| -> Result<Vec<ArrayRef>> {
        captured
            .iter()
            .map(|column| Ok(take(column, outer_rows, None)?))
            .collect()
    };
    lambda.evaluate(&closures, spread)?.into_array(len)
}

/// A FILTER lambda's result as a mask: null counts as false, as ksqlDB's comparisons with
/// null are false.
fn predicate(result: &ArrayRef) -> Result<BooleanArray> {
    match result.data_type() {
        // arrow's prep_null_mask_filter expects nulls (it panics without them).
        DataType::Boolean if result.null_count() == 0 => Ok(result.as_boolean().clone()),
        DataType::Boolean => Ok(prep_null_mask_filter(result.as_boolean())),
        DataType::Null => Ok(BooleanArray::from(vec![false; result.len()])),
        other => exec_err!("FILTER's lambda must give a BOOLEAN, not {other}"),
    }
}

fn cast_to(array: ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    if array.data_type() == data_type {
        return Ok(array);
    }
    Ok(cast(&array, data_type)?)
}

/// A null operand of arithmetic in a lambda body: in ksqlDB a Java exception that makes the
/// whole expression null.
#[derive(Debug)]
struct NullOperand;

impl std::fmt::Display for NullOperand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(NULL_OPERAND_MESSAGE)
    }
}

impl std::error::Error for NullOperand {}

const NULL_OPERAND_MESSAGE: &str = "arithmetic on a null in a lambda (ksqlDB's result is null)";

fn is_null_operand(error: &DataFusionError) -> bool {
    match error.find_root() {
        DataFusionError::External(inner) => inner.is::<NullOperand>(),
        other => other.to_string().contains(NULL_OPERAND_MESSAGE),
    }
}

/// Rewrites the bodies of the lambdas given to TRANSFORM, FILTER and REDUCE for ksqlDB's
/// null semantics (see the module's documentation). Runs after type coercion.
#[derive(Debug)]
struct NullOperands;

impl AnalyzerRule for NullOperands {
    fn name(&self) -> &str {
        "ksql_lambda_null_operands"
    }

    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
        let plan = plan.transform_up_with_subqueries(|node| {
            let names = NamePreserver::new(&node);
            node.map_expressions(|expr| {
                let name = names.save(&expr);
                let rewritten = expr.transform_down(outermost_call)?;
                Ok(match rewritten.transformed {
                    true => rewritten.update_data(|e| name.restore(e)),
                    false => rewritten,
                })
            })
        })?;
        Ok(plan.data)
    }
}

fn ours(function: &HigherOrderUDF) -> Option<&CollectionFunction> {
    let inner: &dyn Any = function.inner().as_ref();
    inner.downcast_ref::<CollectionFunction>()
}

/// At a call of ours outside any lambda: rewrites its lambdas' bodies, and stops there.
fn outermost_call(expr: Expr) -> Result<Transformed<Expr>> {
    let Expr::HigherOrderFunction(call) = expr else {
        return Ok(Transformed::no(expr));
    };
    if ours(&call.func).is_none() {
        return Ok(Transformed::no(Expr::HigherOrderFunction(call)));
    }
    let args = call
        .args
        .into_iter()
        .map(|arg| match arg {
            Expr::Lambda(mut lambda) => {
                lambda.body = Box::new(lambda.body.transform_up(strict_node)?.data);
                Ok(Expr::Lambda(lambda))
            }
            other => Ok(other),
        })
        .collect::<Result<Vec<_>>>()?;
    let call = Expr::HigherOrderFunction(HigherOrderFunction::new(call.func, args));
    Ok(Transformed::new(call, true, TreeNodeRecursion::Jump))
}

/// One node of a lambda body: arithmetic checks its operands for null, AND and OR become
/// CASEs (which evaluate their right side only where the left does not decide), and calls of
/// ours become nested ones.
fn strict_node(expr: Expr) -> Result<Transformed<Expr>> {
    let checked = |e: Box<Expr>| {
        Box::new(Expr::ScalarFunction(ScalarFunction::new_udf(
            operand_udf(),
            vec![*e],
        )))
    };
    Ok(match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(
                op,
                Operator::Plus
                    | Operator::Minus
                    | Operator::Multiply
                    | Operator::Divide
                    | Operator::Modulo
            ) =>
        {
            Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                checked(left),
                op,
                checked(right),
            )))
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => Transformed::yes(Expr::Case(Case::new(
            None,
            vec![(left, right)],
            Some(Box::new(lit(false))),
        ))),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => Transformed::yes(Expr::Case(Case::new(
            None,
            vec![(left, Box::new(lit(true)))],
            Some(right),
        ))),
        Expr::HigherOrderFunction(call) => match ours(&call.func) {
            Some(function) if !function.nested => Transformed::yes(Expr::HigherOrderFunction(
                HigherOrderFunction::new(udf(function.kind, true), call.args),
            )),
            _ => Transformed::no(Expr::HigherOrderFunction(call)),
        },
        other => Transformed::no(other),
    })
}

/// The name of the call that checks an arithmetic operand in a lambda body.
pub(crate) const OPERAND: &str = "ksql_lambda_operand";

fn operand_udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(LambdaOperand {
        signature: Signature::any(1, Volatility::Immutable),
    }))
}

/// An operand of arithmetic in a lambda body, passed through; null fails with
/// [`NullOperand`].
#[derive(Debug, PartialEq, Eq, Hash)]
struct LambdaOperand {
    signature: Signature,
}

impl ScalarUDFImpl for LambdaOperand {
    fn name(&self) -> &str {
        OPERAND
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        match arguments {
            [operand] => Ok(operand.clone()),
            _ => plan_err!("ksql_lambda_operand takes one operand"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [operand] = args.args.as_slice() else {
            return exec_err!("ksql_lambda_operand takes one operand");
        };
        let null = match operand {
            ColumnarValue::Scalar(value) => value.is_null(),
            ColumnarValue::Array(array) => array.logical_null_count() > 0,
        };
        if null {
            return Err(DataFusionError::External(Box::new(NullOperand)));
        }
        Ok(operand.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::arrow::array::{Int32Builder, MapBuilder, StringBuilder};

    #[test]
    fn visits_map_entries_in_java_hash_map_order() {
        // ksqlDB's REDUCE over {"yes, thanks", "nope", "sure, yeah"} (its conformance case
        // "reduce map with double") visits "sure, yeah" before "nope".
        let mut builder = MapBuilder::new(None, StringBuilder::new(), Int32Builder::new());
        for key in ["yes, thanks", "nope", "sure, yeah"] {
            builder.keys().append_value(key);
            builder.values().append_value(1);
        }
        builder.append(true).unwrap();
        let map = builder.finish();
        let elements = Elements::of(map.value_offsets(), 0, 1);
        assert_eq!(java_hash_map_order(map.keys(), &elements), vec![0, 2, 1]);
    }

    #[test]
    fn spreads_outer_rows_over_elements() {
        let elements = Elements {
            first: 2,
            offsets: vec![3, 5, 5, 6],
        };
        assert_eq!(elements.len(), 3);
        assert_eq!(elements.outer_rows().values().to_vec(), vec![2, 2, 4]);
        assert_eq!(elements_row(&elements, 2), 2);
        assert_eq!(elements_row(&elements, 1), 0);
        let keep = BooleanArray::from(vec![true, false, true]);
        assert_eq!(elements.kept_offsets(&keep).to_vec(), vec![0, 1, 1, 2]);
    }

    #[test]
    fn null_operand_is_recognised_through_context() {
        let error = DataFusionError::External(Box::new(NullOperand));
        assert!(is_null_operand(&error.context("evaluating a lambda")));
        let other = DataFusionError::Execution("division by zero".into());
        assert!(!is_null_operand(&other));
    }
}
