//! The conformance runner: ksqlDB's query-validation tests (QTT) against Eddy's engine.
//!
//! `cargo test --release --test conformance`. Reads every `*.json` in `EDDY_QTT_DIR` (default
//! `../shared/conformance/qtt`), expands each case's `format` x `config` matrix, and runs each
//! expanded case on a fresh in-process broker and engine in a runtime of its own (dropped after
//! the case, which stops its queries): create the topics, run the statements, write the inputs
//! one by one, wait until every query has caught up, then compare each output topic's records
//! (key, value, timestamp) with the expected ones, or the error with `expectedException`.
//! Cases that need what Eddy leaves out on purpose (AVRO, PROTOBUF, JSON_SR: a schema registry)
//! are listed as unsupported with the reason. Prints a table per file and `N passed, M failed`,
//! writes a JSON report, and fails only if the pass count drops below `conformance-floor.txt`.
//! Cases where Eddy deliberately differs from ksqlDB are listed, with the reason, in
//! `conformance-differences.txt`: they are not run, and counted apart.
//! The REST flavour of the tests (`qtt/rest/`) runs through Eddy's HTTP API ([`rest`]).

#[path = "conformance/rest.rs"]
mod rest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eddy_broker::{Broker, BrokerConfig, InProcessClient, LogClient, ProducerRecord};
use eddy_engine::catalog::Source;
use eddy_engine::formats::{self, Format};
use eddy_engine::parser::{ColumnDef, Statement};
use eddy_engine::Engine;
use serde_json::Value;

const SCHEMA_REGISTRY_FORMATS: &[&str] = &["AVRO", "PROTOBUF", "PROTOBUF_NOSR", "JSON_SR"];

#[derive(Debug, Clone)]
struct Case {
    name: String,
    statements: Vec<String>,
    inputs: Vec<Value>,
    outputs: Vec<Value>,
    topics: Vec<(String, i32)>,
    expected_error: Option<String>,
    /// The HTTP status an RQTT `expectedError` names.
    expected_status: Option<u16>,
    /// RQTT: the expected `/ksql` entities and query answers; `None` for QTT cases.
    responses: Option<Vec<Value>>,
    /// RQTT: properties sent with every request.
    properties: BTreeMap<String, String>,
    unsupported: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Passed,
    Failed(String),
    Unsupported(String),
    /// Eddy deliberately behaves otherwise (`conformance-differences.txt`), for this reason.
    Difference(String),
}

fn main() {
    let dir = std::env::var_os("EDDY_QTT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/qtt")
        });
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let json_files = |dir: &Path| -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
    };
    let mut files = json_files(&dir);
    if files.is_empty() {
        panic!("no QTT files in {}", dir.display());
    }
    files.extend(json_files(&dir.join("rest")));
    let differences = differences();
    let mut report = Vec::new();
    let (mut passed, mut failed, mut unsupported) = (0usize, 0usize, 0usize);
    let mut different = 0usize;
    println!(
        "{:<32} {:>6} {:>6} {:>6} {:>6}",
        "file", "cases", "pass", "fail", "unsup"
    );
    for file in files {
        let mut stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if file.parent().is_some_and(|p| p.ends_with("rest")) {
            stem = format!("rest/{stem}");
        }
        let cases = load(&file, &stem);
        let mut counts = (0, 0, 0);
        for case in cases {
            if filter
                .as_ref()
                .is_some_and(|f| !case.name.contains(f.as_str()))
            {
                continue;
            }
            let outcome = match (&case.unsupported, differences.get(&case.name)) {
                (Some(reason), _) => Outcome::Unsupported(reason.clone()),
                (None, Some(reason)) => Outcome::Difference(reason.clone()),
                (None, None) => run_case(&case),
            };
            match &outcome {
                Outcome::Passed => counts.0 += 1,
                Outcome::Failed(_) => counts.1 += 1,
                Outcome::Unsupported(_) => counts.2 += 1,
                Outcome::Difference(_) => different += 1,
            }
            report.push(serde_json::json!({
                "case": case.name,
                "outcome": match &outcome {
                    Outcome::Passed => "passed",
                    Outcome::Failed(_) => "failed",
                    Outcome::Unsupported(_) => "unsupported",
                    Outcome::Difference(_) => "deliberate difference",
                },
                "reason": match &outcome {
                    Outcome::Failed(r) | Outcome::Unsupported(r) | Outcome::Difference(r) => {
                        r.clone()
                    }
                    Outcome::Passed => String::new(),
                },
            }));
        }
        if counts != (0, 0, 0) {
            println!(
                "{:<32} {:>6} {:>6} {:>6} {:>6}",
                stem,
                counts.0 + counts.1 + counts.2,
                counts.0,
                counts.1,
                counts.2
            );
        }
        passed += counts.0;
        failed += counts.1;
        unsupported += counts.2;
    }
    let report_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance-report.json");
    let _ = std::fs::write(
        &report_path,
        serde_json::to_vec_pretty(&report).unwrap_or_default(),
    );
    println!("report: {}", report_path.display());
    println!("unsupported (schema registry formats, disabled cases): {unsupported}");
    println!("deliberate differences (conformance-differences.txt): {different}");
    println!("{passed} passed, {failed} failed");
    let floor: usize = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance-floor.txt"),
    )
    .ok()
    .and_then(|s| {
        s.lines()
            .find(|l| !l.starts_with('#'))
            .and_then(|l| l.trim().parse().ok())
    })
    .unwrap_or(0);
    if filter.is_none() && passed < floor {
        eprintln!("conformance fell below the floor: {passed} passed, the floor is {floor}");
        std::process::exit(1);
    }
}

