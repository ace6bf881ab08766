//! Broker and topic configuration, named and defaulted as Kafka names them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::BrokerError;

/// What a topic may override. Every key is Kafka's topic-level config name.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicConfig {
    /// `segment.bytes`: roll the active segment once it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll the active segment once it is this old.
    pub segment_ms: i64,
    /// `retention.ms`: delete closed segments whose newest record is older; -1 keeps forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete the oldest closed segments while the log is larger; -1 = no limit.
    pub retention_bytes: i64,
    /// `cleanup.policy`: delete, compact, or both.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long compaction keeps tombstones.
    pub delete_retention_ms: i64,
    /// `flush.messages`: fsync after this many records; 1 means every batch is synced before its
    /// acknowledgement (grouped with concurrent batches into one fdatasync).
    pub flush_messages: i64,
    /// `flush.ms`: fsync at least this often.
    pub flush_ms: i64,
    /// `max.message.bytes`: the largest record batch accepted.
    pub max_message_bytes: i32,
    /// `compression.type`: `producer` keeps the producer's codec; anything else is what a batch
    /// written by the broker itself (compaction, the in-process client) uses.
    pub compression_type: String,
    /// `min.insync.replicas`: in a cluster, acks=all needs this many replicas in sync.
    pub min_insync_replicas: i32,
    /// `unclean.leader.election.enable`: in a cluster, whether a replica out of sync may lead
    /// when no in-sync one is alive (losing acknowledged records).
    pub unclean_leader_election: bool,
}

/// `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether compaction applies.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// Whether time and size retention apply.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    fn name(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3_600_000,
            retention_ms: 7 * 24 * 3_600_000,
            retention_bytes: -1,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3_600_000,
            // Eddy's default: an interval flush every second. A process crash loses nothing
            // (written bytes are in the page cache); a power loss can lose the last second.
            flush_messages: i64::MAX,
            flush_ms: 1_000,
            max_message_bytes: 1_048_588,
            compression_type: "producer".to_string(),
            min_insync_replicas: 1,
            unclean_leader_election: false,
        }
    }
}

/// The wire type of a config, as DescribeConfigs (v3+) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// What Kafka says about one topic config: its type, the broker config it defaults from (its
/// synonym in DescribeConfigs) and its documentation.
#[derive(Debug)]
pub struct TopicConfigSpec {
    pub name: &'static str,
    pub config_type: ConfigType,
    pub broker_name: &'static str,
    pub documentation: &'static str,
}

/// The topic configs Eddy understands, in the order DescribeConfigs lists them.
pub const TOPIC_CONFIGS: &[TopicConfigSpec] = &[
    TopicConfigSpec {
        name: "cleanup.policy",
        config_type: ConfigType::List,
        broker_name: "log.cleanup.policy",
        documentation: "What happens to old segments: delete (by retention.ms and \
            retention.bytes), compact (keep the newest record per key), or both.",
    },
    TopicConfigSpec {
        name: "compression.type",
        config_type: ConfigType::String,
        broker_name: "compression.type",
        documentation: "The codec batches are stored with: producer keeps the producer's, or \
            one of uncompressed, gzip, snappy, lz4, zstd.",
    },
    TopicConfigSpec {
        name: "delete.retention.ms",
        config_type: ConfigType::Long,
        broker_name: "log.cleaner.delete.retention.ms",
        documentation: "How long compaction keeps tombstones, so consumers can see deletions.",
    },
    TopicConfigSpec {
        name: "flush.messages",
        config_type: ConfigType::Long,
        broker_name: "log.flush.interval.messages",
        documentation: "Sync the log after this many records; 1 syncs every batch before it is \
            acknowledged.",
    },
    TopicConfigSpec {
        name: "flush.ms",
        config_type: ConfigType::Long,
        broker_name: "log.flush.interval.ms",
        documentation: "Sync the log at least this often, in milliseconds.",
    },
    TopicConfigSpec {
        name: "max.message.bytes",
        config_type: ConfigType::Int,
        broker_name: "message.max.bytes",
        documentation: "The largest record batch the topic accepts, in bytes.",
    },
    TopicConfigSpec {
        name: "min.insync.replicas",
        config_type: ConfigType::Int,
        broker_name: "min.insync.replicas",
        documentation: "With acks=all, the fewest replicas that must be in sync for a write to \
            be accepted; fewer gets NOT_ENOUGH_REPLICAS.",
    },
    TopicConfigSpec {
        name: "retention.bytes",
        config_type: ConfigType::Long,
        broker_name: "log.retention.bytes",
        documentation: "Delete the oldest segments while a partition is larger than this; -1 \
            means no size limit.",
    },
    TopicConfigSpec {
        name: "retention.ms",
        config_type: ConfigType::Long,
        broker_name: "log.retention.ms",
        documentation: "Delete segments whose newest record is older than this; -1 keeps \
            records forever.",
    },
    TopicConfigSpec {
        name: "segment.bytes",
        config_type: ConfigType::Int,
        broker_name: "log.segment.bytes",
        documentation: "Roll to a new segment file once the active one would grow past this.",
    },
    TopicConfigSpec {
        name: "unclean.leader.election.enable",
        config_type: ConfigType::Boolean,
        broker_name: "unclean.leader.election.enable",
        documentation: "Whether a replica that is not in sync may become leader when no in-sync \
            replica is alive: the partition stays available, and acknowledged records may be \
            lost.",
    },
    TopicConfigSpec {
        name: "segment.ms",
        config_type: ConfigType::Long,
        broker_name: "log.roll.ms",
        documentation: "Roll to a new segment file once the active one is this old, so \
            retention and compaction can act on it.",
    },
];

