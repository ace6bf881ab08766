//! `OverExec`: aggregate functions OVER windows of a stream's rows (planned in
//! [`crate::query::OverPlan`]).
//!
//! A row waits until the query's watermark has passed it: the earliest of the event times its
//! partition readers have reached (a reader that has read all there is holds nobody back;
//! one whose topic another running query is still writing has not, see `writers.rs`).
//! The rows it passes are then taken in ORDER BY order, each updating its partition's
//! accumulators and leaving with one value per function. A row older than rows already taken
//! (its reader was out of order, or had been idle) is taken at once, after them. Rows wait only in memory: a query restarting from its committed offsets
//! rebuilds the waiting rows and the partitions' frames by replaying its source (as
//! aggregations do), so none is lost. Each partition's frame stays in memory.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, interleave_record_batch, SortOptions};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::HashMap;
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;
use parking_lot::Mutex;

use super::aggregate::{RowKey, RowKeys};
use super::operator::{Port, StreamOperator};
use super::{row_times, row_windows, Emitted, Input, RowMeta};
use crate::error::{EngineError, Result};
use crate::query::{Frame, OverFunction, OverPlan, PersistentPlan};

/// Where a waiting row goes among the others: its ORDER BY values in Arrow's row format
/// (event time first), its partition (so that peers are adjacent), and its arrival.
type Place = (RowKey, RowKey, u64);

/// A row waiting for the watermark.
struct Waiting {
    batch: Arc<RecordBatch>,
    row: usize,
    time: i64,
}

/// One partition's accumulators and, per function with a bounded frame, the arguments of
/// the rows in its frame (oldest first).
struct Partition {
    accumulators: Vec<Box<dyn Accumulator>>,
    frames: Vec<VecDeque<Vec<ScalarValue>>>,
}

/// A reader's position when it has read all there is: it holds nobody back.
const IDLE: i64 = i64::MAX;

struct State {
    waiting: BTreeMap<Place, Waiting>,
    /// Per partition reader: the latest event time it has read (`i64::MIN` before its first
    /// rows, [`IDLE`] while it has nothing to read).
    positions: Vec<i64>,
    /// Per partition reader: the latest event time it has read, idle or not.
    latest: Vec<i64>,
    arrivals: u64,
    partitions: HashMap<RowKey, Partition>,
}

pub struct OverExec {
    plan: Arc<PersistentPlan>,
    over: OverPlan,
    /// How many rows wait (for the engine's "caught up").
    held: Arc<AtomicUsize>,
    state: Mutex<State>,
}

impl OverExec {
    pub(super) fn new(
        plan: Arc<PersistentPlan>,
        over: OverPlan,
        readers: usize,
        held: Arc<AtomicUsize>,
    ) -> OverExec {
        OverExec {
            plan,
            over,
            held,
            state: Mutex::new(State {
                waiting: BTreeMap::new(),
                positions: vec![i64::MIN; readers],
                latest: vec![i64::MIN; readers],
                arrivals: 0,
                partitions: HashMap::default(),
            }),
        }
    }

    fn release(&self, state: &mut State) -> Result<Emitted> {
        let watermark = state.positions.iter().copied().min().unwrap_or(IDLE);
        let mut places = Vec::new();
        let mut batches: Vec<Arc<RecordBatch>> = Vec::new();
        let mut indices = Vec::new();
        while let Some(entry) = state.waiting.first_entry() {
            if entry.get().time >= watermark {
                break;
            }
            let (place, waiting) = entry.remove_entry();
            let index = match batches.iter().rposition(|b| Arc::ptr_eq(b, &waiting.batch)) {
                Some(index) => index,
                None => {
                    batches.push(waiting.batch);
                    batches.len() - 1
                }
            };
            indices.push((index, waiting.row));
            places.push(place);
        }
        self.held.store(state.waiting.len(), Ordering::Release);
        if places.is_empty() {
            return Ok(Emitted::default());
        }
        let batches: Vec<&RecordBatch> = batches.iter().map(|b| b.as_ref()).collect();
        let rows = interleave_record_batch(&batches, &indices)?;
        let values = self.compute(state, &rows, &places)?;
        let mut fields: Vec<Field> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = rows.columns().to_vec();
        for (function, values) in self.over.functions.iter().zip(values) {
            let values = ScalarValue::iter_to_array(values)?;
            fields.push(Field::new(
                function.aggregate.name(),
                values.data_type().clone(),
                true,
            ));
            columns.push(values);
        }
        let windowed = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        let windows = row_windows(&rows);
        let meta = row_times(&rows)?
            .into_iter()
            .enumerate()
            .map(|(row, timestamp)| RowMeta {
                timestamp,
                window: windows.as_ref().and_then(|w| w[row]),
                tombstone: false,
            })
            .collect();
        // The frames have taken the rows: a row whose projection fails is left out alone.
        Ok(Emitted::projected(&self.plan, &windowed, meta))
    }

