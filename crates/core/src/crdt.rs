//! State-based CRDTs for the CRDT tables of issue #14: a PN-counter and an add-wins
//! observed-remove set without tombstones (ORSWOT, after riak_dt's `riak_dt_orswot`).
//!
//! Both are join-semilattices: [`merge`](Orswot::merge) is commutative, associative and
//! idempotent, so replicas may exchange states in any order, any number of times (writes,
//! read repair, hints, anti-entropy) and still converge. The property tests below check the
//! laws, and the set's two promises:
//!
//! - **no observed add is lost**: an element added (by any replica, under a new dot) stays in
//!   every merge until a remove that *observed that add* (its context covers the dot) reaches it;
//! - **no removed element is resurrected**: a remove deletes exactly the dots its context
//!   covers, everywhere, including replicas that see the remove before the add it observed
//!   (the remove is then *deferred* until their clock covers its context, as riak_dt does;
//!   deferred removes are kept at most [`DEFERRED_LEN_MAX`] and merged like the rest).
//!
//! A concurrent add and remove of one element: the add's dot is not in the remove's context, so
//! the add wins. Metadata stays bounded by the number of actors: the clock has one entry per
//! actor, an element at most one dot per actor, and removed elements leave nothing behind.
//!
//! `map.rs` adds the map (a cart), `state.rs` the table-level state, operations and codecs.
//!
//! Actors are generic (`A: Ord + Copy`): the store uses its `ActorId`s, the tests small
//! integers.

use std::collections::BTreeMap;

mod map;
mod state;
pub use map::{CrdtMap, FieldKind, FieldValue, Target};
pub use state::{decode_context, encode_context, CrdtKind, CrdtOp, CrdtState, CRDT_NAME_BYTES_MAX};

/// Most deferred removes one set keeps. A deferred remove waits for adds its replica has not
/// seen yet; anti-entropy brings them within seconds, so a handful is plenty. Past the bound a
/// new deferred remove is refused (the caller retries after the replica caught up).
pub const DEFERRED_LEN_MAX: usize = 64;

/// A version vector: per actor, the highest counter seen (every counter up to it included).
pub type Clock<A> = BTreeMap<A, u64>;

fn covers<A: Ord>(clock: &Clock<A>, actor: &A, counter: u64) -> bool {
    clock.get(actor).is_some_and(|&c| c >= counter)
}

fn clock_covers<A: Ord>(clock: &Clock<A>, other: &Clock<A>) -> bool {
    other.iter().all(|(a, &c)| covers(clock, a, c))
}

fn join<A: Ord + Copy>(into: &mut Clock<A>, other: &Clock<A>) {
    for (a, &c) in other {
        let e = into.entry(*a).or_insert(0);
        *e = (*e).max(c);
    }
}

/// Removes waiting for their context to be covered: context → what they remove (sorted).
type Deferred<A, T> = BTreeMap<Vec<(A, u64)>, Vec<T>>;

/// Keeps a remove whose context `clock` does not cover yet, to apply once it does.
fn defer<A: Ord + Copy, T: Ord + Clone>(
    deferred: &mut Deferred<A, T>,
    clock: &Clock<A>,
    ctx: &Clock<A>,
    target: &T,
) -> Result<(), CrdtError> {
    if clock_covers(clock, ctx) {
        return Ok(());
    }
    let key: Vec<(A, u64)> = ctx.iter().map(|(a, c)| (*a, *c)).collect();
    if !deferred.contains_key(&key) && deferred.len() >= DEFERRED_LEN_MAX {
        return Err(CrdtError::TooManyDeferred { max: DEFERRED_LEN_MAX });
    }
    let list = deferred.entry(key).or_default();
    if !list.contains(target) {
        list.push(target.clone());
        // Sorted, so states that deferred the same removes in another order are equal.
        list.sort();
    }
    Ok(())
}

/// Joins another state's deferred removes.
fn join_deferred<A: Ord + Copy, T: Ord + Clone>(into: &mut Deferred<A, T>, other: &Deferred<A, T>) {
    for (ctx, targets) in other {
        let list = into.entry(ctx.clone()).or_default();
        for t in targets {
            if !list.contains(t) {
                list.push(t.clone());
            }
        }
        list.sort();
    }
}

