//! Kafka's v2 record batch, read and stamped in place.
//!
//! The broker keeps batches exactly as producers sent them; it only reads the fixed 61-byte header,
//! checks the CRC-32C (which covers everything from the attributes to the end, so the broker may
//! rewrite the base offset and leader epoch without recomputing it), and stamps the base offset.
//! Reading the records inside a batch (compaction, clients) goes through [`decode_records`].
//!
//! Layout of the header (big-endian):
//! ```text
//!  0 base_offset i64      8 batch_length i32     12 partition_leader_epoch i32   16 magic i8
//! 17 crc u32             21 attributes i16       23 last_offset_delta i32        27 base_timestamp i64
//! 35 max_timestamp i64   43 producer_id i64      51 producer_epoch i16           53 base_sequence i32
//! 57 record_count i32    61 records...
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};
pub use kafka_protocol::records::Compression;
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Size of the fixed v2 batch header, up to the first record.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batch_length` counts: base offset and the length field itself.
pub const BATCH_LOG_OVERHEAD_BYTES: usize = 12;
const CRC_START: usize = 21;
const MAGIC_V2: i8 = 2;

/// Why a byte range is not a valid record batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length.
    Incomplete,
    /// A magic byte other than 2 (message sets v0/v1 are not supported).
    UnsupportedMagic(i8),
    /// The declared length is impossible.
    BadLength(i32),
    /// The stored CRC does not match the content.
    CrcMismatch { stored: u32, computed: u32 },
    /// The header disagrees with itself (record count versus offset delta, say).
    Inconsistent(&'static str),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Incomplete => write!(f, "record batch is truncated"),
            BatchError::UnsupportedMagic(m) => write!(f, "record batch magic {m} is not supported"),
            BatchError::BadLength(l) => write!(f, "record batch length {l} is invalid"),
            BatchError::CrcMismatch { stored, computed } => {
                write!(
                    f,
                    "record batch crc {stored:#x} does not match content crc {computed:#x}"
                )
            }
            BatchError::Inconsistent(why) => {
                write!(f, "record batch header is inconsistent: {why}")
            }
        }
    }
}

/// The fixed header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf` without checking the CRC.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Incomplete);
        }
        let mut b = &buf[..BATCH_HEADER_BYTES];
        let header = BatchHeader {
            base_offset: b.get_i64(),
            batch_length: b.get_i32(),
            partition_leader_epoch: b.get_i32(),
            magic: b.get_i8(),
            crc: b.get_u32(),
            attributes: b.get_i16(),
            last_offset_delta: b.get_i32(),
            base_timestamp: b.get_i64(),
            max_timestamp: b.get_i64(),
            producer_id: b.get_i64(),
            producer_epoch: b.get_i16(),
            base_sequence: b.get_i32(),
            record_count: b.get_i32(),
        };
        if header.magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(header.magic));
        }
        if (header.batch_length as i64) < (BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES) as i64 {
            return Err(BatchError::BadLength(header.batch_length));
        }
        if header.last_offset_delta < 0 || header.record_count < 0 {
            return Err(BatchError::Inconsistent(
                "negative offset delta or record count",
            ));
        }
        Ok(header)
    }

    /// Total bytes the batch occupies in the log.
    pub fn total_bytes(&self) -> usize {
        BATCH_LOG_OVERHEAD_BYTES + self.batch_length as usize
    }

    /// Offset of the last record the batch covers.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    /// The offset after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// The codec in attribute bits 0-2.
    pub fn compression(&self) -> Compression {
        match self.attributes & 0x7 {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// Whether the producer asked for idempotent sequencing.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id >= 0 && self.base_sequence >= 0
    }

    /// Whether this is a transaction control batch (commit or abort marker).
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

/// Parses and fully validates the batch at the start of `buf`: header, length and CRC-32C.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_bytes();
    if buf.len() < total {
        return Err(BatchError::Incomplete);
    }
    let computed = crc32c::crc32c(&buf[CRC_START..total]);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(header)
}

