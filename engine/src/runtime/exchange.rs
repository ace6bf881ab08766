//! Where a stateful query's state lives, and the exchange that puts each key's records there.
//!
//! Kafka Streams' model, which ksqlDB runs on: a task owns the state of the keys of its input
//! partitions, keeps its own stream time (a record is late only against the time of its own
//! partitions), and shares no lock with other tasks. That needs every record of a key in one
//! partition (of each input, for a join: co-partitioned), which holds when the operator's key
//! is the sources' key. [`placement`] decides, per run of a query's tasks:
//!
//! - [`Placement::Partitioned`]: the keys are the sources' keys (or every source has one
//!   partition, or the query is stateless): one task group per partition number, each with
//!   its own operator.
//! - [`Placement::Repartitioned`]: a persistent query keyed by something else first writes each
//!   source record, unchanged, into the internal topic `_eddy_<query id>_<side>_repartition`,
//!   in the partition its key hashes to ([`Router`]); the operator then runs partitioned over
//!   those topics. They keep their records (the tasks rebuild their state by replaying them)
//!   and are deleted with the query.
//! - [`Placement::Shared`]: what has no exchange yet (a push query that rekeys, an aggregation
//!   of a table by other columns, foreign-key joins, joins of windowed sources, OVER,
//!   aggregations over joins): one operator for all partitions, its tasks kept together in
//!   event time ([`super::align`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use eddy_broker::partitioner::{murmur2, partition_for_key};
use eddy_broker::{BrokerError, ConsumedRecord, LogClient, ProducerRecord};

use super::{decode_batch, evaluate, Failure, Output};
use crate::catalog::{Source, ROWOFFSET};
use crate::error::{EngineError, Result};
use crate::parser::{ColumnDef, SourceKind};
use crate::query::{expr_list, AggregatePlan, JoinPlan, JoinSide, Operator, PersistentPlan};

/// Where a stateful query's state lives (see the module's documentation).
pub(super) enum Placement {
    Partitioned,
    /// The key each side's records are routed by, per side.
    Repartitioned(Vec<RouteKey>),
    Shared,
}

/// How one side's records are keyed for the exchange: the key expressions, evaluated on the
/// side's decoded rows, and the type a join key is compared as (both sides hash alike).
#[derive(Clone)]
pub(super) struct RouteKey {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    cast_to: Option<DataType>,
}

/// The internal topic a query's `side` is repartitioned through.
pub fn repartition_topic(query_id: &str, side: usize) -> String {
    format!("_eddy_{query_id}_{side}_repartition")
}

/// Whether `topic` is one of query `query_id`'s internal topics (deleted with it): its
/// repartition topics `_eddy_<id>_<side>_repartition`, and its stages' outputs
/// `_eddy_<id>_S<n>_output` and repartition topics `_eddy_<id>_S<n>_<side>_repartition`.
pub fn is_internal_topic_of(query_id: &str, topic: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let stage = |s: &str| s.strip_prefix('S').is_some_and(number);
    let Some(rest) = topic.strip_prefix(&format!("_eddy_{query_id}_")) else {
        return false;
    };
    if let Some(side) = rest.strip_suffix("_repartition") {
        return match side.split_once('_') {
            Some((s, side)) => stage(s) && number(side),
            None => number(side),
        };
    }
    rest.strip_suffix("_output").is_some_and(stage)
}

