//! A partition's replication role on this broker, and the leader's view of its followers.
//!
//! Kafka's rules, kept in one place:
//! - The high watermark is the smallest log end offset over the in-sync replicas, the leader's
//!   own included. A follower whose log end offset the leader has not yet learned (just after
//!   it became leader) holds the high watermark where it is. It never moves back on a leader.
//! - While an in-sync set change is pending at the controller, the high watermark counts the
//!   larger of the two sets (Kafka's "maximal ISR"): a replica leaves the set only once the
//!   controller has recorded it, so a new leader elected from the recorded set has everything
//!   below the high watermark. A change stays pending until the controller decided it (the
//!   partition epoch it was asked at has passed), not merely until a proposal timed out: the
//!   record may still commit, and a member it adds must have been counted all along.
//! - The high watermark advances only while the in-sync set has at least
//!   `min.insync.replicas` members (KIP-966): records are committed only where acks=all could
//!   have acknowledged them.
//! - A follower is caught up when it fetched from the leader's log end offset, or from the log
//!   end offset the leader had at its previous fetch (Kafka's `lastCaughtUpTimeMs`). One not
//!   caught up for `replica.lag.time.max.ms` leaves the in-sync set; one that has reached the
//!   high watermark and the start of the leader's epoch joins it again.
//! - acks=all is refused (NOT_ENOUGH_REPLICAS) when fewer than `min.insync.replicas` members of
//!   the recorded set are still caught up and fetching within the session timeout: the leader
//!   does not wait for the controller to record their removal, which it cannot do at all when
//!   the stopped brokers took the metadata quorum with them.

use std::collections::BTreeMap;

/// What this broker is for one partition.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// A single-node broker: the only replica, so the high watermark is the log end offset.
    Sole,
    /// The leader of the partition in a cluster.
    Leader(Box<Leadership>),
    /// A follower of `leader` (or of nobody yet: [`crate::cluster::metadata::NO_LEADER`]).
    Follower { leader: i32, leader_epoch: i32 },
}

impl Role {
    /// The leader epoch this broker knows, -1 for a single-node broker.
    pub fn leader_epoch(&self) -> i32 {
        match self {
            Role::Sole => -1,
            Role::Leader(leadership) => leadership.leader_epoch,
            Role::Follower { leader_epoch, .. } => *leader_epoch,
        }
    }
}

/// The leader's state of a partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Leadership {
    /// This broker.
    pub broker: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    /// The in-sync set as the controller last recorded it.
    pub isr: Vec<i32>,
    /// A change of the in-sync set sent to the controller and not yet recorded.
    pub pending_isr: Option<Vec<i32>>,
    pub followers: BTreeMap<i32, FollowerProgress>,
    pub rules: InSyncRules,
    /// The log end offset when this broker became leader: the start of its epoch.
    pub epoch_start_offset: i64,
}

/// The settings the in-sync set is kept by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InSyncRules {
    /// `min.insync.replicas` of the topic.
    pub min_insync: usize,
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the set.
    pub lag_max_ms: i64,
    /// `broker.session.timeout.ms`: a follower that has not fetched at all for this long no
    /// longer counts for acks=all (the controller would fence it, if it could).
    pub silence_max_ms: i64,
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FollowerProgress {
    /// The follower's log end offset (its last fetch offset); -1 until it fetched.
    pub log_end_offset: i64,
    pub last_fetch_ms: i64,
    /// The leader's log end offset at the follower's last fetch.
    pub last_fetch_leader_end: i64,
    pub last_caught_up_ms: i64,
}

impl Leadership {
    /// A new leadership: every follower unknown, and counted as caught up now, so none leaves
    /// the in-sync set before it had `replica.lag.time.max.ms` to fetch.
    pub fn new(
        broker: i32,
        (leader_epoch, partition_epoch): (i32, i32),
        replicas: &[i32],
        isr: &[i32],
        rules: InSyncRules,
        (log_end_offset, now_ms): (i64, i64),
    ) -> Leadership {
        let followers = replicas
            .iter()
            .filter(|r| **r != broker)
            .map(|r| {
                let progress = FollowerProgress {
                    log_end_offset: -1,
                    last_fetch_ms: now_ms,
                    last_fetch_leader_end: log_end_offset,
                    last_caught_up_ms: now_ms,
                };
                (*r, progress)
            })
            .collect();
        Leadership {
            broker,
            leader_epoch,
            partition_epoch,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            pending_isr: None,
            followers,
            rules,
            epoch_start_offset: log_end_offset,
        }
    }

