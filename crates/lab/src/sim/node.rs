//! One simulated node: the protocol cores driven the way `crates/node/src/node.rs` drives them,
//! with storage replaced by two maps (durable and not yet synced) and the transport by
//! messages through [`super::net::Network`].
//!
//! Each handler below names the node function it mirrors. Where the simulation simplifies, the
//! comment says so; the module docs of [`super`] list what is not simulated.

use super::net::{Endpoint, Message};
use super::world::{Cx, Timer};
use super::{
    Bug, ANTIENTROPY_INTERVAL_MS, EXCHANGE_DEADLINE_MS, FAILURE_TIMEOUT_MS, FORWARD_MARGIN_MS,
    HANDOFF_TICK_MS, HEARTBEAT_INTERVAL_MS, REQUEST_TIMEOUT_MS, TICK_MS,
};
use quorumdb_core::antientropy::{Command, Exchange, LeafItems};
use quorumdb_core::causality::{ActorId, Dot, ItemState, Value, VersionVector};
use quorumdb_core::coordinator::{Outcome, ReadCoordinator, WriteCoordinator};
use quorumdb_core::handoff::{HandoffCommand, Hint, HintId, HintQueue};
use quorumdb_core::merkle::{item_digest, leaf_of, MerkleTree};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Every message of the simulated cluster: client requests, the peer protocol of
/// `crates/node/src/wire.rs` (reduced to what the simulated paths use), and replies. Keys are
/// indexes into [`Cx::keys`]; item states travel encoded, as on the real wire, so every hop
/// exercises the codec.
#[derive(Clone, Debug)]
pub(super) enum Msg {
    /// Client → any node: read `key` at `r`.
    ClientRead {
        op: u64,
        key: usize,
        r: usize,
    },
    /// Client → any node: write (or delete, with a tombstone) `key` at `w`.
    ClientWrite {
        op: u64,
        key: usize,
        value: Value,
        ctx: VersionVector,
        w: usize,
    },
    /// Gateway → client: the answer to `op`.
    ClientReply {
        op: u64,
        reply: Reply,
    },
    /// Gateway → home replica: coordinate this write (`Request::CoordinateWrite`).
    CoordinateWrite {
        req: u64,
        key: usize,
        value: Value,
        ctx: VersionVector,
        w: usize,
    },
    /// Write coordinator → gateway.
    WriteReply {
        req: u64,
        reply: Reply,
    },
    /// Merge this state and acknowledge once durable (replication, read repair, hints, pushes).
    Replicate {
        req: u64,
        key: usize,
        state: Vec<u8>,
    },
    Ack {
        req: u64,
    },
    /// Send your state of `key` (replica reads, anti-entropy pulls).
    Read {
        req: u64,
        key: usize,
    },
    Item {
        req: u64,
        state: Vec<u8>,
    },
    /// The request could not be served (a state that does not decode, a bad tree request).
    Refused {
        req: u64,
        message: String,
    },
    /// Anti-entropy: children hashes of `parents` at `level` of the tree of replica set `range`.
    AeHashes {
        req: u64,
        range: u64,
        level: usize,
        parents: Vec<usize>,
    },
    Hashes {
        req: u64,
        hashes: Vec<u64>,
    },
    /// Anti-entropy: `(storage key, digest)` of the items of `range` in each leaf.
    AeLeafKeys {
        req: u64,
        range: u64,
        leaves: Vec<usize>,
    },
    LeafKeys {
        req: u64,
        listings: Vec<(usize, LeafItems)>,
    },
    /// Heartbeat of the failure detector.
    Ping {
        req: u64,
    },
    Pong {
        req: u64,
    },
}

impl Message for Msg {
    fn may_duplicate(&self) -> bool {
        // Everything else is idempotent by design (merges, reads, acks matched by request id).
        !matches!(self, Msg::ClientWrite { .. } | Msg::CoordinateWrite { .. })
    }
}

/// What a client is told. The split between `Fail` and `Unknown` is the one the history needs:
/// `Fail` only when the write certainly reached no replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// The write was acknowledged by `w` replicas; `ctx` is the coordinator's context after the
    /// update (what the history calls `C(W)`).
    Written { ctx: VersionVector },
    /// The read's merged state.
    Read { state: ItemState },
    /// Refused before any replica stored anything (or a read that failed: reads change nothing).
    Fail(String),
    /// The write may or may not have been applied.
    Unknown(String),
}

/// Where a write's answer goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplyTo {
    /// The client asked this node directly.
    Client { client: usize, op: u64 },
    /// Another node forwarded the write here (`Request::CoordinateWrite`).
    Gateway { node: usize, req: u64 },
}

/// A reply to one of this node's requests, whatever its message.
enum Body {
    Ack,
    Item(Vec<u8>),
    Refused(String),
    Hashes(Vec<u64>),
    LeafKeys(Vec<(usize, LeafItems)>),
    Pong,
    Written(Reply),
}

/// Why a request was sent, so its reply (or its timeout) reaches the right state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    WriteReplica {
        job: u64,
    },
    ReadReplica {
        job: u64,
    },
    /// Blocking read repair: the read answers once every such request is settled.
    ReadRepair {
        job: u64,
    },
    /// Read repair of a replica that answered after the decision: nobody waits for it.
    Repair,
    Forward {
        client: usize,
        op: u64,
    },
    Hint {
        id: HintId,
    },
    /// The exchange's current hash or leaf-key request.
    AeStep,
    AePush,
    AePull {
        key: usize,
    },
    Ping,
}

/// A request in flight, removed by its reply or at its deadline (the transport's timeout).
#[derive(Clone, Copy, Debug)]
struct Outstanding {
    peer: usize,
    /// Node clock.
    deadline_ms: u64,
    purpose: Purpose,
}

/// Something released by the next group commit.
#[derive(Clone, Debug)]
enum Waiter {
    /// The coordinating replica's own acknowledgement of a write it coordinates.
    SelfAck { job: u64 },
    /// A `Replicate` to acknowledge; `state` is what the acknowledgement vouches for.
    Ack { to: usize, req: u64, key: usize, state: ItemState },
}

