//! Durable local storage of one replica, on fjall.
//!
//! Keyspaces: `data` (storage key → encoded [`ItemState`]) and `meta` (node-local facts such as
//! this data directory's actor id).
//!
//! ## Write path and every fsync on it
//! 1. [`Storage::put`] inserts the new item state into fjall: memtable plus an append to the
//!    journal file (not yet durable).
//! 2. [`Storage::sync`] asks the group committer for durability. The committer thread drains every
//!    waiting request, calls `Database::persist(SyncAll)` once (the only fsync on the write path),
//!    and wakes them all. Any insert made before its waiter was queued is in the journal before the
//!    fsync starts, so one fsync covers the whole batch.
//! 3. Only then does a replica acknowledge. With `durability = "buffered"` step 2 only flushes
//!    to the OS (`PersistMode::Buffer`).
//!
//! A failed fsync poisons the store: every later write fails with [`StorageError::Poisoned`]
//! and `quorumdb_storage_poisoned` is 1. Continuing after a failed fsync could acknowledge
//! writes whose predecessors silently vanished (the "fsyncgate" lesson).

use crate::config::Durability;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use quorumdb_core::causality::ActorId;
use quorumdb_core::handoff::{Hint, HintId};
use quorumdb_core::replica::{LocalStore, StoreError};
use quorumdb_meta::wire::{WireConfState, WireEntry, WireHardState, WireSnapshot};
use quorumdb_meta::{MetaStorage, PersistDelta};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::sync::oneshot;

/// Version byte of stored hint records.
const HINT_FORMAT_VERSION: u8 = 1;

/// Most durability waiters queued at once. Writers beyond this wait for a slot, which bounds the
/// memory of a stalled disk to this many small oneshot senders.
pub const SYNC_QUEUE_LEN_MAX: usize = 16_384;

#[derive(Debug, Error, Clone)]
pub enum StorageError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("node is poisoned after a failed fsync and refuses writes: {0}")]
    Poisoned(String),
    #[error("stored item is corrupt: {0}")]
    Corrupt(String),
}

impl From<fjall::Error> for StorageError {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Poisoned => StorageError::Poisoned("storage engine is poisoned".into()),
            other => StorageError::Engine(other.to_string()),
        }
    }
}

pub struct Storage {
    db: Database,
    data: Keyspace,
    /// Hinted-handoff queue: hint id (u64 BE) → encoded [`Hint`]. Shares the journal, so the
    /// group commit makes hints durable together with data.
    hints: Keyspace,
    /// Node-local facts: the actor id and the clean-shutdown marker.
    meta: Keyspace,
    /// Tombstone-only items: storage key → unix ms when this replica first held the tombstone.
    /// Drives garbage collection without scanning all data.
    tombstones: Keyspace,
    /// Recently purged tombstones: storage key → unix ms of the purge | encoded state. Lets the
    /// replica ignore the same tombstone when a slower replica sends it back.
    purged: Keyspace,
    /// The metadata Raft group's durable image: `conf`, `hs`, `snap`, and `e` + index (u64 BE)
    /// per log entry, each a `quorumdb_meta::wire` DTO in postcard. Shares the journal, so the
    /// group commit makes it durable with everything else.
    raft: Keyspace,
    /// This data directory's actor id, used to stamp dots of writes it coordinates. A fresh
    /// random id per data directory means a wiped node never reuses an old (actor, counter).
    actor: ActorId,
    /// Sends durability requests to the group-commit thread.
    sync_tx: mpsc::SyncSender<Waiter>,
    /// Set once an fsync failed; never cleared while the process lives.
    poisoned: Arc<AtomicBool>,
    /// Lab fault: the next group commit reports failure as a real failed fsync would.
    fail_next_sync: Arc<AtomicBool>,
    /// Lab fault: a slow disk. The group-commit thread sleeps this many ms before each fsync.
    fsync_delay_ms: Arc<AtomicU64>,
}

