//! The conformance runner: ksqlDB's query-validation tests (QTT) against Eddy's engine.
//!
//! `cargo test --release --test conformance`. Reads every `*.json` in `EDDY_QTT_DIR` (default
//! `../shared/conformance/qtt`; `//` and `/* */` comments stripped as Jackson's ALLOW_COMMENTS
//! does, a file that still does not parse counted as a failed case, never skipped), expands
//! each case's `format` x `config` matrix, and runs each
//! expanded case on a fresh in-process broker and engine in a runtime of its own (dropped after
//! the case, which stops its queries): create the topics, run the statements, write the inputs
//! one by one, wait until every query has caught up, then compare each output topic's records
//! (key, value, timestamp) with the expected ones, or the error with `expectedException`.
//! Cases that need what Eddy leaves out on purpose (AVRO, PROTOBUF, JSON_SR: a schema registry)
//! are listed as unsupported with the reason. Prints a table per file, the unsupported cases'
//! reasons with their counts, and `N passed, M failed`, and writes a JSON report.
//! `conformance-passing.txt` lists every case that passes: the run fails, naming them, when
//! one of them no longer does (a listed case that fails is run twice more first, so a case
//! that fails only under load is reported but does not fail the run). `EDDY_CONFORMANCE_UPDATE=1`
//! rewrites the list with the cases that pass now.
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

/// Functions only ksqlDB's test build registers (`../shared/conformance/FORMAT.md`, section 8).
const TEST_BUILD_FUNCTIONS: &[&str] = &[
    "BAD_UDF",
    "TEST_UDF",
    "TEST_UDTF",
    "THROWING_UDTF",
    "WHENCONDITION",
    "WHENRESULT",
    "TEST_UDAF",
    "VAR_ARG",
    "MULTI_ARG",
    "FOUR_ARG",
    "FIVE_ARG",
    "MID_VAR_ARG",
    "OBJ_COL_ARG",
    "GENERIC_VAR_ARG",
];

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
    /// RQTT `inputConditions.waitForActivePushQuery`: the inputs are written once the push
    /// queries run (which read from `latest`).
    inputs_after_push_queries: bool,
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
    let listed = passing_list();
    let mut passing = Vec::new();
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
        let mut counts = (0, 0, 0);
        let cases = load(&file, &stem).unwrap_or_else(|reason| {
            let case = format!("{stem} - (the whole file)");
            println!("{case}: {reason}");
            report.push(serde_json::json!({"case": case, "outcome": "failed", "reason": reason}));
            counts.1 += 1;
            Vec::new()
        });
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
                (None, None) => run_listed_case(&case, listed.contains(&case.name)),
            };
            if outcome == Outcome::Passed {
                passing.push(case.name.clone());
            }
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
    let mut reasons = BTreeMap::<&str, usize>::new();
    for entry in &report {
        if entry["outcome"] == "unsupported" {
            *reasons
                .entry(entry["reason"].as_str().unwrap_or(""))
                .or_default() += 1;
        }
    }
    println!("unsupported: {unsupported}");
    for (reason, count) in reasons {
        println!("  {count:>5}  {reason}");
    }
    println!("deliberate differences (conformance-differences.txt): {different}");
    println!("{passed} passed, {failed} failed");
    if filter.is_some() {
        return;
    }
    if std::env::var_os("EDDY_CONFORMANCE_UPDATE").is_some() {
        passing.sort();
        let mut text = PASSING_HEADER.to_string();
        text.extend(passing.iter().map(|name| format!("{name}\n")));
        std::fs::write(passing_path(), text).expect("write the list of passing cases");
        println!(
            "{} cases written to {}",
            passing.len(),
            passing_path().display()
        );
        return;
    }
    let passing: std::collections::BTreeSet<&String> = passing.iter().collect();
    let new = passing
        .iter()
        .filter(|name| !listed.contains(**name))
        .count();
    if new > 0 {
        println!(
            "{new} cases pass that {PASSING} does not list: add them with \
             EDDY_CONFORMANCE_UPDATE=1 cargo test --release --test conformance"
        );
    }
    let lost: Vec<&String> = listed
        .iter()
        .filter(|name| !passing.contains(name))
        .collect();
    if !lost.is_empty() {
        eprintln!("{} cases listed in {PASSING} no longer pass:", lost.len());
        for name in lost {
            let reason = report
                .iter()
                .find(|entry| entry["case"] == name.as_str())
                .and_then(|entry| entry["reason"].as_str())
                .unwrap_or("not in the corpus any more");
            eprintln!("  {name}: {reason}");
        }
        std::process::exit(1);
    }
}

