//! # Cluster metadata on Raft
//!
//! QuorumDB's data path is leaderless; its *metadata* (members, layout versions, tables, and
//! later leases, fences, log metadata and the hot-key index) is not: it must be one agreed
//! sequence of changes. This crate holds that as deterministic machines:
//!
//! - [`state`]: the metadata state machine ([`Metadata`], [`Command`], [`MetaError`]);
//! - [`storage`]: the Raft log, hard state and snapshot ([`MetaStorage`]), and the
//!   [`PersistDelta`]s that drivers make durable;
//! - [`layout`]: the layout-transition trackers (ack, sync, sync_ack per member) that say
//!   which committed layout versions are live and which one reads use;
//! - [`log`]: the log's sequencer — topics, partitions, dense offsets, idempotent producers;
//! - [`group`]: consumer groups' generations, assignments and generation-fenced offsets;
//! - [`auth`]: users, roles and hashed API tokens;
//! - [`sink`]: sink definitions (topics, PostgreSQL target, key mode, retry settings, state);
//! - [`node`]: one group member ([`MetaNode`]) wrapping raft-rs's `RawNode`: inputs and
//!   `Tick { now_ms }` in, ordered [`Effect`]s out. No I/O, no clock, no threads.
//!
//! The simulator (`quorumdb-lab`, `sim::meta`) and the server run this same code.

pub mod auth;
pub mod coordinator;
pub mod group;
pub mod layout;
pub mod log;
pub mod node;
pub mod sink;
pub mod state;
pub mod storage;
pub mod wire;

pub use layout::{LayoutError, LayoutTrackers, MemberProgress, Tracker};
pub use node::{member_raft_id, Effect, Input, MetaConfig, MetaNode, ProposeError};
pub use raft::eraftpb::Message as RaftMessage;
pub use state::{Change, Command, Conflict, Layout, MemberSpec, MetaError, Metadata, Outcome, TableDef};
pub use storage::{MetaStorage, PersistDelta};

/// Whether a raft message carries client proposals forwarded to the leader (`MsgPropose`).
/// Raft tolerates every other message arriving twice; a proposal delivered twice is appended
/// and committed twice, like a client write sent twice (the real transport never duplicates).
pub fn is_forwarded_proposal(m: &RaftMessage) -> bool {
    m.get_msg_type() == raft::eraftpb::MessageType::MsgPropose
}
