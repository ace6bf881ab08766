//! Topic administration in a cluster: every change is a record of the metadata log.
//!
//! A topic is created by proposing a `CreateTopic` record with the replicas placed by Kafka's
//! rack-aware assignment (or the client's own assignment); the call returns once the record is
//! applied on this node, and each broker then opens its replicas when its image shows them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::metadata::{assign_replicas, MetadataRecord, TopicImage};
use super::node::ClusterNode;
use crate::broker::{validate_topic_name, Broker};
use crate::config::TopicConfig;
use crate::error::{BrokerError, Result};
use crate::limits::PARTITIONS_MAX;

/// What a topic creation asks for.
pub struct NewTopic<'a> {
    pub name: &'a str,
    /// -1: the broker default.
    pub partitions: i32,
    /// -1: `default.replication.factor`.
    pub replication_factor: i16,
    /// Explicit replica lists, one per partition (then partitions and factor are -1).
    pub assignments: Vec<Vec<i32>>,
    pub configs: BTreeMap<String, String>,
}

impl ClusterNode {
    /// Checks a new topic and places its replicas: the record to propose and the topic's
    /// config. Nothing is changed.
    pub fn plan_topic(
        &self,
        broker: &Broker,
        topic: &NewTopic,
    ) -> Result<(MetadataRecord, TopicConfig)> {
        validate_topic_name(topic.name)?;
        let image = self.image();
        if image.topics.contains_key(topic.name) {
            return Err(BrokerError::TopicAlreadyExists(topic.name.to_string()));
        }
        let config = broker.topic_config(&topic.configs)?;
        let configs = config.canonical_overrides(&topic.configs);
        let live = image.live_brokers_with_racks();
        let replicas = if topic.assignments.is_empty() {
            let partitions = match topic.partitions {
                -1 => broker.config.default_partitions,
                n => n,
            };
            if !(1..=PARTITIONS_MAX).contains(&partitions) {
                return Err(BrokerError::InvalidPartitions(partitions));
            }
            broker.check_request_partitions(partitions.into())?;
            let factor = match topic.replication_factor {
                -1 => self.config.default_replication_factor,
                n => n,
            };
            if factor < 1 || factor as usize > live.len() {
                return Err(BrokerError::ReplicationFactorTooLarge {
                    requested: factor,
                    brokers: live.len(),
                });
            }
            let start = rand::random_range(0..live.len());
            assign_replicas(&live, 0..partitions, factor as usize, start)
        } else {
            for replicas in &topic.assignments {
                let mut seen = std::collections::BTreeSet::new();
                for id in replicas {
                    if !image.brokers.contains_key(id) || !seen.insert(*id) {
                        return Err(BrokerError::InvalidReplicaAssignment(format!(
                            "replica list {replicas:?} names an unknown broker or one twice"
                        )));
                    }
                }
            }
            topic.assignments.clone()
        };
        let record = MetadataRecord::CreateTopic {
            name: topic.name.to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            configs,
            replicas,
        };
        Ok((record, config))
    }

    /// Creates a topic: returns it as the image holds it once created.
    pub async fn create_topic(&self, broker: &Broker, topic: &NewTopic<'_>) -> Result<TopicImage> {
        let (record, _) = self.plan_topic(broker, topic)?;
        let MetadataRecord::CreateTopic { id, .. } = &record else {
            unreachable!("plan_topic plans a CreateTopic");
        };
        let id = id.clone();
        self.propose(&record).await?;
        match self.image().topics.get(topic.name) {
            Some(created) if created.id == id => Ok(created.clone()),
            _ => Err(BrokerError::TopicAlreadyExists(topic.name.to_string())),
        }
    }

