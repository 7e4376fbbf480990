//! Property tests: the linearizability search agrees with brute force on small histories, and no
//! input — however malformed — makes a reader or checker panic.

mod support;

use proptest::prelude::*;
use quorumdb_lab::checker::linearizability::Verdict;
use quorumdb_lab::checker::{check_linearizability, CheckConfig};
use quorumdb_lab::{check_all, FinalState, History, Op, OpKind, OpResult};
use support::*;

/// Brute force: is there an order of the ok ops, plus any subset of the info writes and deletes,
/// that respects real time (a before b when a completed strictly before b was invoked; info ops
/// never complete) and the register semantics? Tries every order; only for tiny histories.
fn brute_force_linearizable(ops: &[Op]) -> bool {
    let ops: Vec<&Op> = ops
        .iter()
        .filter(|o| o.result != OpResult::Fail && !(o.result == OpResult::Info && o.kind == OpKind::Read))
        .collect();
    if ops.iter().any(|o| o.kind == OpKind::Read && o.values.len() > 1) {
        return false;
    }
    fn precedes(a: &Op, b: &Op) -> bool {
        a.result == OpResult::Ok && a.complete_ns < b.invoke_ns
    }
    fn search(ops: &[&Op], done: &mut Vec<bool>, state: Option<&str>) -> bool {
        if ops.iter().zip(done.iter()).all(|(o, &d)| d || o.result == OpResult::Info) {
            return true;
        }
        for i in 0..ops.len() {
            if done[i] {
                continue;
            }
            // Every op that must come before ops[i] is already placed.
            if (0..ops.len()).any(|j| !done[j] && j != i && precedes(ops[j], ops[i])) {
                continue;
            }
            let next = match ops[i].kind {
                OpKind::Write => Some(ops[i].value.as_deref()),
                OpKind::Delete => Some(None),
                OpKind::Read => (ops[i].values.first().map(String::as_str) == state).then_some(state),
            };
            if let Some(next) = next {
                done[i] = true;
                if search(ops, done, next) {
                    return true;
                }
                done[i] = false;
            }
        }
        false
    }
    search(&ops, &mut vec![false; ops.len()], None)
}

/// A small single-key history: one process per op (so validation always passes), times on a
/// coarse grid so that ties and overlaps are common.
///
/// `info_in_10` of every ten ops have an unknown outcome and one definitely failed; kinds are a
/// third each reads, writes and deletes.
fn small_history(info_in_10: u8) -> impl Strategy<Value = Vec<Op>> {
    let op = (0u8..3, 0u8..10, 0u64..12, 0u64..6, 0u8..4);
    prop::collection::vec(op, 1..9).prop_map(move |specs| {
        let writes = specs.len();
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (kind, result, start, len, read))| {
                let t = (start, start + len);
                let token = empty_token();
                let o = match kind {
                    0 => {
                        // Reads return nothing or the value of some write of this history.
                        let value = format!("v{}", usize::from(read) % writes);
                        let values: &[&str] = if read == 0 { &[] } else { &[value.as_str()] };
                        read_op(i as u32, t, values, &token)
                    }
                    1 => write(i as u32, "k", &format!("v{i}"), t, None, &token),
                    _ => delete(i as u32, "k", t, None, &token),
                };
                match result {
                    r if r < info_in_10 => info(o),
                    r if r == info_in_10 => fail(o),
                    _ => o,
                }
            })
            .collect()
    })
}

/// A tiny history of a correct register with many unknown outcomes, and with probability ½ one
/// read changed to return nothing or another write's value: near-misses, where the search's
/// pruning of `info` ops matters most.
fn near_linearizable_history() -> impl Strategy<Value = Vec<Op>> {
    (any::<u64>(), any::<bool>(), any::<prop::sample::Index>(), any::<prop::sample::Index>()).prop_map(
        |(seed, mutate, which_read, which_value)| {
            let shape =
                GenParams { ops: 10, keys: 1, processes: 3, info_pct: 50, fail_pct: 5, delete_pct: 35 };
            let (mut history, _) = linearizable_history(seed, shape);
            let reads: Vec<usize> =
                (0..history.ops.len()).filter(|&i| history.ops[i].kind == OpKind::Read).collect();
            let mut values: Vec<Vec<String>> =
                history.ops.iter().filter_map(|o| o.value.clone()).map(|v| vec![v]).collect();
            values.push(vec![]);
            if mutate && !reads.is_empty() {
                let r = reads[which_read.index(reads.len())];
                history.ops[r].values = values[which_value.index(values.len())].clone();
            }
            history.ops
        },
    )
}

