//! `lab run split-brain-scheduler`: exactly one scheduler, even when the old one comes back.
//!
//! Several scheduler processes ([`super::scheduler`]) campaign for one election on a real
//! cluster; the leader assigns batch partitions with writes into the store. The lab finds the
//! leader, pauses it (SIGSTOP) past its lease or cuts its node off from the other nodes, holds
//! the fault while another scheduler takes over, then lets the old leader back, and it keeps
//! assigning until it learns it was replaced. The same run is made with fencing on (every
//! assignment carries the election's token) and off. [`analyze`] then judges the events:
//!
//! - an assignment is *stale* when it was sent after a higher token of the election had been
//!   granted (the winner's acquire had returned): its sender had been replaced, whether it knew
//!   or not. Writes sent before that instant are never counted, so the count is a lower bound;
//! - *stale accepted*: stale and acknowledged (2xx). With fencing this must be 0;
//! - *stale values in the final state*: after the heal and an anti-entropy pass, a partition's
//!   converged value written by a stale assignment (accepted or of unknown outcome). With
//!   fencing this must be 0 too: a zombie's write that reached some replicas never resurfaces;
//! - per fault, the *failover time*: from the instant the lab injected the fault to the first
//!   acknowledged assignment under a higher token; and a *two-leader period* when stale
//!   assignments were acknowledged after it, from the first one's send to the last one's answer.
//!
//! The scenario file has its own small format (`kind = "coordination"`, see `docs/lab.md`);
//! `--param NAME=VALUE` sets any of its fields by name.

use super::cluster::{ClusterSpec, LabCluster};
use super::scenario::Dur;
use super::scheduler::{self, Event};
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use quorumdb_client::ReadOptions;
use quorumdb_lab::report::percentile;
use quorumdb_lab::OpResult;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `kind` that marks a coordination scenario file.
pub const KIND: &str = "coordination";
/// Coordination scenarios shipped with QuorumDB (name, text), listed after the others.
pub const EMBEDDED: [(&str, &str); 1] =
    [("split-brain-scheduler", include_str!("../../../../scenarios/split-brain-scheduler.toml"))];
/// Most fault rounds per fault kind: each takes seconds, so more is a typo.
const ROUNDS_MAX: usize = 100;
/// Most scheduler processes.
const SCHEDULERS_MAX: usize = 8;
/// Most partitions a leader assigns per round.
const PARTITIONS_MAX: u32 = 256;
/// How long the lab waits for the election to have a leader, before a fault and at the start.
const LEADER_WAIT_MS: u64 = 30_000;
/// Poll period of that wait.
const POLL_MS: u64 = 50;
/// Attempts of a final read (a node may need a heartbeat after the heal).
const FINAL_READ_ATTEMPTS_MAX: usize = 50;

