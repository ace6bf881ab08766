//! The sans-IO heart of a voter: raft-rs's [`RawNode`] over a [`RaftDisk`], without sockets,
//! timers or threads, so that the driver runs it on tokio and the simulation (`sim.rs`) runs
//! three of them in one thread from one seed.
//!
//! The caller feeds it ticks, received messages and proposals, then calls [`Core::advance`],
//! which handles raft-rs's `Ready` in the order raft requires: it persists new entries and the
//! hard state (log fsync first) before returning any message that depends on them, and returns
//! the entries committed since the last call, to be applied in order.

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::storage::RaftDisk;
use super::ENTRY_BYTES_MAX;

/// Most bytes of entries one append message carries (at least one entry is always sent).
const APPEND_MESSAGE_BYTES_MAX: u64 = 1024 * 1024;
/// Most append messages in flight to one follower.
const APPENDS_IN_FLIGHT_MAX: usize = 256;

/// Who proposed an entry: stored in the entry's `context`, so that the proposer can tell its own
/// entry from another one committed at the index it was given (a proposal lost when leadership
/// changed). `incarnation` is random per process, so ids never repeat across restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ProposalId {
    pub(crate) node: u64,
    pub(crate) incarnation: u64,
    pub(crate) sequence: u64,
}

impl ProposalId {
    pub(crate) const BYTES: usize = 24;

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(Self::BYTES);
        bytes.extend_from_slice(&self.node.to_be_bytes());
        bytes.extend_from_slice(&self.incarnation.to_be_bytes());
        bytes.extend_from_slice(&self.sequence.to_be_bytes());
        bytes
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<ProposalId> {
        if bytes.len() != Self::BYTES {
            return None;
        }
        let word = |i: usize| u64::from_be_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
        Some(ProposalId {
            node: word(0),
            incarnation: word(1),
            sequence: word(2),
        })
    }
}

/// A committed normal entry with a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CommittedEntry {
    pub(crate) index: u64,
    pub(crate) data: Vec<u8>,
    /// The proposer's id, when the entry carries one (all entries proposed through `Core` do).
    pub(crate) proposal: Option<ProposalId>,
}

/// What one [`Core::advance`] produced.
#[derive(Debug, Default)]
pub(crate) struct Output {
    /// To send to their `to` node, in order. Everything they claim is already durable.
    pub(crate) messages: Vec<Message>,
    /// Normal, non-empty entries newly committed, in index order: apply them in this order.
    pub(crate) committed: Vec<CommittedEntry>,
    /// The highest index committed and handed out so far (entries without payload included).
    pub(crate) applied: u64,
    /// The leader as this node knows it after this round.
    pub(crate) leader: Option<u64>,
}

/// Static settings of one core.
#[derive(Clone, Debug)]
pub(crate) struct CoreConfig {
    pub(crate) node_id: u64,
    pub(crate) voters: Vec<u64>,
    pub(crate) election_ticks: usize,
    pub(crate) heartbeat_ticks: usize,
    /// Seeds the election timeouts (raft-rs's own draw is pinned, see `pin_election_timeout`).
    pub(crate) seed: u64,
}

/// What opening found on disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OpenReport {
    /// Entries in the log.
    pub(crate) last_index: u64,
    /// The stored commit index pointed past the log (its tail was lost or cut): it was lowered.
    pub(crate) commit_lowered_from: Option<u64>,
}

/// Why a core stopped or refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CoreError {
    #[error("metadata log i/o failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("raft refused: {0}")]
    Raft(#[from] raft::Error),
    #[error("not the leader")]
    NotLeader,
}

/// One voter's raft state machine over its disk.
pub(crate) struct Core<D: RaftDisk> {
    node: RawNode<MemStorage>,
    disk: D,
    rng: StdRng,
    election_ticks: usize,
    /// Term and role when the election timeout was last drawn.
    drawn_for: Option<(u64, StateRole)>,
    applied: u64,
}

