//! `quorumdb bench`: a YCSB-style closed-loop load generator against a running cluster.
//!
//! The three core YCSB workloads are offered because they are what people compare key-value
//! stores with: `a` (50% read / 50% update, "session store"), `b` (95% / 5%, "photo tagging")
//! and `c` (read only, "user profile cache"). Keys follow YCSB's *scrambled zipfian*
//! distribution: a zipfian rank with constant 0.99 is drawn over `records` keys and then hashed
//! (FNV-1a over the rank's eight bytes, as YCSB does) modulo `records`. Without the hash the hot
//! keys would be `user0`, `user1`, ...: neighbours in name and sort order, so any
//! order-dependent effect (caches, storage blocks) would flatter the result. Scrambling keeps
//! the popularity skew while making the hot set arbitrary, and matching YCSB keeps numbers
//! comparable with other stores. (The ring hashes partition keys, so hot keys land on different
//! replica sets either way.)
//!
//! The run is closed-loop: `concurrency` workers each issue one request at a time until `ops`
//! operations have been started in total, so a run always ends (every request is bounded by the
//! client's timeout). Latency is measured per operation with an HDR histogram at microsecond
//! resolution; only successful operations enter the histograms, failures are counted and the
//! first few distinct messages are shown, so a misconfigured run cannot masquerade as a fast one.
//!
//! # Updates and siblings
//!
//! A YCSB update is a blind overwrite. In a leaderless store with causality tracking, blind
//! concurrent writes to one key each become a sibling, and the server refuses writes past 64
//! siblings with `409 too_many_siblings`. Hot zipfian keys would hit that within seconds. Doing a
//! read before every update would fix it but is not YCSB (it doubles the request count and hides
//! update latency). The bench therefore keeps, per worker, the last context token it saw for each
//! key (from its own reads and writes) and sends it with the next update of that key; the first
//! update of a key by a worker is blind. Each worker then keeps at most one live sibling per key,
//! so with `--concurrency` below the server's sibling cap siblings stay bounded; any 409s that
//! still happen are counted as errors rather than hidden. The map is cleared when it exceeds
//! [`CONTEXTS_LEN_MAX`] entries so memory stays bounded for huge record counts.
//!
//! The load phase reads each record before writing it and writes with that context, so running
//! the bench repeatedly against the same table overwrites records instead of piling up siblings.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use quorumdb_client::{Client, ClientError, ReadOptions, WriteOptions};
use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use tokio::task::JoinSet;

/// YCSB's zipfian constant: the exponent of the popularity law.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// Most key→context entries a worker remembers before starting over (see the module docs).
pub const CONTEXTS_LEN_MAX: usize = 100_000;

/// Largest latency the histograms track exactly, in microseconds; larger ones are recorded as
/// this value. Two minutes is well above the client's 30-second request timeout.
const LATENCY_US_MAX: u64 = 120_000_000;

/// Histogram precision: three significant digits (0.1% relative error).
const LATENCY_SIGFIGS: u8 = 3;

/// How many distinct error messages a report shows; enough to see every cause in a typical
/// failing run without flooding the terminal.
const ERROR_SAMPLES_MAX: usize = 5;

/// Largest value the bench will generate, mirroring the server's 1 MiB value limit so a typo
/// in `--value-bytes` fails at once instead of producing a run of 413s.
const VALUE_BYTES_MAX: usize = 1024 * 1024;

/// Most workers; far above what one client machine can drive usefully, it only stops typos.
const CONCURRENCY_MAX: usize = 10_000;

