//! The interface every streaming operator implements, and the operator a query's tasks run.
//!
//! A task reads one partition, decodes a batch and hands it to its group's operator on a
//! [`Port`] (which side of a join, which reader of the group); the operator returns the rows
//! to emit ([`Emitted`]). An operator whose output waits for event time to move (OVER's
//! watermark) is told when a reader has nothing to read ([`StreamOperator::idle`]). Stateful
//! operators say how much state they hold, for DESCRIBE EXTENDED, and have the hooks a
//! checkpoint would use ([`StreamOperator::snapshot`], [`StreamOperator::restore`]): today no
//! operator snapshots its state, and a restarted query rebuilds it by reading its input again
//! from the start up to its committed offsets.

use std::sync::Arc;

use super::metrics::OperatorCounters;
use super::{AggregateExec, Emitted, FilterProjectExec, Input, JoinExec, OverExec};
use crate::error::{EngineError, Result};
use crate::query::{Operator, PersistentPlan};

/// Where a batch comes from: which input of the operator (a join's side, 0 or 1), and which
/// of its group's partition readers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Port {
    pub side: usize,
    pub reader: usize,
}

/// An operator's state as a checkpoint would keep it.
#[allow(dead_code)] // a hook for durable state: nothing takes snapshots yet
pub(crate) type Snapshot = Vec<u8>;

/// One streaming operator.
pub(crate) trait StreamOperator: Send + Sync {
    /// Its name in EXPLAIN and DESCRIBE EXTENDED.
    fn name(&self) -> &'static str;

    /// Takes a decoded batch arriving on `port`; the rows to emit, in order.
    fn process(&self, port: Port, input: &Input) -> Result<Emitted>;

    /// The reader of `port` has read all there is for now: what that releases (rows waiting
    /// for the watermark it held back).
    fn idle(&self, _port: Port) -> Result<Emitted> {
        Ok(Emitted::default())
    }

    /// The reader of `port`, idle before, has records on their way (a query writing its
    /// topic is at work): it holds the watermark back again, from where it was.
    fn resume(&self, _port: Port) {}

    /// Whether it keeps state across batches: a restarted query rebuilds that state from its
    /// input before it emits again.
    fn stateful(&self) -> bool {
        true
    }

    /// How many entries its state holds now (groups, kept rows, waiting rows).
    fn state_size(&self) -> usize {
        0
    }

    /// Its state, for a checkpoint; `None` when it has no snapshot and is rebuilt by
    /// replaying its input (every operator, until durable state).
    #[allow(dead_code)] // a hook for durable state: nothing takes snapshots yet
    fn snapshot(&self) -> Option<Snapshot> {
        None
    }

    /// Takes back a state [`StreamOperator::snapshot`] gave.
    #[allow(dead_code)] // a hook for durable state: nothing takes snapshots yet
    fn restore(&self, _snapshot: Snapshot) -> Result<()> {
        Err(EngineError::Internal(format!(
            "the {} operator restores its state by replaying its input, not from a snapshot",
            self.name()
        )))
    }
}

/// The operator of a group of tasks: the plan's, lowered from [`Operator`].
pub(crate) fn lower(
    plan: &Arc<PersistentPlan>,
    readers: usize,
    held: &Arc<std::sync::atomic::AtomicUsize>,
) -> Arc<dyn StreamOperator> {
    match &plan.operator {
        Operator::FilterProject => Arc::new(FilterProjectExec::new(Arc::clone(plan))),
        Operator::Aggregate(aggregate) => {
            let exec = AggregateExec::new(Arc::clone(plan), aggregate.clone());
            match &aggregate.join {
                Some(join) => Arc::new(JoinThenAggregate {
                    join: JoinExec::new(Arc::clone(plan), join.clone()),
                    aggregate: exec,
                }),
                None => Arc::new(exec),
            }
        }
        Operator::Join(join) => Arc::new(JoinExec::new(Arc::clone(plan), join.clone())),
        Operator::Over(over) => Arc::new(OverExec::new(
            Arc::clone(plan),
            over.clone(),
            readers,
            Arc::clone(held),
        )),
    }
}

/// An aggregation over a join's rows: the join's output feeds the aggregate.
struct JoinThenAggregate {
    join: JoinExec,
    aggregate: AggregateExec,
}

impl StreamOperator for JoinThenAggregate {
    fn name(&self) -> &'static str {
        "JoinThenAggregate"
    }

    fn process(&self, port: Port, input: &Input) -> Result<Emitted> {
        // The join's state has taken the rows: what fails from here is left out.
        let (joined, mut failures) = self.join.process_for_aggregate(port.side, input)?;
        let mut emitted = match joined {
            Some(joined) => Emitted::or_failure(self.aggregate.process(port, &joined)),
            None => Emitted::default(),
        };
        emitted.failures.append(&mut failures);
        Ok(emitted)
    }

    fn state_size(&self) -> usize {
        self.join.state_size() + self.aggregate.state_size()
    }
}

/// Counts what goes through an operator: records in and out (its state's size is asked for
/// when wanted, see [`OperatorCounters::register`]).
pub(crate) struct Counted {
    operator: Arc<dyn StreamOperator>,
    counters: Arc<OperatorCounters>,
}

impl Counted {
    pub(super) fn new(operator: Arc<dyn StreamOperator>, counters: Arc<OperatorCounters>) -> Self {
        counters.register(&operator);
        Counted { operator, counters }
    }

    pub(super) fn stateful(&self) -> bool {
        self.operator.stateful()
    }

    pub(super) fn process(&self, port: Port, input: &Input) -> Result<Emitted> {
        let emitted = self.operator.process(port, input);
        self.count(input.batch.num_rows(), emitted.as_ref().ok());
        emitted
    }

    pub(super) fn resume(&self, port: Port) {
        self.operator.resume(port);
    }

    pub(super) fn idle(&self, port: Port) -> Result<Emitted> {
        let emitted = self.operator.idle(port);
        self.count(0, emitted.as_ref().ok());
        emitted
    }

    fn count(&self, rows_in: usize, emitted: Option<&Emitted>) {
        let rows_out = emitted.map_or(0, |e| e.meta.len());
        self.counters.add(rows_in, rows_out);
    }
}
