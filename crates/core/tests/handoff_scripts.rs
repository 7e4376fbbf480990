//! Scripted scenarios for the hinted handoff queue (`quorumdb_core::handoff`).
//!
//! Each file under `tests/scripts/handoff/` is a goldenscript: commands, then `---`, then the
//! output they produced when the file was last blessed. Regenerate with
//! `UPDATE_GOLDENFILES=1 cargo test -p quorumdb-core --test handoff_scripts` and *read* the diff:
//! a blessed bug is worse than no test.
//!
//! The runner plays the node: it keeps a durable store of hints, persists every accepted hint,
//! deletes a superseded one, executes every `Delete` and `Drop` (printing `BUG:` if one names a
//! hint it does not hold), and rebuilds the queue from that store on `restart`.
//!
//! Commands (a script starts with a default queue; `queue` makes a fresh one):
//!
//! ```text
//! queue len=3 bytes=100 age=1000 inflight=2   fresh queue and store with these limits
//!                                             (each optional; defaults are the crate's)
//! add n2 k1 v1 at=0 [created=0]               a write of k1 = v1 to n2 was missed, at time 0
//! down n2 / up n2                             the liveness view tick uses (all up at start)
//! tick 100                                    the shell's timer fired at time 100
//! delivered h0 at=100                         n2 acknowledged delivery h0
//! failed h0 at=100                            delivery h0 failed or timed out
//! stats                                       counters and per-target state
//! store                                       the durable store, in id order
//! stored h7 n2 k1 v1 created=0               the store holds this hint, written by an earlier
//!                                             process (to set up crash leftovers)
//! restart at=500 [len=.. bytes=.. age=..]     the process restarts (limits optionally changed in
//!                                             the config): rebuild the queue from the store
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::Write as _;

use goldenscript::{Command, Context};

mod support;
use quorumdb_core::handoff::{HandoffCommand, Hint, HintId, HintLimits, HintQueue};

struct Runner {
    limits: HintLimits,
    queue: HintQueue,
    /// The node's durable hint store.
    store: BTreeMap<HintId, Hint>,
    /// Targets the liveness view reports down.
    down: BTreeSet<String>,
    /// Echo each command above its output in blocks of several commands.
    echo: bool,
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            limits: HintLimits::default(),
            queue: HintQueue::new(HintLimits::default()),
            store: BTreeMap::new(),
            down: BTreeSet::new(),
            echo: false,
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Parses an optional `key=value` argument.
fn parse<T: std::str::FromStr>(value: Option<&str>) -> Result<Option<T>, Box<dyn Error>>
where
    T::Err: Error + 'static,
{
    Ok(value.map(str::parse).transpose()?)
}

fn parse_id(s: &str) -> Result<HintId, Box<dyn Error>> {
    let digits = s.strip_prefix('h').ok_or("hint ids look like h3")?;
    Ok(HintId(digits.parse()?))
}

impl Runner {
    /// Executes commands as the node would and prints them.
    fn execute(&mut self, commands: Vec<HandoffCommand>, out: &mut String) -> Result<(), Box<dyn Error>> {
        if commands.is_empty() {
            writeln!(out, "no commands")?;
        }
        for command in commands {
            match command {
                HandoffCommand::Deliver { id, target, key, state } => {
                    writeln!(out, "deliver {id} → {target} {}={}", text(&key), text(&state))?;
                    if !self.store.contains_key(&id) {
                        writeln!(out, "BUG: delivering {id}, which is not in the store")?;
                    }
                }
                HandoffCommand::Delete { id } => {
                    writeln!(out, "delete {id}")?;
                    if self.store.remove(&id).is_none() {
                        writeln!(out, "BUG: deleting {id}, which is not in the store")?;
                    }
                }
                HandoffCommand::Drop { id, reason } => {
                    writeln!(out, "drop {id} ({reason})")?;
                    if self.store.remove(&id).is_none() {
                        writeln!(out, "BUG: dropping {id}, which is not in the store")?;
                    }
                }
            }
        }
        Ok(())
    }

