//! Scripted scenarios for the quorum coordinators (`quorumdb_core::coordinator`).
//!
//! Each file under `tests/scripts/coordinator/` is a goldenscript: commands, then `---`, then the
//! output they produced when the file was last blessed. Regenerate with
//! `UPDATE_GOLDENFILES=1 cargo test -p quorumdb-core --test coordinator_scripts` and *read* the
//! diff: a blessed bug is worse than no test.
//!
//! The replica state is a grow-only set of numbers, the simplest `Mergeable`, so the scripts are
//! about orderings and decisions rather than about version vectors.
//!
//! Commands (one coordinator at a time; `write`/`read` start a fresh one):
//!
//! ```text
//! write n1 n2 n3 w=2 deadline=100   start a write coordinator for replicas n1, n2, n3
//! read n1 n2 n3 r=2 deadline=100    start a read coordinator
//! ack n1                            write: replica n1 acknowledged
//! reply n1 1 2                      read: replica n1 returned the set {1,2} (`reply n1`: {})
//! fail n2 "disk full"               replica n2 returned an error
//! skip n3                           replica n3 is known down; the request is not sent to it
//! tick 150                          the shell's timer fired at time 150
//! status                            every outcome, the decision, merge and repairs
//! ```
//!
//! Every event prints what it changed: the replica's new outcome (or why it was ignored), the
//! merged state of a read when it grows, the decision on the event that takes it, and
//! `finished` on the event after which the shell may stop listening.

use std::collections::BTreeSet;
use std::error::Error;
use std::fmt::Write as _;

use goldenscript::{Command, Context};

mod support;
use quorumdb_core::coordinator::{Mergeable, Outcome, QuorumError, ReadCoordinator, WriteCoordinator};

/// A grow-only set of numbers: merge is union, descends is superset.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
struct Set(BTreeSet<u32>);

impl Mergeable for Set {
    fn merge_from(&mut self, other: &Self) {
        self.0.extend(other.0.iter().copied());
    }
    fn descends(&self, other: &Self) -> bool {
        self.0.is_superset(&other.0)
    }
}

impl std::fmt::Display for Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self.0.iter().map(u32::to_string).collect();
        write!(f, "{{{}}}", items.join(","))
    }
}

/// The coordinator under test.
enum Request {
    Write { needed: usize, deadline_ms: u64, coordinator: WriteCoordinator },
    Read { needed: usize, deadline_ms: u64, coordinator: ReadCoordinator<Set> },
}

/// What is observable about a request, snapshotted before and after each event to print changes.
#[derive(PartialEq)]
struct Observed {
    outcomes: Vec<(String, Outcome)>,
    decision: Option<String>,
    merged: Option<String>,
    finished: bool,
}

impl Request {
    fn observe(&self) -> Observed {
        match self {
            Request::Write { coordinator: c, .. } => Observed {
                outcomes: c.outcomes().to_vec(),
                decision: c.decision().map(|d| render_decision(d.map(|()| String::new()))),
                merged: None,
                finished: c.is_finished(),
            },
            Request::Read { coordinator: c, .. } => Observed {
                outcomes: c.outcomes().to_vec(),
                decision: c.decision().map(|d| render_decision(d.map(|s| format!(" {s}")))),
                merged: c.merged().map(Set::to_string),
                finished: c.is_finished(),
            },
        }
    }
}

fn render_decision(decision: Result<String, QuorumError>) -> String {
    match decision {
        Ok(state) => format!("ok{state}"),
        Err(error) => format!("error: {error}"),
    }
}

#[derive(Default)]
struct Runner {
    request: Option<Request>,
    /// Set for blocks of several commands: each command's output is then printed under the
    /// command itself, so it is clear which event caused what.
    echo: bool,
}

impl Runner {
    fn request(&mut self) -> Result<&mut Request, Box<dyn Error>> {
        self.request.as_mut().ok_or_else(|| "no request yet: start one with write or read".into())
    }

    /// Applies one event and prints what it changed.
    fn event(
        &mut self,
        replica: Option<&str>,
        apply: impl FnOnce(&mut Request),
    ) -> Result<String, Box<dyn Error>> {
        let request = self.request()?;
        let before = request.observe();
        apply(request);
        let after = request.observe();
        let mut out = String::new();
        let mut changed = false;
        for ((name, old), (_, new)) in before.outcomes.iter().zip(&after.outcomes) {
            if old != new {
                changed = true;
                writeln!(out, "{name}: {new}")?;
            }
        }
        if let (Some(name), false) = (replica, changed) {
            match after.outcomes.iter().find(|(n, _)| n == name) {
                Some((_, outcome)) => writeln!(out, "{name}: ignored, already {outcome}")?,
                None => writeln!(out, "{name}: ignored, not a replica of this request")?,
            }
        }
        if before.merged != after.merged {
            writeln!(out, "merged: {}", after.merged.as_deref().unwrap_or("none"))?;
        }
        if before.decision != after.decision {
            writeln!(out, "decision: {}", after.decision.as_deref().unwrap_or("none"))?;
        }
        if !before.finished && after.finished {
            writeln!(out, "finished")?;
        }
        if out.is_empty() {
            writeln!(out, "no change")?;
        }
        Ok(out)
    }

