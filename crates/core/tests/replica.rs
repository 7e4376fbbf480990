//! Unit-level tests of the sans-IO replica: single-input steps with hand-made effects, no
//! network. The seeded simulator (crates/lab) covers whole clusters under faults.

use quorumdb_core::causality::{ActorId, VersionVector};
use quorumdb_core::consistency::Level;
use quorumdb_core::key::ItemKey;
use quorumdb_core::replica::{
    ClientRequest, ClientResponse, Effect, Input, MemStore, Now, PeerRequest, PeerResponse, QuorumMode,
    Replica, ReplicaConfig, ReplicaError, SendError, Shared,
};
use quorumdb_core::ring::{Member, Ring};
use std::sync::Arc;

const NOW: Now = Now { mono_ms: 1_000, wall_ms: 1_700_000_000_000 };

fn shared(nodes: usize, me: usize, n: usize) -> Arc<Shared> {
    let members = (0..nodes).map(|i| Member::new(format!("n{i}"), format!("z{i}"))).collect();
    let ring = Ring::new(members, 16).unwrap();
    Arc::new(Shared::new(ReplicaConfig::with_defaults(n), ring, me))
}

fn replica_for(shared: &Arc<Shared>, key: &ItemKey) -> Replica<MemStore> {
    let shard = quorumdb_core::replica::shard_of(key.placement_hash());
    Replica::open(shared.clone(), MemStore::new(), shard, ActorId(7), NOW).unwrap()
}

fn write(key: &ItemKey, w: Level, value: &[u8]) -> ClientRequest {
    ClientRequest::Write {
        key: key.clone(),
        value: Some(value.to_vec()),
        ctx: VersionVector::new(),
        w,
        mode: QuorumMode::Strict,
        timeout_ms: 500,
        write_id: None,
        fence: None,
    }
}

fn replies(effects: &[Effect]) -> Vec<&Result<ClientResponse, ReplicaError>> {
    effects
        .iter()
        .filter_map(|e| if let Effect::Reply { result, .. } = e { Some(result) } else { None })
        .collect()
}

/// Proves a replica acknowledges a write only after the driver reports a covering sync, and
/// that a crash before it leaves nothing behind.
#[test]
fn write_is_acknowledged_only_after_sync() {
    let shared = shared(1, 0, 1);
    let key = ItemKey::new("t", b"k", b"").unwrap();
    let mut r = replica_for(&shared, &key);
    r.step(NOW, Input::Client { id: 1, req: write(&key, Level::One, b"v") });
    let effects = r.drain_effects();
    assert!(replies(&effects).is_empty(), "no answer before the sync: {effects:?}");
    let upto = effects.iter().find_map(|e| if let Effect::Sync { upto } = e { Some(*upto) } else { None });
    let upto = upto.expect("the replica asks for a sync");
    assert!(r.store().has_unsynced());
    r.store_mut().sync();
    r.step(NOW, Input::Synced { upto });
    let effects = r.drain_effects();
    assert!(matches!(replies(&effects)[..], [Ok(ClientResponse::Written(_))]), "{effects:?}");
    assert!(r.store().durable_item(&key.storage_key()).is_some());
}

/// Proves a gateway forwards a write to the next home replica only when the first was
/// unreachable (never delivered), and reports an unknown outcome on a timeout.
#[test]
fn forward_falls_through_only_on_unreachable() {
    // 3 nodes, N=2: find a key this node is not a home replica of.
    let shared3 = shared(3, 0, 2);
    let key = (0..100)
        .map(|i| ItemKey::new("t", format!("k{i}").as_bytes(), b"").unwrap())
        .find(|k| !replica_for(&shared3, k).preference(k).contains(&0))
        .unwrap();
    let mut r = replica_for(&shared3, &key);
    let pref = r.preference(&key);
    r.step(NOW, Input::Client { id: 9, req: write(&key, Level::One, b"v") });
    let sent: Vec<(usize, u64)> = r
        .drain_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send { to, id, req: PeerRequest::CoordinateWrite { .. }, .. } => Some((to, id)),
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, pref[0]);
    r.step(NOW, Input::Response { id: sent[0].1, result: Err(SendError::Unreachable("refused".into())) });
    let effects = r.drain_effects();
    let next: Vec<(usize, u64)> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, id, req: PeerRequest::CoordinateWrite { .. }, .. } => Some((*to, *id)),
            _ => None,
        })
        .collect();
    assert_eq!(next.len(), 1, "tries the next home replica: {effects:?}");
    assert_eq!(next[0].0, pref[1]);
    r.step(NOW, Input::Response { id: next[0].1, result: Err(SendError::Timeout) });
    let effects = r.drain_effects();
    assert!(matches!(replies(&effects)[..], [Err(ReplicaError::Timeout(_))]), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Send { .. })), "no third attempt after a timeout");
}

