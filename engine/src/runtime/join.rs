//! `JoinExec`: joins the rows of two sources by key, as Kafka Streams (and so ksqlDB) does.
//!
//! - stream-table: each stream row is joined with the table's current row for its key (LEFT:
//!   with nulls when there is none); table rows only update the state.
//! - table-table: a change on either side is joined with the other side's current row; a
//!   deletion retracts the joined row (a tombstone), or for the side an outer join keeps,
//!   re-emits it with nulls.
//! - stream-stream: each row is joined with the other side's rows `WITHIN` its window, kept
//!   for before + after + grace behind the stream time (the largest timestamp seen). A row an
//!   outer join keeps and nothing matched is emitted with nulls: at once without GRACE PERIOD
//!   (ksqlDB's older semantics), else once its window has closed.
//!
//! The output key is the join key. State is in memory, held by one task group (a partition
//! number's when the sides are co-partitioned, see `exchange`, else the query's); a restarted
//! query rebuilds it by reading its input again.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::cast;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::{HashMap, HashSet, ScalarValue};
use parking_lot::Mutex;

use super::operator::{Port, StreamOperator};
use super::{evaluate_predicate_rows, row_times, Emitted, Input, RowMeta};
use crate::error::Result;
use crate::parser::SourceKind;
use crate::query::{JoinPlan, PersistentPlan};

/// Without GRACE PERIOD, a stream-stream join keeps rows 24 hours past their window.
const DEFAULT_GRACE_MS: i64 = 24 * 60 * 60 * 1000;

/// A row kept in a join's state: the values of its side's columns and its time.
#[derive(Clone)]
struct Kept {
    values: Arc<Vec<ScalarValue>>,
    /// Its operands of the ON condition's equalities other than the key's, when it has any.
    residual: Residual,
    timestamp: i64,
    /// Identifies a stream row among the unmatched ones.
    id: u64,
}

#[derive(Default)]
struct JoinState {
    /// Table sides: the current row per key.
    tables: [HashMap<ScalarValue, Kept>; 2],
    /// Stream sides of a stream-stream join: rows per key, in arrival order.
    windows: [HashMap<ScalarValue, Vec<Kept>>; 2],
    /// Rows an outer stream-stream join has not matched yet, by (time, side, id).
    unmatched: BTreeMap<(i64, usize, u64), (ScalarValue, Kept)>,
    stream_time: i64,
    /// The largest timestamp each side's window store has seen: a row older than its
    /// store's retention is not kept (each side's store expires on its own, as in Kafka
    /// Streams).
    observed: [i64; 2],
    next_id: u64,
    /// The stream time at which a stream-stream join next forgets rows out of retention.
    next_expiry: i64,
    /// Keys whose joined row is in the output (a table result with WHERE: a row WHERE
    /// rejects retracts the key's earlier row only if there is one).
    present: HashSet<Vec<ScalarValue>>,
    /// A foreign-key join's left rows by primary key, with their foreign key.
    fk_left: HashMap<Vec<ScalarValue>, (Kept, ScalarValue)>,
    /// The left rows (primary keys) referring to each right key, in arrival order.
    fk_index: HashMap<ScalarValue, Vec<Vec<ScalarValue>>>,
    /// A windowed left table with a known retention: its rows' primary keys by window end,
    /// and the latest window end read.
    fk_windows: BTreeMap<i64, Vec<Vec<ScalarValue>>>,
    left_window_end: i64,
}

/// A row's operands of the ON condition's equalities other than the key's (`None` when the
/// condition is the key's equality alone).
type Residual = Option<Arc<Vec<ScalarValue>>>;

/// Whether two rows the key matches satisfy the rest of the ON condition: every other
/// equality holds, and none compares a null.
fn residual_matches(a: &Residual, b: &Residual) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().zip(b.iter()).all(|(x, y)| !x.is_null() && x == y),
        _ => true,
    }
}

