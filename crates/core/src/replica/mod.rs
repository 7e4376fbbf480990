//! # The replica: QuorumDB's whole per-node protocol as one deterministic state machine
//!
//! One [`Replica`] owns one shard of a node's keys (the node runs [`SHARDS_LEN`] of them on
//! threads of their own; the simulator runs the same machines on one thread). It is driven by
//! [`Replica::step`] with an [`Input`] and by [`Replica::tick`], and answers with [`Effect`]s that
//! a driver executes: send a peer request, answer a peer, answer a client, make storage durable.
//! Storage sits behind the synchronous [`LocalStore`] trait. No sockets, threads, clocks or
//! async inside: time enters as [`Now`], so the server and the simulator run exactly this code.
//!
//! ```text
//!   driver (node: tokio + fjall + TCP;  simulator: event queue + MemStore + simulated net)
//!     │ Input::Client{Write|Read|Scan|Inspect|StartRepair}      ▲ Effect::Reply
//!     │ Input::Peer{CoordinateWrite|Replicate|StoreHint|Read|   │ Effect::Respond
//!     │            Scan|AeHashes|AeLeafKeys|TombstoneHeld|Ping} │ Effect::Send ──► peer ──┐
//!     │ Input::Response{id, reply or SendError} ◄───────────────┼─────────────────────────┘
//!     │ Input::Synced{upto} ◄── group commit ◄──────────────────┘ Effect::Sync{upto}
//!     ▼ tick(now): request deadlines, coordinator deadlines, hint hand-off, anti-entropy, GC
//!   Replica ── LocalStore (get/put/range/hints/tombstones, synchronous, durable after Sync)
//!           ── Shared (ring, config, failure Detector, Hlc; shared by a node's shards)
//! ```
//!
//! ## The write path
//! A client write reaches any node. If that node is a home replica of the key it coordinates;
//! otherwise it forwards to the first home replica believed up, falling through to the next
//! only when the connection was refused (a timeout or a lost connection may have applied the
//! write, so retrying elsewhere would add a duplicate sibling; the client is told the outcome is
//! unknown). The coordinating replica mints a dot from its local state and its durable shard
//! counter, stores the new state, and in parallel waits for its own group commit and sends the
//! state to the other home replicas (or, for `sloppy` writes, to live stand-ins as hints). A
//! [`WriteCoordinator`] answers at W acknowledgements; when every replica answered or the
//! deadline passed, home replicas that did not acknowledge are hinted.
//!
//! ## Durability
//! Every acknowledgement of data — a replica's `Ack` of a `Replicate`, a coordinator counting
//! itself — waits for an [`Input::Synced`] covering the store it vouches for. `persist_seq`
//! numbers stores; a waiter needs `synced_seq >= its seq`.
//!
//! ## Dots
//! A new dot is `(actor, local counter + 1)` under the item's causal context. The driver
//! chooses the actor: the node keeps its actor id across clean restarts and mints a fresh one
//! after a crash, because a dot minted before the crash may be lost locally yet present on other
//! replicas, and minting it again would make merges drop one of two writes. (Keeping the actor
//! and skipping counters past a durable reservation is *not* a fix: the version vector entry
//! then covers the lost dot, and a merge drops the lost write from the replicas that hold it;
//! the simulator shows this, seed 974 of an earlier build.)

pub mod crdt_table;
pub mod lww;
pub mod scan;
pub mod shared;
pub mod store;

pub use scan::{ScanMerge, ScanResult};
pub use shared::{Conflict, Detector, Hlc, NodeId, ReplicaConfig, Shared, TableSpec};
pub use store::{LocalStore, MemStore, StoreError};

use crate::antientropy::{Command, Exchange, ExchangeStats, LeafItems, EXCHANGE_LEAVES_MAX};
use crate::causality::{
    ActorId, Applied, CausalityError, Dot, Fence, ItemState, Retirement, Value, VersionVector, WriteId,
};
use crate::consistency::{Level, LevelError};
use crate::coordinator::{Failure, Floor, Outcome, QuorumError, ReadCoordinator, WriteCoordinator};
use crate::handoff::{HandoffCommand, Hint, HintId, HintQueue};
use crate::heat::{Heat, HeatOp, HeatReport};
use crate::key::{partition_prefix, ItemKey, KeyError};
use crate::limits::{ITEM_STATE_BYTES_MAX, SCAN_PAGE_BYTES_MAX, SCAN_PAGE_LEN_MAX, VALUE_BYTES_MAX};
use crate::merkle::{item_digest, leaf_key_range, MerkleTree, LEAVES};
use crate::placement::{Placement, REQUEST_REPLICAS_MAX};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use thiserror::Error;

/// Replica shards per node. A protocol constant, not a setting: anti-entropy compares the
/// trees of shard `s` of two nodes, so every node must cut its keys the same way. Two keeps
/// both cores of a small machine busy; four cost about 12 % of YCSB-A throughput on the
/// 2-core development machine running three nodes (more threads than cores; median new/old
/// 0.88 with four against 1.03 with two, same session). A configurable count, checked in the
/// peer handshake, is the way to use large machines.
pub const SHARDS_LEN: usize = 2;

/// Tombstones checked with their replicas per GC pass.
pub const GC_BATCH_LEN_MAX: usize = 1_000;

/// Most exchanges one (tree, peer) pair runs back to back in a round while a bound cut the
/// previous one short (`more_remaining`).
pub const EXCHANGES_PER_ROUND_MAX: usize = 64;

/// The shard that owns a key with this placement hash. High bits, so that the shard is
/// independent of the ring's position arithmetic.
pub fn shard_of(placement_hash: u64) -> usize {
    ((placement_hash >> 48) % SHARDS_LEN as u64) as usize
}

/// The shard of a stored item, from its storage key (`None` if it does not parse).
pub fn shard_of_storage_key(storage_key: &[u8]) -> Option<usize> {
    ItemKey::from_storage_key(storage_key).ok().map(|k| shard_of(k.placement_hash()))
}

/// One replica's scan page: `(sort key, state)` in scan order.
pub type ScanPage = Vec<(Vec<u8>, ItemState)>;

/// Ids the driver gives client and peer requests, and the replica gives its own requests.
pub type RequestId = u64;

/// The two clocks a replica reads: monotonic milliseconds for deadlines, and wall-clock
/// milliseconds since the Unix epoch for what must survive restarts or be compared across nodes
/// (hint ages, tombstone ages, HLC timestamps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub mono_ms: u64,
    pub wall_ms: u64,
}

/// Strict or sloppy quorum for one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuorumMode {
    #[default]
    Strict,
    Sloppy,
}

/// What a read does about stale replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadRepair {
    /// Repair the stale replicas of the read set before answering.
    #[default]
    Blocking,
    /// Answer first, repair afterwards.
    Async,
    Off,
    /// Linearizable reads: like blocking, and fail if the write-back does not succeed.
    WriteBack,
}

/// A request from a client, already parsed by the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// Put (`value = Some`) or delete (`None`).
    Write {
        key: ItemKey,
        value: Option<Vec<u8>>,
        ctx: VersionVector,
        w: Level,
        mode: QuorumMode,
        timeout_ms: u64,
        /// The client's id of this logical write (retries and hedges carry the same id and
        /// yield one version); the gateway draws one when the client sent none.
        write_id: Option<WriteId>,
        /// The fencing token the write carries (see `causality::Fence`).
        fence: Option<Fence>,
    },
    Read {
        key: ItemKey,
        r: Level,
        repair: ReadRepair,
        mode: QuorumMode,
        timeout_ms: u64,
        /// A session's floor for this item: what the client already wrote or read of it. The
        /// answer's context must hold it (up to pruning of retired actors), so the read waits
        /// for further replicas past `r` if it must, and fails `session_behind` rather than
        /// answer older (read-your-writes and monotonic reads at any `r`).
        floor: Option<VersionVector>,
    },
    Scan(ScanRequest),
    /// Every home replica's state of one item, repairing nothing.
    Inspect {
        key: ItemKey,
        timeout_ms: u64,
    },
    /// Start a full anti-entropy pass of this shard (all tables, or one).
    StartRepair {
        table: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanRequest {
    pub table: String,
    pub partition: Vec<u8>,
    pub from: Option<Vec<u8>>,
    pub to: Option<Vec<u8>>,
    pub limit: usize,
    pub reverse: bool,
    pub cursor: Option<String>,
    pub r: Level,
    pub timeout_ms: u64,
}

/// The answer to a client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientResponse {
    Written(ItemState),
    Read(ItemState),
    Scan(ScanResult),
    Inspect(Vec<(NodeId, Result<ItemState, String>)>),
    Started,
}

/// Names one Merkle tree: a table, the sorted members of a replica set, and the shard.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreeId {
    pub table: String,
    pub set: Vec<NodeId>,
    pub shard: usize,
}

/// Node-to-node requests (the node's wire DTOs mirror these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRequest {
    Ping,
    /// Coordinate this write as a home replica (sent by a gateway).
    CoordinateWrite {
        key: ItemKey,
        value: Option<Vec<u8>>,
        ctx: VersionVector,
        w: usize,
        sloppy: bool,
        timeout_ms: u64,
        write_id: WriteId,
        fence: Option<Fence>,
    },
    /// Merge this state and acknowledge once durable.
    Replicate {
        key: ItemKey,
        state: ItemState,
    },
    /// Keep this state as a durable hint for home replica `target`.
    StoreHint {
        target: NodeId,
        key: ItemKey,
        state: ItemState,
    },
    /// Your state of one item (a stand-in adds its hinted states).
    Read {
        key: ItemKey,
    },
    Scan {
        table: String,
        partition: Vec<u8>,
        from: Option<Vec<u8>>,
        to: Option<Vec<u8>>,
        limit: usize,
        reverse: bool,
    },
    AeHashes {
        tree: TreeId,
        level: usize,
        parents: Vec<usize>,
    },
    AeLeafKeys {
        tree: TreeId,
        leaves: Vec<usize>,
    },
    /// Do you hold exactly this tombstone (or have you purged it)?
    TombstoneHeld {
        key: ItemKey,
        state: ItemState,
    },
    StartRepair {
        table: Option<String>,
    },
}

impl PeerRequest {
    /// The shard a request belongs to at the receiving node (`None`: any shard, e.g. pings).
    pub fn shard(&self) -> Option<usize> {
        match self {
            PeerRequest::Ping | PeerRequest::StartRepair { .. } => None,
            PeerRequest::CoordinateWrite { key, .. }
            | PeerRequest::Replicate { key, .. }
            | PeerRequest::StoreHint { key, .. }
            | PeerRequest::Read { key }
            | PeerRequest::TombstoneHeld { key, .. } => Some(shard_of(key.placement_hash())),
            PeerRequest::Scan { table, partition, .. } => {
                Some(shard_of(crate::key::placement_hash(table, partition)))
            }
            PeerRequest::AeHashes { tree, .. } | PeerRequest::AeLeafKeys { tree, .. } => Some(tree.shard),
        }
    }
}

/// Answers to [`PeerRequest`]s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerResponse {
    Pong,
    Ack,
    Written(ItemState),
    Item(ItemState),
    Page { items: Vec<(Vec<u8>, ItemState)>, exhausted: bool },
    Hashes(Vec<u64>),
    LeafKeys(Vec<(usize, LeafItems)>),
    Held(bool),
    Failed(ReplicaError),
}

/// Why a peer request got no answer. Whether the request may have taken effect is part of the
/// type: only `Unreachable` guarantees it did not.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SendError {
    /// The request was never delivered (connection refused, no route): it had no effect.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer by the deadline: the request may or may not have been applied.
    #[error("timeout")]
    Timeout,
    /// The connection failed after the request was sent: outcome unknown.
    #[error("connection lost: {0}")]
    Lost(String),
}

impl SendError {
    /// Whether the request may have taken effect at the peer.
    pub fn outcome_unknown(&self) -> bool {
        !matches!(self, SendError::Unreachable(_))
    }
}

/// Every failure a client request can end in; the node maps each to an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReplicaError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidConsistency(String),
    #[error("{0}")]
    MalformedContext(String),
    #[error("{0}")]
    KeyTooLarge(String),
    #[error("{0}")]
    ValueTooLarge(String),
    /// The write would make the item's stored state larger than `ITEM_STATE_BYTES_MAX`.
    #[error("{0}")]
    ItemTooLarge(String),
    #[error("{0}")]
    TooManySiblings(String),
    /// The write would add a writer to an item whose context already names the most allowed.
    #[error("{0}")]
    TooManyWriters(String),
    /// The write carries a fencing token lower than one the item holds (see `causality::Fence`).
    #[error("{0}")]
    Fenced(String),
    #[error("{0}")]
    Quorum(QuorumError),
    /// A quorum failure reported by a remote coordinator (outcomes as text).
    #[error("{message}")]
    RemoteQuorum { needed: usize, got: usize, outcomes: Vec<(String, String)>, message: String },
    /// The outcome is unknown: the write may or may not have been applied.
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Poisoned(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ReplicaError {
    /// Stable machine-readable code (the HTTP error body's `code`, and the wire form).
    pub fn code(&self) -> &'static str {
        match self {
            ReplicaError::BadRequest(_) => "bad_request",
            ReplicaError::InvalidConsistency(_) => "invalid_consistency",
            ReplicaError::MalformedContext(_) => "malformed_context",
            ReplicaError::KeyTooLarge(_) => "key_too_large",
            ReplicaError::ValueTooLarge(_) => "value_too_large",
            ReplicaError::ItemTooLarge(_) => "item_too_large",
            ReplicaError::TooManySiblings(_) => "too_many_siblings",
            ReplicaError::TooManyWriters(_) => "too_many_writers",
            ReplicaError::Fenced(_) => "fenced",
            ReplicaError::Quorum(_) | ReplicaError::RemoteQuorum { .. } => "quorum_not_reached",
            ReplicaError::Timeout(_) => "timeout",
            ReplicaError::Poisoned(_) => "node_poisoned",
            ReplicaError::Unavailable(_) => "unavailable",
            ReplicaError::Internal(_) => "internal",
        }
    }

    /// Rebuilds an error from its wire form (code + message).
    pub fn from_code(code: &str, message: String) -> Self {
        match code {
            "bad_request" => ReplicaError::BadRequest(message),
            "invalid_consistency" => ReplicaError::InvalidConsistency(message),
            "malformed_context" => ReplicaError::MalformedContext(message),
            "key_too_large" => ReplicaError::KeyTooLarge(message),
            "value_too_large" => ReplicaError::ValueTooLarge(message),
            "item_too_large" => ReplicaError::ItemTooLarge(message),
            "too_many_siblings" => ReplicaError::TooManySiblings(message),
            "fenced" => ReplicaError::Fenced(message),
            "too_many_writers" => ReplicaError::TooManyWriters(message),
            "timeout" => ReplicaError::Timeout(message),
            "node_poisoned" => ReplicaError::Poisoned(message),
            "unavailable" => ReplicaError::Unavailable(message),
            _ => ReplicaError::Internal(message),
        }
    }
}