/// Arguments of `quorumdb bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Node to send requests to; repeat (or comma-separate) to spread workers round-robin over
    /// several nodes.
    #[arg(
        long = "endpoint",
        value_name = "URL",
        env = "QUORUMDB_ENDPOINT",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7701"
    )]
    pub endpoints: Vec<String>,

    /// YCSB core workload: a = 50% read / 50% update, b = 95/5, c = read only.
    #[arg(long, value_enum, default_value_t = Workload::A)]
    pub workload: Workload,

    /// Operations to run in the measured phase.
    #[arg(long, default_value_t = 100_000)]
    pub ops: u64,

    /// Concurrent workers, each with one request in flight.
    #[arg(long, default_value_t = 64, value_parser = parse_concurrency)]
    pub concurrency: usize,

    /// Read consistency: a replica count or one|quorum|all (server default: quorum).
    #[arg(long = "r", value_name = "R", value_parser = parse_consistency)]
    pub r: Option<String>,

    /// Write consistency: a replica count or one|quorum|all (server default: quorum).
    #[arg(long = "w", value_name = "W", value_parser = parse_consistency)]
    pub w: Option<String>,

    /// Size of each written value in bytes (ASCII).
    #[arg(long, default_value_t = 100, value_parser = parse_value_bytes)]
    pub value_bytes: usize,

    /// Number of distinct keys (`user0` .. `user{K-1}`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub records: u64,

    /// Table to use.
    #[arg(long, default_value = "bench")]
    pub table: String,

    /// Preload every record before measuring (the default).
    #[arg(long, overrides_with = "no_load")]
    pub load: bool,

    /// Skip the load phase (reads of keys never written then count as "not found").
    #[arg(long, overrides_with = "load")]
    pub no_load: bool,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// API token for a cluster with authentication on.
    #[arg(long, env = "QUORUMDB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CA (and client certificate) for https:// endpoints.
    #[command(flatten)]
    pub tls: crate::cli::TlsArgs,
}

impl BenchArgs {
    /// Whether to run the load phase: on unless `--no-load` was the last of the pair given.
    pub fn preload(&self) -> bool {
        !self.no_load
    }
}

/// A YCSB core workload, defined by its read share (the rest are updates).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    A,
    B,
    C,
}

impl Workload {
    /// Percentage of operations that are reads.
    pub fn read_percent(self) -> u32 {
        match self {
            Workload::A => 50,
            Workload::B => 95,
            Workload::C => 100,
        }
    }

    /// Short name, as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::A => "a",
            Workload::B => "b",
            Workload::C => "c",
        }
    }

    /// Draws the next operation type.
    fn choose<R: Rng + ?Sized>(self, rng: &mut R) -> Op {
        if rng.random_range(0..100) < self.read_percent() {
            Op::Read
        } else {
            Op::Update
        }
    }
}

/// Report format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

/// One measured operation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Update,
}

fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=CONCURRENCY_MAX).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of workers from 1 to {CONCURRENCY_MAX}")),
    }
}

fn parse_value_bytes(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= VALUE_BYTES_MAX => Ok(n),
        _ => Err(format!("expected a size from 0 to {VALUE_BYTES_MAX} bytes")),
    }
}

/// Checks the shape of `--r`/`--w` locally so a typo fails before the load phase instead of
/// turning every request into a `400 invalid_consistency`. The server still decides whether a
/// count fits the table's replication factor.
fn parse_consistency(s: &str) -> Result<String, String> {
    let level = s.trim().to_ascii_lowercase();
    let ok = matches!(level.as_str(), "one" | "quorum" | "all") || level.parse::<u32>().is_ok_and(|n| n >= 1);
    if ok {
        Ok(level)
    } else {
        Err("expected a replica count (1, 2, ...) or one, quorum, all".to_owned())
    }
}

/// FNV-1a over the eight little-endian bytes of `value`: the same hash YCSB's
/// `ScrambledZipfianGenerator` applies to zipfian ranks (YCSB's `fnvhash64`).
pub fn fnv1a64(value: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    value.to_le_bytes().iter().fold(OFFSET_BASIS, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

/// Maps a zipfian rank to a record index so popularity is spread over the key space.
pub fn scramble(rank: u64, records: u64) -> u64 {
    fnv1a64(rank) % records.max(1)
}

/// The key of record `index`, in YCSB's naming style.
pub fn key_name(index: u64) -> String {
    format!("user{index}")
}

/// Draws record indexes from the scrambled zipfian distribution.
#[derive(Debug, Clone, Copy)]
pub struct KeyChooser {
    zipf: Zipf<f64>,
    records: u64,
}

impl KeyChooser {
    /// A chooser over `records` keys (at least one).
    pub fn new(records: u64) -> anyhow::Result<KeyChooser> {
        anyhow::ensure!(records >= 1, "records must be at least 1");
        // u64 → f64 loses precision only above 2^53 records, far past any real key space.
        let zipf = Zipf::new(records as f64, ZIPFIAN_CONSTANT)
            .map_err(|e| anyhow::anyhow!("cannot build zipfian distribution: {e}"))?;
        Ok(KeyChooser { zipf, records })
    }

    /// A zipfian rank in `1..=records`; rank 1 is the most popular.
    pub fn rank<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        // The sample is a float in [1, records]; truncation gives the integer rank.
        let rank = self.zipf.sample(rng) as u64;
        rank.clamp(1, self.records)
    }

    /// The next record index in `0..records`.
    pub fn next_index<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        scramble(self.rank(rng), self.records)
    }
}

