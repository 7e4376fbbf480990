//! Generated histories: a correct register store (see `support::linearizable_history`) must pass
//! every checker for every seed, and one targeted corruption of it must be caught. Seeded loops,
//! so a failure names the seed that replays it.

mod support;

use quorumdb_core::causality::VersionVector;
use quorumdb_lab::checker::linearizability::{CounterexampleKind, Verdict};
use quorumdb_lab::checker::{check_linearizability, CheckConfig};
use quorumdb_lab::{check_all, FinalState, History, Op, OpKind, OpResult};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::*;

const SEEDS: u64 = 300;

fn key_verdict(history: &History, key: &str) -> (Verdict, Option<CounterexampleKind>) {
    let report = check_linearizability(history, &CheckConfig::default()).unwrap();
    let k = report.keys.iter().find(|k| k.key == key).unwrap();
    (k.verdict, k.counterexample.as_ref().map(|c| c.kind))
}

fn is_ok_read(o: &Op) -> bool {
    o.kind == OpKind::Read && o.result == OpResult::Ok
}

/// Picks a random element satisfying `pred`, or `None`.
fn pick(rng: &mut StdRng, ops: &[Op], pred: impl Fn(usize, &Op) -> bool) -> Option<usize> {
    let candidates: Vec<usize> = (0..ops.len()).filter(|&i| pred(i, &ops[i])).collect();
    (!candidates.is_empty()).then(|| candidates[rng.random_range(0..candidates.len())])
}

/// Every generated history of a correct register passes all four checkers, across shapes.
#[test]
fn correct_register_histories_pass_every_checker() {
    let shapes = [
        GenParams::small(),
        GenParams { ops: 400, keys: 3, processes: 8, info_pct: 10, fail_pct: 2, delete_pct: 10 },
        GenParams { ops: 60, keys: 1, processes: 12, info_pct: 25, fail_pct: 5, delete_pct: 10 },
    ];
    for shape in shapes {
        for seed in 0..SEEDS {
            let (history, final_state) = linearizable_history(seed, shape);
            let report =
                check_all(&history, &final_state).unwrap_or_else(|e| panic!("seed {seed} {shape:?}: {e}"));
            let context = format!("seed {seed} {shape:?}");
            assert_eq!(report.linearizability.linearizable, report.keys, "{context}: {report:#?}");
            assert_eq!(report.lost_writes.lost, 0, "{context}");
            assert_eq!(report.lost_writes.resurrected, 0, "{context}");
            assert_eq!(report.lost_writes.unexpected_final_values, 0, "{context}");
            assert_eq!(report.staleness.stale, 0, "{context}");
            assert_eq!(report.sessions.read_your_writes.violations, 0, "{context}");
            assert_eq!(report.sessions.monotonic_reads.violations, 0, "{context}");
        }
    }
}

/// The generated histories exercise what they should: overlap, info and fail ops, deletes,
/// reads after acknowledged writes (so the negative tests below are meaningful).
#[test]
fn generated_histories_have_the_intended_shape() {
    let (history, final_state) = linearizable_history(7, GenParams::small());
    history.validate().unwrap();
    let ops = &history.ops;
    let count = |f: &dyn Fn(&Op) -> bool| ops.iter().filter(|o| f(o)).count();
    assert!(count(&|o| o.result == OpResult::Info) > 0);
    assert!(count(&|o| o.result == OpResult::Fail) > 0);
    assert!(count(&|o| o.kind == OpKind::Delete) > 0);
    assert!(count(&|o| is_ok_read(o) && !o.values.is_empty()) > 10);
    let overlapping = ops
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            ops[i + 1..].iter().any(|b| a.invoke_ns < b.complete_ns && b.invoke_ns < a.complete_ns)
        })
        .count();
    assert!(overlapping > ops.len() / 2, "only {overlapping} overlapping ops");
    // Tokens name several actors, as on a real cluster.
    let longest = ops
        .iter()
        .filter_map(|o| o.context_out.as_deref())
        .map(|t| VersionVector::from_token(t).unwrap().len())
        .max();
    assert_eq!(longest, Some(3));
    assert_eq!(final_state.items.len(), 2);
    // And they survive the JSONL round trip unchanged.
    let mut bytes = Vec::new();
    history.write_jsonl(&mut bytes).unwrap();
    assert_eq!(History::read_jsonl(bytes.as_slice()).unwrap(), history);
}

