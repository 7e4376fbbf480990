//! `lab run log-under-faults`: real Kafka producers and consumers on the log while nodes are
//! paused, killed and cut off, judged by the lab's log checker.
//!
//! The lab starts its own cluster ([`LabCluster`]), creates a topic, and runs in-process
//! clients over the Kafka wire protocol ([`super::kafka_wire`]) against the nodes' Kafka
//! listeners:
//!
//! - **producers** send one record per request with `acks=all`, round-robin over the
//!   partitions; every value (`p<producer>-<n>`) is unique. Each send is recorded as `ok(offset)`,
//!   `fail` (a definite Kafka error: the broker refused before sequencing) or `info` (a timeout,
//!   a lost connection, `REQUEST_TIMED_OUT`: it may still apply). Idempotent producers (producer
//!   id, epoch and per-partition sequence) resend an unresolved record with the *same* sequence
//!   until it is acknowledged, so the broker must keep it once; the others never resend.
//! - **consumers** (assign()-style, several per partition) fetch from their position and
//!   advance by what they received; on a lost connection they go on from the same position at
//!   the next node (the same session: no skip, no going back allowed), and now and then they
//!   restart from an earlier offset (a fresh session).
//! - the **nemesis** injects one fault at a time on a node the seed picks: SIGSTOP then
//!   SIGCONT, SIGKILL then restart, or a two-way cut of its peer traffic, then heals.
//!
//! After the run it heals everything, lets the consumers catch up to the final high
//! watermarks, reads every partition from its log start, and runs
//! [`quorumdb_lab::checker::log::check_log`]. The exit code is 0 with 0 anomalies,
//! [`super::EXIT_VIOLATED`] otherwise. `--inject-bug CLASS` (hidden) corrupts the recorded
//! history before checking in a way that must produce that anomaly class, to show the pipeline
//! catches it ([`inject_bug`]).

use super::cluster::{ClusterSpec, LabCluster};
use super::kafka_wire::{self, Fetched, KafkaConn, Produced, WireError};
use super::scenario::Dur;
use anyhow::{bail, Context, Result};
use quorumdb_lab::checker::log::{check_log, FinalPartition, LogHistory, LogOp, LogReport, Poll, Send};
use quorumdb_lab::checker::CheckConfig;
use quorumdb_lab::history::HISTORY_OPS_LEN_MAX;
use quorumdb_lab::OpResult;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The `kind` that marks a log scenario file.
pub const KIND: &str = "log";
/// Log scenarios shipped with QuorumDB (name, text).
pub const EMBEDDED: [(&str, &str); 1] =
    [("log-under-faults", include_str!("../../../../scenarios/log-under-faults.toml"))];
/// Bounds of the file's numbers: more is a typo, and every client is a task on a 2-core box.
const PRODUCERS_MAX: usize = 64;
const CONSUMERS_PER_PARTITION_MAX: usize = 8;
const PARTITIONS_MAX: u32 = 64;
const RUN_SECONDS_MAX: f64 = 3_600.0;
/// Floors of the scaled fault timings: shorter than this and a fault is over before any
/// client notices it.
const FAULT_HOLD_MIN: Duration = Duration::from_secs(1);
const SETTLE_MIN: Duration = Duration::from_millis(500);
/// Pause before a client retries after a connection failure or a transient error.
pub(crate) const RETRY_PAUSE_MS: u64 = 50;
/// How long the lab tries to create the topic, and to read a partition at the end.
const SETUP_WAIT: Duration = Duration::from_secs(30);
/// The request timeout producers send to the broker, as a fraction of the client's wait, so
/// the broker answers REQUEST_TIMED_OUT before the client gives up on the connection.
const SERVER_TIMEOUT_FRACTION: f64 = 0.66;

/// `[cluster]` of a log or sink scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileCluster {
    pub(crate) nodes: usize,
    pub(crate) zones: usize,
}

/// `[topic]` of a log or sink scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTopic {
    pub(crate) name: String,
    pub(crate) partitions: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileClients {
    producers: usize,
    idempotent: usize,
    consumers_per_partition: usize,
    send_interval: Dur,
    request_timeout: Dur,
    fetch_wait: Dur,
    consumer_restart_every: Dur,
    retry_for: Dur,
}

/// A fault the nemesis injects on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGSTOP for `fault_hold`, then SIGCONT.
    Pause,
    /// SIGKILL, down for `fault_hold`, then restarted with its data.
    Kill,
    /// Peer traffic cut both ways for `fault_hold`, then healed (its Kafka port stays open).
    Partition,
}

