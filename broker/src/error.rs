//! The broker's one error type; every variant maps to the Kafka error code clients expect.

use kafka_protocol::ResponseError;

/// What went wrong in the broker, phrased for the person who sent the request.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("topic '{topic}' or partition {partition} does not exist")]
    UnknownTopicOrPartition { topic: String, partition: i32 },
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    #[error("topic name '{0}' is invalid: use 1 to 249 of [a-zA-Z0-9._-], not '.' or '..'")]
    InvalidTopic(String),
    #[error("cannot append to internal topic '{0}': it belongs to the broker")]
    InternalTopic(String),
    #[error(
        "cannot {action} internal topic '{topic}' over the Kafka protocol: it belongs to the \
         broker"
    )]
    InternalTopicAdmin { topic: String, action: &'static str },
    #[error(
        "{scope} would hold {requested} partitions, over {limit}={max}: create fewer \
         partitions or raise {limit}"
    )]
    PartitionLimit {
        scope: &'static str,
        requested: i64,
        limit: &'static str,
        max: i64,
    },
    #[error(
        "data directory '{}' is in use by another broker (it holds the lock on .lock): stop it \
         or use another data directory",
        .0.display()
    )]
    DataDirLocked(std::path::PathBuf),
    #[error("partition count {0} is invalid: it must be between 1 and 10000")]
    InvalidPartitions(i32),
    #[error(
        "topic '{topic}' has {current} partitions; {requested} would not be an increase \
         (partitions can be added, never removed)"
    )]
    PartitionCountNotIncreased {
        topic: String,
        current: i32,
        requested: i32,
    },
    #[error("replication factor {0} is not possible on this single-node cluster (use 1 or -1)")]
    InvalidReplicationFactor(i16),
    #[error(
        "replication factor {requested} is not possible: {brokers} broker(s) are available \
         (use 1 to {brokers}, or -1 for default.replication.factor)"
    )]
    ReplicationFactorTooLarge { requested: i16, brokers: usize },
    #[error("config '{name}' has an invalid value '{value}'")]
    InvalidConfig { name: String, value: String },
    /// A number outside the range Kafka allows for the config (Kafka's words).
    #[error("Invalid value {value} for configuration {name}: Value must be at least {min}")]
    ConfigBelowMinimum { name: String, value: i64, min: i64 },
    #[error(
        "config value {operation} is not allowed for config key: {name} (only list configs, \
         such as cleanup.policy, take append and subtract)"
    )]
    ConfigOperationNotAllowed {
        name: String,
        operation: &'static str,
    },
    #[error("config '{name}' is not a topic config Eddy knows")]
    UnknownConfig { name: String },
    #[error(
        "offset {offset} is out of range for {topic}-{partition}: valid offsets are \
         {log_start_offset} to {log_end_offset}"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error(
        "records of {topic}-{partition} cannot be deleted: its cleanup.policy is compact only \
         (add delete to the policy first)"
    )]
    RecordDeletionRefused { topic: String, partition: i32 },
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error(
        "cannot update these configs dynamically: {0} (Eddy's broker configs are read-only; set \
         them at startup)"
    )]
    BrokerConfigReadOnly(String),
    #[error("record batch is corrupt: {0}")]
    CorruptMessage(String),
    #[error("record batch of {size} bytes is larger than max.message.bytes {max}")]
    MessageTooLarge { size: usize, max: i32 },
    #[error("producer {producer_id} sent sequence {got} but {expected} was expected")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    /// `current` is -1 where it is not known (a Kafka client learns only the error code).
    #[error("producer {producer_id} epoch {epoch} is older than {}", current_epoch(*.current))]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// A producer's batch does not fit its transaction state (Kafka's INVALID_TXN_STATE).
    #[error("producer {producer_id} is in the wrong transaction state: {reason}")]
    InvalidTxnState {
        producer_id: i64,
        reason: &'static str,
    },
    /// A marker from a transaction coordinator older than the one that wrote the producer's
    /// last marker (Kafka's TRANSACTION_COORDINATOR_FENCED).
    #[error(
        "coordinator epoch {coordinator_epoch} of producer {producer_id}'s marker is older than \
         {current}: a newer transaction coordinator took over"
    )]
    TransactionCoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
    #[error(
        "leader epoch {epoch} is older than the current epoch {current}: a newer leader was \
         elected; refresh the partition's metadata"
    )]
    FencedLeaderEpoch { epoch: i32, current: i32 },
    #[error(
        "a replicated batch starts at offset {offset}, below {expected_min} (the log end or the \
         previous batch's end): truncate the follower's log first"
    )]
    UnexpectedAppendOffset { offset: i64, expected_min: i64 },
    #[error("acks must be -1, 0 or 1, not {0}")]
    InvalidRequiredAcks(i16),
    #[error("group '{0}' is not known")]
    GroupIdNotFound(String),
    #[error("group '{0}' has members: stop its consumers before deleting it")]
    NonEmptyGroup(String),
    #[error("member '{member_id}' is not a member of group '{group_id}'")]
    UnknownMemberId { group_id: String, member_id: String },
    #[error("generation {got} of group '{group_id}' is stale; the current one is {current}")]
    IllegalGeneration {
        group_id: String,
        got: i32,
        current: i32,
    },
    #[error("group '{0}' is rebalancing; rejoin")]
    RebalanceInProgress(String),
    #[error("group '{0}' uses another protocol type or has no protocol in common")]
    InconsistentGroupProtocol(String),
    #[error("group id must not be empty")]
    InvalidGroupId,
    #[error("a member id is required: rejoin with the one given")]
    MemberIdRequired,
    /// In a cluster: this broker does not lead the group's `__consumer_offsets` partition.
    #[error("this broker is not the coordinator of group '{0}'; find the coordinator again")]
    NotCoordinator(String),
    /// In a cluster: this broker is loading the group's `__consumer_offsets` partition.
    #[error("the coordinator of group '{0}' is loading its offsets; retry shortly")]
    CoordinatorLoadInProgress(String),
    /// No coordinator can answer for the group now (its partition has no leader, or a write
    /// could not be replicated); clients look the coordinator up again and retry.
    #[error("no coordinator is available for group '{0}' now: {1}")]
    CoordinatorNotAvailable(String, String),
    /// A transactional producer's request the transaction coordinator refused.
    #[error("transactional id '{transactional_id}': {kind}")]
    Transaction {
        transactional_id: String,
        kind: TxnError,
    },
    #[error("{0}")]
    InvalidRequest(String),
    /// Records a topic refuses (a compacted topic's records without a key), each named by its
    /// index within its batch, as Kafka reports them in `record_errors` (boxed: the error
    /// type stays small).
    #[error("{}", .0.summary)]
    InvalidRecords(Box<RecordErrors>),
    #[error("partition {topic}-{partition}: {kind}")]
    Replication {
        kind: ReplicationError,
        topic: String,
        partition: i32,
    },
    /// A metadata change (a topic, its configs, producer ids) the cluster's metadata quorum did
    /// not confirm; the reason says whether it may still take effect.
    #[error("the cluster did not confirm the metadata change: {0}")]
    MetadataNotConfirmed(String),
    #[error("the broker at {address} could not be reached: {reason}")]
    Network { address: String, reason: String },
    /// No connection to the broker could be opened: nothing was sent, so any request may be
    /// sent again (to the same broker or, after a leader change, another).
    #[error("no connection to the broker at {address}: {reason}")]
    NotConnected { address: String, reason: String },
    #[error("storage failed: {0}")]
    Storage(#[from] std::io::Error),
    #[error("internal error (this is a bug in Eddy): {0}")]
    Internal(String),
}

