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
//! - [`hosted`]: the partitions of a coordinator's internal topic led here, and their loads.

pub mod controller;
pub mod fetcher;
pub(crate) mod hosted;
pub mod metadata;
pub mod node;
pub mod quorum;
pub mod replica;
#[cfg(test)]
mod sim;
pub mod topics;

/// The seeds a simulation runs: `EDDY_SIM_SEED=<n>` replays that one, `EDDY_SIM_SEEDS=<n>` runs
/// `0..n`, otherwise `0..default`.
#[cfg(test)]
pub(crate) fn sim_seeds(default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("EDDY_SIM_SEED") {
        return vec![seed.parse().expect("EDDY_SIM_SEED is a number")];
    }
    let count = std::env::var("EDDY_SIM_SEEDS")
        .map_or(default, |n| n.parse().expect("EDDY_SIM_SEEDS is a number"));
    (0..count).collect()
}
