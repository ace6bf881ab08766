//! Metadata, topic creation and deletion (CreateTopics, DeleteTopics).
//!
//! CreateTopics follows Kafka's checks: explicit replica assignments need `num_partitions` and
//! `replication_factor` of -1 and may name only this broker (INVALID_REPLICA_ASSIGNMENT
//! otherwise), and `validate_only` runs every check and creates nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::{admin, configs, str_bytes, RequestContext};
use crate::broker::{Broker, Topic};
use crate::config::TopicConfig;
use crate::error::BrokerError;
use crate::group::offsets::{self, OFFSETS_TOPIC};
use crate::limits::AUTO_CREATE_TOPICS_PER_REQUEST_MAX;

pub(super) fn metadata(context: &RequestContext, request: MetadataRequest) -> MetadataResponse {
    let broker = &context.broker;
    // Before v4 there was no flag and clients expected auto-creation.
    let allow_create = request.allow_auto_topic_creation || context.version < 4;
    let mut creations_left = AUTO_CREATE_TOPICS_PER_REQUEST_MAX;
    // v0 cannot send null: there, an empty list asks for every topic.
    let requested = request
        .topics
        .filter(|topics| context.version > 0 || !topics.is_empty());
    let topics = match requested {
        None => broker.topics().iter().map(|t| describe_topic(t)).collect(),
        Some(requested) => requested
            .into_iter()
            .filter_map(|t| t.name)
            .map(
                |name| match find_or_create(broker, &name, allow_create, &mut creations_left) {
                    Ok(topic) => describe_topic(&topic),
                    Err(code) => MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_error_code(code),
                },
            )
            .collect(),
    };
    let config = &broker.config;
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(config.node_id.into())
            .with_host(str_bytes(config.advertised_host.clone()))
            .with_port(config.advertised_port)])
        .with_cluster_id(Some(str_bytes(broker.cluster_id.clone())))
        .with_controller_id(config.node_id.into())
        .with_topics(topics)
}

/// The topic, auto-created if allowed while `creations_left` lasts; otherwise the error code
/// to answer. Internal topics are never created with broker defaults: `__consumer_offsets` is
/// created as the group coordinator creates it (its partitions, compacted configs), as Kafka's
/// AutoTopicCreationManager does, because tools that read it (Burrow) ask for it before any
/// group has committed; other internal names are the broker's own to create.
fn find_or_create(
    broker: &Broker,
    name: &str,
    allow_create: bool,
    creations_left: &mut usize,
) -> Result<Arc<Topic>, i16> {
    if let Some(topic) = broker.topic(name) {
        return Ok(topic);
    }
    let creatable = allow_create && broker.config.auto_create_topics;
    let offsets_topic = name == OFFSETS_TOPIC;
    if !creatable || (broker.config.is_internal_topic(name) && !offsets_topic) {
        return Err(ResponseError::UnknownTopicOrPartition.code());
    }
    if *creations_left == 0 {
        // Kafka answers LEADER_NOT_AVAILABLE while a topic is being created: clients retry, so
        // one asking for many new topics gets them over a few requests.
        return Err(ResponseError::LeaderNotAvailable.code());
    }
    *creations_left -= 1;
    let created = match offsets_topic {
        true => offsets::offsets_topic(broker),
        false => broker.topic_or_create(name),
    };
    created.map_err(|e| e.code())
}

fn describe_topic(topic: &Topic) -> MetadataResponseTopic {
    let node = 0.into();
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_leader_id(node)
                // -1: Eddy does not expose leader epochs yet, so clients skip KIP-320 checks.
                .with_leader_epoch(-1)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.name.to_string()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
}

pub(super) fn create_topics(
    context: &RequestContext,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let broker = &context.broker;
    let wanted = |t: &CreatableTopic| match (t.num_partitions, t.assignments.len()) {
        (-1, 0) => broker.config.default_partitions,
        (-1, assigned) => i32::try_from(assigned).unwrap_or(i32::MAX),
        (n, _) => n,
    };
    // The cap is on the whole request: either all its topics are considered or none.
    let requested: i64 = request
        .topics
        .iter()
        .map(|t| i64::from(wanted(t).max(0)))
        .sum();
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = wanted(&t);
            let created = match broker.check_request_partitions(requested) {
                Ok(()) => create_one(broker, &t, partitions, request.validate_only),
                Err(e) => Err(e),
            };
            creatable_topic_result(broker, t.name, partitions, created)
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}

/// A created (or, with `validate_only`, validated) topic: what the response describes.
struct Created {
    id: uuid::Uuid,
    config: TopicConfig,
    overrides: BTreeMap<String, String>,
}

