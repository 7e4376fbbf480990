//! One simulated node: the shipping replica machines of `quorumdb_core::replica`, one per
//! shard, run by a driver that maps their effects onto the simulated network, timers and an
//! in-memory store whose crash loses everything not yet synced. Nothing of the protocol lives
//! here; this file only moves messages and keeps the ghost's books.

use super::net::{Endpoint, Message};
use super::world::{Cx, Timer};
use super::{Bug, TICK_MS};
use quorumdb_core::causality::{ActorId, ItemState, Value, VersionVector, WriteId};
use quorumdb_core::consistency::Level;
use quorumdb_core::key::ItemKey;
use quorumdb_core::merkle::{item_digest, MerkleTree};
use quorumdb_core::placement::Placement;
pub(super) use quorumdb_core::replica::ReadRepair as SimReadRepair;
use quorumdb_core::replica::{
    shard_of, ClientRequest, ClientResponse, Effect, Event, Input, MemStore, Now, PeerRequest, PeerResponse,
    QuorumMode, ReadRepair, Replica, ReplicaError, Shared, TreeId, SHARDS_LEN,
};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every message of the simulated cluster: client requests and replies, and the replica's
/// own peer protocol. Keys are indexes into [`Cx::keys`].
#[derive(Clone, Debug)]
pub(super) enum Msg {
    /// Client → any node: read `key` at `r` with a read-repair mode.
    ClientRead {
        op: u64,
        key: usize,
        r: usize,
        repair: ReadRepair,
    },
    /// Client → any node: write (or delete, with `value = None`) `key` at `w`, with a strict
    /// or a sloppy quorum.
    ClientWrite {
        op: u64,
        key: usize,
        value: Option<Vec<u8>>,
        ctx: VersionVector,
        w: usize,
        sloppy: bool,
    },
    /// Gateway → client: the answer to `op`.
    ClientReply {
        op: u64,
        reply: Reply,
    },
    /// A replica's request; `id` is unique across the run, so a reply can never reach a
    /// request of another incarnation.
    Peer {
        id: u64,
        req: PeerRequest,
    },
    PeerReply {
        id: u64,
        resp: PeerResponse,
    },
}

impl Message for Msg {
    fn may_duplicate(&self) -> bool {
        // Everything else is idempotent by design (merges, reads, replies matched by id).
        !matches!(self, Msg::ClientWrite { .. } | Msg::Peer { req: PeerRequest::CoordinateWrite { .. }, .. })
    }
}

/// What a client is told. The split between `Fail` and `Unknown` is the one the history needs:
/// `Fail` only when the write certainly reached no replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// The write was acknowledged by `w` replicas; `ctx` is the coordinator's context after the
    /// update (what the history calls `C(W)`).
    Written {
        ctx: VersionVector,
    },
    Read {
        state: ItemState,
    },
    Fail(String),
    Unknown(String),
}

/// A request sent by one of this node's replicas, waiting for its reply.
#[derive(Clone, Copy, Debug)]
struct Sent {
    shard: usize,
    /// The replica's own id of the request.
    id: u64,
}

/// A simulated node. What survives a crash is the per-shard [`MemStore`]s (the data dir) and
/// the actor id; everything else is rebuilt by [`SimNode::restart`].
pub(super) struct SimNode {
    pub(super) idx: usize,
    /// False while crashed: messages to it are lost and its timers do not fire.
    pub(super) up: bool,
    /// While true time is below this, the process is stopped (SIGSTOP).
    pub(super) paused_until_ms: u64,
    /// Bumped at every crash and restart; timers of an older incarnation are ignored.
    pub(super) incarnation: u64,
    actor: ActorId,
    /// This incarnation's clock offset from true time.
    skew_ms: u64,
    /// The shards' replicas (`None` while crashed, with the stores in `stores`).
    replicas: Vec<Replica<MemStore>>,
    stores: Vec<MemStore>,
    /// Requests in flight by run-unique id.
    sent: BTreeMap<u64, Sent>,
    /// Highest sync each shard asked for since the last group commit.
    sync_wanted: Vec<Option<u64>>,
    sync_scheduled: bool,
    /// The placement this node's process has (the metadata it applied): what a restart opens
    /// with. A layout change sets it before the running replicas get `Input::Placement`.
    pub(super) placement: Arc<Placement>,
}

