//! Configs over the wire: DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, and the
//! configs a CreateTopics response lists.
//!
//! Topic configs are those Eddy knows (`config::TOPIC_CONFIGS`). Each one's source is
//! DYNAMIC_TOPIC_CONFIG when set on the topic, otherwise that of the broker default it falls
//! back to: STATIC_BROKER_CONFIG when the broker was started with another value than Kafka's (or
//! Eddy's) default, DEFAULT_CONFIG when not. Broker configs are all read-only: Eddy has no dynamic
//! broker configs, so altering one is answered INVALID_REQUEST ("Cannot update these configs
//! dynamically"), as Kafka answers for its own read-only broker configs.
//!
//! Topics and their configs come from a [`TopicSource`]: the broker's own topics on a single
//! node, the cluster's metadata image in a cluster. Alter requests are checked here alike for
//! both ([`check_alter_resource`], [`check_incremental_alter_resource`]); a single node then
//! rewrites its topic's metadata file, a broker in a cluster proposes an AlterConfigs record
//! (`cluster.rs`).

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::alter_configs_request::AlterConfigsResource;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_topics_response::CreatableTopicConfigs;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_request::{
    self as incremental_request, AlterableConfig,
};
use kafka_protocol::messages::{
    incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, RequestContext};
use crate::broker::Broker;
use crate::cluster::metadata::ClusterImage;
use crate::config::{topic_config_spec, ConfigType, TopicConfig, TOPIC_CONFIGS};
use crate::error::BrokerError;

/// Config resource types (Kafka's `ConfigResource.Type`).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const RESOURCE_BROKER_LOGGER: i8 = 8;

/// Config sources (Kafka's `DescribeConfigsResponse.ConfigSource`).
const SOURCE_DYNAMIC_TOPIC_CONFIG: i8 = 1;
const SOURCE_STATIC_BROKER_CONFIG: i8 = 4;
const SOURCE_DEFAULT_CONFIG: i8 = 5;

/// IncrementalAlterConfigs operations (Kafka's `AlterConfigOp.OpType`).
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One topic config as described: value, source, and the synonyms it falls back through.
struct TopicConfigValue {
    name: &'static str,
    value: String,
    source: i8,
    synonyms: Vec<(String, String, i8)>,
    config_type: ConfigType,
    documentation: &'static str,
}

/// Where a request finds topics and their configs: this broker's own topics (a single node),
/// or the cluster's metadata image (a broker in a cluster, any broker, leader or not).
pub(super) enum TopicSource<'a> {
    Local(&'a Broker),
    Image(&'a ClusterImage),
}

/// A topic's configs as its source holds them.
struct TopicSettings {
    id: String,
    config: TopicConfig,
    /// The configs set on the topic (the rest are the broker's defaults).
    overrides: BTreeMap<String, String>,
}

impl TopicSource<'_> {
    /// Topic `name`'s configs, falling back to `broker`'s defaults; UNKNOWN_TOPIC_OR_PARTITION
    /// if there is no such topic.
    fn topic(&self, broker: &Broker, name: &str) -> Result<TopicSettings, BrokerError> {
        match self {
            TopicSource::Local(local) => {
                let topic = local.existing_topic(name)?;
                Ok(TopicSettings {
                    id: topic.id.to_string(),
                    config: topic.config.clone(),
                    overrides: topic.overrides.clone(),
                })
            }
            TopicSource::Image(image) => {
                let topic = image.topic(name)?;
                Ok(TopicSettings {
                    id: topic.id.clone(),
                    config: broker.topic_config(&topic.configs)?,
                    overrides: topic.configs.clone(),
                })
            }
        }
    }
}

