//! `eddy server` driven over HTTP by real clients: the ksql-python-ng package, and curl on
//! every endpoint (HTTP/1.1 and HTTP/2 with prior knowledge).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eddy_tests::{curl, curl_request as request, python, wait_for, workspace_root, EddyProcess};
use serde_json::{json, Value};

fn post_json(url: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = request(&[
        "-X",
        "POST",
        &format!("{url}{path}"),
        "-H",
        "Content-Type: application/vnd.ksql.v1+json",
        "-d",
        &body.to_string(),
    ]);
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

fn ksql(url: &str, sql: &str) -> Value {
    let (status, body) = post_json(url, "/ksql", &json!({ "ksql": sql }));
    assert_eq!(status, 200, "{sql}: {body}");
    body
}

/// The ids of the push queries the server is running.
fn push_queries(url: &str) -> Vec<String> {
    let listed = ksql(url, "SHOW QUERIES;");
    listed[0]["queries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|q| q["queryType"] == "PUSH")
        .filter_map(|q| q["id"].as_str().map(String::from))
        .collect()
}

#[test]
fn ksql_python_client_creates_inserts_and_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = EddyProcess::server(dir.path(), &[]);
    let output = Command::new(python())
        .arg(workspace_root().join("tests/clients/ksql_tool.py"))
        .args(["--url", &server.url()])
        .output()
        .expect("running ksql_tool.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| {
            panic!(
                "ksql_tool.py printed no JSON ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert_eq!(seen["version"], "0.29.0");
    assert_eq!(seen["created"], "SUCCESS");
    assert_eq!(
        seen["inserted"],
        json!([
            {"status": "ok", "seq": 0},
            {"status": "ok", "seq": 1},
            {"status": "ok", "seq": 2}
        ])
    );
    assert_eq!(seen["push_columns"], json!(["USER", "PAGE"]));
    assert_eq!(
        seen["pushed"],
        json!([["ann", "/home"], ["ann", "/pay"], ["bob", "/cart"]])
    );
    assert_eq!(seen["pulled"], json!([["ann", 2]]));
    assert_eq!(seen["streams"], json!(["KSQL_PROCESSING_LOG", "PAGEVIEWS"]));
}

#[test]
fn curl_reaches_every_endpoint_and_bad_requests_get_ksqldb_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = EddyProcess::server(dir.path(), &[]);
    let url = server.url();

    let (status, info) = request(&[&format!("{url}/info")]);
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&info).expect("JSON");
    assert_eq!(info["KsqlServerInfo"]["serverStatus"], "RUNNING");
    let (status, health) = request(&[&format!("{url}/healthcheck")]);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&health).expect("JSON")["isHealthy"],
        true
    );
    assert_eq!(request(&[&format!("{url}/clusterStatus")]).0, 200);

    let created = ksql(
        &url,
        "CREATE STREAM s (id INT KEY, v STRING) WITH (kafka_topic='s', value_format='JSON', partitions=1); \
         INSERT INTO s (id, v) VALUES (1, 'one');",
    );
    assert_eq!(created[0]["@type"], "currentStatus");
    assert_eq!(created[0]["commandStatus"]["status"], "SUCCESS");
    let described = ksql(&url, "DESCRIBE s;");
    assert_eq!(
        described[0]["sourceDescription"]["fields"][0]["type"],
        "KEY"
    );

    // /query: ksqlDB's chunked JSON array, ended by the LIMIT.
    let (status, body) = post_json(
        &url,
        "/query",
        &json!({"ksql": "SELECT * FROM s EMIT CHANGES LIMIT 1;",
                "streamsProperties": {"auto.offset.reset": "earliest"}}),
    );
    assert_eq!(status, 200);
    assert_eq!(body[0]["header"]["schema"], "`ID` INTEGER, `V` STRING");
    assert_eq!(body[1]["row"]["columns"], json!([1, "one"]));
    assert_eq!(body[2]["finalMessage"], "Limit Reached");

    // /query-stream over HTTP/2 with prior knowledge, delimited rows.
    let (status, body) = request(&[
        "--http2-prior-knowledge",
        "-X",
        "POST",
        &format!("{url}/query-stream"),
        "-d",
        r#"{"sql": "SELECT v FROM s EMIT CHANGES LIMIT 1;", "properties": {"auto.offset.reset": "earliest"}}"#,
    ]);
    assert_eq!(status, 200);
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines[0]["columnNames"], json!(["V"]));
    assert_eq!(lines[1], json!(["one"]));
    let version = Command::new(curl())
        .args(["-s", "--http2-prior-knowledge", "-o", "/dev/null"])
        .args(["-w", "%{http_version}"])
        .arg(format!("{url}/info"))
        .output()
        .expect("running curl");
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(version.starts_with('2'), "HTTP version {version}");

    // Pull query as a JSON array.
    let (status, body) = request(&[
        "-X",
        "POST",
        &format!("{url}/query-stream"),
        "-H",
        "Accept: application/json",
        "-d",
        r#"{"sql": "SELECT id, v FROM s WHERE id = 1;"}"#,
    ]);
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).expect("a JSON array");
    assert_eq!(body[1], json!([1, "one"]));

    let (status, acks) = request(&[
        "-X",
        "POST",
        &format!("{url}/inserts-stream"),
        "--data-binary",
        "{\"target\": \"s\"}\n{\"ID\": 2, \"V\": \"two\"}\n{\"V\": 3}\n",
    ]);
    assert_eq!(status, 200);
    let acks: Vec<Value> = acks
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(acks[0], json!({"status": "ok", "seq": 0}));
    assert_eq!(acks[1]["status"], "error");

    // Bad requests: not JSON, a missing field, a statement that does not parse, an unknown
    // query to close, a SELECT sent to /ksql.
    let (status, body) = request(&["-X", "POST", &format!("{url}/ksql"), "-d", "{not json"]);
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(body["error_code"], 40000);
    assert!(body["message"]
        .as_str()
        .unwrap_or_default()
        .contains("JSON"));
    let (status, body) = post_json(&url, "/ksql", &json!({"sql": "SHOW STREAMS;"}));
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!(40000)),
        "{body}"
    );
    let (status, body) = post_json(&url, "/ksql", &json!({"ksql": "CREATE STREAM (;"}));
    assert_eq!(status, 400);
    assert_eq!(body["@type"], "statement_error");
    assert_eq!(body["error_code"], 40001);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("line 1:"),
        "{body}"
    );
    let (status, body) = post_json(&url, "/close-query", &json!({"queryId": "nope"}));
    assert_eq!(
        (status, &body["error_code"]),
        (404, &json!(40400)),
        "{body}"
    );
    let (status, body) = post_json(&url, "/ksql", &json!({"ksql": "SELECT * FROM s;"}));
    assert_eq!(
        (status, &body["error_code"]),
        (400, &json!(40002)),
        "{body}"
    );
}

