//! End-to-end tests of Kafka transactions (issue 21) on real `eddy broker` processes, driven by
//! librdkafka through `tests/clients/txn_tool.py`.
//!
//! Transactional records carry `<run>:<txn>:<index>` values (run id, the transaction's number
//! in its run, the record's index in it), so the checker ([`check_transactions`]) can tell
//! from what a read_committed consumer saw whether each transaction is there whole or not at
//! all, whether each committed transaction is there and each aborted one absent, and whether
//! records keep their order within a partition. Faults are SIGKILL and SIGTERM of brokers and
//! clients; the loop test kills its client at seeded random moments and prints the seed
//! (`EDDY_TEST_SEED=<n>` replays it).
//!
//! The tests run one at a time, as the cluster tests do: they wait on transaction and session
//! timeouts that another test's load on a small machine could stretch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eddy_tests::{
    arg, kafka_tool, python, read_json_lines, wait_for, workspace_root, EddyCluster, EddyProcess,
};
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// One test at a time (see the module doc).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Error names that say a producer was fenced by a newer one with its transactional id.
const FENCED_NAMES: [&str; 3] = ["PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH", "_FENCED"];

/// The command running `txn_tool.py` against `bootstrap`; `options` go before the subcommand
/// (`--transaction-timeout-ms`, `--retry-seconds`).
fn txn_tool_command(bootstrap: &str, options: &[&str], args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("tests/clients/txn_tool.py"))
        .arg("--bootstrap")
        .arg(bootstrap)
        .args(options)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `txn_tool.py` to its end and returns every JSON line it printed (its summary last).
fn txn_tool(bootstrap: &str, options: &[&str], args: &[&str]) -> Vec<Value> {
    let output = txn_tool_command(bootstrap, options, args)
        .output()
        .expect("running txn_tool.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !lines.is_empty(),
        "txn_tool {args:?} printed no JSON; status {:?}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    lines
}

/// A `txn_tool.py` run in the background, its stdout in a file read as it grows.
struct Background {
    child: Child,
    stdout: PathBuf,
}

impl Background {
    fn start(bootstrap: &str, options: &[&str], args: &[&str], stdout: &Path) -> Background {
        let file = File::create(stdout).expect("creating the stdout file");
        let child = txn_tool_command(bootstrap, options, args)
            .stdout(Stdio::from(file))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting txn_tool.py");
        Background {
            child,
            stdout: stdout.to_path_buf(),
        }
    }

    /// Every JSON line printed so far.
    fn lines(&self) -> Vec<Value> {
        read_json_lines(&self.stdout)
    }

    /// Waits until `count` lines have `field`.
    fn wait_lines_with(&self, field: &str, count: usize, timeout: Duration) {
        self.wait_lines_with_any(&[field], count, timeout);
    }

    /// Waits until `count` lines have one of `fields`.
    fn wait_lines_with_any(&self, fields: &[&str], count: usize, timeout: Duration) {
        wait_for(
            timeout,
            &format!("{count} lines with one of {fields:?}"),
            || {
                let has_one = |l: &&Value| fields.iter().any(|f| !l[*f].is_null());
                let seen = self.lines().iter().filter(has_one).count();
                (seen >= count).then_some(())
            },
        );
    }

    /// Waits up to `timeout` for the process to exit.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_for(timeout, "txn_tool.py to exit", || {
            self.child.try_wait().expect("waiting for txn_tool.py")
        })
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Creates `topic` with `partitions` partitions on `replication_factor` replicas.
fn create_topic(bootstrap: &str, topic: &str, partitions: i64, replication_factor: i64) {
    let partitions = partitions.to_string();
    let replication_factor = replication_factor.to_string();
    let mut args = vec![
        "create-topic",
        "--topic",
        topic,
        "--partitions",
        &partitions,
    ];
    args.extend(["--replication-factor", &replication_factor]);
    if replication_factor != "1" {
        args.extend(["--config", "min.insync.replicas=2"]);
    }
    let created = kafka_tool(bootstrap, &args);
    assert_eq!(created["created"], topic, "{created}");
}

