//! Serialization formats of record keys and values: JSON, DELIMITED, KAFKA and NONE.
//!
//! Rows are handled here as `serde_json::Value`s in column order; JSON field names are written
//! upper case (the declared names) and read case-insensitively, as ksqlDB does. KAFKA writes
//! primitives as Kafka's Java serializers do (big-endian integers and doubles, UTF-8 strings).

use serde_json::Value;

use crate::catalog::KeyWindow;
use crate::error::{EngineError, Result};
use crate::parser::ColumnDef;
use crate::types::SqlType;

/// A key or value format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    /// DELIMITED with its delimiter.
    Delimited(char),
    Kafka,
    /// No bytes (keyless streams).
    None,
}

impl Format {
    /// Parses a format name; AVRO, PROTOBUF and JSON_SR are refused with the reason.
    pub fn parse(name: &str) -> Result<Format> {
        match name.to_uppercase().as_str() {
            "JSON" => Ok(Format::Json),
            "DELIMITED" => Ok(Format::Delimited(',')),
            "KAFKA" => Ok(Format::Kafka),
            "NONE" => Ok(Format::None),
            other @ ("AVRO" | "PROTOBUF" | "PROTOBUF_NOSR" | "JSON_SR") => {
                Err(EngineError::Unsupported(format!(
                    "format {other} needs a schema registry, which Eddy leaves out"
                )))
            }
            other => Err(EngineError::Plan(format!(
                "unknown format '{other}': use JSON, DELIMITED, KAFKA or NONE"
            ))),
        }
    }

    /// The format's name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Delimited(_) => "DELIMITED",
            Format::Kafka => "KAFKA",
            Format::None => "NONE",
        }
    }
}

/// `VALUE_DELIMITER`: one character, or TAB / SPACE.
pub fn parse_delimiter(text: &str) -> Result<char> {
    match text.to_uppercase().as_str() {
        "TAB" => Ok('\t'),
        "SPACE" => Ok(' '),
        _ if text.trim().is_empty() => Err(EngineError::Plan(
            "Failed to prepare statement: Configuration VALUE_DELIMITER is invalid: Delimiter \
             cannot be empty, if you meant to have a tab or space for delimiter, please use the \
             special values 'TAB' or 'SPACE'\nExample valid value: ';'"
                .into(),
        )),
        _ => {
            let mut chars = text.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(c),
                _ => Err(EngineError::Plan(format!(
                    "Failed to prepare statement: Configuration VALUE_DELIMITER is invalid: \
                     Invalid delimiter value: '{text}'. Delimiter must be a single character or \
                     TAB,SPACE\nExample valid value: ';'"
                ))),
            }
        }
    }
}

/// Serializes `values` (one per column of `columns`) in `format`. `None` means no bytes (null).
pub fn encode(
    format: Format,
    columns: &[&ColumnDef],
    values: &[Value],
    wrap_single_value: bool,
) -> Result<Option<Vec<u8>>> {
    assert_eq!(columns.len(), values.len(), "one value per column");
    match format {
        Format::None => Ok(None),
        Format::Json => {
            if columns.len() == 1 && !wrap_single_value {
                return Ok(Some(serde_json::to_vec(&values[0]).map_err(internal)?));
            }
            // Written by hand so fields keep the columns' order (serde_json's map sorts them).
            let mut out = Vec::with_capacity(16 * columns.len());
            out.push(b'{');
            for (i, (column, value)) in columns.iter().zip(values).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, &column.name).map_err(internal)?;
                out.push(b':');
                serde_json::to_writer(&mut out, value).map_err(internal)?;
            }
            out.push(b'}');
            Ok(Some(out))
        }
        Format::Delimited(delimiter) => {
            let fields: Vec<String> = values
                .iter()
                .map(|value| quote_delimited(delimited_text(value), delimiter))
                .collect();
            Ok(Some(fields.join(&delimiter.to_string()).into_bytes()))
        }
        Format::Kafka => {
            if columns.len() != 1 {
                return Err(EngineError::Plan(format!(
                    "the KAFKA format holds one column, not {}",
                    columns.len()
                )));
            }
            kafka_bytes(&columns[0].data_type, &values[0])
        }
    }
}

/// Deserializes bytes in `format` into one value per column (null when absent). BYTES come
/// out as hex text, which Arrow's JSON reader takes (ksqlDB's formats hold them as base64).
pub fn decode(
    format: Format,
    columns: &[&ColumnDef],
    bytes: Option<&[u8]>,
    wrap_single_value: bool,
) -> Result<Vec<Value>, String> {
    let mut values = decode_values(format, columns, bytes, wrap_single_value)?;
    for (value, column) in values.iter_mut().zip(columns) {
        if column.data_type.contains_bytes() {
            base64_to_hex(value, &column.data_type)?;
        }
    }
    Ok(values)
}