/// Which fault a round injects on the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGSTOP the leader scheduler for `pause_hold`, then SIGCONT.
    Pause,
    /// Cut the leader's node off from every other node for `partition_hold`, then heal.
    Partition,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCluster {
    nodes: usize,
    zones: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLease {
    ttl: Dur,
    keepalive: Dur,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchedulers {
    count: usize,
    partitions: u32,
    assign_interval: Dur,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRun {
    fencing: Vec<bool>,
    faults: Vec<FaultKind>,
    rounds: usize,
    pause_hold: Dur,
    partition_hold: Dur,
    settle: Dur,
}

/// A coordination scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    kind: String,
    description: String,
    cluster: FileCluster,
    lease: FileLease,
    schedulers: FileSchedulers,
    run: FileRun,
}

/// Whether `text` is a coordination scenario (its top-level `kind`).
pub fn is_coordination(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .and_then(|t| t.get("kind").and_then(|k| k.as_str().map(|k| k == KIND)))
        .unwrap_or(false)
}

/// The name and description of a coordination scenario, for `lab list`.
pub fn describe(origin: &str, text: &str) -> Result<(String, String)> {
    let f = load(origin, text, &[])?;
    Ok((f.name, f.description))
}

/// Parses and checks a file, with `--param` overrides: each NAME is a field of one of the
/// sections (`rounds`, `ttl`, `fencing`, ...), VALUE of the field's type.
fn load(origin: &str, text: &str, params: &[(String, toml::Value)]) -> Result<File> {
    let mut table: toml::Table = toml::from_str(text).with_context(|| format!("{origin}: not valid TOML"))?;
    for (name, value) in params {
        let section = ["cluster", "lease", "schedulers", "run"]
            .into_iter()
            .find(|s| table.get(*s).and_then(|t| t.as_table()).is_some_and(|t| t.contains_key(name)));
        let Some(section) = section else {
            bail!("--param {name}: {origin} has no such field (it has rounds, fencing, faults, ttl, keepalive, count, partitions, assign_interval, pause_hold, partition_hold, settle, nodes, zones)");
        };
        let value = match (name.as_str(), value) {
            // `--param fencing=true` means one run with fencing on.
            ("fencing", v @ toml::Value::Boolean(_)) => toml::Value::Array(vec![v.clone()]),
            ("faults", v @ toml::Value::String(_)) => toml::Value::Array(vec![v.clone()]),
            (_, v) => v.clone(),
        };
        if let Some(t) = table.get_mut(section).and_then(|t| t.as_table_mut()) {
            t.insert(name.clone(), value);
        }
    }
    let f = File::deserialize(toml::Value::Table(table))
        .map_err(|e| anyhow::anyhow!("{origin}: {}", e.to_string().trim_end()))?;
    check(&f).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    Ok(f)
}

fn check(f: &File) -> Result<(), String> {
    if f.kind != KIND {
        return Err(format!("kind must be {KIND:?}, got {:?}", f.kind));
    }
    if !(3..=super::scenario::NODES_MAX).contains(&f.cluster.nodes)
        || f.cluster.zones == 0
        || f.cluster.zones > f.cluster.nodes
    {
        return Err(format!(
            "[cluster] needs 3 to {} nodes and 1 <= zones <= nodes (a cut-off node must leave a metadata majority), got {} nodes, {} zones",
            super::scenario::NODES_MAX,
            f.cluster.nodes,
            f.cluster.zones
        ));
    }
    let ttl = f.lease.ttl.0;
    let ttl_min = Duration::from_millis(quorumdb_meta::state::LEASE_TTL_MS_MIN);
    if ttl < ttl_min || ttl > Duration::from_secs(60) {
        return Err(format!("[lease] ttl must be 1s to 60s, got {:?}", ttl));
    }
    if f.lease.keepalive.0.is_zero() || f.lease.keepalive.0 >= ttl {
        return Err(format!(
            "[lease] keepalive must be above 0 and below ttl, got {:?}",
            f.lease.keepalive.0
        ));
    }
    if !(2..=SCHEDULERS_MAX).contains(&f.schedulers.count) {
        return Err(format!("[schedulers] count must be 2 to {SCHEDULERS_MAX}, got {}", f.schedulers.count));
    }
    if !(1..=PARTITIONS_MAX).contains(&f.schedulers.partitions) {
        return Err(format!(
            "[schedulers] partitions must be 1 to {PARTITIONS_MAX}, got {}",
            f.schedulers.partitions
        ));
    }
    if f.schedulers.assign_interval.0 > Duration::from_secs(1) {
        return Err("[schedulers] assign_interval must be at most 1s".into());
    }
    let r = &f.run;
    if r.fencing.is_empty() || r.faults.is_empty() {
        return Err("[run] fencing and faults must each name at least one".into());
    }
    if !(1..=ROUNDS_MAX).contains(&r.rounds) {
        return Err(format!("[run] rounds must be 1 to {ROUNDS_MAX}, got {}", r.rounds));
    }
    // A fault shorter than the lease cannot make a new leader: the old lease is still live.
    for (what, hold) in [("pause_hold", r.pause_hold.0), ("partition_hold", r.partition_hold.0)] {
        if hold <= ttl || hold > Duration::from_secs(600) {
            return Err(format!(
                "[run] {what} must exceed the lease ttl ({ttl:?}) and be at most 600s, got {hold:?}"
            ));
        }
    }
    if r.settle.0 > Duration::from_secs(600) {
        return Err("[run] settle must be at most 600s".into());
    }
    Ok(())
}

/// One injected fault, as the lab saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub round: usize,
    /// The leader the fault hit, and its token.
    pub leader: u32,
    pub token: u64,
    pub fault_ns: u64,
    pub recover_ns: u64,
}

/// What one fault led to.
#[derive(Debug, Clone, Serialize)]
pub struct FaultResult {
    pub kind: FaultKind,
    pub round: usize,
    pub old_leader: u32,
    pub old_token: u64,
    pub new_leader: Option<u32>,
    pub new_token: Option<u64>,
    /// From the fault to the first acknowledged assignment under a higher token.
    pub failover_ms: Option<f64>,
    /// How long the fault was held.
    pub hold_ms: f64,
    /// Stale assignments acknowledged between this fault and the next.
    pub stale_accepted: u64,
    /// Stale assignments refused (`fenced` and other 4xx) in that span.
    pub stale_refused: u64,
    /// From the first stale acknowledged assignment's send to the last one's answer, ms: how
    /// long two leaders both had their assignments accepted (0: never).
    pub two_leader_ms: f64,
}

/// Latency figures over the faults.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Failover {
    pub samples: usize,
    /// Faults after which no new leader assigned anything before the next fault.
    pub missing: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// The judgement of one run (one fencing setting).
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    pub fencing: bool,
    pub election: String,
    pub grants: usize,
    pub assignments: u64,
    pub assignments_ok: u64,
    pub stale_sent: u64,
    pub stale_accepted: u64,
    pub stale_refused: u64,
    pub stale_unknown: u64,
    /// Stale refusals whose code was `fenced`.
    pub stale_fenced: u64,
    pub stale_in_final_state: u64,
    pub two_leader_periods: u64,
    pub two_leader_ms_total: f64,
    pub failover: Failover,
    pub failover_by_kind: BTreeMap<String, Failover>,
    pub faults: Vec<FaultResult>,
    /// Final converged value(s) of each partition.
    pub final_state: BTreeMap<String, Vec<String>>,
}

