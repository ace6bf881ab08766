//! `POST /inserts-stream`: a first line `{"target": "STREAM"}`, then one JSON object per row.
//! The rows of a request are written with the engine's INSERT path in one write to the topic,
//! and each is acknowledged on its own line (`{"status":"ok","seq":n}`) once the broker
//! acknowledged it, or answered with an error for that row; the rows after a bad one still go
//! in. A client that accepts `application/json` (and not the delimited type) gets the answers
//! as one JSON array instead, as ksqlDB answers it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::errors::{string_field, ApiError, BAD_STATEMENT};
use crate::server::AppState;

pub(crate) async fn handle(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answers = match run(&app, &body).await {
        Ok(answers) => answers,
        Err(e) => return e.into_response(),
    };
    // As ksqlDB: one JSON array for a client that accepts JSON, else one object per line.
    if crate::query::accepts_json_array(&headers) {
        let array = Value::Array(answers);
        return (
            [(header::CONTENT_TYPE, "application/json")],
            array.to_string(),
        )
            .into_response();
    }
    let mut text = String::new();
    for answer in answers {
        text.push_str(&answer.to_string());
        text.push('\n');
    }
    (
        [(header::CONTENT_TYPE, "application/vnd.ksqlapi.delimited.v1")],
        text,
    )
        .into_response()
}

/// The answer for each row, in order.
async fn run(app: &AppState, body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the request body is not UTF-8"))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let first = lines.next().ok_or_else(|| {
        ApiError::bad_request("the request has no body: send {\"target\": \"STREAM\"} and rows")
    })?;
    let header = crate::errors::parse_body(first.as_bytes())?;
    let target = string_field(&header, "target")?.to_uppercase();
    app.engine
        .source(&target)
        .map_err(|e| ApiError::statement(first, &e, Vec::new()))?;
    // Rows that parse go to the engine together; the others get their error in place.
    let mut answers: Vec<Option<Value>> = Vec::new();
    let mut rows = Vec::new();
    for (seq, line) in lines.enumerate() {
        answers.push(match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(row)) => {
                rows.push((seq, row.into_iter().collect::<BTreeMap<String, Value>>()));
                None
            }
            Ok(_) => Some(error_row(seq, "each row must be a JSON object".into())),
            Err(e) => Some(error_row(seq, format!("the row is not valid JSON: {e}"))),
        });
    }
    let (seqs, rows): (Vec<usize>, Vec<_>) = rows.into_iter().unzip();
    match app.engine.insert_rows(&target, rows).await {
        Ok(results) => {
            for (seq, result) in seqs.into_iter().zip(results) {
                answers[seq] = Some(match result {
                    Ok(()) => json!({"status": "ok", "seq": seq}),
                    Err(e) => error_row(seq, e.to_string()),
                });
            }
        }
        Err(e) => {
            for seq in seqs {
                answers[seq] = Some(error_row(seq, e.to_string()));
            }
        }
    }
    Ok(answers.into_iter().flatten().collect())
}

fn error_row(seq: usize, message: String) -> Value {
    json!({"status": "error", "seq": seq, "error_code": BAD_STATEMENT, "message": message})
}
