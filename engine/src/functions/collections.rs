//! ksqlDB's ARRAY and MAP functions that DataFusion lacks or defines otherwise: SLICE
//! (1-based, inclusive, null when out of range), ARRAY_REMOVE (nulls too), ARRAY_JOIN
//! (elements as Java prints them, null as "null"), GENERATE_SERIES (descending too; at most
//! [`SERIES_LENGTH_MAX`] elements), ENTRIES, AS_MAP and MAP_UNION.

use datafusion::arrow::datatypes::{DataType, Fields};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::ScalarUDF;

use super::rowwise::{
    self, element_type, entry_types, field, integer, is_text, list_items, list_type, list_value,
    map_entries, map_type, map_value, refuse, text,
};

/// The most elements GENERATE_SERIES makes (`sql.function.generate_series.length.max`,
/// fixed): a larger series fails the row, rather than exhausting memory.
pub(crate) const SERIES_LENGTH_MAX: i64 = 1_000_000;

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    vec![
        rowwise::udf("slice", slice_type, slice),
        rowwise::udf("array_remove", remove_type, remove),
        rowwise::udf("array_join", join_type, join),
        rowwise::udf("generate_series", series_type, series),
        rowwise::udf("entries", entries_type, entries),
        rowwise::udf("as_map", as_map_type, as_map),
        rowwise::udf("map_union", union_type, union),
    ]
}

fn is_integer(data_type: &DataType) -> bool {
    data_type.is_integer() || *data_type == DataType::Null
}

fn slice_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [list, from, to] if element_type(list).is_some() && is_integer(from) && is_integer(to) => {
            Ok(list.clone())
        }
        _ => refuse(name, arguments),
    }
}

/// SLICE(array, from, to): elements `from` to `to`, 1-based and inclusive (a null bound is
/// the array's end); null when the range is not inside the array.
fn slice(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let Some(items) = list_items(&values[0])? else {
        return list_value(None, returns);
    };
    let start = integer(&values[1]).map_or(0, |from| from - 1);
    let end = integer(&values[2]).unwrap_or(items.len() as i64);
    if start < 0 || end > items.len() as i64 || start > end {
        return list_value(None, returns);
    }
    list_value(Some(items[start as usize..end as usize].to_vec()), returns)
}

fn remove_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [list, _] if element_type(list).is_some() => Ok(list.clone()),
        _ => refuse(name, arguments),
    }
}

/// ARRAY_REMOVE(array, victim): the array without the elements equal to `victim` (without
/// its nulls when `victim` is null).
fn remove(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let Some(items) = list_items(&values[0])? else {
        return list_value(None, returns);
    };
    let victim = &values[1];
    let kept = items
        .into_iter()
        .filter(|item| {
            if victim.is_null() || item.is_null() {
                return victim.is_null() != item.is_null();
            }
            match victim.cast_to(&item.data_type()) {
                Ok(victim) => *item != victim,
                Err(_) => true,
            }
        })
        .collect();
    list_value(Some(kept), returns)
}

fn join_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [list] | [list, _] if element_type(list).is_none() => refuse(name, arguments),
        [_] => Ok(DataType::Utf8),
        [_, delimiter] if is_text(delimiter) => Ok(DataType::Utf8),
        _ => refuse(name, arguments),
    }
}

/// ARRAY_JOIN(array[, delimiter]): the elements as text joined by the delimiter (',' when
/// not given, nothing when null).
fn join(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let Some(items) = list_items(&values[0])? else {
        return Ok(ScalarValue::Utf8(None));
    };
    let delimiter = values.get(1).map_or(Some(","), text).unwrap_or("");
    let parts: Vec<String> = items.iter().map(java_text).collect::<Result<_>>()?;
    Ok(ScalarValue::Utf8(Some(parts.join(delimiter))))
}

/// A primitive value as Java's `String.valueOf` prints it.
fn java_text(value: &ScalarValue) -> Result<String> {
    if value.is_null() {
        return Ok("null".to_string());
    }
    Ok(match value {
        ScalarValue::Float64(Some(v)) => crate::formats::java_double(*v),
        ScalarValue::Float32(Some(v)) => crate::formats::java_double(f64::from(*v)),
        value => match text(value) {
            Some(s) => s.to_string(),
            None => value.to_string(),
        },
    })
}

fn series_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    let element = match arguments.first() {
        Some(DataType::Int64) => DataType::Int64,
        _ => DataType::Int32,
    };
    match arguments {
        [from, to] if is_integer(from) && is_integer(to) => Ok(list_type(element)),
        [from, to, step] if is_integer(from) && is_integer(to) && is_integer(step) => {
            Ok(list_type(element))
        }
        _ => refuse(name, arguments),
    }
}

/// GENERATE_SERIES(from, to[, step]): `from` to `to` inclusive, counting down when `to` is
/// below `from`; the step's sign must lead from one to the other.
fn series(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let bounds: Option<Vec<i64>> = values.iter().map(integer).collect();
    let Some(bounds) = bounds else {
        return list_value(None, returns);
    };
    let (from, to) = (bounds[0], bounds[1]);
    let step = bounds
        .get(2)
        .copied()
        .unwrap_or(if to >= from { 1 } else { -1 });
    if step == 0 || (to > from && step < 0) || (to < from && step > 0) {
        return exec_err!("GENERATE_SERIES step {step} does not lead from {from} to {to}");
    }
    let length = (to - from) / step + 1;
    if length > SERIES_LENGTH_MAX {
        return exec_err!(
            "GENERATE_SERIES would make {length} elements, over the limit of \
             {SERIES_LENGTH_MAX} (sql.function.generate_series.length.max)"
        );
    }
    let int32 = element_type(returns) == Some(&DataType::Int32);
    let items = (0..length)
        .map(|i| from + i * step)
        .map(|v| {
            if int32 {
                ScalarValue::Int32(Some(v as i32))
            } else {
                ScalarValue::Int64(Some(v))
            }
        })
        .collect();
    list_value(Some(items), returns)
}

