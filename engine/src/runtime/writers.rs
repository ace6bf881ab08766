//! Which of the engine's running queries write which topics, and whether they are at work.
//!
//! A partition task that fetches nothing is idle: it holds nobody back in event time, and an
//! OVER window's watermark passes it ([`super::align`], [`super::over`]). When the topic it
//! reads is another query's output (a query over a query, or a stage of its own query), an
//! empty fetch may only mean that the writer has not written yet: taken as idle, the reader
//! lets the watermark pass rows the writer is about to write, and they come late. So a task
//! is idle only when no query writing its topic is busy, and a query is busy while one of its
//! tasks is: it has records in hand, or waits for a writer of its own topic. Writers write
//! before their tasks go idle, and a reader asks before it fetches: when it hears that no
//! writer is busy, what they wrote is in what its fetch returns.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::common::HashMap;
use parking_lot::Mutex;

/// The engine's running writers, by the topic they write.
#[derive(Default)]
pub struct Writers {
    topics: Mutex<HashMap<String, Vec<Arc<Activity>>>>,
}

/// One query's (or stage's) activity: how many of its tasks are busy.
#[derive(Default)]
pub(crate) struct Activity {
    busy: AtomicUsize,
}

impl Writers {
    /// `activity` writes `topic` until the registration is dropped.
    fn register(self: &Arc<Self>, topic: &str, activity: &Arc<Activity>) -> Writing {
        let mut topics = self.topics.lock();
        topics
            .entry(topic.to_string())
            .or_default()
            .push(Arc::clone(activity));
        Writing {
            writers: Arc::clone(self),
            topic: topic.to_string(),
            activity: Arc::clone(activity),
        }
    }

    /// Whether a writer of `topic` other than `own` is busy.
    pub(crate) fn busy(&self, topic: &str, own: &Arc<Activity>) -> bool {
        let topics = self.topics.lock();
        topics.get(topic).is_some_and(|writers| {
            writers
                .iter()
                .any(|w| !Arc::ptr_eq(w, own) && w.busy.load(Ordering::Acquire) > 0)
        })
    }
}

/// A registration of [`Writers::register`]: the topic stops being written when it is dropped.
pub(crate) struct Writing {
    writers: Arc<Writers>,
    topic: String,
    activity: Arc<Activity>,
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut topics = self.writers.topics.lock();
        if let Some(writers) = topics.get_mut(&self.topic) {
            if let Some(at) = writers.iter().position(|w| Arc::ptr_eq(w, &self.activity)) {
                writers.swap_remove(at);
            }
            if writers.is_empty() {
                topics.remove(&self.topic);
            }
        }
    }
}

/// A query's (or a stage's) place among the writers: its activity, registered for the topic
/// it writes while it runs, and busy from its start until its tasks have started (so that a
/// query started after it never finds it idle before it has read anything).
pub(crate) struct QueryActivity {
    activity: Arc<Activity>,
    starting: Mutex<Option<TaskActivity>>,
    _writing: Option<Writing>,
}

impl QueryActivity {
    pub(crate) fn new(writers: &Arc<Writers>, writes: Option<&str>) -> QueryActivity {
        let activity = Arc::new(Activity::default());
        QueryActivity {
            starting: Mutex::new(Some(TaskActivity::new(&activity))),
            _writing: writes.map(|topic| writers.register(topic, &activity)),
            activity,
        }
    }

    /// A task of the query: busy until it says otherwise.
    pub(crate) fn task(&self) -> TaskActivity {
        TaskActivity::new(&self.activity)
    }

    /// Its tasks have started: they are busy or idle on their own from now.
    pub(crate) fn started(&self) {
        self.starting.lock().take();
    }
}

/// One task's part in its query's [`Activity`]: busy from its start until it is idle, and
/// again when it has records; not busy once dropped.
pub(crate) struct TaskActivity {
    activity: Arc<Activity>,
    busy: AtomicBool,
}

impl TaskActivity {
    pub(crate) fn new(activity: &Arc<Activity>) -> TaskActivity {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        TaskActivity {
            activity: Arc::clone(activity),
            busy: AtomicBool::new(true),
        }
    }

    /// The query's activity, to tell it from other writers.
    pub(crate) fn query(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Marks the task busy or idle; whether it was busy.
    pub(crate) fn set_busy(&self, busy: bool) -> bool {
        let was = self.busy.swap(busy, Ordering::AcqRel);
        match (was, busy) {
            (false, true) => self.activity.busy.fetch_add(1, Ordering::AcqRel),
            (true, false) => self.activity.busy.fetch_sub(1, Ordering::AcqRel),
            _ => 0,
        };
        was
    }
}

impl Drop for TaskActivity {
    fn drop(&mut self) {
        self.set_busy(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_waits_for_busy_writers_of_its_topic_only() {
        let writers = Arc::new(Writers::default());
        let (writer, reader) = (Arc::new(Activity::default()), Arc::new(Activity::default()));
        let registration = writers.register("t", &writer);
        assert!(!writers.busy("t", &reader), "no task started yet");
        let task = TaskActivity::new(&writer);
        assert!(writers.busy("t", &reader));
        assert!(!writers.busy("other", &reader));
        assert!(
            !writers.busy("t", &writer),
            "a query does not wait for itself"
        );
        task.set_busy(false);
        assert!(!writers.busy("t", &reader));
        task.set_busy(true);
        assert!(writers.busy("t", &reader));
        drop(task);
        assert!(!writers.busy("t", &reader), "an ended task is not busy");
        let _again = TaskActivity::new(&writer);
        drop(registration);
        assert!(
            !writers.busy("t", &reader),
            "a stopped query writes nothing"
        );
    }

    #[test]
    fn a_query_is_busy_from_its_start_until_its_tasks_are_idle() {
        let writers = Arc::new(Writers::default());
        let reader = Arc::new(Activity::default());
        let query = QueryActivity::new(&writers, Some("t"));
        assert!(writers.busy("t", &reader), "busy before its tasks run");
        let task = query.task();
        query.started();
        assert!(writers.busy("t", &reader));
        assert!(task.set_busy(false));
        assert!(!writers.busy("t", &reader));
        drop(query);
        assert!(!task.set_busy(true), "it was idle");
        assert!(
            !writers.busy("t", &reader),
            "a dropped query writes nothing"
        );
    }
}
