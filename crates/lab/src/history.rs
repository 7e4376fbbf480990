//! Recorded histories: what clients asked, when, and what they were told.
//!
//! A history is the lab's only evidence. Every checker in [`crate::checker`] works from it alone
//! (plus, for lost writes, one final read per key), never from the servers' internals, so the
//! same checkers judge a real multi-process cluster, the simulator, and hand-written cases.
//!
//! The on-disk form is JSON Lines (`history.jsonl`): one [`Op`] per line, in any order (checkers
//! order by time themselves). Times are nanoseconds of one monotonic clock, relative to the start
//! of the history, taken by the client just before sending the request (`invoke_ns`) and just
//! after the answer or the give-up (`complete_ns`). The interval `[invoke_ns, complete_ns]`
//! therefore contains the instant at which the operation took effect, if it did.
//!
//! Outcomes follow Jepsen's convention: `ok` definitely happened, `fail` definitely did not,
//! `info` is unknown (a timeout, a lost connection, a quorum failure that may still have been
//! applied on some replicas). A driver must only record `fail` when it is *sure* the write was
//! applied nowhere (e.g. a 400 refused before any replica saw it); QuorumDB's 503 and 504 are
//! `info` (see the README's guarantees table).
//!
//! ## Causality tokens and "R saw W"
//!
//! Reads and writes return the item's causal context as an opaque token
//! ([`VersionVector::to_token`]). A write's returned context is the coordinating replica's
//! context right after [`quorumdb_core::causality::ItemState::update`]: its previous context,
//! joined with the client's token, plus the write's new dot `d`. Call it `C(W)`.
//!
//! *Claim:* a read `R` saw `W` (its state holds `W`'s value or something that superseded it
//! knowingly) exactly when `R.context_out` descends `C(W)`.
//!
//! - If `R.context_out ⊒ C(W)` then `R`'s context covers `d`, so `R`'s state has seen `W`.
//! - Conversely, every state that covers `d` has a context `⊒ C(W)`: `d` is minted only by `W`'s
//!   update, whose result has context exactly `C(W)`; after that, `d` reaches other states only
//!   through merges (replication, read repair, hinted handoff, anti-entropy) and through client
//!   tokens that were themselves read from such states; merges take pointwise maxima and updates
//!   only grow the context, so by induction on the order in which states are produced every
//!   state covering `d` descends `C(W)`.
//!
//! The argument assumes what the core guarantees: honest tokens, contexts that are never pruned,
//! and a write reply that carries the coordinator's post-update context (not a join of several
//! replicas' contexts, which could be larger than `C(W)` and would make reads that saw `W` look
//! as if they had not). Checkers therefore compare tokens and never need dots.
//!
//! ## Validation
//!
//! [`History::validate`] refuses histories the checkers cannot judge soundly: an op completing
//! before it was invoked, two ops of one process outstanding at once, a write without a value,
//! two writes of the same value (values are the only way a read or final state names a write),
//! a malformed token, or an acknowledged op without the context the checkers need. Each is a
//! typed [`HistoryError`] naming the op's index (its 0-based line in the JSONL file).

use quorumdb_core::causality::{CausalityError, VersionVector};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use thiserror::Error;

/// Longest JSONL line [`History::read_jsonl`] accepts, in bytes. A lab op with a handful of
/// short values and tokens of at most `CONTEXT_TOKEN_CHARS_MAX` (4 KiB) characters is well under
/// 100 KiB; 16 MiB still admits a read returning a full-size 1 MiB value escaped six-fold, while
/// a corrupt file without newlines cannot make the reader buffer it whole.
pub const OP_LINE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Most ops one history may hold. The longest lab scenario records about 100,000 ops; this is
/// 20 times that, and at a few hundred bytes per op in memory it caps a history near 1 GB.
pub const HISTORY_OPS_LEN_MAX: usize = 2_000_000;

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Read,
    Write,
    Delete,
}

