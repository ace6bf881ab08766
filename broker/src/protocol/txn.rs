//! The transaction APIs: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn and TxnOffsetCommit for producers; WriteTxnMarkers between
//! brokers; DescribeTransactions, ListTransactions and DescribeProducers for admin tools. The
//! coordinator's rules are in `txn/`; the partitions' in `log/`.
//!
//! PRODUCER_FENCED is newer than some request versions (KIP-588): older ones get
//! INVALID_PRODUCER_EPOCH for it, as Kafka answers them.

use std::collections::BTreeSet;

use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{self, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::ResponseError;

use super::{str_bytes, RequestContext};
use crate::broker::{now_ms, Broker};
use crate::error::BrokerError;
use crate::group::offsets;
use crate::group::CommittedOffset;
use crate::txn::markers::{self, Marker};
use crate::txn::{self, InitRequest};

/// The error code for `error` in a response of `version`, where PRODUCER_FENCED exists from
/// `fenced_since` on.
fn code(error: &BrokerError, version: i16, fenced_since: i16) -> i16 {
    let code = error.code();
    if code == ResponseError::ProducerFenced.code() && version < fenced_since {
        return ResponseError::InvalidProducerEpoch.code();
    }
    code
}

/// InitProducerId: without a transactional id, an idempotent producer's id (`metadata.rs`
/// and `cluster.rs` allocate it); with one, the transaction coordinator's answer.
pub(super) async fn init_producer_id(
    context: RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let broker = &context.broker;
    let response = InitProducerIdResponse::default()
        .with_producer_id((-1).into())
        .with_producer_epoch(-1);
    let transactional_id = request.transactional_id.as_deref().map(|s| s.as_str());
    let outcome = match transactional_id {
        None | Some("") => txn::allocate_producer_id(broker).await.map(|id| (id, 0)),
        Some(transactional_id) => {
            let current = (request.producer_id.0 >= 0)
                .then_some((request.producer_id.0, request.producer_epoch));
            let init = InitRequest {
                transactional_id,
                timeout_ms: request.transaction_timeout_ms,
                current,
            };
            broker.transactions.init_producer_id(broker, init).await
        }
    };
    match outcome {
        Ok((id, epoch)) => response
            .with_producer_id(id.into())
            .with_producer_epoch(epoch),
        Err(e) => response.with_error_code(code(&e, context.version, 4)),
    }
}

/// Where a partition named in a transaction stands: known, or its error.
fn partition_error(broker: &Broker, topic: &str, index: i32) -> Option<BrokerError> {
    let exists = match broker.cluster() {
        Some(node) => node.image().partition(topic, index).is_some(),
        None => broker.partition(topic, index).is_ok(),
    };
    (!exists).then(|| BrokerError::UnknownTopicOrPartition {
        topic: topic.to_string(),
        partition: index,
    })
}

pub(super) async fn add_partitions_to_txn(
    context: RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    let broker = &context.broker;
    let wanted: Vec<(String, i32)> = request
        .v3_and_below_topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.to_string(), *p)))
        .collect();
    let unknown: Vec<Option<BrokerError>> = wanted
        .iter()
        .map(|(t, p)| partition_error(broker, t, *p))
        .collect();
    // As Kafka: one unknown partition fails the request; the others are "not attempted".
    let errors: Vec<i16> = if unknown.iter().any(Option::is_some) {
        unknown
            .iter()
            .map(|e| match e {
                Some(e) => e.code(),
                None => ResponseError::OperationNotAttempted.code(),
            })
            .collect()
    } else {
        let outcome = broker
            .transactions
            .add_partitions(
                broker,
                &request.v3_and_below_transactional_id,
                (
                    request.v3_and_below_producer_id.0,
                    request.v3_and_below_producer_epoch,
                ),
                &wanted,
            )
            .await;
        let code = outcome.err().map_or(0, |e| code(&e, context.version, 2));
        vec![code; wanted.len()]
    };
    let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, index), error) in wanted.iter().zip(errors) {
        let result = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(*index)
            .with_partition_error_code(error);
        match topics.last_mut() {
            Some(t) if t.name.as_str() == topic => t.results_by_partition.push(result),
            _ => topics.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(str_bytes(topic.clone())))
                    .with_results_by_partition(vec![result]),
            ),
        }
    }
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics)
}

