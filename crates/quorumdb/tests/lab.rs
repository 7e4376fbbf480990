//! `quorumdb lab run` end to end: short runs of each scenario on a real local cluster (the lab
//! starts its own servers), checking the files other tooling reads and the one guarantee the
//! lab exists to prove: no acknowledged write lost in siblings mode.

use quorumdb_lab::History;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_quorumdb");

/// Runs `quorumdb lab run <args>` into a fresh directory; returns it, the parsed report and
/// the exit code. The run must complete: 0 (every claim held) or 3 (a claim was violated).
fn lab_run(name: &str, args: &[&str]) -> (PathBuf, Value, i32) {
    let out = std::env::temp_dir().join(format!("qdb-labtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let output = Command::new(BIN)
        .args(["lab", "run"])
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("cannot run quorumdb");
    let code = output.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        code == 0 || code == 3,
        "lab run failed with {code}\nstdout:\n{stdout}\nstderr:\n{stderr}\nlogs in {}",
        out.display()
    );
    if code == 3 {
        // A violated claim is for the assertions below (or a human) to judge; show what it was.
        eprintln!("lab run reported a violated guarantee:\n{stdout}");
    }
    let report = std::fs::read(out.join("report.json")).expect("report.json missing");
    let report: Value = serde_json::from_slice(&report).expect("report.json is not JSON");
    (out, report, code)
}

/// The `report.json` contract: scenario, seed, settings with r/w/linearizable and phases with
/// the documented counters; returns the total ops over all settings and phases.
fn assert_shape(report: &Value, scenario: &str, seed: u64, settings: &[&str], phases: &[&str]) -> u64 {
    assert_eq!(report["scenario"], scenario);
    assert_eq!(report["seed"], seed);
    let got: Vec<&str> =
        report["settings"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(got, settings);
    let mut total = 0;
    for s in report["settings"].as_array().unwrap() {
        assert!(s["r"].is_u64() && s["w"].is_u64(), "{s}");
        assert!(s["linearizable"].is_boolean() || s["linearizable"].is_null());
        let names: Vec<&str> =
            s["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, phases);
        for p in s["phases"].as_array().unwrap() {
            for field in ["ops", "ok", "failed", "unknown", "stale_reads", "lost_writes"] {
                assert!(p[field].is_u64(), "{field} in {p}");
            }
            for field in ["p50_ms", "p99_ms"] {
                assert!(p[field].is_f64() || p[field].is_null(), "{field} in {p}");
            }
            let ops = p["ops"].as_u64().unwrap();
            let parts =
                p["ok"].as_u64().unwrap() + p["failed"].as_u64().unwrap() + p["unknown"].as_u64().unwrap();
            assert_eq!(ops, parts, "ok + failed + unknown must add up to ops: {p}");
            total += ops;
        }
    }
    total
}

/// `history.jsonl` parses with the lab crate, validates, and holds every op the report counted.
fn assert_history(out: &Path, ops: u64) -> History {
    let file = std::fs::File::open(out.join("history.jsonl")).expect("history.jsonl missing");
    let history = History::read_jsonl(file).expect("history.jsonl does not parse");
    history.validate().expect("history.jsonl is not a valid history");
    assert_eq!(history.ops.len() as u64, ops);
    assert!(ops > 0, "the workload recorded nothing");
    history
}

/// The no-lost-write claim was checked for `setting` and held.
fn assert_nothing_lost(report: &Value, setting: &str) {
    let s = report["settings"].as_array().unwrap().iter().find(|s| s["name"] == setting).unwrap();
    assert_eq!(
        s["lost_writes"], 0,
        "{setting} lost acknowledged writes: {}",
        report["checker"]["lost_writes"]
    );
    let claim = report["guarantees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["claim"] == "no_lost_writes" && g["setting"] == setting)
        .unwrap_or_else(|| panic!("no no_lost_writes claim checked for {setting}"));
    assert_eq!(claim["held"], true, "{claim}");
}

/// A short az-failure run (1 s phases) writes all three files in the documented shape and loses no
/// acknowledged write under any setting.
#[test]
fn az_failure_short_run() {
    let (out, report, _code) =
        lab_run("az", &["az-failure", "--seed", "7", "--duration", "1", "--clients", "4", "--keys", "6"]);
    let settings = ["r1w3", "r2w2", "r1w1", "linearizable"];
    let ops = assert_shape(&report, "az-failure", 7, &settings, &["healthy", "zone-down", "recovery"]);
    let history = assert_history(&out, ops);
    assert!(history.ops.iter().any(|o| o.phase.as_deref() == Some("zone-down")));
    for s in settings {
        assert_nothing_lost(&report, s);
    }
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html missing");
    assert!(html.contains("<svg") && !html.contains("<script"), "report.html must be self-contained SVG");
    let _ = std::fs::remove_dir_all(&out);
}

/// A short clock-skew-lww run writes the three files with the two table modes as settings, and
/// the siblings table loses no acknowledged write while one node's clock runs 5 s ahead.
#[test]
fn clock_skew_lww_short_run() {
    let (out, report, _code) = lab_run("skew", &["clock-skew-lww", "--seed", "7", "--duration", "1"]);
    let ops = assert_shape(
        &report,
        "clock-skew-lww",
        7,
        &["lww", "siblings"],
        &["healthy", "partition", "skew", "skew-partition"],
    );
    assert_history(&out, ops);
    assert_nothing_lost(&report, "siblings");
    let siblings = report["settings"].as_array().unwrap().iter().find(|s| s["name"] == "siblings").unwrap();
    assert_eq!(siblings["updates_lost"], 0, "siblings mode lost updates by value lineage");
    let _ = std::fs::remove_dir_all(&out);
}

/// Proves a short gray-failure run (0.5 s faults) reports the four fault windows, pause, slow
/// disk, one-way partition and loss, each with its kind, throughput relative to the healthy
/// baseline, p50/p99/max latency, failed and unknown counts, and zero duplicate siblings.
#[test]
fn gray_failure_short_run() {
    let (out, report, _code) =
        lab_run("gray", &["gray-failure", "--seed", "7", "--duration", "1", "--clients", "4", "--keys", "6"]);
    let phases = [
        "healthy",
        "pause",
        "pause-recovery",
        "slow-disk",
        "slow-disk-recovery",
        "one-way-partition",
        "one-way-recovery",
        "loss",
        "loss-recovery",
    ];
    let ops = assert_shape(&report, "gray-failure", 7, &["quorum"], &phases);
    assert_history(&out, ops);
    assert_nothing_lost(&report, "quorum");
    let impact = &report["fault_impact"];
    assert_eq!(impact["baseline_phase"], "healthy");
    assert!(impact["baseline"]["ok_per_s"].as_f64().is_some_and(|r| r > 0.0), "{impact}");
    let windows = impact["windows"].as_array().unwrap();
    let kinds: Vec<&str> = windows.iter().map(|w| w["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["pause", "slow-disk", "one-way-partition", "loss"], "{impact}");
    for w in windows {
        for field in ["ops", "ok", "failed", "unknown", "duplicate_siblings"] {
            assert!(w[field].is_u64(), "{field} in {w}");
        }
        assert!(w["ops"].as_u64().unwrap() > 0, "no operation in {w}");
        for field in [
            "ok_per_s",
            "throughput_relative",
            "read_throughput_relative",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "wait_max_ms",
        ] {
            assert!(w[field].is_f64() || w[field].is_u64(), "{field} in {w}");
        }
        assert!(
            w["write_throughput_relative"].is_number() || w["write_throughput_relative"].is_null(),
            "{w}"
        );
        assert_eq!(w["duplicate_siblings"], 0, "{w}");
    }
    assert_eq!(report["duplicate_siblings"]["items"], 0, "{}", report["duplicate_siblings"]);
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html missing");
    assert!(html.contains("<h2>Fault windows</h2>") && html.contains("one-way-partition"), "report.html");
    let _ = std::fs::remove_dir_all(&out);
}

/// A short split-brain-scheduler run (one pause and one partition of the leader per fencing
/// setting) proves the fencing claim end to end: with fencing no assignment from a replaced
/// leader is acknowledged or survives, without it some are, and failover times are reported.
#[test]
fn split_brain_scheduler_short_run() {
    let (out, report, code) =
        lab_run("split-brain", &["split-brain-scheduler", "--seed", "3", "--param", "rounds=1"]);
    assert_eq!(code, 0, "a fencing guarantee was violated: {report:#}");
    assert_eq!(report["scenario"], "split-brain-scheduler");
    assert_eq!(report["lease_ttl_ms"], 2000.0);
    let modes = report["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2);
    let (on, off) = (&modes[0], &modes[1]);
    assert_eq!((on["fencing"].as_bool(), off["fencing"].as_bool()), (Some(true), Some(false)));
    assert_eq!(on["stale_accepted"], 0, "{on:#}");
    assert_eq!(on["stale_in_final_state"], 0, "{on:#}");
    assert!(on["assignments_ok"].as_u64().unwrap() > 0, "{on:#}");
    assert!(
        off["stale_accepted"].as_u64().unwrap() > 0,
        "without fencing a zombie's assignment should land: {off:#}"
    );
    for m in modes {
        let faults = m["faults"].as_array().unwrap();
        let kinds: Vec<&str> = faults.iter().map(|f| f["kind"].as_str().unwrap()).collect();
        assert!(kinds.contains(&"pause") && kinds.contains(&"partition"), "{kinds:?}");
        assert_eq!(m["failover"]["samples"], 2, "every fault needs a successor: {m:#}");
        // A new leader can only take over once the old lease expired: at least most of a TTL.
        assert!(m["failover"]["p50_ms"].as_f64().unwrap() > 1000.0, "{m:#}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html missing");
    assert!(html.contains("Fencing on") && !html.contains("<script"));
    let _ = std::fs::remove_dir_all(&out);
}

/// Runs `quorumdb lab <args>` to completion; returns exit code, stdout and stderr.
fn lab(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN).arg("lab").args(args).output().expect("cannot run quorumdb");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Proves a short feed-read-your-writes run shows read-your-writes or monotonic-read
/// violations at r=1 without sessions while the laggard is cut off, and none with sessions.
#[test]
fn feed_read_your_writes_short_run() {
    let (out, report, code) = lab_run(
        "frw",
        &["feed-read-your-writes", "--seed", "42", "--duration", "3", "--clients", "4", "--keys", "6"],
    );
    assert_eq!(code, 0, "{report}");
    let groups = report["checker"]["sessions"]["groups"].as_array().unwrap();
    let count = |setting: &str, field: &str| -> u64 {
        groups.iter().filter(|g| g["setting"] == setting).map(|g| g[field].as_u64().unwrap()).sum()
    };
    let plain =
        count("r1-plain", "read_your_writes_violations") + count("r1-plain", "monotonic_reads_violations");
    assert!(plain > 0, "no violation without sessions: the laggard did not lag ({groups:?})");
    for field in ["read_your_writes_violations", "monotonic_reads_violations"] {
        assert_eq!(count("r1-session", field), 0, "{field} with sessions: {groups:?}");
    }
    assert!(count("r1-session", "read_your_writes_checked") > 0, "{groups:?}");
    let _ = std::fs::remove_dir_all(&out);
}

/// `lab list` names every built-in scenario with a description, in text and as JSON.
#[test]
fn lab_list_names_the_builtin_scenarios() {
    let (code, stdout, stderr) = lab(&["list"]);
    assert_eq!(code, 0, "{stderr}");
    let names: Vec<&str> = stdout.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(
        names,
        [
            "az-failure",
            "clock-skew-lww",
            "feed-read-your-writes",
            "gray-failure",
            "split-brain-scheduler",
            "log-under-faults",
            "flaky-warehouse-sink",
            "cart-partition"
        ],
        "{stdout}"
    );
    assert!(stdout.contains("zone outage") && stdout.contains("last-writer-wins"), "{stdout}");
    assert!(stdout.contains("paused, slow"), "{stdout}");

    let (code, stdout, stderr) = lab(&["list", "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).expect("lab list -o json is not JSON");
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 8);
    assert_eq!(list[0]["name"], "az-failure");
    assert!(list.iter().all(|s| s["description"].as_str().is_some_and(|d| !d.is_empty())));
}

/// An unknown scenario name or a bad scenario file is a one-line CLI error with exit 1,
/// naming the problem (and the file and field), never a panic or a started cluster.
#[test]
fn lab_run_rejects_unknown_names_and_bad_files() {
    let (code, _, stderr) = lab(&["run", "az-flailure"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("unknown scenario \"az-flailure\"") && stderr.contains("az-failure"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("qdb-labtest-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios/az-failure.toml"))
            .expect("scenarios/az-failure.toml");
    for (what, bad, expect) in [
        ("field", good.replace("zones = 3", "zones = 3\nzoens = 3"), "unknown field `zoens`"),
        (
            "workload",
            good.replace("\"profile-store\"", "\"profile-shop\""),
            "unknown workload \"profile-shop\"",
        ),
        ("checker", good.replace("\"sessions\",", "\"sesions\","), "unknown checker \"sesions\""),
        ("duration", good.replace("\"10s\"", "\"10 seconds\""), "bad duration \"10 seconds\""),
    ] {
        let path = dir.join(format!("{what}.toml"));
        std::fs::write(&path, bad).unwrap();
        let (code, _, stderr) = lab(&["run", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{what}: {stderr}");
        assert!(stderr.contains(path.to_str().unwrap()) && stderr.contains(expect), "{what}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A scenario given as a path to a .toml file runs like a built-in one: a one-phase kill of one
/// node on three nodes, reported under the file's scenario name.
#[test]
fn lab_run_accepts_a_scenario_file() {
    let dir = std::env::temp_dir().join(format!("qdb-labtest-scenario-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("one-node-down.toml");
    std::fs::write(
        &path,
        r#"
name = "one-node-down"
description = "one node killed for half a phase"
phase_duration = "2s"
checkers = ["lost-writes", "staleness", "convergence"]
[cluster]
nodes = 3
zones = 3
replicas = 3
[[tables]]
name = "t"
[[settings]]
name = "r2w2"
table = "t"
r = 2
w = 2
[workload]
name = "profile-store"
clients = 2
keys = 3
update_fraction = 0.5
think_max = "5ms"
[[phases]]
name = "down"
steps = [
  { action = "kill", target = "node:n3", clients = "leave" },
  { at = "1s", action = "restart", target = "node:n3" },
]
"#,
    )
    .unwrap();
    let (out, report, code) = lab_run("file", &[path.to_str().unwrap(), "--seed", "3", "--duration", "1"]);
    assert_eq!(code, 0, "{report}");
    let ops = assert_shape(&report, "one-node-down", 3, &["r2w2"], &["down"]);
    assert_history(&out, ops);
    assert_nothing_lost(&report, "r2w2");
    assert_eq!(report["fault_windows"][0]["label"], "r2w2: n3 killed");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&dir);
}