/// One record as a consumer read it.
#[derive(Clone, Debug)]
struct Record {
    partition: i64,
    offset: i64,
    key: Option<String>,
    value: String,
}

/// Every record of `topic` from the beginning, with `isolation` (`read_committed` or
/// `read_uncommitted`), read until no record has come for `idle_seconds`.
fn read_topic(bootstrap: &str, topic: &str, isolation: &str, idle_seconds: &str) -> Vec<Record> {
    let lines = txn_tool(
        bootstrap,
        &[],
        &[
            "consume",
            "--topic",
            topic,
            "--isolation",
            isolation,
            "--idle-seconds",
            idle_seconds,
            "--max-seconds",
            "120",
        ],
    );
    let (summary, records) = lines.split_last().expect("a summary");
    assert!(summary["error"].is_null(), "{isolation} read: {summary}");
    records
        .iter()
        .map(|r| Record {
            partition: r["partition"].as_i64().expect("partition"),
            offset: r["offset"].as_i64().expect("offset"),
            key: r["key"].as_str().map(String::from),
            value: r["value"].as_str().expect("value").to_string(),
        })
        .collect()
}

/// A transactional record's value `<run>:<txn>:<index>`, split.
fn parse_value(value: &str) -> (String, u64, u64) {
    let mut parts = value.rsplitn(3, ':');
    let index = parts.next().and_then(|i| i.parse().ok());
    let txn = parts.next().and_then(|t| t.parse().ok());
    let run = parts.next();
    match (run, txn, index) {
        (Some(run), Some(txn), Some(index)) => (run.to_string(), txn, index),
        _ => panic!("{value} is not <run>:<txn>:<index>"),
    }
}

/// What produce-txn printed for each transaction: its number, its intent and its outcome
/// (`committed`, `aborted`, or `unknown` when a fatal error left it to the coordinator).
fn outcomes(lines: &[Value]) -> BTreeMap<u64, (String, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let txn = l["txn"].as_u64()?;
            let intent = l["intent"].as_str()?.to_string();
            let outcome = l["outcome"].as_str()?.to_string();
            Some((txn, (intent, outcome)))
        })
        .collect()
}

/// A produce-txn run: which transactions to write where, and how.
struct TxnRun {
    topic: &'static str,
    transactional_id: &'static str,
    run: &'static str,
    transactions: u64,
    records: u64,
    partitions: u64,
    pattern: &'static str,
    hold_open_ms: u64,
    pause_between_ms: u64,
}

impl TxnRun {
    /// produce-txn's arguments for transactions `first..transactions`.
    fn args(&self, first: u64) -> Vec<String> {
        let count = self.transactions - first;
        [
            "produce-txn",
            "--topic",
            self.topic,
            "--transactional-id",
            self.transactional_id,
            "--run-id",
            self.run,
            "--pattern",
            self.pattern,
        ]
        .into_iter()
        .map(String::from)
        .chain([
            "--first-transaction".into(),
            first.to_string(),
            "--transactions".into(),
            count.to_string(),
            "--records".into(),
            self.records.to_string(),
            "--partitions".into(),
            self.partitions.to_string(),
            "--hold-open-ms".into(),
            self.hold_open_ms.to_string(),
            "--pause-between-ms".into(),
            self.pause_between_ms.to_string(),
        ])
        .collect()
    }

    /// Starts the run in the background, its lines in `stdout`.
    fn start(&self, bootstrap: &str, options: &[&str], stdout: &Path) -> Background {
        let args = self.args(0);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Background::start(bootstrap, options, &args, stdout)
    }

