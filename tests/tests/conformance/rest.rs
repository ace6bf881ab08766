//! RQTT: ksqlDB's REST query-validation tests (`qtt/rest/`), run against Eddy's HTTP API.
//!
//! Each case gets a fresh broker and engine behind `eddy_rest::serve` on a loopback port, and a
//! real HTTP client: the statements that are not queries go to `POST /ksql` one by one, then
//! the inputs are written and the queries caught up, then each SELECT goes to `POST /query`
//! (reading from the earliest offset, as ksqlDB's runner does; a case that waits for its push
//! queries to run sends them first, reading from `latest` as it says, and writes the inputs
//! once the engine runs them). The answers are matched as
//! ksqlDB matches them: `/ksql` entities by the fields the case names, query answers by their
//! header's schema and their rows; an `expectedError` by its message and HTTP status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eddy_engine::Engine;
use serde_json::{json, Value};

use super::{compare_json, compare_outputs, fresh_log, write_input, Case, Outcome};

/// How long one request may take (a push query ends at its LIMIT).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn run_case(case: &Case) -> Outcome {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_dir, client) = match fresh_log(case).await {
        Ok(log) => log,
        Err(outcome) => return outcome,
    };
    let engine = Arc::new(Engine::new(Arc::clone(&client)));
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => return Outcome::Failed(format!("listening: {e}")),
    };
    let url = match listener.local_addr() {
        Ok(address) => format!("http://{address}"),
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    tokio::spawn(eddy_rest::serve(
        listener,
        Arc::clone(&engine),
        eddy_rest::ApiSettings::default(),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let mut properties: BTreeMap<String, String> = case.properties.clone();
    let (queries, admin): (Vec<&String>, Vec<&String>) =
        case.statements.iter().partition(|s| is_query(s));

    let mut answers = Vec::new();
    for statement in admin {
        let body = json!({"ksql": statement, "streamsProperties": properties});
        match post(&http, &format!("{url}/ksql"), &body).await {
            Ok(Value::Array(entities)) => {
                answers.extend(entities.into_iter().map(|e| json!({"admin": e})))
            }
            Ok(other) => return Outcome::Failed(format!("/ksql answered {other}")),
            Err(error) => return expected_error(case, error),
        }
    }
    let mut pending = Vec::new();
    if case.inputs_after_push_queries {
        for query in &queries {
            let body = json!({"ksql": query, "streamsProperties": properties});
            let (http, url) = (http.clone(), format!("{url}/query"));
            pending.push(tokio::spawn(async move { post(&http, &url, &body).await }));
        }
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        while engine.push_queries().len() < queries.len()
            && !pending.iter().all(|p| p.is_finished())
        {
            if tokio::time::Instant::now() > deadline {
                return Outcome::Failed("the push queries did not start within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    for input in &case.inputs {
        if let Err(e) = write_input(&engine, &client, input).await {
            return Outcome::Failed(format!("writing input {input}: {e}"));
        }
    }
    if !engine.wait_until_caught_up(REQUEST_TIMEOUT).await {
        return Outcome::Failed("queries did not catch up within 10 s".into());
    }
    let mut results = Vec::new();
    for query in pending {
        let failed = |e: tokio::task::JoinError| HttpError {
            status: 0,
            message: e.to_string(),
        };
        results.push(query.await.unwrap_or_else(|e| Err(failed(e))));
    }
    if !case.inputs_after_push_queries {
        properties
            .entry("auto.offset.reset".into())
            .or_insert_with(|| "earliest".into());
        for query in &queries {
            let body = json!({"ksql": query, "streamsProperties": properties});
            results.push(post(&http, &format!("{url}/query"), &body).await);
        }
    }
    for result in results {
        match result {
            Ok(rows) => answers.push(json!({"query": rows})),
            Err(error) => return expected_error(case, error),
        }
    }
    if let Some(expected) = &case.expected_error {
        return Outcome::Failed(format!(
            "expected an error containing '{expected}', but every statement succeeded"
        ));
    }
    let expected = case.responses.as_deref().unwrap_or_default();
    if answers.len() < expected.len() {
        return Outcome::Failed(format!(
            "expected {} responses, got {}",
            expected.len(),
            answers.len()
        ));
    }
    for (i, (want, got)) in expected.iter().zip(&answers).enumerate() {
        let matched = match (&want["admin"], &want["query"]) {
            (admin, _) if !admin.is_null() => contains(admin, &got["admin"]),
            (_, Value::Array(rows)) => same_answer(rows, &got["query"]),
            _ => Err(format!("unknown expected response {want}")),
        };
        if let Err(why) = matched {
            return Outcome::Failed(format!("response {}: {why}", i + 1));
        }
    }
    compare_outputs(&engine, &client, case).await
}

fn is_query(statement: &str) -> bool {
    let upper = statement.trim_start().to_uppercase();
    upper.starts_with("SELECT") || upper.starts_with("PRINT")
}

/// An HTTP error: status and ksqlDB's error message.
struct HttpError {
    status: u16,
    message: String,
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value, HttpError> {
    let failed = |message: String| HttpError { status: 0, message };
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(REQUEST_TIMEOUT);
    let response = request.send().await.map_err(|e| failed(e.to_string()))?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| failed(e.to_string()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| failed(format!("not JSON ({e}): {text}")))?;
    if status != 200 {
        let message = value["message"].as_str().unwrap_or(&text).to_string();
        return Err(HttpError { status, message });
    }
    Ok(value)
}

/// Whether a failed request is the error the case expects.
fn expected_error(case: &Case, error: HttpError) -> Outcome {
    let lacking = error.message.starts_with("not supported yet");
    match (&case.expected_error, case.expected_status) {
        (Some(message), status)
            if !lacking
                && error
                    .message
                    .to_lowercase()
                    .contains(&message.to_lowercase())
                && status.is_none_or(|s| s == error.status) =>
        {
            Outcome::Passed
        }
        (Some(message), status) => Outcome::Failed(format!(
            "failed with {} '{}', expected {} containing '{message}'",
            error.status,
            error.message,
            status.map_or("an error".to_string(), |s| s.to_string()),
        )),
        (None, _) => Outcome::Failed(format!(
            "request failed with {}: {}",
            error.status, error.message
        )),
    }
}

/// ksqlDB's partial match of an entity: every field the case names, recursively.
fn contains(want: &Value, got: &Value) -> Result<(), String> {
    match (want, got) {
        (Value::Object(fields), Value::Object(actual)) => {
            for (name, value) in fields {
                let found = actual.get(name).unwrap_or(&Value::Null);
                contains(value, found).map_err(|e| format!("{name}: {e}"))?;
            }
            Ok(())
        }
        (Value::Array(items), Value::Array(actual)) if items.len() == actual.len() => items
            .iter()
            .zip(actual)
            .try_for_each(|(w, g)| contains(w, g)),
        _ if want == got => Ok(()),
        _ => Err(format!("expected {want}, found {got}")),
    }
}

/// A query's answer: the header's schema, then the rows (the final message aside).
fn same_answer(want: &[Value], got: &Value) -> Result<(), String> {
    let got = got.as_array().cloned().unwrap_or_default();
    let header = |items: &[Value]| {
        items
            .iter()
            .find_map(|item| item["header"]["schema"].as_str().map(str::to_string))
    };
    if let Some(schema) = header(want) {
        if header(&got).as_deref() != Some(schema.as_str()) {
            return Err(format!(
                "header schema {:?}, expected {schema:?}",
                header(&got)
            ));
        }
    }
    let rows = |items: &[Value]| -> Vec<Value> {
        items
            .iter()
            .filter(|item| !item["row"].is_null())
            .map(|item| item["row"]["columns"].clone())
            .collect()
    };
    let (want_rows, got_rows) = (rows(want), rows(&got));
    if want_rows.len() != got_rows.len() {
        return Err(format!(
            "expected {} rows {want_rows:?}, found {} {got_rows:?}",
            want_rows.len(),
            got_rows.len()
        ));
    }
    // As a multiset (ksqlDB's RQTT checks order only under `verifyOrder`, which no file sets):
    // each expected row takes the first unmatched row equal to it.
    let mut unmatched: Vec<&Value> = got_rows.iter().collect();
    for (i, w) in want_rows.iter().enumerate() {
        match unmatched.iter().position(|g| compare_json(w, g).is_ok()) {
            Some(found) => {
                unmatched.remove(found);
            }
            None => {
                let closest = unmatched.first().map(|g| compare_json(w, g));
                let why = closest.and_then(|c| c.err()).unwrap_or_default();
                return Err(format!("row {i} {w} not found ({why})"));
            }
        }
    }
    Ok(())
}