/// The spec of topic config `name`, if Eddy knows it.
pub fn topic_config_spec(name: &str) -> Option<&'static TopicConfigSpec> {
    TOPIC_CONFIGS.iter().find(|spec| spec.name == name)
}

impl TopicConfig {
    /// Applies `name=value` overrides on top of `self`, refusing unknown names and bad values.
    pub fn with_overrides<'a>(
        mut self,
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<TopicConfig, BrokerError> {
        for (name, value) in overrides {
            self.set(name, value)?;
        }
        Ok(self)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), BrokerError> {
        let bad = || BrokerError::InvalidConfig {
            name: name.to_string(),
            value: value.to_string(),
        };
        let int = || value.trim().parse::<i64>().map_err(|_| bad());
        // Kafka's lower bounds (its TopicConfig definitions); ints are 32-bit there.
        let at_least = |min: i64| -> Result<i64, BrokerError> {
            let n = int()?;
            if n < min {
                return Err(BrokerError::ConfigBelowMinimum {
                    name: name.to_string(),
                    value: n,
                    min,
                });
            }
            Ok(n)
        };
        let int32_at_least =
            |min: i64| at_least(min).and_then(|n| i32::try_from(n).map_err(|_| bad()));
        match name {
            // A segment must hold at least a record's overhead (Kafka: 14 bytes).
            "segment.bytes" => self.segment_bytes = int32_at_least(14)? as u64,
            "segment.ms" => self.segment_ms = at_least(1)?,
            "retention.ms" => self.retention_ms = at_least(-1)?,
            "retention.bytes" => self.retention_bytes = int()?,
            "delete.retention.ms" => self.delete_retention_ms = at_least(0)?,
            "flush.messages" => self.flush_messages = at_least(1)?,
            // 0 (Kafka: flush at once) is the shortest interval the flusher keeps: 1 ms.
            "flush.ms" => self.flush_ms = at_least(0)?.max(1),
            "max.message.bytes" => self.max_message_bytes = int32_at_least(0)?,
            "cleanup.policy" => {
                let mut parts: Vec<&str> = value.split(',').map(str::trim).collect();
                parts.sort_unstable();
                self.cleanup_policy = match parts.as_slice() {
                    ["delete"] => CleanupPolicy::Delete,
                    ["compact"] => CleanupPolicy::Compact,
                    ["compact", "delete"] => CleanupPolicy::CompactDelete,
                    _ => return Err(bad()),
                }
            }
            "min.insync.replicas" => {
                self.min_insync_replicas = i32::try_from(int()?)
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(bad)?
            }
            "unclean.leader.election.enable" => {
                self.unclean_leader_election = match value.trim() {
                    v if v.eq_ignore_ascii_case("true") => true,
                    v if v.eq_ignore_ascii_case("false") => false,
                    _ => return Err(bad()),
                }
            }
            "compression.type" => match value {
                "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => {
                    self.compression_type = value.to_string()
                }
                _ => return Err(bad()),
            },
            _ => {
                return Err(BrokerError::UnknownConfig {
                    name: name.to_string(),
                })
            }
        }
        Ok(())
    }

    /// The current value of a config by its Kafka name.
    pub fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "flush.messages" => self.flush_messages.to_string(),
            "flush.ms" => self.flush_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "cleanup.policy" => self.cleanup_policy.name().to_string(),
            "compression.type" => self.compression_type.clone(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "unclean.leader.election.enable" => self.unclean_leader_election.to_string(),
            _ => return None,
        })
    }

    /// Every config as `name -> value`, for persisting and describing.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        TOPIC_CONFIGS
            .iter()
            .map(|spec| {
                (
                    spec.name.to_string(),
                    self.get(spec.name).expect("every listed name has a value"),
                )
            })
            .collect()
    }

    /// The codec batches must be stored with, or `None` to keep the producer's.
    pub fn codec(&self) -> Option<kafka_protocol::records::Compression> {
        use kafka_protocol::records::Compression;
        match self.compression_type.as_str() {
            "uncompressed" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "snappy" => Some(Compression::Snappy),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// `overrides` with each value as this config holds it (`delete, compact` becomes
    /// `compact,delete`): what is stored is what was validated, one line per value.
    pub fn canonical_overrides(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        overrides
            .keys()
            .filter_map(|name| Some((name.clone(), self.get(name)?)))
            .collect()
    }

    /// Whether every batch must be on disk before it is acknowledged.
    pub fn fsync_before_ack(&self) -> bool {
        self.flush_messages <= 1
    }
}

/// How one broker node runs.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// This node's id in metadata.
    pub node_id: i32,
    /// Where partitions, offsets and metadata live.
    pub data_dir: PathBuf,
    /// The host and port clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Defaults for topics that do not override them.
    pub topic_defaults: TopicConfig,
    /// `num.partitions` for auto-created topics.
    pub default_partitions: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `log.retention.check.interval.ms`: how often retention and compaction run.
    pub retention_check_interval: Duration,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members.
    pub group_initial_rebalance_delay: Duration,
    /// How often the recovery-point checkpoint is written.
    pub checkpoint_interval: Duration,
    /// Topics that belong to the system besides Kafka's own `__`-prefixed ones (the embedded
    /// SQL engine's command topic and processing log): Kafka clients may not produce to or
    /// delete them. See [`BrokerConfig::is_internal_topic`].
    pub internal_topics: BTreeSet<String>,
    /// `max.connections`: client connections served at once; a connection accepted beyond
    /// this is closed at once (and logged), so a flood of connections cannot exhaust file
    /// descriptors or memory.
    pub connections_max: usize,
    /// `connections.max.idle.ms`: a connection that completes no request for this long is
    /// closed (slow or silent clients cannot hold a connection slot forever).
    pub connections_max_idle: Duration,
    /// `fetch.max.bytes`: the most record bytes one Fetch response carries, whatever the
    /// request's `max_bytes` (the first batch found may still exceed it, as in Kafka).
    pub fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: the same bound for fetches from replicas
    /// (`replica_id >= 0`).
    pub replica_fetch_response_max_bytes: i32,
    /// `create.topics.partitions.max` (Eddy's name): most partitions one CreateTopics request,
    /// or one [`crate::Broker::create_topic`] call, may create across all its topics.
    pub create_topics_partitions_max: i32,
    /// `max.broker.partitions` (KIP-578's name): most partitions this broker holds in all. Each
    /// partition holds open files and a flusher task, so unbounded creation would exhaust them.
    pub broker_partitions_max: usize,
    /// `transaction.max.timeout.ms`: the longest `transaction.timeout.ms` a transactional
    /// producer may ask for (InitProducerId answers INVALID_TRANSACTION_TIMEOUT beyond it).
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`: a transactional id with no request and no open
    /// transaction for this long is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often transactions
    /// past their timeout are looked for (and aborted).
    pub transaction_check_interval: Duration,
    /// `producer.id.expiration.ms`: a producer that wrote nothing to a partition for this long,
    /// and has no transaction ongoing there, is forgotten by it (checked with retention).
    pub producer_id_expiration_ms: i64,
}

/// One broker config as DescribeConfigs lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfigEntry {
    pub name: &'static str,
    pub value: String,
    /// Whether the value is Kafka's (or Eddy's) default rather than set for this broker.
    pub is_default: bool,
    pub config_type: ConfigType,
    pub documentation: &'static str,
}

impl BrokerConfig {
    /// The broker's configs under Kafka's names, for DescribeConfigs: its own settings, then
    /// the topic defaults under their broker names (`log.retention.ms`, ...). All read-only:
    /// Eddy has no dynamic broker configs.
    pub fn describe(&self) -> Vec<BrokerConfigEntry> {
        let defaults = BrokerConfig::new(&self.data_dir);
        let entry =
            |name, config_type, documentation, value: String, default: String| BrokerConfigEntry {
                name,
                is_default: value == default,
                value,
                config_type,
                documentation,
            };
        let ms = |d: Duration| d.as_millis().to_string();
        let mut entries =
            vec![
            entry("node.id", ConfigType::Int, "This broker's id in the cluster.",
                self.node_id.to_string(), defaults.node_id.to_string()),
            entry("log.dirs", ConfigType::String, "The directory holding the partitions' logs.",
                // Kafka's default; Eddy is always given one.
                self.data_dir.display().to_string(), "/tmp/kafka-logs".to_string()),
            entry("advertised.listeners", ConfigType::String,
                "The address clients are told to connect to.",
                format!("PLAINTEXT://{}:{}", self.advertised_host, self.advertised_port),
                format!("PLAINTEXT://{}:{}", defaults.advertised_host, defaults.advertised_port)),
            entry("num.partitions", ConfigType::Int, "Partitions of an auto-created topic.",
                self.default_partitions.to_string(), defaults.default_partitions.to_string()),
            entry("auto.create.topics.enable", ConfigType::Boolean,
                "Whether producing to or asking metadata of an unknown topic creates it.",
                self.auto_create_topics.to_string(), defaults.auto_create_topics.to_string()),
            entry("log.retention.check.interval.ms", ConfigType::Long,
                "How often retention and compaction run.",
                ms(self.retention_check_interval), ms(defaults.retention_check_interval)),
            entry("group.initial.rebalance.delay.ms", ConfigType::Int,
                "How long a new consumer group waits for more members before its first rebalance.",
                ms(self.group_initial_rebalance_delay), ms(defaults.group_initial_rebalance_delay)),
            entry("max.connections", ConfigType::Int, "Client connections served at once.",
                self.connections_max.to_string(), defaults.connections_max.to_string()),
            entry("connections.max.idle.ms", ConfigType::Long,
                "Close connections that complete no request for this long.",
                ms(self.connections_max_idle), ms(defaults.connections_max_idle)),
            entry("fetch.max.bytes", ConfigType::Int, "The most record bytes one fetch returns.",
                self.fetch_max_bytes.to_string(), defaults.fetch_max_bytes.to_string()),
            entry("create.topics.partitions.max", ConfigType::Int,
                "The most partitions one CreateTopics or CreatePartitions request may create.",
                self.create_topics_partitions_max.to_string(),
                defaults.create_topics_partitions_max.to_string()),
            entry("max.broker.partitions", ConfigType::Int,
                "The most partitions this broker holds in all.",
                self.broker_partitions_max.to_string(), defaults.broker_partitions_max.to_string()),
            entry("transaction.max.timeout.ms", ConfigType::Int,
                "The longest transaction timeout a transactional producer may ask for.",
                self.transaction_max_timeout_ms.to_string(),
                defaults.transaction_max_timeout_ms.to_string()),
            entry("transactional.id.expiration.ms", ConfigType::Int,
                "Forget a transactional id idle for this long.",
                self.transactional_id_expiration_ms.to_string(),
                defaults.transactional_id_expiration_ms.to_string()),
            entry("transaction.abort.timed.out.transaction.cleanup.interval.ms", ConfigType::Int,
                "How often transactions past their timeout are aborted.",
                ms(self.transaction_check_interval), ms(defaults.transaction_check_interval)),
            entry("producer.id.expiration.ms", ConfigType::Int,
                "How long a partition keeps an idle producer's state (not one inside a transaction).",
                self.producer_id_expiration_ms.to_string(),
                defaults.producer_id_expiration_ms.to_string()),
        ];
        for spec in TOPIC_CONFIGS {
            let value = self.topic_defaults.get(spec.name).expect("listed");
            let default = defaults.topic_defaults.get(spec.name).expect("listed");
            entries.push(entry(
                spec.broker_name,
                spec.config_type,
                spec.documentation,
                value,
                default,
            ));
        }
        entries
    }

    /// A config with Kafka's defaults for a node storing its data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            node_id: 0,
            data_dir: data_dir.into(),
            advertised_host: "127.0.0.1".to_string(),
            advertised_port: 9092,
            topic_defaults: TopicConfig::default(),
            default_partitions: 1,
            auto_create_topics: true,
            retention_check_interval: Duration::from_secs(300),
            group_initial_rebalance_delay: Duration::from_millis(3000),
            checkpoint_interval: Duration::from_secs(5),
            internal_topics: BTreeSet::new(),
            connections_max: 1_000,
            connections_max_idle: Duration::from_millis(600_000),
            fetch_max_bytes: 55 * 1024 * 1024,
            replica_fetch_response_max_bytes: 10 * 1024 * 1024,
            create_topics_partitions_max: 10_000,
            broker_partitions_max: 100_000,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            transaction_check_interval: Duration::from_secs(10),
            producer_id_expiration_ms: 86_400_000,
        }
    }

    /// Whether `topic` is the system's: Kafka's internal topics (`__consumer_offsets`,
    /// `__transaction_state`, any `__` name) or one listed in `internal_topics`.
    pub fn is_internal_topic(&self, topic: &str) -> bool {
        topic.starts_with("__") || self.internal_topics.contains(topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_round_trip_through_the_map() {
        let config = TopicConfig::default()
            .with_overrides([
                ("cleanup.policy", "delete,compact"),
                ("segment.bytes", "1024"),
            ])
            .expect("valid overrides");
        assert_eq!(config.cleanup_policy, CleanupPolicy::CompactDelete);
        let map = config.to_map();
        let again = TopicConfig::default()
            .with_overrides(map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .expect("own map is valid");
        assert_eq!(again, config);
    }

    #[test]
    fn unknown_names_and_bad_values_are_refused() {
        assert!(TopicConfig::default()
            .with_overrides([("segment.bites", "1")])
            .is_err());
        assert!(TopicConfig::default()
            .with_overrides([("retention.ms", "soon")])
            .is_err());
        assert!(TopicConfig::default()
            .with_overrides([("cleanup.policy", "keep")])
            .is_err());
    }

    /// Numbers below Kafka's minimum are refused with Kafka's words; the minimum itself and
    /// -1 (no limit) where Kafka allows it are taken.
    #[test]
    fn numbers_below_kafkas_minimum_are_refused() {
        let refused = |name: &str, value: &str| {
            let error = TopicConfig::default()
                .with_overrides([(name, value)])
                .expect_err(name);
            assert_eq!(
                error.code(),
                kafka_protocol::ResponseError::InvalidConfig.code(),
                "{name}"
            );
            error.to_string()
        };
        assert_eq!(
            refused("segment.bytes", "0"),
            "Invalid value 0 for configuration segment.bytes: Value must be at least 14"
        );
        refused("segment.bytes", "4294967296");
        refused("segment.ms", "0");
        refused("retention.ms", "-2");
        refused("delete.retention.ms", "-1");
        refused("flush.messages", "0");
        refused("flush.ms", "-1");
        refused("max.message.bytes", "-1");
        let taken = TopicConfig::default()
            .with_overrides([
                ("segment.bytes", "14"),
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
                ("flush.ms", "0"),
            ])
            .expect("at the minimum");
        assert_eq!((taken.segment_bytes, taken.retention_ms), (14, -1));
    }
}
