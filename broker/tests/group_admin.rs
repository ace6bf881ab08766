//! The consumer-group admin APIs as admin tools use them: ListGroups, DescribeGroups,
//! DeleteGroups, OffsetDelete, and OffsetFetch right after a commit. Each test serves a broker on
//! a loopback port and speaks raw Kafka requests to it, one connection per member or tool, so
//! what is checked is what a client would read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use eddy_broker::{bind, serve, Broker, BrokerConfig};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any one request may take before the test fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn group(id: &str) -> GroupId {
    GroupId(s(id))
}

fn topic(name: &str) -> TopicName {
    TopicName(s(name))
}

/// One client connection speaking raw Kafka requests.
struct Client {
    stream: TcpStream,
    client_id: &'static str,
    correlation_id: i32,
}

impl Client {
    async fn connect(address: SocketAddr, client_id: &'static str) -> Client {
        let stream = TcpStream::connect(address).await.expect("connect");
        Client {
            stream,
            client_id,
            correlation_id: 0,
        }
    }

    /// Sends a request without waiting for its answer (clients pipeline requests).
    async fn send<R: Request>(&mut self, version: i16, request: &R) {
        self.correlation_id += 1;
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(s(self.client_id)))
            .encode(&mut body, R::header_version(version))
            .expect("header encodes");
        request.encode(&mut body, version).expect("request encodes");
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        self.stream.write_all(&frame).await.expect("send");
    }

    /// Reads the next response, which answers a request of type `R`.
    async fn receive<R: Request>(&mut self, version: i16) -> R::Response {
        let read = async {
            let size = self.stream.read_i32().await.expect("response size");
            let mut frame = vec![0u8; size as usize];
            self.stream.read_exact(&mut frame).await.expect("response");
            frame
        };
        let frame = tokio::time::timeout(STEP_TIMEOUT, read)
            .await
            .expect("answered in time");
        let mut frame = Bytes::from(frame);
        ResponseHeader::decode(&mut frame, R::Response::header_version(version))
            .expect("response header");
        R::Response::decode(&mut frame, version).expect("response body")
    }

    async fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        self.send(version, request).await;
        self.receive::<R>(version).await
    }
}

async fn start(dir: &std::path::Path) -> (Arc<Broker>, SocketAddr) {
    let mut config = BrokerConfig::new(dir);
    config.group_initial_rebalance_delay = Duration::ZERO;
    let broker = Broker::open(config).await.expect("open");
    let (listener, address) = bind("127.0.0.1:0").await.expect("bind");
    tokio::spawn(serve(Arc::clone(&broker), listener));
    (broker, address)
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

/// Joins `group_id` as a consumer subscribed to `topics` (JoinGroup v5: a new member is first
/// given an id, then rejoins with it). Waits until the rebalance completes.
async fn join(
    client: &mut Client,
    group_id: &str,
    member_id: &str,
    instance_id: Option<&str>,
    topics: &[&str],
) -> JoinGroupResponse {
    let request = JoinGroupRequest::default()
        .with_group_id(group(group_id))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(member_id))
        .with_group_instance_id(instance_id.map(s))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(subscription(topics))]);
    let response = client.call(5, &request).await;
    if response.error_code != ResponseError::MemberIdRequired.code() {
        return response;
    }
    let request = request.with_member_id(response.member_id);
    client.call(5, &request).await
}

/// SyncGroup for `member_id`; the leader passes every member's assignment.
async fn sync(
    client: &mut Client,
    group_id: &str,
    joined: &JoinGroupResponse,
    assignments: &[(&str, &[u8])],
) -> SyncGroupResponse {
    let request = SyncGroupRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_assignments(
            assignments
                .iter()
                .map(|(member, bytes)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(member))
                        .with_assignment(Bytes::copy_from_slice(bytes))
                })
                .collect(),
        );
    client.call(3, &request).await
}

async fn describe(client: &mut Client, version: i16, group_id: &str) -> DescribedGroup {
    let request = DescribeGroupsRequest::default()
        .with_groups(vec![group(group_id)])
        .with_include_authorized_operations(version >= 3);
    let mut response = client.call(version, &request).await;
    assert_eq!(response.groups.len(), 1);
    response.groups.remove(0)
}

