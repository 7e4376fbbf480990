//! The driver of this node's metadata group member (`quorumdb_meta::MetaNode`).
//!
//! One OS thread ("meta") with a single-threaded runtime owns the member. Inputs arrive over
//! a bounded channel (peer raft messages, proposals from HTTP handlers, unreachable reports)
//! and from a tick timer; the member's effects are carried out in order: `Persist` deltas go to
//! the `raft` keyspace and are made durable by the group commit before any later effect
//! (a vote or an append acknowledgement must never leave before it is on disk); `Send`s go to
//! the peer over the transport (`Request::Raft`), `Reply`s to the waiting HTTP handler.
//! The applied metadata is published in a [`MetaView`] that readers clone cheaply.
//!
//! Founding members and raft ids: every founding member (the configured list, or for a node
//! that joined, the founders it was told) gets raft id = its position in the list sorted by
//! member id, plus one; a member that joined later gets a hash of its id
//! (`quorumdb_meta::member_raft_id`). Up to five founders vote, picked round-robin over zones
//! so that losing one zone costs the fewest voters; the rest are learners, which receive every
//! change but do not vote. Members added by a committed layout become learners too (the leader
//! proposes the conf change, `MetaNode::follow_layout`).
//!
//! Address book: raft messages go to the peer address of the member in the latest applied
//! layout (so members that are not in the static config are reached), the configured members
//! being the seed until the metadata is bootstrapped. A peer whose address changed gets a new
//! client; every client goes through the fault layer.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use quorumdb_meta::auth::AuthCommand;
use quorumdb_meta::wire::{decode_message, encode_message};
use quorumdb_meta::{
    member_raft_id, Command, Conflict, Effect, Input, MemberSpec, MetaConfig, MetaNode, MetaStorage,
    Metadata, Outcome, ProposeError, RaftMessage, TableDef,
};
use tokio::sync::{mpsc, oneshot};

use crate::config::{MemberConfig, NodeConfig};
use crate::storage::{allow_fjall_on_this_thread, Storage};
use crate::transport::{FaultLayer, PeerClient};
use crate::wire::{Request, Response};

/// Inputs waiting for the meta thread; more are refused (raft retransmits, clients retry).
pub const META_QUEUE_LEN_MAX: usize = 4096;
/// How long one raft message may take to reach a peer before it counts as unreachable.
const RAFT_SEND_TIMEOUT_MS: u64 = 1_000;
/// Most voters a founding group gets.
pub const META_VOTERS_MAX: usize = 5;

/// What HTTP handlers and status pages read.
#[derive(Clone, Debug, Default)]
pub struct MetaView {
    /// Shared: readers clone the view per request, and the log's index makes the metadata
    /// large; a copy of the `Arc` is cheap, and the copy made on each applied step shares
    /// every untouched topic and index chunk (see `quorumdb_meta::log`).
    pub metadata: Arc<Metadata>,
    pub raft_id: u64,
    pub term: u64,
    pub applied_index: u64,
    pub commit_index: u64,
    /// Member id of the leader this node knows of.
    pub leader: Option<String>,
    pub is_leader: bool,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
}

/// Where the answer to one proposal goes.
type ReplyTx = oneshot::Sender<Result<Outcome, ProposeError>>;
/// Pause between proposals while no metadata leader is known.
const NO_LEADER_RETRY: Duration = Duration::from_millis(100);
type ReadTx = oneshot::Sender<Result<u64, ProposeError>>;

enum MetaMsg {
    Raft(Box<RaftMessage>),
    Propose { command: Command, reply: ReplyTx },
    ReadIndex { reply: ReadTx },
    Unreachable(u64),
    Stop { done: oneshot::Sender<()> },
}

/// A handle on the meta thread.
#[derive(Clone)]
pub struct Meta {
    tx: mpsc::Sender<MetaMsg>,
    view: Arc<RwLock<MetaView>>,
    /// The applied index, for waiters (long-polling Kafka fetches).
    applied: tokio::sync::watch::Receiver<u64>,
    ids: Arc<Ids>,
}

