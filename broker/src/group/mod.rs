//! Consumer groups: Kafka's classic group protocol, committed offsets and lag.
//!
//! A group moves through Empty -> PreparingRebalance (members join) -> CompletingRebalance (the
//! leader member computes the assignment, client side) -> Stable (members heartbeat). Any join,
//! leave or session timeout starts a new rebalance and bumps the generation; requests from an
//! older generation are fenced with ILLEGAL_GENERATION. Committed offsets live in the compacted
//! topic `__consumer_offsets` ([`offsets`]) and are restored from it on start-up. So is each
//! group's metadata ([`stored`]), written when a rebalance completes (Stable) and when the group
//! becomes Empty, and deleted with the group: after a restart a group comes back with its
//! protocol type, protocol, leader and generation, and the next rebalance continues from that
//! generation. Its members come back too, as Kafka loads them: Stable, their sessions
//! restarted, so a consumer that keeps heartbeating carries on and one that is gone expires.
//!
//! In a cluster, `__consumer_offsets` is replicated and this node coordinates the groups of the
//! partitions it leads, loading them when it becomes the leader and dropping them when it stops
//! ([`load`]).
//!
//! The admin side, as Kafka's classic coordinator answers it: [`GroupCoordinator::list`],
//! [`GroupCoordinator::describe`], [`GroupCoordinator::check_delete`] (DeleteGroups) and
//! [`GroupCoordinator::check_offset_delete`] (OffsetDelete).

pub mod assignor;
mod load;
pub mod offsets;
pub(crate) mod stored;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::broker::{now_ms, Broker};
use crate::cluster::hosted::HostedPartitions;
use crate::error::{BrokerError, Result};
use crate::limits::GROUP_MEMBERS_MAX;
use offsets::OffsetStore;
use stored::{StoredGroup, StoredMember};

/// The protocol type of groups run by Kafka consumers; only their subscriptions can be read.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

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
    /// The member's address as Kafka shows it (`/127.0.0.1`).
    pub client_host: String,
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
    client_id: String,
    client_host: String,
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

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    /// `consumer` for Kafka consumers; empty for a group known only by its offsets.
    pub protocol_type: String,
    pub state: &'static str,
}

/// A group as DescribeGroups shows it (Kafka's `GroupSummary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Stable, PreparingRebalance, CompletingRebalance, Empty, or Dead for an unknown group.
    pub state: &'static str,
    pub protocol_type: String,
    /// The assignor chosen (for example `range`); empty unless the group is Stable.
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Its metadata for the chosen protocol; empty unless the group is Stable.
    pub metadata: Bytes,
    /// What the leader assigned it; empty unless the group is Stable.
    pub assignment: Bytes,
}

/// The group coordinator of this node: of every group on a single node; in a cluster, of the
/// groups whose `__consumer_offsets` partition this node leads ([`load`]).
pub struct GroupCoordinator {
    groups: Mutex<HashMap<String, Group>>,
    /// In a cluster: the partitions of `__consumer_offsets` this node leads, loading or loaded.
    hosted: HostedPartitions,
    /// In a cluster: whether this node is proposing the creation of `__consumer_offsets`.
    creating_offsets_topic: std::sync::atomic::AtomicBool,
    /// Group metadata records to write to `__consumer_offsets` (`None` deletes the group), in
    /// the order the changes happened; pushed under the groups' lock.
    metadata_changes: Mutex<Vec<(String, Option<StoredGroup>)>>,
    pub(crate) offsets: OffsetStore,
    initial_rebalance_delay: Duration,
}

