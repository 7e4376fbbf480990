//! `quorumdb lab`: fault-injection scenarios on a real local cluster, and the seeded simulator.
//!
//! `lab run <scenario>` starts its own cluster of `quorumdb server` processes on loopback
//! ([`cluster`]), drives a recorded workload ([`workload`]) through the phases of faults a
//! scenario file describes ([`scenario`], [`driver`]), heals, lets anti-entropy converge the replicas, reads every key at `r=all`,
//! runs the `quorumdb_lab` checkers and writes three files to the output directory:
//!
//! - `history.jsonl`: every operation, in the `quorumdb_lab::History` format;
//! - `report.json`: per setting and phase the counts, availability, latency, stale reads and
//!   lost writes; the linearizability verdict; each README claim checked
//!   (`quorumdb_lab::report`);
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

mod cart_partition;
mod cluster;
mod driver;
mod html;
mod kafka_wire;
mod log_faults;
mod profile_store;
mod rmw_lineage;
pub mod scenario;
pub mod scheduler;
mod sink_faults;
mod split_brain;
mod workload;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use cluster::LabCluster;
use quorumdb_client::ReadOptions;
use quorumdb_lab::report::{self, Convergence};
use quorumdb_lab::FinalState;
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
/// Largest scenario file `lab run FILE` reads: real ones are a few KiB; this stops a wrong path
/// (a log, a binary) from being slurped whole before the parser refuses it.
const SCENARIO_FILE_BYTES_MAX: u64 = 1024 * 1024;

#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub command: LabCommand,
}

#[derive(Subcommand, Debug)]
pub enum LabCommand {
    /// Run a scenario on a fresh local cluster; writes report.json, report.html, history.jsonl.
    Run(RunArgs),
    /// List the built-in scenarios (name and one-line description).
    List(ListArgs),
    /// Run the seeded whole-cluster simulation.
    Simulate(crate::lab_sim::SimulateArgs),
    /// One scheduler process of `split-brain-scheduler` (the lab starts these).
    #[command(hide = true)]
    Scheduler(scheduler::SchedulerArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: crate::cli::TextOrJson,
}

/// How `az-failure`'s zone goes down (`--zone-fault`, the scenario's `zone_fault` parameter).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneFault {
    /// SIGKILL the zone's nodes; recovery restarts them with their data.
    Kill,
    /// Cut the zone's nodes off from the others (peer traffic only); recovery heals.
    Partition,
    /// SIGSTOP the zone's nodes; recovery sends SIGCONT.
    Pause,
}