fn push_client(url: &str, sql: &str) -> Child {
    Command::new(curl())
        .args([
            "-sN",
            "--max-time",
            "120",
            "--http2-prior-knowledge",
            "-X",
            "POST",
        ])
        .arg(format!("{url}/query-stream"))
        .arg("-d")
        .arg(json!({"sql": sql, "properties": {"auto.offset.reset": "earliest"}}).to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting curl")
}

#[test]
fn fifty_push_queries_get_every_row_and_a_client_that_leaves_frees_its_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = EddyProcess::server(dir.path(), &[]);
    let url = server.url();
    ksql(
        &url,
        "CREATE STREAM ticks (n INT) WITH (kafka_topic='ticks', value_format='JSON', partitions=1);",
    );
    const ROWS: usize = 20;
    let clients: Vec<Child> = (0..50)
        .map(|_| {
            push_client(
                &url,
                &format!("SELECT n FROM ticks EMIT CHANGES LIMIT {ROWS};"),
            )
        })
        .collect();
    for n in 0..ROWS {
        ksql(&url, &format!("INSERT INTO ticks (n) VALUES ({n});"));
    }
    let expected: Vec<Value> = (0..ROWS).map(|n| json!([n])).collect();
    for client in clients {
        let output = client.wait_with_output().expect("curl finished");
        let rows: Vec<Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).expect("a JSON row"))
            .collect();
        assert_eq!(rows, expected);
    }
    wait_for(
        Duration::from_secs(10),
        "finished push queries to end",
        || push_queries(&url).is_empty().then_some(()),
    );

    let mut leaving = push_client(&url, "SELECT n FROM ticks EMIT CHANGES;");
    wait_for(Duration::from_secs(10), "the push query to start", || {
        (push_queries(&url).len() == 1).then_some(())
    });
    leaving.kill().expect("killing curl");
    let _ = leaving.wait();
    wait_for(Duration::from_secs(10), "the left query to end", || {
        push_queries(&url).is_empty().then_some(())
    });
}

