//! The simulated network: every message is an entry in a queue ordered by delivery time, and the
//! seeded random source decides each message's latency, whether it is lost, and whether it
//! arrives twice. Partitions are sets of nodes that can only talk among themselves.
//!
//! ```text
//!   send(from, to, msg) ──► blocked by a partition? ── yes ──► dropped (counted as blocked)
//!                                 │ no
//!                                 ▼
//!                           lost (drop_ppm)? ── yes ──► dropped
//!                                 │ no
//!                                 ▼
//!        queue[(now + latency, seq)] = msg      (+ a second copy at another latency,
//!                                                 duplicate_ppm, if the message allows it)
//!   pop() ──► earliest (time, seq) ──► blocked by a partition now? ── yes ──► None (in-flight
//!                                                                             message lost)
//! ```
//!
//! Reordering falls out of the random latencies: two messages on one link overtake each other
//! whenever the second draws a shorter delay, and `slow_ppm` adds rare long delays (a stalled
//! link, a retransmission) that reorder across hundreds of milliseconds. That is harsher than
//! the real transport, which runs over TCP and keeps one connection's messages in order; the
//! protocol must not depend on ordering, so the simulator does not grant it.
//!
//! Only node-to-node links are partitioned. Clients stand outside the cluster and reach every
//! node (their messages can still be lost or delayed); a client cut off from a node is just a
//! client that times out.
//!
//! Ties in delivery time are broken by send order (`seq`), so the whole queue is a
//! deterministic function of the seed.

use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Probabilities are integer parts per million, so that a run never depends on float rounding.
pub const PPM: u32 = 1_000_000;

/// One end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// A cluster node, by index.
    Node(usize),
    /// A client process, by index.
    Client(usize),
}

/// What the network needs to know about a message.
pub trait Message: Clone {
    /// Whether delivering this message twice is something the protocol must tolerate. Requests
    /// that would run a write twice say no: the real transport (TCP) never duplicates, and the
    /// node never retries a write, so a duplicated write would test a fault that cannot happen.
    fn may_duplicate(&self) -> bool;
}

/// Link behaviour. Drawn from the seed; changed by faults (drop bursts) and by the liveness
/// phase (no more loss).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Usual one-way delay, drawn uniformly from `latency_ms_min..=latency_ms_max`.
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    /// Chance that a message is slow: it gets up to `slow_ms_max` of extra delay.
    pub slow_ppm: u32,
    pub slow_ms_max: u64,
    /// Chance that a message is lost.
    pub drop_ppm: u32,
    /// Chance that a message that allows it ([`Message::may_duplicate`]) arrives twice.
    pub duplicate_ppm: u32,
}

impl NetConfig {
    /// 1 ms latency, no loss, no duplicates, no slow messages: for tests of the mechanics.
    pub fn reliable() -> Self {
        NetConfig {
            latency_ms_min: 1,
            latency_ms_max: 1,
            slow_ppm: 0,
            slow_ms_max: 0,
            drop_ppm: 0,
            duplicate_ppm: 0,
        }
    }
}

/// Message counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to [`Network::send`].
    pub sent: u64,
    /// Messages handed out by [`Network::pop`].
    pub delivered: u64,
    /// Messages lost at random (including drop bursts).
    pub dropped: u64,
    /// Messages lost to a partition, at send or while in flight.
    pub blocked: u64,
    /// Extra copies queued.
    pub duplicated: u64,
}

/// A message in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope<M> {
    pub from: Endpoint,
    pub to: Endpoint,
    pub msg: M,
}

/// The simulated network. See the module docs.
#[derive(Clone, Debug)]
pub struct Network<M> {
    config: NetConfig,
    /// Messages in flight by `(delivery time ms, send sequence)`; the sequence breaks ties in
    /// send order and makes every key unique.
    queue: BTreeMap<(u64, u64), Envelope<M>>,
    /// Next send sequence number.
    seq: u64,
    /// While a partition is in force, the side of each node; nodes on no side are isolated.
    /// `None` means every node reaches every other.
    sides: Option<BTreeMap<usize, usize>>,
    stats: NetStats,
}