impl From<StoreError> for ReplicaError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Poisoned(_) => ReplicaError::Poisoned(e.to_string()),
            other => ReplicaError::Internal(other.to_string()),
        }
    }
}

impl From<KeyError> for ReplicaError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::PartitionKeyLength { got: 0, .. } => ReplicaError::BadRequest(e.to_string()),
            KeyError::PartitionKeyLength { .. } | KeyError::SortKeyLength { .. } => {
                ReplicaError::KeyTooLarge(e.to_string())
            }
            other => ReplicaError::BadRequest(other.to_string()),
        }
    }
}

impl From<LevelError> for ReplicaError {
    fn from(e: LevelError) -> Self {
        ReplicaError::InvalidConsistency(e.to_string())
    }
}

impl From<crate::crdt::CrdtError> for ReplicaError {
    fn from(e: crate::crdt::CrdtError) -> Self {
        use crate::crdt::CrdtError;
        match e {
            CrdtError::OpDoesNotFit(_) => ReplicaError::BadRequest(e.to_string()),
            // Retryable: the replica is waiting for adds anti-entropy brings within seconds.
            CrdtError::TooManyDeferred { .. } => ReplicaError::Unavailable(e.to_string()),
            CrdtError::Malformed(_) => ReplicaError::Internal(e.to_string()),
        }
    }
}

impl From<CausalityError> for ReplicaError {
    fn from(e: CausalityError) -> Self {
        match e {
            CausalityError::MalformedToken(_) => ReplicaError::MalformedContext(e.to_string()),
            CausalityError::TooManySiblings { .. } => ReplicaError::TooManySiblings(e.to_string()),
            CausalityError::VersionVectorTooLong { .. } => ReplicaError::TooManyWriters(e.to_string()),
            CausalityError::MalformedState(_) => ReplicaError::Internal(e.to_string()),
            CausalityError::MalformedWriteId(_) => ReplicaError::BadRequest(e.to_string()),
            CausalityError::Fenced { .. } => ReplicaError::Fenced(e.to_string()),
            CausalityError::TooManyFences { .. } => ReplicaError::TooManySiblings(e.to_string()),
        }
    }
}

/// What the driver feeds the replica.
#[derive(Clone, Debug)]
pub enum Input {
    Client {
        id: RequestId,
        req: ClientRequest,
    },
    Peer {
        from: NodeId,
        id: RequestId,
        req: PeerRequest,
    },
    /// The answer to (or failure of) a request this replica sent with [`Effect::Send`].
    Response {
        id: RequestId,
        result: Result<PeerResponse, SendError>,
    },
    /// A sync requested with `Effect::Sync{upto}` completed: every store up to `upto` is durable.
    Synced {
        upto: u64,
    },
    /// A sync failed: the store is poisoned.
    SyncFailed {
        message: String,
    },
    /// The cluster's layout changed: from now on keys are placed by this placement (live
    /// layout versions and the read version, from the metadata).
    Placement(Arc<Placement>),
    /// Stream this shard's data to the owners of layout `version`: one full anti-entropy pass
    /// over the newest layout's trees, repeated until one completes without a failed exchange
    /// (see [`Replica::synced_version`]).
    SyncLayout {
        version: u64,
    },
}

/// What the replica asks the driver to do.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Send a request; report its answer or failure with `Input::Response{id}` (at most once;
    /// the replica times requests out itself after `timeout_ms`).
    Send { to: NodeId, id: RequestId, req: PeerRequest, timeout_ms: u64 },
    /// Answer the peer request `id` from `to`.
    Respond { to: NodeId, id: RequestId, resp: PeerResponse },
    /// Answer the client request `id`.
    Reply { id: RequestId, result: Result<ClientResponse, ReplicaError> },
    /// Make every store so far durable, then report `Input::Synced{upto}`.
    Sync { upto: u64 },
}

/// Observations for the simulator's invariants and for tests; recorded only when tracing is on.
#[derive(Clone, Debug)]
pub enum Event {
    /// A dot was minted for a write of this item.
    Minted { key: Vec<u8>, dot: Dot, value: Value },
    /// The stored state of an item was replaced.
    Stored { key: Vec<u8>, old: ItemState, new: ItemState },
    /// This replica vouched for `state` of `key` being durable here.
    Acked { key: Vec<u8>, state: ItemState },
}

/// Counters for metrics, cumulative.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Replica replies by (op, outcome): op is `write|read`, outcome `ok|timeout|error|down`.
    pub replica_responses: BTreeMap<(&'static str, &'static str), u64>,
    pub hints_added: u64,
    pub hints_refused: u64,
    pub hints_delivered: u64,
    pub hints_dropped: u64,
    pub read_repairs: u64,
    pub exchanges_done: u64,
    pub exchanges_failed: u64,
    pub keys_pushed: u64,
    pub keys_pulled: u64,
    pub item_bytes_pushed: u64,
    pub item_bytes_pulled: u64,
    pub digests_received: u64,
    pub tombstones_purged: u64,
    /// Client writes whose write id this replica had already applied (retries, hedges,
    /// duplicate deliveries): answered with the existing version instead of a new one.
    pub writes_deduplicated: u64,
    /// Forwarded writes sent to a second home replica because the first was slow to answer.
    pub writes_hedged: u64,
    pub syncs: u64,
    /// Per CRDT table: merges that left concurrent states for the join to resolve.
    pub crdt_tables: BTreeMap<String, CrdtTableStats>,
}

/// Conflict counters of one CRDT table on one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrdtTableStats {
    /// Merges (replication, read repair, hints, anti-entropy) whose result held more than one
    /// concurrent CRDT state: CRDT conflicts, resolved by the join.
    pub concurrent_merges: u64,
    /// Largest number of concurrent states one merged item held.
    pub siblings_max: u64,
}

/// Progress of the current or last full repair pass of this shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairProgress {
    pub running: bool,
    pub table: Option<String>,
    pub exchanges_total: usize,
    pub exchanges_done: usize,
    pub exchanges_failed: usize,
    pub keys_pushed: u64,
    pub keys_pulled: u64,
    pub item_bytes: u64,
    pub digests_received: u64,
    pub leaves_differing: u64,
    pub passes_completed: u64,
}

// ---------------------------------------------------------------------------------------------
// Internal bookkeeping

/// Why a request was sent, so its answer (or its timeout) reaches the right job.
#[derive(Clone, Debug)]
enum Purpose {
    WriteReplica {
        job: u64,
    },
    ReadReplica {
        job: u64,
    },
    /// A repair the read waits for (blocking mode).
    RepairBlocking {
        job: u64,
    },
    /// A repair nobody waits for.
    Repair,
    Forward {
        job: u64,
    },
    Hint {
        id: HintId,
    },
    ScanReplica {
        job: u64,
    },
    Inspect {
        job: u64,
    },
    AeHashes {
        level: usize,
    },
    AeLeafKeys,
    AePull {
        key: Vec<u8>,
    },
    AePush,
    Gc,
    /// A heartbeat of the failure detector (sent by shard 0 only).
    Ping,
}

#[derive(Clone, Debug)]
struct Outstanding {
    to: NodeId,
    /// When it was sent: a peer that never answers it has been failing since then.
    sent_ms: u64,
    deadline_ms: u64,
    purpose: Purpose,
}

/// Where a coordinated write's answer goes.
#[derive(Clone, Copy, Debug)]
enum ReplyTo {
    Client(RequestId),
    Peer { to: NodeId, id: RequestId },
}

/// Something released by a completed sync.
#[derive(Clone, Debug)]
enum Waiter {
    /// The coordinating replica's own acknowledgement of a write.
    SelfAck { job: u64 },
    /// Acknowledge a peer's `Replicate`/`StoreHint` (`key`, `state` for the trace).
    Ack { to: NodeId, id: RequestId, key: Option<(Vec<u8>, ItemState)> },
    /// A blocking read repair of this replica itself.
    LocalRepair { job: u64, marker: u64 },
}

struct WriteJob {
    key: ItemKey,
    state: ItemState,
    coord: WriteCoordinator<NodeId>,
    /// (target, home it stands in for) of every replica the write was sent to.
    targets: Vec<(NodeId, Option<NodeId>)>,
    /// The key's home replicas in every live layout version, read set first.
    homes: Vec<NodeId>,
    /// The newest layout version when the write started: a node acknowledges a new layout
    /// only once no write started under an older one is still running.
    layout: u64,
    reply_to: ReplyTo,
    replied: bool,
}

struct ForwardJob {
    client: RequestId,
    key: ItemKey,
    value: Option<Vec<u8>>,
    ctx: VersionVector,
    write_id: WriteId,
    fence: Option<Fence>,
    w: usize,
    mode: QuorumMode,
    timeout_ms: u64,
    /// Home replicas sent the write so far, with the time each was sent.
    tried: Vec<(NodeId, u64)>,
    /// Attempts still waiting for an answer.
    outstanding: usize,
    /// When to send a hedged copy to the next home replica, if no answer came by then.
    hedge_at_ms: Option<u64>,
    /// Why the last unreachable target could not take the write.
    last_error: Option<String>,
    /// The first failure of an attempt, answered once no attempt is left to succeed.
    failure: Option<ReplicaError>,
}

/// Recent completion times of forwarded writes, for the hedging delay.
#[derive(Default)]
struct ForwardLatency {
    samples: VecDeque<u64>,
    p99_ms: Option<u64>,
}

impl ForwardLatency {
    fn record(&mut self, ms: u64) {
        if self.samples.len() == FORWARD_LATENCY_SAMPLES_LEN {
            self.samples.pop_front();
        }
        self.samples.push_back(ms);
        // Recomputed every few samples: sorting on every write would cost more than it helps.
        if self.samples.len().is_multiple_of(16) || self.p99_ms.is_none() {
            let mut sorted: Vec<u64> = self.samples.iter().copied().collect();
            sorted.sort_unstable();
            let rank = (sorted.len() * 99).div_ceil(100).saturating_sub(1);
            self.p99_ms = sorted.get(rank).copied();
        }
    }
}

/// Forwarded-write completion times kept for the hedging delay's p99.
const FORWARD_LATENCY_SAMPLES_LEN: usize = 256;

/// A client write on its way to its coordinator: what the client asked for (`w` as a level at
/// the gateway, resolved to a count at the coordinator).
struct WriteArgs<W> {
    value: Option<Vec<u8>>,
    ctx: VersionVector,
    w: W,
    mode: QuorumMode,
    timeout_ms: u64,
    write_id: WriteId,
    fence: Option<Fence>,
}

struct ReadJob {
    client: RequestId,
    key: ItemKey,
    coord: ReadCoordinator<ItemState, NodeId>,
    repair: ReadRepair,
    deadline_ms: u64,
    answer: Option<ItemState>,
    answered: bool,
    /// Blocking repairs in flight (request ids, or markers of local repairs).
    repairing: BTreeSet<u64>,
    /// Names of the replicas whose blocking repair failed (for the error message).
    failed_repairs: Vec<String>,
    repaired: Vec<NodeId>,
}

struct ScanJob {
    client: RequestId,
    limit: usize,
    coord: ReadCoordinator<ScanMerge, NodeId>,
    reverse: bool,
}

struct InspectJob {
    client: RequestId,
    results: Vec<(NodeId, Option<Result<ItemState, String>>)>,
    deadline_ms: u64,
}

/// The anti-entropy exchange in progress.
struct AeRun {
    tree: TreeId,
    peer: NodeId,
    exchange: Exchange,
    /// The hash or leaf request in flight; answers to any other are stale.
    waiting: Option<RequestId>,
    pulls: VecDeque<Vec<u8>>,
    /// Keys to push once the pulls are done, unless a pull showed the peer has them.
    pushes: BTreeSet<Vec<u8>>,
    push_queue: Option<VecDeque<Vec<u8>>>,
    /// A pull or push in flight.
    transfer: Option<RequestId>,
    done: Option<ExchangeStats>,
    /// Exchanges of this (tree, peer) run back to back so far.
    repeats: usize,
    item_bytes: u64,
    pushed: u64,
    pulled: u64,
}

#[derive(Default)]
struct AeState {
    run: Option<AeRun>,
    /// (tree, peer) pairs left in the current round.
    queue: VecDeque<(TreeId, NodeId)>,
    /// The round is a full repair pass (counts into `progress`).
    full: bool,
    /// A full pass was asked for while a round ran.
    full_requested: Option<Option<String>>,
    next_round_ms: u64,
    /// Earliest time the next transfer may start (byte-rate throttle).
    throttle_next_ms: u64,
    progress: RepairProgress,
    /// The layout version the current full pass streams for: set when a full pass starts
    /// while a layout sync is pending, cleared when the trees move under it.
    sync_round: Option<u64>,
    /// When a layout sync whose pass had failed exchanges tries again.
    sync_retry_ms: u64,
}

/// Pause before a layout sync pass that had failed exchanges (a peer down) runs again.
const LAYOUT_SYNC_RETRY_MS: u64 = 1_000;

struct GcJob {
    /// Tombstones to check, with the state each must be held as.
    queue: VecDeque<(ItemKey, ItemState)>,
    /// The one being checked: its key, state, and the replicas still to answer.
    current: Option<(ItemKey, ItemState, BTreeSet<RequestId>, bool)>,
}

// ---------------------------------------------------------------------------------------------