/// Takes the deferred removes whose context `clock` now covers. A merge can leave more than
/// [`DEFERRED_LEN_MAX`] for a moment; no new one is accepted until the count is back under it.
fn take_ready<A: Ord + Copy, T>(deferred: &mut Deferred<A, T>, clock: &Clock<A>) -> Vec<(Clock<A>, Vec<T>)> {
    let ready: Vec<Vec<(A, u64)>> =
        deferred.keys().filter(|ctx| ctx.iter().all(|(a, c)| covers(clock, a, *c))).cloned().collect();
    ready
        .into_iter()
        .filter_map(|key| {
            let targets = deferred.remove(&key)?;
            Some((key.into_iter().collect(), targets))
        })
        .collect()
}

/// A counter that goes up and down: per actor, the increments and the decrements it made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PnCounter<A: Ord> {
    pub incs: BTreeMap<A, u64>,
    pub decs: BTreeMap<A, u64>,
}

impl<A: Ord> Default for PnCounter<A> {
    fn default() -> Self {
        PnCounter { incs: BTreeMap::new(), decs: BTreeMap::new() }
    }
}

impl<A: Ord + Copy> PnCounter<A> {
    /// Adds `by` (negative: subtracts) as `actor`. Saturates rather than wraps at u64::MAX per
    /// actor, which no cart reaches.
    pub fn incr(&mut self, actor: A, by: i64) {
        let side = if by >= 0 { &mut self.incs } else { &mut self.decs };
        let e = side.entry(actor).or_insert(0);
        *e = e.saturating_add(by.unsigned_abs());
    }

    pub fn value(&self) -> i128 {
        let sum = |m: &BTreeMap<A, u64>| m.values().map(|&v| i128::from(v)).sum::<i128>();
        sum(&self.incs) - sum(&self.decs)
    }

    /// Pointwise maximum: each actor's own counts only grow.
    pub fn merge(&mut self, other: &PnCounter<A>) {
        join(&mut self.incs, &other.incs);
        join(&mut self.decs, &other.decs);
    }
}

/// Why a set operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrdtError {
    #[error("too many removes waiting for adds this replica has not seen (at most {max}); retry shortly")]
    TooManyDeferred { max: usize },
    /// The operation does not fit the table's CRDT type (or is not an operation at all).
    #[error("{0}")]
    OpDoesNotFit(String),
    /// A stored or sent encoding that does not decode.
    #[error("malformed CRDT encoding: {0}")]
    Malformed(String),
}

/// An add-wins observed-remove set without tombstones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orswot<E: Ord, A: Ord> {
    /// Every add this state has seen.
    clock: Clock<A>,
    /// Live elements and the dots (actor → counter) of the adds that keep them alive.
    entries: BTreeMap<E, BTreeMap<A, u64>>,
    /// Removes whose context this state's clock does not cover yet: context → elements.
    deferred: Deferred<A, E>,
}

impl<E: Ord, A: Ord> Default for Orswot<E, A> {
    fn default() -> Self {
        Orswot { clock: BTreeMap::new(), entries: BTreeMap::new(), deferred: BTreeMap::new() }
    }
}

impl<E: Ord + Clone, A: Ord + Copy> Orswot<E, A> {
    /// The context a remove must carry: what this state has seen.
    pub fn context(&self) -> &Clock<A> {
        &self.clock
    }

    pub fn contains(&self, e: &E) -> bool {
        self.entries.contains_key(e)
    }

    pub fn elements(&self) -> impl Iterator<Item = &E> {
        self.entries.keys()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes waiting for their context to be covered.
    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }

    /// Metadata size in (actor, counter) pairs: clock, element dots and deferred contexts.
    pub fn metadata_len(&self) -> usize {
        self.clock.len()
            + self.entries.values().map(BTreeMap::len).sum::<usize>()
            + self.deferred.keys().map(Vec::len).sum::<usize>()
    }

    /// Adds `e` as `actor` under a new dot; the element's older dots are superseded by it.
    pub fn add(&mut self, actor: A, e: E) {
        let counter = self.clock.entry(actor).or_insert(0);
        *counter += 1;
        let dot = *counter;
        let mut dots = BTreeMap::new();
        dots.insert(actor, dot);
        self.entries.insert(e, dots);
    }

    /// Removes `e` as observed by `ctx` (the context of the read the remove follows): the
    /// element's dots that `ctx` covers go; an add `ctx` did not see survives (add wins). When
    /// `ctx` names adds this state has not seen, the remove is also kept as deferred, to apply
    /// once they arrive.
    pub fn remove(&mut self, e: &E, ctx: &Clock<A>) -> Result<(), CrdtError> {
        defer(&mut self.deferred, &self.clock, ctx, e)?;
        self.remove_covered(e, ctx);
        Ok(())
    }

