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
        EngineError::Plan(e.to_string())
    }
}

impl From<datafusion::arrow::error::ArrowError> for EngineError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        EngineError::Execution(e.to_string())
    }
}

/// Results in the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

const _: () = assert!(std::mem::size_of::<EngineError>() <= 64);
