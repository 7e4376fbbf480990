//! Linearizability of single-key registers: Wing & Gong's search with Lowe's memoization, the
//! algorithm of Porcupine (Go) and of Knossos's `wgl` checker (Clojure), both used with Jepsen.
//!
//! ## The model
//!
//! Each `(table, key)` is checked on its own as a *register* whose state is "absent" or one
//! value. Linearizability is compositional (Herlihy & Wing's locality), so a history is
//! linearizable iff each key's sub-history is; checking keys apart turns one search over all
//! ops into many small ones, which is what makes 10,000-op histories cheap.
//!
//! | op | effect | observes |
//! |---|---|---|
//! | `write(v)` | state ← `v` | — |
//! | `delete` | state ← absent | — |
//! | read returning `[v]` | — | state = `v` |
//! | read returning `[]` | — | state = absent |
//! | read returning ≥ 2 values | impossible for a register: the key is reported as not linearizable with that read as counterexample | |
//!
//! The register starts absent. `fail` ops never happened and are dropped. `info` ops may have
//! taken effect at any instant after their invocation, or never: their completion is treated as
//! +∞ and the search may leave them out. An `info` read observed nothing and is dropped.
//! Causality tokens play no part here: this checker asks what a client of a single-copy
//! register could have seen, regardless of how the store tracks versions.
//!
//! `info` ops are what makes such searches explode (each pending one may or may not have
//! happened, doubling the configurations), so three exact reductions keep them in check, each
//! preserving the verdict (the property tests compare against brute force):
//! - An `info` write whose value no `ok` read returned is dropped: in any linearization
//!   containing it no read sits between it and the next write, so removing it changes nothing.
//! - For the same reason an `info` write is only tried while some `ok` read of its value is
//!   still unlinearized.
//! - Pending `info` deletes are interchangeable (same effect, no deadline), so only the
//!   earliest-invoked unlinearized one is ever tried.
//!
//! ## The search
//!
//! Calls and returns are laid out in time order in a doubly linked list (calls before returns at
//! equal timestamps, so ops that touch at an instant count as concurrent — the permissive
//! choice). The search repeatedly picks the earliest pending call whose effect the register model
//! accepts in the current state, "lifts" it (and its return) out of the list and pushes it on a
//! stack. Reaching a return means the op it belongs to had to take effect before that point
//! but every ordering tried so far failed: the search backtracks by popping the last lifted op
//! and trying the next call after it. The history is linearizable once every `ok` op is
//! lifted. Lowe's improvement memoizes each configuration (set of lifted ops as a bitset, register
//! state) and never explores one twice; for histories from a real store the search is then close
//! to linear.
//!
//! A step budget and a memory budget ([`LinearizabilityLimits`](super::LinearizabilityLimits))
//! end pathological searches with [`Verdict::Unknown`] instead of hanging.
//!
//! ## Counterexamples
//!
//! When no linearization exists, the report names the op blocking the *longest* partial
//! linearization the search found (as Porcupine's visualizer does): the op whose return was
//! reached with the most ops already lifted, the register's value at that point, the tail of that
//! partial linearization and the ops concurrent with the blocking op. That is usually the read
//! that returned an impossible value and the writes it raced with.

use super::{CheckConfig, OpRef};
use crate::history::{Decoded, History, HistoryError, OpKind, OpResult};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// Report of the linearizability checker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearizabilityReport {
    pub keys_checked: u64,
    pub linearizable: u64,
    pub not_linearizable: u64,
    pub unknown: u64,
    /// One entry per key, sorted by table then key.
    pub keys: Vec<KeyLinearizability>,
}

/// Outcome for one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The search ran out of budget before deciding.
    Unknown,
}

/// Which budget ended an undecided search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownReason {
    StepsExhausted,
    CacheExhausted,
}

/// What made a key non-linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterexampleKind {
    /// A read returned two or more siblings, which no register can do.
    Siblings,
    /// No order of the ops respects real time and the register's semantics.
    NoLinearization,
}