fn failover_of<'a>(results: impl Iterator<Item = &'a FaultResult>) -> Failover {
    let mut f = Failover::default();
    let mut v = Vec::new();
    for r in results {
        match r.failover_ms {
            Some(ms) => v.push(ms),
            None => f.missing += 1,
        }
    }
    v.sort_by(f64::total_cmp);
    f.samples = v.len();
    f.p50_ms = percentile(&v, 0.5);
    f.p99_ms = percentile(&v, 0.99);
    f.max_ms = v.last().copied();
    f
}

/// Judges one run's events (every scheduler's, any order), its faults (in order) and the final
/// converged values per partition key. Pure, so the checker is tested on hand-made histories.
pub fn analyze(
    fencing: bool,
    election: &str,
    events: &[Event],
    faults: &[FaultRecord],
    final_state: BTreeMap<String, Vec<String>>,
) -> ModeReport {
    // When each token was superseded: the earliest grant of any higher token.
    let mut grants: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Leader { token, at_ns, .. } => Some((*token, *at_ns)),
            _ => None,
        })
        .collect();
    grants.sort_unstable();
    let superseded_at =
        |token: u64| -> Option<u64> { grants.iter().filter(|(t, _)| *t > token).map(|(_, at)| *at).min() };
    struct A<'e> {
        scheduler: u32,
        token: u64,
        value: &'e str,
        invoke_ns: u64,
        complete_ns: u64,
        outcome: OpResult,
        error: Option<&'e str>,
        stale: bool,
    }
    let mut assigns: Vec<A> = events
        .iter()
        .filter_map(|e| match e {
            Event::Assign { scheduler, token, value, invoke_ns, complete_ns, outcome, error, .. } => {
                Some(A {
                    scheduler: *scheduler,
                    token: *token,
                    value,
                    invoke_ns: *invoke_ns,
                    complete_ns: *complete_ns,
                    outcome: *outcome,
                    error: error.as_deref(),
                    stale: superseded_at(*token).is_some_and(|at| *invoke_ns > at),
                })
            }
            _ => None,
        })
        .collect();
    assigns.sort_by_key(|a| a.invoke_ns);
    let count = |f: &dyn Fn(&A) -> bool| assigns.iter().filter(|a| f(a)).count() as u64;
    let stale_by_value: HashMap<&str, bool> =
        assigns.iter().filter(|a| a.outcome != OpResult::Fail).map(|a| (a.value, a.stale)).collect();
    let stale_in_final_state = final_state
        .values()
        .flatten()
        .filter(|v| stale_by_value.get(v.as_str()).copied().unwrap_or(false))
        .count() as u64;

    let mut results = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        let until = faults.get(i + 1).map_or(u64::MAX, |n| n.fault_ns);
        let first_new = assigns
            .iter()
            .filter(|a| a.outcome == OpResult::Ok && a.token > f.token && a.complete_ns >= f.fault_ns)
            .filter(|a| a.complete_ns < until)
            .min_by_key(|a| a.complete_ns);
        let span = |a: &&A| a.stale && a.invoke_ns >= f.fault_ns && a.invoke_ns < until;
        // Both leaders acted from the first stale acknowledged assignment's send to the last
        // one's answer (the new leader had been granted before either, by definition).
        let stale_ok = || assigns.iter().filter(span).filter(|a| a.outcome == OpResult::Ok);
        let two_leader_ms =
            match (stale_ok().map(|a| a.invoke_ns).min(), stale_ok().map(|a| a.complete_ns).max()) {
                (Some(start), Some(end)) => end.saturating_sub(start) as f64 / 1e6,
                _ => 0.0,
            };
        results.push(FaultResult {
            kind: f.kind,
            round: f.round,
            old_leader: f.leader,
            old_token: f.token,
            new_leader: first_new.map(|a| a.scheduler),
            new_token: first_new.map(|a| a.token),
            failover_ms: first_new.map(|a| a.complete_ns.saturating_sub(f.fault_ns) as f64 / 1e6),
            hold_ms: f.recover_ns.saturating_sub(f.fault_ns) as f64 / 1e6,
            stale_accepted: assigns.iter().filter(span).filter(|a| a.outcome == OpResult::Ok).count() as u64,
            stale_refused: assigns.iter().filter(span).filter(|a| a.outcome == OpResult::Fail).count() as u64,
            two_leader_ms,
        });
    }
    let mut by_kind = BTreeMap::new();
    for kind in [FaultKind::Pause, FaultKind::Partition] {
        if results.iter().any(|r| r.kind == kind) {
            by_kind.insert(kind.name().to_owned(), failover_of(results.iter().filter(|r| r.kind == kind)));
        }
    }
    ModeReport {
        fencing,
        election: election.to_owned(),
        grants: grants.len(),
        assignments: assigns.len() as u64,
        assignments_ok: count(&|a| a.outcome == OpResult::Ok),
        stale_sent: count(&|a| a.stale),
        stale_accepted: count(&|a| a.stale && a.outcome == OpResult::Ok),
        stale_refused: count(&|a| a.stale && a.outcome == OpResult::Fail),
        stale_unknown: count(&|a| a.stale && a.outcome == OpResult::Info),
        stale_fenced: count(&|a| a.stale && a.error == Some("fenced")),
        stale_in_final_state,
        two_leader_periods: results.iter().filter(|r| r.two_leader_ms > 0.0).count() as u64,
        two_leader_ms_total: results.iter().map(|r| r.two_leader_ms).sum(),
        failover: failover_of(results.iter()),
        failover_by_kind: by_kind,
        faults: results,
        final_state,
    }
}

