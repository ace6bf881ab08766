//! `eddy`: the one binary. `eddy server` runs the SQL engine behind ksqlDB's HTTP API (with an
//! embedded broker, or on a separate one); `eddy broker` runs a broker node speaking the Kafka
//! protocol; `eddy bench` measures the log. The interactive shell is next.
//!
//! Exit codes: 0 on success or a clean shutdown (SIGINT/SIGTERM), 1 on any error (the error chain
//! is printed to stderr after `eddy: `), 2 on bad command-line usage (from clap).

mod bench;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use eddy_broker::{Broker, BrokerConfig};

#[derive(Parser)]
#[command(
    name = "eddy",
    version,
    about = "Eddy: a streaming SQL engine on a Kafka-compatible log"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the SQL engine behind ksqlDB's HTTP API.
    Server(ServerArgs),
    /// Run a broker node that speaks the Kafka wire protocol.
    Broker(BrokerArgs),
    /// Measure produce and consume throughput of the log.
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct BrokerArgs {
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
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Address of the HTTP API (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: String,
    /// Directory of the embedded broker's data (unused with --bootstrap).
    #[arg(long, default_value = "./eddy-data")]
    data_dir: PathBuf,
    /// A Kafka-compatible broker (host:port) to use instead of the embedded one.
    #[arg(long)]
    bootstrap: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDDY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Some(Command::Server(args)) => run_async(run_server(args)),
        Some(Command::Broker(args)) => run_async(run_broker(args)),
        Some(Command::Bench(args)) => run_async(bench::run(args)),
        None => Err(anyhow::anyhow!(
            "the interactive shell is not built yet; run `eddy broker` (see `eddy --help`)"
        )),
    };
    if let Err(error) = result {
        eprintln!("eddy: {error:#}");
        std::process::exit(1);
    }
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
    let broker = Broker::open(config)
        .await
        .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
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
    let (client, broker): (Arc<dyn eddy_broker::LogClient>, _) = match &args.bootstrap {
        Some(bootstrap) => {
            let client = eddy_broker::KafkaClient::connect(bootstrap)
                .await
                .with_context(|| format!("connecting to the broker at {bootstrap}"))?;
            (Arc::new(client), None)
        }
        None => {
            let broker = Broker::open(BrokerConfig::new(&args.data_dir))
                .await
                .with_context(|| format!("opening data directory {}", args.data_dir.display()))?;
            let client = eddy_broker::InProcessClient::new(Arc::clone(&broker));
            (Arc::new(client), Some(broker))
        }
    };
    let engine = Arc::new(
        eddy_engine::Engine::open(client)
            .await
            .context("replaying the command topic")?,
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;
    println!("eddy server listening on http://{address}");
    tracing::info!(%address, "server started");
    eddy_rest::serve(listener, engine, shutdown_signal())
        .await
        .context("serving HTTP")?;
    if let Some(broker) = broker {
        tracing::info!("shutting down: syncing partitions");
        broker.shutdown().await.context("clean shutdown")?;
    }
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