    fn remove_covered(&mut self, e: &E, ctx: &Clock<A>) {
        if let Some(dots) = self.entries.get_mut(e) {
            dots.retain(|a, c| !covers(ctx, a, *c));
            if dots.is_empty() {
                self.entries.remove(e);
            }
        }
    }

    /// Joins another replica's state. An element survives if a dot of it is in both states, or
    /// in one state and not yet seen by the other's clock (a new add, not a remove).
    pub fn merge(&mut self, other: &Orswot<E, A>) {
        let mut entries = BTreeMap::new();
        let keys: Vec<&E> = {
            let mut k: Vec<&E> = self.entries.keys().chain(other.entries.keys()).collect();
            k.sort();
            k.dedup();
            k
        };
        for e in keys {
            let mine = self.entries.get(e);
            let theirs = other.entries.get(e);
            let mut dots = BTreeMap::new();
            let actors: Vec<A> = {
                let mut a: Vec<A> = mine.into_iter().chain(theirs).flat_map(|d| d.keys().copied()).collect();
                a.sort();
                a.dedup();
                a
            };
            for a in actors {
                let m = mine.and_then(|d| d.get(&a)).copied();
                let t = theirs.and_then(|d| d.get(&a)).copied();
                let keep = match (m, t) {
                    // Both hold a dot of this actor: the newer one (an element has at most one
                    // dot per actor, and the older was superseded by the newer add).
                    (Some(x), Some(y)) => Some(x.max(y)),
                    // Only one side: kept unless the other side has seen it (and so removed it).
                    (Some(x), None) => (!covers(&other.clock, &a, x)).then_some(x),
                    (None, Some(y)) => (!covers(&self.clock, &a, y)).then_some(y),
                    (None, None) => None,
                };
                if let Some(c) = keep {
                    dots.insert(a, c);
                }
            }
            if !dots.is_empty() {
                entries.insert(e.clone(), dots);
            }
        }
        self.entries = entries;
        join(&mut self.clock, &other.clock);
        join_deferred(&mut self.deferred, &other.deferred);
        for (ctx, elems) in take_ready(&mut self.deferred, &self.clock) {
            for e in elems {
                self.remove_covered(&e, &ctx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Set = Orswot<u8, u8>;

    /// One replica operation of a random history.
    #[derive(Clone, Debug)]
    enum Op {
        Add {
            replica: usize,
            e: u8,
        },
        /// Removes `e` with the context of replica `seen`'s current state (a read from there).
        Remove {
            replica: usize,
            seen: usize,
            e: u8,
        },
        /// Replica `to` merges replica `from`'s state.
        Sync {
            from: usize,
            to: usize,
        },
    }

    const REPLICAS: usize = 3;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..REPLICAS, 0u8..6).prop_map(|(replica, e)| Op::Add { replica, e }),
            (0..REPLICAS, 0..REPLICAS, 0u8..6).prop_map(|(replica, seen, e)| Op::Remove { replica, seen, e }),
            (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Op::Sync { from, to }),
        ]
    }

    /// What a history did: every add `(element, actor, counter)` and every remove
    /// `(element, context)`.
    type Adds = Vec<(u8, u8, u64)>;
    type Removes = Vec<(u8, Clock<u8>)>;

    /// Runs a history; returns the replicas, its adds and its removes.
    fn run(ops: &[Op]) -> (Vec<Set>, Adds, Removes) {
        let mut r: Vec<Set> = vec![Set::default(); REPLICAS];
        let mut adds = Vec::new();
        let mut removed = Vec::new();
        for op in ops {
            match *op {
                Op::Add { replica, e } => {
                    r[replica].add(replica as u8, e);
                    adds.push((e, replica as u8, r[replica].clock[&(replica as u8)]));
                }
                Op::Remove { replica, seen, e } => {
                    let ctx = r[seen].context().clone();
                    if r[replica].remove(&e, &ctx).is_ok() {
                        removed.push((e, ctx));
                    }
                }
                Op::Sync { from, to } => {
                    let s = r[from].clone();
                    r[to].merge(&s);
                }
            }
        }
        (r, adds, removed)
    }

    fn converge(r: &[Set]) -> Set {
        let mut all = Set::default();
        for s in r {
            all.merge(s);
        }
        all
    }

    proptest! {
        /// Proves merge is commutative, associative and idempotent on the replicas' states of
        /// one random history (dots are unique within a history, as in a real cluster; deferred
        /// removes included).
        #[test]
        fn orswot_merge_is_a_semilattice(ops in prop::collection::vec(op(), 0..60)) {
            let (r, _, _) = run(&ops);
            let (a, b, c) = (&r[0], &r[1], &r[2]);
            let m = |x: &Set, y: &Set| { let mut z = x.clone(); z.merge(y); z };
            prop_assert_eq!(m(a, b).entries, m(b, a).entries);
            prop_assert_eq!(m(&m(a, b), c).entries, m(a, &m(b, c)).entries);
            prop_assert_eq!(&m(a, a), a);
        }

        /// Proves, over random histories of adds, removes with a context read from any replica,
        /// and syncs: after every replica's state is merged, an element is present exactly when
        /// some add of it was not observed by any remove (no observed add lost, no removed
        /// element resurrected), and metadata stays bounded by the actors.
        #[test]
        fn orswot_keeps_unobserved_adds_and_only_those(ops in prop::collection::vec(op(), 0..60)) {
            let (replicas, adds, removed) = run(&ops);
            let all = converge(&replicas);
            for e in 0u8..6 {
                // The observed-remove specification: e is present exactly when some add of it
                // was observed by no remove of it (no remove's context covers the add's dot).
                let alive = adds.iter().filter(|(x, ..)| *x == e).any(|(_, a, c)| {
                    !removed.iter().any(|(x, ctx)| *x == e && covers(ctx, a, *c))
                });
                prop_assert_eq!(all.contains(&e), alive, "element {}", e);
            }
            prop_assert!(all.entries.values().all(|d| d.len() <= REPLICAS));
            prop_assert!(all.clock.len() <= REPLICAS);
            prop_assert_eq!(all.deferred_len(), 0, "every deferred remove applies once all adds are seen");
        }

        /// Proves the PN-counter's merge laws and that merged replicas count every increment and
        /// decrement exactly once.
        #[test]
        fn pn_counter_merges_count_everything_once(
            ops in prop::collection::vec((0u8..3, -5i64..6, 0usize..3), 0..60),
        ) {
            let mut r: Vec<PnCounter<u8>> = vec![PnCounter::default(); 3];
            let mut expected = 0i128;
            for (actor, by, sync_to) in ops {
                r[actor as usize].incr(actor, by);
                expected += i128::from(by);
                let s = r[actor as usize].clone();
                r[sync_to].merge(&s);
            }
            let mut a = r[0].clone();
            a.merge(&r[1]);
            a.merge(&r[2]);
            let mut b = r[2].clone();
            b.merge(&r[0]);
            b.merge(&r[1]);
            b.merge(&r[1]);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.value(), expected);
        }
    }

