//! Consumer groups in a 3-broker cluster, in one process: the coordinator of a group is the
//! leader of its `__consumer_offsets` partition, the other brokers answer NOT_COORDINATOR, and
//! when leadership of that partition moves, the new leader loads the group and its committed
//! offsets from its replica of the log. Each broker serves the Kafka protocol on a loopback port
//! and the test speaks raw requests to them, as a client would.

mod support;

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Encodable;
use kafka_protocol::ResponseError;
use support::{call, eventually, s, start_cluster};

/// FindCoordinator v3 for `group` at `address`: the coordinator's (id, port), once it has one.
async fn find_coordinator(address: SocketAddr, group: &str) -> Option<(i32, i32)> {
    let request = FindCoordinatorRequest::default().with_key(s(group));
    let response = call(address, 3, &request).await;
    if response.error_code == ResponseError::CoordinatorNotAvailable.code() {
        return None;
    }
    assert_eq!(response.error_code, 0, "{response:?}");
    Some((response.node_id.0, response.port))
}

/// A consumer's subscription, as the consumer protocol encodes it (version 0).
fn subscription(topics: &[&str]) -> Bytes {
    let mut bytes = BytesMut::new();
    bytes.put_i16(0);
    ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| s(t)).collect())
        .encode(&mut bytes, 0)
        .expect("subscription encodes");
    bytes.freeze()
}

fn join_request(group: &str, member_id: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(60_000)
        .with_rebalance_timeout_ms(60_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(subscription(&["t"]))])
}

fn commit_request(
    group: &str,
    generation: i32,
    member: &str,
    offsets: &[(i32, i64)],
) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(
                offsets
                    .iter()
                    .map(|(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                    })
                    .collect(),
            )])
}

fn commit_codes(response: &OffsetCommitResponse) -> Vec<i16> {
    response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

/// OffsetFetch v7 of partitions 0 and 1 of `t`: the top-level error, and the offsets.
async fn fetch_offsets(address: SocketAddr, group: &str) -> (i16, Vec<(i32, i64)>) {
    let request = OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partition_indexes(vec![0, 1])]));
    let response = call(address, 7, &request).await;
    let offsets = response
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            assert_eq!(p.error_code, 0, "{response:?}");
            (p.partition_index, p.committed_offset)
        })
        .collect();
    (response.error_code, offsets)
}

async fn list_groups(address: SocketAddr) -> Vec<String> {
    let response = call(address, 4, &ListGroupsRequest::default()).await;
    assert_eq!(response.error_code, 0, "{response:?}");
    response
        .groups
        .iter()
        .map(|g| g.group_id.to_string())
        .collect()
}

