//! The metadata group's messages, entries and snapshots as our own serde types.
//!
//! raft-rs's types are protobuf-generated. Peers and the disk get these DTOs (postcard) instead
//! of protobuf bytes, so that what QuorumDB parses from the network and from storage is one
//! bounded, non-recursive format it owns, whatever raft-rs's codec does, and a raft-rs upgrade
//! cannot silently change the peer protocol or the on-disk log.

use raft::eraftpb::{
    ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
use serde::{Deserialize, Serialize};

use protobuf::ProtobufEnum as _;

/// Largest encoded message or snapshot accepted (the peer frame limit bounds it too).
pub const META_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    pub entry_type: i32,
    pub term: u64,
    pub index: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub context: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireConfState {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSnapshot {
    pub index: u64,
    pub term: u64,
    pub conf_state: WireConfState,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireHardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMessage {
    pub msg_type: i32,
    pub to: u64,
    pub from: u64,
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<WireEntry>,
    pub commit: u64,
    pub commit_term: u64,
    pub snapshot: Option<WireSnapshot>,
    pub request_snapshot: u64,
    pub reject: bool,
    pub reject_hint: u64,
    #[serde(with = "serde_bytes")]
    pub context: Vec<u8>,
    pub priority: i64,
}

impl From<&Entry> for WireEntry {
    fn from(e: &Entry) -> Self {
        WireEntry {
            entry_type: e.get_entry_type().value(),
            term: e.term,
            index: e.index,
            data: e.data.to_vec(),
            context: e.context.to_vec(),
        }
    }
}

impl TryFrom<WireEntry> for Entry {
    type Error = String;
    fn try_from(w: WireEntry) -> Result<Entry, String> {
        let entry_type = EntryType::from_i32(w.entry_type)
            .ok_or_else(|| format!("unknown entry type {}", w.entry_type))?;
        let mut e = Entry {
            term: w.term,
            index: w.index,
            data: w.data.into(),
            context: w.context.into(),
            ..Default::default()
        };
        e.set_entry_type(entry_type);
        Ok(e)
    }
}

impl From<&ConfState> for WireConfState {
    fn from(c: &ConfState) -> Self {
        WireConfState {
            voters: c.voters.clone(),
            learners: c.learners.clone(),
            voters_outgoing: c.voters_outgoing.clone(),
            learners_next: c.learners_next.clone(),
            auto_leave: c.auto_leave,
        }
    }
}

impl From<WireConfState> for ConfState {
    fn from(w: WireConfState) -> ConfState {
        ConfState {
            voters: w.voters,
            learners: w.learners,
            voters_outgoing: w.voters_outgoing,
            learners_next: w.learners_next,
            auto_leave: w.auto_leave,
            ..Default::default()
        }
    }
}

impl From<&Snapshot> for WireSnapshot {
    fn from(s: &Snapshot) -> Self {
        let m = s.get_metadata();
        WireSnapshot {
            index: m.index,
            term: m.term,
            conf_state: m.get_conf_state().into(),
            data: s.data.to_vec(),
        }
    }
}

impl From<WireSnapshot> for Snapshot {
    fn from(w: WireSnapshot) -> Snapshot {
        let mut meta = SnapshotMetadata { index: w.index, term: w.term, ..Default::default() };
        meta.set_conf_state(w.conf_state.into());
        let mut s = Snapshot { data: w.data.into(), ..Default::default() };
        s.set_metadata(meta);
        s
    }
}

impl From<&HardState> for WireHardState {
    fn from(h: &HardState) -> Self {
        WireHardState { term: h.term, vote: h.vote, commit: h.commit }
    }
}

impl From<WireHardState> for HardState {
    fn from(w: WireHardState) -> HardState {
        HardState { term: w.term, vote: w.vote, commit: w.commit, ..Default::default() }
    }
}

/// Encodes a raft message for a peer.
pub fn encode_message(m: &Message) -> Vec<u8> {
    let w = WireMessage {
        msg_type: m.get_msg_type().value(),
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m.entries.iter().map(WireEntry::from).collect(),
        commit: m.commit,
        commit_term: m.commit_term,
        snapshot: m.snapshot.as_ref().filter(|s| !s.is_empty()).map(WireSnapshot::from),
        request_snapshot: m.request_snapshot,
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: m.context.to_vec(),
        priority: m.priority,
    };
    postcard::to_allocvec(&w).expect("raft messages always encode: plain data")
}

/// Decodes a peer's raft message. Never panics; refuses oversized or malformed input.
pub fn decode_message(bytes: &[u8]) -> Result<Message, String> {
    if bytes.len() > META_MESSAGE_BYTES_MAX {
        return Err(format!("a raft message of {} bytes exceeds {META_MESSAGE_BYTES_MAX}", bytes.len()));
    }
    let w: WireMessage = postcard::from_bytes(bytes).map_err(|e| format!("malformed raft message: {e}"))?;
    let msg_type = MessageType::from_i32(w.msg_type)
        .ok_or_else(|| format!("unknown raft message type {}", w.msg_type))?;
    let mut m = Message {
        to: w.to,
        from: w.from,
        term: w.term,
        log_term: w.log_term,
        index: w.index,
        commit: w.commit,
        commit_term: w.commit_term,
        request_snapshot: w.request_snapshot,
        reject: w.reject,
        reject_hint: w.reject_hint,
        context: w.context.into(),
        priority: w.priority,
        ..Default::default()
    };
    m.set_msg_type(msg_type);
    let entries: Result<Vec<Entry>, String> = w.entries.into_iter().map(Entry::try_from).collect();
    m.set_entries(entries?.into());
    if let Some(s) = w.snapshot {
        m.set_snapshot(s.into());
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with entries and a snapshot survives the round trip field by field.
    #[test]
    fn messages_round_trip() {
        let mut m = Message {
            to: 2,
            from: 1,
            term: 7,
            log_term: 6,
            index: 40,
            commit: 39,
            reject_hint: 3,
            ..Default::default()
        };
        m.set_msg_type(MessageType::MsgAppend);
        let mut e = Entry {
            term: 7,
            index: 41,
            data: b"x".to_vec().into(),
            context: b"c".to_vec().into(),
            ..Default::default()
        };
        e.set_entry_type(EntryType::EntryNormal);
        m.set_entries(vec![e].into());
        let snap: Snapshot = WireSnapshot {
            index: 30,
            term: 5,
            conf_state: WireConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                voters_outgoing: vec![],
                learners_next: vec![],
                auto_leave: false,
            },
            data: b"state".to_vec(),
        }
        .into();
        m.set_snapshot(snap);
        assert_eq!(decode_message(&encode_message(&m)).unwrap(), m);
    }

    /// Garbage is an error, never a panic.
    #[test]
    fn garbage_is_refused() {
        for bytes in [&b""[..], b"\xff\xff\xff\xff\xff", b"\x63\x01\x02"] {
            assert!(decode_message(bytes).is_err());
        }
    }
}