/// A changed row of a foreign-key join's side.
struct Change {
    /// The join key: a right row's primary key, or the right key a left row refers to.
    key: ScalarValue,
    /// A left row's primary key.
    primary: Vec<ScalarValue>,
    values: Option<Arc<Vec<ScalarValue>>>,
    residual: Residual,
    timestamp: i64,
}

/// A row of a side: its join key, its values and residual operands (`None`: a deletion), and
/// its time.
type RowChange = (ScalarValue, Option<Kept>, i64);

/// A joined row to emit: each side's values (None: nulls), key and time.
/// The joined rows of a batch with their metadata (none when nothing joined), and the
/// errors of rows left out.
type JoinedRows = (Option<(RecordBatch, Vec<RowMeta>)>, Vec<String>);

struct Joined {
    sides: [Option<Arc<Vec<ScalarValue>>>; 2],
    /// The join key (ROWKEY).
    key: ScalarValue,
    /// The output row's key, when not the join key: a foreign-key join's left primary key.
    row_key: Option<Vec<ScalarValue>>,
    timestamp: i64,
    tombstone: bool,
}

pub struct JoinExec {
    plan: Arc<PersistentPlan>,
    join: JoinPlan,
    state: Mutex<JoinState>,
}

impl JoinExec {
    pub fn new(plan: Arc<PersistentPlan>, join: JoinPlan) -> Self {
        JoinExec {
            plan,
            join,
            state: Mutex::new(JoinState {
                stream_time: i64::MIN,
                observed: [i64::MIN; 2],
                left_window_end: i64::MIN,
                ..Default::default()
            }),
        }
    }