async fn list(client: &mut Client, states: &[&str], types: &[&str]) -> Vec<(String, String)> {
    let request = ListGroupsRequest::default()
        .with_states_filter(states.iter().map(|t| s(t)).collect())
        .with_types_filter(types.iter().map(|t| s(t)).collect());
    let response = client.call(5, &request).await;
    assert_eq!(response.error_code, 0);
    response
        .groups
        .iter()
        .map(|g| (g.group_id.to_string(), g.group_state.to_string()))
        .collect()
}

/// Commits offsets outside any generation, as a consumer with manual assignment does.
async fn commit(client: &mut Client, group_id: &str, offsets: &[(&str, i32, i64)]) {
    let response = client.call(8, &commit_request(group_id, offsets)).await;
    for t in &response.topics {
        for p in &t.partitions {
            assert_eq!(
                p.error_code,
                0,
                "commit {}-{}",
                t.name.as_str(),
                p.partition_index
            );
        }
    }
}

fn commit_request(group_id: &str, offsets: &[(&str, i32, i64)]) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(group(group_id))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(
            offsets
                .iter()
                .map(|(t, p, o)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)])
                })
                .collect(),
        )
}

fn fetch_request(group_id: &str, partitions: &[(&str, i32)]) -> OffsetFetchRequest {
    OffsetFetchRequest::default()
        .with_group_id(group(group_id))
        .with_topics(Some(
            partitions
                .iter()
                .map(|(t, p)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(topic(t))
                        .with_partition_indexes(vec![*p])
                })
                .collect(),
        ))
}

/// (topic, partition, committed offset, error) per partition of an OffsetFetch answer.
fn fetched(response: &OffsetFetchResponse) -> Vec<(String, i32, i64, i16)> {
    let mut all = Vec::new();
    for t in &response.topics {
        for p in &t.partitions {
            let entry = (
                t.name.to_string(),
                p.partition_index,
                p.committed_offset,
                p.error_code,
            );
            all.push(entry);
        }
    }
    all.sort();
    all
}

async fn fetch_all(client: &mut Client, group_id: &str) -> Vec<(String, i32, i64, i16)> {
    let request = OffsetFetchRequest::default()
        .with_group_id(group(group_id))
        .with_topics(None);
    fetched(&client.call(7, &request).await)
}

fn delete_results(response: &DeleteGroupsResponse) -> Vec<(String, i16)> {
    let result = |r: &DeletableGroupResult| (r.group_id.to_string(), r.error_code);
    response.results.iter().map(result).collect()
}

/// (topic, partition, error) per partition of an OffsetDelete answer.
fn offset_delete_errors(response: &OffsetDeleteResponse) -> Vec<(String, i32, i16)> {
    let mut all = Vec::new();
    for t in &response.topics {
        for p in &t.partitions {
            all.push((t.name.to_string(), p.partition_index, p.error_code));
        }
    }
    all.sort();
    all
}

fn offset_delete_request(group_id: &str, partitions: &[(&str, i32)]) -> OffsetDeleteRequest {
    OffsetDeleteRequest::default()
        .with_group_id(group(group_id))
        .with_topics(
            partitions
                .iter()
                .map(|(t, p)| {
                    OffsetDeleteRequestTopic::default()
                        .with_name(topic(t))
                        .with_partitions(vec![
                            OffsetDeleteRequestPartition::default().with_partition_index(*p)
                        ])
                })
                .collect(),
        )
}

/// Kafka's bit field for READ, DELETE and DESCRIBE, what a broker without ACLs allows.
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);

