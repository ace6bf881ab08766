//! The driver: the task that owns a voter's [`Core`]. It ticks on an interval, steps messages
//! from peers, takes proposals (its own and forwarded ones), and after each round lets the core
//! persist (on a blocking thread: fsync), sends the messages, applies committed entries and
//! answers the proposals they decide.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use tokio::sync::{mpsc, oneshot, watch};

use super::core::{Core, CoreError, Output, ProposalId};
use super::pending::{Pending, Resolution};
use super::storage::FileDisk;
use super::transport::{ForwardResult, Frame, Transport};
use super::{ApplyFn, QuorumError, PENDING_PROPOSALS_MAX};

/// Events handled in one round before the core advances (then more are taken).
const EVENTS_PER_ROUND_MAX: usize = 256;

/// What the driver is told.
pub(crate) enum Event {
    /// A raft message from a peer.
    Raft(Box<Message>),
    /// A proposal of this node's caller.
    Propose {
        data: Vec<u8>,
        deadline: Instant,
        /// Refuse rather than forward when this node is not the leader.
        local_only: bool,
        reply: oneshot::Sender<Result<u64, QuorumError>>,
    },
    /// A proposal a follower forwarded to this node as its leader.
    Forwarded {
        from: u64,
        request: u64,
        proposal: ProposalId,
        data: Vec<u8>,
        deadline: Instant,
        answers: mpsc::Sender<Vec<u8>>,
    },
    /// A peer opened its connection to this node (it started, or reconnected).
    PeerConnected(u64),
    /// The leader's answer to a proposal this node forwarded.
    ForwardAnswer {
        from: u64,
        request: u64,
        result: ForwardResult,
    },
}

/// Who waits for a tracked proposal.
enum Waiter {
    Local {
        reply: oneshot::Sender<Result<u64, QuorumError>>,
        deadline: Instant,
    },
    Remote {
        answers: mpsc::Sender<Vec<u8>>,
        request: u64,
        deadline: Instant,
    },
}

impl Waiter {
    fn live(&self, now: Instant) -> bool {
        match self {
            Waiter::Local { reply, deadline } => *deadline > now && !reply.is_closed(),
            Waiter::Remote { deadline, .. } => *deadline > now,
        }
    }
}

/// A proposal forwarded to the leader, awaiting its answer.
struct Forwarding {
    leader: u64,
    proposal: ProposalId,
    reply: oneshot::Sender<Result<u64, QuorumError>>,
    deadline: Instant,
}

/// What moves to a blocking thread for `advance`: the core and the apply callback.
struct Machine {
    core: Core<FileDisk>,
    apply: ApplyFn,
}

pub(crate) struct Driver {
    node_id: u64,
    machine: Option<Machine>,
    transport: Arc<Transport>,
    leader: watch::Sender<Option<u64>>,
    pending: Pending<Waiter>,
    forwarded: HashMap<u64, Forwarding>,
    incarnation: u64,
    next_sequence: u64,
    next_request: u64,
}

impl Driver {
    pub(crate) fn new(
        node_id: u64,
        core: Core<FileDisk>,
        apply: ApplyFn,
        transport: Arc<Transport>,
        leader: watch::Sender<Option<u64>>,
    ) -> Driver {
        Driver {
            node_id,
            machine: Some(Machine { core, apply }),
            transport,
            leader,
            pending: Pending::new(PENDING_PROPOSALS_MAX),
            forwarded: HashMap::new(),
            incarnation: rand::random(),
            next_sequence: 1,
            next_request: 1,
        }
    }

    fn core(&mut self) -> &mut Core<FileDisk> {
        &mut self
            .machine
            .as_mut()
            .expect("the machine is home between rounds")
            .core
    }

