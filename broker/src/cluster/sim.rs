//! A seeded, deterministic simulation of partition replication among three brokers, in the
//! spirit of the metadata quorum's (`quorum/sim.rs`): one thread, a simulated clock and
//! network, and the real pieces of the replication path.
//!
//! Real: the metadata records and [`ClusterImage::apply`] (fencing, elections, AlterPartition's
//! epoch checks); [`Partition`] itself (`lead`, `follow`, `append`, `record_follower_fetch`,
//! `isr_change`, `follower_high_watermark`, `truncate_to`,
//! `append_as_follower`, `end_offset_for_epoch`, `check_leader`, `check_min_insync`, and
//! `wait_replicated`, polled once per step), so [`Leadership`]'s rules from `replica.rs`; and
//! each replica's [`Log`] in a directory of its own (on tmpfs when there is one), reopened and
//! recovered after every crash. Each broker process owns a current-thread tokio runtime that is
//! never driven (it hosts the partitions' flushers, which never run: syncs are done by the
//! simulation, as the flusher would, through `Log::prepare_flush` and `Log::flushed`).
//!
//! Modelled, mirroring the code they stand for: the node's reconciliation (`node.rs`:
//! `apply_role`, registration, heartbeats, the in-sync set checks and their AlterPartition
//! proposals with a timeout), the fetcher (`fetcher.rs`: truncation by OffsetsForLeaderEpoch,
//! KIP-279, then fetches, appends as follower and the leader's high watermark), the leader's
//! answers to those requests (`protocol/fetch.rs` with its long poll, `protocol/leader_epochs.rs`),
//! acks=all produce (`protocol/produce.rs`), and the active controller (`controller.rs`: fencing
//! a broker whose heartbeats stopped for the session timeout, or at once one whose process
//! crashed when the controller can reach its machine (its listener refuses), unfencing one caught up with the
//! metadata log, preferred leader elections). The metadata quorum is assumed correct (it has its
//! own simulation): committed records reach each broker in order, each at its own pace, and only
//! while it can reach the controller.
//!
//! Faults: messages dropped, duplicated (bar metadata proposals: the quorum commits each at most
//! once), delayed (so reordered), proposals committing seconds late (after their proposer gave
//! up waiting, as `Quorum::propose`'s timeout allows); partitions of the network
//! (brokers and controller) that heal; broker processes crashing (the log keeps what was
//! written) and restarting as a new incarnation; with topics that sync before acknowledging,
//! machine crashes that lose an unsynced tail of each log; SIGSTOP-like pauses (a paused broker
//! neither acts nor reads its messages, and resumes with its stale image: a zombie leader).
//!
//! A client produces acks=all batches (`min.insync.replicas=2`, three replicas) to whichever
//! broker a random broker's image names leader. A batch is acknowledged when the leader's
//! `wait_replicated` answers Ok (the high watermark passed it while the broker still led in the
//! epoch it was written in) and, for topics that sync before acknowledging, it is on the
//! leader's disk.
//!
//! After every step:
//! - at most one broker leads, and one broker incarnation accepts writes, per leader epoch;
//! - a leader's high watermark never goes down within its leadership;
//! - what any replica holds below its high watermark never changes and is the same on every
//!   replica (one committed log per partition, checked incrementally);
//! - every acknowledged record is in that committed log at its offset, and in the log of the
//!   current leader (once it has taken the leadership);
//! - the current leader counts every replica the controller recorded in sync (its in-sync set
//!   or its pending change), and every running member of the recorded set holds the leader's
//!   log up to its high watermark: any of them may be elected next.
//!
//! At the end the network heals and every broker runs; once the cluster has settled (every
//! replica in sync, every log end and high watermark equal) the three replicas of each partition
//! must be identical, as read again from their logs, and hold every acknowledged record.
//!
//! `EDDY_SIM_SEED=<n>` runs only seed `n` (a failure names its seed and step),
//! `EDDY_SIM_SEEDS=<n>` runs seeds `0..n`, `EDDY_SIM_TRACE=1` prints what happens.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use kafka_protocol::ResponseError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::metadata::{ClusterImage, MetadataRecord, NO_LEADER};
use super::replica::{InSyncRules, Leadership, Role};
use crate::config::TopicConfig;
use crate::log::batch::{decode_records, BatchBuilder};
use crate::log::Log;
use crate::partition::Partition;

/// Prints an event of the run when tracing.
macro_rules! trace {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.trace {
            eprintln!("{:>6} ms: {}", $sim.now, format!($($arg)*));
        }
    };
}

const BROKERS: usize = 3;
const PARTITIONS: usize = 2;
/// The controller's node in the network (brokers are nodes `0..BROKERS`, ids `1..=BROKERS`).
const CONTROLLER: usize = BROKERS;
/// The client's node: it reaches every broker whatever the network partition.
const CLIENT: usize = BROKERS + 1;
const TOPIC: &str = "t";
const MIN_INSYNC: usize = 2;

const STEP_MS: i64 = 10;
/// `broker.heartbeat.interval.ms` and `broker.session.timeout.ms` (Eddy's defaults).
const HEARTBEAT_MS: i64 = 500;
const SESSION_TIMEOUT_MS: i64 = 3_000;
/// The controller's liveness check (half the heartbeat interval, as `node.rs` sets it).
const CONTROLLER_CHECK_MS: i64 = 250;
/// `leader.imbalance.check.interval.ms`, shortened so that preferred elections happen.
const REBALANCE_MS: i64 = 5_000;
/// `node::ISR_CHECK_INTERVAL`.
const ISR_CHECK_MS: i64 = 200;
/// `replica.lag.time.max.ms`, shortened so that in-sync sets shrink and grow often.
const LAG_MAX_MS: i64 = 1_500;
/// How long an AlterPartition proposal may take before the leader forgets it
/// (`node::CONTROLLER_REQUEST_TIMEOUT`, shortened).
const PROPOSE_TIMEOUT_MS: i64 = 2_000;
/// How long a follower waits for an answer before it retries.
const REQUEST_TIMEOUT_MS: i64 = 1_000;
/// `fetcher::RETRY_BACKOFF`.
const RETRY_BACKOFF_MS: i64 = 100;
/// `replica.fetch.wait.max.ms`: the leader holds an empty fetch this long.
const FETCH_WAIT_MS: i64 = 500;
/// The produce request's timeout.
const PRODUCE_TIMEOUT_MS: i64 = 3_000;
/// Faults happen during this many steps (20 s of simulated time)...
const CHAOS_STEPS: u64 = 2_000;
/// ...then the cluster must settle within this many (30 s).
const QUIET_STEPS_MAX: u64 = 3_000;
const SEEDS: u64 = 120;

/// Fault rates, per step (10 ms) or per message.
struct Faults {
    drop: f64,
    duplicate: f64,
    delay_ms_max: i64,
    long_delay: f64,
    /// The chance that a metadata proposal commits only seconds later.
    slow_commit: f64,
    crash: f64,
    pause: f64,
    partition: f64,
    heal: f64,
    produce: f64,
    /// The chance per step that a broker applies newly committed metadata records.
    metadata: f64,
}

const CHAOS: Faults = Faults {
    drop: 0.03,
    duplicate: 0.02,
    delay_ms_max: 30,
    long_delay: 0.01,
    slow_commit: 0.05,
    crash: 0.002,
    pause: 0.002,
    partition: 0.002,
    heal: 0.004,
    produce: 0.25,
    metadata: 0.3,
};