impl<D: RaftDisk> Core<D> {
    /// Loads the log and hard state from `disk`, hands every committed entry to `replay` in
    /// order, and starts raft as a follower (a single voter campaigns at once).
    pub(crate) fn open(
        config: &CoreConfig,
        mut disk: D,
        logger: &slog::Logger,
        replay: &mut dyn FnMut(CommittedEntry),
    ) -> Result<(Core<D>, OpenReport), CoreError> {
        assert!(config.node_id >= 1);
        assert!(config.voters.contains(&config.node_id));
        assert!(config.election_ticks > config.heartbeat_ticks);
        let (entries, mut hard_state) = disk.load()?;
        let mut report = OpenReport {
            last_index: entries.last().map_or(0, |e| e.index),
            commit_lowered_from: None,
        };
        if hard_state.commit > report.last_index {
            // Only a damaged log gets here (the log is synced before the hard state names a
            // commit). Raft refuses a commit past the log; the leader re-sends the entries.
            report.commit_lowered_from = Some(hard_state.commit);
            hard_state.commit = report.last_index;
        }
        let storage =
            MemStorage::new_with_conf_state(ConfState::from((config.voters.clone(), Vec::new())));
        for entry in &entries {
            if entry.index <= hard_state.commit {
                if let Some(committed) = committed_entry(entry) {
                    replay(committed);
                }
            }
        }
        {
            let mut core = storage.wl();
            if !entries.is_empty() {
                core.append(&entries)?;
            }
            core.set_hardstate(hard_state.clone());
        }
        let raft_config = raft::Config {
            id: config.node_id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: hard_state.commit,
            max_size_per_msg: APPEND_MESSAGE_BYTES_MAX,
            max_inflight_msgs: APPENDS_IN_FLIGHT_MAX,
            check_quorum: true,
            pre_vote: true,
            min_election_tick: config.election_ticks,
            max_election_tick: 2 * config.election_ticks,
            ..Default::default()
        };
        let node = RawNode::new(&raft_config, storage, logger)?;
        let mut core = Core {
            node,
            disk,
            rng: StdRng::seed_from_u64(config.seed),
            election_ticks: config.election_ticks,
            drawn_for: None,
            applied: hard_state.commit,
        };
        core.pin_election_timeout();
        if config.voters.len() == 1 {
            core.node.campaign()?;
            core.pin_election_timeout();
        }
        Ok((core, report))
    }

    /// One clock tick (elections, heartbeats). Returns whether raft has work for `advance`.
    pub(crate) fn tick(&mut self) -> bool {
        let ready = self.node.tick();
        self.pin_election_timeout();
        ready
    }

    /// Hands raft a message from a peer.
    pub(crate) fn step(&mut self, mut message: Message) -> Result<(), CoreError> {
        let last_index = self.node.raft.raft_log.last_index();
        if message.get_msg_type() == MessageType::MsgHeartbeat && message.commit > last_index {
            // The leader believes this node has entries it lost (a damaged log tail, cut at
            // recovery); raft-rs would abort. Entries up to `last_index` are a prefix of what
            // this node acknowledged, so committing them is safe; the leader re-sends the rest
            // after `peer_connected` reset its view of this node.
            message.commit = last_index;
        }
        let result = self.node.step(message);
        self.pin_election_timeout();
        Ok(result?)
    }

    /// A peer (re)connected, maybe restarted with a damaged log that lost entries it had
    /// acknowledged. A leader forgets what it knew the peer holds and probes from the start: the
    /// peer answers with its commit index, and the leader sends what is missing from there.
    /// raft-rs alone never lowers what a follower matched, so it would wait forever on an entry
    /// the follower no longer has. Costs one round trip for a healthy peer.
    pub(crate) fn peer_connected(&mut self, peer: u64) {
        if !self.is_leader() || peer == self.node.raft.id {
            return;
        }
        if let Some(progress) = self.node.raft.mut_prs().get_mut(peer) {
            progress.matched = 0;
            progress.become_probe();
        }
    }

    /// Appends `data` to the log if this node leads; returns the index it was given (not yet
    /// committed: watch `Output::committed` for that index and `proposal`).
    pub(crate) fn propose(
        &mut self,
        data: Vec<u8>,
        proposal: ProposalId,
    ) -> Result<u64, CoreError> {
        assert!(data.len() <= ENTRY_BYTES_MAX);
        if self.node.raft.state != StateRole::Leader {
            return Err(CoreError::NotLeader);
        }
        let last_index = self.node.raft.raft_log.last_index();
        self.node.propose(proposal.encode(), data)?;
        let index = self.node.raft.raft_log.last_index();
        // A leader appends a proposal at once, or refuses it (an error above).
        assert_eq!(index, last_index + 1);
        Ok(index)
    }

    /// Whether raft has work for `advance`.
    pub(crate) fn has_ready(&self) -> bool {
        self.node.has_ready()
    }

