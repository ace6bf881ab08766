//! Kafka's legacy message sets (magic 0 and 1): what Produce v2 carries and Fetch v0-3 expect.
//!
//! The log stores only v2 record batches. As Kafka 3.x does, a produced message set is
//! up-converted ([`up_convert`]) to one v2 batch before it is validated and stored, and a
//! fetch in v0-3 gets its batches down-converted ([`down_convert`]) to the newest format its
//! version can carry: magic 0 for v0-1, magic 1 for v2-3. Headers do not exist before magic 2,
//! and timestamps not before magic 1, so they are dropped on the way down.
//!
//! Layout of one message (big-endian), after `offset i64, message_size i32`:
//! ```text
//! crc u32 (CRC-32 of the rest), magic i8, attributes i8 (bits 0-2: codec, bit 3: log append
//! time), timestamp i64 (magic 1 only), key bytes (i32 length, -1 null), value bytes
//! ```
//! A compressed message (a "wrapper") holds, compressed in its value, a message set of the
//! records it carries.

use std::io::Read;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::batch::{decode_records, recompress, snappy_decompress, BatchBuilder, Compression};

/// Bytes of `offset` and `message_size` before each message.
const LOG_OVERHEAD_BYTES: usize = 12;
/// Smallest magic 0 message: crc, magic, attributes, and the two lengths.
const MESSAGE_V0_BYTES_MIN: usize = 14;
/// Smallest magic 1 message: magic 0's plus the timestamp.
const MESSAGE_V1_BYTES_MIN: usize = 22;
const CODEC_MASK: i8 = 0x07;

/// Why a produced message set was refused, in the two codes Kafka answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSetError {
    /// Framing, CRC or compression is broken (CORRUPT_MESSAGE).
    Corrupt(String),
    /// Well-formed, but not allowed (INVALID_RECORD): a wrapper inside a wrapper, a record
    /// whose magic differs from its wrapper's.
    Invalid(String),
}

impl std::fmt::Display for MessageSetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageSetError::Corrupt(why) | MessageSetError::Invalid(why) => f.write_str(why),
        }
    }
}

fn corrupt(why: impl Into<String>) -> MessageSetError {
    MessageSetError::Corrupt(why.into())
}

/// One message of a message set, borrowed from it.
struct Message<'a> {
    magic: i8,
    attributes: i8,
    timestamp_ms: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

/// Whether `records` starts with a legacy message (magic 0 or 1) rather than a v2 batch: the
/// magic byte sits at the same place in both.
pub fn is_legacy(records: &[u8]) -> bool {
    matches!(records.get(16), Some(0 | 1))
}

/// Bytes of the largest message in `records`, offset and size included: Kafka holds each one to
/// `max.message.bytes`, as it holds each v2 batch. Stops at the first message whose size is
/// out of bounds ([`up_convert`] reports that).
pub fn largest_message_bytes(records: &[u8]) -> usize {
    let mut rest = records;
    let mut largest = 0;
    while rest.len() >= LOG_OVERHEAD_BYTES {
        let size = i32::from_be_bytes(rest[8..12].try_into().expect("four bytes"));
        let Some(total) = usize::try_from(size)
            .ok()
            .map(|size| LOG_OVERHEAD_BYTES + size)
            .filter(|total| *total <= rest.len())
        else {
            break;
        };
        largest = largest.max(total);
        rest = &rest[total..];
    }
    largest
}

