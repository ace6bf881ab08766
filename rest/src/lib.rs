//! Eddy's ksqlDB-compatible HTTP API over the engine. Not built yet.
pub use eddy_engine::LogClient;
