//! Hinted handoff: the queue of writes a home replica missed, as a plain state machine.
//!
//! When a write (or read repair) cannot reach one of a key's home replicas, the coordinating
//! replica stores a *hint* — target replica, storage key, encoded state, creation time — and
//! replays it once the target is back. Hints are a fast path, not the guarantee: anything the
//! queue refuses, expires or loses is repaired later by anti-entropy ([`crate::antientropy`]).
//! That is what lets every bound here be strict.
//!
//! ```text
//!   node shell                                  HintQueue (this module)
//!   ──────────                                  ───────────────────────
//!   write to target failed ────────────────────► add(hint, now) ──► Ok(Added{id, superseded})
//!     persist (id, hint), delete `superseded` ◄──┘                   or Err(HintRefused): rely on
//!                                                                     anti-entropy
//!   startup: every durable hint ───────────────► restore(limits, hints, now) ──► Drop{..}s
//!   timer, with the liveness view ─────────────► tick(now, is_up) ──┬─► Drop{id, Expired}
//!                                                                   └─► Deliver{id, target, ..}
//!   send the state to the target, which merges it                       (≤ inflight max/target)
//!   target acknowledged ───────────────────────► on_delivered(id, now) ─► Delete{id} + next Delivers
//!   target failed / timed out ─────────────────► on_failed(id, now)   (target backs off)
//! ```
//!
//! Per target, hints are delivered oldest first (by id), at most
//! [`HintLimits::inflight_per_target_max`] at a time, so a recovering replica is not flooded.
//! Each success immediately releases the next hint for that target, so the pipeline stays full
//! without waiting for the next tick. A failure backs the target off exponentially, from
//! [`HANDOFF_BACKOFF_MS_MIN`] to [`HANDOFF_BACKOFF_MS_MAX`], deterministically (no jitter: the
//! core has no randomness, and the node's timers already spread retries across coordinators).
//!
//! ## Coalescing
//!
//! At most one hint exists per `(target, key)`. A new hint for the same pair replaces the old one:
//! the node reads the old state with [`HintQueue::get`], merges it with the new one and adds the
//! merged state, so the replacement supersedes everything the old hint carried. The replacement
//! gets a new id (it goes to the back of the target's queue) and a fresh age. If the old hint was
//! being delivered, that delivery completes harmlessly: merging at the target is idempotent.
//!
//! ## Durability contract
//!
//! The node persists hints itself; this machine only decides. The node must: persist `(id, hint)`
//! after a successful `add` *before* deleting the superseded hint (a crash in between leaves
//! both, and [`HintQueue::restore`] keeps the newer); execute every `Delete` and `Drop`; and
//! report every `Deliver` exactly once with `on_delivered` or `on_failed` (the transport's
//! timeout guarantees a report), because an unreported delivery holds a slot of its target.
//!
//! ## Deletes
//!
//! A hint carrying an old live state, replayed after the item's tombstone has been collected
//! everywhere, would resurrect the item. Hints never live longer than
//! [`HintLimits::hint_age_ms_max`] and are never delivered past that age, so the node's
//! tombstone grace period must exceed it (with margin for clock differences).
//!
//! Non-goals: hints are not replicated (a coordinator that loses its disk loses its hints), and
//! the queue does not choose fallback replicas (no sloppy quorum).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use thiserror::Error;

/// Default bound on queued hints. At 100 000 hints a coordinator that has been cut off from a
/// replica for a while still covers a few minutes of a busy write load (e.g. 500 writes/s for
/// 3 minutes); beyond that anti-entropy is the cheaper repair anyway, since it moves only the
/// final state of each key.
pub const HINTS_LEN_MAX_DEFAULT: usize = 100_000;

/// Default bound on the total bytes of queued hints (target + key + state): 256 MiB of disk and,
/// since the queue keeps the states in memory, of RAM. It also caps what a recovering replica is
/// sent before anti-entropy takes over.
pub const HINT_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// Default age after which a hint is dropped: 3 hours (as in Cassandra's `max_hint_window`). A
/// replica down longer than that is better repaired by anti-entropy than by replaying hours of
/// overwritten states; and the bound is what the tombstone grace period is sized against.
pub const HINT_AGE_MS_MAX_DEFAULT: u64 = 3 * 60 * 60 * 1000;

