//! The active controller: the node that leads the metadata quorum watches brokers' liveness.
//!
//! Brokers register each incarnation and then heartbeat the active controller every
//! `broker.heartbeat.interval.ms`. A broker that has registered and caught up with the
//! metadata log up to its registration is unfenced (it may lead partitions again); one the
//! active controller has not heard from for `broker.session.timeout.ms` is fenced, and its
//! partitions get new leaders (both in `metadata.rs`, applied alike on every node). A node that
//! becomes the active controller gives every broker a full session from that moment, as KRaft
//! does: it cannot know when the previous controller last heard from them.
//!
//! A broker whose process is gone is fenced without waiting for its session to run out: when
//! its controller listener refuses the active controller's connections (nothing listens there,
//! which a paused, slow or partitioned broker never causes) and the controller has not heard
//! from it since the refusals began. On one machine, or when a process dies on a live host,
//! this turns a failover from the session timeout into a fraction of a second; a lost host
//! refuses nothing and is fenced when its session ends.
//!
//! The controller also moves leadership back to each partition's preferred replica once that
//! replica is alive and in sync (Kafka's `auto.leader.rebalance.enable`), checked every
//! `leader.imbalance.check.interval.ms`.
//!
//! Requests travel over the controller listener as JSON ([`ControllerRequest`]).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::metadata::{ClusterImage, MetadataRecord};
use super::quorum::{ControllerService, Quorum};

/// How long a proposal of the controller's own may take before it is tried again later.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a broker asks the active controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    Register {
        id: i32,
        incarnation: String,
        host: String,
        port: i32,
        rack: Option<String>,
    },
    Heartbeat {
        id: i32,
        incarnation: String,
        /// The index of the last metadata record the broker applied.
        applied_index: u64,
    },
}

/// The active controller's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerResponse {
    Ok,
    /// This node is not the active controller; ask `leader`.
    NotController {
        leader: Option<u64>,
    },
    Error(String),
}

/// Liveness settings.
#[derive(Debug, Clone, Copy)]
pub struct ControllerTimes {
    pub session_timeout: Duration,
    pub check_interval: Duration,
    pub leader_imbalance_check_interval: Duration,
}

/// The controller's state on one node (acting only while the node leads the quorum).
pub struct Controller {
    node_id: u64,
    times: ControllerTimes,
    image: watch::Receiver<Arc<ClusterImage>>,
    quorum: Mutex<Weak<Quorum>>,
    /// When each broker's session last started: its last heartbeat, or the moment this node
    /// became the active controller.
    last_heartbeat: Mutex<HashMap<i32, Instant>>,
    /// When this node last really heard from each broker (a registration or heartbeat).
    heard: Mutex<HashMap<i32, Instant>>,
    /// The brokers a fence or unfence record is on its way for (not proposed twice at once).
    in_flight: Mutex<HashMap<i32, Instant>>,
    /// Itself, for the futures its service hands out.
    me: Weak<Controller>,
}