impl GroupCoordinator {
    pub(crate) fn new(initial_rebalance_delay: Duration) -> GroupCoordinator {
        GroupCoordinator {
            groups: Mutex::new(HashMap::new()),
            hosted: HostedPartitions::new(offsets::OFFSETS_TOPIC),
            creating_offsets_topic: Default::default(),
            metadata_changes: Mutex::new(Vec::new()),
            offsets: OffsetStore::new(),
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
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
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
        self.try_complete_join(&request.group_id, group, now);
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
    fn try_complete_join(&self, group_id: &str, group: &mut Group, now: Instant) {
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
            self.record_metadata(group_id, group);
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
                    self.record_metadata(group_id, group);
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
        self.after_removal(group_id, group);
        results
    }

    fn after_removal(&self, group_id: &str, group: &mut Group) {
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.generation += 1;
            self.record_metadata(group_id, group);
            return;
        }
        if group.state != GroupState::PreparingRebalance {
            self.start_rebalance(group);
        }
        self.try_complete_join(group_id, group, Instant::now());
    }

    /// Queues a group's metadata record, as it stands now, for `__consumer_offsets`.
    fn record_metadata(&self, group_id: &str, group: &Group) {
        let record = (group_id.to_string(), Some(group.stored()));
        self.metadata_changes.lock().push(record);
    }

    /// Whether group metadata records wait to be written.
    pub(crate) fn has_metadata_changes(&self) -> bool {
        !self.metadata_changes.lock().is_empty()
    }

    /// The group metadata records queued since the last call, in the order of their changes.
    pub(crate) fn take_metadata_changes(&self) -> Vec<(String, Option<StoredGroup>)> {
        std::mem::take(&mut *self.metadata_changes.lock())
    }

    /// Puts back groups read from `__consumer_offsets` at start-up, as Kafka loads them: a
    /// group with members is Stable with those members and their assignments, their sessions
    /// starting now (a member that does not heartbeat in time expires, and the group
    /// rebalances); a group without is Empty. Either keeps its protocol type, protocol, leader
    /// and generation, so its next rebalance takes the next generation.
    pub(crate) fn restore(&self, stored: BTreeMap<String, StoredGroup>) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for (group_id, record) in stored {
            let protocol_name = record.protocol_name.unwrap_or_default();
            let members: BTreeMap<String, Member> = match protocol_name.is_empty() {
                true => BTreeMap::new(),
                false => record
                    .members
                    .into_iter()
                    .map(|m| {
                        (
                            m.member_id.clone(),
                            Member::restored(m, &protocol_name, now),
                        )
                    })
                    .collect(),
            };
            let group = Group {
                state: match members.is_empty() {
                    true => GroupState::Empty,
                    false => GroupState::Stable,
                },
                generation: record.generation,
                protocol_type: record.protocol_type,
                protocol_name,
                leader: record.leader.unwrap_or_default(),
                members,
                ..Group::new()
            };
            groups.insert(group_id, group);
        }
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
                self.after_removal(group_id, group);
            } else {
                self.try_complete_join(group_id, group, now);
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

    /// The committed offset of one partition for a group.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<CommittedOffset> {
        self.offsets.committed(group, topic, partition)
    }

    /// Every committed offset of a group: (topic, partition, offset).
    pub fn committed_for_group(&self, group: &str) -> Vec<(String, i32, CommittedOffset)> {
        self.offsets.committed_for_group(group)
    }

    /// Every group this coordinator knows, as Kafka lists them: those with members or that had
    /// some since start-up, and those known only by committed offsets (Empty, no protocol type).
    pub fn list(&self) -> Vec<GroupListing> {
        let mut listed: BTreeMap<String, GroupListing> = self
            .offsets
            .group_ids()
            .into_iter()
            .map(|group_id| {
                let listing = GroupListing {
                    group_id: group_id.clone(),
                    protocol_type: String::new(),
                    state: GroupState::Empty.name(),
                };
                (group_id, listing)
            })
            .collect();
        for (group_id, group) in self.groups.lock().iter() {
            let listing = GroupListing {
                group_id: group_id.clone(),
                protocol_type: group.protocol_type.clone(),
                state: group.state.name(),
            };
            listed.insert(group_id.clone(), listing);
        }
        listed.into_values().collect()
    }

    /// A group's state, protocol and members, as Kafka's DescribeGroups answers: an unknown
    /// group is Dead (not an error), and metadata and assignments are given only when Stable.
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.lock();
        let Some(group) = groups.get(group_id) else {
            let state = match self.offsets.has_offsets(group_id) {
                true => GroupState::Empty.name(),
                false => DEAD,
            };
            return GroupDescription {
                state,
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let stable = group.state == GroupState::Stable;
        let members = group
            .members
            .iter()
            .map(|(member_id, m)| MemberDescription {
                member_id: member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: match stable {
                    true => m.metadata(&group.protocol_name).unwrap_or_default(),
                    false => Bytes::new(),
                },
                assignment: match stable {
                    true => m.assignment.clone(),
                    false => Bytes::new(),
                },
            })
            .collect();
        GroupDescription {
            state: group.state.name(),
            protocol_type: group.protocol_type.clone(),
            protocol_name: match stable {
                true => group.protocol_name.clone(),
                false => String::new(),
            },
            members,
        }
    }

    /// DeleteGroups' check, as Kafka's: a group with members is NON_EMPTY_GROUP, an unknown one
    /// GROUP_ID_NOT_FOUND. An empty group is forgotten here and its metadata tombstone queued;
    /// the caller then writes it and deletes the committed offsets (which keep the group listed
    /// until their tombstones are on disk).
    pub fn check_delete(&self, group_id: &str) -> Result<()> {
        let mut groups = self.groups.lock();
        match groups.get(group_id) {
            Some(group) if group.state != GroupState::Empty => {
                Err(BrokerError::NonEmptyGroup(group_id.to_string()))
            }
            Some(_) => {
                groups.remove(group_id);
                self.metadata_changes
                    .lock()
                    .push((group_id.to_string(), None));
                Ok(())
            }
            None if self.offsets.has_offsets(group_id) => Ok(()),
            None => Err(BrokerError::GroupIdNotFound(group_id.to_string())),
        }
    }

    /// OffsetDelete's check, as Kafka's: for each topic, whether the group's active members
    /// subscribe to it (its offsets are then refused with GROUP_SUBSCRIBED_TO_TOPIC). An empty
    /// group subscribes to nothing; an active group of another protocol type than `consumer`
    /// is NON_EMPTY_GROUP; an unknown group is GROUP_ID_NOT_FOUND.
    pub fn check_offset_delete(&self, group_id: &str, topics: &[&str]) -> Result<Vec<bool>> {
        if group_id.is_empty() {
            return Err(BrokerError::InvalidGroupId);
        }
        let groups = self.groups.lock();
        let Some(group) = groups.get(group_id) else {
            return match self.offsets.has_offsets(group_id) {
                true => Ok(vec![false; topics.len()]),
                false => Err(BrokerError::GroupIdNotFound(group_id.to_string())),
            };
        };
        if group.state == GroupState::Empty {
            return Ok(vec![false; topics.len()]);
        }
        if group.protocol_type != CONSUMER_PROTOCOL_TYPE {
            return Err(BrokerError::NonEmptyGroup(group_id.to_string()));
        }
        // Kafka treats a group whose subscriptions it cannot read as subscribed to everything.
        Ok(match group.subscribed_topics() {
            Some(subscribed) => topics.iter().map(|t| subscribed.contains(*t)).collect(),
            None => vec![true; topics.len()],
        })
    }

    /// Ids of the groups known to this coordinator, with any committed offsets.
    pub fn group_ids(&self) -> Vec<String> {
        self.list().into_iter().map(|g| g.group_id).collect()
    }
}

/// The state Kafka reports for a group it does not know.
const DEAD: &str = "Dead";

impl Member {
    /// A member read back from its group's record, its session starting `now`.
    fn restored(stored: StoredMember, protocol_name: &str, now: Instant) -> Member {
        let millis = |ms: i32| Duration::from_millis(ms.max(1) as u64);
        Member {
            group_instance_id: stored.group_instance_id,
            client_id: stored.client_id,
            client_host: stored.client_host,
            protocols: vec![(protocol_name.to_string(), stored.subscription)],
            session_timeout: millis(stored.session_timeout_ms),
            rebalance_timeout: millis(stored.rebalance_timeout_ms),
            last_seen: now,
            join_waiter: None,
            sync_waiter: None,
            assignment: stored.assignment,
        }
    }