impl FaultKind {
    fn name(self) -> &'static str {
        match self {
            FaultKind::Pause => "pause",
            FaultKind::Kill => "kill",
            FaultKind::Partition => "partition",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRun {
    duration: Dur,
    faults: Vec<FaultKind>,
    fault_hold: Dur,
    settle: Dur,
    drain_timeout: Dur,
}

/// A log scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    kind: String,
    description: String,
    cluster: FileCluster,
    topic: FileTopic,
    clients: FileClients,
    run: FileRun,
}

/// Whether `text` is a log scenario (its top-level `kind`).
pub fn is_log(text: &str) -> bool {
    super::scenario_kind(text).as_deref() == Some(KIND)
}

/// The name and description of a log scenario, for `lab list`.
pub fn describe(origin: &str, text: &str) -> Result<(String, String)> {
    let f = load(origin, text, &[], None)?;
    Ok((f.name, f.description))
}

/// Parses and checks a file, with `--param NAME=VALUE` overrides (any field of any section, by
/// name) and `--duration SECONDS`, which sets `[run] duration` and scales the fault timings.
fn load(origin: &str, text: &str, params: &[(String, toml::Value)], duration_s: Option<f64>) -> Result<File> {
    // A single fault kind may be given bare: `--param faults=kill`.
    let params: Vec<(String, toml::Value)> = params
        .iter()
        .map(|(name, value)| match (name.as_str(), value) {
            ("faults", v @ toml::Value::String(_)) => (name.clone(), toml::Value::Array(vec![v.clone()])),
            _ => (name.clone(), value.clone()),
        })
        .collect();
    let mut f: File = super::parse_special(origin, text, &["cluster", "topic", "clients", "run"], &params)?;
    if let Some(s) = duration_s {
        if !(s.is_finite() && s > 0.0 && s <= RUN_SECONDS_MAX) {
            bail!("--duration must be above 0 and at most {RUN_SECONDS_MAX} seconds, got {s}");
        }
        let scale = s / f.run.duration.0.as_secs_f64().max(1e-3);
        f.run.duration = Dur(Duration::from_secs_f64(s));
        f.run.fault_hold = Dur(f.run.fault_hold.0.mul_f64(scale).max(FAULT_HOLD_MIN));
        f.run.settle = Dur(f.run.settle.0.mul_f64(scale).max(SETTLE_MIN));
    }
    check(&f).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    Ok(f)
}

fn check(f: &File) -> Result<(), String> {
    if f.kind != KIND {
        return Err(format!("kind must be {KIND:?}, got {:?}", f.kind));
    }
    check_cluster_and_topic(&f.cluster, &f.topic, PARTITIONS_MAX)?;
    let c = &f.clients;
    if !(1..=PRODUCERS_MAX).contains(&c.producers) || c.idempotent > c.producers {
        return Err(format!(
            "[clients] producers must be 1 to {PRODUCERS_MAX} and idempotent at most producers, got {} and {}",
            c.producers, c.idempotent
        ));
    }
    if !(1..=CONSUMERS_PER_PARTITION_MAX).contains(&c.consumers_per_partition) {
        return Err(format!(
            "[clients] consumers_per_partition must be 1 to {CONSUMERS_PER_PARTITION_MAX}, got {}",
            c.consumers_per_partition
        ));
    }
    if c.request_timeout.0 < Duration::from_millis(100) || c.request_timeout.0 > Duration::from_secs(60) {
        return Err("[clients] request_timeout must be 100ms to 60s".into());
    }
    if c.fetch_wait.0 >= c.request_timeout.0 {
        return Err("[clients] fetch_wait must be below request_timeout".into());
    }
    if c.send_interval.0 > Duration::from_secs(10) || c.retry_for.0 > Duration::from_secs(600) {
        return Err("[clients] send_interval must be at most 10s and retry_for at most 600s".into());
    }
    if c.consumer_restart_every.0 < Duration::from_millis(100) {
        return Err("[clients] consumer_restart_every must be at least 100ms".into());
    }
    let r = &f.run;
    if r.faults.is_empty() {
        return Err("[run] faults must name at least one of pause, kill, partition".into());
    }
    if r.duration.0.is_zero() || r.duration.0.as_secs_f64() > RUN_SECONDS_MAX {
        return Err(format!("[run] duration must be above 0 and at most {RUN_SECONDS_MAX}s"));
    }
    for (what, d) in
        [("fault_hold", r.fault_hold.0), ("settle", r.settle.0), ("drain_timeout", r.drain_timeout.0)]
    {
        if d > Duration::from_secs(600) {
            return Err(format!("[run] {what} must be at most 600s"));
        }
    }
    Ok(())
}

/// `[cluster]` and `[topic]` of a log or sink scenario: 3 or more nodes (one node down must
/// leave a majority), a Kafka topic name, 1 to `partitions_max` partitions.
pub(crate) fn check_cluster_and_topic(
    cluster: &FileCluster,
    topic: &FileTopic,
    partitions_max: u32,
) -> Result<(), String> {
    if !(3..=super::scenario::NODES_MAX).contains(&cluster.nodes)
        || cluster.zones == 0
        || cluster.zones > cluster.nodes
    {
        return Err(format!(
            "[cluster] needs 3 to {} nodes and 1 <= zones <= nodes (one node down must leave a majority), got {} nodes, {} zones",
            super::scenario::NODES_MAX,
            cluster.nodes,
            cluster.zones
        ));
    }
    quorumdb_kafka_name(&topic.name)?;
    if !(1..=partitions_max).contains(&topic.partitions) {
        return Err(format!("[topic] partitions must be 1 to {partitions_max}, got {}", topic.partitions));
    }
    Ok(())
}

/// Kafka's topic-name rule (the broker refuses any other name anyway; this says so early).
fn quorumdb_kafka_name(name: &str) -> Result<(), String> {
    quorumdb_meta::log::check_topic_name(name).map_err(|e| {
        format!("[topic] name {name:?} is not a Kafka topic name (1-249 of [a-zA-Z0-9._-]): {e}")
    })
}

/// Anomaly classes `--inject-bug` can plant in a recorded history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectedBug {
    /// Drop an acknowledged record from the final read.
    Lost,
    /// Append a copy of a record at a new offset of the final read.
    Duplicate,
    /// Replace the value of a polled record by the next offset's.
    Inconsistent,
    /// Reverse the records of a poll that returned several.
    Nonmonotonic,
    /// Drop a record from the middle of a poll.
    Skip,
    /// Add a record no producer sent to the final read.
    Unexpected,
}

impl InjectedBug {
    pub const ALL: [InjectedBug; 6] = [
        InjectedBug::Lost,
        InjectedBug::Duplicate,
        InjectedBug::Inconsistent,
        InjectedBug::Nonmonotonic,
        InjectedBug::Skip,
        InjectedBug::Unexpected,
    ];

    pub fn name(self) -> &'static str {
        match self {
            InjectedBug::Lost => "lost",
            InjectedBug::Duplicate => "duplicate",
            InjectedBug::Inconsistent => "inconsistent",
            InjectedBug::Nonmonotonic => "nonmonotonic",
            InjectedBug::Skip => "skip",
            InjectedBug::Unexpected => "unexpected",
        }
    }

    pub fn from_name(s: &str) -> Option<InjectedBug> {
        Self::ALL.into_iter().find(|b| b.name() == s)
    }

    /// The checker's count of this class.
    pub fn count(self, r: &LogReport) -> u64 {
        match self {
            InjectedBug::Lost => r.lost,
            InjectedBug::Duplicate => r.duplicates,
            InjectedBug::Inconsistent => r.inconsistent_offsets,
            InjectedBug::Nonmonotonic => r.nonmonotonic_polls,
            InjectedBug::Skip => r.skipped_polls,
            InjectedBug::Unexpected => r.unexpected_values,
        }
    }
}