/// Default deliveries in flight per target. Enough to keep a replica's group commit busy (16
/// merges share one fsync) without flooding a replica that just came back; with a 1 MiB value
/// and a few siblings it keeps tens of MiB in flight per target at worst.
pub const HANDOFF_INFLIGHT_MAX: usize = 16;

/// First back-off after a failed delivery: long enough not to hammer a replica that is
/// restarting, short enough that a transient error costs little.
pub const HANDOFF_BACKOFF_MS_MIN: u64 = 100;

/// Longest back-off: a target that keeps failing is retried every 10 s, so hints flow within
/// seconds of it really recovering.
pub const HANDOFF_BACKOFF_MS_MAX: u64 = 10_000;

const _: () = assert!(HANDOFF_BACKOFF_MS_MIN >= 1 && HANDOFF_BACKOFF_MS_MIN <= HANDOFF_BACKOFF_MS_MAX);
const _: () = assert!(HANDOFF_INFLIGHT_MAX >= 1);
const _: () = assert!(HINT_AGE_MS_MAX_DEFAULT > HANDOFF_BACKOFF_MS_MAX);

/// The queue's bounds. [`Default`] gives the named defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintLimits {
    /// Most hints queued, all targets together.
    pub hints_len_max: usize,
    /// Most bytes queued ([`Hint::bytes`]), all targets together.
    pub hint_bytes_max: u64,
    /// Hints older than this are dropped and never delivered.
    pub hint_age_ms_max: u64,
    /// Most deliveries in flight per target. Treated as at least 1.
    pub inflight_per_target_max: usize,
}

impl Default for HintLimits {
    fn default() -> Self {
        HintLimits {
            hints_len_max: HINTS_LEN_MAX_DEFAULT,
            hint_bytes_max: HINT_BYTES_MAX_DEFAULT,
            hint_age_ms_max: HINT_AGE_MS_MAX_DEFAULT,
            inflight_per_target_max: HANDOFF_INFLIGHT_MAX,
        }
    }
}

/// Identifies a hint in the queue and in the node's durable store. Ids grow with every add, so id
/// order is arrival order; they are never reused within a process, and [`HintQueue::restore`]
/// continues after the largest id it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HintId(pub u64);

impl fmt::Display for HintId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "h{}", self.0)
    }
}

/// A write the target replica missed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    /// The home replica that missed the write.
    pub target: String,
    /// The item's storage key.
    pub key: Vec<u8>,
    /// The encoded item state to merge into the target (the coordinator's state after the write).
    pub state: Vec<u8>,
    /// When the hint was created, on the node's clock; drives expiry.
    pub created_ms: u64,
}

impl Hint {
    /// Bytes the hint counts against [`HintLimits::hint_bytes_max`]: target, key and state.
    pub fn bytes(&self) -> u64 {
        (self.target.len() + self.key.len() + self.state.len()) as u64
    }
}

/// A hint was accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Added {
    /// The new hint's id; persist the hint under it.
    pub id: HintId,
    /// The hint for the same `(target, key)` this one replaced; delete it durably after
    /// persisting the new one.
    pub superseded: Option<HintId>,
}

/// Why a hint was not queued. The caller then relies on anti-entropy for that write.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HintRefused {
    #[error("hint queue full: {len_max} hints")]
    QueueFull { len_max: usize },
    #[error("hint queue bytes full: {bytes} of {bytes_max} bytes queued, hint is {hint_bytes} bytes")]
    BytesFull { bytes_max: u64, bytes: u64, hint_bytes: u64 },
    #[error("hint is {age_ms} ms old, older than the {age_ms_max} ms limit")]
    Expired { age_ms: u64, age_ms_max: u64 },
}

/// Why the queue gave up on a hint without delivering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Older than [`HintLimits::hint_age_ms_max`].
    Expired,
    /// A newer hint for the same `(target, key)` replaced it (found on restore).
    Superseded,
    /// Restored beyond the queue's limits (e.g. limits lowered in the config).
    OverLimit,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::Expired => "expired",
            DropReason::Superseded => "superseded",
            DropReason::OverLimit => "over limit",
        })
    }
}

/// What the node must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandoffCommand {
    /// Send `state` for `key` to `target` (which merges it), then report the outcome with
    /// [`HintQueue::on_delivered`] or [`HintQueue::on_failed`].
    Deliver { id: HintId, target: String, key: Vec<u8>, state: Vec<u8> },
    /// The hint was delivered: remove it from durable storage.
    Delete { id: HintId },
    /// The hint was abandoned: remove it from durable storage; anti-entropy covers it.
    Drop { id: HintId, reason: DropReason },
}

