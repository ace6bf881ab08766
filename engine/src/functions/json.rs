//! TO_JSON_STRING(value): any value as JSON text, as ksqlDB writes it: numbers and booleans as
//! they are, strings quoted, BYTES as base64, DATE, TIME and TIMESTAMP as ISO-8601 text
//! (`1972-09-27`, `16:43:40`, `1971-11-28T23:46:40.000`), arrays, structs and maps nested; a
//! null is the text `null`.

use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, NaiveTime};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    Time32MillisecondType, TimeUnit, TimestampMillisecondType,
};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::formats::java_double;

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToJsonString {
    signature: Signature,
}

pub(crate) fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToJsonString {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

impl ScalarUDFImpl for ToJsonString {
    fn name(&self) -> &str {
        "to_json_string"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        match arguments {
            [_] => Ok(DataType::Utf8),
            _ => plan_err!("TO_JSON_STRING takes one value"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let values = ColumnarValue::values_to_arrays(&args.args)?;
        let values = &values[0];
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 8);
        let mut text = String::new();
        for row in 0..values.len() {
            text.clear();
            write_json(&mut text, values, row)?;
            out.append_value(&text);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Writes row `row` of `array` as JSON.
fn write_json(out: &mut String, array: &ArrayRef, row: usize) -> Result<()> {
    if array.is_null(row) {
        out.push_str("null");
        return Ok(());
    }
    match array.data_type() {
        DataType::Null => out.push_str("null"),
        DataType::Boolean => out.push_str(match array.as_boolean().value(row) {
            true => "true",
            false => "false",
        }),
        DataType::Int8 => push(out, array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => push(out, array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => push(out, array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => push(out, array.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => out.push_str(&java_double(
            array.as_primitive::<Float32Type>().value(row).into(),
        )),
        DataType::Float64 => {
            out.push_str(&java_double(array.as_primitive::<Float64Type>().value(row)))
        }
        DataType::Decimal128(..) => {
            let decimal = datafusion::common::ScalarValue::try_from_array(array, row)?;
            push(out, decimal);
        }
        DataType::Utf8 => quote(out, array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => quote(out, array.as_string::<i64>().value(row)),
        DataType::Utf8View => quote(out, array.as_string_view().value(row)),
        DataType::Binary => quote(out, &base64(array.as_binary::<i32>().value(row))),
        DataType::Date32 => {
            let days = array.as_primitive::<Date32Type>().value(row);
            let date = DateTime::from_timestamp(i64::from(days) * 86_400, 0);
            quote(
                out,
                &date
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
            );
        }
        DataType::Time32(TimeUnit::Millisecond) => {
            let ms = array.as_primitive::<Time32MillisecondType>().value(row);
            let seconds = u32::try_from(ms.div_euclid(1000)).unwrap_or(0);
            let nanos = u32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0);
            let time = NaiveTime::from_num_seconds_from_midnight_opt(seconds, nanos);
            let format = if nanos == 0 {
                "%H:%M:%S"
            } else {
                "%H:%M:%S%.3f"
            };
            quote(
                out,
                &time
                    .map(|t| t.format(format).to_string())
                    .unwrap_or_default(),
            );
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let ms = array.as_primitive::<TimestampMillisecondType>().value(row);
            let time = DateTime::from_timestamp_millis(ms);
            let text = time.map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string());
            quote(out, &text.unwrap_or_default());
        }
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(row);
            out.push('[');
            for i in 0..items.len() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, &items, i)?;
            }
            out.push(']');
        }
        DataType::Struct(fields) => {
            let columns = array.as_struct().columns();
            out.push('{');
            for (i, (field, column)) in fields.iter().zip(columns).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                quote(out, field.name());
                out.push(':');
                write_json(out, column, row)?;
            }
            out.push('}');
        }
        DataType::Map(..) => {
            let entries = array.as_map().value(row);
            let (keys, values) = (entries.column(0), entries.column(1));
            out.push('{');
            for i in 0..entries.len() {
                if i > 0 {
                    out.push(',');
                }
                let mut key = String::new();
                write_json(&mut key, keys, i)?;
                match key.starts_with('"') {
                    true => out.push_str(&key),
                    false => quote(out, &key),
                }
                out.push(':');
                write_json(out, values, i)?;
            }
            out.push('}');
        }
        other => return exec_err!("TO_JSON_STRING cannot write a value of type {other}"),
    }
    Ok(())
}

fn push(out: &mut String, value: impl std::fmt::Display) {
    let _ = write!(out, "{value}");
}

fn quote(out: &mut String, text: &str) {
    out.push_str(&serde_json::Value::from(text).to_string());
}

/// Standard base64 with padding, as ksqlDB writes BYTES in JSON.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            match i <= chunk.len() {
                true => out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char),
                false => out.push('='),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, ListArray, StringArray, StructArray};
    use datafusion::arrow::datatypes::{Field, Int32Type as I32};

    fn json(array: ArrayRef) -> Vec<String> {
        (0..array.len())
            .map(|row| {
                let mut out = String::new();
                write_json(&mut out, &array, row).unwrap();
                out
            })
            .collect()
    }

    #[test]
    fn values_as_ksqldb_writes_them() {
        assert_eq!(
            json(Arc::new(Int32Array::from(vec![Some(1), None]))),
            ["1", "null"]
        );
        assert_eq!(
            json(Arc::new(StringArray::from(vec!["a\"b"]))),
            [r#""a\"b""#]
        );
        let list = ListArray::from_iter_primitive::<I32, _, _>([Some(vec![Some(1), None])]);
        assert_eq!(json(Arc::new(list)), ["[1,null]"]);
        let ids: ArrayRef = Arc::new(Int32Array::from(vec![1]));
        let names: ArrayRef = Arc::new(StringArray::from(vec!["Alice"]));
        let person = StructArray::from(vec![
            (Arc::new(Field::new("ID", DataType::Int32, true)), ids),
            (Arc::new(Field::new("NAME", DataType::Utf8, true)), names),
        ]);
        assert_eq!(json(Arc::new(person)), [r#"{"ID":1,"NAME":"Alice"}"#]);
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b"!"), "IQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b""), "");
    }
}
