//! Anti-entropy: one Merkle tree exchange between two replicas of a replica set, as a plain
//! state machine.
//!
//! Read repair only fixes keys that are read, and hinted handoff only covers writes a coordinator
//! saw fail and still remembers. Anti-entropy covers everything else: it compares the two
//! replicas' [`MerkleTree`]s of one replica set ("range") top-down, descending only into subtrees
//! whose hashes differ, then compares the `(storage key, digest)` lists of the differing leaves,
//! and tells the node which items to send to the peer (push) and which to fetch from it (pull).
//!
//! ```text
//!   node shell (local replica A)                 Exchange (this module)          peer B
//!   ────────────────────────────                 ──────────────────────          ──────
//!   Exchange::start(range, peer, limits, dl) ─►  RequestHashes{level 0, [root]} ─► children_batch
//!   B's hashes, A's tree ──────────────────────► on_hashes  ─┐ compare, keep the    (16 hashes)
//!                                                            │ differing children
//!                                                RequestHashes{level 1, parents} ─► …
//!   B's hashes, A's tree ──────────────────────► on_hashes    (… DEPTH levels …)
//!                                                RequestLeafKeys{leaves} ────────► scan leaves
//!   per leaf: B's pairs, A's pairs ────────────► on_leaf_keys ─┐ merge-join by key
//!                                                              ▼ after the last leaf:
//!   send A's states of `keys` to B  ◄──────────  Push{keys}      only at A, or digests differ
//!   fetch B's states of `keys`, merge ◄────────  Pull{keys}      only at B, or digests differ
//!   schedule the next exchange ◄───────────────  Done(stats)     (at once if more_remaining)
//!   timer ─────────────────────────────────────► tick(now_ms) ──► Failed(Timeout) at the deadline
//! ```
//!
//! An exchange takes `DEPTH + 1` round trips: each request batches every differing node of a
//! level. Only the local side compares; the peer just answers lookups. Because a key whose
//! digests differ is both pushed and pulled, and merging states is commutative, associative and
//! idempotent (see [`crate::causality`]), one exchange leaves *both* replicas holding the join of
//! the two states of every repaired key.
//!
//! ## Where the data comes from
//!
//! Tree hashes are read from the local [`MerkleTree`], passed by `&mut` to each
//! [`Exchange::on_hashes`] call: the tree is a core type the node keeps in memory, so no trait is
//! needed. Leaf listings come from storage, which only the node can read, so the node scans the
//! leaf and passes both sides' pairs to [`Exchange::on_leaf_keys`]. The peer answers a
//! `RequestHashes` with [`MerkleTree::children_batch`] and a `RequestLeafKeys` with, per leaf,
//! the `(storage key, item_digest)` of every item of the range in that leaf: one scan of
//! [`crate::merkle::leaf_key_range`], keeping the keys whose replica set is the range.
//!
//! ## Concurrent writes
//!
//! The exchange does not freeze either tree. Writes landing during an exchange are safe:
//!
//! - A write to a key the exchange is about to repair is harmless: the push or pull carries a
//!   state that the receiver merges, and merging is idempotent and commutative.
//! - A difference created after the exchange looked at a subtree is missed; the next exchange
//!   finds it. A subtree that stopped differing finds no differing children and ends early.
//!
//! The script `tests/scripts/antientropy/concurrent_write` shows both.
//!
//! ## Bounds
//!
//! At most [`ExchangeLimits::leaves_max`] nodes are descended into per level (each differing
//! node holds at least one differing leaf, so more would be wasted), so every request and reply
//! is bounded; at most [`ExchangeLimits::keys_max`] keys are transferred. Past either bound the
//! exchange repairs what it found first and reports `more_remaining = true`.
//!
//! Non-goals: the exchange does not move the data (the node pushes and pulls), does not tell a
//! delete from an item never written (absence is "never written", so a deleted item must stay a
//! tombstone on every replica until all of them have it, else it is pulled back), and does not
//! detect a tree out of sync with storage beyond counting leaves that differed with no key to
//! repair.

use std::collections::BTreeSet;
use std::fmt;

use thiserror::Error;

use crate::merkle::{leaf_of, MerkleError, MerkleTree, DEPTH, FANOUT, LEAVES};

