//! `POST /ksql`: statements in, one entity per statement out.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use eddy_engine::parser::Statement;
use eddy_engine::{EngineError, Session};
use serde_json::Value;

use crate::entities::entity;
use crate::errors::{parse_body, properties, string_field, ApiError, QUERY_ENDPOINT};
use crate::server::AppState;

/// Runs the statements of `{"ksql": "...", "streamsProperties": {...}}` in order; the answer
/// is an array of entities, or the first failure with the entities before it.
pub(crate) async fn handle(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    match run(&app, &body).await {
        Ok(entities) => (StatusCode::OK, Json(Value::Array(entities))).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn run(app: &AppState, body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let body = parse_body(body)?;
    let sql = string_field(&body, "ksql")?;
    // SET and DEFINE last for this request only: the client sends its session with each.
    let mut session = Session {
        properties: properties(&body, "streamsProperties"),
        variables: properties(&body, "sessionVariables"),
    };
    // Queries belong on /query: say so before running anything, as ksqlDB does.
    let parsed = eddy_engine::parse(sql, &session.variables)
        .map_err(|e| ApiError::statement(sql, &e, Vec::new()))?;
    if let Some(select) = parsed
        .iter()
        .find(|p| matches!(p.statement, Statement::Select(_)))
    {
        return Err(ApiError::statement_with_code(
            StatusCode::BAD_REQUEST,
            QUERY_ENDPOINT,
            &select.text,
            "The following statement types should be issued to the websocket endpoint '/query': SELECT"
                .into(),
            Vec::new(),
        ));
    }
    let script = app
        .engine
        .execute_each_in(sql, &mut session)
        .await
        .map_err(|e: EngineError| ApiError::statement(sql, &e, Vec::new()))?;
    let entities: Vec<Value> = script
        .results
        .iter()
        .filter_map(|(text, result)| {
            let sequence = app.commands.fetch_add(1, Ordering::Relaxed);
            entity(text, result, sequence)
        })
        .collect();
    match script.failure {
        None => Ok(entities),
        Some((text, error)) => Err(ApiError::statement(&text, &error, entities)),
    }
}
