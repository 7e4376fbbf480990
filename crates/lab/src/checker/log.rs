//! Partitioned logs (Kafka-style): what producers were told and consumers saw, against the final
//! contents of every partition.
//!
//! The anomaly classes are the ones Jepsen's Kafka checker reports
//! (`jepsen.tests.kafka`), restated for one log without transactions:
//!
//! | anomaly | meaning |
//! |---|---|
//! | **duplicate** | one value at two (or more) offsets of a partition |
//! | **lost** | an acknowledged send whose value is absent from the final read, or present at another offset than the acknowledged one |
//! | **inconsistent offset** | two different values observed at one offset (by acknowledgements, polls or the final read) |
//! | **non-monotonic poll** | within one consumer session, an offset at or below one it already received |
//! | **skipped poll** | within one consumer session, consecutive received offsets jump over an offset the final read holds |
//! | **unexpected value** | a value observed that no send could have written (sent by nobody, or only by sends that definitely failed) |
//!
//! ## The history
//!
//! A [`LogHistory`] is JSON Lines like [`crate::History`]: one [`LogOp`] per line, tagged by
//! `"type"`: a [`Send`] (one produce of one value), a [`Poll`] (one fetch and the records it
//! returned) or a [`FinalPartition`] (after the heal, everything from the log start to the high
//! watermark). Times are nanoseconds of one monotonic clock; `info` means unknown, as
//! everywhere in the lab (see [`crate::history`]).
//!
//! Values name sends: every value is sent by one process to one partition. A process may send
//! one value several times (an idempotent producer retrying an unknown outcome with the same
//! sequence number); the broker must then keep it once. An acknowledged send's offset is an
//! observation like a poll's: an idempotent retry acknowledged at a second offset is a
//! duplicate.
//!
//! A consumer *session* is a run of polls of one process on one partition in which the
//! consumer advances its position by what it received; a poll with `fresh = true` starts a new
//! session (the consumer was restarted, or reset its position after `OFFSET_OUT_OF_RANGE`).
//! Monotonicity and skips are judged within sessions only.
//!
//! ## Retention
//!
//! The final read of a partition starts at its `log_start`: offsets below it were trimmed on
//! purpose, so an acknowledged value there is counted as `trimmed`, never as lost, and a jump
//! over trimmed offsets is not a skip. Every other check still sees those offsets through the
//! acknowledgements and polls that observed them.
//!
//! [`check_log`] validates the history first and returns a typed [`LogHistoryError`] for
//! anything it cannot judge; it never panics on input. Reports are deterministic: partitions,
//! values and offsets are visited in sorted order and example lists are bounded by
//! [`CheckConfig::examples_len_max`].

use super::{push_bounded, CheckConfig};
use crate::history::{
    read_jsonl_ops, write_jsonl_ops, JsonlError, OpResult, HISTORY_OPS_LEN_MAX, OP_LINE_BYTES_MAX,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use thiserror::Error;

/// Most records one poll or one final read may list. A final read of the lab's partitions holds
/// tens of thousands of records; ten million bounds a corrupt or hostile file's memory use.
pub const LOG_RECORDS_LEN_MAX: usize = 10_000_000;

/// Longest example list of missing offsets quoted for one skipped poll.
const SKIPPED_OFFSETS_QUOTED_MAX: usize = 10;

/// One produce of one value, as the producer saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// The producer. A process runs one operation at a time.
    pub process: u32,
    pub topic: String,
    pub partition: u32,
    /// The record's value; unique to this producer and partition (retries repeat it).
    pub value: String,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    /// `ok`: acknowledged at `offset`; `fail`: a definite refusal (nothing was appended);
    /// `info`: unknown (timeout, connection lost).
    pub result: OpResult,
    /// The acknowledged offset; required when `result` is `ok`.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Idempotent producer `(id, epoch, sequence)`, when the send had one (informative).
    #[serde(default)]
    pub producer: Option<(i64, i16, i32)>,
    /// What the producer was told, for `fail` and `info`.
    #[serde(default)]
    pub error: Option<String>,
}

/// One fetch and what it returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    /// The consumer. A process runs one operation at a time.
    pub process: u32,
    pub topic: String,
    pub partition: u32,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    /// The position the consumer fetched from.
    pub from_offset: u64,
    /// This poll starts a new session: the consumer did not continue from its previous
    /// position (first poll, restart, reset after an out-of-range answer).
    #[serde(default)]
    pub fresh: bool,
    /// `(offset, value)` of each record returned at or after `from_offset`, in the order
    /// received.
    #[serde(default)]
    pub records: Vec<(u64, String)>,
    /// The error the consumer got instead of records, if any.
    #[serde(default)]
    pub error: Option<String>,
}

/// A partition read from its log start to its high watermark after the heal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalPartition {
    pub topic: String,
    pub partition: u32,
    /// The first offset still readable: everything below was trimmed by retention.
    #[serde(default)]
    pub log_start: u64,
    /// The high watermark the final read stopped at.
    pub high_watermark: u64,
    /// `(offset, value)` of every record from `log_start` on, in the order received.
    pub records: Vec<(u64, String)>,
}

/// One line of a log history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogOp {
    Send(Send),
    Poll(Poll),
    Final(FinalPartition),
}

