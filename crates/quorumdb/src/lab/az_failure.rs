//! `az-failure`: a profile store across three availability zones with N = 3, asking the seed's
//! question "R=1,W=3 or R=2,W=2?" with numbers.
//!
//! The cluster has six nodes, two per zone. Zone-aware placement puts each key's three replicas
//! in three different zones, so losing a zone costs every key exactly one replica. Two nodes per
//! zone (rather than one) is what makes that a test: if placement ever put two replicas of a
//! key in one zone, the zone outage would take that key's quorum with it and the `r2w2` writes
//! would fail. It also means many requests reach a node that is not a home replica of the key
//! and must forward, as in a real deployment. Six servers plus the driver are about what two
//! cores carry without the lab measuring CPU queueing instead of the protocol.
//!
//! Each setting (`r1w3`, `r2w2`, `r1w1`, `linearizable`) runs the same workload on its own keys
//! through three phases: `healthy`, `zone-down` (one seeded zone's nodes killed, partitioned or
//! paused; clients stop using them, as clients in a dead zone are dead too) and `recovery` (the
//! zone back). The workload is the profile store's: every key has one owner process that updates
//! it by read-modify-write (write carrying the token of its own read), and every process reads
//! every key. One writer per key keeps the register semantics the linearizability checker
//! judges: with tokens and no concurrent writes there are no siblings, so a non-linearizable
//! verdict is about what reads returned, not about siblings the checker cannot interpret.

use super::cluster::{ClusterSpec, LabCluster};
use super::report::{Conflict, FaultWindow, PhaseWindow, RunOutput, SettingDef};
use super::workload::{self, mix_seed, Control, OpMeta, Recorder, OP_TIMEOUT_MS};
use anyhow::{bail, Context, Result};
use quorumdb_client::{Client, ReadOptions, WriteOptions};
use quorumdb_lab::OpResult;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NODES: usize = 6;
pub const ZONES: usize = 3;
pub const REPLICATION_FACTOR: usize = 3;
pub const TABLE: &str = "profiles";
pub const PHASES: [&str; 3] = ["healthy", "zone-down", "recovery"];
/// Default length of each phase, in seconds: long enough for a few thousand operations per
/// phase and for the failure detector (1 s) to settle inside a phase; short enough that the
/// four settings finish in about two and a half minutes.
pub const PHASE_S_DEFAULT: f64 = 10.0;
/// Default client processes: enough concurrency to produce read/write races, few enough that
/// six servers and the driver share two cores without saturating them.
pub const CLIENTS_DEFAULT: usize = 8;
/// Default keys per setting: few, so reads often follow a recent write of the same key.
pub const KEYS_DEFAULT: usize = 20;
/// Chance that an iteration is the owner's read-modify-write rather than a plain read.
const UPDATE_FRACTION: f64 = 0.4;
/// Most think time between operations of one process, ms. Random think time spreads the
/// processes out so they do not move in lockstep. Its mean (10 ms) is ten times a loopback
/// operation, which keeps two cores from saturating (latencies then show the protocol and the
/// disk, not CPU queueing) and a default run near 100,000 operations, while reads still
/// follow writes of the same key within milliseconds often enough to measure staleness.
const THINK_MS_MAX: u64 = 20;

/// The settings the scenario knows: name, r, w, read consistency.
pub const SETTINGS: [(&str, u32, u32, &str); 4] = [
    ("r1w3", 1, 3, "quorum"),
    ("r2w2", 2, 2, "quorum"),
    ("r1w1", 1, 1, "quorum"),
    ("linearizable", 2, 2, "linearizable"),
];

/// How the zone goes down.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneFault {
    /// SIGKILL the zone's nodes; recovery restarts them with their data.
    Kill,
    /// Cut the zone's nodes off from the others (peer traffic only); recovery heals.
    Partition,
    /// SIGSTOP the zone's nodes; recovery sends SIGCONT.
    Pause,
}

impl ZoneFault {
    pub fn name(self) -> &'static str {
        match self {
            ZoneFault::Kill => "kill",
            ZoneFault::Partition => "partition",
            ZoneFault::Pause => "pause",
        }
    }
}

pub struct AzArgs {
    pub seed: u64,
    pub phase_s: f64,
    pub clients: usize,
    pub keys: usize,
    pub settings: Vec<String>,
    pub zone_fault: ZoneFault,
}

