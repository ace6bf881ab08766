//! `AggregateExec`: GROUP BY over a stream or a table, windowed or not, emitting the updated
//! row of a key for every input record (EMIT CHANGES, as ksqlDB does with caching off), or
//! one row per window once it closes (EMIT FINAL).
//!
//! State is one set of DataFusion accumulators per group (key, and window when windowed), held
//! by one task group: a partition's when the groups are partitioned (see `exchange`), else the
//! query's. Rows whose group key has a null are dropped, as in
//! ksqlDB.
//! - Tables: each source key's current row is remembered; a new row for the key (or its
//!   deletion) first retracts the old row from its group, which emits that group's update
//!   too. Accumulators are DataFusion's sliding ones, which can retract (MIN and MAX:
//!   [`crate::functions::retractable`]'s, which can forget any row, not just the oldest).
//! - Time windows (tumbling, hopping): epoch-aligned windows `[start, start + size)`; a row
//!   goes to every window holding its timestamp, except windows already closed: those whose
//!   end + grace is at or before the stream time (the largest timestamp seen), which count the
//!   row as late and drop it. A window's rows carry the largest timestamp in the window.
//! - Session windows: a row joins every session of its key within the gap; they merge into
//!   one session, each replaced session is deleted (a tombstone), and the merged one emitted
//!   with its end as timestamp.
//! - HAVING: a group whose row stops passing it is deleted (a tombstone); a group that never
//!   passed emits nothing.
//!
//! Groups are found by their key in Arrow's row format (bytes: cheap to hash and compare);
//! each group keeps its key's values for the rows it emits. A time window's groups are kept
//! together and forgotten when the window closes (a row for it would be late): EMIT FINAL
//! evaluates them then, in the order they last changed, and emits nothing before.
//!
//! Not yet: a changelog topic for the state (it is rebuilt by reading the source from the
//! start); session windows' and tables' groups stay in memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::hash_map::EntryRef;
use datafusion::common::{HashMap, HashSet};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;
use parking_lot::Mutex;

use super::operator::{Port, StreamOperator};
use super::{evaluate_predicate_rows, row_times, rows_passing, Emitted, Input, RowMeta};
use crate::catalog::{WINDOWEND, WINDOWSTART};
use crate::error::{EngineError, Result};
use crate::functions::retractable::{Extreme, RetractableExtreme};
use crate::parser::WindowSpec;
use crate::query::{AggregatePlan, PersistentPlan};

type Key = Vec<ScalarValue>;

/// A key in Arrow's row format: what groups and table rows are found by.
pub(super) type RowKey = Box<[u8]>;

/// The accumulators of one group.
struct Group {
    /// The group's key values, as its rows carry them.
    key: Key,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// The largest timestamp of the group's rows.
    max_time: i64,
    /// When the group last changed (a count of changes): EMIT FINAL emits a window's groups
    /// in this order.
    changed: u64,
}

struct Session {
    start: i64,
    end: i64,
    group: Group,
}

/// One row the aggregation emits: a group's new values, or a tombstone for it.
struct Update {
    key: Key,
    window: Option<(i64, i64)>,
    values: Vec<ScalarValue>,
    timestamp: i64,
    tombstone: bool,
}

struct State {
    /// Non-windowed groups by key.
    groups: HashMap<RowKey, Group>,
    /// Time-windowed groups by window start, then key. All windows have one size, so they
    /// close in the order of their starts.
    windows: BTreeMap<i64, HashMap<RowKey, Group>>,
    sessions: HashMap<Key, Vec<Session>>,
    /// A table source's current rows: source key -> group key and aggregate arguments.
    table_rows: HashMap<RowKey, (RowKey, Vec<Vec<ScalarValue>>)>,
    /// A windowed table source with a known retention: its rows' keys by window end, and the
    /// latest window end read. Rows of windows the retention has passed no longer change, so
    /// they are forgotten (their values stay in their groups).
    table_windows: BTreeMap<i64, Vec<RowKey>>,
    source_window_end: i64,
    /// The largest timestamp seen.
    stream_time: i64,
    /// EMIT FINAL over session windows: the latest row of each open session, by (key,
    /// start), and the sessions in the order they close: (end, arrival) -> (key, start).
    pending: HashMap<(Key, i64), (u64, Update)>,
    closing: BTreeMap<(i64, u64), (Key, i64)>,
    /// Changes so far: orders pending sessions and changed groups.
    arrivals: u64,
    /// Rows dropped because their window had closed.
    late_rows: u64,
    /// With HAVING: the groups whose last emitted row passed it (a group that stops passing
    /// is deleted with a tombstone; one that never passed emits nothing).
    visible: HashSet<(Key, Option<(i64, i64)>)>,
}

