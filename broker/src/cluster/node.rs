//! One broker of a cluster: it follows the metadata image and makes its local replicas match.
//!
//! [`ClusterNode::start`] starts the metadata quorum (every broker is a voter: KRaft's combined
//! mode), registers this incarnation with the active controller and heartbeats it. Each time
//! the image changes, the node reconciles: it opens (or creates) a log for every partition the
//! image assigns to it, makes it the leader or a follower at the image's epochs (a follower
//! runs a fetcher, `fetcher.rs`), and closes and deletes replicas the image no longer assigns.
//! Until the image holds this incarnation's registration, every replica only follows: a
//! restarted broker must not act on a leadership it held before it went away.
//!
//! A leader asks for changes of its in-sync set with AlterPartition records (`replica.rs`
//! decides when), checked every [`ISR_CHECK_INTERVAL`]; a change stays pending until the image
//! decides it (its partition epoch moves on), and is proposed again until then.
//!
//! Each partition directory holds `partition.metadata` (Kafka's file: the topic id), so a
//! directory left from a deleted topic of the same name is never taken for the new one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::controller::{Controller, ControllerRequest, ControllerResponse, ControllerTimes};
use super::metadata::{ClusterImage, MetadataRecord, PartitionImage, TopicImage, NO_LEADER};
use super::quorum::{Quorum, QuorumConfig, QuorumError};
use super::replica::{InSyncRules, Leadership, Role};
use crate::broker::{now_ms, Broker};
use crate::error::{BrokerError, Result};
use crate::log::{write_state_file, Log};
use crate::partition::Partition;

/// How often leaders check whether their in-sync sets should change.
pub const ISR_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// How long a controller request or metadata proposal may take.
pub const CONTROLLER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const PARTITION_METADATA: &str = "partition.metadata";
/// The metadata log's directory (KRaft's name).
const METADATA_LOG_DIR: &str = "__cluster_metadata-0";

/// How a broker takes part in a cluster (`eddy broker --node-id ...`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: i32,
    pub rack: Option<String>,
    /// The metadata quorum's voters: (node id, "host:port" of its controller listener).
    pub voters: Vec<(u64, String)>,
    /// `broker.heartbeat.interval.ms`
    pub heartbeat_interval: Duration,
    /// `broker.session.timeout.ms`
    pub session_timeout: Duration,
    /// `replica.lag.time.max.ms`
    pub replica_lag_time_max: Duration,
    /// `default.replication.factor`
    pub default_replication_factor: i16,
    /// `leader.imbalance.check.interval.ms`
    pub leader_imbalance_check_interval: Duration,
    /// `replica.fetch.wait.max.ms`
    pub replica_fetch_wait_max: Duration,
}

impl ClusterConfig {
    /// Eddy's defaults: shorter than Kafka's (heartbeat 2 s, session 9 s), so that a leader's
    /// failure is noticed and its partitions moved within a few seconds.
    pub fn new(node_id: i32, voters: Vec<(u64, String)>) -> ClusterConfig {
        let replication_factor = voters.len().min(3) as i16;
        ClusterConfig {
            node_id,
            rack: None,
            voters,
            heartbeat_interval: Duration::from_millis(500),
            session_timeout: Duration::from_millis(3_000),
            replica_lag_time_max: Duration::from_millis(30_000),
            default_replication_factor: replication_factor,
            leader_imbalance_check_interval: Duration::from_secs(10),
            replica_fetch_wait_max: Duration::from_millis(500),
        }
    }
}

/// A local replica and the fetcher that feeds it while it follows.
struct Replica {
    partition: Arc<Partition>,
    topic_id: String,
    /// The topic's config overrides the log follows (the image's, as last applied).
    configs: BTreeMap<String, String>,
    /// (leader, leader epoch) the fetcher follows, and the fetcher.
    fetcher: Option<((i32, i32), JoinHandle<()>)>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some((_, task)) = self.fetcher.take() {
            task.abort();
        }
    }
}

/// This broker's part in the cluster.
pub struct ClusterNode {
    pub config: ClusterConfig,
    pub incarnation: String,
    pub quorum: Arc<Quorum>,
    image: watch::Receiver<Arc<ClusterImage>>,
    replicas: RwLock<HashMap<(String, i32), Replica>>,
    /// The block of producer ids this broker hands out: [next, end).
    pub(crate) producer_ids: parking_lot::Mutex<(i64, i64)>,
    pub(crate) connections: crate::kafka_client::connection::Connections,
}

