//! The replica's storage seam: a synchronous trait the replica machine calls, implemented on
//! fjall by the node and on memory by the simulator and the scripted tests.
//!
//! The trait says nothing about durability except through [`LocalStore::sync_point`]: a `put`
//! is visible to later `get`s at once but survives a crash only after the driver completed a
//! sync that began after it. The replica never acknowledges anything before it was told, with
//! [`super::Input::Synced`], that such a sync completed. That split is what lets the simulator's
//! [`MemStore`] lose exactly the unsynced writes in a crash while running the shipping replica.

use crate::handoff::{Hint, HintId};
use std::collections::BTreeMap;
use std::ops::Bound;
use thiserror::Error;

/// A storage failure as the replica sees it. `Poisoned` is final: an fsync failed, so nothing
/// written since can be trusted to be durable, and the replica refuses further writes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    #[error("storage is poisoned: {0}")]
    Poisoned(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("storage engine error: {0}")]
    Engine(String),
}

/// Raw `(storage key, encoded item state)`.
pub type RawItem = (Vec<u8>, Vec<u8>);

/// Storage of one replica shard. Keys are storage keys (`ItemKey::storage_key`), values the
/// core's item-state encoding; the replica does every encode and decode itself, so both
/// implementations store the same bytes.
pub trait LocalStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Inserts or replaces (visible at once, durable after the next sync).
    fn put(&mut self, key: &[u8], encoded: &[u8]) -> Result<(), StoreError>;
    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// Items with `lo <= key < hi` (`hi = None`: unbounded), ascending (or descending with
    /// `reverse`), at most `len_max` items and — past the first item — at most `bytes_max`
    /// bytes of encoded state. Returns the items and whether the range holds nothing more.
    fn range(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        len_max: usize,
        bytes_max: usize,
    ) -> Result<(Vec<RawItem>, bool), StoreError>;

    fn put_hint(&mut self, id: HintId, hint: &Hint) -> Result<(), StoreError>;
    fn delete_hint(&mut self, id: HintId) -> Result<(), StoreError>;
    fn load_hints(&self) -> Result<Vec<(HintId, Hint)>, StoreError>;

    /// Tombstone records: which stored items are tombstones, since when (wall ms).
    fn mark_tombstone(&mut self, key: &[u8], since_ms: u64) -> Result<(), StoreError>;
    fn unmark_tombstone(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// Up to `len_max` tombstone records at least `age_ms_min` old at `now_ms`.
    fn tombstones_older_than(
        &self,
        now_ms: u64,
        age_ms_min: u64,
        len_max: usize,
    ) -> Result<Vec<(Vec<u8>, u64)>, StoreError>;
    fn tombstones_len(&self) -> usize;
    /// Purge records: the final state of a purged tombstone and when it was purged.
    fn record_purge(&mut self, key: &[u8], at_ms: u64, state: &[u8]) -> Result<(), StoreError>;
    fn purge_record(&self, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    fn purge_records(&self, len_max: usize) -> Result<Vec<(Vec<u8>, u64)>, StoreError>;
    fn forget_purge(&mut self, key: &[u8]) -> Result<(), StoreError>;

    /// Whether an earlier sync failed (the store refuses writes from then on).
    fn is_poisoned(&self) -> bool;
}

/// An in-memory [`LocalStore`] that models durability: every change goes to an unsynced log
/// first; [`MemStore::sync`] makes everything logged so far durable; [`MemStore::crash`] throws
/// the unsynced log away. Reads see the log. Used by the simulator and the scripted tests.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    durable: Durable,
    /// Changes since the last sync, in order; `None` values are removals.
    unsynced: Vec<Change>,
    /// The current view: durable plus unsynced, kept materialized for fast reads.
    current: Durable,
    poisoned: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Durable {
    items: BTreeMap<Vec<u8>, Vec<u8>>,
    hints: BTreeMap<HintId, Hint>,
    tombstones: BTreeMap<Vec<u8>, u64>,
    purged: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
}

#[derive(Clone, Debug)]
enum Change {
    Item(Vec<u8>, Option<Vec<u8>>),
    Hint(HintId, Option<Hint>),
    Tombstone(Vec<u8>, Option<u64>),
    Purge(Vec<u8>, Option<(u64, Vec<u8>)>),
}

impl Durable {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Item(k, Some(v)) => drop(self.items.insert(k.clone(), v.clone())),
            Change::Item(k, None) => drop(self.items.remove(k)),
            Change::Hint(id, Some(h)) => drop(self.hints.insert(*id, h.clone())),
            Change::Hint(id, None) => drop(self.hints.remove(id)),
            Change::Tombstone(k, Some(t)) => drop(self.tombstones.insert(k.clone(), *t)),
            Change::Tombstone(k, None) => drop(self.tombstones.remove(k)),
            Change::Purge(k, Some(p)) => drop(self.purged.insert(k.clone(), p.clone())),
            Change::Purge(k, None) => drop(self.purged.remove(k)),
        }
    }
}

