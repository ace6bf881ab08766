//! The `eddy` shell as users run it: in a terminal (a pseudo-terminal driven with expectrl)
//! on its embedded server, and non-interactively with `--execute`, `--file` and piped input
//! against a running `eddy server`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use eddy_tests::{eddy_binary, EddyProcess};
use expectrl::{ControlCode, Expect, Session};

/// The shell in a pseudo-terminal, on an embedded server with its data in `dir`, and the
/// server's address from the banner.
fn terminal_shell(dir: &Path) -> (expectrl::session::OsSession, String) {
    let mut command = Command::new(eddy_binary());
    command
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("EDDY_HISTORY_FILE", dir.join("history"))
        .env("TERM", "xterm");
    let mut shell = Session::spawn(command).expect("starting eddy in a pseudo-terminal");
    shell.set_expect_timeout(Some(Duration::from_secs(30)));
    let banner = shell
        .expect(expectrl::Regex("Embedded server at (http://[0-9.:]+[0-9])"))
        .expect("the banner names the embedded server");
    let url = String::from_utf8_lossy(banner.get(1).unwrap()).to_string();
    shell.expect("eddy> ").expect("the first prompt");
    (shell, url)
}

#[test]
fn a_terminal_session_creates_inserts_streams_and_stops_with_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let (mut shell, url) = terminal_shell(dir.path());

    // A statement over two lines: the continuation prompt shows it is still open.
    shell
        .send_line("CREATE STREAM clicks (user VARCHAR KEY, page VARCHAR)")
        .unwrap();
    shell.expect("   -> ").expect("continuation prompt");
    shell
        .send_line("  WITH (kafka_topic='clicks', value_format='JSON', partitions=1);")
        .unwrap();
    shell
        .expect("Stream created")
        .expect("CREATE STREAM's status");
    shell.expect("eddy> ").unwrap();

    shell
        .send_line("INSERT INTO clicks (user, page) VALUES ('alice', '/home');")
        .unwrap();
    shell.expect("eddy> ").unwrap();
    shell
        .send_line("SET 'auto.offset.reset'='earliest';")
        .unwrap();
    shell.expect("Successfully changed local property").unwrap();
    shell
        .send_line("SELECT user, page FROM clicks EMIT CHANGES;")
        .unwrap();
    shell.expect("Press CTRL-C to interrupt").unwrap();
    shell
        .expect("| alice")
        .expect("the inserted row on the screen");
    shell.expect("/home").unwrap();
    // A row inserted while the query runs appears too (from another client).
    let inserted = Command::new(eddy_binary())
        .args(["--server", &url, "--execute"])
        .arg("INSERT INTO clicks (user, page) VALUES ('bob', '/cart');")
        .output()
        .unwrap();
    assert!(inserted.status.success(), "{}", describe(&inserted));
    shell
        .expect("| bob")
        .expect("a row that arrived while the query ran");

    shell.send(ControlCode::EndOfText).unwrap();
    shell
        .expect("Query terminated")
        .expect("Ctrl-C ends the query");
    shell.expect("eddy> ").expect("and the prompt is back");

    // Tab completes the stream's name.
    shell.send("describe cli").unwrap();
    shell.send("\t").unwrap();
    shell.expect("CLICKS").expect("the completed name");
    shell.send_line(";").unwrap();
    shell.expect("Kafka topic").expect("DESCRIBE's output");
    shell.expect("PAGE").unwrap();
    shell.expect("eddy> ").unwrap();

    // An error shows the statement with a caret under the position.
    shell.send_line("CREATE STREEM x (a INT);").unwrap();
    shell.expect("line 1:8").unwrap();
    shell.expect("       ^").unwrap();
    shell.expect("eddy> ").unwrap();

    shell.send_line("exit").unwrap();
    shell.expect(expectrl::Eof).expect("exit leaves the shell");

    // History survives a restart: the up arrow brings back the statement before `exit`.
    let (mut shell, _) = terminal_shell(dir.path());
    shell.send("\x1b[A").unwrap();
    shell.expect("exit").unwrap();
    shell.send("\x1b[A").unwrap();
    shell
        .expect("CREATE STREEM x (a INT);")
        .expect("history from the last run");
    shell.send(ControlCode::EndOfText).unwrap();
    shell.expect("eddy> ").unwrap();
    // The stream is still there: the embedded server keeps its data.
    shell.send_line("SHOW STREAMS;").unwrap();
    shell.expect("CLICKS").unwrap();
    shell.expect("eddy> ").unwrap();
    shell.send(ControlCode::EndOfTransmission).unwrap();
    shell
        .expect(expectrl::Eof)
        .expect("Ctrl-D leaves the shell");
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(eddy_binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn scripts_exit_non_zero_on_their_first_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = EddyProcess::server(&dir.path().join("data"), &[]);
    let url = server.url();

    let ok = run(
        &[
            "--server",
            &url,
            "--execute",
            "CREATE STREAM s1 (id INT KEY, v STRING) WITH (kafka_topic='s1', value_format='JSON', partitions=1); SHOW STREAMS;",
        ],
        None,
    );
    assert_eq!(ok.status.code(), Some(0), "{}", describe(&ok));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.contains("Stream created"), "{stdout}");
    assert!(stdout.contains(" S1 "), "{stdout}");

    let failed = run(
        &["--server", &url, "--execute", "CREATE STREEM s2 (a INT);"],
        None,
    );
    assert_eq!(failed.status.code(), Some(1), "{}", describe(&failed));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("line 1:8: expected STREAM or TABLE"),
        "{stderr}"
    );

    // --file stops at the first error: the statement after it does not run.
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        "-- a script\nINSERT INTO s1 (id, v) VALUES (1, 'one');\nDROP STREAM nope;\n\
         CREATE STREAM s3 (a INT) WITH (kafka_topic='s3', value_format='JSON', partitions=1);\n",
    )
    .unwrap();
    let failed = run(
        &["--server", &url, "--file", script.to_str().unwrap()],
        None,
    );
    assert_eq!(failed.status.code(), Some(1), "{}", describe(&failed));
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("NOPE"),
        "{}",
        describe(&failed)
    );
    std::fs::write(
        &script,
        "SET 'auto.offset.reset'='earliest';\nSELECT id, v FROM s1 EMIT CHANGES LIMIT 1;\n",
    )
    .unwrap();
    let ok = run(
        &["--server", &url, "--file", script.to_str().unwrap()],
        None,
    );
    assert_eq!(ok.status.code(), Some(0), "{}", describe(&ok));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.contains("| 1 "), "{stdout}");
    assert!(stdout.contains("Limit Reached"), "{stdout}");

    // Statements piped in, without a terminal.
    let piped = run(
        &["--server", &url],
        Some("SHOW STREAMS;\nSELECT * FROM nope;\n"),
    );
    assert_eq!(piped.status.code(), Some(1), "{}", describe(&piped));
    assert!(String::from_utf8_lossy(&piped.stdout).contains(" S1 "));
    assert!(!String::from_utf8_lossy(&piped.stdout).contains("S3"));

    // An unreachable server is reported as such.
    let down = run(
        &[
            "--server",
            "http://127.0.0.1:9",
            "--execute",
            "SHOW STREAMS;",
        ],
        None,
    );
    assert_eq!(down.status.code(), Some(1), "{}", describe(&down));
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("cannot reach the server"),
        "{}",
        describe(&down)
    );
}

#[test]
fn print_show_functions_and_describe_extended_print_as_the_ksql_cli_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = EddyProcess::server(&dir.path().join("data"), &[]);
    let url = server.url();
    let script = "CREATE STREAM pv (user STRING KEY, page STRING) \
                  WITH (kafka_topic='pv', value_format='JSON', partitions=1);\n\
                  INSERT INTO pv (user, page) VALUES ('ann', '/home');\n\
                  CREATE STREAM home AS SELECT * FROM pv WHERE page = '/home';\n\
                  PRINT pv FROM BEGINNING LIMIT 1;\n\
                  SHOW FUNCTIONS;\n\
                  DESCRIBE FUNCTION ucase;\n\
                  DESCRIBE pv EXTENDED;\n";
    let out = run(&["--server", &url], Some(script));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "Key format: KAFKA_STRING",
        "Value format: JSON or KAFKA_STRING",
        r#"key: ann, value: {"PAGE":"/home"}, partition: 0"#,
        "Topic printing ceased",
        " Function Name ",
        " HISTOGRAM ",
        "Variation   : UCASE(STRING)",
        "Returns     : STRING",
        "Queries that read from this STREAM:",
        "CSAS_HOME_",
        "total-messages:          1",
        "failed-messages:         0",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
}
