//! A map CRDT: field names to nested counters, sets or registers (a shopping cart is a map from
//! item id to a quantity counter).
//!
//! Every field state is a set of *dotted entries* under one map-wide clock, merged with the
//! ORSWOT rule: an entry survives a merge if both sides hold it, or one side holds it and the
//! other's clock has not seen its dot (a new write rather than a remove). So one rule covers all
//! three field kinds and their removal:
//!
//! - **counter**: one entry per actor, `(dot, that actor's running sum)`; an increment replaces
//!   the actor's own entry under a new dot. The value is the sum of the live entries.
//! - **register**: an assign replaces every entry the writing replica holds (it observed them)
//!   by one new entry; concurrent assigns stay side by side (a multi-value register).
//! - **set**: one entry per element, like [`Orswot`](super::Orswot).
//!
//! Removing a field (or a set element) with the context of a read drops exactly the entries that
//! context covers; an entry the remove did not observe survives: add wins. Removes whose context
//! this state has not seen yet are deferred, as in the set.
//!
//! What removal does not make exact: a counter's entry holds its actor's *running* sum, so an
//! increment concurrent with a remove keeps the field with that actor's earlier (observed and
//! removed) contribution folded in. Presence is exact; a quantity after such a race can be high.
//!
//! Metadata: the clock has one entry per actor; a counter field one entry per actor that
//! incremented it since its last observed removal; a set element or register one per concurrent
//! writer; removed fields leave nothing behind.

use super::{covers, defer, join, join_deferred, take_ready, Clock, CrdtError, Deferred};
use std::collections::BTreeMap;

/// The kind of a map field. Fields are keyed by (name, kind), as in riak_dt's map, so two
/// replicas writing different kinds under one name never conflict: they make two fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FieldKind {
    Counter,
    Set,
    Register,
}

impl FieldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::Counter => "counter",
            FieldKind::Set => "set",
            FieldKind::Register => "register",
        }
    }

    pub(crate) fn tag(self) -> u8 {
        match self {
            FieldKind::Counter => 0,
            FieldKind::Set => 1,
            FieldKind::Register => 2,
        }
    }

    pub(crate) fn from_tag(t: u8) -> Option<FieldKind> {
        match t {
            0 => Some(FieldKind::Counter),
            1 => Some(FieldKind::Set),
            2 => Some(FieldKind::Register),
            _ => None,
        }
    }
}

/// One entry's place: a field and, for set fields, the element (empty for the other kinds).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryKey {
    pub field: String,
    pub kind: FieldKind,
    pub elem: String,
}

/// What an entry carries besides its dot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Payload {
    /// A set element's presence.
    Present,
    /// A counter actor's running sum.
    Count(i64),
    /// A register value.
    Bytes(Vec<u8>),
}

/// What a remove removes: a whole field (every kind, when `kind` is `None`) or one set element.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub field: String,
    pub kind: Option<FieldKind>,
    pub elem: Option<String>,
}

impl Target {
    fn matches(&self, k: &EntryKey) -> bool {
        k.field == self.field
            && self.kind.is_none_or(|kind| kind == k.kind)
            && self.elem.as_ref().is_none_or(|e| *e == k.elem)
    }
}

/// A field's value as a reader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldValue {
    Counter(i128),
    Set(Vec<String>),
    /// Concurrent assigns, in dot order.
    Register(Vec<Vec<u8>>),
}

/// Per actor: the dot counter of its live entry and what it carries.
pub type Entry<A> = BTreeMap<A, (u64, Payload)>;

/// The map state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrdtMap<A: Ord> {
    pub(crate) clock: Clock<A>,
    pub(crate) entries: BTreeMap<EntryKey, Entry<A>>,
    pub(crate) deferred: Deferred<A, Target>,
}

impl<A: Ord> Default for CrdtMap<A> {
    fn default() -> Self {
        CrdtMap { clock: BTreeMap::new(), entries: BTreeMap::new(), deferred: BTreeMap::new() }
    }
}

