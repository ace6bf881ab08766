//! Transaction markers: the commit or abort control batch the coordinator has written into
//! every partition of a finished transaction, Kafka's WriteTxnMarkers.
//!
//! A partition led here gets its marker directly ([`write_local`]); one led by another broker
//! gets it through a WriteTxnMarkers request to that broker, whose handler calls the same
//! [`write_local`]. A marker is written like an acks=all produce: appended by the leader,
//! acknowledged once on disk (for topics that sync) and on every in-sync replica. A marker in a
//! `__consumer_offsets` partition also settles the offsets the transaction committed there
//! (TxnOffsetCommit): they become visible on commit and are dropped on abort.
//!
//! The coordinator retries a partition until its marker is written: a partition without a
//! leader now will have one. A deleted topic needs no marker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{TopicName, WriteTxnMarkersRequest};

use crate::broker::{now_ms, Broker};
use crate::error::{BrokerError, Result};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::kafka_client::connection::{Lane, Retry};
use crate::protocol::str_bytes;

/// How long a marker waits for the partition's in-sync replicas.
const MARKER_TIMEOUT_MS: i32 = 30_000;
/// The pause between rounds of retrying the partitions whose marker failed.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
const WRITE_TXN_MARKERS_VERSION: i16 = 1;

/// One transaction's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Writes `marker` into every partition of `partitions`, retrying until each is written or its
/// topic no longer exists.
pub(crate) async fn write_all(
    broker: &Arc<Broker>,
    marker: Marker,
    partitions: &BTreeSet<(String, i32)>,
) {
    let mut left: BTreeSet<(String, i32)> = partitions.clone();
    let mut round = 0u32;
    while !left.is_empty() {
        let mut failed = BTreeSet::new();
        for (leader, group) in by_leader(broker, &left) {
            let outcome = match leader {
                Leader::Unknown => group
                    .iter()
                    .map(|(t, p)| (t.clone(), *p, Err(no_leader(t, *p))))
                    .collect(),
                Leader::Here => {
                    let mut outcomes = Vec::new();
                    for (topic, index) in &group {
                        let written = write_local(broker, topic, *index, marker).await;
                        outcomes.push((topic.clone(), *index, written));
                    }
                    outcomes
                }
                Leader::At(address) => send_remote(broker, &address, marker, &group).await,
            };
            for (topic, index, written) in outcome {
                match written {
                    Ok(()) => {}
                    Err(_) if !topic_exists(broker, &topic) => {}
                    Err(e) => {
                        if round.is_multiple_of(50) {
                            tracing::warn!(%topic, partition = index, error = %e,
                                "could not write a transaction marker; retrying");
                        }
                        failed.insert((topic, index));
                    }
                }
            }
        }
        left = failed;
        if !left.is_empty() {
            round += 1;
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }
}

fn no_leader(topic: &str, index: i32) -> BrokerError {
    BrokerError::Replication {
        kind: crate::error::ReplicationError::LeaderNotAvailable,
        topic: topic.to_string(),
        partition: index,
    }
}

fn topic_exists(broker: &Broker, topic: &str) -> bool {
    match broker.cluster() {
        Some(node) => node.image().topics.contains_key(topic),
        None => broker.topic(topic).is_some(),
    }
}

/// Where a partition's leader is.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Leader {
    Here,
    /// Another broker, at "host:port".
    At(String),
    /// No live leader known now.
    Unknown,
}

/// The partitions grouped by where their leader is.
fn by_leader(
    broker: &Broker,
    partitions: &BTreeSet<(String, i32)>,
) -> BTreeMap<Leader, Vec<(String, i32)>> {
    let mut grouped: BTreeMap<Leader, Vec<(String, i32)>> = BTreeMap::new();
    let Some(node) = broker.cluster() else {
        grouped.insert(Leader::Here, partitions.iter().cloned().collect());
        return grouped;
    };
    let image = node.image();
    let here = broker.config.node_id;
    for (topic, index) in partitions {
        let leader = image.partition(topic, *index).map(|p| p.leader);
        let place = match leader {
            Some(id) if id == here => Leader::Here,
            Some(id) => image
                .brokers
                .get(&id)
                .filter(|b| !b.fenced)
                .map_or(Leader::Unknown, |b| {
                    Leader::At(format!("{}:{}", b.host, b.port))
                }),
            None => Leader::Unknown,
        };
        grouped
            .entry(place)
            .or_default()
            .push((topic.clone(), *index));
    }
    grouped
}

/// Writes a marker into a partition led here and waits until it is acknowledged as an acks=all
/// produce would be; a `__consumer_offsets` partition's transactional offsets then settle.
pub(crate) async fn write_local(
    broker: &Broker,
    topic: &str,
    index: i32,
    marker: Marker,
) -> Result<()> {
    let partition = broker.partition(topic, index)?;
    let leader_epoch = partition.role().leader_epoch();
    let info = partition.write_marker(
        marker.producer_id,
        marker.producer_epoch,
        marker.commit,
        marker.coordinator_epoch,
        now_ms(),
    )?;
    partition.wait_durable(info.last_offset).await?;
    partition
        .wait_replicated(info.last_offset, leader_epoch, MARKER_TIMEOUT_MS)
        .await?;
    if topic == OFFSETS_TOPIC {
        broker
            .groups
            .offsets
            .end_transaction(index, marker.producer_id, marker.commit);
    }
    Ok(())
}

/// Sends one WriteTxnMarkers request for `partitions` to the broker at `address`.
async fn send_remote(
    broker: &Broker,
    address: &str,
    marker: Marker,
    partitions: &[(String, i32)],
) -> Vec<(String, i32, Result<()>)> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, index) in partitions {
        topics.entry(topic).or_default().push(*index);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(marker.producer_id.into())
            .with_producer_epoch(marker.producer_epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, indexes)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(TopicName(str_bytes(topic)))
                            .with_partition_indexes(indexes)
                    })
                    .collect(),
            )]);
    let node = broker.cluster().expect("remote markers only in a cluster");
    let sent = node
        .connections
        .send(
            address,
            Lane::Control,
            Retry::Never,
            WRITE_TXN_MARKERS_VERSION,
            &request,
            Duration::from_millis(MARKER_TIMEOUT_MS as u64),
        )
        .await;
    let all_failed = |e: &BrokerError| {
        partitions
            .iter()
            .map(|(t, p)| {
                (
                    t.clone(),
                    *p,
                    Err(BrokerError::Network {
                        address: address.to_string(),
                        reason: e.to_string(),
                    }),
                )
            })
            .collect()
    };
    let response = match sent {
        Ok(response) => response,
        Err(e) => return all_failed(&e),
    };
    let mut outcomes = Vec::new();
    for result in response.markers {
        for topic in result.topics {
            for p in topic.partitions {
                let written = match p.error_code {
                    0 => Ok(()),
                    code => Err(BrokerError::InvalidRequest(format!(
                        "WriteTxnMarkers to {address} failed with error {code}"
                    ))),
                };
                outcomes.push((topic.name.to_string(), p.partition_index, written));
            }
        }
    }
    // A partition the answer left out was not written.
    for (topic, index) in partitions {
        if !outcomes.iter().any(|(t, p, _)| t == topic && p == index) {
            outcomes.push((
                topic.clone(),
                *index,
                Err(BrokerError::Internal(
                    "missing from WriteTxnMarkers answer".into(),
                )),
            ));
        }
    }
    outcomes
}
