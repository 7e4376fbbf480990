//! `lab run flaky-warehouse-sink`: the seed's incident, measured. QuorumDB's PostgreSQL sink and
//! a naive consumer read the same stream side by side while the warehouse goes through a
//! "deploy", a node is killed and a poison record arrives.
//!
//! - The lab starts its own cluster ([`LabCluster`]) and a private PostgreSQL
//!   ([`quorumdb::pg::PrivatePg`]), creates a topic, and runs idempotent `acks=all` producers
//!   (the log scenario's, [`log_faults::producer`]) writing JSON events with a unique
//!   `event_id`; every acknowledged `(partition, offset, event_id)` is recorded.
//! - **QuorumDB's sink** (`POST /v1/sinks`) writes table A; the **naive consumer** ([`naive`])
//!   writes table B the way the seed's incident did: it commits its *fetched* position to its
//!   group every second whatever became of the writes, plain `INSERT`s without a key, retries
//!   at once a few times, then gives up on the batch and moves on.
//! - Both tables carry the same `CHECK (amount >= 0)` (the poison record has a negative
//!   amount) and the same statement trigger, which reads a flag table the nemesis sets: raise
//!   an injected transient error (40001, 57014) on a fraction of statements, or sleep first
//!   (a latency spike longer than the naive client's timeout, while the server goes on and
//!   commits: the classic duplicate).
//! - The nemesis: kill -9 of the node owning most sink partitions and a kill of the naive
//!   consumer, then the deploy window: PostgreSQL stopped and started, every connection reset,
//!   injected errors (the poison event is produced then), latency spikes.
//! - A sampler records every consumer's lag (high watermark − position) every
//!   `sample_interval`; after a drain the lab counts, per consumer, duplicate and missing rows,
//!   dead letters, retries, peak lag and the recovery time (from the end of the deploy window
//!   until the lag is back under its pre-fault p99).
//!
//! The exit code is 0 when QuorumDB's sink has 0 duplicates, 0 missing rows, the poison record
//! in its dead-letter topic and a recovery time, [`super::EXIT_VIOLATED`] otherwise. What the
//! naive consumer does is reported, never a failure.

use super::cluster::LabCluster;
use super::kafka_wire::{self, KafkaConn};
use super::log_faults::{self, Ctx, FileCluster, FileTopic};
use super::scenario::Dur;
use anyhow::{bail, Context, Result};
use quorumdb::pg::PrivatePg;
use quorumdb_lab::checker::log::LogOp;
use quorumdb_lab::OpResult;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The `kind` that marks a sink scenario file.
pub const KIND: &str = "sink";
/// Sink scenarios shipped with QuorumDB (name, text).
pub const EMBEDDED: [(&str, &str); 1] =
    [("flaky-warehouse-sink", include_str!("../../../../scenarios/flaky-warehouse-sink.toml"))];