impl ClusterNode {
    /// Starts the quorum on `controller_listener` (replaying the metadata log), then the
    /// registration, heartbeats, reconciliation and in-sync set checks of `broker`.
    pub async fn start(
        broker: &Arc<Broker>,
        config: ClusterConfig,
        controller_listener: TcpListener,
    ) -> Result<Arc<ClusterNode>> {
        let (image_sender, image) = watch::channel(Arc::new(ClusterImage::default()));
        let apply = Box::new(move |index: u64, bytes: &[u8]| {
            image_sender.send_modify(|image| {
                let image = Arc::make_mut(image);
                match MetadataRecord::decode(bytes) {
                    Ok(record) => image.apply(index, &record),
                    Err(e) => {
                        tracing::error!(index, error = %e, "skipping a metadata record");
                        image.applied_index = index;
                    }
                }
            });
        });
        let times = ControllerTimes {
            session_timeout: config.session_timeout,
            check_interval: config.heartbeat_interval / 2,
            leader_imbalance_check_interval: config.leader_imbalance_check_interval,
        };
        let controller = Controller::new(config.node_id as u64, times, image.clone());
        let quorum_config = QuorumConfig {
            node_id: config.node_id as u64,
            voters: config.voters.clone(),
            dir: broker.config.data_dir.join(METADATA_LOG_DIR),
            tick: Duration::from_millis(100),
            election_ticks: 10,
        };
        let quorum = Quorum::start(
            quorum_config,
            controller_listener,
            apply,
            controller.clone(),
        )
        .await
        .map_err(|e| BrokerError::Internal(format!("metadata quorum: {e}")))?;
        controller.start(&quorum);
        let node = Arc::new(ClusterNode {
            config,
            incarnation: uuid::Uuid::new_v4().simple().to_string(),
            quorum,
            image,
            replicas: RwLock::new(HashMap::new()),
            producer_ids: parking_lot::Mutex::new((0, 0)),
            connections: Default::default(),
        });
        tokio::spawn(reconcile_forever(Arc::clone(broker), Arc::clone(&node)));
        tokio::spawn(heartbeat_forever(Arc::clone(broker), Arc::clone(&node)));
        tokio::spawn(check_isr_forever(Arc::clone(&node)));
        Ok(node)
    }

    /// The current metadata image.
    pub fn image(&self) -> Arc<ClusterImage> {
        Arc::clone(&self.image.borrow())
    }

    /// A local replica of a partition.
    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>> {
        if let Some(replica) = self.replicas.read().get(&(topic.to_string(), index)) {
            return Ok(Arc::clone(&replica.partition));
        }
        if self.image().partition(topic, index).is_some() {
            // The partition exists, elsewhere: the client has stale metadata.
            return Err(BrokerError::Replication {
                kind: crate::error::ReplicationError::NotLeaderOrFollower,
                topic: topic.to_string(),
                partition: index,
            });
        }
        Err(BrokerError::UnknownTopicOrPartition {
            topic: topic.to_string(),
            partition: index,
        })
    }

    /// Every local replica.
    pub fn local_partitions(&self) -> Vec<Arc<Partition>> {
        self.replicas
            .read()
            .values()
            .map(|r| Arc::clone(&r.partition))
            .collect()
    }

    /// "host:port" of a broker's Kafka listener, if it is registered.
    pub fn broker_address(&self, id: i32) -> Option<String> {
        let image = self.image.borrow();
        let broker = image.brokers.get(&id)?;
        Some(format!("{}:{}", broker.host, broker.port))
    }

    /// Whether the image holds this incarnation's registration.
    fn registered(&self, image: &ClusterImage) -> bool {
        image
            .brokers
            .get(&self.config.node_id)
            .is_some_and(|b| b.incarnation == self.incarnation)
    }

    /// Appends `record` to the metadata log and waits until this node has applied it. A
    /// quorum without a leader, or one that does not answer within
    /// [`CONTROLLER_REQUEST_TIMEOUT`], is [`BrokerError::MetadataNotConfirmed`]
    /// (REQUEST_TIMED_OUT), saying whether the record may still commit.
    pub async fn propose(&self, record: &MetadataRecord) -> Result<u64> {
        self.quorum
            .propose(record.encode(), CONTROLLER_REQUEST_TIMEOUT)
            .await
            .map_err(not_confirmed)
    }