/// A group described through its life: unknown (Dead), one Stable member, a second member
/// joining (PreparingRebalance, then CompletingRebalance), Stable with two, then members
/// leaving until it is Empty. Method: one connection per member, joins run as tasks (a join
/// waits for the rebalance), a tool connection describes and lists after each step.
#[tokio::test]
async fn a_group_is_described_while_members_join_and_leave() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(dir.path()).await;
    broker
        .create_topic("orders", 2, Default::default())
        .expect("topic");
    let mut tool = Client::connect(address, "admin-tool").await;

    let unknown = describe(&mut tool, 5, "g").await;
    assert_eq!(
        unknown.error_code, 0,
        "Kafka describes an unknown group without error"
    );
    assert_eq!(unknown.group_state.as_str(), "Dead");
    assert!(unknown.members.is_empty());
    assert_eq!(unknown.authorized_operations, GROUP_OPERATIONS_ALL);
    assert!(list(&mut tool, &[], &[]).await.is_empty());

    let mut a = Client::connect(address, "client-a").await;
    let a_joined = join(&mut a, "g", "", Some("instance-a"), &["orders"]).await;
    assert_eq!(a_joined.error_code, 0);
    assert_eq!(a_joined.leader, a_joined.member_id, "the only member leads");
    let a_id = a_joined.member_id.to_string();
    let synced = sync(&mut a, "g", &a_joined, &[(&a_id, b"assigned-a")]).await;
    assert_eq!(synced.error_code, 0);

    let stable = describe(&mut tool, 5, "g").await;
    assert_eq!(stable.group_state.as_str(), "Stable");
    assert_eq!(stable.protocol_type.as_str(), "consumer");
    assert_eq!(stable.protocol_data.as_str(), "range");
    assert_eq!(stable.members.len(), 1);
    let member = &stable.members[0];
    assert_eq!(member.member_id.as_str(), a_id);
    assert_eq!(member.group_instance_id.as_deref(), Some("instance-a"));
    assert_eq!(member.client_id.as_str(), "client-a");
    assert_eq!(member.client_host.as_str(), "/127.0.0.1");
    assert_eq!(member.member_metadata, subscription(&["orders"]));
    assert_eq!(&member.member_assignment[..], b"assigned-a");
    let v0 = describe(&mut tool, 0, "g").await;
    assert_eq!(
        v0.members[0].group_instance_id, None,
        "v0 cannot carry instance ids"
    );
    assert_eq!(v0.authorized_operations, i32::MIN, "not asked for");

    // A second member joins: its join waits until the first rejoins.
    let b_join = tokio::spawn(async move {
        let mut b = Client::connect(address, "client-b").await;
        let joined = join(&mut b, "g", "", None, &["orders"]).await;
        (b, joined)
    });
    let preparing = wait_for_state(&mut tool, "g", "PreparingRebalance").await;
    assert_eq!(preparing.members.len(), 2, "{preparing:?}");
    assert_eq!(
        preparing.protocol_data.as_str(),
        "",
        "no protocol while rebalancing"
    );
    assert!(preparing
        .members
        .iter()
        .all(|m| m.member_assignment.is_empty()));
    assert!(preparing
        .members
        .iter()
        .all(|m| m.member_metadata.is_empty()));
    let names: Vec<_> = list(&mut tool, &["preparingrebalance"], &[]).await;
    assert_eq!(names, [("g".to_string(), "PreparingRebalance".to_string())]);

    let heartbeat = HeartbeatRequest::default()
        .with_group_id(group("g"))
        .with_generation_id(a_joined.generation_id)
        .with_member_id(s(&a_id));
    let beat = a.call(3, &heartbeat).await;
    assert_eq!(beat.error_code, ResponseError::RebalanceInProgress.code());
    let a_rejoined = join(&mut a, "g", &a_id, Some("instance-a"), &["orders"]).await;
    assert_eq!(a_rejoined.error_code, 0);
    let (mut b, b_joined) = b_join.await.expect("b joins");
    assert_eq!(b_joined.error_code, 0);
    let b_id = b_joined.member_id.to_string();
    let completing = describe(&mut tool, 5, "g").await;
    assert_eq!(completing.group_state.as_str(), "CompletingRebalance");

    let assignments: [(&str, &[u8]); 2] = [(&a_id, b"a-again"), (&b_id, b"b-first")];
    let leader_synced = sync(&mut a, "g", &a_rejoined, &assignments).await;
    assert_eq!(leader_synced.error_code, 0);
    let follower_synced = sync(&mut b, "g", &b_joined, &[]).await;
    assert_eq!(&follower_synced.assignment[..], b"b-first");
    let two = describe(&mut tool, 5, "g").await;
    assert_eq!(two.group_state.as_str(), "Stable");
    let mut seen: Vec<(String, String, Vec<u8>)> = two
        .members
        .iter()
        .map(|m| {
            let assignment = m.member_assignment.to_vec();
            (m.member_id.to_string(), m.client_id.to_string(), assignment)
        })
        .collect();
    seen.sort();
    let mut expected = vec![
        (a_id.clone(), "client-a".to_string(), b"a-again".to_vec()),
        (b_id.clone(), "client-b".to_string(), b"b-first".to_vec()),
    ];
    expected.sort();
    assert_eq!(seen, expected);

    // Members leave: the group rebalances, then is Empty and keeps its protocol type.
    let leave = |id: &str| {
        LeaveGroupRequest::default()
            .with_group_id(group("g"))
            .with_members(vec![MemberIdentity::default().with_member_id(s(id))])
    };
    assert_eq!(b.call(3, &leave(&b_id)).await.error_code, 0);
    let after_one = describe(&mut tool, 5, "g").await;
    assert_eq!(after_one.members.len(), 1);
    assert_eq!(after_one.members[0].member_id.as_str(), a_id);
    assert_eq!(a.call(3, &leave(&a_id)).await.error_code, 0);
    let empty = describe(&mut tool, 5, "g").await;
    assert_eq!(empty.group_state.as_str(), "Empty");
    assert_eq!(empty.protocol_type.as_str(), "consumer");
    assert!(empty.members.is_empty());

    let empty_listed = [("g".to_string(), "Empty".to_string())];
    assert_eq!(list(&mut tool, &["EMPTY"], &[]).await, empty_listed);
    assert!(list(&mut tool, &["Stable"], &[]).await.is_empty());
    assert_eq!(list(&mut tool, &[], &["Classic"]).await, empty_listed);
    assert!(
        list(&mut tool, &[], &["consumer"]).await.is_empty(),
        "no KIP-848 groups"
    );
    let v0 = tool.call(0, &ListGroupsRequest::default()).await;
    assert_eq!(v0.groups.len(), 1);
    assert_eq!(v0.groups[0].protocol_type.as_str(), "consumer");
}