/// How an operation ended, from the client's point of view (Jepsen's `:ok`, `:fail`, `:info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpResult {
    /// Definitely happened: the client got a success answer.
    Ok,
    /// Definitely did not happen anywhere. Checkers drop these ops.
    Fail,
    /// Unknown outcome (timeout, connection lost, quorum failure): it may have taken effect at
    /// any time after `invoke_ns` — even after `complete_ns` — or never.
    Info,
}

/// One client operation, one line of `history.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    /// Client id. A process runs one op at a time, so its ops never overlap in time.
    pub process: u32,
    pub kind: OpKind,
    pub table: String,
    pub key: String,
    /// The value written (writes only). Lab workloads make every written value unique, which is
    /// how a read's or the final state's values name the write that produced them.
    #[serde(default)]
    pub value: Option<String>,
    /// The values a read returned: its siblings; empty means "not found".
    #[serde(default)]
    pub values: Vec<String>,
    /// When the client sent the request, in ns since the history started (monotonic clock).
    pub invoke_ns: u64,
    /// When the client got the answer or gave up, same clock; `complete_ns >= invoke_ns`.
    pub complete_ns: u64,
    pub result: OpResult,
    /// Causality token sent with a write or delete; `None` is a blind write.
    #[serde(default)]
    pub context_in: Option<String>,
    /// Token returned: for reads the read's context, for writes and deletes the new context.
    /// Required on `ok` ops.
    #[serde(default)]
    pub context_out: Option<String>,
    /// Label of the consistency setting in force, e.g. `"r2w2"` (checkers group by it).
    #[serde(default)]
    pub setting: Option<String>,
    /// Label of the scenario phase, e.g. `"zone-down"` (checkers group by it).
    #[serde(default)]
    pub phase: Option<String>,
    /// The error the client saw, for `fail` and `info` ops.
    #[serde(default)]
    pub error: Option<String>,
}

/// A whole recorded history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
}

/// The converged state of one key, from a read at `r = all` after the faults were healed and
/// replicas had time to converge. The lost-writes checker compares the history against it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalItem {
    pub table: String,
    pub key: String,
    /// The live values (siblings); empty when the key is absent or deleted.
    pub values: Vec<String>,
    /// The final read's causality token.
    #[serde(default)]
    pub context: Option<String>,
}

/// The final state of every key the history touched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    pub items: Vec<FinalItem>,
}

impl FinalState {
    /// Appends the final read of one key.
    pub fn push(
        &mut self,
        table: impl Into<String>,
        key: impl Into<String>,
        values: Vec<String>,
        context: Option<String>,
    ) {
        self.items.push(FinalItem { table: table.into(), key: key.into(), values, context });
    }
}

/// Which token field of an op an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenField {
    ContextIn,
    ContextOut,
}

impl std::fmt::Display for TokenField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenField::ContextIn => "context_in",
            TokenField::ContextOut => "context_out",
        })
    }
}

/// Why a history could not be read, written or accepted. Op indices are 0-based positions in
/// [`History::ops`], which are also the 0-based line numbers of ops in the JSONL file when it
/// has no blank lines; `line` fields are 1-based file lines.
#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("cannot read or write the history: {0}")]
    Io(#[from] std::io::Error),
    #[error("history line {line}: not a valid op: {source}")]
    Decode {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode op {index}: {source}")]
    Encode {
        index: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("history line {line} is longer than {bytes_max} bytes")]
    LineTooLong { line: usize, bytes_max: usize },
    #[error("history has more than {ops_len_max} ops")]
    TooManyOps { ops_len_max: usize },
    #[error("op {index}: completes at {complete_ns} ns, before it was invoked at {invoke_ns} ns")]
    CompleteBeforeInvoke { index: usize, invoke_ns: u64, complete_ns: u64 },
    #[error(
        "process {process} has two ops outstanding at once: op {second} was invoked before op \
         {first} completed"
    )]
    OverlappingOps { process: u32, first: usize, second: usize },
    #[error("op {index} is a write without a value")]
    WriteWithoutValue { index: usize },
    #[error(
        "ops {first} and {second} both write {value:?} to one key; written values must be unique \
         so that reads name the write they saw"
    )]
    DuplicateWriteValue { value: String, first: usize, second: usize },
    #[error("op {index} is ok but has no {field}, which the checkers need")]
    MissingContext { index: usize, field: TokenField },
    #[error("op {index}: {field} is not a valid causality token: {source}")]
    MalformedToken {
        index: usize,
        field: TokenField,
        #[source]
        source: CausalityError,
    },
}

