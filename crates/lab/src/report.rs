//! The lab's report model: turning a recorded run ([`RunOutput`]) into `report.json`
//! ([`LabReport`]) and the summary table, with the checkers a scenario selects by name
//! ([`Checker`]).
//!
//! It lives here rather than in the binary because it is pure: a deterministic function of the
//! history, the final state and the scenario's settings, so the same report can be rebuilt
//! offline from `history.jsonl` and judged by tests without a cluster. The binary keeps what is
//! not pure: the process-spawning driver and the HTML rendering.
//!
//! The numbers come from the [`crate::checker`]s wherever a checker exists (lost writes,
//! linearizability, staleness and t-visibility, sessions). Two properties the README claims have
//! no checker there and are computed here, from the history alone:
//!
//! - **Monotonic quorum reads across clients** (`read_repair=blocking` and
//!   `consistency=linearizable`: "a later quorum read never returns an older state than this
//!   read did"). For every pair of `ok` reads of one key where `R1` completed before `R2` was
//!   invoked, `R2`'s context must descend `R1`'s. Checked by sweeping reads in invocation order
//!   against the join of the contexts of all reads completed before, so it is O(n log n).
//! - **Updates lost** (the clock-skew scenario's value lineage). Each written value there names
//!   the values its read-modify-write had read (`"<id> saw <id>,<id>"`), so the values that
//!   survive in the final state, followed back through those links, are exactly the updates
//!   some surviving value builds on. An acknowledged write outside that closure is an update
//!   that was silently thrown away. The lost-write checker cannot see these in `lww` tables:
//!   LWW resolution drops the losing value but keeps its dot in the item's context, so the next
//!   reader's token "covers" a write it never saw, and the checker counts it as superseded.
//!
//! Guarantees are judged only where the README claims them (see [`Claim`]); everything else is
//! reported as a measurement, and the report says which is which.

use crate::checker::linearizability::{Counterexample, Verdict};
use crate::checker::staleness::StalenessBucket;
use crate::checker::{check_lost_writes, CheckConfig, CheckError, OpRef};
use crate::fault::FaultKind;
use crate::history::{FinalState, History, Op, OpKind, OpResult};
use quorumdb_core::causality::{CausalityError, VersionVector};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use thiserror::Error;

/// Examples of each violation kept in the report (the full lists can be rebuilt from
/// `history.jsonl`); as many as the checkers keep by default.
pub const EXAMPLES_LEN_MAX: usize = crate::checker::EXAMPLES_LEN_DEFAULT;

/// Why a report could not be built.
#[derive(Debug, Error)]
pub enum ReportError {
    #[error("cannot check the history: {0}")]
    Check(#[from] CheckError),
    #[error("op {index}: bad context: {source}")]
    BadContext {
        index: usize,
        #[source]
        source: CausalityError,
    },
}

/// The checkers a scenario can ask for, by the name it uses in its `checkers` list.
///
/// A registry rather than free-form names so that a typo in a scenario file is an error at load
/// time naming the known checkers, not a run that silently judged less than it claims. Each
/// checker also gates the README claim it judges ([`Claim`]): a claim whose checker did not run
/// is not reported as held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Checker {
    /// Acknowledged writes missing from the converged final state ([`Claim::NoLostWrites`]).
    LostWrites,
    /// Each key as a single register: Wing & Gong with Lowe's memoization ([`Claim::Linearizable`]).
    Linearizability,
    /// Stale reads and the t-visibility curve ([`Claim::NoStaleReads`]).
    Staleness,
    /// Per-process read-your-writes and monotonic reads.
    Sessions,
    /// Cross-client monotonic quorum reads ([`Claim::MonotonicQuorumReads`]).
    MonotonicReads,
    /// Acknowledged updates no final value builds on, by value lineage (what LWW throws away);
    /// needs a workload whose values name what they saw.
    Lineage,
    /// Replicas identical after one anti-entropy pass, before the final read ([`Claim::Convergence`]).
    Convergence,
}

impl Checker {
    /// Every checker, in the order `quorumdb lab` documents them.
    pub const ALL: [Checker; 7] = [
        Checker::LostWrites,
        Checker::Linearizability,
        Checker::Staleness,
        Checker::Sessions,
        Checker::MonotonicReads,
        Checker::Lineage,
        Checker::Convergence,
    ];

    /// The name a scenario file uses.
    pub fn name(self) -> &'static str {
        match self {
            Checker::LostWrites => "lost-writes",
            Checker::Linearizability => "linearizability",
            Checker::Staleness => "staleness",
            Checker::Sessions => "sessions",
            Checker::MonotonicReads => "monotonic-reads",
            Checker::Lineage => "lineage",
            Checker::Convergence => "convergence",
        }
    }

    /// One line on what the checker judges.
    pub fn description(self) -> &'static str {
        match self {
            Checker::LostWrites => "acknowledged writes missing from the converged final state",
            Checker::Linearizability => "each key as a single linearizable register",
            Checker::Staleness => "reads that missed a write acknowledged before they started; t-visibility",
            Checker::Sessions => "per-process read-your-writes and monotonic reads",
            Checker::MonotonicReads => "a read never older than a read that completed before it started",
            Checker::Lineage => {
                "acknowledged updates no final value builds on (value lineage, e.g. LWW losses)"
            }
            Checker::Convergence => "replicas identical after one anti-entropy pass",
        }
    }

    /// The checker a scenario file names `name`, if any.
    pub fn from_name(name: &str) -> Option<Checker> {
        Checker::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The claim this checker judges, if it judges one.
    fn claim(self) -> Option<Claim> {
        match self {
            Checker::LostWrites => Some(Claim::NoLostWrites),
            Checker::Linearizability => Some(Claim::Linearizable),
            Checker::Staleness => Some(Claim::NoStaleReads),
            Checker::MonotonicReads => Some(Claim::MonotonicQuorumReads),
            Checker::Convergence => Some(Claim::Convergence),
            Checker::Sessions | Checker::Lineage => None,
        }
    }
}

/// How a table resolves concurrent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Conflict {
    Siblings,
    Lww,
}

/// One consistency setting the workload ran under, and what the README claims for it.
#[derive(Debug, Clone, Serialize)]
pub struct SettingDef {
    pub name: String,
    pub table: String,
    pub r: u32,
    pub w: u32,
    /// `quorum` (plain reads) or `linearizable` (`consistency=linearizable`).
    pub consistency: String,
    pub replication_factor: u32,
    pub conflict: Conflict,
    /// True when no two writes of one key can be concurrent (one writer per key, each write
    /// carrying the token of that writer's last read): then the README's exception for
    /// `consistency=linearizable` ("concurrent blind writes") does not apply.
    pub single_writer_per_key: bool,
}

