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

use std::io::Read;

use bytes::{Buf, BufMut, Bytes, BytesMut};
pub use kafka_protocol::records::Compression;
use kafka_protocol::records::{
    Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::limits::RECORD_ERRORS_MAX;

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
    /// Records without a key where keys are required (a compacted topic): `count` of them, the
    /// first at these indices within the batch (at most [`RECORD_ERRORS_MAX`]).
    KeylessRecords { indices: Vec<i32>, count: usize },
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
            BatchError::KeylessRecords { count, .. } => {
                write!(
                    f,
                    "{count} records have no key, which a compacted topic requires"
                )
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
        self.attributes & ATTRIBUTE_CONTROL != 0
    }

    /// Whether the batch belongs to a transaction (attributes bit 4): its records stay
    /// invisible to read_committed consumers until a commit marker follows.
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTRIBUTE_TRANSACTIONAL != 0
    }
}

/// Attributes bit 4: the batch belongs to a transaction.
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 0x10;
/// Attributes bit 5: the batch is a control batch (a transaction marker).
pub const ATTRIBUTE_CONTROL: i16 = 0x20;
/// A control batch larger than this is not a marker the broker wrote (one marker record is
/// about 20 bytes); reading one is refused rather than allocating what a damaged length says.
pub const CONTROL_BATCH_BYTES_MAX: usize = 1024;

/// What a transaction marker (the one record of a control batch) says: Kafka's
/// `EndTransactionMarker`, key `[version i16 = 0, type i16]` (0 abort, 1 commit), value
/// `[version i16 = 0, coordinator_epoch i32]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMarker {
    /// Whether the transaction committed (else it aborted).
    pub commit: bool,
    /// The epoch of the transaction coordinator that wrote it.
    pub coordinator_epoch: i32,
}