/// How reading or writing a JSON Lines history failed; each history format maps it into its
/// own error type.
#[derive(Debug)]
pub(crate) enum JsonlError {
    Io(std::io::Error),
    Decode { line: usize, source: serde_json::Error },
    Encode { index: usize, source: serde_json::Error },
    LineTooLong { line: usize },
    TooManyOps,
}

impl From<std::io::Error> for JsonlError {
    fn from(e: std::io::Error) -> Self {
        JsonlError::Io(e)
    }
}

impl From<JsonlError> for HistoryError {
    fn from(e: JsonlError) -> Self {
        match e {
            JsonlError::Io(e) => HistoryError::Io(e),
            JsonlError::Decode { line, source } => HistoryError::Decode { line, source },
            JsonlError::Encode { index, source } => HistoryError::Encode { index, source },
            JsonlError::LineTooLong { line } => {
                HistoryError::LineTooLong { line, bytes_max: OP_LINE_BYTES_MAX }
            }
            JsonlError::TooManyOps => HistoryError::TooManyOps { ops_len_max: HISTORY_OPS_LEN_MAX },
        }
    }
}

/// Reads JSON Lines of `T`: one per line, blank lines ignored, stopping at the first bad line
/// with its 1-based number; at most [`OP_LINE_BYTES_MAX`] per line and [`HISTORY_OPS_LEN_MAX`]
/// lines.
pub(crate) fn read_jsonl_ops<T: serde::de::DeserializeOwned, R: Read>(
    reader: R,
) -> Result<Vec<T>, JsonlError> {
    let mut reader = BufReader::new(reader);
    let mut ops = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        line += 1;
        // Read at most one byte past the limit, so an overlong line is detected without
        // buffering the rest of it.
        let limit = (OP_LINE_BYTES_MAX + 1) as u64;
        let n = reader.by_ref().take(limit).read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if content.len() > OP_LINE_BYTES_MAX || (buf.last() != Some(&b'\n') && n as u64 == limit) {
            return Err(JsonlError::LineTooLong { line });
        }
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if ops.len() >= HISTORY_OPS_LEN_MAX {
            return Err(JsonlError::TooManyOps);
        }
        ops.push(serde_json::from_slice(content).map_err(|source| JsonlError::Decode { line, source })?);
    }
    Ok(ops)
}

/// Writes JSON Lines, one `T` per line, in order.
pub(crate) fn write_jsonl_ops<T: Serialize, W: Write>(ops: &[T], writer: W) -> Result<(), JsonlError> {
    let mut writer = std::io::BufWriter::new(writer);
    for (index, op) in ops.iter().enumerate() {
        serde_json::to_writer(&mut writer, op).map_err(|source| JsonlError::Encode { index, source })?;
        writer.write_all(b"\n")?;
    }
    writer.flush()?;
    Ok(())
}

impl History {
    pub fn new(ops: Vec<Op>) -> Self {
        Self { ops }
    }

    /// Reads JSON Lines: one op per line, blank lines ignored. Stops at the first bad line with
    /// its 1-based number. Bounded by [`OP_LINE_BYTES_MAX`] and [`HISTORY_OPS_LEN_MAX`].
    /// Does not validate; call [`History::validate`] (the checkers do).
    pub fn read_jsonl<R: Read>(reader: R) -> Result<History, HistoryError> {
        Ok(History { ops: read_jsonl_ops(reader)? })
    }

