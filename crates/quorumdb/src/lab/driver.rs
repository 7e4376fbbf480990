//! The scenario driver: runs a loaded [`Scenario`] on a real local cluster and hands the
//! recorded run to the report.
//!
//! Settings run either one after another (each through every phase, with its own processes and
//! keys, on a healthy cluster) or all together. In each phase the driver sets the phase label
//! the processes record, then executes the phase's steps at their offsets from the phase start,
//! and sleeps out the rest of the phase. Faults are tracked as open windows: a fault step opens
//! one, the step that undoes it (or the end of the group of settings) closes it, and the
//! windows are what the report shades. A fault with `clients = "leave"` takes its nodes out of
//! the set the processes may use before it starts and gives them back once it is undone.

use super::cluster::{ClusterSpec, LabCluster};
use super::scenario::{self, Action, PickKind, PickPer, Scenario, SettingsRun, Target};
use super::workload::{Control, Env, Recorder};
use anyhow::{Context, Result};
use quorumdb_lab::report::{Conflict, FaultWindow, PhaseWindow, RunOutput, SettingDef};
use quorumdb_node::config::{ConflictMode, TableConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What a pick was drawn as.
#[derive(Debug, Clone)]
enum Picked {
    Zone(String),
    Node(usize),
}

/// A fault in force.
struct OpenFault {
    action: Action,
    nodes: Vec<usize>,
    /// Whether clients left the nodes for it.
    left: bool,
    label: String,
    start_s: f64,
}

/// The state of the nemesis during a run: which faults are open, and their windows so far.
struct Faults {
    open: Vec<OpenFault>,
    windows: Vec<FaultWindow>,
}

impl Faults {
    /// Closes the open faults `which` selects, at `now_s`.
    fn close(&mut self, now_s: f64, which: impl Fn(&OpenFault) -> bool) {
        let (closed, open): (Vec<OpenFault>, Vec<OpenFault>) = self.open.drain(..).partition(which);
        self.open = open;
        for f in closed {
            self.windows.push(FaultWindow {
                label: f.label,
                kind: f.action.fault_kind(),
                start_s: f.start_s,
                end_s: now_s,
            });
        }
    }

    /// The nodes clients may use: all but those of open faults they left.
    fn live(&self, nodes: usize) -> Vec<usize> {
        (0..nodes).filter(|i| !self.open.iter().any(|f| f.left && f.nodes.contains(i))).collect()
    }
}

pub async fn run(sc: &Scenario, seed: u64, out_dir: &Path) -> Result<RunOutput> {
    let started = Instant::now();
    let n = sc.cluster.nodes;
    // Only tables that differ from the server's defaults go into the node configs, so a
    // scenario's cluster is configured exactly as a hand-written one would be.
    let tables: Vec<TableConfig> = sc
        .tables
        .iter()
        .filter(|t| t.conflict != ConflictMode::Siblings || t.replicas != sc.cluster.replicas)
        .map(|t| TableConfig { name: t.name.clone(), replication_factor: t.replicas, conflict: t.conflict })
        .collect();
    let spec = ClusterSpec {
        nodes: n,
        zones: sc.cluster.zones,
        replication_factor: sc.cluster.replicas,
        tables,
        server_timeouts: sc.cluster.timeouts == scenario::Timeouts::Server,
    };
    let table_names: Vec<&str> = sc.tables.iter().map(|t| t.name.as_str()).collect();
    eprintln!(
        "starting {n} nodes in {} zones (N={}); tables {}",
        sc.cluster.zones,
        sc.cluster.replicas,
        table_names.join(", ")
    );
    let mut cluster = LabCluster::start(&spec, &out_dir.join("logs")).await?;
    let clients = Arc::new((0..n).map(|i| cluster.client(i).clone()).collect::<Vec<_>>());
    wait_for_signing_keys(&clients).await?;
    let rec = Recorder::new();
    // Every choice comes from this one generator, in a fixed order: per-run picks (in name
    // order) first, then per-setting picks before each group. The seed therefore fixes them.
    let mut master = StdRng::seed_from_u64(seed);
    let zones = sc.cluster.zones;
    let mut draw = |kind: PickKind| match kind {
        PickKind::Zone => Picked::Zone(format!("z{}", master.random_range(1..=zones))),
        PickKind::Node => Picked::Node(master.random_range(0..n)),
    };
    let mut run_picks: BTreeMap<String, Picked> = BTreeMap::new();
    for p in sc.picks.iter().filter(|p| p.per == PickPer::Run) {
        run_picks.insert(p.name.clone(), draw(p.kind));
    }

    let indexed: Vec<(usize, &scenario::Setting)> = sc.settings.iter().enumerate().collect();
    let groups: Vec<Vec<(usize, &scenario::Setting)>> = match sc.settings_run {
        SettingsRun::Sequential => indexed.iter().map(|s| vec![*s]).collect(),
        SettingsRun::Together => vec![indexed.clone()],
    };
    let sequential = sc.settings_run == SettingsRun::Sequential;
    let mut windows = Vec::new();
    let mut faults = Faults { open: Vec::new(), windows: Vec::new() };
    let mut all_keys = Vec::new();
    for (gi, group) in groups.iter().enumerate() {
        let mut picks = run_picks.clone();
        for p in sc.picks.iter().filter(|p| p.per == PickPer::Setting) {
            picks.insert(p.name.clone(), draw(p.kind));
        }
        let names: Vec<&str> = group.iter().map(|(_, s)| s.name.as_str()).collect();
        let prefix = if sequential { format!("{}: ", names.join(",")) } else { String::new() };
        let phases: Vec<&str> = sc.phases.iter().map(|p| p.name.as_str()).collect();
        let picked: Vec<String> = picks.iter().map(|(k, v)| format!("{k} = {}", show(&cluster, v))).collect();
        eprintln!("{}phases {} ({})", prefix, phases.join(", "), picked.join(", "));
        cluster.wait_all_up().await?;
        all_keys.extend(sc.workload.keys(group));
        let ctl = Control::new(&sc.phases[0].name, faults.live(n));
        let env = Env { rec: rec.clone(), ctl: ctl.clone(), clients: clients.clone(), seed, group: gi };
        let mut tasks = tokio::task::JoinSet::new();
        sc.workload.spawn(&env, group, &mut tasks);
        for phase in &sc.phases {
            // Clients leave a fault's nodes before the phase label changes, so no operation
            // of the new phase is sent into a fault that starts with it.
            let leaving: Vec<usize> = phase
                .steps
                .iter()
                .filter(|s| s.at.is_zero() && s.clients_leave)
                .flat_map(|s| nodes_of(&cluster, &picks, s.target.as_ref()))
                .collect();
            if !leaving.is_empty() {
                ctl.set_live(faults.live(n).into_iter().filter(|i| !leaving.contains(i)).collect());
            }
            ctl.set_phase(&phase.name);
            let start_s = rec.now_s();
            let phase_start = Instant::now();
            for step in &phase.steps {
                tokio::time::sleep((phase_start + step.at).saturating_duration_since(Instant::now())).await;
                let nodes = match (step.target.as_ref(), step.action) {
                    // Loss without a target is on every node, so recovering any node ends it.
                    (None, Action::Loss(_)) => cluster.running(),
                    (target, _) => nodes_of(&cluster, &picks, target),
                };
                if step.clients_leave {
                    ctl.set_live(faults.live(n).into_iter().filter(|i| !nodes.contains(i)).collect());
                }
                execute(&mut cluster, step.action, &nodes, &mut faults, &rec).await.with_context(|| {
                    format!(
                        "{prefix}phase {}: {} {}",
                        phase.name,
                        step.action.name(),
                        target_text(step.target.as_ref())
                    )
                })?;
                if step.action.is_fault() {
                    let label = match &step.label {
                        Some(l) => format!("{prefix}{l}"),
                        None => format!(
                            "{prefix}{}",
                            fault_label(&cluster, &picks, step.target.as_ref(), step.action)
                        ),
                    };
                    faults.open.push(OpenFault {
                        action: step.action,
                        nodes,
                        left: step.clients_leave,
                        label,
                        start_s: rec.now_s(),
                    });
                }
                ctl.set_live(faults.live(n));
            }
            tokio::time::sleep((phase_start + phase.duration).saturating_duration_since(Instant::now()))
                .await;
            let end_s = rec.now_s();
            for (_, s) in group {
                windows.push(PhaseWindow {
                    setting: s.name.clone(),
                    phase: phase.name.clone(),
                    start_s,
                    end_s,
                });
            }
        }
        ctl.stop();
        while let Some(joined) = tasks.join_next().await {
            joined.context("a workload process panicked")?;
        }
        // Faults still open end with their group; a sequential run starts each setting from a
        // healthy cluster.
        if !faults.open.is_empty() {
            faults.close(rec.now_s(), |_| true);
            if sequential && gi + 1 < groups.len() {
                cluster.heal_all().await?;
            }
        }
    }

    eprintln!("healing, running anti-entropy on every node, reading every key at r=all");
    let (convergence, final_state) = super::converge_and_read_final(&mut cluster, &all_keys).await?;

    let mut described = serde_json::Map::new();
    described.insert("nodes".into(), cluster.members_json());
    described.insert("replication_factor".into(), sc.cluster.replicas.into());
    described.insert("timeouts".into(), sc.cluster.timeouts.name().into());
    for (name, v) in &sc.params {
        described.insert(name.clone(), scenario::param_json(v));
    }
    for (name, v) in &run_picks {
        described.insert(name.clone(), show(&cluster, v).into());
    }
    described.extend(sc.workload.describe());
    let note = scenario::render_note(&sc.note, |name| match (sc.params.get(name), run_picks.get(name)) {
        (Some(v), _) => scenario::param_text(v),
        (None, Some(p)) => show(&cluster, p),
        (None, None) => String::new(),
    });
    let workload_note = sc.workload.note(n, &sc.settings);
    let mut notes = vec![if note.is_empty() { workload_note } else { format!("{note} {workload_note}") }];
    notes.extend(rec.ops_limit_note());
    drop(cluster);

    let settings = sc
        .settings
        .iter()
        .map(|s| {
            let table = sc.table(&s.table);
            SettingDef {
                name: s.name.clone(),
                table: s.table.clone(),
                r: s.r,
                w: s.w,
                consistency: s.consistency.name().into(),
                replication_factor: table.map_or(sc.cluster.replicas, |t| t.replicas) as u32,
                conflict: match table.map(|t| t.conflict) {
                    Some(ConflictMode::Lww) => Conflict::Lww,
                    _ => Conflict::Siblings,
                },
                single_writer_per_key: sc.workload.single_writer_per_key(),
            }
        })
        .collect();
    Ok(RunOutput {
        scenario: sc.name.clone(),
        seed,
        command: String::new(),
        phase_s: sc.phase_duration.as_secs_f64(),
        cluster: serde_json::Value::Object(described),
        settings,
        phases: sc.phases.iter().map(|p| p.name.clone()).collect(),
        baseline: sc.baseline.clone(),
        windows,
        faults: faults.windows,
        history: rec.history(),
        final_state,
        convergence,
        checkers: sc.checkers.clone(),
        notes,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Runs one step's action against `nodes` and closes the fault windows it ends.
async fn execute(
    cluster: &mut LabCluster,
    action: Action,
    nodes: &[usize],
    faults: &mut Faults,
    rec: &Recorder,
) -> Result<()> {
    let touches = |f: &OpenFault| f.nodes.iter().any(|i| nodes.contains(i));
    match action {
        Action::Kill => nodes.iter().try_for_each(|&i| cluster.kill(i))?,
        Action::Pause => nodes.iter().try_for_each(|&i| cluster.pause(i))?,
        Action::Partition => cluster.partition(nodes).await?,
        Action::OneWayPartition => cluster.one_way_partition(nodes).await?,
        Action::Loss(p) => cluster.set_loss(nodes, p).await?,
        Action::Delay(ms) => cluster.set_delay(nodes, ms).await?,
        Action::SlowDisk(ms) => cluster.set_fsync_delay(nodes, ms).await?,
        Action::Skew(ms) => {
            for &i in nodes {
                cluster.set_clock_offset(i, ms).await?;
            }
        }
        Action::Restart => {
            cluster.restart(nodes).await?;
            faults.close(rec.now_s(), |f| f.action == Action::Kill && touches(f));
        }
        Action::Resume => {
            nodes.iter().try_for_each(|&i| cluster.resume(i))?;
            faults.close(rec.now_s(), |f| f.action == Action::Pause && touches(f));
        }
        Action::Heal => {
            cluster.heal_network().await?;
            faults.close(rec.now_s(), |f| f.action.is_network());
        }
        Action::Unskew => {
            for &i in nodes {
                cluster.set_clock_offset(i, 0).await?;
            }
            faults.close(rec.now_s(), |f| matches!(f.action, Action::Skew(_)) && touches(f));
        }
        Action::Recover => {
            let of = |a: fn(&Action) -> bool| -> Vec<usize> {
                let mut v: Vec<usize> = faults
                    .open
                    .iter()
                    .filter(|f| a(&f.action))
                    .flat_map(|f| f.nodes.iter().copied())
                    .filter(|i| nodes.contains(i))
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let killed = of(|a| *a == Action::Kill);
            let paused = of(|a| *a == Action::Pause);
            let skewed = of(|a| matches!(a, Action::Skew(_)));
            let slowed = of(|a| matches!(a, Action::SlowDisk(_)));
            // One restart call for all killed nodes: they start together and are waited for
            // together, as a zone coming back would.
            let cut = faults.open.iter().any(|f| f.action.is_network() && touches(f));
            if !killed.is_empty() {
                cluster.restart(&killed).await?;
            }
            paused.iter().try_for_each(|&i| cluster.resume(i))?;
            // The lab's network faults are not tracked per node pair, so undoing the target's
            // heals the whole network (and closes every network fault's window).
            if cut {
                cluster.heal_network().await?;
            }
            for &i in &skewed {
                cluster.set_clock_offset(i, 0).await?;
            }
            cluster.set_fsync_delay(&slowed, 0).await?;
            faults.close(rec.now_s(), |f| touches(f) || (cut && f.action.is_network()));
        }
    }
    Ok(())
}

/// The nodes a target names, with this group's picks.
fn nodes_of(cluster: &LabCluster, picks: &BTreeMap<String, Picked>, target: Option<&Target>) -> Vec<usize> {
    match target {
        None => Vec::new(),
        Some(Target::Zone(z)) => cluster.zone_members(z),
        Some(Target::Node(i)) => vec![*i],
        Some(Target::Pick(name)) => match picks.get(name) {
            Some(Picked::Zone(z)) => cluster.zone_members(z),
            Some(Picked::Node(i)) => vec![*i],
            None => Vec::new(),
        },
    }
}

fn show(cluster: &LabCluster, p: &Picked) -> String {
    match p {
        Picked::Zone(z) => z.clone(),
        Picked::Node(i) => cluster.id(*i).to_owned(),
    }
}

fn target_text(target: Option<&Target>) -> String {
    match target {
        None => String::new(),
        Some(Target::Pick(p)) => p.clone(),
        Some(Target::Zone(z)) => format!("zone {z}"),
        Some(Target::Node(i)) => format!("node n{}", i + 1),
    }
}

/// A probability as a percentage with at most one decimal: `5%`, `0.5%` (never `5.000000000000001%`).
fn percent(p: f64) -> String {
    format!("{}%", (p * 1000.0).round() / 10.0)
}

/// The default label of a fault window: `zone z1 kill` for a zone, `n2 cut off` or
/// `n2 clock +5000 ms` for a node, as the reports have always named them.
fn fault_label(
    cluster: &LabCluster,
    picks: &BTreeMap<String, Picked>,
    target: Option<&Target>,
    action: Action,
) -> String {
    let picked = match target {
        Some(Target::Pick(name)) => picks.get(name).cloned(),
        Some(Target::Zone(z)) => Some(Picked::Zone(z.clone())),
        Some(Target::Node(i)) => Some(Picked::Node(*i)),
        None => None,
    };
    match (picked, action) {
        (Some(Picked::Zone(z)), Action::Skew(ms)) => format!("zone {z} clock {ms:+} ms"),
        (Some(Picked::Zone(z)), a) => format!("zone {z} {}", a.name()),
        (Some(Picked::Node(i)), Action::Skew(ms)) => format!("{} clock {ms:+} ms", cluster.id(i)),
        (Some(Picked::Node(i)), Action::Partition) => format!("{} cut off", cluster.id(i)),
        (Some(Picked::Node(i)), Action::Kill) => format!("{} killed", cluster.id(i)),
        (Some(Picked::Node(i)), Action::Pause) => format!("{} paused", cluster.id(i)),
        (Some(Picked::Node(i)), Action::OneWayPartition) => format!("{} cannot send", cluster.id(i)),
        (Some(Picked::Node(i)), Action::SlowDisk(ms)) => format!("{} fsync +{ms} ms", cluster.id(i)),
        (Some(Picked::Node(i)), Action::Delay(ms)) => format!("{} messages +{ms} ms", cluster.id(i)),
        (Some(Picked::Node(i)), Action::Loss(p)) => {
            format!("{} loses {} of messages", cluster.id(i), percent(p))
        }
        (None, Action::Loss(p)) => format!("{} message loss", percent(p)),
        (_, a) => a.name().to_owned(),
    }
}

/// How long a fresh cluster may take to agree on its first causality-token key.
const SIGNING_KEY_WAIT_MS: u64 = 30_000;

/// Waits until every node knows the cluster's first signing key (the metadata leader draws it
/// moments after founding). Before that a node hands out unsigned causality and session
/// tokens, which it refuses once it knows a key: a workload started earlier would measure
/// that start-up hiccup instead of the scenario.
async fn wait_for_signing_keys(clients: &[quorumdb_client::Client]) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(SIGNING_KEY_WAIT_MS);
    for c in clients {
        loop {
            match c.auth_status().await {
                Ok(s) if !s.context_keys.is_empty() => break,
                _ if std::time::Instant::now() >= deadline => {
                    anyhow::bail!(
                        "{} did not learn the cluster's signing key within {SIGNING_KEY_WAIT_MS} ms",
                        c.endpoint()
                    )
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}
