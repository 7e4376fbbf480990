//! Hand-written histories for every checker: each bad history must be caught, each good one
//! accepted. Tokens come from the replica simulator in `support`, i.e. from the core's real
//! `ItemState::update`/`merge`, except in linearizability tests, which ignore tokens.

mod support;

use quorumdb_lab::checker::linearizability::{CounterexampleKind, UnknownReason, Verdict};
use quorumdb_lab::checker::{
    check_linearizability, check_lost_writes, check_sessions, check_staleness, CheckConfig, CheckError,
    LinearizabilityLimits,
};
use quorumdb_lab::history::TokenField;
use quorumdb_lab::{check_all, History, HistoryError, Op, Report};
use support::*;

fn config() -> CheckConfig {
    CheckConfig::default()
}

// ---------------------------------------------------------------------------------------------
// Lost writes

/// An acknowledged write absent from the final state, superseded by nobody, is reported lost.
#[test]
fn lost_write_is_detected() {
    let mut c = Cluster::new(3);
    let w = c.write("k", 0, None, Some("a"), &[]); // acknowledged at w=1 by replica 0 alone
    c.wipe(0, "k"); // ...which then loses it
    c.sync("k");
    let (values, ctx) = c.read("k", &[0, 1, 2]);
    assert!(values.is_empty());
    let h = History::new(vec![write(1, "k", "a", (0, 5), None, &w)]);
    let r = check_lost_writes(&h, &final_state(&[("k", &[], Some(&ctx))]), &config()).unwrap();
    assert_eq!((r.acknowledged, r.survived, r.superseded, r.lost), (1, 0, 0, 1));
    assert_eq!(r.lost_examples.len(), 1);
    assert_eq!(r.lost_examples[0].write.index, 0);
    // The final context never saw the write: it vanished without trace.
    assert_eq!(r.lost_examples[0].final_context_descends, Some(false));
}

/// A write replaced by a later write that read it (its token covers it) is superseded, not lost.
#[test]
fn superseded_write_is_not_lost() {
    let mut c = Cluster::new(3);
    let wa = c.write("k", 0, None, Some("a"), &[1, 2]);
    let (seen, ra) = c.read("k", &[0, 1]);
    assert_eq!(seen, ["a"]);
    let wb = c.write("k", 1, Some(&ra), Some("b"), &[0, 2]);
    let (values, ctx) = c.read("k", &[0, 1, 2]);
    assert_eq!(values, ["b"]);
    let h = History::new(vec![
        write(1, "k", "a", (0, 5), None, &wa),
        read(2, "k", (6, 8), &["a"], &ra),
        write(2, "k", "b", (9, 12), Some(&ra), &wb),
    ]);
    let r = check_lost_writes(&h, &final_state(&[("k", &["b"], Some(&ctx))]), &config()).unwrap();
    assert_eq!((r.acknowledged, r.survived, r.superseded, r.lost), (2, 1, 1, 0));
}

/// A write with an unknown outcome (`info`) that never took effect is not an acknowledged loss.
#[test]
fn info_write_absent_is_not_lost() {
    let h = History::new(vec![info(write(1, "k", "a", (0, 5), None, &empty_token()))]);
    let r = check_lost_writes(&h, &final_state(&[("k", &[], Some(&empty_token()))]), &config()).unwrap();
    assert_eq!((r.acknowledged, r.lost), (0, 0));
}

/// An `info` delete whose token covered the write explains the write's absence: it may have run.
#[test]
fn write_superseded_by_info_delete_is_not_lost() {
    let mut c = Cluster::new(3);
    let wa = c.write("k", 0, None, Some("a"), &[1, 2]);
    let (_, ra) = c.read("k", &[0, 1]);
    c.write("k", 2, Some(&ra), None, &[0, 1]); // applied, but the client timed out
    let (values, ctx) = c.read("k", &[0, 1, 2]);
    assert!(values.is_empty());
    let d = info(delete(2, "k", (9, 12), Some(&ra), "unused"));
    let h = History::new(vec![write(1, "k", "a", (0, 5), None, &wa), read(2, "k", (6, 8), &["a"], &ra), d]);
    let r = check_lost_writes(&h, &final_state(&[("k", &[], Some(&ctx))]), &config()).unwrap();
    assert_eq!((r.acknowledged, r.superseded, r.lost), (1, 1, 0));
}

