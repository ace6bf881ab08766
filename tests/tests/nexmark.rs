//! The Nexmark queries against their batch form: `eddy bench nexmark --check` runs a query
//! over generated events topic to topic, then compares its sink with the same query run in
//! batch by DataFusion over the same events (shell/src/bench/nexmark/check.rs). The bench
//! fails, and so does this test, on any row missing, extra or different.

use std::process::Command;

fn check(query: &str, extra_args: &[&str]) {
    let ran = Command::new(eddy_tests::eddy_binary())
        .args([
            "bench", "nexmark", "--query", query, "--events", "30000", "--check",
        ])
        .args(extra_args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{query}: {stdout}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(
        stdout.contains(&format!("check: {query}'s ")),
        "{query} printed no check line: {stdout}"
    );
}

#[test]
fn stateless_queries_equal_their_batch_form() {
    for query in ["q0", "q2", "q22"] {
        check(query, &[]);
    }
}

/// q4: a windowed stream-stream join, then an aggregation over the table it feeds, which
/// must retract each auction's earlier winning price; q8: a stream-stream join.
#[test]
fn join_queries_equal_their_batch_form() {
    for query in ["q4", "q8"] {
        check(query, &[]);
    }
}

#[test]
fn out_of_order_events_give_the_same_rows() {
    check("q2", &["--out-of-order-group-size", "50", "--seed", "7"]);
}
