//! LPAD and RPAD as ksqlDB has them, over STRING and BYTES: `LPAD(input, length, padding)`
//! repeats `padding` before `input` (RPAD after it) up to `length` characters (bytes for
//! BYTES), and a longer input is cut to its first `length`. A null argument, a negative
//! length or an empty padding gives null. DataFusion's own LPAD panics on a negative length,
//! and any length allocates its result: a length over [`PAD_LENGTH_MAX`] fails the row.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, Int64Array, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The longest result LPAD and RPAD build: a record batch's size
/// (`sql.function.pad.length.max`, fixed).
pub(crate) const PAD_LENGTH_MAX: i64 = 1024 * 1024;

#[derive(Debug, PartialEq, Eq, Hash)]
struct Pad {
    name: &'static str,
    /// Padding before the input (LPAD) or after it (RPAD).
    left: bool,
    signature: Signature,
}

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    [("lpad", true), ("rpad", false)]
        .into_iter()
        .map(|(name, left)| {
            ScalarUDF::new_from_impl(Pad {
                name,
                left,
                signature: Signature::variadic_any(Volatility::Immutable),
            })
        })
        .collect()
}

impl ScalarUDFImpl for Pad {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arguments: &[DataType]) -> Result<DataType> {
        let name = self.name.to_uppercase();
        let [input, length, padding] = arguments else {
            return plan_err!("{name} takes an input, a length and a padding");
        };
        if !length.is_integer() && *length != DataType::Null {
            return plan_err!("{name}'s length must be an INTEGER, not {length}");
        }
        match (kind(input), kind(padding)) {
            (Some(DataType::Binary), Some(DataType::Binary)) => Ok(DataType::Binary),
            (Some(DataType::Utf8), Some(DataType::Utf8)) => Ok(DataType::Utf8),
            _ => plan_err!(
                "{name} pads a STRING with a STRING or BYTES with BYTES, not {input} with {padding}"
            ),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let lengths = cast(&arrays[1], &DataType::Int64)?;
        let lengths = lengths
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("cast to Int64");
        let length = |row: usize| -> Result<Option<usize>> {
            if lengths.is_null(row) || lengths.value(row) < 0 {
                return Ok(None);
            }
            match lengths.value(row) {
                n if n > PAD_LENGTH_MAX => exec_err!(
                    "{}'s length {n} is over the limit of {PAD_LENGTH_MAX} \
                     (sql.function.pad.length.max)",
                    self.name.to_uppercase()
                ),
                n => Ok(Some(n as usize)),
            }
        };
        let binary = args.return_field.data_type() == &DataType::Binary;
        let target = if binary {
            DataType::Binary
        } else {
            DataType::Utf8
        };
        let input = cast(&arrays[0], &target)?;
        let padding = cast(&arrays[2], &target)?;
        if binary {
            let (input, padding) = (binaries(&input), binaries(&padding));
            fn valid(array: &BinaryArray, row: usize) -> Option<&[u8]> {
                array.is_valid(row).then(|| array.value(row))
            }
            let mut out = BinaryBuilder::with_capacity(rows, 0);
            for row in 0..rows {
                let value = match (valid(input, row), length(row)?, valid(padding, row)) {
                    (Some(i), Some(n), Some(p)) => pad(i, n, p, self.left),
                    _ => None,
                };
                out.append_option(value);
            }
            return Ok(ColumnarValue::Array(Arc::new(out.finish())));
        }
        let (input, padding) = (strings(&input), strings(&padding));
        fn valid(array: &StringArray, row: usize) -> Option<&str> {
            array.is_valid(row).then(|| array.value(row))
        }
        let mut out = StringBuilder::with_capacity(rows, 0);
        for row in 0..rows {
            let value = match (valid(input, row), length(row)?, valid(padding, row)) {
                (Some(i), Some(n), Some(p)) => {
                    let (i, p): (Vec<char>, Vec<char>) = (i.chars().collect(), p.chars().collect());
                    pad(&i, n, &p, self.left).map(String::from_iter)
                }
                _ => None,
            };
            out.append_option(value);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Text or bytes, for a type LPAD and RPAD take.
fn kind(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Some(DataType::Binary),
        DataType::Null => Some(DataType::Utf8),
        _ => None,
    }
}

fn strings(array: &ArrayRef) -> &StringArray {
    array.as_any().downcast_ref().expect("cast to Utf8")
}

fn binaries(array: &ArrayRef) -> &BinaryArray {
    array.as_any().downcast_ref().expect("cast to Binary")
}

/// `input` padded with `padding` to `length` items, before it (`left`) or after it; a longer
/// input cut to its first `length`. None for an empty padding.
fn pad<T: Clone>(input: &[T], length: usize, padding: &[T], left: bool) -> Option<Vec<T>> {
    if padding.is_empty() {
        return None;
    }
    let fill: Vec<T> = padding
        .iter()
        .cycle()
        .take(length.saturating_sub(input.len()))
        .cloned()
        .collect();
    let mut out = Vec::with_capacity(length);
    if left {
        out.extend(fill);
        out.extend_from_slice(input);
    } else {
        out.extend_from_slice(input);
        out.extend(fill);
    }
    out.truncate(length);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str, length: usize, p: &str, left: bool) -> Option<String> {
        let (s, p): (Vec<char>, Vec<char>) = (s.chars().collect(), p.chars().collect());
        pad(&s, length, &p, left).map(String::from_iter)
    }

    #[test]
    fn pads_and_cuts_as_ksqldb_does() {
        assert_eq!(text("foo", 7, "Bar", true).as_deref(), Some("BarBfoo"));
        assert_eq!(text("foo", 5, "Bar", true).as_deref(), Some("Bafoo"));
        assert_eq!(text("foo", 2, "Bar", true).as_deref(), Some("fo"));
        assert_eq!(text("foo", 7, "Bar", false).as_deref(), Some("fooBarB"));
        assert_eq!(text("foo", 2, "Bar", false).as_deref(), Some("fo"));
        assert_eq!(text("foo", 0, "Bar", false).as_deref(), Some(""));
        assert_eq!(text("foo", 5, "", false), None);
        assert_eq!(text("ü", 3, "é", true).as_deref(), Some("ééü"));
        assert_eq!(pad(b"yes", 8, b"no", true), Some(b"nononyes".to_vec()));
        assert_eq!(pad(b"yes", 8, b"no", false), Some(b"yesnonon".to_vec()));
    }
}