/// Latency percentiles of one operation type, in milliseconds; `None` when nothing succeeded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let q = |quantile: f64| (!h.is_empty()).then(|| h.value_at_quantile(quantile) as f64 / 1000.0);
        Percentiles { p50_ms: q(0.50), p99_ms: q(0.99), p999_ms: q(0.999) }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "p999_ms": self.p999_ms})
    }
}

/// Counters and histograms of one worker (or, merged, of the whole run).
#[derive(Debug, Clone)]
struct Tally {
    read: Histogram<u64>,
    update: Histogram<u64>,
    reads: u64,
    updates: u64,
    read_misses: u64,
    errors: u64,
    errors_by_kind: BTreeMap<String, u64>,
    error_samples: Vec<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        let h = Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIGS)
            .context("cannot create latency histogram")?;
        Ok(Tally {
            read: h.clone(),
            update: h,
            reads: 0,
            updates: 0,
            read_misses: 0,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            error_samples: Vec::new(),
        })
    }

    fn record_latency(&mut self, op: Op, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
        match op {
            Op::Read => self.read.saturating_record(us),
            Op::Update => self.update.saturating_record(us),
        }
    }

    fn record_error(&mut self, err: &ClientError) {
        self.errors += 1;
        let kind = match err {
            ClientError::Api { code, .. } => code.clone(),
            ClientError::Transport { .. } => "transport".to_owned(),
            ClientError::BadEndpoint(_) => "bad_endpoint".to_owned(),
            ClientError::Decode(_) => "decode".to_owned(),
        };
        *self.errors_by_kind.entry(kind).or_default() += 1;
        self.add_sample(err.to_string());
    }

    fn add_sample(&mut self, message: String) {
        if self.error_samples.len() < ERROR_SAMPLES_MAX && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.read.add(&other.read).context("cannot merge read histograms")?;
        self.update.add(&other.update).context("cannot merge update histograms")?;
        self.reads += other.reads;
        self.updates += other.updates;
        self.read_misses += other.read_misses;
        self.errors += other.errors;
        for (kind, n) in other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += n;
        }
        for message in other.error_samples {
            self.add_sample(message);
        }
        Ok(())
    }
}

/// The outcome of a measured run.
#[derive(Debug, Clone)]
pub struct Report {
    pub workload: Workload,
    /// Operations run, failed ones included (`ops_per_sec` counts them too; see `errors`).
    pub ops: u64,
    pub concurrency: usize,
    pub endpoints: Vec<String>,
    pub records: u64,
    pub value_bytes: usize,
    pub r: Option<String>,
    pub w: Option<String>,
    pub elapsed_s: f64,
    pub ops_per_sec: f64,
    pub reads: u64,
    pub updates: u64,
    /// Reads that found no item (expected only with `--no-load`).
    pub read_misses: u64,
    pub all: Percentiles,
    pub read: Percentiles,
    pub update: Percentiles,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
}

