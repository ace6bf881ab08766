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
/// First pause after `accept` fails for want of resources (out of file descriptors, say); it
/// doubles on each further failure up to [`ACCEPT_BACKOFF_MS_MAX`], and resets on success.
pub const ACCEPT_BACKOFF_MS_MIN: u64 = 10;
/// Longest pause between two failed `accept`s.
pub const ACCEPT_BACKOFF_MS_MAX: u64 = 1_000;
/// Response bytes one connection may have queued (computed or reserved, not yet written). The
/// connection stops reading requests beyond this, so a client that never reads its responses
/// cannot grow the broker's memory.
pub const RESPONSE_QUEUE_BYTES_MAX: usize = 100 * 1024 * 1024;
/// Most bytes a compressed batch may inflate to when validated on produce: a guard against
/// decompression bombs. Far above what any batch within `max.message.bytes` holds in practice.
pub const BATCH_UNCOMPRESSED_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Most topics one Metadata request may auto-create; the rest are answered
/// LEADER_NOT_AVAILABLE (retriable), so a client asking for many is served over a few refreshes
/// while a request naming a million topics cannot create them all at once.
pub const AUTO_CREATE_TOPICS_PER_REQUEST_MAX: usize = 100;
/// Longest metadata string an offset commit may carry (`offset.metadata.max.bytes`); longer
/// ones are answered OFFSET_METADATA_TOO_LARGE, as Kafka does.
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Bytes of group descriptions one DescribeGroups response may carry (members' ids, metadata and
/// assignments, counted as the groups are described). A request naming a large group many times
/// would otherwise have the broker build that many copies; groups past this are answered
/// INVALID_REQUEST.
pub const DESCRIBE_GROUPS_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest an OffsetFetch waits for the offset writes dispatched before it to reach disk (they
/// normally take one fsync); past it, it answers with what is on disk.
pub const OFFSET_FETCH_WAIT_MS_MAX: u64 = 5_000;
/// Most record errors (`record_errors`) one produce response lists, over all its partitions;
/// records refused beyond them are still refused, under the partition's error code and
/// message. Kafka lists every one, but a batch of a hundred thousand tiny keyless records
/// would then get a response many times the request's size.
pub const RECORD_ERRORS_MAX: usize = 1_000;
/// Times a broker in a cluster proposes one IncrementalAlterConfigs change of a topic, computed
/// again each time, while other changes of the topic's configs commit first; past it, the
/// resource is answered REQUEST_TIMED_OUT.
pub const CONFIG_CHANGE_ATTEMPTS_MAX: usize = 20;
/// Transactional ids one broker coordinates at once (each holds its state in memory until
/// `transactional.id.expiration.ms`); InitProducerId for a new id beyond it is answered
/// POLICY_VIOLATION, so a client inventing ids cannot exhaust memory. Kafka has no such bound.
pub const TRANSACTIONAL_IDS_MAX: usize = 100_000;
/// Partitions one transaction may span (AddPartitionsToTxn beyond it is answered
/// POLICY_VIOLATION): the coordinator writes a marker into each when the transaction ends.
pub const TRANSACTION_PARTITIONS_MAX: usize = 10_000;

const _: () = assert!(SCAN_CHUNK_BYTES as u64 >= INDEX_INTERVAL_BYTES);