const QUIET: Faults = Faults {
    drop: 0.0,
    duplicate: 0.0,
    delay_ms_max: 20,
    long_delay: 0.0,
    slow_commit: 0.0,
    crash: 0.0,
    pause: 0.0,
    partition: 0.0,
    heal: 1.0,
    produce: 0.0,
    metadata: 1.0,
};

/// A record's identity: its value, unique over a run.
type RecordId = u64;

#[derive(Debug, Clone)]
enum Body {
    Register {
        incarnation: String,
    },
    Heartbeat {
        incarnation: String,
        applied_index: u64,
    },
    AlterPartition {
        request: u64,
        record: MetadataRecord,
    },
    AlterPartitionDone {
        request: u64,
        index: u64,
    },
    EpochQuery {
        partition: usize,
        request: u64,
        current_leader_epoch: i32,
        leader_epoch: i32,
    },
    EpochAnswer {
        partition: usize,
        request: u64,
        error: i16,
        leader_epoch: i32,
        end_offset: i64,
    },
    Fetch(FetchRequest),
    FetchAnswer {
        partition: usize,
        request: u64,
        error: i16,
        high_watermark: i64,
        log_start_offset: i64,
        records: Bytes,
    },
    Produce {
        partition: usize,
        records: BytesMut,
        ids: Vec<RecordId>,
    },
}

#[derive(Debug, Clone)]
struct FetchRequest {
    partition: usize,
    request: u64,
    fetch_offset: i64,
    current_leader_epoch: i32,
    max_bytes: usize,
}

#[derive(Debug, Clone)]
struct Message {
    from: usize,
    /// The sender's incarnation: answers go to it only.
    from_incarnation: Option<String>,
    to: usize,
    /// For an answer, the incarnation that asked: a restarted process never sees it.
    to_incarnation: Option<String>,
    body: Body,
}

/// A follower's fetcher for one (leader, epoch), as `fetcher::follow` runs it.
struct Fetcher {
    leader: i32,
    epoch: i32,
    truncated: bool,
    in_flight: Option<InFlight>,
    next_at: i64,
}

struct InFlight {
    request: u64,
    deadline: i64,
    /// The epoch asked about (truncation) or the offset fetched from.
    local_epoch: i32,
    fetch_offset: i64,
}

/// An AlterPartition proposal on its way (`node::check_isr_forever`).
struct IsrRequest {
    request: u64,
    deadline: i64,
    /// The metadata index it was committed at, once the controller answered.
    committed: Option<u64>,
}

/// An acks=all produce waiting for its acknowledgement.
struct PendingProduce {
    partition: usize,
    last_offset: i64,
    leader_epoch: i32,
    records: Vec<(i64, RecordId)>,
    deadline: i64,
    /// The channel `wait_replicated` waits on: it is polled again only once this changed (or
    /// the durability it waited for came), as the real future is woken.
    woken: tokio::sync::watch::Receiver<i64>,
    polled: bool,
}

/// A follower's fetch the leader holds (long poll).
struct ParkedFetch {
    message: Message,
    request: FetchRequest,
    deadline: i64,
    seen_end: i64,
}

struct Replica {
    partition: Arc<Partition>,
    fetcher: Option<Fetcher>,
    isr_request: Option<IsrRequest>,
    /// (leader epoch, high watermark) last seen while leading, in this process.
    led: Option<(i32, i64)>,
}

/// A running broker process.
struct Process {
    incarnation: String,
    /// Hosts the partitions' flushers (never driven) and gives `wait_replicated` its timer.
    runtime: tokio::runtime::Runtime,
    replicas: Vec<Replica>,
    produces: Vec<PendingProduce>,
    parked: Vec<ParkedFetch>,
    next_heartbeat: i64,
    next_isr_check: i64,
}

struct Broker {
    id: i32,
    dir: tempfile::TempDir,
    process: Option<Process>,
    /// The metadata image this broker applied. It outlives a crash: the broker replays its copy
    /// of the metadata log when it starts.
    view: ClusterImage,
    restart_at: i64,
    paused_until: i64,
    /// After a machine crash: where each log is cut when the broker starts again.
    machine_cut: Option<Vec<i64>>,
    /// After a process crash, until the broker starts again: its controller listener refuses
    /// connections, so the controller fences it without waiting for its session to end (a
    /// crashed machine refuses nothing).
    refuses: bool,
    /// The record ids each replica's log holds, by offset, read from the log after each change.
    logs: Vec<Vec<RecordId>>,
    /// Offsets below this were compared with the committed log, per partition.
    verified: Vec<i64>,
}

/// What a run did, to show the simulation exercises what it claims.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Stats {
    acknowledged: u64,
    refused: u64,
    crashes: u64,
    machine_crashes: u64,
    pauses: u64,
    partitions: u64,
    leader_epochs: u64,
    truncations: u64,
    isr_changes: u64,
    /// AlterPartition proposals the leader gave up on (no answer in time).
    isr_timeouts: u64,
    /// A digest of the final logs and acknowledgements, for the determinism check.
    digest: u64,
}

struct Controller {
    last_heartbeat: BTreeMap<i32, i64>,
    next_check: i64,
    next_rebalance: i64,
}

struct Sim {
    /// `EDDY_SIM_TRACE=1`: print what happens (with `EDDY_SIM_SEED`, to study a failure).
    trace: bool,
    rng: StdRng,
    now: i64,
    step: u64,
    /// Whether the topic syncs before acknowledging (`flush.messages=1`).
    fsync: bool,
    brokers: Vec<Broker>,
    /// The committed metadata log and the image it builds.
    records: Vec<MetadataRecord>,
    image: ClusterImage,
    controller: Controller,
    network: BTreeMap<(i64, u64), Message>,
    sequence: u64,
    group: [u8; BROKERS + 1],
    next_request: u64,
    next_record: RecordId,
    incarnations: u64,
    /// Per partition: what replicas hold below their high watermarks, by offset.
    committed: Vec<Vec<RecordId>>,
    /// Per partition: acknowledged records by offset.
    acked: Vec<BTreeMap<i64, RecordId>>,
    /// (partition, leader epoch) -> the broker that led it, and the incarnation that wrote in it.
    leaders: BTreeMap<(usize, i32), i32>,
    writers: BTreeMap<(usize, i32), String>,
    stats: Stats,
}

fn topic_config(fsync: bool) -> TopicConfig {
    TopicConfig {
        segment_bytes: 4_096,
        min_insync_replicas: MIN_INSYNC as i32,
        flush_messages: if fsync { 1 } else { i64::MAX },
        ..TopicConfig::default()
    }
}

/// Syncs a replica's log as the partition's flusher does.
fn sync(partition: &Partition) {
    let job = partition.log().lock().prepare_flush();
    job.run().expect("a simulated broker's sync");
    partition.log().lock().flushed(job.end);
}

/// Every record id in the log from `from` to its end, by reading the log.
fn read_ids(partition: &Partition, from: i64) -> Vec<RecordId> {
    let end = partition.log_end_offset();
    let mut ids = Vec::new();
    let mut offset = from;
    while offset < end {
        let bytes = partition
            .read_replica(offset, 1 << 20)
            .expect("read a replica");
        let records = decode_records(&bytes).expect("decode a replica's batches");
        assert!(
            !records.is_empty(),
            "no batch at offset {offset} below {end}"
        );
        for record in records {
            if record.offset < offset {
                continue;
            }
            assert_eq!(record.offset, offset, "a gap in the log");
            let value = record.value.expect("every record has a value");
            ids.push(u64::from_be_bytes(value[..].try_into().expect("8 bytes")));
            offset += 1;
        }
    }
    ids
}