impl SimNode {
    pub(super) fn new(idx: usize, cx: &mut Cx) -> SimNode {
        let mut node = SimNode {
            idx,
            up: false,
            paused_until_ms: 0,
            incarnation: 0,
            actor: actor_id(idx, 0),
            skew_ms: 0,
            replicas: Vec::new(),
            stores: (0..SHARDS_LEN).map(|_| MemStore::new()).collect(),
            sent: BTreeMap::new(),
            sync_wanted: vec![None; SHARDS_LEN],
            sync_scheduled: false,
            placement: cx.placement.clone(),
        };
        node.start(cx);
        node
    }

    fn now(&self, cx: &Cx) -> Now {
        let ms = cx.now_ms + self.skew_ms;
        Now { mono_ms: ms, wall_ms: ms }
    }

    /// Opens the replicas on the surviving stores (`Node::new` in the server).
    fn start(&mut self, cx: &mut Cx) {
        self.up = true;
        self.skew_ms = cx.draw_skew_ms();
        let now = self.now(cx);
        let shared =
            Arc::new(Shared::with_placement(cx.replica_config.clone(), (*self.placement).clone(), self.idx));
        let stores = std::mem::take(&mut self.stores);
        self.replicas = stores
            .into_iter()
            .enumerate()
            .map(|(shard, store)| {
                let mut r = Replica::open(shared.clone(), store, shard, self.actor, now)
                    .expect("a memory store cannot fail to open");
                r.set_trace(true);
                r
            })
            .collect();
        self.sync_wanted = vec![None; SHARDS_LEN];
        self.sync_scheduled = false;
        for shard in 0..SHARDS_LEN {
            // Opening may have deleted hints; those deletes wait for a sync like any write.
            self.collect(cx, shard);
        }
        let at = cx.now_ms + cx.rng.random_range(1..=TICK_MS);
        cx.timer(at, Timer::NodeTick { node: self.idx, incarnation: self.incarnation });
    }

    /// The item as a read sees it: the latest store, synced or not.
    pub(super) fn current(&self, cx: &Cx, key: usize) -> ItemState {
        let k = &cx.keys[key];
        let store = match self.replicas.get(k.shard) {
            Some(r) => r.store(),
            None => &self.stores[k.shard],
        };
        store.items().get(&k.storage).and_then(|b| ItemState::decode(b).ok()).unwrap_or_default()
    }

    /// The item as a crash would leave it.
    pub(super) fn durable_state(&self, cx: &Cx, key: usize) -> ItemState {
        let k = &cx.keys[key];
        let store = match self.replicas.get(k.shard) {
            Some(r) => r.store(),
            None => &self.stores[k.shard],
        };
        store.durable_item(&k.storage).and_then(|b| ItemState::decode(b).ok()).unwrap_or_default()
    }

    /// Nothing left to flush, deliver or wait for: the liveness phase's notion of idle.
    pub(super) fn is_settled(&self) -> bool {
        self.up && self.replicas.iter().all(|r| r.is_idle() && !r.store().has_unsynced())
    }

    pub(super) fn unsettled_reason(&self) -> String {
        let shards: Vec<String> = self
            .replicas
            .iter()
            .map(|r| {
                format!(
                    "shard {}: {}, unsynced store {}",
                    r.shard(),
                    r.busy_reason(),
                    r.store().has_unsynced()
                )
            })
            .collect();
        format!("up {}; {}", self.up, shards.join("; "))
    }

    /// Hands a new placement to the running replicas (the node applied a layout change).
    pub(super) fn install(&mut self, cx: &mut Cx, placement: Arc<Placement>) {
        self.placement = placement.clone();
        let now = self.now(cx);
        for shard in 0..self.replicas.len() {
            self.replicas[shard].step(now, Input::Placement(placement.clone()));
            self.collect(cx, shard);
        }
    }

