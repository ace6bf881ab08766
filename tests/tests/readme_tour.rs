//! The README's five-minute tour, run verbatim through the shell: its SQL blocks in order as
//! one script (`eddy --file`), and every line of its output blocks must appear, in order, in
//! what the shell prints. A README that drifts from what Eddy does fails this test.

use eddy_tests::workspace_root;

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

    let printed = eddy_tests::run_shell_script(&sql.concat());
    eddy_tests::assert_lines_in_order(&printed, &expected.concat(), "the README");
}