impl SettingDef {
    /// The claims of the README's guarantees table that apply to this setting.
    pub fn claims(&self) -> Vec<Claim> {
        let mut claims = Vec::new();
        if self.conflict == Conflict::Siblings {
            claims.push(Claim::NoLostWrites);
        }
        if self.r + self.w > self.replication_factor {
            claims.push(Claim::NoStaleReads);
        }
        let quorum = self.replication_factor / 2 + 1;
        // Blocking read repair (the server default) and linearizable reads both promise
        // monotonic reads across clients, but only for reads of at least a quorum.
        if self.r >= quorum || self.consistency == "linearizable" {
            claims.push(Claim::MonotonicQuorumReads);
        }
        if self.consistency == "linearizable" && self.single_writer_per_key {
            claims.push(Claim::Linearizable);
        }
        claims
    }
}

/// A README claim the lab checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Claim {
    /// "siblings tables: no acknowledged write is silently lost" and "`w` acks: durable".
    NoLostWrites,
    /// "`r + w > N`, strict: a read started after a write was acknowledged sees it".
    NoStaleReads,
    /// "`read_repair=blocking`: a later quorum read never returns an older state".
    MonotonicQuorumReads,
    /// "`consistency=linearizable`" (with tokens, no concurrent blind writes).
    Linearizable,
    /// "convergence: replicas converge without client reads".
    Convergence,
}

impl Claim {
    fn readme(self) -> &'static str {
        match self {
            Claim::NoLostWrites => {
                "siblings tables: no acknowledged write is silently lost to a concurrent one; `w` acks: durable"
            }
            Claim::NoStaleReads => {
                "r + w > N (strict quorum): a read started after a write was acknowledged sees that write or a successor"
            }
            Claim::MonotonicQuorumReads => {
                "read_repair=blocking / consistency=linearizable: a later quorum read never returns an older state"
            }
            Claim::Linearizable => {
                "consistency=linearizable: linearizable single-key reads and writes when writes carry tokens \
                 (judged on keys whose writes all got a definite answer)"
            }
            Claim::Convergence => {
                "convergence: replicas converge without client reads (checked after a full anti-entropy pass)"
            }
        }
    }
}

/// A phase of a scenario as it actually ran.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseWindow {
    pub setting: String,
    pub phase: String,
    pub start_s: f64,
    pub end_s: f64,
}

/// A time window in which a fault was in force.
#[derive(Debug, Clone, Serialize)]
pub struct FaultWindow {
    pub label: String,
    /// What kind of fault it was (`null` only if the driver could not say).
    pub kind: Option<FaultKind>,
    pub start_s: f64,
    pub end_s: f64,
}

/// What the clients saw during one window of the run: the figures a gray failure is judged by
/// (issue #8). Operations belong to the window they were *invoked* in, so a request sent into a
/// fault counts there even if its answer came after the fault ended.
#[derive(Debug, Clone, Serialize)]
pub struct WindowImpact {
    /// The fault window's label, or the baseline phase's name.
    pub label: String,
    pub kind: Option<FaultKind>,
    pub start_s: f64,
    pub end_s: f64,
    pub ops: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    /// Successful operations per second of the window: all, reads, writes.
    pub ok_per_s: f64,
    pub reads_ok_per_s: f64,
    pub writes_ok_per_s: f64,
    /// The rates above over the baseline's (`null` without a baseline, or when the baseline
    /// had none of that kind of operation).
    pub throughput_relative: Option<f64>,
    pub read_throughput_relative: Option<f64>,
    pub write_throughput_relative: Option<f64>,
    /// Latency of the window's successful operations, ms (`null` when none succeeded).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// The longest any operation of the window waited for its answer, whatever the answer
    /// (a write that timed out counts), ms: how long a client was stuck.
    pub wait_max_ms: Option<f64>,
    /// Items that a read of the window returned with two siblings of one value.
    pub duplicate_siblings: u64,
}

/// Every fault window next to the baseline phase (`report.json`'s `fault_impact`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultImpact {
    /// The phase the scenario compares faults with (`baseline` in the file), if any.
    pub baseline_phase: Option<String>,
    /// That phase's own figures, over all its windows (each setting's, in sequential runs).
    pub baseline: Option<WindowImpact>,
    /// One per fault window, in the order the faults ended.
    pub windows: Vec<WindowImpact>,
}

/// Items holding two siblings with the same value. Workloads write every value once, so such a
/// pair can only be one write applied twice (a retried, redelivered or hedged write that the
/// store did not recognise): the duplicate siblings issue #8 requires to be zero.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DuplicateSiblings {
    /// Distinct items seen with a duplicate, by any read or by the final read at `r=all`.
    pub items: u64,
    /// Client reads that returned a duplicate.
    pub reads: u64,
    /// A few of them: `table/key: "value" twice (op N)`.
    pub examples: Vec<String>,
}

/// Whether replicas agreed before the final read (which would repair them itself).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Convergence {
    pub keys: u64,
    /// Keys whose replicas still differed after one full anti-entropy pass on every node.
    pub diverged: u64,
    pub diverged_examples: Vec<String>,
    pub repair_keys_moved: u64,
    pub repair_exchanges_failed: u64,
}

/// Everything a scenario driver hands to the report.
pub struct RunOutput {
    pub scenario: String,
    pub seed: u64,
    /// The command that replays the run's workload choices.
    pub command: String,
    pub phase_s: f64,
    pub cluster: serde_json::Value,
    pub settings: Vec<SettingDef>,
    /// Phase names in the order they ran.
    pub phases: Vec<String>,
    /// The phase fault windows are compared with ([`FaultImpact`]).
    pub baseline: Option<String>,
    pub windows: Vec<PhaseWindow>,
    pub faults: Vec<FaultWindow>,
    pub history: History,
    pub final_state: FinalState,
    pub convergence: Convergence,
    /// The checkers to run. [`Checker::Lineage`] needs written values that carry lineage
    /// (`"<id> saw <ids>"`); it enables `updates_lost`.
    pub checkers: BTreeSet<Checker>,
    pub notes: Vec<String>,
    pub wall_s: f64,
}

/// One row of the report: a setting in a phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub ops: u64,
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
    pub reads: u64,
    pub reads_ok: u64,
    pub writes: u64,
    pub writes_ok: u64,
    /// `reads_ok / reads`; `null` without reads.
    pub read_availability: Option<f64>,
    /// `writes_ok / writes`; `null` without writes.
    pub write_availability: Option<f64>,
    /// Reads judged by the staleness checker (an acknowledged write preceded them).
    pub reads_checked: u64,
    pub stale_reads: u64,
    pub stale_fraction: f64,
    /// Acknowledged writes of this phase the lost-write checker found lost.
    pub lost_writes: u64,
    /// Acknowledged writes of this phase outside the final values' lineage (lineage runs only).
    pub updates_lost: Option<u64>,
    /// Latency of `ok` operations, ms (`null` when none succeeded).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub read_p50_ms: Option<f64>,
    pub read_p99_ms: Option<f64>,
    pub write_p50_ms: Option<f64>,
    pub write_p99_ms: Option<f64>,
    pub start_s: Option<f64>,
    pub end_s: Option<f64>,
}