/// Describes `group_id` until it is in `state` (the state a concurrent join moves it to).
async fn wait_for_state(tool: &mut Client, group_id: &str, state: &str) -> DescribedGroup {
    for _ in 0..200 {
        let described = describe(tool, 5, group_id).await;
        if described.group_state.as_str() == state {
            return described;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("group {group_id} never reached {state}");
}

/// DeleteGroups refuses a group with members (NON_EMPTY_GROUP) and an unknown one
/// (GROUP_ID_NOT_FOUND), and deletes an empty group with its offsets: it is no longer listed
/// or described, and its offsets read as none. A group named twice is answered once.
#[tokio::test]
async fn delete_refuses_a_group_with_members_and_deletes_an_empty_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(dir.path()).await;
    broker
        .create_topic("orders", 2, Default::default())
        .expect("topic");
    let mut tool = Client::connect(address, "admin-tool").await;
    let mut member = Client::connect(address, "member").await;
    let joined = join(&mut member, "busy", "", None, &["orders"]).await;
    assert_eq!(joined.error_code, 0);
    commit(&mut tool, "idle", &[("orders", 0, 5), ("orders", 1, 7)]).await;
    commit(&mut tool, "busy", &[("orders", 0, 3)]).await;
    let listed = list(&mut tool, &[], &[]).await;
    let listed_ids: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        listed_ids,
        ["busy", "idle"],
        "a group with offsets only is listed"
    );
    let idle = describe(&mut tool, 5, "idle").await;
    assert_eq!(idle.group_state.as_str(), "Empty");
    assert_eq!(
        idle.protocol_type.as_str(),
        "",
        "Kafka's type for a group that never joined"
    );

    let request = DeleteGroupsRequest::default().with_groups_names(vec![
        group("busy"),
        group("nobody"),
        group("idle"),
        group("idle"),
    ]);
    let deleted = tool.call(2, &request).await;
    let expected = [
        ("busy".to_string(), ResponseError::NonEmptyGroup.code()),
        ("nobody".to_string(), ResponseError::GroupIdNotFound.code()),
        ("idle".to_string(), 0),
    ];
    assert_eq!(delete_results(&deleted), expected);

    let listed = list(&mut tool, &[], &[]).await;
    assert_eq!(
        listed,
        [("busy".to_string(), "CompletingRebalance".to_string())]
    );
    assert_eq!(
        describe(&mut tool, 5, "idle").await.group_state.as_str(),
        "Dead"
    );
    assert!(fetch_all(&mut tool, "idle").await.is_empty());
    let one = fetched(&tool.call(7, &fetch_request("idle", &[("orders", 1)])).await);
    assert_eq!(one, [("orders".to_string(), 1, -1, 0)]);
    let again = tool.call(0, &request).await;
    assert_eq!(
        delete_results(&again)[2],
        ("idle".to_string(), ResponseError::GroupIdNotFound.code()),
        "a deleted group is unknown"
    );
    assert_eq!(fetch_all(&mut tool, "busy").await.len(), 1, "untouched");
}

