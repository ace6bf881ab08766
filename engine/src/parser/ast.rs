//! ksqlDB's statements as Eddy parses them. SQL queries and expressions stay sqlparser's AST;
//! the clauses only ksqlDB has (WINDOW, EMIT, PARTITION BY, WITH properties, KEY columns) are
//! our own nodes.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{Expr, Query};

use crate::error::Position;
use crate::types::SqlType;

/// STREAM (append-only) or TABLE (changelog by primary key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Stream,
    Table,
}

impl SourceKind {
    /// `STREAM` or `TABLE`.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Stream => "STREAM",
            SourceKind::Table => "TABLE",
        }
    }
}

/// A column in CREATE STREAM / TABLE.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: SqlType,
    /// KEY (streams) or PRIMARY KEY (tables).
    pub key: bool,
    /// A column read from the record's headers rather than its key or value.
    pub header: Option<Header>,
}

/// Where a header column's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Header {
    /// `HEADERS`: every header, in order, as `ARRAY<STRUCT<KEY STRING, VALUE BYTES>>`.
    All,
    /// `HEADER('key')`: the last value of the header `key`, as BYTES.
    Key(String),
}

impl Header {
    /// The type of a `HEADERS` column.
    pub fn all_type() -> SqlType {
        let field = |name: &str, t| (name.to_string(), t);
        SqlType::Array(Box::new(SqlType::Struct(vec![
            field("KEY", SqlType::String),
            field("VALUE", SqlType::Bytes),
        ])))
    }
}

/// `WITH (NAME = value, ...)`, names upper-cased, values as written (strings unquoted).
pub type Properties = BTreeMap<String, String>;

/// WINDOW TUMBLING | HOPPING | SESSION (...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowSpec {
    Tumbling {
        size_ms: i64,
        grace_ms: Option<i64>,
        retention_ms: Option<i64>,
    },
    Hopping {
        size_ms: i64,
        advance_ms: i64,
        grace_ms: Option<i64>,
        retention_ms: Option<i64>,
    },
    Session {
        gap_ms: i64,
        grace_ms: Option<i64>,
        retention_ms: Option<i64>,
    },
}

impl WindowSpec {
    /// The grace period: as given, else ksqlDB's default: a day for EMIT CHANGES, none for
    /// EMIT FINAL (a final result is due when its window ends).
    pub fn grace_ms(&self, emit_final: bool) -> i64 {
        const DEFAULT_GRACE_MS: i64 = 24 * 60 * 60 * 1000;
        let (WindowSpec::Tumbling { grace_ms, .. }
        | WindowSpec::Hopping { grace_ms, .. }
        | WindowSpec::Session { grace_ms, .. }) = self;
        match (grace_ms, emit_final) {
            (Some(grace), _) => *grace,
            (None, true) => 0,
            (None, false) => DEFAULT_GRACE_MS,
        }
    }

    /// A time window store's retention: RETENTION, else size + grace (Kafka Streams'
    /// default). `None` for session windows.
    pub fn retention_ms(&self, emit_final: bool) -> Option<i64> {
        match self {
            WindowSpec::Tumbling {
                size_ms,
                retention_ms,
                ..
            }
            | WindowSpec::Hopping {
                size_ms,
                retention_ms,
                ..
            } => Some(retention_ms.unwrap_or(size_ms + self.grace_ms(emit_final))),
            WindowSpec::Session { .. } => None,
        }
    }
}

/// EMIT CHANGES (every update) or EMIT FINAL (once per window, after the grace period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emit {
    Changes,
    Final,
}

/// A stream-stream join's `WITHIN n unit | (before, after) [GRACE PERIOD n unit]`: a row joins
/// the other side's rows from `before_ms` earlier to `after_ms` later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWithin {
    pub before_ms: i64,
    pub after_ms: i64,
    /// GRACE PERIOD: without it, ksqlDB's older semantics (a left join's unmatched row is
    /// emitted at once; 24 hours of grace).
    pub grace_ms: Option<i64>,
}

/// A SELECT with ksqlDB's clauses cut out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectQuery {
    /// The standard part, parsed by sqlparser (WINDOW, EMIT and PARTITION BY removed).
    pub query: Box<Query>,
    pub window: Option<WindowSpec>,
    pub emit: Option<Emit>,
    pub partition_by: Vec<Expr>,
    /// The WITHIN clause of each join, in order (`None` for a join without one).
    pub within: Vec<Option<JoinWithin>>,
}

/// SHOW / LIST targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowKind {
    Streams,
    Tables,
    /// SHOW TOPICS: the cluster's topics but those whose names start with `_`.
    Topics,
    /// SHOW ALL TOPICS: every topic, internal ones too.
    AllTopics,
    Queries,
    Properties,
    Functions,
}

/// One ksqlDB statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// CREATE [OR REPLACE] [SOURCE] STREAM | TABLE [IF NOT EXISTS] name (columns) WITH (...)
    CreateSource {
        kind: SourceKind,
        name: String,
        or_replace: bool,
        if_not_exists: bool,
        source: bool,
        columns: Vec<ColumnDef>,
        properties: Properties,
    },
    /// CREATE [OR REPLACE] STREAM | TABLE name [WITH (...)] AS SELECT ...
    CreateAsSelect {
        kind: SourceKind,
        name: String,
        or_replace: bool,
        if_not_exists: bool,
        properties: Properties,
        query: SelectQuery,
    },
    /// INSERT INTO name SELECT ...
    InsertInto { target: String, query: SelectQuery },
    /// INSERT INTO name [(columns)] VALUES (...)
    InsertValues {
        target: String,
        columns: Vec<String>,
        values: Vec<Expr>,
    },
    /// A push (EMIT CHANGES) or pull query.
    Select(SelectQuery),
    /// DROP STREAM | TABLE [IF EXISTS] name [DELETE TOPIC]
    Drop {
        kind: SourceKind,
        name: String,
        if_exists: bool,
        delete_topic: bool,
    },
    /// SHOW | LIST ...
    Show { kind: ShowKind, extended: bool },
    /// DESCRIBE [EXTENDED] name
    Describe { name: String, extended: bool },
    /// DESCRIBE FUNCTION name
    DescribeFunction { name: String },
    /// TERMINATE query_id | ALL
    Terminate { query_id: Option<String> },
    /// SET 'name' = 'value'
    Set { name: String, value: String },
    /// UNSET 'name'
    Unset { name: String },
    /// DEFINE name = 'value'
    Define { name: String, value: String },
    /// UNDEFINE name
    Undefine { name: String },
    /// EXPLAIN statement
    Explain(Box<Statement>),
    /// PRINT topic [FROM BEGINNING] [INTERVAL | SAMPLE n] [LIMIT n]
    Print {
        topic: String,
        from_beginning: bool,
        /// Print every n-th record; 1 when not given.
        interval: u64,
        limit: Option<u64>,
    },
}

/// A statement with its text and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedStatement {
    pub statement: Statement,
    pub text: String,
    pub position: Position,
}
