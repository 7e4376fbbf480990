//! `quorumdb lab`: fault-injection scenarios on a real local cluster, and the seeded simulator.
//!
//! `lab run <scenario>` starts its own cluster of `quorumdb server` processes on loopback
//! ([`cluster`]), drives a recorded workload through phases of faults ([`az_failure`],
//! [`clock_skew`]), heals, lets anti-entropy converge the replicas, reads every key at `r=all`,
//! runs the `quorumdb_lab` checkers and writes three files to the output directory:
//!
//! - `history.jsonl`: every operation, in the `quorumdb_lab::History` format;
//! - `report.json`: per setting and phase the counts, availability, latency, stale reads and
//!   lost writes; the linearizability verdict; each README claim checked ([`report`]);
//! - `report.html`: the same with inline SVG charts ([`html`]), no scripts.
//!
//! ```text
//!  LabCluster ── start/kill/pause/partition/skew ──► servers
//!      ▲                                               ▲
//!  scenario driver ── phases ──► workload processes ───┘ (HTTP, recorded into History)
//!      │
//!      └── heal, repair, final read at r=all ──► FinalState ──► checkers ──► report
//! ```
//!
//! The exit code is 0 when every guarantee the README claims held, [`EXIT_VIOLATED`] when one
//! did not, and 1 when the run itself failed. Measurements the README promises nothing about
//! (stale reads with `r + w <= N`, writes LWW discards) never fail a run.
//!
//! The seed fixes every choice the lab makes (which zone or node fails, each process's keys,
//! operations and think times); it cannot fix the timing of real processes, so two runs with
//! one seed do the same things but not at the same instants.

mod az_failure;
mod clock_skew;
mod cluster;
mod html;
mod report;
mod workload;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use cluster::LabCluster;
use quorumdb_client::ReadOptions;
use quorumdb_lab::FinalState;
use report::Convergence;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code of a run in which a guarantee the README claims was violated. Distinct from 1
/// (the run itself failed) and 2 (bad command line), so scripts can tell them apart.
pub const EXIT_VIOLATED: i32 = 3;
/// Keys whose replica disagreement is quoted in the report.
const DIVERGED_EXAMPLES_MAX: usize = 10;
/// Attempts of the final `r=all` read of one key; after a heal the failure detector may need a
/// heartbeat or two before every replica is asked again.
const FINAL_READ_ATTEMPTS_MAX: usize = 50;
/// Server-side timeout of a final read, ms: generous, the cluster is idle by then.
const FINAL_READ_TIMEOUT_MS: u64 = 5_000;
/// Pause between final-read attempts, ms.
const FINAL_READ_RETRY_MS: u64 = 200;
/// Longest phase `--duration` accepts, seconds: an hour per phase is past any useful run and
/// stops a typo (ms for s) from tying up the machine for days.
const PHASE_S_MAX: f64 = 3_600.0;

#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Run a scenario on a fresh local cluster; writes report.json, report.html, history.jsonl.
    Run(RunArgs),
    /// List the scenarios.
    List,
    /// Run the seeded whole-cluster simulation.
    Simulate(crate::lab_sim::SimulateArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// R=1/W=3 vs R=2/W=2 vs R=1/W=1 vs linearizable reads through a zone outage (3 zones, N=3).
    AzFailure,
    /// Acknowledged updates lost by last-writer-wins vs siblings with one node's clock ahead.
    ClockSkewLww,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::AzFailure => "az-failure",
            Scenario::ClockSkewLww => "clock-skew-lww",
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    pub scenario: Scenario,
    /// Seed of every choice the lab makes (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Length of each phase in seconds (default: 10); scales the whole run.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Output directory (default: ./lab-out/<scenario>-<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Client processes (default: 8 for az-failure, 6 for clock-skew-lww).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Keys per setting (az-failure, default 20) or per table (clock-skew-lww, default 4).
    #[arg(long)]
    pub keys: Option<usize>,
    /// az-failure: settings to run, comma-separated (default: r1w3,r2w2,r1w1,linearizable).
    #[arg(long, value_delimiter = ',')]
    pub settings: Vec<String>,
    /// az-failure: how the zone goes down.
    #[arg(long, value_enum, default_value = "kill")]
    pub zone_fault: az_failure::ZoneFault,
    /// clock-skew-lww: the skewed node's clock offset in ms.
    #[arg(long, allow_hyphen_values = true)]
    pub skew_ms: Option<i64>,
}

pub async fn run(a: LabArgs) -> Result<i32> {
    match a.command {
        LabCommand::Simulate(s) => crate::lab_sim::run(s),
        LabCommand::List => {
            for s in Scenario::value_variants() {
                let about = s.to_possible_value().and_then(|v| v.get_help().map(ToString::to_string));
                println!("{:<16} {}", s.name(), about.unwrap_or_default());
            }
            Ok(0)
        }
        LabCommand::Run(r) => {
            // Ctrl-C or SIGTERM drops the scenario future, whose LabCluster guard then kills
            // every server it started.
            tokio::select! {
                result = run_scenario(r) => result,
                _ = crate::cli::shutdown_signal() => bail!("interrupted; the lab's servers were stopped"),
            }
        }
    }
}

