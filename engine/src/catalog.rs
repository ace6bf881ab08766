//! The catalog: streams and tables over topics, with their columns and formats.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{EngineError, Result};
use crate::formats::Format;
use crate::parser::{ColumnDef, Properties, SourceKind};

/// Pseudo-columns every source has, after its own columns.
pub const ROWTIME: &str = "ROWTIME";
pub const ROWPARTITION: &str = "ROWPARTITION";
pub const ROWOFFSET: &str = "ROWOFFSET";
/// Pseudo-columns of windowed sources: the bounds of the row's window.
pub const WINDOWSTART: &str = "WINDOWSTART";
pub const WINDOWEND: &str = "WINDOWEND";

/// Whether `column` names one of the pseudo-columns (which a query's output may not use as a
/// column name: ksqlDB's reserved names).
pub fn is_pseudo_column(column: &str) -> bool {
    [ROWTIME, ROWPARTITION, ROWOFFSET, WINDOWSTART, WINDOWEND].contains(&column)
}

/// How a windowed source's keys carry their window, as Kafka Streams' windowed serdes write
/// them: time windows (tumbling, hopping) append the 8-byte window start to the key bytes;
/// session windows append the 8-byte end, then the 8-byte start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWindow {
    /// Tumbling or hopping windows of this size: end = start + size.
    Time {
        size_ms: i64,
        /// The retention of the aggregation writing the rows (RETENTION, or size + grace):
        /// once its windows have moved this far past a window's end, no row of that window
        /// changes any more, so readers may forget them. Unknown (`None`) for a topic
        /// declared with WINDOW_TYPE.
        retention_ms: Option<i64>,
    },
    Session,
}

impl KeyWindow {
    /// How long after a window's end its rows may still change, when known.
    pub fn retention_ms(self) -> Option<i64> {
        match self {
            KeyWindow::Time { retention_ms, .. } => retention_ms,
            KeyWindow::Session => None,
        }
    }

    /// ksqlDB's WINDOW_TYPE name.
    pub fn type_name(self) -> &'static str {
        match self {
            KeyWindow::Time { .. } => "TIME",
            KeyWindow::Session => "SESSION",
        }
    }
}

/// A stream or table.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    /// Key columns first, then value columns, in declared order.
    pub columns: Vec<ColumnDef>,
    pub topic: String,
    pub key_format: Format,
    pub value_format: Format,
    /// `WRAP_SINGLE_VALUE`: whether a single value column is a JSON object or the bare value.
    pub wrap_single_value: bool,
    /// `CREATE SOURCE`: read-only.
    pub read_only: bool,
    /// Windowed keys (WINDOW_TYPE, or a windowed aggregation's output).
    pub window: Option<KeyWindow>,
    /// `TIMESTAMP`: the BIGINT or TIMESTAMP column whose value is a row's event time (on a
    /// source: read instead of the record's timestamp; on a sink: written as it), or a
    /// STRING column read with `TIMESTAMP_FORMAT`.
    pub timestamp_column: Option<String>,
    /// `TIMESTAMP_FORMAT`: the Java pattern a STRING timestamp column is written in.
    pub timestamp_format: Option<String>,
    /// The statement that created it.
    pub statement: String,
}

