//! `quorumdb lab scheduler`: one scheduler process of the `split-brain-scheduler` scenario.
//!
//! The seed's orchestrator: several instances campaign for one election, and the leader assigns
//! batch partitions to workers by writing `partition-N = "<scheduler>:<token>:<seq>"` into the
//! store. The process is deliberately ordinary, the way such loops are written:
//!
//! - it renews its lease every `keepalive_ms` on a task of its own, and takes itself for the
//!   leader until a keep-alive answers that the lease is gone (`unknown_lease`). A keep-alive that
//!   times out or cannot connect is taken for a blip and retried, as client libraries do;
//! - it checks that belief once per *round* (one assignment of every partition), not before
//!   every write, so a pause in the middle of a round leaves the rest of the round to a leader
//!   that may no longer be one;
//! - each assignment reads the partition's current assignment and writes the new one with that
//!   read's context (so one leader's assignments replace each other instead of piling up as
//!   siblings), carrying `fence=<election>:<token>` when fencing is on. A `fenced` refusal is
//!   definitive: the scheduler stops leading at once.
//!
//! Everything it does is appended to an events file, one JSON object per line and flushed per
//! line, so a SIGKILL at the end of the run loses nothing already done. Instants are Unix-epoch
//! nanoseconds: the lab and its schedulers are processes on one machine and share its clock.

use anyhow::{Context, Result};
use clap::Args;
use quorumdb_client::{Client, ReadOptions, WriteOptions};
use quorumdb_lab::OpResult;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Pause between polls of the election while another scheduler leads, and between retries of a
/// failed lease grant: a fraction of the shortest lease TTL (1 s).
const POLL_MS: u64 = 50;

/// `quorumdb lab scheduler` (hidden: the lab starts it).
#[derive(Args, Debug, Clone)]
pub struct SchedulerArgs {
    /// The node this scheduler talks to (one, so cutting that node off cuts the scheduler off).
    #[arg(long)]
    pub endpoint: String,
    /// This scheduler's number (also its campaign value).
    #[arg(long)]
    pub id: u32,
    /// The election the schedulers campaign for; the fence name.
    #[arg(long)]
    pub election: String,
    /// Table of the assignments.
    #[arg(long)]
    pub table: String,
    /// Prefix of the partition keys (`<prefix>-p<N>`).
    #[arg(long)]
    pub key_prefix: String,
    /// Batch partitions to assign.
    #[arg(long)]
    pub partitions: u32,
    /// Lease TTL, ms.
    #[arg(long)]
    pub ttl_ms: u64,
    /// Keep-alive period, ms.
    #[arg(long)]
    pub keepalive_ms: u64,
    /// Pause after each assignment, ms.
    #[arg(long)]
    pub interval_ms: u64,
    /// Carry the fencing token on every assignment.
    #[arg(long)]
    pub fence: bool,
    /// Server-side quorum timeout of reads and writes, ms.
    #[arg(long, default_value_t = 1_000)]
    pub timeout_ms: u64,
    /// Client-side bound on one HTTP call, ms.
    #[arg(long, default_value_t = 3_000)]
    pub client_timeout_ms: u64,
    /// Where the events go (appended).
    #[arg(long)]
    pub events: PathBuf,
}

/// One line of a scheduler's events file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The scheduler won the election with `token` (the acquire's answer arrived at `at_ns`).
    Leader { scheduler: u32, token: u64, at_ns: u64 },
    /// One assignment write.
    Assign {
        scheduler: u32,
        token: u64,
        partition: u32,
        value: String,
        invoke_ns: u64,
        complete_ns: u64,
        /// By the lab's outcome rules (`docs/lab.md`): `ok` is an acknowledged assignment.
        outcome: OpResult,
        /// The error code (`fenced`, `quorum_not_reached`, ...) or transport error.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The scheduler learnt it no longer leads (`reason`: `lease lost` or `fenced`).
    Demoted { scheduler: u32, token: u64, at_ns: u64, reason: String },
}

/// Unix-epoch nanoseconds now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The partition key of partition `p`.
pub fn partition_key(prefix: &str, p: u32) -> String {
    format!("{prefix}-p{p}")
}

struct Log(Mutex<std::fs::File>);

impl Log {
    fn write(&self, e: &Event) {
        // A lost line would hide what the process did from the checker, so a failure to write
        // ends the process (the lab then sees it exit and fails the run).
        let line = serde_json::to_string(e).expect("events serialize");
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = writeln!(f, "{line}").and_then(|()| f.flush()) {
            eprintln!("scheduler: cannot write the events file: {err}");
            std::process::exit(1);
        }
    }
}