    /// The recorded in-sync set and any member a pending change adds.
    fn maximal_isr(&self) -> Vec<i32> {
        let mut set = self.isr.clone();
        for r in self.pending_isr.iter().flatten() {
            if !set.contains(r) {
                set.push(*r);
            }
        }
        set
    }

    /// The high watermark the in-sync set allows, or None while it cannot be computed (a
    /// member's log end offset is unknown) or may not advance (too few in sync).
    pub fn high_watermark(&self, leader_end: i64) -> Option<i64> {
        if self.isr.len() < self.rules.min_insync {
            return None;
        }
        let mut low = leader_end;
        for r in self.maximal_isr() {
            if r == self.broker {
                continue;
            }
            let end = self.followers.get(&r).map_or(-1, |f| f.log_end_offset);
            if end < 0 {
                return None;
            }
            low = low.min(end);
        }
        Some(low)
    }

    /// Records a follower's fetch from `fetch_offset` while the leader's log ends at
    /// `leader_end`. Returns false for a broker that is not a replica.
    pub fn record_fetch(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        leader_end: i64,
        now_ms: i64,
    ) -> bool {
        let Some(progress) = self.followers.get_mut(&replica) else {
            return false;
        };
        if fetch_offset >= leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= progress.last_fetch_leader_end {
            progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
        }
        progress.log_end_offset = fetch_offset;
        progress.last_fetch_leader_end = leader_end;
        progress.last_fetch_ms = now_ms;
        true
    }

    /// Whether in-sync member `replica` is still caught up: the leader itself, or a follower
    /// caught up within `replica.lag.time.max.ms`.
    fn still_caught_up(&self, replica: i32, now_ms: i64) -> bool {
        replica == self.broker
            || self
                .followers
                .get(&replica)
                .is_some_and(|f| now_ms - f.last_caught_up_ms <= self.rules.lag_max_ms)
    }

    /// How many members of the recorded in-sync set are still there for acks=all: the leader,
    /// and followers still caught up that fetched within `broker.session.timeout.ms`. Fewer
    /// than the recorded set while the leader's request to drop the others is on its way, or
    /// cannot be recorded at all (the controller's quorum went down with the stopped brokers).
    pub fn caught_up_in_sync(&self, now_ms: i64) -> usize {
        self.isr
            .iter()
            .filter(|r| {
                self.still_caught_up(**r, now_ms)
                    && self
                        .followers
                        .get(r)
                        .is_none_or(|f| now_ms - f.last_fetch_ms <= self.rules.silence_max_ms)
            })
            .count()
    }