/// Cross-client monotonic reads of one setting.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MonotonicReport {
    /// Reads that had an earlier completed read of their key to compare with.
    pub checked: u64,
    pub violations: u64,
    pub examples: Vec<MonotonicViolation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MonotonicViolation {
    /// The later read, which returned an older state.
    pub read: OpRef,
    /// A read that completed before `read` was invoked and saw something `read` did not.
    pub earlier: OpRef,
}

/// The linearizability verdict of one setting's keys.
#[derive(Debug, Clone, Serialize)]
pub struct LinearizabilitySummary {
    /// `linearizable` when every key is, `not_linearizable` when one is not, else `unknown`.
    pub verdict: String,
    pub keys_checked: u64,
    pub keys_not_linearizable: u64,
    pub keys_unknown: u64,
    /// The first non-linearizable key and the checker's counterexample.
    pub key: Option<String>,
    pub counterexample: Option<Counterexample>,
    /// The counterexample in one line.
    pub explanation: Option<String>,
}

/// One setting (az-failure) or table mode (clock-skew-lww).
#[derive(Debug, Clone, Serialize)]
pub struct SettingReport {
    pub name: String,
    pub table: String,
    pub r: u32,
    pub w: u32,
    pub consistency: String,
    pub conflict: Conflict,
    /// The linearizability checker's verdict over this setting's keys (`null` if undecided).
    pub linearizable: Option<bool>,
    pub linearizability: LinearizabilitySummary,
    pub monotonic_reads: MonotonicReport,
    pub read_your_writes_violations: u64,
    pub monotonic_session_violations: u64,
    pub lost_writes: u64,
    pub resurrected: u64,
    pub unexpected_final_values: u64,
    pub updates_lost: Option<u64>,
    pub claims: Vec<Claim>,
    /// The t-visibility curve of this setting's reads over all phases.
    pub t_visibility: Vec<StalenessBucket>,
    pub phases: Vec<PhaseReport>,
}

/// A README claim judged against this run.
#[derive(Debug, Clone, Serialize)]
pub struct GuaranteeCheck {
    pub claim: Claim,
    pub readme: String,
    pub setting: Option<String>,
    pub held: bool,
    pub observed: String,
}

/// A number the README does not promise anything about; reported, never a failure.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub setting: String,
    pub what: String,
    pub observed: String,
}

/// `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    pub scenario: String,
    pub seed: u64,
    pub command: String,
    pub phase_s: f64,
    pub wall_s: f64,
    pub cluster: serde_json::Value,
    pub ops: u64,
    pub settings: Vec<SettingReport>,
    /// Every claim checked; `violations` counts those that did not hold.
    pub guarantees: Vec<GuaranteeCheck>,
    pub violations: u64,
    pub measurements: Vec<Measurement>,
    pub timeline: Vec<PhaseWindow>,
    pub fault_windows: Vec<FaultWindow>,
    /// Throughput, latency and failures of each fault window against the baseline phase.
    pub fault_impact: FaultImpact,
    pub duplicate_siblings: DuplicateSiblings,
    pub convergence: Convergence,
    pub notes: Vec<String>,
    /// The final read of every key at `r=all`: with `history.jsonl`, all the checkers need to
    /// judge the run again offline.
    pub final_state: FinalState,
    /// The full output of the checkers in [`crate::check_selected`] (examples bounded per
    /// list; the reports of checkers the scenario did not select are empty).
    pub checker: crate::Report,
}

/// Nearest-rank percentile of sorted `xs` (`q` in 0..=1), rounded to 3 decimals.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).map(|v| (v * 1000.0).round() / 1000.0)
}