/// Where the state of `plan`'s operator lives, for sources of `counts` partitions.
pub(super) fn placement(plan: &PersistentPlan, counts: &[i32], output: &Output) -> Placement {
    if counts.iter().all(|c| *c <= 1) {
        return Placement::Partitioned;
    }
    let persistent = matches!(output, Output::Topic);
    match &plan.operator {
        // Stateless: every partition's task on its own.
        Operator::FilterProject => Placement::Partitioned,
        Operator::Over(_) => Placement::Shared,
        Operator::Aggregate(AggregatePlan {
            join: Some(join),
            group_by,
            ..
        }) => match join_placement(join, counts, persistent) {
            // Each group's rows come from one join key's rows when it groups by the key.
            placement if groups_by_join_key(join, group_by) => placement,
            _ => Placement::Shared,
        },
        Operator::Aggregate(aggregate) => {
            let source = &plan.source;
            if source.window.is_some() {
                return Placement::Shared;
            }
            if aggregate.group_by.is_empty() {
                // One group (a windowed aggregation without GROUP BY): one task's.
                return Placement::Shared;
            }
            let keys: Vec<&str> = source.key_columns().map(|c| c.name.as_str()).collect();
            let grouped: Vec<&str> = aggregate.group_by.iter().filter_map(column).collect();
            if !keys.is_empty() && keys.iter().all(|k| grouped.contains(k)) {
                Placement::Partitioned
            } else if persistent && source.kind == SourceKind::Stream {
                Placement::Repartitioned(vec![RouteKey {
                    exprs: aggregate.group_by.clone(),
                    cast_to: None,
                }])
            } else {
                Placement::Shared
            }
        }
        Operator::Join(join) => join_placement(join, counts, persistent),
    }
}

/// Where a join's state lives: partitioned when the sides are joined on their keys and
/// co-partitioned (same key type and format, same partition count), else repartitioned by
/// the join key (persistent queries) or shared.
fn join_placement(join: &JoinPlan, counts: &[i32], persistent: bool) -> Placement {
    if join.foreign_key
        || join.table_as_rows
        || join.sides.iter().any(|s| s.source.window.is_some())
    {
        return Placement::Shared;
    }
    let on_keys = join.sides.iter().all(|side| {
        let keys: Vec<_> = side.source.key_columns().collect();
        keys.len() == 1 && column(&side.key) == Some(keys[0].name.as_str())
    });
    // Equal keys are then equal bytes, which the default partitioner placed alike.
    let [left, right] = &join.sides;
    fn key_type(side: &JoinSide) -> Option<&crate::types::SqlType> {
        side.source.key_columns().next().map(|c| &c.data_type)
    }
    let same_keys =
        key_type(left) == key_type(right) && left.source.key_format == right.source.key_format;
    if on_keys && same_keys && counts.windows(2).all(|w| w[0] == w[1]) {
        Placement::Partitioned
    } else if persistent {
        let key_type = join
            .joined_schema
            .fields()
            .last()
            .map(|f| f.data_type().clone());
        Placement::Repartitioned(
            join.sides
                .iter()
                .map(|side| RouteKey {
                    exprs: vec![Arc::clone(&side.key)],
                    cast_to: key_type.clone(),
                })
                .collect(),
        )
    } else {
        Placement::Shared
    }
}

/// How a persistent query's tasks run, for EXPLAIN: its placement over sources of several
/// partitions (sources of one partition each need no exchange).
pub fn describe(plan: &PersistentPlan) -> String {
    let sides = match &plan.operator {
        Operator::Join(_) | Operator::Aggregate(AggregatePlan { join: Some(_), .. }) => 2,
        _ => 1,
    };
    match placement(plan, &vec![2; sides], &Output::Topic) {
        _ if matches!(plan.operator, Operator::FilterProject) => {
            "TasksExec: one per source partition, stateless".to_string()
        }
        Placement::Partitioned => {
            "TasksExec: one per partition, each owning its keys' state (keyed by the sources' key)"
                .to_string()
        }
        Placement::Repartitioned(keys) => {
            let exchanges: Vec<String> = keys
                .iter()
                .enumerate()
                .map(|(side, key)| {
                    format!(
                        "[{}] into {}",
                        expr_list(&key.exprs),
                        repartition_topic("<query id>", side)
                    )
                })
                .collect();
            format!(
                "TasksExec: one per partition, each owning its keys' state, after \
                 RepartitionExec: {} (when a source has more than one partition)",
                exchanges.join("; ")
            )
        }
        Placement::Shared => {
            "TasksExec: one per source partition, sharing the operator's state".to_string()
        }
    }
}

