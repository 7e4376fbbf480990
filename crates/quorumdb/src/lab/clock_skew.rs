//! `clock-skew-lww`: how many acknowledged updates last-writer-wins throws away when one
//! node's clock runs ahead, next to the default siblings mode under the same workload.
//!
//! Three nodes in three zones, N = 3, so every node is a home replica of every key and
//! coordinates the writes sent to it. Two tables: `lww` (`conflict = "lww"`, hybrid-logical-
//! clock timestamps from the coordinating replica's skewable wall clock) and `siblings` (the
//! default). Each process is pinned to one node (two per node), so the skewed node coordinates
//! a third of the writes; each iteration picks a table and one of a few shared keys and does a
//! read-modify-write: read at `r=1` from its own node, then write at `w=2` with the read's token
//! a value naming the values it read (`"<id> saw <id>,<id>"`), as a cart or a counter would
//! merge them. The lineage is what lets the report count *updates* lost (see `report.rs`).
//!
//! Reads are `r=1` so that the processes of a node cut off from the others keep working (they
//! read their own replica, as a latency-minded LWW deployment does); their writes then fail the
//! quorum (`info`) but are applied on that node. Phases:
//!
//! - `healthy`: no faults: the baseline, where LWW already discards racing updates;
//! - `partition`: the seeded node is cut off for the first two thirds of the phase, then healed;
//! - `skew`: that node's clock runs ahead (default +5 s), network healthy;
//! - `skew-partition`: both: skewed and cut off for two thirds, then healed.
//!
//! `partition` comes before `skew` on purpose: the HLC of every node that has seen the skewed
//! node's timestamps stays ahead of its wall clock for up to the skew afterwards, which would
//! leak skew into an unskewed phase.

