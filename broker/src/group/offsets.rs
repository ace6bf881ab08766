//! Committed offsets, stored as Kafka stores them: records in the compacted internal topic
//! `__consumer_offsets`, keyed by (group, topic, partition).
//!
//! Key (version 1): `i16 version, string group, string topic, i32 partition`.
//! Value (version 3): `i16 version, i64 offset, i32 leader epoch, string metadata, i64 timestamp`.
//! A null value (tombstone) deletes the offset. A commit is acknowledged once its record is
//! synced to disk (the topic is created with `flush.messages=1`).

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::CommittedOffset;
use crate::broker::{now_ms, Broker};
use crate::error::{BrokerError, Result};
use crate::log::batch::{decode_records, BatchBuilder};

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
const OFFSETS_PARTITIONS: i32 = 1;
const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;

fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn get_string(buf: &mut Bytes) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 || buf.remaining() < len as usize {
        return None;
    }
    String::from_utf8(buf.split_to(len as usize).to_vec()).ok()
}

fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut key = BytesMut::new();
    key.put_i16(KEY_VERSION);
    put_string(&mut key, group);
    put_string(&mut key, topic);
    key.put_i32(partition);
    key.freeze()
}

fn decode_key(mut key: Bytes) -> Option<(String, String, i32)> {
    if key.remaining() < 2 || !(0..=1).contains(&key.get_i16()) {
        return None; // group metadata records (version 2) are not offsets
    }
    let group = get_string(&mut key)?;
    let topic = get_string(&mut key)?;
    (key.remaining() >= 4).then(|| (group, topic, key.get_i32()))
}

fn encode_value(offset: &CommittedOffset) -> Bytes {
    let mut value = BytesMut::new();
    value.put_i16(VALUE_VERSION);
    value.put_i64(offset.offset);
    value.put_i32(offset.leader_epoch);
    put_string(&mut value, &offset.metadata);
    value.put_i64(offset.commit_timestamp_ms);
    value.freeze()
}

fn decode_value(mut value: Bytes) -> Option<CommittedOffset> {
    if value.remaining() < 10 || value.get_i16() != VALUE_VERSION {
        return None;
    }
    let offset = value.get_i64();
    let leader_epoch = if value.remaining() >= 4 {
        value.get_i32()
    } else {
        -1
    };
    let metadata = get_string(&mut value)?;
    let commit_timestamp_ms = if value.remaining() >= 8 {
        value.get_i64()
    } else {
        0
    };
    Some(CommittedOffset {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn offsets_topic_config() -> BTreeMap<String, String> {
    [
        ("cleanup.policy", "compact"),
        ("flush.messages", "1"),
        ("segment.bytes", "104857600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Commits offsets for a group: appends them to `__consumer_offsets`, waits until they are on
/// disk, then makes them visible.
pub async fn commit(
    broker: &Broker,
    group: &str,
    offsets: Vec<(String, i32, CommittedOffset)>,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let topic = offsets_topic(broker)?;
    let partition = &topic.partitions[partition_for(group)];
    let mut builder = BatchBuilder::new(now_ms(), offsets.len() * 64);
    for (t, p, offset) in &offsets {
        let key = encode_key(group, t, *p);
        builder.push(
            offset.commit_timestamp_ms,
            Some(&key),
            Some(&encode_value(offset)),
            &[],
        );
    }
    let info = partition.append(&mut builder.finish(), now_ms())?;
    partition.wait_durable(info.last_offset).await?;
    for (t, p, offset) in offsets {
        broker.groups.set_committed(group, &t, p, Some(offset));
    }
    Ok(())
}

fn offsets_topic(broker: &Broker) -> Result<std::sync::Arc<crate::broker::Topic>> {
    match broker.topic(OFFSETS_TOPIC) {
        Some(t) => Ok(t),
        None => {
            match broker.create_topic(OFFSETS_TOPIC, OFFSETS_PARTITIONS, offsets_topic_config()) {
                Err(BrokerError::TopicAlreadyExists(_)) => broker
                    .topic(OFFSETS_TOPIC)
                    .ok_or_else(|| BrokerError::Internal("offsets topic vanished".into())),
                other => other,
            }
        }
    }
}

fn partition_for(group: &str) -> usize {
    // Java's String.hashCode, made non-negative, as Kafka picks the partition for a group.
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    ((hash & 0x7fff_ffff) % OFFSETS_PARTITIONS) as usize
}

/// Loads every committed offset from `__consumer_offsets` (at start-up).
pub(crate) fn restore(broker: &Broker) -> Result<()> {
    let Some(topic) = broker.topic(OFFSETS_TOPIC) else {
        return Ok(());
    };
    let mut restored = 0usize;
    for partition in &topic.partitions {
        let log = partition.log().lock();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let bytes = log.read(offset, 1 << 20)?;
            let records = decode_records(&bytes).map_err(BrokerError::CorruptMessage)?;
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for record in records {
                let Some((group, t, p)) = record.key.and_then(decode_key) else {
                    continue;
                };
                let value = record.value.and_then(decode_value);
                broker.groups.set_committed(&group, &t, p, value);
                restored += 1;
            }
        }
    }
    tracing::info!(records = restored, "restored committed offsets");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let key = encode_key("g", "orders", 3);
        assert_eq!(decode_key(key), Some(("g".into(), "orders".into(), 3)));
        let value = CommittedOffset {
            offset: 42,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp_ms: 7,
        };
        assert_eq!(decode_value(encode_value(&value)), Some(value));
    }

    #[test]
    fn truncated_keys_and_values_decode_to_none() {
        let key = encode_key("group", "topic", 1);
        for cut in 0..key.len() {
            assert_eq!(decode_key(key.slice(..cut)), None);
        }
        assert_eq!(decode_value(Bytes::from_static(&[0, 3, 1])), None);
    }
}
