//! What the replica shards of one node share: configuration, placement, the failure detector
//! and the hybrid logical clock. The detector and the clock use atomics so that a node's shards
//! can run on several threads; the simulator runs them on one, where the atomics are plain
//! cells and every run is a function of its seed.

use crate::antientropy::ExchangeLimits;
use crate::handoff::HintLimits;
use crate::placement::Placement;
use crate::ring::{Ring, MEMBERS_LEN_MAX};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Index of a member in the placement's directory: how the replica names nodes. Names (`n1`)
/// appear only in messages for people.
pub use crate::placement::NodeId;

/// How concurrent writes to one item are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Conflict {
    /// Keep concurrent writes as siblings (dotted version vectors).
    #[default]
    Siblings,
    /// Last writer wins by hybrid-logical-clock timestamp.
    Lww,
    /// The item is a CRDT of this type; writes are CRDT operations applied at a home replica,
    /// concurrent states are joined (`replica::crdt_table`).
    Crdt(crate::crdt::CrdtKind),
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
    /// Hedged forwarding: a gateway whose forwarded write has no answer after an adaptive delay
    /// (the recent p99 of forwarded writes, clamped to `[hedge_delay_ms_min,
    /// hedge_delay_ms_max]`) sends the same write (same write id) to the next home replica too;
    /// the first answer wins. `hedge_delay_ms_max = 0` turns hedging off.
    pub hedge_delay_ms_min: u64,
    pub hedge_delay_ms_max: u64,
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
            heartbeat_interval_ms: 100,
            hedge_delay_ms_min: 20,
            hedge_delay_ms_max: 250,
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

/// The failure detector, at two levels.
///
/// - **Down**: requests to the peer kept failing for `failure_timeout_ms`. Down peers get no
///   requests: writes for them become hints, hint hand-off waits.
/// - **Suspected**: a phi-accrual detector (Hayashibara et al., as in Cassandra and Akka) over
///   the arrival times of the peer's answers (heartbeats and every other reply). Phi grows with
///   the silence since the last answer, relative to the usual gap between answers; past
///   [`SUSPECT_PHI`] the peer is suspected. A paused or hung peer is suspected within a few
///   hundred milliseconds (heartbeats every 100 ms: silence of ~0.4 s), while one lost
///   heartbeat is not. Suspected peers are skipped as write coordinators (a gateway forwards to
///   the next home replica) but still receive writes and hints, so a false suspicion costs a
///   detour, never data.
#[derive(Debug)]
pub struct Detector {
    /// Node clock (ms) of the first failure of the current failing period; 0 = healthy.
    failing_since_ms: Vec<AtomicU64>,
    arrivals: Vec<Mutex<Arrivals>>,
    failure_timeout_ms: u64,
    me: NodeId,
}

/// Phi above which a peer is suspected: the odds that an answer is merely late are below one
/// in 10^8 under the estimated distribution of gaps.
pub const SUSPECT_PHI: f64 = 8.0;

/// Floor of the standard deviation of gaps between answers (ms), so that a peer answering like
/// clockwork is not suspected after a few milliseconds of jitter.
pub const ARRIVAL_STD_DEV_MS_MIN: f64 = 50.0;

/// Answers needed before suspicion is computed at all (a fresh detector suspects nobody).
const ARRIVAL_SAMPLES_MIN: u32 = 3;

/// Weight of a new gap in the moving mean and variance.
const ARRIVAL_EWMA_WEIGHT: f64 = 0.1;

/// Gaps between successful answers of one peer: an exponentially weighted mean and variance.
#[derive(Debug, Default, Clone, Copy)]
struct Arrivals {
    last_ms: u64,
    mean_ms: f64,
    var_ms2: f64,
    samples: u32,
}

impl Arrivals {
    fn observe(&mut self, now_ms: u64) {
        if self.samples > 0 {
            let gap = now_ms.saturating_sub(self.last_ms) as f64;
            if self.samples == 1 {
                self.mean_ms = gap;
            } else {
                let delta = gap - self.mean_ms;
                self.mean_ms += ARRIVAL_EWMA_WEIGHT * delta;
                self.var_ms2 =
                    (1.0 - ARRIVAL_EWMA_WEIGHT) * (self.var_ms2 + ARRIVAL_EWMA_WEIGHT * delta * delta);
            }
        }
        self.last_ms = self.last_ms.max(now_ms);
        self.samples = self.samples.saturating_add(1);
    }

