//! The APIs and versions Eddy implements: the single table ApiVersions advertises.
//!
//! Only versions whose request and response shapes the handlers fill are listed (for example
//! Fetch stops at v12, before topics are addressed by id). See `../shared/kafka-reference.md` 2.2.
//! The floors reach back to versions Kafka 3.x still serves and older clients still send
//! (ListOffsets v0 and Fetch v0 for Burrow, whose default client profile speaks Kafka 0.8;
//! Produce v2 for 0.10-era clients); a request below a floor closes the connection, as Kafka's
//! does (see `dispatch`). DescribeLogDirs starts at v1: the vendored codec has no v0 of it yet.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::Encodable;
use kafka_protocol::ResponseError;

/// (API, lowest version, highest version) implemented.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 2, 9),
    (ApiKey::Fetch, 0, 12),
    (ApiKey::ListOffsets, 0, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 0, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 0),
    (ApiKey::DescribeProducers, 0, 0),
];

/// Whether `version` of `api_key` is implemented.
pub fn supports(api_key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(k, min, max)| *k == api_key && (*min..=*max).contains(&version))
}

/// The lowest and highest versions of `api_key` implemented, if any.
pub fn range(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == api_key)
        .map(|(_, min, max)| (*min, *max))
}

/// The ApiVersions response body listing [`SUPPORTED`].
pub fn api_versions_response() -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.api_keys = SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    response
}

/// A whole v0 ApiVersions response frame with UNSUPPORTED_VERSION, for clients that asked with a
/// newer version than ours; they retry with one we list.
pub fn unsupported_version_response(correlation_id: i32) -> BytesMut {
    let mut body = api_versions_response();
    body.error_code = ResponseError::UnsupportedVersion.code();
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    buf.put_i32(correlation_id);
    body.encode(&mut buf, 0)
        .expect("v0 ApiVersions always encodes");
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    buf
}

/// Decodes the request body of any supported API (for property tests of the decoder).
#[cfg(test)]
pub(crate) fn decode_any(
    api_key: ApiKey,
    body: &mut bytes::Bytes,
    version: i16,
) -> Result<(), String> {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Decodable;
    fn d<T: Decodable>(body: &mut bytes::Bytes, version: i16) -> Result<(), String> {
        T::decode(body, version)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    match api_key {
        ApiKey::Produce => d::<ProduceRequest>(body, version),
        ApiKey::Fetch => d::<FetchRequest>(body, version),
        ApiKey::ListOffsets => d::<ListOffsetsRequest>(body, version),
        ApiKey::Metadata => d::<MetadataRequest>(body, version),
        ApiKey::OffsetCommit => d::<OffsetCommitRequest>(body, version),
        ApiKey::OffsetFetch => d::<OffsetFetchRequest>(body, version),
        ApiKey::FindCoordinator => d::<FindCoordinatorRequest>(body, version),
        ApiKey::JoinGroup => d::<JoinGroupRequest>(body, version),
        ApiKey::Heartbeat => d::<HeartbeatRequest>(body, version),
        ApiKey::LeaveGroup => d::<LeaveGroupRequest>(body, version),
        ApiKey::SyncGroup => d::<SyncGroupRequest>(body, version),
        ApiKey::ApiVersions => d::<ApiVersionsRequest>(body, version),
        ApiKey::CreateTopics => d::<CreateTopicsRequest>(body, version),
        ApiKey::DeleteTopics => d::<DeleteTopicsRequest>(body, version),
        ApiKey::InitProducerId => d::<InitProducerIdRequest>(body, version),
        ApiKey::DescribeConfigs => d::<DescribeConfigsRequest>(body, version),
        ApiKey::DescribeGroups => d::<DescribeGroupsRequest>(body, version),
        ApiKey::ListGroups => d::<ListGroupsRequest>(body, version),
        ApiKey::DeleteGroups => d::<DeleteGroupsRequest>(body, version),
        ApiKey::OffsetDelete => d::<OffsetDeleteRequest>(body, version),
        ApiKey::AlterConfigs => d::<AlterConfigsRequest>(body, version),
        ApiKey::IncrementalAlterConfigs => d::<IncrementalAlterConfigsRequest>(body, version),
        ApiKey::CreatePartitions => d::<CreatePartitionsRequest>(body, version),
        ApiKey::DeleteRecords => d::<DeleteRecordsRequest>(body, version),
        ApiKey::DescribeCluster => d::<DescribeClusterRequest>(body, version),
        ApiKey::DescribeLogDirs => d::<DescribeLogDirsRequest>(body, version),
        ApiKey::AddPartitionsToTxn => d::<AddPartitionsToTxnRequest>(body, version),
        ApiKey::AddOffsetsToTxn => d::<AddOffsetsToTxnRequest>(body, version),
        ApiKey::EndTxn => d::<EndTxnRequest>(body, version),
        ApiKey::TxnOffsetCommit => d::<TxnOffsetCommitRequest>(body, version),
        ApiKey::WriteTxnMarkers => d::<WriteTxnMarkersRequest>(body, version),
        ApiKey::DescribeTransactions => d::<DescribeTransactionsRequest>(body, version),
        ApiKey::ListTransactions => d::<ListTransactionsRequest>(body, version),
        ApiKey::DescribeProducers => d::<DescribeProducersRequest>(body, version),
        ApiKey::OffsetForLeaderEpoch => d::<OffsetForLeaderEpochRequest>(body, version),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_one_the_codec_can_decode() {
        for (key, min, max) in SUPPORTED {
            let valid = key.valid_versions();
            assert!(
                valid.min <= *min && *max <= valid.max,
                "{key:?} {min}-{max} outside {valid:?}"
            );
        }
    }
}
