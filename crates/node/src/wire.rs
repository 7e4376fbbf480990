//! Node-to-node messages. These are wire DTOs, separate from the core's internal types, so a
//! refactor inside `quorumdb-core` cannot silently change the protocol. Item states travel as
//! the core's versioned binary encoding (`ItemState::encode`), causality contexts as tokens.
//!
//! Frames are `u32` big-endian length + postcard body. Every connection starts with a
//! [`Hello`] carrying [`PROTOCOL_VERSION`]; a peer speaking another version is refused.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 7;

/// Largest frame accepted. A frame holds at most one scan page of item states
/// (`SCAN_PAGE_LEN_MAX` items) or one item with `SIBLINGS_LEN_MAX` values; 64 MiB bounds both
/// with margin while still refusing garbage lengths from a confused peer.
/// The transport never sends a larger frame: it refuses such a request to its caller
/// (`TransportError::TooLarge`) and answers such a response with [`ERROR_CODE_TOO_LARGE`], so
/// one oversized message never drops a connection and the other requests in flight on it.
pub const FRAME_BYTES_MAX: usize = quorumdb_core::limits::PEER_FRAME_BYTES_MAX;

/// `Response::Error` code sent instead of a response that would exceed [`FRAME_BYTES_MAX`].
pub const ERROR_CODE_TOO_LARGE: &str = "too_large";

/// Decodes one frame's body (a [`Hello`] or a [`Frame`]). postcard checks every length
/// against the bytes it has, so a hostile frame costs at most its own size; the fuzz target
/// `peer_frame` runs this on arbitrary bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub node_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireKey {
    pub table: String,
    #[serde(with = "serde_bytes")]
    pub partition: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub sort: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Frame {
    Request { id: u64, body: Request },
    Response { id: u64, body: Response },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Liveness probe.
    Ping,
    /// Asks a home replica to coordinate a write: apply it locally under a new dot, replicate
    /// the resulting state and wait for `w` acknowledgements.
    CoordinateWrite {
        key: WireKey,
        /// `None` writes a tombstone.
        #[serde(with = "serde_bytes")]
        value: Option<Vec<u8>>,
        context: String,
        w: u32,
        sloppy: bool,
        timeout_ms: u64,
        /// The write's id: a hedged or retried copy sent to another coordinator carries the
        /// same one, so replicas keep one version of it.
        write_id: u128,
        /// The fencing token (lock or election name, token) the write carries (version 5).
        fence: Option<(String, u64)>,
    },
    /// Merge this state into the local replica and acknowledge once durable.
    Replicate {
        key: WireKey,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// Keep `state` as a durable hint for home replica `target` (this node is a sloppy-quorum
    /// fallback) and acknowledge once durable.
    StoreHint {
        target: String,
        key: WireKey,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// Anti-entropy: the children hashes of `parents` at `level` of one tree.
    AeHashes { tree: WireTree, level: u32, parents: Vec<u32> },
    /// Anti-entropy: the `(storage key, digest)` pairs of these leaves of one tree.
    AeLeafKeys { tree: WireTree, leaves: Vec<u32> },
    /// Tombstone GC: does this replica hold exactly this tombstone (or has it purged it)?
    TombstoneHeld {
        key: WireKey,
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// Start a full anti-entropy pass on this node (all trees, or one table's).
    StartRepair { table: Option<String> },
    /// This node's heat report: its hottest partition keys over the last window (version 6).
    Heat,
    /// Return the local state of one item (empty encoding when absent).
    Read { key: WireKey },
    /// A message of the metadata Raft group (`quorumdb_meta::wire` encoding), answered with
    /// `Ack` once queued for the member (version 4).
    Raft {
        #[serde(with = "serde_bytes")]
        message: Vec<u8>,
    },
    /// Return one page of a partition's items.
    Scan {
        table: String,
        #[serde(with = "serde_bytes")]
        partition: Vec<u8>,
        #[serde(with = "serde_bytes")]
        from: Option<Vec<u8>>,
        #[serde(with = "serde_bytes")]
        to: Option<Vec<u8>>,
        limit: u32,
        reverse: bool,
    },
    /// A consumer-group request (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) for the group
    /// coordinator, which runs on the metadata leader: a sink worker on another node sends its
    /// group's requests here (version 7).
    Group(quorumdb_meta::coordinator::Request),
    /// This node's view of sink `name`'s partitions (`sink describe`; version 7).
    SinkStatus { name: String },
}

/// Names one Merkle tree: a table, the sorted member ids of one replica set, and the shard.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct WireTree {
    pub table: String,
    pub set: Vec<String>,
    /// The replica shard whose tree this is (version 2).
    pub shard: u32,
}

/// One leaf's listing: `(storage key, item digest)` pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeafListing {
    pub leaf: u32,
    pub items: Vec<KeyDigest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyDigest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub digest: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Pong,
    Ack,
    Hashes {
        hashes: Vec<u64>,
    },
    Held {
        held: bool,
    },
    LeafKeys {
        leaves: Vec<LeafListing>,
    },
    Item {
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    Page {
        items: Vec<PageItem>,
        exhausted: bool,
    },
    /// Result of a coordinated write: the new state's encoding.
    Written {
        #[serde(with = "serde_bytes")]
        state: Vec<u8>,
    },
    /// The coordinated write did not reach its quorum.
    QuorumFailed {
        needed: u32,
        got: u32,
        outcomes: Vec<(String, String)>,
        message: String,
    },
    Error {
        code: String,
        message: String,
    },
    /// Answer to `Heat`.
    Heat(WireHeat),
    /// Answer to `Group`.
    Group(quorumdb_meta::coordinator::Response),
    /// Answer to `SinkStatus`: the JSON of `Vec<quorumdb_api::SinkPartitionInfo>`.
    SinkStatus {
        #[serde(with = "serde_bytes")]
        json: Vec<u8>,
    },
}

/// A node's heat report on the wire (`quorumdb_core::heat::HeatReport`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireHeat {
    pub window_ms: u64,
    pub reads_total: u64,
    pub writes_total: u64,
    pub keys: Vec<WireHotKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireHotKey {
    pub hash: u64,
    pub table: String,
    #[serde(with = "serde_bytes")]
    pub partition: Vec<u8>,
    pub reads: u64,
    pub reads_error: u64,
    pub writes: u64,
    pub writes_error: u64,
}

/// One item of a scan page: sort key and encoded state. Byte fields use `serde_bytes` so they
/// are encoded as one length-prefixed blob instead of a sequence of varint bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageItem {
    #[serde(with = "serde_bytes")]
    pub sort: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}