/// A write this node coordinates (`Node::coordinate_write`).
struct WriteJob {
    key: usize,
    /// The state after the update: replicated, hinted, and vouched for by the acks.
    state: ItemState,
    coord: WriteCoordinator,
    reply_to: ReplyTo,
    replied: bool,
}

/// A read this node coordinates (`Node::read` with the default blocking read repair).
struct ReadJob {
    key: usize,
    coord: ReadCoordinator<ItemState>,
    client: usize,
    op: u64,
    /// Node clock; also the deadline of the blocking repairs.
    deadline_ms: u64,
    /// The decided state, held while blocking repairs are in flight.
    answer: Option<ItemState>,
    answered: bool,
    /// Blocking repairs not yet acknowledged, failed or timed out.
    repairing: BTreeSet<u64>,
    /// Replicas already repaired, so the late-reply repairs skip them.
    repaired: Vec<String>,
}

/// What the current exchange waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AeWait {
    Hashes { level: usize },
    LeafKeys,
}

/// The anti-entropy exchange in progress (`AntiEntropy::run_exchange`); one per node at a time.
struct AeRun {
    exchange: Exchange,
    range: u64,
    peer: usize,
    /// The request in flight and what it asked for; a reply to any other request is stale.
    waiting: Option<(u64, AeWait)>,
}

/// A simulated node. Fields split into what survives a crash (the data dir: durable items and
/// hints, and the actor id), what a crash loses (everything else), and bookkeeping.
pub(super) struct SimNode {
    pub(super) idx: usize,
    /// False while crashed: messages to it are lost and its timers do not fire.
    pub(super) up: bool,
    /// While true time is below this, the process is stopped (SIGSTOP): its messages and timers
    /// wait, its clock runs on.
    pub(super) paused_until_ms: u64,
    /// Bumped at every crash and restart; timers of an older incarnation are ignored.
    pub(super) incarnation: u64,
    /// Crashes so far; names the actor of each data-dir incarnation.
    crashes: u64,
    /// Writer identity stamped on the dots this node mints.
    actor: ActorId,
    /// This incarnation's clock offset from true time.
    skew_ms: u64,

    /// Items as the last group commit left them: what survives a crash.
    durable: BTreeMap<usize, ItemState>,
    /// Items stored since the last group commit (fjall's memtable and unsynced journal): reads
    /// see them, a crash loses them.
    unsynced: BTreeMap<usize, ItemState>,
    /// Hints as the last group commit left them.
    durable_hints: BTreeMap<HintId, Hint>,
    /// Hint puts (`Some`) and deletes (`None`) since the last group commit, in order.
    unsynced_hint_ops: Vec<(HintId, Option<Hint>)>,
    /// A `Sync` timer is pending.
    sync_scheduled: bool,
    /// Released by the next group commit.
    waiters: Vec<Waiter>,

    /// Merkle tree of each replica set (bit mask) this node holds items of, kept in step with
    /// every store; rebuilt from the durable items at restart.
    trees: BTreeMap<u64, MerkleTree>,
    /// Digest of each stored item as its tree last saw it (the `old` of the next update).
    digests: BTreeMap<usize, u64>,
    hints: HintQueue,
    /// Failure detector: since when requests to each peer keep failing (node clock), 0 = fine.
    failing_since_ms: Vec<u64>,
    writes: BTreeMap<u64, WriteJob>,
    reads: BTreeMap<u64, ReadJob>,
    outstanding: BTreeMap<u64, Outstanding>,
    exchange: Option<AeRun>,
    next_handoff_ms: u64,
    next_ae_ms: u64,
    next_ping_ms: u64,
}

/// The actor of node `idx` in its `generation`-th data-dir incarnation: readable in hex
/// (`0000000300000002` = node 3, generation 2) and unique in the cluster.
fn actor_id(idx: usize, generation: u64) -> ActorId {
    ActorId(((idx as u64 + 1) << 32) | generation)
}

/// Bit mask of a set of node indexes.
pub(super) fn mask_of(nodes: &[usize]) -> u64 {
    nodes.iter().fold(0, |mask, &n| mask | (1u64 << n))
}

/// Node indexes in a bit mask, ascending.
pub(super) fn members_of(mask: u64) -> Vec<usize> {
    (0..64).filter(|n| mask & (1u64 << n) != 0).collect()
}

impl SimNode {
    pub(super) fn new(idx: usize, cx: &mut Cx) -> SimNode {
        let skew_ms = cx.draw_skew_ms();
        let next_ae_ms = skew_ms + cx.rng.random_range(0..ANTIENTROPY_INTERVAL_MS);
        SimNode {
            idx,
            up: true,
            paused_until_ms: 0,
            incarnation: 0,
            crashes: 0,
            actor: actor_id(idx, 0),
            skew_ms,
            durable: BTreeMap::new(),
            unsynced: BTreeMap::new(),
            durable_hints: BTreeMap::new(),
            unsynced_hint_ops: Vec::new(),
            sync_scheduled: false,
            waiters: Vec::new(),
            trees: BTreeMap::new(),
            digests: BTreeMap::new(),
            hints: HintQueue::new(cx.params.hint_limits),
            failing_since_ms: vec![0; cx.names.len()],
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            exchange: None,
            next_handoff_ms: 0,
            next_ae_ms,
            next_ping_ms: 0,
        }
    }

    /// Starts the timer chain of this incarnation, at a random phase so nodes do not tick in
    /// lockstep.
    pub(super) fn boot(&mut self, cx: &mut Cx) {
        let at = cx.now_ms + cx.rng.random_range(1..=TICK_MS);
        cx.timer(at, Timer::NodeTick { node: self.idx, incarnation: self.incarnation });
    }

    /// This node's clock: true time plus its offset. Only differences of it matter to the
    /// cores (deadlines, back-off, hint age), which is why a constant offset is harmless and a
    /// jump at restart is the interesting case.
    fn clock(&self, cx: &Cx) -> u64 {
        cx.now_ms + self.skew_ms
    }

    /// The item as a read sees it: the latest store, synced or not.
    pub(super) fn current(&self, key: usize) -> ItemState {
        self.unsynced.get(&key).or_else(|| self.durable.get(&key)).cloned().unwrap_or_default()
    }