/// Whether an aggregation over a join groups by the join key (a side's key column, or the
/// joined rows' ROWKEY): then each of its groups is one partition's.
fn groups_by_join_key(join: &JoinPlan, group_by: &[Arc<dyn PhysicalExpr>]) -> bool {
    let left_columns = join.sides[0].schema.fields().len();
    let mut keys = vec![join.joined_schema.fields().len().saturating_sub(1)];
    for (side, offset) in [(0, 0), (1, left_columns)] {
        if let Some(column) = join.sides[side].key.downcast_ref::<Column>() {
            keys.push(offset + column.index());
        }
    }
    group_by
        .iter()
        .filter_map(|g| g.downcast_ref::<Column>())
        .any(|c| keys.contains(&c.index()))
}

/// The column an expression reads, when it is just a column.
fn column(expr: &Arc<dyn PhysicalExpr>) -> Option<&str> {
    expr.downcast_ref::<Column>().map(Column::name)
}

/// Creates a query's repartition topic (or a stage's output) unless it exists; its partition
/// count.
pub(super) async fn ensure_internal_topic(
    client: &dyn LogClient,
    topic: &str,
    partitions: i32,
) -> Result<i32> {
    let configs = BTreeMap::from([
        // The partitioned tasks rebuild their state by replaying it: it keeps everything.
        ("retention.ms".to_string(), "-1".to_string()),
        ("cleanup.policy".to_string(), "delete".to_string()),
    ]);
    match client.create_topic(topic, partitions, configs).await {
        Ok(()) => Ok(partitions),
        Err(BrokerError::TopicAlreadyExists(_)) => Ok(client.partition_count(topic).await?),
        Err(e) => Err(e.into()),
    }
}

/// The header marking a record a rebuilt exchange routed again: the query had read it
/// before its sources gained partitions, so it only rebuilds state.
const REPLAYED: &str = "__eddy_replayed";

/// Marks a routed record as replayed.
pub(super) fn mark_replayed(mut record: ProducerRecord) -> ProducerRecord {
    record.headers.push((REPLAYED.to_string(), None));
    record
}

/// Whether a repartitioned record is marked as replayed.
pub(super) fn replayed(record: &ConsumedRecord) -> bool {
    record
        .headers
        .last()
        .is_some_and(|(name, _)| name == REPLAYED)
}

/// The record without its mark (the source's own headers, which a HEADERS column reads).
pub(super) fn unmark(record: &ConsumedRecord) -> ConsumedRecord {
    let mut record = record.clone();
    if replayed(&record) {
        record.headers.pop();
    }
    record
}

/// Whether a query must rebuild its exchange: it has read its sources before (committed
/// offsets) but none of its repartition topics' records (it ran without an exchange while
/// its sources had one partition each, and they gained partitions since).
pub(super) async fn needs_rebuild(
    client: &dyn LogClient,
    query_id: &str,
    sources: (&[String], &[i32]),
    exchanges: (&[String], &[i32]),
) -> bool {
    async fn any_committed(
        client: &dyn LogClient,
        group: &str,
        (topics, counts): (&[String], &[i32]),
    ) -> bool {
        for (topic, partitions) in topics.iter().zip(counts) {
            for partition in 0..*partitions {
                if let Ok(Some(_)) = client.committed(group, topic, partition).await {
                    return true;
                }
            }
        }
        false
    }
    !any_committed(client, query_id, exchanges).await
        && any_committed(client, query_id, sources).await
}

/// Writes one side's source records into its repartition topic, each in the partition its
/// key hashes to.
pub(super) struct Router {
    pub topic: String,
    partitions: i32,
    key: RouteKey,
    /// Route the source from its start, marking what the query had read as replayed.
    pub rebuild: bool,
}

impl Router {
    pub(super) fn new(topic: String, partitions: i32, key: RouteKey, rebuild: bool) -> Router {
        Router {
            topic,
            partitions,
            key,
            rebuild,
        }
    }