    /// Sends a request to the active controller, following NotController answers.
    async fn call_controller(&self, request: &ControllerRequest, timeout: Duration) -> Result<()> {
        let bytes = serde_json::to_vec(request).expect("controller requests serialise");
        let leader = self
            .quorum
            .leader()
            .ok_or_else(|| BrokerError::Internal("the metadata quorum has no leader yet".into()))?;
        let answer = self
            .quorum
            .call(leader, bytes, timeout)
            .await
            .map_err(|e| BrokerError::Internal(format!("controller {leader}: {e}")))?;
        match serde_json::from_slice(&answer) {
            Ok(ControllerResponse::Ok) => Ok(()),
            Ok(ControllerResponse::NotController { leader }) => Err(BrokerError::Internal(
                format!("not the controller; the controller is {leader:?}"),
            )),
            Ok(ControllerResponse::Error(e)) => Err(BrokerError::Internal(e)),
            Err(e) => Err(BrokerError::Internal(format!("bad controller answer: {e}"))),
        }
    }
}

/// A proposal's failure as the client is told it: what happened, and what to do.
fn not_confirmed(error: QuorumError) -> BrokerError {
    let advice = match &error {
        QuorumError::NoLeader { .. }
        | QuorumError::Unreachable { .. }
        | QuorumError::Refused { .. } => {
            "nothing changed; retry once a majority of the controllers is up and elected a leader"
        }
        QuorumError::NotCommitted { .. } | QuorumError::TooManyPending { .. } => {
            "nothing changed; retry"
        }
        QuorumError::Timeout { .. } | QuorumError::Shutdown { .. } => {
            "it may still take effect: describe the resource before retrying"
        }
        _ => return BrokerError::Internal(format!("the metadata quorum: {error}")),
    };
    BrokerError::MetadataNotConfirmed(format!("{error} ({advice})"))
}

/// Registers this incarnation, then heartbeats the active controller for as long as it runs.
async fn heartbeat_forever(broker: Arc<Broker>, node: Arc<ClusterNode>) {
    let mut tick = tokio::time::interval(node.config.heartbeat_interval);
    loop {
        tick.tick().await;
        let image = node.image();
        let request = if node.registered(&image) {
            ControllerRequest::Heartbeat {
                id: node.config.node_id,
                incarnation: node.incarnation.clone(),
                applied_index: image.applied_index,
            }
        } else {
            ControllerRequest::Register {
                id: node.config.node_id,
                incarnation: node.incarnation.clone(),
                host: broker.config.advertised_host.clone(),
                port: broker.config.advertised_port,
                rack: node.config.rack.clone(),
            }
        };
        // A heartbeat waits at most one interval: a controller that stopped answering (its
        // process paused) must not hold up the heartbeats its successor needs to see.
        let timeout = node
            .config
            .heartbeat_interval
            .max(Duration::from_millis(100));
        if let Err(e) = node.call_controller(&request, timeout).await {
            tracing::debug!(error = %e, "heartbeat not answered");
        }
    }
}