impl Report {
    fn new(args: &BenchArgs, elapsed: Duration, tally: &Tally) -> anyhow::Result<Report> {
        let mut all = tally.read.clone();
        all.add(&tally.update).context("cannot merge histograms")?;
        let ops = tally.reads + tally.updates;
        let elapsed_s = elapsed.as_secs_f64();
        Ok(Report {
            workload: args.workload,
            ops,
            concurrency: args.concurrency,
            endpoints: args.endpoints.clone(),
            records: args.records,
            value_bytes: args.value_bytes,
            r: args.r.clone(),
            w: args.w.clone(),
            elapsed_s,
            ops_per_sec: if elapsed_s > 0.0 { ops as f64 / elapsed_s } else { 0.0 },
            reads: tally.reads,
            updates: tally.updates,
            read_misses: tally.read_misses,
            all: Percentiles::of(&all),
            read: Percentiles::of(&tally.read),
            update: Percentiles::of(&tally.update),
            errors: tally.errors,
            errors_by_kind: tally.errors_by_kind.clone(),
            error_samples: tally.error_samples.clone(),
        })
    }

    /// The report as one JSON object; overall percentiles are top-level `p50_ms` etc.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "workload": self.workload.name(),
            "read_percent": self.workload.read_percent(),
            "ops": self.ops,
            "concurrency": self.concurrency,
            "endpoints": self.endpoints,
            "records": self.records,
            "value_bytes": self.value_bytes,
            "r": self.r,
            "w": self.w,
            "elapsed_s": self.elapsed_s,
            "ops_per_sec": self.ops_per_sec,
            "reads": self.reads,
            "updates": self.updates,
            "read_misses": self.read_misses,
            "p50_ms": self.all.p50_ms,
            "p99_ms": self.all.p99_ms,
            "p999_ms": self.all.p999_ms,
            "read": self.read.json(),
            "update": self.update.json(),
            "errors": self.errors,
            "errors_by_kind": self.errors_by_kind,
            "error_samples": self.error_samples,
        })
    }

    /// The report as aligned, human-readable text.
    pub fn to_text(&self) -> String {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
        let row = |name: &str, p: &Percentiles| {
            format!("  {name:<8}{:>10}{:>10}{:>10}\n", ms(p.p50_ms), ms(p.p99_ms), ms(p.p999_ms))
        };
        let read_percent = self.workload.read_percent();
        let mut out = String::new();
        out.push_str(&format!(
            "workload     {} ({read_percent}% read / {}% update), zipfian {ZIPFIAN_CONSTANT} over {} records, {} B values\n",
            self.workload.name(),
            100 - read_percent,
            self.records,
            self.value_bytes
        ));
        out.push_str(&format!(
            "consistency  r={} w={}\n",
            self.r.as_deref().unwrap_or("quorum"),
            self.w.as_deref().unwrap_or("quorum")
        ));
        out.push_str(&format!("endpoints    {}\n", self.endpoints.join(", ")));
        out.push_str(&format!("concurrency  {}\n", self.concurrency));
        out.push_str(&format!("ops          {}\n", self.ops));
        out.push_str(&format!("elapsed      {:.3} s\n", self.elapsed_s));
        out.push_str(&format!("throughput   {:.1} ops/s\n", self.ops_per_sec));
        out.push_str(&format!("reads        {} ({} not found)\n", self.reads, self.read_misses));
        out.push_str(&format!("updates      {}\n", self.updates));
        out.push_str(&format!("latency ms  {:>10}{:>10}{:>10}\n", "p50", "p99", "p99.9"));
        out.push_str(&row("all", &self.all));
        out.push_str(&row("read", &self.read));
        out.push_str(&row("update", &self.update));
        if self.errors == 0 {
            out.push_str("errors       0\n");
        } else {
            let kinds: Vec<String> =
                self.errors_by_kind.iter().map(|(kind, n)| format!("{kind}: {n}")).collect();
            out.push_str(&format!("errors       {} ({})\n", self.errors, kinds.join(", ")));
            for message in &self.error_samples {
                out.push_str(&format!("  {message}\n"));
            }
        }
        out
    }
}

/// Runs the bench and prints the report to stdout (progress goes to stderr, so `-o json`
/// output stays one clean JSON object). Fails when the load phase or every measured operation
/// failed, after printing what happened.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let report = execute(&args).await?;
    match args.output {
        OutputFormat::Text => print!("{}", report.to_text()),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report.to_json())?),
    }
    if report.ops > 0 && report.errors == report.ops {
        let first = report.error_samples.first().map_or("", String::as_str);
        anyhow::bail!("all {} operations failed; first error: {first}", report.ops);
    }
    Ok(())
}