/// The scheduler processes of one run; dropping it SIGKILLs them.
struct Schedulers {
    children: Vec<Child>,
}

impl Schedulers {
    fn pid(&self, i: usize) -> Pid {
        Pid::from_raw(self.children[i].id() as i32)
    }

    fn signal(&self, i: usize, s: Signal) -> Result<()> {
        kill(self.pid(i), s).with_context(|| format!("cannot send {s} to scheduler {i}"))
    }

    /// Fails when a scheduler exited on its own (it only does on a broken events file).
    fn check_running(&mut self) -> Result<()> {
        for (i, c) in self.children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                bail!("scheduler {i} exited ({status}); see its log");
            }
        }
        Ok(())
    }
}

impl Drop for Schedulers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the report says about the run as a whole.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub seed: u64,
    pub command: String,
    pub nodes: usize,
    pub zones: usize,
    pub schedulers: usize,
    pub partitions: u32,
    pub assign_interval_ms: f64,
    pub lease_ttl_ms: f64,
    pub keepalive_ms: f64,
    pub pause_hold_ms: f64,
    pub partition_hold_ms: f64,
    pub rounds: usize,
    pub modes: Vec<ModeReport>,
    /// The claims checked (fencing on): each with whether it held.
    pub guarantees: Vec<Guarantee>,
    pub violations: usize,
    pub wall_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Guarantee {
    pub claim: String,
    pub held: bool,
    pub detail: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the scenario in `text`; the exit code (0, or [`super::EXIT_VIOLATED`]).
pub async fn run(
    origin: &str,
    text: &str,
    params: &[(String, toml::Value)],
    seed: u64,
    out: &Path,
    command: String,
) -> Result<i32> {
    let started = std::time::Instant::now();
    let f = load(origin, text, params)?;
    std::fs::create_dir_all(out.join("logs")).with_context(|| format!("cannot create {}", out.display()))?;
    eprintln!(
        "lab: {}, seed {seed}, {} round(s) of {} with fencing {}, output in {}",
        f.name,
        f.run.rounds,
        f.run.faults.iter().map(|k| k.name()).collect::<Vec<_>>().join(" and "),
        f.run.fencing.iter().map(|&b| if b { "on" } else { "off" }).collect::<Vec<_>>().join(" then "),
        out.display()
    );
    let spec = ClusterSpec {
        nodes: f.cluster.nodes,
        zones: f.cluster.zones,
        replication_factor: 3,
        tables: Vec::new(),
        server_timeouts: false,
    };
    eprintln!("starting {} nodes in {} zones (N=3)", f.cluster.nodes, f.cluster.zones);
    let mut cluster = LabCluster::start(&spec, &out.join("logs")).await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut modes = Vec::new();
    for &fencing in &f.run.fencing {
        let mode = if fencing { "fenced" } else { "unfenced" };
        let election = format!("scheduler-{mode}");
        eprintln!("{mode}: {} schedulers campaign for {election:?}", f.schedulers.count);
        let events_dir = out.join(format!("events-{mode}"));
        std::fs::create_dir_all(&events_dir)
            .with_context(|| format!("cannot create {}", events_dir.display()))?;
        let mut scheds = spawn_schedulers(&f, &cluster, fencing, &election, mode, &events_dir, out)?;
        let mut order: Vec<(FaultKind, usize)> =
            (0..f.run.rounds).flat_map(|r| f.run.faults.iter().map(move |&k| (k, r + 1))).collect();
        order.shuffle(&mut rng);
        // Let a leader settle in and assign a while before the first fault.
        let mut leader = wait_leader(&cluster, &election, 0).await?;
        tokio::time::sleep(f.run.settle.0).await;
        let round_ms = (ms(f.schedulers.assign_interval.0) + 2.0) * f64::from(f.schedulers.partitions);
        let mut records = Vec::new();
        for (kind, round) in order {
            scheds.check_running()?;
            // Land the fault anywhere within an assignment round.
            tokio::time::sleep(Duration::from_secs_f64(rng.random_range(0.0..round_ms.max(1.0)) / 1e3)).await;
            let (who, token) = leader;
            let i = who as usize;
            let fault_ns = scheduler::now_ns();
            let hold = match kind {
                FaultKind::Pause => {
                    scheds.signal(i, Signal::SIGSTOP)?;
                    tokio::time::sleep(f.run.pause_hold.0).await;
                    scheds.signal(i, Signal::SIGCONT)?;
                    f.run.pause_hold.0
                }
                FaultKind::Partition => {
                    cluster.partition(&[i % f.cluster.nodes]).await?;
                    tokio::time::sleep(f.run.partition_hold.0).await;
                    cluster.heal_network().await?;
                    f.run.partition_hold.0
                }
            };
            let recover_ns = scheduler::now_ns();
            eprintln!(
                "{mode}: {} round {round}: scheduler {who} (token {token}) held {:.1} s",
                kind.name(),
                hold.as_secs_f64()
            );
            records.push(FaultRecord { kind, round, leader: who, token, fault_ns, recover_ns });
            tokio::time::sleep(f.run.settle.0).await;
            leader = wait_leader(&cluster, &election, token).await?;
        }
        scheds.check_running()?;
        drop(scheds);
        let events = read_events(&events_dir, f.schedulers.count)?;
        let final_state = final_values(&mut cluster, &f, mode).await?;
        let report = analyze(fencing, &election, &events, &records, final_state);
        eprintln!(
            "{mode}: {} assignments ({} acknowledged), {} stale sent, {} stale accepted",
            report.assignments, report.assignments_ok, report.stale_sent, report.stale_accepted
        );
        modes.push(report);
    }
    drop(cluster);
    let mut guarantees = Vec::new();
    for m in modes.iter().filter(|m| m.fencing) {
        guarantees.push(Guarantee {
            claim: "with fencing, no assignment from a replaced leader is acknowledged".into(),
            held: m.stale_accepted == 0,
            detail: format!(
                "{} stale assignments sent, {} accepted, {} refused ({} fenced), {} unknown",
                m.stale_sent, m.stale_accepted, m.stale_refused, m.stale_fenced, m.stale_unknown
            ),
        });
        guarantees.push(Guarantee {
            claim: "with fencing, no value written by a replaced leader survives in the converged state"
                .into(),
            held: m.stale_in_final_state == 0,
            detail: format!(
                "{} of {} partitions hold a stale value",
                m.stale_in_final_state,
                m.final_state.len()
            ),
        });
    }
    let violations = guarantees.iter().filter(|g| !g.held).count();
    let report = Report {
        scenario: f.name.clone(),
        description: f.description.clone(),
        seed,
        command,
        nodes: f.cluster.nodes,
        zones: f.cluster.zones,
        schedulers: f.schedulers.count,
        partitions: f.schedulers.partitions,
        assign_interval_ms: ms(f.schedulers.assign_interval.0),
        lease_ttl_ms: ms(f.lease.ttl.0),
        keepalive_ms: ms(f.lease.keepalive.0),
        pause_hold_ms: ms(f.run.pause_hold.0),
        partition_hold_ms: ms(f.run.partition_hold.0),
        rounds: f.run.rounds,
        modes,
        guarantees,
        violations,
        wall_s: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&report).context("cannot encode the report")?;
    std::fs::write(out.join("report.json"), json).context("cannot write report.json")?;
    std::fs::write(out.join("report.html"), html(&report)).context("cannot write report.html")?;
    print!("{}", summary(&report));
    println!("report: {}", out.join("report.html").display());
    println!("replay: {}", report.command);
    Ok(if violations == 0 { 0 } else { super::EXIT_VIOLATED })
}

fn spawn_schedulers(
    f: &File,
    cluster: &LabCluster,
    fencing: bool,
    election: &str,
    mode: &str,
    events_dir: &Path,
    out: &Path,
) -> Result<Schedulers> {
    let exe = std::env::current_exe().context("cannot find the quorumdb executable")?;
    let mut scheds = Schedulers { children: Vec::new() };
    for i in 0..f.schedulers.count {
        let log_path = out.join("logs").join(format!("scheduler-{mode}-{i}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.args(["lab", "scheduler"])
            .arg("--endpoint")
            .arg(cluster.http_url(i % f.cluster.nodes))
            .args(["--id", &i.to_string(), "--election", election, "--table", "assignments"])
            .args(["--key-prefix", mode, "--partitions", &f.schedulers.partitions.to_string()])
            .args(["--ttl-ms", &f.lease.ttl.0.as_millis().to_string()])
            .args(["--keepalive-ms", &f.lease.keepalive.0.as_millis().to_string()])
            .args(["--interval-ms", &f.schedulers.assign_interval.0.as_millis().to_string()])
            .arg("--events")
            .arg(events_dir.join(format!("scheduler-{i}.jsonl")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if fencing {
            cmd.arg("--fence");
        }
        scheds.children.push(cmd.spawn().context("cannot start a scheduler process")?);
    }
    Ok(scheds)
}

/// Waits until `election` has a leader with a token above `above`; its scheduler and token.
async fn wait_leader(cluster: &LabCluster, election: &str, above: u64) -> Result<(u32, u64)> {
    let deadline = std::time::Instant::now() + Duration::from_millis(LEADER_WAIT_MS);
    let mut last = String::from("no answer");
    while std::time::Instant::now() < deadline {
        for i in cluster.running() {
            match cluster.client(i).lock(election).await {
                Ok(l) => match l.holder {
                    Some(h) if h.token > above => {
                        let who = h.value.parse().with_context(|| format!("leader value {:?}", h.value))?;
                        return Ok((who, h.token));
                    }
                    h => last = format!("holder {h:?}"),
                },
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    bail!("{election}: no leader with a token above {above} within {LEADER_WAIT_MS} ms (last: {last})")
}

fn read_events(dir: &Path, count: usize) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for i in 0..count {
        let path: PathBuf = dir.join(format!("scheduler-{i}.jsonl"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        for (n, line) in text.lines().enumerate() {
            // The last line of a killed process may be cut short; every earlier one is whole.
            match serde_json::from_str::<Event>(line) {
                Ok(e) => events.push(e),
                Err(_) if n + 1 == text.lines().count() => {}
                Err(e) => bail!("{}:{}: {e}", path.display(), n + 1),
            }
        }
    }
    Ok(events)
}

/// Heals, runs anti-entropy, and reads every partition at `r=all`.
async fn final_values(
    cluster: &mut LabCluster,
    f: &File,
    mode: &str,
) -> Result<BTreeMap<String, Vec<String>>> {
    cluster.heal_all().await?;
    cluster.repair_all().await?;
    let opts = ReadOptions { r: Some("all".into()), timeout_ms: Some(5_000), ..ReadOptions::default() };
    let mut state = BTreeMap::new();
    for p in 0..f.schedulers.partitions {
        let key = scheduler::partition_key(mode, p);
        let mut attempt = 0;
        let values = loop {
            attempt += 1;
            match cluster.client(0).get("assignments", &key, &opts).await {
                Ok(r) => break r.values,
                Err(e) if e.code() == Some("not_found") => break Vec::new(),
                Err(e) if attempt >= FINAL_READ_ATTEMPTS_MAX => {
                    return Err(e).with_context(|| format!("final read of assignments/{key} at r=all"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        state.insert(key, values);
    }
    Ok(state)
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.0}"))
}

/// The printed summary.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{}: {} schedulers, {} partitions, lease ttl {:.0} ms (keep-alive every {:.0} ms), pause held {:.0} ms, partition held {:.0} ms, {} round(s)",
        r.scenario, r.schedulers, r.partitions, r.lease_ttl_ms, r.keepalive_ms, r.pause_hold_ms, r.partition_hold_ms, r.rounds
    );
    let _ = writeln!(
        s,
        "{:<9} {:>7} {:>6} {:>6} {:>9} {:>8} {:>9} {:>8} {:>10} {:>11} {:>11}",
        "fencing",
        "assigns",
        "ok",
        "stale",
        "accepted",
        "refused",
        "in final",
        "2-leader",
        "2-lead ms",
        "failover50",
        "failover99"
    );
    for m in &r.modes {
        let _ = writeln!(
            s,
            "{:<9} {:>7} {:>6} {:>6} {:>9} {:>8} {:>9} {:>8} {:>10.0} {:>11} {:>11}",
            if m.fencing { "on" } else { "off" },
            m.assignments,
            m.assignments_ok,
            m.stale_sent,
            m.stale_accepted,
            m.stale_refused,
            m.stale_in_final_state,
            m.two_leader_periods,
            m.two_leader_ms_total,
            opt_ms(m.failover.p50_ms),
            opt_ms(m.failover.p99_ms)
        );
    }
    for m in &r.modes {
        for (kind, f) in &m.failover_by_kind {
            let _ = writeln!(
                s,
                "  fencing {}: {kind}: failover p50 {} ms, p99 {} ms, max {} ms over {} fault(s){}",
                if m.fencing { "on" } else { "off" },
                opt_ms(f.p50_ms),
                opt_ms(f.p99_ms),
                opt_ms(f.max_ms),
                f.samples,
                if f.missing > 0 { format!(", {} without a new leader", f.missing) } else { String::new() }
            );
        }
    }
    for g in &r.guarantees {
        let _ = writeln!(s, "{} {} ({})", if g.held { "held:    " } else { "VIOLATED:" }, g.claim, g.detail);
    }
    s
}

/// A self-contained page: settings, one table per run, every fault.
fn html(r: &Report) -> String {
    use super::html::esc;
    let mut s = super::html::page_head(&r.scenario, &r.description, r.seed, &r.command);
    let _ = write!(
        s,
        "<p>{} nodes in {} zones, {} schedulers, {} partitions, an assignment every {:.0} ms; lease ttl {:.0} ms, keep-alive every {:.0} ms; pause held {:.0} ms, partition held {:.0} ms; {} round(s) per fault kind.</p>",
        r.nodes, r.zones, r.schedulers, r.partitions, r.assign_interval_ms, r.lease_ttl_ms, r.keepalive_ms, r.pause_hold_ms, r.partition_hold_ms, r.rounds
    );
    s.push_str("<h2>Guarantees (fencing on)</h2><ul>");
    for g in &r.guarantees {
        let _ = write!(
            s,
            "<li class=\"{}\">{}: {} ({})</li>",
            if g.held { "" } else { "bad" },
            if g.held { "held" } else { "VIOLATED" },
            esc(&g.claim),
            esc(&g.detail)
        );
    }
    s.push_str("</ul>");
    for m in &r.modes {
        let _ = write!(
            s,
            "<h2>Fencing {}</h2><table><tr><th>assignments</th><th>acknowledged</th><th>stale sent</th><th>stale accepted</th><th>stale refused (fenced)</th><th>stale unknown</th><th>stale in final state</th><th>two-leader periods</th><th>two-leader ms</th><th>failover p50 ms</th><th>p99 ms</th><th>max ms</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            if m.fencing { "on" } else { "off" },
            m.assignments,
            m.assignments_ok,
            m.stale_sent,
            if m.fencing && m.stale_accepted > 0 { "bad" } else { "" },
            m.stale_accepted,
            m.stale_refused,
            m.stale_fenced,
            m.stale_unknown,
            m.stale_in_final_state,
            m.two_leader_periods,
            m.two_leader_ms_total,
            opt_ms(m.failover.p50_ms),
            opt_ms(m.failover.p99_ms),
            opt_ms(m.failover.max_ms)
        );
        s.push_str("<table><tr><th>fault</th><th>round</th><th>old leader (token)</th><th>new leader (token)</th><th>held ms</th><th>failover ms</th><th>stale accepted</th><th>stale refused</th><th>two-leader ms</th></tr>");
        for f in &m.faults {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td></tr>",
                f.kind.name(),
                f.round,
                f.old_leader,
                f.old_token,
                match (f.new_leader, f.new_token) {
                    (Some(l), Some(t)) => format!("{l} ({t})"),
                    _ => "-".into(),
                },
                f.hold_ms,
                opt_ms(f.failover_ms),
                f.stale_accepted,
                f.stale_refused,
                f.two_leader_ms
            );
        }
        s.push_str("</table>");
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(s: u32, token: u64, at: u64) -> Event {
        Event::Leader { scheduler: s, token, at_ns: at }
    }

    fn assign(s: u32, token: u64, value: &str, at: u64, outcome: OpResult) -> Event {
        Event::Assign {
            scheduler: s,
            token,
            partition: 0,
            value: value.into(),
            invoke_ns: at,
            complete_ns: at + 1_000_000,
            outcome,
            error: (outcome == OpResult::Fail).then(|| "fenced".to_owned()),
        }
    }

    /// Proves the checker counts an acknowledged assignment sent after a newer grant as stale,
    /// measures failover from the fault to the new leader's first acknowledged assignment, and
    /// finds the two-leader period; and that it does not count writes sent before the grant.
    #[test]
    fn stale_assignments_failover_and_two_leaders_are_measured() {
        let ms = 1_000_000u64;
        let events = vec![
            leader(0, 5, 0),
            assign(0, 5, "0:5:1", 10 * ms, OpResult::Ok),
            // Sent before the new grant at 2 000 ms: not stale, even though it lands after.
            assign(0, 5, "0:5:2", 1_990 * ms, OpResult::Ok),
            leader(1, 9, 2_000 * ms),
            assign(1, 9, "1:9:3", 2_100 * ms, OpResult::Ok),
            // The zombie comes back: one accepted, one refused.
            assign(0, 5, "0:5:4", 3_000 * ms, OpResult::Ok),
            assign(0, 5, "0:5:5", 3_010 * ms, OpResult::Fail),
        ];
        let faults = vec![FaultRecord {
            kind: FaultKind::Pause,
            round: 1,
            leader: 0,
            token: 5,
            fault_ns: 100 * ms,
            recover_ns: 2_900 * ms,
        }];
        let final_state = BTreeMap::from([("p0".to_owned(), vec!["0:5:4".to_owned()])]);
        let r = analyze(false, "e", &events, &faults, final_state);
        assert_eq!((r.stale_sent, r.stale_accepted, r.stale_refused, r.stale_fenced), (2, 1, 1, 1));
        assert_eq!(r.stale_in_final_state, 1);
        let f = &r.faults[0];
        assert_eq!((f.new_leader, f.new_token), (Some(1), Some(9)));
        assert_eq!(f.failover_ms, Some(2_001.0));
        assert_eq!(f.two_leader_ms, 1.0);
        assert_eq!((r.two_leader_periods, r.failover.p50_ms), (1, Some(2_001.0)));
        assert_eq!(r.failover_by_kind["pause"].samples, 1);
    }

    /// Proves a run where the old leader stops at once has no stale assignment, no two-leader
    /// period, and a fault with no successor counts as missing rather than as a failover time.
    #[test]
    fn a_clean_handover_has_nothing_stale() {
        let ms = 1_000_000u64;
        let events =
            vec![leader(0, 5, 0), assign(0, 5, "0:5:1", 10 * ms, OpResult::Ok), leader(1, 9, 2_000 * ms)];
        let faults = vec![FaultRecord {
            kind: FaultKind::Partition,
            round: 1,
            leader: 0,
            token: 5,
            fault_ns: 100 * ms,
            recover_ns: 2_900 * ms,
        }];
        let r = analyze(true, "e", &events, &faults, BTreeMap::new());
        assert_eq!((r.stale_sent, r.stale_accepted, r.two_leader_periods), (0, 0, 0));
        assert_eq!((r.failover.samples, r.failover.missing), (0, 1));
    }

    /// Proves every embedded coordination scenario loads, `--param` overrides reach their
    /// field, and bad values are refused with the field named.
    #[test]
    fn scenario_files_load_and_refuse_bad_values() {
        for (name, text) in EMBEDDED {
            assert!(is_coordination(text), "{name}");
            load(name, text, &[]).unwrap();
        }
        let text = EMBEDDED[0].1;
        let f = load("x", text, &[("rounds".into(), toml::Value::Integer(1))]).unwrap();
        assert_eq!(f.run.rounds, 1);
        let f = load("x", text, &[("fencing".into(), toml::Value::Boolean(false))]).unwrap();
        assert_eq!(f.run.fencing, vec![false]);
        let err = load("x", text, &[("nope".into(), toml::Value::Integer(1))]).unwrap_err().to_string();
        assert!(err.contains("no such field"), "{err}");
        let err = load("x", text, &[("pause_hold".into(), toml::Value::String("500ms".into()))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("pause_hold must exceed the lease ttl"), "{err}");
        let err = load("x", text, &[("rounds".into(), toml::Value::Integer(0))]).unwrap_err().to_string();
        assert!(err.contains("rounds must be 1"), "{err}");
    }
}
