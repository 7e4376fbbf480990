//! The metadata Raft group under the seeded simulator (`quorumdb_lab::sim::meta`): seeds pass
//! with crashes, partitions, leader loss and message loss, and deliberately broken drivers are
//! caught. `quorumdb lab simulate --system meta --seeds 500` is the longer run.

use quorumdb_lab::sim::meta::{run_meta_seed, MetaBug, MetaSimOptions};

/// Seeds in the test suite (a debug build); the CLI runs 500 in a few seconds in release.
const SEEDS: u64 = 60;

/// Every seed keeps one leader per term, never replaces a committed entry, keeps every
/// acknowledged change, grows every lock's fencing tokens and converges after the heal; and
/// the runs really saw faults, elections, snapshots, lock grants and lease expiries.
#[test]
fn meta_sim_seeds_pass() {
    let (mut crashes, mut isolations, mut terms, mut snapshots, mut acked) = (0, 0, 0, 0, 0);
    let (mut tokens, mut expired) = (0, 0);
    for seed in 0..SEEDS {
        let s = run_meta_seed(&MetaSimOptions { seed, ..MetaSimOptions::DEFAULT })
            .unwrap_or_else(|v| panic!("seed {seed}: {v}"));
        crashes += s.crashes;
        isolations += s.leader_isolations;
        terms += s.terms_with_leader;
        snapshots += s.snapshots;
        acked += s.acknowledged;
        tokens += s.tokens_granted;
        expired += s.leases_expired;
    }
    // Fencing tokens were minted and checked across leader changes and restarts, and the
    // leaders' lessors expired leases.
    assert!(tokens > SEEDS * 3 && expired > SEEDS, "{tokens} tokens granted, {expired} leases expired");
    assert!(crashes > SEEDS * 3 && isolations > SEEDS, "{crashes} crashes, {isolations} leader isolations");
    assert!(terms > SEEDS * 3, "{terms} terms with a leader: leaders must change under faults");
    assert!(snapshots > SEEDS, "{snapshots} snapshots: compaction and snapshot sending must run");
    assert!(acked > SEEDS * 50, "{acked} acknowledged proposals");
}

/// Fewer voters (3, no learners) pass too.
#[test]
fn meta_sim_three_voters_pass() {
    for seed in 0..20 {
        let opts = MetaSimOptions { seed, voters: 3, learners: 0, ..MetaSimOptions::DEFAULT };
        run_meta_seed(&opts).unwrap_or_else(|v| panic!("seed {seed}: {v}"));
    }
}

/// Seeds among `0..seeds` on which the simulator catches `bug`.
fn caught(bug: MetaBug, seeds: u64) -> usize {
    (0..seeds)
        .filter(|&seed| {
            run_meta_seed(&MetaSimOptions { seed, bug: Some(bug), ..MetaSimOptions::DEFAULT }).is_err()
        })
        .count()
}

/// A driver that sends acknowledgements before its state is durable is caught: a crash loses
/// what a quorum counted on (over 500 seeds: 210 caught).
#[test]
fn meta_sim_catches_ack_before_persist() {
    let n = caught(MetaBug::AckBeforePersist, 40);
    assert!(n >= 5, "only {n} of 40 seeds caught the bug");
}

/// A restart that loses the snapshot's metadata is caught by the state-machine check (over 500
/// seeds: 500 caught).
#[test]
fn meta_sim_catches_lost_snapshot_state() {
    let n = caught(MetaBug::LoseSnapshotState, 20);
    assert!(n >= 15, "only {n} of 20 seeds caught the bug");
}
