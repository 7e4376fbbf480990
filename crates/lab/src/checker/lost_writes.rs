//! Lost writes: acknowledged writes that vanished although nobody superseded them.
//!
//! This is the property QuorumDB promises under *every* setting (README, "siblings (always)"):
//! a write acknowledged to its client is never silently dropped in favour of a concurrent one.
//! It is Jepsen's "set" workload idea applied to a causal store: after the faults are healed and
//! the replicas have converged, one read per key at `r = all` gives the final state, and every
//! acknowledged write must be explained by it.
//!
//! An `ok` write `W` of key `k` is **lost** iff
//! 1. its value is not among `k`'s final values, and
//! 2. no write or delete of `k` in the history — `ok` or `info`, since either may have been
//!    applied — carries a `context_in` that descends `W.context_out`.
//!
//! (With write ids a write may be applied twice, by a hedge or a retry, and replicas keep one
//! of its versions: a token that descends the context of a read that *returned* `W`'s value
//! also counts as superseding `W`. Values are unique per logical write, so such a read saw a
//! version of `W`.)
//!
//! Condition 2 is "somebody superseded `W` knowingly": by the argument in [`crate::history`],
//! a token descends `W.context_out` exactly when it covers `W`'s dot, and a write with such a
//! token removes `W`'s value on purpose. Without such a write, `W`'s sibling must survive every
//! merge, so its absence is a bug (a merge dropping a concurrent sibling, a replica losing an
//! fsynced write, a wiped node reusing dots...). The report tells apart losses where the final
//! context does not even cover `W` (the write vanished without trace) from those where it does
//! (the value was dropped by a state that had seen it).
//!
//! Two more things the final state can prove wrong are counted alongside:
//! - **resurrected**: a final value whose write *was* superseded knowingly by an `ok` write or
//!   delete. That op removed the value on at least `w` replicas and the removal must win every
//!   merge, so a converged state still holding it has undone an acknowledged op (e.g. a
//!   tombstone collected too early).
//! - **unexpected final values**: a final value written by no `ok` or `info` write of that key
//!   (a `fail` write that did take effect, or a value from nowhere).
//!
//! Limitation: a delete sent *without* a token makes the server read a quorum and delete what it
//! saw; that context never reaches the history, so the writes it superseded look lost. Lab
//! workloads must send deletes with a token. Writes are not matched across keys.

use super::{push_bounded, CheckConfig, CheckError, OpRef};
use crate::history::{Decoded, FinalState, History, OpKind, OpResult};
use quorumdb_core::causality::VersionVector;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Report of the lost-writes checker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWritesReport {
    /// `ok` writes (deletes are not counted: their effect is an absence).
    pub acknowledged: u64,
    /// Acknowledged writes whose value is in the final state.
    pub survived: u64,
    /// Acknowledged writes absent from the final state but superseded knowingly.
    pub superseded: u64,
    /// Acknowledged writes absent and not superseded: violations.
    pub lost: u64,
    pub lost_examples: Vec<LostWrite>,
    /// Final values whose write an `ok` op superseded knowingly: violations.
    pub resurrected: u64,
    pub resurrected_examples: Vec<ResurrectedValue>,
    /// Final values no `ok` or `info` write of the key wrote: violations (or a driver that
    /// recorded `fail` for a write that was in fact applied).
    pub unexpected_final_values: u64,
    pub unexpected_examples: Vec<UnexpectedValue>,
}

/// One lost write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrite {
    pub write: OpRef,
    pub final_values: Vec<String>,
    /// Whether the final context descends the write's context: `true` means a state that had
    /// seen the write dropped its value, `false` that the write vanished without trace,
    /// `None` that the final read carried no context.
    pub final_context_descends: Option<bool>,
}

/// A final value that an acknowledged op had superseded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResurrectedValue {
    pub write: OpRef,
    /// The `ok` write or delete whose `context_in` covered `write`.
    pub superseded_by: OpRef,
}

/// A final value written by no `ok` or `info` write of its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnexpectedValue {
    pub table: String,
    pub key: String,
    pub value: String,
    /// The `fail` write of this value, if there was one.
    pub failed_write: Option<OpRef>,
}

/// Checks `history` against the converged `final_state` (see the module docs).
pub fn check_lost_writes(
    history: &History,
    final_state: &FinalState,
    config: &CheckConfig,
) -> Result<LostWritesReport, CheckError> {
    run(&Decoded::new(history)?, final_state, config)
}

/// One key's final read, decoded.
struct FinalRead<'a> {
    values: &'a [String],
    context: Option<VersionVector>,
}

