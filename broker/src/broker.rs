//! The broker node: its topics, their partitions on disk, and the background work that keeps them.
//!
//! Data directory layout (Kafka's, plus one folder of topic metadata):
//! ```text
//! DATA/.lock                                  held (OS lock) by the broker using the directory
//! DATA/<topic>-<partition>/<base offset:020>.{log,index,timeindex}
//! DATA/<topic>-<partition>/log-start-offset   the log start DeleteRecords moved (log/mod.rs)
//! DATA/<topic>-<partition>.<uuid>-delete/     a deleted partition, removed in the background
//! DATA/recovery-point-offset-checkpoint      "0\n<count>\n<topic> <partition> <offset>\n..."
//! DATA/__eddy_metadata/<topic id>.properties  topic.name, topic.id, partitions, topic configs
//! DATA/__eddy_metadata/producer-id-block      next producer id to hand out
//! ```
//! Older versions named metadata files `<topic>.properties`; they are still read. Every name
//! above fits the usual 255-byte file name limit for any valid topic name (at most 249 bytes).
//!
//! A topic exists exactly when its metadata file does. Creation writes it last, after every
//! partition directory is open; deletion removes it first, then renames the partition
//! directories to `-delete` names. Adding partitions and altering configs rewrite it (by
//! rename) after any new partition directory is open and before the change applies, so a change
//! that was answered survives a crash. Partition directories no metadata file owns (a crash
//! mid-way through any of these) are moved aside when a partition of that name is next
//! created, so a new partition never sees an old one's records.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions, TryLockError};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::cluster::node::{ClusterConfig, ClusterNode};
use crate::config::{BrokerConfig, TopicConfig};
use crate::error::{BrokerError, Result};
use crate::group::GroupCoordinator;
use crate::limits::PARTITIONS_MAX;
use crate::log::{compaction, sync_dir, write_state_file, Log};
use crate::partition::Partition;
use crate::txn::TransactionCoordinator;

const METADATA_DIR: &str = "__eddy_metadata";
const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
const PRODUCER_ID_BLOCK: &str = "producer-id-block";
const PRODUCER_ID_BLOCK_SIZE: i64 = 1_000;
const LOCK_FILE: &str = ".lock";
const DELETE_SUFFIX: &str = "-delete";
/// Longest file name most file systems accept (ext4, xfs, btrfs, apfs).
const FILE_NAME_BYTES_MAX: usize = 255;
/// Longest topic name (Kafka's): `<topic>-<partition>` stays within a file name.
const TOPIC_NAME_BYTES_MAX: usize = 249;

// A partition directory's name is the topic, a dash and up to 4 digits (PARTITIONS_MAX - 1).
const _: () = assert!(PARTITIONS_MAX <= 10_000);
const _: () = assert!(TOPIC_NAME_BYTES_MAX + "-9999".len() <= FILE_NAME_BYTES_MAX);

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
    /// Serialises checkpoint writes: one that read the topics before a deletion must not land
    /// after the deletion's own write and bring the deleted topic's entries back.
    checkpoint_writer: Mutex<()>,
    pub groups: GroupCoordinator,
    pub transactions: TransactionCoordinator,
    next_producer_id: AtomicI64,
    producer_id_limit: Mutex<i64>,
    pub cluster_id: String,
    /// This broker's part in a cluster, when it is in one (`eddy broker --node-id ...`): then
    /// partitions are the cluster's replicas, not the single-node topics above.
    cluster: OnceLock<Arc<ClusterNode>>,
    /// `DATA/.lock`, exclusively locked while this value lives, so no second broker (in this
    /// process or another) opens the same data directory. The background tasks hold the broker,
    /// so the lock is released when its tokio runtime shuts down (or the process exits).
    _data_dir_lock: File,
}

