//! `quorumdb lab simulate`: runs seeds of the deterministic whole-cluster simulator
//! (`quorumdb_lab::sim`, whose module docs say what is simulated and what is checked), prints
//! progress and a summary, and stops at the first failing seed with the command that replays it.
//!
//! ```text
//!   quorumdb lab simulate --seeds 1000                   the longer run (green: exit 0)
//!   quorumdb lab simulate --seeds 1 --start 42 -v        replay one seed, with its stats
//!   quorumdb lab simulate --seeds 200 --bug ack-before-fsync --keep-going
//!                                                        how often a broken replica is caught
//!   quorumdb lab simulate --system meta --seeds 500      the metadata Raft group instead
//!                                                        (`quorumdb_lab::sim::meta`)
//! ```

use anyhow::{bail, Result};
use clap::Args;
use quorumdb_lab::sim::meta::{run_meta_seed, MetaBug, MetaSimOptions, MetaSimStats};
use quorumdb_lab::sim::{run_seed, Bug, SimOptions, SimStats, NODES_MAX};
use quorumdb_lab::FaultKind;
use std::collections::BTreeMap;
use std::time::Instant;

/// A progress line every this many seeds: about every half second in a release build.
const PROGRESS_EVERY_SEEDS: u64 = 100;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Data,
    Meta,
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// What to simulate: the data replicas (`data`) or the metadata Raft group (`meta`).
    #[arg(long, value_enum, default_value = "data")]
    pub system: System,
    /// Simulate a deliberately broken driver, to watch the simulator catch it. Data:
    /// ack-before-fsync | reuse-actor-after-crash; meta: ack-before-persist | forget-vote.
    #[arg(long)]
    pub bug: Option<String>,
    /// Cluster size (nodes are spread over 3 zones; replication factor 3).
    #[arg(long, default_value_t = SimOptions::DEFAULT.nodes)]
    pub nodes: usize,
    /// Client operations per seed.
    #[arg(long, default_value_t = SimOptions::DEFAULT.ops)]
    pub ops: u64,
    /// Inject no faults (the network still reorders messages).
    #[arg(long)]
    pub no_faults: bool,
    /// Make the first node restart uncleanly this many times, back to back, while clients
    /// keep writing (each restart makes it a new writer of the keys it coordinates).
    #[arg(long, default_value_t = 0)]
    pub crash_loop: u64,
    /// The last node joins during the run (layout v1 without it, v2 with it): writes go to
    /// both layouts, data streams by anti-entropy, reads move to v2, v1 retires; the end
    /// checks use v2's replica sets.
    #[arg(long)]
    pub join: bool,
    /// Print one line of stats per seed.
    #[arg(short, long)]
    pub verbose: bool,
    /// Run every seed even after failures, then report how many failed (to measure how often
    /// a `--bug` is caught). Still exits 1 if any seed failed.
    #[arg(long)]
    pub keep_going: bool,
}

fn parse_bug(name: &str) -> Result<Bug, String> {
    Bug::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
        format!("unknown bug {name:?}; one of: {}", names.join(", "))
    })
}

/// Sums over the seeds that passed.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    /// Failed seeds whose converged state lacked acknowledged writes (lost-write checker).
    failed_losing_writes: u64,
    ops: u64,
    faults: u64,
    /// Faults by kind, named as live lab runs name them.
    by_kind: BTreeMap<FaultKind, u64>,
    power_losses: u64,
    writes_acknowledged: u64,
    events: u64,
}

impl Totals {
    fn add(&mut self, s: &SimStats) {
        self.passed += 1;
        self.ops += s.ops;
        self.faults += s.faults_injected();
        for (kind, n) in s.faults_by_kind() {
            *self.by_kind.entry(kind).or_default() += n;
        }
        self.power_losses += s.power_losses;
        self.writes_acknowledged += s.writes_acknowledged;
        self.events += s.events;
    }
}