    /// The leader this node knows of.
    pub(crate) fn leader(&self) -> Option<u64> {
        match self.node.raft.leader_id {
            raft::INVALID_ID => None,
            id => Some(id),
        }
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    #[cfg(test)]
    pub(crate) fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The highest index handed out as committed.
    pub(crate) fn applied(&self) -> u64 {
        self.applied
    }

    /// The proposer of the entry at `index`, if this node has that entry and it carries one.
    pub(crate) fn proposal_at(&self, index: u64) -> Option<ProposalId> {
        let context = raft::GetEntriesContext::empty(false);
        let store = &self.node.raft.raft_log.store;
        let entries = raft::Storage::entries(store, index, index + 1, None, context).ok()?;
        entries.first().and_then(|e| ProposalId::decode(&e.context))
    }

    /// Handles raft's pending `Ready`: persist, collect messages and committed entries.
    ///
    /// An error means the disk failed part-way: the core must not be used again (its memory is
    /// ahead of its disk). Reopen it from the disk instead.
    pub(crate) fn advance(&mut self) -> Result<Output, CoreError> {
        let mut output = Output::default();
        if self.node.has_ready() {
            self.advance_ready(&mut output)?;
        }
        output.applied = self.applied;
        output.leader = self.leader();
        Ok(output)
    }

    fn advance_ready(&mut self, output: &mut Output) -> Result<(), CoreError> {
        let mut ready = self.node.ready();
        // Messages raft does not need persisted first (a leader's appends go out while it
        // writes its own copy; they are only sent once `advance` returns, which is later still).
        output.messages.extend(ready.take_messages());
        assert!(
            ready.snapshot().is_empty(),
            "the metadata log never snapshots"
        );
        // Committed entries are durable on a majority and already persisted here.
        self.collect_committed(ready.take_committed_entries(), output);
        let store = self.node.raft.raft_log.store.clone();
        if !ready.entries().is_empty() {
            self.disk.append(ready.entries())?;
            store.wl().append(ready.entries())?;
        }
        if let Some(hard_state) = ready.hs() {
            // The hard state may name entries appended just above as committed, and a vote
            // must not outlive the log it was given for: sync the log first.
            self.disk.sync()?;
            self.disk.save_hard_state(hard_state)?;
            store.wl().set_hardstate(hard_state.clone());
        }
        // Votes and append acknowledgements promise what is now on disk.
        self.disk.sync()?;
        output.messages.extend(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            let mut hard_state = store.rl().hard_state().clone();
            hard_state.commit = commit;
            self.disk.save_hard_state(&hard_state)?;
            store.wl().set_hardstate(hard_state);
        }
        output.messages.extend(light.take_messages());
        self.collect_committed(light.take_committed_entries(), output);
        self.node.advance_apply_to(self.applied);
        Ok(())
    }

    fn collect_committed(&mut self, entries: Vec<Entry>, output: &mut Output) {
        for entry in entries {
            assert_eq!(
                entry.index,
                self.applied + 1,
                "committed entries arrive in order"
            );
            self.applied = entry.index;
            if let Some(committed) = committed_entry(&entry) {
                output.committed.push(committed);
            }
        }
    }

    /// raft-rs draws a new election timeout from a thread-local RNG whenever it resets, which
    /// always comes with a new term or role. Replacing that draw with one from our seeded RNG
    /// makes a core deterministic given its seed and inputs (the simulation relies on it).
    /// Nothing reads the timeout between raft's draw and this one: a reset zeroes the elapsed
    /// ticks, and a tick is the only thing that compares them.
    fn pin_election_timeout(&mut self) {
        let now = (self.node.raft.term, self.node.raft.state);
        if self.drawn_for != Some(now) {
            self.drawn_for = Some(now);
            let ticks = self
                .rng
                .random_range(self.election_ticks..2 * self.election_ticks);
            self.node.raft.set_randomized_election_timeout(ticks);
        }
    }

    /// Gives the disk back (the simulation crashes it and reopens a core on it).
    #[cfg(test)]
    pub(crate) fn into_disk(self) -> D {
        self.disk
    }

    #[cfg(test)]
    pub(crate) fn disk_mut(&mut self) -> &mut D {
        &mut self.disk
    }
}

fn committed_entry(entry: &Entry) -> Option<CommittedEntry> {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
        return None;
    }
    Some(CommittedEntry {
        index: entry.index,
        data: entry.data.to_vec(),
        proposal: ProposalId::decode(&entry.context),
    })
}

/// Encodes a raft message for the wire.
pub(crate) fn encode_message(message: &Message) -> Vec<u8> {
    message
        .write_to_bytes()
        .expect("a raft message built by raft-rs encodes")
}

/// Decodes a raft message from the wire.
pub(crate) fn decode_message(bytes: &[u8]) -> Result<Message, protobuf::ProtobufError> {
    Message::parse_from_bytes(bytes)
}
