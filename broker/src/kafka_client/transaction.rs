//! Kafka transactions over the wire, for [`KafkaClient::init_transactions`] and
//! [`KafkaClient::commit_transaction`]: the requests a Java producer's `TransactionManager`
//! sends, in its order.
//!
//! Coordinator requests (InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit,
//! EndTxn) are retried while the coordinator moves, loads or finishes the id's previous
//! transaction: each is answered the same when it arrives twice (the partitions are already in
//! the transaction, the offsets are written again inside it, a finished EndTxn with the same
//! outcome succeeds, a second InitProducerId fences nobody who still holds the first epoch).
//! Produce is resent only when the partition says nothing was written.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Request;

use super::{
    first_error, is_coordinator_retriable, retry, retry_leader_changes, txn_code_error,
    KafkaClient, KeyType, ADD_OFFSETS_TO_TXN_VERSION, ADD_PARTITIONS_TO_TXN_VERSION,
    END_TXN_VERSION, INIT_PRODUCER_ID_VERSION, TXN_OFFSET_COMMIT_VERSION,
};
use crate::client::{
    encode_transactional_batch, split_batches, GroupOffsets, ProducerRecord, TransactionalProducer,
};
use crate::error::Result;
use crate::protocol::str_bytes;

/// A transaction's records placed in partitions: (topic, partition, records with their index in
/// the caller's list).
pub(super) type PlacedRecords = Vec<(String, i32, Vec<(usize, ProducerRecord)>)>;

