//! Source records into Arrow batches: each record's key and value decoded in its format, its
//! event time picked, and the pseudo-columns (ROWTIME, ROWPARTITION, ROWOFFSET, WINDOWSTART,
//! WINDOWEND) added.
//!
//! Three ways, fastest first, each taken only when it reads exactly what the next would:
//! - [`decode_json_values`]: a keyless, unwindowed JSON source of numbers, text and booleans
//!   (most streams, Nexmark's among them) is parsed straight into Arrow builders;
//! - [`direct_batch`]: other rows are decoded into `serde_json::Value`s per column
//!   (`formats::decode`), then taken into builders as they are;
//! - values that need coercing (text to numbers, ISO text to times) or nested types go through
//!   arrow's JSON decoder.

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, ArrayRef, BooleanBuilder, Float64Builder, Int32Array, Int32Builder,
    Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use eddy_broker::ConsumedRecord;
use serde_json::Value;

use super::{Failure, Input};
use crate::catalog::{Source, ROWOFFSET, ROWPARTITION, ROWTIME, WINDOWEND, WINDOWSTART};
use crate::error::{EngineError, Result};
use crate::formats;
use crate::functions::datetime;
use crate::parser::{ColumnDef, Header};
use crate::types::SqlType;

/// Decodes records of `source` (from one partition) into rows of `schema`: its columns and
/// pseudo-columns. Records that cannot be decoded are added to `failures`.
pub(crate) fn decode_records(
    source: &Source,
    schema: &SchemaRef,
    partition: i32,
    records: &[ConsumedRecord],
    failures: &mut Vec<Failure>,
) -> Result<Option<Input>> {
    if let Some(input) = decode_json_values(source, schema, partition, records) {
        return Ok(Some(input));
    }
    let key_columns: Vec<&ColumnDef> = source.key_columns().collect();
    let value_columns: Vec<&ColumnDef> = source.value_columns().collect();
    let header_columns: Vec<&ColumnDef> = source.header_columns().collect();
    let mut rows = Vec::with_capacity(records.len());
    let mut deleted = Vec::with_capacity(records.len());
    let mut patterns = datetime::Cache::default();
    let mut skip = |record: &ConsumedRecord, message: String| {
        failures.push(Failure {
            topic: source.topic.clone(),
            partition,
            offset: record.offset,
            message,
        })
    };
    for record in records {
        let mut key_bytes = record.key.as_deref();
        let mut window = None;
        if let (Some(kind), Some(bytes)) = (source.window, key_bytes) {
            match formats::split_windowed_key(bytes, kind) {
                Ok((key, start, end)) => {
                    key_bytes = Some(key);
                    window = Some((start, end));
                }
                Err(reason) => {
                    skip(record, format!("cannot read the windowed key: {reason}"));
                    continue;
                }
            }
        }
        let keys = formats::decode(source.key_format, &key_columns, key_bytes, false);
        let values = formats::decode(
            source.value_format,
            &value_columns,
            record.value.as_deref(),
            source.wrap_single_value,
        );
        let (keys, values) = match (keys, values) {
            (Ok(k), Ok(v)) => (k, v),
            (Err(reason), _) | (_, Err(reason)) => {
                skip(record, format!("cannot deserialize the record: {reason}"));
                continue;
            }
        };
        let columns = key_columns.iter().chain(&value_columns);
        let mut row: Vec<(&str, Value)> = columns
            .map(|c| c.name.as_str())
            .zip(keys.into_iter().chain(values))
            .collect();
        for column in &header_columns {
            row.push((column.name.as_str(), header_value(column, &record.headers)));
        }
        let mut timestamp = record.timestamp_ms;
        if let Some(column) = &source.timestamp_column {
            let event_time = row.iter().find(|(name, _)| *name == column.as_str());
            let event_time = match (event_time, &source.timestamp_format) {
                (Some((_, Value::String(text))), Some(pattern)) => {
                    datetime::epoch_millis(text, pattern, &mut patterns).ok()
                }
                (Some((_, value)), _) => value.as_i64(),
                (None, _) => None,
            };
            match event_time {
                Some(event_time) if event_time >= 0 => timestamp = event_time,
                _ => {
                    skip(record, format!("no valid timestamp in column {column}"));
                    continue;
                }
            }
        }
        row.push((ROWTIME, Value::from(timestamp)));
        row.push((ROWPARTITION, Value::from(partition)));
        row.push((ROWOFFSET, Value::from(record.offset)));
        if let Some((start, end)) = window {
            row.push((WINDOWSTART, Value::from(start)));
            row.push((WINDOWEND, Value::from(end)));
        }
        rows.push(Row(row));
        deleted.push(record.value.is_none());
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let batch = rows_to_batch(schema, &rows)?;
    Ok(Some(Input { batch, deleted }))
}

/// A header column's value for a record with `headers`: every header as an array of
/// (key, value) structs, or the last value of one key (null when absent). Bytes as hex text,
/// as Arrow's JSON reader takes them.
fn header_value(column: &ColumnDef, headers: &[(String, Option<bytes::Bytes>)]) -> Value {
    let bytes = |value: &Option<bytes::Bytes>| match value {
        Some(value) => Value::String(hex::encode(value)),
        None => Value::Null,
    };
    match &column.header {
        Some(Header::Key(key)) => headers
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map_or(Value::Null, |(_, value)| bytes(value)),
        Some(Header::All) => {
            let names = match &column.data_type {
                SqlType::Array(item) => match item.as_ref() {
                    SqlType::Struct(fields) if fields.len() == 2 => {
                        (fields[0].0.clone(), fields[1].0.clone())
                    }
                    _ => return Value::Null,
                },
                _ => return Value::Null,
            };
            let entries = headers.iter().map(|(key, value)| {
                let mut entry = serde_json::Map::new();
                entry.insert(names.0.clone(), Value::String(key.clone()));
                entry.insert(names.1.clone(), bytes(value));
                Value::Object(entry)
            });
            Value::Array(entries.collect())
        }
        None => Value::Null,
    }
}

/// A decoded row as (column, value) pairs: arrow's JSON decoder reads it as an object
/// without a map being built for it.
struct Row<'a>(Vec<(&'a str, Value)>);