    fn status(&mut self) -> Result<String, Box<dyn Error>> {
        let request = self.request()?;
        let observed = request.observe();
        let mut out = String::new();
        match request {
            Request::Write { needed, deadline_ms, .. } => {
                writeln!(out, "write w={needed} deadline={deadline_ms}")?
            }
            Request::Read { needed, deadline_ms, .. } => {
                writeln!(out, "read r={needed} deadline={deadline_ms}")?
            }
        }
        for (name, outcome) in &observed.outcomes {
            writeln!(out, "{name}: {outcome}")?;
        }
        writeln!(out, "decision: {}", observed.decision.as_deref().unwrap_or("none"))?;
        writeln!(out, "finished: {}", observed.finished)?;
        if let Request::Read { coordinator, .. } = request {
            writeln!(out, "merged: {}", observed.merged.as_deref().unwrap_or("none"))?;
            let repairs = coordinator.repairs();
            if repairs.is_empty() {
                writeln!(out, "repairs: none")?;
            }
            for (name, state) in repairs {
                writeln!(out, "repair: {name} ← {state}")?;
            }
        }
        Ok(out)
    }
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(&mut self, command: &Command, _context: &Context) -> Result<String, Box<dyn Error>> {
        let mut args = command.consume_args();
        let output = match command.name.as_str() {
            "write" | "read" => {
                // Goldenscript's unquoted strings cannot hold commas, so lists are positional.
                let replicas: Vec<String> =
                    std::iter::from_fn(|| args.next_pos()).map(str::to_owned).collect();
                let needed_key = if command.name == "write" { "w" } else { "r" };
                let needed: usize = args.take_key(needed_key).ok_or("w= or r= not given")?.parse()?;
                let deadline_ms: u64 = args.take_key("deadline").ok_or("deadline= not given")?.parse()?;
                let request = if command.name == "write" {
                    Request::Write {
                        needed,
                        deadline_ms,
                        coordinator: WriteCoordinator::new(replicas, needed, deadline_ms),
                    }
                } else {
                    Request::Read {
                        needed,
                        deadline_ms,
                        coordinator: ReadCoordinator::new(replicas, needed, deadline_ms),
                    }
                };
                self.request = Some(request);
                format!(
                    "waiting for {}\n",
                    self.request()?
                        .observe()
                        .outcomes
                        .iter()
                        .map(|(r, _)| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            "ack" => {
                let replica = args.next_pos().ok_or("replica not given")?;
                args.reject_next()?;
                self.event(Some(replica), |request| match request {
                    Request::Write { coordinator, .. } => coordinator.on_response(replica, Ok(())),
                    Request::Read { .. } => panic!("ack is for writes; use reply"),
                })?
            }
            "reply" => {
                let replica = args.next_pos().ok_or("replica not given")?;
                let value =
                    Set(std::iter::from_fn(|| args.next_pos()).map(str::parse).collect::<Result<_, _>>()?);
                args.reject_next()?;
                self.event(Some(replica), |request| match request {
                    Request::Read { coordinator, .. } => coordinator.on_response(replica, Ok(value)),
                    Request::Write { .. } => panic!("reply is for reads; use ack"),
                })?
            }
            "fail" => {
                let replica = args.next_pos().ok_or("replica not given")?;
                let message = args.next_pos().ok_or("error message not given")?.to_owned();
                args.reject_next()?;
                self.event(Some(replica), |request| match request {
                    Request::Write { coordinator, .. } => {
                        coordinator.on_response(replica, Err(message.into()))
                    }
                    Request::Read { coordinator, .. } => {
                        coordinator.on_response(replica, Err(message.into()))
                    }
                })?
            }
            "skip" => {
                let replica = args.next_pos().ok_or("replica not given")?;
                args.reject_next()?;
                self.event(Some(replica), |request| match request {
                    Request::Write { coordinator, .. } => coordinator.skip(replica),
                    Request::Read { coordinator, .. } => coordinator.skip(replica),
                })?
            }
            "tick" => {
                let now_ms: u64 = args.next_pos().ok_or("time not given")?.parse()?;
                args.reject_next()?;
                self.event(None, |request| match request {
                    Request::Write { coordinator, .. } => coordinator.tick(now_ms),
                    Request::Read { coordinator, .. } => coordinator.tick(now_ms),
                })?
            }
            "status" => {
                args.reject_next()?;
                self.status()?
            }
            name => return Err(format!("unknown command {name}").into()),
        };
        Ok(support::echo(self.echo, command, output)?)
    }

    fn start_block(&mut self, block: &goldenscript::Block) -> Result<String, Box<dyn Error>> {
        self.echo = support::echo_block(block);
        Ok(String::new())
    }
}

const SCRIPTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/coordinator");

scripts!(
    Runner, SCRIPTS_DIR;
    /// Proves a write succeeds at the W-th ack, before stragglers, and records them afterwards.
    write_success_before_stragglers,
    /// Proves a write fails as soon as errors put W out of reach, without waiting for the deadline.
    write_failure_by_errors,
    /// Proves a write still short of W at the deadline fails naming the replica that timed out.
    write_timeout_names_missing_replica,
    /// Proves known-down replicas show as "down" and fail a write the moment W is out of reach.
    write_skipped_replicas,
    /// Proves duplicate replies, replies from strangers and replies to skipped replicas change nothing.
    write_ignored_replies,
    /// Proves a read returns the merge of divergent replies and repairs every stale replica.
    read_merge_divergent,
    /// Proves late replies extend the merge and the repairs but never the decision already given.
    read_repair_after_late_replies,
    /// Proves a read succeeds around a down replica, fails when too many are down, and never repairs them.
    read_skipped_replicas,
    /// Proves R=all waits for the slow replica, and fails at the deadline if it never comes.
    read_all_one_slow,
    /// Proves the read error message names timeouts and errors together, in replica order.
    read_failure_mixed,
);
