//! End-to-end test of LinkedIn's Burrow, the consumer-lag checker Kafka operators run, against
//! `eddy broker` (issue 24). Burrow 1.2.1 (Debian's `burrow`) reads groups and their commits
//! from `__consumer_offsets`, high watermarks with ListOffsets v0, and keeps its own state in
//! ZooKeeper (Debian's `zookeeper`, run standalone on loopback). tests/burrow/run.sh runs the
//! same steps against the broker crate's `serve` example, without building the engine. Owners
//! are not checked: Burrow 1.2.1 reads group metadata records up to v1, and Eddy writes v3 as
//! Kafka 2.3+ does, so Burrow shows none, as it does against Kafka.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eddy_tests::{
    arg, curl_request, free_port, install_debian_package, kafka_tool, wait_for, EddyProcess,
};
use serde_json::{json, Value};

const BURROW: &str = "/usr/bin/Burrow";
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// Burrow polls the broker every second here; this leaves room for a slow machine.
const BURROW_DEADLINE: Duration = Duration::from_secs(60);
/// The client profile's kafka-version: sarama then asks Metadata v5, ListOffsets v0, Fetch v4
/// (1.2.1 knows 0.8.0 to 2.1.0; Eddy serves every one of them).
const KAFKA_VERSION: &str = "2.0.0";

/// A process the test started (ZooKeeper, Burrow), with its output in `log`; killed when
/// dropped, also when the test panics, and then its log's tail is printed.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Daemon {
        let output = File::create(&log).expect("creating the log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file handle"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Daemon { name, child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log's tail if the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}):\n{}",
                self.name,
                tail(&self.log_text())
            );
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, tail(&self.log_text()));
        }
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// ZooKeeper standalone on a free loopback port: the server class straight from Debian's jar
/// (its manifest names the libraries), without init scripts or systemd.
fn start_zookeeper(dir: &Path) -> (Daemon, u16) {
    let port = free_port();
    let config = dir.join("zoo.cfg");
    let data = dir.join("zookeeper");
    std::fs::write(
        &config,
        format!(
            "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n",
            arg(&data)
        ),
    )
    .expect("writing zoo.cfg");
    let mut zookeeper = Daemon::spawn(
        "ZooKeeper",
        Command::new("java")
            .args(["-cp", ZOOKEEPER_JAR])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config),
        dir.join("zookeeper.log"),
    );
    wait_for(BURROW_DEADLINE, "ZooKeeper to serve", || {
        zookeeper.assert_running();
        zookeeper_serving(port).then_some(())
    });
    (zookeeper, port)
}

/// Whether ZooKeeper's four-letter `srvr` answers with its mode: it accepts connections before
/// its database is loaded, and closes sessions until then.
fn zookeeper_serving(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = String::new();
    stream.write_all(b"srvr").is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.contains("Mode:")
}

/// Burrow's configuration: one cluster and one consumer module named `eddy` reading the broker
/// at `bootstrap`, polled every second, and the HTTP API on `http_port`.
fn burrow_config(dir: &Path, zookeeper_port: u16, bootstrap: &str, http_port: u16) -> String {
    format!(
        r#"[general]
pidfile="{pidfile}"

[logging]
level="info"

[zookeeper]
servers=["127.0.0.1:{zookeeper_port}"]
timeout=6
root-path="/burrow"

[client-profile.eddy]
client-id="burrow-e2e"
kafka-version="{KAFKA_VERSION}"

[cluster.eddy]
class-name="kafka"
servers=["{bootstrap}"]
client-profile="eddy"
topic-refresh=1
offset-refresh=1

[consumer.eddy]
class-name="kafka"
cluster="eddy"
servers=["{bootstrap}"]
client-profile="eddy"

[httpserver.default]
address="127.0.0.1:{http_port}"

[storage.default]
class-name="inmemory"
workers=4
intervals=10
expire-group=604800
min-distance=1

[evaluator.default]
class-name="caching"
expire-cache=1
"#,
        pidfile = arg(&dir.join("burrow.pid")),
    )
}

/// Burrow against `bootstrap`; returns once its HTTP API answers and its consumer module reads
/// `__consumer_offsets` (Burrow exits at start-up when it cannot).
fn start_burrow(dir: &Path, zookeeper_port: u16, bootstrap: &str) -> (Daemon, String) {
    let http_port = free_port();
    let config_dir = dir.join("burrow");
    std::fs::create_dir_all(&config_dir).expect("creating Burrow's folder");
    let config = burrow_config(&config_dir, zookeeper_port, bootstrap, http_port);
    std::fs::write(config_dir.join("burrow.toml"), config).expect("writing burrow.toml");
    let mut burrow = Daemon::spawn(
        "Burrow",
        Command::new(BURROW).arg("--config-dir").arg(&config_dir),
        dir.join("burrow.log"),
    );
    let url = format!("http://127.0.0.1:{http_port}/v3/kafka/eddy");
    wait_for(BURROW_DEADLINE, "Burrow to read __consumer_offsets", || {
        burrow.assert_running();
        let reading = burrow.log_text().contains("\"starting consumers\"");
        (reading && burrow_get(&url, "").is_some()).then_some(())
    });
    (burrow, url)
}

/// GET `url` + `path` from Burrow's HTTP API: the JSON body, if it answered 200 with
/// `"error": false`.
fn burrow_get(url: &str, path: &str) -> Option<Value> {
    let (status, body) = curl_request(&[&format!("{url}{path}")]);
    let body: Value = serde_json::from_str(&body).ok()?;
    (status == 200 && body["error"] == false).then_some(body)
}