impl ZoneFault {
    fn name(self) -> &'static str {
        match self {
            ZoneFault::Kill => "kill",
            ZoneFault::Partition => "partition",
            ZoneFault::Pause => "pause",
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A built-in scenario (see `lab list`) or the path of a scenario .toml file.
    pub scenario: String,
    /// Seed of every choice the lab makes (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Length of each phase in seconds (default: the scenario's, 10); scales every timing.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Output directory (default: ./lab-out/<scenario>-<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Client processes (the workload's `clients`; az-failure 8, clock-skew-lww 6, gray-failure 8).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Keys per setting (the workload's `keys`; az-failure 20, clock-skew-lww 4, gray-failure 20).
    #[arg(long)]
    pub keys: Option<usize>,
    /// Settings to run, comma-separated (default: all of the scenario's).
    #[arg(long, value_delimiter = ',')]
    pub settings: Vec<String>,
    /// Sets the scenario's `zone_fault` parameter (az-failure: how the zone goes down).
    #[arg(long, value_enum)]
    pub zone_fault: Option<ZoneFault>,
    /// Sets the scenario's `skew_ms` parameter (clock-skew-lww: the skewed node's offset).
    #[arg(long, allow_hyphen_values = true)]
    pub skew_ms: Option<i64>,
    /// Sets any of the scenario's `[params]`: NAME=VALUE (VALUE as TOML, or a bare string).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// `log-under-faults` only: corrupt the recorded history with this anomaly class before
    /// checking (lost, duplicate, inconsistent, nonmonotonic, skip, unexpected), to show the
    /// checker catches it.
    #[arg(long, hide = true, value_name = "CLASS")]
    pub inject_bug: Option<String>,
}

pub async fn run(a: LabArgs) -> Result<i32> {
    match a.command {
        LabCommand::Simulate(s) => crate::lab_sim::run(s),
        LabCommand::List(l) => list(&l),
        LabCommand::Scheduler(s) => scheduler::run(s).await,
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

/// `lab list`: every embedded scenario, parsed (so a broken built-in file fails here, loudly).
fn list(a: &ListArgs) -> Result<i32> {
    let mut rows = Vec::new();
    for (name, text) in scenario::EMBEDDED {
        let s = scenario::load(&format!("embedded scenario {name}"), text, &scenario::Overrides::default())?;
        rows.push((name, s.description));
    }
    for (name, text) in split_brain::EMBEDDED {
        rows.push((name, split_brain::describe(&format!("embedded scenario {name}"), text)?.1));
    }
    for (name, text) in log_faults::EMBEDDED {
        rows.push((name, log_faults::describe(&format!("embedded scenario {name}"), text)?.1));
    }
    for (name, text) in sink_faults::EMBEDDED {
        rows.push((name, sink_faults::describe(&format!("embedded scenario {name}"), text)?.1));
    }
    for (name, text) in cart_partition::EMBEDDED {
        rows.push((name, cart_partition::describe(&format!("embedded scenario {name}"), text)?.1));
    }
    match a.output {
        crate::cli::TextOrJson::Json => {
            let json: Vec<_> =
                rows.iter().map(|(n, d)| serde_json::json!({"name": n, "description": d})).collect();
            println!("{}", serde_json::to_string(&json)?);
        }
        crate::cli::TextOrJson::Text => {
            for (name, description) in rows {
                println!("{name:<16} {description}");
            }
        }
    }
    Ok(0)
}

/// `NAME=VALUE` of `--param`: VALUE parsed as a TOML value (`5000`, `true`, `"x"`), or taken as
/// a string when it is not one, so `--param zone_fault=pause` needs no quotes.
fn parse_param(s: &str) -> Result<(String, toml::Value)> {
    let Some((name, value)) = s.split_once('=') else { bail!("--param {s:?}: expected NAME=VALUE") };
    let value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    };
    Ok((name.trim().to_owned(), value))
}

/// The scenario `arg` names: a built-in one, or a file.
fn read_scenario(arg: &str) -> Result<(String, String)> {
    if let Some(text) = scenario::embedded(arg) {
        return Ok((format!("embedded scenario {arg}"), text.to_owned()));
    }
    if let Some((_, text)) = split_brain::EMBEDDED
        .iter()
        .chain(log_faults::EMBEDDED.iter())
        .chain(sink_faults::EMBEDDED.iter())
        .chain(cart_partition::EMBEDDED.iter())
        .find(|(n, _)| *n == arg)
    {
        return Ok((format!("embedded scenario {arg}"), (*text).to_owned()));
    }
    let path = Path::new(arg);
    if !path.exists() {
        let known: Vec<&str> = scenario::EMBEDDED
            .iter()
            .chain(split_brain::EMBEDDED.iter())
            .chain(log_faults::EMBEDDED.iter())
            .chain(sink_faults::EMBEDDED.iter())
            .chain(cart_partition::EMBEDDED.iter())
            .map(|(n, _)| *n)
            .collect();
        bail!("unknown scenario {arg:?}: not a built-in one ({}) and no such file", known.join(", "));
    }
    let len = std::fs::metadata(path).with_context(|| format!("cannot read {arg}"))?.len();
    if len > SCENARIO_FILE_BYTES_MAX {
        bail!("{arg}: {len} bytes is too large for a scenario file (at most {SCENARIO_FILE_BYTES_MAX})");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {arg}"))?;
    Ok((arg.to_owned(), text))
}

async fn run_scenario(a: RunArgs) -> Result<i32> {
    let (origin, text) = read_scenario(&a.scenario)?;
    if log_faults::is_log(&text) {
        return run_log(a, &origin, &text).await;
    }
    if a.inject_bug.is_some() {
        bail!("{origin}: --inject-bug applies to log scenarios only");
    }
    if sink_faults::is_sink(&text) {
        return run_sink(a, &origin, &text).await;
    }
    if cart_partition::is_cart(&text) {
        let r = duration_run(&a, &origin, &text, "cart", "carts=20")?;
        return cart_partition::run(&origin, &text, &r.params, a.duration, r.seed, &r.out, r.command).await;
    }
    if split_brain::is_coordination(&text) {
        return run_coordination(a, &origin, &text).await;
    }
    let mut overrides = scenario::Overrides {
        duration_s: a.duration,
        clients: a.clients,
        keys: a.keys,
        settings: a.settings.clone(),
        params: a.params.iter().map(|p| parse_param(p)).collect::<Result<_>>()?,
    };
    if let Some(f) = a.zone_fault {
        overrides.params.push(("zone_fault".into(), toml::Value::String(f.name().into())));
    }
    if let Some(ms) = a.skew_ms {
        overrides.params.push(("skew_ms".into(), toml::Value::Integer(ms)));
    }
    let sc = scenario::load(&origin, &text, &overrides)?;
    let seed = a.seed.unwrap_or_else(rand::random::<u64>);
    let phase_s = sc.phase_duration.as_secs_f64();
    let name = sc.name.clone();
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("lab-out").join(format!("{name}-{seed}")));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    // The replay command names what the user named (a built-in scenario or a file) and every
    // override, so it reproduces the run's choices.
    let mut command = format!("quorumdb lab run {} --seed {seed} --duration {phase_s}", a.scenario);
    for (flag, v) in [("--clients", a.clients), ("--keys", a.keys)] {
        if let Some(v) = v {
            command.push_str(&format!(" {flag} {v}"));
        }
    }
    if !a.settings.is_empty() {
        command.push_str(&format!(" --settings {}", a.settings.join(",")));
    }
    if let Some(f) = a.zone_fault.filter(|&f| f != ZoneFault::Kill) {
        command.push_str(&format!(" --zone-fault {}", f.name()));
    }
    if let Some(ms) = a.skew_ms {
        command.push_str(&format!(" --skew-ms {ms}"));
    }
    for p in &a.params {
        command.push_str(&format!(" --param {p}"));
    }
    eprintln!("lab: {name}, seed {seed}, {phase_s} s per phase, output in {}", out.display());
    let mut output = driver::run(&sc, seed, &out).await?;
    output.command = command;
    write_history(&out, &output.history)?;
    eprintln!("checking {} operations", output.history.ops.len());
    let lineage = output.checkers.contains(&report::Checker::Lineage);
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

/// What a special scenario (one with its own runner) takes from `lab run`'s arguments.
struct SpecialRun {
    params: Vec<(String, toml::Value)>,
    seed: u64,
    out: PathBuf,
    /// The command line that replays the run.
    command: String,
}

/// Refuses the key-value options in `unused` that were given (rather than ignoring them),
/// then resolves the parameters, the seed, the output directory and the replay command.
fn special_run(
    a: &RunArgs,
    origin: &str,
    text: &str,
    unused: &[(&str, bool)],
    refusal: &str,
    default_name: &str,
) -> Result<SpecialRun> {
    if let Some((flag, _)) = unused.iter().find(|(_, given)| *given) {
        bail!("{origin}: {flag} {refusal}");
    }
    let params: Vec<(String, toml::Value)> =
        a.params.iter().map(|p| parse_param(p)).collect::<Result<_>>()?;
    let seed = a.seed.unwrap_or_else(rand::random::<u64>);
    let name = toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("name").and_then(|n| n.as_str().map(str::to_owned)))
        .unwrap_or_else(|| default_name.into());
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("lab-out").join(format!("{name}-{seed}")));
    let command = format!("quorumdb lab run {} --seed {seed}", a.scenario);
    Ok(SpecialRun { params, seed, out, command })
}

/// `lab run` of a coordination scenario (`split-brain-scheduler`): only `--seed`, `--out` and
/// `--param` apply; the key-value options are refused rather than ignored.
async fn run_coordination(a: RunArgs, origin: &str, text: &str) -> Result<i32> {
    let unused = [
        ("--duration", a.duration.is_some()),
        ("--clients", a.clients.is_some()),
        ("--keys", a.keys.is_some()),
        ("--settings", !a.settings.is_empty()),
        ("--zone-fault", a.zone_fault.is_some()),
        ("--skew-ms", a.skew_ms.is_some()),
    ];
    let refusal =
        "does not apply to a coordination scenario; use --param NAME=VALUE (for example --param rounds=1)";
    let mut r = special_run(&a, origin, text, &unused, refusal, "coordination")?;
    for p in &a.params {
        r.command.push_str(&format!(" --param {p}"));
    }
    split_brain::run(origin, text, &r.params, r.seed, &r.out, r.command).await
}

/// What a log or sink scenario takes from `lab run`'s arguments: `--seed`, `--out`,
/// `--duration` (the production's length, scaling the fault timings) and `--param`; the
/// key-value options are refused rather than ignored.
fn duration_run(a: &RunArgs, origin: &str, text: &str, kind: &str, example: &str) -> Result<SpecialRun> {
    let unused = [
        ("--clients", a.clients.is_some()),
        ("--keys", a.keys.is_some()),
        ("--settings", !a.settings.is_empty()),
        ("--zone-fault", a.zone_fault.is_some()),
        ("--skew-ms", a.skew_ms.is_some()),
    ];
    let refusal = format!(
        "does not apply to a {kind} scenario; use --duration SECONDS or --param NAME=VALUE (for example --param {example})"
    );
    let mut r = special_run(a, origin, text, &unused, &refusal, kind)?;
    if let Some(d) = a.duration {
        r.command.push_str(&format!(" --duration {d}"));
    }
    for p in &a.params {
        r.command.push_str(&format!(" --param {p}"));
    }
    Ok(r)
}

/// `lab run` of a log scenario (`log-under-faults`), with the hidden `--inject-bug`.
async fn run_log(a: RunArgs, origin: &str, text: &str) -> Result<i32> {
    let mut r = duration_run(&a, origin, text, "log", "producers=2")?;
    if let Some(b) = &a.inject_bug {
        r.command.push_str(&format!(" --inject-bug {b}"));
    }
    log_faults::run(origin, text, &r.params, a.duration, a.inject_bug.as_deref(), r.seed, &r.out, r.command)
        .await
}

/// `lab run` of a sink scenario (`flaky-warehouse-sink`).
async fn run_sink(a: RunArgs, origin: &str, text: &str) -> Result<i32> {
    let r = duration_run(&a, origin, text, "sink", "error_fraction=0.5")?;
    sink_faults::run(origin, text, &r.params, a.duration, r.seed, &r.out, r.command).await
}

/// The top-level `kind` of a scenario file, if it has one.
pub(crate) fn scenario_kind(text: &str) -> Option<String> {
    toml::from_str::<toml::Table>(text).ok()?.get("kind")?.as_str().map(str::to_owned)
}

/// Parses a special scenario's file into its own type `F`, with `--param NAME=VALUE`
/// overrides applied first (see [`apply_params`]); errors name `origin`.
pub(crate) fn parse_special<F: serde::de::DeserializeOwned>(
    origin: &str,
    text: &str,
    sections: &[&str],
    params: &[(String, toml::Value)],
) -> Result<F> {
    let mut table: toml::Table = toml::from_str(text).with_context(|| format!("{origin}: not valid TOML"))?;
    apply_params(origin, &mut table, sections, params)?;
    F::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow::anyhow!("{origin}: {}", e.to_string().trim_end()))
}

