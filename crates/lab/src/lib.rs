//! # quorumdb-lab
//!
//! The lab checks the claims QuorumDB makes (README, "Guarantees") against what clients actually
//! observed. This crate is its pure part: recorded [`history`] types, the consistency
//! [`checker`]s and the [`report`] model built from them. It does no I/O except through the readers and writers handed to it and never
//! reads the clock, so the same checkers judge a real cluster, the simulator and hand-written
//! histories, and a report is a deterministic function of its inputs.
//!
//! ```text
//!   scenario driver ──records──► History (history.jsonl) ─┐
//!        │                                                  ├──► check_all ──► Report (JSON)
//!        └──final read at r=all after heal──► FinalState ───┘
//! ```
//!
//! The approach is Jepsen's: run a workload against a faulty system, record every operation's
//! invocation, completion and outcome (`ok`, `fail`, or `info` = unknown), then decide properties
//! of the history offline. Linearizability is decided the way Knossos and Porcupine do (Wing &
//! Gong search with Lowe's memoization, per key); lost writes, staleness (PBS-style
//! t-visibility) and session guarantees use the causality tokens QuorumDB returns, which say
//! exactly which writes a read had seen (see [`history`] for the argument).
//!
//! Limits are named constants with units last ([`history::OP_LINE_BYTES_MAX`],
//! [`history::HISTORY_OPS_LEN_MAX`], [`checker::LinearizabilityLimits::steps_max`]); no input
//! makes a checker panic or run unboundedly: it returns a typed error or an `unknown` verdict.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod checker;
pub mod fault;
pub mod history;
pub mod report;
pub mod sim;

pub use checker::{check_all, check_all_with, check_selected, CheckConfig, CheckError, Report, Selection};
pub use fault::FaultKind;
pub use history::{FinalItem, FinalState, History, HistoryError, Op, OpKind, OpResult};