    pub(crate) async fn run(
        mut self,
        tick: Duration,
        mut events: mpsc::Receiver<Event>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = interval.tick() => {
                    self.core().tick();
                    self.expire(Instant::now());
                }
                event = events.recv() => match event {
                    Some(event) => self.handle(event),
                    None => break,
                },
            }
            for _ in 1..EVENTS_PER_ROUND_MAX {
                match events.try_recv() {
                    Ok(event) => self.handle(event),
                    Err(_) => break,
                }
            }
            if let Err(e) = self.advance().await {
                // The disk failed with raft's memory ahead of it: stop rather than promise
                // what is not stored. A restart recovers from the disk.
                tracing::error!(node = self.node_id, error = %e, "metadata quorum stopped");
                break;
            }
        }
        self.leader.send_replace(None);
        // Dropping the waiters answers their callers with Shutdown.
        drop(self.pending.drain());
        self.forwarded.clear();
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Raft(message) => {
                if let Err(e) = self.core().step(*message) {
                    tracing::debug!(node = self.node_id, error = %e, "raft message refused");
                }
            }
            Event::Propose {
                data,
                deadline,
                local_only,
                reply,
            } => self.propose(data, deadline, local_only, reply),
            Event::Forwarded {
                from,
                request,
                proposal,
                data,
                deadline,
                answers,
            } => {
                let result = self.propose_forwarded(proposal, data, deadline, &answers, request);
                if let Err(result) = result {
                    tracing::debug!(node = self.node_id, from, ?result, "forward refused");
                    let _ = answers.try_send(Frame::ForwardAnswer { request, result }.encode());
                }
            }
            Event::PeerConnected(peer) => self.core().peer_connected(peer),
            Event::ForwardAnswer {
                from,
                request,
                result,
            } => self.forward_answered(from, request, result),
        }
        self.publish_leader();
    }

    fn has_room(&self) -> bool {
        self.pending.len() + self.forwarded.len() < PENDING_PROPOSALS_MAX
    }

    fn propose(
        &mut self,
        data: Vec<u8>,
        deadline: Instant,
        local_only: bool,
        reply: oneshot::Sender<Result<u64, QuorumError>>,
    ) {
        let node = self.node_id;
        if !self.has_room() {
            let max = PENDING_PROPOSALS_MAX;
            let _ = reply.send(Err(QuorumError::TooManyPending { node, max }));
            return;
        }
        let proposal = ProposalId {
            node,
            incarnation: self.incarnation,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        if self.core().is_leader() {
            match self.core().propose(data, proposal) {
                Ok(index) => {
                    let waiter = Waiter::Local { reply, deadline };
                    let inserted = self.pending.insert(index, proposal, waiter);
                    assert!(inserted.is_ok(), "room was checked");
                }
                Err(e) => {
                    let reason = if matches!(e, CoreError::NotLeader) {
                        "not the leader"
                    } else {
                        "raft dropped it (leadership transfer?)"
                    };
                    let _ = reply.send(Err(QuorumError::Refused {
                        node,
                        peer: node,
                        reason,
                    }));
                }
            }
            return;
        }
        if local_only {
            let reason = "not the leader";
            let _ = reply.send(Err(QuorumError::Refused {
                node,
                peer: node,
                reason,
            }));
            return;
        }
        let Some(leader) = self.core().leader() else {
            let _ = reply.send(Err(QuorumError::NoLeader { node, waited_ms: 0 }));
            return;
        };
        let request = self.next_request;
        self.next_request += 1;
        let timeout_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis();
        let frame = Frame::Forward {
            request,
            proposal,
            timeout_ms: timeout_ms.min(u32::MAX as u128) as u32,
            data,
        };
        match self.transport.send(leader, &frame) {
            Ok(()) => {
                let forwarding = Forwarding {
                    leader,
                    proposal,
                    reply,
                    deadline,
                };
                self.forwarded.insert(request, forwarding);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn propose_forwarded(
        &mut self,
        proposal: ProposalId,
        data: Vec<u8>,
        deadline: Instant,
        answers: &mpsc::Sender<Vec<u8>>,
        request: u64,
    ) -> Result<(), ForwardResult> {
        if deadline <= Instant::now() {
            return Err(ForwardResult::Expired);
        }
        if !self.has_room() {
            return Err(ForwardResult::TooMany);
        }
        let index = self
            .core()
            .propose(data, proposal)
            .map_err(|_| ForwardResult::NotLeader)?;
        let waiter = Waiter::Remote {
            answers: answers.clone(),
            request,
            deadline,
        };
        let inserted = self.pending.insert(index, proposal, waiter);
        assert!(inserted.is_ok(), "room was checked");
        Ok(())
    }

    fn forward_answered(&mut self, from: u64, request: u64, result: ForwardResult) {
        let node = self.node_id;
        let Some(forwarding) = self.forwarded.remove(&request) else {
            return; // expired meanwhile
        };
        assert_eq!(
            forwarding.leader, from,
            "answers come back on the connection to the leader"
        );
        let refused = |reason| QuorumError::Refused {
            node,
            peer: from,
            reason,
        };
        let answer = match result {
            ForwardResult::Committed(index) => {
                if self.core().applied() < index {
                    // Wait until this node applied it too, so its caller reads its own write.
                    let waiter = Waiter::Local {
                        reply: forwarding.reply,
                        deadline: forwarding.deadline,
                    };
                    let inserted = self.pending.insert(index, forwarding.proposal, waiter);
                    assert!(inserted.is_ok(), "a forwarded proposal held its room");
                    return;
                }
                if self.core().proposal_at(index) == Some(forwarding.proposal) {
                    Ok(index)
                } else {
                    Err(QuorumError::NotCommitted { node, index })
                }
            }
            ForwardResult::Lost(index) => Err(QuorumError::NotCommitted { node, index }),
            ForwardResult::NotLeader => Err(refused("it is not the leader")),
            ForwardResult::TooMany => Err(refused("too many pending metadata proposals")),
            ForwardResult::Expired => Err(refused("the proposal expired on the way")),
        };
        let _ = forwarding.reply.send(answer);
    }

    fn expire(&mut self, now: Instant) {
        self.pending.retain(|waiter| waiter.live(now));
        self.forwarded
            .retain(|_, f| f.deadline > now && !f.reply.is_closed());
    }

    /// Lets the core persist (on a blocking thread), then sends, applies and answers.
    async fn advance(&mut self) -> Result<(), CoreError> {
        if !self.core().has_ready() {
            return Ok(());
        }
        let mut machine = self
            .machine
            .take()
            .expect("the machine is home between rounds");
        let (machine, output) = tokio::task::spawn_blocking(move || {
            let output = machine.core.advance();
            if let Ok(output) = &output {
                for entry in &output.committed {
                    (machine.apply)(entry.index, &entry.data);
                }
            }
            (machine, output)
        })
        .await
        .expect("persisting and applying metadata entries does not panic");
        self.machine = Some(machine);
        let output = output?;
        self.dispatch(output);
        Ok(())
    }

    fn dispatch(&mut self, output: Output) {
        let Output {
            messages,
            committed,
            applied,
            leader: _,
        } = output;
        for message in messages {
            self.transport.send_raft(message);
        }
        for (waiter, resolution) in self.pending.resolve(&committed, applied) {
            self.answer(waiter, resolution);
        }
        self.publish_leader();
    }

    fn answer(&self, waiter: Waiter, resolution: Resolution) {
        let node = self.node_id;
        match waiter {
            Waiter::Local { reply, .. } => {
                let result = match resolution {
                    Resolution::Committed(index) => Ok(index),
                    Resolution::Lost(index) => Err(QuorumError::NotCommitted { node, index }),
                };
                let _ = reply.send(result);
            }
            Waiter::Remote {
                answers, request, ..
            } => {
                let result = match resolution {
                    Resolution::Committed(index) => ForwardResult::Committed(index),
                    Resolution::Lost(index) => ForwardResult::Lost(index),
                };
                // A full answer queue drops it: the follower times out (outcome unknown).
                let _ = answers.try_send(Frame::ForwardAnswer { request, result }.encode());
            }
        }
    }

    fn publish_leader(&mut self) {
        let leader = self.core().leader();
        self.leader.send_if_modified(|known| {
            let changed = *known != leader;
            *known = leader;
            changed
        });
    }
}