fn latency_ms(op: &Op) -> f64 {
    (op.complete_ns - op.invoke_ns) as f64 / 1e6
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Per-op statistics of one `(setting, phase)`.
fn phase_stats(name: &str, ops: &[&Op]) -> PhaseReport {
    let mut p = PhaseReport {
        name: name.to_owned(),
        ops: ops.len() as u64,
        ok: 0,
        failed: 0,
        unknown: 0,
        reads: 0,
        reads_ok: 0,
        writes: 0,
        writes_ok: 0,
        read_availability: None,
        write_availability: None,
        reads_checked: 0,
        stale_reads: 0,
        stale_fraction: 0.0,
        lost_writes: 0,
        updates_lost: None,
        p50_ms: None,
        p99_ms: None,
        read_p50_ms: None,
        read_p99_ms: None,
        write_p50_ms: None,
        write_p99_ms: None,
        start_s: None,
        end_s: None,
    };
    let (mut all, mut reads, mut writes) = (Vec::new(), Vec::new(), Vec::new());
    for op in ops {
        match op.result {
            OpResult::Ok => p.ok += 1,
            OpResult::Fail => p.failed += 1,
            OpResult::Info => p.unknown += 1,
        }
        let ok = op.result == OpResult::Ok;
        if op.kind == OpKind::Read {
            p.reads += 1;
            p.reads_ok += u64::from(ok);
        } else {
            p.writes += 1;
            p.writes_ok += u64::from(ok);
        }
        if ok {
            let l = latency_ms(op);
            all.push(l);
            if op.kind == OpKind::Read {
                reads.push(l);
            } else {
                writes.push(l);
            }
        }
    }
    for v in [&mut all, &mut reads, &mut writes] {
        v.sort_by(f64::total_cmp);
    }
    p.read_availability = ratio(p.reads_ok, p.reads);
    p.write_availability = ratio(p.writes_ok, p.writes);
    p.p50_ms = percentile(&all, 0.50);
    p.p99_ms = percentile(&all, 0.99);
    p.read_p50_ms = percentile(&reads, 0.50);
    p.read_p99_ms = percentile(&reads, 0.99);
    p.write_p50_ms = percentile(&writes, 0.50);
    p.write_p99_ms = percentile(&writes, 0.99);
    p
}

/// The value that occurs twice in `values`, if one does.
fn duplicate_value(values: &[String]) -> Option<&str> {
    let mut sorted: Vec<&str> = values.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
}

/// Items with two siblings of one value, in client reads and in the final state.
pub fn duplicate_siblings(ops: &[Op], final_state: &FinalState) -> DuplicateSiblings {
    let mut d = DuplicateSiblings::default();
    let mut items: BTreeSet<(&str, &str)> = BTreeSet::new();
    let note = |d: &mut DuplicateSiblings, table: &str, key: &str, value: &str, at: String| {
        if d.examples.len() < EXAMPLES_LEN_MAX {
            d.examples.push(format!("{table}/{key}: {value:?} twice ({at})"));
        }
    };
    for (i, op) in ops.iter().enumerate() {
        if op.kind != OpKind::Read || op.result != OpResult::Ok {
            continue;
        }
        if let Some(v) = duplicate_value(&op.values) {
            d.reads += 1;
            if items.insert((op.table.as_str(), op.key.as_str())) {
                note(&mut d, &op.table, &op.key, v, format!("op {i}"));
            }
        }
    }
    for f in &final_state.items {
        if let Some(v) = duplicate_value(&f.values) {
            if items.insert((f.table.as_str(), f.key.as_str())) {
                note(&mut d, &f.table, &f.key, v, "final read".into());
            }
        }
    }
    d.items = items.len() as u64;
    d
}

/// The figures of the operations `ops` invoked within `[start_s, end_s)`, a window of
/// `duration_s` seconds (less than `end_s - start_s` for a baseline spread over several windows),
/// against the baseline rates `base` (ok, reads ok, writes ok per second).
fn window_impact(
    label: &str,
    kind: Option<FaultKind>,
    ops: &[&Op],
    (start_s, end_s, duration_s): (f64, f64, f64),
    base: Option<(f64, f64, f64)>,
) -> WindowImpact {
    let stats = phase_stats(label, ops);
    let per_s = |n: u64| if duration_s > 0.0 { n as f64 / duration_s } else { 0.0 };
    let (ok_per_s, reads_ok_per_s, writes_ok_per_s) =
        (per_s(stats.ok), per_s(stats.reads_ok), per_s(stats.writes_ok));
    let rel = |v: f64, b: f64| (b > 0.0).then(|| (v / b * 1000.0).round() / 1000.0);
    let mut ok_ms: Vec<f64> =
        ops.iter().filter(|o| o.result == OpResult::Ok).map(|o| latency_ms(o)).collect();
    ok_ms.sort_by(f64::total_cmp);
    let wait_max_ms =
        ops.iter().map(|o| latency_ms(o)).max_by(f64::total_cmp).map(|v| (v * 1000.0).round() / 1000.0);
    let duplicates: BTreeSet<(&str, &str)> = ops
        .iter()
        .filter(|o| {
            o.kind == OpKind::Read && o.result == OpResult::Ok && duplicate_value(&o.values).is_some()
        })
        .map(|o| (o.table.as_str(), o.key.as_str()))
        .collect();
    let round = |v: f64| (v * 10.0).round() / 10.0;
    WindowImpact {
        label: label.to_owned(),
        kind,
        start_s,
        end_s,
        ops: stats.ops,
        ok: stats.ok,
        failed: stats.failed,
        unknown: stats.unknown,
        ok_per_s: round(ok_per_s),
        reads_ok_per_s: round(reads_ok_per_s),
        writes_ok_per_s: round(writes_ok_per_s),
        throughput_relative: base.and_then(|b| rel(ok_per_s, b.0)),
        read_throughput_relative: base.and_then(|b| rel(reads_ok_per_s, b.1)),
        write_throughput_relative: base.and_then(|b| rel(writes_ok_per_s, b.2)),
        p50_ms: stats.p50_ms,
        p99_ms: stats.p99_ms,
        max_ms: percentile(&ok_ms, 1.0),
        wait_max_ms,
        duplicate_siblings: duplicates.len() as u64,
    }
}

fn impact_reads_ok(ops: &[&Op]) -> u64 {
    ops.iter().filter(|o| o.kind == OpKind::Read && o.result == OpResult::Ok).count() as u64
}

fn impact_writes_ok(ops: &[&Op]) -> u64 {
    ops.iter().filter(|o| o.kind != OpKind::Read && o.result == OpResult::Ok).count() as u64
}

/// Each fault window's figures next to the baseline phase's (see [`WindowImpact`]).
pub fn fault_impact(run: &RunOutput) -> FaultImpact {
    let ops = &run.history.ops;
    let invoked_s = |op: &Op| op.invoke_ns as f64 / 1e9;
    let baseline = run.baseline.as_ref().and_then(|phase| {
        // Settings run together share one window per phase; count each distinct one once.
        let mut spans: Vec<(f64, f64)> =
            run.windows.iter().filter(|w| &w.phase == phase).map(|w| (w.start_s, w.end_s)).collect();
        spans.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        spans.dedup();
        let duration_s: f64 = spans.iter().map(|(a, b)| b - a).sum();
        if spans.is_empty() || duration_s <= 0.0 {
            return None;
        }
        let selected: Vec<&Op> =
            ops.iter().filter(|op| op.phase.as_deref() == Some(phase.as_str())).collect();
        let (start_s, end_s) = (spans[0].0, spans[spans.len() - 1].1);
        let impact = window_impact(phase, None, &selected, (start_s, end_s, duration_s), None);
        // Unrounded rates, so the relative figures carry no rounding of the baseline.
        let rate = |n: u64| n as f64 / duration_s;
        let base = (rate(impact.ok), rate(impact_reads_ok(&selected)), rate(impact_writes_ok(&selected)));
        Some((impact, base))
    });
    let (baseline, base) = match baseline {
        Some((impact, base)) => (Some(impact), Some(base)),
        None => (None, None),
    };
    let windows = run
        .faults
        .iter()
        .map(|f| {
            let selected: Vec<&Op> =
                ops.iter().filter(|op| (f.start_s..f.end_s).contains(&invoked_s(op))).collect();
            window_impact(&f.label, f.kind, &selected, (f.start_s, f.end_s, f.end_s - f.start_s), base)
        })
        .collect();
    FaultImpact { baseline_phase: run.baseline.clone(), baseline, windows }
}

/// Cross-client monotonic reads over the `ok` reads selected by `select` (see the module docs).
pub fn check_monotonic_reads(
    ops: &[Op],
    select: impl Fn(&Op) -> bool,
) -> Result<MonotonicReport, ReportError> {
    let mut report = MonotonicReport::default();
    let mut per_key: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if op.kind == OpKind::Read && op.result == OpResult::Ok && select(op) {
            per_key.entry((op.table.as_str(), op.key.as_str())).or_default().push(i);
        }
    }
    let context = |i: usize| -> Result<VersionVector, ReportError> {
        let token = ops[i].context_out.as_deref().unwrap_or_default();
        VersionVector::from_recorded_token(token)
            .map_err(|source| ReportError::BadContext { index: i, source })
    };
    for reads in per_key.values() {
        let mut by_complete = reads.clone();
        by_complete.sort_by_key(|&i| (ops[i].complete_ns, i));
        let mut by_invoke = reads.clone();
        by_invoke.sort_by_key(|&i| (ops[i].invoke_ns, i));
        let contexts: HashMap<usize, VersionVector> =
            reads.iter().map(|&i| Ok((i, context(i)?))).collect::<Result<_, ReportError>>()?;
        let mut joined = VersionVector::new();
        let mut merged = 0usize;
        for &r in &by_invoke {
            while let Some(&e) = by_complete.get(merged) {
                if ops[e].complete_ns >= ops[r].invoke_ns {
                    break;
                }
                joined.merge(&contexts[&e]);
                merged += 1;
            }
            if merged == 0 {
                continue;
            }
            report.checked += 1;
            if !contexts[&r].descends_modulo_pruning(&joined) {
                report.violations += 1;
                if report.examples.len() < EXAMPLES_LEN_MAX {
                    // The latest earlier read the later one does not descend.
                    let earlier = by_complete[..merged]
                        .iter()
                        .rev()
                        .find(|&&e| !contexts[&r].descends_modulo_pruning(&contexts[&e]));
                    if let Some(&e) = earlier {
                        report.examples.push(MonotonicViolation {
                            read: OpRef { index: r, op: ops[r].clone() },
                            earlier: OpRef { index: e, op: ops[e].clone() },
                        });
                    }
                }
            }
        }
    }
    Ok(report)
}

