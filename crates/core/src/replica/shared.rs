//! What the replica shards of one node share: configuration, placement, the failure detector
//! and the hybrid logical clock. The detector and the clock use atomics so that a node's shards
//! can run on several threads; the simulator runs them on one, where the atomics are plain
//! cells and every run is a function of its seed.

use crate::antientropy::ExchangeLimits;
use crate::handoff::HintLimits;
use crate::key::ItemKey;
use crate::ring::Ring;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Index of a member in the ring's member list: how the replica names nodes. Names (`n1`)
/// appear only in messages for people.
pub type NodeId = usize;

/// How concurrent writes to one item are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Conflict {
    /// Keep concurrent writes as siblings (dotted version vectors).
    #[default]
    Siblings,
    /// Last writer wins by hybrid-logical-clock timestamp.
    Lww,
}

/// A table's replication settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableSpec {
    pub replication_factor: usize,
    pub conflict: Conflict,
}

/// Everything the replica needs to know that is not per-request. Times are milliseconds.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Replication factor of tables not listed in `tables`.
    pub replication_factor_default: usize,
    pub tables: BTreeMap<String, TableSpec>,
    /// Timeout of the replica's own peer requests (hints, repairs, anti-entropy, GC).
    pub request_timeout_ms: u64,
    /// Longest timeout a client request may ask for.
    pub request_timeout_ms_max: u64,
    /// Extra time a gateway gives a write coordinator it forwarded to, so the coordinator can
    /// report a failure it reached at its own deadline.
    pub forward_margin_ms: u64,
    /// A peer whose requests keep failing this long is believed down.
    pub failure_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub hinted_handoff: bool,
    pub hint_limits: HintLimits,
    /// How often the hint queue is asked for deliveries.
    pub handoff_tick_ms: u64,
    /// Whether Merkle trees are kept and exchanged.
    pub antientropy: bool,
    /// Pause between background anti-entropy rounds (0: only on request).
    pub antientropy_interval_ms: u64,
    pub antientropy_bytes_per_second_max: u64,
    pub exchange_limits: ExchangeLimits,
    /// An exchange still unfinished after this long fails.
    pub exchange_deadline_ms: u64,
    /// Pause between tombstone GC passes (0: never).
    pub tombstone_gc_interval_ms: u64,
    pub tombstone_grace_ms: u64,
    /// Largest clock difference (ms) an HLC timestamp from a peer or from storage may show
    /// against this node's wall clock before the HLC refuses to follow it.
    pub hlc_drift_ms_max: u64,
}

impl ReplicaConfig {
    /// Production defaults (the node's config overrides them field by field).
    pub fn with_defaults(replication_factor_default: usize) -> Self {
        ReplicaConfig {
            replication_factor_default,
            tables: BTreeMap::new(),
            request_timeout_ms: 2_000,
            request_timeout_ms_max: 60_000,
            forward_margin_ms: 200,
            failure_timeout_ms: 3_000,
            heartbeat_interval_ms: 500,
            hinted_handoff: true,
            hint_limits: HintLimits::default(),
            handoff_tick_ms: 100,
            antientropy: true,
            antientropy_interval_ms: 10_000,
            antientropy_bytes_per_second_max: 16 * 1024 * 1024,
            exchange_limits: ExchangeLimits::default(),
            exchange_deadline_ms: 60_000,
            tombstone_gc_interval_ms: 60_000,
            tombstone_grace_ms: crate::handoff::HINT_AGE_MS_MAX_DEFAULT + 60 * 60 * 1000,
            hlc_drift_ms_max: HLC_DRIFT_MS_MAX_DEFAULT,
        }
    }
}

/// Default HLC drift bound: one minute. NTP keeps healthy clocks within milliseconds; a peer
/// a minute ahead is broken, and following it would drag every node's timestamps along.
pub const HLC_DRIFT_MS_MAX_DEFAULT: u64 = 60_000;

/// The failure detector: per peer, since when requests to it keep failing. Any answer proves a
/// peer alive; a failure starts (or continues) its failing period; a peer failing for
/// `failure_timeout_ms` is down.
#[derive(Debug)]
pub struct Detector {
    /// Node clock (ms) of the first failure of the current failing period; 0 = healthy.
    failing_since_ms: Vec<AtomicU64>,
    failure_timeout_ms: u64,
    me: NodeId,
}

impl Detector {
    pub fn new(members: usize, me: NodeId, failure_timeout_ms: u64) -> Self {
        Detector {
            failing_since_ms: (0..members).map(|_| AtomicU64::new(0)).collect(),
            failure_timeout_ms,
            me,
        }
    }