/// Turns a produced message set into one uncompressed-then-recompressed v2 batch holding the
/// same records in order, as Kafka's `LogValidator` does for an older producer: keys, values
/// and (magic 1) timestamps are kept, magic 0 records get no timestamp (-1), and a batch built
/// from compressed wrappers is compressed with their codec again. Inflating wrappers stops at
/// `uncompressed_bytes_max` bytes in all.
pub fn up_convert(
    records: &[u8],
    uncompressed_bytes_max: usize,
) -> Result<BytesMut, MessageSetError> {
    let mut builder: Option<BatchBuilder> = None;
    let mut codec = Compression::None;
    let mut inflated_left = uncompressed_bytes_max;
    let mut push = |message: &Message| {
        let builder =
            builder.get_or_insert_with(|| BatchBuilder::new(message.timestamp_ms, records.len()));
        builder.push(message.timestamp_ms, message.key, message.value, &[]);
    };
    let mut rest = records;
    while !rest.is_empty() {
        let wrapper = read_message(&mut rest)?;
        let wrapper_codec = wrapper.attributes & CODEC_MASK;
        if wrapper_codec == 0 {
            push(&wrapper);
            continue;
        }
        codec = legacy_codec(wrapper_codec)?;
        let inflated = inflate(codec, wrapper.value.unwrap_or_default(), inflated_left)?;
        inflated_left -= inflated.len();
        let mut inner = &inflated[..];
        let mut index = 0;
        while !inner.is_empty() {
            let message = read_message(&mut inner)?;
            if message.magic != wrapper.magic {
                return Err(MessageSetError::Invalid(format!(
                    "record {index} has magic {} inside a wrapper of magic {}",
                    message.magic, wrapper.magic
                )));
            }
            if message.attributes & CODEC_MASK != 0 {
                return Err(MessageSetError::Invalid(format!(
                    "record {index} is compressed inside a compressed wrapper"
                )));
            }
            push(&message);
            index += 1;
        }
    }
    let batch = builder
        .ok_or_else(|| corrupt("the message set holds no records"))?
        .finish();
    if codec == Compression::None {
        return Ok(batch);
    }
    recompress(&batch, codec).map_err(corrupt)
}

/// Reads one message (with its offset and size) from the front of `rest`, checking its
/// framing and CRC.
fn read_message<'a>(rest: &mut &'a [u8]) -> Result<Message<'a>, MessageSetError> {
    if rest.len() < LOG_OVERHEAD_BYTES {
        return Err(corrupt("message set ends inside a message header"));
    }
    let _offset = rest.get_i64();
    let size = rest.get_i32();
    if size < MESSAGE_V0_BYTES_MIN as i32 || size as usize > rest.len() {
        return Err(corrupt(format!("message size {size} is out of bounds")));
    }
    let (mut body, after) = rest.split_at(size as usize);
    *rest = after;
    let crc = body.get_u32();
    let mut computed = flate2::Crc::new();
    computed.update(body);
    if computed.sum() != crc {
        return Err(corrupt("message crc does not match its content"));
    }
    let magic = body.get_i8();
    let attributes = body.get_i8();
    let timestamp_ms = match magic {
        0 => -1,
        1 if body.len() >= 8 => body.get_i64(),
        1 => return Err(corrupt("message ends inside its timestamp")),
        _ => return Err(corrupt(format!("message magic {magic} is not 0 or 1"))),
    };
    let key = bytes_field(&mut body)?;
    let value = bytes_field(&mut body)?;
    if !body.is_empty() {
        return Err(corrupt("message is longer than its fields"));
    }
    Ok(Message {
        magic,
        attributes,
        timestamp_ms,
        key,
        value,
    })
}

/// An i32-length-prefixed field (-1 is null).
fn bytes_field<'a>(body: &mut &'a [u8]) -> Result<Option<&'a [u8]>, MessageSetError> {
    if body.len() < 4 {
        return Err(corrupt("message ends inside a field length"));
    }
    match body.get_i32() {
        -1 => Ok(None),
        length if length < 0 || length as usize > body.len() => Err(corrupt(format!(
            "message field length {length} is out of bounds"
        ))),
        length => {
            let (field, after) = body.split_at(length as usize);
            *body = after;
            Ok(Some(field))
        }
    }
}

