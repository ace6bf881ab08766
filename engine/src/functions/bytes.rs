//! ksqlDB's conversions between text and BYTES: `TO_BYTES(string, encoding)`,
//! `FROM_BYTES(bytes, encoding)`, `ENCODE(string, from, to)` (text re-encoded) and
//! `INT_FROM_BYTES`, `BIGINT_FROM_BYTES`, `DOUBLE_FROM_BYTES` (big endian unless
//! 'LITTLE_ENDIAN' is given). The encodings are hex, utf8, ascii and base64, in any case. As in
//! ksqlDB a value that does not decode (bad hex, the wrong number of bytes) gives null.

use base64::Engine as _;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::ScalarUDF;

use super::rowwise::{self, bytes, is_bytes, is_text, refuse, text};

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    vec![
        rowwise::udf("to_bytes", to_bytes_type, to_bytes),
        rowwise::udf("from_bytes", from_bytes_type, from_bytes),
        rowwise::udf("encode", encode_type, encode),
        rowwise::udf("int_from_bytes", number_type, int_from_bytes),
        rowwise::udf("bigint_from_bytes", number_type, bigint_from_bytes),
        rowwise::udf("double_from_bytes", number_type, double_from_bytes),
    ]
}

/// A text encoding ksqlDB names.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    Hex,
    Utf8,
    Ascii,
    Base64,
}

impl Encoding {
    fn named(name: &str) -> Result<Encoding> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "hex" => Encoding::Hex,
            "utf8" => Encoding::Utf8,
            "ascii" => Encoding::Ascii,
            "base64" => Encoding::Base64,
            other => {
                return exec_err!(
                    "Supported encoding types are: hex, utf8, ascii and base64, not '{other}'"
                )
            }
        })
    }

    /// The bytes `text` stands for in this encoding.
    fn decode(self, text: &str) -> Result<Vec<u8>> {
        Ok(match self {
            Encoding::Hex => {
                // Java's hex decoding takes an odd length as if a leading 0 were written.
                let padded = if text.len() % 2 == 1 {
                    format!("0{text}")
                } else {
                    text.to_string()
                };
                match hex::decode(padded) {
                    Ok(bytes) => bytes,
                    Err(e) => return exec_err!("'{text}' is not hexadecimal: {e}"),
                }
            }
            Encoding::Utf8 => text.as_bytes().to_vec(),
            // Java encodes a character outside ASCII as '?'.
            Encoding::Ascii => text
                .chars()
                .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
                .collect(),
            Encoding::Base64 => match base64::engine::general_purpose::STANDARD.decode(text) {
                Ok(bytes) => bytes,
                Err(e) => return exec_err!("'{text}' is not base64: {e}"),
            },
        })
    }

    /// `bytes` written in this encoding; hex in `upper` or lower case.
    fn encode(self, bytes: &[u8], upper: bool) -> String {
        match self {
            Encoding::Hex if upper => hex::encode_upper(bytes),
            Encoding::Hex => hex::encode(bytes),
            Encoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            // Java decodes a byte outside ASCII as the replacement character.
            Encoding::Ascii => bytes
                .iter()
                .map(|&b| if b.is_ascii() { b as char } else { '\u{FFFD}' })
                .collect(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

fn to_bytes_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [input, encoding] if is_text(input) && is_text(encoding) => Ok(DataType::Binary),
        _ => refuse(name, arguments),
    }
}

fn to_bytes(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let (Some(input), Some(encoding)) = (text(&values[0]), text(&values[1])) else {
        return Ok(ScalarValue::Binary(None));
    };
    Ok(ScalarValue::Binary(Some(
        Encoding::named(encoding)?.decode(input)?,
    )))
}

fn from_bytes_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [input, encoding] if is_bytes(input) && is_text(encoding) => Ok(DataType::Utf8),
        _ => refuse(name, arguments),
    }
}

fn from_bytes(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let (Some(input), Some(encoding)) = (bytes(&values[0]), text(&values[1])) else {
        return Ok(ScalarValue::Utf8(None));
    };
    Ok(ScalarValue::Utf8(Some(
        Encoding::named(encoding)?.encode(input, true),
    )))
}