pub fn run(a: SimulateArgs) -> Result<i32> {
    if a.system == System::Meta {
        return run_meta(a);
    }
    let bug = match &a.bug {
        Some(name) => Some(parse_bug(name).map_err(anyhow::Error::msg)?),
        None => None,
    };
    if !(1..=NODES_MAX).contains(&a.nodes) {
        bail!("--nodes must be between 1 and {NODES_MAX}, got {}", a.nodes);
    }
    let Some(end) = a.start.checked_add(a.seeds) else {
        bail!("--start {} plus --seeds {} overflows", a.start, a.seeds);
    };
    let base = SimOptions {
        seed: a.start,
        nodes: a.nodes,
        ops: a.ops,
        faults: !a.no_faults,
        bug,
        crash_loop: a.crash_loop,
        join: a.join,
    };
    println!(
        "simulating seeds {}..{end}: {} nodes, {} ops per seed, faults {}{}",
        a.start,
        a.nodes,
        a.ops,
        if a.no_faults { "off" } else { "on" },
        bug.map(|b| format!(", deliberate bug {b}")).unwrap_or_default()
    );
    let started = Instant::now();
    let mut totals = Totals::default();
    let mut next_progress = PROGRESS_EVERY_SEEDS;
    for seed in a.start..end {
        match run_seed(&SimOptions { seed, ..base }) {
            Ok(stats) => {
                if a.verbose {
                    println!(
                        "seed {seed}: ok · {} ops ({} ok, {} fail, {} info) · {} faults · {} acknowledged \
                         writes · {} hints delivered · {} exchanges · converged {} ms after the heal · \
                         contexts ≤ {} entries, ≤ {} writers per key · {} hedged, {} deduplicated · \
                         join {} ms",
                        stats.ops,
                        stats.ops_ok,
                        stats.ops_failed,
                        stats.ops_unknown,
                        stats.faults_injected(),
                        stats.writes_acknowledged,
                        stats.hints_delivered,
                        stats.exchanges_done,
                        stats.liveness_ms,
                        stats.context_len_max,
                        stats.writers_per_key_max,
                        stats.writes_hedged,
                        stats.writes_deduplicated,
                        stats.join_ms,
                    );
                }
                totals.add(&stats);
            }
            Err(failure) => {
                totals.failed += 1;
                totals.failed_losing_writes += u64::from(failure.lost_writes > 0);
                println!("{failure}");
                if !a.keep_going {
                    println!(
                        "{} seeds passed before seed {seed} failed ({:.1} s)",
                        totals.passed,
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(1);
                }
            }
        }
        let done = seed - a.start + 1;
        if done == next_progress && done < a.seeds {
            next_progress += PROGRESS_EVERY_SEEDS;
            println!(
                "seeds {done}/{}: {} passed, {} failed · {} ops · {} faults · {:.1} s",
                a.seeds,
                totals.passed,
                totals.failed,
                totals.ops,
                totals.faults,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    // Kinds under the names scenario files and lab reports use, so the two read alike.
    let kinds: Vec<String> = totals
        .by_kind
        .iter()
        .map(|(kind, n)| match kind {
            FaultKind::Crash => {
                format!("{kind} {n} ({} zone or cluster power losses among them)", totals.power_losses)
            }
            _ => format!("{kind} {n}"),
        })
        .collect();
    println!(
        "{} of {} seeds passed{} · {} ops simulated ({} writes acknowledged) · {} faults injected \
         ({}) · {} events · {seconds:.1} s",
        totals.passed,
        a.seeds,
        if totals.failed > 0 {
            format!(
                ", {} failed ({} of them lost acknowledged writes per the lost-write checker)",
                totals.failed, totals.failed_losing_writes
            )
        } else {
            String::new()
        },
        totals.ops,
        totals.writes_acknowledged,
        totals.faults,
        kinds.join(", "),
        totals.events
    );
    Ok(if totals.failed > 0 { 1 } else { 0 })
}

/// `--system meta`: seeds of the metadata Raft group simulation.
fn run_meta(a: SimulateArgs) -> Result<i32> {
    let bug = match &a.bug {
        Some(name) => Some(MetaBug::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = MetaBug::ALL.iter().map(|b| b.name()).collect();
            anyhow::anyhow!("unknown metadata bug {name:?}; one of: {}", names.join(", "))
        })?),
        None => None,
    };
    let Some(end) = a.start.checked_add(a.seeds) else {
        bail!("--start {} plus --seeds {} overflows", a.start, a.seeds);
    };
    let base = MetaSimOptions { faults: !a.no_faults, bug, ..MetaSimOptions::DEFAULT };
    println!(
        "simulating the metadata group, seeds {}..{end}: {} voters + {} learners, {} s of faults {}{}",
        a.start,
        base.voters,
        base.learners,
        base.safety_ms / 1000,
        if a.no_faults { "off" } else { "on" },
        bug.map(|b| format!(", deliberate bug {b}")).unwrap_or_default()
    );
    let started = Instant::now();
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut sum = MetaSimStats::default();
    for seed in a.start..end {
        match run_meta_seed(&MetaSimOptions { seed, ..base }) {
            Ok(s) => {
                passed += 1;
                if a.verbose {
                    println!(
                        "seed {seed}: ok · {} proposals ({} acknowledged, {} refused, {} without a leader, {} unknown) · {} terms \
                         with a leader · {} crashes, {} partitions, {} leader isolations, {} loss bursts · \
                         {} snapshots · layout v{} · {} fencing tokens, {} leases expired · log: {} appends acknowledged \
                         ({} not judged), {} polls returned {} batches, {} batches in the end · converged {} ms after the heal",
                        s.proposals, s.acknowledged, s.refused, s.not_proposed, s.unknown, s.terms_with_leader, s.crashes,
                        s.partitions, s.leader_isolations, s.loss_bursts, s.snapshots, s.layout_version,
                        s.tokens_granted, s.leases_expired, s.log_acked, s.log_acked_unjudged, s.log_polls, s.log_polled,
                        s.log_final, s.liveness_ms
                    );
                }
                sum.proposals += s.proposals;
                sum.acknowledged += s.acknowledged;
                sum.entries_applied += s.entries_applied;
                sum.snapshots += s.snapshots;
                sum.tokens_granted += s.tokens_granted;
                sum.leases_expired += s.leases_expired;
                sum.terms_with_leader += s.terms_with_leader;
                sum.crashes += s.crashes;
                sum.partitions += s.partitions + s.leader_isolations;
                sum.loss_bursts += s.loss_bursts;
                sum.liveness_ms = sum.liveness_ms.max(s.liveness_ms);
                sum.events += s.events;
                sum.log_acked += s.log_acked;
                sum.log_polled += s.log_polled;
                sum.reads += s.reads;
                sum.reads_confirmed += s.reads_confirmed;
            }
            Err(v) => {
                failed += 1;
                println!("seed {seed} FAILED {v}");
                println!(
                    "  replay: quorumdb lab simulate --system meta --seeds 1 --start {seed}{}",
                    bug.map(|b| format!(" --bug {b}")).unwrap_or_default()
                );
                if !a.keep_going {
                    return Ok(1);
                }
            }
        }
        let done = seed - a.start + 1;
        if done.is_multiple_of(PROGRESS_EVERY_SEEDS) && done < a.seeds {
            println!(
                "seeds {done}/{}: {passed} passed, {failed} failed · {:.1} s",
                a.seeds,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{passed} of {} seeds passed{} · {} proposals ({} acknowledged) · {} entries applied · {} terms \
         with a leader · {} snapshots · {} fencing tokens granted, {} leases expired · log checker: {} appends acknowledged, {} batches polled, 0 anomalies \
         · {} read-index reads ({} confirmed, none below a committed index) · {} crashes, {} partitions, {} loss bursts · slowest convergence {} ms after the heal · {} events · {:.1} s",
        a.seeds,
        if failed > 0 { format!(", {failed} failed") } else { String::new() },
        sum.proposals,
        sum.acknowledged,
        sum.entries_applied,
        sum.terms_with_leader,
        sum.snapshots,
        sum.tokens_granted,
        sum.leases_expired,
        sum.log_acked,
        sum.log_polled,
        sum.reads,
        sum.reads_confirmed,
        sum.crashes,
        sum.partitions,
        sum.loss_bursts,
        sum.liveness_ms,
        sum.events,
        started.elapsed().as_secs_f64()
    );
    Ok(if failed > 0 { 1 } else { 0 })
}
