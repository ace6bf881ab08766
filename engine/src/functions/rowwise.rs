//! Scalar functions computed a row at a time over [`ScalarValue`]s: ksqlDB's functions that
//! are small or irregular enough (bytes conversions, JSON text, geography, collections of any
//! element type) that a kernel per Arrow type would be more code than it saves. A
//! [`RowFunction`] is a name, how it types its arguments ([`Typing`]) and what it makes of
//! one row's values ([`Row`]); nulls are the function's to handle (a row it fails on is null,
//! by [`super::guard`]). Also the helpers those
//! functions share to read and build ARRAY and MAP values.

use std::sync::Arc;

use datafusion::arrow::array::{new_empty_array, Array, ArrayRef, MapArray, StructArray};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::types::SqlType;

/// The result type for the argument types, or why they are refused.
pub(crate) type Typing = fn(&str, &[DataType]) -> Result<DataType>;
/// One row's result from its argument values, of the type [`Typing`] gave (passed in).
pub(crate) type Row = fn(&[ScalarValue], &DataType) -> Result<ScalarValue>;

/// A function evaluated row by row.
#[derive(Debug)]
pub(crate) struct RowFunction {
    name: &'static str,
    signature: Signature,
    typing: Typing,
    row: Row,
}

impl PartialEq for RowFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for RowFunction {}

impl std::hash::Hash for RowFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

/// The function `name` (lower case, as DataFusion registers it).
pub(crate) fn udf(name: &'static str, typing: Typing, row: Row) -> ScalarUDF {
    ScalarUDF::new_from_impl(RowFunction {
        name,
        signature: Signature::variadic_any(Volatility::Immutable),
        typing,
        row,
    })
}

/// As [`udf`], for a function whose result changes between calls with the same arguments.
pub(crate) fn volatile_udf(name: &'static str, typing: Typing, row: Row) -> ScalarUDF {
    ScalarUDF::new_from_impl(RowFunction {
        name,
        signature: Signature::variadic_any(Volatility::Volatile),
        typing,
        row,
    })
}

impl ScalarUDFImpl for RowFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        (self.typing)(self.name, arguments)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let returns = args.return_field.data_type().clone();
        let mut values = Vec::with_capacity(args.args.len());
        let mut out = Vec::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            values.clear();
            // A scalar argument (a literal) is the same on every row.
            for argument in &args.args {
                values.push(match argument {
                    ColumnarValue::Scalar(value) => value.clone(),
                    ColumnarValue::Array(array) => ScalarValue::try_from_array(array, row)?,
                });
            }
            out.push((self.row)(&values, &returns)?);
        }
        if out.is_empty() {
            return Ok(ColumnarValue::Array(new_empty_array(&returns)));
        }
        Ok(ColumnarValue::Array(ScalarValue::iter_to_array(out)?))
    }
}

/// ksqlDB's refusal of argument types: "Function 'x' does not accept parameters (A, B).".
pub(crate) fn refuse<T>(name: &str, arguments: &[DataType]) -> Result<T> {
    plan_err!(
        "Function '{name}' does not accept parameters ({}).",
        type_names(arguments)
    )
}

/// Argument types in ksqlDB's names, comma-separated ("null" for an untyped NULL).
pub(crate) fn type_names(arguments: &[DataType]) -> String {
    arguments
        .iter()
        .map(|t| match t {
            DataType::Null => "null".to_string(),
            t => SqlType::from_arrow(t)
                .map(|t| t.to_string())
                .unwrap_or_else(|| t.to_string()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether values of `data_type` are text (or an untyped NULL).
pub(crate) fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
    )
}

/// Whether values of `data_type` are bytes (or an untyped NULL).
pub(crate) fn is_bytes(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null
    )
}

/// A value as text, `None` when null or not text.
pub(crate) fn text(value: &ScalarValue) -> Option<&str> {
    match value {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => v.as_deref(),
        _ => None,
    }
}

/// A value as bytes, `None` when null or not bytes.
pub(crate) fn bytes(value: &ScalarValue) -> Option<&[u8]> {
    match value {
        ScalarValue::Binary(v) | ScalarValue::LargeBinary(v) | ScalarValue::BinaryView(v) => {
            v.as_deref()
        }
        _ => None,
    }
}

/// A whole-number value as an i64, `None` when null or not a whole number.
pub(crate) fn integer(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::Int8(v) => v.map(i64::from),
        ScalarValue::Int16(v) => v.map(i64::from),
        ScalarValue::Int32(v) => v.map(i64::from),
        ScalarValue::Int64(v) => *v,
        ScalarValue::UInt8(v) => v.map(i64::from),
        ScalarValue::UInt16(v) => v.map(i64::from),
        ScalarValue::UInt32(v) => v.map(i64::from),
        ScalarValue::UInt64(v) => v.and_then(|v| i64::try_from(v).ok()),
        _ => None,
    }
}

/// A numeric value as an f64, `None` when null or not a number.
pub(crate) fn number(value: &ScalarValue) -> Option<f64> {
    match value {
        ScalarValue::Float32(v) => v.map(f64::from),
        ScalarValue::Float64(v) => *v,
        ScalarValue::Decimal128(v, _, scale) => v.map(|v| v as f64 / 10f64.powi(i32::from(*scale))),
        other => integer(other).map(|v| v as f64),
    }
}