/// Per-key accumulators of one GROUP BY query.
pub struct AggregateExec {
    plan: Arc<PersistentPlan>,
    aggregate: AggregatePlan,
    state: Mutex<State>,
}

impl AggregateExec {
    pub(crate) fn new(plan: Arc<PersistentPlan>, aggregate: AggregatePlan) -> AggregateExec {
        AggregateExec {
            plan,
            aggregate,
            state: Mutex::new(State {
                groups: HashMap::default(),
                windows: BTreeMap::new(),
                sessions: HashMap::default(),
                table_rows: HashMap::default(),
                table_windows: BTreeMap::new(),
                source_window_end: i64::MIN,
                stream_time: i64::MIN,
                pending: HashMap::default(),
                closing: BTreeMap::new(),
                arrivals: 0,
                late_rows: 0,
                visible: HashSet::default(),
            }),
        }
    }

    /// Rows dropped so far because they arrived after their window closed.
    pub fn late_rows(&self) -> u64 {
        self.state.lock().late_rows
    }

    /// The GROUP BY keys and the aggregates' arguments of a batch's rows.
    fn evaluate_inputs(&self, batch: &RecordBatch) -> Result<(Vec<ArrayRef>, Vec<Vec<ArrayRef>>)> {
        let evaluate =
            |e: &Arc<dyn PhysicalExpr>| -> Result<ArrayRef> { super::evaluate(e, batch) };
        let groups: Vec<ArrayRef> = self
            .aggregate
            .group_by
            .iter()
            .map(evaluate)
            .collect::<Result<_>>()?;
        let arguments: Vec<Vec<ArrayRef>> = self
            .aggregate
            .aggregates
            .iter()
            .map(|a| a.expressions().iter().map(evaluate).collect())
            .collect::<Result<_>>()?;
        Ok((groups, arguments))
    }

    fn apply(
        &self,
        input: &Input,
        (groups, arguments): (Vec<ArrayRef>, Vec<Vec<ArrayRef>>),
        mut failures: Vec<String>,
    ) -> Emitted {
        let batch = &input.batch;
        let rows = batch.num_rows();
        let mut state = self.state.lock();
        match self.update(&mut state, input, &groups, &arguments, &mut failures) {
            Ok(updates) => {
                let mut emitted = Emitted::or_failure(self.encode(&mut state, updates));
                failures.append(&mut emitted.failures);
                emitted.failures = failures;
                emitted
            }
            Err(e) => {
                failures.push(format!("a batch of {rows} rows was left out: {e}"));
                Emitted {
                    failures,
                    ..Emitted::default()
                }
            }
        }
    }