pub(crate) fn run(
    d: &Decoded<'_>,
    final_state: &FinalState,
    config: &CheckConfig,
) -> Result<LostWritesReport, CheckError> {
    let examples_len_max = config.examples_len_max;
    let mut finals: BTreeMap<(&str, &str), FinalRead<'_>> = BTreeMap::new();
    for item in &final_state.items {
        let context = item.context.as_deref().map(VersionVector::from_recorded_token).transpose().map_err(
            |source| CheckError::MalformedFinalContext {
                table: item.table.clone(),
                key: item.key.clone(),
                source,
            },
        )?;
        let id = (item.table.as_str(), item.key.as_str());
        if finals.insert(id, FinalRead { values: &item.values, context }).is_some() {
            return Err(CheckError::DuplicateFinalItem { table: item.table.clone(), key: item.key.clone() });
        }
    }

    let mut report = LostWritesReport::default();
    for (&(table, key), indices) in &d.keys {
        let writes_ok =
            indices.iter().any(|&i| d.ops[i].kind == OpKind::Write && d.ops[i].result == OpResult::Ok);
        let Some(FinalRead { values: final_values, context: final_context }) = finals.get(&(table, key))
        else {
            if writes_ok {
                return Err(CheckError::MissingFinalItem { table: table.into(), key: key.into() });
            }
            continue;
        };

        // Candidates that may have superseded a write: writes and deletes with a token that
        // may have been applied. Ordered by invoke time, because a superseder must have read
        // the write first, so it is usually invoked soon after it.
        let mut superseders: Vec<usize> = indices
            .iter()
            .copied()
            .filter(|&i| {
                let op = &d.ops[i];
                op.kind != OpKind::Read && op.result != OpResult::Fail && d.context_in[i].is_some()
            })
            .collect();
        superseders.sort_by_key(|&i| (d.ops[i].invoke_ns, i));
        // The contexts of the reads that returned each value. A write applied twice (a hedged
        // or retried write with one write id) has two versions that replicas deduplicate to
        // one: a client that read either version and wrote with that token superseded the
        // write, although its token need not cover the version the writer was told about.
        let mut read_contexts: HashMap<&str, Vec<&VersionVector>> = HashMap::new();
        for &i in indices {
            if d.ops[i].kind == OpKind::Read && d.ops[i].result == OpResult::Ok {
                if let Some(ctx) = d.context_out[i].as_ref() {
                    for v in &d.ops[i].values {
                        read_contexts.entry(v.as_str()).or_default().push(ctx);
                    }
                }
            }
        }
        // The first op in `superseders` (starting near `w`'s invoke, wrapping around) whose
        // token covers `w` and whose result is accepted by `accept`.
        let superseded_by = |w: usize, accept: &dyn Fn(OpResult) -> bool| -> Option<usize> {
            let w_ctx = d.context_out[w].as_ref()?;
            let seen_as = d.ops[w].value.as_deref().and_then(|v| read_contexts.get(v));
            let start = superseders.partition_point(|&i| d.ops[i].invoke_ns < d.ops[w].invoke_ns);
            let (before, after) = superseders.split_at(start);
            after.iter().chain(before).copied().find(|&i| {
                i != w
                    && accept(d.ops[i].result)
                    && d.context_in[i].as_ref().is_some_and(|ctx| {
                        ctx.descends_modulo_pruning(w_ctx)
                            || seen_as
                                .is_some_and(|reads| reads.iter().any(|r| ctx.descends_modulo_pruning(r)))
                    })
            })
        };

        for &w in indices {
            let op = &d.ops[w];
            if op.kind != OpKind::Write || op.result != OpResult::Ok {
                continue;
            }
            report.acknowledged += 1;
            let value = op.value.as_deref().unwrap_or_default();
            if final_values.iter().any(|v| v == value) {
                report.survived += 1;
            } else if superseded_by(w, &|r| r != OpResult::Fail).is_some() {
                report.superseded += 1;
            } else {
                report.lost += 1;
                push_bounded(&mut report.lost_examples, examples_len_max, || {
                    Some(LostWrite {
                        write: OpRef::new(d.ops, w)?,
                        final_values: final_values.to_vec(),
                        final_context_descends: match (final_context, &d.context_out[w]) {
                            (Some(f), Some(c)) => Some(f.descends_modulo_pruning(c)),
                            _ => None,
                        },
                    })
                });
            }
        }

        // Which write produced each final value.
        let writers: HashMap<&str, usize> = indices
            .iter()
            .filter(|&&i| d.ops[i].kind == OpKind::Write)
            .filter_map(|&i| d.ops[i].value.as_deref().map(|v| (v, i)))
            .collect();
        for value in final_values.iter() {
            match writers.get(value.as_str()).copied() {
                Some(w) if d.ops[w].result != OpResult::Fail => {
                    if let Some(by) = superseded_by(w, &|r| r == OpResult::Ok) {
                        report.resurrected += 1;
                        push_bounded(&mut report.resurrected_examples, examples_len_max, || {
                            Some(ResurrectedValue {
                                write: OpRef::new(d.ops, w)?,
                                superseded_by: OpRef::new(d.ops, by)?,
                            })
                        });
                    }
                }
                failed_write => {
                    report.unexpected_final_values += 1;
                    push_bounded(&mut report.unexpected_examples, examples_len_max, || {
                        Some(UnexpectedValue {
                            table: table.into(),
                            key: key.into(),
                            value: value.clone(),
                            failed_write: failed_write.and_then(|w| OpRef::new(d.ops, w)),
                        })
                    });
                }
            }
        }
    }
    Ok(report)
}