    /// Asks the running replicas to stream their data to layout `version`'s owners.
    pub(super) fn sync_layout(&mut self, cx: &mut Cx, version: u64) {
        let now = self.now(cx);
        for shard in 0..self.replicas.len() {
            self.replicas[shard].step(now, Input::SyncLayout { version });
            self.collect(cx, shard);
        }
    }

    /// What the layout trackers would hear from this node: whether every shard has the
    /// placement `p` (same live and read versions), whether a write started under an older
    /// layout still runs, and whether every shard streamed its data for `version`.
    pub(super) fn layout_report(&self, p: &Placement, version: u64) -> (bool, bool, bool) {
        let has = self.up
            && self.replicas.iter().all(|r| {
                r.placement().live_versions() == p.live_versions()
                    && r.placement().read_version() == p.read_version()
            });
        let old_writes = self.replicas.iter().any(|r| r.writes_before(p.newest_version()) > 0);
        let synced = self.up && self.replicas.iter().all(|r| r.synced_version() >= version);
        (has, old_writes, synced)
    }

    /// Root of this node's tree `tree` as kept, and as rebuilt from its durable items.
    pub(super) fn tree_roots(&mut self, cx: &Cx, tree: &TreeId) -> (u64, u64) {
        let Some(r) = self.replicas.get_mut(tree.shard) else { return (0, 0) };
        let kept = r.tree_root(tree);
        let items = r.store().durable_items().iter().filter_map(|(k, v)| {
            let key = cx.keys.iter().find(|sk| &sk.storage == k)?;
            (key.tree == *tree).then(|| (k.clone(), item_digest(k, v)))
        });
        (kept, MerkleTree::from_items(items).root())
    }

    /// Adds the live replicas' counters to the run's (at a crash, and at the end).
    pub(super) fn absorb_stats(&self, counters: &mut super::world::Counters) {
        for r in &self.replicas {
            super::world::add_stats(counters, r.stats());
        }
    }

    // -----------------------------------------------------------------------------------------
    // Crash and restart

    /// Kills the process: everything not durable is gone, requests in flight die with it.
    pub(super) fn crash(&mut self) {
        self.up = false;
        self.incarnation += 1;
        self.paused_until_ms = 0;
        self.stores = std::mem::take(&mut self.replicas)
            .into_iter()
            .map(|r| {
                let mut store = r.into_store();
                store.crash();
                store
            })
            .collect();
        self.sent.clear();
        self.sync_wanted = vec![None; SHARDS_LEN];
        self.sync_scheduled = false;
    }

    /// Starts a new process on the surviving data dir.
    pub(super) fn restart(&mut self, cx: &mut Cx) {
        self.incarnation += 1;
        if cx.bug != Some(Bug::ReuseActorAfterCrash) {
            // As the node's storage does: a restart after a crash mints a fresh actor id. The
            // deliberate bug is the seam left out: the restarted replica keeps its actor and
            // may mint again a dot it minted before the crash.
            let now_ms = self.now(cx).wall_ms;
            self.actor =
                self.actor.successor(now_ms).expect("simulated runs end long before the start field does");
        }
        self.start(cx);
        self.check_acknowledged(cx);
    }

