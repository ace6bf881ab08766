//! ksqlDB's SQL types and their Arrow representation.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};

/// A ksqlDB column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlType {
    Boolean,
    Int,
    Bigint,
    Double,
    Decimal { precision: u8, scale: i8 },
    String,
    Bytes,
    Timestamp,
    Date,
    Time,
    Array(Box<SqlType>),
    Map(Box<SqlType>, Box<SqlType>),
    Struct(Vec<(String, SqlType)>),
}

impl SqlType {
    /// The Arrow type holding values of this type.
    pub fn arrow(&self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::Int => DataType::Int32,
            SqlType::Bigint => DataType::Int64,
            SqlType::Double => DataType::Float64,
            SqlType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            SqlType::String => DataType::Utf8,
            SqlType::Bytes => DataType::Binary,
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
            SqlType::Date => DataType::Date32,
            SqlType::Time => DataType::Time32(TimeUnit::Millisecond),
            SqlType::Array(item) => {
                DataType::List(Arc::new(Field::new("item", item.arrow(), true)))
            }
            SqlType::Map(key, value) => {
                let entries = Fields::from(vec![
                    Field::new("key", key.arrow(), false),
                    Field::new("value", value.arrow(), true),
                ]);
                DataType::Map(
                    Arc::new(Field::new("entries", DataType::Struct(entries), false)),
                    false,
                )
            }
            SqlType::Struct(fields) => DataType::Struct(
                fields
                    .iter()
                    .map(|(n, t)| Field::new(n, t.arrow(), true))
                    .collect(),
            ),
        }
    }

    /// The ksqlDB type for an Arrow type, where there is one.
    pub fn from_arrow(data_type: &DataType) -> Option<SqlType> {
        Some(match data_type {
            DataType::Boolean => SqlType::Boolean,
            DataType::Int8 | DataType::Int16 | DataType::Int32 => SqlType::Int,
            DataType::UInt8 | DataType::UInt16 => SqlType::Int,
            // DataFusion's lengths and counts (ARRAY_LENGTH, ...) are unsigned.
            DataType::Int64 | DataType::UInt32 | DataType::UInt64 => SqlType::Bigint,
            DataType::Float32 | DataType::Float64 => SqlType::Double,
            DataType::Decimal128(p, s) => SqlType::Decimal {
                precision: *p,
                scale: *s,
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::String,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => SqlType::Bytes,
            DataType::Timestamp(_, _) => SqlType::Timestamp,
            DataType::Date32 | DataType::Date64 => SqlType::Date,
            DataType::Time32(_) | DataType::Time64(_) => SqlType::Time,
            DataType::List(f) | DataType::LargeList(f) => {
                SqlType::Array(Box::new(SqlType::from_arrow(f.data_type())?))
            }
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => SqlType::Map(
                    Box::new(SqlType::from_arrow(kv[0].data_type())?),
                    Box::new(SqlType::from_arrow(kv[1].data_type())?),
                ),
                _ => return None,
            },
            DataType::Struct(fields) => SqlType::Struct(
                fields
                    .iter()
                    .map(|f| Some((f.name().clone(), SqlType::from_arrow(f.data_type())?)))
                    .collect::<Option<Vec<_>>>()?,
            ),
            DataType::Null => SqlType::String,
            _ => return None,
        })
    }
}

impl SqlType {
    /// Whether the type is a MAP or holds one.
    pub fn contains_map(&self) -> bool {
        match self {
            SqlType::Map(..) => true,
            SqlType::Array(item) => item.contains_map(),
            SqlType::Struct(fields) => fields.iter().any(|(_, t)| t.contains_map()),
            _ => false,
        }
    }

    /// Whether the type is BYTES or holds them.
    pub fn contains_bytes(&self) -> bool {
        match self {
            SqlType::Bytes => true,
            SqlType::Array(item) | SqlType::Map(_, item) => item.contains_bytes(),
            SqlType::Struct(fields) => fields.iter().any(|(_, t)| t.contains_bytes()),
            _ => false,
        }
    }

    /// Whether the type is a STRUCT or holds one.
    pub fn contains_struct(&self) -> bool {
        match self {
            SqlType::Struct(_) => true,
            SqlType::Array(item) | SqlType::Map(_, item) => item.contains_struct(),
            _ => false,
        }
    }
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlType::Boolean => write!(f, "BOOLEAN"),
            SqlType::Int => write!(f, "INTEGER"),
            SqlType::Bigint => write!(f, "BIGINT"),
            SqlType::Double => write!(f, "DOUBLE"),
            SqlType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            SqlType::String => write!(f, "STRING"),
            SqlType::Bytes => write!(f, "BYTES"),
            SqlType::Timestamp => write!(f, "TIMESTAMP"),
            SqlType::Date => write!(f, "DATE"),
            SqlType::Time => write!(f, "TIME"),
            SqlType::Array(item) => write!(f, "ARRAY<{item}>"),
            SqlType::Map(k, v) => write!(f, "MAP<{k}, {v}>"),
            SqlType::Struct(fields) => {
                write!(f, "STRUCT<")?;
                for (i, (name, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "`{name}` {t}")?;
                }
                write!(f, ">")
            }
        }
    }
}