    /// Grows topic `name` to `count` partitions, placing the new ones as a new topic's (or as
    /// `assignments` say); with `validate_only`, only checks.
    pub async fn create_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Vec<Vec<i32>>,
        validate_only: bool,
    ) -> Result<()> {
        let image = self.image();
        let topic = image.topic(name)?;
        let current = topic.partitions.len() as i32;
        if count <= current {
            return Err(BrokerError::PartitionCountNotIncreased {
                topic: name.to_string(),
                current,
                requested: count,
            });
        }
        if count > PARTITIONS_MAX {
            return Err(BrokerError::InvalidPartitions(count));
        }
        let factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
        let replicas = if assignments.is_empty() {
            let live = image.live_brokers_with_racks();
            if factor > live.len() {
                return Err(BrokerError::ReplicationFactorTooLarge {
                    requested: factor as i16,
                    brokers: live.len(),
                });
            }
            assign_replicas(&live, current..count, factor, 0)
        } else {
            let known = assignments
                .iter()
                .all(|r| r.len() == factor && r.iter().all(|id| image.brokers.contains_key(id)));
            if assignments.len() != (count - current) as usize || !known {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "{} new partition(s) need as many replica lists of {factor} known brokers",
                    count - current
                )));
            }
            assignments
        };
        if validate_only {
            return Ok(());
        }
        let record = MetadataRecord::CreatePartitions {
            name: name.to_string(),
            replicas,
        };
        self.propose(&record).await?;
        Ok(())
    }

    /// Replaces topic `name`'s config overrides with `configs` (already checked) if the topic
    /// is still the one with `id` and, when `previous` is given, its overrides are still those.
    /// Returns once the record is applied here; whether it changed the configs is for the
    /// caller to read from the image. UNKNOWN_TOPIC_OR_PARTITION if the topic is gone.
    pub async fn alter_topic_configs(
        &self,
        name: &str,
        id: &str,
        configs: BTreeMap<String, String>,
        previous: Option<BTreeMap<String, String>>,
    ) -> Result<()> {
        let record = MetadataRecord::AlterConfigs {
            name: name.to_string(),
            configs,
            id: Some(id.to_string()),
            previous,
        };
        self.propose(&record).await?;
        if self.image().topic(name)?.id != id {
            // Deleted and created again meanwhile: the topic that was asked about is gone.
            return Err(BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            });
        }
        Ok(())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        let id = self.image().topic(name)?.id.clone();
        let record = MetadataRecord::DeleteTopic {
            name: name.to_string(),
            id,
        };
        self.propose(&record).await?;
        Ok(())
    }

    /// Hands out a producer id unique across the cluster, from blocks recorded in the
    /// metadata log.
    pub async fn allocate_producer_id(&self) -> Result<i64> {
        loop {
            {
                let mut block = self.producer_ids.lock();
                if block.0 < block.1 {
                    block.0 += 1;
                    return Ok(block.0 - 1);
                }
            }
            let me = self.config.node_id;
            let record = MetadataRecord::AllocateProducerIds {
                broker: me,
                size: PRODUCER_ID_BLOCK_SIZE,
            };
            let index = self.propose(&record).await?;
            let image = self.image();
            if image.applied_index >= index {
                if let Some(&(start, end)) = image.producer_id_blocks.get(&me) {
                    let mut block = self.producer_ids.lock();
                    if block.1 < end {
                        *block = (start, end);
                    }
                }
            }
        }
    }
}

/// Producer ids a broker takes from the cluster at once.
const PRODUCER_ID_BLOCK_SIZE: i64 = 1_000;

/// In a cluster: whether the internal topic `name` (`__consumer_offsets`,
/// `__transaction_state`) exists; if not, proposes its creation in the background, one at a
/// time (`creating` picks the flag that says one is under way), replicated
/// `default.replication.factor` times with `configs`. Until it exists, FindCoordinator answers
/// COORDINATOR_NOT_AVAILABLE and clients retry. Always true on a single node.
pub(crate) fn ensure_internal_topic(
    broker: &Arc<Broker>,
    name: &'static str,
    partitions: i32,
    configs: BTreeMap<String, String>,
    creating: fn(&Broker) -> &AtomicBool,
) -> bool {
    let Some(node) = broker.cluster() else {
        return true;
    };
    if node.image().topics.contains_key(name) {
        return true;
    }
    if creating(broker).swap(true, Ordering::SeqCst) {
        return false;
    }
    let broker = Arc::clone(broker);
    let node = Arc::clone(node);
    tokio::spawn(async move {
        let topic = NewTopic {
            name,
            partitions,
            replication_factor: -1,
            assignments: Vec::new(),
            configs,
        };
        match node.create_topic(&broker, &topic).await {
            Ok(_) => tracing::info!("created {name}"),
            Err(BrokerError::TopicAlreadyExists(_)) => {}
            Err(e) => tracing::warn!(error = %e, "could not create {name} yet"),
        }
        creating(&broker).store(false, Ordering::SeqCst);
    });
    false
}
