//! Eddy's streaming SQL engine: ksqlDB's dialect, planned with DataFusion, run over topics.
//!
//! ```text
//! SQL --parser/--> Statement --engine.rs--> catalog.rs (streams, tables)
//!     --query.rs--> DataFusion LogicalPlan --> runtime/{filter_project,aggregate}.rs
//!     --formats.rs--> topics through eddy_broker::LogClient
//! ```
//! [`Engine`] is the facade: it runs statements, keeps the catalog and starts persistent
//! queries. [`parser`] reads ksqlDB statements on sqlparser; [`types`] maps ksqlDB types to
//! Arrow. Persistent queries run WHERE and SELECT, and GROUP BY over streams with DataFusion's
//! accumulators (every update emitted); windows, joins, PARTITION BY, push and pull queries
//! are next.

pub mod catalog;
pub mod engine;
pub mod error;
pub mod formats;
pub mod functions;
pub mod parser;
pub mod pull;
pub mod query;
pub mod runtime;
pub mod types;

pub use engine::{Engine, ExecutedScript, PushQuery, QueryResult, StatementResult};
pub use error::{EngineError, Position, SqlError};
pub use parser::{parse, Statement};
pub use pull::PullResult;
pub use runtime::PushRow;
pub use types::SqlType;