/// One target's part of [`HintStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetStats {
    /// Hints queued for the target (including those being delivered).
    pub len: usize,
    /// Deliveries in flight.
    pub inflight: usize,
    /// Consecutive failed delivery rounds; 0 after a success.
    pub failures: u32,
    /// No delivery is started before this time.
    pub retry_at_ms: u64,
}

/// Counters and gauges for metrics and tests. `_total` counters count since the queue was built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HintStats {
    pub len: usize,
    pub bytes: u64,
    /// Every target with queued hints or deliveries in flight.
    pub per_target: BTreeMap<String, TargetStats>,
    pub added_total: u64,
    /// Adds that replaced an older hint for the same `(target, key)` (also counted in `added_total`),
    /// plus duplicates found on restore.
    pub coalesced_total: u64,
    pub refused_total: u64,
    pub delivered_total: u64,
    pub failed_total: u64,
    pub expired_total: u64,
}

/// The delivery state of one target.
#[derive(Clone, Debug, Default)]
struct Target {
    /// Queued hints, oldest id first: the delivery order.
    queue: BTreeSet<HintId>,
    /// The queued hint of each key: at most one per key (coalescing).
    by_key: BTreeMap<Vec<u8>, HintId>,
    /// Deliveries sent and not yet reported. May name hints no longer queued (superseded or
    /// expired while in flight); they still occupy a slot until reported, so the number of
    /// requests the target really has in flight never exceeds the bound.
    inflight: BTreeSet<HintId>,
    /// Consecutive failed delivery rounds, driving the back-off. Failures reported while already
    /// backing off belong to the same round (deliveries that were in flight together).
    failures: u32,
    /// No delivery starts before this time.
    retry_at_ms: u64,
}

/// The hint queue of one node. See the module docs.
#[derive(Clone, Debug)]
pub struct HintQueue {
    limits: HintLimits,
    /// Every queued hint.
    hints: BTreeMap<HintId, Hint>,
    /// Queued hints by creation time, oldest first, so expiry looks only at what expires.
    by_age: BTreeSet<(u64, HintId)>,
    /// Per-target queues and delivery state. An entry exists while the target has queued hints
    /// or deliveries in flight, so the map is bounded by them.
    targets: BTreeMap<String, Target>,
    /// Which target each in-flight delivery belongs to (the hint itself may be gone).
    inflight: BTreeMap<HintId, String>,
    /// Sum of [`Hint::bytes`] over `hints`.
    bytes: u64,
    /// The id the next added hint gets.
    next_id: u64,
    stats: HintStats,
}

/// Delay before retrying a target after `failures` consecutive failed rounds: 100 ms, 200 ms,
/// 400 ms, … doubling up to 10 s. Zero failures, no delay.
pub fn backoff_ms(failures: u32) -> u64 {
    if failures == 0 {
        return 0;
    }
    // 2^7 · 100 ms already exceeds 10 s; capping the shift keeps it from overflowing.
    let shift = (failures - 1).min(16);
    (HANDOFF_BACKOFF_MS_MIN << shift).min(HANDOFF_BACKOFF_MS_MAX)
}

impl HintQueue {
    /// An empty queue.
    pub fn new(limits: HintLimits) -> Self {
        let limits = HintLimits { inflight_per_target_max: limits.inflight_per_target_max.max(1), ..limits };
        HintQueue {
            limits,
            hints: BTreeMap::new(),
            by_age: BTreeSet::new(),
            targets: BTreeMap::new(),
            inflight: BTreeMap::new(),
            bytes: 0,
            next_id: 0,
            stats: HintStats::default(),
        }
    }