/// The high watermark of each of `partitions` partitions of `topic`.
fn high_watermarks(bootstrap: &str, topic: &str, partitions: usize) -> Vec<i64> {
    let count = partitions.to_string();
    let marks = kafka_tool(
        bootstrap,
        &["watermarks", "--topic", topic, "--partitions", &count],
    );
    let marks = marks.as_array().expect("one entry per partition");
    marks
        .iter()
        .map(|m| m["high"].as_i64().expect("a high watermark"))
        .collect()
}

/// Polls Burrow's `/lag` for `group` until each partition of `orders` shows `expected`
/// (partition, committed offset, lag) and the total is `total_lag`; returns the status. On
/// timeout the panic shows what Burrow last answered.
fn wait_for_lag(url: &str, group: &str, expected: &[(i64, i64, i64)], total_lag: i64) -> Value {
    let deadline = Instant::now() + BURROW_DEADLINE;
    let mut last_seen = Value::Null;
    loop {
        if let Some(lag) = burrow_get(url, &format!("/consumer/{group}/lag")) {
            let status = lag["status"].clone();
            if partition_lags(&status).as_deref() == Some(expected)
                && status["totallag"] == total_lag
            {
                return status;
            }
            last_seen = lag;
        }
        assert!(
            Instant::now() < deadline,
            "Burrow did not report (partition, offset, lag) {expected:?} and total {total_lag} \
             within {BURROW_DEADLINE:?}; it last answered {last_seen}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (partition, committed offset, current lag) of each partition of `orders` in a Burrow
/// status, in partition order.
fn partition_lags(status: &Value) -> Option<Vec<(i64, i64, i64)>> {
    let mut seen: Vec<(i64, i64, i64)> = status["partitions"]
        .as_array()?
        .iter()
        .filter(|p| p["topic"] == "orders")
        .map(|p| {
            let partition = p["partition"].as_i64()?;
            Some((
                partition,
                p["end"]["offset"].as_i64()?,
                p["current_lag"].as_i64()?,
            ))
        })
        .collect::<Option<_>>()?;
    seen.sort();
    Some(seen)
}

/// Goal: Burrow, started before any group exists, reports a consumer group of `eddy broker`
/// with its committed offset and lag per partition. Method: start ZooKeeper, the broker and
/// Burrow; produce 100 keyed records to 2 partitions; once Burrow has read the high watermarks,
/// a consumer group reads them and commits; 100 more are produced. Burrow's `/lag` must show,
/// per partition, the committed offset and high watermark minus it, and their total.
#[test]
fn burrow_reports_committed_offsets_and_lag_per_partition() {
    install_debian_package("burrow", Path::new(BURROW));
    install_debian_package("zookeeper", Path::new(ZOOKEEPER_JAR));
    let dir = tempfile::tempdir().expect("tempdir");
    let (_zookeeper, zookeeper_port) = start_zookeeper(dir.path());
    let broker = EddyProcess::broker(&dir.path().join("data"), &[]);
    let bootstrap = broker.bootstrap();
    let (_burrow, url) = start_burrow(dir.path(), zookeeper_port, &bootstrap);

    kafka_tool(
        &bootstrap,
        &["create-topic", "--topic", "orders", "--partitions", "2"],
    );
    let produce = ["produce", "--topic", "orders", "--count", "100", "--keyed"];
    assert_eq!(kafka_tool(&bootstrap, &produce)["acked"], 100);
    let first = high_watermarks(&bootstrap, "orders", 2);
    assert_eq!(first.iter().sum::<i64>(), 100, "{first:?}");
    assert!(first.iter().all(|&h| h > 0), "keys reach both partitions");
    // Burrow drops a commit for a partition whose high watermark it has not read yet.
    wait_for(
        BURROW_DEADLINE,
        "Burrow to read the high watermarks",
        || {
            let topic = burrow_get(&url, "/topic/orders")?;
            (topic["offsets"] == json!(first)).then_some(())
        },
    );

    let consumed = kafka_tool(
        &bootstrap,
        &[
            "consume",
            "--topic",
            "orders",
            "--group",
            "billing",
            "--count",
            "100",
            "--commit",
            "--idle-seconds",
            "1",
        ],
    );
    assert_eq!(consumed["consumed"], 100, "{consumed}");
    let mut committed: Vec<(i64, i64)> = consumed["committed"]
        .as_array()
        .expect("committed offsets")
        .iter()
        .map(|c| {
            (
                c["partition"].as_i64().expect("p"),
                c["offset"].as_i64().expect("o"),
            )
        })
        .collect();
    committed.sort();
    assert_eq!(committed, [(0, first[0]), (1, first[1])], "{consumed}");

    assert_eq!(kafka_tool(&bootstrap, &produce)["acked"], 100);
    let second = high_watermarks(&bootstrap, "orders", 2);
    assert_eq!(second.iter().sum::<i64>(), 200, "{second:?}");

    // Per partition: (partition, committed offset, lag = high watermark - committed).
    let expected: Vec<(i64, i64, i64)> = (0..2)
        .map(|p| (p as i64, first[p], second[p] - first[p]))
        .collect();
    let total_lag: i64 = expected.iter().map(|e| e.2).sum();
    let status = wait_for_lag(&url, "billing", &expected, total_lag);
    assert_eq!(status["cluster"], "eddy", "{status}");
    assert_eq!(status["group"], "billing", "{status}");
    assert_eq!(status["partition_count"], 2, "{status}");

    let consumers = burrow_get(&url, "/consumer").expect("the consumer list");
    assert_eq!(consumers["consumers"], json!(["billing"]));
    let topic = burrow_get(&url, "/topic/orders").expect("the topic's offsets");
    assert_eq!(topic["offsets"], json!(second));
    let topics = burrow_get(&url, "/topic").expect("the topic list");
    let names = topics["topics"].as_array().expect("topic names");
    assert!(names.contains(&json!("orders")), "{topics}");
}
