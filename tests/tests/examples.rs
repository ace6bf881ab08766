//! The example pipelines in queries/: each `name.sql` runs through the shell (`eddy --file`)
//! on a fresh embedded server, and the lines of `name.expected` must appear, in order, in what
//! it prints (the rows of its push and pull queries).

use eddy_tests::{assert_lines_in_order, run_shell_script, workspace_root};

#[test]
fn every_example_in_queries_prints_its_expected_rows() {
    let dir = workspace_root().join("queries");
    let mut examples: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    examples.sort();
    assert!(
        examples.len() >= 5,
        "the examples went missing: {examples:?}"
    );
    for script in examples {
        let sql = std::fs::read_to_string(&script).unwrap();
        assert!(
            sql.starts_with("-- "),
            "{} must open with a comment saying what it shows",
            script.display()
        );
        let expected = std::fs::read_to_string(script.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{} has no .expected file", script.display()));
        let printed = run_shell_script(&sql);
        assert_lines_in_order(&printed, &expected, &script.display().to_string());
    }
}

/// derived_topic.sql against a server on a separate broker: the topic its CSAS writes is an
/// ordinary Kafka topic that kcat reads.
#[test]
fn the_derived_topic_example_is_read_back_with_kcat() {
    use std::process::Command;

    let dir = tempfile::tempdir().unwrap();
    let broker = eddy_tests::EddyProcess::broker(&dir.path().join("broker"), &[]);
    let bootstrap = broker.bootstrap();
    let server =
        eddy_tests::EddyProcess::server(&dir.path().join("server"), &["--bootstrap", &bootstrap]);
    let script = workspace_root().join("queries/derived_topic.sql");
    let ran = Command::new(eddy_tests::eddy_binary())
        .args(["--server", &server.url(), "--file"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );

    let read = Command::new(eddy_tests::kcat())
        .args(["-b", &bootstrap, "-C", "-t", "big_orders", "-e", "-q"])
        .args(["-f", "%s\n"])
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let values: Vec<serde_json::Value> = String::from_utf8_lossy(&read.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON value"))
        .collect();
    assert_eq!(
        values,
        [
            serde_json::json!({"CUSTOMER": "BOB", "TOTAL": 100.0}),
            serde_json::json!({"CUSTOMER": "ANN", "TOTAL": 15.0}),
        ]
    );
}