/// One shard of one node's replica protocol. See the module docs.
pub struct Replica<S: LocalStore> {
    shared: Arc<Shared>,
    /// Where keys live now (`Input::Placement`); starts as the shared initial placement.
    placement: Arc<Placement>,
    /// The layout version being streamed to its owners (`Input::SyncLayout`), if any.
    layout_sync: Option<u64>,
    /// The newest layout version this shard's data was fully streamed for.
    synced_version: u64,
    store: S,
    shard: usize,
    actor: ActorId,
    next_id: u64,
    /// Stores so far; a waiter needs a sync covering its store.
    persist_seq: u64,
    synced_seq: u64,
    sync_requested: u64,
    waiters: Vec<(u64, Waiter)>,
    poisoned: Option<String>,
    outstanding: BTreeMap<RequestId, Outstanding>,
    deadlines: BTreeSet<(u64, RequestId)>,
    writes: BTreeMap<u64, WriteJob>,
    forwards: BTreeMap<u64, ForwardJob>,
    forward_latency: ForwardLatency,
    reads: BTreeMap<u64, ReadJob>,
    scans: BTreeMap<u64, ScanJob>,
    inspects: BTreeMap<u64, InspectJob>,
    hints: HintQueue,
    trees: BTreeMap<TreeId, MerkleTree>,
    ae: AeState,
    gc: Option<GcJob>,
    next_handoff_ms: u64,
    next_gc_ms: u64,
    next_ping_ms: u64,
    effects: Vec<Effect>,
    trace: bool,
    events: Vec<Event>,
    stats: ReplicaStats,
    /// Reads and writes per partition key over the last window (`crate::heat`).
    heat: Heat,
}

impl<S: LocalStore> Replica<S> {
    /// Opens shard `shard` of a node on `store` with the driver's actor id: restores hints and
    /// rebuilds Merkle trees from the stored items.
    pub fn open(
        shared: Arc<Shared>,
        store: S,
        shard: usize,
        actor: ActorId,
        now: Now,
    ) -> Result<Self, StoreError> {
        assert!(shard < SHARDS_LEN, "shard {shard} out of range");
        let stored = store.load_hints()?;
        let (hints, dropped) = HintQueue::restore(shared.config.hint_limits, stored, now.wall_ms);
        let mut replica = Replica {
            shard,
            actor,
            next_id: 0,
            persist_seq: 0,
            synced_seq: 0,
            sync_requested: 0,
            waiters: Vec::new(),
            poisoned: None,
            outstanding: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            writes: BTreeMap::new(),
            forwards: BTreeMap::new(),
            forward_latency: ForwardLatency::default(),
            reads: BTreeMap::new(),
            scans: BTreeMap::new(),
            inspects: BTreeMap::new(),
            hints,
            trees: BTreeMap::new(),
            ae: AeState::default(),
            gc: None,
            next_handoff_ms: now.mono_ms,
            next_gc_ms: now.mono_ms.saturating_add(shared.config.tombstone_gc_interval_ms),
            next_ping_ms: now.mono_ms,
            effects: Vec::new(),
            trace: false,
            events: Vec::new(),
            stats: ReplicaStats::default(),
            heat: Heat::default(),
            store,
            placement: Arc::new(shared.initial_placement.clone()),
            layout_sync: None,
            synced_version: shared.initial_placement.read_version(),
            shared,
        };
        replica.ae.next_round_ms = now.mono_ms.saturating_add(replica.shared.config.antientropy_interval_ms);
        for cmd in dropped {
            if let HandoffCommand::Drop { id, .. } | HandoffCommand::Delete { id } = cmd {
                replica.store.delete_hint(id)?;
                replica.persist_seq += 1;
            }
        }
        replica.request_sync();
        replica.rebuild_trees()?;
        Ok(replica)
    }

    /// Records [`Event`]s from now on (the simulator's invariants read them).
    pub fn set_trace(&mut self, on: bool) {
        self.trace = on;
    }

    pub fn drain_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back (a crash: everything else of the replica is lost).
    pub fn into_store(self) -> S {
        self.store
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn shard(&self) -> usize {
        self.shard
    }

    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    pub fn hint_stats(&self) -> crate::handoff::HintStats {
        self.hints.stats()
    }

    pub fn repair_progress(&self) -> &RepairProgress {
        &self.ae.progress
    }

    /// Nothing in flight, nothing waiting: the simulator's notion of idle.
    pub fn is_idle(&self) -> bool {
        self.waiters.is_empty()
            && self.hints.is_empty()
            && self.writes.is_empty()
            && self.forwards.is_empty()
            && self.reads.is_empty()
            && self.scans.is_empty()
            && self.inspects.is_empty()
            && self.synced_seq >= self.persist_seq
    }

    /// Why [`Replica::is_idle`] is false.
    pub fn busy_reason(&self) -> String {
        format!(
            "waiters {}, hints {}, writes {}, forwards {}, reads {}, scans {}, unsynced {}",
            self.waiters.len(),
            self.hints.len(),
            self.writes.len(),
            self.forwards.len(),
            self.reads.len(),
            self.scans.len(),
            self.persist_seq.saturating_sub(self.synced_seq)
        )
    }

    /// Root of this shard's tree `id` (empty root if none).
    pub fn tree_root(&mut self, id: &TreeId) -> u64 {
        self.trees.get_mut(id).map_or_else(|| MerkleTree::new().root(), |t| t.root())
    }

    /// The tree an item belongs to.
    pub fn tree_of(&self, key: &ItemKey) -> TreeId {
        self.tree_of_homes(key, &self.sync_set(key))
    }

    /// The current placement.
    pub fn placement(&self) -> &Arc<Placement> {
        &self.placement
    }

    /// The newest layout version whose owners this shard's data was streamed to (a full pass
    /// after `Input::SyncLayout` with no failed exchange).
    pub fn synced_version(&self) -> u64 {
        self.synced_version
    }

    /// Writes this shard coordinates that started while the newest layout was older than
    /// `version`: a node acknowledges `version` (it writes to its replica sets) only when
    /// there are none, so the streaming that follows sees every write acknowledged before.
    pub fn writes_before(&self, version: u64) -> usize {
        self.writes.values().filter(|j| j.layout < version).count()
    }

    /// A table's replication factor, capped by the smallest live layout.
    pub fn replication_factor(&self, table: &str) -> usize {
        self.shared.table(table).replication_factor.clamp(1, self.placement.members_len_min().max(1))
    }

    /// The key's replicas in the read version, primary first: who reads, scans, inspection
    /// and read repair ask.
    pub fn preference(&self, key: &ItemKey) -> Vec<NodeId> {
        self.placement.read_set(key.placement_hash(), self.replication_factor(&key.table))
    }

    /// The key's replicas in the newest layout version: its Merkle tree and exchanges.
    fn sync_set(&self, key: &ItemKey) -> Vec<NodeId> {
        self.placement.sync_set(key.placement_hash(), self.replication_factor(&key.table))
    }

    /// Every live version's replicas of the key, read set first: where writes go.
    fn all_homes(&self, key: &ItemKey) -> Vec<NodeId> {
        self.placement.all_homes(key.placement_hash(), self.replication_factor(&key.table))
    }

    /// Installs a new placement. The trees follow the newest layout's replica sets, so they are
    /// rebuilt when it changed; requests in flight keep the replica sets they started with.
    fn set_placement(&mut self, p: Arc<Placement>) {
        let trees_move = p.newest_version() != self.placement.newest_version()
            || p.directory().len() != self.placement.directory().len();
        self.placement = p;
        if trees_move {
            // The running pass walks trees that no longer exist; it cannot count as a sync.
            self.ae.sync_round = None;
            if let Err(e) = self.rebuild_trees() {
                self.poisoned = Some(format!("rebuilding Merkle trees for a new layout failed: {e}"));
            }
        }
        // A sync for a version that is no longer the newest live one is moot.
        if self.layout_sync.is_some_and(|v| v != self.placement.newest_version()) {
            self.layout_sync = None;
        }
    }

    /// Starts streaming for layout `version` (a repeat is a no-op while one runs).
    fn start_layout_sync(&mut self, now: Now, version: u64) {
        if version <= self.synced_version || self.layout_sync == Some(version) {
            return;
        }
        if version != self.placement.newest_version() {
            // The driver asks only for the newest live version; an older or unknown one is
            // stale and ignored (it asks again).
            return;
        }
        if !self.shared.config.antientropy {
            // Without trees there is nothing to stream with; the store is declared synced so
            // that a cluster running with anti-entropy off is not stuck (documented).
            self.synced_version = version;
            return;
        }
        self.layout_sync = Some(version);
        self.request_full_pass(now, None);
    }

    /// The tree of an item whose home replicas (`homes`, from the ring) the caller already has.
    fn tree_of_homes(&self, key: &ItemKey, homes: &[NodeId]) -> TreeId {
        let mut set = homes.to_vec();
        set.sort_unstable();
        TreeId { table: key.table.clone(), set, shard: self.shard }
    }

    /// The client's view of a state: for LWW tables the winner without its timestamp.
    pub fn client_view(shared: &Shared, table: &str, state: &ItemState) -> ItemState {
        match shared.table(table).conflict {
            // A CRDT item's siblings are joined by whoever presents them (`crdt_table::joined`).
            Conflict::Siblings | Conflict::Crdt(_) => state.clone(),
            Conflict::Lww => lww::client_view(&lww::resolve(state)),
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn name(&self, node: NodeId) -> String {
        self.placement.name(node)
    }

    fn me(&self) -> NodeId {
        self.shared.me
    }

    // -----------------------------------------------------------------------------------------
    // Entry points

    /// Feeds one input.
    pub fn step(&mut self, now: Now, input: Input) {
        self.count_heat(&input);
        match input {
            Input::Client { id, req } => self.on_client(now, id, req),
            Input::Peer { from, id, req } => self.on_peer(now, from, id, req),
            Input::Response { id, result } => self.on_response(now, id, result),
            Input::Synced { upto } => self.on_synced(now, upto),
            Input::SyncFailed { message } => self.on_sync_failed(now, message),
            Input::Placement(p) => self.set_placement(p),
            Input::SyncLayout { version } => self.start_layout_sync(now, version),
        }
    }

    /// Counts the operations on one partition key that `input` makes this replica do: a read
    /// or write it coordinates, a write it applies for a coordinator, a read it serves.
    fn count_heat(&mut self, input: &Input) {
        let (op, key) = match input {
            Input::Client { req: ClientRequest::Write { key, .. }, .. } => (HeatOp::Write, key),
            Input::Client { req: ClientRequest::Read { key, .. }, .. } => (HeatOp::Read, key),
            Input::Client { req: ClientRequest::Scan(s), .. } => {
                self.heat.observe(HeatOp::Read, &s.table, &s.partition);
                return;
            }
            Input::Peer {
                req: PeerRequest::CoordinateWrite { key, .. } | PeerRequest::Replicate { key, .. },
                ..
            } => (HeatOp::Write, key),
            Input::Peer { req: PeerRequest::Read { key }, .. } => (HeatOp::Read, key),
            Input::Peer { req: PeerRequest::Scan { table, partition, .. }, .. } => {
                self.heat.observe(HeatOp::Read, table, partition);
                return;
            }
            _ => return,
        };
        self.heat.observe(op, &key.table, &key.partition);
    }

    /// This replica's heat over its last completed window.
    pub fn heat(&self) -> &HeatReport {
        self.heat.last()
    }

    /// Advances time: request and coordinator deadlines, hint hand-off, anti-entropy, GC.
    pub fn tick(&mut self, now: Now) {
        self.heat.tick(now.mono_ms);
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now.mono_ms {
                break;
            }
            self.deadlines.pop_first();
            if self.outstanding.contains_key(&id) {
                self.on_response(now, id, Err(SendError::Timeout));
            }
        }
        for job in self.writes.keys().copied().collect::<Vec<_>>() {
            if let Some(j) = self.writes.get_mut(&job) {
                j.coord.tick(now.mono_ms);
            }
            self.drive_write(now, job);
        }
        for job in self.reads.keys().copied().collect::<Vec<_>>() {
            if let Some(j) = self.reads.get_mut(&job) {
                j.coord.tick(now.mono_ms);
            }
            self.drive_read(now, job);
        }
        for job in self.scans.keys().copied().collect::<Vec<_>>() {
            if let Some(j) = self.scans.get_mut(&job) {
                j.coord.tick(now.mono_ms);
            }
            self.drive_scan(job);
        }
        for job in self.inspects.keys().copied().collect::<Vec<_>>() {
            self.drive_inspect(now, job);
        }
        if now.mono_ms >= self.next_handoff_ms {
            self.next_handoff_ms = now.mono_ms.saturating_add(self.shared.config.handoff_tick_ms.max(1));
            let (shared, placement) = (self.shared.clone(), self.placement.clone());
            let cmds = self.hints.tick(now.wall_ms, |target| {
                placement.index_of(target).is_some_and(|i| i != shared.me && shared.is_up(i, now.mono_ms))
            });
            self.run_handoff(now, cmds);
        }
        self.tick_hedges(now);
        self.tick_ae(now);
        self.tick_gc(now);
        self.tick_heartbeats(now);
    }

    /// Shard 0 pings every peer each heartbeat interval; every answer and every failure of
    /// any request feeds the shared failure detector.
    fn tick_heartbeats(&mut self, now: Now) {
        let interval = self.shared.config.heartbeat_interval_ms;
        if self.shard != 0 || interval == 0 || now.mono_ms < self.next_ping_ms {
            return;
        }
        self.next_ping_ms = now.mono_ms.saturating_add(interval);
        for peer in self.placement.live_members() {
            if peer != self.me() {
                // A ping may take longer than the interval on a loaded node; what the failure
                // detector needs is its answer time, not a timeout per ping.
                let timeout = interval.max(self.shared.config.failure_timeout_ms / 2);
                self.send(now, peer, PeerRequest::Ping, timeout, Purpose::Ping);
            }
        }
    }

    fn send(
        &mut self,
        now: Now,
        to: NodeId,
        req: PeerRequest,
        timeout_ms: u64,
        purpose: Purpose,
    ) -> RequestId {
        let id = self.next_id();
        let timeout_ms = timeout_ms.max(1);
        let deadline_ms = now.mono_ms.saturating_add(timeout_ms);
        self.outstanding.insert(id, Outstanding { to, sent_ms: now.mono_ms, deadline_ms, purpose });
        self.deadlines.insert((deadline_ms, id));
        self.effects.push(Effect::Send { to, id, req, timeout_ms });
        id
    }

    fn reply(&mut self, id: RequestId, result: Result<ClientResponse, ReplicaError>) {
        self.effects.push(Effect::Reply { id, result });
    }

    fn respond(&mut self, to: NodeId, id: RequestId, resp: PeerResponse) {
        self.effects.push(Effect::Respond { to, id, resp });
    }

    fn count(&mut self, op: &'static str, outcome: &'static str) {
        *self.stats.replica_responses.entry((op, outcome)).or_default() += 1;
    }

    // -----------------------------------------------------------------------------------------
    // Durability

    /// Asks for a sync covering every store so far, unless one is already requested.
    fn request_sync(&mut self) {
        if self.persist_seq > self.sync_requested {
            self.sync_requested = self.persist_seq;
            self.effects.push(Effect::Sync { upto: self.persist_seq });
        }
    }

    /// Queues `waiter` until everything stored so far is durable (at once if it already is).
    fn after_sync(&mut self, now: Now, waiter: Waiter) {
        if let Some(message) = self.poisoned.clone() {
            self.release(now, waiter, Err(message));
            return;
        }
        if self.synced_seq >= self.persist_seq {
            self.release(now, waiter, Ok(()));
        } else {
            self.waiters.push((self.persist_seq, waiter));
            self.request_sync();
        }
    }

    fn on_synced(&mut self, now: Now, upto: u64) {
        self.stats.syncs += 1;
        if upto <= self.synced_seq {
            return;
        }
        self.synced_seq = upto;
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.waiters).into_iter().partition(|(seq, _)| *seq <= upto);
        self.waiters = waiting;
        for (_, waiter) in ready {
            self.release(now, waiter, Ok(()));
        }
    }

    fn on_sync_failed(&mut self, now: Now, message: String) {
        self.poisoned = Some(message.clone());
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            self.release(now, waiter, Err(message.clone()));
        }
    }