impl Source {
    /// Builds a source from CREATE STREAM / TABLE, checking its properties.
    pub fn from_definition(
        kind: SourceKind,
        name: &str,
        columns: Vec<ColumnDef>,
        properties: &Properties,
        read_only: bool,
        statement: &str,
    ) -> Result<Source> {
        let topic = properties.get("KAFKA_TOPIC").cloned().ok_or_else(|| {
            EngineError::Plan(format!(
                "missing required property KAFKA_TOPIC for {} {name}: add WITH (KAFKA_TOPIC='...')",
                kind.name()
            ))
        })?;
        let (key_format, value_format) = formats_from(properties)?;
        if kind == SourceKind::Table && !columns.iter().any(|c| c.key) {
            return Err(EngineError::Plan(format!(
                "table {name} has no PRIMARY KEY column: tables need one"
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for c in &columns {
            if !seen.insert(c.name.as_str()) {
                return Err(EngineError::Plan(format!(
                    "column '{}' is declared twice",
                    c.name
                )));
            }
        }
        let mut ordered: Vec<ColumnDef> = columns.iter().filter(|c| c.key).cloned().collect();
        ordered.extend(columns.into_iter().filter(|c| !c.key));
        let wrap_single_value = properties
            .get("WRAP_SINGLE_VALUE")
            .map(|v| !v.eq_ignore_ascii_case("false"))
            .unwrap_or(true);
        if properties.contains_key("WRAP_SINGLE_VALUE")
            && wrap_single_value
            && matches!(value_format, Format::Delimited(_) | Format::Kafka)
        {
            return Err(EngineError::Plan(format!(
                "Format '{}' does not support 'WRAP_SINGLE_VALUE' set to 'true'.",
                value_format.name()
            )));
        }
        if properties.contains_key("VALUE_DELIMITER")
            && !matches!(value_format, Format::Delimited(_))
        {
            return Err(EngineError::Plan(format!(
                "{} does not support the following configs: [delimiter]",
                value_format.name()
            )));
        }
        let source = Source {
            name: name.to_string(),
            kind,
            columns: ordered,
            topic,
            key_format,
            value_format,
            wrap_single_value,
            read_only,
            window: key_window(properties)?,
            timestamp_column: properties.get("TIMESTAMP").map(|c| c.to_uppercase()),
            timestamp_format: properties.get("TIMESTAMP_FORMAT").cloned(),
            statement: statement.to_string(),
        };
        source.check_formats()?;
        source.check_timestamp_column()?;
        Ok(source)
    }

    /// Checks that the TIMESTAMP column exists and holds a time: BIGINT, TIMESTAMP, or a
    /// STRING with a TIMESTAMP_FORMAT.
    pub fn check_timestamp_column(&self) -> Result<()> {
        let Some(name) = &self.timestamp_column else {
            return Ok(());
        };
        let column = self
            .columns
            .iter()
            .find(|c| &c.name == name)
            .ok_or_else(|| {
                EngineError::Plan(format!(
                    "The TIMESTAMP column set in the WITH clause does not exist in the schema: '{name}'"
                ))
            })?;
        match column.data_type {
            crate::types::SqlType::Bigint | crate::types::SqlType::Timestamp => Ok(()),
            crate::types::SqlType::String if self.timestamp_format.is_some() => Ok(()),
            _ => Err(EngineError::Plan(format!(
                "Timestamp column, `{name}`, should be LONG(INT64), TIMESTAMP, or a String with a timestamp_format specified"
            ))),
        }
    }

    /// Checks that the key and value formats can hold the columns' types, as ksqlDB does:
    /// no map in a key (maps serialize inconsistently), no ARRAY, MAP or STRUCT in KAFKA or
    /// DELIMITED, KAFKA holds one column of INTEGER, BIGINT, DOUBLE, STRING or BYTES. A key
    /// format's refusal comes in ksqlDB's frame ("Key format does not support schema.").
    pub fn check_formats(&self) -> Result<()> {
        if self.columns.is_empty()
            && matches!(self.value_format, Format::Kafka | Format::Delimited(_))
        {
            return Err(EngineError::Plan("No columns supplied.".into()));
        }
        for column in &self.columns {
            if column.key && column.data_type.contains_map() {
                return Err(EngineError::Plan(format!(
                    "Map keys, including types that contain maps, are not supported as they may \
                     lead to unexpected behavior due to inconsistent serialization. Key column \
                     name: `{}`. Column type: {}. See \
                     https://github.com/confluentinc/ksql/issues/6621 for more.",
                    column.name, column.data_type
                )));
            }
        }
        let keys: Vec<&ColumnDef> = self.key_columns().collect();
        if let Some(reason) = format_refusal(self.key_format, &keys) {
            let columns: Vec<String> = keys.iter().map(|c| persisted(c)).collect();
            return Err(EngineError::Plan(format!(
                "Key format does not support schema.\nformat: {}\nschema: \
                 Persistence{{columns=[{}], features=[]}}\nreason: {reason}",
                self.key_format.name(),
                columns.join(", ")
            )));
        }
        let values: Vec<&ColumnDef> = self.value_columns().collect();
        match format_refusal(self.value_format, &values) {
            Some(reason) => Err(EngineError::Plan(reason)),
            None => Ok(()),
        }
    }

    /// Key columns.
    pub fn key_columns(&self) -> impl Iterator<Item = &ColumnDef> {
        self.columns.iter().filter(|c| c.key)
    }

    /// Value columns.
    pub fn value_columns(&self) -> impl Iterator<Item = &ColumnDef> {
        self.columns.iter().filter(|c| !c.key && c.header.is_none())
    }

    /// Columns read from the records' headers.
    pub fn header_columns(&self) -> impl Iterator<Item = &ColumnDef> {
        self.columns.iter().filter(|c| c.header.is_some())
    }

    /// The Arrow schema queries see: the columns, then ROWTIME, ROWPARTITION, ROWOFFSET, and
    /// WINDOWSTART, WINDOWEND when the source is windowed.
    pub fn schema(&self) -> SchemaRef {
        self.schema_with_window(self.window.is_some())
    }

    /// The schema with WINDOWSTART and WINDOWEND or without them (a windowed aggregation
    /// reads them as the bounds of the window it puts each row in).
    pub fn schema_with_window(&self, windowed: bool) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.arrow(), true))
            .collect();
        fields.push(Field::new(
            ROWTIME,
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ));
        fields.push(Field::new(ROWPARTITION, DataType::Int32, false));
        fields.push(Field::new(ROWOFFSET, DataType::Int64, false));
        if windowed {
            fields.push(Field::new(WINDOWSTART, DataType::Int64, true));
            fields.push(Field::new(WINDOWEND, DataType::Int64, true));
        }
        Arc::new(Schema::new(fields))
    }
}

/// A column as ksqlDB prints a persisted schema's: "`K` INTEGER KEY", "`V` STRING".
fn persisted(column: &ColumnDef) -> String {
    match column.key {
        true => format!("`{}` {} KEY", column.name, column.data_type),
        false => format!("`{}` {}", column.name, column.data_type),
    }
}

/// Why `format` cannot hold `columns` (the key's or the value's), in ksqlDB's words.
fn format_refusal(format: Format, columns: &[&ColumnDef]) -> Option<String> {
    use crate::types::SqlType;
    let name = format.name();
    let kafka = format == Format::Kafka;
    if !kafka && !matches!(format, Format::Delimited(_)) {
        return None;
    }
    if kafka && columns.len() > 1 {
        let got: Vec<String> = columns.iter().map(|c| persisted(c)).collect();
        return Some(format!(
            "The 'KAFKA' format only supports a single field. Got: [{}]",
            got.join(", ")
        ));
    }
    columns.iter().find_map(|column| {
        let type_name = match &column.data_type {
            SqlType::Array(_) => "ARRAY",
            SqlType::Map(..) => "MAP",
            SqlType::Struct(_) => "STRUCT",
            SqlType::Boolean if kafka => "BOOLEAN",
            SqlType::Decimal { .. } if kafka => "DECIMAL",
            _ => return None,
        };
        // ksqlDB names the column of a DELIMITED key it refuses.
        let column_name = match !kafka && column.key {
            true => format!(", column: `{}`", column.name),
            false => String::new(),
        };
        Some(format!(
            "The '{name}' format does not support type '{type_name}'{column_name}"
        ))
    })
}

/// WINDOW_TYPE and WINDOW_SIZE of a CREATE over a windowed topic.
fn key_window(properties: &Properties) -> Result<Option<KeyWindow>> {
    let size = properties.get("WINDOW_SIZE");
    let Some(kind) = properties.get("WINDOW_TYPE") else {
        return match size {
            Some(_) => Err(EngineError::Plan(
                "WINDOW_SIZE should only be set when WINDOW_TYPE is set".into(),
            )),
            None => Ok(None),
        };
    };
    match (kind.to_uppercase().as_str(), size) {
        ("SESSION", None) => Ok(Some(KeyWindow::Session)),
        ("SESSION", Some(_)) => Err(EngineError::Plan(
            "'WINDOW_SIZE' should not be set for SESSION windows.".into(),
        )),
        ("TUMBLING" | "HOPPING", Some(size)) => Ok(Some(KeyWindow::Time {
            size_ms: crate::parser::duration_text_ms(size).map_err(|e| {
                EngineError::Plan(format!("Configuration WINDOW_SIZE is invalid: {e}"))
            })?,
            retention_ms: None,
        })),
        ("TUMBLING" | "HOPPING", None) => Err(EngineError::Plan(format!(
            "WINDOW_SIZE is required for {} windows",
            kind.to_uppercase()
        ))),
        (other, _) => Err(EngineError::Plan(format!(
            "invalid WINDOW_TYPE '{other}': use SESSION, HOPPING or TUMBLING"
        ))),
    }
}

fn formats_from(properties: &Properties) -> Result<(Format, Format)> {
    let format = |name: &str| properties.get(name).map(|v| Format::parse(v)).transpose();
    let both = format("FORMAT")?;
    let value = format("VALUE_FORMAT")?.or(both).ok_or_else(|| {
        EngineError::Plan(
            "missing required property VALUE_FORMAT (or FORMAT): add WITH (VALUE_FORMAT='JSON')"
                .into(),
        )
    })?;
    let key = format("KEY_FORMAT")?.or(both).unwrap_or(Format::Kafka);
    let delimiter = properties.get("VALUE_DELIMITER");
    let value = match (value, delimiter) {
        (Format::Delimited(_), Some(d)) => Format::Delimited(crate::formats::parse_delimiter(d)?),
        (other, _) => other,
    };
    Ok((key, value))
}

/// Every stream and table, by upper-case name.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    sources: BTreeMap<String, Arc<Source>>,
}

