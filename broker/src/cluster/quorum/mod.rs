//! The metadata quorum: one ordered log of opaque entries (cluster metadata records, encoded by
//! the caller), replicated by raft among the controller voters.
//!
//! tikv's raft-rs does the consensus (elections with pre-vote and check-quorum, replication,
//! commit). Around it, in this module:
//! - `core.rs`: sans-IO [`RawNode`](raft::RawNode) handling (persist before acknowledging),
//!   run by the driver on tokio and by `sim.rs` in a seeded, single-threaded simulation;
//! - `storage.rs`: the log file and hard state on disk (`DIR/log`, `DIR/hard-state`);
//! - `pending.rs`: proposals waiting for their index to commit, and lost ones detected;
//! - `transport.rs`: length-prefixed frames over TCP between voters' controller listeners;
//! - `driver.rs`: the task that ticks, steps, proposes, persists, sends and applies.
//!
//! Every voter applies every committed entry once per process lifetime, in index order,
//! starting with the entries already committed on disk at [`Quorum::start`]. The membership is
//! static (the voters given at start, the same on every voter). There are no snapshots nor log
//! compaction: the metadata log is small (broker heartbeats do not go through it), so a voter
//! keeps and replays it whole.

mod core;
mod driver;
mod pending;
mod storage;
mod transport;

#[cfg(test)]
mod sim;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use self::core::{Core, CoreConfig};
use self::driver::{Driver, Event};
use self::storage::FileDisk;
use self::transport::Transport;

/// Largest entry [`Quorum::propose`] accepts.
pub const ENTRY_BYTES_MAX: usize = 1024 * 1024;
/// Largest frame between voters (kind byte and body); a larger length closes the connection
/// before anything is allocated.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Proposals of this node waiting for commit (its own, forwarded ones it leads, and ones it
/// forwarded and awaits an answer for).
pub const PENDING_PROPOSALS_MAX: usize = 1024;
/// Frames queued for one peer; raft messages beyond it are dropped (raft sends again).
pub const PEER_QUEUE_FRAMES_MAX: usize = 1024;
/// Calls of [`Quorum::call`] awaiting their answer.
pub const CALLS_IN_FLIGHT_MAX: usize = 1024;
/// Calls one inbound connection may run at once; its reader waits beyond this.
pub const CALLS_PER_CONNECTION_MAX: usize = 64;
/// Inbound controller connections at once (voters need one each; the rest are refused).
pub const INBOUND_CONNECTIONS_MAX: usize = 64;
/// Events (messages, proposals) queued for the driver.
pub const DRIVER_EVENTS_MAX: usize = 4096;

/// A raft append carries at most 1 MiB of entries plus one entry: it fits in a frame.
const _: () = assert!(2 * ENTRY_BYTES_MAX + 64 * 1024 <= FRAME_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

/// Heartbeats go out every this many ticks.
const HEARTBEAT_TICKS: usize = 2;

/// One voter's settings.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// This voter's id, at least 1.
    pub node_id: u64,
    /// Every voter, this one included: (id, "host:port" of its controller listener). The same
    /// list on every voter.
    pub voters: Vec<(u64, String)>,
    /// Where the raft log and hard state live, e.g. `DATA/__cluster_metadata-0`.
    pub dir: PathBuf,
    /// The raft clock's period.
    pub tick: Duration,
    /// Ticks without a leader before a follower campaigns (randomised up to twice this).
    pub election_ticks: usize,
}

impl QuorumConfig {
    /// A config with the default clock: ticks of 100 ms, elections after 10 ticks (1 s).
    pub fn new(node_id: u64, voters: Vec<(u64, String)>, dir: PathBuf) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters,
            dir,
            tick: Duration::from_millis(100),
            election_ticks: 10,
        }
    }

    fn validate(&self) -> Result<(), QuorumError> {
        let invalid = |reason: String| QuorumError::InvalidConfig {
            node: self.node_id,
            reason,
        };
        if self.node_id == 0 {
            return Err(invalid("node ids start at 1".into()));
        }
        let ids: BTreeSet<u64> = self.voters.iter().map(|(id, _)| *id).collect();
        if ids.len() != self.voters.len() || ids.contains(&0) {
            return Err(invalid("voter ids must be distinct and at least 1".into()));
        }
        if !ids.contains(&self.node_id) {
            return Err(invalid(format!(
                "the voters {ids:?} do not include this node"
            )));
        }
        if self.election_ticks <= HEARTBEAT_TICKS {
            return Err(invalid(format!(
                "election_ticks must exceed {HEARTBEAT_TICKS}"
            )));
        }
        if self.tick.is_zero() {
            return Err(invalid("tick must be positive".into()));
        }
        Ok(())
    }
}

