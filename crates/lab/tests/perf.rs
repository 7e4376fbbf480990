//! Performance: a 10,000-op history of the lab's typical shape (10 keys, 8 processes, with
//! timeouts and failures) is checked in well under the test's time even in a debug build on two
//! cores. Prints the measured times; the bound is generous so that it cannot flake.

mod support;

use quorumdb_lab::check_all;
use quorumdb_lab::checker::{check_linearizability, CheckConfig};
use quorumdb_lab::{OpKind, OpResult};
use std::time::{Duration, Instant};
use support::*;

/// Far above the measured figure (see the printed line), far below "the checker hangs".
const CHECK_ALL_DURATION_MAX: Duration = Duration::from_secs(20);

/// A linearizable 10,000-op history is fully checked in well under 20 s.
#[test]
fn ten_thousand_ops_check_quickly() {
    let shape = GenParams { ops: 10_000, keys: 10, processes: 8, info_pct: 5, fail_pct: 2, delete_pct: 10 };
    let (history, final_state) = linearizable_history(42, shape);

    let started = Instant::now();
    let lin = check_linearizability(&history, &CheckConfig::default()).unwrap();
    let lin_elapsed = started.elapsed();

    let started = Instant::now();
    let report = check_all(&history, &final_state).unwrap();
    let all_elapsed = started.elapsed();

    let steps: u64 = lin.keys.iter().map(|k| k.steps).sum();
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "perf ({profile}): {} ops, {} keys: linearizability {:.1} ms ({steps} steps), check_all {:.1} ms",
        report.ops,
        report.keys,
        lin_elapsed.as_secs_f64() * 1e3,
        all_elapsed.as_secs_f64() * 1e3,
    );
    assert_eq!(report.linearizability.linearizable, 10);
    assert_eq!(report.lost_writes.lost, 0);
    assert_eq!(report.staleness.stale, 0);
    assert!(all_elapsed < CHECK_ALL_DURATION_MAX, "check_all took {all_elapsed:?}");
}

/// The expensive case: proving a key is *not* linearizable means exhausting every ordering the
/// search can reach before the bad read. A 10,000-op history with many unknown outcomes (30%
/// `info`) and one late read per key corrupted to return an overwritten value is rejected on every
/// key, without running out of budget, in well under 20 s.
#[test]
fn ten_thousand_ops_with_violations_are_rejected_quickly() {
    let shape = GenParams { ops: 10_000, keys: 10, processes: 8, info_pct: 30, fail_pct: 2, delete_pct: 10 };
    let (mut history, _) = linearizable_history(42, shape);
    for key in 0..shape.keys {
        let key = format!("k{key}");
        let ops = &history.ops;
        let first = ops
            .iter()
            .position(|o| o.key == key && o.kind == OpKind::Write && o.result == OpResult::Ok)
            .unwrap();
        // A late read that started after a write or delete invoked after `first` completed had
        // itself completed: `first`'s value is impossible for it.
        let late = (0..ops.len())
            .rev()
            .filter(|&r| ops[r].key == key && ops[r].kind == OpKind::Read && ops[r].result == OpResult::Ok)
            .find(|&r| {
                ops.iter().any(|w| {
                    w.key == key
                        && w.kind != OpKind::Read
                        && w.result == OpResult::Ok
                        && ops[first].complete_ns < w.invoke_ns
                        && w.complete_ns < ops[r].invoke_ns
                })
            })
            .unwrap();
        history.ops[late].values = vec![history.ops[first].value.clone().unwrap()];
    }

    let started = Instant::now();
    let report = check_linearizability(&history, &CheckConfig::default()).unwrap();
    let elapsed = started.elapsed();
    let steps: u64 = report.keys.iter().map(|k| k.steps).sum();
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!(
        "perf ({profile}): 10000 ops, 30% info, 10 corrupted keys: linearizability {:.1} ms ({steps} steps)",
        elapsed.as_secs_f64() * 1e3,
    );
    assert_eq!(
        report.not_linearizable,
        10,
        "{:?}",
        report.keys.iter().map(|k| k.verdict).collect::<Vec<_>>()
    );
    assert!(elapsed < CHECK_ALL_DURATION_MAX, "took {elapsed:?}");
}
