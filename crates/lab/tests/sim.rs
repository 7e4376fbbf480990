//! The seeded whole-cluster simulator (`quorumdb_lab::sim`): seeds pass, a seed replays exactly,
//! deliberately broken replicas are caught, and the simulated network does what it claims.
//! The longer run is `quorumdb lab simulate --seeds 1000` (see the module docs).

use quorumdb_lab::sim::net::{Endpoint, Message, NetConfig, Network};
use quorumdb_lab::sim::{run_seed, simulate, Bug, FailureKind, SimOptions};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeSet;

/// Seeds per test run, with the command's default options (200 ops), so that a failing seed
/// replays with the plain `lab simulate` command. A debug build runs a seed in about 20 ms on
/// this 2-core machine; `lab simulate` runs thousands in release.
const SEEDS: u64 = 300;

const OPS: u64 = SimOptions::DEFAULT.ops;

fn options(seed: u64) -> SimOptions {
    SimOptions { seed, ..SimOptions::DEFAULT }
}

/// Every seed of the faulty default cluster (5 nodes, 3 zones, N = 3) passes the safety and
/// liveness checks, and the runs really exercised faults and the repair paths, hedged
/// forwarding and write-id deduplication (hedged copies applied by two coordinators).
#[test]
fn sim_seeds_pass() {
    let mut totals = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut hedged, mut deduplicated) = (0, 0);
    for seed in 0..SEEDS {
        let stats = run_seed(&options(seed)).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(stats.ops, OPS, "seed {seed}");
        totals.0 += stats.faults_injected();
        totals.1 += stats.power_losses;
        totals.2 += stats.hints_delivered;
        totals.3 += stats.keys_pushed + stats.keys_pulled;
        totals.4 += stats.writes_acknowledged;
        hedged += stats.writes_hedged;
        deduplicated += stats.writes_deduplicated;
    }
    assert!(hedged > 0 && deduplicated > 0, "{hedged} hedged, {deduplicated} deduplicated");
    let (faults, power_losses, hints, ae_keys, acknowledged) = totals;
    assert!(faults > SEEDS * 5, "{faults} faults in {SEEDS} seeds");
    assert!(power_losses > 0 && hints > 0 && ae_keys > 0, "{totals:?}");
    assert!(acknowledged > SEEDS * 10, "{acknowledged} acknowledged writes");
}

/// Other cluster sizes (a single node, a two-node cluster below the replication factor, a
/// larger cluster) and a fault-free network pass too.
#[test]
fn sim_other_cluster_shapes_pass() {
    for nodes in [1, 2, 3, 7] {
        for seed in 0..10 {
            let opts = SimOptions { nodes, ..options(seed) };
            run_seed(&opts).unwrap_or_else(|failure| panic!("{failure}"));
        }
    }
    for seed in 0..20 {
        let opts = SimOptions { faults: false, ..options(seed) };
        let stats = run_seed(&opts).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(stats.faults_injected(), 0);
        assert_eq!(stats.messages.dropped + stats.messages.blocked + stats.messages.duplicated, 0);
    }
}

/// A seed is a complete description of a run: the same options give the identical history,
/// final state and stats, and another seed gives a different history.
#[test]
fn sim_same_seed_same_run() {
    for seed in [0, 7, 12_345] {
        let a = simulate(&options(seed));
        let b = simulate(&options(seed));
        assert_eq!(a.history, b.history, "seed {seed}");
        assert_eq!(a.final_state, b.final_state, "seed {seed}");
        assert_eq!(a.stats, b.stats, "seed {seed}");
        assert_eq!(a.failure, b.failure, "seed {seed}");
        assert!(a.history.ops.len() as u64 == OPS);
    }
    assert_ne!(simulate(&options(1)).history, simulate(&options(2)).history);
}

/// Replicas that acknowledge before the group commit are caught: a failure within a few seeds,
/// naming its seed and the command that replays it, and replaying that seed fails the same way.
#[test]
fn sim_catches_ack_before_fsync() {
    let failure = (0..50)
        .find_map(|seed| run_seed(&SimOptions { bug: Some(Bug::AckBeforeFsync), ..options(seed) }).err())
        .expect("50 seeds with replicas acknowledging before fsync all passed");
    let seed = failure.seed();
    let text = failure.to_string();
    assert!(text.starts_with(&format!("seed {seed} failed: ")), "{text}");
    assert!(text.contains("lost acknowledged data"), "{text}");
    assert!(
        text.ends_with(&format!(
            "\nreplay: quorumdb lab simulate --seeds 1 --start {seed} --bug ack-before-fsync"
        )),
        "{text}"
    );
    let replay = run_seed(&failure.options).expect_err("the replay passed");
    assert_eq!(replay, failure);
}

/// The lost-write checker alone, judging only what clients were told and the converged state,
/// also catches acknowledging before fsync: some seed loses an acknowledged write outright.
#[test]
fn sim_lost_write_checker_catches_ack_before_fsync() {
    let found = (0..SEEDS).find_map(|seed| {
        let failure = run_seed(&SimOptions { bug: Some(Bug::AckBeforeFsync), ..options(seed) }).err()?;
        (failure.lost_writes > 0).then_some(failure)
    });
    let failure = found.expect("no seed lost an acknowledged write the checker could see");
    assert!(failure.details.iter().any(|d| d.contains("acknowledged writes lost")), "{failure}");
    assert!(failure.details.iter().any(|d| d.contains("final context covers it")), "{failure}");
}