/// OffsetDelete removes the named partitions' offsets (unknown topics and partitions are
/// UNKNOWN_TOPIC_OR_PARTITION), after which OffsetFetch reads none; while members subscribe to
/// a topic its offsets are refused GROUP_SUBSCRIBED_TO_TOPIC, and other topics' go.
#[tokio::test]
async fn offset_delete_then_offset_fetch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(dir.path()).await;
    for name in ["orders", "refunds"] {
        broker
            .create_topic(name, 2, Default::default())
            .expect("topic");
    }
    let mut tool = Client::connect(address, "admin-tool").await;
    commit(
        &mut tool,
        "g",
        &[("orders", 0, 10), ("orders", 1, 11), ("refunds", 0, 20)],
    )
    .await;

    let request = offset_delete_request("g", &[("orders", 0), ("missing", 0), ("orders", 9)]);
    let response = tool.call(0, &request).await;
    assert_eq!(response.error_code, 0);
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    let expected = [
        ("missing".to_string(), 0, unknown),
        ("orders".to_string(), 0, 0),
        ("orders".to_string(), 9, unknown),
    ];
    assert_eq!(offset_delete_errors(&response), expected);
    let left = [
        ("orders".to_string(), 1, 11, 0),
        ("refunds".to_string(), 0, 20, 0),
    ];
    assert_eq!(fetch_all(&mut tool, "g").await, left);
    let asked = fetched(&tool.call(7, &fetch_request("g", &[("orders", 0)])).await);
    assert_eq!(asked, [("orders".to_string(), 0, -1, 0)]);

    // A member subscribed to orders: its offsets stay, refunds' go.
    let mut member = Client::connect(address, "member").await;
    assert_eq!(
        join(&mut member, "g", "", None, &["orders"])
            .await
            .error_code,
        0
    );
    let request = offset_delete_request("g", &[("orders", 1), ("refunds", 0)]);
    let response = tool.call(0, &request).await;
    let expected = [
        (
            "orders".to_string(),
            1,
            ResponseError::GroupSubscribedToTopic.code(),
        ),
        ("refunds".to_string(), 0, 0),
    ];
    assert_eq!(offset_delete_errors(&response), expected);
    assert_eq!(
        fetch_all(&mut tool, "g").await,
        [("orders".to_string(), 1, 11, 0)]
    );

    let response = tool
        .call(0, &offset_delete_request("nobody", &[("orders", 0)]))
        .await;
    assert_eq!(response.error_code, ResponseError::GroupIdNotFound.code());
    assert!(
        response.topics.is_empty(),
        "a group error comes alone, as in Kafka"
    );
    let response = tool
        .call(0, &offset_delete_request("", &[("orders", 0)]))
        .await;
    assert_eq!(response.error_code, ResponseError::InvalidGroupId.code());
}

