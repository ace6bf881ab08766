//! `eddy`: the one binary. With no subcommand it is the interactive shell, on an embedded
//! server (broker, engine and HTTP API in this process, data in ./eddy-data) or on a running
//! one (`--server URL`); `--execute` and `--file` run statements without a terminal. `eddy
//! server` runs the SQL engine behind ksqlDB's HTTP API (with an embedded broker, or on a
//! separate one); `eddy broker` runs a broker node speaking the Kafka protocol; `eddy bench`
//! measures the log and the engine.
//!
//! ```text
//! main.rs     the command line
//! repl.rs     the interactive loop: rustyline, history, completion
//! session.rs  running statements and shell commands (shared by the loop and scripts)
//! client.rs   ksqlDB's HTTP API from the client side (reqwest)
//! render.rs   tables and JSON on the screen
//! server.rs   starting the engine and HTTP API (eddy server, and the embedded one)
//! bench.rs    eddy bench
//! ```
//!
//! Exit codes: 0 on success or a clean shutdown (SIGINT/SIGTERM), 1 on any error (the error chain
//! is printed to stderr after `eddy: `; a failed statement of a script is printed as the server
//! said it), 2 on bad command-line usage (from clap).

mod bench;
mod client;
mod render;
mod repl;
mod server;
mod session;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eddy_broker::cluster::node::{parse_voters, ClusterConfig};
use eddy_broker::{Broker, BrokerConfig};

use crate::client::Client;
use crate::session::Session;

#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    about = "Eddy: a streaming SQL engine on a Kafka-compatible log",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    shell: ShellArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the SQL engine behind ksqlDB's HTTP API.
    Server(ServerArgs),
    /// Run a broker node that speaks the Kafka wire protocol.
    Broker(BrokerArgs),
    /// Measure produce and consume throughput of the log.
    Bench(bench::BenchArgs),
    /// Print an Argon2 hash of the password read from standard input, for the server's
    /// config file (authentication.users.<name>=<hash>).
    HashPassword,
}

/// The shell: `eddy` alone starts an embedded server and opens the shell on it.
#[derive(clap::Args)]
struct ShellArgs {
    /// A running server to use (such as http://127.0.0.1:8088) instead of an embedded one.
    #[arg(long)]
    server: Option<String>,
    /// User name for a server with basic authentication. The password comes from
    /// --password, else the EDDY_PASSWORD environment variable, else a prompt on the terminal.
    #[arg(long)]
    user: Option<String>,
    /// Password for a server with basic authentication (visible to other users of this
    /// machine in the process list: prefer EDDY_PASSWORD or the prompt).
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// A PEM certificate (or CA) to trust for an https:// server, besides the system's.
    #[arg(long, requires = "server")]
    tls_ca: Option<PathBuf>,
    /// Run these statements, then exit (non-zero on the first error).
    #[arg(long, short = 'e', conflicts_with = "file")]
    execute: Option<String>,
    /// Run the statements in this file, then exit (non-zero on the first error).
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Data directory of the embedded server (unused with --server).
    #[arg(long, default_value = "./eddy-data")]
    data_dir: PathBuf,
}

/// `eddy broker --config FILE`: each `name=value` line of the properties file becomes the flag
/// `--name value` with dots as dashes (`node.id=1` is `--node-id 1`), placed before the flags
/// given on the command line, which win. Lines starting with `#` or `!` are comments.
fn broker_config_args(args: Vec<std::ffi::OsString>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let broker = args.iter().position(|a| a == "broker");
    let config = args.iter().position(|a| a == "--config");
    let (Some(broker), Some(config)) = (broker, config) else {
        return Ok(args);
    };
    if config < broker {
        return Ok(args);
    }
    let path = args
        .get(config + 1)
        .context("--config needs a properties file")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.to_string_lossy()))?;
    let mut from_file = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (name, value) = line.split_once('=').with_context(|| {
            format!(
                "{} line {}: expected name=value",
                path.to_string_lossy(),
                number + 1
            )
        })?;
        from_file.push(format!("--{}", name.trim().replace('.', "-")).into());
        from_file.push(value.trim().into());
    }
    let mut expanded = args[..=broker].to_vec();
    expanded.extend(from_file);
    expanded.extend(args[broker + 1..config].iter().cloned());
    expanded.extend(args[config + 2..].iter().cloned());
    Ok(expanded)
}

