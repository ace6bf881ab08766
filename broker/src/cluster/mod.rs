//! The replicated cluster: metadata kept by a Raft quorum, partitions replicated Kafka's way.
//!
//! - [`metadata`]: the records of the metadata log and the image every node builds from them
//!   (brokers, topics, replicas, leaders, epochs, in-sync sets) and leader election.
//! - [`quorum`]: the Raft quorum (raft-rs) that replicates the metadata log among the voters.
//! - [`controller`]: the active controller: brokers' registration, heartbeats and fencing.
//! - [`node`]: one broker in the cluster: follows the image and makes its replicas match.
//! - [`replica`]: a partition's role here; the leader's view of followers, high watermark and
//!   in-sync set rules.
//! - [`fetcher`]: a follower copying its leader (truncation by leader epoch, then fetches).

pub mod controller;
pub mod fetcher;
pub mod metadata;
pub mod node;
pub mod quorum;
pub mod replica;
#[cfg(test)]
mod sim;
pub mod topics;
