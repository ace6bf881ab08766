//! Keeping a stateful query's partition tasks together in event time.
//!
//! A query reads each source partition in its own task, and its windows and joins share one
//! stream time across them (the largest timestamp seen). A task that runs ahead (it was
//! scheduled more, or its partition was read first) pushes stream time past the records the
//! other tasks have yet to read, and those become late: dropped by a window's grace period
//! or a join's. Kafka Streams avoids this by handing a task's records over in timestamp
//! order across its partitions; [`Alignment`] does the same for concurrent tasks: a task
//! whose next records are more than [`SLACK_MS`] ahead of another task's waits for it, and
//! of fetched records a task processes those up to that bound, then waits again.
//!
//! Each task publishes the timestamp its next records start at. A task that has read all
//! there is (its fetch came back empty) is idle and holds nobody back; a task not yet
//! heard from holds everybody back until its first fetch. The task with the smallest
//! timestamp never waits, so some task always makes progress.
//!
//! Some tasks lead: a stream-table join's table side. A stream record joins the table as of
//! its timestamp, so a stream task gets no slack against a leading task: it waits while the
//! table's next records are at or before its own (the table wins ties, as Kafka Streams'
//! table bootstrap does), and the leading task, the smallest, still always proceeds.

use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::Notify;

use crate::parser::SourceKind;
use crate::query::{AggregatePlan, Operator, PersistentPlan};

/// How far in event time a task may run ahead of the slowest busy task.
pub(super) const SLACK_MS: i64 = 1_000;

/// A task's position when it has not fetched yet: everybody waits for it.
const STARTING: i64 = i64::MIN;
/// A task's position when it has read all there is: it holds nobody back.
const IDLE: i64 = i64::MAX;

/// The event-time positions of one query's partition tasks.
pub(super) struct Alignment {
    positions: Vec<AtomicI64>,
    /// Per task: whether its records go before other tasks' of the same time.
    leads: Vec<bool>,
    moved: Notify,
}

impl Alignment {
    /// The alignment of tasks of which those marked `true` lead.
    pub(super) fn new(leads: Vec<bool>) -> Alignment {
        Alignment {
            positions: leads.iter().map(|_| AtomicI64::new(STARTING)).collect(),
            leads,
            moved: Notify::new(),
        }
    }

    /// Task `task`'s next records start at `timestamp`.
    pub(super) fn at(&self, task: usize, timestamp: i64) {
        self.set(task, timestamp.clamp(STARTING, IDLE - 1));
    }

    /// Task `task` has read all there is for now.
    pub(super) fn idle(&self, task: usize) {
        self.set(task, IDLE);
    }

    fn set(&self, task: usize, position: i64) {
        if self.positions[task].swap(position, Ordering::AcqRel) != position {
            self.moved.notify_waiters();
        }
    }

    /// The latest timestamp task `task` may process now: the slack past the slowest other
    /// task, just before a leading task's position (`i64::MAX` when every other task is idle).
    fn bound(&self, task: usize) -> i64 {
        self.positions
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != task)
            .map(|(other, p)| match p.load(Ordering::Acquire) {
                IDLE => i64::MAX,
                p if self.leads[other] && !self.leads[task] => p.saturating_sub(1),
                p => p.saturating_add(SLACK_MS),
            })
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Whether task `task`, at `timestamp`, is within the slack of every other task.
    fn may_proceed(&self, task: usize, timestamp: i64) -> bool {
        timestamp <= self.bound(task)
    }

    /// Publishes that task `task`'s next records start at `timestamp` and waits until the
    /// other tasks are close enough behind it; then the latest timestamp it may process.
    pub(super) async fn wait_turn(&self, task: usize, timestamp: i64) -> i64 {
        self.at(task, timestamp);
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if self.may_proceed(task, timestamp) {
                return self.bound(task);
            }
            moved.await;
        }
    }
}