#[derive(clap::Args)]
#[command(args_override_self = true)]
struct BrokerArgs {
    /// A properties file of these options (`node.id=1`, `controller.quorum.voters=...`, one per
    /// line, named as the flags with dots for dashes); flags on the command line win.
    #[arg(long, value_name = "FILE")]
    #[allow(dead_code)] // expanded before parsing (`broker_config_args`); here for --help
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// Directory holding partitions, offsets and metadata.
    #[arg(long, default_value = "./eddy-data")]
    data_dir: PathBuf,
    /// Host clients are told to connect to (defaults to the listen host).
    #[arg(long)]
    advertised_host: Option<String>,
    /// `num.partitions`: partitions of auto-created topics.
    #[arg(long, default_value_t = 1)]
    num_partitions: i32,
    /// `auto.create.topics.enable`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// `log.retention.check.interval.ms`: how often retention and compaction run.
    #[arg(long, default_value_t = 300_000)]
    retention_check_interval_ms: u64,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members.
    #[arg(long, default_value_t = 3_000)]
    group_initial_rebalance_delay_ms: u64,
    /// Default `flush.messages` for topics (1 = fsync before every acknowledgement).
    #[arg(long)]
    flush_messages: Option<i64>,
    /// `node.id`: this broker's id in a cluster (with --controller-listen and
    /// --controller-quorum-voters; without them the broker runs alone).
    #[arg(long, requires_all = ["controller_listen", "controller_quorum_voters"])]
    node_id: Option<i32>,
    /// Address of this node's controller listener (the metadata quorum's traffic).
    #[arg(long, requires = "node_id")]
    controller_listen: Option<String>,
    /// `controller.quorum.voters`: every node of the metadata quorum, as
    /// ID@HOST:PORT,ID@HOST:PORT,... (their controller listeners).
    #[arg(long, requires = "node_id")]
    controller_quorum_voters: Option<String>,
    /// `broker.rack`: replicas of a partition are spread over racks.
    #[arg(long, requires = "node_id")]
    rack: Option<String>,
    /// `default.replication.factor` of new topics in a cluster [default: min(3, voters)].
    #[arg(long, requires = "node_id")]
    default_replication_factor: Option<i16>,
    /// `min.insync.replicas` default for topics: acks=all needs this many replicas in sync.
    #[arg(long)]
    min_insync_replicas: Option<i32>,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced and loses its
    /// leaderships.
    #[arg(long, default_value_t = 3_000)]
    broker_session_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    #[arg(long, default_value_t = 500)]
    broker_heartbeat_interval_ms: u64,
    /// `replica.lag.time.max.ms`: a follower not caught up this long leaves the in-sync set.
    #[arg(long, default_value_t = 30_000)]
    replica_lag_time_max_ms: u64,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Address of the HTTP API (port 0 picks a free one) [default: 127.0.0.1:8088].
    #[arg(long)]
    listen: Option<String>,
    /// Directory of the embedded broker's data (unused with --bootstrap) [default: ./eddy-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A Kafka-compatible broker (host:port) to use instead of the embedded one.
    #[arg(long)]
    bootstrap: Option<String>,
    /// A config file (properties: listeners, bootstrap.servers, data.dir,
    /// authentication.users.<name>, tls.cert, tls.key, push.slow.client.timeout.ms,
    /// http.header.read.timeout.ms, http.body.read.timeout.ms, ksql.query.pull.max.rows,
    /// ksql.query.pull.max.bytes); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The operators allocate many small values (rows of scalar values, keys): mimalloc serves
/// them faster than the system's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = match broker_config_args(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("eddy: {error:#}");
            std::process::exit(1);
        }
    };
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Some(Command::Server(args)) => {
            log_to_stderr();
            run_async(run_server(args))
        }
        Some(Command::Broker(args)) => {
            log_to_stderr();
            run_async(run_broker(args))
        }
        Some(Command::Bench(args)) => {
            log_to_stderr();
            run_async(bench::run(args))
        }
        Some(Command::HashPassword) => hash_password(),
        None => run_shell(cli.shell),
    };
    if let Err(error) = result {
        eprintln!("eddy: {error:#}");
        std::process::exit(1);
    }
}

