//! `POST /query` and `POST /query-stream`: push and pull queries, and `POST /close-query`;
//! `GET /ws/query`: the same queries over a WebSocket.
//!
//! A push query's rows travel engine -> bounded channel -> a forwarding task -> the response
//! body. When the client goes away the body is dropped, the forwarding task's next send
//! fails, it drops the engine's receiver, and the engine's query ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use eddy_engine::print::TopicPrint;
use eddy_engine::{PullResult, PushQuery, QueryResult, Session};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::entities::schema_text;
use crate::errors::{parse_body, properties, string_field, ApiError};
use crate::server::AppState;

/// Chunks buffered between the forwarding task and a slow client before the query waits.
const CLIENT_BUFFER_CHUNKS: usize = 64;

/// Rows waiting together go out in one chunk up to this many bytes, so a client's buffer
/// holds at most about CLIENT_BUFFER_CHUNKS * CHUNK_BYTES (2 MiB) of rows.
const CHUNK_BYTES: usize = 32 * 1024;

/// The content type of `/query-stream`'s line-per-row answer.
const DELIMITED: &str = "application/vnd.ksqlapi.delimited.v1";

/// How a query's answer is written.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// `/query`: a JSON array of `{"header"}`, `{"row": {"columns"}}`, `{"finalMessage"}`.
    Legacy,
    /// `/query-stream` delimited: a header object, then one JSON array per line.
    Delimited,
    /// `/query-stream` with `Accept: application/json`: one JSON array of all of them.
    JsonArray,
    /// `/ws/query`: `/query`'s objects, one per line, each line a WebSocket message.
    WebSocket,
}