/// The id of a lineage value `"<id> saw <id>,<id>"` and the ids it saw.
pub fn parse_lineage(value: &str) -> (&str, Vec<&str>) {
    match value.split_once(" saw ") {
        Some((id, saw)) => (id, saw.split(',').filter(|s| !s.is_empty()).collect()),
        None => (value, Vec::new()),
    }
}

/// Indices of acknowledged writes outside the lineage of the final values (module docs).
pub fn updates_lost(ops: &[Op], final_state: &FinalState) -> Vec<usize> {
    let mut lost = Vec::new();
    let mut per_key: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if op.kind == OpKind::Write && op.result != OpResult::Fail {
            per_key.entry((op.table.as_str(), op.key.as_str())).or_default().push(i);
        }
    }
    for ((table, key), writes) in per_key {
        let saw: HashMap<&str, Vec<&str>> =
            writes.iter().filter_map(|&i| ops[i].value.as_deref()).map(parse_lineage).collect();
        let finals = final_state.items.iter().find(|f| f.table == table && f.key == key);
        let mut reached: BTreeSet<&str> = BTreeSet::new();
        let mut stack: Vec<&str> =
            finals.map(|f| f.values.iter().map(|v| parse_lineage(v).0).collect()).unwrap_or_default();
        // Each id is pushed at most once per saw-link and expanded once, so this ends.
        while let Some(id) = stack.pop() {
            if reached.insert(id) {
                stack.extend(saw.get(id).into_iter().flatten().copied());
            }
        }
        for &i in &writes {
            let id = ops[i].value.as_deref().map(|v| parse_lineage(v).0).unwrap_or_default();
            if ops[i].result == OpResult::Ok && !reached.contains(id) {
                lost.push(i);
            }
        }
    }
    lost
}

fn describe_op(index: usize, op: &Op) -> String {
    let what = match op.kind {
        OpKind::Read if op.values.is_empty() => "read -> not found".to_owned(),
        OpKind::Read => format!("read -> {:?}", op.values),
        OpKind::Write => format!("write {:?}", op.value.as_deref().unwrap_or_default()),
        OpKind::Delete => "delete".to_owned(),
    };
    format!(
        "op {index} (process {}, {what}, {:?}, {:.3}..{:.3} s)",
        op.process,
        op.result,
        op.invoke_ns as f64 / 1e9,
        op.complete_ns as f64 / 1e9
    )
}

fn explain(c: &Counterexample) -> String {
    use crate::checker::linearizability::CounterexampleKind;
    match c.kind {
        CounterexampleKind::Siblings => {
            format!("{} returned siblings, which no single register can", describe_op(c.op.index, &c.op.op))
        }
        CounterexampleKind::NoLinearization => format!(
            "{} cannot be placed after {} linearized ops (register then held {:?}); {} ops overlap it",
            describe_op(c.op.index, &c.op.op),
            c.linearized_len,
            c.register_value.as_deref().unwrap_or("nothing"),
            c.concurrent_count
        ),
    }
}