impl Storage {
    pub fn open(dir: &Path, durability: Durability) -> Result<Arc<Self>, StorageError> {
        fjall_thread_check();
        std::fs::create_dir_all(dir)
            .map_err(|e| StorageError::Engine(format!("cannot create {}: {e}", dir.display())))?;
        let db = Database::builder(dir.join("fjall")).manual_journal_persist(true).open()?;
        let data = db.keyspace("data", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let hints = db.keyspace("hints", KeyspaceCreateOptions::default)?;
        let tombstones = db.keyspace("tombstones", KeyspaceCreateOptions::default)?;
        let purged = db.keyspace("purged", KeyspaceCreateOptions::default)?;
        let raft = db.keyspace("raft", KeyspaceCreateOptions::default)?;
        // The actor id stamps the dots of writes this replica coordinates. After a clean
        // shutdown every dot it minted is durable, so the id is kept. After a crash, the last
        // writes before it may have reached other replicas (replication and reads run ahead of
        // the local fsync) while this disk lost them; minting the same (actor, counter) again
        // for a different write would make merges drop one of the two. So a crash gets the
        // next incarnation of the id (same data-dir uid, later start), and a new data dir a
        // random uid. (Found by the seeded simulator, seed 288.) Replicas recognise the earlier
        // incarnations as retired and prune their entries (`ItemState::prune_retired`), so a
        // crash-looping node does not fill contexts up.
        let clean = meta.get("clean_shutdown")?.is_some();
        let stored = match meta.get("actor_id")? {
            Some(raw) => Some(ActorId(u64::from_le_bytes(
                raw.as_ref()
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("actor_id is not 8 bytes".into()))?,
            ))),
            None => None,
        };
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let actor = match stored {
            Some(actor) if clean => actor,
            _ => {
                let id = stored
                    .and_then(|old| old.successor(now_ms))
                    .unwrap_or_else(|| ActorId::incarnation(rand::random(), now_ms));
                meta.insert("actor_id", id.0.to_le_bytes().to_vec())?;
                id
            }
        };
        // Until the next clean shutdown, this process may mint dots that are not yet durable.
        meta.remove("clean_shutdown")?;
        db.persist(PersistMode::SyncAll)?;
        let poisoned = Arc::new(AtomicBool::new(false));
        let fail_next_sync = Arc::new(AtomicBool::new(false));
        let fsync_delay_ms = Arc::new(AtomicU64::new(0));
        let (sync_tx, sync_rx) = mpsc::sync_channel(SYNC_QUEUE_LEN_MAX);
        let mode = match durability {
            Durability::Fsync => PersistMode::SyncAll,
            Durability::Buffered => PersistMode::Buffer,
        };
        {
            let db = db.clone();
            let poisoned = poisoned.clone();
            let faults = CommitFaults { fail_next: fail_next_sync.clone(), delay_ms: fsync_delay_ms.clone() };
            std::thread::Builder::new()
                .name("group-commit".into())
                .spawn(move || group_commit_loop(db, mode, sync_rx, poisoned, faults))
                .map_err(|e| StorageError::Engine(format!("cannot start group commit: {e}")))?;
        }
        metrics::gauge!("quorumdb_storage_poisoned").set(0.0);
        Ok(Arc::new(Storage {
            db,
            data,
            hints,
            meta,
            tombstones,
            purged,
            raft,
            actor,
            sync_tx,
            poisoned,
            fail_next_sync,
            fsync_delay_ms,
        }))
    }