/// Two concurrent blind writes both survive as siblings: nothing lost.
#[test]
fn concurrent_writes_survive_as_siblings() {
    let mut c = Cluster::new(3);
    let wa = c.write("k", 0, None, Some("a"), &[]);
    let wb = c.write("k", 1, None, Some("b"), &[]);
    c.sync("k");
    let (values, ctx) = c.read("k", &[0, 1, 2]);
    assert_eq!(values.len(), 2);
    let h = History::new(vec![write(1, "k", "a", (0, 5), None, &wa), write(2, "k", "b", (1, 6), None, &wb)]);
    let r = check_lost_writes(&h, &final_state(&[("k", &["a", "b"], Some(&ctx))]), &config()).unwrap();
    assert_eq!((r.acknowledged, r.survived, r.lost), (2, 2, 0));
}

/// A concurrent sibling dropped by a state that had seen it (a merge bug) is lost, and the
/// report says the final context had seen it. The concurrent write carried a token, but one
/// read before the lost write existed, so it does not count as superseding it.
#[test]
fn dropped_sibling_is_detected() {
    let mut c = Cluster::new(3);
    let w0 = c.write("k", 2, None, Some("0"), &[0, 1]);
    let (_, r0) = c.read("k", &[1]);
    let wa = c.write("k", 0, None, Some("a"), &[]);
    let wb = c.write("k", 1, Some(&r0), Some("b"), &[]);
    c.sync("k");
    let (mut values, ctx) = c.read("k", &[0, 1, 2]);
    values.sort();
    assert_eq!(values, ["a", "b"]); // "0" was superseded by "b"
    let h = History::new(vec![
        write(1, "k", "a", (0, 5), None, &wa),
        write(2, "k", "b", (1, 6), Some(&r0), &wb),
        write(3, "k", "0", (0, 1), None, &w0),
    ]);
    // The buggy store converged to "b" alone under a context that covers both writes.
    let r = check_lost_writes(&h, &final_state(&[("k", &["b"], Some(&ctx))]), &config()).unwrap();
    assert_eq!((r.acknowledged, r.survived, r.superseded, r.lost), (3, 1, 1, 1));
    assert_eq!(r.lost_examples[0].write.op.value.as_deref(), Some("a"));
    assert_eq!(r.lost_examples[0].final_context_descends, Some(true));
}

/// A value deleted by an acknowledged delete that read it must not come back after convergence.
#[test]
fn resurrected_value_is_detected() {
    let mut c = Cluster::new(3);
    let wa = c.write("k", 0, None, Some("a"), &[1, 2]);
    let (_, ra) = c.read("k", &[0]);
    let d = c.write("k", 0, Some(&ra), None, &[]); // delete acknowledged at w=1 by replica 0
    c.wipe(0, "k"); // which loses the tombstone
    c.sync("k");
    let (values, ctx) = c.read("k", &[0, 1, 2]);
    assert_eq!(values, ["a"]);
    let h = History::new(vec![
        write(1, "k", "a", (0, 5), None, &wa),
        read(2, "k", (6, 8), &["a"], &ra),
        delete(2, "k", (9, 12), Some(&ra), &d),
    ]);
    let r = check_lost_writes(&h, &final_state(&[("k", &["a"], Some(&ctx))]), &config()).unwrap();
    assert_eq!((r.lost, r.resurrected), (0, 1));
    assert_eq!(r.resurrected_examples[0].write.index, 0);
    assert_eq!(r.resurrected_examples[0].superseded_by.index, 2);
}

/// Final values written by nobody, or by a write recorded as failed, are reported.
#[test]
fn unexpected_final_values_are_reported() {
    let mut c = Cluster::new(3);
    let wf = c.write("k", 0, None, Some("f"), &[1, 2]); // "failed", yet applied
    let (_, ctx) = c.read("k", &[0, 1, 2]);
    let h = History::new(vec![fail(write(1, "k", "f", (0, 5), None, &wf))]);
    let f = final_state(&[("k", &["f", "ghost"], Some(&ctx))]);
    let r = check_lost_writes(&h, &f, &config()).unwrap();
    assert_eq!(r.unexpected_final_values, 2);
    assert_eq!(r.unexpected_examples[0].value, "f");
    assert_eq!(r.unexpected_examples[0].failed_write.as_ref().map(|o| o.index), Some(0));
    assert_eq!(r.unexpected_examples[1].value, "ghost");
    assert!(r.unexpected_examples[1].failed_write.is_none());
}

