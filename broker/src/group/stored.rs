//! Group metadata records of `__consumer_offsets`, as Kafka's GroupMetadataManager writes them:
//! one per group, the latest wins (the topic is compacted), a null value deletes the group.
//!
//! Key (version 2): `i16 version, string group`.
//! Value (version 3, Kafka's GroupMetadataValue.json, not flexible): `i16 version, string
//! protocol_type, i32 generation, nullable string protocol, nullable string leader, i64
//! current_state_timestamp, [member]` where a member is `string member_id, nullable string
//! group_instance_id, string client_id, string client_host, i32 rebalance_timeout, i32
//! session_timeout, bytes subscription, bytes assignment` (arrays and bytes with an i32 length).
//! Versions 0 to 2 (fewer fields) are read too; version 4 (flexible) is neither written nor read.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The key version of group metadata records (offset records are versions 0 and 1).
pub(crate) const GROUP_KEY_VERSION: i16 = 2;
const VALUE_VERSION: i16 = 3;

/// A group as stored: what it had when it last became Stable or Empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    /// The chosen assignor; `None` once the group is Empty.
    pub protocol_name: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<StoredMember>,
}

/// A member as stored, with its subscription (metadata for the chosen protocol) and assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

fn put_string(buf: &mut BytesMut, s: &str) {
    buf.put_i16(s.len() as i16);
    buf.put_slice(s.as_bytes());
}

fn put_nullable_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_string(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

fn get_nullable_string(buf: &mut Bytes) -> Option<Option<String>> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 {
        return Some(None);
    }
    if buf.remaining() < len as usize {
        return None;
    }
    let s = String::from_utf8(buf.split_to(len as usize).to_vec()).ok()?;
    Some(Some(s))
}

fn get_string(buf: &mut Bytes) -> Option<String> {
    get_nullable_string(buf)?
}

fn get_i32(buf: &mut Bytes) -> Option<i32> {
    (buf.remaining() >= 4).then(|| buf.get_i32())
}

fn get_bytes(buf: &mut Bytes) -> Option<Bytes> {
    let len = get_i32(buf)?;
    if len < 0 {
        return Some(Bytes::new());
    }
    (buf.remaining() >= len as usize).then(|| buf.split_to(len as usize))
}

pub(crate) fn encode_key(group: &str) -> Bytes {
    let mut key = BytesMut::new();
    key.put_i16(GROUP_KEY_VERSION);
    put_string(&mut key, group);
    key.freeze()
}

/// The group of a group metadata key; `None` for any other key (offset records).
pub(crate) fn decode_key(mut key: Bytes) -> Option<String> {
    if key.remaining() < 2 || key.get_i16() != GROUP_KEY_VERSION {
        return None;
    }
    get_string(&mut key)
}

pub(crate) fn encode_value(group: &StoredGroup) -> Bytes {
    let mut value = BytesMut::new();
    value.put_i16(VALUE_VERSION);
    put_string(&mut value, &group.protocol_type);
    value.put_i32(group.generation);
    put_nullable_string(&mut value, group.protocol_name.as_deref());
    put_nullable_string(&mut value, group.leader.as_deref());
    value.put_i64(group.state_timestamp_ms);
    value.put_i32(group.members.len() as i32);
    for member in &group.members {
        put_string(&mut value, &member.member_id);
        put_nullable_string(&mut value, member.group_instance_id.as_deref());
        put_string(&mut value, &member.client_id);
        put_string(&mut value, &member.client_host);
        value.put_i32(member.rebalance_timeout_ms);
        value.put_i32(member.session_timeout_ms);
        put_bytes(&mut value, &member.subscription);
        put_bytes(&mut value, &member.assignment);
    }
    value.freeze()
}

/// Reads a value of versions 0 to 3; `None` if it is of another version or cut short.
pub(crate) fn decode_value(mut value: Bytes) -> Option<StoredGroup> {
    if value.remaining() < 2 {
        return None;
    }
    let version = value.get_i16();
    if !(0..=VALUE_VERSION).contains(&version) {
        return None;
    }
    let protocol_type = get_string(&mut value)?;
    let generation = get_i32(&mut value)?;
    let protocol_name = get_nullable_string(&mut value)?;
    let leader = get_nullable_string(&mut value)?;
    let state_timestamp_ms = match version >= 2 {
        true if value.remaining() >= 8 => value.get_i64(),
        true => return None,
        false => -1,
    };
    let count = get_i32(&mut value)?;
    // No capacity from the count: a damaged record must not allocate what it claims.
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = get_string(&mut value)?;
        let group_instance_id = match version >= 3 {
            true => get_nullable_string(&mut value)?,
            false => None,
        };
        let client_id = get_string(&mut value)?;
        let client_host = get_string(&mut value)?;
        let session_before_rebalance = version == 0;
        let (rebalance_timeout_ms, session_timeout_ms) = if session_before_rebalance {
            let session = get_i32(&mut value)?;
            (session, session)
        } else {
            let rebalance = get_i32(&mut value)?;
            (rebalance, get_i32(&mut value)?)
        };
        members.push(StoredMember {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: get_bytes(&mut value)?,
            assignment: get_bytes(&mut value)?,
        });
    }
    Some(StoredGroup {
        protocol_type,
        generation,
        protocol_name,
        leader,
        state_timestamp_ms,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> StoredGroup {
        StoredGroup {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol_name: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp_ms: 1_700_000_000_000,
            members: vec![StoredMember {
                member_id: "m-1".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"assigned"),
            }],
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        assert_eq!(decode_key(encode_key("g")), Some("g".to_string()));
        assert_eq!(decode_value(encode_value(&group())), Some(group()));
        let empty = StoredGroup {
            protocol_name: None,
            leader: None,
            members: Vec::new(),
            ..group()
        };
        assert_eq!(decode_value(encode_value(&empty)), Some(empty));
    }

    /// Kafka's bytes for a value: version 3, hand-assembled from GroupMetadataValue.json.
    #[test]
    fn value_has_kafkas_layout() {
        let empty = StoredGroup {
            protocol_type: "consumer".into(),
            generation: 2,
            protocol_name: None,
            leader: None,
            state_timestamp_ms: 5,
            members: Vec::new(),
        };
        let mut expected = vec![0, 3, 0, 8];
        expected.extend_from_slice(b"consumer");
        expected.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0]);
        assert_eq!(encode_value(&empty).as_ref(), expected.as_slice());
    }

    #[test]
    fn offset_keys_and_truncated_values_decode_to_none() {
        assert_eq!(decode_key(Bytes::from_static(&[0, 1, 0, 1, b'g'])), None);
        let value = encode_value(&group());
        for cut in 0..value.len() {
            assert_eq!(decode_value(value.slice(..cut)), None, "cut at {cut}");
        }
    }
}
