//! The partitions of a coordinator's internal topic (`__consumer_offsets` for groups,
//! `__transaction_state` for transactions) that this node leads, on Kafka's model: the leader
//! of a key's partition coordinates the key. The cluster's reconciliation reports each role
//! the partition takes here ([`HostedPartitions::role_changed`]); becoming the leader starts a
//! load, which reads the partition's log from its start to its end and puts what it holds in
//! the coordinator's memory; until then the partition's keys are answered
//! COORDINATOR_LOAD_IN_PROGRESS. Ceasing to lead drops them at once (NOT_COORDINATOR: the
//! clients find the new coordinator). Loads are numbered, so one overtaken by a change of role
//! applies nothing.
//!
//! On a single node every key is coordinated here and nothing of this applies.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::replica::Role;
use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::partition::Partition;

/// How long a load waits before reading again after a failed read of the log.
const LOAD_RETRY: Duration = Duration::from_secs(1);
/// How often a load checks whether the replica has become the leader yet.
const LEADER_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hosted {
    Loading(u64),
    Loaded(u64),
}

/// A load to run: of which partition, and its number.
#[must_use = "a load does nothing until run"]
pub(crate) struct Load {
    pub partition: i32,
    number: u64,
}

/// The partitions of one internal topic this node leads, loading or loaded.
pub(crate) struct HostedPartitions {
    topic: &'static str,
    hosted: Mutex<BTreeMap<i32, Hosted>>,
    next_load: AtomicU64,
}

impl HostedPartitions {
    pub(crate) fn new(topic: &'static str) -> HostedPartitions {
        HostedPartitions {
            topic,
            hosted: Mutex::new(BTreeMap::new()),
            next_load: AtomicU64::new(0),
        }
    }

    /// Partition `partition` is led here (`leader`) or not. Only changes act: becoming the
    /// leader returns the load to run; ceasing to lead runs `unload`, under the lock, so a
    /// load finishing now cannot put the partition's state back.
    pub(crate) fn role_changed(
        &self,
        partition: i32,
        leader: bool,
        unload: impl FnOnce(),
    ) -> Option<Load> {
        let mut hosted = self.hosted.lock();
        if leader {
            if hosted.contains_key(&partition) {
                return None;
            }
            let number = self.next_load.fetch_add(1, Ordering::SeqCst);
            hosted.insert(partition, Hosted::Loading(number));
            Some(Load { partition, number })
        } else {
            if hosted.remove(&partition).is_some() {
                unload();
            }
            None
        }
    }

    /// Checks that this node coordinates `key`, whose state is in partition `partition`:
    /// always on a single node; in a cluster, when it leads the partition and has loaded it
    /// (COORDINATOR_LOAD_IN_PROGRESS while loading, NOT_COORDINATOR otherwise).
    pub(crate) fn check(&self, broker: &Broker, partition: i32, key: &str) -> Result<()> {
        if broker.cluster().is_none() {
            return Ok(());
        }
        match self.hosted.lock().get(&partition) {
            Some(Hosted::Loaded(_)) => {}
            Some(Hosted::Loading(_)) => {
                return Err(BrokerError::CoordinatorLoadInProgress(key.to_string()))
            }
            None => return Err(BrokerError::NotCoordinator(key.to_string())),
        }
        // The replica's own role decides too: its topic may be gone, or its role changing.
        let leading = broker
            .partition(self.topic, partition)
            .is_ok_and(|p| p.check_leader(-1).is_ok());
        match leading {
            true => Ok(()),
            false => Err(BrokerError::NotCoordinator(key.to_string())),
        }
    }

    /// Whether partition `partition` is loaded here.
    pub(crate) fn is_loaded(&self, partition: i32) -> bool {
        matches!(self.hosted.lock().get(&partition), Some(Hosted::Loaded(_)))
    }

    /// Whether some partition led here is still loading.
    pub(crate) fn any_loading(&self) -> bool {
        let hosted = self.hosted.lock();
        hosted.values().any(|h| matches!(h, Hosted::Loading(_)))
    }

    /// The partitions led here: partition -> loaded.
    #[cfg(test)]
    pub(crate) fn loaded_for_tests(&self) -> BTreeMap<i32, bool> {
        let hosted = self.hosted.lock();
        hosted
            .iter()
            .map(|(p, h)| (*p, matches!(h, Hosted::Loaded(_))))
            .collect()
    }

    /// Runs `load`: waits until the replica leads (the reconciliation makes it so right after
    /// reporting it), reads its log with `read` (again after a pause when that fails), then,
    /// under the lock and unless the role changed meanwhile, runs `apply` with what it read and
    /// marks the partition loaded. Returns whether it applied.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        broker: &Broker,
        load: Load,
        read: fn(&Partition) -> Result<T>,
        apply: impl FnOnce(T),
    ) -> bool {
        let Load {
            partition: index,
            number,
        } = load;
        let wanted = || self.hosted.lock().get(&index) == Some(&Hosted::Loading(number));
        loop {
            if !wanted() {
                return false;
            }
            let partition = match broker.partition(self.topic, index) {
                Ok(p) if !matches!(p.role(), Role::Follower { .. }) => p,
                _ => {
                    tokio::time::sleep(LEADER_POLL).await;
                    continue;
                }
            };
            let contents = match tokio::task::spawn_blocking(move || read(&partition)).await {
                Ok(Ok(contents)) => contents,
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                        Ok(Ok(_)) => unreachable!("matched above"),
                    };
                    tracing::error!(topic = self.topic, partition = index, %error,
                        "could not load a coordinator's partition; retrying");
                    tokio::time::sleep(LOAD_RETRY).await;
                    continue;
                }
            };
            let mut hosted = self.hosted.lock();
            if hosted.get(&index) != Some(&Hosted::Loading(number)) {
                return false;
            }
            apply(contents);
            hosted.insert(index, Hosted::Loaded(number));
            return true;
        }
    }
}