    /// The item as a crash would leave it.
    pub(super) fn durable_state(&self, key: usize) -> ItemState {
        self.durable.get(&key).cloned().unwrap_or_default()
    }

    /// Nothing left to flush, deliver or wait for: the liveness phase's notion of idle.
    pub(super) fn is_settled(&self) -> bool {
        self.up
            && self.unsynced.is_empty()
            && self.unsynced_hint_ops.is_empty()
            && self.waiters.is_empty()
            && self.hints.is_empty()
            && self.writes.is_empty()
            && self.reads.is_empty()
    }

    /// Why [`SimNode::is_settled`] is false, for a failure report.
    pub(super) fn unsettled_reason(&self) -> String {
        format!(
            "up {}, unsynced items {}, unsynced hint ops {}, waiters {}, hints queued {}, writes {}, \
             reads {}",
            self.up,
            self.unsynced.len(),
            self.unsynced_hint_ops.len(),
            self.waiters.len(),
            self.hints.len(),
            self.writes.len(),
            self.reads.len()
        )
    }

    /// Root of this node's tree of replica set `range` (the empty root if it has none).
    pub(super) fn tree_root(&mut self, range: u64) -> u64 {
        self.trees.entry(range).or_default().root()
    }

    /// Root of a tree rebuilt from the durable items of `range`: what the incrementally kept
    /// tree must equal once everything is synced.
    pub(super) fn rebuilt_root(&self, cx: &Cx, range: u64) -> u64 {
        let items = self.durable.iter().filter_map(|(&k, s)| {
            let key = cx.keys.get(k)?;
            (key.range == range).then(|| (key.storage.clone(), item_digest(&key.storage, &s.encode())))
        });
        MerkleTree::from_items(items).root()
    }

    // -----------------------------------------------------------------------------------------
    // Crash and restart

    /// Kills the process: everything not durable is gone, requests in flight die with it.
    pub(super) fn crash(&mut self, cx: &mut Cx) {
        self.up = false;
        self.incarnation += 1;
        self.crashes += 1;
        self.paused_until_ms = 0;
        self.unsynced.clear();
        self.unsynced_hint_ops.clear();
        self.sync_scheduled = false;
        self.waiters.clear();
        self.trees.clear();
        self.digests.clear();
        self.hints = HintQueue::new(cx.params.hint_limits);
        self.writes.clear();
        self.reads.clear();
        self.outstanding.clear();
        self.exchange = None;
    }

    /// Starts a new process on the surviving data dir (`Node::new`): hints restored, trees
    /// rebuilt, a new clock offset, and a new actor id (see the module docs on dot reuse).
    pub(super) fn restart(&mut self, cx: &mut Cx) {
        self.up = true;
        self.incarnation += 1;
        self.skew_ms = cx.draw_skew_ms();
        if cx.bug != Some(Bug::ReuseActorAfterCrash) {
            self.actor = actor_id(self.idx, self.crashes);
        }
        let now = self.clock(cx);

        let stored: Vec<(HintId, Hint)> = self.durable_hints.iter().map(|(id, h)| (*id, h.clone())).collect();
        let (hints, dropped) = HintQueue::restore(cx.params.hint_limits, stored, now);
        self.hints = hints;
        for command in dropped {
            if let HandoffCommand::Drop { id, .. } | HandoffCommand::Delete { id } = command {
                self.unsynced_hint_ops.push((id, None));
            }
        }
        if !self.unsynced_hint_ops.is_empty() {
            self.request_sync(cx);
        }

        for (&key, state) in &self.durable {
            let Some(k) = cx.keys.get(key) else { continue };
            let digest = item_digest(&k.storage, &state.encode());
            self.trees.entry(k.range).or_default().update(&k.storage, None, Some(digest));
            self.digests.insert(key, digest);
        }
        self.failing_since_ms = vec![0; cx.names.len()];
        self.next_handoff_ms = now;
        self.next_ping_ms = now;
        self.next_ae_ms = now + cx.rng.random_range(0..ANTIENTROPY_INTERVAL_MS);
        self.check_acknowledged(cx);
        self.boot(cx);
    }