/// Default bound on leaves compared key by key in one exchange. At ~25 items per leaf (100 000
/// items, see [`crate::merkle`]) the peer's listing for 64 leaves is ~1 600 pairs, ~100 KiB;
/// after a long partition 64 leaves per exchange still repair a fully diverged tree in
/// 64 exchanges (hinted handoff covers most of such a gap anyway).
pub const EXCHANGE_LEAVES_MAX: usize = 64;

/// Default bound on key transfers (pushes plus pulls) in one exchange. Each transfer moves one
/// item state (up to a few MiB), so this bounds the repair work one exchange hands the node; the
/// node must still batch the transfers by bytes.
pub const EXCHANGE_KEYS_MAX: usize = 1024;

const _: () = assert!(EXCHANGE_LEAVES_MAX >= 1 && EXCHANGE_LEAVES_MAX <= LEAVES);
const _: () = assert!(EXCHANGE_KEYS_MAX >= 2, "a key with differing digests needs a push and a pull");

/// One side's listing of a leaf: the `(storage key, item_digest)` of each of its items, in any
/// order.
pub type LeafItems = Vec<(Vec<u8>, u64)>;

/// Bounds of one exchange. [`Default`] gives the named defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeLimits {
    /// Most nodes descended into per level, hence most leaves listed. Clamped to `1..=LEAVES`.
    pub leaves_max: usize,
    /// Most key transfers (a key with differing digests counts twice). Clamped to at least 2.
    pub keys_max: usize,
}

impl Default for ExchangeLimits {
    fn default() -> Self {
        ExchangeLimits { leaves_max: EXCHANGE_LEAVES_MAX, keys_max: EXCHANGE_KEYS_MAX }
    }
}

/// What the node must do next for an exchange. Every event returns the commands it produced, in
/// order; the last command of a finished exchange is `Done` or `Failed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Ask the peer for the hashes of the children of `parents` (node indices at `level`); feed
    /// its answer ([`MerkleTree::children_batch`] on the peer) to [`Exchange::on_hashes`].
    RequestHashes { level: usize, parents: Vec<usize> },
    /// Ask the peer for the `(storage key, digest)` pairs of these leaves; for each leaf, feed
    /// its pairs and the local ones to [`Exchange::on_leaf_keys`]. Both listings must hold only
    /// the items of this exchange's range: a leaf's key range can also hold items of other
    /// replica sets, and an item listed on one side only is pushed or pulled.
    RequestLeafKeys { leaves: Vec<usize> },
    /// Send the local states of these keys to the peer, which merges them. Sorted, never empty.
    Push { keys: Vec<Vec<u8>> },
    /// Fetch the peer's states of these keys and merge them locally. Sorted, never empty.
    Pull { keys: Vec<Vec<u8>> },
    /// The comparison is over; the counters say what it cost and found.
    Done(ExchangeStats),
    /// The exchange gave up; nothing was repaired. The next exchange starts afresh.
    Failed(ExchangeError),
}

/// What an exchange cost and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Requests answered by the peer: `DEPTH + 1` for an exchange that reached the keys.
    pub round_trips: u32,
    /// Node hashes compared, all levels.
    pub hashes_compared: u64,
    /// Leaf hashes compared (part of `hashes_compared`).
    pub leaves_compared: u64,
    /// Leaf hashes found different (including any beyond `leaves_max`).
    pub leaves_differing: u64,
    /// Leaves whose keys were listed and compared.
    pub leaves_listed: u64,
    /// Listed leaves that differed by hash but had no key to repair: a concurrent write, or a
    /// tree out of sync with storage on one side (the node may rebuild that leaf).
    pub leaves_without_key_difference: u64,
    /// `(storage key, digest)` pairs received from the peer.
    pub digests_received: u64,
    /// Keys pushed to the peer.
    pub keys_pushed: u64,
    /// Keys pulled from the peer.
    pub keys_pulled: u64,
    /// A bound cut the exchange short: run another one to find the rest.
    pub more_remaining: bool,
}

/// Which replica supplied bad data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Local,
    Peer,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Local => "local",
            Side::Peer => "peer",
        })
    }
}

/// Why an exchange failed. Bad peer input ends the exchange with one of these; it never panics.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ExchangeError {
    #[error("peer sent {got} hashes for level {level}, expected {expected}")]
    HashesLength { level: usize, expected: usize, got: usize },
    #[error("got {got} while waiting for {expected}")]
    Unexpected { expected: String, got: String },
    #[error("{side} listed key of leaf {actual} as part of leaf {leaf}")]
    ItemOutsideLeaf { side: Side, leaf: usize, actual: usize },
    #[error("{side} listed a key twice in leaf {leaf}")]
    DuplicateKey { side: Side, leaf: usize },
    #[error("local tree: {0}")]
    LocalTree(#[from] MerkleError),
    #[error("peer request failed: {0}")]
    Peer(String),
    #[error("deadline passed while waiting for {0}")]
    Timeout(String),
}

