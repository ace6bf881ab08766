//! The broker node: its topics, their partitions on disk, and the background work that keeps them.
//!
//! Data directory layout (Kafka's, plus one folder of topic metadata):
//! ```text
//! DATA/<topic>-<partition>/<base offset:020>.{log,index,timeindex}
//! DATA/recovery-point-offset-checkpoint      "0\n<count>\n<topic> <partition> <offset>\n..."
//! DATA/__eddy_metadata/<topic>.properties     topic.id, partitions and topic configs
//! DATA/__eddy_metadata/producer-id-block      next producer id to hand out
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::config::{BrokerConfig, TopicConfig};
use crate::error::{BrokerError, Result};
use crate::group::GroupCoordinator;
use crate::limits::PARTITIONS_MAX;
use crate::log::{compaction, write_state_file, Log};
use crate::partition::Partition;

const METADATA_DIR: &str = "__eddy_metadata";
const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
const PRODUCER_ID_BLOCK: &str = "producer-id-block";
const PRODUCER_ID_BLOCK_SIZE: i64 = 1_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A topic and its partitions.
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub config: TopicConfig,
    pub partitions: Vec<Arc<Partition>>,
    /// Config names set explicitly on this topic (the rest are broker defaults).
    pub overrides: BTreeMap<String, String>,
}

/// One broker node.
pub struct Broker {
    pub config: BrokerConfig,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serialises topic creation and deletion (metadata files and directories).
    topic_admin: Mutex<()>,
    pub groups: GroupCoordinator,
    next_producer_id: AtomicI64,
    producer_id_limit: Mutex<i64>,
    pub cluster_id: String,
}

