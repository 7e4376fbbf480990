//! `rmw-lineage`: the workload of `clock-skew-lww`. Each process is pinned to one node (round
//! robin), so every node coordinates its share of the writes, and each iteration picks one of
//! the settings (tables) and one of a few shared keys and does a read-modify-write: a read,
//! then a write with the read's token of a value naming the values it read
//! (`"<id> saw <id>,<id>"`), as a cart or a counter would merge them.
//!
//! That lineage is what lets the report count *updates* lost (`quorumdb_lab::report`): the
//! lost-write checker cannot see what LWW discards, because LWW keeps the losing write's
//! version in the item's context. Processes stay pinned through faults on purpose: the
//! processes of a cut-off node keep working against it, as a latency-minded deployment's
//! clients would.

use super::scenario::{Dur, Setting};
use super::workload::{self, mix_seed, Control, Env, OpMeta, Recorder, Workload};
use quorumdb_client::{Client, ReadOptions, WriteOptions};
use quorumdb_lab::report::parse_lineage;
use quorumdb_lab::OpResult;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::sync::Arc;
use tokio::task::JoinSet;

/// `[workload]` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Processes, pinned round robin to the nodes.
    clients: usize,
    /// Keys per setting (table), shared by every process.
    keys: usize,
    /// Most think time between read-modify-writes of one process.
    think_max: Dur,
}

struct RmwLineage(Params);

pub fn build(table: toml::Table) -> Result<Box<dyn Workload>, String> {
    let p: Params = workload::params(table)?;
    if p.clients == 0 || p.keys == 0 {
        return Err(format!(
            "clients and keys must be at least 1 (got clients = {}, keys = {})",
            p.clients, p.keys
        ));
    }
    Ok(Box::new(RmwLineage(p)))
}

/// Number words for the note, as the report has always worded it ("pinned two per node").
const WORDS: [&str; 10] = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];

impl Workload for RmwLineage {
    fn validate(&self, settings: &[Setting]) -> Result<(), String> {
        // Keys are named k0, k1, ... in each setting's table; two settings on one table would
        // share keys, and the report attributes every key to exactly one setting.
        for (i, s) in settings.iter().enumerate() {
            if let Some(t) = settings[..i].iter().find(|t| t.table == s.table) {
                return Err(format!(
                    "settings {:?} and {:?} use the same table {:?}; each needs its own table",
                    t.name, s.name, s.table
                ));
            }
        }
        Ok(())
    }

    fn keys(&self, settings: &[(usize, &Setting)]) -> Vec<(String, String)> {
        settings
            .iter()
            .flat_map(|(_, s)| (0..self.0.keys).map(|k| (s.table.clone(), format!("k{k}"))))
            .collect()
    }

    fn spawn(&self, env: &Env, settings: &[(usize, &Setting)], tasks: &mut JoinSet<()>) {
        let targets: Arc<Vec<Target>> = Arc::new(
            settings
                .iter()
                .map(|(_, s)| Target {
                    table: s.table.clone(),
                    meta_setting: Arc::from(s.name.as_str()),
                    read: s.read_options(),
                    w: s.w.to_string(),
                    timeout_ms: s.timeout_ms,
                })
                .collect(),
        );
        for p in 0..self.0.clients {
            let process = (env.group * self.0.clients + p) as u32;
            tasks.spawn(run(Proc {
                rec: env.rec.clone(),
                ctl: env.ctl.clone(),
                client: env.clients[p % env.clients.len()].clone(),
                process,
                seed: mix_seed(env.seed, env.group as u64, p as u64),
                keys: self.0.keys,
                targets: targets.clone(),
                think_ms_max: self.0.think_max.0.as_millis() as u64,
            }));
        }
    }

    fn single_writer_per_key(&self) -> bool {
        false
    }

    fn lineage(&self) -> bool {
        true
    }

    fn describe(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("clients".into(), self.0.clients.into());
        m.insert("keys_per_table".into(), self.0.keys.into());
        m
    }

    fn note(&self, nodes: usize, settings: &[Setting]) -> String {
        let per = self.0.clients / nodes.max(1);
        let pinned = if self.0.clients.is_multiple_of(nodes.max(1)) && per < WORDS.len() {
            format!("pinned {} per node", WORDS[per])
        } else {
            "pinned round robin to the nodes".to_owned()
        };
        let rw = match settings.first() {
            Some(f) if settings.iter().all(|s| s.r == f.r && s.w == f.w) => {
                format!("read (r={}) then write (w={})", f.r, f.w)
            }
            _ => "read then write".to_owned(),
        };
        format!(
            "Workload: {} processes {pinned}, {} keys per table, {rw} with the read's token.",
            self.0.clients, self.0.keys
        )
    }
}

/// One setting as a process uses it.
struct Target {
    table: String,
    meta_setting: Arc<str>,
    read: ReadOptions,
    w: String,
    /// `timeout_ms` of every write (`None`: the server's default).
    timeout_ms: Option<u64>,
}

struct Proc {
    rec: Arc<Recorder>,
    ctl: Arc<Control>,
    client: Client,
    process: u32,
    seed: u64,
    keys: usize,
    targets: Arc<Vec<Target>>,
    think_ms_max: u64,
}

async fn run(p: Proc) {
    let mut rng = StdRng::seed_from_u64(p.seed);
    let metas: Vec<OpMeta> =
        p.targets.iter().map(|t| OpMeta { process: p.process, setting: t.meta_setting.clone() }).collect();
    while !p.ctl.stopped() && !p.rec.is_full() {
        let t = rng.random_range(0..p.targets.len());
        let (target, meta) = (&p.targets[t], &metas[t]);
        let table = target.table.as_str();
        let key = format!("k{}", rng.random_range(0..p.keys));
        let phase = p.ctl.phase();
        let Some(read) = workload::read(&p.rec, meta, &phase, &p.client, table, &key, &target.read).await
        else {
            break;
        };
        if read.result == OpResult::Ok {
            let saw: Vec<&str> = read.values.iter().map(|v| parse_lineage(v).0).collect();
            let value = format!("p{}.{} saw {}", p.process, p.ctl.next_value(), saw.join(","));
            let opts = WriteOptions {
                w: Some(target.w.clone()),
                context: read.context_out.clone(),
                timeout_ms: target.timeout_ms,
                ..WriteOptions::default()
            };
            if workload::write(&p.rec, meta, &phase, &p.client, table, &key, value, &opts).await.is_none() {
                break;
            }
        }
        workload::think(&mut rng, p.think_ms_max).await;
    }
}