/// Bounds of the file's numbers: more is a typo, and every client is a task on a 2-core box.
const PRODUCERS_MAX: usize = 32;
const PARTITIONS_MAX: u32 = 32;
const BATCH_RECORDS_MAX: u32 = 10_000;
const NAIVE_RETRIES_MAX: u32 = 20;
const RESETS_MAX: u32 = 20;
const RUN_SECONDS_MAX: f64 = 3_600.0;
/// Floors of the scaled timings: shorter than this and a fault is over before anyone notices.
/// A node down shorter than the sink's 4 s session still restarts every worker it had.
const WARMUP_MIN: Duration = Duration::from_secs(2);
const NODE_DOWN_MIN: Duration = Duration::from_secs(2);
const NAIVE_DOWN_MIN: Duration = Duration::from_millis(500);
const GAP_MIN: Duration = Duration::from_millis(500);
const PG_DOWN_MIN: Duration = Duration::from_secs(1);
const ERRORS_MIN: Duration = Duration::from_secs(2);
/// Healthy time the producers go on after the deploy window at least, so recovery is seen
/// while records still arrive.
const TAIL_MIN: Duration = Duration::from_secs(3);
/// The spike window lasts at least this many `spike_ms`: the naive client's first attempt and
/// its immediate retries must all start while statements sleep.
const SPIKE_WINDOW_SPIKES_MIN: u32 = 2;
/// Every PostgreSQL call the lab itself makes (setup, flags, resets, sampling, counting).
const LAB_PG_TIMEOUT: Duration = Duration::from_secs(5);
/// Sampling calls are bounded tighter: a sample must not take longer than its interval.
const SAMPLE_CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the lab tries to create the sink and see it running.
const SETUP_WAIT: Duration = Duration::from_secs(30);
/// Attempts at producing the poison record.
const POISON_ATTEMPTS_MAX: u32 = 20;
/// Lag samples kept (a 1-hour run at 200 ms is 18 000).
const SAMPLES_MAX: usize = 100_000;
/// Most records one naive fetch keeps (the rest is fetched again), so its memory is bounded.
const NAIVE_FETCH_RECORDS_MAX: usize = 5_000;
/// The poison event's id: it is excluded from the missing rows and expected in the DLQ.
const POISON_EVENT_ID: &str = "poison-1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProducers {
    count: usize,
    send_interval: Dur,
    request_timeout: Dur,
    retry_for: Dur,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSink {
    name: String,
    table: String,
    batch_records_max: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNaive {
    table: String,
    group: String,
    batch_records_max: u32,
    commit_interval: Dur,
    statement_timeout: Dur,
    retries: u32,
    fetch_wait: Dur,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRun {
    duration: Dur,
    warmup: Dur,
    node_down: Dur,
    naive_down: Dur,
    gap: Dur,
    pg_down: Dur,
    resets: u32,
    errors: Dur,
    error_fraction: f64,
    spike: Dur,
    spike_ms: u64,
    drain_timeout: Dur,
    sample_interval: Dur,
}

/// A sink scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    kind: String,
    description: String,
    cluster: FileCluster,
    topic: FileTopic,
    producers: FileProducers,
    sink: FileSink,
    naive: FileNaive,
    run: FileRun,
}

/// Sections `--param NAME=VALUE` looks NAME up in, in this order.
const SECTIONS: [&str; 6] = ["cluster", "topic", "producers", "sink", "naive", "run"];

/// Whether `text` is a sink scenario (its top-level `kind`).
pub fn is_sink(text: &str) -> bool {
    super::scenario_kind(text).as_deref() == Some(KIND)
}

/// The name and description of a sink scenario, for `lab list`.
pub fn describe(origin: &str, text: &str) -> Result<(String, String)> {
    let f = load(origin, text, &[], None)?;
    Ok((f.name, f.description))
}

/// Parses and checks a file, with `--param NAME=VALUE` overrides and `--duration SECONDS`,
/// which sets `[run] duration` and scales every timing but `spike_ms`, `sample_interval` and
/// `drain_timeout` (each to at least its floor).
fn load(origin: &str, text: &str, params: &[(String, toml::Value)], duration_s: Option<f64>) -> Result<File> {
    let mut f: File = super::parse_special(origin, text, &SECTIONS, params)?;
    if let Some(s) = duration_s {
        if !(s.is_finite() && s > 0.0 && s <= RUN_SECONDS_MAX) {
            bail!("--duration must be above 0 and at most {RUN_SECONDS_MAX} seconds, got {s}");
        }
        let scale = s / f.run.duration.0.as_secs_f64().max(1e-3);
        let r = &mut f.run;
        r.duration = Dur(Duration::from_secs_f64(s));
        for (d, min) in [
            (&mut r.warmup, WARMUP_MIN),
            (&mut r.node_down, NODE_DOWN_MIN),
            (&mut r.naive_down, NAIVE_DOWN_MIN),
            (&mut r.gap, GAP_MIN),
            (&mut r.pg_down, PG_DOWN_MIN),
            (&mut r.errors, ERRORS_MIN),
            (&mut r.spike, Duration::ZERO),
        ] {
            *d = Dur(d.0.mul_f64(scale).max(min));
        }
    }
    // The spike window's floor holds with or without --duration.
    let spike_min = Duration::from_millis(f.run.spike_ms) * SPIKE_WINDOW_SPIKES_MIN;
    f.run.spike = Dur(f.run.spike.0.max(spike_min));
    check(&f).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
    Ok(f)
}

fn check(f: &File) -> Result<(), String> {
    if f.kind != KIND {
        return Err(format!("kind must be {KIND:?}, got {:?}", f.kind));
    }
    log_faults::check_cluster_and_topic(&f.cluster, &f.topic, PARTITIONS_MAX)?;
    let p = &f.producers;
    if !(1..=PRODUCERS_MAX).contains(&p.count) {
        return Err(format!("[producers] count must be 1 to {PRODUCERS_MAX}, got {}", p.count));
    }
    if p.request_timeout.0 < Duration::from_millis(100) || p.request_timeout.0 > Duration::from_secs(60) {
        return Err("[producers] request_timeout must be 100ms to 60s".into());
    }
    if p.send_interval.0 > Duration::from_secs(10) || p.retry_for.0 > Duration::from_secs(600) {
        return Err("[producers] send_interval must be at most 10s and retry_for at most 600s".into());
    }
    for (what, table) in [("[sink] table", &f.sink.table), ("[naive] table", &f.naive.table)] {
        let plain = !table.is_empty()
            && table.len() <= 63
            && table.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !table.starts_with(|c: char| c.is_ascii_digit());
        if !plain {
            return Err(format!(
                "{what} must be a plain lowercase identifier of at most 63 bytes, got {table:?}"
            ));
        }
    }
    if f.sink.table == f.naive.table {
        return Err("[sink] table and [naive] table must differ".into());
    }
    if f.sink.name.is_empty()
        || f.sink.name.len() > 100
        || !f.sink.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("[sink] name must be 1-100 of [A-Za-z0-9_-], got {:?}", f.sink.name));
    }
    if f.naive.group.is_empty() || f.naive.group.len() > 200 {
        return Err("[naive] group must be 1 to 200 bytes".into());
    }
    for (what, n) in [
        ("[sink] batch_records_max", f.sink.batch_records_max),
        ("[naive] batch_records_max", f.naive.batch_records_max),
    ] {
        if !(1..=BATCH_RECORDS_MAX).contains(&n) {
            return Err(format!("{what} must be 1 to {BATCH_RECORDS_MAX}, got {n}"));
        }
    }
    let n = &f.naive;
    if n.retries > NAIVE_RETRIES_MAX {
        return Err(format!("[naive] retries must be at most {NAIVE_RETRIES_MAX}"));
    }
    if n.statement_timeout.0 < Duration::from_millis(100) || n.statement_timeout.0 > Duration::from_secs(60) {
        return Err("[naive] statement_timeout must be 100ms to 60s".into());
    }
    if n.commit_interval.0 < Duration::from_millis(50) || n.commit_interval.0 > Duration::from_secs(60) {
        return Err("[naive] commit_interval must be 50ms to 60s".into());
    }
    if n.fetch_wait.0 >= p.request_timeout.0 {
        return Err("[naive] fetch_wait must be below [producers] request_timeout".into());
    }
    let r = &f.run;
    if r.duration.0.is_zero() || r.duration.0.as_secs_f64() > RUN_SECONDS_MAX {
        return Err(format!("[run] duration must be above 0 and at most {RUN_SECONDS_MAX}s"));
    }
    if !(0.0..=1.0).contains(&r.error_fraction) {
        return Err(format!("[run] error_fraction must be 0 to 1, got {}", r.error_fraction));
    }
    if r.resets > RESETS_MAX {
        return Err(format!("[run] resets must be at most {RESETS_MAX}"));
    }
    if Duration::from_millis(r.spike_ms) <= n.statement_timeout.0 || r.spike_ms > 30_000 {
        return Err(format!(
            "[run] spike_ms must exceed [naive] statement_timeout ({} ms; a shorter spike makes no client time out) and be at most 30000, got {}",
            n.statement_timeout.0.as_millis(),
            r.spike_ms
        ));
    }
    if r.sample_interval.0 < Duration::from_millis(50) || r.sample_interval.0 > Duration::from_secs(10) {
        return Err("[run] sample_interval must be 50ms to 10s".into());
    }
    for (what, d) in [
        ("warmup", r.warmup.0),
        ("node_down", r.node_down.0),
        ("naive_down", r.naive_down.0),
        ("gap", r.gap.0),
        ("pg_down", r.pg_down.0),
        ("errors", r.errors.0),
        ("spike", r.spike.0),
        ("drain_timeout", r.drain_timeout.0),
    ] {
        if d > Duration::from_secs(600) {
            return Err(format!("[run] {what} must be at most 600s"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: the lab's own calls, the tables, the fault trigger.

/// A connection of the lab's own (not a consumer's), every call bounded by `timeout`.
async fn pg_connect(conn: &str, timeout: Duration) -> Result<tokio_postgres::Client> {
    let mut config: tokio_postgres::Config = conn.parse().context("bad PostgreSQL connection string")?;
    config.connect_timeout(timeout);
    let (client, connection) =
        tokio::time::timeout(timeout, config.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| anyhow::anyhow!("PostgreSQL did not accept a connection within {timeout:?}"))??;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs `sql` (several statements) on a fresh connection, bounded by [`LAB_PG_TIMEOUT`].
async fn pg_batch(conn: &str, sql: &str) -> Result<()> {
    let client = pg_connect(conn, LAB_PG_TIMEOUT).await?;
    tokio::time::timeout(LAB_PG_TIMEOUT, client.batch_execute(sql))
        .await
        .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer within {LAB_PG_TIMEOUT:?}"))?
        .with_context(|| format!("PostgreSQL refused: {}", sql.lines().next().unwrap_or_default()))
}

/// [`pg_batch`], retried for up to [`SETUP_WAIT`] (PostgreSQL may be starting again).
async fn pg_batch_retry(conn: &str, sql: &str) -> Result<()> {
    let deadline = Instant::now() + SETUP_WAIT;
    loop {
        match pg_batch(conn, sql).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The tables, the flag table and the trigger. The sink's table has exactly the sink's columns
/// (docs/pipeline.md) plus the CHECK; the naive table has no key at all.
fn setup_sql(sink_table: &str, naive_table: &str) -> String {
    format!(
        r#"
CREATE TABLE lab_faults (id int PRIMARY KEY, error_fraction float8 NOT NULL, error_code text NOT NULL,
                         sleep_ms int NOT NULL);
INSERT INTO lab_faults VALUES (1, 0, '40001', 0);
CREATE FUNCTION lab_fault() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE f lab_faults;
BEGIN
  SELECT * INTO f FROM lab_faults WHERE id = 1;
  -- A latency spike: the statement goes on (and commits) after the client may have given up.
  IF f.sleep_ms > 0 THEN PERFORM pg_sleep(f.sleep_ms / 1000.0); END IF;
  IF random() < f.error_fraction THEN
    RAISE EXCEPTION 'lab: injected transient failure' USING ERRCODE = f.error_code;
  END IF;
  RETURN NULL;
END $$;
CREATE TABLE {sink_table} ("topic" text NOT NULL, "partition" int NOT NULL, "offset" bigint NOT NULL,
  "key" bytea, "value" jsonb, "timestamp" timestamptz NOT NULL,
  PRIMARY KEY ("topic", "partition", "offset"),
  CHECK ((value->>'amount')::float8 >= 0));
CREATE TABLE {naive_table} ("partition" int NOT NULL, "offset" bigint NOT NULL, event_id text,
  amount float8 CHECK (amount >= 0), value text);
CREATE TRIGGER lab_fault BEFORE INSERT ON {sink_table} FOR EACH STATEMENT EXECUTE FUNCTION lab_fault();
CREATE TRIGGER lab_fault BEFORE INSERT ON {naive_table} FOR EACH STATEMENT EXECUTE FUNCTION lab_fault();
"#
    )
}

/// Sets the trigger's flags (0, "", 0: healthy).
async fn set_flags(conn: &str, error_fraction: f64, error_code: &str, sleep_ms: u64) -> Result<()> {
    let code = if error_code.is_empty() { "40001" } else { error_code };
    pg_batch_retry(
        conn,
        &format!(
            "UPDATE lab_faults SET error_fraction = {error_fraction}, error_code = '{code}', sleep_ms = {sleep_ms} WHERE id = 1"
        ),
    )
    .await
}

/// `pg_terminate_backend` of every other client backend; how many were terminated.
async fn reset_connections(conn: &str) -> Result<i64> {
    let client = pg_connect(conn, LAB_PG_TIMEOUT).await?;
    let row = tokio::time::timeout(
        LAB_PG_TIMEOUT,
        client.query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
            &[],
        ),
    )
    .await
    .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer within {LAB_PG_TIMEOUT:?}"))??;
    Ok(row.get(0))
}

/// `(partition, offset, event_id)` of every row of `table` (`value->>'event_id'` for the
/// sink's jsonb values).
async fn table_rows(conn: &str, sql: &str) -> Result<Vec<(u32, u64, String)>> {
    let client = pg_connect(conn, LAB_PG_TIMEOUT).await?;
    let rows = tokio::time::timeout(LAB_PG_TIMEOUT * 4, client.query(sql, &[]))
        .await
        .map_err(|_| anyhow::anyhow!("counting rows took longer than {:?}", LAB_PG_TIMEOUT * 4))??;
    Ok(rows
        .iter()
        .map(|r| {
            let p: i32 = r.get(0);
            let o: i64 = r.get(1);
            let e: Option<String> = r.get(2);
            (p.max(0) as u32, o.max(0) as u64, e.unwrap_or_default())
        })
        .collect())
}

/// The sink's positions in the warehouse (`quorumdb_sink_offsets`), per partition.
async fn sink_positions(client: &tokio_postgres::Client, sink: &str, partitions: u32) -> Result<Vec<u64>> {
    let rows = tokio::time::timeout(
        SAMPLE_CALL_TIMEOUT,
        client.query("SELECT partition, next_offset FROM quorumdb_sink_offsets WHERE sink = $1", &[&sink]),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {SAMPLE_CALL_TIMEOUT:?}"))??;
    let mut out = vec![0u64; partitions as usize];
    for r in rows {
        let p: i32 = r.get(0);
        let next: i64 = r.get(1);
        if let Some(slot) = out.get_mut(p.max(0) as usize) {
            *slot = next.max(0) as u64;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The naive consumer.

/// What the naive consumer counted about itself.
#[derive(Debug, Default, Clone, Serialize)]
pub struct NaiveStats {
    /// INSERTs that succeeded (as far as the client knows).
    pub inserts_ok: u64,
    /// Immediate resends of a failed INSERT.
    pub retries: u64,
    /// INSERTs the client stopped waiting for (the server may still commit them).
    pub timeouts: u64,
    /// Batches (and their records) given up after the last retry: its "dead letters".
    pub batches_given_up: u64,
    pub records_given_up: u64,
    /// Whether the poison record was in a batch it gave up.
    pub poison_given_up: bool,
    /// Auto-commits of the fetched positions that the broker accepted.
    pub commits: u64,
    /// Times it was killed and started again from its committed offsets.
    pub restarts: u64,
}

/// State shared by the naive consumer's tasks and the lab (which samples its lag).
struct NaiveShared {
    ctx: Arc<Ctx>,
    pg: String,
    cfg: FileNaive,
    /// Per partition, the next offset to fetch: what the auto-commit commits, written or not.
    fetched: Mutex<Vec<u64>>,
    /// Per partition, the next offset whose batch was written or given up (its lag).
    processed: Mutex<Vec<u64>>,
    stats: Mutex<NaiveStats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The naive consumer: one task per partition and an auto-committer, started from the
/// group's committed offsets. Aborting the tasks is its kill -9 (no final commit).
mod naive {
    use super::*;

    /// Starts the consumer from its group's committed offsets (0 where none).
    pub(super) async fn start(
        n: &Arc<NaiveShared>,
        drain: &watch::Receiver<Option<(Vec<u64>, Instant)>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let committed = committed_offsets(n).await;
        *lock(&n.fetched) = committed.clone();
        *lock(&n.processed) = committed;
        let mut tasks = vec![tokio::spawn(auto_commit(n.clone()))];
        for p in 0..n.ctx.partitions {
            tasks.push(tokio::spawn(partition(n.clone(), p, drain.clone())));
        }
        tasks
    }

    /// The group's committed offsets, retried at the next broker until one answers (bounded).
    async fn committed_offsets(n: &NaiveShared) -> Vec<u64> {
        let partitions: Vec<i32> = (0..n.ctx.partitions as i32).collect();
        let deadline = Instant::now() + SETUP_WAIT;
        let mut node = 0;
        while Instant::now() < deadline {
            if let Ok(mut c) = n.ctx.connect(node).await {
                if let Ok(Ok(offsets)) = c.offset_fetch(&n.cfg.group, &n.ctx.topic, &partitions).await {
                    let mut out = vec![0u64; partitions.len()];
                    for (p, o) in offsets {
                        if let Some(slot) = out.get_mut(p.max(0) as usize) {
                            *slot = o.max(0) as u64;
                        }
                    }
                    return out;
                }
            }
            node += 1;
            tokio::time::sleep(Duration::from_millis(log_faults::RETRY_PAUSE_MS)).await;
        }
        // The seed's consumer would start from `auto.offset.reset`; the lab's starts at 0.
        vec![0; partitions.len()]
    }

    /// Commits the fetched positions every `commit_interval`, before or regardless of the
    /// writes: enable.auto.commit's behaviour with processing done after the poll.
    async fn auto_commit(n: Arc<NaiveShared>) {
        let mut node = 0usize;
        let mut conn: Option<KafkaConn> = None;
        loop {
            tokio::time::sleep(n.cfg.commit_interval.0).await;
            let offsets: Vec<(i32, i64)> =
                lock(&n.fetched).iter().enumerate().map(|(p, &o)| (p as i32, o as i64)).collect();
            if conn.is_none() {
                conn = n.ctx.connect(node).await.ok();
            }
            let Some(c) = conn.as_mut() else {
                node += 1;
                continue;
            };
            match c.offset_commit(&n.cfg.group, &n.ctx.topic, &offsets).await {
                Ok(0) => lock(&n.stats).commits += 1,
                _ => {
                    conn = None;
                    node += 1;
                }
            }
        }
    }

    /// One partition: fetch, advance the fetched position, INSERT in batches.
    async fn partition(n: Arc<NaiveShared>, p: u32, mut drain: watch::Receiver<Option<(Vec<u64>, Instant)>>) {
        let mut node = p as usize;
        let mut conn: Option<KafkaConn> = None;
        let mut pg: Option<tokio_postgres::Client> = None;
        let fetch_wait_ms = i32::try_from(n.cfg.fetch_wait.0.as_millis()).unwrap_or(i32::MAX);
        loop {
            let position = lock(&n.fetched)[p as usize];
            if let Some((targets, deadline)) = drain.borrow_and_update().as_ref() {
                if lock(&n.processed)[p as usize] >= targets[p as usize] || Instant::now() > *deadline {
                    return;
                }
            }
            let Some(c) = conn.as_mut() else {
                match n.ctx.connect(node).await {
                    Ok(c) => conn = Some(c),
                    Err(_) => {
                        node += 1;
                        tokio::time::sleep(Duration::from_millis(log_faults::RETRY_PAUSE_MS)).await;
                    }
                }
                continue;
            };
            let fetched = match c.fetch(&n.ctx.topic, p as i32, position, fetch_wait_ms).await {
                Ok(f) if f.error_code == 0 => f,
                _ => {
                    conn = None;
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(log_faults::RETRY_PAUSE_MS)).await;
                    continue;
                }
            };
            let records: Vec<(u64, String)> = fetched
                .records
                .into_iter()
                .filter(|(o, _)| *o >= position)
                .take(NAIVE_FETCH_RECORDS_MAX)
                .collect();
            let Some(last) = records.last().map(|r| r.0) else { continue };
            // The position moves at fetch time: the auto-commit may commit it before (or
            // without) the writes below.
            lock(&n.fetched)[p as usize] = last + 1;
            for chunk in records.chunks(n.cfg.batch_records_max as usize) {
                write_batch(&n, p, chunk, &mut pg).await;
                if let Some(&(o, _)) = chunk.last() {
                    lock(&n.processed)[p as usize] = o + 1;
                }
            }
        }
    }

    /// One plain INSERT of `chunk`, resent at once up to `retries` times, then given up.
    async fn write_batch(
        n: &NaiveShared,
        p: u32,
        chunk: &[(u64, String)],
        pg: &mut Option<tokio_postgres::Client>,
    ) {
        let partitions: Vec<i32> = vec![p as i32; chunk.len()];
        let offsets: Vec<i64> = chunk.iter().map(|(o, _)| *o as i64).collect();
        let mut events = Vec::with_capacity(chunk.len());
        let mut amounts = Vec::with_capacity(chunk.len());
        for (_, v) in chunk {
            let json: serde_json::Value = serde_json::from_str(v).unwrap_or_default();
            events.push(json["event_id"].as_str().unwrap_or_default().to_owned());
            amounts.push(json["amount"].as_f64().unwrap_or(0.0));
        }
        let values: Vec<&str> = chunk.iter().map(|(_, v)| v.as_str()).collect();
        let sql = format!(
            "INSERT INTO {} (\"partition\", \"offset\", event_id, amount, value) \
             SELECT * FROM unnest($1::int[], $2::bigint[], $3::text[], $4::float8[], $5::text[])",
            n.cfg.table
        );
        let timeout = n.cfg.statement_timeout.0;
        for attempt in 0..=n.cfg.retries {
            if attempt > 0 {
                lock(&n.stats).retries += 1;
            }
            if pg.is_none() {
                match pg_connect(&n.pg, timeout).await {
                    Ok(c) => *pg = Some(c),
                    Err(_) => continue,
                }
            }
            let Some(client) = pg.as_ref() else { continue };
            let r = tokio::time::timeout(
                timeout,
                client.execute(&sql, &[&partitions, &offsets, &events, &amounts, &values]),
            )
            .await;
            match r {
                Ok(Ok(_)) => {
                    lock(&n.stats).inserts_ok += 1;
                    return;
                }
                Ok(Err(e)) => {
                    // A broken connection is replaced; a refused statement is simply resent.
                    if e.is_closed() || e.as_db_error().is_none() {
                        *pg = None;
                    }
                }
                Err(_) => {
                    // Gave up waiting; the statement may still commit on the server.
                    lock(&n.stats).timeouts += 1;
                    *pg = None;
                }
            }
        }
        let mut s = lock(&n.stats);
        s.batches_given_up += 1;
        s.records_given_up += chunk.len() as u64;
        s.poison_given_up |= events.iter().any(|e| e == POISON_EVENT_ID);
    }
}

// ---------------------------------------------------------------------------------------------
// Lag sampling and what is computed from it.

/// One lag sample: seconds since the history started, then each consumer's total lag (records).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub sink_lag: u64,
    pub naive_lag: u64,
}

/// Samples both consumers' lag until `stop`.
async fn sampler(
    ctx: Arc<Ctx>,
    pg: String,
    sink: String,
    naive: Arc<NaiveShared>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut hws = vec![0u64; ctx.partitions as usize];
    let mut sink_pos = vec![0u64; ctx.partitions as usize];
    let mut node = 0usize;
    let mut kafka: Option<KafkaConn> = None;
    let mut client: Option<tokio_postgres::Client> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return samples,
        }
        for p in 0..ctx.partitions {
            if kafka.is_none() {
                kafka =
                    KafkaConn::connect(&ctx.kafka[node % ctx.kafka.len()], SAMPLE_CALL_TIMEOUT).await.ok();
            }
            let Some(c) = kafka.as_mut() else {
                node += 1;
                continue;
            };
            // Fetching at the last known watermark returns the new one and only what arrived
            // since, not the whole partition.
            match c.fetch(&ctx.topic, p as i32, hws[p as usize], 0).await {
                Ok(f) if f.error_code == 0 || f.error_code == kafka_wire::OFFSET_OUT_OF_RANGE => {
                    hws[p as usize] = hws[p as usize].max(f.high_watermark.max(0) as u64);
                }
                _ => {
                    kafka = None;
                    node += 1;
                }
            }
        }
        if client.is_none() {
            client = pg_connect(&pg, SAMPLE_CALL_TIMEOUT).await.ok();
        }
        // While PostgreSQL is down the sink cannot move either: its last known position stands.
        if let Some(c) = client.as_ref() {
            match sink_positions(c, &sink, ctx.partitions).await {
                Ok(pos) => sink_pos = pos,
                Err(_) => client = None,
            }
        }
        let naive_pos = lock(&naive.processed).clone();
        let lag = |pos: &[u64]| hws.iter().zip(pos).map(|(h, p)| h.saturating_sub(*p)).sum::<u64>();
        if samples.len() < SAMPLES_MAX {
            samples.push(Sample {
                t_s: ctx.now_ns() as f64 / 1e9,
                sink_lag: lag(&sink_pos),
                naive_lag: lag(&naive_pos),
            });
        }
    }
}

/// The nearest-rank `q` quantile of `values` (0 when empty).
fn quantile(values: &mut [u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// `(pre-fault p99, recovery seconds)` of one consumer's lag series: the p99 over the samples
/// before `faults_start_s`, and the time from `healthy_s` to the first sample at or after it
/// whose lag is at or under that p99 (at least 1 record: a lag of 0 is not a steady state of
/// a consumer that commits in batches). `None`: it never got back under.
fn recovery(series: &[(f64, u64)], faults_start_s: f64, healthy_s: f64) -> (u64, Option<f64>) {
    let mut before: Vec<u64> = series.iter().filter(|(t, _)| *t < faults_start_s).map(|s| s.1).collect();
    let p99 = quantile(&mut before, 0.99);
    let threshold = p99.max(1);
    let back =
        series.iter().find(|(t, lag)| *t >= healthy_s && *lag <= threshold).map(|(t, _)| t - healthy_s);
    (p99, back)
}

// ---------------------------------------------------------------------------------------------
// The report.

/// One fault window.
#[derive(Debug, Clone, Serialize)]
pub struct FaultWindow {
    /// `node-kill`, `naive-kill`, `pg-restart`, `connection-reset`, `injected-errors`,
    /// `latency-spike`.
    pub kind: String,
    pub detail: String,
    pub start_s: f64,
    pub end_s: f64,
}

/// What one consumer did.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerReport {
    pub consumer: String,
    pub table: String,
    pub rows: u64,
    /// Rows beyond one per `(partition, offset)`.
    pub duplicate_rows: u64,
    /// Rows beyond one per event id (what a business key would have caught).
    pub duplicate_events: u64,
    /// Acknowledged records (the poison one excepted) with no row.
    pub missing_rows: u64,
    /// QuorumDB: records in the dead-letter topic; naive: records it gave up on.
    pub dead_letters: u64,
    /// Whether the poison record is among them.
    pub poison_dead_lettered: bool,
    /// QuorumDB: each dead letter's `quorumdb.error` and `quorumdb.attempts` headers, as
    /// `offset N: attempts=A error=E` (empty for the naive consumer, which has no DLQ).
    pub dead_letter_headers: Vec<String>,
    /// QuorumDB: `quorumdb_sink_retries_total` over the nodes (killed incarnations included);
    /// naive: its immediate resends.
    pub retries: u64,
    pub peak_lag: u64,
    pub pre_fault_p99_lag: u64,
    /// From the end of the deploy window until the lag was back under its pre-fault p99.
    pub recovery_s: Option<f64>,
    /// Whether every partition was drained to the final high watermark.
    pub drained: bool,
    pub examples: Vec<String>,
}

/// What the report says about the run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub seed: u64,
    pub command: String,
    pub nodes: usize,
    pub topic: String,
    pub partitions: u32,
    pub producers: usize,
    pub duration_s: f64,
    pub records_acknowledged: u64,
    pub producer_sends_unknown: u64,
    pub final_high_watermarks: Vec<u64>,
    pub poison_offsets: Vec<(u32, u64)>,
    /// Seconds since the start: the first fault, and the end of the deploy window.
    pub faults_start_s: f64,
    pub deploy_start_s: f64,
    pub deploy_end_s: f64,
    pub faults: Vec<FaultWindow>,
    pub fault_counts: BTreeMap<String, u64>,
    pub quorumdb: ConsumerReport,
    pub naive: ConsumerReport,
    pub naive_stats: NaiveStats,
    /// Whether the naive consumer showed neither duplicates nor missing rows (the faults did
    /// not bite).
    pub naive_unharmed: bool,
    pub samples: Vec<Sample>,
    /// Whether the producers' history hit its op limit (they then stopped early).
    pub history_full: bool,
    pub violations: u64,
    pub violated: Vec<String>,
    pub wall_s: f64,
}

/// Rows of a table judged against the acknowledged records.
struct Judged {
    rows: u64,
    duplicate_rows: u64,
    duplicate_events: u64,
    missing_rows: u64,
    examples: Vec<String>,
}

/// Duplicate and missing rows of `rows` against `acked` (`(partition, offset) → event id`,
/// the poison record left out).
fn judge(rows: &[(u32, u64, String)], acked: &BTreeMap<(u32, u64), String>) -> Judged {
    let mut by_offset: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    let mut events: BTreeSet<&str> = BTreeSet::new();
    for (p, o, e) in rows {
        *by_offset.entry((*p, *o)).or_insert(0) += 1;
        events.insert(e.as_str());
    }
    let mut examples = Vec::new();
    for ((p, o), n) in by_offset.iter().filter(|(_, n)| **n > 1).take(5) {
        examples.push(format!("duplicate: partition {p} offset {o} stored {n} times"));
    }
    let missing: Vec<_> = acked.iter().filter(|(k, _)| !by_offset.contains_key(k)).collect();
    for ((p, o), e) in missing.iter().take(5) {
        examples.push(format!("missing: partition {p} offset {o} ({e})"));
    }
    Judged {
        rows: rows.len() as u64,
        duplicate_rows: rows.len() as u64 - by_offset.len() as u64,
        duplicate_events: rows.len() as u64 - events.len() as u64,
        missing_rows: missing.len() as u64,
        examples,
    }
}

/// `quorumdb_sink_retries_total` of `sink` on one node (0 when it does not answer).
async fn scrape_retries(http: &str, sink: &str) -> u64 {
    let client = reqwest::Client::builder().timeout(LAB_PG_TIMEOUT).build();
    let Ok(client) = client else { return 0 };
    let Ok(resp) = client.get(format!("{http}/metrics")).send().await else { return 0 };
    let Ok(text) = resp.text().await else { return 0 };
    let label = format!("sink=\"{sink}\"");
    text.lines()
        .filter(|l| l.starts_with("quorumdb_sink_retries_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Every value of `topic`'s partition 0 (the dead-letter topic has one), `[]` if it does not
/// exist (nothing was dead-lettered).
async fn read_dead_letters(ctx: &Ctx, topic: &str) -> Result<(Vec<String>, Vec<String>)> {
    let mut dlq = Ctx::new(ctx.kafka.clone(), topic, 1, ctx.request_timeout);
    dlq.started = ctx.started;
    let mut c = dlq.connect(0).await.context("cannot reach a broker for the dead-letter topic")?;
    let first = c.fetch(topic, 0, 0, 0).await.context("cannot fetch the dead-letter topic")?;
    match first.error_code {
        // No such topic: nothing was ever dead-lettered.
        3 => return Ok((Vec::new(), Vec::new())),
        0 => {}
        code => eprintln!(
            "dead-letter topic {topic}: {} (log start {}, high watermark {})",
            log_faults::error_name(code),
            first.log_start_offset,
            first.high_watermark
        ),
    }
    let (start, hw) = log_faults::final_bounds(&dlq, 0).await?;
    let read = log_faults::final_read(&dlq, 0, start, hw).await?;
    // The headers of the dead letters (a handful: one fetch holds them).
    let fetched = c.fetch(topic, 0, start, 0).await.context("cannot fetch the dead-letter headers")?;
    let headers = fetched
        .headers
        .iter()
        .map(|(o, h)| {
            let get = |k: &str| h.iter().find(|(n, _)| n == k).map_or("(missing)", |(_, v)| v.as_str());
            format!("offset {o}: attempts={} error={}", get("quorumdb.attempts"), get("quorumdb.error"))
        })
        .collect();
    Ok((read.records.into_iter().map(|(_, v)| v).collect(), headers))
}

/// Produces the poison event to partition 0 (retried at the next broker until acknowledged);
/// the offsets it may have landed at (a retried unknown outcome may have landed twice).
async fn produce_poison(ctx: &Ctx) -> Vec<(u32, u64)> {
    let value = format!("{{\"event_id\":\"{POISON_EVENT_ID}\",\"amount\":-1}}");
    for node in 0..POISON_ATTEMPTS_MAX as usize {
        if let Ok(mut c) = ctx.connect(node).await {
            let ts = log_faults::wall_ms();
            let timeout_ms = (ctx.request_timeout.as_millis() / 2) as i32;
            if let Ok(kafka_wire::Produced::Ok(o)) =
                c.produce(&ctx.topic, 0, &value, None, ts, timeout_ms).await
            {
                return vec![(0, o)];
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Vec::new()
}

/// Creates the sink over HTTP through any node, retrying while the cluster settles, then waits
/// until every partition has its offsets row (its workers run).
async fn create_sink(cluster: &LabCluster, f: &File, pg: &str) -> Result<()> {
    let def = quorumdb_api::NewSink {
        name: f.sink.name.clone(),
        topics: vec![f.topic.name.clone()],
        postgres: pg.to_owned(),
        table: f.sink.table.clone(),
        key: Some("offset".into()),
        value: Some("jsonb".into()),
        batch_records_max: Some(f.sink.batch_records_max),
        ..Default::default()
    };
    let deadline = Instant::now() + SETUP_WAIT;
    let mut i = 0;
    loop {
        match cluster.client(i % f.cluster.nodes).create_sink(&def).await {
            Ok(_) => break,
            Err(e) if Instant::now() > deadline => bail!("cannot create sink {:?}: {e}", f.sink.name),
            Err(_) => {
                i += 1;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    let client = pg_connect(pg, LAB_PG_TIMEOUT).await?;
    loop {
        let rows = tokio::time::timeout(
            LAB_PG_TIMEOUT,
            client.query_one("SELECT count(*) FROM quorumdb_sink_offsets WHERE sink = $1", &[&f.sink.name]),
        )
        .await;
        // Before the first worker ran, the offsets table does not exist: not an error yet.
        if matches!(rows, Ok(Ok(ref r)) if r.get::<_, i64>(0) == i64::from(f.topic.partitions)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("sink {:?} has no offsets row per partition within {SETUP_WAIT:?}", f.sink.name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node owning most of the sink's partitions (ties broken by the seed), per
/// `GET /v1/sinks/{name}`; a random node if no owner is known.
async fn busiest_owner(cluster: &LabCluster, f: &File, rng: &mut StdRng) -> usize {
    let mut owned = vec![0usize; f.cluster.nodes];
    for i in 0..f.cluster.nodes {
        if let Ok(info) = cluster.client(i).sink(&f.sink.name).await {
            for p in &info.partitions {
                if let Some(n) =
                    p.owner.as_deref().and_then(|o| (0..f.cluster.nodes).find(|&j| cluster.id(j) == o))
                {
                    owned[n] += 1;
                }
            }
            break;
        }
    }
    let most = owned.iter().copied().max().unwrap_or(0);
    let candidates: Vec<usize> = (0..owned.len()).filter(|&i| owned[i] == most).collect();
    candidates[rng.random_range(0..candidates.len())]
}

/// A fault window recorder: the clock, the windows.
struct Faults<'a> {
    ctx: &'a Ctx,
    windows: Vec<FaultWindow>,
}

impl Faults<'_> {
    fn now_s(&self) -> f64 {
        self.ctx.now_ns() as f64 / 1e9
    }

    fn push(&mut self, kind: &str, detail: String, start_s: f64) {
        let end_s = self.now_s();
        eprintln!("{start_s:>6.1} s: {kind} ({detail}) for {:.1} s", end_s - start_s);
        self.windows.push(FaultWindow { kind: kind.into(), detail, start_s, end_s });
    }
}

/// Runs the scenario in `text`; the exit code (0, or [`super::EXIT_VIOLATED`]).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    origin: &str,
    text: &str,
    params: &[(String, toml::Value)],
    duration_s: Option<f64>,
    seed: u64,
    out: &Path,
    command: String,
) -> Result<i32> {
    let wall = Instant::now();
    let f = load(origin, text, params, duration_s)?;
    std::fs::create_dir_all(out.join("logs")).with_context(|| format!("cannot create {}", out.display()))?;
    let r = &f.run;
    eprintln!(
        "lab: {}, seed {seed}, {:.0} s of production; warmup {:.1} s, node down {:.1} s, PostgreSQL down {:.1} s, {} resets, errors {:.1} s, spikes of {} ms for {:.1} s; output in {}",
        f.name,
        r.duration.0.as_secs_f64(),
        r.warmup.0.as_secs_f64(),
        r.node_down.0.as_secs_f64(),
        r.pg_down.0.as_secs_f64(),
        r.resets,
        r.errors.0.as_secs_f64(),
        r.spike_ms,
        r.spike.0.as_secs_f64(),
        out.display()
    );
    let port = quorumdb::launcher::free_ports(1)?[0];
    let pg_name = format!("lab-{seed}");
    let pg = Arc::new(
        tokio::task::spawn_blocking(move || PrivatePg::start(&pg_name, port))
            .await
            .context("starting PostgreSQL panicked")?
            .context("cannot start a private PostgreSQL")?,
    );
    let conn = pg.connection_string();
    pg_batch_retry(&conn, &setup_sql(&f.sink.table, &f.naive.table)).await?;
    let (mut cluster, mut ctx) =
        log_faults::start_cluster(&f.cluster, &f.topic, f.producers.request_timeout.0, &out.join("logs"))
            .await?;
    ctx.send_interval = f.producers.send_interval.0;
    ctx.retry_for = f.producers.retry_for.0;
    ctx.json_values = true;
    let ctx = Arc::new(ctx);
    log_faults::create_topic(&ctx).await?;
    create_sink(&cluster, &f, &conn).await?;
    eprintln!(
        "topic {:?}: {} partitions; sink {:?} into {}, naive consumer into {}",
        f.topic.name, f.topic.partitions, f.sink.name, f.sink.table, f.naive.table
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let naive_shared = Arc::new(NaiveShared {
        ctx: ctx.clone(),
        pg: conn.clone(),
        cfg: f.naive.clone(),
        fetched: Mutex::new(vec![0; f.topic.partitions as usize]),
        processed: Mutex::new(vec![0; f.topic.partitions as usize]),
        stats: Mutex::new(NaiveStats::default()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(None);
    let (sampler_stop_tx, sampler_stop_rx) = watch::channel(false);
    let mut naive_tasks = naive::start(&naive_shared, &drain_rx).await;
    let producers: Vec<_> = (0..f.producers.count)
        .map(|i| tokio::spawn(log_faults::producer(ctx.clone(), i as u32, true, stop_rx.clone())))
        .collect();
    let sampler_task = tokio::spawn(sampler(
        ctx.clone(),
        conn.clone(),
        f.sink.name.clone(),
        naive_shared.clone(),
        r.sample_interval.0,
        sampler_stop_rx,
    ));

    // Warmup: the baseline of both lags.
    tokio::time::sleep(r.warmup.0).await;
    let mut faults = Faults { ctx: &ctx, windows: Vec::new() };
    let faults_start_s = faults.now_s();

    // Outside the deploy window: kill -9 of the busiest sink owner, then of the naive consumer.
    let victim = busiest_owner(&cluster, &f, &mut rng).await;
    let victim_retries = scrape_retries(&cluster.http_url(victim), &f.sink.name).await;
    let t = faults.now_s();
    cluster.kill(victim)?;
    tokio::time::sleep(r.node_down.0).await;
    cluster.restart(&[victim]).await?;
    faults.push("node-kill", format!("kill -9 {}, restarted", cluster.id(victim)), t);
    tokio::time::sleep(r.gap.0).await;
    let t = faults.now_s();
    for task in naive_tasks.drain(..) {
        task.abort();
        let _ = task.await;
    }
    tokio::time::sleep(r.naive_down.0).await;
    naive_tasks = naive::start(&naive_shared, &drain_rx).await;
    lock(&naive_shared.stats).restarts += 1;
    faults.push("naive-kill", "naive consumer killed, restarted from its committed offsets".into(), t);
    tokio::time::sleep(r.gap.0).await;

    // The deploy window.
    let deploy_start_s = faults.now_s();
    let t = faults.now_s();
    let stopper = pg.clone();
    tokio::task::spawn_blocking(move || stopper.stop()).await.context("stopping PostgreSQL panicked")??;
    tokio::time::sleep(r.pg_down.0).await;
    let starter = pg.clone();
    tokio::task::spawn_blocking(move || starter.start_again())
        .await
        .context("starting PostgreSQL panicked")??;
    faults.push(
        "pg-restart",
        format!("pg_ctl stop -m fast, {:.1} s down, start", r.pg_down.0.as_secs_f64()),
        t,
    );
    tokio::time::sleep(r.gap.0).await;
    for _ in 0..r.resets {
        let t = faults.now_s();
        let n = reset_connections(&conn).await?;
        faults.push("connection-reset", format!("pg_terminate_backend of {n} client backends"), t);
        tokio::time::sleep(r.gap.0).await;
    }
    let t = faults.now_s();
    set_flags(&conn, r.error_fraction, "40001", 0).await?;
    let poison_offsets = produce_poison(&ctx).await;
    tokio::time::sleep(r.errors.0 / 2).await;
    set_flags(&conn, r.error_fraction, "57014", 0).await?;
    tokio::time::sleep(r.errors.0 / 2).await;
    set_flags(&conn, 0.0, "", 0).await?;
    faults.push(
        "injected-errors",
        format!(
            "{:.0}% of statements fail with 40001, then 57014; poison at {poison_offsets:?}",
            r.error_fraction * 100.0
        ),
        t,
    );
    tokio::time::sleep(r.gap.0).await;
    let t = faults.now_s();
    set_flags(&conn, 0.0, "", r.spike_ms).await?;
    tokio::time::sleep(r.spike.0).await;
    set_flags(&conn, 0.0, "", 0).await?;
    faults.push("latency-spike", format!("every INSERT sleeps {} ms first", r.spike_ms), t);
    let deploy_end_s = faults.now_s();

    // Healthy again: producers go on to the run's end (and at least TAIL_MIN more).
    let produce_until =
        ctx.started + r.duration.0.max(Duration::from_secs_f64(deploy_end_s) + TAIL_MIN.max(r.warmup.0));
    tokio::time::sleep(produce_until.saturating_duration_since(Instant::now())).await;
    let _ = stop_tx.send(true);
    let mut unknown = 0;
    for p in producers {
        let s = p.await.context("a producer task panicked")?;
        unknown += s.unknown;
    }
    let mut hws = Vec::new();
    for p in 0..f.topic.partitions {
        hws.push(log_faults::final_bounds(&ctx, p).await?.1);
    }
    eprintln!("producers stopped; high watermarks {hws:?}; consumers draining");
    let drain_deadline = Instant::now() + r.drain_timeout.0;
    let _ = drain_tx.send(Some((hws.clone(), drain_deadline)));
    let sink_drained = async {
        let Ok(client) = pg_connect(&conn, LAB_PG_TIMEOUT).await else { return false };
        while Instant::now() < drain_deadline {
            if let Ok(pos) = sink_positions(&client, &f.sink.name, f.topic.partitions).await {
                if pos.iter().zip(&hws).all(|(p, h)| p >= h) {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
    .await;
    // The naive partition tasks return once drained (or at the deadline); the committer runs
    // until aborted.
    let mut naive_drained = true;
    for task in naive_tasks.drain(1..) {
        let _ = task.await;
    }
    {
        let processed = lock(&naive_shared.processed);
        naive_drained &= processed.iter().zip(&hws).all(|(p, h)| p >= h);
    }
    for task in naive_tasks.drain(..) {
        task.abort();
    }
    // A few more samples of the drained state, then stop sampling.
    tokio::time::sleep(r.sample_interval.0 * 2).await;
    let _ = sampler_stop_tx.send(true);
    let samples = sampler_task.await.context("the sampler panicked")?;
    let mut sink_retries = victim_retries;
    for i in 0..f.cluster.nodes {
        sink_retries += scrape_retries(&cluster.http_url(i), &f.sink.name).await;
    }
    let dlq_topic = format!("{}.dlq", f.sink.name);
    let (dead_letters, dead_letter_headers) = read_dead_letters(&ctx, &dlq_topic).await.unwrap_or_else(|e| {
        eprintln!("cannot read {dlq_topic}: {e:#}");
        (Vec::new(), Vec::new())
    });
    eprintln!(
        "sink drained: {sink_drained}; naive drained: {naive_drained}; {} dead letters",
        dead_letters.len()
    );
    drop(cluster);

    // Acknowledged records, the poison event left out.
    let ops = std::mem::take(&mut *lock(&ctx.ops));
    let acked: BTreeMap<(u32, u64), String> = ops
        .iter()
        .filter_map(|op| match op {
            LogOp::Send(s) if s.result == OpResult::Ok => {
                let event = serde_json::from_str::<serde_json::Value>(&s.value).ok()?["event_id"]
                    .as_str()?
                    .to_owned();
                Some(((s.partition, s.offset?), event))
            }
            _ => None,
        })
        .collect();
    let sink_rows =
        table_rows(&conn, &format!("SELECT partition, \"offset\", value->>'event_id' FROM {}", f.sink.table))
            .await?;
    let naive_rows =
        table_rows(&conn, &format!("SELECT partition, \"offset\", event_id FROM {}", f.naive.table)).await?;
    drop(pg);
    let poisonless = |rows: Vec<(u32, u64, String)>| -> Vec<(u32, u64, String)> {
        rows.into_iter().filter(|r| r.2 != POISON_EVENT_ID).collect()
    };
    let sink_j = judge(&poisonless(sink_rows), &acked);
    let naive_j = judge(&poisonless(naive_rows), &acked);
    let series =
        |pick: fn(&Sample) -> u64| -> Vec<(f64, u64)> { samples.iter().map(|s| (s.t_s, pick(s))).collect() };
    let sink_series = series(|s| s.sink_lag);
    let naive_series = series(|s| s.naive_lag);
    let (sink_p99, sink_recovery) = recovery(&sink_series, faults_start_s, deploy_end_s);
    let (naive_p99, naive_recovery) = recovery(&naive_series, faults_start_s, deploy_end_s);
    let nstats = lock(&naive_shared.stats).clone();
    let quorumdb = ConsumerReport {
        consumer: "quorumdb-sink".into(),
        table: f.sink.table.clone(),
        rows: sink_j.rows,
        duplicate_rows: sink_j.duplicate_rows,
        duplicate_events: sink_j.duplicate_events,
        missing_rows: sink_j.missing_rows,
        dead_letters: dead_letters.len() as u64,
        poison_dead_lettered: dead_letters.iter().any(|v| v.contains(POISON_EVENT_ID)),
        dead_letter_headers,
        retries: sink_retries,
        peak_lag: sink_series.iter().map(|s| s.1).max().unwrap_or(0),
        pre_fault_p99_lag: sink_p99,
        recovery_s: sink_recovery,
        drained: sink_drained,
        examples: sink_j.examples,
    };
    let naive = ConsumerReport {
        consumer: "naive".into(),
        table: f.naive.table.clone(),
        rows: naive_j.rows,
        duplicate_rows: naive_j.duplicate_rows,
        duplicate_events: naive_j.duplicate_events,
        missing_rows: naive_j.missing_rows,
        dead_letters: nstats.records_given_up,
        // Its batches are given up whole, the poison record's neighbours with it.
        poison_dead_lettered: nstats.poison_given_up,
        dead_letter_headers: Vec::new(),
        retries: nstats.retries,
        peak_lag: naive_series.iter().map(|s| s.1).max().unwrap_or(0),
        pre_fault_p99_lag: naive_p99,
        recovery_s: naive_recovery,
        drained: naive_drained,
        examples: naive_j.examples,
    };
    let mut violated = Vec::new();
    if quorumdb.duplicate_rows > 0 || quorumdb.duplicate_events > 0 {
        violated.push(format!(
            "QuorumDB's sink stored {} duplicate rows ({} duplicate events)",
            quorumdb.duplicate_rows, quorumdb.duplicate_events
        ));
    }
    if quorumdb.missing_rows > 0 {
        violated.push(format!("QuorumDB's sink is missing {} acknowledged records", quorumdb.missing_rows));
    }
    if !quorumdb.poison_dead_lettered {
        violated.push(format!("the poison record is not in {}.dlq", f.sink.name));
    }
    // Each dead letter says why and after how many write attempts (a poison record refused by
    // PostgreSQL: its error and at least one attempt).
    let bad_headers: Vec<&String> = quorumdb
        .dead_letter_headers
        .iter()
        .filter(|h| h.contains("(missing)") || h.contains("attempts=0 "))
        .collect();
    if quorumdb.dead_letter_headers.len() as u64 != quorumdb.dead_letters || !bad_headers.is_empty() {
        violated.push(format!(
            "dead letters without their error and attempt headers: {} of {} have them; {bad_headers:?}",
            quorumdb.dead_letter_headers.len(),
            quorumdb.dead_letters
        ));
    }
    if quorumdb.recovery_s.is_none() {
        violated.push("QuorumDB's sink lag never got back under its pre-fault p99".into());
    }
    let mut fault_counts = BTreeMap::new();
    for w in &faults.windows {
        *fault_counts.entry(w.kind.clone()).or_insert(0) += 1;
    }
    let naive_unharmed = naive.duplicate_rows == 0 && naive.missing_rows == 0;
    let report = Report {
        scenario: f.name.clone(),
        description: f.description.clone(),
        seed,
        command,
        nodes: f.cluster.nodes,
        topic: f.topic.name.clone(),
        partitions: f.topic.partitions,
        producers: f.producers.count,
        duration_s: r.duration.0.as_secs_f64(),
        records_acknowledged: acked.len() as u64,
        producer_sends_unknown: unknown,
        final_high_watermarks: hws,
        poison_offsets,
        faults_start_s,
        deploy_start_s,
        deploy_end_s,
        faults: faults.windows,
        fault_counts,
        quorumdb,
        naive,
        naive_stats: nstats,
        naive_unharmed,
        samples,
        history_full: ctx.full(),
        violations: violated.len() as u64,
        violated,
        wall_s: wall.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&report).context("cannot encode the report")?;
    std::fs::write(out.join("report.json"), json).context("cannot write report.json")?;
    std::fs::write(out.join("report.html"), html(&report)).context("cannot write report.html")?;
    print!("{}", summary(&report));
    println!("report: {}", out.join("report.html").display());
    println!("replay: {}", report.command);
    Ok(if report.violations == 0 { 0 } else { super::EXIT_VIOLATED })
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "never".into(), |s| format!("{s:.1} s"))
}

/// The rows of the side-by-side table: (label, QuorumDB's, the naive consumer's).
fn rows(r: &Report) -> Vec<(&'static str, String, String)> {
    let (q, n) = (&r.quorumdb, &r.naive);
    let both = |f: fn(&ConsumerReport) -> String| (f(q), f(n));
    let mut out = Vec::new();
    for (label, f) in [
        ("rows", (|c: &ConsumerReport| c.rows.to_string()) as fn(&ConsumerReport) -> String),
        ("duplicate rows", |c| c.duplicate_rows.to_string()),
        ("duplicate events", |c| c.duplicate_events.to_string()),
        ("missing rows", |c| c.missing_rows.to_string()),
        ("dead letters", |c| c.dead_letters.to_string()),
        ("poison dead-lettered", |c| c.poison_dead_lettered.to_string()),
        ("dead-letter headers", |c| {
            if c.dead_letter_headers.is_empty() {
                "-".into()
            } else {
                c.dead_letter_headers.join("; ")
            }
        }),
        ("retries", |c| c.retries.to_string()),
        ("peak lag", |c| c.peak_lag.to_string()),
        ("pre-fault p99 lag", |c| c.pre_fault_p99_lag.to_string()),
        ("recovery", |c| secs(c.recovery_s)),
        ("drained", |c| c.drained.to_string()),
    ] {
        let (a, b) = both(f);
        out.push((label, a, b));
    }
    out
}

/// The printed summary: the two consumers side by side.
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\n{}: {} nodes, topic {} ({} partitions), {} producers, {:.0} s, {:.0} s wall; {} records acknowledged",
        r.scenario, r.nodes, r.topic, r.partitions, r.producers, r.duration_s, r.wall_s, r.records_acknowledged
    );
    let counts: Vec<String> = r.fault_counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(
        s,
        "faults: {} ({}); deploy window {:.1}-{:.1} s",
        r.faults.len(),
        counts.join(", "),
        r.deploy_start_s,
        r.deploy_end_s
    );
    let _ = writeln!(s, "{:<22} {:>14} {:>14}", "", "quorumdb-sink", "naive");
    for (label, a, b) in rows(r) {
        let _ = writeln!(s, "{label:<22} {a:>14} {b:>14}");
    }
    let n = &r.naive_stats;
    let _ = writeln!(
        s,
        "naive: {} INSERTs ok, {} timed out, {} batches given up, {} auto-commits, {} restarts",
        n.inserts_ok, n.timeouts, n.batches_given_up, n.commits, n.restarts
    );
    if r.naive_unharmed {
        let _ = writeln!(
            s,
            "WARNING: the naive consumer shows neither duplicates nor missing rows: the faults did not bite"
        );
    }
    for v in &r.violated {
        let _ = writeln!(s, "VIOLATED: {v}");
    }
    if r.violations == 0 {
        let _ = writeln!(
            s,
            "held:     QuorumDB's sink: 0 duplicates, 0 missing rows, the poison record dead-lettered, recovery {}",
            secs(r.quorumdb.recovery_s)
        );
    }
    s
}

/// A self-contained page: the side-by-side table, lag over time with the fault windows
/// shaded, every fault.
fn html(r: &Report) -> String {
    use super::html::esc;
    let mut s = super::html::page_head(&r.scenario, &r.description, r.seed, &r.command);
    let _ = write!(
        s,
        "<p>{} nodes; topic {} with {} partitions; {} producers for {:.0} s; {} records acknowledged; {:.0} s wall.</p>",
        r.nodes,
        esc(&r.topic),
        r.partitions,
        r.producers,
        r.duration_s,
        r.records_acknowledged,
        r.wall_s
    );
    s.push_str("<h2>Side by side</h2><table><tr><th></th><th>QuorumDB sink</th><th>naive consumer</th></tr>");
    for (label, a, b) in rows(r) {
        let bad = |v: &str| (label.starts_with("duplicate") || label == "missing rows") && v != "0";
        let _ = write!(
            s,
            "<tr><td>{label}</td><td class=\"{}\">{}</td><td class=\"{}\">{}</td></tr>",
            if bad(&a) { "bad" } else { "" },
            esc(&a),
            if bad(&b) { "bad" } else { "" },
            esc(&b)
        );
    }
    s.push_str("</table>");
    s.push_str(&lag_chart(r));
    s.push_str("<h2>Faults</h2><table><tr><th>kind</th><th>what</th><th>from s</th><th>to s</th></tr>");
    for w in &r.faults {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            esc(&w.kind),
            esc(&w.detail),
            w.start_s,
            w.end_s
        );
    }
    s.push_str("</table>");
    for c in [&r.quorumdb, &r.naive] {
        if !c.examples.is_empty() {
            let _ =
                write!(s, "<h3>{} examples</h3><pre>{}</pre>", esc(&c.consumer), esc(&c.examples.join("\n")));
        }
    }
    s.push_str("</body></html>\n");
    s
}

/// Both lags over time, the fault windows shaded (inline SVG).
fn lag_chart(r: &Report) -> String {
    let (w, h, pad) = (900.0, 300.0, 40.0);
    let tmax = r.samples.last().map_or(1.0, |s| s.t_s).max(1.0);
    let vmax = r.samples.iter().map(|s| s.sink_lag.max(s.naive_lag)).max().unwrap_or(1).max(1) as f64;
    let x = |t: f64| pad + t / tmax * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / vmax * (h - 2.0 * pad);
    let mut s = format!(
        "<h2>Lag (records)</h2><svg width=\"{w}\" height=\"{h}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for f in &r.faults {
        let _ = write!(
            s,
            "<rect x=\"{:.1}\" y=\"{pad}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#fdd\"><title>{}</title></rect>",
            x(f.start_s),
            (x(f.end_s) - x(f.start_s)).max(1.0),
            h - 2.0 * pad,
            super::html::esc(&f.kind)
        );
    }
    for (color, pick) in
        [("#1f77b4", (|s: &Sample| s.sink_lag) as fn(&Sample) -> u64), ("#d62728", |s| s.naive_lag)]
    {
        let points: Vec<String> =
            r.samples.iter().map(|smp| format!("{:.1},{:.1}", x(smp.t_s), y(pick(smp) as f64))).collect();
        let _ = write!(s, "<polyline fill=\"none\" stroke=\"{color}\" points=\"{}\"/>", points.join(" "));
    }
    let _ = write!(
        s,
        "<text x=\"{pad}\" y=\"20\" font-size=\"12\">max {vmax:.0}; blue: QuorumDB sink, red: naive; {tmax:.0} s</text></svg>"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the file loads, `--duration` scales to the floors, `--param` lands, bad values are refused.
    #[test]
    fn scenario_file_loads_scales_and_refuses_bad_values() {
        let text = EMBEDDED[0].1;
        assert!(is_sink(text));
        let f = load("x", text, &[], None).unwrap();
        assert_eq!((f.run.duration.0, f.run.warmup.0), (Duration::from_secs(60), Duration::from_secs(12)));
        let f = load("x", text, &[], Some(15.0)).unwrap();
        assert_eq!(f.run.warmup.0, Duration::from_secs(3));
        assert_eq!((f.run.node_down.0, f.run.pg_down.0), (NODE_DOWN_MIN, PG_DOWN_MIN));
        assert_eq!(f.run.spike_ms, 2_500);
        assert_eq!(f.run.spike.0, Duration::from_secs(5));
        let f = load("x", text, &[("resets".into(), toml::Value::Integer(1))], None).unwrap();
        assert_eq!(f.run.resets, 1);
        // A field both [sink] and [naive] have: the first section, or the one named.
        let f =
            load("x", text, &[("naive.batch_records_max".into(), toml::Value::Integer(7))], None).unwrap();
        assert_eq!((f.sink.batch_records_max, f.naive.batch_records_max), (100, 7));
        let f = load("x", text, &[("batch_records_max".into(), toml::Value::Integer(9))], None).unwrap();
        assert_eq!((f.sink.batch_records_max, f.naive.batch_records_max), (9, 100));
        let err = load("x", text, &[("nope".into(), toml::Value::Integer(1))], None).unwrap_err().to_string();
        assert!(err.contains("no such field"), "{err}");
        let err =
            load("x", text, &[("spike_ms".into(), toml::Value::Integer(500))], None).unwrap_err().to_string();
        assert!(err.contains("spike_ms must exceed"), "{err}");
        let err =
            load("x", text, &[("nodes".into(), toml::Value::Integer(2))], None).unwrap_err().to_string();
        assert!(err.contains("3 to"), "{err}");
        assert!(load("x", text, &[], Some(0.0)).is_err());
    }

    /// Proves duplicates count per (partition, offset) and event id, missing rows per acked record.
    #[test]
    fn judge_counts_duplicates_and_missing_rows() {
        let acked: BTreeMap<(u32, u64), String> = (0..4).map(|o| ((0, o), format!("e{o}"))).collect();
        let rows = vec![
            (0, 0, "e0".to_owned()),
            (0, 0, "e0".to_owned()),
            (0, 1, "e1".to_owned()),
            (0, 3, "e3".to_owned()),
            (1, 9, "unacknowledged".to_owned()),
        ];
        let j = judge(&rows, &acked);
        assert_eq!((j.rows, j.duplicate_rows, j.duplicate_events, j.missing_rows), (5, 1, 1, 1));
        assert!(j.examples.iter().any(|e| e.contains("offset 2")), "{:?}", j.examples);
    }

    /// Proves recovery runs from the healthy instant to the first lag under the pre-fault p99.
    #[test]
    fn recovery_is_measured_against_the_pre_fault_p99() {
        let series: Vec<(f64, u64)> =
            vec![(0.0, 10), (1.0, 12), (2.0, 8), (3.0, 500), (4.0, 900), (5.0, 300), (6.0, 11), (7.0, 9)];
        let (p99, back) = recovery(&series, 3.0, 4.0);
        assert_eq!(p99, 12);
        assert_eq!(back, Some(2.0));
        let (_, never) = recovery(&series[..6], 3.0, 4.0);
        assert_eq!(never, None);
        assert_eq!(quantile(&mut [], 0.99), 0);
    }
}
