//! Workloads, and recording their client operations into a [`History`].
//!
//! A workload is Rust code behind the [`Workload`] trait, selected by name from a scenario
//! file ([`WORKLOADS`]): the file says which workload and with which parameters, the workload
//! decides what each process does. Code rather than data because what makes a workload useful to
//! a checker (one writer per key, values that name what they saw) is an invariant of its loop,
//! not something a table of operation weights could promise.
//!
//! A *process* is one logical client (a tokio task) that runs one operation at a time, as
//! Jepsen's processes do; the checkers rely on that. Each records, per operation, the invoke and
//! completion instants on one monotonic clock, the outcome and the causality tokens, exactly in
//! the form `quorumdb_lab::history` documents. Outcomes follow the README's rules:
//!
//! | client saw | recorded | why |
//! |---|---|---|
//! | 2xx (or 404 `not_found` on a read) | `ok` | the server answered |
//! | 4xx | `fail` | refused before any replica applied it |
//! | 5xx (503 quorum not reached, 504 timeout, ...) | `info` | may have been applied on some replicas |
//! | connection refused | `fail` | the request never left the client |
//! | any other transport error, client timeout | `info` | the request may have arrived |

use super::scenario::Setting;
use quorumdb_client::{Client, ClientError, ReadOptions, WriteOptions};
use quorumdb_lab::{History, Op, OpKind, OpResult};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Most operations one lab run records. The default runs record a few tens of thousands (about
/// 300 bytes each in `history.jsonl`); this bound, a fifth of
/// `quorumdb_lab::history::HISTORY_OPS_LEN_MAX`, keeps a long `--duration` from exhausting
/// memory or the checkers' budgets. Processes stop issuing operations once it is reached, and
/// the report says so.
pub const OPS_LEN_MAX: usize = 400_000;

/// Server-side quorum timeout sent with every workload request, unless the scenario runs with
/// the server's timeouts (`[cluster] timeouts = "server"`). One second is hundreds of times a
/// healthy loopback round trip, so only faults hit it.
pub const OP_TIMEOUT_MS: u64 = 1_000;

/// What a workload's processes get from the driver.
pub struct Env {
    pub rec: Arc<Recorder>,
    pub ctl: Arc<Control>,
    /// One client per node, index-aligned with the cluster's nodes.
    pub clients: Arc<Vec<Client>>,
    /// The run's seed; derive per-process seeds with [`mix_seed`].
    pub seed: u64,
    /// Which group of settings this is (0 when all settings run together): keeps process ids
    /// and seeds distinct across the groups of a sequential run.
    pub group: usize,
}

/// A workload: the processes of one group of settings.
pub trait Workload: Send + Sync {
    /// Checks the settings the workload will run; the message says what is wrong.
    fn validate(&self, settings: &[Setting]) -> Result<(), String>;
    /// The `(table, key)` pairs the processes for `settings` can touch: every one is read at
    /// `r=all` at the end of the run for the lost-write checker.
    fn keys(&self, settings: &[(usize, &Setting)]) -> Vec<(String, String)>;
    /// Spawns the processes for `settings` (each with its index in the run's settings) into
    /// `tasks`; they run until `env.ctl` says stop.
    fn spawn(&self, env: &Env, settings: &[(usize, &Setting)], tasks: &mut JoinSet<()>);
    /// Whether no two writes of a key can be concurrent (the linearizability claim needs it).
    fn single_writer_per_key(&self) -> bool;
    /// Whether written values name the values their read saw (the lineage checker needs it).
    fn lineage(&self) -> bool;
    /// The workload's entries in the report's `cluster` object.
    fn describe(&self) -> serde_json::Map<String, serde_json::Value>;
    /// One sentence for the report's notes.
    fn note(&self, nodes: usize, settings: &[Setting]) -> String;
}

/// A workload a scenario can name.
pub struct WorkloadDef {
    pub name: &'static str,
    /// Builds the workload from the scenario's `[workload]` parameters (without `name`).
    pub build: fn(toml::Table) -> Result<Box<dyn Workload>, String>,
}

/// Every workload, by the name scenario files use.
pub const WORKLOADS: [WorkloadDef; 2] = [
    WorkloadDef { name: "profile-store", build: super::profile_store::build },
    WorkloadDef { name: "rmw-lineage", build: super::rmw_lineage::build },
];

/// Deserializes a workload's parameters, naming the field at fault.
pub fn params<T: serde::de::DeserializeOwned>(table: toml::Table) -> Result<T, String> {
    T::deserialize(toml::Value::Table(table)).map_err(|e| e.to_string().trim_end().to_owned())
}

/// The shared monotonic clock and the recorded operations of one run.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    /// Operations issued so far. An operation takes its slot *before* it is sent, so every
    /// operation that reached the cluster is in the history: one missing would make its value
    /// look like it came from nowhere to the lost-write checker.
    issued: AtomicUsize,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder { start: Instant::now(), ops: Mutex::new(Vec::new()), issued: AtomicUsize::new(0) })
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Seconds since the run started (for phase and fault windows in the report).
    pub fn now_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Whether [`OPS_LEN_MAX`] operations were issued; processes then stop.
    pub fn is_full(&self) -> bool {
        self.issued.load(Ordering::Acquire) >= OPS_LEN_MAX
    }

    /// The report note every run adds when it hit [`OPS_LEN_MAX`]; `None` otherwise.
    /// Kept here, next to the limit, so every scenario words it the same way.
    pub fn ops_limit_note(&self) -> Option<String> {
        self.is_full()
            .then(|| format!("the run hit the {OPS_LEN_MAX} ops limit; later operations were not issued"))
    }

    /// Takes a slot for one operation; false once [`OPS_LEN_MAX`] were taken.
    fn reserve(&self) -> bool {
        self.issued.fetch_add(1, Ordering::AcqRel) < OPS_LEN_MAX
    }

    fn record(&self, op: Op) {
        // A poisoned lock means a process panicked mid-push; the vector itself is intact.
        match self.ops.lock() {
            Ok(mut g) => g.push(op),
            Err(p) => p.into_inner().push(op),
        }
    }

    /// The history recorded so far.
    pub fn history(&self) -> History {
        let ops = match self.ops.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        History::new(ops)
    }
}