impl serde::Serialize for Row<'_> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

fn to_batch<T: serde::Serialize>(schema: &SchemaRef, rows: &[T]) -> Result<RecordBatch> {
    let mut decoder = ReaderBuilder::new(Arc::clone(schema)).build_decoder()?;
    decoder.serialize(rows)?;
    decoder
        .flush()?
        .ok_or_else(|| EngineError::Internal("no batch from decoded rows".into()))
}

/// The rows as a batch of `schema`: built directly when every value fits its column as it
/// is, else read by arrow's JSON decoder.
fn rows_to_batch(schema: &SchemaRef, rows: &[Row]) -> Result<RecordBatch> {
    match direct_batch(schema, rows) {
        Some(batch) => Ok(batch),
        None => to_batch(schema, rows),
    }
}

/// Builds each column of `schema` from the rows' values, or `None` when a value needs more
/// than taking it as it is (a coercion, a nested type, a column the rows lack).
fn direct_batch(schema: &SchemaRef, rows: &[Row]) -> Option<RecordBatch> {
    let first = rows.first()?;
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let Some(index) = first.0.iter().position(|(name, _)| name == field.name()) else {
            // A window's bounds in the schema of an unwindowed source's windowed query.
            if !field.is_nullable() {
                return None;
            }
            columns.push(new_null_array(field.data_type(), rows.len()));
            continue;
        };
        let mut builder = ColumnBuilder::new(field.data_type(), rows.len())?;
        for row in rows {
            builder.append(row.0.get(index).map(|(_, value)| value))?;
        }
        columns.push(builder.finish());
    }
    RecordBatch::try_new(Arc::clone(schema), columns).ok()
}

/// A column of one of the types values are taken into as they are: numbers, text, booleans
/// and times as epoch milliseconds.
enum ColumnBuilder {
    Int64(Int64Builder),
    Int32(Int32Builder),
    Float64(Float64Builder),
    Timestamp(TimestampMillisecondBuilder),
    Utf8(StringBuilder),
    Boolean(BooleanBuilder),
}

