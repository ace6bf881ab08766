//! The engine's errors. SQL errors carry the line and column they are about.

use std::fmt;

/// A position in the SQL text, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}:{}", self.line, self.column)
    }
}

/// A problem with a statement, at a position, in the shape of DataFusion's `Diagnostic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub message: String,
    pub position: Position,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.position, self.message)
    }
}

/// What went wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The statement does not parse or does not make sense; says where.
    #[error("{0}")]
    Sql(Box<SqlError>),
    /// A stream, table, query or topic named in the statement does not exist.
    #[error("{kind} '{name}' does not exist")]
    NotFound { kind: &'static str, name: String },
    /// A stream or table of that name exists already.
    #[error("{kind} '{name}' already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// Something the statement asks for that Eddy does not do yet.
    #[error("not supported yet: {0}")]
    Unsupported(String),
    /// Planning failed (DataFusion's message).
    #[error("{0}")]
    Plan(String),
    /// Evaluating a query on data failed (Arrow's message).
    #[error("{0}")]
    Execution(String),
    /// The log failed.
    #[error(transparent)]
    Broker(#[from] eddy_broker::BrokerError),
    #[error("internal error (this is a bug in Eddy): {0}")]
    Internal(String),
}

impl EngineError {
    /// A SQL error at `position`.
    pub fn sql(message: impl Into<String>, position: Position) -> EngineError {
        EngineError::Sql(Box::new(SqlError {
            message: message.into(),
            position,
        }))
    }
}

impl From<datafusion::error::DataFusionError> for EngineError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        EngineError::Plan(ksqldb_wording(e.to_string()))
    }
}

/// DataFusion's planning errors that ksqlDB words differently, in ksqlDB's words (users and
/// ksqlDB's tests search for them); others pass through.
fn ksqldb_wording(message: String) -> String {
    // "Column in SELECT must be in GROUP BY or an aggregate function: [While expanding
    // wildcard, ]column "TEST.D1" must appear in the GROUP BY clause ..."
    for clause in ["SELECT", "HAVING"] {
        let prefix = format!("Column in {clause} must be in GROUP BY or an aggregate function");
        if message.contains(&prefix) {
            let column = message
                .split('"')
                .nth(1)
                .map(|c| c.rsplit('.').next().unwrap_or(c).to_string());
            if let Some(column) = column {
                return match clause {
                    "SELECT" => format!(
                        "Non-aggregate SELECT expression(s) not part of GROUP BY: {column}\n\
                         Either add the column(s) to the GROUP BY or remove them from the SELECT."
                    ),
                    _ => format!("Non-aggregate HAVING expression not part of GROUP BY: {column}"),
                };
            }
        }
    }
    // "Invalid function 'wont_find_me'. Did you mean 'find_in_set'?"
    if let Some(rest) = message.split("Invalid function '").nth(1) {
        if let Some(name) = rest.split('\'').next() {
            return format!(
                "Can't find any functions with the name '{}'",
                name.to_uppercase()
            );
        }
    }
    message
}

impl From<datafusion::arrow::error::ArrowError> for EngineError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        EngineError::Execution(e.to_string())
    }
}

/// Results in the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

const _: () = assert!(std::mem::size_of::<EngineError>() <= 64);