    /// Each function's value for each of `rows` (in ORDER BY order; `places` says where
    /// each goes), updating the partitions' accumulators and frames.
    fn compute(
        &self,
        state: &mut State,
        rows: &RecordBatch,
        places: &[Place],
    ) -> Result<Vec<Vec<ScalarValue>>> {
        let functions = &self.over.functions;
        let args = functions
            .iter()
            .map(|f| {
                f.aggregate
                    .expressions()
                    .iter()
                    .map(|e| e.evaluate(rows)?.into_array(rows.num_rows()))
                    .collect::<datafusion::error::Result<Vec<ArrayRef>>>()
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let row_args = |f: usize, row: usize| -> Vec<ArrayRef> {
            args[f].iter().map(|a| a.slice(row, 1)).collect()
        };
        let mut values: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(places.len()); functions.len()];
        let mut start = 0;
        while start < places.len() {
            // Peers: rows of one partition with equal ORDER BY values, adjacent by `Place`.
            let (order, partition, _) = &places[start];
            let end = start
                + places[start..]
                    .iter()
                    .take_while(|(o, p, _)| o == order && p == partition)
                    .count();
            if !state.partitions.contains_key(partition.as_ref()) {
                state
                    .partitions
                    .insert(partition.clone(), Partition::new(functions)?);
            }
            let Some(state) = state.partitions.get_mut(partition.as_ref()) else {
                return Err(EngineError::Internal("an OVER partition vanished".into()));
            };
            for (f, function) in functions.iter().enumerate() {
                let accumulator = &mut state.accumulators[f];
                match function.frame {
                    Frame::AllRowsAndPeers => {
                        for row in start..end {
                            accumulator.update_batch(&row_args(f, row))?;
                        }
                        let value = accumulator.evaluate()?;
                        values[f].extend(std::iter::repeat_n(value, end - start));
                    }
                    Frame::AllRows => {
                        for row in start..end {
                            accumulator.update_batch(&row_args(f, row))?;
                            values[f].push(accumulator.evaluate()?);
                        }
                    }
                    Frame::Rows(preceding) => {
                        let frame = &mut state.frames[f];
                        for row in start..end {
                            let added = row_args(f, row);
                            accumulator.update_batch(&added)?;
                            frame.push_back(
                                added
                                    .iter()
                                    .map(|a| ScalarValue::try_from_array(a, 0))
                                    .collect::<datafusion::error::Result<_>>()?,
                            );
                            if frame.len() > preceding + 1 {
                                let Some(left) = frame.pop_front() else {
                                    continue;
                                };
                                let left = left
                                    .iter()
                                    .map(|v| v.to_array())
                                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                                accumulator.retract_batch(&left)?;
                            }
                            values[f].push(accumulator.evaluate()?);
                        }
                    }
                }
            }
            start = end;
        }
        Ok(values)
    }
}

impl StreamOperator for OverExec {
    fn name(&self) -> &'static str {
        "OverExec"
    }

    fn state_size(&self) -> usize {
        let state = self.state.lock();
        state.waiting.len() + state.partitions.len()
    }

    /// Takes in a batch decoded by the partition reader of `port`; emits the rows the watermark
    /// has passed.
    fn process(&self, port: Port, input: &Input) -> Result<Emitted> {
        let batch = Arc::new(input.batch.clone());
        let rows = batch.num_rows();
        let mut order = Vec::with_capacity(self.over.order_by.len());
        let mut fields = Vec::with_capacity(self.over.order_by.len());
        for (expr, descending) in &self.over.order_by {
            let column = super::evaluate(expr, &batch)?;
            fields.push(SortField::new_with_options(
                column.data_type().clone(),
                SortOptions {
                    descending: *descending,
                    nulls_first: true,
                },
            ));
            order.push(column);
        }
        let times = cast(&order[0], &DataType::Int64)?;
        let times = times.as_primitive::<Int64Type>();
        let order = RowConverter::new(fields)?.convert_columns(&order)?;
        let partitions = self
            .over
            .partition_by
            .iter()
            .map(|e| super::evaluate(e, &batch))
            .collect::<Result<Vec<_>>>()?;
        let partitions = RowKeys::new(&partitions)?;
        let mut state = self.state.lock();
        let latest = times.iter().flatten().max().unwrap_or(i64::MIN);
        if let Some(position) = state.positions.get_mut(port.reader) {
            *position = match *position {
                IDLE => latest,
                position => position.max(latest),
            };
        }
        if let Some(read) = state.latest.get_mut(port.reader) {
            *read = (*read).max(latest);
        }
        for row in 0..rows {
            state.arrivals += 1;
            let place = (
                order.row(row).data().into(),
                partitions.row(row).into(),
                state.arrivals,
            );
            let time = if times.is_valid(row) {
                times.value(row)
            } else {
                i64::MIN
            };
            let waiting = Waiting {
                batch: Arc::clone(&batch),
                row,
                time,
            };
            state.waiting.insert(place, waiting);
        }
        self.release(&mut state)
    }

    fn resume(&self, port: Port) {
        let mut state = self.state.lock();
        let read = state.latest.get(port.reader).copied();
        if let (Some(position), Some(read)) = (state.positions.get_mut(port.reader), read) {
            *position = read;
        }
    }

    /// The partition reader of `port` has read all there is: emits the rows the watermark, no
    /// longer held back by it, has passed.
    fn idle(&self, port: Port) -> Result<Emitted> {
        let mut state = self.state.lock();
        if let Some(position) = state.positions.get_mut(port.reader) {
            *position = IDLE;
        }
        self.release(&mut state)
    }
}

impl Partition {
    fn new(functions: &[OverFunction]) -> Result<Partition> {
        let accumulators = functions
            .iter()
            .map(|f| match f.frame {
                Frame::Rows(_) => f.aggregate.create_sliding_accumulator(),
                Frame::AllRows | Frame::AllRowsAndPeers => f.aggregate.create_accumulator(),
            })
            .collect::<datafusion::error::Result<_>>()?;
        Ok(Partition {
            accumulators,
            frames: functions.iter().map(|_| VecDeque::new()).collect(),
        })
    }
}
