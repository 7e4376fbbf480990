//! Reproduces the measurements behind `ring::VNODES_PER_NODE_DEFAULT`: the most-loaded member's
//! primary ownership over many random 5-member id sets, per vnode count, and ring build times.
//! Run with `cargo run --release -p quorumdb-core --example measure_vnode_balance`
//! (`SAMPLES=N` changes the number of id sets, default 20 000).

use quorumdb_core::ring::{Member, Ring, MEMBERS_LEN_MAX, VNODES_PER_NODE_DEFAULT};
use xxhash_rust::xxh3::xxh3_64;

fn main() {
    let samples: u64 = std::env::var("SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    for vnodes in [128, 256, 512, 1024, 2048] {
        let mut ratios = Vec::new();
        let started = std::time::Instant::now();
        for sample in 0..samples {
            // Random-looking but reproducible ids.
            let members = (0..5)
                .map(|i| Member::new(format!("{:x}", xxh3_64(&(sample * 5 + i).to_le_bytes())), "z"))
                .collect();
            let ring = Ring::new(members, vnodes).unwrap();
            let max = ring.ownership().into_iter().fold(0.0, f64::max);
            ratios.push(max / 0.2);
        }
        let build_ms = started.elapsed().as_secs_f64() * 1000.0 / samples as f64;
        ratios.sort_by(f64::total_cmp);
        let q = |p: f64| ratios[((ratios.len() - 1) as f64 * p) as usize];
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let over = ratios.iter().filter(|&&r| r > 1.25).count();
        println!(
            "vnodes {vnodes:5}: mean {mean:.3} p99 {:.3} p99.99 {:.3} worst {:.3} \
             over-1.25 {over}/{samples} build {build_ms:.3} ms",
            q(0.99),
            q(0.9999),
            q(1.0)
        );
    }
    // Build time of larger rings with zones (the walk gets longer when zones are uneven).
    for (members_len, zones) in [(30, 3), (MEMBERS_LEN_MAX, 4)] {
        let members: Vec<Member> =
            (0..members_len).map(|i| Member::new(format!("n{i}"), format!("z{}", i % zones))).collect();
        let started = std::time::Instant::now();
        let ring = Ring::new(members, VNODES_PER_NODE_DEFAULT).unwrap();
        let build_ms = started.elapsed().as_secs_f64() * 1000.0;
        let load = ring.replica_ownership(3);
        let max = load.iter().copied().fold(0.0, f64::max);
        let fair = 3.0 / members_len as f64;
        let ratio = max / fair;
        println!("{members_len} members in {zones} zones: build {build_ms:.1} ms");
        println!("  max replica load (n = 3) {ratio:.3} x fair");
    }
}
