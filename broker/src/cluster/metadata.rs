//! The cluster's metadata: the records of the replicated metadata log and the image they build.
//!
//! Every node applies the same committed records in the same order ([`ClusterImage::apply`]),
//! so every node holds the same image: the brokers and whether they are fenced, the topics, and
//! for each partition its replicas, leader, leader epoch, in-sync replicas and partition epoch.
//! This is KRaft's model (`__cluster_metadata` replayed into a `MetadataImage`).
//!
//! Application is deterministic and total: a record whose preconditions no longer hold (an ISR
//! change computed against an older partition epoch, a topic created twice) changes nothing, so
//! a record proposed by any node on a stale view is harmless. Whoever proposed it reads the
//! outcome from its own image once the record is applied there.
//!
//! Leader election lives here too, so that fencing a broker and electing new leaders for its
//! partitions is one record, applied alike everywhere: a new leader is the first replica, in
//! replica order, that is in the in-sync set and not fenced; with
//! `unclean.leader.election.enable=true` on the topic, the first unfenced replica when no
//! in-sync one is left. Every leader change bumps the leader epoch; every change of leader or
//! in-sync set bumps the partition epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// No leader: the partition is offline until an in-sync replica returns.
pub const NO_LEADER: i32 = -1;

/// The topic config that allows an out-of-sync replica to lead (losing acknowledged records).
pub const UNCLEAN_ELECTION_CONFIG: &str = "unclean.leader.election.enable";

/// One record of the metadata log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// A broker started (a new incarnation). It stays fenced until it asks to be unfenced; a
    /// new incarnation of a known broker is fenced first: its memory of replication is gone.
    RegisterBroker {
        id: i32,
        incarnation: String,
        host: String,
        port: i32,
        rack: Option<String>,
    },
    /// The broker missed its session (or shut down): it leaves every in-sync set it is not the
    /// last member of, and its partitions get new leaders.
    FenceBroker {
        id: i32,
        incarnation: String,
    },
    /// The broker is alive and caught up with the metadata log: it may lead again.
    UnfenceBroker {
        id: i32,
        incarnation: String,
    },
    CreateTopic {
        name: String,
        id: String,
        configs: BTreeMap<String, String>,
        /// Replica lists, one per partition; the first replica is the preferred leader.
        replicas: Vec<Vec<i32>>,
    },
    DeleteTopic {
        name: String,
        id: String,
    },
    /// New partitions appended to a topic.
    CreatePartitions {
        name: String,
        replicas: Vec<Vec<i32>>,
    },
    /// Replaces a topic's config overrides, if the topic is still the one with `id` and, when
    /// `previous` is given, its overrides are still those (an incremental change computed from
    /// them). Both are absent from records written before they existed.
    AlterConfigs {
        name: String,
        configs: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous: Option<BTreeMap<String, String>>,
    },
    /// A leader's change of its in-sync set (Kafka's AlterPartition), fenced by both epochs.
    AlterPartition {
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Moves leadership back to the preferred replica when it is in sync and unfenced.
    ElectPreferredLeader {
        topic: String,
        partition: i32,
    },
    /// Hands a block of producer ids to a broker (ids are unique across the cluster).
    AllocateProducerIds {
        broker: i32,
        size: i64,
    },
    /// Names the cluster, once: the first active controller proposes it.
    InitializeCluster {
        id: String,
    },
}

impl MetadataRecord {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata records always serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerImage {
    pub id: i32,
    pub incarnation: String,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub fenced: bool,
    /// The index of the record that registered this incarnation: the broker is unfenced once
    /// it has applied the metadata log up to it.
    pub registered_at: u64,
}

/// One partition's replication state.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionImage {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

/// A topic.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicImage {
    pub name: String,
    pub id: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionImage>,
}