/// The cases Eddy deliberately differs on, by name, with the reason.
fn differences() -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance-differences.txt");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" | "))
        .map(|(name, why)| (name.trim().to_string(), why.trim().to_string()))
        .collect()
}

/// Reads one QTT file (with `//` comment lines) into expanded cases.
fn load(path: &Path, stem: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let cleaned: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let Ok(file) = serde_json::from_str::<Value>(&cleaned) else {
        eprintln!("{stem}: not valid JSON; skipped");
        return Vec::new();
    };
    let mut cases = Vec::new();
    for test in file["tests"].as_array().cloned().unwrap_or_default() {
        let name = test["name"].as_str().unwrap_or("unnamed").to_string();
        let formats: Vec<Option<String>> = match test["format"].as_array() {
            Some(list) => list.iter().map(|f| f.as_str().map(String::from)).collect(),
            None => vec![None],
        };
        let configs: Vec<Option<String>> = match test["config"].as_array() {
            Some(list) => list.iter().map(|c| Some(c.to_string())).collect(),
            None => vec![None],
        };
        for format in &formats {
            for config in &configs {
                let mut full = format!("{stem} - {name}");
                if let Some(f) = format {
                    full.push_str(&format!(" - {f}"));
                }
                if let Some(c) = config {
                    full.push_str(&format!(" - {c}"));
                }
                let statements: Vec<String> = test["statements"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(Value::as_str)
                            .map(|s| s.replace("{FORMAT}", format.as_deref().unwrap_or("")))
                            .collect()
                    })
                    .unwrap_or_default();
                let all_text = statements.join("\n").to_uppercase();
                let registry = SCHEMA_REGISTRY_FORMATS.iter().find(|f| {
                    all_text.contains(&format!("'{f}'")) || format.as_deref() == Some(**f)
                });
                let unsupported = if test["enabled"] == Value::Bool(false) {
                    Some("disabled in the corpus".to_string())
                } else {
                    registry.map(|f| {
                        format!("format {f} needs a schema registry, which Eddy leaves out")
                    })
                };
                let topics = test["topics"]
                    .as_array()
                    .map(|ts| {
                        ts.iter()
                            .filter_map(|t| {
                                Some((
                                    t["name"].as_str()?.to_string(),
                                    t["partitions"].as_i64().unwrap_or(1) as i32,
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                cases.push(Case {
                    name: full,
                    statements,
                    inputs: test["inputs"].as_array().cloned().unwrap_or_default(),
                    outputs: test["outputs"].as_array().cloned().unwrap_or_default(),
                    topics,
                    expected_error: test["expectedException"]
                        .as_object()
                        .or(test["expectedError"].as_object())
                        .map(|e| {
                            e.get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                                .to_string()
                        }),
                    expected_status: test["expectedError"]["status"].as_u64().map(|s| s as u16),
                    responses: test["responses"]
                        .as_array()
                        .cloned()
                        .or(stem.starts_with("rest/").then(Vec::new)),
                    properties: test["properties"]
                        .as_object()
                        .map(|p| {
                            p.iter()
                                .map(|(k, v)| {
                                    let v = v.as_str().map_or_else(|| v.to_string(), String::from);
                                    (k.clone(), v)
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    unsupported,
                });
            }
        }
    }
    cases
}

fn run_case(case: &Case) -> Outcome {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("runtime: {e}")),
    };
    let outcome = runtime.block_on(async {
        let run = async {
            match case.responses {
                Some(_) => rest::run_case(case).await,
                None => run_case_async(case).await,
            }
        };
        match tokio::time::timeout(Duration::from_secs(30), run).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Failed("timed out after 30 s".into()),
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    outcome
}

/// A fresh in-process broker (its folder lives as long as the guard) with the case's topics.
async fn fresh_log(case: &Case) -> Result<(tempfile::TempDir, Arc<dyn LogClient>), Outcome> {
    let dir = tempfile::tempdir().map_err(|e| Outcome::Failed(e.to_string()))?;
    let broker = Broker::open(BrokerConfig::new(dir.path()))
        .await
        .map_err(|e| Outcome::Failed(format!("broker: {e}")))?;
    let client: Arc<dyn LogClient> = Arc::new(InProcessClient::new(broker));
    for (topic, partitions) in topics_to_create(case) {
        let _ = client
            .create_topic(&topic, partitions, BTreeMap::new())
            .await;
    }
    Ok((dir, client))
}

async fn run_case_async(case: &Case) -> Outcome {
    let (_dir, client) = match fresh_log(case).await {
        Ok(log) => log,
        Err(outcome) => return outcome,
    };
    let engine = Engine::new(Arc::clone(&client));
    for (i, statement) in case.statements.iter().enumerate() {
        if let Err(e) = engine.execute(statement).await {
            let message = e.to_string();
            // A feature Eddy lacks is never the error a negative case expects.
            let lacking = message.starts_with("not supported yet");
            return match &case.expected_error {
                Some(expected) if !lacking && message.to_lowercase().contains(&expected.to_lowercase()) => {
                    Outcome::Passed
                }
                Some(expected) => Outcome::Failed(format!(
                    "statement {} failed with '{message}', expected an error containing '{expected}'",
                    i + 1
                )),
                None => Outcome::Failed(format!("statement {} failed: {message}", i + 1)),
            };
        }
    }
    if let Some(expected) = &case.expected_error {
        return Outcome::Failed(format!(
            "expected an error containing '{expected}', but every statement succeeded"
        ));
    }
    // A join reads two topics, and INSERT INTO ... SELECT adds a second query writing to a
    // sink: records are fed one at a time, each processed before the next is written, so
    // that the output follows the case's order (as ksqlDB's test driver does).
    let one_at_a_time = case.statements.iter().any(|s| {
        let s = s.to_uppercase();
        s.contains(" JOIN ") || (s.starts_with("INSERT INTO") && s.contains(" SELECT "))
    });
    for input in &case.inputs {
        if let Err(e) = write_input(&engine, &client, input).await {
            return Outcome::Failed(format!("writing input {input}: {e}"));
        }
        if one_at_a_time && !engine.wait_until_caught_up(Duration::from_secs(10)).await {
            return Outcome::Failed("queries did not catch up within 10 s".into());
        }
    }
    if !engine.wait_until_caught_up(Duration::from_secs(10)).await {
        return Outcome::Failed("queries did not catch up within 10 s".into());
    }
    compare_outputs(&engine, &client, case).await
}

fn topics_to_create(case: &Case) -> BTreeMap<String, i32> {
    let mut topics: BTreeMap<String, i32> = case.topics.iter().cloned().collect();
    for statement in &case.statements {
        let Ok(parsed) = eddy_engine::parse(statement, &BTreeMap::new()) else {
            continue;
        };
        for p in parsed {
            if let Statement::CreateSource { properties, .. } = p.statement {
                if let Some(topic) = properties.get("KAFKA_TOPIC") {
                    let partitions = properties
                        .get("PARTITIONS")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1);
                    topics.entry(topic.clone()).or_insert(partitions);
                }
            }
        }
    }
    for record in &case.inputs {
        if let Some(topic) = record["topic"].as_str() {
            topics.entry(topic.to_string()).or_insert(1);
        }
    }
    topics
}

/// The bytes of a key or value as the topic's format writes `value`.
fn encode(
    format: Format,
    columns: &[&ColumnDef],
    value: &Value,
) -> Result<Option<Vec<u8>>, String> {
    if value.is_null() {
        return Ok(None);
    }
    if columns.is_empty() {
        // A source without key columns ignores its records' keys: any bytes do.
        return Ok(Some(value.to_string().into_bytes()));
    }
    match format {
        Format::None => Ok(None),
        Format::Json => serde_json::to_vec(value)
            .map(Some)
            .map_err(|e| e.to_string()),
        Format::Delimited(_) => Ok(Some(match value {
            Value::String(s) => s.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        })),
        Format::Kafka => {
            let values: Vec<Value> = vec![value.clone(); columns.len().max(1)];
            formats::encode(format, columns, &values[..columns.len()], false)
                .map_err(|e| e.to_string())
        }
    }
}

async fn write_input(
    engine: &Engine,
    client: &Arc<dyn LogClient>,
    input: &Value,
) -> Result<(), String> {
    let topic = input["topic"].as_str().ok_or("input without topic")?;
    let source: Option<Arc<Source>> = engine.source_for_topic(topic);
    let (key, value) = match &source {
        Some(s) => {
            let keys: Vec<&ColumnDef> = s.key_columns().collect();
            let values: Vec<&ColumnDef> = s.value_columns().collect();
            let mut key = encode(s.key_format, &keys, &input["key"])?;
            if let (Some(kind), Some(window)) = (s.window, input["window"].as_object()) {
                let bound = |name: &str| window.get(name).and_then(Value::as_i64).unwrap_or(0);
                key = Some(formats::windowed_key(
                    key.as_deref(),
                    kind,
                    bound("start"),
                    bound("end"),
                ));
            }
            (key, encode(s.value_format, &values, &input["value"])?)
        }
        None => (
            encode(Format::Json, &[], &input["key"])?,
            encode(Format::Json, &[], &input["value"])?,
        ),
    };
    let record = ProducerRecord {
        key: key.map(Bytes::from),
        value: value.map(Bytes::from),
        timestamp_ms: Some(input["timestamp"].as_i64().unwrap_or(0)),
        ..Default::default()
    };
    client
        .produce(topic, vec![record])
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn compare_outputs(engine: &Engine, client: &Arc<dyn LogClient>, case: &Case) -> Outcome {
    let mut by_topic: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for output in &case.outputs {
        let topic = output["topic"].as_str().unwrap_or_default().to_string();
        by_topic.entry(topic).or_default().push(output);
    }
    for (topic, expected) in by_topic {
        let actual = match read_all(client, &topic).await {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(format!("reading {topic}: {e}")),
        };
        if actual.len() != expected.len() {
            return Outcome::Failed(format!(
                "topic {topic}: expected {} records, found {}",
                expected.len(),
                actual.len()
            ));
        }
        let source = engine.source_for_topic(&topic);
        for (i, (want, got)) in expected.iter().zip(&actual).enumerate() {
            if let Err(why) = compare_record(source.as_deref(), want, got) {
                return Outcome::Failed(format!("topic {topic} record {i}: {why}"));
            }
        }
    }
    Outcome::Passed
}

async fn read_all(
    client: &Arc<dyn LogClient>,
    topic: &str,
) -> Result<Vec<eddy_broker::ConsumedRecord>, String> {
    let partitions = client
        .partition_count(topic)
        .await
        .map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    for p in 0..partitions {
        let range = client.offsets(topic, p).await.map_err(|e| e.to_string())?;
        let mut offset = range.log_start_offset;
        while offset < range.high_watermark {
            let records = client
                .fetch(topic, p, offset, 1 << 20, Duration::from_millis(10))
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            all.extend(records);
        }
    }
    Ok(all)
}

fn compare_record(
    source: Option<&Source>,
    want: &Value,
    got: &eddy_broker::ConsumedRecord,
) -> Result<(), String> {
    if let Some(ts) = want["timestamp"].as_i64() {
        if ts != got.timestamp_ms {
            return Err(format!("timestamp {} but expected {ts}", got.timestamp_ms));
        }
    }
    let Some(source) = source else {
        return Err("no stream or table over this topic".into());
    };
    let keys: Vec<&ColumnDef> = source.key_columns().collect();
    let values: Vec<&ColumnDef> = source.value_columns().collect();
    let mut key_bytes = got.key.as_deref();
    if let (Some(kind), Some(bytes)) = (source.window, key_bytes) {
        let (key, start, end) = formats::split_windowed_key(bytes, kind)?;
        key_bytes = Some(key);
        let window = &want["window"];
        if !window.is_null() {
            let expected = (window["start"].as_i64(), window["end"].as_i64());
            if expected != (Some(start), Some(end)) {
                return Err(format!("window [{start}, {end}] but expected {window}"));
            }
        }
    } else if !want["window"].is_null() {
        return Err(format!(
            "expected window {}, found an unwindowed key",
            want["window"]
        ));
    }
    let actual_key = decode(source.key_format, &keys, key_bytes, false)?;
    compare_json(&want["key"], &actual_key).map_err(|e| format!("key: {e}"))?;
    let actual_value = decode(
        source.value_format,
        &values,
        got.value.as_deref(),
        source.wrap_single_value,
    )?;
    compare_json(&want["value"], &actual_value).map_err(|e| format!("value: {e}"))
}

/// Decodes bytes into the JSON shape QTT expects for the format.
fn decode(
    format: Format,
    columns: &[&ColumnDef],
    bytes: Option<&[u8]>,
    wrap: bool,
) -> Result<Value, String> {
    let Some(bytes) = bytes else {
        return Ok(Value::Null);
    };
    match format {
        Format::None => Ok(Value::Null),
        Format::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Format::Delimited(_) => Ok(Value::String(String::from_utf8_lossy(bytes).to_string())),
        Format::Kafka => {
            let values = formats::decode(format, columns, Some(bytes), wrap)?;
            Ok(values.into_iter().next().unwrap_or(Value::Null))
        }
    }
}

/// ksqlDB's `ExpectedRecordComparator`, driven by the expected value's JSON type.
fn compare_json(want: &Value, got: &Value) -> Result<(), String> {
    let mismatch = || Err(format!("expected {want}, found {got}"));
    match (want, got) {
        (Value::Null, Value::Null) => Ok(()),
        (Value::Object(w), Value::Object(g)) => {
            if w.len() != g.len() {
                return mismatch();
            }
            for (name, expected) in w {
                let actual = g.get(name).or_else(|| g.get(&name.to_uppercase()));
                match actual {
                    Some(actual) => {
                        compare_json(expected, actual).map_err(|e| format!("{name}: {e}"))?
                    }
                    None => return Err(format!("field {name} missing in {got}")),
                }
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            w.iter().zip(g).try_for_each(|(a, b)| compare_json(a, b))
        }
        (Value::Number(w), Value::Number(g)) => {
            if w.is_f64() || g.is_f64() {
                let (a, b) = (
                    w.as_f64().unwrap_or(f64::NAN),
                    g.as_f64().unwrap_or(f64::NAN),
                );
                if (a - b).abs() < 1e-6
                    && (w.is_f64() || g.as_f64().is_some_and(|x| x.fract() == 0.0))
                {
                    return Ok(());
                }
                return mismatch();
            }
            if w.as_i64() == g.as_i64() && w.as_u64() == g.as_u64() {
                Ok(())
            } else {
                mismatch()
            }
        }
        (Value::String(w), Value::String(g)) if w == g => Ok(()),
        (Value::Bool(w), Value::Bool(g)) if w == g => Ok(()),
        _ => mismatch(),
    }
}
