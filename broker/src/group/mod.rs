//! Consumer groups: Kafka's classic group protocol, committed offsets and lag.
//!
//! A group moves through Empty -> PreparingRebalance (members join) -> CompletingRebalance (the
//! leader member computes the assignment, client side) -> Stable (members heartbeat). Any join,
//! leave or session timeout starts a new rebalance and bumps the generation; requests from an
//! older generation are fenced with ILLEGAL_GENERATION. Committed offsets live in the compacted
//! topic `__consumer_offsets` ([`offsets`]) and are restored from it on start-up.

pub mod assignor;
pub mod offsets;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::limits::GROUP_MEMBERS_MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a member sends when it joins.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub protocol_type: String,
    /// (protocol name, member metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// JoinGroup v4+: a member without an id is first given one and asked to rejoin.
    pub require_known_member_id: bool,
}

/// How a join request proceeds.
pub enum JoinStarted {
    /// The member waits for the rebalance; the receiver resolves when it completes.
    Waiting(oneshot::Receiver<Result<JoinOutcome>>),
    /// JoinGroup v4+: the member was given this id and must rejoin with it.
    MemberIdRequired(String),
}

/// What a member learns when a join completes.
#[derive(Debug, Clone)]
pub struct JoinOutcome {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol_name: String,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: every member's id, instance id and metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

struct Member {
    group_instance_id: Option<String>,
    protocols: Vec<(String, Bytes)>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    join_waiter: Option<oneshot::Sender<Result<JoinOutcome>>>,
    sync_waiter: Option<oneshot::Sender<Result<Bytes>>>,
    assignment: Bytes,
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: String,
    protocol_name: String,
    leader: String,
    members: BTreeMap<String, Member>,
    /// When the current rebalance stops waiting for members to rejoin.
    rebalance_deadline: Instant,
    /// A new group waits at least this long for more members (`group.initial.rebalance.delay.ms`).
    earliest_completion: Instant,
}

impl Group {
    fn new() -> Group {
        let now = Instant::now();
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol_name: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            rebalance_deadline: now,
            earliest_completion: now,
        }
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// Lag of one partition for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    pub committed_offset: i64,
    pub high_watermark: i64,
    pub lag_records: i64,
}

/// The group coordinator of this node (every group is coordinated here on a single node).
pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    committed: Mutex<BTreeMap<(String, String, i32), CommittedOffset>>,
    initial_rebalance_delay: Duration,
}

impl GroupCoordinator {
    pub(crate) fn new(initial_rebalance_delay: Duration) -> GroupCoordinator {
        GroupCoordinator {
            groups: Mutex::new(HashMap::new()),
            committed: Mutex::new(BTreeMap::new()),
            initial_rebalance_delay,
        }
    }