impl KafkaClient {
    /// InitProducerId for `transactional_id` at its transaction coordinator: a producer id and
    /// a new epoch, fencing every older producer of the id.
    pub(super) async fn init_producer_id(
        &self,
        transactional_id: &str,
        timeout_ms: i32,
    ) -> Result<TransactionalProducer> {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(str_bytes(transactional_id))))
            .with_transaction_timeout_ms(timeout_ms);
        // Names the errors of a producer that has no id or epoch yet.
        let unknown = TransactionalProducer::new(transactional_id, -1, -1);
        let coordinator = (KeyType::Transaction, transactional_id);
        let response = self
            .coordinator_request(coordinator, INIT_PRODUCER_ID_VERSION, &request, |r| {
                txn_code_error(r.error_code, &unknown, true, transactional_id)
            })
            .await?;
        Ok(TransactionalProducer::new(
            transactional_id,
            response.producer_id.0,
            response.producer_epoch,
        ))
    }

    /// Writes a transaction: its partitions (and the group's offsets) join it at the
    /// coordinator, then its records go to the partitions' leaders and its offsets to the group
    /// coordinator. The caller ends the transaction.
    pub(super) async fn write_transaction(
        &self,
        producer: &TransactionalProducer,
        placed: &PlacedRecords,
        offsets: Option<GroupOffsets>,
    ) -> Result<()> {
        let partitions: BTreeSet<(&str, i32)> =
            placed.iter().map(|(t, p, _)| (t.as_str(), *p)).collect();
        if !partitions.is_empty() {
            self.add_partitions_to_txn(producer, &partitions).await?;
        }
        if let Some((group, _)) = &offsets {
            self.add_offsets_to_txn(producer, group).await?;
        }
        for (topic, index, records) in placed {
            for batch in split_batches(records) {
                let sequence = producer.take_sequences(topic, *index, batch.len());
                let bytes = encode_transactional_batch(batch, producer.id_and_epoch(), sequence);
                let bytes = bytes.freeze();
                // The same batch, same sequence, and only after an answer that nothing was
                // written: the partition cannot hold it twice.
                retry_leader_changes(false, || {
                    self.produce_batch(topic, *index, bytes.clone(), Some(producer))
                })
                .await?;
            }
        }
        if let Some((group, positions)) = &offsets {
            self.txn_offset_commit(producer, group, positions).await?;
        }
        Ok(())
    }

    async fn add_partitions_to_txn(
        &self,
        producer: &TransactionalProducer,
        partitions: &BTreeSet<(&str, i32)>,
    ) -> Result<()> {
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, index) in partitions {
            topics.entry(topic).or_default().push(*index);
        }
        let (producer_id, epoch) = producer.id_and_epoch();
        let request = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(transactional_id(producer))
            .with_v3_and_below_producer_id(producer_id.into())
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(
                topics
                    .into_iter()
                    .map(|(topic, indexes)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(str_bytes(topic)))
                            .with_partitions(indexes)
                    })
                    .collect(),
            );
        let coordinator = (KeyType::Transaction, producer.transactional_id.as_str());
        self.coordinator_request(coordinator, ADD_PARTITIONS_TO_TXN_VERSION, &request, |r| {
            // A partition's own error names its topic; OPERATION_NOT_ATTEMPTED only follows one.
            let codes = r.results_by_topic_v3_and_below.iter().flat_map(|t| {
                let name = t.name.as_str();
                t.results_by_partition
                    .iter()
                    .map(move |p| (p.partition_error_code, name))
            });
            let mut codes: Vec<(i16, &str)> = codes.collect();
            let code = first_error(codes.iter().map(|(code, _)| *code));
            codes.retain(|(c, _)| *c == code);
            let topic = codes.first().map_or("", |(_, topic)| *topic);
            txn_code_error(code, producer, true, topic)
        })
        .await?;
        Ok(())
    }

    async fn add_offsets_to_txn(
        &self,
        producer: &TransactionalProducer,
        group: &str,
    ) -> Result<()> {
        let (producer_id, epoch) = producer.id_and_epoch();
        let request = AddOffsetsToTxnRequest::default()
            .with_transactional_id(transactional_id(producer))
            .with_producer_id(producer_id.into())
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(str_bytes(group)));
        let coordinator = (KeyType::Transaction, producer.transactional_id.as_str());
        self.coordinator_request(coordinator, ADD_OFFSETS_TO_TXN_VERSION, &request, |r| {
            txn_code_error(r.error_code, producer, true, group)
        })
        .await?;
        Ok(())
    }

    /// TxnOffsetCommit to the GROUP's coordinator: the offsets are written inside the
    /// transaction, and become the group's committed offsets when it commits.
    async fn txn_offset_commit(
        &self,
        producer: &TransactionalProducer,
        group: &str,
        positions: &[(String, i32, i64)],
    ) -> Result<()> {
        let mut topics: BTreeMap<&str, Vec<TxnOffsetCommitRequestPartition>> = BTreeMap::new();
        for (topic, index, offset) in positions {
            topics.entry(topic).or_default().push(
                TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(*index)
                    .with_committed_offset(*offset)
                    .with_committed_leader_epoch(-1),
            );
        }
        let (producer_id, epoch) = producer.id_and_epoch();
        // No generation or member id: the engine commits outside group membership, as
        // `commit` does (generation -1), so the coordinator checks the producer only.
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(transactional_id(producer))
            .with_group_id(GroupId(str_bytes(group)))
            .with_producer_id(producer_id.into())
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        TxnOffsetCommitRequestTopic::default()
                            .with_name(TopicName(str_bytes(topic)))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        self.coordinator_request(
            (KeyType::Group, group),
            TXN_OFFSET_COMMIT_VERSION,
            &request,
            |r| {
                let codes = r.topics.iter().flat_map(|t| t.partitions.iter());
                txn_code_error(
                    first_error(codes.map(|p| p.error_code)),
                    producer,
                    true,
                    group,
                )
            },
        )
        .await?;
        Ok(())
    }

    /// EndTxn: commits or aborts the producer's transaction, once; answered after every
    /// partition has its marker.
    pub(super) async fn end_txn(
        &self,
        producer: &TransactionalProducer,
        commit: bool,
    ) -> Result<()> {
        let (producer_id, epoch) = producer.id_and_epoch();
        let request = EndTxnRequest::default()
            .with_transactional_id(transactional_id(producer))
            .with_producer_id(producer_id.into())
            .with_producer_epoch(epoch)
            .with_committed(commit);
        let id = producer.transactional_id.as_str();
        let response = self
            .send_to_coordinator(KeyType::Transaction, id, END_TXN_VERSION, &request)
            .await?;
        txn_code_error(response.error_code, producer, commit, id)
    }

    /// Sends `request` to the coordinator of `coordinator` (key type, key) until `check` finds
    /// its answer good, or an error is not one to retry (see [`is_coordinator_retriable`]).
    async fn coordinator_request<R: Request>(
        &self,
        coordinator: (KeyType, &str),
        version: i16,
        request: &R,
        check: impl Fn(&R::Response) -> Result<()>,
    ) -> Result<R::Response> {
        let (key_type, key) = coordinator;
        let check = &check;
        retry(
            "coordinator unavailable or busy",
            is_coordinator_retriable,
            || async move {
                let response = self
                    .send_to_coordinator(key_type, key, version, request)
                    .await?;
                check(&response)?;
                Ok(response)
            },
        )
        .await
    }
}

fn transactional_id(producer: &TransactionalProducer) -> TransactionalId {
    TransactionalId(str_bytes(producer.transactional_id.clone()))
}