/// Why one key is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counterexample {
    pub kind: CounterexampleKind,
    /// The op that could not be linearized.
    pub op: OpRef,
    /// Ops linearized before the search got stuck on `op`, in the longest partial
    /// linearization found (0 for `siblings`).
    pub linearized_len: u64,
    /// History indices of the last ops of that partial linearization, in order.
    pub linearized_tail: Vec<usize>,
    /// The register's value at that point (`None` = absent).
    pub register_value: Option<String>,
    /// Ops whose interval overlaps `op`'s (`info` ops extend to +∞), by invocation time.
    pub concurrent: Vec<OpRef>,
    /// How many ops overlap `op` in all (`concurrent` is bounded).
    pub concurrent_count: u64,
}

/// The result for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLinearizability {
    pub table: String,
    pub key: String,
    /// Ops the search considered (after dropping `fail` ops, `info` reads and unread `info`
    /// writes).
    pub ops: u64,
    /// `info` writes dropped because no read returned their value.
    pub info_writes_dropped: u64,
    pub verdict: Verdict,
    /// Set when `verdict` is `unknown`.
    pub unknown_reason: Option<UnknownReason>,
    /// Search steps taken.
    pub steps: u64,
    /// Set when `verdict` is `not_linearizable`.
    pub counterexample: Option<Counterexample>,
}

/// Checks every key of `history` (see the module docs).
pub fn check_linearizability(
    history: &History,
    config: &CheckConfig,
) -> Result<LinearizabilityReport, HistoryError> {
    Ok(run(&Decoded::new(history)?, config))
}

pub(crate) fn run(d: &Decoded<'_>, config: &CheckConfig) -> LinearizabilityReport {
    let mut report = LinearizabilityReport::default();
    for (&(table, key), indices) in &d.keys {
        let result = check_key(d, table, key, indices, config);
        report.keys_checked += 1;
        match result.verdict {
            Verdict::Linearizable => report.linearizable += 1,
            Verdict::NotLinearizable => report.not_linearizable += 1,
            Verdict::Unknown => report.unknown += 1,
        }
        report.keys.push(result);
    }
    report
}

/// Register state: `ABSENT` or an interned value id (≥ 1).
type State = u32;
const ABSENT: State = 0;

/// What one op does to or expects of the register.
#[derive(Clone, Copy, Debug)]
enum Input {
    Write(State),
    Delete,
    Read(State),
}

impl Input {
    /// The register model: the state after the op, or `None` if the op is impossible here.
    fn step(self, state: State) -> Option<State> {
        match self {
            Input::Write(v) => Some(v),
            Input::Delete => Some(ABSENT),
            Input::Read(v) => (v == state).then_some(state),
        }
    }
}

/// One op of a key's sub-history, as the search sees it.
struct SearchOp {
    /// Index in the history.
    index: usize,
    invoke_ns: u64,
    /// `None` for `info` ops: they may take effect arbitrarily late.
    complete_ns: Option<u64>,
    input: Input,
}

impl SearchOp {
    fn overlaps(&self, other: &SearchOp) -> bool {
        let before = |a: &SearchOp, b: &SearchOp| a.complete_ns.is_some_and(|c| c < b.invoke_ns);
        !before(self, other) && !before(other, self)
    }
}

