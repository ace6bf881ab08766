//! Groups in a cluster, on Kafka's model: the coordinator of group G is the leader of partition
//! [`partition_for`]`(G)` of `__consumer_offsets`, a replicated topic created through the
//! cluster the first time a coordinator is looked up ([`GroupCoordinator::ensure_offsets_topic`]).
//!
//! Loading and unloading, as Kafka's GroupMetadataManager does them (`cluster/hosted.rs`): the
//! cluster's reconciliation reports every role an offsets partition takes here through one
//! entry point, [`GroupCoordinator::partition_role_changed`]. Becoming the leader starts a
//! load: the partition's committed offsets and groups are read back; until then its groups are
//! answered COORDINATOR_LOAD_IN_PROGRESS. Ceasing to lead drops them from memory (members
//! waiting for a rebalance are answered NOT_COORDINATOR, and so is every later request for
//! them: the clients find the new coordinator).
//!
//! On a single node every group is coordinated here and nothing of this applies.

use std::sync::Arc;

use super::offsets::{internal_topic_config, partition_for, PartitionContents};
use super::offsets::{OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use super::GroupCoordinator;
use crate::broker::Broker;
use crate::cluster::topics::ensure_internal_topic;
use crate::error::{BrokerError, Result};

impl GroupCoordinator {
    /// The one entry point of the cluster's reconciliation (`cluster/node.rs`): partition
    /// `partition` of `__consumer_offsets` is led here (`leader`) or not. Becoming the leader
    /// starts loading the partition's groups in the background; ceasing to lead drops them at
    /// once. Never blocks on the cluster's replicas (the reconciliation holds them).
    pub fn partition_role_changed(broker: &Arc<Broker>, partition: i32, leader: bool) {
        let coordinator = &broker.groups;
        let unload = || {
            coordinator.unload(partition);
            tracing::info!(
                partition,
                "no longer leading an offsets partition: unloaded its groups"
            );
        };
        let Some(load) = coordinator.hosted.role_changed(partition, leader, unload) else {
            return;
        };
        tracing::info!(
            partition,
            "leading an offsets partition: loading its groups"
        );
        let broker = Arc::clone(broker);
        tokio::spawn(async move {
            let coordinator = &broker.groups;
            let applied = coordinator
                .hosted
                .run(&broker, load, PartitionContents::read, |contents| {
                    // Anything left of an earlier leadership goes first: the log says what holds.
                    coordinator.unload(partition);
                    let records = contents.apply(coordinator);
                    tracing::info!(
                        partition,
                        records,
                        "loaded the groups of an offsets partition"
                    );
                })
                .await;
            if !applied {
                tracing::info!(partition, "an offsets partition's load was overtaken");
            }
        });
    }

    /// Checks that this node coordinates `group`: always on a single node; in a cluster, when
    /// it leads the group's offsets partition and has loaded it (COORDINATOR_LOAD_IN_PROGRESS
    /// while loading, NOT_COORDINATOR otherwise). An empty group id passes, for the request's
    /// own check to refuse it (INVALID_GROUP_ID), as Kafka checks the id first.
    pub fn check_coordinator(&self, broker: &Broker, group: &str) -> Result<()> {
        if group.is_empty() {
            return Ok(());
        }
        self.hosted.check(broker, partition_for(group), group)
    }

    /// Whether this node coordinates `group` now (for listing).
    pub(crate) fn coordinates(&self, broker: &Broker, group: &str) -> bool {
        broker.cluster().is_none() || self.hosted.is_loaded(partition_for(group))
    }

    /// Whether an offsets partition led here is still loading (ListGroups says so).
    pub(crate) fn loading(&self) -> bool {
        self.hosted.any_loading()
    }

    /// In a cluster: whether `__consumer_offsets` exists; if not, proposes its creation in the
    /// background (`cluster/topics.rs`). Until it exists, FindCoordinator answers
    /// COORDINATOR_NOT_AVAILABLE and clients retry.
    pub fn ensure_offsets_topic(broker: &Arc<Broker>) -> bool {
        ensure_internal_topic(
            broker,
            OFFSETS_TOPIC,
            OFFSETS_PARTITIONS,
            internal_topic_config(),
            |b| &b.groups.creating_offsets_topic,
        )
    }

    /// Drops the groups of offsets partition `partition` from memory: their members, their
    /// queued metadata records and their offsets. Members waiting for a rebalance are answered
    /// NOT_COORDINATOR.
    fn unload(&self, partition: i32) {
        let of_partition = |group: &str| partition_for(group) == partition;
        self.groups.lock().retain(|group_id, group| {
            if !of_partition(group_id) {
                return true;
            }
            let gone = || BrokerError::NotCoordinator(group_id.clone());
            for member in group.members.values_mut() {
                if let Some(waiter) = member.join_waiter.take() {
                    let _ = waiter.send(Err(gone()));
                }
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(Err(gone()));
                }
            }
            false
        });
        self.metadata_changes
            .lock()
            .retain(|(group, _)| !of_partition(group));
        self.offsets.drop_groups(of_partition);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::group::offsets::{self, committed_for_tests as committed};
    use crate::group::{JoinRequest, JoinStarted};
    use crate::BrokerConfig;

    fn join_request(member_id: &str) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::new())],
            session_timeout: Duration::from_secs(60),
            rebalance_timeout: Duration::from_secs(60),
            require_known_member_id: false,
        }
    }

    async fn open() -> (tempfile::TempDir, Arc<Broker>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(dir.path());
        config.group_initial_rebalance_delay = Duration::ZERO;
        let broker = Broker::open(config).await.expect("open");
        broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
        (dir, broker)
    }

    async fn wait_loaded(broker: &Broker, partition: i32) {
        for _ in 0..500 {
            if broker.groups.hosted.loaded_for_tests().get(&partition) == Some(&true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("partition {partition} did not load");
    }

    /// Goal: ceasing to lead an offsets partition drops its groups (members waiting for a
    /// rebalance are answered NOT_COORDINATOR) and its offsets; leading it again loads them
    /// back from the log: the offsets committed and the group as its last record stored it.
    /// Method (on one broker, the partition's log standing for a replica's): offsets are
    /// committed, a member joins and syncs (the group's record is written), offsets are
    /// committed again, a second member
    /// joins and waits for the first to rejoin; then the role goes to follower and back.
    #[tokio::test]
    async fn unloading_drops_the_partitions_groups_and_loading_reads_them_back() {
        let (_dir, broker) = open().await;
        let groups = &broker.groups;
        // The first commit creates __consumer_offsets on a single node.
        offsets::commit(&broker, "g", vec![("t".into(), 0, committed(5))])
            .await
            .expect("commit");
        let partition = partition_for("g");
        GroupCoordinator::partition_role_changed(&broker, partition, true);
        wait_loaded(&broker, partition).await;
        assert_eq!(groups.committed("g", "t", 0), Some(committed(5)));

        let JoinStarted::Waiting(first) = groups.join(join_request("a")).expect("join") else {
            panic!("a member id was given");
        };
        let joined = first.await.expect("answered").expect("joined");
        let synced = groups
            .sync(
                "g",
                joined.generation,
                "a",
                vec![("a".into(), Bytes::new())],
            )
            .expect("sync");
        offsets::append_group_metadata(&broker)
            .expect("append")
            .expect("a record")
            .settle(&groups.offsets)
            .await
            .expect("stored");
        synced.await.expect("answered").expect("assigned");
        offsets::commit(&broker, "g", vec![("t".into(), 0, committed(6))])
            .await
            .expect("commit");
        let JoinStarted::Waiting(second) = groups.join(join_request("b")).expect("join") else {
            panic!("a member id was given");
        };

        GroupCoordinator::partition_role_changed(&broker, partition, false);
        let answered = second.await.expect("answered");
        assert!(
            matches!(answered, Err(BrokerError::NotCoordinator(_))),
            "{answered:?}"
        );
        assert_eq!(groups.committed("g", "t", 0), None);
        assert_eq!(groups.describe("g").state, "Dead");
        assert!(groups.hosted.loaded_for_tests().is_empty());
        // Nothing of the group is left to write either.
        assert!(!groups.has_metadata_changes());

        GroupCoordinator::partition_role_changed(&broker, partition, true);
        wait_loaded(&broker, partition).await;
        assert_eq!(groups.committed("g", "t", 0), Some(committed(6)));
        let described = groups.describe("g");
        assert_eq!(described.state, "Stable");
        let members: Vec<&str> = described
            .members
            .iter()
            .map(|m| m.member_id.as_str())
            .collect();
        assert_eq!(members, ["a"], "the group as its last record stored it");
    }

    /// A load overtaken by the end of the leadership it was for applies nothing. Method: on a
    /// single-threaded runtime the load cannot start before the unload that follows it.
    #[tokio::test]
    async fn a_load_overtaken_by_an_unload_applies_nothing() {
        let (_dir, broker) = open().await;
        offsets::commit(&broker, "g", vec![("t".into(), 0, committed(5))])
            .await
            .expect("commit");
        let partition = partition_for("g");
        GroupCoordinator::partition_role_changed(&broker, partition, false);
        assert_eq!(
            broker.groups.committed("g", "t", 0),
            Some(committed(5)),
            "was not led"
        );
        GroupCoordinator::partition_role_changed(&broker, partition, true);
        GroupCoordinator::partition_role_changed(&broker, partition, false);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(broker.groups.hosted.loaded_for_tests().is_empty());
        assert_eq!(broker.groups.committed("g", "t", 0), None);
        // Repeated reports of the same role change nothing.
        GroupCoordinator::partition_role_changed(&broker, partition, true);
        GroupCoordinator::partition_role_changed(&broker, partition, true);
        wait_loaded(&broker, partition).await;
        assert_eq!(broker.groups.committed("g", "t", 0), Some(committed(5)));
    }
}