/// BYTES inside `value`, of `data_type`, from base64 text to hex text.
fn base64_to_hex(value: &mut Value, data_type: &SqlType) -> Result<(), String> {
    use base64::Engine as _;
    match (data_type, value) {
        (SqlType::Bytes, Value::String(text)) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| format!("BYTES must be base64 text: {e}"))?;
            *text = hex::encode(bytes);
        }
        (SqlType::Array(item), Value::Array(items)) => {
            for item_value in items {
                base64_to_hex(item_value, item)?;
            }
        }
        (SqlType::Map(_, item), Value::Object(entries)) => {
            for entry in entries.values_mut() {
                base64_to_hex(entry, item)?;
            }
        }
        (SqlType::Struct(fields), Value::Object(entries)) => {
            for (name, field_type) in fields {
                let found = entries
                    .iter_mut()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name));
                if let Some((_, field_value)) = found {
                    base64_to_hex(field_value, field_type)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn decode_values(
    format: Format,
    columns: &[&ColumnDef],
    bytes: Option<&[u8]>,
    wrap_single_value: bool,
) -> Result<Vec<Value>, String> {
    let Some(bytes) = bytes else {
        return Ok(vec![Value::Null; columns.len()]);
    };
    if columns.is_empty() {
        // Nothing to read: a keyless source ignores its records' keys.
        return Ok(Vec::new());
    }
    match format {
        Format::None => Ok(vec![Value::Null; columns.len()]),
        Format::Json => {
            let mut values = decode_json(columns, bytes, wrap_single_value)?;
            for (value, column) in values.iter_mut().zip(columns) {
                if column.data_type.contains_struct() {
                    struct_field_names(value, &column.data_type);
                }
            }
            Ok(values)
        }
        Format::Delimited(delimiter) => {
            let text = std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {e}"))?;
            let fields = split_delimited(text, delimiter)?;
            if fields.len() != columns.len() {
                return Err(format!(
                    "expected {} fields, found {}",
                    columns.len(),
                    fields.len()
                ));
            }
            Ok(fields
                .iter()
                .zip(columns)
                .map(|(f, c)| delimited_value(f, &c.data_type))
                .collect())
        }
        Format::Kafka => {
            let [column] = columns else {
                return Err(format!(
                    "the KAFKA format holds one column, not {}",
                    columns.len()
                ));
            };
            Ok(vec![kafka_value(&column.data_type, bytes)?])
        }
    }
}

/// A JSON value's columns: the object's fields by name (case aside), or the whole value for
/// one unwrapped column.
fn decode_json(
    columns: &[&ColumnDef],
    bytes: &[u8],
    wrap_single_value: bool,
) -> Result<Vec<Value>, String> {
    if columns.len() > 1 || wrap_single_value {
        // The common case, read straight into the columns; anything unusual takes
        // the general path below, which also words its errors.
        let mut reader = serde_json::Deserializer::from_slice(bytes);
        let picked = serde::de::DeserializeSeed::deserialize(JsonColumns(columns), &mut reader);
        if let (Ok(values), Ok(())) = (picked, reader.end()) {
            return Ok(values);
        }
    }
    let parsed: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    if columns.len() == 1 && !wrap_single_value {
        return Ok(vec![parsed]);
    }
    let Value::Object(object) = parsed else {
        return Err(format!("expected a JSON object, found {parsed}"));
    };
    Ok(columns
        .iter()
        .map(|c| {
            object
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&c.name))
                .map(|(_, v)| v.clone())
                .unwrap_or(Value::Null)
        })
        .collect())
}

/// Renames the fields of the structs in `value` to their declared names: ksqlDB matches
/// struct fields ignoring case, as it does columns.
fn struct_field_names(value: &mut Value, data_type: &SqlType) {
    match (data_type, value) {
        (SqlType::Struct(fields), Value::Object(object)) => {
            for (name, field_type) in fields {
                if !object.contains_key(name) {
                    let given = object
                        .keys()
                        .find(|k| k.eq_ignore_ascii_case(name))
                        .cloned();
                    if let Some(field) = given.and_then(|k| object.remove(&k)) {
                        object.insert(name.clone(), field);
                    }
                }
                if let Some(field) = object.get_mut(name) {
                    struct_field_names(field, field_type);
                }
            }
        }
        (SqlType::Array(item), Value::Array(items)) => {
            for element in items {
                struct_field_names(element, item);
            }
        }
        (SqlType::Map(_, item), Value::Object(entries)) => {
            for element in entries.values_mut() {
                struct_field_names(element, item);
            }
        }
        _ => {}
    }
}