    /// Records the outcome of one exchange with `peer`.
    pub fn record(&self, peer: NodeId, ok: bool, now_ms: u64) {
        let Some(since) = self.failing_since_ms.get(peer) else { return };
        if ok {
            since.store(0, Ordering::Release);
        } else {
            // Keep the first failure time; `max(1)` because 0 means healthy.
            let _ = since.compare_exchange(0, now_ms.max(1), Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Whether `peer` is believed alive at `now_ms`.
    pub fn is_up(&self, peer: NodeId, now_ms: u64) -> bool {
        if peer == self.me {
            return true;
        }
        let since = self.failing_since_ms.get(peer).map_or(0, |s| s.load(Ordering::Acquire));
        since == 0 || now_ms.saturating_sub(since) < self.failure_timeout_ms
    }

    /// Forgets every failure (a restart).
    pub fn reset(&self) {
        for since in &self.failing_since_ms {
            since.store(0, Ordering::Release);
        }
    }
}

/// Hybrid logical clock for LWW tables: `(wall ms << 16) | logical`, strictly increasing per
/// node, never below a timestamp it accepted. Timestamps from peers or storage further than the
/// drift bound ahead of the local wall clock are refused (counted, not followed), so one node
/// with a clock far in the future cannot push every other node's clock there.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
    /// Timestamps refused for being beyond the drift bound.
    pub rejected_total: AtomicU64,
}

/// Bits of an HLC timestamp below the wall-clock milliseconds.
pub const HLC_LOGICAL_BITS: u32 = 16;

impl Hlc {
    /// A new timestamp greater than every one issued or accepted. Saturates instead of
    /// overflowing: a clock at its maximum keeps returning it (an LWW tie, broken by dot).
    pub fn now(&self, wall_ms: u64) -> u64 {
        let physical = wall_ms.saturating_mul(1 << HLC_LOGICAL_BITS);
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = physical.max(last.saturating_add(1));
            match self.last.compare_exchange(last, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Accepts a timestamp seen on a peer's state: later local timestamps exceed it, unless it
    /// lies more than `drift_ms_max` ahead of `wall_ms`. Returns whether it was accepted.
    pub fn observe(&self, ts: u64, wall_ms: u64, drift_ms_max: u64) -> bool {
        let ts_ms = ts >> HLC_LOGICAL_BITS;
        if ts_ms > wall_ms.saturating_add(drift_ms_max) {
            self.rejected_total.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.last.fetch_max(ts, Ordering::AcqRel);
        true
    }
}

/// One node's shared replica context.
#[derive(Debug)]
pub struct Shared {
    pub config: ReplicaConfig,
    pub ring: Ring,
    pub me: NodeId,
    pub detector: Detector,
    pub hlc: Hlc,
}

impl Shared {
    pub fn new(config: ReplicaConfig, ring: Ring, me: NodeId) -> Self {
        let detector = Detector::new(ring.members().len(), me, config.failure_timeout_ms);
        Shared { config, ring, me, detector, hlc: Hlc::default() }
    }

    pub fn table(&self, table: &str) -> TableSpec {
        self.config.tables.get(table).copied().unwrap_or(TableSpec {
            replication_factor: self.config.replication_factor_default,
            conflict: Conflict::Siblings,
        })
    }

    /// A table's replication factor, capped by the cluster size.
    pub fn replication_factor(&self, table: &str) -> usize {
        self.table(table).replication_factor.clamp(1, self.ring.members().len().max(1))
    }

    /// The home replicas of `key`, primary first.
    pub fn preference(&self, key: &ItemKey) -> Vec<NodeId> {
        self.ring.preference_list(key.placement_hash(), self.replication_factor(&key.table))
    }

    pub fn name(&self, node: NodeId) -> String {
        self.ring.members().get(node).map(|m| m.id.clone()).unwrap_or_else(|| format!("#{node}"))
    }

    pub fn is_up(&self, node: NodeId, now_ms: u64) -> bool {
        self.detector.is_up(node, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the HLC refuses a peer timestamp beyond the drift bound, counts it, and keeps
    /// issuing timestamps near its own wall clock.
    #[test]
    fn hlc_refuses_timestamps_beyond_drift() {
        let hlc = Hlc::default();
        let wall = 1_000_000;
        let far = (wall + 10 * 60_000) << HLC_LOGICAL_BITS;
        assert!(!hlc.observe(far, wall, 60_000));
        assert_eq!(hlc.rejected_total.load(Ordering::Relaxed), 1);
        assert!(hlc.now(wall) < far);
        let near = (wall + 1_000) << HLC_LOGICAL_BITS;
        assert!(hlc.observe(near, wall, 60_000));
        assert!(hlc.now(wall) > near);
    }

    /// Proves the HLC saturates instead of overflowing at the top of its range.
    #[test]
    fn hlc_saturates() {
        let hlc = Hlc::default();
        assert!(hlc.observe(u64::MAX, u64::MAX, 0));
        assert_eq!(hlc.now(u64::MAX), u64::MAX);
        assert_eq!(hlc.now(0), u64::MAX);
    }
}