    /// Joins decoded rows of `side` for an aggregation over the join: the joined rows (WHERE
    /// applied), whose (left) ROWTIME is the joined row's time.
    pub(crate) fn process_for_aggregate(
        &self,
        side: usize,
        input: &Input,
    ) -> Result<(Option<Input>, Vec<String>)> {
        let (joined, failures) = self.join_rows(side, input)?;
        let Some((batch, meta)) = joined else {
            return Ok((None, failures));
        };
        let mut columns = batch.columns().to_vec();
        let rowtime = batch.schema().index_of(crate::catalog::ROWTIME)?;
        columns[rowtime] = Arc::new(datafusion::arrow::array::TimestampMillisecondArray::from(
            meta.iter().map(|m| m.timestamp).collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(batch.schema(), columns)?;
        let input = Input {
            batch,
            deleted: meta.iter().map(|m| m.tombstone).collect(),
        };
        Ok((Some(input), failures))
    }

    /// The joined rows (both sides' columns and ROWKEY) that rows of `side` produce, WHERE
    /// applied, with their times; and the errors of rows left out after the state took them.
    fn join_rows(&self, side: usize, input: &Input) -> Result<JoinedRows> {
        let batch = &input.batch;
        let rows = batch.num_rows();
        let key_type = self
            .join
            .joined_schema
            .fields()
            .last()
            .map(|f| f.data_type().clone());
        let mut keys = super::evaluate(&self.join.sides[side].key, batch)?;
        if let Some(key_type) = key_type.filter(|t| t != keys.data_type()) {
            keys = cast(&keys, &key_type)?;
        }
        let residual_columns = self.join.sides[side]
            .residual
            .iter()
            .zip(&self.join.residual_types)
            .map(|(expr, data_type)| {
                let values = super::evaluate(expr, batch)?;
                Ok(match values.data_type() == data_type {
                    true => values,
                    false => cast(&values, data_type)?,
                })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let times = row_times(batch)?;
        let mut joined = Vec::new();
        let mut state = self.state.lock();
        for row in 0..rows {
            let key = ScalarValue::try_from_array(&keys, row)?;
            // A row without a join key joins nothing (a foreign-key join's left row still
            // appears in a LEFT join's result).
            if key.is_null() && !(self.join.foreign_key && side == 0) {
                continue;
            }
            let values = if input.deleted[row] {
                None
            } else {
                let values = batch
                    .columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, row))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                Some(Arc::new(values))
            };
            let residual = match residual_columns.is_empty() {
                true => None,
                false => Some(Arc::new(
                    residual_columns
                        .iter()
                        .map(|c| ScalarValue::try_from_array(c, row))
                        .collect::<datafusion::error::Result<Vec<_>>>()?,
                )),
            };
            let timestamp = times[row];
            let kinds = self.join.sides.each_ref().map(|s| s.source.kind);
            if self.join.foreign_key {
                // A left row's primary key: its first (key) columns, and a windowed
                // table's window, deleted or not (a right row's is not used).
                let primary = self
                    .primary_positions(side)
                    .map(|c| ScalarValue::try_from_array(batch.column(c), row))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                let change = Change {
                    key,
                    primary,
                    values,
                    residual,
                    timestamp,
                };
                self.foreign_key(&mut state, side, change, &mut joined);
                continue;
            }
            let kept = values.map(|values| Kept {
                values,
                residual,
                timestamp,
                id: 0,
            });
            let change = (key, kept, timestamp);
            match kinds {
                [SourceKind::Stream, _] if self.join.table_as_rows => {
                    self.stream_stream(&mut state, side, change, &mut joined)
                }
                [SourceKind::Stream, SourceKind::Stream] => {
                    self.stream_stream(&mut state, side, change, &mut joined)
                }
                [SourceKind::Stream, SourceKind::Table] => {
                    self.stream_table(&mut state, side, change, &mut joined)
                }
                _ => self.table_table(&mut state, side, change, &mut joined),
            }
        }
        if self.join.foreign_key {
            self.forget_final_left_rows(&mut state);
        }
        let mut failures = Vec::new();
        let output = self.joined_batch(&mut state, joined, &mut failures);
        drop(state);
        match output {
            Ok(rows) => Ok((rows, failures)),
            Err(e) => {
                failures.push(format!("joined rows were left out: {e}"));
                Ok((None, failures))
            }
        }
    }

    fn stream_table(
        &self,
        state: &mut JoinState,
        side: usize,
        (key, row, timestamp): RowChange,
        out: &mut Vec<Joined>,
    ) {
        if side == 1 {
            match row {
                Some(row) => {
                    state.tables[1].insert(key, row);
                }
                None => {
                    state.tables[1].remove(&key);
                }
            }
            return;
        }
        let Some(row) = row else { return };
        let table = state.tables[1]
            .get(&key)
            .filter(|t| residual_matches(&row.residual, &t.residual))
            .map(|t| Arc::clone(&t.values));
        if table.is_some() || self.join.kind.keeps_unmatched(0) {
            out.push(Joined {
                sides: [Some(row.values), table],
                key,
                row_key: None,
                timestamp,
                tombstone: false,
            });
        }
    }

    fn table_table(
        &self,
        state: &mut JoinState,
        side: usize,
        (key, row, timestamp): RowChange,
        out: &mut Vec<Joined>,
    ) {
        let other = 1 - side;
        let old = match &row {
            Some(row) => state.tables[side].insert(key.clone(), row.clone()),
            None => state.tables[side].remove(&key),
        };
        let other_row = state.tables[other].get(&key).cloned();
        let kind = self.join.kind;
        let time = |o: &Option<Kept>| o.as_ref().map_or(timestamp, |o| o.timestamp.max(timestamp));
        let timestamp = time(&other_row);
        let mut sides: [Option<Arc<Vec<ScalarValue>>>; 2] = [None, None];
        // Whether the change emits a joined row, retracts the key's row, or nothing.
        let (emit, retract) = match (&row, &other_row) {
            // Rows the rest of the ON condition does not match: the key's row is the one an
            // outer join keeps, else none.
            (Some(row), Some(o)) if !residual_matches(&row.residual, &o.residual) => {
                if kind.keeps_unmatched(side) {
                    sides[side] = Some(Arc::clone(&row.values));
                } else if kind.keeps_unmatched(other) {
                    sides[other] = Some(Arc::clone(&o.values));
                }
                (
                    sides.iter().any(Option::is_some),
                    sides.iter().all(Option::is_none),
                )
            }
            (Some(row), Some(o)) => {
                sides[side] = Some(Arc::clone(&row.values));
                sides[other] = Some(Arc::clone(&o.values));
                (true, false)
            }
            (Some(row), None) => {
                sides[side] = Some(Arc::clone(&row.values));
                (kind.keeps_unmatched(side), false)
            }
            (None, Some(o)) => {
                sides[other] = Some(Arc::clone(&o.values));
                (kind.keeps_unmatched(other), !kind.keeps_unmatched(other))
            }
            (None, None) => (false, old.is_some() && kind.keeps_unmatched(side)),
        };
        if retract {
            out.push(Joined {
                sides: [None, None],
                key,
                row_key: None,
                timestamp,
                tombstone: true,
            });
            return;
        }
        if emit {
            out.push(Joined {
                sides,
                key,
                row_key: None,
                timestamp,
                tombstone: false,
            });
        }
    }

    fn stream_stream(
        &self,
        state: &mut JoinState,
        side: usize,
        (key, row, timestamp): RowChange,
        out: &mut Vec<Joined>,
    ) {
        let Some(Kept {
            values, residual, ..
        }) = row
        else {
            return;
        };
        let Some(within) = self.join.within else {
            return;
        };
        let other = 1 - side;
        let grace = within.grace_ms.unwrap_or(DEFAULT_GRACE_MS);
        let retention = within.before_ms + within.after_ms + grace;
        state.stream_time = state.stream_time.max(timestamp);
        // The other side's rows this one joins: for a left row, from `before` earlier to
        // `after` later; for a right row the other way round.
        let (before, after) = if side == 0 {
            (within.before_ms, within.after_ms)
        } else {
            (within.after_ms, within.before_ms)
        };
        let (from, to) = (timestamp - before, timestamp + after);
        let mut matches: Vec<Kept> = state.windows[other]
            .get(&key)
            .map(|rows| {
                rows.iter()
                    .filter(|r| r.timestamp >= from && r.timestamp <= to)
                    .filter(|r| residual_matches(&residual, &r.residual))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        matches.sort_by_key(|m| m.timestamp);
        let id = state.next_id;
        state.next_id += 1;
        for matched in &matches {
            state
                .unmatched
                .remove(&(matched.timestamp, other, matched.id));
            let mut sides = [None, None];
            sides[side] = Some(Arc::clone(&values));
            sides[other] = Some(Arc::clone(&matched.values));
            out.push(Joined {
                sides,
                key: key.clone(),
                row_key: None,
                timestamp: timestamp.max(matched.timestamp),
                tombstone: false,
            });
        }
        let kept = Kept {
            values,
            residual,
            timestamp,
            id,
        };
        if matches.is_empty() && self.join.kind.keeps_unmatched(side) {
            if within.grace_ms.is_none() || to < state.stream_time {
                let mut sides = [None, None];
                sides[side] = Some(Arc::clone(&kept.values));
                out.push(Joined {
                    sides,
                    key: key.clone(),
                    row_key: None,
                    timestamp,
                    tombstone: false,
                });
            } else {
                state
                    .unmatched
                    .insert((timestamp, side, id), (key.clone(), kept.clone()));
            }
        }
        state.observed[side] = state.observed[side].max(timestamp);
        if timestamp >= state.observed[side].saturating_sub(retention) {
            state.windows[side].entry(key).or_default().push(kept);
        }
        // Unmatched rows whose window has closed are emitted with nulls.
        // Only rows older than the shorter look-ahead can have closed: the scan stops there.
        let limit = state
            .stream_time
            .saturating_sub(grace + within.before_ms.min(within.after_ms));
        let closed: Vec<(i64, usize, u64)> = state
            .unmatched
            .range(..(limit, 0, 0))
            .map(|(slot, _)| slot)
            .filter(|(time, side, _)| {
                let look_ahead = if *side == 0 {
                    within.after_ms
                } else {
                    within.before_ms
                };
                time + look_ahead + grace < state.stream_time
            })
            .copied()
            .collect();
        for slot in closed {
            if let Some((key, kept)) = state.unmatched.remove(&slot) {
                let mut sides = [None, None];
                sides[slot.1] = Some(kept.values);
                out.push(Joined {
                    sides,
                    key,
                    row_key: None,
                    timestamp: kept.timestamp,
                    tombstone: false,
                });
            }
        }
        // Forget rows that can no longer join, now and then: each time stream time has moved
        // on by an eighth of the retention (a sweep visits every kept row).
        if state.stream_time >= state.next_expiry {
            state.next_expiry = state.stream_time.saturating_add((retention / 8).max(1));
            let observed = state.observed;
            for (side, window) in state.windows.iter_mut().enumerate() {
                // A stream's rows wait for a windowed table's rows (which come once their
                // window is final) until the table's rows have moved past them.
                let time = if side == 0 && self.join.table_as_rows {
                    observed[0].min(observed[1])
                } else {
                    observed[side]
                };
                let horizon = time.saturating_sub(retention);
                window.retain(|_, rows| {
                    rows.retain(|r| r.timestamp >= horizon);
                    !rows.is_empty()
                });
            }
        }
    }

    /// A foreign-key table-table join: the left table's rows refer to the right table's
    /// primary key with an expression of theirs (`key` for a left row), and the result is
    /// keyed by the left row's primary key. A left change is joined with the right row it
    /// refers to; a right change with every left row referring to it.
    fn foreign_key(
        &self,
        state: &mut JoinState,
        side: usize,
        change: Change,
        out: &mut Vec<Joined>,
    ) {
        let Change {
            key,
            primary,
            values,
            residual,
            timestamp,
        } = change;
        let left_join = self.join.kind.keeps_unmatched(0);
        let joined = |sides, key, row_key, tombstone| Joined {
            sides,
            key,
            row_key: Some(row_key),
            timestamp,
            tombstone,
        };
        if side == 1 {
            state.observed[1] = state.observed[1].max(timestamp);
            match &values {
                Some(values) => {
                    let kept = Kept {
                        values: Arc::clone(values),
                        residual: residual.clone(),
                        timestamp,
                        id: 0,
                    };
                    let old = state.tables[1].insert(key.clone(), kept);
                    // A right row that did not change (an aggregate re-emitting the same
                    // maximum) would re-join every left row into the rows they already are.
                    let columns = self.join.sides[1].source.columns.len();
                    if old.is_some_and(|old| old.values[..columns] == values[..columns]) {
                        return;
                    }
                }
                None => {
                    state.tables[1].remove(&key);
                }
            }
            for primary in state.fk_index.get(&key).cloned().unwrap_or_default() {
                let Some((left, _)) = state.fk_left.get(&primary) else {
                    continue;
                };
                let matching = residual_matches(&left.residual, &residual);
                let left = Some(Arc::clone(&left.values));
                out.push(match &values {
                    Some(right) if matching => {
                        joined([left, Some(Arc::clone(right))], key.clone(), primary, false)
                    }
                    _ if left_join => joined([left, None], key.clone(), primary, false),
                    _ => joined([self.key_only(&primary), None], key.clone(), primary, true),
                });
            }
            return;
        }
        // A left row: it replaces (or deletes) the row with its primary key, and refers to
        // the right row `key` instead of the one the old row referred to.
        let old = match &values {
            Some(values) => {
                let kept = Kept {
                    values: Arc::clone(values),
                    residual: residual.clone(),
                    timestamp,
                    id: 0,
                };
                state.fk_left.insert(primary.clone(), (kept, key.clone()))
            }
            None => state.fk_left.remove(&primary),
        };
        if let Some((_, old_key)) = &old {
            if let Some(referring) = state.fk_index.get_mut(old_key) {
                referring.retain(|p| p != &primary);
                if referring.is_empty() {
                    state.fk_index.remove(old_key);
                }
            }
        }
        let Some(values) = values else {
            if old.is_some() {
                out.push(joined([self.key_only(&primary), None], key, primary, true));
            }
            return;
        };
        if !key.is_null() {
            state
                .fk_index
                .entry(key.clone())
                .or_default()
                .push(primary.clone());
        }
        let retention = self.join.sides[0]
            .source
            .window
            .and_then(|w| w.retention_ms());
        if let Some((_, end)) = self
            .window_of(Some(&primary))
            .filter(|_| retention.is_some())
        {
            state.left_window_end = state.left_window_end.max(end);
            state
                .fk_windows
                .entry(end)
                .or_default()
                .push(primary.clone());
        }
        let right = state.tables[1]
            .get(&key)
            .filter(|r| residual_matches(&residual, &r.residual))
            .map(|r| Arc::clone(&r.values));
        match right {
            Some(right) => out.push(joined([Some(values), Some(right)], key, primary, false)),
            None if left_join => out.push(joined([Some(values), None], key, primary, false)),
            None if old.is_some() => {
                out.push(joined([self.key_only(&primary), None], key, primary, true))
            }
            None => {}
        }
    }

    /// A windowed left table's rows no longer change once its windows have moved its
    /// retention past theirs; they are forgotten once the right table's record times have
    /// moved as far too (a right row changed later no longer updates them, as a window store
    /// past its retention no longer answers for them).
    fn forget_final_left_rows(&self, state: &mut JoinState) {
        let retention = self.join.sides[0]
            .source
            .window
            .and_then(|w| w.retention_ms());
        let Some(retention) = retention else {
            return;
        };
        let horizon = state
            .left_window_end
            .min(state.observed[1])
            .saturating_sub(retention);
        let mut forgotten: HashMap<ScalarValue, HashSet<Vec<ScalarValue>>> = HashMap::default();
        while let Some(window) = state.fk_windows.first_entry() {
            if *window.key() >= horizon {
                break;
            }
            for primary in window.remove() {
                state.present.remove(&primary);
                if let Some((_, key)) = state.fk_left.remove(&primary) {
                    forgotten.entry(key).or_default().insert(primary);
                }
            }
        }
        for (key, primaries) in forgotten {
            if let Some(referring) = state.fk_index.get_mut(&key) {
                referring.retain(|p| !primaries.contains(p));
                if referring.is_empty() {
                    state.fk_index.remove(&key);
                }
            }
        }
    }

    /// Where a foreign-key join's row of `side` holds its primary key: its first (key)
    /// columns, and for a windowed left table its window.
    fn primary_positions(&self, side: usize) -> impl Iterator<Item = usize> + '_ {
        let window = self
            .join
            .left_window
            .iter()
            .flatten()
            .filter(move |_| side == 0);
        (0..self.join.left_key_columns).chain(window.copied())
    }

    /// A left row with only its primary key: what a deletion's key is projected from.
    fn key_only(&self, primary: &[ScalarValue]) -> Option<Arc<Vec<ScalarValue>>> {
        let fields = self.join.sides[0].schema.fields();
        let mut values: Vec<ScalarValue> = fields
            .iter()
            .map(|f| ScalarValue::try_from(f.data_type()).unwrap_or(ScalarValue::Null))
            .collect();
        for (position, value) in self.primary_positions(0).zip(primary) {
            values[position] = value.clone();
        }
        Some(Arc::new(values))
    }

    /// The window of a foreign-key join's row: its windowed left table's, the end of its
    /// primary key.
    fn window_of(&self, row_key: Option<&Vec<ScalarValue>>) -> Option<(i64, i64)> {
        self.join.left_window?;
        match row_key?.as_slice() {
            [.., ScalarValue::Int64(Some(start)), ScalarValue::Int64(Some(end))] => {
                Some((*start, *end))
            }
            _ => None,
        }
    }

    /// Builds the joined rows and applies WHERE.
    fn joined_batch(
        &self,
        state: &mut JoinState,
        joined: Vec<Joined>,
        failures: &mut Vec<String>,
    ) -> Result<Option<(RecordBatch, Vec<RowMeta>)>> {
        if joined.is_empty() {
            return Ok(None);
        }
        let schema = &self.join.joined_schema;
        let widths = self.join.sides.each_ref().map(|s| s.schema.fields().len());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (side, width) in widths.iter().enumerate() {
            let offset = if side == 0 { 0 } else { widths[0] };
            for column in 0..*width {
                let field = schema.field(offset + column);
                let null = ScalarValue::try_from(field.data_type())?;
                let values = joined.iter().map(|j| match &j.sides[side] {
                    Some(values) => values[column].clone(),
                    None => null.clone(),
                });
                columns.push(ScalarValue::iter_to_array(values)?);
            }
        }
        columns.push(ScalarValue::iter_to_array(
            joined.iter().map(|j| j.key.clone()),
        )?);
        let options = RecordBatchOptions::new().with_row_count(Some(joined.len()));
        let batch = RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)?;
        let keep = match &self.join.filter {
            Some(filter) => {
                let mask = evaluate_predicate_rows(&batch, filter, "WHERE", failures);
                (0..joined.len())
                    .map(|row| mask.is_valid(row) && mask.value(row))
                    .collect()
            }
            None => vec![true; joined.len()],
        };
        let table = self.plan.sink.kind == SourceKind::Table;
        let mut selected = Vec::with_capacity(joined.len());
        let mut meta = Vec::with_capacity(joined.len());
        for (row, j) in joined.iter().enumerate() {
            let passes = keep[row] || j.tombstone;
            let tombstone = j.tombstone || !passes;
            if self.join.filter.is_some() && table {
                // A table's row WHERE rejects retracts the key's row, if it has one.
                let identity = j.row_key.clone().unwrap_or_else(|| vec![j.key.clone()]);
                let was_present = if tombstone {
                    state.present.remove(&identity)
                } else {
                    !state.present.insert(identity)
                };
                if tombstone && !was_present {
                    continue;
                }
            } else if !passes {
                continue;
            }
            selected.push(row as u32);
            meta.push(RowMeta {
                timestamp: j.timestamp,
                window: self.window_of(j.row_key.as_ref()),
                tombstone,
            });
        }
        if selected.is_empty() {
            return Ok(None);
        }
        let indices = datafusion::arrow::array::UInt32Array::from(selected);
        let batch = datafusion::arrow::compute::take_record_batch(&batch, &indices)?;
        Ok(Some((batch, meta)))
    }
}

impl StreamOperator for JoinExec {
    fn name(&self) -> &'static str {
        "JoinExec"
    }

    fn state_size(&self) -> usize {
        let state = self.state.lock();
        state.tables.iter().map(HashMap::len).sum::<usize>()
            + state
                .windows
                .iter()
                .flat_map(HashMap::values)
                .map(Vec::len)
                .sum::<usize>()
            + state.fk_left.len()
    }

    /// Joins decoded rows of `port.side` (0 left, 1 right) with the state of the other side, and
    /// projects the joined rows.
    fn process(&self, port: Port, input: &Input) -> Result<Emitted> {
        let (joined, mut failures) = self.join_rows(port.side, input)?;
        let mut emitted = match joined {
            Some((batch, meta)) => Emitted::projected(&self.plan, &batch, meta),
            None => Emitted::default(),
        };
        emitted.failures.append(&mut failures);
        Ok(emitted)
    }
}
