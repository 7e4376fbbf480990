//! Session guarantees per client and key: read-your-writes and monotonic reads.
//!
//! These are two of the four session guarantees of Terry et al., "Session Guarantees for Weakly
//! Consistent Replicated Data" (Bayou, 1994), which Jepsen's consistency map places below
//! linearizability and which Dynamo-style stores give only with `r + w > N` or sticky sessions.
//! Here a session is one `process` on one `(table, key)`; its ops are ordered by invocation
//! (a process has one op outstanding at a time, which validation enforces).
//!
//! - **Read-your-writes**: an `ok` read must descend the context of every earlier `ok` write or
//!   delete of the same process on that key (it saw them; see [`crate::history`]). All of them,
//!   not only the last: a blind write's context need not cover the process's previous write.
//! - **Monotonic reads**: an `ok` read must descend the previous `ok` read's context by the same
//!   process on that key: what a client has seen it must not un-see.
//!
//! `info` and `fail` ops are ignored: an `info` write may not have happened, so missing it is no
//! violation.

use super::{push_bounded, CheckConfig, OpRef};
use crate::history::{Decoded, History, HistoryError, OpKind, OpResult};
use quorumdb_core::causality::VersionVector;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Report of the session checker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsReport {
    /// `ok` reads examined.
    pub reads: u64,
    pub read_your_writes: SessionCheck,
    pub monotonic_reads: SessionCheck,
    /// The same counts per `(setting, phase)` of the read, sorted.
    pub groups: Vec<SessionGroup>,
}

/// Results of one session guarantee.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCheck {
    /// Reads the guarantee applies to (there was an earlier own write, or an earlier read).
    pub checked: u64,
    pub violations: u64,
    pub examples: Vec<SessionViolation>,
}

/// A read and the earlier op of the same session it failed to see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionViolation {
    pub read: OpRef,
    /// The own write it missed (read-your-writes) or the previous read (monotonic reads).
    pub earlier: OpRef,
}

/// Counts for the reads recorded under one `setting` and `phase`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGroup {
    pub setting: Option<String>,
    pub phase: Option<String>,
    pub reads: u64,
    pub read_your_writes_checked: u64,
    pub read_your_writes_violations: u64,
    pub monotonic_reads_checked: u64,
    pub monotonic_reads_violations: u64,
}

/// Checks both session guarantees over `history` (see the module docs).
pub fn check_sessions(history: &History, config: &CheckConfig) -> Result<SessionsReport, HistoryError> {
    Ok(run(&Decoded::new(history)?, config))
}

/// What one session has done so far.
#[derive(Default)]
struct Session {
    /// Join of the contexts of its `ok` writes and deletes: a read must descend it.
    written: Option<VersionVector>,
    /// Its `ok` writes and deletes, to name the one a violating read missed.
    writes: Vec<usize>,
    /// Its previous `ok` read.
    last_read: Option<usize>,
}

pub(crate) fn run(d: &Decoded<'_>, config: &CheckConfig) -> SessionsReport {
    let examples_len_max = config.examples_len_max;
    let mut report = SessionsReport::default();
    let mut groups: BTreeMap<(Option<&str>, Option<&str>), SessionGroup> = BTreeMap::new();
    for indices in d.keys.values() {
        let mut ordered: Vec<usize> =
            indices.iter().copied().filter(|&i| d.ops[i].result == OpResult::Ok).collect();
        ordered.sort_by_key(|&i| (d.ops[i].invoke_ns, d.ops[i].complete_ns, i));
        let mut sessions: HashMap<u32, Session> = HashMap::new();
        for i in ordered {
            let op = &d.ops[i];
            let Some(context) = d.context_out[i].as_ref() else {
                continue; // validation guarantees a context on ok ops
            };
            let session = sessions.entry(op.process).or_default();
            if op.kind != OpKind::Read {
                session.written.get_or_insert_with(VersionVector::new).merge(context);
                session.writes.push(i);
                continue;
            }
            report.reads += 1;
            let group = groups.entry((op.setting.as_deref(), op.phase.as_deref())).or_insert_with(|| {
                SessionGroup { setting: op.setting.clone(), phase: op.phase.clone(), ..Default::default() }
            });
            group.reads += 1;

            if let Some(written) = &session.written {
                report.read_your_writes.checked += 1;
                group.read_your_writes_checked += 1;
                if !context.descends_modulo_pruning(written) {
                    report.read_your_writes.violations += 1;
                    group.read_your_writes_violations += 1;
                    push_bounded(&mut report.read_your_writes.examples, examples_len_max, || {
                        // The latest own write the read did not see.
                        let missed = session.writes.iter().rev().copied().find(|&w| {
                            d.context_out[w].as_ref().is_some_and(|c| !context.descends_modulo_pruning(c))
                        })?;
                        Some(SessionViolation {
                            read: OpRef::new(d.ops, i)?,
                            earlier: OpRef::new(d.ops, missed)?,
                        })
                    });
                }
            }
            if let Some(previous) = session.last_read {
                report.monotonic_reads.checked += 1;
                group.monotonic_reads_checked += 1;
                let seen = d.context_out[previous].as_ref();
                if seen.is_some_and(|seen| !context.descends_modulo_pruning(seen)) {
                    report.monotonic_reads.violations += 1;
                    group.monotonic_reads_violations += 1;
                    push_bounded(&mut report.monotonic_reads.examples, examples_len_max, || {
                        Some(SessionViolation {
                            read: OpRef::new(d.ops, i)?,
                            earlier: OpRef::new(d.ops, previous)?,
                        })
                    });
                }
            }
            session.last_read = Some(i);
        }
    }
    report.groups = groups.into_values().collect();
    report
}
