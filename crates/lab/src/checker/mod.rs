//! Consistency checkers: each reads a [`History`] and returns a serializable report with counts
//! and a bounded list of counterexamples.
//!
//! | checker | question | needs |
//! |---|---|---|
//! | [`lost_writes`] | Did an acknowledged write vanish without anybody superseding it? | final state |
//! | [`linearizability`] | Is each key, taken alone, a linearizable register? | history |
//! | [`staleness`] | How often does a read miss a write acknowledged before it started, by Δt? | history |
//! | [`sessions`] | Does each client read its own writes, and are its reads monotonic? | history |
//! | [`log`] | Does a partitioned log keep every acknowledged record once, at its offset, and do consumers see it in order without gaps? (Jepsen's Kafka anomalies) | [`log::LogHistory`] with final reads |
//!
//! They answer different questions on purpose. Jepsen's lesson is that "consistent" means
//! nothing until you say which property; a Dynamo-style store with `r + w ≤ N` is *expected* to
//! fail linearizability and read-your-writes and must still never lose an acknowledged write.
//! The reports therefore keep each property separate, and staleness and sessions break their
//! counts down by the `setting` and `phase` labels the scenario driver records on each read.
//!
//! The log checker judges its own history type ([`log::LogHistory`]: sends, polls and final
//! partition reads), not key-value [`History`]s, and is not part of [`check_all`].
//!
//! Every checker validates the history first ([`History::validate`]) and returns a typed
//! [`CheckError`] for anything it cannot judge; no input makes a checker panic. Reports are
//! deterministic (no timings, sorted keys), so they can be compared and kept as golden files.

pub mod linearizability;
pub mod log;
pub mod lost_writes;
pub mod sessions;
pub mod staleness;

use crate::history::{Decoded, FinalState, History, HistoryError, Op};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use linearizability::{check_linearizability, LinearizabilityReport};
pub use log::{check_log, LogHistory, LogHistoryError, LogReport};
pub use lost_writes::{check_lost_writes, LostWritesReport};
pub use sessions::{check_sessions, SessionsReport};
pub use staleness::{check_staleness, StalenessReport};

/// How many counterexamples each list in a report holds by default. Ten is enough to see a
/// pattern and keeps a report of a million-op history readable.
pub const EXAMPLES_LEN_DEFAULT: usize = 10;

/// Default [`LinearizabilityLimits::steps_max`] per key: a linearizable 1,000-op key needs a few
/// thousand search steps, so 5 million leaves three orders of magnitude of slack for real
/// concurrency while bounding a hopeless search to seconds (about 1 µs per step in release).
pub const LINEARIZABILITY_STEPS_DEFAULT: u64 = 5_000_000;

/// Default [`LinearizabilityLimits::cache_bytes_max`] per key. The search memoizes every
/// configuration it visits; 512 MiB keeps the lab well inside an 8 GB machine even with both
/// cores checking at once.
pub const LINEARIZABILITY_CACHE_BYTES_DEFAULT: u64 = 512 * 1024 * 1024;

/// Budgets of the linearizability search, per key. Running out yields `unknown`, never a hang.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearizabilityLimits {
    /// Search steps (one attempt to linearize or backtrack one op) before giving up.
    pub steps_max: u64,
    /// Estimated bytes of memoized configurations before giving up.
    pub cache_bytes_max: u64,
}

impl Default for LinearizabilityLimits {
    fn default() -> Self {
        Self {
            steps_max: LINEARIZABILITY_STEPS_DEFAULT,
            cache_bytes_max: LINEARIZABILITY_CACHE_BYTES_DEFAULT,
        }
    }
}

/// Knobs shared by all checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckConfig {
    /// Longest list of counterexamples in any report.
    pub examples_len_max: usize,
    pub linearizability: LinearizabilityLimits,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self { examples_len_max: EXAMPLES_LEN_DEFAULT, linearizability: LinearizabilityLimits::default() }
    }
}

/// Why a check could not be carried out.
#[derive(Debug, Error)]
pub enum CheckError {
    #[error("invalid history: {0}")]
    History(#[from] HistoryError),
    #[error(
        "the final state has no entry for table {table:?} key {key:?}, which the history \
         writes; read every written key at r=all after convergence"
    )]
    MissingFinalItem { table: String, key: String },
    #[error("the final state has two entries for table {table:?} key {key:?}")]
    DuplicateFinalItem { table: String, key: String },
    #[error("final state of table {table:?} key {key:?}: malformed context: {source}")]
    MalformedFinalContext {
        table: String,
        key: String,
        #[source]
        source: quorumdb_core::causality::CausalityError,
    },
}

/// An op quoted in a report: its index in [`History::ops`] and the op itself, so a report is
/// readable without the history at hand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRef {
    pub index: usize,
    pub op: Op,
}

impl OpRef {
    pub(crate) fn new(ops: &[Op], index: usize) -> Option<OpRef> {
        ops.get(index).map(|op| OpRef { index, op: op.clone() })
    }
}

/// Pushes onto a bounded example list; the caller counts separately.
pub(crate) fn push_bounded<T>(list: &mut Vec<T>, len_max: usize, item: impl FnOnce() -> Option<T>) {
    if list.len() < len_max {
        if let Some(item) = item() {
            list.push(item);
        }
    }
}

/// `part / whole`, or 0 when nothing was counted (never NaN, so reports stay valid JSON).
pub(crate) fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// The result of every checker on one history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Ops in the history.
    pub ops: u64,
    /// Distinct `(table, key)` pairs in the history.
    pub keys: u64,
    pub lost_writes: LostWritesReport,
    pub linearizability: LinearizabilityReport,
    pub staleness: StalenessReport,
    pub sessions: SessionsReport,
}

/// Runs every checker with the default [`CheckConfig`].
pub fn check_all(history: &History, final_state: &FinalState) -> Result<Report, CheckError> {
    check_all_with(history, final_state, &CheckConfig::default())
}

/// Runs every checker, validating and decoding the history once.
pub fn check_all_with(
    history: &History,
    final_state: &FinalState,
    config: &CheckConfig,
) -> Result<Report, CheckError> {
    check_selected(history, final_state, config, &Selection::ALL)
}

/// Which of the checkers [`check_selected`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    pub lost_writes: bool,
    pub linearizability: bool,
    pub staleness: bool,
    pub sessions: bool,
}

impl Selection {
    pub const ALL: Selection =
        Selection { lost_writes: true, linearizability: true, staleness: true, sessions: true };
}

/// Runs the selected checkers, validating and decoding the history once; the reports of the
/// others are empty (their `Default`). A scenario that does not ask for linearizability, say,
/// then pays nothing for the search, which dominates checking time.
pub fn check_selected(
    history: &History,
    final_state: &FinalState,
    config: &CheckConfig,
    selection: &Selection,
) -> Result<Report, CheckError> {
    let decoded = Decoded::new(history)?;
    Ok(Report {
        ops: decoded.ops.len() as u64,
        keys: decoded.keys.len() as u64,
        lost_writes: if selection.lost_writes {
            lost_writes::run(&decoded, final_state, config)?
        } else {
            LostWritesReport::default()
        },
        linearizability: if selection.linearizability {
            linearizability::run(&decoded, config)
        } else {
            LinearizabilityReport::default()
        },
        staleness: if selection.staleness {
            staleness::run(&decoded, config)
        } else {
            StalenessReport::default()
        },
        sessions: if selection.sessions {
            sessions::run(&decoded, config)
        } else {
            SessionsReport::default()
        },
    })
}