fn encode_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [a, b, c] if is_text(a) && is_text(b) && is_text(c) => Ok(DataType::Utf8),
        _ => refuse(name, arguments),
    }
}

fn encode(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let (Some(input), Some(from), Some(to)) =
        (text(&values[0]), text(&values[1]), text(&values[2]))
    else {
        return Ok(ScalarValue::Utf8(None));
    };
    let bytes = Encoding::named(from)?.decode(input)?;
    Ok(ScalarValue::Utf8(Some(
        Encoding::named(to)?.encode(&bytes, false),
    )))
}

fn number_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    let returns = match name {
        "int_from_bytes" => DataType::Int32,
        "bigint_from_bytes" => DataType::Int64,
        _ => DataType::Float64,
    };
    match arguments {
        [input] | [input, _] if !is_bytes(input) => refuse(name, arguments),
        [_] => Ok(returns),
        [_, order] if is_text(order) => Ok(returns),
        _ => refuse(name, arguments),
    }
}

/// The `N` bytes of a number, in big-endian order; `None` for a null argument.
fn number_bytes<const N: usize>(values: &[ScalarValue]) -> Result<Option<[u8; N]>> {
    let Some(input) = bytes(&values[0]) else {
        return Ok(None);
    };
    let little = match values.get(1) {
        None => false,
        Some(order) => match text(order).map(str::to_ascii_uppercase).as_deref() {
            Some("BIG_ENDIAN") => false,
            Some("LITTLE_ENDIAN") => true,
            None => return Ok(None),
            Some(other) => {
                return exec_err!("byte order must be BIG_ENDIAN or LITTLE_ENDIAN, not '{other}'")
            }
        },
    };
    let Ok(mut array) = <[u8; N]>::try_from(input) else {
        return exec_err!("Number has {} bytes, where {N} are needed", input.len());
    };
    if little {
        array.reverse();
    }
    Ok(Some(array))
}

fn int_from_bytes(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    Ok(ScalarValue::Int32(
        number_bytes::<4>(values)?.map(i32::from_be_bytes),
    ))
}

fn bigint_from_bytes(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    Ok(ScalarValue::Int64(
        number_bytes::<8>(values)?.map(i64::from_be_bytes),
    ))
}

fn double_from_bytes(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    Ok(ScalarValue::Float64(
        number_bytes::<8>(values)?.map(f64::from_be_bytes),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_read_and_write_as_ksqldb_does() {
        assert_eq!(Encoding::Hex.decode("1aB2").unwrap(), vec![0x1a, 0xb2]);
        assert_eq!(Encoding::Hex.decode("abc").unwrap(), vec![0x0a, 0xbc]);
        assert!(Encoding::Hex.decode("xyz").is_err());
        assert_eq!(Encoding::Hex.encode(&[0x1a, 0xb2], true), "1AB2");
        assert_eq!(Encoding::Ascii.decode("Ελ!").unwrap(), b"??!".to_vec());
        assert_eq!(Encoding::Ascii.encode(&[0xc3, b'b'], false), "\u{FFFD}b");
        assert_eq!(Encoding::Base64.encode(b"Example!", false), "RXhhbXBsZSE=");
        assert!(Encoding::named("null").is_err());
    }

    #[test]
    fn numbers_read_in_either_byte_order() {
        let big = [ScalarValue::Binary(Some(vec![0, 0, 7, 0xe5]))];
        assert_eq!(
            int_from_bytes(&big, &DataType::Int32).unwrap(),
            ScalarValue::Int32(Some(2021))
        );
        let little = [
            ScalarValue::Binary(Some(vec![0xe5, 7, 0, 0])),
            ScalarValue::from("LITTLE_ENDIAN"),
        ];
        assert_eq!(
            int_from_bytes(&little, &DataType::Int32).unwrap(),
            ScalarValue::Int32(Some(2021))
        );
        assert!(int_from_bytes(&[ScalarValue::Binary(Some(vec![1]))], &DataType::Int32).is_err());
    }
}
