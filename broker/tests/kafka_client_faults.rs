//! The Kafka-protocol client under cancellation and network faults: a request dropped half-way,
//! connections the broker side cuts, and long polls beside produce. The client talks to a real
//! broker on a loopback socket, through a proxy the tests can cut.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eddy_broker::{
    bind, serve, Broker, BrokerConfig, BrokerError, KafkaClient, LogClient, ProducerRecord,
};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

fn record(value: &str) -> ProducerRecord {
    ProducerRecord {
        value: Some(Bytes::from(value.to_string())),
        ..Default::default()
    }
}

/// A TCP proxy in front of the broker whose connections can all be cut at once, as a broker
/// restart cuts them.
struct Proxy {
    address: String,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    fn start(listener: TcpListener, upstream: String) -> Proxy {
        let address = listener.local_addr().expect("proxy address").to_string();
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepted = Arc::clone(&links);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                accepted.lock().push(tokio::spawn(async move {
                    if let Ok(mut broker) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                }));
            }
        });
        Proxy { address, links }
    }

    /// Closes every connection through the proxy (both sides see the close).
    async fn cut(&self) {
        for link in self.links.lock().drain(..) {
            link.abort();
        }
        // Let the closes reach the client's sockets.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A broker on a loopback port, and a client reaching it through a proxy.
async fn broker_behind_proxy(dir: &std::path::Path) -> (Proxy, KafkaClient) {
    let (listener, address) = bind("127.0.0.1:0").await.expect("bind");
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = BrokerConfig::new(dir);
    // Metadata must send clients to the proxy, not to the broker's own port.
    config.advertised_port = proxy_listener.local_addr().expect("address").port() as i32;
    let broker = Broker::open(config).await.expect("open");
    tokio::spawn(serve(Arc::clone(&broker), listener));
    let proxy = Proxy::start(proxy_listener, address.to_string());
    let client = KafkaClient::connect(&proxy.address).await.expect("connect");
    (proxy, client)
}

async fn values(client: &KafkaClient, topic: &str, wait: Duration) -> Vec<String> {
    let records = client
        .fetch(topic, 0, 0, 1 << 20, wait)
        .await
        .expect("fetch");
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_cancelled_mid_poll_leaves_no_answer_for_the_next_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_proxy, client) = broker_behind_proxy(dir.path()).await;
    client
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create");
    // A push client disconnecting drops its fetch while the broker holds it in a long poll:
    // its answer arrives later, on the connection the fetch was using.
    for _ in 0..3 {
        let polled = tokio::time::timeout(
            Duration::from_millis(100),
            client.fetch("t", 0, 0, 1 << 20, Duration::from_millis(400)),
        )
        .await;
        assert!(polled.is_err(), "the fetch should still be waiting");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Produce, metadata and fetch all still work, with the right answers.
    client
        .produce("t", vec![record("a"), record("b")])
        .await
        .expect("produce after cancelled fetches");
    assert_eq!(client.partition_count("t").await.expect("count"), 1);
    assert_eq!(values(&client, "t", Duration::ZERO).await, ["a", "b"]);
    let range = client.offsets("t", 0).await.expect("offsets");
    assert_eq!(range.high_watermark, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_after_the_broker_cut_every_connection_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (proxy, client) = broker_behind_proxy(dir.path()).await;
    client
        .create_topic("t", 1, BTreeMap::new())
        .await
        .expect("create");
    client
        .produce("t", vec![record("a")])
        .await
        .expect("produce");
    assert_eq!(values(&client, "t", Duration::ZERO).await, ["a"]);
    client
        .commit("g", &[("t".into(), 0, 1)])
        .await
        .expect("commit");

    // As a broker restart does: every pooled connection is closed under the client.
    proxy.cut().await;
    client
        .produce("t", vec![record("b")])
        .await
        .expect("produce after the cut");
    assert_eq!(values(&client, "t", Duration::ZERO).await, ["a", "b"]);
    assert_eq!(
        client.committed("g", "t", 0).await.expect("committed"),
        Some(1)
    );
    client
        .create_topic("u", 2, BTreeMap::new())
        .await
        .expect("create after the cut");

    // A cut while a fetch waits: the fetch is sent again on a new connection (a fetch may be
    // repeated) or fails with a network error; never a hang or another request's answer.
    let waiting = {
        let client = Arc::new(client);
        let polling = Arc::clone(&client);
        let handle = tokio::spawn(async move {
            polling
                .fetch("u", 0, 0, 1 << 20, Duration::from_secs(2))
                .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        proxy.cut().await;
        match handle.await.expect("join") {
            Ok(records) => assert!(records.is_empty(), "{records:?}"),
            Err(e) => assert!(matches!(e, BrokerError::Network { .. }), "{e}"),
        }
        client
    };
    assert_eq!(values(&waiting, "t", Duration::ZERO).await, ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_does_not_hold_up_produce() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_proxy, client) = broker_behind_proxy(dir.path()).await;
    let client = Arc::new(client);
    for topic in ["idle", "busy"] {
        client
            .create_topic(topic, 1, BTreeMap::new())
            .await
            .expect("create");
    }
    let polling = Arc::clone(&client);
    let poll = tokio::spawn(async move {
        polling
            .fetch("idle", 0, 0, 1 << 20, Duration::from_secs(20))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    client
        .produce("busy", vec![record("x")])
        .await
        .expect("produce");
    assert_eq!(values(&client, "busy", Duration::ZERO).await, ["x"]);
    assert!(
        !poll.is_finished(),
        "produce and fetch answered while the long poll on an idle topic still waits"
    );
    poll.abort();
}