/// Runs the run's checkers and assembles the report.
pub fn build(run: &RunOutput) -> Result<LabReport, ReportError> {
    let ops = &run.history.ops;
    let on = |c: Checker| run.checkers.contains(&c);
    let selection = crate::Selection {
        lost_writes: on(Checker::LostWrites),
        linearizability: on(Checker::Linearizability),
        staleness: on(Checker::Staleness),
        sessions: on(Checker::Sessions),
    };
    let checker = crate::check_selected(&run.history, &run.final_state, &CheckConfig::default(), &selection)?;
    // The default report keeps ten examples per list; attributing every lost write to its
    // setting and phase needs them all.
    let all = CheckConfig { examples_len_max: ops.len().max(1), ..CheckConfig::default() };
    let lost = if selection.lost_writes {
        check_lost_writes(&run.history, &run.final_state, &all)?
    } else {
        crate::checker::LostWritesReport::default()
    };
    let lineage_lost = on(Checker::Lineage).then(|| updates_lost(ops, &run.final_state));

    // Keys belong to the setting whose ops touched them (settings never share keys).
    let mut key_setting: HashMap<(&str, &str), &str> = HashMap::new();
    for op in ops {
        if let Some(s) = op.setting.as_deref() {
            key_setting.entry((op.table.as_str(), op.key.as_str())).or_insert(s);
        }
    }

    let mut settings = Vec::new();
    let mut guarantees = Vec::new();
    let mut measurements = Vec::new();
    for def in &run.settings {
        let mine = |op: &Op| op.setting.as_deref() == Some(def.name.as_str());
        let mut phases = Vec::new();
        for phase in &run.phases {
            let selected: Vec<&Op> =
                ops.iter().filter(|op| mine(op) && op.phase.as_deref() == Some(phase.as_str())).collect();
            let mut p = phase_stats(phase, &selected);
            if let Some(g) = checker.staleness.groups.iter().find(|g| {
                g.setting.as_deref() == Some(def.name.as_str()) && g.phase.as_deref() == Some(phase.as_str())
            }) {
                p.reads_checked = g.reads_checked;
                p.stale_reads = g.stale;
                p.stale_fraction = g.stale_fraction;
            }
            let in_phase = |op: &Op| mine(op) && op.phase.as_deref() == Some(phase.as_str());
            p.lost_writes = lost.lost_examples.iter().filter(|l| in_phase(&l.write.op)).count() as u64;
            p.updates_lost =
                lineage_lost.as_ref().map(|l| l.iter().filter(|&&i| in_phase(&ops[i])).count() as u64);
            if let Some(w) = run.windows.iter().find(|w| w.setting == def.name && &w.phase == phase) {
                p.start_s = Some(w.start_s);
                p.end_s = Some(w.end_s);
            }
            phases.push(p);
        }

        // Linearizability over this setting's keys.
        let keys: Vec<_> = checker
            .linearizability
            .keys
            .iter()
            .filter(|k| key_setting.get(&(k.table.as_str(), k.key.as_str())) == Some(&def.name.as_str()))
            .collect();
        let bad: Vec<_> = keys.iter().filter(|k| k.verdict == Verdict::NotLinearizable).collect();
        // The README warns that a write answered 503/504 "may still be applied ... and may
        // later appear": such a write can land as a sibling of the writes its client made
        // after giving up on it, which no register explains. The linearizability claim is
        // therefore judged on the keys whose writes all got a definite answer.
        let unknown_write_keys: HashSet<(&str, &str)> = ops
            .iter()
            .filter(|op| mine(op) && op.kind != OpKind::Read && op.result == OpResult::Info)
            .map(|op| (op.table.as_str(), op.key.as_str()))
            .collect();
        let clean_bad: Vec<_> = bad
            .iter()
            .filter(|k| !unknown_write_keys.contains(&(k.table.as_str(), k.key.as_str())))
            .collect();
        let unknown = keys.iter().filter(|k| k.verdict == Verdict::Unknown).count() as u64;
        let first = bad.first();
        let verdict = if !bad.is_empty() {
            "not_linearizable"
        } else if unknown > 0 || keys.is_empty() {
            "unknown"
        } else {
            "linearizable"
        };
        let lin = LinearizabilitySummary {
            verdict: verdict.to_owned(),
            keys_checked: keys.len() as u64,
            keys_not_linearizable: bad.len() as u64,
            keys_unknown: unknown,
            key: first.map(|k| format!("{}/{}", k.table, k.key)),
            counterexample: first.and_then(|k| k.counterexample.clone()),
            explanation: first.and_then(|k| k.counterexample.as_ref()).map(explain),
        };

        let monotonic = if on(Checker::MonotonicReads) {
            check_monotonic_reads(ops, mine)?
        } else {
            MonotonicReport::default()
        };
        let session = |f: fn(&crate::checker::sessions::SessionGroup) -> u64| -> u64 {
            checker
                .sessions
                .groups
                .iter()
                .filter(|g| g.setting.as_deref() == Some(def.name.as_str()))
                .map(f)
                .sum()
        };
        let mut t_visibility: Vec<StalenessBucket> = Vec::new();
        for g in checker.staleness.groups.iter().filter(|g| g.setting.as_deref() == Some(def.name.as_str())) {
            if t_visibility.is_empty() {
                t_visibility =
                    g.buckets.iter().map(|b| StalenessBucket { reads: 0, stale: 0, ..b.clone() }).collect();
            }
            for (acc, b) in t_visibility.iter_mut().zip(&g.buckets) {
                acc.reads += b.reads;
                acc.stale += b.stale;
            }
        }
        for b in &mut t_visibility {
            b.stale_fraction = if b.reads == 0 { 0.0 } else { b.stale as f64 / b.reads as f64 };
        }

        let key_mine = |table: &str, key: &str| key_setting.get(&(table, key)) == Some(&def.name.as_str());
        let lost_n = lost.lost_examples.iter().filter(|l| mine(&l.write.op)).count() as u64;
        let resurrected = lost.resurrected_examples.iter().filter(|r| mine(&r.write.op)).count() as u64;
        let unexpected =
            lost.unexpected_examples.iter().filter(|u| key_mine(&u.table, &u.key)).count() as u64;
        let updates = lineage_lost.as_ref().map(|l| l.iter().filter(|&&i| mine(&ops[i])).count() as u64);
        let stale_total: u64 = phases.iter().map(|p| p.stale_reads).sum();
        let checked_total: u64 = phases.iter().map(|p| p.reads_checked).sum();
        // What the README promises for this setting, and of that what this run judged: a claim
        // whose checker the scenario did not select is neither held nor violated.
        let promised = def.claims();
        let claims: Vec<Claim> = promised
            .iter()
            .copied()
            .filter(|&c| Checker::ALL.iter().any(|&k| k.claim() == Some(c) && on(k)))
            .collect();

        for &claim in &claims {
            let (held, observed) = match claim {
                Claim::NoLostWrites => {
                    let updates_ok = updates.unwrap_or(0) == 0;
                    (
                        lost_n == 0 && resurrected == 0 && unexpected == 0 && updates_ok,
                        format!(
                            "{lost_n} lost, {resurrected} resurrected, {unexpected} unexpected final values{}",
                            updates.map(|u| format!(", {u} updates lost")).unwrap_or_default()
                        ),
                    )
                }
                Claim::NoStaleReads => {
                    let by_phase: Vec<String> =
                        phases.iter().map(|p| format!("{} {}", p.name, p.stale_reads)).collect();
                    (
                        stale_total == 0,
                        format!("{stale_total} stale of {checked_total} reads ({})", by_phase.join(", ")),
                    )
                }
                Claim::MonotonicQuorumReads => (
                    monotonic.violations == 0,
                    format!(
                        "{} of {} reads returned an older state than an earlier read",
                        monotonic.violations, monotonic.checked
                    ),
                ),
                Claim::Linearizable => match (clean_bad.first(), first) {
                    (Some(k), _) => (
                        false,
                        format!(
                            "key {}/{}: {}",
                            k.table,
                            k.key,
                            k.counterexample.as_ref().map(explain).unwrap_or_default()
                        ),
                    ),
                    (None, Some(_)) => (
                        true,
                        format!(
                            "every key whose writes all got an answer is linearizable; {} key(s) with a write \
                             of unknown outcome are not (README: such a write may later appear), e.g. {}: {}",
                            bad.len(),
                            lin.key.as_deref().unwrap_or("?"),
                            lin.explanation.as_deref().unwrap_or_default()
                        ),
                    ),
                    (None, None) => (true, format!("{verdict} ({} keys, {unknown} undecided)", keys.len())),
                },
                Claim::Convergence => (true, String::new()),
            };
            guarantees.push(GuaranteeCheck {
                claim,
                readme: claim.readme().to_owned(),
                setting: Some(def.name.clone()),
                held,
                observed,
            });
        }
        if on(Checker::Staleness) && !promised.contains(&Claim::NoStaleReads) {
            measurements.push(Measurement {
                setting: def.name.clone(),
                what: format!(
                    "stale reads (r + w = {} <= N = {}: not promised)",
                    def.r + def.w,
                    def.replication_factor
                ),
                observed: format!(
                    "{stale_total} of {checked_total} ({:.2}%)",
                    100.0 * ratio(stale_total, checked_total).unwrap_or(0.0)
                ),
            });
        }
        if (on(Checker::LostWrites) || on(Checker::Lineage)) && !promised.contains(&Claim::NoLostWrites) {
            measurements.push(Measurement {
                setting: def.name.clone(),
                what: "acknowledged writes lost (lww: concurrent writes are discarded by design)".into(),
                observed: format!(
                    "{lost_n} by the lost-write checker{}",
                    updates.map(|u| format!(", {u} updates lost by lineage")).unwrap_or_default()
                ),
            });
        }
        if on(Checker::Linearizability) && !promised.contains(&Claim::Linearizable) {
            measurements.push(Measurement {
                setting: def.name.clone(),
                what: "linearizability (not promised for this setting)".into(),
                observed: match &lin.explanation {
                    Some(e) => format!("{verdict}: key {}: {e}", lin.key.as_deref().unwrap_or("?")),
                    None => verdict.to_owned(),
                },
            });
        }
        if on(Checker::MonotonicReads) && !promised.contains(&Claim::MonotonicQuorumReads) {
            measurements.push(Measurement {
                setting: def.name.clone(),
                what: "reads older than an earlier completed read (r below quorum: not promised)".into(),
                observed: format!("{} of {}", monotonic.violations, monotonic.checked),
            });
        }

        settings.push(SettingReport {
            name: def.name.clone(),
            table: def.table.clone(),
            r: def.r,
            w: def.w,
            consistency: def.consistency.clone(),
            conflict: def.conflict,
            linearizable: match verdict {
                "linearizable" => Some(true),
                "not_linearizable" => Some(false),
                _ => None,
            },
            linearizability: lin,
            monotonic_reads: monotonic,
            read_your_writes_violations: session(|g| g.read_your_writes_violations),
            monotonic_session_violations: session(|g| g.monotonic_reads_violations),
            lost_writes: lost_n,
            resurrected,
            unexpected_final_values: unexpected,
            updates_lost: updates,
            claims,
            t_visibility,
            phases,
        });
    }
    if on(Checker::Convergence) {
        guarantees.push(GuaranteeCheck {
            claim: Claim::Convergence,
            readme: Claim::Convergence.readme().to_owned(),
            setting: None,
            held: run.convergence.diverged == 0,
            observed: format!(
                "{} of {} keys differed between replicas after the pass ({} keys moved by it)",
                run.convergence.diverged, run.convergence.keys, run.convergence.repair_keys_moved
            ),
        });
    }
    let violations = guarantees.iter().filter(|g| !g.held).count() as u64;
    Ok(LabReport {
        scenario: run.scenario.clone(),
        seed: run.seed,
        command: run.command.clone(),
        phase_s: run.phase_s,
        wall_s: (run.wall_s * 10.0).round() / 10.0,
        cluster: run.cluster.clone(),
        ops: ops.len() as u64,
        settings,
        guarantees,
        violations,
        measurements,
        timeline: run.windows.clone(),
        fault_windows: run.faults.clone(),
        fault_impact: fault_impact(run),
        duplicate_siblings: duplicate_siblings(ops, &run.final_state),
        convergence: run.convergence.clone(),
        notes: run.notes.clone(),
        final_state: run.final_state.clone(),
        checker,
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    }
}

fn pct(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("{:.1}%", v * 100.0),
        None => "-".into(),
    }
}