fn check_key(
    d: &Decoded<'_>,
    table: &str,
    key: &str,
    indices: &[usize],
    config: &CheckConfig,
) -> KeyLinearizability {
    let mut result = KeyLinearizability {
        table: table.into(),
        key: key.into(),
        ops: 0,
        info_writes_dropped: 0,
        verdict: Verdict::Linearizable,
        unknown_reason: None,
        steps: 0,
        counterexample: None,
    };

    // Values returned by `ok` reads: an `info` write of any other value is dropped (module docs).
    let read_values: HashSet<&str> = indices
        .iter()
        .map(|&i| &d.ops[i])
        .filter(|op| op.kind == OpKind::Read && op.result == OpResult::Ok)
        .flat_map(|op| op.values.iter().map(String::as_str))
        .collect();

    let mut values: Vec<&str> = vec![""]; // id → value; id 0 is ABSENT
    let mut ids: HashMap<&str, State> = HashMap::new();

    let mut ops: Vec<SearchOp> = Vec::with_capacity(indices.len());
    let mut siblings_read: Option<usize> = None;
    for &index in indices {
        let op = &d.ops[index];
        let complete_ns = match op.result {
            OpResult::Fail => continue,
            OpResult::Ok => Some(op.complete_ns),
            OpResult::Info => None,
        };
        let input = match op.kind {
            OpKind::Write => {
                let value = op.value.as_deref().unwrap_or_default();
                if op.result == OpResult::Info && !read_values.contains(value) {
                    result.info_writes_dropped += 1;
                    continue;
                }
                Input::Write(intern_value(&mut ids, &mut values, value))
            }
            OpKind::Delete => Input::Delete,
            OpKind::Read => {
                if op.result == OpResult::Info {
                    continue;
                }
                match op.values.as_slice() {
                    [] => Input::Read(ABSENT),
                    [value] => Input::Read(intern_value(&mut ids, &mut values, value)),
                    _ => {
                        let earlier = siblings_read.is_some_and(|s| d.ops[s].invoke_ns <= op.invoke_ns);
                        if !earlier {
                            siblings_read = Some(index);
                        }
                        continue;
                    }
                }
            }
        };
        ops.push(SearchOp { index, invoke_ns: op.invoke_ns, complete_ns, input });
    }
    ops.sort_by_key(|op| (op.invoke_ns, op.index));
    result.ops = ops.len() as u64;

    if let Some(read) = siblings_read {
        let probe = SearchOp {
            index: read,
            invoke_ns: d.ops[read].invoke_ns,
            complete_ns: Some(d.ops[read].complete_ns),
            input: Input::Read(ABSENT),
        };
        result.verdict = Verdict::NotLinearizable;
        result.counterexample = counterexample(d, &ops, &probe, CounterexampleKind::Siblings, None, config);
        return result;
    }

    let mut search = Search::new(&ops, values.len());
    let outcome = search.run(config);
    result.steps = search.steps;
    match outcome {
        Outcome::Linearizable => {}
        Outcome::Unknown(reason) => {
            result.verdict = Verdict::Unknown;
            result.unknown_reason = Some(reason);
        }
        Outcome::NotLinearizable => {
            result.verdict = Verdict::NotLinearizable;
            if let Some(stuck) = search.deepest.as_ref() {
                if let Some(blocked) = ops.get(stuck.op) {
                    let mut ce = counterexample(
                        d,
                        &ops,
                        blocked,
                        CounterexampleKind::NoLinearization,
                        values.get(stuck.state as usize).filter(|_| stuck.state != ABSENT),
                        config,
                    );
                    if let Some(ce) = ce.as_mut() {
                        ce.linearized_len = stuck.depth as u64;
                        ce.linearized_tail =
                            stuck.tail.iter().filter_map(|&o| ops.get(o)).map(|o| o.index).collect();
                    }
                    result.counterexample = ce;
                }
            }
        }
    }
    result
}

/// The id of `value`, assigning the next one on first sight.
fn intern_value<'a>(ids: &mut HashMap<&'a str, State>, values: &mut Vec<&'a str>, value: &'a str) -> State {
    if let Some(&id) = ids.get(value) {
        return id;
    }
    // Ids are bounded by the number of ops, itself bounded by HISTORY_OPS_LEN_MAX < u32::MAX.
    let id = State::try_from(values.len()).unwrap_or(State::MAX);
    values.push(value);
    ids.insert(value, id);
    id
}

fn counterexample(
    d: &Decoded<'_>,
    ops: &[SearchOp],
    blocked: &SearchOp,
    kind: CounterexampleKind,
    register_value: Option<&&str>,
    config: &CheckConfig,
) -> Option<Counterexample> {
    let concurrent: Vec<&SearchOp> =
        ops.iter().filter(|o| o.index != blocked.index && o.overlaps(blocked)).collect();
    Some(Counterexample {
        kind,
        op: OpRef::new(d.ops, blocked.index)?,
        linearized_len: 0,
        linearized_tail: Vec::new(),
        register_value: register_value.map(|v| (*v).to_owned()),
        concurrent: concurrent
            .iter()
            .take(config.examples_len_max)
            .filter_map(|o| OpRef::new(d.ops, o.index))
            .collect(),
        concurrent_count: concurrent.len() as u64,
    })
}

enum Outcome {
    Linearizable,
    NotLinearizable,
    Unknown(UnknownReason),
}

/// "No entry" in the linked list.
const NIL: usize = usize::MAX;
/// The list's sentinel head node.
const HEAD: usize = 0;

/// A node of the call/return list. Node 0 is the head sentinel.
struct Entry {
    /// Index into the search's ops.
    op: usize,
    /// Call entries: the node of the matching return, or `NIL` for `info` ops.
    /// Return entries: `NIL`.
    ret: usize,
    is_call: bool,
}

