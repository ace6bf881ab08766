//! Eddy's partition log, on Kafka's model, spoken over the Kafka wire protocol.
//!
//! A [`Broker`] holds [`Topic`]s; each has [`Partition`]s, and each partition is a [`Log`] of
//! CRC-checked segment files (`log/segment.rs`) addressed by offset, with sparse indexes, recovery
//! of torn tails, retention and compaction (`log/compaction.rs`). [`GroupCoordinator`] runs
//! consumer groups and keeps committed offsets in `__consumer_offsets`; [`txn`] coordinates
//! Kafka transactions, its state in `__transaction_state`. [`protocol`] speaks Kafka's
//! wire protocol ([`serve`]); [`LogClient`] is what the engine uses, in-process
//! ([`InProcessClient`]) or over the wire ([`KafkaClient`]). What an acknowledgement promises is
//! stated in `partition.rs`.
//!
//! In a cluster ([`cluster`], `Broker::open_cluster`), brokers keep the cluster metadata in a
//! Raft quorum ([`cluster::quorum`]) and replicate each partition Kafka's way: a leader and
//! followers that fetch from it ([`cluster::fetcher`]), in-sync sets and the high watermark
//! ([`cluster::replica`]), leader epochs and truncation (`log/epoch_cache.rs`), failover by the
//! active controller ([`cluster::controller`]). Not here: SQL (eddy-engine), HTTP (eddy-rest).

pub mod broker;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod group;
pub mod kafka_client;
pub mod limits;
pub mod log;
pub mod partition;
pub mod partitioner;
pub mod protocol;
pub mod server;
pub mod txn;

pub use broker::{now_ms, Broker, Topic};
pub use client::{
    InProcessClient, LogClient, OffsetRange, OffsetReset, ProducerRecord, Transaction,
    TransactionalProducer,
};
pub use config::{BrokerConfig, CleanupPolicy, TopicConfig};
pub use error::BrokerError;
pub use group::{GroupCoordinator, PartitionLag};
pub use kafka_client::KafkaClient;
pub use log::batch::ConsumedRecord;
pub use log::Log;
pub use partition::Partition;
pub use server::{bind, serve};