    /// Makes everything durable and marks the shutdown clean, so the next start keeps the
    /// actor id. Call only when no more writes will be accepted.
    pub fn close_cleanly(&self) -> Result<(), StorageError> {
        fjall_thread_check();
        self.db.persist(PersistMode::SyncAll)?;
        self.meta.insert("clean_shutdown", [1u8])?;
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// The metadata group's durable image, or `None` if this data dir never joined one.
    pub fn raft_load(&self) -> Result<Option<MetaStorage>, StorageError> {
        fjall_thread_check();
        let corrupt = |what: &str, e: postcard::Error| StorageError::Corrupt(format!("raft {what}: {e}"));
        let Some(conf) = self.raft.get("conf")? else { return Ok(None) };
        let conf: WireConfState = postcard::from_bytes(&conf).map_err(|e| corrupt("conf state", e))?;
        let mut storage = MetaStorage::new(conf.into());
        let mut delta = PersistDelta::default();
        if let Some(snap) = self.raft.get("snap")? {
            let snap: WireSnapshot = postcard::from_bytes(&snap).map_err(|e| corrupt("snapshot", e))?;
            delta.snapshot = Some(snap.into());
        }
        for kv in self.raft.prefix("e") {
            let (_, v) = kv.into_inner()?;
            let e: WireEntry = postcard::from_bytes(&v).map_err(|e| corrupt("entry", e))?;
            delta.entries.push(e.try_into().map_err(StorageError::Corrupt)?);
        }
        if let Some(hs) = self.raft.get("hs")? {
            let hs: WireHardState = postcard::from_bytes(&hs).map_err(|e| corrupt("hard state", e))?;
            delta.hard_state = Some(hs.into());
        }
        storage.apply(&delta).map_err(|e| StorageError::Corrupt(format!("raft log: {e}")))?;
        Ok(Some(storage))
    }

    /// Writes the initial configuration of a founding member (not durable until a sync).
    pub fn raft_init(&self, storage: &MetaStorage) -> Result<(), StorageError> {
        fjall_thread_check();
        let conf = postcard::to_allocvec(&WireConfState::from(storage.conf_state())).expect("plain data");
        self.raft.insert("conf", conf)?;
        Ok(())
    }

    /// Applies one persist delta of the metadata group, mirroring `MetaStorage::apply`; the
    /// caller passes its image after the delta (for the hard state and conf state to write).
    /// Not durable until a sync.
    pub fn raft_apply(&self, delta: &PersistDelta, after: &MetaStorage) -> Result<(), StorageError> {
        fjall_thread_check();
        let entry_key = |index: u64| {
            let mut k = Vec::with_capacity(9);
            k.push(b'e');
            k.extend_from_slice(&index.to_be_bytes());
            k
        };
        if let Some(snap) = &delta.snapshot {
            let index = snap.get_metadata().index;
            let bytes = postcard::to_allocvec(&WireSnapshot::from(snap)).expect("plain data");
            self.raft.insert("snap", bytes)?;
            // Entries the snapshot covers are gone; a foreign snapshot replaces the whole log.
            let own_suffix = after.entries_len() > 0;
            let stale: Vec<Vec<u8>> =
                self.raft.prefix("e").map(|kv| kv.key().map(|k| k.to_vec())).collect::<Result<_, _>>()?;
            for k in stale {
                let i = u64::from_be_bytes(
                    k[1..9].try_into().map_err(|_| StorageError::Corrupt("raft entry key".into()))?,
                );
                if i <= index || !own_suffix {
                    self.raft.remove(k)?;
                }
            }
            let conf = postcard::to_allocvec(&WireConfState::from(after.conf_state())).expect("plain data");
            self.raft.insert("conf", conf)?;
        }
        if let Some(first) = delta.entries.first() {
            // Truncate a conflicting suffix, then append. The range stops at the end of the
            // entry keys: unbounded, it also walked `hs` (rewritten on every Raft ready) and
            // `snap`, about 10% of a busy leader's CPU in the log benchmark's profile.
            let stale: Vec<Vec<u8>> = self
                .raft
                .range(entry_key(first.index)..vec![b'e' + 1])
                .map(|kv| kv.key().map(|k| k.to_vec()))
                .collect::<Result<_, _>>()?;
            for k in stale {
                if k.first() == Some(&b'e') {
                    self.raft.remove(k)?;
                }
            }
            for e in &delta.entries {
                let bytes = postcard::to_allocvec(&WireEntry::from(e)).expect("plain data");
                self.raft.insert(entry_key(e.index), bytes)?;
            }
        }
        if delta.hard_state.is_some() || delta.commit.is_some() || delta.snapshot.is_some() {
            let hs = postcard::to_allocvec(&WireHardState::from(after.hard_state())).expect("plain data");
            self.raft.insert("hs", hs)?;
        }
        Ok(())
    }

    /// Lab fault: make the next group commit fail like a real fsync failure, poisoning the
    /// store. Only reachable through the admin faults endpoint.
    pub fn inject_fsync_failure(&self) {
        self.fail_next_sync.store(true, Ordering::Release);
    }

    /// Lab fault: a slow disk. Every group commit from now on sleeps `ms` before its fsync
    /// (0 ends the fault). Only reachable through the admin faults endpoint.
    pub fn set_fsync_delay_ms(&self, ms: u64) {
        self.fsync_delay_ms.store(ms, Ordering::Release);
    }

    pub fn actor(&self) -> ActorId {
        self.actor
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        if self.is_poisoned() {
            return Err(StorageError::Poisoned("an earlier fsync failed".into()));
        }
        Ok(())
    }

    pub fn mark_tombstone(&self, storage_key: &[u8], since_ms: u64) -> Result<(), StorageError> {
        fjall_thread_check();
        self.tombstones.insert(storage_key, since_ms.to_be_bytes())?;
        Ok(())
    }

    pub fn unmark_tombstone(&self, storage_key: &[u8]) -> Result<(), StorageError> {
        fjall_thread_check();
        self.tombstones.remove(storage_key)?;
        Ok(())
    }

    /// Up to `limit` tombstone records `(storage key, since unix ms)` that are at least
    /// `min_age_ms` old at `now_ms`. Scans every record (local, cheap) so young tombstones at
    /// the front of the keyspace cannot starve old ones behind them.
    pub fn tombstones_older_than(
        &self,
        now_ms: u64,
        min_age_ms: u64,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, u64)>, StorageError> {
        fjall_thread_check();
        let mut out = Vec::new();
        for guard in self.tombstones.iter() {
            if out.len() == limit {
                break;
            }
            let (k, v) = guard.into_inner()?;
            let since = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if now_ms.saturating_sub(since) >= min_age_ms {
                out.push((k.to_vec(), since));
            }
        }
        Ok(out)
    }

    pub fn tombstone_count(&self) -> usize {
        fjall_thread_check();
        self.tombstones.approximate_len()
    }

    /// Records that `storage_key` was purged at `at_ms` with this final (tombstone) state.
    pub fn record_purge(&self, storage_key: &[u8], at_ms: u64, state: &[u8]) -> Result<(), StorageError> {
        fjall_thread_check();
        let mut v = at_ms.to_be_bytes().to_vec();
        v.extend_from_slice(state);
        self.purged.insert(storage_key, v)?;
        Ok(())
    }

    /// The purge record of a key: (purge unix ms, encoded final state).
    pub fn purge_record(&self, storage_key: &[u8]) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        fjall_thread_check();
        Ok(self.purged.get(storage_key)?.and_then(|v| {
            let at = v.get(..8)?.try_into().ok().map(u64::from_be_bytes)?;
            Some((at, v.get(8..)?.to_vec()))
        }))
    }