impl TopicImage {
    fn unclean_election(&self) -> bool {
        self.configs
            .get(UNCLEAN_ELECTION_CONFIG)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// The state the metadata log describes, as of `applied_index`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterImage {
    /// The index of the last record applied.
    pub applied_index: u64,
    pub brokers: BTreeMap<i32, BrokerImage>,
    pub topics: BTreeMap<String, TopicImage>,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
    /// The last block of producer ids handed to each broker: [start, end).
    pub producer_id_blocks: BTreeMap<i32, (i64, i64)>,
    /// The cluster's id (Kafka's `cluster.id`), once named.
    pub cluster_id: Option<String>,
}

impl ClusterImage {
    /// Topic `name`, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn topic(&self, name: &str) -> crate::error::Result<&TopicImage> {
        self.topics
            .get(name)
            .ok_or_else(|| crate::error::BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            })
    }

    /// Applies one committed record. Records that no longer apply change nothing.
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) {
        assert!(
            index > self.applied_index,
            "metadata records apply in order"
        );
        self.applied_index = index;
        match record {
            MetadataRecord::RegisterBroker {
                id,
                incarnation,
                host,
                port,
                rack,
            } => self.register_broker(index, *id, incarnation, (host, *port), rack),
            MetadataRecord::FenceBroker { id, incarnation } => {
                if self.is_incarnation(*id, incarnation) {
                    self.fence(*id);
                }
            }
            MetadataRecord::UnfenceBroker { id, incarnation } => {
                if self.is_incarnation(*id, incarnation) {
                    self.unfence(*id);
                }
            }
            MetadataRecord::CreateTopic {
                name,
                id,
                configs,
                replicas,
            } => self.create_topic(name, id, configs, replicas),
            MetadataRecord::DeleteTopic { name, id } => {
                if self.topics.get(name).is_some_and(|t| &t.id == id) {
                    self.topics.remove(name);
                }
            }
            MetadataRecord::CreatePartitions { name, replicas } => {
                let brokers = self.brokers.clone();
                if let Some(topic) = self.topics.get_mut(name) {
                    let added = replicas.iter().map(|r| new_partition(r, &brokers));
                    topic.partitions.extend(added);
                }
            }
            MetadataRecord::AlterConfigs {
                name,
                configs,
                id,
                previous,
            } => self.alter_configs(name, configs, id.as_deref(), previous.as_ref()),
            MetadataRecord::AlterPartition {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => self.alter_partition(
                topic,
                *partition,
                (*leader, *leader_epoch, *partition_epoch),
                isr,
            ),
            MetadataRecord::ElectPreferredLeader { topic, partition } => {
                self.elect_preferred(topic, *partition)
            }
            MetadataRecord::InitializeCluster { id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(id.clone());
                }
            }
            MetadataRecord::AllocateProducerIds { broker, size } => {
                let start = self.next_producer_id;
                let end = start.saturating_add((*size).max(1));
                self.next_producer_id = end;
                self.producer_id_blocks.insert(*broker, (start, end));
            }
        }
    }

    /// The unfenced brokers and their racks, for replica placement.
    pub fn live_brokers_with_racks(&self) -> Vec<(i32, Option<String>)> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| (b.id, b.rack.clone()))
            .collect()
    }

    /// Whether `id` is registered and unfenced.
    pub fn is_live(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// One partition, if it exists.
    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionImage> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(index).ok()?)
    }

    fn is_incarnation(&self, id: i32, incarnation: &str) -> bool {
        self.brokers
            .get(&id)
            .is_some_and(|b| b.incarnation == incarnation)
    }

    fn register_broker(
        &mut self,
        index: u64,
        id: i32,
        incarnation: &str,
        (host, port): (&str, i32),
        rack: &Option<String>,
    ) {
        if let Some(broker) = self.brokers.get_mut(&id) {
            if broker.incarnation == incarnation {
                // The same incarnation moved (a new address): keep its state.
                broker.host = host.to_string();
                broker.port = port;
                return;
            }
        }
        // A restarted broker has lost its followers' progress and maybe its unflushed tail:
        // it leads nothing until it has rejoined.
        if self.brokers.contains_key(&id) {
            self.fence(id);
        }
        self.brokers.insert(
            id,
            BrokerImage {
                id,
                incarnation: incarnation.to_string(),
                host: host.to_string(),
                port,
                rack: rack.clone(),
                fenced: true,
                registered_at: index,
            },
        );
    }

    fn fence(&mut self, id: i32) {
        let Some(broker) = self.brokers.get_mut(&id) else {
            return;
        };
        broker.fenced = true;
        let live = self.live_brokers();
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election();
            for partition in &mut topic.partitions {
                if !partition.replicas.contains(&id) {
                    continue;
                }
                let before = partition.clone();
                // The last in-sync replica stays in the set: it holds every acknowledged record,
                // and is the one to lead when it comes back.
                if partition.isr.len() > 1 {
                    partition.isr.retain(|r| *r != id);
                }
                if partition.leader == id {
                    partition.elect(&live, unclean);
                }
                partition.bump_if_changed(&before);
            }
        }
    }

    fn unfence(&mut self, id: i32) {
        let Some(broker) = self.brokers.get_mut(&id) else {
            return;
        };
        broker.fenced = false;
        let live = self.live_brokers();
        for topic in self.topics.values_mut() {
            let unclean = topic.unclean_election();
            for partition in &mut topic.partitions {
                if partition.leader == NO_LEADER && partition.replicas.contains(&id) {
                    let before = partition.clone();
                    partition.elect(&live, unclean);
                    partition.bump_if_changed(&before);
                }
            }
        }
    }

    fn live_brokers(&self) -> Vec<i32> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    fn create_topic(
        &mut self,
        name: &str,
        id: &str,
        configs: &BTreeMap<String, String>,
        replicas: &[Vec<i32>],
    ) {
        if self.topics.contains_key(name) {
            return;
        }
        let partitions = replicas
            .iter()
            .map(|r| new_partition(r, &self.brokers))
            .collect();
        let topic = TopicImage {
            name: name.to_string(),
            id: id.to_string(),
            configs: configs.clone(),
            partitions,
        };
        self.topics.insert(name.to_string(), topic);
    }

    fn alter_configs(
        &mut self,
        name: &str,
        configs: &BTreeMap<String, String>,
        id: Option<&str>,
        previous: Option<&BTreeMap<String, String>>,
    ) {
        let Some(topic) = self.topics.get_mut(name) else {
            return;
        };
        let same_topic = id.is_none_or(|id| id == topic.id);
        let unchanged = previous.is_none_or(|previous| *previous == topic.configs);
        if same_topic && unchanged {
            topic.configs = configs.clone();
        }
    }

    fn alter_partition(
        &mut self,
        topic: &str,
        index: i32,
        (leader, leader_epoch, partition_epoch): (i32, i32, i32),
        isr: &[i32],
    ) {
        let live = self.live_brokers();
        let Some(partition) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(usize::try_from(index).ok()?))
        else {
            return;
        };
        let current = partition.leader == leader
            && partition.leader_epoch == leader_epoch
            && partition.partition_epoch == partition_epoch;
        let valid = isr.contains(&leader)
            && isr.iter().all(|r| partition.replicas.contains(r))
            && isr
                .iter()
                .all(|r| partition.isr.contains(r) || live.contains(r));
        // A current request is decided once, taken or refused: either way it spends the
        // partition epoch, so that a copy of it committed later (a proposal whose proposer gave
        // up waiting is proposed again, and the first may still commit) is stale, and the
        // leader learns the outcome from the epoch moving on.
        if current {
            if valid {
                partition.isr = isr.to_vec();
            }
            partition.partition_epoch += 1;
        }
    }

    fn elect_preferred(&mut self, topic: &str, index: i32) {
        let live = self.live_brokers();
        let Some(partition) = self
            .topics
            .get_mut(topic)
            .and_then(|t| t.partitions.get_mut(usize::try_from(index).ok()?))
        else {
            return;
        };
        let Some(&preferred) = partition.replicas.first() else {
            return;
        };
        if partition.leader != preferred
            && partition.isr.contains(&preferred)
            && live.contains(&preferred)
        {
            partition.leader = preferred;
            partition.leader_epoch += 1;
            partition.partition_epoch += 1;
        }
    }
}