/// Every config of a topic whose config is `config`, set by `overrides`, with its real source
/// and synonyms (most specific first).
fn topic_config_values(
    broker: &Broker,
    config: &TopicConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<TopicConfigValue> {
    let kafka_defaults = TopicConfig::default();
    TOPIC_CONFIGS
        .iter()
        .map(|spec| {
            let broker_value = broker.config.topic_defaults.get(spec.name).expect("listed");
            let broker_source = if kafka_defaults.get(spec.name).as_ref() == Some(&broker_value) {
                SOURCE_DEFAULT_CONFIG
            } else {
                SOURCE_STATIC_BROKER_CONFIG
            };
            let mut synonyms = vec![(spec.broker_name.to_string(), broker_value, broker_source)];
            let value = config.get(spec.name).expect("listed");
            if overrides.contains_key(spec.name) {
                let topic_value = (spec.name.to_string(), value.clone());
                synonyms.insert(
                    0,
                    (topic_value.0, topic_value.1, SOURCE_DYNAMIC_TOPIC_CONFIG),
                );
            }
            TopicConfigValue {
                name: spec.name,
                value,
                source: synonyms[0].2,
                synonyms,
                config_type: spec.config_type,
                documentation: spec.documentation,
            }
        })
        .collect()
}

/// The configs a CreateTopics response lists for a created (or validated) topic.
pub(super) fn created_topic_configs(
    broker: &Broker,
    config: &TopicConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    topic_config_values(broker, config, overrides)
        .into_iter()
        .map(|c| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(c.name))
                .with_value(Some(str_bytes(c.value)))
                .with_config_source(c.source)
        })
        .collect()
}

/// DescribeConfigs, with topics from `topics`; broker resources describe this broker.
pub(super) fn describe_configs(
    context: &RequestContext,
    topics: &TopicSource,
    mut request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let broker = &context.broker;
    let resources = std::mem::take(&mut request.resources);
    let results = resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            // Kafka treats an empty key list like a missing one: every config.
            let wanted: Option<BTreeSet<String>> = resource
                .configuration_keys
                .filter(|keys| !keys.is_empty())
                .map(|keys| keys.iter().map(|k| k.to_string()).collect());
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => describe_topic(broker, topics, &resource.resource_name, &request),
                RESOURCE_BROKER => describe_broker(broker, &resource.resource_name, &request),
                other => Err(unsupported_resource(other)),
            };
            match entries {
                Ok(entries) => result.with_configs(
                    entries
                        .into_iter()
                        .filter(|e| wanted.as_ref().is_none_or(|w| w.contains(e.name.as_str())))
                        .collect(),
                ),
                Err(e) => result
                    .with_error_code(e.code())
                    .with_error_message(Some(str_bytes(e.to_string()))),
            }
        })
        .collect();
    let mut response = DescribeConfigsResponse::default().with_results(results);
    if context.version == 0 {
        // v0 has a flag where later versions name the source.
        for config in response
            .results
            .iter_mut()
            .flat_map(|r| r.configs.iter_mut())
        {
            config.is_default = config.config_source != SOURCE_DYNAMIC_TOPIC_CONFIG;
        }
    }
    response
}

fn unsupported_resource(resource_type: i8) -> BrokerError {
    let what = match resource_type {
        RESOURCE_BROKER_LOGGER => "broker loggers (set log levels with RUST_LOG at startup)",
        _ => "this resource type",
    };
    BrokerError::InvalidRequest(format!(
        "unsupported resource type {resource_type}: Eddy has no configs for {what}; it has topic \
         (2) and broker (4) configs"
    ))
}

fn describe_topic(
    broker: &Broker,
    topics: &TopicSource,
    name: &str,
    request: &DescribeConfigsRequest,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    crate::broker::validate_topic_name(name)?;
    let topic = topics.topic(broker, name)?;
    Ok(topic_config_values(broker, &topic.config, &topic.overrides)
        .into_iter()
        .map(|c| {
            let synonyms = c
                .synonyms
                .into_iter()
                .map(|(name, value, source)| synonym(name, value, source))
                .collect();
            config_entry(c.name, c.value, c.source, c.config_type)
                .with_synonyms(if request.include_synonyms {
                    synonyms
                } else {
                    Vec::new()
                })
                .with_documentation(
                    request
                        .include_documentation
                        .then(|| str_bytes(c.documentation)),
                )
        })
        .collect())
}