/// The elements of an ARRAY value, `None` when it is null.
pub(crate) fn list_items(value: &ScalarValue) -> Result<Option<Vec<ScalarValue>>> {
    let array: ArrayRef = match value {
        ScalarValue::List(list) if list.is_valid(0) => list.value(0),
        ScalarValue::LargeList(list) if list.is_valid(0) => list.value(0),
        ScalarValue::FixedSizeList(list) if list.is_valid(0) => list.value(0),
        ScalarValue::List(_) | ScalarValue::LargeList(_) | ScalarValue::FixedSizeList(_) => {
            return Ok(None)
        }
        ScalarValue::Null => return Ok(None),
        other => return exec_err!("expected an ARRAY, not {}", other.data_type()),
    };
    (0..array.len())
        .map(|i| ScalarValue::try_from_array(&array, i))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The entries of a MAP value in their order, `None` when it is null.
pub(crate) fn map_entries(value: &ScalarValue) -> Result<Option<Vec<(ScalarValue, ScalarValue)>>> {
    let map = match value {
        ScalarValue::Map(map) if map.is_valid(0) => map.value(0),
        ScalarValue::Map(_) | ScalarValue::Null => return Ok(None),
        other => return exec_err!("expected a MAP, not {}", other.data_type()),
    };
    let (keys, values) = (map.column(0), map.column(1));
    (0..map.len())
        .map(|i| {
            Ok((
                ScalarValue::try_from_array(keys, i)?,
                ScalarValue::try_from_array(values, i)?,
            ))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// The element type of an ARRAY type.
pub(crate) fn element_type(data_type: &DataType) -> Option<&DataType> {
    match data_type {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            Some(f.data_type())
        }
        _ => None,
    }
}

/// The key and value types of a MAP type.
pub(crate) fn entry_types(data_type: &DataType) -> Option<(&DataType, &DataType)> {
    match data_type {
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) if fields.len() == 2 => {
                Some((fields[0].data_type(), fields[1].data_type()))
            }
            _ => None,
        },
        _ => None,
    }
}

/// An ARRAY type of `element`, as Eddy's types spell it.
pub(crate) fn list_type(element: DataType) -> DataType {
    SqlType::Array(Box::new(sql_or_string(&element))).arrow()
}

/// A MAP type from `key` to `value`, as Eddy's types spell it.
pub(crate) fn map_type(key: DataType, value: DataType) -> DataType {
    SqlType::Map(
        Box::new(sql_or_string(&key)),
        Box::new(sql_or_string(&value)),
    )
    .arrow()
}

fn sql_or_string(data_type: &DataType) -> SqlType {
    SqlType::from_arrow(data_type).unwrap_or(SqlType::String)
}

/// An ARRAY value of the `list` type holding `items` (null when `None`).
pub(crate) fn list_value(items: Option<Vec<ScalarValue>>, list: &DataType) -> Result<ScalarValue> {
    let Some(element) = element_type(list) else {
        return exec_err!("{list} is not an ARRAY type");
    };
    match items {
        None => ScalarValue::try_from(list),
        Some(items) => Ok(ScalarValue::List(ScalarValue::new_list_nullable(
            &items, element,
        ))),
    }
}

/// A MAP value of the `map` type holding `entries` in their order (null when `None`).
pub(crate) fn map_value(
    entries: Option<Vec<(ScalarValue, ScalarValue)>>,
    map: &DataType,
) -> Result<ScalarValue> {
    let DataType::Map(entries_field, sorted) = map else {
        return exec_err!("{map} is not a MAP type");
    };
    let DataType::Struct(fields) = entries_field.data_type() else {
        return exec_err!("{map} is not a MAP type");
    };
    let column = |values: Vec<ScalarValue>, field: &Field| -> Result<ArrayRef> {
        if values.is_empty() {
            Ok(new_empty_array(field.data_type()))
        } else {
            ScalarValue::iter_to_array(values)
        }
    };
    let (valid, entries) = match entries {
        Some(entries) => (true, entries),
        None => (false, Vec::new()),
    };
    let count = entries.len();
    let (keys, values): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
    let columns = vec![column(keys, &fields[0])?, column(values, &fields[1])?];
    let fields: Fields = fields.clone();
    let entries = StructArray::try_new(fields, columns, None)?;
    let offsets = OffsetBuffer::from_lengths([count]);
    let nulls = (!valid).then(|| NullBuffer::new_null(1));
    let map = MapArray::try_new(entries_field.clone(), offsets, entries, nulls, *sorted)?;
    Ok(ScalarValue::Map(Arc::new(map)))
}

/// A field of the given name and type, nullable, for building struct types.
pub(crate) fn field(name: &str, data_type: DataType) -> Arc<Field> {
    Arc::new(Field::new(name, data_type, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_maps_round_trip_through_scalars() {
        let list = list_type(DataType::Int32);
        let value = list_value(
            Some(vec![ScalarValue::Int32(Some(1)), ScalarValue::Int32(None)]),
            &list,
        )
        .unwrap();
        assert_eq!(
            list_items(&value).unwrap(),
            Some(vec![ScalarValue::Int32(Some(1)), ScalarValue::Int32(None)])
        );
        assert_eq!(list_items(&list_value(None, &list).unwrap()).unwrap(), None);

        let map = map_type(DataType::Utf8, DataType::Int64);
        let entries = vec![
            (ScalarValue::from("b"), ScalarValue::Int64(Some(2))),
            (ScalarValue::from("a"), ScalarValue::Int64(None)),
        ];
        let value = map_value(Some(entries.clone()), &map).unwrap();
        assert_eq!(value.data_type(), map);
        assert_eq!(map_entries(&value).unwrap(), Some(entries));
        assert_eq!(
            map_entries(&map_value(Some(vec![]), &map).unwrap()).unwrap(),
            Some(vec![])
        );
        assert_eq!(map_entries(&map_value(None, &map).unwrap()).unwrap(), None);
    }
}