/// Load (unless disabled) and measure; returns the report without printing it.
pub async fn execute(args: &BenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(!args.endpoints.is_empty(), "give at least one --endpoint");
    let clients = args
        .endpoints
        .iter()
        .map(|e| Ok(args.tls.client(e)?.with_token(args.token.clone())))
        .collect::<anyhow::Result<Vec<Client>>>()?;
    let chooser = KeyChooser::new(args.records)?;
    if args.preload() {
        load(args, &clients).await?;
    }
    let tally_proto = Tally::new()?;
    let started = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("running", args.ops, Arc::clone(&started));
    let workers = worker_count(args.concurrency, args.ops);
    let begin = Instant::now();
    let mut set = JoinSet::new();
    for worker in 0..workers {
        let client = clients[worker % clients.len()].clone();
        let ctx = WorkerCtx {
            client,
            table: args.table.clone(),
            workload: args.workload,
            chooser,
            value_bytes: args.value_bytes,
            r: args.r.clone(),
            w: args.w.clone(),
            ops: args.ops,
            started: Arc::clone(&started),
        };
        set.spawn(measure_worker(ctx, tally_proto.clone()));
    }
    let mut total = tally_proto;
    while let Some(joined) = set.join_next().await {
        total.merge(joined.context("bench worker panicked")?)?;
    }
    let elapsed = begin.elapsed();
    progress.finish();
    Report::new(args, elapsed, &total)
}

/// Workers actually spawned: no more than there are operations to run.
fn worker_count(concurrency: usize, ops: u64) -> usize {
    usize::try_from(ops).map_or(concurrency, |ops| concurrency.min(ops)).max(1)
}

/// Everything one measuring worker needs.
struct WorkerCtx {
    client: Client,
    table: String,
    workload: Workload,
    chooser: KeyChooser,
    value_bytes: usize,
    r: Option<String>,
    w: Option<String>,
    ops: u64,
    started: Arc<AtomicU64>,
}

/// One closed-loop worker of the measured phase: claims operation numbers from the shared
/// counter until `ops` are taken, so the total is exact however fast each worker is.
async fn measure_worker(ctx: WorkerCtx, mut tally: Tally) -> Tally {
    let mut rng = SmallRng::from_rng(&mut rand::rng());
    let mut contexts: HashMap<u64, String> = HashMap::new();
    let read_opts = ReadOptions { r: ctx.r.clone(), ..ReadOptions::default() };
    while ctx.started.fetch_add(1, Ordering::Relaxed) < ctx.ops {
        let op = ctx.workload.choose(&mut rng);
        let index = ctx.chooser.next_index(&mut rng);
        let key = key_name(index);
        match op {
            Op::Read => {
                tally.reads += 1;
                let begin = Instant::now();
                let result = ctx.client.get(&ctx.table, &key, &read_opts).await;
                let elapsed = begin.elapsed();
                match result {
                    Ok(found) => {
                        tally.record_latency(op, elapsed);
                        if found.values.is_empty() {
                            tally.read_misses += 1;
                        }
                        remember(&mut contexts, index, found.context);
                    }
                    Err(e) => tally.record_error(&e),
                }
            }
            Op::Update => {
                tally.updates += 1;
                let value = Alphanumeric.sample_string(&mut rng, ctx.value_bytes);
                let opts = WriteOptions {
                    w: ctx.w.clone(),
                    context: contexts.get(&index).cloned(),
                    ..WriteOptions::default()
                };
                let begin = Instant::now();
                let result = ctx.client.put(&ctx.table, &key, &value, &opts).await;
                let elapsed = begin.elapsed();
                match result {
                    Ok(written) => {
                        tally.record_latency(op, elapsed);
                        remember(&mut contexts, index, written.context);
                    }
                    Err(e) => tally.record_error(&e),
                }
            }
        }
    }
    tally
}