    fn stats(&self) -> Result<String, Box<dyn Error>> {
        let s = self.queue.stats();
        let mut out = String::new();
        writeln!(
            out,
            "len={} bytes={} added={} coalesced={} refused={} delivered={} failed={} expired={}",
            s.len,
            s.bytes,
            s.added_total,
            s.coalesced_total,
            s.refused_total,
            s.delivered_total,
            s.failed_total,
            s.expired_total
        )?;
        for (name, t) in &s.per_target {
            writeln!(
                out,
                "{name}: len={} inflight={} failures={} retry_at={}",
                t.len, t.inflight, t.failures, t.retry_at_ms
            )?;
        }
        Ok(out)
    }

    fn store(&self) -> Result<String, Box<dyn Error>> {
        let mut out = String::new();
        if self.store.is_empty() {
            writeln!(out, "store: empty")?;
        }
        for (id, hint) in &self.store {
            writeln!(
                out,
                "{id}: {} {}={} created={}",
                hint.target,
                text(&hint.key),
                text(&hint.state),
                hint.created_ms
            )?;
        }
        Ok(out)
    }
}

impl goldenscript::Runner for Runner {
    type Command = Command;

    fn run(&mut self, command: &Command, _context: &Context) -> Result<String, Box<dyn Error>> {
        let mut args = command.consume_args();
        let mut out = String::new();
        match command.name.as_str() {
            "queue" => {
                let defaults = HintLimits::default();
                self.limits = HintLimits {
                    hints_len_max: parse(args.take_key("len"))?.unwrap_or(defaults.hints_len_max),
                    hint_bytes_max: parse(args.take_key("bytes"))?.unwrap_or(defaults.hint_bytes_max),
                    hint_age_ms_max: parse(args.take_key("age"))?.unwrap_or(defaults.hint_age_ms_max),
                    inflight_per_target_max: parse(args.take_key("inflight"))?
                        .unwrap_or(defaults.inflight_per_target_max),
                };
                args.reject_next()?;
                self.queue = HintQueue::new(self.limits);
                self.store.clear();
                self.down.clear();
                let l = self.queue.limits();
                writeln!(
                    out,
                    "queue len_max={} bytes_max={} age_ms_max={} inflight_max={}",
                    l.hints_len_max, l.hint_bytes_max, l.hint_age_ms_max, l.inflight_per_target_max
                )?;
            }
            "add" => {
                let target = args.next_pos().ok_or("target not given")?.to_owned();
                let key = args.next_pos().ok_or("key not given")?.as_bytes().to_vec();
                let state = args.next_pos().ok_or("state not given")?.as_bytes().to_vec();
                let now_ms: u64 = args.take_key("at").ok_or("at= not given")?.parse()?;
                let created_ms: u64 = parse(args.take_key("created"))?.unwrap_or(now_ms);
                args.reject_next()?;
                let hint = Hint { target, key, state, created_ms };
                match self.queue.add(hint.clone(), now_ms) {
                    Ok(added) => {
                        // Persist the new hint first, then delete the one it replaced.
                        self.store.insert(added.id, hint);
                        match added.superseded {
                            Some(old) => {
                                writeln!(out, "added {}, supersedes {old}", added.id)?;
                                if self.store.remove(&old).is_none() {
                                    writeln!(out, "BUG: superseded {old} is not in the store")?;
                                }
                            }
                            None => writeln!(out, "added {}", added.id)?,
                        }
                    }
                    Err(refused) => writeln!(out, "refused: {refused}")?,
                }
            }
            "down" | "up" => {
                let target = args.next_pos().ok_or("target not given")?.to_owned();
                args.reject_next()?;
                if command.name == "down" {
                    self.down.insert(target.clone());
                } else {
                    self.down.remove(&target);
                }
                writeln!(out, "{target} is {}", command.name)?;
            }
            "tick" => {
                let now_ms: u64 = args.next_pos().ok_or("time not given")?.parse()?;
                args.reject_next()?;
                let down = self.down.clone();
                let commands = self.queue.tick(now_ms, |target| !down.contains(target));
                self.execute(commands, &mut out)?;
            }
            "delivered" => {
                let id = parse_id(args.next_pos().ok_or("hint id not given")?)?;
                let now_ms: u64 = args.take_key("at").ok_or("at= not given")?.parse()?;
                args.reject_next()?;
                let commands = self.queue.on_delivered(id, now_ms);
                self.execute(commands, &mut out)?;
            }
            "failed" => {
                let id = parse_id(args.next_pos().ok_or("hint id not given")?)?;
                let now_ms: u64 = args.take_key("at").ok_or("at= not given")?.parse()?;
                args.reject_next()?;
                self.queue.on_failed(id, now_ms);
                // Show the back-off this failure left the hint's target in.
                if let Some(hint) = self.store.get(&id) {
                    if let Some(t) = self.queue.stats().per_target.get(&hint.target) {
                        writeln!(out, "{}: failures={} retry_at={}", hint.target, t.failures, t.retry_at_ms)?;
                    }
                }
            }
            "stats" => {
                args.reject_next()?;
                out = self.stats()?;
            }
            "store" => {
                args.reject_next()?;
                out = self.store()?;
            }
            "stored" => {
                let id = parse_id(args.next_pos().ok_or("hint id not given")?)?;
                let target = args.next_pos().ok_or("target not given")?.to_owned();
                let key = args.next_pos().ok_or("key not given")?.as_bytes().to_vec();
                let state = args.next_pos().ok_or("state not given")?.as_bytes().to_vec();
                let created_ms: u64 = args.take_key("created").ok_or("created= not given")?.parse()?;
                args.reject_next()?;
                self.store.insert(id, Hint { target, key, state, created_ms });
            }
            "restart" => {
                let now_ms: u64 = args.take_key("at").ok_or("at= not given")?.parse()?;
                if let Some(len) = parse(args.take_key("len"))? {
                    self.limits.hints_len_max = len;
                }
                if let Some(bytes) = parse(args.take_key("bytes"))? {
                    self.limits.hint_bytes_max = bytes;
                }
                if let Some(age) = parse(args.take_key("age"))? {
                    self.limits.hint_age_ms_max = age;
                }
                args.reject_next()?;
                let stored: Vec<(HintId, Hint)> = self.store.iter().map(|(id, h)| (*id, h.clone())).collect();
                writeln!(out, "restored from {} stored hints", stored.len())?;
                let (queue, commands) = HintQueue::restore(self.limits, stored, now_ms);
                self.queue = queue;
                self.execute(commands, &mut out)?;
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        if out.is_empty() {
            out.push_str("ok\n");
        }
        Ok(support::echo(self.echo, command, out)?)
    }

    fn start_block(&mut self, block: &goldenscript::Block) -> Result<String, Box<dyn Error>> {
        self.echo = support::echo_block(block);
        Ok(String::new())
    }
}

const SCRIPTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/handoff");

scripts!(
    Runner, SCRIPTS_DIR;
    /// Proves hints wait while their target is down and are delivered, then deleted, once it is up.
    deliver_when_target_returns,
    /// Proves at most the in-flight bound is delivered per target, oldest first, and each ack releases the next.
    inflight_bound_and_fifo,
    /// Proves a failed delivery backs its target off exponentially up to 10 s, and a success resets it.
    failure_backoff,
    /// Proves hints past the age limit are dropped, never delivered, and refused when already too old.
    expiry,
    /// Proves the count and byte limits refuse hints with a typed reason, and a replacement counts only its growth.
    limits_refused,
    /// Proves a newer hint for the same target and key replaces the older one, even while it is in flight.
    coalescing,
    /// Proves a restart restores stored hints, forgets in-flight deliveries, and resolves leftovers of a crash.
    restore_after_restart,
);