/// Logs go to stderr, filtered by `EDDY_LOG` (default `info`).
fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter("info"))
        .with_writer(std::io::stderr)
        .init();
}

fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("EDDY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

/// The shell, on `--server` or on a server embedded in this process (whose logs go to
/// `eddy.log` in its data directory, to keep the screen for the shell).
fn run_shell(args: ShellArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let credentials = match &args.user {
        Some(user) => Some((user.clone(), password(args.password.clone())?)),
        None => None,
    };
    let (client, embedded) = match &args.server {
        Some(url) => (Client::new(url, credentials, args.tls_ca.as_deref())?, None),
        None => {
            std::fs::create_dir_all(&args.data_dir)
                .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(args.data_dir.join("eddy.log"))
                .context("opening eddy.log")?;
            tracing_subscriber::fmt()
                .with_env_filter(log_filter("info"))
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(log))
                .init();
            let server = runtime.block_on(server::Embedded::start(&args.data_dir))?;
            (Client::new(&server.url(), credentials, None)?, Some(server))
        }
    };
    let mut session = Session::new(client);
    let script = match (&args.execute, &args.file) {
        (Some(sql), _) => Some(sql.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        (None, None) if !std::io::stdin().is_terminal() => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading statements from standard input")?;
            Some(text)
        }
        (None, None) => None,
    };
    let outcome = match script {
        Some(script) => runtime.block_on(session.run(&script)).map(|_| ()),
        None => {
            let url = session.client.url().to_string();
            match &embedded {
                Some(_) => println!(
                    "Eddy {} - streaming SQL. Embedded server at {url}, data in {}.",
                    env!("CARGO_PKG_VERSION"),
                    args.data_dir.display()
                ),
                None => println!(
                    "Eddy {} - streaming SQL. Server: {url}.",
                    env!("CARGO_PKG_VERSION")
                ),
            }
            println!(
                "Statements end with ';'. Type `help` for commands, `exit` or Ctrl-D to leave.\n"
            );
            repl::run(&runtime, &mut session)?;
            Ok(())
        }
    };
    if let Some(server) = embedded {
        runtime.block_on(server.stop())?;
    }
    outcome.map_err(|error| {
        repl::report(&error);
        std::process::exit(1)
    })
}