/// The list of the cases that pass, one name a line: a case that stops passing fails the run.
const PASSING: &str = "conformance-passing.txt";

const PASSING_HEADER: &str = "\
# The conformance cases Eddy passes, one a line (tests/tests/conformance.rs): the runner fails,
# naming it, when one of them no longer passes. Rewrite it after a change that makes more pass:
#   EDDY_CONFORMANCE_UPDATE=1 cargo test --release --test conformance
";

fn passing_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(PASSING)
}

fn passing_list() -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(passing_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// Runs a case; one the list says passes is run up to twice more when it fails, so that a case
/// failing only under load (a timeout on a busy machine) does not fail the run. Each retry is
/// printed.
fn run_listed_case(case: &Case, listed: bool) -> Outcome {
    let mut outcome = run_case(case);
    for attempt in 2..=3 {
        match &outcome {
            Outcome::Failed(reason) if listed => {
                println!("{}: failed ({reason}); attempt {attempt}", case.name);
                outcome = run_case(case);
            }
            _ => break,
        }
    }
    outcome
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

/// Whether upper-case SQL `text` calls function `name`.
fn calls(text: &str, name: &str) -> bool {
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].trim_start();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after.starts_with('(')
    })
}

/// Reads one QTT file (JSON with comments) into expanded cases, or says why it cannot.
fn load(path: &Path, stem: &str) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the file: {e}"))?;
    let file = serde_json::from_str::<Value>(&eddy_tests::qtt::strip_comments(&text))
        .map_err(|e| format!("the file is not valid JSON: {e}"))?;
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
                let test_function = TEST_BUILD_FUNCTIONS.iter().find(|f| calls(&all_text, f));
                let unsupported = if test["enabled"] == Value::Bool(false) {
                    Some("disabled in the corpus".to_string())
                } else if let Some(f) = registry {
                    Some(format!(
                        "format {f} needs a schema registry, which Eddy leaves out"
                    ))
                } else {
                    test_function.map(|f| format!("calls {f}, which only ksqlDB's test build has"))
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
                    inputs_after_push_queries: test["inputConditions"]["waitForActivePushQuery"]
                        == Value::Bool(true),
                    unsupported,
                });
            }
        }
    }
    Ok(cases)
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
        headers: headers(&input["headers"])?,
        ..Default::default()
    };
    client
        .produce(topic, vec![record])
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// An input's headers: `[{"KEY": name, "VALUE": base64 or null}]`.
fn headers(given: &Value) -> Result<Vec<(String, Option<Bytes>)>, String> {
    use base64::Engine as _;
    let Some(headers) = given.as_array() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(headers.len());
    for header in headers {
        let key = header["KEY"].as_str().ok_or("a header without KEY")?;
        let value = match header["VALUE"].as_str() {
            Some(text) => Some(Bytes::from(
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| format!("header {key}: {e}"))?,
            )),
            None => None,
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
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
    let mut by_partition = Vec::new();
    for p in 0..partitions {
        let range = client.offsets(topic, p).await.map_err(|e| e.to_string())?;
        let mut offset = range.log_start_offset;
        let mut records_of_p = Vec::new();
        while offset < range.high_watermark {
            let records = client
                .fetch(topic, p, offset, 1 << 20, Duration::from_millis(10))
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            records_of_p.extend(records);
        }
        by_partition.push(std::collections::VecDeque::from(records_of_p));
    }
    Ok(merged_by_time(by_partition))
}

/// The records of several partitions in one sequence, as ksqlDB's test driver sees a topic:
/// each partition's in order, the partitions interleaved by timestamp (the earliest head
/// first; the lower partition on a tie).
fn merged_by_time(
    mut partitions: Vec<std::collections::VecDeque<eddy_broker::ConsumedRecord>>,
) -> Vec<eddy_broker::ConsumedRecord> {
    let mut all = Vec::new();
    loop {
        let next = partitions
            .iter()
            .enumerate()
            .filter_map(|(p, records)| Some((records.front()?.timestamp_ms, p)))
            .min();
        let Some((_, p)) = next else {
            return all;
        };
        all.extend(partitions[p].pop_front());
    }
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