/// Why a replicated partition refused a request; the client's next step follows from the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationError {
    #[error("this broker is not its leader; ask for metadata and retry at the leader")]
    NotLeaderOrFollower,
    #[error("it has no leader right now (no in-sync replica is alive); retry later")]
    LeaderNotAvailable,
    #[error(
        "{in_sync} replica(s) are in sync, fewer than min.insync.replicas={min}; \
         nothing was written"
    )]
    NotEnoughReplicas { in_sync: u16, min: u16 },
    #[error(
        "the records were written, but the in-sync set shrank below min.insync.replicas={min} \
         before they were replicated; they may or may not survive"
    )]
    NotEnoughReplicasAfterAppend { min: u16 },
    #[error("the request's leader epoch {requested} is older than the leader's {current}")]
    FencedLeaderEpoch { requested: i32, current: i32 },
    #[error("the request's leader epoch {requested} is newer than this broker knows ({current})")]
    UnknownLeaderEpoch { requested: i32, current: i32 },
    #[error("the records were not replicated within {timeout_ms} ms")]
    RequestTimedOut { timeout_ms: i32 },
    /// Seen by a client: the broker the metadata named as leader does not know the partition
    /// yet (it has not applied the topic's creation), or no longer (it was deleted).
    #[error("its leader does not know it (yet, or any more); ask for metadata and retry")]
    UnknownToLeader,
}