/// The fields of a DELIMITED line, read as CSV is: a field in double quotes may hold the
/// delimiter, and `""` inside it is one quote.
fn split_delimited(text: &str, delimiter: char) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_field_start => quoted = true,
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' if quoted => {
                quoted = false;
                if chars.peek().is_some_and(|next| *next != delimiter) {
                    return Err(format!(
                        "unexpected characters after a closing quote in '{text}'"
                    ));
                }
            }
            c if c == delimiter && !quoted => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
                continue;
            }
            c => field.push(c),
        }
        at_field_start = false;
    }
    if quoted {
        return Err(format!("an opening quote is never closed in '{text}'"));
    }
    fields.push(field);
    Ok(fields)
}

/// A DELIMITED field as CSV writes it: quoted when it holds the delimiter, a quote or a line
/// break.
fn quote_delimited(text: String, delimiter: char) -> String {
    if text.contains([delimiter, '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::Internal(e.to_string())
}

fn delimited_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => java_double(n.as_f64().unwrap_or_default()),
        other => other.to_string(),
    }
}

/// Prints a double as Java's `Double.toString` does (`1.0`, `1.0E10`).
pub fn java_double(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e7 {
        return format!("{value:.1}");
    }
    let abs = value.abs();
    if abs >= 1e7 || (abs < 1e-3 && abs > 0.0) {
        let formatted = format!("{value:E}");
        let (mantissa, exponent) = formatted.split_once('E').unwrap_or((&formatted, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        return format!("{mantissa}E{exponent}");
    }
    value.to_string()
}

fn delimited_value(field: &str, data_type: &SqlType) -> Value {
    if field.is_empty() {
        return Value::Null;
    }
    match data_type {
        SqlType::Int | SqlType::Bigint => field
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or(Value::Null),
        SqlType::Double => field
            .trim()
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or(Value::Null),
        SqlType::Boolean => Value::Bool(field.trim().eq_ignore_ascii_case("true")),
        // Days, milliseconds of the day, epoch milliseconds, as ksqlDB writes them.
        SqlType::Date | SqlType::Time | SqlType::Timestamp => match field.trim().parse::<i64>() {
            Ok(number) => Value::from(number),
            Err(_) => Value::String(field.to_string()),
        },
        _ => Value::String(field.to_string()),
    }
}

fn kafka_bytes(data_type: &SqlType, value: &Value) -> Result<Option<Vec<u8>>> {
    if value.is_null() {
        return Ok(None);
    }
    let bad = || EngineError::Plan(format!("value {value} does not fit KAFKA type {data_type}"));
    Ok(Some(match data_type {
        SqlType::Int => (value.as_i64().ok_or_else(bad)? as i32)
            .to_be_bytes()
            .to_vec(),
        SqlType::Bigint => value.as_i64().ok_or_else(bad)?.to_be_bytes().to_vec(),
        SqlType::Double => value.as_f64().ok_or_else(bad)?.to_be_bytes().to_vec(),
        SqlType::String => match value {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        },
        SqlType::Bytes => {
            use base64::Engine as _;
            let text = value.as_str().ok_or_else(bad)?;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| bad())?
        }
        other => {
            return Err(EngineError::Plan(format!(
                "the KAFKA format does not support {other}"
            )))
        }
    }))
}

fn kafka_value(data_type: &SqlType, bytes: &[u8]) -> Result<Value, String> {
    let wrong = |n: usize| format!("expected {n} bytes for {data_type}, found {}", bytes.len());
    Ok(match data_type {
        SqlType::Int => Value::from(i32::from_be_bytes(bytes.try_into().map_err(|_| wrong(4))?)),
        SqlType::Bigint => Value::from(i64::from_be_bytes(bytes.try_into().map_err(|_| wrong(8))?)),
        SqlType::Double => Value::from(f64::from_be_bytes(bytes.try_into().map_err(|_| wrong(8))?)),
        SqlType::String => {
            Value::String(String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())?)
        }
        SqlType::Bytes => {
            use base64::Engine as _;
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        other => return Err(format!("the KAFKA format does not support {other}")),
    })
}

/// Reads a JSON object's fields into `columns`' order, matching names as ksqlDB does (case
/// does not matter; a field spelled exactly like the column wins over one that differs in
/// case), and skipping the fields no column asks for without building them.
struct JsonColumns<'a>(&'a [&'a ColumnDef]);

impl<'de> serde::de::DeserializeSeed<'de> for JsonColumns<'_> {
    type Value = Vec<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Vec<Value>, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonColumns<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Vec<Value>, M::Error> {
        let mut values = vec![Value::Null; self.0.len()];
        let mut exact = vec![false; self.0.len()];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            // One pass: the first case-insensitive match, unless a later column is exact.
            let mut found = None;
            for (i, column) in self.0.iter().enumerate() {
                if column.name.eq_ignore_ascii_case(&key) {
                    let is_exact = column.name == *key;
                    if found.is_none() || is_exact {
                        found = Some((i, is_exact));
                    }
                    if is_exact {
                        break;
                    }
                }
            }
            match found {
                Some((i, is_exact)) if is_exact || !exact[i] => {
                    values[i] = map.next_value()?;
                    exact[i] = is_exact;
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, data_type: SqlType) -> ColumnDef {
        ColumnDef {
            name: name.into(),
            data_type,
            key: false,
            header: None,
        }
    }

    #[test]
    fn json_round_trips_with_upper_case_names_and_case_insensitive_reads() {
        let columns = [column("ID", SqlType::Int), column("NAME", SqlType::String)];
        let refs: Vec<&ColumnDef> = columns.iter().collect();
        let bytes = encode(
            Format::Json,
            &refs,
            &[Value::from(1), Value::from("a")],
            true,
        )
        .expect("encode")
        .expect("bytes");
        assert_eq!(
            String::from_utf8(bytes).expect("utf-8"),
            r#"{"ID":1,"NAME":"a"}"#
        );
        let read = decode(
            Format::Json,
            &refs,
            Some(br#"{"id": 2, "Name": "b"}"#),
            true,
        )
        .expect("decode");
        assert_eq!(read, vec![Value::from(2), Value::from("b")]);
    }

    #[test]
    fn delimited_prints_doubles_as_java_does() {
        assert_eq!(java_double(1.0), "1.0");
        assert_eq!(java_double(1.5), "1.5");
        assert_eq!(java_double(1e10), "1.0E10");
        let columns = [column("A", SqlType::Double), column("B", SqlType::String)];
        let refs: Vec<&ColumnDef> = columns.iter().collect();
        let bytes = encode(
            Format::Delimited(','),
            &refs,
            &[Value::from(2.0), Value::Null],
            true,
        )
        .expect("encode")
        .expect("bytes");
        assert_eq!(bytes, b"2.0,");
    }

    #[test]
    fn kafka_primitives_are_java_serializer_bytes() {
        let columns = [column("K", SqlType::Bigint)];
        let refs: Vec<&ColumnDef> = columns.iter().collect();
        let bytes = encode(Format::Kafka, &refs, &[Value::from(258)], true)
            .expect("encode")
            .expect("bytes");
        assert_eq!(bytes, 258i64.to_be_bytes());
        assert_eq!(
            decode(Format::Kafka, &refs, Some(&bytes), true).expect("decode"),
            vec![Value::from(258)]
        );
        assert!(Format::parse("AVRO").is_err());
    }
}

/// A windowed key's bytes: the key's own bytes followed by the window, as Kafka Streams'
/// `TimeWindowedSerializer` (start) and `SessionWindowedSerializer` (end, then start) write it.
pub fn windowed_key(key: Option<&[u8]>, window: KeyWindow, start: i64, end: i64) -> Vec<u8> {
    let key = key.unwrap_or_default();
    let mut out = Vec::with_capacity(key.len() + 16);
    out.extend_from_slice(key);
    match window {
        KeyWindow::Time { .. } => out.extend_from_slice(&start.to_be_bytes()),
        KeyWindow::Session => {
            out.extend_from_slice(&end.to_be_bytes());
            out.extend_from_slice(&start.to_be_bytes());
        }
    }
    out
}

/// Splits a windowed key into the key's own bytes and the window's start and end.
pub fn split_windowed_key(bytes: &[u8], window: KeyWindow) -> Result<(&[u8], i64, i64), String> {
    let suffix = match window {
        KeyWindow::Time { .. } => 8,
        KeyWindow::Session => 16,
    };
    if bytes.len() < suffix {
        return Err(format!(
            "a windowed key needs at least {suffix} bytes, found {}",
            bytes.len()
        ));
    }
    let (key, tail) = bytes.split_at(bytes.len() - suffix);
    let long = |b: &[u8]| i64::from_be_bytes(b.try_into().expect("8 bytes"));
    Ok(match window {
        KeyWindow::Time { size_ms, .. } => {
            let start = long(tail);
            (key, start, start.saturating_add(size_ms))
        }
        KeyWindow::Session => (key, long(&tail[8..]), long(&tail[..8])),
    })
}

#[cfg(test)]
mod delimited_tests {
    use super::{quote_delimited, split_delimited};

    #[test]
    fn quoted_fields_hold_delimiters_and_quotes() {
        assert_eq!(
            split_delimited(r#"1,"a,b","say ""hi""",,"22""#, ',').unwrap(),
            ["1", "a,b", r#"say "hi""#, "", "22"]
        );
        assert!(split_delimited(r#""open,1"#, ',').is_err());
        assert_eq!(quote_delimited("a,b".into(), ','), r#""a,b""#);
        assert_eq!(quote_delimited("a|b".into(), ','), "a|b");
    }
}