/// Makes the local replicas match every new image.
async fn reconcile_forever(broker: Arc<Broker>, node: Arc<ClusterNode>) {
    let mut image = node.image.clone();
    loop {
        let current = Arc::clone(&image.borrow_and_update());
        let b = Arc::clone(&broker);
        let n = Arc::clone(&node);
        let reconciled = tokio::task::spawn_blocking(move || reconcile(&b, &n, &current)).await;
        if let Ok(Err(e)) = reconciled {
            tracing::error!(error = %e, "could not apply the cluster metadata to local replicas");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if image.changed().await.is_err() {
            return;
        }
    }
}

fn reconcile(broker: &Arc<Broker>, node: &Arc<ClusterNode>, image: &ClusterImage) -> Result<()> {
    let me = node.config.node_id;
    let registered = node.registered(image);
    let mut wanted = BTreeMap::new();
    for topic in image.topics.values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.replicas.contains(&me) {
                wanted.insert((topic.name.clone(), index as i32), (topic, partition));
            }
        }
    }
    // Replicas no longer assigned here (topic deleted or recreated): closed and removed.
    let gone: Vec<(String, i32)> = node
        .replicas
        .read()
        .iter()
        .filter(|(key, replica)| {
            wanted
                .get(*key)
                .is_none_or(|(topic, _)| topic.id != replica.topic_id)
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in gone {
        if let Some(replica) = node.replicas.write().remove(&key) {
            replica.partition.close();
            let dir = broker.partition_dir(&key.0, key.1);
            broker.discard_partition_dir(&dir);
            tracing::info!(topic = %key.0, partition = key.1, "removed a replica");
        }
    }
    for ((name, index), (topic, partition)) in wanted {
        let key = (name, index);
        if !node.replicas.read().contains_key(&key) {
            let opened = open_replica(broker, topic, index)?;
            let replica = Replica {
                partition: opened,
                topic_id: topic.id.clone(),
                configs: topic.configs.clone(),
                fetcher: None,
            };
            node.replicas.write().insert(key.clone(), replica);
        }
        let mut replicas = node.replicas.write();
        let replica = replicas.get_mut(&key).expect("just inserted");
        apply_configs(broker, replica, topic)?;
        apply_role(broker, node, replica, topic, partition, registered);
    }
    Ok(())
}

/// Makes one replica's log follow the topic's configs when they changed (an AlterConfigs
/// record): retention, cleanup policy, flush settings, max.message.bytes and the rest take
/// effect as on a single node. `min.insync.replicas` reaches the leadership in [`apply_role`].
fn apply_configs(broker: &Broker, replica: &mut Replica, topic: &TopicImage) -> Result<()> {
    if replica.configs == topic.configs {
        return Ok(());
    }
    let config = broker.topic_config(&topic.configs)?;
    replica.partition.set_config(config);
    replica.configs = topic.configs.clone();
    tracing::info!(topic = %topic.name, partition = replica.partition.index,
        "a replica follows the topic's new configs");
    Ok(())
}

/// Makes one replica the leader or a follower as `partition` says.
fn apply_role(
    broker: &Arc<Broker>,
    node: &Arc<ClusterNode>,
    replica: &mut Replica,
    topic: &TopicImage,
    partition: &PartitionImage,
    registered: bool,
) {
    let me = node.config.node_id;
    let local = &replica.partition;
    if topic.name == crate::group::offsets::OFFSETS_TOPIC {
        // The group coordinator loads or unloads this partition's groups (`group/load.rs`).
        let leading = registered && partition.leader == me;
        crate::GroupCoordinator::partition_role_changed(broker, local.index, leading);
    }
    if topic.name == crate::txn::TXN_STATE_TOPIC {
        // The transaction coordinator loads or unloads this partition's ids (`txn/mod.rs`).
        let leading = registered && partition.leader == me;
        crate::txn::TransactionCoordinator::partition_role_changed(broker, local.index, leading);
    }
    if registered && partition.leader == me {
        if let Some((_, task)) = replica.fetcher.take() {
            task.abort();
        }
        let rules = InSyncRules {
            min_insync: min_insync_replicas(broker, &topic.configs),
            lag_max_ms: node.config.replica_lag_time_max.as_millis() as i64,
            silence_max_ms: node.config.session_timeout.as_millis() as i64,
        };
        let leadership = Leadership::new(
            me,
            (partition.leader_epoch, partition.partition_epoch),
            &partition.replicas,
            &partition.isr,
            rules,
            (local.log_end_offset(), now_ms()),
        );
        local.lead(leadership);
        return;
    }
    let leader = if registered {
        partition.leader
    } else {
        NO_LEADER
    };
    let following = (leader, partition.leader_epoch);
    if local.role()
        != (Role::Follower {
            leader,
            leader_epoch: partition.leader_epoch,
        })
    {
        local.follow(leader, partition.leader_epoch);
    }
    let running = replica.fetcher.as_ref().map(|(f, _)| *f);
    if running != Some(following) {
        if let Some((_, task)) = replica.fetcher.take() {
            task.abort();
        }
        if leader != NO_LEADER {
            let task = tokio::spawn(super::fetcher::follow(
                Arc::clone(node),
                Arc::clone(local),
                following,
            ));
            replica.fetcher = Some((following, task));
        }
    }
}

/// The topic's `min.insync.replicas` (the broker default when not set).
fn min_insync_replicas(broker: &Broker, configs: &BTreeMap<String, String>) -> usize {
    broker
        .topic_config(configs)
        .map(|c| c.min_insync_replicas.max(1) as usize)
        .unwrap_or(1)
}

/// Opens a partition's log (recovering it) or creates it; a directory of another topic id is
/// moved aside first.
fn open_replica(broker: &Broker, topic: &TopicImage, index: i32) -> Result<Arc<Partition>> {
    let dir = broker.partition_dir(&topic.name, index);
    if dir.exists() && partition_topic_id(&dir).as_deref() != Some(topic.id.as_str()) {
        tracing::warn!(dir = %dir.display(), "moving aside a partition directory of another topic id");
        broker.discard_partition_dir(&dir);
    }
    let config = broker.topic_config(&topic.configs)?;
    let (log, report) = Log::open(&dir, config, 0, now_ms())?;
    if report.truncated_bytes > 0 {
        tracing::info!(topic = %topic.name, partition = index, ?report, "recovered replica");
    }
    let metadata = format!("version: 0\ntopic_id: {}\n", topic.id);
    write_state_file(&dir.join(PARTITION_METADATA), metadata.as_bytes())?;
    Ok(Partition::start_replica(
        Arc::from(topic.name.as_str()),
        index,
        log,
    ))
}

/// The topic id a partition directory's `partition.metadata` names.
fn partition_topic_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(PARTITION_METADATA)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("topic_id:"))
        .map(|id| id.trim().to_string())
}