/// A restarted node that keeps its old actor id reissues dots it had minted before the crash
/// (what the node does today): the dot-uniqueness invariant catches it.
#[test]
fn sim_catches_actor_reuse_after_crash() {
    let failure = (0..SEEDS)
        .find_map(|seed| {
            run_seed(&SimOptions { bug: Some(Bug::ReuseActorAfterCrash), ..options(seed) }).err()
        })
        .expect("no seed reissued a dot");
    assert_eq!(failure.kind, FailureKind::Invariant);
    assert!(failure.to_string().contains("but it already names the write of"), "{failure}");
}

/// A bare string message for the network tests.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Note(&'static str);

impl Message for Note {
    fn may_duplicate(&self) -> bool {
        true
    }
}

/// A partition blocks messages between its sides, both at send and in flight, lets messages
/// within a side and to clients through, and a heal restores delivery.
#[test]
fn sim_net_partition_blocks_and_heal_restores() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut net: Network<Note> = Network::new(NetConfig::reliable());
    let (a, b, c) = (Endpoint::Node(0), Endpoint::Node(1), Endpoint::Node(2));

    // In flight when the partition starts: lost on arrival.
    assert!(net.send(&mut rng, 0, a, b, Note("in flight")));
    net.partition(&[BTreeSet::from([0]), BTreeSet::from([1, 2])]);
    assert_eq!(net.pop(), Some((1, None)));

    assert!(!net.send(&mut rng, 1, a, b, Note("across")), "blocked at send");
    assert!(net.send(&mut rng, 1, b, c, Note("same side")));
    assert!(net.send(&mut rng, 1, a, Endpoint::Client(0), Note("to a client")));
    let delivered: Vec<_> = std::iter::from_fn(|| net.pop()).filter_map(|(_, e)| e).map(|e| e.msg).collect();
    assert_eq!(delivered, [Note("same side"), Note("to a client")]);
    assert_eq!(net.stats().blocked, 2);

    net.heal();
    assert!(net.send(&mut rng, 5, a, b, Note("healed")));
    let (at, envelope) = net.pop().expect("queued");
    assert_eq!(at, 6, "1 ms latency");
    assert_eq!(envelope.map(|e| (e.from, e.to, e.msg)), Some((a, b, Note("healed"))));
    assert_eq!(net.in_flight(), 0);
}

/// Messages come out in delivery-time order (ties in send order), and with random latencies
/// they overtake each other; loss and duplication follow their rates.
#[test]
fn sim_net_orders_by_time_applies_loss_and_duplicates() {
    let mut rng = StdRng::seed_from_u64(7);
    let config = NetConfig { latency_ms_min: 1, latency_ms_max: 50, ..NetConfig::reliable() };
    let mut net: Network<Note> = Network::new(config);
    let names = ["m0", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"];
    for name in names {
        net.send(&mut rng, 0, Endpoint::Node(0), Endpoint::Node(1), Note(name));
    }
    let mut times = Vec::new();
    let mut order = Vec::new();
    while let Some((at, Some(envelope))) = net.pop() {
        times.push(at);
        order.push(envelope.msg.0);
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_ne!(order, names, "random latencies reorder");

    let config = NetConfig { drop_ppm: 500_000, duplicate_ppm: 500_000, ..NetConfig::reliable() };
    let mut net: Network<Note> = Network::new(config);
    for _ in 0..1000 {
        net.send(&mut rng, 0, Endpoint::Node(0), Endpoint::Node(1), Note("x"));
    }
    let stats = net.stats().clone();
    assert!((400..600).contains(&stats.dropped), "{stats:?}");
    assert!((150..350).contains(&stats.duplicated), "{stats:?}");
    assert_eq!(net.in_flight() as u64, 1000 - stats.dropped + stats.duplicated);
}

/// A node that restarts uncleanly 200 times while clients keep writing (each restart makes it
/// a new writer of the keys it coordinates) leaves every key writable and loses nothing: far
/// more than the 64 writers a context may name minted dots of one key, yet pruning retired
/// incarnations keeps every stored context within the limit, and no write is refused for it.
#[test]
fn sim_crash_looping_node_leaves_hot_keys_writable() {
    let mut writers_max = 0;
    for seed in 0..2 {
        let opts = SimOptions { crash_loop: 200, ..options(seed) };
        let stats = run_seed(&opts).unwrap_or_else(|f| panic!("{f}"));
        assert!(stats.crashes >= 200, "seed {seed}: {} crashes", stats.crashes);
        assert!(stats.context_len_max <= 64, "seed {seed}: a context of {} entries", stats.context_len_max);
        writers_max = writers_max.max(stats.writers_per_key_max);
    }
    assert!(writers_max > 64, "the loop never made more than {writers_max} writers of one key");
}

/// A node joining during the faulty safety phase (dual writes, streaming by anti-entropy, the
/// read switch, retirement of v1) passes every check, including invariant 5: when reads move
/// to v2, every acknowledged strict write is durable on `w` of its v2 replicas.
#[test]
fn sim_join_under_faults_passes() {
    let mut joined = 0;
    for seed in 0..60 {
        let opts = SimOptions { join: true, ..options(seed) };
        let stats = run_seed(&opts).unwrap_or_else(|f| panic!("{f}"));
        assert!(stats.join_ms > 0, "seed {seed}: the join did not finish");
        joined += 1;
    }
    assert_eq!(joined, 60);
}

/// Moving reads to the new layout before the data streamed there (`--bug skip-layout-sync`)
/// is caught by invariant 5 on some seeds: the check can fail.
#[test]
fn sim_catches_reads_moved_before_the_sync() {
    let caught = (0..60)
        .filter(|&seed| {
            let opts = SimOptions { join: true, bug: Some(Bug::SkipLayoutSync), ..options(seed) };
            matches!(run_seed(&opts), Err(f) if f.kind == FailureKind::Invariant)
        })
        .count();
    assert!(caught > 0, "no seed of 60 caught the early read switch");
}