/// What one process needs; cloned into its task.
#[derive(Clone)]
struct Proc {
    rec: Arc<Recorder>,
    ctl: Arc<Control>,
    clients: Arc<Vec<Client>>,
    meta: OpMeta,
    seed: u64,
    keys: Arc<Vec<String>>,
    /// Indices into `keys` this process owns (updates).
    owned: Vec<usize>,
    read: ReadOptions,
    w: String,
}

async fn process(p: Proc) {
    let mut rng = StdRng::seed_from_u64(p.seed);
    while !p.ctl.stopped() && !p.rec.is_full() {
        let live = p.ctl.live();
        if live.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let client = &p.clients[live[rng.random_range(0..live.len())]];
        let phase = p.ctl.phase();
        let issued = if !p.owned.is_empty() && rng.random_bool(UPDATE_FRACTION) {
            let key = &p.keys[p.owned[rng.random_range(0..p.owned.len())]];
            match workload::read(&p.rec, &p.meta, &phase, client, TABLE, key, &p.read).await {
                Some(read) if read.result == OpResult::Ok => {
                    let value = format!("{}-p{}-{}", p.meta.setting, p.meta.process, p.ctl.next_value());
                    let opts = WriteOptions {
                        w: Some(p.w.clone()),
                        context: read.context_out,
                        timeout_ms: Some(OP_TIMEOUT_MS),
                        ..WriteOptions::default()
                    };
                    workload::write(&p.rec, &p.meta, &phase, client, TABLE, key, value, &opts).await.is_some()
                }
                Some(_) => true,
                None => false,
            }
        } else {
            let key = &p.keys[rng.random_range(0..p.keys.len())];
            workload::read(&p.rec, &p.meta, &phase, client, TABLE, key, &p.read).await.is_some()
        };
        if !issued {
            break;
        }
        workload::think(&mut rng, THINK_MS_MAX).await;
    }
}

/// Sleeps until `deadline` (a phase end), unless already past it.
async fn sleep_until(deadline: Instant) {
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
}

