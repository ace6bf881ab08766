//! The requests a broker in a cluster answers from the cluster's metadata image rather than
//! from its own topics: Metadata, CreateTopics, DeleteTopics, CreatePartitions,
//! AlterConfigs and IncrementalAlterConfigs here, and DescribeConfigs (`configs.rs`, reading
//! topic configs from the image). Any broker answers them, leader of the metadata quorum or
//! not. DeleteRecords and DescribeLogDirs are answered from the broker's local replicas
//! (`admin.rs`).
//!
//! Metadata names every live broker, and for each partition its leader, leader epoch,
//! replicas, in-sync replicas and offline (fenced) replicas; a partition without a leader
//! answers LEADER_NOT_AVAILABLE, so clients retry. An unknown topic that may be auto-created
//! answers LEADER_NOT_AVAILABLE while its creation is proposed in the background, as Kafka does.
//!
//! A change (a topic created, deleted or grown, its configs altered) is checked against this
//! broker's image, exactly as a single node checks it, then proposed as a metadata record; the
//! answer waits until the record is committed and applied here, and each broker's replicas
//! then follow the image (`cluster/node.rs`). `validate_only` checks and proposes nothing. A
//! quorum without a leader, or one that does not answer in time, is REQUEST_TIMED_OUT with a
//! message saying whether the change may still take effect.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::configs::{ConfigResource, TopicConfigChange, TopicSource};
use super::{admin, configs, str_bytes, RequestContext};
use crate::broker::Broker;
use crate::cluster::metadata::{ClusterImage, TopicImage, NO_LEADER};
use crate::cluster::node::ClusterNode;
use crate::cluster::topics::NewTopic;
use crate::error::BrokerError;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::limits::{AUTO_CREATE_TOPICS_PER_REQUEST_MAX, CONFIG_CHANGE_ATTEMPTS_MAX};

pub(super) fn metadata(
    context: &RequestContext,
    node: &Arc<ClusterNode>,
    request: MetadataRequest,
) -> MetadataResponse {
    let image = node.image();
    let allow_create = request.allow_auto_topic_creation || context.version < 4;
    let requested = request
        .topics
        .filter(|topics| context.version > 0 || !topics.is_empty());
    let mut creations_left = AUTO_CREATE_TOPICS_PER_REQUEST_MAX;
    let topics = match requested {
        None => image.topics.values().map(|t| describe(&image, t)).collect(),
        Some(requested) => requested
            .into_iter()
            .filter_map(|t| t.name)
            .map(|name| match image.topics.get(name.as_str()) {
                Some(topic) => describe(&image, topic),
                None => {
                    let auto_create_on = allow_create && context.broker.config.auto_create_topics;
                    let creatable = auto_create_on
                        && !context.broker.config.is_internal_topic(&name)
                        && creations_left > 0;
                    let code = if auto_create_on && name.as_str() == OFFSETS_TOPIC {
                        // Created as the group coordinator creates it, as Kafka does when
                        // Metadata asks for it (Burrow does, before any group exists).
                        crate::GroupCoordinator::ensure_offsets_topic(&context.broker);
                        ResponseError::LeaderNotAvailable.code()
                    } else if creatable {
                        creations_left -= 1;
                        auto_create(&context.broker, node, name.to_string());
                        ResponseError::LeaderNotAvailable.code()
                    } else {
                        ResponseError::UnknownTopicOrPartition.code()
                    };
                    MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_error_code(code)
                }
            })
            .collect(),
    };
    let mut brokers: Vec<MetadataResponseBroker> = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(b.id.into())
                .with_host(str_bytes(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(str_bytes))
        })
        .collect();
    if brokers.is_empty() {
        // Nobody is unfenced yet (the cluster is starting): name this broker, so clients
        // keep a node to ask.
        let config = &context.broker.config;
        brokers.push(
            MetadataResponseBroker::default()
                .with_node_id(config.node_id.into())
                .with_host(str_bytes(config.advertised_host.clone()))
                .with_port(config.advertised_port),
        );
    }
    let controller = node.quorum.leader().map_or(-1, |l| l as i32);
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(context.broker.cluster_id())))
        .with_controller_id(controller.into())
        .with_topics(topics)
}