/// A control batch holding one marker, as a leader appends it: attributes control +
/// transactional, the producer's id and epoch, base sequence -1, timestamp `timestamp_ms`.
/// The broker stamps its offset and leader epoch on append.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlMarker,
    timestamp_ms: i64,
) -> BytesMut {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(i16::from(marker.commit));
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(marker.coordinator_epoch);
    let mut builder = BatchBuilder::new(timestamp_ms, 32);
    builder.push(timestamp_ms, Some(&key), Some(&value), &[]);
    let mut batch = builder.finish();
    batch[21..23].copy_from_slice(&(ATTRIBUTE_CONTROL | ATTRIBUTE_TRANSACTIONAL).to_be_bytes());
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&producer_epoch.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Test support: `batch` rewritten as producer `producer_id`'s at `epoch` from `sequence`, in a
/// transaction when `transactional`, with its CRC recomputed.
#[cfg(test)]
pub(crate) fn with_producer(
    mut batch: BytesMut,
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    transactional: bool,
) -> BytesMut {
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) & !ATTRIBUTE_TRANSACTIONAL;
    let attributes = attributes
        | if transactional {
            ATTRIBUTE_TRANSACTIONAL
        } else {
            0
        };
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Reads the marker in a whole control batch (`batch` starts at its header). Control batches
/// are never compressed; one that is, or whose first record is not a version-0 marker, is
/// refused.
pub fn parse_control_marker(batch: &[u8]) -> Result<ControlMarker, BatchError> {
    let header = BatchHeader::parse(batch)?;
    if !header.is_control() {
        return Err(BatchError::Inconsistent("not a control batch"));
    }
    if header.compression() != Compression::None {
        return Err(BatchError::Inconsistent("a control batch is compressed"));
    }
    let records = batch
        .get(BATCH_HEADER_BYTES..header.total_bytes())
        .ok_or(BatchError::Incomplete)?;
    let mut section = Field {
        reader: records,
        left: records.len(),
    };
    let length = section.varint()?;
    if length < 1 || length as u64 > section.left as u64 {
        return Err(BatchError::Inconsistent("record length is out of bounds"));
    }
    section.skip(1)?;
    section.varlong()?;
    section.varint()?;
    let mut fixed = [0u8; 4];
    if section.varint()? < 4 {
        return Err(BatchError::Inconsistent("a marker key is 4 bytes"));
    }
    section.read(&mut fixed)?;
    let (key_version, kind) = (
        i16::from_be_bytes([fixed[0], fixed[1]]),
        i16::from_be_bytes([fixed[2], fixed[3]]),
    );
    if key_version != 0 || !(0..=1).contains(&kind) {
        return Err(BatchError::Inconsistent("unknown marker key"));
    }
    let value_length = section.varint()?;
    let coordinator_epoch = if value_length >= 6 {
        let mut value = [0u8; 6];
        section.read(&mut value)?;
        i32::from_be_bytes([value[2], value[3], value[4], value[5]])
    } else {
        -1
    };
    Ok(ControlMarker {
        commit: kind == 1,
        coordinator_epoch,
    })
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

/// Checks a batch a client produced before it is stored: everything [`validate`] checks (magic
/// 2, length within the bytes present, CRC-32C), and that the records agree with the header.
/// The batch must hold `record_count >= 1` records, `last_offset_delta` must be
/// `record_count - 1`, and the records section (decompressed, for a compressed batch, to at
/// most `uncompressed_bytes_max`) must be exactly `record_count` records whose varint lengths
/// fit, whose fields fill each record exactly, and whose offset deltas are 0, 1, 2, ...
///
/// Storage trusts these facts when it assigns offsets and when consumers and compaction decode
/// the batch, so a batch that breaks them is refused here with CORRUPT_MESSAGE. With
/// `keys_required` (a compacted topic), a well-formed batch holding records without a key is
/// refused with [`BatchError::KeylessRecords`], which names them, as Kafka does. Records are
/// parsed as a stream, so memory stays small whatever a batch inflates to (bar snappy, whose
/// blocks inflate whole, to at most 32 times their size and never past the cap).
pub fn validate_produced(
    buf: &[u8],
    uncompressed_bytes_max: usize,
    keys_required: bool,
) -> Result<BatchHeader, BatchError> {
    let header = validate(buf)?;
    if header.record_count < 1 {
        return Err(BatchError::Inconsistent(
            "a batch holds at least one record",
        ));
    }
    if header.last_offset_delta != header.record_count - 1 {
        return Err(BatchError::Inconsistent(
            "last offset delta is not record count - 1",
        ));
    }
    if header.is_control() {
        return Err(BatchError::Inconsistent(
            "control batches are written by the broker only",
        ));
    }
    let records = &buf[BATCH_HEADER_BYTES..header.total_bytes()];
    let count = header.record_count as usize;
    let keyless = match header.attributes & 0x7 {
        0 => check_records(records, count, uncompressed_bytes_max),
        1 => check_records(
            std::io::BufReader::new(flate2::read::GzDecoder::new(records)),
            count,
            uncompressed_bytes_max,
        ),
        2 => {
            let inflated = snappy_decompress(records, uncompressed_bytes_max)?;
            check_records(&inflated[..], count, uncompressed_bytes_max)
        }
        3 => {
            let decoder = lz4::Decoder::new(records).map_err(codec_error)?;
            check_records(
                std::io::BufReader::new(decoder),
                count,
                uncompressed_bytes_max,
            )
        }
        4 => {
            let decoder = zstd::stream::read::Decoder::new(records).map_err(codec_error)?;
            check_records(decoder, count, uncompressed_bytes_max)
        }
        _ => Err(BatchError::Inconsistent("unknown compression codec")),
    }?;
    if keys_required && keyless.count > 0 {
        return Err(BatchError::KeylessRecords {
            indices: keyless.indices,
            count: keyless.count,
        });
    }
    Ok(header)
}

/// The records without a key that [`check_records`] met.
#[derive(Default)]
struct Keyless {
    /// Their indices within the batch, the first [`RECORD_ERRORS_MAX`].
    indices: Vec<i32>,
    count: usize,
}

fn codec_error(_: std::io::Error) -> BatchError {
    BatchError::Inconsistent("records do not decompress")
}

/// Reads exactly `count` records from `records`, checking each one's framing and offset delta,
/// and then that nothing follows them. Returns the records without a key.
fn check_records(
    records: impl std::io::Read,
    count: usize,
    bytes_max: usize,
) -> Result<Keyless, BatchError> {
    let mut keyless = Keyless::default();
    let mut section = Field {
        reader: records,
        left: bytes_max,
    };
    for index in 0..count {
        let length = section.varint()?;
        if length < 1 || length as u64 > section.left as u64 {
            return Err(BatchError::Inconsistent("record length is out of bounds"));
        }
        let mut record = Field {
            reader: &mut section.reader,
            left: length as usize,
        };
        let has_key = record.check_record(index as i64)?;
        if !has_key {
            keyless.count += 1;
            if keyless.indices.len() < RECORD_ERRORS_MAX {
                keyless.indices.push(index as i32);
            }
        }
        section.left -= length as usize;
    }
    let mut trailing = [0u8; 1];
    match section.reader.read(&mut trailing) {
        Ok(0) => Ok(keyless),
        Ok(_) => Err(BatchError::Inconsistent(
            "records section is longer than its records",
        )),
        Err(e) => Err(codec_error(e)),
    }
}

/// A reader that may yield at most `left` more bytes: a record body, or a records section.
struct Field<R> {
    reader: R,
    left: usize,
}

impl<R: std::io::Read> Field<R> {
    /// A record body after its length: attributes, timestamp delta, offset delta (which must
    /// be `offset_delta`), key, value and headers (keys non-null UTF-8), filling the body
    /// exactly. Returns whether the record has a key (an empty one counts; null does not).
    fn check_record(&mut self, offset_delta: i64) -> Result<bool, BatchError> {
        self.skip(1)?;
        self.varlong()?;
        if self.varint()? != offset_delta {
            return Err(BatchError::Inconsistent(
                "record offset deltas are not 0, 1, 2, ...",
            ));
        }
        let has_key = self.bytes_field()? >= 0;
        self.bytes_field()?;
        let header_count = self.varint()?;
        if header_count < 0 || header_count as u64 > self.left as u64 {
            return Err(BatchError::Inconsistent(
                "record header count is out of bounds",
            ));
        }
        for _ in 0..header_count {
            self.header_key()?;
            self.bytes_field()?;
        }
        if self.left != 0 {
            return Err(BatchError::Inconsistent("record is longer than its fields"));
        }
        Ok(has_key)
    }

    /// A length-prefixed field (-1 is null), skipped. Returns its length.
    fn bytes_field(&mut self) -> Result<i64, BatchError> {
        match self.varint()? {
            length if length < -1 => {
                Err(BatchError::Inconsistent("record field length is negative"))
            }
            length if length > 0 => self.skip(length as usize).map(|_| length),
            length => Ok(length),
        }
    }

    /// A header key: a non-null string, checked to be UTF-8 a chunk at a time (consumers and
    /// compaction decode it as a string).
    fn header_key(&mut self) -> Result<(), BatchError> {
        let length = self.varint()?;
        if length < 0 || length as u64 > self.left as u64 {
            return Err(BatchError::Inconsistent(
                "record header key length is out of bounds",
            ));
        }
        let mut left = length as usize;
        let mut chunk = [0u8; 4096];
        let mut carried = 0;
        while left > 0 {
            let take = (chunk.len() - carried).min(left);
            self.read(&mut chunk[carried..carried + take])?;
            left -= take;
            let filled = carried + take;
            carried = match std::str::from_utf8(&chunk[..filled]) {
                Ok(_) => 0,
                // A character cut by the chunk's end continues in the next chunk.
                Err(e) if e.error_len().is_none() && left > 0 => filled - e.valid_up_to(),
                Err(_) => return Err(BatchError::Inconsistent("record header key is not UTF-8")),
            };
            chunk.copy_within(filled - carried..filled, 0);
        }
        Ok(())
    }

    /// A zigzag varint of at most 5 bytes (32 bits), as Kafka writes lengths and deltas.
    fn varint(&mut self) -> Result<i64, BatchError> {
        let zigzag = self.unsigned_varint(5)?;
        let value = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
        if i32::try_from(value).is_err() {
            return Err(BatchError::Inconsistent("varint does not fit 32 bits"));
        }
        Ok(value)
    }

    /// A zigzag varint of at most 10 bytes (64 bits), as Kafka writes timestamp deltas.
    fn varlong(&mut self) -> Result<i64, BatchError> {
        let zigzag = self.unsigned_varint(10)?;
        Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
    }

    fn unsigned_varint(&mut self, bytes_max: u32) -> Result<u64, BatchError> {
        let mut value = 0u64;
        for index in 0..bytes_max {
            let mut byte = [0u8; 1];
            self.read(&mut byte)?;
            value |= u64::from(byte[0] & 0x7f) << (7 * index);
            if byte[0] & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(BatchError::Inconsistent("varint is too long"))
    }

    /// Fills `buf`, within the bytes left.
    fn read(&mut self, buf: &mut [u8]) -> Result<(), BatchError> {
        if buf.len() > self.left {
            return Err(BatchError::Inconsistent(
                "record is shorter than its fields",
            ));
        }
        self.reader
            .read_exact(buf)
            .map_err(|_| BatchError::Incomplete)?;
        self.left -= buf.len();
        Ok(())
    }

    fn skip(&mut self, bytes: usize) -> Result<(), BatchError> {
        if bytes > self.left {
            return Err(BatchError::Inconsistent(
                "record field is longer than the record",
            ));
        }
        let mut taken = (&mut self.reader).take(bytes as u64);
        let copied = std::io::copy(&mut taken, &mut std::io::sink()).map_err(codec_error)?;
        if copied != bytes as u64 {
            return Err(BatchError::Incomplete);
        }
        self.left -= bytes;
        Ok(())
    }
}

/// Decompresses snappy as Kafka clients write it: Xerial-framed blocks (Java) or one raw block
/// (librdkafka and others), refusing to inflate past `bytes_max`.
pub(crate) fn snappy_decompress(records: &[u8], bytes_max: usize) -> Result<Vec<u8>, BatchError> {
    // Magic, version 1, compatible version 1: the whole header, as kafka-protocol (which
    // consumers and compaction decode with) recognises it; anything else is one raw block.
    const XERIAL_HEADER: &[u8] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let Some(mut rest) = records.strip_prefix(XERIAL_HEADER) else {
        return snappy_block(records, bytes_max);
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let length = rest.get(..4).ok_or(BatchError::Incomplete)?;
        let length = u32::from_be_bytes(length.try_into().expect("four bytes")) as usize;
        let block = rest.get(4..4 + length).ok_or(BatchError::Incomplete)?;
        out.extend(snappy_block(block, bytes_max - out.len())?);
        rest = &rest[4 + length..];
    }
    Ok(out)
}

/// One raw snappy block. Its declared size is checked before anything is allocated: against
/// `bytes_max`, and against 32 times the block, as no snappy element of at least two bytes
/// yields more than 64, so a block claiming more is corrupt.
fn snappy_block(block: &[u8], bytes_max: usize) -> Result<Vec<u8>, BatchError> {
    let declared = snap::raw::decompress_len(block)
        .map_err(|_| BatchError::Inconsistent("records do not decompress"))?;
    if declared > bytes_max || declared > block.len().saturating_mul(32) {
        return Err(BatchError::Inconsistent("records inflate beyond the limit"));
    }
    snap::raw::Decoder::new()
        .decompress_vec(block)
        .map_err(|_| BatchError::Inconsistent("records do not decompress"))
}

/// Encodes records that keep their own offsets (which may have gaps, as after compaction) into
/// one batch, with the codec, producer id, epoch and transactional flag of `original` (the
/// batch they come from), and each record's sequence as it was in `original`. Used by the
/// compactor.
pub fn encode_with_offsets(
    records: &[ConsumedRecord],
    original: &BatchHeader,
) -> Result<Bytes, String> {
    let base = records.first().map(|r| r.offset).unwrap_or(0);
    let sequence = |offset: i64| match original.base_sequence {
        // Constant `offset - sequence` keeps every record in one batch despite offset gaps.
        first if first >= 0 => first.wrapping_add((offset - original.base_offset) as i32),
        _ => (offset - base) as i32,
    };
    let compression = original.compression();
    let records: Vec<Record> = records
        .iter()
        .map(|r| Record {
            transactional: original.is_transactional(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: original.producer_id,
            producer_epoch: original.producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: r.offset,
            sequence: sequence(r.offset),
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
    /// For a transactional batch: the producer id and epoch.
    producer: Option<(i64, i16)>,
    /// The producer's sequence of the first record, or -1 for none.
    base_sequence: i32,
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
            producer: None,
            base_sequence: -1,
        }
    }

    /// Makes the batch part of producer `producer_id`'s transaction (attributes bit 4), with no
    /// sequence: the broker writes it itself (TxnOffsetCommit's records), as Kafka's group
    /// coordinator does.
    pub fn transactional(mut self, producer_id: i64, producer_epoch: i16) -> BatchBuilder {
        self.producer = Some((producer_id, producer_epoch));
        self
    }

    /// Numbers the batch's records from `base_sequence` (an idempotent producer's batch).
    pub fn sequenced(mut self, base_sequence: i32) -> BatchBuilder {
        self.base_sequence = base_sequence;
        self
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
                           // attributes: no compression, create time; transactional when it has a producer
        header.put_i16(if self.producer.is_some() {
            ATTRIBUTE_TRANSACTIONAL
        } else {
            0
        });
        header.put_i32(self.record_count - 1);
        header.put_i64(self.base_timestamp);
        header.put_i64(self.max_timestamp);
        let (producer_id, producer_epoch) = self.producer.unwrap_or((-1, -1));
        header.put_i64(producer_id);
        header.put_i16(producer_epoch);
        header.put_i32(self.base_sequence);
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

    /// A test record's key and value.
    type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

    fn sample(records: &[KeyValue]) -> BytesMut {
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

/// Validation of produced batches (`validate_produced`): what it refuses, and that nothing a
/// client sends makes it, or the append behind it, panic.
#[cfg(test)]
mod produced_tests {
    use super::*;
    use proptest::prelude::*;

    const CAP: usize = 1 << 20;
    const CODECS: [Compression; 4] = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn built(records: usize, value_bytes: usize) -> BytesMut {
        let mut builder = BatchBuilder::new(1_000, 1024);
        for i in 0..records {
            let value = vec![b'a' + (i % 26) as u8; value_bytes];
            builder.push(
                1_000 + i as i64,
                Some(b"k"),
                Some(&value),
                &[("h", Some(b"x"))],
            );
        }
        builder.finish()
    }

    /// Recomputes the CRC after a test edited the batch, so only the edit is wrong.
    fn reseal(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    fn refused(batch: &[u8]) -> bool {
        validate_produced(batch, CAP, false).is_err()
    }

    #[test]
    fn batches_of_every_codec_validate() {
        let plain = built(3, 100);
        assert!(validate_produced(&plain, CAP, false).is_ok());
        for codec in CODECS {
            let packed = recompress(&plain, codec).expect("recompress");
            assert_eq!(
                validate_produced(&packed, CAP, false).map(|h| h.record_count),
                Ok(3)
            );
        }
    }

    #[test]
    fn record_count_disagreeing_with_the_records_is_refused() {
        for count in [0i32, 1, 3, 1_000_000] {
            let mut batch = built(2, 10);
            batch[23..27].copy_from_slice(&(count - 1).to_be_bytes());
            batch[57..61].copy_from_slice(&count.to_be_bytes());
            reseal(&mut batch);
            assert!(refused(&batch), "record count {count} for 2 records");
        }
        let mut batch = built(2, 10);
        batch[23..27].copy_from_slice(&0i32.to_be_bytes()); // last offset delta only
        reseal(&mut batch);
        assert!(refused(&batch));
    }

    #[test]
    fn bad_record_framing_is_refused() {
        // The first record starts at 61: length, attributes, timestamp delta, offset delta.
        let mut wrong_delta = built(2, 10);
        wrong_delta[64] = 2; // zigzag 1: the first record claims offset delta 1
        reseal(&mut wrong_delta);
        assert!(refused(&wrong_delta));
        let mut too_long = built(2, 10);
        too_long[61] = 0x7e; // length 63: runs into the next record
        reseal(&mut too_long);
        assert!(refused(&too_long));
        let mut beyond = built(1, 10);
        beyond[61] = 0xfe; // length 127 in two bytes' worth: past the batch
        reseal(&mut beyond);
        assert!(refused(&beyond));
        let mut not_utf8 = built(1, 10);
        let key_at = not_utf8.len() - 3; // header key "h", then value length and "x"
        assert_eq!(not_utf8[key_at], b'h');
        not_utf8[key_at] = 0xff;
        reseal(&mut not_utf8);
        assert!(refused(&not_utf8));
    }

    /// A batch inflating past the cap is refused whatever the codec, without inflating it
    /// all (snappy's declared length is checked before allocating).
    #[test]
    fn a_decompression_bomb_is_refused_at_the_cap() {
        let bomb = built(4, 1 << 20);
        for codec in CODECS {
            let packed = recompress(&bomb, codec).expect("recompress");
            assert!(
                packed.len() < bomb.len() / 10,
                "{codec:?} compresses the bomb"
            );
            assert!(
                validate_produced(&packed, 8 << 20, false).is_ok(),
                "{codec:?} under the cap"
            );
            assert!(
                validate_produced(&packed, CAP, false).is_err(),
                "{codec:?} over the cap"
            );
        }
    }

    /// Bytes that are not a batch at all are refused without a panic.
    #[test]
    fn truncated_and_empty_input_is_refused() {
        let batch = built(2, 10);
        for len in [0, 1, 60, 61, batch.len() - 1] {
            assert!(refused(&batch[..len]), "{len} bytes");
        }
    }

    fn mutated() -> impl Strategy<Value = (Vec<u8>, bool)> {
        let bases: Vec<Vec<u8>> = std::iter::once(built(3, 20).to_vec())
            .chain(
                CODECS
                    .iter()
                    .map(|c| recompress(&built(3, 20), *c).expect("recompress").to_vec()),
            )
            .collect();
        (
            proptest::sample::select(bases),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(mut batch, edits, truncate, seal)| {
                for (at, byte) in edits {
                    let at = at.index(batch.len());
                    if truncate {
                        batch.truncate(at.max(1));
                    } else {
                        batch[at] = byte;
                    }
                }
                if seal && batch.len() > BATCH_HEADER_BYTES {
                    reseal(&mut batch);
                }
                (batch, seal)
            })
    }

    proptest! {
        /// Mutated batches (most with a recomputed CRC, so the records are read) never make
        /// validation, the append after it, recovery at the next start or compaction panic,
        /// and whatever validation accepts is stored, survives recovery and decodes: storage
        /// and validation agree on what a batch is.
        #[test]
        fn mutated_batches_never_panic_validation_append_recovery_or_compaction(
            (batch, _) in mutated()
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = crate::config::TopicConfig {
                cleanup_policy: crate::config::CleanupPolicy::Compact,
                delete_retention_ms: 0,
                ..crate::config::TopicConfig::default()
            };
            let (mut log, _) =
                crate::log::Log::open(dir.path(), config.clone(), 0, 0).expect("log");
            let accepted = validate_produced(&batch, CAP, false).is_ok();
            if accepted {
                let size = BatchHeader::parse(&batch).expect("valid").total_bytes();
                let mut stored = BytesMut::from(&batch[..size]);
                log.append(&mut stored, 1_000).expect("a valid batch is stored");
                let read = log.read(0, 1 << 20).expect("read");
                prop_assert!(decode_records(&read).is_ok(), "accepted batch must decode");
            } else {
                let _ = log.append(&mut BytesMut::from(&batch[..]), 1_000);
            }
            let end = log.log_end_offset();
            drop(log);
            // Recovery scans the whole segment (recovery point 0), then compaction reads it
            // once rolled.
            let (log, _) = crate::log::Log::open(dir.path(), config, 0, 0).expect("recover");
            if accepted {
                prop_assert_eq!(log.log_end_offset(), end, "recovery kept the accepted batch");
            }
            let log = parking_lot::Mutex::new(log);
            log.lock().roll(2_000).expect("roll");
            let _ = crate::log::compaction::compact(&log, 10_000, i64::MAX);
            let read = log.lock().read(0, 1 << 20).expect("read after compaction");
            // Only validated batches reach a log in service (unvalidated bytes were appended
            // above just to show that the storage layers do not panic on them).
            if accepted {
                let decoded = decode_records(&read);
                prop_assert!(decoded.is_ok(), "compacted log must decode: {:?}", decoded.err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_validation(
            bytes in proptest::collection::vec(any::<u8>(), 0..400)
        ) {
            let _ = validate_produced(&bytes, CAP, false);
        }
    }
}