    fn release(&mut self, now: Now, waiter: Waiter, result: Result<(), String>) {
        match waiter {
            Waiter::SelfAck { job } => {
                let me = self.me();
                if let Some(j) = self.writes.get_mut(&job) {
                    if result.is_ok() && self.trace {
                        self.events.push(Event::Acked { key: j.key.storage_key(), state: j.state.clone() });
                    }
                    let result = result.map_err(|m| Failure::Refused {
                        code: "node_poisoned".into(),
                        message: format!("storage is poisoned: {m}"),
                    });
                    j.coord.on_response(&me, result);
                }
                self.drive_write(now, job);
            }
            Waiter::Ack { to, id, key } => {
                let resp = match result {
                    Ok(()) => {
                        if let (true, Some((key, state))) = (self.trace, key) {
                            self.events.push(Event::Acked { key, state });
                        }
                        PeerResponse::Ack
                    }
                    Err(m) => {
                        PeerResponse::Failed(ReplicaError::Poisoned(format!("storage is poisoned: {m}")))
                    }
                };
                self.respond(to, id, resp);
            }
            Waiter::LocalRepair { job, marker } => {
                let me = self.name(self.me());
                if let Some(j) = self.reads.get_mut(&job) {
                    j.repairing.remove(&marker);
                    if result.is_err() {
                        j.failed_repairs.push(me);
                    }
                }
                self.drive_read(now, job);
            }
        }
    }