impl Broker {
    /// Opens the data directory, recovering every partition, and starts background work.
    /// Must be called inside a tokio runtime.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        let metadata = config.data_dir.join(METADATA_DIR);
        std::fs::create_dir_all(&metadata)?;
        let checkpoint = read_recovery_checkpoint(&config.data_dir.join(RECOVERY_CHECKPOINT));
        let producer_block = std::fs::read_to_string(metadata.join(PRODUCER_ID_BLOCK))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let cluster_id = cluster_id(&metadata)?;
        let broker = Arc::new(Broker {
            groups: GroupCoordinator::new(config.group_initial_rebalance_delay),
            config,
            topics: RwLock::new(HashMap::new()),
            topic_admin: Mutex::new(()),
            next_producer_id: AtomicI64::new(producer_block),
            producer_id_limit: Mutex::new(producer_block),
            cluster_id,
        });
        broker.load_topics(&metadata, &checkpoint)?;
        crate::group::offsets::restore(&broker)?;
        tokio::spawn(maintenance(Arc::clone(&broker)));
        tokio::spawn(checkpointer(Arc::clone(&broker)));
        tokio::spawn(crate::group::expire_members(Arc::clone(&broker)));
        Ok(broker)
    }

    fn load_topics(&self, metadata: &Path, checkpoint: &HashMap<(String, i32), i64>) -> Result<()> {
        for entry in std::fs::read_dir(metadata)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("properties") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            let mut props: BTreeMap<String, String> = text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            let (Some(name), Some(id), Some(count)) = (
                props.remove("topic.name"),
                props.remove("topic.id"),
                props.remove("partitions"),
            ) else {
                tracing::warn!(file = %path.display(), "skipping incomplete topic metadata");
                continue;
            };
            let id = Uuid::parse_str(&id).map_err(|e| BrokerError::Internal(e.to_string()))?;
            let count: i32 = count
                .parse()
                .map_err(|_| BrokerError::Internal("bad count".into()))?;
            let topic = self.open_topic(&name, id, count, props, checkpoint)?;
            self.topics.write().insert(name, topic);
        }
        Ok(())
    }

    fn open_topic(
        &self,
        name: &str,
        id: Uuid,
        count: i32,
        overrides: BTreeMap<String, String>,
        checkpoint: &HashMap<(String, i32), i64>,
    ) -> Result<Arc<Topic>> {
        let config = self
            .config
            .topic_defaults
            .clone()
            .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let name: Arc<str> = Arc::from(name);
        let mut partitions = Vec::with_capacity(count as usize);
        for index in 0..count {
            let dir = self.partition_dir(&name, index);
            let recovery_point = checkpoint
                .get(&(name.to_string(), index))
                .copied()
                .unwrap_or(0);
            let (log, report) = Log::open(&dir, config.clone(), recovery_point, now_ms())?;
            if report.truncated_bytes > 0 || report.rebuilt_index {
                tracing::info!(topic = %name, partition = index, ?report, "recovered partition");
            }
            partitions.push(Partition::start(Arc::clone(&name), index, log));
        }
        Ok(Arc::new(Topic {
            name,
            id,
            config,
            partitions,
            overrides,
        }))
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    /// Creates a topic with `partitions` partitions and the given config overrides.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions(partitions));
        }
        // Validate before touching the disk.
        self.config
            .topic_defaults
            .clone()
            .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let _admin = self.topic_admin.lock();
        if self.topics.read().contains_key(name) {
            return Err(BrokerError::TopicAlreadyExists(name.to_string()));
        }
        let id = Uuid::new_v4();
        let topic = self.open_topic(name, id, partitions, overrides.clone(), &HashMap::new())?;
        let mut text = format!("topic.name={name}\ntopic.id={id}\npartitions={partitions}\n");
        for (k, v) in &overrides {
            text.push_str(&format!("{k}={v}\n"));
        }
        let path = self
            .config
            .data_dir
            .join(METADATA_DIR)
            .join(format!("{name}.properties"));
        write_state_file(&path, text.as_bytes())?;
        self.topics
            .write()
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.topic_admin.lock();
        let topic = self.topics.write().remove(name).ok_or_else(|| {
            BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            }
        })?;
        let path = self
            .config
            .data_dir
            .join(METADATA_DIR)
            .join(format!("{name}.properties"));
        std::fs::remove_file(&path)?;
        for partition in &topic.partitions {
            partition.close();
            let _ = std::fs::remove_dir_all(self.partition_dir(name, partition.index));
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// The topic named `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// The topic, created with broker defaults if it does not exist and auto-creation is on.
    pub fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(topic) = self.topic(name) {
            return Ok(topic);
        }
        if !self.config.auto_create_topics {
            return Err(BrokerError::UnknownTopicOrPartition {
                topic: name.into(),
                partition: -1,
            });
        }
        match self.create_topic(name, self.config.default_partitions, BTreeMap::new()) {
            Err(BrokerError::TopicAlreadyExists(_)) => self.topic(name).ok_or_else(|| {
                BrokerError::Internal(format!("topic {name} vanished while being created"))
            }),
            other => other,
        }
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// One partition of a topic.
    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>> {
        self.topic(topic)
            .and_then(|t| t.partitions.get(usize::try_from(index).ok()?).cloned())
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                topic: topic.to_string(),
                partition: index,
            })
    }

    /// Hands out a new producer id for an idempotent producer. Ids come from blocks recorded on
    /// disk before use, so no id is handed out twice across restarts.
    pub fn allocate_producer_id(&self) -> Result<i64> {
        let mut limit = self.producer_id_limit.lock();
        let id = self.next_producer_id.fetch_add(1, Ordering::SeqCst);
        if id >= *limit {
            let new_limit = id + PRODUCER_ID_BLOCK_SIZE;
            let path = self
                .config
                .data_dir
                .join(METADATA_DIR)
                .join(PRODUCER_ID_BLOCK);
            write_state_file(&path, new_limit.to_string().as_bytes())?;
            *limit = new_limit;
        }
        Ok(id)
    }

    /// Writes the recovery-point checkpoint: offsets below which each partition is on disk.
    pub fn write_checkpoint(&self) -> Result<()> {
        let mut lines = Vec::new();
        for topic in self.topics() {
            for p in &topic.partitions {
                lines.push(format!(
                    "{} {} {}",
                    topic.name,
                    p.index,
                    p.log().lock().recovery_point()
                ));
            }
        }
        let text = format!("0\n{}\n{}\n", lines.len(), lines.join("\n"));
        write_state_file(
            &self.config.data_dir.join(RECOVERY_CHECKPOINT),
            text.as_bytes(),
        )?;
        Ok(())
    }

    /// Syncs every partition and writes the checkpoint (a clean shutdown).
    pub async fn shutdown(&self) -> Result<()> {
        for topic in self.topics() {
            for p in &topic.partitions {
                p.flush().await?;
            }
        }
        self.write_checkpoint()
    }

    /// Runs retention and compaction over every partition once.
    pub fn run_maintenance(&self) {
        let now = now_ms();
        for topic in self.topics() {
            for p in &topic.partitions {
                let deleted = p.log().lock().apply_retention(now);
                if deleted > 0 {
                    tracing::info!(topic = %topic.name, partition = p.index, deleted, "retention");
                }
                match compaction::compact(p.log(), now) {
                    Ok(r) if r.segments_rewritten > 0 => {
                        tracing::info!(topic = %topic.name, partition = p.index, ?r, "compacted")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(topic = %topic.name, error = %e, "compaction failed"),
                }
            }
        }
    }
}

async fn maintenance(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(broker.config.retention_check_interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let b = Arc::clone(&broker);
        let _ = tokio::task::spawn_blocking(move || b.run_maintenance()).await;
    }
}

async fn checkpointer(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(broker.config.checkpoint_interval);
    loop {
        tick.tick().await;
        let b = Arc::clone(&broker);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || b.write_checkpoint()).await {
            tracing::warn!(error = %e, "could not write the recovery-point checkpoint");
        }
    }
}

fn validate_topic_name(name: &str) -> Result<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if name.is_empty() || name.len() > 249 || name == "." || name == ".." || !valid_chars {
        return Err(BrokerError::InvalidTopic(name.to_string()));
    }
    Ok(())
}

fn read_recovery_checkpoint(path: &Path) -> HashMap<(String, i32), i64> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let mut parts = line.rsplitn(3, ' ');
            let offset = parts.next()?.parse().ok()?;
            let partition = parts.next()?.parse().ok()?;
            Some(((parts.next()?.to_string(), partition), offset))
        })
        .collect()
}

fn cluster_id(metadata: &Path) -> Result<String> {
    let path = metadata.join("cluster-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return Ok(id.trim().to_string());
    }
    let id = Uuid::new_v4().simple().to_string();
    write_state_file(&path, id.as_bytes())?;
    Ok(id)
}