fn error_code(result: &crate::error::Result<impl Sized>) -> i16 {
    result.as_ref().err().map_or(0, |e| e.code())
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let fsync = rng.random_bool(0.5);
        let brokers = (0..BROKERS)
            .map(|i| Broker {
                id: i as i32 + 1,
                dir: tempfile::Builder::new()
                    .prefix("eddy-sim")
                    .tempdir_in("/dev/shm")
                    .or_else(|_| tempfile::tempdir())
                    .expect("tempdir"),
                process: None,
                view: ClusterImage::default(),
                restart_at: 0,
                paused_until: 0,
                machine_cut: None,
                refuses: false,
                logs: vec![Vec::new(); PARTITIONS],
                verified: vec![0; PARTITIONS],
            })
            .collect();
        let mut sim = Sim {
            trace: std::env::var("EDDY_SIM_TRACE").is_ok(),
            rng,
            now: 0,
            step: 0,
            fsync,
            brokers,
            records: Vec::new(),
            image: ClusterImage::default(),
            controller: Controller {
                last_heartbeat: BTreeMap::new(),
                next_check: 0,
                next_rebalance: REBALANCE_MS,
            },
            network: BTreeMap::new(),
            sequence: 0,
            group: [0; BROKERS + 1],
            next_request: 0,
            next_record: 0,
            incarnations: 0,
            committed: vec![Vec::new(); PARTITIONS],
            acked: vec![BTreeMap::new(); PARTITIONS],
            leaders: BTreeMap::new(),
            writers: BTreeMap::new(),
            stats: Stats::default(),
        };
        for i in 0..BROKERS {
            sim.start(i);
        }
        let replicas = super::metadata::assign_replicas(
            &(1..=BROKERS as i32)
                .map(|id| (id, None))
                .collect::<Vec<_>>(),
            0..PARTITIONS as i32,
            BROKERS,
            0,
        );
        let configs = [("min.insync.replicas".to_string(), MIN_INSYNC.to_string())];
        sim.commit(MetadataRecord::CreateTopic {
            name: TOPIC.into(),
            id: format!("topic-{seed}"),
            configs: configs.into_iter().collect(),
            replicas,
        });
        sim
    }

    /// Appends a record to the metadata log (the quorum commits it at once).
    fn commit(&mut self, record: MetadataRecord) -> u64 {
        trace!(self, "commit {}: {record:?}", self.records.len() + 1);
        self.records.push(record);
        let index = self.records.len() as u64;
        self.image
            .apply(index, self.records.last().expect("just pushed"));
        index
    }

    fn running(&self, i: usize) -> bool {
        self.brokers[i].process.is_some()
    }

    fn active(&self, i: usize) -> bool {
        self.running(i) && self.brokers[i].paused_until <= self.now
    }

    fn connected(&self, a: usize, b: usize) -> bool {
        a == CLIENT || b == CLIENT || self.group[a] == self.group[b]
    }

    // ---- processes ----

    /// Starts broker `i` as a new incarnation: opens (recovers) its logs, cut first after a
    /// machine crash.
    fn start(&mut self, i: usize) {
        self.incarnations += 1;
        let incarnation = format!("b{}-{}", i + 1, self.incarnations);
        trace!(self, "broker {} starts as {incarnation}", i + 1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let fsync = self.fsync;
        let now = self.now;
        let broker = &mut self.brokers[i];
        broker.refuses = false;
        let cut = broker.machine_cut.take();
        let mut replicas = Vec::new();
        {
            let _entered = runtime.enter();
            for p in 0..PARTITIONS {
                let dir = broker.dir.path().join(format!("{TOPIC}-{p}"));
                let (mut log, _) = Log::open(&dir, topic_config(fsync), 0, now).expect("open");
                if let Some(cut) = &cut {
                    log.truncate_to(cut[p]).expect("cut the unsynced tail");
                }
                let partition = Partition::start_replica(Arc::from(TOPIC), p as i32, log);
                broker.logs[p] = read_ids(&partition, 0);
                broker.verified[p] = 0;
                replicas.push(Replica {
                    partition,
                    fetcher: None,
                    isr_request: None,
                    led: None,
                });
            }
        }
        broker.process = Some(Process {
            incarnation,
            runtime,
            replicas,
            produces: Vec::new(),
            parked: Vec::new(),
            next_heartbeat: now,
            next_isr_check: now,
        });
        self.reconcile(i);
    }

    /// A process crash (the logs keep what was written) or a machine crash (each log loses an
    /// unsynced tail: some whole batches above its recovery point).
    fn crash(&mut self, i: usize, machine: bool) {
        let process = self.brokers[i]
            .process
            .take()
            .expect("crash a running broker");
        if machine {
            let mut cuts = Vec::new();
            for replica in &process.replicas {
                let log = replica.partition.log().lock();
                let (synced, end) = (log.recovery_point(), log.log_end_offset());
                cuts.push(self.rng.random_range(synced..=end));
                trace!(
                    self,
                    "  log synced to {synced} of {end}: cut at {}",
                    cuts.last().unwrap()
                );
            }
            self.brokers[i].machine_cut = Some(cuts);
            self.stats.machine_crashes += 1;
        } else {
            self.brokers[i].refuses = true;
        }
        drop(process);
        self.brokers[i].restart_at = self.now + self.rng.random_range(200..3_000);
        self.stats.crashes += 1;
    }

    /// Makes the broker's replicas match its image (`node::reconcile` and `apply_role`).
    fn reconcile(&mut self, i: usize) {
        let now = self.now;
        let broker = &mut self.brokers[i];
        let me = broker.id;
        let Some(process) = broker.process.as_mut() else {
            return;
        };
        let registered = broker
            .view
            .brokers
            .get(&me)
            .is_some_and(|b| b.incarnation == process.incarnation);
        let Some(topic) = broker.view.topics.get(TOPIC) else {
            return;
        };
        for (p, image) in topic.partitions.iter().enumerate() {
            let replica = &mut process.replicas[p];
            let local = &replica.partition;
            if registered && image.leader == me {
                replica.fetcher = None;
                let leadership = Leadership::new(
                    me,
                    (image.leader_epoch, image.partition_epoch),
                    &image.replicas,
                    &image.isr,
                    InSyncRules {
                        min_insync: MIN_INSYNC,
                        lag_max_ms: LAG_MAX_MS,
                        silence_max_ms: SESSION_TIMEOUT_MS,
                    },
                    (local.log_end_offset(), now),
                );
                local.lead(leadership);
                continue;
            }
            let leader = if registered { image.leader } else { NO_LEADER };
            let following = Role::Follower {
                leader,
                leader_epoch: image.leader_epoch,
            };
            if local.role() != following {
                local.follow(leader, image.leader_epoch);
            }
            let running = replica.fetcher.as_ref().map(|f| (f.leader, f.epoch));
            if running != Some((leader, image.leader_epoch)) {
                replica.fetcher = (leader != NO_LEADER).then_some(Fetcher {
                    leader,
                    epoch: image.leader_epoch,
                    truncated: false,
                    in_flight: None,
                    next_at: now,
                });
            }
        }
    }

    /// Reads what the log of broker `i`'s replica `p` gained since the last look, after an
    /// append or a truncation.
    fn refresh(&mut self, i: usize, p: usize) {
        let broker = &mut self.brokers[i];
        let partition = &broker.process.as_ref().expect("running").replicas[p].partition;
        let end = partition.log_end_offset();
        let known = &mut broker.logs[p];
        if (end as usize) < known.len() {
            known.truncate(end as usize);
        }
        let from = known.len() as i64;
        known.extend(read_ids(partition, from));
        broker.verified[p] = broker.verified[p].min(end);
    }

    // ---- the network ----

    fn send(&mut self, from: usize, to: usize, to_incarnation: Option<String>, body: Body) {
        self.send_with(from, to, to_incarnation, body, &CHAOS)
    }

    fn send_with(
        &mut self,
        from: usize,
        to: usize,
        to_incarnation: Option<String>,
        body: Body,
        faults: &Faults,
    ) {
        if self.rng.random_bool(faults.drop) {
            return;
        }
        let from_incarnation = self
            .brokers
            .get(from)
            .and_then(|b| b.process.as_ref())
            .map(|p| p.incarnation.clone());
        let message = Message {
            from,
            from_incarnation,
            to,
            to_incarnation,
            body,
        };
        // A metadata proposal commits at most once (the quorum's promise); anything else may
        // arrive twice.
        let once = matches!(message.body, Body::AlterPartition { .. });
        let copies = if !once && self.rng.random_bool(faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if once && self.rng.random_bool(faults.slow_commit) {
                // The quorum is electing a leader: the proposal commits late, perhaps after
                // its proposer gave up waiting (an unknown outcome, `Quorum::propose` says).
                self.rng.random_range(1_000..=5_000)
            } else if self.rng.random_bool(faults.long_delay) {
                self.rng.random_range(0..=3_000)
            } else {
                self.rng.random_range(0..=faults.delay_ms_max)
            };
            self.sequence += 1;
            self.network
                .insert((self.now + delay, self.sequence), message.clone());
        }
    }

    fn reply(&mut self, to: &Message, body: Body, faults: &Faults) {
        let incarnation = to.from_incarnation.clone();
        self.send_with(to.to, to.from, incarnation, body, faults);
    }

    fn deliver(&mut self, faults: &Faults) {
        let later = self.network.split_off(&(self.now + 1, 0));
        let due = std::mem::replace(&mut self.network, later);
        for ((_, sequence), message) in due {
            if !self.connected(message.from, message.to) {
                continue;
            }
            if message.to == CONTROLLER {
                self.control(message);
                continue;
            }
            let broker = &self.brokers[message.to];
            let Some(process) = broker.process.as_ref() else {
                continue;
            };
            if message
                .to_incarnation
                .as_ref()
                .is_some_and(|i| *i != process.incarnation)
            {
                continue;
            }
            if broker.paused_until > self.now {
                // A stopped process reads its socket when it resumes.
                self.network
                    .insert((broker.paused_until, sequence), message);
                continue;
            }
            self.serve(message, faults);
        }
    }

    // ---- the controller ----

    fn control(&mut self, message: Message) {
        let id = message.from as i32 + 1;
        match message.body.clone() {
            Body::Register { incarnation } => {
                self.controller.last_heartbeat.insert(id, self.now);
                let known = self
                    .image
                    .brokers
                    .get(&id)
                    .is_some_and(|b| b.incarnation == incarnation);
                if !known {
                    self.commit(MetadataRecord::RegisterBroker {
                        id,
                        incarnation,
                        host: format!("broker{id}"),
                        port: 9092,
                        rack: None,
                    });
                }
            }
            Body::Heartbeat {
                incarnation,
                applied_index,
            } => {
                self.controller.last_heartbeat.insert(id, self.now);
                let unfence = self.image.brokers.get(&id).is_some_and(|b| {
                    b.fenced && b.incarnation == incarnation && applied_index >= b.registered_at
                });
                if unfence {
                    self.commit(MetadataRecord::UnfenceBroker { id, incarnation });
                }
            }
            Body::AlterPartition { request, record } => {
                let index = self.commit(record);
                self.reply(
                    &message,
                    Body::AlterPartitionDone { request, index },
                    &CHAOS,
                );
            }
            other => panic!("the controller got {other:?}"),
        }
    }

    /// Fences silent brokers and restores preferred leaders (`controller.rs`).
    fn control_tick(&mut self) {
        if self.now >= self.controller.next_check {
            self.controller.next_check += CONTROLLER_CHECK_MS;
            let now = self.now;
            let brokers: Vec<(i32, String)> = self
                .image
                .brokers
                .values()
                .filter(|b| !b.fenced)
                .map(|b| (b.id, b.incarnation.clone()))
                .collect();
            for (id, incarnation) in brokers {
                let last = *self.controller.last_heartbeat.entry(id).or_insert(now);
                let i = id as usize - 1;
                let gone = self.brokers[i].refuses && self.connected(CONTROLLER, i);
                if gone || now - last > SESSION_TIMEOUT_MS {
                    self.commit(MetadataRecord::FenceBroker { id, incarnation });
                }
            }
        }
        if self.now >= self.controller.next_rebalance {
            self.controller.next_rebalance += REBALANCE_MS;
            for p in 0..PARTITIONS {
                let image = self.image.partition(TOPIC, p as i32).expect("partition");
                let Some(preferred) = image.preferred_leader() else {
                    continue;
                };
                if image.leader != preferred
                    && image.isr.contains(&preferred)
                    && self.image.is_live(preferred)
                {
                    self.commit(MetadataRecord::ElectPreferredLeader {
                        topic: TOPIC.into(),
                        partition: p as i32,
                    });
                }
            }
        }
    }

    // ---- a broker's requests and answers ----

    fn serve(&mut self, message: Message, faults: &Faults) {
        let i = message.to;
        match message.body.clone() {
            Body::EpochQuery {
                partition,
                request,
                current_leader_epoch,
                leader_epoch,
            } => {
                // `protocol::leader_epochs::epoch_end_offset`.
                let local = self.partition(i, partition);
                let checked = local.check_leader(current_leader_epoch);
                let (error, (leader_epoch, end_offset)) = match checked {
                    Ok(()) => (0, local.end_offset_for_epoch(leader_epoch)),
                    Err(e) => (e.code(), (-1, -1)),
                };
                let body = Body::EpochAnswer {
                    partition,
                    request,
                    error,
                    leader_epoch,
                    end_offset,
                };
                self.reply(&message, body, faults);
            }
            Body::Fetch(request) => {
                let seen_end = self.partition(i, request.partition).log_end_offset();
                let parked = ParkedFetch {
                    message,
                    request,
                    deadline: self.now + FETCH_WAIT_MS,
                    seen_end,
                };
                self.serve_fetch(i, parked, faults);
            }
            Body::Produce {
                partition,
                mut records,
                ids,
            } => self.produce(i, partition, &mut records, ids),
            Body::AlterPartitionDone { request, index } => {
                let process = self.brokers[i].process.as_mut().expect("running");
                for replica in &mut process.replicas {
                    if let Some(asked) = replica.isr_request.as_mut() {
                        if asked.request == request {
                            asked.committed = Some(index);
                        }
                    }
                }
            }
            Body::EpochAnswer {
                partition,
                request,
                error,
                leader_epoch,
                end_offset,
            } => self.truncate(i, partition, request, error, (leader_epoch, end_offset)),
            Body::FetchAnswer {
                partition,
                request,
                error,
                high_watermark,
                log_start_offset,
                records,
            } => self.fetched(
                i,
                partition,
                request,
                error,
                (high_watermark, log_start_offset),
                records,
            ),
            other => panic!("broker {} got {other:?}", i + 1),
        }
    }

    fn partition(&self, i: usize, p: usize) -> Arc<Partition> {
        let process = self.brokers[i].process.as_ref().expect("running");
        Arc::clone(&process.replicas[p].partition)
    }

    /// One pass of `protocol::fetch::read_partition` for a follower; answers now when there is
    /// data or an error or the wait is over, else holds the fetch until the log end moves.
    fn serve_fetch(&mut self, i: usize, mut parked: ParkedFetch, faults: &Faults) {
        let request = parked.request.clone();
        let replica = parked.message.from as i32 + 1;
        let local = self.partition(i, request.partition);
        let recorded = local.record_follower_fetch(
            replica,
            request.fetch_offset,
            request.current_leader_epoch,
            self.now,
        );
        let (mut error, mut high_watermark, mut log_start_offset) = (error_code(&recorded), -1, -1);
        let mut records = Bytes::new();
        if recorded.is_ok() {
            high_watermark = local.high_watermark();
            log_start_offset = local.log_start_offset();
            if request.fetch_offset != local.log_end_offset() {
                let read = local.read_replica(request.fetch_offset, request.max_bytes);
                error = error_code(&read);
                records = read.unwrap_or_default();
            }
        }
        let answer_now = error != 0 || !records.is_empty() || self.now >= parked.deadline;
        if !answer_now {
            parked.seen_end = local.log_end_offset();
            let process = self.brokers[i].process.as_mut().expect("running");
            process.parked.push(parked);
            return;
        }
        let body = Body::FetchAnswer {
            partition: request.partition,
            request: request.request,
            error,
            high_watermark,
            log_start_offset,
            records,
        };
        self.reply(&parked.message, body, faults);
    }

    /// Held fetches whose partition's log end moved or whose wait is over.
    fn serve_parked(&mut self, i: usize, faults: &Faults) {
        let process = self.brokers[i].process.as_mut().expect("running");
        let parked = std::mem::take(&mut process.parked);
        let mut keep = Vec::new();
        for fetch in parked {
            let end = self.partition(i, fetch.request.partition).log_end_offset();
            if end != fetch.seen_end || self.now >= fetch.deadline {
                self.serve_fetch(i, fetch, faults);
            } else {
                keep.push(fetch);
            }
        }
        let process = self.brokers[i].process.as_mut().expect("running");
        process.parked.extend(keep);
    }

    /// `protocol::produce::append`, then the acks=all wait is registered.
    fn produce(&mut self, i: usize, p: usize, records: &mut BytesMut, ids: Vec<RecordId>) {
        let local = self.partition(i, p);
        let appended = local
            .check_leader(-1)
            .and_then(|()| local.check_min_insync(self.now))
            .and_then(|()| {
                let leader_epoch = local.role().leader_epoch();
                Ok((local.append(records, self.now)?, leader_epoch))
            });
        let Ok((info, leader_epoch)) = appended else {
            self.stats.refused += 1;
            return;
        };
        let broker = &self.brokers[i];
        let incarnation = &broker.process.as_ref().expect("running").incarnation;
        let writer = self
            .writers
            .entry((p, leader_epoch))
            .or_insert_with(|| incarnation.clone());
        assert_eq!(
            writer, incarnation,
            "two brokers accepted writes in leader epoch {leader_epoch} of partition {p}"
        );
        assert_eq!(info.last_offset - info.base_offset + 1, ids.len() as i64);
        trace!(
            self,
            "broker {} p{p} appends {ids:?} at {} in epoch {leader_epoch}",
            i + 1,
            info.base_offset
        );
        self.refresh(i, p);
        let records = ids
            .into_iter()
            .enumerate()
            .map(|(k, id)| (info.base_offset + k as i64, id))
            .collect();
        let pending = PendingProduce {
            partition: p,
            last_offset: info.last_offset,
            leader_epoch,
            records,
            deadline: self.now + PRODUCE_TIMEOUT_MS,
            woken: local.watch_end(),
            polled: false,
        };
        let process = self.brokers[i].process.as_mut().expect("running");
        process.produces.push(pending);
    }

    /// Answers the produces whose records are replicated (and synced, for a topic that syncs
    /// before acknowledging): `wait_replicated`, polled once.
    fn acknowledge(&mut self, i: usize) {
        let fsync = self.fsync;
        let now = self.now;
        let process = self.brokers[i].process.as_mut().expect("running");
        let pending = std::mem::take(&mut process.produces);
        let mut keep = Vec::new();
        let mut acked = Vec::new();
        for mut produce in pending {
            let local = &process.replicas[produce.partition].partition;
            let durable = !fsync || local.log().lock().recovery_point() > produce.last_offset;
            let woken = !produce.polled || produce.woken.has_changed().unwrap_or(true);
            let outcome = if durable && woken {
                produce.polled = true;
                produce.woken.mark_unchanged();
                let _entered = process.runtime.enter();
                local
                    .wait_replicated(produce.last_offset, produce.leader_epoch, i32::MAX)
                    .now_or_never()
            } else {
                None
            };
            match outcome {
                Some(Ok(())) => {
                    trace!(
                        self,
                        "broker {} p{} acknowledges {:?} (hw {})",
                        i + 1,
                        produce.partition,
                        produce.records,
                        local.high_watermark()
                    );
                    acked.push(produce)
                }
                Some(Err(_)) => self.stats.refused += 1,
                None if now >= produce.deadline => self.stats.refused += 1,
                None => keep.push(produce),
            }
        }
        process.produces.extend(keep);
        for produce in acked {
            let p = produce.partition;
            for (offset, id) in produce.records {
                assert_eq!(
                    self.brokers[i].logs[p].get(offset as usize),
                    Some(&id),
                    "broker {} acknowledged offset {offset} of partition {p} without holding it",
                    i + 1
                );
                if let Some(committed) = self.committed[p].get(offset as usize) {
                    assert_eq!(
                        *committed, id,
                        "acknowledged record {id} at offset {offset} of partition {p}, \
                         where the committed log has {committed}"
                    );
                }
                self.acked[p].insert(offset, id);
                self.stats.acknowledged += 1;
            }
        }
    }

    // ---- a follower's fetcher ----

    fn run_fetchers(&mut self, i: usize) {
        for p in 0..PARTITIONS {
            let now = self.now;
            let process = self.brokers[i].process.as_mut().expect("running");
            let replica = &mut process.replicas[p];
            let Some(fetcher) = replica.fetcher.as_mut() else {
                continue;
            };
            if fetcher
                .in_flight
                .as_ref()
                .is_some_and(|f| now >= f.deadline)
            {
                fetcher.in_flight = None;
                fetcher.next_at = now + RETRY_BACKOFF_MS;
            }
            if fetcher.in_flight.is_some() || now < fetcher.next_at {
                continue;
            }
            let local = &replica.partition;
            let (leader, leader_epoch) = (fetcher.leader, fetcher.epoch);
            self.next_request += 1;
            let request = self.next_request;
            let mut in_flight = InFlight {
                request,
                deadline: now + REQUEST_TIMEOUT_MS,
                local_epoch: -1,
                fetch_offset: -1,
            };
            let body = if !fetcher.truncated {
                let Some(local_epoch) = local.log().lock().latest_epoch() else {
                    // An empty log: nothing to truncate; fetch right away.
                    fetcher.truncated = true;
                    fetcher.next_at = now;
                    continue;
                };
                in_flight.local_epoch = local_epoch;
                Body::EpochQuery {
                    partition: p,
                    request,
                    current_leader_epoch: leader_epoch,
                    leader_epoch: local_epoch,
                }
            } else {
                in_flight.fetch_offset = local.log_end_offset();
                let max_bytes = self.rng.random_range(100..4_000);
                Body::Fetch(FetchRequest {
                    partition: p,
                    request,
                    fetch_offset: in_flight.fetch_offset,
                    current_leader_epoch: leader_epoch,
                    max_bytes,
                })
            };
            let fetcher = self.brokers[i].process.as_mut().expect("running").replicas[p]
                .fetcher
                .as_mut()
                .expect("fetcher");
            fetcher.in_flight = Some(in_flight);
            self.send(i, leader as usize - 1, None, body);
        }
    }

    /// The fetcher of broker `i`'s replica `p`, if `request` is the one it waits for.
    fn answered(&mut self, i: usize, p: usize, request: u64) -> Option<InFlight> {
        let process = self.brokers[i].process.as_mut()?;
        let fetcher = process.replicas[p].fetcher.as_mut()?;
        if fetcher.in_flight.as_ref()?.request != request {
            return None;
        }
        fetcher.in_flight.take()
    }

    fn fetcher_mut(&mut self, i: usize, p: usize) -> &mut Fetcher {
        let process = self.brokers[i].process.as_mut().expect("running");
        process.replicas[p].fetcher.as_mut().expect("fetcher")
    }

    fn round_failed(&mut self, i: usize, p: usize) {
        let now = self.now;
        self.fetcher_mut(i, p).next_at = now + RETRY_BACKOFF_MS;
    }

    /// `fetcher::truncate`'s handling of the leader's OffsetsForLeaderEpoch answer.
    fn truncate(&mut self, i: usize, p: usize, request: u64, error: i16, answer: (i32, i64)) {
        let Some(asked) = self.answered(i, p, request) else {
            return;
        };
        if error != 0 {
            return self.round_failed(i, p);
        }
        let local = self.partition(i, p);
        let (leader_epoch, end_offset) = answer;
        let end = if end_offset < 0 {
            local.high_watermark()
        } else if leader_epoch == asked.local_epoch {
            end_offset
        } else {
            let (_, local_end) = local.end_offset_for_epoch(leader_epoch);
            end_offset.min(local_end.max(0))
        };
        trace!(
            self,
            "broker {} p{p} truncates to {end} (answer {answer:?} for epoch {}, end {})",
            i + 1,
            asked.local_epoch,
            local.log_end_offset()
        );
        let following = self.fetcher_mut(i, p).epoch;
        match local.truncate_to(end, following) {
            Ok(truncated) => {
                self.stats.truncations += u64::from(truncated);
                self.refresh(i, p);
                let now = self.now;
                let fetcher = self.fetcher_mut(i, p);
                fetcher.truncated = true;
                fetcher.next_at = now;
            }
            Err(_) => self.round_failed(i, p),
        }
    }

    /// `fetcher::fetch`'s handling of the leader's answer.
    fn fetched(
        &mut self,
        i: usize,
        p: usize,
        request: u64,
        error: i16,
        (high_watermark, log_start_offset): (i64, i64),
        records: Bytes,
    ) {
        let Some(asked) = self.answered(i, p, request) else {
            return;
        };
        let local = self.partition(i, p);
        let now = self.now;
        let asked_epoch = self.fetcher_mut(i, p).epoch;
        if error == ResponseError::OffsetOutOfRange.code() && asked.fetch_offset < log_start_offset
        {
            local
                .truncate_fully_and_start_at(log_start_offset, asked_epoch)
                .expect("start over");
            self.refresh(i, p);
            self.fetcher_mut(i, p).next_at = now;
            return;
        }
        if error != 0 {
            return self.round_failed(i, p);
        }
        let epoch = self.fetcher_mut(i, p).epoch;
        let leader = match local.role() {
            Role::Follower { leader, .. } => leader,
            _ => -1,
        };
        let following = Role::Follower {
            leader,
            leader_epoch: epoch,
        };
        if local.role() != following {
            self.fetcher_mut(i, p).next_at = now;
            return;
        }
        if !records.is_empty() {
            let mut records = BytesMut::from(&records[..]);
            match local.append_as_follower(&mut records, now, epoch) {
                Ok(info) => {
                    trace!(
                        self,
                        "broker {} p{p} copies {}..={} (leader hw {high_watermark})",
                        i + 1,
                        info.base_offset,
                        info.last_offset
                    );
                    self.refresh(i, p);
                    if local.fsync_before_ack() && info.last_offset >= 0 {
                        sync(&local);
                    }
                }
                Err(_) => return self.round_failed(i, p),
            }
        }
        local.follower_high_watermark(high_watermark);
        trace!(
            self,
            "broker {} p{p} follower hw {} end {}",
            i + 1,
            local.high_watermark(),
            local.log_end_offset()
        );
        self.fetcher_mut(i, p).next_at = now;
    }

    // ---- a broker's own timers ----

    fn heartbeat(&mut self, i: usize) {
        let broker = &mut self.brokers[i];
        let process = broker.process.as_mut().expect("running");
        if self.now < process.next_heartbeat {
            return;
        }
        process.next_heartbeat = self.now + HEARTBEAT_MS;
        let incarnation = process.incarnation.clone();
        let registered = broker
            .view
            .brokers
            .get(&broker.id)
            .is_some_and(|b| b.incarnation == incarnation);
        let body = if registered {
            Body::Heartbeat {
                incarnation,
                applied_index: broker.view.applied_index,
            }
        } else {
            Body::Register { incarnation }
        };
        self.send(i, CONTROLLER, None, body);
    }

    /// Applies some newly committed metadata records, then reconciles.
    fn catch_up(&mut self, i: usize, faults: &Faults) {
        if !self.connected(i, CONTROLLER) || !self.rng.random_bool(faults.metadata) {
            return;
        }
        let applied = self.brokers[i].view.applied_index as usize;
        let available = self.records.len() - applied;
        if available == 0 {
            return;
        }
        let count = self.rng.random_range(1..=available.min(4));
        for index in applied..applied + count {
            let record = &self.records[index];
            trace!(self, "broker {} applies {}: {record:?}", i + 1, index + 1);
            self.brokers[i].view.apply(index as u64 + 1, record);
        }
        self.reconcile(i);
    }

    /// `node::check_isr_forever`: proposes the in-sync set changes leaders want, and forgets
    /// those not taken.
    fn check_isr(&mut self, i: usize) {
        let now = self.now;
        let broker = &mut self.brokers[i];
        let process = broker.process.as_mut().expect("running");
        for replica in process.replicas.iter_mut() {
            let Some(asked) = replica.isr_request.as_ref() else {
                continue;
            };
            // `node.propose` returns once this broker applied the record, or times out; the
            // leadership itself learns the outcome from the image.
            let answered = match asked.committed {
                Some(index) => broker.view.applied_index >= index,
                None => false,
            };
            if !answered && now >= asked.deadline {
                self.stats.isr_timeouts += 1;
            }
            if answered || now >= asked.deadline {
                replica.isr_request = None;
            }
        }
        if now < process.next_isr_check {
            return;
        }
        process.next_isr_check = now + ISR_CHECK_MS;
        let mut asks = Vec::new();
        for (p, replica) in process.replicas.iter_mut().enumerate() {
            if replica.isr_request.is_some() {
                continue;
            }
            let Some((leader, leader_epoch, partition_epoch, isr)) =
                replica.partition.isr_change(now)
            else {
                continue;
            };
            self.next_request += 1;
            replica.isr_request = Some(IsrRequest {
                request: self.next_request,
                deadline: now + PROPOSE_TIMEOUT_MS,
                committed: None,
            });
            let record = MetadataRecord::AlterPartition {
                topic: TOPIC.into(),
                partition: p as i32,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            };
            asks.push(Body::AlterPartition {
                request: self.next_request,
                record,
            });
        }
        for body in asks {
            self.stats.isr_changes += 1;
            self.send(i, CONTROLLER, None, body);
        }
    }

    /// What a running, unstopped broker does in one step.
    fn act(&mut self, i: usize, faults: &Faults) {
        self.catch_up(i, faults);
        self.heartbeat(i);
        self.check_isr(i);
        self.run_fetchers(i);
        self.serve_parked(i, faults);
        if self.fsync && self.rng.random_bool(0.5) {
            // The flusher syncs what was appended (flush.messages=1 asks for it at once).
            let process = self.brokers[i].process.as_ref().expect("running");
            for replica in &process.replicas {
                sync(&replica.partition);
            }
        }
        self.acknowledge(i);
    }

    // ---- the client and the faults ----

    fn produce_some(&mut self) {
        let p = self.rng.random_range(0..PARTITIONS);
        let source = self.rng.random_range(0..BROKERS);
        let Some(image) = self.brokers[source].view.partition(TOPIC, p as i32) else {
            return;
        };
        if image.leader == NO_LEADER {
            return;
        }
        let leader = image.leader as usize - 1;
        let count = self.rng.random_range(1..=3);
        let mut builder = BatchBuilder::new(self.now, 64);
        let mut ids = Vec::new();
        for _ in 0..count {
            self.next_record += 1;
            let id = self.next_record;
            builder.push(self.now, None, Some(&id.to_be_bytes()), &[]);
            ids.push(id);
        }
        let body = Body::Produce {
            partition: p,
            records: builder.finish(),
            ids,
        };
        self.send(CLIENT, leader, None, body);
    }

    fn faults(&mut self, faults: &Faults) {
        for i in 0..BROKERS {
            if !self.running(i) && self.brokers[i].restart_at <= self.now {
                self.start(i);
            }
        }
        if self.rng.random_bool(faults.partition) {
            for group in self.group.iter_mut() {
                *group = self.rng.random_range(0..2);
            }
            self.stats.partitions += 1;
        }
        if self.rng.random_bool(faults.heal) {
            self.group = [0; BROKERS + 1];
        }
        if self.rng.random_bool(faults.crash) {
            let i = self.rng.random_range(0..BROKERS);
            if self.running(i) {
                let machine = self.fsync && self.rng.random_bool(0.5);
                self.crash(i, machine);
            }
        }
        if self.rng.random_bool(faults.pause) {
            let i = self.rng.random_range(0..BROKERS);
            if self.active(i) {
                self.brokers[i].paused_until = self.now + self.rng.random_range(200..6_000);
                trace!(
                    self,
                    "broker {} pauses until {}",
                    i + 1,
                    self.brokers[i].paused_until
                );
                self.stats.pauses += 1;
            }
        }
        if self.rng.random_bool(faults.produce) {
            self.produce_some();
        }
    }

    fn step(&mut self, faults: &Faults) {
        self.step += 1;
        self.now += STEP_MS;
        WHERE.with(|w| w.set((self.step, self.now, self.fsync)));
        self.deliver(faults);
        self.faults(faults);
        for i in 0..BROKERS {
            if self.active(i) {
                self.act(i, faults);
            }
        }
        self.control_tick();
        self.check();
    }

    // ---- the checks ----

    fn check(&mut self) {
        for p in 0..PARTITIONS {
            for i in 0..BROKERS {
                self.check_replica(i, p);
            }
            self.check_leader_holds_acknowledged(p);
            self.check_leader_counts_the_recorded_isr(p);
        }
    }

    /// The leader computes its high watermark over every replica the controller recorded in
    /// sync (Kafka's maximal ISR): otherwise a recorded member may lack records below the high
    /// watermark, and be elected.
    fn check_leader_counts_the_recorded_isr(&self, p: usize) {
        let image = self.image.partition(TOPIC, p as i32).expect("partition");
        if image.leader == NO_LEADER {
            return;
        }
        let broker = &self.brokers[image.leader as usize - 1];
        let Some(process) = broker.process.as_ref() else {
            return;
        };
        let Role::Leader(leadership) = process.replicas[p].partition.role() else {
            return;
        };
        if leadership.leader_epoch != image.leader_epoch {
            return;
        }
        let counted = |r: &i32| {
            leadership.isr.contains(r)
                || leadership
                    .pending_isr
                    .as_ref()
                    .is_some_and(|i| i.contains(r))
        };
        assert!(
            image.isr.iter().all(counted),
            "broker {}, leader of partition {p} in epoch {}, computes its high watermark over \
             {:?} (pending {:?}) while the controller recorded {:?} in sync",
            broker.id,
            image.leader_epoch,
            leadership.isr,
            leadership.pending_isr,
            image.isr
        );
        // So every running member of the recorded set holds what the leader committed: any of
        // them may be elected next.
        let high_watermark = process.replicas[p].partition.high_watermark();
        for member in &image.isr {
            let holder = &self.brokers[*member as usize - 1];
            if holder.process.is_some() {
                assert!(
                    holder.logs[p].len() as i64 >= high_watermark,
                    "broker {member} is in sync for partition {p} (epoch {}) with its log ending \
                     at {}, below the high watermark {high_watermark} of its leader {}",
                    image.leader_epoch,
                    holder.logs[p].len(),
                    broker.id
                );
            }
        }
    }

    fn check_replica(&mut self, i: usize, p: usize) {
        let broker = &mut self.brokers[i];
        let Some(process) = broker.process.as_mut() else {
            return;
        };
        let replica = &mut process.replicas[p];
        let local = &replica.partition;
        let (high_watermark, end) = (local.high_watermark(), local.log_end_offset());
        assert_eq!(
            broker.logs[p].len() as i64,
            end,
            "the log end of broker {} for partition {p} moved unseen",
            broker.id
        );
        match local.role() {
            Role::Leader(leadership) => {
                let epoch = leadership.leader_epoch;
                let leader = self.leaders.entry((p, epoch)).or_insert(broker.id);
                assert_eq!(
                    *leader, broker.id,
                    "brokers {leader} and {} both led partition {p} in epoch {epoch}",
                    broker.id
                );
                if let Some((led, before)) = replica.led.filter(|(led, _)| *led == epoch) {
                    assert!(
                        high_watermark >= before,
                        "the high watermark of broker {} (leader of partition {p} in epoch \
                         {led}) went back from {before} to {high_watermark}",
                        broker.id
                    );
                }
                replica.led = Some((epoch, high_watermark));
            }
            _ => replica.led = None,
        }
        // Below its high watermark, a replica holds the committed log.
        let bound = high_watermark.min(end);
        let committed = &mut self.committed[p];
        for offset in broker.verified[p]..bound {
            let id = broker.logs[p][offset as usize];
            match committed.get(offset as usize) {
                Some(c) => assert_eq!(
                    *c, id,
                    "broker {} holds record {id} at offset {offset} of partition {p} below its \
                     high watermark {high_watermark}, where another replica committed {c}",
                    broker.id
                ),
                None => {
                    assert_eq!(
                        committed.len() as i64,
                        offset,
                        "the committed log has a gap"
                    );
                    if let Some(acked) = self.acked[p].get(&offset) {
                        assert_eq!(
                            *acked, id,
                            "acknowledged {acked} at offset {offset} of partition {p}, but \
                             broker {} committed {id}",
                            broker.id
                        );
                    }
                    committed.push(id);
                }
            }
        }
        broker.verified[p] = bound;
    }

    /// The current leader, once it has taken the leadership, holds every acknowledged record.
    fn check_leader_holds_acknowledged(&self, p: usize) {
        let Some((&last, _)) = self.acked[p].last_key_value() else {
            return;
        };
        let image = self.image.partition(TOPIC, p as i32).expect("partition");
        if image.leader == NO_LEADER {
            return;
        }
        let broker = &self.brokers[image.leader as usize - 1];
        let Some(process) = broker.process.as_ref() else {
            return;
        };
        let leading = matches!(
            process.replicas[p].partition.role(),
            Role::Leader(l) if l.leader_epoch == image.leader_epoch
        );
        if !leading {
            return;
        }
        let log = &broker.logs[p];
        assert!(
            (log.len() as i64) > last,
            "broker {}, leader of partition {p} in epoch {}, lacks acknowledged offset {last} \
             (its log ends at {})",
            broker.id,
            image.leader_epoch,
            log.len()
        );
        // Below `verified` the log matched the committed log, which holds the acknowledged
        // records; above it, compare directly.
        for (offset, id) in self.acked[p].range(broker.verified[p]..) {
            assert_eq!(
                log[*offset as usize], *id,
                "broker {}, leader of partition {p} in epoch {}, holds another record at \
                 acknowledged offset {offset}",
                broker.id, image.leader_epoch
            );
        }
    }

    // ---- the run ----

    fn settled(&self) -> bool {
        if (0..BROKERS).any(|i| !self.active(i)) {
            return false;
        }
        let applied = self.records.len() as u64;
        if self.brokers.iter().any(|b| b.view.applied_index != applied)
            || self.image.brokers.values().any(|b| b.fenced)
        {
            return false;
        }
        (0..PARTITIONS).all(|p| {
            let image = self.image.partition(TOPIC, p as i32).expect("partition");
            if image.leader == NO_LEADER || image.isr.len() != BROKERS {
                return false;
            }
            let leader = self.partition(image.leader as usize - 1, p);
            let leading =
                matches!(leader.role(), Role::Leader(l) if l.leader_epoch == image.leader_epoch);
            let end = leader.log_end_offset();
            leading
                && (0..BROKERS).all(|i| {
                    let local = self.partition(i, p);
                    local.log_end_offset() == end && local.high_watermark() == end
                })
        })
    }

    fn run(mut self) -> Stats {
        for _ in 0..CHAOS_STEPS {
            self.step(&CHAOS);
        }
        // Heal: every broker runs, no more faults; the cluster must settle.
        for broker in &mut self.brokers {
            broker.paused_until = broker.paused_until.min(self.now);
            broker.restart_at = broker.restart_at.min(self.now);
        }
        for _ in 0..QUIET_STEPS_MAX {
            self.step(&QUIET);
            if self.settled() {
                return self.finish();
            }
        }
        let state: Vec<String> = (0..PARTITIONS)
            .map(|p| {
                let image = self.image.partition(TOPIC, p as i32).expect("partition");
                let replicas: Vec<String> = (0..BROKERS)
                    .filter(|i| self.running(*i))
                    .map(|i| {
                        let local = self.partition(i, p);
                        format!(
                            "broker {}: {:?} end {} hw {}",
                            i + 1,
                            local.role(),
                            local.log_end_offset(),
                            local.high_watermark()
                        )
                    })
                    .collect();
                format!("partition {p}: {image:?}; {}", replicas.join("; "))
            })
            .collect();
        panic!(
            "the cluster did not settle after healing: brokers {:?}; {}",
            self.image.brokers.values().collect::<Vec<_>>(),
            state.join(" | ")
        );
    }

    fn finish(mut self) -> Stats {
        let mut digest = 0xcbf2_9ce4_8422_2325u64;
        let mut mix = |value: u64| {
            digest ^= value;
            digest = digest.wrapping_mul(0x0100_0000_01b3);
        };
        for p in 0..PARTITIONS {
            let reference = read_ids(&self.partition(0, p), 0);
            for i in 0..BROKERS {
                let ids = read_ids(&self.partition(i, p), 0);
                assert_eq!(
                    ids,
                    self.brokers[i].logs[p],
                    "broker {}'s log of partition {p} is not what the simulation saw",
                    i + 1
                );
                assert_eq!(
                    ids,
                    reference,
                    "brokers 1 and {} ended with different logs of partition {p}",
                    i + 1
                );
            }
            assert_eq!(
                reference, self.committed[p],
                "the final log is not the committed log"
            );
            for (offset, id) in &self.acked[p] {
                assert_eq!(
                    reference.get(*offset as usize),
                    Some(id),
                    "acknowledged record {id} at offset {offset} of partition {p} is not in the \
                     final log"
                );
            }
            reference.iter().for_each(|id| mix(*id));
            self.acked[p].keys().for_each(|o| mix(*o as u64));
        }
        self.stats.leader_epochs = self.leaders.len() as u64;
        self.stats.digest = digest;
        self.stats
    }
}

