//! The processing log: records a query could not process, so bad data is visible rather than
//! silently dropped.
//!
//! A record that cannot be decoded, or whose expressions fail, is skipped by its query and
//! logged here: counted per query (DESCRIBE EXTENDED shows the count) and written as a JSON
//! row to the topic [`TOPIC`], which the stream [`STREAM`] reads, like ksqlDB's
//! `KSQL_PROCESSING_LOG`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use eddy_broker::{BrokerError, LogClient, ProducerRecord};
use parking_lot::Mutex;
use serde_json::json;

/// The topic processing errors are written to.
pub const TOPIC: &str = "eddy_processing_log";
/// The stream over [`TOPIC`].
pub const STREAM: &str = "KSQL_PROCESSING_LOG";
/// The stream's columns, as CREATE STREAM declares them.
pub const COLUMNS: &str =
    "QUERY_ID STRING, TOPIC STRING, PARTITION INT, `OFFSET` BIGINT, MESSAGE STRING, LOGGED_AT BIGINT";

/// One record a query skipped.
#[derive(Debug, Clone)]
pub struct Failure {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub message: String,
}

/// Where queries report the records they skip.
pub struct ProcessingLog {
    client: Arc<dyn LogClient>,
    /// Records skipped, per query id.
    counts: Mutex<HashMap<String, u64>>,
    /// Records skipped, per topic they were read from.
    topic_counts: Mutex<HashMap<String, u64>>,
}

impl ProcessingLog {
    pub fn new(client: Arc<dyn LogClient>) -> ProcessingLog {
        ProcessingLog {
            client,
            counts: Mutex::new(HashMap::new()),
            topic_counts: Mutex::new(HashMap::new()),
        }
    }

    /// Records skipped so far by `query_id`.
    pub fn error_count(&self, query_id: &str) -> u64 {
        self.counts.lock().get(query_id).copied().unwrap_or(0)
    }

    /// Records read from `topic` that some query skipped.
    pub fn topic_error_count(&self, topic: &str) -> u64 {
        self.topic_counts.lock().get(topic).copied().unwrap_or(0)
    }

    /// Logs records `query_id` skipped. Writing to the topic is best effort: the count and
    /// the server log always have them.
    pub async fn log(&self, query_id: &str, failures: Vec<Failure>) {
        if failures.is_empty() {
            return;
        }
        *self.counts.lock().entry(query_id.to_string()).or_default() += failures.len() as u64;
        {
            let mut topic_counts = self.topic_counts.lock();
            for failure in &failures {
                *topic_counts.entry(failure.topic.clone()).or_default() += 1;
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default();
        let records = failures
            .into_iter()
            .map(|f| {
                tracing::warn!(query = query_id, topic = %f.topic, partition = f.partition,
                    offset = f.offset, message = %f.message, "skipped a record");
                let row = json!({
                    "QUERY_ID": query_id,
                    "TOPIC": f.topic,
                    "PARTITION": f.partition,
                    "OFFSET": f.offset,
                    "MESSAGE": f.message,
                    "LOGGED_AT": now,
                });
                ProducerRecord {
                    value: Some(Bytes::from(row.to_string())),
                    timestamp_ms: Some(now),
                    ..Default::default()
                }
            })
            .collect::<Vec<_>>();
        if let Err(BrokerError::UnknownTopicOrPartition { .. }) =
            self.client.produce(TOPIC, records.clone()).await
        {
            let _ = self.client.create_topic(TOPIC, 1, Default::default()).await;
            let _ = self.client.produce(TOPIC, records).await;
        }
    }
}