/// Raft ids of members: founders by position, joined members by hash (see the module doc).
#[derive(Clone, Debug)]
struct Ids {
    /// Founding member ids, sorted.
    founders: Vec<String>,
}

impl Ids {
    fn new(config: &NodeConfig) -> Ids {
        let mut founders: Vec<String> = config.founding_members().iter().map(|m| m.id.clone()).collect();
        founders.sort();
        founders.dedup();
        Ids { founders }
    }

    fn raft_id(&self, member: &str) -> u64 {
        member_raft_id(&self.founders, member)
    }

    /// The member a raft id names: a founder, or a member of the applied layout.
    fn name(&self, id: u64, metadata: &Metadata) -> String {
        if let Some(f) = id.checked_sub(1).and_then(|i| self.founders.get(i as usize)) {
            return f.clone();
        }
        metadata
            .layout()
            .and_then(|l| l.members.keys().find(|m| self.raft_id(m) == id).cloned())
            .unwrap_or_else(|| format!("raft-{id}"))
    }
}

/// The founding voters: up to [`META_VOTERS_MAX`] (an odd number when there are at least 3
/// members), taken round-robin over zones in id order; the rest learn.
pub fn founding_voters(members: &[MemberConfig]) -> (Vec<String>, Vec<String>) {
    let n = members.len();
    let want = match n {
        0 => 0,
        1 | 2 => 1,
        3 | 4 => 3,
        _ => META_VOTERS_MAX,
    };
    let mut by_zone: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in members {
        by_zone.entry(m.zone.as_str()).or_default().push(m.id.as_str());
    }
    for ids in by_zone.values_mut() {
        ids.sort_unstable();
    }
    let mut voters = Vec::new();
    let mut round = 0;
    while voters.len() < want {
        for ids in by_zone.values() {
            if let Some(id) = ids.get(round) {
                if voters.len() < want {
                    voters.push(id.to_string());
                }
            }
        }
        round += 1;
    }
    voters.sort();
    let mut learners: Vec<String> =
        members.iter().map(|m| m.id.clone()).filter(|id| !voters.contains(id)).collect();
    learners.sort();
    (voters, learners)
}

/// The command that founds the metadata from the static configuration.
fn bootstrap_command(config: &NodeConfig) -> Command {
    let members = config
        .founding_members()
        .iter()
        .map(|m| MemberSpec {
            id: m.id.clone(),
            zone: m.zone.clone(),
            peer_address: m.peer.clone(),
            http_address: if m.http.is_empty() { "-".into() } else { m.http.clone() },
        })
        .collect();
    let tables = config
        .tables
        .iter()
        .map(|t| TableDef {
            name: t.name.clone(),
            replicas: t.replication_factor.min(u8::MAX as usize) as u8,
            conflict: Conflict::from_name(t.conflict.name()).unwrap_or(Conflict::Siblings),
        })
        .collect();
    let default_replicas = config.replication_factor.min(u8::MAX as usize) as u8;
    Command::Bootstrap { members, default_replicas, tables }
}

impl Meta {
    /// Opens (or founds) this node's member and starts the meta thread.
    pub async fn start(
        config: NodeConfig,
        storage: Arc<Storage>,
        faults: Arc<FaultLayer>,
        tls: Option<Arc<crate::tls::Tls>>,
    ) -> Result<Meta, String> {
        let ids = Ids::new(&config);
        if !config.members.iter().any(|m| m.id == config.node_id) {
            return Err("node_id is not a member".into());
        }
        let me = ids.raft_id(&config.node_id);
        // A node that joined starts from the founding configuration like every founder (and
        // is not in it): the committed conf changes that add it reach it through the log or
        // in the leader's snapshot.
        let (voters, learners) = founding_voters(config.founding_members());
        let raft_ids = |names: &[String]| names.iter().map(|n| ids.raft_id(n)).collect::<Vec<_>>();
        let meta_config = MetaConfig::new(me, raft_ids(&voters), raft_ids(&learners), rand::random())
            .with_founders(ids.founders.clone());
        let view = Arc::new(RwLock::new(MetaView {
            raft_id: me,
            voters: voters.clone(),
            learners: learners.clone(),
            ..MetaView::default()
        }));
        let (tx, rx) = mpsc::channel(META_QUEUE_LEN_MAX);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (applied_tx, applied) = tokio::sync::watch::channel(0);
        let shared_ids = Arc::new(ids.clone());
        let cx = MetaCx {
            config,
            storage,
            faults,
            tls,
            ids,
            view: view.clone(),
            tx: tx.clone(),
            applied: applied_tx,
        };
        std::thread::Builder::new()
            .name("meta".into())
            .spawn(move || run_meta(cx, meta_config, rx, ready_tx))
            .map_err(|e| format!("cannot start the metadata thread: {e}"))?;
        ready_rx.await.map_err(|_| "the metadata thread stopped while opening".to_string())??;
        Ok(Meta { tx, view, applied, ids: shared_ids })
    }