    /// Writes JSON Lines, one op per line, in `ops` order.
    pub fn write_jsonl<W: Write>(&self, writer: W) -> Result<(), HistoryError> {
        Ok(write_jsonl_ops(&self.ops, writer)?)
    }

    /// Checks everything the checkers rely on (see the module docs), decoding every token.
    pub fn validate(&self) -> Result<(), HistoryError> {
        Decoded::new(self).map(|_| ())
    }
}

/// A validated history with every token decoded once. Shared by the checkers.
pub(crate) struct Decoded<'h> {
    pub ops: &'h [Op],
    /// `context_in` of each op, decoded.
    pub context_in: Vec<Option<VersionVector>>,
    /// `context_out` of each op, decoded.
    pub context_out: Vec<Option<VersionVector>>,
    /// Op indices per `(table, key)`, in history order.
    pub keys: BTreeMap<(&'h str, &'h str), Vec<usize>>,
}

impl<'h> Decoded<'h> {
    pub fn new(history: &'h History) -> Result<Decoded<'h>, HistoryError> {
        let ops = history.ops.as_slice();
        if ops.len() > HISTORY_OPS_LEN_MAX {
            return Err(HistoryError::TooManyOps { ops_len_max: HISTORY_OPS_LEN_MAX });
        }
        let mut context_in = Vec::with_capacity(ops.len());
        let mut context_out = Vec::with_capacity(ops.len());
        let mut keys: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        let mut written: HashMap<(&str, &str, &str), usize> = HashMap::new();
        let mut per_process: HashMap<u32, Vec<usize>> = HashMap::new();
        for (index, op) in ops.iter().enumerate() {
            if op.complete_ns < op.invoke_ns {
                return Err(HistoryError::CompleteBeforeInvoke {
                    index,
                    invoke_ns: op.invoke_ns,
                    complete_ns: op.complete_ns,
                });
            }
            if op.kind == OpKind::Write {
                let Some(value) = op.value.as_deref() else {
                    return Err(HistoryError::WriteWithoutValue { index });
                };
                if let Some(&first) = written.get(&(op.table.as_str(), op.key.as_str(), value)) {
                    return Err(HistoryError::DuplicateWriteValue {
                        value: value.to_owned(),
                        first,
                        second: index,
                    });
                }
                written.insert((op.table.as_str(), op.key.as_str(), value), index);
            }
            if op.result == OpResult::Ok && op.context_out.is_none() {
                return Err(HistoryError::MissingContext { index, field: TokenField::ContextOut });
            }
            context_in.push(decode(index, TokenField::ContextIn, op.context_in.as_deref())?);
            context_out.push(decode(index, TokenField::ContextOut, op.context_out.as_deref())?);
            keys.entry((op.table.as_str(), op.key.as_str())).or_default().push(index);
            per_process.entry(op.process).or_default().push(index);
        }
        for (process, mut indices) in per_process {
            indices.sort_by_key(|&i| (ops[i].invoke_ns, ops[i].complete_ns, i));
            for pair in indices.windows(2) {
                let (first, second) = (pair[0], pair[1]);
                if ops[second].invoke_ns < ops[first].complete_ns {
                    return Err(HistoryError::OverlappingOps { process, first, second });
                }
            }
        }
        Ok(Decoded { ops, context_in, context_out, keys })
    }
}

fn decode(
    index: usize,
    field: TokenField,
    token: Option<&str>,
) -> Result<Option<VersionVector>, HistoryError> {
    token.map(VersionVector::from_recorded_token).transpose().map_err(|source| HistoryError::MalformedToken {
        index,
        field,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: u32, invoke_ns: u64, complete_ns: u64) -> Op {
        Op {
            process,
            kind: OpKind::Read,
            table: "t".into(),
            key: "k".into(),
            value: None,
            values: vec![],
            invoke_ns,
            complete_ns,
            result: OpResult::Ok,
            context_in: None,
            context_out: Some(VersionVector::new().to_token()),
            setting: None,
            phase: None,
            error: None,
        }
    }

    /// Writing a history as JSONL and reading it back yields the same ops.
    #[test]
    fn jsonl_round_trip() {
        let mut w = op(2, 5, 9);
        w.kind = OpKind::Write;
        w.value = Some("v1".into());
        w.result = OpResult::Info;
        w.context_out = None;
        w.error = Some("timeout".into());
        let history = History::new(vec![op(1, 0, 10), w]);
        let mut bytes = Vec::new();
        history.write_jsonl(&mut bytes).unwrap();
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 2);
        let back = History::read_jsonl(bytes.as_slice()).unwrap();
        assert_eq!(back, history);
        back.validate().unwrap();
    }

    /// Optional fields may be omitted, enum values are snake_case, and unknown fields are refused.
    #[test]
    fn jsonl_field_rules() {
        let line = r#"{"process":1,"kind":"delete","table":"t","key":"k","invoke_ns":1,"complete_ns":2,"result":"fail"}"#;
        let h = History::read_jsonl(format!("\n{line}\r\n\n").as_bytes()).unwrap();
        assert_eq!(h.ops.len(), 1);
        assert_eq!(h.ops[0].kind, OpKind::Delete);
        assert_eq!(h.ops[0].result, OpResult::Fail);
        let typo = line.replace("\"result\"", "\"resutl\":\"ok\",\"result\"");
        let err = History::read_jsonl(format!("{line}\n{typo}\n").as_bytes()).unwrap_err();
        assert!(matches!(err, HistoryError::Decode { line: 2, .. }), "{err}");
    }

    /// A line longer than the limit is refused with its line number instead of being buffered.
    #[test]
    fn overlong_line_is_refused() {
        let long = vec![b' '; OP_LINE_BYTES_MAX + 10];
        let err = History::read_jsonl(long.as_slice()).unwrap_err();
        assert!(matches!(err, HistoryError::LineTooLong { line: 1, .. }), "{err}");
    }

    /// Each structural problem is reported as its own typed error, not a panic.
    #[test]
    fn validation_errors() {
        let h = History::new(vec![op(1, 10, 5)]);
        assert!(matches!(h.validate(), Err(HistoryError::CompleteBeforeInvoke { index: 0, .. })));

        let h = History::new(vec![op(1, 0, 10), op(2, 0, 10), op(1, 9, 12)]);
        assert!(matches!(
            h.validate(),
            Err(HistoryError::OverlappingOps { process: 1, first: 0, second: 2 })
        ));
        // Back to back (the next invoked at the instant the previous completed) is fine.
        History::new(vec![op(1, 0, 10), op(1, 10, 12)]).validate().unwrap();

        let mut w = op(1, 0, 1);
        w.kind = OpKind::Write;
        assert!(matches!(
            History::new(vec![w.clone()]).validate(),
            Err(HistoryError::WriteWithoutValue { index: 0 })
        ));
        w.value = Some("x".into());
        let mut w2 = w.clone();
        w2.process = 2;
        assert!(matches!(
            History::new(vec![w.clone(), w2]).validate(),
            Err(HistoryError::DuplicateWriteValue { first: 0, second: 1, .. })
        ));

        let mut r = op(1, 0, 1);
        r.context_out = None;
        assert!(matches!(
            History::new(vec![r.clone()]).validate(),
            Err(HistoryError::MissingContext { index: 0, field: TokenField::ContextOut })
        ));
        r.context_out = Some("not a token!".into());
        assert!(matches!(
            History::new(vec![r.clone()]).validate(),
            Err(HistoryError::MalformedToken { index: 0, field: TokenField::ContextOut, .. })
        ));
        r.context_out = Some(VersionVector::new().to_token());
        r.context_in = Some(String::new());
        assert!(matches!(
            History::new(vec![r]).validate(),
            Err(HistoryError::MalformedToken { index: 0, field: TokenField::ContextIn, .. })
        ));
    }
}
