//! Test support: a tiny replica simulator that produces *real* causality tokens, an op builder
//! for hand-written histories, and a seeded generator of histories of a correct (single-copy,
//! linearizable) register.
//!
//! Tokens always come from `quorumdb_core::causality::ItemState::update` / `merge` and
//! `VersionVector::to_token`, so the checkers are tested on the same contexts a node returns.
#![allow(dead_code)] // each test binary uses a different part

use quorumdb_core::causality::{ActorId, ItemState, Value, VersionVector};
use quorumdb_lab::{FinalState, History, Op, OpKind, OpResult};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Nanoseconds per millisecond; hand-written histories are laid out in ms.
pub const MS: u64 = 1_000_000;

pub const TABLE: &str = "t";

/// Actor ids look like the random 64-bit ids nodes draw.
pub fn actor(replica: usize) -> ActorId {
    ActorId(0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(replica as u64 + 1))
}

pub fn token(vv: &VersionVector) -> String {
    vv.to_token()
}

fn ctx(token: Option<&str>) -> VersionVector {
    token.map(|t| VersionVector::from_token(t).expect("test token")).unwrap_or_default()
}

fn values_of(state: &ItemState) -> Vec<String> {
    state.values().iter().map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

/// `n` replicas of every key, each with its own actor. Writes go to a coordinator and are
/// copied to the replicas the test names; nothing else moves unless the test says so, which is
/// how hand-written tests stage stale replicas and lost writes.
pub struct Cluster {
    replicas: Vec<BTreeMap<String, ItemState>>,
}

impl Cluster {
    pub fn new(n: usize) -> Self {
        Cluster { replicas: vec![BTreeMap::new(); n] }
    }

    pub fn state(&self, replica: usize, key: &str) -> ItemState {
        self.replicas[replica].get(key).cloned().unwrap_or_default()
    }

    /// A write (`Some(value)`) or delete (`None`) coordinated by `at` with the client's token,
    /// then merged into `copies`. Returns the write's new context token (the coordinator's).
    pub fn write(
        &mut self,
        key: &str,
        at: usize,
        context_in: Option<&str>,
        value: Option<&str>,
        copies: &[usize],
    ) -> String {
        let value = match value {
            Some(v) => Value::Data(v.as_bytes().to_vec()),
            None => Value::Tombstone,
        };
        let new = self.state(at, key).update(&ctx(context_in), value, actor(at)).expect("update");
        self.replicas[at].insert(key.to_owned(), new.clone());
        for &r in copies {
            self.merge_into(r, key, &new);
        }
        new.context().to_token()
    }

    /// A read at the given replicas: the join of their states, without repair.
    /// Returns (values, context token).
    pub fn read(&self, key: &str, from: &[usize]) -> (Vec<String>, String) {
        let mut joined = ItemState::new();
        for &r in from {
            joined.merge(&self.state(r, key));
        }
        (values_of(&joined), joined.context().to_token())
    }

    fn merge_into(&mut self, replica: usize, key: &str, state: &ItemState) {
        self.replicas[replica].entry(key.to_owned()).or_default().merge(state);
    }

    /// Full anti-entropy on one key: every replica gets the join of all.
    pub fn sync(&mut self, key: &str) {
        let all: Vec<usize> = (0..self.replicas.len()).collect();
        let mut joined = ItemState::new();
        for &r in &all {
            joined.merge(&self.state(r, key));
        }
        for r in all {
            self.replicas[r].insert(key.to_owned(), joined.clone());
        }
    }

    /// The replica loses its disk for this key (a bug or a wiped node).
    pub fn wipe(&mut self, replica: usize, key: &str) {
        self.replicas[replica].remove(key);
    }
}

/// An `ok` op of one process on `key` in table [`TABLE`], invoked and completed at the given ms.
pub fn op(process: u32, kind: OpKind, key: &str, invoke_ms: u64, complete_ms: u64) -> Op {
    Op {
        process,
        kind,
        table: TABLE.into(),
        key: key.into(),
        value: None,
        values: vec![],
        invoke_ns: invoke_ms * MS,
        complete_ns: complete_ms * MS,
        result: OpResult::Ok,
        context_in: None,
        context_out: None,
        setting: None,
        phase: None,
        error: None,
    }
}

/// An `ok` write with its returned token.
pub fn write(process: u32, key: &str, value: &str, t: (u64, u64), ctx_in: Option<&str>, ctx_out: &str) -> Op {
    let mut o = op(process, OpKind::Write, key, t.0, t.1);
    o.value = Some(value.into());
    o.context_in = ctx_in.map(str::to_owned);
    o.context_out = Some(ctx_out.into());
    o
}

/// An `ok` delete with its returned token.
pub fn delete(process: u32, key: &str, t: (u64, u64), ctx_in: Option<&str>, ctx_out: &str) -> Op {
    let mut o = op(process, OpKind::Delete, key, t.0, t.1);
    o.context_in = ctx_in.map(str::to_owned);
    o.context_out = Some(ctx_out.into());
    o
}

/// An `ok` read returning `values` and `ctx_out`.
pub fn read(process: u32, key: &str, t: (u64, u64), values: &[&str], ctx_out: &str) -> Op {
    let mut o = op(process, OpKind::Read, key, t.0, t.1);
    o.values = values.iter().map(|v| (*v).to_owned()).collect();
    o.context_out = Some(ctx_out.into());
    o
}

/// The same op with an unknown outcome (timeout): no returned token.
pub fn info(mut o: Op) -> Op {
    o.result = OpResult::Info;
    o.context_out = None;
    o.values.clear();
    o.error = Some("timeout".into());
    o
}

/// The same op, definitely not applied.
pub fn fail(mut o: Op) -> Op {
    o.result = OpResult::Fail;
    o.context_out = None;
    o.values.clear();
    o.error = Some("refused".into());
    o
}

/// The empty context a read of a never-written key returns.
pub fn empty_token() -> String {
    VersionVector::new().to_token()
}

pub fn final_state(items: &[(&str, &[&str], Option<&str>)]) -> FinalState {
    let mut f = FinalState::default();
    for (key, values, ctx) in items {
        f.push(TABLE, *key, values.iter().map(|v| (*v).to_owned()).collect(), ctx.map(str::to_owned));
    }
    f
}

// -----------------------------------------------------------------------------------------
// Generated histories of a correct register

/// Shape of a generated history.
#[derive(Clone, Copy, Debug)]
pub struct GenParams {
    pub ops: usize,
    pub keys: usize,
    pub processes: u32,
    /// Percent of ops whose outcome is unknown.
    pub info_pct: u32,
    /// Percent of ops that definitely failed.
    pub fail_pct: u32,
    /// Percent of ops that are deletes; the rest are 5 reads to 4 writes.
    pub delete_pct: u32,
}

impl GenParams {
    pub fn small() -> Self {
        GenParams { ops: 120, keys: 2, processes: 5, info_pct: 8, fail_pct: 3, delete_pct: 10 }
    }
}

/// A history of a correct single-copy register store, and its final state.
///
/// Each process issues one op at a time with random gaps and durations (0.05–5 ms, sometimes
/// up to 60 ms), so ops of different processes overlap a lot. Every op that takes effect does
/// so at one instant chosen uniformly inside its interval (`info` ops: anywhere from invoke to
/// 30 ms past their give-up time, or never; `fail` ops: never), in the order of those instants,
/// on one `ItemState` per key. Writes supersede the whole state (the register's semantics; their
/// `context_in` is the context they superseded), coordinators rotate among three actors, reads
/// return the state's values and context. Such a history is linearizable by construction, has no
/// lost writes, no stale reads and no session violations.
pub fn linearizable_history(seed: u64, p: GenParams) -> (History, FinalState) {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<String> = (0..p.keys).map(|k| format!("k{k}")).collect();
    let mut cursor: Vec<u64> = (0..p.processes).map(|_| rng.random_range(0..MS)).collect();
    let mut ops: Vec<Op> = Vec::with_capacity(p.ops);
    // (effect instant, op index) of every op that takes effect.
    let mut effects: Vec<(u64, usize)> = Vec::new();
    for index in 0..p.ops {
        // The process that is free first issues the next op, so all processes stay busy.
        let (process, _) = cursor.iter().enumerate().min_by_key(|(_, &t)| t).expect("processes > 0");
        let invoke_ns = cursor[process] + rng.random_range(0..2 * MS);
        let duration_ns = if rng.random_bool(0.05) {
            rng.random_range(5 * MS..60 * MS)
        } else {
            rng.random_range(MS / 20..5 * MS)
        };
        let complete_ns = invoke_ns + duration_ns;
        cursor[process] = complete_ns;
        let roll = rng.random_range(0..100);
        let result = if roll < p.info_pct {
            OpResult::Info
        } else if roll < p.info_pct + p.fail_pct {
            OpResult::Fail
        } else {
            OpResult::Ok
        };
        let kind = if rng.random_range(0..100) < p.delete_pct {
            OpKind::Delete
        } else if rng.random_range(0..9) < 5 {
            OpKind::Read
        } else {
            OpKind::Write
        };
        let key = keys[rng.random_range(0..keys.len())].clone();
        let effect = match result {
            OpResult::Ok => Some(rng.random_range(invoke_ns..=complete_ns)),
            OpResult::Info if kind != OpKind::Read && rng.random_bool(0.5) => {
                Some(rng.random_range(invoke_ns..=complete_ns + 30 * MS))
            }
            _ => None,
        };
        if let Some(at) = effect {
            effects.push((at, index));
        }
        let mut o = op(process as u32, kind, &key, 0, 0);
        o.invoke_ns = invoke_ns;
        o.complete_ns = complete_ns;
        o.result = result;
        if kind == OpKind::Write {
            o.value = Some(format!("v{index}"));
        }
        match result {
            OpResult::Ok => {}
            OpResult::Info => o.error = Some("timeout".into()),
            OpResult::Fail => o.error = Some("refused".into()),
        }
        ops.push(o);
    }

    effects.sort_unstable();
    let mut states: BTreeMap<String, ItemState> = BTreeMap::new();
    for (_, index) in effects {
        let o = &mut ops[index];
        let state = states.entry(o.key.clone()).or_default();
        match o.kind {
            OpKind::Read => {
                o.values = values_of(state);
                o.context_out = Some(state.context().to_token());
            }
            OpKind::Write | OpKind::Delete => {
                let value = match &o.value {
                    Some(v) => Value::Data(v.as_bytes().to_vec()),
                    None => Value::Tombstone,
                };
                let superseded = state.context().clone();
                let coordinator = rng.random_range(0..3);
                let new = state.update(&superseded, value, actor(coordinator)).expect("update");
                o.context_in = Some(superseded.to_token());
                if o.result == OpResult::Ok {
                    o.context_out = Some(new.context().to_token());
                }
                *state = new;
            }
        }
    }

    let mut final_state = FinalState::default();
    for key in &keys {
        let state = states.get(key).cloned().unwrap_or_default();
        final_state.push(TABLE, key.clone(), values_of(&state), Some(state.context().to_token()));
    }
    (History::new(ops), final_state)
}