/// `POST /query`: `{"ksql": "SELECT ...", "streamsProperties": {...}}`.
pub(crate) async fn query(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    run(&app, &body, "ksql", "streamsProperties", Shape::Legacy)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /query-stream`: `{"sql": "SELECT ...", "properties": {...}}`.
pub(crate) async fn query_stream(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shape = match accepts_json_array(&headers) {
        true => Shape::JsonArray,
        false => Shape::Delimited,
    };
    run(&app, &body, "sql", "properties", shape)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Whether a client asked for one JSON array (`Accept: application/json`, without the
/// delimited type) rather than one JSON value per line.
pub(crate) fn accepts_json_array(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    accept.contains("application/json") && !accept.contains(DELIMITED)
}

/// `POST /close-query`: `{"queryId": "..."}`.
pub(crate) async fn close_query(State(app): State<Arc<AppState>>, body: Bytes) -> Response {
    let closed = parse_body(&body).and_then(|body| {
        let id = string_field(&body, "queryId")?;
        if app.engine.close_query(id) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!(
                "no running push query with id '{id}'"
            )))
        }
    });
    match closed {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn run(
    app: &AppState,
    body: &[u8],
    sql_field: &str,
    properties_field: &str,
    shape: Shape,
) -> Result<Response, ApiError> {
    let answer = start(app, body, sql_field, properties_field, shape).await?;
    let content_type = match shape {
        Shape::Delimited => DELIMITED,
        Shape::Legacy | Shape::JsonArray | Shape::WebSocket => "application/json",
    };
    // An error item (the client fell behind) makes the server drop the connection, so the
    // client cannot mistake the cut for the end of the answer.
    let stream = ReceiverStream::new(answer.chunks).merge(ReceiverStream::new(answer.abort));
    let body = Body::from_stream(stream);
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

type Chunk = Result<Bytes, std::io::Error>;

/// A query's answer as it is produced: its chunks, and an error if the client is cut off.
struct Answer {
    chunks: mpsc::Receiver<Chunk>,
    abort: mpsc::Receiver<Chunk>,
}

/// The producing side of an [`Answer`]: a bounded buffer towards one client.
struct ToClient {
    chunks: mpsc::Sender<Chunk>,
    abort: mpsc::Sender<Chunk>,
    /// How long a full buffer is waited on before the client is cut off.
    slow_client_limit: Duration,
}

impl ToClient {
    fn new(slow_client_limit: Duration) -> (ToClient, Answer) {
        let (chunks, chunks_out) = mpsc::channel(CLIENT_BUFFER_CHUNKS);
        let (abort, abort_out) = mpsc::channel(1);
        let to_client = ToClient {
            chunks,
            abort,
            slow_client_limit,
        };
        let answer = Answer {
            chunks: chunks_out,
            abort: abort_out,
        };
        (to_client, answer)
    }

    /// Queues a chunk; false when the client left, or left its buffer full for longer than
    /// the limit (it is then cut off).
    async fn send(&self, query_id: &str, chunk: String) -> bool {
        let sent = tokio::time::timeout(
            self.slow_client_limit,
            self.chunks.send(Ok(Bytes::from(chunk))),
        )
        .await;
        match sent {
            Ok(sent) => sent.is_ok(),
            Err(_) => {
                tracing::warn!(query = %query_id, "push query client fell behind: disconnecting it");
                let cut = std::io::Error::other("the client fell behind");
                let _ = self.abort.try_send(Err(cut));
                false
            }
        }
    }
}

/// Starts the query a request body asks for; its answer arrives as chunks. Dropping the
/// answer ends a push query.
async fn start(
    app: &AppState,
    body: &[u8],
    sql_field: &str,
    properties_field: &str,
    shape: Shape,
) -> Result<Answer, ApiError> {
    let body = parse_body(body)?;
    let sql = string_field(&body, sql_field)?;
    let session = Session {
        properties: properties(&body, properties_field),
        variables: properties(&body, "sessionVariables"),
    };
    let result = app
        .engine
        .query_in(sql, &session)
        .await
        .map_err(|e| ApiError::statement(sql, &e, Vec::new()))?;
    let (to_client, answer) = ToClient::new(app.slow_client_limit);
    match result {
        QueryResult::Pull(pull) => {
            tokio::spawn(write_pull(pull, shape, to_client));
        }
        QueryResult::Push(push) => {
            tokio::spawn(forward_push(push, shape, to_client));
        }
        QueryResult::Print(print) => {
            tokio::spawn(forward_print(print, to_client));
        }
    }
    Ok(answer)
}

/// `GET /ws/query?request={"ksql": "...", "streamsProperties": {...}}`: the answer of `/query`
/// as WebSocket text messages (header, rows, final message). Closing the socket ends the
/// query.
pub(crate) async fn ws_query(
    State(app): State<Arc<AppState>>,
    Query(parameters): Query<BTreeMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(request) = parameters.get("request") else {
        return ApiError::bad_request(
            "the WebSocket query needs a `request` parameter: {\"ksql\": \"SELECT ...\"}",
        )
        .into_response();
    };
    match start(
        &app,
        request.as_bytes(),
        "ksql",
        "streamsProperties",
        Shape::WebSocket,
    )
    .await
    {
        Ok(answer) => upgrade.on_upgrade(move |socket| relay(socket, answer)),
        Err(e) => e.into_response(),
    }
}

/// Sends each line of the answer as a message until it ends or the client leaves.
async fn relay(mut socket: WebSocket, mut answer: Answer) {
    loop {
        tokio::select! {
            Some(_) = answer.abort.recv() => return,
            chunk = answer.chunks.recv() => {
                let Some(Ok(chunk)) = chunk else {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                };
                for line in String::from_utf8_lossy(&chunk).lines().filter(|l| !l.is_empty()) {
                    if socket.send(Message::Text(line.to_string().into())).await.is_err() {
                        return;
                    }
                }
            }
            incoming = socket.recv() => {
                if matches!(incoming, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                    return;
                }
            }
        }
    }
}

/// The header of an answer.
fn header_chunk(shape: Shape, query_id: &str, columns: &[(String, String)]) -> String {
    match shape {
        Shape::Legacy => format!(
            "[{}",
            json!({"header": {"queryId": query_id, "schema": schema_text(columns)}})
        ),
        Shape::WebSocket => format!(
            "{}\n",
            json!({"header": {"queryId": query_id, "schema": schema_text(columns)}})
        ),
        Shape::Delimited | Shape::JsonArray => {
            let header = json!({
                "queryId": query_id,
                "columnNames": columns.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "columnTypes": columns.iter().map(|(_, t)| t).collect::<Vec<_>>(),
            });
            match shape {
                Shape::Delimited => format!("{header}\n"),
                _ => format!("[{header}"),
            }
        }
    }
}

fn row_chunk(shape: Shape, values: &[Value]) -> String {
    match shape {
        Shape::Legacy => format!(",\n{}", json!({"row": {"columns": values}})),
        Shape::WebSocket => format!("{}\n", json!({"row": {"columns": values}})),
        Shape::Delimited => format!("{}\n", Value::from(values.to_vec())),
        Shape::JsonArray => format!(",\n{}", Value::from(values.to_vec())),
    }
}

/// The end of an answer; `message` is the legacy endpoint's final message.
fn end_chunk(shape: Shape, message: Option<&str>) -> String {
    match (shape, message) {
        (Shape::Legacy, Some(message)) => format!(",\n{}]\n", json!({"finalMessage": message})),
        (Shape::WebSocket, Some(message)) => format!("{}\n", json!({"finalMessage": message})),
        (Shape::WebSocket, None) => String::new(),
        (Shape::Legacy | Shape::JsonArray, _) => "]\n".to_string(),
        (Shape::Delimited, _) => String::new(),
    }
}

/// The end of an answer whose query failed while running: ksqlDB's error entity in place of
/// the final message.
fn error_chunk(shape: Shape, message: &str) -> String {
    let error = json!({"@type": "generic_error", "error_code": 50000, "message": message});
    match shape {
        Shape::Legacy => format!(",\n{}]\n", json!({"errorMessage": error})),
        Shape::WebSocket => format!("{}\n", json!({"errorMessage": error})),
        Shape::JsonArray => format!(",\n{error}]\n"),
        Shape::Delimited => format!("{error}\n"),
    }
}

async fn write_pull(pull: PullResult, shape: Shape, to_client: ToClient) {
    // `/query` headers mark a pull query's key columns; `/query-stream` lists bare types.
    let marked: Vec<(String, String)> = pull
        .columns
        .iter()
        .zip(pull.keys.iter().chain(std::iter::repeat(&false)))
        .map(|((name, data_type), key)| match key {
            true => (name.clone(), format!("{data_type} KEY")),
            false => (name.clone(), data_type.clone()),
        })
        .collect();
    let columns = match shape {
        Shape::Legacy | Shape::WebSocket => &marked,
        Shape::Delimited | Shape::JsonArray => &pull.columns,
    };
    let mut chunks = vec![header_chunk(shape, "pull", columns)];
    chunks.extend(pull.rows.iter().map(|row| row_chunk(shape, row)));
    chunks.push(end_chunk(shape, None));
    for chunk in chunks {
        if !to_client.send("pull", chunk).await {
            return;
        }
    }
}

/// Streams PRINT's text lines, as they are, whatever the endpoint (as ksqlDB does), until
/// the LIMIT or the client leaves.
async fn forward_print(mut print: TopicPrint, to_client: ToClient) {
    let id = format!("print {}", print.topic);
    loop {
        tokio::select! {
            line = print.lines.recv() => {
                let Some(mut chunk) = line else { return };
                while chunk.len() < CHUNK_BYTES {
                    match print.lines.try_recv() {
                        Ok(line) => chunk.push_str(&line),
                        Err(_) => break,
                    }
                }
                if !to_client.send(&id, chunk).await {
                    return;
                }
            }
            _ = to_client.chunks.closed() => return,
        }
    }
}

/// Streams a push query's rows to the client until the LIMIT or the client leaves; dropping
/// `push` at the end ends the engine's query.
async fn forward_push(mut push: PushQuery, shape: Shape, to_client: ToClient) {
    let columns: Vec<(String, String)> = push
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.data_type.to_string()))
        .collect();
    let query_id = push.query_id.clone();
    let send = |chunk: String| to_client.send(&query_id, chunk);
    if !send(header_chunk(shape, &push.query_id, &columns)).await {
        return;
    }
    let mut sent = 0usize;
    if push.limit == Some(0) {
        send(end_chunk(shape, Some("Limit Reached"))).await;
        return;
    }
    loop {
        tokio::select! {
            row = push.rows.recv() => {
                let Some(row) = row else {
                    let end = match push.failure.get() {
                        Some(failure) => error_chunk(shape, &failure),
                        None => end_chunk(shape, Some("Query Completed")),
                    };
                    send(end).await;
                    return;
                };
                // Rows that are already waiting go out in one chunk: one write, not one each;
                // but the delimited answer writes one row per write, as ksqlDB does (clients
                // read it a data frame at a time).
                let mut chunk = String::new();
                let mut next = Some(row);
                while let Some(row) = next.take() {
                    if !row.tombstone {
                        chunk.push_str(&row_chunk(shape, &row.values));
                        sent += 1;
                        if push.limit.is_some_and(|limit| sent >= limit) {
                            chunk.push_str(&end_chunk(shape, Some("Limit Reached")));
                            send(chunk).await;
                            return;
                        }
                    }
                    if chunk.len() < CHUNK_BYTES && shape != Shape::Delimited {
                        next = push.rows.try_recv().ok();
                    }
                }
                if !chunk.is_empty() && !send(chunk).await {
                    return;
                }
            }
            _ = to_client.chunks.closed() => return,
        }
    }
}