/// What the driver tells the running processes: the phase label new operations get, which
/// nodes they may send requests to, and when to stop.
pub struct Control {
    phase: RwLock<Arc<str>>,
    /// Indices of nodes clients may use. A client in a dead zone is dead too, so the driver
    /// removes a node here before it kills, pauses or isolates it.
    live: RwLock<Arc<Vec<usize>>>,
    stop: AtomicBool,
    /// Values must be unique per key; one counter for the whole run makes them unique, period.
    next_value: AtomicU64,
}

impl Control {
    pub fn new(phase: &str, live: Vec<usize>) -> Arc<Control> {
        Arc::new(Control {
            phase: RwLock::new(Arc::from(phase)),
            live: RwLock::new(Arc::new(live)),
            stop: AtomicBool::new(false),
            next_value: AtomicU64::new(1),
        })
    }

    pub fn phase(&self) -> Arc<str> {
        match self.phase.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_phase(&self, phase: &str) {
        match self.phase.write() {
            Ok(mut g) => *g = Arc::from(phase),
            Err(p) => *p.into_inner() = Arc::from(phase),
        }
    }

    pub fn live(&self) -> Arc<Vec<usize>> {
        match self.live.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set_live(&self, live: Vec<usize>) {
        match self.live.write() {
            Ok(mut g) => *g = Arc::new(live),
            Err(p) => *p.into_inner() = Arc::new(live),
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// A run-wide unique number for a written value.
    pub fn next_value(&self) -> u64 {
        self.next_value.fetch_add(1, Ordering::Relaxed)
    }
}

/// Labels and identity shared by the operations of one process.
#[derive(Clone)]
pub struct OpMeta {
    pub process: u32,
    pub setting: Arc<str>,
}

/// How a failed call is recorded, and the one-line error kept in the history.
fn classify(err: &ClientError) -> (OpResult, String) {
    let result = result_of(err);
    let text = match err.code() {
        Some(code) => format!("{code}: {err}"),
        None => err.to_string(),
    };
    (result, text)
}

/// How a failed call is recorded: the module's outcome rules.
pub fn result_of(err: &ClientError) -> OpResult {
    match err {
        ClientError::Api { status, .. } if (400..500).contains(status) => OpResult::Fail,
        ClientError::Api { .. } => OpResult::Info,
        // `Client` renders connect failures as "connection failed: ...": the request was
        // never sent, so it cannot have been applied.
        ClientError::Transport { detail, .. } if detail.starts_with("connection failed") => OpResult::Fail,
        ClientError::Transport { .. } | ClientError::Decode(_) => OpResult::Info,
        ClientError::BadEndpoint(_) => OpResult::Fail,
    }
}

fn blank_op(meta: &OpMeta, phase: &str, kind: OpKind, table: &str, key: &str) -> Op {
    Op {
        process: meta.process,
        kind,
        table: table.to_owned(),
        key: key.to_owned(),
        value: None,
        values: Vec::new(),
        invoke_ns: 0,
        complete_ns: 0,
        result: OpResult::Info,
        context_in: None,
        context_out: None,
        setting: Some(meta.setting.to_string()),
        phase: Some(phase.to_owned()),
        error: None,
    }
}

/// The end [`read`] and [`write`] share once the call has returned: marks `op` ok (letting
/// `on_ok` copy what the answer carries) or classifies the error, records it and returns it.
/// One function, so both kinds of operation follow the module's outcome rules alike.
fn settle<T>(
    rec: &Recorder,
    mut op: Op,
    answer: Result<T, ClientError>,
    on_ok: impl FnOnce(&mut Op, T),
) -> Op {
    match answer {
        Ok(r) => {
            op.result = OpResult::Ok;
            on_ok(&mut op, r);
        }
        Err(e) => {
            let (result, text) = classify(&e);
            op.result = result;
            op.error = Some(text);
        }
    }
    rec.record(op.clone());
    op
}

/// Reads `table`/`key` through `client`, records the operation and returns it; `None` when
/// the run's operation budget is spent (nothing was sent).
pub async fn read(
    rec: &Recorder,
    meta: &OpMeta,
    phase: &str,
    client: &Client,
    table: &str,
    key: &str,
    opts: &ReadOptions,
) -> Option<Op> {
    if !rec.reserve() {
        return None;
    }
    let mut op = blank_op(meta, phase, OpKind::Read, table, key);
    op.invoke_ns = rec.now_ns();
    let answer = client.get(table, key, opts).await;
    op.complete_ns = rec.now_ns();
    Some(settle(rec, op, answer, |op, r| {
        op.values = r.values;
        op.context_out = Some(r.context);
    }))
}

/// Writes `value` with `context` (the token of the process's last read of the key), records
/// the operation and returns it; `None` when the run's operation budget is spent.
#[allow(clippy::too_many_arguments)]
pub async fn write(
    rec: &Recorder,
    meta: &OpMeta,
    phase: &str,
    client: &Client,
    table: &str,
    key: &str,
    value: String,
    opts: &WriteOptions,
) -> Option<Op> {
    if !rec.reserve() {
        return None;
    }
    let mut op = blank_op(meta, phase, OpKind::Write, table, key);
    op.context_in = opts.context.clone();
    op.invoke_ns = rec.now_ns();
    let answer = client.put(table, key, &value, opts).await;
    op.complete_ns = rec.now_ns();
    op.value = Some(value);
    Some(settle(rec, op, answer, |op, r| op.context_out = Some(r.context)))
}

/// Sleeps a uniformly random think time of up to `max_ms`.
pub async fn think(rng: &mut impl rand::Rng, max_ms: u64) {
    if max_ms > 0 {
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..max_ms * 1000))).await;
    }
}

/// SplitMix64: derives independent, reproducible RNG seeds for each process and setting from
/// the run's one seed.
pub fn mix_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
