//! A node that joined a running cluster (`quorumdb server --join ADDR`).
//!
//! Such a node's config need not list the cluster: at its first start it asks an existing
//! node for the latest committed layout and the founding members (the CLI does that, it has
//! the HTTP client) and keeps the answer in `joined.json` in its data directory. Every later
//! start reads that file, with or without `--join`: the founders fix the metadata group's raft
//! ids and founding configuration, the layout's members are the node's startup member list
//! (its ring and peer clients; the metadata's address book follows the applied layout from
//! then on). The node's metadata itself comes from its raft state on disk, which it got as a
//! learner from the leader.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{MemberConfig, NodeConfig};

/// The file in the data directory that records how this node joined.
pub const JOINED_FILE: &str = "joined.json";

/// What an existing node told this one when it joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    /// The HTTP address it was asked at.
    pub via: String,
    /// The committed layout version that listed this node.
    pub layout_version: u64,
    pub founders: Vec<MemberConfig>,
    /// The members of that layout (this node included).
    pub members: Vec<MemberConfig>,
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(JOINED_FILE)
}

/// The record of an earlier join, if this node joined.
pub fn load(data_dir: &Path) -> Result<Option<Joined>, String> {
    let p = path(data_dir);
    match std::fs::read(&p) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{} is corrupt: {e}", p.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

/// Writes the record durably (temporary file, fsync, rename, fsync of the directory).
pub fn save(data_dir: &Path, joined: &Joined) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let p = path(data_dir);
    let tmp = data_dir.join(format!("{JOINED_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(joined).expect("plain data");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &p)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// The members this node starts with: the joined layout's members (keeping this node's own
/// configured entry, which knows its Kafka address), and the founders for the metadata group.
pub fn apply(config: &mut NodeConfig, joined: &Joined) {
    let own = config.members.iter().find(|m| m.id == config.node_id).cloned();
    let mut members = joined.members.clone();
    if let Some(own) = own {
        if let Some(m) = members.iter_mut().find(|m| m.id == own.id) {
            if m.kafka.is_empty() {
                m.kafka = own.kafka;
            }
        }
    }
    config.members = members;
    config.founders = joined.founders.clone();
}

/// The config a node runs with: a joined node's members and founders come from its
/// `joined.json` (see the module doc); any other node's config is used as it is.
pub fn startup_config(mut config: NodeConfig) -> Result<NodeConfig, String> {
    if let Some(joined) = load(&config.data_dir)? {
        apply(&mut config, &joined);
    }
    Ok(config)
}