    /// Invariant: every state this node acknowledged as durable is still in its durable store.
    pub(super) fn check_acknowledged(&self, cx: &mut Cx) {
        let acked: Vec<(usize, ItemState)> = cx
            .ghost
            .acked
            .range((self.idx, 0)..(self.idx + 1, 0))
            .map(|((_, key), state)| (*key, state.clone()))
            .collect();
        for (key, acked) in acked {
            let durable = self.durable_state(cx, key);
            if !durable.descends_modulo_pruning(&acked) {
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

    pub(super) fn on_tick(&mut self, cx: &mut Cx) {
        let now = self.now(cx);
        for shard in 0..self.replicas.len() {
            self.replicas[shard].tick(now);
            self.collect(cx, shard);
        }
        cx.timer(cx.now_ms + TICK_MS, Timer::NodeTick { node: self.idx, incarnation: self.incarnation });
    }

    /// The group commit completes: every shard's store is synced and told so.
    pub(super) fn on_sync(&mut self, cx: &mut Cx) {
        self.sync_scheduled = false;
        cx.counters.syncs += 1;
        let now = self.now(cx);
        for shard in 0..self.replicas.len() {
            self.replicas[shard].store_mut().sync();
            if let Some(upto) = self.sync_wanted[shard].take() {
                if cx.bug != Some(Bug::AckBeforeFsync) {
                    self.replicas[shard].step(now, Input::Synced { upto });
                }
                self.collect(cx, shard);
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
    // Messages

    pub(super) fn on_message(&mut self, cx: &mut Cx, from: Endpoint, msg: Msg) {
        let now = self.now(cx);
        let timeout_ms = super::REQUEST_TIMEOUT_MS;
        match (msg, from) {
            (Msg::ClientRead { op, key, r, repair }, Endpoint::Client(_)) => {
                let k = cx.keys[key].item.clone();
                let shard = cx.keys[key].shard;
                let req = ClientRequest::Read {
                    key: k,
                    r: Level::Count(r),
                    repair,
                    mode: QuorumMode::Strict,
                    timeout_ms,
                    floor: None,
                };
                self.step(cx, shard, now, Input::Client { id: op, req });
            }
            (Msg::ClientWrite { op, key, value, ctx, w, sloppy }, Endpoint::Client(_)) => {
                let k = cx.keys[key].item.clone();
                let shard = cx.keys[key].shard;
                let req = ClientRequest::Write {
                    key: k,
                    value,
                    ctx,
                    w: Level::Count(w),
                    mode: if sloppy { QuorumMode::Sloppy } else { QuorumMode::Strict },
                    timeout_ms,
                    fence: None,
                    // Half the clients name their writes (as the Rust client and the CLI do),
                    // half leave it to the gateway (as a bare HTTP client may); a duplicated
                    // client message is then one write either way.
                    write_id: (op % 2 == 0).then_some(WriteId(u128::from(op))),
                };
                self.step(cx, shard, now, Input::Client { id: op, req });
            }
            (Msg::Peer { id, req }, Endpoint::Node(peer)) => {
                let shard = req.shard().unwrap_or(0);
                self.step(cx, shard, now, Input::Peer { from: peer, id, req });
            }
            (Msg::PeerReply { id, resp }, Endpoint::Node(_)) => {
                if let Some(sent) = self.sent.remove(&id) {
                    self.step(cx, sent.shard, now, Input::Response { id: sent.id, result: Ok(resp) });
                }
            }
            (msg, from) => cx.violation(format!("{} got {msg:?} from {from:?}", cx.names[self.idx])),
        }
    }

    fn step(&mut self, cx: &mut Cx, shard: usize, now: Now, input: Input) {
        let Some(r) = self.replicas.get_mut(shard) else { return };
        r.step(now, input);
        self.collect(cx, shard);
    }

    /// Carries out one shard's effects and checks its events against the ghost.
    fn collect(&mut self, cx: &mut Cx, shard: usize) {
        let Some(r) = self.replicas.get_mut(shard) else { return };
        let effects = r.drain_effects();
        let events = r.drain_events();
        let mut lied: Option<u64> = None;
        for event in events {
            self.check_event(cx, event);
        }
        for effect in effects {
            match effect {
                Effect::Send { to, id, req, timeout_ms: _ } => {
                    let net_id = cx.next_id();
                    self.sent.insert(net_id, Sent { shard, id });
                    cx.send(self.idx, Endpoint::Node(to), Msg::Peer { id: net_id, req });
                }
                Effect::Respond { to, id, resp } => {
                    cx.send(self.idx, Endpoint::Node(to), Msg::PeerReply { id, resp })
                }
                Effect::Reply { id, result } => {
                    let Some(&client) = cx.op_clients.get(&id) else { continue };
                    // Invariant: live writers never fill a context. Only the incarnations of
                    // crash-looping nodes could, and their entries are pruned once retired.
                    if let Err(e @ ReplicaError::TooManyWriters(_)) = &result {
                        cx.violation(format!("{}: a write was refused: {e}", cx.names[self.idx]));
                    }
                    let reply = client_reply(result);
                    cx.send(self.idx, Endpoint::Client(client), Msg::ClientReply { op: id, reply });
                }
                Effect::Sync { upto } => {
                    let wanted = &mut self.sync_wanted[shard];
                    *wanted = Some(wanted.map_or(upto, |w| w.max(upto)));
                    if cx.bug == Some(Bug::AckBeforeFsync) {
                        lied = Some(lied.map_or(upto, |l: u64| l.max(upto)));
                    }
                    self.request_sync(cx);
                }
            }
        }
        if let Some(upto) = lied {
            // The seam of the deliberate bug: the driver reports the sync done at once, before
            // the data is durable (it becomes durable at the next group commit, if the node
            // lives that long).
            let now = self.now(cx);
            if let Some(r) = self.replicas.get_mut(shard) {
                r.step(now, Input::Synced { upto });
            }
            self.collect(cx, shard);
        }
    }

    /// Judges one observation of the shipping replica against the ghost's invariants.
    fn check_event(&self, cx: &mut Cx, event: Event) {
        let node = cx.names[self.idx].clone();
        match event {
            Event::Minted { key, dot, value } => {
                if let Some(k) = cx.key_index(&key) {
                    cx.mint(self.idx, k, dot, value);
                }
            }
            Event::Acked { key, state } => {
                if let Some(k) = cx.key_index(&key) {
                    cx.record_ack(self.idx, k, &state);
                }
            }
            Event::Stored { key, old, new } => {
                let Some(k) = cx.key_index(&key) else { return };
                cx.ghost.context_len_max = cx.ghost.context_len_max.max(new.context().len());
                let name = cx.key_name(k);
                // A purge (tombstone GC) is the one store that may shrink an item.
                let purge = new.is_empty() && old.is_deleted();
                if !purge && !new.descends_modulo_pruning(&old) {
                    cx.violation(format!(
                        "{node} replaced {name} {} by {}, which does not descend it",
                        show(&old),
                        show(&new)
                    ));
                }
                if ItemState::decode(&new.encode()).as_ref() != Ok(&new) {
                    cx.violation(format!(
                        "{node}: state of {name} {} does not survive encode/decode",
                        show(&new)
                    ));
                }
                for (dot, value) in new.siblings() {
                    let minted = cx.ghost.minted.get(&(k, *dot));
                    if minted != Some(value) {
                        cx.violation(format!(
                            "{node}: {name} holds sibling {dot} = {} but that dot was minted for {}",
                            show_value(value),
                            minted.map_or("nothing".to_owned(), show_value)
                        ));
                    }
                }
            }
        }
    }
}

/// A client's view of the replica's answer.
fn client_reply(result: Result<ClientResponse, ReplicaError>) -> Reply {
    match result {
        Ok(ClientResponse::Written(state)) => Reply::Written { ctx: state.context().clone() },
        Ok(ClientResponse::Read(state)) => Reply::Read { state },
        Ok(other) => Reply::Unknown(format!("unexpected answer {other:?}")),
        // The write may have reached replicas: a quorum failure after the coordinator stored
        // it, a timeout, a lost connection, an internal error.
        Err(
            e @ (ReplicaError::Quorum(_)
            | ReplicaError::RemoteQuorum { .. }
            | ReplicaError::Timeout(_)
            | ReplicaError::Internal(_)),
        ) => Reply::Unknown(e.to_string()),
        // Refused before anything was stored.
        Err(e) => Reply::Fail(e.to_string()),
    }
}

/// The shard of a key.
pub(super) fn shard_of_key(key: &ItemKey) -> usize {
    shard_of(key.placement_hash())
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

/// The first actor of node `idx`'s data dir: uid `idx + 1`, started at 0 ms; restarts after
/// crashes take its successors, as the server's storage does. Readable in hex
/// (`0000300000000fa0` = node 2, the incarnation started at 4000 ms).
fn actor_id(idx: usize, generation: u64) -> ActorId {
    ActorId::incarnation(idx as u32 + 1, generation)
}
