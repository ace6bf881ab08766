//! Eddy's streaming SQL engine: ksqlDB's dialect, planned with DataFusion, run over topics.
//!
//! ```text
//! SQL --parser/--> Statement --engine.rs--> catalog.rs (streams, tables)
//!     --query/stages.rs--> stages: subqueries in FROM, and each join of a chain of more than
//!         two sources but the last, planned as queries of their own writing internal topics
//!         `_eddy_<query id>_S<n>_output` that the next stage reads as a source
//!     --query.rs (query/{join,over}.rs)--> DataFusion LogicalPlan, per stage
//!     --> runtime/exchange.rs (where each operator's state lives: per partition, after a
//!         repartition topic `_eddy_<query id>_<side>_repartition`, or shared)
//!     --> runtime/operator.rs (the StreamOperator interface; the plan's operator lowered
//!         to one) --> runtime/{filter_project,aggregate,join,over}.rs, one task per
//!         partition read, counted per operator by runtime/metrics.rs (DESCRIBE EXTENDED)
//!     --formats.rs--> topics through eddy_broker::LogClient
//! ```
//! [`Engine`] is the facade: it runs statements, keeps the catalog (durably, through the
//! command topic, with [`Engine::open`]) and starts persistent queries. [`parser`] reads ksqlDB
//! statements on sqlparser; [`query`] plans a SELECT with DataFusion and lowers it to Eddy's
//! operators; [`runtime`] runs them (filter and projection; GROUP BY over streams and tables,
//! windowed or not, EMIT CHANGES or FINAL; stream-stream, stream-table and table-table joins;
//! aggregates OVER windows of a stream) one task per partition, each stateful operator owning
//! its keys' state, after a repartition topic when keyed by other columns than the sources'
//! key, and keeps the processing log; [`pull`] answers pull queries over a snapshot; [`print`] dumps a topic's raw records (PRINT); [`functions`] holds ksqlDB's
//! functions that DataFusion lacks and the catalog SHOW FUNCTIONS lists; [`types`] maps
//! ksqlDB types to Arrow; `values` evaluates INSERT VALUES and makes records of rows.

pub mod catalog;
pub mod engine;
pub mod error;
pub mod formats;
pub mod functions;
pub mod limits;
pub mod parser;
pub mod print;
pub mod properties;
pub mod pull;
pub mod query;
pub mod runtime;
pub mod types;
mod values;

pub use engine::{
    Engine, ExecutedScript, PushQuery, QueryResult, QuerySummary, Session, SourceStatistics,
    StatementResult,
};
pub use error::{EngineError, Position, SqlError};
pub use parser::{parse, split_statements, Statement};
pub use pull::PullResult;
pub use runtime::PushRow;
pub use types::SqlType;
