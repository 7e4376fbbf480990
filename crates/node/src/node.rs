//! The node runtime: the thin async shell that runs the core's coordinator state machines
//! against real storage and the peer transport.
//!
//! ```text
//!  HTTP ─► Node::put/delete ─► home replica? ──no──► forward CoordinateWrite to first live home replica
//!                                   │yes
//!                                   ▼
//!              lock stripe · ItemState::update(ctx, value, actor) · storage.put · unlock
//!                                   │
//!              ┌── storage.sync() (group-committed fsync) ──┐
//!              └── Replicate{state} to the other N-1 ───────┴─► WriteCoordinator (W acks or error)
//!
//!  HTTP ─► Node::get ─► Read to all N home replicas ─► ReadCoordinator (R replies → answer)
//!                                                      └─ keeps listening until all replied or
//!                                                         deadline, then read-repairs stale ones
//! ```
//!
//! Writes are coordinated by a home replica because a new dot must be generated against that
//! replica's durable local state (counter = highest seen + 1); a non-replica cannot do that.

use crate::antientropy::AntiEntropy;
use crate::config::{ConflictMode, NodeConfig, QuorumMode, ReadRepair};
use crate::error::ApiError;
use crate::lww;
use crate::storage::Storage;
use crate::transport::{FaultLayer, PeerClient, TransportError};
use crate::wire::{PageItem, Request, Response, WireKey};
use quorumdb_core::causality::{ItemState, Value, VersionVector};
use quorumdb_core::consistency::Level;
use quorumdb_core::coordinator::{Mergeable, Outcome, QuorumError, ReadCoordinator, WriteCoordinator};
use quorumdb_core::handoff::{HandoffCommand, Hint, HintQueue};
use quorumdb_core::key::ItemKey;
use quorumdb_core::limits::VALUE_BYTES_MAX;
use quorumdb_core::ring::{Member, Ring, VNODES_PER_NODE_DEFAULT};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Number of lock stripes serializing read-modify-write of items at a replica. Two items share a
/// stripe with probability 1/4096, which only costs a little concurrency, never correctness.
pub const KEY_LOCK_STRIPES: usize = 4096;

/// Liveness of one peer as seen by this node.
#[derive(Default)]
struct PeerHealth {
    /// Milliseconds (node clock) since when exchanges with the peer keep failing; 0 = healthy.
    failing_since_ms: AtomicU64,
}

pub struct Node {
    pub config: NodeConfig,
    pub ring: Ring,
    /// This node's index in `ring.members()`.
    pub me: usize,
    pub storage: Arc<Storage>,
    /// Clients for every other member, indexed like `ring.members()` (`None` at `me`).
    peers: Vec<Option<Arc<PeerClient>>>,
    health: Vec<PeerHealth>,
    pub faults: Arc<FaultLayer>,
    locks: Vec<std::sync::Mutex<()>>,
    /// Origin of the node's monotonic millisecond clock handed to the core state machines.
    started: Instant,
    pub ready: AtomicBool,
    /// Hints for replicas that missed writes (see [`quorumdb_core::handoff`]); mirrored durably
    /// in the storage's `hints` keyspace.
    hints: std::sync::Mutex<HintQueue>,
    /// Last hybrid-logical-clock timestamp issued or observed (last-writer-wins tables).
    hlc: AtomicU64,
    /// Merkle trees and repair progress (see [`crate::antientropy`]).
    pub ae: AntiEntropy,
}

/// The result of a scan at the coordinator.
pub struct ScanResult {
    pub items: Vec<(Vec<u8>, ItemState)>,
    pub next: Option<String>,
}