impl<A: Ord + Copy> CrdtMap<A> {
    /// The context a remove must carry: what this state has seen.
    pub fn context(&self) -> &Clock<A> {
        &self.clock
    }

    fn next_dot(&mut self, actor: A) -> u64 {
        let c = self.clock.entry(actor).or_insert(0);
        *c += 1;
        *c
    }

    /// Adds `by` (may be negative) to counter field `field` as `actor`.
    pub fn incr(&mut self, actor: A, field: &str, by: i64) {
        let key = EntryKey { field: field.to_owned(), kind: FieldKind::Counter, elem: String::new() };
        let before = match self.entries.get(&key).and_then(|e| e.get(&actor)) {
            Some((_, Payload::Count(n))) => *n,
            _ => 0,
        };
        let dot = self.next_dot(actor);
        self.entries.entry(key).or_default().insert(actor, (dot, Payload::Count(before.saturating_add(by))));
    }

    /// Adds `elem` to set field `field` as `actor`; the element's older dots are superseded.
    pub fn add(&mut self, actor: A, field: &str, elem: &str) {
        let key = EntryKey { field: field.to_owned(), kind: FieldKind::Set, elem: elem.to_owned() };
        let dot = self.next_dot(actor);
        self.entries.insert(key, BTreeMap::from([(actor, (dot, Payload::Present))]));
    }

    /// Assigns register field `field` as `actor`, superseding every value this state holds.
    pub fn assign(&mut self, actor: A, field: &str, value: Vec<u8>) {
        let key = EntryKey { field: field.to_owned(), kind: FieldKind::Register, elem: String::new() };
        let dot = self.next_dot(actor);
        self.entries.insert(key, BTreeMap::from([(actor, (dot, Payload::Bytes(value)))]));
    }

    /// Removes `target` as observed by `ctx`; see [`Orswot::remove`](super::Orswot::remove).
    pub fn remove(&mut self, target: Target, ctx: &Clock<A>) -> Result<(), CrdtError> {
        defer(&mut self.deferred, &self.clock, ctx, &target)?;
        self.remove_covered(&target, ctx);
        Ok(())
    }

    fn remove_covered(&mut self, target: &Target, ctx: &Clock<A>) {
        self.entries.retain(|k, dots| {
            if target.matches(k) {
                dots.retain(|a, (c, _)| !covers(ctx, a, *c));
            }
            !dots.is_empty()
        });
    }

    /// Joins another replica's state (the ORSWOT rule per entry, see the module docs).
    pub fn merge(&mut self, other: &CrdtMap<A>) {
        let mut entries: BTreeMap<EntryKey, Entry<A>> = BTreeMap::new();
        let mine = std::mem::take(&mut self.entries);
        for (k, dots) in &mine {
            let theirs = other.entries.get(k);
            let kept = merge_entry(Some(dots), theirs, &self.clock, &other.clock);
            if !kept.is_empty() {
                entries.insert(k.clone(), kept);
            }
        }
        for (k, dots) in &other.entries {
            if mine.contains_key(k) {
                continue;
            }
            let kept = merge_entry(None, Some(dots), &self.clock, &other.clock);
            if !kept.is_empty() {
                entries.insert(k.clone(), kept);
            }
        }
        self.entries = entries;
        join(&mut self.clock, &other.clock);
        join_deferred(&mut self.deferred, &other.deferred);
        for (ctx, targets) in take_ready(&mut self.deferred, &self.clock) {
            for t in targets {
                self.remove_covered(&t, &ctx);
            }
        }
    }

    /// Removes waiting for their context to be covered.
    pub fn deferred_len(&self) -> usize {
        self.deferred.len()
    }

    /// Metadata size in (actor, counter) pairs: clock, entry dots and deferred contexts.
    pub fn metadata_len(&self) -> usize {
        self.clock.len()
            + self.entries.values().map(BTreeMap::len).sum::<usize>()
            + self.deferred.keys().map(Vec::len).sum::<usize>()
    }

