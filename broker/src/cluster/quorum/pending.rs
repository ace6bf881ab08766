//! Proposals waiting for their index to commit: sans-IO, shared by the driver and the
//! simulation.
//!
//! A proposal is known by the index raft gave it and its [`ProposalId`]. When that index commits,
//! either the entry there carries the id (committed) or it does not (the proposal was dropped by a
//! leader change and another entry took its place): raft never commits an entry at a second index,
//! so in the second case it is certain the proposal will never commit.

use std::collections::BTreeMap;

use super::core::{CommittedEntry, ProposalId};

/// How a tracked proposal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// Committed (and applied by the caller just before) at this index.
    Committed(u64),
    /// Another entry committed at this index: the proposal never will.
    Lost(u64),
}

/// Tracked proposals, at most `capacity`.
///
/// Several proposals can wait on one index: a leader that lost its term and leads again reuses
/// the indexes of its uncommitted entries, yet an old entry may still commit through another
/// node that kept it. Whichever entry commits at the index decides all of them.
pub(crate) struct Pending<W> {
    by_index: BTreeMap<u64, Vec<(ProposalId, W)>>,
    len: usize,
    capacity: usize,
}

impl<W> Pending<W> {
    pub(crate) fn new(capacity: usize) -> Pending<W> {
        Pending {
            by_index: BTreeMap::new(),
            len: 0,
            capacity,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Tracks a proposal given `index`; hands `waiter` back when full.
    pub(crate) fn insert(&mut self, index: u64, id: ProposalId, waiter: W) -> Result<(), W> {
        if self.len >= self.capacity {
            return Err(waiter);
        }
        let waiting = self.by_index.entry(index).or_default();
        assert!(
            waiting.iter().all(|(other, _)| *other != id),
            "a proposal is tracked once"
        );
        waiting.push((id, waiter));
        self.len += 1;
        Ok(())
    }

    /// Resolves the proposals whose index is now committed: `committed` are the new entries with
    /// a payload, `applied` the highest committed index (entries without payload included).
    pub(crate) fn resolve(
        &mut self,
        committed: &[CommittedEntry],
        applied: u64,
    ) -> Vec<(W, Resolution)> {
        let mut resolved = Vec::new();
        for entry in committed {
            for (id, waiter) in self.by_index.remove(&entry.index).unwrap_or_default() {
                let resolution = if entry.proposal == Some(id) {
                    Resolution::Committed(entry.index)
                } else {
                    Resolution::Lost(entry.index)
                };
                resolved.push((waiter, resolution));
            }
        }
        // Still tracked at or below `applied`: an entry without payload (a new leader's) took
        // the index.
        let later = self.by_index.split_off(&(applied + 1));
        for (index, waiting) in std::mem::replace(&mut self.by_index, later) {
            for (_, waiter) in waiting {
                resolved.push((waiter, Resolution::Lost(index)));
            }
        }
        self.len -= resolved.len();
        resolved
    }

    /// Drops the waiters `keep` refuses (expired ones).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&W) -> bool) {
        for waiting in self.by_index.values_mut() {
            waiting.retain(|(_, waiter)| keep(waiter));
        }
        self.by_index.retain(|_, waiting| !waiting.is_empty());
        self.len = self.by_index.values().map(Vec::len).sum();
    }

    /// Hands back every waiter (the driver stops).
    pub(crate) fn drain(&mut self) -> Vec<W> {
        self.len = 0;
        std::mem::take(&mut self.by_index)
            .into_values()
            .flatten()
            .map(|(_, waiter)| waiter)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sequence: u64) -> ProposalId {
        ProposalId {
            node: 1,
            incarnation: 7,
            sequence,
        }
    }

    fn entry(index: u64, proposal: Option<ProposalId>) -> CommittedEntry {
        CommittedEntry {
            index,
            data: b"x".to_vec(),
            proposal,
        }
    }

    #[test]
    fn an_index_taken_by_another_entry_is_lost_and_a_full_tracker_refuses() {
        let mut pending = Pending::new(4);
        pending.insert(5, id(1), "a").expect("room");
        pending.insert(6, id(2), "b").expect("room");
        pending
            .insert(6, id(3), "b2")
            .expect("room: an index reused in a later term");
        pending.insert(9, id(4), "c").expect("room");
        assert_eq!(pending.insert(10, id(5), "d"), Err("d"));
        let resolved = pending.resolve(&[entry(5, Some(id(1))), entry(6, Some(id(3)))], 7);
        assert_eq!(
            resolved,
            vec![
                ("a", Resolution::Committed(5)),
                ("b", Resolution::Lost(6)),
                ("b2", Resolution::Committed(6))
            ]
        );
        // Index 9 committed without a payload (a new leader's empty entry).
        assert_eq!(pending.resolve(&[], 9), vec![("c", Resolution::Lost(9))]);
        assert_eq!(pending.len(), 0);
    }
}