    /// Up to `limit` purge records `(storage key, purge unix ms)`, for expiring them.
    pub fn purge_records(&self, limit: usize) -> Result<Vec<(Vec<u8>, u64)>, StorageError> {
        fjall_thread_check();
        let mut out = Vec::new();
        for guard in self.purged.iter().take(limit) {
            let (k, v) = guard.into_inner()?;
            let at = v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            out.push((k.to_vec(), at));
        }
        Ok(out)
    }

    pub fn forget_purge(&self, storage_key: &[u8]) -> Result<(), StorageError> {
        fjall_thread_check();
        self.purged.remove(storage_key)?;
        Ok(())
    }

    /// Waits until everything inserted so far is durable under the configured policy.
    pub async fn sync(&self) -> Result<(), StorageError> {
        self.check_writable()?;
        let (tx, rx) = oneshot::channel();
        let gone = || StorageError::Engine("group commit thread is gone".into());
        match self.sync_tx.try_send(Waiter::Oneshot(tx)) {
            Ok(()) => {}
            // The queue is full (a slow disk): wait for a slot off the async runtime.
            Err(mpsc::TrySendError::Full(tx)) => {
                let sender = self.sync_tx.clone();
                tokio::task::spawn_blocking(move || sender.send(tx))
                    .await
                    .map_err(|e| StorageError::Engine(format!("sync task failed: {e}")))?
                    .map_err(|_| gone())?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(gone()),
        }
        rx.await.map_err(|_| StorageError::Engine("group commit thread is gone".into()))?
    }

    /// Calls `done` (on the group-commit thread) once everything inserted so far is durable.
    /// For threads that are not tokio workers: blocks while the sync queue is full (a slow
    /// disk), which is the backpressure a replica shard should feel.
    pub fn sync_then(&self, done: impl FnOnce(Result<(), StorageError>) + Send + 'static) {
        if let Err(e) = self.check_writable() {
            return done(Err(e));
        }
        if let Err(mpsc::SendError(Waiter::Callback(f))) = self.sync_tx.send(Waiter::Callback(Box::new(done)))
        {
            f(Err(StorageError::Engine("group commit thread is gone".into())));
        }
    }

    /// Stores a hint (not yet durable: call [`Storage::sync`]).
    pub fn put_hint(&self, shard: usize, id: HintId, hint: &Hint) -> Result<(), StorageError> {
        fjall_thread_check();
        self.check_writable()?;
        let mut v = Vec::with_capacity(16 + hint.target.len() + hint.key.len() + hint.state.len());
        v.push(HINT_FORMAT_VERSION);
        v.extend_from_slice(&hint.created_ms.to_be_bytes());
        v.push(
            u8::try_from(hint.target.len())
                .map_err(|_| StorageError::Engine("hint target id too long".into()))?,
        );
        v.extend_from_slice(hint.target.as_bytes());
        v.extend_from_slice(&(hint.key.len() as u32).to_be_bytes());
        v.extend_from_slice(&hint.key);
        v.extend_from_slice(&hint.state);
        self.hints.insert(hint_key(shard, id), v)?;
        Ok(())
    }

    pub fn delete_hint(&self, shard: usize, id: HintId) -> Result<(), StorageError> {
        fjall_thread_check();
        self.check_writable()?;
        self.hints.remove(hint_key(shard, id))?;
        Ok(())
    }

    /// Every stored hint of one replica shard, for restoring its queue at start-up. Hint ids
    /// are per shard (each shard's queue numbers its own), so the shard prefixes the key.
    pub fn load_hints(&self, shard: usize) -> Result<Vec<(HintId, Hint)>, StorageError> {
        fjall_thread_check();
        let mut out = Vec::new();
        let prefix = [shard_byte(shard)];
        for guard in self.hints.prefix(prefix) {
            let (k, v) = guard.into_inner()?;
            let corrupt = || StorageError::Corrupt("malformed hint record".into());
            let id_bytes = k.get(1..).ok_or_else(corrupt)?;
            let id = HintId(u64::from_be_bytes(id_bytes.try_into().map_err(|_| corrupt())?));
            let (&version, rest) = v.split_first().ok_or_else(corrupt)?;
            if version != HINT_FORMAT_VERSION {
                return Err(corrupt());
            }
            let created_ms =
                u64::from_be_bytes(rest.get(..8).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?);
            let tlen = usize::from(*rest.get(8).ok_or_else(corrupt)?);
            let target = rest.get(9..9 + tlen).ok_or_else(corrupt)?;
            let target = String::from_utf8(target.to_vec()).map_err(|_| corrupt())?;
            let rest = rest.get(9 + tlen..).ok_or_else(corrupt)?;
            let klen =
                u32::from_be_bytes(rest.get(..4).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?)
                    as usize;
            let key = rest.get(4..4 + klen).ok_or_else(corrupt)?.to_vec();
            let state = rest.get(4 + klen..).ok_or_else(corrupt)?.to_vec();
            out.push((id, Hint { target, key, state, created_ms }));
        }
        Ok(out)
    }

    /// Number of stored items (approximate, O(1)).
    pub fn approximate_len(&self) -> usize {
        fjall_thread_check();
        self.data.approximate_len()
    }

    pub fn database(&self) -> &Database {
        &self.db
    }
}

fn shard_byte(shard: usize) -> u8 {
    u8::try_from(shard).expect("shard indexes fit a byte (SHARDS_LEN is small)")
}

/// Storage key of a hint: shard byte, then the id big-endian (so a shard's hints are one
/// prefix, in id order).
fn hint_key(shard: usize, id: HintId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = shard_byte(shard);
    k[1..].copy_from_slice(&id.0.to_be_bytes());
    k
}

thread_local! {
    /// Set on threads that may call fjall: replica shard threads, blocking-pool closures.
    static FJALL_ALLOWED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as one that may call fjall (a replica shard thread, or a closure run by
/// `spawn_blocking`). fjall calls can block (write stalls, journal writes), so they must never
/// run on a worker of the shared async runtime.
pub fn allow_fjall_on_this_thread() {
    FJALL_ALLOWED.with(|f| f.set(true));
}

/// Debug builds (every test) assert that no fjall call runs on a tokio worker: a thread with a
/// runtime must have been marked with [`allow_fjall_on_this_thread`]; threads without one (the
/// group-commit thread) are fine.
#[track_caller]
fn fjall_thread_check() {
    debug_assert!(
        FJALL_ALLOWED.with(|f| f.get()) || tokio::runtime::Handle::try_current().is_err(),
        "fjall call on a tokio worker thread: run it on a replica shard thread or in spawn_blocking"
    );
}

/// Someone waiting for the next group commit.
enum Waiter {
    Oneshot(oneshot::Sender<Result<(), StorageError>>),
    /// Called on the group-commit thread: lets a replica shard thread be told directly,
    /// without a hop through the async runtime.
    Callback(Box<dyn FnOnce(Result<(), StorageError>) + Send>),
}

/// The group-commit thread: one fsync per batch of concurrent writers.
/// The lab faults the group-commit thread reads before each fsync.
struct CommitFaults {
    /// Fail the next fsync (one-shot).
    fail_next: Arc<AtomicBool>,
    /// Sleep this many ms before each fsync.
    delay_ms: Arc<AtomicU64>,
}

fn group_commit_loop(
    db: Database,
    mode: PersistMode,
    rx: mpsc::Receiver<Waiter>,
    poisoned: Arc<AtomicBool>,
    faults: CommitFaults,
) {
    let mut batch: Vec<Waiter> = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = if poisoned.load(Ordering::Acquire) {
            Err(StorageError::Poisoned("an earlier fsync failed".into()))
        } else {
            let started = Instant::now();
            // The sleep sits inside the timed section and after the batch was drained, as a
            // slow fsync call would: the fsync metric shows it, and writes that arrive meanwhile
            // wait for the next (equally slow) commit.
            let delay_ms = faults.delay_ms.load(Ordering::Acquire);
            if delay_ms > 0 {
                std::thread::sleep(Duration::from_millis(delay_ms));
            }
            let r = if faults.fail_next.swap(false, Ordering::AcqRel) {
                Err(fjall::Error::Io(std::io::Error::other("injected fsync failure (lab fault)")))
            } else {
                db.persist(mode)
            };
            metrics::histogram!("quorumdb_fsync_duration_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("quorumdb_fsync_batch_writes").record(batch.len() as f64);
            r.map_err(|e| {
                tracing::error!(error = %e, "fsync failed; poisoning the store, writes are refused from now on");
                poisoned.store(true, Ordering::Release);
                metrics::gauge!("quorumdb_storage_poisoned").set(1.0);
                metrics::counter!("quorumdb_fsync_failures_total").increment(1);
                StorageError::Poisoned(e.to_string())
            })
        };
        for waiter in batch.drain(..) {
            // A waiter that gave up (request timed out) is fine to ignore.
            match waiter {
                Waiter::Oneshot(tx) => drop(tx.send(result.clone())),
                Waiter::Callback(f) => f(result.clone()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The replica's storage seam

/// One replica shard's view of the node's fjall store: the [`LocalStore`] the core replica
/// machine runs on. Items, tombstones and purge records live in node-wide keyspaces (a key
/// belongs to exactly one shard); hints are prefixed by shard. Only the shard's own thread
/// calls it, never a tokio worker.
pub struct ShardStore {
    pub storage: Arc<Storage>,
    pub shard: usize,
}

fn store_err(e: StorageError) -> StoreError {
    match e {
        StorageError::Poisoned(m) => StoreError::Poisoned(m),
        StorageError::Corrupt(m) => StoreError::Corrupt(m),
        other => StoreError::Engine(other.to_string()),
    }
}

fn fjall_err(e: fjall::Error) -> StoreError {
    store_err(StorageError::from(e))
}

impl ShardStore {
    fn mine(&self, key: &[u8]) -> bool {
        quorumdb_core::replica::shard_of_storage_key(key) == Some(self.shard)
    }
}

impl LocalStore for ShardStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        fjall_thread_check();
        Ok(self.storage.data.get(key).map_err(fjall_err)?.map(|v| v.to_vec()))
    }

    fn put(&mut self, key: &[u8], encoded: &[u8]) -> Result<(), StoreError> {
        fjall_thread_check();
        self.storage.check_writable().map_err(store_err)?;
        self.storage.data.insert(key, encoded).map_err(fjall_err)
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        fjall_thread_check();
        self.storage.check_writable().map_err(store_err)?;
        self.storage.data.remove(key).map_err(fjall_err)
    }

    fn range(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        reverse: bool,
        len_max: usize,
        bytes_max: usize,
    ) -> Result<(Vec<quorumdb_core::replica::store::RawItem>, bool), StoreError> {
        fjall_thread_check();
        let upper = match hi {
            Some(h) => Bound::Excluded(h.to_vec()),
            None => Bound::Unbounded,
        };
        let iter = self.storage.data.range::<Vec<u8>, _>((Bound::Included(lo.to_vec()), upper));
        let iter: Box<dyn Iterator<Item = fjall::Guard>> =
            if reverse { Box::new(iter.rev()) } else { Box::new(iter) };
        let items = iter.map(|g| g.into_inner().map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(fjall_err));
        quorumdb_core::replica::store::collect_page(items, len_max, bytes_max)
    }

    fn put_hint(&mut self, id: HintId, hint: &Hint) -> Result<(), StoreError> {
        fjall_thread_check();
        self.storage.put_hint(self.shard, id, hint).map_err(store_err)
    }

    fn delete_hint(&mut self, id: HintId) -> Result<(), StoreError> {
        fjall_thread_check();
        self.storage.delete_hint(self.shard, id).map_err(store_err)
    }

    fn load_hints(&self) -> Result<Vec<(HintId, Hint)>, StoreError> {
        fjall_thread_check();
        self.storage.load_hints(self.shard).map_err(store_err)
    }

    fn mark_tombstone(&mut self, key: &[u8], since_ms: u64) -> Result<(), StoreError> {
        fjall_thread_check();
        self.storage.mark_tombstone(key, since_ms).map_err(store_err)
    }

    fn unmark_tombstone(&mut self, key: &[u8]) -> Result<(), StoreError> {
        fjall_thread_check();
        self.storage.unmark_tombstone(key).map_err(store_err)
    }

    fn tombstones_older_than(
        &self,
        now_ms: u64,
        age_ms_min: u64,
        len_max: usize,
    ) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        fjall_thread_check();
        let mut out = Vec::new();
        for guard in self.storage.tombstones.iter() {
            if out.len() == len_max {
                break;
            }
            let (k, v) = guard.into_inner().map_err(fjall_err)?;
            if !self.mine(&k) {
                continue;
            }
            let since = v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            if now_ms.saturating_sub(since) >= age_ms_min {
                out.push((k.to_vec(), since));
            }
        }
        Ok(out)
    }

    fn tombstones_len(&self) -> usize {
        self.storage.tombstone_count()
    }

    fn record_purge(&mut self, key: &[u8], at_ms: u64, state: &[u8]) -> Result<(), StoreError> {
        fjall_thread_check();
        self.storage.record_purge(key, at_ms, state).map_err(store_err)
    }

    fn purge_record(&self, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        fjall_thread_check();
        self.storage.purge_record(key).map_err(store_err)
    }

    fn purge_records(&self, len_max: usize) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
        fjall_thread_check();
        let mut out = Vec::new();
        for guard in self.storage.purged.iter() {
            if out.len() == len_max {
                break;
            }
            let (k, v) = guard.into_inner().map_err(fjall_err)?;
            if !self.mine(&k) {
                continue;
            }
            let at = v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            out.push((k.to_vec(), at));
        }
        Ok(out)
    }

    fn forget_purge(&mut self, key: &[u8]) -> Result<(), StoreError> {
        fjall_thread_check();
        self.storage.forget_purge(key).map_err(store_err)
    }

    fn is_poisoned(&self) -> bool {
        self.storage.is_poisoned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorumdb_core::key::ItemKey;
    use quorumdb_core::replica::store::RawItem;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("qdb-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Proves a synced write survives closing and reopening the store, and the actor id is kept
    /// across a clean shutdown but replaced by its successor after an unclean one.
    #[tokio::test]
    async fn put_sync_reopen() {
        allow_fjall_on_this_thread();
        let d = dir("reopen");
        let key = ItemKey::new("t", b"k", b"").unwrap().storage_key();
        let actor;
        {
            let s = Storage::open(&d, Durability::Fsync).unwrap();
            actor = s.actor();
            let mut store = ShardStore { storage: s.clone(), shard: 0 };
            store.put(&key, b"state").unwrap();
            s.sync().await.unwrap();
            s.close_cleanly().unwrap();
        }
        let s = Storage::open(&d, Durability::Fsync).unwrap();
        assert_eq!(s.actor(), actor);
        let store = ShardStore { storage: s.clone(), shard: 0 };
        assert_eq!(store.get(&key).unwrap().as_deref(), Some(b"state".as_slice()));
        drop((store, s));
        // No close_cleanly: as after a crash.
        let s = Storage::open(&d, Durability::Fsync).unwrap();
        assert_ne!(s.actor(), actor);
        // The next incarnation of the same data dir, so replicas can tell the old one retired.
        assert_eq!(s.actor().uid(), actor.uid());
        assert!(s.actor().started_ms() > actor.started_ms());
        std::fs::remove_dir_all(&d).ok();
    }

    /// Proves a shard store's range honours [lo, hi), direction, the count bound and the byte
    /// bound (which always lets the first item through, so a page makes progress).
    #[tokio::test]
    async fn range_bounds() {
        allow_fjall_on_this_thread();
        let d = dir("range");
        let s = Storage::open(&d, Durability::Buffered).unwrap();
        let mut store = ShardStore { storage: s, shard: 0 };
        for k in ["a", "b", "c", "d"] {
            store.put(k.as_bytes(), &[0u8; 100]).unwrap();
        }
        let keys = |r: (Vec<RawItem>, bool)| {
            (r.0.into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect::<Vec<_>>(), r.1)
        };
        assert_eq!(
            keys(store.range(b"a", None, false, 10, usize::MAX).unwrap()),
            (vec!["a".into(), "b".into(), "c".into(), "d".into()], true)
        );
        assert_eq!(
            keys(store.range(b"b", Some(b"d"), false, 10, usize::MAX).unwrap()),
            (vec!["b".into(), "c".into()], true)
        );
        assert_eq!(
            keys(store.range(b"a", None, true, 2, usize::MAX).unwrap()),
            (vec!["d".into(), "c".into()], false)
        );
        assert_eq!(
            keys(store.range(b"a", None, false, 10, 250).unwrap()),
            (vec!["a".into(), "b".into()], false)
        );
        assert_eq!(keys(store.range(b"a", None, false, 10, 1).unwrap()), (vec!["a".into()], false));
        std::fs::remove_dir_all(&d).ok();
    }

    /// Proves an injected fsync delay holds back every group commit by at least the delay (a
    /// slow disk), and setting it back to 0 ends it.
    #[tokio::test]
    async fn fsync_delay_slows_every_group_commit() {
        allow_fjall_on_this_thread();
        let d = dir("fsync-delay");
        let s = Storage::open(&d, Durability::Fsync).unwrap();
        let mut store = ShardStore { storage: s.clone(), shard: 0 };
        let delay = Duration::from_millis(200);
        s.set_fsync_delay_ms(200);
        let started = Instant::now();
        for k in ["a", "b"] {
            store.put(k.as_bytes(), b"state").unwrap();
            s.sync().await.unwrap();
        }
        // Two commits one after the other: each slept on its own.
        assert!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());
        s.set_fsync_delay_ms(0);
        let started = Instant::now();
        s.sync().await.unwrap();
        assert!(started.elapsed() < delay, "the delay outlived its fault: {:?}", started.elapsed());
        std::fs::remove_dir_all(&d).ok();
    }

    /// Proves debug builds refuse a fjall call on a tokio worker thread (the shared runtime
    /// must never block on storage).
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "fjall call on a tokio worker thread")]
    fn fjall_on_a_runtime_thread_is_refused() {
        let dir = std::env::temp_dir().join(format!("qdb-fjall-thread-{}", std::process::id()));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let _ = Storage::open(&dir, Durability::Fsync);
        });
    }
}
