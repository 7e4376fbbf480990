//! Measures how many Merkle leaves each replica set's items occupy with ring-ordered leaves (the
//! table in `merkle`'s module docs). Run with
//! `cargo run --release -p quorumdb-core --example measure_leaf_occupancy`.

use quorumdb_core::key::ItemKey;
use quorumdb_core::merkle::leaf_of;
use quorumdb_core::ring::{Member, Ring, VNODES_PER_NODE_DEFAULT};
use std::collections::BTreeMap;

fn main() {
    for (members, zones) in [(5usize, 5usize), (5, 3), (9, 3)] {
        let members: Vec<Member> =
            (0..members).map(|i| Member::new(format!("n{i}"), format!("z{}", i % zones))).collect();
        let ring = Ring::new(members.clone(), VNODES_PER_NODE_DEFAULT).unwrap();
        let mut sets: BTreeMap<Vec<usize>, BTreeMap<usize, usize>> = BTreeMap::new();
        for i in 0..1_000_000u32 {
            let item = ItemKey::new("t", format!("p{i}").as_bytes(), b"").unwrap();
            let mut set = ring.preference_list(item.placement_hash(), 3);
            set.sort();
            *sets.entry(set).or_default().entry(leaf_of(&item.storage_key())).or_default() += 1;
        }
        for (set, leaves) in &sets {
            let items: usize = leaves.values().sum();
            let max = leaves.values().max().copied().unwrap_or(0);
            let mean = items as f64 / leaves.len() as f64;
            println!(
                "{}/{zones} {set:?}: {items} items, {} leaves, {mean:.0} per leaf, max {max}",
                members.len(),
                leaves.len()
            );
        }
    }
}