impl LogOp {
    fn process_span(&self) -> Option<(u32, u64, u64)> {
        match self {
            LogOp::Send(s) => Some((s.process, s.invoke_ns, s.complete_ns)),
            LogOp::Poll(p) => Some((p.process, p.invoke_ns, p.complete_ns)),
            LogOp::Final(_) => None,
        }
    }
}

/// A whole log history: sends, polls and final reads, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHistory {
    pub ops: Vec<LogOp>,
}

/// Why a log history could not be read, written or judged. Indices are 0-based positions in
/// [`LogHistory::ops`]; `line` fields are 1-based file lines.
#[derive(Debug, Error)]
pub enum LogHistoryError {
    #[error("cannot read or write the log history: {0}")]
    Io(#[from] std::io::Error),
    #[error("log history line {line}: not a valid op: {source}")]
    Decode {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode log op {index}: {source}")]
    Encode {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("log history line {line} is longer than {bytes_max} bytes")]
    LineTooLong { line: usize, bytes_max: usize },
    #[error("log history has more than {ops_len_max} ops")]
    TooManyOps { ops_len_max: usize },
    #[error("op {index} lists more than {records_len_max} records")]
    TooManyRecords { index: usize, records_len_max: usize },
    #[error("op {index}: completes at {complete_ns} ns, before it was invoked at {invoke_ns} ns")]
    CompleteBeforeInvoke { index: usize, invoke_ns: u64, complete_ns: u64 },
    #[error(
        "process {process} has two ops outstanding at once: op {second} was invoked before op \
         {first} completed"
    )]
    OverlappingOps { process: u32, first: usize, second: usize },
    #[error("send {index} is ok but has no offset")]
    AckWithoutOffset { index: usize },
    #[error(
        "sends {first} and {second} both send {value:?} but from different processes or to \
         different partitions; values must name one producer's record"
    )]
    ValueSentTwice { value: String, first: usize, second: usize },
    #[error("two final reads of topic {topic:?} partition {partition} (ops {first} and {second})")]
    DuplicateFinal { topic: String, partition: u32, first: usize, second: usize },
    #[error(
        "topic {topic:?} partition {partition} has acknowledged sends or polled records but no \
         final read; read every partition from its log start after the heal"
    )]
    MissingFinal { topic: String, partition: u32 },
    #[error("final read {index}: log start {log_start} is above the high watermark {high_watermark}")]
    FinalBounds { index: usize, log_start: u64, high_watermark: u64 },
}

impl From<JsonlError> for LogHistoryError {
    fn from(e: JsonlError) -> Self {
        match e {
            JsonlError::Io(e) => LogHistoryError::Io(e),
            JsonlError::Decode { line, source } => LogHistoryError::Decode { line, source },
            JsonlError::Encode { index, source } => LogHistoryError::Encode { index, source },
            JsonlError::LineTooLong { line } => {
                LogHistoryError::LineTooLong { line, bytes_max: OP_LINE_BYTES_MAX }
            }
            JsonlError::TooManyOps => LogHistoryError::TooManyOps { ops_len_max: HISTORY_OPS_LEN_MAX },
        }
    }
}

impl LogHistory {
    pub fn new(ops: Vec<LogOp>) -> Self {
        Self { ops }
    }

    /// Reads JSON Lines: one op per line, blank lines ignored, bounded like
    /// [`crate::History::read_jsonl`] ([`OP_LINE_BYTES_MAX`], [`HISTORY_OPS_LEN_MAX`]). Does
    /// not validate; [`check_log`] does.
    pub fn read_jsonl<R: Read>(reader: R) -> Result<LogHistory, LogHistoryError> {
        Ok(LogHistory { ops: read_jsonl_ops(reader)? })
    }

    /// Writes JSON Lines, one op per line, in `ops` order.
    pub fn write_jsonl<W: Write>(&self, writer: W) -> Result<(), LogHistoryError> {
        Ok(write_jsonl_ops(&self.ops, writer)?)
    }

    /// Checks everything [`check_log`] relies on.
    pub fn validate(&self) -> Result<(), LogHistoryError> {
        Indexed::new(self).map(|_| ())
    }
}

/// A (topic, partition) pair, ordered by topic then partition.
type Part<'h> = (&'h str, u32);

/// A validated history, indexed by partition.
struct Indexed<'h> {
    ops: &'h [LogOp],
    /// Send indices per partition, in history order.
    sends: BTreeMap<Part<'h>, Vec<usize>>,
    /// Poll indices per partition.
    polls: BTreeMap<Part<'h>, Vec<usize>>,
    finals: BTreeMap<Part<'h>, usize>,
}