    /// The records to write for `records` of `source`'s partition `partition`: the records
    /// WHERE keeps (a table's are all kept: a row WHERE rejects deletes its key), unchanged,
    /// each with its partition. Records that cannot be decoded go to `failures`.
    pub(super) fn route(
        &self,
        plan: &PersistentPlan,
        source: &Source,
        schema: &datafusion::arrow::datatypes::SchemaRef,
        partition: i32,
        records: &[ConsumedRecord],
        failures: &mut Vec<Failure>,
    ) -> Result<Vec<ProducerRecord>> {
        let Some(input) = decode_batch(plan, source, schema, partition, records, failures)? else {
            return Ok(Vec::new());
        };
        let batch = &input.batch;
        let mut keys = Vec::with_capacity(self.key.exprs.len());
        for expr in &self.key.exprs {
            let mut key: ArrayRef = evaluate(expr, batch)?;
            if let Some(to) = self.key.cast_to.as_ref().filter(|t| *t != key.data_type()) {
                key = cast(&key, to)?;
            }
            keys.push(key);
        }
        let partitions = self.partitions_of(plan, &keys)?;
        let offsets = batch
            .column_by_name(ROWOFFSET)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| EngineError::Internal("ROWOFFSET column missing".into()))?;
        // The rows are the records decoding and WHERE kept, in order: walk both together.
        let mut records = records.iter();
        let mut out = Vec::with_capacity(batch.num_rows());
        for (row, offset) in offsets.values().iter().enumerate() {
            let Some(record) = records.find(|r| r.offset == *offset) else {
                break;
            };
            out.push(ProducerRecord {
                partition: Some(partitions[row]),
                key: record.key.clone(),
                value: record.value.clone(),
                timestamp_ms: Some(record.timestamp_ms),
                headers: record.headers.clone(),
            });
        }
        Ok(out)
    }

    /// Each row's partition: the one the sink puts its key in (murmur2 of the key as the
    /// sink's key format writes it), so that a task whose output keeps the key writes its own
    /// partition of the sink alone, in the order it emits, as in Kafka Streams. A key the
    /// sink's key columns cannot hold (or null) goes by the hash of Arrow's row bytes; the
    /// choice depends on the types alone, so both sides of a join route a key alike.
    fn partitions_of(&self, plan: &PersistentPlan, keys: &[ArrayRef]) -> Result<Vec<i32>> {
        let rows = keys.first().map_or(0, |k| k.len());
        let columns: Vec<&ColumnDef> = plan.sink.key_columns().collect();
        let serialized = (columns.len() == keys.len())
            .then(|| {
                let fields: Vec<Field> = columns
                    .iter()
                    .zip(keys)
                    .map(|(c, k)| Field::new(&c.name, k.data_type().clone(), true))
                    .collect();
                let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), keys.to_vec());
                super::encode_columns(&batch.ok()?, &columns, plan.sink.key_format, false).ok()
            })
            .flatten();
        let fields = keys
            .iter()
            .map(|k| SortField::new(k.data_type().clone()))
            .collect();
        let converted = RowConverter::new(fields)?.convert_columns(keys)?;
        Ok((0..rows)
            .map(
                |row| match serialized.as_ref().and_then(|s| s[row].as_deref()) {
                    Some(bytes) => partition_for_key(bytes, self.partitions),
                    None => (murmur2(converted.row(row).as_ref()) & 0x7fff_ffff) % self.partitions,
                },
            )
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::is_internal_topic_of;

    #[test]
    fn a_querys_internal_topics_are_its_repartition_topics_and_stage_outputs() {
        let id = "CTAS_T_1";
        for topic in [
            "_eddy_CTAS_T_1_0_repartition",
            "_eddy_CTAS_T_1_1_repartition",
            "_eddy_CTAS_T_1_S1_output",
            "_eddy_CTAS_T_1_S12_output",
            "_eddy_CTAS_T_1_S2_0_repartition",
        ] {
            assert!(is_internal_topic_of(id, topic), "{topic}");
        }
        for topic in [
            // Another query's: CTAS_T_12, CTAS_T_1_2.
            "_eddy_CTAS_T_12_0_repartition",
            "_eddy_CTAS_T_1_2_0_repartition",
            "_eddy_CTAS_T_1_2_S1_output",
            // Not internal topics' shapes.
            "_eddy_CTAS_T_1_repartition",
            "_eddy_CTAS_T_1_S_output",
            "_eddy_CTAS_T_1_Sx_output",
            "_eddy_CTAS_T_1_S1_0_output",
            "CTAS_T_1_0_repartition",
            "T",
        ] {
            assert!(!is_internal_topic_of(id, topic), "{topic}");
        }
    }
}