async fn run_scenario(a: RunArgs) -> Result<i32> {
    let seed = a.seed.unwrap_or_else(rand::random::<u64>);
    let phase_s = a.duration.unwrap_or(match a.scenario {
        Scenario::AzFailure => az_failure::PHASE_S_DEFAULT,
        Scenario::ClockSkewLww => clock_skew::PHASE_S_DEFAULT,
    });
    if !(phase_s > 0.0 && phase_s <= PHASE_S_MAX) {
        bail!("--duration must be in (0, {PHASE_S_MAX}] seconds per phase, got {phase_s}");
    }
    let name = a.scenario.name();
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("lab-out").join(format!("{name}-{seed}")));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut command = format!("quorumdb lab run {name} --seed {seed} --duration {phase_s}");
    for (flag, v) in [("--clients", a.clients), ("--keys", a.keys)] {
        if let Some(v) = v {
            command.push_str(&format!(" {flag} {v}"));
        }
    }
    eprintln!("lab: {name}, seed {seed}, {phase_s} s per phase, output in {}", out.display());
    let mut output = match a.scenario {
        Scenario::AzFailure => {
            let settings = if a.settings.is_empty() {
                az_failure::SETTINGS.iter().map(|s| s.0.to_owned()).collect()
            } else {
                command.push_str(&format!(" --settings {}", a.settings.join(",")));
                a.settings.clone()
            };
            if a.zone_fault != az_failure::ZoneFault::Kill {
                command.push_str(&format!(" --zone-fault {}", a.zone_fault.name()));
            }
            let args = az_failure::AzArgs {
                seed,
                phase_s,
                clients: a.clients.unwrap_or(az_failure::CLIENTS_DEFAULT),
                keys: a.keys.unwrap_or(az_failure::KEYS_DEFAULT),
                settings,
                zone_fault: a.zone_fault,
            };
            az_failure::run(&args, &out).await?
        }
        Scenario::ClockSkewLww => {
            if let Some(ms) = a.skew_ms {
                command.push_str(&format!(" --skew-ms {ms}"));
            }
            let args = clock_skew::SkewArgs {
                seed,
                phase_s,
                clients: a.clients.unwrap_or(clock_skew::CLIENTS_DEFAULT),
                keys: a.keys.unwrap_or(clock_skew::KEYS_DEFAULT),
                skew_ms: a.skew_ms.unwrap_or(clock_skew::SKEW_MS_DEFAULT),
            };
            clock_skew::run(&args, &out).await?
        }
    };
    output.command = command;
    write_history(&out, &output.history)?;
    eprintln!("checking {} operations", output.history.ops.len());
    let lineage = output.lineage;
    let (report, history) = tokio::task::spawn_blocking(move || {
        let report = report::build(&output);
        (report, output.history)
    })
    .await
    .context("the checkers panicked")?;
    let report = report?;
    let json = serde_json::to_vec_pretty(&report).context("cannot encode the report")?;
    write_file(&out.join("report.json"), &json)?;
    write_file(&out.join("report.html"), html::render(&report, &history).as_bytes())?;
    print!("{}", report::summary(&report, lineage));
    println!("report: {}", out.join("report.html").display());
    println!("replay: {}", report.command);
    Ok(if report.violations == 0 { 0 } else { EXIT_VIOLATED })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn write_history(out: &Path, history: &quorumdb_lab::History) -> Result<()> {
    let path = out.join("history.jsonl");
    let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    history.write_jsonl(file).with_context(|| format!("cannot write {}", path.display()))
}

/// The end of every scenario: undo all faults, run one anti-entropy pass on every node, check
/// that replicas agree without any client read having repaired them, then read every key at
/// `r=all` for the lost-write checker.
pub(crate) async fn converge_and_read_final(
    cluster: &mut LabCluster,
    keys: &[(String, String)],
) -> Result<(Convergence, FinalState)> {
    cluster.heal_all().await?;
    let (moved, failed) = cluster.repair_all().await?;
    let mut convergence = Convergence {
        keys: keys.len() as u64,
        repair_keys_moved: moved,
        repair_exchanges_failed: failed as u64,
        ..Convergence::default()
    };
    let client = cluster.client(0).clone();
    for (table, key) in keys {
        let view =
            client.inspect(table, key, None).await.with_context(|| format!("inspect {table}/{key}"))?;
        let agree = view.replicas.first().is_some_and(|first| {
            view.replicas.iter().all(|r| {
                r.state == "up"
                    && r.version == first.version
                    && r.values == first.values
                    && r.tombstone == first.tombstone
            })
        });
        if !agree {
            convergence.diverged += 1;
            if convergence.diverged_examples.len() < DIVERGED_EXAMPLES_MAX {
                let replicas: Vec<String> = view
                    .replicas
                    .iter()
                    .map(|r| format!("{} {} {:?}", r.node, r.version, r.values))
                    .collect();
                convergence.diverged_examples.push(format!("{table}/{key}: {}", replicas.join("; ")));
            }
        }
    }
    let mut final_state = FinalState::default();
    let opts = ReadOptions {
        r: Some("all".into()),
        timeout_ms: Some(FINAL_READ_TIMEOUT_MS),
        ..ReadOptions::default()
    };
    for (table, key) in keys {
        let mut attempt = 0;
        let read = loop {
            attempt += 1;
            match client.get(table, key, &opts).await {
                Ok(r) => break r,
                Err(e) if attempt >= FINAL_READ_ATTEMPTS_MAX => {
                    return Err(e).with_context(|| format!("final read of {table}/{key} at r=all"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(FINAL_READ_RETRY_MS)).await,
            }
        };
        final_state.push(table.clone(), key.clone(), read.values, Some(read.context));
    }
    Ok((convergence, final_state))
}