    /// Joins (or rejoins) a group; the receiver resolves when the rebalance completes.
    pub fn join(&self, request: JoinRequest) -> Result<JoinStarted> {
        if request.group_id.is_empty() {
            return Err(BrokerError::InvalidGroupId);
        }
        let mut groups = self.groups.lock();
        let group = groups
            .entry(request.group_id.clone())
            .or_insert_with(Group::new);
        if !group.members.is_empty() && group.protocol_type != request.protocol_type {
            return Err(BrokerError::InconsistentGroupProtocol(request.group_id));
        }
        let common = request.protocols.iter().any(|(name, _)| {
            group
                .members
                .values()
                .all(|m| m.protocols.iter().any(|p| &p.0 == name))
        });
        if !common {
            return Err(BrokerError::InconsistentGroupProtocol(request.group_id));
        }
        let member_id = if request.member_id.is_empty() {
            let id = format!("{}-{}", request.client_id, uuid::Uuid::new_v4());
            if request.require_known_member_id {
                return Ok(JoinStarted::MemberIdRequired(id));
            }
            id
        } else {
            request.member_id.clone()
        };
        if !group.members.contains_key(&member_id) && group.members.len() >= GROUP_MEMBERS_MAX {
            return Err(BrokerError::InvalidRequest(
                "group has too many members".into(),
            ));
        }
        let (sender, receiver) = oneshot::channel();
        let now = Instant::now();
        let member = group
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                group_instance_id: request.group_instance_id.clone(),
                protocols: Vec::new(),
                session_timeout: request.session_timeout,
                rebalance_timeout: request.rebalance_timeout,
                last_seen: now,
                join_waiter: None,
                sync_waiter: None,
                assignment: Bytes::new(),
            });
        member.protocols = request.protocols;
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.last_seen = now;
        member.join_waiter = Some(sender);
        group.protocol_type = request.protocol_type;
        if group.state != GroupState::PreparingRebalance {
            self.start_rebalance(group);
        }
        self.try_complete_join(group, now);
        Ok(JoinStarted::Waiting(receiver))
    }

    fn start_rebalance(&self, group: &mut Group) {
        let now = Instant::now();
        if group.state == GroupState::CompletingRebalance {
            for member in group.members.values_mut() {
                if let Some(waiter) = member.sync_waiter.take() {
                    let _ = waiter.send(Err(BrokerError::RebalanceInProgress(String::new())));
                }
            }
        }
        let longest = group
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        group.earliest_completion = if group.state == GroupState::Empty {
            now + self.initial_rebalance_delay
        } else {
            now
        };
        group.rebalance_deadline = now + longest.max(self.initial_rebalance_delay);
        group.state = GroupState::PreparingRebalance;
    }

    /// Completes the join phase once every member has rejoined (or the deadline removed those
    /// that did not).
    fn try_complete_join(&self, group: &mut Group, now: Instant) {
        if group.state != GroupState::PreparingRebalance || now < group.earliest_completion {
            return;
        }
        let all_joined = group.members.values().all(|m| m.join_waiter.is_some());
        if !all_joined && now < group.rebalance_deadline {
            return;
        }
        group.members.retain(|_, m| m.join_waiter.is_some());
        group.generation += 1;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            return;
        }
        if !group.members.contains_key(&group.leader) {
            group.leader = group.members.keys().next().expect("not empty").clone();
        }
        let leader = &group.members[&group.leader];
        group.protocol_name = leader
            .protocols
            .iter()
            .map(|p| p.0.clone())
            .find(|name| {
                group
                    .members
                    .values()
                    .all(|m| m.protocols.iter().any(|p| &p.0 == name))
            })
            .unwrap_or_default();
        let roster: Vec<(String, Option<String>, Bytes)> = group
            .members
            .iter()
            .map(|(id, m)| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|p| p.0 == group.protocol_name)
                    .map(|p| p.1.clone())
                    .unwrap_or_default();
                (id.clone(), m.group_instance_id.clone(), metadata)
            })
            .collect();
        group.state = GroupState::CompletingRebalance;
        for (id, member) in group.members.iter_mut() {
            member.last_seen = now;
            let outcome = JoinOutcome {
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol_name.clone(),
                leader: group.leader.clone(),
                member_id: id.clone(),
                members: if *id == group.leader {
                    roster.clone()
                } else {
                    Vec::new()
                },
            };
            if let Some(waiter) = member.join_waiter.take() {
                let _ = waiter.send(Ok(outcome));
            }
        }
    }

    /// Receives the leader's assignment (or waits for it); resolves to this member's share.
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<oneshot::Receiver<Result<Bytes>>> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        check_member(group, group_id, generation, member_id)?;
        let (sender, receiver) = oneshot::channel();
        match group.state {
            GroupState::PreparingRebalance | GroupState::Empty => {
                return Err(BrokerError::RebalanceInProgress(group_id.to_string()))
            }
            GroupState::Stable => {
                let _ = sender.send(Ok(group.members[member_id].assignment.clone()));
            }
            GroupState::CompletingRebalance => {
                let member = group.members.get_mut(member_id).expect("checked above");
                member.sync_waiter = Some(sender);
                member.last_seen = Instant::now();
                if member_id == group.leader {
                    let assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                    group.state = GroupState::Stable;
                    for (id, m) in group.members.iter_mut() {
                        m.assignment = assigned.get(id).cloned().unwrap_or_default();
                        if let Some(waiter) = m.sync_waiter.take() {
                            let _ = waiter.send(Ok(m.assignment.clone()));
                        }
                    }
                }
            }
        }
        Ok(receiver)
    }

    /// A member's heartbeat: keeps its session and tells it when to rejoin.
    pub fn heartbeat(&self, group_id: &str, generation: i32, member_id: &str) -> Result<()> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        check_member(group, group_id, generation, member_id)?;
        group.members.get_mut(member_id).expect("checked").last_seen = Instant::now();
        if group.state == GroupState::PreparingRebalance {
            return Err(BrokerError::RebalanceInProgress(group_id.to_string()));
        }
        Ok(())
    }

    /// Members leave; the rest rebalance.
    pub fn leave(&self, group_id: &str, member_ids: &[String]) -> Vec<Result<()>> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return member_ids
                .iter()
                .map(|m| Err(unknown_member(group_id, m)))
                .collect();
        };
        let results = member_ids
            .iter()
            .map(|id| match group.members.remove(id) {
                Some(_) => Ok(()),
                None => Err(unknown_member(group_id, id)),
            })
            .collect();
        self.after_removal(group);
        results
    }

    fn after_removal(&self, group: &mut Group) {
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.generation += 1;
            return;
        }
        if group.state != GroupState::PreparingRebalance {
            self.start_rebalance(group);
        }
        self.try_complete_join(group, Instant::now());
    }

    /// Expires members whose session ran out and completes rebalances past their deadline.
    fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for (group_id, group) in groups.iter_mut() {
            let before = group.members.len();
            group.members.retain(|id, m| {
                let alive =
                    m.join_waiter.is_some() || now.duration_since(m.last_seen) <= m.session_timeout;
                if !alive {
                    tracing::info!(group = %group_id, member = %id, "session timed out");
                }
                alive
            });
            if group.members.len() != before {
                self.after_removal(group);
            } else {
                self.try_complete_join(group, now);
            }
        }
    }

    /// Checks that a commit comes from the current generation (or from a consumer outside any
    /// group, with generation -1), then records the offsets in memory.
    pub fn validate_commit(&self, group_id: &str, generation: i32, member_id: &str) -> Result<()> {
        if group_id.is_empty() {
            return Err(BrokerError::InvalidGroupId);
        }
        if generation < 0 && member_id.is_empty() {
            return Ok(());
        }
        let groups = self.groups.lock();
        let group = groups
            .get(group_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        check_member(group, group_id, generation, member_id)?;
        if group.state == GroupState::PreparingRebalance {
            return Err(BrokerError::RebalanceInProgress(group_id.to_string()));
        }
        Ok(())
    }

    pub(crate) fn set_committed(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        offset: Option<CommittedOffset>,
    ) {
        let key = (group.to_string(), topic.to_string(), partition);
        let mut committed = self.committed.lock();
        match offset {
            Some(o) => committed.insert(key, o),
            None => committed.remove(&key),
        };
    }

    /// The committed offset of one partition for a group.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        self.committed
            .lock()
            .get(&(group.to_string(), topic.to_string(), partition))
            .cloned()
    }

    /// Every committed offset of a group: (topic, partition, offset).
    pub fn committed_for_group(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.committed
            .lock()
            .iter()
            .filter(|((g, _, _), _)| g == group)
            .map(|((_, t, p), o)| (t.clone(), *p, o.clone()))
            .collect()
    }

    /// The state name and member count of a group, if it exists.
    pub fn describe(&self, group_id: &str) -> Option<(String, usize, i32)> {
        self.groups
            .lock()
            .get(group_id)
            .map(|g| (g.state.name().to_string(), g.members.len(), g.generation))
    }

    /// Ids of the groups known to this coordinator, with any committed offsets.
    pub fn group_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.groups.lock().keys().cloned().collect();
        ids.extend(self.committed.lock().keys().map(|(g, _, _)| g.clone()));
        ids.sort();
        ids.dedup();
        ids
    }
}

