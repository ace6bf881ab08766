//! What goes through each operator of a running query: records in and out, and the size of
//! its state, summed over the operator's task groups (DESCRIBE EXTENDED shows them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::operator::StreamOperator;

/// One operator's figures, as DESCRIBE EXTENDED shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorStats {
    /// The operator: `SourceExec pageviews`, `AggregateExec`, ... (a stage's are prefixed
    /// with the stage, `S1 JoinExec`).
    pub operator: String,
    pub records_in: u64,
    pub records_out: u64,
    /// Entries in its state (groups, kept rows); `None` for stateless operators.
    pub state_size: Option<u64>,
}

/// The counters of one operator.
#[derive(Default)]
pub struct OperatorCounters {
    records_in: AtomicU64,
    records_out: AtomicU64,
    /// The operator of each of its task groups (one per partition number when partitioned),
    /// asked for its state's size when DESCRIBE EXTENDED runs; gone once its tasks end.
    groups: Mutex<Vec<Weak<dyn StreamOperator>>>,
}

impl OperatorCounters {
    pub fn add(&self, records_in: usize, records_out: usize) {
        self.records_in
            .fetch_add(records_in as u64, Ordering::Relaxed);
        self.records_out
            .fetch_add(records_out as u64, Ordering::Relaxed);
    }

    /// Counts `operator`'s state as one of its task groups'.
    pub(crate) fn register(&self, operator: &Arc<dyn StreamOperator>) {
        let mut groups = self.groups.lock();
        groups.retain(|g| g.strong_count() > 0);
        groups.push(Arc::downgrade(operator));
    }

    /// The summed state size of its running groups; `None` if none keeps state.
    fn state_size(&self) -> Option<u64> {
        let groups = self.groups.lock();
        let stateful = groups
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|g| g.stateful());
        stateful.fold(None, |sum, g| {
            Some(sum.unwrap_or(0) + g.state_size() as u64)
        })
    }
}

/// The operators of one query (and of its stages), in the order they were first counted.
#[derive(Default)]
pub struct QueryMetrics {
    /// (the stage it belongs to, or "" for the query itself; its name; its counters)
    operators: Mutex<Vec<(String, String, Arc<OperatorCounters>)>>,
}

impl QueryMetrics {
    /// The counters of operator `name`: the same ones each time the query's tasks start
    /// again, so the figures add up over restarts.
    pub fn operator(&self, stage: &str, name: &str) -> Arc<OperatorCounters> {
        let mut operators = self.operators.lock();
        if let Some((_, _, counters)) = operators.iter().find(|(s, n, _)| s == stage && n == name) {
            return Arc::clone(counters);
        }
        let counters = Arc::new(OperatorCounters::default());
        operators.push((stage.to_string(), name.to_string(), Arc::clone(&counters)));
        counters
    }

    pub fn snapshot(&self) -> Vec<OperatorStats> {
        self.operators
            .lock()
            .iter()
            .map(|(stage, name, counters)| OperatorStats {
                operator: match stage.is_empty() {
                    true => name.clone(),
                    false => format!("{stage} {name}"),
                },
                records_in: counters.records_in.load(Ordering::Relaxed),
                records_out: counters.records_out.load(Ordering::Relaxed),
                state_size: counters.state_size(),
            })
            .collect()
    }
}