/// Creates (or with `validate_only`, checks) one topic of a CreateTopics request. Internal
/// topics are the broker's own: a client may not create one, though asking for one that
/// exists answers TOPIC_ALREADY_EXISTS as usual.
fn create_one(
    broker: &Broker,
    topic: &CreatableTopic,
    partitions: i32,
    validate_only: bool,
) -> Result<Created, BrokerError> {
    let overrides = requested_configs(topic);
    if !topic.assignments.is_empty() {
        check_assignments(broker, topic)?;
    } else if !matches!(topic.replication_factor, -1 | 1) {
        return Err(BrokerError::InvalidReplicationFactor(
            topic.replication_factor,
        ));
    }
    if broker.config.is_internal_topic(&topic.name) && broker.topic(&topic.name).is_none() {
        return Err(BrokerError::InternalTopicAdmin {
            topic: topic.name.to_string(),
            action: "create",
        });
    }
    if validate_only {
        let config = broker.validate_topic_creation(&topic.name, partitions, &overrides)?;
        let overrides = config.canonical_overrides(&overrides);
        return Ok(Created {
            id: uuid::Uuid::nil(),
            config,
            overrides,
        });
    }
    let created = broker.create_topic(&topic.name, partitions, overrides)?;
    Ok(Created {
        id: created.id,
        config: created.config.clone(),
        overrides: created.overrides.clone(),
    })
}

/// The configs a CreateTopics entry sets (those with a value).
pub(super) fn requested_configs(topic: &CreatableTopic) -> BTreeMap<String, String> {
    topic
        .configs
        .iter()
        .filter_map(|c| {
            c.value
                .as_ref()
                .map(|v| (c.name.to_string(), v.to_string()))
        })
        .collect()
}

