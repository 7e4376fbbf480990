//! Last-writer-wins encoding for tables in `lww` conflict mode.
//!
//! A stored LWW value is `timestamp u64 BE | flag u8 | payload`, where the timestamp is a hybrid
//! logical clock reading of the coordinating replica and flag 1 marks a delete (a delete needs a
//! timestamp too, or an older write could outlive it). Resolution keeps the sibling with the
//! highest `(timestamp, dot)`: deterministic, so every replica converges on the same winner, and
//! exactly as lossy as LWW is everywhere — which is what the lab's clock-skew scenario measures.

use crate::causality::{ItemState, Value};

const HEADER_BYTES: usize = 9;
const FLAG_VALUE: u8 = 0;
const FLAG_DELETED: u8 = 1;

/// Wraps a client value (or delete) with its timestamp.
pub fn stamp(ts: u64, value: Value) -> Value {
    let (flag, payload) = match value {
        Value::Data(p) => (FLAG_VALUE, p),
        Value::Tombstone => (FLAG_DELETED, Vec::new()),
    };
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&ts.to_be_bytes());
    out.push(flag);
    out.extend_from_slice(&payload);
    Value::Data(out)
}

fn timestamp(bytes: &[u8]) -> u64 {
    bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0)
}

/// Highest timestamp among the state's siblings (0 if none).
pub fn max_timestamp(state: &ItemState) -> u64 {
    state
        .siblings()
        .iter()
        .filter_map(|(_, v)| match v {
            Value::Data(b) => Some(timestamp(b)),
            Value::Tombstone => None,
        })
        .max()
        .unwrap_or(0)
}

/// Keeps only the winning sibling: highest timestamp, ties broken by dot.
pub fn resolve(state: &ItemState) -> ItemState {
    let winner = state
        .siblings()
        .iter()
        .filter_map(|(d, v)| match v {
            Value::Data(b) => Some((timestamp(b), *d)),
            Value::Tombstone => None,
        })
        .max();
    match winner {
        Some((_, dot)) => state.retain_siblings(|d, _| *d == dot),
        None => state.clone(),
    }
}

/// The client's view: payload without header; a winning delete reads as a tombstone.
pub fn client_view(state: &ItemState) -> ItemState {
    state.map_values(|b| match b.get(8) {
        Some(&FLAG_DELETED) => Value::Tombstone,
        _ => Value::Data(b.get(HEADER_BYTES..).unwrap_or_default().to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causality::{ActorId, VersionVector};

    /// Proves the highest timestamp wins regardless of merge order, and a later delete hides the value.
    #[test]
    fn highest_timestamp_wins() {
        let blind = VersionVector::new();
        let a = ItemState::new()
            .update(&blind, stamp(200, Value::Data(b"early-but-skewed".to_vec())), ActorId(1))
            .unwrap();
        let b =
            ItemState::new().update(&blind, stamp(100, Value::Data(b"late".to_vec())), ActorId(2)).unwrap();
        let ab = resolve(&ItemState::merged(&a, &b));
        let ba = resolve(&ItemState::merged(&b, &a));
        assert_eq!(ab, ba);
        assert_eq!(client_view(&ab).values(), vec![b"early-but-skewed".as_slice()]);
        let d = ab.update(&blind, stamp(300, Value::Tombstone), ActorId(2)).unwrap();
        assert!(client_view(&resolve(&d)).is_deleted());
    }
}