/// Stamps the broker-assigned base offset and leader epoch; both lie outside the CRC.
pub fn stamp(buf: &mut [u8], base_offset: i64, leader_epoch: i32) {
    assert!(
        buf.len() >= BATCH_HEADER_BYTES,
        "stamp needs a whole header"
    );
    buf[0..8].copy_from_slice(&base_offset.to_be_bytes());
    buf[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Iterates over whole batches in `buf`, stopping at the first incomplete or invalid one.
/// Only headers are parsed; use [`validate`] where the CRC must be checked.
pub fn headers(buf: &[u8]) -> impl Iterator<Item = (usize, BatchHeader)> + '_ {
    let mut position = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(&buf[position..]).ok()?;
        if buf.len() - position < header.total_bytes() {
            return None;
        }
        let at = position;
        position += header.total_bytes();
        Some((at, header))
    })
}

/// One record as a client reads it: offset, timestamp, key, value, headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Decodes every record of every whole batch in `buf`, decompressing as needed. Control batches
/// (transaction markers) are skipped; a trailing partial batch (allowed in fetch responses) is
/// ignored.
pub fn decode_records(buf: &Bytes) -> Result<Vec<ConsumedRecord>, String> {
    let mut out = Vec::new();
    for (position, header) in headers(buf) {
        if header.is_control() {
            continue;
        }
        let mut one = buf.slice(position..position + header.total_bytes());
        let set = RecordBatchDecoder::decode(&mut one).map_err(|e| e.to_string())?;
        out.extend(set.records.into_iter().map(|r| {
            ConsumedRecord {
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            }
        }));
    }
    Ok(out)
}

/// Encodes records that keep their own offsets (which may have gaps, as after compaction) into
/// one batch per run, with the given codec. Used by the compactor.
pub fn encode_with_offsets(
    records: &[ConsumedRecord],
    compression: Compression,
) -> Result<Bytes, String> {
    let base = records.first().map(|r| r.offset).unwrap_or(0);
    let records: Vec<Record> = records
        .iter()
        .map(|r| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: r.offset,
            // Constant `offset - sequence` keeps every record in one batch despite offset gaps.
            sequence: (r.offset - base) as i32,
            timestamp: r.timestamp_ms,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.clone().into(), v.clone()))
                .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| e.to_string())?;
    Ok(buf.freeze())
}

/// Re-encodes a whole batch with another codec (for a topic whose `compression.type` is not
/// `producer`), keeping every record's offset delta, timestamp, key, value, headers and the
/// producer's id, epoch and sequence.
pub fn recompress(batch: &[u8], compression: Compression) -> Result<BytesMut, String> {
    let mut one = Bytes::copy_from_slice(batch);
    let set = RecordBatchDecoder::decode(&mut one).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, &set.records, &options).map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Builds one uncompressed v2 batch record by record, without per-record allocation.
