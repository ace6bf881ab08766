//! `eddy bench`: throughput of the log, or of a persistent query, in-process, on one partition.
//!
//! `--workload log` (the default):
//! Producing builds batches of `--batch-records` records of `--record-bytes` value bytes each and
//! appends them through the same path a Kafka produce request takes (validate, stamp, append,
//! and with `--flush fsync` wait for the group-committed fdatasync). Consuming reads the
//! partition back from offset 0 and decodes every record. Figures print as records/s and MB/s.
//!
//! `--workload filter-project`: loads `--records` JSON orders into a topic, then times a
//! persistent query (`WHERE qty > 2`, a projection with arithmetic and a string function) from
//! its start until it has committed the whole topic, topic to topic. Pin it to one core with
//! `taskset -c 0` for the per-core figure.
//!
//! `--workload push-latency`: the time from an INSERT reaching the HTTP API to its row reaching
//! each of `--clients` push queries, at `--rate` rows/s for `--seconds` (push_latency.rs).
//!
//! `eddy bench nexmark --query q0 --events 10000000`: a Nexmark query over generated events,
//! topic to topic (nexmark/).

mod nexmark;
mod push_latency;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use eddy_broker::log::batch::{decode_records, BatchBuilder};
use eddy_broker::{now_ms, Broker, BrokerConfig};

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// `log` (produce and consume), `filter-project` (a stateless persistent query),
    /// `push-latency` (INSERT to push-query row over HTTP) or `nexmark`.
    #[arg(default_value = "log")]
    workload_name: String,
    /// The same as the positional workload (kept for older scripts).
    #[arg(long)]
    workload: Option<String>,
    /// nexmark: the query (q0, q1, q2, q22; the SQL is in queries/nexmark/).
    #[arg(long, default_value = "q0")]
    query: String,
    /// nexmark: events to generate and load before the query starts.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// nexmark: the generator's seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// nexmark: event-time rate of the generated events (events per second).
    #[arg(long, default_value_t = 10_000)]
    event_rate: u64,
    /// nexmark: shuffle event times within groups of this many events (1 = in order).
    #[arg(long, default_value_t = 1)]
    out_of_order_group_size: u64,
    /// nexmark: afterwards, compare the sink with the query's batch form run by DataFusion.
    #[arg(long)]
    check: bool,
    /// Records to produce.
    #[arg(long, default_value_t = 5_000_000)]
    records: u64,
    /// Value bytes per record.
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 1_000)]
    batch_records: usize,
    /// `interval` (flush.ms=1000) or `fsync` (flush.messages=1: every acknowledgement waits for
    /// its fdatasync).
    #[arg(long, default_value = "interval")]
    flush: String,
    /// Where to put the data (a temporary directory by default).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// push-latency: concurrent push queries.
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// push-latency: rows inserted per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// push-latency: how long to insert.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let workload = args.workload.clone().unwrap_or(args.workload_name.clone());
    match workload.as_str() {
        "log" => run_log(args).await,
        "filter-project" => run_filter_project(args).await,
        "push-latency" => push_latency::run(args.clients, args.rate, args.seconds).await,
        "nexmark" => {
            nexmark::run(nexmark::NexmarkArgs {
                query: args.query,
                events: args.events,
                config: nexmark::Config {
                    seed: args.seed,
                    rate: args.event_rate,
                    out_of_order_group_size: args.out_of_order_group_size,
                    ..nexmark::Config::default()
                },
                data_dir: args.data_dir,
                check: args.check,
            })
            .await
        }
        other => anyhow::bail!(
            "the workload must be 'log', 'filter-project', 'push-latency' or 'nexmark', \
             not '{other}'"
        ),
    }
}

