//! The replicated cluster: metadata kept by a Raft quorum, partitions replicated Kafka's way.

pub mod metadata;