impl ColumnBuilder {
    /// A builder for `rows` values of `data_type`, or `None` for the other types.
    fn new(data_type: &DataType, rows: usize) -> Option<ColumnBuilder> {
        Some(match data_type {
            DataType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(rows)),
            DataType::Int32 => ColumnBuilder::Int32(Int32Builder::with_capacity(rows)),
            DataType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(rows)),
            DataType::Timestamp(TimeUnit::Millisecond, None) => {
                ColumnBuilder::Timestamp(TimestampMillisecondBuilder::with_capacity(rows))
            }
            DataType::Utf8 => ColumnBuilder::Utf8(StringBuilder::with_capacity(rows, rows * 16)),
            DataType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(rows)),
            _ => return None,
        })
    }

    /// Appends a value, or returns `None` when it is not of the column's JSON kind.
    fn append(&mut self, value: Option<&Value>) -> Option<()> {
        match value {
            None | Some(Value::Null) => self.append_null(),
            Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(int), _) => self.append_i64(int)?,
                (None, Some(float)) => self.append_f64(float)?,
                _ => return None,
            },
            Some(Value::String(text)) => self.append_str(text)?,
            Some(Value::Bool(flag)) => self.append_bool(*flag)?,
            Some(_) => return None,
        }
        Some(())
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Utf8(b) => b.append_null(),
            ColumnBuilder::Boolean(b) => b.append_null(),
        }
    }

    fn append_i64(&mut self, value: i64) -> Option<()> {
        match self {
            ColumnBuilder::Int64(b) => b.append_value(value),
            ColumnBuilder::Int32(b) => b.append_value(i32::try_from(value).ok()?),
            ColumnBuilder::Float64(b) => b.append_value(value as f64),
            ColumnBuilder::Timestamp(b) => b.append_value(value),
            _ => return None,
        }
        Some(())
    }

    fn append_f64(&mut self, value: f64) -> Option<()> {
        match self {
            ColumnBuilder::Float64(b) => b.append_value(value),
            _ => return None,
        }
        Some(())
    }

    fn append_str(&mut self, value: &str) -> Option<()> {
        match self {
            ColumnBuilder::Utf8(b) => b.append_value(value),
            _ => return None,
        }
        Some(())
    }

    fn append_bool(&mut self, value: bool) -> Option<()> {
        match self {
            ColumnBuilder::Boolean(b) => b.append_value(value),
            _ => return None,
        }
        Some(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
        }
    }
}

/// The common case read without intermediate values: a keyless, unwindowed source whose JSON
/// objects hold columns of the types [`ColumnBuilder`] takes, each field read straight into
/// its column's builder. `None` when the batch needs the general path: a record without a
/// value or a valid event time, a value of another JSON kind, a column given twice, bad JSON.
fn decode_json_values(
    source: &Source,
    schema: &SchemaRef,
    partition: i32,
    records: &[ConsumedRecord],
) -> Option<Input> {
    let simple = source.window.is_none()
        && source.key_columns().next().is_none()
        && source.header_columns().next().is_none()
        && source.value_format == formats::Format::Json
        && source.timestamp_format.is_none();
    let columns: Vec<&ColumnDef> = source.value_columns().collect();
    if !simple || (columns.len() < 2 && !source.wrap_single_value) {
        return None;
    }
    let names = columns
        .iter()
        .map(|c| c.name.as_str())
        .chain([ROWTIME, ROWPARTITION, ROWOFFSET]);
    let fields = schema.fields();
    // A windowed query over the source has its window's bounds in the schema, null here.
    let window_bounds = match fields.len().checked_sub(columns.len() + 3) {
        Some(0) => false,
        Some(2) => true,
        _ => return None,
    };
    let names = names.chain(
        window_bounds
            .then_some([WINDOWSTART, WINDOWEND])
            .into_iter()
            .flatten(),
    );
    if fields.iter().zip(names).any(|(f, n)| f.name() != n)
        || (window_bounds && fields.iter().rev().take(2).any(|f| !f.is_nullable()))
    {
        return None;
    }
    let time_column = match &source.timestamp_column {
        Some(name) => Some(columns.iter().position(|c| &c.name == name)?),
        None => None,
    };
    let mut builders = fields[..columns.len()]
        .iter()
        .map(|f| ColumnBuilder::new(f.data_type(), records.len()))
        .collect::<Option<Vec<ColumnBuilder>>>()?;
    let mut row_times = TimestampMillisecondBuilder::with_capacity(records.len());
    let mut offsets = Int64Builder::with_capacity(records.len());
    let mut seen = vec![false; columns.len()];
    let mut fields_seen_before = Vec::new();
    for record in records {
        seen.fill(false);
        let mut row = JsonRow {
            columns: &columns,
            builders: &mut builders,
            seen: &mut seen,
            fields_seen_before: &mut fields_seen_before,
            time_column,
            event_time: None,
        };
        let mut reader = serde_json::Deserializer::from_slice(record.value.as_deref()?);
        serde::Deserializer::deserialize_map(&mut reader, &mut row).ok()?;
        reader.end().ok()?;
        let event_time = row.event_time;
        for (builder, seen) in builders.iter_mut().zip(&seen) {
            if !seen {
                builder.append_null();
            }
        }
        let timestamp = match time_column {
            Some(_) => event_time.filter(|time| *time >= 0)?,
            None => record.timestamp_ms,
        };
        row_times.append_value(timestamp);
        offsets.append_value(record.offset);
    }
    let mut arrays: Vec<ArrayRef> = builders.iter_mut().map(ColumnBuilder::finish).collect();
    arrays.push(Arc::new(row_times.finish()));
    arrays.push(Arc::new(Int32Array::from(vec![partition; records.len()])));
    arrays.push(Arc::new(offsets.finish()));
    for bound in &fields[columns.len() + 3..] {
        arrays.push(new_null_array(bound.data_type(), records.len()));
    }
    let batch = RecordBatch::try_new(Arc::clone(schema), arrays).ok()?;
    Some(Input {
        batch,
        deleted: vec![false; records.len()],
    })
}