async fn run_filter_project(args: BenchArgs) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir().context("creating a temporary data directory")?;
    let broker = Broker::open(BrokerConfig::new(temporary.path())).await?;
    broker.create_topic("orders", 1, BTreeMap::new())?;
    let partition = broker.partition("orders", 0)?;
    let mut written = 0u64;
    while written < args.records {
        let n = (args.records - written).min(args.batch_records as u64);
        let now = now_ms();
        let mut builder = BatchBuilder::new(now, n as usize * 80);
        for i in written..written + n {
            let value = format!(
                r#"{{"ID":{i},"ITEM":"item-{}","QTY":{},"PRICE":{}.5}}"#,
                i % 1000,
                i % 7,
                i % 100
            );
            builder.push(now, None, Some(value.as_bytes()), &[]);
        }
        partition.append(&mut builder.finish(), now)?;
        written += n;
    }
    let client = std::sync::Arc::new(eddy_broker::InProcessClient::new(broker));
    let engine = eddy_engine::Engine::new(client);
    engine
        .execute(
            "CREATE STREAM orders (id BIGINT, item STRING, qty INT, price DOUBLE) \
             WITH (kafka_topic='orders', value_format='JSON');",
        )
        .await?;
    let start = Instant::now();
    engine
        .execute(
            "CREATE STREAM big_orders AS SELECT id, UCASE(item) AS item, qty * price AS total \
             FROM orders WHERE qty > 2 EMIT CHANGES;",
        )
        .await?;
    if !engine
        .wait_until_caught_up(std::time::Duration::from_secs(3600))
        .await
    {
        anyhow::bail!("the query did not catch up within an hour");
    }
    report(
        "filter-project",
        "interval",
        args.records,
        80,
        start.elapsed(),
    );
    Ok(())
}

async fn run_log(args: BenchArgs) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir().context("creating a temporary data directory")?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    let broker = Broker::open(BrokerConfig::new(&dir)).await?;
    let mut configs = BTreeMap::new();
    match args.flush.as_str() {
        "interval" => configs.insert("flush.ms".to_string(), "1000".to_string()),
        "fsync" => configs.insert("flush.messages".to_string(), "1".to_string()),
        other => anyhow::bail!("--flush must be 'interval' or 'fsync', not '{other}'"),
    };
    broker.create_topic("bench", 1, configs)?;
    let partition = broker.partition("bench", 0)?;
    let value = vec![b'x'; args.record_bytes];
    let batches = args.records.div_ceil(args.batch_records as u64);
    let start = Instant::now();
    let mut produced = 0u64;
    for b in 0..batches {
        let n = (args.records - b * args.batch_records as u64).min(args.batch_records as u64);
        let now = now_ms();
        let mut builder = BatchBuilder::new(now, n as usize * (args.record_bytes + 16));
        for i in 0..n {
            let key = (produced + i).to_be_bytes();
            builder.push(now, Some(&key), Some(&value), &[]);
        }
        let info = partition.append(&mut builder.finish(), now)?;
        if partition.fsync_before_ack() {
            partition.wait_durable(info.last_offset).await?;
        }
        produced += n;
    }
    report(
        "produce",
        args.flush.as_str(),
        produced,
        args.record_bytes,
        start.elapsed(),
    );

    let start = Instant::now();
    let mut consumed = 0u64;
    let mut offset = 0i64;
    while offset < partition.high_watermark() {
        let bytes = partition.read(offset, 1 << 20)?;
        let records = decode_records(&bytes).map_err(anyhow::Error::msg)?;
        let last = records
            .last()
            .context("a read below the high watermark returns records")?;
        offset = last.offset + 1;
        consumed += records.iter().filter(|r| r.offset >= 0).count() as u64;
    }
    report(
        "consume",
        args.flush.as_str(),
        consumed,
        args.record_bytes,
        start.elapsed(),
    );
    Ok(())
}

fn report(
    what: &str,
    flush: &str,
    records: u64,
    record_bytes: usize,
    elapsed: std::time::Duration,
) {
    let seconds = elapsed.as_secs_f64();
    let per_second = records as f64 / seconds;
    let megabytes = per_second * record_bytes as f64 / 1e6;
    println!(
        "{what:8} flush={flush:8} records={records} seconds={seconds:.3} records/s={per_second:.0} MB/s={megabytes:.1}"
    );
}