    /// Rebuilds the queue after a restart from the node's durable hints, in any order. It is a
    /// constructor, not a method, so restored ids can never collide with ids already handed out.
    ///
    /// Hints are taken oldest id first, as `add` would have seen them, and the returned commands
    /// say which stored hints to remove: `Drop{Expired}` for hints past their age,
    /// `Drop{Superseded}` for the older of two hints for the same `(target, key)` (a crash between
    /// persisting a replacement and deleting the original), `Drop{OverLimit}` for hints beyond the
    /// limits. A repeated id (impossible in a keyed store) keeps its first hint. New ids continue
    /// after the largest id given, so no new hint reuses the id of a stored hint not yet removed.
    pub fn restore(
        limits: HintLimits,
        hints: Vec<(HintId, Hint)>,
        now_ms: u64,
    ) -> (Self, Vec<HandoffCommand>) {
        let mut queue = HintQueue::new(limits);
        let mut hints = hints;
        hints.sort_by_key(|(id, _)| *id);
        hints.dedup_by_key(|(id, _)| *id);
        queue.next_id = hints.last().map_or(0, |(id, _)| id.0.saturating_add(1));
        let mut out = Vec::new();
        for (id, hint) in hints {
            match queue.insert(id, hint, now_ms) {
                Ok(Some(superseded)) => {
                    out.push(HandoffCommand::Drop { id: superseded, reason: DropReason::Superseded })
                }
                Ok(None) => {}
                Err(HintRefused::Expired { .. }) => {
                    queue.stats.expired_total += 1;
                    out.push(HandoffCommand::Drop { id, reason: DropReason::Expired });
                }
                Err(HintRefused::QueueFull { .. } | HintRefused::BytesFull { .. }) => {
                    queue.stats.refused_total += 1;
                    out.push(HandoffCommand::Drop { id, reason: DropReason::OverLimit });
                }
            }
        }
        (queue, out)
    }

    /// The limits in force.
    pub fn limits(&self) -> &HintLimits {
        &self.limits
    }

    /// Number of queued hints.
    pub fn len(&self) -> usize {
        self.hints.len()
    }

    /// Whether no hint is queued.
    pub fn is_empty(&self) -> bool {
        self.hints.is_empty()
    }

    /// The queued hint for `(target, key)`, whose state the node merges into a new hint for the
    /// same pair before adding it.
    pub fn get(&self, target: &str, key: &[u8]) -> Option<(HintId, &Hint)> {
        let id = *self.targets.get(target)?.by_key.get(key)?;
        Some((id, self.hints.get(&id)?))
    }

    /// Queues a hint, replacing the queued hint for the same `(target, key)` if any (pass the
    /// merged state; see the module docs). Refused, with the reason, if it is already older than
    /// the age limit or if it would exceed the count or byte limit (a replacement counts only the
    /// bytes it adds). A refused replacement leaves the old hint queued.
    pub fn add(&mut self, hint: Hint, now_ms: u64) -> Result<Added, HintRefused> {
        let id = HintId(self.next_id);
        match self.insert(id, hint, now_ms) {
            Ok(superseded) => {
                self.next_id += 1;
                self.stats.added_total += 1;
                Ok(Added { id, superseded })
            }
            Err(refused) => {
                self.stats.refused_total += 1;
                Err(refused)
            }
        }
    }

    /// Expires old hints, then starts deliveries to every target `is_up` reports up and that is
    /// not backing off, oldest hint first, up to the in-flight bound per target. Targets are
    /// visited in name order, so the output is deterministic.
    pub fn tick(&mut self, now_ms: u64, is_up: impl Fn(&str) -> bool) -> Vec<HandoffCommand> {
        let mut out = self.expire(now_ms);
        let names: Vec<String> = self.targets.keys().filter(|name| is_up(name)).cloned().collect();
        for name in names {
            out.extend(self.deliveries(&name, now_ms));
        }
        out
    }

