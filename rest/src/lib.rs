//! Eddy's ksqlDB-compatible HTTP API over the engine, so ksqlDB's clients work unchanged.
//!
//! ```text
//! HTTP/1.1 or HTTP/2, plain or TLS (tls.rs) --axum--> server.rs (routes, shutdown)
//!     /ksql              ksql.rs     statements -> ksqlDB entities (entities.rs)
//!     /query             query.rs    push and pull queries, ksqlDB's chunked JSON array
//!     /query-stream      query.rs    delimited or JSON rows; /close-query ends one
//!     /ws/query          query.rs    /query's messages over a WebSocket
//!     /inserts-stream    inserts.rs  rows in, one acknowledgement per row
//!     /info, /healthcheck, /clusterStatus, /status/{id}    server.rs
//! errors.rs: ksqlDB's error bodies and codes
//! auth.rs: basic authentication and request ids; config.rs: the server's config file
//! timeouts.rs: the server loop, and header and body read timeouts for slow clients
//! limits.rs: every bound on clients, with its default
//! ```
//! [`serve`] runs the server on a listener over an [`eddy_engine::Engine`]. Push queries are
//! engine queries whose rows reach the client through a bounded buffer: a client that goes
//! away ends its query at once.

mod auth;
mod config;
mod entities;
mod errors;
mod inserts;
mod ksql;
pub mod limits;
mod query;
mod server;
mod timeouts;
mod tls;

pub use auth::{hash_password, Users};
pub use config::{ApiSettings, ServerConfig};
pub use server::{router, serve, SERVER_VERSION};
pub use tls::TlsConfig;