/// A written key without a final read, or read twice, is a typed error: the check cannot judge it.
#[test]
fn final_state_must_cover_written_keys_once() {
    let mut c = Cluster::new(1);
    let w = c.write("k", 0, None, Some("a"), &[]);
    let h = History::new(vec![write(1, "k", "a", (0, 5), None, &w)]);
    let err = check_lost_writes(&h, &final_state(&[]), &config()).unwrap_err();
    assert!(matches!(err, CheckError::MissingFinalItem { .. }), "{err}");
    let twice = final_state(&[("k", &["a"], None), ("k", &["a"], None)]);
    let err = check_lost_writes(&h, &twice, &config()).unwrap_err();
    assert!(matches!(err, CheckError::DuplicateFinalItem { .. }), "{err}");
    let bad = final_state(&[("k", &["a"], Some("%%"))]);
    let err = check_lost_writes(&h, &bad, &config()).unwrap_err();
    assert!(matches!(err, CheckError::MalformedFinalContext { .. }), "{err}");
}

/// A malformed token in a history is a typed error naming the op and field, not a panic.
#[test]
fn malformed_token_is_a_typed_error() {
    let h = History::new(vec![write(1, "k", "a", (0, 5), Some("AQA"), "AQ==")]);
    let err = check_all(&h, &final_state(&[("k", &["a"], None)])).unwrap_err();
    assert!(
        matches!(
            err,
            CheckError::History(HistoryError::MalformedToken { index: 0, field: TokenField::ContextOut, .. })
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Linearizability (tokens play no part; every ok op carries the empty context)

fn lw(p: u32, value: &str, t: (u64, u64)) -> Op {
    write(p, "k", value, t, None, &empty_token())
}

fn lr(p: u32, values: &[&str], t: (u64, u64)) -> Op {
    read(p, "k", t, values, &empty_token())
}

fn ld(p: u32, t: (u64, u64)) -> Op {
    delete(p, "k", t, None, &empty_token())
}

fn verdict(ops: Vec<Op>) -> quorumdb_lab::checker::linearizability::KeyLinearizability {
    let report = check_linearizability(&History::new(ops), &config()).unwrap();
    assert_eq!(report.keys.len(), 1);
    report.keys.into_iter().next().unwrap()
}

/// The classic violation: a write completes, and a later read does not see it.
#[test]
fn read_missing_completed_write_is_not_linearizable() {
    let k = verdict(vec![lw(1, "1", (0, 10)), lr(2, &[], (20, 30))]);
    assert_eq!(k.verdict, Verdict::NotLinearizable);
    let ce = k.counterexample.unwrap();
    assert_eq!(ce.kind, CounterexampleKind::NoLinearization);
    assert_eq!(ce.op.index, 1);
    assert_eq!(ce.register_value.as_deref(), Some("1"));
    assert_eq!(ce.linearized_len, 1);
    assert_eq!(ce.linearized_tail, [0]);
}

/// A read returning a value overwritten before it started is rejected, naming the read.
#[test]
fn read_of_overwritten_value_is_not_linearizable() {
    let k = verdict(vec![lw(1, "0", (0, 10)), lw(1, "1", (20, 30)), lr(2, &["0"], (40, 50))]);
    assert_eq!(k.verdict, Verdict::NotLinearizable);
    let ce = k.counterexample.unwrap();
    assert_eq!((ce.op.index, ce.linearized_len), (2, 2));
    assert_eq!(ce.register_value.as_deref(), Some("1"));
}

/// Overlapping ops that admit an order are accepted, including a write invoked first that must
/// take effect last.
#[test]
fn overlapping_ops_with_a_valid_order_are_linearizable() {
    let k = verdict(vec![
        lw(1, "a", (0, 100)),
        lr(2, &[], (10, 20)),
        lr(3, &["a"], (30, 40)),
        lw(4, "b", (45, 200)),
        lr(2, &["a"], (50, 60)),
        lr(3, &["b"], (150, 160)),
        lr(2, &["b"], (170, 180)),
    ]);
    assert_eq!(k.verdict, Verdict::Linearizable, "{k:?}");
    assert!(k.counterexample.is_none());

    let k = verdict(vec![lw(1, "a", (0, 50)), lw(2, "b", (10, 20)), lr(3, &["a"], (30, 40))]);
    assert_eq!(k.verdict, Verdict::Linearizable, "{k:?}");
}

/// Ops that touch at one instant count as concurrent, so either order is allowed.
#[test]
fn touching_intervals_are_concurrent() {
    let k = verdict(vec![lw(1, "a", (0, 10)), lr(2, &[], (10, 20))]);
    assert_eq!(k.verdict, Verdict::Linearizable, "{k:?}");
}

/// Two reads during one write must not go back in time (new then old).
#[test]
fn new_then_old_read_is_not_linearizable() {
    let k = verdict(vec![lw(1, "a", (0, 100)), lr(2, &["a"], (10, 20)), lr(3, &[], (30, 40))]);
    assert_eq!(k.verdict, Verdict::NotLinearizable);
    assert_eq!(k.counterexample.unwrap().op.index, 2);
}

/// An `info` write may take effect long after the client gave up, or never.
#[test]
fn info_write_may_take_effect_late_or_never() {
    let late = verdict(vec![info(lw(1, "a", (0, 10))), lr(2, &[], (50, 60)), lr(2, &["a"], (100, 110))]);
    assert_eq!(late.verdict, Verdict::Linearizable, "{late:?}");

    let never = verdict(vec![info(lw(1, "a", (0, 10))), lr(2, &[], (50, 60))]);
    assert_eq!(never.verdict, Verdict::Linearizable, "{never:?}");
    assert_eq!((never.info_writes_dropped, never.ops), (1, 1));

    // But it takes effect at most once: seen, then gone without any delete, is impossible.
    let flicker = verdict(vec![info(lw(1, "a", (0, 10))), lr(2, &["a"], (100, 110)), lr(2, &[], (120, 130))]);
    assert_eq!(flicker.verdict, Verdict::NotLinearizable);
}

/// Several `info` deletes may each take effect, at different times (the search treats pending
/// ones as interchangeable but must still be able to use all of them).
#[test]
fn several_info_deletes_may_all_take_effect() {
    let k = verdict(vec![
        info(ld(1, (0, 1))),
        info(ld(2, (2, 3))),
        lw(3, "a", (0, 10)),
        lr(4, &["a"], (20, 30)),
        lr(4, &[], (40, 50)),
        lw(3, "b", (60, 70)),
        lr(4, &["b"], (80, 90)),
        lr(4, &[], (100, 110)),
    ]);
    assert_eq!(k.verdict, Verdict::Linearizable, "{k:?}");
    // A third "not found" after a third write needs a third delete, which does not exist.
    let k = verdict(vec![
        info(ld(1, (0, 1))),
        info(ld(2, (2, 3))),
        lw(3, "a", (0, 10)),
        lr(4, &[], (40, 50)),
        lw(3, "b", (60, 70)),
        lr(4, &[], (100, 110)),
        lw(3, "c", (120, 130)),
        lr(4, &[], (140, 150)),
    ]);
    assert_eq!(k.verdict, Verdict::NotLinearizable, "{k:?}");
    assert_eq!(k.counterexample.unwrap().op.index, 7);
}

/// A `fail` write definitely did not happen, so reading its value is a violation.
#[test]
fn reading_a_failed_write_is_not_linearizable() {
    let k = verdict(vec![fail(lw(1, "a", (0, 10))), lr(2, &["a"], (20, 30))]);
    assert_eq!(k.verdict, Verdict::NotLinearizable);
    assert_eq!(k.counterexample.unwrap().op.index, 1);
}

/// A read returning siblings is impossible for a register; the read is the counterexample and
/// the ops concurrent with it are listed.
#[test]
fn sibling_read_is_not_linearizable() {
    let k = verdict(vec![
        lw(1, "a", (0, 10)),
        lw(2, "b", (0, 10)),
        lr(3, &["a", "b"], (5, 20)),
        lr(1, &["b"], (30, 40)),
    ]);
    assert_eq!(k.verdict, Verdict::NotLinearizable);
    let ce = k.counterexample.unwrap();
    assert_eq!(ce.kind, CounterexampleKind::Siblings);
    assert_eq!(ce.op.index, 2);
    assert_eq!(ce.concurrent.iter().map(|o| o.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(ce.concurrent_count, 2);
}

/// A delete makes later reads return nothing; reading the deleted value afterwards is rejected.
#[test]
fn delete_semantics() {
    let ok = verdict(vec![lw(1, "a", (0, 10)), ld(1, (20, 30)), lr(2, &[], (40, 50))]);
    assert_eq!(ok.verdict, Verdict::Linearizable);
    let bad =
        verdict(vec![lw(1, "a", (0, 10)), ld(1, (20, 30)), lr(2, &[], (40, 50)), lr(2, &["a"], (60, 70))]);
    assert_eq!(bad.verdict, Verdict::NotLinearizable);
    assert_eq!(bad.counterexample.unwrap().op.index, 3);
}

/// Keys are judged independently: one bad key does not taint another.
#[test]
fn keys_are_checked_independently() {
    let mut bad = lr(2, &[], (20, 30));
    bad.key = "x".into();
    let mut w = lw(1, "1", (0, 10));
    w.key = "x".into();
    let h = History::new(vec![w, bad, lw(3, "2", (0, 10)), lr(4, &["2"], (20, 30))]);
    let r = check_linearizability(&h, &config()).unwrap();
    assert_eq!((r.keys_checked, r.linearizable, r.not_linearizable, r.unknown), (2, 1, 1, 0));
    assert_eq!(r.keys[0].key, "k");
    assert_eq!(r.keys[0].verdict, Verdict::Linearizable);
    assert_eq!(r.keys[1].key, "x");
    assert_eq!(r.keys[1].verdict, Verdict::NotLinearizable);
}

/// A search that exceeds its step or memory budget ends with `unknown` instead of running on.
#[test]
fn budgets_end_in_unknown() {
    // Twenty concurrent writes, then a read of the first: the search tries many orders first.
    let mut ops: Vec<_> = (0..20).map(|i| lw(i, &format!("v{i}"), (0, 1000))).collect();
    ops.push(lr(100, &["v0"], (1001, 1002)));
    let h = History::new(ops);
    let limits = |steps_max, cache_bytes_max| CheckConfig {
        linearizability: LinearizabilityLimits { steps_max, cache_bytes_max },
        ..CheckConfig::default()
    };
    let k = &check_linearizability(&h, &limits(1000, u64::MAX)).unwrap().keys[0];
    assert_eq!((k.verdict, k.unknown_reason), (Verdict::Unknown, Some(UnknownReason::StepsExhausted)));
    assert_eq!(k.steps, 1000);
    let k = &check_linearizability(&h, &limits(u64::MAX, 10_000)).unwrap().keys[0];
    assert_eq!((k.verdict, k.unknown_reason), (Verdict::Unknown, Some(UnknownReason::CacheExhausted)));
}

// ---------------------------------------------------------------------------------------------
// Staleness

/// A read that misses a write acknowledged 3 ms before it started is stale and lands in the
/// 2–5 ms bucket; a read after anti-entropy is fresh; a read before any acknowledgement is not
/// judged.
#[test]
fn stale_read_is_counted_in_its_bucket() {
    let mut c = Cluster::new(3);
    let (_, before) = c.read("k", &[1]);
    let w = c.write("k", 0, None, Some("a"), &[]); // w=1: only replica 0 has it
    let (stale_values, stale_ctx) = c.read("k", &[1]); // r=1 at another replica
    c.sync("k");
    let (fresh_values, fresh_ctx) = c.read("k", &[2]);
    assert!(stale_values.is_empty());
    assert_eq!(fresh_values, ["a"]);
    let h = History::new(vec![
        read(2, "k", (2, 3), &[], &before),
        write(1, "k", "a", (0, 10), None, &w),
        read(2, "k", (13, 14), &[], &stale_ctx),
        read(3, "k", (80, 81), &["a"], &fresh_ctx),
    ]);
    let r = check_staleness(&h, &config()).unwrap();
    assert_eq!((r.reads_checked, r.reads_without_prior_write, r.stale), (2, 1, 1));
    assert_eq!(r.stale_fraction, 0.5);
    let b = &r.buckets[2];
    assert_eq!((b.from_ms, b.to_ms, b.reads, b.stale, b.stale_fraction), (2, Some(5), 1, 1, 1.0));
    let b = &r.buckets[6];
    assert_eq!((b.from_ms, b.to_ms, b.reads, b.stale), (50, Some(100), 1, 0));
    assert_eq!(r.buckets.iter().map(|b| b.reads).sum::<u64>(), 2);
    assert_eq!(r.stale_examples.len(), 1);
    assert_eq!((r.stale_examples[0].read.index, r.stale_examples[0].write.index), (2, 1));
    assert_eq!(r.stale_examples[0].delta_ns, 3 * MS);
}

/// Staleness is judged against the latest acknowledged write, and counted per setting label.
#[test]
fn staleness_uses_latest_write_and_groups_by_setting() {
    let mut c = Cluster::new(3);
    let wa = c.write("k", 0, None, Some("a"), &[1, 2]);
    let (_, ra) = c.read("k", &[1]);
    let wb = c.write("k", 0, Some(&ra), Some("b"), &[]); // only replica 0 has b
    let (_, seen_a) = c.read("k", &[1]); // saw a, missed b
    let (_, seen_b) = c.read("k", &[0]);
    let mut r1 = read(2, "k", (40, 41), &["a"], &seen_a);
    r1.setting = Some("r1w1".into());
    let mut r2 = read(3, "k", (40, 41), &["b"], &seen_b);
    r2.setting = Some("r2w2".into());
    let h = History::new(vec![
        write(1, "k", "a", (0, 10), None, &wa),
        write(1, "k", "b", (20, 30), Some(&ra), &wb),
        r1,
        r2,
    ]);
    let r = check_staleness(&h, &config()).unwrap();
    assert_eq!((r.reads_checked, r.stale), (2, 1));
    assert_eq!(r.stale_examples[0].write.index, 1);
    assert_eq!(r.groups.len(), 2);
    assert_eq!(r.groups[0].setting.as_deref(), Some("r1w1"));
    assert_eq!((r.groups[0].reads_checked, r.groups[0].stale, r.groups[0].stale_fraction), (1, 1, 1.0));
    assert_eq!(r.groups[1].setting.as_deref(), Some("r2w2"));
    assert_eq!((r.groups[1].reads_checked, r.groups[1].stale), (1, 0));
}

/// A read that saw an acknowledged delete (its tombstone context) is fresh although it returns
/// nothing.
#[test]
fn read_after_delete_is_fresh() {
    let mut c = Cluster::new(3);
    let wa = c.write("k", 0, None, Some("a"), &[1, 2]);
    let (_, ra) = c.read("k", &[0]);
    let d = c.write("k", 0, Some(&ra), None, &[1, 2]);
    let (values, after) = c.read("k", &[2]);
    assert!(values.is_empty());
    let h = History::new(vec![
        write(1, "k", "a", (0, 10), None, &wa),
        delete(1, "k", (20, 30), Some(&ra), &d),
        read(2, "k", (31, 32), &[], &after),
    ]);
    let r = check_staleness(&h, &config()).unwrap();
    assert_eq!((r.reads_checked, r.stale), (1, 0));
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// A process that does not read its own acknowledged write violates read-your-writes; another
/// process missing it does not.
#[test]
fn read_your_writes_violation_is_detected() {
    let mut c = Cluster::new(3);
    let w = c.write("k", 0, None, Some("a"), &[]);
    let (_, miss) = c.read("k", &[1]);
    let h = History::new(vec![
        write(1, "k", "a", (0, 10), None, &w),
        read(1, "k", (20, 30), &[], &miss),
        read(2, "k", (20, 30), &[], &miss),
    ]);
    let r = check_sessions(&h, &config()).unwrap();
    assert_eq!(r.reads, 2);
    assert_eq!((r.read_your_writes.checked, r.read_your_writes.violations), (1, 1));
    let v = &r.read_your_writes.examples[0];
    assert_eq!((v.read.index, v.earlier.index), (1, 0));
    assert_eq!(r.monotonic_reads.violations, 0);
}

/// Read-your-writes covers every own write, not only the last: a blind write's context need not
/// cover the previous one.
#[test]
fn read_your_writes_covers_all_own_writes() {
    let mut c = Cluster::new(3);
    let wa = c.write("k", 0, None, Some("a"), &[]);
    let wb = c.write("k", 1, None, Some("b"), &[]);
    let (values, sees_b) = c.read("k", &[1]);
    assert_eq!(values, ["b"]);
    let h = History::new(vec![
        write(1, "k", "a", (0, 10), None, &wa),
        write(1, "k", "b", (10, 20), None, &wb),
        read(1, "k", (20, 30), &["b"], &sees_b),
    ]);
    let r = check_sessions(&h, &config()).unwrap();
    assert_eq!(r.read_your_writes.violations, 1);
    assert_eq!(r.read_your_writes.examples[0].earlier.index, 0);
}

/// A process whose second read un-sees what its first read saw violates monotonic reads.
#[test]
fn monotonic_read_violation_is_detected() {
    let mut c = Cluster::new(3);
    let w = c.write("k", 0, None, Some("a"), &[]);
    let (_, saw) = c.read("k", &[0]);
    let (_, missed) = c.read("k", &[1]);
    let h = History::new(vec![
        write(9, "k", "a", (0, 10), None, &w),
        read(1, "k", (20, 30), &["a"], &saw),
        read(1, "k", (40, 50), &[], &missed),
    ]);
    let r = check_sessions(&h, &config()).unwrap();
    assert_eq!((r.monotonic_reads.checked, r.monotonic_reads.violations), (1, 1));
    let v = &r.monotonic_reads.examples[0];
    assert_eq!((v.read.index, v.earlier.index), (2, 1));
    assert_eq!(r.read_your_writes.checked, 0);
}

/// Sessions on a converged store have no violations, and the checks are counted per group.
#[test]
fn good_sessions_pass() {
    let mut c = Cluster::new(3);
    let w = c.write("k", 0, None, Some("a"), &[1, 2]);
    let (_, r1) = c.read("k", &[1]);
    let (_, r2) = c.read("k", &[2]);
    let mut ops = vec![
        write(1, "k", "a", (0, 10), None, &w),
        read(1, "k", (20, 30), &["a"], &r1),
        read(1, "k", (40, 50), &["a"], &r2),
    ];
    for o in &mut ops {
        o.phase = Some("steady".into());
    }
    let r = check_sessions(&History::new(ops), &config()).unwrap();
    assert_eq!((r.read_your_writes.checked, r.read_your_writes.violations), (2, 0));
    assert_eq!((r.monotonic_reads.checked, r.monotonic_reads.violations), (1, 0));
    assert_eq!(r.groups.len(), 1);
    assert_eq!(r.groups[0].phase.as_deref(), Some("steady"));
    assert_eq!((r.groups[0].reads, r.groups[0].read_your_writes_checked), (2, 2));
}

// ---------------------------------------------------------------------------------------------
// All together

/// `check_all` runs every checker and its report survives a JSON round trip unchanged.
#[test]
fn check_all_report_round_trips_as_json() {
    let mut c = Cluster::new(3);
    let w = c.write("k", 0, None, Some("a"), &[]);
    let (_, miss) = c.read("k", &[1]);
    c.sync("k");
    let (values, ctx) = c.read("k", &[0, 1, 2]);
    let h = History::new(vec![write(1, "k", "a", (0, 10), None, &w), read(1, "k", (20, 30), &[], &miss)]);
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let report = check_all(&h, &final_state(&[("k", &values, Some(&ctx))])).unwrap();
    assert_eq!((report.ops, report.keys), (2, 1));
    assert_eq!(report.lost_writes.lost, 0);
    assert_eq!(report.linearizability.not_linearizable, 1);
    assert_eq!(report.staleness.stale, 1);
    assert_eq!(report.sessions.read_your_writes.violations, 1);
    let json = serde_json::to_string_pretty(&report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, report);
}
