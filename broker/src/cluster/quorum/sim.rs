//! A seeded, deterministic simulation of three voters' cores, in the spirit of TigerBeetle's
//! VOPR: real `Core` and `Pending` code over a simulated clock, network and disk, in one thread.
//!
//! The network drops, duplicates, delays (so reorders) messages and partitions nodes; nodes
//! crash (between rounds, or in the middle of persisting: the in-memory disk fails after a
//! random number of operations) and restart later, losing what was written but not synced;
//! leaders get random proposals. After every event the checks run:
//! - safety: no two nodes ever apply different entries at one index, in any lifetime;
//! - order: within a lifetime, a node's applied index only grows, and it applies from index 1
//!   (the replay at open) without gaps;
//! - election safety: one leader per term;
//! - lost means lost: a proposal reported `Lost` never commits anywhere.
//!
//! At the end the network heals, every node runs, and after a quiet period a leader exists, a
//! last proposal commits, and every node applied every proposal acknowledged as committed.
//!
//! `EDDY_SIM_SEED=<n>` runs only seed `n` (a failure names its seed).

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::core::{CommittedEntry, Core, CoreConfig, ProposalId};
use super::pending::{Pending, Resolution};
use super::storage::MemDisk;

const NODES: usize = 3;
const STEP_MS: u64 = 10;
const TICK_MS: u64 = 100;
const ELECTION_TICKS: usize = 10;
/// Faults happen during this many steps (15 s of simulated time)...
const CHAOS_STEPS: u64 = 1_500;
/// ...then the cluster must settle within this many (15 s).
const QUIET_STEPS_MAX: u64 = 1_500;
const SEEDS: u64 = 200;

/// Fault rates, per step (10 ms) or per message.
struct Faults {
    drop: f64,
    duplicate: f64,
    delay_ms_max: u64,
    long_delay: f64,
    crash: f64,
    partition: f64,
    heal: f64,
    propose: f64,
}

const CHAOS: Faults = Faults {
    drop: 0.05,
    duplicate: 0.03,
    delay_ms_max: 40,
    long_delay: 0.01,
    crash: 0.002,
    partition: 0.002,
    heal: 0.004,
    propose: 0.06,
};

const QUIET: Faults = Faults {
    drop: 0.0,
    duplicate: 0.0,
    delay_ms_max: 20,
    long_delay: 0.0,
    crash: 0.0,
    partition: 0.0,
    heal: 1.0,
    propose: 0.0,
};

struct Node {
    core: Option<Core<MemDisk>>,
    /// The disk of a crashed node, until it restarts.
    crashed_disk: Option<MemDisk>,
    restart_at_ms: u64,
    pending: Pending<ProposalId>,
    /// This lifetime's applied indexes with a payload, and the highest index applied at all.
    applied_entries: BTreeSet<u64>,
    applied: u64,
    tick_phase_ms: u64,
}

