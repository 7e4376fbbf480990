//! Micro-benchmarks of the hot pure code (issue #15): causality merge and update, item-state
//! encode and decode, ring lookup, Merkle-tree update, heat counting. `cargo bench -p
//! quorumdb-core` (criterion); compare runs with `--save-baseline` / `--baseline`, since only
//! ratios on one machine state mean anything on a shared machine.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use quorumdb_core::causality::{ActorId, ItemState, Value, VersionVector};
use quorumdb_core::heat::{Heat, HeatOp};
use quorumdb_core::merkle::{item_digest, MerkleTree};
use quorumdb_core::ring::{Member, Ring, VNODES_PER_NODE_DEFAULT};

fn actor(i: u32) -> ActorId {
    ActorId::incarnation(i, 1_000)
}

/// An item written `writes` times by three actors in turn, each write seeing the previous one
/// (one version), with `value_bytes`-byte values.
fn item(writes: usize, value_bytes: usize) -> ItemState {
    let mut s = ItemState::new();
    for w in 0..writes {
        let ctx = s.context().clone();
        s = s.update(&ctx, Value::Data(vec![b'x'; value_bytes]), actor(w as u32 % 3 + 1)).expect("update");
    }
    s
}

/// Two replicas of one item with `siblings` concurrent blind writes each.
fn siblings(siblings: usize) -> (ItemState, ItemState) {
    let base = item(3, 256);
    let mut a = base.clone();
    let mut b = base;
    let empty = VersionVector::new();
    for i in 0..siblings {
        a = a.update(&empty, Value::Data(vec![b'a'; 256]), actor(1)).expect("a");
        b = b.update(&empty, Value::Data(vec![b'b'; 256 + i]), actor(2)).expect("b");
    }
    (a, b)
}

fn causality(c: &mut Criterion) {
    let one = item(10, 256);
    c.bench_function("item update (256 B, one version)", |b| {
        b.iter(|| {
            one.update(black_box(one.context()), Value::Data(vec![b'y'; 256]), actor(1)).expect("update")
        })
    });
    let newer = one.update(one.context(), Value::Data(vec![b'z'; 256]), actor(2)).expect("newer");
    c.bench_function("item merge (newer version over older)", |b| {
        b.iter_batched(|| one.clone(), |mut s| s.merge(black_box(&newer)), BatchSize::SmallInput)
    });
    let (a, other) = siblings(4);
    c.bench_function("item merge (4 + 4 concurrent siblings)", |b| {
        b.iter_batched(|| a.clone(), |mut s| s.merge(black_box(&other)), BatchSize::SmallInput)
    });
}

fn codec(c: &mut Criterion) {
    let s = item(10, 256);
    let bytes = s.encode();
    c.bench_function("item encode (256 B, one version)", |b| b.iter(|| black_box(&s).encode()));
    c.bench_function("item decode (256 B, one version)", |b| {
        b.iter(|| ItemState::decode(black_box(&bytes)).expect("decode"))
    });
    let (many, _) = siblings(8);
    let many_bytes = many.encode();
    c.bench_function("item decode (9 siblings of 256 B)", |b| {
        b.iter(|| ItemState::decode(black_box(&many_bytes)).expect("decode"))
    });
}

fn ring(c: &mut Criterion) {
    let members: Vec<Member> =
        (1..=5).map(|i| Member::new(format!("n{i}"), format!("z{}", (i - 1) % 3 + 1))).collect();
    let ring = Ring::new(members, VNODES_PER_NODE_DEFAULT).expect("ring");
    let mut h = 0x9E37_79B9_7F4A_7C15u64;
    c.bench_function("ring preference list (5 nodes, 3 zones, n=3)", |b| {
        b.iter(|| {
            h = h.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ring.preference_list(black_box(h), 3)
        })
    });
}

fn merkle(c: &mut Criterion) {
    let mut tree =
        MerkleTree::from_items((0..10_000u32).map(|i| (format!("key-{i}").into_bytes(), i as u64)));
    let encoded = item(10, 256).encode();
    let mut i = 0u64;
    c.bench_function("merkle update (digest of a 256 B item, 10k-item tree)", |b| {
        b.iter(|| {
            i += 1;
            let key = format!("key-{}", i % 10_000);
            let new = item_digest(key.as_bytes(), &encoded) ^ i;
            tree.update(key.as_bytes(), Some(i), Some(new));
        })
    });
    c.bench_function("merkle root after one update", |b| {
        b.iter(|| {
            i += 1;
            tree.update(b"key-1", Some(i), Some(i + 1));
            tree.root()
        })
    });
}

fn heat(c: &mut Criterion) {
    let mut h = Heat::default();
    let keys: Vec<Vec<u8>> = (0..10_000u32).map(|i| format!("user{i}").into_bytes()).collect();
    let mut i = 0usize;
    c.bench_function("heat observe (10k uniform keys, full sketch)", |b| {
        b.iter(|| {
            i = (i + 7_919) % keys.len();
            h.observe(HeatOp::Write, "bench", black_box(&keys[i]));
        })
    });
}

criterion_group!(benches, causality, codec, ring, merkle, heat);
criterion_main!(benches);