/// Where an exchange is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the children hashes of `parents` at `level`.
    Hashes { level: usize, parents: Vec<usize> },
    /// Waiting for the key listings of these leaves (one `on_leaf_keys` each).
    LeafKeys { outstanding: BTreeSet<usize> },
    /// Done or Failed was emitted; later events are ignored.
    Finished,
}

impl Phase {
    /// What the exchange waits for, in words, for errors.
    fn waiting_for(&self) -> String {
        match self {
            Phase::Hashes { level, parents } => {
                format!("hashes of level {level} ({})", plural(parents.len(), "parent", "parents"))
            }
            Phase::LeafKeys { outstanding } => {
                format!("keys of {}", plural(outstanding.len(), "leaf", "leaves"))
            }
            Phase::Finished => "nothing".to_owned(),
        }
    }
}

/// One tree exchange from the local replica's point of view. See the module docs.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The replica set whose trees are compared; opaque here, for the node's bookkeeping.
    range: u64,
    /// The peer replica, for the node's bookkeeping and for errors.
    peer: String,
    limits: ExchangeLimits,
    /// At or after this time, an unfinished exchange fails with `Timeout`.
    deadline_ms: u64,
    phase: Phase,
    stats: ExchangeStats,
    /// Keys to push, collected over the leaves of the last round trip.
    push: BTreeSet<Vec<u8>>,
    /// Keys to pull, collected likewise.
    pull: BTreeSet<Vec<u8>>,
    /// Set once `keys_max` is reached: later differences are left for the next exchange.
    keys_full: bool,
    /// The final outcome, once finished.
    outcome: Option<Result<ExchangeStats, ExchangeError>>,
}

impl Exchange {
    /// Starts an exchange for `range` with `peer`, failing at `deadline_ms` if unfinished.
    /// Returns the first request: the children of the root.
    pub fn start(
        range: u64,
        peer: impl Into<String>,
        limits: ExchangeLimits,
        deadline_ms: u64,
    ) -> (Exchange, Vec<Command>) {
        let limits = ExchangeLimits {
            leaves_max: limits.leaves_max.clamp(1, LEAVES),
            keys_max: limits.keys_max.max(2),
        };
        let exchange = Exchange {
            range,
            peer: peer.into(),
            limits,
            deadline_ms,
            phase: Phase::Hashes { level: 0, parents: vec![0] },
            stats: ExchangeStats::default(),
            push: BTreeSet::new(),
            pull: BTreeSet::new(),
            keys_full: false,
            outcome: None,
        };
        (exchange, vec![Command::RequestHashes { level: 0, parents: vec![0] }])
    }

    /// The range given to [`Exchange::start`].
    pub fn range(&self) -> u64 {
        self.range
    }

    /// The peer given to [`Exchange::start`].
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The counters so far.
    pub fn stats(&self) -> &ExchangeStats {
        &self.stats
    }