/// Kafka's checks of a manual assignment: it replaces `num_partitions` and
/// `replication_factor` (both must be -1), names each partition once, 0 to n-1, and each
/// replica list must be exactly this broker.
fn check_assignments(broker: &Broker, topic: &CreatableTopic) -> Result<(), BrokerError> {
    for (field, value) in [
        ("replication factor", topic.replication_factor.into()),
        ("numPartitions", topic.num_partitions),
    ] {
        if value != -1 {
            return Err(BrokerError::InvalidRequest(format!(
                "A manual partition assignment was specified, but {field} was not set to -1."
            )));
        }
    }
    let mut indexes = std::collections::BTreeSet::new();
    for assignment in &topic.assignments {
        if !indexes.insert(assignment.partition_index) {
            return Err(BrokerError::InvalidReplicaAssignment(format!(
                "Found multiple manual partition assignments for partition {}",
                assignment.partition_index
            )));
        }
        admin::check_replicas(broker, &assignment.broker_ids)?;
    }
    if !indexes.iter().copied().eq(0..indexes.len() as i32) {
        return Err(BrokerError::InvalidReplicaAssignment(
            "partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    Ok(())
}

fn creatable_topic_result(
    broker: &Broker,
    name: TopicName,
    partitions: i32,
    created: Result<Created, BrokerError>,
) -> CreatableTopicResult {
    let mut result = CreatableTopicResult::default().with_name(name);
    match created {
        Ok(created) => {
            result.num_partitions = partitions;
            result.replication_factor = 1;
            result.topic_id = created.id;
            result.configs = Some(configs::created_topic_configs(
                broker,
                &created.config,
                &created.overrides,
            ));
        }
        Err(e) => {
            result.error_code = e.code();
            result.error_message = Some(str_bytes(e.to_string()));
        }
    }
    result
}

/// Deletes topics by name. Internal topics are refused with INVALID_TOPIC_EXCEPTION, the code
/// Kafka's broker gives for other operations refused on internal topics (producing to one,
/// DeleteRecords on one); TOPIC_AUTHORIZATION_FAILED would send the user looking for ACLs.
pub(super) fn delete_topics(
    context: &RequestContext,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let broker = &context.broker;
    let responses = request
        .topic_names
        .into_iter()
        .map(|name| {
            let mut result = DeletableTopicResult::default().with_name(Some(name.clone()));
            let deleted = if broker.config.is_internal_topic(&name) {
                Err(BrokerError::InternalTopicAdmin {
                    topic: name.to_string(),
                    action: "delete",
                })
            } else {
                broker.delete_topic(&name)
            };
            if let Err(e) = deleted {
                result.error_code = e.code();
                result.error_message = Some(str_bytes(e.to_string()));
            }
            result
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::ApiKey;

    use super::*;
    use crate::BrokerConfig;

    async fn context(config: BrokerConfig, api_key: ApiKey, version: i16) -> RequestContext {
        RequestContext {
            broker: Broker::open(config).await.expect("open"),
            api_key,
            version,
            correlation_id: 1,
            client_id: "test".into(),
            client_host: "/127.0.0.1".into(),
            request_bytes: 0,
        }
    }

    fn topic_name(name: &str) -> TopicName {
        TopicName(str_bytes(name.to_string()))
    }

    fn creatable(name: &str, partitions: i32) -> CreatableTopic {
        CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
    }

    /// Kafka clients may not delete the broker's topics (`__` names and `internal_topics`),
    /// nor create one that does not exist yet; the broker's own API still can.
    #[tokio::test]
    async fn internal_topics_cannot_be_deleted_or_created_over_the_wire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(dir.path());
        config.internal_topics.insert("_eddy_command_topic".into());
        let context = context(config, ApiKey::DeleteTopics, 6).await;
        let broker = Arc::clone(&context.broker);
        broker
            .create_topic("__consumer_offsets", 1, BTreeMap::new())
            .expect("the broker's API creates internal topics");
        broker
            .create_topic("_eddy_command_topic", 1, BTreeMap::new())
            .expect("and configured ones");
        let names = ["__consumer_offsets", "_eddy_command_topic"].map(topic_name);
        let deleted = delete_topics(
            &context,
            DeleteTopicsRequest::default().with_topic_names(names.to_vec()),
        );
        for result in &deleted.responses {
            assert_eq!(
                result.error_code,
                ResponseError::InvalidTopicException.code()
            );
        }
        assert!(broker.topic("__consumer_offsets").is_some());
        assert!(broker.topic("_eddy_command_topic").is_some());

        let created = create_topics(
            &context,
            CreateTopicsRequest::default().with_topics(vec![
                creatable("__transaction_state", 1),
                creatable("__consumer_offsets", 1),
            ]),
        );
        let codes: Vec<i16> = created.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(
            codes,
            [
                ResponseError::InvalidTopicException.code(),
                ResponseError::TopicAlreadyExists.code()
            ]
        );
        assert!(broker.topic("__transaction_state").is_none());
    }

    /// A CreateTopics request asking for more partitions in all than
    /// `create.topics.partitions.max` creates none of its topics and says why.
    #[tokio::test]
    async fn create_topics_caps_partitions_per_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(dir.path());
        config.create_topics_partitions_max = 10;
        let context = context(config, ApiKey::CreateTopics, 7).await;
        let created = create_topics(
            &context,
            CreateTopicsRequest::default().with_topics(vec![creatable("a", 6), creatable("b", 6)]),
        );
        for result in &created.topics {
            assert_eq!(result.error_code, ResponseError::PolicyViolation.code());
            let message = result.error_message.as_deref().unwrap_or_default();
            assert!(
                message.contains("create.topics.partitions.max=10"),
                "{message}"
            );
        }
        assert!(context.broker.topics().is_empty());
    }

    /// One Metadata request auto-creates at most AUTO_CREATE_TOPICS_PER_REQUEST_MAX topics;
    /// the rest are answered LEADER_NOT_AVAILABLE (retriable), and internal names other than
    /// `__consumer_offsets` never are.
    #[tokio::test]
    async fn metadata_auto_creates_a_bounded_number_of_topics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let context = context(BrokerConfig::new(dir.path()), ApiKey::Metadata, 12).await;
        let asked = AUTO_CREATE_TOPICS_PER_REQUEST_MAX + 5;
        let mut topics: Vec<MetadataRequestTopic> = (0..asked)
            .map(|i| MetadataRequestTopic::default().with_name(Some(topic_name(&format!("t{i}")))))
            .collect();
        topics.push(
            MetadataRequestTopic::default().with_name(Some(topic_name("__transaction_state"))),
        );
        let answer = metadata(
            &context,
            MetadataRequest::default()
                .with_topics(Some(topics))
                .with_allow_auto_topic_creation(true),
        );
        let count = |code: ResponseError| {
            answer
                .topics
                .iter()
                .filter(|t| t.error_code == code.code())
                .count()
        };
        assert_eq!(
            context.broker.topics().len(),
            AUTO_CREATE_TOPICS_PER_REQUEST_MAX
        );
        assert_eq!(count(ResponseError::LeaderNotAvailable), 5);
        assert_eq!(count(ResponseError::UnknownTopicOrPartition), 1);
    }

    /// Goal: Burrow's first request, Metadata for `__consumer_offsets` on a broker where no group
    /// has committed yet, finds the topic, as Kafka creates it on such a request (sarama gives up
    /// on UNKNOWN_TOPIC_OR_PARTITION and Burrow exits). Method: ask for it with auto-creation
    /// off (not created), then on; it comes back internal, with the coordinator's partitions
    /// and compacted configs, not the broker's defaults for new topics.
    #[tokio::test]
    async fn metadata_creates_the_offsets_topic_as_the_coordinator_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(dir.path());
        config.default_partitions = 3;
        let context = context(config, ApiKey::Metadata, 5).await;
        let ask = |allow: bool| {
            let topics =
                vec![MetadataRequestTopic::default().with_name(Some(topic_name(OFFSETS_TOPIC)))];
            metadata(
                &context,
                MetadataRequest::default()
                    .with_topics(Some(topics))
                    .with_allow_auto_topic_creation(allow),
            )
        };

        let refused = ask(false);
        assert_eq!(
            refused.topics[0].error_code,
            ResponseError::UnknownTopicOrPartition.code()
        );
        assert!(context.broker.topic(OFFSETS_TOPIC).is_none());

        let answer = ask(true);
        let described = &answer.topics[0];
        assert_eq!(described.error_code, 0);
        assert!(described.is_internal);
        assert_eq!(
            described.partitions.len(),
            offsets::OFFSETS_PARTITIONS as usize
        );
        let created = context.broker.topic(OFFSETS_TOPIC).expect("created");
        assert_eq!(created.config.cleanup_policy, crate::CleanupPolicy::Compact);
        assert_eq!(created.overrides, offsets::internal_topic_config());
    }
}