fn run_async(future: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

async fn run_broker(args: BrokerArgs) -> anyhow::Result<()> {
    let (listener, address) = eddy_broker::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let mut config = BrokerConfig::new(&args.data_dir);
    config.advertised_host = args
        .advertised_host
        .unwrap_or_else(|| address.ip().to_string());
    config.advertised_port = address.port() as i32;
    config.default_partitions = args.num_partitions;
    config.auto_create_topics = args.auto_create_topics;
    config.retention_check_interval = Duration::from_millis(args.retention_check_interval_ms);
    config.group_initial_rebalance_delay =
        Duration::from_millis(args.group_initial_rebalance_delay_ms);
    if let Some(flush_messages) = args.flush_messages {
        config.topic_defaults.flush_messages = flush_messages.max(1);
    }
    if let Some(min_insync_replicas) = args.min_insync_replicas {
        config.topic_defaults.min_insync_replicas = min_insync_replicas.max(1);
    }
    let opened = match (
        &args.node_id,
        &args.controller_listen,
        &args.controller_quorum_voters,
    ) {
        (Some(node_id), Some(controller_listen), Some(voters)) => {
            config.node_id = *node_id;
            let voters = parse_voters(voters).map_err(anyhow::Error::msg)?;
            let mut cluster = ClusterConfig::new(*node_id, voters);
            cluster.rack = args.rack.clone();
            if let Some(factor) = args.default_replication_factor {
                cluster.default_replication_factor = factor;
            }
            cluster.session_timeout = Duration::from_millis(args.broker_session_timeout_ms);
            cluster.heartbeat_interval = Duration::from_millis(args.broker_heartbeat_interval_ms);
            cluster.replica_lag_time_max = Duration::from_millis(args.replica_lag_time_max_ms);
            let (controller, _) = eddy_broker::bind(controller_listen)
                .await
                .with_context(|| format!("binding {controller_listen}"))?;
            Broker::open_cluster(config, cluster, controller).await
        }
        _ => Broker::open(config).await,
    };
    let broker =
        opened.with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
    println!("eddy broker listening on {address}");
    tracing::info!(%address, data_dir = %args.data_dir.display(), "broker started");
    tokio::select! {
        served = eddy_broker::serve(Arc::clone(&broker), listener) => served.context("serving")?,
        _ = shutdown_signal() => {
            tracing::info!("shutting down: syncing partitions");
            broker.shutdown().await.context("clean shutdown")?;
        }
    }
    Ok(())
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => eddy_rest::ServerConfig::load(path).map_err(anyhow::Error::msg)?,
        None => eddy_rest::ServerConfig::default(),
    };
    let listen = args
        .listen
        .or(config.listen)
        .unwrap_or_else(|| "127.0.0.1:8088".to_string());
    let data_dir = args
        .data_dir
        .or(config.data_dir)
        .unwrap_or_else(|| PathBuf::from("./eddy-data"));
    let bootstrap = args.bootstrap.or(config.bootstrap);
    eddy_engine::pull::set_limits(config.pull);
    let (engine, broker) = server::open_engine(&data_dir, bootstrap.as_deref()).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr().context("reading the bound address")?;
    let scheme = if config.api.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("eddy server listening on {scheme}://{address}");
    tracing::info!(
        %address,
        authentication = config.api.users.is_some(),
        tls = config.api.tls.is_some(),
        "server started"
    );
    eddy_rest::serve(listener, engine, config.api, shutdown_signal())
        .await
        .context("serving HTTP")?;
    server::shutdown_broker(broker).await
}

/// The environment variable the shell takes its password from when --password is not given.
const PASSWORD_VARIABLE: &str = "EDDY_PASSWORD";

/// The password for --user: `given` (--password), else `EDDY_PASSWORD`, else asked for on the
/// terminal without echoing it, so it need not be on the command line.
fn password(given: Option<String>) -> anyhow::Result<String> {
    if let Some(password) = given {
        return Ok(password);
    }
    if let Ok(password) = std::env::var(PASSWORD_VARIABLE) {
        return Ok(password);
    }
    read_password_from_terminal().with_context(|| {
        format!("--user needs a password: give --password, set {PASSWORD_VARIABLE}, or run on a terminal")
    })
}

/// Prompts on the controlling terminal and reads a line with echo off (restored after, even
/// when reading fails).
fn read_password_from_terminal() -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::{BufRead, Write};
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for the password on")?;
    let echoing = tcgetattr(&terminal).context("reading the terminal's settings")?;
    let mut silent = echoing.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    silent.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&terminal, SetArg::TCSANOW, &silent).context("turning the terminal's echo off")?;
    let mut line = String::new();
    let read = (&terminal)
        .write_all(b"Password: ")
        .and_then(|()| std::io::BufReader::new(&terminal).read_line(&mut line));
    let restored = tcsetattr(&terminal, SetArg::TCSANOW, &echoing);
    read.context("reading the password from the terminal")?;
    restored.context("turning the terminal's echo back on")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn hash_password() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    println!("{}", eddy_rest::hash_password(password));
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
