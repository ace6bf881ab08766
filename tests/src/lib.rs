//! Helpers for Eddy's end-to-end tests: real `eddy` processes on loopback ports with temporary
//! data folders, driven by real clients (kcat, confluent-kafka).
//!
//! The first test to need something sets it up, once per test binary: the `eddy` binary is built
//! with the profile running the tests, a Python virtual environment with the client packages is
//! created (under `$EDDY_TEST_VENV`, default `~/.cache/eddy/test-venv`), and kcat is installed
//! from Debian's packages when it is missing. So `cargo test --workspace --release` is all a
//! fresh machine needs.

pub mod qtt;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Python packages the client scripts need, pinned so runs are repeatable.
// ksql-python-ng passes `cert=` to httpx.get, which httpx 0.28 removed: keep httpx 0.27.
const PYTHON_PACKAGES: &[&str] = &[
    "confluent-kafka==2.16.1",
    "ksql-python-ng==0.29.0.1",
    "httpx[http2]==0.27.2",
    "websocket-client==1.9.2",
];

/// The workspace root. `cargo test` says where tests/ is when it runs a test; the path
/// compiled in is the fallback (it is stale when another checkout built this crate into a
/// shared target directory).
pub fn workspace_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `eddy` binary, built with the same profile as the running tests.
pub fn eddy_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<test binary>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => "release".to_string(),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut build = Command::new(cargo);
        // `cargo test` runs the tests with the package's variables (CARGO_MANIFEST_DIR,
        // CARGO_PKG_NAME, ...). Build scripts that read those (ring's) rerun when cargo's own
        // environment holds other values than last time, which would rebuild ring and every
        // crate above it here and again at the next `cargo test`: the build gets cargo's
        // environment without them.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_")
                || name.starts_with("CARGO_MANIFEST_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&name.as_ref())
            {
                build.env_remove(name.as_ref());
            }
        }
        let status = build
            // The whole workspace with all targets resolves features as `cargo test --workspace`
            // does, so this reuses its build instead of compiling DataFusion a second time.
            .args([
                "build",
                "--profile",
                &profile,
                "--workspace",
                "--all-targets",
            ])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build for the eddy binary");
        assert!(status.success(), "building the eddy binary failed");
        profile_dir.join("eddy")
    })
}

/// The Python interpreter of the test virtual environment, with the client packages installed.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = std::env::var_os("EDDY_TEST_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(std::env::temp_dir);
                home.join(".cache/eddy/test-venv")
            });
        let python = venv.join("bin/python");
        let ready = venv.join(format!("ready-{}", PYTHON_PACKAGES.join("+")));
        if !ready.exists() {
            std::fs::create_dir_all(&venv).expect("creating the venv folder");
            run_checked(
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
                "python3 -m venv",
            );
            run_checked(
                Command::new(&python)
                    .args(["-m", "pip", "install", "-q"])
                    .args(PYTHON_PACKAGES),
                "pip install of the test clients",
            );
            std::fs::write(&ready, b"").expect("marking the venv ready");
        }
        python
    })
}

/// kcat, installed from Debian's packages if it is missing.
pub fn kcat() -> &'static str {
    static KCAT: OnceLock<()> = OnceLock::new();
    KCAT.get_or_init(|| install_if_missing("kcat", "-V"));
    "kcat"
}

/// A curl call with `args`: the HTTP status code (0 when curl got none) and the body.
pub fn curl_request(args: &[&str]) -> (u16, String) {
    let output = std::process::Command::new(curl())
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

/// curl (with HTTP/2), installed from Debian's packages if it is missing.
pub fn curl() -> &'static str {
    static CURL: OnceLock<()> = OnceLock::new();
    CURL.get_or_init(|| install_if_missing("curl", "--version"));
    "curl"
}

/// The openssl command line (to make test certificates), installed if it is missing.
pub fn openssl() -> &'static str {
    static OPENSSL: OnceLock<()> = OnceLock::new();
    OPENSSL.get_or_init(|| install_if_missing("openssl", "version"));
    "openssl"
}

/// Installs Debian's package `name` unless `name version_flag` already runs.
fn install_if_missing(name: &str, version_flag: &str) {
    let present = Command::new(name)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        apt_install(name);
    }
}

/// Installs Debian's package `package` unless `installed`, a file the package puts on disk,
/// exists: for tools with no command to probe (ZooKeeper's jar) or no version flag (Burrow).
pub fn install_debian_package(package: &str, installed: &Path) {
    if !installed.exists() {
        apt_install(package);
    }
}

