//! PRINT topic [FROM BEGINNING] [INTERVAL n] [LIMIT n]: a topic's raw records as text lines,
//! the way ksqlDB prints them.
//!
//! ```text
//! Key format: KAFKA_STRING
//! Value format: JSON or KAFKA_STRING
//! rowtime: 2026/11/25 12:00:00.000 Z, key: alice, value: {"N":1}, partition: 0
//! ```
//! The formats are guessed from the first record's bytes (ksqlDB guesses too: a topic carries
//! no schema). Lines are produced by a task reading every partition in turn; it stops at the
//! LIMIT or when the caller drops the receiver.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::temporal_conversions::timestamp_ms_to_datetime;
use eddy_broker::LogClient;
use tokio::sync::mpsc;

use crate::error::{EngineError, Result};

/// How long one fetch waits for records when a partition has none.
const POLL: Duration = Duration::from_millis(100);
/// Lines buffered before the reader waits for the caller.
const BUFFER_LINES: usize = 256;
const FETCH_BYTES: usize = 1 << 20;

/// A running PRINT: its lines arrive on `lines`, and end after the LIMIT.
pub struct TopicPrint {
    pub topic: String,
    pub lines: mpsc::Receiver<String>,
}

/// What PRINT was asked for.
pub struct PrintRequest {
    pub topic: String,
    pub from_beginning: bool,
    /// Print every n-th record (INTERVAL / SAMPLE); 1 prints all.
    pub interval: u64,
    pub limit: Option<u64>,
}

/// Starts printing a topic. A topic that does not exist is an error, as in ksqlDB; an unquoted
/// name also matches the topic of the same name in lower case.
pub async fn start(client: Arc<dyn LogClient>, request: PrintRequest) -> Result<TopicPrint> {
    let mut found = None;
    for name in [request.topic.clone(), request.topic.to_lowercase()] {
        if let Ok(partitions) = client.partition_count(&name).await {
            found = Some((name, partitions));
            break;
        }
    }
    let Some((topic, partitions)) = found else {
        return Err(EngineError::Plan(format!(
            "Could not find topic '{}', or the KSQL user does not have permissions to list \
             the topic. Topic names are case-sensitive.",
            request.topic
        )));
    };
    let mut positions = Vec::new();
    for partition in 0..partitions {
        let range = client.offsets(&topic, partition).await?;
        let start = if request.from_beginning {
            range.log_start_offset
        } else {
            range.high_watermark
        };
        positions.push(start);
    }
    let (sender, lines) = mpsc::channel(BUFFER_LINES);
    let reader = Reader {
        client,
        topic: topic.clone(),
        positions,
        interval: request.interval.max(1),
        limit: request.limit,
        sender,
    };
    tokio::spawn(reader.run());
    Ok(TopicPrint { topic, lines })
}

struct Reader {
    client: Arc<dyn LogClient>,
    topic: String,
    positions: Vec<i64>,
    interval: u64,
    limit: Option<u64>,
    sender: mpsc::Sender<String>,
}

impl Reader {
    async fn run(mut self) {
        let mut seen = 0u64;
        let mut printed = 0u64;
        let mut header_sent = false;
        if self.limit == Some(0) {
            return;
        }
        while !self.sender.is_closed() {
            for partition in 0..self.positions.len() {
                let fetched = self
                    .client
                    .fetch(
                        &self.topic,
                        partition as i32,
                        self.positions[partition],
                        FETCH_BYTES,
                        POLL / self.positions.len().max(1) as u32,
                    )
                    .await;
                let records = match fetched {
                    Ok(records) => records,
                    Err(error) => {
                        tracing::warn!(topic = %self.topic, %error, "PRINT stops");
                        return;
                    }
                };
                for record in records {
                    self.positions[partition] = record.offset + 1;
                    seen += 1;
                    if (seen - 1) % self.interval != 0 {
                        continue;
                    }
                    let mut text = String::new();
                    if !header_sent {
                        header_sent = true;
                        text.push_str(&format!(
                            "Key format: {}\nValue format: {}\n",
                            record
                                .key
                                .as_ref()
                                .map_or("¯\\_(ツ)_/¯ - no data processed", |k| {
                                    Guess::of(k).format_name()
                                }),
                            record
                                .value
                                .as_ref()
                                .map_or("¯\\_(ツ)_/¯ - no data processed", |v| {
                                    Guess::of(v).format_name()
                                }),
                        ));
                    }
                    text.push_str(&line(
                        record.timestamp_ms,
                        record.key.as_ref(),
                        record.value.as_ref(),
                        partition,
                    ));
                    if self.sender.send(text).await.is_err() {
                        return;
                    }
                    printed += 1;
                    if self.limit.is_some_and(|limit| printed >= limit) {
                        return;
                    }
                }
            }
        }
    }
}