/// The codec a wrapper's attributes name; message sets predate zstd.
fn legacy_codec(bits: i8) -> Result<Compression, MessageSetError> {
    match bits {
        1 => Ok(Compression::Gzip),
        2 => Ok(Compression::Snappy),
        3 => Ok(Compression::Lz4),
        other => Err(corrupt(format!(
            "codec {other} does not exist for magic 0 and 1"
        ))),
    }
}

/// A wrapper's value inflated, refusing to grow past `bytes_max`.
fn inflate(codec: Compression, value: &[u8], bytes_max: usize) -> Result<Vec<u8>, MessageSetError> {
    let broken = |_| corrupt("a wrapper's records do not decompress");
    let reader: Box<dyn Read + '_> = match codec {
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(value)),
        Compression::Lz4 => Box::new(lz4::Decoder::new(value).map_err(broken)?),
        Compression::Snappy => {
            return snappy_decompress(value, bytes_max)
                .map_err(|_| corrupt("a wrapper's records do not decompress"))
        }
        _ => return Err(corrupt("unknown codec")),
    };
    let mut out = Vec::new();
    reader
        .take(bytes_max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(broken)?;
    if out.len() > bytes_max {
        return Err(corrupt("a wrapper's records inflate beyond the limit"));
    }
    Ok(out)
}

/// The legacy format a down-conversion writes: magic 0 (no timestamps) for Fetch v0-1, magic 1
/// for Fetch v2-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyMagic {
    V0,
    V1,
}

impl LegacyMagic {
    /// The format Fetch `version` carries, `None` from v4 on (v2 batches), as Kafka's
    /// `KafkaApis` picks it.
    pub fn for_fetch_version(version: i16) -> Option<LegacyMagic> {
        match version {
            ..=1 => Some(LegacyMagic::V0),
            2..=3 => Some(LegacyMagic::V1),
            _ => None,
        }
    }

    fn message_bytes_min(self) -> usize {
        match self {
            LegacyMagic::V0 => MESSAGE_V0_BYTES_MIN,
            LegacyMagic::V1 => MESSAGE_V1_BYTES_MIN,
        }
    }
}

/// Turns stored v2 batches into a `magic` message set, uncompressed, for a Fetch v0-3:
/// records before `fetch_offset` are skipped (a fetch starts at the whole batch holding it),
/// headers (and for magic 0 timestamps) are dropped, and messages stop before `bytes_max` would
/// be passed, except that with `at_least_one` the first message is returned whatever its size
/// (KIP-74).
pub fn down_convert(
    batches: &Bytes,
    magic: LegacyMagic,
    fetch_offset: i64,
    bytes_max: usize,
    at_least_one: bool,
) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    for record in decode_records(batches)? {
        if record.offset < fetch_offset {
            continue;
        }
        let key = record.key.as_deref();
        let value = record.value.as_deref();
        let size =
            magic.message_bytes_min() + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
        let fits = out.len() + LOG_OVERHEAD_BYTES + size <= bytes_max;
        // Past the limit only the first message may go, and only when one is owed.
        let first_owed = at_least_one && out.is_empty();
        if !(fits || first_owed) {
            break;
        }
        let timestamp_ms = (magic == LegacyMagic::V1).then_some(record.timestamp_ms);
        put_message(&mut out, record.offset, timestamp_ms, key, value);
    }
    Ok(out.freeze())
}