/// What a run did, to show the simulation exercises what it claims.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Stats {
    acknowledged: u64,
    lost: u64,
    crashes: u64,
    crashes_mid_persist: u64,
    partitions: u64,
    leader_terms: u64,
    delivered: u64,
    /// A digest of everything committed and who led, for the determinism check.
    digest: u64,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    now_ms: u64,
    nodes: Vec<Node>,
    /// Messages in flight by (delivery time, sequence).
    network: BTreeMap<(u64, u64), (usize, Message)>,
    sequence: u64,
    /// Partition group of each node: messages pass only within a group.
    group: [u8; NODES],
    /// The entry committed at each index, as first applied anywhere.
    chosen: BTreeMap<u64, (Vec<u8>, Option<ProposalId>)>,
    chosen_ids: BTreeSet<ProposalId>,
    acknowledged: BTreeMap<ProposalId, u64>,
    lost: BTreeSet<ProposalId>,
    leaders: BTreeMap<u64, usize>,
    proposals: u64,
    logger: slog::Logger,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let mut sim = Sim {
            seed,
            nodes: Vec::new(),
            network: BTreeMap::new(),
            sequence: 0,
            group: [0; NODES],
            chosen: BTreeMap::new(),
            chosen_ids: BTreeSet::new(),
            acknowledged: BTreeMap::new(),
            lost: BTreeSet::new(),
            leaders: BTreeMap::new(),
            proposals: 0,
            now_ms: 0,
            logger,
            stats: Stats::default(),
            rng: StdRng::seed_from_u64(rng.random()),
        };
        for i in 0..NODES {
            let node = Node {
                core: None,
                crashed_disk: Some(MemDisk::new()),
                restart_at_ms: 0,
                pending: Pending::new(super::PENDING_PROPOSALS_MAX),
                applied_entries: BTreeSet::new(),
                applied: 0,
                tick_phase_ms: rng.random_range(0..TICK_MS / STEP_MS) * STEP_MS,
            };
            sim.nodes.push(node);
            sim.restart(i);
        }
        sim
    }

    fn config(&mut self, i: usize) -> CoreConfig {
        CoreConfig {
            node_id: i as u64 + 1,
            voters: (1..=NODES as u64).collect(),
            election_ticks: ELECTION_TICKS,
            heartbeat_ticks: 2,
            seed: self.rng.random(),
        }
    }

    fn restart(&mut self, i: usize) {
        let disk = self.nodes[i]
            .crashed_disk
            .take()
            .expect("restart a crashed node");
        let config = self.config(i);
        let mut replayed = Vec::new();
        let opened = Core::open(&config, disk, &self.logger, &mut |e| replayed.push(e));
        let (core, report) = opened.expect("a simulated disk opens");
        assert_eq!(
            report.commit_lowered_from, None,
            "the hard state outran the synced log"
        );
        let node = &mut self.nodes[i];
        node.core = Some(core);
        node.applied_entries.clear();
        node.applied = 0;
        for entry in replayed {
            self.apply(i, &entry);
        }
        let node = &mut self.nodes[i];
        node.applied = node.core.as_ref().expect("running").applied();
        // Its peers see it connect (the transport's hello).
        for (j, other) in self.nodes.iter_mut().enumerate() {
            if let (Some(core), true) = (other.core.as_mut(), j != i) {
                core.peer_connected(i as u64 + 1);
            }
        }
    }

    fn crash(&mut self, i: usize) {
        let core = self.nodes[i].core.take().expect("crash a running node");
        let mut disk = core.into_disk();
        disk.crash(&mut self.rng);
        let node = &mut self.nodes[i];
        node.crashed_disk = Some(disk);
        node.pending.drain();
        node.restart_at_ms = self.now_ms + self.rng.random_range(200..3_000);
        self.stats.crashes += 1;
    }

    fn apply(&mut self, i: usize, entry: &CommittedEntry) {
        let node = &mut self.nodes[i];
        assert!(
            entry.index > node.applied,
            "node {} applied {} after {}",
            i + 1,
            entry.index,
            node.applied
        );
        node.applied_entries.insert(entry.index);
        let value = (entry.data.clone(), entry.proposal);
        match self.chosen.get(&entry.index) {
            Some(chosen) => assert_eq!(
                chosen,
                &value,
                "node {} applied a different entry at {}",
                i + 1,
                entry.index
            ),
            None => {
                self.chosen.insert(entry.index, value);
                if let Some(id) = entry.proposal {
                    assert!(
                        !self.lost.contains(&id),
                        "a proposal reported lost committed at {}",
                        entry.index
                    );
                    assert!(self.chosen_ids.insert(id), "a proposal committed twice");
                }
            }
        }
    }

    fn send(&mut self, from: usize, message: Message, faults: &Faults) {
        let to = message.to as usize - 1;
        assert!(to < NODES && to != from);
        if self.rng.random_bool(faults.drop) {
            return;
        }
        let copies = if self.rng.random_bool(faults.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.rng.random_bool(faults.long_delay) {
                self.rng.random_range(0..=2_000)
            } else {
                self.rng.random_range(0..=faults.delay_ms_max)
            };
            self.sequence += 1;
            self.network.insert(
                (self.now_ms + delay, self.sequence),
                (from, message.clone()),
            );
        }
    }

    fn deliver(&mut self) {
        let later = self.network.split_off(&(self.now_ms + 1, 0));
        let due = std::mem::replace(&mut self.network, later);
        for (_, (from, message)) in due {
            let to = message.to as usize - 1;
            if self.group[from] != self.group[to] {
                continue;
            }
            if let Some(core) = self.nodes[to].core.as_mut() {
                let _ = core.step(message);
                self.stats.delivered += 1;
            }
        }
    }

    fn faults(&mut self, faults: &Faults) {
        for i in 0..NODES {
            if self.nodes[i].core.is_none() && self.nodes[i].restart_at_ms <= self.now_ms {
                self.restart(i);
            }
        }
        if self.rng.random_bool(faults.partition) {
            for group in self.group.iter_mut() {
                *group = self.rng.random_range(0..2);
            }
            self.stats.partitions += 1;
        }
        if self.rng.random_bool(faults.heal) {
            self.group = [0; NODES];
        }
        if self.rng.random_bool(faults.propose) {
            let i = self.rng.random_range(0..NODES);
            self.propose(i);
        }
        if self.rng.random_bool(faults.crash) {
            let i = self.rng.random_range(0..NODES);
            if let Some(core) = self.nodes[i].core.as_mut() {
                if self.rng.random_bool(0.5) {
                    self.crash(i);
                } else {
                    // The node dies inside its next persist, after a few disk operations.
                    core.disk_mut().fail_after(self.rng.random_range(0..4));
                }
            }
        }
    }

    fn propose(&mut self, i: usize) -> Option<(u64, ProposalId)> {
        let core = self.nodes[i].core.as_mut()?;
        self.proposals += 1;
        let id = ProposalId {
            node: i as u64 + 1,
            incarnation: self.seed,
            sequence: self.proposals,
        };
        let data = format!("seed {} proposal {}", self.seed, self.proposals).into_bytes();
        let index = core.propose(data, id).ok()?;
        self.nodes[i].pending.insert(index, id, id).expect("room");
        Some((index, id))
    }

    /// One step of 10 ms: deliver, tick, faults, then let every node persist and send.
    fn step(&mut self, faults: &Faults) {
        self.now_ms += STEP_MS;
        self.deliver();
        for node in &mut self.nodes {
            if let Some(core) = node.core.as_mut() {
                if self.now_ms % TICK_MS == node.tick_phase_ms {
                    core.tick();
                }
            }
        }
        self.faults(faults);
        for i in 0..NODES {
            self.advance(i, faults);
        }
    }

    fn advance(&mut self, i: usize, faults: &Faults) {
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        let Ok(output) = core.advance() else {
            // The disk failed as told: the node dies, and nothing of this round gets out.
            self.stats.crashes_mid_persist += 1;
            self.crash(i);
            return;
        };
        if core.is_leader() {
            let term = core.term();
            let leader = *self.leaders.entry(term).or_insert(i);
            assert_eq!(leader, i, "two leaders in term {term}");
        }
        for entry in &output.committed {
            self.apply(i, entry);
        }
        assert!(
            output.applied >= self.nodes[i].applied,
            "applied index went back"
        );
        self.nodes[i].applied = output.applied;
        for message in output.messages {
            self.send(i, message, faults);
        }
        let resolved = self.nodes[i]
            .pending
            .resolve(&output.committed, output.applied);
        for (id, resolution) in resolved {
            match resolution {
                Resolution::Committed(index) => {
                    assert_eq!(
                        self.chosen[&index].1,
                        Some(id),
                        "acknowledged the wrong entry"
                    );
                    self.acknowledged.insert(id, index);
                }
                Resolution::Lost(index) => {
                    assert!(
                        !self.chosen_ids.contains(&id),
                        "reported lost but committed"
                    );
                    // Another entry (maybe one without payload, not in `chosen`) took the index.
                    assert_ne!(self.chosen.get(&index).and_then(|c| c.1), Some(id));
                    self.lost.insert(id);
                }
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        let cores: Vec<_> = self.nodes.iter().filter_map(|n| n.core.as_ref()).collect();
        let leader = cores.iter().position(|c| c.is_leader())?;
        let leader_id = leader as u64 + 1;
        cores
            .iter()
            .all(|c| c.leader() == Some(leader_id))
            .then_some(leader)
    }

    fn run(mut self) -> Stats {
        for _ in 0..CHAOS_STEPS {
            self.step(&CHAOS);
        }
        // Heal: everyone up, no more faults; a leader must emerge and commit a last entry.
        for i in 0..NODES {
            match self.nodes[i].core.as_mut() {
                None => self.restart(i),
                Some(core) => core.disk_mut().fail_never(),
            }
        }
        let mut last: Option<(u64, ProposalId)> = None;
        for _ in 0..QUIET_STEPS_MAX {
            self.step(&QUIET);
            if last.is_some_and(|(_, id)| self.lost.contains(&id)) {
                last = None; // a leader change dropped it: propose another
            }
            if let (None, Some(leader)) = (last, self.leader()) {
                last = Some(self.propose(leader).expect("the leader takes a proposal"));
            }
            if let Some((index, id)) = last {
                if self.acknowledged.contains_key(&id)
                    && self.nodes.iter().all(|n| n.applied >= index)
                {
                    return self.finish();
                }
            }
        }
        panic!(
            "no progress after healing: leader {:?}, applied {:?}, last proposal {last:?}",
            self.leader(),
            self.nodes.iter().map(|n| n.applied).collect::<Vec<_>>()
        );
    }

    fn finish(mut self) -> Stats {
        for (id, index) in &self.acknowledged {
            for (i, node) in self.nodes.iter().enumerate() {
                assert!(
                    node.applied_entries.contains(index),
                    "node {} never applied acknowledged {id:?} at {index}",
                    i + 1
                );
            }
        }
        self.stats.acknowledged = self.acknowledged.len() as u64;
        self.stats.lost = self.lost.len() as u64;
        self.stats.leader_terms = self.leaders.len() as u64;
        let mut digest = 0xcbf2_9ce4_8422_2325u64;
        let mut mix = |value: u64| {
            digest ^= value;
            digest = digest.wrapping_mul(0x0100_0000_01b3);
        };
        for (index, (data, _)) in &self.chosen {
            mix(*index);
            data.iter().for_each(|b| mix(u64::from(*b)));
        }
        for (term, leader) in &self.leaders {
            mix(*term);
            mix(*leader as u64);
        }
        mix(self.stats.delivered);
        self.stats.digest = digest;
        self.stats
    }
}

fn run_seed(seed: u64) -> Stats {
    let outcome = std::panic::catch_unwind(|| Sim::new(seed).run());
    match outcome {
        Ok(stats) => stats,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("simulation failed with seed {seed} (replay: EDDY_SIM_SEED={seed}): {message}");
        }
    }
}

#[test]
fn simulated_voters_never_diverge_and_recover_after_faults() {
    let mut total = Stats::default();
    for seed in crate::cluster::sim_seeds(SEEDS) {
        let stats = run_seed(seed);
        total.acknowledged += stats.acknowledged;
        total.lost += stats.lost;
        total.crashes += stats.crashes;
        total.crashes_mid_persist += stats.crashes_mid_persist;
        total.partitions += stats.partitions;
        total.leader_terms += stats.leader_terms;
        total.delivered += stats.delivered;
    }
    eprintln!("simulation totals: {total:?}");
    assert!(total.acknowledged > 0 && total.crashes > 0 && total.partitions > 0);
}

#[test]
fn a_seed_replays_identically() {
    assert_eq!(run_seed(7), run_seed(7));
}