fn describe(image: &ClusterImage, topic: &TopicImage) -> MetadataResponseTopic {
    let ids = |list: &[i32]| list.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let offline: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| !image.is_live(*r))
                .collect();
            let code = if p.leader == NO_LEADER {
                ResponseError::LeaderNotAvailable.code()
            } else {
                0
            };
            MetadataResponsePartition::default()
                .with_error_code(code)
                .with_partition_index(index as i32)
                .with_leader_id(p.leader.into())
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    let id = uuid::Uuid::parse_str(&topic.id).unwrap_or_default();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.clone()))))
        .with_topic_id(id)
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
}

/// Proposes the creation of an auto-created topic in the background.
fn auto_create(broker: &Arc<Broker>, node: &Arc<ClusterNode>, name: String) {
    let broker = Arc::clone(broker);
    let node = Arc::clone(node);
    tokio::spawn(async move {
        let topic = NewTopic {
            name: &name,
            partitions: -1,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: BTreeMap::new(),
        };
        match node.create_topic(&broker, &topic).await {
            Ok(_) | Err(BrokerError::TopicAlreadyExists(_)) => {}
            Err(e) => tracing::warn!(topic = %name, error = %e, "auto-creation failed"),
        }
    });
}

pub(super) async fn create_topics(
    context: RequestContext,
    node: Arc<ClusterNode>,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let broker = &context.broker;
    let mut results = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let configs = super::metadata::requested_configs(&t);
        let mut assignments: Vec<_> = t.assignments.iter().collect();
        assignments.sort_by_key(|a| a.partition_index);
        let topic = NewTopic {
            name: &t.name,
            partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: assignments
                .iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect(),
            configs,
        };
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        let internal = broker.config.is_internal_topic(&t.name);
        let outcome = if internal {
            Err(BrokerError::InternalTopicAdmin {
                topic: t.name.to_string(),
                action: "create",
            })
        } else if request.validate_only {
            node.plan_topic(broker, &topic).map(|(record, config)| {
                let crate::cluster::metadata::MetadataRecord::CreateTopic {
                    replicas, configs, ..
                } = record
                else {
                    unreachable!("plan_topic plans a CreateTopic");
                };
                (replicas, configs, config, uuid::Uuid::nil())
            })
        } else {
            match node.create_topic(broker, &topic).await {
                Ok(created) => broker.topic_config(&created.configs).map(|config| {
                    let replicas = created
                        .partitions
                        .iter()
                        .map(|p| p.replicas.clone())
                        .collect();
                    let id = uuid::Uuid::parse_str(&created.id).unwrap_or_default();
                    (replicas, created.configs.clone(), config, id)
                }),
                Err(e) => Err(e),
            }
        };
        match outcome {
            Ok((replicas, overrides, config, id)) => {
                let replicas: Vec<Vec<i32>> = replicas;
                result.num_partitions = replicas.len() as i32;
                result.replication_factor = replicas.first().map_or(0, |r| r.len() as i16);
                result.topic_id = id;
                result.configs = Some(configs::created_topic_configs(broker, &config, &overrides));
            }
            Err(e) => {
                result.error_code = e.code();
                result.error_message = Some(str_bytes(e.to_string()));
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub(super) async fn delete_topics(
    context: RequestContext,
    node: Arc<ClusterNode>,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let mut responses = Vec::with_capacity(request.topic_names.len());
    for name in request.topic_names {
        let mut result = DeletableTopicResult::default().with_name(Some(name.clone()));
        let deleted = if context.broker.config.is_internal_topic(&name) {
            Err(BrokerError::InternalTopicAdmin {
                topic: name.to_string(),
                action: "delete",
            })
        } else {
            node.delete_topic(&name).await
        };
        if let Err(e) = deleted {
            result.error_code = e.code();
            result.error_message = Some(str_bytes(e.to_string()));
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) async fn create_partitions(
    context: RequestContext,
    node: Arc<ClusterNode>,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    let mut seen = std::collections::BTreeSet::new();
    for topic in request.topics {
        let outcome = if !seen.insert(topic.name.to_string()) {
            Err(BrokerError::InvalidRequest("Duplicate topic name.".into()))
        } else if context.broker.config.is_internal_topic(&topic.name) {
            Err(BrokerError::InternalTopicAdmin {
                topic: topic.name.to_string(),
                action: "add partitions to",
            })
        } else {
            let assignments = topic
                .assignments
                .iter()
                .flatten()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect();
            node.create_partitions(&topic.name, topic.count, assignments, request.validate_only)
                .await
        };
        results.push(admin::partitions_result(topic.name, outcome));
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub(super) async fn alter_configs(
    context: RequestContext,
    node: Arc<ClusterNode>,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let broker = &context.broker;
    let outcomes = alter_each(
        &node,
        &request.resources,
        request.validate_only,
        |image, r| configs::check_alter_resource(broker, &TopicSource::Image(image), r),
    )
    .await;
    configs::alter_configs_response(request.resources, outcomes)
}

pub(super) async fn incremental_alter_configs(
    context: RequestContext,
    node: Arc<ClusterNode>,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let broker = &context.broker;
    let outcomes = alter_each(
        &node,
        &request.resources,
        request.validate_only,
        |image, r| configs::check_incremental_alter_resource(broker, &TopicSource::Image(image), r),
    )
    .await;
    configs::incremental_alter_configs_response(request.resources, outcomes)
}

/// Alters each resource in turn with [`alter_topic_configs`]; one named twice in the request
/// is refused.
async fn alter_each<R: ConfigResource>(
    node: &ClusterNode,
    resources: &[R],
    validate_only: bool,
    check: impl Fn(&ClusterImage, &R) -> Result<Option<TopicConfigChange>, BrokerError>,
) -> Vec<Result<(), BrokerError>> {
    let mut outcomes = Vec::with_capacity(resources.len());
    for resource in configs::named_once(resources) {
        outcomes.push(match resource {
            Ok(resource) => {
                alter_topic_configs(node, |image| check(image, resource), validate_only).await
            }
            Err(e) => Err(e),
        });
    }
    outcomes
}

/// Checks a resource's change against the current image with `check` and, unless
/// `validate_only`, proposes it and answers once it is committed.
///
/// A replacement (AlterConfigs) applies whatever the topic's overrides were. An incremental
/// change is computed from them, and its record applies only if they still hold; after each
/// proposal it is computed again on the newer image: once that computes to no change, the
/// topic has what was asked (the record applied, perhaps followed by other changes), else it
/// lost to a concurrent change and is proposed again, after a short random pause, at most
/// [`CONFIG_CHANGE_ATTEMPTS_MAX`] times. SET, DELETE, APPEND and SUBTRACT give the same result
/// applied twice, so a change is never applied in a way the client did not ask for.
async fn alter_topic_configs(
    node: &ClusterNode,
    check: impl Fn(&ClusterImage) -> Result<Option<TopicConfigChange>, BrokerError>,
    validate_only: bool,
) -> Result<(), BrokerError> {
    let mut name = String::new();
    for attempt in 0..=CONFIG_CHANGE_ATTEMPTS_MAX {
        let Some(change) = check(&node.image())? else {
            return Ok(());
        };
        if validate_only {
            return Ok(());
        }
        if attempt > 0 {
            if change.previous.as_ref() == Some(&change.overrides) {
                return Ok(());
            }
            if attempt == CONFIG_CHANGE_ATTEMPTS_MAX {
                break;
            }
            let pause_ms = rand::random_range(0..=CONFIG_CHANGE_PAUSE_MS * attempt as u64);
            tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
        }
        name = change.name;
        let replaces = change.previous.is_none();
        node.alter_topic_configs(&name, &change.id, change.overrides, change.previous)
            .await?;
        if replaces {
            return Ok(());
        }
    }
    Err(BrokerError::MetadataNotConfirmed(format!(
        "the configs of topic '{name}' changed concurrently {CONFIG_CHANGE_ATTEMPTS_MAX} times \
         before this change could apply (the topic does not have the asked configs now: \
         describe them and retry)"
    )))
}

/// The pause before proposing an incremental config change again grows by up to this much at
/// each attempt, so that brokers changing the same topic's configs spread out.
const CONFIG_CHANGE_PAUSE_MS: u64 = 10;