impl Controller {
    pub fn new(
        node_id: u64,
        times: ControllerTimes,
        image: watch::Receiver<Arc<ClusterImage>>,
    ) -> Arc<Controller> {
        Arc::new_cyclic(|me| Controller {
            node_id,
            times,
            image,
            quorum: Mutex::new(Weak::new()),
            last_heartbeat: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// Connects the controller to its quorum (which is started with the controller as its
    /// service, hence after it) and starts the liveness checks.
    pub fn start(self: &Arc<Controller>, quorum: &Arc<Quorum>) {
        *self.quorum.lock() = Arc::downgrade(quorum);
        tokio::spawn(check_liveness(Arc::clone(self), quorum.watch_leader()));
    }

    fn quorum(&self) -> Option<Arc<Quorum>> {
        self.quorum.lock().upgrade()
    }

    fn is_active(&self) -> bool {
        self.quorum()
            .is_some_and(|q| q.leader() == Some(self.node_id))
    }

    async fn handle_request(
        self: Arc<Controller>,
        request: ControllerRequest,
    ) -> ControllerResponse {
        let Some(quorum) = self.quorum() else {
            return ControllerResponse::Error("the controller is shutting down".into());
        };
        if quorum.leader() != Some(self.node_id) {
            return ControllerResponse::NotController {
                leader: quorum.leader(),
            };
        }
        match request {
            ControllerRequest::Register {
                id,
                incarnation,
                host,
                port,
                rack,
            } => {
                self.heard_from(id);
                let known = self.image.borrow().brokers.get(&id).is_some_and(|b| {
                    b.incarnation == incarnation && b.host == host && b.port == port
                });
                if known {
                    return ControllerResponse::Ok;
                }
                let record = MetadataRecord::RegisterBroker {
                    id,
                    incarnation,
                    host,
                    port,
                    rack,
                };
                match quorum
                    .propose_as_leader(record.encode(), PROPOSE_TIMEOUT)
                    .await
                {
                    Ok(_) => ControllerResponse::Ok,
                    Err(e) => ControllerResponse::Error(e.to_string()),
                }
            }
            ControllerRequest::Heartbeat {
                id,
                incarnation,
                applied_index,
            } => {
                self.heard_from(id);
                let unfence = self.image.borrow().brokers.get(&id).is_some_and(|b| {
                    b.fenced && b.incarnation == incarnation && applied_index >= b.registered_at
                });
                if unfence {
                    let record = MetadataRecord::UnfenceBroker { id, incarnation };
                    self.propose_once(&quorum, id, record);
                }
                ControllerResponse::Ok
            }
        }
    }

    fn heard_from(&self, id: i32) {
        let now = Instant::now();
        self.last_heartbeat.lock().insert(id, now);
        self.heard.lock().insert(id, now);
    }

    /// Whether broker `id`'s process is gone: its controller listener has refused connections
    /// since before this node last heard from it (or this node never has).
    fn process_gone(&self, quorum: &Quorum, id: i32) -> bool {
        let Some(since) = quorum.peer_refusing_since(id as u64) else {
            return false;
        };
        self.heard
            .lock()
            .get(&id)
            .is_none_or(|heard| *heard < since)
    }

    /// Proposes a fence or unfence of broker `id` in the background, unless one is already
    /// on its way.
    fn propose_once(self: &Arc<Controller>, quorum: &Arc<Quorum>, id: i32, record: MetadataRecord) {
        {
            let mut in_flight = self.in_flight.lock();
            let busy = in_flight
                .get(&id)
                .is_some_and(|since| since.elapsed() < PROPOSE_TIMEOUT);
            if busy {
                return;
            }
            in_flight.insert(id, Instant::now());
        }
        let controller = Arc::clone(self);
        let quorum = Arc::clone(quorum);
        tokio::spawn(async move {
            if let Err(e) = quorum
                .propose_as_leader(record.encode(), PROPOSE_TIMEOUT)
                .await
            {
                tracing::warn!(broker = id, error = %e, "could not record a broker's liveness");
            }
            controller.in_flight.lock().remove(&id);
        });
    }

    /// Fences the unfenced brokers whose session expired or whose process is gone.
    fn fence_silent_brokers(self: &Arc<Controller>, quorum: &Arc<Quorum>) {
        let now = Instant::now();
        let image = Arc::clone(&self.image.borrow());
        for broker in image.brokers.values().filter(|b| !b.fenced) {
            let last = *self.last_heartbeat.lock().entry(broker.id).or_insert(now);
            let expired = now.duration_since(last) > self.times.session_timeout;
            let gone = !expired && self.process_gone(quorum, broker.id);
            if expired || gone {
                let why = if gone {
                    "its controller listener refuses connections"
                } else {
                    "it missed its session"
                };
                tracing::warn!(broker = broker.id, reason = why, "fencing a broker");
                let record = MetadataRecord::FenceBroker {
                    id: broker.id,
                    incarnation: broker.incarnation.clone(),
                };
                self.propose_once(quorum, broker.id, record);
            }
        }
    }

    /// Proposes moving leadership back to preferred replicas that are alive and in sync.
    fn restore_preferred_leaders(&self, quorum: &Arc<Quorum>) {
        let image = Arc::clone(&self.image.borrow());
        let mut records = Vec::new();
        for topic in image.topics.values() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                let Some(preferred) = partition.preferred_leader() else {
                    continue;
                };
                if partition.leader != preferred
                    && partition.isr.contains(&preferred)
                    && image.is_live(preferred)
                {
                    records.push(MetadataRecord::ElectPreferredLeader {
                        topic: topic.name.clone(),
                        partition: index as i32,
                    });
                }
            }
        }
        if records.is_empty() {
            return;
        }
        let quorum = Arc::clone(quorum);
        tokio::spawn(async move {
            for record in records {
                if let Err(e) = quorum
                    .propose_as_leader(record.encode(), PROPOSE_TIMEOUT)
                    .await
                {
                    tracing::debug!(error = %e, "preferred leader election not recorded");
                    return;
                }
            }
        });
    }
}

impl ControllerService for Controller {
    fn handle(&self, _from: u64, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        let controller = self.me.upgrade();
        Box::pin(async move {
            let response = match (serde_json::from_slice(&request), controller) {
                (Ok(request), Some(controller)) => controller.handle_request(request).await,
                (Err(e), _) => ControllerResponse::Error(format!("bad controller request: {e}")),
                (_, None) => ControllerResponse::Error("the controller is shutting down".into()),
            };
            serde_json::to_vec(&response).expect("controller responses serialise")
        })
    }
}

/// While this node is the active controller: fences silent brokers and restores preferred
/// leaders. Every broker gets a full session when the node becomes active.
async fn check_liveness(controller: Arc<Controller>, mut leader: watch::Receiver<Option<u64>>) {
    let mut tick = tokio::time::interval(controller.times.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_active = false;
    let mut last_rebalance = Instant::now();
    let mut last_check = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = leader.changed() => if changed.is_err() { return },
        }
        let Some(quorum) = controller.quorum() else {
            return;
        };
        // A controller that did not run for a while (its process was stopped, or starved of
        // CPU) heard no heartbeats meanwhile: that silence proves nothing, so every broker
        // gets a fresh session, as when a controller becomes active.
        let paused = last_check.elapsed() > controller.times.session_timeout / 2;
        last_check = Instant::now();
        let active = controller.is_active();
        if active && (!was_active || paused) {
            if !was_active {
                tracing::info!(
                    node = controller.node_id,
                    "this node is the active controller"
                );
            }
            let now = Instant::now();
            let mut last = controller.last_heartbeat.lock();
            last.clear();
            last.extend(
                controller
                    .image
                    .borrow()
                    .brokers
                    .keys()
                    .map(|id| (*id, now)),
            );
            last_rebalance = now;
        }
        was_active = active;
        if !active {
            continue;
        }
        if controller.image.borrow().cluster_id.is_none() {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let record = MetadataRecord::InitializeCluster { id };
            if let Err(e) = quorum
                .propose_as_leader(record.encode(), PROPOSE_TIMEOUT)
                .await
            {
                tracing::debug!(error = %e, "the cluster id is not recorded yet");
            }
        }
        controller.fence_silent_brokers(&quorum);
        if last_rebalance.elapsed() >= controller.times.leader_imbalance_check_interval {
            last_rebalance = Instant::now();
            controller.restore_preferred_leaders(&quorum);
        }
    }
}