/// An asynchronous commit followed at once by OffsetFetch on the same connection (what
/// librdkafka's committed() does after commit(asynchronous=True)) reads the new offset: before,
/// the fetch was answered at dispatch while the commit still waited for its fsync. Method: send
/// both before reading either answer, many times over, with and without require_stable.
#[tokio::test]
async fn offset_fetch_right_after_a_pipelined_commit_sees_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, address) = start(dir.path()).await;
    broker
        .create_topic("orders", 1, Default::default())
        .expect("topic");
    let mut consumer = Client::connect(address, "consumer").await;
    for offset in 1..=50 {
        let commit = commit_request("g", &[("orders", 0, offset)]);
        let fetch = fetch_request("g", &[("orders", 0)]).with_require_stable(offset % 2 == 0);
        consumer.send(8, &commit).await;
        consumer.send(7, &fetch).await;
        let committed = consumer.receive::<OffsetCommitRequest>(8).await;
        assert_eq!(committed.topics[0].partitions[0].error_code, 0);
        let read = fetched(&consumer.receive::<OffsetFetchRequest>(7).await);
        assert_eq!(
            read,
            [("orders".to_string(), 0, offset, 0)],
            "commit {offset}"
        );
    }
}

/// Deletions are tombstones in `__consumer_offsets`: a broker opened again on the same data
/// directory does not bring a deleted group or offset back, and keeps the rest. Method: each
/// broker life on its own runtime; dropping it (no clean shutdown) releases the directory, as
/// a killed process would.
#[test]
fn a_deletion_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let first = runtime();
    first.block_on(async {
        let (broker, address) = start(dir.path()).await;
        broker
            .create_topic("orders", 2, Default::default())
            .expect("topic");
        let mut tool = Client::connect(address, "admin-tool").await;
        commit(&mut tool, "deleted", &[("orders", 0, 1), ("orders", 1, 2)]).await;
        commit(&mut tool, "kept", &[("orders", 0, 3)]).await;
        commit(&mut tool, "trimmed", &[("orders", 0, 4), ("orders", 1, 5)]).await;
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group("deleted")]);
        assert_eq!(delete_results(&tool.call(2, &request).await)[0].1, 0);
        let request = offset_delete_request("trimmed", &[("orders", 0)]);
        assert_eq!(offset_delete_errors(&tool.call(0, &request).await)[0].2, 0);
    });
    drop(first);

    let second = runtime();
    second.block_on(async {
        let (_broker, address) = start(dir.path()).await;
        let mut tool = Client::connect(address, "admin-tool").await;
        let listed = list(&mut tool, &[], &[]).await;
        let listed_ids: Vec<&str> = listed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(listed_ids, ["kept", "trimmed"]);
        assert_eq!(
            describe(&mut tool, 5, "deleted").await.group_state.as_str(),
            "Dead"
        );
        assert!(fetch_all(&mut tool, "deleted").await.is_empty());
        assert_eq!(
            fetch_all(&mut tool, "kept").await,
            [("orders".to_string(), 0, 3, 0)]
        );
        let trimmed = [("orders".to_string(), 1, 5, 0)];
        assert_eq!(fetch_all(&mut tool, "trimmed").await, trimmed);
    });
}

