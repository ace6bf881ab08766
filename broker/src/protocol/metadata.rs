//! Metadata, topic administration (CreateTopics, DeleteTopics, DescribeConfigs) and
//! InitProducerId.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, InitProducerIdRequest, InitProducerIdResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestContext};
use crate::broker::Topic;
use crate::error::BrokerError;

const RESOURCE_TOPIC: i8 = 2;
const SOURCE_TOPIC_CONFIG: i8 = 1;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

pub(super) fn metadata(context: &RequestContext, request: MetadataRequest) -> MetadataResponse {
    let broker = &context.broker;
    // Before v4 there was no flag and clients expected auto-creation.
    let allow_create = request.allow_auto_topic_creation || context.version < 4;
    let topics = match request.topics {
        None => broker.topics().iter().map(|t| describe_topic(t)).collect(),
        Some(requested) => requested
            .into_iter()
            .filter_map(|t| t.name)
            .map(|name| {
                let found = if allow_create {
                    broker.topic_or_create(&name)
                } else {
                    broker
                        .topic(&name)
                        .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                            topic: name.to_string(),
                            partition: -1,
                        })
                };
                match found {
                    Ok(topic) => describe_topic(&topic),
                    Err(e) => MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_error_code(e.code()),
                }
            })
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
    let results = request
        .topics
        .into_iter()
        .map(|t| {
            let mut result = CreatableTopicResult::default().with_name(t.name.clone());
            let partitions = if t.num_partitions == -1 {
                broker.config.default_partitions
            } else {
                t.num_partitions
            };
            let overrides: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect();
            let created = if !matches!(t.replication_factor, -1 | 1) {
                Err(BrokerError::InvalidReplicationFactor(t.replication_factor))
            } else if request.validate_only {
                broker
                    .config
                    .topic_defaults
                    .clone()
                    .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .map(|_| None)
            } else {
                broker
                    .create_topic(&t.name, partitions, overrides)
                    .map(Some)
            };
            match created {
                Ok(topic) => {
                    result.num_partitions = partitions;
                    result.replication_factor = 1;
                    if let Some(topic) = topic {
                        result.topic_id = topic.id;
                        result.configs = Some(
                            topic
                                .config
                                .to_map()
                                .into_iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfigs::default()
                                        .with_name(str_bytes(k))
                                        .with_value(Some(str_bytes(v)))
                                })
                                .collect(),
                        );
                    }
                }
                Err(e) => {
                    result.error_code = e.code();
                    result.error_message = Some(str_bytes(e.to_string()));
                }
            }
            result
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}

pub(super) fn delete_topics(
    context: &RequestContext,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let responses = request
        .topic_names
        .into_iter()
        .map(|name| {
            let mut result = DeletableTopicResult::default().with_name(Some(name.clone()));
            if let Err(e) = context.broker.delete_topic(&name) {
                result.error_code = e.code();
                result.error_message = Some(str_bytes(e.to_string()));
            }
            result
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(super) fn describe_configs(
    context: &RequestContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let mut result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            if resource.resource_type != RESOURCE_TOPIC {
                // Broker configs are not described yet: an empty list, no error.
                return result;
            }
            let Some(topic) = context.broker.topic(&resource.resource_name) else {
                result.error_code = ResponseError::UnknownTopicOrPartition.code();
                return result;
            };
            let wanted = resource
                .configuration_keys
                .map(|keys| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
            result.configs = topic
                .config
                .to_map()
                .into_iter()
                .filter(|(k, _)| wanted.as_ref().is_none_or(|w| w.contains(k)))
                .map(|(k, v)| {
                    let source = if topic.overrides.contains_key(&k) {
                        SOURCE_TOPIC_CONFIG
                    } else {
                        SOURCE_DEFAULT_CONFIG
                    };
                    DescribeConfigsResourceResult::default()
                        .with_name(str_bytes(k))
                        .with_value(Some(str_bytes(v)))
                        .with_config_source(source)
                })
                .collect();
            result
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

pub(super) fn init_producer_id(
    context: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        // Transactions are not implemented: refuse rather than pretend.
        return response.with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    match context.broker.allocate_producer_id() {
        Ok(id) => response.with_producer_id(id.into()).with_producer_epoch(0),
        Err(e) => response.with_error_code(e.code()),
    }
}
