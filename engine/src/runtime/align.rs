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

use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::Notify;

/// How far in event time a task may run ahead of the slowest busy task.
pub(super) const SLACK_MS: i64 = 1_000;

/// A task's position when it has not fetched yet: everybody waits for it.
const STARTING: i64 = i64::MIN;
/// A task's position when it has read all there is: it holds nobody back.
const IDLE: i64 = i64::MAX;

/// The event-time positions of one query's partition tasks.
pub(super) struct Alignment {
    positions: Vec<AtomicI64>,
    moved: Notify,
}

impl Alignment {
    pub(super) fn new(tasks: usize) -> Alignment {
        Alignment {
            positions: (0..tasks).map(|_| AtomicI64::new(STARTING)).collect(),
            moved: Notify::new(),
        }
    }

    /// Task `task`'s next records start at `timestamp`.
    pub(super) fn at(&self, task: usize, timestamp: i64) {
        self.set(task, timestamp.clamp(STARTING + 1, IDLE - 1));
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
    /// task (`i64::MAX` when every other task is idle).
    fn bound(&self, task: usize) -> i64 {
        let slowest = self
            .positions
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != task)
            .map(|(_, p)| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(IDLE);
        match slowest {
            IDLE => i64::MAX,
            slowest => slowest.saturating_add(SLACK_MS),
        }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_slowest_task_proceeds_and_others_wait_for_it() {
        let align = Alignment::new(3);
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

    #[tokio::test]
    async fn a_waiting_task_wakes_when_the_slow_one_catches_up() {
        let align = std::sync::Arc::new(Alignment::new(2));
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