impl ReplicationError {
    fn response_error(self) -> ResponseError {
        match self {
            ReplicationError::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
            ReplicationError::LeaderNotAvailable => ResponseError::LeaderNotAvailable,
            ReplicationError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
            ReplicationError::NotEnoughReplicasAfterAppend { .. } => {
                ResponseError::NotEnoughReplicasAfterAppend
            }
            ReplicationError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            ReplicationError::UnknownLeaderEpoch { .. } => ResponseError::UnknownLeaderEpoch,
            ReplicationError::RequestTimedOut { .. } => ResponseError::RequestTimedOut,
            ReplicationError::UnknownToLeader => ResponseError::UnknownTopicOrPartition,
        }
    }
}

/// Why the transaction coordinator refused a request (Kafka's error of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// `current` is -1 where it is not known (a Kafka client learns only the error code).
    #[error(
        "producer epoch {epoch} is not {}: a newer producer with this transactional id fenced \
         this one",
        current_epoch(*.current)
    )]
    ProducerFenced { epoch: i16, current: i16 },
    #[error("the producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    #[error("its previous transaction is still being completed; retry")]
    ConcurrentTransactions,
    #[error("cannot {} a transaction in state {state}", if *.commit { "commit" } else { "abort" })]
    /// `state` is "unknown" where it is not known (a Kafka client learns only the error code).
    InvalidTxnState { state: &'static str, commit: bool },
    #[error(
        "transaction.timeout.ms {timeout_ms} must be positive and at most \
         transaction.max.timeout.ms {max_ms}"
    )]
    InvalidTransactionTimeout { timeout_ms: i32, max_ms: i32 },
    #[error("no such transactional id")]
    TransactionalIdNotFound,
    #[error("this broker already coordinates {max} transactional ids")]
    TooManyTransactionalIds { max: usize },
    #[error("a transaction may span at most {max} partitions")]
    TooManyPartitions { max: usize },
}

impl TxnError {
    fn response_error(self) -> ResponseError {
        match self {
            TxnError::ProducerFenced { .. } => ResponseError::ProducerFenced,
            TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
            TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
            TxnError::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
            TxnError::InvalidTransactionTimeout { .. } => ResponseError::InvalidTransactionTimeout,
            TxnError::TransactionalIdNotFound => ResponseError::TransactionalIdNotFound,
            TxnError::TooManyTransactionalIds { .. } | TxnError::TooManyPartitions { .. } => {
                ResponseError::PolicyViolation
            }
        }
    }
}

/// "the current epoch N", or, where the epoch is not known (-1), "the current epoch".
fn current_epoch(current: i16) -> String {
    match current {
        0.. => format!("the current epoch {current}"),
        _ => "the current epoch".to_string(),
    }
}

/// The records of a batch a topic refused, as Kafka lists them.
#[derive(Debug)]
pub struct RecordErrors {
    /// Kafka's top-level message, naming the first three.
    pub summary: String,
    /// The message for each refused record.
    pub record_message: String,
    /// Indices within the batch, at most [`crate::limits::RECORD_ERRORS_MAX`].
    pub indices: Vec<i32>,
}

