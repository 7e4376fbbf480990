//! Replica convergence at the node: Merkle trees kept in step with storage, tree exchanges
//! driven by [`quorumdb_core::antientropy::Exchange`], and tombstone garbage collection.
//!
//! ```text
//!  store(key, old, new) ──► trees[(table, replica set)].update(leaf, old digest, new digest)
//!
//!  every antientropy_interval_ms, per tree, with one peer of its replica set:
//!    Exchange ─RequestHashes─► AeHashes ─► peer tree.children_batch ─► on_hashes ─► … (DEPTH rounds)
//!             ─RequestLeafKeys─► AeLeafKeys ─► peer scans the leaf's key range ─► on_leaf_keys
//!             ─Push─► Replicate (peer merges)     ─Pull─► Read + merge_local
//!    every transfer passes the byte-rate throttle (antientropy_bytes_per_second_max)
//!
//!  every tombstone_gc_interval_ms: tombstones older than tombstone_grace_ms that every home
//!  replica holds identically are purged (and remembered for a grace period, so a slower
//!  replica sending the same tombstone back does not resurrect it).
//! ```
//!
//! One tree per (table, replica set) rather than per token range: every item with the same
//! preference set is compared with the same peers, and per-table trees let `repair --table`
//! work on one table.

use crate::error::ApiError;
use crate::node::{to_wire, Node};
use crate::wire::{KeyDigest, LeafListing, Request, Response, WireTree};
use quorumdb_core::antientropy::{Command, Exchange, ExchangeLimits, ExchangeStats};
use quorumdb_core::causality::ItemState;
use quorumdb_core::key::ItemKey;
use quorumdb_core::merkle::{item_digest, leaf_key_range, MerkleTree};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most exchanges one tree and peer run back to back in one round while a bound cut the
/// previous one short (`more_remaining`): 64 × `EXCHANGE_KEYS_MAX` keys per round at most.
const EXCHANGES_PER_ROUND_MAX: usize = 64;
/// Tombstones checked with their replicas per GC pass (each check is one request per replica).
const GC_BATCH_LEN_MAX: usize = 1_000;

/// Names a tree: a table and the sorted member indexes of a replica set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreeId {
    pub table: String,
    pub set: Vec<usize>,
}

/// Progress of the current or last full repair pass, as shown by `quorumdb repair`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairProgress {
    pub running: bool,
    pub table: Option<String>,
    /// (tree, peer) pairs to exchange in this pass, and how many are done.
    pub exchanges_total: usize,
    pub exchanges_done: usize,
    pub exchanges_failed: usize,
    pub keys_pushed: u64,
    pub keys_pulled: u64,
    /// Bytes of item states sent or fetched.
    pub item_bytes: u64,
    /// `(key, digest)` pairs received in leaf listings.
    pub digests_received: u64,
    pub leaves_differing: u64,
    pub passes_completed: u64,
}

/// The node's anti-entropy state.
pub struct AntiEntropy {
    /// Whether trees are maintained on every write (config `antientropy`).
    pub enabled: bool,
    trees: Mutex<BTreeMap<TreeId, MerkleTree>>,
    pub progress: Mutex<RepairProgress>,
    /// Earliest instant the next transfer may start: a token bucket with a one-second burst.
    throttle: tokio::sync::Mutex<Instant>,
    /// Serializes passes: a repair request while a pass runs waits for it.
    pass: tokio::sync::Mutex<()>,
}

impl AntiEntropy {
    pub fn new(enabled: bool) -> Self {
        AntiEntropy {
            enabled,
            trees: Mutex::new(BTreeMap::new()),
            progress: Mutex::new(RepairProgress::default()),
            throttle: tokio::sync::Mutex::new(Instant::now()),
            pass: tokio::sync::Mutex::new(()),
        }
    }