/// Stores the latest context of a key, starting over when the map grows past its bound.
fn remember(contexts: &mut HashMap<u64, String>, index: u64, context: String) {
    if context.is_empty() {
        return;
    }
    if contexts.len() >= CONTEXTS_LEN_MAX && !contexts.contains_key(&index) {
        contexts.clear();
    }
    contexts.insert(index, context);
}

/// Writes every record once, reading it first so the write carries the current context and
/// replaces earlier runs' data instead of adding siblings. Fails only if no record could be
/// written at all; partial failures are reported on stderr and the run goes on.
async fn load(args: &BenchArgs, clients: &[Client]) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("loading", args.records, Arc::clone(&done));
    let begin = Instant::now();
    let mut set = JoinSet::new();
    for worker in 0..worker_count(args.concurrency, args.records) {
        let client = clients[worker % clients.len()].clone();
        let (next, done) = (Arc::clone(&next), Arc::clone(&done));
        let (table, records, value_bytes) = (args.table.clone(), args.records, args.value_bytes);
        let w = args.w.clone();
        set.spawn(async move {
            let mut rng = SmallRng::from_rng(&mut rand::rng());
            let mut errors = 0u64;
            let mut first_error: Option<String> = None;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= records {
                    break;
                }
                let key = key_name(index);
                let value = Alphanumeric.sample_string(&mut rng, value_bytes);
                let result = async {
                    let current = client.get(&table, &key, &ReadOptions::default()).await?;
                    let context = Some(current.context).filter(|c| !c.is_empty());
                    let opts = WriteOptions { w: w.clone(), context, ..WriteOptions::default() };
                    client.put(&table, &key, &value, &opts).await
                }
                .await;
                if let Err(e) = result {
                    errors += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (errors, first_error)
        });
    }
    let mut errors = 0u64;
    let mut first_error = None;
    while let Some(joined) = set.join_next().await {
        let (n, first) = joined.context("load worker panicked")?;
        errors += n;
        first_error = first_error.or(first);
    }
    progress.finish();
    let first = first_error.unwrap_or_default();
    anyhow::ensure!(
        errors < args.records,
        "load failed: none of the {} records could be written; first error: {first}",
        args.records
    );
    eprintln!(
        "loaded {} records into table {:?} in {:.1} s",
        args.records - errors,
        args.table,
        begin.elapsed().as_secs_f64()
    );
    if errors > 0 {
        eprintln!("warning: {errors} records failed to load; first error: {first}");
    }
    Ok(())
}

/// A progress line on stderr while a phase runs: redrawn in place on a terminal, a plain line
/// every few seconds otherwise (so CI logs stay short).
struct Progress {
    task: Option<tokio::task::JoinHandle<()>>,
    terminal: bool,
}

