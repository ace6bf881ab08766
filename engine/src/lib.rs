//! Eddy's streaming SQL engine: ksqlDB's dialect planned with DataFusion and run continuously
//! over topics. Not built yet; it will read and write topics only through
//! [`eddy_broker::LogClient`].
pub use eddy_broker::LogClient;
