//! What the in-process cluster tests share: three brokers forming one cluster on loopback
//! ports, raw Kafka requests to them, and bounded waits.

// Each test file uses its own part of this.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use eddy_broker::cluster::node::ClusterConfig;
use eddy_broker::{serve, Broker, BrokerConfig};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::{CreateTopicsRequest, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest any one request may take before the test fails.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest the cluster may take to settle (elect, create, fail over).
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(40);

pub(crate) fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

/// A fresh connection per request: brokers come and go in these tests.
pub(crate) async fn call<R: Request>(
    address: SocketAddr,
    version: i16,
    request: &R,
) -> R::Response {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(s("cluster-test")))
            .encode(&mut body, R::header_version(version))
            .expect("header encodes");
        request.encode(&mut body, version).expect("request encodes");
        let mut frame = BytesMut::new();
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        stream.write_all(&frame).await.expect("send");
        let size = stream.read_i32().await.expect("response size");
        let mut frame = vec![0u8; size as usize];
        stream.read_exact(&mut frame).await.expect("response");
        frame
    };
    let frame = tokio::time::timeout(STEP_TIMEOUT, exchange)
        .await
        .expect("answered in time");
    let mut frame = Bytes::from(frame);
    ResponseHeader::decode(&mut frame, R::Response::header_version(version))
        .expect("response header");
    R::Response::decode(&mut frame, version).expect("response body")
}

/// Polls `check` every 100 ms until it returns `Some`, for at most [`SETTLE_TIMEOUT`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {SETTLE_TIMEOUT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A listener on a loopback port from 21000-29999 (the range these tests may use).
pub(crate) async fn listen() -> (TcpListener, SocketAddr) {
    for _ in 0..200 {
        let port = rand::random_range(21_000..30_000u16);
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            let address = listener.local_addr().expect("address");
            return (listener, address);
        }
    }
    panic!("no free port in 21000-29999");
}

pub(crate) struct Node {
    pub(crate) id: i32,
    pub(crate) broker: Arc<Broker>,
    pub(crate) address: SocketAddr,
}

/// Starts three brokers forming one cluster (every broker a metadata voter), with short
/// heartbeats and sessions so a broker that stops heartbeating is fenced within seconds.
pub(crate) async fn start_cluster(dirs: &[tempfile::TempDir]) -> Vec<Node> {
    let mut controllers = Vec::new();
    let mut listeners = Vec::new();
    for _ in dirs {
        controllers.push(listen().await);
        listeners.push(listen().await);
    }
    let voters: Vec<(u64, String)> = controllers
        .iter()
        .enumerate()
        .map(|(i, (_, address))| (i as u64 + 1, address.to_string()))
        .collect();
    let mut nodes = Vec::new();
    for ((dir, (controller, _)), (listener, address)) in dirs.iter().zip(controllers).zip(listeners)
    {
        let id = nodes.len() as i32 + 1;
        let mut config = BrokerConfig::new(dir.path());
        config.node_id = id;
        config.advertised_port = address.port() as i32;
        config.group_initial_rebalance_delay = Duration::ZERO;
        let mut cluster = ClusterConfig::new(id, voters.clone());
        cluster.heartbeat_interval = Duration::from_millis(200);
        // Longer than a controller request may take (5 s): a broker whose heartbeat is stuck
        // on the stopped controller until then is not fenced meanwhile.
        cluster.session_timeout = Duration::from_millis(6_000);
        let broker = Broker::open_cluster(config, cluster, controller)
            .await
            .expect("open a cluster broker");
        tokio::spawn(serve(Arc::clone(&broker), listener));
        nodes.push(Node {
            id,
            broker,
            address,
        });
    }
    nodes
}

/// Creates topic `name` through the broker at `address`, retrying until every broker is
/// registered (so that `replication_factor` brokers are live) or the topic exists.
pub(crate) async fn create_topic(
    address: SocketAddr,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) {
    eventually("the topic to be created", || async {
        let configs = configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(s(k))
                    .with_value(Some(s(v)))
            })
            .collect();
        let topic = CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(configs);
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(5_000);
        let response = call(address, 5, &request).await;
        let code = response.topics[0].error_code;
        (code == 0 || code == ResponseError::TopicAlreadyExists.code()).then_some(())
    })
    .await;
}
