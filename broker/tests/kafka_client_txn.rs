//! Transactions through the Kafka-protocol client (`KafkaClient`): a committed transaction's
//! records and offsets become visible together; a transaction whose producer is fenced before
//! it commits fails with a fencing error and none of it ever becomes visible. The client talks
//! to a real broker on a loopback socket, through a proxy that can hold back an EndTxn (so a
//! test can fence the producer while its records sit in the log, written but not committed) or
//! answer it with an error code of its own (so a test sees what the client does with it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use eddy_broker::error::TxnError;
use eddy_broker::log::batch::decode_records;
use eddy_broker::{
    bind, serve, Broker, BrokerConfig, BrokerError, KafkaClient, LogClient, ProducerRecord,
    Transaction,
};
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Longest any step of these tests may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Kafka's api key of EndTxn.
const END_TXN_KEY: i16 = 26;
const TXN_TIMEOUT_MS: i32 = 60_000;

fn keyed(key: &str, value: &str) -> ProducerRecord {
    ProducerRecord {
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        ..Default::default()
    }
}

/// What the proxy does with the next EndTxn request once armed; later ones pass.
enum Intercept {
    /// Says so on the first channel, then forwards the request when the second fires.
    Hold(oneshot::Sender<()>, oneshot::Receiver<()>),
    /// Answers it with this error code itself; the broker never sees it.
    Answer(i16),
}

type Gate = Arc<Mutex<Option<Intercept>>>;

/// An EndTxn response with `error_code` to the request in `frame` (header and body).
fn end_txn_answer(frame: &[u8], error_code: i16) -> Vec<u8> {
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let mut request = Bytes::copy_from_slice(frame);
    let header = RequestHeader::decode(&mut request, EndTxnRequest::header_version(version))
        .expect("request header");
    let mut body = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut body, EndTxnResponse::header_version(version))
        .expect("header encodes");
    EndTxnResponse::default()
        .with_error_code(error_code)
        .encode(&mut body, version)
        .expect("response encodes");
    let mut answer = (body.len() as i32).to_be_bytes().to_vec();
    answer.extend_from_slice(&body);
    answer
}

