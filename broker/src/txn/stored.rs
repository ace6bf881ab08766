//! A transaction's state as stored in `__transaction_state`, in Kafka's record layout
//! (`TransactionLogKey` v0 and `TransactionLogValue` v0), so a transactional id's last record
//! is its state and compaction keeps just that.
//!
//! Key: `i16 version (0), string transactional_id`.
//! Value: `i16 version (0), i64 producer_id, i16 producer_epoch, i32 timeout_ms, i8 state,
//! [string topic, [i32 partition]] partitions, i64 last_update_ms, i64 start_ms`.
//! A null value (tombstone) removes an expired transactional id.

use std::collections::BTreeSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{TxnMetadata, TxnState};
use crate::group::offsets::{get_string, put_string};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

pub(super) fn encode_key(transactional_id: &str) -> Bytes {
    let mut key = BytesMut::new();
    key.put_i16(KEY_VERSION);
    put_string(&mut key, transactional_id);
    key.freeze()
}

pub(super) fn decode_key(mut key: Bytes) -> Option<String> {
    if key.remaining() < 2 || key.get_i16() != KEY_VERSION {
        return None;
    }
    get_string(&mut key)
}

pub(super) fn encode_value(txn: &TxnMetadata) -> Bytes {
    let mut value = BytesMut::new();
    value.put_i16(VALUE_VERSION);
    value.put_i64(txn.producer_id);
    value.put_i16(txn.producer_epoch);
    value.put_i32(txn.timeout_ms);
    value.put_i8(txn.state as i8);
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &txn.partitions {
        match topics.last_mut() {
            Some((t, partitions)) if *t == topic.as_str() => partitions.push(*partition),
            _ => topics.push((topic, vec![*partition])),
        }
    }
    value.put_i32(topics.len() as i32);
    for (topic, partitions) in topics {
        put_string(&mut value, topic);
        value.put_i32(partitions.len() as i32);
        for p in partitions {
            value.put_i32(p);
        }
    }
    value.put_i64(txn.update_ms);
    value.put_i64(txn.start_ms);
    value.freeze()
}

pub(super) fn decode_value(transactional_id: &str, mut value: Bytes) -> Option<TxnMetadata> {
    if value.remaining() < 2 + 8 + 2 + 4 + 1 + 4 || value.get_i16() != VALUE_VERSION {
        return None;
    }
    let producer_id = value.get_i64();
    let producer_epoch = value.get_i16();
    let timeout_ms = value.get_i32();
    let state = TxnState::from_i8(value.get_i8())?;
    let topics = value.get_i32();
    let mut partitions = BTreeSet::new();
    for _ in 0..topics.max(0) {
        let topic = get_string(&mut value)?;
        if value.remaining() < 4 {
            return None;
        }
        let count = value.get_i32();
        if count < 0 || value.remaining() < count as usize * 4 {
            return None;
        }
        for _ in 0..count {
            partitions.insert((topic.clone(), value.get_i32()));
        }
    }
    if value.remaining() < 16 {
        return None;
    }
    let update_ms = value.get_i64();
    let start_ms = value.get_i64();
    Some(TxnMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        update_ms,
        start_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip_and_truncations_decode_to_none() {
        let txn = TxnMetadata {
            transactional_id: "app-1".into(),
            producer_id: 42,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [("a".into(), 0), ("a".into(), 2), ("b".into(), 1)].into(),
            update_ms: 10,
            start_ms: 5,
        };
        assert_eq!(decode_key(encode_key("app-1")), Some("app-1".into()));
        let value = encode_value(&txn);
        assert_eq!(decode_value("app-1", value.clone()), Some(txn));
        for cut in 0..value.len() {
            assert_eq!(decode_value("app-1", value.slice(..cut)), None, "cut {cut}");
        }
    }
}
