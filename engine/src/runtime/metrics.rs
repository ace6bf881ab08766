//! What goes through each operator of a running query: records in and out, and the size of
//! its state, summed over the operator's task groups (DESCRIBE EXTENDED shows them).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

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
    /// The state size of each of its task groups, by group.
    state: Mutex<Option<BTreeMap<usize, usize>>>,
}

impl OperatorCounters {
    pub fn add(&self, records_in: usize, records_out: usize) {
        self.records_in
            .fetch_add(records_in as u64, Ordering::Relaxed);
        self.records_out
            .fetch_add(records_out as u64, Ordering::Relaxed);
    }

    pub fn set_state_size(&self, group: usize, size: usize) {
        self.state
            .lock()
            .get_or_insert_with(BTreeMap::new)
            .insert(group, size);
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

    /// A stage's tasks (or the query's own, "") start again, rebuilding their state: its
    /// state sizes start afresh.
    pub fn restarted(&self, stage: &str) {
        for (_, _, counters) in self.operators.lock().iter().filter(|(s, _, _)| s == stage) {
            counters.state.lock().take();
        }
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
                state_size: counters
                    .state
                    .lock()
                    .as_ref()
                    .map(|groups| groups.values().sum::<usize>() as u64),
            })
            .collect()
    }
}