impl MemStore {
    pub fn new() -> Self {
        MemStore::default()
    }

    fn log(&mut self, change: Change) -> Result<(), StoreError> {
        if self.poisoned {
            return Err(StoreError::Poisoned("an earlier sync failed".into()));
        }
        self.current.apply(&change);
        self.unsynced.push(change);
        Ok(())
    }

    /// Makes every change so far durable (a completed group commit).
    pub fn sync(&mut self) {
        for change in std::mem::take(&mut self.unsynced) {
            self.durable.apply(&change);
        }
    }

    /// A power loss: everything not synced is gone.
    pub fn crash(&mut self) {
        self.unsynced.clear();
        self.current = self.durable.clone();
    }

    /// Whether changes are waiting for a sync.
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// The durable encoded state of an item (what a crash would leave).
    pub fn durable_item(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.durable.items.get(key)
    }

    /// Every item as a read sees it.
    pub fn items(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.current.items
    }

    /// Every durable item.
    pub fn durable_items(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.durable.items
    }

    /// Makes the store fail like a failed fsync: it refuses every write from now on.
    pub fn poison(&mut self) {
        self.poisoned = true;
        self.crash();
    }
}

impl LocalStore for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.current.items.get(key).cloned())
    }

    fn put(&mut self, key: &[u8], encoded: &[u8]) -> Result<(), StoreError> {
        self.log(Change::Item(key.to_vec(), Some(encoded.to_vec())))
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.log(Change::Item(key.to_vec(), None))
    }

    fn range(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        len_max: usize,
        bytes_max: usize,
    ) -> Result<(Vec<RawItem>, bool), StoreError> {
        let upper = match hi {
            Some(h) => Bound::Excluded(h.to_vec()),
            None => Bound::Unbounded,
        };
        let range = self.current.items.range((Bound::Included(lo.to_vec()), upper));
        let iter: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> =
            if reverse { Box::new(range.rev()) } else { Box::new(range) };
        collect_page(iter.map(|(k, v)| Ok((k.clone(), v.clone()))), len_max, bytes_max)
    }

    fn put_hint(&mut self, id: HintId, hint: &Hint) -> Result<(), StoreError> {
        self.log(Change::Hint(id, Some(hint.clone())))
    }

    fn delete_hint(&mut self, id: HintId) -> Result<(), StoreError> {
        self.log(Change::Hint(id, None))
    }

    fn load_hints(&self) -> Result<Vec<(HintId, Hint)>, StoreError> {
        Ok(self.current.hints.iter().map(|(id, h)| (*id, h.clone())).collect())
    }

    fn mark_tombstone(&mut self, key: &[u8], since_ms: u64) -> Result<(), StoreError> {
        self.log(Change::Tombstone(key.to_vec(), Some(since_ms)))
    }

    fn unmark_tombstone(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.log(Change::Tombstone(key.to_vec(), None))
    }

    fn tombstones_older_than(
        &self,
        now_ms: u64,
        age_ms_min: u64,
        len_max: usize,
    ) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        Ok(self
            .current
            .tombstones
            .iter()
            .filter(|(_, since)| now_ms.saturating_sub(**since) >= age_ms_min)
            .take(len_max)
            .map(|(k, s)| (k.clone(), *s))
            .collect())
    }

    fn tombstones_len(&self) -> usize {
        self.current.tombstones.len()
    }

    fn record_purge(&mut self, key: &[u8], at_ms: u64, state: &[u8]) -> Result<(), StoreError> {
        self.log(Change::Purge(key.to_vec(), Some((at_ms, state.to_vec()))))
    }

    fn purge_record(&self, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self.current.purged.get(key).cloned())
    }

    fn purge_records(&self, len_max: usize) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        Ok(self.current.purged.iter().take(len_max).map(|(k, (at, _))| (k.clone(), *at)).collect())
    }

    fn forget_purge(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.log(Change::Purge(key.to_vec(), None))
    }

    fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

/// Collects a page from an ordered iterator of raw items: at most `len_max` items and, past the
/// first item, at most `bytes_max` bytes of values. The first item is always taken so a page
/// makes progress even when one item alone exceeds the byte bound. Shared by every store.
pub fn collect_page(
    iter: impl Iterator<Item = Result<RawItem, StoreError>>,
    len_max: usize,
    bytes_max: usize,
) -> Result<(Vec<RawItem>, bool), StoreError> {
    let mut out: Vec<RawItem> = Vec::new();
    let mut bytes = 0usize;
    for item in iter {
        let (k, v) = item?;
        let over_bytes = !out.is_empty() && bytes.saturating_add(v.len()) > bytes_max;
        if out.len() >= len_max || over_bytes {
            return Ok((out, false));
        }
        bytes = bytes.saturating_add(v.len());
        out.push((k, v));
    }
    Ok((out, true))
}