/// The broker resource: by this broker's id, every broker config; by the empty name (the
/// cluster-wide dynamic defaults), none, since Eddy has no dynamic configs.
fn describe_broker(
    broker: &Broker,
    name: &str,
    request: &DescribeConfigsRequest,
) -> Result<Vec<DescribeConfigsResourceResult>, BrokerError> {
    if name.is_empty() {
        return Ok(Vec::new());
    }
    check_broker_name(broker, name)?;
    Ok(broker
        .config
        .describe()
        .into_iter()
        .map(|c| {
            let source = if c.is_default {
                SOURCE_DEFAULT_CONFIG
            } else {
                SOURCE_STATIC_BROKER_CONFIG
            };
            let synonyms = if request.include_synonyms {
                vec![synonym(c.name.to_string(), c.value.clone(), source)]
            } else {
                Vec::new()
            };
            config_entry(c.name, c.value, source, c.config_type)
                .with_read_only(true)
                .with_synonyms(synonyms)
                .with_documentation(
                    request
                        .include_documentation
                        .then(|| str_bytes(c.documentation)),
                )
        })
        .collect())
}

/// Refuses a broker resource named other than by this broker's id, in Kafka's words.
fn check_broker_name(broker: &Broker, name: &str) -> Result<(), BrokerError> {
    let node_id = broker.config.node_id;
    match name.parse::<i32>() {
        Ok(id) if id == node_id => Ok(()),
        Ok(_) => Err(BrokerError::InvalidRequest(format!(
            "Unexpected broker id, expected {node_id} or empty string, but received {name}"
        ))),
        Err(_) => Err(BrokerError::InvalidRequest(format!(
            "Broker id must be an integer, but it is: {name}"
        ))),
    }
}

fn config_entry(
    name: &str,
    value: String,
    source: i8,
    config_type: ConfigType,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_config_source(source)
        .with_config_type(config_type as i8)
}

fn synonym(name: String, value: String, source: i8) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(Some(str_bytes(value)))
        .with_source(source)
}

/// Resources named more than once in one request: Kafka refuses each of them.
fn repeated_resources<'a>(
    resources: impl Iterator<Item = (i8, &'a str)>,
) -> BTreeSet<(i8, String)> {
    let mut seen = BTreeSet::new();
    resources
        .filter(|(kind, name)| !seen.insert((*kind, name.to_string())))
        .map(|(kind, name)| (kind, name.to_string()))
        .collect()
}