/// A TCP proxy in front of the broker that reads each request frame on its way to the broker,
/// so it can hold or answer EndTxn at the gate. A connection carries one request at a time, so
/// an answer of the proxy's own never interleaves with the broker's.
fn start_proxy(listener: TcpListener, upstream: String, gate: Gate) {
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                let Ok(broker) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, client_write) = client.into_split();
                let (mut broker_read, mut broker_write) = broker.into_split();
                let client_write = Arc::new(tokio::sync::Mutex::new(client_write));
                let answers = Arc::clone(&client_write);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = broker_read.read(&mut buffer).await {
                        if answers.lock().await.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                while let Ok(size) = client_read.read_i32().await {
                    let mut frame = vec![0u8; size.max(0) as usize];
                    if client_read.read_exact(&mut frame).await.is_err() {
                        break;
                    }
                    let key = i16::from_be_bytes([frame[0], frame[1]]);
                    let intercept = match key {
                        END_TXN_KEY => gate.lock().take(),
                        _ => None,
                    };
                    match intercept {
                        Some(Intercept::Answer(code)) => {
                            let answer = end_txn_answer(&frame, code);
                            if client_write.lock().await.write_all(&answer).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        Some(Intercept::Hold(held, release)) => {
                            let _ = held.send(());
                            let _ = release.await;
                        }
                        None => {}
                    }
                    let mut out = size.to_be_bytes().to_vec();
                    out.extend_from_slice(&frame);
                    if broker_write.write_all(&out).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A broker on a loopback port, a client reaching it through the gated proxy, and the gate.
async fn broker_behind_proxy(dir: &std::path::Path) -> (Arc<Broker>, Arc<KafkaClient>, Gate) {
    let (listener, address) = bind("127.0.0.1:0").await.expect("bind");
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = BrokerConfig::new(dir);
    // Metadata and FindCoordinator must send the client to the proxy.
    config.advertised_port = proxy_listener.local_addr().expect("address").port() as i32;
    let proxy_address = proxy_listener.local_addr().expect("address").to_string();
    let broker = Broker::open(config).await.expect("open");
    tokio::spawn(serve(Arc::clone(&broker), listener));
    let gate: Gate = Arc::default();
    start_proxy(proxy_listener, address.to_string(), Arc::clone(&gate));
    let client = KafkaClient::connect(&proxy_address).await.expect("connect");
    (broker, Arc::new(client), gate)
}

/// What a read_committed consumer reads from a partition: the batches below the last stable
/// offset, less the records of aborted transactions (each test partition has one producer, so
/// an aborted transaction is the offset range from its first record to its marker).
fn read_committed(broker: &Broker, topic: &str, index: i32) -> Vec<String> {
    let partition = broker.partition(topic, index).expect("partition");
    let bytes = partition.read_committed(0, 1 << 20).expect("read");
    let aborted = partition
        .log()
        .lock()
        .aborted_transactions(0, partition.log_end_offset());
    decode_records(&bytes)
        .expect("decode")
        .into_iter()
        .filter(|r| {
            !aborted
                .iter()
                .any(|a| (a.first_offset..=a.last_offset).contains(&r.offset))
        })
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

fn is_fenced(error: &BrokerError) -> bool {
    matches!(
        error,
        BrokerError::Transaction {
            kind: TxnError::ProducerFenced { .. },
            ..
        } | BrokerError::InvalidProducerEpoch { .. }
    )
}

async fn step<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP_TIMEOUT:?}: {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_shows_its_records_and_offsets_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, client, _gate) = broker_behind_proxy(dir.path()).await;
    for (topic, partitions) in [("out", 2), ("in", 1)] {
        client
            .create_topic(topic, partitions, BTreeMap::new())
            .await
            .expect("create");
    }
    let producer = step("init", client.init_transactions("t-commit", TXN_TIMEOUT_MS))
        .await
        .expect("init_transactions");
    let records: Vec<ProducerRecord> = (0..6)
        .map(|i| keyed(&format!("k{i}"), &format!("v{i}")))
        .collect();
    let transaction = Transaction {
        records: vec![("out".to_string(), records)],
        offsets: Some(("g".to_string(), vec![("in".to_string(), 0, 7)])),
    };
    step("commit", client.commit_transaction(&producer, transaction))
        .await
        .expect("commit_transaction");

    let mut visible: Vec<String> = (0..2)
        .flat_map(|index| read_committed(&broker, "out", index))
        .collect();
    visible.sort();
    assert_eq!(visible, ["v0", "v1", "v2", "v3", "v4", "v5"]);
    for index in 0..2 {
        let partition = broker.partition("out", index).expect("partition");
        assert_eq!(
            partition.last_stable_offset(),
            partition.log_end_offset(),
            "partition {index}: no transaction left open"
        );
    }
    let committed = client.committed("g", "in", 0).await.expect("committed");
    assert_eq!(committed, Some(7));

    // A second transaction of the same producer (its sequences continue) commits too.
    let transaction = Transaction {
        records: vec![("out".to_string(), vec![keyed("k0", "w0")])],
        offsets: Some(("g".to_string(), vec![("in".to_string(), 0, 8)])),
    };
    step(
        "commit again",
        client.commit_transaction(&producer, transaction),
    )
    .await
    .expect("second commit_transaction");
    assert_eq!(
        client.committed("g", "in", 0).await.expect("committed"),
        Some(8)
    );
    let all: Vec<String> = (0..2)
        .flat_map(|index| read_committed(&broker, "out", index))
        .collect();
    assert!(all.contains(&"w0".to_string()), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_fenced_before_its_commit_fails_and_its_transaction_never_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, client, gate) = broker_behind_proxy(dir.path()).await;
    for topic in ["out", "in"] {
        client
            .create_topic(topic, 1, BTreeMap::new())
            .await
            .expect("create");
    }
    let fenced = step("init", client.init_transactions("t-fence", TXN_TIMEOUT_MS))
        .await
        .expect("init_transactions");

    // The transaction writes its records and offsets; its EndTxn waits at the proxy.
    let (held_sender, held) = oneshot::channel();
    let (release, release_receiver) = oneshot::channel();
    *gate.lock() = Some(Intercept::Hold(held_sender, release_receiver));
    let committing = {
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            let transaction = Transaction {
                records: vec![("out".to_string(), vec![keyed("a", "x"), keyed("b", "y")])],
                offsets: Some(("g".to_string(), vec![("in".to_string(), 0, 5)])),
            };
            let outcome = client.commit_transaction(&fenced, transaction).await;
            (fenced, outcome)
        })
    };
    step("EndTxn to reach the proxy", held)
        .await
        .expect("the commit sent EndTxn");
    let partition = broker.partition("out", 0).expect("partition");
    assert_eq!(partition.log_end_offset(), 2, "both records are in the log");
    assert_eq!(partition.last_stable_offset(), 0, "the transaction is open");

    // A new producer with the same transactional id fences the first and aborts its
    // transaction; then the held EndTxn(commit) goes on.
    let successor = step(
        "init again",
        client.init_transactions("t-fence", TXN_TIMEOUT_MS),
    )
    .await
    .expect("second init_transactions");
    release.send(()).expect("the proxy waits for the release");
    let (fenced, outcome) = step("the fenced commit", committing)
        .await
        .expect("the commit task ran");
    let error = outcome.expect_err("a fenced producer cannot commit");
    assert!(is_fenced(&error), "a fencing error, not {error:?}");

    assert_eq!(partition.last_stable_offset(), partition.log_end_offset());
    let aborted = partition
        .log()
        .lock()
        .aborted_transactions(0, partition.log_end_offset());
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    assert_eq!(aborted[0].first_offset, 0);
    assert!(read_committed(&broker, "out", 0).is_empty());
    assert_eq!(
        client.committed("g", "in", 0).await.expect("committed"),
        None
    );

    // The fenced producer stays fenced, even for a transaction it has not begun: nothing of it
    // reaches the log.
    let end = partition.log_end_offset();
    let retried = Transaction {
        records: vec![("out".to_string(), vec![keyed("c", "late")])],
        offsets: None,
    };
    let error = step(
        "a late transaction",
        client.commit_transaction(&fenced, retried),
    )
    .await
    .expect_err("a fenced producer cannot begin a transaction");
    assert!(is_fenced(&error), "a fencing error, not {error:?}");
    assert_eq!(partition.log_end_offset(), end, "nothing appended");

    // The successor commits normally.
    let transaction = Transaction {
        records: vec![("out".to_string(), vec![keyed("a", "z")])],
        offsets: Some(("g".to_string(), vec![("in".to_string(), 0, 9)])),
    };
    step(
        "the successor's commit",
        client.commit_transaction(&successor, transaction),
    )
    .await
    .expect("the successor commits");
    assert_eq!(read_committed(&broker, "out", 0), ["z"]);
    assert_eq!(
        client.committed("g", "in", 0).await.expect("committed"),
        Some(9)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_coordinator_is_asked_again_and_a_refused_commit_is_aborted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, client, gate) = broker_behind_proxy(dir.path()).await;
    client
        .create_topic("out", 1, BTreeMap::new())
        .await
        .expect("create");
    let producer = step("init", client.init_transactions("t-busy", TXN_TIMEOUT_MS))
        .await
        .expect("init_transactions");
    let partition = broker.partition("out", 0).expect("partition");

    // CONCURRENT_TRANSACTIONS (51) says the coordinator is still finishing the previous
    // transaction: the client asks again, and the commit goes through.
    *gate.lock() = Some(Intercept::Answer(51));
    let transaction = Transaction {
        records: vec![("out".to_string(), vec![keyed("a", "first")])],
        offsets: None,
    };
    step("commit", client.commit_transaction(&producer, transaction))
        .await
        .expect("committed after a retry");
    assert!(
        gate.lock().is_none(),
        "the first EndTxn was answered by the proxy"
    );
    assert_eq!(read_committed(&broker, "out", 0), ["first"]);

    // INVALID_TXN_STATE (48) is not retried: the commit fails with the transaction error, and
    // the client's EndTxn(abort) ends the transaction, so read_committed readers move on.
    *gate.lock() = Some(Intercept::Answer(48));
    let transaction = Transaction {
        records: vec![("out".to_string(), vec![keyed("a", "second")])],
        offsets: None,
    };
    let error = step(
        "refused commit",
        client.commit_transaction(&producer, transaction),
    )
    .await
    .expect_err("the coordinator refused the commit");
    assert!(
        matches!(
            error,
            BrokerError::Transaction {
                kind: TxnError::InvalidTxnState { commit: true, .. },
                ..
            }
        ),
        "INVALID_TXN_STATE as a transaction error, not {error:?}"
    );
    assert_eq!(partition.last_stable_offset(), partition.log_end_offset());
    let aborted = partition
        .log()
        .lock()
        .aborted_transactions(0, partition.log_end_offset());
    assert_eq!(aborted.len(), 1, "{aborted:?}");
    assert_eq!(read_committed(&broker, "out", 0), ["first"]);
}