use super::cluster::{ClusterSpec, LabCluster};
use super::report::{parse_lineage, Conflict, FaultWindow, PhaseWindow, RunOutput, SettingDef};
use super::workload::{self, mix_seed, Control, OpMeta, Recorder, OP_TIMEOUT_MS};
use anyhow::{bail, Context, Result};
use quorumdb_client::{Client, ReadOptions, WriteOptions};
use quorumdb_lab::OpResult;
use quorumdb_node::config::{ConflictMode, TableConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NODES: usize = 3;
pub const REPLICATION_FACTOR: usize = 3;
pub const PHASES: [&str; 4] = ["healthy", "partition", "skew", "skew-partition"];
/// The two table modes, which are also the report's settings.
pub const TABLES: [(&str, Conflict); 2] = [("lww", Conflict::Lww), ("siblings", Conflict::Siblings)];
/// Default length of each phase, seconds (four phases: about 40 s of workload).
pub const PHASE_S_DEFAULT: f64 = 10.0;
/// Default processes: two per node.
pub const CLIENTS_DEFAULT: usize = 6;
/// Default keys per table: few, so that read-modify-writes of different processes race.
pub const KEYS_DEFAULT: usize = 4;
/// Default clock offset of the skewed node, ms: "seconds", as NTP failures and VM migrations
/// produce, and far above the few ms a write takes to replicate.
pub const SKEW_MS_DEFAULT: i64 = 5_000;
/// Share of a partition phase during which the node is cut off; the rest is healed, so the
/// two sides' versions meet (and LWW picks a winner) inside the phase.
const PARTITION_SHARE: f64 = 2.0 / 3.0;
/// Most think time between read-modify-writes of one process, ms (mean 5 ms, as in
/// `az-failure`): short against the write latency, so updates of different processes race.
const THINK_MS_MAX: u64 = 10;

pub struct SkewArgs {
    pub seed: u64,
    pub phase_s: f64,
    pub clients: usize,
    pub keys: usize,
    pub skew_ms: i64,
}

#[derive(Clone)]
struct Proc {
    rec: Arc<Recorder>,
    ctl: Arc<Control>,
    client: Client,
    process: u32,
    seed: u64,
    keys: usize,
}

async fn process(p: Proc) {
    let mut rng = StdRng::seed_from_u64(p.seed);
    let metas: Vec<OpMeta> =
        TABLES.iter().map(|(t, _)| OpMeta { process: p.process, setting: Arc::from(*t) }).collect();
    let read_opts =
        ReadOptions { r: Some("1".into()), timeout_ms: Some(OP_TIMEOUT_MS), ..ReadOptions::default() };
    while !p.ctl.stopped() && !p.rec.is_full() {
        let t = rng.random_range(0..TABLES.len());
        let (table, meta) = (TABLES[t].0, &metas[t]);
        let key = format!("k{}", rng.random_range(0..p.keys));
        let phase = p.ctl.phase();
        let Some(read) = workload::read(&p.rec, meta, &phase, &p.client, table, &key, &read_opts).await
        else {
            break;
        };
        if read.result == OpResult::Ok {
            let saw: Vec<&str> = read.values.iter().map(|v| parse_lineage(v).0).collect();
            let value = format!("p{}.{} saw {}", p.process, p.ctl.next_value(), saw.join(","));
            let opts = WriteOptions {
                w: Some("2".into()),
                context: read.context_out.clone(),
                timeout_ms: Some(OP_TIMEOUT_MS),
                ..WriteOptions::default()
            };
            if workload::write(&p.rec, meta, &phase, &p.client, table, &key, value, &opts).await.is_none() {
                break;
            }
        }
        workload::think(&mut rng, THINK_MS_MAX).await;
    }
}

pub async fn run(a: &SkewArgs, out_dir: &Path) -> Result<RunOutput> {
    let started = Instant::now();
    if a.clients == 0 || a.keys == 0 {
        bail!("--clients and --keys must be at least 1");
    }
    let tables = vec![TableConfig {
        name: "lww".into(),
        replication_factor: REPLICATION_FACTOR,
        conflict: ConflictMode::Lww,
    }];
    let spec = ClusterSpec { nodes: NODES, zones: NODES, replication_factor: REPLICATION_FACTOR, tables };
    eprintln!(
        "starting {NODES} nodes in {NODES} zones (N={REPLICATION_FACTOR}); table lww and table siblings"
    );
    let mut cluster = LabCluster::start(&spec, &out_dir.join("logs")).await?;
    let mut master = StdRng::seed_from_u64(a.seed);
    let skewed = master.random_range(0..NODES);
    let skewed_id = cluster.id(skewed).to_owned();
    let rec = Recorder::new();
    let all: Vec<usize> = (0..NODES).collect();
    let ctl = Control::new(PHASES[0], all.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..a.clients {
        tasks.spawn(process(Proc {
            rec: rec.clone(),
            ctl: ctl.clone(),
            client: cluster.client(p % NODES).clone(),
            process: p as u32,
            seed: mix_seed(a.seed, 0, p as u64),
            keys: a.keys,
        }));
    }
    let phase = Duration::from_secs_f64(a.phase_s);
    let cut = Duration::from_secs_f64(a.phase_s * PARTITION_SHARE);
    let mut windows = Vec::new();
    let mut faults = Vec::new();
    let mut skew_start = None;
    for (i, &name) in PHASES.iter().enumerate() {
        ctl.set_phase(name);
        let start_s = rec.now_s();
        let phase_start = Instant::now();
        eprintln!("phase {name} ({:.0} s)", a.phase_s);
        if name.starts_with("skew") && skew_start.is_none() {
            cluster.set_clock_offset(skewed, a.skew_ms).await?;
            skew_start = Some(rec.now_s());
        }
        if name.ends_with("partition") {
            cluster.partition(&[skewed]).await?;
            let cut_start = rec.now_s();
            tokio::time::sleep(cut.saturating_sub(phase_start.elapsed())).await;
            cluster.heal_network().await?;
            faults.push(FaultWindow {
                label: format!("{skewed_id} cut off"),
                start_s: cut_start,
                end_s: rec.now_s(),
            });
        }
        tokio::time::sleep(phase.saturating_sub(phase_start.elapsed())).await;
        let end_s = rec.now_s();
        for (table, _) in TABLES {
            windows.push(PhaseWindow { setting: table.into(), phase: name.into(), start_s, end_s });
        }
        if i + 1 == PHASES.len() {
            ctl.stop();
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a workload process panicked")?;
    }
    if let Some(start_s) = skew_start {
        faults.push(FaultWindow {
            label: format!("{skewed_id} clock {:+} ms", a.skew_ms),
            start_s,
            end_s: rec.now_s(),
        });
    }

    eprintln!("healing, running anti-entropy on every node, reading every key at r=all");
    let keys: Vec<(String, String)> =
        TABLES.iter().flat_map(|(t, _)| (0..a.keys).map(move |k| (t.to_string(), format!("k{k}")))).collect();
    let (convergence, final_state) = super::converge_and_read_final(&mut cluster, &keys).await?;
    let members = cluster.members_json();
    drop(cluster);
    let mut notes = vec![format!(
        "Skewed node: {skewed_id} ({:+} ms in the skew phases). Workload: {} processes pinned two \
         per node, {} keys per table, read (r=1) then write (w=2) with the read's token.",
        a.skew_ms, a.clients, a.keys
    )];
    notes.extend(rec.ops_limit_note());
    Ok(RunOutput {
        scenario: "clock-skew-lww".into(),
        seed: a.seed,
        command: String::new(),
        phase_s: a.phase_s,
        cluster: serde_json::json!({
            "nodes": members,
            "replication_factor": REPLICATION_FACTOR,
            "skewed_node": skewed_id,
            "skew_ms": a.skew_ms,
            "clients": a.clients,
            "keys_per_table": a.keys,
        }),
        settings: TABLES
            .iter()
            .map(|&(name, conflict)| SettingDef {
                name: name.into(),
                table: name.into(),
                r: 1,
                w: 2,
                consistency: "quorum".into(),
                replication_factor: REPLICATION_FACTOR as u32,
                conflict,
                single_writer_per_key: false,
            })
            .collect(),
        phases: PHASES.iter().map(|p| p.to_string()).collect(),
        windows,
        faults,
        history: rec.history(),
        final_state,
        convergence,
        lineage: true,
        notes,
        wall_s: started.elapsed().as_secs_f64(),
    })
}