    /// Phi of the silence since the last answer (0 while there is too little history).
    fn phi(&self, now_ms: u64) -> f64 {
        if self.samples < ARRIVAL_SAMPLES_MIN {
            return 0.0;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        let std_dev = self.var_ms2.sqrt().max(ARRIVAL_STD_DEV_MS_MIN);
        // The logistic approximation of the normal tail that Akka's detector uses.
        let y = (elapsed - self.mean_ms) / std_dev;
        let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
        let p_later = if elapsed > self.mean_ms { e / (1.0 + e) } else { 1.0 - 1.0 / (1.0 + e) };
        -p_later.max(f64::MIN_POSITIVE).log10()
    }
}

impl Detector {
    pub fn new(members: usize, me: NodeId, failure_timeout_ms: u64) -> Self {
        Detector {
            failing_since_ms: (0..members).map(|_| AtomicU64::new(0)).collect(),
            arrivals: (0..members).map(|_| Mutex::new(Arrivals::default())).collect(),
            failure_timeout_ms,
            me,
        }
    }

    /// Records the outcome of one exchange with `peer`: a success at `now_ms`, or a failure that
    /// began at `now_ms` (the caller passes when the unanswered request was sent).
    pub fn record(&self, peer: NodeId, ok: bool, now_ms: u64) {
        let Some(since) = self.failing_since_ms.get(peer) else { return };
        if ok {
            since.store(0, Ordering::Release);
            if let Some(a) = self.arrivals.get(peer) {
                a.lock().unwrap_or_else(|p| p.into_inner()).observe(now_ms);
            }
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

    /// The suspicion level of `peer` at `now_ms` (see the type's docs).
    pub fn phi(&self, peer: NodeId, now_ms: u64) -> f64 {
        if peer == self.me {
            return 0.0;
        }
        self.arrivals.get(peer).map_or(0.0, |a| a.lock().unwrap_or_else(|p| p.into_inner()).phi(now_ms))
    }

    /// Whether `peer` is down or suspected at `now_ms`: skip it as a coordinator.
    pub fn is_suspected(&self, peer: NodeId, now_ms: u64) -> bool {
        !self.is_up(peer, now_ms) || self.phi(peer, now_ms) > SUSPECT_PHI
    }

    /// Forgets every failure (a restart).
    pub fn reset(&self) {
        for since in &self.failing_since_ms {
            since.store(0, Ordering::Release);
        }
        for a in &self.arrivals {
            *a.lock().unwrap_or_else(|p| p.into_inner()) = Arrivals::default();
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
    /// The placement every shard starts with; later ones arrive as `Input::Placement`, and
    /// each replica keeps its own current one (`Replica::placement`).
    pub initial_placement: Placement,
    pub me: NodeId,
    /// Sized for the largest directory, so members that join later have a slot.
    pub detector: Detector,
    pub hlc: Hlc,
}

impl Shared {
    /// A node whose layout is `ring` (version 1, directory in ring order).
    pub fn new(config: ReplicaConfig, ring: Ring, me: NodeId) -> Self {
        Shared::with_placement(config, Placement::single(ring), me)
    }

    pub fn with_placement(config: ReplicaConfig, placement: Placement, me: NodeId) -> Self {
        let detector = Detector::new(MEMBERS_LEN_MAX, me, config.failure_timeout_ms);
        Shared { config, initial_placement: placement, me, detector, hlc: Hlc::default() }
    }

    pub fn table(&self, table: &str) -> TableSpec {
        self.config.tables.get(table).copied().unwrap_or(TableSpec {
            replication_factor: self.config.replication_factor_default,
            conflict: Conflict::Siblings,
        })
    }

    pub fn is_up(&self, node: NodeId, now_ms: u64) -> bool {
        self.detector.is_up(node, now_ms)
    }

    pub fn is_suspected(&self, node: NodeId, now_ms: u64) -> bool {
        self.detector.is_suspected(node, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the phi-accrual detector: with answers every 100 ms, a peer silent for 200 ms
    /// (one lost heartbeat) is not suspected, one silent for 500 ms (paused) is, it is not
    /// down yet (it still gets writes and hints), and one answer clears the suspicion.
    #[test]
    fn phi_detector_suspects_a_paused_peer_within_half_a_second() {
        let d = Detector::new(2, 0, 3_000);
        let mut t = 1_000;
        for _ in 0..50 {
            d.record(1, true, t);
            t += 100;
        }
        let last = t - 100;
        assert!(!d.is_suspected(1, last + 200), "phi {}", d.phi(1, last + 200));
        assert!(d.is_suspected(1, last + 500), "phi {}", d.phi(1, last + 500));
        assert!(d.is_up(1, last + 500));
        d.record(1, true, last + 600);
        assert!(!d.is_suspected(1, last + 650));
        // A fresh detector suspects nobody, and a node never suspects itself.
        let fresh = Detector::new(2, 0, 3_000);
        assert!(!fresh.is_suspected(1, 1_000_000) && !fresh.is_suspected(0, 1_000_000));
    }

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
