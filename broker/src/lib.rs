//! Eddy's partition log, on Kafka's model, spoken over the Kafka wire protocol.
//!
//! A [`Broker`] holds [`Topic`]s; each has [`Partition`]s, and each partition is a [`Log`] of
//! CRC-checked segment files (`log/segment.rs`) addressed by offset, with sparse indexes, recovery
//! of torn tails, retention and compaction (`log/compaction.rs`). [`GroupCoordinator`] runs
//! consumer groups and keeps committed offsets in `__consumer_offsets`. [`protocol`] speaks Kafka's
//! wire protocol ([`serve`]); [`LogClient`] is what the engine uses, in-process
//! ([`InProcessClient`]) or over the wire ([`KafkaClient`]). What an acknowledgement promises is
//! stated in `partition.rs`. [`cluster::quorum`] replicates the cluster metadata log among the
//! controller voters (raft). Not here: SQL (eddy-engine), HTTP (eddy-rest), partition replication.

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

pub use broker::{now_ms, Broker, Topic};
pub use client::{InProcessClient, LogClient, OffsetRange, OffsetReset, ProducerRecord};
pub use config::{BrokerConfig, CleanupPolicy, TopicConfig};
pub use error::BrokerError;
pub use group::{GroupCoordinator, PartitionLag};
pub use kafka_client::KafkaClient;
pub use log::batch::ConsumedRecord;
pub use log::Log;
pub use partition::Partition;
pub use server::{bind, serve};