    /// Every live field and its value, by name then kind.
    pub fn fields(&self) -> BTreeMap<(String, FieldKind), FieldValue> {
        let mut out: BTreeMap<(String, FieldKind), FieldValue> = BTreeMap::new();
        for (k, dots) in &self.entries {
            let slot = (k.field.clone(), k.kind);
            match k.kind {
                FieldKind::Counter => {
                    let sum: i128 = dots
                        .values()
                        .map(|(_, p)| match p {
                            Payload::Count(n) => i128::from(*n),
                            _ => 0,
                        })
                        .sum();
                    out.insert(slot, FieldValue::Counter(sum));
                }
                FieldKind::Set => {
                    if let FieldValue::Set(v) = out.entry(slot).or_insert_with(|| FieldValue::Set(Vec::new()))
                    {
                        v.push(k.elem.clone());
                    }
                }
                FieldKind::Register => {
                    let mut vals: Vec<(u64, Vec<u8>)> = dots
                        .values()
                        .filter_map(|(c, p)| match p {
                            Payload::Bytes(b) => Some((*c, b.clone())),
                            _ => None,
                        })
                        .collect();
                    vals.sort();
                    out.insert(slot, FieldValue::Register(vals.into_iter().map(|(_, b)| b).collect()));
                }
            }
        }
        out
    }

    /// Whether any field named `field` is live.
    pub fn has_field(&self, field: &str) -> bool {
        self.entries.keys().any(|k| k.field == field)
    }
}