    fn trees(&self) -> std::sync::MutexGuard<'_, BTreeMap<TreeId, MerkleTree>> {
        match self.trees.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, RepairProgress> {
        match self.progress.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Applies one item change to its tree.
    pub fn update(&self, tree: TreeId, storage_key: &[u8], old: Option<u64>, new: Option<u64>) {
        if !self.enabled || old == new {
            return;
        }
        self.trees().entry(tree).or_default().update(storage_key, old, new);
    }

    pub fn tree_ids(&self) -> Vec<TreeId> {
        self.trees().keys().cloned().collect()
    }
}

/// Counts one item state moved by anti-entropy in `direction` (`push` or `pull`).
fn count_transfer(direction: &'static str, bytes: usize) {
    metrics::counter!("quorumdb_antientropy_keys_total", "direction" => direction).increment(1);
    metrics::counter!("quorumdb_antientropy_item_bytes_total", "direction" => direction)
        .increment(bytes as u64);
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    /// The tree an item belongs to.
    pub fn tree_id(&self, key: &ItemKey) -> TreeId {
        let mut set = self.preference_of(key);
        set.sort_unstable();
        TreeId { table: key.table.clone(), set }
    }

    fn wire_tree(&self, t: &TreeId) -> WireTree {
        WireTree { table: t.table.clone(), set: t.set.iter().map(|i| self.member_name(*i)).collect() }
    }

    fn tree_from_wire(&self, t: &WireTree) -> Result<TreeId, ApiError> {
        let mut set = Vec::with_capacity(t.set.len());
        for name in &t.set {
            set.push(
                self.ring
                    .index_of(name)
                    .ok_or_else(|| ApiError::BadRequest(format!("unknown member {name:?}")))?,
            );
        }
        set.sort_unstable();
        Ok(TreeId { table: t.table.clone(), set })
    }

    /// Keeps derived state (trees, tombstone records) in step with one item change. Called by
    /// every path that changes a stored item, with the encodings before and after.
    pub(crate) fn after_store(
        &self,
        key: &ItemKey,
        old: Option<&[u8]>,
        new: Option<(&[u8], &ItemState)>,
        was_tombstone: bool,
    ) {
        let sk = key.storage_key();
        self.ae.update(
            self.tree_id(key),
            &sk,
            old.map(|o| item_digest(&sk, o)),
            new.map(|(n, _)| item_digest(&sk, n)),
        );
        let is_tombstone = new.is_some_and(|(_, s)| s.has_tombstone() && s.is_deleted());
        let result = match (was_tombstone, is_tombstone) {
            (false, true) => self.storage.mark_tombstone(&sk, unix_ms()),
            (true, false) => self.storage.unmark_tombstone(&sk),
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot update the tombstone record");
        }
    }

    /// Rebuilds every tree from storage (at start-up, before serving).
    pub fn rebuild_trees(&self) -> Result<usize, ApiError> {
        if !self.ae.enabled {
            return Ok(0);
        }
        let mut items = 0;
        let mut trees: BTreeMap<TreeId, MerkleTree> = BTreeMap::new();
        self.storage.for_each_raw(|k, v| {
            if let Ok(key) = ItemKey::from_storage_key(k) {
                trees.entry(self.tree_id(&key)).or_default().update(k, None, Some(item_digest(k, v)));
                items += 1;
            }
        })?;
        *self.ae.trees() = trees;
        Ok(items)
    }

    /// `(storage key, digest)` pairs of one leaf of one tree, from a range scan of storage.
    fn leaf_items(&self, tree: &TreeId, leaf: usize) -> Result<Vec<(Vec<u8>, u64)>, ApiError> {
        let (lo, hi) = leaf_key_range(leaf).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let mut out = Vec::new();
        for (k, v) in self.storage.scan_raw(lo, hi)? {
            let Ok(key) = ItemKey::from_storage_key(&k) else { continue };
            if key.table == tree.table && self.tree_id(&key) == *tree {
                let digest = item_digest(&k, &v);
                out.push((k, digest));
            }
        }
        Ok(out)
    }

    /// Answers a peer's anti-entropy requests.
    pub(crate) fn handle_ae(self: &Arc<Self>, req: Request) -> Result<Response, ApiError> {
        match req {
            Request::AeHashes { tree, level, parents } => {
                let tree = self.tree_from_wire(&tree)?;
                let parents: Vec<usize> = parents.into_iter().map(|p| p as usize).collect();
                let mut trees = self.ae.trees();
                let mut empty = MerkleTree::new();
                let t = trees.get_mut(&tree).unwrap_or(&mut empty);
                let hashes = t
                    .children_batch(level as usize, &parents)
                    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
                Ok(Response::Hashes { hashes })
            }
            Request::AeLeafKeys { tree, leaves } => {
                let tree = self.tree_from_wire(&tree)?;
                let mut out = Vec::with_capacity(leaves.len());
                for leaf in leaves {
                    let items = self.leaf_items(&tree, leaf as usize)?;
                    out.push(LeafListing {
                        leaf,
                        items: items.into_iter().map(|(key, digest)| KeyDigest { key, digest }).collect(),
                    });
                }
                Ok(Response::LeafKeys { leaves: out })
            }
            Request::TombstoneHeld { key, state } => {
                let key = ItemKey::new(&key.table, &key.partition, &key.sort)?;
                let theirs = ItemState::decode(&state).map_err(|e| ApiError::BadRequest(e.to_string()))?;
                let held = match self.storage.get(&key)? {
                    Some(mine) => mine.descends(&theirs) && theirs.descends(&mine),
                    // Absent: fine only if this replica purged that very tombstone (or a later one).
                    None => self
                        .storage
                        .purge_record(&key.storage_key())?
                        .and_then(|(_, f)| ItemState::decode(&f).ok())
                        .is_some_and(|f| f.descends(&theirs)),
                };
                Ok(Response::Held { held })
            }
            Request::StartRepair { table } => {
                let node = self.clone();
                tokio::spawn(async move { node.antientropy_pass(table, true).await });
                Ok(Response::Ack)
            }
            other => Err(ApiError::Internal(format!("not an anti-entropy request: {other:?}"))),
        }
    }

    /// Waits until `bytes` more may be transferred under the configured rate.
    async fn throttle(&self, bytes: usize) {
        let rate = self.config.antientropy_bytes_per_second_max.max(1) as f64;
        let cost = Duration::from_secs_f64(bytes as f64 / rate);
        let wait = {
            let mut next = self.ae.throttle.lock().await;
            let now = Instant::now();
            // Allow a one-second burst: never let the bucket fall further behind than that.
            let start = (*next).max(now.checked_sub(Duration::from_secs(1)).unwrap_or(now));
            *next = start + cost;
            next.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// One exchange of `tree` with `peer`.
    async fn run_exchange(self: &Arc<Self>, tree: &TreeId, peer: usize) -> Result<ExchangeStats, String> {
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let wire = self.wire_tree(tree);
        let deadline = self.now_ms() + 60_000;
        let (mut ex, first) = Exchange::start(0, self.member_name(peer), ExchangeLimits::default(), deadline);
        let mut queue: VecDeque<Command> = first.into();
        let mut item_bytes = 0u64;
        let mut pending_push: std::collections::BTreeSet<Vec<u8>> = std::collections::BTreeSet::new();
        let (mut pushed, mut pulled) = (0u64, 0u64);
        while let Some(cmd) = queue.pop_front() {
            let next = match cmd {
                Command::RequestHashes { level, parents } => {
                    let req = Request::AeHashes {
                        tree: wire.clone(),
                        level: level as u32,
                        parents: parents.iter().map(|p| *p as u32).collect(),
                    };
                    match self.peer_request(peer, req, timeout).await {
                        Ok(Response::Hashes { hashes }) => {
                            let mut trees = self.ae.trees();
                            let mut empty = MerkleTree::new();
                            let local = trees.get_mut(tree).unwrap_or(&mut empty);
                            ex.on_hashes(level, &hashes, local)
                        }
                        Ok(other) => ex.on_error(format!("unexpected response {other:?}")),
                        Err(e) => ex.on_error(e),
                    }
                }
                Command::RequestLeafKeys { leaves } => {
                    let req = Request::AeLeafKeys {
                        tree: wire.clone(),
                        leaves: leaves.iter().map(|l| *l as u32).collect(),
                    };
                    match self.peer_request(peer, req, timeout).await {
                        Ok(Response::LeafKeys { leaves: listings }) => {
                            let mut cmds = Vec::new();
                            for listing in listings {
                                let local = self
                                    .leaf_items(tree, listing.leaf as usize)
                                    .map_err(|e| e.to_string())?;
                                let theirs =
                                    listing.items.into_iter().map(|kd| (kd.key, kd.digest)).collect();
                                cmds.extend(ex.on_leaf_keys(listing.leaf as usize, theirs, local));
                            }
                            cmds
                        }
                        Ok(other) => ex.on_error(format!("unexpected response {other:?}")),
                        Err(e) => ex.on_error(e),
                    }
                }
                // Pushes wait until the pulls are done: a key whose digests differ is in both
                // lists, and once the peer's state is here we know whether the peer lacks
                // anything of ours. When one replica merely missed writes (the usual case),
                // this halves the bytes a repair moves.
                Command::Push { keys } => {
                    pending_push.extend(keys);
                    Vec::new()
                }
                Command::Pull { keys } => {
                    for raw in keys {
                        let Ok(key) = ItemKey::from_storage_key(&raw) else { continue };
                        let state = match self
                            .peer_request(peer, Request::Read { key: to_wire(&key) }, timeout)
                            .await
                        {
                            Ok(Response::Item { state }) => state,
                            Ok(other) => return Err(format!("unexpected response {other:?}")),
                            Err(e) => {
                                return Err(format!("pull from {} failed: {e}", self.member_name(peer)))
                            }
                        };
                        self.throttle(state.len()).await;
                        item_bytes += state.len() as u64;
                        pulled += 1;
                        count_transfer("pull", state.len());
                        let theirs = ItemState::decode(&state).map_err(|e| e.to_string())?;
                        let mine = self.storage.get(&key).map_err(|e| e.to_string())?.unwrap_or_default();
                        if theirs.descends(&mine) {
                            pending_push.remove(&raw);
                        }
                        self.merge_local(&key, &theirs).await.map_err(|e| e.to_string())?;
                    }
                    Vec::new()
                }
                Command::Done(stats) => {
                    for raw in std::mem::take(&mut pending_push) {
                        let Ok(key) = ItemKey::from_storage_key(&raw) else { continue };
                        let Ok(Some(state)) = self.storage.get_raw(&key) else { continue };
                        self.throttle(state.len()).await;
                        item_bytes += state.len() as u64;
                        pushed += 1;
                        count_transfer("push", state.len());
                        let req = Request::Replicate { key: to_wire(&key), state };
                        if let Err(e) = self.peer_request(peer, req, timeout).await {
                            return Err(format!("push to {} failed: {e}", self.member_name(peer)));
                        }
                    }
                    let mut p = self.ae.progress();
                    // Keys actually moved (the exchange's own counters count what it asked for).
                    p.keys_pushed += pushed;
                    p.keys_pulled += pulled;
                    p.item_bytes += item_bytes;
                    p.digests_received += stats.digests_received;
                    p.leaves_differing += stats.leaves_differing;
                    metrics::counter!("quorumdb_antientropy_exchanges_total", "outcome" => "done")
                        .increment(1);
                    metrics::counter!("quorumdb_antientropy_digests_received_total")
                        .increment(stats.digests_received);
                    let set: Vec<String> = tree.set.iter().map(|i| self.member_name(*i)).collect();
                    metrics::gauge!(
                        "quorumdb_antientropy_last_exchange_timestamp_seconds",
                        "table" => tree.table.clone(),
                        "replicas" => set.join(",")
                    )
                    .set(unix_ms() as f64 / 1000.0);
                    return Ok(stats);
                }
                Command::Failed(e) => {
                    metrics::counter!("quorumdb_antientropy_exchanges_total", "outcome" => "failed")
                        .increment(1);
                    return Err(e.to_string());
                }
            };
            queue.extend(next);
        }
        Err("exchange ended without an outcome".into())
    }

    /// One pass: every tree this node holds (optionally one table's), with every live peer of
    /// its replica set, repeating an exchange while it reports more differences.
    pub async fn antientropy_pass(self: Arc<Self>, table: Option<String>, full: bool) {
        let _pass = self.ae.pass.lock().await;
        let trees: Vec<TreeId> = self
            .ae
            .tree_ids()
            .into_iter()
            .filter(|t| table.as_ref().is_none_or(|name| &t.table == name))
            .collect();
        let work: Vec<(TreeId, usize)> = trees
            .iter()
            .flat_map(|t| t.set.iter().filter(|p| **p != self.me).map(move |p| (t.clone(), *p)))
            .collect();
        if full {
            let mut p = self.ae.progress();
            *p = RepairProgress {
                running: true,
                table: table.clone(),
                exchanges_total: work.len(),
                passes_completed: p.passes_completed,
                ..Default::default()
            };
        }
        for (tree, peer) in work {
            if !self.is_up(peer) {
                if full {
                    self.ae.progress().exchanges_failed += 1;
                }
                continue;
            }
            let mut ok = true;
            for _ in 0..EXCHANGES_PER_ROUND_MAX {
                match self.run_exchange(&tree, peer).await {
                    Ok(stats) if stats.more_remaining => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, table = %tree.table, "anti-entropy exchange failed");
                        ok = false;
                        break;
                    }
                }
            }
            if full {
                let mut p = self.ae.progress();
                p.exchanges_done += 1;
                if !ok {
                    p.exchanges_failed += 1;
                }
            }
        }
        if full {
            let mut p = self.ae.progress();
            p.running = false;
            p.passes_completed += 1;
        }
    }

    /// Runs a background anti-entropy pass every `antientropy_interval_ms`, forever.
    pub async fn antientropy_loop(self: Arc<Self>) {
        if !self.ae.enabled || self.config.antientropy_interval_ms == 0 {
            return;
        }
        loop {
            tokio::time::sleep(Duration::from_millis(self.config.antientropy_interval_ms)).await;
            self.clone().antientropy_pass(None, false).await;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Tombstone garbage collection

    /// Purges tombstones older than the grace period that every home replica holds
    /// identically, forever.
    pub async fn gc_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(self.config.tombstone_gc_interval_ms)).await;
            if let Err(e) = self.gc_pass().await {
                tracing::debug!(error = %e, "tombstone gc pass failed");
            }
            metrics::gauge!("quorumdb_tombstones").set(self.storage.tombstone_count() as f64);
        }
    }