///
/// This is the producer side of the in-process client and the benchmarks: the broker assigns the
/// base offset on append, so offsets here are deltas from zero.
pub struct BatchBuilder {
    buf: BytesMut,
    record_count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// Starts a batch whose records carry timestamps at or after `base_timestamp_ms`.
    pub fn new(base_timestamp_ms: i64, capacity_bytes: usize) -> BatchBuilder {
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_BYTES + capacity_bytes);
        buf.resize(BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            buf,
            record_count: 0,
            base_timestamp: base_timestamp_ms,
            max_timestamp: base_timestamp_ms,
        }
    }

    /// Number of records added so far.
    pub fn len(&self) -> usize {
        self.record_count as usize
    }

    /// Whether no record was added.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// Bytes the batch would take if finished now.
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Appends one record.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let timestamp_delta = timestamp_ms - self.base_timestamp;
        let offset_delta = self.record_count as i64;
        let mut body_len = 1 + varint_len(timestamp_delta) + varint_len(offset_delta);
        body_len += bytes_field_len(key) + bytes_field_len(value);
        body_len += varint_len(headers.len() as i64);
        for (name, header_value) in headers {
            body_len += bytes_field_len(Some(name.as_bytes())) + bytes_field_len(*header_value);
        }
        put_varint(&mut self.buf, body_len as i64);
        self.buf.put_i8(0); // record attributes: unused
        put_varint(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_bytes_field(&mut self.buf, key);
        put_bytes_field(&mut self.buf, value);
        put_varint(&mut self.buf, headers.len() as i64);
        for (name, header_value) in headers {
            put_bytes_field(&mut self.buf, Some(name.as_bytes()));
            put_bytes_field(&mut self.buf, *header_value);
        }
        self.record_count += 1;
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
    }

    /// Writes the header and CRC and returns the finished batch.
    pub fn finish(mut self) -> BytesMut {
        assert!(self.record_count > 0, "a batch holds at least one record");
        let batch_length = (self.buf.len() - BATCH_LOG_OVERHEAD_BYTES) as i32;
        let mut header = &mut self.buf[..BATCH_HEADER_BYTES];
        header.put_i64(0);
        header.put_i32(batch_length);
        header.put_i32(-1); // partition leader epoch: the broker stamps it
        header.put_i8(MAGIC_V2);
        header.put_u32(0); // crc: filled below
        header.put_i16(0); // attributes: no compression, create time
        header.put_i32(self.record_count - 1);
        header.put_i64(self.base_timestamp);
        header.put_i64(self.max_timestamp);
        header.put_i64(-1); // producer id: not idempotent
        header.put_i16(-1);
        header.put_i32(-1);
        header.put_i32(self.record_count);
        let crc = crc32c::crc32c(&self.buf[CRC_START..]);
        self.buf[17..21].copy_from_slice(&crc.to_be_bytes());
        self.buf
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn varint_len(value: i64) -> usize {
    let mut v = zigzag(value);
    let mut len = 1;
    while v >= 0x80 {
        v >>= 7;
        len += 1;
    }
    len
}

fn put_varint(buf: &mut BytesMut, value: i64) {
    let mut v = zigzag(value);
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn bytes_field_len(field: Option<&[u8]>) -> usize {
    match field {
        None => varint_len(-1),
        Some(b) => varint_len(b.len() as i64) + b.len(),
    }
}

fn put_bytes_field(buf: &mut BytesMut, field: Option<&[u8]>) {
    match field {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(records: &[(Option<Vec<u8>>, Option<Vec<u8>>)]) -> BytesMut {
        let mut builder = BatchBuilder::new(1_000, 1024);
        for (i, (k, v)) in records.iter().enumerate() {
            builder.push(
                1_000 + i as i64,
                k.as_deref(),
                v.as_deref(),
                &[("h", Some(b"x"))],
            );
        }
        builder.finish()
    }

    #[test]
    fn built_batch_validates_and_stamps_outside_crc() {
        let mut batch = sample(&[(Some(b"k".to_vec()), Some(b"v".to_vec())), (None, None)]);
        let header = validate(&batch).expect("fresh batch is valid");
        assert_eq!(header.record_count, 2);
        assert_eq!(header.last_offset_delta, 1);
        stamp(&mut batch, 42, 0);
        let header = validate(&batch).expect("stamping keeps the crc valid");
        assert_eq!(header.base_offset, 42);
        assert_eq!(header.next_offset(), 44);
    }

    #[test]
    fn recompression_keeps_records_and_changes_the_codec() {
        let batch = sample(&[
            (Some(b"k".to_vec()), Some(vec![b'a'; 500])),
            (None, Some(b"b".to_vec())),
        ]);
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let packed = recompress(&batch, codec).expect("recompress");
            let header = validate(&packed).expect("valid batch");
            assert_eq!(header.compression(), codec);
            assert_eq!(header.record_count, 2);
            let records = decode_records(&packed.freeze()).expect("decode");
            assert_eq!(records[0].value.as_deref(), Some(&[b'a'; 500][..]));
            assert_eq!(records[1].key, None);
        }
    }

    #[test]
    fn flipped_bit_is_a_crc_mismatch() {
        let mut batch = sample(&[(Some(b"k".to_vec()), Some(b"value".to_vec()))]);
        let last = batch.len() - 1;
        batch[last] ^= 1;
        assert!(matches!(
            validate(&batch),
            Err(BatchError::CrcMismatch { .. })
        ));
    }

    proptest! {
        #[test]
        fn builder_round_trips_through_kafka_protocol_decoder(
            records in proptest::collection::vec(
                (proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
                 proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200))),
                1..20)
        ) {
            let mut batch = sample(&records);
            stamp(&mut batch, 7, 0);
            let decoded = decode_records(&batch.freeze()).expect("decodes");
            prop_assert_eq!(decoded.len(), records.len());
            for (i, (record, (k, v))) in decoded.iter().zip(&records).enumerate() {
                prop_assert_eq!(record.offset, 7 + i as i64);
                prop_assert_eq!(record.timestamp_ms, 1_000 + i as i64);
                prop_assert_eq!(record.key.as_deref(), k.as_deref());
                prop_assert_eq!(record.value.as_deref(), v.as_deref());
            }
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = validate(&bytes);
            let _ = headers(&bytes).count();
            let _ = decode_records(&Bytes::from(bytes));
        }
    }
}
