//! Every bound the broker enforces, in one place.

/// Largest request frame accepted (`socket.request.max.bytes`); larger ones close the connection
/// before anything is allocated.
pub const FRAME_BYTES_MAX: usize = 100 * 1024 * 1024;
/// Requests read from one connection but not yet answered; the reader waits beyond this.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 1024;
/// Bytes of log between two sparse index entries (`index.interval.bytes`).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;
/// Unit of reads when scanning a segment.
pub const SCAN_CHUNK_BYTES: usize = 64 * 1024;
/// Batches remembered per idempotent producer and partition, to answer retries (as Kafka).
pub const PRODUCER_BATCHES_KEPT: usize = 5;
/// Longest a fetch may wait for data, whatever the client asks.
pub const FETCH_WAIT_MS_MAX: u64 = 30_000;
/// Most partitions a topic may have.
pub const PARTITIONS_MAX: i32 = 10_000;
/// Most members one consumer group may have.
pub const GROUP_MEMBERS_MAX: usize = 1_000;

const _: () = assert!(SCAN_CHUNK_BYTES as u64 >= INDEX_INTERVAL_BYTES);
