//! The router, the small status endpoints, and serving with graceful shutdown.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{middleware, Json, Router};
use eddy_engine::Engine;
use serde_json::json;
use tokio::net::TcpListener;

use crate::auth::Users;
use crate::config::ApiSettings;
use crate::limits::BODY_BYTES_MAX;
use crate::timeouts::serve_connections;
use crate::tls::TlsListener;

/// The ksqlDB version whose API Eddy speaks, as `/info` reports it.
pub const SERVER_VERSION: &str = "0.29.0";

/// What every handler shares.
pub(crate) struct AppState {
    pub(crate) engine: Arc<Engine>,
    /// Who may call, when basic authentication is on.
    pub(crate) users: Option<Users>,
    /// How long a push-query client may leave its buffer full.
    pub(crate) slow_client_limit: Duration,
    /// How long a request body may take to arrive (on /inserts-stream: to pause).
    pub(crate) body_read_timeout: Duration,
    /// Numbers the commands `/ksql` ran, for `commandSequenceNumber`.
    pub(crate) commands: AtomicU64,
}

/// ksqlDB's endpoints over `engine`, open to `api.users` only when given.
pub fn router(engine: Arc<Engine>, api: ApiSettings) -> Router {
    let state = Arc::new(AppState {
        engine,
        users: api.users,
        slow_client_limit: api.slow_client_limit,
        body_read_timeout: api.body_read_timeout,
        commands: AtomicU64::new(1),
    });
    Router::new()
        .route("/ksql", post(crate::ksql::handle))
        .route("/query", post(crate::query::query))
        .route("/query-stream", post(crate::query::query_stream))
        .route("/close-query", post(crate::query::close_query))
        .route("/ws/query", get(crate::query::ws_query))
        .route("/inserts-stream", post(crate::inserts::handle))
        .route("/info", get(info))
        .route("/healthcheck", get(healthcheck))
        .route("/clusterStatus", get(cluster_status))
        .route("/status/{*command}", get(command_status))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        // Bodies are read after authentication: an unknown client cannot make us buffer one.
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::timeouts::read_body,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            crate::auth::authenticate,
        ))
        .layer(middleware::from_fn(crate::auth::request_id))
        .with_state(state)
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` until `shutdown` resolves, then stops accepting
/// and lets open requests finish. With `api.tls`, connections are TLS (HTTP/2 by ALPN);
/// without, plain TCP (HTTP/2 by prior knowledge). A connection that does not send a request
/// head within `api.header_read_timeout` is closed (timeouts.rs).
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    api: ApiSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = api.tls.clone();
    let header_read_timeout = api.header_read_timeout;
    let router = router(engine, api);
    if let Some(tls) = tls {
        let listener = TlsListener::new(listener, &tls)?;
        return serve_connections(listener, router, header_read_timeout, shutdown).await;
    }
    // Rows are small writes: without TCP_NODELAY, Nagle's algorithm holds each one back until
    // the client's delayed ACK (about 40 ms).
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    serve_connections(listener, router, header_read_timeout, shutdown).await
}

async fn info() -> Response {
    json_ok(json!({
        "KsqlServerInfo": {
            "version": SERVER_VERSION,
            "kafkaClusterId": "eddy",
            "ksqlServiceId": "default_",
            "serverStatus": "RUNNING",
        }
    }))
}

async fn healthcheck(State(app): State<Arc<AppState>>) -> Response {
    let kafka = app.engine.client().partition_count("__eddy_health").await;
    let kafka_healthy = !matches!(
        kafka,
        Err(ref e) if !matches!(e, eddy_broker::BrokerError::UnknownTopicOrPartition { .. })
    );
    json_ok(json!({
        "isHealthy": kafka_healthy,
        "details": {
            "metastore": {"isHealthy": true},
            "kafka": {"isHealthy": kafka_healthy},
            "commandRunner": {"isHealthy": true},
        }
    }))
}

async fn cluster_status() -> Response {
    json_ok(json!({
        "clusterStatus": {
            "localhost": {
                "hostAlive": true,
                "lastStatusUpdateMs": 0,
                "activeStandbyPerQuery": {},
                "hostStoreLags": {"stateStoreLags": {}, "updateTimeMs": 0},
            }
        }
    }))
}

/// Statements run synchronously, so every command the server knows has finished.
async fn command_status(Path(command): Path<String>) -> Response {
    json_ok(json!({
        "status": "SUCCESS",
        "message": format!("command {command} finished"),
        "queryId": null,
    }))
}

/// A 200 answer with one JSON object.
fn json_ok(value: serde_json::Value) -> Response {
    (StatusCode::OK, Json(value)).into_response()
}