    /// Whether `Done` or `Failed` was emitted.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<&Result<ExchangeStats, ExchangeError>> {
        self.outcome.as_ref()
    }

    /// The peer's answer to `RequestHashes { level, .. }`: the children of every requested
    /// parent, concatenated in request order. Compares them with the local tree's and requests
    /// the next level, or the keys of the differing leaves, or finishes if nothing differs.
    pub fn on_hashes(&mut self, level: usize, peer_hashes: &[u64], local: &mut MerkleTree) -> Vec<Command> {
        if self.is_finished() {
            return Vec::new();
        }
        let parents = match &self.phase {
            Phase::Hashes { level: expected, parents } if *expected == level => parents.clone(),
            _ => {
                let got = format!("hashes of level {level}");
                return self.fail(ExchangeError::Unexpected { expected: self.phase.waiting_for(), got });
            }
        };
        let expected = parents.len() * FANOUT;
        if peer_hashes.len() != expected {
            return self.fail(ExchangeError::HashesLength { level, expected, got: peer_hashes.len() });
        }
        let local_hashes = match local.children_batch(level, &parents) {
            Ok(hashes) => hashes,
            Err(error) => return self.fail(error.into()),
        };
        self.stats.round_trips += 1;
        self.stats.hashes_compared += expected as u64;

        let mut differing = Vec::new();
        for (position, (ours, theirs)) in local_hashes.iter().zip(peer_hashes).enumerate() {
            if ours != theirs {
                let parent = parents.get(position / FANOUT).copied().unwrap_or_default();
                differing.push(parent * FANOUT + position % FANOUT);
            }
        }
        let child_level = level + 1;
        if child_level == DEPTH {
            self.stats.leaves_compared += expected as u64;
            self.stats.leaves_differing += differing.len() as u64;
        }
        if differing.len() > self.limits.leaves_max {
            differing.truncate(self.limits.leaves_max);
            self.stats.more_remaining = true;
        }
        if differing.is_empty() {
            return self.finish();
        }
        if child_level < DEPTH {
            self.phase = Phase::Hashes { level: child_level, parents: differing.clone() };
            vec![Command::RequestHashes { level: child_level, parents: differing }]
        } else {
            self.stats.leaves_listed += differing.len() as u64;
            self.phase = Phase::LeafKeys { outstanding: differing.iter().copied().collect() };
            vec![Command::RequestLeafKeys { leaves: differing }]
        }
    }

    /// One leaf's listings: the peer's `(storage key, digest)` pairs and the local ones, in any
    /// order. Keys only here are pushed, keys only at the peer pulled, keys whose digests differ
    /// both. After the last requested leaf, emits `Push`, `Pull` (each if non-empty) and `Done`.
    ///
    /// Leaves are processed in call order, so when `keys_max` cuts an exchange short, which keys
    /// made it depends on that order.
    pub fn on_leaf_keys(
        &mut self,
        leaf: usize,
        mut peer_items: LeafItems,
        mut local_items: LeafItems,
    ) -> Vec<Command> {
        if self.is_finished() {
            return Vec::new();
        }
        let is_outstanding = match &self.phase {
            Phase::LeafKeys { outstanding } => outstanding.contains(&leaf),
            _ => false,
        };
        if !is_outstanding {
            let got = format!("keys of leaf {leaf}");
            return self.fail(ExchangeError::Unexpected { expected: self.phase.waiting_for(), got });
        }
        for (side, items) in [(Side::Peer, &mut peer_items), (Side::Local, &mut local_items)] {
            if let Err(error) = check_listing(side, leaf, items) {
                return self.fail(error);
            }
        }
        self.stats.digests_received += peer_items.len() as u64;

        let mut peer_iter = peer_items.into_iter().peekable();
        let mut local_iter = local_items.into_iter().peekable();
        let mut differences = 0u64;
        loop {
            // (push, pull) for the smallest key on either side; None at the end of both lists.
            let (key, push, pull) = match (local_iter.peek(), peer_iter.peek()) {
                (None, None) => break,
                (Some(_), None) => match local_iter.next() {
                    Some((key, _)) => (key, true, false),
                    None => break,
                },
                (None, Some(_)) => match peer_iter.next() {
                    Some((key, _)) => (key, false, true),
                    None => break,
                },
                (Some((ours, _)), Some((theirs, _))) => match ours.cmp(theirs) {
                    std::cmp::Ordering::Less => match local_iter.next() {
                        Some((key, _)) => (key, true, false),
                        None => break,
                    },
                    std::cmp::Ordering::Greater => match peer_iter.next() {
                        Some((key, _)) => (key, false, true),
                        None => break,
                    },
                    std::cmp::Ordering::Equal => match (local_iter.next(), peer_iter.next()) {
                        (Some((key, ours)), Some((_, theirs))) if ours != theirs => (key, true, true),
                        _ => continue,
                    },
                },
            };
            differences += 1;
            let needed = usize::from(push) + usize::from(pull);
            if self.keys_full || self.push.len() + self.pull.len() + needed > self.limits.keys_max {
                self.keys_full = true;
                self.stats.more_remaining = true;
                continue;
            }
            if push && pull {
                self.push.insert(key.clone());
                self.pull.insert(key);
            } else if push {
                self.push.insert(key);
            } else {
                self.pull.insert(key);
            }
        }
        if differences == 0 {
            self.stats.leaves_without_key_difference += 1;
        }

        let done = match &mut self.phase {
            Phase::LeafKeys { outstanding } => {
                outstanding.remove(&leaf);
                outstanding.is_empty()
            }
            _ => false,
        };
        if !done {
            return Vec::new();
        }
        self.stats.round_trips += 1;
        let mut out = Vec::new();
        if !self.push.is_empty() {
            let keys: Vec<Vec<u8>> = std::mem::take(&mut self.push).into_iter().collect();
            self.stats.keys_pushed = keys.len() as u64;
            out.push(Command::Push { keys });
        }
        if !self.pull.is_empty() {
            let keys: Vec<Vec<u8>> = std::mem::take(&mut self.pull).into_iter().collect();
            self.stats.keys_pulled = keys.len() as u64;
            out.push(Command::Pull { keys });
        }
        out.extend(self.finish());
        out
    }

    /// The request in flight failed (transport error, peer refused it): the exchange fails.
    pub fn on_error(&mut self, message: impl Into<String>) -> Vec<Command> {
        if self.is_finished() {
            return Vec::new();
        }
        self.fail(ExchangeError::Peer(message.into()))
    }

    /// The node's timer: at or after the deadline an unfinished exchange fails.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Command> {
        if self.is_finished() || now_ms < self.deadline_ms {
            return Vec::new();
        }
        let waiting = self.phase.waiting_for();
        self.fail(ExchangeError::Timeout(waiting))
    }

    fn finish(&mut self) -> Vec<Command> {
        self.phase = Phase::Finished;
        self.outcome = Some(Ok(self.stats.clone()));
        vec![Command::Done(self.stats.clone())]
    }

    fn fail(&mut self, error: ExchangeError) -> Vec<Command> {
        self.phase = Phase::Finished;
        self.push.clear();
        self.pull.clear();
        self.outcome = Some(Err(error.clone()));
        vec![Command::Failed(error)]
    }
}

