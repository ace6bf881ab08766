//! `eddy bench`: produce and consume throughput of the log, in-process, on one partition.
//!
//! Producing builds batches of `--batch-records` records of `--record-bytes` value bytes each and
//! appends them through the same path a Kafka produce request takes (validate, stamp, append,
//! and with `--flush fsync` wait for the group-committed fdatasync). Consuming reads the
//! partition back from offset 0 and decodes every record. Figures print as records/s and MB/s.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use eddy_broker::log::batch::{decode_records, BatchBuilder};
use eddy_broker::{now_ms, Broker, BrokerConfig};

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
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
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
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