    /// The target acknowledged delivery `id`: the hint is deleted (`Delete`, unless it was
    /// superseded or expired meanwhile and so already removed), the target's back-off is reset,
    /// and, the target having just proved it is up, its next hints are released. Also expires
    /// old hints. Unknown or repeated reports are ignored.
    pub fn on_delivered(&mut self, id: HintId, now_ms: u64) -> Vec<HandoffCommand> {
        let Some(name) = self.inflight.remove(&id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if self.remove(id).is_some() {
            self.stats.delivered_total += 1;
            out.push(HandoffCommand::Delete { id });
        }
        if let Some(target) = self.targets.get_mut(&name) {
            target.inflight.remove(&id);
            target.failures = 0;
            target.retry_at_ms = 0;
        }
        out.extend(self.expire(now_ms));
        out.extend(self.deliveries(&name, now_ms));
        self.forget_if_idle(&name);
        out
    }

    /// Delivery `id` failed (error or timeout): the hint stays queued and its target backs off,
    /// unless it is already backing off from a failure of the same round. Unknown or repeated
    /// reports are ignored.
    pub fn on_failed(&mut self, id: HintId, now_ms: u64) {
        let Some(name) = self.inflight.remove(&id) else {
            return;
        };
        self.stats.failed_total += 1;
        if let Some(target) = self.targets.get_mut(&name) {
            target.inflight.remove(&id);
            if now_ms >= target.retry_at_ms {
                target.failures = target.failures.saturating_add(1);
                target.retry_at_ms = now_ms.saturating_add(backoff_ms(target.failures));
            }
        }
        self.forget_if_idle(&name);
    }

    /// Counters, gauges and per-target state.
    pub fn stats(&self) -> HintStats {
        let mut stats = self.stats.clone();
        stats.len = self.hints.len();
        stats.bytes = self.bytes;
        stats.per_target = self
            .targets
            .iter()
            .map(|(name, t)| {
                let target = TargetStats {
                    len: t.queue.len(),
                    inflight: t.inflight.len(),
                    failures: t.failures,
                    retry_at_ms: t.retry_at_ms,
                };
                (name.clone(), target)
            })
            .collect();
        stats
    }

    fn is_expired(&self, created_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(created_ms) > self.limits.hint_age_ms_max
    }

    /// Queues `hint` under `id` after the limit checks; returns the hint it replaced.
    fn insert(&mut self, id: HintId, hint: Hint, now_ms: u64) -> Result<Option<HintId>, HintRefused> {
        if self.is_expired(hint.created_ms, now_ms) {
            let age_ms = now_ms.saturating_sub(hint.created_ms);
            return Err(HintRefused::Expired { age_ms, age_ms_max: self.limits.hint_age_ms_max });
        }
        let existing = self.get(&hint.target, &hint.key).map(|(id, old)| (id, old.bytes()));
        if existing.is_none() && self.hints.len() >= self.limits.hints_len_max {
            return Err(HintRefused::QueueFull { len_max: self.limits.hints_len_max });
        }
        let hint_bytes = hint.bytes();
        let freed = existing.map_or(0, |(_, bytes)| bytes);
        if self.bytes.saturating_sub(freed).saturating_add(hint_bytes) > self.limits.hint_bytes_max {
            return Err(HintRefused::BytesFull {
                bytes_max: self.limits.hint_bytes_max,
                bytes: self.bytes,
                hint_bytes,
            });
        }
        // Insert before removing the old hint, so the target's entry (and its back-off) survives.
        let target = self.targets.entry(hint.target.clone()).or_default();
        target.queue.insert(id);
        target.by_key.insert(hint.key.clone(), id);
        self.by_age.insert((hint.created_ms, id));
        self.bytes += hint_bytes;
        self.hints.insert(id, hint);
        let superseded = existing.map(|(old, _)| old);
        if let Some(old) = superseded {
            self.remove(old);
            self.stats.coalesced_total += 1;
        }
        debug_assert!(self.hints.len() <= self.limits.hints_len_max);
        debug_assert!(self.bytes <= self.limits.hint_bytes_max);
        Ok(superseded)
    }

    /// Removes a queued hint from every index. Leaves the target entry (the caller may still need
    /// its back-off state) unless the hint was its last business.
    fn remove(&mut self, id: HintId) -> Option<Hint> {
        let hint = self.hints.remove(&id)?;
        self.by_age.remove(&(hint.created_ms, id));
        self.bytes = self.bytes.saturating_sub(hint.bytes());
        if let Some(target) = self.targets.get_mut(&hint.target) {
            target.queue.remove(&id);
            // Only unlink the key if it still points at this hint (a replacement re-points it
            // before the old hint is removed).
            if target.by_key.get(&hint.key) == Some(&id) {
                target.by_key.remove(&hint.key);
            }
        }
        self.forget_if_idle(&hint.target);
        Some(hint)
    }

    /// Drops the entry of a target with nothing queued and nothing in flight.
    fn forget_if_idle(&mut self, name: &str) {
        if self.targets.get(name).is_some_and(|t| t.queue.is_empty() && t.inflight.is_empty()) {
            self.targets.remove(name);
        }
    }

    /// Drops every hint past its age, oldest first.
    fn expire(&mut self, now_ms: u64) -> Vec<HandoffCommand> {
        let mut out = Vec::new();
        while let Some(&(created_ms, id)) = self.by_age.first() {
            if !self.is_expired(created_ms, now_ms) {
                break;
            }
            self.remove(id);
            self.stats.expired_total += 1;
            out.push(HandoffCommand::Drop { id, reason: DropReason::Expired });
        }
        out
    }

    /// Starts deliveries to one target, oldest hint first, up to its in-flight bound, unless it is
    /// backing off. The caller knows it is up.
    fn deliveries(&mut self, name: &str, now_ms: u64) -> Vec<HandoffCommand> {
        let max = self.limits.inflight_per_target_max;
        let Some(target) = self.targets.get_mut(name) else {
            return Vec::new();
        };
        if now_ms < target.retry_at_ms || target.inflight.len() >= max {
            return Vec::new();
        }
        // Skips at most `inflight.len() < max` queued ids, so this loop is bounded by `max`.
        let free = max - target.inflight.len();
        let ids: Vec<HintId> =
            target.queue.iter().filter(|id| !target.inflight.contains(id)).take(free).copied().collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(hint) = self.hints.get(&id) else {
                continue;
            };
            target.inflight.insert(id);
            self.inflight.insert(id, name.to_owned());
            out.push(HandoffCommand::Deliver {
                id,
                target: hint.target.clone(),
                key: hint.key.clone(),
                state: hint.state.clone(),
            });
        }
        out
    }

