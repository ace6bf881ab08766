//! Errors in ksqlDB's shape: `@type`, `error_code` (ksqlDB's numbering), `message`,
//! `stackTrace`, and for statements `statementText` and `entities`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use eddy_engine::EngineError;
use serde_json::{json, Value};

/// ksqlDB's error codes.
pub(crate) const BAD_REQUEST: u32 = 40000;
pub(crate) const BAD_STATEMENT: u32 = 40001;
pub(crate) const QUERY_ENDPOINT: u32 = 40002;
pub(crate) const NOT_FOUND: u32 = 40400;
pub(crate) const REQUEST_TIMEOUT: u32 = 40800;
pub(crate) const PAYLOAD_TOO_LARGE: u32 = 41300;
pub(crate) const SERVER_ERROR: u32 = 50000;

/// An error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    /// A request the server cannot read (bad JSON, missing fields).
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({
                "@type": "generic_error",
                "error_code": BAD_REQUEST,
                "message": message.into(),
                "stackTrace": [],
            }),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::generic(StatusCode::NOT_FOUND, NOT_FOUND, message.into())
    }

    /// A request whose body did not arrive in time.
    pub(crate) fn request_timeout(message: String) -> ApiError {
        ApiError::generic(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT, message)
    }

    /// A request whose body is over the size limit.
    pub(crate) fn too_large(message: String) -> ApiError {
        ApiError::generic(StatusCode::PAYLOAD_TOO_LARGE, PAYLOAD_TOO_LARGE, message)
    }

    fn generic(status: StatusCode, code: u32, message: String) -> ApiError {
        ApiError {
            status,
            body: json!({
                "@type": "generic_error",
                "error_code": code,
                "message": message,
                "stackTrace": [],
            }),
        }
    }

    /// A statement that failed, with the results of the statements before it.
    pub(crate) fn statement(text: &str, error: &EngineError, entities: Vec<Value>) -> ApiError {
        let (status, code) = match error {
            EngineError::Broker(_) | EngineError::Internal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, SERVER_ERROR)
            }
            _ => (StatusCode::BAD_REQUEST, BAD_STATEMENT),
        };
        ApiError::statement_with_code(status, code, text, error.to_string(), entities)
    }

    pub(crate) fn statement_with_code(
        status: StatusCode,
        code: u32,
        text: &str,
        message: String,
        entities: Vec<Value>,
    ) -> ApiError {
        ApiError {
            status,
            body: json!({
                "@type": "statement_error",
                "error_code": code,
                "message": message,
                "statementText": text,
                "entities": entities,
                "stackTrace": [],
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Reads a JSON request body, answering 400 with the reason when it is not what we expect.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request has no body: send a JSON object",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    Ok(value)
}

/// A required string field of a request body.
pub(crate) fn string_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    body.get(name).and_then(Value::as_str).ok_or_else(|| {
        ApiError::bad_request(format!("the request body needs a string field '{name}'"))
    })
}

/// The string-valued properties of a request (`streamsProperties` or `properties`).
pub(crate) fn properties(body: &Value, field: &str) -> std::collections::BTreeMap<String, String> {
    body.get(field)
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}