/// The summary table printed at the end of a run.
pub fn summary(r: &LabReport, lineage: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{} seed {} ({} ops, {:.0} s)", r.scenario, r.seed, r.ops, r.wall_s);
    let _ = write!(
        s,
        "{:<13} {:<18} {:>6} {:>6} {:>5} {:>5} {:>7} {:>7} {:>7} {:>7} {:>6} {:>5}",
        "SETTING",
        "PHASE",
        "OPS",
        "OK",
        "FAIL",
        "UNK",
        "R-AVAIL",
        "W-AVAIL",
        "P50ms",
        "P99ms",
        "STALE",
        "LOST"
    );
    let _ = writeln!(s, "{}", if lineage { "  LOST-UPDATES" } else { "" });
    for setting in &r.settings {
        for p in &setting.phases {
            let _ = write!(
                s,
                "{:<13} {:<18} {:>6} {:>6} {:>5} {:>5} {:>7} {:>7} {:>7} {:>7} {:>6} {:>5}",
                setting.name,
                p.name,
                p.ops,
                p.ok,
                p.failed,
                p.unknown,
                pct(p.read_availability),
                pct(p.write_availability),
                opt(p.p50_ms, 2),
                opt(p.p99_ms, 1),
                p.stale_reads,
                p.lost_writes,
            );
            let _ = writeln!(s, "{}", p.updates_lost.map(|u| format!("  {u:>12}")).unwrap_or_default());
        }
    }
    let _ = writeln!(
        s,
        "(LOST: acknowledged writes the lost-write checker found missing{})",
        if lineage {
            "; LOST-UPDATES: acknowledged writes no final value builds on (value lineage)"
        } else {
            ""
        }
    );
    if !r.fault_impact.windows.is_empty() {
        let _ = writeln!(
            s,
            "\nFault windows{} (ops invoked in the window; THRU: ok ops/s relative to the baseline):",
            r.fault_impact
                .baseline_phase
                .as_deref()
                .map(|b| format!(" against phase {b}"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "{:<28} {:>6} {:>5} {:>5} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>4}",
            "WINDOW",
            "OPS",
            "FAIL",
            "UNK",
            "OK/s",
            "THRU",
            "R-THRU",
            "W-THRU",
            "P50ms",
            "P99ms",
            "MAXms",
            "DUPS"
        );
        for w in r.fault_impact.baseline.iter().chain(&r.fault_impact.windows) {
            let _ = writeln!(
                s,
                "{:<28} {:>6} {:>5} {:>5} {:>6.0} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>4}",
                w.label,
                w.ops,
                w.failed,
                w.unknown,
                w.ok_per_s,
                pct(w.throughput_relative),
                pct(w.read_throughput_relative),
                pct(w.write_throughput_relative),
                opt(w.p50_ms, 2),
                opt(w.p99_ms, 1),
                opt(w.wait_max_ms, 0),
                w.duplicate_siblings
            );
        }
        let _ = writeln!(
            s,
            "(MAXms: longest wait of any operation, failed and unknown ones included; DUPS: items read with two \
             siblings of one value; {} such items in the whole run)",
            r.duplicate_siblings.items
        );
    }
    let _ = writeln!(s, "\nLinearizability (checker verdict per setting):");
    for setting in &r.settings {
        let _ = writeln!(
            s,
            "  {:<13} {}{}",
            setting.name,
            setting.linearizability.verdict,
            setting
                .linearizability
                .explanation
                .as_ref()
                .map(|e| format!(" — {}: {e}", setting.linearizability.key.as_deref().unwrap_or("?")))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(s, "\nGuarantees the README claims (a failure here is a violation):");
    for g in &r.guarantees {
        let _ = writeln!(
            s,
            "  {} {:<22} {:<13} {}",
            if g.held { "held    " } else { "VIOLATED" },
            serde_json::to_value(g.claim)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            g.setting.as_deref().unwrap_or("all"),
            g.observed
        );
    }
    let _ = writeln!(s, "\nMeasurements (not promised by the README; never a failure):");
    for m in &r.measurements {
        let _ = writeln!(s, "  {:<13} {}: {}", m.setting, m.what, m.observed);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorumdb_core::causality::{ActorId, ItemState, Value};

    /// The token of a context holding `counter` writes of each `actor`, built through the
    /// core's public write path.
    fn token(entries: &[(u64, u64)]) -> String {
        let mut state = ItemState::new();
        for &(actor, counter) in entries {
            for _ in 0..counter {
                state = state.update(&VersionVector::new(), Value::Data(vec![]), ActorId(actor)).unwrap();
            }
        }
        state.context().to_token()
    }

    fn read(process: u32, invoke: u64, complete: u64, ctx: &[(u64, u64)]) -> Op {
        Op {
            process,
            kind: OpKind::Read,
            table: "t".into(),
            key: "k".into(),
            value: None,
            values: vec![],
            invoke_ns: invoke,
            complete_ns: complete,
            result: OpResult::Ok,
            context_in: None,
            context_out: Some(token(ctx)),
            setting: Some("s".into()),
            phase: Some("p".into()),
            error: None,
        }
    }

    /// A read invoked after another completed must not return an older context; overlapping
    /// reads may disagree.
    #[test]
    fn monotonic_reads_flags_only_real_time_inversions() {
        let ops = vec![
            read(1, 0, 10, &[(7, 2)]),
            // Overlaps op 0: may return the older state.
            read(2, 5, 12, &[(7, 1)]),
            // Invoked after op 0 completed: must descend it.
            read(3, 20, 30, &[(7, 1)]),
            read(4, 40, 50, &[(7, 3)]),
        ];
        let report = check_monotonic_reads(&ops, |_| true).unwrap();
        assert_eq!(report.checked, 2);
        assert_eq!(report.violations, 1);
        assert_eq!(report.examples[0].read.index, 2);
        assert_eq!(report.examples[0].earlier.index, 0);
    }

    /// Updates reachable from the final values through "saw" links survive; others are lost.
    #[test]
    fn lineage_finds_discarded_updates() {
        let write = |value: &str, result: OpResult| Op {
            kind: OpKind::Write,
            value: Some(value.into()),
            result,
            context_out: None,
            ..read(1, 0, 1, &[])
        };
        let ops = vec![
            write("a saw ", OpResult::Ok),
            write("b saw a", OpResult::Ok),
            write("c saw a", OpResult::Ok),
            write("d saw b", OpResult::Info),
            write("e saw d", OpResult::Ok),
        ];
        let mut finals = FinalState::default();
        finals.push("t", "k", vec!["e saw d".into()], None);
        // c was acknowledged but nothing that survives builds on it.
        assert_eq!(updates_lost(&ops, &finals), vec![2]);
        assert_eq!(parse_lineage("x saw y,z"), ("x", vec!["y", "z"]));
    }

    fn op(kind: OpKind, result: OpResult, invoke_ms: u64, took_ms: u64, values: &[&str]) -> Op {
        Op {
            kind,
            result,
            invoke_ns: invoke_ms * 1_000_000,
            complete_ns: (invoke_ms + took_ms) * 1_000_000,
            values: values.iter().map(|v| v.to_string()).collect(),
            value: (kind == OpKind::Write).then(|| format!("w{invoke_ms}")),
            context_out: None,
            phase: Some(if invoke_ms < 1000 { "healthy" } else { "fault" }.into()),
            ..read(1, 0, 1, &[])
        }
    }

    /// Proves a fault window counts the ops invoked in it (whenever they completed), rates them
    /// against the baseline phase, takes its latency max over ok ops and its wait max over all,
    /// and counts items read with two siblings of one value, as the run-wide count does.
    #[test]
    fn fault_impact_compares_windows_with_the_baseline() {
        let ops = vec![
            // Baseline: 1 s, two ok reads and one ok write.
            op(OpKind::Read, OpResult::Ok, 100, 1, &["a"]),
            op(OpKind::Read, OpResult::Ok, 200, 1, &["a"]),
            op(OpKind::Write, OpResult::Ok, 300, 2, &[]),
            // Fault window 1.0..2.0 s: one slow ok read with a duplicate, one timed-out write.
            op(OpKind::Read, OpResult::Ok, 1100, 40, &["b", "c", "b"]),
            op(OpKind::Write, OpResult::Info, 1500, 2000, &[]),
            // After the window.
            op(OpKind::Read, OpResult::Ok, 2500, 1, &["a"]),
        ];
        let run = RunOutput {
            scenario: "t".into(),
            seed: 1,
            command: String::new(),
            phase_s: 1.0,
            cluster: serde_json::Value::Null,
            settings: vec![],
            phases: vec!["healthy".into(), "fault".into()],
            baseline: Some("healthy".into()),
            windows: vec![
                PhaseWindow { setting: "s".into(), phase: "healthy".into(), start_s: 0.0, end_s: 1.0 },
                PhaseWindow { setting: "s".into(), phase: "fault".into(), start_s: 1.0, end_s: 3.0 },
            ],
            faults: vec![FaultWindow {
                label: "n1 paused".into(),
                kind: Some(FaultKind::Pause),
                start_s: 1.0,
                end_s: 2.0,
            }],
            history: History::new(ops.clone()),
            final_state: FinalState::default(),
            convergence: Convergence::default(),
            checkers: BTreeSet::new(),
            notes: vec![],
            wall_s: 0.0,
        };
        let impact = fault_impact(&run);
        let base = impact.baseline.as_ref().unwrap();
        assert_eq!((base.ops, base.ok, base.ok_per_s, base.duplicate_siblings), (3, 3, 3.0, 0));
        let w = &impact.windows[0];
        assert_eq!(
            (w.kind, w.ops, w.ok, w.unknown, w.duplicate_siblings),
            (Some(FaultKind::Pause), 2, 1, 1, 1)
        );
        assert_eq!(w.throughput_relative, Some(0.333));
        assert_eq!((w.read_throughput_relative, w.write_throughput_relative), (Some(0.5), Some(0.0)));
        assert_eq!((w.max_ms, w.wait_max_ms), (Some(40.0), Some(2000.0)));

        let mut finals = FinalState::default();
        finals.push("t", "other", vec!["x".into(), "x".into()], None);
        let d = duplicate_siblings(&ops, &finals);
        assert_eq!((d.items, d.reads), (2, 1));
        assert!(d.examples[0].contains("\"b\" twice (op 3)"), "{:?}", d.examples);
    }

    /// Nearest-rank percentiles.
    #[test]
    fn percentiles() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 0.5), Some(50.0));
        assert_eq!(percentile(&xs, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
