//! The README's five-minute tour, run verbatim through the shell: its SQL blocks in order as
//! one script (`eddy --file`), and every line of its output blocks must appear, in order, in
//! what the shell prints. A README that drifts from what Eddy does fails this test.

use std::process::Command;

use eddy_tests::{eddy_binary, workspace_root};

/// The fenced blocks of one language inside the README section that starts with `heading`.
fn blocks(readme: &str, heading: &str, language: &str) -> Vec<String> {
    let start = readme.find(heading).expect("the README has the tour");
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let fence = format!("```{language}\n");
    section
        .split(&fence)
        .skip(1)
        .map(|rest| rest[..rest.find("```").expect("a closed block")].to_string())
        .collect()
}

#[test]
fn the_readme_tour_prints_what_the_readme_says() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let sql = blocks(&readme, "## Five-minute tour", "sql");
    let expected = blocks(&readme, "## Five-minute tour", "text");
    assert!(
        sql.len() >= 5 && expected.len() >= 4,
        "the tour lost its blocks"
    );

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tour.sql");
    std::fs::write(&script, sql.concat()).unwrap();
    let output = Command::new(eddy_binary())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--file")
        .arg(&script)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut from = 0;
    for line in expected.iter().flat_map(|block| block.lines()) {
        let Some(at) = printed[from..].find(line) else {
            panic!(
                "the README says\n{line}\nbut after what matched so far the shell printed\n{}",
                &printed[from..]
            );
        };
        from += at + line.len();
    }
}
