//! `quorumdb lab run flaky-warehouse-sink` end to end, in its short mode: a real 3-node cluster
//! and a private PostgreSQL, QuorumDB's sink and the lab's naive consumer side by side through
//! a warehouse deploy (restart, connection resets, injected errors, latency spikes), a node
//! kill -9, a naive-consumer kill and a poison record. Needs PostgreSQL (scripts/test.sh
//! installs it); fails, never skips, without it.

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_quorumdb");
/// The short mode's wall-clock budget on the shared 2-core VM (the run takes about 30 s).
const WALL_MAX: Duration = Duration::from_secs(60);
/// Recovery after the deploy window must stay below this (the sink takes about 2 s).
const RECOVERY_MAX_S: f64 = 15.0;

/// Proves under every fault: QuorumDB 0 duplicates, 0 missing, poison in DLQ, bounded recovery; naive not.
#[test]
fn flaky_warehouse_sink_short_run_quorumdb_exact_naive_not() {
    let out = std::env::temp_dir().join(format!("qdb-labtest-sink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let started = Instant::now();
    let output = Command::new(BIN)
        .args(["lab", "run", "flaky-warehouse-sink", "--duration", "15", "--seed", "7", "--out"])
        .arg(&out)
        .output()
        .expect("cannot run quorumdb");
    let wall = started.elapsed();
    let code = output.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        code,
        0,
        "lab run exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr}\nlogs in {}",
        out.display()
    );
    assert!(wall < WALL_MAX, "the short run took {wall:?}");

    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json missing"))
            .expect("report.json is not JSON");
    assert_eq!(report["scenario"], "flaky-warehouse-sink");
    assert_eq!(report["violations"], 0, "{:#}", report["violated"]);
    assert!(report["records_acknowledged"].as_u64().unwrap_or(0) > 500, "too few records: {stdout}");
    for kind in
        ["node-kill", "naive-kill", "pg-restart", "connection-reset", "injected-errors", "latency-spike"]
    {
        assert!(report["fault_counts"][kind].as_u64().unwrap_or(0) >= 1, "no {kind} fault: {stdout}");
    }
    let q = &report["quorumdb"];
    let n = |c: &Value, field: &str| c[field].as_u64().unwrap_or_else(|| panic!("{field} missing: {c:#}"));
    assert_eq!((n(q, "duplicate_rows"), n(q, "duplicate_events"), n(q, "missing_rows")), (0, 0, 0), "{q:#}");
    assert!(n(q, "dead_letters") >= 1 && q["poison_dead_lettered"] == true, "{q:#}");
    assert!(n(q, "rows") >= n(&report, "records_acknowledged"), "{q:#}");
    assert!(n(q, "retries") >= 1, "the sink never retried: the faults did not reach it: {q:#}");
    let recovery = q["recovery_s"].as_f64().unwrap_or_else(|| panic!("no recovery: {q:#}"));
    assert!(recovery <= RECOVERY_MAX_S, "recovery {recovery} s: {q:#}");

    let naive = &report["naive"];
    assert!(n(naive, "duplicate_rows") > 0, "the naive consumer stored no duplicate: {naive:#}");
    assert!(n(naive, "missing_rows") > 0, "the naive consumer lost nothing: {naive:#}");
    assert_eq!(report["naive_unharmed"], false);
    assert!(stdout.contains("quorumdb-sink") && stdout.contains("naive"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}