/// Runs a pull query through /query-stream and returns its rows.
fn pull(url: &str, sql: &str) -> Vec<Value> {
    let (status, body) = request(&[
        "-X",
        "POST",
        &format!("{url}/query-stream"),
        "-d",
        &json!({ "sql": sql }).to_string(),
    ]);
    assert_eq!(status, 200, "{sql}: {body}");
    body.lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

#[test]
fn the_catalog_and_queries_survive_kill_9_and_aggregates_resume_without_double_counting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = EddyProcess::server(dir.path(), &[]);
    let url = server.url();
    ksql(
        &url,
        "CREATE STREAM visits (user STRING KEY, page STRING) \
         WITH (kafka_topic='visits', value_format='JSON', partitions=2); \
         CREATE TABLE visit_counts AS SELECT user, COUNT(*) AS n FROM visits GROUP BY user; \
         CREATE STREAM home_visits AS SELECT user, page FROM visits WHERE page = '/home';",
    );
    for (user, page) in [("ann", "/home"), ("bob", "/cart"), ("ann", "/pay")] {
        ksql(
            &url,
            &format!("INSERT INTO visits (user, page) VALUES ('{user}', '{page}');"),
        );
    }
    let counts_sql = "SELECT user, n FROM visit_counts ORDER BY user;";
    wait_for(Duration::from_secs(20), "counts before the kill", || {
        let rows = pull(&url, counts_sql);
        (rows == [json!(["ann", 2]), json!(["bob", 1])]).then_some(())
    });
    let queries_before = ksql(&url, "SHOW QUERIES;")[0]["queries"].clone();

    server.restart(); // SIGKILL, then start on the same data
    let listed = ksql(&url, "SHOW STREAMS; SHOW TABLES; SHOW QUERIES;");
    let names = |entity: &Value, field: &str| -> Vec<String> {
        entity[field]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s["name"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(
        names(&listed[0], "streams"),
        ["HOME_VISITS", "KSQL_PROCESSING_LOG", "VISITS"]
    );
    assert_eq!(names(&listed[1], "tables"), ["VISIT_COUNTS"]);
    let ids = |queries: &Value| -> Vec<String> {
        queries
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|q| q["id"].as_str().map(String::from))
            .collect()
    };
    assert_eq!(ids(&listed[2]["queries"]), ids(&queries_before));

    ksql(
        &url,
        "INSERT INTO visits (user, page) VALUES ('bob', '/home');",
    );
    wait_for(Duration::from_secs(20), "counts after the restart", || {
        let rows = pull(&url, counts_sql);
        (rows == [json!(["ann", 2]), json!(["bob", 2])]).then_some(())
    });
    let home = pull(&url, "SELECT user FROM home_visits ORDER BY user;");
    assert_eq!(home, [json!(["ann"]), json!(["bob"])], "each row once");
    // The table's changelog: one update per input row, none re-emitted by the restart.
    ksql(
        &url,
        "CREATE STREAM count_changes (user STRING KEY, n BIGINT) \
         WITH (kafka_topic='VISIT_COUNTS', value_format='JSON');",
    );
    let changes = pull(&url, "SELECT user, n FROM count_changes ORDER BY user, n;");
    assert_eq!(
        changes,
        [
            json!(["ann", 1]),
            json!(["ann", 2]),
            json!(["bob", 1]),
            json!(["bob", 2])
        ]
    );
}

#[test]
fn basic_authentication_from_the_config_file_guards_every_endpoint_but_healthcheck() {
    let dir = tempfile::tempdir().unwrap();
    let mut hashing = Command::new(eddy_tests::eddy_binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(hashing.stdin.take().unwrap(), "s3cret").unwrap();
    let hashed = hashing.wait_with_output().unwrap();
    assert!(hashed.status.success());
    let hash = String::from_utf8(hashed.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("s3cret"));
    let config = dir.path().join("eddy.properties");
    std::fs::write(
        &config,
        format!("# users\nauthentication.users.ann={}\n", hash.trim()),
    )
    .unwrap();
    let server = EddyProcess::server(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = server.url();

    let (status, body) = request(&[&format!("{url}/info")]);
    assert_eq!(status, 401, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error_code"], 40100, "{body}");
    let (status, _) = request(&["-u", "ann:wrong", &format!("{url}/info")]);
    assert_eq!(status, 401);
    let (status, _) = request(&["-u", "bob:s3cret", &format!("{url}/ksql"), "-d", "{}"]);
    assert_eq!(status, 401);
    let (status, body) = request(&["-u", "ann:s3cret", &format!("{url}/info")]);
    assert_eq!(status, 200, "{body}");
    let (status, _) = request(&[&format!("{url}/healthcheck")]);
    assert_eq!(status, 200, "/healthcheck stays open for load balancers");

    // Every answer carries its request id.
    let headers = Command::new(curl())
        .args([
            "-s",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("{url}/healthcheck"),
        ])
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&headers.stdout).to_lowercase();
    assert!(headers.contains("x-request-id: "), "{headers}");

    // The shell passes --user and --password on.
    let shell = |password: &str| {
        Command::new(eddy_tests::eddy_binary())
            .args(["--server", &url, "--user", "ann", "--password", password])
            .args(["--execute", "SHOW STREAMS;"])
            .output()
            .unwrap()
    };
    let ok = shell("s3cret");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("KSQL_PROCESSING_LOG"));
    let refused = shell("nope");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthorized"));
}

#[test]
fn a_websocket_client_gets_the_header_rows_and_final_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = EddyProcess::server(dir.path(), &[]);
    let url = server.url();
    ksql(
        &url,
        "CREATE STREAM ws_rows (id INT KEY, name STRING) \
         WITH (kafka_topic='ws_rows', value_format='JSON', partitions=1); \
         INSERT INTO ws_rows (id, name) VALUES (1, 'one'); \
         INSERT INTO ws_rows (id, name) VALUES (2, 'two');",
    );
    let output = Command::new(python())
        .arg(workspace_root().join("tests/clients/ws_query.py"))
        .args(["--url", &url, "--earliest", "--sql"])
        .arg("SELECT id, name FROM ws_rows EMIT CHANGES LIMIT 2;")
        .output()
        .expect("running ws_query.py");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let messages: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        messages[0]["header"]["schema"], "`ID` INTEGER, `NAME` STRING",
        "{messages}"
    );
    assert_eq!(messages[1]["row"]["columns"], json!([1, "one"]));
    assert_eq!(messages[2]["row"]["columns"], json!([2, "two"]));
    assert_eq!(messages[3]["finalMessage"], "Limit Reached");
    wait_for(
        Duration::from_secs(10),
        "the query to end with its LIMIT",
        || push_queries(&url).is_empty().then_some(()),
    );

    // A request that is not a query is refused before the upgrade.
    let (status, body) = request(&[&format!("{url}/ws/query")]);
    assert_eq!(status, 400, "{body}");
}