/// Corrupting one read of a correct history so that no write at that time could give its value
/// makes its key non-linearizable: a value from the future, a value overwritten before the read
/// started, or two siblings.
#[test]
fn corrupted_read_is_rejected() {
    let mut applied = [0u32; 3];
    for seed in 0..SEEDS {
        let (history, _) = linearizable_history(seed, GenParams::small());
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        let ops = &history.ops;
        // A write of the read's key invoked after the read completed.
        let future = |r: &Op| {
            ops.iter().find(|w| w.kind == OpKind::Write && w.key == r.key && w.invoke_ns > r.complete_ns)
        };
        // An acknowledged write replaced by an acknowledged write or delete, both acknowledged
        // before the read was invoked.
        let overwritten = |r: &Op| {
            ops.iter().find(|w1| {
                w1.kind == OpKind::Write
                    && w1.result == OpResult::Ok
                    && w1.key == r.key
                    && ops.iter().any(|w2| {
                        w2.kind != OpKind::Read
                            && w2.result == OpResult::Ok
                            && w2.key == r.key
                            && w1.complete_ns < w2.invoke_ns
                            && w2.complete_ns < r.invoke_ns
                    })
            })
        };
        for (mutation, count) in applied.iter_mut().enumerate() {
            let corruption: Option<(usize, Vec<String>)> = match mutation {
                // The value of a write from the future.
                0 => pick(&mut rng, ops, |_, r| is_ok_read(r) && future(r).is_some())
                    .map(|r| (r, future(&ops[r]).and_then(|w| w.value.clone()).into_iter().collect())),
                // A value overwritten before the read started.
                1 => pick(&mut rng, ops, |_, r| is_ok_read(r) && overwritten(r).is_some())
                    .map(|r| (r, overwritten(&ops[r]).and_then(|w| w.value.clone()).into_iter().collect())),
                // Two siblings.
                _ => pick(&mut rng, ops, |_, r| is_ok_read(r)).map(|r| (r, vec!["x".into(), "y".into()])),
            };
            let Some((r, values)) = corruption else { continue };
            assert!(!values.is_empty());
            let mut bad = history.clone();
            bad.ops[r].values = values;
            *count += 1;
            let (verdict, kind) = key_verdict(&bad, &ops[r].key);
            assert_eq!(verdict, Verdict::NotLinearizable, "seed {seed} mutation {mutation} read {r}");
            let expected = if mutation == 2 {
                CounterexampleKind::Siblings
            } else {
                CounterexampleKind::NoLinearization
            };
            assert_eq!(kind, Some(expected), "seed {seed} mutation {mutation}");
        }
    }
    // Each corruption found a target in most seeds, so the loop above proved something.
    assert!(applied.iter().all(|&n| n as u64 > SEEDS * 8 / 10), "{applied:?}");
}

/// Removing an acknowledged write's value from the final state is reported as exactly one lost
/// write (the final writer of a key has no superseder in a correct history).
#[test]
fn dropped_final_value_is_a_lost_write() {
    let mut applied = 0;
    for seed in 0..SEEDS {
        let (history, final_state) = linearizable_history(seed, GenParams::small());
        for (i, item) in final_state.items.iter().enumerate() {
            let [value] = item.values.as_slice() else { continue };
            let writer = history.ops.iter().find(|o| o.value.as_ref() == Some(value)).unwrap();
            if writer.result != OpResult::Ok {
                continue;
            }
            let mut bad: FinalState = final_state.clone();
            bad.items[i].values.clear();
            let report = check_all(&history, &bad).unwrap();
            assert_eq!(report.lost_writes.lost, 1, "seed {seed} key {}", item.key);
            let lost = &report.lost_writes.lost_examples[0];
            assert_eq!(lost.write.op.value.as_ref(), Some(value));
            assert_eq!(lost.final_context_descends, Some(true));
            applied += 1;
        }
    }
    assert!(applied > SEEDS, "only {applied} final values to drop");
}

/// Making one read miss the write acknowledged before it (empty context) is counted as exactly
/// one stale read; making a read miss its own process's write or its previous read is one
/// session violation.
#[test]
fn stale_and_session_corruptions_are_detected() {
    let mut applied = [0u32; 3];
    let empty = VersionVector::new().to_token();
    for seed in 0..SEEDS {
        let (history, final_state) = linearizable_history(seed, GenParams::small());
        let ops = &history.ops;
        let mut rng = StdRng::seed_from_u64(seed ^ 0xbad);
        let acked_before = |r: &Op| {
            ops.iter().any(|w| {
                w.kind != OpKind::Read
                    && w.result == OpResult::Ok
                    && w.key == r.key
                    && w.complete_ns < r.invoke_ns
            })
        };
        let own_earlier = |r: &Op, kind: &dyn Fn(&Op) -> bool| {
            ops.iter().any(|o| {
                kind(o)
                    && o.result == OpResult::Ok
                    && o.process == r.process
                    && o.key == r.key
                    && o.invoke_ns < r.invoke_ns
                    && o.context_out.as_deref() != Some(&empty)
            })
        };
        let targets = [
            pick(&mut rng, ops, |_, r| is_ok_read(r) && acked_before(r)),
            pick(&mut rng, ops, |_, r| is_ok_read(r) && own_earlier(r, &|o| o.kind != OpKind::Read)),
            pick(&mut rng, ops, |_, r| is_ok_read(r) && own_earlier(r, &|o| o.kind == OpKind::Read)),
        ];
        for (mutation, target) in targets.into_iter().enumerate() {
            let Some(r) = target else { continue };
            applied[mutation] += 1;
            let mut bad = history.clone();
            bad.ops[r].values.clear();
            bad.ops[r].context_out = Some(empty.clone());
            let report = check_all(&bad, &final_state).unwrap();
            let (found, example) = match mutation {
                0 => (report.staleness.stale, report.staleness.stale_examples.first().map(|e| e.read.index)),
                1 => (
                    report.sessions.read_your_writes.violations,
                    report.sessions.read_your_writes.examples.first().map(|e| e.read.index),
                ),
                _ => (
                    report.sessions.monotonic_reads.violations,
                    report.sessions.monotonic_reads.examples.first().map(|e| e.read.index),
                ),
            };
            assert_eq!((found, example), (1, Some(r)), "seed {seed} mutation {mutation}");
        }
    }
    assert!(applied.iter().all(|&n| n as u64 > SEEDS / 2), "{applied:?}");
}
