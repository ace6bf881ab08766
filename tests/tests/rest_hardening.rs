//! No client can take `eddy server` down or hold it: slow clients are cut by the header and
//! body read timeouts (streams are not), password checks are bounded and cost the same for
//! every user, the shell keeps passwords off the command line, and pull queries cap what they
//! hold. Each test runs the real binary over real sockets, with short limits from a config file.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use eddy_tests::{
    curl, curl_request as request, eddy_binary, hashed_password, server_with_config, EddyProcess,
};
use serde_json::{json, Value};

fn post(url: &str, path: &str, body: &Value) -> (u16, String) {
    request(&[
        "-X",
        "POST",
        &format!("{url}{path}"),
        "-d",
        &body.to_string(),
    ])
}

fn ksql(url: &str, sql: &str) -> Value {
    let (status, body) = post(url, "/ksql", &json!({ "ksql": sql }));
    assert_eq!(status, 200, "{sql}: {body}");
    serde_json::from_str(&body).expect("a JSON answer")
}

/// A raw connection to `server`, which gives up reading after `patience`.
fn connect(server: &EddyProcess, patience: Duration) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connecting");
    stream.set_read_timeout(Some(patience)).unwrap();
    stream
}

/// Reads until the server closes the connection; what it sent, or `None` if it kept the
/// connection open past the stream's read timeout.
fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(String::from_utf8_lossy(&received).to_string()),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&received).to_string())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None
            }
            Err(e) => panic!("reading from the server: {e}"),
        }
    }
}

/// Goal: a client that connects and sends nothing, half a request head, or half of HTTP/2's
/// preface is disconnected by the header read timeout. Method: a server with a 300 ms
/// timeout; each client waits up to 20 s for the server to close its connection.
#[test]
fn a_client_that_stalls_before_its_request_head_is_complete_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_config(dir.path(), "http.header.read.timeout.ms=300\n");
    let stalls: [(&str, &[u8]); 4] = [
        ("nothing", b""),
        ("half a request line", b"POST /ks"),
        (
            "a request line and half the headers",
            b"POST /ksql HTTP/1.1\r\nHost: x\r\n",
        ),
        ("half of HTTP/2's preface", b"PRI * HTTP/2.0\r\n"),
    ];
    for (what, sent) in stalls {
        let mut stream = connect(&server, Duration::from_secs(20));
        stream.write_all(sent).unwrap();
        let answer = read_until_closed(&mut stream);
        assert!(
            answer.is_some(),
            "a client that sent {what} was kept connected"
        );
    }
    // A client that completes its request in time is answered as usual.
    let (status, _) = request(&[&format!("{}/info", server.url())]);
    assert_eq!(status, 200);
}

