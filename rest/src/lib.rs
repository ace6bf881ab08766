//! Eddy's ksqlDB-compatible HTTP API over the engine. Not built yet: it will serve the engine's
//! statements (`eddy_engine`) on ksqlDB's endpoints.