    /// After `lines` (what the background run printed; it has ended): when a fatal error
    /// stopped it early, a new producer with the same transactional id runs the remaining
    /// transactions, and its lines are added. Returns every transaction's outcome.
    fn finish(
        &self,
        bootstrap: &str,
        options: &[&str],
        lines: &mut Vec<Value>,
    ) -> BTreeMap<u64, (String, String)> {
        let mut reported = outcomes(lines);
        let next = reported.keys().last().map_or(0, |t| t + 1);
        if next < self.transactions {
            eprintln!("{}: the producer stopped after {next}: {lines:?}", self.run);
            let args = self.args(next);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let rest = txn_tool(bootstrap, options, &args);
            reported.extend(outcomes(&rest));
            lines.extend(rest);
        }
        assert_eq!(
            reported.len() as u64,
            self.transactions,
            "{}: every transaction ended: {lines:?}",
            self.run
        );
        reported
    }
}

/// The checker. Of `run`'s records that a read_committed consumer saw (`committed_read`):
/// each transaction is there whole (`records_per_txn` distinct indexes, none twice) or not at
/// all; a transaction that reported committed is there, one that reported aborted is not;
/// within each partition records come in the order written (transaction, then index). Returns
/// the transactions seen.
fn check_transactions(
    committed_read: &[Record],
    run: &str,
    records_per_txn: u64,
    reported: &BTreeMap<u64, (String, String)>,
) -> BTreeSet<u64> {
    let mut seen: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut last_in_partition: HashMap<i64, (u64, u64, i64)> = HashMap::new();
    for record in committed_read {
        let (record_run, txn, index) = parse_value(&record.value);
        if record_run != run {
            continue;
        }
        seen.entry(txn).or_default().push(index);
        let here = (txn, index, record.offset);
        if let Some(before) = last_in_partition.insert(record.partition, here) {
            assert!(
                (before.0, before.1) < (txn, index) && before.2 < record.offset,
                "partition {}: {run}:{txn}:{index} at offset {} comes after \
                 {run}:{}:{} at offset {}",
                record.partition,
                record.offset,
                before.0,
                before.1,
                before.2
            );
        }
    }
    for (txn, indexes) in &mut seen {
        indexes.sort_unstable();
        let whole: Vec<u64> = (0..records_per_txn).collect();
        assert_eq!(
            *indexes, whole,
            "transaction {run}:{txn} is not whole or has a record twice under read_committed"
        );
    }
    for (txn, (intent, outcome)) in reported {
        match outcome.as_str() {
            "committed" => assert!(
                seen.contains_key(txn),
                "{run}:{txn} ({intent}) reported committed but read_committed does not see it"
            ),
            "aborted" => assert!(
                !seen.contains_key(txn),
                "{run}:{txn} ({intent}) reported aborted but read_committed sees it"
            ),
            _ => eprintln!(
                "{run}:{txn} ended unknown to its producer: {}",
                if seen.contains_key(txn) {
                    "committed"
                } else {
                    "aborted"
                }
            ),
        }
    }
    seen.keys().copied().collect()
}

