//! CRDT tables (`Conflict::Crdt`) on top of the dotted item state.
//!
//! An item of a CRDT table is an ordinary [`ItemState`] whose sibling values are encoded
//! [`CrdtState`]s, so every replica path — write replication, read repair, hints, anti-entropy —
//! moves and merges it with the one dotted merge the other tables use, unchanged. Concurrent
//! writes on two sides of a partition leave two siblings; the item's CRDT value is the **join of
//! its siblings' states**, computed by every read ([`joined`]) and by every write: a home
//! replica applies an operation to the join of what it holds and stores the result as one
//! sibling superseding all of them (its context covers them), so siblings collapse at the next
//! write.
//!
//! Why that loses nothing: a write's value is the join of every sibling it supersedes plus its
//! operation, so by induction every state any dot ever carried is below some live sibling; a
//! superseded sibling that comes back (pruning of retired actors can do that) is below the live
//! join and joining it changes nothing. The join is a semilattice (see `crdt`'s property tests),
//! so the order in which paths deliver siblings does not matter either.
//!
//! Writes carry no write id (as in LWW tables): two coordinators applying one hedged or retried
//! operation each keep it, which for `add`, `remove` and `assign` is the same as once, and for
//! `incr` counts it twice. The write-id merge rule would instead keep one of the two versions and
//! drop what the other had joined in.

use crate::causality::{ItemState, Value};
use crate::crdt::{CrdtError, CrdtKind, CrdtOp, CrdtState};

/// The item's CRDT value: the join of its data siblings (a tombstone carries no state).
pub fn joined(state: &ItemState, kind: CrdtKind) -> Result<CrdtState, CrdtError> {
    let mut out = CrdtState::empty(kind);
    for (_, v) in state.siblings() {
        if let Value::Data(bytes) = v {
            out.merge(&CrdtState::decode(bytes)?)?;
        }
    }
    Ok(out)
}

/// The new value a home replica writes for operation bytes `op` (the write's value) applied as
/// `actor` to what it holds.
pub fn applied(local: &ItemState, kind: CrdtKind, op: &[u8], actor: u64) -> Result<Vec<u8>, CrdtError> {
    let op = CrdtOp::decode(op)?;
    op.validate()?;
    let mut state = joined(local, kind)?;
    state.apply(actor, op)?;
    Ok(state.encode())
}

/// The number of data siblings, when the state holds more than one (a concurrent merge the join
/// resolves), for the conflict metrics.
pub fn concurrent(state: &ItemState) -> Option<usize> {
    let n = state.siblings().iter().filter(|(_, v)| matches!(v, Value::Data(_))).count();
    (n > 1).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::{ActorId, VersionVector};
    use crate::crdt::FieldKind;

    fn op(o: CrdtOp) -> Vec<u8> {
        o.encode()
    }

    /// Proves that two replicas' concurrent cart writes survive as siblings whose join holds
    /// both adds, and that the next write collapses them into one sibling holding both.
    #[test]
    fn siblings_join_and_the_next_write_collapses_them() {
        let kind = CrdtKind::Map;
        let blind = VersionVector::new();
        let add = |f: &str| op(CrdtOp::Incr { field: Some(f.into()), by: 1 });
        let a = applied(&ItemState::new(), kind, &add("apple"), 1).unwrap();
        let a = ItemState::new().update(&blind, Value::Data(a), ActorId(1)).unwrap();
        let b = applied(&ItemState::new(), kind, &add("pear"), 2).unwrap();
        let b = ItemState::new().update(&blind, Value::Data(b), ActorId(2)).unwrap();
        let m = ItemState::merged(&a, &b);
        assert_eq!(concurrent(&m), Some(2));
        let CrdtState::Map(j) = joined(&m, kind).unwrap() else { panic!("a map") };
        assert!(j.has_field("apple") && j.has_field("pear"));
        let next = applied(&m, kind, &add("fig"), 1).unwrap();
        let next = m.update(&m.context().clone(), Value::Data(next), ActorId(1)).unwrap();
        assert_eq!(concurrent(&next), None);
        let CrdtState::Map(j) = joined(&next, kind).unwrap() else { panic!("a map") };
        let fields = j.fields();
        assert!(["apple", "pear", "fig"]
            .iter()
            .all(|f| fields.contains_key(&(f.to_string(), FieldKind::Counter))));
        assert!(matches!(applied(&m, kind, b"plain value", 1), Err(CrdtError::OpDoesNotFit(_))));
    }
}