/// Applies `--param NAME=VALUE` overrides to a special scenario's file: NAME is a field of the
/// first of `sections` that has it, or `SECTION.FIELD`; a NAME no section has is an error
/// listing the fields.
fn apply_params(
    origin: &str,
    table: &mut toml::Table,
    sections: &[&str],
    params: &[(String, toml::Value)],
) -> Result<()> {
    for (param, value) in params {
        // `section.field` names a field that several sections have (`naive.table`).
        let (only, name) = match param.split_once('.') {
            Some((section, field)) => (Some(section), field.to_owned()),
            None => (None, param.clone()),
        };
        let name = &name;
        let section = sections.iter().filter(|s| only.is_none_or(|o| o == **s)).find(|s| {
            table.get(**s).and_then(|t| t.as_table()).is_some_and(|t| t.contains_key(name.as_str()))
        });
        let Some(section) = section else {
            let fields: Vec<&str> = sections
                .iter()
                .filter_map(|s| table.get(*s).and_then(|t| t.as_table()))
                .flat_map(|t| t.keys().map(String::as_str))
                .collect();
            bail!("--param {param}: {origin} has no such field (it has {})", fields.join(", "));
        };
        if let Some(t) = table.get_mut(*section).and_then(|t| t.as_table_mut()) {
            t.insert(name.clone(), value.clone());
        }
    }
    Ok(())
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