    /// The in-sync set the leader should ask for now, if it differs from the recorded one and
    /// no change is pending: lagging followers out, caught-up ones in.
    pub fn wanted_isr(&self, high_watermark: i64, now_ms: i64) -> Option<Vec<i32>> {
        if self.pending_isr.is_some() {
            return None;
        }
        let mut wanted: Vec<i32> = self
            .isr
            .iter()
            .copied()
            .filter(|r| self.still_caught_up(*r, now_ms))
            .collect();
        for (r, f) in &self.followers {
            let caught_up = f.log_end_offset >= high_watermark
                && f.log_end_offset >= self.epoch_start_offset
                && now_ms - f.last_caught_up_ms <= self.rules.lag_max_ms;
            if !wanted.contains(r) && caught_up {
                wanted.push(*r);
            }
        }
        (wanted != self.isr).then_some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: InSyncRules = InSyncRules {
        min_insync: 2,
        lag_max_ms: 30_000,
        silence_max_ms: 3_000,
    };

    fn leader() -> Leadership {
        Leadership::new(1, (5, 7), &[1, 2, 3], &[1, 2, 3], RULES, (100, 0))
    }

    /// The high watermark waits for every in-sync follower, then is their minimum.
    #[test]
    fn high_watermark_is_the_minimum_over_the_in_sync_set() {
        let mut l = leader();
        assert_eq!(l.high_watermark(120), None, "followers unknown");
        l.record_fetch(2, 110, 120, 10);
        assert_eq!(l.high_watermark(120), None, "3 unknown");
        l.record_fetch(3, 105, 120, 10);
        assert_eq!(l.high_watermark(120), Some(105));
        l.isr = vec![1, 2];
        assert_eq!(l.high_watermark(120), Some(110));
        l.isr = vec![1];
        assert_eq!(l.high_watermark(120), None, "below min.insync.replicas");
    }

    /// A pending removal still counts: the controller may not have recorded it yet.
    #[test]
    fn a_pending_change_counts_the_larger_set() {
        let mut l = leader();
        l.record_fetch(2, 110, 120, 10);
        l.record_fetch(3, 50, 120, 10);
        l.isr = vec![1, 2];
        l.pending_isr = Some(vec![1, 2, 3]);
        assert_eq!(l.high_watermark(120), Some(50));
    }

    /// A follower that stops fetching leaves after the lag limit; it rejoins once it has
    /// reached the high watermark and the start of the leader's epoch.
    #[test]
    fn lagging_followers_leave_and_caught_up_ones_rejoin() {
        let mut l = leader();
        l.record_fetch(2, 120, 120, 1_000);
        l.record_fetch(3, 90, 120, 1_000);
        assert_eq!(l.wanted_isr(90, 1_000), None);
        l.record_fetch(2, 120, 120, 31_000);
        assert_eq!(l.wanted_isr(90, 31_001), Some(vec![1, 2]));
        l.isr = vec![1, 2];
        l.record_fetch(3, 99, 120, 31_000);
        assert_eq!(l.wanted_isr(120, 31_000), None, "3 below the epoch start");
        l.record_fetch(3, 120, 120, 31_100);
        assert_eq!(l.wanted_isr(120, 31_100), Some(vec![1, 2, 3]));
        l.pending_isr = Some(vec![1, 2, 3]);
        assert_eq!(l.wanted_isr(120, 31_100), None, "one change at a time");
    }

    /// Kafka's caught-up rule: fetching from where the leader's log ended at the previous
    /// fetch counts as caught up as of that previous fetch.
    #[test]
    fn caught_up_as_of_the_previous_fetch() {
        let mut l = leader();
        l.record_fetch(2, 100, 120, 1_000);
        assert_eq!(l.followers[&2].last_caught_up_ms, 0);
        l.record_fetch(2, 120, 150, 2_000);
        assert_eq!(l.followers[&2].last_caught_up_ms, 1_000);
        l.record_fetch(2, 150, 150, 3_000);
        assert_eq!(l.followers[&2].last_caught_up_ms, 3_000);
    }

    /// acks=all stops counting a follower once it lags for `replica.lag.time.max.ms` or has
    /// not fetched for the session timeout, before any controller recorded its removal.
    #[test]
    fn silent_or_lagging_followers_stop_counting_for_acks_all() {
        let mut l = leader();
        assert_eq!(l.caught_up_in_sync(0), 3);
        l.record_fetch(2, 100, 100, 2_000);
        l.record_fetch(3, 100, 100, 2_000);
        assert_eq!(l.caught_up_in_sync(4_000), 3);
        l.record_fetch(2, 100, 100, 4_000);
        assert_eq!(l.caught_up_in_sync(5_500), 2, "3 silent for 3.5 s");
        for now in (5_000..40_000).step_by(1_000) {
            l.record_fetch(3, 100, 120, now);
        }
        assert_eq!(
            l.caught_up_in_sync(40_000),
            1,
            "3 fetching but lagging, 2 silent"
        );
        l.isr = vec![1, 3];
        assert_eq!(
            l.caught_up_in_sync(40_000),
            1,
            "only the recorded set counts"
        );
    }
}