/// Proves a replica answers a Replicate only once the merged state is durable.
#[test]
fn replicate_ack_waits_for_sync() {
    let shared = shared(2, 1, 2);
    let key = ItemKey::new("t", b"k", b"").unwrap();
    let mut r = replica_for(&shared, &key);
    let state = quorumdb_core::causality::ItemState::new()
        .update(&VersionVector::new(), quorumdb_core::causality::Value::Data(b"x".to_vec()), ActorId(1))
        .unwrap();
    r.step(NOW, Input::Peer { from: 0, id: 5, req: PeerRequest::Replicate { key: key.clone(), state } });
    let effects = r.drain_effects();
    assert!(!effects.iter().any(|e| matches!(e, Effect::Respond { .. })), "{effects:?}");
    let upto =
        effects.iter().find_map(|e| if let Effect::Sync { upto } = e { Some(*upto) } else { None }).unwrap();
    r.store_mut().sync();
    r.step(NOW, Input::Synced { upto });
    let effects = r.drain_effects();
    assert!(
        effects.iter().any(|e| matches!(e, Effect::Respond { to: 0, id: 5, resp: PeerResponse::Ack })),
        "{effects:?}"
    );
}

/// Proves a write that would grow an item's state past ITEM_STATE_BYTES_MAX is refused with
/// item_too_large, and the item stays writable with its context.
#[test]
fn item_state_byte_limit_is_checked_at_write_time() {
    let shared = shared(1, 0, 1);
    let key = ItemKey::new("t", b"big", b"").unwrap();
    let mut r = replica_for(&shared, &key);
    let value = vec![b'x'; quorumdb_core::limits::VALUE_BYTES_MAX];
    let mut refused = None;
    for i in 0..16 {
        r.step(NOW, Input::Client { id: i, req: write(&key, Level::One, &value) });
        for e in r.drain_effects() {
            match e {
                Effect::Reply { result: Err(err), .. } => refused = Some(err),
                Effect::Sync { upto } => {
                    r.store_mut().sync();
                    r.step(NOW, Input::Synced { upto });
                    r.drain_effects();
                }
                _ => {}
            }
        }
        if refused.is_some() {
            break;
        }
    }
    let err = refused.expect("blind 1 MiB writes must hit the item-state limit");
    assert_eq!(err.code(), "item_too_large", "{err}");
}

/// Proves anti-entropy leaf-listing requests are bounded like hash requests: more leaves than
/// one exchange compares, or a leaf out of range, is refused instead of scanning storage.
#[test]
fn leaf_listing_requests_are_bounded() {
    use quorumdb_core::antientropy::EXCHANGE_LEAVES_MAX;
    use quorumdb_core::replica::TreeId;
    let shared = shared(2, 1, 2);
    let key = ItemKey::new("t", b"k", b"").unwrap();
    let mut r = replica_for(&shared, &key);
    let tree = TreeId { table: "t".into(), set: vec![0, 1], shard: r.shard() };
    let ask = |r: &mut Replica<MemStore>, leaves: Vec<usize>| {
        r.step(
            NOW,
            Input::Peer { from: 0, id: 1, req: PeerRequest::AeLeafKeys { tree: tree.clone(), leaves } },
        );
        r.drain_effects()
            .into_iter()
            .find_map(|e| if let Effect::Respond { resp, .. } = e { Some(resp) } else { None })
            .unwrap()
    };
    let too_many = ask(&mut r, (0..EXCHANGE_LEAVES_MAX + 1).collect());
    assert!(
        matches!(&too_many, PeerResponse::Failed(ReplicaError::BadRequest(m)) if m.contains("leaves")),
        "{too_many:?}"
    );
    let out_of_range = ask(&mut r, vec![quorumdb_core::merkle::LEAVES]);
    assert!(matches!(out_of_range, PeerResponse::Failed(ReplicaError::BadRequest(_))), "{out_of_range:?}");
    assert!(matches!(ask(&mut r, vec![0, 1]), PeerResponse::LeafKeys(l) if l.len() == 2));
}