pub async fn run(a: &AzArgs, out_dir: &Path) -> Result<RunOutput> {
    let started = Instant::now();
    let settings: Vec<(&str, u32, u32, &str)> = a
        .settings
        .iter()
        .map(|name| {
            SETTINGS.iter().copied().find(|s| s.0 == name).with_context(|| {
                format!("unknown setting {name:?}; known: {}", SETTINGS.map(|s| s.0).join(", "))
            })
        })
        .collect::<Result<_>>()?;
    if a.clients == 0 || a.keys == 0 {
        bail!("--clients and --keys must be at least 1");
    }
    if let Some(dup) = settings.iter().enumerate().find(|(i, s)| settings[..*i].iter().any(|t| t.0 == s.0)) {
        // Each setting owns its keys; running one twice would write the same keys twice.
        bail!("setting {} is listed twice", dup.1 .0);
    }
    let spec =
        ClusterSpec { nodes: NODES, zones: ZONES, replication_factor: REPLICATION_FACTOR, tables: vec![] };
    eprintln!("starting {NODES} nodes in {ZONES} zones (N={REPLICATION_FACTOR})");
    let mut cluster = LabCluster::start(&spec, &out_dir.join("logs")).await?;
    let clients = Arc::new((0..cluster.len()).map(|i| cluster.client(i).clone()).collect::<Vec<_>>());
    let all: Vec<usize> = (0..cluster.len()).collect();
    let rec = Recorder::new();
    let mut master = StdRng::seed_from_u64(a.seed);
    let phase = Duration::from_secs_f64(a.phase_s);
    let mut windows = Vec::new();
    let mut faults = Vec::new();
    let mut defs = Vec::new();
    let mut all_keys = Vec::new();

    for (si, &(name, r, w, consistency)) in settings.iter().enumerate() {
        let zone = format!("z{}", master.random_range(1..=ZONES));
        let victims = cluster.zone_members(&zone);
        let victim_ids: Vec<&str> = victims.iter().map(|&i| cluster.id(i)).collect();
        eprintln!(
            "setting {name}: healthy, then zone {zone} ({}) {} for {:.0} s, then recovery",
            victim_ids.join(", "),
            a.zone_fault.name(),
            a.phase_s
        );
        cluster.wait_all_up().await?;
        let keys: Arc<Vec<String>> = Arc::new((0..a.keys).map(|k| format!("{name}-k{k:02}")).collect());
        all_keys.extend(keys.iter().map(|k| (TABLE.to_owned(), k.clone())));
        let read = if consistency == "linearizable" {
            // The server sets r=quorum itself and refuses an explicit r with this mode.
            ReadOptions {
                consistency: Some("linearizable".into()),
                timeout_ms: Some(OP_TIMEOUT_MS),
                ..ReadOptions::default()
            }
        } else {
            ReadOptions { r: Some(r.to_string()), timeout_ms: Some(OP_TIMEOUT_MS), ..ReadOptions::default() }
        };
        let ctl = Control::new(PHASES[0], all.clone());
        let setting: Arc<str> = Arc::from(name);
        let mut tasks = tokio::task::JoinSet::new();
        for p in 0..a.clients {
            let proc_ = Proc {
                rec: rec.clone(),
                ctl: ctl.clone(),
                clients: clients.clone(),
                meta: OpMeta { process: (si * a.clients + p) as u32, setting: setting.clone() },
                seed: mix_seed(a.seed, si as u64, p as u64),
                keys: keys.clone(),
                owned: (0..a.keys).filter(|k| k % a.clients == p).collect(),
                read: read.clone(),
                w: w.to_string(),
            };
            tasks.spawn(process(proc_));
        }
        let t0 = rec.now_s();
        let deadline = Instant::now() + phase;
        sleep_until(deadline).await;

        // zone-down: clients leave the zone first, so no new request is sent into the fault.
        let others: Vec<usize> = all.iter().copied().filter(|i| !victims.contains(i)).collect();
        ctl.set_live(others);
        ctl.set_phase(PHASES[1]);
        let t1 = rec.now_s();
        let deadline = Instant::now() + phase;
        match a.zone_fault {
            ZoneFault::Kill => victims.iter().try_for_each(|&i| cluster.kill(i))?,
            ZoneFault::Partition => cluster.partition(&victims).await?,
            ZoneFault::Pause => victims.iter().try_for_each(|&i| cluster.pause(i))?,
        }
        sleep_until(deadline).await;

        // recovery: undo the fault; clients use the zone again once its nodes answer.
        ctl.set_phase(PHASES[2]);
        let t2 = rec.now_s();
        let deadline = Instant::now() + phase;
        match a.zone_fault {
            ZoneFault::Kill => cluster.restart(&victims).await?,
            ZoneFault::Partition => cluster.heal_network().await?,
            ZoneFault::Pause => victims.iter().try_for_each(|&i| cluster.resume(i))?,
        }
        let t_back = rec.now_s();
        ctl.set_live(all.clone());
        sleep_until(deadline).await;
        ctl.stop();
        while let Some(joined) = tasks.join_next().await {
            joined.context("a workload process panicked")?;
        }
        let t3 = rec.now_s();
        for (phase, start_s, end_s) in [(PHASES[0], t0, t1), (PHASES[1], t1, t2), (PHASES[2], t2, t3)] {
            windows.push(PhaseWindow { setting: name.into(), phase: phase.into(), start_s, end_s });
        }
        faults.push(FaultWindow {
            label: format!("{name}: zone {zone} {}", a.zone_fault.name()),
            start_s: t1,
            end_s: t_back,
        });
        defs.push(SettingDef {
            name: name.into(),
            table: TABLE.into(),
            r,
            w,
            consistency: consistency.into(),
            replication_factor: REPLICATION_FACTOR as u32,
            conflict: Conflict::Siblings,
            single_writer_per_key: true,
        });
    }

    eprintln!("healing, running anti-entropy on every node, reading every key at r=all");
    let (convergence, final_state) = super::converge_and_read_final(&mut cluster, &all_keys).await?;
    let mut notes = vec![format!(
        "Zone fault: {}. Workload: {} processes, {} keys per setting, one owner per key doing \
         read-modify-write ({:.0}% of iterations), everyone reading every key.",
        a.zone_fault.name(),
        a.clients,
        a.keys,
        UPDATE_FRACTION * 100.0
    )];
    notes.extend(rec.ops_limit_note());
    let members = cluster.members_json();
    drop(cluster);
    Ok(RunOutput {
        scenario: "az-failure".into(),
        seed: a.seed,
        command: String::new(),
        phase_s: a.phase_s,
        cluster: serde_json::json!({
            "nodes": members,
            "replication_factor": REPLICATION_FACTOR,
            "zone_fault": a.zone_fault.name(),
            "clients": a.clients,
            "keys_per_setting": a.keys,
        }),
        settings: defs,
        phases: PHASES.iter().map(|p| p.to_string()).collect(),
        windows,
        faults,
        history: rec.history(),
        final_state,
        convergence,
        lineage: false,
        notes,
        wall_s: started.elapsed().as_secs_f64(),
    })
}
