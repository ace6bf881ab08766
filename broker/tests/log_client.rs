//! The `LogClient` contract, checked against both implementations: the in-process client and
//! the Kafka-protocol client talking to a broker served on a loopback socket.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eddy_broker::partitioner::partition_for_key;
use eddy_broker::{
    bind, serve, Broker, BrokerConfig, BrokerError, InProcessClient, KafkaClient, LogClient,
    OffsetReset, ProducerRecord,
};

fn keyed(key: &str, value: &str) -> ProducerRecord {
    ProducerRecord {
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms: Some(1_700_000_000_000),
        headers: vec![("h".to_string(), Some(Bytes::from_static(b"1")))],
        ..Default::default()
    }
}

async fn contract(client: &dyn LogClient) {
    client
        .create_topic("t", 3, BTreeMap::new())
        .await
        .expect("create");
    assert!(matches!(
        client.create_topic("t", 3, BTreeMap::new()).await,
        Err(BrokerError::TopicAlreadyExists(_))
    ));
    assert_eq!(client.partition_count("t").await.expect("count"), 3);
    let topics = client.topics().await.expect("topics");
    assert!(topics.contains(&("t".to_string(), 3)), "{topics:?}");
    assert!(matches!(
        client.partition_count("missing").await,
        Err(BrokerError::UnknownTopicOrPartition { .. })
    ));

    let records: Vec<ProducerRecord> = (0..100)
        .map(|i| keyed(&format!("k{i}"), &format!("v{i}")))
        .collect();
    let placed = client.produce("t", records).await.expect("produce");
    let mut per_partition: BTreeMap<i32, Vec<(i64, usize)>> = BTreeMap::new();
    for (i, (partition, offset)) in placed.iter().enumerate() {
        assert_eq!(*partition, partition_for_key(format!("k{i}").as_bytes(), 3));
        per_partition
            .entry(*partition)
            .or_default()
            .push((*offset, i));
    }
    for (partition, placed) in &per_partition {
        let fetched = client
            .fetch("t", *partition, 0, 1 << 20, Duration::from_millis(100))
            .await
            .expect("fetch");
        assert_eq!(fetched.len(), placed.len());
        for (record, (offset, i)) in fetched.iter().zip(placed) {
            assert_eq!(record.offset, *offset);
            assert_eq!(record.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(record.value.as_deref(), Some(format!("v{i}").as_bytes()));
            assert_eq!(record.timestamp_ms, 1_700_000_000_000);
            assert_eq!(
                record.headers,
                vec![("h".to_string(), Some(Bytes::from_static(b"1")))]
            );
        }
        let range = client.offsets("t", *partition).await.expect("offsets");
        assert_eq!(range.log_start_offset, 0);
        assert_eq!(range.high_watermark, placed.len() as i64);
        let at_end = client
            .fetch(
                "t",
                *partition,
                range.high_watermark,
                1 << 20,
                Duration::from_millis(50),
            )
            .await
            .expect("fetch at end");
        assert!(at_end.is_empty());
    }

    let keyless: Vec<ProducerRecord> = (0..10)
        .map(|i| ProducerRecord {
            value: Some(Bytes::from(format!("n{i}"))),
            ..Default::default()
        })
        .collect();
    let placed = client.produce("t", keyless).await.expect("produce keyless");
    assert!(
        placed.iter().all(|(p, _)| *p == placed[0].0),
        "one call sticks to one partition"
    );

    let (partition, count) = per_partition
        .iter()
        .map(|(p, v)| (*p, v.len() as i64))
        .next()
        .expect("one");
    assert_eq!(
        client
            .start_offset("g", "t", partition, OffsetReset::Earliest)
            .await
            .expect("reset"),
        0
    );
    assert!(client
        .start_offset("g", "t", partition, OffsetReset::None)
        .await
        .is_err());
    client
        .commit("g", &[("t".to_string(), partition, 2)])
        .await
        .expect("commit");
    assert_eq!(
        client
            .committed("g", "t", partition)
            .await
            .expect("committed"),
        Some(2)
    );
    assert_eq!(
        client
            .start_offset("g", "t", partition, OffsetReset::Latest)
            .await
            .expect("start"),
        2
    );
    let lag = client.lag("g").await.expect("lag");
    assert_eq!(lag.len(), 1);
    let high_watermark = client
        .offsets("t", partition)
        .await
        .expect("offsets")
        .high_watermark;
    assert!(high_watermark >= count);
    assert_eq!(lag[0].lag_records, high_watermark - 2);

    client.delete_topic("t").await.expect("delete");
    assert!(client.partition_count("t").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_client_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::open(BrokerConfig::new(dir.path()))
        .await
        .expect("open");
    contract(&InProcessClient::new(broker)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_protocol_client_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (listener, address) = bind("127.0.0.1:0").await.expect("bind");
    let mut config = BrokerConfig::new(dir.path());
    config.advertised_port = address.port() as i32;
    let broker = Broker::open(config).await.expect("open");
    tokio::spawn(serve(Arc::clone(&broker), listener));
    let client = KafkaClient::connect(&address.to_string())
        .await
        .expect("connect");
    contract(&client).await;
}
