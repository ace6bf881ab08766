//! `cargo run --release` and the README's test command (`cargo test --workspace --release`)
//! must share one build of DataFusion and the other heavy crates: every package the `eddy`
//! binary is built from must resolve the same features in both, or cargo compiles it (and all
//! above it) a second time, over half an hour on a 2-core machine. `cargo tree` shows the
//! features each command resolves without building anything.

use std::collections::BTreeMap;
use std::process::Command;

use eddy_tests::workspace_root;

/// package ("name version") -> its features, as `cargo tree` resolves them with `args`.
fn resolved(args: &[&str]) -> BTreeMap<String, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(cargo)
        .args(["tree", "--prefix", "none", "-f", "{p}|{f}"])
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("running cargo tree");
    assert!(
        output.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (package, features) = line.trim_end_matches(" (*)").split_once('|')?;
            Some((package.to_string(), features.trim().to_string()))
        })
        .collect()
}

#[test]
fn cargo_run_resolves_the_features_the_test_build_resolves() {
    // What `cargo run --release` builds: the shell (the default member), no dev-dependencies.
    let run = resolved(&["-p", "eddy-shell", "-e", "normal,build"]);
    // What `cargo test --workspace --release` builds.
    let test = resolved(&["--workspace", "-e", "normal,build,dev"]);
    assert!(
        run.keys()
            .any(|package| package.starts_with("datafusion v")),
        "cargo tree did not list DataFusion: {run:?}"
    );
    let differing: Vec<String> = run
        .iter()
        .filter(|(package, features)| test.get(*package) != Some(*features))
        .map(|(package, features)| {
            format!(
                "{package}: run [{features}], test [{}]",
                test.get(package).map_or("absent", String::as_str)
            )
        })
        .collect();
    assert!(
        differing.is_empty(),
        "these packages would be compiled twice; turn the test build's features on in \
         shell/Cargo.toml too:\n{}",
        differing.join("\n")
    );
}