    fn check_writable(&self) -> Result<(), ReplicaError> {
        match &self.poisoned {
            Some(m) => Err(ReplicaError::Poisoned(format!("storage is poisoned: an fsync failed ({m})"))),
            None if self.store.is_poisoned() => {
                Err(ReplicaError::Poisoned("storage is poisoned: an fsync failed".into()))
            }
            None => Ok(()),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Local item operations

    fn load(&self, key: &[u8]) -> Result<(Option<Vec<u8>>, ItemState), ReplicaError> {
        let raw = self.store.get(key)?;
        let state = match &raw {
            Some(bytes) => ItemState::decode(bytes)
                .map_err(|e| ReplicaError::Internal(format!("stored item is corrupt: {e}")))?,
            None => ItemState::new(),
        };
        Ok((raw, state))
    }

    /// The local state of an item (empty when absent).
    pub fn local_state(&self, key: &ItemKey) -> Result<ItemState, ReplicaError> {
        Ok(self.load(&key.storage_key())?.1)
    }

    /// Replaces the stored item by `new` (durable after the next sync). Every change of a
    /// stored item goes through here, so trees and tombstone records stay in step with data.
    fn store_item(
        &mut self,
        now: Now,
        key: &ItemKey,
        homes: &[NodeId],
        old_raw: Option<&[u8]>,
        old: &ItemState,
        new: &ItemState,
    ) -> Result<(), ReplicaError> {
        self.check_writable()?;
        let sk = key.storage_key();
        let encoded = new.encode();
        self.store.put(&sk, &encoded)?;
        self.persist_seq += 1;
        if self.shared.config.antientropy {
            let tree = self.tree_of_homes(key, homes);
            let old_digest = old_raw.map(|o| item_digest(&sk, o));
            let new_digest = Some(item_digest(&sk, &encoded));
            if old_digest != new_digest {
                self.trees.entry(tree).or_default().update(&sk, old_digest, new_digest);
            }
        }
        let was = old.has_tombstone() && old.is_deleted();
        let is = new.has_tombstone() && new.is_deleted();
        match (was, is) {
            (false, true) => self.store.mark_tombstone(&sk, now.wall_ms)?,
            (true, false) => self.store.unmark_tombstone(&sk)?,
            _ => {}
        }
        if self.trace {
            self.events.push(Event::Stored { key: sk, old: old.clone(), new: new.clone() });
        }
        Ok(())
    }

    /// Applies a client write at this home replica under a new dot; returns the new state
    /// (stored, not yet durable).
    fn apply_local_write(
        &mut self,
        now: Now,
        key: &ItemKey,
        homes: &[NodeId],
        value: Option<Vec<u8>>,
        ctx: &VersionVector,
        (write_id, fence): (WriteId, Option<&Fence>),
    ) -> Result<ItemState, ReplicaError> {
        self.check_writable()?;
        let sk = key.storage_key();
        let (old_raw, local) = self.load(&sk)?;
        let value = match value {
            Some(v) => Value::Data(v),
            None => Value::Tombstone,
        };
        let rule = self.retirement(now);
        let id = Some((write_id, now.wall_ms));
        let new = match self.shared.table(&key.table).conflict {
            Conflict::Siblings => match match fence {
                Some(f) => local.apply_fenced(ctx, value, self.actor, Some(&rule), id, f)?,
                None => local.apply(ctx, value, self.actor, Some(&rule), id)?,
            } {
                Applied::New(new) => new,
                Applied::Duplicate { .. } => {
                    self.stats.writes_deduplicated += 1;
                    return Ok(local);
                }
            },
            Conflict::Crdt(kind) => {
                // The write's value is an operation: applied to the join of the local siblings,
                // the result supersedes them all (see `crdt_table` for why no write id).
                let Value::Data(op) = value else {
                    return Err(ReplicaError::BadRequest(
                        "a CRDT item is not deleted; remove its elements or fields with a crdt remove".into(),
                    ));
                };
                let next = crdt_table::applied(&local, kind, &op, self.actor.0)?;
                match local.apply(
                    &local.context().clone(),
                    Value::Data(next),
                    self.actor,
                    Some(&rule),
                    None,
                )? {
                    Applied::New(new) => new,
                    Applied::Duplicate { .. } => return Ok(local),
                }
            }
            Conflict::Lww => {
                // The write becomes a concurrent sibling stamped with this replica's clock, and
                // resolution keeps the highest timestamp: the client's context plays no part.
                // The stored winner's timestamp is observed first (within the drift bound), so
                // a new write is never stamped below what this replica already holds.
                self.shared.hlc.observe(
                    lww::max_timestamp(&local),
                    now.wall_ms,
                    self.shared.config.hlc_drift_ms_max,
                );
                let stamped = lww::stamp(self.shared.hlc.now(now.wall_ms), value);
                // No write id: last-writer-wins keeps one value of an item anyway (a duplicate
                // is one more timestamped version), and its resolution drops versions in a way
                // the write-id merge rule would read as a supersede.
                match local.apply(&VersionVector::new(), stamped, self.actor, Some(&rule), None)? {
                    Applied::New(new) => lww::resolve(&new),
                    Applied::Duplicate { .. } => {
                        self.stats.writes_deduplicated += 1;
                        return Ok(local);
                    }
                }
            }
        };
        let new_len = new.encoded_len_hint();
        if new_len > ITEM_STATE_BYTES_MAX && new_len > old_raw.as_ref().map_or(0, |r| r.len()) {
            return Err(ReplicaError::ItemTooLarge(format!(
                "the item would hold {new_len} bytes of versions, more than the limit of {ITEM_STATE_BYTES_MAX} bytes; \
                 read it and write back with its context to replace its siblings"
            )));
        }
        let counter = new.context().get(self.actor);
        if self.trace {
            let dot = Dot { actor: self.actor, counter };
            if let Some((_, v)) = new.siblings().iter().find(|(d, _)| *d == dot) {
                self.events.push(Event::Minted { key: sk.clone(), dot, value: v.clone() });
            }
        }
        self.store_item(now, key, homes, old_raw.as_deref(), &local, &new)?;
        Ok(new)
    }

    /// Merges a replicated state into the local item (stored, not yet durable).
    fn merge_local(&mut self, now: Now, key: &ItemKey, incoming: &ItemState) -> Result<(), ReplicaError> {
        self.check_writable()?;
        let lww = self.shared.table(&key.table).conflict == Conflict::Lww;
        if lww {
            // Hybrid logical clock receive rule: never stamp below a timestamp already seen
            // (unless it lies beyond the drift bound).
            self.shared.hlc.observe(
                lww::max_timestamp(incoming),
                now.wall_ms,
                self.shared.config.hlc_drift_ms_max,
            );
        }
        let sk = key.storage_key();
        let (old_raw, local) = self.load(&sk)?;
        let rule = self.retirement(now);
        if self.is_purged_echo(&sk, old_raw.is_none(), incoming)? {
            return Ok(());
        }
        let mut merged = if local.descends(incoming) {
            // Nothing new, but a state stored before its actors retired (or its write records
            // aged) may still need trimming; doing it here is what lets replicas converge on the
            // trimmed bytes.
            if !local.needs_pruning(&rule) && !local.needs_trimming(now.wall_ms) {
                return Ok(());
            }
            local.clone()
        } else {
            ItemState::merged(&local, incoming)
        };
        if lww {
            merged = lww::resolve(&merged);
        }
        if let Conflict::Crdt(_) = self.shared.table(&key.table).conflict {
            if let Some(n) = crdt_table::concurrent(&merged) {
                let t = self.stats.crdt_tables.entry(key.table.clone()).or_default();
                t.concurrent_merges += 1;
                t.siblings_max = t.siblings_max.max(n as u64);
            }
        }
        merged.prune_retired(&rule);
        merged.trim_applied(Some(now.wall_ms));
        if merged == local {
            // An incoming state that only brings back what this replica trimmed.
            return Ok(());
        }
        let homes = self.sync_set(key);
        self.store_item(now, key, &homes, old_raw.as_deref(), &local, &merged)
    }

    /// The rule for dropping context entries of retired actors (earlier incarnations of a data
    /// dir that restarted after a crash). Its grace period is the tombstone grace period, which
    /// config validation keeps above the hint age limit: by then every replica has had as long
    /// to converge as a delete gets before its tombstone is collected.
    fn retirement(&self, now: Now) -> Retirement {
        Retirement {
            now_wall_ms: now.wall_ms,
            grace_ms: self.shared.config.tombstone_grace_ms,
            keep: self.actor,
        }
    }

    /// Whether `incoming` is a tombstone this replica already purged (sent back by a replica
    /// that has not purged it yet): storing it again would restart its grace period forever.
    fn is_purged_echo(&self, sk: &[u8], absent: bool, incoming: &ItemState) -> Result<bool, ReplicaError> {
        if !(absent && incoming.has_tombstone() && incoming.is_deleted()) {
            return Ok(false);
        }
        Ok(match self.store.purge_record(sk)? {
            Some((_, final_state)) => ItemState::decode(&final_state).is_ok_and(|f| f.descends(incoming)),
            None => false,
        })
    }

    /// Removes a tombstone every replica holds, if it is still what is stored.
    fn purge(&mut self, now: Now, key: &ItemKey, expected: &ItemState) -> Result<(), ReplicaError> {
        self.check_writable()?;
        let sk = key.storage_key();
        let (old_raw, local) = self.load(&sk)?;
        if &local != expected {
            return Ok(());
        }
        self.store.remove(&sk)?;
        self.store.record_purge(&sk, now.wall_ms, &expected.encode())?;
        self.store.unmark_tombstone(&sk)?;
        self.persist_seq += 1;
        if self.shared.config.antientropy {
            let tree = self.tree_of(key);
            self.trees.entry(tree).or_default().update(&sk, old_raw.map(|o| item_digest(&sk, &o)), None);
        }
        if self.trace {
            self.events.push(Event::Stored { key: sk, old: local, new: ItemState::new() });
        }
        self.stats.tombstones_purged += 1;
        Ok(())
    }

    /// The state a read at this node returns for `key`: its own, plus (as a sloppy-quorum
    /// stand-in) the hinted states it keeps for the key.
    fn read_local(&self, key: &ItemKey, homes: &[NodeId]) -> Result<ItemState, ReplicaError> {
        let mut state = self.local_state(key)?;
        if !homes.contains(&self.me()) {
            let sk = key.storage_key();
            for m in self.placement.directory() {
                if let Some((_, hint)) = self.hints.get(&m.id, &sk) {
                    if let Ok(h) = ItemState::decode(&hint.state) {
                        state.merge(&h);
                    }
                }
            }
        }
        Ok(state)
    }

    fn rebuild_trees(&mut self) -> Result<(), StoreError> {
        self.trees.clear();
        if !self.shared.config.antientropy {
            return Ok(());
        }
        // Walk the whole keyspace in bounded pages (this shard's items only).
        let mut lo: Vec<u8> = Vec::new();
        loop {
            let (page, exhausted) = self.store.range(&lo, None, false, 4096, usize::MAX)?;
            for (k, v) in &page {
                let Ok(key) = ItemKey::from_storage_key(k) else { continue };
                if shard_of(key.placement_hash()) != self.shard {
                    continue;
                }
                let tree = self.tree_of(&key);
                self.trees.entry(tree).or_default().update(k, None, Some(item_digest(k, v)));
            }
            match page.last() {
                Some((k, _)) if !exhausted => {
                    lo = k.clone();
                    lo.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    /// `(storage key, digest)` of this shard's items of `tree` in `leaf`, read from storage.
    fn leaf_items(&self, tree: &TreeId, leaf: usize) -> Result<LeafItems, ReplicaError> {
        let (lo, hi) = leaf_key_range(leaf).map_err(|e| ReplicaError::BadRequest(e.to_string()))?;
        let (items, _) = self.store.range(&lo, hi.as_deref(), false, usize::MAX, usize::MAX)?;
        let mut out = Vec::new();
        for (k, v) in items {
            let Ok(key) = ItemKey::from_storage_key(&k) else { continue };
            if key.table == tree.table
                && shard_of(key.placement_hash()) == self.shard
                && self.tree_of(&key) == *tree
            {
                let digest = item_digest(&k, &v);
                out.push((k, digest));
            }
        }
        Ok(out)
    }

    /// One page of a partition at this replica, bounded by count and bytes.
    fn local_scan(
        &self,
        table: &str,
        partition: &[u8],
        from: Option<&[u8]>,
        to: Option<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<(ScanPage, bool), ReplicaError> {
        let prefix = partition_prefix(table, partition);
        let with_prefix = |sk: &[u8]| {
            let mut k = prefix.clone();
            k.extend_from_slice(sk);
            k
        };
        let lo = with_prefix(from.unwrap_or(&[]));
        let hi = match to {
            Some(to) => Some(with_prefix(to)),
            None => prefix_successor(&prefix),
        };
        let limit = limit.clamp(1, SCAN_PAGE_LEN_MAX);
        let (raw, exhausted) = self.store.range(&lo, hi.as_deref(), reverse, limit, SCAN_PAGE_BYTES_MAX)?;
        let mut items = Vec::with_capacity(raw.len());
        for (k, v) in raw {
            let sort = k.get(prefix.len()..).unwrap_or_default().to_vec();
            let state = ItemState::decode(&v)
                .map_err(|e| ReplicaError::Internal(format!("stored item is corrupt: {e}")))?;
            items.push((sort, state));
        }
        Ok((items, exhausted))
    }

    // -----------------------------------------------------------------------------------------
    // Placement

    /// The nodes a request for `key` goes to: the live home replicas, and in sloppy mode, for
    /// each home replica known down, the next live node further along the ring standing in for
    /// it. Returns `(targets as (node, stands_in_for), home replicas known down)`.
    fn request_targets(
        &self,
        key: &ItemKey,
        pref: &[NodeId],
        mode: QuorumMode,
        now: Now,
    ) -> (Vec<(NodeId, Option<NodeId>)>, Vec<NodeId>) {
        let me = self.me();
        let mut targets = Vec::with_capacity(pref.len());
        let mut down = Vec::new();
        for &idx in pref {
            if idx == me || self.shared.is_up(idx, now.mono_ms) {
                targets.push((idx, None));
            } else {
                down.push(idx);
            }
        }
        if mode == QuorumMode::Sloppy && !down.is_empty() {
            let all = self.placement.fallbacks(key.placement_hash());
            let mut fallbacks =
                all.into_iter().filter(|i| !pref.contains(i) && self.shared.is_up(*i, now.mono_ms));
            for &home in &down {
                // The coordinator machines bound their replica lists; stay within it.
                if targets.len() + down.len() >= REQUEST_REPLICAS_MAX {
                    break;
                }
                if let Some(f) = fallbacks.next() {
                    targets.push((f, Some(home)));
                }
            }
        }
        (targets, down)
    }

    fn timeout_of(&self, timeout_ms: u64) -> u64 {
        timeout_ms.clamp(1, self.shared.config.request_timeout_ms_max)
    }

    // -----------------------------------------------------------------------------------------
    // Client requests

    fn on_client(&mut self, now: Now, id: RequestId, req: ClientRequest) {
        match req {
            ClientRequest::Write { key, value, ctx, w, mode, timeout_ms, write_id, fence } => {
                // Every write gets an id, so that a hedged or retried copy is recognised.
                let write_id = write_id.unwrap_or_else(|| self.draw_write_id());
                let write = WriteArgs { value, ctx, w, mode, timeout_ms, write_id, fence };
                if let Err(e) = self.start_write(now, id, key, write) {
                    self.reply(id, Err(e));
                }
            }
            ClientRequest::Read { key, r, repair, mode, timeout_ms, floor } => {
                if let Err(e) = self.start_read(now, id, key, r, repair, mode, timeout_ms, floor) {
                    self.reply(id, Err(e));
                }
            }
            ClientRequest::Scan(scan) => {
                if let Err(e) = self.start_scan(now, id, scan) {
                    self.reply(id, Err(e));
                }
            }
            ClientRequest::Inspect { key, timeout_ms } => self.start_inspect(now, id, key, timeout_ms),
            ClientRequest::StartRepair { table } => {
                self.request_full_pass(now, table);
                self.reply(id, Ok(ClientResponse::Started));
            }
        }
    }

    /// A write id unique in the cluster: this replica's actor (unique per data-dir
    /// incarnation), its shard and a counter.
    fn draw_write_id(&mut self) -> WriteId {
        let n = self.next_id();
        WriteId((u128::from(self.actor.0) << 64) | (u128::from(self.shard as u64) << 56) | u128::from(n))
    }

    fn start_write(
        &mut self,
        now: Now,
        client: RequestId,
        key: ItemKey,
        write: WriteArgs<Level>,
    ) -> Result<(), ReplicaError> {
        let WriteArgs { value, ctx, w, mode, timeout_ms, write_id, fence } = write;
        if let Some(v) = &value {
            if v.len() > VALUE_BYTES_MAX {
                return Err(ReplicaError::ValueTooLarge(format!(
                    "value must be at most {VALUE_BYTES_MAX} bytes, got {} bytes",
                    v.len()
                )));
            }
        }
        let n = self.replication_factor(&key.table);
        let w = w.resolve("w", n)?;
        let timeout_ms = self.timeout_of(timeout_ms);
        if self.all_homes(&key).contains(&self.me()) {
            let write = WriteArgs { value, ctx, w, mode, timeout_ms, write_id, fence };
            return self.coordinate_write(now, key, write, ReplyTo::Client(client));
        }
        let job = self.next_id();
        self.forwards.insert(
            job,
            ForwardJob {
                client,
                key,
                value,
                ctx,
                write_id,
                fence,
                w,
                mode,
                timeout_ms,
                tried: Vec::new(),
                outstanding: 0,
                hedge_at_ms: None,
                last_error: None,
                failure: None,
            },
        );
        self.try_forward(now, job);
        Ok(())
    }

    /// Forwards a write to the next untried home replica: one believed up and not suspected
    /// first, then suspected ones. With none left and no attempt outstanding, the write reached
    /// nobody: a certain failure.
    fn try_forward(&mut self, now: Now, job: u64) {
        let Some(f) = self.forwards.get(&job) else { return };
        // Read-version owners first: they hold the key's history, so the dot and the write id
        // check happen where the older versions are.
        let pref = self.all_homes(&f.key);
        let untried = |p: &NodeId| !f.tried.iter().any(|(t, _)| t == p) && self.shared.is_up(*p, now.mono_ms);
        let next = pref
            .iter()
            .copied()
            .filter(untried)
            .find(|p| !self.shared.is_suspected(*p, now.mono_ms))
            .or_else(|| pref.iter().copied().find(untried));
        let Some(target) = next else {
            if f.outstanding > 0 {
                return;
            }
            let Some(f) = self.forwards.remove(&job) else { return };
            let error = f.failure.unwrap_or_else(|| {
                let why = f.last_error.unwrap_or_else(|| "all are down".into());
                ReplicaError::Unavailable(format!(
                    "no home replica of this key is reachable to coordinate the write ({why})"
                ))
            });
            self.reply(f.client, Err(error));
            return;
        };
        let req = PeerRequest::CoordinateWrite {
            key: f.key.clone(),
            value: f.value.clone(),
            ctx: f.ctx.clone(),
            w: f.w,
            sloppy: f.mode == QuorumMode::Sloppy,
            timeout_ms: f.timeout_ms,
            write_id: f.write_id,
            fence: f.fence.clone(),
        };
        // Give the remote coordinator its whole timeout plus a margin to report back.
        let timeout = f.timeout_ms.saturating_add(self.shared.config.forward_margin_ms);
        // CRDT writes are not hedged: they carry no write id (see `crdt_table`), so a hedged copy
        // would apply the operation twice, and a duplicated add escapes a remove that observed
        // only one of its copies (found by `lab run cart-partition`).
        let hedge_at = match self.shared.table(&f.key.table).conflict {
            Conflict::Crdt(_) => None,
            _ => self.hedge_delay_ms().map(|d| now.mono_ms.saturating_add(d)),
        };
        if let Some(f) = self.forwards.get_mut(&job) {
            f.tried.push((target, now.mono_ms));
            f.outstanding += 1;
            f.hedge_at_ms = hedge_at;
        }
        self.send(now, target, req, timeout, Purpose::Forward { job });
    }

    /// How long a forwarded write may go unanswered before a hedged copy goes to the next home
    /// replica: the recent p99 of forwarded writes, within the configured bounds.
    fn hedge_delay_ms(&self) -> Option<u64> {
        let (lo, hi) = (self.shared.config.hedge_delay_ms_min, self.shared.config.hedge_delay_ms_max);
        if hi == 0 {
            return None;
        }
        Some(self.forward_latency.p99_ms.unwrap_or(hi).clamp(lo.min(hi), hi))
    }

    /// Sends hedged copies of forwarded writes whose hedging time passed.
    fn tick_hedges(&mut self, now: Now) {
        let due: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, f)| f.hedge_at_ms.is_some_and(|at| at <= now.mono_ms))
            .map(|(job, _)| *job)
            .collect();
        for job in due {
            let pref_len = self.forwards.get(&job).map_or(0, |f| self.all_homes(&f.key).len());
            let Some(f) = self.forwards.get_mut(&job) else { continue };
            f.hedge_at_ms = None;
            if f.tried.len() >= pref_len {
                continue;
            }
            self.stats.writes_hedged += 1;
            self.try_forward(now, job);
        }
    }

    fn on_forward_reply(&mut self, now: Now, job: u64, to: NodeId, result: Result<PeerResponse, SendError>) {
        let name = self.name(to);
        let Some(f) = self.forwards.get_mut(&job) else { return };
        f.outstanding = f.outstanding.saturating_sub(1);
        let sent_ms = f.tried.iter().find(|(t, _)| *t == to).map_or(now.mono_ms, |(_, at)| *at);
        let timeout_ms = f.timeout_ms;
        let failure = match result {
            Ok(PeerResponse::Written(state)) => {
                self.forward_latency.record(now.mono_ms.saturating_sub(sent_ms));
                if let Some(f) = self.forwards.remove(&job) {
                    self.reply(f.client, Ok(ClientResponse::Written(state)));
                }
                return;
            }
            Ok(PeerResponse::Failed(e)) => e,
            Ok(other) => ReplicaError::Internal(format!("unexpected response {other:?}")),
            Err(SendError::Unreachable(m)) => {
                // Never delivered: safe to try the next home replica at once.
                f.last_error = Some(format!("{name}: unreachable: {m}"));
                self.try_forward(now, job);
                return;
            }
            Err(SendError::Timeout) => ReplicaError::Timeout(format!(
                "write coordinator {name} did not answer within {timeout_ms} ms; the write may or may not have been applied"
            )),
            Err(SendError::Lost(m)) => ReplicaError::Timeout(format!(
                "the connection to write coordinator {name} was lost ({m}); the write may or may not have been applied"
            )),
        };
        // A failed attempt: another one still running may yet succeed (a hedge, or the
        // original when the hedge failed); answer the first failure only when none is left.
        f.failure.get_or_insert(failure);
        if f.outstanding == 0 {
            if let Some(f) = self.forwards.remove(&job) {
                if let Some(e) = f.failure {
                    self.reply(f.client, Err(e));
                }
            }
        }
    }

    /// Runs at a home replica: local update under a new dot, then replication to the others.
    fn coordinate_write(
        &mut self,
        now: Now,
        key: ItemKey,
        write: WriteArgs<usize>,
        reply_to: ReplyTo,
    ) -> Result<(), ReplicaError> {
        let WriteArgs { value, ctx, w, mode, timeout_ms, write_id, fence } = write;
        // A duplicate (this replica already applied the write id) replicates the current state
        // again and waits for the same quorum: the retry of a write that reached too few
        // replicas completes it instead of creating a second version.
        let tree_homes = self.sync_set(&key);
        let new = self.apply_local_write(now, &key, &tree_homes, value, &ctx, (write_id, fence.as_ref()))?;
        let n = self.replication_factor(&key.table);
        let sets = self.placement.write_sets(key.placement_hash(), n);
        let pref = self.all_homes(&key);
        let (targets, down) = self.request_targets(&key, &pref, mode, now);
        let mut replicas: Vec<NodeId> = targets.iter().map(|(i, _)| *i).collect();
        replicas.extend(down.iter().copied());
        let deadline_ms = now.mono_ms.saturating_add(timeout_ms);
        let mut coord = if sets.len() <= 1 {
            let w = w.clamp(1, replicas.len());
            WriteCoordinator::new(replicas, w, deadline_ms)
        } else {
            // A layout transition: `w` acks among each live version's replicas (a stand-in
            // counts for the set of the home it stands in for).
            let groups = sets
                .iter()
                .map(|set| {
                    let mut members = set.clone();
                    for (target, stands_in_for) in &targets {
                        if stands_in_for.is_some_and(|h| set.contains(&h)) && !members.contains(target) {
                            members.push(*target);
                        }
                    }
                    let needed = w.clamp(1, members.len());
                    (members, needed)
                })
                .collect();
            WriteCoordinator::joint(replicas, groups, deadline_ms)
        };
        for &idx in &down {
            coord.skip(&idx);
            self.count("write", "down");
        }
        let job = self.next_id();
        self.writes.insert(
            job,
            WriteJob {
                key: key.clone(),
                state: new.clone(),
                coord,
                targets: targets.clone(),
                homes: pref,
                layout: self.placement.newest_version(),
                reply_to,
                replied: false,
            },
        );
        for (idx, stands_in_for) in targets {
            if idx == self.me() {
                self.after_sync(now, Waiter::SelfAck { job });
                continue;
            }
            let req = match stands_in_for {
                None => PeerRequest::Replicate { key: key.clone(), state: new.clone() },
                Some(home) => PeerRequest::StoreHint { target: home, key: key.clone(), state: new.clone() },
            };
            self.send(now, idx, req, timeout_ms, Purpose::WriteReplica { job });
        }
        self.drive_write(now, job);
        Ok(())
    }

    /// Answers once decided (a failure only once every replica answered or the deadline
    /// passed, so the error says how many replicas hold the write), and when finished hints
    /// every home replica that does not hold the write and has no stand-in that does.
    fn drive_write(&mut self, now: Now, job: u64) {
        let Some(mut j) = self.writes.remove(&job) else { return };
        let answer = match j.coord.decision() {
            Some(Ok(())) if !j.replied => Some(Ok(j.state.clone())),
            Some(Err(e)) if j.coord.is_finished() && !j.replied => {
                Some(Err(final_error(e, j.coord.outcomes()).named(|n| self.placement.name(*n))))
            }
            _ => None,
        };
        if let Some(answer) = answer {
            j.replied = true;
            // A write that failed because replicas hold a higher fencing token says so.
            let error = |e: QuorumError<String>| {
                let fenced = e.outcomes.iter().find_map(|(node, o)| match o {
                    Outcome::Error(Failure::Refused { code, message }) if code == "fenced" => {
                        Some(format!("{message} (replica {node})"))
                    }
                    _ => None,
                });
                match fenced {
                    Some(m) => ReplicaError::Fenced(m),
                    None => ReplicaError::Quorum(e),
                }
            };
            match j.reply_to {
                ReplyTo::Client(id) => self.reply(id, answer.map(ClientResponse::Written).map_err(error)),
                ReplyTo::Peer { to, id } => {
                    let resp = match answer {
                        Ok(state) => PeerResponse::Written(state),
                        Err(e) => PeerResponse::Failed(error(e)),
                    };
                    self.respond(to, id, resp);
                }
            }
        }
        if !j.coord.is_finished() {
            self.writes.insert(job, j);
            return;
        }
        let ok = |node: NodeId| j.coord.outcomes().iter().any(|(n, o)| *n == node && *o == Outcome::Ok);
        let mut hinted = false;
        for &home in &j.homes {
            if home == self.me() || ok(home) {
                continue;
            }
            let covered = j.targets.iter().any(|(f, s)| *s == Some(home) && ok(*f));
            if !covered {
                hinted |= self.add_hint(now, home, &j.key, &j.state);
            }
        }
        // Hints make up for the missed replica: make them durable now rather than with
        // whichever write happens to come next.
        if hinted {
            self.request_sync();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_read(
        &mut self,
        now: Now,
        client: RequestId,
        key: ItemKey,
        r: Level,
        repair: ReadRepair,
        mode: QuorumMode,
        timeout_ms: u64,
        floor: Option<VersionVector>,
    ) -> Result<(), ReplicaError> {
        let n = self.replication_factor(&key.table);
        let r = r.resolve("r", n)?;
        let timeout_ms = self.timeout_of(timeout_ms);
        let pref = self.preference(&key);
        let (targets, down) = self.request_targets(&key, &pref, mode, now);
        let mut replicas: Vec<NodeId> = targets.iter().map(|(i, _)| *i).collect();
        replicas.extend(down.iter().copied());
        let r = r.clamp(1, replicas.len());
        let deadline_ms = now.mono_ms.saturating_add(timeout_ms);
        let mut coord = ReadCoordinator::new(replicas, r, deadline_ms);
        if let Some(floor) = floor.filter(|f| !f.is_empty()) {
            coord = coord
                .with_floor(Floor::new(move |s: &ItemState| s.context().descends_modulo_pruning(&floor)));
        }
        for &idx in &down {
            coord.skip(&idx);
            self.count("read", "down");
        }
        let job = self.next_id();
        let mut local = None;
        for &(idx, _) in &targets {
            if idx == self.me() {
                local = Some(self.read_local(&key, &pref).map_err(|e| refused(&e)));
            } else {
                self.send(
                    now,
                    idx,
                    PeerRequest::Read { key: key.clone() },
                    timeout_ms,
                    Purpose::ReadReplica { job },
                );
            }
        }
        if let Some(result) = local {
            self.count("read", if result.is_ok() { "ok" } else { "error" });
            coord.on_response(&self.me(), result);
        }
        self.reads.insert(
            job,
            ReadJob {
                client,
                key,
                coord,
                repair,
                deadline_ms,
                answer: None,
                answered: false,
                repairing: BTreeSet::new(),
                failed_repairs: Vec::new(),
                repaired: Vec::new(),
            },
        );
        self.drive_read(now, job);
        Ok(())
    }

    /// At the decision, repairs the stale replicas that replied (blocking modes) and answers
    /// once they are settled; once every replica replied (or the deadline passed), repairs the
    /// late ones.
    fn drive_read(&mut self, now: Now, job: u64) {
        let Some(mut j) = self.reads.remove(&job) else { return };
        if !j.answered {
            match j.coord.decision() {
                Some(Ok(state)) => {
                    if j.answer.is_none() {
                        if matches!(j.repair, ReadRepair::Blocking | ReadRepair::WriteBack) {
                            let left = j.deadline_ms.saturating_sub(now.mono_ms).max(1);
                            for (replica, st) in j.coord.repairs() {
                                j.repaired.push(replica);
                                if let Some(marker) =
                                    self.repair_replica(now, &j.key, replica, &st, left, Some(job))
                                {
                                    j.repairing.insert(marker);
                                }
                            }
                        }
                        j.answer = Some(state);
                    }
                    if j.repairing.is_empty() {
                        j.answered = true;
                        let answer = j.answer.clone().unwrap_or_default();
                        // A linearizable read may only answer once a quorum holds what it
                        // returns; otherwise a later read could miss it.
                        let result = if j.repair == ReadRepair::WriteBack && !j.failed_repairs.is_empty() {
                            Err(ReplicaError::Unavailable(format!(
                                "linearizable read: write-back to {} failed; the value read is not yet on a quorum",
                                j.failed_repairs.join(", ")
                            )))
                        } else {
                            Ok(ClientResponse::Read(answer))
                        };
                        self.reply(j.client, result);
                    }
                }
                Some(Err(e)) if j.coord.is_finished() => {
                    j.answered = true;
                    let e = final_error(e, j.coord.outcomes()).named(|n| self.placement.name(*n));
                    self.reply(j.client, Err(ReplicaError::Quorum(e)));
                }
                _ => {}
            }
        }
        let done = j.answered && (j.repair == ReadRepair::Off || j.coord.is_finished());
        if !done {
            self.reads.insert(job, j);
            return;
        }
        if j.repair != ReadRepair::Off && j.coord.decision().is_some_and(|d| d.is_ok()) {
            let timeout = self.shared.config.request_timeout_ms;
            for (replica, st) in j.coord.repairs() {
                if !j.repaired.contains(&replica) {
                    self.repair_replica(now, &j.key, replica, &st, timeout, None);
                }
            }
        }
    }

    /// Sends the merged state to one stale replica. With `wait = Some(job)` returns the marker
    /// the read waits on (a request id, or for this replica itself a sync waiter).
    fn repair_replica(
        &mut self,
        now: Now,
        key: &ItemKey,
        idx: NodeId,
        state: &ItemState,
        timeout_ms: u64,
        wait: Option<u64>,
    ) -> Option<u64> {
        self.stats.read_repairs += 1;
        if idx == self.me() {
            let merged = self.merge_local(now, key, state);
            let job = wait?;
            let marker = self.next_id();
            if merged.is_err() {
                if let Some(j) = self.reads.get_mut(&job) {
                    j.failed_repairs.push(self.placement.name(idx));
                }
                return None;
            }
            self.after_sync(now, Waiter::LocalRepair { job, marker });
            // `after_sync` may have released the waiter at once.
            let pending = self
                .waiters
                .iter()
                .any(|(_, w)| matches!(w, Waiter::LocalRepair { marker: m, .. } if *m == marker));
            return pending.then_some(marker);
        }
        let req = PeerRequest::Replicate { key: key.clone(), state: state.clone() };
        let purpose = match wait {
            Some(job) => Purpose::RepairBlocking { job },
            None => Purpose::Repair,
        };
        let id = self.send(now, idx, req, timeout_ms, purpose);
        wait.map(|_| id)
    }

    fn start_scan(&mut self, now: Now, client: RequestId, scan: ScanRequest) -> Result<(), ReplicaError> {
        let ScanRequest { table, partition, mut from, mut to, limit, reverse, cursor, r, timeout_ms } = scan;
        scan::apply_cursor(cursor.as_deref(), reverse, &mut from, &mut to)?;
        let key = ItemKey::new(&table, &partition, b"")?;
        let n = self.replication_factor(&table);
        let r = r.resolve("r", n)?;
        let timeout_ms = self.timeout_of(timeout_ms);
        let limit = limit.clamp(1, SCAN_PAGE_LEN_MAX);
        let pref = self.preference(&key);
        let mut coord: ReadCoordinator<ScanMerge, NodeId> = ReadCoordinator::new(
            pref.clone(),
            r.clamp(1, pref.len()),
            now.mono_ms.saturating_add(timeout_ms),
        );
        let job = self.next_id();
        for &idx in &pref {
            if idx == self.me() {
                let page = self
                    .local_scan(&table, &partition, from.as_deref(), to.as_deref(), limit, reverse)
                    .map(|(items, exhausted)| ScanMerge::from_page(items, exhausted, reverse))
                    .map_err(|e| refused(&e));
                coord.on_response(&idx, page);
            } else if !self.shared.is_up(idx, now.mono_ms) {
                coord.skip(&idx);
            } else {
                let req = PeerRequest::Scan {
                    table: table.clone(),
                    partition: partition.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    limit,
                    reverse,
                };
                self.send(now, idx, req, timeout_ms, Purpose::ScanReplica { job });
            }
        }
        self.scans.insert(job, ScanJob { client, limit, coord, reverse });
        self.drive_scan(job);
        Ok(())
    }

    fn drive_scan(&mut self, job: u64) {
        let Some(j) = self.scans.get(&job) else { return };
        let result = match j.coord.decision() {
            Some(Ok(merged)) => Ok(ClientResponse::Scan(merged.into_result(j.limit))),
            Some(Err(e)) if j.coord.is_finished() => Err(ReplicaError::Quorum(
                final_error(e, j.coord.outcomes()).named(|n| self.placement.name(*n)),
            )),
            _ => return,
        };
        if let Some(j) = self.scans.remove(&job) {
            self.reply(j.client, result);
        }
    }

    fn start_inspect(&mut self, now: Now, client: RequestId, key: ItemKey, timeout_ms: u64) {
        let timeout_ms = self.timeout_of(timeout_ms);
        // Inspection shows every live version's replicas, so a transition's new owners show.
        let pref = self.all_homes(&key);
        let job = self.next_id();
        let mut results = Vec::with_capacity(pref.len());
        for &idx in &pref {
            if idx == self.me() {
                results.push((idx, Some(self.local_state(&key).map_err(|e| e.to_string()))));
            } else {
                results.push((idx, None));
                self.send(
                    now,
                    idx,
                    PeerRequest::Read { key: key.clone() },
                    timeout_ms,
                    Purpose::Inspect { job },
                );
            }
        }
        self.inspects
            .insert(job, InspectJob { client, results, deadline_ms: now.mono_ms.saturating_add(timeout_ms) });
        self.drive_inspect(now, job);
    }

    fn drive_inspect(&mut self, now: Now, job: u64) {
        let Some(j) = self.inspects.get(&job) else { return };
        let complete = j.results.iter().all(|(_, r)| r.is_some());
        if !complete && now.mono_ms < j.deadline_ms {
            return;
        }
        if let Some(j) = self.inspects.remove(&job) {
            let results = j
                .results
                .into_iter()
                .map(|(idx, r)| (idx, r.unwrap_or_else(|| Err("timeout".into()))))
                .collect();
            self.reply(j.client, Ok(ClientResponse::Inspect(results)));
        }
    }

    // -----------------------------------------------------------------------------------------
    // Peer requests

    fn on_peer(&mut self, now: Now, from: NodeId, id: RequestId, req: PeerRequest) {
        let result = self.serve_peer(now, from, id, req);
        match result {
            Ok(Some(resp)) => self.respond(from, id, resp),
            Ok(None) => {}
            Err(e) => self.respond(from, id, PeerResponse::Failed(e)),
        }
    }

    /// Serves one peer request; `Ok(None)` when the answer comes later (after a sync, or from
    /// a coordinated write).
    fn serve_peer(
        &mut self,
        now: Now,
        from: NodeId,
        id: RequestId,
        req: PeerRequest,
    ) -> Result<Option<PeerResponse>, ReplicaError> {
        match req {
            PeerRequest::Ping => Ok(Some(PeerResponse::Pong)),
            PeerRequest::Read { key } => {
                let homes = self.all_homes(&key);
                Ok(Some(PeerResponse::Item(self.read_local(&key, &homes)?)))
            }
            PeerRequest::Replicate { key, state } => {
                // A version written under a fencing token below the one this replica holds
                // is refused (and dropped by the merge, which still runs: the context is news).
                let fenced = if state.has_fences() {
                    state.fenced_by(&self.load(&key.storage_key())?.1)
                } else {
                    None
                };
                self.merge_local(now, &key, &state)?;
                if let Some(e) = fenced {
                    return Err(e.into());
                }
                // Even an unchanged state may not be durable yet (another writer stored it a
                // moment ago), so the acknowledgement always waits for a covering sync.
                let trace = self.trace.then(|| (key.storage_key(), state));
                self.after_sync(now, Waiter::Ack { to: from, id, key: trace });
                Ok(None)
            }
            PeerRequest::StoreHint { target, key, state } => {
                if target >= self.placement.directory().len() {
                    return Err(ReplicaError::BadRequest(format!("hint for unknown member #{target}")));
                }
                self.check_writable()?;
                if !self.add_hint(now, target, &key, &state) {
                    return Err(ReplicaError::Unavailable(format!(
                        "{} cannot keep a hint for {} (hint queue full or hinted handoff off)",
                        self.name(self.me()),
                        self.name(target)
                    )));
                }
                self.after_sync(now, Waiter::Ack { to: from, id, key: None });
                Ok(None)
            }
            PeerRequest::CoordinateWrite { key, value, ctx, w, sloppy, timeout_ms, write_id, fence } => {
                if !self.all_homes(&key).contains(&self.me()) {
                    return Err(ReplicaError::Unavailable(format!(
                        "{} is not a home replica of this key (member lists differ?)",
                        self.name(self.me())
                    )));
                }
                if value.as_ref().is_some_and(|v| v.len() > VALUE_BYTES_MAX) {
                    return Err(ReplicaError::ValueTooLarge(format!(
                        "value must be at most {VALUE_BYTES_MAX} bytes"
                    )));
                }
                let mode = if sloppy { QuorumMode::Sloppy } else { QuorumMode::Strict };
                let timeout_ms = self.timeout_of(timeout_ms);
                let write = WriteArgs { value, ctx, w: w.max(1), mode, timeout_ms, write_id, fence };
                self.coordinate_write(now, key, write, ReplyTo::Peer { to: from, id })?;
                Ok(None)
            }
            PeerRequest::Scan { table, partition, from: lo, to: hi, limit, reverse } => {
                let (items, exhausted) =
                    self.local_scan(&table, &partition, lo.as_deref(), hi.as_deref(), limit, reverse)?;
                Ok(Some(PeerResponse::Page { items, exhausted }))
            }
            PeerRequest::AeHashes { tree, level, parents } => {
                let mut empty = MerkleTree::new();
                let t = self.trees.get_mut(&tree).unwrap_or(&mut empty);
                let hashes =
                    t.children_batch(level, &parents).map_err(|e| ReplicaError::BadRequest(e.to_string()))?;
                Ok(Some(PeerResponse::Hashes(hashes)))
            }
            PeerRequest::AeLeafKeys { tree, leaves } => {
                // Bounded like hash requests: a listing request names at most as many leaves
                // as one exchange compares, each one real.
                if leaves.len() > EXCHANGE_LEAVES_MAX {
                    return Err(ReplicaError::BadRequest(format!(
                        "leaf listing asks for {} leaves, at most {EXCHANGE_LEAVES_MAX} allowed",
                        leaves.len()
                    )));
                }
                if let Some(bad) = leaves.iter().find(|l| **l >= LEAVES) {
                    return Err(ReplicaError::BadRequest(format!("leaf {bad} out of range (0..{LEAVES})")));
                }
                let mut out = Vec::with_capacity(leaves.len());
                for leaf in leaves {
                    out.push((leaf, self.leaf_items(&tree, leaf)?));
                }
                Ok(Some(PeerResponse::LeafKeys(out)))
            }
            PeerRequest::TombstoneHeld { key, state } => {
                let sk = key.storage_key();
                let held = match self.store.get(&sk)? {
                    Some(raw) => ItemState::decode(&raw)
                        .is_ok_and(|mine| mine.descends(&state) && state.descends(&mine)),
                    // Absent: fine only if this replica purged that very tombstone (or a later one).
                    None => self
                        .store
                        .purge_record(&sk)?
                        .and_then(|(_, f)| ItemState::decode(&f).ok())
                        .is_some_and(|f| f.descends(&state)),
                };
                Ok(Some(PeerResponse::Held(held)))
            }
            PeerRequest::StartRepair { table } => {
                self.request_full_pass(now, table);
                Ok(Some(PeerResponse::Ack))
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Responses to this replica's requests

    fn on_response(&mut self, now: Now, id: RequestId, result: Result<PeerResponse, SendError>) {
        // Late (after its deadline) or unknown: nobody waits for it.
        let Some(o) = self.outstanding.remove(&id) else { return };
        self.deadlines.remove(&(o.deadline_ms, id));
        // A failed request counts from when it was sent, not from when its timeout fired: a
        // paused peer is then "down" failure_timeout after it stopped answering, whatever the
        // request timeout.
        let at_ms = if result.is_ok() { now.mono_ms } else { o.sent_ms };
        self.shared.detector.record(o.to, result.is_ok(), at_ms);
        let peer = self.name(o.to);
        match o.purpose {
            Purpose::WriteReplica { job } => {
                let r = classify(result, |r| match r {
                    PeerResponse::Ack => Ok(()),
                    other => Err(other),
                });
                self.count("write", outcome_label(&r));
                if let Some(j) = self.writes.get_mut(&job) {
                    match r {
                        Ok(()) => j.coord.on_response(&o.to, Ok(())),
                        Err(None) => j.coord.on_timeout(&o.to),
                        Err(Some(f)) => j.coord.on_response(&o.to, Err(f)),
                    }
                }
                self.drive_write(now, job);
            }
            Purpose::ReadReplica { job } => {
                let r = classify(result, |r| match r {
                    PeerResponse::Item(s) => Ok(s),
                    other => Err(other),
                });
                self.count("read", outcome_label(&r));
                if let Some(j) = self.reads.get_mut(&job) {
                    match r {
                        Ok(state) => j.coord.on_response(&o.to, Ok(state)),
                        Err(None) => j.coord.on_timeout(&o.to),
                        Err(Some(f)) => j.coord.on_response(&o.to, Err(f)),
                    }
                }
                self.drive_read(now, job);
            }
            Purpose::RepairBlocking { job } => {
                let ok = matches!(result, Ok(PeerResponse::Ack));
                if let Some(j) = self.reads.get_mut(&job) {
                    j.repairing.remove(&id);
                    if !ok {
                        j.failed_repairs.push(peer);
                    }
                }
                self.drive_read(now, job);
            }
            Purpose::Repair => {}
            Purpose::AePush => {
                let r = match result {
                    Ok(PeerResponse::Ack) => Ok(()),
                    Ok(other) => Err(format!("unexpected response {other:?}")),
                    Err(e) => Err(e.to_string()),
                };
                self.on_ae_transfer_done(now, id, r);
            }
            Purpose::Forward { job } => self.on_forward_reply(now, job, o.to, result),
            Purpose::Hint { id: hint } => match result {
                Ok(PeerResponse::Ack) => {
                    self.stats.hints_delivered += 1;
                    let cmds = self.hints.on_delivered(hint, now.wall_ms);
                    self.run_handoff(now, cmds);
                }
                _ => self.hints.on_failed(hint, now.wall_ms),
            },
            Purpose::ScanReplica { job } => {
                let reverse = self.scans.get(&job).is_some_and(|j| j.reverse);
                let r = classify(result, |r| match r {
                    PeerResponse::Page { items, exhausted } => {
                        Ok(ScanMerge::from_page(items, exhausted, reverse))
                    }
                    other => Err(other),
                });
                if let Some(j) = self.scans.get_mut(&job) {
                    match r {
                        Ok(page) => j.coord.on_response(&o.to, Ok(page)),
                        Err(None) => j.coord.on_timeout(&o.to),
                        Err(Some(f)) => j.coord.on_response(&o.to, Err(f)),
                    }
                }
                self.drive_scan(job);
            }
            Purpose::Inspect { job } => {
                let r = match result {
                    Ok(PeerResponse::Item(state)) => Ok(state),
                    Ok(PeerResponse::Failed(e)) => Err(e.to_string()),
                    Ok(other) => Err(format!("unexpected response {other:?}")),
                    Err(e) => Err(e.to_string()),
                };
                if let Some(j) = self.inspects.get_mut(&job) {
                    if let Some(slot) = j.results.iter_mut().find(|(n, _)| *n == o.to) {
                        slot.1 = Some(r);
                    }
                }
                self.drive_inspect(now, job);
            }
            Purpose::AeHashes { level } => {
                let Some(mut run) = self.ae.run.take() else { return };
                let cmds = if run.waiting == Some(id) {
                    run.waiting = None;
                    match result {
                        Ok(PeerResponse::Hashes(hashes)) => {
                            let tree = self.trees.entry(run.tree.clone()).or_default();
                            run.exchange.on_hashes(level, &hashes, tree)
                        }
                        Ok(other) => run.exchange.on_error(format!("unexpected response {other:?}")),
                        Err(e) => run.exchange.on_error(e.to_string()),
                    }
                } else {
                    Vec::new()
                };
                self.ae.run = Some(run);
                self.run_ae(now, cmds);
            }
            Purpose::AeLeafKeys => {
                let Some(mut run) = self.ae.run.take() else { return };
                let mut cmds = Vec::new();
                if run.waiting == Some(id) {
                    run.waiting = None;
                    match result {
                        Ok(PeerResponse::LeafKeys(listings)) => {
                            for (leaf, theirs) in listings {
                                match self.leaf_items(&run.tree, leaf) {
                                    Ok(ours) => cmds.extend(run.exchange.on_leaf_keys(leaf, theirs, ours)),
                                    Err(e) => cmds.extend(run.exchange.on_error(e.to_string())),
                                }
                            }
                        }
                        Ok(other) => cmds = run.exchange.on_error(format!("unexpected response {other:?}")),
                        Err(e) => cmds = run.exchange.on_error(e.to_string()),
                    }
                }
                self.ae.run = Some(run);
                self.run_ae(now, cmds);
            }
            Purpose::AePull { key } => {
                let outcome = match result {
                    Ok(PeerResponse::Item(theirs)) => self.on_pulled(now, &key, theirs),
                    Ok(other) => Err(format!("unexpected response {other:?}")),
                    Err(e) => Err(e.to_string()),
                };
                self.on_ae_transfer_done(now, id, outcome);
            }
            Purpose::Ping => {}
            Purpose::Gc => {
                let held = matches!(result, Ok(PeerResponse::Held(true)));
                self.on_gc_answer(now, id, held);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Hinted handoff

    /// Queues a hint for `target` and stores it (durable with the next sync). Returns whether
    /// it was queued; a refused hint is counted and left to anti-entropy.
    fn add_hint(&mut self, now: Now, target: NodeId, key: &ItemKey, state: &ItemState) -> bool {
        if !self.shared.config.hinted_handoff {
            return false;
        }
        let target = self.name(target);
        let sk = key.storage_key();
        // A new hint replaces the queued one for the same target and key, so it must carry
        // both: a stand-in collects hints from several coordinators whose states may be
        // concurrent.
        let merged = match self.hints.get(&target, &sk).and_then(|(_, h)| ItemState::decode(&h.state).ok()) {
            Some(queued) => ItemState::merged(&queued, state),
            None => state.clone(),
        };
        let hint = Hint { target, key: sk, state: merged.encode(), created_ms: now.wall_ms };
        match self.hints.add(hint.clone(), now.wall_ms) {
            Ok(added) => {
                self.stats.hints_added += 1;
                let stored = self.store.put_hint(added.id, &hint);
                let removed = added.superseded.map(|old| self.store.delete_hint(old));
                self.persist_seq += 1;
                stored.and(removed.unwrap_or(Ok(()))).is_ok()
            }
            Err(_) => {
                self.stats.hints_refused += 1;
                false
            }
        }
    }

    fn run_handoff(&mut self, now: Now, cmds: Vec<HandoffCommand>) {
        for cmd in cmds {
            match cmd {
                HandoffCommand::Deliver { id, target, key, state } => {
                    let (Some(idx), Ok(item), Ok(state)) = (
                        self.placement.index_of(&target),
                        ItemKey::from_storage_key(&key),
                        ItemState::decode(&state),
                    ) else {
                        // A hint for a member that no longer exists, or that does not decode,
                        // cannot be delivered; it expires.
                        self.hints.on_failed(id, now.wall_ms);
                        continue;
                    };
                    let timeout = self.shared.config.request_timeout_ms;
                    self.send(
                        now,
                        idx,
                        PeerRequest::Replicate { key: item, state },
                        timeout,
                        Purpose::Hint { id },
                    );
                }
                HandoffCommand::Delete { id } => {
                    let _ = self.store.delete_hint(id);
                    self.persist_seq += 1;
                }
                HandoffCommand::Drop { id, .. } => {
                    self.stats.hints_dropped += 1;
                    let _ = self.store.delete_hint(id);
                    self.persist_seq += 1;
                }
            }
        }
        // Deleting a delivered hint need not be durable at once (a replayed hint merges
        // harmlessly), but it must be durable eventually.
        self.request_sync();
    }

    // -----------------------------------------------------------------------------------------
    // Anti-entropy

    fn request_full_pass(&mut self, now: Now, table: Option<String>) {
        if self.ae.run.is_some() || !self.ae.queue.is_empty() {
            self.ae.full_requested = Some(table);
            return;
        }
        self.start_round(now, table, true);
    }

    /// Starts a round: every tree of this shard (optionally one table's) with every other
    /// member of its replica set.
    fn start_round(&mut self, now: Now, table: Option<String>, full: bool) {
        let me = self.me();
        let work: VecDeque<(TreeId, NodeId)> = self
            .trees
            .keys()
            .filter(|t| table.as_ref().is_none_or(|name| &t.table == name))
            .flat_map(|t| t.set.iter().filter(|p| **p != me).map(move |p| (t.clone(), *p)))
            .collect();
        self.ae.full = full;
        if full {
            self.ae.sync_round = self.layout_sync;
            let passes = self.ae.progress.passes_completed;
            self.ae.progress = RepairProgress {
                running: true,
                table,
                exchanges_total: work.len(),
                passes_completed: passes,
                ..RepairProgress::default()
            };
        }
        self.ae.queue = work;
        self.next_exchange(now);
    }

    fn next_exchange(&mut self, now: Now) {
        while self.ae.run.is_none() {
            let Some((tree, peer)) = self.ae.queue.pop_front() else {
                self.end_round(now);
                return;
            };
            if !self.shared.is_up(peer, now.mono_ms) {
                if self.ae.full {
                    self.ae.progress.exchanges_done += 1;
                    self.ae.progress.exchanges_failed += 1;
                }
                continue;
            }
            self.start_exchange(now, tree, peer, 0);
        }
    }

    fn start_exchange(&mut self, now: Now, tree: TreeId, peer: NodeId, repeats: usize) {
        let deadline = now.mono_ms.saturating_add(self.shared.config.exchange_deadline_ms);
        let (exchange, cmds) =
            Exchange::start(0, self.name(peer), self.shared.config.exchange_limits, deadline);
        self.ae.run = Some(AeRun {
            tree,
            peer,
            exchange,
            waiting: None,
            pulls: VecDeque::new(),
            pushes: BTreeSet::new(),
            push_queue: None,
            transfer: None,
            done: None,
            repeats,
            item_bytes: 0,
            pushed: 0,
            pulled: 0,
        });
        self.run_ae(now, cmds);
    }

    fn end_round(&mut self, now: Now) {
        if self.ae.full {
            self.ae.progress.running = false;
            self.ae.progress.passes_completed += 1;
            self.ae.full = false;
            // A layout sync is done when a whole pass over the new layout's trees, started
            // after the sync was asked for, exchanged with every peer without a failure.
            if let (Some(v), Some(round)) = (self.layout_sync, self.ae.sync_round.take()) {
                if v == round && self.ae.progress.exchanges_failed == 0 {
                    self.synced_version = self.synced_version.max(v);
                    self.layout_sync = None;
                } else {
                    self.ae.sync_retry_ms = now.mono_ms.saturating_add(LAYOUT_SYNC_RETRY_MS);
                }
            }
        }
        self.ae.next_round_ms = now.mono_ms.saturating_add(self.shared.config.antientropy_interval_ms);
        if let Some(table) = self.ae.full_requested.take() {
            self.start_round(now, table, true);
        }
    }

    fn tick_ae(&mut self, now: Now) {
        if !self.shared.config.antientropy {
            return;
        }
        if let Some(run) = &mut self.ae.run {
            let cmds = run.exchange.tick(now.mono_ms);
            self.run_ae(now, cmds);
            self.pump_transfers(now);
        } else if self.layout_sync.is_some()
            && self.ae.queue.is_empty()
            && self.ae.full_requested.is_none()
            && now.mono_ms >= self.ae.sync_retry_ms
        {
            self.start_round(now, None, true);
        } else if self.ae.queue.is_empty()
            && self.shared.config.antientropy_interval_ms > 0
            && now.mono_ms >= self.ae.next_round_ms
        {
            self.start_round(now, None, false);
        }
    }

    fn run_ae(&mut self, now: Now, cmds: Vec<Command>) {
        for cmd in cmds {
            let Some(run) = &mut self.ae.run else { return };
            let (peer, tree) = (run.peer, run.tree.clone());
            let timeout = self.shared.config.request_timeout_ms;
            match cmd {
                Command::RequestHashes { level, parents } => {
                    let id = self.send(
                        now,
                        peer,
                        PeerRequest::AeHashes { tree, level, parents },
                        timeout,
                        Purpose::AeHashes { level },
                    );
                    if let Some(run) = &mut self.ae.run {
                        run.waiting = Some(id);
                    }
                }
                Command::RequestLeafKeys { leaves } => {
                    let id = self.send(
                        now,
                        peer,
                        PeerRequest::AeLeafKeys { tree, leaves },
                        timeout,
                        Purpose::AeLeafKeys,
                    );
                    if let Some(run) = &mut self.ae.run {
                        run.waiting = Some(id);
                    }
                }
                // Pushes wait until the pulls are done: a key whose digests differ is in both
                // lists, and once the peer's state is here we know whether the peer lacks
                // anything of ours. When one replica merely missed writes (the usual case),
                // this halves the bytes a repair moves.
                Command::Push { keys } => run.pushes.extend(keys),
                Command::Pull { keys } => run.pulls.extend(keys),
                Command::Done(stats) => {
                    run.done = Some(stats);
                    self.pump_transfers(now);
                }
                Command::Failed(_) => {
                    self.finish_exchange(now, false);
                }
            }
        }
    }

    /// Starts the next pull (then push) of the finished comparison, within the byte-rate
    /// throttle; finishes the exchange when none is left.
    fn pump_transfers(&mut self, now: Now) {
        let Some(run) = &mut self.ae.run else { return };
        if run.done.is_none() || run.transfer.is_some() {
            return;
        }
        if now.mono_ms < self.ae.throttle_next_ms {
            return;
        }
        let (peer, timeout) = (run.peer, self.shared.config.request_timeout_ms);
        if let Some(key) = run.pulls.pop_front() {
            let Ok(item) = ItemKey::from_storage_key(&key) else { return self.pump_transfers(now) };
            let id = self.send(now, peer, PeerRequest::Read { key: item }, timeout, Purpose::AePull { key });
            if let Some(run) = &mut self.ae.run {
                run.transfer = Some(id);
            }
            return;
        }
        if run.push_queue.is_none() {
            run.push_queue = Some(std::mem::take(&mut run.pushes).into_iter().collect());
        }
        let next = run.push_queue.as_mut().and_then(|q| q.pop_front());
        let Some(key) = next else {
            self.finish_exchange(now, true);
            return;
        };
        let Ok(item) = ItemKey::from_storage_key(&key) else { return self.pump_transfers(now) };
        let Ok(Some(raw)) = self.store.get(&key) else { return self.pump_transfers(now) };
        let Ok(state) = ItemState::decode(&raw) else { return self.pump_transfers(now) };
        self.throttle(now, raw.len());
        self.stats.keys_pushed += 1;
        self.stats.item_bytes_pushed += raw.len() as u64;
        if let Some(run) = &mut self.ae.run {
            run.item_bytes += raw.len() as u64;
            run.pushed += 1;
        }
        let id = self.send(now, peer, PeerRequest::Replicate { key: item, state }, timeout, Purpose::AePush);
        if let Some(run) = &mut self.ae.run {
            run.transfer = Some(id);
        }
    }

    /// Charges `bytes` to the token bucket (one-second burst).
    fn throttle(&mut self, now: Now, bytes: usize) {
        let rate = self.shared.config.antientropy_bytes_per_second_max.max(1);
        let cost_ms = (bytes as u64).saturating_mul(1000) / rate;
        let start = self.ae.throttle_next_ms.max(now.mono_ms.saturating_sub(1000));
        self.ae.throttle_next_ms = start.saturating_add(cost_ms);
    }

    /// A pulled state arrived: merge it, and drop the push of that key if the peer's state
    /// already holds ours.
    fn on_pulled(&mut self, now: Now, key: &[u8], theirs: ItemState) -> Result<(), String> {
        let bytes = theirs.encoded_len_hint();
        self.throttle(now, bytes);
        self.stats.keys_pulled += 1;
        self.stats.item_bytes_pulled += bytes as u64;
        let item = ItemKey::from_storage_key(key).map_err(|e| e.to_string())?;
        let mine = self.local_state(&item).map_err(|e| e.to_string())?;
        if let Some(run) = &mut self.ae.run {
            run.item_bytes += bytes as u64;
            run.pulled += 1;
            if theirs.descends(&mine) {
                run.pushes.remove(key);
            }
        }
        self.merge_local(now, &item, &theirs).map_err(|e| e.to_string())
    }

    fn on_ae_transfer_done(&mut self, now: Now, id: RequestId, outcome: Result<(), String>) {
        let Some(run) = &mut self.ae.run else { return };
        if run.transfer != Some(id) {
            return;
        }
        run.transfer = None;
        if outcome.is_err() {
            self.finish_exchange(now, false);
            return;
        }
        self.pump_transfers(now);
    }

    fn finish_exchange(&mut self, now: Now, ok: bool) {
        let Some(run) = self.ae.run.take() else { return };
        if ok {
            self.stats.exchanges_done += 1;
        } else {
            self.stats.exchanges_failed += 1;
        }
        let stats = run.done.clone().unwrap_or_default();
        self.stats.digests_received += stats.digests_received;
        if self.ae.full {
            let p = &mut self.ae.progress;
            p.keys_pushed += run.pushed;
            p.keys_pulled += run.pulled;
            p.item_bytes += run.item_bytes;
            p.digests_received += stats.digests_received;
            p.leaves_differing += stats.leaves_differing;
        }
        if ok && stats.more_remaining && run.repeats + 1 < EXCHANGES_PER_ROUND_MAX {
            // A bound cut the exchange short: run the next one with the same peer at once.
            self.start_exchange(now, run.tree, run.peer, run.repeats + 1);
            return;
        }
        if self.ae.full {
            self.ae.progress.exchanges_done += 1;
            if !ok {
                self.ae.progress.exchanges_failed += 1;
            }
        }
        self.next_exchange(now);
    }

    // -----------------------------------------------------------------------------------------
    // Tombstone garbage collection

    fn tick_gc(&mut self, now: Now) {
        let interval = self.shared.config.tombstone_gc_interval_ms;
        // No purge while data moves between layouts: a tombstone must reach the new owners
        // before the old ones may forget it.
        if interval == 0
            || self.gc.is_some()
            || now.mono_ms < self.next_gc_ms
            || self.placement.in_transition()
        {
            return;
        }
        self.next_gc_ms = now.mono_ms.saturating_add(interval);
        let grace = self.shared.config.tombstone_grace_ms;
        let Ok(old) = self.store.tombstones_older_than(now.wall_ms, grace, GC_BATCH_LEN_MAX) else { return };
        let mut queue = VecDeque::new();
        for (sk, _since) in old {
            let state = match (ItemKey::from_storage_key(&sk), self.store.get(&sk)) {
                (Ok(key), Ok(Some(raw))) => match ItemState::decode(&raw) {
                    Ok(s) if s.has_tombstone() && s.is_deleted() => Some((key, s)),
                    _ => None,
                },
                _ => None,
            };
            match state {
                Some(entry) => queue.push_back(entry),
                None => {
                    let _ = self.store.unmark_tombstone(&sk);
                    self.persist_seq += 1;
                }
            }
        }
        // Purge records only need to outlive the slowest replica's own purge.
        if let Ok(records) = self.store.purge_records(GC_BATCH_LEN_MAX) {
            for (sk, at) in records {
                if now.wall_ms.saturating_sub(at) > grace.saturating_mul(2) {
                    let _ = self.store.forget_purge(&sk);
                    self.persist_seq += 1;
                }
            }
        }
        self.gc = Some(GcJob { queue, current: None });
        self.next_gc_entry(now);
    }

    /// Asks every other home replica whether it holds the next tombstone exactly.
    fn next_gc_entry(&mut self, now: Now) {
        loop {
            let Some(gc) = &mut self.gc else { return };
            if gc.current.is_some() {
                return;
            }
            let Some((key, state)) = gc.queue.pop_front() else {
                self.gc = None;
                self.request_sync();
                return;
            };
            let others: Vec<NodeId> = self.all_homes(&key).into_iter().filter(|i| *i != self.me()).collect();
            if others.is_empty() {
                let _ = self.purge(now, &key, &state);
                continue;
            }
            let timeout = self.shared.config.request_timeout_ms;
            let mut waiting = BTreeSet::new();
            for idx in others {
                let req = PeerRequest::TombstoneHeld { key: key.clone(), state: state.clone() };
                waiting.insert(self.send(now, idx, req, timeout, Purpose::Gc));
            }
            if let Some(gc) = &mut self.gc {
                gc.current = Some((key, state, waiting, true));
            }
            return;
        }
    }

    fn on_gc_answer(&mut self, now: Now, id: RequestId, held: bool) {
        let Some(gc) = &mut self.gc else { return };
        let Some((_, _, waiting, all)) = &mut gc.current else { return };
        if !waiting.remove(&id) {
            return;
        }
        *all &= held;
        if !waiting.is_empty() {
            return;
        }
        if let Some((key, state, _, all)) = gc.current.take() {
            // Every home replica holds exactly this tombstone: no replica can hand an older
            // version back after the purge (hints older than the grace period expire).
            if all {
                let _ = self.purge(now, &key, &state);
            }
        }
        self.next_gc_entry(now);
    }
}

/// Rebuilds a quorum error from the replicas' final outcomes (the decision-time error may
/// still list replicas that answered later).
fn final_error(mut e: QuorumError<NodeId>, outcomes: &[(NodeId, Outcome)]) -> QuorumError<NodeId> {
    e.got = outcomes.iter().filter(|(_, o)| *o == Outcome::Ok).count();
    e.outcomes = outcomes.to_vec();
    e
}

/// The `outcome` label of a replica reply.
fn outcome_label<T>(result: &Result<T, Option<Failure>>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(None) => "timeout",
        Err(Some(_)) => "error",
    }
}

/// Sorts a peer's answer into success (what `expected` extracts), a timeout (`Err(None)`), or
/// a typed failure: refused with the peer's code, unreachable, lost, or an answer that does not
/// fit the request (corrupt).
fn classify<T>(
    result: Result<PeerResponse, SendError>,
    expected: impl FnOnce(PeerResponse) -> Result<T, PeerResponse>,
) -> Result<T, Option<Failure>> {
    match result {
        Ok(PeerResponse::Failed(e)) => Err(Some(refused(&e))),
        // The response is formatted only when it is not the expected one: formatting every
        // answer (values and all) cost a measurable share of a node's CPU under load.
        Ok(resp) => {
            expected(resp).map_err(|other| Some(Failure::Corrupt(format!("unexpected response {other:?}"))))
        }
        Err(SendError::Timeout) => Err(None),
        Err(SendError::Unreachable(m)) => Err(Some(Failure::Unreachable(m))),
        Err(SendError::Lost(m)) => Err(Some(Failure::Lost(m))),
    }
}

/// A replica error as a coordinator failure.
fn refused(e: &ReplicaError) -> Failure {
    Failure::Refused { code: e.code().into(), message: e.to_string() }
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}