thread_local! {
    /// The step, simulated time and topic mode of the run on this thread, for failure messages.
    static WHERE: std::cell::Cell<(u64, i64, bool)> = const { std::cell::Cell::new((0, 0, false)) };
}

fn run_seed(seed: u64) -> Stats {
    WHERE.with(|w| w.set((0, 0, false)));
    let outcome = std::panic::catch_unwind(|| Sim::new(seed).run());
    match outcome {
        Ok(stats) => stats,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let (step, now, fsync) = WHERE.with(|w| w.get());
            panic!(
                "simulation failed with seed {seed} at step {step} ({now} ms, fsync before ack: \
                 {fsync}) (replay: EDDY_SIM_SEED={seed}): {message}"
            );
        }
    }
}

#[test]
fn simulated_replication_keeps_acknowledged_records_and_converges() {
    let mut total = Stats::default();
    for seed in super::sim_seeds(SEEDS) {
        let stats = run_seed(seed);
        total.acknowledged += stats.acknowledged;
        total.refused += stats.refused;
        total.crashes += stats.crashes;
        total.machine_crashes += stats.machine_crashes;
        total.pauses += stats.pauses;
        total.partitions += stats.partitions;
        total.leader_epochs += stats.leader_epochs;
        total.truncations += stats.truncations;
        total.isr_changes += stats.isr_changes;
        total.isr_timeouts += stats.isr_timeouts;
    }
    eprintln!("replication simulation totals: {total:?}");
    assert!(total.acknowledged > 0 && total.crashes > 0 && total.partitions > 0);
}

#[test]
fn a_replication_seed_replays_identically() {
    assert_eq!(run_seed(7), run_seed(7));
}
