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