impl<'h> Indexed<'h> {
    fn new(history: &'h LogHistory) -> Result<Indexed<'h>, LogHistoryError> {
        let ops = history.ops.as_slice();
        if ops.len() > HISTORY_OPS_LEN_MAX {
            return Err(LogHistoryError::TooManyOps { ops_len_max: HISTORY_OPS_LEN_MAX });
        }
        let mut ix = Indexed { ops, sends: BTreeMap::new(), polls: BTreeMap::new(), finals: BTreeMap::new() };
        // The first send of each value: (process, topic, partition, index).
        let mut senders: BTreeMap<&str, (u32, Part<'h>, usize)> = BTreeMap::new();
        let mut per_process: BTreeMap<u32, Vec<(u64, u64, usize)>> = BTreeMap::new();
        for (index, op) in ops.iter().enumerate() {
            if let Some((process, invoke_ns, complete_ns)) = op.process_span() {
                if complete_ns < invoke_ns {
                    return Err(LogHistoryError::CompleteBeforeInvoke { index, invoke_ns, complete_ns });
                }
                per_process.entry(process).or_default().push((invoke_ns, complete_ns, index));
            }
            match op {
                LogOp::Send(s) => {
                    if s.result == OpResult::Ok && s.offset.is_none() {
                        return Err(LogHistoryError::AckWithoutOffset { index });
                    }
                    let part = (s.topic.as_str(), s.partition);
                    match senders.get(s.value.as_str()) {
                        Some(&(process, p, first)) if process != s.process || p != part => {
                            return Err(LogHistoryError::ValueSentTwice {
                                value: s.value.clone(),
                                first,
                                second: index,
                            });
                        }
                        Some(_) => {}
                        None => {
                            senders.insert(s.value.as_str(), (s.process, part, index));
                        }
                    }
                    ix.sends.entry(part).or_default().push(index);
                }
                LogOp::Poll(p) => {
                    if p.records.len() > LOG_RECORDS_LEN_MAX {
                        return Err(LogHistoryError::TooManyRecords {
                            index,
                            records_len_max: LOG_RECORDS_LEN_MAX,
                        });
                    }
                    ix.polls.entry((p.topic.as_str(), p.partition)).or_default().push(index);
                }
                LogOp::Final(f) => {
                    if f.records.len() > LOG_RECORDS_LEN_MAX {
                        return Err(LogHistoryError::TooManyRecords {
                            index,
                            records_len_max: LOG_RECORDS_LEN_MAX,
                        });
                    }
                    if f.log_start > f.high_watermark {
                        return Err(LogHistoryError::FinalBounds {
                            index,
                            log_start: f.log_start,
                            high_watermark: f.high_watermark,
                        });
                    }
                    if let Some(first) = ix.finals.insert((f.topic.as_str(), f.partition), index) {
                        return Err(LogHistoryError::DuplicateFinal {
                            topic: f.topic.clone(),
                            partition: f.partition,
                            first,
                            second: index,
                        });
                    }
                }
            }
        }
        for (process, mut spans) in per_process {
            spans.sort_unstable();
            for pair in spans.windows(2) {
                let ((_, first_complete, first), (second_invoke, _, second)) = (pair[0], pair[1]);
                if second_invoke < first_complete {
                    return Err(LogHistoryError::OverlappingOps { process, first, second });
                }
            }
        }
        // A partition anyone was told about must have been read at the end.
        let acked = ix.sends.iter().filter(|(_, sends)| {
            sends.iter().any(|&i| matches!(&ops[i], LogOp::Send(s) if s.result == OpResult::Ok))
        });
        let polled = ix.polls.iter().filter(|(_, polls)| {
            polls.iter().any(|&i| matches!(&ops[i], LogOp::Poll(p) if !p.records.is_empty()))
        });
        for ((topic, partition), _) in acked.chain(polled) {
            if !ix.finals.contains_key(&(*topic, *partition)) {
                return Err(LogHistoryError::MissingFinal {
                    topic: (*topic).to_owned(),
                    partition: *partition,
                });
            }
        }
        Ok(ix)
    }
}

/// Where an observation of a value at an offset came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An acknowledged send.
    Ack,
    /// A consumer's poll.
    Poll,
    /// The final read.
    Final,
}

/// One observation quoted in a report: what said `value` was at `offset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub offset: u64,
    pub value: String,
    pub source: Source,
    /// The op that observed it (its index in [`LogHistory::ops`]).
    pub op: usize,
}

/// One value at several offsets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    pub topic: String,
    pub partition: u32,
    pub value: String,
    pub offsets: Vec<u64>,
    /// The first observation at each offset.
    pub seen: Vec<Observation>,
}

/// An acknowledged value the final read does not hold where it was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRecord {
    pub topic: String,
    pub partition: u32,
    pub value: String,
    /// The acknowledging send.
    pub send: usize,
    pub acknowledged_offset: u64,
    /// Where the final read holds the value instead (empty: nowhere).
    pub final_offsets: Vec<u64>,
    /// What the final read holds at the acknowledged offset, if anything.
    pub final_value_there: Option<String>,
}

/// Several values at one offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InconsistentOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// The first observation of each value.
    pub seen: Vec<Observation>,
}

/// A consumer receiving an offset at or below one it had already received in its session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonMonotonicPoll {
    pub topic: String,
    pub partition: u32,
    pub process: u32,
    /// The poll that received `offset`.
    pub poll: usize,
    pub previous_offset: u64,
    pub offset: u64,
}

/// A consumer whose consecutive offsets jumped over records the final read holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedPoll {
    pub topic: String,
    pub partition: u32,
    pub process: u32,
    /// The poll that received `offset`.
    pub poll: usize,
    pub previous_offset: u64,
    pub offset: u64,
    /// How many final offsets lie strictly between the two (at or above the log start).
    pub skipped: u64,
    /// The first of them.
    pub skipped_offsets: Vec<u64>,
}

/// A value observed that no send could have written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnexpectedValue {
    pub topic: String,
    pub partition: u32,
    pub value: String,
    /// Its first observation.
    pub seen: Observation,
    /// A send of the value that definitely failed, if there was one (the broker refused it
    /// but it appeared anyway).
    pub failed_send: Option<usize>,
}