pub(super) async fn add_offsets_to_txn(
    context: RequestContext,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let broker = &context.broker;
    let partition = txn::offsets_partition_of(&request.group_id);
    let outcome = broker
        .transactions
        .add_partitions(
            broker,
            &request.transactional_id,
            (request.producer_id.0, request.producer_epoch),
            &[partition],
        )
        .await;
    let code = outcome.err().map_or(0, |e| code(&e, context.version, 2));
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

pub(super) async fn end_txn(context: RequestContext, request: EndTxnRequest) -> EndTxnResponse {
    let broker = &context.broker;
    let outcome = broker
        .transactions
        .end_txn(
            broker,
            &request.transactional_id,
            (request.producer_id.0, request.producer_epoch),
            request.committed,
        )
        .await;
    let code = outcome.err().map_or(0, |e| code(&e, context.version, 2));
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id((-1).into())
        .with_producer_epoch(-1)
}

/// TxnOffsetCommit, at the group coordinator: the offsets are written into the group's
/// `__consumer_offsets` partition as the producer's transactional records, and become the
/// group's committed offsets when the transaction commits.
pub(super) async fn txn_offset_commit(
    context: RequestContext,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let broker = &context.broker;
    let group = request.group_id.to_string();
    let now = now_ms();
    let wanted: Vec<(String, i32, CommittedOffset)> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let offset = CommittedOffset {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p
                        .committed_metadata
                        .as_deref()
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                    commit_timestamp_ms: now,
                };
                (t.name.to_string(), p.partition_index, offset)
            })
        })
        .collect();
    let keys: Vec<(String, i32)> = wanted.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
    let outcome = async {
        if group.is_empty() {
            return Err(BrokerError::InvalidGroupId);
        }
        broker.groups.check_coordinator(broker, &group)?;
        let producer = (request.producer_id.0, request.producer_epoch);
        match offsets::append_transactional_commit(broker, &group, producer, wanted)? {
            Some(appended) => appended.settle(&broker.groups.offsets).await,
            None => Ok(()),
        }
    }
    .await;
    let code = outcome.err().map_or(0, |e| code(&e, context.version, 3));
    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::new();
    for (topic, index) in keys {
        let result = TxnOffsetCommitResponsePartition::default()
            .with_partition_index(index)
            .with_error_code(code);
        match topics.last_mut() {
            Some(t) if t.name.as_str() == topic => t.partitions.push(result),
            _ => topics.push(
                TxnOffsetCommitResponseTopic::default()
                    .with_name(TopicName(str_bytes(topic)))
                    .with_partitions(vec![result]),
            ),
        }
    }
    TxnOffsetCommitResponse::default().with_topics(topics)
}