/// The ORSWOT rule for one entry: per actor, a dot both sides hold (the newer, an actor's later
/// entry supersedes its earlier one) or a dot one side holds that the other side's clock has not
/// seen.
fn merge_entry<A: Ord + Copy>(
    mine: Option<&Entry<A>>,
    theirs: Option<&Entry<A>>,
    my_clock: &Clock<A>,
    their_clock: &Clock<A>,
) -> Entry<A> {
    let mut out = BTreeMap::new();
    let empty = BTreeMap::new();
    let (m, t) = (mine.unwrap_or(&empty), theirs.unwrap_or(&empty));
    for (a, (c, p)) in m {
        match t.get(a) {
            Some((tc, tp)) => {
                // Same dot: same payload on correct replicas; the greater payload keeps the
                // merge commutative even if not.
                let keep = if tc > c || (tc == c && tp > p) { (*tc, tp.clone()) } else { (*c, p.clone()) };
                out.insert(*a, keep);
            }
            None if !covers(their_clock, a, *c) => {
                out.insert(*a, (*c, p.clone()));
            }
            None => {}
        }
    }
    for (a, (c, p)) in t {
        if !m.contains_key(a) && !covers(my_clock, a, *c) {
            out.insert(*a, (*c, p.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Map = CrdtMap<u8>;
    const REPLICAS: usize = 3;

    /// One operation of a random cart history.
    #[derive(Clone, Debug)]
    enum Op {
        Incr {
            replica: usize,
            item: u8,
            by: i64,
        },
        /// Removes `item` with the context of replica `seen`'s state.
        Remove {
            replica: usize,
            seen: usize,
            item: u8,
        },
        Sync {
            from: usize,
            to: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..REPLICAS, 0u8..5, 1i64..4).prop_map(|(replica, item, by)| Op::Incr { replica, item, by }),
            (0..REPLICAS, 0..REPLICAS, 0u8..5).prop_map(|(replica, seen, item)| Op::Remove {
                replica,
                seen,
                item
            }),
            (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Op::Sync { from, to }),
        ]
    }

    fn target(item: u8) -> Target {
        Target { field: item.to_string(), kind: None, elem: None }
    }

    /// Runs a history: the replicas, every increment `(item, actor, dot)` and every remove.
    #[allow(clippy::type_complexity)]
    fn run(ops: &[Op]) -> (Vec<Map>, Vec<(u8, u8, u64)>, Vec<(u8, Clock<u8>)>) {
        let mut r = vec![Map::default(); REPLICAS];
        let (mut adds, mut removes) = (Vec::new(), Vec::new());
        for op in ops {
            match *op {
                Op::Incr { replica, item, by } => {
                    r[replica].incr(replica as u8, &item.to_string(), by);
                    adds.push((item, replica as u8, r[replica].clock[&(replica as u8)]));
                }
                Op::Remove { replica, seen, item } => {
                    let ctx = r[seen].context().clone();
                    if r[replica].remove(target(item), &ctx).is_ok() {
                        removes.push((item, ctx));
                    }
                }
                Op::Sync { from, to } => {
                    let s = r[from].clone();
                    r[to].merge(&s);
                }
            }
        }
        (r, adds, removes)
    }

    proptest! {
        /// Proves the map's merge is commutative, associative and idempotent on the replica
        /// states of a random cart history (deferred removes included).
        #[test]
        fn map_merge_is_a_semilattice(ops in prop::collection::vec(op(), 0..60)) {
            let (r, _, _) = run(&ops);
            let m = |x: &Map, y: &Map| { let mut z = x.clone(); z.merge(y); z };
            prop_assert_eq!(m(&r[0], &r[1]), m(&r[1], &r[0]));
            prop_assert_eq!(m(&m(&r[0], &r[1]), &r[2]), m(&r[0], &m(&r[1], &r[2])));
            prop_assert_eq!(&m(&r[0], &r[0]), &r[0]);
        }

        /// Proves, over random cart histories, that once every state is merged an item is in the
        /// cart exactly when some increment of it was observed by no remove of it: no observed
        /// add is lost and no removed item comes back; metadata stays bounded by the actors.
        #[test]
        fn cart_keeps_unobserved_adds_and_only_those(ops in prop::collection::vec(op(), 0..80)) {
            let (r, adds, removes) = run(&ops);
            let mut all = Map::default();
            for s in &r {
                all.merge(s);
            }
            for item in 0u8..5 {
                // An increment's entry is the actor's running sum, so a later increment by the
                // same actor carries the earlier one along: an item is alive when some increment
                // (the actor's newest, with the highest dot) escaped every remove.
                let alive = adds.iter().filter(|(i, ..)| *i == item).any(|(_, a, c)| {
                    !removes.iter().any(|(i, ctx)| *i == item && covers(ctx, a, *c))
                });
                prop_assert_eq!(all.has_field(&item.to_string()), alive, "item {}", item);
            }
            prop_assert!(all.clock.len() <= REPLICAS);
            prop_assert!(all.entries.values().all(|e| e.len() <= REPLICAS));
            prop_assert_eq!(all.deferred_len(), 0);
        }
    }

    /// Proves a map's nested set and register follow add-wins and multi-value rules, and a
    /// field removal only removes what its context observed.
    #[test]
    fn nested_set_register_and_field_removal() {
        let (mut a, mut b) = (Map::default(), Map::default());
        a.add(1, "tags", "red");
        a.assign(1, "note", b"gift".to_vec());
        a.incr(1, "apple", 2);
        b.merge(&a);
        let ctx = b.context().clone();
        b.assign(2, "note", b"wrap it".to_vec());
        a.assign(1, "note", b"no wrap".to_vec());
        a.incr(1, "apple", 1); // concurrent with b's remove of apple
        b.remove(Target { field: "apple".into(), kind: None, elem: None }, &ctx).unwrap();
        b.remove(Target { field: "tags".into(), kind: Some(FieldKind::Set), elem: Some("red".into()) }, &ctx)
            .unwrap();
        a.merge(&b);
        let f = a.fields();
        assert_eq!(f.get(&("apple".into(), FieldKind::Counter)), Some(&FieldValue::Counter(3)), "add wins");
        assert!(!f.contains_key(&("tags".into(), FieldKind::Set)), "observed element removed");
        assert_eq!(
            f.get(&("note".into(), FieldKind::Register)),
            Some(&FieldValue::Register(vec![b"wrap it".to_vec(), b"no wrap".to_vec()])),
            "concurrent assigns both kept"
        );
    }
}