/// Goal: in a cluster, the group's coordinator is the leader of its `__consumer_offsets`
/// partition: every broker names it, the others refuse the group's requests with
/// NOT_COORDINATOR and do not list it, and once the leader's quorum is shut down (it stops
/// heartbeating and is fenced) a new leader of the partition coordinates the group with the
/// offsets committed before and the group's member, loaded from its replica.
/// Method: three in-process brokers; create `t` (2 partitions, 3 replicas); find the
/// coordinator of `g` (retrying while `__consumer_offsets` is created); join and sync a member
/// and commit offsets at the coordinator; check the other brokers' answers; shut the
/// coordinator's quorum down and wait until another broker is named; read the offsets and
/// describe the group there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_offsets_partition_leader_coordinates_and_a_new_leader_loads_the_group() {
    // RUST_LOG=info shows the cluster's decisions when this fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let nodes = start_cluster(&dirs).await;
    let any = nodes[0].address;

    // Topic `t`, replicated on all three brokers, once every broker is registered.
    eventually("the topic to be created", || async {
        let topic = CreatableTopic::default()
            .with_name(TopicName(s("t")))
            .with_num_partitions(2)
            .with_replication_factor(3);
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(5_000);
        let response = call(any, 5, &request).await;
        let code = response.topics[0].error_code;
        (code == 0 || code == ResponseError::TopicAlreadyExists.code()).then_some(())
    })
    .await;

    // Every broker names the same coordinator, once __consumer_offsets exists and has a leader.
    let mut named = Vec::new();
    for node in &nodes {
        let found = eventually("a coordinator", || find_coordinator(node.address, "g")).await;
        named.push(found);
    }
    assert!(named.iter().all(|n| *n == named[0]), "{named:?}");
    let (coordinator_id, port) = named[0];
    let coordinator = nodes
        .iter()
        .find(|n| n.id == coordinator_id)
        .expect("a node");
    assert_eq!(port, coordinator.address.port() as i32);
    let offsets_topic = coordinator.broker.cluster().expect("a cluster").image();
    let partition = &offsets_topic.topics["__consumer_offsets"].partitions[0];
    assert_eq!(partition.leader, coordinator_id);
    assert_eq!(partition.replicas.len(), 3, "replicated on every broker");

    // A member joins and syncs at the coordinator (retrying while its partition loads).
    let joined = eventually("the join to be taken", || async {
        let first = call(coordinator.address, 5, &join_request("g", "")).await;
        if first.error_code == ResponseError::CoordinatorLoadInProgress.code() {
            return None;
        }
        assert_eq!(
            first.error_code,
            ResponseError::MemberIdRequired.code(),
            "{first:?}"
        );
        let joined = call(coordinator.address, 5, &join_request("g", &first.member_id)).await;
        assert_eq!(joined.error_code, 0, "{joined:?}");
        Some(joined)
    })
    .await;
    let member = joined.member_id.to_string();
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(joined.generation_id)
        .with_member_id(s(&member))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&member))
            .with_assignment(Bytes::from_static(b"assigned"))]);
    let synced = call(coordinator.address, 3, &sync).await;
    assert_eq!(synced.error_code, 0, "{synced:?}");

    let commit = commit_request("g", joined.generation_id, &member, &[(0, 42), (1, 7)]);
    let committed = call(coordinator.address, 8, &commit).await;
    assert_eq!(commit_codes(&committed), [0, 0], "{committed:?}");
    assert_eq!(
        fetch_offsets(coordinator.address, "g").await,
        (0, vec![(0, 42), (1, 7)])
    );
    assert_eq!(list_groups(coordinator.address).await, ["g"]);

    // The other brokers refuse the group and do not list it.
    let not_coordinator = ResponseError::NotCoordinator.code();
    for other in nodes.iter().filter(|n| n.id != coordinator_id) {
        let refused = call(other.address, 8, &commit).await;
        assert_eq!(commit_codes(&refused), [not_coordinator; 2], "{refused:?}");
        assert_eq!(
            fetch_offsets(other.address, "g").await,
            (not_coordinator, vec![])
        );
        let heartbeat = HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(joined.generation_id)
            .with_member_id(s(&member));
        let refused = call(other.address, 4, &heartbeat).await;
        assert_eq!(refused.error_code, not_coordinator);
        let describe = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]);
        let refused = call(other.address, 5, &describe).await;
        assert_eq!(refused.groups[0].error_code, not_coordinator);
        assert!(list_groups(other.address).await.is_empty());
    }

    // The coordinator stops heartbeating: it is fenced and another replica leads the partition.
    let node = coordinator.broker.cluster().expect("a cluster");
    node.quorum.shutdown().await;
    let survivor = nodes
        .iter()
        .find(|n| n.id != coordinator_id)
        .expect("a node");
    // As a client does: find the coordinator, ask it, and find it again while it answers that
    // it is loading or no longer the coordinator.
    let (new_id, fetched) = eventually("a new coordinator with the group loaded", || async {
        let (id, port) = find_coordinator(survivor.address, "g")
            .await
            .filter(|(id, _)| *id != coordinator_id)?;
        let node = nodes.iter().find(|n| n.id == id).expect("a node");
        assert_eq!(port, node.address.port() as i32);
        let (code, offsets) = fetch_offsets(node.address, "g").await;
        let retriable = [
            ResponseError::CoordinatorLoadInProgress.code(),
            ResponseError::NotCoordinator.code(),
        ];
        if retriable.contains(&code) {
            return None;
        }
        assert_eq!(code, 0, "the new leader coordinates the group");
        Some((id, offsets))
    })
    .await;
    let new_coordinator = nodes.iter().find(|n| n.id == new_id).expect("a node");
    // It answers with the offsets committed at the old coordinator, loaded from its replica.
    assert_eq!(fetched, [(0, 42), (1, 7)]);
    // And it knows the group's member (its metadata record), so the consumer carries on.
    let describe = DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]);
    let described = call(new_coordinator.address, 5, &describe).await;
    let group = &described.groups[0];
    assert_eq!(
        (group.error_code, group.group_state.as_str()),
        (0, "Stable")
    );
    assert_eq!(group.members.len(), 1);
    assert_eq!(group.members[0].member_id.as_str(), member);
    let heartbeat = HeartbeatRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(joined.generation_id)
        .with_member_id(s(&member));
    assert_eq!(
        call(new_coordinator.address, 4, &heartbeat)
            .await
            .error_code,
        0
    );
    // A commit there is answered once replicated (to the one remaining in-sync follower).
    let commit = commit_request("g", joined.generation_id, &member, &[(0, 50)]);
    let committed = call(new_coordinator.address, 8, &commit).await;
    assert_eq!(commit_codes(&committed), [0], "{committed:?}");
    assert_eq!(
        fetch_offsets(new_coordinator.address, "g").await,
        (0, vec![(0, 50), (1, 7)])
    );
    // The third broker, a follower, still refuses.
    let third = nodes
        .iter()
        .find(|n| n.id != coordinator_id && n.id != new_id)
        .expect("a node");
    assert_eq!(
        fetch_offsets(third.address, "g").await,
        (not_coordinator, vec![])
    );
}