impl PartitionImage {
    /// Picks a new leader (see the module doc); [`NO_LEADER`] when none may lead.
    fn elect(&mut self, live: &[i32], unclean: bool) {
        let in_sync = self
            .replicas
            .iter()
            .find(|r| self.isr.contains(r) && live.contains(r));
        if let Some(&leader) = in_sync {
            self.leader = leader;
            return;
        }
        match self.replicas.iter().find(|r| live.contains(r)) {
            Some(&leader) if unclean => {
                self.leader = leader;
                self.isr = vec![leader];
            }
            _ => self.leader = NO_LEADER,
        }
    }

    fn bump_if_changed(&mut self, before: &PartitionImage) {
        if self.leader != before.leader {
            self.leader_epoch += 1;
        }
        if self.leader != before.leader || self.isr != before.isr {
            self.partition_epoch += 1;
        }
    }

    /// The preferred leader: the first replica.
    pub fn preferred_leader(&self) -> Option<i32> {
        self.replicas.first().copied()
    }
}

/// A new partition: every replica in sync (it is empty), led by the first unfenced one.
fn new_partition(replicas: &[i32], brokers: &BTreeMap<i32, BrokerImage>) -> PartitionImage {
    let live: Vec<i32> = brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| b.id)
        .collect();
    let mut partition = PartitionImage {
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        leader: NO_LEADER,
        leader_epoch: 0,
        partition_epoch: 0,
    };
    partition.elect(&live, false);
    partition
}

