//! What the engine's integration tests share.

#![allow(dead_code)] // each test file uses some of it

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eddy_broker::{Broker, BrokerConfig, InProcessClient, LogClient};
use eddy_engine::Engine;
use serde_json::Value;

/// An engine on a fresh in-process broker; the folder lives as long as the returned guard.
pub(crate) async fn engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::open(BrokerConfig::new(dir.path()))
        .await
        .expect("broker");
    (dir, Engine::new(Arc::new(InProcessClient::new(broker))))
}

/// A fresh in-process broker's client; the folder lives as long as the returned guard.
pub(crate) async fn broker() -> (tempfile::TempDir, Arc<dyn LogClient>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::open(BrokerConfig::new(dir.path()))
        .await
        .expect("broker");
    (dir, Arc::new(InProcessClient::new(broker)))
}

/// Every record of `topic` there is now, partition after partition, each in its order:
/// (key bytes, JSON value or `None` for a tombstone).
pub(crate) async fn read_topic(
    client: &Arc<dyn LogClient>,
    topic: &str,
) -> Vec<(Bytes, Option<Value>)> {
    let mut out = Vec::new();
    let partitions = client.partition_count(topic).await.expect("topic");
    for partition in 0..partitions {
        let mut offset = 0;
        loop {
            let records = client
                .fetch(topic, partition, offset, 1 << 20, Duration::from_millis(10))
                .await
                .expect("fetch");
            if records.is_empty() {
                break;
            }
            for r in records {
                offset = r.offset + 1;
                let value = r.value.map(|v| serde_json::from_slice(&v).expect("JSON"));
                out.push((r.key.unwrap_or_default(), value));
            }
        }
    }
    out
}