    /// This member's metadata for `protocol`, if it offered that protocol.
    fn metadata(&self, protocol: &str) -> Option<Bytes> {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
    }
}

impl Group {
    /// The group as its metadata record stores it: members with their metadata for the chosen
    /// protocol and their assignment (Kafka stores no protocol or leader for an Empty group).
    fn stored(&self) -> StoredGroup {
        let empty = self.state == GroupState::Empty;
        let chosen = |s: &String| (!empty && !s.is_empty()).then(|| s.clone());
        let millis = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        let members = self
            .members
            .iter()
            .map(|(member_id, m)| StoredMember {
                member_id: member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout_ms: millis(m.rebalance_timeout),
                session_timeout_ms: millis(m.session_timeout),
                subscription: m.metadata(&self.protocol_name).unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect();
        StoredGroup {
            protocol_type: self.protocol_type.clone(),
            generation: self.generation,
            protocol_name: chosen(&self.protocol_name),
            leader: chosen(&self.leader),
            state_timestamp_ms: now_ms(),
            members,
        }
    }

    /// The topics the members' subscriptions name (consumer protocol, read as version 0, the
    /// prefix every version shares, as Kafka reads it). `None` before a protocol is chosen or
    /// when a member's metadata cannot be read.
    fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_name.is_empty() {
            return None;
        }
        let mut topics = BTreeSet::new();
        for member in self.members.values() {
            let mut metadata = member.metadata(&self.protocol_name)?;
            if metadata.remaining() < 2 {
                return None;
            }
            metadata.advance(2); // the subscription's version
            let subscription = ConsumerProtocolSubscription::decode(&mut metadata, 0).ok()?;
            topics.extend(subscription.topics.iter().map(|t| t.to_string()));
        }
        Some(topics)
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
        offsets::persist_group_metadata(&broker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restored member that never heartbeats expires after its session, as in Kafka: the
    /// group rebalances to Empty at the next generation and queues that record.
    #[test]
    fn a_restored_member_that_is_gone_expires() {
        let coordinator = GroupCoordinator::new(Duration::ZERO);
        let member = StoredMember {
            member_id: "m".into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rebalance_timeout_ms: 1,
            session_timeout_ms: 1,
            subscription: Bytes::new(),
            assignment: Bytes::from_static(b"a"),
        };
        let record = StoredGroup {
            protocol_type: CONSUMER_PROTOCOL_TYPE.into(),
            generation: 7,
            protocol_name: Some("range".into()),
            leader: Some("m".into()),
            state_timestamp_ms: 0,
            members: vec![member],
        };
        coordinator.restore(BTreeMap::from([("g".to_string(), record)]));
        assert_eq!(coordinator.describe("g").state, "Stable");
        std::thread::sleep(Duration::from_millis(5));
        coordinator.tick();
        assert_eq!(coordinator.describe("g").state, "Empty");
        let changes = coordinator.take_metadata_changes();
        let stored = changes
            .last()
            .and_then(|(_, s)| s.as_ref())
            .expect("a record");
        assert_eq!((stored.generation, stored.members.len()), (8, 0));
        assert_eq!(stored.protocol_type, CONSUMER_PROTOCOL_TYPE);
    }
}
