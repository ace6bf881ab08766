//! ksqlDB's functions over JSON held in STRING values: EXTRACTJSONFIELD (a JSON path),
//! IS_JSON_STRING, JSON_ARRAY_CONTAINS, JSON_ARRAY_LENGTH, JSON_CONCAT, JSON_ITEMS, JSON_KEYS
//! and JSON_RECORDS. The text is read by a small parser of its own ([`Json`]) that keeps what
//! these functions print as the input wrote it: the order of an object's keys and the digits
//! of a number (`1.23450` stays so). As Jackson does, the first value is read and anything
//! after it ignored; nesting deeper than [`JSON_DEPTH_MAX`] is not JSON here.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::ScalarUDF;

use super::rowwise::{
    self, integer, is_text, list_type, list_value, map_type, map_value, number, refuse, text,
};

/// The deepest nesting of arrays and objects read (`sql.function.json.depth.max`, fixed).
pub(crate) const JSON_DEPTH_MAX: usize = 128;

pub(crate) fn udfs() -> Vec<ScalarUDF> {
    vec![
        rowwise::udf("extractjsonfield", extract_type, extract),
        rowwise::udf("is_json_string", is_json_type, is_json),
        rowwise::udf("json_array_contains", contains_type, contains),
        rowwise::udf("json_array_length", length_type, length),
        rowwise::udf("json_concat", concat_type, concat),
        rowwise::udf("json_items", items_type, items),
        rowwise::udf("json_keys", keys_type, keys),
        rowwise::udf("json_records", records_type, records),
    ]
}

