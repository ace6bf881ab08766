//! The broker stays bounded under clients that misbehave at the connection level: ones that go
//! quiet, send half a request, or open more connections than `max.connections`. Each test
//! serves a broker on a loopback port with short limits and drives it over raw TCP sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use eddy_broker::{bind, serve, Broker, BrokerConfig};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Encodable;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any step may take before the test fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn start(config: BrokerConfig) -> (Arc<Broker>, SocketAddr) {
    let broker = Broker::open(config).await.expect("open");
    let (listener, address) = bind("127.0.0.1:0").await.expect("bind");
    tokio::spawn(serve(Arc::clone(&broker), listener));
    (broker, address)
}

/// A v0 ApiVersions request frame: the smallest request every client sends first.
fn api_versions_frame(correlation_id: i32) -> BytesMut {
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(0)
        .with_correlation_id(correlation_id)
        .encode(&mut body, ApiKey::ApiVersions.request_header_version(0))
        .expect("header encodes");
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.put_slice(&body);
    frame
}

/// Sends ApiVersions and reads the answer's correlation id; an error if the broker closed.
async fn ask(stream: &mut TcpStream, correlation_id: i32) -> std::io::Result<i32> {
    stream
        .write_all(&api_versions_frame(correlation_id))
        .await?;
    let size = stream.read_i32().await?;
    let mut response = vec![0u8; size as usize];
    stream.read_exact(&mut response).await?;
    Ok(i32::from_be_bytes(
        response[..4].try_into().expect("4 bytes"),
    ))
}

/// Waits for the broker to close `stream`, returning how long that took.
async fn wait_closed(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut buf)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!("expected the connection to close, read {n} bytes"),
        Err(_) => panic!("the broker did not close the connection within {STEP_TIMEOUT:?}"),
    }
}

fn config_with_idle(dir: &tempfile::TempDir, idle: Duration) -> BrokerConfig {
    let mut config = BrokerConfig::new(dir.path());
    config.connections_max_idle = idle;
    config
}

#[tokio::test]
async fn a_connection_idle_past_connections_max_idle_is_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let idle = Duration::from_millis(300);
    let (_broker, address) = start(config_with_idle(&dir, idle)).await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    assert_eq!(ask(&mut stream, 1).await.expect("served"), 1);
    let waited = wait_closed(&mut stream).await;
    assert!(
        waited >= idle / 2,
        "closed after {waited:?}, before the idle timeout"
    );
}

/// A client announcing a request and sending only part of it (slowloris) holds the connection
/// no longer than an idle one.
#[tokio::test]
async fn a_half_sent_request_does_not_hold_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, address) = start(config_with_idle(&dir, Duration::from_millis(300))).await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let frame = api_versions_frame(1);
    stream
        .write_all(&frame[..frame.len() - 2])
        .await
        .expect("write");
    wait_closed(&mut stream).await;
}

/// The idle timeout counts from the last complete request, so a client that keeps asking is
/// never cut off.
#[tokio::test]
async fn a_busy_connection_outlives_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_broker, address) = start(config_with_idle(&dir, Duration::from_millis(300))).await;
    let mut stream = TcpStream::connect(address).await.expect("connect");
    for correlation_id in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            ask(&mut stream, correlation_id).await.expect("served"),
            correlation_id
        );
    }
}

/// Beyond `max.connections` a new connection is closed at once; closing one frees its slot.
#[tokio::test]
async fn connections_beyond_max_connections_are_closed_until_one_frees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = BrokerConfig::new(dir.path());
    config.connections_max = 2;
    let (_broker, address) = start(config).await;
    let mut first = TcpStream::connect(address).await.expect("connect");
    let mut second = TcpStream::connect(address).await.expect("connect");
    assert_eq!(ask(&mut first, 1).await.expect("first is served"), 1);
    assert_eq!(ask(&mut second, 2).await.expect("second is served"), 2);
    let mut third = TcpStream::connect(address)
        .await
        .expect("the kernel accepts");
    wait_closed(&mut third).await;
    assert_eq!(ask(&mut second, 3).await.expect("still served"), 3);
    drop(first);
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let mut next = TcpStream::connect(address).await.expect("connect");
        if ask(&mut next, 4).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first connection's slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
