//! The metadata group's Raft log, hard state and snapshot, in memory.
//!
//! [`MetaStorage`] is what raft-rs reads through its `Storage` trait. It is also the *durable
//! image*: every change the core makes to it is announced as a [`PersistDelta`] effect, and a
//! driver makes that delta durable before it carries out the effects that follow it (the server
//! through its group commit; the simulator by applying the delta to the copy that survives a
//! crash). A restart rebuilds the core from that durable copy with [`MetaStorage::apply`].

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// A change to the durable image, applied in field order: snapshot, entries, hard state,
/// commit index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersistDelta {
    /// Replaces every entry up to its index (a snapshot received from the leader, or one this
    /// node took itself to compact its log).
    pub snapshot: Option<Snapshot>,
    /// Appended after truncating any stored entry at or above the first one's index.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub commit: Option<u64>,
}

impl PersistDelta {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.commit.is_none()
    }
}

/// The log of one metadata replica. `entries[i]` has index `snapshot index + 1 + i`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetaStorage {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl MetaStorage {
    /// An empty log for a group whose initial configuration is `conf_state` (every founding
    /// member starts from the same one).
    pub fn new(conf_state: ConfState) -> Self {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().set_conf_state(conf_state.clone());
        MetaStorage { hard_state: HardState::default(), conf_state, snapshot, entries: Vec::new() }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// The configuration after an applied conf change (the next snapshot records it).
    pub(crate) fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    /// The newest snapshot (index 0 and no data before the first compaction).
    pub fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn entries_len(&self) -> usize {
        self.entries.len()
    }

    fn first(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    fn last(&self) -> u64 {
        self.snapshot.get_metadata().index + self.entries.len() as u64
    }

    /// Applies a delta (see [`PersistDelta`] for the order). Errors mean the delta does not fit
    /// this log (a programmer error in the core, or a corrupt durable copy).
    pub fn apply(&mut self, delta: &PersistDelta) -> Result<(), String> {
        if let Some(s) = &delta.snapshot {
            self.install_snapshot(s.clone())?;
        }
        self.append(&delta.entries)?;
        if let Some(hs) = &delta.hard_state {
            self.hard_state = hs.clone();
        }
        if let Some(c) = delta.commit {
            self.hard_state.commit = c;
        }
        Ok(())
    }

    /// Replaces the log up to the snapshot's index by the snapshot. Entries after it are kept
    /// when the snapshot is this node's own compaction (they match), dropped otherwise.
    pub(crate) fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), String> {
        let meta = snapshot.get_metadata();
        let index = meta.index;
        if index < self.snapshot.get_metadata().index {
            return Err(format!(
                "snapshot at {index} is older than the stored one at {}",
                self.snapshot.get_metadata().index
            ));
        }
        let keeps_suffix = index <= self.last() && self.term_of(index) == Some(meta.term);
        if keeps_suffix {
            let drop = (index + 1 - self.first()) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(index);
        self.conf_state = meta.get_conf_state().clone();
        self.snapshot = snapshot;
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else { return Ok(()) };
        if first.index < self.first() {
            return Err(format!("append at {} overwrites the snapshot at {}", first.index, self.first() - 1));
        }
        if first.index > self.last() + 1 {
            return Err(format!("append at {} leaves a gap after {}", first.index, self.last()));
        }
        self.entries.truncate((first.index - self.first()) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        let snap = self.snapshot.get_metadata();
        if index == snap.index {
            return Some(snap.term);
        }
        if index < self.first() || index > self.last() {
            return None;
        }
        Some(self.entries[(index - self.first()) as usize].term)
    }
}

impl raft::Storage for MetaStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.first()) as usize;
        let hi = (high - self.first()) as usize;
        let mut out = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.snapshot.get_metadata().index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // The core compacts only at an applied index and keeps that snapshot, so the stored
        // one is what a lagging follower needs; raft asks again if it is too old.
        if self.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    /// Appends truncate a conflicting suffix and refuse gaps.
    #[test]
    fn append_truncates_and_refuses_gaps() {
        let mut s = MetaStorage::new(ConfState::default());
        let d = PersistDelta { entries: vec![entry(1, 1), entry(2, 1), entry(3, 1)], ..Default::default() };
        s.apply(&d).unwrap();
        s.apply(&PersistDelta { entries: vec![entry(2, 2)], ..Default::default() }).unwrap();
        assert_eq!(s.last_index().unwrap(), 2);
        assert_eq!(s.term(2).unwrap(), 2);
        assert!(s.apply(&PersistDelta { entries: vec![entry(5, 2)], ..Default::default() }).is_err());
    }

    /// A snapshot of the node's own log keeps the entries after it.
    #[test]
    fn own_snapshot_keeps_the_suffix() {
        let mut s = MetaStorage::new(ConfState::default());
        s.apply(&PersistDelta { entries: (1..=5).map(|i| entry(i, 1)).collect(), ..Default::default() })
            .unwrap();
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 1;
        s.apply(&PersistDelta { snapshot: Some(snap), ..Default::default() }).unwrap();
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (4, 5));
        assert_eq!(s.term(3).unwrap(), 1);
        assert!(s.entries(2, 4, None, GetEntriesContext::empty(false)).is_err());
    }
}