    /// Changes whenever this node applies a committed command.
    pub fn applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Waits until `done` holds for the applied view (checked at once and after every applied
    /// step), or `timeout` passed; returns the view it last saw. A node that lags the metadata
    /// leader by a few entries uses this before refusing something another node has already
    /// committed (a fresh fencing token, offsets beyond its high watermark).
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&MetaView) -> bool) -> MetaView {
        let mut applied = self.applied.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            applied.borrow_and_update();
            let view = self.view();
            if done(&view) {
                return view;
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => return self.view(),
            }
        }
    }

    /// The raft id of a member (what Kafka clients see as its broker id).
    pub fn raft_id(&self, member: &str) -> Option<u64> {
        Some(self.ids.raft_id(member))
    }

    /// The latest applied metadata alone (cheaper than [`Meta::view`]: one `Arc` copy).
    pub fn metadata(&self) -> Arc<Metadata> {
        self.view.read().map(|v| v.metadata.clone()).unwrap_or_default()
    }

    /// The latest applied metadata and group status.
    pub fn view(&self) -> MetaView {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// The last fencing token granted for `name`, read without copying the metadata (every
    /// fenced write asks).
    pub fn last_token(&self, name: &str) -> u64 {
        self.view.read().map(|v| v.metadata.last_token(name)).unwrap_or(0)
    }

    /// Hands a peer's raft message to the member. Dropped when the queue is full (raft resends).
    pub fn receive(&self, bytes: &[u8]) -> Result<(), String> {
        let m = decode_message(bytes)?;
        self.tx.try_send(MetaMsg::Raft(Box::new(m))).map_err(|_| "the metadata queue is full".to_string())
    }

    /// Proposes a command and waits for its commit (the member answers within its proposal
    /// timeout).
    pub async fn propose(&self, command: Command) -> Result<Outcome, ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(MetaMsg::Propose { command, reply })
            .map_err(|_| ProposeError::Busy { max: META_QUEUE_LEN_MAX })?;
        rx.await.unwrap_or(Err(ProposeError::NoLeader))
    }

    /// [`Meta::propose`], waiting out an election: `NoLeader` means nothing was proposed, so
    /// it is retried until `timeout`. For operator requests, which should not fail merely
    /// because they arrived during the first second of a cluster or a leader change.
    pub async fn propose_waiting(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<Outcome, ProposeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.propose(command.clone()).await {
                Err(ProposeError::NoLeader) if tokio::time::Instant::now() + NO_LEADER_RETRY < deadline => {
                    tokio::time::sleep(NO_LEADER_RETRY).await;
                }
                other => return other,
            }
        }
    }

    /// A view that reflects every metadata change committed before this call, on any node
    /// (raft's ReadIndex: the leader's commit index, confirmed by a quorum, then applied
    /// here). What a node that may lag — just restarted, briefly cut off — uses before it
    /// answers something a client may compare with what another node acknowledged (a
    /// partition's high watermark).
    /// An election in progress (no leader known) is waited out until `timeout`.
    pub async fn linearizable_view(&self, timeout: Duration) -> Result<MetaView, ProposeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let index = loop {
            let (reply, rx) = oneshot::channel();
            self.tx
                .try_send(MetaMsg::ReadIndex { reply })
                .map_err(|_| ProposeError::Busy { max: META_QUEUE_LEN_MAX })?;
            let answer = tokio::time::timeout_at(deadline, rx)
                .await
                .map_err(|_| ProposeError::Timeout { timeout_ms: timeout.as_millis() as u64 })?
                .unwrap_or(Err(ProposeError::NoLeader));
            match answer {
                Err(ProposeError::NoLeader) if tokio::time::Instant::now() + NO_LEADER_RETRY < deadline => {
                    tokio::time::sleep(NO_LEADER_RETRY).await;
                }
                other => break other?,
            }
        };
        let view = self
            .wait_until(deadline.saturating_duration_since(tokio::time::Instant::now()), |v| {
                v.applied_index >= index
            })
            .await;
        if view.applied_index < index {
            return Err(ProposeError::Timeout { timeout_ms: timeout.as_millis() as u64 });
        }
        Ok(view)
    }

    /// Stops the meta thread after it made everything durable.
    pub async fn stop(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(MetaMsg::Stop { done }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct MetaCx {
    config: NodeConfig,
    storage: Arc<Storage>,
    faults: Arc<FaultLayer>,
    /// Raft traffic is peer traffic: mutual TLS when the node has `[tls]`.
    tls: Option<Arc<crate::tls::Tls>>,
    ids: Ids,
    view: Arc<RwLock<MetaView>>,
    tx: mpsc::Sender<MetaMsg>,
    applied: tokio::sync::watch::Sender<u64>,
}

fn run_meta(
    cx: MetaCx,
    meta_config: MetaConfig,
    rx: mpsc::Receiver<MetaMsg>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    allow_fjall_on_this_thread();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot build the metadata runtime: {e}")));
            return;
        }
    };
    runtime.block_on(meta_loop(cx, meta_config, rx, ready));
}