/// Objects with more fields than this look the rest up every time.
const FIELDS_REMEMBERED_MAX: usize = 64;

/// One JSON object read into the builders of `columns`, matching names as
/// `formats::decode` does (case aside, an exact spelling first).
struct JsonRow<'a> {
    columns: &'a [&'a ColumnDef],
    builders: &'a mut [ColumnBuilder],
    /// Which columns the object gave.
    seen: &'a mut [bool],
    /// The field names of the objects before, by position, and their columns: records of a
    /// topic mostly spell the same fields in the same order, so a name is compared once.
    fields_seen_before: &'a mut Vec<(Box<str>, Option<usize>)>,
    /// The event-time column's index, and the value it was given.
    time_column: Option<usize>,
    event_time: Option<i64>,
}

impl JsonRow<'_> {
    /// The column of the object's `position`th field, named `key`.
    fn column_at(&mut self, position: usize, key: &str) -> Option<usize> {
        if let Some((name, column)) = self.fields_seen_before.get(position) {
            if **name == *key {
                return *column;
            }
        }
        let column = self.column(key);
        if position < FIELDS_REMEMBERED_MAX {
            self.fields_seen_before.truncate(position);
            self.fields_seen_before.push((key.into(), column));
        }
        column
    }

    fn column(&self, key: &str) -> Option<usize> {
        let mut found = None;
        for (i, column) in self.columns.iter().enumerate() {
            if column.name == key {
                return Some(i);
            }
            if found.is_none() && column.name.eq_ignore_ascii_case(key) {
                found = Some(i);
            }
        }
        found
    }
}

impl<'de> serde::de::Visitor<'de> for &mut JsonRow<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        use serde::de::Error;
        let mut position = 0;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let column = self.column_at(position, &key);
            position += 1;
            let Some(i) = column else {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(&mut self.seen[i], true) {
                return Err(M::Error::custom("a column given twice"));
            }
            let integer = map.next_value_seed(JsonField(&mut self.builders[i]))?;
            if self.time_column == Some(i) {
                self.event_time = integer;
            }
        }
        Ok(())
    }
}

/// One field's value appended to its column's builder; the value when it is an integer.
struct JsonField<'a>(&'a mut ColumnBuilder);

