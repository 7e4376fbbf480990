//! `quorumdb lab run log-under-faults` end to end, in its short mode: real Kafka producers and
//! consumers (the lab's own wire client) on a real 3-node cluster while the nemesis pauses,
//! kills and cuts off nodes; the log checker must find 0 anomalies. The same recorded history,
//! deliberately corrupted, must then be caught.

use quorumdb_lab::checker::log::{check_log, LogHistory, LogOp};
use quorumdb_lab::checker::CheckConfig;
use quorumdb_lab::OpResult;
use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_quorumdb");

/// Proves a short run under pause, kill and partition faults exits 0 with 0 anomalies of every
/// class in report.json, actually exercised the log (acknowledged sends, polled records, every
/// fault kind), and that its history.jsonl re-checks to the same verdict offline; then proves
/// the checker flags that real history once an acknowledged record is removed from its final
/// read (a lost write) and once a polled record is dropped (a skipped poll).
#[test]
fn log_under_faults_short_run_has_no_anomalies() {
    let out = std::env::temp_dir().join(format!("qdb-labtest-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(BIN)
        .args(["lab", "run", "log-under-faults", "--duration", "12", "--seed", "5", "--out"])
        .arg(&out)
        .output()
        .expect("cannot run quorumdb");
    let code = output.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        code,
        0,
        "lab run exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr}\nlogs in {}",
        out.display()
    );

    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json missing"))
            .expect("report.json is not JSON");
    assert_eq!(report["scenario"], "log-under-faults");
    assert_eq!(report["seed"], 5);
    assert_eq!(report["anomalies"], 0, "{report:#}");
    for class in [
        "duplicates",
        "lost",
        "inconsistent_offsets",
        "nonmonotonic_polls",
        "skipped_polls",
        "unexpected_values",
    ] {
        assert_eq!(report["checker"][class], 0, "{class}: {:#}", report["checker"]);
    }
    let n = |field: &str| report[field].as_u64().unwrap_or_else(|| panic!("{field} missing"));
    assert!(n("sends_ok") > 100, "too few acknowledged sends: {report:#}");
    assert!(n("polled_records") > 100 && n("final_records") >= n("sends_ok") / 2, "{report:#}");
    for kind in ["pause", "kill", "partition"] {
        assert!(report["fault_counts"][kind].as_u64().unwrap_or(0) >= 1, "no {kind} fault: {report:#}");
    }

    let file = std::fs::File::open(out.join("history.jsonl")).expect("history.jsonl missing");
    let history = LogHistory::read_jsonl(file).expect("history.jsonl does not parse");
    let config = CheckConfig::default();
    let again = check_log(&history, &config).expect("a valid history");
    assert_eq!(again.anomalies, 0);
    assert_eq!(again.sends_ok, n("sends_ok"));

    // Corrupt the real history: drop one acknowledged record from a final read.
    let acked: std::collections::BTreeSet<String> = history
        .ops
        .iter()
        .filter_map(|op| match op {
            LogOp::Send(s) if s.result == OpResult::Ok => Some(s.value.clone()),
            _ => None,
        })
        .collect();
    let mut lost = history.clone();
    let f = lost
        .ops
        .iter_mut()
        .find_map(|op| match op {
            LogOp::Final(f) if f.records.iter().any(|(_, v)| acked.contains(v)) => Some(f),
            _ => None,
        })
        .expect("a final read holding an acknowledged record");
    let at = f.records.iter().position(|(_, v)| acked.contains(v)).expect("checked above");
    f.records.remove(at);
    let r = check_log(&lost, &config).expect("still a valid history");
    assert!(r.lost >= 1, "{r:#?}");

    // And drop the middle record of a poll that returned three or more.
    let mut skipped = history;
    let p = skipped
        .ops
        .iter_mut()
        .find_map(|op| match op {
            LogOp::Poll(p) if p.records.len() >= 3 => Some(p),
            _ => None,
        })
        .expect("a poll with three records");
    p.records.remove(1);
    let r = check_log(&skipped, &config).expect("still a valid history");
    assert!(r.skipped_polls >= 1, "{r:#?}");
    let _ = std::fs::remove_dir_all(&out);
}