/// `apt-get update` then `apt-get install package`, one at a time in this test binary (apt's
/// lock refuses a second run while one holds it).
fn apt_install(package: &str) {
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = APT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    run_checked(
        Command::new("apt-get").arg("update").arg("-qq"),
        "apt-get update",
    );
    run_checked(
        Command::new("apt-get").args(["install", "-y", "-qq", package]),
        &format!("apt-get install {package}"),
    );
}

fn run_checked(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A free loopback port (bound and released; the broker binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `eddy broker` or `eddy server` process, killed when dropped.
pub struct EddyProcess {
    subcommand: &'static str,
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    extra_args: Vec<String>,
}

impl EddyProcess {
    /// Starts `eddy broker` on a free port with `data_dir`; waits until it listens.
    pub fn broker(data_dir: &Path, extra_args: &[&str]) -> EddyProcess {
        let mut args = vec!["--group-initial-rebalance-delay-ms", "0"];
        args.extend_from_slice(extra_args);
        EddyProcess::start("broker", data_dir, &args)
    }

    /// Starts `eddy server` (embedded broker) on a free port; waits until it listens.
    pub fn server(data_dir: &Path, extra_args: &[&str]) -> EddyProcess {
        EddyProcess::start("server", data_dir, extra_args)
    }

    fn start(subcommand: &'static str, data_dir: &Path, extra_args: &[&str]) -> EddyProcess {
        let mut process = EddyProcess {
            subcommand,
            child: None,
            port: free_port(),
            data_dir: data_dir.to_path_buf(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let mut child = Command::new(eddy_binary())
            .arg(self.subcommand)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .env("EDDY_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting eddy {}: {e}", self.subcommand));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = sender.send(());
                }
            }
        });
        receiver
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "eddy {} did not report listening within 60 s",
                    self.subcommand
                )
            });
        self.child = Some(child);
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the process with SIGKILL (no clean shutdown) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port and data folder.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl EddyProcess {
    /// Sends a signal (`STOP`, `CONT`, ...) to the running process.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the process runs");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Whether the process runs (was not killed).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops the process with SIGTERM (a clean shutdown) and waits up to 30 s for it to exit;
    /// `restart` starts it again.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("waiting for eddy").is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "eddy {} did not exit within 30 s of SIGTERM",
                    self.subcommand
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A cluster of `eddy broker` processes on loopback, each a metadata quorum voter (KRaft's
/// combined mode): node `i` (from 1) has its data in `<dir>/node<i>`.
pub struct EddyCluster {
    pub nodes: Vec<EddyProcess>,
}

impl EddyCluster {
    /// Starts `count` brokers with `extra_args` each; returns once all listen.
    pub fn start(dir: &Path, count: usize, extra_args: &[&str]) -> EddyCluster {
        let controller_ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let voters = controller_ports
            .iter()
            .enumerate()
            .map(|(i, port)| format!("{}@127.0.0.1:{port}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = controller_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let node_id = (i + 1).to_string();
                let controller = format!("127.0.0.1:{port}");
                let mut args = vec![
                    "--node-id",
                    &node_id,
                    "--controller-listen",
                    &controller,
                    "--controller-quorum-voters",
                    &voters,
                ];
                args.extend_from_slice(extra_args);
                EddyProcess::broker(&dir.join(format!("node{}", i + 1)), &args)
            })
            .collect();
        let cluster = EddyCluster { nodes };
        cluster.wait_ready(count);
        cluster
    }

    /// Waits until the cluster has an active controller and `count` live brokers, as a client
    /// sees them: before that, admin clients wait for a controller and topics cannot get all
    /// their replicas.
    pub fn wait_ready(&self, count: usize) {
        wait_for(Duration::from_secs(60), "the cluster to form", || {
            let metadata = self.metadata_of(&[])?;
            let brokers = metadata["brokers"].as_array()?.len();
            let controller = metadata["controllerid"].as_i64()?;
            (brokers == count && controller >= 0).then_some(())
        });
    }

    /// Every running node's `host:port`, comma-separated (a client's bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.running())
            .map(EddyProcess::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node with id `id` (from 1).
    pub fn node(&mut self, id: i32) -> &mut EddyProcess {
        &mut self.nodes[id as usize - 1]
    }

    /// The cluster's metadata as kcat sees it (`kcat -L -J`), asked of a running node.
    pub fn metadata(&self, topic: &str) -> Option<serde_json::Value> {
        self.metadata_of(&["-t", topic])
    }

    /// `kcat -L -J` with `args`, never auto-creating a topic it asks about.
    fn metadata_of(&self, args: &[&str]) -> Option<serde_json::Value> {
        let output = Command::new(kcat())
            .args(["-b", &self.bootstrap(), "-L", "-J", "-m", "5"])
            .args(["-X", "allow.auto.create.topics=false"])
            .args(args)
            .output()
            .ok()?;
        serde_json::from_slice(&output.stdout).ok()
    }

    /// Partition `partition` of `topic`: (leader, replicas, in-sync replicas), when it has a
    /// leader.
    pub fn partition_state(
        &self,
        topic: &str,
        partition: i64,
    ) -> Option<(i64, Vec<i64>, Vec<i64>)> {
        let metadata = self.metadata(topic)?;
        let found = metadata["topics"]
            .as_array()?
            .iter()
            .find(|t| t["topic"] == topic)?["partitions"]
            .as_array()?
            .iter()
            .find(|p| p["partition"] == partition)?
            .clone();
        let ids = |field: &str| -> Vec<i64> {
            found[field]
                .as_array()
                .map(|a| a.iter().filter_map(|r| r["id"].as_i64()).collect())
                .unwrap_or_default()
        };
        let leader = found["leader"].as_i64().filter(|l| *l >= 0)?;
        Some((leader, ids("replicas"), ids("isrs")))
    }

    /// Waits until every partition of `topic` has a leader and all `replicas` replicas in sync.
    pub fn wait_fully_in_sync(&self, topic: &str, partitions: i64, replicas: usize) {
        wait_for(Duration::from_secs(60), "every replica in sync", || {
            (0..partitions)
                .all(|p| {
                    self.partition_state(topic, p)
                        .is_some_and(|(_, _, isr)| isr.len() == replicas)
                })
                .then_some(())
        });
    }
}

impl Drop for EddyProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `tests/clients/kafka_tool.py` against `bootstrap` and parses the JSON it prints.
pub fn kafka_tool(bootstrap: &str, args: &[&str]) -> serde_json::Value {
    let output = kafka_tool_command(bootstrap, args)
        .output()
        .expect("running kafka_tool.py");
    parse_tool_output(&output, args)
}

/// The command running `kafka_tool.py`, for callers that manage the process themselves.
pub fn kafka_tool_command(bootstrap: &str, args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command
        .arg(workspace_root().join("tests/clients/kafka_tool.py"))
        .arg("--bootstrap")
        .arg(bootstrap)
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    command
}

/// Parses the last stdout line of a `kafka_tool.py` run as JSON.
pub fn parse_tool_output(output: &Output, args: &[&str]) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "kafka_tool {args:?} printed no JSON ({e}); status {:?}\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A path as a command-line argument (test paths are UTF-8 temporary folders).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Reads a JSON-lines file.
pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a SQL script through the shell (`eddy --file`) on an embedded server with a fresh
/// data directory; returns what it printed, after checking it exited 0.
pub fn run_shell_script(sql: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("script.sql");
    std::fs::write(&script, sql).expect("writing the script");
    let output = Command::new(eddy_binary())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--file")
        .arg(&script)
        .output()
        .expect("running eddy --file");
    let printed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    printed
}

/// Checks that every non-empty line of `expected` appears in `printed`, in order.
pub fn assert_lines_in_order(printed: &str, expected: &str, what: &str) {
    let mut from = 0;
    for line in expected.lines().filter(|l| !l.trim().is_empty()) {
        let Some(at) = printed[from..].find(line) else {
            panic!(
                "{what} expects\n{line}\nbut after what matched so far the shell printed\n{}",
                &printed[from..]
            );
        };
        from += at + line.len();
    }
}

/// An Argon2 hash of `password`, as `eddy hash-password` prints it for a config file's users.
pub fn hashed_password(password: &str) -> String {
    use std::io::Write;
    let mut hashing = Command::new(eddy_binary())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running eddy hash-password");
    let mut stdin = hashing.stdin.take().expect("piped stdin");
    writeln!(stdin, "{password}").expect("writing the password");
    drop(stdin);
    let output = hashing.wait_with_output().expect("eddy hash-password");
    assert!(output.status.success(), "eddy hash-password failed");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Starts `eddy server` with its data in `dir/data` and a config file `dir/eddy.properties`
/// holding `properties`.
pub fn server_with_config(dir: &Path, properties: &str) -> EddyProcess {
    let config = dir.join("eddy.properties");
    std::fs::write(&config, properties).expect("writing the config file");
    EddyProcess::server(&dir.join("data"), &["--config", arg(&config)])
}