/// The tasks writing a side's records into the repartition topic a task reads. A task that
/// finds its repartition partition empty is not idle while they still have records to
/// route: they may be on their way. It takes their position instead (read before its fetch,
/// so what they routed before that is in what the fetch returns), like a watermark through
/// the exchange, and is idle only when they are. A stream task then waits for a table's
/// records of an earlier time, whichever task reaches the exchange first.
#[derive(Clone)]
pub(super) struct Upstream {
    pub(super) alignment: std::sync::Arc<Alignment>,
    pub(super) tasks: Vec<usize>,
}

impl Upstream {
    /// The slowest upstream task's position: `None` when every one has read all there is.
    pub(super) fn position(&self) -> Option<i64> {
        let slowest = self
            .tasks
            .iter()
            .map(|t| self.alignment.positions[*t].load(Ordering::Acquire))
            .min()
            .unwrap_or(IDLE);
        (slowest != IDLE).then_some(slowest)
    }
}

/// Whether `plan`'s side `side` leads: the table of a stream-table join.
pub(super) fn leads(plan: &PersistentPlan, side: usize) -> bool {
    let join = match &plan.operator {
        Operator::Join(join) => join,
        Operator::Aggregate(AggregatePlan {
            join: Some(join), ..
        }) => join,
        _ => return false,
    };
    let kinds = join.sides.each_ref().map(|s| s.source.kind);
    !join.table_as_rows && kinds == [SourceKind::Stream, SourceKind::Table] && side == 1
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_slowest_task_proceeds_and_others_wait_for_it() {
        let align = Alignment::new(vec![false; 3]);
        align.at(0, 10_000);
        align.at(1, 20_000);
        // Task 2 has not fetched yet: nobody proceeds.
        assert!(!align.may_proceed(0, 10_000));
        align.at(2, 10_500);
        assert!(align.may_proceed(0, 10_000));
        assert!(align.may_proceed(2, 10_500));
        assert!(!align.may_proceed(1, 20_000));
        align.idle(0);
        align.idle(2);
        assert!(align.may_proceed(1, 20_000));
    }

    #[test]
    fn a_stream_task_waits_for_a_leading_table_task_of_the_same_time() {
        // Task 0 reads a stream, task 1 the table it joins.
        let align = Alignment::new(vec![false, true]);
        align.at(0, 10_000);
        align.at(1, 10_000);
        assert!(!align.may_proceed(0, 10_000));
        assert!(align.may_proceed(1, 10_000));
        // The table runs ahead of the stream by the slack, and no further.
        assert!(align.may_proceed(1, 10_000 + SLACK_MS));
        assert!(!align.may_proceed(1, 10_001 + SLACK_MS));
        align.at(1, 10_001);
        assert!(align.may_proceed(0, 10_000));
        assert!(!align.may_proceed(0, 10_001));
        align.idle(1);
        assert!(align.may_proceed(0, 99_000));
    }

    #[test]
    fn a_task_behind_an_exchange_takes_its_routing_tasks_position() {
        let routing = std::sync::Arc::new(Alignment::new(vec![false, true, true]));
        let upstream = Upstream {
            alignment: std::sync::Arc::clone(&routing),
            tasks: vec![1, 2],
        };
        assert_eq!(upstream.position(), Some(STARTING));
        routing.at(1, 5_000);
        routing.idle(2);
        assert_eq!(upstream.position(), Some(5_000));
        routing.idle(0); // another side's task
        routing.idle(1);
        assert_eq!(upstream.position(), None);
    }

    #[tokio::test]
    async fn a_waiting_task_wakes_when_the_slow_one_catches_up() {
        let align = std::sync::Arc::new(Alignment::new(vec![false; 2]));
        align.at(1, 0);
        let ahead = {
            let align = std::sync::Arc::clone(&align);
            tokio::spawn(async move { align.wait_turn(0, 60_000).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!ahead.is_finished());
        align.at(1, 59_500);
        let bound = tokio::time::timeout(Duration::from_secs(1), ahead)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(bound, 59_500 + SLACK_MS);
    }
}
