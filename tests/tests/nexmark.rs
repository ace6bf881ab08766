//! The Nexmark queries against their batch form: `eddy bench nexmark --check` runs a query
//! over generated events topic to topic, then compares its sink with the same query run in
//! batch by DataFusion over the same events (shell/src/bench/nexmark/check.rs). The bench
//! fails, and so does this test, on any row missing, extra or different.

use std::process::Command;

/// Runs `query` over `events` generated events with `--check`; the rows it compared. One
/// check at a time: each bench is a whole engine using every core.
fn check(query: &str, events: u64, extra_args: &[&str]) -> usize {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let ran = Command::new(eddy_tests::eddy_binary())
        .args(["bench", "nexmark", "--query", query, "--check", "--events"])
        .arg(events.to_string())
        .args(extra_args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{query}: {stdout}\n{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let prefix = format!("check: {query}'s ");
    let line = stdout.lines().find_map(|l| l.strip_prefix(&prefix));
    let rows = line.and_then(|l| l.split(' ').next()?.parse().ok());
    rows.unwrap_or_else(|| panic!("{query} printed no check line: {stdout}"))
}

#[test]
fn stateless_queries_equal_their_batch_form() {
    for query in ["q0", "q2", "q22"] {
        check(query, 30_000, &[]);
    }
}

/// q4: a windowed stream-stream join, then an aggregation over the table it feeds, which
/// must retract each auction's earlier winning price; q8: a stream-stream join.
#[test]
fn join_queries_equal_their_batch_form() {
    for query in ["q4", "q8"] {
        check(query, 30_000, &[]);
    }
}

#[test]
fn out_of_order_events_give_the_same_rows() {
    check(
        "q2",
        30_000,
        &["--out-of-order-group-size", "50", "--seed", "7"],
    );
}

/// q5: counts per hopping window (EMIT FINAL), each window's maximum (MAX over a windowed
/// table, which must tell the windows of one auction apart), and a foreign-key join of the
/// windowed counts with it; q7: each tumbling window's highest price (an aggregation without
/// GROUP BY) joined back to the bids that reached it. 40 seconds of event time, so that
/// windows close. Both depend on the query's partition readers staying together in event
/// time (runtime/align.rs): a reader that ran ahead would make the others' bids late.
/// q6: a join of auctions and their bids, each auction's winning price once it has closed
/// (EMIT FINAL), read back as a stream, and an OVER window of each seller's last 11 closed
/// auctions, which must take them in closing order. (One after another: they are the
/// heaviest checks.)
#[test]
fn windowed_queries_equal_their_batch_form() {
    for query in ["q5", "q7", "q6"] {
        let rows = check(query, 400_000, &[]);
        assert!(rows > 0, "{query} compared no closed windows");
    }
}

/// q12: bids per bidder per 10-second window of processing time (the wall clock when the
/// bids were read). Its rows differ from run to run; the check waits until every window has
/// ended, closes them with one more bid, and sums the counts: they must count every bid.
#[test]
fn processing_time_windows_count_every_bid() {
    let rows = check("q12", 30_000, &[]);
    assert!(rows > 0, "q12 emitted no windows");
}