impl BrokerError {
    /// The Kafka error code for this error.
    pub fn code(&self) -> i16 {
        let error = match self {
            BrokerError::UnknownTopicOrPartition { .. } => ResponseError::UnknownTopicOrPartition,
            BrokerError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
            BrokerError::InvalidTopic(_) | BrokerError::InternalTopic(_) => {
                ResponseError::InvalidTopicException
            }
            BrokerError::InternalTopicAdmin { .. } => ResponseError::InvalidTopicException,
            BrokerError::PartitionLimit { .. } => ResponseError::PolicyViolation,
            BrokerError::DataDirLocked(_) => ResponseError::KafkaStorageError,
            BrokerError::InvalidPartitions(_) | BrokerError::PartitionCountNotIncreased { .. } => {
                ResponseError::InvalidPartitions
            }
            BrokerError::InvalidReplicationFactor(_)
            | BrokerError::ReplicationFactorTooLarge { .. } => {
                ResponseError::InvalidReplicationFactor
            }
            BrokerError::InvalidConfig { .. }
            | BrokerError::ConfigBelowMinimum { .. }
            | BrokerError::UnknownConfig { .. }
            | BrokerError::ConfigOperationNotAllowed { .. } => ResponseError::InvalidConfig,
            BrokerError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            BrokerError::RecordDeletionRefused { .. } => ResponseError::PolicyViolation,
            BrokerError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
            BrokerError::BrokerConfigReadOnly(_) => ResponseError::InvalidRequest,
            BrokerError::CorruptMessage(_) => ResponseError::CorruptMessage,
            BrokerError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
            BrokerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
            BrokerError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
            BrokerError::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
            BrokerError::TransactionCoordinatorFenced { .. } => {
                ResponseError::TransactionCoordinatorFenced
            }
            BrokerError::InvalidRequiredAcks(_) => ResponseError::InvalidRequiredAcks,
            BrokerError::FencedLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            // Kafka's UnexpectedAppendOffsetException stays inside the broker (the replica
            // fetcher handles it); should it reach a client, it is a server error.
            BrokerError::UnexpectedAppendOffset { .. } => ResponseError::UnknownServerError,
            BrokerError::GroupIdNotFound(_) => ResponseError::GroupIdNotFound,
            BrokerError::NonEmptyGroup(_) => ResponseError::NonEmptyGroup,
            BrokerError::UnknownMemberId { .. } => ResponseError::UnknownMemberId,
            BrokerError::IllegalGeneration { .. } => ResponseError::IllegalGeneration,
            BrokerError::RebalanceInProgress(_) => ResponseError::RebalanceInProgress,
            BrokerError::InconsistentGroupProtocol(_) => ResponseError::InconsistentGroupProtocol,
            BrokerError::InvalidGroupId => ResponseError::InvalidGroupId,
            BrokerError::MemberIdRequired => ResponseError::MemberIdRequired,
            BrokerError::NotCoordinator(_) => ResponseError::NotCoordinator,
            BrokerError::CoordinatorLoadInProgress(_) => ResponseError::CoordinatorLoadInProgress,
            BrokerError::CoordinatorNotAvailable(..) => ResponseError::CoordinatorNotAvailable,
            BrokerError::Transaction { kind, .. } => kind.response_error(),
            BrokerError::InvalidRequest(_) => ResponseError::InvalidRequest,
            BrokerError::InvalidRecords(_) => ResponseError::InvalidRecord,
            BrokerError::Replication { kind, .. } => kind.response_error(),
            // What Kafka's brokers answer when forwarding to the controller timed out.
            BrokerError::MetadataNotConfirmed(_) => ResponseError::RequestTimedOut,
            BrokerError::Network { .. } | BrokerError::NotConnected { .. } => {
                ResponseError::NetworkException
            }
            BrokerError::Storage(_) => ResponseError::KafkaStorageError,
            BrokerError::Internal(_) => ResponseError::UnknownServerError,
        };
        error.code()
    }
}

/// Results in the broker.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

// Small enough that errors wrapping it (the engine's EngineError) stay small too.
const _: () = assert!(std::mem::size_of::<BrokerError>() <= 56);