/// Report of the log checker. `anomalies` is the sum of the six anomaly counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogReport {
    /// Partitions the history touches.
    pub partitions: u64,
    /// Send ops (retries included) and how they ended.
    pub sends: u64,
    pub sends_ok: u64,
    pub sends_failed: u64,
    pub sends_unknown: u64,
    /// Distinct values with at least one acknowledged send.
    pub values_acknowledged: u64,
    /// Acknowledged values the final read holds at their acknowledged offset.
    pub values_survived: u64,
    /// Acknowledged values at offsets below the final log start (trimmed on purpose, not judged
    /// as lost).
    pub values_trimmed: u64,
    /// Values sent only with unknown outcome that the final read holds (they did apply).
    pub unknown_values_present: u64,
    pub polls: u64,
    pub polled_records: u64,
    /// Consumer sessions (runs of polls that continue from each other).
    pub sessions: u64,
    pub final_records: u64,
    /// Sum of the counts below.
    pub anomalies: u64,
    /// Values at two or more offsets.
    pub duplicates: u64,
    pub duplicate_examples: Vec<Duplicate>,
    /// Acknowledged values missing from the final read or at another offset.
    pub lost: u64,
    pub lost_examples: Vec<LostRecord>,
    /// Offsets with two or more values.
    pub inconsistent_offsets: u64,
    pub inconsistent_examples: Vec<InconsistentOffset>,
    /// Offsets a consumer received at or below one it had received before in its session.
    pub nonmonotonic_polls: u64,
    pub nonmonotonic_examples: Vec<NonMonotonicPoll>,
    /// Jumps of a consumer over offsets the final read holds.
    pub skipped_polls: u64,
    pub skipped_examples: Vec<SkippedPoll>,
    /// Values observed that no `ok` or `info` send wrote.
    pub unexpected_values: u64,
    pub unexpected_examples: Vec<UnexpectedValue>,
}