/// Corrupts `h` so that it must show `bug`'s anomaly class; `Err` when the history has nothing
/// to corrupt that way (e.g. no poll returned two records).
pub fn inject_bug(h: &mut LogHistory, bug: InjectedBug) -> Result<(), String> {
    let acked: std::collections::BTreeSet<String> = h
        .ops
        .iter()
        .filter_map(|op| match op {
            LogOp::Send(s) if s.result == OpResult::Ok => Some(s.value.clone()),
            _ => None,
        })
        .collect();
    let none = || format!("--inject-bug {}: the history has nothing to corrupt that way", bug.name());
    match bug {
        InjectedBug::Lost => {
            let f = h
                .ops
                .iter_mut()
                .find_map(|op| match op {
                    LogOp::Final(f) if f.records.iter().any(|(_, v)| acked.contains(v)) => Some(f),
                    _ => None,
                })
                .ok_or_else(none)?;
            let at = f.records.iter().position(|(_, v)| acked.contains(v)).ok_or_else(none)?;
            f.records.remove(at);
        }
        InjectedBug::Duplicate | InjectedBug::Unexpected => {
            let f = h
                .ops
                .iter_mut()
                .find_map(|op| match op {
                    LogOp::Final(f) if !f.records.is_empty() => Some(f),
                    _ => None,
                })
                .ok_or_else(none)?;
            let value = if bug == InjectedBug::Duplicate {
                f.records[0].1.clone()
            } else {
                "never-sent-by-anyone".to_owned()
            };
            f.records.push((f.high_watermark, value));
            f.high_watermark += 1;
        }
        InjectedBug::Inconsistent => {
            let finals: BTreeMap<(String, u32), BTreeMap<u64, String>> = h
                .ops
                .iter()
                .filter_map(|op| match op {
                    LogOp::Final(f) => {
                        Some(((f.topic.clone(), f.partition), f.records.iter().cloned().collect()))
                    }
                    _ => None,
                })
                .collect();
            let mut done = false;
            for op in &mut h.ops {
                let LogOp::Poll(p) = op else { continue };
                let Some(log) = finals.get(&(p.topic.clone(), p.partition)) else { continue };
                if let Some((offset, value)) = p.records.first_mut() {
                    if let Some(next) = log.get(&(*offset + 1)) {
                        *value = next.clone();
                        done = true;
                        break;
                    }
                }
            }
            if !done {
                return Err(none());
            }
        }
        InjectedBug::Nonmonotonic | InjectedBug::Skip => {
            let least = if bug == InjectedBug::Skip { 3 } else { 2 };
            let p = h
                .ops
                .iter_mut()
                .find_map(|op| match op {
                    LogOp::Poll(p) if p.records.len() >= least => Some(p),
                    _ => None,
                })
                .ok_or_else(none)?;
            if bug == InjectedBug::Skip {
                p.records.remove(1);
            } else {
                p.records.reverse();
            }
        }
    }
    Ok(())
}

/// Shared by every client task: the clock, the recorded ops, where the brokers are. The sink
/// scenario (`super::sink_faults`) drives its producers with the same context.
pub(crate) struct Ctx {
    pub(crate) started: Instant,
    pub(crate) ops: Mutex<Vec<LogOp>>,
    /// Set once the history reached [`HISTORY_OPS_LEN_MAX`]: clients stop.
    pub(crate) full: AtomicBool,
    pub(crate) kafka: Vec<String>,
    pub(crate) topic: String,
    pub(crate) partitions: u32,
    pub(crate) request_timeout: Duration,
    pub(crate) fetch_wait_ms: i32,
    pub(crate) send_interval: Duration,
    pub(crate) retry_for: Duration,
    pub(crate) restart_every: Duration,
    /// Producers send JSON events (`{"event_id": "p<id>-<n>", "amount": ..}`) instead of the
    /// bare `p<id>-<n>`, for consumers that write them to a warehouse.
    pub(crate) json_values: bool,
}

