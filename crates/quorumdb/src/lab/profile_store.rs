//! `profile-store`: the workload of `az-failure`. Every key has one owner process that updates it
//! by read-modify-write (a read, then a write carrying that read's token); every process reads
//! every key.
//!
//! One writer per key keeps the register semantics the linearizability checker judges: with
//! tokens and no concurrent writes there are no siblings unless the store creates them, so a
//! non-linearizable verdict is about what reads returned, not about siblings the checker cannot
//! interpret. Each setting gets its own processes and its own keys, so settings run together do
//! not disturb each other's registers either.

use super::scenario::{Dur, Setting};
use super::workload::{self, mix_seed, Control, Env, OpMeta, Recorder, Workload};
use quorumdb_client::{Client, ReadOptions, Session, WriteOptions};
use quorumdb_lab::OpResult;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// `[workload]` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// Processes per setting.
    clients: usize,
    /// Keys per setting.
    keys: usize,
    /// Chance that an iteration is the owner's read-modify-write rather than a plain read.
    update_fraction: f64,
    /// Most think time between operations of one process; random think time spreads the
    /// processes out so they do not move in lockstep.
    think_max: Dur,
}

struct ProfileStore(Params);

pub fn build(table: toml::Table) -> Result<Box<dyn Workload>, String> {
    let p: Params = workload::params(table)?;
    if p.clients == 0 || p.keys == 0 {
        return Err(format!(
            "clients and keys must be at least 1 (got clients = {}, keys = {})",
            p.clients, p.keys
        ));
    }
    if !(0.0..=1.0).contains(&p.update_fraction) {
        return Err(format!("update_fraction must be in 0..=1, got {}", p.update_fraction));
    }
    Ok(Box::new(ProfileStore(p)))
}

impl ProfileStore {
    fn key(setting: &str, k: usize) -> String {
        format!("{setting}-k{k:02}")
    }
}

impl Workload for ProfileStore {
    fn validate(&self, _settings: &[Setting]) -> Result<(), String> {
        Ok(())
    }

    fn keys(&self, settings: &[(usize, &Setting)]) -> Vec<(String, String)> {
        settings
            .iter()
            .flat_map(|(_, s)| (0..self.0.keys).map(|k| (s.table.clone(), Self::key(&s.name, k))))
            .collect()
    }

    fn spawn(&self, env: &Env, settings: &[(usize, &Setting)], tasks: &mut JoinSet<()>) {
        let clients = self.0.clients;
        for &(si, s) in settings {
            let keys: Arc<Vec<String>> = Arc::new((0..self.0.keys).map(|k| Self::key(&s.name, k)).collect());
            let setting: Arc<str> = Arc::from(s.name.as_str());
            for p in 0..clients {
                tasks.spawn(process(Proc {
                    rec: env.rec.clone(),
                    ctl: env.ctl.clone(),
                    clients: env.clients.clone(),
                    meta: OpMeta { process: (si * clients + p) as u32, setting: setting.clone() },
                    seed: mix_seed(env.seed, si as u64, p as u64),
                    table: s.table.clone(),
                    keys: keys.clone(),
                    owned: (0..self.0.keys).filter(|k| k % clients == p).collect(),
                    read: s.read_options(),
                    session: s.session.then(Session::new),
                    w: s.w.to_string(),
                    timeout_ms: s.timeout_ms,
                    update_fraction: self.0.update_fraction,
                    think_ms_max: self.0.think_max.0.as_millis() as u64,
                }));
            }
        }
    }

    fn single_writer_per_key(&self) -> bool {
        true
    }

    fn lineage(&self) -> bool {
        false
    }

    fn describe(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("clients".into(), self.0.clients.into());
        m.insert("keys_per_setting".into(), self.0.keys.into());
        m
    }

    fn note(&self, _nodes: usize, _settings: &[Setting]) -> String {
        format!(
            "Workload: {} processes, {} keys per setting, one owner per key doing read-modify-write \
             ({:.0}% of iterations), everyone reading every key.",
            self.0.clients,
            self.0.keys,
            self.0.update_fraction * 100.0
        )
    }
}

/// What one process needs; moved into its task.
struct Proc {
    rec: Arc<Recorder>,
    ctl: Arc<Control>,
    clients: Arc<Vec<Client>>,
    meta: OpMeta,
    seed: u64,
    table: String,
    keys: Arc<Vec<String>>,
    /// Indices into `keys` this process owns (updates).
    owned: Vec<usize>,
    read: ReadOptions,
    /// The process's session, when its setting asks for one.
    session: Option<Session>,
    w: String,
    /// `timeout_ms` of every write (`None`: the server's default).
    timeout_ms: Option<u64>,
    update_fraction: f64,
    think_ms_max: u64,
}

async fn process(p: Proc) {
    let mut rng = StdRng::seed_from_u64(p.seed);
    let table = p.table.as_str();
    while !p.ctl.stopped() && !p.rec.is_full() {
        let live = p.ctl.live();
        if live.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let mut client = p.clients[live[rng.random_range(0..live.len())]].clone();
        if let Some(session) = &p.session {
            client = client.with_session(session.clone());
        }
        let client = &client;
        let phase = p.ctl.phase();
        let issued = if !p.owned.is_empty() && rng.random_bool(p.update_fraction) {
            let key = &p.keys[p.owned[rng.random_range(0..p.owned.len())]];
            match workload::read(&p.rec, &p.meta, &phase, client, table, key, &p.read).await {
                Some(read) if read.result == OpResult::Ok => {
                    let value = format!("{}-p{}-{}", p.meta.setting, p.meta.process, p.ctl.next_value());
                    let opts = WriteOptions {
                        w: Some(p.w.clone()),
                        context: read.context_out,
                        timeout_ms: p.timeout_ms,
                        ..WriteOptions::default()
                    };
                    workload::write(&p.rec, &p.meta, &phase, client, table, key, value, &opts).await.is_some()
                }
                Some(_) => true,
                None => false,
            }
        } else {
            let key = &p.keys[rng.random_range(0..p.keys.len())];
            workload::read(&p.rec, &p.meta, &phase, client, table, key, &p.read).await.is_some()
        };
        if !issued {
            break;
        }
        workload::think(&mut rng, p.think_ms_max).await;
    }
}