    /// Checks every index against the others; for tests.
    #[cfg(test)]
    fn check_invariants(&self) -> Result<(), String> {
        let bytes: u64 = self.hints.values().map(Hint::bytes).sum();
        if bytes != self.bytes || bytes > self.limits.hint_bytes_max {
            return Err(format!("bytes {} counted, {bytes} actual", self.bytes));
        }
        if self.hints.len() > self.limits.hints_len_max || self.by_age.len() != self.hints.len() {
            return Err("len bounds or age index".into());
        }
        let mut queued = 0;
        for (name, t) in &self.targets {
            if t.queue.is_empty() && t.inflight.is_empty() {
                return Err(format!("idle target {name} kept"));
            }
            if t.inflight.len() > self.limits.inflight_per_target_max {
                return Err(format!("{name} has {} in flight", t.inflight.len()));
            }
            if t.by_key.len() != t.queue.len() {
                return Err(format!("{name}: more than one hint for a key"));
            }
            for (key, id) in &t.by_key {
                let hint = self.hints.get(id).ok_or("key index names a missing hint")?;
                if &hint.target != name || &hint.key != key || !t.queue.contains(id) {
                    return Err(format!("{name}: indexes disagree on {id}"));
                }
            }
            for id in &t.inflight {
                if self.inflight.get(id) != Some(name) {
                    return Err(format!("in-flight {id} not mapped to {name}"));
                }
            }
            queued += t.queue.len();
        }
        if queued != self.hints.len() {
            return Err("hints outside target queues".into());
        }
        if self.inflight.len() != self.targets.values().map(|t| t.inflight.len()).sum::<usize>() {
            return Err("in-flight map and target sets disagree".into());
        }
        if self.hints.keys().any(|id| id.0 >= self.next_id) {
            return Err("an id at or past next_id".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hint(target: &str, key: &str, state: &str, created_ms: u64) -> Hint {
        Hint { target: target.into(), key: key.into(), state: state.into(), created_ms }
    }

    fn delivered_ids(commands: &[HandoffCommand]) -> Vec<u64> {
        commands
            .iter()
            .filter_map(|c| match c {
                HandoffCommand::Deliver { id, .. } => Some(id.0),
                _ => None,
            })
            .collect()
    }

    /// Proves the back-off doubles from 100 ms and saturates at 10 s, even for huge counts.
    #[test]
    fn backoff_schedule() {
        let schedule: Vec<u64> = (0..10).map(backoff_ms).collect();
        assert_eq!(schedule, [0, 100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        assert_eq!(backoff_ms(u32::MAX), 10_000);
    }

    /// Proves hints are delivered in FIFO order per target, at most the in-flight bound at a time,
    /// and that each acknowledgement deletes its hint and releases the next one.
    #[test]
    fn fifo_with_inflight_bound() {
        let limits = HintLimits { inflight_per_target_max: 2, ..HintLimits::default() };
        let mut q = HintQueue::new(limits);
        for i in 0..5 {
            q.add(hint("n2", &format!("k{i}"), "s", 0), 0).unwrap();
        }
        assert_eq!(delivered_ids(&q.tick(1, |_| true)), [0, 1]);
        assert!(q.tick(2, |_| true).is_empty(), "bound reached");
        let out = q.on_delivered(HintId(1), 3);
        assert_eq!(out[0], HandoffCommand::Delete { id: HintId(1) });
        assert_eq!(delivered_ids(&out), [2]);
        assert_eq!(q.stats().delivered_total, 1);
        assert!(q.on_delivered(HintId(1), 3).is_empty(), "repeated report ignored");
        q.check_invariants().unwrap();
    }

    /// Proves concurrent failures of one round back off once, and a success resets the back-off.
    #[test]
    fn failures_of_one_round_count_once() {
        let mut q = HintQueue::new(HintLimits::default());
        for i in 0..3 {
            q.add(hint("n2", &format!("k{i}"), "s", 0), 0).unwrap();
        }
        assert_eq!(delivered_ids(&q.tick(0, |_| true)), [0, 1, 2]);
        q.on_failed(HintId(0), 10);
        q.on_failed(HintId(1), 20);
        let t = &q.stats().per_target["n2"];
        assert_eq!((t.failures, t.retry_at_ms, t.inflight), (1, 110, 1));
        assert!(delivered_ids(&q.tick(109, |_| true)).is_empty());
        // The third delivery succeeds: back-off reset, and the failed ones go out again at once.
        let out = q.on_delivered(HintId(2), 50);
        assert_eq!(delivered_ids(&out), [0, 1]);
        assert_eq!(q.stats().per_target["n2"].failures, 0);
        q.check_invariants().unwrap();
    }

    /// Proves a replacement for an in-flight hint is delivered too, and the late acknowledgement
    /// of the superseded one deletes nothing but still frees its slot.
    #[test]
    fn superseded_while_in_flight() {
        let limits = HintLimits { inflight_per_target_max: 2, ..HintLimits::default() };
        let mut q = HintQueue::new(limits);
        q.add(hint("n2", "k", "a", 0), 0).unwrap();
        assert_eq!(delivered_ids(&q.tick(0, |_| true)), [0]);
        let added = q.add(hint("n2", "k", "ab", 1), 1).unwrap();
        assert_eq!(added, Added { id: HintId(1), superseded: Some(HintId(0)) });
        assert_eq!(
            q.get("n2", "k".as_bytes()).map(|(id, h)| (id, h.state.clone())),
            Some((HintId(1), b"ab".to_vec()))
        );
        assert_eq!(delivered_ids(&q.tick(2, |_| true)), [1]);
        assert!(q.on_delivered(HintId(0), 3).is_empty(), "superseded: nothing to delete, nothing new");
        assert_eq!(q.stats().per_target["n2"].inflight, 1);
        assert_eq!(q.on_delivered(HintId(1), 4), vec![HandoffCommand::Delete { id: HintId(1) }]);
        assert!(q.is_empty());
        assert!(q.stats().per_target.is_empty(), "idle targets are forgotten");
        q.check_invariants().unwrap();
    }

    /// Proves restore keeps the newer of two hints for one key, drops expired and over-limit
    /// ones, ignores a repeated id, and continues ids after the largest one given.
    #[test]
    fn restore_resolves_duplicates_and_limits() {
        let limits = HintLimits { hints_len_max: 2, hint_age_ms_max: 1000, ..HintLimits::default() };
        let stored = vec![
            (HintId(9), hint("n2", "k", "ab", 700)),
            (HintId(3), hint("n2", "k", "a", 600)),
            (HintId(1), hint("n3", "old", "x", 0)),
            (HintId(5), hint("n3", "j", "y", 600)),
            (HintId(5), hint("n3", "dup", "z", 600)),
            (HintId(7), hint("n4", "m", "z", 700)),
        ];
        let (mut q, out) = HintQueue::restore(limits, stored, 1500);
        assert_eq!(
            out,
            vec![
                HandoffCommand::Drop { id: HintId(1), reason: DropReason::Expired },
                HandoffCommand::Drop { id: HintId(7), reason: DropReason::OverLimit },
                HandoffCommand::Drop { id: HintId(3), reason: DropReason::Superseded },
            ]
        );
        assert_eq!(q.len(), 2);
        assert_eq!(q.get("n3", b"j").map(|(id, _)| id), Some(HintId(5)));
        assert_eq!(
            q.add(hint("n5", "new", "s", 1500), 1500).map(|a| a.id),
            Err(HintRefused::QueueFull { len_max: 2 })
        );
        q.on_delivered(HintId(5), 1500); // not in flight: ignored
        assert_eq!(delivered_ids(&q.tick(1500, |_| true)), [9, 5]);
        q.on_delivered(HintId(5), 1501);
        assert_eq!(q.add(hint("n5", "new", "s", 1501), 1501).map(|a| a.id), Ok(HintId(10)));
        q.check_invariants().unwrap();
    }

    /// One operation in the model-based test below.
    #[derive(Clone, Debug)]
    enum Op {
        Add { target: u8, key: u8, state_len: u8, age: u16 },
        Tick { advance: u16, up_mask: u8 },
        Delivered(u8),
        Failed(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..3, 0u8..6, 0u8..40, 0u16..1200).prop_map(|(target, key, state_len, age)| Op::Add { target, key, state_len, age }),
            2 => (0u16..400, any::<u8>()).prop_map(|(advance, up_mask)| Op::Tick { advance, up_mask }),
            2 => any::<u8>().prop_map(Op::Delivered),
            1 => any::<u8>().prop_map(Op::Failed),
        ]
    }

    proptest! {
        /// Proves, under random adds, ticks, acknowledgements and failures with small limits,
        /// that every index stays consistent and every bound holds after each step; that
        /// deliveries go only to up targets, never exceed the in-flight bound and never carry an
        /// expired hint; that every hint leaves the queue through exactly one Delete or Drop
        /// (or a supersede); and that a restore from the surviving hints reproduces the queue.
        #[test]
        fn invariants_hold_under_random_operations(ops in proptest::collection::vec(op(), 0..200)) {
            let limits = HintLimits {
                hints_len_max: 8, hint_bytes_max: 200, hint_age_ms_max: 1000, inflight_per_target_max: 2,
            };
            let mut q = HintQueue::new(limits);
            let mut now = 0u64;
            // The node's durable store, maintained from the commands as the node would.
            let mut store: BTreeMap<HintId, Hint> = BTreeMap::new();
            let mut inflight: Vec<HintId> = Vec::new();
            let names = ["n1", "n2", "n3"];
            for op in ops {
                let mut commands = Vec::new();
                match op {
                    Op::Add { target, key, state_len, age } => {
                        let h = Hint {
                            target: names[target as usize].into(),
                            key: vec![key],
                            state: vec![0; state_len as usize],
                            created_ms: now.saturating_sub(age as u64),
                        };
                        if let Ok(added) = q.add(h.clone(), now) {
                            prop_assert!(store.insert(added.id, h).is_none(), "id reused");
                            if let Some(old) = added.superseded {
                                prop_assert!(store.remove(&old).is_some());
                            }
                        }
                    }
                    Op::Tick { advance, up_mask } => {
                        now += advance as u64;
                        let up = |name: &str| names.iter().position(|n| *n == name).is_some_and(|i| up_mask & (1 << i) != 0);
                        commands = q.tick(now, up);
                        for c in &commands {
                            if let HandoffCommand::Deliver { target, .. } = c {
                                prop_assert!(up(target));
                            }
                        }
                    }
                    Op::Delivered(i) if !inflight.is_empty() => {
                        let id = inflight.remove(i as usize % inflight.len());
                        commands = q.on_delivered(id, now);
                    }
                    Op::Failed(i) if !inflight.is_empty() => {
                        let id = inflight.remove(i as usize % inflight.len());
                        q.on_failed(id, now);
                    }
                    Op::Delivered(_) | Op::Failed(_) => {}
                }
                for c in commands {
                    match c {
                        HandoffCommand::Deliver { id, target, key, state } => {
                            let stored = store.get(&id).expect("delivering a stored hint");
                            prop_assert_eq!((&stored.target, &stored.key, &stored.state), (&target, &key, &state));
                            prop_assert!(now.saturating_sub(stored.created_ms) <= limits.hint_age_ms_max);
                            prop_assert!(!inflight.contains(&id));
                            inflight.push(id);
                        }
                        HandoffCommand::Delete { id } | HandoffCommand::Drop { id, .. } => {
                            prop_assert!(store.remove(&id).is_some(), "removing a hint not stored");
                        }
                    }
                }
                if let Err(message) = q.check_invariants() {
                    prop_assert!(false, "{}", message);
                }
                prop_assert_eq!(q.len(), store.len());
            }
            let (restored, out) = HintQueue::restore(limits, store.clone().into_iter().collect(), now);
            let only_expired = out.iter().all(|c| matches!(c, HandoffCommand::Drop { reason: DropReason::Expired, .. }));
            prop_assert!(only_expired, "restore dropped more than expired hints: {:?}", out);
            prop_assert_eq!(restored.len() + out.len(), store.len());
        }
    }
}