impl Broker {
    /// Lag per partition of a group: high watermark minus committed offset, for every partition
    /// the group has committed.
    pub fn group_lag(&self, group: &str) -> Vec<PartitionLag> {
        self.groups
            .committed_for_group(group)
            .into_iter()
            .filter_map(|(topic, partition, committed)| {
                let high_watermark = self.partition(&topic, partition).ok()?.high_watermark();
                Some(PartitionLag {
                    lag_records: (high_watermark - committed.offset).max(0),
                    topic,
                    partition,
                    committed_offset: committed.offset,
                    high_watermark,
                })
            })
            .collect()
    }
}

fn unknown_member(group_id: &str, member_id: &str) -> BrokerError {
    BrokerError::UnknownMemberId {
        group_id: group_id.to_string(),
        member_id: member_id.to_string(),
    }
}

fn check_member(group: &Group, group_id: &str, generation: i32, member_id: &str) -> Result<()> {
    if !group.members.contains_key(member_id) {
        return Err(unknown_member(group_id, member_id));
    }
    if generation != group.generation {
        return Err(BrokerError::IllegalGeneration {
            group_id: group_id.to_string(),
            got: generation,
            current: group.generation,
        });
    }
    Ok(())
}

/// Runs the coordinator's timers: session expiry and rebalance deadlines.
pub(crate) async fn expire_members(broker: Arc<Broker>) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        broker.groups.tick();
    }
}