pub async fn run(a: SchedulerArgs) -> Result<i32> {
    let client = Client::with_timeout(&a.endpoint, Duration::from_millis(a.client_timeout_ms))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&a.events)
        .with_context(|| format!("cannot open {}", a.events.display()))?;
    let log = Arc::new(Log(Mutex::new(file)));
    let mut seq = 0u64;
    loop {
        let lease = grant(&client, a.ttl_ms).await;
        let alive = Arc::new(AtomicBool::new(true));
        let keepalive = tokio::spawn(keep_alive(client.clone(), lease, a.keepalive_ms, alive.clone()));
        let Some(token) = campaign(&client, &a, lease, &alive).await else {
            keepalive.abort();
            continue;
        };
        log.write(&Event::Leader { scheduler: a.id, token, at_ns: now_ns() });
        let reason = lead(&client, &a, token, &alive, &log, &mut seq).await;
        keepalive.abort();
        log.write(&Event::Demoted { scheduler: a.id, token, at_ns: now_ns(), reason: reason.into() });
    }
}

/// A lease, retried until the metadata group grants one.
async fn grant(client: &Client, ttl_ms: u64) -> u64 {
    loop {
        match client.grant_lease(ttl_ms).await {
            Ok(l) => return l.id,
            Err(e) => {
                eprintln!("scheduler: lease grant failed: {e}");
                tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            }
        }
    }
}

/// Renews `lease` until a keep-alive says it is gone; only that clears `alive`.
async fn keep_alive(client: Client, lease: u64, period_ms: u64, alive: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(Duration::from_millis(period_ms)).await;
        match client.keepalive_lease(lease).await {
            Ok(_) => {}
            Err(e) if e.code() == Some("unknown_lease") => {
                alive.store(false, Ordering::Release);
                return;
            }
            Err(_) => {} // a blip, as far as this scheduler can tell
        }
    }
}

/// Campaigns until this scheduler leads (its token) or its lease is gone (`None`).
async fn campaign(client: &Client, a: &SchedulerArgs, lease: u64, alive: &AtomicBool) -> Option<u64> {
    let value = a.id.to_string();
    while alive.load(Ordering::Acquire) {
        match client.acquire(&a.election, lease, &value).await {
            Ok(l) => return l.holder.map(|h| h.token),
            Err(e) if e.code() == Some("unknown_lease") => return None,
            Err(e) if e.code() == Some("held") => {
                // Wait by reading: every refused acquire is a Raft log entry.
                while alive.load(Ordering::Acquire) {
                    match client.lock(&a.election).await {
                        Ok(l) if l.holder.as_ref().is_some_and(|h| h.lease != lease) => {}
                        Ok(_) => break,
                        Err(_) => {}
                    }
                    tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
                }
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(POLL_MS)).await,
        }
    }
    None
}

/// Assigns rounds of partitions while this scheduler believes it leads; the reason it stopped.
async fn lead(
    client: &Client,
    a: &SchedulerArgs,
    token: u64,
    alive: &AtomicBool,
    log: &Log,
    seq: &mut u64,
) -> &'static str {
    let fence = a.fence.then(|| format!("{}:{token}", a.election));
    let read = ReadOptions { timeout_ms: Some(a.timeout_ms), ..ReadOptions::default() };
    // The check is per round, as a loop over partitions is usually written: see the module doc.
    while alive.load(Ordering::Acquire) {
        for p in 0..a.partitions {
            let key = partition_key(&a.key_prefix, p);
            let context = match client.get(&a.table, &key, &read).await {
                Ok(r) => Some(r.context),
                Err(e) if e.code() == Some("not_found") => None,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(a.interval_ms)).await;
                    continue;
                }
            };
            *seq += 1;
            let value = format!("{}:{token}:{seq}", a.id);
            let opts = WriteOptions {
                context,
                timeout_ms: Some(a.timeout_ms),
                fence: fence.clone(),
                ..WriteOptions::default()
            };
            let invoke_ns = now_ns();
            let answer = client.put(&a.table, &key, &value, &opts).await;
            let complete_ns = now_ns();
            let (outcome, error) = match &answer {
                Ok(_) => (OpResult::Ok, None),
                Err(e) => (
                    super::workload::result_of(e),
                    Some(e.code().map_or_else(|| e.to_string(), str::to_owned)),
                ),
            };
            let fenced = error.as_deref() == Some("fenced");
            log.write(&Event::Assign {
                scheduler: a.id,
                token,
                partition: p,
                value,
                invoke_ns,
                complete_ns,
                outcome,
                error,
            });
            if fenced {
                return "fenced";
            }
            tokio::time::sleep(Duration::from_millis(a.interval_ms)).await;
        }
    }
    "lease lost"
}