    /// Applies the batch's rows to the state; the changed groups' new values. Fails only
    /// before changing anything (setting up the batch's keys); a row that fails later is left
    /// out with its error in `failures`.
    fn update(
        &self,
        state: &mut State,
        input: &Input,
        groups: &[ArrayRef],
        arguments: &[Vec<ArrayRef>],
        failures: &mut Vec<String>,
    ) -> Result<Vec<Update>> {
        let batch = &input.batch;
        let rows = batch.num_rows();
        // A table's row is identified by its key, and a windowed table's by its window too.
        let source_keys: Vec<ArrayRef> = if self.aggregate.retracting {
            let window = [WINDOWSTART, WINDOWEND]
                .into_iter()
                .filter(|_| self.plan.source.window.is_some());
            self.plan
                .source
                .key_columns()
                .map(|c| c.name.as_str())
                .chain(window)
                .map(|name| {
                    batch
                        .column_by_name(name)
                        .cloned()
                        .ok_or_else(|| EngineError::Internal(format!("key column {name} missing")))
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let source_retention = self.plan.source.window.and_then(|w| w.retention_ms());
        let window_ends = match source_retention.filter(|_| self.aggregate.retracting) {
            Some(_) => Some(int64_column(batch, WINDOWEND)?),
            None => None,
        };
        let keys = RowKeys::new(groups)?;
        let source_keys = RowKeys::new(&source_keys)?;
        // Logical nulls: an untyped NULL (DataType::Null) has no physical null buffer.
        let key_nulls: Vec<_> = groups.iter().filter_map(|g| g.logical_nulls()).collect();
        let times = row_times(batch)?;
        let mut updates = Vec::new();
        let apply_row = |state: &mut State, updates: &mut Vec<Update>, row: usize| {
            let usable = !input.deleted[row] && key_nulls.iter().all(|n| n.is_valid(row));
            let key = keys.row(row);
            let key_values: &dyn Fn() -> Result<Key> = &|| scalars(groups, row);
            let timestamp = times[row];
            if self.aggregate.retracting {
                let source_key = source_keys.row(row);
                self.update_table(
                    state,
                    updates,
                    source_key,
                    usable.then_some((key, key_values)),
                    arguments,
                    row,
                    timestamp,
                )?;
                if let Some(ends) = &window_ends {
                    let end = ends.value(row);
                    state.source_window_end = state.source_window_end.max(end);
                    let keys = state.table_windows.entry(end).or_default();
                    keys.push(source_key.into());
                }
                return Ok(());
            }
            if !usable {
                return Ok(());
            }
            let args: Vec<Vec<ArrayRef>> = arguments
                .iter()
                .map(|a| a.iter().map(|c| c.slice(row, 1)).collect())
                .collect();
            match &self.aggregate.window {
                None => {
                    let group = self.group(&mut state.groups, key, key_values)?;
                    add(group, &args, timestamp)?;
                    group.max_time = timestamp;
                    updates.push(current(group, None, timestamp)?);
                }
                Some(WindowSpec::Session { gap_ms, .. }) => {
                    let grace = self.grace();
                    self.update_session(
                        state,
                        updates,
                        key_values()?,
                        &args,
                        timestamp,
                        *gap_ms,
                        grace,
                    )?;
                }
                Some(WindowSpec::Tumbling { .. } | WindowSpec::Hopping { .. }) => {
                    let (size, advance) = self.time_window();
                    state.stream_time = state.stream_time.max(timestamp);
                    let expired = self.expire(state);
                    let close = state.stream_time.saturating_sub(self.grace());
                    for (start, end) in time_windows(timestamp, size, advance) {
                        if end <= close || start < expired {
                            state.late_rows += 1;
                            continue;
                        }
                        state.arrivals += 1;
                        let changed = state.arrivals;
                        let window = state.windows.entry(start).or_default();
                        let group = self.group(window, key, key_values)?;
                        add(group, &args, timestamp)?;
                        group.changed = changed;
                        if !self.aggregate.emit_final {
                            let max_time = group.max_time;
                            updates.push(current(group, Some((start, end)), max_time)?);
                        }
                    }
                }
            }
            self.evict_closed(state, updates)
        };
        for row in 0..rows {
            if let Err(e) = apply_row(state, &mut updates, row) {
                failures.push(format!("a row was left out: {e}"));
            }
        }
        if let Some(retention) = source_retention {
            let horizon = state.source_window_end.saturating_sub(retention);
            while let Some(window) = state.table_windows.first_entry() {
                if *window.key() >= horizon {
                    break;
                }
                for key in window.remove() {
                    state.table_rows.remove(&key);
                }
            }
        }
        Ok(updates)
    }

    /// A tumbling or hopping window's size and advance.
    fn time_window(&self) -> (i64, i64) {
        match &self.aggregate.window {
            Some(WindowSpec::Hopping {
                size_ms,
                advance_ms,
                ..
            }) => (*size_ms, *advance_ms),
            Some(WindowSpec::Tumbling { size_ms, .. }) => (*size_ms, *size_ms),
            _ => (0, 1),
        }
    }

    /// The group with row-format key `key`, created on first use (with the key's values).
    fn group<'a>(
        &self,
        groups: &'a mut HashMap<RowKey, Group>,
        key: &[u8],
        key_values: impl FnOnce() -> Result<Key>,
    ) -> Result<&'a mut Group> {
        Ok(match groups.entry_ref(key) {
            EntryRef::Occupied(group) => group.into_mut(),
            EntryRef::Vacant(slot) => {
                slot.insert_with_key(key.into(), self.fresh_group(key_values()?)?)
            }
        })
    }

    fn fresh_group(&self, key: Key) -> Result<Group> {
        let accumulators = self
            .aggregate
            .aggregates
            .iter()
            .map(|a| {
                if self.aggregate.retracting {
                    // MIN and MAX must forget any row, not only the oldest.
                    match Extreme::of(a.fun().name()) {
                        Some(extreme) => Ok(Box::new(RetractableExtreme::new(
                            extreme,
                            a.field().data_type().clone(),
                        )) as Box<dyn Accumulator>),
                        None => a.create_sliding_accumulator(),
                    }
                } else {
                    a.create_accumulator()
                }
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        Ok(Group {
            key,
            accumulators,
            max_time: i64::MIN,
            changed: 0,
        })
    }

    /// A table row replaced or deleted: retract the old row, add the new one (`new_key`: its
    /// group's key, row format and values).
    #[allow(clippy::too_many_arguments)]
    fn update_table(
        &self,
        state: &mut State,
        updates: &mut Vec<Update>,
        source_key: &[u8],
        new_key: Option<(&[u8], &dyn Fn() -> Result<Key>)>,
        arguments: &[Vec<ArrayRef>],
        row: usize,
        timestamp: i64,
    ) -> Result<()> {
        if let Some((old_key, old_args)) = state.table_rows.remove(source_key) {
            let group = state.groups.get_mut(&old_key).ok_or_else(|| {
                EngineError::Internal("a table row's group is missing".to_string())
            })?;
            for (accumulator, args) in group.accumulators.iter_mut().zip(&old_args) {
                let arrays = args
                    .iter()
                    .map(ScalarValue::to_array)
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                accumulator.retract_batch(&arrays)?;
            }
            if new_key.is_none_or(|(key, _)| key != &*old_key) {
                updates.push(current(group, None, timestamp)?);
            }
        }
        let Some((key, key_values)) = new_key else {
            return Ok(());
        };
        let args: Vec<Vec<ScalarValue>> = arguments
            .iter()
            .map(|a| {
                a.iter()
                    .map(|c| ScalarValue::try_from_array(c, row))
                    .collect()
            })
            .collect::<datafusion::error::Result<_>>()?;
        let group = self.group(&mut state.groups, key, key_values)?;
        let arrays: Vec<Vec<ArrayRef>> = arguments
            .iter()
            .map(|a| a.iter().map(|c| c.slice(row, 1)).collect())
            .collect();
        add(group, &arrays, timestamp)?;
        updates.push(current(group, None, timestamp)?);
        state
            .table_rows
            .insert(source_key.into(), (key.into(), args));
        Ok(())
    }

    /// A row for a session window: merge the sessions it touches.
    #[allow(clippy::too_many_arguments)]
    fn update_session(
        &self,
        state: &mut State,
        updates: &mut Vec<Update>,
        key: Key,
        args: &[Vec<ArrayRef>],
        timestamp: i64,
        gap: i64,
        grace: i64,
    ) -> Result<()> {
        state.stream_time = state.stream_time.max(timestamp);
        let close = state.stream_time.saturating_sub(grace);
        let sessions = state.sessions.entry(key.clone()).or_default();
        let (touched, kept): (Vec<Session>, Vec<Session>) = std::mem::take(sessions)
            .into_iter()
            .partition(|s| s.end >= timestamp - gap && s.start <= timestamp + gap);
        *sessions = kept;
        let start = touched.iter().map(|s| s.start).fold(timestamp, i64::min);
        let end = touched.iter().map(|s| s.end).fold(timestamp, i64::max);
        if end < close {
            state.late_rows += 1;
            state
                .sessions
                .get_mut(&key)
                .expect("entry made above")
                .extend(touched);
            return Ok(());
        }
        let mut merged = self.fresh_group(key.clone())?;
        for mut old in touched {
            let update = current(&mut old.group, Some((old.start, old.end)), old.end)?;
            self.emit(
                state,
                updates,
                Update {
                    tombstone: true,
                    ..update
                },
            );
            for (into, from) in merged
                .accumulators
                .iter_mut()
                .zip(&mut old.group.accumulators)
            {
                let parts = from
                    .state()?
                    .iter()
                    .map(ScalarValue::to_array)
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                into.merge_batch(&parts)?;
            }
        }
        add(&mut merged, args, timestamp)?;
        let update = current(&mut merged, Some((start, end)), end)?;
        self.emit(state, updates, update);
        state
            .sessions
            .get_mut(&key)
            .expect("entry made above")
            .push(Session {
                start,
                end,
                group: merged,
            });
        Ok(())
    }

    /// Emits a session's update now (EMIT CHANGES) or keeps it until the session closes (EMIT
    /// FINAL; a tombstone then just forgets the session).
    fn emit(&self, state: &mut State, updates: &mut Vec<Update>, update: Update) {
        if !self.aggregate.emit_final {
            updates.push(update);
            return;
        }
        let Some((start, end)) = update.window else {
            updates.push(update);
            return;
        };
        let id = (update.key.clone(), start);
        if let Some((arrival, _)) = state.pending.remove(&id) {
            state.closing.remove(&(end, arrival));
        }
        if update.tombstone {
            return;
        }
        state.arrivals += 1;
        let arrival = state.arrivals;
        state.closing.insert((end, arrival), id.clone());
        state.pending.insert(id, (arrival, update));
    }

    /// The window's grace period.
    fn grace(&self) -> i64 {
        let emit_final = self.aggregate.emit_final;
        self.aggregate
            .window
            .as_ref()
            .map_or(0, |w| w.grace_ms(emit_final))
    }

    /// EMIT FINAL over time windows: forgets open windows that fell out of the window
    /// store's retention (RETENTION, by default size + grace) before they were emitted, as
    /// Kafka Streams' store expires them when stream time jumps past them (its segments
    /// outlive the retention, but its reads stop exactly at it). With the default retention,
    /// a jump in stream time past a window's close expires the window unemitted: set
    /// RETENTION longer than size + grace where stream time jumps. Returns the retention's
    /// horizon: a window starting before it is expired (for EMIT CHANGES, none).
    fn expire(&self, state: &mut State) -> i64 {
        if !self.aggregate.emit_final {
            return i64::MIN;
        }
        let emit_final = self.aggregate.emit_final;
        let retention = self.aggregate.window.as_ref();
        let Some(retention) = retention.and_then(|w| w.retention_ms(emit_final)) else {
            return i64::MIN;
        };
        let horizon = state.stream_time.saturating_sub(retention);
        while let Some(window) = state.windows.first_entry() {
            if *window.key() >= horizon {
                break;
            }
            window.remove();
        }
        horizon
    }

    /// Windows whose end + grace the stream time has reached are closed: EMIT FINAL emits
    /// their groups (time windows' in the order they last changed), and time windows' groups
    /// are forgotten.
    fn evict_closed(&self, state: &mut State, updates: &mut Vec<Update>) -> Result<()> {
        let close = state.stream_time.saturating_sub(self.grace());
        let (size, _) = self.time_window();
        match &self.aggregate.window {
            Some(WindowSpec::Tumbling { .. } | WindowSpec::Hopping { .. }) => {
                while let Some(window) = state.windows.first_entry() {
                    let start = *window.key();
                    if start.saturating_add(size) > close {
                        break;
                    }
                    let groups = window.remove();
                    if !self.aggregate.emit_final {
                        continue;
                    }
                    let mut groups: Vec<Group> = groups.into_values().collect();
                    groups.sort_unstable_by_key(|g| g.changed);
                    for mut group in groups {
                        let max_time = group.max_time;
                        updates.push(current(&mut group, Some((start, start + size)), max_time)?);
                    }
                }
            }
            Some(WindowSpec::Session { .. }) if self.aggregate.emit_final => {
                while let Some(entry) = state.closing.first_entry() {
                    if entry.key().0 > close {
                        break;
                    }
                    let id = entry.remove();
                    if let Some((_, update)) = state.pending.remove(&id) {
                        updates.push(update);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Builds the aggregate's output rows and applies HAVING and the projection.
    fn encode(&self, state: &mut State, updates: Vec<Update>) -> Result<Emitted> {
        if updates.is_empty() {
            return Ok(Emitted::default());
        }
        let schema = &self.aggregate.output_schema;
        let mut failures = Vec::new();
        let mut columns: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(updates.len()); schema.fields().len()];
        let mut meta = Vec::with_capacity(updates.len());
        let mut ids = Vec::new();
        for update in updates {
            if self.aggregate.having.is_some() {
                ids.push((update.key.clone(), update.window));
            }
            let window = update.window.map(|(start, end)| {
                [
                    ScalarValue::Int64(Some(start)),
                    ScalarValue::Int64(Some(end)),
                ]
            });
            let row = update
                .key
                .into_iter()
                .chain(window.into_iter().flatten())
                .chain(update.values);
            for (column, value) in columns.iter_mut().zip(row) {
                column.push(value);
            }
            meta.push(RowMeta {
                timestamp: update.timestamp,
                window: update.window,
                tombstone: update.tombstone,
            });
        }
        let arrays = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(values, field)| {
                let array = ScalarValue::iter_to_array(values)?;
                if array.data_type() == field.data_type() {
                    Ok(array)
                } else {
                    Ok(datafusion::arrow::compute::cast(&array, field.data_type())?)
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let rows = RecordBatch::try_new(Arc::clone(schema), arrays)
            .map_err(|e| EngineError::Internal(format!("aggregate output: {e}")))?;
        let (rows, meta) = match &self.aggregate.having {
            None => (rows, meta),
            Some(having) => {
                let mask = evaluate_predicate_rows(&rows, having, "HAVING", &mut failures);
                let mut keep = Vec::with_capacity(meta.len());
                let mut kept_meta = Vec::with_capacity(meta.len());
                for (row, (mut meta, id)) in meta.into_iter().zip(ids).enumerate() {
                    let passes = !meta.tombstone && mask.is_valid(row) && mask.value(row);
                    let emit = if passes {
                        state.visible.insert(id);
                        true
                    } else {
                        meta.tombstone = true;
                        state.visible.remove(&id)
                    };
                    keep.push(emit);
                    if emit {
                        kept_meta.push(meta);
                    }
                }
                let rows = filter_record_batch(&rows, &BooleanArray::from(keep))?;
                (rows, kept_meta)
            }
        };
        if meta.is_empty() {
            return Ok(Emitted {
                failures,
                ..Emitted::default()
            });
        }
        let mut emitted = Emitted::projected(&self.plan, &rows, meta);
        emitted.failures.append(&mut failures);
        Ok(emitted)
    }
}

impl StreamOperator for AggregateExec {
    fn name(&self) -> &'static str {
        "AggregateExec"
    }

    fn state_size(&self) -> usize {
        let state = self.state.lock();
        state.groups.len()
            + state.windows.values().map(HashMap::len).sum::<usize>()
            + state.sessions.values().map(Vec::len).sum::<usize>()
            + state.table_rows.len()
            + state.pending.len()
    }

    /// Updates the state with each row of an input batch, in order, and returns the records
    /// to emit. Rows whose keys or arguments cannot be evaluated are left out before the
    /// state changes; once it has, a row that fails (an accumulator's error) is left out
    /// alone and the batch goes on, so `process` never fails after changing the state.
    fn process(&self, _port: Port, input: &Input) -> Result<Emitted> {
        match self.evaluate_inputs(&input.batch) {
            Ok(inputs) => Ok(self.apply(input, inputs, Vec::new())),
            Err(_) => {
                let (input, failures) =
                    rows_passing(input, |batch| self.evaluate_inputs(batch).map(|_| ()))?;
                let inputs = self.evaluate_inputs(&input.batch)?;
                Ok(self.apply(&input, inputs, failures))
            }
        }
    }
}

/// The keys of a batch's rows in Arrow's row format (empty without key columns).
pub(super) struct RowKeys(Option<Rows>);

impl RowKeys {
    pub(super) fn new(columns: &[ArrayRef]) -> Result<RowKeys> {
        if columns.is_empty() {
            return Ok(RowKeys(None));
        }
        let fields = columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        let rows = RowConverter::new(fields)?.convert_columns(columns)?;
        Ok(RowKeys(Some(rows)))
    }

    pub(super) fn row(&self, row: usize) -> &[u8] {
        self.0.as_ref().map_or(&[], |rows| rows.row(row).data())
    }
}

/// A BIGINT column of `batch` by name (a windowed source's WINDOWSTART or WINDOWEND).
pub(super) fn int64_column(batch: &RecordBatch, name: &str) -> Result<Int64Array> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| EngineError::Internal(format!("column {name} missing")))?;
    let column = datafusion::arrow::compute::cast(column, &DataType::Int64)?;
    Ok(column.as_primitive::<Int64Type>().clone())
}

/// The values of `columns` at `row`.
fn scalars(columns: &[ArrayRef], row: usize) -> Result<Key> {
    Ok(columns
        .iter()
        .map(|c| ScalarValue::try_from_array(c, row))
        .collect::<datafusion::error::Result<_>>()?)
}

/// Adds one row (one-row argument arrays per aggregate) to a group.
fn add(group: &mut Group, args: &[Vec<ArrayRef>], timestamp: i64) -> Result<()> {
    for (accumulator, args) in group.accumulators.iter_mut().zip(args) {
        accumulator.update_batch(args)?;
    }
    group.max_time = group.max_time.max(timestamp);
    Ok(())
}

/// A group's current values as an update.
fn current(group: &mut Group, window: Option<(i64, i64)>, timestamp: i64) -> Result<Update> {
    let values = group
        .accumulators
        .iter_mut()
        .map(|a| a.evaluate())
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    Ok(Update {
        key: group.key.clone(),
        window,
        values,
        timestamp,
        tombstone: false,
    })
}

/// The epoch-aligned windows `[start, start + size)` holding `timestamp`, starts a multiple
/// of `advance` (Kafka Streams' `TimeWindows.windowsFor`).
fn time_windows(timestamp: i64, size: i64, advance: i64) -> impl Iterator<Item = (i64, i64)> {
    let first = (timestamp - size + advance).max(0) / advance * advance;
    let last = if timestamp < 0 { -1 } else { timestamp };
    (first..=last)
        .step_by(advance.max(1) as usize)
        .map(move |start| (start, start + size))
}

#[cfg(test)]
mod tests {
    use super::time_windows;

    #[test]
    fn time_windows_are_epoch_aligned_and_hold_the_timestamp() {
        let tumbling: Vec<_> = time_windows(89_999, 30_000, 30_000).collect();
        assert_eq!(tumbling, [(60_000, 90_000)]);
        let hopping: Vec<_> = time_windows(6, 5, 2).collect();
        assert_eq!(hopping, [(2, 7), (4, 9), (6, 11)]);
        let early: Vec<_> = time_windows(1, 5, 2).collect();
        assert_eq!(early, [(0, 5)]);
    }
}