/// Called on the driver for each committed entry, in index order (replayed from index 1 at
/// start).
pub type ApplyFn = Box<dyn FnMut(u64 /*index*/, &[u8]) + Send>;

/// Requests another node sends over the controller connection (brokers' heartbeats and
/// controller requests), answered by the node that receives them.
pub trait ControllerService: Send + Sync + 'static {
    fn handle(&self, from: u64, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>>;
}

/// What went wrong, naming the node that reports it.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("node {node}: invalid quorum config: {reason}")]
    InvalidConfig { node: u64, reason: String },
    #[error("node {node}: metadata log in {dir}: {source}")]
    Storage {
        node: u64,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("node {node}: raft refused to start: {reason}")]
    Raft { node: u64, reason: String },
    #[error("node {node}: no metadata leader known after waiting {waited_ms} ms")]
    NoLeader { node: u64, waited_ms: u64 },
    #[error("node {node}: no answer within {waited_ms} ms; the proposal may or may not commit")]
    Timeout { node: u64, waited_ms: u64 },
    #[error(
        "node {node}: the proposal was dropped by a leader change (another entry committed at \
         index {index}); it will never commit, propose again"
    )]
    NotCommitted { node: u64, index: u64 },
    #[error("node {node}: too many pending metadata proposals (at most {max})")]
    TooManyPending { node: u64, max: usize },
    #[error("node {node}: metadata entry of {bytes} bytes exceeds the limit of {max} bytes")]
    EntryTooLarge { node: u64, bytes: usize, max: usize },
    #[error("node {node}: node {peer} is not a voter of this quorum")]
    UnknownNode { node: u64, peer: u64 },
    #[error("node {node}: cannot reach node {peer}: {reason}")]
    Unreachable {
        node: u64,
        peer: u64,
        reason: &'static str,
    },
    #[error("node {node}: node {peer} refused the proposal: {reason}")]
    Refused {
        node: u64,
        peer: u64,
        reason: &'static str,
    },
    #[error("node {node}: the metadata quorum is shut down")]
    Shutdown { node: u64 },
}

impl QuorumError {
    /// The proposal was certainly not appended anywhere: proposing again cannot duplicate it.
    fn not_appended(&self) -> bool {
        matches!(
            self,
            QuorumError::NoLeader { .. }
                | QuorumError::Unreachable { .. }
                | QuorumError::Refused { .. }
        )
    }
}