/// Goal: a request body that stops arriving, or trickles in, is answered 408 naming the limit
/// and the connection is closed. Method: a server with a 300 ms body read timeout; one client
/// declares 100 bytes and sends 8, another sends one byte every 50 ms.
#[test]
fn a_body_that_stops_or_trickles_gets_408_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_config(dir.path(), "http.body.read.timeout.ms=300\n");
    let head = "POST /ksql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n";

    let mut stopped = connect(&server, Duration::from_secs(20));
    stopped
        .write_all(format!("{head}{{\"ksql\":").as_bytes())
        .unwrap();
    let answer = read_until_closed(&mut stopped).expect("the connection is closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("http.body.read.timeout.ms"), "{answer}");

    let mut trickling = connect(&server, Duration::from_secs(20));
    trickling.write_all(head.as_bytes()).unwrap();
    let mut writer = trickling.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..100 {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let answer = read_until_closed(&mut trickling).expect("the connection is closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    trickle.join().unwrap();
}

/// Goal: the read timeouts bound reading requests, not streams: a push query outlives them,
/// and /inserts-stream takes a body that arrives over longer than the timeout as long as it
/// never pauses that long. Method: 1 s timeouts; a push query started before them gets a row
/// inserted after them; an insert body sent in pieces 100 ms apart over 1.5 s is accepted.
#[test]
fn push_queries_and_paced_inserts_outlive_the_read_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_config(
        dir.path(),
        "http.header.read.timeout.ms=1000\nhttp.body.read.timeout.ms=1000\n",
    );
    let url = server.url();
    ksql(
        &url,
        "CREATE STREAM s (id INT KEY, v STRING) \
         WITH (kafka_topic='s', value_format='JSON', partitions=1);",
    );
    let mut push = Command::new(curl())
        .args(["-s", "-N", "--max-time", "60", "-X", "POST"])
        .arg(format!("{url}/query-stream"))
        .args([
            "-d",
            &json!({"sql": "SELECT v FROM s EMIT CHANGES;"}).to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = push.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let header = received
        .recv_timeout(Duration::from_secs(20))
        .expect("the header");
    assert!(header.contains("queryId"), "{header}");
    // Longer than both timeouts: the push query's connection must stay open.
    std::thread::sleep(Duration::from_millis(2500));
    ksql(&url, "INSERT INTO s (id, v) VALUES (1, 'late');");
    let row = received
        .recv_timeout(Duration::from_secs(20))
        .expect("the row");
    assert_eq!(row, r#"["late"]"#);
    let _ = push.kill();
    let _ = push.wait();

    let mut inserts = connect(&server, Duration::from_secs(20));
    let rows: Vec<String> = std::iter::once(json!({"target": "S"}).to_string())
        .chain((0..15).map(|i| json!({"ID": i, "V": format!("row {i}")}).to_string()))
        .map(|line| format!("{line}\n"))
        .collect();
    inserts
        .write_all(
            b"POST /inserts-stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
    for row in &rows {
        inserts
            .write_all(format!("{:x}\r\n{row}\r\n", row.len()).as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    inserts.write_all(b"0\r\n\r\n").unwrap();
    let answer = read_until_closed(&mut inserts).expect("the connection is closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches(r#""status":"ok""#).count(), 15, "{answer}");
}

/// Goal: password checks cannot take the server down: a burst of wrong passwords, for known
/// and unknown users alike, is refused while /healthcheck and a right password still get in.
/// Method: 24 concurrent wrong-password requests (each an Argon2 check, two at a time on the
/// blocking pool) beside /healthcheck and a request with the right password.
#[test]
fn a_burst_of_wrong_passwords_is_refused_while_the_server_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let hash = hashed_password("s3cret");
    let server = server_with_config(dir.path(), &format!("authentication.users.ann={hash}\n"));
    let url = server.url();
    let attempts: Vec<_> = (0..24)
        .map(|i| {
            let url = url.clone();
            let user = if i % 2 == 0 { "ann" } else { "nobody" };
            std::thread::spawn(move || {
                request(&["-u", &format!("{user}:wrong{i}"), &format!("{url}/info")]).0
            })
        })
        .collect();
    let (health, _) = request(&[&format!("{url}/healthcheck")]);
    let (admitted, body) = request(&["-u", "ann:s3cret", &format!("{url}/info")]);
    let refused: Vec<u16> = attempts.into_iter().map(|a| a.join().unwrap()).collect();
    assert_eq!(health, 200);
    assert_eq!(admitted, 200, "{body}");
    assert_eq!(refused, vec![401; 24]);
}

/// Goal: the shell's password need not be on the command line: `--user` alone takes it from
/// EDDY_PASSWORD, and without it and without a terminal says how to give one. Method: the
/// shell binary against a server with basic authentication; `setsid` leaves it no terminal.
#[test]
fn the_shell_takes_its_password_from_eddy_password() {
    let dir = tempfile::tempdir().unwrap();
    let hash = hashed_password("s3cret");
    let server = server_with_config(dir.path(), &format!("authentication.users.ann={hash}\n"));
    let url = server.url();
    let shell = |password: Option<&str>| {
        let mut command = Command::new("setsid");
        command
            .arg("-w")
            .arg(eddy_binary())
            .args([
                "--server",
                &url,
                "--user",
                "ann",
                "--execute",
                "SHOW STREAMS;",
            ])
            .env_remove("EDDY_PASSWORD")
            .stdin(Stdio::null());
        if let Some(password) = password {
            command.env("EDDY_PASSWORD", password);
        }
        command.output().expect("running the shell")
    };
    let ok = shell(Some("s3cret"));
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("KSQL_PROCESSING_LOG"));
    let refused = shell(Some("nope"));
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthorized"));
    let unasked = shell(None);
    assert_eq!(unasked.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unasked.stderr);
    assert!(stderr.contains("EDDY_PASSWORD"), "{stderr}");
}

/// Goal: the shell asks for the password on the terminal when neither --password nor
/// EDDY_PASSWORD gives it, without echoing it. Method: the shell in a pseudo-terminal.
#[test]
fn the_shell_asks_for_the_password_on_the_terminal() {
    use expectrl::{Expect, Session};
    let dir = tempfile::tempdir().unwrap();
    let hash = hashed_password("s3cret");
    let server = server_with_config(dir.path(), &format!("authentication.users.ann={hash}\n"));
    let mut command = Command::new(eddy_binary());
    command
        .args(["--server", &server.url(), "--user", "ann"])
        .args(["--execute", "SHOW STREAMS;"])
        .env_remove("EDDY_PASSWORD");
    let mut shell = Session::spawn(command).expect("starting eddy in a pseudo-terminal");
    shell.set_expect_timeout(Some(Duration::from_secs(30)));
    shell.expect("Password: ").expect("the prompt");
    shell.send_line("s3cret").unwrap();
    let listed = shell.expect("KSQL_PROCESSING_LOG").expect("the streams");
    let before = String::from_utf8_lossy(listed.before()).to_string();
    assert!(
        !before.contains("s3cret"),
        "the password was echoed: {before}"
    );
    shell.expect(expectrl::Eof).expect("the shell exits");
}

/// Goal: a pull query that would hold more than its limits fails with an error naming the
/// limit and its config key, and smaller queries still run. Method: a server with
/// `ksql.query.pull.max.rows=5` and `ksql.query.pull.max.bytes=20000`; ten small rows (a
/// rows limit, and LIMIT under it), then three 10,000-byte rows (the bytes limit).
#[test]
fn a_pull_query_past_its_limits_fails_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with_config(
        dir.path(),
        "ksql.query.pull.max.rows=5\nksql.query.pull.max.bytes=20000\n",
    );
    let url = server.url();
    ksql(
        &url,
        "CREATE STREAM small (id INT KEY, v STRING) \
         WITH (kafka_topic='small', value_format='JSON', partitions=1); \
         CREATE STREAM big (id INT KEY, v STRING) \
         WITH (kafka_topic='big', value_format='JSON', partitions=1);",
    );
    for id in 0..10 {
        ksql(
            &url,
            &format!("INSERT INTO small (id, v) VALUES ({id}, 'v{id}');"),
        );
    }
    let pull = |sql: &str| post(&url, "/query-stream", &json!({ "sql": sql }));
    let (status, body) = pull("SELECT * FROM small;");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than 5 rows"), "{body}");
    assert!(body.contains("ksql.query.pull.max.rows"), "{body}");
    let (status, body) = pull("SELECT id FROM small ORDER BY id LIMIT 3;");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.lines().skip(1).collect::<Vec<_>>(),
        ["[0]", "[1]", "[2]"]
    );

    let long = "x".repeat(10_000);
    for id in 0..3 {
        ksql(
            &url,
            &format!("INSERT INTO big (id, v) VALUES ({id}, '{long}');"),
        );
    }
    let (status, body) = pull("SELECT id FROM big;");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than 20000 bytes"), "{body}");
    assert!(body.contains("ksql.query.pull.max.bytes"), "{body}");
    // The server is still up for the next query.
    let (status, body) = pull("SELECT id FROM small WHERE id = 1;");
    assert_eq!((status, body.lines().nth(1)), (200, Some("[1]")), "{body}");
}