async fn meta_loop(
    cx: MetaCx,
    meta_config: MetaConfig,
    mut rx: mpsc::Receiver<MetaMsg>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let opened = match cx.storage.raft_load() {
        Ok(Some(image)) => MetaNode::restart(meta_config.clone(), image).map(|n| (n, false)),
        Ok(None) => MetaNode::new(meta_config.clone()).map(|n| (n, true)),
        Err(e) => Err(e.to_string()),
    };
    let (mut node, fresh) = match opened {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot open the metadata group: {e}")));
            return;
        }
    };
    if fresh {
        let written = cx.storage.raft_init(node.storage());
        let synced = match written {
            Ok(()) => cx.storage.sync().await,
            Err(e) => Err(e),
        };
        if let Err(e) = synced {
            let _ = ready.send(Err(format!("cannot write the metadata group's configuration: {e}")));
            return;
        }
    }
    let mut driver = Driver {
        durable: node.storage().clone(),
        peers: HashMap::new(),
        book: BTreeMap::new(),
        book_version: None,
        pending: BTreeMap::new(),
        reads: BTreeMap::new(),
        next_request: 1,
        bootstrap_request: None,
        key_request: None,
        replies: Vec::new(),
        cx,
    };
    driver.publish(&node);
    let _ = ready.send(Ok(()));
    let started = Instant::now();
    let mut interval = tokio::time::interval(Duration::from_millis(meta_config.tick_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let input = tokio::select! {
            msg = rx.recv() => match msg {
                None => return,
                Some(MetaMsg::Raft(m)) => Input::Message(m),
                Some(MetaMsg::Unreachable(peer)) => Input::Unreachable { peer },
                Some(MetaMsg::Propose { command, reply }) => {
                    let request = driver.next_request;
                    driver.next_request += 1;
                    driver.pending.insert(request, reply);
                    Input::Propose { now_ms: started.elapsed().as_millis() as u64, request, command }
                }
                Some(MetaMsg::ReadIndex { reply }) => {
                    let request = driver.next_request;
                    driver.next_request += 1;
                    driver.reads.insert(request, reply);
                    Input::ReadIndex { now_ms: started.elapsed().as_millis() as u64, request }
                }
                Some(MetaMsg::Stop { done }) => {
                    let _ = driver.cx.storage.sync().await;
                    let _ = done.send(());
                    return;
                }
            },
            _ = interval.tick() => Input::Tick { now_ms: started.elapsed().as_millis() as u64 },
        };
        let effects = node.step(input);
        if let Err(e) = driver.execute(effects).await {
            // The store is poisoned (a failed fsync): this member must not vote or acknowledge
            // anything again. It stops; the node reports metadata as unavailable.
            tracing::error!(error = %e, "metadata member stops: its log cannot be made durable");
            return;
        }
        driver.maybe_bootstrap(&mut node, started).await;
        driver.maybe_context_key(&mut node, started).await;
        driver.publish(&node);
        for (reply, result) in driver.replies.drain(..) {
            let _ = reply.send(result);
        }
    }
}