/// One voter of the metadata quorum. See the module doc.
pub struct Quorum {
    node_id: u64,
    events: mpsc::Sender<Event>,
    leader: watch::Receiver<Option<u64>>,
    transport: Arc<Transport>,
    service: Arc<dyn ControllerService>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl Quorum {
    /// Opens the on-disk raft state in `config.dir`, replays committed entries through `apply`,
    /// serves the controller connection on `listener` (bound by the caller to this node's
    /// address in `voters`), and spawns the driver. Must run inside a tokio runtime.
    pub async fn start(
        config: QuorumConfig,
        listener: tokio::net::TcpListener,
        apply: ApplyFn,
        service: Arc<dyn ControllerService>,
    ) -> Result<Arc<Quorum>, QuorumError> {
        config.validate()?;
        let node_id = config.node_id;
        let core_config = CoreConfig {
            node_id,
            voters: config.voters.iter().map(|(id, _)| *id).collect(),
            election_ticks: config.election_ticks,
            heartbeat_ticks: HEARTBEAT_TICKS,
            seed: rand::random(),
        };
        let dir = config.dir.clone();
        let logger = raft_logger(node_id);
        let opened = tokio::task::spawn_blocking(move || {
            let mut apply = apply;
            let disk = FileDisk::new(&dir);
            let mut replay = |entry: core::CommittedEntry| apply(entry.index, &entry.data);
            let opened = Core::open(&core_config, disk, &logger, &mut replay);
            opened.map(|(core, report)| (core, report, apply))
        })
        .await
        .expect("opening the metadata log does not panic");
        let (core, report, apply) = opened.map_err(|e| match e {
            core::CoreError::Io(source) => QuorumError::Storage {
                node: node_id,
                dir: config.dir.clone(),
                source,
            },
            other => QuorumError::Raft {
                node: node_id,
                reason: other.to_string(),
            },
        })?;
        if let Some(commit) = report.commit_lowered_from {
            tracing::warn!(
                node = node_id,
                commit,
                last_index = report.last_index,
                "the metadata log lost committed entries (damaged file): the leader re-sends them"
            );
        }
        let (events_tx, events_rx) = mpsc::channel(DRIVER_EVENTS_MAX);
        let (leader_tx, leader_rx) = watch::channel(None);
        let transport = Transport::start(
            node_id,
            &config.voters,
            listener,
            events_tx.clone(),
            Arc::clone(&service),
        );
        let (stop_tx, stop_rx) = oneshot::channel();
        let driver = Driver::new(node_id, core, apply, Arc::clone(&transport), leader_tx);
        let handle = tokio::spawn(driver.run(config.tick, events_rx, stop_rx));
        tracing::info!(
            node = node_id,
            entries = report.last_index,
            "metadata quorum voter started"
        );
        Ok(Arc::new(Quorum {
            node_id,
            events: events_tx,
            leader: leader_rx,
            transport,
            service,
            stop: Mutex::new(Some(stop_tx)),
            driver: Mutex::new(Some(handle)),
        }))
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The current raft leader as this node knows it.
    pub fn leader(&self) -> Option<u64> {
        *self.leader.borrow()
    }

    pub fn watch_leader(&self) -> watch::Receiver<Option<u64>> {
        self.leader.clone()
    }

    /// Since when voter `peer`'s controller listener has refused this node's connections, if
    /// it still does: its process is not running. A paused or unreachable voter is not
    /// reported (its listener accepts, or the connect times out).
    pub fn peer_refusing_since(&self, peer: u64) -> Option<Instant> {
        self.transport.refusing_since(peer)
    }

    /// Appends `entry` to the replicated log: proposes it on this node if it is the leader, or
    /// forwards it to the leader over the controller connection. Returns the entry's index once
    /// it is committed and applied on this node, so the caller can read its own local state.
    ///
    /// What an error lets the caller conclude:
    /// - [`QuorumError::NoLeader`], [`QuorumError::EntryTooLarge`],
    ///   [`QuorumError::TooManyPending`]: the entry was not appended; nothing will commit.
    /// - [`QuorumError::NotCommitted`]: it was appended, then dropped by a leader change:
    ///   another entry committed at its index, so it will never commit. Safe to propose again.
    /// - [`QuorumError::Timeout`] and [`QuorumError::Shutdown`]: unknown. The entry may still
    ///   commit (and then it is applied like any other): make entries idempotent, or read the
    ///   state back before proposing again.
    ///
    /// An entry is never applied twice; proposing it again after an unknown outcome may append
    /// a second copy, which is applied as a second entry.
    pub async fn propose(&self, entry: Vec<u8>, timeout: Duration) -> Result<u64, QuorumError> {
        self.check_entry_size(&entry)?;
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            self.wait_for_leader(deadline, started).await?;
            let (reply_tx, reply_rx) = oneshot::channel();
            let event = Event::Propose {
                data: entry.clone(),
                deadline,
                local_only: false,
                reply: reply_tx,
            };
            let waited = |started: Instant| started.elapsed().as_millis() as u64;
            let result = tokio::time::timeout_at(deadline.into(), async {
                self.events.send(event).await.ok()?;
                reply_rx.await.ok()
            })
            .await;
            let result = match result {
                Err(_) => {
                    return Err(QuorumError::Timeout {
                        node: self.node_id,
                        waited_ms: waited(started),
                    })
                }
                Ok(None) => return Err(QuorumError::Shutdown { node: self.node_id }),
                Ok(Some(result)) => result,
            };
            match result {
                Err(e) if e.not_appended() && Instant::now() < deadline => {
                    // The leader changed under us; wait a little for the new one to be known.
                    tracing::debug!(node = self.node_id, error = %e, "proposing again");
                    let pause = Duration::from_millis(20).min(deadline - Instant::now());
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    /// Appends `entry` only if this node leads the quorum now: never forwarded, never retried.
    /// For decisions only a leader may take (the controller's fencing): a node that was paused
    /// and still believes it leads gets its entry dropped ([`QuorumError::NotCommitted`]) or
    /// refused, instead of having it forwarded to the leader that replaced it.
    pub async fn propose_as_leader(
        &self,
        entry: Vec<u8>,
        timeout: Duration,
    ) -> Result<u64, QuorumError> {
        self.check_entry_size(&entry)?;
        let started = Instant::now();
        let (reply_tx, reply_rx) = oneshot::channel();
        let event = Event::Propose {
            data: entry,
            deadline: started + timeout,
            local_only: true,
            reply: reply_tx,
        };
        let result = tokio::time::timeout(timeout, async {
            self.events.send(event).await.ok()?;
            reply_rx.await.ok()
        })
        .await;
        match result {
            Err(_) => Err(QuorumError::Timeout {
                node: self.node_id,
                waited_ms: started.elapsed().as_millis() as u64,
            }),
            Ok(None) => Err(QuorumError::Shutdown { node: self.node_id }),
            Ok(Some(result)) => result,
        }
    }

    /// Refuses an entry above [`ENTRY_BYTES_MAX`].
    fn check_entry_size(&self, entry: &[u8]) -> Result<(), QuorumError> {
        if entry.len() > ENTRY_BYTES_MAX {
            return Err(QuorumError::EntryTooLarge {
                node: self.node_id,
                bytes: entry.len(),
                max: ENTRY_BYTES_MAX,
            });
        }
        Ok(())
    }

    /// Waits until some leader is known, or fails with `NoLeader` at `deadline`.
    async fn wait_for_leader(
        &self,
        deadline: Instant,
        started: Instant,
    ) -> Result<(), QuorumError> {
        let mut leader = self.leader.clone();
        let found = tokio::time::timeout_at(deadline.into(), async {
            leader.wait_for(Option::is_some).await.map(|_| ())
        });
        match found.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(QuorumError::Shutdown { node: self.node_id }),
            Err(_) => Err(QuorumError::NoLeader {
                node: self.node_id,
                waited_ms: started.elapsed().as_millis() as u64,
            }),
        }
    }

    /// Sends `request` to node `to`'s [`ControllerService`] and returns its answer (or asks the
    /// local service directly when `to` is this node).
    pub async fn call(
        &self,
        to: u64,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, QuorumError> {
        if to == self.node_id {
            let answer = tokio::time::timeout(timeout, self.service.handle(to, request)).await;
            return answer.map_err(|_| QuorumError::Timeout {
                node: self.node_id,
                waited_ms: timeout.as_millis() as u64,
            });
        }
        self.transport.call(to, request, timeout).await
    }

    /// Stops the driver and the controller listener and its connections. Proposals still
    /// waiting fail with [`QuorumError::Shutdown`]. Idempotent.
    pub async fn shutdown(&self) {
        if let Some(stop) = self.stop.lock().take() {
            let _ = stop.send(());
        }
        let driver = self.driver.lock().take();
        if let Some(driver) = driver {
            if let Err(e) = driver.await {
                if e.is_panic() {
                    tracing::error!(node = self.node_id, "the metadata quorum driver panicked");
                }
            }
        }
        self.transport.shutdown();
    }
}

/// raft-rs logs through slog: forward its records to `tracing` at debug level.
fn raft_logger(node_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_node" => node_id))
}

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return Ok(());
        }
        let mut fields = FieldText(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut fields);
        let _ = slog::KV::serialize(values, record, &mut fields);
        tracing::debug!(target: "eddy_broker::cluster::raft", "{}{}", record.msg(), fields.0);
        Ok(())
    }
}

struct FieldText(String);

impl slog::Serializer for FieldText {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}