impl<'de> serde::de::DeserializeSeed<'de> for JsonField<'_> {
    type Value = Option<i64>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for JsonField<'_> {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a value of the column's JSON kind")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<i64>, E> {
        self.0.append_null();
        Ok(None)
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Option<i64>, E> {
        self.0.append_i64(value).ok_or_else(|| unfit())?;
        Ok(Some(value))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Option<i64>, E> {
        self.visit_i64(i64::try_from(value).map_err(|_| unfit())?)
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Option<i64>, E> {
        self.0.append_f64(value).ok_or_else(|| unfit())?;
        Ok(None)
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Option<i64>, E> {
        self.0.append_str(value).ok_or_else(|| unfit())?;
        Ok(None)
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Option<i64>, E> {
        self.0.append_bool(value).ok_or_else(|| unfit())?;
        Ok(None)
    }
}

/// A value the fast path does not take as it is: the batch goes the general way.
fn unfit<E: serde::de::Error>() -> E {
    E::custom("a value of another JSON kind than its column's")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SqlType;

    fn source(timestamp_column: Option<&str>) -> Source {
        let column = |name: &str, data_type| ColumnDef {
            name: name.into(),
            data_type,
            key: false,
            header: None,
        };
        Source {
            name: "S".into(),
            kind: crate::parser::SourceKind::Stream,
            columns: vec![
                column("ID", SqlType::Bigint),
                column("NAME", SqlType::String),
                column("name", SqlType::String),
                column("SCORE", SqlType::Double),
                column("OK", SqlType::Boolean),
                column("AT", SqlType::Timestamp),
            ],
            topic: "s".into(),
            key_format: formats::Format::Kafka,
            value_format: formats::Format::Json,
            wrap_single_value: true,
            read_only: false,
            window: None,
            timestamp_column: timestamp_column.map(String::from),
            timestamp_format: None,
            statement: String::new(),
        }
    }

    fn records(values: &[&str]) -> Vec<ConsumedRecord> {
        values
            .iter()
            .enumerate()
            .map(|(i, value)| ConsumedRecord {
                offset: i as i64,
                timestamp_ms: 1000 + i as i64,
                key: None,
                value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())),
                headers: Vec::new(),
            })
            .collect()
    }

    /// The general path alone: the rows through `formats::decode` and arrow's JSON decoder.
    fn general(source: &Source, records: &[ConsumedRecord]) -> RecordBatch {
        let mut failures = Vec::new();
        let mut source = source.clone();
        // A key column sends decode_records down the general path; its null key reads as null.
        source.columns.insert(
            0,
            ColumnDef {
                name: "K".into(),
                data_type: SqlType::String,
                key: true,
                header: None,
            },
        );
        let schema = source.schema();
        let input = decode_records(&source, &schema, 3, records, &mut failures)
            .unwrap()
            .unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        input
            .batch
            .project(&(1..input.batch.num_columns()).collect::<Vec<_>>())
            .unwrap()
    }

    #[test]
    fn the_fast_path_reads_what_the_general_path_reads() {
        // Names in any case (an exact spelling first), missing and null fields, unknown fields
        // skipped, integers in a DOUBLE column, escapes in strings.
        let source = source(Some("AT"));
        let records = records(&[
            r#"{"id": 1, "NAME": "a\"b", "name": "lower", "score": 2, "ok": true, "at": 5}"#,
            r#"{"Id": -7, "extra": {"x": [1, 2]}, "SCORE": 1.5, "OK": null, "at": 6}"#,
            r#"{"id": null, "name": "only lower", "at": 7}"#,
        ]);
        let schema = source.schema();
        let fast = decode_json_values(&source, &schema, 3, &records).expect("the fast path");
        assert_eq!(fast.batch, general(&source, &records));
        let at = fast.batch.column_by_name(ROWTIME).unwrap();
        assert_eq!(
            format!("{at:?}").matches("1970-01-01T00:00:00.00").count(),
            3
        );
    }

    #[test]
    fn a_windowed_querys_bounds_read_as_null_on_every_path() {
        // A windowed aggregation over an unwindowed source reads its schema with WINDOWSTART
        // and WINDOWEND: neither path may leave that to arrow's JSON decoder (the slow one).
        let source = source(Some("AT"));
        let records = records(&[
            r#"{"id": 1, "name": "a", "at": 5}"#,
            r#"{"id": 2, "score": 0.5, "at": 6}"#,
        ]);
        let plain = decode_json_values(&source, &source.schema(), 3, &records).unwrap();
        let windowed = source.schema_with_window(true);
        let fast = decode_json_values(&source, &windowed, 3, &records).expect("the fast path");
        let bounds = fast.batch.num_columns() - 2;
        assert_eq!(fast.batch.schema(), windowed);
        assert_eq!(
            fast.batch
                .project(&(0..bounds).collect::<Vec<_>>())
                .unwrap(),
            plain.batch
        );
        for bound in [WINDOWSTART, WINDOWEND] {
            let column = fast.batch.column_by_name(bound).unwrap();
            assert_eq!(column.null_count(), records.len(), "{bound}");
        }
        // The general path builds the same rows directly, not through arrow's JSON decoder.
        let mut keyed = source.clone();
        keyed.columns.insert(
            0,
            ColumnDef {
                name: "K".into(),
                data_type: SqlType::String,
                key: true,
                header: None,
            },
        );
        let mut failures = Vec::new();
        let input = decode_records(
            &keyed,
            &keyed.schema_with_window(true),
            3,
            &records,
            &mut failures,
        )
        .unwrap()
        .unwrap();
        let columns = (1..input.batch.num_columns()).collect::<Vec<_>>();
        assert_eq!(input.batch.project(&columns).unwrap(), fast.batch);
    }

    #[test]
    fn values_that_need_coercion_take_the_general_path() {
        let source = source(None);
        let schema = source.schema();
        for value in [
            r#"{"id": "12"}"#,
            r#"{"id": 1.5}"#,
            r#"{"name": 3}"#,
            r#"{"id": 1, "ID": 2}"#,
            r#"{"at": "2026-01-01T00:00:00"}"#,
            r#"[1, 2]"#,
        ] {
            let records = records(&[value]);
            assert!(
                decode_json_values(&source, &schema, 0, &records).is_none(),
                "{value}"
            );
        }
    }
}