impl Node {
    pub fn new(config: NodeConfig, storage: Arc<Storage>) -> Result<Arc<Self>, String> {
        let members: Vec<Member> =
            config.members.iter().map(|m| Member { id: m.id.clone(), zone: m.zone.clone() }).collect();
        let ring = Ring::new(members, VNODES_PER_NODE_DEFAULT).map_err(|e| e.to_string())?;
        let me = ring.index_of(&config.node_id).ok_or("node_id is not a member")?;
        let faults = Arc::new(FaultLayer::default());
        let peers = config
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (i != me).then(|| {
                    Arc::new(PeerClient::new(
                        config.node_id.clone(),
                        m.id.clone(),
                        m.peer.clone(),
                        config.peer_inflight_max,
                        faults.clone(),
                    ))
                })
            })
            .collect();
        let health = config.members.iter().map(|_| PeerHealth::default()).collect();
        let locks = (0..KEY_LOCK_STRIPES).map(|_| std::sync::Mutex::new(())).collect();
        let antientropy = config.antientropy;
        let stored = storage.load_hints().map_err(|e| e.to_string())?;
        let (hints, dropped) = HintQueue::restore(config.hint_limits(), stored, unix_ms());
        for cmd in dropped {
            if let HandoffCommand::Drop { id, .. } | HandoffCommand::Delete { id } = cmd {
                storage.delete_hint(id).map_err(|e| e.to_string())?;
            }
        }
        Ok(Arc::new(Node {
            config,
            ring,
            me,
            storage,
            peers,
            health,
            faults,
            locks,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            hints: std::sync::Mutex::new(hints),
            hlc: AtomicU64::new(0),
            ae: AntiEntropy::new(antientropy),
        }))
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Wall-clock milliseconds since the Unix epoch as this node believes it, including any
    /// skew the lab injected. Only for timestamps that users see or compare (LWW); never for
    /// timeouts.
    pub fn wall_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        now.saturating_add(self.faults.clock_offset_ms())
    }

    pub fn id(&self) -> &str {
        &self.config.node_id
    }

    /// The id of member `idx`.
    pub(crate) fn member_name(&self, idx: usize) -> String {
        self.name(idx)
    }

    /// The home replicas of `key`, primary first.
    pub(crate) fn preference_of(&self, key: &ItemKey) -> Vec<usize> {
        self.preference(key)
    }

    /// One request to peer `idx` (liveness is recorded from the outcome).
    pub(crate) async fn peer_request(
        &self,
        idx: usize,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, String> {
        self.send(idx, req, timeout).await.map_err(|e| e.to_string())
    }

    fn name(&self, idx: usize) -> String {
        self.ring.members().get(idx).map(|m| m.id.clone()).unwrap_or_default()
    }

    // -----------------------------------------------------------------------------------------
    // Liveness

    fn record(&self, idx: usize, ok: bool) {
        let Some(h) = self.health.get(idx) else { return };
        if ok {
            h.failing_since_ms.store(0, Ordering::Release);
        } else {
            // Keep the first failure time; `max(1)` because 0 means healthy.
            let _ = h.failing_since_ms.compare_exchange(
                0,
                self.now_ms().max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Whether `idx` is believed alive: it has not been failing for `failure_timeout_ms`.
    pub fn is_up(&self, idx: usize) -> bool {
        if idx == self.me {
            return true;
        }
        let since = self.health.get(idx).map(|h| h.failing_since_ms.load(Ordering::Acquire)).unwrap_or(0);
        since == 0 || self.now_ms().saturating_sub(since) < self.config.failure_timeout_ms
    }

    /// Pings every peer forever at the heartbeat interval.
    pub async fn heartbeat_loop(self: Arc<Self>) {
        let interval = Duration::from_millis(self.config.heartbeat_interval_ms);
        loop {
            for idx in 0..self.peers.len() {
                let node = self.clone();
                tokio::spawn(async move {
                    let ok = matches!(node.send(idx, Request::Ping, interval).await, Ok(Response::Pong));
                    node.record(idx, ok);
                    metrics::gauge!("quorumdb_peer_up", "peer" => node.name(idx)).set(if node.is_up(idx) {
                        1.0
                    } else {
                        0.0
                    });
                });
            }
            tokio::time::sleep(interval).await;
        }
    }

    async fn send(&self, idx: usize, req: Request, timeout: Duration) -> Result<Response, TransportError> {
        let Some(Some(peer)) = self.peers.get(idx) else {
            return Err(TransportError::Connect("no such peer".into()));
        };
        let r = peer.request(req, timeout).await;
        // Any answer proves liveness; a timeout or refused connection counts against it.
        self.record(idx, r.is_ok());
        r
    }

    // -----------------------------------------------------------------------------------------
    // Placement helpers

    fn replication_factor(&self, table: &str) -> usize {
        self.config.replication_factor_of(table).min(self.ring.members().len())
    }

    fn preference(&self, key: &ItemKey) -> Vec<usize> {
        self.ring.preference_list(key.placement_hash(), self.replication_factor(&key.table))
    }

    fn lock(&self, key: &ItemKey) -> std::sync::MutexGuard<'_, ()> {
        let stripe = (xxhash_stripe(&key.storage_key()) % KEY_LOCK_STRIPES as u64) as usize;
        // A poisoned stripe only means another request panicked while holding it; the guarded
        // data lives in fjall, not behind the mutex, so continuing is safe.
        match self.locks[stripe].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Replica-local operations

    /// Applies a client write to the local replica under a new dot and returns the new state
    /// (inserted but not yet durable).
    fn apply_local_write(
        &self,
        key: &ItemKey,
        value: Value,
        ctx: &VersionVector,
    ) -> Result<ItemState, ApiError> {
        let _g = self.lock(key);
        let (old_raw, local) = self.load(key)?;
        let new = match self.config.conflict_of(&key.table) {
            ConflictMode::Siblings => local.update(ctx, value, self.storage.actor())?,
            ConflictMode::Lww => {
                // The write becomes a concurrent sibling stamped with this replica's clock, and
                // resolution keeps the highest timestamp: the client's context plays no part.
                let stamped = lww::stamp(self.hlc_now(), value);
                lww::resolve(&local.update(&VersionVector::new(), stamped, self.storage.actor())?)
            }
        };
        self.store(key, old_raw.as_deref(), &local, &new)?;
        Ok(new)
    }

    /// The stored encoding and decoded state of an item (empty state when absent).
    fn load(&self, key: &ItemKey) -> Result<(Option<Vec<u8>>, ItemState), ApiError> {
        let raw = self.storage.get_raw(key)?;
        let state = match &raw {
            Some(bytes) => ItemState::decode(bytes)
                .map_err(|e| ApiError::Internal(format!("stored item is corrupt: {e}")))?,
            None => ItemState::new(),
        };
        Ok((raw, state))
    }

    /// Merges a replicated state into the local replica and waits until it is durable.
    pub async fn merge_local(&self, key: &ItemKey, incoming: &ItemState) -> Result<(), ApiError> {
        let lww = self.config.conflict_of(&key.table) == ConflictMode::Lww;
        if lww {
            // Hybrid logical clock receive rule: never stamp below a timestamp already seen.
            self.hlc.fetch_max(lww::max_timestamp(incoming), Ordering::AcqRel);
        }
        {
            let _g = self.lock(key);
            let (old_raw, local) = self.load(key)?;
            if !local.descends(incoming) && !self.is_purged_echo(key, old_raw.is_none(), incoming)? {
                let mut merged = ItemState::merged(&local, incoming);
                if lww {
                    merged = lww::resolve(&merged);
                }
                self.store(key, old_raw.as_deref(), &local, &merged)?;
            }
        }
        // Even an unchanged state may not be durable yet (another writer inserted it a moment
        // ago), so always wait for the group commit before acknowledging.
        self.storage.sync().await?;
        Ok(())
    }

    /// Whether `incoming` is a tombstone this replica already purged (sent back by a replica
    /// that has not purged it yet): storing it again would restart its grace period forever.
    fn is_purged_echo(&self, key: &ItemKey, absent: bool, incoming: &ItemState) -> Result<bool, ApiError> {
        if !(absent && incoming.has_tombstone() && incoming.is_deleted()) {
            return Ok(false);
        }
        Ok(match self.storage.purge_record(&key.storage_key())? {
            Some((_, final_state)) => ItemState::decode(&final_state).is_ok_and(|f| f.descends(incoming)),
            None => false,
        })
    }

    /// Replaces the stored item (encoded as `old_raw`, decoded as `old`) by `new` (not yet
    /// durable). Every change of a stored item goes through here, so the Merkle trees and
    /// tombstone records stay in step with the data.
    fn store(
        &self,
        key: &ItemKey,
        old_raw: Option<&[u8]>,
        old: &ItemState,
        new: &ItemState,
    ) -> Result<(), ApiError> {
        let encoded = new.encode();
        self.storage.put_encoded(key, encoded.clone())?;
        let was_tombstone = old.has_tombstone() && old.is_deleted();
        self.after_store(key, old_raw, Some((&encoded, new)), was_tombstone);
        Ok(())
    }

    /// Removes a tombstone every replica holds (garbage collection), if it is still what is
    /// stored, and remembers the purge.
    pub(crate) fn purge(&self, key: &ItemKey, expected: &ItemState) -> Result<(), ApiError> {
        let _g = self.lock(key);
        let (old_raw, local) = self.load(key)?;
        if &local != expected {
            return Ok(());
        }
        let sk = key.storage_key();
        self.storage.remove(key)?;
        self.storage.record_purge(&sk, unix_ms(), &expected.encode())?;
        self.after_store(key, old_raw.as_deref(), None, true);
        self.storage.unmark_tombstone(&sk)?;
        metrics::counter!("quorumdb_tombstones_purged_total").increment(1);
        Ok(())
    }

    /// A new hybrid-logical-clock timestamp: `(wall ms << 16) | logical`, strictly greater than
    /// every timestamp this node issued or observed. The wall clock includes injected skew.
    fn hlc_now(&self) -> u64 {
        let physical = (self.wall_ms().max(0) as u64) << 16;
        let mut last = self.hlc.load(Ordering::Acquire);
        loop {
            let next = physical.max(last + 1);
            match self.hlc.compare_exchange(last, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// The state as a client sees it: for last-writer-wins tables, the winning value without
    /// its timestamp (or nothing, if the winner is a delete).
    pub fn client_view(&self, table: &str, state: &ItemState) -> ItemState {
        match self.config.conflict_of(table) {
            ConflictMode::Siblings => state.clone(),
            ConflictMode::Lww => lww::client_view(&lww::resolve(state)),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Writes

    /// Writes (or deletes, with `value = None`) one item at consistency `w`.
    pub async fn write(
        self: &Arc<Self>,
        key: ItemKey,
        value: Option<Vec<u8>>,
        ctx: VersionVector,
        w: Level,
        mode: QuorumMode,
        timeout: Duration,
    ) -> Result<ItemState, ApiError> {
        if let Some(v) = &value {
            if v.len() > VALUE_BYTES_MAX {
                return Err(ApiError::ValueTooLarge(format!(
                    "value must be at most {VALUE_BYTES_MAX} bytes, got {} bytes",
                    v.len()
                )));
            }
        }
        let n = self.replication_factor(&key.table);
        let w = w.resolve("w", n)?;
        let pref = self.preference(&key);
        if pref.contains(&self.me) {
            return self.coordinate_write(key, value, ctx, w, mode, timeout).await;
        }
        // Forward to the first live home replica; on a refused connection try the next one.
        // A timeout is not retried elsewhere: the write may have happened, and retrying would
        // only add a duplicate sibling. The client sees a timeout (unknown outcome).
        let mut last_err = None;
        for idx in pref.iter().copied().filter(|i| self.is_up(*i)) {
            let req = Request::CoordinateWrite {
                key: to_wire(&key),
                value: value.clone(),
                context: ctx.to_token(),
                n: n as u32,
                w: w as u32,
                sloppy: mode == QuorumMode::Sloppy,
                timeout_ms: timeout.as_millis() as u64,
            };
            // Give the remote coordinator its whole timeout plus a margin to report back.
            match self.send(idx, req, timeout + Duration::from_millis(200)).await {
                Ok(Response::Written { state }) => return decode_state(&state),
                Ok(Response::QuorumFailed { needed, got, outcomes, message }) => {
                    return Err(ApiError::Quorum(crate::error::QuorumDetails {
                        needed: needed as usize,
                        got: got as usize,
                        outcomes,
                        message,
                    }))
                }
                Ok(Response::Error { code, message }) => return Err(ApiError::from_code(&code, message)),
                Ok(other) => return Err(ApiError::Internal(format!("unexpected response {other:?}"))),
                Err(TransportError::Timeout) => {
                    return Err(ApiError::Timeout(format!(
                        "write coordinator {} did not answer within {} ms; the write may or may not have been applied",
                        self.name(idx),
                        timeout.as_millis()
                    )))
                }
                Err(e) => last_err = Some(format!("{}: {e}", self.name(idx))),
            }
        }
        Err(ApiError::Unavailable(format!(
            "no home replica of this key is reachable to coordinate the write ({})",
            last_err.unwrap_or_else(|| "all are down".into())
        )))
    }

    /// The nodes a request for `key` goes to: the live home replicas, and in sloppy mode, for
    /// each home replica known down, the next live node further along the ring standing in for
    /// it. Returns `(targets as (node, stands_in_for), home replicas known down)`.
    fn request_targets(&self, key: &ItemKey, mode: QuorumMode) -> (Vec<(usize, Option<usize>)>, Vec<usize>) {
        let pref = self.preference(key);
        let mut targets = Vec::with_capacity(pref.len());
        let mut down = Vec::new();
        for &idx in &pref {
            if idx == self.me || self.is_up(idx) {
                targets.push((idx, None));
            } else {
                down.push(idx);
            }
        }
        if mode == QuorumMode::Sloppy && !down.is_empty() {
            let all = self.ring.preference_list(key.placement_hash(), self.ring.members().len());
            let mut fallbacks = all.into_iter().filter(|i| !pref.contains(i) && self.is_up(*i));
            for &home in &down {
                // The coordinator machines bound their replica lists; stay within it.
                if targets.len() + down.len() >= quorumdb_core::limits::REPLICATION_FACTOR_MAX {
                    break;
                }
                if let Some(f) = fallbacks.next() {
                    targets.push((f, Some(home)));
                }
            }
        }
        (targets, down)
    }

    /// Runs at a home replica: local update under a new dot, then replication to the others.
    pub async fn coordinate_write(
        self: &Arc<Self>,
        key: ItemKey,
        value: Option<Vec<u8>>,
        ctx: VersionVector,
        w: usize,
        mode: QuorumMode,
        timeout: Duration,
    ) -> Result<ItemState, ApiError> {
        let value = match value {
            Some(v) => Value::Data(v),
            None => Value::Tombstone,
        };
        let new = self.apply_local_write(&key, value, &ctx)?;
        let (targets, down) = self.request_targets(&key, mode);
        let mut names: Vec<String> = targets.iter().map(|(i, _)| self.name(*i)).collect();
        names.extend(down.iter().map(|i| self.name(*i)));
        let deadline = self.now_ms() + timeout.as_millis() as u64;
        let mut coord = WriteCoordinator::new(names, w, deadline);
        for &idx in &down {
            coord.skip(&self.name(idx));
            metrics::counter!("quorumdb_replica_responses_total", "op" => "write", "outcome" => "down")
                .increment(1);
        }
        let (tx, mut rx) = mpsc::channel::<(String, Result<(), String>)>(targets.len().max(1));
        for &(idx, stands_in_for) in &targets {
            let name = self.name(idx);
            let node = self.clone();
            let tx = tx.clone();
            let key = key.clone();
            let state = new.clone();
            tokio::spawn(async move {
                let result = if idx == node.me {
                    node.storage.sync().await.map_err(|e| e.to_string())
                } else {
                    let req = match stands_in_for {
                        None => Request::Replicate { key: to_wire(&key), state: state.encode() },
                        Some(home) => Request::StoreHint {
                            target: node.name(home),
                            key: to_wire(&key),
                            state: state.encode(),
                        },
                    };
                    match node.send(idx, req, timeout).await {
                        Ok(Response::Ack) => Ok(()),
                        Ok(Response::Error { message, .. }) => Err(message),
                        Ok(other) => Err(format!("unexpected response {other:?}")),
                        Err(e) => Err(e.to_string()),
                    }
                };
                let outcome = outcome_label(&result);
                metrics::counter!("quorumdb_replica_responses_total", "op" => "write", "outcome" => outcome)
                    .increment(1);
                let _ = tx.send((name, result)).await;
            });
        }
        drop(tx);
        // The machine runs in its own task so the client gets its answer at W acks while the
        // task keeps listening to the stragglers and then hints the replicas that missed it.
        let (answer_tx, answer_rx) = oneshot::channel();
        let node = self.clone();
        let written = new.clone();
        tokio::spawn(async move {
            let mut answer_tx = Some(answer_tx);
            loop {
                match coord.decision() {
                    Some(Ok(())) => {
                        if let Some(tx) = answer_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    // A failure is reported once every replica answered (or the deadline
                    // passed), so the error tells the client how many replicas hold the write.
                    Some(Err(e)) if coord.is_finished() => {
                        if let Some(tx) = answer_tx.take() {
                            let _ = tx.send(Err(final_error(e, coord.outcomes())));
                        }
                    }
                    _ => {}
                }
                if coord.is_finished() {
                    break;
                }
                node.next_reply(&mut coord, &mut rx, deadline).await;
            }
            // Hint every home replica that does not hold the write and has no stand-in that does.
            let ok = |name: &str| coord.outcomes().iter().any(|(n, o)| n == name && *o == Outcome::Ok);
            let covered = |home: usize| targets.iter().any(|(f, s)| *s == Some(home) && ok(&node.name(*f)));
            let homes = node.preference(&key);
            let mut hinted = false;
            for home in homes.into_iter().filter(|h| *h != node.me) {
                if !ok(&node.name(home)) && !covered(home) {
                    node.add_hint(node.name(home), &key, &written);
                    hinted = true;
                }
            }
            // Hints are what makes up for the missed replica: make them durable now rather
            // than with whichever write happens to come next.
            if hinted {
                let _ = node.storage.sync().await;
            }
        });
        match answer_rx.await {
            Ok(Ok(())) => Ok(new),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ApiError::Internal("write coordinator stopped without a decision".into())),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Hinted handoff

    /// Queues a hint for `target` and stores it (durable with the next group commit). A refused
    /// hint (queue full) is counted; anti-entropy repairs that replica instead.
    fn add_hint(&self, target: String, key: &ItemKey, state: &ItemState) {
        if !self.config.hinted_handoff {
            return;
        }
        let storage_key = key.storage_key();
        let mut q = match self.hints.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        // A new hint replaces the queued one for the same target and key, so it must carry
        // both: a stand-in collects hints from several coordinators whose states may be
        // concurrent.
        let merged = match q.get(&target, &storage_key).and_then(|(_, h)| ItemState::decode(&h.state).ok()) {
            Some(queued) => ItemState::merged(&queued, state),
            None => state.clone(),
        };
        let hint = Hint { target, key: storage_key, state: merged.encode(), created_ms: unix_ms() };
        match q.add(hint.clone(), unix_ms()) {
            Ok(added) => {
                metrics::counter!("quorumdb_hints_added_total").increment(1);
                let stored = self.storage.put_hint(added.id, &hint);
                let removed = added.superseded.map(|old| self.storage.delete_hint(old));
                if let Err(e) = stored.and(removed.unwrap_or(Ok(()))) {
                    tracing::warn!(error = %e, "cannot store hint; anti-entropy will repair the replica");
                }
            }
            Err(refused) => {
                metrics::counter!("quorumdb_hints_refused_total").increment(1);
                tracing::debug!(%refused, "hint refused; anti-entropy will repair the replica");
            }
        }
        let stats = q.stats();
        metrics::gauge!("quorumdb_hints_queued").set(stats.len as f64);
        metrics::gauge!("quorumdb_hints_bytes").set(stats.bytes as f64);
    }

    /// Hinted states this node keeps for `key` (as a sloppy-quorum stand-in), merged.
    fn hinted_state(&self, key: &ItemKey) -> Option<ItemState> {
        let q = self.hints.lock().ok()?;
        let storage_key = key.storage_key();
        let mut merged: Option<ItemState> = None;
        for m in self.ring.members() {
            if let Some((_, hint)) = q.get(&m.id, &storage_key) {
                if let Ok(st) = ItemState::decode(&hint.state) {
                    merged = Some(match merged {
                        None => st,
                        Some(acc) => ItemState::merged(&acc, &st),
                    });
                }
            }
        }
        merged
    }

    /// Delivers hints to their targets when they are up, forever.
    pub async fn handoff_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_millis(HANDOFF_TICK_MS)).await;
            let cmds = {
                let Ok(mut q) = self.hints.lock() else { continue };
                q.tick(unix_ms(), |t| self.ring.index_of(t).is_some_and(|i| self.is_up(i)))
            };
            self.run_handoff_commands(cmds);
        }
    }

    fn run_handoff_commands(self: &Arc<Self>, cmds: Vec<HandoffCommand>) {
        for cmd in cmds {
            match cmd {
                HandoffCommand::Deliver { id, target, key, state } => {
                    let node = self.clone();
                    tokio::spawn(async move {
                        let delivered = match (node.ring.index_of(&target), ItemKey::from_storage_key(&key)) {
                            (Some(idx), Ok(item)) => {
                                let req = Request::Replicate { key: to_wire(&item), state };
                                let timeout = Duration::from_millis(node.config.request_timeout_ms);
                                matches!(node.send(idx, req, timeout).await, Ok(Response::Ack))
                            }
                            // A hint for a member that no longer exists cannot be delivered.
                            _ => false,
                        };
                        let next = {
                            let Ok(mut q) = node.hints.lock() else { return };
                            if delivered {
                                metrics::counter!("quorumdb_hints_delivered_total").increment(1);
                                q.on_delivered(id, unix_ms())
                            } else {
                                q.on_failed(id, unix_ms());
                                Vec::new()
                            }
                        };
                        node.run_handoff_commands(next);
                    });
                }
                HandoffCommand::Delete { id } => {
                    let _ = self.storage.delete_hint(id);
                }
                HandoffCommand::Drop { id, reason } => {
                    metrics::counter!("quorumdb_hints_dropped_total", "reason" => reason.to_string())
                        .increment(1);
                    let _ = self.storage.delete_hint(id);
                }
            }
        }
        if let Ok(q) = self.hints.lock() {
            let stats = q.stats();
            metrics::gauge!("quorumdb_hints_queued").set(stats.len as f64);
            metrics::gauge!("quorumdb_hints_bytes").set(stats.bytes as f64);
        }
    }

    /// Current hint-queue statistics.
    pub fn hint_stats(&self) -> quorumdb_core::handoff::HintStats {
        self.hints.lock().map(|q| q.stats()).unwrap_or_default()
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    /// Reads one item at consistency `r`, merging the replicas' sibling sets.
    pub async fn read(
        self: &Arc<Self>,
        key: ItemKey,
        r: Level,
        repair: ReadRepair,
        mode: QuorumMode,
        timeout: Duration,
    ) -> Result<ItemState, ApiError> {
        let n = self.replication_factor(&key.table);
        let r = r.resolve("r", n)?;
        let (targets, down) = self.request_targets(&key, mode);
        let mut names: Vec<String> = targets.iter().map(|(i, _)| self.name(*i)).collect();
        names.extend(down.iter().map(|i| self.name(*i)));
        let deadline = self.now_ms() + timeout.as_millis() as u64;
        let mut coord: ReadCoordinator<ItemState> = ReadCoordinator::new(names, r, deadline);
        for &idx in &down {
            coord.skip(&self.name(idx));
            metrics::counter!("quorumdb_replica_responses_total", "op" => "read", "outcome" => "down")
                .increment(1);
        }
        let (tx, mut rx) = mpsc::channel::<(String, Result<ItemState, String>)>(targets.len().max(1));
        for &(idx, _) in &targets {
            let name = self.name(idx);
            let node = self.clone();
            let tx = tx.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let result = node.read_replica(idx, &key, timeout).await;
                let outcome = outcome_label(&result);
                metrics::counter!("quorumdb_replica_responses_total", "op" => "read", "outcome" => outcome)
                    .increment(1);
                let _ = tx.send((name, result)).await;
            });
        }
        drop(tx);
        // The coordinator runs in its own task so it can answer at R replies and keep listening
        // for the stragglers it needs to decide read repair.
        let (answer_tx, answer_rx) = oneshot::channel();
        let node = self.clone();
        tokio::spawn(async move {
            let mut answer_tx = Some(answer_tx);
            // Replicas already repaired before answering (blocking mode); not repaired twice.
            let mut repaired: Vec<String> = Vec::new();
            loop {
                // Answer at success; report a failure only once every replica answered or the
                // deadline passed, so the error names the final outcome of each replica.
                match coord.decision() {
                    Some(Ok(state)) if answer_tx.is_some() => {
                        let mut failed: Vec<String> = Vec::new();
                        if matches!(repair, ReadRepair::Blocking | ReadRepair::WriteBack) {
                            // Repair the stale replicas of the read set before answering, so a
                            // later quorum read cannot observe an older state (monotonic reads).
                            let repairs = coord.repairs();
                            repaired = repairs.iter().map(|(r, _)| r.clone()).collect();
                            let left = Duration::from_millis(deadline.saturating_sub(node.now_ms()));
                            let waits = repairs.into_iter().map(|(replica, st)| {
                                let node = node.clone();
                                let key = key.clone();
                                tokio::spawn(async move {
                                    let ok = node.clone().repair_one(key, replica.clone(), st, left).await;
                                    (replica, ok)
                                })
                            });
                            for w in waits.collect::<Vec<_>>() {
                                if let Ok((replica, false)) = w.await {
                                    failed.push(replica);
                                }
                            }
                        }
                        if let Some(tx) = answer_tx.take() {
                            // A linearizable read may only answer once a quorum holds what it
                            // returns; otherwise a later read could miss it.
                            let answer = if repair == ReadRepair::WriteBack && !failed.is_empty() {
                                Err(ApiError::Unavailable(format!(
                                    "linearizable read: write-back to {} failed; the value read is not yet on a quorum",
                                    failed.join(", ")
                                )))
                            } else {
                                Ok(state)
                            };
                            let _ = tx.send(answer);
                        }
                        if repair == ReadRepair::Off {
                            return;
                        }
                    }
                    Some(Err(e)) if coord.is_finished() => {
                        if let Some(tx) = answer_tx.take() {
                            let _ = tx.send(Err(final_error(e, coord.outcomes()).into()));
                        }
                    }
                    _ => {}
                }
                if coord.is_finished() {
                    break;
                }
                node.next_reply(&mut coord, &mut rx, deadline).await;
            }
            if let (Some(decision), Some(tx)) = (coord.decision(), answer_tx.take()) {
                let _ = tx.send(decision.map_err(ApiError::from));
            }
            if repair != ReadRepair::Off && coord.decision().is_some_and(|d| d.is_ok()) {
                for (replica, state) in coord.repairs() {
                    if !repaired.contains(&replica) {
                        let node = node.clone();
                        let key = key.clone();
                        tokio::spawn(async move { node.repair_one(key, replica, state, timeout).await });
                    }
                }
            }
        });
        match answer_rx.await {
            Ok(decision) => decision,
            Err(_) => Err(ApiError::Internal("read coordinator stopped without a decision".into())),
        }
    }

    /// Sends the merged state to one stale replica and waits for its acknowledgement; returns
    /// whether the replica acknowledged.
    async fn repair_one(
        self: Arc<Self>,
        key: ItemKey,
        replica: String,
        state: ItemState,
        timeout: Duration,
    ) -> bool {
        let Some(idx) = self.ring.index_of(&replica) else { return false };
        metrics::counter!("quorumdb_read_repairs_total").increment(1);
        if idx == self.me {
            self.merge_local(&key, &state).await.is_ok()
        } else {
            let req = Request::Replicate { key: to_wire(&key), state: state.encode() };
            matches!(self.send(idx, req, timeout).await, Ok(Response::Ack))
        }
    }

    /// One replica's local state of an item (empty when absent): read locally when `idx` is
    /// this node, else over the transport. Errors are the text a quorum error shows.
    async fn read_replica(&self, idx: usize, key: &ItemKey, timeout: Duration) -> Result<ItemState, String> {
        if idx == self.me {
            return self.storage.get(key).map(Option::unwrap_or_default).map_err(|e| e.to_string());
        }
        match self.send(idx, Request::Read { key: to_wire(key) }, timeout).await {
            Ok(Response::Item { state }) => ItemState::decode(&state).map_err(|e| e.to_string()),
            Ok(Response::Error { message, .. }) => Err(message),
            Ok(other) => Err(format!("unexpected response {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Every home replica's local state of one item, as (node index, state or error), in
    /// preference-list order. Repairs nothing: this is how an operator sees divergence.
    pub async fn inspect(
        self: &Arc<Self>,
        key: ItemKey,
        timeout: Duration,
    ) -> Vec<(usize, Result<ItemState, String>)> {
        let pref = self.preference(&key);
        let mut set = tokio::task::JoinSet::new();
        for &idx in &pref {
            let node = self.clone();
            let key = key.clone();
            set.spawn(async move {
                let result = node.read_replica(idx, &key, timeout).await;
                (idx, result)
            });
        }
        let mut out: Vec<_> = set.join_all().await;
        out.sort_by_key(|(idx, _)| pref.iter().position(|p| p == idx));
        out
    }

    // -----------------------------------------------------------------------------------------
    // Scans

    /// Reads one page of a partition, sort keys in `[from, to)`, merging replicas' items.
    #[allow(clippy::too_many_arguments)]
    pub async fn scan(
        self: &Arc<Self>,
        table: &str,
        partition: &[u8],
        mut from: Option<Vec<u8>>,
        mut to: Option<Vec<u8>>,
        limit: usize,
        reverse: bool,
        cursor: Option<&str>,
        r: Level,
        timeout: Duration,
    ) -> Result<ScanResult, ApiError> {
        if let Some(c) = cursor {
            let (c_reverse, last) = decode_cursor(c)?;
            if c_reverse != reverse {
                return Err(ApiError::BadRequest("cursor was issued for the other scan direction".into()));
            }
            if reverse {
                // Continue strictly below the last key returned.
                to = Some(match to {
                    Some(t) if t < last => t,
                    _ => last,
                });
            } else {
                // The smallest key strictly greater than `last` is `last ‖ 0x00`.
                let mut next = last;
                next.push(0);
                from = Some(match from {
                    Some(f) if f > next => f,
                    _ => next,
                });
            }
        }
        let key = ItemKey::new(table, partition, b"")?;
        let n = self.replication_factor(table);
        let r = r.resolve("r", n)?;
        let pref = self.preference(&key);
        let names: Vec<String> = pref.iter().map(|i| self.name(*i)).collect();
        let deadline = self.now_ms() + timeout.as_millis() as u64;
        let mut coord: ReadCoordinator<ScanMerge> = ReadCoordinator::new(names, r, deadline);
        let (tx, mut rx) = mpsc::channel::<(String, Result<ScanMerge, String>)>(pref.len());
        for &idx in &pref {
            let name = self.name(idx);
            if idx != self.me && !self.is_up(idx) {
                coord.skip(&name);
                continue;
            }
            let node = self.clone();
            let tx = tx.clone();
            let (table, partition, from, to) =
                (table.to_owned(), partition.to_vec(), from.clone(), to.clone());
            tokio::spawn(async move {
                let result = if idx == node.me {
                    node.storage
                        .scan(&table, &partition, from.as_deref(), to.as_deref(), limit, reverse)
                        .map(|p| ScanMerge::from_page(p.items, p.exhausted, reverse))
                        .map_err(|e| e.to_string())
                } else {
                    let req = Request::Scan { table, partition, from, to, limit: limit as u32, reverse };
                    match node.send(idx, req, timeout).await {
                        Ok(Response::Page { items, exhausted }) => items
                            .into_iter()
                            .map(|i| ItemState::decode(&i.state).map(|s| (i.sort, s)))
                            .collect::<Result<Vec<_>, _>>()
                            .map(|items| ScanMerge::from_page(items, exhausted, reverse))
                            .map_err(|e| e.to_string()),
                        Ok(Response::Error { message, .. }) => Err(message),
                        Ok(other) => Err(format!("unexpected response {other:?}")),
                        Err(e) => Err(e.to_string()),
                    }
                };
                let _ = tx.send((name, result)).await;
            });
        }
        drop(tx);
        let merged = loop {
            if let Some(decision) = coord.decision() {
                break decision.map_err(ApiError::from)?;
            }
            self.next_reply(&mut coord, &mut rx, deadline).await;
        };
        Ok(merged.into_result(limit))
    }

    // -----------------------------------------------------------------------------------------
    // Peer request handling

    pub async fn handle_peer(self: Arc<Self>, _from: String, req: Request) -> Response {
        match self.handle_peer_inner(req).await {
            Ok(r) => r,
            Err(e) => match e {
                ApiError::Quorum(d) => Response::QuorumFailed {
                    needed: d.needed as u32,
                    got: d.got as u32,
                    outcomes: d.outcomes,
                    message: d.message,
                },
                other => Response::Error { code: other.code().into(), message: other.to_string() },
            },
        }
    }

    async fn handle_peer_inner(self: &Arc<Self>, req: Request) -> Result<Response, ApiError> {
        match req {
            Request::Ping => Ok(Response::Pong),
            req @ (Request::AeHashes { .. }
            | Request::AeLeafKeys { .. }
            | Request::StartRepair { .. }
            | Request::TombstoneHeld { .. }) => self.handle_ae(req),
            Request::Read { key } => {
                let key = from_wire(key)?;
                let mut state = self.storage.get(&key)?.unwrap_or_default();
                // A sloppy-quorum stand-in answers from the hints it keeps for the key.
                if !self.preference(&key).contains(&self.me) {
                    if let Some(hinted) = self.hinted_state(&key) {
                        state.merge(&hinted);
                    }
                }
                Ok(Response::Item { state: state.encode() })
            }
            Request::StoreHint { target, key, state } => {
                let key = from_wire(key)?;
                let state = decode_state(&state)?;
                if self.ring.index_of(&target).is_none() {
                    return Err(ApiError::BadRequest(format!("hint for unknown member {target:?}")));
                }
                self.add_hint(target, &key, &state);
                self.storage.sync().await?;
                Ok(Response::Ack)
            }
            Request::Replicate { key, state } => {
                let key = from_wire(key)?;
                let state = decode_state(&state)?;
                self.merge_local(&key, &state).await?;
                Ok(Response::Ack)
            }
            Request::Scan { table, partition, from, to, limit, reverse } => {
                let limit = (limit as usize).min(quorumdb_core::limits::SCAN_PAGE_LEN_MAX);
                let page =
                    self.storage.scan(&table, &partition, from.as_deref(), to.as_deref(), limit, reverse)?;
                Ok(Response::Page {
                    items: page
                        .items
                        .into_iter()
                        .map(|(sort, s)| PageItem { sort, state: s.encode() })
                        .collect(),
                    exhausted: page.exhausted,
                })
            }
            Request::CoordinateWrite { key, value, context, n: _, w, sloppy, timeout_ms } => {
                let key = from_wire(key)?;
                if !self.preference(&key).contains(&self.me) {
                    return Err(ApiError::Unavailable(format!(
                        "{} is not a home replica of this key (member lists differ?)",
                        self.id()
                    )));
                }
                let ctx = VersionVector::from_token(&context)?;
                let timeout = Duration::from_millis(timeout_ms.min(crate::config::REQUEST_TIMEOUT_MS_MAX));
                let n = self.replication_factor(&key.table);
                let w = (w as usize).clamp(1, n);
                let mode = if sloppy { QuorumMode::Sloppy } else { QuorumMode::Strict };
                let state = self.coordinate_write(key, value, ctx, w, mode, timeout).await?;
                Ok(Response::Written { state: state.encode() })
            }
        }
    }
}

/// Rebuilds a quorum error from the replicas' final outcomes (the decision-time error may
/// still list replicas that answered later).
fn final_error(mut e: QuorumError, outcomes: &[(String, Outcome)]) -> QuorumError {
    e.got = outcomes.iter().filter(|(_, o)| *o == Outcome::Ok).count();
    e.outcomes = outcomes.to_vec();
    e
}

/// A coordinator machine fed with replica replies by [`Node::next_reply`].
trait Machine {
    type Reply;
    fn deliver(&mut self, from: &str, reply: Self::Reply);
    fn tick(&mut self, now_ms: u64);
}

impl Machine for WriteCoordinator {
    type Reply = Result<(), String>;
    fn deliver(&mut self, from: &str, reply: Self::Reply) {
        self.on_response(from, reply);
    }
    fn tick(&mut self, now_ms: u64) {
        WriteCoordinator::tick(self, now_ms);
    }
}

impl<S: Mergeable> Machine for ReadCoordinator<S> {
    type Reply = Result<S, String>;
    fn deliver(&mut self, from: &str, reply: Self::Reply) {
        self.on_response(from, reply);
    }
    fn tick(&mut self, now_ms: u64) {
        ReadCoordinator::tick(self, now_ms);
    }
}

impl Node {
    /// Feeds the machine the next replica reply, or, when every reply is in or the deadline
    /// passed, a tick that times out the rest. The one place coordinators wait on replicas.
    async fn next_reply<M: Machine>(
        &self,
        machine: &mut M,
        rx: &mut mpsc::Receiver<(String, M::Reply)>,
        deadline: u64,
    ) {
        let wait = Duration::from_millis(deadline.saturating_sub(self.now_ms()));
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some((name, reply))) => machine.deliver(&name, reply),
            Ok(None) | Err(_) => machine.tick(self.now_ms().max(deadline)),
        }
    }
}

/// The `outcome` label of `quorumdb_replica_responses_total` for one replica reply.
fn outcome_label<T>(result: &Result<T, String>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(m) if m == "timeout" => "timeout",
        Err(_) => "error",
    }
}

/// How often the handoff loop looks for hints to deliver.
const HANDOFF_TICK_MS: u64 = 100;

/// Unskewed wall-clock milliseconds: hint ages must survive restarts, so they cannot use the
/// per-process monotonic clock.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn xxhash_stripe(bytes: &[u8]) -> u64 {
    // Any decent hash works for striping; reuse the placement hash function family.
    quorumdb_core::key::placement_hash("lock", bytes)
}

pub fn to_wire(key: &ItemKey) -> WireKey {
    WireKey { table: key.table.clone(), partition: key.partition.clone(), sort: key.sort.clone() }
}

fn from_wire(key: WireKey) -> Result<ItemKey, ApiError> {
    Ok(ItemKey::new(&key.table, &key.partition, &key.sort)?)
}

fn decode_state(bytes: &[u8]) -> Result<ItemState, ApiError> {
    ItemState::decode(bytes).map_err(|e| ApiError::Internal(format!("peer sent a corrupt item state: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Scan merging

/// One replica's scan page (or the merge of several), as a [`Mergeable`] for the read coordinator.
#[derive(Clone, Debug)]
pub struct ScanMerge {
    items: BTreeMap<Vec<u8>, ItemState>,
    /// Every key up to (forward) / down to (reverse) this bound is known to all merged pages;
    /// `None` when every merged page reached the end of the range.
    bound: Option<Vec<u8>>,
    reverse: bool,
}

impl ScanMerge {
    fn from_page(items: Vec<(Vec<u8>, ItemState)>, exhausted: bool, reverse: bool) -> Self {
        let bound = if exhausted { None } else { items.last().map(|(k, _)| k.clone()) };
        ScanMerge { items: items.into_iter().collect(), bound, reverse }
    }

    fn within(&self, k: &[u8]) -> bool {
        match &self.bound {
            None => true,
            Some(b) if self.reverse => k >= b.as_slice(),
            Some(b) => k <= b.as_slice(),
        }
    }

    fn into_result(self, limit: usize) -> ScanResult {
        let within: Vec<(Vec<u8>, ItemState)> = {
            let mut v: Vec<_> = self
                .items
                .iter()
                .filter(|(k, _)| self.within(k))
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect();
            if self.reverse {
                v.reverse();
            }
            v
        };
        let mut items = Vec::new();
        let mut last_examined: Option<Vec<u8>> = None;
        let mut truncated = false;
        for (k, s) in within {
            if items.len() == limit {
                truncated = true;
                break;
            }
            last_examined = Some(k.clone());
            if !s.is_deleted() {
                items.push((k, s));
            }
        }
        let next = if truncated {
            last_examined.map(|k| encode_cursor(self.reverse, &k))
        } else {
            // Everything within the bound was examined; continue from the bound if pages were partial.
            self.bound.as_ref().map(|b| encode_cursor(self.reverse, b))
        };
        ScanResult { items, next }
    }
}

impl Mergeable for ScanMerge {
    fn merge_from(&mut self, other: &Self) {
        for (k, s) in &other.items {
            self.items.entry(k.clone()).and_modify(|mine| mine.merge(s)).or_insert_with(|| s.clone());
        }
        self.bound = match (self.bound.take(), other.bound.clone()) {
            (None, b) | (b, None) => b,
            (Some(a), Some(b)) => Some(if self.reverse { a.max(b) } else { a.min(b) }),
        };
    }

    /// Scans do not read-repair (a full-range repair is anti-entropy's job), so a page never
    /// asks for one.
    fn descends(&self, _other: &Self) -> bool {
        true
    }
}

fn encode_cursor(reverse: bool, last: &[u8]) -> String {
    use base64::Engine;
    let mut raw = vec![if reverse { b'r' } else { b'f' }];
    raw.extend_from_slice(last);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: &str) -> Result<(bool, Vec<u8>), ApiError> {
    use base64::Engine;
    let bad = || {
        ApiError::BadRequest("malformed scan cursor: pass back the `next` value of the previous page".into())
    };
    if cursor.len() > 4 * quorumdb_core::limits::SORT_KEY_BYTES_MAX {
        return Err(bad());
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let (&dir, last) = raw.split_first().ok_or_else(bad)?;
    match dir {
        b'f' => Ok((false, last.to_vec())),
        b'r' => Ok((true, last.to_vec())),
        _ => Err(bad()),
    }
}