/// Where the longest partial linearization got stuck.
struct Stuck {
    /// The op whose return was reached unlinearized.
    op: usize,
    /// Ops linearized at that point.
    depth: usize,
    state: State,
    /// The last few linearized ops, oldest first.
    tail: Vec<usize>,
}

/// Memoized configuration: which ops are linearized, and the register's state after them.
#[derive(PartialEq, Eq)]
struct Config {
    linearized: Box<[u64]>,
    state: State,
}

impl Hash for Config {
    fn hash<H: Hasher>(&self, h: &mut H) {
        for &word in self.linearized.iter() {
            h.write_u64(word);
        }
        h.write_u32(self.state);
    }
}

/// A fast non-cryptographic hasher (the FxHash mixing step of rustc). The keys are bitsets the
/// checker builds itself, so hash flooding is not a concern and SipHash would dominate the
/// search's run time.
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u64(&mut self, word: u64) {
        self.add(word);
    }
    fn write_u32(&mut self, word: u32) {
        self.add(u64::from(word));
    }
}

struct Search<'a> {
    ops: &'a [SearchOp],
    /// Node 0 is the head; then one node per call and per return, in time order.
    entries: Vec<Entry>,
    /// Links of the doubly linked list over `entries` (`NIL` at the ends).
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each `info` delete, its rank among `info` deletes in invocation order (else `NIL`).
    /// All deletes have the same effect and an `info` op has no deadline, so two pending `info`
    /// deletes are interchangeable: the search only ever lifts the earliest unlifted one, which
    /// keeps the lifted ones a prefix of this order and avoids exploring every subset of them.
    info_delete_rank: Vec<usize>,
    /// How many `info` deletes are lifted (always the first ones by rank, see above).
    info_deletes_lifted: usize,
    /// Per value id: `ok` reads of that value not lifted yet. An `info` write is only worth
    /// lifting while one of them is pending: placed after the last read of its value, it would be
    /// followed by no read of it and could be removed from the linearization (module docs).
    reads_pending: Vec<u32>,
    steps: u64,
    deepest: Option<Stuck>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [SearchOp], values_len: usize) -> Search<'a> {
        // (time, 0 = call / 1 = return, op): calls sort before returns at equal times.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke_ns, 0, i));
            if let Some(complete) = op.complete_ns {
                events.push((complete, 1, i));
            }
        }
        events.sort_unstable();
        let mut entries = Vec::with_capacity(events.len() + 1);
        entries.push(Entry { op: NIL, ret: NIL, is_call: false });
        let mut call_of = vec![NIL; ops.len()];
        let mut info_delete_rank = vec![NIL; ops.len()];
        let mut info_deletes = 0;
        for (node, &(_, kind, op)) in events.iter().enumerate().map(|(n, e)| (n + 1, e)) {
            let is_call = kind == 0;
            entries.push(Entry { op, ret: NIL, is_call });
            if let Some(call) = call_of.get_mut(op) {
                if is_call {
                    *call = node;
                } else if let Some(entry) = entries.get_mut(*call) {
                    entry.ret = node;
                }
            }
            let info_delete =
                ops.get(op).is_some_and(|o| o.complete_ns.is_none() && matches!(o.input, Input::Delete));
            if is_call && info_delete {
                if let Some(rank) = info_delete_rank.get_mut(op) {
                    *rank = info_deletes;
                    info_deletes += 1;
                }
            }
        }
        let mut reads_pending = vec![0u32; values_len];
        for op in ops.iter().filter(|o| o.complete_ns.is_some()) {
            if let Input::Read(v) = op.input {
                if let Some(pending) = reads_pending.get_mut(v as usize) {
                    *pending += 1;
                }
            }
        }
        let len = entries.len();
        let next = (0..len).map(|n| if n + 1 < len { n + 1 } else { NIL }).collect();
        let prev = (0..len).map(|n| if n == 0 { NIL } else { n - 1 }).collect();
        Search {
            ops,
            entries,
            next,
            prev,
            info_delete_rank,
            info_deletes_lifted: 0,
            reads_pending,
            steps: 0,
            deepest: None,
        }
    }

    /// Whether lifting `op` now can lead anywhere new (see `info_delete_rank`, `reads_pending`).
    fn worth_trying(&self, op: usize) -> bool {
        let o = &self.ops[op];
        if o.complete_ns.is_some() {
            return true;
        }
        match o.input {
            Input::Delete => self.info_delete_rank[op] == self.info_deletes_lifted,
            Input::Write(v) => self.reads_pending.get(v as usize).is_some_and(|&n| n > 0),
            Input::Read(_) => true,
        }
    }

    /// Bookkeeping for `worth_trying` when `op` is lifted or put back.
    fn account(&mut self, op: usize, lifted: bool) {
        let o = &self.ops[op];
        match (o.input, o.complete_ns) {
            (Input::Delete, None) => {
                if lifted {
                    self.info_deletes_lifted += 1;
                } else {
                    self.info_deletes_lifted = self.info_deletes_lifted.saturating_sub(1);
                }
            }
            (Input::Read(v), Some(_)) => {
                if let Some(pending) = self.reads_pending.get_mut(v as usize) {
                    if lifted {
                        *pending = pending.saturating_sub(1);
                    } else {
                        *pending += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// Removes a call node and its return node from the list (their own links are kept, so
    /// `unlift` can put them back; lifts and unlifts happen in stack order).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.entries[call].ret;
        if ret != NIL {
            self.unlink(ret);
        }
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.entries[call].ret;
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn run(&mut self, config: &CheckConfig) -> Outcome {
        let limits = config.linearizability;
        let words = self.ops.len().div_ceil(64);
        // Bitset words, the state, the box's pointer and length, the allocator's and the hash
        // table's overhead: a deliberately generous estimate per memoized configuration.
        let config_bytes = (words * 8 + 48) as u64;
        let tail_len_max = config.examples_len_max;

        let mut linearized = vec![0u64; words].into_boxed_slice();
        let mut cache: HashSet<Config, BuildHasherDefault<FxHasher>> = HashSet::default();
        let mut stack: Vec<(usize, State)> = Vec::new();
        let mut ok_remaining = self.ops.iter().filter(|op| op.complete_ns.is_some()).count();
        let mut state = ABSENT;
        let mut node = self.next[HEAD];
        loop {
            if ok_remaining == 0 {
                return Outcome::Linearizable;
            }
            if self.steps >= limits.steps_max {
                return Outcome::Unknown(UnknownReason::StepsExhausted);
            }
            self.steps += 1;
            let call = self.entries.get(node).filter(|e| e.is_call).map(|e| e.op);
            if let Some(op) = call {
                let (word, bit) = (op / 64, 1u64 << (op % 64));
                let accepted = if self.worth_trying(op) { self.ops[op].input.step(state) } else { None };
                if let Some(new_state) = accepted {
                    linearized[word] |= bit;
                    if cache.insert(Config { linearized: linearized.clone(), state: new_state }) {
                        if (cache.len() as u64).saturating_mul(config_bytes) > limits.cache_bytes_max {
                            return Outcome::Unknown(UnknownReason::CacheExhausted);
                        }
                        stack.push((node, state));
                        state = new_state;
                        self.lift(node);
                        self.account(op, true);
                        if self.ops[op].complete_ns.is_some() {
                            ok_remaining -= 1;
                        }
                        node = self.next[HEAD];
                        continue;
                    }
                    linearized[word] &= !bit;
                }
                node = self.next[node];
                continue;
            }

            // A return (or the end of the list): the op it belongs to cannot be placed in this
            // configuration. Remember the deepest such point for the counterexample.
            if let Some(entry) = self.entries.get(node) {
                let better = self.deepest.as_ref().is_none_or(|s| stack.len() > s.depth);
                if better {
                    let tail_start = stack.len().saturating_sub(tail_len_max);
                    self.deepest = Some(Stuck {
                        op: entry.op,
                        depth: stack.len(),
                        state,
                        tail: stack[tail_start..].iter().map(|&(n, _)| self.entries[n].op).collect(),
                    });
                }
            }
            let Some((call_node, previous)) = stack.pop() else {
                return Outcome::NotLinearizable;
            };
            self.unlift(call_node);
            let op = self.entries[call_node].op;
            self.account(op, false);
            linearized[op / 64] &= !(1u64 << (op % 64));
            if self.ops[op].complete_ns.is_some() {
                ok_remaining += 1;
            }
            state = previous;
            node = self.next[call_node];
        }
    }
}
