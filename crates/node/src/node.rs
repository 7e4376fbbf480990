//! The node: a thin driver that runs the core replica machines
//! ([`quorumdb_core::replica::Replica`]) against fjall, the peer transport and real clocks.
//!
//! ```text
//!   HTTP handler ──ShardMsg::Client──►┐            ┌── Effect::Reply ──► oneshot ──► HTTP
//!   peer request ──ShardMsg::Peer────►│  shard     ├── Effect::Respond ─► oneshot ──► transport
//!   peer replies ──ShardMsg::Input───►│  thread s  ├── Effect::Send ────► tokio task: PeerClient
//!   group commit ──ShardMsg::Input───►│  Replica   │                        └─► ShardMsg::Input
//!                                     │  + fjall   └── Effect::Sync ────► tokio task: Storage::sync
//!   every TICK_MS ───────── tick ────►┘  (ShardStore)                     └─► Input::Synced
//! ```
//!
//! One OS thread per shard ([`SHARDS_LEN`]) owns its replica and is the only caller of its
//! store, so no fjall call runs on a worker of the node's shared tokio runtime (HTTP, the peer
//! listener), and the shards use the cores in parallel. Each shard thread runs a
//! single-threaded tokio runtime of its own for its outgoing peer requests, on connections of
//! its own: a request's answer comes back on the same thread without a cross-thread wake-up,
//! which is what keeps the driver as fast as the old inline code. All protocol decisions are
//! the replica's; this file only moves inputs and effects, converts the core's messages to and
//! from the wire DTOs, and publishes counters as metrics.

use crate::config::{NodeConfig, QuorumMode, ReadRepair};
use crate::error::ApiError;
use crate::storage::{ShardStore, Storage};
use crate::transport::{FaultLayer, PeerClient, TransportError};
use crate::wire::{
    KeyDigest, LeafListing, PageItem, Request, Response, WireHeat, WireHotKey, WireKey, WireTree,
};
use quorumdb_core::causality::{Fence, ItemState, VersionVector, WriteId};
use quorumdb_core::consistency::Level;
use quorumdb_core::handoff::HintStats;
use quorumdb_core::heat::{HeatReport, HotKey, HEAT_KEYS_LEN_MAX};
use quorumdb_core::key::ItemKey;
use quorumdb_core::placement::{NodeId, Placement};
use quorumdb_core::replica::{
    self, shard_of, ClientRequest, ClientResponse, Effect, Input, Now, PeerRequest, PeerResponse,
    RepairProgress, Replica, ReplicaConfig, ReplicaError, ReplicaStats, ScanRequest, SendError, Shared,
    TableSpec, TreeId, SHARDS_LEN,
};
use quorumdb_core::ring::{Member, Ring, VNODES_PER_NODE_DEFAULT};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::sync::oneshot;

pub use quorumdb_core::replica::ScanResult;

/// How often each shard ticks: request and coordinator deadlines, hint hand-off, anti-entropy,
/// GC and heartbeats are checked this often.
const TICK_MS: u64 = 10;
/// Inputs one shard handles before it executes the effects and looks at the clock again.
const BATCH_LEN_MAX: usize = 256;
/// How often a shard publishes its counters and queue statistics.
const PUBLISH_MS: u64 = 250;
/// Past the longest request timeout, how long a caller waits for a shard before giving up.
const SHARD_ANSWER_MARGIN_MS: u64 = 5_000;

/// What a shard thread receives.
enum ShardMsg {
    Client {
        req: ClientRequest,
        reply: oneshot::Sender<Result<ClientResponse, ReplicaError>>,
    },
    Peer {
        from: usize,
        req: PeerRequest,
        reply: oneshot::Sender<PeerResponse>,
    },
    Input(Input),
    /// A new layout: the placement, and a peer client for each directory member the shard
    /// has none for yet (index, client).
    Placement {
        placement: Arc<Placement>,
        peers: Vec<(NodeId, Arc<PeerClient>)>,
    },
    /// Stop the shard: nothing more is stepped, so nothing more is stored or minted.
    Stop {
        done: oneshot::Sender<()>,
    },
}

/// What a shard last published for the node's status, metrics and repair progress.
#[derive(Default, Clone)]
struct Snapshot {
    stats: ReplicaStats,
    hints: HintStats,
    progress: RepairProgress,
    tombstones: usize,
    /// Stored items, all shards (approximate; published by shard 0).
    items: usize,
    /// The shard's last heat window.
    heat: HeatReport,
    /// The newest layout version the shard's placement has, and the one it reads from.
    layout_newest: u64,
    layout_read: u64,
    /// Writes the shard coordinates that started under an older newest layout.
    writes_before_newest: usize,
    /// The newest layout version the shard's data was streamed for.
    synced_version: u64,
}

/// The layout as every shard of this node has it (minimum over the shards).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutProgress {
    /// Newest layout version every shard writes to.
    pub newest: u64,
    /// Version every shard reads from.
    pub read: u64,
    /// Whether some shard still coordinates a write started under an older newest version.
    pub old_writes: bool,
    /// Newest version every shard streamed its data for.
    pub synced: u64,
}

/// How a client wants one write done.
#[derive(Clone, Debug)]
pub struct WriteSettings {
    pub w: Level,
    pub mode: QuorumMode,
    pub timeout: Duration,
    /// The client's id of the write (see `causality::WriteId`); `None` lets the node draw one.
    pub write_id: Option<WriteId>,
    /// The fencing token the write carries (checked by every replica; see `causality::Fence`).
    pub fence: Option<Fence>,
}

pub struct Node {
    pub config: NodeConfig,
    pub storage: Arc<Storage>,
    pub faults: Arc<FaultLayer>,
    /// The node's TLS material (`[tls]`), shared by every listener and peer client.
    pub tls: Option<Arc<crate::tls::Tls>>,
    pub ready: AtomicBool,
    shared: Arc<Shared>,
    /// One input channel per shard thread. Unbounded on purpose: client and peer inputs are
    /// bounded before they get here (`http_inflight_max`, `peer_inflight_max`), and the rest
    /// are answers to the shard's own requests, bounded by its jobs.
    shards: Vec<mpsc::UnboundedSender<ShardMsg>>,
    snapshots: Arc<Vec<Mutex<Snapshot>>>,
    started: Instant,
    /// Clients for the few node-level requests this node sends itself (heat reports); the
    /// replica traffic uses each shard's own. Indexed by directory index; grows with joins.
    admin_peers: RwLock<Vec<Option<Arc<PeerClient>>>>,
    /// The placement the shards were last given (the wire conversions of the peer listener
    /// use its directory).
    placement: RwLock<Arc<Placement>>,
}