impl Ctx {
    /// A context for `partitions` partitions of `topic` on the brokers `kafka`, its clock
    /// starting now; no long polls, no pauses, no consumer restarts, bare values (callers set
    /// the fields they use).
    pub(crate) fn new(kafka: Vec<String>, topic: &str, partitions: u32, request_timeout: Duration) -> Ctx {
        Ctx {
            started: Instant::now(),
            ops: Mutex::new(Vec::new()),
            full: AtomicBool::new(false),
            kafka,
            topic: topic.to_owned(),
            partitions,
            request_timeout,
            fetch_wait_ms: 0,
            send_interval: Duration::ZERO,
            retry_for: Duration::ZERO,
            restart_every: Duration::from_secs(3_600),
            json_values: false,
        }
    }

    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&self, op: LogOp) {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        if ops.len() < HISTORY_OPS_LEN_MAX {
            ops.push(op);
        } else {
            self.full.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// A connection to broker `node`, or the reason there is none.
    pub(crate) async fn connect(&self, node: usize) -> Result<KafkaConn, WireError> {
        KafkaConn::connect(&self.kafka[node % self.kafka.len()], self.request_timeout).await
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Whether a produce error code says the broker refused the batch before sequencing it. The
/// broker answers LEADER_NOT_AVAILABLE (no metadata leader, full queue) and
/// NOT_ENOUGH_REPLICAS (the blob write failed) before proposing anything (docs/log.md), and
/// the validation errors before anything at all; REQUEST_TIMED_OUT and unknown server errors
/// may come after the append was proposed.
fn definite(code: i16) -> bool {
    code != kafka_wire::REQUEST_TIMED_OUT && code != kafka_wire::UNKNOWN_SERVER_ERROR
}

/// Whether an idempotent producer resends the same sequence after this error code: the
/// transient ones (a later attempt may succeed; an earlier unknown attempt may have applied).
fn retriable(code: i16) -> bool {
    matches!(code, 5 | 7 | 19 | -1)
}

pub(crate) fn error_name(code: i16) -> String {
    match code {
        1 => "OFFSET_OUT_OF_RANGE".into(),
        3 => "UNKNOWN_TOPIC_OR_PARTITION".into(),
        5 => "LEADER_NOT_AVAILABLE".into(),
        7 => "REQUEST_TIMED_OUT".into(),
        19 => "NOT_ENOUGH_REPLICAS".into(),
        45 => "OUT_OF_ORDER_SEQUENCE_NUMBER".into(),
        47 => "INVALID_PRODUCER_EPOCH".into(),
        59 => "UNKNOWN_PRODUCER_ID".into(),
        -1 => "UNKNOWN_SERVER_ERROR".into(),
        c => format!("error code {c}"),
    }
}

/// One producer: records `p<id>-<n>` round-robin over the partitions until `stop`.
pub(crate) async fn producer(
    ctx: Arc<Ctx>,
    id: u32,
    idempotent: bool,
    stop: watch::Receiver<bool>,
) -> ProducerStats {
    let mut stats = ProducerStats::default();
    let mut node = id as usize;
    let mut conn: Option<KafkaConn> = None;
    let mut pid: Option<(i64, i16)> = None;
    let mut seqs = vec![0i32; ctx.partitions as usize];
    let mut n = 0u64;
    while !*stop.borrow() && !ctx.full() {
        let partition = (n % u64::from(ctx.partitions)) as u32;
        let value = if ctx.json_values {
            // Amounts are never negative: only the lab's poison record is.
            format!("{{\"event_id\":\"p{id}-{n}\",\"amount\":{}}}", n % 1_000)
        } else {
            format!("p{id}-{n}")
        };
        n += 1;
        let first_attempt = Instant::now();
        loop {
            if ctx.full() {
                return stats;
            }
            let Some(c) = conn.as_mut() else {
                match ctx.connect(node).await {
                    Ok(c) => conn = Some(c),
                    Err(_) => {
                        // Nothing was sent: try the next broker.
                        node += 1;
                        tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                        if *stop.borrow() && stats.pending_value.is_none() {
                            return stats;
                        }
                    }
                }
                continue;
            };
            if idempotent && pid.is_none() {
                match c.init_producer_id().await {
                    Ok(Ok(p)) => {
                        pid = Some(p);
                        seqs.iter_mut().for_each(|s| *s = 0);
                        stats.producer_ids += 1;
                    }
                    Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await,
                    Err(_) => {
                        conn = None;
                        node += 1;
                    }
                }
                if *stop.borrow() && pid.is_none() {
                    return stats;
                }
                continue;
            }
            let producer = pid.map(|(p, e)| (p, e, seqs[partition as usize]));
            let invoke_ns = ctx.now_ns();
            let server_timeout_ms = (ctx.request_timeout.as_millis() as f64 * SERVER_TIMEOUT_FRACTION) as i32;
            // JSON events go to a warehouse (and its dead-letter topic, whose default
            // retention would drop a record stamped near 1970 at once): real wall-clock time.
            let ts = if ctx.json_values { wall_ms() } else { invoke_ns as i64 / 1_000_000 };
            let r = c.produce(&ctx.topic, partition as i32, &value, producer, ts, server_timeout_ms).await;
            let complete_ns = ctx.now_ns();
            let (result, offset, error) = match &r {
                Ok(Produced::Ok(o)) => (OpResult::Ok, Some(*o), None),
                Ok(Produced::Error(code)) if definite(*code) => {
                    (OpResult::Fail, None, Some(error_name(*code)))
                }
                Ok(Produced::Error(code)) => (OpResult::Info, None, Some(error_name(*code))),
                Err(e) => (OpResult::Info, None, Some(e.to_string())),
            };
            ctx.record(LogOp::Send(Send {
                process: id,
                topic: ctx.topic.clone(),
                partition,
                value: value.clone(),
                invoke_ns,
                complete_ns,
                result,
                offset,
                producer,
                error,
            }));
            stats.count(result);
            // A lost connection, or a broker that cannot reach a quorum or the metadata leader
            // (it may be the one cut off): go to the next broker, as a client refreshing its
            // metadata would.
            if r.is_err() || matches!(r, Ok(Produced::Error(code)) if retriable(code)) {
                conn = None;
                node += 1;
            }
            match (&r, idempotent) {
                (Ok(Produced::Ok(_)), _) => {
                    if idempotent {
                        seqs[partition as usize] = seqs[partition as usize].wrapping_add(1);
                    }
                    stats.pending_value = None;
                    break;
                }
                (_, false) => break,
                (Ok(Produced::Error(code)), true) if !retriable(*code) => {
                    // The producer's state is not what it believes: start over as a new
                    // producer (as Kafka's idempotent producer bumps its epoch).
                    pid = None;
                    stats.pending_value = None;
                    break;
                }
                _ => {
                    stats.pending_value = Some(value.clone());
                    if first_attempt.elapsed() > ctx.retry_for {
                        stats.given_up += 1;
                        stats.pending_value = None;
                        pid = None;
                        break;
                    }
                    stats.retries += 1;
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                }
            }
        }
        tokio::time::sleep(ctx.send_interval).await;
    }
    stats
}

#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct ProducerStats {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) unknown: u64,
    /// Resends of an unresolved record (idempotent producers).
    pub(crate) retries: u64,
    /// Records an idempotent producer stopped resending after `retry_for`.
    pub(crate) given_up: u64,
    /// Producer ids obtained.
    pub(crate) producer_ids: u64,
    #[serde(skip)]
    pending_value: Option<String>,
}

impl ProducerStats {
    fn count(&mut self, r: OpResult) {
        match r {
            OpResult::Ok => self.ok += 1,
            OpResult::Fail => self.failed += 1,
            OpResult::Info => self.unknown += 1,
        }
    }
}

/// One consumer of one partition, until `drain` names a target it reached (or its deadline).
async fn consumer(
    ctx: Arc<Ctx>,
    process: u32,
    partition: u32,
    seed: u64,
    mut drain: watch::Receiver<Option<(Vec<u64>, Instant)>>,
) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut node = process as usize;
    let mut conn: Option<KafkaConn> = None;
    let mut position = 0u64;
    let mut fresh = true;
    let mut restarts = 0u64;
    // Restarts come at seeded random intervals averaging `restart_every` (uniform over half to
    // one and a half of it), whatever the poll rate.
    let next_restart =
        |rng: &mut StdRng| Instant::now() + ctx.restart_every.mul_f64(rng.random_range(0.5..1.5));
    let mut restart_at = next_restart(&mut rng);
    loop {
        if ctx.full() {
            return restarts;
        }
        if let Some((targets, deadline)) = drain.borrow_and_update().as_ref() {
            if position >= targets[partition as usize] || Instant::now() > *deadline {
                return restarts;
            }
        }
        // Now and then restart from an earlier offset, as a consumer that lost its position
        // and went back to a committed one would.
        if !fresh && Instant::now() >= restart_at {
            restart_at = next_restart(&mut rng);
            position = rng.random_range(0..=position);
            fresh = true;
            restarts += 1;
            conn = None;
            node = rng.random_range(0..ctx.kafka.len());
        }
        let Some(c) = conn.as_mut() else {
            match ctx.connect(node).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                }
            }
            continue;
        };
        let invoke_ns = ctx.now_ns();
        let r = c.fetch(&ctx.topic, partition as i32, position, ctx.fetch_wait_ms).await;
        let complete_ns = ctx.now_ns();
        let mut poll = Poll {
            process,
            topic: ctx.topic.clone(),
            partition,
            invoke_ns,
            complete_ns,
            from_offset: position,
            fresh,
            records: Vec::new(),
            error: None,
        };
        match r {
            Ok(Fetched { error_code: 0, records, .. }) => {
                poll.records = records.into_iter().filter(|(o, _)| *o >= position).collect();
                if let Some(max) = poll.records.iter().map(|(o, _)| *o).max() {
                    position = max + 1;
                    fresh = false;
                }
            }
            Ok(f) => {
                poll.error = Some(error_name(f.error_code));
                if f.error_code == kafka_wire::OFFSET_OUT_OF_RANGE && (position as i64) < f.log_start_offset {
                    // Trimmed away under us: a reset, so a new session.
                    position = f.log_start_offset as u64;
                    fresh = true;
                } else {
                    // This broker is behind (or briefly unable): ask another one.
                    node += 1;
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                }
            }
            Err(e) => {
                poll.error = Some(e.to_string());
                conn = None;
                node += 1;
            }
        }
        ctx.record(LogOp::Poll(poll));
    }
}