/// Appends one uncompressed message: magic 1 with create-time `timestamp_ms` when there is
/// one, magic 0 otherwise.
fn put_message(
    out: &mut BytesMut,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let start = out.len();
    out.put_i64(offset);
    out.put_i32(0); // size: filled below
    out.put_u32(0); // crc: filled below
    match timestamp_ms {
        Some(timestamp_ms) => {
            out.put_i8(1);
            out.put_i8(0);
            out.put_i64(timestamp_ms);
        }
        None => {
            out.put_i8(0);
            out.put_i8(0);
        }
    }
    for field in [key, value] {
        match field {
            None => out.put_i32(-1),
            Some(bytes) => {
                out.put_i32(bytes.len() as i32);
                out.put_slice(bytes);
            }
        }
    }
    let size = (out.len() - start - LOG_OVERHEAD_BYTES) as i32;
    out[start + 8..start + 12].copy_from_slice(&size.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&out[start + 16..]);
    out[start + 12..start + 16].copy_from_slice(&crc.sum().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{validate_produced, ConsumedRecord};

    /// One message of a test message set: (timestamp, key, value).
    type Message<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

    /// A magic 1 message set as an old producer writes it.
    fn message_set_v1(records: &[Message<'_>]) -> BytesMut {
        let mut out = BytesMut::new();
        for (offset, (timestamp, key, value)) in records.iter().enumerate() {
            put_message(&mut out, offset as i64, Some(*timestamp), *key, *value);
        }
        out
    }

    /// A magic 0 message (no timestamp), uncompressed or a wrapper with `attributes`.
    fn message_v0(out: &mut BytesMut, attributes: i8, key: Option<&[u8]>, value: &[u8]) {
        let mut body = BytesMut::new();
        body.put_i8(0);
        body.put_i8(attributes);
        match key {
            None => body.put_i32(-1),
            Some(key) => {
                body.put_i32(key.len() as i32);
                body.put_slice(key);
            }
        }
        body.put_i32(value.len() as i32);
        body.put_slice(value);
        let mut crc = flate2::Crc::new();
        crc.update(&body);
        out.put_i64(0);
        out.put_i32(body.len() as i32 + 4);
        out.put_u32(crc.sum());
        out.put_slice(&body);
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    }

    fn decoded(batch: &[u8]) -> Vec<ConsumedRecord> {
        decode_records(&Bytes::copy_from_slice(batch)).expect("decodes")
    }

    #[test]
    fn magic_1_records_keep_keys_values_and_timestamps() {
        let set = message_set_v1(&[(1_000, Some(b"k1"), Some(b"v1")), (900, None, None)]);
        assert!(is_legacy(&set));
        let batch = up_convert(&set, 1 << 20).expect("converts");
        validate_produced(&batch, 1 << 20, false).expect("a valid v2 batch");
        let records = decoded(&batch);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].timestamp_ms, 1_000);
        assert_eq!(records[0].key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(records[0].value.as_deref(), Some(&b"v1"[..]));
        assert_eq!(records[1].timestamp_ms, 900);
        assert_eq!(
            (records[1].key.clone(), records[1].value.clone()),
            (None, None)
        );
    }

    #[test]
    fn a_gzip_wrapper_of_magic_0_records_becomes_one_gzip_batch() {
        let mut inner = BytesMut::new();
        message_v0(&mut inner, 0, Some(b"a"), b"1");
        message_v0(&mut inner, 0, None, b"2");
        let mut set = BytesMut::new();
        message_v0(&mut set, 1, None, &gzip(&inner));
        let batch = up_convert(&set, 1 << 20).expect("converts");
        let header = validate_produced(&batch, 1 << 20, false).expect("valid");
        assert_eq!(header.compression(), Compression::Gzip);
        let records = decoded(&batch);
        let values: Vec<_> = records.iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, [Some(Bytes::from("1")), Some(Bytes::from("2"))]);
        assert!(
            records.iter().all(|r| r.timestamp_ms == -1),
            "magic 0 has no time"
        );
    }

    #[test]
    fn broken_or_disallowed_message_sets_are_refused() {
        let mut flipped = message_set_v1(&[(1, Some(b"k"), Some(b"v"))]);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(matches!(
            up_convert(&flipped, 1 << 20),
            Err(MessageSetError::Corrupt(_))
        ));
        let whole = message_set_v1(&[(1, Some(b"k"), Some(b"v"))]);
        let cut = &whole[..whole.len() - 1];
        assert!(matches!(
            up_convert(cut, 1 << 20),
            Err(MessageSetError::Corrupt(_))
        ));

        let mut nested = BytesMut::new();
        message_v0(&mut nested, 1, None, b"not really gzip");
        let mut set = BytesMut::new();
        message_v0(&mut set, 1, None, &gzip(&nested));
        assert!(matches!(
            up_convert(&set, 1 << 20),
            Err(MessageSetError::Invalid(_))
        ));

        let mut big = BytesMut::new();
        message_v0(&mut big, 0, None, &vec![0u8; 10_000]);
        let mut bomb = BytesMut::new();
        message_v0(&mut bomb, 1, None, &gzip(&big));
        assert!(matches!(
            up_convert(&bomb, 1_000),
            Err(MessageSetError::Corrupt(_))
        ));
    }

    #[test]
    fn down_conversion_skips_earlier_records_and_stops_at_the_limit() {
        let mut builder = BatchBuilder::new(5, 64);
        for value in [b"a", b"b", b"c"] {
            builder.push(5, Some(b"k"), Some(value), &[("h", Some(b"x"))]);
        }
        let batch = builder.finish().freeze();
        let v1 = LegacyMagic::V1;
        let set = down_convert(&batch, v1, 1, usize::MAX, true).expect("converts");
        let up = up_convert(&set, 1 << 20).expect("readable as a message set");
        let values: Vec<_> = decoded(&up).into_iter().map(|r| r.value).collect();
        assert_eq!(values, [Some(Bytes::from("b")), Some(Bytes::from("c"))]);
        let one_message = LOG_OVERHEAD_BYTES + MESSAGE_V1_BYTES_MIN + 2;
        let set = down_convert(&batch, v1, 0, one_message + 5, false).expect("converts");
        assert_eq!(set.len(), one_message);
        assert!(down_convert(&batch, v1, 0, 5, false)
            .expect("converts")
            .is_empty());
        assert_eq!(
            down_convert(&batch, v1, 0, 5, true)
                .expect("converts")
                .len(),
            one_message
        );
    }

    /// Goal: a Fetch v0-1 (sarama with Burrow's default kafka-version 0.8) gets magic 0
    /// messages, which have no timestamp, as Kafka down-converts for those versions. Method:
    /// down-convert a batch to magic 0, check each message's magic byte and size, and read it
    /// back with the produce path, which gives magic 0 records no timestamp.
    #[test]
    fn down_conversion_to_magic_0_drops_timestamps() {
        let mut builder = BatchBuilder::new(5, 64);
        builder.push(5, Some(b"k"), Some(b"a"), &[]);
        builder.push(6, None, Some(b"bc"), &[]);
        let batch = builder.finish().freeze();
        let set = down_convert(&batch, LegacyMagic::V0, 0, usize::MAX, true).expect("converts");
        let first_bytes = LOG_OVERHEAD_BYTES + MESSAGE_V0_BYTES_MIN + 2;
        let second_bytes = LOG_OVERHEAD_BYTES + MESSAGE_V0_BYTES_MIN + 2;
        assert_eq!(set.len(), first_bytes + second_bytes);
        assert_eq!(set[16], 0, "the first message's magic");
        assert_eq!(set[first_bytes + 16], 0, "the second message's magic");

        let up = up_convert(&set, 1 << 20).expect("readable as a message set");
        let records: Vec<_> = decoded(&up)
            .into_iter()
            .map(|r| (r.key, r.value, r.timestamp_ms))
            .collect();
        assert_eq!(
            records,
            [
                (Some(Bytes::from("k")), Some(Bytes::from("a")), -1),
                (None, Some(Bytes::from("bc")), -1),
            ]
        );
    }

    #[test]
    fn fetch_versions_pick_the_legacy_format_kafka_picks() {
        let picked: Vec<_> = (0..=5).map(LegacyMagic::for_fetch_version).collect();
        use LegacyMagic::{V0, V1};
        assert_eq!(picked, [Some(V0), Some(V0), Some(V1), Some(V1), None, None]);
    }
}