/// One record as ksqlDB prints it.
fn line(timestamp_ms: i64, key: Option<&Bytes>, value: Option<&Bytes>, partition: usize) -> String {
    let rowtime = timestamp_ms_to_datetime(timestamp_ms)
        .map(|t| t.format("%Y/%m/%d %H:%M:%S%.3f Z").to_string())
        .unwrap_or_else(|| "N/A".to_string());
    let show = |bytes: Option<&Bytes>| match bytes {
        None => "<null>".to_string(),
        Some(bytes) => Guess::of(bytes).show(bytes),
    };
    format!(
        "rowtime: {rowtime}, key: {}, value: {}, partition: {partition}\n",
        show(key),
        show(value)
    )
}

/// What a record's bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guess {
    /// A JSON object or array (also readable as a string).
    Json,
    /// Readable text.
    Text,
    /// Four or eight bytes that are not text: a big-endian INT or BIGINT.
    Int,
    Bigint,
    /// Anything else, printed in hexadecimal.
    Bytes,
}

impl Guess {
    fn of(bytes: &[u8]) -> Guess {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let trimmed = text.trim_start();
            if (trimmed.starts_with('{') || trimmed.starts_with('['))
                && serde_json::from_str::<serde_json::Value>(text).is_ok()
            {
                return Guess::Json;
            }
            if !text.chars().any(|c| c.is_control() && !c.is_whitespace()) {
                return Guess::Text;
            }
        }
        match bytes.len() {
            4 => Guess::Int,
            8 => Guess::Bigint,
            _ => Guess::Bytes,
        }
    }

    fn format_name(self) -> &'static str {
        match self {
            Guess::Json => "JSON or KAFKA_STRING",
            Guess::Text => "KAFKA_STRING",
            Guess::Int => "KAFKA_INT",
            Guess::Bigint => "KAFKA_BIGINT or KAFKA_DOUBLE",
            Guess::Bytes => "BYTES",
        }
    }

    fn show(self, bytes: &[u8]) -> String {
        match self {
            Guess::Json | Guess::Text => String::from_utf8_lossy(bytes).into_owned(),
            Guess::Int => i32::from_be_bytes(bytes.try_into().unwrap_or_default()).to_string(),
            Guess::Bigint => i64::from_be_bytes(bytes.try_into().unwrap_or_default()).to_string(),
            Guess::Bytes => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_formats_from_bytes() {
        assert_eq!(Guess::of(br#"{"A":1}"#), Guess::Json);
        assert_eq!(Guess::of(b"alice"), Guess::Text);
        assert_eq!(Guess::of(&7i32.to_be_bytes()), Guess::Int);
        assert_eq!(Guess::of(&7i64.to_be_bytes()), Guess::Bigint);
        assert_eq!(Guess::Int.show(&7i32.to_be_bytes()), "7");
    }

    #[test]
    fn lines_read_as_ksqldb_prints_them() {
        let key = Bytes::from_static(b"alice");
        let value = Bytes::from_static(br#"{"N":1}"#);
        assert_eq!(
            line(0, Some(&key), Some(&value), 2),
            "rowtime: 1970/01/01 00:00:00.000 Z, key: alice, value: {\"N\":1}, partition: 2\n"
        );
        assert_eq!(
            line(0, None, None, 0),
            "rowtime: 1970/01/01 00:00:00.000 Z, key: <null>, value: <null>, partition: 0\n"
        );
    }
}