impl Catalog {
    /// The source named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Source>> {
        self.sources
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::NotFound {
                kind: "stream or table",
                name: name.to_string(),
            })
    }

    /// Whether a source of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    /// Adds or replaces a source.
    pub fn insert(&mut self, source: Source) {
        self.sources.insert(source.name.clone(), Arc::new(source));
    }

    /// Removes a source.
    pub fn remove(&mut self, name: &str) -> Option<Arc<Source>> {
        self.sources.remove(name)
    }

    /// All sources, sorted by name.
    pub fn sources(&self) -> impl Iterator<Item = &Arc<Source>> {
        self.sources.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{parse_one, Statement};

    fn create(sql: &str) -> Result<Source> {
        let Statement::CreateSource {
            kind,
            name,
            columns,
            properties,
            source,
            ..
        } = parse_one(sql).expect("parses").statement
        else {
            panic!("not a create");
        };
        Source::from_definition(kind, &name, columns, &properties, source, sql)
    }

    #[test]
    fn key_columns_come_first_and_pseudo_columns_last() {
        let source = create(
            "CREATE STREAM s (v INT, k STRING KEY) WITH (kafka_topic='t', value_format='json')",
        )
        .expect("valid");
        let names: Vec<String> = source
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["K", "V", "ROWTIME", "ROWPARTITION", "ROWOFFSET"]);
        assert_eq!(source.value_format, Format::Json);
        assert_eq!(source.key_format, Format::Kafka);
    }

    #[test]
    fn missing_topic_format_or_table_key_are_explained() {
        let e = create("CREATE STREAM s (v INT) WITH (value_format='json')").expect_err("no topic");
        assert!(e.to_string().contains("KAFKA_TOPIC"), "{e}");
        let e = create("CREATE STREAM s (v INT) WITH (kafka_topic='t')").expect_err("no format");
        assert!(e.to_string().contains("VALUE_FORMAT"), "{e}");
        let e = create("CREATE TABLE t (v INT) WITH (kafka_topic='t', format='json')")
            .expect_err("no key");
        assert!(e.to_string().contains("PRIMARY KEY"), "{e}");
    }
}