/// A JSON value as written: a scalar is its text (a string with its quotes and escapes).
#[derive(Debug, Clone, PartialEq)]
enum Json<'a> {
    Scalar(&'a str),
    Array(Vec<Json<'a>>),
    Object(Vec<(String, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// The first JSON value in `text`, `None` when it does not start with one.
    fn parse(text: &'a str) -> Option<Json<'a>> {
        let mut parser = Parser { text, at: 0 };
        parser.value(0)
    }

    /// The value without whitespace, keys and scalars as written.
    fn compact(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Scalar(text) => out.push_str(text),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    /// The value as ksqlDB's functions return it as text: a string without its quotes, JSON
    /// null as null, anything else as compact JSON.
    fn as_text(&self) -> Option<String> {
        match self {
            Json::Scalar("null") => None,
            Json::Scalar(text) if text.starts_with('"') => serde_json::from_str(text).ok(),
            other => Some(other.compact()),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Parser<'a> {
    fn skip_whitespace(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Json<'a>> {
        self.skip_whitespace();
        match self.peek()? {
            b'[' | b'{' if depth >= JSON_DEPTH_MAX => None,
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Some(Json::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b']') {
                        return Some(Json::Array(items));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'{' => {
                self.at += 1;
                let mut entries = Vec::new();
                if self.eat(b'}') {
                    return Some(Json::Object(entries));
                }
                loop {
                    self.skip_whitespace();
                    let key = serde_json::from_str::<String>(self.string()?).ok()?;
                    if !self.eat(b':') {
                        return None;
                    }
                    entries.push((key, self.value(depth + 1)?));
                    if self.eat(b'}') {
                        return Some(Json::Object(entries));
                    }
                    if !self.eat(b',') {
                        return None;
                    }
                }
            }
            b'"' => self.string().map(Json::Scalar),
            _ => {
                let rest = &self.text[self.at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
                    .unwrap_or(rest.len());
                let token = &rest[..end];
                let valid = matches!(token, "true" | "false" | "null")
                    || (token.parse::<f64>().is_ok()
                        && token.starts_with(|c: char| c == '-' || c.is_ascii_digit()));
                if !valid {
                    return None;
                }
                self.at += end;
                Some(Json::Scalar(token))
            }
        }
    }

    /// A string token with its quotes, as written.
    fn string(&mut self) -> Option<&'a str> {
        let bytes = self.text.as_bytes();
        if bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at;
        let mut i = start + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    self.at = i + 1;
                    return Some(&self.text[start..=i]);
                }
                _ => i += 1,
            }
        }
        None
    }
}

/// One step of a JSON path.
#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
}

/// The steps of a path such as `$.a.b[0]['c d']`, `None` when it is not one.
fn path(text: &str) -> Option<Vec<Step>> {
    let mut rest = text.trim().strip_prefix('$')?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            steps.push(Step::Field(after[..end].to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inside = after[..end].trim();
            let quoted = inside
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inside.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
            steps.push(match quoted {
                Some(name) => Step::Field(name.to_string()),
                None => Step::Index(inside.parse().ok()?),
            });
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(steps)
}

fn follow<'j, 'a>(mut json: &'j Json<'a>, steps: &[Step]) -> Option<&'j Json<'a>> {
    for step in steps {
        json = match (json, step) {
            (Json::Object(entries), Step::Field(name)) => {
                &entries.iter().find(|(key, _)| key == name)?.1
            }
            (Json::Array(items), Step::Index(i)) => items.get(usize::try_from(*i).ok()?)?,
            _ => return None,
        };
    }
    Some(json)
}

fn text_arguments(name: &str, arguments: &[DataType], count: usize) -> Result<()> {
    if arguments.len() == count && arguments.iter().all(is_text) {
        Ok(())
    } else {
        refuse(name, arguments)
    }
}

fn extract_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    text_arguments(name, arguments, 2).map(|_| DataType::Utf8)
}

/// EXTRACTJSONFIELD(json, path): the value at the path, as text; null when there is none.
fn extract(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let found = (|| {
        let json = Json::parse(text(&values[0])?)?;
        let steps = path(text(&values[1])?)?;
        follow(&json, &steps)?.as_text()
    })();
    Ok(ScalarValue::Utf8(found))
}

fn is_json_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    text_arguments(name, arguments, 1).map(|_| DataType::Boolean)
}

fn is_json(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let valid = text(&values[0]).and_then(Json::parse).is_some();
    Ok(ScalarValue::Boolean(Some(valid)))
}

fn contains_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    match arguments {
        [json, _] if is_text(json) => Ok(DataType::Boolean),
        _ => refuse(name, arguments),
    }
}

/// JSON_ARRAY_CONTAINS(json, value): whether the JSON array holds a scalar equal to `value`
/// (a string, number, boolean or null); false for what is not a JSON array.
fn contains(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let wanted = &values[1];
    let found = text(&values[0])
        .and_then(Json::parse)
        .is_some_and(|json| match json {
            Json::Array(items) => items.iter().any(|item| scalar_equals(item, wanted)),
            _ => false,
        });
    Ok(ScalarValue::Boolean(Some(found)))
}

fn scalar_equals(item: &Json, wanted: &ScalarValue) -> bool {
    let Json::Scalar(raw) = item else {
        return false;
    };
    if wanted.is_null() {
        return *raw == "null";
    }
    if let Some(wanted) = text(wanted) {
        return raw.starts_with('"')
            && serde_json::from_str::<String>(raw).ok().as_deref() == Some(wanted);
    }
    if let ScalarValue::Boolean(Some(b)) = wanted {
        return *raw == if *b { "true" } else { "false" };
    }
    if let Some(wanted) = integer(wanted) {
        return raw.parse::<i64>().ok() == Some(wanted);
    }
    match (number(wanted), raw.parse::<f64>()) {
        (Some(wanted), Ok(value)) => !raw.starts_with('"') && value == wanted,
        _ => false,
    }
}

fn length_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    text_arguments(name, arguments, 1).map(|_| DataType::Int32)
}

fn length(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let length = match text(&values[0]).and_then(Json::parse) {
        Some(Json::Array(items)) => Some(items.len() as i32),
        _ => None,
    };
    Ok(ScalarValue::Int32(length))
}

fn concat_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    if arguments.is_empty() {
        return refuse(name, arguments);
    }
    text_arguments(name, arguments, arguments.len()).map(|_| DataType::Utf8)
}

/// JSON_CONCAT(a, b, ...): objects merged (a later key's value replacing an earlier one's in
/// its place), or else everything as one array, arrays' elements spliced in. Null when an
/// argument is null or not JSON.
fn concat(values: &[ScalarValue], _: &DataType) -> Result<ScalarValue> {
    let parsed: Option<Vec<Json>> = values
        .iter()
        .map(|v| text(v).and_then(Json::parse))
        .collect();
    let Some(parsed) = parsed else {
        return Ok(ScalarValue::Utf8(None));
    };
    let merged = if parsed.iter().all(|j| matches!(j, Json::Object(_))) {
        let mut merged: Vec<(String, Json)> = Vec::new();
        for json in parsed {
            let Json::Object(entries) = json else {
                unreachable!("every value is an object")
            };
            for (key, value) in entries {
                match merged.iter_mut().find(|(k, _)| *k == key) {
                    Some(entry) => entry.1 = value,
                    None => merged.push((key, value)),
                }
            }
        }
        Json::Object(merged)
    } else {
        let mut items = Vec::new();
        for json in parsed {
            match json {
                Json::Array(inner) => items.extend(inner),
                other => items.push(other),
            }
        }
        Json::Array(items)
    };
    Ok(ScalarValue::Utf8(Some(merged.compact())))
}

fn items_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    text_arguments(name, arguments, 1).map(|_| list_type(DataType::Utf8))
}