/// A group's metadata is a record in `__consumer_offsets`, as in Kafka: after a restart a group
/// that completed a rebalance is listed and described as a Stable `consumer` group with its
/// member and assignment, the member's heartbeats of its generation are accepted, and its next
/// rebalance continues from that generation; a group that emptied keeps its generation too,
/// and a deleted group stays deleted. Method: each broker life on its own
/// runtime, dropped without a clean shutdown, as in `a_deletion_survives_a_restart`.
#[test]
fn a_rebalanced_group_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let first = runtime();
    let stable_member = first.block_on(async {
        let (broker, address) = start(dir.path()).await;
        broker
            .create_topic("orders", 2, Default::default())
            .expect("topic");
        let mut tool = Client::connect(address, "admin-tool").await;
        let mut stable_member = String::new();
        for group_id in ["stable", "left", "deleted"] {
            let mut member = Client::connect(address, "member").await;
            let joined = join(&mut member, group_id, "", None, &["orders"]).await;
            assert_eq!((joined.error_code, joined.generation_id), (0, 1));
            let id = joined.member_id.to_string();
            let synced = sync(&mut member, group_id, &joined, &[(&id, b"a")]).await;
            assert_eq!(synced.error_code, 0);
            if group_id == "stable" {
                stable_member = id;
                continue;
            }
            let leave = LeaveGroupRequest::default()
                .with_group_id(group(group_id))
                .with_members(vec![MemberIdentity::default().with_member_id(s(&id))]);
            assert_eq!(member.call(3, &leave).await.error_code, 0);
        }
        // The leave's record is written in the background: wait until a fetch sees it applied.
        wait_for_state(&mut tool, "deleted", "Empty").await;
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group("deleted")]);
        assert_eq!(delete_results(&tool.call(2, &request).await)[0].1, 0);
        assert_eq!(
            describe(&mut tool, 5, "stable").await.group_state.as_str(),
            "Stable"
        );
        stable_member
    });
    drop(first);

    let second = runtime();
    second.block_on(async {
        let (_broker, address) = start(dir.path()).await;
        let mut tool = Client::connect(address, "admin-tool").await;
        let listed = list(&mut tool, &[], &[]).await;
        let state = |id: &str, state: &str| (id.to_string(), state.to_string());
        assert_eq!(listed, [state("left", "Empty"), state("stable", "Stable")]);
        let v0 = tool.call(0, &ListGroupsRequest::default()).await;
        let types: Vec<&str> = v0.groups.iter().map(|g| g.protocol_type.as_str()).collect();
        assert_eq!(types, ["consumer", "consumer"]);
        let stable = describe(&mut tool, 5, "stable").await;
        assert_eq!(stable.group_state.as_str(), "Stable");
        assert_eq!(stable.protocol_type.as_str(), "consumer");
        assert_eq!(stable.protocol_data.as_str(), "range");
        assert_eq!(
            stable.members.len(),
            1,
            "members are restored, as Kafka does"
        );
        assert_eq!(stable.members[0].member_id.as_str(), stable_member);
        assert_eq!(stable.members[0].member_assignment.as_ref(), b"a");
        assert_eq!(stable.members[0].member_metadata, subscription(&["orders"]));
        let left = describe(&mut tool, 5, "left").await;
        assert_eq!(left.protocol_type.as_str(), "consumer");
        assert!(left.members.is_empty());
        assert_eq!(
            describe(&mut tool, 5, "deleted").await.group_state.as_str(),
            "Dead"
        );

        let mut member = Client::connect(address, "member").await;
        let heartbeat = HeartbeatRequest::default()
            .with_group_id(group("stable"))
            .with_generation_id(1)
            .with_member_id(s(&stable_member));
        let beat = member.call(4, &heartbeat).await;
        assert_eq!(beat.error_code, 0, "the restored member carries on");
        let joined = join(&mut member, "stable", &stable_member, None, &["orders"]).await;
        assert_eq!((joined.error_code, joined.generation_id), (0, 2));
        let joined = join(&mut member, "left", "", None, &["orders"]).await;
        assert_eq!(
            (joined.error_code, joined.generation_id),
            (0, 3),
            "the leave made generation 2"
        );
    });
}

/// The advertised ranges are Kafka 3.9's for these APIs.
#[tokio::test]
async fn group_admin_apis_are_advertised_at_kafka_3_9_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, address) = start(dir.path()).await;
    let mut tool = Client::connect(address, "admin-tool").await;
    let versions = tool.call(3, &ApiVersionsRequest::default()).await;
    let range = |key: ApiKey| {
        let found = versions.api_keys.iter().find(|k| k.api_key == key as i16);
        found.map(|k| (k.min_version, k.max_version))
    };
    assert_eq!(range(ApiKey::ListGroups), Some((0, 5)));
    assert_eq!(range(ApiKey::DescribeGroups), Some((0, 5)));
    assert_eq!(range(ApiKey::DeleteGroups), Some((0, 2)));
    assert_eq!(range(ApiKey::OffsetDelete), Some((0, 0)));
}