fn read_op(process: u32, t: (u64, u64), values: &[&str], token: &str) -> Op {
    read(process, "k", t, values, token)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    /// The WGL search (with its pruning of unread info writes) decides exactly what brute force
    /// decides, on every small history.
    #[test]
    fn search_agrees_with_brute_force(
        ops in prop_oneof![small_history(2), small_history(5), near_linearizable_history()]
    ) {
        let expected = brute_force_linearizable(&ops);
        let report = check_linearizability(&History::new(ops.clone()), &CheckConfig::default()).unwrap();
        let verdict = report.keys[0].verdict;
        prop_assert_eq!(verdict == Verdict::Linearizable, expected, "{:#?}", ops);
        prop_assert!(verdict != Verdict::Unknown);
        if verdict == Verdict::NotLinearizable {
            prop_assert!(report.keys[0].counterexample.is_some());
        }
    }
}

/// Any op at all: random fields, garbage or valid tokens, arbitrary times.
fn any_op() -> impl Strategy<Value = Op> {
    let token = prop_oneof![
        Just(None),
        Just(Some(empty_token())),
        Just(Some(String::new())),
        Just(Some("AQ==".to_owned())),
        "[A-Za-z0-9_-]{0,24}".prop_map(Some),
    ];
    let values = prop::collection::vec(prop_oneof![Just("a".to_owned()), Just("b".to_owned())], 0..3);
    (
        (0u32..4, 0u8..3, 0u8..3, prop_oneof![Just("k"), Just("j")]),
        (prop::option::of(prop_oneof![Just("a".to_owned()), Just("b".to_owned()), "[a-c]{1,2}"]), values),
        (any::<u64>(), 0u64..50, prop_oneof![Just(0u64), any::<u64>()]),
        (token.clone(), token),
    )
        .prop_map(|((process, kind, result, key), (value, values), (invoke, small, big), (ci, co))| {
            let mut o = op(process, OpKind::Read, key, 0, 0);
            o.kind = [OpKind::Read, OpKind::Write, OpKind::Delete][usize::from(kind)];
            o.result = [OpResult::Ok, OpResult::Info, OpResult::Fail][usize::from(result)];
            o.value = value;
            o.values = values;
            o.invoke_ns = invoke % 200;
            o.complete_ns = if big == 0 { o.invoke_ns + small } else { big };
            o.context_in = ci;
            o.context_out = co;
            o
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Arbitrary histories and final states make `check_all` return a report or a typed error,
    /// never panic.
    #[test]
    fn checkers_never_panic(ops in prop::collection::vec(any_op(), 0..12), finals in prop::collection::vec((prop_oneof![Just("k"), Just("j")], prop::collection::vec("[a-c]", 0..3)), 0..3)) {
        let mut final_state = FinalState::default();
        for (key, values) in finals {
            final_state.push(TABLE, key, values, None);
        }
        let _ = check_all(&History::new(ops), &final_state);
    }

    /// Arbitrary bytes make the JSONL reader return ops or a typed error, never panic.
    #[test]
    fn reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = History::read_jsonl(bytes.as_slice());
    }

    /// Mangled JSONL of a valid history (a truncated or spliced line) is a typed error or a
    /// history, never a panic.
    #[test]
    fn mangled_jsonl_never_panics(cut in 0usize..600, insert in any::<u8>()) {
        let (history, _) = linearizable_history(1, GenParams { ops: 4, keys: 1, processes: 2, info_pct: 20, fail_pct: 10, delete_pct: 10 });
        let mut bytes = Vec::new();
        history.write_jsonl(&mut bytes).unwrap();
        let cut = cut.min(bytes.len());
        bytes.insert(cut, insert);
        if let Ok(h) = History::read_jsonl(bytes.as_slice()) {
            let _ = h.validate();
        }
    }
}