/// WriteTxnMarkers, from a transaction coordinator on another broker: each marker into each
/// named partition led here.
pub(super) async fn write_txn_markers(
    context: RequestContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let broker = &context.broker;
    let mut results = Vec::with_capacity(request.markers.len());
    for m in request.markers {
        let marker = Marker {
            producer_id: m.producer_id.0,
            producer_epoch: m.producer_epoch,
            commit: m.transaction_result,
            coordinator_epoch: m.coordinator_epoch,
        };
        let mut topics = Vec::with_capacity(m.topics.len());
        for t in m.topics {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for index in t.partition_indexes {
                let written = markers::write_local(broker, &t.name, index, marker).await;
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(index)
                        .with_error_code(written.err().map_or(0, |e| e.code())),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(partitions),
            );
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

pub(super) async fn describe_transactions(
    context: RequestContext,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let broker = &context.broker;
    let mut states = Vec::with_capacity(request.transactional_ids.len());
    for id in request.transactional_ids {
        let state = describe_transactions_response::TransactionState::default()
            .with_transactional_id(id.clone())
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
            .with_transaction_start_time_ms(-1);
        let state = match broker.transactions.describe(broker, &id).await {
            Ok(t) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, index) in &t.partitions {
                    match topics.last_mut() {
                        Some(d) if d.topic.as_str() == topic => d.partitions.push(*index),
                        _ => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(str_bytes(topic.clone())))
                                .with_partitions(vec![*index]),
                        ),
                    }
                }
                state
                    .with_transaction_state(str_bytes(t.state.name()))
                    .with_transaction_timeout_ms(t.timeout_ms)
                    .with_transaction_start_time_ms(t.start_ms)
                    .with_producer_id(t.producer_id.into())
                    .with_producer_epoch(t.producer_epoch)
                    .with_topics(topics)
            }
            Err(e) => state.with_error_code(e.code()),
        };
        states.push(state);
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub(super) fn list_transactions(
    context: &RequestContext,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let known = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
        "Dead",
        "PrepareEpochFence",
    ];
    let wanted_states: BTreeSet<&str> = request.state_filters.iter().map(|s| s.as_str()).collect();
    let unknown: Vec<_> = request
        .state_filters
        .iter()
        .filter(|s| !known.contains(&s.as_str()))
        .cloned()
        .collect();
    let wanted_ids: BTreeSet<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let now = now_ms();
    let states = context
        .broker
        .transactions
        .snapshot()
        .into_iter()
        .filter(|t| wanted_states.is_empty() || wanted_states.contains(t.state.name()))
        .filter(|t| wanted_ids.is_empty() || wanted_ids.contains(&t.producer_id))
        .filter(|t| {
            request.duration_filter < 0
                || (t.start_ms >= 0 && now - t.start_ms >= request.duration_filter)
        })
        .map(|t| {
            list_transactions_response::TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(t.transactional_id)))
                .with_producer_id(t.producer_id.into())
                .with_transaction_state(str_bytes(t.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(states)
}

pub(super) fn describe_producers(
    context: &RequestContext,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let broker = &context.broker;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partition_indexes
                .iter()
                .map(|index| {
                    let response = PartitionResponse::default().with_partition_index(*index);
                    let partition = broker
                        .partition(&t.name, *index)
                        .and_then(|p| p.check_leader(-1).map(|()| p));
                    match partition {
                        Ok(p) => response.with_active_producers(
                            p.producers()
                                .into_iter()
                                .map(|s| {
                                    ProducerState::default()
                                        .with_producer_id(s.producer_id.into())
                                        .with_producer_epoch(s.producer_epoch as i32)
                                        .with_last_sequence(s.last_sequence)
                                        .with_last_timestamp(s.last_timestamp_ms)
                                        .with_coordinator_epoch(s.coordinator_epoch)
                                        .with_current_txn_start_offset(s.current_txn_start_offset)
                                })
                                .collect(),
                        ),
                        Err(e) => response
                            .with_error_code(e.code())
                            .with_error_message(Some(str_bytes(e.to_string()))),
                    }
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::ApiKey;

    use super::*;
    use crate::client::{encode_transactional_batch, ProducerRecord};
    use crate::protocol::round_trip;
    use crate::txn::InitRequest;
    use crate::BrokerConfig;

    /// Goal: the admin APIs describe a transaction as the coordinator and the partition hold
    /// it. Method: a producer adds partition t-0 and appends a transactional batch; then
    /// DescribeTransactions, ListTransactions (filtered by state) and DescribeProducers.
    #[tokio::test]
    async fn admin_apis_describe_an_open_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::open(BrokerConfig::new(dir.path()))
            .await
            .expect("open");
        broker.create_topic("t", 1, BTreeMap::new()).expect("topic");
        let init = InitRequest {
            transactional_id: "app",
            timeout_ms: 60_000,
            current: None,
        };
        let producer = broker
            .transactions
            .init_producer_id(&broker, init)
            .await
            .expect("init");
        let partitions = [("t".to_string(), 0)];
        broker
            .transactions
            .add_partitions(&broker, "app", producer, &partitions)
            .await
            .expect("add");
        let record = ProducerRecord {
            value: Some(bytes::Bytes::from_static(b"v")),
            ..ProducerRecord::default()
        };
        let mut batch = encode_transactional_batch(&[(0, record)], producer, 0);
        broker
            .partition("t", 0)
            .expect("partition")
            .append(&mut batch, now_ms())
            .expect("append");

        let describe = DescribeTransactionsRequest::default().with_transactional_ids(vec![
            TransactionalId(str_bytes("app")),
            TransactionalId(str_bytes("nobody")),
        ]);
        let described: DescribeTransactionsResponse =
            round_trip(&broker, ApiKey::DescribeTransactions, 0, &describe).await;
        let app = &described.transaction_states[0];
        assert_eq!(app.error_code, 0);
        assert_eq!(app.transaction_state.as_str(), "Ongoing");
        assert_eq!((app.producer_id.0, app.producer_epoch), producer);
        assert_eq!(app.topics[0].topic.as_str(), "t");
        assert_eq!(app.topics[0].partitions, [0]);
        assert_eq!(
            described.transaction_states[1].error_code,
            ResponseError::TransactionalIdNotFound.code()
        );

        let list = |state: &str| {
            ListTransactionsRequest::default().with_state_filters(vec![str_bytes(state)])
        };
        let ongoing: ListTransactionsResponse =
            round_trip(&broker, ApiKey::ListTransactions, 0, &list("Ongoing")).await;
        assert_eq!(ongoing.transaction_states.len(), 1);
        assert_eq!(
            ongoing.transaction_states[0].transactional_id.as_str(),
            "app"
        );
        let empty: ListTransactionsResponse = round_trip(
            &broker,
            ApiKey::ListTransactions,
            0,
            &list("CompleteCommit"),
        )
        .await;
        assert!(empty.transaction_states.is_empty());

        let producers =
            DescribeProducersRequest::default().with_topics(vec![TopicRequest::default()
                .with_name(TopicName(str_bytes("t")))
                .with_partition_indexes(vec![0])]);
        let producers: DescribeProducersResponse =
            round_trip(&broker, ApiKey::DescribeProducers, 0, &producers).await;
        let active = &producers.topics[0].partitions[0].active_producers;
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].producer_id.0, producer.0);
        assert_eq!(active[0].current_txn_start_offset, 0);
    }
}