impl Broker {
    /// Opens the data directory, recovering every partition, and starts background work.
    /// Must be called inside a tokio runtime. Fails if another broker has the directory open.
    pub async fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let data_dir_lock = lock_data_dir(&config.data_dir)?;
        let metadata = config.data_dir.join(METADATA_DIR);
        std::fs::create_dir_all(&metadata)?;
        remove_in_background(deleted_partition_dirs(&config.data_dir)?);
        let checkpoint = read_recovery_checkpoint(&config.data_dir.join(RECOVERY_CHECKPOINT));
        let producer_block = std::fs::read_to_string(metadata.join(PRODUCER_ID_BLOCK))
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let cluster_id = cluster_id(&metadata)?;
        let broker = Arc::new(Broker {
            groups: GroupCoordinator::new(config.group_initial_rebalance_delay),
            transactions: TransactionCoordinator::default(),
            config,
            topics: RwLock::new(HashMap::new()),
            topic_admin: Mutex::new(()),
            checkpoint_writer: Mutex::new(()),
            next_producer_id: AtomicI64::new(producer_block),
            producer_id_limit: Mutex::new(producer_block),
            cluster_id,
            cluster: OnceLock::new(),
            _data_dir_lock: data_dir_lock,
        });
        broker.load_topics(&metadata, &checkpoint)?;
        crate::group::offsets::restore(&broker)?;
        crate::txn::restore(&broker)?;
        tokio::spawn(maintenance(Arc::clone(&broker)));
        tokio::spawn(expire_transactions(Arc::clone(&broker)));
        tokio::spawn(checkpointer(Arc::clone(&broker)));
        tokio::spawn(crate::group::expire_members(Arc::clone(&broker)));
        Ok(broker)
    }

    /// Opens the data directory as [`Broker::open`] does, then joins the cluster: starts the
    /// metadata quorum on `controller_listener` and follows its image (`cluster/node.rs`).
    pub async fn open_cluster(
        config: BrokerConfig,
        cluster: ClusterConfig,
        controller_listener: tokio::net::TcpListener,
    ) -> Result<Arc<Broker>> {
        let broker = Broker::open(config).await?;
        let node = ClusterNode::start(&broker, cluster, controller_listener).await?;
        if broker.cluster.set(node).is_err() {
            return Err(BrokerError::Internal(
                "the broker joined a cluster twice".into(),
            ));
        }
        Ok(broker)
    }

    /// The cluster's id: the one in the cluster's metadata in a cluster, else this node's.
    pub fn cluster_id(&self) -> String {
        self.cluster
            .get()
            .and_then(|c| c.image().cluster_id.clone())
            .unwrap_or_else(|| self.cluster_id.clone())
    }

    /// This broker's part in a cluster, if it is in one.
    pub fn cluster(&self) -> Option<&Arc<ClusterNode>> {
        self.cluster.get()
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
            let config = self.topic_config(&props)?;
            let mut logs = Vec::with_capacity(count.max(0) as usize);
            for index in 0..count {
                let recovery_point = checkpoint.get(&(name.clone(), index)).copied();
                let (log, report) = Log::open(
                    &self.partition_dir(&name, index),
                    config.clone(),
                    recovery_point.unwrap_or(0),
                    now_ms(),
                )?;
                if report.truncated_bytes > 0 || report.rebuilt_index {
                    tracing::info!(topic = %name, partition = index, ?report, "recovered partition");
                }
                logs.push(log);
            }
            let topic = start_topic(&name, id, config, props, logs);
            self.topics.write().insert(name, topic);
        }
        Ok(())
    }

    pub(crate) fn topic_config(&self, overrides: &BTreeMap<String, String>) -> Result<TopicConfig> {
        self.config
            .topic_defaults
            .clone()
            .with_overrides(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    pub(crate) fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{index}"))
    }

    /// Moves a partition directory out of the way (renamed to a `-delete` name, removed in
    /// the background); logs what it could not do.
    pub(crate) fn discard_partition_dir(&self, dir: &Path) {
        let suffix = format!(".{}{DELETE_SUFFIX}", Uuid::new_v4().simple());
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let keep = name.len().min(FILE_NAME_BYTES_MAX - suffix.len());
        let target = self
            .config
            .data_dir
            .join(format!("{}{suffix}", &name[..keep]));
        match std::fs::rename(dir, &target).and_then(|()| sync_dir(&self.config.data_dir)) {
            Ok(()) => remove_in_background(vec![target]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "could not move aside"),
        }
    }

    /// Creates a topic with `partitions` partitions and the given config overrides. Either the
    /// whole topic is created or nothing is left behind: no directory, file or open handle.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>> {
        let config = self.validate_new_topic(name, partitions, &overrides)?;
        let overrides = config.canonical_overrides(&overrides);
        let _admin = self.topic_admin.lock();
        if self.topics.read().contains_key(name) {
            return Err(BrokerError::TopicAlreadyExists(name.to_string()));
        }
        self.check_broker_partitions(partitions)?;
        let id = Uuid::new_v4();
        let logs = self.create_logs(name, 0..partitions, &config)?;
        if let Err(e) = self.write_topic_metadata(name, id, partitions, &overrides) {
            drop(logs);
            self.remove_created_dirs(name, 0..partitions);
            return Err(e);
        }
        let topic = start_topic(name, id, config, overrides, logs);
        self.topics
            .write()
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Checks everything [`Broker::create_topic`] would, without creating anything (for
    /// CreateTopics with `validate_only`), and returns the topic's config.
    pub fn validate_topic_creation(
        &self,
        name: &str,
        partitions: i32,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig> {
        let config = self.validate_new_topic(name, partitions, overrides)?;
        if self.topics.read().contains_key(name) {
            return Err(BrokerError::TopicAlreadyExists(name.to_string()));
        }
        self.check_broker_partitions(partitions)?;
        Ok(config)
    }

    /// The checks of a new topic that need no lock: name, partition count, configs.
    fn validate_new_topic(
        &self,
        name: &str,
        partitions: i32,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig> {
        validate_topic_name(name)?;
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(BrokerError::InvalidPartitions(partitions));
        }
        self.check_request_partitions(partitions.into())?;
        self.topic_config(overrides)
    }

    /// Grows topic `name` to `count` partitions (CreatePartitions); with `validate_only`, only
    /// checks that it could. Partitions are only ever added. The new partitions' directories
    /// are created first and the metadata file rewritten last, so a crash in between leaves the
    /// old count and directories no topic owns (moved aside when next created). Limits are
    /// those of topic creation: [`PARTITIONS_MAX`] per topic, `max.broker.partitions` in all.
    pub fn create_partitions(&self, name: &str, count: i32, validate_only: bool) -> Result<()> {
        let _admin = self.topic_admin.lock();
        let topic = self.existing_topic(name)?;
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
        self.check_broker_partitions(count - current)?;
        if validate_only {
            return Ok(());
        }
        let logs = self.create_logs(name, current..count, &topic.config)?;
        if let Err(e) = self.rewrite_topic_metadata(&topic, count, &topic.overrides) {
            drop(logs);
            self.remove_created_dirs(name, current..count);
            return Err(e);
        }
        let mut partitions = topic.partitions.clone();
        partitions.extend(
            logs.into_iter()
                .zip(current..)
                .map(|(log, index)| Partition::start(Arc::clone(&topic.name), index, log)),
        );
        let grown = Arc::new(Topic {
            name: Arc::clone(&topic.name),
            id: topic.id,
            config: topic.config.clone(),
            partitions,
            overrides: topic.overrides.clone(),
        });
        self.topics.write().insert(name.to_string(), grown);
        tracing::info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Replaces topic `name`'s config overrides with `overrides` (every config not in it goes
    /// back to the broker default); with `validate_only`, only checks them. The metadata file is
    /// rewritten before the new config applies to the live partitions, so what a client was
    /// told took effect survives a restart.
    pub fn alter_topic_config(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<()> {
        // An unknown topic is reported before a bad config, as Kafka does; checked again
        // under the admin lock below, as a deletion may come in between.
        self.existing_topic(name)?;
        let config = self.topic_config(&overrides)?;
        let overrides = config.canonical_overrides(&overrides);
        let _admin = self.topic_admin.lock();
        let topic = self.existing_topic(name)?;
        if validate_only {
            return Ok(());
        }
        let count = topic.partitions.len() as i32;
        self.rewrite_topic_metadata(&topic, count, &overrides)?;
        for partition in &topic.partitions {
            partition.set_config(config.clone());
        }
        let altered = Arc::new(Topic {
            name: Arc::clone(&topic.name),
            id: topic.id,
            config,
            partitions: topic.partitions.clone(),
            overrides,
        });
        self.topics.write().insert(name.to_string(), altered);
        tracing::info!(topic = name, "altered topic configs");
        Ok(())
    }

    /// Refuses one request (or call) creating more than `create.topics.partitions.max`.
    pub(crate) fn check_request_partitions(&self, requested: i64) -> Result<()> {
        let max = self.config.create_topics_partitions_max;
        if requested > max.into() {
            return Err(BrokerError::PartitionLimit {
                scope: "this request",
                requested,
                limit: "create.topics.partitions.max",
                max: max.into(),
            });
        }
        Ok(())
    }

    /// Refuses creation that would take the broker past `max.broker.partitions`.
    fn check_broker_partitions(&self, new: i32) -> Result<()> {
        let existing: usize = self
            .topics
            .read()
            .values()
            .map(|t| t.partitions.len())
            .sum();
        let requested = existing as i64 + i64::from(new);
        let max = self.config.broker_partitions_max as i64;
        if requested > max {
            return Err(BrokerError::PartitionLimit {
                scope: "this broker",
                requested,
                limit: "max.broker.partitions",
                max,
            });
        }
        Ok(())
    }

    /// Opens a new, empty log per partition in `indexes`; on any failure closes and removes
    /// all of them.
    fn create_logs(
        &self,
        name: &str,
        indexes: Range<i32>,
        config: &TopicConfig,
    ) -> Result<Vec<Log>> {
        let mut logs = Vec::with_capacity(indexes.len());
        for index in indexes.clone() {
            match self.create_log(name, index, config) {
                Ok(log) => logs.push(log),
                Err(e) => {
                    drop(logs);
                    self.remove_created_dirs(name, indexes.start..index + 1);
                    tracing::warn!(topic = name, partition = index, error = %e,
                        "creating the topic failed; removed what was created");
                    return Err(e);
                }
            }
        }
        Ok(logs)
    }

    fn create_log(&self, name: &str, index: i32, config: &TopicConfig) -> Result<Log> {
        let dir = self.partition_dir(name, index);
        if std::fs::symlink_metadata(&dir).is_ok() {
            // No topic owns it (the caller holds the admin lock and the name is free): it is
            // left from a deletion or creation a crash interrupted. Its records are not ours.
            tracing::warn!(dir = %dir.display(), "moving aside a partition directory no topic owns");
            remove_in_background(vec![self.rename_for_deletion(name, index)?]);
        }
        let (log, _) = Log::open(&dir, config.clone(), 0, now_ms())?;
        #[cfg(test)]
        faults::check_create(index)?;
        Ok(log)
    }

    /// Removes the directories of partitions `indexes` of a topic, created but never committed.
    fn remove_created_dirs(&self, name: &str, indexes: Range<i32>) {
        for index in indexes {
            let dir = self.partition_dir(name, index);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove");
                }
            }
        }
        let _ = sync_dir(&self.config.data_dir);
    }

    /// Renames a partition directory to its `-delete` name (Kafka's
    /// `<topic>-<partition>.<uuid>-delete`, the topic cut short so the name fits) and syncs the
    /// rename. Returns the new path.
    fn rename_for_deletion(&self, name: &str, index: i32) -> Result<PathBuf> {
        let suffix = format!("-{index}.{}{DELETE_SUFFIX}", Uuid::new_v4().simple());
        let keep = name.len().min(FILE_NAME_BYTES_MAX - suffix.len());
        let target = self
            .config
            .data_dir
            .join(format!("{}{suffix}", &name[..keep]));
        std::fs::rename(self.partition_dir(name, index), &target)?;
        sync_dir(&self.config.data_dir)?;
        Ok(target)
    }

    fn metadata_path(&self, file_stem: &str) -> PathBuf {
        self.config
            .data_dir
            .join(METADATA_DIR)
            .join(format!("{file_stem}.properties"))
    }

    /// Writes the topic's metadata file, named by topic id: the moment the topic exists.
    fn write_topic_metadata(
        &self,
        name: &str,
        id: Uuid,
        partitions: i32,
        overrides: &BTreeMap<String, String>,
    ) -> Result<()> {
        let path = self.metadata_path(&id.to_string());
        let text = topic_metadata_text(name, id, partitions, overrides);
        #[cfg(test)]
        faults::check_metadata()?;
        if let Err(e) = write_state_file(&path, text.as_bytes()) {
            let _ = std::fs::remove_file(path.with_extension("tmp"));
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        Ok(())
    }

    /// Rewrites an existing topic's metadata file with a new partition count or overrides.
    /// The file is replaced by a rename, so a crash leaves the old or the new one whole; if the
    /// write fails after the rename (the directory sync), the old contents are put back.
    fn rewrite_topic_metadata(
        &self,
        topic: &Topic,
        partitions: i32,
        overrides: &BTreeMap<String, String>,
    ) -> Result<()> {
        let path = self.metadata_path(&topic.id.to_string());
        let text = topic_metadata_text(&topic.name, topic.id, partitions, overrides);
        #[cfg(test)]
        faults::check_metadata()?;
        if let Err(e) = write_state_file(&path, text.as_bytes()) {
            let _ = std::fs::remove_file(path.with_extension("tmp"));
            let count = topic.partitions.len() as i32;
            let old = topic_metadata_text(&topic.name, topic.id, count, &topic.overrides);
            if let Err(again) = write_state_file(&path, old.as_bytes()) {
                tracing::error!(topic = %topic.name, error = %again,
                    "could not restore the topic's metadata file after a failed rewrite");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Removes the topic's metadata file (by id, or by name as older versions wrote it): the
    /// moment the topic stops existing.
    fn remove_topic_metadata(&self, topic: &Topic) -> Result<()> {
        let legacy = topic.name.to_string();
        // A name too long for the legacy file name never had such a file.
        let legacy_fits = legacy.len() + ".properties".len() <= FILE_NAME_BYTES_MAX;
        let stems = [Some(topic.id.to_string()), legacy_fits.then_some(legacy)];
        for stem in stems.into_iter().flatten() {
            match std::fs::remove_file(self.metadata_path(&stem)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        sync_dir(&self.config.data_dir.join(METADATA_DIR))?;
        Ok(())
    }

    /// Deletes a topic and its data. Once this returns the topic is gone for good, even across
    /// a crash; its directories are renamed at once and removed in the background.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let _admin = self.topic_admin.lock();
        let topic = self.topics.write().remove(name).ok_or_else(|| {
            BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            }
        })?;
        if let Err(e) = self.remove_topic_metadata(&topic) {
            self.topics.write().insert(name.to_string(), topic);
            return Err(e);
        }
        let mut doomed = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            partition.close();
            // A directory that cannot be renamed now is moved aside when the name is reused.
            match self.rename_for_deletion(name, partition.index) {
                Ok(dir) => doomed.push(dir),
                Err(e) => tracing::warn!(topic = name, partition = partition.index, error = %e,
                    "could not rename a deleted partition's directory"),
            }
        }
        remove_in_background(doomed);
        if let Err(e) = self.write_checkpoint() {
            tracing::warn!(error = %e, "could not write the recovery-point checkpoint");
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

    /// A topic that must exist: UNKNOWN_TOPIC_OR_PARTITION otherwise.
    pub fn existing_topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition {
                topic: name.to_string(),
                partition: -1,
            })
    }

    /// One partition of a topic (in a cluster, this broker's replica of it).
    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>> {
        if let Some(cluster) = self.cluster.get() {
            return cluster.partition(topic, index);
        }
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
        let _writer = self.checkpoint_writer.lock();
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

    /// Syncs every partition, snapshots its producer state at its log end, and writes the
    /// checkpoint (a clean shutdown: the next start replays no producer batches).
    pub async fn shutdown(&self) -> Result<()> {
        let mut partitions: Vec<Arc<Partition>> = self
            .topics()
            .iter()
            .flat_map(|topic| topic.partitions.iter().cloned())
            .collect();
        if let Some(cluster) = self.cluster.get() {
            partitions.extend(cluster.local_partitions());
        }
        for p in partitions {
            p.flush().await?;
            p.log().lock().take_producer_snapshot()?;
        }
        self.write_checkpoint()
    }

    /// Runs retention and compaction over every partition once, a cluster's replicas too.
    pub fn run_maintenance(&self) {
        let now = now_ms();
        let mut partitions: Vec<Arc<Partition>> = self
            .topics()
            .iter()
            .flat_map(|topic| topic.partitions.iter().cloned())
            .collect();
        if let Some(node) = self.cluster() {
            partitions.extend(node.local_partitions());
        }
        for p in partitions {
            // Below the high watermark only: on a replica of a cluster, what is above it may
            // still be truncated (a single node's high watermark is its log end).
            let below = p.high_watermark();
            let (deleted, expired) = {
                let mut log = p.log().lock();
                let expiration_ms = self.config.producer_id_expiration_ms;
                (
                    log.apply_retention(now, below),
                    log.remove_expired_producers(now, expiration_ms),
                )
            };
            if deleted > 0 {
                tracing::info!(topic = %p.topic, partition = p.index, deleted, "retention");
            }
            if expired > 0 {
                tracing::debug!(topic = %p.topic, partition = p.index, expired,
                    "forgot idle producers");
            }
            // Below the last stable offset too: an open transaction may still abort.
            match compaction::compact(p.log(), now, p.last_stable_offset()) {
                Ok(r) if r.segments_rewritten > 0 => {
                    tracing::info!(topic = %p.topic, partition = p.index, ?r, "compacted")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(topic = %p.topic, error = %e, "compaction failed"),
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

/// Aborts transactions past their timeout and forgets idle transactional ids, periodically.
async fn expire_transactions(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(broker.config.transaction_check_interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        broker.transactions.expire(&broker).await;
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

/// Wraps opened logs as the partitions of a topic, starting their flushers.
fn start_topic(
    name: &str,
    id: Uuid,
    config: TopicConfig,
    overrides: BTreeMap<String, String>,
    logs: Vec<Log>,
) -> Arc<Topic> {
    let name: Arc<str> = Arc::from(name);
    let partitions = logs
        .into_iter()
        .zip(0..)
        .map(|(log, index)| Partition::start(Arc::clone(&name), index, log))
        .collect();
    Arc::new(Topic {
        name,
        id,
        config,
        partitions,
        overrides,
    })
}

/// Opens `DATA/.lock` and takes an exclusive lock on it, or says who has the directory.
fn lock_data_dir(dir: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(BrokerError::DataDirLocked(dir.to_path_buf())),
        Err(TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Partition directories renamed for deletion whose removal a crash or an error interrupted.
fn deleted_partition_dirs(data_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && entry.file_name().to_string_lossy().ends_with(DELETE_SUFFIX) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// Removes directories (or files) off the caller's thread when a tokio runtime is at hand: a
/// large partition takes a while to remove and nothing waits for it.
fn remove_in_background(paths: Vec<PathBuf>) {
    if paths.is_empty() {
        return;
    }
    let remove = move || {
        for path in paths {
            let removed = match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => Ok(()),
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e,
                    "could not remove a deleted partition; it is retried at the next start");
            }
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(remove)),
        Err(_) => remove(),
    }
}

/// A topic's metadata file: name, id, partition count, then its config overrides.
fn topic_metadata_text(
    name: &str,
    id: Uuid,
    partitions: i32,
    overrides: &BTreeMap<String, String>,
) -> String {
    let mut text = format!("topic.name={name}\ntopic.id={id}\npartitions={partitions}\n");
    for (k, v) in overrides {
        text.push_str(&format!("{k}={v}\n"));
    }
    text
}

pub(crate) fn validate_topic_name(name: &str) -> Result<()> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    let too_long = name.len() > TOPIC_NAME_BYTES_MAX;
    if name.is_empty() || too_long || name == "." || name == ".." || !valid_chars {
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

/// Test-only faults in topic creation. Per thread, so tests running in parallel do not see
/// each other's; creation runs on the caller's thread.
#[cfg(test)]
mod faults {
    use std::cell::Cell;

    thread_local! {
        static CREATE_FAILS_AT: Cell<Option<i32>> = const { Cell::new(None) };
        static METADATA_FAILS: Cell<bool> = const { Cell::new(false) };
    }

    /// Makes opening partition `index` of the next topic created on this thread fail.
    pub(super) fn fail_create_at(index: Option<i32>) {
        CREATE_FAILS_AT.set(index);
    }

    /// Makes writing topic metadata on this thread fail.
    pub(super) fn fail_metadata(fails: bool) {
        METADATA_FAILS.set(fails);
    }

    pub(super) fn check_create(index: i32) -> std::io::Result<()> {
        if CREATE_FAILS_AT.get() == Some(index) {
            return Err(std::io::Error::other(
                "injected: opening the partition failed",
            ));
        }
        Ok(())
    }

    pub(super) fn check_metadata() -> std::io::Result<()> {
        if METADATA_FAILS.get() {
            return Err(std::io::Error::other(
                "injected: writing the metadata failed",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::log::batch::{decode_records, BatchBuilder};

    /// A broker on its own runtime: dropping both stops its background tasks, which releases
    /// the broker and its data directory lock, as a process exit would.
    fn start(config: &BrokerConfig) -> (tokio::runtime::Runtime, Arc<Broker>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let broker = runtime
            .block_on(Broker::open(config.clone()))
            .expect("open");
        (runtime, broker)
    }

    fn stop(runtime: tokio::runtime::Runtime, broker: Arc<Broker>) {
        runtime.block_on(broker.shutdown()).expect("shutdown");
        drop(broker);
        drop(runtime);
    }

    fn append(broker: &Broker, topic: &str, records: usize) {
        let partition = broker.partition(topic, 0).expect("partition");
        for i in 0..records {
            let mut builder = BatchBuilder::new(0, 64);
            builder.push(0, Some(format!("k{i}").as_bytes()), Some(b"old"), &[]);
            partition
                .append(&mut builder.finish(), now_ms())
                .expect("append");
        }
    }

    fn records_in(broker: &Broker, topic: &str) -> usize {
        let partition = broker.partition(topic, 0).expect("partition");
        let bytes = partition.read(0, 1 << 20).expect("read");
        decode_records(&bytes).expect("decode").len()
    }

    /// Every path under `dir`, relative to it.
    fn tree(dir: &Path) -> BTreeSet<PathBuf> {
        let mut found = BTreeSet::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(next) = pending.pop() {
            for entry in std::fs::read_dir(&next).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path.clone());
                }
                found.insert(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
        found
    }

    /// Open descriptors of this process on files whose path starts with `prefix` (none where
    /// /proc is missing).
    fn open_fds_under(prefix: &Path) -> usize {
        let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
            return 0;
        };
        fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| {
                target
                    .to_string_lossy()
                    .starts_with(&*prefix.to_string_lossy())
            })
            .count()
    }

    /// Waits (bounded) until no entry of `dir` starts with `prefix`.
    fn wait_until_gone(dir: &Path, prefix: &str) {
        for _ in 0..1_000 {
            let left = std::fs::read_dir(dir)
                .expect("read_dir")
                .filter(|e| {
                    let name = e.as_ref().expect("entry").file_name();
                    name.to_string_lossy().starts_with(prefix)
                })
                .count();
            if left == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("entries starting with {prefix} were not removed");
    }

    /// Kafka allows 249-character topic names; every file name derived from one must fit in
    /// 255 bytes. Before, the metadata file `<name>.properties` (260 bytes) could not be
    /// written, so creation failed after opening the partitions. Method: create, append,
    /// restart, read back, delete, restart.
    #[test]
    fn a_249_character_topic_name_creates_survives_a_restart_and_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = BrokerConfig::new(dir.path());
        let name = "n".repeat(249);
        let (runtime, broker) = start(&config);
        runtime.block_on(async {
            broker
                .create_topic(&name, 2, BTreeMap::new())
                .expect("create");
            append(&broker, &name, 3);
        });
        stop(runtime, broker);

        let (runtime, broker) = start(&config);
        assert_eq!(
            records_in(&broker, &name),
            3,
            "the topic survives a restart"
        );
        runtime.block_on(async { broker.delete_topic(&name).expect("delete") });
        wait_until_gone(dir.path(), &name);
        assert_eq!(
            std::fs::read_dir(dir.path().join(METADATA_DIR))
                .expect("metadata dir")
                .filter(|e| e.as_ref().expect("entry").path().extension()
                    == Some("properties".as_ref()))
                .count(),
            0,
            "no metadata file is left"
        );
        stop(runtime, broker);

        let (runtime, broker) = start(&config);
        assert!(
            broker.topic(&name).is_none(),
            "a deleted topic stays deleted"
        );
        stop(runtime, broker);
    }

    /// Metadata files named `<topic>.properties` (older versions) still load, and deleting the
    /// topic removes them.
    #[test]
    fn metadata_files_named_by_topic_still_load_and_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = BrokerConfig::new(dir.path());
        let metadata = dir.path().join(METADATA_DIR);
        std::fs::create_dir_all(&metadata).expect("metadata dir");
        let legacy = metadata.join("old.properties");
        let text = format!(
            "topic.name=old\ntopic.id={}\npartitions=2\n",
            Uuid::new_v4()
        );
        std::fs::write(&legacy, text).expect("legacy file");
        let (runtime, broker) = start(&config);
        assert_eq!(broker.topic("old").expect("loaded").partitions.len(), 2);
        runtime.block_on(async { broker.delete_topic("old").expect("delete") });
        assert!(!legacy.exists());
        stop(runtime, broker);
    }

    /// Creation that fails part-way must leave the data directory as it found it. Method: make
    /// opening partition 37 of 100 fail (then the metadata write), and compare the directory
    /// tree and this process's open descriptors before and after.
    #[test]
    fn a_creation_failing_part_way_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (runtime, broker) = start(&BrokerConfig::new(dir.path()));
        let before = tree(dir.path());
        let fds_before = open_fds_under(dir.path());
        runtime.block_on(async {
            faults::fail_create_at(Some(37));
            let failed = broker.create_topic("doomed", 100, BTreeMap::new());
            faults::fail_create_at(None);
            assert!(matches!(failed, Err(BrokerError::Storage(_))));
            assert_eq!(tree(dir.path()), before, "partition 37 failing");
            assert_eq!(open_fds_under(dir.path()), fds_before);

            faults::fail_metadata(true);
            let failed = broker.create_topic("doomed", 100, BTreeMap::new());
            faults::fail_metadata(false);
            assert!(matches!(failed, Err(BrokerError::Storage(_))));
            assert_eq!(tree(dir.path()), before, "the metadata write failing");
            assert_eq!(open_fds_under(dir.path()), fds_before);

            assert!(broker.topic("doomed").is_none());
            broker
                .create_topic("doomed", 100, BTreeMap::new())
                .expect("the name is free and creation works");
        });
        stop(runtime, broker);
    }

    /// Adding partitions that fails part-way must leave the topic and the data directory as
    /// they were, and a failed metadata rewrite must not lose the topic. Method: grow 2 to 10
    /// with partition 6 failing to open, then with the metadata write failing; compare trees,
    /// descriptors and the count, then restart.
    #[test]
    fn adding_partitions_failing_part_way_leaves_the_topic_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = BrokerConfig::new(dir.path());
        let (runtime, broker) = start(&config);
        runtime.block_on(async {
            broker
                .create_topic("t", 2, BTreeMap::new())
                .expect("create");
        });
        let before = tree(dir.path());
        let fds_before = open_fds_under(dir.path());
        runtime.block_on(async {
            faults::fail_create_at(Some(6));
            let failed = broker.create_partitions("t", 10, false);
            faults::fail_create_at(None);
            assert!(matches!(failed, Err(BrokerError::Storage(_))));
            assert_eq!(tree(dir.path()), before, "partition 6 failing");
            assert_eq!(open_fds_under(dir.path()), fds_before);

            faults::fail_metadata(true);
            let failed = broker.create_partitions("t", 10, false);
            faults::fail_metadata(false);
            assert!(matches!(failed, Err(BrokerError::Storage(_))));
            assert_eq!(tree(dir.path()), before, "the metadata write failing");
            assert_eq!(open_fds_under(dir.path()), fds_before);
            assert_eq!(broker.topic("t").expect("t").partitions.len(), 2);
        });
        stop(runtime, broker);

        let (runtime, broker) = start(&config);
        assert_eq!(broker.topic("t").expect("t survives").partitions.len(), 2);
        runtime.block_on(async {
            broker.create_partitions("t", 10, false).expect("grows now");
        });
        assert_eq!(broker.topic("t").expect("t").partitions.len(), 10);
        stop(runtime, broker);
    }

    /// Creation is bounded per call (`create.topics.partitions.max`) and per broker
    /// (`max.broker.partitions`), with errors that name the limit.
    #[test]
    fn partition_limits_refuse_creation_with_the_limit_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(dir.path());
        config.create_topics_partitions_max = 4;
        config.broker_partitions_max = 6;
        let (runtime, broker) = start(&config);
        runtime.block_on(async {
            let too_many = broker.create_topic("a", 5, BTreeMap::new());
            let Err(e @ BrokerError::PartitionLimit { .. }) = too_many else {
                panic!("expected a partition limit error, got {:?}", too_many.err());
            };
            assert!(
                e.to_string().contains("create.topics.partitions.max=4"),
                "{e}"
            );
            broker.create_topic("a", 4, BTreeMap::new()).expect("a");
            let over = broker.create_topic("b", 3, BTreeMap::new());
            let Err(e @ BrokerError::PartitionLimit { .. }) = over else {
                panic!("expected a partition limit error, got {:?}", over.err());
            };
            assert!(e.to_string().contains("max.broker.partitions=6"), "{e}");
            broker
                .create_topic("b", 2, BTreeMap::new())
                .expect("b fits");
        });
        stop(runtime, broker);
    }

    /// A deletion cut short by a crash must not hand the old records to a new topic of the
    /// same name. Method: stop the broker, remove the topic's metadata file by hand (a crash
    /// right after deletion's commit point, before its directories were renamed), leave a
    /// `-delete` directory behind too, restart and create the name again.
    #[test]
    fn a_crash_mid_deletion_gives_no_old_records_to_a_new_topic_of_that_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = BrokerConfig::new(dir.path());
        let (runtime, broker) = start(&config);
        let id = runtime.block_on(async {
            let topic = broker
                .create_topic("t", 1, BTreeMap::new())
                .expect("create");
            append(&broker, "t", 5);
            topic.id
        });
        stop(runtime, broker);
        std::fs::remove_file(
            dir.path()
                .join(METADATA_DIR)
                .join(format!("{id}.properties")),
        )
        .expect("remove metadata");
        let leftover = dir
            .path()
            .join(format!("t-1.{}-delete", Uuid::new_v4().simple()));
        std::fs::create_dir(&leftover).expect("leftover");

        let (runtime, broker) = start(&config);
        assert!(broker.topic("t").is_none());
        runtime.block_on(async {
            broker
                .create_topic("t", 1, BTreeMap::new())
                .expect("create again");
        });
        assert_eq!(broker.partition("t", 0).expect("p").high_watermark(), 0);
        assert_eq!(records_in(&broker, "t"), 0, "no old record is visible");
        wait_until_gone(dir.path(), "t-0.");
        wait_until_gone(dir.path(), "t-1.");
        stop(runtime, broker);
    }

    /// Deletion renames partition directories before removing them, and the name can be
    /// reused at once.
    #[test]
    fn a_deleted_topic_name_can_be_reused_at_once_without_its_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (runtime, broker) = start(&BrokerConfig::new(dir.path()));
        runtime.block_on(async {
            broker
                .create_topic("t", 3, BTreeMap::new())
                .expect("create");
            append(&broker, "t", 4);
            broker.delete_topic("t").expect("delete");
            assert!(
                !dir.path().join("t-0").exists(),
                "renamed before delete returns"
            );
            broker
                .create_topic("t", 3, BTreeMap::new())
                .expect("create again");
            assert_eq!(records_in(&broker, "t"), 0);
        });
        wait_until_gone(dir.path(), "t-0.");
        stop(runtime, broker);
    }

    /// One data directory, one broker: a second open fails naming the directory, and works
    /// again once the first broker is gone (its runtime stopped).
    #[test]
    fn a_data_directory_opens_in_one_broker_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = BrokerConfig::new(dir.path());
        let (runtime, broker) = start(&config);
        let second = runtime.block_on(Broker::open(config.clone()));
        let Err(e @ BrokerError::DataDirLocked(_)) = second else {
            panic!("a second open must fail");
        };
        assert!(
            e.to_string().contains(&*dir.path().to_string_lossy()),
            "{e}"
        );
        stop(runtime, broker);
        let (runtime, broker) = start(&config);
        stop(runtime, broker);
    }
}