    /// Invariant: every state this node acknowledged as durable is still in its durable store.
    /// Durable states only grow (merges and updates descend what they replace), so a crash may
    /// lose unsynced data but never anything acknowledged.
    pub(super) fn check_acknowledged(&self, cx: &mut Cx) {
        let acked: Vec<(usize, ItemState)> = cx
            .ghost
            .acked
            .range((self.idx, 0)..(self.idx + 1, 0))
            .map(|((_, key), state)| (*key, state.clone()))
            .collect();
        for (key, acked) in acked {
            let durable = self.durable_state(key);
            if !durable.descends(&acked) {
                let name = cx.key_name(key);
                cx.violation(format!(
                    "{} lost acknowledged data of {name}: durable state {} does not descend the \
                     acknowledged state {}",
                    cx.names[self.idx],
                    show(&durable),
                    show(&acked)
                ));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Timers

    /// The node's periodic work: overdue replies, coordinator deadlines, hint delivery,
    /// anti-entropy, heartbeats.
    pub(super) fn on_tick(&mut self, cx: &mut Cx) {
        let now = self.clock(cx);
        let overdue: Vec<u64> =
            self.outstanding.iter().filter(|(_, o)| o.deadline_ms <= now).map(|(req, _)| *req).collect();
        for req in overdue {
            if let Some(o) = self.outstanding.remove(&req) {
                self.record(o.peer, false, now);
                self.on_failed(cx, req, o, "timeout".into());
            }
        }
        let jobs: Vec<u64> = self.writes.keys().copied().collect();
        for job in jobs {
            if let Some(j) = self.writes.get_mut(&job) {
                j.coord.tick(now);
            }
            self.drive_write(cx, job);
        }
        let jobs: Vec<u64> = self.reads.keys().copied().collect();
        for job in jobs {
            if let Some(j) = self.reads.get_mut(&job) {
                j.coord.tick(now);
            }
            self.drive_read(cx, job);
        }
        if now >= self.next_handoff_ms {
            self.next_handoff_ms = now + HANDOFF_TICK_MS;
            let up: BTreeSet<String> = (0..cx.names.len())
                .filter(|&p| p != self.idx && self.is_up(p, now))
                .map(|p| cx.names[p].clone())
                .collect();
            let commands = self.hints.tick(now, |target| up.contains(target));
            self.run_handoff(cx, commands);
        }
        if let Some(run) = &mut self.exchange {
            let commands = run.exchange.tick(now);
            self.run_ae(cx, commands);
        } else if now >= self.next_ae_ms {
            self.start_exchange(cx);
        }
        if now >= self.next_ping_ms {
            self.next_ping_ms = now + HEARTBEAT_INTERVAL_MS;
            for peer in (0..cx.names.len()).filter(|&p| p != self.idx) {
                let req = cx.next_id();
                let o =
                    Outstanding { peer, deadline_ms: now + HEARTBEAT_INTERVAL_MS, purpose: Purpose::Ping };
                self.outstanding.insert(req, o);
                cx.send(self.idx, Endpoint::Node(peer), Msg::Ping { req });
            }
        }
        cx.timer(cx.now_ms + TICK_MS, Timer::NodeTick { node: self.idx, incarnation: self.incarnation });
    }

    /// The group commit completes: everything stored so far is durable, and what waited for it
    /// is released.
    pub(super) fn on_sync(&mut self, cx: &mut Cx) {
        self.sync_scheduled = false;
        cx.counters.syncs += 1;
        for (key, state) in std::mem::take(&mut self.unsynced) {
            self.durable.insert(key, state);
        }
        for (id, op) in std::mem::take(&mut self.unsynced_hint_ops) {
            match op {
                Some(hint) => self.durable_hints.insert(id, hint),
                None => self.durable_hints.remove(&id),
            };
        }
        for waiter in std::mem::take(&mut self.waiters) {
            match waiter {
                Waiter::SelfAck { job } => self.self_ack(cx, job),
                Waiter::Ack { to, req, key, state } => {
                    cx.record_ack(self.idx, key, &state);
                    cx.send(self.idx, Endpoint::Node(to), Msg::Ack { req });
                }
            }
        }
    }

    /// Schedules the next group commit unless one is pending. Its delay stands for the fsync
    /// latency plus the batching window; the seed decides the range.
    fn request_sync(&mut self, cx: &mut Cx) {
        if !self.sync_scheduled {
            self.sync_scheduled = true;
            let delay = cx.rng.random_range(1..=cx.params.fsync_ms_max);
            cx.timer(cx.now_ms + delay, Timer::Sync { node: self.idx, incarnation: self.incarnation });
        }
    }

    // -----------------------------------------------------------------------------------------
    // Failure detector (`Node::record`, `Node::is_up`)

    fn record(&mut self, peer: usize, ok: bool, now: u64) {
        let Some(since) = self.failing_since_ms.get_mut(peer) else { return };
        if ok {
            *since = 0;
        } else if *since == 0 {
            *since = now.max(1);
        }
    }

    /// Who a request for `key` goes to, as `Node::request_targets` decides in strict mode: the
    /// home replicas (`pref`, with their `names`), the live remote ones (`targets`) and the names
    /// of those known down, which the coordinator skips.
    fn fan_out(&self, cx: &Cx, key: usize, now: u64) -> (Vec<usize>, Vec<String>, Vec<usize>, Vec<String>) {
        let pref = cx.keys[key].pref.clone();
        let names = pref.iter().map(|&p| cx.names[p].clone()).collect();
        let (targets, down): (Vec<usize>, Vec<usize>) =
            pref.iter().copied().filter(|&p| p != self.idx).partition(|&p| self.is_up(p, now));
        let down = down.into_iter().map(|p| cx.names[p].clone()).collect();
        (pref, names, targets, down)
    }

    fn is_up(&self, peer: usize, now: u64) -> bool {
        let since = self.failing_since_ms.get(peer).copied().unwrap_or(0);
        peer == self.idx || since == 0 || now.saturating_sub(since) < FAILURE_TIMEOUT_MS
    }

    // -----------------------------------------------------------------------------------------
    // Messages

    pub(super) fn on_message(&mut self, cx: &mut Cx, from: Endpoint, msg: Msg) {
        let from_node = match from {
            Endpoint::Node(n) => Some(n),
            Endpoint::Client(_) => None,
        };
        match (msg, from, from_node) {
            (Msg::ClientRead { op, key, r }, Endpoint::Client(client), _) => {
                self.start_read(cx, key, r, client, op)
            }
            (Msg::ClientWrite { op, key, value, ctx, w }, Endpoint::Client(client), _) => {
                if cx.keys[key].pref.contains(&self.idx) {
                    self.coordinate_write(cx, key, value, ctx, w, ReplyTo::Client { client, op });
                } else {
                    self.forward_write(cx, key, value, ctx, w, client, op);
                }
            }
            (Msg::CoordinateWrite { req, key, value, ctx, w }, _, Some(gateway)) => {
                self.coordinate_write(cx, key, value, ctx, w, ReplyTo::Gateway { node: gateway, req })
            }
            (Msg::Replicate { req, key, state }, _, Some(peer)) => {
                self.on_replicate(cx, peer, req, key, &state)
            }
            (Msg::Read { req, key }, _, Some(peer)) => {
                let state = self.current(key).encode();
                cx.send(self.idx, Endpoint::Node(peer), Msg::Item { req, state });
            }
            (Msg::AeHashes { req, range, level, parents }, _, Some(peer)) => {
                let answer = match self.trees.get_mut(&range) {
                    Some(tree) => tree.children_batch(level, &parents),
                    None => MerkleTree::new().children_batch(level, &parents),
                };
                let reply = match answer {
                    Ok(hashes) => Msg::Hashes { req, hashes },
                    Err(e) => Msg::Refused { req, message: e.to_string() },
                };
                cx.send(self.idx, Endpoint::Node(peer), reply);
            }
            (Msg::AeLeafKeys { req, range, leaves }, _, Some(peer)) => {
                let listings = leaves.iter().map(|&leaf| (leaf, self.listing(cx, range, leaf))).collect();
                cx.send(self.idx, Endpoint::Node(peer), Msg::LeafKeys { req, listings });
            }
            (Msg::Ping { req }, _, Some(peer)) => cx.send(self.idx, Endpoint::Node(peer), Msg::Pong { req }),
            (Msg::Ack { req }, _, _) => self.on_reply(cx, req, Body::Ack),
            (Msg::Item { req, state }, _, _) => self.on_reply(cx, req, Body::Item(state)),
            (Msg::Refused { req, message }, _, _) => self.on_reply(cx, req, Body::Refused(message)),
            (Msg::Hashes { req, hashes }, _, _) => self.on_reply(cx, req, Body::Hashes(hashes)),
            (Msg::LeafKeys { req, listings }, _, _) => self.on_reply(cx, req, Body::LeafKeys(listings)),
            (Msg::Pong { req }, _, _) => self.on_reply(cx, req, Body::Pong),
            (Msg::WriteReply { req, reply }, _, _) => self.on_reply(cx, req, Body::Written(reply)),
            (msg, from, _) => cx.violation(format!("{} got {msg:?} from {from:?}", cx.names[self.idx])),
        }
    }

    /// A reply to one of this node's requests. Any reply proves the peer alive.
    fn on_reply(&mut self, cx: &mut Cx, req: u64, body: Body) {
        // Late (after its deadline) or addressed to a previous incarnation: nobody waits.
        let Some(o) = self.outstanding.remove(&req) else { return };
        let now = self.clock(cx);
        self.record(o.peer, true, now);
        let peer_name = cx.names[o.peer].clone();
        match (o.purpose, body) {
            (Purpose::WriteReplica { job }, Body::Ack) => {
                if let Some(j) = self.writes.get_mut(&job) {
                    j.coord.on_response(&peer_name, Ok(()));
                }
                self.drive_write(cx, job);
            }
            (Purpose::ReadReplica { job }, Body::Item(bytes)) => {
                let result = self.decode(cx, &bytes);
                if let Some(j) = self.reads.get_mut(&job) {
                    j.coord.on_response(&peer_name, result);
                }
                self.drive_read(cx, job);
            }
            (Purpose::ReadRepair { job }, _) => {
                if let Some(j) = self.reads.get_mut(&job) {
                    j.repairing.remove(&req);
                }
                self.drive_read(cx, job);
            }
            (Purpose::Repair | Purpose::AePush | Purpose::Ping, _) => {}
            (Purpose::Forward { client, op }, Body::Written(reply)) => {
                cx.send(self.idx, Endpoint::Client(client), Msg::ClientReply { op, reply });
            }
            (Purpose::Hint { id }, Body::Ack) => {
                let commands = self.hints.on_delivered(id, now);
                self.run_handoff(cx, commands);
            }
            (Purpose::AeStep, Body::Hashes(hashes)) => {
                let Some(mut run) = self.exchange.take() else { return };
                let commands = match run.waiting {
                    Some((r, AeWait::Hashes { level })) if r == req => {
                        run.waiting = None;
                        let tree = self.trees.entry(run.range).or_default();
                        run.exchange.on_hashes(level, &hashes, tree)
                    }
                    _ => Vec::new(),
                };
                self.exchange = Some(run);
                self.run_ae(cx, commands);
            }
            (Purpose::AeStep, Body::LeafKeys(listings)) => {
                let Some(mut run) = self.exchange.take() else { return };
                let mut commands = Vec::new();
                if run.waiting == Some((req, AeWait::LeafKeys)) {
                    run.waiting = None;
                    for (leaf, theirs) in listings {
                        let ours = self.listing(cx, run.range, leaf);
                        commands.extend(run.exchange.on_leaf_keys(leaf, theirs, ours));
                    }
                }
                self.exchange = Some(run);
                self.run_ae(cx, commands);
            }
            (Purpose::AePull { key }, Body::Item(bytes)) => {
                if let Ok(state) = self.decode(cx, &bytes) {
                    self.merge_local(cx, key, &state);
                }
            }
            (_, Body::Refused(message)) => self.on_failed(cx, req, o, message),
            (_, _) => self.on_failed(cx, req, o, "unexpected reply".into()),
        }
    }

    /// A request failed: refused, unexpected reply, or timed out.
    fn on_failed(&mut self, cx: &mut Cx, req: u64, o: Outstanding, why: String) {
        let now = self.clock(cx);
        match o.purpose {
            Purpose::WriteReplica { job } => {
                if let Some(j) = self.writes.get_mut(&job) {
                    j.coord.on_response(&cx.names[o.peer], Err(why));
                }
                self.drive_write(cx, job);
            }
            Purpose::ReadReplica { job } => {
                if let Some(j) = self.reads.get_mut(&job) {
                    j.coord.on_response(&cx.names[o.peer], Err(why));
                }
                self.drive_read(cx, job);
            }
            Purpose::ReadRepair { job } => {
                if let Some(j) = self.reads.get_mut(&job) {
                    j.repairing.remove(&req);
                }
                self.drive_read(cx, job);
            }
            Purpose::Forward { client, op } => {
                let reply = Reply::Unknown(format!("write coordinator {} failed: {why}", cx.names[o.peer]));
                cx.send(self.idx, Endpoint::Client(client), Msg::ClientReply { op, reply });
            }
            Purpose::Hint { id } => self.hints.on_failed(id, now),
            Purpose::AeStep => {
                let commands = match &mut self.exchange {
                    Some(run) if run.waiting.is_some_and(|(r, _)| r == req) => {
                        run.waiting = None;
                        run.exchange.on_error(why)
                    }
                    _ => Vec::new(),
                };
                self.run_ae(cx, commands);
            }
            Purpose::Repair | Purpose::AePush | Purpose::AePull { .. } | Purpose::Ping => {}
        }
    }

    /// Decodes a state from the wire. A correct peer never sends one that fails, so a failure
    /// is also an invariant violation.
    fn decode(&self, cx: &mut Cx, bytes: &[u8]) -> Result<ItemState, String> {
        ItemState::decode(bytes).map_err(|e| {
            cx.violation(format!("{} received a state that does not decode: {e}", cx.names[self.idx]));
            e.to_string()
        })
    }

    // -----------------------------------------------------------------------------------------
    // Replica-local operations (`apply_local_write`, `merge_local`, `store`)

    /// Replaces the stored item by `new` (not yet durable), keeping the tree in step, and checks
    /// the invariants of every stored state.
    fn store(&mut self, cx: &mut Cx, key: usize, new: ItemState) {
        let old = self.current(key);
        let node = cx.names[self.idx].clone();
        let name = cx.key_name(key);
        if !new.descends(&old) {
            cx.violation(format!(
                "{node} replaced {name} {} by {}, which does not descend it",
                show(&old),
                show(&new)
            ));
        }
        let encoded = new.encode();
        if ItemState::decode(&encoded).as_ref() != Ok(&new) {
            cx.violation(format!("{node}: state of {name} {} does not survive encode/decode", show(&new)));
        }
        for (dot, value) in new.siblings() {
            let minted = cx.ghost.minted.get(&(key, *dot));
            if minted != Some(value) {
                cx.violation(format!(
                    "{node}: {name} holds sibling {dot} = {} but that dot was minted for {}",
                    show_value(value),
                    minted.map_or("nothing".to_owned(), show_value)
                ));
            }
        }
        let k = &cx.keys[key];
        let digest = item_digest(&k.storage, &encoded);
        self.trees.entry(k.range).or_default().update(
            &k.storage,
            self.digests.get(&key).copied(),
            Some(digest),
        );
        self.digests.insert(key, digest);
        self.unsynced.insert(key, new);
        self.request_sync(cx);
    }

    /// Merges `incoming` into the local item unless it holds it already (`Node::merge_local`,
    /// without the wait for durability, which callers that acknowledge add themselves).
    fn merge_local(&mut self, cx: &mut Cx, key: usize, incoming: &ItemState) {
        let local = self.current(key);
        if !local.descends(incoming) {
            self.store(cx, key, ItemState::merged(&local, incoming));
        }
    }

    /// `Request::Replicate`: merge, then acknowledge once durable.
    fn on_replicate(&mut self, cx: &mut Cx, peer: usize, req: u64, key: usize, bytes: &[u8]) {
        let incoming = match self.decode(cx, bytes) {
            Ok(state) => state,
            Err(message) => {
                cx.send(self.idx, Endpoint::Node(peer), Msg::Refused { req, message });
                return;
            }
        };
        self.merge_local(cx, key, &incoming);
        if cx.bug == Some(Bug::AckBeforeFsync) {
            cx.record_ack(self.idx, key, &incoming);
            cx.send(self.idx, Endpoint::Node(peer), Msg::Ack { req });
        } else {
            // Even an unchanged state may not be durable yet (another writer stored it a moment
            // ago), so the acknowledgement always waits for the next group commit.
            self.waiters.push(Waiter::Ack { to: peer, req, key, state: incoming });
            self.request_sync(cx);
        }
    }

    /// The items of replica set `range` in `leaf`, with the digests the tree holds.
    fn listing(&self, cx: &Cx, range: u64, leaf: usize) -> LeafItems {
        self.digests
            .iter()
            .filter_map(|(&key, &digest)| {
                let k = cx.keys.get(key)?;
                (k.range == range && leaf_of(&k.storage) == leaf).then(|| (k.storage.clone(), digest))
            })
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Writes (`Node::write`, `Node::coordinate_write`)

    /// A write at a node that is not a home replica: forward it to the first home replica
    /// believed up. With none, the write reached nobody: a certain failure.
    #[allow(clippy::too_many_arguments)]
    fn forward_write(
        &mut self,
        cx: &mut Cx,
        key: usize,
        value: Value,
        ctx: VersionVector,
        w: usize,
        client: usize,
        op: u64,
    ) {
        let now = self.clock(cx);
        let target = cx.keys[key].pref.iter().copied().find(|&p| self.is_up(p, now));
        let Some(target) = target else {
            let reply = Reply::Fail("no home replica of this key is reachable".into());
            cx.send(self.idx, Endpoint::Client(client), Msg::ClientReply { op, reply });
            return;
        };
        let req = cx.next_id();
        let deadline_ms = now + REQUEST_TIMEOUT_MS + FORWARD_MARGIN_MS;
        self.outstanding
            .insert(req, Outstanding { peer: target, deadline_ms, purpose: Purpose::Forward { client, op } });
        cx.send(self.idx, Endpoint::Node(target), Msg::CoordinateWrite { req, key, value, ctx, w });
    }

    /// The home replica's half of a write: a new dot from the local state, stored, then made
    /// durable locally while it is replicated to the other home replicas in parallel.
    fn coordinate_write(
        &mut self,
        cx: &mut Cx,
        key: usize,
        value: Value,
        ctx: VersionVector,
        w: usize,
        reply_to: ReplyTo,
    ) {
        let now = self.clock(cx);
        let new = match self.current(key).update(&ctx, value, self.actor) {
            Ok(state) => state,
            Err(e) => {
                // Refused before anything was stored: a certain failure.
                reply(cx, self.idx, reply_to, Reply::Fail(e.to_string()));
                return;
            }
        };
        let dot = Dot { actor: self.actor, counter: new.context().get(self.actor) };
        match new.siblings().iter().find(|(d, _)| *d == dot) {
            Some((_, v)) => {
                let v = v.clone();
                cx.mint(self.idx, key, dot, v);
            }
            None => cx.violation(format!("{}: update produced no sibling {dot}", cx.names[self.idx])),
        }
        self.store(cx, key, new.clone());

        let (_, names, targets, down) = self.fan_out(cx, key, now);
        let deadline_ms = now + REQUEST_TIMEOUT_MS;
        let mut coord = WriteCoordinator::new(names, w, deadline_ms);
        for name in &down {
            coord.skip(name);
        }
        let job = cx.next_id();
        self.writes.insert(job, WriteJob { key, state: new.clone(), coord, reply_to, replied: false });
        if cx.bug == Some(Bug::AckBeforeFsync) {
            self.self_ack(cx, job);
        } else {
            self.waiters.push(Waiter::SelfAck { job });
            self.request_sync(cx);
        }
        let encoded = new.encode();
        for peer in targets {
            let req = cx.next_id();
            self.outstanding
                .insert(req, Outstanding { peer, deadline_ms, purpose: Purpose::WriteReplica { job } });
            cx.send(self.idx, Endpoint::Node(peer), Msg::Replicate { req, key, state: encoded.clone() });
        }
        self.drive_write(cx, job);
    }

    /// The coordinating replica's own acknowledgement.
    fn self_ack(&mut self, cx: &mut Cx, job: u64) {
        if let Some(j) = self.writes.get_mut(&job) {
            cx.record_ack(self.idx, j.key, &j.state);
            j.coord.on_response(&cx.names[self.idx], Ok(()));
        }
        self.drive_write(cx, job);
    }

    /// Answers once decided (a failure only once every replica answered or the deadline
    /// passed, as the node does), and when finished hints the home replicas that did not
    /// acknowledge.
    fn drive_write(&mut self, cx: &mut Cx, job: u64) {
        let Some(mut j) = self.writes.remove(&job) else { return };
        match j.coord.decision() {
            Some(Ok(())) if !j.replied => {
                j.replied = true;
                reply(cx, self.idx, j.reply_to, Reply::Written { ctx: j.state.context().clone() });
            }
            Some(Err(e)) if j.coord.is_finished() && !j.replied => {
                j.replied = true;
                reply(cx, self.idx, j.reply_to, Reply::Unknown(e.to_string()));
            }
            _ => {}
        }
        if !j.coord.is_finished() {
            self.writes.insert(job, j);
            return;
        }
        let now = self.clock(cx);
        let me = self.idx;
        for home in cx.keys[j.key].pref.clone().into_iter().filter(|&h| h != me) {
            let name = &cx.names[home];
            let acked = j.coord.outcomes().iter().any(|(n, o)| n == name && *o == Outcome::Ok);
            if !acked {
                self.add_hint(cx, home, j.key, &j.state, now);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Hinted handoff (`Node::add_hint`, `Node::run_handoff_commands`)

    /// Queues a hint and stores it (durable with the next group commit). Like the node, the new
    /// hint replaces any queued hint for the same `(target, key)` without merging their states.
    /// With strict quorums that loses nothing: only this replica hints from this queue, and its
    /// later state for the key descends the earlier one (its store only grows, and a hint is
    /// never durable before the state it carries: the state is stored first). The core's
    /// contract asks for a merge
    /// because sloppy-quorum stand-ins (not simulated) collect hints from several coordinators.
    fn add_hint(&mut self, cx: &mut Cx, target: usize, key: usize, state: &ItemState, now: u64) {
        let hint = Hint {
            target: cx.names[target].clone(),
            key: cx.keys[key].storage.clone(),
            state: state.encode(),
            created_ms: now,
        };
        match self.hints.add(hint.clone(), now) {
            Ok(added) => {
                cx.counters.hints_added += 1;
                self.unsynced_hint_ops.push((added.id, Some(hint)));
                if let Some(old) = added.superseded {
                    self.unsynced_hint_ops.push((old, None));
                }
                self.request_sync(cx);
            }
            Err(_) => cx.counters.hints_refused += 1,
        }
    }

    fn run_handoff(&mut self, cx: &mut Cx, commands: Vec<HandoffCommand>) {
        let now = self.clock(cx);
        for command in commands {
            match command {
                HandoffCommand::Deliver { id, target, key, state } => {
                    let (Some(peer), Some(key)) = (cx.index_of(&target), cx.key_index(&key)) else {
                        self.hints.on_failed(id, now);
                        continue;
                    };
                    let req = cx.next_id();
                    let deadline_ms = now + REQUEST_TIMEOUT_MS;
                    self.outstanding
                        .insert(req, Outstanding { peer, deadline_ms, purpose: Purpose::Hint { id } });
                    cx.send(self.idx, Endpoint::Node(peer), Msg::Replicate { req, key, state });
                }
                HandoffCommand::Delete { id } => {
                    cx.counters.hints_delivered += 1;
                    self.unsynced_hint_ops.push((id, None));
                    self.request_sync(cx);
                }
                HandoffCommand::Drop { id, .. } => {
                    cx.counters.hints_dropped += 1;
                    self.unsynced_hint_ops.push((id, None));
                    self.request_sync(cx);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reads (`Node::read`, blocking read repair)

    fn start_read(&mut self, cx: &mut Cx, key: usize, r: usize, client: usize, op: u64) {
        let now = self.clock(cx);
        let (pref, names, targets, down) = self.fan_out(cx, key, now);
        let deadline_ms = now + REQUEST_TIMEOUT_MS;
        let mut coord = ReadCoordinator::new(names, r, deadline_ms);
        for name in &down {
            coord.skip(name);
        }
        if pref.contains(&self.idx) {
            coord.on_response(&cx.names[self.idx], Ok(self.current(key)));
        }
        let job = cx.next_id();
        let read = ReadJob {
            key,
            coord,
            client,
            op,
            deadline_ms,
            answer: None,
            answered: false,
            repairing: BTreeSet::new(),
            repaired: Vec::new(),
        };
        self.reads.insert(job, read);
        for peer in targets {
            let req = cx.next_id();
            self.outstanding
                .insert(req, Outstanding { peer, deadline_ms, purpose: Purpose::ReadReplica { job } });
            cx.send(self.idx, Endpoint::Node(peer), Msg::Read { req, key });
        }
        self.drive_read(cx, job);
    }

    /// At the decision, repairs the stale replicas that replied and answers once they are
    /// settled; once every replica replied (or the deadline passed), repairs the late ones.
    fn drive_read(&mut self, cx: &mut Cx, job: u64) {
        let Some(mut j) = self.reads.remove(&job) else { return };
        if !j.answered {
            match j.coord.decision() {
                Some(Ok(state)) => {
                    if j.answer.is_none() {
                        for (replica, repaired) in j.coord.repairs() {
                            let purpose = Purpose::ReadRepair { job };
                            if let Some(req) =
                                self.repair(cx, &replica, j.key, &repaired, j.deadline_ms, purpose)
                            {
                                j.repairing.insert(req);
                            }
                            j.repaired.push(replica);
                        }
                        j.answer = Some(state);
                    }
                    if j.repairing.is_empty() {
                        j.answered = true;
                        let reply = Reply::Read { state: j.answer.clone().unwrap_or_default() };
                        cx.send(self.idx, Endpoint::Client(j.client), Msg::ClientReply { op: j.op, reply });
                    }
                }
                Some(Err(e)) if j.coord.is_finished() => {
                    j.answered = true;
                    let reply = Reply::Fail(e.to_string());
                    cx.send(self.idx, Endpoint::Client(j.client), Msg::ClientReply { op: j.op, reply });
                }
                _ => {}
            }
        }
        if !(j.answered && j.coord.is_finished()) {
            self.reads.insert(job, j);
            return;
        }
        if j.coord.decision().is_some_and(|d| d.is_ok()) {
            let deadline_ms = self.clock(cx) + REQUEST_TIMEOUT_MS;
            for (replica, repaired) in j.coord.repairs() {
                if !j.repaired.contains(&replica) {
                    self.repair(cx, &replica, j.key, &repaired, deadline_ms, Purpose::Repair);
                }
            }
        }
    }

    /// Sends the merged state to one stale replica (`Node::repair_one`); returns the request id
    /// to wait for, or `None` when the stale replica is this node (merged at once).
    fn repair(
        &mut self,
        cx: &mut Cx,
        replica: &str,
        key: usize,
        state: &ItemState,
        deadline_ms: u64,
        purpose: Purpose,
    ) -> Option<u64> {
        let peer = cx.index_of(replica)?;
        cx.counters.read_repairs += 1;
        if peer == self.idx {
            self.merge_local(cx, key, state);
            return None;
        }
        let req = cx.next_id();
        self.outstanding.insert(req, Outstanding { peer, deadline_ms, purpose });
        cx.send(self.idx, Endpoint::Node(peer), Msg::Replicate { req, key, state: state.encode() });
        Some(req)
    }

    // -----------------------------------------------------------------------------------------
    // Anti-entropy (`AntiEntropy::run_exchange`)

    /// Starts an exchange of one replica set this node belongs to with one peer believed up.
    fn start_exchange(&mut self, cx: &mut Cx) {
        let now = self.clock(cx);
        self.next_ae_ms = now + ANTIENTROPY_INTERVAL_MS;
        let ranges = cx.ranges_of.get(self.idx).cloned().unwrap_or_default();
        if ranges.is_empty() {
            return;
        }
        let range = ranges[cx.rng.random_range(0..ranges.len())];
        let peers: Vec<usize> =
            members_of(range).into_iter().filter(|&p| p != self.idx && self.is_up(p, now)).collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[cx.rng.random_range(0..peers.len())];
        let (exchange, commands) = Exchange::start(
            range,
            cx.names[peer].clone(),
            cx.params.exchange_limits,
            now + EXCHANGE_DEADLINE_MS,
        );
        self.exchange = Some(AeRun { exchange, range, peer, waiting: None });
        self.run_ae(cx, commands);
    }

    fn run_ae(&mut self, cx: &mut Cx, commands: Vec<Command>) {
        let now = self.clock(cx);
        for command in commands {
            let Some((peer, range)) = self.exchange.as_ref().map(|run| (run.peer, run.range)) else { return };
            let deadline_ms = now + REQUEST_TIMEOUT_MS;
            match command {
                Command::RequestHashes { level, parents } => {
                    let req = cx.next_id();
                    if let Some(run) = &mut self.exchange {
                        run.waiting = Some((req, AeWait::Hashes { level }));
                    }
                    self.outstanding.insert(req, Outstanding { peer, deadline_ms, purpose: Purpose::AeStep });
                    cx.send(self.idx, Endpoint::Node(peer), Msg::AeHashes { req, range, level, parents });
                }
                Command::RequestLeafKeys { leaves } => {
                    let req = cx.next_id();
                    if let Some(run) = &mut self.exchange {
                        run.waiting = Some((req, AeWait::LeafKeys));
                    }
                    self.outstanding.insert(req, Outstanding { peer, deadline_ms, purpose: Purpose::AeStep });
                    cx.send(self.idx, Endpoint::Node(peer), Msg::AeLeafKeys { req, range, leaves });
                }
                Command::Push { keys } => {
                    let keys: Vec<usize> = keys.iter().filter_map(|k| cx.key_index(k)).collect();
                    for key in keys {
                        cx.counters.keys_pushed += 1;
                        let req = cx.next_id();
                        self.outstanding
                            .insert(req, Outstanding { peer, deadline_ms, purpose: Purpose::AePush });
                        let state = self.current(key).encode();
                        cx.send(self.idx, Endpoint::Node(peer), Msg::Replicate { req, key, state });
                    }
                }
                Command::Pull { keys } => {
                    let keys: Vec<usize> = keys.iter().filter_map(|k| cx.key_index(k)).collect();
                    for key in keys {
                        cx.counters.keys_pulled += 1;
                        let req = cx.next_id();
                        let purpose = Purpose::AePull { key };
                        self.outstanding.insert(req, Outstanding { peer, deadline_ms, purpose });
                        cx.send(self.idx, Endpoint::Node(peer), Msg::Read { req, key });
                    }
                }
                Command::Done(stats) => {
                    cx.counters.exchanges_done += 1;
                    self.exchange = None;
                    if stats.more_remaining {
                        // The node runs the next exchange at once when a bound cut this one short.
                        self.next_ae_ms = now;
                    }
                }
                Command::Failed(_) => {
                    cx.counters.exchanges_failed += 1;
                    self.exchange = None;
                }
            }
        }
    }
}

/// Sends a write's answer to whoever asked.
fn reply(cx: &mut Cx, from: usize, to: ReplyTo, reply: Reply) {
    match to {
        ReplyTo::Client { client, op } => {
            cx.send(from, Endpoint::Client(client), Msg::ClientReply { op, reply })
        }
        ReplyTo::Gateway { node, req } => cx.send(from, Endpoint::Node(node), Msg::WriteReply { req, reply }),
    }
}

/// A state for failure messages: context and siblings, values as text.
pub(super) fn show(state: &ItemState) -> String {
    let siblings: Vec<String> =
        state.siblings().iter().map(|(dot, value)| format!("{dot}={}", show_value(value))).collect();
    format!("{} [{}]", state.context(), siblings.join(", "))
}

pub(super) fn show_value(value: &Value) -> String {
    match value {
        Value::Data(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::Tombstone => "(delete)".to_owned(),
    }
}
