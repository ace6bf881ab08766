//! `eddy bench nexmark --query qN --events N`: loads N generated Nexmark events into the
//! topics nexmark_person, nexmark_auction and nexmark_bid (4 partitions each) of an in-process
//! broker, then runs the query from queries/nexmark/ as a persistent query, topic to topic,
//! until it has committed all of its input. It prints the events, the wall time, events/s,
//! the CPU seconds the process spent meanwhile (from /proc, so every thread counts), events
//! per CPU-second ("per core"), the output rows and the peak resident memory.
//!
//! Throughput counts all N events, as Nexmark does, although a query reads only the streams
//! it names (q0 reads the bids: 92% of the events); `source_records` says how many it read.

mod check;
mod generator;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use eddy_broker::log::batch::BatchBuilder;
use eddy_broker::{Broker, BrokerConfig, LogClient};

pub(crate) use generator::Config;
use generator::{Generator, Kind};

/// The streams' definitions, shared by every query.
const DDL: &str = include_str!("../../../../queries/nexmark/ddl.sql");

/// How `--check` proves a query's result (check.rs).
enum Check {
    /// The sink holds the rows of the query's batch form run by DataFusion.
    Batch(&'static str),
    /// Processing-time windows: each run's rows differ, but once every window has closed the
    /// sink's counts (this column) add up to the bids.
    CountsAddUp(&'static str),
    /// No check yet.
    None,
}

/// The queries, by name: their SQL, the topics they read, and how `--check` proves them.
const QUERIES: &[(&str, &str, &[&str], Check)] = &[
    (
        "q0",
        include_str!("../../../../queries/nexmark/q0.sql"),
        &["nexmark_bid"],
        Check::Batch(include_str!("../../../../queries/nexmark/q0.batch.sql")),
    ),
    (
        "q1",
        include_str!("../../../../queries/nexmark/q1.sql"),
        &["nexmark_bid"],
        Check::None,
    ),
    (
        "q2",
        include_str!("../../../../queries/nexmark/q2.sql"),
        &["nexmark_bid"],
        Check::Batch(include_str!("../../../../queries/nexmark/q2.batch.sql")),
    ),
    (
        "q3",
        include_str!("../../../../queries/nexmark/q3.sql"),
        &["nexmark_person", "nexmark_auction"],
        Check::None,
    ),
    (
        "q4",
        include_str!("../../../../queries/nexmark/q4.sql"),
        &["nexmark_auction", "nexmark_bid"],
        Check::Batch(include_str!("../../../../queries/nexmark/q4.batch.sql")),
    ),
    (
        "q5",
        include_str!("../../../../queries/nexmark/q5.sql"),
        &["nexmark_bid"],
        Check::Batch(include_str!("../../../../queries/nexmark/q5.batch.sql")),
    ),
    (
        "q6",
        include_str!("../../../../queries/nexmark/q6.sql"),
        &["nexmark_auction", "nexmark_bid"],
        Check::Batch(include_str!("../../../../queries/nexmark/q6.batch.sql")),
    ),
    (
        "q7",
        include_str!("../../../../queries/nexmark/q7.sql"),
        &["nexmark_bid"],
        Check::Batch(include_str!("../../../../queries/nexmark/q7.batch.sql")),
    ),
    (
        "q8",
        include_str!("../../../../queries/nexmark/q8.sql"),
        &["nexmark_person", "nexmark_auction"],
        Check::Batch(include_str!("../../../../queries/nexmark/q8.batch.sql")),
    ),
    (
        "q12",
        include_str!("../../../../queries/nexmark/q12.sql"),
        &["nexmark_bid"],
        Check::CountsAddUp("BID_COUNT"),
    ),
    (
        "q22",
        include_str!("../../../../queries/nexmark/q22.sql"),
        &["nexmark_bid"],
        Check::Batch(include_str!("../../../../queries/nexmark/q22.batch.sql")),
    ),
];

const PARTITIONS: i32 = 4;
const BATCH_RECORDS: usize = 1000;

/// What `eddy bench nexmark` is asked to do.
pub(crate) struct NexmarkArgs {
    pub(crate) query: String,
    pub(crate) events: u64,
    pub(crate) config: Config,
    pub(crate) data_dir: Option<std::path::PathBuf>,
    /// Compare the sink with the query's batch form afterwards (check.rs).
    pub(crate) check: bool,
}

pub(crate) async fn run(args: NexmarkArgs) -> anyhow::Result<()> {
    let query = args.query.to_lowercase();
    let Some((_, sql, sources, proof)) = QUERIES.iter().find(|(name, ..)| *name == query) else {
        let known: Vec<&str> = QUERIES.iter().map(|(name, ..)| *name).collect();
        anyhow::bail!("unknown query '{query}' (runnable: {})", known.join(", "));
    };
    let temporary = tempfile::tempdir().context("creating a temporary data directory")?;
    let dir = args.data_dir.as_deref().unwrap_or(temporary.path());
    let broker = Broker::open(BrokerConfig::new(dir)).await?;

    let start = Instant::now();
    let generator = Generator::new(args.config.clone());
    load(&broker, &generator, args.events)?;
    let loading = start.elapsed();
    eprintln!(
        "loaded {} events in {:.1} s",
        args.events,
        loading.as_secs_f64()
    );

    let client: Arc<dyn LogClient> = Arc::new(eddy_broker::InProcessClient::new(broker));
    let engine = eddy_engine::Engine::new(Arc::clone(&client));
    engine.execute(DDL).await.context("creating the streams")?;
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    engine.execute(sql).await.context("starting the query")?;
    if !engine.wait_until_caught_up(Duration::from_secs(3600)).await {
        anyhow::bail!("{query} did not catch up within an hour");
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let sink = query.to_uppercase();
    let output_rows = records_in(&client, &engine.source(&sink)?.topic).await?;
    let mut source_records = 0;
    for topic in *sources {
        source_records += records_in(&client, topic).await?;
    }
    println!(
        "nexmark {query} events={} source_records={source_records} seconds={seconds:.3} \
         events/s={:.0} cpu_seconds={cpu:.2} events/s/core={:.0} output_rows={output_rows} \
         peak_rss_mb={:.0}",
        args.events,
        args.events as f64 / seconds,
        args.events as f64 / cpu.max(0.01),
        peak_rss_mb(),
    );
    if args.check {
        match proof {
            Check::Batch(batch_sql) => {
                let windowed = sql.contains("WINDOW ");
                let rows =
                    check::check(&engine, &generator, args.events, &sink, batch_sql, windowed)
                        .await?;
                println!("check: {query}'s {rows} rows equal the batch result");
            }
            Check::CountsAddUp(column) => {
                let bids = records_in(&client, "nexmark_bid").await?;
                let rows = check::counts_add_up(&engine, &sink, column, bids).await?;
                println!("check: {query}'s {rows} rows count all {bids} bids");
            }
            Check::None => anyhow::bail!("{query} has no check"),
        }
    }
    Ok(())
}

/// Writes events `0..events` to the three topics, spread over the partitions by event id.
fn load(broker: &Arc<Broker>, generator: &Generator, events: u64) -> anyhow::Result<()> {
    let topics = [
        (Kind::Person, "nexmark_person"),
        (Kind::Auction, "nexmark_auction"),
        (Kind::Bid, "nexmark_bid"),
    ];
    for (_, topic) in topics {
        broker.create_topic(topic, PARTITIONS, BTreeMap::new())?;
    }
    let mut batches: BTreeMap<(&str, i32), (BatchBuilder, usize)> = BTreeMap::new();
    let flush = |broker: &Arc<Broker>, topic: &str, partition: i32, builder: BatchBuilder| {
        broker
            .partition(topic, partition)?
            .append(&mut builder.finish(), eddy_broker::now_ms())
            .map(|_| ())
    };
    for n in 0..events {
        let event = generator.event(n);
        let topic = topics
            .iter()
            .find(|(k, _)| *k == event.kind)
            .map_or("", |t| t.1);
        let partition = (n % PARTITIONS as u64) as i32;
        let (builder, count) = batches
            .entry((topic, partition))
            .or_insert_with(|| (BatchBuilder::new(event.time_ms, BATCH_RECORDS * 128), 0));
        builder.push(event.time_ms, None, Some(event.json.as_bytes()), &[]);
        *count += 1;
        if *count == BATCH_RECORDS {
            let (builder, _) = batches.remove(&(topic, partition)).expect("just used");
            flush(broker, topic, partition, builder)?;
        }
    }
    for ((topic, partition), (builder, _)) in batches {
        flush(broker, topic, partition, builder)?;
    }
    Ok(())
}

/// Records in all partitions of a topic.
async fn records_in(client: &Arc<dyn LogClient>, topic: &str) -> anyhow::Result<i64> {
    let mut total = 0;
    for partition in 0..client.partition_count(topic).await? {
        let range = client.offsets(topic, partition).await?;
        total += range.high_watermark - range.log_start_offset;
    }
    Ok(total)
}

/// User and system CPU time of this process so far (all threads), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat (11 and 12 after the name); Linux reports
    // them in USER_HZ, which is 100.
    (ticks(11) + ticks(12)) / 100.0
}

/// The process's peak resident set (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
