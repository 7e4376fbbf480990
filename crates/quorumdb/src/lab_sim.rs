//! `quorumdb lab simulate`: runs seeds of the deterministic whole-cluster simulator
//! (`quorumdb_lab::sim`, whose module docs say what is simulated and what is checked), prints
//! progress and a summary, and stops at the first failing seed with the command that replays it.
//!
//! ```text
//!   quorumdb lab simulate --seeds 1000                   the longer run (green: exit 0)
//!   quorumdb lab simulate --seeds 1 --start 42 -v        replay one seed, with its stats
//!   quorumdb lab simulate --seeds 200 --bug ack-before-fsync --keep-going
//!                                                        how often a broken replica is caught
//! ```

use anyhow::{bail, Result};
use clap::Args;
use quorumdb_lab::sim::{run_seed, Bug, SimOptions, SimStats, NODES_MAX};
use quorumdb_lab::FaultKind;
use std::collections::BTreeMap;
use std::time::Instant;

/// A progress line every this many seeds: about every half second in a release build.
const PROGRESS_EVERY_SEEDS: u64 = 100;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Simulate a deliberately broken replica, to watch the simulator catch it:
    /// ack-before-fsync | reuse-actor-after-crash.
    #[arg(long, value_parser = parse_bug)]
    pub bug: Option<Bug>,
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
        bug: a.bug,
        crash_loop: a.crash_loop,
    };
    println!(
        "simulating seeds {}..{end}: {} nodes, {} ops per seed, faults {}{}",
        a.start,
        a.nodes,
        a.ops,
        if a.no_faults { "off" } else { "on" },
        a.bug.map(|b| format!(", deliberate bug {b}")).unwrap_or_default()
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
                         contexts ≤ {} entries, ≤ {} writers per key · {} hedged, {} deduplicated",
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