struct Driver {
    cx: MetaCx,
    /// The durable image as written so far (mirrors the member's storage).
    durable: MetaStorage,
    /// Peer clients by raft id, with the address each was made for.
    peers: HashMap<u64, (String, Arc<PeerClient>)>,
    /// The address book: raft id → (member id, peer address), from the configured members
    /// and then the applied layout ([`Driver::update_book`]).
    book: BTreeMap<u64, (String, String)>,
    /// The layout version the book was built from (`Some(0)`: the configured members only).
    book_version: Option<u64>,
    pending: BTreeMap<u64, ReplyTx>,
    reads: BTreeMap<u64, ReadTx>,
    next_request: u64,
    /// The request of this node's bootstrap proposal, while one is in flight.
    bootstrap_request: Option<u64>,
    /// The request of this leader's first causality-token key, while one is in flight.
    key_request: Option<u64>,
    /// Answers held until the view shows the step that produced them.
    replies: Vec<(ReplyTx, Result<Outcome, ProposeError>)>,
}

impl Driver {
    async fn execute(&mut self, effects: Vec<Effect>) -> Result<(), String> {
        let mut dirty = false;
        for effect in effects {
            if dirty && !matches!(effect, Effect::Persist(_)) {
                self.cx.storage.sync().await.map_err(|e| e.to_string())?;
                dirty = false;
            }
            match effect {
                Effect::Persist(delta) => {
                    self.durable.apply(&delta)?;
                    self.cx.storage.raft_apply(&delta, &self.durable).map_err(|e| e.to_string())?;
                    dirty = true;
                }
                Effect::Send { to, message } => self.send(to, &message),
                Effect::Applied { index, command, result, .. } => {
                    if let (Some(command), Err(e)) = (&command, &result) {
                        tracing::debug!(index, ?command, error = %e, "metadata command refused");
                    }
                }
                Effect::Reply { request, result } => {
                    if self.key_request == Some(request) {
                        self.key_request = None;
                    }
                    if self.bootstrap_request == Some(request) {
                        self.bootstrap_request = None;
                        match &result {
                            Ok(_) => tracing::info!("metadata bootstrapped from the configured members"),
                            Err(e) => tracing::debug!(error = %e, "bootstrap proposal did not apply"),
                        }
                    }
                    // Answered after the view is published, so a client that reads right after
                    // its answer sees its own change.
                    if let Some(reply) = self.pending.remove(&request) {
                        self.replies.push((reply, result));
                    }
                }
                Effect::ReadIndex { request, result } => {
                    if let Some(reply) = self.reads.remove(&request) {
                        let _ = reply.send(result);
                    }
                }
            }
        }
        if dirty {
            self.cx.storage.sync().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn send(&mut self, to: u64, message: &RaftMessage) {
        let Some(client) = self.peer(to) else { return };
        let bytes = encode_message(message);
        let tx = self.cx.tx.clone();
        tokio::spawn(async move {
            let sent = client
                .request(Request::Raft { message: bytes }, Duration::from_millis(RAFT_SEND_TIMEOUT_MS))
                .await;
            if !matches!(sent, Ok(Response::Ack)) {
                let _ = tx.try_send(MetaMsg::Unreachable(to));
            }
        });
    }

    fn peer(&mut self, to: u64) -> Option<Arc<PeerClient>> {
        let (name, address) = self.book.get(&to)?.clone();
        if let Some((a, c)) = self.peers.get(&to) {
            if *a == address {
                return Some(c.clone());
            }
        }
        let client = Arc::new(
            PeerClient::new(
                self.cx.config.node_id.clone(),
                name,
                address.clone(),
                self.cx.config.peer_inflight_max,
                self.cx.faults.clone(),
            )
            .with_tls(self.cx.tls.clone()),
        );
        self.peers.insert(to, (address, client.clone()));
        Some(client)
    }

    /// Rebuilds the address book when the applied layout changed: the configured members
    /// (founders first) are the seed, the layout's members override them and add the members
    /// that joined. Members that left the layout stay reachable at their last address (a
    /// learner being removed still gets the messages that remove it).
    fn update_book(&mut self, metadata: &Metadata) {
        let version = metadata.layout().map_or(0, |l| l.version);
        if self.book_version == Some(version) {
            return;
        }
        self.book_version = Some(version);
        let config = &self.cx.config;
        for m in config.founding_members().iter().chain(&config.members) {
            self.book.entry(self.cx.ids.raft_id(&m.id)).or_insert_with(|| (m.id.clone(), m.peer.clone()));
        }
        for l in metadata.layouts() {
            for m in l.members.values() {
                self.book.insert(self.cx.ids.raft_id(&m.id), (m.id.clone(), m.peer_address.clone()));
            }
        }
    }

    /// A leader whose metadata is not founded yet proposes the configured members.
    async fn maybe_bootstrap(&mut self, node: &mut MetaNode, started: Instant) {
        if !node.is_leader() || node.metadata().layout().is_some() || self.bootstrap_request.is_some() {
            return;
        }
        // Only once the leader has applied everything committed: a bootstrap may be in its log.
        if node.applied_index() < node.commit_index() {
            return;
        }
        let request = self.next_request;
        self.next_request += 1;
        self.bootstrap_request = Some(request);
        let now_ms = started.elapsed().as_millis() as u64;
        let effects =
            node.step(Input::Propose { now_ms, request, command: bootstrap_command(&self.cx.config) });
        if let Err(e) = self.execute(effects).await {
            tracing::error!(error = %e, "metadata bootstrap could not be persisted");
        }
    }

    /// A leader of a founded cluster without a causality-token key proposes one (drawn here:
    /// the command carries the key, so every member applies the same). Retried after a
    /// proposal that did not commit.
    async fn maybe_context_key(&mut self, node: &mut MetaNode, started: Instant) {
        let founded = node.metadata().layout().is_some();
        if !node.is_leader()
            || !founded
            || self.key_request.is_some()
            || node.applied_index() < node.commit_index()
        {
            return;
        }
        if !node.metadata().auth().context_keys().is_empty() {
            return;
        }
        let request = self.next_request;
        self.next_request += 1;
        self.key_request = Some(request);
        let now_ms = started.elapsed().as_millis() as u64;
        let command = Command::Auth(AuthCommand::EnsureContextKey { key: rand::random() });
        let effects = node.step(Input::Propose { now_ms, request, command });
        if let Err(e) = self.execute(effects).await {
            tracing::error!(error = %e, "the causality-token key proposal could not be persisted");
        }
    }

    fn publish(&mut self, node: &MetaNode) {
        self.update_book(node.metadata());
        let Ok(mut v) = self.cx.view.write() else { return };
        if v.applied_index != node.applied_index() || v.metadata.layout().is_none() {
            v.metadata = Arc::new(node.metadata().clone());
        }
        let conf = node.conf_state();
        let names = |ids: &[u64]| {
            let mut names: Vec<String> = ids.iter().map(|i| self.cx.ids.name(*i, node.metadata())).collect();
            names.sort();
            names
        };
        v.voters = names(&conf.voters);
        v.learners = names(&conf.learners);
        v.term = node.term();
        v.applied_index = node.applied_index();
        v.commit_index = node.commit_index();
        v.is_leader = node.is_leader();
        v.leader = (node.leader() != 0).then(|| self.cx.ids.name(node.leader(), node.metadata()));
        drop(v);
        self.cx
            .applied
            .send_if_modified(|a| std::mem::replace(a, node.applied_index()) != node.applied_index());
    }
}