    /// Proves a concurrent add and remove of one element keeps it (add wins), while a remove
    /// that observed the add deletes it on every replica, even one that sees the remove first.
    #[test]
    fn add_wins_and_a_remove_before_its_add_is_deferred() {
        let mut a = Set::default();
        let mut b = Set::default();
        a.add(1, 7);
        b.merge(&a);
        let ctx = b.context().clone();
        a.add(1, 7); // concurrent re-add, not seen by b's remove
        b.remove(&7, &ctx).unwrap();
        a.merge(&b);
        assert!(a.contains(&7), "the unobserved add wins");

        // c has not seen the add yet: the remove waits, then applies when the add arrives.
        let mut x = Set::default();
        x.add(1, 9);
        let ctx = x.context().clone();
        let mut c = Set::default();
        c.remove(&9, &ctx).unwrap();
        assert_eq!(c.deferred_len(), 1);
        c.merge(&x);
        assert!(!c.contains(&9));
        assert_eq!(c.deferred_len(), 0);
        x.merge(&c);
        assert!(!x.contains(&9), "the remove reaches the adder too");
    }

    /// Proves deferred removes are bounded: past the limit a remove with a new unseen context
    /// is refused with a clear error.
    #[test]
    fn deferred_removes_are_bounded() {
        let mut s = Set::default();
        for i in 0..DEFERRED_LEN_MAX as u64 {
            s.remove(&1, &BTreeMap::from([(9, i + 1)])).unwrap();
        }
        assert_eq!(
            s.remove(&1, &BTreeMap::from([(9, 1_000)])),
            Err(CrdtError::TooManyDeferred { max: DEFERRED_LEN_MAX })
        );
    }
}