/// `1 leaf`, `2 leaves`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Sorts one side's listing of `leaf` by key and checks that every key belongs to the leaf and
/// appears once. The peer's listing comes from the network; the local one from a storage scan
/// that could be buggy, and neither may crash the node.
fn check_listing(side: Side, leaf: usize, items: &mut [(Vec<u8>, u64)]) -> Result<(), ExchangeError> {
    if let Some((key, _)) = items.iter().find(|(key, _)| leaf_of(key) != leaf) {
        return Err(ExchangeError::ItemOutsideLeaf { side, leaf, actual: leaf_of(key) });
    }
    items.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    if items.windows(2).any(|pair| matches!(pair, [a, b] if a.0 == b.0)) {
        return Err(ExchangeError::DuplicateKey { side, leaf });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::item_digest;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// One in-memory replica: storage key → state bytes, and its tree kept in sync on every
    /// write, the way the node must do it.
    #[derive(Clone, Debug, Default)]
    struct Replica {
        items: BTreeMap<Vec<u8>, Vec<u8>>,
        tree: MerkleTree,
    }

    impl Replica {
        fn put(&mut self, key: &[u8], state: &[u8]) {
            let old = self.items.get(key).map(|s| item_digest(key, s));
            self.tree.update(key, old, Some(item_digest(key, state)));
            self.items.insert(key.to_vec(), state.to_vec());
        }

        /// Merges `state` in. The test states are sorted sets of bytes, so merge is union: a
        /// join semilattice like `ItemState`.
        fn merge(&mut self, key: &[u8], state: &[u8]) {
            let mut merged: BTreeSet<u8> = state.iter().copied().collect();
            if let Some(ours) = self.items.get(key) {
                merged.extend(ours.iter().copied());
            }
            let merged: Vec<u8> = merged.into_iter().collect();
            self.put(key, &merged);
        }

        /// A leaf listing as the node makes it: one range scan of the leaf's key range.
        fn leaf_items(&self, leaf: usize) -> LeafItems {
            use std::ops::Bound;
            let (start, end) = crate::merkle::leaf_key_range(leaf).unwrap();
            let end = end.map_or(Bound::Unbounded, Bound::Excluded);
            self.items
                .range::<Vec<u8>, _>((Bound::Included(start), end))
                .map(|(k, s)| (k.clone(), item_digest(k, s)))
                .collect()
        }
    }

    /// An exchange's outcome, and the keys it pushed and pulled.
    type RunResult = (Result<ExchangeStats, ExchangeError>, Vec<Vec<u8>>, Vec<Vec<u8>>);

    /// Runs one exchange from `a` with `b` to completion, applying pushes and pulls by merging.
    /// Returns the outcome and the keys pushed and pulled.
    fn run(a: &mut Replica, b: &mut Replica, limits: ExchangeLimits) -> RunResult {
        let (mut exchange, mut commands) = Exchange::start(7, "b", limits, 1000);
        let (mut pushed, mut pulled) = (Vec::new(), Vec::new());
        for _round in 0..=DEPTH + 1 {
            let mut next = Vec::new();
            for command in commands {
                match command {
                    Command::RequestHashes { level, parents } => {
                        let hashes = b.tree.children_batch(level, &parents).unwrap();
                        next.extend(exchange.on_hashes(level, &hashes, &mut a.tree));
                    }
                    Command::RequestLeafKeys { leaves } => {
                        for leaf in leaves {
                            next.extend(exchange.on_leaf_keys(leaf, b.leaf_items(leaf), a.leaf_items(leaf)));
                        }
                    }
                    Command::Push { keys } => {
                        for key in &keys {
                            let state = a.items[key].clone();
                            b.merge(key, &state);
                        }
                        pushed.extend(keys);
                    }
                    Command::Pull { keys } => {
                        for key in &keys {
                            let state = b.items[key].clone();
                            a.merge(key, &state);
                        }
                        pulled.extend(keys);
                    }
                    Command::Done(_) | Command::Failed(_) => {}
                }
            }
            commands = next;
        }
        assert!(commands.is_empty(), "an exchange ends within DEPTH + 1 round trips");
        (exchange.outcome().cloned().expect("finished"), pushed, pulled)
    }

    fn replica(items: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Replica {
        let mut r = Replica::default();
        for (k, s) in items {
            r.put(&k, &s);
        }
        r
    }

    /// A realistic storage key (placement hash first, so keys spread over the leaves).
    fn key(i: u32) -> Vec<u8> {
        crate::key::ItemKey::new("t", format!("p{i}").as_bytes(), b"").unwrap().storage_key()
    }

    /// Proves identical replicas finish after one round trip of 16 hashes, transferring nothing.
    #[test]
    fn identical_replicas_one_round_trip() {
        let mut a = replica((0..1000).map(|i| (key(i), vec![1])));
        let mut b = a.clone();
        let (outcome, pushed, pulled) = run(&mut a, &mut b, ExchangeLimits::default());
        let stats = outcome.unwrap();
        assert_eq!(stats.round_trips, 1);
        assert_eq!(stats.hashes_compared, FANOUT as u64);
        assert!(pushed.is_empty() && pulled.is_empty());
    }

    /// Proves the headline cost: among 100 000 items, one differing key is found in DEPTH + 1
    /// round trips, exactly that key is transferred (both ways), and only a few dozen digests and
    /// 48 hashes cross the wire.
    #[test]
    fn one_differing_key_among_100k() {
        let mut a = replica((0..100_000).map(|i| (key(i), vec![1])));
        let mut b = a.clone();
        b.put(&key(4242), &[2]);
        let (outcome, pushed, pulled) = run(&mut a, &mut b, ExchangeLimits::default());
        let stats = outcome.unwrap();
        assert_eq!(pushed, vec![key(4242)]);
        assert_eq!(pulled, vec![key(4242)]);
        assert_eq!(stats.round_trips as usize, DEPTH + 1);
        assert_eq!(stats.hashes_compared as usize, DEPTH * FANOUT);
        assert_eq!((stats.leaves_differing, stats.leaves_listed), (1, 1));
        assert!(stats.digests_received <= 100, "{} digests", stats.digests_received);
        assert_eq!(a.items[&key(4242)], vec![1, 2], "both sides hold the join");
        assert_eq!(a.items, b.items);
        assert_eq!(a.tree.root(), b.tree.root());
    }

    /// Proves keys only on one side are pushed or pulled (one direction only), and that after
    /// the exchange both replicas hold the same items.
    #[test]
    fn one_sided_keys_move_one_way() {
        let mut a = replica([(key(1), vec![1]), (key(2), vec![1])]);
        let mut b = replica([(key(2), vec![1]), (key(3), vec![1])]);
        let (outcome, pushed, pulled) = run(&mut a, &mut b, ExchangeLimits::default());
        assert!(outcome.is_ok());
        assert_eq!(pushed, vec![key(1)]);
        assert_eq!(pulled, vec![key(3)]);
        assert_eq!(a.items, b.items);
    }

    /// Proves `leaves_max` and `keys_max` cut an exchange short with `more_remaining`, and that
    /// repeating exchanges converges.
    #[test]
    fn limits_cut_short_and_repeat_converges() {
        let mut a = replica((0..2000).map(|i| (key(i), vec![1])));
        let mut b = replica((1000..3000).map(|i| (key(i), vec![1])));
        let limits = ExchangeLimits { leaves_max: 8, keys_max: 10 };
        let (outcome, pushed, pulled) = run(&mut a, &mut b, limits);
        let stats = outcome.unwrap();
        assert!(stats.more_remaining);
        assert!(stats.leaves_listed <= 8);
        assert!(pushed.len() + pulled.len() <= 10);
        let mut exchanges = 1;
        loop {
            let (outcome, pushed, pulled) = run(&mut a, &mut b, limits);
            let stats = outcome.unwrap();
            exchanges += 1;
            assert!(pushed.len() + pulled.len() <= 10);
            if !stats.more_remaining {
                break;
            }
            assert!(exchanges < 1000, "no progress");
        }
        assert_eq!(a.items, b.items);
        assert_eq!(a.items.len(), 3000);
    }

    /// Proves bad peer input fails the exchange with a typed error instead of panicking: wrong
    /// hash count, an answer to a question not asked, a key of another leaf, a duplicate key.
    #[test]
    fn bad_peer_input_fails_cleanly() {
        let mut a = replica([(key(1), vec![1])]);
        let mut b = replica([(key(1), vec![2])]);

        let (mut x, _) = Exchange::start(1, "b", ExchangeLimits::default(), 100);
        let out = x.on_hashes(0, &[0; 15], &mut a.tree);
        assert_eq!(
            out,
            vec![Command::Failed(ExchangeError::HashesLength { level: 0, expected: 16, got: 15 })]
        );
        assert!(x.is_finished());
        assert!(x.on_hashes(0, &[0; 16], &mut a.tree).is_empty(), "ignored once finished");

        let (mut x, _) = Exchange::start(1, "b", ExchangeLimits::default(), 100);
        let out = x.on_hashes(2, &[0; 16], &mut a.tree);
        assert!(matches!(out.as_slice(), [Command::Failed(ExchangeError::Unexpected { .. })]));

        let (mut x, _) = Exchange::start(1, "b", ExchangeLimits::default(), 100);
        let out = x.on_leaf_keys(3, vec![], vec![]);
        assert!(matches!(out.as_slice(), [Command::Failed(ExchangeError::Unexpected { .. })]));

        // Walk down to the leaf, then feed bad listings.
        let leaf = leaf_of(&key(1));
        let walk = |a: &mut Replica, b: &mut Replica| {
            let (mut x, mut cmds) = Exchange::start(1, "b", ExchangeLimits::default(), 100);
            while let [Command::RequestHashes { level, parents }] = cmds.as_slice() {
                let hashes = b.tree.children_batch(*level, parents).unwrap();
                cmds = x.on_hashes(*level, &hashes, &mut a.tree);
            }
            assert_eq!(cmds, vec![Command::RequestLeafKeys { leaves: vec![leaf] }]);
            x
        };
        let foreign = (0..).map(key).find(|k| leaf_of(k) != leaf).unwrap();
        let mut x = walk(&mut a, &mut b);
        let out = x.on_leaf_keys(leaf, vec![(foreign.clone(), 1)], a.leaf_items(leaf));
        assert_eq!(
            out,
            vec![Command::Failed(ExchangeError::ItemOutsideLeaf {
                side: Side::Peer,
                leaf,
                actual: leaf_of(&foreign)
            })]
        );
        let mut x = walk(&mut a, &mut b);
        let out = x.on_leaf_keys(leaf, vec![(key(1), 1), (key(1), 2)], a.leaf_items(leaf));
        assert_eq!(out, vec![Command::Failed(ExchangeError::DuplicateKey { side: Side::Peer, leaf })]);
        let mut x = walk(&mut a, &mut b);
        let out = x.on_leaf_keys(leaf + 1, b.leaf_items(leaf), a.leaf_items(leaf));
        assert!(matches!(out.as_slice(), [Command::Failed(ExchangeError::Unexpected { .. })]));
    }

    /// Proves the deadline fails an unfinished exchange once, naming what it waited for, and a
    /// late answer afterwards is ignored; a transport error fails it too.
    #[test]
    fn deadline_and_transport_error() {
        let mut tree = MerkleTree::new();
        let (mut x, _) = Exchange::start(1, "b", ExchangeLimits::default(), 100);
        assert!(x.tick(99).is_empty());
        assert_eq!(
            x.tick(100),
            vec![Command::Failed(ExchangeError::Timeout("hashes of level 0 (1 parent)".into()))]
        );
        assert!(x.tick(200).is_empty());
        assert!(x.on_hashes(0, &[0; 16], &mut tree).is_empty());
        assert!(matches!(x.outcome(), Some(Err(ExchangeError::Timeout(_)))));

        let (mut x, _) = Exchange::start(1, "b", ExchangeLimits::default(), 100);
        assert_eq!(
            x.on_error("connection reset"),
            vec![Command::Failed(ExchangeError::Peer("connection reset".into()))]
        );
        assert_eq!(x.range(), 1);
        assert_eq!(x.peer(), "b");
    }

    /// Replica contents for the property test: key index → state byte set.
    fn contents() -> impl Strategy<Value = BTreeMap<u32, Vec<u8>>> {
        proptest::collection::btree_map(0u32..5000, proptest::collection::btree_set(0u8..4, 1..3), 0..300)
            .prop_map(|m| m.into_iter().map(|(k, s)| (k, s.into_iter().collect())).collect())
    }

    proptest! {
        /// Proves, for random divergent replica pairs, that one exchange (within its limits)
        /// transfers exactly the differing keys — pushes the keys only at A or with differing
        /// states, pulls the keys only at B or with differing states — and leaves both replicas
        /// equal, each key holding the join of the two states.
        #[test]
        fn exchange_transfers_exactly_the_differing_keys(
            common in contents(), only_a in contents(), only_b in contents()
        ) {
            let mut a = replica(common.iter().chain(&only_a).map(|(k, s)| (key(*k), s.clone())));
            let mut b = replica(common.iter().chain(&only_b).map(|(k, s)| (key(*k), s.clone())));
            let (a0, b0) = (a.items.clone(), b.items.clone());
            let limits = ExchangeLimits { leaves_max: LEAVES, keys_max: usize::MAX };
            let (outcome, pushed, pulled) = run(&mut a, &mut b, limits);
            let stats = outcome.unwrap();
            prop_assert!(!stats.more_remaining);
            let differs = |k: &Vec<u8>| a0.get(k) != b0.get(k);
            let expected_push: Vec<Vec<u8>> = a0.keys().filter(|k| differs(k)).cloned().collect();
            let expected_pull: Vec<Vec<u8>> = b0.keys().filter(|k| differs(k)).cloned().collect();
            prop_assert_eq!(&pushed, &expected_push);
            prop_assert_eq!(&pulled, &expected_pull);
            prop_assert_eq!(stats.leaves_without_key_difference, 0);
            prop_assert_eq!(&a.items, &b.items);
            for (k, state) in &a.items {
                let mut join: BTreeSet<u8> = a0.get(k).into_iter().flatten().copied().collect();
                join.extend(b0.get(k).into_iter().flatten().copied());
                prop_assert_eq!(state, &join.into_iter().collect::<Vec<u8>>());
            }
            prop_assert_eq!(a.tree.root(), b.tree.root());
        }

        /// Proves that with small limits, repeated exchanges converge any divergent pair, each
        /// exchange within its bounds.
        #[test]
        fn bounded_exchanges_converge(
            common in contents(), only_a in contents(), only_b in contents(),
            leaves_max in 1usize..8, keys_max in 2usize..12,
        ) {
            let mut a = replica(common.iter().chain(&only_a).map(|(k, s)| (key(*k), s.clone())));
            let mut b = replica(common.iter().chain(&only_b).map(|(k, s)| (key(*k), s.clone())));
            let limits = ExchangeLimits { leaves_max, keys_max };
            for _ in 0..2000 {
                let (outcome, pushed, pulled) = run(&mut a, &mut b, limits);
                let stats = outcome.unwrap();
                prop_assert!(stats.leaves_listed as usize <= leaves_max);
                prop_assert!(pushed.len() + pulled.len() <= keys_max);
                if !stats.more_remaining {
                    break;
                }
            }
            prop_assert_eq!(&a.items, &b.items);
            prop_assert_eq!(a.tree.root(), b.tree.root());
        }
    }
}