/// Asks for the in-sync set changes this broker's leaderships want.
async fn check_isr_forever(node: Arc<ClusterNode>) {
    let mut tick = tokio::time::interval(ISR_CHECK_INTERVAL);
    loop {
        tick.tick().await;
        for partition in node.local_partitions() {
            let Some((leader, leader_epoch, partition_epoch, isr)) = partition.isr_change(now_ms())
            else {
                continue;
            };
            tracing::info!(topic = %partition.topic, partition = partition.index, ?isr,
                "asking the controller for a new in-sync set");
            let record = MetadataRecord::AlterPartition {
                topic: partition.topic.to_string(),
                partition: partition.index,
                leader,
                leader_epoch,
                partition_epoch,
                isr: isr.clone(),
            };
            // Taken or refused, the record spends the partition epoch it names, and the
            // leadership learns the outcome from the image (`Partition::lead`). Without an
            // answer the outcome is unknown (the record may still commit): the change stays
            // pending, counted in the high watermark, and is proposed again next round.
            if let Err(e) = node.propose(&record).await {
                tracing::debug!(topic = %partition.topic, partition = partition.index,
                    error = %e, "in-sync set change not answered; proposing it again");
            }
        }
    }
}

/// Parses `--controller-quorum-voters`: `1@host:port,2@host:port,...`.
pub fn parse_voters(text: &str) -> std::result::Result<Vec<(u64, String)>, String> {
    let voters: Vec<(u64, String)> = text
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|voter| {
            let (id, address) = voter
                .split_once('@')
                .ok_or_else(|| format!("voter '{voter}' is not ID@HOST:PORT"))?;
            let id: u64 = id
                .parse()
                .ok()
                .filter(|id| *id >= 1)
                .ok_or_else(|| format!("voter id '{id}' is not a positive number"))?;
            if !address.contains(':') {
                return Err(format!("voter address '{address}' is not HOST:PORT"));
            }
            Ok((id, address.to_string()))
        })
        .collect::<std::result::Result<_, String>>()?;
    if voters.is_empty() {
        return Err("no voters given (ID@HOST:PORT,...)".into());
    }
    let mut ids: Vec<u64> = voters.iter().map(|v| v.0).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != voters.len() {
        return Err("a voter id is listed twice".into());
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proposal without a quorum leader, or without an answer, reaches the client as
    /// REQUEST_TIMED_OUT saying whether the change may still happen; anything else is a bug.
    #[test]
    fn unconfirmed_proposals_say_whether_they_may_still_apply() {
        let timed_out = kafka_protocol::ResponseError::RequestTimedOut.code();
        let no_leader = not_confirmed(QuorumError::NoLeader {
            node: 1,
            waited_ms: 5_000,
        });
        assert_eq!(no_leader.code(), timed_out);
        assert!(
            no_leader.to_string().contains("nothing changed"),
            "{no_leader}"
        );
        let unknown = not_confirmed(QuorumError::Timeout {
            node: 1,
            waited_ms: 5_000,
        });
        assert_eq!(unknown.code(), timed_out);
        assert!(
            unknown.to_string().contains("may still take effect"),
            "{unknown}"
        );
        let bug = not_confirmed(QuorumError::UnknownNode { node: 1, peer: 9 });
        assert!(matches!(bug, BrokerError::Internal(_)), "{bug}");
    }
}