impl<M: Message> Network<M> {
    pub fn new(config: NetConfig) -> Self {
        Network { config, queue: BTreeMap::new(), seq: 0, sides: None, stats: NetStats::default() }
    }

    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Changes link behaviour for messages sent from now on; messages in flight keep theirs.
    pub fn set_config(&mut self, config: NetConfig) {
        self.config = config;
    }

    /// Splits the nodes: each set can only reach its own members; a node named in no set is
    /// isolated. Replaces any partition in force.
    pub fn partition(&mut self, sides: &[BTreeSet<usize>]) {
        let mut map = BTreeMap::new();
        for (side, nodes) in sides.iter().enumerate() {
            for &node in nodes {
                map.insert(node, side);
            }
        }
        self.sides = Some(map);
    }

    /// Ends any partition: every node reaches every other again.
    pub fn heal(&mut self) {
        self.sides = None;
    }

    pub fn is_partitioned(&self) -> bool {
        self.sides.is_some()
    }

    /// Whether a message from `a` can reach `b` under the partition in force.
    pub fn connected(&self, a: Endpoint, b: Endpoint) -> bool {
        match (&self.sides, a, b) {
            (Some(sides), Endpoint::Node(x), Endpoint::Node(y)) if x != y => {
                matches!((sides.get(&x), sides.get(&y)), (Some(p), Some(q)) if p == q)
            }
            _ => true,
        }
    }

    /// Sends `msg` at `now_ms`. Returns whether a copy was queued (false: lost or blocked).
    pub fn send(&mut self, rng: &mut impl Rng, now_ms: u64, from: Endpoint, to: Endpoint, msg: M) -> bool {
        self.stats.sent += 1;
        if !self.connected(from, to) {
            self.stats.blocked += 1;
            return false;
        }
        if chance(rng, self.config.drop_ppm) {
            self.stats.dropped += 1;
            return false;
        }
        if msg.may_duplicate() && chance(rng, self.config.duplicate_ppm) {
            self.stats.duplicated += 1;
            let at = now_ms + self.latency_ms(rng);
            self.deliver_at(at, Envelope { from, to, msg: msg.clone() });
        }
        let at = now_ms + self.latency_ms(rng);
        self.deliver_at(at, Envelope { from, to, msg });
        true
    }

    /// Queues a message for delivery at `at_ms`, after every message already queued for that
    /// time. The simulator uses it to hold messages for a paused node until it resumes.
    pub fn deliver_at(&mut self, at_ms: u64, envelope: Envelope<M>) {
        self.queue.insert((at_ms, self.seq), envelope);
        self.seq += 1;
    }

    /// Delivery time of the earliest message in flight.
    pub fn next_ms(&self) -> Option<u64> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    /// Takes the earliest message in flight: its delivery time, and the message unless a
    /// partition now separates its ends (then it is lost, and counted as blocked).
    pub fn pop(&mut self) -> Option<(u64, Option<Envelope<M>>)> {
        let ((at, _), envelope) = self.queue.pop_first()?;
        if self.connected(envelope.from, envelope.to) {
            self.stats.delivered += 1;
            Some((at, Some(envelope)))
        } else {
            self.stats.blocked += 1;
            Some((at, None))
        }
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    fn latency_ms(&self, rng: &mut impl Rng) -> u64 {
        let c = &self.config;
        let mut latency = rng.random_range(c.latency_ms_min..=c.latency_ms_max.max(c.latency_ms_min));
        if c.slow_ms_max > 0 && chance(rng, c.slow_ppm) {
            latency += rng.random_range(1..=c.slow_ms_max);
        }
        latency
    }
}

/// True with probability `ppm` parts per million. Draws nothing when `ppm` is 0, so a run
/// without faults does not spend random numbers on them.
pub fn chance(rng: &mut impl Rng, ppm: u32) -> bool {
    ppm > 0 && rng.random_range(0..PPM) < ppm
}