/// Kafka's replica placement: brokers ordered so that racks alternate, then partition `p`'s
/// replicas are `replication_factor` consecutive brokers of that order starting at `p` (shifted
/// by `start`), so leaders spread evenly and, with at least `replication_factor` racks, the
/// replicas of a partition sit on different racks.
pub fn assign_replicas(
    brokers: &[(i32, Option<String>)],
    partitions: std::ops::Range<i32>,
    replication_factor: usize,
    start: usize,
) -> Vec<Vec<i32>> {
    let order = rack_alternated(brokers);
    let count = order.len();
    partitions
        .map(|p| {
            let first = (p as usize + start) % count.max(1);
            (0..replication_factor.min(count))
                .map(|j| order[(first + j) % count])
                .collect()
        })
        .collect()
}

/// Brokers sorted by id within each rack, then taken one rack at a time in turn.
fn rack_alternated(brokers: &[(i32, Option<String>)]) -> Vec<i32> {
    let mut racks: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for (id, rack) in brokers {
        racks.entry(rack.as_deref()).or_default().push(*id);
    }
    for ids in racks.values_mut() {
        ids.sort_unstable();
    }
    let longest = racks.values().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| racks.values().filter_map(move |ids| ids.get(i).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(image: &mut ClusterImage, index: &mut u64, id: i32, incarnation: &str) {
        let record = MetadataRecord::RegisterBroker {
            id,
            incarnation: incarnation.into(),
            host: "127.0.0.1".into(),
            port: 9000 + id,
            rack: None,
        };
        *index += 1;
        image.apply(*index, &record);
        *index += 1;
        image.apply(
            *index,
            &MetadataRecord::UnfenceBroker {
                id,
                incarnation: incarnation.into(),
            },
        );
    }

    fn three_brokers_one_topic() -> (ClusterImage, u64) {
        let mut image = ClusterImage::default();
        let mut index = 0;
        for id in 1..=3 {
            register(&mut image, &mut index, id, "a");
        }
        index += 1;
        image.apply(
            index,
            &MetadataRecord::CreateTopic {
                name: "t".into(),
                id: "id".into(),
                configs: BTreeMap::new(),
                replicas: vec![vec![1, 2, 3], vec![2, 3, 1]],
            },
        );
        (image, index)
    }

    /// Records survive their encoding: the metadata log stores them as bytes.
    #[test]
    fn records_round_trip() {
        let record = MetadataRecord::AlterPartition {
            topic: "t".into(),
            partition: 3,
            leader: 1,
            leader_epoch: 4,
            partition_epoch: 9,
            isr: vec![1, 2],
        };
        let decoded = MetadataRecord::decode(&record.encode()).expect("decodes");
        assert_eq!(decoded, record);
    }

    /// Fencing the leader elects the next in-sync replica, bumps both epochs, and shrinks the
    /// in-sync set; fencing the rest keeps the last in-sync replica in the set, leaderless.
    #[test]
    fn fencing_elects_from_the_in_sync_set_and_keeps_the_last_member() {
        let (mut image, mut index) = three_brokers_one_topic();
        let p0 = image.partition("t", 0).expect("p0").clone();
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.isr.clone()),
            (1, 0, vec![1, 2, 3])
        );
        let fence = |id: i32| MetadataRecord::FenceBroker {
            id,
            incarnation: "a".into(),
        };
        index += 1;
        image.apply(index, &fence(1));
        let p0 = image.partition("t", 0).expect("p0");
        assert_eq!(
            (p0.leader, p0.leader_epoch, p0.isr.clone()),
            (2, 1, vec![2, 3])
        );
        assert_eq!(p0.partition_epoch, 1);
        index += 1;
        image.apply(index, &fence(2));
        index += 1;
        image.apply(index, &fence(3));
        let p0 = image.partition("t", 0).expect("p0");
        assert_eq!((p0.leader, p0.isr.clone()), (NO_LEADER, vec![3]));
        // Broker 1 comes back first: it is not in sync, so it may not lead.
        index += 1;
        image.apply(
            index,
            &MetadataRecord::UnfenceBroker {
                id: 1,
                incarnation: "a".into(),
            },
        );
        assert_eq!(image.partition("t", 0).expect("p0").leader, NO_LEADER);
        index += 1;
        image.apply(
            index,
            &MetadataRecord::UnfenceBroker {
                id: 3,
                incarnation: "a".into(),
            },
        );
        let p0 = image.partition("t", 0).expect("p0");
        assert_eq!(
            (p0.leader, p0.leader_epoch),
            (3, 4),
            "epochs 1, 2, 3 went to 2, 3, none"
        );
    }

    /// With unclean election on, a live out-of-sync replica leads when no in-sync one is left.
    #[test]
    fn unclean_election_takes_any_live_replica() {
        let (mut image, mut index) = three_brokers_one_topic();
        image
            .topics
            .get_mut("t")
            .expect("t")
            .configs
            .insert(UNCLEAN_ELECTION_CONFIG.into(), "true".into());
        for id in [1, 2, 3] {
            index += 1;
            image.apply(
                index,
                &MetadataRecord::FenceBroker {
                    id,
                    incarnation: "a".into(),
                },
            );
        }
        index += 1;
        image.apply(
            index,
            &MetadataRecord::UnfenceBroker {
                id: 1,
                incarnation: "a".into(),
            },
        );
        let p0 = image.partition("t", 0).expect("p0");
        assert_eq!((p0.leader, p0.isr.clone()), (1, vec![1]));
    }

    /// An ISR change from a stale leader epoch or partition epoch changes nothing; a current
    /// one applies; a replica that is fenced cannot be added.
    #[test]
    fn alter_partition_is_fenced_by_epochs() {
        let (mut image, mut index) = three_brokers_one_topic();
        let alter = |leader_epoch, partition_epoch, isr: Vec<i32>| MetadataRecord::AlterPartition {
            topic: "t".into(),
            partition: 0,
            leader: 1,
            leader_epoch,
            partition_epoch,
            isr,
        };
        index += 1;
        image.apply(index, &alter(0, 0, vec![1, 2]));
        assert_eq!(image.partition("t", 0).expect("p0").isr, [1, 2]);
        index += 1;
        image.apply(index, &alter(0, 0, vec![1]));
        assert_eq!(
            image.partition("t", 0).expect("p0").isr,
            [1, 2],
            "stale epoch"
        );
        index += 1;
        image.apply(
            index,
            &MetadataRecord::FenceBroker {
                id: 3,
                incarnation: "a".into(),
            },
        );
        let epoch = image.partition("t", 0).expect("p0").partition_epoch;
        index += 1;
        image.apply(index, &alter(0, epoch, vec![1, 2, 3]));
        assert_eq!(
            image.partition("t", 0).expect("p0").isr,
            [1, 2],
            "3 is fenced"
        );
    }

    /// A restarted broker (new incarnation) is fenced at registration: it leads nothing until
    /// it is unfenced, and the preferred leader comes back once it is in sync again.
    #[test]
    fn a_new_incarnation_is_fenced_until_unfenced_and_then_preferred() {
        let (mut image, mut index) = three_brokers_one_topic();
        index += 1;
        image.apply(
            index,
            &MetadataRecord::RegisterBroker {
                id: 1,
                incarnation: "b".into(),
                host: "h".into(),
                port: 1,
                rack: None,
            },
        );
        let p0 = image.partition("t", 0).expect("p0").clone();
        assert_eq!((p0.leader, p0.isr.clone()), (2, vec![2, 3]));
        assert!(!image.is_live(1));
        index += 1;
        image.apply(
            index,
            &MetadataRecord::UnfenceBroker {
                id: 1,
                incarnation: "a".into(),
            },
        );
        assert!(!image.is_live(1), "an old incarnation's unfence is ignored");
        index += 1;
        image.apply(
            index,
            &MetadataRecord::UnfenceBroker {
                id: 1,
                incarnation: "b".into(),
            },
        );
        index += 1;
        image.apply(
            index,
            &MetadataRecord::ElectPreferredLeader {
                topic: "t".into(),
                partition: 0,
            },
        );
        assert_eq!(
            image.partition("t", 0).expect("p0").leader,
            2,
            "1 not in sync"
        );
        index += 1;
        image.apply(
            index,
            &MetadataRecord::AlterPartition {
                topic: "t".into(),
                partition: 0,
                leader: 2,
                leader_epoch: p0.leader_epoch,
                partition_epoch: p0.partition_epoch,
                isr: vec![2, 3, 1],
            },
        );
        index += 1;
        image.apply(
            index,
            &MetadataRecord::ElectPreferredLeader {
                topic: "t".into(),
                partition: 0,
            },
        );
        let p0 = image.partition("t", 0).expect("p0");
        assert_eq!((p0.leader, p0.leader_epoch), (1, 2));
    }

    /// A config change applies to the topic it was computed for: not to a topic of the same
    /// name created since (another id), and, when it names the overrides it was computed from,
    /// only while they still hold. Records of older versions, without either, decode and apply.
    #[test]
    fn alter_configs_applies_only_to_its_topic_and_its_base() {
        let (mut image, mut index) = three_brokers_one_topic();
        let configs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let alter = |new: &[(&str, &str)], id: &str, previous: Option<&[(&str, &str)]>| {
            MetadataRecord::AlterConfigs {
                name: "t".into(),
                configs: configs(new),
                id: Some(id.into()),
                previous: previous.map(configs),
            }
        };
        index += 1;
        image.apply(index, &alter(&[("retention.ms", "1")], "other id", None));
        assert!(
            image.topics["t"].configs.is_empty(),
            "another topic's change"
        );
        index += 1;
        image.apply(index, &alter(&[("retention.ms", "1")], "id", Some(&[])));
        assert_eq!(image.topics["t"].configs, configs(&[("retention.ms", "1")]));
        index += 1;
        image.apply(index, &alter(&[("flush.ms", "2")], "id", Some(&[])));
        assert_eq!(
            image.topics["t"].configs,
            configs(&[("retention.ms", "1")]),
            "computed from overrides that no longer hold"
        );
        index += 1;
        image.apply(index, &alter(&[("flush.ms", "2")], "id", None));
        assert_eq!(image.topics["t"].configs, configs(&[("flush.ms", "2")]));
        let old = br#"{"type":"AlterConfigs","name":"t","configs":{"segment.ms":"3"}}"#;
        let decoded = MetadataRecord::decode(old).expect("an older record decodes");
        index += 1;
        image.apply(index, &decoded);
        assert_eq!(image.topics["t"].configs, configs(&[("segment.ms", "3")]));
        let encoded = String::from_utf8(alter(&[], "id", None).encode()).expect("json");
        assert!(!encoded.contains("previous"), "{encoded}");
    }

    /// Replicas spread over racks and leaders spread over brokers.
    #[test]
    fn assignment_alternates_racks_and_spreads_leaders() {
        let brokers = [
            (1, Some("a".to_string())),
            (2, Some("a".to_string())),
            (3, Some("b".to_string())),
            (4, Some("b".to_string())),
        ];
        let assigned = assign_replicas(&brokers, 0..4, 2, 0);
        let rack = |id: i32| brokers.iter().find(|b| b.0 == id).and_then(|b| b.1.clone());
        for replicas in &assigned {
            assert_eq!(replicas.len(), 2);
            assert_ne!(rack(replicas[0]), rack(replicas[1]), "{assigned:?}");
        }
        let mut leaders: Vec<i32> = assigned.iter().map(|r| r[0]).collect();
        leaders.sort_unstable();
        assert_eq!(leaders, [1, 2, 3, 4]);
    }

    /// Producer id blocks never overlap.
    #[test]
    fn producer_id_blocks_do_not_overlap() {
        let mut image = ClusterImage::default();
        image.apply(
            1,
            &MetadataRecord::AllocateProducerIds {
                broker: 1,
                size: 10,
            },
        );
        image.apply(
            2,
            &MetadataRecord::AllocateProducerIds {
                broker: 2,
                size: 10,
            },
        );
        assert_eq!(image.producer_id_blocks[&1], (0, 10));
        assert_eq!(image.producer_id_blocks[&2], (10, 20));
    }
}