/// Starts a log or sink scenario's cluster (N = 3, the lab's fast timeouts) and a client
/// context for its topic (not created yet).
pub(crate) async fn start_cluster(
    c: &FileCluster,
    topic: &FileTopic,
    request_timeout: Duration,
    log_dir: &Path,
) -> Result<(LabCluster, Ctx)> {
    let spec = ClusterSpec {
        nodes: c.nodes,
        zones: c.zones,
        replication_factor: 3,
        tables: Vec::new(),
        server_timeouts: false,
    };
    let cluster = LabCluster::start(&spec, log_dir).await?;
    let kafka = (0..c.nodes).map(|i| cluster.kafka_addr(i)).collect::<Result<_>>()?;
    Ok((cluster, Ctx::new(kafka, &topic.name, topic.partitions, request_timeout)))
}

/// Creates the topic through any node, retrying while the cluster settles.
pub(crate) async fn create_topic(ctx: &Ctx) -> Result<()> {
    let deadline = Instant::now() + SETUP_WAIT;
    let mut last = String::new();
    let mut node = 0;
    while Instant::now() < deadline {
        match ctx.connect(node).await {
            Ok(mut c) => match c.create_topic(&ctx.topic, ctx.partitions as i32).await {
                Ok(0) | Ok(kafka_wire::TOPIC_ALREADY_EXISTS) => return Ok(()),
                Ok(code) => last = error_name(code),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        node += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("cannot create topic {:?} within {SETUP_WAIT:?}: {last}", ctx.topic)
}

/// `(log start, high watermark)` of `partition` once every node reports the same: a node
/// that just restarted may not have applied the last appends yet, and a final read bounded by
/// its high watermark would miss records. Producers have stopped, so the bounds are fixed.
pub(crate) async fn final_bounds(ctx: &Ctx, partition: u32) -> Result<(u64, u64)> {
    let deadline = Instant::now() + SETUP_WAIT;
    let mut last = String::new();
    loop {
        let mut seen = Vec::new();
        for node in 0..ctx.kafka.len() {
            match ctx.connect(node).await {
                Ok(mut c) => match c.fetch(&ctx.topic, partition as i32, 0, 0).await {
                    Ok(f) if f.error_code == 0 => {
                        seen.push((f.log_start_offset.max(0) as u64, f.high_watermark.max(0) as u64))
                    }
                    Ok(f) => last = error_name(f.error_code),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
        }
        if seen.len() == ctx.kafka.len() && seen.iter().all(|b| *b == seen[0]) {
            return Ok(seen[0]);
        }
        if Instant::now() > deadline {
            bail!(
                "the nodes do not agree on the bounds of partition {partition} within {SETUP_WAIT:?}: {seen:?} (last error: {last})"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every record of `partition` from its log start up to `high_watermark`.
pub(crate) async fn final_read(
    ctx: &Ctx,
    partition: u32,
    log_start: u64,
    high_watermark: u64,
) -> Result<FinalPartition> {
    let mut records = Vec::new();
    let mut position = log_start;
    let deadline = Instant::now() + SETUP_WAIT;
    let mut node = 0;
    let mut conn: Option<KafkaConn> = None;
    let mut last = String::new();
    while position < high_watermark {
        if Instant::now() > deadline {
            bail!(
                "final read of partition {partition} stuck at offset {position} of {high_watermark}: {last}"
            );
        }
        let Some(c) = conn.as_mut() else {
            match ctx.connect(node).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    last = e.to_string();
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                }
            }
            continue;
        };
        match c.fetch(&ctx.topic, partition as i32, position, 0).await {
            Ok(f) if f.error_code == 0 => {
                let got: Vec<(u64, String)> =
                    f.records.into_iter().filter(|(o, _)| *o >= position && *o < high_watermark).collect();
                match got.iter().map(|(o, _)| *o).max() {
                    Some(max) => position = max + 1,
                    None => {
                        last = format!("an empty answer at offset {position}");
                        tokio::time::sleep(Duration::from_millis(RETRY_PAUSE_MS)).await;
                    }
                }
                records.extend(got);
            }
            Ok(f) => {
                last = error_name(f.error_code);
                conn = None;
                node += 1;
            }
            Err(e) => {
                last = e.to_string();
                conn = None;
                node += 1;
            }
        }
    }
    Ok(FinalPartition { topic: ctx.topic.clone(), partition, log_start, high_watermark, records })
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: FaultKind,
    pub node: String,
    /// Seconds since the history started.
    pub start_s: f64,
    pub end_s: f64,
}

/// What the report says about the run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub seed: u64,
    pub command: String,
    pub nodes: usize,
    pub zones: usize,
    pub topic: String,
    pub partitions: u32,
    pub producers: usize,
    pub idempotent_producers: usize,
    pub consumers: usize,
    pub duration_s: f64,
    pub fault_hold_ms: f64,
    pub settle_ms: f64,
    pub faults: Vec<FaultRecord>,
    pub fault_counts: BTreeMap<String, u64>,
    /// Distinct records producers tried to send, and how the sends (retries included) ended.
    pub records_sent: u64,
    pub sends: u64,
    pub sends_ok: u64,
    pub sends_failed: u64,
    pub sends_unknown: u64,
    pub idempotent_retries: u64,
    pub idempotent_given_up: u64,
    pub producer_ids: u64,
    pub polls: u64,
    pub polled_records: u64,
    pub consumer_restarts: u64,
    pub final_records: u64,
    /// Whether the history hit its op limit (the run then stopped early).
    pub history_full: bool,
    /// The anomaly class `--inject-bug` planted, if any.
    pub injected_bug: Option<InjectedBug>,
    pub checker: LogReport,
    pub anomalies: u64,
    pub violations: u64,
    pub wall_s: f64,
}

/// Runs the scenario in `text`; the exit code (0, or [`super::EXIT_VIOLATED`]).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    origin: &str,
    text: &str,
    params: &[(String, toml::Value)],
    duration_s: Option<f64>,
    inject: Option<&str>,
    seed: u64,
    out: &Path,
    command: String,
) -> Result<i32> {
    let wall = Instant::now();
    let f = load(origin, text, params, duration_s)?;
    let injected_bug = match inject {
        Some(name) => Some(InjectedBug::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = InjectedBug::ALL.iter().map(|b| b.name()).collect();
            anyhow::anyhow!("--inject-bug {name:?}: one of {}", names.join(", "))
        })?),
        None => None,
    };
    std::fs::create_dir_all(out.join("logs")).with_context(|| format!("cannot create {}", out.display()))?;
    eprintln!(
        "lab: {}, seed {seed}, {:.0} s of {} (held {:.1} s, {:.1} s apart), output in {}",
        f.name,
        f.run.duration.0.as_secs_f64(),
        f.run.faults.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
        f.run.fault_hold.0.as_secs_f64(),
        f.run.settle.0.as_secs_f64(),
        out.display()
    );
    let (mut cluster, mut ctx) =
        start_cluster(&f.cluster, &f.topic, f.clients.request_timeout.0, &out.join("logs")).await?;
    ctx.fetch_wait_ms = i32::try_from(f.clients.fetch_wait.0.as_millis()).unwrap_or(i32::MAX);
    ctx.send_interval = f.clients.send_interval.0;
    ctx.retry_for = f.clients.retry_for.0;
    ctx.restart_every = f.clients.consumer_restart_every.0;
    let ctx = Arc::new(ctx);
    create_topic(&ctx).await?;
    eprintln!(
        "topic {:?}: {} partitions; {} producers ({} idempotent), {} consumers",
        f.topic.name,
        f.topic.partitions,
        f.clients.producers,
        f.clients.idempotent,
        f.clients.consumers_per_partition * f.topic.partitions as usize
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(None);
    let producers: Vec<_> = (0..f.clients.producers)
        .map(|i| tokio::spawn(producer(ctx.clone(), i as u32, i < f.clients.idempotent, stop_rx.clone())))
        .collect();
    let mut consumers = Vec::new();
    for p in 0..f.topic.partitions {
        for k in 0..f.clients.consumers_per_partition {
            let process = 1_000 + p * CONSUMERS_PER_PARTITION_MAX as u32 + k as u32;
            let seed = rng.random();
            consumers.push(tokio::spawn(consumer(ctx.clone(), process, p, seed, drain_rx.clone())));
        }
    }

    // The nemesis: one fault at a time until the run's end.
    let end = Instant::now() + f.run.duration.0;
    let mut faults = Vec::new();
    let mut order: Vec<FaultKind> = Vec::new();
    tokio::time::sleep(f.run.settle.0.min(f.run.duration.0 / 4)).await;
    while Instant::now() + f.run.fault_hold.0 <= end && !ctx.full() {
        if order.is_empty() {
            order = f.run.faults.clone();
            order.shuffle(&mut rng);
        }
        let kind = order.pop().unwrap_or(FaultKind::Pause);
        let i = rng.random_range(0..f.cluster.nodes);
        let start_s = ctx.now_ns() as f64 / 1e9;
        match kind {
            FaultKind::Pause => {
                cluster.pause(i)?;
                tokio::time::sleep(f.run.fault_hold.0).await;
                cluster.resume(i)?;
            }
            FaultKind::Kill => {
                cluster.kill(i)?;
                tokio::time::sleep(f.run.fault_hold.0).await;
                cluster.restart(&[i]).await?;
            }
            FaultKind::Partition => {
                cluster.partition(&[i]).await?;
                tokio::time::sleep(f.run.fault_hold.0).await;
                cluster.heal_network().await?;
            }
        }
        let end_s = ctx.now_ns() as f64 / 1e9;
        eprintln!("{:>6.1} s: {} {} for {:.1} s", start_s, kind.name(), cluster.id(i), end_s - start_s);
        faults.push(FaultRecord { kind, node: cluster.id(i).to_owned(), start_s, end_s });
        let rest = end.saturating_duration_since(Instant::now()).min(f.run.settle.0);
        tokio::time::sleep(rest).await;
    }
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;

    // Stop producing, heal, let the producers resolve what they still retry.
    let _ = stop_tx.send(true);
    cluster.heal_all().await?;
    let mut pstats = ProducerStats::default();
    for p in producers {
        let s = p.await.context("a producer task panicked")?;
        pstats.ok += s.ok;
        pstats.failed += s.failed;
        pstats.unknown += s.unknown;
        pstats.retries += s.retries;
        pstats.given_up += s.given_up;
        pstats.producer_ids += s.producer_ids;
    }
    // Consumers catch up to the final high watermarks, then the lab reads every partition.
    let mut bounds = Vec::new();
    for p in 0..f.topic.partitions {
        bounds.push(final_bounds(&ctx, p).await?);
    }
    eprintln!(
        "healed; high watermarks {:?}; consumers catching up",
        bounds.iter().map(|b| b.1).collect::<Vec<_>>()
    );
    let _ =
        drain_tx.send(Some((bounds.iter().map(|b| b.1).collect(), Instant::now() + f.run.drain_timeout.0)));
    let mut restarts = 0;
    for c in consumers {
        restarts += c.await.context("a consumer task panicked")?;
    }
    let mut finals = Vec::new();
    for (p, &(log_start, hw)) in bounds.iter().enumerate() {
        finals.push(final_read(&ctx, p as u32, log_start, hw).await?);
    }
    drop(cluster);

    let mut ops = std::mem::take(&mut *ctx.ops.lock().unwrap_or_else(|p| p.into_inner()));
    let history_full = ctx.full();
    ops.extend(finals.into_iter().map(LogOp::Final));
    let mut history = LogHistory::new(ops);
    if let Some(bug) = injected_bug {
        inject_bug(&mut history, bug).map_err(anyhow::Error::msg)?;
        eprintln!("injected a {} anomaly into the recorded history", bug.name());
    }
    let path = out.join("history.jsonl");
    let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    history.write_jsonl(file).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("checking {} operations", history.ops.len());
    let (checker, history) = tokio::task::spawn_blocking(move || {
        let r = check_log(&history, &CheckConfig::default());
        (r, history)
    })
    .await
    .context("the log checker panicked")?;
    let checker = checker.context("the recorded history is not valid")?;
    if let Some(bug) = injected_bug {
        eprintln!(
            "the checker counted {} {} anomalies (injected: at least 1)",
            bug.count(&checker),
            bug.name()
        );
    }
    let records_sent = history
        .ops
        .iter()
        .filter_map(|op| match op {
            LogOp::Send(s) => Some(s.value.as_str()),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let mut fault_counts = BTreeMap::new();
    for fr in &faults {
        *fault_counts.entry(fr.kind.name().to_owned()).or_insert(0) += 1;
    }
    let anomalies = checker.anomalies;
    let report = Report {
        scenario: f.name.clone(),
        description: f.description.clone(),
        seed,
        command,
        nodes: f.cluster.nodes,
        zones: f.cluster.zones,
        topic: f.topic.name.clone(),
        partitions: f.topic.partitions,
        producers: f.clients.producers,
        idempotent_producers: f.clients.idempotent,
        consumers: f.clients.consumers_per_partition * f.topic.partitions as usize,
        duration_s: f.run.duration.0.as_secs_f64(),
        fault_hold_ms: f.run.fault_hold.0.as_secs_f64() * 1e3,
        settle_ms: f.run.settle.0.as_secs_f64() * 1e3,
        faults,
        fault_counts,
        records_sent,
        sends: checker.sends,
        sends_ok: checker.sends_ok,
        sends_failed: checker.sends_failed,
        sends_unknown: checker.sends_unknown,
        idempotent_retries: pstats.retries,
        idempotent_given_up: pstats.given_up,
        producer_ids: pstats.producer_ids,
        polls: checker.polls,
        polled_records: checker.polled_records,
        consumer_restarts: restarts,
        final_records: checker.final_records,
        history_full,
        injected_bug,
        anomalies,
        violations: u64::from(anomalies > 0),
        checker,
        wall_s: wall.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&report).context("cannot encode the report")?;
    std::fs::write(out.join("report.json"), json).context("cannot write report.json")?;
    std::fs::write(out.join("report.html"), html(&report)).context("cannot write report.html")?;
    print!("{}", summary(&report));
    println!("report: {}", out.join("report.html").display());
    println!("replay: {}", report.command);
    Ok(if anomalies == 0 { 0 } else { super::EXIT_VIOLATED })
}

/// The printed summary.
pub fn summary(r: &Report) -> String {
    let c = &r.checker;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{}: {} nodes, topic {} ({} partitions), {} producers ({} idempotent), {} consumers, {:.0} s, {:.0} s wall",
        r.scenario, r.nodes, r.topic, r.partitions, r.producers, r.idempotent_producers, r.consumers, r.duration_s, r.wall_s
    );
    let counts: Vec<String> = r.fault_counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(s, "faults: {} ({})", r.faults.len(), counts.join(", "));
    let _ = writeln!(
        s,
        "records sent {}: sends {} (ok {}, failed {}, unknown {}; idempotent resends {}, given up {}); {} acknowledged values, {} survived, {} unknown ones present",
        r.records_sent,
        r.sends,
        r.sends_ok,
        r.sends_failed,
        r.sends_unknown,
        r.idempotent_retries,
        r.idempotent_given_up,
        c.values_acknowledged,
        c.values_survived,
        c.unknown_values_present
    );
    let _ = writeln!(
        s,
        "polls {} ({} records, {} sessions, {} consumer restarts); final read {} records",
        r.polls, r.polled_records, c.sessions, r.consumer_restarts, r.final_records
    );
    let _ = writeln!(
        s,
        "anomalies {}: duplicates {}, lost {}, inconsistent offsets {}, non-monotonic polls {}, skipped polls {}, unexpected values {}",
        c.anomalies,
        c.duplicates,
        c.lost,
        c.inconsistent_offsets,
        c.nonmonotonic_polls,
        c.skipped_polls,
        c.unexpected_values
    );
    if let Some(b) = r.injected_bug {
        let _ = writeln!(s, "(a {} anomaly was injected into the history on purpose)", b.name());
    }
    let _ = writeln!(
        s,
        "{} no duplicate, lost, reordered or skipped record, no unexpected value",
        if c.anomalies == 0 { "held:    " } else { "VIOLATED:" }
    );
    s
}

/// A self-contained page: the run, the counts, the anomalies with examples, every fault.
fn html(r: &Report) -> String {
    use super::html::esc;
    let c = &r.checker;
    let mut s = super::html::page_head(&r.scenario, &r.description, r.seed, &r.command);
    let _ = write!(
        s,
        "<p>{} nodes in {} zones; topic {} with {} partitions; {} producers ({} idempotent), {} consumers; {:.0} s of faults, each held {:.0} ms, {:.0} ms apart; {:.0} s wall.</p>",
        r.nodes, r.zones, esc(&r.topic), r.partitions, r.producers, r.idempotent_producers, r.consumers, r.duration_s, r.fault_hold_ms, r.settle_ms, r.wall_s
    );
    let _ = write!(
        s,
        "<h2>Clients</h2><table><tr><th>records</th><th>sends</th><th>ok</th><th>failed</th><th>unknown</th><th>idempotent resends</th><th>acknowledged values</th><th>survived</th><th>unknown present</th><th>polls</th><th>polled records</th><th>sessions</th><th>final records</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        r.records_sent, r.sends, r.sends_ok, r.sends_failed, r.sends_unknown, r.idempotent_retries, c.values_acknowledged, c.values_survived, c.unknown_values_present, r.polls, r.polled_records, c.sessions, r.final_records
    );
    s.push_str("<h2>Anomalies</h2><table><tr><th>class</th><th>count</th></tr>");
    for (name, n) in [
        ("duplicates", c.duplicates),
        ("lost", c.lost),
        ("inconsistent offsets", c.inconsistent_offsets),
        ("non-monotonic polls", c.nonmonotonic_polls),
        ("skipped polls", c.skipped_polls),
        ("unexpected values", c.unexpected_values),
    ] {
        let _ =
            write!(s, "<tr><td>{name}</td><td class=\"{}\">{n}</td></tr>", if n > 0 { "bad" } else { "" });
    }
    s.push_str("</table>");
    if c.anomalies > 0 {
        let examples = serde_json::json!({
            "duplicates": c.duplicate_examples, "lost": c.lost_examples,
            "inconsistent": c.inconsistent_examples, "nonmonotonic": c.nonmonotonic_examples,
            "skipped": c.skipped_examples, "unexpected": c.unexpected_examples,
        });
        let _ = write!(
            s,
            "<h3>Examples</h3><pre>{}</pre>",
            esc(&serde_json::to_string_pretty(&examples).unwrap_or_default())
        );
    }
    s.push_str("<h2>Faults</h2><table><tr><th>kind</th><th>node</th><th>from s</th><th>to s</th></tr>");
    for fr in &r.faults {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            fr.kind.name(),
            esc(&fr.node),
            fr.start_s,
            fr.end_s
        );
    }
    s.push_str("</table></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clean recorded history: one partition, six acknowledged records, one consumer reading
    /// them in two polls, the final read.
    fn clean() -> LogHistory {
        let mut ops = Vec::new();
        let values: Vec<String> = (0..6).map(|i| format!("p0-{i}")).collect();
        for (i, v) in values.iter().enumerate() {
            ops.push(LogOp::Send(Send {
                process: 0,
                topic: "t".into(),
                partition: 0,
                value: v.clone(),
                invoke_ns: i as u64 * 10,
                complete_ns: i as u64 * 10 + 5,
                result: OpResult::Ok,
                offset: Some(i as u64),
                producer: None,
                error: None,
            }));
        }
        for (k, range) in [(0usize, 0..3usize), (1, 3..6)] {
            ops.push(LogOp::Poll(Poll {
                process: 1000,
                topic: "t".into(),
                partition: 0,
                invoke_ns: 100 + k as u64 * 10,
                complete_ns: 105 + k as u64 * 10,
                from_offset: range.start as u64,
                fresh: k == 0,
                records: range.map(|o| (o as u64, values[o].clone())).collect(),
                error: None,
            }));
        }
        ops.push(LogOp::Final(FinalPartition {
            topic: "t".into(),
            partition: 0,
            log_start: 0,
            high_watermark: 6,
            records: values.iter().enumerate().map(|(o, v)| (o as u64, v.clone())).collect(),
        }));
        LogHistory::new(ops)
    }

    /// Proves every `--inject-bug` class turns a clean recorded history (0 anomalies) into one
    /// the checker flags with that very class, so the scenario's exit code would be 3.
    #[test]
    fn each_injected_bug_is_caught_as_its_class() {
        let config = CheckConfig::default();
        assert_eq!(check_log(&clean(), &config).unwrap().anomalies, 0);
        for bug in InjectedBug::ALL {
            let mut h = clean();
            inject_bug(&mut h, bug).unwrap();
            let r = check_log(&h, &config).unwrap();
            assert!(bug.count(&r) >= 1, "{}: {r:#?}", bug.name());
        }
    }

    /// Proves the embedded file loads, `--duration` scales the fault timings with their
    /// floors, `--param` reaches its field, and bad values are refused naming the field.
    #[test]
    fn scenario_file_loads_scales_and_refuses_bad_values() {
        let text = EMBEDDED[0].1;
        assert!(is_log(text));
        let f = load("x", text, &[], None).unwrap();
        assert_eq!((f.run.duration.0, f.run.fault_hold.0), (Duration::from_secs(60), Duration::from_secs(4)));
        let f = load("x", text, &[], Some(12.0)).unwrap();
        assert_eq!(f.run.duration.0, Duration::from_secs(12));
        assert_eq!(
            (f.run.fault_hold.0, f.run.settle.0),
            (Duration::from_secs(1), Duration::from_millis(600))
        );
        let f = load("x", text, &[("faults".into(), toml::Value::String("kill".into()))], None).unwrap();
        assert_eq!(f.run.faults, vec![FaultKind::Kill]);
        let err = load("x", text, &[("nope".into(), toml::Value::Integer(1))], None).unwrap_err().to_string();
        assert!(err.contains("no such field"), "{err}");
        let err =
            load("x", text, &[("idempotent".into(), toml::Value::Integer(9))], None).unwrap_err().to_string();
        assert!(err.contains("idempotent at most producers"), "{err}");
        let err =
            load("x", text, &[("nodes".into(), toml::Value::Integer(2))], None).unwrap_err().to_string();
        assert!(err.contains("3 to"), "{err}");
        assert!(load("x", text, &[], Some(0.0)).is_err());
    }

    /// Proves which produce answers count as definite refusals: the ones the broker sends
    /// before sequencing, not REQUEST_TIMED_OUT or an unknown server error.
    #[test]
    fn only_pre_sequencing_errors_are_definite() {
        for code in [3, 5, 19, 45, 47, 59] {
            assert!(definite(code), "{code}");
        }
        for code in [7, -1] {
            assert!(!definite(code), "{code}");
        }
    }
}