/// Goal: read_committed consumers see every committed transaction and no aborted one, in
/// order within each partition; read_uncommitted consumers see both. Method: two producers
/// with their own transactional ids write at once to the same three partitions, one
/// committing, aborting, committing, ..., the other the opposite, so aborted and committed
/// transactions interleave in every partition; then both isolation levels read the topic.
#[test]
fn read_committed_sees_committed_transactions_only_and_read_uncommitted_sees_all() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(&dir.path().join("data"), &[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "tx", 3, 1);
    let runs = [("one", "cac"), ("two", "acc")];
    let produced: Vec<Vec<Value>> = std::thread::scope(|scope| {
        let handles: Vec<_> = runs
            .iter()
            .map(|(run, pattern)| {
                let bootstrap = &bootstrap;
                scope.spawn(move || {
                    txn_tool(
                        bootstrap,
                        &[],
                        &[
                            "produce-txn",
                            "--topic",
                            "tx",
                            "--transactional-id",
                            &format!("producer-{run}"),
                            "--transactions",
                            "12",
                            "--records",
                            "30",
                            "--partitions",
                            "3",
                            "--pattern",
                            pattern,
                            "--run-id",
                            run,
                        ],
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("producer thread"))
            .collect()
    });
    for ((run, _), lines) in runs.iter().zip(&produced) {
        let summary = lines.last().expect("a summary");
        assert_eq!(summary["committed"], 8, "{run}: {summary}");
        assert_eq!(summary["aborted"], 4, "{run}: {summary}");
    }

    let committed = read_topic(&bootstrap, "tx", "read_committed", "3");
    for ((run, _), lines) in runs.iter().zip(&produced) {
        let seen = check_transactions(&committed, run, 30, &outcomes(lines));
        assert_eq!(seen.len(), 8, "{run}: committed transactions seen {seen:?}");
    }
    assert_eq!(committed.len(), 2 * 8 * 30, "nothing but committed records");

    let uncommitted = read_topic(&bootstrap, "tx", "read_uncommitted", "3");
    assert_eq!(
        uncommitted.len(),
        2 * 12 * 30,
        "read_uncommitted sees aborted records too (markers are not records)"
    );
    let mut values: Vec<&str> = uncommitted.iter().map(|r| r.value.as_str()).collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values.len(), 2 * 12 * 30, "each record once");
    let uncommitted_at: HashMap<(i64, i64), &str> = uncommitted
        .iter()
        .map(|r| ((r.partition, r.offset), r.value.as_str()))
        .collect();
    for record in &committed {
        assert_eq!(
            uncommitted_at.get(&(record.partition, record.offset)),
            Some(&record.value.as_str()),
            "both isolation levels see a committed record at the same offset"
        );
    }
}

/// Goal: a second producer with the same transactional id fences the first: the first's
/// open transaction is aborted and its next commit fails with a fatal fencing error, while
/// the second commits. Method: txn_tool's `fence` runs the two producers in one process and
/// reports what each saw; a read_committed consumer must then see only the second's record.
#[test]
fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(&dir.path().join("data"), &[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "fenced", 1, 1);
    let lines = txn_tool(
        &bootstrap,
        &[],
        &["fence", "--topic", "fenced", "--transactional-id", "zombie"],
    );
    let report = lines.last().expect("a report");
    let first = &report["first"];
    assert_eq!(
        first["fenced"], true,
        "the first saw a fencing error: {report}"
    );
    assert_eq!(
        first["fatal"], true,
        "fencing is fatal to the first: {report}"
    );
    assert_ne!(first["commit"], "committed", "{report}");
    let commit_error = first["commit"]["name"].as_str().unwrap_or_default();
    assert!(
        FENCED_NAMES.contains(&commit_error),
        "the first's commit fails as fenced, not otherwise: {report}"
    );
    assert_eq!(report["second"]["commit"], "committed", "{report}");

    let committed: Vec<String> = read_topic(&bootstrap, "fenced", "read_committed", "2")
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(committed, ["second:0"], "the fenced transaction is aborted");
    let uncommitted: Vec<String> = read_topic(&bootstrap, "fenced", "read_uncommitted", "2")
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert!(
        uncommitted.contains(&"first:0".to_string()),
        "the fenced producer's record was written, then aborted: {uncommitted:?}"
    );
}

/// The seed of the random choices of a test: `EDDY_TEST_SEED`, or a fresh one, printed.
fn seed() -> u64 {
    let seed = std::env::var("EDDY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (EDDY_TEST_SEED={seed} replays the random choices)");
    seed
}

/// Goal: Kafka's consume-transform-produce loop is exactly once on Eddy: killed with SIGKILL
/// at random moments and restarted, it still writes each input's result once, none lost and
/// none twice. Method: 3,000 keyed inputs on three partitions; txn_tool's `eos-loop` (one
/// transaction per batch of 20 inputs: outputs plus the group's offsets, paused 30 ms before
/// each commit so kills often land inside a transaction) is killed ten times, each after a
/// seeded random time once it has committed something, and restarted with the same
/// transactional id and group; a last run finishes the input; the output topic, read
/// committed, must hold `<input>:out` once per input, with the input's key.
#[test]
fn consume_transform_produce_is_exactly_once_across_sigkills() {
    let _serial = serial();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = EddyProcess::broker(&dir.path().join("data"), &[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "input", 3, 1);
    create_topic(&bootstrap, "output", 3, 1);
    let produced = kafka_tool(
        &bootstrap,
        &[
            "produce",
            "--topic",
            "input",
            "--count",
            "3000",
            "--keyed",
            "--value-prefix",
            "in",
        ],
    );
    assert_eq!(produced["acked"], 3000, "{produced}");
    let inputs = read_topic(&bootstrap, "input", "read_uncommitted", "2");
    assert_eq!(inputs.len(), 3000);

    let loop_args = [
        "eos-loop",
        "--input",
        "input",
        "--output",
        "output",
        "--group",
        "eos",
        "--transactional-id",
        "eos-loop",
        "--expected",
        "3000",
        "--batch",
        "20",
        "--pause-ms",
        "30",
        "--max-seconds",
        "300",
    ];
    let mut kills = 0;
    for round in 0..10 {
        let stdout = dir.path().join(format!("loop-{round}.jsonl"));
        let mut running = Background::start(&bootstrap, &[], &loop_args, &stdout);
        // A run that finds every input already processed says it is done and commits nothing.
        running.wait_lines_with_any(&["committed_txn", "done"], 1, Duration::from_secs(90));
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        if running.lines().iter().any(|l| l["done"] == true) {
            eprintln!("round {round}: the loop finished before its kill");
            break;
        }
        running.kill9();
        kills += 1;
        let committed = running
            .lines()
            .iter()
            .filter(|l| !l["committed_txn"].is_null())
            .count();
        eprintln!("round {round}: killed after {committed} committed transactions");
    }
    let stdout = dir.path().join("loop-last.jsonl");
    let mut last = Background::start(&bootstrap, &[], &loop_args, &stdout);
    let status = last.wait_exit(Duration::from_secs(300));
    let lines = last.lines();
    assert!(status.success(), "the last run ended {status:?}: {lines:?}");
    assert_eq!(lines.last().expect("a summary")["done"], true, "{lines:?}");
    assert!(
        kills >= 3,
        "only {kills} kills landed: the input was too small"
    );

    let outputs = read_topic(&bootstrap, "output", "read_committed", "3");
    let mut expected: Vec<(Option<String>, String)> = inputs
        .iter()
        .map(|r| (r.key.clone(), format!("{}:out", r.value)))
        .collect();
    let mut got: Vec<(Option<String>, String)> = outputs
        .iter()
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect();
    expected.sort();
    got.sort();
    let duplicates = got.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(duplicates, 0, "outputs written twice");
    assert_eq!(got.len(), expected.len(), "outputs lost or extra");
    assert_eq!(got, expected, "each input's output, with its key");
}

/// Goal: a transaction open when its single broker is killed with SIGKILL ends whole,
/// committed or aborted, never half; and a transaction whose producer vanished is aborted
/// after its transaction.timeout.ms, so the last stable offset moves and later transactions
/// become readable. Method: (1) a producer runs eight transactions of 50 records over two
/// partitions, holding each open 1.5 s; the broker is killed while the third is open and
/// restarted; the producer goes on (retrying what it may); then the checker runs. (2) a
/// producer with transaction.timeout.ms=8000 opens a transaction and is killed with SIGKILL;
/// another producer commits three transactions; read_committed must not see them while the
/// abandoned transaction holds the last stable offset back, and must see them (and never the
/// abandoned records) once the broker has aborted it.
#[test]
fn a_broker_killed_mid_transaction_ends_it_whole_and_abandoned_transactions_time_out() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = EddyProcess::broker(&dir.path().join("data"), &[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "crash", 2, 1);
    let crash = TxnRun {
        topic: "crash",
        transactional_id: "crash-producer",
        run: "crash",
        transactions: 8,
        records: 50,
        partitions: 2,
        pattern: "cca",
        hold_open_ms: 1500,
        pause_between_ms: 0,
    };
    let options = ["--retry-seconds", "90"];
    let stdout = dir.path().join("crash-producer.jsonl");
    let mut producer = crash.start(&bootstrap, &options, &stdout);
    producer.wait_lines_with("open", 3, Duration::from_secs(60));
    broker.kill9();
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    let status = producer.wait_exit(Duration::from_secs(180));
    let mut lines = producer.lines();
    eprintln!("the producer ended {status:?}");
    let reported = crash.finish(&bootstrap, &options, &mut lines);
    let committed = read_topic(&bootstrap, "crash", "read_committed", "3");
    let seen = check_transactions(&committed, "crash", 50, &reported);
    assert!(
        seen.iter().any(|txn| *txn >= 3),
        "transactions after the restart commit: {seen:?}"
    );

    // (2) An abandoned transaction.
    create_topic(&bootstrap, "abandoned", 2, 1);
    let mut abandoned = Background::start(
        &bootstrap,
        &["--transaction-timeout-ms", "8000"],
        &[
            "produce-txn",
            "--topic",
            "abandoned",
            "--transactional-id",
            "vanishing",
            "--transactions",
            "1",
            "--records",
            "20",
            "--partitions",
            "2",
            "--run-id",
            "abandoned",
            "--hold-open-ms",
            "600000",
        ],
        &dir.path().join("abandoned.jsonl"),
    );
    abandoned.wait_lines_with("open", 1, Duration::from_secs(60));
    let opened = Instant::now();
    abandoned.kill9();
    let after = txn_tool(
        &bootstrap,
        &[],
        &[
            "produce-txn",
            "--topic",
            "abandoned",
            "--transactional-id",
            "later",
            "--transactions",
            "3",
            "--records",
            "20",
            "--partitions",
            "2",
            "--run-id",
            "after",
        ],
    );
    assert_eq!(after.last().expect("summary")["committed"], 3, "{after:?}");
    let early = read_topic(&bootstrap, "abandoned", "read_committed", "1");
    if opened.elapsed() < Duration::from_secs(7) {
        assert!(
            early.is_empty(),
            "the open transaction holds the last stable offset back, yet read_committed \
             returned {early:?}"
        );
    } else {
        eprintln!("the early read came after the transaction timeout: not checked");
    }
    let visible = wait_for(
        Duration::from_secs(90),
        "the abandoned transaction to be aborted and the later ones readable",
        || {
            let read = read_topic(&bootstrap, "abandoned", "read_committed", "2");
            (read.len() >= 60).then_some(read)
        },
    );
    let later = outcomes(&after);
    let seen = check_transactions(&visible, "after", 20, &later);
    assert_eq!(seen.len(), 3, "{seen:?}");
    let abandoned_seen = check_transactions(&visible, "abandoned", 20, &BTreeMap::new());
    assert!(
        abandoned_seen.is_empty(),
        "the abandoned transaction was aborted"
    );
    let uncommitted = read_topic(&bootstrap, "abandoned", "read_uncommitted", "2");
    assert_eq!(
        uncommitted.len(),
        80,
        "the abandoned records are in the log, aborted"
    );
}

/// Goal: an idempotent producer's retries stay duplicates across broker restarts, because the
/// broker restores each producer's sequence state: nothing is written twice, nothing
/// acknowledged is lost, and the producer never sees OUT_OF_ORDER_SEQUENCE_NUMBER or
/// UNKNOWN_PRODUCER_ID. Method: an idempotent acks=all producer writes 3,000 records/s to
/// three partitions; the broker is killed with SIGKILL, restarted, later stopped with SIGTERM
/// and restarted, with more acknowledgements required after each; then every partition is
/// read and checked against the acknowledgements.
#[test]
fn idempotent_producer_sequences_survive_broker_restarts() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = EddyProcess::broker(&dir.path().join("data"), &[]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "idem", 3, 1);
    let acked = dir.path().join("acked.jsonl");
    let stop = dir.path().join("stop");
    let mut producer = Background::start(
        &bootstrap,
        &[],
        &[
            "produce-idempotent",
            "--topic",
            "idem",
            "--out",
            arg(&acked),
            "--stop-file",
            arg(&stop),
            "--rate",
            "3000",
        ],
        &dir.path().join("producer.jsonl"),
    );
    let acked_count = || std::fs::read_to_string(&acked).map_or(0, |s| s.lines().count());
    let wait_acks = |since: usize, what: &str| {
        wait_for(Duration::from_secs(90), what, || {
            let now = acked_count();
            (now >= since + 2_000).then_some(now)
        })
    };
    let seen = wait_acks(0, "first acknowledgements");
    broker.kill9();
    broker.restart();
    let seen = wait_acks(seen, "acknowledgements after kill -9 and restart");
    broker.stop();
    broker.restart();
    wait_acks(seen, "acknowledgements after a clean stop and restart");
    std::fs::write(&stop, b"").expect("writing the stop file");
    let status = producer.wait_exit(Duration::from_secs(90));
    let summary = producer.lines().pop().expect("a summary");
    assert!(status.success(), "{summary}");
    assert_eq!(summary["failed"], 0, "no delivery failed: {summary}");
    assert_eq!(summary["unflushed"], 0, "{summary}");
    let errors = summary["errors"].to_string();
    for bad in [
        "OUT_OF_ORDER_SEQUENCE",
        "UNKNOWN_PRODUCER_ID",
        "\"fatal\":true",
    ] {
        assert!(!errors.contains(bad), "the producer saw {bad}: {summary}");
    }

    let stored = read_topic(&bootstrap, "idem", "read_uncommitted", "3");
    let mut at: HashMap<(i64, i64), &str> = HashMap::new();
    let mut values: HashMap<&str, (i64, i64)> = HashMap::new();
    for record in &stored {
        at.insert((record.partition, record.offset), &record.value);
        if let Some(first) = values.insert(&record.value, (record.partition, record.offset)) {
            panic!(
                "{} is stored twice: at {first:?} and {:?}",
                record.value,
                (record.partition, record.offset)
            );
        }
    }
    let acknowledged = read_json_lines(&acked);
    assert_eq!(
        acknowledged.len(),
        summary["acked"].as_u64().unwrap_or(0) as usize
    );
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "every record stored is acknowledged"
    );
    for record in &acknowledged {
        let position = (
            record["partition"].as_i64().expect("partition"),
            record["offset"].as_i64().expect("offset"),
        );
        assert_eq!(
            at.get(&position).copied(),
            record["value"].as_str(),
            "acknowledged {record} is not where it was acknowledged"
        );
    }
}

/// The partition of `__transaction_state` that holds `transactional_id` among `partitions`:
/// Java's String.hashCode made non-negative, as Kafka and Eddy's group coordinator pick it.
fn transaction_state_partition(transactional_id: &str, partitions: i64) -> i64 {
    let hash = transactional_id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    i64::from(hash & 0x7fff_ffff) % partitions
}

/// The node coordinating `transactional_id`: the leader of its `__transaction_state`
/// partition, which FindCoordinator must name too.
fn transaction_coordinator(cluster: &EddyCluster, transactional_id: &str) -> i64 {
    let (partition, leader) = wait_for(
        Duration::from_secs(60),
        "__transaction_state with leaders",
        || {
            let metadata = cluster.metadata("__transaction_state")?;
            let topic = metadata["topics"]
                .as_array()?
                .iter()
                .find(|t| t["topic"] == "__transaction_state")?
                .clone();
            let count = topic["partitions"].as_array()?.len() as i64;
            if count == 0 {
                return None;
            }
            let partition = transaction_state_partition(transactional_id, count);
            let (leader, _, _) = cluster.partition_state("__transaction_state", partition)?;
            Some((partition, leader))
        },
    );
    let found = txn_tool(
        &cluster.bootstrap(),
        &[],
        &["find-coordinator", "--key", transactional_id],
    );
    let found = found.last().expect("an answer");
    assert_eq!(
        found["node_id"].as_i64(),
        Some(leader),
        "FindCoordinator names the leader of __transaction_state partition {partition}: \
         {found}"
    );
    leader
}

/// Goal: on a three-node cluster, killing the transaction coordinator with SIGKILL in the
/// middle of a run of transactions leaves every transaction committed or aborted, never half,
/// and transactions go on with the same transactional id. Method: a producer runs 30
/// transactions of 20 records over two replicated partitions (commit, commit, abort, ...);
/// after three have ended, the leader of the `__transaction_state` partition holding its
/// transactional id is killed; once another node leads that partition, the producer must end
/// more transactions (or, if a fatal error stopped it, a new producer with the same id runs
/// the rest); the killed node is restarted; then the checker runs on what read_committed sees.
#[test]
fn transactions_go_on_when_the_transaction_coordinator_is_killed() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = EddyCluster::start(dir.path(), 3, &[]);
    let bootstrap = cluster.bootstrap();
    create_topic(&bootstrap, "ctx", 2, 3);
    cluster.wait_fully_in_sync("ctx", 2, 3);
    let coordinated = TxnRun {
        topic: "ctx",
        transactional_id: "coordinated",
        run: "ctx",
        transactions: 30,
        records: 20,
        partitions: 2,
        pattern: "cca",
        hold_open_ms: 200,
        pause_between_ms: 100,
    };
    let options = ["--retry-seconds", "90", "--transaction-timeout-ms", "30000"];
    let stdout = dir.path().join("producer.jsonl");
    let mut producer = coordinated.start(&bootstrap, &options, &stdout);
    producer.wait_lines_with("initialized", 1, Duration::from_secs(60));
    let coordinator = transaction_coordinator(&cluster, "coordinated");
    producer.wait_lines_with("outcome", 3, Duration::from_secs(60));
    let before_kill = outcomes(&producer.lines()).len() as u64;
    cluster.node(coordinator as i32).kill9();
    eprintln!("killed coordinator {coordinator} after {before_kill} transactions");
    let successor = wait_for(
        Duration::from_secs(30),
        "a new transaction coordinator",
        || {
            let metadata = cluster.metadata("__transaction_state")?;
            let count = metadata["topics"][0]["partitions"].as_array()?.len() as i64;
            let partition = transaction_state_partition("coordinated", count.max(1));
            cluster
                .partition_state("__transaction_state", partition)
                .map(|(leader, _, _)| leader)
                .filter(|leader| *leader != coordinator)
        },
    );
    eprintln!("node {successor} coordinates now");
    let status = producer.wait_exit(Duration::from_secs(240));
    eprintln!("the producer ended {status:?}");
    let mut lines = producer.lines();
    let reported = coordinated.finish(&cluster.bootstrap(), &options, &mut lines);
    cluster.node(coordinator as i32).restart();
    cluster.wait_ready(3);
    cluster.wait_fully_in_sync("ctx", 2, 3);
    let committed = read_topic(&cluster.bootstrap(), "ctx", "read_committed", "3");
    let seen = check_transactions(&committed, "ctx", 20, &reported);
    let after_kill = seen.iter().filter(|t| **t > before_kill).count();
    assert!(
        after_kill >= 5,
        "transactions commit after the coordinator moved: {seen:?}"
    );
}