#[test]
fn tls_from_the_config_file_serves_https_with_http2_and_the_shell_trusts_a_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = Command::new(eddy_tests::openssl())
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args([
            "-keyout",
            eddy_tests::arg(&key),
            "-out",
            eddy_tests::arg(&cert),
        ])
        .output()
        .expect("running openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let config = dir.path().join("eddy.properties");
    // Relative names are taken from the config file's folder.
    std::fs::write(&config, "tls.cert=cert.pem\ntls.key=key.pem\n").unwrap();
    let server = EddyProcess::server(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = server.url().replace("http://", "https://");
    let cacert = eddy_tests::arg(&cert);

    let (status, body) = request(&["--cacert", cacert, &format!("{url}/info")]);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("KsqlServerInfo"), "{body}");
    // Without the certificate curl refuses the server; plain HTTP gets no answer.
    let (status, _) = request(&[&format!("{url}/info")]);
    assert_eq!(
        status, 0,
        "an untrusted certificate must fail the handshake"
    );
    let (status, _) = request(&[&server.url().to_string(), "--max-time", "5"]);
    assert_eq!(status, 0, "plain HTTP is not served next to TLS");

    // HTTP/2 is negotiated by ALPN.
    let negotiated = Command::new(curl())
        .args(["-s", "--cacert", cacert, "--http2", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{http_version}"])
        .arg(format!("{url}/info"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&negotiated.stdout), "200 2");

    let shell = |trust: Option<&str>| {
        let mut command = Command::new(eddy_tests::eddy_binary());
        command.args(["--server", &url]);
        if let Some(ca) = trust {
            command.args(["--tls-ca", ca]);
        }
        command
            .args(["--execute", "SHOW STREAMS;"])
            .output()
            .unwrap()
    };
    let trusted = shell(Some(cacert));
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(String::from_utf8_lossy(&trusted.stdout).contains("KSQL_PROCESSING_LOG"));
    let untrusted = shell(None);
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
}

#[test]
fn a_push_client_that_stops_reading_is_cut_off_without_holding_back_others() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("eddy.properties");
    std::fs::write(&config, "push.slow.client.timeout.ms=1000\n").unwrap();
    let server = EddyProcess::server(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = server.url();
    ksql(
        &url,
        "CREATE STREAM wide (n INT, pad STRING) \
         WITH (kafka_topic='wide', value_format='JSON', partitions=1);",
    );
    // A client that asks for every row and then never reads.
    let query = json!({"sql": "SELECT n, pad FROM wide EMIT CHANGES;"}).to_string();
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    use std::io::{Read, Write};
    write!(
        stalled,
        "POST /query-stream HTTP/1.1\r\nHost: eddy\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{query}",
        query.len()
    )
    .unwrap();
    const ROWS: usize = 4_000;
    let reader = push_client(
        &url,
        &format!("SELECT n FROM wide EMIT CHANGES LIMIT {ROWS};"),
    );
    wait_for(
        Duration::from_secs(10),
        "both push queries to start",
        || (push_queries(&url).len() == 2).then_some(()),
    );

    // 40 MB of rows: far more than the stalled client's buffers and socket can hold.
    let pad = "x".repeat(10_000);
    let batch = dir.path().join("rows.json");
    for start in (0..ROWS).step_by(500) {
        let mut body = String::from("{\"target\": \"WIDE\"}\n");
        for n in start..start + 500 {
            body.push_str(&json!({"N": n, "PAD": pad}).to_string());
            body.push('\n');
        }
        std::fs::write(&batch, body).unwrap();
        let (status, answer) = request(&[
            "-X",
            "POST",
            &format!("{url}/inserts-stream"),
            "--data-binary",
            &format!("@{}", eddy_tests::arg(&batch)),
        ]);
        assert_eq!(status, 200, "{answer}");
        assert!(
            !answer.contains("error"),
            "{}",
            &answer[..answer.len().min(500)]
        );
    }

    // The reading client gets every row although the other one stalls.
    let output = reader.wait_with_output().expect("curl finished");
    let rows: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect();
    assert_eq!(rows, (0..ROWS).map(|n| json!([n])).collect::<Vec<_>>());
    // The stalled one is cut off: its query ends and its connection closes mid-answer.
    wait_for(Duration::from_secs(20), "the stalled query to end", || {
        push_queries(&url).is_empty().then_some(())
    });
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut received = Vec::new();
    let read = stalled.read_to_end(&mut received);
    // Closed: the read ends (EOF, or a reset) instead of waiting out its timeout.
    let timed_out = matches!(&read, Err(e) if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    assert!(!timed_out, "the connection must close: {read:?}");
    assert!(
        !received.ends_with(b"0\r\n\r\n"),
        "a cut-off answer must not end like a complete one"
    );
}

/// The rows a finished `push_client` printed (after its header line).
fn rows_of(client: Child) -> Vec<Value> {
    let output = client.wait_with_output().expect("curl finished");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

/// Goal: an engine on a separate broker (`eddy server --bootstrap`) survives what its Kafka
/// client meets in practice: push clients leaving while their queries wait in a long-poll
/// fetch, and the broker killed and restarted under it.
/// Method: ten push clients leave mid-fetch; rows are inserted before and after a kill -9 and
/// restart of the broker; then INSERT, SHOW TOPICS, a push query and a persistent query's output
/// must all be complete and right.
#[test]
fn an_engine_on_a_separate_broker_survives_leaving_push_clients_and_a_broker_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = EddyProcess::broker(&dir.path().join("broker"), &[]);
    let server = EddyProcess::server(
        &dir.path().join("server"),
        &["--bootstrap", &broker.bootstrap()],
    );
    let url = server.url();
    ksql(
        &url,
        "CREATE STREAM ticks (n INT) WITH (kafka_topic='ticks', value_format='JSON', partitions=2);",
    );
    ksql(
        &url,
        "CREATE STREAM doubled AS SELECT n * 2 AS d FROM ticks;",
    );

    for _ in 0..10 {
        let mut leaving = push_client(&url, "SELECT n FROM ticks EMIT CHANGES;");
        std::thread::sleep(Duration::from_millis(300));
        leaving.kill().expect("killing curl");
        let _ = leaving.wait();
    }
    wait_for(
        Duration::from_secs(10),
        "the left push queries to end",
        || push_queries(&url).is_empty().then_some(()),
    );
    for n in 1..=3 {
        ksql(&url, &format!("INSERT INTO ticks (n) VALUES ({n});"));
    }

    broker.restart();
    for n in 4..=6 {
        ksql(&url, &format!("INSERT INTO ticks (n) VALUES ({n});"));
    }
    let topics = ksql(&url, "SHOW TOPICS;");
    let names: Vec<&str> = topics[0]["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"ticks") && names.contains(&"DOUBLED"),
        "{names:?}"
    );

    let mut ticks: Vec<i64> = rows_of(push_client(
        &url,
        "SELECT n FROM ticks EMIT CHANGES LIMIT 6;",
    ))
    .iter()
    .map(|row| row[0].as_i64().expect("n"))
    .collect();
    ticks.sort();
    assert_eq!(ticks, [1, 2, 3, 4, 5, 6]);
    // The persistent query read through the restart: every row once, none twice.
    let mut doubled: Vec<i64> = rows_of(push_client(
        &url,
        "SELECT d FROM doubled EMIT CHANGES LIMIT 6;",
    ))
    .iter()
    .map(|row| row[0].as_i64().expect("d"))
    .collect();
    doubled.sort();
    assert_eq!(doubled, [2, 4, 6, 8, 10, 12]);
    let count = pull_count_of_doubled(&url);
    assert_eq!(count, 6, "DOUBLED holds each row once");
}

/// How many records the DOUBLED topic holds: PRINT asks for one more than expected and is cut
/// off after 3 s.
fn pull_count_of_doubled(url: &str) -> usize {
    let (status, body) = request(&[
        "--max-time",
        "3",
        "-X",
        "POST",
        &format!("{url}/query"),
        "-d",
        &json!({ "ksql": "PRINT 'DOUBLED' FROM BEGINNING LIMIT 7;" }).to_string(),
    ]);
    assert!(status == 200 || status == 0, "{status}: {body}");
    body.lines().filter(|l| l.contains("value:")).count()
}

/// The HTTP/1.1 chunks of a `/query-stream` answer read off a raw socket, until the answer
/// ends: each chunk is one write of the server.
fn query_stream_chunks(url: &str, sql: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let body = json!({"sql": sql, "properties": {"ksql.streams.auto.offset.reset": "earliest"}})
        .to_string();
    write!(
        stream,
        "POST /query-stream HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("head");
        if line == "\r\n" {
            break;
        }
        assert!(
            !line.is_empty() && !line.to_lowercase().starts_with("content-length"),
            "the answer is not chunked: {line}"
        );
    }
    let mut chunks = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("chunk size");
        let size = usize::from_str_radix(line.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return chunks;
        }
        let mut chunk = vec![0u8; size + 2];
        reader.read_exact(&mut chunk).expect("chunk");
        chunk.truncate(size);
        chunks.push(String::from_utf8(chunk).expect("UTF-8"));
    }
}

/// Goal: the REST shapes ksqlDB clients rely on. Method: /inserts-stream answered as a JSON
/// array to a client accepting JSON and as lines otherwise; /query-stream's delimited answer
/// one row per write even when the rows are ready together; SHOW PROPERTIES with server values
/// and a request's override; DROP of a CSAS sink terminating its query.
#[test]
fn rest_shapes_match_ksqldb() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = EddyProcess::server(dir.path(), &[]);
    let url = server.url();
    ksql(
        &url,
        "CREATE STREAM shapes (n INT) WITH (kafka_topic='shapes', value_format='JSON', partitions=1);",
    );
    let rows = "{\"target\":\"SHAPES\"}\n{\"N\":1}\n{\"N\":2}\n";
    let (status, text) = request(&[
        "-X",
        "POST",
        &format!("{url}/inserts-stream"),
        "-H",
        "Accept: application/json",
        "-d",
        rows,
    ]);
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("one JSON value");
    assert_eq!(
        answer,
        json!([{"status": "ok", "seq": 0}, {"status": "ok", "seq": 1}])
    );
    let (status, text) = request(&["-X", "POST", &format!("{url}/inserts-stream"), "-d", rows]);
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
    for n in 3..=6 {
        ksql(&url, &format!("INSERT INTO shapes (n) VALUES ({n});"));
    }

    let chunks = query_stream_chunks(&url, "SELECT n FROM shapes EMIT CHANGES LIMIT 6;");
    let rows: Vec<&String> = chunks.iter().filter(|c| c.starts_with('[')).collect();
    assert_eq!(rows.len(), 6, "one row per write: {chunks:?}");
    for row in rows {
        assert_eq!(row.trim_end().lines().count(), 1, "{row:?}");
    }

    let (status, listed) = post_json(
        &url,
        "/ksql",
        &json!({"ksql": "SHOW PROPERTIES;", "streamsProperties": {"auto.offset.reset": "earliest"}}),
    );
    assert_eq!(status, 200, "{listed}");
    let properties = listed[0]["properties"].as_array().expect("properties");
    let find = |name: &str| {
        properties
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"))
    };
    assert_eq!(find("ksql.query.pull.max.rows")["level"], "SERVER");
    let reset = find("ksql.streams.auto.offset.reset");
    assert_eq!(
        (&reset["value"], &reset["level"]),
        (&json!("earliest"), &json!("SESSION"))
    );
    assert!(listed[0]["overwrittenProperties"]
        .as_array()
        .expect("names")
        .contains(&json!("ksql.streams.auto.offset.reset")));

    ksql(&url, "CREATE STREAM shapes_copy AS SELECT n FROM shapes;");
    let dropped = ksql(&url, "DROP STREAM shapes_copy;");
    assert_eq!(
        dropped[0]["commandStatus"]["status"], "SUCCESS",
        "{dropped}"
    );
    let queries = ksql(&url, "SHOW QUERIES;");
    assert_eq!(queries[0]["queries"], json!([]), "{queries}");
}