/// Kafka's checks of one resource's config list before anything else: no name twice, and a
/// value wherever the operation needs one.
fn check_config_list<'a>(
    configs: impl Iterator<Item = (&'a StrBytes, bool)> + Clone,
) -> Result<(), BrokerError> {
    let mut names = BTreeSet::new();
    if !configs.clone().all(|(name, _)| names.insert(name.as_str())) {
        return Err(BrokerError::InvalidRequest(
            "Error due to duplicate config keys".into(),
        ));
    }
    let missing: Vec<&str> = configs
        .filter(|(_, needs_value_but_null)| *needs_value_but_null)
        .map(|(name, _)| name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(BrokerError::InvalidRequest(format!(
            "Null value not supported for : {}",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// A change to the broker resource: refused unless empty, since no broker config of Eddy's
/// can change while it runs.
fn alter_broker(broker: &Broker, name: &str, configs: Vec<String>) -> Result<(), BrokerError> {
    if !name.is_empty() {
        check_broker_name(broker, name)?;
    }
    if configs.is_empty() {
        return Ok(());
    }
    Err(BrokerError::BrokerConfigReadOnly(configs.join(", ")))
}

fn each_resource_once() -> BrokerError {
    BrokerError::InvalidRequest("Each resource must appear at most once.".into())
}

/// A topic config change that passed every check, not yet made.
pub(super) struct TopicConfigChange {
    pub name: String,
    pub id: String,
    /// The overrides the topic will have, in canonical form.
    pub overrides: BTreeMap<String, String>,
    /// The overrides the change was computed from, for a change that depends on them
    /// (IncrementalAlterConfigs); None for one that replaces them whatever they are.
    pub previous: Option<BTreeMap<String, String>>,
}

/// Checks topic `name`'s new overrides as topic creation does, against its current settings.
fn topic_change(
    broker: &Broker,
    name: &str,
    current: TopicSettings,
    overrides: BTreeMap<String, String>,
    depends_on_current: bool,
) -> Result<TopicConfigChange, BrokerError> {
    let config = broker.topic_config(&overrides)?;
    Ok(TopicConfigChange {
        name: name.to_string(),
        id: current.id,
        overrides: config.canonical_overrides(&overrides),
        previous: depends_on_current.then_some(current.overrides),
    })
}

/// Checks one resource of an AlterConfigs request, changing nothing: a topic's overrides are to
/// become exactly the configs given (the rest return to the broker defaults). Returns the topic
/// change to make; None for the broker resource, which only an empty change passes.
pub(super) fn check_alter_resource(
    broker: &Broker,
    topics: &TopicSource,
    resource: &AlterConfigsResource,
) -> Result<Option<TopicConfigChange>, BrokerError> {
    check_config_list(
        resource
            .configs
            .iter()
            .map(|c| (&c.name, c.value.is_none())),
    )?;
    let configs: BTreeMap<String, String> = resource
        .configs
        .iter()
        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
        .collect();
    let name = resource.resource_name.as_str();
    match resource.resource_type {
        RESOURCE_TOPIC => {
            // An unknown topic is reported before a bad config, as Kafka does.
            let current = topics.topic(broker, name)?;
            topic_change(broker, name, current, configs, false).map(Some)
        }
        RESOURCE_BROKER => alter_broker(broker, name, configs.into_keys().collect()).map(|()| None),
        other => Err(unsupported_resource(other)),
    }
}

/// Checks one resource of an IncrementalAlterConfigs request, changing nothing: SET, DELETE,
/// APPEND and SUBTRACT applied in order on top of the topic's current overrides, the result
/// checked as a whole. Returns the topic change as [`check_alter_resource`] does.
pub(super) fn check_incremental_alter_resource(
    broker: &Broker,
    topics: &TopicSource,
    resource: &incremental_request::AlterConfigsResource,
) -> Result<Option<TopicConfigChange>, BrokerError> {
    let operations = &resource.configs;
    check_config_list(operations.iter().map(|c| {
        let needs_value = c.config_operation != OP_DELETE;
        (&c.name, needs_value && c.value.is_none())
    }))?;
    if let Some(op) = operations
        .iter()
        .find(|c| !(OP_SET..=OP_SUBTRACT).contains(&c.config_operation))
    {
        return Err(BrokerError::InvalidRequest(format!(
            "Unknown operations type {}",
            op.config_operation
        )));
    }
    let name = resource.resource_name.as_str();
    match resource.resource_type {
        RESOURCE_TOPIC => {
            let current = topics.topic(broker, name)?;
            let mut overrides = current.overrides.clone();
            for operation in operations {
                apply_operation(broker, &mut overrides, operation)?;
            }
            topic_change(broker, name, current, overrides, true).map(Some)
        }
        RESOURCE_BROKER => alter_broker(
            broker,
            name,
            operations.iter().map(|c| c.name.to_string()).collect(),
        )
        .map(|()| None),
        other => Err(unsupported_resource(other)),
    }
}

/// A resource of an AlterConfigs or IncrementalAlterConfigs request.
pub(super) trait ConfigResource {
    /// Its type and name.
    fn key(&self) -> (i8, &str);
}

impl ConfigResource for AlterConfigsResource {
    fn key(&self) -> (i8, &str) {
        (self.resource_type, self.resource_name.as_str())
    }
}

impl ConfigResource for incremental_request::AlterConfigsResource {
    fn key(&self) -> (i8, &str) {
        (self.resource_type, self.resource_name.as_str())
    }
}

/// The resources of a request, in order, each to be answered, or refused when the request
/// names it more than once (Kafka refuses every copy).
pub(super) fn named_once<R: ConfigResource>(resources: &[R]) -> Vec<Result<&R, BrokerError>> {
    let repeated = repeated_resources(resources.iter().map(ConfigResource::key));
    resources
        .iter()
        .map(|resource| {
            let (kind, name) = resource.key();
            if repeated.contains(&(kind, name.to_string())) {
                Err(each_resource_once())
            } else {
                Ok(resource)
            }
        })
        .collect()
}

/// An AlterConfigs response: each resource with its outcome.
pub(super) fn alter_configs_response(
    resources: Vec<AlterConfigsResource>,
    outcomes: Vec<Result<(), BrokerError>>,
) -> AlterConfigsResponse {
    let responses = resources
        .into_iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let mut response = AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name);
            if let Err(e) = outcome {
                response.error_code = e.code();
                response.error_message = Some(str_bytes(e.to_string()));
            }
            response
        })
        .collect();
    AlterConfigsResponse::default().with_responses(responses)
}

/// An IncrementalAlterConfigs response: each resource with its outcome.
pub(super) fn incremental_alter_configs_response(
    resources: Vec<incremental_request::AlterConfigsResource>,
    outcomes: Vec<Result<(), BrokerError>>,
) -> IncrementalAlterConfigsResponse {
    let responses = resources
        .into_iter()
        .zip(outcomes)
        .map(|(resource, outcome)| {
            let mut response =
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name);
            if let Err(e) = outcome {
                response.error_code = e.code();
                response.error_message = Some(str_bytes(e.to_string()));
            }
            response
        })
        .collect();
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

/// Makes a checked change to one of this broker's own topics (a single node).
fn alter_local(
    broker: &Broker,
    change: Option<TopicConfigChange>,
    validate_only: bool,
) -> Result<(), BrokerError> {
    match change {
        Some(change) => broker.alter_topic_config(&change.name, change.overrides, validate_only),
        None => Ok(()),
    }
}

/// AlterConfigs on a single node: see [`check_alter_resource`].
pub(super) fn alter_configs(
    context: &RequestContext,
    request: AlterConfigsRequest,
) -> AlterConfigsResponse {
    let broker = &context.broker;
    let topics = TopicSource::Local(broker);
    let outcomes = named_once(&request.resources)
        .into_iter()
        .map(|resource| {
            let change = check_alter_resource(broker, &topics, resource?)?;
            alter_local(broker, change, request.validate_only)
        })
        .collect();
    alter_configs_response(request.resources, outcomes)
}

/// IncrementalAlterConfigs on a single node: see [`check_incremental_alter_resource`].
pub(super) fn incremental_alter_configs(
    context: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let broker = &context.broker;
    let topics = TopicSource::Local(broker);
    let outcomes = named_once(&request.resources)
        .into_iter()
        .map(|resource| {
            let change = check_incremental_alter_resource(broker, &topics, resource?)?;
            alter_local(broker, change, request.validate_only)
        })
        .collect();
    incremental_alter_configs_response(request.resources, outcomes)
}

/// Applies one incremental operation to a topic's overrides. APPEND and SUBTRACT work on list
/// configs only, starting from the current value (the override, else the broker default).
fn apply_operation(
    broker: &Broker,
    overrides: &mut BTreeMap<String, String>,
    operation: &AlterableConfig,
) -> Result<(), BrokerError> {
    let name = operation.name.to_string();
    let value = operation
        .value
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_default();
    let op = operation.config_operation;
    if op == OP_SET {
        overrides.insert(name, value);
        return Ok(());
    }
    if op == OP_DELETE {
        overrides.remove(&name);
        return Ok(());
    }
    let spec = topic_config_spec(&name)
        .ok_or_else(|| BrokerError::UnknownConfig { name: name.clone() })?;
    if spec.config_type != ConfigType::List {
        return Err(BrokerError::ConfigOperationNotAllowed {
            name,
            operation: if op == OP_APPEND {
                "append"
            } else {
                "subtract"
            },
        });
    }
    let current = match overrides.get(&name) {
        Some(value) => value.clone(),
        None => broker.config.topic_defaults.get(&name).unwrap_or_default(),
    };
    let mut items: Vec<String> = current
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let given = value.split(',').map(|s| s.trim().to_string());
    if op == OP_APPEND {
        for item in given {
            if !items.contains(&item) {
                items.push(item);
            }
        }
    } else {
        let removed: Vec<String> = given.collect();
        items.retain(|item| !removed.contains(item));
    }
    overrides.insert(name, items.join(","));
    Ok(())
}