/// JSON_ITEMS(json): the elements of a JSON array, each as compact JSON.
fn items(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let items = match text(&values[0]).and_then(Json::parse) {
        Some(Json::Array(items)) => Some(
            items
                .iter()
                .map(|item| ScalarValue::from(item.compact()))
                .collect(),
        ),
        _ => None,
    };
    list_value(items, returns)
}

fn keys_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    text_arguments(name, arguments, 1).map(|_| list_type(DataType::Utf8))
}

/// JSON_KEYS(json): the keys of a JSON object in their order; null for anything else.
fn keys(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let keys = match text(&values[0]).and_then(Json::parse) {
        Some(Json::Object(entries)) => Some(
            entries
                .into_iter()
                .map(|(key, _)| ScalarValue::from(key))
                .collect(),
        ),
        _ => None,
    };
    list_value(keys, returns)
}

fn records_type(name: &str, arguments: &[DataType]) -> Result<DataType> {
    text_arguments(name, arguments, 1).map(|_| map_type(DataType::Utf8, DataType::Utf8))
}

/// JSON_RECORDS(json): a JSON object's entries as a map, each value as text.
fn records(values: &[ScalarValue], returns: &DataType) -> Result<ScalarValue> {
    let entries = match text(&values[0]).and_then(Json::parse) {
        Some(Json::Object(entries)) => Some(
            entries
                .into_iter()
                .map(|(key, value)| (ScalarValue::from(key), ScalarValue::Utf8(value.as_text())))
                .collect(),
        ),
        _ => None,
    };
    map_value(entries, returns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extracted(json: &str, path: &str) -> Option<String> {
        match extract(
            &[ScalarValue::from(json), ScalarValue::from(path)],
            &DataType::Utf8,
        ) {
            Ok(ScalarValue::Utf8(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_find_values_as_written() {
        let json = r#"{"name": "cdc", "@type": "UDF", "array": [1.23450, {"a b": [true]}]}}"#;
        assert_eq!(extracted(json, "$.name").as_deref(), Some("cdc"));
        assert_eq!(extracted(json, "$.@type").as_deref(), Some("UDF"));
        assert_eq!(extracted(json, "$.array[0]").as_deref(), Some("1.23450"));
        assert_eq!(
            extracted(json, "$.array[1]['a b']").as_deref(),
            Some("[true]")
        );
        assert_eq!(extracted(json, "$.array[-1]"), None);
        assert_eq!(extracted(json, "$.missing"), None);
        assert_eq!(extracted("not json", "$.a"), None);
    }

    #[test]
    fn concat_merges_objects_and_splices_arrays() {
        let cat = |a: &str, b: &str| {
            concat(
                &[ScalarValue::from(a), ScalarValue::from(b)],
                &DataType::Utf8,
            )
            .unwrap()
        };
        assert_eq!(
            cat(r#"{"b": 1}"#, r#"{"a": 2}"#),
            ScalarValue::from(r#"{"b":1,"a":2}"#)
        );
        assert_eq!(
            cat(r#"{"a": {"5": 6}}"#, r#"{"a": {"3": 4}}"#),
            ScalarValue::from(r#"{"a":{"3":4}}"#)
        );
        assert_eq!(cat("[1, 2]", "3"), ScalarValue::from("[1,2,3]"));
        assert_eq!(cat("null", "null"), ScalarValue::from("[null,null]"));
    }

    #[test]
    fn nesting_past_the_limit_is_not_json() {
        let deep = "[".repeat(JSON_DEPTH_MAX + 1) + &"]".repeat(JSON_DEPTH_MAX + 1);
        assert_eq!(Json::parse(&deep), None);
        let fits = "[".repeat(JSON_DEPTH_MAX) + &"]".repeat(JSON_DEPTH_MAX);
        assert!(Json::parse(&fits).is_some());
        assert_eq!(Json::parse(""), None);
        assert_eq!(Json::parse("abc"), None);
    }
}