fn entries_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [map, sorted] if matches!(sorted, DataType::Boolean | DataType::Null) => {
            match entry_types(map) {
                Some((key, value)) => {
                    let fields =
                        Fields::from(vec![field("K", key.clone()), field("V", value.clone())]);
                    Ok(DataType::List(field("item", DataType::Struct(fields))))
                }
                None => refuse(name, arguments),
            }
        }
        _ => refuse(name, arguments),
    }
}

/// ENTRIES(map, sorted): the map's entries as structs `{K, V}`, sorted by key when asked.
fn entries(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let Some(mut entries) = map_entries(&values[0])? else {
        return list_value(None, returns);
    };
    if values[1] == ScalarValue::Boolean(Some(true)) {
        entries.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    }
    let Some(DataType::Struct(fields)) = element_type(returns) else {
        return exec_err!("ENTRIES returns an ARRAY of STRUCT, not {returns}");
    };
    let items = entries
        .into_iter()
        .map(|(k, v)| {
            let array = datafusion::arrow::array::StructArray::try_new(
                fields.clone(),
                vec![k.to_array()?, v.to_array()?],
                None,
            )?;
            Ok(ScalarValue::Struct(std::sync::Arc::new(array)))
        })
        .collect::<Result<Vec<_>>>()?;
    list_value(Some(items), returns)
}

fn as_map_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [keys, values] => match (element_type(keys), element_type(values)) {
            (Some(key), Some(value)) if is_text(key) => Ok(map_type(DataType::Utf8, value.clone())),
            _ => refuse(name, arguments),
        },
        _ => refuse(name, arguments),
    }
}

/// AS_MAP(keys, values): the map from each key to the value at its position (null when the
/// values run out); a null key is left out.
fn as_map(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let (Some(keys), Some(items)) = (list_items(&values[0])?, list_items(&values[1])?) else {
        return map_value(None, returns);
    };
    let Some((_, value_type)) = entry_types(returns) else {
        return exec_err!("AS_MAP returns a MAP, not {returns}");
    };
    let mut entries: Vec<(ScalarValue, ScalarValue)> = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        if key.is_null() {
            continue;
        }
        let value = match items.get(i) {
            Some(value) => value.clone(),
            None => ScalarValue::try_from(value_type)?,
        };
        entries.retain(|(k, _)| *k != key);
        entries.push((key, value));
    }
    map_value(Some(entries), returns)
}

fn union_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [a, b] if entry_types(a).is_some() && entry_types(a) == entry_types(b) => Ok(a.clone()),
        _ => refuse(name, arguments),
    }
}

/// MAP_UNION(a, b): the entries of both, `b`'s value where both hold a key; a null map counts
/// as empty, and two give null.
fn union(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let (a, b) = (map_entries(&values[0])?, map_entries(&values[1])?);
    if a.is_none() && b.is_none() {
        return map_value(None, returns);
    }
    let mut entries = a.unwrap_or_default();
    for (key, value) in b.unwrap_or_default() {
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key, value)),
        }
    }
    map_value(Some(entries), returns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(values: &[Option<i32>]) -> ScalarValue {
        let items = values.iter().map(|v| ScalarValue::Int32(*v)).collect();
        list_value(Some(items), &list_type(DataType::Int32)).unwrap()
    }

    #[test]
    fn slice_and_remove_as_ksqldb() {
        let list = list_type(DataType::Int32);
        let one_two_three = ints(&[Some(1), Some(2), Some(3)]);
        let bound = |n| ScalarValue::Int32(Some(n));
        assert_eq!(
            slice(&[one_two_three.clone(), bound(2), bound(3)], &list).unwrap(),
            ints(&[Some(2), Some(3)])
        );
        assert!(slice(&[one_two_three.clone(), bound(2), bound(4)], &list)
            .unwrap()
            .is_null());
        let with_null = ints(&[None, Some(1), Some(1)]);
        assert_eq!(
            remove(&[with_null.clone(), ScalarValue::Int32(None)], &list).unwrap(),
            ints(&[Some(1), Some(1)])
        );
        assert_eq!(
            remove(&[with_null, ScalarValue::Int64(Some(1))], &list).unwrap(),
            ints(&[None])
        );
    }

    #[test]
    fn series_count_both_ways_within_the_limit() {
        let list = list_type(DataType::Int32);
        let bound = |n| ScalarValue::Int32(Some(n));
        assert_eq!(
            series(&[bound(4), bound(2)], &list).unwrap(),
            ints(&[Some(4), Some(3), Some(2)])
        );
        assert!(series(&[bound(0), bound(i32::MAX)], &list).is_err());
        assert!(series(&[bound(0), bound(3), bound(-1)], &list).is_err());
    }

    #[test]
    fn joins_print_elements_as_java() {
        let doubles = list_value(
            Some(vec![
                ScalarValue::Float64(Some(0.0)),
                ScalarValue::Float64(None),
            ]),
            &list_type(DataType::Float64),
        )
        .unwrap();
        assert_eq!(
            join(&[doubles, ScalarValue::from("|")], &DataType::Utf8).unwrap(),
            ScalarValue::from("0.0|null")
        );
    }
}