    async fn gc_pass(self: &Arc<Self>) -> Result<(), ApiError> {
        let now = unix_ms();
        let grace = self.config.tombstone_grace_ms;
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        for (sk, _since) in self.storage.tombstones_older_than(now, grace, GC_BATCH_LEN_MAX)? {
            let Ok(key) = ItemKey::from_storage_key(&sk) else {
                self.storage.unmark_tombstone(&sk)?;
                continue;
            };
            let Some(mine) = self.storage.get(&key)? else {
                self.storage.unmark_tombstone(&sk)?;
                continue;
            };
            if !(mine.has_tombstone() && mine.is_deleted()) {
                self.storage.unmark_tombstone(&sk)?;
                continue;
            }
            // Every home replica must hold exactly this tombstone: then no replica can hand an
            // older version back after the purge (hints older than the grace period expire).
            let mut all_hold = true;
            for idx in self.preference_of(&key) {
                if idx == self.me {
                    continue;
                }
                let req = Request::TombstoneHeld { key: to_wire(&key), state: mine.encode() };
                let held =
                    matches!(self.peer_request(idx, req, timeout).await, Ok(Response::Held { held: true }));
                if !held {
                    all_hold = false;
                    break;
                }
            }
            if all_hold {
                self.purge(&key, &mine)?;
            }
        }
        // Purge records only need to outlive the slowest replica's own purge.
        for (sk, at) in self.storage.purge_records(GC_BATCH_LEN_MAX)? {
            if now.saturating_sub(at) > grace.saturating_mul(2) {
                self.storage.forget_purge(&sk)?;
            }
        }
        self.storage.sync().await?;
        Ok(())
    }
}