impl Progress {
    fn start(label: &'static str, total: u64, counter: Arc<AtomicU64>) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let every = if terminal { Duration::from_millis(250) } else { Duration::from_secs(5) };
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let n = counter.load(Ordering::Relaxed).min(total);
                if terminal {
                    eprint!("\r{label}: {n}/{total}");
                } else {
                    eprintln!("{label}: {n}/{total}");
                }
            }
        });
        Progress { task: Some(task), terminal }
    }

    fn finish(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if self.terminal {
            // Clear the progress line so the report starts on a clean line.
            eprint!("\r\x1b[2K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut full = vec!["bench"];
        full.extend_from_slice(argv);
        Cli::try_parse_from(full).map(|c| c.bench)
    }

    /// Shares of draws that land on the most popular `top` keys, from `draws` samples.
    fn top_share(records: u64, draws: usize, top: usize, seed: u64) -> f64 {
        let chooser = KeyChooser::new(records).unwrap();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut counts = vec![0u64; records as usize];
        for _ in 0..draws {
            counts[chooser.next_index(&mut rng) as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        counts[..top].iter().sum::<u64>() as f64 / draws as f64
    }

    /// FNV-1a matches the published test vector and is deterministic.
    #[test]
    fn fnv_matches_reference() {
        // FNV-1a 64 of eight zero bytes (reference implementation value).
        assert_eq!(fnv1a64(0), 0xa8c7_f832_281a_39c5);
        assert_eq!(fnv1a64(12345), fnv1a64(12345));
        assert_ne!(fnv1a64(1), fnv1a64(2));
    }

    /// With constant 0.99 over 10k keys the hottest 1% of keys get about half of all draws
    /// (measured ≈ 0.52 with this seed), far above the 1% a uniform choice would give.
    #[test]
    fn zipfian_top_one_percent_share() {
        let share = top_share(10_000, 200_000, 100, 7);
        assert!((0.45..0.62).contains(&share), "top 1% share {share}");
    }

    /// The single hottest key gets roughly 1/H(10000, 0.99) ≈ 10% of draws.
    #[test]
    fn zipfian_hottest_key_share() {
        let share = top_share(10_000, 200_000, 1, 11);
        assert!((0.07..0.14).contains(&share), "hottest key share {share}");
    }

    /// Scrambling spreads the hottest ranks over the whole key space instead of user0..user19.
    #[test]
    fn scramble_spreads_hot_ranks() {
        let records = 10_000;
        let mut hot: Vec<u64> = (1..=20).map(|rank| scramble(rank, records)).collect();
        assert!(hot.iter().all(|&i| i < records));
        let (min, max) = (*hot.iter().min().unwrap(), *hot.iter().max().unwrap());
        assert!(max - min > records / 2, "hot keys clustered in {min}..{max}");
        hot.sort_unstable();
        hot.dedup();
        assert!(hot.len() >= 19, "hot ranks collide: {hot:?}");
    }

    /// Draws always fall inside the key space, including the one-record edge case.
    #[test]
    fn draws_stay_in_range() {
        let mut rng = SmallRng::seed_from_u64(3);
        for records in [1u64, 2, 7, 1000] {
            let chooser = KeyChooser::new(records).unwrap();
            for _ in 0..5_000 {
                assert!(chooser.next_index(&mut rng) < records);
                let rank = chooser.rank(&mut rng);
                assert!((1..=records).contains(&rank));
            }
        }
        assert!(KeyChooser::new(0).is_err());
    }

    /// Workloads a, b and c issue reads at 50%, 95% and 100% (within 1 point over 100k ops).
    #[test]
    fn workload_mix_ratios() {
        let mut rng = SmallRng::seed_from_u64(5);
        for (workload, expected) in [(Workload::A, 0.50), (Workload::B, 0.95), (Workload::C, 1.0)] {
            let n = 100_000;
            let reads = (0..n).filter(|_| workload.choose(&mut rng) == Op::Read).count();
            let share = reads as f64 / n as f64;
            assert!((share - expected).abs() < 0.01, "{workload:?}: {share}");
        }
    }

    /// Defaults match the documented ones and --no-load/--load follow last-wins.
    #[test]
    fn args_defaults_and_load_toggle() {
        let a = parse(&[]).unwrap();
        assert_eq!((a.ops, a.concurrency, a.value_bytes, a.records), (100_000, 64, 100, 10_000));
        assert_eq!((a.workload, a.output, a.table.as_str()), (Workload::A, OutputFormat::Text, "bench"));
        assert!(a.preload());
        assert!(!parse(&["--no-load"]).unwrap().preload());
        assert!(parse(&["--no-load", "--load"]).unwrap().preload());
        assert!(!parse(&["--load", "--no-load"]).unwrap().preload());
    }

    /// Endpoints repeat or comma-separate; r/w, workload and -o parse; bad values are refused.
    #[test]
    fn args_parse_and_validate() {
        let argv =
            "--endpoint http://a:1 --endpoint http://b:2,http://c:3 --workload c --r One --w 2 -o json";
        let a = parse(&argv.split_whitespace().collect::<Vec<_>>()).unwrap();
        assert_eq!(a.endpoints, ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!((a.r.as_deref(), a.w.as_deref()), (Some("one"), Some("2")));
        assert_eq!((a.workload, a.output), (Workload::C, OutputFormat::Json));
        for bad in [
            &["--r", "most"][..],
            &["--w", "0"],
            &["--concurrency", "0"],
            &["--records", "0"],
            &["--value-bytes", "2000000"],
            &["--workload", "d"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// The context map never grows past its bound and ignores empty tokens.
    #[test]
    fn context_map_is_bounded() {
        let mut contexts = HashMap::new();
        for i in 0..(CONTEXTS_LEN_MAX as u64 + 10) {
            remember(&mut contexts, i, format!("c{i}"));
        }
        assert!(contexts.len() <= CONTEXTS_LEN_MAX);
        remember(&mut contexts, 1, String::new());
        assert!(!contexts.contains_key(&1));
    }

    /// Requests a fake node saw: (method, path, body).
    type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

    /// A keep-alive HTTP/1.1 fake node on 127.0.0.1 that answers every request with 200 and a
    /// body valid both as a read and as a write answer, recording what it was asked.
    async fn fake_node() -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let seen2 = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let seen = Arc::clone(&seen2);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let end = loop {
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p + 4;
                            }
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len: usize = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                            .map_or(0, |(_, v)| v.trim().parse().unwrap());
                        while buf.len() < end + len {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let body = String::from_utf8_lossy(&buf[end..end + len]).to_string();
                        let mut parts = head.split_whitespace();
                        let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
                        seen.lock().unwrap().push((method.to_owned(), path.to_owned(), body));
                        buf.drain(..end + len);
                        let reply = r#"{"values":["v"],"context":"ctx"}"#;
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                            reply.len()
                        );
                        if sock.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (endpoint, seen)
    }

    /// A whole run against a fake node: the load writes each record once after reading it, the
    /// measured phase runs exactly `ops` operations, and updates carry a known context.
    #[tokio::test]
    async fn end_to_end_against_fake_node() {
        let (endpoint, seen) = fake_node().await;
        let argv = format!(
            "--endpoint {endpoint} --ops 400 --records 50 --concurrency 4 --workload a --value-bytes 16"
        );
        let mut args = parse(&argv.split_whitespace().collect::<Vec<_>>()).unwrap();
        args.table = "bt".into();
        let report = execute(&args).await.unwrap();
        assert_eq!(report.ops, 400);
        assert_eq!(report.reads + report.updates, 400);
        assert_eq!(report.errors, 0, "{:?}", report.error_samples);
        assert!(report.all.p50_ms.is_some() && report.ops_per_sec > 0.0);
        let seen = seen.lock().unwrap();
        let (load, run) = seen.split_at(100);
        assert!(load.iter().all(|(_, p, _)| p.starts_with("/v1/tables/bt/items/user")));
        assert_eq!(load.iter().filter(|(m, _, _)| m == "PUT").count(), 50);
        assert!(load.iter().filter(|(m, _, _)| m == "PUT").all(|(_, _, b)| b.contains(r#""context":"ctx""#)));
        assert_eq!(run.len(), 400);
        let puts: Vec<_> = run.iter().filter(|(m, _, _)| m == "PUT").collect();
        assert_eq!(puts.len() as u64, report.updates);
        assert!(puts.iter().any(|(_, _, b)| b.contains(r#""context":"ctx""#)));
        let json = report.to_json();
        for field in ["ops_per_sec", "p50_ms", "p99_ms", "p999_ms", "errors", "reads", "updates", "elapsed_s"]
        {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert!(report.to_text().contains("throughput"));
    }

    /// An unreachable node turns into a failed load with the transport error, not a hang.
    #[tokio::test]
    async fn unreachable_node_fails_load() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let args = parse(&["--endpoint", &endpoint, "--ops", "10", "--records", "5"]).unwrap();
        let err = execute(&args).await.unwrap_err().to_string();
        assert!(err.contains("load failed") && err.contains("cannot reach"), "{err}");
    }

    /// Errors are counted by kind and the report shows them with their messages.
    #[tokio::test]
    async fn errors_are_counted_without_load() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let args =
            parse(&["--endpoint", &endpoint, "--ops", "20", "--no-load", "--concurrency", "2"]).unwrap();
        let report = execute(&args).await.unwrap();
        assert_eq!((report.ops, report.errors), (20, 20));
        assert_eq!(report.errors_by_kind.get("transport"), Some(&20));
        assert_eq!(report.error_samples.len(), 1);
        assert!(report.all.p50_ms.is_none());
        assert!(report.to_text().contains("errors       20 (transport: 20)"));
    }
}