/// Checks a log history (see the module docs).
pub fn check_log(history: &LogHistory, config: &CheckConfig) -> Result<LogReport, LogHistoryError> {
    let ix = Indexed::new(history)?;
    let n = config.examples_len_max;
    let ops = ix.ops;
    let mut r = LogReport::default();
    let parts: BTreeSet<Part<'_>> =
        ix.sends.keys().chain(ix.polls.keys()).chain(ix.finals.keys()).copied().collect();
    r.partitions = parts.len() as u64;
    for part in parts {
        let (topic, partition) = part;
        let sends: Vec<&Send> = ix
            .sends
            .get(&part)
            .into_iter()
            .flatten()
            .filter_map(|&i| match &ops[i] {
                LogOp::Send(s) => Some(s),
                _ => None,
            })
            .collect();
        let send_indices: &[usize] = ix.sends.get(&part).map_or(&[], Vec::as_slice);
        let final_read = ix.finals.get(&part).and_then(|&i| match &ops[i] {
            LogOp::Final(f) => Some((i, f)),
            _ => None,
        });

        // Every observation of (offset, value), first source kept per pair.
        let mut observed: BTreeMap<(u64, &str), Observation> = BTreeMap::new();
        fn observe<'a>(
            observed: &mut BTreeMap<(u64, &'a str), Observation>,
            offset: u64,
            value: &'a str,
            source: Source,
            op: usize,
        ) {
            observed.entry((offset, value)).or_insert_with(|| Observation {
                offset,
                value: value.to_owned(),
                source,
                op,
            });
        }
        for (&i, s) in send_indices.iter().zip(&sends) {
            r.sends += 1;
            match s.result {
                OpResult::Ok => r.sends_ok += 1,
                OpResult::Fail => r.sends_failed += 1,
                OpResult::Info => r.sends_unknown += 1,
            }
            if let (OpResult::Ok, Some(offset)) = (s.result, s.offset) {
                observe(&mut observed, offset, &s.value, Source::Ack, i);
            }
        }
        let poll_indices: &[usize] = ix.polls.get(&part).map_or(&[], Vec::as_slice);
        for &i in poll_indices {
            if let LogOp::Poll(p) = &ops[i] {
                r.polls += 1;
                r.polled_records += p.records.len() as u64;
                for (offset, value) in &p.records {
                    observe(&mut observed, *offset, value, Source::Poll, i);
                }
            }
        }
        // The final read as a map; a second value at one offset is an inconsistency, counted
        // below through `observed`.
        let mut final_at: BTreeMap<u64, &str> = BTreeMap::new();
        let mut final_offsets_of: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
        let log_start = final_read.map_or(0, |(_, f)| f.log_start);
        if let Some((i, f)) = final_read {
            r.final_records += f.records.len() as u64;
            for (offset, value) in &f.records {
                observe(&mut observed, *offset, value, Source::Final, i);
                final_at.entry(*offset).or_insert(value);
                final_offsets_of.entry(value).or_default().insert(*offset);
            }
        }

        // Duplicates and inconsistent offsets, from the observations.
        let mut offsets_of: BTreeMap<&str, Vec<&Observation>> = BTreeMap::new();
        let mut values_at: BTreeMap<u64, Vec<&Observation>> = BTreeMap::new();
        for ((offset, value), obs) in &observed {
            offsets_of.entry(value).or_default().push(obs);
            values_at.entry(*offset).or_default().push(obs);
        }
        for (value, seen) in &offsets_of {
            if seen.len() > 1 {
                r.duplicates += 1;
                push_bounded(&mut r.duplicate_examples, n, || {
                    Some(Duplicate {
                        topic: topic.to_owned(),
                        partition,
                        value: (*value).to_owned(),
                        offsets: seen.iter().map(|o| o.offset).collect(),
                        seen: seen.iter().map(|o| (*o).clone()).collect(),
                    })
                });
            }
        }
        for (offset, seen) in &values_at {
            if seen.len() > 1 {
                r.inconsistent_offsets += 1;
                push_bounded(&mut r.inconsistent_examples, n, || {
                    Some(InconsistentOffset {
                        topic: topic.to_owned(),
                        partition,
                        offset: *offset,
                        seen: seen.iter().map(|o| (*o).clone()).collect(),
                    })
                });
            }
        }

        // Lost: each acknowledged value against the final read, at each acknowledged offset.
        // Outcomes per value: the strongest any of its sends got (a retried value is
        // acknowledged if any attempt was).
        let mut outcome: BTreeMap<&str, (bool, bool, bool)> = BTreeMap::new(); // (ok, info, fail)
        let mut acks: BTreeMap<&str, BTreeMap<u64, usize>> = BTreeMap::new();
        let mut failed_send: BTreeMap<&str, usize> = BTreeMap::new();
        for (&i, s) in send_indices.iter().zip(&sends) {
            let o = outcome.entry(&s.value).or_default();
            match s.result {
                OpResult::Ok => {
                    o.0 = true;
                    if let Some(offset) = s.offset {
                        acks.entry(&s.value).or_default().entry(offset).or_insert(i);
                    }
                }
                OpResult::Info => o.1 = true,
                OpResult::Fail => {
                    o.2 = true;
                    failed_send.entry(&s.value).or_insert(i);
                }
            }
        }
        for (value, at) in &acks {
            r.values_acknowledged += 1;
            let mut trimmed = false;
            let mut survived = true;
            for (&offset, &send) in at {
                if offset < log_start {
                    trimmed = true;
                    continue;
                }
                if final_at.get(&offset) == Some(value)
                    || final_offsets_of.get(value).is_some_and(|o| o.contains(&offset))
                {
                    continue;
                }
                survived = false;
                r.lost += 1;
                push_bounded(&mut r.lost_examples, n, || {
                    Some(LostRecord {
                        topic: topic.to_owned(),
                        partition,
                        value: (*value).to_owned(),
                        send,
                        acknowledged_offset: offset,
                        final_offsets: final_offsets_of
                            .get(value)
                            .map(|o| o.iter().copied().collect())
                            .unwrap_or_default(),
                        final_value_there: final_at.get(&offset).map(|v| (*v).to_owned()),
                    })
                });
            }
            if trimmed {
                r.values_trimmed += 1;
            } else if survived {
                r.values_survived += 1;
            }
        }
        r.unknown_values_present += outcome
            .iter()
            .filter(|(v, (ok, info, _))| !ok && *info && final_offsets_of.contains_key(*v))
            .count() as u64;

        // Unexpected: observed values without an `ok` or `info` send.
        for (value, seen) in &offsets_of {
            let possible = outcome.get(value).is_some_and(|(ok, info, _)| *ok || *info);
            if !possible {
                r.unexpected_values += 1;
                push_bounded(&mut r.unexpected_examples, n, || {
                    Some(UnexpectedValue {
                        topic: topic.to_owned(),
                        partition,
                        value: (*value).to_owned(),
                        seen: (*seen.first()?).clone(),
                        failed_send: failed_send.get(value).copied(),
                    })
                });
            }
        }

        // Consumer sessions: per process, polls in invoke order; a fresh poll (or the
        // process's first) starts a session.
        let mut by_process: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for &i in poll_indices {
            if let LogOp::Poll(p) = &ops[i] {
                by_process.entry(p.process).or_default().push(i);
            }
        }
        let final_offsets: Vec<u64> = final_at.keys().copied().filter(|&o| o >= log_start).collect();
        for (process, mut polls) in by_process {
            polls.sort_by_key(|&i| match &ops[i] {
                LogOp::Poll(p) => (p.invoke_ns, i),
                _ => (0, i),
            });
            let mut previous: Option<u64> = None;
            let mut in_session = false;
            for i in polls {
                let LogOp::Poll(p) = &ops[i] else { continue };
                if p.fresh || !in_session {
                    r.sessions += 1;
                    previous = None;
                    in_session = true;
                }
                for &(offset, _) in &p.records {
                    let Some(prev) = previous else {
                        previous = Some(offset);
                        continue;
                    };
                    if offset <= prev {
                        r.nonmonotonic_polls += 1;
                        push_bounded(&mut r.nonmonotonic_examples, n, || {
                            Some(NonMonotonicPoll {
                                topic: topic.to_owned(),
                                partition,
                                process,
                                poll: i,
                                previous_offset: prev,
                                offset,
                            })
                        });
                        // Judge what follows against the furthest point reached, so one
                        // backward jump is one anomaly, not one per record re-delivered.
                        continue;
                    }
                    let lo = final_offsets.partition_point(|&o| o <= prev);
                    let hi = final_offsets.partition_point(|&o| o < offset);
                    if hi > lo {
                        r.skipped_polls += 1;
                        push_bounded(&mut r.skipped_examples, n, || {
                            Some(SkippedPoll {
                                topic: topic.to_owned(),
                                partition,
                                process,
                                poll: i,
                                previous_offset: prev,
                                offset,
                                skipped: (hi - lo) as u64,
                                skipped_offsets: final_offsets[lo..hi]
                                    .iter()
                                    .take(SKIPPED_OFFSETS_QUOTED_MAX)
                                    .copied()
                                    .collect(),
                            })
                        });
                    }
                    previous = Some(offset);
                }
            }
        }
    }
    r.anomalies = r.duplicates
        + r.lost
        + r.inconsistent_offsets
        + r.nonmonotonic_polls
        + r.skipped_polls
        + r.unexpected_values;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: &str = "t";

    fn send(process: u32, value: &str, at: u64, result: OpResult, offset: Option<u64>) -> LogOp {
        LogOp::Send(Send {
            process,
            topic: T.into(),
            partition: 0,
            value: value.into(),
            invoke_ns: at,
            complete_ns: at + 1,
            result,
            offset,
            producer: None,
            error: None,
        })
    }

    fn ok(process: u32, value: &str, at: u64, offset: u64) -> LogOp {
        send(process, value, at, OpResult::Ok, Some(offset))
    }

    fn poll(process: u32, at: u64, fresh: bool, records: &[(u64, &str)]) -> LogOp {
        LogOp::Poll(Poll {
            process,
            topic: T.into(),
            partition: 0,
            invoke_ns: at,
            complete_ns: at + 1,
            from_offset: records.first().map_or(0, |r| r.0),
            fresh,
            records: records.iter().map(|(o, v)| (*o, (*v).to_owned())).collect(),
            error: None,
        })
    }

    fn fin(log_start: u64, records: &[(u64, &str)]) -> LogOp {
        LogOp::Final(FinalPartition {
            topic: T.into(),
            partition: 0,
            log_start,
            high_watermark: records.last().map_or(log_start, |r| r.0 + 1),
            records: records.iter().map(|(o, v)| (*o, (*v).to_owned())).collect(),
        })
    }

    fn check(ops: Vec<LogOp>) -> LogReport {
        check_log(&LogHistory::new(ops), &CheckConfig::default()).expect("a valid history")
    }

    /// A clean history (acks, polls in order, unknown sends that did and did not apply, a
    /// failed send that did not) has 0 anomalies and the expected counts.
    #[test]
    fn clean_history_has_no_anomalies() {
        let r = check(vec![
            ok(1, "a", 0, 0),
            send(1, "b", 10, OpResult::Info, None),
            ok(1, "c", 20, 2),
            send(1, "d", 30, OpResult::Info, None),
            send(1, "e", 40, OpResult::Fail, None),
            poll(9, 5, true, &[(0, "a")]),
            poll(9, 25, false, &[(1, "b"), (2, "c")]),
            fin(0, &[(0, "a"), (1, "b"), (2, "c")]),
        ]);
        assert_eq!(r.anomalies, 0, "{r:#?}");
        assert_eq!((r.sends, r.sends_ok, r.sends_unknown, r.sends_failed), (5, 2, 2, 1));
        assert_eq!((r.values_acknowledged, r.values_survived, r.unknown_values_present), (2, 2, 1));
        assert_eq!((r.polls, r.polled_records, r.sessions, r.final_records), (2, 3, 1, 3));
    }

    /// One value at two offsets (a retry appended twice) is a duplicate.
    #[test]
    fn finds_duplicates() {
        let r = check(vec![
            send(1, "a", 0, OpResult::Info, None),
            ok(1, "a", 10, 1),
            fin(0, &[(0, "a"), (1, "a")]),
        ]);
        assert_eq!((r.duplicates, r.anomalies), (1, 1), "{r:#?}");
        assert_eq!(r.duplicate_examples[0].offsets, vec![0, 1]);
    }

    /// An acknowledged value absent from the final read, and one found at another offset than
    /// acknowledged, are both lost; values trimmed by retention are not.
    #[test]
    fn finds_lost_writes() {
        let r = check(vec![
            ok(1, "a", 0, 0),
            ok(1, "b", 10, 1),
            ok(1, "c", 20, 2),
            ok(2, "x", 30, 3),
            fin(1, &[(1, "b"), (3, "x"), (4, "c")]),
        ]);
        // "a" is below the log start: trimmed. "c" was acked at 2 and sits at 4: lost, and
        // also a duplicate (acked at 2, read at 4).
        assert_eq!((r.lost, r.values_trimmed, r.values_survived), (1, 1, 2), "{r:#?}");
        assert_eq!(r.lost_examples[0].value, "c");
        assert_eq!(r.lost_examples[0].final_offsets, vec![4]);
        let r = check(vec![ok(1, "a", 0, 0), ok(1, "b", 10, 1), fin(0, &[(0, "a")])]);
        assert_eq!((r.lost, r.anomalies), (1, 1), "{r:#?}");
        assert_eq!(r.lost_examples[0].final_offsets, Vec::<u64>::new());
    }

    /// Two values observed at one offset (a poll and the final read disagree) is an
    /// inconsistent offset.
    #[test]
    fn finds_inconsistent_offsets() {
        let r = check(vec![
            send(1, "a", 0, OpResult::Info, None),
            send(1, "b", 10, OpResult::Info, None),
            poll(9, 20, true, &[(0, "a")]),
            fin(0, &[(0, "b")]),
        ]);
        assert_eq!((r.inconsistent_offsets, r.anomalies), (1, 1), "{r:#?}");
        let e = &r.inconsistent_examples[0];
        assert_eq!(
            e.seen.iter().map(|o| (o.value.as_str(), o.source)).collect::<Vec<_>>(),
            [("a", Source::Poll), ("b", Source::Final)]
        );
    }

    /// A consumer receiving an offset below one it already had, within a session, is a
    /// non-monotonic poll; the same after a fresh start is not.
    #[test]
    fn finds_nonmonotonic_polls() {
        let log = [(0, "a"), (1, "b"), (2, "c")];
        let sends = || vec![ok(1, "a", 0, 0), ok(1, "b", 1, 1), ok(1, "c", 2, 2)];
        let mut ops = sends();
        ops.extend([poll(9, 10, true, &log[..2]), poll(9, 20, false, &log[1..]), fin(0, &log)]);
        let r = check(ops);
        assert_eq!((r.nonmonotonic_polls, r.anomalies), (1, 1), "{r:#?}");
        assert_eq!((r.nonmonotonic_examples[0].previous_offset, r.nonmonotonic_examples[0].offset), (1, 1));
        let mut ops = sends();
        ops.extend([poll(9, 10, true, &log[..2]), poll(9, 20, true, &log), fin(0, &log)]);
        assert_eq!(check(ops).anomalies, 0);
    }

    /// A consumer jumping over an offset the final read holds is a skipped poll, within one
    /// poll or across polls; a jump over trimmed offsets is not.
    #[test]
    fn finds_skipped_polls() {
        let log = [(0, "a"), (1, "b"), (2, "c"), (3, "d")];
        let mut ops: Vec<LogOp> = log.iter().map(|(o, v)| ok(1, v, *o * 10, *o)).collect();
        ops.extend([
            poll(9, 100, true, &[(0, "a")]),
            poll(9, 110, false, &[(2, "c"), (3, "d")]),
            fin(0, &log),
        ]);
        let r = check(ops);
        assert_eq!((r.skipped_polls, r.anomalies), (1, 1), "{r:#?}");
        assert_eq!(r.skipped_examples[0].skipped_offsets, vec![1]);
        let mut ops: Vec<LogOp> = log.iter().map(|(o, v)| ok(1, v, *o * 10, *o)).collect();
        ops.extend([poll(9, 100, true, &[(0, "a"), (3, "d")]), fin(0, &log)]);
        assert_eq!(check(ops).skipped_polls, 1);
        // Offsets 1 and 2 were trimmed away: jumping over them is what a lagging consumer does.
        let mut ops: Vec<LogOp> = log.iter().map(|(o, v)| ok(1, v, *o * 10, *o)).collect();
        ops.extend([poll(9, 100, true, &[(0, "a"), (3, "d")]), fin(3, &log[3..])]);
        let r = check(ops);
        assert_eq!((r.anomalies, r.values_trimmed), (0, 3), "{r:#?}");
    }

    /// A value nobody sent, and one whose only send definitely failed, are unexpected.
    #[test]
    fn finds_unexpected_values() {
        let r = check(vec![
            ok(1, "a", 0, 0),
            send(1, "f", 10, OpResult::Fail, None),
            poll(9, 20, true, &[(0, "a"), (1, "zz")]),
            fin(0, &[(0, "a"), (1, "zz"), (2, "f")]),
        ]);
        assert_eq!((r.unexpected_values, r.anomalies), (2, 2), "{r:#?}");
        let failed: Vec<Option<usize>> = r.unexpected_examples.iter().map(|u| u.failed_send).collect();
        assert_eq!(failed, vec![Some(1), None]);
    }

    /// Example lists are bounded by `examples_len_max` while the counts stay exact.
    #[test]
    fn examples_are_bounded() {
        let mut ops: Vec<LogOp> = (0..30).map(|i| ok(1, &format!("v{i}"), i, i)).collect();
        ops.push(fin(0, &[]));
        let config = CheckConfig { examples_len_max: 3, ..CheckConfig::default() };
        let r = check_log(&LogHistory::new(ops), &config).unwrap();
        assert_eq!((r.lost, r.lost_examples.len()), (30, 3));
    }

    /// Histories the checker cannot judge are refused with a typed error, never a panic.
    #[test]
    fn invalid_histories_are_refused() {
        let err = |ops: Vec<LogOp>| check_log(&LogHistory::new(ops), &CheckConfig::default()).unwrap_err();
        assert!(matches!(
            err(vec![send(1, "a", 0, OpResult::Ok, None)]),
            LogHistoryError::AckWithoutOffset { index: 0 }
        ));
        assert!(matches!(err(vec![ok(1, "a", 0, 0)]), LogHistoryError::MissingFinal { partition: 0, .. }));
        assert!(matches!(
            err(vec![ok(1, "a", 0, 0), ok(2, "a", 10, 1), fin(0, &[])]),
            LogHistoryError::ValueSentTwice { first: 0, second: 1, .. }
        ));
        assert!(matches!(
            err(vec![ok(1, "a", 0, 0), ok(1, "b", 0, 1), fin(0, &[])]),
            LogHistoryError::OverlappingOps { process: 1, .. }
        ));
        assert!(matches!(err(vec![fin(0, &[]), fin(0, &[])]), LogHistoryError::DuplicateFinal { .. }));
        let mut bad = send(1, "a", 10, OpResult::Info, None);
        if let LogOp::Send(s) = &mut bad {
            s.complete_ns = 5;
        }
        assert!(matches!(err(vec![bad]), LogHistoryError::CompleteBeforeInvoke { index: 0, .. }));
        let mut f = fin(0, &[]);
        if let LogOp::Final(f) = &mut f {
            f.log_start = 5;
        }
        assert!(matches!(err(vec![f]), LogHistoryError::FinalBounds { .. }));
    }

    /// JSONL round-trips, tags ops by `type`, refuses unknown fields with the line number and
    /// overlong lines without buffering them.
    #[test]
    fn jsonl_round_trip_and_limits() {
        let h = LogHistory::new(vec![ok(1, "a", 0, 0), poll(9, 5, true, &[(0, "a")]), fin(0, &[(0, "a")])]);
        let mut bytes = Vec::new();
        h.write_jsonl(&mut bytes).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.lines().next().unwrap().starts_with(r#"{"type":"send""#), "{text}");
        assert_eq!(LogHistory::read_jsonl(bytes.as_slice()).unwrap(), h);
        let typo = text.replacen("\"value\"", "\"valeu\":1,\"value\"", 1);
        let e = LogHistory::read_jsonl(format!("\n{typo}").as_bytes()).unwrap_err();
        assert!(matches!(e, LogHistoryError::Decode { line: 2, .. }), "{e}");
        let long = vec![b' '; OP_LINE_BYTES_MAX + 10];
        assert!(matches!(
            LogHistory::read_jsonl(long.as_slice()).unwrap_err(),
            LogHistoryError::LineTooLong { line: 1, .. }
        ));
    }

    /// A correct log model: producers append to dense partitions (some unknown outcomes that
    /// applied or not, some definite failures, idempotent retries that keep their offset),
    /// consumers poll forward from positions (restarting fresh at random), retention trims a
    /// prefix. Its history must always pass.
    fn model_history(steps: Vec<(u8, u8, u8)>, trim: u8) -> LogHistory {
        let partitions = 3usize;
        let mut logs: Vec<Vec<String>> = vec![Vec::new(); partitions];
        let mut positions = [[0usize; 3]; 2]; // per consumer, per partition
        let mut ops = Vec::new();
        let mut now = 0u64;
        let mut next_value = 0u64;
        for (kind, a, b) in steps {
            now += 10;
            let part = usize::from(a) % partitions;
            let producer = u32::from(b % 3);
            let topic = T.to_owned();
            let mut push_send = |value: &str, result: OpResult, offset: Option<u64>, now: u64| {
                ops.push(LogOp::Send(Send {
                    process: producer,
                    topic: topic.clone(),
                    partition: part as u32,
                    value: value.to_owned(),
                    invoke_ns: now,
                    complete_ns: now + 5,
                    result,
                    offset,
                    producer: None,
                    error: None,
                }));
            };
            match kind % 6 {
                0 | 1 => {
                    let v = format!("p{producer}-{next_value}");
                    next_value += 1;
                    logs[part].push(v.clone());
                    push_send(&v, OpResult::Ok, Some((logs[part].len() - 1) as u64), now);
                }
                2 => {
                    // Unknown outcome; applied half the time; an idempotent retry that is
                    // acknowledged gets the original offset back.
                    let v = format!("p{producer}-{next_value}");
                    next_value += 1;
                    push_send(&v, OpResult::Info, None, now);
                    if b % 2 == 0 {
                        logs[part].push(v.clone());
                        if b % 4 == 0 {
                            push_send(&v, OpResult::Ok, Some((logs[part].len() - 1) as u64), now + 5);
                        }
                    }
                }
                3 => {
                    let v = format!("p{producer}-{next_value}");
                    next_value += 1;
                    push_send(&v, OpResult::Fail, None, now);
                }
                _ => {
                    let consumer = usize::from(b % 2);
                    let fresh = a % 7 == 0;
                    if fresh {
                        positions[consumer][part] = usize::from(b) % (logs[part].len() + 1);
                    }
                    let from = positions[consumer][part];
                    let to = (from + usize::from(b % 4)).min(logs[part].len());
                    let records: Vec<(u64, String)> =
                        (from..to).map(|o| (o as u64, logs[part][o].clone())).collect();
                    positions[consumer][part] = to;
                    ops.push(LogOp::Poll(Poll {
                        process: 100 + consumer as u32,
                        topic: T.to_owned(),
                        partition: part as u32,
                        invoke_ns: now,
                        complete_ns: now + 5,
                        from_offset: from as u64,
                        fresh,
                        records,
                        error: None,
                    }));
                }
            }
            now += 5;
        }
        for (p, log) in logs.iter().enumerate() {
            let log_start = (usize::from(trim) % (log.len() + 1)) as u64;
            ops.push(LogOp::Final(FinalPartition {
                topic: T.into(),
                partition: p as u32,
                log_start,
                high_watermark: log.len() as u64,
                records: log
                    .iter()
                    .enumerate()
                    .skip(log_start as usize)
                    .map(|(o, v)| (o as u64, v.clone()))
                    .collect(),
            }));
        }
        LogHistory::new(ops)
    }

    proptest! {
        /// Any history of the correct log model passes with 0 anomalies, and every acknowledged
        /// value is accounted for as survived or trimmed.
        #[test]
        fn correct_log_model_always_passes(
            steps in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 0..200),
            trim in any::<u8>(),
        ) {
            let h = model_history(steps, trim);
            let r = check_log(&h, &CheckConfig::default()).expect("valid");
            prop_assert_eq!(r.anomalies, 0, "{:#?}", r);
            prop_assert_eq!(r.values_survived + r.values_trimmed, r.values_acknowledged);
        }
    }
}
