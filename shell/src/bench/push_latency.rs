//! Push-query latency: an embedded server on a loopback port, `clients` push queries open on
//! one stream over HTTP (`/query-stream`, as the shell reads them), and rows inserted over HTTP
//! (`/inserts-stream`, a request every few milliseconds) at `rate` rows/s. Each row carries the
//! wall-clock time its request was sent; each client records now minus that when the row
//! arrives. Prints the percentiles over every delivered row.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{json, Value};

use crate::client::Client;

/// How often an insert request goes out.
const TICK: Duration = Duration::from_millis(5);

pub(super) async fn run(clients: usize, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    // The same in-process server the shell starts.
    let server = crate::server::Embedded::start(dir.path()).await?;
    let url = server.url();
    let client = Client::new(&url, None, None)?;
    client
        .ksql(
            "CREATE STREAM ticks (id BIGINT KEY, sent_us BIGINT) \
             WITH (kafka_topic='ticks', value_format='JSON', partitions=1);",
            &Default::default(),
        )
        .await?;

    let ticks = (seconds * 1000 / TICK.as_millis() as u64).max(1);
    let per_tick = (rate * TICK.as_millis() as u64 / 1000).max(1);
    let total = ticks * per_tick;
    let mut readers = Vec::new();
    for _ in 0..clients {
        let mut stream = client
            .query(
                "SELECT id, sent_us FROM ticks EMIT CHANGES;",
                &Default::default(),
            )
            .await?;
        readers.push(tokio::spawn(async move {
            let mut latencies_us = Vec::with_capacity(total as usize);
            while (latencies_us.len() as u64) < total {
                let Ok(Some(row)) = stream.next_row().await else {
                    break;
                };
                let sent = row.get(1).and_then(Value::as_i64).unwrap_or_default();
                latencies_us.push(now_us() - sent);
            }
            latencies_us
        }));
    }
    // The queries read from the latest offset: let them all start before the first row.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let http = reqwest::Client::new();
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut senders = Vec::new();
    for tick in 0..ticks {
        interval.tick().await;
        let sent = now_us();
        let mut body = json!({"target": "TICKS"}).to_string();
        for i in 0..per_tick {
            body.push('\n');
            body.push_str(&json!({"ID": tick * per_tick + i, "SENT_US": sent}).to_string());
        }
        let request = http.post(format!("{url}/inserts-stream")).body(body);
        senders.push(tokio::spawn(
            async move { request.send().await?.text().await },
        ));
    }
    for sender in senders {
        sender.await?.context("inserting rows")?;
    }
    let inserting = start.elapsed();

    let mut latencies = Vec::new();
    for reader in readers {
        match tokio::time::timeout(Duration::from_secs(60), reader).await {
            Ok(Ok(mut received)) => latencies.append(&mut received),
            _ => anyhow::bail!("a push query did not receive its rows within 60 s"),
        }
    }
    server.stop().await?;
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(index - 1).copied().unwrap_or_default() as f64 / 1000.0
    };
    println!(
        "push-latency clients={clients} rows/s={:.0} rows={total} delivered={}/{} \
         p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
        total as f64 / inserting.as_secs_f64(),
        latencies.len(),
        total * clients as u64,
        percentile(0.50),
        percentile(0.99),
        percentile(0.999),
        percentile(1.0),
    );
    Ok(())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