/// Ranks of the hottest keys published as metrics.
const HOT_METRIC_RANKS: [&str; 5] = ["1", "2", "3", "4", "5"];

/// How long a peer may take to send its heat report before `GET /v1/hot` leaves it out.
pub const HEAT_PEER_TIMEOUT_MS: u64 = 1_000;

/// The replica configuration of a node config.
pub fn replica_config(config: &NodeConfig) -> ReplicaConfig {
    let mut rc = ReplicaConfig::with_defaults(config.replication_factor);
    rc.tables = config
        .tables
        .iter()
        .map(|t| {
            let conflict = t.conflict.replica();
            (t.name.clone(), TableSpec { replication_factor: t.replication_factor, conflict })
        })
        .collect();
    rc.request_timeout_ms = config.request_timeout_ms;
    rc.request_timeout_ms_max = crate::config::REQUEST_TIMEOUT_MS_MAX;
    rc.failure_timeout_ms = config.failure_timeout_ms;
    rc.heartbeat_interval_ms = config.heartbeat_interval_ms;
    rc.hinted_handoff = config.hinted_handoff;
    rc.hint_limits = config.hint_limits();
    rc.antientropy = config.antientropy;
    rc.antientropy_interval_ms = config.antientropy_interval_ms;
    rc.antientropy_bytes_per_second_max = config.antientropy_bytes_per_second_max;
    rc.tombstone_gc_interval_ms = config.tombstone_gc_interval_ms;
    rc.tombstone_grace_ms = config.tombstone_grace_ms;
    rc
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Everything a shard thread needs besides its replica.
struct ShardCx {
    shard: usize,
    shared: Arc<Shared>,
    storage: Arc<Storage>,
    faults: Arc<FaultLayer>,
    /// This shard's own clients for every other member (`None` at this node), by directory
    /// index; grows when a layout names new members.
    peers: Vec<Option<Arc<PeerClient>>>,
    /// The placement the replica was last given, for the wire conversions.
    placement: Arc<Placement>,
    tx: mpsc::UnboundedSender<ShardMsg>,
    snapshots: Arc<Vec<Mutex<Snapshot>>>,
    started: Instant,
}

impl ShardCx {
    fn now(&self) -> Now {
        let wall = (unix_ms() as i64).saturating_add(self.faults.clock_offset_ms()).max(0) as u64;
        Now { mono_ms: self.started.elapsed().as_millis() as u64, wall_ms: wall }
    }
}

impl Node {
    /// Starts the shard threads (each opens its replica: hints restored, Merkle trees rebuilt
    /// from storage) and returns once all are ready.
    pub async fn start(
        config: NodeConfig,
        storage: Arc<Storage>,
        tls: Option<Arc<crate::tls::Tls>>,
    ) -> Result<Arc<Self>, String> {
        let members: Vec<Member> =
            config.members.iter().map(|m| Member { id: m.id.clone(), zone: m.zone.clone() }).collect();
        let ring = Ring::new(members, VNODES_PER_NODE_DEFAULT).map_err(|e| e.to_string())?;
        let me = ring.index_of(&config.node_id).ok_or("node_id is not a member")?;
        let faults = Arc::new(FaultLayer::default());
        let peers = || -> Vec<Option<Arc<PeerClient>>> {
            config
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    (i != me).then(|| {
                        Arc::new(
                            PeerClient::new(
                                config.node_id.clone(),
                                m.id.clone(),
                                m.peer.clone(),
                                config.peer_inflight_max,
                                faults.clone(),
                            )
                            .with_tls(tls.clone()),
                        )
                    })
                })
                .collect()
        };
        let shared = Arc::new(Shared::new(replica_config(&config), ring.clone(), me));
        let placement = Arc::new(shared.initial_placement.clone());
        let snapshots: Arc<Vec<Mutex<Snapshot>>> =
            Arc::new((0..SHARDS_LEN).map(|_| Mutex::new(Snapshot::default())).collect());
        let started = Instant::now();
        let mut shards = Vec::with_capacity(SHARDS_LEN);
        let mut opened = Vec::with_capacity(SHARDS_LEN);
        for shard in 0..SHARDS_LEN {
            let (tx, rx) = mpsc::unbounded_channel();
            let cx = ShardCx {
                shard,
                shared: shared.clone(),
                storage: storage.clone(),
                faults: faults.clone(),
                peers: peers(),
                placement: placement.clone(),
                tx: tx.clone(),
                snapshots: snapshots.clone(),
                started,
            };
            let (ready_tx, ready_rx) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("replica-{shard}"))
                .spawn(move || run_shard(cx, rx, ready_tx))
                .map_err(|e| format!("cannot start replica shard {shard}: {e}"))?;
            shards.push(tx);
            opened.push(ready_rx);
        }
        for ready in opened {
            ready.await.map_err(|_| "a replica shard stopped while opening".to_string())??;
        }
        let admin_peers = peers();
        Ok(Arc::new(Node {
            config,
            storage,
            faults,
            tls,
            ready: AtomicBool::new(false),
            shared,
            shards,
            snapshots,
            started,
            admin_peers: RwLock::new(admin_peers),
            placement: RwLock::new(placement),
        }))
    }

    /// Where keys live: the live layout versions the shards were last given.
    pub fn placement(&self) -> Arc<Placement> {
        self.placement.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Gives every shard the placement of `live` layouts (oldest first: version, members with
    /// their peer addresses) reading from `read_version`. Returns whether it changed anything.
    /// The directory keeps every index it had, so requests in flight keep their meaning.
    pub fn install_layout(
        &self,
        live: &[(u64, Vec<(Member, String)>)],
        read_version: u64,
    ) -> Result<bool, String> {
        let current = self.placement();
        let members: Vec<(u64, Vec<Member>)> =
            live.iter().map(|(v, ms)| (*v, ms.iter().map(|(m, _)| m.clone()).collect())).collect();
        if current.live_versions() == members.iter().map(|(v, _)| *v).collect::<Vec<_>>()
            && current.read_version() == read_version
        {
            return Ok(false);
        }
        let next = Arc::new(
            current.next(&members, read_version, VNODES_PER_NODE_DEFAULT).map_err(|e| e.to_string())?,
        );
        if next.index_of(self.id()) != Some(self.shared.me) {
            return Err(format!(
                "layout v{} does not keep this node ({}) at its index; refusing it",
                next.newest_version(),
                self.id()
            ));
        }
        // New members' peer addresses, from the layout that names them.
        let address = |id: &str| {
            live.iter().rev().flat_map(|(_, ms)| ms.iter()).find(|(m, _)| m.id == id).map(|(_, a)| a.clone())
        };
        let new_clients = |known: usize| -> Vec<(NodeId, Arc<PeerClient>)> {
            (known..next.directory().len())
                .filter(|i| *i != self.shared.me)
                .filter_map(|i| {
                    let id = next.name(i);
                    let addr = address(&id)?;
                    Some((i, Arc::new(self.peer_client(&id, &addr))))
                })
                .collect()
        };
        {
            let mut admin = self.admin_peers.write().unwrap_or_else(|p| p.into_inner());
            let known = admin.len();
            for (i, client) in new_clients(known) {
                if admin.len() <= i {
                    admin.resize(i + 1, None);
                }
                admin[i] = Some(client);
            }
        }
        for shard in &self.shards {
            let peers = new_clients(current.directory().len());
            let _ = shard.send(ShardMsg::Placement { placement: next.clone(), peers });
        }
        tracing::info!(
            live = ?next.live_versions(),
            read = next.read_version(),
            members = next.live_members().len(),
            "new placement installed"
        );
        *self.placement.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(true)
    }

    /// What the shards last published about the layout (a shard publishes every
    /// `PUBLISH_MS`, so this lags a new placement by up to that).
    pub fn layout_progress(&self) -> LayoutProgress {
        let mut p = LayoutProgress { newest: u64::MAX, read: u64::MAX, old_writes: false, synced: u64::MAX };
        for s in self.snapshots.iter() {
            if let Ok(s) = s.lock() {
                p.newest = p.newest.min(s.layout_newest);
                p.read = p.read.min(s.layout_read);
                p.old_writes |= s.writes_before_newest > 0;
                p.synced = p.synced.min(s.synced_version);
            }
        }
        p
    }

    /// Asks every shard to stream its data to the owners of layout `version`.
    pub fn sync_layout(&self, version: u64) {
        for shard in &self.shards {
            let _ = shard.send(ShardMsg::Input(Input::SyncLayout { version }));
        }
    }

    fn peer_client(&self, id: &str, addr: &str) -> PeerClient {
        PeerClient::new(
            self.config.node_id.clone(),
            id.to_owned(),
            addr.to_owned(),
            self.config.peer_inflight_max,
            self.faults.clone(),
        )
        .with_tls(self.tls.clone())
    }

    pub fn id(&self) -> &str {
        &self.config.node_id
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Wall-clock milliseconds since the Unix epoch as this node believes it, including any
    /// skew the lab injected.
    pub fn wall_ms(&self) -> i64 {
        (unix_ms() as i64).saturating_add(self.faults.clock_offset_ms())
    }

    /// Whether member `idx` is believed alive.
    pub fn is_up(&self, idx: usize) -> bool {
        self.shared.is_up(idx, self.now_ms())
    }

    /// The state as a client sees it: for last-writer-wins tables, the winning value without
    /// its timestamp (or nothing, if the winner is a delete).
    pub fn client_view(&self, table: &str, state: &ItemState) -> ItemState {
        Replica::<ShardStore>::client_view(&self.shared, table, state)
    }

    /// Hint-queue statistics, all shards.
    pub fn hint_stats(&self) -> HintStats {
        let mut total = HintStats::default();
        for s in self.snapshots.iter() {
            if let Ok(s) = s.lock() {
                total.len += s.hints.len;
                total.bytes += s.hints.bytes;
            }
        }
        total
    }

    /// Progress of the current or last full repair pass, all shards: counts add up; a pass
    /// is complete when every shard completed it.
    pub fn repair_progress(&self) -> RepairProgress {
        let mut total = RepairProgress { passes_completed: u64::MAX, ..RepairProgress::default() };
        for s in self.snapshots.iter() {
            let Ok(s) = s.lock() else { continue };
            let p = &s.progress;
            total.running |= p.running;
            if p.table.is_some() {
                total.table = p.table.clone();
            }
            total.exchanges_total += p.exchanges_total;
            total.exchanges_done += p.exchanges_done;
            total.exchanges_failed += p.exchanges_failed;
            total.keys_pushed += p.keys_pushed;
            total.keys_pulled += p.keys_pulled;
            total.item_bytes += p.item_bytes;
            total.digests_received += p.digests_received;
            total.leaves_differing += p.leaves_differing;
            total.passes_completed = total.passes_completed.min(p.passes_completed);
        }
        if total.passes_completed == u64::MAX {
            total.passes_completed = 0;
        }
        total
    }

    /// Stops every shard thread (they store and mint nothing afterwards), so a clean shutdown
    /// can then make everything durable and mark the stop clean: no dot is minted after it.
    pub async fn stop(&self) {
        let mut waits = Vec::new();
        for shard in &self.shards {
            let (done, rx) = oneshot::channel();
            if shard.send(ShardMsg::Stop { done }).is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.await;
        }
    }

    /// Stored items (approximate, as of the last publication).
    pub fn items_approx(&self) -> usize {
        self.snapshots.first().and_then(|s| s.lock().ok().map(|s| s.items)).unwrap_or(0)
    }

    /// This node's heat over the last window, all shards merged.
    pub fn heat_local(&self) -> HeatReport {
        let mut report = HeatReport::default();
        for slot in self.snapshots.iter() {
            if let Ok(s) = slot.lock() {
                report.merge(&s.heat);
            }
        }
        report
    }

    /// Every member's heat merged: this node's and each peer's that answers within
    /// [`HEAT_PEER_TIMEOUT_MS`]. Also returns the members that did not answer, with why.
    pub async fn heat_cluster(&self) -> (HeatReport, Vec<(String, String)>) {
        let mut report = self.heat_local();
        let mut asks = tokio::task::JoinSet::new();
        let placement = self.placement();
        let admin = self.admin_peers.read().unwrap_or_else(|p| p.into_inner()).clone();
        for (i, p) in admin.iter().enumerate() {
            let Some(p) = p.clone() else { continue };
            if !placement.is_live_member(i) {
                continue;
            }
            let id = placement.name(i);
            asks.spawn(async move {
                let answer = p.request(Request::Heat, Duration::from_millis(HEAT_PEER_TIMEOUT_MS)).await;
                (id, answer)
            });
        }
        let mut missing = Vec::new();
        while let Some(joined) = asks.join_next().await {
            let Ok((id, answer)) = joined else { continue };
            match answer {
                Ok(Response::Heat(h)) => report.merge(&heat_from_wire(h)),
                Ok(other) => missing.push((id, format!("unexpected answer {:?}", response_kind(&other)))),
                Err(e) => missing.push((id, e.to_string())),
            }
        }
        (report, missing)
    }

    /// Sends one request to member `id` (not this node) and waits for its answer within
    /// `timeout`: how the sink runtime reaches the group coordinator and its peers' status.
    pub async fn ask_peer(&self, id: &str, req: Request, timeout: Duration) -> Result<Response, String> {
        let i = self.placement().index_of(id).ok_or_else(|| format!("unknown member {id:?}"))?;
        let peer = self
            .admin_peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(i)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("{id:?} is this node"))?;
        peer.request(req, timeout).await.map_err(|e| format!("{id}: {e}"))
    }

    /// Starts a full anti-entropy pass on every shard of this node.
    pub async fn start_repair(&self, table: Option<String>) -> Result<(), ApiError> {
        for shard in 0..SHARDS_LEN {
            self.client(shard, ClientRequest::StartRepair { table: table.clone() }).await?;
        }
        Ok(())
    }

    async fn client(&self, shard: usize, req: ClientRequest) -> Result<ClientResponse, ApiError> {
        let (reply, rx) = oneshot::channel();
        let gone = || ApiError::Internal(format!("replica shard {shard} is gone"));
        self.shards.get(shard).ok_or_else(gone)?.send(ShardMsg::Client { req, reply }).map_err(|_| gone())?;
        // The replica answers every request by its own deadline; this bound only guards against
        // a shard thread that stopped making progress, so a client is never left waiting forever.
        let bound = Duration::from_millis(crate::config::REQUEST_TIMEOUT_MS_MAX + SHARD_ANSWER_MARGIN_MS);
        match tokio::time::timeout(bound, rx).await {
            Ok(answer) => answer.map_err(|_| gone())?.map_err(ApiError::from),
            Err(_) => Err(ApiError::Timeout(format!(
                "replica shard {shard} did not answer within {} ms; the request may or may not have been applied",
                bound.as_millis()
            ))),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Client operations

    /// Writes (or deletes, with `value = None`) one item at consistency `w`.
    pub async fn write(
        &self,
        key: ItemKey,
        value: Option<Vec<u8>>,
        ctx: VersionVector,
        opts: WriteSettings,
    ) -> Result<ItemState, ApiError> {
        let shard = shard_of(key.placement_hash());
        let req = ClientRequest::Write {
            key,
            value,
            ctx,
            w: opts.w,
            mode: core_mode(opts.mode),
            timeout_ms: opts.timeout.as_millis() as u64,
            write_id: opts.write_id,
            fence: opts.fence,
        };
        match self.client(shard, req).await? {
            ClientResponse::Written(state) => Ok(state),
            other => Err(ApiError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Reads one item at consistency `r`, merging the replicas' sibling sets.
    pub async fn read(
        &self,
        key: ItemKey,
        r: Level,
        repair: ReadRepair,
        mode: QuorumMode,
        timeout: Duration,
    ) -> Result<ItemState, ApiError> {
        self.read_with_floor(key, r, repair, mode, timeout, None).await
    }

    /// [`read`](Self::read) whose answer must hold `floor` (a session's versions of the item;
    /// see `ClientRequest::Read::floor`).
    pub async fn read_with_floor(
        &self,
        key: ItemKey,
        r: Level,
        repair: ReadRepair,
        mode: QuorumMode,
        timeout: Duration,
        floor: Option<VersionVector>,
    ) -> Result<ItemState, ApiError> {
        let shard = shard_of(key.placement_hash());
        let repair = match repair {
            ReadRepair::Blocking => replica::ReadRepair::Blocking,
            ReadRepair::Async => replica::ReadRepair::Async,
            ReadRepair::Off => replica::ReadRepair::Off,
            ReadRepair::WriteBack => replica::ReadRepair::WriteBack,
        };
        let req = ClientRequest::Read {
            key,
            r,
            repair,
            mode: core_mode(mode),
            timeout_ms: timeout.as_millis() as u64,
            floor,
        };
        match self.client(shard, req).await? {
            ClientResponse::Read(state) => Ok(state),
            other => Err(ApiError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Reads one page of a partition, sort keys in `[from, to)`, merging replicas' items.
    #[allow(clippy::too_many_arguments)]
    pub async fn scan(
        &self,
        table: &str,
        partition: &[u8],
        from: Option<Vec<u8>>,
        to: Option<Vec<u8>>,
        limit: usize,
        reverse: bool,
        cursor: Option<&str>,
        r: Level,
        timeout: Duration,
    ) -> Result<ScanResult, ApiError> {
        let shard = shard_of(quorumdb_core::key::placement_hash(table, partition));
        let req = ClientRequest::Scan(ScanRequest {
            table: table.to_owned(),
            partition: partition.to_vec(),
            from,
            to,
            limit,
            reverse,
            cursor: cursor.map(str::to_owned),
            r,
            timeout_ms: timeout.as_millis() as u64,
        });
        match self.client(shard, req).await? {
            ClientResponse::Scan(result) => Ok(result),
            other => Err(ApiError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Every home replica's local state of one item, as (node index, state or error), in
    /// preference-list order. Repairs nothing.
    pub async fn inspect(&self, key: ItemKey, timeout: Duration) -> Vec<(usize, Result<ItemState, String>)> {
        let shard = shard_of(key.placement_hash());
        let req = ClientRequest::Inspect { key, timeout_ms: timeout.as_millis() as u64 };
        match self.client(shard, req).await {
            Ok(ClientResponse::Inspect(results)) => results,
            Ok(other) => vec![(self.shared.me, Err(format!("unexpected answer {other:?}")))],
            Err(e) => vec![(self.shared.me, Err(e.to_string()))],
        }
    }

    // -----------------------------------------------------------------------------------------
    // Peer requests

    /// Serves one peer request: converts it, hands it to its shard, converts the answer.
    pub async fn handle_peer(self: Arc<Self>, from: String, req: Request) -> Response {
        let placement = self.placement();
        let Some(from) = placement.index_of(&from) else {
            return Response::Error { code: "bad_request".into(), message: format!("unknown peer {from:?}") };
        };
        if let Request::Heat = req {
            return Response::Heat(heat_to_wire(&self.heat_local()));
        }
        let req = match request_from_wire(&placement, req) {
            Ok(r) => r,
            Err(e) => return response_to_wire(PeerResponse::Failed(e)),
        };
        if let PeerRequest::StartRepair { table } = req {
            return match self.start_repair(table).await {
                Ok(()) => Response::Ack,
                Err(e) => Response::Error { code: e.code().into(), message: e.to_string() },
            };
        }
        let shard = req.shard().unwrap_or(0);
        let (reply, rx) = oneshot::channel();
        let sent =
            self.shards.get(shard).is_some_and(|s| s.send(ShardMsg::Peer { from, req, reply }).is_ok());
        let resp = match (sent, rx.await) {
            (true, Ok(resp)) => resp,
            _ => PeerResponse::Failed(ReplicaError::Internal(format!("replica shard {shard} is gone"))),
        };
        response_to_wire(resp)
    }

    /// Publishes the shards' counters as metrics (called periodically by the server).
    pub fn publish_metrics(&self) {
        let mut stats = ReplicaStats::default();
        let mut hints = 0usize;
        let mut hint_bytes = 0u64;
        let mut tombstones = 0usize;
        for s in self.snapshots.iter() {
            let Ok(s) = s.lock() else { continue };
            for (k, v) in &s.stats.replica_responses {
                *stats.replica_responses.entry(*k).or_default() += v;
            }
            stats.hints_added += s.stats.hints_added;
            stats.hints_refused += s.stats.hints_refused;
            stats.hints_delivered += s.stats.hints_delivered;
            stats.hints_dropped += s.stats.hints_dropped;
            stats.read_repairs += s.stats.read_repairs;
            stats.exchanges_done += s.stats.exchanges_done;
            stats.exchanges_failed += s.stats.exchanges_failed;
            stats.keys_pushed += s.stats.keys_pushed;
            stats.keys_pulled += s.stats.keys_pulled;
            stats.item_bytes_pushed += s.stats.item_bytes_pushed;
            stats.item_bytes_pulled += s.stats.item_bytes_pulled;
            stats.digests_received += s.stats.digests_received;
            stats.tombstones_purged += s.stats.tombstones_purged;
            for (table, t) in &s.stats.crdt_tables {
                let sum = stats.crdt_tables.entry(table.clone()).or_default();
                sum.concurrent_merges += t.concurrent_merges;
                sum.siblings_max = sum.siblings_max.max(t.siblings_max);
            }
            hints += s.hints.len;
            hint_bytes += s.hints.bytes;
            tombstones = s.tombstones;
        }
        for ((op, outcome), v) in &stats.replica_responses {
            metrics::counter!("quorumdb_replica_responses_total", "op" => *op, "outcome" => *outcome)
                .absolute(*v);
        }
        metrics::counter!("quorumdb_hints_added_total").absolute(stats.hints_added);
        metrics::counter!("quorumdb_hints_refused_total").absolute(stats.hints_refused);
        metrics::counter!("quorumdb_hints_delivered_total").absolute(stats.hints_delivered);
        metrics::counter!("quorumdb_hints_dropped_total").absolute(stats.hints_dropped);
        metrics::gauge!("quorumdb_hints_queued").set(hints as f64);
        metrics::gauge!("quorumdb_hints_bytes").set(hint_bytes as f64);
        metrics::counter!("quorumdb_read_repairs_total").absolute(stats.read_repairs);
        metrics::counter!("quorumdb_antientropy_exchanges_total", "outcome" => "done")
            .absolute(stats.exchanges_done);
        metrics::counter!("quorumdb_antientropy_exchanges_total", "outcome" => "failed")
            .absolute(stats.exchanges_failed);
        metrics::counter!("quorumdb_antientropy_keys_total", "direction" => "push")
            .absolute(stats.keys_pushed);
        metrics::counter!("quorumdb_antientropy_keys_total", "direction" => "pull")
            .absolute(stats.keys_pulled);
        metrics::counter!("quorumdb_antientropy_item_bytes_total", "direction" => "push")
            .absolute(stats.item_bytes_pushed);
        metrics::counter!("quorumdb_antientropy_item_bytes_total", "direction" => "pull")
            .absolute(stats.item_bytes_pulled);
        metrics::counter!("quorumdb_antientropy_digests_received_total").absolute(stats.digests_received);
        metrics::counter!("quorumdb_tombstones_purged_total").absolute(stats.tombstones_purged);
        metrics::gauge!("quorumdb_tombstones").set(tombstones as f64);
        // Only declared CRDT tables appear, so the label's values are bounded by the config.
        for (table, t) in &stats.crdt_tables {
            metrics::counter!("quorumdb_crdt_concurrent_merges_total", "table" => table.clone())
                .absolute(t.concurrent_merges);
            metrics::gauge!("quorumdb_crdt_siblings_max", "table" => table.clone())
                .set(t.siblings_max as f64);
        }
        metrics::counter!("quorumdb_hlc_timestamps_rejected_total")
            .absolute(self.shared.hlc.rejected_total.load(std::sync::atomic::Ordering::Relaxed));
        // The hottest keys by rank only: a key label would leave a series behind for every key
        // that was ever hot. Which key holds a rank is in `GET /v1/hot`.
        let heat = self.heat_local();
        let per_s =
            |n: u64| if heat.window_ms == 0 { 0.0 } else { n as f64 * 1000.0 / heat.window_ms as f64 };
        let total = heat.reads_total + heat.writes_total;
        for (rank, label) in HOT_METRIC_RANKS.iter().enumerate() {
            let k = heat.keys.get(rank);
            let (reads, writes) = k.map_or((0, 0), |k| (k.reads, k.writes));
            metrics::gauge!("quorumdb_hot_key_ops_per_second", "rank" => *label, "op" => "read")
                .set(per_s(reads));
            metrics::gauge!("quorumdb_hot_key_ops_per_second", "rank" => *label, "op" => "write")
                .set(per_s(writes));
            let share = if total == 0 { 0.0 } else { (reads + writes) as f64 / total as f64 };
            metrics::gauge!("quorumdb_hot_key_share", "rank" => *label).set(share);
        }
        let placement = self.placement();
        for (i, m) in placement.directory().iter().enumerate() {
            if i != self.shared.me && placement.is_live_member(i) {
                metrics::gauge!("quorumdb_peer_up", "peer" => m.id.clone()).set(if self.is_up(i) {
                    1.0
                } else {
                    0.0
                });
            }
        }
    }
}

fn core_mode(mode: QuorumMode) -> replica::QuorumMode {
    match mode {
        QuorumMode::Strict => replica::QuorumMode::Strict,
        QuorumMode::Sloppy => replica::QuorumMode::Sloppy,
    }
}

// ---------------------------------------------------------------------------------------------
// The shard thread

fn run_shard(cx: ShardCx, rx: mpsc::UnboundedReceiver<ShardMsg>, ready: oneshot::Sender<Result<(), String>>) {
    // This thread owns its store: the one kind of thread besides the group commit that calls fjall.
    crate::storage::allow_fjall_on_this_thread();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot start the runtime of replica shard {}: {e}", cx.shard)));
            return;
        }
    };
    runtime.block_on(shard_loop(cx, rx, ready));
}

async fn shard_loop(
    mut cx: ShardCx,
    mut rx: mpsc::UnboundedReceiver<ShardMsg>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let store = ShardStore { storage: cx.storage.clone(), shard: cx.shard };
    let actor = cx.storage.actor();
    let mut replica = match Replica::open(cx.shared.clone(), store, cx.shard, actor, cx.now()) {
        Ok(r) => {
            let _ = ready.send(Ok(()));
            r
        }
        Err(e) => {
            let _ = ready.send(Err(format!("cannot open replica shard {}: {e}", cx.shard)));
            return;
        }
    };
    let mut clients: HashMap<u64, oneshot::Sender<Result<ClientResponse, ReplicaError>>> = HashMap::new();
    let mut peer_waiters: HashMap<u64, oneshot::Sender<PeerResponse>> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut next_tick = cx.now().mono_ms;
    let mut next_publish = 0u64;
    loop {
        let now = cx.now();
        let wait = Duration::from_millis(next_tick.saturating_sub(now.mono_ms));
        let first = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(msg)) => Some(msg),
            Err(_) => None,
            Ok(None) => return,
        };
        let now = cx.now();
        let mut batch =
            first.into_iter().chain(std::iter::from_fn(|| rx.try_recv().ok())).take(BATCH_LEN_MAX);
        for msg in batch.by_ref() {
            next_id += 1;
            let input = match msg {
                ShardMsg::Client { req, reply } => {
                    clients.insert(next_id, reply);
                    Input::Client { id: next_id, req }
                }
                ShardMsg::Peer { from, req, reply } => {
                    peer_waiters.insert(next_id, reply);
                    Input::Peer { from, id: next_id, req }
                }
                ShardMsg::Input(input) => input,
                ShardMsg::Placement { placement, peers } => {
                    for (i, client) in peers {
                        if cx.peers.len() <= i {
                            cx.peers.resize(i + 1, None);
                        }
                        if cx.peers[i].is_none() {
                            cx.peers[i] = Some(client);
                        }
                    }
                    cx.placement = placement.clone();
                    Input::Placement(placement)
                }
                ShardMsg::Stop { done } => {
                    let _ = done.send(());
                    return;
                }
            };
            replica.step(now, input);
        }
        if now.mono_ms >= next_tick {
            replica.tick(now);
            next_tick = now.mono_ms + TICK_MS;
        }
        for effect in replica.drain_effects() {
            execute(&cx, effect, &mut clients, &mut peer_waiters);
        }
        if now.mono_ms >= next_publish {
            next_publish = now.mono_ms + PUBLISH_MS;
            if let Some(slot) = cx.snapshots.get(cx.shard) {
                if let Ok(mut s) = slot.lock() {
                    s.stats = replica.stats().clone();
                    s.hints = replica.hint_stats();
                    s.progress = replica.repair_progress().clone();
                    s.heat = replica.heat().clone();
                    s.layout_newest = replica.placement().newest_version();
                    s.layout_read = replica.placement().read_version();
                    s.writes_before_newest = replica.writes_before(s.layout_newest);
                    s.synced_version = replica.synced_version();
                    s.tombstones = quorumdb_core::replica::LocalStore::tombstones_len(replica.store());
                    if cx.shard == 0 {
                        s.items = cx.storage.approximate_len();
                    }
                }
            }
        }
    }
}

fn execute(
    cx: &ShardCx,
    effect: Effect,
    clients: &mut HashMap<u64, oneshot::Sender<Result<ClientResponse, ReplicaError>>>,
    peer_waiters: &mut HashMap<u64, oneshot::Sender<PeerResponse>>,
) {
    match effect {
        Effect::Reply { id, result } => {
            if let Some(tx) = clients.remove(&id) {
                let _ = tx.send(result);
            }
        }
        Effect::Respond { id, resp, .. } => {
            if let Some(tx) = peer_waiters.remove(&id) {
                let _ = tx.send(resp);
            }
        }
        Effect::Send { to, id, req, timeout_ms } => {
            let tx = cx.tx.clone();
            let Some(Some(peer)) = cx.peers.get(to).cloned() else {
                let _ = tx.send(ShardMsg::Input(Input::Response {
                    id,
                    result: Err(SendError::Unreachable(format!("no peer #{to}"))),
                }));
                return;
            };
            let wire = request_to_wire(&cx.placement, req);
            // On this shard's own runtime: the request, its connection and its answer stay on
            // this thread.
            tokio::spawn(async move {
                let result = match peer.request(wire, Duration::from_millis(timeout_ms)).await {
                    Ok(resp) => Ok(response_from_wire(resp)),
                    Err(TransportError::Timeout) => Err(SendError::Timeout),
                    // Never sent: connection refused, or refused locally for size.
                    Err(e @ (TransportError::Connect(_) | TransportError::TooLarge { .. })) => {
                        Err(SendError::Unreachable(e.to_string()))
                    }
                    Err(e) => Err(SendError::Lost(e.to_string())),
                };
                let _ = tx.send(ShardMsg::Input(Input::Response { id, result }));
            });
        }
        Effect::Sync { upto } => {
            let tx = cx.tx.clone();
            cx.storage.sync_then(move |result| {
                let input = match result {
                    Ok(()) => Input::Synced { upto },
                    Err(e) => Input::SyncFailed { message: e.to_string() },
                };
                let _ = tx.send(ShardMsg::Input(input));
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Wire conversions: the core's messages are not Serialize; the wire DTOs are separate.

pub fn to_wire(key: &ItemKey) -> WireKey {
    WireKey { table: key.table.clone(), partition: key.partition.clone(), sort: key.sort.clone() }
}

fn from_wire(key: WireKey) -> Result<ItemKey, ReplicaError> {
    Ok(ItemKey::new(&key.table, &key.partition, &key.sort)?)
}

fn decode_state(bytes: &[u8]) -> Result<ItemState, ReplicaError> {
    ItemState::decode(bytes)
        .map_err(|e| ReplicaError::Internal(format!("peer sent a corrupt item state: {e}")))
}

fn name_of(ring: &Placement, idx: usize) -> String {
    ring.directory().get(idx).map(|m| m.id.clone()).unwrap_or_default()
}

fn index_of(ring: &Placement, name: &str) -> Result<usize, ReplicaError> {
    ring.index_of(name).ok_or_else(|| ReplicaError::BadRequest(format!("unknown member {name:?}")))
}

fn tree_to_wire(ring: &Placement, t: &TreeId) -> WireTree {
    WireTree {
        table: t.table.clone(),
        set: t.set.iter().map(|i| name_of(ring, *i)).collect(),
        shard: t.shard as u32,
    }
}

fn tree_from_wire(ring: &Placement, t: WireTree) -> Result<TreeId, ReplicaError> {
    let mut set = t.set.iter().map(|n| index_of(ring, n)).collect::<Result<Vec<_>, _>>()?;
    set.sort_unstable();
    let shard = t.shard as usize;
    if shard >= SHARDS_LEN {
        return Err(ReplicaError::BadRequest(format!("shard {shard} out of range")));
    }
    Ok(TreeId { table: t.table, set, shard })
}

fn request_to_wire(ring: &Placement, req: PeerRequest) -> Request {
    match req {
        PeerRequest::Ping => Request::Ping,
        PeerRequest::CoordinateWrite { key, value, ctx, w, sloppy, timeout_ms, write_id, fence } => {
            Request::CoordinateWrite {
                key: to_wire(&key),
                value,
                context: ctx.to_token(),
                w: w as u32,
                sloppy,
                timeout_ms,
                write_id: write_id.0,
                fence: fence.map(|f| (f.name, f.token)),
            }
        }
        PeerRequest::Replicate { key, state } => {
            Request::Replicate { key: to_wire(&key), state: state.encode() }
        }
        PeerRequest::StoreHint { target, key, state } => {
            Request::StoreHint { target: name_of(ring, target), key: to_wire(&key), state: state.encode() }
        }
        PeerRequest::Read { key } => Request::Read { key: to_wire(&key) },
        PeerRequest::Scan { table, partition, from, to, limit, reverse } => {
            Request::Scan { table, partition, from, to, limit: limit as u32, reverse }
        }
        PeerRequest::AeHashes { tree, level, parents } => Request::AeHashes {
            tree: tree_to_wire(ring, &tree),
            level: level as u32,
            parents: parents.into_iter().map(|p| p as u32).collect(),
        },
        PeerRequest::AeLeafKeys { tree, leaves } => Request::AeLeafKeys {
            tree: tree_to_wire(ring, &tree),
            leaves: leaves.into_iter().map(|l| l as u32).collect(),
        },
        PeerRequest::TombstoneHeld { key, state } => {
            Request::TombstoneHeld { key: to_wire(&key), state: state.encode() }
        }
        PeerRequest::StartRepair { table } => Request::StartRepair { table },
    }
}

fn request_from_wire(ring: &Placement, req: Request) -> Result<PeerRequest, ReplicaError> {
    Ok(match req {
        Request::Ping => PeerRequest::Ping,
        Request::CoordinateWrite { key, value, context, w, sloppy, timeout_ms, write_id, fence } => {
            PeerRequest::CoordinateWrite {
                key: from_wire(key)?,
                value,
                ctx: VersionVector::from_token(&context)?,
                w: w as usize,
                sloppy,
                timeout_ms,
                write_id: WriteId(write_id),
                fence: fence.map(|(name, token)| Fence { name, token }),
            }
        }
        Request::Replicate { key, state } => {
            PeerRequest::Replicate { key: from_wire(key)?, state: decode_state(&state)? }
        }
        Request::StoreHint { target, key, state } => PeerRequest::StoreHint {
            target: index_of(ring, &target)?,
            key: from_wire(key)?,
            state: decode_state(&state)?,
        },
        Request::Read { key } => PeerRequest::Read { key: from_wire(key)? },
        Request::Scan { table, partition, from, to, limit, reverse } => {
            quorumdb_core::key::validate_table(&table)?;
            PeerRequest::Scan { table, partition, from, to, limit: limit as usize, reverse }
        }
        Request::AeHashes { tree, level, parents } => PeerRequest::AeHashes {
            tree: tree_from_wire(ring, tree)?,
            level: level as usize,
            parents: parents.into_iter().map(|p| p as usize).collect(),
        },
        Request::AeLeafKeys { tree, leaves } => PeerRequest::AeLeafKeys {
            tree: tree_from_wire(ring, tree)?,
            leaves: leaves.into_iter().map(|l| l as usize).collect(),
        },
        Request::TombstoneHeld { key, state } => {
            PeerRequest::TombstoneHeld { key: from_wire(key)?, state: decode_state(&state)? }
        }
        Request::StartRepair { table } => PeerRequest::StartRepair { table },
        // Answered by the node itself, before this conversion.
        Request::Heat => {
            return Err(ReplicaError::BadRequest("a heat request is not a replica request".into()))
        }
        // The peer handler hands raft messages to the metadata member before this point.
        Request::Raft { .. } => {
            return Err(ReplicaError::BadRequest("a raft message is not a replica request".into()))
        }
        // Likewise group and sink requests go to the groups and the sink manager.
        Request::Group(_) | Request::SinkStatus { .. } => {
            return Err(ReplicaError::BadRequest("a group or sink request is not a replica request".into()))
        }
    })
}

fn response_to_wire(resp: PeerResponse) -> Response {
    match resp {
        PeerResponse::Pong => Response::Pong,
        PeerResponse::Ack => Response::Ack,
        PeerResponse::Written(state) => Response::Written { state: state.encode() },
        PeerResponse::Item(state) => Response::Item { state: state.encode() },
        PeerResponse::Page { items, exhausted } => Response::Page {
            items: items.into_iter().map(|(sort, s)| PageItem { sort, state: s.encode() }).collect(),
            exhausted,
        },
        PeerResponse::Hashes(hashes) => Response::Hashes { hashes },
        PeerResponse::LeafKeys(listings) => Response::LeafKeys {
            leaves: listings
                .into_iter()
                .map(|(leaf, items)| LeafListing {
                    leaf: leaf as u32,
                    items: items.into_iter().map(|(key, digest)| KeyDigest { key, digest }).collect(),
                })
                .collect(),
        },
        PeerResponse::Held(held) => Response::Held { held },
        PeerResponse::Failed(ReplicaError::Quorum(q)) => {
            let d = match ApiError::from(q) {
                ApiError::Quorum(d) => d,
                other => return Response::Error { code: other.code().into(), message: other.to_string() },
            };
            Response::QuorumFailed {
                needed: d.needed as u32,
                got: d.got as u32,
                outcomes: d.outcomes,
                message: d.message,
            }
        }
        PeerResponse::Failed(ReplicaError::RemoteQuorum { needed, got, outcomes, message }) => {
            Response::QuorumFailed { needed: needed as u32, got: got as u32, outcomes, message }
        }
        PeerResponse::Failed(e) => Response::Error { code: e.code().into(), message: e.to_string() },
    }
}

fn response_from_wire(resp: Response) -> PeerResponse {
    let decoded = |bytes: &[u8]| decode_state(bytes);
    match resp {
        Response::Pong => PeerResponse::Pong,
        Response::Ack => PeerResponse::Ack,
        Response::Written { state } => {
            decoded(&state).map_or_else(PeerResponse::Failed, PeerResponse::Written)
        }
        Response::Item { state } => decoded(&state).map_or_else(PeerResponse::Failed, PeerResponse::Item),
        Response::Page { items, exhausted } => {
            match items
                .into_iter()
                .map(|i| decoded(&i.state).map(|s| (i.sort, s)))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(items) => PeerResponse::Page { items, exhausted },
                Err(e) => PeerResponse::Failed(e),
            }
        }
        Response::Hashes { hashes } => PeerResponse::Hashes(hashes),
        Response::LeafKeys { leaves } => PeerResponse::LeafKeys(
            leaves
                .into_iter()
                .map(|l| (l.leaf as usize, l.items.into_iter().map(|kd| (kd.key, kd.digest)).collect()))
                .collect(),
        ),
        Response::Held { held } => PeerResponse::Held(held),
        Response::QuorumFailed { needed, got, outcomes, message } => {
            PeerResponse::Failed(ReplicaError::RemoteQuorum {
                needed: needed as usize,
                got: got as usize,
                outcomes,
                message,
            })
        }
        Response::Error { code, message } => PeerResponse::Failed(ReplicaError::from_code(&code, message)),
        Response::Heat(_) | Response::Group(_) | Response::SinkStatus { .. } => PeerResponse::Failed(
            ReplicaError::Internal("a heat, group or sink answer is not a replica answer".into()),
        ),
    }
}

fn heat_to_wire(h: &HeatReport) -> WireHeat {
    WireHeat {
        window_ms: h.window_ms,
        reads_total: h.reads_total,
        writes_total: h.writes_total,
        keys: h
            .keys
            .iter()
            .take(HEAT_KEYS_LEN_MAX)
            .map(|k| WireHotKey {
                hash: k.hash,
                table: k.table.clone(),
                partition: k.partition.clone(),
                reads: k.reads,
                reads_error: k.reads_error,
                writes: k.writes,
                writes_error: k.writes_error,
            })
            .collect(),
    }
}

fn heat_from_wire(h: WireHeat) -> HeatReport {
    HeatReport {
        window_ms: h.window_ms,
        reads_total: h.reads_total,
        writes_total: h.writes_total,
        keys: h
            .keys
            .into_iter()
            .take(HEAT_KEYS_LEN_MAX)
            .map(|k| HotKey {
                hash: k.hash,
                table: k.table,
                partition: k.partition,
                reads: k.reads,
                reads_error: k.reads_error,
                writes: k.writes,
                writes_error: k.writes_error,
            })
            .collect(),
    }
}

/// A response's variant name, for error messages (its payload may be large).
fn response_kind(r: &Response) -> &'static str {
    match r {
        Response::Pong => "Pong",
        Response::Ack => "Ack",
        Response::Hashes { .. } => "Hashes",
        Response::Held { .. } => "Held",
        Response::LeafKeys { .. } => "LeafKeys",
        Response::Item { .. } => "Item",
        Response::Page { .. } => "Page",
        Response::Written { .. } => "Written",
        Response::QuorumFailed { .. } => "QuorumFailed",
        Response::Error { .. } => "Error",
        Response::Heat(_) => "Heat",
        Response::Group(_) => "Group",
        Response::SinkStatus { .. } => "SinkStatus",
    }
}

#[doc(hidden)]
pub mod fuzzing;
